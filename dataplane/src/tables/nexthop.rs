//! Nexthops: what to do with a packet once its route is known.

use super::{ensure_below, ensure_exists, Limits, Route, Shadow, TableError};
use crate::wire::{checksum, ethernet, ip_proto, MacAddr, GRE_PROTO_MPLS, MPLS_UDP_PORT};
use serde::{Deserialize, Serialize};

/// Id 0 is always the discard nexthop, as in Contrail.
pub const NH_DISCARD: u32 = 0;

/// How a tunnel nexthop encapsulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TunnelKind {
    /// MPLS over UDP (RFC 7510), UDP destination 6635.
    MplsOverUdp,
    /// MPLS over GRE (RFC 4023), GRE protocol 0x8847.
    MplsOverGre,
}

/// A nexthop as the control plane describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NexthopSpec {
    /// Drop (counted as Discards).
    Discard,
    /// Deliver to a host-side interface unchanged: the agent (for the VN gateway address) or
    /// vhost0 (for the host's fabric address).
    Receive {
        /// Output interface.
        oif: u16,
    },
    /// Rewrite the Ethernet header and send to a local interface (a VM's own nexthop).
    Encap {
        /// Output interface.
        oif: u16,
        /// Destination MAC (the VM's).
        dmac: MacAddr,
        /// Source MAC (the vRouter's).
        smac: MacAddr,
    },
    /// Encapsulate to a remote host.
    Tunnel {
        /// Fabric interface to send on.
        oif: u16,
        /// Encapsulation.
        kind: TunnelKind,
        /// Outer source (this host's fabric IP).
        sip: u32,
        /// Outer destination (the remote host).
        dip: u32,
        /// Underlay next-hop MAC.
        dmac: MacAddr,
        /// Our fabric MAC.
        smac: MacAddr,
    },
    /// ECMP: one member chosen per flow hash; each member is (nexthop id, label).
    Composite {
        /// Members.
        members: Vec<(u32, Option<u32>)>,
        /// One key per member (at most [`MAX_KEYED_MEMBERS`]), the same for the same service
        /// VM on every host and side: the member is then chosen by rendezvous hashing over the
        /// keys (see [`EcmpBuckets`]), so a member leaving moves only its own flows and both
        /// directions agree whatever the members' order. Empty (older producers): the hash is
        /// scaled to the member count, and any change of the member list moves most flows.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        keys: Vec<u32>,
    },
    /// Look the packet up again in another VRF (per-VRF table labels).
    VrfTranslate {
        /// The VRF to look up in.
        vrf: u16,
    },
}

impl NexthopSpec {
    /// Contrail's display name for the type.
    pub fn type_name(&self) -> &'static str {
        match self {
            NexthopSpec::Discard => "Drop",
            NexthopSpec::Receive { .. } => "Receive",
            NexthopSpec::Encap { .. } => "Encap",
            NexthopSpec::Tunnel { .. } => "Tunnel",
            NexthopSpec::Composite { .. } => "Composite",
            NexthopSpec::VrfTranslate { .. } => "Vrf_Translate",
        }
    }

    /// Nexthop ids this one refers to.
    pub fn members(&self) -> impl Iterator<Item = u32> + '_ {
        let m: &[(u32, Option<u32>)] = match self {
            NexthopSpec::Composite { members, .. } => members,
            _ => &[],
        };
        m.iter().map(|(nh, _)| *nh)
    }
}

/// Most members a composite with keys may have.
pub const MAX_KEYED_MEMBERS: usize = 16;

/// Hash buckets of a keyed composite, as a power of two (the bucket is the top bits of the
/// ECMP hash). 4096 keeps each member's share within about 3% (one standard deviation) of 1/n
/// at 4 members and 6% at 16, in a 4 KiB table.
pub const ECMP_BUCKET_BITS: u32 = 12;
const ECMP_BUCKETS: usize = 1 << ECMP_BUCKET_BITS;

/// A keyed composite's member choice, precomputed: bucket `b` holds the index of the member
/// whose key has the highest rendezvous weight [`rendezvous_weight`]`(b, key)` (ties: the
/// first such member). Each bucket is rendezvous (highest-random-weight) hashing over the
/// keys, so removing a member reassigns only the buckets it held, adding one takes about 1/n of
/// every other member's, and two hosts with the same keys fill the same table whatever the
/// members' order. Precomputed at control time because per packet that is one byte load
/// instead of n weights (the control thread computes 4096 × n once per change).
#[derive(Clone)]
pub struct EcmpBuckets([u8; ECMP_BUCKETS]);

impl std::fmt::Debug for EcmpBuckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EcmpBuckets({} buckets)", self.0.len())
    }
}

impl EcmpBuckets {
    /// The table for members with these keys (at most [`MAX_KEYED_MEMBERS`], checked by the
    /// table validation; extra keys are ignored).
    pub fn build(keys: &[u32]) -> Self {
        let keys = &keys[..keys.len().min(MAX_KEYED_MEMBERS)];
        let mut t = [0u8; ECMP_BUCKETS];
        for (b, slot) in t.iter_mut().enumerate() {
            let mut best = (0u64, 0u8);
            for (i, &k) in keys.iter().enumerate() {
                let w = rendezvous_weight(b as u32, k);
                if i == 0 || w > best.0 {
                    best = (w, i as u8);
                }
            }
            *slot = best.1;
        }
        Self(t)
    }

    /// The table of a composite without keys: bucket `b` to `b` scaled to `0..n`, as the hash
    /// itself was before keys existed (each member a contiguous range of the hash space; a
    /// change of `n` moves most flows). `n` past 256 is cut to 256 (a byte per bucket).
    pub fn scaled(n: usize) -> Self {
        let n = n.clamp(1, 256);
        let mut t = [0u8; ECMP_BUCKETS];
        for (b, slot) in t.iter_mut().enumerate() {
            *slot = ((b * n) >> ECMP_BUCKET_BITS) as u8;
        }
        Self(t)
    }

    /// The member index for ECMP hash `h` (its top [`ECMP_BUCKET_BITS`] bits are the bucket).
    #[inline(always)]
    pub fn pick(&self, h: u32) -> usize {
        usize::from(self.0[(h >> (32 - ECMP_BUCKET_BITS)) as usize & (ECMP_BUCKETS - 1)])
    }
}

/// The weight of member key `key` for bucket `bucket`: splitmix64's finalizer over both, so
/// the weights of different keys for one bucket are independent and uniform.
#[inline]
pub fn rendezvous_weight(bucket: u32, key: u32) -> u64 {
    let mut z = (u64::from(key) << 32 | u64::from(bucket)).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Outer header bytes a tunnel prepends, prebuilt so the per-packet work is a copy and a few
/// field stores.
pub const TUNNEL_HDR_MAX: usize = 14 + 20 + 8 + 4;

/// A nexthop in the form the pipeline executes: specs compiled to byte templates.
#[derive(Debug, Clone)]
pub enum Nexthop {
    /// See [`NexthopSpec::Discard`].
    Discard,
    /// See [`NexthopSpec::Receive`].
    Receive {
        /// Output interface.
        oif: u16,
    },
    /// See [`NexthopSpec::Encap`].
    Encap {
        /// Output interface.
        oif: u16,
        /// The 14-byte Ethernet header to write.
        l2: [u8; 14],
    },
    /// See [`NexthopSpec::Tunnel`].
    Tunnel(Box<TunnelTemplate>),
    /// See [`NexthopSpec::Composite`]. Boxed whole: one pointer keeps every nexthop small.
    Composite(Box<Ecmp>),
    /// See [`NexthopSpec::VrfTranslate`].
    VrfTranslate {
        /// Target VRF.
        vrf: u16,
    },
}

/// A composite as the pipeline executes it. Every bucket holds an index below the member
/// count by construction (`scaled(n)` picks below `n`; keyed tables are built from at most as
/// many keys as members, and never for zero members), so the pipeline indexes the members
/// without a fallible lookup: a drop path there cost 17 instructions per packet on every
/// nexthop in callgrind, through code layout.
#[derive(Debug, Clone)]
pub struct Ecmp {
    /// Members (nexthop id, label).
    pub members: Box<[(u32, Option<u32>)]>,
    /// The member of each hash bucket: the rendezvous winner for a composite with keys, the
    /// hash scaled to the member count without (one table either way, so the packet path has
    /// no branch on it).
    pub buckets: EcmpBuckets,
}

/// Prebuilt outer headers of a tunnel nexthop.
#[derive(Debug, Clone)]
pub struct TunnelTemplate {
    /// Fabric interface.
    pub oif: u16,
    /// Encapsulation.
    pub kind: TunnelKind,
    /// Ethernet + IPv4 + UDP/GRE + room for the label, with length, id, checksum, source port
    /// and label left zero.
    pub hdr: [u8; TUNNEL_HDR_MAX],
    /// Bytes of `hdr` used: 46 for MPLSoUDP, 42 for MPLSoGRE.
    pub len: usize,
    /// One's-complement sum of the outer IPv4 header's constant words, so the checksum costs two
    /// additions per packet.
    pub ip_sum: u32,
    /// MTU of the output interface (0: unchecked): a DF packet that would exceed it once
    /// encapsulated is trapped to the agent (`HandleDf`).
    pub mtu: u16,
    /// Longest frame (Ethernet header included) that fits `mtu` once encapsulated, so the
    /// per-packet check is one compare.
    pub max_frame: usize,
}

impl Nexthop {
    /// Compiles a spec.
    pub fn compile(spec: &NexthopSpec) -> Self {
        match spec {
            NexthopSpec::Discard => Nexthop::Discard,
            NexthopSpec::Receive { oif } => Nexthop::Receive { oif: *oif },
            NexthopSpec::Encap { oif, dmac, smac } => Nexthop::Encap {
                oif: *oif,
                l2: ethernet::header_bytes(*dmac, *smac, ethernet::EtherType::IPV4),
            },
            NexthopSpec::Tunnel {
                oif,
                kind,
                sip,
                dip,
                dmac,
                smac,
            } => Nexthop::Tunnel(Box::new(TunnelTemplate::new(
                *oif, *kind, *sip, *dip, *dmac, *smac,
            ))),
            // (Validation refuses a composite without members; it would drop anyway.)
            NexthopSpec::Composite { members, .. } if members.is_empty() => Nexthop::Discard,
            NexthopSpec::Composite { members, keys } => Nexthop::Composite(Box::new(Ecmp {
                members: members.clone().into_boxed_slice(),
                buckets: if keys.is_empty() {
                    EcmpBuckets::scaled(members.len())
                } else {
                    EcmpBuckets::build(&keys[..keys.len().min(members.len())])
                },
            })),
            NexthopSpec::VrfTranslate { vrf } => Nexthop::VrfTranslate { vrf: *vrf },
        }
    }
}

impl TunnelTemplate {
    fn new(oif: u16, kind: TunnelKind, sip: u32, dip: u32, dmac: MacAddr, smac: MacAddr) -> Self {
        let mut hdr = [0u8; TUNNEL_HDR_MAX];
        hdr[..14].copy_from_slice(&ethernet::header_bytes(
            dmac,
            smac,
            ethernet::EtherType::IPV4,
        ));
        let ip = &mut hdr[14..34];
        ip[0] = 0x45;
        ip[8] = 64; // outer TTL
        ip[9] = match kind {
            TunnelKind::MplsOverUdp => ip_proto::UDP,
            TunnelKind::MplsOverGre => ip_proto::GRE,
        };
        ip[12..16].copy_from_slice(&sip.to_be_bytes());
        ip[16..20].copy_from_slice(&dip.to_be_bytes());
        let ip_sum = checksum::sum(ip);
        let len = match kind {
            TunnelKind::MplsOverUdp => {
                hdr[36..38].copy_from_slice(&MPLS_UDP_PORT.to_be_bytes());
                46
            }
            TunnelKind::MplsOverGre => {
                hdr[36..38].copy_from_slice(&GRE_PROTO_MPLS.to_be_bytes());
                42
            }
        };
        Self {
            oif,
            kind,
            hdr,
            len,
            ip_sum,
            mtu: 0,
            max_frame: usize::MAX,
        }
    }

    /// Sets the output interface's MTU (0: unchecked).
    pub fn set_mtu(&mut self, mtu: u16) {
        self.mtu = mtu;
        self.max_frame = match mtu {
            0 => usize::MAX,
            m => (usize::from(m) + 14).saturating_sub(self.len - 14),
        };
    }

    /// The MTU a VM must use for its packets to fit once encapsulated.
    pub fn inner_mtu(&self) -> u32 {
        u32::from(self.mtu).saturating_sub((self.len - 14) as u32)
    }
}

impl Shadow {
    /// Every operation naming a nexthop requires it in range and configured.
    pub(super) fn nh_exists(&self, l: &Limits, id: u32) -> Result<(), TableError> {
        ensure_below("nexthop", id.into(), l.nexthops.into())?;
        ensure_exists("nexthop", id.into(), self.nhs.contains(&id))
    }

    /// An `AddNh`. The id must also fit the bits a route keeps for it, and whatever the nexthop
    /// sends to must exist.
    pub(super) fn add_nh(
        &mut self,
        l: &Limits,
        id: u32,
        spec: &NexthopSpec,
    ) -> Result<(), TableError> {
        if id == NH_DISCARD {
            return Err(TableError::Invalid {
                what: "nexthop",
                why: "id 0 is the fixed discard nexthop".into(),
            });
        }
        if id >= l.nexthops || id > Route::MAX_NH {
            return Err(TableError::OutOfRange {
                what: "nexthop",
                id: id.into(),
                limit: l.nexthops.into(),
            });
        }
        match spec {
            NexthopSpec::Receive { oif }
            | NexthopSpec::Encap { oif, .. }
            | NexthopSpec::Tunnel { oif, .. } => self.vif_exists(l, *oif)?,
            NexthopSpec::VrfTranslate { vrf } => self.vrf_exists(l, *vrf)?,
            NexthopSpec::Composite { members, keys } => {
                self.composite_members_ok(l, id, members, keys)?
            }
            NexthopSpec::Discard => {}
        }
        self.nhs.insert(id);
        Ok(())
    }

    /// A composite's members exist and are not the composite itself (so ECMP never loops), and
    /// it has at least one; keys, if any, are one per member and at most
    /// [`MAX_KEYED_MEMBERS`] (the bucket table holds member indices in a byte, and building it
    /// costs buckets × members weights).
    fn composite_members_ok(
        &self,
        l: &Limits,
        id: u32,
        members: &[(u32, Option<u32>)],
        keys: &[u32],
    ) -> Result<(), TableError> {
        if members.is_empty() {
            return Err(TableError::Invalid {
                what: "composite",
                why: "no members".into(),
            });
        }
        if !keys.is_empty() && keys.len() != members.len() {
            return Err(TableError::Invalid {
                what: "composite",
                why: format!("{} keys for {} members", keys.len(), members.len()),
            });
        }
        if keys.len() > MAX_KEYED_MEMBERS {
            return Err(TableError::Invalid {
                what: "composite",
                why: format!("{} keyed members, at most {MAX_KEYED_MEMBERS}", keys.len()),
            });
        }
        for &(member, _) in members {
            self.nh_exists(l, member)?;
            if member == id {
                return Err(TableError::Invalid {
                    what: "composite",
                    why: "member is itself".into(),
                });
            }
        }
        Ok(())
    }

    /// A `DelNh`: the discard nexthop is permanent.
    pub(super) fn del_nh(&mut self, l: &Limits, id: u32) -> Result<(), TableError> {
        if id == NH_DISCARD {
            return Err(TableError::Invalid {
                what: "nexthop",
                why: "the discard nexthop cannot be deleted".into(),
            });
        }
        self.nh_exists(l, id)?;
        self.nhs.remove(&id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::{new_tables, Limits, TableOp};

    fn composite(members: usize, keys: usize) -> TableOp {
        TableOp::AddNh {
            id: 100,
            spec: NexthopSpec::Composite {
                members: vec![(NH_DISCARD, None); members],
                keys: (1..=keys as u32).collect(),
            },
        }
    }

    #[test]
    fn keys_are_one_per_member_and_at_most_sixteen() {
        let (mut w, _r) = new_tables(Limits::default());
        w.apply(vec![composite(3, 0)]).expect("no keys");
        w.apply(vec![composite(3, 3)]).expect("a key per member");
        w.apply(vec![composite(16, 16)]).expect("sixteen");
        assert!(w.apply(vec![composite(3, 2)]).is_err());
        assert!(w.apply(vec![composite(17, 17)]).is_err());
    }

    #[test]
    fn an_unkeyed_table_scales_the_hash_to_the_member_count() {
        for n in 1..=8usize {
            let b = EcmpBuckets::scaled(n);
            for h in [0u32, 1 << 20, u32::MAX / 3, u32::MAX / 2, u32::MAX] {
                let top = h & !((1 << (32 - ECMP_BUCKET_BITS)) - 1);
                assert_eq!(b.pick(h), ((u64::from(top) * n as u64) >> 32) as usize);
            }
        }
    }
}
