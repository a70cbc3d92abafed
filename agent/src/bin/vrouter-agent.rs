//! `vrouter-agent`: the dom0 daemon that programs the vRouter dataplane from configuration and
//! keeps it programmed across agent and dataplane restarts. See `docs/agent.md`.

use clap::Parser;
use sd_notify::NotifyState;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use vrouter_agent::config::{parse_encap, Underlay};
use vrouter_agent::controller::{ControllerSource, Settings};
use vrouter_agent::daemon::{install_signal_handlers, Agent, Observer, Options};
use vrouter_agent::metrics::{self, Health};
use vrouter_agent::pkt0::{self, Pkt0Options, PlanHandle};
use vrouter_agent::source::{ConfigSource, FileSource};
use vrouter_agent::xenbind::{self, XenFileSource, XenOptions};
use vrouter_dataplane::ctl::client::DEFAULT_SOCKET;
use vrouter_dataplane::tables::TunnelKind;
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
    /// The host's resolvers, where the gateways' DNS forwards names that are not a network's
    /// own (`nameserver` lines; re-read when the file changes).
    #[arg(long, value_name = "FILE", default_value = "/etc/resolv.conf")]
    dns_resolv_conf: PathBuf,
    /// DNS queries a second one VM may send to its gateway (0: no limit).
    #[arg(long, value_name = "Q", default_value_t = 1000)]
    dns_rate: u32,
    /// Most upstream DNS answers cached.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    dns_cache: usize,
    /// Serve Prometheus metrics (and /status, /healthz) on this loopback address.
    #[arg(long, value_name = "127.0.0.1:PORT")]
    metrics: Option<SocketAddr>,
    /// Directory of the allocation state file (agent-state.json).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/vrouter")]
    state_dir: PathBuf,
    /// Milliseconds between dataplane liveness checks.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    poll_ms: u64,
    /// dom0's link-local interface (a tap the agent creates when a system VM's Control NIC
    /// needs it; Xen's `xapi0`), or "none" to serve no link-local interface.
    #[arg(long, value_name = "NAME", default_value = "xapi0")]
    link_local_interface: String,
    /// dom0's address on it, in 169.254.0.0/16.
    #[arg(long, value_name = "A.B.C.D/N", default_value = "169.254.0.1/16")]
    link_local_address: String,
    /// Seconds between full reconciles when nothing changes.
    #[arg(long, value_name = "S", default_value_t = 30)]
    resync_s: u64,
    /// Parse and validate the flags and the config file, print a summary and exit (0: usable;
    /// 1: the file is invalid; 2: a bad flag). Contacts neither the dataplane nor the controller.
    #[arg(long)]
    check_config: bool,
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn main() -> ExitCode {
    vrouter_clidocs::generate_if_asked(<Cli as clap::CommandFactory>::command);
    // One log format for every daemon (logfmt; journald priorities under systemd).
    if let Err(e) = vrouter_log::init("info") {
        eprintln!("vrouter-agent: {e}");
    }
    let cli = Cli::parse();
    let result = if cli.check_config {
        check_config(&cli).map(|summary| {
            // A closed stdout is not an error worth more than the exit status.
            let _ = writeln!(std::io::stdout(), "{summary}");
        })
    } else {
        run(cli)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vrouter-agent: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Why the agent did not start. The exit status tells a bad command line (2) from a failure
/// to set something up (1), so a supervisor can tell "fix the unit file" from "retry".
#[derive(Debug, thiserror::Error)]
enum StartError {
    /// A bad flag value or combination.
    #[error("{0}")]
    Usage(String),
    /// Something the agent needs could not be set up.
    #[error("{0}")]
    Failed(String),
}

impl StartError {
    fn exit_code(&self) -> u8 {
        match self {
            StartError::Usage(_) => 2,
            StartError::Failed(_) => 1,
        }
    }
}

/// The underlay flags, checked.
struct UnderlayFlags {
    /// `--underlay-neighbour` entries.
    neighbours: BTreeMap<Ipv4Addr, MacAddr>,
    /// `--encap`.
    encap: Option<TunnelKind>,
}

fn run(cli: Cli) -> Result<(), StartError> {
    let flags = check_flags(&cli)?;
    install_signal_handlers()
        .map_err(|e| StartError::Failed(format!("cannot install signal handlers: {e}")))?;
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
    let mut observers = Vec::new();
    let source = config_source(&cli, flags, &mut observers)?;
    if cli.agent_socket.as_os_str() != "none" {
        observers.push(start_pkt0(&cli)?);
    }
    let mut agent =
        Agent::new(opts, source, health.clone()).map_err(|e| StartError::Failed(e.to_string()))?;
    for o in observers {
        agent.observe(o);
    }
    agent.set_link_local(link_local(&cli)?);
    if let Some(addr) = cli.metrics {
        start_metrics(addr, &cli, health)?;
    }
    agent.observe(ready_observer());
    agent.run_with(start_watchdog());
    let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
    Ok(())
}

/// Tells the service manager (systemd, `Type=notify`) the agent is ready after its first
/// successful reconcile pass. Without systemd (no `NOTIFY_SOCKET`) it does nothing.
fn ready_observer() -> Observer {
    let mut told = false;
    Box::new(move |_, _| {
        if !told {
            told = true;
            if let Err(e) = sd_notify::notify(false, &[NotifyState::Ready]) {
                log::warn!("cannot tell the service manager we are ready: {e}");
            }
        }
    })
}

/// With `WatchdogSec=` in the unit, starts a thread that pings the watchdog at half its period
/// while the control loop keeps going round (a loop stuck longer than the period gets the agent
/// restarted; the dataplane keeps forwarding meanwhile). Returns the heartbeat the loop calls
/// after each iteration.
fn start_watchdog() -> impl FnMut() {
    let start = std::time::Instant::now();
    let beat = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let now_ms = move || u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) {
        let period = Duration::from_micros(usec / 2).max(Duration::from_millis(100));
        let limit_ms = u64::try_from(2 * period.as_millis()).unwrap_or(u64::MAX);
        let seen = beat.clone();
        let spawned = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || loop {
                std::thread::sleep(period);
                let age = now_ms().saturating_sub(seen.load(std::sync::atomic::Ordering::Relaxed));
                if age <= limit_ms {
                    let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
                } else {
                    log::warn!("watchdog: the control loop has not gone round for {age} ms");
                }
            });
        if let Err(e) = spawned {
            log::warn!("cannot start the watchdog thread: {e}");
        }
    }
    move || beat.store(now_ms(), std::sync::atomic::Ordering::Relaxed)
}

/// `--check-config`: the flags, then the config file (parsed and validated as at start); the
/// summary to print when both are usable.
fn check_config(cli: &Cli) -> Result<String, StartError> {
    let flags = check_flags(cli)?;
    let file = match &cli.config {
        Some(f) => {
            let c = FileSource::new(f)
                .load()
                .map_err(|e| StartError::Failed(e.to_string()))?;
            format!(
                "{}: {} networks, {} interfaces, {} routes, {} floating IPs, fabric IP {}",
                f.display(),
                c.networks.len(),
                c.interfaces.len(),
                c.routes.len(),
                c.floating_ips.len(),
                c.underlay
                    .fabric_ip
                    .map_or("from the dataplane".to_string(), |ip| ip.to_string()),
            )
        }
        None => "no config file".to_string(),
    };
    let source = match (&cli.controller, &cli.config) {
        (Some(url), _) => {
            if !url.starts_with("http://") {
                return Err(StartError::Usage(format!(
                    "--controller {url:?}: expected http://HOST:PORT"
                )));
            }
            format!("controller {url}")
        }
        (None, Some(_)) => "the config file".to_string(),
        (None, None) => {
            return Err(StartError::Usage(
                "no config source: use --config FILE or --controller URL".into(),
            ))
        }
    };
    let encap = flags
        .encap
        .map_or(String::new(), |e| format!(", encap {e:?}"));
    Ok(format!(
        "vrouter-agent: configuration OK ({file}); config from {source}{}, dataplane {}{encap}",
        if cli.xenstore {
            ", VM interfaces from xenstore"
        } else {
            ""
        },
        cli.dp_socket.display(),
    ))
}

/// Checks the flags clap cannot: `IP=MAC` pairs, the encapsulation name, the MTU range.
fn check_flags(cli: &Cli) -> Result<UnderlayFlags, StartError> {
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
            .ok_or_else(|| {
                StartError::Usage(format!("--underlay-neighbour {n:?}: expected IP=MAC"))
            })?;
        neighbours.insert(ip, mac);
    }
    let encap = cli
        .encap
        .as_deref()
        .map(|e| {
            parse_encap(e).ok_or_else(|| {
                StartError::Usage(format!("--encap {e:?}: mpls-over-udp or mpls-over-gre"))
            })
        })
        .transpose()?;
    if !(68..=9216).contains(&cli.mtu) {
        return Err(StartError::Usage(format!(
            "--mtu {} is outside 68..9216",
            cli.mtu
        )));
    }
    Ok(UnderlayFlags { neighbours, encap })
}

/// The config source the flags ask for, with its xenstore binder started if wanted; a
/// controller source also adds its observer to `observers`.
fn config_source(
    cli: &Cli,
    flags: UnderlayFlags,
    observers: &mut Vec<Observer>,
) -> Result<Box<dyn ConfigSource>, StartError> {
    let xen = XenOptions {
        socket: cli.xenstore_socket.clone(),
    };
    match (&cli.config, &cli.controller) {
        (Some(cfg), None) if cli.xenstore => {
            let s = XenFileSource::new(FileSource::new(cfg));
            xenbind::spawn(xen, s.bind_target()).map_err(|e| {
                StartError::Failed(format!("cannot start the xenstore thread: {e}"))
            })?;
            Ok(Box::new(s))
        }
        (Some(cfg), None) => {
            if flags.encap.is_some()
                || cli.fabric_ip.is_some()
                || cli.underlay_gateway_mac.is_some()
            {
                log::warn!("--encap, --fabric-ip and --underlay-* apply to --controller; use the file's [underlay] section");
            }
            Ok(Box::new(FileSource::new(cfg)))
        }
        (file, Some(url)) => {
            let settings = controller_settings(cli, file.as_deref(), url, flags)?;
            if !cli.xenstore {
                log::warn!(
                    "--controller without --xenstore: no VM interface will be bound on this host"
                );
            }
            let s = ControllerSource::start(settings).map_err(|e| {
                StartError::Failed(format!("cannot start the controller threads: {e}"))
            })?;
            if cli.xenstore {
                xenbind::spawn(xen, s.bind_target()).map_err(|e| {
                    StartError::Failed(format!("cannot start the xenstore thread: {e}"))
                })?;
            }
            observers.push(s.observer());
            Ok(Box::new(s))
        }
        (None, None) => Err(StartError::Usage(
            "no config source: use --config FILE or --controller URL".into(),
        )),
    }
}

/// The controller source's settings: the flags, falling back to the config file's [underlay]
/// section.
fn controller_settings(
    cli: &Cli,
    file: Option<&Path>,
    url: &str,
    flags: UnderlayFlags,
) -> Result<Settings, StartError> {
    let underlay = match file {
        Some(f) => file_underlay(f)?,
        None => Underlay::default(),
    };
    let mut all_neighbours = underlay.neighbours.clone();
    all_neighbours.extend(flags.neighbours);
    Ok(Settings {
        url: url.to_string(),
        token: cli.token.clone().filter(|t| !t.is_empty()),
        host: cli.hostname.clone().unwrap_or_else(system_hostname),
        fabric_ip: cli.fabric_ip.or(underlay.fabric_ip),
        gateway_mac: cli.underlay_gateway_mac.or(underlay.gateway_mac),
        neighbours: all_neighbours,
        arp: !cli.no_arp,
        encap: flags.encap.unwrap_or(underlay.encap),
        mtu: cli.mtu,
        dp_socket: cli.dp_socket.clone(),
        xenstore: cli.xenstore,
    })
}

/// The [underlay] section of config file `f`; anything else in it is ignored, with a warning.
fn file_underlay(f: &Path) -> Result<Underlay, StartError> {
    let c = FileSource::new(f)
        .load()
        .map_err(|e| StartError::Failed(e.to_string()))?;
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
    Ok(c.underlay)
}

/// Starts the pkt0 thread (DHCP, ICMP); its observer keeps its plan current.
fn start_pkt0(cli: &Cli) -> Result<Observer, StartError> {
    let plan = PlanHandle::default();
    pkt0::spawn(
        Pkt0Options {
            dp_socket: cli.agent_socket.clone(),
            local_socket: cli.agent_local_socket.clone(),
            dns: pkt0::DnsOptions {
                resolv_conf: cli.dns_resolv_conf.clone(),
                settings: vrouter_agent::services::DnsSettings {
                    rate: cli.dns_rate,
                    burst: cli.dns_rate.saturating_mul(2),
                    cache_entries: cli.dns_cache,
                    ..Default::default()
                },
            },
        },
        plan.clone(),
    )
    .map_err(|e| StartError::Failed(format!("cannot start the pkt0 thread: {e}")))?;
    Ok(plan.observer())
}

/// Binds the metrics address and starts the thread serving it.
fn start_metrics(addr: SocketAddr, cli: &Cli, health: Arc<Health>) -> Result<(), StartError> {
    let l =
        metrics::bind(addr).map_err(|e| StartError::Failed(format!("metrics on {addr}: {e}")))?;
    let shown = l.local_addr().map_or(addr.to_string(), |a| a.to_string());
    metrics::spawn(l, cli.dp_socket.clone(), health)
        .map_err(|e| StartError::Failed(format!("cannot start the metrics thread: {e}")))?;
    log::info!("metrics on http://{shown}/metrics");
    Ok(())
}

/// dom0's link-local interface from `--link-local-interface` / `--link-local-address`.
fn link_local(cli: &Cli) -> Result<Option<vrouter_agent::compile::LinkLocalHost>, StartError> {
    use vrouter_agent::compile::{LinkLocalHost, LINK_LOCAL_NET};
    if cli.link_local_interface == "none" {
        return Ok(None);
    }
    let a = &cli.link_local_address;
    let parsed = a
        .split_once('/')
        .and_then(|(ip, n)| Some((ip.parse::<Ipv4Addr>().ok()?, n.parse::<u8>().ok()?)))
        .filter(|(ip, n)| (16..=30).contains(n) && LINK_LOCAL_NET.contains(*ip));
    let Some((addr, plen)) = parsed else {
        return Err(StartError::Usage(format!(
            "--link-local-address {a:?}: expected an address in {LINK_LOCAL_NET} with a prefix length of 16 to 30"
        )));
    };
    Ok(Some(LinkLocalHost {
        name: cli.link_local_interface.clone(),
        addr,
        plen,
        ..LinkLocalHost::default()
    }))
}
