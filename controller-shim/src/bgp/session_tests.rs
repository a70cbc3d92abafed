// SPDX-License-Identifier: Apache-2.0
//! Two sessions wired back to back: what one sends, the other receives.

use super::*;
use crate::bgp::types::{Encap, Rd};

const A: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);

fn pair(asn_a: u32, asn_b: u32) -> (Session, Session) {
    let a = Session::new(
        Local {
            asn: asn_a,
            router_id: A,
            hold_time: 9,
        },
        Peer {
            address: B,
            port: 179,
            asn: asn_b,
            identifier: None,
            hold_time: 0,
        },
    );
    let b = Session::new(
        Local {
            asn: asn_b,
            router_id: B,
            hold_time: 30,
        },
        Peer {
            address: A,
            port: 179,
            asn: asn_a,
            identifier: Some(A),
            hold_time: 0,
        },
    );
    (a, b)
}

/// Delivers every `Send` in `out` to `to`, returns the other outputs and `to`'s replies.
fn deliver(out: Vec<Output>, to: &mut Session, now: u64) -> (Vec<Output>, Vec<Output>) {
    let mut rest = Vec::new();
    let mut replies = Vec::new();
    for o in out {
        match o {
            Output::Send(bytes) => replies.extend(to.received(&bytes, now)),
            other => rest.push(other),
        }
    }
    (rest, replies)
}

/// Runs messages between the two until both are quiet; returns (events of a, events of b).
fn converge(
    a: &mut Session,
    b: &mut Session,
    mut from_a: Vec<Output>,
    now: u64,
) -> (Vec<Output>, Vec<Output>) {
    let (mut ev_a, mut ev_b) = (Vec::new(), Vec::new());
    let mut from_b = Vec::new();
    for _ in 0..10 {
        let (rest, replies) = deliver(std::mem::take(&mut from_a), b, now);
        ev_a.extend(rest);
        from_b.extend(replies);
        let (rest, replies) = deliver(std::mem::take(&mut from_b), a, now);
        ev_b.extend(rest);
        from_a.extend(replies);
        if from_a.is_empty() && from_b.is_empty() {
            break;
        }
    }
    (ev_a, ev_b)
}

fn establish(a: &mut Session, b: &mut Session) {
    let mut first = a.connected(0);
    first.extend(b.connected(0).into_iter().flat_map(|o| match o {
        Output::Send(bytes) => a.received(&bytes, 0),
        other => vec![other],
    }));
    let _ = converge(a, b, first, 0);
    assert_eq!(a.state(), State::Established);
    assert_eq!(b.state(), State::Established);
}

fn exports(n: u8) -> Exports {
    let attrs = PathAttrs {
        nexthop: Ipv4Addr::new(192, 168, 0, 3),
        targets: vec!["target:64512:7".parse().expect("rt")],
        encaps: vec![Encap::MplsOverUdp],
    };
    (0..n)
        .map(|i| {
            let key = VpnKey {
                rd: Rd::ip(A, 7),
                prefix: format!("10.7.{}.{}/32", i / 200, i % 200)
                    .parse()
                    .expect("prefix"),
            };
            (key, (attrs.clone(), 16 + u32::from(i)))
        })
        .collect()
}

#[test]
fn two_speakers_establish_and_negotiate_the_smaller_hold_time() {
    let (mut a, mut b) = pair(64512, 64512);
    establish(&mut a, &mut b);
    // a proposed 9 s: keepalives every 3 s, on both sides.
    assert!(a.tick(2_000).is_empty());
    assert_eq!(a.tick(3_000), vec![Output::Send(codec::keepalive())]);
    assert_eq!(b.tick(3_000), vec![Output::Send(codec::keepalive())]);
}

#[test]
fn exported_routes_arrive_and_withdrawals_follow() {
    let (mut a, mut b) = pair(64512, 64512);
    a.export(exports(3), 0);
    establish(&mut a, &mut b);
    assert_eq!(b.learned().len(), 3);
    let r = b.learned().values().next().expect("a route");
    assert_eq!(r.nexthop, Ipv4Addr::new(192, 168, 0, 3));
    assert_eq!(r.encaps, vec![Encap::MplsOverUdp]);
    assert_eq!(a.advertised(), 3);

    let out = a.export(exports(1), 5);
    let (_, ev_b) = converge(&mut a, &mut b, out, 5);
    assert_eq!(
        ev_b.iter()
            .filter(|o| matches!(o, Output::Withdrawn(_)))
            .count(),
        2
    );
    assert_eq!(b.learned().len(), 1);
}

#[test]
fn a_large_table_is_split_into_messages_under_4096_bytes() {
    let (mut a, mut b) = pair(64512, 65000);
    a.export(exports(250), 0);
    let sent_sizes: Vec<usize> = {
        let mut first = a.connected(0);
        first.extend(b.connected(0).into_iter().flat_map(|o| match o {
            Output::Send(bytes) => a.received(&bytes, 0),
            other => vec![other],
        }));
        let _ = converge(&mut a, &mut b, first, 0);
        assert_eq!(b.learned().len(), 250);
        let out = a.export(Exports::new(), 1);
        let sizes = out
            .iter()
            .map(|o| match o {
                Output::Send(m) => m.len(),
                _ => 0,
            })
            .collect();
        converge(&mut a, &mut b, out, 1);
        sizes
    };
    assert_eq!(b.learned().len(), 0, "withdrawn again at the end");
    assert!(sent_sizes.iter().all(|&n| n <= codec::MAX_LEN));
}

#[test]
fn silence_past_the_hold_time_ends_the_session_and_forgets_its_routes() {
    let (mut a, mut b) = pair(64512, 64512);
    b.export(exports(2), 0);
    establish(&mut a, &mut b);
    assert_eq!(a.learned().len(), 2);
    // b goes quiet (TCP stays up): a's 9 s hold timer fires.
    let out = a.tick(9_000);
    assert_eq!(
        out.iter()
            .filter(|o| matches!(o, Output::Withdrawn(_)))
            .count(),
        2
    );
    assert!(matches!(out.last(), Some(Output::Down(why)) if why.contains("hold timer")));
    assert!(matches!(&out[0], Output::Send(m) if m[18] == msg_type::NOTIFICATION && m[19] == 4));
    assert_eq!(a.state(), State::Idle);
    assert!(a.learned().is_empty());
}

#[test]
fn a_peer_announcing_the_wrong_as_is_refused_with_bad_peer_as() {
    let (mut a, mut b) = pair(64512, 65001);
    let mut b_open = b.connected(0);
    // b announces 65001; configure a to expect 65002 instead.
    a.peer.asn = 65002;
    a.connected(0);
    let Some(Output::Send(open)) = b_open.pop() else {
        panic!("b sends an OPEN");
    };
    let out = a.received(&open, 0);
    assert!(
        matches!(&out[0], Output::Send(m) if m[18] == msg_type::NOTIFICATION && m[19] == 2 && m[20] == 2)
    );
    assert!(matches!(out.last(), Some(Output::Down(_))));
}

#[test]
fn a_configured_identifier_must_match() {
    let (mut a, mut b) = pair(64512, 64512);
    b.peer.identifier = Some(Ipv4Addr::new(10, 9, 9, 9));
    let open = a.connected(0);
    b.connected(0);
    let (_, replies) = deliver(open, &mut b, 0);
    assert!(matches!(&replies[0], Output::Send(m) if m[19] == 2 && m[20] == 3));
}

#[test]
fn an_update_before_established_is_a_state_machine_error() {
    let (mut a, mut b) = pair(64512, 64512);
    a.connected(0);
    b.connected(0);
    let out = a.received(&codec::end_of_rib(), 0);
    assert!(matches!(&out[0], Output::Send(m) if m[19] == 5 && m[20] == 1));
    assert_eq!(a.state(), State::Idle);
}

#[test]
fn messages_split_across_reads_are_reassembled() {
    let (mut a, mut b) = pair(64512, 64512);
    let open = match a.connected(0).pop() {
        Some(Output::Send(m)) => m,
        _ => panic!("OPEN"),
    };
    b.connected(0);
    let (head, tail) = open.split_at(7);
    assert!(b.received(head, 0).is_empty());
    let out = b.received(tail, 0);
    assert_eq!(out, vec![Output::Send(codec::keepalive())]);
    assert_eq!(b.state(), State::OpenConfirm);
}
