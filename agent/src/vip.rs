//! Allowed-address-pair VIPs (issue 20): which local interface a shared address (a VRRP /
//! keepalived VIP) is routed to, learnt from the gratuitous ARPs its members send.
//!
//! Every member of a pair may send from the VIP (the dataplane's anti-spoofing lets it); the
//! VIP's /32 goes to the member that last announced it. The dataplane traps every gratuitous ARP
//! (a request or reply whose sender and target address are one) to the agent; the pkt0 thread
//! gives it to [`Claims::garp`], which records the interface as the VIP's owner when that
//! interface has a pair covering the address and the frame comes from its MAC or the pair's.
//! The controller source then routes the VIP's /32 to that interface and advertises it, so the
//! other hosts re-point too.
//!
//! Between hosts the shim's revisions order the claims: [`Claims::advertised`] records the
//! revision the shim gave our advertisement, and a remote route for the same VIP with a later
//! revision means another host's member announced it after ours: we yield (forget the claim,
//! withdraw our advertisement, route to that host). A claim whose advertisement has no revision
//! yet wins locally until it has one.
//!
//! The parsing and the claim table are I/O-free. The pkt0 thread and the controller source
//! share one table per process ([`registry`]); a change bumps its generation, which the source
//! reports as a change, so the daemon runs a pass within its poll period.

use crate::config::Prefix;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard, OnceLock};
use vrouter_dataplane::trap::{AgentCmd, AgentHeader, TrapReason, AGENT_HEADER_LEN};
use vrouter_dataplane::wire::{ArpPacket, EtherType, MacAddr, ETHERNET_HEADER_LEN};

/// A gratuitous ARP as the dataplane trapped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Garp {
    /// The interface it came in on.
    pub vif: u16,
    /// Sender hardware address.
    pub mac: MacAddr,
    /// The announced address (sender = target).
    pub ip: Ipv4Addr,
}

/// The gratuitous ARP in a trapped datagram (agent header + Ethernet frame), if it is one: an
/// ARP trap whose request or reply announces its sender's own address.
pub fn parse_garp(datagram: &[u8]) -> Option<Garp> {
    let h = AgentHeader::parse(datagram)?;
    if h.cmd != AgentCmd::Trap || h.reason != TrapReason::Arp {
        return None;
    }
    let frame = datagram.get(AGENT_HEADER_LEN..)?;
    let eth = frame.get(..ETHERNET_HEADER_LEN)?;
    if u16::from_be_bytes([eth[12], eth[13]]) != EtherType::ARP {
        return None;
    }
    let a = ArpPacket::new_checked(frame.get(ETHERNET_HEADER_LEN..)?).ok()?;
    if !matches!(a.op(), 1 | 2) || a.spa() != a.tpa() || a.spa() == 0 {
        return None;
    }
    Some(Garp {
        vif: h.vif,
        mac: a.sha(),
        ip: Ipv4Addr::from(a.spa()),
    })
}

/// An allowed address pair of an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    /// The address or prefix.
    pub prefix: Prefix,
    /// A further MAC the pair may be used from.
    pub mac: Option<MacAddr>,
}

/// A local interface with allowed address pairs, as last programmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// dom0 port name.
    pub port: String,
    /// VRF name of its network.
    pub vrf: String,
    /// Its MAC.
    pub mac: MacAddr,
    /// Its pairs.
    pub pairs: Vec<Pair>,
    /// Its own addresses (fixed and secondary): a gratuitous ARP for one of them says the VM
    /// runs here (netfront sends one when a migrated VM resumes).
    pub own: Vec<Ipv4Addr>,
}

impl Member {
    /// Whether a gratuitous ARP from `mac` for `ip` is this member announcing a pair.
    fn may_announce(&self, mac: MacAddr, ip: Ipv4Addr) -> bool {
        self.pairs
            .iter()
            .any(|p| p.prefix.contains(ip) && (mac == self.mac || p.mac == Some(mac)))
    }
}

/// Who owns a VIP here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The port of the member that announced it last.
    pub port: String,
    /// The shim's revision of our advertisement of it, once known.
    pub rev: Option<u64>,
}

/// (VRF name, VIP) -> its local owner.
pub type Owned = BTreeMap<(String, Ipv4Addr), Claim>;

/// The claim table. I/O-free.
#[derive(Debug, Default)]
pub struct Claims {
    members: BTreeMap<u16, Member>,
    owned: Owned,
    /// Ports whose VM announced one of its own addresses since they were bound, with the watch
    /// revision the agent had reached when it took the announcement (`None` until the next
    /// load stamps it).
    arrived: BTreeMap<String, Option<u64>>,
    gen: u64,
}

impl Claims {
    /// The interfaces with pairs, by vif id, after a pass. Claims of ports that are gone are
    /// dropped (a VM that left takes its VIPs with it).
    pub fn set_members(&mut self, members: BTreeMap<u16, Member>) {
        let before = self.owned.len();
        self.owned.retain(|(vrf, ip), c| {
            members.values().any(|m| {
                m.port == c.port && &m.vrf == vrf && m.pairs.iter().any(|p| p.prefix.contains(*ip))
            })
        });
        if self.owned.len() != before {
            self.gen += 1;
        }
        self.arrived
            .retain(|port, _| members.values().any(|m| &m.port == port));
        self.members = members;
    }

    /// A gratuitous ARP: if a member announces one of its pairs' addresses, it becomes that
    /// address's owner. Returns the (VRF, VIP) whose owner changed.
    pub fn garp(&mut self, g: &Garp) -> Option<(String, Ipv4Addr)> {
        let m = self.members.get(&g.vif)?;
        if m.own.contains(&g.ip) && g.mac == m.mac {
            // The VM runs here (again): every announcement counts, the last one wins; one not
            // yet taken by a pass is enough (a VM repeating them costs one pass per load).
            if self.arrived.get(&m.port) == Some(&None) {
                return None;
            }
            self.arrived.insert(m.port.clone(), None);
            self.gen += 1;
            return Some((m.vrf.clone(), g.ip));
        }
        if !m.may_announce(g.mac, g.ip) {
            return None;
        }
        let key = (m.vrf.clone(), g.ip);
        if self.owned.get(&key).is_some_and(|c| c.port == m.port) {
            return None;
        }
        self.owned.insert(
            key.clone(),
            Claim {
                port: m.port.clone(),
                rev: None,
            },
        );
        self.gen += 1;
        Some(key)
    }

    /// A claim a previous run of the agent left in the dataplane (the VIP's /32 routed to
    /// `port`), taken unless the table has one for that VIP. Its revision is 0: any other
    /// host's advertisement of the VIP is later and wins (it claimed while we were away).
    /// True if taken.
    pub fn adopt(&mut self, key: (String, Ipv4Addr), port: String) -> bool {
        if self.owned.contains_key(&key) {
            return false;
        }
        self.owned.insert(key, Claim { port, rev: Some(0) });
        self.gen += 1;
        true
    }

    /// The shim stored our advertisement of `prefix` in `vrf` at revision `rev`.
    pub fn advertised(&mut self, vrf: &str, prefix: Prefix, rev: u64) {
        if prefix.len != 32 {
            return;
        }
        if let Some(c) = self.owned.get_mut(&(vrf.to_string(), prefix.addr)) {
            if c.rev.is_none() {
                c.rev = Some(rev);
            }
        }
    }

    /// Another host announced these VIPs after us: forget our claims.
    pub fn yield_to_remote(&mut self, keys: &[(String, Ipv4Addr)]) {
        for k in keys {
            if self.owned.remove(k).is_some() {
                log::info!("vip: {} in {} moved to another host", k.1, k.0);
                self.gen += 1;
            }
        }
    }

    /// Stamps the announcements taken since the last load with the watch revision `since`.
    pub fn stamp_arrivals(&mut self, since: u64) {
        for s in self.arrived.values_mut() {
            s.get_or_insert(since);
        }
    }

    /// Ports whose VM announced its own address, with the watch revision of the announcement:
    /// another host's advertisement of the VM with a later revision means it moved there.
    pub fn arrived(&self) -> BTreeMap<String, u64> {
        self.arrived
            .iter()
            .filter_map(|(p, s)| Some((p.clone(), (*s)?)))
            .collect()
    }

    /// The VIPs owned here.
    pub fn owned(&self) -> &Owned {
        &self.owned
    }

    /// Bumped on every change of ownership.
    pub fn generation(&self) -> u64 {
        self.gen
    }
}

/// The process's claim table, shared by the pkt0 thread and the controller source.
pub fn registry() -> MutexGuard<'static, Claims> {
    static REGISTRY: OnceLock<Mutex<Claims>> = OnceLock::new();
    REGISTRY
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIP: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 100);
    const MAC1: MacAddr = MacAddr([2, 0, 0, 0, 1, 3]);
    const MAC2: MacAddr = MacAddr([2, 0, 0, 0, 1, 4]);
    const VMAC: MacAddr = MacAddr([0, 0, 0x5e, 0, 1, 1]);

    fn garp_datagram(vif: u16, op: u16, mac: MacAddr, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
        let mut d = vec![0u8; AGENT_HEADER_LEN];
        AgentHeader {
            cmd: AgentCmd::Trap,
            reason: TrapReason::Arp,
            vif,
            vrf: 1,
            param: 0,
        }
        .emit(&mut d);
        d.extend_from_slice(&[0xff; 6]);
        d.extend_from_slice(&mac.0);
        d.extend_from_slice(&EtherType::ARP.to_be_bytes());
        d.extend_from_slice(&[0, 1, 8, 0, 6, 4]);
        d.extend_from_slice(&op.to_be_bytes());
        d.extend_from_slice(&mac.0);
        d.extend_from_slice(&spa.octets());
        d.extend_from_slice(&[0; 6]);
        d.extend_from_slice(&tpa.octets());
        d
    }

    fn members() -> BTreeMap<u16, Member> {
        let pair = Pair {
            prefix: Prefix::host(VIP),
            mac: Some(VMAC),
        };
        [(3, "vif1.0", MAC1), (4, "vif2.0", MAC2)]
            .into_iter()
            .map(|(vif, port, mac)| {
                let m = Member {
                    port: port.into(),
                    vrf: "v1".into(),
                    mac,
                    pairs: vec![pair],
                    own: vec![Ipv4Addr::new(10, 1, 1, u8::try_from(vif).unwrap_or(0))],
                };
                (vif, m)
            })
            .collect()
    }

    #[test]
    fn busybox_unsolicited_and_reply_mode_garps_parse_and_a_request_does_not() {
        let u = garp_datagram(3, 1, MAC1, VIP, VIP);
        assert_eq!(
            parse_garp(&u),
            Some(Garp {
                vif: 3,
                mac: MAC1,
                ip: VIP
            })
        );
        assert!(parse_garp(&garp_datagram(3, 2, MAC1, VIP, VIP)).is_some());
        let ask = garp_datagram(3, 1, MAC1, VIP, Ipv4Addr::new(10, 1, 1, 1));
        assert_eq!(parse_garp(&ask), None, "an ordinary request");
        assert_eq!(parse_garp(&u[..40]), None, "truncated");
    }

    #[test]
    fn the_vip_follows_the_member_that_announced_it_last() {
        let mut c = Claims::default();
        c.set_members(members());
        let g0 = c.generation();
        let key = ("v1".to_string(), VIP);
        let g = |vif, mac| Garp { vif, mac, ip: VIP };
        assert_eq!(c.garp(&g(3, MAC1)), Some(key.clone()));
        assert_eq!(c.owned()[&key].port, "vif1.0");
        assert_eq!(c.garp(&g(3, MAC1)), None, "the owner again: no change");
        assert_eq!(c.garp(&g(4, VMAC)), Some(key.clone()), "from the VRRP MAC");
        assert_eq!(c.owned()[&key].port, "vif2.0");
        assert!(c.generation() > g0);
        assert_eq!(c.garp(&g(4, MAC1)), None, "another member's MAC");
        let other = Garp {
            vif: 3,
            mac: MAC1,
            ip: Ipv4Addr::new(10, 1, 1, 101),
        };
        assert_eq!(c.garp(&other), None, "no pair covers it");
        assert_eq!(c.garp(&g(9, MAC1)), None, "not a member");
        c.advertised("v1", Prefix::host(VIP), 42);
        assert_eq!(c.owned()[&key].rev, Some(42));
        c.yield_to_remote(std::slice::from_ref(&key));
        assert!(c.owned().is_empty());
        assert_eq!(c.garp(&g(4, MAC2)), Some(key.clone()), "claimed again");
        let mut left = members();
        left.remove(&4);
        c.set_members(left);
        assert!(c.owned().is_empty(), "the owner left the host");
    }

    #[test]
    fn a_vm_announcing_its_own_address_is_stamped_with_the_watch_revision() {
        let mut c = Claims::default();
        c.set_members(members());
        let own = Garp {
            vif: 3,
            mac: MAC1,
            ip: Ipv4Addr::new(10, 1, 1, 3),
        };
        assert_eq!(c.garp(&own), Some(("v1".into(), own.ip)));
        assert_eq!(c.garp(&own), None, "already pending");
        assert!(c.arrived().is_empty(), "not stamped yet");
        c.stamp_arrivals(7);
        assert_eq!(c.arrived().get("vif1.0"), Some(&7));
        assert_eq!(
            c.garp(&own),
            Some(("v1".into(), own.ip)),
            "every one counts"
        );
        c.stamp_arrivals(9);
        assert_eq!(c.arrived().get("vif1.0"), Some(&9), "the last one");
        let spoofed = Garp { mac: MAC2, ..own };
        let mut d = Claims::default();
        d.set_members(members());
        assert_eq!(d.garp(&spoofed), None, "not from its MAC");
        c.set_members(BTreeMap::new());
        assert!(c.arrived().is_empty(), "unbound: forgotten");
    }
}
