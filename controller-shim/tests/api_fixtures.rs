// SPDX-License-Identifier: Apache-2.0
//! The shim still speaks the agent API exactly as pinned in `api/tests/fixtures/` (captured
//! from the shim before the typed contract existed): one scenario over HTTP, each request sent
//! from its fixture, each reply compared with its fixture. The instance-ip UUIDs the shim
//! generates are the only values that differ between runs; they are masked on both sides.
//! `UPDATE_FIXTURES=1` rewrites the fixtures (only for a deliberate, versioned contract change).
mod common;
use common::bodies::{iip, vm, vmi, vn};
use common::{Shim, TempDir};
use serde_json::{json, Value};

const OUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../api/tests/fixtures");

fn update() -> bool {
    std::env::var_os("UPDATE_FIXTURES").is_some()
}

fn fixture(name: &str) -> Value {
    let path = format!("{OUT}/{name}.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Replaces the generated instance-ip UUIDs (`ips[].uuid` anywhere) with a placeholder.
fn mask(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::Array(ips)) = m.get_mut("ips") {
                for ip in ips {
                    ip["uuid"] = json!("<generated>");
                }
            }
            m.values_mut().for_each(mask);
        }
        Value::Array(a) => a.iter_mut().for_each(mask),
        _ => {}
    }
}

/// Sends the request (the fixture's, when the call has a body) and checks the reply against
/// its fixture.
fn call(shim: &Shim, name: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let body = body.map(|b| {
        if update() {
            let text = serde_json::to_string_pretty(&b).expect("fixture io") + "\n";
            std::fs::write(format!("{OUT}/{name}.request.json"), text).expect("fixture io");
            b
        } else {
            let f = fixture(&format!("{name}.request"));
            assert_eq!(
                f, b,
                "{name}: the request fixture is not what this scenario sends"
            );
            f
        }
    });
    let got = shim.ok(method, path, body.as_ref());
    if update() {
        let text = serde_json::to_string_pretty(&got).expect("fixture io") + "\n";
        std::fs::write(format!("{OUT}/{name}.reply.json"), text).expect("fixture io");
    } else {
        let (mut want, mut have) = (fixture(&format!("{name}.reply")), got.clone());
        mask(&mut want);
        mask(&mut have);
        assert_eq!(
            want, have,
            "{name}: the shim's reply differs from its fixture"
        );
    }
    got
}

#[test]
fn agent_api_replies_match_the_pinned_fixtures() {
    let dir = TempDir::new("capture");
    let shim = Shim::start(&format!("sqlite:{}", dir.0.join("shim.db").display()), &[]);
    let a = "a0f3c5d2-8e61-4b7a-9c2d-1e4f5a6b7c81";
    let b = "a0f3c5d2-8e61-4b7a-9c2d-1e4f5a6b7c82";
    let p = "a0f3c5d2-8e61-4b7a-9c2d-1e4f5a6b7c83";
    shim.ok(
        "POST",
        "/virtual-networks",
        Some(&vn(a, "guest-a", "10.1.1.0", "10.1.1.1")),
    );
    shim.ok(
        "POST",
        "/virtual-networks",
        Some(&vn(b, "guest-b", "10.2.2.0", "10.2.2.1")),
    );
    shim.ok(
        "POST",
        "/virtual-networks",
        Some(&vn(p, "public", "198.51.100.0", "198.51.100.1")),
    );
    let fa = "default-domain:default-project:guest-a";
    let fb = "default-domain:default-project:guest-b";
    shim.ok("POST", "/network-policys", Some(&json!({"network-policy": {"name": "acl-a-b",
        "uuid": "0d1c2b3a-4958-4677-8695-a4b3c2d1e0f1",
        "fq_name": ["default-domain", "default-project", "acl-a-b"], "parent_type": "project",
        "network_policy_entries": {"policy_rule": [{
            "rule_sequence": {"major": 1, "minor": 0}, "direction": "<>", "protocol": "tcp",
            "src_addresses": [{"virtual_network": fa}],
            "src_ports": [{"start_port": -1, "end_port": -1}],
            "dst_addresses": [{"virtual_network": fb}, {"subnet": {"ip_prefix": "192.0.2.0", "ip_prefix_len": 24}}, {"virtual_network": "any"}],
            "dst_ports": [{"start_port": 80, "end_port": 80}],
            "action_list": {"simple_action": "pass"}}]}}})));
    shim.ok(
        "PUT",
        &format!("/virtual-network/{a}"),
        Some(&json!({"virtual-network": {
        "fq_name": ["default-domain", "default-project", "guest-a"],
        "network_policy_refs": [{"to": ["default-domain", "default-project", "acl-a-b"],
            "attr": {"sequence": {"major": 0, "minor": 0}, "timer": null}}]}})),
    );
    let vm1 = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a81";
    let vm2 = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a82";
    let vmi1 = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e51";
    let vmi2 = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e52";
    shim.ok("POST", "/virtual-machines", Some(&vm(vm1, "i-2-1-VM")));
    shim.ok("POST", "/virtual-machines", Some(&vm(vm2, "i-2-2-VM")));
    let mut v1 = vmi(vmi1, "i-2-1-VM", 0, "guest-a");
    v1["virtual-machine-interface"]["virtual_machine_interface_properties"] =
        json!({"interface_mtu": 1450, "service_interface_type": null});
    shim.ok("POST", "/virtual-machine-interfaces", Some(&v1));
    shim.ok(
        "POST",
        "/virtual-machine-interfaces",
        Some(&vmi(vmi2, "i-2-2-VM", 0, "guest-b")),
    );
    shim.ok(
        "POST",
        "/instance-ips",
        Some(&iip("i-2-1-VM", 0, "guest-a")),
    );
    shim.ok(
        "POST",
        "/instance-ips",
        Some(&iip("i-2-2-VM", 0, "guest-b")),
    );
    shim.ok("POST", "/floating-ip-pools", Some(&json!({"floating-ip-pool": {"name": "PublicIpPool", "fq_name": ["default-domain", "default-project", "public", "PublicIpPool"], "parent_type": "virtual-network"}})));
    shim.ok("POST", "/floating-ips", Some(&json!({"floating-ip": {"name": "42", "uuid": "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9",
        "fq_name": ["default-domain", "default-project", "public", "PublicIpPool", "42"], "parent_type": "floating-ip-pool",
        "virtual_machine_interface_refs": [{"to": ["i-2-1-VM", "i-2-1-VM-0"]}]}})));

    call(
        &shim,
        "register",
        "POST",
        "/vrouter/agents",
        Some(json!({"hostname": "h1", "fabric_ip": "10.0.0.1"})),
    );
    shim.ok(
        "POST",
        "/vrouter/agents",
        Some(&json!({"hostname": "h2", "fabric_ip": "10.0.0.2"})),
    );
    call(
        &shim,
        "bind",
        "POST",
        "/vrouter/bindings",
        Some(json!({"host": "h1", "vmi_uuid": vmi1})),
    );
    shim.ok(
        "POST",
        "/vrouter/bindings",
        Some(&json!({"host": "h2", "vmi_uuid": vmi2})),
    );
    call(
        &shim,
        "advertise",
        "POST",
        "/vrouter/routes",
        Some(
            json!({"host": "h1", "vrf": fa, "prefix": "10.1.1.2/32", "label": 17, "vmi_uuid": vmi1}),
        ),
    );
    shim.ok("POST", "/vrouter/routes", Some(&json!({"host": "h2", "vrf": fb, "prefix": "10.2.2.2/32", "label": 18, "vmi_uuid": vmi2})));
    shim.ok("POST", "/vrouter/routes", Some(&json!({"host": "h2", "vrf": fb, "prefix": "10.2.2.0/24", "label": 19, "nexthop": "10.0.0.9"})));
    call(
        &shim,
        "interface",
        "GET",
        &format!("/vrouter/interfaces/{vmi1}"),
        None,
    );
    let w = call(
        &shim,
        "watch_reset",
        "GET",
        "/vrouter/watch?host=h1&since=0&timeout=1",
        None,
    );
    let rev = w["rev"].as_u64().expect("rev");
    call(
        &shim,
        "withdraw",
        "DELETE",
        "/vrouter/routes",
        Some(json!({"host": "h2", "vrf": fb, "prefix": "10.2.2.0/24"})),
    );
    call(
        &shim,
        "watch_since",
        "GET",
        &format!("/vrouter/watch?host=h1&since={rev}&timeout=1"),
        None,
    );
    call(&shim, "agents", "GET", "/vrouter/agents", None);
    call(
        &shim,
        "routes",
        "GET",
        &format!("/vrouter/routes?vrf={fb}"),
        None,
    );
    call(
        &shim,
        "unbind",
        "DELETE",
        "/vrouter/bindings",
        Some(json!({"host": "h2", "vmi_uuid": vmi2})),
    );
}
