//! The agent's control loop: keep the dataplane equal to the configuration.
//!
//! Each pass that may have changed something (start, SIGHUP, a new dataplane, the periodic
//! resync) reads the dataplane's whole state, compiles the configuration against it, and applies
//! the difference as one bulk `Apply`. Because the difference of a correct dataplane is empty, the
//! same pass serves a first start, an agent restart over a forwarding dataplane (nothing changes,
//! no label moves) and a restarted, empty dataplane (everything is programmed in one request).
//!
//! A restarted dataplane is noticed by polling `Info` every [`Options::poll`]: a refused
//! connection or a new daemon pid triggers a pass as soon as the socket answers again.

use crate::alloc::Allocations;
use crate::compile::{compile_with, Compiled, LinkLocalHost, SystemHost, SystemNet};
use crate::config::Config;
use crate::dump::DumpIndex;
use crate::metrics::Health;
use crate::reconcile::{reconcile, summarize};
use crate::source::ConfigSource;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vrouter_dataplane::ctl::{CtlClient, CtlError, Request, Response};
use vrouter_dataplane::tables::Limits;

/// Agent settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Dataplane control socket.
    pub dp_socket: PathBuf,
    /// Allocation state file.
    pub state_file: PathBuf,
    /// How often to check the dataplane is the same process.
    pub poll: Duration,
    /// Full reconcile period even when nothing seems to change (heals drift).
    pub resync: Duration,
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The first configuration could not be loaded.
    #[error("{0}")]
    Config(#[from] crate::source::SourceError),
}

static HUP: AtomicBool = AtomicBool::new(false);
static TERM: AtomicBool = AtomicBool::new(false);

extern "C" fn on_hup(_: libc::c_int) {
    HUP.store(true, Ordering::SeqCst);
}

extern "C" fn on_term(_: libc::c_int) {
    TERM.store(true, Ordering::SeqCst);
}

/// Installs SIGHUP (reload) and SIGTERM/SIGINT (stop) handlers that only set flags.
pub fn install_signal_handlers() -> std::io::Result<()> {
    let handlers: [(libc::c_int, extern "C" fn(libc::c_int)); 3] = [
        (libc::SIGHUP, on_hup),
        (libc::SIGTERM, on_term),
        (libc::SIGINT, on_term),
    ];
    for (sig, handler) in handlers {
        // SAFETY: an all-zero `sigaction` is a valid value (no flags, empty mask, SIG_DFL).
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = handler as usize;
        sa.sa_flags = libc::SA_RESTART;
        // SAFETY: `sa` is a valid, exclusively borrowed sigaction; the handler only stores to
        // an atomic, which is async-signal-safe; the old action is not requested (null).
        let rc = unsafe {
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Asks the running loop to reload its configuration (what SIGHUP does).
pub fn request_reload() {
    HUP.store(true, Ordering::SeqCst);
}

/// Asks the running loop to stop (what SIGTERM does). The dataplane is left as it is.
pub fn request_stop() {
    TERM.store(true, Ordering::SeqCst);
}

/// Called after every successful pass with the configuration in force and what was programmed
/// (ids, labels): the controller source advertises routes from it, the pkt0 services take their
/// interfaces from it. Must not block.
pub type Observer = Box<dyn FnMut(&Config, &Compiled) + Send>;

struct Observers(Vec<Observer>);

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} observers", self.0.len())
    }
}

/// The agent.
#[derive(Debug)]
pub struct Agent<S: ConfigSource> {
    observers: Observers,
    opts: Options,
    source: S,
    config: Config,
    alloc: Allocations,
    health: Arc<Health>,
    client: Option<CtlClient>,
    dp_pid: Option<u32>,
    limits: Limits,
    /// A pass is due.
    dirty: bool,
    /// A new dataplane process was seen and not yet programmed.
    new_dp: bool,
    last_sync: Option<Instant>,
    /// Don't retry a refused apply before this.
    backoff_until: Option<Instant>,
    down_logged: bool,
    not_ready_logged: bool,
    /// What the host provides for system networks (dom0's link-local interface).
    system: SystemHost,
}

impl<S: ConfigSource> Agent<S> {
    /// Loads the first configuration and the allocation state. A corrupt state file is logged
    /// and ignored: ids are then adopted from the dataplane.
    pub fn new(opts: Options, mut source: S, health: Arc<Health>) -> Result<Self, AgentError> {
        let config = source.load()?;
        let alloc = Allocations::load(&opts.state_file).unwrap_or_else(|e| {
            log::error!("{e}; starting with no remembered allocations");
            Allocations::default()
        });
        health.set_status(|s| {
            s.config_source = source.describe();
            s.dp_socket = opts.dp_socket.display().to_string();
        });
        log::info!(
            "config from {}: {} networks, {} interfaces, {} remote routes, {} floating IPs",
            source.describe(),
            config.networks.len(),
            config.interfaces.len(),
            config.routes.len(),
            config.floating_ips.len()
        );
        Ok(Self {
            observers: Observers(Vec::new()),
            opts,
            source,
            config,
            alloc,
            health,
            client: None,
            dp_pid: None,
            limits: Limits::default(),
            dirty: true,
            new_dp: false,
            last_sync: None,
            backoff_until: None,
            down_logged: false,
            not_ready_logged: false,
            system: SystemHost::default(),
        })
    }

    /// Registers an [`Observer`].
    /// Serves link-local interfaces through dom0's link-local interface `ll` (created when the
    /// first one needs it), or none (`None`, the default).
    pub fn set_link_local(&mut self, ll: Option<LinkLocalHost>) {
        self.system.link_local = ll;
        self.dirty = true;
    }

    /// Creates dom0's link-local interface if a link-local interface needs it and it is not
    /// there yet; a failure is logged once per distinct error and leaves those interfaces
    /// unbound (the compile warns about each).
    fn prepare_link_local(&mut self) {
        let cfg = &self.config;
        let needed = cfg.interfaces.iter().any(|i| {
            cfg.network(&i.network)
                .is_some_and(|n| SystemNet::of_vrf(&n.vrf) == Some(SystemNet::LinkLocal))
        });
        let Some(ll) = self
            .system
            .link_local
            .as_mut()
            .filter(|l| needed && l.mac.is_none())
        else {
            return;
        };
        match crate::linklocal::ensure_tap(&ll.name, ll.addr, ll.plen) {
            Ok(mac) => {
                log::info!(
                    "dom0 link-local interface {} at {}/{} ({mac})",
                    ll.name,
                    ll.addr,
                    ll.plen
                );
                ll.mac = Some(mac);
                ll.error = None;
            }
            Err(e) => {
                let msg = e.to_string();
                if ll.error.as_deref() != Some(msg.as_str()) {
                    log::error!("dom0 link-local interface {}: {msg}", ll.name);
                }
                ll.error = Some(msg);
            }
        }
    }

    pub fn observe(&mut self, f: Observer) {
        self.observers.0.push(f);
    }

    /// Runs until SIGTERM/SIGINT (or [`request_stop`]).
    pub fn run(&mut self) {
        self.run_with(|| {});
    }

    /// [`Agent::run`], calling `each` after every iteration of the loop: the binary's heartbeat
    /// for the service manager's watchdog.
    pub fn run_with(&mut self, mut each: impl FnMut()) {
        while !TERM.load(Ordering::SeqCst) {
            self.step();
            each();
            std::thread::sleep(self.opts.poll);
        }
        log::info!("stopping; the dataplane keeps forwarding with its current tables");
    }

    /// One iteration: reload if asked, check the dataplane, reconcile if due.
    pub fn step(&mut self) {
        if HUP.swap(false, Ordering::SeqCst) || self.source.changed() {
            self.reload();
        }
        if !self.check_dataplane() {
            return;
        }
        let resync_due = self
            .last_sync
            .is_none_or(|t| t.elapsed() >= self.opts.resync);
        let backoff = self.backoff_until.is_some_and(|t| Instant::now() < t);
        if (self.dirty || resync_due) && !backoff && self.source_ready() {
            self.sync();
        }
    }

    /// A source that is not ready (e.g. the controller not heard yet after a restart) must not
    /// make the agent remove what the dataplane holds: nothing is applied until it is.
    fn source_ready(&mut self) -> bool {
        let ready = self.source.ready();
        if !ready && !self.not_ready_logged {
            log::info!(
                "waiting for {} before the first reconcile (the dataplane keeps its state)",
                self.source.describe()
            );
            self.not_ready_logged = true;
        }
        if ready && self.not_ready_logged {
            log::info!("{} is ready", self.source.describe());
            self.not_ready_logged = false;
        }
        ready
    }

    fn reload(&mut self) {
        match self.source.load() {
            Ok(c) => {
                if c == self.config {
                    log::info!("config reloaded: unchanged");
                } else {
                    log::info!(
                        "config reloaded: {} networks, {} interfaces, {} remote routes, {} floating IPs",
                        c.networks.len(),
                        c.interfaces.len(),
                        c.routes.len(),
                        c.floating_ips.len()
                    );
                    self.config = c;
                }
                self.health.reloads.fetch_add(1, Ordering::Relaxed);
                self.dirty = true;
                self.backoff_until = None;
            }
            Err(e) => {
                log::error!("config reload refused, keeping the previous config: {e}");
                self.health.reload_errors.fetch_add(1, Ordering::Relaxed);
                self.health
                    .set_status(|s| s.last_error = Some(format!("config reload: {e}")));
            }
        }
    }

    /// Makes sure we talk to a live dataplane; notes a new one. False if it is unreachable.
    fn check_dataplane(&mut self) -> bool {
        if self.client.is_none() {
            match CtlClient::connect(&self.opts.dp_socket) {
                Ok(c) => self.client = Some(c),
                Err(e) => {
                    if !self.down_logged {
                        log::warn!("{e}; retrying");
                        self.down_logged = true;
                    }
                    self.health.dp_connected.store(false, Ordering::Relaxed);
                    return false;
                }
            }
        }
        match self.request(&Request::Info) {
            Ok(Response::Info { pid, limits, .. }) => {
                if self.dp_pid != Some(pid) {
                    match self.dp_pid {
                        None => {
                            log::info!("dataplane pid {pid} at {}", self.opts.dp_socket.display())
                        }
                        Some(old) => {
                            log::warn!("dataplane restarted (pid {old} -> {pid}): reconciling")
                        }
                    }
                    self.dp_pid = Some(pid);
                    self.limits = limits;
                    self.dirty = true;
                    self.new_dp = true;
                    self.backoff_until = None;
                    self.health.dp_pid.store(pid.into(), Ordering::Relaxed);
                }
                if self.down_logged {
                    log::info!("dataplane control socket answers again");
                    self.down_logged = false;
                }
                self.health.dp_connected.store(true, Ordering::Relaxed);
                true
            }
            Ok(_) => {
                log::warn!("dataplane answered Info with something else; reconnecting");
                self.client = None;
                false
            }
            Err(_) => false,
        }
    }

    /// Sends a request; on a transport error drops the connection (the next step reconnects and
    /// reconciles, since the daemon may have restarted).
    fn request(&mut self, req: &Request) -> Result<Response, CtlError> {
        let Some(c) = self.client.as_mut() else {
            return Err(CtlError::Closed);
        };
        match c.request(req) {
            Ok(r) => Ok(r),
            Err(e @ CtlError::Refused { .. }) => Err(e),
            Err(e) => {
                if !self.down_logged {
                    log::warn!("lost the dataplane control connection: {e}");
                    self.down_logged = true;
                }
                self.client = None;
                self.dirty = true;
                self.health.dp_connected.store(false, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Reads the dataplane, computes the difference to the configuration and applies it.
    pub fn sync(&mut self) {
        let started = Instant::now();
        let Some(idx) = self.read_dataplane() else {
            return;
        };
        self.adopt(&idx);
        let before = self.alloc.clone();
        self.prepare_link_local();
        let compiled = match compile_with(
            &self.config,
            &idx,
            &mut self.alloc,
            &self.limits,
            &self.system,
        ) {
            Ok(c) => c,
            Err(e) => {
                log::error!("cannot allocate ids for the config: {e}");
                self.health
                    .set_status(|s| s.last_error = Some(e.to_string()));
                self.backoff_until = Some(Instant::now() + Duration::from_secs(5));
                return;
            }
        };
        for w in &compiled.warnings {
            log::warn!("{w}");
        }
        if self.alloc != before {
            if let Err(e) = self.alloc.save(&self.opts.state_file) {
                // Not fatal: the dataplane itself remembers ids across agent restarts.
                log::error!("{e}");
            }
        }
        let ops = reconcile(&compiled.desired, &idx);
        let sum = summarize(&ops);
        let n = ops.len();
        let result = if ops.is_empty() {
            Ok(())
        } else {
            let first_ops: Vec<String> = ops.iter().take(3).map(|o| format!("{o:?}")).collect();
            log::debug!("applying {n} operations, first: {first_ops:?}");
            self.request(&Request::Apply { ops }).map(|_| ())
        };
        self.health.reconciles.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(()) => {
                if n == 0 {
                    log::info!(
                        "reconciled: dataplane already up to date ({sum}; {} interfaces)",
                        compiled.bindings.len()
                    );
                } else {
                    log::info!(
                        "reconciled: applied {n} operations ({sum}) in {:?}",
                        started.elapsed()
                    );
                }
                self.applied(compiled, n);
            }
            Err(CtlError::Refused { message, index, .. }) => {
                log::error!(
                    "dataplane refused the update (operation {}): {message}; retrying in 5s",
                    index.map_or("?".into(), |i| i.to_string())
                );
                self.health.apply_errors.fetch_add(1, Ordering::Relaxed);
                self.health
                    .set_status(|s| s.last_error = Some(format!("apply refused: {message}")));
                self.backoff_until = Some(Instant::now() + Duration::from_secs(5));
            }
            Err(e) => log::warn!("cannot apply the update: {e}"),
        }
    }

    /// The dataplane's whole state, indexed; None (logged) if it cannot be read.
    fn read_dataplane(&mut self) -> Option<DumpIndex> {
        match self.request(&Request::DumpAll) {
            Ok(Response::State(d)) => Some(DumpIndex::new(*d)),
            Ok(_) => {
                log::warn!("dataplane answered DumpAll with something else");
                None
            }
            Err(e) => {
                log::warn!("cannot read the dataplane state: {e}");
                None
            }
        }
    }

    /// Shows the source what the dataplane holds. If it takes something from it (the underlay
    /// MACs of an earlier agent's tunnels), or has changed since the step's reload (it may
    /// have, e.g. an ARP answer between that reload and `ready()`), the configuration is loaded
    /// again: a pass never compiles a configuration older than the source's.
    fn adopt(&mut self, idx: &DumpIndex) {
        let adopted = self.source.adopt(idx);
        if adopted | self.source.changed() {
            self.reload();
        }
    }

    /// After a successful pass: observers, metrics and status.
    fn applied(&mut self, compiled: Compiled, n: usize) {
        if self.new_dp {
            self.health.dp_restarts.fetch_add(1, Ordering::Relaxed);
            self.new_dp = false;
        }
        for o in &mut self.observers.0 {
            o(&self.config, &compiled);
        }
        self.health.last_ops.store(n as u64, Ordering::Relaxed);
        self.health.ops_total.fetch_add(n as u64, Ordering::Relaxed);
        self.health.set_status(|s| {
            s.bindings = compiled.bindings;
            s.table_labels = compiled.table_labels;
            s.warnings = self.source.warnings();
            s.warnings.extend(compiled.warnings);
            s.last_error = None;
        });
        self.dirty = false;
        self.last_sync = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::source::SourceError;
    use crate::testkit::TestDataplane;
    use std::sync::atomic::AtomicUsize;

    const WITH_ROUTE: &str = r#"
[underlay]
gateway_mac = "52:54:00:cc:dd:01"

[[networks]]
name = "net1"
subnet = "10.1.1.0/24"

[[interfaces]]
name = "vif1.0"
mac = "02:00:00:00:01:03"
ip = "10.1.1.3"
network = "net1"

[[routes]]
network = "net1"
prefix = "10.1.1.4/32"
label = 25
remote = "10.0.0.12"
"#;

    /// A source that turns ready (and changes: the route's underlay MAC arrives) between the
    /// step's reload and its readiness check, the way an ARP answer can in controller mode.
    #[derive(Debug)]
    struct LateSource {
        full: bool,
        changed: bool,
        loads: Arc<AtomicUsize>,
    }

    impl ConfigSource for LateSource {
        fn describe(&self) -> String {
            "late".into()
        }
        fn load(&mut self) -> Result<Config, SourceError> {
            self.loads.fetch_add(1, Ordering::SeqCst);
            self.changed = false;
            let mut c = Config::parse(WITH_ROUTE).map_err(|e| SourceError::Invalid {
                path: "late".into(),
                err: e,
            })?;
            if !self.full {
                c.routes.clear();
            }
            Ok(c)
        }
        fn changed(&mut self) -> bool {
            self.changed
        }
        fn ready(&mut self) -> bool {
            if !self.full {
                self.full = true;
                self.changed = true;
            }
            true
        }
    }

    fn agent(dir: &std::path::Path, dp: &TestDataplane, source: LateSource) -> Agent<LateSource> {
        let opts = Options {
            dp_socket: dp.path().to_path_buf(),
            state_file: dir.join("state.json"),
            poll: Duration::from_millis(10),
            resync: Duration::from_secs(3600),
        };
        Agent::new(opts, source, Arc::new(Health::default())).expect("agent")
    }

    #[test]
    fn a_pass_compiles_the_sources_latest_config() {
        let dir = tempfile::tempdir().expect("tmp");
        let dp = TestDataplane::start(&dir.path().join("dp.sock"), 0x0a00_000b).expect("dp");
        // A first agent programmed the route (and its tunnel).
        let loads = Arc::new(AtomicUsize::new(0));
        let full = LateSource {
            full: true,
            changed: false,
            loads: loads.clone(),
        };
        agent(dir.path(), &dp, full).step();
        let programmed = dp.dump();
        assert!(programmed.routes.iter().any(|r| r.route.label == Some(25)));
        // The restarted agent loaded its config before the route was known; the source
        // changes between the step's reload and its readiness: the pass must see it.
        let late = LateSource {
            full: false,
            changed: false,
            loads: loads.clone(),
        };
        let mut a = agent(dir.path(), &dp, late);
        a.step();
        assert_eq!(dp.dump(), programmed, "nothing removed, nothing re-added");
        assert_eq!(
            loads.load(Ordering::SeqCst),
            3,
            "first agent, start, reload"
        );
    }
}
