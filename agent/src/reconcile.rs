//! The reconciler: the operations that turn what the dataplane holds into what the agent wants,
//! and nothing else. I/O-free.
//!
//! Order is make-before-break, so a change never opens a window without forwarding: adds and
//! replacements first, in dependency order (VRFs, interfaces, nexthops, labels, routes, floating
//! IPs, policies, VRF flow configurations), then removals in reverse (VRF flow configurations,
//! policies, floating IPs, routes, labels, nexthops, interfaces, VRFs).
//! Objects the daemon owns ([`DumpIndex`]) are never touched. An object that is already right
//! yields no operation, so reconciling a correct dataplane is empty: an agent restarted over a
//! forwarding dataplane changes nothing.

use crate::compile::Desired;
use crate::dump::DumpIndex;
use std::collections::{HashMap, HashSet};
use vrouter_dataplane::tables::{NexthopSpec, TableOp};

/// Operation counts of a reconcile, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Adds or replacements.
    pub adds: usize,
    /// Removals.
    pub dels: usize,
}

impl std::fmt::Display for Summary {
    /// `3 adds/changes, 1 removals`: the agent's reconcile log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} adds/changes, {} removals", self.adds, self.dels)
    }
}

/// The operations that make `dp` equal `want` (for everything the agent owns).
pub fn reconcile(want: &Desired, dp: &DumpIndex) -> Vec<TableOp> {
    let mut ops = Vec::new();
    add_forwarding(want, dp, &mut ops);
    add_policies(want, dp, &mut ops);
    remove_policies(want, dp, &mut ops);
    remove_forwarding(want, dp, &mut ops);
    ops
}

/// Adds or replaces the forwarding tables' entries that differ, each table after those its
/// entries refer to.
fn add_forwarding(want: &Desired, dp: &DumpIndex, ops: &mut Vec<TableOp>) {
    let d = &dp.dump;
    let have_vrfs: HashMap<u16, &str> = d.vrfs.iter().map(|v| (v.id, v.name.as_str())).collect();
    for (id, name) in &want.vrfs {
        if have_vrfs.get(id) != Some(&name.as_str()) {
            ops.push(TableOp::AddVrf {
                id: *id,
                name: name.clone(),
            });
        }
    }
    let have_vifs: HashMap<u16, _> = d.vifs.iter().map(|v| (v.id, v)).collect();
    for (id, spec) in &want.vifs {
        if have_vifs.get(id) != Some(&spec) {
            ops.push(TableOp::AddVif(spec.clone()));
        }
    }
    // Composites after every other nexthop: their members must exist when they are added.
    let (plain, composites): (Vec<_>, Vec<_>) = want
        .nhs
        .iter()
        .partition(|(_, s)| !matches!(s, NexthopSpec::Composite { .. }));
    for (id, spec) in plain.into_iter().chain(composites) {
        if dp.nhs.get(id) != Some(spec) {
            ops.push(TableOp::AddNh {
                id: *id,
                spec: spec.clone(),
            });
        }
    }
    let have_labels: HashMap<u32, u32> = d.labels.iter().copied().collect();
    for (label, nh) in &want.labels {
        if have_labels.get(label) != Some(nh) {
            ops.push(TableOp::AddLabel {
                label: *label,
                nh: *nh,
            });
        }
    }
    add_routes_and_fips(want, dp, ops);
}

/// Adds or replaces the routes and floating IPs that differ.
fn add_routes_and_fips(want: &Desired, dp: &DumpIndex, ops: &mut Vec<TableOp>) {
    let d = &dp.dump;
    let have_routes: HashMap<(u16, u32, u8), _> = d
        .routes
        .iter()
        .map(|r| ((r.vrf, r.prefix, r.plen), r.route))
        .collect();
    for (&(vrf, prefix, plen), route) in &want.routes {
        if have_routes.get(&(vrf, prefix, plen)) != Some(route) {
            ops.push(TableOp::AddRoute {
                vrf,
                prefix,
                plen,
                route: *route,
            });
        }
    }
    let have_fips: HashMap<(u16, u32), _> = d.fips.iter().map(|f| ((f.vrf, f.fip), f)).collect();
    for (key, f) in &want.fips {
        if have_fips.get(key) != Some(&f) {
            ops.push(TableOp::AddFip(*f));
        }
    }
}

/// Sets the policies that differ, after the VRFs they attach to; a VRF's flow configuration
/// after its policy.
fn add_policies(want: &Desired, dp: &DumpIndex, ops: &mut Vec<TableOp>) {
    let d = &dp.dump;
    let have_pols: HashMap<u32, _> = d.policies.iter().map(|p| (p.id, p)).collect();
    for (id, p) in &want.policies {
        if have_pols.get(id) != Some(&p) {
            ops.push(TableOp::SetPolicy(p.clone()));
        }
    }
    let have_vps: HashMap<u16, _> = d.vrf_policies.iter().map(|(v, p)| (*v, p)).collect();
    for (vrf, p) in &want.vrf_policies {
        if have_vps.get(vrf) != Some(&p) {
            ops.push(TableOp::SetVrfPolicy {
                vrf: *vrf,
                policy: Some(p.clone()),
            });
        }
    }
}

/// Removes flow configurations no longer wanted, then the policies no VRF uses any more
/// (before their VRFs go). Policies a daemon-owned VRF uses stay.
fn remove_policies(want: &Desired, dp: &DumpIndex, ops: &mut Vec<TableOp>) {
    let d = &dp.dump;
    let mut kept_pols: HashSet<u32> = want.policies.keys().copied().collect();
    for (vrf, p) in &d.vrf_policies {
        if dp.protected_vrfs.contains(vrf) {
            kept_pols.extend(p.policies.iter().copied());
        } else if !want.vrf_policies.contains_key(vrf) {
            ops.push(TableOp::SetVrfPolicy {
                vrf: *vrf,
                policy: None,
            });
        }
    }
    for p in &d.policies {
        if !kept_pols.contains(&p.id) {
            ops.push(TableOp::DelPolicy(p.id));
        }
    }
}

/// Removes what is no longer wanted, users before what they use: floating IPs, routes,
/// labels, nexthops, interfaces, VRFs. Routes of removed VRFs go with their VRF.
fn remove_forwarding(want: &Desired, dp: &DumpIndex, ops: &mut Vec<TableOp>) {
    let d = &dp.dump;
    let dead_vrfs: HashSet<u16> = d
        .vrfs
        .iter()
        .map(|v| v.id)
        .filter(|id| !want.vrfs.contains_key(id) && !dp.protected_vrfs.contains(id))
        .collect();
    for f in &d.fips {
        if !want.fips.contains_key(&(f.vrf, f.fip)) {
            ops.push(TableOp::DelFip {
                vrf: f.vrf,
                fip: f.fip,
            });
        }
    }
    for r in &d.routes {
        if (dp.protected_vrfs.contains(&r.vrf) && !dp.agent_route(r)) || dead_vrfs.contains(&r.vrf)
        {
            continue; // the daemon's, or cleared with their VRF
        }
        if !want.routes.contains_key(&(r.vrf, r.prefix, r.plen)) {
            ops.push(TableOp::DelRoute {
                vrf: r.vrf,
                prefix: r.prefix,
                plen: r.plen,
            });
        }
    }
    for (label, nh) in &d.labels {
        if !want.labels.contains_key(label) && !dp.label_protected(*nh) {
            ops.push(TableOp::DelLabel(*label));
        }
    }
    for n in &d.nhs {
        if n.id != 0 && !want.nhs.contains_key(&n.id) && !dp.protected_nhs.contains(&n.id) {
            ops.push(TableOp::DelNh(n.id));
        }
    }
    for v in &d.vifs {
        if !want.vifs.contains_key(&v.id) && !dp.infra_vifs.contains(&v.id) {
            ops.push(TableOp::DelVif(v.id));
        }
    }
    let mut dead: Vec<u16> = dead_vrfs.into_iter().collect();
    dead.sort_unstable();
    ops.extend(dead.into_iter().map(TableOp::DelVrf));
}

/// Counts adds and removals.
pub fn summarize(ops: &[TableOp]) -> Summary {
    let dels = ops
        .iter()
        .filter(|o| {
            matches!(
                o,
                TableOp::DelVrf(_)
                    | TableOp::DelVif(_)
                    | TableOp::DelNh(_)
                    | TableOp::DelRoute { .. }
                    | TableOp::DelLabel(_)
                    | TableOp::DelFip { .. }
                    | TableOp::DelPolicy(_)
                    | TableOp::SetVrfPolicy { policy: None, .. }
            )
        })
        .count();
    Summary {
        adds: ops.len() - dels,
        dels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc::Allocations;
    use crate::compile::{compile, Compiled};
    use crate::config::Config;
    use crate::testkit::MemDataplane;
    use std::net::Ipv4Addr;
    use vrouter_dataplane::tables::{Limits, NexthopSpec, Route, TunnelKind, VROUTER_MAC};

    const FABRIC_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);

    const CFG: &str = r#"
[underlay]
gateway_mac = "52:54:00:cc:dd:01"
[underlay.neighbours]
"10.0.0.12" = "52:54:00:cc:dd:02"

[[networks]]
name = "net1"
vrf = "default-domain:admin:net1"
subnet = "10.1.1.0/24"

[[networks]]
name = "public"
subnet = "192.0.2.0/24"

[[interfaces]]
name = "vif1.0"
mac = "02:00:00:00:01:03"
ip = "10.1.1.3"
network = "net1"

[[interfaces]]
name = "vif2.0"
mac = "02:00:00:00:01:05"
ip = "10.1.1.5"
network = "net1"

[[routes]]
network = "net1"
prefix = "10.1.1.4/32"
label = 25
remote = "10.0.0.12"
encap = "mpls-over-gre"

[[routes]]
network = "net1"
prefix = "10.9.0.0/16"
label = 26
remote = "10.0.0.13"

[[floating_ips]]
network = "public"
address = "192.0.2.10"
interface = "vif1.0"
"#;

    fn pass(
        cfg: &Config,
        dp: &mut MemDataplane,
        alloc: &mut Allocations,
    ) -> (Vec<TableOp>, Compiled) {
        let idx = DumpIndex::new(dp.dump());
        let c = compile(cfg, &idx, alloc, &Limits::default()).expect("ids");
        let ops = reconcile(&c.desired, &idx);
        dp.apply(ops.clone())
            .expect("dataplane accepts the reconcile");
        (ops, c)
    }

    fn cfg(text: &str) -> Config {
        Config::parse(text).expect("valid config")
    }

    #[test]
    fn programs_what_the_design_says() {
        let mut dp = MemDataplane::new(FABRIC_IP.into());
        let mut alloc = Allocations::default();
        let (ops, c) = pass(&cfg(CFG), &mut dp, &mut alloc);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert!(!ops.is_empty());
        let d = dp.dump();
        let b = &c.bindings[0];
        assert_eq!(
            (b.name.as_str(), b.vif),
            ("vif1.0", 3),
            "first id after the daemon's vifs"
        );
        let vif = d.vifs.iter().find(|v| v.name == "vif1.0").expect("vif");
        assert_eq!(vif.nh, Some(b.nh));
        assert_eq!(vif.ip, u32::from(Ipv4Addr::new(10, 1, 1, 3)));
        let nh = |id: u32| d.nhs.iter().find(|n| n.id == id).map(|n| n.spec.clone());
        assert_eq!(
            nh(b.nh),
            Some(NexthopSpec::Encap {
                oif: 3,
                dmac: vif.mac,
                smac: VROUTER_MAC
            })
        );
        assert!(b.label >= 16);
        assert!(d.labels.contains(&(b.label, b.nh)));
        let route = |vrf: u16, a: [u8; 4], plen: u8| {
            d.routes
                .iter()
                .find(|r| {
                    r.vrf == vrf && r.prefix == u32::from(Ipv4Addr::from(a)) && r.plen == plen
                })
                .map(|r| r.route)
        };
        assert_eq!(
            route(b.vrf, [10, 1, 1, 3], 32),
            Some(Route {
                nh: b.nh,
                label: None,
                proxy_arp: true
            })
        );
        let gw = route(b.vrf, [10, 1, 1, 1], 32).expect("gateway route");
        assert_eq!(nh(gw.nh), Some(NexthopSpec::Receive { oif: 2 }));
        let remote = route(b.vrf, [10, 1, 1, 4], 32).expect("remote route");
        assert_eq!(remote.label, Some(25));
        match nh(remote.nh) {
            Some(NexthopSpec::Tunnel {
                oif,
                kind,
                sip,
                dip,
                dmac,
                smac,
            }) => {
                assert_eq!((oif, kind), (0, TunnelKind::MplsOverGre));
                assert_eq!(
                    (sip, dip),
                    (FABRIC_IP.into(), Ipv4Addr::new(10, 0, 0, 12).into())
                );
                assert_eq!(dmac.to_string(), "52:54:00:cc:dd:02");
                assert_eq!(smac, crate::testkit::FABRIC_MAC);
            }
            other => panic!("not a tunnel: {other:?}"),
        }
        let wide = route(b.vrf, [10, 9, 0, 0], 16).expect("remote /16");
        match nh(wide.nh) {
            Some(NexthopSpec::Tunnel { kind, dmac, .. }) => {
                assert_eq!(kind, TunnelKind::MplsOverUdp);
                assert_eq!(dmac.to_string(), "52:54:00:cc:dd:01", "default gateway MAC");
            }
            other => panic!("not a tunnel: {other:?}"),
        }
        let public = *dp
            .dump()
            .vrfs
            .iter()
            .find(|v| v.name == "public")
            .map(|v| &v.id)
            .expect("vrf");
        assert_eq!(d.fips.len(), 1);
        assert_eq!(d.fips[0].vif, 3);
        assert_eq!(d.fips[0].vrf, public);
        let table = c.table_labels["public"];
        let tnh = d
            .labels
            .iter()
            .find(|(l, _)| *l == table)
            .map(|(_, n)| *n)
            .expect("table label");
        assert_eq!(nh(tnh), Some(NexthopSpec::VrfTranslate { vrf: public }));
    }

    #[test]
    fn a_correct_dataplane_gets_zero_ops() {
        let mut dp = MemDataplane::new(FABRIC_IP.into());
        let mut alloc = Allocations::default();
        let c = cfg(CFG);
        pass(&c, &mut dp, &mut alloc);
        let (ops, _) = pass(&c, &mut dp, &mut alloc);
        assert_eq!(ops, vec![]);
    }

    #[test]
    fn changing_one_interface_touches_only_it() {
        let mut dp = MemDataplane::new(FABRIC_IP.into());
        let mut alloc = Allocations::default();
        let (_, before) = pass(&cfg(CFG), &mut dp, &mut alloc);
        let changed = CFG.replace("02:00:00:00:01:05", "02:00:00:00:01:55");
        let (ops, after) = pass(&cfg(&changed), &mut dp, &mut alloc);
        let b = &after.bindings[1];
        assert_eq!(ops.len(), 2, "{ops:#?}");
        assert!(matches!(&ops[0], TableOp::AddVif(v) if v.id == b.vif));
        assert!(matches!(&ops[1], TableOp::AddNh { id, .. } if *id == b.nh));
        assert_eq!(before.bindings, after.bindings, "no id or label moves");
    }

    #[test]
    fn adding_and_removing_an_interface_emit_only_its_ops() {
        let mut dp = MemDataplane::new(FABRIC_IP.into());
        let mut alloc = Allocations::default();
        pass(&cfg(CFG), &mut dp, &mut alloc);
        let more = format!(
            "{CFG}\n[[interfaces]]\nname = \"vif3.0\"\nmac = \"02:00:00:00:01:07\"\nip = \"10.1.1.7\"\nnetwork = \"net1\"\n"
        );
        let (ops, c) = pass(&cfg(&more), &mut dp, &mut alloc);
        assert_eq!(ops.len(), 4, "vif, nh, label, route: {ops:#?}");
        assert_eq!(summarize(&ops), Summary { adds: 4, dels: 0 });
        let b = c
            .bindings
            .iter()
            .find(|b| b.name == "vif3.0")
            .expect("bound");
        let (ops, _) = pass(&cfg(CFG), &mut dp, &mut alloc);
        assert_eq!(
            ops,
            vec![
                TableOp::DelRoute {
                    vrf: b.vrf,
                    prefix: u32::from(Ipv4Addr::new(10, 1, 1, 7)),
                    plen: 32
                },
                TableOp::DelLabel(b.label),
                TableOp::DelNh(b.nh),
                TableOp::DelVif(b.vif),
            ]
        );
    }

    #[test]
    fn labels_survive_agent_and_dataplane_restarts() {
        let mut dp = MemDataplane::new(FABRIC_IP.into());
        let mut alloc = Allocations::default();
        let c = cfg(CFG);
        let (_, first) = pass(&c, &mut dp, &mut alloc);

        // Agent restart without its state file: everything is adopted from the dataplane.
        let mut lost = Allocations::default();
        let (ops, again) = pass(&c, &mut dp, &mut lost);
        assert_eq!(ops, vec![]);
        assert_eq!(again.bindings, first.bindings);

        // Agent restart with a state file that disagrees: the dataplane still wins.
        let mut stale = alloc.clone();
        for l in stale.labels.values_mut() {
            *l += 1000;
        }
        let (ops, again) = pass(&c, &mut dp, &mut stale);
        assert_eq!(ops, vec![]);
        assert_eq!(again.bindings, first.bindings);

        // Dataplane restart (empty tables): the state file gives the same ids back.
        let mut fresh = MemDataplane::new(FABRIC_IP.into());
        let (ops, again) = pass(&c, &mut fresh, &mut alloc);
        assert!(!ops.is_empty());
        assert_eq!(again.bindings, first.bindings);
        assert_eq!(again.table_labels, first.table_labels);
        assert_eq!(fresh.dump(), dp.dump());
    }

    #[test]
    fn tunnel_nexthop_ids_survive_a_restart_with_a_stale_state_file() {
        let mut dp = MemDataplane::new(FABRIC_IP.into());
        let mut alloc = Allocations::default();
        let c = cfg(CFG);
        pass(&c, &mut dp, &mut alloc);
        let programmed = dp.dump();
        let tunnels = |a: &Allocations| -> Vec<(String, u32)> {
            a.nhs
                .iter()
                .filter(|(k, _)| k.starts_with("tunnel/"))
                .map(|(k, v)| (k.clone(), *v))
                .collect()
        };
        let before = tunnels(&alloc);
        assert_eq!(before.len(), 2, "{before:?}");
        // A state file from another time: the two tunnels' ids swapped, the labels moved.
        let mut stale = alloc.clone();
        stale.nhs.insert(before[0].0.clone(), before[1].1);
        stale.nhs.insert(before[1].0.clone(), before[0].1);
        stale.next_label += 7;
        let (ops, _) = pass(&c, &mut dp, &mut stale);
        assert_eq!(ops, vec![], "a restart changes nothing");
        assert_eq!(summarize(&ops).to_string(), "0 adds/changes, 0 removals");
        assert_eq!(
            tunnels(&stale),
            before,
            "the dataplane's ids win and are kept"
        );
        assert_eq!(stale.labels, alloc.labels);
        assert_eq!(dp.dump(), programmed);
    }

    #[test]
    fn a_restart_that_lost_remote_routes_would_remove_them_and_their_tunnels() {
        // What the first pass of a restarted agent that does not know the underlay MACs yet
        // would do (the controller source prevents it by adopting the dataplane's MACs).
        let mut dp = MemDataplane::new(FABRIC_IP.into());
        let mut alloc = Allocations::default();
        pass(&cfg(CFG), &mut dp, &mut alloc);
        let mut lost = cfg(CFG);
        lost.routes.clear();
        let (ops, _) = pass(&lost, &mut dp, &mut Allocations::default());
        assert_eq!(summarize(&ops), Summary { adds: 0, dels: 4 }, "{ops:#?}");
        assert_eq!(
            summarize(&ops).to_string(),
            "0 adds/changes, 4 removals",
            "2 routes, 2 tunnels"
        );
    }

    #[test]
    fn empty_config_removes_everything_but_the_daemons_own() {
        let mut dp = MemDataplane::new(FABRIC_IP.into());
        let infra = dp.dump();
        let mut alloc = Allocations::default();
        pass(&cfg(CFG), &mut dp, &mut alloc);
        let (ops, _) = pass(&Config::default(), &mut dp, &mut alloc);
        assert!(!ops.is_empty());
        assert_eq!(dp.dump(), infra);
        assert_eq!(
            alloc.vifs.len() + alloc.labels.len() + alloc.nhs.len() + alloc.vrfs.len(),
            0
        );
    }

    #[test]
    fn moving_an_interface_to_another_network_keeps_its_label() {
        let mut dp = MemDataplane::new(FABRIC_IP.into());
        let mut alloc = Allocations::default();
        let base = format!("{CFG}\n[[networks]]\nname = \"net2\"\nsubnet = \"10.2.0.0/24\"\n");
        let (_, before) = pass(&cfg(&base), &mut dp, &mut alloc);
        let moved = base.replace(
            "ip = \"10.1.1.5\"\nnetwork = \"net1\"",
            "ip = \"10.2.0.5\"\nnetwork = \"net2\"",
        );
        let (ops, after) = pass(&cfg(&moved), &mut dp, &mut alloc);
        assert_eq!(before.bindings[1].label, after.bindings[1].label);
        assert_ne!(before.bindings[1].vrf, after.bindings[1].vrf);
        // vif, route add, old route delete.
        assert_eq!(ops.len(), 3, "{ops:#?}");
    }
}
