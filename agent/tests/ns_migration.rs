//! Live migration (issue 20): a VM's vif disappears on host A and appears on host B under the
//! same Nic (VMI) UUID, while a VM on a third host C pings it every 10 ms and streams TCP to
//! it. Asserted: C re-points the VM's /32 to B (B's label), the established TCP connection
//! survives, pings resume, A removes the vif and routes the /32 to B, the shim holds B's route
//! only, and no other VM's label changes. The loss is measured and printed: pings lost, the
//! largest TCP write-to-read delay (the stall), the time from B's binding to C's re-point.
//!
//! The move, as Xen does it, in namespaces: the VM namespace has a second interface `eth1`
//! (same MAC) whose dom0 end `vif9.0` lives on B; the destination vif connects while the VM
//! still runs on A (xenstore on B: backend `state` 4, `hotplug-status` connected) and B programs
//! it, but nobody re-points (asserted: C keeps A's label, only A advertises); the VM pauses on A
//! (`eth0` down) and resumes on B (its address on `eth1`, a gratuitous ARP like netfront's on
//! resume), which is what moves the route; then the source domain goes (its xenstore backend
//! removed, `vif1.0` deleted on A).
//!
//! Needs root, `ip`, `ping`, `busybox`, `xenstore-write`, `xenstore-rm` and the daemons built
//! (see `ns_controller.rs`). Namespaces `vrt3-m20mig-<pid>-<role>`.

mod common;

use common::cloud::{cloud, ping_ok, routes, vm_ns, xs_plug, Proc};
use common::hosts::{spawn_in_ns, xs_unplug, Hosts};
use common::{sh, try_vrctl_json, wait_for, Ns};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const VM: &str = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7b01";
const PEER: &str = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7b02";
const BYSTANDER: &str = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7b03";
const VMI: &str = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4f01";
const VMI_PEER: &str = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4f02";
const VMI_BYSTANDER: &str = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4f03";
const MAC: &str = "02:20:00:00:01:01";
const MAC_PEER: &str = "02:20:00:00:01:02";
const MAC_BYSTANDER: &str = "02:20:00:00:01:03";
const IP: &str = "10.1.1.21";
const PREFIX: &str = "10.1.1.21/32";
/// Hosts: the VM's origin A, its destination B, the peer's host C.
const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
/// Upper bound of the traffic phase.
const TRAFFIC_LIMIT: Duration = Duration::from_secs(60);
const CHUNK: usize = 4096;

/// What the TCP receiver saw.
#[derive(Debug, Default)]
struct StreamReport {
    chunks: u64,
    /// Chunks sent after the move started (`moved`).
    chunks_after_move: u64,
    /// Largest write-to-read delay of a chunk.
    max_delay: Duration,
    error: Option<String>,
}

/// When the move started, in nanoseconds since the stream's start (`u64::MAX`: not yet).
type Moved = Arc<AtomicU64>;

/// A receiver in the VM on `IP:5201` and a sender in the peer writing a 4 KiB chunk stamped with
/// its send time (since `t0`) every 2 ms until `stop`. Returns the receiver's report.
fn tcp_stream(
    vm: &str,
    peer: &str,
    t0: Instant,
    stop: Arc<AtomicBool>,
    moved: Moved,
) -> JoinHandle<StreamReport> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let rx = spawn_in_ns(vm, move || {
        let l = TcpListener::bind((IP, 5201)).expect("listen");
        let _ = ready_tx.send(());
        let (s, _) = l.accept().expect("accept");
        receive(s, t0, &moved)
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("receiver listening");
    spawn_in_ns(peer, move || {
        let addr: SocketAddr = format!("{IP}:5201").parse().expect("addr");
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
fn receive(mut s: TcpStream, t0: Instant, moved: &AtomicU64) -> StreamReport {
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut r = StreamReport::default();
    let mut buf = [0_u8; CHUNK];
    while t0.elapsed() < TRAFFIC_LIMIT + Duration::from_secs(10) {
        match s.read_exact(&mut buf) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => {
                r.error = Some(e.to_string());
                break;
            }
        }
        let mut stamp = [0_u8; 8];
        stamp.copy_from_slice(&buf[..8]);
        let sent = Duration::from_nanos(u64::from_le_bytes(stamp));
        r.max_delay = r.max_delay.max(t0.elapsed().saturating_sub(sent));
        r.chunks += 1;
        if sent.as_nanos() > u128::from(moved.load(Ordering::Relaxed)) {
            r.chunks_after_move += 1;
        }
    }
    r
}

/// Answered sequence numbers and the transmitted count from `ping` output.
fn ping_result(out: &str) -> (Vec<u64>, u64) {
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
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (seqs, sent)
}

/// A ping every 10 ms from `from` to the VM (at most 60 s), its output to `log`.
fn start_ping(from: &Ns, log: &Path) -> Proc {
    Proc::spawn(
        Some(from),
        &format!("ping -i 0.01 -c 5000 -w 60 {IP}"),
        log,
        &[],
    )
}

/// Stops a ping (SIGINT: it prints its summary): answered sequence numbers, sent, the last
/// answered, the lost ones before it, and its output.
fn stop_ping(p: &Proc, log: &Path) -> (Vec<u64>, u64, u64, Vec<u64>, String) {
    p.signal(libc::SIGINT);
    let out = wait_for(Duration::from_secs(5), || {
        std::fs::read_to_string(log)
            .ok()
            .filter(|o| o.contains("packets transmitted"))
    })
    .unwrap_or_default();
    let (seqs, sent) = ping_result(&out);
    let last = seqs.iter().copied().max().unwrap_or(0);
    let lost: Vec<u64> = (1..=last).filter(|s| !seqs.contains(s)).collect();
    (seqs, sent, last, lost, out)
}

/// The VM's second NIC: `eth1` (same MAC, down) whose dom0 end is `vif9.0` on host `b`.
fn destination_nic(vm: &Ns, b: &Ns) {
    sh(&format!(
        "ip link add vif9.0 netns {} type veth peer name eth1 netns {}",
        b.name, vm.name
    ));
    sh(&format!("ip -n {} link set eth1 address {MAC}", vm.name));
    sh(&format!("ip -n {} link set vif9.0 up", b.name));
}

/// The destination vif connects on B while the VM still runs on A (Xen creates the destination
/// domain and its devices before copying memory): B programs it, and nobody re-points yet.
/// Returns B's label for the VM.
fn prepare_destination(h: &Hosts, label_a: Option<u64>) -> u64 {
    xs_plug(h.xs(B), 9, VM, VMI, MAC);
    let label_b = wait_for(Duration::from_secs(15), || h.label_of(B, "vif9.0"));
    let label_b = label_b.unwrap_or_else(|| panic!("B did not program vif9.0\n{}", h.logs()));
    // Give the agents time to (wrongly) advertise and re-point; they must not.
    std::thread::sleep(Duration::from_secs(1));
    let at_c = h.route(C, PREFIX).and_then(|r| r["label"].as_u64());
    assert_eq!(
        at_c,
        label_a,
        "C re-pointed before the VM resumed on B\n{}",
        h.logs()
    );
    let ads: Vec<_> = routes(&h.api)
        .into_iter()
        .filter(|r| r["prefix"] == PREFIX)
        .collect();
    assert_eq!(ads.len(), 1, "only A advertises the VM yet: {ads:?}");
    label_b
}

/// Pause on A, resume on B (address, default route and a gratuitous ARP on `eth1`, as
/// netfront sends on resume). Returns when the VM resumed.
fn pause_and_resume(vm: &Ns) -> Instant {
    vm.exec("ip link set eth0 down");
    vm.exec("ip addr flush dev eth0");
    vm.exec(&format!("ip addr add {IP}/24 dev eth1"));
    vm.exec("ip link set eth1 up");
    let resumed = Instant::now();
    vm.exec("ip route replace default via 10.1.1.1 dev eth1");
    vm.exec(&format!("busybox arping -U -c 1 -I eth1 {IP}"));
    resumed
}

/// The labels of every vif on host `i` by name.
fn labels(h: &Hosts, i: usize, names: &[&str]) -> Vec<Option<u64>> {
    names.iter().map(|n| h.label_of(i, n)).collect()
}

fn vif_names(dp: &Path) -> Vec<String> {
    try_vrctl_json(dp, &["vif", "list"])
        .and_then(|v| {
            v.as_array().map(|a| {
                a.iter()
                    .filter_map(|x| x["name"].as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default()
}

#[test]
fn ns_migration_moves_the_route_keeps_tcp_and_cleans_up_the_old_host() {
    let Some(h) = Hosts::start("m20mig", 3) else {
        return;
    };
    let vm = vm_ns("m20mig", "vm", &h.hosts[A].ns, "vif1.0", MAC, IP);
    let peer = vm_ns(
        "m20mig",
        "peer",
        &h.hosts[C].ns,
        "vif2.0",
        MAC_PEER,
        "10.1.1.22",
    );
    let bystander = vm_ns(
        "m20mig",
        "by",
        &h.hosts[A].ns,
        "vif3.0",
        MAC_BYSTANDER,
        "10.1.1.23",
    );
    destination_nic(&vm, &h.hosts[B].ns);
    cloud(
        &h.api,
        &[
            (VM, VMI, "i-1-VM", MAC, IP),
            (PEER, VMI_PEER, "i-2-VM", MAC_PEER, "10.1.1.22"),
            (
                BYSTANDER,
                VMI_BYSTANDER,
                "i-3-VM",
                MAC_BYSTANDER,
                "10.1.1.23",
            ),
        ],
    );
    xs_plug(h.xs(A), 1, VM, VMI, MAC);
    xs_plug(h.xs(C), 2, PEER, VMI_PEER, MAC_PEER);
    xs_plug(h.xs(A), 3, BYSTANDER, VMI_BYSTANDER, MAC_BYSTANDER);
    assert!(
        ping_ok(&peer, IP, Duration::from_secs(30)),
        "the peer cannot reach the VM on A\n{}",
        h.logs()
    );
    assert!(
        ping_ok(&peer, "10.1.1.23", Duration::from_secs(30)),
        "the peer cannot reach the bystander\n{}",
        h.logs()
    );
    let others_before = (
        labels(&h, A, &["vif3.0"]),
        labels(&h, C, &["vif2.0"]),
        h.route(C, "10.1.1.23/32"),
    );
    let label_a = h.label_of(A, "vif1.0");
    assert_eq!(
        h.route(C, PREFIX).and_then(|r| r["label"].as_u64()),
        label_a,
        "C routes the VM to A first"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let moved: Moved = Arc::new(AtomicU64::new(u64::MAX));
    let t0 = Instant::now();
    let stream = tcp_stream(&vm.name, &peer.name, t0, stop.clone(), moved.clone());
    let ping_log = h.dir.path().join("ping.log");
    let ping = start_ping(&peer, &ping_log);
    let by_log = h.dir.path().join("ping-bystander.log");
    let by_ping = start_ping(&bystander, &by_log);
    std::thread::sleep(Duration::from_secs(2));

    let label_b = prepare_destination(&h, label_a);
    moved.store(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
    let bound = pause_and_resume(&vm);
    // C re-points to B's label for the VM; A still has the vif until the source goes.
    let repointed = wait_for(Duration::from_secs(15), || {
        let r = h.route(C, PREFIX)?;
        (r["label"].as_u64() == Some(label_b)).then(|| bound.elapsed())
    });
    let repoint = repointed.unwrap_or_else(|| panic!("C did not re-point to B\n{}", h.logs()));
    // A re-points too (the VM announced itself on B after its last announcement on A), while
    // its vif still exists: the bystander there reaches the VM on B.
    let a_repointed = wait_for(Duration::from_secs(15), || {
        let r = h.route(A, PREFIX)?;
        (r["label"].as_u64() == Some(label_b)).then(|| bound.elapsed())
    });
    let a_repoint = a_repointed.unwrap_or_else(|| panic!("A did not re-point to B\n{}", h.logs()));
    std::thread::sleep(Duration::from_millis(500));
    xs_unplug(h.xs(A), 1);
    sh(&format!("ip -n {} link del vif1.0", h.hosts[A].ns.name));
    let cleaned = wait_for(Duration::from_secs(15), || {
        let r = h.route(A, PREFIX)?;
        (!vif_names(&h.hosts[A].dp).iter().any(|n| n == "vif1.0")
            && r["label"].as_u64() == Some(label_b))
        .then(|| bound.elapsed())
    });
    let cleaned = cleaned.unwrap_or_else(|| panic!("A did not clean up\n{}", h.logs()));
    std::thread::sleep(Duration::from_secs(2));

    let (seqs, sent, last, lost, out) = stop_ping(&ping, &ping_log);
    let (_, by_sent, by_last, by_lost, by_out) = stop_ping(&by_ping, &by_log);
    stop.store(true, Ordering::Relaxed);
    let tcp = stream.join().expect("stream");
    eprintln!(
        "migration: C re-pointed {repoint:?} and A {a_repoint:?} after the VM resumed on B, \
         A cleaned up {cleaned:?} after; the bystander on A lost {} of {by_sent} pings; \
         ping every 10 ms: {sent} sent, {} answered, {} lost ({} ms without answers); \
         tcp: {} chunks, {} sent after the move began, largest write-to-read delay {:?}, \
         error {:?}",
        by_lost.len(),
        seqs.len(),
        lost.len(),
        lost.len() * 10,
        tcp.chunks,
        tcp.chunks_after_move,
        tcp.max_delay,
        tcp.error
    );

    assert!(tcp.error.is_none(), "the TCP connection broke: {tcp:?}");
    assert!(
        tcp.chunks_after_move > 500,
        "the TCP stream did not go on after the move: {tcp:?}"
    );
    assert!(
        last + 300 >= sent && last > 300,
        "pings did not resume after the move: {sent} sent, last answer {last}\n{out}"
    );
    assert!(
        by_last + 300 >= by_sent && by_last > 300,
        "the bystander's pings did not resume: {by_sent} sent, last {by_last}\n{by_out}"
    );
    assert!(
        repoint < Duration::from_secs(3),
        "C took {repoint:?} to re-point"
    );
    let owners: Vec<_> = routes(&h.api)
        .into_iter()
        .filter(|r| r["prefix"] == PREFIX)
        .collect();
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(owners[0]["host"], "h1", "{owners:?}");
    assert_eq!(owners[0]["label"].as_u64(), Some(label_b), "{owners:?}");
    let others_after = (
        labels(&h, A, &["vif3.0"]),
        labels(&h, C, &["vif2.0"]),
        h.route(C, "10.1.1.23/32"),
    );
    assert_eq!(others_before, others_after, "other VMs' labels and routes");
    assert_eq!(h.drops(B, "Invalid Source"), 0);
}
