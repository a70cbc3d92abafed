// SPDX-License-Identifier: Apache-2.0
//! Small pure helpers: usable addresses of a subnet, MAC derivation, UUID checks, timestamps.

use vrouter_api::Ipv4Prefix;

/// Whether `a` may be handed to an interface: inside `p`, and neither its network nor its
/// broadcast address (for /31 and /32 every address is usable, RFC 3021).
pub fn usable(p: &Ipv4Prefix, a: u32) -> bool {
    p.contains(a.into()) && (p.len >= 31 || (a != p.network() && a != p.broadcast()))
}

/// Usable host range of `p` (first, last), inclusive.
pub fn host_range(p: &Ipv4Prefix) -> (u32, u32) {
    if p.len >= 31 {
        (p.network(), p.broadcast())
    } else {
        (p.network() + 1, p.broadcast() - 1)
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
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn subnet_math() {
        let s = Ipv4Prefix::parse_truncating("10.20.1.7/24").expect("valid cidr");
        assert_eq!(s.to_string(), "10.20.1.0/24");
        assert!(!usable(&s, u32::from(Ipv4Addr::new(10, 20, 1, 0))));
        assert!(!usable(&s, u32::from(Ipv4Addr::new(10, 20, 1, 255))));
        assert!(usable(&s, u32::from(Ipv4Addr::new(10, 20, 1, 1))));
        assert_eq!(host_range(&s).1, u32::from(Ipv4Addr::new(10, 20, 1, 254)));
        assert!(Ipv4Prefix::parse_truncating("10.0.0.0/33").is_err());
        assert_eq!(
            Ipv4Prefix::parse_truncating("0.0.0.0/0").map(|s| s.broadcast()),
            Ok(u32::MAX)
        );
        let p32 = Ipv4Prefix::parse_truncating("10.0.0.5/32").expect("valid cidr");
        assert!(usable(&p32, u32::from(Ipv4Addr::new(10, 0, 0, 5))));
        assert_eq!(host_range(&p32), (p32.network(), p32.network()));
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
