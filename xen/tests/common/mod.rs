// SPDX-License-Identifier: Apache-2.0
//! Shared helpers for the integration tests: start the dev daemon on a private socket, run
//! Debian's xenstore-* clients against it, and clean up every process we start (by PID).
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use vrouter_xen::binder::{BindSink, VifBinding};
use vrouter_xen::transport::UnixTransport;
use vrouter_xen::Client;

pub const DAEMON: &str = env!("CARGO_BIN_EXE_vrouter-xenstored");

/// A private temporary directory (mode 0755 so that a dropped-privilege child can reach the
/// socket inside), removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let p = std::env::temp_dir().join(format!(
            "vrouter-xen-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The dev daemon, killed (by PID) and reaped on drop.
pub struct Xenstored {
    pub child: Child,
    pub socket: PathBuf,
    pub dir: TempDir,
}

impl Xenstored {
    pub fn start(extra: &[&str]) -> Xenstored {
        let dir = TempDir::new("xs");
        let socket = dir.path().join("socket");
        let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
        let child = Command::new(DAEMON)
            .arg("--socket")
            .arg(&socket)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start vrouter-xenstored");
        let mut d = Xenstored { child, socket, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&d.socket).is_err() {
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!("vrouter-xenstored exited early: {st}");
            }
            assert!(
                Instant::now() < deadline,
                "vrouter-xenstored did not come up"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    }

    pub fn client(&self) -> Client<UnixTransport> {
        Client::connect_unix(&self.socket).unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size of the daemon, in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Runs a Debian xenstore-* client against this daemon.
    pub fn xs(&self, tool: &str, args: &[&str]) -> Output {
        xs_at(&self.socket, tool, args)
    }

    /// Like [`Xenstored::xs`], asserting success; returns stdout.
    pub fn xs_ok(&self, tool: &str, args: &[&str]) -> String {
        let out = self.xs(tool, args);
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Xenstored {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default();
            eprintln!("--- vrouter-xenstored log ---\n{log}");
        }
    }
}

pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Fails (never skips) when Debian's clients are missing.
pub fn require_xenstore_utils() {
    for tool in [
        "xenstore-write",
        "xenstore-read",
        "xenstore-ls",
        "xenstore-rm",
        "xenstore-watch",
        "xenstore-exists",
    ] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        assert!(
            found,
            "{tool} not found: these tests need Debian's xenstore clients. Run `apt-get install xenstore-utils` \
             (or scripts/install-deps.sh)"
        );
    }
}

pub fn xs_at(socket: &Path, tool: &str, args: &[&str]) -> Output {
    Command::new(tool)
        .args(args)
        .env("XENSTORED_PATH", socket)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e} (apt-get install xenstore-utils)"))
}

/// A BindSink that records the dataplane's vif table and flags any misuse.
#[derive(Default, Debug)]
pub struct RecordingSink {
    pub table: BTreeMap<String, VifBinding>,
    pub binds: usize,
    pub unbinds: usize,
    pub errors: Vec<String>,
}

impl BindSink for RecordingSink {
    type Error = Infallible;

    fn bind(&mut self, b: &VifBinding) -> Result<(), Infallible> {
        self.binds += 1;
        if let Some(old) = self.table.get(&b.port) {
            self.errors
                .push(format!("double bind of {}: had {old:?}, got {b:?}", b.port));
        }
        if let Some(other) = self
            .table
            .values()
            .find(|x| x.nic_uuid == b.nic_uuid && x.port != b.port)
        {
            self.errors.push(format!(
                "nic {} bound twice: {} and {}",
                b.nic_uuid, other.port, b.port
            ));
        }
        self.table.insert(b.port.clone(), b.clone());
        Ok(())
    }

    fn unbind(&mut self, b: &VifBinding) -> Result<(), Infallible> {
        self.unbinds += 1;
        match self.table.remove(&b.port) {
            Some(old) if old == *b => {}
            Some(old) => self
                .errors
                .push(format!("unbind of {} with {b:?} but bound {old:?}", b.port)),
            None => self.errors.push(format!("unbind of unbound {}", b.port)),
        }
        Ok(())
    }
}

impl RecordingSink {
    pub fn ports(&self) -> BTreeSet<String> {
        self.table.keys().cloned().collect()
    }
}

/// A tiny deterministic PRNG (xorshift64*), so the tests need no `rand`.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A UUID derived from a number (stable across runs).
pub fn uuid(prefix: u32, n: u32) -> String {
    format!("{prefix:08x}-0000-4000-8000-{n:012x}")
}

pub fn mac(n: u32) -> String {
    format!(
        "02:00:{:02x}:{:02x}:{:02x}:{:02x}",
        (n >> 24) & 0xff,
        (n >> 16) & 0xff,
        (n >> 8) & 0xff,
        n & 0xff
    )
}
