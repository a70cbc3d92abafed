//! Zero-copy header views over packet bytes, after smoltcp's wire layer.
//!
//! Each view is constructed with `new_checked`, which validates every length its accessors use,
//! so accessors cannot panic afterwards. Views never allocate. Offsets live in private `field`
//! modules. `etherparse` is the oracle these views are tested against (see the tests).

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod ipv4;
pub mod l4;
pub mod mpls;

pub use arp::ArpPacket;
pub use ethernet::{EtherType, EthernetFrame, MacAddr, ETHERNET_HEADER_LEN};
pub use ipv4::{Ipv4Packet, IPV4_HEADER_LEN};
pub use mpls::MplsLabel;

/// Why a view could not be built over some bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the header (or the length it declares) needs.
    #[error("truncated packet")]
    Truncated,
    /// A field holds a value the protocol does not allow (bad version, IHL, total length).
    #[error("malformed header")]
    Malformed,
    /// A header checksum that does not verify.
    #[error("bad header checksum")]
    Checksum,
}

/// IP protocol numbers the pipeline cares about.
pub mod ip_proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// GRE.
    pub const GRE: u8 = 47;
}

/// MPLS-over-UDP destination port (RFC 7510).
pub const MPLS_UDP_PORT: u16 = 6635;
/// The legacy MPLS-over-UDP port Contrail also accepts on receive.
pub const MPLS_UDP_PORT_LEGACY: u16 = 51234;
/// GRE protocol type for MPLS unicast (RFC 4023).
pub const GRE_PROTO_MPLS: u16 = 0x8847;
/// GRE header length without optional fields.
pub const GRE_HEADER_LEN: usize = 4;
/// UDP header length.
pub const UDP_HEADER_LEN: usize = 8;
