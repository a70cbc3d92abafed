// SPDX-License-Identifier: Apache-2.0
//! `vrouter-status` as an operator meets it: one line per component, exit 1 while anything is
//! down or missing, exit 0 once the dataplane, agent, shim, xenstore and hook are all there.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::process::Output;
use vrouter_agent::testkit::TestDataplane;
use vrouter_xen::daemon::{Daemon, DaemonConfig};

fn status(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_vrouter-status"))
        .args(args)
        .output()
        .expect("run vrouter-status")
}

/// The state word on `component`'s line.
fn state_of(out: &Output, component: &str) -> String {
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(component))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no {component} line: {text}"))
        .to_string()
}

/// A loopback HTTP server answering every request with `200 OK` (stands for the shim and the
/// agent's metrics endpoint); its address.
fn http_ok() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            // The whole request head first: answering and closing after a first partial read
            // made the client's next write fail with EPIPE (seen in CI).
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
    });
    addr
}

#[test]
fn everything_down_is_one_line_each_and_exit_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = |n: &str| dir.path().join(n).display().to_string();
    let out = status(&[
        "--socket",
        &p("dp.sock"),
        "--shim",
        "http://127.0.0.1:1",
        "--agent-metrics",
        "127.0.0.1:1",
        "--xenstore-socket",
        &p("xs.sock"),
        "--hook",
        &p("vif-hotplug"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 5);
    for c in ["dataplane", "agent", "shim", "xenstore"] {
        assert_eq!(state_of(&out, c), "down", "{c}");
    }
    assert_eq!(state_of(&out, "hook"), "missing");
}

#[test]
fn everything_up_exits_0_and_one_missing_piece_exits_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dp_sock = dir.path().join("dp.sock");
    let _dp = TestDataplane::start(&dp_sock, 0xc000_020a).expect("test dataplane");
    let xs_sock = dir.path().join("xs.sock");
    let xsd = Daemon::bind(DaemonConfig {
        socket: xs_sock.clone(),
        ..DaemonConfig::default()
    })
    .expect("xenstored");
    std::thread::spawn(move || xsd.run());
    let hook = dir.path().join("vif-hotplug");
    std::fs::write(&hook, "#!/bin/sh\n").expect("hook");
    let http = http_ok();
    let shim = format!("http://{http}");
    let (dp, xs, hk) = (
        dp_sock.display().to_string(),
        xs_sock.display().to_string(),
        hook.display().to_string(),
    );
    let args = [
        "--socket",
        &dp,
        "--shim",
        &shim,
        "--agent-metrics",
        &http,
        "--xenstore-socket",
        &xs,
        "--hook",
        &hk,
    ];

    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = status(&args);
    assert_eq!(out.status.code(), Some(1), "a hook XAPI cannot run");
    assert_eq!(state_of(&out, "hook"), "missing");

    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = status(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for c in ["dataplane", "agent", "shim", "xenstore", "hook"] {
        assert_eq!(state_of(&out, c), "up", "{c}");
    }
}
