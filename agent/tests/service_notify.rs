// SPDX-License-Identifier: Apache-2.0
//! `vrouter-agent` under a service manager (`Type=notify`, `WatchdogSec=`), with the manager's side
//! of the protocol played here: a datagram socket in `NOTIFY_SOCKET`. The daemon says READY=1
//! only after its first reconcile pass (not while the dataplane is missing), pings
//! WATCHDOG=1 while its control loop goes round, and says STOPPING=1 on SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vrouter_agent::testkit::TestDataplane;

/// The next notification, or None after `timeout`.
fn next_message(sock: &UnixDatagram, timeout: Duration) -> Option<String> {
    sock.set_read_timeout(Some(timeout)).expect("timeout");
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Waits for a notification containing `what`, returning the time it took.
fn wait_for(sock: &UnixDatagram, what: &str, within: Duration) -> Duration {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if let Some(m) = next_message(sock, within.saturating_sub(t0.elapsed())) {
            if m.lines().any(|l| l == what) {
                return t0.elapsed();
            }
        }
    }
    panic!("no {what} within {within:?}");
}

/// The daemon, killed if the test fails before it stops.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn ready_after_the_first_reconcile_then_watchdog_pings_and_stopping() {
    let dir = tempfile::tempdir().expect("temp dir");
    let notify = dir.path().join("notify.sock");
    let dp_sock = dir.path().join("dp.sock");
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "[underlay]\nfabric_ip = \"192.0.2.10\"\n").expect("config");
    let sock = UnixDatagram::bind(&notify).expect("bind notify socket");
    // systemd sets WATCHDOG_PID to the service's pid; `exec` keeps the shell's.
    let mut child = Daemon(
        Command::new("sh")
            .arg("-c")
            .arg(
                "WATCHDOG_PID=$$ exec \"$0\" --config \"$1\" --dp-socket \"$2\" \
                 --state-dir \"$3\" --agent-socket none --poll-ms 20",
            )
            .arg(env!("CARGO_BIN_EXE_vrouter-agent"))
            .arg(&config)
            .arg(&dp_sock)
            .arg(dir.path())
            .env("NOTIFY_SOCKET", &notify)
            .env("WATCHDOG_USEC", "400000")
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn vrouter-agent"),
    );
    // No dataplane yet: the loop goes round (watchdog pings) but nothing is reconciled.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(1) {
        if let Some(m) = next_message(&sock, Duration::from_millis(100)) {
            assert!(
                !m.lines().any(|l| l == "READY=1"),
                "READY=1 without a dataplane"
            );
        }
    }
    let _dp = TestDataplane::start(&dp_sock, 0xc000_020a).expect("test dataplane");
    wait_for(&sock, "READY=1", Duration::from_secs(20));
    wait_for(&sock, "WATCHDOG=1", Duration::from_secs(2));
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    wait_for(&sock, "STOPPING=1", Duration::from_secs(10));
    let status = child.0.wait().expect("wait");
    assert!(status.success(), "{status:?}");
}
