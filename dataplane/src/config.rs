//! `vrouter-dp` settings: a `key = value` file (one setting per line, `#` comments) and a flag
//! for every key (`--fabric-ip 192.0.2.1` sets `fabric_ip`). Flags override the file.

use crate::port::open::{PortKind, XdpMode};
use crate::tables::Limits;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {err}")]
    Read {
        /// Path.
        path: PathBuf,
        /// Cause.
        err: std::io::Error,
    },
    /// A line of the file is not `key = value`.
    #[error("{path}:{line}: expected `key = value`")]
    Syntax {
        /// Path.
        path: PathBuf,
        /// Line number.
        line: usize,
    },
    /// An unknown key.
    #[error("unknown setting {0:?} (see `vrouter-dp --help`)")]
    UnknownKey(String),
    /// A value that does not parse.
    #[error("bad value {value:?} for {key}: {why}")]
    BadValue {
        /// Key.
        key: String,
        /// Value.
        value: String,
        /// Why.
        why: String,
    },
    /// A flag without its value.
    #[error("flag --{0} needs a value")]
    MissingValue(String),
}

/// Every daemon setting.
#[derive(Debug, Clone)]
pub struct DpConfig {
    /// Fabric NIC (none: a host without an underlay, e.g. single-host tests).
    pub fabric: Option<String>,
    /// This host's fabric IPv4 address.
    pub fabric_ip: Ipv4Addr,
    /// Backend for the fabric NIC.
    pub fabric_port_kind: Option<PortKind>,
    /// Host interface (a tap, normally `vhost0`); none: the fabric NIC's kernel side is the host
    /// stack (AF_XDP passes it non-overlay traffic).
    pub host_interface: Option<String>,
    /// The agent's datagram socket (`pkt0`); none to disable.
    pub agent_socket: Option<PathBuf>,
    /// Control socket.
    pub ctl_socket: PathBuf,
    /// CPU ids, one lcore each, pinned. Empty (the default, or `none`): one lcore the scheduler
    /// places, so several daemons on one machine do not all share CPU 0.
    pub lcores: Vec<usize>,
    /// Default backend for VM interfaces (`tap*` names always use tap).
    pub port_kind: PortKind,
    /// XDP attach mode.
    pub xdp_mode: XdpMode,
    /// Packet buffers per lcore.
    pub pool_size: usize,
    /// Idle `ppoll()` timeout in microseconds.
    pub idle_poll_us: u64,
    /// Empty rounds spun before an lcore yields.
    pub idle_spin_rounds: u32,
    /// Microseconds an lcore keeps polling after its last packet before it sleeps.
    pub idle_busy_us: u64,
    /// Table sizes.
    pub limits: Limits,
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`, or a `RUST_LOG`-style spec).
    pub log_level: String,
}

impl Default for DpConfig {
    fn default() -> Self {
        Self {
            fabric: None,
            fabric_ip: Ipv4Addr::UNSPECIFIED,
            fabric_port_kind: None,
            host_interface: None,
            agent_socket: Some(PathBuf::from("/run/vrouter/pkt0.sock")),
            ctl_socket: PathBuf::from(crate::ctl::client::DEFAULT_SOCKET),
            lcores: Vec::new(),
            port_kind: PortKind::AfPacket,
            xdp_mode: XdpMode::Native,
            pool_size: 8192,
            idle_poll_us: 10_000,
            idle_spin_rounds: 2000,
            idle_busy_us: 200_000,
            limits: Limits::default(),
            log_level: "info".into(),
        }
    }
}

/// Every key, with a one-line description (for `--help`).
pub const KEYS: &[(&str, &str)] = &[
    ("fabric", "fabric NIC name (omit for no underlay)"),
    ("fabric_ip", "this host's fabric IPv4 address"),
    (
        "fabric_port_kind",
        "af_xdp | af_packet for the fabric NIC (default: port_kind)",
    ),
    (
        "host_interface",
        "host-stack tap, e.g. vhost0 (omit: the fabric NIC keeps the host stack)",
    ),
    (
        "agent_socket",
        "agent (pkt0) datagram socket path, or `none` [/run/vrouter/pkt0.sock]",
    ),
    ("ctl_socket", "control socket path [/run/vrouter/dp.sock]"),
    (
        "lcores",
        "CPU ids for lcores, e.g. 1 or 0,1 or 0-1; none: one unpinned lcore [none]",
    ),
    (
        "port_kind",
        "af_xdp | af_packet | tap for VM interfaces [af_packet]",
    ),
    ("xdp_mode", "native | generic [native]"),
    ("pool_size", "packet buffers per lcore [8192]"),
    ("idle_poll_us", "idle ppoll() timeout, microseconds [10000]"),
    (
        "idle_spin_rounds",
        "empty rounds spun before backing off [2000]",
    ),
    (
        "idle_busy_us",
        "keep polling this long after the last packet before sleeping (0: sleep at once) [200000]",
    ),
    ("max_vifs", "interface table size [4352]"),
    ("max_vrfs", "VRF table size [4096]"),
    ("max_nexthops", "nexthop table size [65536]"),
    ("max_labels", "MPLS label table size [65536]"),
    ("routes", "initial route capacity [4096]"),
    ("log_level", "error | warn | info | debug | trace [info]"),
];

fn bad(key: &str, value: &str, why: impl ToString) -> ConfigError {
    ConfigError::BadValue {
        key: key.into(),
        value: value.into(),
        why: why.to_string(),
    }
}

fn num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    v.parse::<T>().map_err(|e| bad(key, v, e))
}

fn opt_str(v: &str) -> Option<String> {
    (!v.is_empty() && v != "none").then(|| v.to_string())
}

/// Parses `0,1`, `0-3`, `2`.
pub fn parse_cpus(v: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.trim().parse().map_err(|e| format!("{e}"))?;
                let b: usize = b.trim().parse().map_err(|e| format!("{e}"))?;
                if b < a {
                    return Err(format!("empty range {part}"));
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|e| format!("{e}"))?),
        }
    }
    if out.is_empty() {
        return Err("no cpus".into());
    }
    Ok(out)
}

impl DpConfig {
    /// Sets one key.
    pub fn set(&mut self, key: &str, v: &str) -> Result<(), ConfigError> {
        let key = key.trim().replace('-', "_");
        let v = v.trim();
        match key.as_str() {
            "fabric" => self.fabric = opt_str(v),
            "fabric_ip" => self.fabric_ip = num(&key, v)?,
            "fabric_port_kind" => {
                self.fabric_port_kind = match opt_str(v) {
                    None => None,
                    Some(s) => Some(s.parse().map_err(|e: String| bad(&key, v, e))?),
                }
            }
            "host_interface" => self.host_interface = opt_str(v),
            "agent_socket" => self.agent_socket = opt_str(v).map(PathBuf::from),
            "ctl_socket" => self.ctl_socket = PathBuf::from(v),
            "lcores" if v.trim() == "none" => self.lcores = Vec::new(),
            "lcores" => self.lcores = parse_cpus(v).map_err(|e| bad(&key, v, e))?,
            "port_kind" => self.port_kind = v.parse().map_err(|e: String| bad(&key, v, e))?,
            "xdp_mode" => self.xdp_mode = v.parse().map_err(|e: String| bad(&key, v, e))?,
            "pool_size" => self.pool_size = num(&key, v)?,
            "idle_poll_us" => self.idle_poll_us = num(&key, v)?,
            "idle_spin_rounds" => self.idle_spin_rounds = num(&key, v)?,
            "idle_busy_us" => self.idle_busy_us = num(&key, v)?,
            "max_vifs" => self.limits.vifs = num(&key, v)?,
            "max_vrfs" => self.limits.vrfs = num(&key, v)?,
            "max_nexthops" => self.limits.nexthops = num(&key, v)?,
            "max_labels" => self.limits.labels = num(&key, v)?,
            "routes" => self.limits.routes = num(&key, v)?,
            "log_level" => self.log_level = v.to_string(),
            _ => return Err(ConfigError::UnknownKey(key)),
        }
        Ok(())
    }

    /// Applies a `key = value` file.
    pub fn load_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Read {
            path: path.to_path_buf(),
            err,
        })?;
        self.load_str(&text, path)
    }

    /// Applies `key = value` text (`path` only names it in errors).
    pub fn load_str(&mut self, text: &str, path: &Path) -> Result<(), ConfigError> {
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err(ConfigError::Syntax {
                    path: path.to_path_buf(),
                    line: i + 1,
                });
            };
            self.set(k, v.trim().trim_matches('"'))?;
        }
        Ok(())
    }

    /// Builds the configuration from command-line arguments (without the program name):
    /// `--config FILE` first, then every `--key value` / `--key=value` over it.
    pub fn from_args(args: &[String]) -> Result<Self, ConfigError> {
        let mut c = Self::default();
        let mut pairs = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let Some(flag) = a.strip_prefix("--") else {
                return Err(ConfigError::UnknownKey(a.clone()));
            };
            let (k, v) = match flag.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => {
                    let v = it
                        .next()
                        .ok_or_else(|| ConfigError::MissingValue(flag.to_string()))?;
                    (flag.to_string(), v.clone())
                }
            };
            pairs.push((k, v));
        }
        for (k, v) in &pairs {
            if k == "config" {
                c.load_file(Path::new(v))?;
            }
        }
        for (k, v) in &pairs {
            if k != "config" {
                c.set(k, v)?;
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags() {
        let mut c = DpConfig::default();
        c.load_str(
            "# comment\nfabric = eth1\nfabric_ip = 192.0.2.1\nlcores = 0-1\nport_kind = af_xdp\n",
            Path::new("t"),
        )
        .expect("valid");
        assert_eq!(c.fabric.as_deref(), Some("eth1"));
        assert_eq!(c.lcores, vec![0, 1]);
        assert_eq!(c.port_kind, PortKind::AfXdp);
        assert!(c.set("bogus", "1").is_err());
        assert!(c.set("lcores", "x").is_err());
        let c = DpConfig::from_args(&["--ctl-socket".into(), "/tmp/x.sock".into()]).expect("valid");
        assert_eq!(c.ctl_socket, PathBuf::from("/tmp/x.sock"));
    }

    #[test]
    fn lcores_are_unpinned_unless_configured() {
        assert!(DpConfig::default().lcores.is_empty());
        let mut c = DpConfig::default();
        c.set("lcores", "1").expect("valid");
        assert_eq!(c.lcores, vec![1]);
        c.set("lcores", "none").expect("valid");
        assert!(c.lcores.is_empty());
    }
}
