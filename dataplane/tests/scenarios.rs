//! Scenario tests of the pipeline, one per feature, with packets built by etherparse and outputs
//! checked byte for byte.

mod common;

use common::*;
use etherparse::{Ethernet2Header, IpNumber, Ipv4Header, UdpHeader};
use vrouter_dataplane::drop::DropReason;
use vrouter_dataplane::harness::fixture::*;
use vrouter_dataplane::harness::{Harness, Verdict};
use vrouter_dataplane::tables::{Limits, TableOp};
use vrouter_dataplane::trap::{AgentCmd, AgentHeader, TrapReason};
use vrouter_dataplane::wire::MacAddr;

fn harness() -> Harness {
    let mut h = Harness::new(Limits::default());
    h.program(ops());
    h
}

fn tx(v: &Verdict, vif: u16) -> Vec<u8> {
    match v {
        Verdict::Tx { vif: got, frame } if *got == vif => frame.clone(),
        other => panic!("expected transmit on vif {vif}, got {other:?}"),
    }
}

fn dropped(v: &Verdict) -> DropReason {
    match v {
        Verdict::Drop(r) => *r,
        other => panic!("expected a drop, got {other:?}"),
    }
}

/// The frame VM A sends to `dst` (through the vRouter MAC).
fn from_a(dst: u32, ttl: u8) -> Vec<u8> {
    let mut f = udp_frame(
        MAC_A,
        MacAddr::VROUTER,
        IP_A,
        dst,
        ttl,
        40000,
        5001,
        b"hello vrouter",
    );
    set_ip_id(&mut f, 0x1234);
    f
}

/// The frame VM B (which has no floating IP) sends to `dst`.
fn from_b(dst: u32, ttl: u8) -> Vec<u8> {
    udp_frame(
        MAC_B,
        MacAddr::VROUTER,
        IP_B,
        dst,
        ttl,
        40000,
        5001,
        b"hello vrouter",
    )
}

/// What the inner packet looks like after one routed hop (TTL - 1, checksum fixed).
fn routed(frame: &[u8]) -> Vec<u8> {
    let mut ip = frame[14..].to_vec();
    ip[8] -= 1;
    ip[10] = 0;
    ip[11] = 0;
    let c = vrouter_dataplane::wire::checksum::checksum(&ip[..20]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip
}

fn expected_outer(kind_udp: bool, dst: u32, sport: u16, label: u32, inner: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    Ethernet2Header {
        source: FABRIC_MAC.0,
        destination: UNDERLAY_MAC.0,
        ether_type: etherparse::EtherType::IPV4,
    }
    .write(&mut v)
    .expect("eth");
    let label_word = (label << 12) | 0x100 | u32::from(inner[8]);
    let mut payload = Vec::new();
    let proto = if kind_udp {
        let len = (8 + 4 + inner.len()) as u16;
        UdpHeader {
            source_port: sport,
            destination_port: 6635,
            length: len,
            checksum: 0,
        }
        .write(&mut payload)
        .expect("udp");
        IpNumber::UDP
    } else {
        payload.extend_from_slice(&[0, 0, 0x88, 0x47]);
        IpNumber::GRE
    };
    payload.extend_from_slice(&label_word.to_be_bytes());
    payload.extend_from_slice(inner);
    let mut ip =
        Ipv4Header::new(payload.len() as u16, 64, proto, ip4(HOST_IP), ip4(dst)).expect("ip");
    ip.identification = u16::from_be_bytes([inner[4], inner[5]]);
    ip.dont_fragment = false;
    ip.header_checksum = ip.calc_header_checksum();
    ip.write(&mut v).expect("ip");
    v.extend_from_slice(&payload);
    v
}

#[test]
fn l3_local_forward_rewrites_l2_and_decrements_ttl() {
    let mut h = harness();
    let f = from_a(IP_B, 64);
    let out = tx(&h.run1(VM_A, &f), VM_B);
    let mut want = Vec::new();
    want.extend_from_slice(&MAC_B.0);
    want.extend_from_slice(&MacAddr::VROUTER.0);
    want.extend_from_slice(&[0x08, 0x00]);
    want.extend_from_slice(&routed(&f));
    assert_eq!(out, want);
    assert_checksums(&out[14..]);
    assert_eq!(h.stats.vif(VM_A).rx_packets, 1);
    assert_eq!(h.stats.vif(VM_B).tx_packets, 1);
    assert_eq!(h.stats.vrf(VRF_VN1).encaps, 1);
}

#[test]
fn mplsoudp_encap_to_remote_host() {
    let mut h = harness();
    let f = from_a(IP_REMOTE_UDP, 64);
    let out = tx(&h.run1(VM_A, &f), FABRIC);
    let sport = u16::from_be_bytes([out[34], out[35]]);
    assert!(sport >= 49152, "RFC 7510 entropy range, got {sport}");
    assert_eq!(
        out,
        expected_outer(true, REMOTE_UDP, sport, LABEL_REMOTE_UDP, &routed(&f))
    );
    // Same flow, same source port; the port follows the inner flow.
    let again = tx(&h.run1(VM_A, &f), FABRIC);
    assert_eq!(again, out);
    let other_ports: std::collections::HashSet<u16> = (0..32u16)
        .map(|i| {
            let g = udp_frame(
                MAC_A,
                MacAddr::VROUTER,
                IP_A,
                IP_REMOTE_UDP,
                64,
                40000 + i,
                5001,
                b"x",
            );
            let o = tx(&h.run1(VM_A, &g), FABRIC);
            u16::from_be_bytes([o[34], o[35]])
        })
        .collect();
    assert!(
        other_ports.len() > 16,
        "source ports spread over flows: {other_ports:?}"
    );
    assert_eq!(h.stats.vrf(VRF_VN1).udp_mpls_tunnels, 34);
}

#[test]
fn mplsogre_encap_to_remote_host() {
    let mut h = harness();
    let f = from_a(IP_REMOTE_GRE, 9);
    let out = tx(&h.run1(VM_A, &f), FABRIC);
    assert_eq!(
        out,
        expected_outer(false, REMOTE_GRE, 0, LABEL_REMOTE_GRE, &routed(&f))
    );
    assert_eq!(
        out[14 + 20 + 4 + 3],
        8,
        "label TTL is the decremented inner TTL"
    );
}

#[test]
fn mplsoudp_decap_delivers_to_local_vm() {
    let mut h = harness();
    let inner =
        udp_frame(MAC_B, MAC_A, IP_REMOTE_UDP, IP_A, 63, 5001, 40000, b"reply")[14..].to_vec();
    let f = mpls_udp_frame(
        UNDERLAY_MAC,
        FABRIC_MAC,
        REMOTE_UDP,
        HOST_IP,
        50000,
        6635,
        LABEL_A,
        63,
        &inner,
    );
    let out = tx(&h.run1(FABRIC, &f), VM_A);
    let mut want = Vec::new();
    want.extend_from_slice(&MAC_A.0);
    want.extend_from_slice(&MacAddr::VROUTER.0);
    want.extend_from_slice(&[0x08, 0x00]);
    want.extend_from_slice(&inner);
    assert_eq!(
        out, want,
        "inner packet delivered unchanged behind the VM's L2 header"
    );
}

#[test]
fn mplsogre_decap_delivers_to_local_vm() {
    let mut h = harness();
    let inner = ping_frame(MAC_B, MAC_A, IP_REMOTE_GRE, IP_B, 60, 7)[14..].to_vec();
    let f = mpls_gre_frame(
        UNDERLAY_MAC,
        FABRIC_MAC,
        REMOTE_GRE,
        HOST_IP,
        LABEL_B,
        60,
        &inner,
    );
    let out = tx(&h.run1(FABRIC, &f), VM_B);
    assert_eq!(&out[..6], &MAC_B.0);
    assert_eq!(&out[14..], &inner[..]);
}

#[test]
fn legacy_mplsoudp_port_51234_is_accepted() {
    let mut h = harness();
    let inner = ping_frame(MAC_B, MAC_A, IP_REMOTE_UDP, IP_A, 60, 7)[14..].to_vec();
    let f = mpls_udp_frame(
        UNDERLAY_MAC,
        FABRIC_MAC,
        REMOTE_UDP,
        HOST_IP,
        50000,
        51234,
        LABEL_A,
        60,
        &inner,
    );
    assert_eq!(&tx(&h.run1(FABRIC, &f), VM_A)[14..], &inner[..]);
}

#[test]
fn encap_then_decap_gives_back_the_inner_packet() {
    // Host 1 encapsulates towards host 2; host 2 (same fixture, its fabric IP as destination)
    // decapsulates with the label and must deliver exactly the routed inner packet.
    let mut h1 = harness();
    let f = from_a(IP_REMOTE_UDP, 64);
    let mut wire = tx(&h1.run1(VM_A, &f), FABRIC);
    // Re-address to this fixture's host and relabel for VM B, as host 2 would have advertised.
    let mut h2 = harness();
    wire[30..34].copy_from_slice(&ip4(HOST_IP));
    wire[24] = 0;
    wire[25] = 0;
    let c = vrouter_dataplane::wire::checksum::checksum(&wire[14..34]);
    wire[24..26].copy_from_slice(&c.to_be_bytes());
    let ttl = wire[45];
    wire[42..46].copy_from_slice(&((LABEL_B << 12) | 0x100 | u32::from(ttl)).to_be_bytes());
    let out = tx(&h2.run1(FABRIC, &wire), VM_B);
    assert_eq!(&out[14..], &routed(&f)[..]);
}

#[test]
fn decap_of_unknown_label_is_dropped_as_invalid_label() {
    let mut h = harness();
    let inner = ping_frame(MAC_B, MAC_A, IP_REMOTE_UDP, IP_A, 60, 7)[14..].to_vec();
    let f = mpls_udp_frame(
        UNDERLAY_MAC,
        FABRIC_MAC,
        REMOTE_UDP,
        HOST_IP,
        50000,
        6635,
        999,
        60,
        &inner,
    );
    assert_eq!(dropped(&h.run1(FABRIC, &f)), DropReason::InvalidLabel);
    let counts: std::collections::HashMap<_, _> = h.stats.drops().into_iter().collect();
    assert_eq!(counts[&DropReason::InvalidLabel], 1);
    assert_eq!(h.stats.vif(FABRIC).drops, 1);
}

#[test]
fn overlay_traffic_for_another_host_is_dropped() {
    let mut h = harness();
    let inner = ping_frame(MAC_B, MAC_A, IP_REMOTE_UDP, IP_A, 60, 7)[14..].to_vec();
    let f = mpls_udp_frame(
        UNDERLAY_MAC,
        FABRIC_MAC,
        REMOTE_UDP,
        REMOTE_GRE,
        50000,
        6635,
        LABEL_A,
        60,
        &inner,
    );
    assert_eq!(dropped(&h.run1(FABRIC, &f)), DropReason::NotForHost);
}

#[test]
fn non_overlay_fabric_traffic_goes_to_the_host_stack() {
    let mut h = harness();
    let ping = ping_frame(UNDERLAY_MAC, FABRIC_MAC, REMOTE_UDP, HOST_IP, 64, 1);
    assert_eq!(tx(&h.run1(FABRIC, &ping), VHOST), ping);
    let arp = arp_request(UNDERLAY_MAC, REMOTE_UDP, HOST_IP);
    assert_eq!(tx(&h.run1(FABRIC, &arp), VHOST), arp);
    // And the host's replies go out of the fabric untouched.
    assert_eq!(tx(&h.run1(VHOST, &ping), FABRIC), ping);
}

#[test]
fn proxy_arp_answers_gateway_and_known_addresses_with_vrouter_mac() {
    let mut h = harness();
    for target in [
        GW_VN1,
        IP_B,
        IP_REMOTE_UDP,
        vrouter_dataplane::harness::fixture::ip(10, 1, 2, 77),
    ] {
        let out = tx(&h.run1(VM_A, &arp_request(MAC_A, IP_A, target)), VM_A);
        let mut want = Vec::new();
        want.extend_from_slice(&MAC_A.0);
        want.extend_from_slice(&MacAddr::VROUTER.0);
        want.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2]);
        want.extend_from_slice(&MacAddr::VROUTER.0);
        want.extend_from_slice(&ip4(target));
        want.extend_from_slice(&MAC_A.0);
        want.extend_from_slice(&ip4(IP_A));
        assert_eq!(out, want, "ARP reply for {}", dotted(target));
    }
    assert_eq!(h.stats.vrf(VRF_VN1).arp_virtual_proxys, 4);
    // Nothing known: no answer, counted.
    let unknown = arp_request(
        MAC_A,
        IP_A,
        vrouter_dataplane::harness::fixture::ip(10, 9, 9, 9),
    );
    assert_eq!(dropped(&h.run1(VM_A, &unknown)), DropReason::ArpNoRoute);
    // Another tenant's address is not "known" in vn1.
    assert_eq!(
        dropped(&h.run1(VM_A, &arp_request(MAC_A, IP_A, IP_C))),
        DropReason::ArpNoRoute
    );
}

#[test]
fn expiring_ttl_is_trapped_to_the_agent_with_a_header() {
    let mut h = harness();
    let f = from_a(IP_B, 1);
    let out = tx(&h.run1(VM_A, &f), AGENT);
    let hdr = AgentHeader::parse(&out).expect("agent header");
    assert_eq!(
        hdr,
        AgentHeader {
            cmd: AgentCmd::Trap,
            reason: TrapReason::ZeroTtl,
            vif: VM_A,
            vrf: VRF_VN1,
            param: 0
        }
    );
    assert_eq!(&out[16..], &f[..], "original frame follows the header");
    let f0 = from_a(IP_B, 0);
    assert!(matches!(h.run1(VM_A, &f0), Verdict::Tx { vif: AGENT, .. }));
    let traps: std::collections::HashMap<_, _> = h.stats.traps().into_iter().collect();
    assert_eq!(traps[&TrapReason::ZeroTtl], 2);
}

#[test]
fn ttl_expiry_without_agent_is_counted_as_ttl_exceeded() {
    let mut h = harness();
    h.program(vec![TableOp::SetHost(
        vrouter_dataplane::tables::HostConfig {
            fabric_ip: HOST_IP,
            fabric_vif: Some(FABRIC),
            host_vif: Some(VHOST),
            agent_vif: None,
        },
    )]);
    assert_eq!(
        dropped(&h.run1(VM_A, &from_a(IP_B, 1))),
        DropReason::TtlExceeded
    );
}

#[test]
fn packets_to_the_gateway_and_dhcp_go_to_the_agent() {
    let mut h = harness();
    let ping = ping_frame(MAC_A, MacAddr::VROUTER, IP_A, GW_VN1, 64, 3);
    let out = tx(&h.run1(VM_A, &ping), AGENT);
    assert_eq!(
        AgentHeader::parse(&out).map(|x| x.reason),
        Some(TrapReason::Receive)
    );
    let discover = udp_frame(
        MAC_A,
        MacAddr::BROADCAST,
        0,
        u32::MAX,
        64,
        68,
        67,
        &[1; 240],
    );
    let out = tx(&h.run1(VM_A, &discover), AGENT);
    assert_eq!(
        AgentHeader::parse(&out).map(|x| x.reason),
        Some(TrapReason::L3Protocols)
    );
}

#[test]
fn agent_injection_transmits_on_the_requested_vif() {
    let mut h = harness();
    let reply = ping_frame(MacAddr::VROUTER, MAC_A, GW_VN1, IP_A, 64, 3);
    let mut f = vec![0u8; 16];
    AgentHeader {
        cmd: AgentCmd::TxVif,
        reason: TrapReason::None,
        vif: VM_A,
        vrf: 0,
        param: 0,
    }
    .emit(&mut f);
    f.extend_from_slice(&reply);
    assert_eq!(tx(&h.run1(AGENT, &f), VM_A), reply);
    assert_eq!(
        dropped(&h.run1(AGENT, &reply)),
        DropReason::InvalidPacket,
        "no header"
    );
    // Back to pkt0 itself: refused (what reaches the agent is only ever a trap).
    let mut to_self = vec![0u8; 16];
    AgentHeader {
        cmd: AgentCmd::TxVif,
        reason: TrapReason::None,
        vif: AGENT,
        vrf: 0,
        param: 0,
    }
    .emit(&mut to_self);
    to_self.extend_from_slice(&reply);
    assert_eq!(dropped(&h.run1(AGENT, &to_self)), DropReason::InvalidIf);
}

#[test]
fn fip_dnat_from_public_vrf() {
    let mut h = harness();
    // The gateway sends traffic for the floating IP with the public VRF's table label.
    let inner = udp_frame(
        MAC_B,
        MAC_A,
        OUTSIDE,
        FIP_A,
        60,
        443,
        40000,
        b"from outside",
    )[14..]
        .to_vec();
    let f = mpls_udp_frame(
        UNDERLAY_MAC,
        FABRIC_MAC,
        GATEWAY,
        HOST_IP,
        50001,
        6635,
        LABEL_PUBLIC_TABLE,
        60,
        &inner,
    );
    let out = tx(&h.run1(FABRIC, &f), VM_A);
    assert_eq!(&out[..6], &MAC_A.0);
    assert_eq!(&out[14 + 12..14 + 16], &ip4(OUTSIDE));
    assert_eq!(
        &out[14 + 16..14 + 20],
        &ip4(IP_A),
        "destination translated to the fixed IP"
    );
    assert_checksums(&out[14..]);
    assert_eq!(h.stats.vrf(VRF_PUBLIC).fip_dnats, 1);
}

#[test]
fn fip_snat_to_public_vrf() {
    let mut h = harness();
    let f = tcp_frame(MAC_A, MacAddr::VROUTER, IP_A, OUTSIDE, 64, 40000, 443);
    let out = tx(&h.run1(VM_A, &f), FABRIC);
    // Encapsulated to the gateway with its label, source translated to the floating IP.
    assert_eq!(&out[30..34], &ip4(GATEWAY));
    let label = u32::from_be_bytes([out[42], out[43], out[44], out[45]]) >> 12;
    assert_eq!(label, LABEL_GATEWAY);
    let inner = &out[46..];
    assert_eq!(&inner[12..16], &ip4(FIP_A));
    assert_eq!(&inner[16..20], &ip4(OUTSIDE));
    assert_checksums(inner);
    assert_eq!(h.stats.vrf(VRF_PUBLIC).fip_snats, 1);
}

#[test]
fn fip_snat_then_dnat_is_the_identity_on_the_five_tuple() {
    let mut h = harness();
    let f = tcp_frame(MAC_A, MacAddr::VROUTER, IP_A, OUTSIDE, 64, 40000, 443);
    let out = tx(&h.run1(VM_A, &f), FABRIC);
    let mut inner = out[46..].to_vec();
    // The outside answers by swapping the addresses and ports of what it received.
    let (src, dst) = (inner[12..16].to_vec(), inner[16..20].to_vec());
    inner[12..16].copy_from_slice(&dst);
    inner[16..20].copy_from_slice(&src);
    inner.swap(20, 22);
    inner.swap(21, 23);
    let back = mpls_udp_frame(
        UNDERLAY_MAC,
        FABRIC_MAC,
        GATEWAY,
        HOST_IP,
        50001,
        6635,
        LABEL_PUBLIC_TABLE,
        60,
        &inner,
    );
    let got = tx(&h.run1(FABRIC, &back), VM_A);
    let ip = &got[14..];
    assert_eq!(
        (&ip[12..16], &ip[16..20]),
        (&ip4(OUTSIDE)[..], &ip4(IP_A)[..])
    );
    assert_eq!(
        (
            u16::from_be_bytes([ip[20], ip[21]]),
            u16::from_be_bytes([ip[22], ip[23]])
        ),
        (443, 40000)
    );
}

#[test]
fn ecmp_spreads_flows_and_keeps_each_flow_on_one_path() {
    let mut h = harness();
    let dst = vrouter_dataplane::harness::fixture::ip(10, 1, 2, 9);
    let mut seen = std::collections::HashMap::new();
    for sport in 0..64u16 {
        let f = udp_frame(
            MAC_A,
            MacAddr::VROUTER,
            IP_A,
            dst,
            64,
            1000 + sport,
            53,
            b"q",
        );
        let a = tx(&h.run1(VM_A, &f), FABRIC);
        let b = tx(&h.run1(VM_A, &f), FABRIC);
        assert_eq!(a, b, "a flow is sticky");
        let outer_dst = u32::from_be_bytes([a[30], a[31], a[32], a[33]]);
        *seen.entry(outer_dst).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "both members used: {seen:?}");
    assert_eq!(h.stats.vrf(VRF_VN1).ecmp_composites, 128);
}

#[test]
fn malformed_packets_are_dropped_with_reasons() {
    let mut h = harness();
    let good = from_a(IP_B, 64);
    let cases: Vec<(&str, Vec<u8>, DropReason)> = vec![
        ("runt", good[..10].to_vec(), DropReason::Pull),
        ("truncated ip", good[..14 + 12].to_vec(), DropReason::Pull),
        (
            "bad ihl",
            {
                let mut f = good.clone();
                f[14] = 0x44;
                f
            },
            DropReason::InvalidPacket,
        ),
        (
            "bad version",
            {
                let mut f = good.clone();
                f[14] = 0x65;
                f
            },
            DropReason::InvalidPacket,
        ),
        (
            "total length beyond frame",
            {
                let mut f = good.clone();
                f[16] = 0x05;
                f
            },
            DropReason::InvalidPacket,
        ),
        (
            "total length below header",
            {
                let mut f = good.clone();
                f[16] = 0;
                f[17] = 8;
                f
            },
            DropReason::InvalidPacket,
        ),
        (
            "ipv6",
            {
                let mut f = good.clone();
                f[12] = 0x86;
                f[13] = 0xdd;
                f
            },
            DropReason::NowhereToGo,
        ),
        (
            "bad arp",
            {
                let mut f = arp_request(MAC_A, IP_A, GW_VN1);
                f[19] = 9;
                f
            },
            DropReason::InvalidArp,
        ),
        (
            "spoofed source ip",
            udp_frame(MAC_A, MacAddr::VROUTER, IP_B, IP_A, 64, 1, 2, b""),
            DropReason::InvalidSource,
        ),
        (
            "spoofed source mac",
            udp_frame(MAC_B, MacAddr::VROUTER, IP_A, IP_B, 64, 1, 2, b""),
            DropReason::InvalidSource,
        ),
    ];
    for (name, frame, want) in cases {
        assert_eq!(dropped(&h.run1(VM_A, &frame)), want, "{name}");
    }
    let nowhere = from_b(vrouter_dataplane::harness::fixture::ip(172, 16, 0, 1), 64);
    assert_eq!(
        dropped(&h.run1(VM_B, &nowhere)),
        DropReason::NoRoute,
        "no route (and no floating IP)"
    );
    let bad_inner = {
        let mut inner = good[14..].to_vec();
        inner[0] = 0x43;
        mpls_udp_frame(
            UNDERLAY_MAC,
            FABRIC_MAC,
            REMOTE_UDP,
            HOST_IP,
            50000,
            6635,
            LABEL_A,
            60,
            &inner,
        )
    };
    assert_eq!(
        dropped(&h.run1(FABRIC, &bad_inner)),
        DropReason::InvalidPacket
    );
    let not_bottom = {
        let mut f = mpls_udp_frame(
            UNDERLAY_MAC,
            FABRIC_MAC,
            REMOTE_UDP,
            HOST_IP,
            50000,
            6635,
            LABEL_A,
            60,
            &good[14..],
        );
        f[44] &= !1;
        f
    };
    assert_eq!(
        dropped(&h.run1(FABRIC, &not_bottom)),
        DropReason::InvalidLabel
    );
    let truncated_label = mpls_udp_frame(
        UNDERLAY_MAC,
        FABRIC_MAC,
        REMOTE_UDP,
        HOST_IP,
        50000,
        6635,
        LABEL_A,
        60,
        &[],
    )[..44]
        .to_vec();
    assert_eq!(
        dropped(&h.run1(FABRIC, &truncated_label)),
        DropReason::InvalidPacket
    );
    let counts: std::collections::HashMap<_, _> = h.stats.drops().into_iter().collect();
    assert_eq!(counts[&DropReason::InvalidPacket], 6);
    assert_eq!(counts[&DropReason::InvalidSource], 2);
}

#[test]
fn networks_are_isolated_without_a_route() {
    let mut h = harness();
    assert_eq!(
        dropped(&h.run1(VM_B, &from_b(IP_C, 64))),
        DropReason::NoRoute
    );
    let f = udp_frame(MAC_C, MacAddr::VROUTER, IP_C, IP_A, 64, 1, 2, b"x");
    assert_eq!(dropped(&h.run1(VM_C, &f)), DropReason::NoRoute);
    // VN2's label delivers only to VM C even if the inner destination is in VN1.
    let inner = udp_frame(MAC_B, MAC_A, IP_REMOTE_UDP, IP_A, 60, 1, 2, b"x")[14..].to_vec();
    let f = mpls_udp_frame(
        UNDERLAY_MAC,
        FABRIC_MAC,
        REMOTE_UDP,
        HOST_IP,
        50000,
        6635,
        LABEL_C,
        60,
        &inner,
    );
    assert!(h.run1(FABRIC, &f).sent_on(VM_C).is_some());
}

#[test]
fn unknown_vrf_and_unknown_interface_are_counted() {
    let mut h = harness();
    let mut f = vec![0u8; 16];
    AgentHeader {
        cmd: AgentCmd::RouteInVrf,
        reason: TrapReason::None,
        vif: 0,
        vrf: 77,
        param: 0,
    }
    .emit(&mut f);
    f.extend_from_slice(&from_a(IP_B, 64));
    assert_eq!(dropped(&h.run1(AGENT, &f)), DropReason::InvalidVrf);
    assert_eq!(
        dropped(&h.run1(99, &from_a(IP_B, 64))),
        DropReason::InvalidIf
    );
}

#[test]
fn a_route_change_takes_effect_on_the_next_batch() {
    let mut h = harness();
    let f = from_b(IP_REMOTE_UDP, 64);
    assert!(h.run1(VM_B, &f).sent_on(FABRIC).is_some());
    h.program(vec![TableOp::DelRoute {
        vrf: VRF_VN1,
        prefix: IP_REMOTE_UDP,
        plen: 32,
    }]);
    assert_eq!(dropped(&h.run1(VM_B, &f)), DropReason::NoRoute);
    h.program(vec![TableOp::AddRoute {
        vrf: VRF_VN1,
        prefix: IP_REMOTE_UDP,
        plen: 32,
        route: vrouter_dataplane::tables::Route {
            nh: NH_A,
            label: None,
            proxy_arp: true,
        },
    }]);
    assert!(h.run1(VM_B, &f).sent_on(VM_A).is_some());
}

#[test]
fn invalid_operations_are_refused_and_change_nothing() {
    let mut h = harness();
    let bad = vec![
        TableOp::AddRoute {
            vrf: VRF_VN1,
            prefix: 0x0a0a_0a0a,
            plen: 32,
            route: vrouter_dataplane::tables::Route {
                nh: NH_A,
                label: None,
                proxy_arp: false,
            },
        },
        TableOp::AddRoute {
            vrf: 999,
            prefix: 0,
            plen: 0,
            route: vrouter_dataplane::tables::Route {
                nh: NH_A,
                label: None,
                proxy_arp: false,
            },
        },
    ];
    let (i, e) = h.try_program(bad).expect_err("unknown vrf refused");
    assert_eq!(i, 1);
    assert!(e.to_string().contains("vrf 999"), "{e}");
    assert_eq!(
        h.writer
            .read(|t| t.fib.get(VRF_VN1, 0x0a0a_0a0a, 32))
            .flatten(),
        None,
        "first op not applied either"
    );
    assert!(
        h.try_program(vec![TableOp::DelVrf(VRF_VN1)]).is_err(),
        "vrf in use by vifs"
    );
    assert!(h
        .try_program(vec![TableOp::AddLabel { label: 5, nh: 4242 }])
        .is_err());
    assert!(h.try_program(vec![TableOp::DelNh(0)]).is_err());
    assert!(
        h.try_program(vec![TableOp::DelVif(VM_A)]).is_err(),
        "floating IP still bound"
    );
}

#[test]
fn gre_options_past_the_end_of_the_packet_are_dropped_not_read() {
    // A GRE header announcing checksum, key and sequence words (12 option bytes) in a packet
    // that ends right after the 4-byte base header: the label would lie past the IP total
    // length, so the packet is refused as too short, without reading beyond it.
    let mut h = harness();
    let inner = ping_frame(MAC_B, MAC_A, IP_REMOTE_GRE, IP_B, 60, 7)[14..].to_vec();
    let mut f = mpls_gre_frame(
        UNDERLAY_MAC,
        FABRIC_MAC,
        REMOTE_GRE,
        HOST_IP,
        LABEL_B,
        60,
        &inner,
    );
    f[14 + 20] = 0xb0;
    f.truncate(14 + 20 + 4);
    f[16..18].copy_from_slice(&24u16.to_be_bytes());
    f[24] = 0;
    f[25] = 0;
    let ck = vrouter_dataplane::wire::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&ck.to_be_bytes());
    assert_eq!(dropped(&h.run1(FABRIC, &f)), DropReason::Pull);
}

/// `frame` with an 802.1Q (or other) tag of `tpid` and VID 5 inserted after the MAC addresses.
fn tagged(frame: &[u8], tpid: u16) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&tpid.to_be_bytes());
    f.extend_from_slice(&5u16.to_be_bytes());
    f.extend_from_slice(&frame[12..]);
    f
}

/// `frame` with its IPv4 header checksum off by one.
fn bad_ip_checksum(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[25] ^= 1;
    f
}

fn drop_counts(h: &Harness) -> std::collections::HashMap<DropReason, u64> {
    h.stats.drops().into_iter().collect()
}

#[test]
fn vlan_tagged_frames_from_a_vm_are_dropped_as_vlan_tagged() {
    // A VM port is untagged: a tagged frame must not be routed as if the tag were not there
    // (AF_PACKET hands the tag over beside the frame; that port drops it with this reason too).
    let mut h = harness();
    let good = from_a(IP_B, 64);
    for tpid in [0x8100u16, 0x88a8, 0x9100] {
        assert_eq!(
            dropped(&h.run1(VM_A, &tagged(&good, tpid))),
            DropReason::VlanTagged,
            "tpid {tpid:#06x}"
        );
    }
    assert_eq!(drop_counts(&h)[&DropReason::VlanTagged], 3);
    assert_eq!(DropReason::VlanTagged.name(), "VLAN Tagged");
    tx(&h.run1(VM_A, &good), VM_B);
}

#[test]
fn a_bad_ipv4_header_checksum_from_a_vm_is_dropped_as_a_checksum_error() {
    let mut h = harness();
    let good = from_a(IP_B, 64);
    assert_eq!(
        dropped(&h.run1(VM_A, &bad_ip_checksum(&good))),
        DropReason::CksumErr
    );
    // The same checks with IP options (the options are in the sum).
    let mut opts = good[..14].to_vec();
    let mut ip = good[14..34].to_vec();
    ip[0] = 0x46;
    ip.extend_from_slice(&[0x94, 0x04, 0x00, 0x00]); // Router Alert
    ip.extend_from_slice(&good[34..]);
    let total = ip.len() as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[10] = 0;
    ip[11] = 0;
    let ck = vrouter_dataplane::wire::checksum::checksum(&ip[..24]);
    ip[10..12].copy_from_slice(&ck.to_be_bytes());
    opts.extend_from_slice(&ip);
    let out = tx(&h.run1(VM_A, &opts), VM_B);
    let mut want = opts[14..].to_vec();
    want[8] -= 1;
    want[10] = 0;
    want[11] = 0;
    let ck = vrouter_dataplane::wire::checksum::checksum(&want[..24]);
    want[10..12].copy_from_slice(&ck.to_be_bytes());
    assert_eq!(
        &out[14..],
        &want[..],
        "a valid header with options is routed"
    );
    let mut bad_opt = opts.clone();
    bad_opt[14 + 21] ^= 0x01;
    assert_eq!(
        dropped(&h.run1(VM_A, &bad_opt)),
        DropReason::CksumErr,
        "a changed option byte breaks the sum"
    );
    assert_eq!(drop_counts(&h)[&DropReason::CksumErr], 2);
    assert_eq!(DropReason::CksumErr.name(), "Checksum errors");
}

#[test]
fn a_bad_outer_ipv4_checksum_on_the_fabric_is_not_decapsulated() {
    let mut h = harness();
    let inner =
        udp_frame(MAC_B, MAC_A, IP_REMOTE_UDP, IP_A, 63, 5001, 40000, b"reply")[14..].to_vec();
    let udp = mpls_udp_frame(
        UNDERLAY_MAC,
        FABRIC_MAC,
        REMOTE_UDP,
        HOST_IP,
        50000,
        6635,
        LABEL_A,
        63,
        &inner,
    );
    let gre = mpls_gre_frame(
        UNDERLAY_MAC,
        FABRIC_MAC,
        REMOTE_GRE,
        HOST_IP,
        LABEL_A,
        63,
        &inner,
    );
    for (what, f) in [("MPLSoUDP", &udp), ("MPLSoGRE", &gre)] {
        assert_eq!(
            dropped(&h.run1(FABRIC, &bad_ip_checksum(f))),
            DropReason::CksumErr,
            "{what}"
        );
        tx(&h.run1(FABRIC, f), VM_A);
    }
    assert_eq!(drop_counts(&h)[&DropReason::CksumErr], 2);
}

#[test]
fn unicast_from_a_vm_to_a_mac_other_than_the_vrouters_is_not_routed() {
    let mut h = harness();
    let to_b_mac = udp_frame(MAC_A, MAC_B, IP_A, IP_B, 64, 40000, 5001, b"hello vrouter");
    assert_eq!(dropped(&h.run1(VM_A, &to_b_mac)), DropReason::L2NoRoute);
    // A unicast packet sent as a link-layer broadcast is not routed either (RFC 1812 5.3.4).
    let bcast = udp_frame(MAC_A, MacAddr([0xff; 6]), IP_A, IP_B, 64, 40000, 5001, b"x");
    assert_eq!(dropped(&h.run1(VM_A, &bcast)), DropReason::L2NoRoute);
    // A broadcast to the limited broadcast address and multicast to a group address get past
    // the L2 check (to be routed as before: this VRF's default route takes them).
    let all = udp_frame(
        MAC_A,
        MacAddr([0xff; 6]),
        IP_A,
        u32::MAX,
        64,
        40000,
        5001,
        b"x",
    );
    assert!(
        !matches!(h.run1(VM_A, &all), Verdict::Drop(DropReason::L2NoRoute)),
        "limited broadcast"
    );
    let mcast = udp_frame(
        MAC_A,
        MacAddr([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]),
        IP_A,
        0xe000_00fb,
        64,
        5353,
        5353,
        b"x",
    );
    assert!(
        !matches!(h.run1(VM_A, &mcast), Verdict::Drop(DropReason::L2NoRoute)),
        "multicast"
    );
    assert_eq!(drop_counts(&h)[&DropReason::L2NoRoute], 2);
    assert_eq!(DropReason::L2NoRoute.name(), "No L2 Route");
    // DHCP (broadcast to the broadcast MAC) is still trapped to the agent.
    let dhcp = udp_frame(MAC_A, MacAddr([0xff; 6]), 0, u32::MAX, 64, 68, 67, b"dhcp");
    assert!(
        matches!(h.run1(VM_A, &dhcp), Verdict::Tx { vif: AGENT, .. }),
        "dhcp trapped"
    );
}

#[test]
fn an_overlay_packet_whose_udp_length_disagrees_with_the_ip_payload_is_not_decapsulated() {
    let mut h = harness();
    let inner =
        udp_frame(MAC_B, MAC_A, IP_REMOTE_UDP, IP_A, 63, 5001, 40000, b"reply")[14..].to_vec();
    let good = mpls_udp_frame(
        UNDERLAY_MAC,
        FABRIC_MAC,
        REMOTE_UDP,
        HOST_IP,
        50000,
        6635,
        LABEL_A,
        63,
        &inner,
    );
    let udp_len = u16::from_be_bytes([good[38], good[39]]);
    for len in [udp_len - 1, udp_len + 1, 8, 0, u16::MAX] {
        let mut f = good.clone();
        f[38..40].copy_from_slice(&len.to_be_bytes());
        assert_eq!(
            dropped(&h.run1(FABRIC, &f)),
            DropReason::InvalidPacket,
            "udp length {len} for {udp_len}"
        );
    }
    assert_eq!(drop_counts(&h)[&DropReason::InvalidPacket], 5);
    tx(&h.run1(FABRIC, &good), VM_A);
}
