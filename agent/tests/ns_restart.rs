//! Hitless agent restart across hosts: two hosts (namespaces on an underlay bridge, the shim on
//! the bridge, one `vrouter-dp` + `vrouter-agent` + `vrouter-xenstored` per host), a VM on each.
//! While a 2 ms ping stream and a paced TCP stream run from one VM to the other, the agents are
//! killed (`kill -9`) and restarted three times (host A, B, A). Asserted: no ping lost, no byte of
//! the TCP stream delayed by more than 100 ms, each restarted agent's reconciles all
//! `0 adds/changes, 0 removals`, and `vrctl --json` dumps of vif / nh / mpls / route identical
//! on both hosts before and after.
//!
//! The TCP stream is written here rather than with iperf3: iperf3's finest report interval is
//! 100 ms, so it cannot show a 100 ms stall. The sender writes a 4 KiB chunk stamped with its
//! send time every 2 ms; the receiver (a thread of the same process, in the other VM's
//! namespace) reads each chunk and keeps the largest delay between write and read. A lost
//! segment costs at least the 200 ms minimum retransmission timeout, so it cannot hide.
//!
//! Needs root, `ip`, `ping`, `xenstore-write` and the daemons built (see `ns_controller.rs`).
//! Namespaces `vrt3-restart-<pid>-<role>`; every process is killed by pid and every namespace
//! deleted on drop, also on failure.

mod common;

use common::cloud::{
    cloud, ping_ok, routes, setup, start_agent, start_dp, start_shim, vm_ns, xs_plug, Api, Bins,
    Proc, TOKEN, VRF,
};
use common::{sh, tempdir, try_vrctl_json, vrctl_json, wait_for, Ns};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const VM1: &str = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7ab1";
const VM2: &str = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7ab2";
const VMI1: &str = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4eb1";
const VMI2: &str = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4eb2";
const MAC1: &str = "02:aa:00:00:0b:02";
const MAC2: &str = "02:aa:00:00:0c:02";
const IP2: &str = "10.1.1.3";

/// The restarts (host index, 0 = A, 1 = B).
const RESTARTS: [usize; 3] = [0, 1, 0];
/// The largest write-to-read delay a byte of the TCP stream may see.
const MAX_STALL: Duration = Duration::from_millis(100);
/// Upper bound of the whole traffic phase (every loop below is bounded by it).
const TRAFFIC_LIMIT: Duration = Duration::from_secs(150);

/// One host: its namespace, xenstore socket, dataplane and agent.
struct Host {
    tag: &'static str,
    ns: Ns,
    xs: PathBuf,
    _xsd: Proc,
    _dp: Proc,
    dp: PathBuf,
    pkt0: PathBuf,
    agent: Proc,
}

/// The whole setup; dropped in reverse: agents and daemons killed, namespaces deleted.
struct Cloud {
    hosts: Vec<Host>,
    vm1: Ns,
    vm2: Ns,
    _shim: Proc,
    api: Api,
    _ul: Ns,
    dir: tempfile::TempDir,
}

impl Cloud {
    fn logs(&self) -> String {
        self.hosts
            .iter()
            .map(|h| format!("agent {}:\n{}", h.tag, h.agent.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn start_agent(&self, h: &Host) -> Proc {
        start_agent(
            Some(&h.ns),
            self.dir.path(),
            h.tag,
            &self.api.base,
            h.tag,
            &h.xs,
            &h.dp,
            &h.pkt0,
            Some(TOKEN),
        )
    }
}

/// Underlay bridge (with the shim on 10.0.0.100) and two hosts on it, 10.0.0.1 and 10.0.0.2.
fn underlay(ul: &Ns, hosts: &[&Ns; 2]) {
    sh(&format!("ip -n {} link add br0 type bridge", ul.name));
    sh(&format!("ip -n {} addr add 10.0.0.100/24 dev br0", ul.name));
    for (h, p, a) in [(hosts[0], "pa", "10.0.0.1"), (hosts[1], "pb", "10.0.0.2")] {
        sh(&format!(
            "ip link add fab0 netns {} type veth peer name {p} netns {}",
            h.name, ul.name
        ));
        sh(&format!(
            "ip -n {} link set {p} mtu 1600 master br0 up",
            ul.name
        ));
        sh(&format!("ip -n {} link set fab0 mtu 1600", h.name));
        sh(&format!("ip -n {} addr add {a}/24 dev fab0", h.name));
        sh(&format!("ip -n {} link set fab0 up", h.name));
    }
    sh(&format!("ip -n {} link set br0 up", ul.name));
}

/// A host's xenstored, dataplane and agent.
fn host(bins: &Bins, dir: &Path, api: &Api, ns: Ns, tag: &'static str, fabric: &str) -> Host {
    let xs = dir.join(format!("xs-{tag}.sock"));
    let xsd = Proc::spawn(
        None,
        &format!("{} --socket {}", bins.xsd.display(), xs.display()),
        &dir.join(format!("xenstored-{tag}.log")),
        &[],
    );
    assert!(
        wait_for(Duration::from_secs(5), || xs.exists().then_some(())).is_some(),
        "xenstored {tag}: {}",
        xsd.log()
    );
    let extra = format!("--fabric fab0 --fabric-port-kind af_packet --fabric-ip {fabric}");
    let (dpp, dp, pkt0) = start_dp(bins, &ns, dir, tag, &extra);
    let agent = start_agent(
        Some(&ns),
        dir,
        tag,
        &api.base,
        tag,
        &xs,
        &dp,
        &pkt0,
        Some(TOKEN),
    );
    Host {
        tag,
        ns,
        xs,
        _xsd: xsd,
        _dp: dpp,
        dp,
        pkt0,
        agent,
    }
}

/// Two hosts with a VM each, routes exchanged, the VMs pinging each other, underlay MACs learned.
fn two_hosts(bins: &Bins) -> Cloud {
    let dir = tempdir();
    let d = dir.path();
    let ul = Ns::new("restart", "ul");
    let ha = Ns::new("restart", "ha");
    let hb = Ns::new("restart", "hb");
    underlay(&ul, &[&ha, &hb]);
    let vm1 = vm_ns("restart", "vm1", &ha, "vif7.0", MAC1, "10.1.1.2");
    let vm2 = vm_ns("restart", "vm2", &hb, "vif8.0", MAC2, IP2);
    let shim = start_shim(bins, Some(&ul), "10.0.0.100:8082", d, Some(TOKEN));
    let api = Api {
        base: "http://10.0.0.100:8082".into(),
        ns: Some(ul.name.clone()),
        token: Some(TOKEN.into()),
    };
    assert!(
        wait_for(Duration::from_secs(10), || api
            .try_call("GET", "/", None)
            .ok())
        .is_some(),
        "shim: {}",
        shim.log()
    );
    cloud(
        &api,
        &[
            (VM1, VMI1, "i-7-VM", MAC1, "10.1.1.2"),
            (VM2, VMI2, "i-8-VM", MAC2, IP2),
        ],
    );
    let a = host(bins, d, &api, ha, "ha", "10.0.0.1");
    let b = host(bins, d, &api, hb, "hb", "10.0.0.2");
    xs_plug(&a.xs, 7, VM1, VMI1, MAC1);
    xs_plug(&b.xs, 8, VM2, VMI2, MAC2);
    let c = Cloud {
        hosts: vec![a, b],
        vm1,
        vm2,
        _shim: shim,
        api,
        _ul: ul,
        dir,
    };
    for (h, prefix, origin) in [(0, "10.1.1.3/32", "hb"), (1, "10.1.1.2/32", "ha")] {
        let found = wait_for(Duration::from_secs(20), || {
            let r = routes(&c.api)
                .into_iter()
                .find(|r| r["prefix"] == prefix && r["host"] == origin)?;
            let rt = try_vrctl_json(&c.hosts[h].dp, &["route", "dump", VRF])?;
            rt.as_array()?
                .iter()
                .any(|x| x["prefix"] == prefix && x["label"] == r["label"])
                .then_some(())
        });
        assert!(
            found.is_some(),
            "{prefix} from {origin} not programmed\n{}",
            c.logs()
        );
    }
    assert!(
        ping_ok(&c.vm1, IP2, Duration::from_secs(15)),
        "vm1 cannot reach vm2\n{}",
        c.logs()
    );
    assert!(
        ping_ok(&c.vm2, "10.1.1.2", Duration::from_secs(15)),
        "vm2 cannot reach vm1\n{}",
        c.logs()
    );
    c
}

/// `v` without the interfaces' counters (they move with the traffic).
fn strip_counters(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("stats");
            m.values_mut().for_each(strip_counters);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_counters),
        _ => {}
    }
}

/// `vrctl --json` vif list, nh list, mpls dump and route dump of the network's VRF.
fn tables(sock: &Path) -> Value {
    let mut v = serde_json::json!({
        "vif": vrctl_json(sock, &["vif", "list"]),
        "nh": vrctl_json(sock, &["nh", "list"]),
        "mpls": vrctl_json(sock, &["mpls", "dump"]),
        "route": vrctl_json(sock, &["route", "dump", VRF]),
    });
    strip_counters(&mut v);
    v
}

/// Runs `f` on a new thread inside the network namespace `ns`.
fn spawn_in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        // SAFETY: setns on a valid namespace fd; it changes only this thread's network
        // namespace, and the thread is ours.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
}

/// What the TCP receiver saw.
#[derive(Debug)]
struct StreamReport {
    chunks: u64,
    /// Largest write-to-read delay of a chunk.
    max_delay: Duration,
    /// Largest gap between two reads (includes the sender's own scheduling delays).
    max_gap: Duration,
    error: Option<String>,
}

const CHUNK: usize = 4096;

/// The paced TCP stream: a receiver in `rx_ns` on `IP2:5201`, a sender in `tx_ns`, both
/// stopping when `stop` is set (or at [`TRAFFIC_LIMIT`]). Returns the receiver's report.
fn tcp_stream(rx_ns: &str, tx_ns: &str, stop: Arc<AtomicBool>) -> JoinHandle<StreamReport> {
    let t0 = Instant::now();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let rx = spawn_in_ns(rx_ns, move || {
        let l = TcpListener::bind((IP2, 5201)).expect("listen");
        let _ = ready_tx.send(());
        let (s, _) = l.accept().expect("accept");
        receive(s, t0)
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("receiver listening");
    spawn_in_ns(tx_ns, move || {
        let addr = SocketAddr::from((IP2.parse::<Ipv4Addr>().expect("ip"), 5201));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        let _ = s.set_nodelay(true);
        let mut buf = [0x5a_u8; CHUNK];
        while !stop.load(Ordering::Relaxed) && t0.elapsed() < TRAFFIC_LIMIT {
            let now = t0.elapsed().as_nanos() as u64;
            buf[..8].copy_from_slice(&now.to_le_bytes());
            if s.write_all(&buf).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        drop(s);
        rx.join().expect("receiver")
    })
}

/// Reads stamped chunks until the sender closes; bounded by a read timeout.
fn receive(mut s: TcpStream, t0: Instant) -> StreamReport {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut r = StreamReport {
        chunks: 0,
        max_delay: Duration::ZERO,
        max_gap: Duration::ZERO,
        error: None,
    };
    let mut buf = [0_u8; CHUNK];
    let mut last = Instant::now();
    while t0.elapsed() < TRAFFIC_LIMIT + Duration::from_secs(10) {
        match s.read_exact(&mut buf) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => {
                r.error = Some(e.to_string());
                break;
            }
        }
        let now = Instant::now();
        let mut stamp = [0_u8; 8];
        stamp.copy_from_slice(&buf[..8]);
        let sent = Duration::from_nanos(u64::from_le_bytes(stamp));
        r.max_delay = r.max_delay.max(t0.elapsed().saturating_sub(sent));
        if r.chunks > 0 {
            r.max_gap = r.max_gap.max(now - last);
        }
        last = now;
        r.chunks += 1;
    }
    r
}

/// Sequence numbers answered, and the transmitted count, from `ping` output.
fn ping_result(out: &str) -> (Vec<u64>, Option<u64>) {
    let seqs = out
        .lines()
        .filter(|l| l.contains("bytes from") && !l.contains("DUP!"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("icmp_seq="))?
                .parse()
                .ok()
        })
        .collect();
    let sent = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok());
    (seqs, sent)
}

/// Kills host `i`'s agent (-9), starts it again, and waits until its reconciles are over:
/// the first one, and the underlay MAC check by ARP that follows. Returns the new log lines.
fn restart_agent(c: &mut Cloud, i: usize) -> String {
    let before = c.hosts[i].agent.log().len();
    c.hosts[i].agent.kill9();
    std::thread::sleep(Duration::from_millis(300));
    let agent = c.start_agent(&c.hosts[i]);
    c.hosts[i].agent = agent;
    let new_log = || {
        c.hosts[i]
            .agent
            .log()
            .get(before..)
            .unwrap_or_default()
            .to_string()
    };
    let done = wait_for(Duration::from_secs(20), || {
        let l = new_log();
        (l.contains("reconciled:") && l.contains("(ARP)")).then_some(())
    });
    assert!(
        done.is_some(),
        "restarted agent {} did not reconcile and check its underlay MACs:\n{}",
        c.hosts[i].tag,
        new_log()
    );
    // Passes that follow the ARP answer (the config it reloads is the same).
    std::thread::sleep(Duration::from_millis(500));
    new_log()
}

#[test]
fn ns_agent_restart_is_hitless_across_hosts() {
    let Some(bins) = setup() else { return };
    let mut c = two_hosts(&bins);
    // Settled: both agents learned the other's MAC and reconciled since.
    std::thread::sleep(Duration::from_secs(1));
    let before: Vec<Value> = c.hosts.iter().map(|h| tables(&h.dp)).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let stream = tcp_stream(&c.vm2.name, &c.vm1.name, stop.clone());
    let ping_log = c.dir.path().join("ping.log");
    // 2 ms apart, at most 75,000 (150 s); stopped with SIGINT once the restarts are done.
    let mut ping = Proc::spawn(
        Some(&c.vm1),
        &format!("ping -i 0.002 -c 75000 -w 150 {IP2}"),
        &ping_log,
        &[],
    );
    std::thread::sleep(Duration::from_secs(1));
    let mut restart_logs = Vec::new();
    for &i in &RESTARTS {
        let l = restart_agent(&mut c, i);
        restart_logs.push((c.hosts[i].tag, l));
    }
    std::thread::sleep(Duration::from_secs(1));
    ping.signal(libc::SIGINT);
    let ping_done = wait_for(Duration::from_secs(5), || ping.try_wait());
    stop.store(true, Ordering::Relaxed);
    let report = stream.join().expect("stream");
    let out = std::fs::read_to_string(&ping_log).unwrap_or_default();
    let (seqs, sent) = ping_result(&out);
    let after: Vec<Value> = c.hosts.iter().map(|h| tables(&h.dp)).collect();

    let last = seqs.iter().copied().max().unwrap_or(0);
    let lost: Vec<u64> = (1..=last).filter(|s| !seqs.contains(s)).collect();
    let tail = sent.unwrap_or(0).saturating_sub(last);
    eprintln!(
        "ping: {} sent, {} answered, {} lost before the last answer ({:?}...), {tail} in flight at the end",
        sent.unwrap_or(0),
        seqs.len(),
        lost.len(),
        lost.iter().take(10).collect::<Vec<_>>()
    );
    eprintln!(
        "tcp: {} chunks of {CHUNK} B, max write-to-read delay {:?}, max gap between reads {:?}",
        report.chunks, report.max_delay, report.max_gap
    );
    for (tag, l) in &restart_logs {
        let lines: Vec<&str> = l.lines().filter(|l| l.contains("reconciled:")).collect();
        eprintln!("agent {tag} restart: {lines:#?}");
        assert!(
            lines
                .iter()
                .all(|l| l.contains("0 adds/changes, 0 removals")),
            "restarted agent {tag} changed the dataplane:\n{l}"
        );
    }
    assert!(ping_done.is_some(), "ping did not stop on SIGINT");
    assert!(
        last >= 1000 && tail < 100,
        "the ping stream did not run through the restarts:\n{out}"
    );
    assert!(lost.is_empty(), "pings lost: {lost:?}\n{}", c.logs());
    assert!(report.error.is_none(), "tcp stream: {report:?}");
    assert!(report.chunks > 1000, "tcp stream too short: {report:?}");
    assert!(
        report.max_delay <= MAX_STALL,
        "tcp stream stalled: {report:?}\n{}",
        c.logs()
    );
    for (h, (b, a)) in c.hosts.iter().zip(before.iter().zip(&after)) {
        assert_eq!(b, a, "host {}: the dataplane tables changed", h.tag);
    }
}
