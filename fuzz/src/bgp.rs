//! The controller's BGP speaker (`vrouter_shim::bgp`): the I/O-free session (framing, OPEN,
//! the state machine, UPDATE with RFC 7606 error handling) and the message codec. A gateway
//! router, or anything that reaches the BGP port, controls every byte.
//!
//! Input layout: [`crate::chunking`] (one byte of read size), then the byte stream the peer
//! sends. The session is connected (our OPEN goes out), exports one route, and takes the
//! stream in reads of that size; when it goes down it is connected again, as the speaker's
//! driver does, and the rest of the stream continues.
//!
//! Invariants: everything the session sends is one whole, well-framed BGP message; the routes
//! it reports (learned, withdrawn) always add up to its Adj-RIB-In, which holds only usable
//! labels (16..=2^20-1) and is empty after the session went down; and every UPDATE in the
//! stream that parses with announcements re-encodes (our encoder) to an UPDATE that parses to
//! the same routes.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use vrouter_api::Ipv4Prefix;
use vrouter_shim::bgp::codec::{self, PathAttrs, Sender};
use vrouter_shim::bgp::session::{Exports, Local, Output, Peer, Session, State};
use vrouter_shim::bgp::types::{Encap, Rd, RouteTarget, VpnKey, VpnRoute};

/// Our AS and the peer's (eBGP; the seeds' OPENs announce the peer's).
pub const OUR_AS: u32 = 64512;
/// The configured neighbour's AS.
pub const PEER_AS: u32 = 65001;

fn session() -> Session {
    let local = Local {
        asn: OUR_AS,
        router_id: Ipv4Addr::new(10, 0, 0, 1),
        hold_time: 90,
    };
    let peer = Peer {
        address: Ipv4Addr::new(10, 0, 0, 2),
        port: 179,
        asn: PEER_AS,
        identifier: None,
        hold_time: 0,
    };
    Session::new(local, peer)
}

/// What we export: one floating IP's /32.
fn exports() -> Exports {
    let key = VpnKey {
        rd: Rd::ip(Ipv4Addr::new(10, 0, 0, 1), 4),
        prefix: Ipv4Prefix::truncating(Ipv4Addr::new(198, 51, 100, 2), 32).expect("/32"),
    };
    let attrs = PathAttrs {
        nexthop: Ipv4Addr::new(10, 0, 0, 11),
        targets: vec![RouteTarget::asn(OUR_AS, 4)],
        encaps: vec![Encap::MplsOverUdp, Encap::MplsOverGre],
    };
    BTreeMap::from([(key, (attrs, 18))])
}

/// Runs the stream in `data` through a session, then every UPDATE in it through the codec.
pub fn run(data: &[u8]) {
    let (chunk, stream) = crate::chunking(data);
    session_side(chunk.max(1), stream);
    codec_round_trip(stream);
}

fn session_side(chunk: usize, stream: &[u8]) {
    let mut s = session();
    let mut mirror: BTreeMap<VpnKey, VpnRoute> = BTreeMap::new();
    let mut now = 0u64;
    let mut outs = s.connected(now);
    outs.extend(s.export(exports(), now));
    check(&s, &outs, &mut mirror);
    for part in stream.chunks(chunk) {
        now += 1000;
        let mut outs = s.received(part, now);
        outs.extend(s.tick(now));
        check(&s, &outs, &mut mirror);
        if s.state() == State::Idle {
            // The driver reconnects; what is left of the stream goes to the new session.
            let outs = s.connected(now);
            check(&s, &outs, &mut mirror);
        }
    }
}

/// The invariants on one batch of outputs.
fn check(s: &Session, outs: &[Output], mirror: &mut BTreeMap<VpnKey, VpnRoute>) {
    let mut down = false;
    for o in outs {
        match o {
            Output::Send(bytes) => {
                let f = codec::frame(bytes)
                    .unwrap_or_else(|n| panic!("we sent a bad header ({n:?}): {bytes:02x?}"))
                    .unwrap_or_else(|| panic!("we sent a partial message: {bytes:02x?}"));
                assert_eq!(f.bytes.len(), bytes.len(), "one message per send");
            }
            Output::Learned(r) => {
                mirror.insert(r.key, r.clone());
            }
            Output::Withdrawn(k) => {
                assert!(mirror.remove(k).is_some(), "withdrew {k:?}, never learned");
            }
            Output::Down(_) => down = true,
            Output::Established => {}
        }
    }
    assert_eq!(
        &*mirror,
        s.learned(),
        "reported routes and Adj-RIB-In differ"
    );
    assert!(
        s.learned()
            .values()
            .all(|r| (16..=0xfffff).contains(&r.label)),
        "unusable label learned"
    );
    if down {
        assert!(
            s.learned().is_empty(),
            "routes kept after the session went down"
        );
    }
}

/// Every UPDATE of the stream that parses with announcements re-encodes to the same routes.
fn codec_round_trip(mut stream: &[u8]) {
    while let Ok(Some(f)) = codec::frame(stream) {
        stream = &stream[f.bytes.len()..];
        if f.kind != codec::msg_type::UPDATE {
            continue;
        }
        let Ok(upd) = codec::parse_update(f.bytes, OUR_AS) else {
            continue;
        };
        let Some(first) = upd.announced.first() else {
            continue;
        };
        // One UPDATE's announcements share their attributes.
        let attrs = PathAttrs {
            nexthop: first.nexthop,
            targets: first.targets.clone(),
            encaps: first.encaps.clone(),
        };
        let routes: Vec<(VpnKey, u32)> = upd.announced.iter().map(|r| (r.key, r.label)).collect();
        let sender = Sender {
            asn: PEER_AS,
            ibgp: false,
        };
        let again = codec::announce(sender, &attrs, &routes);
        let back = codec::parse_update(&again, OUR_AS)
            .unwrap_or_else(|n| panic!("our UPDATE does not parse ({n:?}): {again:02x?}"));
        assert_eq!(
            back.announced, upd.announced,
            "routes changed in a round trip"
        );
    }
}
