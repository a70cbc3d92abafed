//! Ethernet II frames.

use super::WireError;

/// Length of an Ethernet II header (no VLAN tag).
pub const ETHERNET_HEADER_LEN: usize = 14;

/// A 48-bit MAC address: the contract's type (`vrouter_api::MacAddr`), one definition for the
/// dataplane, the agent and xenstore.
pub use vrouter_api::MacAddr;

/// EtherType values the pipeline classifies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EtherType;

impl EtherType {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// MPLS unicast.
    pub const MPLS: u16 = 0x8847;
    /// An 802.1Q VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// An 802.1ad service tag (QinQ).
    pub const QINQ: u16 = 0x88a8;
    /// The pre-standard QinQ tag some switches still send.
    pub const QINQ_OLD: u16 = 0x9100;

    /// True for the EtherType of a VLAN tag (802.1Q, 802.1ad or the old QinQ).
    #[inline]
    pub fn is_vlan_tag(ty: u16) -> bool {
        matches!(ty, Self::VLAN | Self::QINQ | Self::QINQ_OLD)
    }
}

mod field {
    use std::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const TYPE: Range<usize> = 12..14;
}

/// A checked view of an Ethernet II header at the start of a buffer.
#[derive(Debug)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps `buffer` after checking it holds a whole header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < ETHERNET_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Self { buffer })
    }

    /// Destination MAC.
    #[inline]
    pub fn dst(&self) -> MacAddr {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        MacAddr(m)
    }

    /// Source MAC.
    #[inline]
    pub fn src(&self) -> MacAddr {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        MacAddr(m)
    }

    /// EtherType.
    #[inline]
    pub fn ethertype(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::TYPE];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Bytes after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[ETHERNET_HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC.
    #[inline]
    pub fn set_dst(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&m.0);
    }
    /// Sets the source MAC.
    #[inline]
    pub fn set_src(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&m.0);
    }
    /// Sets the EtherType.
    #[inline]
    pub fn set_ethertype(&mut self, t: u16) {
        self.buffer.as_mut()[field::TYPE].copy_from_slice(&t.to_be_bytes());
    }
}

/// Builds the 14 header bytes for `dst`, `src`, `ethertype`: the precomputed L2 rewrite that
/// encap and tunnel nexthops carry.
pub fn header_bytes(dst: MacAddr, src: MacAddr, ethertype: u16) -> [u8; ETHERNET_HEADER_LEN] {
    let mut h = [0u8; ETHERNET_HEADER_LEN];
    h[field::DST].copy_from_slice(&dst.0);
    h[field::SRC].copy_from_slice(&src.0);
    h[field::TYPE].copy_from_slice(&ethertype.to_be_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: [u8; 16] = [
        0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00, 0x45, 0x00,
    ];

    #[test]
    fn deconstruct() {
        let f = EthernetFrame::new_checked(&FRAME[..]).expect("whole header");
        assert_eq!(f.dst(), MacAddr([2, 0, 0, 0, 0, 2]));
        assert_eq!(f.src(), MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(f.ethertype(), EtherType::IPV4);
        assert_eq!(f.payload(), &[0x45, 0x00]);
    }

    #[test]
    fn construct_matches_fixture() {
        let h = header_bytes(
            MacAddr([2, 0, 0, 0, 0, 2]),
            MacAddr([2, 0, 0, 0, 0, 1]),
            0x0800,
        );
        assert_eq!(&h[..], &FRAME[..14]);
    }

    #[test]
    fn truncated_is_rejected() {
        assert_eq!(
            EthernetFrame::new_checked(&FRAME[..13]).err(),
            Some(WireError::Truncated)
        );
    }

    #[test]
    fn mac_parse_and_display_round_trip() {
        let m: MacAddr = "02:ab:00:0c:d0:01".parse().expect("valid mac");
        assert_eq!(m.to_string(), "02:ab:00:0c:d0:01");
        assert!("02:ab:00:0c:d0".parse::<MacAddr>().is_err());
        assert!("02:ab:00:0c:d0:01:00".parse::<MacAddr>().is_err());
        assert!("zz:ab:00:0c:d0:01".parse::<MacAddr>().is_err());
    }
}
