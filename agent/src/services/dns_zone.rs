//! The names one network's gateway answers for: its VMs under the network's domain
//! (`<vm>.<domain>`, CloudStack's `cs<account>cloud.internal` by default), by instance name and by
//! display name, and the reverse (`in-addr.arpa`) names of their addresses. I/O-free.

use hickory_proto::rr::Name;
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// A network's DNS domain or host name that is not a usable DNS name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZoneError {
    /// The domain does not parse as a DNS name.
    #[error("DNS domain {0:?} is not a valid name")]
    Domain(String),
}

/// One network's names, ready to answer from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    domain: Name,
    by_name: HashMap<Name, Vec<Ipv4Addr>>,
    by_addr: HashMap<Ipv4Addr, Name>,
}

/// What a zone says about a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// A name of the zone with these addresses.
    Addresses(&'a [Ipv4Addr]),
    /// The reverse name of a VM's address: its name.
    Pointer(&'a Name),
    /// Inside the zone's domain but no such VM: the zone is authoritative (NXDOMAIN).
    NoSuchName,
    /// The zone's domain itself (exists, holds no address).
    Apex,
    /// Not the zone's business: forward it.
    Elsewhere,
}

/// Whether `label` is a host name label (RFC 952/1123: letters, digits, inner hyphens, at most
/// 63 bytes). Display names that are not (spaces, dots, underscores) are not published.
pub fn is_host_label(label: &str) -> bool {
    let b = label.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b.first() != Some(&b'-')
        && b.last() != Some(&b'-')
}

impl Zone {
    /// A zone for `domain` with `hosts` (host label, address), in preference order: the first
    /// name of an address is what its reverse lookup answers. Hosts whose label is not a host
    /// name are skipped.
    pub fn new(domain: &str, hosts: &[(String, Ipv4Addr)]) -> Result<Zone, ZoneError> {
        let mut d = Name::from_ascii(domain.trim().trim_end_matches('.'))
            .map_err(|_| ZoneError::Domain(domain.to_string()))?;
        d.set_fqdn(true);
        let domain = d.to_lowercase();
        let mut z = Zone {
            domain,
            by_name: HashMap::new(),
            by_addr: HashMap::new(),
        };
        for (label, ip) in hosts {
            if !is_host_label(label) {
                continue;
            }
            let Ok(fqdn) = Name::from_ascii(label.to_ascii_lowercase())
                .and_then(|n| n.append_domain(&z.domain))
            else {
                continue;
            };
            let ips = z.by_name.entry(fqdn.clone()).or_default();
            if !ips.contains(ip) {
                ips.push(*ip);
            }
            z.by_addr.entry(*ip).or_insert(fqdn);
        }
        Ok(z)
    }

    /// The domain (lower case, fully qualified).
    pub fn domain(&self) -> &Name {
        &self.domain
    }

    /// How many names the zone holds.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// True when the zone names no VM.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// What the zone says about `name` (any case). A single-label name is taken as a VM name
    /// of this zone (a resolver without search domain asks for `vm.`).
    pub fn lookup(&self, name: &Name) -> Lookup<'_> {
        let mut n = name.to_lowercase();
        n.set_fqdn(true);
        if n.num_labels() == 1 {
            if let Ok(full) = n.clone().append_domain(&self.domain) {
                if let Some(a) = self.by_name.get(&full) {
                    return Lookup::Addresses(a);
                }
            }
            return Lookup::Elsewhere;
        }
        if let Some(a) = self.by_name.get(&n) {
            return Lookup::Addresses(a);
        }
        if n == self.domain {
            return Lookup::Apex;
        }
        if self.domain.zone_of(&n) {
            return Lookup::NoSuchName;
        }
        if let Some(ip) = reverse_v4(&n) {
            if let Some(target) = self.by_addr.get(&ip) {
                return Lookup::Pointer(target);
            }
        }
        Lookup::Elsewhere
    }
}

/// The address of a `d.c.b.a.in-addr.arpa.` name (exactly four octets).
fn reverse_v4(n: &Name) -> Option<Ipv4Addr> {
    let labels: Vec<&[u8]> = n.iter().collect();
    let [d, c, b, a, in_addr, arpa] = labels.as_slice() else {
        return None;
    };
    if !in_addr.eq_ignore_ascii_case(b"in-addr") || !arpa.eq_ignore_ascii_case(b"arpa") {
        return None;
    }
    let octet = |l: &[u8]| std::str::from_utf8(l).ok()?.parse::<u8>().ok();
    Some(Ipv4Addr::new(octet(a)?, octet(b)?, octet(c)?, octet(d)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).expect("name")
    }

    fn zone() -> Zone {
        Zone::new(
            "cs2cloud.internal",
            &[
                ("web-1".into(), Ipv4Addr::new(10, 20, 1, 10)),
                ("i-2-10-VM".into(), Ipv4Addr::new(10, 20, 1, 10)),
                ("my db".into(), Ipv4Addr::new(10, 20, 1, 11)),
                ("i-2-11-VM".into(), Ipv4Addr::new(10, 20, 1, 11)),
            ],
        )
        .expect("zone")
    }

    #[test]
    fn vms_resolve_by_instance_and_display_name_in_any_case() {
        let z = zone();
        let ten = [Ipv4Addr::new(10, 20, 1, 10)];
        assert_eq!(
            z.lookup(&name("web-1.cs2cloud.internal.")),
            Lookup::Addresses(&ten)
        );
        assert_eq!(
            z.lookup(&name("I-2-10-vm.CS2CLOUD.internal")),
            Lookup::Addresses(&ten)
        );
        assert_eq!(z.lookup(&name("web-1.")), Lookup::Addresses(&ten));
        assert_eq!(z.len(), 3, "the display name with a space is not published");
    }

    #[test]
    fn reverse_names_answer_the_first_name_of_the_address() {
        let z = zone();
        let web = name("web-1.cs2cloud.internal.");
        assert_eq!(
            z.lookup(&name("10.1.20.10.in-addr.arpa.")),
            Lookup::Pointer(&web)
        );
        let db = name("i-2-11-vm.cs2cloud.internal.");
        assert_eq!(
            z.lookup(&name("11.1.20.10.IN-ADDR.ARPA.")),
            Lookup::Pointer(&db)
        );
        assert_eq!(
            z.lookup(&name("12.1.20.10.in-addr.arpa.")),
            Lookup::Elsewhere
        );
    }

    #[test]
    fn unknown_names_in_the_domain_are_the_zones_and_others_are_not() {
        let z = zone();
        assert_eq!(
            z.lookup(&name("nope.cs2cloud.internal.")),
            Lookup::NoSuchName
        );
        assert_eq!(z.lookup(&name("cs2cloud.internal.")), Lookup::Apex);
        assert_eq!(z.lookup(&name("example.com.")), Lookup::Elsewhere);
        assert_eq!(z.lookup(&name("nope.")), Lookup::Elsewhere);
    }

    #[test]
    fn a_domain_that_is_no_name_is_refused() {
        assert!(Zone::new("a..b", &[]).is_err());
        assert!(!is_host_label("-x"));
        assert!(!is_host_label(&"a".repeat(64)));
        assert!(is_host_label("i-2-10-VM"));
    }
}
