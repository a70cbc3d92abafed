// SPDX-License-Identifier: Apache-2.0
//! The identifiers that travel as text through xenstore and the agent API: UUIDs (CloudStack
//! Nic/VM/network ids) and MAC addresses. Parsing is strict so that a half-written or mangled
//! value is rejected rather than matched against the wrong interface. One definition for the
//! whole workspace: `vrouter_xen::ids` and `vrouter_dataplane::wire` re-export these.

use std::fmt;
use std::str::FromStr;

/// Why an identifier failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (hex, either case).
    #[error("malformed UUID {0:?}")]
    Uuid(String),
    /// Not six `:`-separated hex octets.
    #[error("malformed MAC address {0:?}")]
    Mac(String),
}

/// A UUID, printed in lower case (the form of our contract keys and of Contrail's API).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid(pub [u8; 16]);

impl FromStr for Uuid {
    type Err = IdError;

    /// Accepts the canonical 8-4-4-4-12 form only (either case, surrounding whitespace ignored:
    /// `xe` output ends in a newline).
    fn from_str(s: &str) -> Result<Uuid, IdError> {
        let err = || IdError::Uuid(s.to_string());
        let t = s.trim();
        let b = t.as_bytes();
        if b.len() != 36 {
            return Err(err());
        }
        let mut out = [0u8; 16];
        let mut n = 0;
        let mut i = 0;
        while i < 36 {
            if matches!(i, 8 | 13 | 18 | 23) {
                if b[i] != b'-' {
                    return Err(err());
                }
                i += 1;
                continue;
            }
            let hi = hex(b[i]).ok_or_else(err)?;
            let lo = hex(b[i + 1]).ok_or_else(err)?;
            out[n] = (hi << 4) | lo;
            n += 1;
            i += 2;
        }
        Ok(Uuid(out))
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uuid({self})")
    }
}

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The vRouter's own MAC, the "VRRP" MAC Contrail gives every VM-facing interface.
    pub const VROUTER: MacAddr = MacAddr([0x00, 0x00, 0x5e, 0x00, 0x01, 0x00]);
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// True for an address a single NIC may own: not multicast/broadcast, not all zero.
    pub fn is_unicast(&self) -> bool {
        self.0[0] & 1 == 0 && self.0 != [0; 6]
    }
}

impl FromStr for MacAddr {
    type Err = IdError;

    /// Accepts `aa:bb:cc:dd:ee:ff` (either case; one or two digits per octet, as xenstore and
    /// XAPI both print two).
    fn from_str(s: &str) -> Result<MacAddr, IdError> {
        let err = || IdError::Mac(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.trim().split(':');
        for o in out.iter_mut() {
            let p = parts.next().ok_or_else(err)?;
            if p.is_empty() || p.len() > 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(err());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

/// Serialises through `Display` and parses through `FromStr`: the contract's text form.
macro_rules! serde_as_text {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use serde_as_text;

serde_as_text!(Uuid);
serde_as_text!(MacAddr);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn test_serde_is_the_text_form() {
        let m: MacAddr = serde_json::from_str("\"02:C1:d2:e3:f4:a5\"").unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"02:c1:d2:e3:f4:a5\"");
        let e = serde_json::from_str::<Uuid>("\"nope\"").unwrap_err();
        assert!(e.to_string().contains("malformed UUID"), "{e}");
        assert!(!MacAddr::BROADCAST.is_unicast() && MacAddr::VROUTER.is_unicast());
    }

    use super::*;

    #[test]
    fn test_uuid_round_trip_lower_case() {
        let u: Uuid = "3F2504E0-4F89-11D3-9A0C-0305E82C3301\n".parse().unwrap();
        assert_eq!(u.to_string(), "3f2504e0-4f89-11d3-9a0c-0305e82c3301");
    }

    #[test]
    fn test_uuid_rejects_malformed() {
        for bad in [
            "",
            "3f2504e0-4f89-11d3-9a0c-0305e82c330",
            "3f2504e0-4f89-11d3-9a0c-0305e82c33011",
            "3f2504e04f89-11d3-9a0c-0305e82c3301-",
            "3f2504e0-4f89-11d3-9a0c-0305e82c330g",
            "3f2504e0_4f89_11d3_9a0c_0305e82c3301",
            "{3f2504e0-4f89-11d3-9a0c-0305e82c3301}",
        ] {
            assert!(bad.parse::<Uuid>().is_err(), "{bad}");
        }
    }

    #[test]
    fn test_mac() {
        let m: MacAddr = "02:AB:0:dd:ee:ff".parse().unwrap();
        assert_eq!(m.to_string(), "02:ab:00:dd:ee:ff");
        for bad in [
            "",
            "02:ab:00:dd:ee",
            "02:ab:00:dd:ee:ff:00",
            "02:ab:00:dd:ee:fff",
            "0g:00:00:00:00:00",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }
}
