//! `vrctl trace` runs a frame through a copy of the daemon's tables rebuilt from its state dump
//! (`Harness::from_dump`): the copy must forward, rewrite and drop exactly as the original does.

mod common;

use common::*;
use vrouter_dataplane::ctl::handler::{handle, DaemonInfo};
use vrouter_dataplane::ctl::proto::{Request, Response};
use vrouter_dataplane::drop::DropReason;
use vrouter_dataplane::harness::fixture::*;
use vrouter_dataplane::harness::{Harness, Verdict};
use vrouter_dataplane::tables::Limits;
use vrouter_dataplane::wire::MacAddr;

/// The fixture host with its network policy, and the same host rebuilt from its dump.
fn original_and_copy() -> (Harness, Harness) {
    let mut h = Harness::new(Limits::default());
    h.program(ops());
    h.program(policy_ops(64));
    let info = DaemonInfo {
        lcores: 1,
        ..Default::default()
    };
    let Response::State(dump) = handle(&mut h.writer, &h.stats, &info, Request::DumpAll) else {
        panic!("DumpAll did not answer a dump");
    };
    let copy = Harness::from_dump(&dump).unwrap_or_else(|(i, e)| panic!("op {i} refused: {e}"));
    (h, copy)
}

#[test]
fn a_copy_from_the_dump_gives_every_frame_the_same_verdict_and_bytes() {
    let (mut orig, mut copy) = original_and_copy();
    let from_a = |dst: u32, ttl: u8| {
        udp_frame(
            MAC_A,
            MacAddr::VROUTER,
            IP_A,
            dst,
            ttl,
            40000,
            5001,
            b"trace me",
        )
    };
    let cases: Vec<(&str, u16, Vec<u8>)> = vec![
        ("A -> B, local", VM_A, from_a(IP_B, 64)),
        ("A -> remote MPLSoUDP", VM_A, from_a(IP_REMOTE_UDP, 64)),
        ("A -> remote MPLSoGRE", VM_A, from_a(IP_REMOTE_GRE, 64)),
        ("A -> outside (floating IP)", VM_A, from_a(OUTSIDE, 64)),
        ("A -> C, other network", VM_A, from_a(IP_C, 64)),
        ("A, TTL 1", VM_A, from_a(IP_B, 1)),
        (
            "B -> C over TCP, which the policy denies",
            VM_B,
            tcp_frame(MAC_B, MacAddr::VROUTER, IP_B, IP_C, 64, 4001, 22),
        ),
        (
            "B -> C over UDP, which the policy passes",
            VM_B,
            udp_frame(MAC_B, MacAddr::VROUTER, IP_B, IP_C, 64, 4000, 53, b"q"),
        ),
        (
            "A spoofing B's address",
            VM_A,
            udp_frame(MAC_A, MacAddr::VROUTER, IP_B, IP_REMOTE_UDP, 64, 1, 2, b"x"),
        ),
        (
            "ARP for the gateway",
            VM_A,
            arp_request(MAC_A, IP_A, GW_VN1),
        ),
        (
            "MPLSoUDP from the fabric to A",
            FABRIC,
            mpls_udp_frame(
                UNDERLAY_MAC,
                FABRIC_MAC,
                REMOTE_UDP,
                HOST_IP,
                50000,
                6635,
                LABEL_A,
                64,
                &udp_frame(MAC_B, MAC_A, IP_REMOTE_UDP, IP_A, 64, 5001, 40000, b"back"),
            ),
        ),
    ];
    let mut drops = Vec::new();
    for (what, vif, frame) in &cases {
        let a = orig.run1(*vif, frame);
        let b = copy.run1(*vif, frame);
        assert_eq!(a, b, "{what}");
        if let Verdict::Drop(r) = a {
            drops.push(r);
        }
    }
    // The cases reach the drops a trace must explain: spoofing and policy.
    for r in [DropReason::InvalidSource, DropReason::FlowActionDrop] {
        assert!(drops.contains(&r), "no {r:?} among {drops:?}");
    }
    assert!(
        matches!(copy.run1(VM_A, &from_a(IP_REMOTE_UDP, 64)), Verdict::Tx { vif, .. } if vif == FABRIC),
        "a remote destination leaves on the fabric"
    );
}

#[test]
fn the_copy_starts_with_no_flows_and_leaves_the_original_alone() {
    let (mut orig, copy) = original_and_copy();
    orig.run1(
        VM_A,
        &udp_frame(MAC_A, MacAddr::VROUTER, IP_A, IP_B, 64, 40000, 5001, b"x"),
    );
    let before = orig.flows().stats(|_| None).active;
    assert_eq!(copy.flows().stats(|_| None).active, 0);
    let mut copy = copy;
    copy.run1(
        VM_A,
        &udp_frame(MAC_A, MacAddr::VROUTER, IP_A, IP_B, 64, 40001, 5001, b"y"),
    );
    assert_eq!(orig.flows().stats(|_| None).active, before);
}
