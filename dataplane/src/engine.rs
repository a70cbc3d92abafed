//! The poll-mode engine: lcore threads pinned to chosen cores, each polling its ports, running
//! the pipeline over each received burst and sending the results, one burst per port.
//!
//! ```text
//! loop {
//!     commands (add / remove ports)         <- channel + eventfd from the port manager
//!     ports turned ready? (epoll_wait, timeout 0; only while some port is not polled)
//!     enter tables (one read guard)         \
//!     for each polled port: rx_burst -> run -> output into per-port queues
//!     drop guard                            /  quiescent point: writers may swap copies
//!     flush queues (one tx_burst per port)
//!     idle? spin, then yield, then sleep in epoll_wait() on the ports' descriptors
//! }
//! ```
//!
//! Nothing allocates, locks or makes a syscall per packet: syscalls are per burst (and only in
//! the backends). The idle back-off only engages after a run of empty rounds, so a loaded lcore
//! never pays for it; an idle one sleeps in `epoll_wait()` on its ports' descriptors and wakes as
//! soon as a packet arrives. A round polls only the ports that had work lately (see [`PortSet`]),
//! so neither a round nor a wakeup costs more with more idle ports.
//!
//! Thread-safety: each lcore owns its ports, buffer pool, batch, queues and counters outright.
//! It shares only the tables (read through its own `TablesReader`, lock-free), its counters
//! (single-writer atomics summed by readers), the stop flag, and the command channel.

use crate::batch::Batch;
use crate::buf::BufPool;
use crate::capture::Capture;
use crate::pipeline::Pipeline;
use crate::port::{Port, TxQueues};
use crate::stats::{LcoreStats, StatsRegistry};
use crate::tables::TablesReader;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Large buffers per lcore for TCP GSO super-packets kept whole (see [`crate::gso`]): a
/// receive burst stops taking them when they run out and segments instead. 64 x 66 KiB.
const BIG_BUFS: usize = 64;

/// A `sched_yield()` of an idle lcore that takes longer than this ran another task: the CPU is
/// shared, so the lcore stops busy-polling until its next packet.
const YIELD_CONTENDED_US: u64 = 20;
/// Long yields in a row that make an idle lcore stop busy-polling.
const CONTENDED_YIELDS: u32 = 3;

/// How lcores run.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// CPU ids to pin lcores to, one lcore each. Empty: one lcore, not pinned (the scheduler
    /// places it; several daemons on one machine, as in the devcloud and the tests, then do not
    /// all share one CPU). A real dom0 gives an explicit core list.
    pub cpus: Vec<usize>,
    /// Packet buffers per lcore.
    pub pool_size: usize,
    /// Number of interface ids (size of the per-lcore transmit queue map).
    pub max_vifs: usize,
    /// Empty rounds spent spinning before yielding.
    pub spin_rounds: u32,
    /// Longest idle sleep in microseconds when some port cannot be waited on (no descriptor);
    /// with descriptors the lcore sleeps in `epoll_wait()` for up to `poll_timeout_us`.
    pub max_sleep_us: u64,
    /// Longest `epoll_wait()` (millisecond resolution) when every receiving port has a
    /// descriptor.
    pub poll_timeout_us: u64,
    /// After the last packet, keep polling (spinning, yielding the CPU between rounds) for this
    /// long before sleeping. Waking a sleeping lcore costs tens of microseconds per packet
    /// (epoll wakeup + scheduler), which is most of a ping's RTT; a poll-mode lcore that saw
    /// traffic recently stays awake like a DPDK lcore. 0: sleep right after the spin rounds.
    pub busy_poll_us: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            cpus: Vec::new(),
            pool_size: 8192,
            max_vifs: 4352,
            spin_rounds: 2000,
            max_sleep_us: 100,
            poll_timeout_us: 10_000,
            busy_poll_us: 200_000,
        }
    }
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No lcores configured.
    #[error("no lcores configured")]
    NoLcores,
    /// A system resource could not be created.
    #[error("{what}: {err}")]
    Sys {
        /// What.
        what: &'static str,
        /// Cause.
        err: std::io::Error,
    },
}

/// A change to an lcore's port set.
pub enum LcoreCmd {
    /// Start using `port` for `vif` (receiving from it if `rx`).
    Add {
        /// Interface id.
        vif: u16,
        /// The port handle (owned by the lcore from now on).
        port: Box<dyn Port>,
        /// Poll it for receive.
        rx: bool,
    },
    /// Stop using every port of `vif`; hands them back on `done`, so that the caller, not the
    /// lcore, runs their release (a socket's close can wait out an RCU grace period, tens of ms
    /// during which the lcore would forward nothing).
    Del {
        /// Interface id.
        vif: u16,
        /// Acknowledgement, with the ports taken out of the lcore's set.
        done: mpsc::Sender<Vec<Box<dyn Port>>>,
    },
}

impl std::fmt::Debug for LcoreCmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LcoreCmd::Add { vif, port, rx } => f
                .debug_struct("Add")
                .field("vif", vif)
                .field("port", &port.name())
                .field("rx", rx)
                .finish(),
            LcoreCmd::Del { vif, .. } => f.debug_struct("Del").field("vif", vif).finish(),
        }
    }
}

#[derive(Debug)]
struct LcoreHandle {
    tx: mpsc::Sender<LcoreCmd>,
    wake: Arc<OwnedFd>,
    join: Option<thread::JoinHandle<()>>,
}

/// The running lcores.
#[derive(Debug)]
pub struct Engine {
    lcores: Vec<LcoreHandle>,
    stop: Arc<AtomicBool>,
}

fn eventfd() -> Result<OwnedFd, EngineError> {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(EngineError::Sys {
            what: "eventfd",
            err: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn kick(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
    unsafe {
        libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8);
    }
}

impl Engine {
    /// Starts one lcore per configured CPU, each offering frames to `capture` while a session
    /// is armed.
    pub fn start(
        cfg: &EngineConfig,
        reader: &TablesReader,
        stats: &StatsRegistry,
        capture: &Arc<Capture>,
    ) -> Result<Self, EngineError> {
        let cpus: Vec<Option<usize>> = if cfg.cpus.is_empty() {
            vec![None]
        } else {
            cfg.cpus.iter().copied().map(Some).collect()
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut lcores = Vec::new();
        for (i, &cpu) in cpus.iter().enumerate() {
            let (tx, rx) = mpsc::channel();
            let wake = Arc::new(eventfd()?);
            let st = stats.register();
            let lc = Lcore {
                id: i,
                cpu,
                cfg: cfg.clone(),
                reader: reader.clone(),
                stats: st,
                capture: capture.clone(),
                cmds: rx,
                wake: wake.clone(),
                stop: stop.clone(),
            };
            let join = thread::Builder::new()
                .name(format!("lcore{i}"))
                .spawn(move || lc.run())
                .map_err(|err| EngineError::Sys {
                    what: "spawn lcore",
                    err,
                })?;
            lcores.push(LcoreHandle {
                tx,
                wake,
                join: Some(join),
            });
        }
        Ok(Self { lcores, stop })
    }

    /// Number of lcores.
    pub fn lcores(&self) -> usize {
        self.lcores.len()
    }

    /// Hands `port` for `vif` to lcore `lcore` (taken at its next round).
    pub fn add_port(&self, lcore: usize, vif: u16, port: Box<dyn Port>, rx: bool) {
        if let Some(l) = self.lcores.get(lcore) {
            if l.tx.send(LcoreCmd::Add { vif, port, rx }).is_ok() {
                kick(&l.wake);
            }
        }
    }

    /// Takes every port of `vif` out of every lcore, waiting up to `timeout` for them, and
    /// returns the ports (dropping them closes them, on the caller's thread); `None` if an
    /// lcore did not answer in time (it then closes the port itself when it gets to it).
    pub fn del_vif(&self, vif: u16, timeout: Duration) -> Option<Vec<Box<dyn Port>>> {
        let (done, acks) = mpsc::channel();
        let mut n = 0;
        for l in &self.lcores {
            if l.tx
                .send(LcoreCmd::Del {
                    vif,
                    done: done.clone(),
                })
                .is_ok()
            {
                kick(&l.wake);
                n += 1;
            }
        }
        drop(done);
        let deadline = std::time::Instant::now() + timeout;
        let mut ports = Vec::new();
        for _ in 0..n {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            ports.extend(acks.recv_timeout(left).ok()?);
        }
        Some(ports)
    }

    /// Stops every lcore and waits for them to exit (their ports close as they go).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        for l in &self.lcores {
            kick(&l.wake);
        }
        for l in &mut self.lcores {
            if let Some(j) = l.join.take() {
                if j.join().is_err() {
                    log::error!("an lcore panicked");
                }
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Lcore {
    id: usize,
    /// The CPU it is pinned to; `None`: not pinned.
    cpu: Option<usize>,
    cfg: EngineConfig,
    reader: TablesReader,
    stats: Arc<LcoreStats>,
    /// `vrctl capture`'s slots, shared with the control socket.
    capture: Arc<Capture>,
    cmds: mpsc::Receiver<LcoreCmd>,
    wake: Arc<OwnedFd>,
    stop: Arc<AtomicBool>,
}

/// An lcore's ports, in transmit-queue order, and which of them it polls.
///
/// Finding work must not cost a touch of every idle port per round (issue 25: 200 VM ports on
/// one lcore). A round polls only the `polled` ports: those that had work lately, and those
/// without a descriptor. A port with a descriptor that stays empty for `QUIET_ROUNDS` rounds
/// leaves `polled` and its descriptor joins the lcore's epoll set; the kernel marks it ready
/// there when its next packet arrives, and `wait(0)` (one `epoll_wait` with timeout 0: each
/// round while nothing is polled, every `DISCOVER_EVERY` rounds otherwise, never per packet)
/// takes it out of the set and back into `polled`. A polled port is not in the set, so a busy
/// port's packets cost no epoll wakeup callback in the kernel (measured: keeping every port
/// registered cost the 60-byte e2e test a few per cent). An idle lcore sleeps in `epoll_wait`
/// on the same set, with every port parked in it.
struct PortSet {
    ports: Vec<Box<dyn Port>>,
    vifs: Vec<u16>,
    rx: Vec<bool>,
    txq: TxQueues,
    /// The epoll set: the wake eventfd and every receiving port's descriptor.
    ep: Option<OwnedFd>,
    /// Port indices polled every round.
    polled: Vec<usize>,
    /// Per port: in `polled`.
    in_polled: Vec<bool>,
    /// Per port: consecutive empty rounds while polled.
    quiet: Vec<u32>,
    /// Per port: its descriptor (`-1`: none, or not receiving; polled always).
    fds: Vec<i32>,
    /// Some receiving port is not in `polled` (then `discover` has work to look for).
    sleepers: bool,
    /// Every receiving port has a descriptor to sleep on.
    all_pollable: bool,
    /// `epoll_wait` output.
    events: Vec<libc::epoll_event>,
    /// Number of receiving ports.
    rx_ports: usize,
    /// The wake eventfd (commands), drained when it fires.
    wake: i32,
}

/// Empty rounds after which a port with a descriptor stops being polled.
const QUIET_ROUNDS: u32 = 256;
/// While some ports are polled, look for newly ready ones every this many rounds.
const DISCOVER_EVERY: u32 = 16;
/// Epoll data of the wake eventfd (port indices are smaller).
const WAKE_TOKEN: u64 = u64::MAX;
/// Ready descriptors taken per `epoll_wait` (more stay ready for the next call).
const EVENTS: usize = 256;

fn epoll_create() -> Result<OwnedFd, EngineError> {
    // SAFETY: plain syscall with an integer argument.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(EngineError::Sys {
            what: "epoll_create1",
            err: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Registers `fd` for input in the epoll set `ep` with `token` as its data.
fn epoll_add(ep: &OwnedFd, fd: i32, token: u64) -> bool {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token,
    };
    // SAFETY: `ev` is a live epoll_event; `ep` is our epoll descriptor, `fd` a live descriptor.
    unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) == 0 }
}

impl PortSet {
    fn new(max_vifs: usize, wake: i32) -> Self {
        let mut set = Self {
            ports: Vec::new(),
            vifs: Vec::new(),
            rx: Vec::new(),
            txq: TxQueues::new(max_vifs),
            ep: None,
            polled: Vec::new(),
            in_polled: Vec::new(),
            quiet: Vec::new(),
            fds: Vec::new(),
            sleepers: false,
            all_pollable: true,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS],
            rx_ports: 0,
            wake,
        };
        set.rebuild(max_vifs);
        set
    }

    /// Rebuilds the queues and the epoll set after the port list changed (a fresh epoll set:
    /// port indices moved). Every receiving port starts polled, so nothing already waiting in
    /// a ring is missed.
    fn rebuild(&mut self, max_vifs: usize) {
        self.txq = TxQueues::new(max_vifs);
        for &v in &self.vifs {
            self.txq.add(v);
        }
        // Without an epoll set every port is polled every round and the lcore sleeps in
        // short naps (as for ports without a descriptor).
        let ep = epoll_create()
            .ok()
            .filter(|ep| epoll_add(ep, self.wake, WAKE_TOKEN));
        if ep.is_none() {
            log::warn!(
                "epoll set: {}; polling every port",
                std::io::Error::last_os_error()
            );
        }
        let n = self.ports.len();
        self.polled.clear();
        self.in_polled = vec![false; n];
        self.quiet = vec![0; n];
        self.fds = vec![-1; n];
        self.all_pollable = ep.is_some();
        self.rx_ports = self.rx.iter().filter(|&&r| r).count();
        for i in 0..n {
            if !self.rx[i] {
                continue;
            }
            if ep.is_some() {
                self.fds[i] = self.ports[i].poll_fd().unwrap_or(-1);
            }
            self.all_pollable &= self.fds[i] >= 0;
            self.polled.push(i);
            self.in_polled[i] = true;
        }
        self.ep = ep;
        self.sleepers = false;
    }

    /// Notes the result of one poll of `polled[k]`: a port quiet for long enough leaves the
    /// polled set (unless it has no descriptor). Returns true if it left (the caller does not
    /// advance `k`: `swap_remove` moved the last port there).
    #[inline]
    fn note(&mut self, k: usize, work: bool) -> bool {
        let i = self.polled[k];
        if work {
            self.quiet[i] = 0;
            return false;
        }
        self.quiet[i] += 1;
        if self.quiet[i] < QUIET_ROUNDS {
            return false;
        }
        self.park(k)
    }

    /// Moves `polled[k]` into the epoll set if it has a descriptor (else it stays polled).
    /// Returns true if it left `polled`.
    fn park(&mut self, k: usize) -> bool {
        let i = self.polled[k];
        let fd = self.fds[i];
        let Some(ep) = &self.ep else {
            return false;
        };
        if fd < 0 {
            return false;
        }
        if !epoll_add(ep, fd, i as u64) {
            log::warn!(
                "{}: epoll_ctl: {}; polling it always",
                self.ports[i].name(),
                std::io::Error::last_os_error()
            );
            self.fds[i] = -1;
            self.all_pollable = false;
            return false;
        }
        self.polled.swap_remove(k);
        self.in_polled[i] = false;
        self.sleepers = true;
        true
    }

    /// Parks every polled port that has a descriptor, before the lcore sleeps on the set.
    fn park_all(&mut self) {
        let mut k = 0;
        while k < self.polled.len() {
            if !self.park(k) {
                k += 1;
            }
        }
    }

    /// Waits up to `timeout_ms` (0: only looks) for ready descriptors and polls the ready
    /// ports from the next round on. Drains the wake eventfd if it fired.
    fn wait(&mut self, timeout_ms: i32) {
        let Some(ep) = &self.ep else {
            return;
        };
        // SAFETY: `events` is a live array of the length passed; `ep` is our epoll descriptor.
        let r = unsafe {
            libc::epoll_wait(
                ep.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                timeout_ms,
            )
        };
        for e in 0..r.max(0) as usize {
            let token = self.events[e].u64;
            if token == WAKE_TOKEN {
                let mut v: u64 = 0;
                // SAFETY: reads 8 bytes into a live u64 from our eventfd.
                unsafe {
                    libc::read(self.wake, (&mut v as *mut u64).cast(), 8);
                }
                continue;
            }
            let i = token as usize;
            if i < self.in_polled.len() && !self.in_polled[i] {
                // SAFETY: removes a descriptor we registered from our epoll set; no event
                // structure is read for EPOLL_CTL_DEL.
                unsafe {
                    libc::epoll_ctl(
                        ep.as_raw_fd(),
                        libc::EPOLL_CTL_DEL,
                        self.fds[i],
                        std::ptr::null_mut(),
                    );
                }
                self.in_polled[i] = true;
                self.quiet[i] = 0;
                self.polled.push(i);
            }
        }
        self.sleepers = self.polled.len() < self.rx_ports;
    }
}

fn pin(cpu: usize) -> bool {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write inside it, and
    // sched_setaffinity reads it for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

impl Lcore {
    fn run(self) {
        match self.cpu {
            Some(cpu) if !pin(cpu) => log::warn!(
                "lcore {}: cannot pin to cpu {cpu}: {}",
                self.id,
                std::io::Error::last_os_error()
            ),
            Some(cpu) => log::info!("lcore {} running on cpu {cpu}", self.id),
            None => log::info!("lcore {} running unpinned (no lcores configured)", self.id),
        }
        let wake = self.wake.as_raw_fd();
        let mut pool = BufPool::with_big(self.cfg.pool_size, BIG_BUFS);
        let pipeline = Pipeline::new(self.stats.clone()).with_capture(self.capture.clone());
        let mut batch = Batch::new();
        let mut set = PortSet::new(self.cfg.max_vifs, wake);
        let mut idle: u32 = 0;
        let mut round: u32 = 0;
        // When the lcore last moved a packet (read lazily: only while idle).
        let mut last_work = std::time::Instant::now();
        // Still inside the busy-poll window after the last packet.
        let mut busy = false;
        // Consecutive idle yields that ran another task.
        let mut long_yields: u32 = 0;
        loop {
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            let mut changed = false;
            while let Ok(c) = self.cmds.try_recv() {
                changed = true;
                match c {
                    LcoreCmd::Add { vif, port, rx } => {
                        log::info!(
                            "lcore {}: vif {vif} port {} ({})",
                            self.id,
                            port.name(),
                            if rx { "rx+tx" } else { "tx" }
                        );
                        set.ports.push(port);
                        set.vifs.push(vif);
                        set.rx.push(rx);
                    }
                    LcoreCmd::Del { vif, done } => {
                        let gone = self.take_vif(&mut set, &mut pool, vif);
                        // A caller that gave up waiting dropped the receiver: then the ports
                        // come back in the error and close here.
                        let _ = done.send(gone);
                    }
                }
            }
            if changed {
                set.rebuild(self.cfg.max_vifs);
            }
            // Ports that turned ready while not polled: every round while none is polled
            // (then this is the whole round), else every `DISCOVER_EVERY` rounds.
            if set.sleepers && (set.polled.is_empty() || round.is_multiple_of(DISCOVER_EVERY)) {
                set.wait(0);
            }
            let mut work = 0usize;
            {
                let Some(t) = self.reader.enter() else {
                    break;
                };
                let mut k = 0;
                while k < set.polled.len() {
                    let i = set.polled[k];
                    let n = set.ports[i].rx_burst(&mut pool, &mut batch, set.vifs[i]);
                    if !set.note(k, n > 0) {
                        k += 1;
                    }
                    if n == 0 && batch.is_empty() {
                        continue;
                    }
                    work += n;
                    pipeline.run(&t, &mut batch);
                    let txq = &mut set.txq;
                    pipeline.output(&mut batch, &mut pool, |vif, buf| txq.push(vif, buf));
                }
            }
            // Guard dropped: a quiescent point for the table writer.
            if work > 0 {
                set.txq.flush(&mut set.ports, &mut pool, &self.stats);
            }
            round = round.wrapping_add(1);
            if round.is_multiple_of(1024) {
                for i in 0..set.ports.len() {
                    let v = set.vifs[i];
                    self.account(&mut *set.ports[i], v);
                }
            }
            if work > 0 {
                idle = 0;
                continue;
            }
            if idle == 0 {
                last_work = std::time::Instant::now();
                busy = self.cfg.busy_poll_us > 0;
            }
            idle = idle.saturating_add(1);
            self.back_off(idle, last_work, &mut busy, &mut long_yields, &mut set);
        }
        log::info!("lcore {} stopping", self.id);
        for i in 0..set.ports.len() {
            let v = set.vifs[i];
            self.account(&mut *set.ports[i], v);
        }
    }

    /// Takes every port of `vif` out of the set (after flushing what is queued for it, and
    /// with its drop counts accounted), for the caller to close.
    fn take_vif(&self, set: &mut PortSet, pool: &mut BufPool, vif: u16) -> Vec<Box<dyn Port>> {
        set.txq.flush(&mut set.ports, pool, &self.stats);
        let mut gone = Vec::new();
        let mut i = 0;
        while i < set.ports.len() {
            if set.vifs[i] == vif {
                self.account(&mut *set.ports[i], vif);
                gone.push(set.ports.remove(i));
                set.vifs.remove(i);
                set.rx.remove(i);
            } else {
                i += 1;
            }
        }
        gone
    }

    /// Adds the port's own drop counts to this lcore's counters.
    fn account(&self, p: &mut dyn Port, vif: u16) {
        let d = p.take_drops();
        if !d.any {
            return;
        }
        for (i, &n) in d.counts.iter().enumerate() {
            if n == 0 {
                continue;
            }
            self.stats.drops[i].add(n);
            if let Some(c) = self.stats.vif.get(usize::from(vif)) {
                c.drops.add(n);
                c.rx_errors.add(n);
            }
        }
    }

    /// Spin, then yield, then sleep: in `epoll_wait()` on the ports (woken by traffic or a command)
    /// or, if some port has no descriptor, in short sleeps. Until `busy_poll_us` has passed
    /// since the last packet the lcore keeps polling, yielding between rounds.
    fn back_off(
        &self,
        idle: u32,
        last_work: std::time::Instant,
        busy: &mut bool,
        long_yields: &mut u32,
        set: &mut PortSet,
    ) {
        let spin = self.cfg.spin_rounds;
        if idle < spin {
            std::hint::spin_loop();
            return;
        }
        if idle < spin + 64 {
            thread::yield_now();
            return;
        }
        if *busy {
            if !idle.is_multiple_of(256) {
                std::hint::spin_loop();
                return;
            }
            // Reading the clock costs about as much as an empty round: look every 256 rounds.
            if last_work.elapsed() >= Duration::from_micros(self.cfg.busy_poll_us) {
                *busy = false;
            } else {
                // Yield every 256 rounds (~25 us). If that handed the CPU to another task
                // (the yield took long), this CPU is shared: polling on would take it from
                // that task (on a small host, the VMs' own processes) and every later yield
                // can cost a packet a whole slice of latency. Sleep in epoll_wait() instead until
                // the next packet; on a CPU of its own the lcore keeps polling.
                let t = std::time::Instant::now();
                thread::yield_now();
                if t.elapsed() < Duration::from_micros(YIELD_CONTENDED_US) {
                    *long_yields = 0;
                    return;
                }
                // One long yield may be a short kernel thread; several in a row are a task
                // that wants this CPU.
                *long_yields += 1;
                if *long_yields < CONTENDED_YIELDS {
                    return;
                }
                *long_yields = 0;
                *busy = false;
            }
        }
        if !set.all_pollable {
            let us = (u64::from(idle - spin - 64) + 1).min(self.cfg.max_sleep_us);
            thread::sleep(Duration::from_micros(us));
            return;
        }
        set.park_all();
        // epoll_wait counts in milliseconds: round up so a short timeout still sleeps.
        let ms = self.cfg.poll_timeout_us.div_ceil(1000).min(i32::MAX as u64) as i32;
        set.wait(ms);
    }
}
