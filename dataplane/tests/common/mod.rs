//! Packet builders for the dataplane tests (etherparse builds, so the bytes come from a codec
//! we did not write).
#![allow(dead_code, clippy::too_many_arguments)]

use etherparse::{Ethernet2Header, IpNumber, Ipv4Header, PacketBuilder, UdpHeader};
use vrouter_dataplane::wire::MacAddr;

pub fn ip4(a: u32) -> [u8; 4] {
    a.to_be_bytes()
}

/// Ethernet + IPv4 + UDP from a VM.
pub fn udp_frame(
    smac: MacAddr,
    dmac: MacAddr,
    src: u32,
    dst: u32,
    ttl: u8,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(smac.0, dmac.0)
        .ipv4(ip4(src), ip4(dst), ttl)
        .udp(sport, dport);
    let mut v = Vec::new();
    b.write(&mut v, payload).expect("build udp");
    v
}

/// Ethernet + IPv4 + TCP SYN.
pub fn tcp_frame(
    smac: MacAddr,
    dmac: MacAddr,
    src: u32,
    dst: u32,
    ttl: u8,
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(smac.0, dmac.0)
        .ipv4(ip4(src), ip4(dst), ttl)
        .tcp(sport, dport, 1000, 64240)
        .syn();
    let mut v = Vec::new();
    b.write(&mut v, &[]).expect("build tcp");
    v
}

/// Ethernet + IPv4 + ICMP echo request.
pub fn ping_frame(smac: MacAddr, dmac: MacAddr, src: u32, dst: u32, ttl: u8, id: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(smac.0, dmac.0)
        .ipv4(ip4(src), ip4(dst), ttl)
        .icmpv4_echo_request(id, 1);
    let mut v = Vec::new();
    b.write(&mut v, b"vrouter-test").expect("build icmp");
    v
}

/// Sets the IPv4 identification of an Ethernet+IPv4 frame and fixes the header checksum.
pub fn set_ip_id(frame: &mut [u8], id: u16) {
    frame[18..20].copy_from_slice(&id.to_be_bytes());
    frame[24] = 0;
    frame[25] = 0;
    let c = vrouter_dataplane::wire::checksum::checksum(&frame[14..34]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
}

/// An ARP request from a VM.
pub fn arp_request(sha: MacAddr, spa: u32, tpa: u32) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&[0xff; 6]);
    v.extend_from_slice(&sha.0);
    v.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    v.extend_from_slice(&sha.0);
    v.extend_from_slice(&ip4(spa));
    v.extend_from_slice(&[0; 6]);
    v.extend_from_slice(&ip4(tpa));
    v
}

/// Outer Ethernet + IPv4 + UDP(dport) + one MPLS label + `inner` (an IPv4 packet).
pub fn mpls_udp_frame(
    smac: MacAddr,
    dmac: MacAddr,
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
    label: u32,
    ttl: u8,
    inner: &[u8],
) -> Vec<u8> {
    let mut payload = ((label << 12) | 0x100 | u32::from(ttl))
        .to_be_bytes()
        .to_vec();
    payload.extend_from_slice(inner);
    let mut v = Vec::new();
    Ethernet2Header {
        source: smac.0,
        destination: dmac.0,
        ether_type: etherparse::EtherType::IPV4,
    }
    .write(&mut v)
    .expect("eth");
    let udp_len = (8 + payload.len()) as u16;
    let mut ip = Ipv4Header::new(udp_len, 64, IpNumber::UDP, ip4(src), ip4(dst)).expect("ip");
    ip.header_checksum = ip.calc_header_checksum();
    ip.write(&mut v).expect("ip");
    UdpHeader {
        source_port: sport,
        destination_port: dport,
        length: udp_len,
        checksum: 0,
    }
    .write(&mut v)
    .expect("udp");
    v.extend_from_slice(&payload);
    v
}

/// Outer Ethernet + IPv4 + GRE(0x8847) + one MPLS label + `inner`.
pub fn mpls_gre_frame(
    smac: MacAddr,
    dmac: MacAddr,
    src: u32,
    dst: u32,
    label: u32,
    ttl: u8,
    inner: &[u8],
) -> Vec<u8> {
    let mut payload = vec![0, 0, 0x88, 0x47];
    payload.extend_from_slice(&((label << 12) | 0x100 | u32::from(ttl)).to_be_bytes());
    payload.extend_from_slice(inner);
    let mut v = Vec::new();
    Ethernet2Header {
        source: smac.0,
        destination: dmac.0,
        ether_type: etherparse::EtherType::IPV4,
    }
    .write(&mut v)
    .expect("eth");
    let mut ip =
        Ipv4Header::new(payload.len() as u16, 64, IpNumber::GRE, ip4(src), ip4(dst)).expect("ip");
    ip.header_checksum = ip.calc_header_checksum();
    ip.write(&mut v).expect("ip");
    v.extend_from_slice(&payload);
    v
}

/// Asserts the IPv4 header checksum (and TCP/UDP/ICMP checksum) of the IPv4 packet `ip` verify.
pub fn assert_checksums(ip: &[u8]) {
    let p = etherparse::SlicedPacket::from_ip(ip).expect("parses as IP");
    let Some(etherparse::NetSlice::Ipv4(net)) = p.net else {
        panic!("not ipv4")
    };
    let h = net.header().to_header();
    assert_eq!(
        h.calc_header_checksum(),
        h.header_checksum,
        "ipv4 header checksum"
    );
    match p.transport {
        Some(etherparse::TransportSlice::Udp(u)) if u.checksum() != 0 => {
            assert_eq!(
                u.to_header()
                    .calc_checksum_ipv4(&h, u.payload())
                    .expect("sum"),
                u.checksum(),
                "udp checksum"
            );
        }
        Some(etherparse::TransportSlice::Tcp(t)) => {
            assert_eq!(
                t.to_header()
                    .calc_checksum_ipv4(&h, t.payload())
                    .expect("sum"),
                t.checksum(),
                "tcp checksum"
            );
        }
        Some(etherparse::TransportSlice::Icmpv4(i)) => {
            assert_eq!(
                i.header().icmp_type.calc_checksum(i.payload()),
                i.checksum(),
                "icmp checksum"
            );
        }
        _ => {}
    }
}
