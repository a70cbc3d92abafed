//! Property tests: arbitrary input never panics and always ends in a verdict; traffic never
//! leaks between VRFs; encapsulation and NAT round-trip.

mod common;

use common::*;
use proptest::prelude::*;
use vrouter_dataplane::harness::fixture::*;
use vrouter_dataplane::harness::{Harness, Verdict};
use vrouter_dataplane::pipeline::nat::{self, Side};
use vrouter_dataplane::tables::Limits;
use vrouter_dataplane::wire::MacAddr;

fn harness() -> Harness {
    let mut h = Harness::new(Limits::default());
    h.program(ops());
    h
}

const ALL_VIFS: [u16; 7] = [FABRIC, VHOST, AGENT, VM_A, VM_B, VM_C, 77];

/// Valid frames of every kind the pipeline handles, as seeds for mutation.
fn seeds() -> Vec<Vec<u8>> {
    let inner = udp_frame(MAC_B, MAC_A, IP_REMOTE_UDP, IP_A, 60, 1, 2, b"payload")[14..].to_vec();
    vec![
        udp_frame(MAC_A, MacAddr::VROUTER, IP_A, IP_B, 64, 1000, 2000, b"data"),
        tcp_frame(MAC_A, MacAddr::VROUTER, IP_A, OUTSIDE, 64, 1000, 443),
        ping_frame(MAC_A, MacAddr::VROUTER, IP_A, IP_REMOTE_GRE, 2, 9),
        arp_request(MAC_A, IP_A, GW_VN1),
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
        ),
        mpls_gre_frame(
            UNDERLAY_MAC,
            FABRIC_MAC,
            REMOTE_GRE,
            HOST_IP,
            LABEL_PUBLIC_TABLE,
            60,
            &inner,
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic_and_always_get_a_verdict(
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..40),
        vif in proptest::sample::select(ALL_VIFS.to_vec()),
    ) {
        let mut h = harness();
        let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
        let v = h.run(vif, &refs);
        prop_assert_eq!(v.len(), frames.len());
        prop_assert_eq!(h.pool.available(), h.pool.capacity(), "every buffer returned");
    }

    #[test]
    fn mutated_valid_packets_never_panic(
        seed in 0usize..6,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        vif in proptest::sample::select(ALL_VIFS.to_vec()),
    ) {
        let mut f = seeds()[seed].clone();
        for (i, b) in &flips {
            let at = i.index(f.len());
            f[at] = *b;
        }
        let keep = cut.index(f.len() + 1).max(f.len() / 2);
        f.truncate(keep);
        let mut h = harness();
        let v = h.run(vif, &[&f]);
        prop_assert_eq!(v.len(), 1);
    }

    /// A packet entering on a vn2 interface can only leave towards what vn2's routes point at:
    /// VM C itself or the agent. Nothing reaches vn1's VMs, the fabric or the host.
    #[test]
    fn vn2_traffic_never_reaches_another_vrf(
        seed in 0usize..6,
        dst_choice in proptest::sample::select(vec![IP_A, IP_B, IP_REMOTE_UDP, IP_REMOTE_GRE, OUTSIDE, FIP_A, GW_VN1, HOST_IP]),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let mut f = seeds()[seed].clone();
        // Make it look like it comes from VM C, towards somewhere in another network.
        f[6..12].copy_from_slice(&MAC_C.0);
        if f.len() >= 34 && f[12..14] == [8, 0] {
            f[26..30].copy_from_slice(&ip4(IP_C));
            f[30..34].copy_from_slice(&ip4(dst_choice));
            f[24] = 0;
            f[25] = 0;
            let c = vrouter_dataplane::wire::checksum::checksum(&f[14..34]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
        }
        for (i, b) in &flips {
            let at = i.index(f.len());
            f[at] = *b;
        }
        let mut h = harness();
        for v in h.run(VM_C, &[&f]) {
            if let Verdict::Tx { vif, .. } = v {
                prop_assert!(vif == VM_C || vif == AGENT, "leaked to vif {}", vif);
            }
        }
    }

    /// Whatever the label, a fabric packet is delivered only where that label's nexthop says.
    #[test]
    fn labels_decide_the_destination(label in 0u32..64, dst in any::<u32>()) {
        let inner = udp_frame(MAC_B, MAC_A, IP_REMOTE_UDP, dst, 60, 1, 2, b"x")[14..].to_vec();
        let f = mpls_udp_frame(UNDERLAY_MAC, FABRIC_MAC, REMOTE_UDP, HOST_IP, 50000, 6635, label, 60, &inner);
        let mut h = harness();
        let v = h.run1(FABRIC, &f);
        match label {
            LABEL_A => prop_assert!(v.sent_on(VM_A).is_some()),
            LABEL_B => prop_assert!(v.sent_on(VM_B).is_some()),
            LABEL_C => prop_assert!(v.sent_on(VM_C).is_some()),
            LABEL_PUBLIC_TABLE => {
                let leaked = matches!(v, Verdict::Tx { vif: VM_B | VM_C | VHOST, .. });
                prop_assert!(!leaked, "public table label leaked: {:?}", v);
            }
            _ => prop_assert_eq!(v, Verdict::Drop(vrouter_dataplane::DropReason::InvalidLabel)),
        }
    }

    #[test]
    fn encap_then_decap_is_identity_on_the_inner_packet(
        sport in any::<u16>(), dport in any::<u16>(), ttl in 2u8..=255, payload in proptest::collection::vec(any::<u8>(), 0..600),
        gre in any::<bool>(),
    ) {
        let mut h = harness();
        let dst = if gre { IP_REMOTE_GRE } else { IP_REMOTE_UDP };
        let f = udp_frame(MAC_B, MacAddr::VROUTER, IP_B, dst, ttl, sport, dport, &payload);
        let Verdict::Tx { vif: FABRIC, frame: wire } = h.run1(VM_B, &f) else {
            return Err(TestCaseError::fail("not encapsulated"));
        };
        // Deliver it back to this host for VM A: readdress the outer header and relabel.
        let hdr = if gre { 42 } else { 46 };
        let label_word = u32::from_be_bytes([wire[hdr - 4], wire[hdr - 3], wire[hdr - 2], wire[hdr - 1]]);
        prop_assert_eq!(label_word & 0xff, u32::from(ttl - 1), "label TTL");
        prop_assert_eq!(label_word & 0x100, 0x100, "bottom of stack");
        let inner = &wire[hdr..];
        let back = if gre {
            mpls_gre_frame(UNDERLAY_MAC, FABRIC_MAC, REMOTE_GRE, HOST_IP, LABEL_A, ttl - 1, inner)
        } else {
            mpls_udp_frame(UNDERLAY_MAC, FABRIC_MAC, REMOTE_UDP, HOST_IP, 50000, 6635, LABEL_A, ttl - 1, inner)
        };
        let out = h.run1(FABRIC, &back);
        let got = out.sent_on(VM_A).ok_or_else(|| TestCaseError::fail(format!("{out:?}")))?;
        let mut want = f[14..].to_vec();
        want[8] -= 1;
        let ck = vrouter_dataplane::wire::checksum::update16(
            u16::from_be_bytes([want[10], want[11]]),
            u16::from_be_bytes([ttl, 17]),
            u16::from_be_bytes([ttl - 1, 17]),
        );
        want[10..12].copy_from_slice(&ck.to_be_bytes());
        prop_assert_eq!(&got[14..], &want[..]);
        assert_checksums(&got[14..]);
    }

    #[test]
    fn dnat_after_snat_is_identity_on_the_five_tuple(
        src in any::<u32>(), dst in any::<u32>(), fip in any::<u32>(), sport in any::<u16>(), dport in any::<u16>(),
        proto in proptest::sample::select(vec![6u8, 17, 1]),
    ) {
        let b = etherparse::PacketBuilder::ipv4(ip4(src), ip4(dst), 64);
        let mut p = Vec::new();
        match proto {
            6 => b.tcp(sport, dport, 1, 100).write(&mut p, b"tcp").map_err(|e| TestCaseError::fail(e.to_string()))?,
            17 => b.udp(sport, dport).write(&mut p, b"udp").map_err(|e| TestCaseError::fail(e.to_string()))?,
            _ => b.icmpv4_echo_request(sport, dport).write(&mut p, b"icmp").map_err(|e| TestCaseError::fail(e.to_string()))?,
        }
        let orig = p.clone();
        nat::rewrite(&mut p, Side::Src, fip);
        assert_checksums(&p);
        // The reply comes back addressed to the floating IP; DNAT restores the fixed IP.
        nat::rewrite(&mut p, Side::Src, src);
        prop_assert_eq!(&p, &orig);
    }
}

#[test]
fn tables_can_change_while_packets_flow() {
    // One thread forwards continuously while this one adds and removes routes; every packet
    // must see either the old or the new table, never a torn one, and nothing may block.
    let mut h = harness();
    let reader = h.writer.reader();
    let stats = h.stats.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let fwd = std::thread::spawn(move || {
        let pipeline = vrouter_dataplane::Pipeline::new(stats.register());
        let mut pool = vrouter_dataplane::BufPool::new(512);
        let mut batch = vrouter_dataplane::Batch::new();
        let f = udp_frame(MAC_B, MacAddr::VROUTER, IP_B, IP_REMOTE_UDP, 64, 1, 2, b"x");
        let (mut sent, mut dropped) = (0u64, 0u64);
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            for _ in 0..64 {
                let Some(mut b) = pool.alloc() else { break };
                b.fill(&f);
                let _ = batch.push(b, VM_B);
            }
            {
                let Some(t) = reader.enter() else { break };
                pipeline.run(&t, &mut batch);
            }
            for p in batch.drain() {
                match p.meta.next {
                    vrouter_dataplane::Next::Tx => {
                        assert!(
                            p.meta.out_vif == FABRIC || p.meta.out_vif == VM_A,
                            "unexpected vif {}",
                            p.meta.out_vif
                        );
                        sent += 1;
                    }
                    _ => {
                        assert_eq!(p.meta.drop, vrouter_dataplane::DropReason::NoRoute);
                        dropped += 1;
                    }
                }
                pool.free(p.buf);
            }
        }
        (sent, dropped)
    });
    let route = |nh| vrouter_dataplane::tables::TableOp::AddRoute {
        vrf: VRF_VN1,
        prefix: IP_REMOTE_UDP,
        plen: 32,
        route: vrouter_dataplane::tables::Route {
            nh,
            label: Some(LABEL_REMOTE_UDP),
            proxy_arp: true,
        },
    };
    for i in 0..300u32 {
        match i % 3 {
            0 => h.program(vec![route(NH_A)]),
            1 => h.program(vec![vrouter_dataplane::tables::TableOp::DelRoute {
                vrf: VRF_VN1,
                prefix: IP_REMOTE_UDP,
                plen: 32,
            }]),
            _ => h.program(vec![route(NH_TUN_UDP)]),
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, dropped) = fwd.join().expect("forwarding thread");
    assert!(
        sent > 0 && dropped > 0,
        "both table versions were seen: sent {sent}, dropped {dropped}"
    );
}
