//! The table passes: with every id allocated, each pass fills one part of [`super::Desired`].
//! Every id lookup succeeds because the allocation passes gave every wanted key an id; the
//! early exits only guard against that invariant breaking.

use super::{
    composite_key, encap_key, if_label_key, table_key, tunnel_key, Binding, Builder, Leak,
    CHAIN_DOWN_KEY, RECEIVE_KEY,
};
use crate::config::{ChainMember, ChainRoutes, Interface, Prefix, RemoteRoute};
use std::collections::btree_map::Entry;
use vrouter_dataplane::tables::{
    AllowedSource, Fip, NexthopSpec, Policy, Route, VifKind, VifSpec, VrfPolicy, VROUTER_MAC,
};

/// The sources an interface may use besides its fixed IP: its secondary IPs and its allowed
/// address pairs (none on a service interface, which has no address check at all).
fn allowed_sources(i: &Interface) -> Vec<AllowedSource> {
    if i.service {
        return Vec::new();
    }
    let secondary = i.secondary.iter().map(|a| AllowedSource {
        ip: u32::from(*a),
        len: 32,
        mac: None,
    });
    let pairs = i.pairs.iter().map(|p| AllowedSource {
        ip: u32::from(p.prefix.addr),
        len: p.prefix.len,
        mac: p.mac,
    });
    secondary.chain(pairs).collect()
}

/// A route to a local nexthop that the dataplane answers ARP for.
fn local_route(nh: u32) -> Route {
    Route {
        nh,
        label: None,
        proxy_arp: true,
    }
}

impl<'a> Builder<'a> {
    /// One VRF per network.
    pub(super) fn vrfs(&mut self) {
        for n in &self.cfg.networks {
            if let Some(&id) = self.alloc.vrfs.get(&n.vrf) {
                self.out.desired.vrfs.insert(id, n.vrf.clone());
            }
        }
    }

    /// The Receive nexthop and each network's gateway /32 pointing at it.
    pub(super) fn gateways(&mut self) {
        let (Some(nh), Some(agent_vif)) = (
            self.alloc.nhs.get(RECEIVE_KEY).copied(),
            self.fabric.agent_vif,
        ) else {
            return;
        };
        let want = &mut self.out.desired;
        want.nhs.insert(nh, NexthopSpec::Receive { oif: agent_vif });
        for n in &self.cfg.networks {
            if let (Some(g), Some(vrf)) = (n.gateway, self.vrf_ids.get(&n.name)) {
                want.routes
                    .insert((*vrf, u32::from(g), 32), local_route(nh));
            }
        }
    }

    /// Each local interface: its vif, Encap nexthop, label and /32, and its binding.
    pub(super) fn interfaces(&mut self) {
        let cfg = self.cfg;
        self.link_local_host_vif();
        for i in &cfg.interfaces {
            if !self.system_interface(i) {
                self.interface(i);
            }
        }
    }

    /// One interface, or a warning if it lacks an id.
    fn interface(&mut self, i: &'a Interface) {
        let (Some(&vif), Some(&vrf), Some(&nh), Some(&label)) = (
            self.alloc.vifs.get(&i.name),
            self.vrf_ids.get(&i.network),
            self.alloc.nhs.get(&encap_key(&i.name)),
            self.alloc.labels.get(&if_label_key(&i.name)),
        ) else {
            self.out
                .warnings
                .push(format!("interface {:?}: no ids allocated", i.name));
            return;
        };
        let want = &mut self.out.desired;
        want.vifs.insert(
            vif,
            VifSpec {
                id: vif,
                name: i.name.clone(),
                kind: VifKind::Virtual,
                vrf,
                mac: i.mac,
                // No IP on a service interface: the dataplane then checks only its MAC.
                ip: if i.service { 0 } else { u32::from(i.ip) },
                mtu: i.mtu,
                nh: Some(nh),
                allowed: allowed_sources(i),
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
        self.if_nh.insert(&i.name, (vif, nh));
        // The fixed IP, the secondary IPs and the pair addresses this interface owns now.
        for addr in i.routed_addresses() {
            self.out
                .desired
                .routes
                .insert((vrf, u32::from(addr), 32), local_route(nh));
            self.leaks.push(Leak {
                from_vrf: self.vrf_name(&i.network),
                prefix: Prefix::host(addr),
                nh,
                label: None,
            });
        }
        self.out.bindings.push(Binding {
            name: i.name.clone(),
            network: i.network.clone(),
            vif,
            vrf,
            nh,
            label,
        });
    }

    /// The tunnel nexthops to remote hosts whose underlay MAC is known.
    pub(super) fn tunnels(&mut self) {
        let Some(oif) = self.tunnel_oif else {
            return;
        };
        for &(kind, dip) in &self.tunnels {
            let Some(&nh) = self.alloc.nhs.get(&tunnel_key(kind, dip)) else {
                continue;
            };
            let Some(dmac) = self.cfg.underlay.neighbour_mac(dip) else {
                continue;
            };
            self.out.desired.nhs.insert(
                nh,
                NexthopSpec::Tunnel {
                    oif,
                    kind,
                    sip: self.fabric.ip,
                    dip: u32::from(dip),
                    dmac,
                    smac: self.fabric.mac,
                },
            );
        }
    }

    /// Remote routes through their tunnels, unless a local address or gateway holds the
    /// prefix; each is also a leak source either way.
    pub(super) fn remote_routes(&mut self) {
        if self.tunnel_oif.is_none() {
            return;
        }
        let cfg = self.cfg;
        for r in &cfg.routes {
            let Some(&nh) = self.alloc.nhs.get(&tunnel_key(r.encap, r.remote)) else {
                continue;
            };
            if let Some(&vrf) = self.vrf_ids.get(&r.network) {
                self.remote_route(vrf, r, nh);
            }
            self.leaks.push(Leak {
                from_vrf: self.vrf_name(&r.network),
                prefix: r.prefix,
                nh,
                label: Some(r.label),
            });
        }
    }

    /// `r` in VRF `vrf` through tunnel nexthop `nh`, unless the VRF already has the prefix.
    fn remote_route(&mut self, vrf: u16, r: &RemoteRoute, nh: u32) {
        let key = (vrf, u32::from(r.prefix.addr), r.prefix.len);
        match self.out.desired.routes.entry(key) {
            Entry::Occupied(_) => self.out.warnings.push(format!(
                "route {} in {}: a local address or gateway has the same prefix; the local one wins",
                r.prefix, r.network
            )),
            Entry::Vacant(e) => {
                e.insert(Route {
                    nh,
                    label: Some(r.label),
                    proxy_arp: true,
                });
            }
        }
    }

    /// Route leak: every route of a network a policy connects, installed without proxy ARP
    /// where the VRF has no route of its own for the prefix (its own routes win).
    pub(super) fn route_leaks(&mut self) {
        let targets: Vec<(u16, &[String])> = self
            .cfg
            .networks
            .iter()
            .filter_map(|n| {
                let p = n.policy.as_ref().filter(|p| !p.connected.is_empty())?;
                Some((*self.vrf_ids.get(&n.name)?, p.connected.as_slice()))
            })
            .collect();
        for leak in &self.leaks {
            for (into, _) in targets.iter().filter(|(_, c)| c.contains(&leak.from_vrf)) {
                let key = (*into, u32::from(leak.prefix.addr), leak.prefix.len);
                self.out.desired.routes.entry(key).or_insert(Route {
                    nh: leak.nh,
                    label: leak.label,
                    proxy_arp: false,
                });
            }
        }
    }

    /// Each steered service chain's prefixes to its members (see [`Self::chain_route`]), where
    /// the VRF has no route of its own, remote or leaked for the prefix.
    pub(super) fn chain_routes(&mut self) {
        let cfg = self.cfg;
        for n in &cfg.networks {
            let (Some(p), Some(&vrf)) = (&n.policy, self.vrf_ids.get(&n.name)) else {
                continue;
            };
            for ch in &p.chains {
                let Some(route) = self.chain_route(&n.vrf, ch) else {
                    self.out.warnings.push(format!(
                        "service chain {} in {}: no member is programmed; its prefixes have no route",
                        ch.name, n.name
                    ));
                    continue;
                };
                for prefix in &ch.prefixes {
                    let key = (vrf, u32::from(prefix.addr), prefix.len);
                    self.out.desired.routes.entry(key).or_insert(route);
                }
            }
        }
    }

    /// The route of a chain's prefixes: to its one programmed member, or to the chain's ECMP
    /// composite of them (members in the chain's order, which both sides share), each with its
    /// service VM's key so the dataplane's choice is symmetric and stable as members change.
    fn chain_route(&mut self, vrf: &str, ch: &ChainRoutes) -> Option<Route> {
        let (members, keys): (Vec<(u32, Option<u32>)>, Vec<u32>) = ch
            .members
            .iter()
            .zip(&ch.keys)
            .filter_map(|(m, &k)| Some((self.chain_member(m)?, k)))
            .unzip();
        let (nh, label) = match members.as_slice() {
            [] => return None,
            [one] => *one,
            _ => {
                let nh = *self.alloc.nhs.get(&composite_key(vrf, &ch.name))?;
                let spec = NexthopSpec::Composite { members, keys };
                self.out.desired.nhs.insert(nh, spec);
                (nh, None)
            }
        };
        Some(Route {
            nh,
            label,
            proxy_arp: false,
        })
    }

    /// A chain member's (nexthop, label): a local interface's Encap nexthop, or the tunnel to
    /// the member's host (if programmed: its underlay MAC is known) with the member's label.
    fn chain_member(&self, m: &ChainMember) -> Option<(u32, Option<u32>)> {
        match m {
            ChainMember::Local(name) => self.if_nh.get(name.as_str()).map(|&(_, nh)| (nh, None)),
            ChainMember::Remote {
                remote,
                label,
                encap,
            } => {
                self.tunnel_oif?;
                let nh = *self.alloc.nhs.get(&tunnel_key(*encap, *remote))?;
                self.out
                    .desired
                    .nhs
                    .contains_key(&nh)
                    .then_some((nh, Some(*label)))
            }
        }
    }

    /// The prefixes of down service chains, to the chain Discard nexthop, where the VRF has no
    /// route of its own or leaked for the prefix.
    pub(super) fn chain_down_routes(&mut self) {
        let Some(&nh) = self.alloc.nhs.get(CHAIN_DOWN_KEY) else {
            return;
        };
        let want = &mut self.out.desired;
        want.nhs.insert(nh, NexthopSpec::Discard);
        for n in &self.cfg.networks {
            let (Some(p), Some(&vrf)) = (&n.policy, self.vrf_ids.get(&n.name)) else {
                continue;
            };
            for prefix in &p.chain_down {
                let key = (vrf, u32::from(prefix.addr), prefix.len);
                want.routes.entry(key).or_insert(Route {
                    nh,
                    label: None,
                    proxy_arp: false,
                });
            }
        }
    }

    /// One policy per network that has one (id = its VRF id), and flow processing on its VRF.
    pub(super) fn policies(&mut self) {
        for n in &self.cfg.networks {
            let (Some(p), Some(&vrf)) = (&n.policy, self.vrf_ids.get(&n.name)) else {
                continue;
            };
            let id = u32::from(vrf);
            let name = if p.names.is_empty() {
                n.vrf.clone()
            } else {
                p.names.join(",")
            };
            let rules = p.rules.clone();
            self.out
                .desired
                .policies
                .insert(id, Policy { id, name, rules });
            let subnets = p
                .subnets
                .iter()
                .map(|s| (u32::from(s.addr), s.len))
                .collect();
            self.out.desired.vrf_policies.insert(
                vrf,
                VrfPolicy {
                    subnets,
                    policies: vec![id],
                    max_flows: 0,
                },
            );
        }
    }

    /// Each floating-IP VRF's table label, through a VrfTranslate nexthop into that VRF.
    pub(super) fn table_labels(&mut self) {
        for vrf in &self.fip_vrfs {
            let (Some(&nh), Some(&label), Some(&id)) = (
                self.alloc.nhs.get(&table_key(vrf)),
                self.alloc.labels.get(&table_key(vrf)),
                self.alloc.vrfs.get(*vrf),
            ) else {
                continue;
            };
            let want = &mut self.out.desired;
            want.nhs.insert(nh, NexthopSpec::VrfTranslate { vrf: id });
            want.labels.insert(label, nh);
            self.out.table_labels.insert(vrf.to_string(), label);
        }
    }

    /// Each floating IP: its FIP entry, and its /32 in the public VRF to the interface's
    /// nexthop (for proxy ARP).
    pub(super) fn floating_ips(&mut self) {
        for f in &self.cfg.floating_ips {
            let (Some(&vrf), Some(&(vif, nh)), Some(iface)) = (
                self.vrf_ids.get(&f.network),
                self.if_nh.get(f.interface.as_str()),
                self.cfg.interfaces.iter().find(|i| i.name == f.interface),
            ) else {
                continue;
            };
            let fip = u32::from(f.address);
            let private_ip = u32::from(iface.ip);
            let want = &mut self.out.desired;
            want.fips.insert(
                (vrf, fip),
                Fip {
                    vrf,
                    fip,
                    vif,
                    private_ip,
                },
            );
            want.routes.insert((vrf, fip, 32), local_route(nh));
        }
    }
}
