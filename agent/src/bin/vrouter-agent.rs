//! `vrouter-agent`: the dom0 daemon that programs the vRouter dataplane from configuration and
//! keeps it programmed across agent and dataplane restarts. See `docs/agent.md`.

use clap::Parser;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use vrouter_agent::config::parse_encap;
use vrouter_agent::controller::{ControllerSource, Settings};
use vrouter_agent::daemon::{install_signal_handlers, Agent, Options};
use vrouter_agent::metrics::{self, Health};
use vrouter_agent::pkt0::{self, Pkt0Options, PlanHandle};
use vrouter_agent::source::{ConfigSource, FileSource};
use vrouter_agent::xenbind::{self, XenFileSource, XenOptions};
use vrouter_dataplane::ctl::client::DEFAULT_SOCKET;
use vrouter_dataplane::wire::MacAddr;

#[derive(Debug, Parser)]
#[command(
    name = "vrouter-agent",
    version,
    about = "Programs the vRouter dataplane from a config file or the controller shim; binds VM interfaces from xenstore; serves DHCP/ICMP on pkt0"
)]
struct Cli {
    /// Declarative config file (TOML; see docs/agent.md). With --controller only its
    /// [underlay] section is used (read at start).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Dataplane control socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    dp_socket: PathBuf,
    /// Controller shim URL, e.g. http://10.0.0.5:8082.
    #[arg(long, value_name = "URL")]
    controller: Option<String>,
    /// X-Auth-Token for the controller shim.
    #[arg(
        long,
        value_name = "T",
        env = "VROUTER_SHIM_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Our host name at the controller (default: the system host name).
    #[arg(long, value_name = "H")]
    hostname: Option<String>,
    /// Our fabric (underlay) IP, advertised as the nexthop of our routes (default: the
    /// dataplane's, vrouter-dp --fabric-ip).
    #[arg(long, value_name = "IP")]
    fabric_ip: Option<Ipv4Addr>,
    /// Underlay next-hop MAC for remote hosts whose MAC is not known (routed underlay).
    #[arg(long, value_name = "MAC")]
    underlay_gateway_mac: Option<MacAddr>,
    /// Fixed underlay MAC of a remote host, IP=MAC (repeatable; wins over ARP).
    #[arg(long, value_name = "IP=MAC")]
    underlay_neighbour: Vec<String>,
    /// Do not resolve remote hosts' underlay MACs by ARP through the host stack.
    #[arg(long)]
    no_arp: bool,
    /// Encapsulation of routes learned from the controller: mpls-over-udp (default) or
    /// mpls-over-gre.
    #[arg(long, value_name = "ENCAP")]
    encap: Option<String>,
    /// MTU of controller interfaces whose config has none.
    #[arg(long, value_name = "MTU", default_value_t = 1500)]
    mtu: u16,
    /// Bind VM interfaces from xenstore (/local/domain/0/backend/vif).
    #[arg(long)]
    xenstore: bool,
    /// xenstored socket (default: $XENSTORED_PATH, /var/run/xenstored/socket, /dev/xen/xenbus).
    #[arg(long, value_name = "PATH")]
    xenstore_socket: Option<PathBuf>,
    /// The dataplane's pkt0 socket (vrouter-dp --agent-socket), or "none".
    #[arg(long, value_name = "PATH", default_value = "/run/vrouter/pkt0.sock")]
    agent_socket: PathBuf,
    /// Our own pkt0 socket.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/run/vrouter/agent-pkt0.sock"
    )]
    agent_local_socket: PathBuf,
    /// Serve Prometheus metrics (and /status, /healthz) on this loopback address.
    #[arg(long, value_name = "127.0.0.1:PORT")]
    metrics: Option<SocketAddr>,
    /// Directory of the allocation state file (agent-state.json).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/vrouter")]
    state_dir: PathBuf,
    /// Milliseconds between dataplane liveness checks.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    poll_ms: u64,
    /// Seconds between full reconciles when nothing changes.
    #[arg(long, value_name = "S", default_value_t = 30)]
    resync_s: u64,
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            eprintln!("vrouter-agent: {msg}");
            ExitCode::from(code)
        }
    }
}

fn run(cli: Cli) -> Result<(), (u8, String)> {
    let fail = |m: String| (1u8, m);
    let usage = |m: String| (2u8, m);
    let mut neighbours = BTreeMap::new();
    for n in &cli.underlay_neighbour {
        let (ip, mac) = n
            .split_once('=')
            .and_then(|(i, m)| {
                Some((
                    i.trim().parse::<Ipv4Addr>().ok()?,
                    m.trim().parse::<MacAddr>().ok()?,
                ))
            })
            .ok_or_else(|| usage(format!("--underlay-neighbour {n:?}: expected IP=MAC")))?;
        neighbours.insert(ip, mac);
    }
    let encap = cli
        .encap
        .as_deref()
        .map(|e| {
            parse_encap(e)
                .ok_or_else(|| usage(format!("--encap {e:?}: mpls-over-udp or mpls-over-gre")))
        })
        .transpose()?;
    if !(68..=9216).contains(&cli.mtu) {
        return Err(usage(format!("--mtu {} is outside 68..9216", cli.mtu)));
    }
    install_signal_handlers().map_err(|e| fail(format!("cannot install signal handlers: {e}")))?;
    let health = Arc::new(Health::default());
    health.start_time.store(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        std::sync::atomic::Ordering::Relaxed,
    );
    let opts = Options {
        dp_socket: cli.dp_socket.clone(),
        state_file: cli.state_dir.join("agent-state.json"),
        poll: Duration::from_millis(cli.poll_ms.max(1)),
        resync: Duration::from_secs(cli.resync_s.max(1)),
    };
    let xen = XenOptions {
        socket: cli.xenstore_socket.clone(),
    };
    let mut observers = Vec::new();
    let source: Box<dyn ConfigSource> = match (&cli.config, &cli.controller) {
        (Some(cfg), None) if cli.xenstore => {
            let s = XenFileSource::new(FileSource::new(cfg));
            xenbind::spawn(xen, s.bind_target())
                .map_err(|e| fail(format!("cannot start the xenstore thread: {e}")))?;
            Box::new(s)
        }
        (Some(cfg), None) => {
            if encap.is_some() || cli.fabric_ip.is_some() || cli.underlay_gateway_mac.is_some() {
                log::warn!("--encap, --fabric-ip and --underlay-* apply to --controller; use the file's [underlay] section");
            }
            Box::new(FileSource::new(cfg))
        }
        (file, Some(url)) => {
            // The file's [underlay] section; the flags win.
            let underlay = match file {
                Some(f) => {
                    let c = FileSource::new(f).load().map_err(|e| fail(e.to_string()))?;
                    if !(c.networks.is_empty()
                        && c.interfaces.is_empty()
                        && c.routes.is_empty()
                        && c.floating_ips.is_empty())
                    {
                        log::warn!(
                            "{}: only [underlay] is used with --controller; its networks, interfaces, routes and floating IPs are ignored",
                            f.display()
                        );
                    }
                    c.underlay
                }
                None => Default::default(),
            };
            let mut all_neighbours = underlay.neighbours.clone();
            all_neighbours.extend(neighbours);
            let settings = Settings {
                url: url.clone(),
                token: cli.token.clone().filter(|t| !t.is_empty()),
                host: cli.hostname.clone().unwrap_or_else(system_hostname),
                fabric_ip: cli.fabric_ip.or(underlay.fabric_ip),
                gateway_mac: cli.underlay_gateway_mac.or(underlay.gateway_mac),
                neighbours: all_neighbours,
                arp: !cli.no_arp,
                encap: encap.unwrap_or(underlay.encap),
                mtu: cli.mtu,
                dp_socket: cli.dp_socket.clone(),
                xenstore: cli.xenstore,
            };
            if !cli.xenstore {
                log::warn!(
                    "--controller without --xenstore: no VM interface will be bound on this host"
                );
            }
            let s = ControllerSource::start(settings)
                .map_err(|e| fail(format!("cannot start the controller threads: {e}")))?;
            if cli.xenstore {
                xenbind::spawn(xen, s.bind_target())
                    .map_err(|e| fail(format!("cannot start the xenstore thread: {e}")))?;
            }
            observers.push(s.observer());
            Box::new(s)
        }
        (None, None) => {
            return Err(usage(
                "no config source: use --config FILE or --controller URL".into(),
            ))
        }
    };
    if cli.agent_socket.as_os_str() != "none" {
        let plan = PlanHandle::default();
        pkt0::spawn(
            Pkt0Options {
                dp_socket: cli.agent_socket.clone(),
                local_socket: cli.agent_local_socket.clone(),
            },
            plan.clone(),
        )
        .map_err(|e| fail(format!("cannot start the pkt0 thread: {e}")))?;
        observers.push(plan.observer());
    }
    let mut agent = Agent::new(opts, source, health.clone()).map_err(|e| fail(e.to_string()))?;
    for o in observers {
        agent.observe(o);
    }
    if let Some(addr) = cli.metrics {
        let l = metrics::bind(addr).map_err(|e| fail(format!("metrics on {addr}: {e}")))?;
        let shown = l.local_addr().map_or(addr.to_string(), |a| a.to_string());
        metrics::spawn(l, cli.dp_socket.clone(), health)
            .map_err(|e| fail(format!("cannot start the metrics thread: {e}")))?;
        log::info!("metrics on http://{shown}/metrics");
    }
    agent.run();
    Ok(())
}
