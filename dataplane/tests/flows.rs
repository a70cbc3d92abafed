//! Scenario tests of flows and network policy, one per feature, through the real pipeline with
//! etherparse-built packets.

mod common;

use common::*;
use etherparse::PacketBuilder;
use proptest::prelude::*;
use vrouter_dataplane::ctl::handler::{handle, DaemonInfo};
use vrouter_dataplane::ctl::proto::{Request, Response};
use vrouter_dataplane::drop::DropReason;
use vrouter_dataplane::harness::fixture::*;
use vrouter_dataplane::harness::{Harness, Verdict};
use vrouter_dataplane::tables::flow::{tcp, FlowAction, FlowDropReason, FlowEntryInfo, FlowParams};
use vrouter_dataplane::tables::{Limits, TableOp};
use vrouter_dataplane::trap::{AgentHeader, TrapReason};
use vrouter_dataplane::wire::MacAddr;

const VR: MacAddr = MacAddr::VROUTER;

/// `frame` as the gateway sends it to this host: MPLSoUDP with the public VRF's table label.
fn from_gateway(frame: &[u8]) -> Vec<u8> {
    mpls_udp_frame(
        UNDERLAY_MAC,
        FABRIC_MAC,
        GATEWAY,
        HOST_IP,
        50000,
        6635,
        LABEL_PUBLIC_TABLE,
        60,
        &frame[14..],
    )
}

fn harness_with(max_flows: u32, flows: u32) -> Harness {
    let mut h = Harness::new(Limits {
        flows,
        ..Limits::default()
    });
    h.program(ops());
    h.program(policy_ops(max_flows));
    h.flows().set_clock(Some(1000));
    h
}

fn harness() -> Harness {
    harness_with(0, 64 * 1024)
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

fn list(h: &mut Harness) -> Vec<FlowEntryInfo> {
    let stats = h.stats.clone();
    match handle(
        &mut h.writer,
        &stats,
        &DaemonInfo::default(),
        Request::FlowList {
            vrf: None,
            limit: None,
        },
    ) {
        Response::Flows { flows, .. } => flows,
        other => panic!("unexpected {other:?}"),
    }
}

fn drops(h: &Harness, r: DropReason) -> u64 {
    h.stats
        .drops()
        .into_iter()
        .find(|(x, _)| *x == r)
        .map_or(0, |(_, n)| n)
}

fn tcp_with(src_mac: MacAddr, src: u32, dst: u32, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut f = tcp_frame(src_mac, VR, src, dst, 64, sport, dport);
    // etherparse builds a SYN; set the flags byte and fix the TCP checksum incrementally.
    let at = 14 + 20 + 13;
    let old = u16::from_be_bytes([f[at - 1], f[at]]);
    f[at] = flags;
    let new = u16::from_be_bytes([f[at - 1], f[at]]);
    let ck = u16::from_be_bytes([f[14 + 20 + 16], f[14 + 20 + 17]]);
    let ck = vrouter_dataplane::wire::checksum::update16(ck, old, new);
    f[14 + 20 + 16..14 + 20 + 18].copy_from_slice(&ck.to_be_bytes());
    f
}

fn echo_reply(smac: MacAddr, src: u32, dst: u32, id: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(smac.0, VR.0)
        .ipv4(src.to_be_bytes(), dst.to_be_bytes(), 64)
        .icmpv4_echo_reply(id, 1);
    let mut v = Vec::new();
    b.write(&mut v, b"vrouter-test").expect("build icmp");
    v
}

#[test]
fn policy_denies_tcp_between_networks_flow_action_drop() {
    let mut h = harness();
    let syn = tcp_with(MAC_A, IP_A, IP_C, 40000, 22, 0x02);
    assert_eq!(dropped(&h.run1(VM_A, &syn)), DropReason::FlowActionDrop);
    // The drop flow answers the retransmission without evaluating policy again.
    assert_eq!(dropped(&h.run1(VM_A, &syn)), DropReason::FlowActionDrop);
    assert_eq!(drops(&h, DropReason::FlowActionDrop), 2);
    let f = list(&mut h);
    assert_eq!(f.len(), 2, "{f:?}");
    assert!(f[0].forward && !f[1].forward);
    assert_eq!(f[0].action, FlowAction::Drop(FlowDropReason::Policy));
    assert_eq!(
        (
            f[0].vrf,
            f[0].src,
            f[0].dst,
            f[0].sport,
            f[0].dport,
            f[0].packets
        ),
        (VRF_VN1, IP_A, IP_C, 40000, 22, 2)
    );
    // The same network is not subject to the policy.
    let syn_b = tcp_with(MAC_A, IP_A, IP_B, 40000, 22, 0x02);
    tx(&h.run1(VM_A, &syn_b), VM_B);
}

#[test]
fn policy_permits_icmp_and_reply_matches_reverse_flow() {
    let mut h = harness();
    let ping = ping_frame(MAC_A, VR, IP_A, IP_C, 64, 7);
    let out = tx(&h.run1(VM_A, &ping), VM_C);
    assert_eq!(&out[0..6], &MAC_C.0);
    let reply = echo_reply(MAC_C, IP_C, IP_A, 7);
    tx(&h.run1(VM_C, &reply), VM_A);
    tx(&h.run1(VM_A, &ping), VM_C);
    let f = list(&mut h);
    assert_eq!(f.len(), 2, "one pair: {f:?}");
    let (fw, rv) = (&f[0], &f[1]);
    assert_eq!(
        (fw.src, fw.dst, fw.proto, fw.action),
        (IP_A, IP_C, 1, FlowAction::Forward)
    );
    // The reverse is keyed where replies come from: VM C's own VRF.
    assert_eq!(
        (rv.src, rv.dst, rv.vrf, rv.dvrf),
        (IP_C, IP_A, VRF_VN2, VRF_VN2)
    );
    assert_eq!((fw.rindex, rv.rindex), (rv.index, fw.index));
    assert_eq!((fw.packets, rv.packets), (2, 1));
    assert_eq!(fw.bytes, 2 * (ping.len() as u64 - 14));
    // UDP is permitted too; TCP from vn2 is denied by vn2's copy of the policy.
    let udp = udp_frame(MAC_C, VR, IP_C, IP_A, 64, 53, 40000, b"x");
    tx(&h.run1(VM_C, &udp), VM_A);
    let syn = tcp_with(MAC_C, IP_C, IP_A, 40001, 80, 0x02);
    assert_eq!(dropped(&h.run1(VM_C, &syn)), DropReason::FlowActionDrop);
}

#[test]
fn tcp_rst_evicts_flow() {
    let mut h = harness();
    tx(
        &h.run1(VM_A, &tcp_with(MAC_A, IP_A, IP_B, 40000, 80, 0x02)),
        VM_B,
    );
    tx(
        &h.run1(VM_B, &tcp_with(MAC_B, IP_B, IP_A, 80, 40000, 0x12)),
        VM_A,
    );
    tx(
        &h.run1(VM_A, &tcp_with(MAC_A, IP_A, IP_B, 40000, 80, 0x10)),
        VM_B,
    );
    let f = list(&mut h);
    assert_eq!(f.len(), 2);
    assert_eq!(f[0].tcp & (tcp::SYN | tcp::ACK), tcp::SYN | tcp::ACK);
    // The RST itself is forwarded; the pair is gone after it.
    tx(
        &h.run1(VM_B, &tcp_with(MAC_B, IP_B, IP_A, 80, 40000, 0x04)),
        VM_A,
    );
    assert!(list(&mut h).is_empty());
    assert_eq!(h.flows().vrf_active(VRF_VN1), 0);
}

#[test]
fn tcp_fin_both_ways_closes_the_pair() {
    let mut h = harness();
    tx(
        &h.run1(VM_A, &tcp_with(MAC_A, IP_A, IP_B, 40000, 80, 0x02)),
        VM_B,
    );
    tx(
        &h.run1(VM_A, &tcp_with(MAC_A, IP_A, IP_B, 40000, 80, 0x11)),
        VM_B,
    );
    tx(
        &h.run1(VM_B, &tcp_with(MAC_B, IP_B, IP_A, 80, 40000, 0x11)),
        VM_A,
    );
    // The last ACK still matches; after the closed timeout the pair is gone.
    tx(
        &h.run1(VM_A, &tcp_with(MAC_A, IP_A, IP_B, 40000, 80, 0x10)),
        VM_B,
    );
    let f = list(&mut h);
    assert!(f.iter().all(|e| e.tcp & tcp::CLOSED != 0), "{f:?}");
    h.flows()
        .set_clock(Some(1000 + FlowParams::default().closed_timeout_s));
    assert!(list(&mut h).is_empty());
}

#[test]
fn idle_flows_age_out() {
    let mut h = harness();
    h.program(vec![TableOp::SetFlowParams(FlowParams {
        idle_timeout_s: 180,
        drop_timeout_s: 5,
        closed_timeout_s: 2,
    })]);
    let ping = ping_frame(MAC_A, VR, IP_A, IP_C, 64, 9);
    tx(&h.run1(VM_A, &ping), VM_C);
    let syn = tcp_with(MAC_A, IP_A, IP_C, 40000, 22, 0x02);
    dropped(&h.run1(VM_A, &syn));
    assert_eq!(list(&mut h).len(), 4);
    assert_eq!(h.flows().vrf_active(VRF_VN1), 4);
    // Drop flows go first (short timeout), forward flows after 180 s idle.
    h.flows().set_clock(Some(1005));
    let f = list(&mut h);
    assert_eq!(f.len(), 2);
    assert_eq!(f[0].action, FlowAction::Forward);
    h.flows().set_clock(Some(1179));
    assert_eq!(list(&mut h).len(), 2);
    h.flows().set_clock(Some(1180));
    assert!(list(&mut h).is_empty());
    assert_eq!(h.flows().vrf_active(VRF_VN1), 0);
    // A packet after aging sets the flow up again (lazy aging on lookup, no sweep needed).
    tx(&h.run1(VM_A, &ping), VM_C);
    h.flows().set_clock(Some(2000));
    tx(&h.run1(VM_A, &ping), VM_C);
    let f = list(&mut h);
    assert_eq!((f.len(), f[0].packets), (2, 1));
}

/// The flood: one VM opens new flows as fast as it can; another tenant's established flow
/// forwards every packet, the flooder's VRF stops at its limit, counters say so.
#[test]
fn per_vrf_flow_limit_protects_other_tenants() {
    const LIMIT: u32 = 20_000;
    const FLOOD: u32 = 1_000_000;
    let mut h = harness_with(LIMIT, 256 * 1024);
    // VM C's established flow (vn2 → vn1, ICMP, permitted).
    let ping = ping_frame(MAC_C, VR, IP_C, IP_A, 64, 1);
    tx(&h.run1(VM_C, &ping), VM_A);
    // The flooder: VM A to VM B, a new 5-tuple every packet (UDP, checksum 0).
    let mut tpl = udp_frame(MAC_A, VR, IP_A, IP_B, 64, 1, 1, b"flood");
    tpl[14 + 20 + 6] = 0;
    tpl[14 + 20 + 7] = 0;
    let mut frames: Vec<Vec<u8>> = vec![tpl.clone(); 255];
    let mut sent = 0u32;
    let mut c_ok = 1u64;
    let mut flood_tx = 0u64;
    while sent < FLOOD {
        for f in frames.iter_mut() {
            // Ports clear of DHCP (67), which is trapped before flows.
            let (sp, dp) = ((sent >> 15) as u16 + 1024, (sent as u16) | 0x8000);
            f[14 + 20..14 + 20 + 2].copy_from_slice(&sp.to_be_bytes());
            f[14 + 20 + 2..14 + 20 + 4].copy_from_slice(&dp.to_be_bytes());
            sent += 1;
        }
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        for v in h.run(VM_A, &refs) {
            match v {
                Verdict::Tx { vif, .. } if vif == VM_B => flood_tx += 1,
                Verdict::Drop(DropReason::FlowTableFull) => {}
                other => panic!("flood packet: {other:?}"),
            }
        }
        tx(&h.run1(VM_C, &ping), VM_A);
        c_ok += 1;
    }
    let flows = h.flows();
    assert_eq!(flood_tx, u64::from(LIMIT / 2));
    assert_eq!(flows.vrf_active(VRF_VN1), LIMIT);
    assert_eq!(
        drops(&h, DropReason::FlowTableFull),
        u64::from(sent - LIMIT / 2)
    );
    let stats = match handle(
        &mut h.writer,
        &h.stats.clone(),
        &DaemonInfo::default(),
        Request::FlowStats,
    ) {
        Response::FlowStats { stats } => stats,
        other => panic!("unexpected {other:?}"),
    };
    let vn1 = stats.vrfs.iter().find(|v| v.0 == VRF_VN1).expect("vn1 row");
    assert_eq!(
        (vn1.1, vn1.2, vn1.3),
        (LIMIT, LIMIT, u64::from(sent - LIMIT / 2))
    );
    // The other tenant lost nothing: every ping forwarded and counted on its flow.
    let f = list(&mut h);
    let c = f
        .iter()
        .find(|e| e.vrf == VRF_VN2 && e.forward)
        .expect("vn2 flow");
    assert_eq!(c.packets, c_ok);
    assert_eq!(flows.vrf_active(VRF_VN2), 2);
}

#[test]
fn fip_nat_reply_matches_its_flow() {
    let mut h = harness();
    // VM A to the internet leaves through its floating IP.
    let out = udp_frame(MAC_A, VR, IP_A, OUTSIDE, 64, 40000, 443, b"hi");
    let sent = tx(&h.run1(VM_A, &out), FABRIC);
    let inner = &sent[14 + 20 + 8 + 4..];
    assert_eq!(&inner[12..16], &FIP_A.to_be_bytes());
    let f = list(&mut h);
    assert_eq!(f.len(), 2);
    assert_eq!(
        (f[0].vrf, f[0].dvrf, f[0].action),
        (
            VRF_VN1,
            VRF_PUBLIC,
            FlowAction::Nat {
                snat: Some(FIP_A),
                dnat: None
            }
        )
    );
    assert_eq!(
        (f[1].vrf, f[1].src, f[1].dst, f[1].action),
        (
            VRF_PUBLIC,
            OUTSIDE,
            FIP_A,
            FlowAction::Nat {
                snat: None,
                dnat: Some(IP_A)
            }
        )
    );
    // The reply comes from the gateway with the public VRF's table label and matches the
    // reverse flow.
    let reply = udp_frame(MAC_B, MAC_A, OUTSIDE, FIP_A, 60, 443, 40000, b"ok");
    let enc = from_gateway(&reply);
    let got = tx(&h.run1(FABRIC, &enc), VM_A);
    assert_eq!(&got[14 + 16..14 + 20], &IP_A.to_be_bytes());
    let f = list(&mut h);
    assert_eq!(f.len(), 2, "the reply made no new flow: {f:?}");
    assert_eq!((f[0].packets, f[1].packets), (1, 1));
    // Unsolicited traffic to the floating IP is not permitted into vn1 (policy is one way).
    let probe = udp_frame(MAC_B, MAC_A, OUTSIDE, FIP_A, 60, 443, 40001, b"no");
    let enc = from_gateway(&probe);
    assert_eq!(dropped(&h.run1(FABRIC, &enc)), DropReason::FlowActionDrop);
}

/// An ICMP error frame from `smac`: `src` → `dst`, of `ty`, quoting the IPv4 packet `quoted`.
fn icmp_error(
    smac: MacAddr,
    dmac: MacAddr,
    src: u32,
    dst: u32,
    ty: etherparse::Icmpv4Type,
    quoted: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(smac.0, dmac.0)
        .ipv4(src.to_be_bytes(), dst.to_be_bytes(), 64)
        .icmpv4(ty);
    let mut v = Vec::new();
    b.write(&mut v, quoted).expect("build icmp error");
    v
}

fn port_unreachable() -> etherparse::Icmpv4Type {
    etherparse::Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port)
}

fn time_exceeded() -> etherparse::Icmpv4Type {
    etherparse::Icmpv4Type::TimeExceeded(etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit)
}

/// The IPv4 header and first 8 transport bytes of the IPv4 packet `ip` (what RFC 792 quotes).
fn quote(ip: &[u8]) -> Vec<u8> {
    let hl = usize::from(ip[0] & 0x0f) * 4;
    ip[..hl + 8].to_vec()
}

/// VM C answers VM A's UDP with port unreachable: the error is the reply direction of A's flow,
/// so it is forwarded to A on that flow (counted there, no flow of its own); an error A's flow
/// denies is dropped by the flow, one addressed to someone else than the quoted sender is not
/// delivered.
#[test]
fn icmp_error_follows_the_flow_it_quotes() {
    let mut h = harness();
    let udp = udp_frame(MAC_A, VR, IP_A, IP_C, 64, 40000, 5001, b"probe");
    let at_c = tx(&h.run1(VM_A, &udp), VM_C);
    let err = icmp_error(
        MAC_C,
        VR,
        IP_C,
        IP_A,
        port_unreachable(),
        &quote(&at_c[14..]),
    );
    let got = tx(&h.run1(VM_C, &err), VM_A);
    assert_eq!(&got[0..6], &MAC_A.0);
    assert_eq!(&got[6..12], &VR.0);
    // Routed as is: only the TTL (and so the IP checksum) changed.
    assert_eq!(got.len(), err.len());
    assert_eq!(got[14 + 8], 63);
    assert_eq!(&got[14 + 12..14 + 20], &err[14 + 12..14 + 20]);
    assert_eq!(&got[34..], &err[34..], "ICMP header and quote untouched");
    assert_checksums(&got[14..]);
    let f = list(&mut h);
    assert_eq!(f.len(), 2, "no flow for the error itself: {f:?}");
    assert_eq!(
        (f[0].packets, f[1].packets),
        (1, 1),
        "counted on the reverse"
    );
    assert_eq!((f[1].vrf, f[1].proto, f[1].sport), (VRF_VN2, 17, 5001));
    // Time exceeded quoting only the first 8 bytes of UDP, from an address that is not C (a
    // router in between): the quote decides, not the outer source.
    let te = icmp_error(MAC_C, VR, IP_C, IP_A, time_exceeded(), &quote(&udp[14..]));
    tx(&h.run1(VM_C, &te), VM_A);
    // An error about A's flow sent to B instead of A is not delivered.
    let misdirected = icmp_error(
        MAC_C,
        VR,
        IP_C,
        IP_B,
        port_unreachable(),
        &quote(&at_c[14..]),
    );
    assert_eq!(dropped(&h.run1(VM_C, &misdirected)), DropReason::IcmpError);
    // TCP between the networks is denied: an error quoting such a packet takes the drop flow.
    let syn = tcp_with(MAC_A, IP_A, IP_C, 40001, 22, 0x02);
    assert_eq!(dropped(&h.run1(VM_A, &syn)), DropReason::FlowActionDrop);
    let err = icmp_error(
        MAC_C,
        VR,
        IP_C,
        IP_A,
        port_unreachable(),
        &quote(&syn[14..]),
    );
    assert_eq!(dropped(&h.run1(VM_C, &err)), DropReason::FlowActionDrop);
    assert_eq!(list(&mut h).len(), 4);
    // Errors about echo requests use the echo id as the ports, as the echo flow does.
    let ping = ping_frame(MAC_A, VR, IP_A, IP_C, 64, 77);
    let at_c = tx(&h.run1(VM_A, &ping), VM_C);
    let err = icmp_error(MAC_C, VR, IP_C, IP_A, time_exceeded(), &quote(&at_c[14..]));
    tx(&h.run1(VM_C, &err), VM_A);
    assert_eq!(list(&mut h).len(), 6);
}

/// An ICMP error quoting a packet no flow knows (a scan, or a flow gone) is dropped as
/// `ICMP errors` and creates nothing; one whose quote is unreadable is an invalid packet.
#[test]
fn icmp_error_for_unknown_flow_is_dropped() {
    let mut h = harness();
    let never_sent = udp_frame(MAC_A, VR, IP_A, IP_C, 63, 40000, 5001, b"x");
    let err = icmp_error(
        MAC_C,
        VR,
        IP_C,
        IP_A,
        port_unreachable(),
        &quote(&never_sent[14..]),
    );
    assert_eq!(dropped(&h.run1(VM_C, &err)), DropReason::IcmpError);
    assert!(list(&mut h).is_empty(), "an error sets up no flow");
    assert_eq!(drops(&h, DropReason::IcmpError), 1);
    // The flow existed but aged out: its errors go with it.
    let udp = udp_frame(MAC_A, VR, IP_A, IP_C, 64, 40000, 5001, b"x");
    tx(&h.run1(VM_A, &udp), VM_C);
    tx(&h.run1(VM_C, &err), VM_A);
    h.flows()
        .set_clock(Some(1000 + FlowParams::default().idle_timeout_s));
    assert_eq!(dropped(&h.run1(VM_C, &err)), DropReason::IcmpError);
    // A quote too short for an IPv4 header.
    let bad = icmp_error(MAC_C, VR, IP_C, IP_A, port_unreachable(), &[0x45, 0, 0]);
    assert_eq!(dropped(&h.run1(VM_C, &bad)), DropReason::InvalidPacket);
    // Echo requests and replies are not errors: still flows of their own.
    let ping = ping_frame(MAC_C, VR, IP_C, IP_A, 64, 5);
    tx(&h.run1(VM_C, &ping), VM_A);
}

/// VM A talks to the internet through its floating IP. An ICMP error from a router out there
/// comes back to the floating IP quoting the SNATed packet: the lookup DNATs the outer
/// destination and the quoted source (checksums kept right), and the error follows A's flow to A.
/// The other way, A's error about a reply is SNATed, quote included, and tunnelled out.
#[test]
fn icmp_error_with_floating_ip_nat_follows_its_flow() {
    const ROUTER: u32 = ip(203, 0, 113, 1);
    let mut h = harness();
    let out = udp_frame(MAC_A, VR, IP_A, OUTSIDE, 64, 40000, 443, b"hi");
    let sent = tx(&h.run1(VM_A, &out), FABRIC);
    let inner = &sent[14 + 20 + 8 + 4..];
    assert_eq!(&inner[12..16], &FIP_A.to_be_bytes());
    let err = icmp_error(MAC_B, MAC_A, ROUTER, FIP_A, time_exceeded(), &quote(inner));
    let enc = from_gateway(&err);
    let got = tx(&h.run1(FABRIC, &enc), VM_A);
    let ip = &got[14..];
    assert_eq!(&ip[12..16], &ROUTER.to_be_bytes());
    assert_eq!(&ip[16..20], &IP_A.to_be_bytes(), "outer DNAT");
    let q = &ip[28..];
    assert_eq!(&q[12..16], &IP_A.to_be_bytes(), "quoted source translated");
    assert_eq!(&q[16..20], &OUTSIDE.to_be_bytes());
    assert_eq!(
        &q[20..24],
        &[0x9c, 0x40, 0x01, 0xbb],
        "quoted ports 40000 → 443"
    );
    assert_checksums(ip);
    let qh = etherparse::Ipv4HeaderSlice::from_slice(q)
        .expect("quoted header")
        .to_header();
    assert_eq!(qh.calc_header_checksum(), qh.header_checksum);
    let f = list(&mut h);
    assert_eq!(f.len(), 2, "{f:?}");
    assert_eq!((f[0].packets, f[1].packets), (1, 1));
    // A reply comes in; A answers it with port unreachable.
    let reply = udp_frame(MAC_B, MAC_A, OUTSIDE, FIP_A, 60, 443, 40000, b"ok");
    let enc = from_gateway(&reply);
    let at_a = tx(&h.run1(FABRIC, &enc), VM_A);
    let err = icmp_error(
        MAC_A,
        VR,
        IP_A,
        OUTSIDE,
        port_unreachable(),
        &quote(&at_a[14..]),
    );
    let sent = tx(&h.run1(VM_A, &err), FABRIC);
    let ip = &sent[14 + 20 + 8 + 4..];
    assert_eq!(&ip[12..16], &FIP_A.to_be_bytes(), "outer SNAT");
    assert_eq!(&ip[16..20], &OUTSIDE.to_be_bytes());
    assert_eq!(
        &ip[28 + 16..28 + 20],
        &FIP_A.to_be_bytes(),
        "quoted destination"
    );
    assert_checksums(ip);
    let f = list(&mut h);
    assert_eq!(f.len(), 2, "{f:?}");
    assert_eq!((f[0].packets, f[1].packets), (2, 2));
    // An error to the floating IP about a flow it never had is dropped.
    let stray = udp_frame(MAC_A, VR, FIP_A, OUTSIDE, 64, 40002, 443, b"?");
    let err = icmp_error(
        MAC_B,
        MAC_A,
        ROUTER,
        FIP_A,
        time_exceeded(),
        &quote(&stray[14..]),
    );
    let enc = from_gateway(&err);
    assert_eq!(dropped(&h.run1(FABRIC, &enc)), DropReason::IcmpError);
}

#[test]
fn df_packet_over_mtu_is_trapped_with_mtu() {
    let mut h = Harness::new(Limits::default());
    h.program(ops());
    let payload = vec![0u8; 1500 - 20 - 8];
    let big = udp_frame(MAC_A, VR, IP_A, IP_REMOTE_UDP, 64, 40000, 5001, &payload);
    assert_ne!(big[14 + 6] & 0x40, 0, "etherparse sets DF");
    let out = tx(&h.run1(VM_A, &big), AGENT);
    let hdr = AgentHeader::parse(&out).expect("agent header");
    assert_eq!(hdr.reason, TrapReason::HandleDf);
    assert_eq!(hdr.param, 1500 - 32, "fabric MTU minus MPLSoUDP overhead");
    assert_eq!((hdr.vif, hdr.vrf), (VM_A, VRF_VN1));
    assert_eq!(&out[16..], &big[..], "the original packet, untouched");
    // MPLSoGRE has 4 bytes less overhead.
    let big_gre = udp_frame(MAC_A, VR, IP_A, IP_REMOTE_GRE, 64, 40000, 5001, &payload);
    let hdr = AgentHeader::parse(&tx(&h.run1(VM_A, &big_gre), AGENT)).expect("header");
    assert_eq!(hdr.param, 1500 - 28);
    // Without DF it is encapsulated and fragmented (see the next test).
    let no_df = clear_df(&big);
    tx(&h.run1(VM_A, &no_df), FABRIC);
    assert_eq!(h.sent.len(), 2);
    assert!(h.sent.iter().all(|(v, f)| *v == FABRIC && f.len() <= 1514));
    // At the MTU exactly it fits.
    let fits = udp_frame(MAC_A, VR, IP_A, IP_REMOTE_UDP, 64, 1, 2, &payload[32..]);
    tx(&h.run1(VM_A, &fits), FABRIC);
    // A smaller fabric MTU takes effect on existing tunnels.
    h.program(vec![TableOp::AddVif(VifSpecExt::fabric(1400))]);
    let hdr = AgentHeader::parse(&tx(&h.run1(VM_A, &fits), AGENT)).expect("header");
    assert_eq!(hdr.param, 1400 - 32);
}

/// `frame` (Ethernet + IPv4) with DF cleared and the header checksum fixed.
fn clear_df(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[14 + 6] &= !0x40;
    f[14 + 10] = 0;
    f[14 + 11] = 0;
    let ck = vrouter_dataplane::wire::checksum::checksum(&f[14..34]);
    f[14 + 10..14 + 12].copy_from_slice(&ck.to_be_bytes());
    f
}

/// Checks one fragment frame sent to the fabric through `tunnel` and returns its inner IPv4
/// header and payload.
fn check_fragment(
    f: &[u8],
    gre: bool,
    label: u32,
    remote: u32,
    max: usize,
) -> (etherparse::Ipv4Header, Vec<u8>) {
    assert!(f.len() <= max, "{} > {max}", f.len());
    assert_eq!(&f[0..6], &UNDERLAY_MAC.0);
    assert_eq!(&f[6..12], &FABRIC_MAC.0);
    let (oh, rest) = etherparse::Ipv4Header::from_slice(&f[14..]).expect("outer ipv4");
    assert_eq!(oh.calc_header_checksum(), oh.header_checksum, "outer sum");
    assert_eq!(usize::from(oh.total_len), f.len() - 14);
    assert!(!oh.dont_fragment && !oh.more_fragments && oh.fragment_offset.value() == 0);
    assert_eq!(
        (oh.source, oh.destination),
        (HOST_IP.to_be_bytes(), remote.to_be_bytes())
    );
    assert_eq!(oh.time_to_live, 64);
    let mpls = if gre {
        assert_eq!(oh.protocol, etherparse::IpNumber::GRE);
        assert_eq!(&rest[0..4], &[0, 0, 0x88, 0x47]);
        &rest[4..]
    } else {
        assert_eq!(oh.protocol, etherparse::IpNumber::UDP);
        assert_eq!(u16::from_be_bytes([rest[2], rest[3]]), 6635);
        assert_eq!(
            usize::from(u16::from_be_bytes([rest[4], rest[5]])),
            rest.len()
        );
        assert_eq!(&rest[6..8], &[0, 0], "no UDP checksum");
        &rest[8..]
    };
    let word = u32::from_be_bytes([mpls[0], mpls[1], mpls[2], mpls[3]]);
    assert_eq!(
        (word >> 12, word & 0x100 != 0, word & 0xff),
        (label, true, 63)
    );
    let (ih, payload) = etherparse::Ipv4Header::from_slice(&mpls[4..]).expect("inner ipv4");
    assert_eq!(ih.calc_header_checksum(), ih.header_checksum, "inner sum");
    assert_eq!(usize::from(ih.total_len), mpls.len() - 4);
    (ih, payload.to_vec())
}

/// A 1500-byte packet without DF to a remote VM over a 1500-byte fabric: the inner packet is
/// fragmented (RFC 791) and each fragment encapsulated, every frame within the MTU, one UDP
/// source port and label for all, the fragments reassembling to the original; counted per VRF.
#[test]
fn oversize_without_df_is_fragmented_before_encap() {
    let mut h = Harness::new(Limits::default());
    h.program(ops());
    let payload: Vec<u8> = (0..1500 - 20 - 8).map(|i| (i % 251) as u8).collect();
    for (dst, gre, label) in [
        (IP_REMOTE_UDP, false, LABEL_REMOTE_UDP),
        (IP_REMOTE_GRE, true, LABEL_REMOTE_GRE),
    ] {
        let mut big = clear_df(&udp_frame(MAC_A, VR, IP_A, dst, 64, 40000, 5001, &payload));
        set_ip_id(&mut big, 0x5151 + u16::from(gre));
        tx(&h.run1(VM_A, &big), FABRIC);
        let remote = if gre { REMOTE_GRE } else { REMOTE_UDP };
        assert_eq!(h.sent.len(), 2, "two fragments");
        let mut data = Vec::new();
        let mut sports = Vec::new();
        for (i, (vif, f)) in h.sent.iter().enumerate() {
            assert_eq!(*vif, FABRIC);
            let (ih, body) = check_fragment(f, gre, label, remote, 1514);
            assert_eq!(ih.identification, u16::from_be_bytes([big[18], big[19]]));
            assert_eq!(ih.more_fragments, i == 0);
            assert!(!ih.dont_fragment);
            assert_eq!(usize::from(ih.fragment_offset.value()) * 8, data.len());
            assert_eq!(ih.time_to_live, 63);
            assert_eq!(
                (ih.source, ih.destination),
                (IP_A.to_be_bytes(), dst.to_be_bytes())
            );
            if i == 0 {
                assert_eq!(body.len() % 8, 0);
            }
            data.extend_from_slice(&body);
            sports.push(&f[34..36]);
        }
        // Reassembled: the original UDP header and payload, byte for byte.
        assert_eq!(data, big[34..].to_vec());
        if !gre {
            assert_eq!(sports[0], sports[1], "one flow, one path");
        }
    }
    assert_eq!(h.stats.vrf(VRF_VN1).fragments, 4);
    assert_eq!(h.stats.vif(FABRIC).tx_packets, 4);
    // A smaller fabric MTU: more, smaller fragments.
    h.program(vec![TableOp::AddVif(VifSpecExt::fabric(576))]);
    let big = clear_df(&udp_frame(
        MAC_A,
        VR,
        IP_A,
        IP_REMOTE_UDP,
        64,
        1,
        2,
        &payload,
    ));
    tx(&h.run1(VM_A, &big), FABRIC);
    assert_eq!(h.sent.len(), 3);
    let mut data = Vec::new();
    for (_, f) in &h.sent {
        data.extend_from_slice(&check_fragment(f, false, LABEL_REMOTE_UDP, REMOTE_UDP, 590).1);
    }
    assert_eq!(data, big[34..].to_vec());
    // With too few free buffers for every fragment the packet is dropped whole.
    let mut held = Vec::new();
    while h.pool.available() > 2 {
        held.push(h.pool.alloc().expect("buffer"));
    }
    tx(&h.run1(VM_A, &big), FABRIC);
    assert!(h.sent.is_empty());
    assert_eq!(drops(&h, DropReason::HeadAllocFail), 1);
    for b in held {
        h.pool.free(b);
    }
}

struct VifSpecExt;
impl VifSpecExt {
    fn fabric(mtu: u16) -> vrouter_dataplane::tables::VifSpec {
        vrouter_dataplane::tables::VifSpec {
            id: FABRIC,
            name: "eth1".into(),
            kind: vrouter_dataplane::tables::VifKind::Physical,
            vrf: VRF_FABRIC,
            mac: FABRIC_MAC,
            ip: HOST_IP,
            mtu,
            nh: None,
            allowed: Vec::new(),
        }
    }
}

/// Fragments are routed whole; the flow of a later fragment is its first fragment's.
#[test]
fn fragments_use_the_first_fragments_ports() {
    let mut h = harness();
    let frag = |offset8: u16, more: bool, body: &[u8]| {
        let mut ip = etherparse::Ipv4Header::new(
            body.len() as u16,
            64,
            etherparse::IpNumber::UDP,
            IP_A.to_be_bytes(),
            IP_C.to_be_bytes(),
        )
        .expect("ip");
        ip.identification = 0x4242;
        ip.dont_fragment = false;
        ip.more_fragments = more;
        ip.fragment_offset = etherparse::IpFragOffset::try_new(offset8).expect("offset");
        ip.header_checksum = ip.calc_header_checksum();
        let mut v = Vec::new();
        etherparse::Ethernet2Header {
            source: MAC_A.0,
            destination: VR.0,
            ether_type: etherparse::EtherType::IPV4,
        }
        .write(&mut v)
        .expect("eth");
        ip.write(&mut v).expect("ip");
        v.extend_from_slice(body);
        v
    };
    let mut first = vec![0u8; 24];
    first[0..2].copy_from_slice(&40000u16.to_be_bytes());
    first[2..4].copy_from_slice(&5001u16.to_be_bytes());
    first[4..6].copy_from_slice(&100u16.to_be_bytes());
    let a = frag(0, true, &first);
    let b = frag(3, false, &[7u8; 76]);
    let v = h.run(VM_A, &[&a, &b]);
    tx(&v[0], VM_C);
    tx(&v[1], VM_C);
    let f = list(&mut h);
    assert_eq!(f.len(), 2, "{f:?}");
    assert_eq!((f[0].sport, f[0].dport, f[0].packets), (40000, 5001, 2));
}

#[test]
fn vrfs_without_flows_take_the_fast_path() {
    let mut h = Harness::new(Limits::default());
    h.program(ops());
    let ping = ping_frame(MAC_A, VR, IP_A, IP_B, 64, 1);
    tx(&h.run1(VM_A, &ping), VM_B);
    assert!(list(&mut h).is_empty());
    // Turning flows off again flushes them.
    h.program(policy_ops(0));
    tx(&h.run1(VM_A, &ping), VM_B);
    assert_eq!(list(&mut h).len(), 2);
    h.program(vec![TableOp::SetVrfPolicy {
        vrf: VRF_VN1,
        policy: None,
    }]);
    assert!(list(&mut h).is_empty());
    tx(&h.run1(VM_A, &ping), VM_B);
    assert!(list(&mut h).is_empty());
}

#[test]
fn revoking_a_permit_stops_established_flows() {
    let mut h = harness();
    let ping = ping_frame(MAC_A, VR, IP_A, IP_C, 64, 3);
    tx(&h.run1(VM_A, &ping), VM_C);
    let mut ops = policy_ops(0);
    let TableOp::SetPolicy(mut p) = ops.remove(0) else {
        panic!("first op sets the policy")
    };
    p.rules.remove(0); // no more ICMP pass
    p.rules.insert(
        0,
        vrouter_dataplane::tables::policy::PolicyRule {
            direction: vrouter_dataplane::tables::policy::Direction::Both,
            proto: Some(1),
            src: vrouter_dataplane::tables::policy::Endpoint::Network(VRF_VN1),
            src_ports: (0, u16::MAX),
            dst: vrouter_dataplane::tables::policy::Endpoint::Network(VRF_VN2),
            dst_ports: (0, u16::MAX),
            action: vrouter_dataplane::tables::policy::PolicyAction::Deny,
        },
    );
    h.program(vec![TableOp::SetPolicy(p)]);
    assert_eq!(dropped(&h.run1(VM_A, &ping)), DropReason::FlowActionDrop);
}

#[test]
fn policy_operations_are_validated() {
    let mut h = harness();
    let e = h.try_program(vec![TableOp::DelPolicy(POLICY_VN1_VN2)]);
    assert!(e.is_err(), "in use");
    let e = h.try_program(vec![TableOp::SetVrfPolicy {
        vrf: VRF_PUBLIC,
        policy: Some(vrouter_dataplane::tables::VrfPolicy {
            subnets: vec![],
            policies: vec![99],
            max_flows: 0,
        }),
    }]);
    assert!(e.is_err(), "unknown policy");
    h.program(vec![
        TableOp::SetVrfPolicy {
            vrf: VRF_VN1,
            policy: None,
        },
        TableOp::SetVrfPolicy {
            vrf: VRF_VN2,
            policy: None,
        },
        TableOp::DelPolicy(POLICY_VN1_VN2),
    ]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Random bytes after valid headers, from every kind of interface, with flows on: never a
    /// panic, every packet transmitted or dropped with a reason.
    #[test]
    fn random_packets_never_panic_with_flows(
        vif in prop_oneof![Just(VM_A), Just(VM_B), Just(VM_C), Just(FABRIC), Just(AGENT)],
        proto in prop_oneof![Just(1u8), Just(6u8), Just(17u8), any::<u8>()],
        dst in prop_oneof![Just(IP_A), Just(IP_B), Just(IP_C), Just(OUTSIDE), Just(FIP_A), any::<u32>()],
        flags_frag in any::<u16>(),
        body in proptest::collection::vec(any::<u8>(), 0..64),
        tail in proptest::collection::vec(any::<u8>(), 0..8),
        clock in 0u32..2000,
    ) {
        let mut h = harness();
        h.flows().set_clock(Some(clock));
        let (smac, src) = match vif { VM_A => (MAC_A, IP_A), VM_B => (MAC_B, IP_B), VM_C => (MAC_C, IP_C), _ => (UNDERLAY_MAC, OUTSIDE) };
        let mut f = udp_frame(smac, VR, src, dst, 64, 1, 2, &body);
        f[14 + 9] = proto;
        f[14 + 6..14 + 8].copy_from_slice(&flags_frag.to_be_bytes());
        f[14 + 10] = 0;
        f[14 + 11] = 0;
        let ck = vrouter_dataplane::wire::checksum::checksum(&f[14..34]);
        f[14 + 10..14 + 12].copy_from_slice(&ck.to_be_bytes());
        f.extend_from_slice(&tail);
        let frames: Vec<&[u8]> = vec![&f, &f, &f];
        for v in h.run(vif, &frames) {
            if let Verdict::Drop(r) = v { prop_assert_ne!(r, DropReason::Misc); }
        }
        let _ = list(&mut h);
    }
}

/// An established flow forwards on the route its first packet was looked up with only while
/// the tables are unchanged: after a route change its packets follow the new route, each time.
#[test]
fn an_established_flow_follows_route_changes() {
    let mut h = harness();
    let udp = udp_frame(MAC_A, VR, IP_A, IP_C, 64, 40000, 5001, b"payload");
    let local = |h: &mut Harness| {
        let out = tx(&h.run1(VM_A, &udp), VM_C);
        assert_eq!(&out[0..6], &MAC_C.0);
    };
    let remote = |h: &mut Harness| {
        let out = tx(&h.run1(VM_A, &udp), FABRIC);
        // Outer Ethernet + IPv4 + UDP, the label (20 bits) with bottom-of-stack, the inner IP.
        let mpls = u32::from_be_bytes([out[42], out[43], out[44], out[45]]);
        assert_eq!((mpls >> 12, mpls >> 8 & 1), (77, 1), "{out:02x?}");
        let addrs = [IP_A.to_be_bytes(), IP_C.to_be_bytes()].concat();
        assert_eq!(&out[46 + 12..46 + 20], &addrs[..]);
    };
    let route_c = |nh, label| {
        vec![TableOp::AddRoute {
            vrf: VRF_VN1,
            prefix: IP_C,
            plen: 32,
            route: vrouter_dataplane::tables::Route {
                nh,
                label,
                proxy_arp: true,
            },
        }]
    };
    // One batch each: the first sets the flow up, the next ones hit it.
    for _ in 0..3 {
        local(&mut h);
    }
    // VM C moves to another host: its /32 now points at a tunnel, with a label.
    h.program(route_c(NH_TUN_UDP, Some(77)));
    for _ in 0..3 {
        remote(&mut h);
    }
    // And back.
    h.program(route_c(NH_C, None));
    for _ in 0..3 {
        local(&mut h);
    }
    let f = list(&mut h);
    assert_eq!(f.len(), 2, "one pair: {f:?}");
    assert_eq!((f[0].dst, f[0].action), (IP_C, FlowAction::Forward));
}
