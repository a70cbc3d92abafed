//! ARP for IPv4 over Ethernet (RFC 826).

use super::{MacAddr, WireError};

/// Length of an Ethernet/IPv4 ARP packet.
pub const ARP_LEN: usize = 28;
/// ARP request opcode.
pub const OP_REQUEST: u16 = 1;
/// ARP reply opcode.
pub const OP_REPLY: u16 = 2;

mod field {
    use std::ops::Range;
    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OP: Range<usize> = 6..8;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// A checked view of an Ethernet/IPv4 ARP packet.
#[derive(Debug)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Checks length and that this is Ethernet/IPv4 ARP.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < ARP_LEN {
            return Err(WireError::Truncated);
        }
        if b[field::HTYPE] != [0, 1]
            || b[field::PTYPE] != [8, 0]
            || b[field::HLEN] != 6
            || b[field::PLEN] != 4
        {
            return Err(WireError::Malformed);
        }
        Ok(Self { buffer })
    }
    /// Opcode.
    #[inline]
    pub fn op(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::OP];
        u16::from_be_bytes([b[0], b[1]])
    }
    /// Sender hardware address.
    #[inline]
    pub fn sha(&self) -> MacAddr {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buffer.as_ref()[field::SHA]);
        MacAddr(m)
    }
    /// Sender protocol address.
    #[inline]
    pub fn spa(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::SPA];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
    /// Target protocol address.
    #[inline]
    pub fn tpa(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::TPA];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Turns a request into the reply "`tpa` is at `mac`", in place.
    #[inline]
    pub fn make_reply(&mut self, mac: MacAddr) {
        let (sha, spa, tpa) = (self.sha(), self.spa(), self.tpa());
        let b = self.buffer.as_mut();
        b[field::OP].copy_from_slice(&OP_REPLY.to_be_bytes());
        b[field::THA].copy_from_slice(&sha.0);
        b[field::TPA].copy_from_slice(&spa.to_be_bytes());
        b[field::SHA].copy_from_slice(&mac.0);
        b[field::SPA].copy_from_slice(&tpa.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// who-has 10.1.1.1 tell 10.1.1.2 (02:00:00:00:00:01).
    const REQUEST: [u8; 28] = [
        0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 1, 1, 2, 0, 0, 0, 0, 0, 0, 10, 1, 1, 1,
    ];

    #[test]
    fn request_to_reply() {
        let mut b = REQUEST;
        let mut a = ArpPacket::new_checked(&mut b[..]).expect("valid arp");
        assert_eq!(a.op(), OP_REQUEST);
        assert_eq!(a.tpa(), 0x0a01_0101);
        a.make_reply(MacAddr::VROUTER);
        let a = ArpPacket::new_checked(&b[..]).expect("still valid");
        assert_eq!(a.op(), OP_REPLY);
        assert_eq!(a.sha(), MacAddr::VROUTER);
        assert_eq!(a.spa(), 0x0a01_0101);
        assert_eq!(a.tpa(), 0x0a01_0102);
        assert_eq!(&b[18..24], &[2, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn rejects_non_ipv4_arp() {
        let mut b = REQUEST;
        b[5] = 16;
        assert_eq!(
            ArpPacket::new_checked(&b[..]).err(),
            Some(WireError::Malformed)
        );
        assert_eq!(
            ArpPacket::new_checked(&REQUEST[..27]).err(),
            Some(WireError::Truncated)
        );
    }
}
