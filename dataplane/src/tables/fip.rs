//! Floating IPs: static 1:1 NAT between a public VRF address and a VM's fixed IP.

use super::{Limits, Shadow, TableError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One floating IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fip {
    /// The public VRF the floating address lives in.
    pub vrf: u16,
    /// The floating (public) address.
    pub fip: u32,
    /// The VM interface it maps to.
    pub vif: u16,
    /// The VM's fixed (private) address.
    pub private_ip: u32,
}

/// Floating IPs by (public VRF, address).
#[derive(Debug, Clone, Default)]
pub struct FipTable {
    map: HashMap<(u16, u32), Fip, FastHash>,
}

impl FipTable {
    /// DNAT lookup: the floating IP `addr` in `vrf`.
    #[inline]
    pub fn get(&self, vrf: u16, addr: u32) -> Option<&Fip> {
        self.map.get(&(vrf, addr))
    }
    /// Adds or replaces; returns the previous entry.
    pub fn insert(&mut self, f: Fip) -> Option<Fip> {
        self.map.insert((f.vrf, f.fip), f)
    }
    /// Removes.
    pub fn remove(&mut self, vrf: u16, addr: u32) -> Option<Fip> {
        self.map.remove(&(vrf, addr))
    }
    /// All entries.
    pub fn iter(&self) -> impl Iterator<Item = &Fip> {
        self.map.values()
    }
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl Shadow {
    /// An `AddFip`: the public VRF and the VM interface must exist.
    pub(super) fn add_fip(&mut self, l: &Limits, f: &Fip) -> Result<(), TableError> {
        self.vrf_exists(l, f.vrf)?;
        self.vif_exists(l, f.vif)?;
        self.fips.insert((f.vrf, f.fip), f.vif);
        Ok(())
    }

    /// A `DelFip`: the floating IP must exist.
    pub(super) fn del_fip(&mut self, vrf: u16, fip: u32) -> Result<(), TableError> {
        if self.fips.remove(&(vrf, fip)).is_none() {
            return Err(TableError::NotFound {
                what: "floating ip",
                id: fip.into(),
            });
        }
        Ok(())
    }
}

/// A small, fast hasher for integer keys on the packet path (SipHash is needlessly slow here and
/// the keys are not attacker-chosen in a way that matters: the control plane sets them).
#[derive(Debug, Clone, Copy, Default)]
pub struct FastHash;

impl std::hash::BuildHasher for FastHash {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(0)
    }
}

/// The hasher [`FastHash`] builds.
#[derive(Debug, Clone, Copy)]
pub struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn finish(&self) -> u64 {
        let h = self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 32)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u16(&mut self, i: u16) {
        self.0 = (self.0.rotate_left(16) ^ u64::from(i)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_u32(&mut self, i: u32) {
        self.0 = (self.0.rotate_left(32) ^ u64::from(i)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}
