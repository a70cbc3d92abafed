//! Service chains as one network steers them, I/O-free: the shim's [`ServiceChain`]s of the
//! network resolved against what this host knows (its bound interfaces, the remote routes of
//! the instance's interfaces with their labels) into [`ChainRoutes`], or into prefixes that drop
//! while no instance interface is reachable.

use super::{ControllerState, Settings};
use crate::config::{ChainMember, ChainRoutes, Prefix};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use vrouter_api::interface::{ChainStatus, InterfaceConfig, ServiceChain, ServiceHop};
use vrouter_api::{Ipv4Prefix, Uuid};
use vrouter_dataplane::tables::MAX_KEYED_MEMBERS;

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

/// The ECMP key of a chain member: a hash of its service VM's uuid. Both sides of a chain (the
/// left interfaces in the left VRF, the right ones in the right VRF) and every host derive the
/// same key for the same VM, so the dataplane's rendezvous choice over the keys sends both
/// directions of a flow through one VM, and a VM leaving moves only its own flows. FNV-1a with
/// a final mix: fixed across builds and hosts (unlike std's hasher, which is not guaranteed to
/// be), and well spread even for uuids that differ in a few bits.
pub fn member_key(vm: &Uuid) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in &vm.0 {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    (h ^ (h >> 33)) as u32
}

/// The reachable members of a chain's `hops` with their keys ([`member_key`]), ordered by
/// instance and service VM, and at most [`MAX_KEYED_MEMBERS`] (the first in that order). The
/// member choice depends only on the keys, not on this order; the order keeps the composite's
/// listing (and the ties of colliding keys) the same on both sides and whatever order routes
/// or interfaces arrived in.
fn members(
    cx: &Ctx,
    vrf: &str,
    hops: &[ServiceHop],
    unresolved: &mut BTreeSet<Ipv4Addr>,
) -> Vec<(ChainMember, u32)> {
    let mut hops: Vec<&ServiceHop> = hops.iter().collect();
    hops.sort_by(|a, b| (&a.instance, a.vm_uuid).cmp(&(&b.instance, b.vm_uuid)));
    let mut out: Vec<(ChainMember, u32)> = Vec::new();
    for h in hops {
        let Some(m) = member(cx, vrf, h, unresolved) else {
            continue;
        };
        if out.len() < MAX_KEYED_MEMBERS && !out.iter().any(|(o, _)| *o == m) {
            out.push((m, member_key(&h.vm_uuid)));
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
            let (members, keys) = members.into_iter().unzip();
            out.chains.push(ChainRoutes {
                name: format!("{}>{}", ch.policy, ch.remote.vrf),
                prefixes: prefixes(ch),
                members,
                keys,
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
