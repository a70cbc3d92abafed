// SPDX-License-Identifier: Apache-2.0
//! Every composed message parses back; malformed input becomes the
//! NOTIFICATION RFC 4271/7606 ask for, never a panic.

use super::*;

fn key(rd: Rd, p: &str) -> VpnKey {
    VpnKey {
        rd,
        prefix: p.parse().expect("prefix"),
    }
}

fn attrs() -> PathAttrs {
    PathAttrs {
        nexthop: Ipv4Addr::new(10, 9, 0, 11),
        targets: vec!["target:64512:100".parse().expect("rt")],
        encaps: vec![Encap::MplsOverUdp, Encap::MplsOverGre],
    }
}

const IBGP: Sender = Sender {
    asn: 64512,
    ibgp: true,
};

#[test]
fn our_open_parses_back_with_vpn_capability_and_four_byte_as() {
    let m = open(4_200_000_001, 90, Ipv4Addr::new(10, 9, 0, 1));
    let f = frame(&m).expect("valid header").expect("whole message");
    assert_eq!(f.kind, msg_type::OPEN);
    let o = parse_open(&m).expect("our OPEN parses");
    assert_eq!(o.asn, 4_200_000_001);
    assert_eq!(o.hold_time, 90);
    assert_eq!(o.router_id, Ipv4Addr::new(10, 9, 0, 1));
    assert!(o.vpn_ipv4);
    // Two-byte AS field carries AS_TRANS.
    assert_eq!(&m[20..22], &23456u16.to_be_bytes());
}

#[test]
fn announced_vpn_routes_parse_back_with_label_rd_targets_and_encap() {
    let rd = Rd::ip(Ipv4Addr::new(10, 9, 0, 1), 5);
    let routes = [
        (key(rd, "10.1.1.3/32"), 17),
        (key(rd, "10.1.2.0/24"), 1_048_575),
    ];
    let m = announce(IBGP, &attrs(), &routes);
    let u = parse_update(&m, 64512).expect("parses");
    assert_eq!(u.treated_as_withdraw, None);
    assert_eq!(u.announced.len(), 2);
    for (r, (k, label)) in u.announced.iter().zip(routes) {
        assert_eq!(r.key, k);
        assert_eq!(r.label, label);
        assert_eq!(r.nexthop, Ipv4Addr::new(10, 9, 0, 11));
        assert_eq!(r.targets, attrs().targets);
        assert_eq!(r.encaps, vec![Encap::MplsOverUdp, Encap::MplsOverGre]);
    }
}

#[test]
fn ebgp_announcements_carry_our_as_in_the_path() {
    let rd = Rd::asn(64512, 1);
    let m = announce(
        Sender {
            asn: 64512,
            ibgp: false,
        },
        &attrs(),
        &[(key(rd, "10.1.1.3/32"), 20)],
    );
    // AS_PATH: flags 0x40, type 2, len 6, AS_SEQUENCE of one 4-byte AS.
    let want = [0x40, 2, 6, 2, 1, 0, 0, 0xfc, 0x00];
    assert!(m.windows(want.len()).any(|w| w == want), "{m:02x?}");
    // The receiver (AS 65000) uses it; we would not (our AS is in the path).
    assert_eq!(parse_update(&m, 65000).expect("parses").announced.len(), 1);
    let looped = parse_update(&m, 64512).expect("parses");
    assert!(looped.treated_as_withdraw.expect("reason").contains("loop"));
}

#[test]
fn withdrawals_and_end_of_rib_parse_back() {
    let rd = Rd::asn(64512, 1);
    let keys = [key(rd, "10.1.1.3/32"), key(rd, "0.0.0.0/0")];
    let u = parse_update(&withdraw(&keys), 64512).expect("parses");
    assert_eq!(u.withdrawn, keys.to_vec());
    assert!(u.announced.is_empty());
    let eor = parse_update(&end_of_rib(), 64512).expect("parses");
    assert_eq!(eor, Update::default());
}

#[test]
fn announcements_without_origin_are_treated_as_withdrawals() {
    let rd = Rd::asn(64512, 1);
    let mut m = announce(IBGP, &attrs(), &[(key(rd, "10.1.1.3/32"), 20)]);
    // Drop the ORIGIN attribute (the first 4 path-attribute bytes) and fix the lengths.
    m.drain(23..27);
    let total = (m.len() as u16).to_be_bytes();
    m[16..18].copy_from_slice(&total);
    let pa = u16::from_be_bytes([m[21], m[22]]) - 4;
    m[21..23].copy_from_slice(&pa.to_be_bytes());
    let u = parse_update(&m, 64512).expect("not a session reset");
    assert!(u.announced.is_empty());
    assert_eq!(u.withdrawn, vec![key(rd, "10.1.1.3/32")]);
    assert!(u.treated_as_withdraw.expect("reason").contains("ORIGIN"));
}

#[test]
fn bad_headers_get_the_rfc_4271_notifications() {
    let mut m = keepalive();
    m[0] = 0;
    assert_eq!(frame(&m), Err(Notification::new(1, 1)));
    let mut m = keepalive();
    m[18] = 9;
    assert_eq!(frame(&m).map_err(|n| (n.code, n.subcode)), Err((1, 3)));
    let mut m = keepalive();
    m[17] = 20;
    assert_eq!(frame(&m).map_err(|n| (n.code, n.subcode)), Err((1, 2)));
    assert_eq!(frame(&keepalive()[..10]), Ok(None));
}

#[test]
fn a_truncated_attribute_list_resets_the_session_instead_of_panicking() {
    // Path attribute length 1, one byte of attribute: the tail that panics zettabgp.
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&24u16.to_be_bytes());
    m.extend_from_slice(&[2, 0, 0, 0, 1, 0x40]);
    assert_eq!(parse_update(&m, 64512).map_err(|n| n.code), Err(3));
}

#[test]
fn random_updates_never_panic() {
    // Deterministic xorshift noise over a valid UPDATE: flipped bytes and cut lengths.
    let rd = Rd::asn(64512, 1);
    let good = announce(IBGP, &attrs(), &[(key(rd, "10.1.1.3/32"), 20)]);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut m = good.clone();
        let i = HEADER_LEN + (x as usize % (m.len() - HEADER_LEN));
        m[i] = (x >> 32) as u8;
        let cut = HEADER_LEN + 4 + ((x >> 40) as usize % (m.len() - HEADER_LEN - 3));
        m.truncate(cut.min(m.len()));
        let _ = parse_update(&m, 64512);
        let _ = parse_open(&m);
    }
}
