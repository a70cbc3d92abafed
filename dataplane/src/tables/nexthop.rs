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
            NexthopSpec::Composite { members } => members,
            _ => &[],
        };
        m.iter().map(|(nh, _)| *nh)
    }
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
    /// See [`NexthopSpec::Composite`].
    Composite {
        /// Members.
        members: Box<[(u32, Option<u32>)]>,
    },
    /// See [`NexthopSpec::VrfTranslate`].
    VrfTranslate {
        /// Target VRF.
        vrf: u16,
    },
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
            NexthopSpec::Composite { members } => Nexthop::Composite {
                members: members.clone().into_boxed_slice(),
            },
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
            NexthopSpec::Composite { members } => self.composite_members_ok(l, id, members)?,
            NexthopSpec::Discard => {}
        }
        self.nhs.insert(id);
        Ok(())
    }

    /// A composite's members exist and are not the composite itself (so ECMP never loops), and
    /// it has at least one.
    fn composite_members_ok(
        &self,
        l: &Limits,
        id: u32,
        members: &[(u32, Option<u32>)],
    ) -> Result<(), TableError> {
        if members.is_empty() {
            return Err(TableError::Invalid {
                what: "composite",
                why: "no members".into(),
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
