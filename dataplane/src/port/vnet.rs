//! Checksum offload and segmentation at the port boundary.
//!
//! veth, vif and tap devices hand packets over the way the guest's stack left them: with the
//! TCP/UDP checksum only seeded with the pseudo-header sum (`CHECKSUM_PARTIAL`) and, for TCP,
//! as GSO super-packets of up to 64 KiB. AF_PACKET and tap report both in a virtio-net header
//! (`PACKET_VNET_HDR` / `IFF_VNET_HDR`); AF_XDP reports neither, but never sees GSO (attaching
//! XDP to a veth turns GSO off on its peer) and a partial checksum is recognisable: its field
//! holds exactly the folded pseudo-header sum. This module finishes checksums of ordinary
//! frames. TCP super-packets are kept whole in one buffer and marked as GSO packets (see
//! [`crate::gso`]); only when no buffer large enough is free are they cut into MSS-sized frames
//! here.

use crate::buf::{BufPool, PktBuf, MAX_PKT_LEN};
use crate::gso::Segments;
use crate::wire::checksum;

/// `struct virtio_net_hdr` length (no `num_buffers`).
pub const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_ECN` flag bit.
pub const GSO_ECN: u8 = 0x80;

const ETH: usize = 14;

/// A decoded virtio-net header (fields are host-endian on the wire, little on x86).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `F_NEEDS_CSUM` etc.
    pub flags: u8,
    /// GSO type.
    pub gso_type: u8,
    /// Header length (hint).
    pub hdr_len: u16,
    /// Segment payload size.
    pub gso_size: u16,
    /// Where checksumming starts (from the Ethernet header).
    pub csum_start: u16,
    /// Offset of the checksum field from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Parses the first 10 bytes.
    pub fn parse(b: &[u8]) -> Option<Self> {
        if b.len() < VNET_HDR_LEN {
            return None;
        }
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(Self {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    /// The header of a TCP/IPv4 packet sent whole as a super-packet of `gso_type`: `hdrs`
    /// header bytes (Ethernet to the end of TCP), `mss`-byte segments, and the TCP checksum,
    /// seeded with the pseudo-header sum, to complete from `csum_start` (the TCP header).
    pub fn tcp_gso(gso_type: u8, hdrs: usize, mss: u16, csum_start: usize) -> Self {
        Self {
            flags: F_NEEDS_CSUM,
            gso_type,
            hdr_len: hdrs as u16,
            gso_size: mss,
            csum_start: csum_start as u16,
            csum_offset: 16,
        }
    }

    /// The 10 bytes on the wire (what [`VnetHdr::parse`] reads).
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        for (i, v) in [
            self.hdr_len,
            self.gso_size,
            self.csum_start,
            self.csum_offset,
        ]
        .into_iter()
        .enumerate()
        {
            b[2 + 2 * i..4 + 2 * i].copy_from_slice(&v.to_ne_bytes());
        }
        b
    }
}

/// What became of a frame handed to [`deliver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// This many frames were produced (1 for a normal frame, more for a segmented one).
    Frames(usize),
    /// Malformed offload metadata or an unsupported GSO type: dropped.
    Bad,
    /// Too large and not segmentable: dropped.
    TooBig,
    /// No buffer was free, or the batch had no room: dropped (segments already pushed stay).
    NoBuf,
}

/// Completes a partial checksum: the field at `start + offset` holds the pseudo-header sum; the
/// result covers everything from `start` to the end.
#[inline]
pub fn complete_csum(frame: &mut [u8], start: usize, offset: usize) -> bool {
    let at = start + offset;
    if at + 2 > frame.len() || start >= frame.len() {
        return false;
    }
    let c = !checksum::fold(checksum::sum(&frame[start..]));
    // UDP transmits an all-zero result as all ones (RFC 768); TCP's field is never read as zero.
    let c = if c == 0 && offset == 6 { 0xffff } else { c };
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// The TCP/UDP payload location of an unfragmented IPv4 frame: (l4 start, l4 length, proto,
/// pseudo-header sum).
#[inline]
fn l4_of(frame: &[u8]) -> Option<(usize, usize, u8, u32)> {
    if frame.len() < ETH + 20 || frame[12] != 0x08 || frame[13] != 0x00 {
        return None;
    }
    let ip = &frame[ETH..];
    let (hl, total) = crate::wire::ipv4::lengths(ip.first_chunk()?, ip.len()).ok()?;
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return None;
    }
    let proto = ip[9];
    let l4len = total - hl;
    let pseudo = checksum::sum(&ip[12..20]) + u32::from(proto) + l4len as u32;
    Some((ETH + hl, l4len, proto, pseudo))
}

/// AF_XDP has no offload metadata: finishes a TCP/UDP checksum whose field holds exactly the
/// folded pseudo-header sum (what the kernel leaves for `CHECKSUM_PARTIAL`). For a packet whose
/// real checksum happens to equal that value, recomputing yields the same value, so complete
/// packets are never changed; corrupt ones are not repaired.
#[inline]
pub fn fix_partial(frame: &mut [u8]) {
    let Some((l4, l4len, proto, pseudo)) = l4_of(frame) else {
        return;
    };
    let off = match proto {
        6 if l4len >= 20 => 16,
        17 if l4len >= 8 => 6,
        _ => return,
    };
    let at = l4 + off;
    let field = u16::from_be_bytes([frame[at], frame[at + 1]]);
    if field == checksum::fold(pseudo) {
        complete_csum(&mut frame[..l4 + l4len], l4, off);
    }
}

/// Turns one received frame (after its virtio-net header `h`, if any) into pipeline packets:
/// finishes a partial checksum, segments a TCP super-packet, and pushes each resulting buffer
/// through `push`. Used by every backend that reads offloaded frames.
pub fn deliver(
    h: Option<&VnetHdr>,
    frame: &[u8],
    pool: &mut BufPool,
    mut push: impl FnMut(PktBuf) -> Result<(), PktBuf>,
) -> Outcome {
    let gso = h.map_or(GSO_NONE, |h| h.gso_type & !GSO_ECN);
    if gso == GSO_NONE || frame.len() <= MAX_PKT_LEN && h.is_some_and(|h| h.gso_size == 0) {
        if frame.len() > MAX_PKT_LEN {
            return Outcome::TooBig;
        }
        let Some(mut b) = pool.alloc() else {
            return Outcome::NoBuf;
        };
        b.fill(frame);
        if let Some(h) = h {
            if h.flags & F_NEEDS_CSUM != 0
                && !complete_csum(
                    b.data_mut(),
                    usize::from(h.csum_start),
                    usize::from(h.csum_offset),
                )
            {
                pool.free(b);
                return Outcome::Bad;
            }
        }
        if let Err(b) = push(b) {
            pool.free(b);
            return Outcome::NoBuf;
        }
        return Outcome::Frames(1);
    }
    match (gso, h) {
        (GSO_TCPV4, Some(h)) => match keep_whole(h, frame, pool) {
            Some(b) => match push(b) {
                Ok(()) => Outcome::Frames(1),
                Err(b) => {
                    pool.free(b);
                    Outcome::NoBuf
                }
            },
            None => segment_tcp4(frame, usize::from(h.gso_size), pool, push),
        },
        _ => Outcome::Bad,
    }
}

/// Copies the TCP super-packet `frame` whole into one buffer marked as a GSO packet (see
/// [`crate::gso`]). `None` if no buffer that large is free or the packet does not have the
/// shape the GSO path expects (the caller then segments it, or finds it malformed).
fn keep_whole(h: &VnetHdr, frame: &[u8], pool: &mut BufPool) -> Option<PktBuf> {
    let mss = h.gso_size;
    let mut b = pool.alloc_for(frame.len())?;
    b.fill(frame);
    let ok = crate::gso::check_frame(b.data_mut(), usize::from(mss)).is_some_and(|_| {
        let ihl = usize::from(frame[ETH] & 0x0f) * 4;
        h.flags & F_NEEDS_CSUM != 0 && usize::from(h.csum_start) == ETH + ihl && h.csum_offset == 16
    });
    if !ok {
        pool.free(b);
        return None;
    }
    b.set_gso(mss, h.gso_type, ETH);
    Some(b)
}

/// Cuts a TCP/IPv4 super-packet into segments of at most `mss` payload bytes, each with its own
/// IP length, id, checksum, sequence number, flags and full TCP checksum.
pub fn segment_tcp4(
    frame: &[u8],
    mss: usize,
    pool: &mut BufPool,
    mut push: impl FnMut(PktBuf) -> Result<(), PktBuf>,
) -> Outcome {
    if frame.len() < ETH + 20 || frame[12] != 0x08 || frame[13] != 0x00 {
        return Outcome::Bad;
    }
    let Some(cut) = Segments::of(frame, ETH, mss) else {
        return Outcome::Bad;
    };
    for i in 0..cut.count {
        let Some(b) = cut.build(frame, i, pool) else {
            return if i == 0 {
                Outcome::NoBuf
            } else {
                Outcome::Frames(i)
            };
        };
        if let Err(b) = push(b) {
            pool.free(b);
            return Outcome::NoBuf;
        }
    }
    Outcome::Frames(cut.count)
}

/// A TCP/IPv4 segment that may be merged with its neighbours (transmit-side TSO): unfragmented,
/// IP length matching the frame, only ACK (and PSH) set, some payload.
#[derive(Debug, Clone, Copy)]
struct TcpSeg {
    /// Ethernet + IP + TCP header bytes.
    hdrs: usize,
    ihl: usize,
    seq: u32,
    payload: usize,
    flags: u8,
}

#[inline]
fn tcp_seg(d: &[u8]) -> Option<TcpSeg> {
    if d.len() < ETH + 40 || d[12] != 0x08 || d[13] != 0x00 || d[ETH] >> 4 != 4 {
        return None;
    }
    let ip = &d[ETH..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ihl < 20 || ip[9] != 6 || total != ip.len() || ip.len() < ihl + 20 {
        return None;
    }
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return None;
    }
    let t = &ip[ihl..];
    let thl = usize::from(t[12] >> 4) * 4;
    let flags = t[13];
    // ACK required; PSH allowed; nothing else (SYN, FIN, RST, URG, ECE, CWR end a run).
    if thl < 20 || t.len() <= thl || flags & !0x08 != 0x10 {
        return None;
    }
    Some(TcpSeg {
        hdrs: ETH + ihl + thl,
        ihl,
        seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        payload: t.len() - thl,
        flags,
    })
}

/// How many frames from the start of `pkts` form one TCP super-packet of at most `max_len`
/// bytes (headers once plus every payload): consecutive segments of one flow with identical
/// headers except IP id/checksum and TCP sequence/flags/checksum, back to back in sequence,
/// every one but the last exactly as large as the first, PSH only on the last. 1 if the first
/// frame starts no run.
pub fn tso_run(pkts: &[PktBuf], max_len: usize) -> usize {
    let Some(first) = pkts.first() else {
        return 0;
    };
    let f = first.data();
    let Some(a) = tcp_seg(f) else {
        return 1;
    };
    if a.flags & 0x08 != 0 {
        return 1;
    }
    let mss = a.payload;
    let mut total = a.hdrs + mss;
    let mut next_seq = a.seq.wrapping_add(mss as u32);
    let mut n = 1;
    let mut last_len = mss;
    for b in &pkts[1..] {
        if last_len != mss {
            break;
        }
        let d = b.data();
        let Some(s) = tcp_seg(d) else {
            break;
        };
        let ip = ETH;
        let t = ETH + a.ihl;
        if s.hdrs != a.hdrs
            || s.seq != next_seq
            || s.payload > mss
            || total + s.payload > max_len
            // Ethernet, IP version..tos, ttl/proto, addresses and options.
            || d[..ip + 2] != f[..ip + 2]
            || d[ip + 8..ip + 10] != f[ip + 8..ip + 10]
            || d[ip + 12..t] != f[ip + 12..t]
            // Ports, ack, data offset, window, urgent pointer, options.
            || d[t..t + 4] != f[t..t + 4]
            || d[t + 8..t + 13] != f[t + 8..t + 13]
            || d[t + 14..t + 16] != f[t + 14..t + 16]
            || d[t + 18..a.hdrs] != f[t + 18..a.hdrs]
        {
            break;
        }
        total += s.payload;
        next_seq = next_seq.wrapping_add(s.payload as u32);
        last_len = s.payload;
        n += 1;
        if s.flags & 0x08 != 0 {
            break;
        }
    }
    n
}

/// Writes the virtio-net header (`GSO_TCPV4`, `NEEDS_CSUM`) and the headers of the one
/// super-packet the run `pkts` (from [`tso_run`], at least two frames) becomes into `out`: the
/// first frame's headers with the total IP length, a fresh IP checksum, the last frame's PSH and
/// the partial TCP checksum (pseudo-header sum). Every payload follows in order (the caller
/// gathers them). Returns the bytes written, or `None` if `out` is too small or the run too
/// long for one IP packet.
pub fn write_tso_hdr(pkts: &[PktBuf], out: &mut [u8]) -> Option<usize> {
    let f = pkts.first()?.data();
    let a = tcp_seg(f)?;
    let mss = a.payload;
    let total: usize = a.hdrs + pkts.iter().map(|b| b.len() - a.hdrs).sum::<usize>();
    if VNET_HDR_LEN + a.hdrs > out.len() || total - ETH > usize::from(u16::MAX) {
        return None;
    }
    let (h, frame) = out.split_at_mut(VNET_HDR_LEN);
    h.copy_from_slice(&VnetHdr::tcp_gso(GSO_TCPV4, a.hdrs, mss as u16, ETH + a.ihl).to_bytes());
    frame[..a.hdrs].copy_from_slice(&f[..a.hdrs]);
    let ip = &mut frame[ETH..a.hdrs];
    ip[2..4].copy_from_slice(&((total - ETH) as u16).to_be_bytes());
    ip[10..12].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(&ip[..a.ihl]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let last = pkts.last().map_or(0, |b| b.data()[ETH + a.ihl + 13]);
    ip[a.ihl + 13] = (ip[a.ihl + 13] & !0x08) | (last & 0x08);
    crate::gso::seed_tcp_csum(ip, a.ihl, total - ETH - a.ihl);
    Some(VNET_HDR_LEN + a.hdrs)
}

/// [`write_tso_hdr`] followed by every payload: the whole super-packet in `out`. Returns the
/// bytes written, or `None` if `out` is too small.
pub fn write_tso(pkts: &[PktBuf], out: &mut [u8]) -> Option<usize> {
    let hdrs = tcp_seg(pkts.first()?.data())?.hdrs;
    let total: usize = VNET_HDR_LEN + hdrs + pkts.iter().map(|b| b.len() - hdrs).sum::<usize>();
    if total > out.len() {
        return None;
    }
    let mut at = write_tso_hdr(pkts, out)?;
    for b in pkts {
        let p = &b.data()[hdrs..];
        out[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_frame(payload: usize, partial: bool) -> Vec<u8> {
        let mut f = vec![0u8; ETH + 20 + 20 + payload];
        f[12] = 0x08;
        let total = (20 + 20 + payload) as u16;
        let ip = &mut f[ETH..];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[10, 1, 1, 2]);
        ip[16..20].copy_from_slice(&[10, 1, 1, 3]);
        let c = checksum::checksum(&ip[..20]);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        ip[20 + 12] = 0x50;
        ip[20 + 13] = 0x18;
        for (i, b) in ip[40..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let pseudo = checksum::sum(&ip[12..20]) + 6 + u32::from(total - 20);
        ip[36..38].copy_from_slice(&checksum::fold(pseudo).to_be_bytes());
        if !partial {
            complete_csum(&mut f, ETH + 20, 16);
        }
        f
    }

    fn tcp_ok(f: &[u8]) -> bool {
        let (l4, l4len, _, pseudo) = l4_of(f).expect("ipv4");
        checksum::fold(pseudo + checksum::sum(&f[l4..l4 + l4len])) == 0xffff
    }

    #[test]
    fn header_bytes_parse_back() {
        let h = VnetHdr::tcp_gso(GSO_TCPV4 | GSO_ECN, 66, 1448, 34);
        assert_eq!(VnetHdr::parse(&h.to_bytes()), Some(h));
    }

    #[test]
    fn partial_is_completed_and_complete_is_untouched() {
        let mut f = tcp_frame(100, true);
        assert!(!tcp_ok(&f));
        fix_partial(&mut f);
        assert!(tcp_ok(&f));
        let g = f.clone();
        fix_partial(&mut f);
        assert_eq!(f, g);
    }

    #[test]
    fn super_packet_is_segmented_with_valid_checksums() {
        let f = tcp_frame(5000, true);
        let mut pool = BufPool::new(8);
        let mut out = Vec::new();
        let h = VnetHdr::tcp_gso(GSO_TCPV4, 54, 1448, 34);
        assert_eq!(
            deliver(Some(&h), &f, &mut pool, |b| {
                out.push(b);
                Ok(())
            }),
            Outcome::Frames(4)
        );
        let mut seq = 0u32;
        for (i, b) in out.iter().enumerate() {
            assert!(tcp_ok(b.data()), "segment {i}");
            assert_eq!(checksum::checksum(&b.data()[ETH..ETH + 20]), 0);
            let s = u32::from_be_bytes(b.data()[38..42].try_into().expect("4"));
            assert_eq!(s, seq);
            seq += (b.len() - 54) as u32;
        }
        assert_eq!(seq, 5000);
        assert_eq!(out[0].data()[47] & 0x08, 0);
        assert_eq!(out[3].data()[47] & 0x08, 0x08);
    }

    #[test]
    fn super_packet_is_kept_whole_when_a_large_buffer_is_free() {
        let f = tcp_frame(5000, true);
        let mut pool = BufPool::with_big(8, 1);
        let h = VnetHdr::tcp_gso(GSO_TCPV4, 54, 1448, 34);
        let mut out = Vec::new();
        let mut push = |b| {
            out.push(b);
            Ok(())
        };
        assert_eq!(
            deliver(Some(&h), &f, &mut pool, &mut push),
            Outcome::Frames(1)
        );
        // No large buffer left: the next one is segmented.
        assert_eq!(
            deliver(Some(&h), &f, &mut pool, &mut push),
            Outcome::Frames(4)
        );
        assert_eq!(out[0].data(), &f[..]);
        assert_eq!((out[0].gso_size(), out[0].gso_l3()), (1448, Some(ETH)));
        assert_eq!(out[1].gso_size(), 0);
    }

    #[test]
    fn segments_merge_back_into_one_super_packet() {
        let f = tcp_frame(5000, true);
        let mut pool = BufPool::new(8);
        let mut segs = Vec::new();
        let h = VnetHdr::tcp_gso(GSO_TCPV4, 54, 1448, 34);
        deliver(Some(&h), &f, &mut pool, |b| {
            segs.push(b);
            Ok(())
        });
        assert_eq!(tso_run(&segs, 65536), 4);
        assert_eq!(tso_run(&segs, 54 + 2 * 1448), 2);
        let mut out = vec![0u8; 65536];
        let n = write_tso(&segs, &mut out).expect("fits");
        assert_eq!(n, VNET_HDR_LEN + f.len());
        let h2 = VnetHdr::parse(&out).expect("hdr");
        assert_eq!(
            (h2.gso_type, h2.gso_size, h2.csum_start),
            (GSO_TCPV4, 1448, 34)
        );
        let mut m = out[VNET_HDR_LEN..n].to_vec();
        assert_eq!(checksum::checksum(&m[ETH..ETH + 20]), 0);
        assert_eq!(m[ETH + 20 + 13], 0x18);
        complete_csum(&mut m, 34, 16);
        assert!(tcp_ok(&m));
        assert_eq!(m[54..], f[54..]);
        // A gap in the sequence ends the run.
        segs.swap(1, 2);
        assert_eq!(tso_run(&segs, 65536), 1);
    }
}
