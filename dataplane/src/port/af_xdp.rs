//! AF_XDP port: one XSK socket per device receive queue, each with its own UMEM, fed by the
//! daemon's XDP program ([`super::bpf`]). The ring code is written directly against the kernel
//! ABI (`<linux/if_xdp.h>`): fill and receive rings for input, transmit and completion rings for
//! output, each a single-producer/single-consumer ring in shared memory with acquire/release
//! indices. One `sendto()` kicks a transmit burst; nothing is a syscall per packet. A VM
//! port's UMEM is 1 MiB (512 frames), the fabric port's 8 MiB (ADR 0004).
//!
//! Frames are copied between UMEM and pipeline buffers (the pipeline's buffers are its own).
//! veth gives copy mode anyway. AF_XDP carries no offload metadata: partial checksums from VM
//! ports are recognised and finished ([`super::vnet::fix_partial`]); attaching XDP to a veth
//! turns GSO off on its peer, so no super-packets arrive.

use super::af_packet::{AfPacketOpts, AfPacketPort, GsoTx};
use super::bpf::{XdpAttachment, XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE};
use super::open::{DevicePorts, OpenOpts, Role, XdpMode};
use super::sys::{self, Mmap, PortError};
use super::{Port, PortDrops};
use crate::batch::Batch;
use crate::buf::{BufPool, PktBuf, MAX_PKT_LEN};
use crate::drop::DropReason;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

const AF_XDP: i32 = 44;
const SOL_XDP: i32 = 283;
const XDP_MMAP_OFFSETS: i32 = 1;
const XDP_RX_RING: i32 = 2;
const XDP_TX_RING: i32 = 3;
const XDP_UMEM_REG: i32 = 4;
const XDP_UMEM_FILL_RING: i32 = 5;
const XDP_UMEM_COMPLETION_RING: i32 = 6;
/// Linux 6.17+: descriptors one transmit wakeup may send in copy mode (default 32).
const XDP_MAX_TX_SKB_BUDGET: i32 = 9;
/// `XDP_STATISTICS`: the socket's drop counters (cumulative since it was bound).
const XDP_STATISTICS: i32 = 7;
const XDP_PGOFF_RX_RING: i64 = 0;
const XDP_PGOFF_TX_RING: i64 = 0x8000_0000;
const XDP_UMEM_PGOFF_FILL_RING: i64 = 0x1_0000_0000;
const XDP_UMEM_PGOFF_COMPLETION_RING: i64 = 0x1_8000_0000;
const XDP_COPY: u16 = 1 << 1;
const XDP_USE_NEED_WAKEUP: u16 = 1 << 3;
const XDP_RING_NEED_WAKEUP: u32 = 1;

const FRAME: u64 = 2048;
/// UMEM frames and ring size of the fabric port: it carries every VM's overlay traffic.
const FABRIC_FRAMES: u32 = 4096;
const FABRIC_RING: u32 = 2048;
/// UMEM frames and ring size of a VM port: 1 MiB of UMEM (registered, so pinned and counted in
/// RSS from the start) instead of 8 MiB, so hundreds of VM ports fit a dom0 (ADR 0004). Half
/// the frames receive (the whole fill ring), half transmit.
const VM_FRAMES: u32 = 512;
const VM_RING: u32 = 256;
/// Transmit budget asked for per wakeup (at most the transmit ring size).
const TX_BUDGET: u32 = 512;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct UmemReg {
    addr: u64,
    len: u64,
    chunk_size: u32,
    headroom: u32,
    flags: u32,
    tx_metadata_len: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
struct RingOff {
    producer: u64,
    consumer: u64,
    desc: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
struct MmapOffsets {
    rx: RingOff,
    tx: RingOff,
    fr: RingOff,
    cr: RingOff,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct SockaddrXdp {
    family: u16,
    flags: u16,
    ifindex: u32,
    queue_id: u32,
    shared_umem_fd: u32,
}

/// One mapped ring: producer/consumer words, flags word, descriptor array.
#[derive(Debug)]
struct Ring {
    _map: Mmap,
    prod: *const AtomicU32,
    cons: *const AtomicU32,
    flags: *const u32,
    desc: *mut u8,
    mask: u32,
    /// Local copy of our own index (producer for fill/tx, consumer for rx/completion).
    cached: u32,
}

// SAFETY: the ring is plain shared memory owned by this value (through `map`); moving it to the
// lcore thread that uses it moves that ownership.
unsafe impl Send for Ring {}

impl Ring {
    fn map(
        fd: RawFd,
        off: &RingOff,
        n: u32,
        desc_size: usize,
        pgoff: i64,
        dev: &str,
    ) -> Result<Self, PortError> {
        let len = off.desc as usize + n as usize * desc_size;
        let map = Mmap::new(Some(fd), len, pgoff, true, dev)?;
        let base = map.ptr();
        // SAFETY: the kernel-reported offsets lie inside the mapping of `len` bytes.
        let (prod, cons, flags, desc) = unsafe {
            (
                base.add(off.producer as usize) as *const AtomicU32,
                base.add(off.consumer as usize) as *const AtomicU32,
                base.add(off.flags as usize) as *const u32,
                base.add(off.desc as usize),
            )
        };
        Ok(Self {
            _map: map,
            prod,
            cons,
            flags,
            desc,
            mask: n - 1,
            cached: 0,
        })
    }

    #[inline]
    fn prod(&self) -> &AtomicU32 {
        // SAFETY: points into our live mapping; the kernel accesses it atomically too.
        unsafe { &*self.prod }
    }

    #[inline]
    fn cons(&self) -> &AtomicU32 {
        // SAFETY: as in `prod`.
        unsafe { &*self.cons }
    }

    #[inline]
    fn need_wakeup(&self) -> bool {
        // SAFETY: points into our live mapping; a racy read only delays or adds one wakeup.
        unsafe { std::ptr::read_volatile(self.flags) & XDP_RING_NEED_WAKEUP != 0 }
    }

    /// Address-ring slot `i` (fill/completion: u64 entries).
    #[inline]
    fn addr_slot(&self, i: u32) -> *mut u64 {
        // SAFETY: masked index inside the descriptor array of the mapping.
        unsafe { self.desc.cast::<u64>().add((i & self.mask) as usize) }
    }

    /// Descriptor-ring slot `i` (rx/tx: `struct xdp_desc` = addr u64, len u32, options u32).
    #[inline]
    fn desc_slot(&self, i: u32) -> *mut u8 {
        // SAFETY: masked index inside the descriptor array of the mapping.
        unsafe { self.desc.add((i & self.mask) as usize * 16) }
    }
}

/// One XSK socket bound to one device queue.
#[derive(Debug)]
pub struct XskPort {
    name: String,
    fd: OwnedFd,
    umem: Mmap,
    rx: Ring,
    tx: Ring,
    fill: Ring,
    comp: Ring,
    /// UMEM frames free for transmit.
    tx_free: Vec<u64>,
    /// Descriptors the kernel sends per transmit wakeup (copy mode).
    tx_budget: usize,
    fix_csum: bool,
    /// VM ports: an AF_PACKET socket that sends TCP super-packets (GSO packets from AF_PACKET
    /// ports, and runs of segments merged back) whole, so the receiving VM's stack handles one
    /// packet instead of one per segment. XSK transmit carries no offload metadata.
    gso: Option<GsoTx>,
    drops: PortDrops,
    /// The kernel's receive drop count (`XDP_STATISTICS`: dropped, ring full, fill ring empty)
    /// already counted.
    kernel_dropped: u64,
}

impl XskPort {
    fn open(dev: &str, ifindex: u32, queue: u32, fix_csum: bool) -> Result<Self, PortError> {
        let fd = sys::socket(AF_XDP, libc::SOCK_RAW, 0, dev)?;
        let raw = fd.as_raw_fd();
        // `fix_csum` marks a VM port.
        let (nframes, ring) = if fix_csum {
            (VM_FRAMES, VM_RING)
        } else {
            (FABRIC_FRAMES, FABRIC_RING)
        };
        let umem = Mmap::new(None, (FRAME * u64::from(nframes)) as usize, 0, true, dev)?;
        let reg = UmemReg {
            addr: umem.ptr() as u64,
            len: umem.len() as u64,
            chunk_size: FRAME as u32,
            ..UmemReg::default()
        };
        sys::setsockopt(raw, SOL_XDP, XDP_UMEM_REG, &reg, "XDP_UMEM_REG", dev)?;
        for (opt, what) in [
            (XDP_UMEM_FILL_RING, "XDP_UMEM_FILL_RING"),
            (XDP_UMEM_COMPLETION_RING, "XDP_UMEM_COMPLETION_RING"),
            (XDP_RX_RING, "XDP_RX_RING"),
            (XDP_TX_RING, "XDP_TX_RING"),
        ] {
            sys::setsockopt(raw, SOL_XDP, opt, &ring, what, dev)?;
        }
        let mut off = MmapOffsets::default();
        sys::getsockopt(
            raw,
            SOL_XDP,
            XDP_MMAP_OFFSETS,
            &mut off,
            "XDP_MMAP_OFFSETS",
            dev,
        )?;
        let rx = Ring::map(raw, &off.rx, ring, 16, XDP_PGOFF_RX_RING, dev)?;
        let tx = Ring::map(raw, &off.tx, ring, 16, XDP_PGOFF_TX_RING, dev)?;
        let mut fill = Ring::map(raw, &off.fr, ring, 8, XDP_UMEM_PGOFF_FILL_RING, dev)?;
        let comp = Ring::map(raw, &off.cr, ring, 8, XDP_UMEM_PGOFF_COMPLETION_RING, dev)?;
        // First half of the UMEM receives, second half transmits.
        let half = nframes / 2;
        for i in 0..ring.min(half) {
            // SAFETY: slot inside the fill ring we own as producer; published below.
            unsafe { fill.addr_slot(i).write(u64::from(i) * FRAME) };
        }
        fill.cached = ring.min(half);
        fill.prod().store(fill.cached, Ordering::Release);
        let tx_free = (half..nframes).map(|i| u64::from(i) * FRAME).collect();
        let sa = SockaddrXdp {
            family: AF_XDP as u16,
            flags: XDP_COPY | XDP_USE_NEED_WAKEUP,
            ifindex,
            queue_id: queue,
            shared_umem_fd: 0,
        };
        // SAFETY: `sa` is a valid sockaddr_xdp of the length passed.
        let rc = unsafe {
            libc::bind(
                raw,
                (&sa as *const SockaddrXdp).cast(),
                std::mem::size_of::<SockaddrXdp>() as u32,
            )
        };
        if rc < 0 {
            return Err(PortError::last("bind AF_XDP", dev));
        }
        // Copy mode sends 32 descriptors per wakeup unless told otherwise (Linux 6.17+); one
        // wakeup per burst instead of one per 32 frames. Older kernels: keep 32.
        let tx_budget = if sys::setsockopt(
            raw,
            SOL_XDP,
            XDP_MAX_TX_SKB_BUDGET,
            &TX_BUDGET.min(ring),
            "XDP_MAX_TX_SKB_BUDGET",
            dev,
        )
        .is_ok()
        {
            TX_BUDGET.min(ring) as usize
        } else {
            32
        };
        Ok(Self {
            name: dev.to_string(),
            fd,
            umem,
            rx,
            tx,
            fill,
            comp,
            tx_free,
            tx_budget,
            fix_csum,
            gso: None,
            drops: PortDrops::default(),
            kernel_dropped: 0,
        })
    }

    /// Adds the frames the kernel dropped before the receive ring since the last call (ring
    /// full, fill ring empty, no room) as `IF RX Discard`: one `getsockopt`, each time the
    /// lcore collects drop counts (every 1024 rounds), never per packet.
    fn kernel_drops(&mut self) {
        // struct xdp_statistics: rx_dropped, rx_invalid_descs, tx_invalid_descs, rx_ring_full,
        // rx_fill_ring_empty_descs, tx_ring_empty_descs.
        let mut st = [0u64; 6];
        let fd = self.fd.as_raw_fd();
        if sys::getsockopt(
            fd,
            SOL_XDP,
            XDP_STATISTICS,
            &mut st,
            "XDP_STATISTICS",
            &self.name,
        )
        .is_err()
        {
            return;
        }
        let total = st[0] + st[3] + st[4];
        self.drops.add_n(
            DropReason::InterfaceRxDiscard,
            total.saturating_sub(self.kernel_dropped),
        );
        self.kernel_dropped = total;
    }

    /// Publishes the transmit descriptors up to producer index `p` and wakes the kernel's
    /// transmit path (copy mode sends at most `tx_budget` descriptors per wakeup).
    fn publish(&mut self, p: u32) {
        let n = p.wrapping_sub(self.tx.cached) as usize;
        if n == 0 {
            return;
        }
        self.tx.cached = p;
        self.tx.prod().store(p, Ordering::Release);
        for _ in 0..n.div_ceil(self.tx_budget) {
            if !self.tx.need_wakeup() && self.tx.cons().load(Ordering::Acquire) == p {
                break;
            }
            if !self.kick() {
                break;
            }
        }
    }

    #[inline]
    fn frame(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let a = addr as usize;
        if a + len > self.umem.len() {
            return None;
        }
        // SAFETY: bounds checked against the UMEM mapping; the kernel handed this frame to us
        // through the rx ring and does not touch it until we return it on the fill ring.
        Some(unsafe { std::slice::from_raw_parts(self.umem.ptr().add(a), len) })
    }

    fn reclaim_tx(&mut self) {
        let prod = self.comp.prod().load(Ordering::Acquire);
        let mut c = self.comp.cached;
        while c != prod {
            // SAFETY: entries between our consumer index and the producer are published.
            let a = unsafe { self.comp.addr_slot(c).read() };
            self.tx_free.push(a & !(FRAME - 1));
            c = c.wrapping_add(1);
        }
        if c != self.comp.cached {
            self.comp.cached = c;
            self.comp.cons().store(c, Ordering::Release);
        }
    }

    fn kick(&self) -> bool {
        // SAFETY: an empty send only wakes the kernel's transmit path for our socket.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        r >= 0
            || matches!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::ENOBUFS)
            )
    }
}

impl Port for XskPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_burst(&mut self, pool: &mut BufPool, batch: &mut Batch, vif: u16) -> usize {
        let prod = self.rx.prod().load(Ordering::Acquire);
        let mut c = self.rx.cached;
        let mut n = 0;
        let mut refill = self.fill.cached;
        while c != prod && !batch.is_full() {
            let d = self.rx.desc_slot(c);
            // SAFETY: the descriptor at our consumer index is published (acquire above).
            let (addr, len) = unsafe { (d.cast::<u64>().read(), d.add(8).cast::<u32>().read()) };
            let len = len as usize;
            match (len <= MAX_PKT_LEN, self.frame(addr, len), pool.alloc()) {
                (true, Some(f), Some(mut b)) => {
                    b.fill(f);
                    if self.fix_csum {
                        super::vnet::fix_partial(b.data_mut());
                    }
                    if let Err(b) = batch.push(b, vif) {
                        pool.free(b);
                    } else {
                        n += 1;
                    }
                }
                (_, _, None) => self.drops.add(DropReason::HeadAllocFail),
                (_, _, Some(b)) => {
                    pool.free(b);
                    self.drops.add(DropReason::InterfaceRxDiscard);
                }
            }
            // Give the frame straight back to the fill ring (it has room: frames in flight never
            // exceed the ring size).
            // SAFETY: slot at our fill producer index; published below.
            unsafe { self.fill.addr_slot(refill).write(addr & !(FRAME - 1)) };
            refill = refill.wrapping_add(1);
            c = c.wrapping_add(1);
        }
        if c != self.rx.cached {
            self.rx.cached = c;
            self.rx.cons().store(c, Ordering::Release);
            self.fill.cached = refill;
            self.fill.prod().store(refill, Ordering::Release);
            if self.fill.need_wakeup() {
                // SAFETY: an empty non-blocking recvfrom only wakes the kernel's receive path.
                unsafe {
                    libc::recvfrom(
                        self.fd.as_raw_fd(),
                        std::ptr::null_mut(),
                        0,
                        libc::MSG_DONTWAIT,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                    );
                }
            }
        }
        n
    }

    fn tx_burst(&mut self, pool: &mut BufPool, pkts: &mut Vec<PktBuf>) -> usize {
        self.reclaim_tx();
        let cons = self.tx.cons().load(Ordering::Acquire);
        let room = (self.tx.mask + 1) - self.tx.cached.wrapping_sub(cons);
        let mut p = self.tx.cached;
        let mut used: u32 = 0;
        let mut done = 0;
        let mut gso = self.gso.take();
        // In order: descriptors queued before a super-packet are published before it is sent,
        // and super-packets queued before a descriptor are sent before it.
        while done < pkts.len() {
            if let Some(g) = gso.as_mut() {
                let run = GsoTx::claim(pkts, done);
                if run > 0 {
                    self.publish(p);
                    g.queue(pkts, done, run, &self.name, &mut self.drops);
                    done += run;
                    continue;
                }
                if g.pending() {
                    g.flush(&self.name, &mut self.drops);
                }
            }
            if used >= room {
                break;
            }
            let Some(addr) = self.tx_free.pop() else {
                break;
            };
            let b = &pkts[done];
            let len = b.len().min(FRAME as usize);
            // SAFETY: `addr` is a transmit frame we own (not in any ring) inside the UMEM;
            // `len` fits the frame. The descriptor slot is at our producer index.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    b.data().as_ptr(),
                    self.umem.ptr().add(addr as usize),
                    len,
                );
                let d = self.tx.desc_slot(p);
                d.cast::<u64>().write(addr);
                d.add(8).cast::<u32>().write(len as u32);
                d.add(12).cast::<u32>().write(0);
            }
            p = p.wrapping_add(1);
            used += 1;
            done += 1;
        }
        self.publish(p);
        if let Some(g) = gso.as_mut() {
            g.flush(&self.name, &mut self.drops);
        }
        self.gso = gso;
        for b in pkts.drain(..done) {
            pool.free(b);
        }
        done
    }

    fn tx_gso(&self) -> bool {
        self.gso.is_some()
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }

    fn take_drops(&mut self) -> PortDrops {
        self.kernel_drops();
        std::mem::take(&mut self.drops)
    }
}

/// Opens `dev` with one XSK per receive queue (queue `q` on lcore `q % lcores`), attaching the
/// XDP program for its role. Lcores without a queue get a transmit-only AF_PACKET handle.
pub fn open_device(dev: &str, o: &OpenOpts) -> Result<DevicePorts, PortError> {
    let ifindex = sys::ifindex(dev)?;
    let queues = sys::rx_queues(dev);
    let fabric = match o.role {
        Role::Fabric { host_ip } => Some(host_ip),
        Role::Vm => None,
    };
    let modes: &[u32] = match o.xdp_mode {
        XdpMode::Native => &[XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE],
        XdpMode::Generic => &[XDP_FLAGS_SKB_MODE],
    };
    let mut last = None;
    let mut att = None;
    for &m in modes {
        match XdpAttachment::attach(dev, ifindex, queues, fabric, m) {
            Ok(a) => {
                if m == XDP_FLAGS_SKB_MODE && o.xdp_mode == XdpMode::Native {
                    log::warn!("{dev}: native XDP unavailable, using generic XDP");
                }
                att = Some(a);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let Some(att) = att else {
        return Err(last.unwrap_or_else(|| super::sys::PortError::Unsupported {
            dev: dev.into(),
            why: "no XDP mode".into(),
        }));
    };
    let n = o.lcores.max(1);
    let mut per: Vec<Option<(Box<dyn Port>, bool)>> = (0..n).map(|_| None).collect();
    for q in 0..queues {
        let mut x = XskPort::open(dev, ifindex, q, fabric.is_none())?;
        if fabric.is_none() {
            match GsoTx::open(dev, ifindex) {
                Ok(g) => x.gso = Some(g),
                Err(e) => log::warn!(
                    "{dev}: no super-packet transmit socket ({e}); segments go out one by one"
                ),
            }
        }
        att.set_xsk(q, x.fd.as_raw_fd())?;
        let l = q as usize % n;
        if per[l].is_none() {
            per[l] = Some((Box::new(x), true));
        } else {
            log::warn!("{dev}: queue {q} shares lcore {l}; it is not polled (add lcores)");
        }
    }
    let mut handles = Vec::new();
    for slot in per {
        match slot {
            Some(h) => handles.push(h),
            None => handles.push((
                Box::new(AfPacketPort::open(
                    dev,
                    AfPacketOpts {
                        rx: false,
                        fanout_group: None,
                        vnet_hdr: true,
                        big_rings: matches!(o.role, super::open::Role::Fabric { .. }),
                    },
                )?) as Box<dyn Port>,
                false,
            )),
        }
    }
    Ok(DevicePorts {
        kind: super::open::PortKind::AfXdp,
        handles,
        guard: Some(Box::new(att)),
    })
}
