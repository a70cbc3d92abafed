// SPDX-License-Identifier: Apache-2.0
//! IPv4 prefixes and MPLS labels: the routing values of the contract.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::ids::serde_as_text;

/// Why a prefix or label was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// Not `a.b.c.d[/n]`.
    #[error("{0:?} is not an IPv4 prefix (a.b.c.d/n)")]
    Syntax(String),
    /// Length above 32.
    #[error("{0:?}: prefix length must be 0..32")]
    Length(String),
    /// Host bits set where the contract wants a network address.
    #[error("{text:?} has host bits set (did you mean {network}?)")]
    HostBits {
        /// What was given.
        text: String,
        /// The network it lies in.
        network: Ipv4Prefix,
    },
    /// An MPLS label is 20 bits.
    #[error("label {0} is not below 2^20")]
    Label(u64),
}

/// An IPv4 prefix with its host bits zero: a route's destination, a subnet.
///
/// The text form is `a.b.c.d/n`; a bare address parses as a /32. Parsing is strict (host bits
/// must be zero); [`Ipv4Prefix::truncating`] builds the network an address lies in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Prefix {
    /// Network address.
    pub addr: Ipv4Addr,
    /// Length, 0..=32.
    pub len: u8,
}

impl Ipv4Prefix {
    /// The /32 of one address.
    pub fn host(addr: Ipv4Addr) -> Ipv4Prefix {
        Ipv4Prefix { addr, len: 32 }
    }

    /// The `len`-bit network `addr` lies in (host bits cleared); `None` if `len > 32`.
    pub fn truncating(addr: Ipv4Addr, len: u8) -> Option<Ipv4Prefix> {
        (len <= 32).then(|| Ipv4Prefix {
            addr: Ipv4Addr::from(u32::from(addr) & mask(len)),
            len,
        })
    }

    /// Parses `a.b.c.d/n`, clearing host bits (IPAM subnets as CloudStack gives them).
    pub fn parse_truncating(s: &str) -> Result<Ipv4Prefix, PrefixError> {
        let (addr, len) = split(s)?;
        Ipv4Prefix::truncating(addr, len).ok_or_else(|| PrefixError::Length(s.to_string()))
    }

    /// Netmask as an integer.
    pub fn mask(&self) -> u32 {
        mask(self.len)
    }

    /// Network address as an integer.
    pub fn network(&self) -> u32 {
        u32::from(self.addr)
    }

    /// Last (broadcast) address as an integer.
    pub fn broadcast(&self) -> u32 {
        self.network() | !self.mask()
    }

    /// True if `ip` lies in this prefix.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == self.network()
    }
}

fn mask(len: u8) -> u32 {
    match len {
        0 => 0,
        l => u32::MAX << (32 - u32::from(l.min(32))),
    }
}

/// `a.b.c.d[/n]` into its parts (a bare address is a /32); the length is checked, not the bits.
fn split(s: &str) -> Result<(Ipv4Addr, u8), PrefixError> {
    let (a, l) = s.split_once('/').unwrap_or((s, "32"));
    let addr: Ipv4Addr = a
        .trim()
        .parse()
        .map_err(|_| PrefixError::Syntax(s.to_string()))?;
    let len: u8 = l
        .trim()
        .parse()
        .ok()
        .filter(|l| *l <= 32)
        .ok_or_else(|| PrefixError::Length(s.to_string()))?;
    Ok((addr, len))
}

impl FromStr for Ipv4Prefix {
    type Err = PrefixError;

    /// Strict: host bits must be zero.
    fn from_str(s: &str) -> Result<Ipv4Prefix, PrefixError> {
        let (addr, len) = split(s)?;
        let p = Ipv4Prefix { addr, len };
        if u32::from(addr) & !p.mask() != 0 {
            let network = Ipv4Prefix::truncating(addr, len).unwrap_or(p);
            return Err(PrefixError::HostBits {
                text: s.to_string(),
                network,
            });
        }
        Ok(p)
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

serde_as_text!(Ipv4Prefix);

/// An MPLS label (20 bits): what a host decapsulates to one of its interfaces or tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct Label(u32);

impl Label {
    /// Largest label.
    pub const MAX: u32 = (1 << 20) - 1;

    /// `v` as a label, if it fits in 20 bits.
    pub fn new(v: u32) -> Result<Label, PrefixError> {
        Label::try_from(u64::from(v))
    }

    /// The label's value.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u64> for Label {
    type Error = PrefixError;
    fn try_from(v: u64) -> Result<Label, PrefixError> {
        u32::try_from(v)
            .ok()
            .filter(|v| *v <= Label::MAX)
            .map(Label)
            .ok_or(PrefixError::Label(v))
    }
}

impl<'de> serde::Deserialize<'de> for Label {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Label, D::Error> {
        Label::try_from(u64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn strict_parse_names_the_network_meant() {
        let p: Ipv4Prefix = "10.20.1.0/24".parse().unwrap();
        assert!(p.contains(Ipv4Addr::new(10, 20, 1, 77)));
        assert_eq!("10.20.1.9".parse::<Ipv4Prefix>().unwrap().len, 32);
        let e = "10.20.1.7/24".parse::<Ipv4Prefix>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"10.20.1.7/24\" has host bits set (did you mean 10.20.1.0/24?)"
        );
        assert!("10.0.0.0/33".parse::<Ipv4Prefix>().is_err());
        assert!("ten/8".parse::<Ipv4Prefix>().is_err());
    }

    #[test]
    fn truncating_parse_clears_host_bits() {
        let p = Ipv4Prefix::parse_truncating("10.20.1.7/24").unwrap();
        assert_eq!(p.to_string(), "10.20.1.0/24");
        assert_eq!(p.broadcast(), u32::from(Ipv4Addr::new(10, 20, 1, 255)));
        let all = Ipv4Prefix::parse_truncating("0.0.0.0/0").unwrap();
        assert_eq!(all.broadcast(), u32::MAX);
    }

    #[test]
    fn labels_are_twenty_bits() {
        assert_eq!(
            serde_json::from_str::<Label>("1048575").unwrap().get(),
            Label::MAX
        );
        let e = serde_json::from_str::<Label>("1048576").unwrap_err();
        assert!(e.to_string().contains("not below 2^20"), "{e}");
    }
}
