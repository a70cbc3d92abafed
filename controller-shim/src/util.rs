// SPDX-License-Identifier: Apache-2.0
//! Small pure helpers: IPv4 subnets, MAC derivation, UUID checks, timestamps.

use std::net::Ipv4Addr;

/// An IPv4 subnet as written in `ipam_subnets[].subnet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// Network address (host bits cleared).
    pub network: u32,
    /// Prefix length, 0..=32.
    pub len: u8,
}

impl Subnet {
    /// Builds a subnet; host bits of `addr` are cleared.
    pub fn new(addr: Ipv4Addr, len: u8) -> Option<Subnet> {
        if len > 32 {
            return None;
        }
        Some(Subnet {
            network: u32::from(addr) & mask(len),
            len,
        })
    }

    /// Parses `a.b.c.d/len`.
    pub fn parse_cidr(s: &str) -> Option<Subnet> {
        let (a, l) = s.split_once('/')?;
        Subnet::new(a.parse().ok()?, l.parse().ok()?)
    }

    /// Broadcast (last) address.
    pub fn broadcast(&self) -> u32 {
        self.network | !mask(self.len)
    }

    /// Whether `a` lies inside the subnet.
    pub fn contains(&self, a: u32) -> bool {
        a & mask(self.len) == self.network
    }

    /// Whether `a` may be handed to an interface: inside, and neither the network nor the
    /// broadcast address (for /31 and /32 every address is usable, RFC 3021).
    pub fn usable(&self, a: u32) -> bool {
        self.contains(a) && (self.len >= 31 || (a != self.network && a != self.broadcast()))
    }

    /// Usable host range (first, last), inclusive.
    pub fn host_range(&self) -> (u32, u32) {
        if self.len >= 31 {
            (self.network, self.broadcast())
        } else {
            (self.network + 1, self.broadcast() - 1)
        }
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.network), self.len)
    }
}

/// Netmask for a prefix length.
pub fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

/// Whether `s` is a UUID in the 8-4-4-4-12 hex form (either case: the string itself is kept
/// byte for byte, CloudStack's sync compares uuids as strings).
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The two 64-bit halves Contrail mirrors into `id_perms.uuid`.
pub fn uuid_halves(s: &str) -> (u64, u64) {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let v = u128::from_str_radix(&hex, 16).unwrap_or(0);
    ((v >> 64) as u64, v as u64)
}

/// Contrail's MAC for an interface created without one: `02:` then uuid characters
/// [0:2],[2:4],[4:6],[6:8],[9:11] (vnc_cfg_types.py, v1.06).
pub fn mac_from_uuid(uuid: &str) -> String {
    let u = uuid.to_ascii_lowercase();
    let part = |a: usize, b: usize| u.get(a..b).unwrap_or("00").to_string();
    format!(
        "02:{}:{}:{}:{}:{}",
        part(0, 2),
        part(2, 4),
        part(4, 6),
        part(6, 8),
        part(9, 11)
    )
}

/// ISO 8601 UTC timestamp with microseconds, as Contrail writes `id_perms.created`.
pub fn iso8601(unix_us: u64) -> String {
    let secs = unix_us / 1_000_000;
    let micros = unix_us % 1_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_math() {
        let s = Subnet::parse_cidr("10.20.1.7/24").expect("valid cidr");
        assert_eq!(s.to_string(), "10.20.1.0/24");
        assert!(!s.usable(u32::from(Ipv4Addr::new(10, 20, 1, 0))));
        assert!(!s.usable(u32::from(Ipv4Addr::new(10, 20, 1, 255))));
        assert!(s.usable(u32::from(Ipv4Addr::new(10, 20, 1, 1))));
        assert_eq!(s.host_range().1, u32::from(Ipv4Addr::new(10, 20, 1, 254)));
        assert!(Subnet::parse_cidr("10.0.0.0/33").is_none());
        assert_eq!(
            Subnet::parse_cidr("0.0.0.0/0").map(|s| s.broadcast()),
            Some(u32::MAX)
        );
    }

    #[test]
    fn mac_and_uuid() {
        let u = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f";
        assert!(is_uuid(u));
        assert!(!is_uuid("c1d2e3f4a5b64c7d8e9f0a1b2c3d4e5f"));
        assert_eq!(mac_from_uuid(u), "02:c1:d2:e3:f4:a5");
        let (hi, lo) = uuid_halves(u);
        assert_eq!(hi, 0xc1d2e3f4a5b64c7d);
        assert_eq!(lo, 0x8e9f0a1b2c3d4e5f);
    }

    #[test]
    fn timestamps() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000000");
        assert_eq!(iso8601(1_700_000_000_123_456), "2023-11-14T22:13:20.123456");
    }
}
