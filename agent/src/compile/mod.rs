//! Desired state: what the dataplane must hold for a configuration. I/O-free: a [`Config`], what
//! the dataplane reported ([`DumpIndex`]) and the allocations in, tables out.
//!
//! For a network with gateway G and a local interface I (MAC m, IP a) this yields: the VRF; the
//! virtual vif; an Encap nexthop (dmac m, smac the vRouter MAC) and I's label pointing at it;
//! a/32 -> that nexthop with proxy ARP; G/32 -> a Receive nexthop to the agent vif (the dataplane
//! answers ARP for G, packets to G are trapped). Remote routes share one Tunnel nexthop per
//! (remote host, encapsulation) and carry the remote's label. A network with floating IPs gets a
//! table label (-> VrfTranslate into its VRF) for remote hosts to send floating-IP traffic with,
//! and each floating IP gets its FIP entry plus fip/32 -> the interface's nexthop in the public
//! VRF (for proxy ARP).
//!
//! A network with a policy (`Network::policy`) gets one dataplane [`Policy`] whose id is its VRF
//! id (the shim resolved every rule to prefixes relative to this network, so policies are per
//! network) and a [`VrfPolicy`] (its subnets, that policy) on its VRF: flow processing on.
//! Route leak: for every network Y the policy connects, Y's local interfaces' /32s (-> their
//! Encap nexthops) and Y's remote routes (-> tunnel nexthop with label) are also installed in
//! this network's VRF, without proxy ARP; the network's own routes win on a clash. Y's VRF is
//! not needed here (endpoints are CIDRs).
//!
//! Service chains without a running instance (`NetPolicy::chain_down`): the prefixes across
//! the chain point at one Discard nexthop of the agent's own (not id 0, which the lookup treats
//! as no route), so their packets reach the flow stage, where the service rule drops them as
//! `Service Chain Down`; own and leaked routes win on a clash.
//!
//! Service chains with a running instance (`NetPolicy::chains`): each prefix across the chain
//! (and `0.0.0.0/0` toward the public network) points at the instance's interfaces on this
//! network's side: one member is a route to its nexthop (a local interface's Encap, or the
//! tunnel to its host with its label there); several are an ECMP Composite nexthop of those
//! (one per chain and VRF, adopted on restart through the route that points at it). The
//! network's own routes, remote and leaked ones win on a clash (the VMs' /32s stay more
//! specific anyway). A service interface's vif carries no IP: it forwards other addresses,
//! so only its MAC is checked (Tungsten Fabric relaxes anti-spoofing the same way).

mod ids;
mod system;
mod tables;

pub use system::{
    link_local_vm_vrf, LinkLocalHost, SystemHost, SystemNet, IP_FABRIC_VRF, LINK_LOCAL_NET,
    LINK_LOCAL_VRF,
};

use crate::alloc::{AllocError, Allocations};
use crate::config::{Config, Prefix};
use crate::dump::DumpIndex;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use vrouter_dataplane::tables::{
    Fip, Limits, NexthopSpec, Policy, Route, TunnelKind, VifSpec, VrfPolicy,
};
use vrouter_dataplane::wire::MacAddr;

/// Everything the agent wants in the dataplane, keyed like the dataplane's tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// VRF id -> name.
    pub vrfs: BTreeMap<u16, String>,
    /// Interfaces by id.
    pub vifs: BTreeMap<u16, VifSpec>,
    /// Nexthops by id.
    pub nhs: BTreeMap<u32, NexthopSpec>,
    /// Label -> nexthop.
    pub labels: BTreeMap<u32, u32>,
    /// (VRF, prefix, length) -> route.
    pub routes: BTreeMap<(u16, u32, u8), Route>,
    /// (public VRF, floating address) -> entry.
    pub fips: BTreeMap<(u16, u32), Fip>,
    /// Network policies by id (one per network with a policy; id = its VRF id).
    pub policies: BTreeMap<u32, Policy>,
    /// Flow configuration per VRF.
    pub vrf_policies: BTreeMap<u16, VrfPolicy>,
}

/// One local interface as programmed (the agent's "binding" view).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Binding {
    /// OS name.
    pub name: String,
    /// Network.
    pub network: String,
    /// vif id.
    pub vif: u16,
    /// VRF id.
    pub vrf: u16,
    /// Its nexthop.
    pub nh: u32,
    /// Its MPLS label (advertised to remote hosts).
    pub label: u32,
}

/// The result of compiling.
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    /// Tables.
    pub desired: Desired,
    /// Local interfaces with their ids.
    pub bindings: Vec<Binding>,
    /// Table labels per VRF name.
    pub table_labels: BTreeMap<String, u32>,
    /// Things configured but not programmable now (each one line, for the log).
    pub warnings: Vec<String>,
}

/// First vif id given to VM interfaces: 0, 1 and 2 are the fabric, host and agent interfaces
/// (Contrail's layout), kept free even when the daemon runs without some of them, so VM ids do
/// not move when it is later started with them.
pub const FIRST_VM_VIF: u16 = 3;

/// Nexthop key of an interface's Encap nexthop.
pub fn encap_key(ifname: &str) -> String {
    format!("encap/{ifname}")
}
/// Label key of an interface.
pub fn if_label_key(ifname: &str) -> String {
    format!("if/{ifname}")
}
/// Nexthop and label key of a VRF's table label.
pub fn table_key(vrf: &str) -> String {
    format!("table/{vrf}")
}
/// Nexthop key of the gateway Receive nexthop (one, shared by every VRF).
pub const RECEIVE_KEY: &str = "receive";
/// Nexthop key of the Discard nexthop the prefixes of down service chains point at.
pub const CHAIN_DOWN_KEY: &str = "discard/service-chain";
/// Nexthop key of the ECMP composite of service chain `chain` in VRF `vrf`.
pub fn composite_key(vrf: &str, chain: &str) -> String {
    format!("composite/{vrf}/{chain}")
}
/// Nexthop key of a tunnel.
pub fn tunnel_key(kind: TunnelKind, dip: Ipv4Addr) -> String {
    let k = match kind {
        TunnelKind::MplsOverUdp => "udp",
        TunnelKind::MplsOverGre => "gre",
    };
    format!("tunnel/{k}/{dip}")
}

/// Compiles `cfg` against the dataplane state `dp`, updating `alloc` (ids are adopted from `dp`
/// where it already holds the same object; see [`crate::alloc`]).
///
/// Ids first, one table at a time (a nexthop's adoption looks at the vif it was given), then the
/// tables. Route passes run in precedence order: gateways and local addresses, then remote
/// routes (which yield to them), then leaked routes (which yield to both), then service chain
/// routes and down chains' discards (which yield to all of those), then floating IPs.
pub fn compile(
    cfg: &Config,
    dp: &DumpIndex,
    alloc: &mut Allocations,
    limits: &Limits,
) -> Result<Compiled, AllocError> {
    compile_with(cfg, dp, alloc, limits, &SystemHost::default())
}

/// [`compile`] with what the host provides for system networks (dom0's link-local
/// interface; see [`system`]).
pub fn compile_with(
    cfg: &Config,
    dp: &DumpIndex,
    alloc: &mut Allocations,
    limits: &Limits,
    sys: &SystemHost,
) -> Result<Compiled, AllocError> {
    let mut b = Builder::new(cfg, dp, alloc, limits, sys);
    b.allocate_vrfs()?;
    b.allocate_vifs()?;
    b.allocate_nexthops()?;
    b.allocate_labels()?;
    b.prune();
    b.vrfs();
    b.gateways();
    b.interfaces();
    b.tunnels();
    b.remote_routes();
    b.route_leaks();
    b.chain_routes();
    b.chain_down_routes();
    b.policies();
    b.table_labels();
    b.floating_ips();
    Ok(b.out)
}

/// Where tunnels leave from: the dataplane's fabric interface and host config, with the
/// config's underlay overrides applied.
#[derive(Debug, Clone, Copy)]
struct Fabric {
    /// The fabric vif and its MAC, if the dataplane has one.
    vif: Option<(u16, MacAddr)>,
    /// The agent vif (gateway addresses are trapped to it), if the dataplane has one.
    agent_vif: Option<u16>,
    /// Tunnel source address (0: unknown).
    ip: u32,
    /// Tunnel source MAC.
    mac: MacAddr,
}

impl Fabric {
    fn new(cfg: &Config, dp: &DumpIndex) -> Self {
        let vif = dp.fabric_vif();
        Self {
            vif,
            agent_vif: dp.dump.host.agent_vif,
            ip: cfg
                .underlay
                .fabric_ip
                .map(u32::from)
                .unwrap_or(dp.dump.host.fabric_ip),
            mac: cfg
                .underlay
                .fabric_mac
                .or(vif.map(|(_, m)| m))
                .unwrap_or_default(),
        }
    }
}

/// A route another network's VRF receives if a policy connects it to the route's network.
#[derive(Debug, Clone)]
struct Leak {
    /// VRF name of the network the route belongs to.
    from_vrf: String,
    /// Destination.
    prefix: Prefix,
    /// Nexthop (an interface's Encap or a tunnel).
    nh: u32,
    /// MPLS label for remote routes.
    label: Option<u32>,
}

/// One compilation: the inputs, the ids and facts earlier passes settled for later ones, and
/// the output. Passes live in [`ids`] (allocation) and [`tables`] (the desired tables).
struct Builder<'a> {
    cfg: &'a Config,
    dp: &'a DumpIndex,
    alloc: &'a mut Allocations,
    limits: &'a Limits,
    /// What the host provides for system networks.
    sys: &'a SystemHost,
    fabric: Fabric,
    /// VRF id per network name, known once VRFs are allocated.
    vrf_ids: HashMap<String, u16>,
    /// Nexthop keys this configuration needs, each with the dataplane id to adopt.
    nh_wanted: Vec<(String, Option<u32>)>,
    /// Label keys this configuration needs, each with the dataplane label to adopt.
    label_wanted: Vec<(String, Option<u32>)>,
    /// The fabric vif tunnels leave by; `None` when remote routes cannot be installed.
    tunnel_oif: Option<u16>,
    /// Distinct (encapsulation, remote host) pairs of the remote routes, in first-use order
    /// (empty when `tunnel_oif` is `None`).
    tunnels: Vec<(TunnelKind, Ipv4Addr)>,
    /// VRFs of the networks floating IPs live in, in first-use order: each needs a table label.
    fip_vrfs: Vec<&'a str>,
    /// (vif, nexthop) of each programmed interface, for the floating IPs that map to it.
    if_nh: HashMap<&'a str, (u16, u32)>,
    /// Routes of every network, for the VRFs a policy connects to them.
    leaks: Vec<Leak>,
    out: Compiled,
}

impl<'a> Builder<'a> {
    fn new(
        cfg: &'a Config,
        dp: &'a DumpIndex,
        alloc: &'a mut Allocations,
        limits: &'a Limits,
        sys: &'a SystemHost,
    ) -> Self {
        Self {
            cfg,
            dp,
            alloc,
            limits,
            sys,
            fabric: Fabric::new(cfg, dp),
            vrf_ids: HashMap::new(),
            nh_wanted: Vec::new(),
            label_wanted: Vec::new(),
            tunnel_oif: None,
            tunnels: Vec::new(),
            fip_vrfs: fip_vrfs(cfg),
            if_nh: HashMap::new(),
            leaks: Vec::new(),
            out: Compiled::default(),
        }
    }

    /// The VRF name of network `net` (the name itself if there is no such network).
    fn vrf_name(&self, net: &str) -> String {
        self.cfg
            .network(net)
            .map_or_else(|| net.to_string(), |n| n.vrf.clone())
    }
}

/// The VRFs of the networks floating IPs live in, each once, in first-use order.
fn fip_vrfs(cfg: &Config) -> Vec<&str> {
    let mut vrfs: Vec<&str> = Vec::new();
    for f in &cfg.floating_ips {
        if let Some(n) = cfg.network(&f.network) {
            if !vrfs.contains(&n.vrf.as_str()) {
                vrfs.push(&n.vrf);
            }
        }
    }
    vrfs
}
