// SPDX-License-Identifier: Apache-2.0
//! The Java client's wire contract (contrail-api.md §2, §3, §7), checked at the HTTP level.

mod common;

use std::time::Duration;

use common::bodies::{iip, vm, vmi, vn};
use common::{RawConn, Shim, TempDir};
use serde_json::{json, Value};

const VN: &str = "a0f3c5d2-8e61-4b7a-9c2d-1e4f5a6b7c8d";
const VM: &str = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b";
const VMI: &str = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f";

fn start(dir: &TempDir) -> Shim {
    Shim::start(&format!("sqlite:{}", dir.0.join("shim.db").display()), &[])
}

#[test]
fn create_answers_200_and_echoes_uuid_byte_for_byte() {
    let dir = TempDir::new("echo");
    let shim = start(&dir);
    let mut c = RawConn::open(shim.port);
    let r = c.send(
        "POST",
        "/virtual-networks",
        Some(&vn(VN, "tier-web", "10.20.1.0", "10.20.1.1").to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["virtual-network"]["uuid"], VN);
    assert_eq!(v["virtual-network"]["parent_type"], "project");
    // Upper-case uuids are kept exactly (CloudStack's sync compares strings).
    let upper = "5E6F7A8B-9C0D-4E1F-8A2B-3C4D5E6F7A8B";
    let r = c.send(
        "POST",
        "/virtual-machines",
        Some(&vm(upper, "i-2-11-VM").to_string()),
    );
    assert_eq!(r.json()["virtual-machine"]["uuid"], upper);
    let r = c.send("GET", &format!("/virtual-machine/{upper}"), None);
    assert_eq!(r.json()["virtual-machine"]["uuid"], upper);
    // Same uuid again: 409.
    let r = c.send(
        "POST",
        "/virtual-machines",
        Some(&vm(upper, "other").to_string()),
    );
    assert_eq!(r.status, 409);
}

#[test]
fn refs_by_fq_name_children_and_back_refs_on_plain_get() {
    let dir = TempDir::new("refs");
    let shim = start(&dir);
    shim.ok(
        "POST",
        "/virtual-networks",
        Some(&vn(VN, "tier-web", "10.20.1.0", "10.20.1.1")),
    );
    shim.ok("POST", "/virtual-machines", Some(&vm(VM, "i-2-10-VM")));
    shim.ok(
        "POST",
        "/virtual-machine-interfaces",
        Some(&vmi(VMI, "i-2-10-VM", 0, "tier-web")),
    );
    let r = shim.ok(
        "POST",
        "/instance-ips",
        Some(&iip("i-2-10-VM", 0, "tier-web")),
    );
    let iip_uuid = r["instance-ip"]["uuid"]
        .as_str()
        .expect("server-assigned uuid")
        .to_string();

    let v = shim.ok("GET", &format!("/virtual-machine-interface/{VMI}"), None);
    let o = &v["virtual-machine-interface"];
    assert_eq!(
        o["virtual_machine_interface_mac_addresses"]["mac_address"][0],
        "02:c1:d2:e3:f4:a5"
    );
    assert_eq!(o["virtual_network_refs"][0]["uuid"], VN);
    assert_eq!(o["instance_ip_back_refs"][0]["uuid"], iip_uuid.as_str());
    let v = shim.ok("GET", &format!("/instance-ip/{iip_uuid}"), None);
    assert_eq!(v["instance-ip"]["instance_ip_address"], "10.20.1.2");
    assert_eq!(
        v["instance-ip"]["virtual_machine_interface_refs"][0]["uuid"],
        VMI
    );
    let v = shim.ok("GET", &format!("/virtual-machine/{VM}"), None);
    assert_eq!(
        v["virtual-machine"]["virtual_machine_interfaces"][0]["uuid"],
        VMI
    );
    let v = shim.ok("GET", &format!("/virtual-network/{VN}"), None);
    let o = &v["virtual-network"];
    assert_eq!(o["virtual_machine_interface_back_refs"][0]["uuid"], VMI);
    assert_eq!(o["instance_ip_back_refs"][0]["uuid"], iip_uuid.as_str());
    let sn = &o["network_ipam_refs"][0]["attr"]["ipam_subnets"][0];
    assert_eq!(sn["default_gateway"], "10.20.1.1");
    assert_eq!(sn["subnet"]["ip_prefix"], "10.20.1.0");
    assert_eq!(sn["subnet"]["ip_prefix_len"], 24);
    // Python-style read hides them.
    let v = shim.ok(
        "GET",
        &format!("/virtual-network/{VN}?exclude_back_refs=True&exclude_children=True"),
        None,
    );
    assert!(v["virtual-network"]
        .get("virtual_machine_interface_back_refs")
        .is_none());
    // Projects list their networks as children.
    let (_, p) = shim.post(
        "/fqname-to-id",
        &json!({"type": "project", "fq_name": ["default-domain", "default-project"]}),
    );
    let p = shim.ok(
        "GET",
        &format!("/project/{}", p["uuid"].as_str().expect("uuid")),
        None,
    );
    let kids: Vec<&Value> = p["project"]["virtual_networks"]
        .as_array()
        .expect("children")
        .iter()
        .collect();
    assert!(kids.iter().any(|k| k["uuid"] == VN));
}

#[test]
fn put_of_an_object_read_first_ignores_read_only_keys() {
    let dir = TempDir::new("put");
    let shim = start(&dir);
    shim.ok(
        "POST",
        "/virtual-networks",
        Some(&vn(VN, "tier-web", "10.20.1.0", "10.20.1.1")),
    );
    shim.ok("POST", "/virtual-machines", Some(&vm(VM, "i-2-10-VM")));
    shim.ok(
        "POST",
        "/virtual-machine-interfaces",
        Some(&vmi(VMI, "i-2-10-VM", 0, "tier-web")),
    );
    // Read, change a subnet, PUT back everything (children, back-refs, hrefs, id_perms...).
    let mut v = shim.ok("GET", &format!("/virtual-network/{VN}"), None);
    v["virtual-network"]["network_ipam_refs"][0]["attr"]["ipam_subnets"][0]["default_gateway"] =
        json!("10.20.1.254");
    v["virtual-network"]["uuid"] = json!("not-even-a-uuid");
    let r = shim.ok("PUT", &format!("/virtual-network/{VN}"), Some(&v));
    assert_eq!(r["virtual-network"]["uuid"], VN);
    let after = shim.ok("GET", &format!("/virtual-network/{VN}"), None);
    let o = &after["virtual-network"];
    assert_eq!(
        o["network_ipam_refs"][0]["attr"]["ipam_subnets"][0]["default_gateway"],
        "10.20.1.254"
    );
    assert_eq!(o["virtual_machine_interface_back_refs"][0]["uuid"], VMI);
    assert_eq!(o["uuid"], VN);
    // The VMI, read then PUT with its MAC and refs (with uuid/href) unchanged.
    let v = shim.ok("GET", &format!("/virtual-machine-interface/{VMI}"), None);
    shim.ok(
        "PUT",
        &format!("/virtual-machine-interface/{VMI}"),
        Some(&v),
    );
    let again = shim.ok("GET", &format!("/virtual-machine-interface/{VMI}"), None);
    assert_eq!(
        again["virtual-machine-interface"]["virtual_machine_interface_mac_addresses"],
        v["virtual-machine-interface"]["virtual_machine_interface_mac_addresses"]
    );
    // The Java client clears routing_instance_refs before a PUT: an empty list is accepted.
    let r = shim.put(&format!("/virtual-machine-interface/{VMI}"), &json!({"virtual-machine-interface": {"virtual_network_refs": [{"to": ["default-domain", "default-project", "tier-web"]}]}}));
    assert_eq!(r.0, 200, "{}", r.1);
    // ETag / If-None-Match.
    let mut c = RawConn::open(shim.port);
    let r = c.send("GET", &format!("/virtual-network/{VN}"), None);
    let tag = r.header("etag").expect("ETag header").to_string();
    let req =
        format!("GET /virtual-network/{VN} HTTP/1.1\r\nHost: x\r\nIf-None-Match: {tag}\r\n\r\n");
    let r2 = raw_once(shim.port, &req);
    assert!(r2.starts_with("HTTP/1.1 304"), "{r2}");
}

fn raw_once(port: u16, req: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(req.as_bytes()).expect("write");
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).expect("read");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn idle_keep_alive_connection_stays_usable() {
    let dir = TempDir::new("keepalive");
    let shim = start(&dir);
    let mut c = RawConn::open(shim.port);
    assert_eq!(c.send("GET", "/virtual-networks", None).status, 200);
    std::thread::sleep(Duration::from_secs(3));
    let r = c.send("POST", "/fqname-to-id", Some(r#"{"type":"network-ipam","fq_name":["default-domain","default-project","default-network-ipam"]}"#));
    assert_eq!(r.status, 200);
    assert!(r
        .header("connection")
        .map_or(true, |v| !v.eq_ignore_ascii_case("close")));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(c.send("GET", "/", None).status, 200);
}

#[test]
fn lenient_parents_and_cloudstack_shapes() {
    let dir = TempDir::new("lenient");
    let shim = start(&dir);
    // Domain with parent_type config-root (dropped).
    let d = "7d1b0c2e-5a34-4d6f-9a41-2f1e0c9b7a10";
    let r = shim.ok("POST", "/domains", Some(&json!({"domain": {"name": "Engineering", "uuid": d, "fq_name": ["Engineering"], "parent_type": "config-root"}})));
    assert!(r["domain"].get("parent_type").is_none());
    // Project under default-domain.
    let p = "3c2d9f4a-1b7e-4c88-8e0d-6a5b4c3d2e1f";
    shim.ok("POST", "/projects", Some(&json!({"project": {"name": "webteam", "uuid": p, "fq_name": ["default-domain", "webteam"], "parent_type": "domain"}})));
    // VM with parent_type project (not in the 1.x schema): accepted, and does not block the
    // project's delete.
    let r = shim.ok("POST", "/virtual-machines", Some(&json!({"virtual-machine": {"name": "i-3-1-VM", "uuid": VM, "fq_name": ["default-domain", "webteam", "i-3-1-VM"], "parent_type": "project"}})));
    assert_eq!(r["virtual-machine"]["parent_type"], "project");
    // Public VN with two ipam refs to the same ipam, stored as given.
    let pubvn = "11111111-2222-4333-8444-555555555555";
    let refs = json!([
        {"to": ["default-domain", "default-project", "default-network-ipam"], "attr": {"ipam_subnets": [{"subnet": {"ip_prefix": "198.51.100.0", "ip_prefix_len": 24}, "default_gateway": "198.51.100.1"}]}},
        {"to": ["default-domain", "default-project", "default-network-ipam"], "attr": {"ipam_subnets": [{"subnet": {"ip_prefix": "203.0.113.0", "ip_prefix_len": 24}, "default_gateway": "203.0.113.1"}]}}
    ]);
    shim.ok("POST", "/virtual-networks", Some(&json!({"virtual-network": {"name": "__zone1_Public__", "uuid": pubvn, "fq_name": ["default-domain", "default-project", "__zone1_Public__"], "parent_type": "project", "network_ipam_refs": refs}})));
    let v = shim.ok("GET", &format!("/virtual-network/{pubvn}"), None);
    assert_eq!(
        v["virtual-network"]["network_ipam_refs"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    // Pool and a floating IP without project_refs, address allocated from the public VN.
    shim.ok("POST", "/floating-ip-pools", Some(&json!({"floating-ip-pool": {"name": "PublicIpPool", "fq_name": ["default-domain", "default-project", "__zone1_Public__", "PublicIpPool"], "parent_type": "virtual-network"}})));
    let fip = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9";
    shim.ok("POST", "/floating-ips", Some(&json!({"floating-ip": {"name": "42", "uuid": fip, "fq_name": ["default-domain", "default-project", "__zone1_Public__", "PublicIpPool", "42"], "parent_type": "floating-ip-pool"}})));
    let v = shim.ok("GET", &format!("/floating-ip/{fip}"), None);
    assert_eq!(v["floating-ip"]["floating_ip_address"], "198.51.100.2");
    // Instance-ip without a parent on ip-fabric keeps CloudStack's address.
    let r = shim.ok("POST", "/instance-ips", Some(&json!({"instance-ip": {"name": "r-4-VM-0", "fq_name": ["r-4-VM-0"], "instance_ip_address": "172.16.0.9", "virtual_network_refs": [{"to": ["default-domain", "default-project", "ip-fabric"]}]}})));
    let u = r["instance-ip"]["uuid"].as_str().expect("uuid").to_string();
    let v = shim.ok("GET", &format!("/instance-ip/{u}"), None);
    assert_eq!(v["instance-ip"]["instance_ip_address"], "172.16.0.9");
    // Deleting the project works although a VM named it as parent; the domain goes too.
    assert_eq!(shim.delete(&format!("/project/{p}")).0, 200);
    assert_eq!(shim.delete(&format!("/domain/{d}")).0, 200);
}

#[test]
fn errors_like_the_real_server() {
    let dir = TempDir::new("errors");
    let shim = start(&dir);
    shim.ok(
        "POST",
        "/virtual-networks",
        Some(&vn(VN, "tier-web", "10.20.1.0", "10.20.1.1")),
    );
    let check = |st: (u16, Value), want: u16| {
        assert_eq!(st.0, want, "{}", st.1);
        assert!(
            st.1["message"].is_string(),
            "error body must carry a JSON message: {}",
            st.1
        );
    };
    // 400: malformed JSON, wrong envelope, wrong field type, unknown ref type, missing parent.
    let mut c = RawConn::open(shim.port);
    let r = c.send("POST", "/virtual-networks", Some("{not json"));
    assert_eq!(r.status, 400);
    assert!(r.json()["message"].is_string());
    check(shim.post("/virtual-networks", &json!({"network": {}})), 400);
    check(shim.post("/virtual-networks", &json!({"virtual-network": {"fq_name": ["default-domain", "default-project", "x"], "router_external": "yes"}})), 400);
    check(shim.post("/virtual-networks", &json!({"virtual-network": {"fq_name": ["default-domain", "default-project", "x"], "virtual_router_refs": []}})), 400);
    check(shim.post("/virtual-networks", &json!({"virtual-network": {"fq_name": ["default-domain", "nope", "x"], "parent_type": "project"}})), 400);
    check(
        shim.post(
            "/virtual-networks",
            &json!({"virtual-network": {"fq_name": "a:b"}}),
        ),
        400,
    );
    check(shim.post("/virtual-networks", &json!({"virtual-network": {"uuid": "xyz", "fq_name": ["default-domain", "default-project", "y"]}})), 400);
    check(shim.post("/instance-ips", &json!({"instance-ip": {"fq_name": ["z"], "virtual_network_refs": [{"to": ["default-domain", "default-project", "missing"]}]}})), 400);
    // 404: unknown id, wrong type, unknown name, unknown collection, unknown ref on PUT.
    check(
        shim.get("/virtual-network/00000000-0000-4000-8000-000000000000"),
        404,
    );
    check(shim.get(&format!("/virtual-machine/{VN}")), 404);
    check(
        shim.post(
            "/fqname-to-id",
            &json!({"type": "virtual-network", "fq_name": ["no", "such"]}),
        ),
        404,
    );
    check(shim.get("/virtual-routers"), 404);
    check(shim.put(&format!("/virtual-network/{VN}"), &json!({"virtual-network": {"network_policy_refs": [{"to": ["default-domain", "default-project", "nope"]}]}})), 404);
    check(
        shim.delete("/virtual-network/00000000-0000-4000-8000-000000000000"),
        404,
    );
    check(shim.post("/ref-update", &json!({"type": "virtual-network", "uuid": VN, "ref-type": "network-policy", "operation": "ADD"})), 404);
    // 409: duplicate fq_name, delete with back-refs, delete with children.
    check(
        shim.post(
            "/virtual-networks",
            &vn(
                "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d",
                "tier-web",
                "10.9.9.0",
                "10.9.9.1",
            ),
        ),
        409,
    );
    shim.ok("POST", "/virtual-machines", Some(&vm(VM, "i-2-10-VM")));
    shim.ok(
        "POST",
        "/virtual-machine-interfaces",
        Some(&vmi(VMI, "i-2-10-VM", 0, "tier-web")),
    );
    check(shim.delete(&format!("/virtual-network/{VN}")), 409);
    check(shim.delete(&format!("/virtual-machine/{VM}")), 409);
    // Nothing above was a 500, and the state is intact.
    let v = shim.ok("GET", &format!("/virtual-network/{VN}"), None);
    assert_eq!(
        v["virtual-network"]["virtual_machine_interface_back_refs"][0]["uuid"],
        VMI
    );
    // Deletes in order succeed with 200 and an empty body.
    let (st, body) = shim.delete(&format!("/virtual-machine-interface/{VMI}"));
    assert_eq!((st, body), (200, Value::Null));
    assert_eq!(shim.delete(&format!("/virtual-machine/{VM}")).0, 200);
    assert_eq!(shim.delete(&format!("/virtual-network/{VN}")).0, 200);
}

#[test]
fn lists_and_actions() {
    let dir = TempDir::new("lists");
    let shim = start(&dir);
    shim.ok(
        "POST",
        "/virtual-networks",
        Some(&vn(VN, "tier-web", "10.20.1.0", "10.20.1.1")),
    );
    let all = shim.ok("GET", "/virtual-networks", None);
    assert_eq!(all["virtual-networks"].as_array().map(Vec::len), Some(4));
    for e in all["virtual-networks"].as_array().into_iter().flatten() {
        assert!(e["uuid"].is_string() && e["fq_name"].is_array() && e["href"].is_string());
    }
    let c = shim.ok("GET", "/virtual-networks?count=true", None);
    assert_eq!(c["virtual-networks"]["count"], 4);
    let d = shim.ok(
        "GET",
        &format!("/virtual-networks?detail=true&obj_uuids={VN}"),
        None,
    );
    assert_eq!(
        d["virtual-networks"][0]["virtual-network"]["network_ipam_refs"][0]["attr"]["ipam_subnets"]
            [0]["default_gateway"],
        "10.20.1.1"
    );
    let f = shim.ok("GET", "/virtual-networks?parent_fq_name_str=default-domain:default-project&parent_type=project&fields=network_ipam_refs", None);
    assert_eq!(f["virtual-networks"].as_array().map(Vec::len), Some(4));
    let ipam = shim.ok("POST", "/fqname-to-id", Some(&json!({"type": "network-ipam", "fq_name": ["default-domain", "default-project", "default-network-ipam"]})));
    let ipam = ipam["uuid"].as_str().expect("uuid");
    let b = shim.ok(
        "GET",
        &format!("/virtual-networks?back_ref_id={ipam}"),
        None,
    );
    assert_eq!(b["virtual-networks"][0]["uuid"], VN);
    let n = shim.ok("POST", "/id-to-fqname", Some(&json!({"uuid": VN})));
    assert_eq!(
        n,
        json!({"fq_name": ["default-domain", "default-project", "tier-web"], "type": "virtual-network"})
    );
    let home = shim.ok("GET", "/", None);
    let links = home["links"].as_array().expect("links");
    for want in [
        "name-to-id",
        "id-to-name",
        "ref-update",
        "virtual-network",
        "network-policy",
    ] {
        assert!(
            links.iter().any(|l| l["link"]["name"] == want),
            "homepage lacks {want}"
        );
    }
    assert!(links.iter().any(|l| l["link"]["href"]
        .as_str()
        .is_some_and(|h| h.ends_with("/network-policys"))));
}

#[test]
fn token_is_required_when_configured() {
    let dir = TempDir::new("token");
    let mut shim = Shim::start(
        &format!("sqlite:{}", dir.0.join("shim.db").display()),
        &["--token", "s3cret"],
    );
    assert_eq!(shim.get("/virtual-networks").0, 200);
    shim.token = Some("wrong".into());
    assert_eq!(shim.get("/virtual-networks").0, 401);
    shim.token = None;
    assert_eq!(shim.get("/").0, 401);
    assert_eq!(
        shim.post(
            "/vrouter/agents",
            &json!({"hostname": "h", "fabric_ip": "10.0.0.1"})
        )
        .0,
        401
    );
}

#[test]
fn refuses_non_loopback_without_token() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vrouter-shim"))
        .args([
            "--listen",
            "0.0.0.0:0",
            "--store",
            "sqlite:/nonexistent/never-created.db",
        ])
        .output()
        .expect("run vrouter-shim");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("without --token"));
}
