//! IPv4 headers.

use super::{checksum, WireError};

/// Length of an IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = 20;

mod field {
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LEN: usize = 2;
    pub const ID: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTO: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

/// A checked view of an IPv4 packet at the start of a buffer.
///
/// `new_checked` guarantees: version 4, IHL >= 5, the header fits, the total length covers the
/// header and fits in the buffer (trailing bytes, e.g. Ethernet padding, are allowed).
#[derive(Debug)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Validates the header and wraps `buffer`.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        check(buffer.as_ref())?;
        Ok(Self { buffer })
    }

    /// Header length in bytes (IHL * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }
    /// Total length field.
    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LEN)
    }
    /// Type of service / DSCP+ECN byte.
    #[inline]
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }
    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ID)
    }
    /// Don't-fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS_FRAG] & 0x40 != 0
    }
    /// More-fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS_FRAG] & 0x20 != 0
    }
    /// Fragment offset in 8-byte units.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        be16(self.buffer.as_ref(), field::FLAGS_FRAG) & 0x1fff
    }
    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }
    /// Protocol.
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTO]
    }
    /// Header checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }
    /// Source address (host order).
    #[inline]
    pub fn src(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SRC)
    }
    /// Destination address (host order).
    #[inline]
    pub fn dst(&self) -> u32 {
        be32(self.buffer.as_ref(), field::DST)
    }
    /// True if the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(&self.buffer.as_ref()[..self.header_len()]) == 0
    }
    /// The payload as declared by the total length.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Decrements the TTL and updates the header checksum incrementally.
    #[inline]
    pub fn decrement_ttl(&mut self) {
        let b = self.buffer.as_mut();
        let old = be16(b, field::TTL);
        b[field::TTL] = b[field::TTL].wrapping_sub(1);
        let new = be16(b, field::TTL);
        let c = checksum::update16(be16(b, field::CHECKSUM), old, new);
        b[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
    }

    /// Rewrites the source address, updating the header checksum.
    #[inline]
    pub fn set_src_update(&mut self, addr: u32) {
        self.set_addr_update(field::SRC, addr)
    }

    /// Rewrites the destination address, updating the header checksum.
    #[inline]
    pub fn set_dst_update(&mut self, addr: u32) {
        self.set_addr_update(field::DST, addr)
    }

    #[inline]
    fn set_addr_update(&mut self, at: usize, addr: u32) {
        let b = self.buffer.as_mut();
        let old = be32(b, at);
        b[at..at + 4].copy_from_slice(&addr.to_be_bytes());
        let c = checksum::update32(be16(b, field::CHECKSUM), old, addr);
        b[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
    }

    /// Recomputes the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        let hl = self.header_len();
        let b = self.buffer.as_mut();
        b[field::CHECKSUM] = 0;
        b[field::CHECKSUM + 1] = 0;
        let c = checksum::checksum(&b[..hl]);
        b[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
    }

    /// The payload, mutable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, tl) = (self.header_len(), usize::from(self.total_len()));
        &mut self.buffer.as_mut()[hl..tl]
    }
}

/// Validates an IPv4 header at the start of `b`: version 4, IHL >= 5, the header fits, the total
/// length covers the header and fits in `b`.
#[inline]
pub fn check(b: &[u8]) -> Result<(), WireError> {
    let h = b
        .first_chunk::<IPV4_HEADER_LEN>()
        .ok_or(WireError::Truncated)?;
    lengths(h, b.len()).map(|_| ())
}

/// [`check`] on a fixed header `h` already in hand, of a packet of `len` bytes: returns the
/// header length and the total length. The packet path reads headers as fixed-size arrays, so
/// this costs no bounds checks.
#[inline(always)]
pub fn lengths(h: &[u8; IPV4_HEADER_LEN], len: usize) -> Result<(usize, usize), WireError> {
    let ver_ihl = h[field::VER_IHL];
    let hlen = usize::from(ver_ihl & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([h[field::LEN], h[field::LEN + 1]]));
    // One test for the good case (a total covering the header and fitting `len` means the header
    // fits too); which rule failed is only worked out for bad packets.
    if ver_ihl >> 4 == 4 && hlen >= IPV4_HEADER_LEN && total >= hlen && total <= len {
        return Ok((hlen, total));
    }
    if ver_ihl >> 4 != 4 || hlen < IPV4_HEADER_LEN || total < hlen {
        Err(WireError::Malformed)
    } else {
        Err(WireError::Truncated)
    }
}

/// [`lengths`] plus [`checksum_ok`] (RFC 1812 5.2.2: a router must verify the header checksum),
/// for the header `h` in hand at the start of the packet `ip`. Returns the header and total
/// lengths, or [`WireError::Checksum`] for a header that is well formed but whose checksum does
/// not verify.
#[inline(always)]
pub fn lengths_verified(h: &[u8; IPV4_HEADER_LEN], ip: &[u8]) -> Result<(usize, usize), WireError> {
    let (hl, total) = lengths(h, ip.len())?;
    if !checksum_ok(h, ip, hl) {
        return Err(WireError::Checksum);
    }
    Ok((hl, total))
}

/// True if the header checksum of the header `h` of `hl` bytes (from [`lengths`]) at the start
/// of `ip` verifies (RFC 1071: the one's-complement sum of the header, checksum included, is
/// 0xffff).
///
/// The sum is taken over the header as two native-endian 64-bit words and one 32-bit word with
/// end-around carries: one's-complement addition commutes with byte swapping, and 0xffff
/// divides 2^64 - 1, so a header verifies exactly when that sum is a multiple of 0xffff (it is
/// never zero: the version nibble is 4). That is three loads, two additions with their carries
/// and a multiply-based divisibility test (LLVM's `x * inverse <= limit`), with no folds: about
/// 13 instructions on x86-64, 10-16 per packet in the pipeline (callgrind, see
/// `docs/dataplane.md`). Options (rare) are added by a cold function.
#[inline(always)]
pub fn checksum_ok(h: &[u8; IPV4_HEADER_LEN], ip: &[u8], hl: usize) -> bool {
    let (a, b) = h.split_at(8);
    let (b, c) = b.split_at(8);
    let word = |w: &[u8]| w.first_chunk::<8>().map_or(0, |w| u64::from_ne_bytes(*w));
    let tail = c
        .first_chunk::<4>()
        .map_or(0, |w| u64::from(u32::from_ne_bytes(*w)));
    let mut s = add_carry(word(a), word(b));
    s = add_carry(s, tail);
    if hl > IPV4_HEADER_LEN {
        s = add_carry(s, options_sum(ip, hl));
    }
    s.is_multiple_of(0xffff)
}

/// One's-complement addition of 64-bit words (the carry out is added back in, which cannot
/// carry again).
#[inline(always)]
fn add_carry(a: u64, b: u64) -> u64 {
    let (s, c) = a.overflowing_add(b);
    s + u64::from(c)
}

/// The options of the header `ip[..hl]` (past the fixed 20 bytes) as a sum of native-endian
/// 32-bit words, for [`lengths_verified`]. `hl` is a multiple of 4 within `ip` (checked there).
#[cold]
#[inline(never)]
fn options_sum(ip: &[u8], hl: usize) -> u64 {
    ip.get(IPV4_HEADER_LEN..hl)
        .unwrap_or_default()
        .chunks_exact(4)
        .map(|c| u64::from(u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
        .sum()
}

/// Formats a host-order IPv4 address.
pub fn fmt_addr(a: u32) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 192.168.0.1 -> 192.168.0.199, UDP, TTL 64, 0x73 bytes total; padded to the buffer.
    fn fixture() -> Vec<u8> {
        let mut v = vec![
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        v.resize(0x73, 0xab);
        v
    }

    #[test]
    fn deconstruct() {
        let b = fixture();
        let p = Ipv4Packet::new_checked(&b[..]).expect("valid");
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 0x73);
        assert!(p.dont_frag());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), 17);
        assert_eq!(p.src(), 0xc0a8_0001);
        assert_eq!(p.dst(), 0xc0a8_00c7);
        assert!(p.verify_checksum());
        assert_eq!(p.payload().len(), 0x73 - 20);
    }

    #[test]
    fn rejects_bad_headers() {
        let mut b = fixture();
        b[0] = 0x44; // IHL 4
        assert_eq!(check(&b), Err(WireError::Malformed));
        b[0] = 0x65; // version 6
        assert_eq!(check(&b), Err(WireError::Malformed));
        b[0] = 0x4f; // IHL 15 = 60 bytes, fits
        assert!(check(&b).is_ok());
        let b = fixture();
        assert_eq!(check(&b[..0x72]), Err(WireError::Truncated));
        assert_eq!(check(&b[..19]), Err(WireError::Truncated));
        let mut b = fixture();
        b[2] = 0;
        b[3] = 10; // total < header
        assert_eq!(check(&b), Err(WireError::Malformed));
    }

    #[test]
    fn the_folded_checksum_check_agrees_with_rfc1071_for_every_checksum_value() {
        // Every value of the checksum field, with and without options: exactly the one RFC 1071
        // computes verifies (and 0xffff where that is 0x0000: the other one's-complement zero,
        // which the kernel accepts too).
        for opts in [0usize, 4, 40] {
            let mut b = fixture();
            b[0] = 0x45 + (opts / 4) as u8;
            b.splice(20..20, (0..opts).map(|i| (i * 37 + 5) as u8));
            b[2..4].copy_from_slice(&((0x73 + opts) as u16).to_be_bytes());
            b[10] = 0;
            b[11] = 0;
            let good = checksum::checksum(&b[..20 + opts]);
            for ck in 0..=u16::MAX {
                b[10..12].copy_from_slice(&ck.to_be_bytes());
                let h = b.first_chunk::<20>().expect("header");
                let got = lengths_verified(h, &b);
                if ck == good || (good == 0 && ck == 0xffff) {
                    assert_eq!(got, Ok((20 + opts, 0x73 + opts)), "options {opts}");
                } else {
                    assert_eq!(got, Err(WireError::Checksum), "{ck:#06x}, options {opts}");
                }
            }
        }
        // Length errors come first: a header with a bad IHL is malformed, whatever its sum.
        let mut b = fixture();
        b[0] = 0x44;
        let h = b.first_chunk::<20>().expect("header");
        assert_eq!(lengths_verified(h, &b), Err(WireError::Malformed));
    }

    /// `hl` bytes of header (`0x40 + hl / 4` first) with the checksum field filled in, as a
    /// packet of exactly that length.
    fn header_with_checksum(mut b: Vec<u8>) -> Vec<u8> {
        let hl = b.len();
        b[0] = 0x40 + (hl / 4) as u8;
        b[2..4].copy_from_slice(&(hl as u16).to_be_bytes());
        b[10] = 0;
        b[11] = 0;
        let c = checksum::checksum(&b);
        b[10..12].copy_from_slice(&c.to_be_bytes());
        b
    }

    fn ok(b: &[u8]) -> bool {
        let h = b.first_chunk::<IPV4_HEADER_LEN>().expect("header");
        checksum_ok(h, b, usize::from(b[0] & 0x0f) * 4)
    }

    #[test]
    fn checksum_ok_accepts_well_known_headers() {
        // The two textbook headers (checksums 0xb861 and 0xb1e6, as captured on the wire).
        let wikipedia = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let tcp_syn = [
            0x45, 0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0xb1, 0xe6, 0xac, 0x10,
            0x0a, 0x63, 0xac, 0x10, 0x0a, 0x0c,
        ];
        for h in [wikipedia, tcp_syn] {
            assert_eq!(checksum::checksum(&h), 0, "the reference agrees");
            assert!(checksum_ok(&h, &h, 20));
        }
    }

    #[test]
    fn checksum_ok_rejects_every_single_bit_flip_with_and_without_options() {
        for opts in [0usize, 4, 8, 40] {
            let mut b = vec![0u8; 20 + opts];
            for (i, x) in b.iter_mut().enumerate() {
                *x = (i as u8).wrapping_mul(73).wrapping_add(11);
            }
            let b = header_with_checksum(b);
            assert!(ok(&b), "options {opts}: the filled-in header verifies");
            // IHL and length bits are flipped too: `hl` is what the caller read from the same
            // (corrupted) header; only flips that keep the header within `b` are tried.
            for bit in 0..b.len() * 8 {
                let mut f = b.clone();
                f[bit / 8] ^= 0x80 >> (bit % 8);
                let hl = usize::from(f[0] & 0x0f) * 4;
                if !(20..=f.len()).contains(&hl) {
                    continue;
                }
                let h = f.first_chunk::<IPV4_HEADER_LEN>().expect("header");
                assert!(!checksum_ok(h, &f, hl), "options {opts}, bit {bit} flipped");
            }
        }
    }

    #[test]
    fn checksum_ok_handles_carries_and_both_zeros() {
        // All-ones fields make every 64-bit addition carry out (the end-around carry matters).
        let mut b = vec![0xffu8; 20];
        b[0] = 0x45;
        let b = header_with_checksum(b);
        assert!(ok(&b));
        // Options of all ones, the largest header (60 bytes).
        let mut b = vec![0xffu8; 60];
        b[0] = 0x4f;
        let b = header_with_checksum(b);
        assert!(ok(&b));
        // A header whose checksum comes out 0x0000 also verifies with 0xffff (the other
        // one's-complement zero; RFC 1624 section 3), and with nothing else.
        let mut b = vec![0u8; 20];
        b[0] = 0x45;
        b[3] = 20;
        // 0x4500 + 0x0014 + x = 0xffff with x in the (otherwise zero) identification field.
        b[4..6].copy_from_slice(&(0xffffu16 - 0x4500 - 0x0014).to_be_bytes());
        assert_eq!(checksum::checksum(&b), 0);
        assert!(ok(&b));
        b[10..12].copy_from_slice(&[0xff, 0xff]);
        assert!(ok(&b));
        b[10..12].copy_from_slice(&[0x00, 0x01]);
        assert!(!ok(&b));
    }

    #[test]
    fn checksum_ok_agrees_with_rfc1071_on_pseudo_random_headers() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for n in 0..20_000 {
            let opts = 4 * (next() % 11) as usize;
            let mut b: Vec<u8> = (0..20 + opts).map(|_| next() as u8).collect();
            b[0] = 0x45 + (opts / 4) as u8;
            if n % 2 == 0 {
                b = header_with_checksum(b);
            }
            assert_eq!(ok(&b), checksum::checksum(&b) == 0, "header {b:02x?}");
        }
    }

    #[test]
    fn ttl_and_address_rewrites_keep_checksum_valid() {
        let mut b = fixture();
        let mut p = Ipv4Packet::new_checked(&mut b[..]).expect("valid");
        p.decrement_ttl();
        p.set_src_update(0x0a00_0001);
        p.set_dst_update(0xcb00_7105);
        assert!(p.verify_checksum());
        assert_eq!(p.ttl(), 63);
        let parsed = etherparse::Ipv4HeaderSlice::from_slice(&b).expect("etherparse parses");
        assert_eq!(parsed.source(), [10, 0, 0, 1]);
        assert_eq!(parsed.destination(), [203, 0, 113, 5]);
        assert_eq!(
            parsed.to_header().calc_header_checksum(),
            parsed.header_checksum()
        );
    }
}
