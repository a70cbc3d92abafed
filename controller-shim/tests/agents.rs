// SPDX-License-Identifier: Apache-2.0
//! Two agents learn each other's routes through the shim, resume their watch, and lose the
//! routes when they are withdrawn, when the interface goes away, or when the agent does.

mod common;

use std::time::{Duration, Instant};

use common::bodies::{iip, vm, vmi, vn};
use common::{Shim, TempDir};
use serde_json::{json, Value};

const VN: &str = "a0f3c5d2-8e61-4b7a-9c2d-1e4f5a6b7c8d";
const VM1: &str = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a81";
const VM2: &str = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a82";
const VMI1: &str = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e51";
const VMI2: &str = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e52";
const VRF: &str = "default-domain:default-project:tier-web";

fn watch(shim: &Shim, host: &str, since: u64, timeout: u64) -> Value {
    shim.ok(
        "GET",
        &format!("/vrouter/watch?host={host}&since={since}&timeout={timeout}"),
        None,
    )
}

fn keys(w: &Value, op: &str) -> Vec<String> {
    w["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["op"] == op)
        .map(|e| e["key"].as_str().expect("key").to_string())
        .collect()
}

fn route_key(prefix: &str, origin: &str) -> String {
    format!("route/{VRF}/{prefix}/{origin}")
}

/// Builds the CloudStack side: one network, two VMs with one NIC and one IP each.
fn cloud(shim: &Shim) -> (String, String) {
    shim.ok(
        "POST",
        "/virtual-networks",
        Some(&vn(VN, "tier-web", "10.20.1.0", "10.20.1.1")),
    );
    let mut iips = Vec::new();
    for (vmu, vmiu, name) in [(VM1, VMI1, "i-2-1-VM"), (VM2, VMI2, "i-2-2-VM")] {
        shim.ok("POST", "/virtual-machines", Some(&vm(vmu, name)));
        shim.ok(
            "POST",
            "/virtual-machine-interfaces",
            Some(&vmi(vmiu, name, 0, "tier-web")),
        );
        let r = shim.ok("POST", "/instance-ips", Some(&iip(name, 0, "tier-web")));
        iips.push(r["instance-ip"]["uuid"].as_str().expect("uuid").to_string());
    }
    (iips[0].clone(), iips[1].clone())
}

fn register(shim: &Shim, host: &str, ip: &str, vmi: &str) {
    shim.ok(
        "POST",
        "/vrouter/agents",
        Some(&json!({"hostname": host, "fabric_ip": ip})),
    );
    shim.ok(
        "POST",
        "/vrouter/bindings",
        Some(&json!({"host": host, "vmi_uuid": vmi})),
    );
}

fn advertise(shim: &Shim, host: &str, prefix: &str, label: u32, vmi: &str) {
    shim.ok(
        "POST",
        "/vrouter/routes",
        Some(&json!({"host": host, "vrf": VRF, "prefix": prefix, "label": label, "vmi_uuid": vmi})),
    );
}

#[test]
fn two_agents_exchange_and_lose_routes() {
    let dir = TempDir::new("agents");
    let shim = Shim::start(&format!("sqlite:{}", dir.0.join("shim.db").display()), &[]);
    let (iip1, iip2) = cloud(&shim);
    register(&shim, "h1", "10.0.0.1", VMI1);
    register(&shim, "h2", "10.0.0.2", VMI2);

    // Interface config for the bound VMI only.
    let w1 = watch(&shim, "h1", 0, 1);
    assert_eq!(w1["reset"], true);
    assert_eq!(keys(&w1, "put"), vec![format!("iface/{VMI1}")]);
    let cfg = &w1["events"][0]["value"];
    assert_eq!(cfg["mac"], "02:c1:d2:e3:f4:a5");
    assert_eq!(cfg["network"]["vrf"], VRF);
    assert_eq!(cfg["ips"][0]["address"], "10.20.1.2");
    assert_eq!(cfg["ips"][0]["gateway"], "10.20.1.1");
    assert_eq!(cfg["ips"][0]["prefix_len"], 24);
    assert_eq!(cfg["vm_uuid"], VM1);
    let mut rev1 = w1["rev"].as_u64().expect("rev");
    let w2 = watch(&shim, "h2", 0, 1);
    let mut rev2 = w2["rev"].as_u64().expect("rev");

    // Each advertises its VM's /32; each sees the other's, never its own.
    advertise(&shim, "h1", "10.20.1.2/32", 17, VMI1);
    advertise(&shim, "h2", "10.20.1.3/32", 18, VMI2);
    let w = watch(&shim, "h1", rev1, 5);
    assert_eq!(keys(&w, "put"), vec![route_key("10.20.1.3/32", "h2")]);
    let r = &w["events"][0]["value"];
    assert_eq!(
        (r["label"].as_u64(), r["nexthop"].as_str()),
        (Some(18), Some("10.0.0.2"))
    );
    rev1 = w["rev"].as_u64().expect("rev");
    let w = watch(&shim, "h2", rev2, 5);
    assert_eq!(keys(&w, "put"), vec![route_key("10.20.1.2/32", "h1")]);
    assert_eq!(w["events"][0]["value"]["nexthop"], "10.0.0.1");
    rev2 = w["rev"].as_u64().expect("rev");

    // Long-poll wakes up on a withdraw.
    let port = shim.port;
    let waiter = std::thread::spawn(move || {
        let t = Instant::now();
        let url = format!("http://127.0.0.1:{port}/vrouter/watch?host=h1&since={rev1}&timeout=20");
        let (st, v) = common::call(&url, "GET", None, None);
        (st, v, t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    shim.ok(
        "DELETE",
        "/vrouter/routes",
        Some(&json!({"host": "h2", "vrf": VRF, "prefix": "10.20.1.3/32"})),
    );
    let (st, w, took) = waiter.join().expect("waiter thread");
    assert_eq!(st, 200);
    assert!(
        took < Duration::from_secs(10),
        "long-poll did not wake up ({took:?})"
    );
    assert_eq!(keys(&w, "delete"), vec![route_key("10.20.1.3/32", "h2")]);
    rev1 = w["rev"].as_u64().expect("rev");

    // Resume: h1 is away while h2 re-advertises, adds and removes another prefix. On return it
    // gets exactly what it missed: the current route and the tombstone, nothing else.
    advertise(&shim, "h2", "10.20.1.3/32", 19, VMI2);
    advertise(&shim, "h2", "10.20.1.99/32", 20, VMI2);
    shim.ok(
        "DELETE",
        "/vrouter/routes",
        Some(&json!({"host": "h2", "vrf": VRF, "prefix": "10.20.1.99/32"})),
    );
    let w = watch(&shim, "h1", rev1, 1);
    assert_eq!(w["reset"], false);
    assert_eq!(keys(&w, "put"), vec![route_key("10.20.1.3/32", "h2")]);
    assert_eq!(keys(&w, "delete"), vec![route_key("10.20.1.99/32", "h2")]);
    assert!(w["events"]
        .as_array()
        .expect("events")
        .iter()
        .all(|e| e["rev"].as_u64() > Some(rev1)));
    let label: Vec<u64> = w["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["value"]["label"].as_u64())
        .collect();
    assert_eq!(label, vec![19]);
    rev1 = w["rev"].as_u64().expect("rev");
    let quiet = watch(&shim, "h1", rev1, 1);
    assert_eq!(quiet["events"], json!([]));

    // CloudStack's startup resync: re-POSTs (409), re-PUTs what exists, deletes what it does
    // not know. Routes of live interfaces stay.
    let stale_vm = "99999999-9c0d-4e1f-8a2b-3c4d5e6f7a8b";
    shim.ok("POST", "/virtual-machines", Some(&vm(stale_vm, "i-9-9-VM")));
    assert_eq!(
        shim.post(
            "/virtual-networks",
            &vn(VN, "tier-web", "10.20.1.0", "10.20.1.1")
        )
        .0,
        409
    );
    shim.ok(
        "PUT",
        &format!("/virtual-network/{VN}"),
        Some(&vn(VN, "tier-web", "10.20.1.0", "10.20.1.1")),
    );
    for (vmu, vmiu, name) in [(VM1, VMI1, "i-2-1-VM"), (VM2, VMI2, "i-2-2-VM")] {
        shim.ok(
            "PUT",
            &format!("/virtual-machine/{vmu}"),
            Some(&vm(vmu, name)),
        );
        let read = shim.ok("GET", &format!("/virtual-machine-interface/{vmiu}"), None);
        shim.ok(
            "PUT",
            &format!("/virtual-machine-interface/{vmiu}"),
            Some(&read),
        );
    }
    let iip_read = shim.ok("GET", &format!("/instance-ip/{iip1}"), None);
    shim.ok("PUT", &format!("/instance-ip/{iip1}"), Some(&iip_read));
    shim.ok("DELETE", &format!("/virtual-machine/{stale_vm}"), None);
    let w = watch(&shim, "h1", rev1, 1);
    assert!(
        keys(&w, "delete").is_empty(),
        "resync withdrew something: {w}"
    );
    let routes = shim.ok("GET", &format!("/vrouter/routes?vrf={VRF}"), None);
    assert_eq!(routes["routes"].as_array().map(Vec::len), Some(2));
    rev1 = w["rev"].as_u64().expect("rev");

    // The interface goes away on the CloudStack side: its route is withdrawn from h1, and h2
    // loses the interface config.
    shim.ok("DELETE", &format!("/instance-ip/{iip2}"), None);
    shim.ok(
        "DELETE",
        &format!("/virtual-machine-interface/{VMI2}"),
        None,
    );
    let w = watch(&shim, "h1", rev1, 1);
    assert_eq!(keys(&w, "delete"), vec![route_key("10.20.1.3/32", "h2")]);
    rev1 = w["rev"].as_u64().expect("rev");
    let w = watch(&shim, "h2", rev2, 1);
    assert!(keys(&w, "delete").contains(&format!("iface/{VMI2}")));
    assert!(keys(&w, "delete").contains(&route_key("10.20.1.2/32", "h1")));

    // h2 comes back with a new interface, then the agent h2 goes away: its route is withdrawn.
    shim.ok(
        "POST",
        "/virtual-machine-interfaces",
        Some(&vmi(VMI2, "i-2-2-VM", 0, "tier-web")),
    );
    advertise(&shim, "h2", "10.20.1.3/32", 21, VMI2);
    let w = watch(&shim, "h1", rev1, 2);
    assert_eq!(keys(&w, "put"), vec![route_key("10.20.1.3/32", "h2")]);
    rev1 = w["rev"].as_u64().expect("rev");
    shim.ok("DELETE", "/vrouter/agents/h2", None);
    let w = watch(&shim, "h1", rev1, 1);
    assert_eq!(keys(&w, "delete"), vec![route_key("10.20.1.3/32", "h2")]);
    assert_eq!(shim.get("/vrouter/watch?host=h2&since=0&timeout=1").0, 404);
    // Client errors on the agent API are 4xx.
    assert_eq!(
        shim.post(
            "/vrouter/routes",
            &json!({"host": "h1", "vrf": VRF, "prefix": "10.1.1.1", "label": 1})
        )
        .0,
        400
    );
    assert_eq!(
        shim.post(
            "/vrouter/routes",
            &json!({"host": "h1", "vrf": VRF, "prefix": "10.1.1.1/32", "label": 2_000_000})
        )
        .0,
        400
    );
    assert_eq!(
        shim.post(
            "/vrouter/routes",
            &json!({"host": "ghost", "vrf": VRF, "prefix": "10.1.1.1/32", "label": 1})
        )
        .0,
        404
    );
    assert_eq!(
        shim.post("/vrouter/bindings", &json!({"host": "h1"})).0,
        400
    );
}

#[test]
fn agent_lease_expiry_withdraws_routes() {
    let dir = TempDir::new("lease");
    let shim = Shim::start(
        &format!("sqlite:{}", dir.0.join("shim.db").display()),
        &["--agent-ttl", "2"],
    );
    cloud(&shim);
    register(&shim, "h1", "10.0.0.1", VMI1);
    register(&shim, "h2", "10.0.0.2", VMI2);
    advertise(&shim, "h2", "10.20.1.3/32", 18, VMI2);
    // h1 keeps polling (which renews its lease); h2 falls silent.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut rev = 0;
    let mut gone = false;
    while Instant::now() < deadline && !gone {
        let w = watch(&shim, "h1", rev, 1);
        gone = rev > 0 && keys(&w, "delete").contains(&route_key("10.20.1.3/32", "h2"));
        rev = w["rev"].as_u64().expect("rev");
    }
    assert!(gone, "h2's route was not withdrawn after its lease expired");
    let agents = shim.ok("GET", "/vrouter/agents", None);
    let names: Vec<&str> = agents["agents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["hostname"].as_str())
        .collect();
    assert_eq!(names, vec!["h1"]);
}
