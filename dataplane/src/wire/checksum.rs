//! Internet checksum (RFC 1071) and its incremental update (RFC 1624, eqn. 3).
//!
//! The pipeline rewrites TTLs and addresses on every packet; recomputing a checksum over a whole
//! header or payload would cost far more than the rewrite, so every rewrite updates in place.

/// One's-complement sum of `data` (big-endian 16-bit words), not folded, not inverted.
#[inline]
pub fn sum(data: &[u8]) -> u32 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }
    fold64(acc)
}

#[inline]
fn fold64(mut acc: u64) -> u32 {
    while acc >> 32 != 0 {
        acc = (acc & 0xffff_ffff) + (acc >> 32);
    }
    acc as u32
}

/// Folds a 32-bit one's-complement accumulator into 16 bits (not inverted).
#[inline]
pub fn fold(mut acc: u32) -> u16 {
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// The checksum field value for `data`: `!fold(sum(data))`.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')` for one 16-bit word changing from `old` to `new`.
#[inline]
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    let acc = u32::from(!csum) + u32::from(!old) + u32::from(new);
    !fold(acc)
}

/// Incremental update for a 32-bit field (an IPv4 address) changing from `old` to `new`.
#[inline]
pub fn update32(csum: u16, old: u32, new: u32) -> u16 {
    let acc = u32::from(!csum)
        + u32::from(!(old >> 16) as u16)
        + u32::from(!(old as u16))
        + (new >> 16)
        + (new & 0xffff);
    !fold(acc)
}

/// Like [`update16`] for UDP, whose checksum 0 means "none" and must stay 0; a computed 0 is sent
/// as 0xffff (RFC 768).
#[inline]
pub fn update16_udp(csum: u16, old: u16, new: u16) -> u16 {
    if csum == 0 {
        return 0;
    }
    match update16(csum, old, new) {
        0 => 0xffff,
        c => c,
    }
}

/// Like [`update32`] with UDP's zero rule.
#[inline]
pub fn update32_udp(csum: u16, old: u32, new: u32) -> u16 {
    if csum == 0 {
        return 0;
    }
    match update32(csum, old, new) {
        0 => 0xffff,
        c => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 header from a real capture (checksum 0xb861 at bytes 10..12).
    const IPV4_HDR: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    #[test]
    fn full_checksum_of_valid_header_is_zero() {
        assert_eq!(checksum(&IPV4_HDR), 0);
        let mut h = IPV4_HDR;
        h[10] = 0;
        h[11] = 0;
        assert_eq!(checksum(&h), 0xb861);
    }

    #[test]
    fn incremental_matches_recompute() {
        let mut h = IPV4_HDR;
        let old_ttl_proto = u16::from_be_bytes([h[8], h[9]]);
        h[8] -= 1;
        let new_ttl_proto = u16::from_be_bytes([h[8], h[9]]);
        let c = update16(0xb861, old_ttl_proto, new_ttl_proto);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum(&h), 0);

        let old = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
        let new = 0x0a01_0203;
        let c = update32(c, old, new);
        h[12..16].copy_from_slice(&new.to_be_bytes());
        h[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum(&h), 0);
    }

    #[test]
    fn odd_length_sum_pads_with_zero() {
        assert_eq!(sum(&[0x12]), 0x1200);
    }

    #[test]
    fn udp_zero_checksum_stays_zero() {
        assert_eq!(update32_udp(0, 1, 2), 0);
    }
}
