//! The xenstore wire (`vrouter_xen::wire`): the incremental parser, the payload helpers, and the
//! dev daemon's protocol engine (`vrouter_xen::server`) that serves what the parser yields.
//!
//! Input layout: [`crate::chunking`] (one byte of read size), then the byte stream. Requests
//! alternate between a privileged dom0 connection and an unprivileged guest's, so permission
//! checks are exercised too (the low bit of `req_id` picks the connection).
//!
//! Invariants: the parser yields messages whose encodings are exactly the bytes consumed, in
//! order, and fails only on a header announcing more than `PAYLOAD_MAX`; `need()` is never 0
//! while no message is ready; every message the engine sends fits the wire (at most
//! `PAYLOAD_MAX`), and the reply to a request carries its `req_id` and `tx_id`.

use vrouter_xen::server::{Limits, Server};
use vrouter_xen::store::Caller;
use vrouter_xen::wire::{self, Msg, Op, Parser, WireError, HEADER_LEN, PAYLOAD_MAX};

const DOM0: u64 = 1;
const GUEST: u64 = 2;

/// Parses the stream in `data` and serves each request.
pub fn run(data: &[u8]) {
    let (chunk, stream) = crate::chunking(data);
    let mut server = Server::new(Limits {
        watches: 8,
        transactions: 4,
    });
    server.connect(DOM0, Caller::DOM0);
    server.connect(
        GUEST,
        Caller {
            domid: 7,
            privileged: false,
        },
    );
    let mut parser = Parser::new();
    let mut consumed = 0;
    for piece in stream.chunks(chunk) {
        parser.feed(piece);
        loop {
            match parser.next() {
                Ok(Some(msg)) => {
                    let bytes = msg.encode();
                    let end = consumed + bytes.len();
                    assert_eq!(
                        &stream[consumed..end],
                        &bytes[..],
                        "re-encodes to its bytes"
                    );
                    consumed = end;
                    payload_helpers(&msg);
                    serve(&mut server, &msg);
                }
                Ok(None) => {
                    assert!(
                        parser.need() > 0,
                        "need() says ready but next() has nothing"
                    );
                    break;
                }
                Err(WireError::PayloadTooLong(n)) => {
                    assert!(n > PAYLOAD_MAX);
                    let len = &stream[consumed + 12..consumed + HEADER_LEN];
                    let announced = u32::from_le_bytes([len[0], len[1], len[2], len[3]]);
                    assert_eq!(usize::try_from(announced).ok(), Some(n));
                    assert!(parser.next().is_err(), "a failed parser stays failed");
                    return;
                }
            }
        }
    }
    assert_eq!(consumed + parser.buffered(), stream.len(), "no byte lost");
}

fn payload_helpers(msg: &Msg) {
    let parts = wire::split_strings(&msg.payload);
    let joined: usize = parts.iter().map(|p| p.len() + 1).sum();
    assert!(joined <= msg.payload.len() + 1);
    if let Some(s) = wire::single_string(&msg.payload) {
        assert_eq!(s.len() + 1, msg.payload.len());
    }
    if let Some((path, token)) = wire::parse_watch_event(&msg.payload) {
        assert!(!path.contains('\0') && !token.contains(&0));
    }
    let _ = msg.as_error();
}

fn serve(server: &mut Server, req: &Msg) {
    let from = if req.req_id & 1 == 0 { DOM0 } else { GUEST };
    let out = server.handle(from, req);
    for o in &out {
        assert!(o.msg.payload.len() <= PAYLOAD_MAX, "oversized {:?}", o.msg);
        let mut p = Parser::new();
        p.feed(&o.msg.encode());
        assert_eq!(p.next().ok().flatten().as_ref(), Some(&o.msg));
        if o.to == from && o.msg.op != Op::WatchEvent {
            assert_eq!(
                (o.msg.req_id, o.msg.tx_id),
                (req.req_id, req.tx_id),
                "{o:?}"
            );
        }
    }
}
