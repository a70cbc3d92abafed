//! Watch events -> desired state, without I/O.

use super::*;
use crate::compile::Binding;
use crate::config::Prefix;
use crate::config::RemoteRoute;
use serde_json::{json, Value};
use vrouter_api::watch::{EventKind, Op, WatchEvent, WatchReply};
use vrouter_api::{Label, Uuid};

const VMI1: &str = "11111111-1111-1111-1111-111111111111";
const VMI2: &str = "22222222-2222-2222-2222-222222222222";
const VM1: &str = "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa";
const VRF: &str = "default-domain:admin:net1";
const PUB: &str = "default-domain:admin:public";
/// UUIDs of objects the tests do not look at (instance IPs, networks, policies, floating IPs).
const OTHER: &str = "44444444-4444-4444-4444-444444444444";

fn settings() -> Settings {
    Settings {
        url: "http://127.0.0.1:1".into(),
        token: None,
        host: "h1".into(),
        fabric_ip: Some(Ipv4Addr::new(10, 0, 0, 1)),
        gateway_mac: None,
        neighbours: BTreeMap::new(),
        arp: true,
        encap: TunnelKind::MplsOverUdp,
        mtu: 1500,
        dp_socket: PathBuf::from("/nonexistent"),
        xenstore: true,
    }
}

fn iface(vmi: &str, mac: &str, ip: &str) -> Value {
    json!({
        "uuid": vmi, "name": "i-2-10-VM-0", "fq_name": ["i-2-10-VM", "i-2-10-VM-0"], "vm_uuid": VM1,
        "mac": mac,
        "network": {"uuid": "33333333-3333-3333-3333-333333333333", "fq_name": ["default-domain", "admin", "net1"], "vrf": VRF},
        "ips": [{"uuid": OTHER, "address": ip, "subnet": "10.1.1.0/24", "prefix_len": 24,
                 "gateway": "10.1.1.1", "dns_server": "10.1.1.2"}],
        "floating_ips": [], "policies": [], "properties": null
    })
}

fn ev(rev: u64, kind: &str, key: &str, value: Option<Value>) -> WatchEvent {
    WatchEvent {
        rev,
        kind: match kind {
            "interface" => EventKind::Interface,
            "route" => EventKind::Route,
            _ => EventKind::Other,
        },
        key: key.into(),
        op: if value.is_some() { Op::Put } else { Op::Delete },
        value,
    }
}

fn route(host: &str, prefix: &str, label: u32, nh: &str) -> Value {
    json!({"host": host, "vrf": VRF, "prefix": prefix, "label": label, "nexthop": nh, "vmi_uuid": VMI2})
}

fn reply(rev: u64, reset: bool, events: Vec<WatchEvent>) -> WatchReply {
    WatchReply { rev, reset, events }
}

fn bound(st: &mut ControllerState, vmi: &str, port: &str) {
    st.ports.insert(
        vmi.parse().expect("vmi"),
        Port {
            name: port.into(),
            mac: "02:00:00:00:00:99".parse().expect("mac"),
        },
    );
}

#[test]
fn interface_event_becomes_a_bound_interface() {
    let mut st = ControllerState::default();
    let changed = st.apply_watch(&reply(
        5,
        true,
        vec![ev(
            5,
            "interface",
            &format!("iface/{VMI1}"),
            Some(iface(VMI1, "02:11:22:33:44:55", "10.1.1.3")),
        )],
    ));
    assert!(changed);
    assert_eq!(st.since, 5);
    // Not bound by xenstore yet: nothing to program.
    let b = st.build(&settings());
    assert!(b.config.interfaces.is_empty());
    bound(&mut st, VMI1, "vif5.0");
    let b = st.build(&settings());
    let c = &b.config;
    assert_eq!(c.networks.len(), 1);
    assert_eq!(c.networks[0].name, VRF);
    assert_eq!(c.networks[0].vrf, VRF);
    assert_eq!(c.networks[0].subnet, "10.1.1.0/24".parse::<Prefix>().ok());
    assert_eq!(c.networks[0].gateway, Some(Ipv4Addr::new(10, 1, 1, 1)));
    assert_eq!(c.interfaces.len(), 1);
    let i = &c.interfaces[0];
    assert_eq!(i.name, "vif5.0");
    assert_eq!(i.mac.to_string(), "02:11:22:33:44:55");
    assert_eq!(i.ip, Ipv4Addr::new(10, 1, 1, 3));
    assert_eq!(i.network, VRF);
    assert_eq!(i.mtu, 1500);
    assert_eq!(i.dns, vec![Ipv4Addr::new(10, 1, 1, 2)]);
    assert_eq!(
        b.vmi_of_port.get("vif5.0").map(Uuid::to_string).as_deref(),
        Some(VMI1)
    );
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
}

#[test]
fn remote_routes_need_an_underlay_mac_and_skip_our_own() {
    let mut st = ControllerState::default();
    bound(&mut st, VMI1, "vif5.0");
    st.apply_watch(&reply(
        7,
        true,
        vec![
            ev(3, "interface", &format!("iface/{VMI1}"), Some(iface(VMI1, "02:11:22:33:44:55", "10.1.1.3"))),
            ev(6, "route", &format!("route/{VRF}/10.1.1.4/32/h2"), Some(route("h2", "10.1.1.4/32", 17, "10.0.0.2"))),
            ev(7, "route", &format!("route/{VRF}/10.1.1.9/32/h1"), Some(route("h1", "10.1.1.9/32", 18, "10.0.0.1"))),
            ev(7, "route", "route/other-vrf/10.9.9.9/32/h2", Some(json!({"host": "h2", "vrf": "other-vrf", "prefix": "10.9.9.9/32", "label": 20, "nexthop": "10.0.0.2"}))),
        ],
    ));
    let b = st.build(&settings());
    assert!(b.config.routes.is_empty());
    assert_eq!(
        b.unresolved,
        [Ipv4Addr::new(10, 0, 0, 2)].into_iter().collect()
    );
    // ARP resolved it.
    let mac: MacAddr = "52:54:00:00:00:02".parse().expect("mac");
    st.neighbours.insert(Ipv4Addr::new(10, 0, 0, 2), mac);
    let b = st.build(&settings());
    assert!(b.unresolved.is_empty());
    assert_eq!(
        b.config.routes,
        vec![RemoteRoute {
            network: VRF.into(),
            prefix: "10.1.1.4/32".parse::<Prefix>().expect("p"),
            label: 17,
            remote: Ipv4Addr::new(10, 0, 0, 2),
            encap: TunnelKind::MplsOverUdp,
        }]
    );
    assert_eq!(
        b.config.underlay.neighbour_mac(Ipv4Addr::new(10, 0, 0, 2)),
        Some(mac)
    );
    // A default underlay gateway MAC serves hosts not resolved.
    st.neighbours.clear();
    let mut s = settings();
    s.gateway_mac = Some("52:54:00:00:00:fe".parse().expect("mac"));
    s.encap = TunnelKind::MplsOverGre;
    let b = st.build(&s);
    assert_eq!(b.config.routes.len(), 1);
    assert_eq!(b.config.routes[0].encap, TunnelKind::MplsOverGre);
}

#[test]
fn gateway_routes_keep_the_encapsulation_their_next_hop_asked_for() {
    let mut st = ControllerState::default();
    bound(&mut st, VMI1, "vif5.0");
    let mut gre = route("bgp:10.0.0.254", "0.0.0.0/0", 300, "10.0.0.254");
    gre["encap"] = json!("mpls-over-gre");
    let mut udp = route("bgp:10.0.0.254", "198.51.100.0/24", 301, "10.0.0.254");
    udp["encap"] = json!("mpls-over-udp");
    st.apply_watch(&reply(
        7,
        true,
        vec![
            ev(
                3,
                "interface",
                &format!("iface/{VMI1}"),
                Some(iface(VMI1, "02:11:22:33:44:55", "10.1.1.3")),
            ),
            ev(
                6,
                "route",
                &format!("route/{VRF}/0.0.0.0/0/bgp:10.0.0.254"),
                Some(gre),
            ),
            ev(
                7,
                "route",
                &format!("route/{VRF}/198.51.100.0/24/bgp:10.0.0.254"),
                Some(udp),
            ),
        ],
    ));
    st.neighbours.insert(
        Ipv4Addr::new(10, 0, 0, 254),
        "52:54:00:00:00:fe".parse().expect("mac"),
    );
    // The host's own encapsulation is MPLS over UDP; the gateway's default route says GRE.
    let b = st.build(&settings());
    let by_prefix: BTreeMap<String, (u32, TunnelKind)> = b
        .config
        .routes
        .iter()
        .map(|r| (r.prefix.to_string(), (r.label, r.encap)))
        .collect();
    assert_eq!(by_prefix["0.0.0.0/0"], (300, TunnelKind::MplsOverGre));
    assert_eq!(by_prefix["198.51.100.0/24"], (301, TunnelKind::MplsOverUdp));
}

#[test]
fn resume_applies_deletes_and_reset_replaces_everything() {
    let mut st = ControllerState::default();
    bound(&mut st, VMI1, "vif5.0");
    st.neighbours.insert(
        Ipv4Addr::new(10, 0, 0, 2),
        "52:54:00:00:00:02".parse().expect("mac"),
    );
    st.apply_watch(&reply(
        6,
        true,
        vec![
            ev(
                3,
                "interface",
                &format!("iface/{VMI1}"),
                Some(iface(VMI1, "02:11:22:33:44:55", "10.1.1.3")),
            ),
            ev(
                6,
                "route",
                &format!("route/{VRF}/10.1.1.4/32/h2"),
                Some(route("h2", "10.1.1.4/32", 17, "10.0.0.2")),
            ),
        ],
    ));
    assert_eq!(st.build(&settings()).config.routes.len(), 1);
    // Incremental: the route is withdrawn, the interface changes IP.
    let changed = st.apply_watch(&reply(
        9,
        false,
        vec![
            ev(8, "route", &format!("route/{VRF}/10.1.1.4/32/h2"), None),
            ev(
                9,
                "interface",
                &format!("iface/{VMI1}"),
                Some(iface(VMI1, "02:11:22:33:44:55", "10.1.1.7")),
            ),
        ],
    ));
    assert!(changed);
    assert_eq!(st.since, 9);
    let c = st.build(&settings()).config;
    assert!(c.routes.is_empty());
    assert_eq!(c.interfaces[0].ip, Ipv4Addr::new(10, 1, 1, 7));
    // Nothing new: unchanged.
    assert!(!st.apply_watch(&reply(9, false, vec![])));
    // Reset with a different snapshot: the old route key is gone, a new one is there.
    st.routes.insert(
        "route/stale".into(),
        (
            1,
            serde_json::from_value(route("h3", "10.1.1.5/32", 30, "10.0.0.3")).expect("r"),
        ),
    );
    st.apply_watch(&reply(
        20,
        true,
        vec![
            ev(
                11,
                "interface",
                &format!("iface/{VMI1}"),
                Some(iface(VMI1, "02:11:22:33:44:55", "10.1.1.7")),
            ),
            ev(
                20,
                "route",
                &format!("route/{VRF}/10.1.1.6/32/h2"),
                Some(route("h2", "10.1.1.6/32", 19, "10.0.0.2")),
            ),
        ],
    ));
    assert_eq!(st.routes.len(), 1);
    let c = st.build(&settings()).config;
    assert_eq!(c.routes.len(), 1);
    assert_eq!(c.routes[0].label, 19);
    // The interface's delete (unbound elsewhere / VMI deleted) removes it.
    st.apply_watch(&reply(
        21,
        false,
        vec![ev(21, "interface", &format!("iface/{VMI1}"), None)],
    ));
    let c = st.build(&settings()).config;
    assert!(c.interfaces.is_empty());
    assert!(
        c.routes.is_empty(),
        "no local interface in the VRF: its routes go too"
    );
}

#[test]
fn floating_ips_local_wins_and_conflicts_are_skipped() {
    let mut st = ControllerState::default();
    bound(&mut st, VMI1, "vif5.0");
    bound(&mut st, VMI2, "vif6.0");
    let mut a = iface(VMI1, "02:11:22:33:44:55", "10.1.1.3");
    a["floating_ips"] =
        json!([{"uuid": OTHER, "address": "192.0.2.10", "network_uuid": OTHER, "vrf": PUB}]);
    a["properties"] = json!({"interface_mtu": 9000});
    // Same IP as the first: skipped with a warning.
    let b2 = iface(VMI2, "02:11:22:33:44:66", "10.1.1.3");
    st.neighbours.insert(
        Ipv4Addr::new(10, 0, 0, 2),
        "52:54:00:00:00:02".parse().expect("mac"),
    );
    st.apply_watch(&reply(
        4,
        true,
        vec![
            ev(1, "interface", &format!("iface/{VMI1}"), Some(a)),
            ev(2, "interface", &format!("iface/{VMI2}"), Some(b2)),
            // A stale remote route for our own VM's /32: the local interface wins.
            ev(3, "route", &format!("route/{VRF}/10.1.1.3/32/h2"), Some(route("h2", "10.1.1.3/32", 17, "10.0.0.2"))),
            ev(4, "route", &format!("route/{PUB}/0.0.0.0/0/gw"), Some(json!({"host": "gw", "vrf": PUB, "prefix": "0.0.0.0/0", "label": 40, "nexthop": "10.0.0.2"}))),
        ],
    ));
    let b = st.build(&settings());
    let c = &b.config;
    assert_eq!(c.interfaces.len(), 1);
    assert_eq!(c.interfaces[0].mtu, 9000);
    assert!(
        b.warnings.iter().any(|w| w.contains("already used")),
        "{:?}",
        b.warnings
    );
    assert_eq!(c.floating_ips.len(), 1);
    assert_eq!(c.floating_ips[0].interface, "vif5.0");
    let public = c.network(PUB).expect("public network");
    assert_eq!((public.subnet, public.gateway), (None, None));
    assert_eq!(c.routes.len(), 1);
    assert_eq!(c.routes[0].network, PUB);
    assert_eq!(c.routes[0].label, 40);

    // What is advertised after a pass.
    let compiled = Compiled {
        bindings: vec![Binding {
            name: "vif5.0".into(),
            network: VRF.into(),
            vif: 3,
            vrf: 1,
            nh: 1,
            label: 16,
        }],
        table_labels: [(PUB.to_string(), 18)].into_iter().collect(),
        ..Compiled::default()
    };
    let ads = adverts(c, &compiled, &b.vmi_of_port);
    let ad = |vrf: &str, prefix: &str, label: u32| {
        (
            (vrf.to_string(), prefix.parse().expect("prefix")),
            (
                Label::new(label).expect("label"),
                VMI1.parse().expect("vmi"),
            ),
        )
    };
    assert_eq!(
        ads,
        [ad(VRF, "10.1.1.3/32", 16), ad(PUB, "192.0.2.10/32", 18)]
            .into_iter()
            .collect()
    );
}

#[test]
fn half_configured_interfaces_wait() {
    let mut st = ControllerState::default();
    bound(&mut st, VMI1, "vif5.0");
    let mut a = iface(VMI1, "02:11:22:33:44:55", "10.1.1.3");
    a["ips"] = json!([]);
    st.apply_watch(&reply(
        1,
        true,
        vec![ev(1, "interface", &format!("iface/{VMI1}"), Some(a))],
    ));
    let b = st.build(&settings());
    assert!(b.config.interfaces.is_empty());
    assert!(
        b.warnings[0].contains("no IPv4 address yet"),
        "{:?}",
        b.warnings
    );
    let mut a = iface(VMI1, "02:11:22:33:44:55", "10.1.1.3");
    a["network"] = Value::Null;
    a["mac"] = Value::Null;
    st.apply_watch(&reply(
        2,
        false,
        vec![ev(2, "interface", &format!("iface/{VMI1}"), Some(a))],
    ));
    let b = st.build(&settings());
    assert!(b.warnings[0].contains("no network yet"), "{:?}", b.warnings);
    // Garbage values are dropped, not fatal.
    st.apply_watch(&reply(
        3,
        false,
        vec![ev(
            3,
            "interface",
            &format!("iface/{VMI1}"),
            Some(json!({"ips": 5})),
        )],
    ));
    assert!(st.ifaces.is_empty());
}

#[test]
fn directory_lists_known_interfaces() {
    let mut st = ControllerState::default();
    st.apply_watch(&reply(
        1,
        true,
        vec![ev(
            1,
            "interface",
            &format!("iface/{VMI1}"),
            Some(iface(VMI1, "02:11:22:33:44:55", "10.1.1.3")),
        )],
    ));
    let d = st.directory();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].nic_uuid.to_string(), VMI1);
    assert_eq!(d[0].name, "i-2-10-VM-0");
    assert_eq!(
        d[0].mac.map(|m| m.0),
        Some([2, 0x11, 0x22, 0x33, 0x44, 0x55])
    );
}

#[test]
fn arp_table_parsing() {
    let text = "IP address       HW type     Flags       HW address            Mask     Device\n\
                10.0.0.2         0x1         0x2         52:54:00:00:00:02     *        eth1\n\
                10.0.0.3         0x1         0x0         00:00:00:00:00:00     *        eth1\n";
    assert_eq!(
        neighbour::parse_arp(text, Ipv4Addr::new(10, 0, 0, 2)).map(|m| m.to_string()),
        Some("52:54:00:00:00:02".into())
    );
    assert_eq!(neighbour::parse_arp(text, Ipv4Addr::new(10, 0, 0, 3)), None);
    assert_eq!(neighbour::parse_arp(text, Ipv4Addr::new(10, 0, 0, 4)), None);
}

#[test]
fn file_bindings_rename_and_drop() {
    let cfg = Config::parse(&format!(
        r#"
[[networks]]
name = "net1"
subnet = "10.1.1.0/24"
[[networks]]
name = "public"
subnet = "192.0.2.0/24"
[[interfaces]]
name = "web"
mac = "02:00:00:00:01:03"
ip = "10.1.1.3"
network = "net1"
nic_uuid = "{VMI1}"
vm_uuid = "{VM1}"
[[interfaces]]
name = "vif9.0"
mac = "02:00:00:00:01:04"
ip = "10.1.1.4"
network = "net1"
[[floating_ips]]
network = "public"
address = "192.0.2.10"
interface = "web"
"#
    ))
    .expect("config");
    let none = crate::xenbind::apply_file_bindings(cfg.clone(), &BTreeMap::new());
    assert_eq!(none.interfaces.len(), 1);
    assert_eq!(none.interfaces[0].name, "vif9.0");
    assert!(none.floating_ips.is_empty());
    let ports = [(VMI1.to_string(), "vif5.0".to_string())]
        .into_iter()
        .collect();
    let some = crate::xenbind::apply_file_bindings(cfg, &ports);
    assert_eq!(some.interfaces.len(), 2);
    assert_eq!(some.interfaces[0].name, "vif5.0");
    assert_eq!(some.floating_ips[0].interface, "vif5.0");
}

const VRF_B: &str = "default-domain:admin:net2";
const VRF_C: &str = "default-domain:admin:net3";
const VMI3: &str = "33333333-3333-3333-3333-333333333333";

fn policy_iface(
    vmi: &str,
    vrf: &str,
    ip: &str,
    subnet: &str,
    other: &str,
    other_sub: &str,
    with_policy: bool,
) -> Value {
    let gw = format!("{}.1", subnet.rsplit_once('.').map_or("10.0.0", |x| x.0));
    let (policies, connected) = if with_policy {
        (
            json!([{"uuid": OTHER, "fq_name": ["default-domain", "admin", "acl-a-b"], "attr": null, "entries": null,
                    "rules": [{"direction": "<>", "protocol": 1, "action": "pass",
                               "src": [{"vrf": vrf, "subnets": [subnet]}],
                               "dst": [{"vrf": other, "subnets": [other_sub]}, {"subnet": "192.0.2.0/24"}],
                               "src_ports": [[0, 65535]], "dst_ports": [[0, 65535]]}]}]),
            json!([{"vrf": other, "subnets": [other_sub]}]),
        )
    } else {
        (json!([]), json!([]))
    };
    json!({
        "uuid": vmi, "name": "x", "vm_uuid": VM1, "mac": null,
        "network": {"uuid": OTHER, "vrf": vrf, "subnets": [subnet]},
        "ips": [{"uuid": OTHER, "address": ip, "subnet": subnet, "prefix_len": 24, "gateway": gw}],
        "floating_ips": [], "policies": policies, "connected": connected, "properties": null
    })
}

#[test]
fn policies_compile_reconcile_and_leak_routes_only_while_connected() {
    use crate::alloc::Allocations;
    use crate::compile::compile;
    use crate::dump::DumpIndex;
    use crate::reconcile::reconcile;
    use crate::testkit::MemDataplane;
    use vrouter_dataplane::tables::policy::{Direction, Endpoint, PolicyAction, PolicyRule};
    use vrouter_dataplane::tables::{Limits, NexthopSpec, VrfPolicy};

    let ip = |s: &str| u32::from(s.parse::<Ipv4Addr>().expect("ip"));
    let mut st = ControllerState::default();
    bound(&mut st, VMI1, "vif5.0");
    bound(&mut st, VMI3, "vif6.0");
    let events = |pol: bool| {
        vec![
            ev(
                3,
                "interface",
                &format!("iface/{VMI1}"),
                Some(policy_iface(
                    VMI1,
                    VRF,
                    "10.1.1.3",
                    "10.1.1.0/24",
                    VRF_B,
                    "10.2.2.0/24",
                    pol,
                )),
            ),
            ev(
                4,
                "interface",
                &format!("iface/{VMI3}"),
                Some(policy_iface(
                    VMI3,
                    VRF_B,
                    "10.2.2.3",
                    "10.2.2.0/24",
                    VRF,
                    "10.1.1.0/24",
                    pol,
                )),
            ),
            ev(
                5,
                "route",
                &format!("route/{VRF_B}/10.2.2.4/32/h2"),
                Some(
                    json!({"host": "h2", "vrf": VRF_B, "prefix": "10.2.2.4/32", "label": 30, "nexthop": "10.0.0.2"}),
                ),
            ),
            ev(
                6,
                "route",
                &format!("route/{VRF_C}/10.3.3.4/32/h2"),
                Some(
                    json!({"host": "h2", "vrf": VRF_C, "prefix": "10.3.3.4/32", "label": 31, "nexthop": "10.0.0.2"}),
                ),
            ),
        ]
    };
    st.apply_watch(&reply(6, true, events(true)));
    let mut s = settings();
    s.gateway_mac = Some("52:54:00:00:00:fe".parse().expect("mac"));
    let b = st.build(&s);
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    let net_a = b.config.network(VRF).expect("net a");
    let pa = net_a.policy.as_ref().expect("policy a");
    assert_eq!(pa.connected, vec![VRF_B.to_string()]);
    assert_eq!(
        pa.rules,
        vec![
            PolicyRule {
                direction: Direction::Both,
                proto: Some(1),
                src: Endpoint::Cidr(ip("10.1.1.0"), 24),
                src_ports: PolicyRule::ANY_PORT,
                dst: Endpoint::Cidr(ip("10.2.2.0"), 24),
                dst_ports: PolicyRule::ANY_PORT,
                action: PolicyAction::Pass,
            },
            PolicyRule {
                direction: Direction::Both,
                proto: Some(1),
                src: Endpoint::Cidr(ip("10.1.1.0"), 24),
                src_ports: PolicyRule::ANY_PORT,
                dst: Endpoint::Cidr(ip("192.0.2.0"), 24),
                dst_ports: PolicyRule::ANY_PORT,
                action: PolicyAction::Pass,
            },
        ]
    );
    // The leaked network's remote route is kept, the unconnected one is not.
    assert_eq!(b.config.routes.len(), 1);
    assert_eq!(b.config.routes[0].network, VRF_B);

    let mut dp = MemDataplane::new(ip("10.0.0.1"));
    let mut alloc = Allocations::default();
    let mut sync = |dp: &mut MemDataplane, cfg: &Config| -> usize {
        let idx = DumpIndex::new(dp.dump());
        let c = compile(cfg, &idx, &mut alloc, &Limits::default()).expect("compile");
        let ops = reconcile(&c.desired, &idx);
        let n = ops.len();
        dp.apply(ops).expect("dataplane accepts");
        n
    };
    assert!(sync(&mut dp, &b.config) > 0);
    assert_eq!(sync(&mut dp, &b.config), 0, "reconciling again is empty");
    let d = dp.dump();
    let vrf_id = |name: &str| d.vrfs.iter().find(|v| v.name == name).expect("vrf").id;
    let (va, vb) = (vrf_id(VRF), vrf_id(VRF_B));
    assert_eq!(d.policies.len(), 2);
    let vp: BTreeMap<u16, VrfPolicy> = d.vrf_policies.iter().cloned().collect();
    assert_eq!(
        vp.get(&va),
        Some(&VrfPolicy {
            subnets: vec![(ip("10.1.1.0"), 24)],
            policies: vec![u32::from(va)],
            max_flows: 0
        })
    );
    assert!(d
        .policies
        .iter()
        .any(|p| p.id == u32::from(va) && p.name == "default-domain:admin:acl-a-b"));
    let route = |vrf: u16, a: &str| {
        d.routes
            .iter()
            .find(|r| r.vrf == vrf && r.prefix == ip(a) && r.plen == 32)
            .map(|r| r.route)
    };
    let nh = |id: u32| d.nhs.iter().find(|n| n.id == id).map(|n| n.spec.clone());
    // Local interface of B leaked into A's VRF via its Encap nexthop, and A's into B's.
    let b_local = route(vb, "10.2.2.3").expect("own route");
    assert_eq!(route(va, "10.2.2.3").map(|r| r.nh), Some(b_local.nh));
    assert_eq!(
        route(vb, "10.1.1.3").map(|r| r.nh),
        route(va, "10.1.1.3").map(|r| r.nh)
    );
    // B's remote route leaked with its label to the tunnel.
    let leaked = route(va, "10.2.2.4").expect("leaked remote");
    assert_eq!(leaked.label, Some(30));
    assert!(matches!(nh(leaked.nh), Some(NexthopSpec::Tunnel { .. })));
    assert!(route(va, "10.3.3.4").is_none(), "not connected, not leaked");

    // The policy goes: flow processing, policies and the leak go with it.
    st.apply_watch(&reply(9, true, events(false)));
    let b = st.build(&s);
    assert!(b.config.network(VRF).expect("a").policy.is_none());
    assert!(sync(&mut dp, &b.config) > 0);
    assert_eq!(sync(&mut dp, &b.config), 0);
    let d = dp.dump();
    assert!(d.policies.is_empty() && d.vrf_policies.is_empty());
    assert!(!d
        .routes
        .iter()
        .any(|r| r.vrf == va && r.prefix == ip("10.2.2.3")));
    assert!(!d
        .routes
        .iter()
        .any(|r| r.vrf == va && r.prefix == ip("10.2.2.4")));
    assert!(!d
        .routes
        .iter()
        .any(|r| r.vrf == vb && r.prefix == ip("10.1.1.3")));
}

#[test]
fn floating_ip_vm_in_a_policy_network_passes_except_to_connected_networks() {
    use vrouter_dataplane::tables::policy::{Endpoint, PolicyAction};
    let p = |s: &str| s.parse::<Prefix>().expect("prefix");
    let rules = fip_rules(Ipv4Addr::new(10, 1, 1, 2), &[p("10.2.2.0/24")]);
    let ip = |a: [u8; 4]| u32::from(Ipv4Addr::from(a));
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].src, Endpoint::Cidr(ip([10, 1, 1, 2]), 32));
    assert_eq!(rules[0].dst, Endpoint::Cidr(ip([10, 2, 2, 0]), 24));
    assert_eq!(rules[0].action, PolicyAction::Deny);
    assert_eq!(rules[1].dst, Endpoint::Any);
    assert_eq!(rules[1].action, PolicyAction::Pass);
}

#[test]
fn a_public_network_with_a_policy_passes_its_floating_ips_to_the_outside() {
    use vrouter_dataplane::tables::policy::{Endpoint, PolicyAction};
    // A VM of VRF with floating IP 198.51.100.2 in PUB, and on this host an appliance Nic in
    // PUB whose network carries a policy (a source-NAT chain's): the policy of PUB must pass
    // the floating IP to and from anywhere (a gateway's routes beyond the public subnet).
    let mut st = ControllerState::default();
    bound(&mut st, VMI1, "vif5.0");
    bound(&mut st, VMI3, "vif6.0");
    let mut a = iface(VMI1, "02:11:22:33:44:55", "10.1.1.3");
    a["floating_ips"] =
        json!([{"uuid": OTHER, "address": "198.51.100.2", "network_uuid": OTHER, "vrf": PUB}]);
    let appliance = policy_iface(
        VMI3,
        PUB,
        "198.51.100.3",
        "198.51.100.0/24",
        VRF,
        "10.1.1.0/24",
        true,
    );
    st.apply_watch(&reply(
        2,
        true,
        vec![
            ev(1, "interface", &format!("iface/{VMI1}"), Some(a)),
            ev(2, "interface", &format!("iface/{VMI3}"), Some(appliance)),
        ],
    ));
    let c = st.build(&settings()).config;
    let public = c.network(PUB).expect("public network");
    let pol = public
        .policy
        .as_ref()
        .expect("PUB carries the appliance's policy");
    let fip = u32::from(Ipv4Addr::new(198, 51, 100, 2));
    let pass = pol.rules.iter().find(|r| {
        r.src == Endpoint::Cidr(fip, 32) && r.dst == Endpoint::Any && r.action == PolicyAction::Pass
    });
    assert!(pass.is_some(), "{:?}", pol.rules);
}

/// Issue 24: an agent restarted over a dataplane with remote routes. Its first pass comes
/// before ARP has answered for the remote hosts; it takes their underlay MACs from the
/// dataplane's tunnel nexthops and changes nothing (same nexthop ids and labels, with or
/// without its state file). ARP is still asked; its answer wins: the same MAC changes nothing,
/// a new one rewrites that tunnel in place.
#[test]
fn restarted_agent_keeps_remote_routes_with_the_dataplanes_underlay_macs() {
    use crate::alloc::Allocations;
    use crate::compile::compile;
    use crate::reconcile::{reconcile, summarize, Summary};
    use crate::testkit::MemDataplane;
    use vrouter_dataplane::tables::{Limits, NexthopSpec, TableOp};

    let (h2, h3) = (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3));
    let mac = |s: &str| s.parse::<MacAddr>().expect("mac");
    let watch = reply(
        9,
        true,
        vec![
            ev(
                3,
                "interface",
                &format!("iface/{VMI1}"),
                Some(iface(VMI1, "02:11:22:33:44:55", "10.1.1.3")),
            ),
            ev(
                6,
                "route",
                &format!("route/{VRF}/10.1.1.4/32/h2"),
                Some(route("h2", "10.1.1.4/32", 17, "10.0.0.2")),
            ),
            ev(
                7,
                "route",
                &format!("route/{VRF}/10.1.1.5/32/h3"),
                Some(route("h3", "10.1.1.5/32", 18, "10.0.0.3")),
            ),
            ev(
                8,
                "route",
                &format!("route/{VRF}/10.1.1.6/32/h3"),
                Some(route("h3", "10.1.1.6/32", 19, "10.0.0.3")),
            ),
        ],
    );
    let restarted = || {
        let mut st = ControllerState::default();
        bound(&mut st, VMI1, "vif5.0");
        st.apply_watch(&watch);
        st
    };
    let s = settings();
    let mut dp = MemDataplane::new(u32::from(Ipv4Addr::new(10, 0, 0, 1)));
    let pass = |st: &ControllerState, dp: &mut MemDataplane, alloc: &mut Allocations| {
        let idx = DumpIndex::new(dp.dump());
        let c = compile(&st.build(&s).config, &idx, alloc, &Limits::default()).expect("ids");
        let ops = reconcile(&c.desired, &idx);
        dp.apply(ops.clone())
            .expect("the dataplane accepts the reconcile");
        (ops, c.bindings)
    };

    // Before the restart: ARP had answered for both hosts.
    let mut st = restarted();
    st.neighbours.insert(h2, mac("52:54:00:00:00:02"));
    st.neighbours.insert(h3, mac("52:54:00:00:00:03"));
    let mut alloc = Allocations::default();
    let (_, bindings) = pass(&st, &mut dp, &mut alloc);
    let programmed = dp.dump();
    let macs = neighbour::tunnel_macs(&DumpIndex::new(dp.dump()));
    assert_eq!(macs.len(), 2, "{macs:?}");
    assert!(
        !st.adopt_tunnel_macs(macs),
        "an agent whose ARP has answered adopts nothing"
    );
    let tunnel_of = |d: &vrouter_dataplane::ctl::proto::StateDump, ip: Ipv4Addr| {
        d.nhs
            .iter()
            .find(|n| matches!(n.spec, NexthopSpec::Tunnel { dip, .. } if dip == u32::from(ip)))
            .map(|n| n.id)
            .expect("tunnel")
    };
    assert_eq!(
        programmed
            .routes
            .iter()
            .filter(|r| r.route.label.is_some())
            .count(),
        3
    );

    // Restarted, ARP not answered yet: without the dataplane's MACs every remote route and
    // tunnel would go (the bug), with them nothing changes.
    let mut st = restarted();
    let idx = DumpIndex::new(dp.dump());
    let naive = compile(
        &st.build(&s).config,
        &idx,
        &mut Allocations::default(),
        &Limits::default(),
    )
    .expect("ids");
    assert_eq!(
        summarize(&reconcile(&naive.desired, &idx)),
        Summary { adds: 0, dels: 5 }
    );
    let macs = neighbour::tunnel_macs(&idx);
    assert_eq!(macs.get(&h3), Some(&mac("52:54:00:00:00:03")), "{macs:?}");
    assert!(st.adopt_tunnel_macs(macs.clone()));
    assert!(!st.adopt_tunnel_macs(macs), "nothing new the second time");
    let b = st.build(&s);
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    assert_eq!(
        b.unresolved,
        [h2, h3].into_iter().collect(),
        "ARP is still asked"
    );
    for mut a in [Allocations::default(), alloc.clone()] {
        let (ops, again) = pass(&st, &mut dp, &mut a);
        assert_eq!(ops, vec![], "state file kept: {}", !a.nhs.is_empty());
        assert_eq!(again, bindings, "same vif, nexthop and label ids");
        assert_eq!(
            (&a.vrfs, &a.vifs, &a.nhs, &a.labels),
            (&alloc.vrfs, &alloc.vifs, &alloc.nhs, &alloc.labels),
            "same allocations, tunnels included"
        );
    }
    assert_eq!(dp.dump(), programmed);

    // ARP answers: the same MAC for h2 changes nothing; h3 moved: its tunnel is rewritten
    // under the same id, nothing else.
    st.neighbours.insert(h2, mac("52:54:00:00:00:02"));
    let (ops, _) = pass(&st, &mut dp, &mut alloc);
    assert_eq!(ops, vec![]);
    st.neighbours.insert(h3, mac("52:54:00:00:00:33"));
    assert!(st.build(&s).unresolved.is_empty());
    let (ops, _) = pass(&st, &mut dp, &mut alloc);
    let id3 = tunnel_of(&programmed, h3);
    assert!(
        matches!(ops.as_slice(), [TableOp::AddNh { id, spec: NexthopSpec::Tunnel { dmac, .. } }]
            if *id == id3 && *dmac == mac("52:54:00:00:00:33")),
        "{ops:#?}"
    );
    assert_eq!(tunnel_of(&dp.dump(), h2), tunnel_of(&programmed, h2));
}

/// The adopted MAC is a stand-in for ARP only: configured neighbours win over it, it is not
/// used with `--no-arp`, and a MAC that is just the underlay gateway's is left to the gateway
/// setting (no ARP asked for it).
#[test]
fn adopted_underlay_macs_yield_to_settings() {
    let h2 = Ipv4Addr::new(10, 0, 0, 2);
    let adopted: MacAddr = "52:54:00:00:00:02".parse().expect("mac");
    let mut st = ControllerState::default();
    bound(&mut st, VMI1, "vif5.0");
    st.apply_watch(&reply(
        7,
        true,
        vec![
            ev(
                3,
                "interface",
                &format!("iface/{VMI1}"),
                Some(iface(VMI1, "02:11:22:33:44:55", "10.1.1.3")),
            ),
            ev(
                6,
                "route",
                &format!("route/{VRF}/10.1.1.4/32/h2"),
                Some(route("h2", "10.1.1.4/32", 17, "10.0.0.2")),
            ),
        ],
    ));
    st.adopt_tunnel_macs([(h2, adopted)].into());
    let mac_of = |b: &Built| b.config.underlay.neighbour_mac(h2);

    let mut s = settings();
    s.arp = false;
    let b = st.build(&s);
    assert!(b.config.routes.is_empty(), "--no-arp: the route waits");

    let mut s = settings();
    let fixed: MacAddr = "52:54:00:00:00:f2".parse().expect("mac");
    s.neighbours.insert(h2, fixed);
    let b = st.build(&s);
    assert_eq!((mac_of(&b), b.unresolved.len()), (Some(fixed), 0));

    let mut s = settings();
    s.gateway_mac = Some(adopted);
    let b = st.build(&s);
    assert_eq!((mac_of(&b), b.unresolved.len()), (Some(adopted), 0));

    let mut s = settings();
    s.gateway_mac = Some("52:54:00:00:00:fe".parse().expect("mac"));
    let b = st.build(&s);
    assert_eq!(
        mac_of(&b),
        Some(adopted),
        "the adopted MAC before the gateway's"
    );
    assert_eq!(b.unresolved, [h2].into_iter().collect());
}
