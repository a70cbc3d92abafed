// SPDX-License-Identifier: Apache-2.0
//! `vrouter-shim` under a service manager (`Type=notify`, `WatchdogSec=`), with the manager's side
//! of the protocol played here: a datagram socket in `NOTIFY_SOCKET`. The daemon says READY=1
//! only once the API accepts connections and pings WATCHDOG=1 while it answers HTTP.

use std::os::unix::net::UnixDatagram;
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
fn ready_once_the_api_listens_then_watchdog_pings() {
    let dir = std::env::temp_dir().join(format!("p21-shim-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let notify = dir.join("notify.sock");
    let _ = std::fs::remove_file(&notify);
    let sock = UnixDatagram::bind(&notify).expect("bind notify socket");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    // systemd sets WATCHDOG_PID to the service's pid; `exec` keeps the shell's.
    let child = Daemon(
        Command::new("sh")
            .arg("-c")
            .arg("WATCHDOG_PID=$$ exec \"$0\" --listen \"$1\" --store \"$2\"")
            .arg(env!("CARGO_BIN_EXE_vrouter-shim"))
            .arg(&listen)
            .arg(format!("sqlite:{}", dir.join("shim.db").display()))
            .env("NOTIFY_SOCKET", &notify)
            .env("WATCHDOG_USEC", "400000")
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn vrouter-shim"),
    );
    wait_for(&sock, "READY=1", Duration::from_secs(20));
    let listening = std::net::TcpStream::connect(&listen).is_ok();
    wait_for(&sock, "WATCHDOG=1", Duration::from_secs(2));
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(listening, "READY=1 came before the API listened");
}
