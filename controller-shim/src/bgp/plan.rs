// SPDX-License-Identifier: Apache-2.0
//! What the speaker does, read from the config objects and the agents' routes: our AS, the
//! neighbours (`bgp-router` objects, as `provision_mx.py` creates them) and the VPN-IPv4
//! routes every neighbour gets. Free of I/O: the speaker calls it under the core's lock.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde_json::Value;

use super::codec::PathAttrs;
use super::session::{Exports, Peer};
use super::types::{Encap, Rd, RouteTarget, VpnKey, VpnRoute};
use crate::core::Core;
use crate::graph::Obj;
use crate::schema::ObjType;
use vrouter_api::agent::{Route, RouteEncap, GATEWAY_ORIGIN};
use vrouter_api::Label;

/// Which networks import a route target: target → VRF names (a network's fq_name with `:`).
pub type Imports = BTreeMap<RouteTarget, BTreeSet<String>>;

/// The cloud's AS when `global-system-config.autonomous_system` is not set (Contrail's).
pub const DEFAULT_ASN: u32 = 64512;

/// Our AS and our neighbours, with what was wrong in the objects that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Our AS.
    pub asn: u32,
    /// Neighbours by address.
    pub peers: Vec<Peer>,
    /// One line per unusable `bgp-router` or route target, for the log.
    pub problems: Vec<String>,
}

/// Our AS and neighbours. Our own `bgp-router` (address = our router-id) and other control
/// nodes are not neighbours; a router must carry `inet-vpn` when it lists families.
pub fn plan(core: &Core, router_id: Ipv4Addr) -> Plan {
    let g = core.graph();
    let asn = g
        .of_type(ObjType::GlobalSystemConfig)
        .find_map(|o| o.props.get("autonomous_system").and_then(Value::as_u64))
        .and_then(|a| u32::try_from(a).ok())
        .filter(|a| *a != 0)
        .unwrap_or(DEFAULT_ASN);
    let mut out = Plan {
        asn,
        ..Plan::default()
    };
    for o in g.of_type(ObjType::BgpRouter) {
        match peer_of(o) {
            Ok(Some(p)) if p.address != router_id => out.peers.push(p),
            Ok(_) => {}
            Err(why) => out
                .problems
                .push(format!("bgp-router {}: {why}", o.fq_name.join(":"))),
        }
    }
    out.peers.sort_by_key(|p| p.address);
    out.peers.dedup_by_key(|p| p.address);
    out
}

/// A neighbour from a `bgp-router`; `None` for a control node or a router without VPN-IPv4.
fn peer_of(o: &Obj) -> Result<Option<Peer>, String> {
    let p = o
        .props
        .get("bgp_router_parameters")
        .ok_or("no bgp_router_parameters")?;
    if p.get("router_type").and_then(Value::as_str) == Some("control-node") {
        return Ok(None);
    }
    if let Some(fams) = p
        .get("address_families")
        .and_then(|f| f.get("family"))
        .and_then(Value::as_array)
    {
        if !fams.iter().any(|f| f.as_str() == Some("inet-vpn")) {
            return Ok(None);
        }
    }
    let address: Ipv4Addr = p
        .get("address")
        .and_then(Value::as_str)
        .ok_or("bgp_router_parameters.address missing")?
        .parse()
        .map_err(|_| "bgp_router_parameters.address is not an IPv4 address")?;
    if address.is_unspecified() || address.is_multicast() || address.is_broadcast() {
        return Err(format!(
            "bgp_router_parameters.address {address} is not a unicast address"
        ));
    }
    let asn = p
        .get("autonomous_system")
        .and_then(Value::as_u64)
        .and_then(|a| u32::try_from(a).ok())
        .filter(|a| *a != 0)
        .ok_or("bgp_router_parameters.autonomous_system must be 1..4294967295")?;
    let identifier = match p.get("identifier").and_then(Value::as_str) {
        None | Some("") => None,
        Some(s) => Some(s.parse::<Ipv4Addr>().map_err(|_| {
            format!("bgp_router_parameters.identifier {s:?} is not an IPv4 address")
        })?),
    };
    // Contrail: 0 (or absent) means the default.
    let hold_time = p
        .get("hold_time")
        .and_then(Value::as_u64)
        .map(|h| u16::try_from(h).unwrap_or(u16::MAX))
        .unwrap_or(0);
    if hold_time != 0 && hold_time < 3 {
        return Err(format!(
            "bgp_router_parameters.hold_time {hold_time} is under 3 seconds"
        ));
    }
    let port = match p.get("port").and_then(Value::as_u64) {
        None | Some(0) => 179,
        Some(n) => u16::try_from(n).map_err(|_| format!("bgp_router_parameters.port {n}"))?,
    };
    Ok(Some(Peer {
        address,
        port,
        asn,
        identifier,
        hold_time,
    }))
}

/// Encapsulations every compute host accepts, in the order we prefer them.
const HOST_ENCAPS: [Encap; 2] = [Encap::MplsOverUdp, Encap::MplsOverGre];

/// The route targets of a network: its `route_target_list`, else `target:<AS>:<network id>`.
pub fn network_targets(vn: &Obj, asn: u32, problems: &mut Vec<String>) -> Vec<RouteTarget> {
    let listed = vn
        .props
        .get("route_target_list")
        .and_then(|l| l.get("route_target"))
        .and_then(Value::as_array);
    let mut out = Vec::new();
    for rt in listed.into_iter().flatten() {
        match rt.as_str().map(str::parse::<RouteTarget>) {
            Some(Ok(t)) => out.push(t),
            _ => problems.push(format!(
                "virtual-network {}: route target {rt} is not target:<AS>:<number>",
                vn.fq_name.join(":")
            )),
        }
    }
    if out.is_empty() {
        if let Some(id) = network_id(vn) {
            out.push(RouteTarget::asn(asn, id));
        }
    }
    out
}

fn network_id(vn: &Obj) -> Option<u32> {
    vn.props
        .get("virtual_network_network_id")
        .and_then(Value::as_u64)
        .and_then(|i| u32::try_from(i).ok())
}

/// Every route the agents advertise, as VPN-IPv4: RD `<router-id>:<network id>`, the
/// network's route targets, the label, the host as next hop. Routes of CloudStack's own
/// networks (ip-fabric, link-local) stay inside.
pub fn exports(core: &Core, router_id: Ipv4Addr, asn: u32, problems: &mut Vec<String>) -> Exports {
    let g = core.graph();
    let mut out = Exports::new();
    for r in core.list_routes(None).routes {
        // We are no route reflector: what a gateway taught us goes to the hosts only.
        if r.host.starts_with(GATEWAY_ORIGIN) {
            continue;
        }
        let fq: Vec<String> = r.vrf.split(':').map(str::to_string).collect();
        let Some(vn) = g
            .lookup(ObjType::VirtualNetwork, &fq)
            .and_then(|u| g.get(u))
        else {
            continue;
        };
        if vn.is_fabric_vn() {
            continue;
        }
        let Some(id) = network_id(vn).and_then(|i| u16::try_from(i).ok()) else {
            problems.push(format!(
                "virtual-network {}: no virtual_network_network_id under 65536, not exported",
                r.vrf
            ));
            continue;
        };
        let attrs = PathAttrs {
            nexthop: r.nexthop,
            targets: network_targets(vn, asn, problems),
            encaps: HOST_ENCAPS.to_vec(),
        };
        let key = VpnKey {
            rd: Rd::ip(router_id, id),
            prefix: r.prefix,
        };
        out.insert(key, (attrs, r.label.get()));
    }
    problems.sort();
    problems.dedup();
    out
}

/// The route targets each tenant network imports (its own, as [`network_targets`] gives them).
pub fn imports(core: &Core, asn: u32, problems: &mut Vec<String>) -> Imports {
    let mut out = Imports::new();
    for vn in core.graph().of_type(ObjType::VirtualNetwork) {
        if vn.is_fabric_vn() {
            continue;
        }
        for t in network_targets(vn, asn, problems) {
            out.entry(t).or_default().insert(vn.fq_name.join(":"));
        }
    }
    out
}

/// The origin of a neighbour's routes in the shim's route table.
pub fn origin(peer: Ipv4Addr) -> String {
    format!("{GATEWAY_ORIGIN}{peer}")
}

/// What a neighbour's routes become on the hosts: one route per importing network, to the
/// neighbour's next hop with its label and encapsulation (MPLS in GRE when it names none, or
/// none we speak). Our own routes reflected back (our RD) and routes without a usable label
/// are not imported.
pub fn imported<'a>(
    peer: Ipv4Addr,
    learned: impl IntoIterator<Item = &'a VpnRoute>,
    imports: &Imports,
    router_id: Ipv4Addr,
) -> Vec<Route> {
    let host = origin(peer);
    let mut out = Vec::new();
    for r in learned {
        if r.key.rd.0[..6] == Rd::ip(router_id, 0).0[..6] {
            continue;
        }
        let Some(label) = Label::new(r.label).ok() else {
            continue;
        };
        let encap = match r.encaps.first() {
            Some(Encap::MplsOverUdp) => RouteEncap::MplsOverUdp,
            Some(Encap::MplsOverGre) | None => RouteEncap::MplsOverGre,
        };
        let vrfs: BTreeSet<&String> = r
            .targets
            .iter()
            .filter_map(|t| imports.get(t))
            .flatten()
            .collect();
        for vrf in vrfs {
            out.push(Route {
                host: host.clone(),
                vrf: vrf.clone(),
                prefix: r.key.prefix,
                label,
                nexthop: r.nexthop,
                vmi_uuid: None,
                encap: Some(encap),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Ctx;
    use serde_json::json;

    fn ctx(n: u32) -> Ctx {
        Ctx {
            now_us: 0,
            new_uuid: format!("00000000-0000-4000-8000-{n:012}"),
            base: "http://127.0.0.1:8082".into(),
        }
    }

    fn core_with_routers(routers: &[Value]) -> Core {
        let mut c = Core::new();
        let mut n = 0;
        c.bootstrap(&ctx(0), || {
            n += 1;
            format!("00000000-0000-4000-9000-{n:012}")
        });
        for (i, p) in routers.iter().enumerate() {
            let body = json!({"bgp-router": {
                "fq_name": ["default-domain", "default-project", "ip-fabric", "__default__", format!("r{i}")],
                "parent_type": "routing-instance",
                "bgp_router_parameters": p,
            }});
            c.create(ObjType::BgpRouter, &body, &ctx(100 + i as u32))
                .expect("bgp-router created");
        }
        c
    }

    #[test]
    fn gateways_are_neighbours_and_our_own_router_and_control_nodes_are_not() {
        let c = core_with_routers(&[
            json!({"address": "10.9.0.1", "autonomous_system": 64512, "vendor": "contrail",
                   "router_type": "control-node"}),
            json!({"address": "10.9.0.2", "autonomous_system": 64512, "identifier": "10.9.0.2",
                   "vendor": "mx", "hold_time": 0,
                   "address_families": {"family": ["route-target", "inet-vpn"]}}),
            json!({"address": "10.9.0.3", "autonomous_system": 65001}),
            json!({"address": "10.9.0.1", "autonomous_system": 64512}),
            json!({"address": "10.9.0.4", "autonomous_system": 65002,
                   "address_families": {"family": ["e-vpn"]}}),
        ]);
        let p = plan(&c, Ipv4Addr::new(10, 9, 0, 1));
        assert_eq!(p.asn, DEFAULT_ASN);
        let addrs: Vec<Ipv4Addr> = p.peers.iter().map(|p| p.address).collect();
        assert_eq!(
            addrs,
            [Ipv4Addr::new(10, 9, 0, 2), Ipv4Addr::new(10, 9, 0, 3)]
        );
        assert_eq!(p.peers[0].identifier, Some(Ipv4Addr::new(10, 9, 0, 2)));
        assert_eq!(p.peers[1].asn, 65001);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
    }

    #[test]
    fn unusable_routers_are_named_in_the_problems() {
        let c = core_with_routers(&[
            json!({"address": "gateway", "autonomous_system": 64512}),
            json!({"address": "10.9.0.5"}),
            json!({"address": "10.9.0.6", "autonomous_system": 64512, "hold_time": 1}),
        ]);
        let p = plan(&c, Ipv4Addr::new(10, 9, 0, 1));
        assert!(p.peers.is_empty());
        assert_eq!(p.problems.len(), 3, "{:?}", p.problems);
        assert!(p.problems[0].contains("r0") && p.problems[0].contains("address"));
    }

    #[test]
    fn a_network_without_route_targets_gets_target_as_network_id() {
        let mut problems = Vec::new();
        let vn = Obj {
            ty: ObjType::VirtualNetwork,
            uuid: String::new(),
            fq_name: vec!["d".into(), "p".into(), "n".into()],
            parent_type: None,
            parent_uuid: None,
            lenient_parent: false,
            props: serde_json::from_value(json!({"virtual_network_network_id": 7})).expect("props"),
            refs: Default::default(),
        };
        let rts = network_targets(&vn, 64512, &mut problems);
        assert_eq!(
            rts,
            vec!["target:64512:7".parse::<RouteTarget>().expect("rt")]
        );
        let mut vn2 = vn.clone();
        vn2.props.insert(
            "route_target_list".into(),
            json!({"route_target": ["target:64512:100", "bogus"]}),
        );
        let rts = network_targets(&vn2, 64512, &mut problems);
        assert_eq!(
            rts,
            vec!["target:64512:100".parse::<RouteTarget>().expect("rt")]
        );
        assert_eq!(problems.len(), 1);
    }

    #[test]
    fn gateway_routes_go_to_every_importing_network_but_our_own_come_back_to_nobody() {
        let rt = |n| RouteTarget::asn(64512, n);
        let mut imp = Imports::new();
        imp.entry(rt(7)).or_default().insert("d:p:web".to_string());
        imp.entry(rt(8)).or_default().insert("d:p:db".to_string());
        imp.entry(rt(8)).or_default().insert("d:p:web".to_string());
        let me = Ipv4Addr::new(10, 9, 0, 1);
        let gw = Ipv4Addr::new(10, 9, 0, 2);
        let route = |rd: Rd, targets: Vec<RouteTarget>, encaps: Vec<Encap>| VpnRoute {
            key: VpnKey {
                rd,
                prefix: "0.0.0.0/0".parse().expect("prefix"),
            },
            label: 300,
            nexthop: gw,
            targets,
            encaps,
        };
        let learned = [
            route(Rd::asn(65001, 1), vec![rt(7), rt(8)], vec![]),
            route(Rd::asn(65001, 2), vec![rt(9)], vec![Encap::MplsOverUdp]),
            route(Rd::ip(me, 7), vec![rt(7)], vec![]),
        ];
        let out = imported(gw, &learned, &imp, me);
        let got: Vec<(&str, &str, Option<RouteEncap>)> = out
            .iter()
            .map(|r| (r.host.as_str(), r.vrf.as_str(), r.encap))
            .collect();
        assert_eq!(
            got,
            [
                ("bgp:10.9.0.2", "d:p:db", Some(RouteEncap::MplsOverGre)),
                ("bgp:10.9.0.2", "d:p:web", Some(RouteEncap::MplsOverGre)),
            ]
        );
        assert!(out.iter().all(|r| r.label.get() == 300 && r.nexthop == gw));
    }
}
