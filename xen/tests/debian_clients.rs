// SPDX-License-Identifier: Apache-2.0
//! The dev daemon against Debian's own xenstore clients (xenstore-utils, libxenstore) and against
//! our client: the daemon must be a faithful enough xenstored for both.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{require_xenstore_utils, xs_at, Rng, Xenstored};
use vrouter_xen::wire::{Msg, Op, XsErrno};
use vrouter_xen::TxId;

#[test]
fn debian_write_read_ls_exists_rm() {
    require_xenstore_utils();
    let d = Xenstored::start(&[]);
    d.xs_ok(
        "xenstore-write",
        &[
            "/vrouter/vm1/ip",
            "10.1.1.2",
            "/vrouter/vm1/mac",
            "02:00:00:00:00:01",
        ],
    );
    assert_eq!(d.xs_ok("xenstore-read", &["/vrouter/vm1/ip"]), "10.1.1.2\n");
    let ls = d.xs_ok("xenstore-ls", &["/vrouter"]);
    assert!(ls.contains("vm1 = \"\""), "{ls}");
    assert!(ls.contains(" ip = \"10.1.1.2\""), "{ls}");
    assert!(ls.contains(" mac = \"02:00:00:00:00:01\""), "{ls}");
    assert!(d.xs("xenstore-exists", &["/vrouter/vm1"]).status.success());
    assert!(!d.xs("xenstore-exists", &["/vrouter/nope"]).status.success());
    assert!(!d.xs("xenstore-read", &["/vrouter/nope"]).status.success());
    d.xs_ok("xenstore-rm", &["/vrouter/vm1/mac"]);
    assert_eq!(d.xs_ok("xenstore-list", &["/vrouter/vm1"]), "ip\n");
    d.xs_ok("xenstore-rm", &["/vrouter"]);
    assert!(!d.xs("xenstore-exists", &["/vrouter"]).status.success());
    // Our client sees what theirs wrote and vice versa.
    d.xs_ok("xenstore-write", &["/x/from-debian", "1"]);
    let mut c = d.client();
    assert_eq!(c.read("/x/from-debian").unwrap(), b"1");
    c.write("/x/from-us", b"2").unwrap();
    assert_eq!(d.xs_ok("xenstore-read", &["/x/from-us"]), "2\n");
    // Permissions round trip through xenstore-chmod / xenstore-ls -p.
    d.xs_ok("xenstore-chmod", &["/x/from-us", "n0", "r5"]);
    assert_eq!(c.get_perms("/x/from-us").unwrap().to_payload(), b"n0\0r5\0");
    assert!(d.xs_ok("xenstore-ls", &["-p", "/x"]).contains("(n0,r5)"));
}

#[test]
fn debian_watch_fires_initial_event_and_on_children() {
    require_xenstore_utils();
    let d = Xenstored::start(&[]);
    let mut watch = Command::new("xenstore-watch")
        .args(["-n", "3", "/local/domain/0/backend/vif"])
        .env("XENSTORED_PATH", &d.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Wait for the watch to be registered: it prints the initial event.
    let mut out = watch.stdout.take().unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\n") {
        assert_eq!(
            out.read(&mut byte).unwrap(),
            1,
            "xenstore-watch exited early"
        );
        buf.push(byte[0]);
    }
    d.xs_ok(
        "xenstore-write",
        &["/local/domain/0/backend/vif/3/0/online", "1"],
    );
    d.xs_ok(
        "xenstore-write",
        &["/local/domain/0/backend/unrelated", "1"],
    );
    d.xs_ok("xenstore-rm", &["/local/domain/0/backend/vif/3"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while watch.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = watch.kill();
            let _ = watch.wait();
            panic!("xenstore-watch did not see 3 events");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    out.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8(buf).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        vec![
            "/local/domain/0/backend/vif",
            "/local/domain/0/backend/vif/3/0/online",
            "/local/domain/0/backend/vif/3"
        ],
        "{text}"
    );
}

#[test]
fn debian_ls_handles_directories_larger_than_one_payload() {
    require_xenstore_utils();
    let d = Xenstored::start(&[]);
    let mut c = d.client();
    c.transaction(|c, tx| {
        for i in 0..600 {
            c.write_in(tx, &format!("/big/a-long-child-name-{i:04}"), b"v")?;
        }
        Ok(())
    })
    .unwrap();
    // Our client falls back to DIRECTORY_PART on E2BIG...
    assert_eq!(c.directory("/big").unwrap().len(), 600);
    // ...and so does libxenstore.
    assert_eq!(d.xs_ok("xenstore-list", &["/big"]).lines().count(), 600);
}

#[test]
fn unprivileged_peer_reads_but_cannot_write() {
    require_xenstore_utils();
    let d = Xenstored::start(&["--socket-mode", "0666"]);
    d.xs_ok("xenstore-write", &["/data/k", "v"]);
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    // As root, drop to nobody for the child; otherwise we already are an unprivileged peer.
    let run = |tool: &str, args: &[&str]| {
        let mut cmd = if root {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", tool]);
            c
        } else {
            Command::new(tool)
        };
        cmd.args(args)
            .env("XENSTORED_PATH", &d.socket)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let r = run("xenstore-read", &["/data/k"]);
    assert!(
        r.status.success(),
        "read as nobody: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(r.stdout, b"v\n");
    let w = run("xenstore-write", &["/data/k", "evil"]);
    assert!(!w.status.success(), "write as nobody must fail");
    let w = run("xenstore-write", &["/data/new", "evil"]);
    assert!(!w.status.success(), "create as nobody must fail");
    let w = run("xenstore-rm", &["/data/k"]);
    assert!(!w.status.success(), "rm as nobody must fail");
    assert_eq!(d.xs_ok("xenstore-read", &["/data/k"]), "v\n");
    assert!(!d.xs("xenstore-exists", &["/data/new"]).status.success());
    // Once dom0 grants write access to unprivileged peers (domid 32752), they may write.
    d.xs_ok("xenstore-chmod", &["/data/k", "r0", "b32752"]);
    let w = run("xenstore-write", &["/data/k", "allowed"]);
    assert!(w.status.success(), "{}", String::from_utf8_lossy(&w.stderr));
    assert_eq!(d.xs_ok("xenstore-read", &["/data/k"]), "allowed\n");
}

#[test]
fn default_socket_mode_is_owner_only() {
    let d = Xenstored::start(&[]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn second_daemon_on_same_socket_refuses_and_stale_socket_is_replaced() {
    let d = Xenstored::start(&[]);
    let st = Command::new(common::DAEMON)
        .arg("--socket")
        .arg(&d.socket)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(
        !st.success(),
        "a second daemon must not steal a live socket"
    );
    // A stale socket file (no listener) is replaced.
    let stale = d.dir.path().join("stale");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let mut child = Command::new(common::DAEMON)
        .arg("--socket")
        .arg(&stale)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(&stale).is_err() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(xs_at(&stale, "xenstore-exists", &["/"]).status.success());
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn our_client_transactions_conflict_and_retry_over_the_socket() {
    let d = Xenstored::start(&[]);
    let mut a = d.client();
    let mut b = d.client();
    a.write("/t/x", b"1").unwrap();
    let tx = a.transaction_start().unwrap();
    assert_eq!(a.read_in(tx, "/t/x").unwrap(), b"1");
    a.write_in(tx, "/t/y", b"from-a").unwrap();
    b.write("/t/x", b"2").unwrap();
    let e = a.transaction_end(tx, true).unwrap_err();
    assert_eq!(e.errno(), Some(&XsErrno::Eagain));
    assert!(a.read("/t/y").unwrap_err().is_not_found());
    // The helper retries until it commits.
    let mut attempts = 0;
    a.transaction(|c, tx| {
        attempts += 1;
        let v = c.read_in(tx, "/t/x")?;
        if attempts == 1 {
            b.write("/t/x", b"3").unwrap(); // force one conflict
        }
        c.write_in(tx, "/t/y", &v)
    })
    .unwrap();
    assert_eq!(attempts, 2);
    assert_eq!(a.read("/t/y").unwrap(), b"3");
    // Typed errors over the wire.
    assert!(a.read("/t/none").unwrap_err().is_not_found());
    assert_eq!(
        a.read("/t//bad").unwrap_err().errno(),
        Some(&XsErrno::Einval)
    );
    assert_eq!(
        a.transaction_end(TxId(12345), true).unwrap_err().errno(),
        Some(&XsErrno::Enoent)
    );
}

#[test]
fn our_watch_sees_events_interleaved_with_replies() {
    let d = Xenstored::start(&[]);
    let mut w = d.client();
    let mut other = d.client();
    w.watch("/w", "tok").unwrap();
    // Writes by others while we issue our own requests: events queue up between replies.
    for i in 0..50 {
        other.write(&format!("/w/k{i}"), b"v").unwrap();
        assert!(w.read("/w/none").unwrap_err().is_not_found());
    }
    let mut paths = Vec::new();
    while let Some(ev) = w.wait_event(Some(Duration::from_millis(500))).unwrap() {
        assert_eq!(ev.token, "tok");
        paths.push(ev.path);
        if paths.len() == 51 {
            break;
        }
    }
    assert_eq!(paths[0], "/w");
    for i in 0..50 {
        assert_eq!(paths[i + 1], format!("/w/k{i}"));
    }
    w.unwatch("/w", "tok").unwrap();
    other.write("/w/after", b"v").unwrap();
    assert_eq!(
        w.wait_event(Some(Duration::from_millis(200))).unwrap(),
        None
    );
}

/// Garbage on the socket: random bytes, oversized headers, valid headers with random payloads
/// and unknown types. The daemon must neither die nor stop serving well-behaved clients.
#[test]
fn daemon_survives_garbage_on_the_socket() {
    require_xenstore_utils();
    let mut d = Xenstored::start(&[]);
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for round in 0..300 {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let bytes = match round % 3 {
            0 => {
                let n = rng.below(20_000) as usize;
                rng.bytes(n)
            }
            1 => {
                // Well-framed messages, any type 0..32, random payloads (often with NULs).
                let mut v = Vec::new();
                for _ in 0..rng.below(20) {
                    let op = Op::from(rng.below(32) as u32);
                    let len = rng.below(64) as usize;
                    let mut payload = rng.bytes(len);
                    if rng.below(2) == 0 {
                        payload =
                            format!("/fuzz/{}\0{}\0", rng.below(10), rng.below(10)).into_bytes();
                    }
                    let tx = if rng.below(4) == 0 {
                        rng.next() as u32
                    } else {
                        0
                    };
                    v.extend(
                        Msg::new(op, rng.next() as u32, tx, payload)
                            .unwrap()
                            .encode(),
                    );
                }
                v
            }
            _ => {
                // A header announcing an oversized payload.
                let mut v = vec![2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
                v.extend_from_slice(&(4097 + rng.below(1 << 30) as u32).to_le_bytes());
                v
            }
        };
        let _ = s.write_all(&bytes);
        let mut sink = [0u8; 4096];
        let _ = s.read(&mut sink);
        drop(s);
    }
    assert!(d.alive(), "daemon died on garbage");
    let mut c = d.client();
    c.write("/after/garbage", b"ok").unwrap();
    assert_eq!(d.xs_ok("xenstore-read", &["/after/garbage"]), "ok\n");
}

/// The `/dev/xen/xenbus` transport is file I/O with one write per message; run it over a socket
/// to the dev daemon (no Xen here) to show it speaks the same protocol, watches included.
#[test]
fn xenbus_file_transport_speaks_the_protocol() {
    use std::fs::File;
    use std::os::fd::OwnedFd;
    use vrouter_xen::transport::XenbusTransport;
    use vrouter_xen::Client;

    let d = Xenstored::start(&[]);
    let stream = UnixStream::connect(&d.socket).unwrap();
    let file = File::from(OwnedFd::from(stream));
    let mut c = Client::new(XenbusTransport::from_file(file));
    c.watch("/xb", "t").unwrap();
    c.write("/xb/k", b"v").unwrap();
    assert_eq!(c.read("/xb/k").unwrap(), b"v");
    assert_eq!(c.directory("/xb").unwrap(), vec!["k"]);
    let first = c.wait_event(Some(Duration::from_secs(1))).unwrap().unwrap();
    let second = c.wait_event(Some(Duration::from_secs(1))).unwrap().unwrap();
    assert_eq!(
        (first.path.as_str(), second.path.as_str()),
        ("/xb", "/xb/k")
    );
}
