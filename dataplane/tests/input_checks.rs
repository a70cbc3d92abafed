//! Strict input checks (issue 24) beyond the one-defect frames of `scenarios.rs`: the DHCP trap
//! path, spoofed MACs whatever the destination, group frames, and which reason a frame with a
//! corrupted IPv4 header is counted under (the checksum's: none of its fields can be trusted).

mod common;

use common::*;
use vrouter_dataplane::drop::DropReason;
use vrouter_dataplane::harness::fixture::*;
use vrouter_dataplane::harness::{Harness, Verdict};
use vrouter_dataplane::tables::Limits;
use vrouter_dataplane::trap::{AgentHeader, TrapReason};
use vrouter_dataplane::wire::MacAddr;

fn harness() -> Harness {
    let mut h = Harness::new(Limits::default());
    h.program(ops());
    h
}

fn dropped(v: &Verdict) -> DropReason {
    match v {
        Verdict::Drop(r) => *r,
        other => panic!("expected a drop, got {other:?}"),
    }
}

/// `frame` (Ethernet + IPv4) with bit `bit` of its IPv4 header flipped and the checksum left
/// as it was.
fn flip(frame: &[u8], bit: usize) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[14 + bit / 8] ^= 0x80 >> (bit % 8);
    f
}

fn drop_count(h: &Harness, r: DropReason) -> u64 {
    h.stats
        .drops()
        .into_iter()
        .find_map(|(k, n)| (k == r).then_some(n))
        .unwrap_or(0)
}

#[test]
fn a_dhcp_request_with_a_bad_ip_checksum_is_dropped_not_trapped() {
    let mut h = harness();
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
    // Identification, TTL and the checksum itself: fields the DHCP classification does not read.
    for bit in [32, 64, 80] {
        assert_eq!(
            dropped(&h.run1(VM_A, &flip(&discover, bit))),
            DropReason::CksumErr,
            "bit {bit}"
        );
    }
    match h.run1(VM_A, &discover) {
        Verdict::Tx { vif, frame } if vif == AGENT => assert_eq!(
            AgentHeader::parse(&frame).map(|x| x.reason),
            Some(TrapReason::L3Protocols)
        ),
        other => panic!("the good request goes to the agent, got {other:?}"),
    }
    assert_eq!(drop_count(&h, DropReason::CksumErr), 3);
}

#[test]
fn any_flipped_bit_of_a_vm_header_is_a_checksum_error_not_spoofing_or_a_bad_route() {
    // Flips in the addresses, protocol, flags or TTL would otherwise look like spoofing, a DHCP
    // request, a fragment or an expired packet; the checksum says the header is corrupt.
    let mut h = harness();
    let good = udp_frame(MAC_A, MacAddr::VROUTER, IP_A, IP_B, 64, 40000, 5001, b"x");
    let mut n = 0;
    // Past the version/IHL byte and the total length (those are length errors).
    for bit in (8..16).chain(32..160) {
        assert_eq!(
            dropped(&h.run1(VM_A, &flip(&good, bit))),
            DropReason::CksumErr,
            "bit {bit}"
        );
        n += 1;
    }
    assert_eq!(drop_count(&h, DropReason::CksumErr), n);
    assert_eq!(drop_count(&h, DropReason::InvalidSource), 0);
}

#[test]
fn a_spoofed_source_mac_is_invalid_source_whatever_the_destination_mac() {
    let mut h = harness();
    let cases = [
        ("to the vrouter", MacAddr::VROUTER, IP_B),
        ("to another vm's mac", MAC_B, IP_B),
        ("broadcast", MacAddr::BROADCAST, u32::MAX),
        (
            "multicast",
            MacAddr([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]),
            0xe000_00fb,
        ),
    ];
    for (what, dmac, dst) in cases {
        let f = udp_frame(MAC_B, dmac, IP_A, dst, 64, 5353, 5353, b"x");
        assert_eq!(
            dropped(&h.run1(VM_A, &f)),
            DropReason::InvalidSource,
            "{what}"
        );
    }
    assert_eq!(drop_count(&h, DropReason::InvalidSource), 4);
}

#[test]
fn group_frames_from_a_vm_are_checked_like_unicast_ones() {
    let mut h = harness();
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
        !matches!(h.run1(VM_A, &mcast), Verdict::Drop(_)),
        "a good multicast frame passes the input checks"
    );
    assert_eq!(
        dropped(&h.run1(VM_A, &flip(&mcast, 80))),
        DropReason::CksumErr
    );
    let spoofed_ip = udp_frame(
        MAC_A,
        MacAddr::BROADCAST,
        IP_B,
        u32::MAX,
        64,
        5353,
        5353,
        b"x",
    );
    assert_eq!(
        dropped(&h.run1(VM_A, &spoofed_ip)),
        DropReason::InvalidSource
    );
}

#[test]
fn a_bad_outer_checksum_on_the_fabric_is_a_checksum_error_whatever_the_packet_is_for() {
    let mut h = harness();
    let inner =
        udp_frame(MAC_B, MAC_A, IP_REMOTE_UDP, IP_A, 63, 5001, 40000, b"reply")[14..].to_vec();
    let overlay = mpls_udp_frame(
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
    // Flips of the fragment bits, the protocol or the destination address would otherwise send
    // the packet elsewhere (Fragments, the host, Not For Host); a flipped UDP length would not
    // be reached.
    for bit in [32, 50, 64, 79, 159] {
        assert_eq!(
            dropped(&h.run1(FABRIC, &flip(&overlay, bit))),
            DropReason::CksumErr,
            "bit {bit}"
        );
    }
    // Not overlay traffic: for the host stack, verified all the same.
    let ssh = udp_frame(
        UNDERLAY_MAC,
        FABRIC_MAC,
        REMOTE_UDP,
        HOST_IP,
        64,
        40000,
        22,
        b"x",
    );
    assert_eq!(
        dropped(&h.run1(FABRIC, &flip(&ssh, 80))),
        DropReason::CksumErr
    );
    assert!(matches!(h.run1(FABRIC, &ssh), Verdict::Tx { vif, .. } if vif == VHOST));
    assert_eq!(drop_count(&h, DropReason::CksumErr), 6);
}
