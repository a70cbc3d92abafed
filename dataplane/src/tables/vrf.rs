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
    /// Bit `host_bucket(a)` set when some /32 route's address `a` falls in that bucket (its
    /// /24, hashed to 64 buckets): a lookup whose bucket is clear skips the /32 level, whose
    /// probe is most of the cost of a destination routed by a shorter prefix (the outside
    /// behind a service chain or a gateway). A VRF's /32s are its VMs', a few /24s.
    pub host_filter: u64,
    /// /32 routes per bucket, to clear `host_filter` bits on delete.
    host_count: Box<[u32; 64]>,
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
            host_filter: 0,
            host_count: Box::new([0; 64]),
            fip_count: 0,
            policy: None,
            flow: None,
        }
    }

    /// Routes in this VRF.
    pub fn routes(&self) -> u64 {
        self.plen_count.iter().map(|&c| u64::from(c)).sum()
    }

    pub(crate) fn route_added(&mut self, prefix: u32, plen: u8) {
        let p = usize::from(plen.min(32));
        self.plen_count[p] += 1;
        self.plens |= 1 << p;
        if p == 32 {
            let b = host_bucket(prefix);
            self.host_count[b as usize] += 1;
            self.host_filter |= 1 << b;
        }
    }

    pub(crate) fn route_removed(&mut self, prefix: u32, plen: u8) {
        let p = usize::from(plen.min(32));
        self.plen_count[p] = self.plen_count[p].saturating_sub(1);
        if self.plen_count[p] == 0 {
            self.plens &= !(1 << p);
        }
        if p == 32 {
            let b = host_bucket(prefix);
            let c = &mut self.host_count[b as usize];
            *c = c.saturating_sub(1);
            if *c == 0 {
                self.host_filter &= !(1 << b);
            }
        }
    }

    /// The prefix lengths worth probing for `addr`: `plens` without /32 when no /32 route
    /// shares `addr`'s bucket (see `host_filter`). Five instructions against a probe's ~34.
    #[inline(always)]
    pub fn plens_for(&self, addr: u32) -> u64 {
        let hit = (self.host_filter >> host_bucket(addr)) & 1;
        self.plens & !((hit ^ 1) << 32)
    }
}

/// The `host_filter` bucket of an address: its /24, multiplied so neighbouring /24s spread.
#[inline(always)]
fn host_bucket(addr: u32) -> u32 {
    (addr >> 8).wrapping_mul(0x9e37_79b1) >> 26
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::{new_tables, Limits, Route, TableOp};

    #[test]
    fn the_host_route_filter_skips_the_32_level_only_where_no_host_route_can_match() {
        let mut v = Vrf::new(1, "vn".into());
        v.route_added(0, 0);
        v.route_added(0xc633_6400, 24);
        assert_eq!(v.plens_for(0x0a01_0105), 1 | 1 << 24, "no /32 at all");
        v.route_added(0x0a01_0105, 32);
        v.route_added(0x0a01_0106, 32);
        // Any address of the hosts' /24 probes /32; the outside /24 (another bucket) not.
        assert_eq!(v.plens_for(0x0a01_01ff) >> 32, 1);
        assert_ne!(host_bucket(0x0a01_0100), host_bucket(0xc633_6400));
        assert_eq!(v.plens_for(0xc633_6406), 1 | 1 << 24);
        // The bucket stays set until its last host route goes.
        v.route_removed(0x0a01_0105, 32);
        assert_eq!(v.plens_for(0x0a01_0106) >> 32, 1);
        v.route_removed(0x0a01_0106, 32);
        assert_eq!(v.plens_for(0x0a01_0106) >> 32, 0);
        assert_eq!(v.host_filter, 0);
    }

    #[test]
    fn lookups_find_every_route_with_the_filter() {
        let (mut w, _r) = new_tables(Limits::default());
        let route = |prefix, plen| TableOp::AddRoute {
            vrf: 1,
            prefix,
            plen,
            route: Route {
                nh: 0,
                label: Some(prefix & 0xff),
                proxy_arp: false,
            },
        };
        let mut ops = vec![TableOp::AddVrf {
            id: 1,
            name: "vn".into(),
        }];
        // Host routes spread over 64 /24s, and a /16 covering them and more.
        ops.extend((0..64u32).map(|i| route(0x0a00_0001 | i << 8, 32)));
        ops.push(route(0x0a00_0000, 16));
        w.apply(ops).expect("valid");
        w.read(|t| {
            for i in 0..64u32 {
                let a = 0x0a00_0001 | i << 8;
                assert_eq!(t.lookup(1, a).map(|(_, l)| l), Some(32), "{a:#x}");
                assert_eq!(t.lookup(1, a + 1).map(|(_, l)| l), Some(16), "{a:#x}");
            }
            assert_eq!(t.lookup(1, 0x0b00_0001), None);
        })
        .expect("tables");
    }
}
