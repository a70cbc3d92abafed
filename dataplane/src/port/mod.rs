//! Ports: where packets come from and go to. One trait, several backends: `mem` (rings in
//! memory, for tests and benchmarks), `pcap` (replay a capture, record output), and the device
//! backends `af_packet` (TPACKET_V2 rings), `af_xdp` (XSK rings and our XDP program), `tap`
//! (/dev/net/tun) and `agent` (the agent's `pkt0` datagram socket). `open` picks a backend per
//! interface.

pub mod af_packet;
pub mod af_xdp;
pub mod agent;
pub mod bpf;
pub mod mem;
pub mod open;
pub mod pcap;
pub mod sys;
pub mod tap;
pub mod vnet;

use crate::batch::Batch;
use crate::buf::{BufPool, PktBuf};
use crate::drop::DropReason;
use crate::stats::LcoreStats;

/// A source and sink of Ethernet frames.
pub trait Port: Send {
    /// Device or file name, for logs.
    fn name(&self) -> &str;

    /// Receives up to `batch.room()` frames into buffers from `pool`, appending them to `batch`
    /// as received on `vif`. Returns how many were added. Never blocks.
    fn rx_burst(&mut self, pool: &mut BufPool, batch: &mut Batch, vif: u16) -> usize;

    /// Transmits frames from the front of `pkts`, removing those sent and returning their
    /// buffers to `pool`. Frames left in `pkts` could not be sent now. Never blocks.
    fn tx_burst(&mut self, pool: &mut BufPool, pkts: &mut Vec<PktBuf>) -> usize;

    /// True if the port sends TCP GSO super-packets whole (see [`crate::gso`]); other ports get
    /// them cut into segments before `tx_burst`.
    fn tx_gso(&self) -> bool {
        false
    }

    /// A descriptor that becomes readable when `rx_burst` has work, so an idle lcore can sleep
    /// in `poll()` instead of spinning. `None`: the port must be polled.
    fn poll_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    /// Packets the backend itself dropped since the last call (bad offload metadata, oversize,
    /// no buffer), by reason, for the lcore to count.
    fn take_drops(&mut self) -> PortDrops {
        PortDrops::default()
    }
}

/// Drops counted inside a port backend, by reason.
#[derive(Debug, Clone)]
pub struct PortDrops {
    /// Count per [`DropReason::index`].
    pub counts: [u64; DropReason::COUNT],
    /// True if any count is non-zero.
    pub any: bool,
}

impl Default for PortDrops {
    fn default() -> Self {
        Self {
            counts: [0; DropReason::COUNT],
            any: false,
        }
    }
}

impl PortDrops {
    /// Counts one drop.
    #[inline]
    pub fn add(&mut self, r: DropReason) {
        self.counts[r.index()] += 1;
        self.any = true;
    }

    /// Counts `n` drops for `r`.
    pub fn add_n(&mut self, r: DropReason, n: u64) {
        if n != 0 {
            self.counts[r.index()] += n;
            self.any = true;
        }
    }
}

/// Per-port transmit queues of one lcore: the output stage sorts a batch into them, then one
/// burst per port sends it.
#[derive(Debug)]
pub struct TxQueues {
    /// vif id -> queue index, or `NONE`.
    by_vif: Vec<u16>,
    /// Queue index -> vif id.
    vifs: Vec<u16>,
    queues: Vec<Vec<PktBuf>>,
    /// Some queue got a GSO packet since the last flush (then each queue is checked against
    /// its port's support; a per-queue flag would cost a store per packet).
    gso: bool,
    /// Where a queue's packets wait while its GSO packets are segmented.
    scratch: Vec<PktBuf>,
}

const NONE: u16 = u16::MAX;
/// Most packets one transmit queue holds (the queues are allocated this large up front).
const QUEUE_CAP: usize = crate::batch::BATCH_SIZE * 4;

impl TxQueues {
    /// Queues for interface ids below `max_vifs`, none mapped yet.
    pub fn new(max_vifs: usize) -> Self {
        Self {
            by_vif: vec![NONE; max_vifs],
            vifs: Vec::new(),
            queues: Vec::new(),
            gso: false,
            scratch: Vec::with_capacity(QUEUE_CAP),
        }
    }

    /// Maps `vif` to the next queue index (the caller keeps its ports in the same order) and
    /// returns that index.
    pub fn add(&mut self, vif: u16) -> usize {
        let i = self.queues.len();
        if let Some(s) = self.by_vif.get_mut(usize::from(vif)) {
            *s = i as u16;
        }
        self.vifs.push(vif);
        self.queues.push(Vec::with_capacity(QUEUE_CAP));
        i
    }

    /// Queues `buf` for `vif`; gives it back if `vif` has no port here or the queue is full.
    #[inline]
    pub fn push(&mut self, vif: u16, buf: PktBuf) -> Result<(), PktBuf> {
        match self.by_vif.get(usize::from(vif)) {
            Some(&q) if q != NONE => {
                let q = usize::from(q);
                let queue = &mut self.queues[q];
                if queue.len() >= QUEUE_CAP {
                    return Err(buf);
                }
                self.gso |= buf.is_gso();
                queue.push(buf);
                Ok(())
            }
            _ => Err(buf),
        }
    }

    /// Sends every queue on its port (`ports[i]` for queue `i`). GSO packets the port cannot
    /// send whole are cut into segments first. What a port cannot take now is dropped and
    /// counted (`IF TX Discard`) so queues never grow without bound.
    pub fn flush<P: Port + ?Sized>(
        &mut self,
        ports: &mut [Box<P>],
        pool: &mut BufPool,
        stats: &LcoreStats,
    ) {
        let gso = std::mem::take(&mut self.gso);
        for (i, q) in self.queues.iter_mut().enumerate() {
            if q.is_empty() {
                continue;
            }
            let vif = self.vifs[i];
            let port_gso = ports.get(i).is_some_and(|p| p.tx_gso());
            // Segments of a burst of super-packets can outnumber the queue: it is sent each
            // time it fills and segmenting goes on, so nothing is dropped for want of room.
            let mut more = gso && start_segmenting(q, &mut self.scratch, port_gso);
            loop {
                if more {
                    more = segment_queue(q, &mut self.scratch, port_gso, pool, vif, stats);
                }
                if let Some(port) = ports.get_mut(i) {
                    port.tx_burst(pool, q);
                }
                if !q.is_empty() {
                    if let Some(c) = stats.vif.get(usize::from(vif)) {
                        c.tx_errors.add(q.len() as u64);
                    }
                    for b in q.drain(..) {
                        stats.dropped(vif, DropReason::InterfaceTxDiscard);
                        pool.free(b);
                    }
                }
                if !more {
                    break;
                }
            }
        }
    }
}

/// Moves `q` to `scratch` (last packet first) if some packet in it must be segmented for a
/// port with (`port_gso`) or without GSO support; true if it did.
fn start_segmenting(q: &mut Vec<PktBuf>, scratch: &mut Vec<PktBuf>, port_gso: bool) -> bool {
    if !q.iter().any(|b| crate::gso::needs_segmenting(b, port_gso)) {
        return false;
    }
    std::mem::swap(q, scratch);
    scratch.reverse();
    true
}

/// Moves packets from `pending` (in reverse order, see [`start_segmenting`]) into `q`,
/// replacing every GSO packet a port with (`port_gso`) or without GSO support cannot send whole
/// by its segments, keeping the order, until `q` is full: true if packets are still pending
/// (send `q` and call again). Segments that find no buffer are dropped and counted
/// (`IF TX Discard` on `vif`); a packet whose headers no longer allow segmenting counts as
/// `Invalid Packet`. `pending` may be `q`'s own scratch: the queues share one.
fn segment_queue(
    q: &mut Vec<PktBuf>,
    pending: &mut Vec<PktBuf>,
    port_gso: bool,
    pool: &mut BufPool,
    vif: u16,
    stats: &LcoreStats,
) -> bool {
    while let Some(b) = pending.pop() {
        let cut = crate::gso::needs_segmenting(&b, port_gso);
        let need = if cut {
            crate::gso::segment_count(&b)
        } else {
            1
        };
        if q.len() + need > QUEUE_CAP && !q.is_empty() {
            pending.push(b);
            return true;
        }
        if !cut {
            q.push(b);
            continue;
        }
        let r = crate::gso::segment(&b, pool, |s| {
            if q.len() < QUEUE_CAP {
                q.push(s);
                Ok(())
            } else {
                Err(s)
            }
        });
        match r {
            Ok(_) => {}
            Err(crate::gso::SegError::Bad) => stats.dropped(vif, DropReason::InvalidPacket),
            Err(crate::gso::SegError::NoBuf) => stats.dropped(vif, DropReason::InterfaceTxDiscard),
        }
        pool.free(b);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::mem::MemPort;

    /// A TCP/IPv4 super-packet of `payload` bytes in a large buffer, marked GSO with MSS 1000.
    fn super_packet(pool: &mut BufPool, payload: usize) -> PktBuf {
        let mut f = vec![0u8; 14 + 40 + payload];
        f[12] = 0x08;
        let ip = &mut f[14..];
        ip[0] = 0x45;
        ip[8] = 64;
        ip[9] = 6;
        ip[32] = 0x50;
        ip[33] = 0x10;
        assert!(crate::gso::check_frame(&mut f, 1000).is_some());
        let mut b = pool.alloc_for(f.len()).expect("large buffer");
        assert!(b.fill(&f));
        b.set_gso(1000, 1, 14);
        b
    }

    #[test]
    fn flush_segments_super_packets_for_ports_without_gso() {
        let mut pool = BufPool::with_big(64, 2);
        let stats = LcoreStats::new(8, 1);
        let mut q = TxQueues::new(8);
        q.add(3);
        let mut ports: Vec<Box<MemPort>> = vec![Box::new(MemPort::recording("m"))];
        let b = super_packet(&mut pool, 3500);
        assert!(q.push(3, b).is_ok());
        let mut small = pool.alloc().expect("buffer");
        assert!(small.fill(&[0u8; 60]));
        assert!(q.push(3, small).is_ok());
        q.flush(&mut ports, &mut pool, &stats);
        let sent = ports[0].take_sent();
        // 1000 + 1000 + 1000 + 500, then the ordinary frame, in order.
        let lens: Vec<usize> = sent.iter().map(Vec::len).collect();
        assert_eq!(lens, vec![1054, 1054, 1054, 554, 60]);
        assert_eq!((pool.available(), pool.big_available()), (64, 2));
        assert_eq!(stats.drops.iter().map(|c| c.get()).sum::<u64>(), 0);
    }

    #[test]
    fn a_burst_of_super_packets_with_more_segments_than_the_queue_holds_is_sent_whole() {
        // 20 super-packets of 60 segments: 1200 segments, more than a queue's 1024.
        let mut pool = BufPool::with_big(1300, 20);
        let stats = LcoreStats::new(8, 1);
        let mut q = TxQueues::new(8);
        q.add(3);
        let mut ports: Vec<Box<MemPort>> = vec![Box::new(MemPort::recording("m"))];
        for _ in 0..20 {
            let b = super_packet(&mut pool, 60_000);
            assert!(q.push(3, b).is_ok());
        }
        q.flush(&mut ports, &mut pool, &stats);
        let sent = ports[0].take_sent();
        assert_eq!(sent.len(), 1200);
        assert!(sent.iter().all(|f| f.len() == 1054));
        assert_eq!(stats.drops.iter().map(|c| c.get()).sum::<u64>(), 0);
        assert_eq!((pool.available(), pool.big_available()), (1300, 20));
    }
}
