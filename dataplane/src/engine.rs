//! The poll-mode engine: lcore threads pinned to chosen cores, each polling its ports, running
//! the pipeline over each received burst and sending the results, one burst per port.
//!
//! ```text
//! loop {
//!     commands (add / remove ports)         <- channel + eventfd from the port manager
//!     enter tables (one read guard)         \
//!     for each rx port: rx_burst -> run -> output into per-port queues
//!     drop guard                            /  quiescent point: writers may swap copies
//!     flush queues (one tx_burst per port)
//!     idle? spin, then yield, then sleep in ppoll() on the ports' descriptors
//! }
//! ```
//!
//! Nothing allocates, locks or makes a syscall per packet: syscalls are per burst (and only in
//! the backends). The idle back-off only engages after a run of empty rounds, so a loaded lcore
//! never pays for it; an idle one sleeps in `ppoll()` on its ports' descriptors and wakes as soon
//! as a packet arrives.
//!
//! Thread-safety: each lcore owns its ports, buffer pool, batch, queues and counters outright.
//! It shares only the tables (read through its own `TablesReader`, lock-free), its counters
//! (single-writer atomics summed by readers), the stop flag, and the command channel.

use crate::batch::Batch;
use crate::buf::BufPool;
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
    /// CPU ids to pin lcores to, one lcore each.
    pub cpus: Vec<usize>,
    /// Packet buffers per lcore.
    pub pool_size: usize,
    /// Number of interface ids (size of the per-lcore transmit queue map).
    pub max_vifs: usize,
    /// Empty rounds spent spinning before yielding.
    pub spin_rounds: u32,
    /// Longest idle sleep in microseconds when some port cannot be waited on (no descriptor);
    /// with descriptors the lcore sleeps in `ppoll()` for up to `poll_timeout_us`.
    pub max_sleep_us: u64,
    /// Longest `ppoll()` wait when every receiving port has a descriptor.
    pub poll_timeout_us: u64,
    /// After the last packet, keep polling (spinning, yielding the CPU between rounds) for this
    /// long before sleeping. Waking a sleeping lcore costs tens of microseconds per packet
    /// (ppoll wakeup + scheduler), which is most of a ping's RTT; a poll-mode lcore that saw
    /// traffic recently stays awake like a DPDK lcore. 0: sleep right after the spin rounds.
    pub busy_poll_us: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            cpus: vec![0],
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
    /// Close every port of `vif`; acknowledges on `done` once closed.
    Del {
        /// Interface id.
        vif: u16,
        /// Acknowledgement.
        done: mpsc::Sender<()>,
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
    /// Starts one lcore per configured CPU.
    pub fn start(
        cfg: &EngineConfig,
        reader: &TablesReader,
        stats: &StatsRegistry,
    ) -> Result<Self, EngineError> {
        if cfg.cpus.is_empty() {
            return Err(EngineError::NoLcores);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut lcores = Vec::new();
        for (i, &cpu) in cfg.cpus.iter().enumerate() {
            let (tx, rx) = mpsc::channel();
            let wake = Arc::new(eventfd()?);
            let st = stats.register();
            let lc = Lcore {
                id: i,
                cpu,
                cfg: cfg.clone(),
                reader: reader.clone(),
                stats: st,
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

    /// Closes every port of `vif` on every lcore, waiting up to `timeout` for them to finish.
    pub fn del_vif(&self, vif: u16, timeout: Duration) -> bool {
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
        let deadline = std::time::Instant::now() + timeout;
        for _ in 0..n {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if acks.recv_timeout(left).is_err() {
                return false;
            }
        }
        true
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
    cpu: usize,
    cfg: EngineConfig,
    reader: TablesReader,
    stats: Arc<LcoreStats>,
    cmds: mpsc::Receiver<LcoreCmd>,
    wake: Arc<OwnedFd>,
    stop: Arc<AtomicBool>,
}

/// An lcore's ports, in transmit-queue order.
struct PortSet {
    ports: Vec<Box<dyn Port>>,
    vifs: Vec<u16>,
    rx: Vec<bool>,
    txq: TxQueues,
    /// The wake eventfd first, then every receiving port's descriptor.
    pollfds: Vec<libc::pollfd>,
    /// Every receiving port has a descriptor to sleep on.
    all_pollable: bool,
}

impl PortSet {
    fn rebuild(&mut self, max_vifs: usize, wake: i32) {
        self.txq = TxQueues::new(max_vifs);
        for &v in &self.vifs {
            self.txq.add(v);
        }
        self.pollfds.clear();
        self.pollfds.push(libc::pollfd {
            fd: wake,
            events: libc::POLLIN,
            revents: 0,
        });
        self.all_pollable = true;
        for (p, &rx) in self.ports.iter().zip(&self.rx) {
            if !rx {
                continue;
            }
            match p.poll_fd() {
                Some(fd) => self.pollfds.push(libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                }),
                None => self.all_pollable = false,
            }
        }
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
        if !pin(self.cpu) {
            log::warn!(
                "lcore {}: cannot pin to cpu {}: {}",
                self.id,
                self.cpu,
                std::io::Error::last_os_error()
            );
        }
        log::info!("lcore {} running on cpu {}", self.id, self.cpu);
        let wake = self.wake.as_raw_fd();
        let mut pool = BufPool::with_big(self.cfg.pool_size, BIG_BUFS);
        let pipeline = Pipeline::new(self.stats.clone());
        let mut batch = Batch::new();
        let mut set = PortSet {
            ports: Vec::new(),
            vifs: Vec::new(),
            rx: Vec::new(),
            txq: TxQueues::new(self.cfg.max_vifs),
            pollfds: Vec::new(),
            all_pollable: true,
        };
        set.rebuild(self.cfg.max_vifs, wake);
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
                        // Flush what is queued for the port before closing it.
                        set.txq.flush(&mut set.ports, &mut pool, &self.stats);
                        let mut i = 0;
                        while i < set.ports.len() {
                            if set.vifs[i] == vif {
                                self.account(&mut *set.ports[i], vif);
                                set.ports.remove(i);
                                set.vifs.remove(i);
                                set.rx.remove(i);
                            } else {
                                i += 1;
                            }
                        }
                        let _ = done.send(());
                    }
                }
            }
            if changed {
                set.rebuild(self.cfg.max_vifs, wake);
            }
            let mut work = 0usize;
            {
                let Some(t) = self.reader.enter() else {
                    break;
                };
                for i in 0..set.ports.len() {
                    if !set.rx[i] {
                        continue;
                    }
                    let n = set.ports[i].rx_burst(&mut pool, &mut batch, set.vifs[i]);
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

    /// Spin, then yield, then sleep: in `ppoll()` on the ports (woken by traffic or a command)
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
                // can cost a packet a whole slice of latency. Sleep in ppoll() instead until
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
        let us = self.cfg.poll_timeout_us;
        let ts = libc::timespec {
            tv_sec: (us / 1_000_000) as libc::time_t,
            tv_nsec: ((us % 1_000_000) * 1000) as libc::c_long,
        };
        // SAFETY: `pollfds` is a live array of the length passed; `ts` is a valid timespec.
        let r = unsafe {
            libc::ppoll(
                set.pollfds.as_mut_ptr(),
                set.pollfds.len() as libc::nfds_t,
                &ts,
                std::ptr::null(),
            )
        };
        if r > 0 && set.pollfds[0].revents != 0 {
            let mut v: u64 = 0;
            // SAFETY: reads 8 bytes into a live u64 from our eventfd.
            unsafe {
                libc::read(set.pollfds[0].fd, (&mut v as *mut u64).cast(), 8);
            }
        }
    }
}
