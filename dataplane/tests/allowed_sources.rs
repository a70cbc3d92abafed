//! Anti-spoofing with further sources (issue 20): a VM may send from its secondary addresses
//! and from its allowed address pairs (a VIP, a prefix, a virtual MAC); anything else is still
//! `Invalid Source`.

mod common;

use common::*;
use vrouter_dataplane::drop::DropReason;
use vrouter_dataplane::harness::fixture::*;
use vrouter_dataplane::harness::{Harness, Verdict};
use vrouter_dataplane::tables::{AllowedSource, Limits, TableOp, VifKind, VifSpec};
use vrouter_dataplane::wire::MacAddr;

/// VM A's secondary address.
const SECONDARY: u32 = ip(10, 1, 1, 50);
/// A VIP VM A shares with a peer (allowed address pair with a VRRP virtual MAC).
const VIP: u32 = ip(10, 1, 1, 100);
/// The VRRP virtual MAC of VRID 1.
const VMAC: MacAddr = MacAddr([0x00, 0x00, 0x5e, 0x00, 0x01, 0x01]);
/// A whole prefix VM A routes for (allowed address pair 10.1.1.192/28).
const PAIR_NET: u32 = ip(10, 1, 1, 192);

fn harness_with(allowed: Vec<AllowedSource>) -> Harness {
    let mut h = Harness::new(Limits::default());
    h.program(ops());
    h.program(vec![TableOp::AddVif(VifSpec {
        id: VM_A,
        name: "vif1.0".into(),
        kind: VifKind::Virtual,
        vrf: VRF_VN1,
        mac: MAC_A,
        ip: IP_A,
        mtu: 1500,
        nh: Some(NH_A),
        allowed,
    })]);
    h
}

fn from_a(smac: MacAddr, src: u32) -> Vec<u8> {
    udp_frame(smac, MacAddr::VROUTER, src, IP_B, 64, 40000, 5001, b"x")
}

fn verdict_of(h: &mut Harness, frame: &[u8]) -> Result<u16, DropReason> {
    match h.run1(VM_A, frame) {
        Verdict::Tx { vif, .. } => Ok(vif),
        Verdict::Drop(r) => Err(r),
    }
}

#[test]
fn secondary_addresses_and_address_pairs_pass_and_nothing_else_does() {
    let mut h = harness_with(vec![
        AllowedSource {
            ip: SECONDARY,
            len: 32,
            mac: None,
        },
        AllowedSource {
            ip: VIP,
            len: 32,
            mac: Some(VMAC),
        },
        AllowedSource {
            ip: PAIR_NET,
            len: 28,
            mac: None,
        },
    ]);
    assert_eq!(
        verdict_of(&mut h, &from_a(MAC_A, IP_A)),
        Ok(VM_B),
        "primary"
    );
    assert_eq!(
        verdict_of(&mut h, &from_a(MAC_A, SECONDARY)),
        Ok(VM_B),
        "secondary"
    );
    assert_eq!(verdict_of(&mut h, &from_a(MAC_A, VIP)), Ok(VM_B), "VIP");
    assert_eq!(
        verdict_of(&mut h, &from_a(VMAC, VIP)),
        Ok(VM_B),
        "VIP from the virtual MAC"
    );
    assert_eq!(
        verdict_of(&mut h, &from_a(MAC_A, ip(10, 1, 1, 207))),
        Ok(VM_B),
        "inside the pair's /28"
    );
    for (src, why) in [
        (ip(10, 1, 1, 51), "next to the secondary"),
        (ip(10, 1, 1, 208), "just past the /28"),
        (IP_B, "the neighbour's address"),
    ] {
        assert_eq!(
            verdict_of(&mut h, &from_a(MAC_A, src)),
            Err(DropReason::InvalidSource),
            "{why}"
        );
    }
    assert_eq!(
        verdict_of(&mut h, &from_a(MAC_B, IP_A)),
        Err(DropReason::InvalidSource),
        "a MAC no pair names"
    );
    let drops: std::collections::HashMap<_, _> = h.stats.drops().into_iter().collect();
    assert_eq!(drops[&DropReason::InvalidSource], 4);
}

#[test]
fn without_allowed_sources_a_secondary_address_is_spoofing() {
    let mut h = harness_with(Vec::new());
    assert_eq!(
        verdict_of(&mut h, &from_a(MAC_A, SECONDARY)),
        Err(DropReason::InvalidSource)
    );
    assert_eq!(
        verdict_of(&mut h, &from_a(VMAC, VIP)),
        Err(DropReason::InvalidSource)
    );
}

#[test]
fn an_allowed_prefix_longer_than_32_is_refused() {
    let mut h = Harness::new(Limits::default());
    h.program(ops());
    let bad = TableOp::AddVif(VifSpec {
        id: VM_A,
        name: "vif1.0".into(),
        kind: VifKind::Virtual,
        vrf: VRF_VN1,
        mac: MAC_A,
        ip: IP_A,
        mtu: 1500,
        nh: Some(NH_A),
        allowed: vec![AllowedSource {
            ip: VIP,
            len: 33,
            mac: None,
        }],
    });
    let err = h.try_program(vec![bad]).expect_err("refused");
    assert!(err.1.to_string().contains("longer than 32"), "{}", err.1);
}
