//! `vrouter-dp`: the dataplane daemon. Opens the fabric NIC, the host interface and the agent
//! socket, starts the lcores, serves the control socket, and opens or closes VM ports as the
//! agent adds or deletes their interfaces.
//!
//! `vrouter-dp --config FILE [--key value ...]`; every config key is also a flag (see `--help`).

use sd_notify::NotifyState;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use vrouter_dataplane::capture::Capture;
use vrouter_dataplane::cli;
use vrouter_dataplane::config::{ConfigError, DpConfig};
use vrouter_dataplane::ctl::{CtlClient, CtlServer, CtlState, DaemonInfo, Request};
use vrouter_dataplane::engine::{Engine, EngineConfig, EngineError};
use vrouter_dataplane::port::agent::AgentPort;
use vrouter_dataplane::port::open::{open_device, DevicePorts, OpenOpts, PortKind, Role};
use vrouter_dataplane::port::sys::{mac_of, PortError};
use vrouter_dataplane::port::tap::TapPort;
use vrouter_dataplane::port::Port;
use vrouter_dataplane::tables::{HostConfig, TableError, TableOp, VifKind, VifSpec, FABRIC_VRF};
use vrouter_dataplane::wire::MacAddr;
use vrouter_dataplane::{new_tables, StatsRegistry, TablesReader, TablesWriter};

/// Interface ids the daemon creates itself (Contrail's convention).
const FABRIC_VIF: u16 = 0;
const HOST_VIF: u16 = 1;
const AGENT_VIF: u16 = 2;

/// Most ports opened at once. Opening an AF_PACKET port waits out RCU grace periods in the
/// kernel (ring setup), so opens run side by side on this many threads; 16 covers the ~0.03 s
/// each waits several times over without a thread per port.
const MAX_OPENERS: usize = 16;

static TERM: AtomicBool = AtomicBool::new(false);

/// The port manager's eventfd (-1 until created): the control socket writes to it after every
/// request and the signal handler on SIGTERM/SIGINT, so the main thread sleeps until then.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

/// Wakes the port manager. Async-signal-safe (one atomic load and one `write`).
fn wake_port_manager() {
    let fd = WAKE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd the process keeps open for its
        // whole life; an error (counter saturated) still leaves it readable, which is enough.
        unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
    }
}

extern "C" fn on_signal(_: libc::c_int) {
    TERM.store(true, Ordering::Relaxed);
    wake_port_manager();
}

/// Creates the port manager's eventfd (kept open until the process exits).
fn create_wake_fd() -> std::io::Result<()> {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    WAKE_FD.store(fd, Ordering::Relaxed);
    Ok(())
}

/// Sleeps until [`wake_port_manager`] is called or `timeout` passes (`None`: no timeout), then
/// resets the eventfd so the next wait sleeps again.
fn wait_for_wake(timeout: Option<Duration>) {
    let fd = WAKE_FD.load(Ordering::Relaxed);
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd for the call's duration.
    unsafe { libc::poll(&mut pfd, 1, ms) };
    let mut v: u64 = 0;
    // SAFETY: reads at most 8 bytes into a live u64; the fd is non-blocking (EAGAIN if unset).
    unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
}

#[derive(Debug, thiserror::Error)]
enum DpError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("port: {0}")]
    Port(#[from] PortError),
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    #[error("tables: operation {0}: {1}")]
    Tables(usize, TableError),
    #[error("control socket {path}: {err}")]
    Ctl { path: String, err: std::io::Error },
    #[error("wake-up eventfd: {0}")]
    Wake(std::io::Error),
}

fn main() -> ExitCode {
    vrouter_clidocs::generate_if_asked(cli::command);
    // clap answers --help/--version (exit 0; a closed pipe is quiet) and bad flags (exit 2).
    let matches = cli::command().get_matches();
    let inv = match cli::invocation(&matches) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("vrouter-dp: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = cli::check(&inv.config) {
        eprintln!("vrouter-dp: invalid setting {e}");
        return ExitCode::from(2);
    }
    if inv.check_only {
        // A closed stdout is not an error worth more than the exit status.
        let _ = writeln!(std::io::stdout(), "{}", summary(&inv));
        return ExitCode::SUCCESS;
    }
    if let Err(e) = vrouter_log::init(&inv.config.log_level) {
        eprintln!("vrouter-dp: invalid setting log_level: {e}");
        return ExitCode::from(2);
    }
    if let Err(e) = run(inv.config) {
        log::error!("fatal: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// `--check-config`'s answer: where the settings came from and the ones that matter most.
fn summary(inv: &cli::Invocation) -> String {
    let c = &inv.config;
    let file = inv
        .file
        .as_ref()
        .map_or("no file".to_string(), |f| f.display().to_string());
    let fabric = c.fabric.as_ref().map_or("none".to_string(), |f| {
        let kind = c
            .fabric_port_kind
            .map_or(String::new(), |k| format!(", {k}"));
        format!("{f} ({}{kind})", c.fabric_ip)
    });
    format!(
        "vrouter-dp: configuration OK ({file}): fabric {fabric}, host interface {}, lcores {:?}, \
         VM ports {}, control socket {}",
        c.host_interface.as_deref().unwrap_or("none"),
        c.lcores,
        c.port_kind,
        c.ctl_socket.display()
    )
}

/// Which backend a VM interface gets: `tap*` names are HVM taps, the rest use the default.
fn kind_for(cfg: &DpConfig, name: &str) -> PortKind {
    if name.starts_with("tap") {
        PortKind::Tap
    } else {
        cfg.port_kind
    }
}

/// What keeps an opened device's resources alive (dropped once its ports are gone).
type PortGuard = Option<Box<dyn std::any::Any + Send>>;

struct Daemon {
    cfg: DpConfig,
    engine: Engine,
    /// Open VM ports: vif id -> (device name, resources to keep).
    open: HashMap<u16, (String, PortGuard)>,
    /// VM interfaces whose device could not be opened yet: vif id -> (name, next attempt).
    pending: HashMap<u16, (String, Instant)>,
    /// dom0 link-local interfaces (`xapi0`): always taps, whatever their name.
    ll_taps: HashSet<u16>,
}

impl Daemon {
    /// Hands the device's handles to the lcores. The returned guard also holds a duplicate of
    /// each handle's descriptor, so that when the vif goes the lcore's `close()` only drops a
    /// reference: the socket's release (ring teardown, leaving the fanout group, the RCU grace
    /// periods AF_PACKET and AF_XDP wait for, tens of ms each) runs here when the guard is
    /// dropped, not on the lcore, which meanwhile forwards for every other vif.
    fn install(&mut self, vif: u16, d: DevicePorts) -> PortGuard {
        let mut dups: Vec<std::os::fd::OwnedFd> = Vec::new();
        for (i, (p, rx)) in d.handles.into_iter().enumerate() {
            if let Some(fd) = p.poll_fd() {
                // SAFETY: `fd` is the port's own descriptor, open while `p` lives (here).
                let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                match b.try_clone_to_owned() {
                    Ok(o) => dups.push(o),
                    Err(e) => log::debug!("vif {vif}: no duplicate of fd {fd}: {e}"),
                }
            }
            self.engine.add_port(i, vif, p, rx);
        }
        // Dropped in field order: the sockets' release first, then the device guard (the XDP
        // program's link), as when the lcore closed them.
        Some(Box::new((dups, d.guard)))
    }

    fn open_opts(&self, kind: PortKind, role: Role, vif: u16) -> OpenOpts {
        OpenOpts {
            kind,
            role,
            lcores: self.engine.lcores(),
            xdp_mode: self.cfg.xdp_mode,
            group: 0x4000 ^ (std::process::id() as u16).rotate_left(4) ^ vif,
        }
    }

    /// Brings the open VM ports in line with the vif table.
    fn sync_vm_ports(&mut self, reader: &TablesReader, force_retry: bool) {
        let on_fabric_vrf: HashSet<u16>;
        let want: HashMap<u16, String> = match reader.enter() {
            Some(t) => {
                let vifs = t.vifs.iter().flatten();
                self.ll_taps = vifs
                    .clone()
                    .filter(|v| v.spec.kind == VifKind::XenLinkLocal)
                    .map(|v| v.spec.id)
                    .collect();
                on_fabric_vrf = vifs
                    .clone()
                    .filter(|v| v.spec.kind == VifKind::Virtual && v.spec.vrf == FABRIC_VRF)
                    .map(|v| v.spec.id)
                    .collect();
                vifs.filter(|v| v.spec.kind.is_vm_like())
                    .map(|v| (v.spec.id, v.spec.name.clone()))
                    .collect()
            }
            None => return,
        };
        let stale: Vec<u16> = self
            .open
            .iter()
            .filter(|(id, (name, _))| want.get(id) != Some(name))
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some((name, guard)) = self.open.remove(&id) {
                // The ports come back from the lcores and close here, off the forwarding path.
                match self.engine.del_vif(id, Duration::from_secs(2)) {
                    Some(ports) => drop(ports),
                    None => {
                        log::warn!("vif {id} ({name}): lcores did not release the port in time")
                    }
                }
                drop(guard);
                tracing::info!(vif = %name, id, "port closed");
            }
        }
        self.pending.retain(|id, (n, _)| want.get(id) == Some(n));
        let now = Instant::now();
        let due: Vec<(u16, String)> = want
            .into_iter()
            .filter(|(id, _)| !self.open.contains_key(id))
            .filter(|(id, _)| {
                force_retry || self.pending.get(id).is_none_or(|(_, next)| *next <= now)
            })
            .collect();
        if self.fabric_kind() == PortKind::AfXdp {
            for (id, name) in due.iter().filter(|(id, _)| on_fabric_vrf.contains(id)) {
                log::warn!(
                    "vif {id} ({name}) is on ip-fabric, but the fabric is AF_XDP: its XDP program \
                     does not hand this VM's ARP and packets to the dataplane, so the underlay \
                     cannot reach it; run the fabric with --fabric-port-kind af_packet \
                     (docs/adr/0006-system-networks.md)"
                );
            }
        }
        self.open_ports(due);
    }

    /// Opens `due` (vif id, device name) side by side on up to [`MAX_OPENERS`] threads and
    /// hands each port to the lcores as soon as it is open; a device that cannot be opened is
    /// retried a second later. The lcores never wait on an open: they get finished ports.
    fn open_ports(&mut self, due: Vec<(u16, String)>) {
        if due.is_empty() {
            return;
        }
        let jobs: Vec<(u16, String, OpenOpts)> = due
            .into_iter()
            .map(|(id, name)| {
                let kind = if self.ll_taps.contains(&id) {
                    PortKind::Tap
                } else {
                    kind_for(&self.cfg, &name)
                };
                let opts = self.open_opts(kind, Role::Vm, id);
                (id, name, opts)
            })
            .collect();
        let next = AtomicUsize::new(0);
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|s| {
            for i in 0..jobs.len().min(MAX_OPENERS) {
                let (jobs, next, tx) = (&jobs, &next, tx.clone());
                let spawned = std::thread::Builder::new()
                    .name(format!("port-open{i}"))
                    .spawn_scoped(s, move || {
                        while let Some((id, name, opts)) =
                            jobs.get(next.fetch_add(1, Ordering::Relaxed))
                        {
                            if tx.send((*id, open_device(name, opts))).is_err() {
                                return;
                            }
                        }
                    });
                if let Err(e) = spawned {
                    log::warn!("cannot start port opener thread {i}: {e}");
                }
            }
            drop(tx);
            // Without any opener thread the loop ends at once; the ports stay pending.
            let mut left: HashMap<u16, &str> =
                jobs.iter().map(|(id, n, _)| (*id, n.as_str())).collect();
            for (id, res) in rx {
                let Some(name) = left.remove(&id) else {
                    continue;
                };
                self.opened(id, name, res);
            }
            let retry = Instant::now() + Duration::from_secs(1);
            for (id, name) in left {
                self.pending.insert(id, (name.to_string(), retry));
            }
        });
    }

    /// Installs a port just opened on the lcores, or marks its vif for a retry in a second.
    fn opened(&mut self, id: u16, name: &str, res: Result<DevicePorts, PortError>) {
        match res {
            Ok(d) => {
                tracing::info!(vif = %name, id, kind = %d.kind, "port opened");
                let g = self.install(id, d);
                self.open.insert(id, (name.to_string(), g));
                self.pending.remove(&id);
            }
            Err(e) => {
                if !self.pending.contains_key(&id) {
                    tracing::warn!(
                        vif = %name,
                        id,
                        "cannot open the port ({e}); retrying every second"
                    );
                }
                self.pending.insert(
                    id,
                    (name.to_string(), Instant::now() + Duration::from_secs(1)),
                );
            }
        }
    }
}

fn run(cfg: DpConfig) -> Result<(), DpError> {
    create_wake_fd().map_err(DpError::Wake)?;
    install_signal_handlers();
    let limits = cfg.limits;
    let (mut writer, reader) = new_tables(limits);
    let stats = StatsRegistry::new(usize::from(limits.vifs), limits.vrfs as usize);
    let capture = Arc::new(Capture::new());
    let engine = start_engine(&cfg, &reader, &stats, &capture)?;
    log::info!(
        "vrouter-dp starting: lcores={:?} port_kind={} fabric={:?} fabric_ip={} host_interface={:?}",
        cfg.lcores,
        cfg.port_kind,
        cfg.fabric,
        cfg.fabric_ip,
        cfg.host_interface
    );
    let mut d = Daemon {
        cfg,
        engine,
        open: HashMap::new(),
        pending: HashMap::new(),
        ll_taps: HashSet::new(),
    };
    let StaticPorts { guards, ops, host } = d.open_static_ports()?;
    writer.apply(ops).map_err(|(i, e)| DpError::Tables(i, e))?;
    // Kept to the end like the rest of the daemon's state (the control thread holds a clone).
    let info = DaemonInfo {
        lcores: d.engine.lcores(),
        capture,
    };
    let _ctl_state = serve_control(&d.cfg, writer, &stats, info, host.fabric_ip)?;
    notify_ready(&d.cfg.ctl_socket);
    d.follow_vifs_until_signal(&reader);
    log::info!("signal received: shutting down");
    let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
    shutdown(d, guards);
    Ok(())
}

fn install_signal_handlers() {
    // SAFETY: installs an async-signal-safe handler (one relaxed atomic store).
    unsafe {
        libc::signal(
            libc::SIGTERM,
            on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGINT,
            on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

fn start_engine(
    cfg: &DpConfig,
    reader: &TablesReader,
    stats: &StatsRegistry,
    capture: &Arc<Capture>,
) -> Result<Engine, EngineError> {
    Engine::start(
        &EngineConfig {
            cpus: cfg.lcores.clone(),
            pool_size: cfg.pool_size,
            max_vifs: usize::from(cfg.limits.vifs),
            spin_rounds: cfg.idle_spin_rounds,
            max_sleep_us: 100,
            poll_timeout_us: cfg.idle_poll_us,
            busy_poll_us: cfg.idle_busy_us,
        },
        reader,
        stats,
        capture,
    )
}

/// What opening the daemon's own interfaces (fabric, host, agent) leaves behind.
struct StaticPorts {
    /// Resources to keep until the lcores have stopped (device guards, overlay sinks).
    guards: Vec<PortGuard>,
    /// An `AddVif` per interface opened, then the `SetHost` naming them.
    ops: Vec<TableOp>,
    /// The host settings that `SetHost` carries.
    host: HostConfig,
}

/// The interface's MTU as the kernel has it: tunnel nexthops on the fabric derive the largest
/// packet they can carry from it (bigger ones with DF set trap for ICMP frag-needed).
fn device_mtu(name: &str) -> u16 {
    std::fs::read_to_string(format!("/sys/class/net/{name}/mtu"))
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok())
        .unwrap_or(1500)
}

/// The interface spec of one of the daemon's own interfaces (all in VRF 0).
fn static_vif(id: u16, name: &str, kind: VifKind, mac: [u8; 6]) -> TableOp {
    TableOp::AddVif(VifSpec {
        id,
        name: name.into(),
        kind,
        vrf: 0,
        mac: MacAddr(mac),
        ip: 0,
        mtu: device_mtu(name),
        nh: None,
        allowed: Vec::new(),
    })
}

/// Adds a port only lcore 0 receives on; every other lcore gets a transmit handle on it.
fn add_rx_on_first_lcore<P: Port + 'static>(
    engine: &Engine,
    vif: u16,
    port: P,
    tx_handle: fn(&P) -> Result<P, PortError>,
) -> Result<(), PortError> {
    for i in 1..engine.lcores() {
        engine.add_port(i, vif, Box::new(tx_handle(&port)?), false);
    }
    engine.add_port(0, vif, Box::new(port), true);
    Ok(())
}

impl Daemon {
    /// Opens whichever of the fabric NIC, the host interface and the agent socket are
    /// configured, in that order.
    fn open_static_ports(&mut self) -> Result<StaticPorts, DpError> {
        let mut ports = StaticPorts {
            guards: Vec::new(),
            ops: Vec::new(),
            host: HostConfig {
                fabric_ip: u32::from(self.cfg.fabric_ip),
                ..HostConfig::default()
            },
        };
        if let Some(f) = self.cfg.fabric.clone() {
            self.open_fabric(&f, &mut ports)?;
        }
        if let Some(h) = self.cfg.host_interface.clone() {
            self.open_host_interface(&h, &mut ports)?;
        }
        if let Some(p) = self.cfg.agent_socket.clone() {
            self.open_agent_socket(&p, &mut ports)?;
        }
        ports.ops.push(TableOp::SetHost(ports.host));
        Ok(ports)
    }

    /// The fabric NIC's port kind: as configured, else the VMs' kind (a NIC is never a tap:
    /// with taps as the default kind, the fabric uses AF_PACKET).
    fn fabric_kind(&self) -> PortKind {
        self.cfg
            .fabric_port_kind
            .unwrap_or(match self.cfg.port_kind {
                PortKind::Tap => PortKind::AfPacket,
                k => k,
            })
    }

    fn open_fabric(&mut self, name: &str, ports: &mut StaticPorts) -> Result<(), DpError> {
        let kind = self.fabric_kind();
        let role = Role::Fabric {
            host_ip: u32::from(self.cfg.fabric_ip),
        };
        let dev = open_device(name, &self.open_opts(kind, role, FABRIC_VIF))?;
        log::info!("fabric {name}: opened as {}", dev.kind);
        if dev.kind == PortKind::AfPacket && self.cfg.host_interface.is_none() {
            ports
                .guards
                .push(Some(Box::new(overlay_sinks(self.cfg.fabric_ip))));
        }
        ports.guards.push(self.install(FABRIC_VIF, dev));
        let mac = mac_of(name).unwrap_or_default();
        ports
            .ops
            .push(static_vif(FABRIC_VIF, name, VifKind::Physical, mac));
        ports.host.fabric_vif = Some(FABRIC_VIF);
        Ok(())
    }

    fn open_host_interface(&mut self, name: &str, ports: &mut StaticPorts) -> Result<(), DpError> {
        let tap = TapPort::open(name)?;
        add_rx_on_first_lcore(&self.engine, HOST_VIF, tap, TapPort::tx_handle)?;
        let mac = mac_of(name).unwrap_or_default();
        ports
            .ops
            .push(static_vif(HOST_VIF, name, VifKind::Host, mac));
        ports.host.host_vif = Some(HOST_VIF);
        log::info!("host interface {name}: tap");
        Ok(())
    }

    fn open_agent_socket(&mut self, path: &Path, ports: &mut StaticPorts) -> Result<(), DpError> {
        let agent = AgentPort::bind(path)?;
        add_rx_on_first_lcore(&self.engine, AGENT_VIF, agent, AgentPort::tx_handle)?;
        ports
            .ops
            .push(static_vif(AGENT_VIF, "pkt0", VifKind::Agent, [0; 6]));
        ports.host.agent_vif = Some(AGENT_VIF);
        log::info!("agent interface pkt0: datagram socket {}", path.display());
        Ok(())
    }

    /// Keeps the VM ports in line with the vif table until SIGTERM or SIGINT: a new table
    /// generation, or a pending port's retry falling due (once a second), triggers a sync.
    /// Between syncs the thread sleeps on the wake-up eventfd (the control socket kicks it after
    /// every request, the signal handler on exit), so an idle daemon does no periodic work; with
    /// ports pending it also wakes for their retry.
    fn follow_vifs_until_signal(&mut self, reader: &TablesReader) {
        let mut last_gen = u64::MAX;
        let mut last_retry = Instant::now();
        while !TERM.load(Ordering::Relaxed) {
            let gen = reader.enter().map(|t| t.generation).unwrap_or(0);
            let retry = !self.pending.is_empty() && last_retry.elapsed() >= Duration::from_secs(1);
            if gen != last_gen || retry {
                last_gen = gen;
                if retry {
                    last_retry = Instant::now();
                }
                self.sync_vm_ports(reader, false);
            }
            let timeout = (!self.pending.is_empty()).then(|| {
                Duration::from_secs(1)
                    .saturating_sub(last_retry.elapsed())
                    .max(Duration::from_millis(1))
            });
            wait_for_wake(timeout);
        }
    }
}

/// Hands the tables' writer to the control socket's thread and starts serving.
fn serve_control(
    cfg: &DpConfig,
    writer: TablesWriter,
    stats: &StatsRegistry,
    info: DaemonInfo,
    fabric_ip: u32,
) -> Result<Arc<Mutex<CtlState>>, DpError> {
    let state = Arc::new(Mutex::new(CtlState {
        writer,
        stats: stats.clone(),
        info,
    }));
    let ctl_error = |err: std::io::Error| DpError::Ctl {
        path: cfg.ctl_socket.display().to_string(),
        err,
    };
    let server = CtlServer::bind(&cfg.ctl_socket, state.clone())
        .map_err(ctl_error)?
        .with_on_request(Arc::new(wake_port_manager));
    server.spawn().map_err(ctl_error)?;
    log::info!(
        "control socket listening on {} (fabric ip {})",
        cfg.ctl_socket.display(),
        Ipv4Addr::from(fabric_ip)
    );
    Ok(state)
}

/// Tells the service manager (systemd, `Type=notify`) that the control socket is bound; with
/// `WatchdogSec=` in the unit, a thread pings the watchdog at half its period, but only while
/// the control socket answers a request (so a wedged control thread gets the daemon
/// restarted). Without systemd (no `NOTIFY_SOCKET`/`WATCHDOG_USEC`) it does nothing.
fn notify_ready(ctl_socket: &Path) {
    if let Err(e) = sd_notify::notify(false, &[NotifyState::Ready]) {
        log::warn!("cannot tell the service manager we are ready: {e}");
    }
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) {
        return;
    }
    let period = Duration::from_micros(usec / 2).max(Duration::from_millis(100));
    let path = ctl_socket.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || loop {
            std::thread::sleep(period);
            match CtlClient::connect(&path).and_then(|mut c| c.request(&Request::Info)) {
                Ok(_) => {
                    let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
                }
                Err(e) => log::warn!("watchdog: the control socket does not answer ({e})"),
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot start the watchdog thread: {e}");
    }
}

/// Stops the lcores before closing the ports they poll, then removes the control socket.
fn shutdown(d: Daemon, guards: Vec<PortGuard>) {
    let Daemon {
        cfg, engine, open, ..
    } = d;
    engine.stop();
    drop(open);
    drop(guards);
    let _ = std::fs::remove_file(&cfg.ctl_socket);
    log::info!("vrouter-dp stopped");
}

/// With an AF_PACKET fabric and no host interface, the kernel sees overlay packets too and would
/// answer them with ICMP unreachables. Sockets that claim UDP 6635/51234 and GRE without ever
/// reading (a zero-length filter drops everything) keep it quiet.
fn overlay_sinks(ip: Ipv4Addr) -> Vec<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mut v = Vec::new();
    let drop_all = [libc::sock_filter {
        code: 0x06, // BPF_RET | BPF_K
        jt: 0,
        jf: 0,
        k: 0,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: drop_all.as_ptr() as *mut libc::sock_filter,
    };
    let mk = |ty: i32, proto: i32, port: u16| -> Option<OwnedFd> {
        // SAFETY: plain syscall with integer arguments.
        let fd = unsafe { libc::socket(libc::AF_INET, ty | libc::SOCK_CLOEXEC, proto) };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: `prog` points at a live one-instruction filter for the call's duration.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&prog as *const libc::sock_fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as u32,
            );
        }
        if ty == libc::SOCK_DGRAM {
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(ip).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `sa` is a valid sockaddr_in of the length passed.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sa as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                )
            };
            if rc < 0 {
                return None;
            }
        }
        Some(fd)
    };
    v.extend(mk(libc::SOCK_DGRAM, 0, 6635));
    v.extend(mk(libc::SOCK_DGRAM, 0, 51234));
    v.extend(mk(libc::SOCK_RAW, libc::IPPROTO_GRE, 0));
    v
}
