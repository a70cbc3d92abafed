//! AF_PACKET port: a TPACKET_V2 receive ring (one status word per frame, handed to user space
//! as soon as the packet is written), an mmap'ed transmit ring sent with one `send()` per burst
//! and the qdisc bypassed, and the virtio-net header on both so offloaded packets arrive whole
//! (see [`super::vnet`]). Several sockets on one device form a `PACKET_FANOUT_HASH` group,
//! spreading its flows over lcores.
//!
//! Ring frames are 2 KiB: they hold every frame the pipeline takes (up to
//! [`MAX_PKT_LEN`]), so a port's rings are 512 KiB + 512 KiB of kernel memory however large
//! the packets it may see. A TCP super-packet (up to 64 KiB, see [`crate::gso`]) does not fit a
//! frame: with `PACKET_COPY_THRESH` the kernel queues the whole skb on the socket and marks its
//! (truncated) ring frame `TP_STATUS_COPY`; the receive loop then reads that skb with one
//! `recv()` into the lcore's 68 KiB scratch buffer. That is one syscall per super-packet (tens
//! of segments), and it keeps the ring's order. ADR 0004 has the figures: the old 64 KiB
//! frames made a port cost 18 MiB whether it carried traffic or not.
//!
//! TCP super-packets (GSO packets kept whole on receive, and runs of segments merged back into
//! one) leave through a second, transmit-only socket with the virtio-net header: one
//! `sendmmsg()` per burst whose messages gather the header and the payloads straight from the
//! pipeline's buffers, so the transmit ring keeps small frames and a super-packet is copied once
//! (by the kernel, into the skb the receiving VM gets whole).
//!
//! Why V2 and not V3: a TPACKET_V3 block only reaches user space when it is full or its retire
//! timer fires (1 ms at best, a jiffy in practice), which put ~1 ms into every forwarded ping
//! (measured: RTT 1.01 ms vs 0.05 ms for DPDK's V2-based af_packet PMD). V2 frames are
//! published one by one.

use super::sys::{self, Mmap, PortError};
use super::vnet::{self, Outcome, VnetHdr, VNET_HDR_LEN};
use super::{Port, PortDrops};
use crate::batch::Batch;
use crate::buf::{BufPool, PktBuf, MAX_PKT_LEN};
use crate::drop::DropReason;
use crate::gso;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, Ordering};

const TPACKET_V2: i32 = 1;
const PACKET_RX_RING: i32 = 5;
const PACKET_VERSION: i32 = 10;
const PACKET_TX_RING: i32 = 13;
const PACKET_COPY_THRESH: i32 = 7;
const PACKET_LOSS: i32 = 14;
const PACKET_VNET_HDR: i32 = 15;
const PACKET_FANOUT: i32 = 18;
const PACKET_QDISC_BYPASS: i32 = 20;
const PACKET_IGNORE_OUTGOING: i32 = 23;
const PACKET_FANOUT_HASH: u32 = 0;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
/// The frame was cut to fit the ring; the whole packet waits on the socket's receive queue
/// (`PACKET_COPY_THRESH`).
const TP_STATUS_COPY: u32 = 1 << 1;
const TP_STATUS_AVAILABLE: u32 = 0;
const TP_STATUS_SEND_REQUEST: u32 = 1;
const TP_STATUS_WRONG_FORMAT: u32 = 4;
/// The frame carried a VLAN tag, which the kernel moved out of the frame into the header's
/// `tp_vlan_tci`.
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
/// `TPACKET_ALIGN(sizeof(struct tpacket2_hdr))`: where transmit data starts in a frame.
const TX_DATA_OFF: usize = 32;

/// Ring frame (receive and transmit): the ring header, the virtio-net header and the largest
/// frame the pipeline takes ([`MAX_PKT_LEN`]) fit; larger frames take the copy path.
const FRAME_SIZE: u32 = 2048;
/// Ring block (one contiguous kernel allocation): 32 frames.
const BLOCK_SIZE: u32 = 1 << 16;
/// Receive frames per port: 512 KiB of kernel memory. As many frames as the old 64 KiB-frame
/// ring had, so a burst of small packets finds the same room.
const RX_FRAMES: u32 = 256;
/// Transmit frames per port: 512 KiB.
const TX_FRAMES: u32 = 256;
/// Receive and transmit frames of a port opened with `big_rings` (the fabric NIC): 8 MiB each
/// way. Every VM's traffic to other hosts crosses the fabric port, a VM's TCP super-packet
/// leaves it as ~45 segments, and a burst of them must wait in the ring, not be dropped by the
/// kernel, while the lcore is not scheduled (issue 23: with 256 frames the receiving host lost
/// enough to cause 16,000-25,000 TCP retransmits in 3 s).
pub const BIG_RING_FRAMES: u32 = 4096;
/// `PACKET_STATISTICS`: packets the kernel counted and dropped (ring full) since the last read.
const PACKET_STATISTICS: i32 = 6;
/// Receive-buffer limit for super-packets queued beside the ring (charged only while queued).
const COPY_RCVBUF: i32 = 8 << 20;
/// Scratch a queued super-packet is read into: virtio-net header + Ethernet + 64 KiB of IPv4.
const SCRATCH_LEN: usize = 68 * 1024;
/// Bytes of a ring frame the kernel copies into the skb's linear part (with the virtio-net
/// header): a small frame whole, the headers of a large one.
const TX_LINEAR: usize = 128;
/// Super-packets per `sendmmsg()`.
const GSO_MSGS: usize = 64;
/// Segments merged into one super-packet at most (one iovec each).
const TSO_MAX_SEGS: usize = 64;
/// Room for a virtio-net header and merged Ethernet + IPv4 + TCP headers.
const HDR_SCRATCH: usize = 160;
/// Send buffer of the super-packet socket: a burst of super-packets must fit it.
const GSO_SNDBUF: i32 = 16 << 20;

/// Asks the kernel to send the pending frames of the transmit ring of `fd`.
fn kick(fd: RawFd, name: &str) {
    // SAFETY: send with no buffer only kicks the transmit ring of our own socket.
    let rc = unsafe { libc::send(fd, std::ptr::null(), 0, libc::MSG_DONTWAIT) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EAGAIN) && e.raw_os_error() != Some(libc::ENOBUFS) {
            log::debug!("{name}: tx kick: {e}");
        }
    }
}

/// Counts `n` super-packets the kernel refused.
fn count_tx_drops(drops: &mut PortDrops, n: usize) {
    for _ in 0..n {
        drops.add(DropReason::InterfaceTxDiscard);
    }
}

/// An iovec for bytes the kernel only reads.
#[inline]
fn iovec(b: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: b.as_ptr() as *mut libc::c_void,
        iov_len: b.len(),
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
struct TpacketReq3 {
    block_size: u32,
    block_nr: u32,
    frame_size: u32,
    frame_nr: u32,
    retire_blk_tov: u32,
    sizeof_priv: u32,
    feature_req_word: u32,
}

/// How to open an AF_PACKET port.
#[derive(Debug, Clone, Copy)]
pub struct AfPacketOpts {
    /// Receive (false: a transmit-only handle that never sees traffic).
    pub rx: bool,
    /// Join this fanout group (hash) so several sockets share the device's traffic.
    pub fanout_group: Option<u16>,
    /// Use the virtio-net header (checksum offload and GSO metadata).
    pub vnet_hdr: bool,
    /// [`BIG_RING_FRAMES`] frames each way instead of 256, and the kernel's ring-full drops
    /// read (one `getsockopt` each time the lcore collects drop counts) and counted as
    /// `IF RX Discard`.
    pub big_rings: bool,
}

/// One AF_PACKET socket with its rings.
#[derive(Debug)]
pub struct AfPacketPort {
    name: String,
    fd: OwnedFd,
    map: Mmap,
    rx: bool,
    vnet: bool,
    /// Next receive frame to read.
    rx_head: u32,
    tx_base: usize,
    tx_head: u32,
    /// Ring sizes in frames.
    rx_frames: u32,
    tx_frames: u32,
    /// Read the kernel's ring-full drop count with the other drops.
    kernel_drops: bool,
    /// Transmit-only socket for super-packets (with the virtio-net header only).
    gso: Option<GsoTx>,
    drops: PortDrops,
}

/// The super-packet transmit path: a socket without rings and the scratch a `sendmmsg()` call
/// is built in (allocated once, never grown).
#[derive(Debug)]
pub(crate) struct GsoTx {
    fd: OwnedFd,
    /// Per message: virtio-net header and, for a merged run, the merged headers.
    hdrs: Vec<[u8; HDR_SCRATCH]>,
    iov: Vec<libc::iovec>,
    /// Per message: its first iovec and how many.
    spans: Vec<(usize, usize)>,
    msgs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers in `iov` and `msgs` are written and read only inside one
// `tx_burst` call (they point at that call's packets and at `hdrs`); between calls they are
// stale values never dereferenced, so moving the port to another thread is sound.
unsafe impl Send for GsoTx {}

/// Turns on virtio-net headers (when `vnet`; required) and qdisc bypass (best effort: older
/// kernels lack it and correctness does not depend on it) on the packet socket `raw`.
fn vnet_and_bypass(raw: std::os::fd::RawFd, vnet: bool, dev: &str) -> Result<(), PortError> {
    if vnet {
        sys::setsockopt(
            raw,
            libc::SOL_PACKET,
            PACKET_VNET_HDR,
            &1i32,
            "PACKET_VNET_HDR",
            dev,
        )?;
    }
    let _ = sys::setsockopt(
        raw,
        libc::SOL_PACKET,
        PACKET_QDISC_BYPASS,
        &1i32,
        "PACKET_QDISC_BYPASS",
        dev,
    );
    Ok(())
}

impl GsoTx {
    /// Opens the transmit-only socket on `dev`.
    pub(crate) fn open(dev: &str, ifindex: u32) -> Result<Self, PortError> {
        let fd = sys::socket(libc::AF_PACKET, libc::SOCK_RAW, 0, dev)?;
        let raw = fd.as_raw_fd();
        vnet_and_bypass(raw, true, dev)?;
        // A larger send buffer than unprivileged processes may ask for; fall back if refused.
        if sys::setsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            &GSO_SNDBUF,
            "SO_SNDBUFFORCE",
            dev,
        )
        .is_err()
        {
            let _ = sys::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                &GSO_SNDBUF,
                "SO_SNDBUF",
                dev,
            );
        }
        bind(raw, ifindex, 0, dev)?;
        Ok(Self {
            fd,
            hdrs: vec![[0u8; HDR_SCRATCH]; GSO_MSGS],
            iov: Vec::with_capacity(GSO_MSGS * (TSO_MAX_SEGS + 1)),
            spans: Vec::with_capacity(GSO_MSGS),
            // SAFETY: mmsghdr is plain data; all-zero is a valid value.
            msgs: vec![unsafe { std::mem::zeroed() }; GSO_MSGS],
        })
    }

    /// True if one more message of `iovs` iovecs fits.
    #[inline]
    fn has_room(&self, iovs: usize) -> bool {
        self.spans.len() < GSO_MSGS && self.iov.len() + iovs <= self.iov.capacity()
    }

    /// True if messages are queued.
    #[inline]
    pub(crate) fn pending(&self) -> bool {
        !self.spans.is_empty()
    }

    /// How many frames from `pkts[at..]` leave as one super-packet here: 1 for a GSO packet,
    /// the length of a run of mergeable TCP segments (see [`vnet::tso_run`]) if more than one,
    /// else 0 (an ordinary frame for the ring).
    #[inline]
    pub(crate) fn claim(pkts: &[PktBuf], at: usize) -> usize {
        if pkts[at].is_gso() {
            return 1;
        }
        let end = pkts.len().min(at + TSO_MAX_SEGS);
        match vnet::tso_run(&pkts[at..end], usize::from(u16::MAX) + 14) {
            n if n > 1 => n,
            _ => 0,
        }
    }

    /// Queues `pkts[at..at + run]` (from [`GsoTx::claim`]) as one message, sending what is
    /// queued first if it is full. The packets must stay in place until [`GsoTx::send`]. Counts
    /// what cannot be sent in `drops`.
    pub(crate) fn queue(
        &mut self,
        pkts: &mut [PktBuf],
        at: usize,
        run: usize,
        name: &str,
        drops: &mut PortDrops,
    ) {
        if !self.has_room(run + 1) {
            let lost = self.send(name);
            count_tx_drops(drops, lost);
        }
        let k = self.spans.len();
        let start = self.iov.len();
        let ok = if run > 1 {
            let segs = &pkts[at..at + run];
            match vnet::write_tso_hdr(segs, &mut self.hdrs[k]) {
                Some(hlen) => {
                    let hdrs = hlen - VNET_HDR_LEN;
                    self.iov.push(iovec(&self.hdrs[k][..hlen]));
                    for b in segs {
                        self.iov.push(iovec(&b.data()[hdrs..]));
                    }
                    true
                }
                None => false,
            }
        } else {
            match gso::tx_header(&mut pkts[at]) {
                Some(h) => {
                    self.hdrs[k][..VNET_HDR_LEN].copy_from_slice(&h);
                    self.iov.push(iovec(&self.hdrs[k][..VNET_HDR_LEN]));
                    self.iov.push(iovec(pkts[at].data()));
                    true
                }
                None => false,
            }
        };
        if ok {
            self.spans.push((start, self.iov.len() - start));
        } else {
            self.iov.truncate(start);
            drops.add(DropReason::InvalidPacket);
        }
    }

    /// Sends the queued messages, counting what the kernel refused in `drops`.
    pub(crate) fn flush(&mut self, name: &str, drops: &mut PortDrops) {
        let lost = self.send(name);
        count_tx_drops(drops, lost);
    }

    /// Sends the queued messages; returns how many the kernel refused (dropped).
    fn send(&mut self, name: &str) -> usize {
        let n = self.spans.len();
        if n == 0 {
            return 0;
        }
        for (m, &(start, count)) in self.msgs.iter_mut().zip(&self.spans) {
            // SAFETY: `start + count <= iov.len()`; the pointer stays inside the iovec array.
            m.msg_hdr.msg_iov = unsafe { self.iov.as_mut_ptr().add(start) };
            m.msg_hdr.msg_iovlen = count;
            m.msg_hdr.msg_name = std::ptr::null_mut();
            m.msg_hdr.msg_namelen = 0;
            m.msg_hdr.msg_control = std::ptr::null_mut();
            m.msg_hdr.msg_controllen = 0;
            m.msg_hdr.msg_flags = 0;
            m.msg_len = 0;
        }
        let mut sent = 0;
        while sent < n {
            // SAFETY: `msgs[sent..n]` are initialised above; every iovec points at a live
            // buffer of the caller's packets or at `hdrs`, of the length given; the kernel only
            // reads them.
            let r = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    self.msgs.as_mut_ptr().add(sent),
                    (n - sent) as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if r <= 0 {
                let e = std::io::Error::last_os_error();
                if !matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::ENOBUFS)) {
                    log::debug!("{name}: sendmmsg: {e}");
                }
                break;
            }
            sent += r as usize;
        }
        self.spans.clear();
        self.iov.clear();
        n - sent
    }
}

/// Binds the packet socket `fd` to `ifindex` for `proto` (network order; 0: transmit only).
fn bind(fd: RawFd, ifindex: u32, proto: u16, dev: &str) -> Result<(), PortError> {
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` is a valid sockaddr_ll of the length passed.
    let rc = unsafe {
        libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc < 0 {
        return Err(PortError::last("bind", dev));
    }
    Ok(())
}

/// Sets up a ring of `frames` frames of [`FRAME_SIZE`] (`opt`: receive or transmit) on `fd`;
/// returns its length in the mapping.
fn set_ring(
    fd: RawFd,
    opt: i32,
    frames: u32,
    what: &'static str,
    dev: &str,
) -> Result<usize, PortError> {
    let per_block = BLOCK_SIZE / FRAME_SIZE;
    // (V2 reads the first four fields of the request.)
    let req = TpacketReq3 {
        block_size: BLOCK_SIZE,
        block_nr: frames.div_ceil(per_block),
        frame_size: FRAME_SIZE,
        frame_nr: frames.div_ceil(per_block) * per_block,
        retire_blk_tov: 0,
        sizeof_priv: 0,
        feature_req_word: 0,
    };
    sys::setsockopt(fd, libc::SOL_PACKET, opt, &req, what, dev)?;
    Ok((req.block_size * req.block_nr) as usize)
}

/// Raises the receive-buffer limit of `fd` to `bytes` (beyond what unprivileged processes may
/// ask for if allowed). Best effort: a smaller limit only makes super-packets that find it full
/// arrive cut short (dropped and counted).
fn set_rcvbuf(fd: RawFd, bytes: i32, dev: &str) {
    if sys::setsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        &bytes,
        "SO_RCVBUFFORCE",
        dev,
    )
    .is_err()
    {
        let _ = sys::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &bytes,
            "SO_RCVBUF",
            dev,
        );
    }
}

/// Why `vnet::deliver` delivered nothing, if it did not.
#[inline]
fn drop_of(out: Outcome) -> Option<DropReason> {
    match out {
        Outcome::Frames(_) => None,
        Outcome::Bad => Some(DropReason::InvalidPacket),
        Outcome::TooBig => Some(DropReason::InterfaceRxDiscard),
        Outcome::NoBuf => Some(DropReason::HeadAllocFail),
    }
}

thread_local! {
    /// Where an lcore reads a super-packet from a socket queue (allocated on first use: one
    /// per thread that receives any, not one per port).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl AfPacketPort {
    /// Opens `dev`.
    pub fn open(dev: &str, o: AfPacketOpts) -> Result<Self, PortError> {
        let ifindex = sys::ifindex(dev)?;
        let proto = if o.rx {
            (libc::ETH_P_ALL as u16).to_be()
        } else {
            0
        };
        // Protocol 0 until `bind`: a socket created with a protocol is already receiving, and
        // binding it to the device then waits out an RCU grace period (`synchronize_net`) to
        // unhook it, tens of milliseconds per port when hundreds are opened.
        let fd = sys::socket(libc::AF_PACKET, libc::SOCK_RAW, 0, dev)?;
        let raw = fd.as_raw_fd();
        sys::setsockopt(
            raw,
            libc::SOL_PACKET,
            PACKET_VERSION,
            &TPACKET_V2,
            "PACKET_VERSION",
            dev,
        )?;
        vnet_and_bypass(raw, o.vnet_hdr, dev)?;
        // Best effort: older kernels lack these; correctness does not depend on them.
        let _ = sys::setsockopt(
            raw,
            libc::SOL_PACKET,
            PACKET_IGNORE_OUTGOING,
            &1i32,
            "PACKET_IGNORE_OUTGOING",
            dev,
        );
        let _ = sys::setsockopt(
            raw,
            libc::SOL_PACKET,
            PACKET_LOSS,
            &1i32,
            "PACKET_LOSS",
            dev,
        );
        let (rx_frames, tx_frames) = if o.big_rings {
            (BIG_RING_FRAMES, BIG_RING_FRAMES)
        } else {
            (RX_FRAMES, TX_FRAMES)
        };
        let rx_len = if o.rx {
            // Super-packets (larger than a frame) wait whole on the socket queue, flagged in
            // their ring frame; the receive buffer bounds how many may wait.
            sys::setsockopt(
                raw,
                libc::SOL_PACKET,
                PACKET_COPY_THRESH,
                &1i32,
                "PACKET_COPY_THRESH",
                dev,
            )?;
            set_rcvbuf(raw, COPY_RCVBUF, dev);
            set_ring(raw, PACKET_RX_RING, rx_frames, "PACKET_RX_RING", dev)?
        } else {
            0
        };
        let tx_len = set_ring(raw, PACKET_TX_RING, tx_frames, "PACKET_TX_RING", dev)?;
        let map = Mmap::new(Some(raw), rx_len + tx_len, 0, true, dev)?;
        bind(raw, ifindex, proto, dev)?;
        let gso = if o.vnet_hdr {
            Some(GsoTx::open(dev, ifindex)?)
        } else {
            None
        };
        if let (true, Some(g)) = (o.rx, o.fanout_group) {
            let arg: u32 = u32::from(g) | (PACKET_FANOUT_HASH << 16);
            sys::setsockopt(
                raw,
                libc::SOL_PACKET,
                PACKET_FANOUT,
                &arg,
                "PACKET_FANOUT",
                dev,
            )?;
        }
        Ok(Self {
            name: dev.to_string(),
            fd,
            map,
            rx: o.rx,
            vnet: o.vnet_hdr,
            rx_head: 0,
            tx_base: rx_len,
            tx_head: 0,
            rx_frames,
            tx_frames,
            kernel_drops: o.big_rings && o.rx,
            gso,
            drops: PortDrops::default(),
        })
    }

    #[inline]
    fn rd32(&self, off: usize) -> u32 {
        debug_assert!(off + 4 <= self.map.len());
        // SAFETY: `off` is inside the mapping (ring offsets computed from the ring geometry and
        // kernel-written offsets checked against the block size); volatile because the kernel
        // writes it concurrently.
        unsafe { std::ptr::read_volatile(self.map.ptr().add(off).cast::<u32>()) }
    }

    #[inline]
    fn wr32(&self, off: usize, v: u32) {
        // SAFETY: as in `rd32`; this word belongs to user space until the write hands it back.
        unsafe { std::ptr::write_volatile(self.map.ptr().add(off).cast::<u32>(), v) }
    }

    #[inline]
    fn rd16(&self, off: usize) -> u16 {
        // SAFETY: as in `rd32`.
        unsafe { std::ptr::read_volatile(self.map.ptr().add(off).cast::<u16>()) }
    }

    fn bytes(&self, off: usize, len: usize) -> &[u8] {
        // SAFETY: callers bound `off + len` by the block that holds it, inside the mapping; the
        // block belongs to user space (status USER) while it is read.
        unsafe { std::slice::from_raw_parts(self.map.ptr().add(off), len) }
    }
}

impl AfPacketPort {
    /// Counts what `vnet::deliver` could not deliver.
    #[inline]
    fn count(&mut self, out: Outcome) {
        if let Some(r) = drop_of(out) {
            self.drops.add(r);
        }
    }

    /// Reads the packet of a `TP_STATUS_COPY` ring frame (`status`) from the socket queue into
    /// the lcore's scratch and delivers it into `batch`. One `recv()` per super-packet.
    #[cold]
    fn rx_copied(&mut self, status: u32, pool: &mut BufPool, batch: &mut Batch, vif: u16) -> usize {
        let fd = self.fd.as_raw_fd();
        let hl = if self.vnet { VNET_HDR_LEN } else { 0 };
        let (pushed, out) = SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < SCRATCH_LEN {
                s.resize(SCRATCH_LEN, 0);
            }
            // SAFETY: `s` is a live, writable buffer of the length passed; MSG_TRUNC makes the
            // call return the packet's full length, so a cut packet is recognised below.
            let r = unsafe {
                libc::recv(
                    fd,
                    s.as_mut_ptr().cast(),
                    s.len(),
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                )
            };
            if r < 0 {
                return (0, Some(DropReason::InterfaceRxDiscard));
            }
            let r = r as usize;
            if status & TP_STATUS_VLAN_VALID != 0 {
                return (0, Some(DropReason::VlanTagged));
            }
            if r > s.len() || r < hl {
                return (0, Some(DropReason::InterfaceRxDiscard));
            }
            let hdr = if hl > 0 {
                VnetHdr::parse(&s[..hl])
            } else {
                None
            };
            let mut pushed = 0;
            let out = vnet::deliver(hdr.as_ref(), &s[hl..r], pool, |b| {
                batch.push(b, vif)?;
                pushed += 1;
                Ok(())
            });
            (pushed, drop_of(out))
        });
        if let Some(r) = out {
            self.drops.add(r);
        }
        pushed
    }
}

impl Port for AfPacketPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_burst(&mut self, pool: &mut BufPool, batch: &mut Batch, vif: u16) -> usize {
        if !self.rx {
            return 0;
        }
        let fs = FRAME_SIZE as usize;
        let fpb = BLOCK_SIZE / FRAME_SIZE;
        let mut n = 0;
        while !batch.is_full() {
            let i = self.rx_head;
            let h = (i / fpb * BLOCK_SIZE + i % fpb * FRAME_SIZE) as usize;
            // tpacket2_hdr: status, len, snaplen, mac (u16), net (u16), ...
            let status = self.rd32(h);
            if status & TP_STATUS_USER == 0 {
                break;
            }
            fence(Ordering::Acquire);
            let len = self.rd32(h + 4) as usize;
            let snap = self.rd32(h + 8) as usize;
            let mac = usize::from(self.rd16(h + 12));
            // A super-packet without a large buffer free waits for the next burst (this one's
            // large buffers come back when it has been sent); only a burst that has nothing
            // else segments it, and its segments must all fit the batch.
            let no_big = len > MAX_PKT_LEN && pool.big_available() == 0;
            if no_big && n > 0 {
                break;
            }
            let need = if no_big { len / 536 + 1 } else { 1 };
            if batch.room() < need.min(crate::batch::BATCH_SIZE) {
                break;
            }
            if status & TP_STATUS_COPY != 0 {
                // The whole packet waits on the socket queue (in ring order): read it even
                // if it is then dropped, or the queue would fall out of step with the ring.
                n += self.rx_copied(status, pool, batch, vif);
            } else if status & TP_STATUS_VLAN_VALID != 0 {
                // Tagged on the wire: our ports are untagged and the pipeline has no VLANs, so
                // routing the untagged rest would silently take the frame out of its VLAN.
                self.drops.add(DropReason::VlanTagged);
            } else if mac + snap > fs || (self.vnet && mac < VNET_HDR_LEN) || snap < len {
                // Out of the frame, no room for the header, or cut short (a packet larger
                // than a frame that found the receive buffer full).
                self.drops.add(DropReason::InterfaceRxDiscard);
            } else {
                let hdr = if self.vnet {
                    VnetHdr::parse(self.bytes(h + mac - VNET_HDR_LEN, VNET_HDR_LEN))
                } else {
                    None
                };
                let frame = self.bytes(h + mac, snap);
                let mut pushed = 0;
                let out = vnet::deliver(hdr.as_ref(), frame, pool, |b| {
                    batch.push(b, vif)?;
                    pushed += 1;
                    Ok(())
                });
                n += pushed;
                self.count(out);
            }
            fence(Ordering::Release);
            self.wr32(h, TP_STATUS_KERNEL);
            self.rx_head = (i + 1) % self.rx_frames;
        }
        n
    }

    fn tx_burst(&mut self, pool: &mut BufPool, pkts: &mut Vec<PktBuf>) -> usize {
        let fs = FRAME_SIZE;
        let fpb = BLOCK_SIZE / fs;
        let room = fs as usize - TX_DATA_OFF;
        let hl = if self.vnet { VNET_HDR_LEN } else { 0 };
        let mut done = 0;
        let mut frames = 0;
        // Frames are sent in order: ring frames queued before a super-packet are kicked before
        // it goes out, and super-packets queued before a ring frame are sent before it.
        while done < pkts.len() {
            if let Some(g) = self.gso.as_mut() {
                let run = GsoTx::claim(pkts, done);
                if run > 0 {
                    if frames > 0 {
                        kick(self.fd.as_raw_fd(), &self.name);
                        frames = 0;
                    }
                    g.queue(pkts, done, run, &self.name, &mut self.drops);
                    done += run;
                    continue;
                }
                if g.pending() {
                    g.flush(&self.name, &mut self.drops);
                }
            }
            let i = self.tx_head;
            let f = self.tx_base + (i / fpb * BLOCK_SIZE + i % fpb * fs) as usize;
            // tpacket2_hdr: status, len, snaplen.
            let mut st = self.rd32(f);
            if st != TP_STATUS_AVAILABLE && st != TP_STATUS_WRONG_FORMAT && frames > 0 {
                // The ring (256 frames) is full of this burst: send what is queued (a veth or
                // a tap sends it within the call) and go on in the frames it frees; a burst
                // can be up to four batches.
                kick(self.fd.as_raw_fd(), &self.name);
                frames = 0;
                st = self.rd32(f);
            }
            if st == TP_STATUS_WRONG_FORMAT {
                self.drops.add(DropReason::InterfaceTxDiscard);
            } else if st != TP_STATUS_AVAILABLE {
                break;
            }
            fence(Ordering::Acquire);
            // SAFETY: the frame is ours (status AVAILABLE); its data area of `room` bytes lies
            // inside the transmit ring part of the mapping.
            let out = unsafe {
                std::slice::from_raw_parts_mut(self.map.ptr().add(f + TX_DATA_OFF), room)
            };
            let b = &pkts[done];
            let len = b.len().min(room - hl);
            out[..hl].fill(0);
            if hl != 0 {
                // hdr_len: the kernel copies this much into the skb's linear part and attaches
                // the rest of the frame as page fragments. With 0 only the Ethernet header is
                // linear and the receiver pulls every further header out of the fragments.
                out[2..4].copy_from_slice(&(len.min(TX_LINEAR) as u16).to_ne_bytes());
            }
            out[hl..hl + len].copy_from_slice(&b.data()[..len]);
            let used = hl + len;
            self.wr32(f + 4, used as u32); // tp_len
            self.wr32(f + 8, used as u32); // tp_snaplen
            fence(Ordering::Release);
            self.wr32(f, TP_STATUS_SEND_REQUEST);
            self.tx_head = (i + 1) % self.tx_frames;
            done += 1;
            frames += 1;
        }
        if frames > 0 {
            kick(self.fd.as_raw_fd(), &self.name);
        }
        if let Some(g) = self.gso.as_mut() {
            g.flush(&self.name, &mut self.drops);
        }
        for b in pkts.drain(..done) {
            pool.free(b);
        }
        done
    }

    fn tx_gso(&self) -> bool {
        self.gso.is_some()
    }

    fn poll_fd(&self) -> Option<RawFd> {
        self.rx.then(|| self.fd.as_raw_fd())
    }

    fn take_drops(&mut self) -> PortDrops {
        if self.kernel_drops {
            // struct tpacket_stats { tp_packets, tp_drops }; reading resets it.
            let mut st = [0u32; 2];
            let fd = self.fd.as_raw_fd();
            let r = sys::getsockopt(
                fd,
                libc::SOL_PACKET,
                PACKET_STATISTICS,
                &mut st,
                "PACKET_STATISTICS",
                &self.name,
            );
            if r.is_ok() {
                self.drops
                    .add_n(DropReason::InterfaceRxDiscard, u64::from(st[1]));
            }
        }
        std::mem::take(&mut self.drops)
    }
}
