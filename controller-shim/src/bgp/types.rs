// SPDX-License-Identifier: Apache-2.0
//! What a VPN-IPv4 route is made of, as the speaker and the rest of the shim see it: route
//! distinguishers, route targets, the tunnel encapsulation and the route itself.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use vrouter_api::Ipv4Prefix;

/// A route distinguisher (RFC 4364 §4.2), kept as its 8 wire bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rd(pub [u8; 8]);

impl Rd {
    /// Type 1: `<router-id>:<n>`, what the shim exports for a network (`<router-id>:<network id>`).
    pub fn ip(addr: Ipv4Addr, n: u16) -> Rd {
        let mut b = [0u8; 8];
        b[1] = 1;
        b[2..6].copy_from_slice(&addr.octets());
        b[6..8].copy_from_slice(&n.to_be_bytes());
        Rd(b)
    }

    /// Type 0: `<2-byte AS>:<n>`.
    pub fn asn(asn: u16, n: u32) -> Rd {
        let mut b = [0u8; 8];
        b[2..4].copy_from_slice(&asn.to_be_bytes());
        b[4..8].copy_from_slice(&n.to_be_bytes());
        Rd(b)
    }
}

impl fmt::Display for Rd {
    /// As FRR and GoBGP print it: `64512:1`, `10.0.0.1:5`, `4200000000:7`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        match u16::from_be_bytes([b[0], b[1]]) {
            0 => write!(
                f,
                "{}:{}",
                u16::from_be_bytes([b[2], b[3]]),
                u32::from_be_bytes([b[4], b[5], b[6], b[7]])
            ),
            1 => write!(
                f,
                "{}:{}",
                Ipv4Addr::new(b[2], b[3], b[4], b[5]),
                u16::from_be_bytes([b[6], b[7]])
            ),
            2 => write!(
                f,
                "{}:{}",
                u32::from_be_bytes([b[2], b[3], b[4], b[5]]),
                u16::from_be_bytes([b[6], b[7]])
            ),
            t => write!(f, "type{t}:{:02x?}", &b[2..]),
        }
    }
}

/// A route-target extended community (RFC 4360 §4), kept as its 8 wire bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteTarget(pub [u8; 8]);

/// A route target that is not `target:<AS>:<n>` or `target:<IPv4>:<n>` with values that fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route target {0:?} is not target:<AS>:<number> or target:<IPv4>:<number>")]
pub struct BadRouteTarget(pub String);

impl RouteTarget {
    /// Whether these 8 bytes are a route target at all (type 0x00/0x01/0x02, sub-type 0x02).
    pub fn from_ext_community(raw: [u8; 8]) -> Option<RouteTarget> {
        (raw[0] <= 2 && raw[1] == 2).then_some(RouteTarget(raw))
    }

    /// `target:<AS>:<n>` for a 2-byte AS, the default a network gets (`target:<AS>:<network id>`).
    pub fn asn(asn: u32, n: u32) -> RouteTarget {
        let mut b = [0u8; 8];
        if let Ok(a2) = u16::try_from(asn) {
            b[1] = 2;
            b[2..4].copy_from_slice(&a2.to_be_bytes());
            b[4..8].copy_from_slice(&n.to_be_bytes());
        } else {
            // A 4-byte AS leaves two bytes for the number (RFC 5668).
            b[0] = 2;
            b[1] = 2;
            b[2..6].copy_from_slice(&asn.to_be_bytes());
            b[6..8].copy_from_slice(&(n as u16).to_be_bytes());
        }
        RouteTarget(b)
    }
}

impl FromStr for RouteTarget {
    type Err = BadRouteTarget;

    /// Contrail's spelling, `target:64512:100` or `target:10.0.0.1:7`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadRouteTarget(s.to_string());
        let rest = s.strip_prefix("target:").ok_or_else(bad)?;
        let (global, local) = rest.rsplit_once(':').ok_or_else(bad)?;
        let mut b = [0u8; 8];
        b[1] = 2;
        if let Ok(ip) = global.parse::<Ipv4Addr>() {
            b[0] = 1;
            b[2..6].copy_from_slice(&ip.octets());
            b[6..8].copy_from_slice(&local.parse::<u16>().map_err(|_| bad())?.to_be_bytes());
        } else {
            let asn: u32 = global.parse().map_err(|_| bad())?;
            if let Ok(a2) = u16::try_from(asn) {
                b[2..4].copy_from_slice(&a2.to_be_bytes());
                b[4..8].copy_from_slice(&local.parse::<u32>().map_err(|_| bad())?.to_be_bytes());
            } else {
                b[0] = 2;
                b[2..6].copy_from_slice(&asn.to_be_bytes());
                b[6..8].copy_from_slice(&local.parse::<u16>().map_err(|_| bad())?.to_be_bytes());
            }
        }
        Ok(RouteTarget(b))
    }
}

impl fmt::Display for RouteTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        match b[0] {
            0 => write!(
                f,
                "target:{}:{}",
                u16::from_be_bytes([b[2], b[3]]),
                u32::from_be_bytes([b[4], b[5], b[6], b[7]])
            ),
            1 => write!(
                f,
                "target:{}:{}",
                Ipv4Addr::new(b[2], b[3], b[4], b[5]),
                u16::from_be_bytes([b[6], b[7]])
            ),
            _ => write!(
                f,
                "target:{}:{}",
                u32::from_be_bytes([b[2], b[3], b[4], b[5]]),
                u16::from_be_bytes([b[6], b[7]])
            ),
        }
    }
}

/// The tunnel a route's next hop expects (RFC 9012 encapsulation extended community).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encap {
    /// MPLS in GRE (RFC 4023): tunnel type 11, or 2 (plain GRE) as older gateways send it.
    MplsOverGre,
    /// MPLS in UDP (RFC 7510): tunnel type 13.
    MplsOverUdp,
}

impl Encap {
    /// The tunnel type the shim sends for this encapsulation.
    pub fn tunnel_type(self) -> u16 {
        match self {
            Encap::MplsOverGre => 11,
            Encap::MplsOverUdp => 13,
        }
    }

    /// The encapsulation of an extended community, if it is one (type 0x03, sub-type 0x0c)
    /// naming a tunnel type this vRouter can send.
    pub fn from_ext_community(raw: [u8; 8]) -> Option<Encap> {
        if raw[0] != 0x03 || raw[1] != 0x0c {
            return None;
        }
        match u16::from_be_bytes([raw[6], raw[7]]) {
            2 | 11 => Some(Encap::MplsOverGre),
            13 => Some(Encap::MplsOverUdp),
            _ => None,
        }
    }

    /// The extended community announcing this encapsulation.
    pub fn ext_community(self) -> [u8; 8] {
        let t = self.tunnel_type().to_be_bytes();
        [0x03, 0x0c, 0, 0, 0, 0, t[0], t[1]]
    }
}

/// Where a VPN route lives: its distinguisher and prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VpnKey {
    /// Route distinguisher.
    pub rd: Rd,
    /// Destination.
    pub prefix: Ipv4Prefix,
}

/// One VPN-IPv4 route, as sent or received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpnRoute {
    /// Distinguisher and prefix.
    pub key: VpnKey,
    /// The label the next hop expects (20 bits).
    pub label: u32,
    /// Tunnel endpoint.
    pub nexthop: Ipv4Addr,
    /// Route targets: which VRFs import it.
    pub targets: Vec<RouteTarget>,
    /// Encapsulations the next hop accepts, in its order of preference; empty means MPLS in
    /// GRE, what RFC 4023 gateways expect.
    pub encaps: Vec<Encap>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_targets_read_and_print_as_contrail_spells_them() {
        for s in [
            "target:64512:100",
            "target:10.1.2.3:7",
            "target:4200000000:9",
        ] {
            let rt: RouteTarget = s.parse().expect("valid route target");
            assert_eq!(rt.to_string(), s);
        }
        let rt: RouteTarget = "target:64512:100".parse().expect("valid");
        assert_eq!(rt.0, [0, 2, 0xfc, 0, 0, 0, 0, 100]);
        assert_eq!(RouteTarget::asn(64512, 100), rt);
    }

    #[test]
    fn malformed_route_targets_are_refused() {
        for s in [
            "64512:100",
            "target:",
            "target:x:1",
            "target:10.0.0.1:70000",
            "target:1:",
        ] {
            assert!(s.parse::<RouteTarget>().is_err(), "{s}");
        }
    }

    #[test]
    fn distinguishers_print_like_frr_and_gobgp() {
        assert_eq!(
            Rd::ip(Ipv4Addr::new(10, 0, 0, 1), 5).to_string(),
            "10.0.0.1:5"
        );
        assert_eq!(Rd::asn(64512, 1).to_string(), "64512:1");
    }

    #[test]
    fn encapsulation_communities_round_trip_and_gre_has_two_spellings() {
        for e in [Encap::MplsOverGre, Encap::MplsOverUdp] {
            assert_eq!(Encap::from_ext_community(e.ext_community()), Some(e));
        }
        assert_eq!(
            Encap::from_ext_community([3, 0x0c, 0, 0, 0, 0, 0, 2]),
            Some(Encap::MplsOverGre)
        );
        assert_eq!(Encap::from_ext_community([3, 0x0c, 0, 0, 0, 0, 0, 8]), None);
    }
}
