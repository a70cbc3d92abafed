// SPDX-License-Identifier: Apache-2.0
//! Test harness: starts the real `vrouter-shim` binary on loopback and talks HTTP to it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A free loopback port for a daemon to bind, distinct from every other one this test binary
/// hands out (its tests run in parallel). Taken below the kernel's ephemeral range
/// (32768-60999): a port from `bind(0)`, released and bound again by the daemon, could be
/// taken meanwhile by another test's `bind(0)` or outgoing connection, and the test would then
/// talk to someone else's server (seen as "connection reset" in CI).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // 20,000 ports from 11000, the start spread by pid so that a leftover of an earlier run
    // is unlikely to sit on them.
    let start = std::process::id() % 20_000;
    for _ in 0..20_000 {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = 11_000 + ((start + n) % 20_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in 11000-30999");
}

/// A scratch directory removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!("shim-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running shim; killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct Shim {
    pub child: Child,
    pub port: u16,
    pub token: Option<String>,
}

impl Shim {
    /// Starts the daemon with `--store store` and extra arguments; waits until it answers.
    pub fn start(store: &str, extra: &[&str]) -> Shim {
        Shim::start_on(free_port(), store, extra)
    }

    pub fn start_on(port: u16, store: &str, extra: &[&str]) -> Shim {
        let child = Command::new(env!("CARGO_BIN_EXE_vrouter-shim"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--store", store])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn vrouter-shim");
        let token = extra
            .iter()
            .position(|a| *a == "--token")
            .map(|i| extra[i + 1].to_string());
        let mut shim = Shim { child, port, token };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = shim.child.try_wait() {
                panic!("vrouter-shim exited early: {st}");
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "vrouter-shim did not start listening on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        shim
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Sends a request; returns (status, JSON body or Null).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        call(&self.url(path), method, body, self.token.as_deref())
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call("POST", path, Some(body))
    }

    pub fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call("PUT", path, Some(body))
    }

    pub fn delete(&self, path: &str) -> (u16, Value) {
        self.call("DELETE", path, None)
    }

    /// Asserts a 200 and returns the body.
    pub fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (st, v) = self.call(method, path, body);
        assert_eq!(st, 200, "{method} {path} -> {st} {v}");
        v
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        self.kill();
    }
}

thread_local! {
    static AGENT: ureq::Agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
}

/// One HTTP call with a pooled keep-alive client.
pub fn call(url: &str, method: &str, body: Option<&Value>, token: Option<&str>) -> (u16, Value) {
    AGENT.with(|a| {
        let mut req = a.request(method, url);
        if let Some(t) = token {
            req = req.set("X-Auth-Token", t);
        }
        let res = match body {
            Some(b) => req
                .set("Content-Type", "application/json; charset=UTF-8")
                .send_string(&b.to_string()),
            None => req.call(),
        };
        let resp = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {url}: transport error {e}"),
        };
        let status = resp.status();
        let text = resp.into_string().expect("read body");
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    })
}

/// A raw HTTP/1.1 connection, for wire-level checks (status line, keep-alive, headers).
pub struct RawConn {
    reader: BufReader<TcpStream>,
    stream: TcpStream,
}

/// A raw response.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("JSON body")
    }
}

impl RawConn {
    pub fn open(port: u16) -> RawConn {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let reader = BufReader::new(stream.try_clone().expect("clone stream"));
        RawConn { reader, stream }
    }

    /// Sends one request the way the Java client does (HTTP/1.1, JSON body, no auth).
    pub fn send(&mut self, method: &str, path: &str, body: Option<&str>) -> RawResponse {
        self.send_with(method, path, &[], body)
    }

    /// [`RawConn::send`] with extra header lines.
    pub fn send_with(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> RawResponse {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: Apache-HttpCore/4\r\n"
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            req.push_str(&format!(
                "Content-Type: application/json; charset=UTF-8\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        if let Some(b) = body {
            req.push_str(b);
        }
        self.stream
            .write_all(req.as_bytes())
            .expect("write request");
        self.read_response()
    }

    fn read_response(&mut self) -> RawResponse {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("status line");
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h).expect("header line");
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut buf = vec![0; len];
        self.reader.read_exact(&mut buf).expect("body");
        RawResponse {
            status,
            headers,
            body: String::from_utf8_lossy(&buf).into_owned(),
        }
    }
}

/// Fails (never skips) with an install hint when a required tool is missing.
pub fn require_tool(cmd: &str, args: &[&str], hint: &str) {
    let ok = Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "required tool missing: `{cmd} {}` failed. Install it: {hint} (or run scripts/install-deps.sh)", args.join(" "));
}

/// Canonical CloudStack-shaped bodies.
pub mod bodies {
    use serde_json::{json, Value};

    pub fn vn(uuid: &str, name: &str, prefix: &str, gw: &str) -> Value {
        json!({"virtual-network": {
            "name": name, "uuid": uuid,
            "fq_name": ["default-domain", "default-project", name],
            "parent_type": "project",
            "network_ipam_refs": [{"to": ["default-domain", "default-project", "default-network-ipam"],
                "attr": {"ipam_subnets": [{"subnet": {"ip_prefix": prefix, "ip_prefix_len": 24}, "default_gateway": gw}]}}]
        }})
    }

    pub fn vm(uuid: &str, name: &str) -> Value {
        json!({"virtual-machine": {"name": name, "uuid": uuid, "fq_name": [name]}})
    }

    pub fn vmi(uuid: &str, vm: &str, dev: u32, vn: &str) -> Value {
        let name = format!("{vm}-{dev}");
        json!({"virtual-machine-interface": {
            "name": name, "uuid": uuid, "fq_name": [vm, name], "parent_type": "virtual-machine",
            "virtual_network_refs": [{"to": ["default-domain", "default-project", vn]}]
        }})
    }

    pub fn iip(vm: &str, dev: u32, vn: &str) -> Value {
        let name = format!("{vm}-{dev}");
        json!({"instance-ip": {
            "name": name, "fq_name": [name],
            "virtual_network_refs": [{"to": ["default-domain", "default-project", vn]}],
            "virtual_machine_interface_refs": [{"to": [vm, name]}]
        }})
    }
}
