//! `vrouter-dp`'s command line: `--config FILE`, `--check-config`, and one flag per setting of
//! [`KEYS`] (`--fabric-ip 192.0.2.1` or `--fabric_ip=192.0.2.1` sets `fabric_ip`), built with
//! clap's builder so a new key is a new flag without touching this file. Flags override the
//! file. [`check`] is the validation `--check-config` and every start run.

use crate::config::{ConfigError, DpConfig, KEYS};
use crate::port::open::PortKind;
use clap::{Arg, ArgAction, ArgMatches, Command};
use std::path::PathBuf;

/// The flag that names the config file.
const CONFIG: &str = "config";
/// The flag that only validates.
const CHECK: &str = "check-config";

/// The command line, for parsing and for generated help, man pages and completions.
pub fn command() -> Command {
    let mut c = Command::new("vrouter-dp")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Userspace poll-mode vRouter dataplane")
        .long_about(
            "Userspace poll-mode vRouter dataplane. The config file holds `key = value` lines \
             (# comments); every key is also a flag (dashes or underscores), and flags override \
             the file; a flag given twice takes its last value.",
        )
        // Scripts append to a base command line (`--lcores 0 ... --lcores 1`): last one wins, as
        // with the file's keys.
        .args_override_self(true)
        .arg(
            Arg::new(CONFIG)
                .long(CONFIG)
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("settings file, `key = value` per line (e.g. /etc/vrouter/dp.conf)"),
        )
        .arg(
            Arg::new(CHECK)
                .long(CHECK)
                .action(ArgAction::SetTrue)
                .help("parse and validate the settings, print a summary, exit (0: usable)"),
        );
    for (key, help) in KEYS {
        let mut a = Arg::new(*key)
            .long(key.replace('_', "-"))
            .value_name("VALUE")
            .help(*help);
        if key.contains('_') {
            a = a.alias(*key);
        }
        c = c.arg(a);
    }
    c
}

/// What the command line asks for.
#[derive(Debug)]
pub struct Invocation {
    /// The settings: defaults, then the file, then the flags.
    pub config: DpConfig,
    /// The file read, if any.
    pub file: Option<PathBuf>,
    /// `--check-config`: validate and exit.
    pub check_only: bool,
}

/// The settings the parsed command line gives (the file read first, the flags over it).
pub fn invocation(m: &ArgMatches) -> Result<Invocation, ConfigError> {
    let mut config = DpConfig::default();
    let file = m.get_one::<PathBuf>(CONFIG).cloned();
    if let Some(f) = &file {
        config.load_file(f)?;
    }
    for (key, _) in KEYS {
        if let Some(v) = m.get_one::<String>(key) {
            config.set(key, v)?;
        }
    }
    Ok(Invocation {
        config,
        file,
        check_only: m.get_flag(CHECK),
    })
}

/// A setting that parses but cannot work, named by its key.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {why}")]
pub struct CheckError {
    /// The setting (as in the file; the flag is the same with dashes).
    pub key: &'static str,
    /// What is wrong and what would do.
    pub why: String,
}

fn invalid(key: &'static str, why: impl Into<String>) -> CheckError {
    CheckError {
        key,
        why: why.into(),
    }
}

/// Checks what the parser cannot: settings that contradict each other or this host.
pub fn check(c: &DpConfig) -> Result<(), CheckError> {
    if c.fabric.is_some() && c.fabric_ip.is_unspecified() {
        return Err(invalid(
            "fabric_ip",
            "required with `fabric`: this host's underlay IPv4 address",
        ));
    }
    if c.fabric_port_kind == Some(PortKind::Tap) {
        return Err(invalid(
            "fabric_port_kind",
            "a NIC cannot be opened as a tap: af_xdp or af_packet",
        ));
    }
    check_lcores(&c.lcores)?;
    if c.pool_size < 2 * crate::BATCH_SIZE {
        return Err(invalid(
            "pool_size",
            format!(
                "{} is too small: at least {}",
                c.pool_size,
                2 * crate::BATCH_SIZE
            ),
        ));
    }
    if c.limits.vifs < 3 {
        return Err(invalid(
            "max_vifs",
            "at least 3 (the fabric, host and agent interfaces take 0-2)",
        ));
    }
    for (key, v) in [
        ("max_vrfs", c.limits.vrfs),
        ("max_nexthops", c.limits.nexthops),
        ("max_labels", c.limits.labels),
    ] {
        if v == 0 {
            return Err(invalid(key, "must be at least 1"));
        }
    }
    if c.agent_socket.as_deref() == Some(c.ctl_socket.as_path()) {
        return Err(invalid(
            "agent_socket",
            format!("same path as ctl_socket ({})", c.ctl_socket.display()),
        ));
    }
    check_log_level(&c.log_level)
}

/// Every lcore CPU exists on this host and none is named twice. (A CPU outside the process's
/// affinity is only warned about at start, as the lcore cannot pin there.)
fn check_lcores(cpus: &[usize]) -> Result<(), CheckError> {
    // SAFETY: sysconf with a valid name only returns a number.
    let host = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    for (i, cpu) in cpus.iter().enumerate() {
        if cpus[..i].contains(cpu) {
            return Err(invalid("lcores", format!("CPU {cpu} is listed twice")));
        }
        if host > 0 && *cpu as i64 >= host as i64 {
            return Err(invalid(
                "lcores",
                format!(
                    "CPU {cpu} does not exist: this host has {host} (0-{})",
                    host - 1
                ),
            ));
        }
    }
    Ok(())
}

/// `log_level`: comma-separated `LEVEL` or `target=LEVEL` parts.
fn check_log_level(spec: &str) -> Result<(), CheckError> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let level = part.rsplit_once('=').map_or(part, |(_, l)| l);
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(invalid(
                "log_level",
                format!("{part:?}: expected off|error|warn|info|debug|trace or target=LEVEL"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Invocation, ConfigError> {
        let m = command()
            .try_get_matches_from(std::iter::once("vrouter-dp").chain(args.iter().copied()))
            .expect("clap accepts it");
        invocation(&m)
    }

    #[test]
    fn dashes_and_underscores_name_the_same_key() {
        let a = parse(&["--ctl-socket", "/tmp/a.sock"]).expect("valid");
        let b = parse(&["--ctl_socket=/tmp/a.sock"]).expect("valid");
        assert_eq!(a.config.ctl_socket, PathBuf::from("/tmp/a.sock"));
        assert_eq!(b.config.ctl_socket, a.config.ctl_socket);
    }

    #[test]
    fn a_flag_given_twice_takes_its_last_value() {
        let i = parse(&["--lcores", "0", "--log-level", "info", "--lcores", "1"]).expect("valid");
        assert_eq!(i.config.lcores, vec![1]);
    }

    #[test]
    fn contradictions_are_named_by_key() {
        let mut c = DpConfig {
            fabric: Some("eth1".into()),
            ..DpConfig::default()
        };
        assert_eq!(check(&c).map_err(|e| e.key).err(), Some("fabric_ip"));
        c.fabric = None;
        c.lcores = vec![0, 0];
        assert_eq!(check(&c).map_err(|e| e.key).err(), Some("lcores"));
        c.lcores = vec![0];
        c.log_level = "loud".into();
        assert_eq!(check(&c).map_err(|e| e.key).err(), Some("log_level"));
        c.log_level = "info,vrouter_dataplane::engine=debug".into();
        assert!(check(&c).is_ok());
    }
}
