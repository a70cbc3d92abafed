// SPDX-License-Identifier: Apache-2.0
//! The etcd backend against a real etcd (Debian's etcd-server), with two shim instances
//! sharing it.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::bodies::{vm, vmi, vn};
use common::{free_port, require_tool, Shim, TempDir};
use serde_json::json;

struct Etcd {
    child: Child,
    port: u16,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_etcd(dir: &TempDir) -> Etcd {
    let (port, peer) = (free_port(), free_port());
    let cluster = format!("shimtest=http://127.0.0.1:{peer}");
    let etcd = spawn_member(dir, "shimtest", port, peer, &cluster, 10_000);
    wait_up(port);
    etcd
}

/// One etcd member `name` (client `port`, peer `peer`) of `cluster` (`--initial-cluster`),
/// data under `dir`, transactions of at most `max_txn_ops` operations; not waited for (a
/// member of a new cluster answers once it has a quorum).
fn spawn_member(
    dir: &TempDir,
    name: &str,
    port: u16,
    peer: u16,
    cluster: &str,
    max_txn_ops: u32,
) -> Etcd {
    require_tool(
        "etcd",
        &["--version"],
        "apt-get install etcd-server etcd-client",
    );
    let client = format!("http://127.0.0.1:{port}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new("etcd")
        .args(["--name", name, "--data-dir"])
        .arg(dir.0.join(format!("etcd-{name}")))
        .args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args(["--initial-cluster", cluster])
        .args(["--max-txn-ops", &max_txn_ops.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn etcd");
    Etcd { child, port }
}

/// Waits up to 30 s for the member on `port` to answer a read.
fn wait_up(port: u16) {
    let client = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = ureq::post(&format!("{client}/v3/kv/range"))
            .send_string(r#"{"key":"AA=="}"#)
            .is_ok();
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "etcd did not come up on {client}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_shims_share_one_etcd() {
    let dir = TempDir::new("etcd");
    let etcd = start_etcd(&dir);
    let store = format!("etcd:http://127.0.0.1:{}", etcd.port);
    let a = Shim::start(&store, &[]);
    let b = Shim::start(&store, &[]);

    // Defaults created once, visible from both.
    for s in [&a, &b] {
        let c = s.ok("GET", "/virtual-networks?count=true", None);
        assert_eq!(c["virtual-networks"]["count"], 3);
    }
    // Write on A, read on B (and the other way round).
    let vnu = "a0f3c5d2-8e61-4b7a-9c2d-1e4f5a6b7c8d";
    a.ok(
        "POST",
        "/virtual-networks",
        Some(&vn(vnu, "tier-web", "10.20.1.0", "10.20.1.1")),
    );
    let got = b.ok("POST", "/fqname-to-id", Some(&json!({"type": "virtual-network", "fq_name": ["default-domain", "default-project", "tier-web"]})));
    assert_eq!(got["uuid"], vnu);
    assert_eq!(
        b.post(
            "/virtual-networks",
            &vn(vnu, "tier-web", "10.20.1.0", "10.20.1.1")
        )
        .0,
        409
    );
    let vm1 = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a81";
    let vmi1 = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e51";
    let vmi2 = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e52";
    b.ok("POST", "/virtual-machines", Some(&vm(vm1, "i-2-1-VM")));
    a.ok(
        "POST",
        "/virtual-machine-interfaces",
        Some(&vmi(vmi1, "i-2-1-VM", 0, "tier-web")),
    );
    b.ok(
        "POST",
        "/virtual-machine-interfaces",
        Some(&vmi(vmi2, "i-2-1-VM", 1, "tier-web")),
    );
    let v = a.ok("GET", &format!("/virtual-machine/{vm1}"), None);
    assert_eq!(
        v["virtual-machine"]["virtual_machine_interfaces"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    // Concurrent writers on both instances: nothing acknowledged is lost.
    let ports = [a.port, b.port];
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let port = ports[t % 2];
            std::thread::spawn(move || {
                let mut ok = Vec::new();
                for n in 0..40u32 {
                    let u = format!("{:08x}-1111-4000-8000-{n:012x}", t + 1);
                    let name = format!("c-{t}-{n}");
                    let (st, _) = common::call(&format!("http://127.0.0.1:{port}/virtual-machines"), "POST",
                        Some(&json!({"virtual-machine": {"name": name, "uuid": u, "fq_name": [name]}})), None);
                    assert!(st == 200 || st == 503, "create answered {st}");
                    if st == 200 {
                        ok.push(u);
                    }
                }
                ok
            })
        })
        .collect();
    let acked: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("writer"))
        .collect();
    assert!(
        acked.len() >= 100,
        "too many conflicts: {} acknowledged",
        acked.len()
    );
    for u in &acked {
        assert_eq!(a.get(&format!("/virtual-machine/{u}")).0, 200);
        assert_eq!(b.get(&format!("/virtual-machine/{u}")).0, 200);
    }

    // Agents on different instances see each other's routes.
    let vrf = "default-domain:default-project:tier-web";
    a.ok(
        "POST",
        "/vrouter/agents",
        Some(&json!({"hostname": "h1", "fabric_ip": "10.0.0.1"})),
    );
    b.ok(
        "POST",
        "/vrouter/agents",
        Some(&json!({"hostname": "h2", "fabric_ip": "10.0.0.2"})),
    );
    a.ok(
        "POST",
        "/vrouter/bindings",
        Some(&json!({"host": "h1", "vmi_uuid": vmi1})),
    );
    b.ok(
        "POST",
        "/vrouter/bindings",
        Some(&json!({"host": "h2", "vmi_uuid": vmi2})),
    );
    b.ok("POST", "/vrouter/routes", Some(&json!({"host": "h2", "vrf": vrf, "prefix": "10.20.1.3/32", "label": 18, "vmi_uuid": vmi2})));
    let w = a.ok("GET", "/vrouter/watch?host=h1&since=0&timeout=5", None);
    let keys: Vec<&str> = w["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["key"].as_str())
        .collect();
    assert!(
        keys.contains(&format!("route/{vrf}/10.20.1.3/32/h2").as_str()),
        "{w}"
    );
    let rev = w["rev"].as_u64().expect("rev");
    // A long-poll on A wakes up for a withdraw made on B.
    let port = a.port;
    let waiter = std::thread::spawn(move || {
        common::call(
            &format!("http://127.0.0.1:{port}/vrouter/watch?host=h1&since={rev}&timeout=20"),
            "GET",
            None,
            None,
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    b.ok(
        "DELETE",
        "/vrouter/routes",
        Some(&json!({"host": "h2", "vrf": vrf, "prefix": "10.20.1.3/32"})),
    );
    let (st, w) = waiter.join().expect("waiter");
    assert_eq!(st, 200);
    assert_eq!(w["events"][0]["op"], "delete", "{w}");

    // Restart A: everything is still there.
    drop(a);
    let a = Shim::start(&store, &[]);
    assert_eq!(a.get(&format!("/virtual-network/{vnu}")).0, 200);
    assert_eq!(a.get(&format!("/virtual-machine-interface/{vmi2}")).0, 200);
}

#[test]
fn a_shim_given_several_endpoints_uses_the_one_that_answers() {
    let dir = TempDir::new("etcd-endpoints");
    let etcd = start_etcd(&dir);
    // The first member "is down": nothing listens on its port.
    let dead = free_port();
    let store = format!(
        "etcd:http://127.0.0.1:{dead},http://127.0.0.1:{}",
        etcd.port
    );
    let a = Shim::start(&store, &[]);
    let vnu = "a0f3c5d2-8e61-4b7a-9c2d-1e4f5a6b7c9e";
    a.ok(
        "POST",
        "/virtual-networks",
        Some(&vn(vnu, "tier-db", "10.20.2.0", "10.20.2.1")),
    );
    // A second instance on the live endpoint alone sees what the first wrote.
    let b = Shim::start(&format!("etcd:http://127.0.0.1:{}", etcd.port), &[]);
    let got = b.ok("GET", &format!("/virtual-network/{vnu}"), None);
    assert_eq!(got["virtual-network"]["name"], "tier-db");
}

#[test]
fn quorum_loss_gives_503_within_seconds_and_a_member_back_restores_service() {
    let dir = TempDir::new("etcd-quorum");
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let cluster = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut members: Vec<Option<Etcd>> = ports
        .iter()
        .enumerate()
        .map(|(i, (c, p))| {
            Some(spawn_member(
                &dir,
                &format!("m{i}"),
                *c,
                *p,
                &cluster,
                10_000,
            ))
        })
        .collect();
    for (c, _) in &ports {
        wait_up(*c);
    }
    let endpoints = ports
        .iter()
        .map(|(c, _)| format!("http://127.0.0.1:{c}"))
        .collect::<Vec<_>>()
        .join(",");
    let shim = Shim::start(&format!("etcd:{endpoints}"), &[]);
    let create = |n: u32| {
        let name = format!("q-{n}");
        let t = Instant::now();
        let (code, _) = shim.post(
            "/virtual-machines",
            &json!({"virtual-machine": {"name": name, "fq_name": [name]}}),
        );
        (code, t.elapsed())
    };
    assert_eq!(create(0).0, 200);
    // The shim's first endpoint goes: the next member serves.
    // (If it was the raft leader the others elect a new one first: a second or two.)
    members[0] = None;
    let served = (1..20).find(|&n| {
        create(n).0 == 200 || {
            std::thread::sleep(Duration::from_millis(250));
            false
        }
    });
    assert!(
        served.is_some(),
        "one member down of three: no 200 within 5 s"
    );
    // A second goes: no quorum. Creates and reads fail fast with 503, they do not hang.
    members[1] = None;
    for n in 20..22 {
        let (code, took) = create(n);
        assert_eq!(code, 503, "without quorum");
        assert!(took < Duration::from_secs(8), "503 after {took:?}");
    }
    let t = Instant::now();
    assert_eq!(shim.get("/virtual-machines").0, 503);
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "read: {:?}",
        t.elapsed()
    );
    // The second member comes back (same data): service resumes, nothing acknowledged lost.
    let (c, p) = ports[1];
    members[1] = Some(spawn_member(&dir, "m1", c, p, &cluster, 10_000));
    let back = (22..80).find(|&n| {
        std::thread::sleep(Duration::from_millis(500));
        create(n).0 == 200
    });
    assert!(back.is_some(), "no 200 within 30 s of quorum coming back");
    let (code, list) = shim.get("/virtual-machines");
    assert_eq!(code, 200);
    let names: Vec<String> = list["virtual-machines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["fq_name"][0].as_str().map(str::to_string))
        .collect();
    // What was acknowledged with 200 (q-0, and the first create served by another member).
    let served = served.map(|n| format!("q-{n}")).unwrap_or_default();
    for n in ["q-0", served.as_str()] {
        assert!(
            names.iter().any(|x| x == n),
            "{n} acknowledged and lost: {names:?}"
        );
    }
}

#[test]
fn a_mutation_too_big_for_one_etcd_transaction_is_refused_whole_never_split() {
    let dir = TempDir::new("etcd-txn");
    let (port, peer) = (free_port(), free_port());
    let cluster = format!("small=http://127.0.0.1:{peer}");
    // etcd's default limit: 128 operations per transaction.
    let _etcd = spawn_member(&dir, "small", port, peer, &cluster, 128);
    wait_up(port);
    let store = format!("etcd:http://127.0.0.1:{port}");
    let a = Shim::start(&store, &[]);
    let vrf = "default-domain:default-project:tier-big";
    a.ok(
        "POST",
        "/virtual-networks",
        Some(&vn(
            "a0f3c5d2-8e61-4b7a-9c2d-1e4f5a6b7caa",
            "tier-big",
            "10.30.0.0",
            "10.30.0.1",
        )),
    );
    let (vm1, vmi1) = (
        "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7aa1",
        "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4ea1",
    );
    let (vm2, vmi2) = (
        "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7aa2",
        "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4ea2",
    );
    for (vmu, vmiu, name, host, ip) in [
        (vm1, vmi1, "i-9-1-VM", "h1", "10.0.0.1"),
        (vm2, vmi2, "i-9-2-VM", "h2", "10.0.0.2"),
    ] {
        a.ok("POST", "/virtual-machines", Some(&vm(vmu, name)));
        a.ok(
            "POST",
            "/virtual-machine-interfaces",
            Some(&vmi(vmiu, name, 0, "tier-big")),
        );
        a.ok(
            "POST",
            "/vrouter/agents",
            Some(&json!({"hostname": host, "fabric_ip": ip})),
        );
        a.ok(
            "POST",
            "/vrouter/bindings",
            Some(&json!({"host": host, "vmi_uuid": vmiu})),
        );
    }
    // h2 advertises 100 routes; h1's view holds them all. Removing h2 withdraws every one of
    // them from both views: one mutation of several hundred operations.
    for n in 0..100 {
        a.ok(
            "POST",
            "/vrouter/routes",
            Some(
                &json!({"host": "h2", "vrf": vrf, "prefix": format!("10.30.1.{n}/32"),
                         "label": 100 + n, "vmi_uuid": vmi2}),
            ),
        );
    }
    let h2_routes = |s: &Shim| {
        let r = s.ok("GET", &format!("/vrouter/routes?vrf={vrf}"), None);
        r["routes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["host"] == "h2")
            .count()
    };
    assert_eq!(h2_routes(&a), 100);
    let (code, err) = a.delete("/vrouter/agents/h2");
    assert_eq!(code, 503, "{err}");
    assert!(err.to_string().contains("--max-txn-ops"), "{err}");
    // Nothing of it was written: this instance and a fresh one both still have all of it.
    let b = Shim::start(&store, &[]);
    for s in [&a, &b] {
        assert_eq!(h2_routes(s), 100, "a part of the removal was written");
        let agents = s.ok("GET", "/vrouter/agents", None);
        assert!(
            agents["agents"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|x| x["hostname"] == "h2"),
            "{agents}"
        );
    }
}
