//! The allocation passes: every VRF, vif, nexthop and label the configuration needs gets an id,
//! adopted from the dataplane where it already holds the same object (so a restarted agent
//! changes nothing), then allocations of removed objects are pruned.

use super::{
    composite_key, encap_key, if_label_key, table_key, tunnel_key, Builder, CHAIN_DOWN_KEY,
    FIRST_VM_VIF, RECEIVE_KEY,
};
use crate::alloc::{assign, AllocError, Request, FIRST_LABEL};
use crate::config::{ChainMember, MAX_LABEL};
use crate::dump::DumpIndex;
use std::collections::{HashMap, HashSet};
use vrouter_dataplane::tables::{NexthopSpec, VifKind};

fn set<I: Copy + Eq + std::hash::Hash>(it: impl Iterator<Item = I>) -> HashSet<I> {
    it.collect()
}

/// The lowest nexthop id the dataplane holds that is not the daemon's and matches `pred`:
/// nexthops are adopted by what they are, since nothing else names them.
fn adoptable_nh(dp: &DumpIndex, pred: impl Fn(&NexthopSpec) -> bool) -> Option<u32> {
    dp.nhs
        .iter()
        .filter(|(id, s)| !dp.protected_nhs.contains(id) && pred(s))
        .map(|(id, _)| *id)
        .min()
}

impl Builder<'_> {
    /// One VRF per network, adopted by name.
    pub(super) fn allocate_vrfs(&mut self) -> Result<(), AllocError> {
        let dp = self.dp;
        let mut wanted: Vec<(String, Option<u16>)> = self
            .cfg
            .networks
            .iter()
            .filter(|n| !Self::in_fabric_vrf(&n.vrf))
            .map(|n| (n.vrf.clone(), dp.vrf_by_name.get(&n.vrf).copied()))
            .collect();
        wanted.extend(self.system_vrf_wants(dp));
        assign(
            &mut self.alloc.vrfs,
            &Request {
                what: "vrf",
                wanted: &wanted,
                in_dataplane: &set(dp.dump.vrfs.iter().map(|v| v.id)),
                protected: &dp.protected_vrfs,
                first: 1,
                limit: u64::from(self.limits.vrfs),
            },
            None,
        )?;
        self.vrf_ids = self
            .cfg
            .networks
            .iter()
            .filter_map(|n| {
                let id = if Self::in_fabric_vrf(&n.vrf) {
                    vrouter_dataplane::tables::FABRIC_VRF
                } else {
                    self.alloc.vrfs.get(&n.vrf).copied()?
                };
                Some((n.name.clone(), id))
            })
            .collect();
        Ok(())
    }

    /// One vif per interface, adopted by name if the dataplane's is a virtual one.
    pub(super) fn allocate_vifs(&mut self) -> Result<(), AllocError> {
        let dp = self.dp;
        let mut wanted: Vec<(String, Option<u16>)> = self
            .cfg
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
        wanted.extend(self.system_vif_wants(dp));
        assign(
            &mut self.alloc.vifs,
            &Request {
                what: "vif",
                wanted: &wanted,
                in_dataplane: &set(dp.dump.vifs.iter().map(|v| v.id)),
                protected: &dp.infra_vifs,
                first: FIRST_VM_VIF.into(),
                limit: u64::from(self.limits.vifs),
            },
            None,
        )
    }

    /// Encap nexthops, the gateway Receive nexthop, tunnels and table nexthops, in that order.
    pub(super) fn allocate_nexthops(&mut self) -> Result<(), AllocError> {
        self.want_encap_nhs();
        self.want_receive_nh();
        self.want_tunnel_nhs();
        self.want_table_nhs();
        self.want_chain_down_nh();
        self.want_composite_nhs();
        let dp = self.dp;
        assign(
            &mut self.alloc.nhs,
            &Request {
                what: "nexthop",
                wanted: &self.nh_wanted,
                in_dataplane: &set(dp.dump.nhs.iter().map(|n| n.id)),
                protected: &dp.protected_nhs,
                first: 1,
                limit: u64::from(self.limits.nexthops),
            },
            None,
        )
    }

    /// Each interface's Encap nexthop, adopted if the dataplane's vif points at an Encap
    /// nexthop out of the vif this interface was given.
    fn want_encap_nhs(&mut self) {
        let dp = self.dp;
        let names = self.cfg.interfaces.iter().map(|i| i.name.clone());
        for name in names.chain(self.system_encap_names()) {
            let vif = self.alloc.vifs.get(&name).copied();
            let adopt = dp
                .vif_by_name
                .get(&name)
                .and_then(|v| v.nh)
                .filter(|nh| {
                    matches!(dp.nhs.get(nh), Some(NexthopSpec::Encap { oif, .. }) if Some(*oif) == vif)
                });
            self.nh_wanted.push((encap_key(&name), adopt));
        }
    }

    /// The Receive nexthop gateway addresses share, if any network has a gateway and the
    /// dataplane has an agent vif to trap to.
    fn want_receive_nh(&mut self) {
        if !self.cfg.networks.iter().any(|n| n.gateway.is_some()) {
            return;
        }
        if let Some(a) = self.fabric.agent_vif {
            let adopt = adoptable_nh(
                self.dp,
                |s| matches!(s, NexthopSpec::Receive { oif } if *oif == a),
            );
            self.nh_wanted.push((RECEIVE_KEY.into(), adopt));
        } else {
            self.out.warnings.push(
                "the dataplane has no agent interface: gateway addresses are not installed".into(),
            );
        }
    }

    /// One tunnel nexthop per (encapsulation, remote host) of the remote routes, if tunnels
    /// can be built at all (a fabric vif and a source address).
    fn want_tunnel_nhs(&mut self) {
        let Some(oif) = self.tunnel_source() else {
            return;
        };
        self.tunnel_oif = Some(oif);
        let chain_hosts = self.chain_members().filter_map(|m| match m {
            ChainMember::Remote { remote, encap, .. } => Some((*encap, *remote)),
            ChainMember::Local(_) => None,
        });
        let hosts: Vec<_> = self
            .cfg
            .routes
            .iter()
            .map(|r| (r.encap, r.remote))
            .chain(chain_hosts)
            .collect();
        for t in hosts {
            if !self.tunnels.contains(&t) {
                self.tunnels.push(t);
            }
        }
        for &(kind, dip) in &self.tunnels {
            let dipn = u32::from(dip);
            let adopt = adoptable_nh(
                self.dp,
                |s| matches!(s, NexthopSpec::Tunnel { kind: k, dip: x, .. } if *k == kind && *x == dipn),
            );
            self.nh_wanted.push((tunnel_key(kind, dip), adopt));
        }
    }

    /// The fabric vif tunnels leave by, or `None` (with a warning if remote routes are
    /// configured) when the dataplane lacks a fabric vif or there is no fabric IP.
    fn tunnel_source(&mut self) -> Option<u16> {
        let why = match self.fabric.vif {
            None => "the dataplane has no fabric interface: remote routes are not installed",
            Some(_) if self.fabric.ip == 0 => {
                "no fabric IP (dataplane host config or underlay.fabric_ip): remote routes are not installed"
            }
            Some((oif, _)) => return Some(oif),
        };
        let remote_member = self
            .chain_members()
            .any(|m| matches!(m, ChainMember::Remote { .. }));
        if !self.cfg.routes.is_empty() || remote_member {
            self.out.warnings.push(why.into());
        }
        None
    }

    /// A VrfTranslate nexthop per floating-IP VRF, behind its table label.
    fn want_table_nhs(&mut self) {
        for vrf in &self.fip_vrfs {
            let id = self.alloc.vrfs.get(*vrf).copied();
            let adopt = adoptable_nh(
                self.dp,
                |s| matches!(s, NexthopSpec::VrfTranslate { vrf } if Some(*vrf) == id),
            );
            self.nh_wanted.push((table_key(vrf), adopt));
        }
    }

    /// The Discard nexthop of down service chains, if a network has one.
    fn want_chain_down_nh(&mut self) {
        let any = self
            .cfg
            .networks
            .iter()
            .any(|n| n.policy.as_ref().is_some_and(|p| !p.chain_down.is_empty()));
        if any {
            let adopt = adoptable_nh(self.dp, |s| matches!(s, NexthopSpec::Discard));
            self.nh_wanted.push((CHAIN_DOWN_KEY.into(), adopt));
        }
    }

    /// Every member of every service chain of every network.
    fn chain_members(&self) -> impl Iterator<Item = &'_ ChainMember> + '_ {
        self.cfg
            .networks
            .iter()
            .filter_map(|n| n.policy.as_ref())
            .flat_map(|p| p.chains.iter())
            .flat_map(|c| c.members.iter())
    }

    /// An ECMP composite per service chain with several members, adopted if the dataplane's
    /// route for one of the chain's prefixes in its VRF points at a composite: nothing else
    /// names a composite, and its members may have changed while the agent was down.
    fn want_composite_nhs(&mut self) {
        let dp = self.dp;
        let chains: Vec<(&str, &crate::config::ChainRoutes)> = self
            .cfg
            .networks
            .iter()
            .filter_map(|n| Some((n.vrf.as_str(), n.policy.as_ref()?)))
            .flat_map(|(vrf, p)| p.chains.iter().map(move |c| (vrf, c)))
            .filter(|(_, c)| c.members.len() > 1)
            .collect();
        if chains.is_empty() {
            return;
        }
        let routes: HashMap<(u16, u32, u8), u32> = dp
            .dump
            .routes
            .iter()
            .map(|r| ((r.vrf, r.prefix, r.plen), r.route.nh))
            .collect();
        for (vrf, c) in chains {
            let id = self.alloc.vrfs.get(vrf).copied();
            let adopt = c
                .prefixes
                .iter()
                .filter_map(|p| routes.get(&(id?, u32::from(p.addr), p.len)).copied())
                .find(|nh| {
                    !dp.protected_nhs.contains(nh)
                        && matches!(dp.nhs.get(nh), Some(NexthopSpec::Composite { .. }))
                });
            self.nh_wanted.push((composite_key(vrf, &c.name), adopt));
        }
    }

    /// Interface labels and table labels. A label is adopted if it points at the adopted
    /// nexthop (the lowest, or the one the state file remembers, if several do); fresh labels
    /// go round-robin so a released label is not reused while remote hosts may still send to it.
    pub(super) fn allocate_labels(&mut self) -> Result<(), AllocError> {
        let mut wanted: Vec<(String, Option<u32>)> = Vec::new();
        for i in &self.cfg.interfaces {
            if self.system_net(i).is_some() {
                continue; // system networks have no overlay, so no label
            }
            let key = if_label_key(&i.name);
            let adopt = self.adoptable_label(&key, &encap_key(&i.name));
            wanted.push((key, adopt));
        }
        for vrf in &self.fip_vrfs {
            let key = table_key(vrf);
            let adopt = self.adoptable_label(&key, &key);
            wanted.push((key, adopt));
        }
        self.label_wanted = wanted;
        let dp = self.dp;
        let d = &dp.dump;
        let protected = set(d
            .labels
            .iter()
            .filter(|(_, nh)| dp.label_protected(*nh))
            .map(|(l, _)| *l));
        assign(
            &mut self.alloc.labels,
            &Request {
                what: "label",
                wanted: &self.label_wanted,
                in_dataplane: &set(d.labels.iter().map(|(l, _)| *l)),
                protected: &protected,
                first: u64::from(FIRST_LABEL),
                limit: u64::from(self.limits.labels).min(u64::from(MAX_LABEL) + 1),
            },
            Some(&mut self.alloc.next_label),
        )
    }

    /// The dataplane label for `label_key` that points at the nexthop allocated to `nh_key`.
    fn adoptable_label(&self, label_key: &str, nh_key: &str) -> Option<u32> {
        let nh = self.alloc.nhs.get(nh_key)?;
        let labels = self.dp.labels_by_nh.get(nh)?;
        match self.alloc.labels.get(label_key) {
            Some(l) if labels.contains(l) => Some(*l),
            _ => labels.first().copied(),
        }
    }

    /// Drops the allocations of objects no longer configured.
    pub(super) fn prune(&mut self) {
        let keys = |wanted: &[(String, _)]| wanted.iter().map(|(k, _)| k.clone()).collect();
        let (sys_vrfs, sys_vifs) = self.system_alloc_names();
        let vrfs = self.cfg.networks.iter().map(|n| n.vrf.clone());
        let vifs = self.cfg.interfaces.iter().map(|i| i.name.clone());
        self.alloc.retain(
            &vrfs.chain(sys_vrfs).collect(),
            &vifs.chain(sys_vifs).collect(),
            &keys(&self.nh_wanted),
            &keys(&self.label_wanted),
        );
    }
}
