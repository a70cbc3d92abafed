//! Service chains from watch events to dataplane tables, without I/O: a guest network whose
//! traffic to the public network goes through a NAT instance (issue 18).

use super::*;
use crate::alloc::Allocations;
use crate::compile::compile;
use crate::config::Prefix;
use crate::dump::DumpIndex;
use crate::reconcile::reconcile;
use crate::testkit::MemDataplane;
use serde_json::{json, Value};
use vrouter_api::watch::{EventKind, Op, WatchEvent, WatchReply};
use vrouter_dataplane::ctl::proto::StateDump;
use vrouter_dataplane::tables::policy::PolicyAction;
use vrouter_dataplane::tables::{Limits, NexthopSpec, Route};

const GUEST: &str = "default-domain:admin:guest-a";
const PUBLIC: &str = "default-domain:admin:public";
const POLICY: &str = "default-domain:admin:snat";
const NAT: &str = "default-domain:admin:nat";
const GUEST_NET: &str = "10.1.1.0/24";
const PUBLIC_NET: &str = "203.0.113.0/24";
/// The guest VM's interface (no floating IP).
const VMI_G: &str = "10000000-0000-0000-0000-000000000001";
/// Service VM 1 (uuid sorts after VM 2's) and its left and right interfaces.
const SVM1: &str = "b0000000-0000-0000-0000-000000000001";
const VMI_L1: &str = "10000000-0000-0000-0000-0000000000a1";
const VMI_R1: &str = "10000000-0000-0000-0000-0000000000b1";
/// Service VM 2 and its interfaces.
const SVM2: &str = "a0000000-0000-0000-0000-000000000002";
const VMI_L2: &str = "10000000-0000-0000-0000-0000000000a2";
const VMI_R2: &str = "10000000-0000-0000-0000-0000000000b2";
const OTHER: &str = "44444444-4444-4444-4444-444444444444";
const H2: &str = "10.0.0.2";

fn settings() -> Settings {
    Settings {
        url: "http://127.0.0.1:1".into(),
        token: None,
        host: "h1".into(),
        fabric_ip: Some(Ipv4Addr::new(10, 0, 0, 1)),
        gateway_mac: Some("52:54:00:00:00:fe".parse().expect("mac")),
        neighbours: BTreeMap::new(),
        arp: true,
        encap: TunnelKind::MplsOverUdp,
        mtu: 1500,
        dp_socket: PathBuf::from("/nonexistent"),
        xenstore: true,
    }
}

/// Which service VMs run (and so have hops on both sides), and how the shim sees the chain.
#[derive(Clone, Copy)]
struct Chain {
    vm1: bool,
    vm2: bool,
    down: bool,
}

/// The chain as the shim hands it to an interface of `side`'s network.
fn chain(side: &str, ch: Chain) -> Value {
    let left = side == "left";
    let (remote, subnet) = if left {
        (PUBLIC, PUBLIC_NET)
    } else {
        (GUEST, GUEST_NET)
    };
    let mut hops = Vec::new();
    for (on, vm, l, r) in [
        (ch.vm1, SVM1, VMI_L1, VMI_R1),
        (ch.vm2, SVM2, VMI_L2, VMI_R2),
    ] {
        if on {
            hops.push(
                json!({"instance": NAT, "vm_uuid": vm, "vmi_uuid": if left { l } else { r }}),
            );
        }
    }
    let status = if ch.down || hops.is_empty() {
        json!({"state": "down", "reason": "service instance has no VM"})
    } else {
        json!({"state": "resolved"})
    };
    json!([{"policy": POLICY, "instances": [NAT], "side": side,
            "remote": {"vrf": remote, "subnets": [subnet]}, "default_route": left,
            "hops": if ch.down { json!([]) } else { json!(hops) }, "status": status}])
}

/// The policy both networks carry: guest -> public through the NAT instance.
fn policy() -> Value {
    json!([{"uuid": OTHER, "fq_name": ["default-domain", "admin", "snat"], "attr": null, "entries": null,
            "rules": [{"direction": "<>", "protocol": null, "action": "service", "services": [NAT],
                       "src": [{"vrf": GUEST, "subnets": [GUEST_NET]}],
                       "dst": [{"vrf": PUBLIC, "subnets": [PUBLIC_NET]}],
                       "src_ports": [[0, 65535]], "dst_ports": [[0, 65535]]}]}])
}

/// An interface on the guest (`left`) or public (`right`) network; `svc` is its service
/// interface type, if it is a service VM's.
fn iface(vmi: &str, vm: &str, side: &str, ip: &str, svc: Option<&str>, ch: Chain) -> Value {
    let (vrf, subnet, gw) = if side == "left" {
        (GUEST, GUEST_NET, "10.1.1.1")
    } else {
        (PUBLIC, PUBLIC_NET, "203.0.113.1")
    };
    let props = svc.map(|t| json!({"service_interface_type": t}));
    json!({
        "uuid": vmi, "name": "x", "vm_uuid": vm, "mac": null,
        "network": {"uuid": OTHER, "vrf": vrf, "subnets": [subnet]},
        "ips": [{"uuid": OTHER, "address": ip, "subnet": subnet, "prefix_len": 24, "gateway": gw}],
        "floating_ips": [], "policies": policy(), "connected": [], "properties": props,
        "service_chains": chain(side, ch)
    })
}

fn put(rev: u64, kind: EventKind, key: String, value: Value) -> WatchEvent {
    WatchEvent {
        rev,
        kind,
        key,
        op: Op::Put,
        value: Some(value),
    }
}

/// The interfaces of the guest VM and of the service VMs `local` says run on this host, the
/// routes of those on h2, all seeing chain `ch`.
fn events(ch: Chain, local: [bool; 2]) -> Vec<WatchEvent> {
    let g = iface(VMI_G, OTHER, "left", "10.1.1.3", None, ch);
    let mut ev = vec![put(1, EventKind::Interface, format!("iface/{VMI_G}"), g)];
    let vms = [
        (
            ch.vm1,
            local[0],
            SVM1,
            VMI_L1,
            VMI_R1,
            "10.1.1.11",
            "203.0.113.11",
            41,
        ),
        (
            ch.vm2,
            local[1],
            SVM2,
            VMI_L2,
            VMI_R2,
            "10.1.1.12",
            "203.0.113.12",
            51,
        ),
    ];
    for (on, here, vm, l, r, lip, rip, label) in vms {
        if !on {
            continue;
        }
        let rev = ev.len() as u64 + 1;
        if here {
            let li = iface(l, vm, "left", lip, Some("left"), ch);
            let ri = iface(r, vm, "right", rip, Some("right"), ch);
            ev.push(put(rev, EventKind::Interface, format!("iface/{l}"), li));
            ev.push(put(rev + 1, EventKind::Interface, format!("iface/{r}"), ri));
        } else {
            for (vmi, vrf, ip, lb) in [(l, GUEST, lip, label), (r, PUBLIC, rip, label + 1)] {
                let v = json!({"host": "h2", "vrf": vrf, "prefix": format!("{ip}/32"), "label": lb,
                               "nexthop": H2, "vmi_uuid": vmi});
                ev.push(put(
                    rev,
                    EventKind::Route,
                    format!("route/{vrf}/{ip}/32/h2"),
                    v,
                ));
            }
        }
    }
    ev
}

/// A controller state with the guest VM bound as vif5.0 and local service VMs as vif7.x
/// (VM 1) and vif8.x (VM 2).
fn state(ch: Chain, local: [bool; 2]) -> ControllerState {
    let mut st = ControllerState::default();
    let ports = [
        (VMI_G, "vif5.0"),
        (VMI_L1, "vif7.1"),
        (VMI_R1, "vif7.2"),
        (VMI_L2, "vif8.1"),
        (VMI_R2, "vif8.2"),
    ];
    for (vmi, name) in ports {
        st.ports.insert(
            vmi.parse().expect("vmi"),
            Port {
                name: name.into(),
                mac: "02:00:00:00:00:99".parse().expect("mac"),
            },
        );
    }
    let ev = events(ch, local);
    let rev = ev.len() as u64;
    st.apply_watch(&WatchReply {
        rev,
        reset: true,
        events: ev,
    });
    st
}

/// Compiles `cfg` against `dp` and applies the difference; returns how many operations it took.
fn sync(dp: &mut MemDataplane, alloc: &mut Allocations, cfg: &Config) -> usize {
    let idx = DumpIndex::new(dp.dump());
    let c = compile(cfg, &idx, alloc, &Limits::default()).expect("compile");
    let ops = reconcile(&c.desired, &idx);
    let n = ops.len();
    dp.apply(ops).expect("dataplane accepts");
    n
}

/// What the tests read from a dataplane dump.
struct Tables(StateDump);

impl Tables {
    fn vrf(&self, name: &str) -> u16 {
        self.0.vrfs.iter().find(|v| v.name == name).expect("vrf").id
    }
    fn route(&self, vrf: &str, prefix: &str) -> Option<Route> {
        let p: Prefix = prefix.parse().expect("prefix");
        let v = self.vrf(vrf);
        self.0
            .routes
            .iter()
            .find(|r| r.vrf == v && r.prefix == u32::from(p.addr) && r.plen == p.len)
            .map(|r| r.route)
    }
    fn nh(&self, id: u32) -> Option<NexthopSpec> {
        self.0
            .nhs
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.spec.clone())
    }
    /// The nexthop of a local interface's vif.
    fn vif_nh(&self, name: &str) -> u32 {
        self.0
            .vifs
            .iter()
            .find(|v| v.name == name)
            .and_then(|v| v.nh)
            .expect("vif nh")
    }
    fn vif_ip(&self, name: &str) -> u32 {
        self.0.vifs.iter().find(|v| v.name == name).expect("vif").ip
    }
    /// Whether nexthop `nh` is the tunnel to host `dip`.
    fn is_tunnel_to(&self, nh: u32, dip: &str) -> bool {
        let dip = u32::from(dip.parse::<Ipv4Addr>().expect("ip"));
        matches!(self.nh(nh), Some(NexthopSpec::Tunnel { dip: d, .. }) if d == dip)
    }
}

/// Builds and programs `st` into a fresh dataplane.
fn program(st: &ControllerState) -> (MemDataplane, Allocations, Built) {
    let b = st.build(&settings());
    let mut dp = MemDataplane::new(u32::from(Ipv4Addr::new(10, 0, 0, 1)));
    let mut alloc = Allocations::default();
    assert!(sync(&mut dp, &mut alloc, &b.config) > 0);
    (dp, alloc, b)
}

const UP1: Chain = Chain {
    vm1: true,
    vm2: false,
    down: false,
};
const UP2: Chain = Chain {
    vm1: true,
    vm2: true,
    down: false,
};

#[test]
fn one_local_instance_steers_both_sides_to_its_interfaces_and_relaxes_only_its_anti_spoofing() {
    let st = state(UP1, [true, true]);
    let (mut dp, _, b) = program(&st);
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    let t = Tables(dp.dump());
    let left = t.vif_nh("vif7.1");
    let right = t.vif_nh("vif7.2");
    // Guest VRF: the public subnet and the default route go to the instance's left interface.
    for p in [PUBLIC_NET, "0.0.0.0/0"] {
        assert_eq!(
            t.route(GUEST, p),
            Some(Route {
                nh: left,
                label: None,
                proxy_arp: false
            }),
            "{p}"
        );
    }
    // Public VRF: the guest subnet goes to its right interface; no default route there.
    assert_eq!(t.route(PUBLIC, GUEST_NET).map(|r| r.nh), Some(right));
    assert_eq!(t.route(PUBLIC, "0.0.0.0/0"), None);
    // More specific routes stay: the guest's own /32 and the instance's addresses.
    assert_eq!(
        t.route(GUEST, "10.1.1.3/32").map(|r| r.nh),
        Some(t.vif_nh("vif5.0"))
    );
    assert_eq!(
        t.route(PUBLIC, "203.0.113.11/32").map(|r| r.nh),
        Some(right)
    );
    // Never connected directly: no guest /32 in the public VRF.
    assert_eq!(t.route(PUBLIC, "10.1.1.3/32"), None);
    // Service interfaces check only their MAC; the guest keeps its source check.
    assert_eq!(t.vif_ip("vif7.1"), 0);
    assert_eq!(t.vif_ip("vif7.2"), 0);
    assert_eq!(t.vif_ip("vif5.0"), u32::from(Ipv4Addr::new(10, 1, 1, 3)));
    // The service rule passes now that the chain is steered.
    let pol = b.config.network(GUEST).and_then(|n| n.policy.as_ref());
    let rules = &pol.expect("guest policy").rules;
    assert!(!rules.is_empty());
    assert!(rules.iter().all(|r| r.action == PolicyAction::Pass));
}

#[test]
fn one_remote_instance_is_reached_through_the_tunnel_with_its_interface_label() {
    let st = state(UP1, [false, false]);
    let (mut dp, _, b) = program(&st);
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    let t = Tables(dp.dump());
    for p in [PUBLIC_NET, "0.0.0.0/0"] {
        let r = t.route(GUEST, p).expect("chain route");
        assert!(t.is_tunnel_to(r.nh, H2), "{p}: {:?}", t.nh(r.nh));
        assert_eq!(r.label, Some(41), "{p}: the left interface's label on h2");
    }
    // The public network has no local interface here: nothing is installed for it.
    assert!(!t.0.vrfs.iter().any(|v| v.name == PUBLIC));
}

#[test]
fn two_instances_become_one_composite_per_side_in_the_same_vm_order() {
    // VM 1 here, VM 2 on h2; VM 2's uuid sorts first, so it is member 0 on both sides.
    let st = state(UP2, [true, false]);
    let (mut dp, _, b) = program(&st);
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    let t = Tables(dp.dump());
    let tunnel = t.route(GUEST, "10.1.1.12/32").expect("VM 2's left /32").nh;
    for (vrf, p, local, label) in [
        (GUEST, PUBLIC_NET, "vif7.1", 51),
        (GUEST, "0.0.0.0/0", "vif7.1", 51),
        (PUBLIC, GUEST_NET, "vif7.2", 52),
    ] {
        let r = t.route(vrf, p).expect("chain route");
        assert_eq!(r.label, None);
        assert_eq!(
            t.nh(r.nh),
            Some(NexthopSpec::Composite {
                members: vec![(tunnel, Some(label)), (t.vif_nh(local), None)],
                keys: vec![key(SVM2), key(SVM1)],
            }),
            "{vrf} {p}"
        );
    }
    // One composite per chain and VRF: the two guest prefixes share it.
    assert_eq!(
        t.route(GUEST, PUBLIC_NET).map(|r| r.nh),
        t.route(GUEST, "0.0.0.0/0").map(|r| r.nh)
    );
}

/// The ECMP key of service VM `vm`.
fn key(vm: &str) -> u32 {
    chains::member_key(&vm.parse().expect("vm uuid"))
}

#[test]
fn both_sides_key_each_member_by_its_service_vm() {
    let st = state(UP2, [true, false]);
    let b = st.build(&settings());
    let keys_of = |net: &str| -> Vec<Vec<u32>> {
        let n = b.config.network(net).expect("network");
        let p = n.policy.as_ref().expect("policy");
        p.chains.iter().map(|c| c.keys.clone()).collect()
    };
    // Left side (left interfaces, one local, one remote) and right side (right interfaces)
    // carry the same key for the same VM, in the same order.
    let want = vec![vec![key(SVM2), key(SVM1)]];
    assert_eq!(keys_of(GUEST), want);
    assert_eq!(keys_of(PUBLIC), want);
    assert_ne!(key(SVM1), key(SVM2));
    // Fixed across builds and hosts: a hash of the uuid's bytes, not std's hasher.
    assert_eq!(key(SVM1), key("B0000000-0000-0000-0000-000000000001"));
    assert_eq!(key(SVM1), 0x99fa_bab6);
}

#[test]
fn a_chain_without_an_instance_drops_and_connects_nothing() {
    let down = Chain {
        vm1: true,
        vm2: false,
        down: true,
    };
    let st = state(down, [true, true]);
    let (mut dp, _, b) = program(&st);
    let t = Tables(dp.dump());
    let r = t.route(GUEST, PUBLIC_NET).expect("discard route");
    assert_eq!(t.nh(r.nh), Some(NexthopSpec::Discard));
    assert_ne!(r.nh, 0, "not the no-route nexthop");
    assert_eq!(t.route(GUEST, "0.0.0.0/0"), None);
    assert_eq!(t.route(PUBLIC, "10.1.1.3/32"), None);
    let pol = b.config.network(GUEST).and_then(|n| n.policy.as_ref());
    let rules = &pol.expect("guest policy").rules;
    assert!(rules.iter().all(|r| r.action == PolicyAction::NoService));
    assert!(!t
        .0
        .nhs
        .iter()
        .any(|n| matches!(n.spec, NexthopSpec::Composite { .. })));
}

#[test]
fn composite_ids_survive_reconciles_an_agent_restart_and_member_changes() {
    let st = state(UP2, [true, false]);
    let (mut dp, mut alloc, b) = program(&st);
    assert_eq!(
        sync(&mut dp, &mut alloc, &b.config),
        0,
        "second pass is empty"
    );
    let first = Tables(dp.dump())
        .route(GUEST, "0.0.0.0/0")
        .expect("route")
        .nh;
    // A restarted agent without its state file adopts everything: no operation.
    let mut fresh = Allocations::default();
    assert_eq!(sync(&mut dp, &mut fresh, &b.config), 0, "hitless restart");
    assert_eq!(fresh.nhs, alloc.nhs);
    // VM 2 goes: the route goes straight to VM 1's interface, the composite goes.
    let one = state(UP1, [true, false]).build(&settings());
    assert!(sync(&mut dp, &mut fresh, &one.config) > 0);
    let t = Tables(dp.dump());
    assert_eq!(
        t.route(GUEST, "0.0.0.0/0").map(|r| r.nh),
        Some(t.vif_nh("vif7.1"))
    );
    assert!(t.nh(first).is_none(), "the composite is removed");
    // VM 2 back, then a restart while it runs: the composite keeps one id throughout.
    assert!(sync(&mut dp, &mut fresh, &b.config) > 0);
    let again = Tables(dp.dump())
        .route(GUEST, "0.0.0.0/0")
        .expect("route")
        .nh;
    assert!(matches!(
        Tables(dp.dump()).nh(again),
        Some(NexthopSpec::Composite { .. })
    ));
    let mut restarted = Allocations::default();
    assert_eq!(sync(&mut dp, &mut restarted, &b.config), 0);
    let key = crate::compile::composite_key(GUEST, &format!("{POLICY}>{PUBLIC}"));
    assert_eq!(restarted.nhs.get(&key), Some(&again));
}
