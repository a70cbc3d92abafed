//! MPLS label stack entries (RFC 3032): `label<<12 | TC<<9 | S<<8 | TTL`.

use super::WireError;

/// Length of one label stack entry.
pub const MPLS_LABEL_LEN: usize = 4;

/// One decoded label stack entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MplsLabel {
    /// 20-bit label value.
    pub label: u32,
    /// Traffic class (EXP).
    pub tc: u8,
    /// Bottom-of-stack bit.
    pub bos: bool,
    /// TTL.
    pub ttl: u8,
}

impl MplsLabel {
    /// Largest label value.
    pub const MAX: u32 = (1 << 20) - 1;

    /// Parses the first entry of `b`.
    #[inline]
    pub fn parse(b: &[u8]) -> Result<Self, WireError> {
        if b.len() < MPLS_LABEL_LEN {
            return Err(WireError::Truncated);
        }
        let w = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        Ok(Self::from_word(w))
    }

    /// Decodes a 32-bit entry.
    #[inline]
    pub fn from_word(w: u32) -> Self {
        Self {
            label: w >> 12,
            tc: ((w >> 9) & 7) as u8,
            bos: w & 0x100 != 0,
            ttl: w as u8,
        }
    }

    /// Encodes to the 32-bit entry.
    #[inline]
    pub fn word(&self) -> u32 {
        (self.label & Self::MAX) << 12
            | u32::from(self.tc & 7) << 9
            | u32::from(self.bos) << 8
            | u32::from(self.ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_17_bos_ttl_64() {
        // From a tshark-verified capture: label 17, S=1, TTL 64.
        let bytes = [0x00, 0x01, 0x11, 0x40];
        let l = MplsLabel::parse(&bytes).expect("4 bytes");
        assert_eq!(
            l,
            MplsLabel {
                label: 17,
                tc: 0,
                bos: true,
                ttl: 64
            }
        );
        assert_eq!(l.word().to_be_bytes(), bytes);
    }

    #[test]
    fn truncated() {
        assert_eq!(MplsLabel::parse(&[0, 1, 0x11]), Err(WireError::Truncated));
    }
}
