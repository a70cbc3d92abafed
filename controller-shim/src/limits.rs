// SPDX-License-Identifier: Apache-2.0
//! What the shim refuses to store because no agent could use it: names past a length limit or
//! with control characters, MACs that are not a VM's unicast address, IPAM subnets that cannot
//! hold a gateway and a VM. Checked when a client writes an object (never when the store is
//! loaded, so data written before a limit existed still loads); each error names the field.
//! The limits are documented in `docs/shim.md` ("Input limits").

use std::net::Ipv4Addr;

use vrouter_api::MacAddr;

use crate::error::{bad, ApiError};
use crate::graph::IpamSubnet;

/// Longest name (each `fq_name` component, `name`, `display_name`), in bytes. Names become VRF
/// names, xenstore values and log fields on every host; CloudStack's own are under 100 bytes.
pub const MAX_NAME: usize = 255;

/// Shortest and longest IPAM subnet prefix: a subnet must hold a gateway and at least one VM.
pub const SUBNET_LEN: std::ops::RangeInclusive<u8> = 1..=30;

/// A name in `field`: 1..=[`MAX_NAME`] bytes, no control characters.
pub fn name(field: &str, s: &str) -> Result<(), ApiError> {
    if s.is_empty() {
        return Err(bad(format!("{field}: must not be empty")));
    }
    if s.len() > MAX_NAME {
        return Err(bad(format!(
            "{field}: {} bytes, longer than the limit of {MAX_NAME}",
            s.len()
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(bad(format!("{field}: contains a control character")));
    }
    Ok(())
}

/// Every component of an `fq_name`.
pub fn fq_name(fq: &[String]) -> Result<(), ApiError> {
    fq.iter()
        .enumerate()
        .try_for_each(|(i, c)| name(&format!("fq_name[{i}]"), c))
}

/// A VM interface's MAC (`field` names where it came from): six octets, unicast, not all
/// zeros, not the vRouter's own (the gateway MAC every VM talks to).
pub fn vm_mac(field: &str, v: &serde_json::Value) -> Result<MacAddr, ApiError> {
    let s = v
        .as_str()
        .ok_or_else(|| bad(format!("{field}: must be a string")))?;
    let mac: MacAddr = s
        .parse()
        .map_err(|_| bad(format!("{field}: {s:?} is not a MAC address")))?;
    let why = if mac.0 == [0; 6] {
        "is all zeros"
    } else if !mac.is_unicast() {
        "is a multicast address"
    } else if mac == MacAddr::VROUTER {
        "is the vRouter's own MAC"
    } else {
        return Ok(mac);
    };
    Err(bad(format!("{field}: {s} {why}")))
}

/// An IPAM subnet (`field` names the entry): a routable unicast range of [`SUBNET_LEN`], whose
/// gateway and DNS server are host addresses inside it.
pub fn ipam_subnet(field: &str, s: &IpamSubnet) -> Result<(), ApiError> {
    let p = s.prefix;
    if !SUBNET_LEN.contains(&p.len) {
        return Err(bad(format!(
            "{field}.subnet.ip_prefix_len: /{} is not allowed (a subnet is /{} to /{})",
            p.len,
            SUBNET_LEN.start(),
            SUBNET_LEN.end()
        )));
    }
    let a = p.addr;
    if a.is_unspecified() || a.octets()[0] == 0 || a.is_loopback() || a.octets()[0] >= 224 {
        return Err(bad(format!(
            "{field}.subnet.ip_prefix: {p} is not a unicast range"
        )));
    }
    let host = |k: &str, ip: Option<Ipv4Addr>| match ip {
        Some(ip)
            if !p.contains(ip)
                || u32::from(ip) == p.network()
                || u32::from(ip) == p.broadcast() =>
        {
            Err(bad(format!(
                "{field}.{k}: {ip} is not a host address of {p}"
            )))
        }
        _ => Ok(()),
    };
    host("default_gateway", s.gateway)?;
    host("dns_server_address", s.dns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use vrouter_api::Ipv4Prefix;

    fn subnet(p: &str, gw: Option<&str>) -> IpamSubnet {
        IpamSubnet {
            prefix: p.parse::<Ipv4Prefix>().expect("prefix"),
            gateway: gw.map(|g| g.parse().expect("gateway")),
            dns: None,
        }
    }

    fn message(r: Result<(), ApiError>) -> String {
        match r {
            Err(ApiError::BadRequest(m)) => m,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn long_empty_and_control_names_are_refused_with_the_field() {
        assert!(name("name", "guest-a").is_ok());
        assert!(name("name", &"x".repeat(MAX_NAME)).is_ok());
        let m = message(name("display_name", &"x".repeat(100_000)));
        assert!(m.starts_with("display_name: 100000 bytes"), "{m}");
        assert!(message(name("name", "")).contains("empty"));
        assert!(message(name("name", "a\nb")).contains("control"));
        let fq = vec!["default-domain".to_string(), "x".repeat(300)];
        assert!(message(fq_name(&fq)).starts_with("fq_name[1]: 300 bytes"));
    }

    #[test]
    fn a_vm_mac_is_unicast_and_not_ours() {
        assert!(vm_mac("m", &json!("02:00:0a:00:00:05")).is_ok());
        assert!(vm_mac("m", &json!("zz:zz")).is_err());
        for (bad_mac, why) in [
            ("01:00:5e:00:00:01", "multicast"),
            ("ff:ff:ff:ff:ff:ff", "multicast"),
            ("00:00:00:00:00:00", "zeros"),
            ("00:00:5e:00:01:00", "vRouter"),
        ] {
            let m = message(vm_mac("mac_address[0]", &json!(bad_mac)).map(|_| ()));
            assert!(m.starts_with("mac_address[0]: ") && m.contains(why), "{m}");
        }
        assert!(message(vm_mac("m", &json!(5)).map(|_| ())).contains("string"));
    }

    #[test]
    fn subnets_must_hold_a_gateway_and_a_vm() {
        assert!(ipam_subnet("s", &subnet("10.1.0.0/24", Some("10.1.0.1"))).is_ok());
        assert!(ipam_subnet("s", &subnet("198.51.100.0/30", None)).is_ok());
        let m = message(ipam_subnet("ipam_subnets[0]", &subnet("0.0.0.0/0", None)));
        assert!(
            m.starts_with("ipam_subnets[0].subnet.ip_prefix_len: /0"),
            "{m}"
        );
        assert!(ipam_subnet("s", &subnet("10.0.0.1/32", None)).is_err());
        assert!(ipam_subnet("s", &subnet("127.0.0.0/8", None)).is_err());
        assert!(ipam_subnet("s", &subnet("224.0.0.0/24", None)).is_err());
        let m = message(ipam_subnet("s", &subnet("10.1.0.0/24", Some("10.2.0.1"))));
        assert!(m.starts_with("s.default_gateway: 10.2.0.1"), "{m}");
        assert!(ipam_subnet("s", &subnet("10.1.0.0/24", Some("10.1.0.255"))).is_err());
    }
}
