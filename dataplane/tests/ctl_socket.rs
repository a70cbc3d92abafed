//! The control socket's limits, through a real socket served in-process: reserved table ids are
//! refused with a clear error and change nothing, connections beyond the bound get a `busy`
//! reply without a thread, a frame header claiming more than the request limit is refused at
//! once, and WARN lines about bad clients are rate-limited with a count of those suppressed.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use vrouter_dataplane::ctl::proto::{encode, vif_spec, MAX_REQUEST};
use vrouter_dataplane::ctl::server::MAX_CONNECTIONS;
use vrouter_dataplane::ctl::{
    CtlClient, CtlError, CtlServer, CtlState, DaemonInfo, Decoder, Request, Response,
};
use vrouter_dataplane::stats::StatsRegistry;
use vrouter_dataplane::tables::{new_tables, HostConfig, Limits, TableOp, VifKind};

/// A control server on a fresh socket in a scratch directory, serving on its own thread.
fn serve(name: &str, tune: impl FnOnce(CtlServer) -> CtlServer) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vrt-ctl-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("dp.sock");
    let limits = Limits::default();
    let (writer, _reader) = new_tables(limits);
    let state = CtlState {
        writer,
        stats: StatsRegistry::new(limits.vifs.into(), limits.vrfs as usize),
        info: DaemonInfo {
            lcores: 1,
            ..Default::default()
        },
    };
    let mut srv = CtlServer::bind(&path, Arc::new(Mutex::new(state))).expect("bind");
    srv.root_only = false;
    tune(srv).spawn().expect("serve");
    path
}

/// Reads one reply frame from `s`.
fn reply(s: &mut UnixStream) -> Response {
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut dec = Decoder::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("a reply");
        assert!(n > 0, "closed without a reply");
        dec.feed(&buf[..n]);
        if let Some(r) = dec.next_message::<Response>().expect("decodable") {
            return r;
        }
    }
}

fn error_of(r: &Response) -> (&str, &str, Option<usize>) {
    match r {
        Response::Error {
            kind,
            message,
            index,
        } => (kind, message, *index),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").expect("tasks").count()
}

#[test]
fn reserved_ids_are_refused_with_a_clear_error_and_change_nothing() {
    let path = serve("reserved", |s| s);
    let mut c = CtlClient::connect(&path).expect("connect");
    let host_ops = vec![
        TableOp::AddVif(vif_spec(0, "eth1", VifKind::Physical, 0)),
        TableOp::SetHost(HostConfig {
            fabric_ip: 0xc0a8_6401,
            fabric_vif: Some(0),
            host_vif: None,
            agent_vif: None,
        }),
    ];
    c.apply(host_ops).expect("the daemon's own interface");
    let refused = [
        (
            TableOp::AddVrf {
                id: 0,
                name: "evil".into(),
            },
            "vrf 0 is reserved",
        ),
        (TableOp::DelVrf(0), "vrf 0 is reserved"),
        (TableOp::DelNh(0), "discard nexthop"),
        (TableOp::AddLabel { label: 3, nh: 0 }, "label 3 is reserved"),
        (TableOp::DelVif(0), "vif 0 is reserved"),
        (
            TableOp::AddVif(vif_spec(0, "vif9.0", VifKind::Virtual, 0)),
            "vif 0 is reserved",
        ),
    ];
    for (op, says) in refused {
        let what = format!("{op:?}");
        // After a valid operation, so the index shows which one was refused.
        let ops = vec![
            TableOp::AddVrf {
                id: 7,
                name: "vn7".into(),
            },
            op,
        ];
        match c.request(&Request::Apply { ops }) {
            Err(CtlError::Refused {
                kind,
                message,
                index,
            }) => {
                assert_eq!((kind.as_str(), index), ("invalid_op", Some(1)), "{what}");
                assert!(message.contains(says), "{what}: {message:?}");
            }
            other => panic!("{what}: expected a refusal, got {other:?}"),
        }
    }
    let Response::Vrfs { vrfs } = c.request(&Request::VrfList).expect("vrfs") else {
        panic!("expected vrfs")
    };
    let names: Vec<(u16, &str)> = vrfs.iter().map(|v| (v.id, v.name.as_str())).collect();
    assert_eq!(names, [(0, "fabric")], "nothing applied, VRF 0 unchanged");
    // Restating the fabric VRF as it is changes nothing and is accepted.
    c.apply(vec![TableOp::AddVrf {
        id: 0,
        name: "fabric".into(),
    }])
    .expect("a no-op restatement");
}

#[test]
fn connections_beyond_the_bound_get_a_busy_reply_and_no_thread() {
    let path = serve("bound", |s| s);
    let before = threads();
    let mut idle: Vec<UnixStream> = (0..MAX_CONNECTIONS)
        .map(|_| UnixStream::connect(&path).expect("connect"))
        .collect();
    // Every one of them is served (a round trip on the last proves the accept loop reached it).
    let last = idle.last_mut().expect("some");
    last.write_all(&encode(&Request::Info)).expect("write");
    assert!(matches!(reply(last), Response::Info { .. }));
    for i in 0..100 {
        let mut s = UnixStream::connect(&path).expect("connect");
        let r = reply(&mut s);
        let (kind, message, _) = error_of(&r);
        assert_eq!(kind, "busy", "extra connection {i}");
        assert!(
            message.contains(&format!("the limit is {MAX_CONNECTIONS}")),
            "{message}"
        );
    }
    let grown = threads().saturating_sub(before);
    assert!(
        grown <= MAX_CONNECTIONS + 8,
        "{grown} threads for {MAX_CONNECTIONS} served and 100 refused connections"
    );
    // Closing one frees its place.
    idle.truncate(MAX_CONNECTIONS - 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = UnixStream::connect(&path).expect("connect");
        // A refused connection gets its 'busy' reply and is closed at once, so the write may
        // meet a closed socket (EPIPE); the reply is still there to read.
        let wrote = s.write_all(&encode(&Request::Info)).is_ok();
        match reply(&mut s) {
            Response::Info { .. } if wrote => break,
            r => {
                assert_eq!(error_of(&r).0, "busy");
                assert!(
                    Instant::now() < deadline,
                    "the closed connection's place stays taken"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[test]
fn a_frame_claiming_more_than_the_request_limit_is_refused_from_its_header() {
    let path = serve("size", |s| s);
    let mut s = UnixStream::connect(&path).expect("connect");
    let mut hdr = b"VRC\x01".to_vec();
    hdr.extend_from_slice(&((MAX_REQUEST + 1) as u32).to_be_bytes());
    s.write_all(&hdr).expect("write");
    let r = reply(&mut s);
    let (kind, message, _) = error_of(&r);
    assert_eq!(kind, "bad_request");
    assert!(
        message.contains(&format!("exceeds the {MAX_REQUEST}-byte limit")),
        "{message}"
    );
    // A request as large as a full host's first apply (about 10 MiB) is read and answered.
    let big = Request::Hello {
        client: "x".repeat(12 << 20),
    };
    let mut s = UnixStream::connect(&path).expect("connect");
    s.write_all(&encode(&big)).expect("write");
    assert!(matches!(reply(&mut s), Response::Info { .. }));
}

/// WARN lines logged by the control server that mention `what`.
fn warn_lines(what: &str) -> Vec<String> {
    logger()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|l| l.contains(what))
        .cloned()
        .collect()
}

struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record) {
        if r.level() == log::Level::Warn && r.target().ends_with("ctl::server") {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(r.args().to_string());
        }
    }
    fn flush(&self) {}
}

fn logger() -> &'static Mutex<Vec<String>> {
    static L: OnceLock<&'static Capture> = OnceLock::new();
    let c = L.get_or_init(|| {
        let c: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        log::set_logger(c).expect("one logger");
        log::set_max_level(log::LevelFilter::Warn);
        c
    });
    &c.0
}

#[test]
fn warn_lines_about_bad_clients_are_rate_limited_with_a_count_of_those_suppressed() {
    logger();
    let path = serve("warn", |s| s.with_warn_limit(5, Duration::from_secs(1)));
    let bad = |n: usize| {
        for _ in 0..n {
            let mut s = UnixStream::connect(&path).expect("connect");
            s.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("write");
            let r = reply(&mut s);
            assert_eq!(
                error_of(&r).0,
                "bad_request",
                "every bad client is answered"
            );
        }
    };
    bad(50);
    let lines = warn_lines("bad frame magic");
    assert_eq!(lines.len(), 5, "{lines:#?}");
    std::thread::sleep(Duration::from_millis(1100));
    bad(1);
    let lines = warn_lines("bad frame magic");
    assert_eq!(lines.len(), 6, "{lines:#?}");
    assert!(
        lines[5].ends_with("(45 similar lines suppressed before this)"),
        "{:?}",
        lines[5]
    );
}
