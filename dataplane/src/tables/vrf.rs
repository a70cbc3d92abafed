//! VRFs: one forwarding table per virtual network.

use super::{ensure_below, ensure_exists, Limits, Shadow, TableError, FABRIC_VRF};

/// Per-VRF state the pipeline needs besides its routes.
#[derive(Debug, Clone)]
pub struct Vrf {
    /// Id.
    pub id: u16,
    /// Name (Contrail: the network's fq_name joined with ':').
    pub name: String,
    /// Bit n set when some route of prefix length n exists.
    pub plens: u64,
    /// Routes per prefix length, to clear `plens` bits on delete.
    pub plen_count: [u32; 33],
    /// Floating IPs whose public side is this VRF (DNAT is tried only when non-zero).
    pub fip_count: u32,
    /// Flow configuration (policy flag, policies, subnets, limit), as set.
    pub policy: Option<super::VrfPolicy>,
    /// The same, compiled for the pipeline; `Some` means packets in this VRF use flows.
    pub flow: Option<std::sync::Arc<super::CompiledPolicy>>,
}

impl Vrf {
    /// A VRF with no routes.
    pub fn new(id: u16, name: String) -> Self {
        Self {
            id,
            name,
            plens: 0,
            plen_count: [0; 33],
            fip_count: 0,
            policy: None,
            flow: None,
        }
    }

    /// Routes in this VRF.
    pub fn routes(&self) -> u64 {
        self.plen_count.iter().map(|&c| u64::from(c)).sum()
    }

    pub(crate) fn route_added(&mut self, plen: u8) {
        let p = usize::from(plen.min(32));
        self.plen_count[p] += 1;
        self.plens |= 1 << p;
    }

    pub(crate) fn route_removed(&mut self, plen: u8) {
        let p = usize::from(plen.min(32));
        self.plen_count[p] = self.plen_count[p].saturating_sub(1);
        if self.plen_count[p] == 0 {
            self.plens &= !(1 << p);
        }
    }
}

impl Shadow {
    /// Every operation naming a VRF requires it in range and configured.
    pub(super) fn vrf_exists(&self, l: &Limits, id: u16) -> Result<(), TableError> {
        ensure_below("vrf", id.into(), l.vrfs.into())?;
        ensure_exists("vrf", id.into(), self.vrfs.contains_key(&id))
    }

    /// An `AddVrf`: names are unique, since the control plane looks VRFs up by name.
    /// The fabric VRF may be restated with its own name (which changes nothing) but not changed.
    pub(super) fn add_vrf(&mut self, l: &Limits, id: u16, name: &str) -> Result<(), TableError> {
        ensure_below("vrf", id.into(), l.vrfs.into())?;
        if id == FABRIC_VRF && self.vrfs.get(&id).is_some_and(|n| n != name) {
            return Err(TableError::Reserved {
                what: "vrf",
                id: id.into(),
                why: "it is the fabric VRF, which cannot be renamed or replaced (VRFs of \
                      networks start at 1)",
            });
        }
        if let Some((other, _)) = self.vrfs.iter().find(|(o, n)| *n == name && **o != id) {
            return Err(TableError::Invalid {
                what: "vrf name",
                why: format!("{name:?} already names vrf {other}"),
            });
        }
        self.vrfs.insert(id, name.to_owned());
        Ok(())
    }

    /// A `DelVrf`: refused while an interface or a floating IP lives in it; its policy
    /// attachment goes with it.
    pub(super) fn del_vrf(&mut self, l: &Limits, id: u16) -> Result<(), TableError> {
        self.vrf_exists(l, id)?;
        if id == FABRIC_VRF {
            return Err(TableError::Reserved {
                what: "vrf",
                id: id.into(),
                why: "it is the fabric VRF, which cannot be deleted",
            });
        }
        if let Some((vif, _)) = self.vifs.iter().find(|(_, vrf)| **vrf == id) {
            return Err(TableError::InUse {
                what: "vrf",
                id: id.into(),
                by: format!("vif {vif}"),
            });
        }
        if let Some(((_, fip), _)) = self.fips.iter().find(|((vrf, _), _)| *vrf == id) {
            return Err(TableError::InUse {
                what: "vrf",
                id: id.into(),
                by: format!("floating ip {}", std::net::Ipv4Addr::from(*fip)),
            });
        }
        self.vrfs.remove(&id);
        self.attached.remove(&id);
        Ok(())
    }
}
