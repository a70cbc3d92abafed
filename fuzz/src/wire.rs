//! The dataplane's zero-copy wire views (`vrouter_dataplane::wire`) over arbitrary bytes.
//!
//! The input is tried as an Ethernet frame and, at offset 0 and past an Ethernet header, as an
//! IPv4 packet, an ARP packet and an MPLS label stack entry. Besides "no accessor panics once
//! `new_checked` said yes", it checks the views against a slow reference: the fast header
//! checksum verification against RFC 1071 summing, and every incremental checksum update (TTL,
//! addresses, transport pseudo-header) against a recomputation.

use vrouter_dataplane::wire::{
    checksum, ethernet, ip_proto, ipv4, l4, ArpPacket, EthernetFrame, Ipv4Packet, MacAddr,
    MplsLabel, WireError, ETHERNET_HEADER_LEN, IPV4_HEADER_LEN,
};

/// Runs every view over `data` and over its Ethernet payload.
pub fn run(data: &[u8]) {
    if let Ok(f) = EthernetFrame::new_checked(data) {
        let hdr = ethernet::header_bytes(f.dst(), f.src(), f.ethertype());
        assert_eq!(&hdr[..], &data[..ETHERNET_HEADER_LEN], "header re-encodes");
        assert_eq!(f.payload().len(), data.len() - ETHERNET_HEADER_LEN);
        let _ = ethernet::EtherType::is_vlan_tag(f.ethertype());
        views(f.payload());
    }
    views(data);
}

fn views(b: &[u8]) {
    ipv4_view(b);
    arp_view(b);
    if let Ok(l) = MplsLabel::parse(b) {
        let w = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        assert_eq!(l.word(), w, "MPLS entry re-encodes");
        assert_eq!(MplsLabel::from_word(w), l);
    } else {
        assert!(b.len() < 4, "MPLS parse refused {} bytes", b.len());
    }
}

/// Checks the IPv4 view, the length rules and the fast checksum test against RFC 1071.
fn ipv4_view(b: &[u8]) {
    let Some(h) = b.first_chunk::<IPV4_HEADER_LEN>() else {
        assert_eq!(ipv4::check(b), Err(WireError::Truncated));
        assert!(Ipv4Packet::new_checked(b).is_err());
        return;
    };
    let lengths = ipv4::lengths(h, b.len());
    assert_eq!(
        ipv4::check(b),
        lengths.map(|_| ()),
        "check and lengths agree"
    );
    let verified = ipv4::lengths_verified(h, b);
    let Ok((hl, total)) = lengths else {
        assert_eq!(verified, lengths, "a malformed header stays malformed");
        assert!(Ipv4Packet::new_checked(b).is_err());
        return;
    };
    assert!(hl >= IPV4_HEADER_LEN && hl <= total && total <= b.len());
    // RFC 1071: a header verifies when its one's-complement sum is all ones.
    let reference = checksum::checksum(&b[..hl]) == 0;
    match verified {
        Ok(v) => assert!(reference && v == (hl, total), "accepted a bad checksum"),
        Err(WireError::Checksum) => assert!(!reference, "refused a good checksum"),
        Err(e) => panic!("lengths accepted, lengths_verified said {e:?}"),
    }
    let Ok(p) = Ipv4Packet::new_checked(b) else {
        panic!("lengths accepted, new_checked refused");
    };
    assert_eq!((p.header_len(), usize::from(p.total_len())), (hl, total));
    assert_eq!(p.payload().len(), total - hl);
    assert_eq!(
        p.verify_checksum(),
        reference,
        "verify_checksum vs RFC 1071"
    );
    let _ = (
        p.tos(),
        p.ident(),
        p.dont_frag(),
        p.more_frags(),
        p.frag_offset(),
    );
    let _ = (p.ttl(), p.checksum(), ipv4::fmt_addr(p.src()), p.dst());
    if reference {
        rewrites(b, hl, total);
    }
}

/// On a copy of a packet whose header verifies: each incremental update keeps it verifying, and
/// the transport checksum too when it verified before.
fn rewrites(b: &[u8], hl: usize, total: usize) {
    let mut copy = b[..total].to_vec();
    let proto = copy[9];
    let l4_ok_before = l4_checksum_ok(&copy, hl);
    let mut p = Ipv4Packet::new_checked(&mut copy[..]).expect("checked above");
    let (src, dst) = (p.src(), p.dst());
    p.decrement_ttl();
    p.set_src_update(dst.rotate_left(7) ^ 0x0a00_0001);
    p.set_dst_update(src.wrapping_add(0x0101));
    let (new_src, new_dst) = (p.src(), p.dst());
    l4::update_for_addr(proto, p.payload_mut(), src, new_src);
    l4::update_for_addr(proto, p.payload_mut(), dst, new_dst);
    assert!(
        p.verify_checksum(),
        "incremental IPv4 update broke the checksum"
    );
    assert_eq!(checksum::checksum(&copy[..hl]), 0, "and RFC 1071 agrees");
    if l4_ok_before == Some(true) {
        assert_eq!(
            l4_checksum_ok(&copy, hl),
            Some(true),
            "incremental {proto} update broke the transport checksum"
        );
    }
    let l4b = &copy[hl..];
    let _ = (l4::ports(proto, l4b), l4::icmp_is_error(proto));
    if let Some(off) = l4::checksum_offset(proto, l4b) {
        assert!(off + 2 <= l4b.len());
    }
}

/// Whether the TCP or UDP checksum of the packet `ip` (header `hl` bytes) verifies with its
/// pseudo-header; `None` for other protocols, a short segment or UDP without a checksum.
fn l4_checksum_ok(ip: &[u8], hl: usize) -> Option<bool> {
    let proto = ip[9];
    let seg = &ip[hl..];
    let off = match proto {
        ip_proto::TCP => 16,
        ip_proto::UDP => 6,
        _ => return None,
    };
    let c = seg.get(off..off + 2)?;
    if proto == ip_proto::UDP && c == [0, 0] {
        return None;
    }
    let len = u16::try_from(seg.len()).ok()?;
    let mut pseudo = Vec::with_capacity(12 + seg.len());
    pseudo.extend_from_slice(&ip[12..20]);
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&len.to_be_bytes());
    pseudo.extend_from_slice(seg);
    Some(checksum::checksum(&pseudo) == 0)
}

/// The ARP view: accessors, and a reply made in place swaps the addresses as it should.
fn arp_view(b: &[u8]) {
    let Ok(a) = ArpPacket::new_checked(b) else {
        return;
    };
    let (sha, spa, tpa) = (a.sha(), a.spa(), a.tpa());
    let _ = a.op();
    let mut copy = b.to_vec();
    let mut r = ArpPacket::new_checked(&mut copy[..]).expect("same bytes");
    r.make_reply(MacAddr::VROUTER);
    assert_eq!(r.op(), 2, "reply opcode");
    assert_eq!((r.sha(), r.spa(), r.tpa()), (MacAddr::VROUTER, tpa, spa));
    assert_eq!(
        &copy[18..24],
        &sha.0,
        "target hardware address is the asker's"
    );
}
