//! Service chains as one network steers them, I/O-free: the shim's [`ServiceChain`]s of the
//! network resolved against what this host knows (its bound interfaces, the remote routes of
//! the instance's interfaces with their labels) into [`ChainRoutes`], or into prefixes that drop
//! while no instance interface is reachable.

use super::{ControllerState, Settings};
use crate::config::{ChainMember, ChainRoutes, Prefix};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use vrouter_api::interface::{ChainStatus, InterfaceConfig, ServiceChain, ServiceHop};
use vrouter_api::Ipv4Prefix;

/// The chains of one network, resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Chains with at least one reachable instance interface.
    pub chains: Vec<ChainRoutes>,
    /// Prefixes of the chains without one: they drop (`Service Chain Down`).
    pub down: Vec<Prefix>,
    /// The instance lists (as service rules name them) whose every chain in this network is
    /// steered: rules applying them pass (the routes send their traffic to the instance).
    pub up: BTreeSet<Vec<String>>,
    /// Remote hosts an instance interface is behind whose underlay MAC is not known yet.
    pub unresolved: BTreeSet<Ipv4Addr>,
}

/// What resolving reads: the state, the settings, and the underlay MAC lookup of the build.
pub struct Ctx<'a> {
    /// The controller state.
    pub st: &'a ControllerState,
    /// The settings.
    pub s: &'a Settings,
    /// Whether a remote host's underlay MAC is known.
    pub has_mac: &'a dyn Fn(Ipv4Addr) -> bool,
}

/// Where one instance interface is, seen from network `vrf` on this host.
fn member(
    cx: &Ctx,
    vrf: &str,
    hop: &ServiceHop,
    unresolved: &mut BTreeSet<Ipv4Addr>,
) -> Option<ChainMember> {
    let (st, s) = (cx.st, cx.s);
    if let (Some(port), Some(c)) = (st.ports.get(&hop.vmi_uuid), st.ifaces.get(&hop.vmi_uuid)) {
        if c.vrf() == Some(vrf) {
            return Some(ChainMember::Local(port.name.clone()));
        }
    }
    let (_, r) = st
        .routes
        .values()
        .filter(|(_, r)| {
            r.vrf == vrf
                && r.vmi_uuid == Some(hop.vmi_uuid)
                && r.host != s.host
                && Some(r.nexthop) != s.fabric_ip
        })
        .max_by_key(|(rev, _)| *rev)?;
    if !(cx.has_mac)(r.nexthop) {
        unresolved.insert(r.nexthop);
        return None;
    }
    Some(ChainMember::Remote {
        remote: r.nexthop,
        label: r.label.get(),
        encap: s.encap,
    })
}

/// The reachable members of a chain's `hops`, ordered by instance and service VM. Both sides of
/// a chain order their members that way, so with one symmetric flow hash the forward direction
/// (left VRF, left interfaces) and the reverse (right VRF, right interfaces) pick the same
/// service VM; the order does not depend on the order routes or interfaces arrived in either.
fn members(
    cx: &Ctx,
    vrf: &str,
    hops: &[ServiceHop],
    unresolved: &mut BTreeSet<Ipv4Addr>,
) -> Vec<ChainMember> {
    let mut hops: Vec<&ServiceHop> = hops.iter().collect();
    hops.sort_by(|a, b| (&a.instance, a.vm_uuid).cmp(&(&b.instance, b.vm_uuid)));
    let mut out: Vec<ChainMember> = Vec::new();
    for m in hops.iter().filter_map(|h| member(cx, vrf, h, unresolved)) {
        if !out.contains(&m) {
            out.push(m);
        }
    }
    out
}

/// The prefixes a chain steers in this network.
fn prefixes(ch: &ServiceChain) -> Vec<Prefix> {
    let mut p: BTreeSet<Prefix> = ch.remote.subnets.iter().copied().collect();
    if ch.default_route {
        p.extend(Ipv4Prefix::truncating(Ipv4Addr::UNSPECIFIED, 0));
    }
    p.into_iter().collect()
}

/// Resolves the chains `c` (an interface of network `vrf`) lists. A chain is steered when the
/// shim resolved it and at least one of its hops is reachable from here; otherwise its
/// prefixes (without `0.0.0.0/0`, so floating IPs keep working) drop.
pub fn resolve(cx: &Ctx, c: &InterfaceConfig, vrf: &str) -> Resolved {
    let mut out = Resolved::default();
    let mut up: BTreeMap<Vec<String>, bool> = BTreeMap::new();
    for ch in c.service_chains.iter().filter(|ch| ch.remote.vrf != vrf) {
        let members = match ch.status {
            ChainStatus::Resolved => members(cx, vrf, &ch.hops, &mut out.unresolved),
            ChainStatus::Down(_) => Vec::new(),
        };
        let steered = !members.is_empty();
        *up.entry(ch.instances.clone()).or_insert(true) &= steered;
        if steered {
            out.chains.push(ChainRoutes {
                name: format!("{}>{}", ch.policy, ch.remote.vrf),
                prefixes: prefixes(ch),
                members,
            });
        } else {
            out.down.extend(ch.remote.subnets.iter().copied());
        }
    }
    out.down.sort();
    out.down.dedup();
    out.up = up.into_iter().filter(|(_, u)| *u).map(|(i, _)| i).collect();
    out
}
