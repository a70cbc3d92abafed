//! Shared helpers for the agent's integration tests: temp dirs, the in-process dataplane, and
//! the real `vrctl` / `vrouter-agent` binaries run as child processes (killed on drop, also when
//! a test fails).

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const FABRIC_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);

pub fn tempdir() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    // Traversable by other users, so permission tests reach the socket's own mode.
    std::fs::set_permissions(
        d.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    d
}

pub fn vrctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vrctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("run vrctl")
}

/// Runs `vrctl --json ...` for a poll loop: None while it fails (e.g. the agent has not created
/// the VRF yet), the parsed output once it succeeds.
pub fn try_vrctl_json(socket: &Path, args: &[&str]) -> Option<serde_json::Value> {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let out = vrctl(socket, &a);
    if !out.status.success() {
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).expect("vrctl --json prints JSON"))
}

/// Runs `vrctl --json ...`, asserts success and parses stdout.
pub fn vrctl_json(socket: &Path, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let out = vrctl(socket, &a);
    assert!(
        out.status.success(),
        "vrctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("vrctl --json prints JSON")
}

/// Serves `h`'s tables (and counters) on a control socket at `sock`, as the daemon would, for
/// `vrctl` run by any user; the server thread lives as long as the test process.
pub fn serve_harness(h: vrouter_dataplane::harness::Harness, sock: &Path) {
    use std::sync::{Arc, Mutex};
    use vrouter_dataplane::ctl::{CtlServer, CtlState, DaemonInfo};
    let vrouter_dataplane::harness::Harness { writer, stats, .. } = h;
    let state = Arc::new(Mutex::new(CtlState {
        writer,
        stats,
        info: DaemonInfo {
            lcores: 1,
            ..Default::default()
        },
    }));
    let mut server = CtlServer::bind(sock, state).expect("bind control socket");
    server.root_only = false;
    server.spawn().expect("serve");
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct ChildGuard {
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl ChildGuard {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Starts `vrouter-agent` with stderr to `dir/agent.log` (appended, so restarts keep history).
pub fn spawn_agent(dir: &Path, socket: &Path, config: &Path, extra: &[&str]) -> ChildGuard {
    let log = dir.join("agent.log");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_vrouter-agent"))
        .arg("--config")
        .arg(config)
        .arg("--dp-socket")
        .arg(socket)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--poll-ms")
        .arg("50")
        .arg("--agent-socket")
        .arg(dir.join("pkt0.sock"))
        .arg("--agent-local-socket")
        .arg(dir.join("agent-pkt0.sock"))
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(f)
        .spawn()
        .expect("spawn vrouter-agent");
    ChildGuard {
        child: Some(child),
        log,
    }
}

/// Polls `f` until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A free loopback port (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// HTTP GET on loopback, returns the body.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    let (head, body) = r.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

pub const CONFIG: &str = r#"
[underlay]
gateway_mac = "52:54:00:cc:dd:01"
[underlay.neighbours]
"10.0.0.12" = "52:54:00:cc:dd:02"

[[networks]]
name = "net1"
vrf = "default-domain:admin:net1"
subnet = "10.1.1.0/24"

[[networks]]
name = "public"
subnet = "192.0.2.0/24"

[[interfaces]]
name = "vif1.0"
mac = "02:00:00:00:01:03"
ip = "10.1.1.3"
network = "net1"

[[interfaces]]
name = "vif2.0"
mac = "02:00:00:00:01:05"
ip = "10.1.1.5"
network = "net1"

[[routes]]
network = "net1"
prefix = "10.1.1.4/32"
label = 25
remote = "10.0.0.12"
encap = "mpls-over-gre"

[[floating_ips]]
network = "public"
address = "192.0.2.10"
interface = "vif1.0"
"#;

// The namespace helpers the dataplane's own namespace tests use (shell commands, namespaces
// deleted on drop, VMs on veth pairs, tool checks): one copy for both crates.
#[path = "../../../dataplane/tests/nsutil/ns.rs"]
mod nsutil;
#[allow(unused_imports)] // each test crate uses its own subset
pub use nsutil::{require, sh, sh_ok, Ns, Vm};

// The controller-side helpers (shim, xenstored, dataplane and agent processes, the VNC API).
pub mod cloud;
// Several hosts on one underlay bridge (issue 20's address and migration tests).
pub mod hosts;
