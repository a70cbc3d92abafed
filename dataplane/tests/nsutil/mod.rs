//! Shared helpers for the namespace tests: namespaces, VMs and daemons that clean up after
//! themselves (Drop guards, also on failure), tool checks that fail with the install command
//! (those in `ns.rs`, which the agent's tests share), and programming the dataplane over its
//! control socket.
#![allow(dead_code)]

mod ns;
pub use ns::*;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};
use vrouter_dataplane::ctl::{CtlClient, Request, Response};
use vrouter_dataplane::tables::{NexthopSpec, Route, TableOp, VifKind, VifSpec};
use vrouter_dataplane::wire::MacAddr;

/// A background process, killed (by pid) on drop.
pub struct Proc {
    pub child: Child,
    pub what: String,
}

impl Proc {
    pub fn spawn(ns: &Ns, cmd: &str, log: &Path) -> Self {
        let f = std::fs::File::create(log).expect("log file");
        let child = ns
            .command(cmd)
            .stdout(f.try_clone().expect("dup"))
            .stderr(f)
            .spawn()
            .expect("spawn");
        Self {
            child,
            what: cmd.to_string(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits for exit up to `t`; kills it past that.
    pub fn wait(&mut self, t: Duration) -> bool {
        let end = Instant::now() + t;
        while Instant::now() < end {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signalling our own child by pid.
            unsafe {
                libc::kill(self.pid(), libc::SIGTERM);
            }
            let end = Instant::now() + Duration::from_secs(3);
            while Instant::now() < end {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A scratch directory, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(test: &str) -> Self {
        let p = std::env::temp_dir().join(format!("vrt3-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch dir");
        Self(p)
    }
    pub fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("VRT3_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The dataplane daemon running in `ns`, stopped with SIGTERM on drop.
pub struct Dp {
    pub proc: Proc,
    pub sock: PathBuf,
    pub log: PathBuf,
}

impl Dp {
    pub fn start(ns: &Ns, scratch: &Scratch, name: &str, args: &str) -> Self {
        let sock = scratch.path(&format!("{name}.sock"));
        let log = scratch.path(&format!("{name}.log"));
        let bin = env!("CARGO_BIN_EXE_vrouter-dp");
        let proc = Proc::spawn(
            ns,
            &format!(
                "{bin} --ctl-socket {} --agent-socket {} --log-level debug {args}",
                sock.display(),
                scratch.path(&format!("{name}-pkt0.sock")).display()
            ),
            &log,
        );
        let dp = Self { proc, sock, log };
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if CtlClient::connect(&dp.sock).is_ok() {
                return dp;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("vrouter-dp did not come up:\n{}", dp.log_text());
    }

    pub fn client(&self) -> CtlClient {
        CtlClient::connect(&self.sock).expect("connect control socket")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.proc.child.try_wait(), Ok(None))
    }
}

pub fn mac(s: &str) -> MacAddr {
    let mut m = [0u8; 6];
    for (b, p) in m.iter_mut().zip(s.split(':')) {
        *b = u8::from_str_radix(p, 16).expect("hex");
    }
    MacAddr(m)
}

pub fn ip(s: &str) -> u32 {
    u32::from(s.parse::<std::net::Ipv4Addr>().expect("ipv4"))
}

/// Ops that attach a local VM: its vif, its encap nexthop, its /32 and its label.
pub fn vm_ops(vif: u16, name: &str, vrf: u16, vm_mac: &str, vm_ip: &str, nh: u32) -> Vec<TableOp> {
    vec![
        TableOp::AddVif(VifSpec {
            id: vif,
            name: name.into(),
            kind: VifKind::Virtual,
            vrf,
            mac: mac(vm_mac),
            ip: ip(vm_ip),
            mtu: 1500,
            nh: Some(nh),
            allowed: Vec::new(),
        }),
        TableOp::AddNh {
            id: nh,
            spec: NexthopSpec::Encap {
                oif: vif,
                dmac: mac(vm_mac),
                smac: MacAddr::VROUTER,
            },
        },
        TableOp::AddRoute {
            vrf,
            prefix: ip(vm_ip),
            plen: 32,
            route: Route {
                nh,
                label: None,
                proxy_arp: true,
            },
        },
        TableOp::AddLabel {
            label: nh + 100,
            nh,
        },
    ]
}

pub fn vrf_op(id: u16, name: &str) -> TableOp {
    TableOp::AddVrf {
        id,
        name: name.into(),
    }
}

/// Pings `dst` from `vm`: (all answered, output).
pub fn ping(ns: &Ns, dst: &str, count: u32) -> (bool, String) {
    ns.exec_ok(&format!("ping -c {count} -i 0.2 -W 2 -q {dst}"))
}

/// Retries a short ping until one answer comes back (ports open asynchronously).
pub fn wait_reachable(ns: &Ns, dst: &str, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if ns.exec_ok(&format!("ping -c 1 -W 1 -q {dst}")).0 {
            return true;
        }
    }
    false
}

/// Runs an iperf3 TCP test from `client` to `server_ip` in `server`; returns Gbit/s received.
pub fn iperf3(server: &Ns, client: &Ns, server_ip: &str, secs: u32, scratch: &Scratch) -> f64 {
    let mut srv = Proc::spawn(
        server,
        &format!("timeout {} iperf3 -s -1 -B {server_ip} -p 5201", secs + 15),
        &scratch.path(&format!("iperf3-s-{}.log", server.name)),
    );
    let end = Instant::now() + Duration::from_secs(5);
    while !server.exec_ok("sh -c 'ss -ltn | grep -q :5201'").0 {
        assert!(Instant::now() < end, "iperf3 server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, out) = client.exec_ok(&format!(
        "timeout {} iperf3 -c {server_ip} -p 5201 -t {secs} -J",
        secs + 10
    ));
    srv.wait(Duration::from_secs(5));
    assert!(ok, "iperf3 client failed: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("iperf3 json");
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .expect("sum_received");
    bps / 1e9
}

/// IPv4 packets the namespace's stack received (`Ip: InReceives`).
pub fn ip_in_receives(ns: &Ns) -> u64 {
    let snmp = ns.exec("cat /proc/net/snmp");
    let mut lines = snmp.lines().filter(|l| l.starts_with("Ip:"));
    let (names, vals) = (lines.next().expect("hdr"), lines.next().expect("vals"));
    let i = names
        .split_whitespace()
        .position(|n| n == "InReceives")
        .expect("InReceives");
    vals.split_whitespace()
        .nth(i)
        .expect("value")
        .parse()
        .expect("number")
}

/// Drop counters by display name.
pub fn drops(dp: &Dp) -> Vec<(String, u64)> {
    match dp.client().request(&Request::Drops).expect("drops") {
        Response::Drops { drops } => drops,
        r => panic!("unexpected {r:?}"),
    }
}

pub fn drop_count(d: &[(String, u64)], name: &str) -> u64 {
    d.iter().find(|(n, _)| n == name).map_or(0, |x| x.1)
}

/// Sends `frames` as they are from `dev` in `ns` (a raw packet socket).
pub fn py_send(ns: &Ns, dev: &str, frames: &[Vec<u8>]) {
    let hex: Vec<String> = frames
        .iter()
        .map(|f| f.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    ns.exec(&format!(
        "python3 -c \"import socket; s=socket.socket(socket.AF_PACKET, socket.SOCK_RAW); \
         s.bind(('{dev}', 0)); [s.send(bytes.fromhex(h)) for h in '{}'.split()]\"",
        hex.join(" ")
    ));
}

/// An Ethernet frame.
pub fn eth(dst: &str, src: &str, ty: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&mac(dst).0);
    f.extend_from_slice(&mac(src).0);
    f.extend_from_slice(&ty.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 packet with a valid header checksum (id 1, DF, TTL 64).
pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0];
    let total = (20 + payload.len()) as u16;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let c = vrouter_dataplane::wire::checksum::checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}
