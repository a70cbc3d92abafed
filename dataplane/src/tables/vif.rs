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
    /// dom0's link-local host interface (Xen's `xapi0`, a tap): dom0 reaches system VMs'
    /// link-local (Control) addresses through it. Forwarded like a VM's interface.
    XenLinkLocal,
}

impl VifKind {
    /// Contrail's `vif --list` type name.
    pub fn name(self) -> &'static str {
        match self {
            VifKind::Virtual => "Virtual",
            VifKind::Physical => "Physical",
            VifKind::Host => "Host",
            VifKind::Agent => "Agent",
            VifKind::XenLinkLocal => "XenLL",
        }
    }

    /// Forwarded like a VM's interface (a VM's, or dom0's link-local tap): opened by the
    /// daemon's port manager, in an existing VRF, its input checked against its MAC and IP.
    pub fn is_vm_like(self) -> bool {
        matches!(self, VifKind::Virtual | VifKind::XenLinkLocal)
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
    /// Further sources the interface may send from besides `ip` (secondary IPs, allowed
    /// address pairs). Checked only when the source is not `ip`, so the common case costs
    /// nothing more. Not used when `ip` is 0 (no address check at all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<AllowedSource>,
}

/// One more source an interface may send from: every address of a prefix (a /32 for a
/// secondary IP or a VIP), from the interface's MAC or, if given, that MAC too (a VRRP virtual
/// MAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowedSource {
    /// The prefix's address (host bits zero).
    pub ip: u32,
    /// Its length, 0..=32.
    pub len: u8,
    /// A further source MAC this prefix may be sent from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
}

impl AllowedSource {
    /// Whether `src` lies in the prefix.
    #[inline]
    pub fn contains(&self, src: u32) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.len.min(32)))
            .unwrap_or(0);
        src & mask == self.ip & mask
    }
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

    /// Whether the interface may send from `src` although it is not its address: a secondary
    /// address or an allowed address pair. Off the fast path (the primary address is compared
    /// first); a walk over a short slice, no allocation.
    #[cold]
    #[inline(never)]
    pub fn allows_source(&self, src: u32) -> bool {
        self.spec.allowed.iter().any(|a| a.contains(src))
    }

    /// Whether the interface may send from the source MAC `mac` although it is not its own:
    /// the MAC of an allowed address pair.
    #[cold]
    #[inline(never)]
    pub fn allows_mac(&self, mac: &[u8]) -> bool {
        self.spec
            .allowed
            .iter()
            .any(|a| a.mac.is_some_and(|m| m.0 == mac))
    }
}

/// Most further sources one interface may have (secondary IPs and address pairs together):
/// the check walks them, so they stay few.
pub const MAX_ALLOWED_SOURCES: usize = 64;

/// Refuses a list of further sources the check cannot use as given.
fn check_allowed(allowed: &[AllowedSource]) -> Result<(), TableError> {
    if allowed.len() > MAX_ALLOWED_SOURCES {
        return Err(TableError::Invalid {
            what: "vif allowed sources",
            why: format!("{} entries, at most {MAX_ALLOWED_SOURCES}", allowed.len()),
        });
    }
    if let Some(a) = allowed.iter().find(|a| a.len > 32) {
        return Err(TableError::Invalid {
            what: "vif allowed sources",
            why: format!("prefix length {} is longer than 32", a.len),
        });
    }
    Ok(())
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
        check_allowed(&spec.allowed)?;
        if spec.kind.is_vm_like() || self.vrfs.contains_key(&spec.vrf) {
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
