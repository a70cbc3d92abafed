//! Interfaces (Contrail's vifs).

use super::{ensure_below, ensure_exists, Limits, Shadow, TableError};
use crate::wire::MacAddr;
use serde::{Deserialize, Serialize};

/// What an interface connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VifKind {
    /// A VM's interface (`vif<domid>.<devid>` / `tap<domid>.<devid>`).
    Virtual,
    /// The fabric NIC.
    Physical,
    /// The host stack (`vhost0`).
    Host,
    /// The agent's trap/inject channel (`pkt0`).
    Agent,
}

impl VifKind {
    /// Contrail's `vif --list` type name.
    pub fn name(self) -> &'static str {
        match self {
            VifKind::Virtual => "Virtual",
            VifKind::Physical => "Physical",
            VifKind::Host => "Host",
            VifKind::Agent => "Agent",
        }
    }
}

/// An interface as the control plane describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VifSpec {
    /// Interface id (index in the vif table).
    pub id: u16,
    /// OS device name.
    pub name: String,
    /// Kind.
    pub kind: VifKind,
    /// VRF the interface's traffic is looked up in.
    pub vrf: u16,
    /// The interface's MAC: a VM's own MAC for virtual interfaces (its traffic must come from
    /// it), the NIC's for the fabric.
    pub mac: MacAddr,
    /// The interface's IPv4 address (a VM's fixed IP; 0 if none).
    pub ip: u32,
    /// MTU.
    pub mtu: u16,
    /// The nexthop that delivers to this interface (informational, shown by `vrctl vif`).
    pub nh: Option<u32>,
}

/// A floating IP an interface may use as its source toward the floating IP's VRF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VifFip {
    /// The floating address.
    pub fip: u32,
    /// The VRF it lives in (the public network's).
    pub vrf: u16,
    /// The VM address it stands for (a copy of the floating-IP table's, kept in step by
    /// `Tables::apply`, so SNAT needs no table lookup).
    pub private_ip: u32,
}

/// A configured interface as the pipeline sees it.
#[derive(Debug, Clone)]
pub struct Vif {
    /// The configuration.
    pub spec: VifSpec,
    /// Floating IPs bound to this interface (for SNAT), in configuration order.
    pub fips: Vec<VifFip>,
    /// The MAC addresses of a frame a VM sends to be routed: the vRouter's, then the
    /// interface's own. One 12-byte compare checks both the destination and anti-spoofing.
    pub routed_l2: [u8; 12],
}

impl Vif {
    /// The interface `spec` with the floating IPs `fips`.
    pub fn new(spec: VifSpec, fips: Vec<VifFip>) -> Self {
        let mut routed_l2 = [0u8; 12];
        routed_l2[..6].copy_from_slice(&crate::wire::MacAddr::VROUTER.0);
        routed_l2[6..].copy_from_slice(&spec.mac.0);
        Self {
            spec,
            fips,
            routed_l2,
        }
    }
}

impl Shadow {
    /// The kind of interface `id` must be if the host settings name it (fabric, host, agent).
    fn host_vif_kind(&self, id: u16) -> Option<VifKind> {
        let h = &self.host;
        [
            (h.fabric_vif, VifKind::Physical),
            (h.host_vif, VifKind::Host),
            (h.agent_vif, VifKind::Agent),
        ]
        .into_iter()
        .find_map(|(v, k)| (v == Some(id)).then_some(k))
    }

    /// Every operation naming an interface requires it in range and configured.
    pub(super) fn vif_exists(&self, l: &Limits, id: u16) -> Result<(), TableError> {
        ensure_below("vif", id.into(), l.vifs.into())?;
        ensure_exists("vif", id.into(), self.vifs.contains_key(&id))
    }

    /// An `AddVif`. Only a VM's interface must be in an existing VRF: the daemon adds the
    /// fabric, host and agent interfaces before the agent has created any VRF.
    /// The daemon's own interfaces (those the host settings name) keep their kind.
    pub(super) fn add_vif(&mut self, l: &Limits, spec: &VifSpec) -> Result<(), TableError> {
        ensure_below("vif", spec.id.into(), l.vifs.into())?;
        if let Some(kind) = self.host_vif_kind(spec.id) {
            if kind != spec.kind {
                return Err(TableError::Reserved {
                    what: "vif",
                    id: spec.id.into(),
                    why: "the host settings name it as one of the daemon's own interfaces \
                          (fabric, host or agent); it keeps that kind",
                });
            }
        }
        if spec.kind == VifKind::Virtual || self.vrfs.contains_key(&spec.vrf) {
            self.vrf_exists(l, spec.vrf)?;
        }
        self.vifs.insert(spec.id, spec.vrf);
        Ok(())
    }

    /// A `DelVif`: refused while a floating IP is bound to the interface.
    pub(super) fn del_vif(&mut self, l: &Limits, id: u16) -> Result<(), TableError> {
        self.vif_exists(l, id)?;
        if self.host_vif_kind(id).is_some() {
            return Err(TableError::Reserved {
                what: "vif",
                id: id.into(),
                why: "the host settings name it as one of the daemon's own interfaces \
                      (fabric, host or agent); it cannot be deleted",
            });
        }
        if let Some(((_, fip), _)) = self.fips.iter().find(|(_, vif)| **vif == id) {
            return Err(TableError::InUse {
                what: "vif",
                id: id.into(),
                by: format!("floating ip {}", std::net::Ipv4Addr::from(*fip)),
            });
        }
        self.vifs.remove(&id);
        Ok(())
    }
}
