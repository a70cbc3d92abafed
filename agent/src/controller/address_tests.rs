//! Multiple addresses per interface (issue 20), watch events to dataplane tables without I/O:
//! secondary instance IPs, allowed address pairs and the VIP claims that route a pair's address.

use super::*;
use crate::alloc::Allocations;
use crate::compile::compile;
use crate::dump::DumpIndex;
use crate::reconcile::reconcile;
use crate::testkit::MemDataplane;
use crate::vip::Claim;
use serde_json::{json, Value};
use vrouter_api::watch::{EventKind, Op, WatchEvent, WatchReply};
use vrouter_dataplane::ctl::proto::StateDump;
use vrouter_dataplane::tables::{AllowedSource, Limits};

const VMI1: &str = "11111111-1111-1111-1111-111111111111";
const VMI2: &str = "22222222-2222-2222-2222-222222222222";
const VM1: &str = "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa";
const VRF: &str = "default-domain:admin:net1";
const OTHER: &str = "44444444-4444-4444-4444-444444444444";
const VIP: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 100);

fn settings() -> Settings {
    Settings {
        url: "http://127.0.0.1:1".into(),
        token: None,
        host: "h1".into(),
        fabric_ip: Some(Ipv4Addr::new(10, 0, 0, 1)),
        gateway_mac: None,
        neighbours: [(
            Ipv4Addr::new(10, 0, 0, 2),
            "52:54:00:00:00:02".parse().expect("mac"),
        )]
        .into_iter()
        .collect(),
        arp: false,
        encap: TunnelKind::MplsOverUdp,
        mtu: 1500,
        dp_socket: PathBuf::from("/nonexistent"),
        xenstore: true,
    }
}

fn ip_entry(addr: &str) -> Value {
    json!({"uuid": OTHER, "address": addr, "subnet": "10.1.1.0/24", "prefix_len": 24,
           "gateway": "10.1.1.1", "dns_server": "10.1.1.1"})
}

/// An interface with instance IPs `ips` (the first is the fixed one) and a VIP pair.
fn iface(vmi: &str, mac: &str, ips: &[&str]) -> Value {
    json!({
        "uuid": vmi, "name": "x", "vm_uuid": VM1, "mac": mac,
        "network": {"uuid": OTHER, "vrf": VRF, "subnets": ["10.1.1.0/24"]},
        "ips": ips.iter().map(|a| ip_entry(a)).collect::<Vec<_>>(),
        "floating_ips": [], "policies": [], "properties": null,
        "allowed_address_pairs": [
            {"prefix": "10.1.1.100/32", "mac": "00:00:5e:00:01:01", "mode": "active-standby"}
        ]
    })
}

fn ev(rev: u64, key: &str, value: Value, kind: EventKind) -> WatchEvent {
    WatchEvent {
        rev,
        kind,
        key: key.into(),
        op: Op::Put,
        value: Some(value),
    }
}

fn state() -> ControllerState {
    let mut st = ControllerState::default();
    for (vmi, port, mac, ips) in [
        (
            VMI1,
            "vif5.0",
            "02:00:00:00:01:03",
            &["10.1.1.3", "10.1.1.50"][..],
        ),
        (VMI2, "vif6.0", "02:00:00:00:01:04", &["10.1.1.4"][..]),
    ] {
        st.ports.insert(
            vmi.parse().expect("vmi"),
            Port {
                name: port.into(),
                mac: mac.parse().expect("mac"),
            },
        );
        let e = ev(
            1,
            &format!("iface/{vmi}"),
            iface(vmi, mac, ips),
            EventKind::Interface,
        );
        st.apply_watch(&WatchReply {
            rev: 1,
            reset: false,
            events: vec![e],
        });
    }
    st
}

/// Programs `st` into `dp`; the dump afterwards.
fn program(st: &ControllerState, dp: &mut MemDataplane, alloc: &mut Allocations) -> StateDump {
    let built = st.build(&settings());
    assert!(built.warnings.is_empty(), "{:?}", built.warnings);
    let idx = DumpIndex::new(dp.dump());
    let c = compile(&built.config, &idx, alloc, &Limits::default()).expect("compile");
    dp.apply(reconcile(&c.desired, &idx)).expect("accepted");
    dp.dump()
}

/// The vif a /32 route points at (through its Encap nexthop), if any.
fn routed_to(d: &StateDump, ip: Ipv4Addr) -> Option<String> {
    let r = d
        .routes
        .iter()
        .find(|r| r.prefix == u32::from(ip) && r.plen == 32)?;
    d.vifs
        .iter()
        .find(|v| v.nh == Some(r.route.nh))
        .map(|v| v.name.clone())
}

#[test]
fn a_secondary_ip_gets_its_route_and_passes_anti_spoofing_and_is_advertised() {
    let st = state();
    let mut dp = MemDataplane::new(u32::from(Ipv4Addr::new(10, 0, 0, 1)));
    let d = program(&st, &mut dp, &mut Allocations::default());
    let secondary = Ipv4Addr::new(10, 1, 1, 50);
    assert_eq!(routed_to(&d, secondary).as_deref(), Some("vif5.0"));
    let vif = d.vifs.iter().find(|v| v.name == "vif5.0").expect("vif");
    assert_eq!(
        vif.ip,
        u32::from(Ipv4Addr::new(10, 1, 1, 3)),
        "first stays fixed"
    );
    assert_eq!(
        vif.allowed,
        vec![
            AllowedSource {
                ip: u32::from(secondary),
                len: 32,
                mac: None
            },
            AllowedSource {
                ip: u32::from(VIP),
                len: 32,
                mac: Some("00:00:5e:00:01:01".parse().expect("mac")),
            },
        ]
    );
    // Nobody announced the VIP yet: no route for it.
    assert_eq!(routed_to(&d, VIP), None);
    let built = st.build(&settings());
    let idx = DumpIndex::new(dp.dump());
    let c = compile(
        &built.config,
        &idx,
        &mut Allocations::default(),
        &Limits::default(),
    )
    .expect("compile");
    let ads = adverts(&built.config, &c, &built.vmi_of_port);
    let prefixes: Vec<String> = ads.keys().map(|(_, p)| p.to_string()).collect();
    assert_eq!(prefixes, ["10.1.1.3/32", "10.1.1.4/32", "10.1.1.50/32"]);
}

#[test]
fn a_secondary_ip_another_interface_has_is_skipped_with_a_warning() {
    let mut st = state();
    let e = ev(
        2,
        &format!("iface/{VMI2}"),
        iface(VMI2, "02:00:00:00:01:04", &["10.1.1.4", "10.1.1.50"]),
        EventKind::Interface,
    );
    st.apply_watch(&WatchReply {
        rev: 2,
        reset: false,
        events: vec![e],
    });
    let b = st.build(&settings());
    assert_eq!(
        b.warnings,
        [format!(
            "interface vif6.0 (vmi {VMI2}): secondary ip 10.1.1.50 is already used"
        )]
    );
}

#[test]
fn the_vip_routes_to_its_claimant_and_yields_to_a_later_remote_announcement() {
    let mut st = state();
    let mut dp = MemDataplane::new(u32::from(Ipv4Addr::new(10, 0, 0, 1)));
    let mut alloc = Allocations::default();
    let claim = |port: &str, rev| Claim {
        port: port.into(),
        rev,
    };
    st.claims
        .insert((VRF.into(), VIP), claim("vif5.0", Some(10)));
    let d = program(&st, &mut dp, &mut alloc);
    assert_eq!(routed_to(&d, VIP).as_deref(), Some("vif5.0"));
    let labels_before = d.labels.clone();

    // The other member takes over on this host: the route follows, no label moves.
    st.claims.insert((VRF.into(), VIP), claim("vif6.0", None));
    let d = program(&st, &mut dp, &mut alloc);
    assert_eq!(routed_to(&d, VIP).as_deref(), Some("vif6.0"));
    assert_eq!(d.labels, labels_before);

    // A member on host h2 announced it before our advertisement (rev 10 < 12): we keep it.
    st.claims
        .insert((VRF.into(), VIP), claim("vif6.0", Some(12)));
    let remote = json!({"host": "h2", "vrf": VRF, "prefix": "10.1.1.100/32", "label": 40,
                        "nexthop": "10.0.0.2", "vmi_uuid": OTHER});
    let key = format!("route/{VRF}/10.1.1.100/32/h2");
    st.apply_watch(&WatchReply {
        rev: 11,
        reset: false,
        events: vec![ev(11, &key, remote.clone(), EventKind::Route)],
    });
    let b = st.build(&settings());
    assert!(b.yielded.is_empty());
    let d = program(&st, &mut dp, &mut alloc);
    assert_eq!(routed_to(&d, VIP).as_deref(), Some("vif6.0"));

    // h2 announces it again later (rev 13 > 12): we yield, and the VIP goes to h2's label.
    st.apply_watch(&WatchReply {
        rev: 13,
        reset: false,
        events: vec![ev(13, &key, remote, EventKind::Route)],
    });
    let b = st.build(&settings());
    assert_eq!(b.yielded, [(VRF.to_string(), VIP)]);
    st.claims.clear();
    let d = program(&st, &mut dp, &mut alloc);
    let r = d
        .routes
        .iter()
        .find(|r| r.prefix == u32::from(VIP))
        .expect("the VIP's route");
    assert_eq!(r.route.label, Some(40), "to h2's member");
    assert_eq!(d.labels, labels_before, "no label of ours moved");
}

#[test]
fn a_restarted_agent_keeps_the_vip_where_the_dataplane_routes_it_unless_another_host_claims_it() {
    let mut st = state();
    let mut dp = MemDataplane::new(u32::from(Ipv4Addr::new(10, 0, 0, 1)));
    let mut alloc = Allocations::default();
    st.claims.insert(
        (VRF.into(), VIP),
        Claim {
            port: "vif6.0".into(),
            rev: Some(7),
        },
    );
    program(&st, &mut dp, &mut alloc);

    // The restarted agent: no claims, a fresh allocator; the dataplane still routes the VIP.
    let mut st = state();
    let found = dataplane_vip_claims(&st, &DumpIndex::new(dp.dump()));
    assert_eq!(found, [((VRF.to_string(), VIP), "vif6.0".to_string())]);
    let mut claims = crate::vip::Claims::default();
    for (key, port) in found {
        assert!(claims.adopt(key, port));
    }
    st.claims = claims.owned().clone();
    let built = st.build(&settings());
    let idx = DumpIndex::new(dp.dump());
    let c = compile(
        &built.config,
        &idx,
        &mut Allocations::default(),
        &Limits::default(),
    )
    .expect("compile");
    assert_eq!(reconcile(&c.desired, &idx), [], "nothing moves");

    // Another host advertises the VIP (it claimed it while we were away): we yield.
    let remote = json!({"host": "h2", "vrf": VRF, "prefix": "10.1.1.100/32", "label": 40,
                        "nexthop": "10.0.0.2", "vmi_uuid": OTHER});
    st.apply_watch(&WatchReply {
        rev: 3,
        reset: false,
        events: vec![ev(
            3,
            &format!("route/{VRF}/10.1.1.100/32/h2"),
            remote,
            EventKind::Route,
        )],
    });
    assert_eq!(st.build(&settings()).yielded, [(VRF.to_string(), VIP)]);
}

#[test]
fn a_vm_is_routed_where_it_announced_itself_last_migrating_in_and_out() {
    let mut st = state();
    let mut dp = MemDataplane::new(u32::from(Ipv4Addr::new(10, 0, 0, 1)));
    let mut alloc = Allocations::default();
    // Host h2 still advertises vif5.0's VMI (the VM runs there until it resumes here).
    let there = json!({"host": "h2", "vrf": VRF, "prefix": "10.1.1.3/32", "label": 41,
                       "nexthop": "10.0.0.2", "vmi_uuid": VMI1});
    st.apply_watch(&WatchReply {
        rev: 5,
        reset: false,
        events: vec![ev(
            5,
            &format!("route/{VRF}/10.1.1.3/32/h2"),
            there,
            EventKind::Route,
        )],
    });
    let built = st.build(&settings());
    let i = built
        .config
        .interfaces
        .iter()
        .find(|i| i.name == "vif5.0")
        .expect("programmed");
    assert!(i.standby);
    let d = program(&st, &mut dp, &mut alloc);
    assert!(
        d.vifs.iter().any(|v| v.name == "vif5.0"),
        "the port is bound"
    );
    let r = d
        .routes
        .iter()
        .find(|r| r.prefix == u32::from(Ipv4Addr::new(10, 1, 1, 3)))
        .expect("a route");
    assert_eq!(r.route.label, Some(41), "still to the old host");
    let idx = DumpIndex::new(dp.dump());
    let c = compile(&built.config, &idx, &mut alloc, &Limits::default()).expect("compile");
    let ads = adverts(&built.config, &c, &built.vmi_of_port);
    assert!(
        !ads.keys().any(|(_, p)| p.to_string() == "10.1.1.3/32"),
        "not advertised: {ads:?}"
    );

    // The VM announced itself here (taken at watch revision 6, after h2's 5): routed here
    // and advertised.
    st.arrived.insert("vif5.0".into(), 6);
    let d = program(&st, &mut dp, &mut alloc);
    assert_eq!(
        routed_to(&d, Ipv4Addr::new(10, 1, 1, 3)).as_deref(),
        Some("vif5.0")
    );
    let labels_before = d.labels.clone();

    // It moves on to h3, which advertises it at revision 9: it left; routed there, no label
    // of ours moves (the vif stays until xenstore removes it).
    let gone = json!({"host": "h3", "vrf": VRF, "prefix": "10.1.1.3/32", "label": 42,
                      "nexthop": "10.0.0.2", "vmi_uuid": VMI1});
    st.apply_watch(&WatchReply {
        rev: 9,
        reset: false,
        events: vec![ev(
            9,
            &format!("route/{VRF}/10.1.1.3/32/h3"),
            gone,
            EventKind::Route,
        )],
    });
    let built = st.build(&settings());
    let i = built
        .config
        .interfaces
        .iter()
        .find(|i| i.name == "vif5.0")
        .expect("still programmed");
    assert!(i.standby, "the VM runs on h3");
    let d = program(&st, &mut dp, &mut alloc);
    let r = d
        .routes
        .iter()
        .find(|r| r.prefix == u32::from(Ipv4Addr::new(10, 1, 1, 3)))
        .expect("a route");
    assert_eq!(r.route.label, Some(42), "to h3");
    assert_eq!(d.labels, labels_before);
}
