//! Fragmentation of the inner IPv4 packet of a tunnelled frame (RFC 791), for packets without DF
//! that would exceed the fabric MTU once encapsulated.
//!
//! The nexthop stage encapsulates such a packet whole and marks it ([`PktMeta::frag`], with the
//! largest frame the fabric takes); [`Pipeline::output`], which owns the lcore's buffer pool,
//! splits it here: every fragment gets a copy of the outer headers (outer total length, header
//! checksum and UDP length adjusted), an inner header (the first keeps every option, the later
//! ones only options with the copy flag) and at most as much of the inner payload as fits, a
//! multiple of 8 bytes except in the last. All fragments keep the inner identification, TTL and
//! the outer UDP source port, so they take one path and reassemble at the far VM. This module
//! is the I/O-free core: it plans and writes bytes; the caller provides the buffers.
//!
//! [`PktMeta::frag`]: crate::batch::PktMeta::frag
//! [`Pipeline::output`]: super::Pipeline::output

use crate::wire::{checksum, ip_proto, ETHERNET_HEADER_LEN as ETH, UDP_HEADER_LEN};

/// Why a frame cannot be fragmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FragError {
    /// The outer headers (Ethernet, IPv4, MPLSoUDP or MPLSoGRE, labels) or the inner IPv4
    /// packet are not well formed.
    Malformed,
    /// The inner packet has DF set.
    DontFragment,
    /// Not even 8 bytes of payload fit next to the headers.
    MtuTooSmall,
}

impl std::fmt::Display for FragError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FragError::Malformed => "malformed tunnel frame",
            FragError::DontFragment => "inner packet has DF set",
            FragError::MtuTooSmall => "MTU too small for 8 bytes of payload",
        })
    }
}

impl std::error::Error for FragError {}

/// Longest inner IPv4 header.
const MAX_HL: usize = 60;

/// How one tunnelled frame splits into fragments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Bytes of outer headers in front of the inner packet.
    outer_len: usize,
    /// Inner header length (the first fragment's).
    hl: usize,
    /// Header length of the later fragments (copied options only, padded).
    later_hl: usize,
    /// Inner payload bytes.
    payload: usize,
    /// Payload bytes in the first fragment (a multiple of 8).
    first_data: usize,
    /// Payload bytes in each later fragment but the last (a multiple of 8).
    later_data: usize,
    /// Fragments.
    count: usize,
}

impl Plan {
    /// Number of fragments.
    #[inline]
    pub fn count(&self) -> usize {
        self.count
    }

    /// Bytes of outer headers in front of the inner packet.
    pub fn outer_len(&self) -> usize {
        self.outer_len
    }

    /// (offset into the inner payload, length) of fragment `n`'s data.
    fn range(&self, n: usize) -> (usize, usize) {
        if n == 0 {
            return (0, self.first_data.min(self.payload));
        }
        let start = self.first_data + (n - 1) * self.later_data;
        (start, self.later_data.min(self.payload - start))
    }
}

/// Bytes of outer headers of the encapsulated frame `frame`: Ethernet, IPv4, then UDP (MPLSoUDP)
/// or GRE (MPLSoGRE, with its optional words), then MPLS labels up to bottom of stack.
fn outer_len(frame: &[u8]) -> Option<usize> {
    let ip = frame.get(ETH..ETH + 20)?;
    let ohl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ohl < 20 {
        return None;
    }
    let l4 = ETH + ohl;
    let mut at = match ip[9] {
        ip_proto::UDP => l4 + UDP_HEADER_LEN,
        ip_proto::GRE => {
            let flags = *frame.get(l4)?;
            let opt = 4
                * (usize::from(flags & 0x80 != 0)
                    + usize::from(flags & 0x20 != 0)
                    + usize::from(flags & 0x10 != 0));
            l4 + 4 + opt
        }
        _ => return None,
    };
    loop {
        let label = frame.get(at..at + 4)?;
        at += 4;
        if label[2] & 0x01 != 0 {
            return Some(at);
        }
    }
}

/// Copies the options of the IPv4 header `hdr` that carry the copy flag into `out` (when given)
/// and returns their length, or `None` if the options are malformed.
fn copied_options(hdr: &[u8], mut out: Option<&mut [u8]>) -> Option<usize> {
    let mut i = 20;
    let mut n = 0;
    while i < hdr.len() {
        match hdr[i] {
            // End of options.
            0 => break,
            // No operation: not copied.
            1 => i += 1,
            t => {
                let len = usize::from(*hdr.get(i + 1)?);
                if len < 2 || i + len > hdr.len() {
                    return None;
                }
                if t & 0x80 != 0 {
                    if let Some(o) = out.as_deref_mut() {
                        o.get_mut(n..n + len)?.copy_from_slice(&hdr[i..i + len]);
                    }
                    n += len;
                }
                i += len;
            }
        }
    }
    Some(n)
}

/// Plans the fragmentation of the encapsulated `frame` so that every fragment's frame is at most
/// `max_frame` bytes.
pub fn plan(frame: &[u8], max_frame: usize) -> Result<Plan, FragError> {
    let outer = outer_len(frame).ok_or(FragError::Malformed)?;
    let inner = frame.get(outer..).ok_or(FragError::Malformed)?;
    let h = inner.get(..20).ok_or(FragError::Malformed)?;
    let hl = usize::from(h[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    if h[0] >> 4 != 4 || hl < 20 || total < hl || total > inner.len() {
        return Err(FragError::Malformed);
    }
    let flags = u16::from_be_bytes([h[6], h[7]]);
    if flags & 0x4000 != 0 {
        return Err(FragError::DontFragment);
    }
    let copied = copied_options(&inner[..hl], None).ok_or(FragError::Malformed)?;
    let later_hl = (20 + copied).next_multiple_of(4);
    let payload = total - hl;
    let offset = usize::from(flags & 0x1fff) * 8;
    if offset + payload > 0xffff {
        return Err(FragError::Malformed);
    }
    let room = |hdr: usize| max_frame.saturating_sub(outer + hdr) & !7;
    let (first_data, later_data) = (room(hl), room(later_hl));
    if first_data == 0 || later_data == 0 {
        return Err(FragError::MtuTooSmall);
    }
    let count = if payload <= first_data {
        1
    } else {
        1 + (payload - first_data).div_ceil(later_data)
    };
    Ok(Plan {
        outer_len: outer,
        hl,
        later_hl,
        payload,
        first_data,
        later_data,
        count,
    })
}

/// Writes fragment `n` (of `plan`, made for `frame`) as a whole frame at the start of `out` and
/// returns its length; 0 if `out` is too small or `n` out of range.
pub fn write(frame: &[u8], plan: &Plan, n: usize, out: &mut [u8]) -> usize {
    if n >= plan.count {
        return 0;
    }
    let (start, len) = plan.range(n);
    let hl = if n == 0 { plan.hl } else { plan.later_hl };
    let outer = plan.outer_len;
    let size = outer + hl + len;
    let (Some(out), Some(inner)) = (out.get_mut(..size), frame.get(outer..)) else {
        return 0;
    };
    // Outer headers: total length, checksum, UDP length for this size.
    out[..outer].copy_from_slice(&frame[..outer]);
    let ohl = usize::from(out[ETH] & 0x0f) * 4;
    let outer_total = (size - ETH) as u16;
    out[ETH + 2..ETH + 4].copy_from_slice(&outer_total.to_be_bytes());
    set_header_checksum(&mut out[ETH..ETH + ohl]);
    if out[ETH + 9] == ip_proto::UDP {
        let udp = &mut out[ETH + ohl..ETH + ohl + UDP_HEADER_LEN];
        udp[4..6].copy_from_slice(&(outer_total - ohl as u16).to_be_bytes());
        // No UDP checksum (IPv4 allows it; the encapsulation never sets one).
        udp[6..8].copy_from_slice(&[0, 0]);
    }
    // Inner header.
    let ih = &mut out[outer..outer + hl];
    if n == 0 {
        ih.copy_from_slice(&inner[..hl]);
    } else {
        ih[..20].copy_from_slice(&inner[..20]);
        ih[20..].fill(0);
        let mut opts = [0u8; MAX_HL];
        let copied = copied_options(&inner[..plan.hl], Some(&mut opts)).unwrap_or(0);
        ih[20..20 + copied].copy_from_slice(&opts[..copied]);
        ih[0] = 0x40 | (hl / 4) as u8;
    }
    let flags = u16::from_be_bytes([inner[6], inner[7]]);
    let more = n + 1 < plan.count || flags & 0x2000 != 0;
    let offset = (flags & 0x1fff) + (start / 8) as u16;
    let word = if more { 0x2000 } else { 0 } | offset;
    ih[2..4].copy_from_slice(&((hl + len) as u16).to_be_bytes());
    ih[6..8].copy_from_slice(&word.to_be_bytes());
    set_header_checksum(ih);
    // Payload slice.
    let data = &inner[plan.hl + start..plan.hl + start + len];
    out[outer + hl..].copy_from_slice(data);
    size
}

/// Recomputes the checksum of the IPv4 header `h` (its whole length).
fn set_header_checksum(h: &mut [u8]) {
    h[10] = 0;
    h[11] = 0;
    let c = checksum::checksum(h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{IpNumber, Ipv4Header, Ipv4Options};

    /// An MPLSoUDP frame (outer template as the encapsulation writes it) around an inner UDP
    /// packet of `payload` bytes with `options` (id 0x1234, DF clear, TTL 63).
    fn tunnelled(payload: usize, options: &[u8], gre: bool) -> Vec<u8> {
        let body: Vec<u8> = (0..payload + 8).map(|i| (i * 7 + 3) as u8).collect();
        let mut ih = Ipv4Header::new(
            body.len() as u16,
            63,
            IpNumber::UDP,
            [10, 1, 1, 3],
            [10, 1, 1, 5],
        )
        .expect("ip");
        ih.identification = 0x1234;
        ih.dont_fragment = false;
        ih.options = Ipv4Options::try_from(options).expect("options");
        ih.set_payload_len(body.len()).expect("length");
        ih.header_checksum = ih.calc_header_checksum();
        let mut inner = Vec::new();
        ih.write(&mut inner).expect("write");
        inner.extend_from_slice(&body);
        let mut f = vec![
            0x52, 0x54, 0, 0xcc, 0xdd, 1, 0x52, 0x54, 0, 0xaa, 0xbb, 1, 8, 0,
        ];
        let shim = if gre { 4 } else { 8 };
        let total = (20 + shim + 4 + inner.len()) as u16;
        let mut oh = Ipv4Header::new(
            total - 20,
            64,
            if gre { IpNumber::GRE } else { IpNumber::UDP },
            [192, 168, 100, 1],
            [192, 168, 100, 2],
        )
        .expect("outer");
        oh.identification = 0x1234;
        oh.dont_fragment = false;
        oh.header_checksum = oh.calc_header_checksum();
        oh.write(&mut f).expect("outer");
        if gre {
            f.extend_from_slice(&[0, 0, 0x88, 0x47]);
        } else {
            f.extend_from_slice(&[0xc1, 0x23, 0x19, 0xeb]);
            f.extend_from_slice(&(total - 20).to_be_bytes());
            f.extend_from_slice(&[0, 0]);
        }
        f.extend_from_slice(&((25u32 << 12) | 0x100 | 63).to_be_bytes());
        f.extend_from_slice(&inner);
        f
    }

    fn fragments(frame: &[u8], max: usize) -> Vec<Vec<u8>> {
        let p = plan(frame, max).expect("plan");
        (0..p.count())
            .map(|n| {
                let mut out = vec![0u8; 2048];
                let len = write(frame, &p, n, &mut out);
                assert!(len > 0 && len <= max, "fragment {n}: {len} > {max}");
                out.truncate(len);
                out
            })
            .collect()
    }

    /// Checks every fragment's headers and returns the reassembled inner payload.
    fn reassemble(frags: &[Vec<u8>], outer: usize) -> (Vec<u8>, Vec<Ipv4Header>) {
        let mut data = Vec::new();
        let mut hdrs = Vec::new();
        for (i, f) in frags.iter().enumerate() {
            let (oh, _) = Ipv4Header::from_slice(&f[ETH..]).expect("outer");
            assert_eq!(oh.calc_header_checksum(), oh.header_checksum, "outer sum");
            assert_eq!(usize::from(oh.total_len), f.len() - ETH);
            assert!(!oh.dont_fragment && !oh.more_fragments);
            if oh.protocol == IpNumber::UDP {
                assert_eq!(
                    usize::from(u16::from_be_bytes([f[ETH + 24], f[ETH + 25]])),
                    f.len() - ETH - 20
                );
            }
            let (ih, rest) = Ipv4Header::from_slice(&f[outer..]).expect("inner");
            assert_eq!(ih.calc_header_checksum(), ih.header_checksum, "inner sum");
            assert_eq!(usize::from(ih.total_len), f.len() - outer);
            assert_eq!(ih.identification, 0x1234);
            assert_eq!(ih.more_fragments, i + 1 < frags.len());
            assert_eq!(usize::from(ih.fragment_offset.value()) * 8, data.len());
            if i + 1 < frags.len() {
                assert_eq!(rest.len() % 8, 0);
            }
            data.extend_from_slice(rest);
            hdrs.push(ih);
        }
        (data, hdrs)
    }

    #[test]
    fn splits_mplsoudp_into_fragments_that_fit_and_reassemble() {
        let frame = tunnelled(1472, &[], false);
        let outer = 14 + 20 + 8 + 4;
        let orig = frame[outer + 20..].to_vec();
        for max in [1514, 1000, 576, 100] {
            let frags = fragments(&frame, max);
            let (data, _) = reassemble(&frags, outer);
            assert_eq!(data, orig, "max {max}");
            // No fragment smaller than needed: all but the last are as full as 8-byte units allow.
            assert!(frags[0].len() + 8 > max);
        }
        assert_eq!(fragments(&frame, 1514).len(), 2);
    }

    #[test]
    fn splits_mplsogre_too() {
        let frame = tunnelled(1472, &[], true);
        let outer = 14 + 20 + 4 + 4;
        let frags = fragments(&frame, 1514);
        assert_eq!(frags.len(), 2);
        assert_eq!(reassemble(&frags, outer).0, frame[outer + 20..].to_vec());
    }

    #[test]
    fn only_copied_options_go_into_later_fragments() {
        // Record route (7, not copied, 7 bytes) + NOP, then a copied option (0x94 router alert,
        // 4 bytes): 12 bytes of options, header 32.
        let opts = [7, 7, 4, 0, 0, 0, 0, 1, 0x94, 4, 0, 0];
        let frame = tunnelled(600, &opts, false);
        let outer = 14 + 20 + 8 + 4;
        let frags = fragments(&frame, 300);
        let (data, hdrs) = reassemble(&frags, outer);
        assert_eq!(data, frame[outer + 32..].to_vec());
        assert_eq!(hdrs[0].options.as_slice(), &opts[..]);
        for h in &hdrs[1..] {
            assert_eq!(h.options.as_slice(), &[0x94, 4, 0, 0]);
        }
    }

    #[test]
    fn a_fragment_is_fragmented_within_its_offset() {
        let mut frame = tunnelled(1000, &[], false);
        let outer = 14 + 20 + 8 + 4;
        // Make the inner packet a middle fragment: offset 100 (800 bytes), MF set.
        frame[outer + 6..outer + 8].copy_from_slice(&(0x2000u16 | 100).to_be_bytes());
        set_header_checksum(&mut frame[outer..outer + 20]);
        let p = plan(&frame, 600).expect("plan");
        assert!(p.count() > 1);
        let mut data = Vec::new();
        for n in 0..p.count() {
            let mut out = vec![0u8; 2048];
            let len = write(&frame, &p, n, &mut out);
            let (ih, rest) = Ipv4Header::from_slice(&out[outer..len]).expect("inner");
            assert!(
                ih.more_fragments,
                "the original had MF: every piece keeps it"
            );
            assert_eq!(
                usize::from(ih.fragment_offset.value()),
                100 + data.len() / 8
            );
            data.extend_from_slice(rest);
        }
        assert_eq!(data, frame[outer + 20..].to_vec());
    }

    #[test]
    fn refusals() {
        let frame = tunnelled(1472, &[], false);
        let outer = 14 + 20 + 8 + 4;
        let mut df = frame.clone();
        df[outer + 6] |= 0x40;
        assert_eq!(plan(&df, 1514), Err(FragError::DontFragment));
        assert_eq!(plan(&frame, outer + 20 + 7), Err(FragError::MtuTooSmall));
        assert_eq!(plan(&frame[..40], 1514), Err(FragError::Malformed));
        let mut bad = frame.clone();
        bad[outer] = 0x44;
        assert_eq!(plan(&bad, 1514), Err(FragError::Malformed));
        let mut opts = tunnelled(100, &[0x94, 4, 0, 0], false);
        opts[outer + 21] = 9; // option longer than the header
        assert_eq!(plan(&opts, 1514), Err(FragError::Malformed));
        let p = plan(&frame, 1514).expect("plan");
        assert_eq!(write(&frame, &p, 2, &mut [0u8; 2048]), 0);
        assert_eq!(write(&frame, &p, 0, &mut [0u8; 100]), 0);
    }
}
