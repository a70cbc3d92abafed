//! Static 1:1 NAT of an IPv4 packet in place (floating IPs), with every checksum it touches
//! updated incrementally (RFC 1624): the IP header, TCP/UDP (pseudo-header), and for ICMP errors
//! the embedded header, its checksum, its transport checksum, and the ICMP checksum over all of it.

use crate::wire::{ip_proto, l4};

/// Which address to rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Source (SNAT).
    Src,
    /// Destination (DNAT).
    Dst,
}

impl Side {
    fn offset(self) -> usize {
        match self {
            Side::Src => 12,
            Side::Dst => 16,
        }
    }
    fn other(self) -> Side {
        match self {
            Side::Src => Side::Dst,
            Side::Dst => Side::Src,
        }
    }
}

#[inline]
fn rd32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
fn rd16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Rewrites the `side` address of the IPv4 packet at the start of `ip` (already validated by
/// [`crate::wire::ipv4::check`]) to `new`. Returns the old address.
///
/// The header and transport checksums cover the address with the same weight, so the
/// one's-complement difference `~old + new` is computed once and added to each (RFC 1624).
#[inline]
pub fn rewrite(ip: &mut [u8], side: Side, new: u32) -> u32 {
    let len = ip.len();
    let Some(h) = ip.first_chunk_mut::<20>() else {
        return 0;
    };
    let Ok((hl, total)) = crate::wire::ipv4::lengths(h, len) else {
        return 0;
    };
    let at = side.offset();
    let old = u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    if old == new {
        return old;
    }
    h[at..at + 4].copy_from_slice(&new.to_be_bytes());
    let delta = addr_delta(old, new);
    let ck = add_delta(u16::from_be_bytes([h[10], h[11]]), delta);
    h[10..12].copy_from_slice(&ck.to_be_bytes());
    let first_fragment = u16::from_be_bytes([h[6], h[7]]) & 0x1fff == 0;
    let proto = h[9];
    if !first_fragment {
        return old;
    }
    let seg = &mut ip[hl..total];
    match proto {
        ip_proto::TCP if seg.len() >= 18 => {
            let c = add_delta(u16::from_be_bytes([seg[16], seg[17]]), delta);
            seg[16..18].copy_from_slice(&c.to_be_bytes());
        }
        ip_proto::UDP if seg.len() >= 8 => {
            // Zero means "no checksum" and stays zero; a computed zero is sent as 0xffff.
            let c = u16::from_be_bytes([seg[6], seg[7]]);
            if c != 0 {
                let c = match add_delta(c, delta) {
                    0 => 0xffff,
                    c => c,
                };
                seg[6..8].copy_from_slice(&c.to_be_bytes());
            }
        }
        ip_proto::ICMP if seg.len() >= 8 && l4::icmp_is_error(seg[0]) => {
            // The embedded packet travelled the other way: what is our destination now was its
            // source. Translate the same address there.
            rewrite_embedded(seg, side.other(), old, new);
        }
        _ => {}
    }
    old
}

/// `~old + new` over the two 16-bit halves of an address, unfolded.
#[inline(always)]
fn addr_delta(old: u32, new: u32) -> u32 {
    u32::from(!(old >> 16) as u16) + u32::from(!(old as u16)) + (new >> 16) + (new & 0xffff)
}

/// A checksum after its covered data changed by `delta` ([`addr_delta`]): RFC 1624 eqn. 3.
#[inline(always)]
fn add_delta(csum: u16, delta: u32) -> u16 {
    !crate::wire::checksum::fold(u32::from(!csum) + delta)
}

/// Translates `old` -> `new` at `side` of the IP header embedded in the ICMP error `icmp`,
/// keeping the ICMP checksum right for every word changed.
fn rewrite_embedded(icmp: &mut [u8], side: Side, old: u32, new: u32) {
    let inner_at = 8;
    if icmp.len() < inner_at + 20 {
        return;
    }
    let hl = usize::from(icmp[inner_at] & 0x0f) * 4;
    if icmp[inner_at] >> 4 != 4 || hl < 20 || icmp.len() < inner_at + hl {
        return;
    }
    let a = inner_at + side.offset();
    if rd32(icmp, a) != old {
        return;
    }
    let mut icmp_ck = rd16(icmp, 2);
    let set16 = |b: &mut [u8], at: usize, v: u16, ck: &mut u16| {
        let o = rd16(b, at);
        b[at..at + 2].copy_from_slice(&v.to_be_bytes());
        *ck = crate::wire::checksum::update16(*ck, o, v);
    };
    // Inner address and inner header checksum.
    let inner_ck_at = inner_at + 10;
    let inner_ck = crate::wire::checksum::update32(rd16(icmp, inner_ck_at), old, new);
    set16(icmp, a, (new >> 16) as u16, &mut icmp_ck);
    set16(icmp, a + 2, new as u16, &mut icmp_ck);
    set16(icmp, inner_ck_at, inner_ck, &mut icmp_ck);
    // Inner transport checksum, when the quoted bytes include it.
    let proto = icmp[inner_at + 9];
    let l4_at = inner_at + hl;
    if let Some(off) = l4::checksum_offset(proto, &icmp[l4_at..]) {
        if proto == ip_proto::TCP || proto == ip_proto::UDP {
            let at = l4_at + off;
            let o = rd16(icmp, at);
            let n = if proto == ip_proto::UDP {
                crate::wire::checksum::update32_udp(o, old, new)
            } else {
                crate::wire::checksum::update32(o, old, new)
            };
            set16(icmp, at, n, &mut icmp_ck);
        }
    }
    icmp[2..4].copy_from_slice(&icmp_ck.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{IcmpEchoHeader, Icmpv4Type, PacketBuilder};

    fn udp_packet() -> Vec<u8> {
        let b = PacketBuilder::ipv4([10, 1, 1, 3], [203, 0, 113, 9], 64).udp(4000, 53);
        let mut v = Vec::new();
        b.write(&mut v, b"query").expect("write");
        v
    }

    fn verify_all(ip: &[u8]) {
        let p = etherparse::SlicedPacket::from_ip(ip).expect("parses");
        let net = match p.net {
            Some(etherparse::NetSlice::Ipv4(n)) => n,
            _ => panic!("not ipv4"),
        };
        let h = net.header().to_header();
        assert_eq!(h.calc_header_checksum(), h.header_checksum, "ip checksum");
        match p.transport {
            Some(etherparse::TransportSlice::Udp(u)) => {
                let c = u
                    .to_header()
                    .calc_checksum_ipv4(&h, u.payload())
                    .expect("sum");
                assert_eq!(c, u.checksum(), "udp checksum");
            }
            Some(etherparse::TransportSlice::Icmpv4(i)) => {
                let c = i.header().icmp_type.calc_checksum(i.payload());
                assert_eq!(c, i.checksum(), "icmp checksum");
            }
            _ => {}
        }
    }

    #[test]
    fn snat_then_dnat_is_identity() {
        let orig = udp_packet();
        let mut p = orig.clone();
        assert_eq!(rewrite(&mut p, Side::Src, 0xc633_6405), 0x0a01_0103);
        verify_all(&p);
        assert_eq!(rewrite(&mut p, Side::Src, 0x0a01_0103), 0xc633_6405);
        assert_eq!(p, orig);
    }

    #[test]
    fn icmp_error_embedded_header_is_translated() {
        // The VM (10.1.1.3, reached as floating IP 198.51.100.5) sent UDP to 203.0.113.9; an
        // error comes back to the floating IP. DNAT must fix the outer dst and the quoted src.
        let mut quoted = udp_packet();
        rewrite(&mut quoted, Side::Src, 0xc633_6405);
        let b = PacketBuilder::ipv4([203, 0, 113, 9], [198, 51, 100, 5], 64).icmpv4(
            Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port),
        );
        let mut err = Vec::new();
        b.write(&mut err, &quoted).expect("write");
        verify_all(&err);
        rewrite(&mut err, Side::Dst, 0x0a01_0103);
        verify_all(&err);
        let inner = &err[28..];
        assert_eq!(&inner[12..16], &[10, 1, 1, 3], "quoted source translated");
        assert_eq!(&inner[16..20], &[203, 0, 113, 9]);
        let q = etherparse::SlicedPacket::from_ip(inner).expect("quoted parses");
        if let Some(etherparse::TransportSlice::Udp(u)) = q.transport {
            let h = etherparse::Ipv4HeaderSlice::from_slice(inner)
                .expect("hdr")
                .to_header();
            assert_eq!(h.calc_header_checksum(), h.header_checksum);
            assert_eq!(
                u.to_header()
                    .calc_checksum_ipv4(&h, u.payload())
                    .expect("sum"),
                u.checksum()
            );
        } else {
            panic!("quoted udp");
        }
    }

    #[test]
    fn echo_dnat_keeps_icmp_checksum() {
        let b =
            PacketBuilder::ipv4([203, 0, 113, 9], [198, 51, 100, 5], 64).icmpv4_echo_request(7, 1);
        let mut v = Vec::new();
        b.write(&mut v, b"ping").expect("write");
        rewrite(&mut v, Side::Dst, 0x0a01_0103);
        verify_all(&v);
        let _ = IcmpEchoHeader { id: 7, seq: 1 };
    }

    #[test]
    fn non_first_fragment_rewrites_only_ip() {
        let mut v = udp_packet();
        v[6] = 0x00;
        v[7] = 0x10; // offset 16*8
        let mut h = etherparse::Ipv4HeaderSlice::from_slice(&v)
            .expect("hdr")
            .to_header();
        h.header_checksum = h.calc_header_checksum();
        v[10..12].copy_from_slice(&h.header_checksum.to_be_bytes());
        let l4_before = v[20..].to_vec();
        rewrite(&mut v, Side::Src, 1);
        assert_eq!(&v[20..], &l4_before[..]);
        let h = etherparse::Ipv4HeaderSlice::from_slice(&v)
            .expect("hdr")
            .to_header();
        assert_eq!(h.calc_header_checksum(), h.header_checksum);
    }
}
