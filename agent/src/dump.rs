//! What the agent learns from a dataplane [`StateDump`]: which objects belong to the daemon (and
//! must never be touched), and indexes for adopting ids the dataplane already holds.
//!
//! The daemon creates the fabric, host and agent interfaces itself (and may add routes in the
//! fabric VRF). Everything else in the dataplane was put there by an agent, so after a restart
//! the agent may adopt it, keep it or delete it.

use std::collections::{HashMap, HashSet};
use vrouter_dataplane::ctl::proto::{RouteInfo, StateDump};
use vrouter_dataplane::tables::{NexthopSpec, VifSpec};
use vrouter_dataplane::wire::MacAddr;

/// VRF 0 is the fabric VRF, owned by the daemon.
pub const FABRIC_VRF: u16 = 0;

/// A [`StateDump`] with the ownership split and lookup indexes.
#[derive(Debug, Clone, Default)]
pub struct DumpIndex {
    /// The dump itself.
    pub dump: StateDump,
    /// Daemon-owned interfaces (fabric, host, agent).
    pub infra_vifs: HashSet<u16>,
    /// Daemon-owned VRFs: the fabric VRF and those of the daemon's interfaces.
    pub protected_vrfs: HashSet<u16>,
    /// Daemon-owned nexthops: those of its interfaces and of routes in its VRFs, and discard.
    pub protected_nhs: HashSet<u32>,
    /// VRF id by name.
    pub vrf_by_name: HashMap<String, u16>,
    /// Interface by OS name.
    pub vif_by_name: HashMap<String, VifSpec>,
    /// Nexthop spec by id.
    pub nhs: HashMap<u32, NexthopSpec>,
    /// Labels pointing at each nexthop, ascending.
    pub labels_by_nh: HashMap<u32, Vec<u32>>,
}

impl DumpIndex {
    /// Indexes `dump`.
    pub fn new(dump: StateDump) -> Self {
        let h = dump.host;
        let mut infra_vifs: HashSet<u16> = [h.fabric_vif, h.host_vif, h.agent_vif]
            .into_iter()
            .flatten()
            .collect();
        // Non-virtual interfaces are the daemon's even if the host config does not name them.
        infra_vifs.extend(
            dump.vifs
                .iter()
                .filter(|v| !v.kind.is_vm_like())
                .map(|v| v.id),
        );
        let mut protected_vrfs: HashSet<u16> = [FABRIC_VRF].into();
        let mut protected_nhs: HashSet<u32> = [0].into();
        for v in dump.vifs.iter().filter(|v| infra_vifs.contains(&v.id)) {
            if dump.vrfs.iter().any(|x| x.id == v.vrf) {
                protected_vrfs.insert(v.vrf);
            }
            protected_nhs.extend(v.nh);
        }
        for r in dump
            .routes
            .iter()
            .filter(|r| protected_vrfs.contains(&r.vrf))
        {
            if !agent_fabric_route(&dump, &infra_vifs, r) {
                protected_nhs.insert(r.route.nh);
            }
        }
        let mut labels_by_nh: HashMap<u32, Vec<u32>> = HashMap::new();
        for (l, nh) in &dump.labels {
            labels_by_nh.entry(*nh).or_default().push(*l);
        }
        for v in labels_by_nh.values_mut() {
            v.sort_unstable();
        }
        Self {
            vrf_by_name: dump.vrfs.iter().map(|v| (v.name.clone(), v.id)).collect(),
            vif_by_name: dump
                .vifs
                .iter()
                .map(|v| (v.name.clone(), v.clone()))
                .collect(),
            nhs: dump.nhs.iter().map(|n| (n.id, n.spec.clone())).collect(),
            labels_by_nh,
            infra_vifs,
            protected_vrfs,
            protected_nhs,
            dump,
        }
    }

    /// The fabric interface's id and MAC.
    pub fn fabric_vif(&self) -> Option<(u16, MacAddr)> {
        let id = self.dump.host.fabric_vif?;
        let mac = self
            .dump
            .vifs
            .iter()
            .find(|v| v.id == id)
            .map(|v| v.mac)
            .unwrap_or_default();
        Some((id, mac))
    }

    /// True if the label points at a daemon-owned nexthop.
    /// Whether route `r` is the agent's although its VRF is the daemon's: an ip-fabric VM's
    /// /32 in the fabric VRF (issue 19).
    pub fn agent_route(&self, r: &RouteInfo) -> bool {
        agent_fabric_route(&self.dump, &self.infra_vifs, r)
    }

    pub fn label_protected(&self, nh: u32) -> bool {
        self.protected_nhs.contains(&nh)
    }
}

/// A route in the fabric VRF to an Encap nexthop out of a VM's vif: an ip-fabric interface's,
/// programmed by the agent, not the daemon.
fn agent_fabric_route(dump: &StateDump, infra_vifs: &HashSet<u16>, r: &RouteInfo) -> bool {
    r.vrf == FABRIC_VRF
        && dump.nhs.iter().any(|n| {
            n.id == r.route.nh
                && matches!(n.spec, NexthopSpec::Encap { oif, .. } if !infra_vifs.contains(&oif))
        })
}
