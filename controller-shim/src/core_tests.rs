// SPDX-License-Identifier: Apache-2.0
//! Unit tests of the I/O-free core: no sockets, no clock, no store.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use vrouter_api::agent::{Advertise, Binding, RegisterAgent, Withdraw};
use vrouter_api::watch::WatchReply;
use vrouter_api::Label;

use super::*;

const VN: &str = "a0f3c5d2-8e61-4b7a-9c2d-1e4f5a6b7c8d";
const VM: &str = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b";
const VMI: &str = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f";

struct Harness {
    core: Core,
    n: u32,
    /// Everything persisted so far, as the store would hold it.
    kv: BTreeMap<String, Vec<u8>>,
}

impl Harness {
    fn new() -> Harness {
        let mut h = Harness {
            core: Core::new(),
            n: 0,
            kv: BTreeMap::new(),
        };
        let ctx = h.ctx();
        let mut n = 0u32;
        h.core.bootstrap(&ctx, || {
            n += 1;
            format!("00000000-0000-4000-8000-{n:012x}")
        });
        h.flush();
        h
    }

    fn ctx(&mut self) -> Ctx {
        self.n += 1;
        Ctx {
            now_us: 1_700_000_000_000_000 + u64::from(self.n),
            new_uuid: format!("ffffffff-0000-4000-8000-{:012x}", self.n),
            base: "http://shim".into(),
        }
    }

    fn flush(&mut self) {
        for (k, v) in self.core.take_batch().ops {
            match v {
                Some(v) => self.kv.insert(k, v),
                None => self.kv.remove(&k),
            };
        }
    }

    fn create(&mut self, ty: ObjType, body: Value) -> Result<Value, ApiError> {
        let ctx = self.ctx();
        let r = self.core.create(ty, &body, &ctx);
        self.flush();
        r
    }

    fn get(&self, ty: ObjType, uuid: &str) -> Value {
        let (v, _) = self
            .core
            .read(ty, uuid, &ReadOpts::default(), "http://shim")
            .expect("read");
        v[ty.name()].clone()
    }

    fn network(&mut self, uuid: &str, name: &str, cidr: (&str, u8), gw: Option<&str>) {
        let mut sn = json!({"subnet": {"ip_prefix": cidr.0, "ip_prefix_len": cidr.1}});
        if let Some(g) = gw {
            sn["default_gateway"] = json!(g);
        }
        self.create(
            ObjType::VirtualNetwork,
            json!({"virtual-network": {"uuid": uuid, "fq_name": ["default-domain", "default-project", name],
                "parent_type": "project",
                "network_ipam_refs": [{"to": ["default-domain", "default-project", "default-network-ipam"],
                                       "attr": {"ipam_subnets": [sn]}}]}}),
        )
        .expect("create vn");
    }

    fn iip(&mut self, name: &str, vn: &str, addr: Option<&str>) -> Result<String, ApiError> {
        let mut b = json!({"instance-ip": {"fq_name": [name],
            "virtual_network_refs": [{"to": ["default-domain", "default-project", vn]}]}});
        if let Some(a) = addr {
            b["instance-ip"]["instance_ip_address"] = json!(a);
        }
        let r = self.create(ObjType::InstanceIp, b)?;
        Ok(r["instance-ip"]["uuid"].as_str().expect("uuid").to_string())
    }
}

fn agent(hostname: &str, fabric_ip: &str) -> RegisterAgent {
    RegisterAgent {
        hostname: hostname.into(),
        fabric_ip: fabric_ip.parse().expect("fabric ip"),
    }
}

fn binding(host: &str, vmi: &str) -> Binding {
    Binding {
        host: host.into(),
        vmi_uuid: vmi.parse().expect("vmi uuid"),
    }
}

fn advert(host: &str, vrf: &str, prefix: &str, label: u32) -> Advertise {
    Advertise {
        host: host.into(),
        vrf: vrf.into(),
        prefix: prefix.parse().expect("prefix"),
        label: Label::new(label).expect("label"),
        nexthop: None,
        vmi_uuid: None,
    }
}

fn withdrawal(ad: &Advertise) -> Withdraw {
    Withdraw {
        host: ad.host.clone(),
        vrf: ad.vrf.clone(),
        prefix: ad.prefix,
    }
}

/// A watch's events as their wire JSON.
fn events(w: &WatchReply) -> Vec<Value> {
    w.events
        .iter()
        .map(|e| serde_json::to_value(e).expect("an event serialises"))
        .collect()
}

/// An interface config as its wire JSON.
fn config(core: &Core, vmi: &str) -> Value {
    serde_json::to_value(core.interface_config(vmi).expect("cfg")).expect("a config serialises")
}

#[test]
fn defaults_are_created_once() {
    let mut h = Harness::new();
    let before = h.core.len();
    assert_eq!(before, DEFAULT_OBJECTS.len());
    let ctx = h.ctx();
    h.core
        .bootstrap(&ctx, || "11111111-0000-4000-8000-000000000000".into());
    assert_eq!(h.core.len(), before);
    assert!(h.core.take_batch().is_empty());
}

#[test]
fn allocation_skips_network_gateway_broadcast_and_frees_on_delete() {
    let mut h = Harness::new();
    h.network(VN, "small", ("10.0.0.0", 29), Some("10.0.0.1"));
    // /29: .0 network, .1 gateway, .7 broadcast → .2..=.6 usable.
    let mut got = Vec::new();
    let mut uuids = Vec::new();
    for i in 0..5 {
        let u = h.iip(&format!("ip{i}"), "small", None).expect("allocate");
        got.push(
            h.get(ObjType::InstanceIp, &u)["instance_ip_address"]
                .as_str()
                .expect("addr")
                .to_string(),
        );
        uuids.push(u);
    }
    assert_eq!(
        got,
        ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
    );
    assert!(matches!(
        h.iip("full", "small", None),
        Err(ApiError::Conflict(_))
    ));
    h.core
        .delete(ObjType::InstanceIp, &uuids[1])
        .expect("delete");
    h.flush();
    let u = h.iip("again", "small", None).expect("reuse");
    assert_eq!(
        h.get(ObjType::InstanceIp, &u)["instance_ip_address"],
        "10.0.0.3"
    );
}

#[test]
fn gateway_is_filled_when_absent_and_requested_addresses_are_checked() {
    let mut h = Harness::new();
    h.network(VN, "net", ("10.1.0.0", 24), None);
    let vn = h.get(ObjType::VirtualNetwork, VN);
    assert_eq!(
        vn["network_ipam_refs"][0]["attr"]["ipam_subnets"][0]["default_gateway"],
        "10.1.0.254"
    );
    assert!(h.iip("a", "net", Some("10.1.0.10")).is_ok());
    assert!(matches!(
        h.iip("b", "net", Some("10.1.0.10")),
        Err(ApiError::Conflict(_))
    ));
    assert!(matches!(
        h.iip("c", "net", Some("10.1.0.254")),
        Err(ApiError::Conflict(_))
    ));
    assert!(matches!(
        h.iip("d", "net", Some("10.1.0.0")),
        Err(ApiError::BadRequest(_))
    ));
    assert!(matches!(
        h.iip("e", "net", Some("10.2.0.1")),
        Err(ApiError::BadRequest(_))
    ));
    assert!(matches!(
        h.iip("f", "net", Some("banana")),
        Err(ApiError::BadRequest(_))
    ));
    // ip-fabric: any address, even twice (CloudStack owns those).
    assert!(h.iip("g", "ip-fabric", Some("192.0.2.1")).is_ok());
    assert!(h.iip("h", "ip-fabric", Some("192.0.2.1")).is_ok());
}

#[test]
fn failed_operations_leave_no_trace() {
    let mut h = Harness::new();
    let before = h.core.rev();
    let bad = [
        json!({"virtual-network": {"fq_name": ["default-domain", "nope", "x"], "parent_type": "project"}}),
        json!({"virtual-network": {"fq_name": ["default-domain", "default-project", "x"], "is_shared": 3}}),
        json!({"virtual-network": {"fq_name": ["default-domain", "default-project", "x"],
               "network_ipam_refs": [{"to": ["default-domain", "default-project", "default-network-ipam"],
               "attr": {"ipam_subnets": [{"subnet": {"ip_prefix": "10.0.0.0", "ip_prefix_len": 40}}]}}]}}),
    ];
    for b in bad {
        assert!(matches!(
            h.create(ObjType::VirtualNetwork, b),
            Err(ApiError::BadRequest(_))
        ));
    }
    assert_eq!(h.core.rev(), before);
    assert!(h.core.take_batch().is_empty());
}

#[test]
fn state_reloads_identically_from_what_was_persisted() {
    let mut h = Harness::new();
    h.network(VN, "net", ("10.1.0.0", 24), Some("10.1.0.1"));
    h.create(
        ObjType::VirtualMachine,
        json!({"virtual-machine": {"uuid": VM, "fq_name": ["vm1"]}}),
    )
    .expect("vm");
    h.create(
        ObjType::VirtualMachineInterface,
        json!({"virtual-machine-interface": {"uuid": VMI, "fq_name": ["vm1", "vm1-0"], "parent_type": "virtual-machine",
               "virtual_network_refs": [{"to": ["default-domain", "default-project", "net"]}]}}),
    )
    .expect("vmi");
    let iip = h.iip("vm1-0", "net", None).expect("iip");
    let reloaded = Core::load(h.kv.clone()).expect("load");
    assert_eq!(reloaded.rev(), h.core.rev());
    for u in [VN, VM, VMI, iip.as_str()] {
        let ty = h.core.get(u).expect("obj").ty;
        let a = h.core.read(ty, u, &ReadOpts::default(), "b").expect("read");
        let b = reloaded
            .read(ty, u, &ReadOpts::default(), "b")
            .expect("read");
        assert_eq!(a, b);
    }
    // The reloaded allocator knows .2 is taken.
    let mut h2 = Harness {
        core: reloaded,
        n: 100,
        kv: h.kv.clone(),
    };
    let u = h2.iip("next", "net", None).expect("iip");
    assert_eq!(
        h2.get(ObjType::InstanceIp, &u)["instance_ip_address"],
        "10.1.0.3"
    );
}

#[test]
fn ref_update_adds_and_removes() {
    let mut h = Harness::new();
    h.network(VN, "net", ("10.1.0.0", 24), Some("10.1.0.1"));
    let pol = h
        .core
        .lookup(
            ObjType::NetworkPolicy,
            &[
                "default-domain".into(),
                "default-project".into(),
                "default-network-policy".into(),
            ],
        )
        .expect("policy")
        .to_string();
    let ctx = h.ctx();
    let add = json!({"type": "virtual-network", "uuid": VN, "ref-type": "network-policy", "ref-uuid": pol,
                     "operation": "ADD", "attr": {"sequence": {"major": 0, "minor": 0}}});
    h.core.ref_update(&add, &ctx).expect("add");
    assert_eq!(
        h.get(ObjType::VirtualNetwork, VN)["network_policy_refs"][0]["uuid"],
        pol.as_str()
    );
    assert!(matches!(
        h.core.delete(ObjType::NetworkPolicy, &pol),
        Err(ApiError::Conflict(_))
    ));
    let del = json!({"type": "virtual-network", "uuid": VN, "ref-type": "network_policy",
                     "ref-fq-name": ["default-domain", "default-project", "default-network-policy"], "operation": "DELETE"});
    h.core.ref_update(&del, &ctx).expect("delete");
    assert_eq!(
        h.get(ObjType::VirtualNetwork, VN)["network_policy_refs"],
        json!([])
    );
    let bad = json!({"type": "virtual-network", "uuid": VN, "ref-type": "virtual-machine", "ref-uuid": VM, "operation": "ADD"});
    assert!(matches!(
        h.core.ref_update(&bad, &ctx),
        Err(ApiError::BadRequest(_))
    ));
}

#[test]
fn watch_resumes_and_resets_after_compaction() {
    let mut h = Harness::new();
    h.network(VN, "net", ("10.1.0.0", 24), Some("10.1.0.1"));
    h.core
        .register_agent(&agent("h1", "10.0.0.1"), 0)
        .expect("h1");
    h.core
        .register_agent(&agent("h2", "10.0.0.2"), 0)
        .expect("h2");
    h.create(
        ObjType::VirtualMachine,
        json!({"virtual-machine": {"uuid": VM, "fq_name": ["vm1"]}}),
    )
    .expect("vm");
    h.create(
        ObjType::VirtualMachineInterface,
        json!({"virtual-machine-interface": {"uuid": VMI, "fq_name": ["vm1", "vm1-0"],
               "virtual_network_refs": [{"to": ["default-domain", "default-project", "net"]}]}}),
    )
    .expect("vmi");
    h.core.bind(&binding("h1", VMI)).expect("bind");
    let start = h.core.watch("h1", 0).expect("watch");
    assert!(start.reset);
    assert_eq!(start.events.len(), 1);
    let vrf = "default-domain:default-project:net";
    // No interface of h2 in the VRF yet: h2 advertises, h1 sees it (h1 has the interface).
    for i in 0..3u32 {
        let prefix = format!("10.9.0.{i}/32");
        h.core
            .advertise(&advert("h2", vrf, &prefix, 100 + i))
            .expect("advertise");
    }
    let w = h.core.watch("h1", start.rev).expect("watch");
    assert!(!w.reset);
    assert_eq!(w.events.len(), 3);
    assert!(h.core.watch("h1", w.rev).expect("watch").events.is_empty());
    // Past the tombstone limit the view compacts; an old position gets a full snapshot.
    for i in 0..=crate::agents::TOMBSTONE_LIMIT as u32 {
        let prefix = format!("10.8.{}.{}/32", i / 256, i % 256);
        let body = advert("h2", vrf, &prefix, 7);
        h.core.advertise(&body).expect("advertise");
        h.core.withdraw(&withdrawal(&body)).expect("withdraw");
    }
    let old = h.core.watch("h1", w.rev).expect("watch");
    assert!(old.reset);
    assert_eq!(old.events.len(), 4); // the interface and the three live routes
    assert!(events(&old).iter().all(|e| e["op"] == "put"));
}

#[test]
fn route_changes_touch_only_their_keys_and_agree_with_a_full_recompute() {
    let mut h = Harness::new();
    h.network(VN, "net", ("10.1.0.0", 24), Some("10.1.0.1"));
    for (host, ip) in [("h1", "10.0.0.1"), ("h2", "10.0.0.2")] {
        h.core.register_agent(&agent(host, ip), 0).expect("agent");
    }
    h.create(
        ObjType::VirtualMachine,
        json!({"virtual-machine": {"uuid": VM, "fq_name": ["vm1"]}}),
    )
    .expect("vm");
    h.create(
        ObjType::VirtualMachineInterface,
        json!({"virtual-machine-interface": {"uuid": VMI, "fq_name": ["vm1", "vm1-0"],
               "virtual_network_refs": [{"to": ["default-domain", "default-project", "net"]}]}}),
    )
    .expect("vmi");
    h.core.bind(&binding("h1", VMI)).expect("bind");
    let vrf = "default-domain:default-project:net";
    let a = advert("h2", vrf, "10.9.0.1/32", 100);
    let b = advert("h2", vrf, "10.9.0.2/32", 101);
    h.core.advertise(&a).expect("a");
    h.core.advertise(&b).expect("b");
    h.core
        .advertise(&advert("h2", "other-vrf", "10.7.0.1/32", 102))
        .expect("c");
    h.core.withdraw(&withdrawal(&a)).expect("withdraw a");
    let gw = |p: &str, label| vrouter_api::agent::Route {
        host: "bgp:10.0.0.254".into(),
        vrf: vrf.into(),
        prefix: p.parse().expect("prefix"),
        label: vrouter_api::Label::new(label).expect("label"),
        nexthop: "10.0.0.254".parse().expect("ip"),
        vmi_uuid: None,
        encap: Some(vrouter_api::agent::RouteEncap::MplsOverGre),
    };
    assert_eq!(
        h.core.set_gateway_routes(
            "bgp:10.0.0.254",
            vec![gw("0.0.0.0/0", 300), gw("10.99.0.0/24", 301)]
        ),
        2
    );
    assert_eq!(
        h.core
            .set_gateway_routes("bgp:10.0.0.254", vec![gw("0.0.0.0/0", 300)]),
        1
    );
    let mut h1 = view_routes(&h, "h1");
    h1.sort();
    assert_eq!(
        h1,
        [
            format!("route/{vrf}/0.0.0.0/0/bgp:10.0.0.254"),
            format!("route/{vrf}/10.9.0.2/32/h2"),
        ]
    );
    assert!(
        view_routes(&h, "h2").is_empty(),
        "h2 has no interface in the VRF"
    );
    // A full recompute (a new agent refreshes every view) finds nothing to change.
    let rev = h.core.rev();
    h.core
        .register_agent(&agent("h3", "10.0.0.3"), 0)
        .expect("h3");
    assert!(h.core.watch("h1", rev).expect("watch").events.is_empty());
    assert!(h.core.watch("h2", rev).expect("watch").events.is_empty());
}

#[test]
fn policy_route_leak_follows_the_policy_and_its_refs() {
    const VN_B: &str = "b0f3c5d2-8e61-4b7a-9c2d-1e4f5a6b7c8d";
    const VN_C: &str = "c0f3c5d2-8e61-4b7a-9c2d-1e4f5a6b7c8d";
    const POL: &str = "d0f3c5d2-8e61-4b7a-9c2d-1e4f5a6b7c8d";
    let mut h = Harness::new();
    h.network(VN, "guest-a", ("10.1.1.0", 24), Some("10.1.1.1"));
    h.network(VN_B, "guest-b", ("10.2.2.0", 24), Some("10.2.2.1"));
    h.network(VN_C, "guest-c", ("10.3.3.0", 24), Some("10.3.3.1"));
    let (a, b, c) = (
        "default-domain:default-project:guest-a",
        "default-domain:default-project:guest-b",
        "default-domain:default-project:guest-c",
    );
    for host in ["h1", "h2"] {
        h.core
            .register_agent(&agent(host, "10.0.0.1"), 0)
            .expect("agent");
    }
    h.create(
        ObjType::VirtualMachine,
        json!({"virtual-machine": {"uuid": VM, "fq_name": ["vm1"]}}),
    )
    .expect("vm");
    h.create(
        ObjType::VirtualMachineInterface,
        json!({"virtual-machine-interface": {"uuid": VMI, "fq_name": ["vm1", "vm1-0"],
               "virtual_network_refs": [{"to": ["default-domain", "default-project", "guest-a"]}]}}),
    )
    .expect("vmi");
    h.core.bind(&binding("h1", VMI)).expect("bind");
    for (vrf, p) in [(b, "10.2.2.3/32"), (c, "10.3.3.3/32")] {
        h.core
            .advertise(&advert("h2", vrf, p, 20))
            .expect("advertise");
    }
    let routes = |h: &Harness| -> Vec<String> {
        let w = h.core.watch("h1", 0).expect("watch");
        events(&w)
            .iter()
            .filter(|e| e["kind"] == "route")
            .map(|e| e["key"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert!(routes(&h).is_empty(), "isolated without a policy");
    // The ACL: <> icmp pass between guest-a and guest-b, attached to guest-a.
    h.create(
        ObjType::NetworkPolicy,
        json!({"network-policy": {"uuid": POL, "fq_name": ["default-domain", "default-project", "acl-a-b"],
            "parent_type": "project",
            "network_policy_entries": {"policy_rule": [{"direction": "<>", "protocol": "icmp",
                "src_addresses": [{"virtual_network": a}], "dst_addresses": [{"virtual_network": b}],
                "src_ports": [{"start_port": -1, "end_port": -1}], "dst_ports": [{"start_port": -1, "end_port": -1}],
                "action_list": {"simple_action": "pass"}}]}}}),
    )
    .expect("policy");
    assert!(
        routes(&h).is_empty(),
        "a policy attached to nothing leaks nothing"
    );
    let ctx = h.ctx();
    let add = json!({"type": "virtual-network", "uuid": VN, "ref-type": "network-policy", "ref-uuid": POL,
                     "operation": "ADD", "attr": {"sequence": {"major": 0, "minor": 0}}});
    h.core.ref_update(&add, &ctx).expect("ref add");
    assert_eq!(routes(&h), vec![format!("route/{b}/10.2.2.3/32/h2")]);
    let cfg = config(&h.core, VMI);
    assert_eq!(
        cfg["connected"],
        json!([{"vrf": b, "subnets": ["10.2.2.0/24"]}])
    );
    assert_eq!(cfg["network"]["subnets"], json!(["10.1.1.0/24"]));
    assert_eq!(
        cfg["policies"][0]["rules"],
        json!([{"direction": "<>", "protocol": 1, "action": "pass",
                "src": [{"vrf": a, "subnets": ["10.1.1.0/24"]}],
                "dst": [{"vrf": b, "subnets": ["10.2.2.0/24"]}],
                "src_ports": [[0, 65535]], "dst_ports": [[0, 65535]]}])
    );
    // The watch carries the leak as an ordinary route event and takes it back with the ref.
    let before = h.core.watch("h1", 0).expect("watch").rev;
    let del = json!({"type": "virtual-network", "uuid": VN, "ref-type": "network-policy", "ref-uuid": POL,
                     "operation": "DELETE"});
    h.core.ref_update(&del, &ctx).expect("ref del");
    let w = h.core.watch("h1", before).expect("watch");
    assert!(events(&w)
        .iter()
        .any(|e| e["key"] == format!("route/{b}/10.2.2.3/32/h2") && e["op"] == "delete"));
    assert!(routes(&h).is_empty());
    assert_eq!(config(&h.core, VMI)["connected"], json!([]));
}

/// The service-chain fixture: guest-a (left, a VM bound on h1 with 10.1.1.5/32 advertised)
/// and the public network (right, a VM bound on h2 with 198.51.100.10/32 advertised), and a
/// policy attached to both whose one rule applies the service instance `nat-si`.
fn chain_fixture(h: &mut Harness) {
    const VN_P: &str = "b1f3c5d2-8e61-4b7a-9c2d-1e4f5a6b7c8d";
    const VM_P: &str = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a90";
    const POL: &str = "d1f3c5d2-8e61-4b7a-9c2d-1e4f5a6b7c8d";
    h.network(VN, "guest-a", ("10.1.1.0", 24), Some("10.1.1.1"));
    h.network(
        VN_P,
        "__zone1_Public__",
        ("198.51.100.0", 24),
        Some("198.51.100.1"),
    );
    for (host, ip) in [("h1", "10.0.0.1"), ("h2", "10.0.0.2")] {
        h.core.register_agent(&agent(host, ip), 0).expect("agent");
    }
    for (vm, vmi, name, vn) in [
        (VM, VMI, "vm1", "guest-a"),
        (VM_P, PUB_VMI, "out1", "__zone1_Public__"),
    ] {
        h.create(
            ObjType::VirtualMachine,
            json!({"virtual-machine": {"uuid": vm, "fq_name": [name]}}),
        )
        .expect("vm");
        h.create(
            ObjType::VirtualMachineInterface,
            json!({"virtual-machine-interface": {"uuid": vmi, "fq_name": [name, format!("{name}-0")],
                   "parent_type": "virtual-machine",
                   "virtual_network_refs": [{"to": ["default-domain", "default-project", vn]}]}}),
        )
        .expect("vmi");
    }
    h.core.bind(&binding("h1", VMI)).expect("bind");
    h.core.bind(&binding("h2", PUB_VMI)).expect("bind");
    h.core
        .advertise(&advert("h1", CHAIN_LEFT, "10.1.1.5/32", 20))
        .expect("advertise");
    h.core
        .advertise(&advert("h2", CHAIN_RIGHT, "198.51.100.10/32", 21))
        .expect("advertise");
    h.create(
        ObjType::NetworkPolicy,
        json!({"network-policy": {"uuid": POL, "fq_name": ["default-domain", "default-project", "snat-a"],
            "parent_type": "project",
            "network_policy_entries": {"policy_rule": [{"direction": "<>", "protocol": "any",
                "src_addresses": [{"virtual_network": CHAIN_LEFT}],
                "dst_addresses": [{"virtual_network": CHAIN_RIGHT}],
                "src_ports": [{"start_port": 0, "end_port": 65535}],
                "dst_ports": [{"start_port": 0, "end_port": 65535}],
                "action_list": {"simple_action": "pass", "gateway_name": "in-network",
                                "apply_service": [NAT_SI]}}]}}}),
    )
    .expect("policy");
    let ctx = h.ctx();
    for vn in [VN, VN_P] {
        let add = json!({"type": "virtual-network", "uuid": vn, "ref-type": "network-policy",
                         "ref-uuid": POL, "operation": "ADD",
                         "attr": {"sequence": {"major": 0, "minor": 0}}});
        h.core.ref_update(&add, &ctx).expect("ref add");
    }
}

const CHAIN_LEFT: &str = "default-domain:default-project:guest-a";
const CHAIN_RIGHT: &str = "default-domain:default-project:__zone1_Public__";
const NAT_SI: &str = "default-domain:default-project:nat-si";
const PUB_VMI: &str = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e90";

/// The route keys of `host`'s view.
fn view_routes(h: &Harness, host: &str) -> Vec<String> {
    let w = h.core.watch(host, 0).expect("watch");
    events(&w)
        .iter()
        .filter(|e| e["kind"] == "route")
        .map(|e| e["key"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn a_service_chain_rule_never_leaks_left_into_right() {
    let mut h = Harness::new();
    chain_fixture(&mut h);
    // The right network's host gets none of the left network's /32s, and the other way round.
    let right = view_routes(&h, "h2");
    assert!(
        right
            .iter()
            .all(|k| !k.starts_with(&format!("route/{CHAIN_LEFT}/"))),
        "left's routes leaked into the right network's host: {right:?}"
    );
    let left = view_routes(&h, "h1");
    assert!(
        left.iter()
            .all(|k| !k.starts_with(&format!("route/{CHAIN_RIGHT}/"))),
        "right's routes leaked into the left network's host: {left:?}"
    );
    for (vmi, side, remote) in [(VMI, "left", CHAIN_RIGHT), (PUB_VMI, "right", CHAIN_LEFT)] {
        let cfg = config(&h.core, vmi);
        assert_eq!(cfg["connected"], json!([]), "{cfg}");
        let rule = &cfg["policies"][0]["rules"][0];
        assert_eq!(rule["action"], "service", "{rule}");
        assert_eq!(rule["services"], json!([NAT_SI]), "{rule}");
        let chain = &cfg["service_chains"][0];
        assert_eq!(chain["side"], side, "{chain}");
        assert_eq!(chain["remote"]["vrf"], remote, "{chain}");
        assert_eq!(chain["default_route"], side == "left", "{chain}");
        assert_eq!(chain["hops"], json!([]), "{chain}");
        assert_eq!(
            chain["status"],
            json!({"state": "down", "reason": format!("unknown service instance {NAT_SI}")}),
            "{chain}"
        );
    }
}

#[test]
fn a_service_chain_resolves_to_the_instance_interfaces_or_says_why_not() {
    const ST: &str = "e1f3c5d2-8e61-4b7a-9c2d-1e4f5a6b7c8d";
    const SI: &str = "e2f3c5d2-8e61-4b7a-9c2d-1e4f5a6b7c8d";
    const SVM: &str = "e3f3c5d2-8e61-4b7a-9c2d-1e4f5a6b7c8d";
    let mut h = Harness::new();
    chain_fixture(&mut h);
    let status = |h: &Harness, vmi: &str| config(&h.core, vmi)["service_chains"][0].clone();
    h.create(
        ObjType::ServiceInstance,
        json!({"service-instance": {"uuid": SI, "fq_name": ["default-domain", "default-project", "nat-si"],
            "parent_type": "project",
            "service_instance_properties": {"auto_policy": false,
                "management_virtual_network": "default-domain:default-project:ip-fabric",
                "left_virtual_network": CHAIN_LEFT, "right_virtual_network": CHAIN_RIGHT,
                "scale_out": {"max_instances": 1, "auto_scale": false}}}}),
    )
    .expect("si");
    assert_eq!(
        status(&h, VMI)["status"]["reason"],
        format!("service instance {NAT_SI} has no service template")
    );
    h.create(
        ObjType::ServiceTemplate,
        json!({"service-template": {"uuid": ST, "fq_name": ["default-domain", "nat-template"],
            "service_template_properties": {"service_mode": "in-network", "service_scaling": false}}}),
    )
    .expect("st");
    let ctx = h.ctx();
    let add = json!({"type": "service-instance", "uuid": SI, "ref-type": "service-template",
                     "ref-uuid": ST, "operation": "ADD", "attr": null});
    h.core.ref_update(&add, &ctx).expect("ref add");
    assert_eq!(
        status(&h, VMI)["status"]["reason"],
        format!("service instance {NAT_SI} has no left interface in {CHAIN_LEFT} yet")
    );
    // The appliance: a VM of the instance with a management, a left and a right interface.
    h.create(
        ObjType::VirtualMachine,
        json!({"virtual-machine": {"uuid": SVM, "fq_name": ["nat-vm"],
               "service_instance_refs": [{"to": ["default-domain", "default-project", "nat-si"]}]}}),
    )
    .expect("service vm");
    let mut vmis = Vec::new();
    for (dev, kind, vn) in [(1, "left", "guest-a"), (2, "right", "__zone1_Public__")] {
        let uuid = format!("e4f3c5d2-8e61-4b7a-9c2d-1e4f5a6b7c8{dev}");
        h.create(
            ObjType::VirtualMachineInterface,
            json!({"virtual-machine-interface": {"uuid": uuid, "fq_name": ["nat-vm", format!("nat-vm-{dev}")],
                   "parent_type": "virtual-machine",
                   "virtual_machine_interface_properties": {"service_interface_type": kind},
                   "virtual_network_refs": [{"to": ["default-domain", "default-project", vn]}]}}),
        )
        .expect("service vmi");
        vmis.push(uuid);
    }
    for (vmi, side) in [(VMI, 0), (PUB_VMI, 1)] {
        let chain = status(&h, vmi);
        assert_eq!(chain["status"], json!({"state": "resolved"}), "{chain}");
        assert_eq!(
            chain["hops"],
            json!([{"instance": NAT_SI, "vm_uuid": SVM, "vmi_uuid": vmis[side], "address": null}]),
            "{chain}"
        );
    }
    // Resolved or not, the networks stay unconnected.
    assert!(view_routes(&h, "h2")
        .iter()
        .all(|k| !k.starts_with(&format!("route/{CHAIN_LEFT}/"))));
}

/// A VM with its interface and instance IP in `vn`, as CloudStack creates them.
fn dns_vm(h: &mut Harness, vm: &str, name: &str, display: Option<&str>, vn: &str, ip: &str) {
    // The VMI uuid: the VM's with its last digit group changed.
    let vmi = format!("{}ffffffffffff", &vm[..24]);
    let mut body = json!({"virtual-machine": {"uuid": vm, "fq_name": [name]}});
    if let Some(d) = display {
        body["virtual-machine"]["display_name"] = json!(d);
    }
    h.create(ObjType::VirtualMachine, body).expect("vm");
    h.create(
        ObjType::VirtualMachineInterface,
        json!({"virtual-machine-interface": {"fq_name": [name, format!("{name}-0")],
            "uuid": vmi, "parent_type": "virtual-machine",
            "virtual_network_refs": [{"to": ["default-domain", "default-project", vn]}]}}),
    )
    .expect("vmi");
    h.create(
        ObjType::InstanceIp,
        json!({"instance-ip": {"fq_name": [format!("{name}-0")], "instance_ip_address": ip,
            "virtual_network_refs": [{"to": ["default-domain", "default-project", vn]}],
            "virtual_machine_interface_refs": [{"to": [name, format!("{name}-0")]}]}}),
    )
    .expect("iip");
}

#[test]
fn interface_config_names_the_vm_and_every_vm_of_its_network_under_the_default_domain() {
    let mut h = Harness::new();
    h.network(VN, "web", ("10.20.1.0", 24), Some("10.20.1.1"));
    dns_vm(&mut h, VM, "i-2-10-VM", Some("web-1"), "web", "10.20.1.10");
    dns_vm(
        &mut h,
        "6e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b",
        "i-2-11-VM",
        None,
        "web",
        "10.20.1.11",
    );
    let vmi = h
        .core
        .graph
        .lookup(
            ObjType::VirtualMachineInterface,
            &["i-2-10-VM".to_string(), "i-2-10-VM-0".to_string()],
        )
        .expect("vmi")
        .to_string();
    let c = config(&h.core, &vmi);
    assert_eq!(c["vm_name"], "i-2-10-VM");
    assert_eq!(c["vm_display_name"], "web-1");
    // CloudStack's default network domain: cs<account id in hex>cloud.internal.
    assert_eq!(c["network"]["domain"], "cs2cloud.internal");
    assert_eq!(
        c["network"]["hosts"],
        json!([
            {"name": "i-2-10-VM", "display_name": "web-1", "address": "10.20.1.10"},
            {"name": "i-2-11-VM", "address": "10.20.1.11"}
        ])
    );
}

#[test]
fn a_domain_name_dhcp_option_of_the_subnet_is_the_network_domain() {
    let mut h = Harness::new();
    h.create(
        ObjType::VirtualNetwork,
        json!({"virtual-network": {"uuid": VN, "fq_name": ["default-domain", "default-project", "db"],
            "parent_type": "project",
            "network_ipam_refs": [{"to": ["default-domain", "default-project", "default-network-ipam"],
                "attr": {"ipam_subnets": [{"subnet": {"ip_prefix": "10.30.0.0", "ip_prefix_len": 24},
                    "default_gateway": "10.30.0.1",
                    "dhcp_option_list": {"dhcp_option": [
                        {"dhcp_option_name": "15", "dhcp_option_value": "Corp.Example."}]}}]}}]}}),
    )
    .expect("vn");
    dns_vm(&mut h, VM, "i-3-12-VM", None, "db", "10.30.0.5");
    let vmi = h
        .core
        .graph
        .lookup(
            ObjType::VirtualMachineInterface,
            &["i-3-12-VM".to_string(), "i-3-12-VM-0".to_string()],
        )
        .expect("vmi")
        .to_string();
    assert_eq!(config(&h.core, &vmi)["network"]["domain"], "corp.example");
}
