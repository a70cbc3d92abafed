//! The one drop-reason enum. Every packet the pipeline does not transmit ends with one of these,
//! and each is counted. Display names are the real vRouter's (`dropstats`), so operators who know
//! Contrail read our counters without a glossary; the few reasons Contrail lacks are marked.

use serde::Serialize;

macro_rules! drop_reasons {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal, )*) => {
        /// Why a packet was dropped.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[repr(u8)]
        pub enum DropReason {
            $( $(#[$doc])* $variant, )*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            /// Number of reasons (size of a counter array).
            pub const COUNT: usize = Self::ALL.len();

            /// The `dropstats` display name.
            pub fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name,)* }
            }

            /// Index into a counter array.
            #[inline]
            pub fn index(self) -> usize {
                self as usize
            }

            /// The reason with this counter index.
            pub fn from_index(i: usize) -> Option<Self> {
                Self::ALL.get(i).copied()
            }

            /// Parses a display name or a snake_case variant name.
            pub fn from_name(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|r| r.name().eq_ignore_ascii_case(s)
                    || format!("{r:?}").eq_ignore_ascii_case(&s.replace('_', "")))
            }
        }
    };
}

drop_reasons! {
    /// The route or nexthop says discard.
    Discard => "Discards",
    /// A header could not be read (shorter than its fixed part).
    Pull => "Pull Fails",
    /// The input interface is unknown or not usable.
    InvalidIf => "Invalid IF",
    /// A malformed ARP packet.
    InvalidArp => "Invalid ARP",
    /// A packet for the agent, but no agent interface exists.
    TrapNoIf => "Trap No IF",
    /// No output for this kind of packet from this interface (e.g. non-overlay fabric traffic
    /// without a host interface, or an unknown EtherType from a VM).
    NowhereToGo => "Nowhere to go",
    /// Flow drop: queued packets exceeded.
    FlowQueueLimitExceeded => "Flow Queue Limit Exceeded",
    /// Flow drop: no memory.
    FlowNoMemory => "Flow No Memory",
    /// Flow drop: unsupported protocol.
    FlowInvalidProtocol => "Flow Invalid Protocol",
    /// Flow drop: NAT without reverse flow.
    FlowNatNoRflow => "Flow NAT no rflow",
    /// The flow (policy) says drop.
    FlowActionDrop => "Flow Action Drop",
    /// Flow drop: bad action.
    FlowActionInvalid => "Flow Action Invalid",
    /// Flow drop: entry unusable.
    FlowUnusable => "Flow Unusable",
    /// Flow drop: table (or the VRF's share of it) is full.
    FlowTableFull => "Flow Table Full",
    /// The output interface refused the packet (ring full).
    InterfaceTxDiscard => "IF TX Discard",
    /// The interface is down or being deleted.
    InterfaceDrop => "IF Drop",
    /// Duplicate.
    Duplicated => "Duplicate(d)",
    /// No headroom left to prepend a header.
    Push => "Push Fails",
    /// TTL expired and the packet could not be trapped to the agent.
    TtlExceeded => "TTL Exceeded",
    /// The route points at a nexthop that does not exist.
    InvalidNh => "Invalid NH",
    /// An MPLS label with no entry in the label table.
    InvalidLabel => "Invalid Label",
    /// An overlay packet with an unsupported protocol (non-MPLS GRE, bad inner version).
    InvalidProtocol => "Invalid Protocol",
    /// The input interface discarded the packet.
    InterfaceRxDiscard => "IF RX Discard",
    /// Multicast source invalid.
    InvalidMcastSource => "Invalid Mcast Source",
    /// Buffer allocation failed.
    HeadAllocFail => "Head Alloc Fails",
    /// Copy-on-write failed.
    PcowFail => "PCOW fails",
    /// Multicast with DF too big.
    McastDfBit => "Jumbo Mcast Pkt with DF Bit",
    /// Multicast clone failed.
    McastCloneFail => "Mcast Clone Fail",
    /// Out of memory.
    NoMemory => "Memory Failures",
    /// A rewrite could not be applied.
    RewriteFail => "Rewrite Fail",
    /// Anything else.
    Misc => "Misc",
    /// Malformed IPv4: bad version, IHL or total length, or shorter than it declares; an overlay
    /// packet whose outer UDP length disagrees with its IPv4 payload length.
    InvalidPacket => "Invalid Packets",
    /// An IPv4 header checksum that does not verify (RFC 1812 5.2.2), on a packet from a VM or
    /// on the outer header of a fabric packet.
    CksumErr => "Checksum errors",
    /// No forwarding metadata.
    NoFmd => "No Fmd",
    /// Cloned original.
    ClonedOriginal => "Cloned Original",
    /// VXLAN VNID unknown.
    InvalidVnid => "Invalid VNID",
    /// Fragment handling failed.
    Fragments => "Fragment errors",
    /// Source address or MAC not owned by the interface (anti-spoofing).
    InvalidSource => "Invalid Source",
    /// No L2 route: a unicast frame from a VM to a MAC that is not the vRouter's (the VM's
    /// only neighbour; Contrail's bridge lookup miss).
    L2NoRoute => "No L2 Route",
    /// Fragment queue full.
    FragmentQueueFail => "Fragment Queueing Failures",
    /// New flows disabled on the interface (flow limit reached).
    NewFlows => "New Flow Drops",
    /// The flow was evicted.
    FlowEvict => "Flow Unusable (Eviction)",
    /// The original of a trapped packet.
    TrapOriginal => "Original Packet Trapped",
    /// A tunnel addressed to ourselves.
    PktLoop => "Packet Loop",
    /// ICMP error handling failed.
    IcmpError => "ICMP errors",
    /// ARP for an address with no route in the VRF (Contrail's old "ARP no where to go").
    ArpNoRoute => "ARP no where to go",
    /// Extension: the interface's VRF, or a label's VRF, does not exist.
    InvalidVrf => "Invalid VRF",
    /// Extension: no route covers the destination in the VRF (Contrail counts these under
    /// Discards through its default discard route).
    NoRoute => "No Route",
    /// Extension: a fabric packet not addressed to this host's fabric IP.
    NotForHost => "Not For Host",
    /// Extension: an 802.1Q/802.1ad-tagged frame on an untagged interface (a VM's port, or the
    /// fabric NIC's own untagged port): the pipeline has no VLANs, so routing it would strip the
    /// tag silently.
    VlanTagged => "VLAN Tagged",
    /// Extension: a policy rule applies a service (service chain) that has no running instance;
    /// the two networks are never connected directly instead.
    ServiceChainDown => "Service Chain Down",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_indexes_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert!(seen.insert(r.name()), "duplicate name {}", r.name());
            assert_eq!(r.index(), i);
            assert_eq!(DropReason::from_index(i), Some(*r));
        }
        assert_eq!(
            DropReason::from_name("Invalid Label"),
            Some(DropReason::InvalidLabel)
        );
        assert_eq!(
            DropReason::from_name("invalid_label"),
            Some(DropReason::InvalidLabel)
        );
        assert_eq!(DropReason::from_name("nope"), None);
    }
}
