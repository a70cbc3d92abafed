// SPDX-License-Identifier: Apache-2.0
//! `vrouter-xenstored` under a service manager (`Type=notify`, `WatchdogSec=`), with the manager's side
//! of the protocol played here: a datagram socket in `NOTIFY_SOCKET`. The daemon says READY=1
//! only once its socket is bound and pings WATCHDOG=1 while a read on it is answered.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
fn ready_after_the_socket_is_bound_then_watchdog_pings() {
    let dir = std::env::temp_dir().join(format!("p21-xsd-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let notify = dir.join("notify.sock");
    let xs = dir.join("xenstored.sock");
    let _ = std::fs::remove_file(&notify);
    let sock = UnixDatagram::bind(&notify).expect("bind notify socket");
    // systemd sets WATCHDOG_PID to the service's pid; `exec` keeps the shell's.
    let child = Daemon(
        Command::new("sh")
            .arg("-c")
            .arg("WATCHDOG_PID=$$ exec \"$0\" --socket \"$1\"")
            .arg(env!("CARGO_BIN_EXE_vrouter-xenstored"))
            .arg(&xs)
            .env("NOTIFY_SOCKET", &notify)
            .env("WATCHDOG_USEC", "400000")
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn vrouter-xenstored"),
    );
    wait_for(&sock, "READY=1", Duration::from_secs(20));
    let bound = Path::new(&xs).exists();
    wait_for(&sock, "WATCHDOG=1", Duration::from_secs(2));
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(bound, "READY=1 came before the socket existed");
}
