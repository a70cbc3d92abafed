//! Desired state: what the dataplane must hold for a configuration. I/O-free: a [`Config`], what
//! the dataplane reported ([`DumpIndex`]) and the allocations in, tables out.
//!
//! For a network with gateway G and a local interface I (MAC m, IP a) this yields: the VRF; the
//! virtual vif; an Encap nexthop (dmac m, smac the vRouter MAC) and I's label pointing at it;
//! a/32 -> that nexthop with proxy ARP; G/32 -> a Receive nexthop to the agent vif (the dataplane
//! answers ARP for G, packets to G are trapped). Remote routes share one Tunnel nexthop per
//! (remote host, encapsulation) and carry the remote's label. A network with floating IPs gets a
//! table label (-> VrfTranslate into its VRF) for remote hosts to send floating-IP traffic with,
//! and each floating IP gets its FIP entry plus fip/32 -> the interface's nexthop in the public
//! VRF (for proxy ARP).
//!
//! A network with a policy (`Network::policy`) gets one dataplane [`Policy`] whose id is its VRF
//! id (the shim resolved every rule to prefixes relative to this network, so policies are per
//! network) and a [`VrfPolicy`] (its subnets, that policy) on its VRF: flow processing on.
//! Route leak: for every network Y the policy connects, Y's local interfaces' /32s (-> their
//! Encap nexthops) and Y's remote routes (-> tunnel nexthop with label) are also installed in
//! this network's VRF, without proxy ARP; the network's own routes win on a clash. Y's VRF is
//! not needed here (endpoints are CIDRs).

use crate::alloc::{assign, AllocError, Allocations, Request, FIRST_LABEL};
use crate::config::Config;
use crate::dump::DumpIndex;
use std::collections::{BTreeMap, HashMap, HashSet};
use vrouter_dataplane::tables::{
    Fip, Limits, NexthopSpec, Policy, Route, TunnelKind, VifKind, VifSpec, VrfPolicy, VROUTER_MAC,
};

/// Everything the agent wants in the dataplane, keyed like the dataplane's tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// VRF id -> name.
    pub vrfs: BTreeMap<u16, String>,
    /// Interfaces by id.
    pub vifs: BTreeMap<u16, VifSpec>,
    /// Nexthops by id.
    pub nhs: BTreeMap<u32, NexthopSpec>,
    /// Label -> nexthop.
    pub labels: BTreeMap<u32, u32>,
    /// (VRF, prefix, length) -> route.
    pub routes: BTreeMap<(u16, u32, u8), Route>,
    /// (public VRF, floating address) -> entry.
    pub fips: BTreeMap<(u16, u32), Fip>,
    /// Network policies by id (one per network with a policy; id = its VRF id).
    pub policies: BTreeMap<u32, Policy>,
    /// Flow configuration per VRF.
    pub vrf_policies: BTreeMap<u16, VrfPolicy>,
}

/// One local interface as programmed (the agent's "binding" view).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Binding {
    /// OS name.
    pub name: String,
    /// Network.
    pub network: String,
    /// vif id.
    pub vif: u16,
    /// VRF id.
    pub vrf: u16,
    /// Its nexthop.
    pub nh: u32,
    /// Its MPLS label (advertised to remote hosts).
    pub label: u32,
}

/// The result of compiling.
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    /// Tables.
    pub desired: Desired,
    /// Local interfaces with their ids.
    pub bindings: Vec<Binding>,
    /// Table labels per VRF name.
    pub table_labels: BTreeMap<String, u32>,
    /// Things configured but not programmable now (each one line, for the log).
    pub warnings: Vec<String>,
}

/// First vif id given to VM interfaces: 0, 1 and 2 are the fabric, host and agent interfaces
/// (Contrail's layout), kept free even when the daemon runs without some of them, so VM ids do
/// not move when it is later started with them.
pub const FIRST_VM_VIF: u16 = 3;

/// Nexthop key of an interface's Encap nexthop.
pub fn encap_key(ifname: &str) -> String {
    format!("encap/{ifname}")
}
/// Label key of an interface.
pub fn if_label_key(ifname: &str) -> String {
    format!("if/{ifname}")
}
/// Nexthop and label key of a VRF's table label.
pub fn table_key(vrf: &str) -> String {
    format!("table/{vrf}")
}
/// Nexthop key of the gateway Receive nexthop (one, shared by every VRF).
pub const RECEIVE_KEY: &str = "receive";
/// Nexthop key of a tunnel.
pub fn tunnel_key(kind: TunnelKind, dip: std::net::Ipv4Addr) -> String {
    let k = match kind {
        TunnelKind::MplsOverUdp => "udp",
        TunnelKind::MplsOverGre => "gre",
    };
    format!("tunnel/{k}/{dip}")
}

fn set<I: Copy + Eq + std::hash::Hash>(it: impl Iterator<Item = I>) -> HashSet<I> {
    it.collect()
}

/// Compiles `cfg` against the dataplane state `dp`, updating `alloc` (ids are adopted from `dp`
/// where it already holds the same object; see [`crate::alloc`]).
pub fn compile(
    cfg: &Config,
    dp: &DumpIndex,
    alloc: &mut Allocations,
    limits: &Limits,
) -> Result<Compiled, AllocError> {
    let mut out = Compiled::default();
    let d = &dp.dump;

    // VRFs.
    let wanted: Vec<(String, Option<u16>)> = cfg
        .networks
        .iter()
        .map(|n| (n.vrf.clone(), dp.vrf_by_name.get(&n.vrf).copied()))
        .collect();
    assign(
        &mut alloc.vrfs,
        &Request {
            what: "vrf",
            wanted: &wanted,
            in_dataplane: &set(d.vrfs.iter().map(|v| v.id)),
            protected: &dp.protected_vrfs,
            first: 1,
            limit: u64::from(limits.vrfs),
        },
        None,
    )?;

    // Interfaces.
    let wanted: Vec<(String, Option<u16>)> = cfg
        .interfaces
        .iter()
        .map(|i| {
            let adopt = dp
                .vif_by_name
                .get(&i.name)
                .filter(|v| v.kind == VifKind::Virtual)
                .map(|v| v.id);
            (i.name.clone(), adopt)
        })
        .collect();
    let vrf_ids: HashMap<String, u16> = cfg
        .networks
        .iter()
        .filter_map(|n| Some((n.name.clone(), alloc.vrfs.get(&n.vrf).copied()?)))
        .collect();
    assign(
        &mut alloc.vifs,
        &Request {
            what: "vif",
            wanted: &wanted,
            in_dataplane: &set(d.vifs.iter().map(|v| v.id)),
            protected: &dp.infra_vifs,
            first: FIRST_VM_VIF.into(),
            limit: u64::from(limits.vifs),
        },
        None,
    )?;

    // Nexthops: adopt by what they are.
    let fabric = dp.fabric_vif();
    let agent_vif = d.host.agent_vif;
    let fabric_ip = cfg
        .underlay
        .fabric_ip
        .map(u32::from)
        .unwrap_or(d.host.fabric_ip);
    let fabric_mac = cfg
        .underlay
        .fabric_mac
        .or(fabric.map(|(_, m)| m))
        .unwrap_or_default();
    let find_nh = |pred: &dyn Fn(&NexthopSpec) -> bool| -> Option<u32> {
        let mut ids: Vec<u32> = dp
            .nhs
            .iter()
            .filter(|(id, s)| !dp.protected_nhs.contains(id) && pred(s))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids.first().copied()
    };
    let mut nh_wanted: Vec<(String, Option<u32>)> = Vec::new();
    for i in &cfg.interfaces {
        let vif = alloc.vifs.get(&i.name).copied();
        let adopt = dp
            .vif_by_name
            .get(&i.name)
            .and_then(|v| v.nh)
            .filter(|nh| {
                matches!(dp.nhs.get(nh), Some(NexthopSpec::Encap { oif, .. }) if Some(*oif) == vif)
            });
        nh_wanted.push((encap_key(&i.name), adopt));
    }
    let has_gateway = cfg.networks.iter().any(|n| n.gateway.is_some());
    if has_gateway {
        if let Some(a) = agent_vif {
            let adopt = find_nh(&|s| matches!(s, NexthopSpec::Receive { oif } if *oif == a));
            nh_wanted.push((RECEIVE_KEY.into(), adopt));
        } else {
            out.warnings.push(
                "the dataplane has no agent interface: gateway addresses are not installed".into(),
            );
        }
    }
    let mut tunnels: Vec<(TunnelKind, std::net::Ipv4Addr)> = Vec::new();
    let tunnels_ok = match (fabric, fabric_ip) {
        (None, _) => {
            if !cfg.routes.is_empty() {
                out.warnings.push(
                    "the dataplane has no fabric interface: remote routes are not installed".into(),
                );
            }
            false
        }
        (Some(_), 0) => {
            if !cfg.routes.is_empty() {
                out.warnings.push(
                    "no fabric IP (dataplane host config or underlay.fabric_ip): remote routes are not installed"
                        .into(),
                );
            }
            false
        }
        _ => true,
    };
    if tunnels_ok {
        for r in &cfg.routes {
            if !tunnels.contains(&(r.encap, r.remote)) {
                tunnels.push((r.encap, r.remote));
            }
        }
        for (kind, dip) in &tunnels {
            let dipn = u32::from(*dip);
            let adopt = find_nh(
                &|s| matches!(s, NexthopSpec::Tunnel { kind: k, dip: x, .. } if k == kind && *x == dipn),
            );
            nh_wanted.push((tunnel_key(*kind, *dip), adopt));
        }
    }
    let fip_vrfs: Vec<&str> = {
        let mut v: Vec<&str> = Vec::new();
        for f in &cfg.floating_ips {
            if let Some(n) = cfg.network(&f.network) {
                if !v.contains(&n.vrf.as_str()) {
                    v.push(&n.vrf);
                }
            }
        }
        v
    };
    for vrf in &fip_vrfs {
        let id = alloc.vrfs.get(*vrf).copied();
        let adopt =
            find_nh(&|s| matches!(s, NexthopSpec::VrfTranslate { vrf } if Some(*vrf) == id));
        nh_wanted.push((table_key(vrf), adopt));
    }
    assign(
        &mut alloc.nhs,
        &Request {
            what: "nexthop",
            wanted: &nh_wanted,
            in_dataplane: &set(d.nhs.iter().map(|n| n.id)),
            protected: &dp.protected_nhs,
            first: 1,
            limit: u64::from(limits.nexthops),
        },
        None,
    )?;

    // Labels: adopt the label that points at the adopted nexthop (the lowest, or the one the
    // state file remembers, if several do).
    let label_adopt = |lkey: &str, nhkey: &str| -> Option<u32> {
        let nh = alloc.nhs.get(nhkey)?;
        let ls = dp.labels_by_nh.get(nh)?;
        match alloc.labels.get(lkey) {
            Some(l) if ls.contains(l) => Some(*l),
            _ => ls.first().copied(),
        }
    };
    let mut label_wanted: Vec<(String, Option<u32>)> = cfg
        .interfaces
        .iter()
        .map(|i| {
            (
                if_label_key(&i.name),
                label_adopt(&if_label_key(&i.name), &encap_key(&i.name)),
            )
        })
        .collect();
    for vrf in &fip_vrfs {
        label_wanted.push((
            table_key(vrf),
            label_adopt(&table_key(vrf), &table_key(vrf)),
        ));
    }
    let labels_in_dp = set(d.labels.iter().map(|(l, _)| *l));
    let protected_labels = set(d
        .labels
        .iter()
        .filter(|(_, nh)| dp.label_protected(*nh))
        .map(|(l, _)| *l));
    assign(
        &mut alloc.labels,
        &Request {
            what: "label",
            wanted: &label_wanted,
            in_dataplane: &labels_in_dp,
            protected: &protected_labels,
            first: u64::from(FIRST_LABEL),
            limit: u64::from(limits.labels).min(u64::from(crate::config::MAX_LABEL) + 1),
        },
        Some(&mut alloc.next_label),
    )?;

    // Prune allocations of removed objects.
    alloc.retain(
        &cfg.networks.iter().map(|n| n.vrf.clone()).collect(),
        &cfg.interfaces.iter().map(|i| i.name.clone()).collect(),
        &nh_wanted.iter().map(|(k, _)| k.clone()).collect(),
        &label_wanted.iter().map(|(k, _)| k.clone()).collect(),
    );

    // Build the tables. Every lookup below succeeds because `assign` gave every wanted key an
    // id; the `continue`s only guard against that invariant breaking.
    let want = &mut out.desired;
    for n in &cfg.networks {
        if let Some(&id) = alloc.vrfs.get(&n.vrf) {
            want.vrfs.insert(id, n.vrf.clone());
        }
    }
    let receive = alloc.nhs.get(RECEIVE_KEY).copied();
    if let (Some(nh), Some(a)) = (receive, agent_vif) {
        want.nhs.insert(nh, NexthopSpec::Receive { oif: a });
        for n in &cfg.networks {
            if let (Some(g), Some(vrf)) = (n.gateway, vrf_ids.get(&n.name)) {
                want.routes.insert(
                    (*vrf, u32::from(g), 32),
                    Route {
                        nh,
                        label: None,
                        proxy_arp: true,
                    },
                );
            }
        }
    }
    let mut if_nh: HashMap<&str, (u16, u32)> = HashMap::new();
    // Route leak sources: (VRF name, prefix, nexthop, label) of local interfaces and remote
    // routes; targets: (VRF id, VRF names connected to it).
    let vrf_name = |net: &str| -> String {
        cfg.network(net)
            .map_or_else(|| net.to_string(), |n| n.vrf.clone())
    };
    let mut leaks: Vec<(String, crate::config::Prefix, u32, Option<u32>)> = Vec::new();
    let leak_targets: Vec<(u16, &[String])> = cfg
        .networks
        .iter()
        .filter_map(|n| {
            let p = n.policy.as_ref().filter(|p| !p.connected.is_empty())?;
            Some((*vrf_ids.get(&n.name)?, p.connected.as_slice()))
        })
        .collect();
    for i in &cfg.interfaces {
        let (Some(&vif), Some(&vrf), Some(&nh), Some(&label)) = (
            alloc.vifs.get(&i.name),
            vrf_ids.get(&i.network),
            alloc.nhs.get(&encap_key(&i.name)),
            alloc.labels.get(&if_label_key(&i.name)),
        ) else {
            out.warnings
                .push(format!("interface {:?}: no ids allocated", i.name));
            continue;
        };
        want.vifs.insert(
            vif,
            VifSpec {
                id: vif,
                name: i.name.clone(),
                kind: VifKind::Virtual,
                vrf,
                mac: i.mac,
                ip: u32::from(i.ip),
                mtu: i.mtu,
                nh: Some(nh),
            },
        );
        want.nhs.insert(
            nh,
            NexthopSpec::Encap {
                oif: vif,
                dmac: i.mac,
                smac: VROUTER_MAC,
            },
        );
        want.labels.insert(label, nh);
        want.routes.insert(
            (vrf, u32::from(i.ip), 32),
            Route {
                nh,
                label: None,
                proxy_arp: true,
            },
        );
        if_nh.insert(&i.name, (vif, nh));
        leaks.push((
            vrf_name(&i.network),
            crate::config::Prefix {
                addr: i.ip,
                len: 32,
            },
            nh,
            None,
        ));
        out.bindings.push(Binding {
            name: i.name.clone(),
            network: i.network.clone(),
            vif,
            vrf,
            nh,
            label,
        });
    }
    if let (true, Some((fvif, _))) = (tunnels_ok, fabric) {
        for (kind, dip) in &tunnels {
            let Some(&nh) = alloc.nhs.get(&tunnel_key(*kind, *dip)) else {
                continue;
            };
            let Some(dmac) = cfg.underlay.neighbour_mac(*dip) else {
                continue;
            };
            want.nhs.insert(
                nh,
                NexthopSpec::Tunnel {
                    oif: fvif,
                    kind: *kind,
                    sip: fabric_ip,
                    dip: u32::from(*dip),
                    dmac,
                    smac: fabric_mac,
                },
            );
        }
        for r in &cfg.routes {
            let Some(&nh) = alloc.nhs.get(&tunnel_key(r.encap, r.remote)) else {
                continue;
            };
            if let Some(&vrf) = vrf_ids.get(&r.network) {
                let key = (vrf, u32::from(r.prefix.addr), r.prefix.len);
                match want.routes.entry(key) {
                    std::collections::btree_map::Entry::Occupied(_) => out.warnings.push(format!(
                        "route {} in {}: a local address or gateway has the same prefix; the local one wins",
                        r.prefix, r.network
                    )),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(Route {
                            nh,
                            label: Some(r.label),
                            proxy_arp: true,
                        });
                    }
                }
            }
            leaks.push((vrf_name(&r.network), r.prefix, nh, Some(r.label)));
        }
    }
    // Route leak: what policies connect, after every network's own routes (which win).
    for (from, prefix, nh, label) in leaks {
        for (into, _) in leak_targets.iter().filter(|(_, c)| c.contains(&from)) {
            let key = (*into, u32::from(prefix.addr), prefix.len);
            want.routes.entry(key).or_insert(Route {
                nh,
                label,
                proxy_arp: false,
            });
        }
    }
    // Policies.
    for n in &cfg.networks {
        let (Some(p), Some(&vrf)) = (&n.policy, vrf_ids.get(&n.name)) else {
            continue;
        };
        let id = u32::from(vrf);
        want.policies.insert(
            id,
            Policy {
                id,
                name: if p.names.is_empty() {
                    n.vrf.clone()
                } else {
                    p.names.join(",")
                },
                rules: p.rules.clone(),
            },
        );
        want.vrf_policies.insert(
            vrf,
            VrfPolicy {
                subnets: p
                    .subnets
                    .iter()
                    .map(|s| (u32::from(s.addr), s.len))
                    .collect(),
                policies: vec![id],
                max_flows: 0,
            },
        );
    }
    for vrf in &fip_vrfs {
        let (Some(&nh), Some(&label), Some(&id)) = (
            alloc.nhs.get(&table_key(vrf)),
            alloc.labels.get(&table_key(vrf)),
            alloc.vrfs.get(*vrf),
        ) else {
            continue;
        };
        want.nhs.insert(nh, NexthopSpec::VrfTranslate { vrf: id });
        want.labels.insert(label, nh);
        out.table_labels.insert(vrf.to_string(), label);
    }
    for f in &cfg.floating_ips {
        let (Some(&vrf), Some(&(vif, nh)), Some(iface)) = (
            vrf_ids.get(&f.network),
            if_nh.get(f.interface.as_str()),
            cfg.interfaces.iter().find(|i| i.name == f.interface),
        ) else {
            continue;
        };
        let fip = u32::from(f.address);
        want.fips.insert(
            (vrf, fip),
            Fip {
                vrf,
                fip,
                vif,
                private_ip: u32::from(iface.ip),
            },
        );
        want.routes.insert(
            (vrf, fip, 32),
            Route {
                nh,
                label: None,
                proxy_arp: true,
            },
        );
    }
    Ok(out)
}
