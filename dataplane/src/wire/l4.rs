//! The few transport-layer fields the pipeline reads or rewrites: ports (hashing, flows) and
//! checksums (NAT). TCP and UDP checksums cover an IPv4 pseudo-header, ICMP's does not.

use super::{checksum, ip_proto};

/// ICMP types that carry an embedded (offending) IP header.
pub fn icmp_is_error(icmp_type: u8) -> bool {
    matches!(icmp_type, 3 | 4 | 5 | 11 | 12)
}

/// Offset of the checksum field in the transport header, or `None` when there is none or the
/// segment is too short to hold it.
#[inline]
pub fn checksum_offset(proto: u8, l4: &[u8]) -> Option<usize> {
    let off = match proto {
        ip_proto::TCP => 16,
        ip_proto::UDP => 6,
        ip_proto::ICMP => 2,
        _ => return None,
    };
    (l4.len() >= off + 2).then_some(off)
}

/// Source and destination ports (TCP/UDP), or the ICMP echo identifier as both; zero otherwise.
#[inline]
pub fn ports(proto: u8, l4: &[u8]) -> (u16, u16) {
    match proto {
        ip_proto::TCP | ip_proto::UDP if l4.len() >= 4 => (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
        ),
        ip_proto::ICMP if l4.len() >= 6 => {
            let id = u16::from_be_bytes([l4[4], l4[5]]);
            (id, id)
        }
        _ => (0, 0),
    }
}

/// Updates the transport checksum of `l4` for an IPv4 address changing from `old` to `new`
/// (pseudo-header), if the protocol has one that covers addresses.
#[inline]
pub fn update_for_addr(proto: u8, l4: &mut [u8], old: u32, new: u32) {
    let Some(off) = checksum_offset(proto, l4) else {
        return;
    };
    let c = u16::from_be_bytes([l4[off], l4[off + 1]]);
    let c = match proto {
        ip_proto::TCP => checksum::update32(c, old, new),
        ip_proto::UDP => checksum::update32_udp(c, old, new),
        _ => return,
    };
    l4[off..off + 2].copy_from_slice(&c.to_be_bytes());
}

/// Adjusts the checksum at `l4[off]` for a 16-bit word of the covered data changing.
#[inline]
pub fn update_word(proto: u8, l4: &mut [u8], off: usize, old: u16, new: u16) {
    let c = u16::from_be_bytes([l4[off], l4[off + 1]]);
    let c = if proto == ip_proto::UDP {
        checksum::update16_udp(c, old, new)
    } else {
        checksum::update16(c, old, new)
    };
    l4[off..off + 2].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_of_each_protocol() {
        let udp = [0x30, 0x39, 0x00, 0x35, 0, 8, 0, 0];
        assert_eq!(ports(ip_proto::UDP, &udp), (12345, 53));
        let echo = [8, 0, 0, 0, 0x12, 0x34, 0, 1];
        assert_eq!(ports(ip_proto::ICMP, &echo), (0x1234, 0x1234));
        assert_eq!(ports(ip_proto::TCP, &[0, 1]), (0, 0));
        assert_eq!(ports(ip_proto::GRE, &udp), (0, 0));
    }

    #[test]
    fn checksum_offsets() {
        assert_eq!(checksum_offset(ip_proto::TCP, &[0; 20]), Some(16));
        assert_eq!(checksum_offset(ip_proto::TCP, &[0; 17]), None);
        assert_eq!(checksum_offset(ip_proto::UDP, &[0; 8]), Some(6));
        assert_eq!(checksum_offset(ip_proto::ICMP, &[0; 8]), Some(2));
        assert_eq!(checksum_offset(99, &[0; 8]), None);
    }
}
