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
    /// Where a queue is rebuilt while its GSO packets are segmented.
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
            if gso {
                let port_gso = ports.get(i).is_some_and(|p| p.tx_gso());
                segment_queue(q, &mut self.scratch, port_gso, pool, self.vifs[i], stats);
            }
            if let Some(port) = ports.get_mut(i) {
                port.tx_burst(pool, q);
            }
            if !q.is_empty() {
                let vif = self.vifs[i];
                if let Some(c) = stats.vif.get(usize::from(vif)) {
                    c.tx_errors.add(q.len() as u64);
                }
                for b in q.drain(..) {
                    stats.dropped(vif, DropReason::InterfaceTxDiscard);
                    pool.free(b);
                }
            }
        }
    }
}

/// Replaces every GSO packet in `q` that a port with (`port_gso`) or without GSO support cannot
/// send whole by its segments, keeping the order. Segments that find no buffer or no room in
/// the queue are dropped and counted (`IF TX Discard` on `vif`); a packet whose headers no
/// longer allow segmenting counts as `Invalid Packet`.
fn segment_queue(
    q: &mut Vec<PktBuf>,
    scratch: &mut Vec<PktBuf>,
    port_gso: bool,
    pool: &mut BufPool,
    vif: u16,
    stats: &LcoreStats,
) {
    if !q.iter().any(|b| crate::gso::needs_segmenting(b, port_gso)) {
        return;
    }
    std::mem::swap(q, scratch);
    for b in scratch.drain(..) {
        if !crate::gso::needs_segmenting(&b, port_gso) {
            if q.len() < QUEUE_CAP {
                q.push(b);
            } else {
                stats.dropped(vif, DropReason::InterfaceTxDiscard);
                pool.free(b);
            }
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
}
