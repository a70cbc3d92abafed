//! The agent ↔ dataplane control protocol (`vrouter_dataplane::ctl`): the framed reader, request
//! decoding, the request handler on real tables, and the client's reply decoding.
//!
//! Input layout: [`crate::chunking`] (one byte of read size), then the byte stream a client sends.
//! The stream goes through a [`Decoder`] with the daemon's limit in reads of that size, exactly
//! as the daemon's connection loop does; each request is handled against the harness fixture's
//! tables, like a daemon that already holds a host's state.
//!
//! Invariants: every decoded request and every response re-encodes to a frame that decodes to
//! the same value (so what the agent sends is what the daemon acts on); an `Apply` either
//! answers `Ok` or names an operation index within the request; the handler never panics and
//! leaves readable tables.

use vrouter_dataplane::ctl::handler::{handle, DaemonInfo};
use vrouter_dataplane::ctl::proto::{
    encode, Decoder, FrameError, Request, Response, MAX_FRAME, MAX_REQUEST,
};
use vrouter_dataplane::harness::fixture;
use vrouter_dataplane::stats::StatsRegistry;
use vrouter_dataplane::tables::{new_tables, Limits};

/// Runs the stream in `data` through the daemon's side, then the client's.
pub fn run(data: &[u8]) {
    let (chunk, stream) = crate::chunking(data);
    daemon_side(chunk, stream);
    client_side(stream);
}

/// Small tables: the fixture fits, and an `Apply` that adds much is refused early.
fn limits() -> Limits {
    Limits {
        vifs: 16,
        vrfs: 8,
        nexthops: 64,
        labels: 256,
        routes: 64,
        flows: 64,
    }
}

fn daemon_side(chunk: usize, stream: &[u8]) {
    let (mut w, _reader) = new_tables(limits());
    if let Err((i, e)) = w.apply(fixture::ops()) {
        panic!("fixture op {i} refused: {e}");
    }
    let stats = StatsRegistry::new(16, 8);
    let info = DaemonInfo {
        lcores: 1,
        ..Default::default()
    };
    let mut dec = Decoder::with_limit(MAX_REQUEST);
    for piece in stream.chunks(chunk) {
        dec.feed(piece);
        loop {
            match dec.next_message::<Request>() {
                Ok(Some(req)) => {
                    round_trip(&req);
                    let n_ops = match &req {
                        Request::Apply { ops } => Some(ops.len()),
                        _ => None,
                    };
                    let resp = handle(&mut w, &stats, &info, req);
                    if let (Some(n), Response::Error { index, .. }) = (n_ops, &resp) {
                        assert!(
                            index.is_some_and(|i| i < n),
                            "refusal names an op: {resp:?}"
                        );
                    }
                    round_trip(&resp);
                }
                Ok(None) => break,
                Err(e) => {
                    // The daemon answers and closes: the stream is over.
                    frame_error_is_sane(&e, MAX_REQUEST);
                    return;
                }
            }
        }
    }
    assert!(w.read(|_| ()).is_some(), "tables readable after the stream");
}

/// The same stream read by a client expecting replies.
fn client_side(stream: &[u8]) {
    let mut dec = Decoder::with_limit(MAX_FRAME);
    dec.feed(stream);
    loop {
        match dec.next_message::<Response>() {
            Ok(Some(resp)) => round_trip(&resp),
            Ok(None) => return,
            Err(e) => {
                frame_error_is_sane(&e, MAX_FRAME);
                return;
            }
        }
    }
}

fn frame_error_is_sane(e: &FrameError, max: usize) {
    if let FrameError::TooLarge { len, limit } = e {
        assert!(*len > *limit && *limit == max, "{e}");
    }
}

/// `msg` encoded as a frame decodes to `msg` again, and re-encodes to the same bytes.
fn round_trip<T>(msg: &T)
where
    T: serde::Serialize + for<'de> serde::Deserialize<'de> + PartialEq + std::fmt::Debug,
{
    let frame = encode(msg);
    let mut dec = Decoder::new();
    dec.feed(&frame);
    let back: T = match dec.next_message() {
        Ok(Some(m)) => m,
        other => panic!("re-encoded {msg:?} does not decode: {other:?}"),
    };
    assert_eq!(&back, msg, "round trip changed the message");
    assert_eq!(encode(&back), frame, "encoding is not stable");
    assert_eq!(dec.buffered(), 0);
}
