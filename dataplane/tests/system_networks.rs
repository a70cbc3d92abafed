//! ip-fabric interfaces in the pipeline (issue 19), frame by frame on the test harness: a
//! system VM's vif in the fabric VRF with its /32 there. The fabric side answers ARP for it
//! with the fabric MAC and routes underlay packets to it; its own ARP and frames go out to the
//! underlay with the fabric MAC as source; everything else on the fabric and the host
//! interface goes where it went before.

mod common;

use common::*;
use vrouter_dataplane::harness::fixture::*;
use vrouter_dataplane::harness::{Harness, Verdict};
use vrouter_dataplane::tables::{Limits, NexthopSpec, Route, TableOp, VifKind, VifSpec};
use vrouter_dataplane::wire::MacAddr;

/// The system VM's vif, nexthop, MAC and Management address (on the underlay).
const SYS_VIF: u16 = 9;
const SYS_NH: u32 = 90;
const SYS_MAC: MacAddr = MacAddr([0x06, 0, 0x0a, 0, 0, 0x32]);
const SYS_IP: u32 = ip(192, 168, 100, 50);
/// An underlay neighbour (the management server, say) and its MAC.
const MGMT: u32 = ip(192, 168, 100, 9);
const MGMT_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x99, 0x99, 0x09]);

fn harness() -> Harness {
    let mut h = Harness::new(Limits::default());
    h.program(ops());
    h.program(vec![
        TableOp::AddVif(VifSpec {
            id: SYS_VIF,
            name: "vif90.0".into(),
            kind: VifKind::Virtual,
            vrf: VRF_FABRIC,
            mac: SYS_MAC,
            ip: SYS_IP,
            mtu: 1500,
            nh: Some(SYS_NH),
            allowed: Vec::new(),
        }),
        TableOp::AddNh {
            id: SYS_NH,
            spec: NexthopSpec::Encap {
                oif: SYS_VIF,
                dmac: SYS_MAC,
                smac: MacAddr::VROUTER,
            },
        },
        TableOp::AddRoute {
            vrf: VRF_FABRIC,
            prefix: SYS_IP,
            plen: 32,
            route: Route {
                nh: SYS_NH,
                label: None,
                proxy_arp: true,
            },
        },
    ]);
    h
}

fn tx(v: &Verdict, vif: u16) -> Vec<u8> {
    match v {
        Verdict::Tx { vif: got, frame } if *got == vif => frame.clone(),
        other => panic!("expected transmit on vif {vif}, got {other:?}"),
    }
}

/// An ARP reply `spa is at sha` to `tha`/`tpa`.
fn arp_reply(sha: MacAddr, spa: u32, tha: MacAddr, tpa: u32) -> Vec<u8> {
    let mut v = arp_request(sha, spa, tpa);
    v[0..6].copy_from_slice(&tha.0);
    v[21] = 2;
    v[32..38].copy_from_slice(&tha.0);
    v
}

#[test]
fn the_fabric_side_answers_arp_for_an_ip_fabric_vm_with_the_fabric_mac() {
    let mut h = harness();
    let out = tx(
        &h.run1(FABRIC, &arp_request(MGMT_MAC, MGMT, SYS_IP)),
        FABRIC,
    );
    assert_eq!(&out[0..6], &MGMT_MAC.0, "to the asker");
    assert_eq!(&out[6..12], &FABRIC_MAC.0);
    assert_eq!(out[21], 2, "a reply");
    assert_eq!(&out[22..28], &FABRIC_MAC.0, "sha");
    assert_eq!(&out[28..32], &ip4(SYS_IP), "spa");
    assert_eq!(&out[32..38], &MGMT_MAC.0, "tha");
    assert_eq!(&out[38..42], &ip4(MGMT), "tpa");
}

#[test]
fn underlay_packets_for_an_ip_fabric_vm_are_routed_to_its_vif() {
    let mut h = harness();
    let ping = ping_frame(MGMT_MAC, FABRIC_MAC, MGMT, SYS_IP, 64, 7);
    let out = tx(&h.run1(FABRIC, &ping), SYS_VIF);
    assert_eq!(&out[0..6], &SYS_MAC.0);
    assert_eq!(&out[6..12], &MacAddr::VROUTER.0);
    assert_eq!(out[22], 63, "one routed hop");
    assert_checksums(&out[14..]);
    assert_eq!(&out[26..], &ping[26..], "addresses and payload unchanged");
    // The same from the host interface (dom0 on vhost0).
    let out = tx(&h.run1(VHOST, &ping), SYS_VIF);
    assert_eq!(&out[0..6], &SYS_MAC.0);
}

#[test]
fn an_ip_fabric_vm_resolves_its_underlay_neighbours_through_the_fabric() {
    let mut h = harness();
    let out = tx(
        &h.run1(SYS_VIF, &arp_request(SYS_MAC, SYS_IP, MGMT)),
        FABRIC,
    );
    assert_eq!(&out[0..6], &[0xff; 6], "still a broadcast");
    assert_eq!(
        &out[6..12],
        &FABRIC_MAC.0,
        "the underlay sees this host's MAC"
    );
    assert_eq!(&out[22..28], &FABRIC_MAC.0, "sha");
    assert_eq!(&out[28..32], &ip4(SYS_IP), "spa");
    assert_eq!(&out[38..42], &ip4(MGMT), "tpa");
    // The neighbour's answer (to this host's MAC, for the VM's address) goes to the VM.
    let reply = arp_reply(MGMT_MAC, MGMT, FABRIC_MAC, SYS_IP);
    let out = tx(&h.run1(FABRIC, &reply), SYS_VIF);
    assert_eq!(&out[0..6], &SYS_MAC.0);
    assert_eq!(&out[22..28], &MGMT_MAC.0, "the neighbour's own MAC");
    assert_eq!(&out[32..38], &SYS_MAC.0, "tha: the VM");
}

#[test]
fn an_ip_fabric_vm_sends_to_the_underlay_as_this_host() {
    let mut h = harness();
    let ping = ping_frame(SYS_MAC, MGMT_MAC, SYS_IP, MGMT, 64, 9);
    let out = tx(&h.run1(SYS_VIF, &ping), FABRIC);
    assert_eq!(&out[0..6], &MGMT_MAC.0);
    assert_eq!(&out[6..12], &FABRIC_MAC.0);
    assert_eq!(&out[12..], &ping[12..], "the packet itself unchanged");
    // Anti-spoofing still holds: another source address is dropped.
    let spoof = ping_frame(SYS_MAC, MGMT_MAC, ip(192, 168, 100, 51), MGMT, 64, 9);
    assert!(matches!(h.run1(SYS_VIF, &spoof), Verdict::Drop(_)));
}

#[test]
fn other_fabric_and_host_traffic_goes_where_it_went() {
    let mut h = harness();
    let ping = ping_frame(UNDERLAY_MAC, FABRIC_MAC, REMOTE_UDP, HOST_IP, 64, 1);
    assert_eq!(tx(&h.run1(FABRIC, &ping), VHOST), ping);
    let arp = arp_request(UNDERLAY_MAC, REMOTE_UDP, HOST_IP);
    assert_eq!(tx(&h.run1(FABRIC, &arp), VHOST), arp);
    assert_eq!(tx(&h.run1(VHOST, &ping), FABRIC), ping);
    assert_eq!(tx(&h.run1(VHOST, &arp), FABRIC), arp);
    // A tenant VM's packet to the system VM's address never reaches its vif (the tenant VRF
    // has no route of the fabric VRF).
    let from_a = ping_frame(MAC_A, MacAddr::VROUTER, IP_A, SYS_IP, 64, 3);
    assert!(h.run1(VM_A, &from_a).sent_on(SYS_VIF).is_none());
}
