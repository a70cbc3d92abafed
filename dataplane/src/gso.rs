//! TCP/IPv4 GSO super-packets carried through the pipeline whole.
//!
//! An AF_PACKET port with the virtio-net header receives what a VM's stack sends as TCP
//! super-packets of up to 64 KiB with a partial checksum. Cutting them into MSS-sized frames on
//! receive and merging them again on transmit costs two passes over every byte (copy and
//! checksum) plus one pipeline pass per segment. Instead the receive path keeps such a packet
//! whole in one buffer ([`crate::buf::PktBuf::set_gso`]); the pipeline routes it like any other
//! packet (it only reads and rewrites headers), and at the output:
//!
//! * a port that takes GSO (AF_PACKET with the virtio-net header) sends it as is with a
//!   `GSO_TCPV4` header ([`tx_header`]), and the kernel hands it to the receiving VM whole;
//! * every other port, and every encapsulated packet, gets it cut into segments here
//!   ([`segment`]) with complete checksums, outer headers repeated and fixed per segment;
//! * a packet for the agent is cut to its first segment ([`trim_to_first`]).
//!
//! The TCP checksum field of a GSO packet holds the pseudo-header sum (`CHECKSUM_PARTIAL`);
//! pipeline stages may change addresses (NAT) without fixing it because both exits recompute
//! it from the headers as they are then.

use crate::buf::{BufPool, PktBuf, MAX_PKT_LEN};
use crate::port::vnet::{VnetHdr, VNET_HDR_LEN};
use crate::wire::checksum;

const ETH: usize = 14;

/// Where the headers of a GSO packet are: (IPv4 offset, IPv4 header length, TCP header length).
#[inline]
fn tcp4_at(d: &[u8], l3: usize) -> Option<(usize, usize, usize)> {
    let ip = d.get(l3..)?;
    if ip.len() < 40 || ip[0] >> 4 != 4 || ip[9] != 6 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ihl < 20 || ip.len() < ihl + 20 {
        return None;
    }
    let thl = usize::from(ip[ihl + 12] >> 4) * 4;
    if thl < 20 || ip.len() < ihl + thl {
        return None;
    }
    Some((l3, ihl, thl))
}

/// Checks that `frame` (Ethernet first) is a TCP/IPv4 super-packet the pipeline can carry whole
/// with segments of `mss` bytes, and makes its IPv4 total length match the frame (a stack may
/// leave it stale). Returns the header length (Ethernet + IPv4 + TCP).
pub fn check_frame(frame: &mut [u8], mss: usize) -> Option<usize> {
    if frame.len() < ETH || frame[12] != 0x08 || frame[13] != 0x00 {
        return None;
    }
    let (_, ihl, thl) = tcp4_at(frame, ETH)?;
    let hdrs = ETH + ihl + thl;
    let ip = &mut frame[ETH..];
    // Unfragmented, and each segment must fit an ordinary buffer if it has to be cut up.
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 || mss == 0 || hdrs + mss > MAX_PKT_LEN {
        return None;
    }
    let total = u16::try_from(ip.len()).ok()?;
    if u16::from_be_bytes([ip[2], ip[3]]) != total {
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[10..12].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&ip[..ihl]);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    }
    Some(hdrs)
}

/// True if `b` is a GSO packet that must be cut into segments before a port with (`port_gso`)
/// or without GSO support sends it: always when encapsulated (the inner IPv4 header is not right
/// after the Ethernet header), else when the port cannot send super-packets.
#[inline]
pub fn needs_segmenting(b: &PktBuf, port_gso: bool) -> bool {
    b.is_gso() && (!port_gso || b.gso_l3() != Some(ETH))
}

/// How many segments [`segment`] cuts the GSO packet `b` into (1 for anything else).
#[inline]
pub fn segment_count(b: &PktBuf) -> usize {
    if !b.is_gso() {
        return 1;
    }
    b.gso_l3()
        .and_then(|l3| Segments::of(b.data(), l3, b.gso_size()))
        .map_or(1, |c| c.count)
}

/// Length of one full segment of the GSO packet `b` (its headers plus one MSS), or its length
/// if it is an ordinary packet: what must fit a path's MTU.
#[inline]
pub fn segment_len(b: &PktBuf) -> usize {
    if !b.is_gso() {
        return b.len();
    }
    match b.gso_l3().and_then(|l3| tcp4_at(b.data(), l3)) {
        Some((l3, ihl, thl)) => (l3 + ihl + thl + b.gso_size()).min(b.len()),
        None => b.len(),
    }
}

/// For a GSO packet `b` about to be sent whole: sets its TCP checksum field to the pseudo-header
/// sum of the packet as it is now and returns the virtio-net header (`GSO_TCPV4`,
/// `NEEDS_CSUM`) to send in front of it. `None` if `b` is not a sendable GSO packet.
pub fn tx_header(b: &mut PktBuf) -> Option<[u8; VNET_HDR_LEN]> {
    let mss = u16::try_from(b.gso_size()).ok().filter(|&m| m != 0)?;
    let gso_type = b.gso_type();
    let l3 = b.gso_l3().filter(|&l| l == ETH)?;
    let d = b.data_mut();
    let (_, ihl, thl) = tcp4_at(d, l3)?;
    let ip = &mut d[l3..];
    if usize::from(u16::from_be_bytes([ip[2], ip[3]])) != ip.len() {
        return None;
    }
    let l4len = ip.len() - ihl;
    seed_tcp_csum(ip, ihl, l4len);
    Some(VnetHdr::tcp_gso(gso_type, l3 + ihl + thl, mss, l3 + ihl).to_bytes())
}

/// Writes the pseudo-header sum of the TCP/IPv4 packet at `ip` (`ihl` header bytes, `l4len`
/// TCP bytes) into its TCP checksum field: what a checksum left to the receiver or the kernel
/// to complete (`CHECKSUM_PARTIAL`) holds.
pub(crate) fn seed_tcp_csum(ip: &mut [u8], ihl: usize, l4len: usize) {
    let pseudo = checksum::sum(&ip[12..20]) + 6 + l4len as u32;
    ip[ihl + 16..ihl + 18].copy_from_slice(&checksum::fold(pseudo).to_be_bytes());
}

/// Why a GSO packet could not be cut up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegError {
    /// The headers are not TCP/IPv4 (over an optional outer IPv4 tunnel) any more.
    Bad,
    /// No ordinary buffer was free, or `push` refused one (segments already pushed stay).
    NoBuf,
}

/// Fixes the IPv4 total length, id and header checksum of the IPv4 header at the front of `ip`.
#[inline]
fn fix_ip(ip: &mut [u8], ihl: usize, total: usize, id: u16) {
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&id.to_be_bytes());
    ip[10..12].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(&ip[..ihl]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Writes a complete TCP checksum over `ip` (IPv4 header of `ihl` bytes, then TCP).
#[inline]
fn finish_tcp(ip: &mut [u8], ihl: usize) {
    let l4len = ip.len() - ihl;
    let pseudo = checksum::sum(&ip[12..20]) + 6 + l4len as u32;
    ip[ihl + 16..ihl + 18].copy_from_slice(&[0, 0]);
    let c = !checksum::fold(pseudo + checksum::sum(&ip[ihl..]));
    ip[ihl + 16..ihl + 18].copy_from_slice(&c.to_be_bytes());
}

/// Cuts the GSO packet `b` into segments of at most its MSS in ordinary buffers from `pool`,
/// each with its own IPv4 length, id and checksum, TCP sequence number, flags (CWR only on the
/// first, FIN and PSH only on the last) and complete TCP checksum; when the packet is
/// encapsulated (IPv4 outer header after the Ethernet header, UDP or GRE, MPLS), the outer
/// headers are repeated with their lengths, id (the inner id, as encapsulation sets it) and
/// checksum fixed. Each segment goes to `push`; returns how many did.
pub fn segment(
    b: &PktBuf,
    pool: &mut BufPool,
    mut push: impl FnMut(PktBuf) -> Result<(), PktBuf>,
) -> Result<usize, SegError> {
    let d = b.data();
    let l3 = b.gso_l3().ok_or(SegError::Bad)?;
    let cut = Segments::of(d, l3, b.gso_size()).ok_or(SegError::Bad)?;
    // The outer IPv4 header of an encapsulated packet, and where its UDP length is.
    let outer = if l3 > ETH {
        if l3 < ETH + 20 || d[12] != 0x08 || d[13] != 0x00 || d[ETH] >> 4 != 4 {
            return Err(SegError::Bad);
        }
        let oihl = usize::from(d[ETH] & 0x0f) * 4;
        if oihl < 20 || ETH + oihl > l3 {
            return Err(SegError::Bad);
        }
        let udp = (d[ETH + 9] == 17 && ETH + oihl + 8 <= l3).then_some(ETH + oihl + 4);
        Some((oihl, udp))
    } else {
        None
    };
    for i in 0..cut.count {
        let mut s = cut.build(d, i, pool).ok_or(SegError::NoBuf)?;
        if let Some((oihl, udp)) = outer {
            let len = s.len();
            let sd = s.data_mut();
            if let Some(u) = udp {
                sd[u..u + 2].copy_from_slice(&((len - ETH - oihl) as u16).to_be_bytes());
            }
            fix_ip(&mut sd[ETH..len], oihl, len - ETH, cut.id(i));
        }
        if let Err(s) = push(s) {
            pool.free(s);
            return Err(SegError::NoBuf);
        }
    }
    Ok(cut.count)
}

/// How one TCP/IPv4 super-packet is cut: shared by the GSO segmenter above and the port
/// receive path (`crate::port::vnet::segment_tcp4`), so both write segments the same way.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Segments {
    /// Offset of the (inner) IPv4 header.
    l3: usize,
    ihl: usize,
    /// Every header byte up to the TCP payload.
    hdrs: usize,
    mss: usize,
    /// Segments.
    pub(crate) count: usize,
    seq0: u32,
    id0: u16,
    flags0: u8,
}

impl Segments {
    /// The cut of frame `d` with TCP/IPv4 at `l3` into segments of at most `mss` payload bytes;
    /// None when the headers are not TCP/IPv4 or a segment would not fit a buffer. The IP total
    /// length of a super-packet may be 0 or stale: the frame length is the truth.
    pub(crate) fn of(d: &[u8], l3: usize, mss: usize) -> Option<Self> {
        let (_, ihl, thl) = tcp4_at(d, l3)?;
        let hdrs = l3 + ihl + thl;
        if mss == 0 || hdrs + mss > MAX_PKT_LEN {
            return None;
        }
        let ip = &d[l3..];
        Some(Self {
            l3,
            ihl,
            hdrs,
            mss,
            count: (d.len() - hdrs).div_ceil(mss).max(1),
            seq0: u32::from_be_bytes([ip[ihl + 4], ip[ihl + 5], ip[ihl + 6], ip[ihl + 7]]),
            id0: u16::from_be_bytes([ip[4], ip[5]]),
            flags0: ip[ihl + 13],
        })
    }

    /// The IPv4 id of segment `i`.
    pub(crate) fn id(&self, i: usize) -> u16 {
        self.id0.wrapping_add(i as u16)
    }

    /// Segment `i` of `d` in a buffer from `pool` (None when none is free): the headers, its
    /// payload, and the IPv4 length, id, checksum, TCP sequence number, flags and checksum.
    pub(crate) fn build(&self, d: &[u8], i: usize, pool: &mut BufPool) -> Option<PktBuf> {
        let payload = &d[self.hdrs..];
        let chunk =
            &payload[(i * self.mss).min(payload.len())..((i + 1) * self.mss).min(payload.len())];
        let mut s = pool.alloc()?;
        let area = s.rx_area();
        area[..self.hdrs].copy_from_slice(&d[..self.hdrs]);
        area[self.hdrs..self.hdrs + chunk.len()].copy_from_slice(chunk);
        let len = self.hdrs + chunk.len();
        s.set_len(len);
        let ipd = &mut s.data_mut()[self.l3..];
        fix_ip(ipd, self.ihl, len - self.l3, self.id(i));
        set_segment_seq_flags(
            ipd,
            self.ihl,
            i,
            self.count,
            self.mss,
            self.seq0,
            self.flags0,
        );
        finish_tcp(ipd, self.ihl);
        Some(s)
    }
}

/// Turns the GSO packet `b` (Ethernet first, not encapsulated) into its first segment, an
/// ordinary packet with complete checksums: what the agent gets when a super-packet is trapped
/// (it only needs the headers). False if the headers are not TCP/IPv4.
pub fn trim_to_first(b: &mut PktBuf) -> bool {
    let mss = b.gso_size();
    let Some(l3) = b.gso_l3() else {
        return false;
    };
    let Some((_, ihl, thl)) = tcp4_at(b.data(), l3) else {
        return false;
    };
    let hdrs = l3 + ihl + thl;
    if mss == 0 || hdrs + mss > MAX_PKT_LEN {
        return false;
    }
    let more = b.len() > hdrs + mss;
    b.truncate(hdrs + mss);
    b.clear_gso();
    let len = b.len();
    let ipd = &mut b.data_mut()[l3..];
    let id = u16::from_be_bytes([ipd[4], ipd[5]]);
    fix_ip(ipd, ihl, len - l3, id);
    if more {
        ipd[ihl + 13] &= !(0x01 | 0x08);
    }
    finish_tcp(ipd, ihl);
    true
}

/// Writes segment `i` (of `nseg`) of a TCP stream cut at `mss` payload bytes into the TCP
/// header at `ip[ihl..]`: its sequence number (`seq0` + i x mss) and flags (`flags0` with CWR
/// only on the first segment, FIN and PSH only on the last).
fn set_segment_seq_flags(
    ip: &mut [u8],
    ihl: usize,
    i: usize,
    nseg: usize,
    mss: usize,
    seq0: u32,
    flags0: u8,
) {
    let seq = seq0.wrapping_add((i * mss) as u32);
    ip[ihl + 4..ihl + 8].copy_from_slice(&seq.to_be_bytes());
    let mut fl = flags0;
    if i != 0 {
        fl &= !0x80;
    }
    if i + 1 != nseg {
        fl &= !(0x01 | 0x08);
    }
    ip[ihl + 13] = fl;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_frame(payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; ETH + 20 + 20 + payload];
        f[12] = 0x08;
        let total = (20 + 20 + payload) as u16;
        let ip = &mut f[ETH..];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[4..6].copy_from_slice(&100u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[10, 1, 1, 2]);
        ip[16..20].copy_from_slice(&[10, 1, 1, 3]);
        let c = checksum::checksum(&ip[..20]);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        ip[20 + 4..20 + 8].copy_from_slice(&1000u32.to_be_bytes());
        ip[20 + 12] = 0x50;
        ip[20 + 13] = 0x18;
        for (i, b) in ip[40..].iter_mut().enumerate() {
            *b = i as u8;
        }
        f
    }

    fn tcp_ok(ip: &[u8]) -> bool {
        let pseudo = checksum::sum(&ip[12..20]) + 6 + (ip.len() - 20) as u32;
        checksum::checksum(&ip[..20]) == 0
            && checksum::fold(pseudo + checksum::sum(&ip[20..])) == 0xffff
    }

    fn gso_buf(pool: &mut BufPool, payload: usize) -> PktBuf {
        let mut f = tcp_frame(payload);
        assert_eq!(check_frame(&mut f, 1448), Some(54));
        let mut b = pool.alloc_for(f.len()).expect("buffer");
        assert!(b.fill(&f));
        b.set_gso(1448, 1, ETH);
        b
    }

    #[test]
    fn segments_carry_their_own_headers_and_checksums() {
        let mut pool = BufPool::with_big(16, 1);
        let b = gso_buf(&mut pool, 5000);
        assert!(b.is_big() || b.len() <= MAX_PKT_LEN);
        assert_eq!(segment_len(&b), 54 + 1448);
        let mut out = Vec::new();
        let n = segment(&b, &mut pool, |s| {
            out.push(s);
            Ok(())
        });
        assert_eq!(n, Ok(4));
        let mut seq = 1000u32;
        for (i, s) in out.iter().enumerate() {
            let ip = &s.data()[ETH..];
            assert!(tcp_ok(ip), "segment {i}");
            assert_eq!(u16::from_be_bytes([ip[4], ip[5]]), 100 + i as u16);
            assert_eq!(u32::from_be_bytes([ip[24], ip[25], ip[26], ip[27]]), seq);
            assert_eq!(ip[33] & 0x08 != 0, i == 3, "PSH only on the last");
            assert_eq!(s.gso_size(), 0);
            seq += (s.len() - 54) as u32;
        }
        assert_eq!(seq, 6000);
    }

    #[test]
    fn encapsulated_segments_fix_the_outer_headers() {
        let mut pool = BufPool::with_big(16, 1);
        let mut b = gso_buf(&mut pool, 3000);
        // MPLSoUDP: outer IPv4 (20) + UDP (8) + label (4) replace nothing; the inner Ethernet
        // header is dropped as encapsulation does (inner IPv4 right after the label).
        b.pull_front(ETH).expect("eth");
        let front = b.push_front(ETH + 32).expect("headroom");
        front[..ETH + 32].fill(0);
        front[12] = 0x08;
        front[ETH] = 0x45;
        front[ETH + 8] = 64;
        front[ETH + 9] = 17;
        assert_eq!(b.gso_l3(), Some(ETH + 32));
        let mut out = Vec::new();
        assert_eq!(
            segment(&b, &mut pool, |s| {
                out.push(s);
                Ok(())
            }),
            Ok(3)
        );
        for s in &out {
            let d = s.data();
            let o = &d[ETH..];
            assert_eq!(usize::from(u16::from_be_bytes([o[2], o[3]])), d.len() - ETH);
            assert_eq!(checksum::checksum(&o[..20]), 0);
            assert_eq!(
                usize::from(u16::from_be_bytes([o[24], o[25]])),
                d.len() - ETH - 20
            );
            assert!(tcp_ok(&d[ETH + 32..]));
        }
        assert!(needs_segmenting(&b, true));
    }

    #[test]
    fn tx_header_describes_the_packet_and_seeds_the_checksum() {
        let mut pool = BufPool::with_big(4, 1);
        let mut b = gso_buf(&mut pool, 5000);
        assert!(!needs_segmenting(&b, true));
        assert!(needs_segmenting(&b, false));
        let h = tx_header(&mut b).expect("header");
        assert_eq!((h[0], h[1]), (crate::port::vnet::F_NEEDS_CSUM, 1));
        assert_eq!(u16::from_ne_bytes([h[4], h[5]]), 1448);
        assert_eq!(u16::from_ne_bytes([h[6], h[7]]), 34);
        let ip = &b.data()[ETH..];
        let pseudo = checksum::sum(&ip[12..20]) + 6 + (ip.len() - 20) as u32;
        assert_eq!(u16::from_be_bytes([ip[36], ip[37]]), checksum::fold(pseudo));
    }

    #[test]
    fn trimmed_packet_is_a_valid_first_segment() {
        let mut pool = BufPool::with_big(4, 1);
        let mut b = gso_buf(&mut pool, 5000);
        assert!(trim_to_first(&mut b));
        assert_eq!(b.len(), 54 + 1448);
        assert_eq!(b.gso_size(), 0);
        assert!(tcp_ok(&b.data()[ETH..]));
    }

    #[test]
    fn stale_total_length_is_fixed_and_fragments_refused() {
        let mut f = tcp_frame(3000);
        f[ETH + 2..ETH + 4].copy_from_slice(&[0, 0]);
        assert_eq!(check_frame(&mut f, 1448), Some(54));
        assert_eq!(
            usize::from(u16::from_be_bytes([f[ETH + 2], f[ETH + 3]])),
            f.len() - ETH
        );
        assert_eq!(checksum::checksum(&f[ETH..ETH + 20]), 0);
        f[ETH + 6] = 0x20;
        assert_eq!(check_frame(&mut f, 1448), None);
        assert_eq!(check_frame(&mut tcp_frame(100), 0), None);
    }
}
