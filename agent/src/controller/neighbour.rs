//! Underlay neighbours: the MAC of a remote host's fabric IP, learned by the host stack's ARP
//! (the agent has no underlay ARP of its own; the host stack already does it right), and, after
//! a restart, from the tunnel nexthops the dataplane already holds ([`tunnel_macs`]).

use crate::dump::DumpIndex;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, UdpSocket};
use vrouter_dataplane::tables::NexthopSpec;
use vrouter_dataplane::wire::MacAddr;

/// The underlay MAC of every remote host the dataplane's tunnel nexthops lead to (what an
/// earlier agent programmed), by destination fabric IP. Of two tunnels to one host (UDP and
/// GRE) the lowest nexthop id's MAC counts. I/O-free.
pub fn tunnel_macs(dp: &DumpIndex) -> BTreeMap<Ipv4Addr, MacAddr> {
    let mut tunnels: Vec<(u32, Ipv4Addr, MacAddr)> = dp
        .nhs
        .iter()
        .filter(|(id, _)| !dp.protected_nhs.contains(id))
        .filter_map(|(id, spec)| match spec {
            NexthopSpec::Tunnel { dip, dmac, .. } if dmac.0 != [0; 6] => {
                Some((*id, Ipv4Addr::from(*dip), *dmac))
            }
            _ => None,
        })
        .collect();
    tunnels.sort_unstable_by_key(|(id, _, _)| std::cmp::Reverse(*id));
    tunnels.into_iter().map(|(_, ip, mac)| (ip, mac)).collect()
}

/// Makes the kernel resolve `ip` (one empty UDP datagram to the discard port; the remote
/// host's kernel at most answers with an ICMP port unreachable).
pub fn probe(ip: Ipv4Addr) {
    if let Ok(s) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) {
        let _ = s.send_to(&[], (ip, 9));
    }
}

/// Parses `/proc/net/arp` text: complete entries only.
pub fn parse_arp(text: &str, ip: Ipv4Addr) -> Option<MacAddr> {
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 4 || f[0].parse::<Ipv4Addr>().ok()? != ip {
            return None;
        }
        let flags = u32::from_str_radix(f[2].trim_start_matches("0x"), 16).ok()?;
        if flags & 0x2 == 0 {
            return None;
        }
        let m: MacAddr = f[3].parse().ok()?;
        (m.0 != [0; 6]).then_some(m)
    })
}

/// The MAC the host stack has for `ip`.
pub fn lookup(ip: Ipv4Addr) -> Option<MacAddr> {
    parse_arp(&std::fs::read_to_string("/proc/net/arp").ok()?, ip)
}
