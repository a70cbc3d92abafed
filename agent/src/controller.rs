//! The controller config source (`--controller URL`): the agent's half of the shim's agent API
//! (`docs/shim.md`, "Agent API").
//!
//! * A **worker** thread registers the agent (`POST /vrouter/agents`), announces every vif the
//!   xenstore binder bound (`POST /vrouter/bindings`, then `GET /vrouter/interfaces/<vmi>` for a
//!   quick first config), withdraws unbound ones, advertises each programmed interface's /32
//!   with its label (and each floating IP with its public VRF's table label), and resolves the
//!   underlay MAC of every remote host it needs (ARP through the host stack, see
//!   [`neighbour`]).
//! * A **watch** thread follows `GET /vrouter/watch` (long-poll, resumed with `since`, a
//!   `reset` replaces everything) into the [`ControllerState`].
//! * [`ControllerState::build`] (I/O-free) turns that state into the agent's [`Config`]:
//!   one network per VRF name, the bound interfaces under their dom0 port names, floating IPs,
//!   remote routes with label, nexthop = the remote fabric IP and the default encapsulation.
//!
//! Headless-safe: an unreachable shim changes nothing (the state is kept, calls are retried with
//! a backoff up to 30 s); the agent applies nothing before the first watch answer (and the first
//! xenstore scan), so a restarted agent never removes what the dataplane holds.

use crate::compile::Compiled;
use crate::config::{
    Config, FloatingIp, Interface, NetPolicy, Network, Prefix, RemoteRoute, Underlay, MAX_LABEL,
};
use crate::daemon::Observer;
use crate::source::{ConfigSource, SourceError};
use crate::xenbind::{known_interface, BindTarget};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use vrouter_dataplane::tables::TunnelKind;
use vrouter_dataplane::wire::MacAddr;
use vrouter_xen::binder::{KnownInterface, VifBinding};

/// One network of an interface config.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct NetRef {
    /// Virtual-network UUID.
    #[serde(default)]
    pub uuid: Option<String>,
    /// VRF name (fq_name joined with `:`).
    #[serde(default)]
    pub vrf: Option<String>,
    /// The network's IPAM subnets (`a.b.c.d/n`).
    #[serde(default)]
    pub subnets: Vec<String>,
}

/// One side of a resolved policy rule (the shim's `rules[].src[]` / `dst[]`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct EndpointConf {
    /// `any`.
    #[serde(default)]
    pub any: bool,
    /// A network (its VRF name) with its subnets.
    #[serde(default)]
    pub vrf: Option<String>,
    /// That network's subnets.
    #[serde(default)]
    pub subnets: Vec<String>,
    /// A CIDR.
    #[serde(default)]
    pub subnet: Option<String>,
}

/// One policy rule as the shim resolved it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct RuleConf {
    /// `<>` or `>`.
    #[serde(default)]
    pub direction: String,
    /// IP protocol, `None` for any.
    #[serde(default)]
    pub protocol: Option<u8>,
    /// Sources.
    #[serde(default)]
    pub src: Vec<EndpointConf>,
    /// Destinations.
    #[serde(default)]
    pub dst: Vec<EndpointConf>,
    /// Source port ranges.
    #[serde(default)]
    pub src_ports: Vec<(u16, u16)>,
    /// Destination port ranges.
    #[serde(default)]
    pub dst_ports: Vec<(u16, u16)>,
    /// `pass` or `deny`.
    #[serde(default)]
    pub action: String,
}

/// One network-policy attached to the interface's network.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct PolicyConf {
    /// fq_name.
    #[serde(default)]
    pub fq_name: Vec<String>,
    /// Resolved rules.
    #[serde(default)]
    pub rules: Vec<RuleConf>,
}

/// A network a policy connects to the interface's network (route leak).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct ConnectedConf {
    /// Its VRF name.
    pub vrf: String,
    /// Its subnets.
    #[serde(default)]
    pub subnets: Vec<String>,
}

/// The rules appended for a VM with a floating IP (see [`ControllerState::build`]): deny to and
/// from each connected prefix, then pass to and from anywhere.
pub fn fip_rules(
    ip: Ipv4Addr,
    connected: &[Prefix],
) -> Vec<vrouter_dataplane::tables::policy::PolicyRule> {
    use vrouter_dataplane::tables::policy::{Direction, Endpoint, PolicyAction, PolicyRule};
    let rule = |dst, action| PolicyRule {
        direction: Direction::Both,
        proto: None,
        src: Endpoint::Cidr(u32::from(ip), 32),
        src_ports: PolicyRule::ANY_PORT,
        dst,
        dst_ports: PolicyRule::ANY_PORT,
        action,
    };
    connected
        .iter()
        .map(|p| rule(Endpoint::Cidr(u32::from(p.addr), p.len), PolicyAction::Deny))
        .chain(std::iter::once(rule(Endpoint::Any, PolicyAction::Pass)))
        .collect()
}

/// Most dataplane rules one network's policy expands to (addresses x ports).
pub const MAX_RULES: usize = 4096;

/// Expands the shim's rules to dataplane rules (one per source prefix, destination prefix and
/// port ranges). Endpoints without prefixes (a network with no subnets) match nothing and are
/// left out; a rule with a side left empty is dropped.
pub fn expand_rules(
    policies: &[PolicyConf],
    warnings: &mut Vec<String>,
) -> Vec<vrouter_dataplane::tables::policy::PolicyRule> {
    use vrouter_dataplane::tables::policy::{Direction, Endpoint, PolicyAction, PolicyRule};
    let eps = |list: &[EndpointConf]| -> Vec<Endpoint> {
        let mut out = Vec::new();
        for e in list {
            if e.any {
                out.push(Endpoint::Any);
                continue;
            }
            let prefixes = e
                .subnet
                .iter()
                .chain(e.vrf.as_ref().map_or(&[][..], |_| &e.subnets[..]));
            for p in prefixes {
                if let Ok(p) = Prefix::parse(p) {
                    out.push(Endpoint::Cidr(u32::from(p.addr), p.len));
                }
            }
        }
        out
    };
    let ports = |l: &[(u16, u16)]| -> Vec<(u16, u16)> {
        let v: Vec<(u16, u16)> = l.iter().copied().filter(|(a, b)| a <= b).collect();
        if v.is_empty() {
            vec![PolicyRule::ANY_PORT]
        } else {
            v
        }
    };
    let mut out = Vec::new();
    for p in policies {
        for r in &p.rules {
            let action = match r.action.as_str() {
                "pass" => PolicyAction::Pass,
                "deny" => PolicyAction::Deny,
                _ => continue,
            };
            let direction = if r.direction == ">" {
                Direction::OneWay
            } else {
                Direction::Both
            };
            let (src, dst) = (eps(&r.src), eps(&r.dst));
            let (sp, dp) = (ports(&r.src_ports), ports(&r.dst_ports));
            for s in &src {
                for d in &dst {
                    for a in &sp {
                        for b in &dp {
                            if out.len() >= MAX_RULES {
                                warnings.push(format!(
                                    "policy {}: more than {MAX_RULES} rules after expansion; the rest are left out",
                                    p.fq_name.join(":")
                                ));
                                return out;
                            }
                            out.push(PolicyRule {
                                direction,
                                proto: r.protocol,
                                src: *s,
                                src_ports: *a,
                                dst: *d,
                                dst_ports: *b,
                                action,
                            });
                        }
                    }
                }
            }
        }
    }
    out
}

/// One instance IP of an interface config.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct IpConf {
    /// Address.
    #[serde(default)]
    pub address: Option<String>,
    /// The subnet it is in, `a.b.c.d/n`.
    #[serde(default)]
    pub subnet: Option<String>,
    /// Prefix length of that subnet.
    #[serde(default)]
    pub prefix_len: Option<u8>,
    /// Subnet gateway.
    #[serde(default)]
    pub gateway: Option<String>,
    /// DNS server.
    #[serde(default)]
    pub dns_server: Option<String>,
}

/// One floating IP of an interface config.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct FipConf {
    /// Floating address.
    #[serde(default)]
    pub address: Option<String>,
    /// The public network's VRF.
    #[serde(default)]
    pub vrf: Option<String>,
}

/// `GET /vrouter/interfaces/<vmi>` (and the value of an `interface` watch event). Only what the
/// agent uses; everything is optional so a half-configured VMI is skipped, not an error.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct IfaceConfig {
    /// VMI UUID.
    #[serde(default)]
    pub uuid: Option<String>,
    /// VMI name (`<instance>-<devid>`).
    #[serde(default)]
    pub name: Option<String>,
    /// VM UUID.
    #[serde(default)]
    pub vm_uuid: Option<String>,
    /// MAC.
    #[serde(default)]
    pub mac: Option<String>,
    /// Network.
    #[serde(default)]
    pub network: Option<NetRef>,
    /// Fixed IPs (the first IPv4 one is used).
    #[serde(default)]
    pub ips: Vec<IpConf>,
    /// Floating IPs.
    #[serde(default)]
    pub floating_ips: Vec<FipConf>,
    /// `virtual_machine_interface_properties` (`interface_mtu` is honoured).
    #[serde(default)]
    pub properties: Option<Value>,
    /// Network-policies attached to the network, rules resolved by the shim.
    #[serde(default)]
    pub policies: Vec<PolicyConf>,
    /// Networks a policy connects to this one (their routes are in our watch view).
    #[serde(default)]
    pub connected: Vec<ConnectedConf>,
}

/// A route another host advertised (value of a `route` watch event).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RouteAd {
    /// Origin host.
    pub host: String,
    /// VRF name.
    pub vrf: String,
    /// Prefix.
    pub prefix: String,
    /// The origin's label.
    pub label: u32,
    /// The origin's fabric IP.
    pub nexthop: String,
    /// The VMI behind it, if any.
    #[serde(default)]
    pub vmi_uuid: Option<String>,
}

/// One watch event.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WatchEvent {
    /// Revision.
    pub rev: u64,
    /// `interface` or `route`.
    pub kind: String,
    /// `iface/<vmi>` or `route/<vrf>/<prefix>/<host>`.
    pub key: String,
    /// `put` or `delete`.
    pub op: String,
    /// The new value (put).
    #[serde(default)]
    pub value: Option<Value>,
}

/// A watch answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WatchReply {
    /// Where to resume.
    pub rev: u64,
    /// A full snapshot: replace everything.
    #[serde(default)]
    pub reset: bool,
    /// Events in revision order.
    #[serde(default)]
    pub events: Vec<WatchEvent>,
}

/// A dom0 port bound to a VMI by xenstore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// dom0 device name.
    pub name: String,
    /// MAC xenstore has.
    pub mac: MacAddr,
}

/// Fixed settings of the controller source.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Controller base URL, e.g. `http://10.0.0.5:8082`.
    pub url: String,
    /// `X-Auth-Token`.
    pub token: Option<String>,
    /// Our host name at the shim.
    pub host: String,
    /// Our fabric IP (default: the dataplane's).
    pub fabric_ip: Option<Ipv4Addr>,
    /// Underlay next-hop MAC for remote hosts whose MAC is not resolved (routed underlay).
    pub gateway_mac: Option<MacAddr>,
    /// Fixed underlay MACs per remote host (win over ARP).
    pub neighbours: BTreeMap<Ipv4Addr, MacAddr>,
    /// Resolve remote hosts' MACs by ARP through the host stack.
    pub arp: bool,
    /// Encapsulation of remote routes.
    pub encap: TunnelKind,
    /// MTU of interfaces whose config has none.
    pub mtu: u16,
    /// Dataplane control socket (to learn the fabric IP).
    pub dp_socket: PathBuf,
    /// Whether a xenstore binder reports the bound ports (readiness waits for its first scan).
    pub xenstore: bool,
}

/// What the agent knows from the controller and xenstore. I/O-free.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ControllerState {
    /// VMI -> config (watch view and fetches).
    pub ifaces: BTreeMap<String, IfaceConfig>,
    /// Watch key -> (revision, remote route).
    pub routes: BTreeMap<String, (u64, RouteAd)>,
    /// VMI -> the dom0 port xenstore bound to it.
    pub ports: BTreeMap<String, Port>,
    /// Resolved underlay MACs of remote hosts.
    pub neighbours: BTreeMap<Ipv4Addr, MacAddr>,
    /// Watch resume point.
    pub since: u64,
}

/// A configuration built from the controller state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Built {
    /// The agent's config.
    pub config: Config,
    /// Things skipped, one line each.
    pub warnings: Vec<String>,
    /// Remote fabric IPs with no underlay MAC yet (their routes are left out until resolved).
    pub unresolved: BTreeSet<Ipv4Addr>,
    /// Port name -> VMI of the interfaces in `config`.
    pub vmi_of_port: BTreeMap<String, String>,
}

/// What we advertise: (VRF, prefix) -> (label, VMI).
pub type Adverts = BTreeMap<(String, String), (u32, String)>;

fn parse_ip(s: Option<&str>) -> Option<Ipv4Addr> {
    s.and_then(|s| s.trim().parse().ok())
}

impl ControllerState {
    /// Applies a watch answer. True if anything changed.
    pub fn apply_watch(&mut self, reply: &WatchReply) -> bool {
        let before_i = self.ifaces.clone();
        let before_r = self.routes.clone();
        if reply.reset {
            self.ifaces.clear();
            self.routes.clear();
        }
        for ev in &reply.events {
            let put = ev.op == "put";
            match ev.kind.as_str() {
                "interface" => {
                    let vmi = ev.key.strip_prefix("iface/").unwrap_or(&ev.key).to_string();
                    let val = ev
                        .value
                        .clone()
                        .filter(|_| put)
                        .map(serde_json::from_value::<IfaceConfig>);
                    match val {
                        Some(Ok(c)) => {
                            self.ifaces.insert(vmi, c);
                        }
                        Some(Err(e)) => {
                            log::warn!("controller: interface {vmi}: unusable config: {e}");
                            self.ifaces.remove(&vmi);
                        }
                        None => {
                            self.ifaces.remove(&vmi);
                        }
                    }
                }
                "route" => {
                    let val = ev
                        .value
                        .clone()
                        .filter(|_| put)
                        .map(serde_json::from_value::<RouteAd>);
                    match val {
                        Some(Ok(r)) => {
                            self.routes.insert(ev.key.clone(), (ev.rev, r));
                        }
                        Some(Err(e)) => {
                            log::warn!("controller: route {}: unusable: {e}", ev.key);
                            self.routes.remove(&ev.key);
                        }
                        None => {
                            self.routes.remove(&ev.key);
                        }
                    }
                }
                other => log::debug!("controller: ignoring watch event of kind {other:?}"),
            }
        }
        self.since = reply.rev;
        before_i != self.ifaces || before_r != self.routes
    }

    /// The known interfaces, for the xenstore binder's directory.
    pub fn directory(&self) -> Vec<KnownInterface> {
        self.ifaces
            .iter()
            .filter_map(|(vmi, c)| {
                let mac = c
                    .mac
                    .as_deref()
                    .and_then(|m| m.parse::<MacAddr>().ok())
                    .map(|m| m.0);
                known_interface(
                    vmi,
                    c.vm_uuid.as_deref()?,
                    c.network.as_ref().and_then(|n| n.uuid.as_deref()),
                    c.name.as_deref().unwrap_or(""),
                    mac,
                )
            })
            .collect()
    }

    /// Builds the agent's configuration. Items that cannot be programmed (no network or IP
    /// yet, a conflict) are left out with a warning; the rest still is.
    pub fn build(&self, s: &Settings) -> Built {
        let mut out = Built::default();
        let mut networks: BTreeMap<String, Network> = BTreeMap::new();
        let mut interfaces: Vec<Interface> = Vec::new();
        let mut taken: HashSet<(String, Ipv4Addr)> = HashSet::new();
        let mut ports: Vec<(&String, &Port)> = self.ports.iter().collect();
        ports.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        let mut fips: Vec<FloatingIp> = Vec::new();
        let mut fip_seen: HashSet<(String, Ipv4Addr)> = HashSet::new();
        for (vmi, port) in ports {
            let Some(c) = self.ifaces.get(vmi) else {
                continue; // not configured yet: the watch or the fetch brings it
            };
            let item = format!("interface {} (vmi {vmi})", port.name);
            let Some(vrf) = c
                .network
                .as_ref()
                .and_then(|n| n.vrf.clone())
                .filter(|v| !v.trim().is_empty())
            else {
                out.warnings.push(format!("{item}: no network yet"));
                continue;
            };
            let Some((ip, ipc)) = c
                .ips
                .iter()
                .find_map(|i| parse_ip(i.address.as_deref()).map(|a| (a, i)))
            else {
                out.warnings.push(format!("{item}: no IPv4 address yet"));
                continue;
            };
            let mac = match c.mac.as_deref().map(str::parse::<MacAddr>) {
                Some(Ok(m)) => m,
                _ => port.mac,
            };
            if mac.0[0] & 1 != 0 || mac.0 == [0; 6] {
                out.warnings
                    .push(format!("{item}: mac {mac} is not a unicast MAC"));
                continue;
            }
            let subnet = ipc
                .subnet
                .as_deref()
                .and_then(|p| Prefix::parse(p).ok())
                .or_else(|| {
                    let len = ipc.prefix_len.filter(|l| *l <= 32)?;
                    let p = Prefix { addr: ip, len };
                    Some(Prefix {
                        addr: Ipv4Addr::from(u32::from(ip) & p.mask()),
                        len,
                    })
                })
                .filter(|p| p.contains(ip));
            let gateway =
                parse_ip(ipc.gateway.as_deref()).filter(|g| subnet.is_none_or(|p| p.contains(*g)));
            let net = networks.entry(vrf.clone()).or_insert_with(|| Network {
                name: vrf.clone(),
                vrf: vrf.clone(),
                subnet,
                gateway,
                policy: None,
            });
            if net.policy.is_none() && (!c.policies.is_empty() || !c.connected.is_empty()) {
                let mut subnets: Vec<Prefix> = c
                    .network
                    .iter()
                    .flat_map(|n| n.subnets.iter())
                    .filter_map(|p| Prefix::parse(p).ok())
                    .collect();
                if subnets.is_empty() {
                    subnets.extend(subnet);
                }
                net.policy = Some(NetPolicy {
                    names: c.policies.iter().map(|p| p.fq_name.join(":")).collect(),
                    subnets,
                    rules: expand_rules(&c.policies, &mut out.warnings),
                    connected: c
                        .connected
                        .iter()
                        .map(|x| x.vrf.clone())
                        .filter(|x| *x != vrf)
                        .collect(),
                });
            }
            if net.subnet.is_none() && net.gateway.is_none() {
                net.subnet = subnet;
                net.gateway = gateway;
            }
            if let Some(ns) = net.subnet {
                if !ns.contains(ip) {
                    out.warnings.push(format!(
                        "{item}: ip {ip} is outside {vrf}'s subnet {ns} (one subnet per network is supported)"
                    ));
                    continue;
                }
            }
            if net.gateway == Some(ip) {
                out.warnings
                    .push(format!("{item}: ip {ip} is the gateway of {vrf}"));
                continue;
            }
            if !taken.insert((vrf.clone(), ip)) {
                out.warnings
                    .push(format!("{item}: ip {ip} is already used in {vrf}"));
                continue;
            }
            let mtu = c
                .properties
                .as_ref()
                .and_then(|p| p.get("interface_mtu"))
                .and_then(Value::as_u64)
                .and_then(|m| u16::try_from(m).ok())
                .filter(|m| (68..=9216).contains(m))
                .unwrap_or(s.mtu);
            let dns: Vec<Ipv4Addr> = parse_ip(ipc.dns_server.as_deref()).into_iter().collect();
            for f in &c.floating_ips {
                let (Some(addr), Some(fvrf)) = (
                    parse_ip(f.address.as_deref()),
                    f.vrf.clone().filter(|v| !v.is_empty()),
                ) else {
                    continue;
                };
                if fvrf == vrf {
                    out.warnings.push(format!(
                        "{item}: floating ip {addr} is in the interface's own network"
                    ));
                    continue;
                }
                if !fip_seen.insert((fvrf.clone(), addr)) {
                    out.warnings.push(format!(
                        "{item}: floating ip {addr} in {fvrf} is used twice"
                    ));
                    continue;
                }
                fips.push(FloatingIp {
                    network: fvrf,
                    address: addr,
                    interface: port.name.clone(),
                });
            }
            out.vmi_of_port.insert(port.name.clone(), vmi.clone());
            interfaces.push(Interface {
                name: port.name.clone(),
                mac,
                ip,
                network: vrf,
                mtu,
                dns,
                nic_uuid: Some(vmi.clone()),
                vm_uuid: c.vm_uuid.clone(),
            });
        }
        // Public networks of floating IPs (no local subnet, no gateway).
        for f in &fips {
            networks
                .entry(f.network.clone())
                .or_insert_with(|| Network {
                    name: f.network.clone(),
                    vrf: f.network.clone(),
                    subnet: None,
                    gateway: None,
                    policy: None,
                });
        }
        // Floating-IP traffic is governed by the public network (Contrail), which has no policy
        // here, but the dataplane also judges it by the private network's policy: after that
        // policy's own rules, a VM with a floating IP may talk to anything except the networks
        // the policy connects (whose traffic those rules alone decide).
        for net in networks.values_mut() {
            let Some(pol) = net.policy.as_mut() else {
                continue;
            };
            let connected: Vec<Prefix> = self
                .ifaces
                .values()
                .filter(|c| c.network.as_ref().and_then(|n| n.vrf.as_deref()) == Some(&net.vrf))
                .flat_map(|c| c.connected.iter())
                .filter(|c| pol.connected.contains(&c.vrf))
                .flat_map(|c| c.subnets.iter())
                .filter_map(|p| Prefix::parse(p).ok())
                .collect::<BTreeSet<Prefix>>()
                .into_iter()
                .collect();
            let with_fip: BTreeSet<Ipv4Addr> = interfaces
                .iter()
                .filter(|i| i.network == net.name && fips.iter().any(|f| f.interface == i.name))
                .map(|i| i.ip)
                .collect();
            for ip in with_fip {
                pol.rules.extend(fip_rules(ip, &connected));
            }
        }
        // Local /32s win over remote routes for the same prefix (a VM that moved here).
        let local: HashSet<(String, Prefix)> = interfaces
            .iter()
            .map(|i| {
                (
                    i.network.clone(),
                    Prefix {
                        addr: i.ip,
                        len: 32,
                    },
                )
            })
            .chain(fips.iter().map(|f| {
                (
                    f.network.clone(),
                    Prefix {
                        addr: f.address,
                        len: 32,
                    },
                )
            }))
            .collect();
        let mut best: BTreeMap<(String, Prefix), (u64, RemoteRoute)> = BTreeMap::new();
        let mut neighbours = s.neighbours.clone();
        // Networks whose routes leak into a local one (policy-connected).
        let leaked: HashSet<&String> = networks
            .values()
            .filter_map(|n| n.policy.as_ref())
            .flat_map(|p| p.connected.iter())
            .collect();
        for (key, (rev, r)) in &self.routes {
            if r.host == s.host || !(networks.contains_key(&r.vrf) || leaked.contains(&r.vrf)) {
                continue;
            }
            let Ok(prefix) = Prefix::parse(&r.prefix) else {
                out.warnings
                    .push(format!("route {key}: bad prefix {:?}", r.prefix));
                continue;
            };
            if r.label > MAX_LABEL {
                out.warnings
                    .push(format!("route {key}: label {} too big", r.label));
                continue;
            }
            let Some(nh) = parse_ip(Some(&r.nexthop)) else {
                out.warnings
                    .push(format!("route {key}: bad nexthop {:?}", r.nexthop));
                continue;
            };
            if Some(nh) == s.fabric_ip || local.contains(&(r.vrf.clone(), prefix)) {
                continue;
            }
            let mac = s
                .neighbours
                .get(&nh)
                .or_else(|| self.neighbours.get(&nh))
                .copied()
                .or(s.gateway_mac);
            let Some(mac) = mac else {
                out.unresolved.insert(nh);
                continue;
            };
            neighbours.insert(nh, mac);
            let rr = RemoteRoute {
                network: r.vrf.clone(),
                prefix,
                label: r.label,
                remote: nh,
                encap: s.encap,
            };
            let k = (r.vrf.clone(), prefix);
            if best.get(&k).is_none_or(|(brev, _)| rev > brev) {
                best.insert(k, (*rev, rr));
            }
        }
        if !out.unresolved.is_empty() {
            out.warnings.push(format!(
                "routes via {:?} wait for the underlay MAC of those hosts",
                out.unresolved
            ));
        }
        let used: BTreeSet<Ipv4Addr> = best.values().map(|(_, r)| r.remote).collect();
        neighbours.retain(|ip, _| used.contains(ip));
        out.config = Config {
            underlay: Underlay {
                fabric_ip: s.fabric_ip,
                fabric_mac: None,
                gateway_mac: s.gateway_mac,
                neighbours,
                encap: s.encap,
            },
            networks: networks.into_values().collect(),
            interfaces,
            routes: best.into_values().map(|(_, r)| r).collect(),
            floating_ips: fips,
        };
        out
    }
}

/// What to advertise for what was programmed: each interface's /32 with its label, each
/// floating IP's /32 in its public VRF with that VRF's table label.
pub fn adverts(
    cfg: &Config,
    compiled: &Compiled,
    vmi_of_port: &BTreeMap<String, String>,
) -> Adverts {
    let mut out = Adverts::new();
    let ifaces: HashMap<&str, &Interface> = cfg
        .interfaces
        .iter()
        .map(|i| (i.name.as_str(), i))
        .collect();
    for b in &compiled.bindings {
        let (Some(i), Some(vmi)) = (ifaces.get(b.name.as_str()), vmi_of_port.get(&b.name)) else {
            continue;
        };
        let Some(net) = cfg.network(&i.network) else {
            continue;
        };
        out.insert(
            (net.vrf.clone(), format!("{}/32", i.ip)),
            (b.label, vmi.clone()),
        );
    }
    for f in &cfg.floating_ips {
        let (Some(net), Some(vmi)) = (cfg.network(&f.network), vmi_of_port.get(&f.interface))
        else {
            continue;
        };
        if let Some(label) = compiled.table_labels.get(&net.vrf) {
            out.insert(
                (net.vrf.clone(), format!("{}/32", f.address)),
                (*label, vmi.clone()),
            );
        }
    }
    out
}

/// Underlay neighbours: the MAC of a remote host's fabric IP, learned by the host stack's ARP.
pub mod neighbour {
    use super::MacAddr;
    use std::net::{Ipv4Addr, UdpSocket};

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
}

/// An error talking to the shim.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShimError {
    /// The shim answered with an error status.
    #[error("HTTP {0}: {1}")]
    Status(u16, String),
    /// No answer.
    #[error("{0}")]
    Transport(String),
    /// Something local is missing (the dataplane's fabric IP): retried every second.
    #[error("{0}")]
    Local(String),
}

/// A small client of the shim's agent API.
#[derive(Debug, Clone)]
pub struct Shim {
    http: ureq::Agent,
    base: String,
    token: Option<String>,
}

impl Shim {
    /// A client for `base` (`http://host:port`).
    pub fn new(base: &str, token: Option<String>) -> Self {
        let http = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(3))
            .timeout_read(Duration::from_secs(45))
            .timeout_write(Duration::from_secs(10))
            .build();
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, ShimError> {
        let mut req = self.http.request(method, &format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.set("X-Auth-Token", t);
        }
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match res {
            Ok(r) => {
                let text = r
                    .into_string()
                    .map_err(|e| ShimError::Transport(e.to_string()))?;
                if text.trim().is_empty() {
                    return Ok(Value::Null);
                }
                serde_json::from_str(&text).map_err(|e| ShimError::Transport(e.to_string()))
            }
            Err(ureq::Error::Status(code, r)) => {
                Err(ShimError::Status(code, r.into_string().unwrap_or_default()))
            }
            Err(e) => Err(ShimError::Transport(e.to_string())),
        }
    }

    /// `POST /vrouter/agents`.
    pub fn register(&self, host: &str, fabric_ip: Ipv4Addr) -> Result<Value, ShimError> {
        self.call(
            "POST",
            "/vrouter/agents",
            Some(&json!({"hostname": host, "fabric_ip": fabric_ip.to_string()})),
        )
    }

    /// `POST /vrouter/bindings`.
    pub fn bind(&self, host: &str, vmi: &str) -> Result<Value, ShimError> {
        self.call(
            "POST",
            "/vrouter/bindings",
            Some(&json!({"host": host, "vmi_uuid": vmi})),
        )
    }

    /// `DELETE /vrouter/bindings`.
    pub fn unbind(&self, host: &str, vmi: &str) -> Result<Value, ShimError> {
        self.call(
            "DELETE",
            "/vrouter/bindings",
            Some(&json!({"host": host, "vmi_uuid": vmi})),
        )
    }

    /// `GET /vrouter/interfaces/<vmi>`; `None` if the shim does not know it (yet).
    pub fn interface(&self, vmi: &str) -> Result<Option<IfaceConfig>, ShimError> {
        match self.call("GET", &format!("/vrouter/interfaces/{vmi}"), None) {
            Ok(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|e| ShimError::Transport(format!("interface {vmi}: {e}"))),
            Err(ShimError::Status(404, _)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /vrouter/routes` (nexthop: our registered fabric IP).
    pub fn advertise(
        &self,
        host: &str,
        vrf: &str,
        prefix: &str,
        label: u32,
        vmi: &str,
    ) -> Result<Value, ShimError> {
        self.call(
            "POST",
            "/vrouter/routes",
            Some(&json!({"host": host, "vrf": vrf, "prefix": prefix, "label": label, "vmi_uuid": vmi})),
        )
    }

    /// `DELETE /vrouter/routes`.
    pub fn withdraw(&self, host: &str, vrf: &str, prefix: &str) -> Result<Value, ShimError> {
        self.call(
            "DELETE",
            "/vrouter/routes",
            Some(&json!({"host": host, "vrf": vrf, "prefix": prefix})),
        )
    }

    /// `GET /vrouter/watch`.
    pub fn watch(&self, host: &str, since: u64, timeout_s: u32) -> Result<WatchReply, ShimError> {
        let v = self.call(
            "GET",
            &format!(
                "/vrouter/watch?host={}&since={since}&timeout={timeout_s}",
                urlencode(host)
            ),
            None,
        )?;
        serde_json::from_value(v).map_err(|e| ShimError::Transport(format!("watch: {e}")))
    }

    /// `GET /vrouter/agents`: the VMIs the shim has bound to `host`.
    pub fn bindings_of(&self, host: &str) -> Result<BTreeSet<String>, ShimError> {
        let v = self.call("GET", "/vrouter/agents", None)?;
        Ok(v["agents"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["hostname"] == host)
            .flat_map(|a| a["bindings"].as_array().cloned().unwrap_or_default())
            .filter_map(|b| match b {
                Value::String(s) => Some(s),
                o => o["vmi_uuid"].as_str().map(str::to_string),
            })
            .collect())
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[derive(Debug, Default)]
struct Inner {
    st: ControllerState,
    /// Something for the agent loop to reload.
    changed: bool,
    /// What the last pass programmed wants advertised.
    want_adverts: Adverts,
    /// Remote hosts whose MAC we need.
    unresolved: BTreeSet<Ipv4Addr>,
    /// Port -> VMI of the last built config.
    vmi_of_port: BTreeMap<String, String>,
    registered: bool,
    fabric_ip: Option<Ipv4Addr>,
    watch_ok: bool,
    scanned: bool,
    dir_gen: u64,
    kick: bool,
}

#[derive(Debug)]
struct Shared {
    s: Settings,
    shim: Shim,
    inner: Mutex<Inner>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn kick(&self, g: &mut Inner) {
        g.kick = true;
        self.cv.notify_all();
    }
}

impl BindTarget for Shared {
    fn directory(&self) -> Vec<KnownInterface> {
        self.lock().st.directory()
    }
    fn directory_generation(&self) -> u64 {
        self.lock().dir_gen
    }
    fn bound(&self, b: &VifBinding) {
        let mut g = self.lock();
        g.st.ports.insert(
            b.nic_uuid.to_string(),
            Port {
                name: b.port.clone(),
                mac: MacAddr(b.mac.0),
            },
        );
        g.changed = true;
        self.kick(&mut g);
    }
    fn unbound(&self, b: &VifBinding) {
        let mut g = self.lock();
        let nic = b.nic_uuid.to_string();
        if g.st.ports.get(&nic).is_some_and(|p| p.name == b.port) {
            g.st.ports.remove(&nic);
        }
        g.changed = true;
        self.kick(&mut g);
    }
    fn scanned(&self) {
        let mut g = self.lock();
        g.scanned = true;
        g.changed = true;
        self.kick(&mut g);
    }
}

/// The controller config source. See the module docs.
#[derive(Debug)]
pub struct ControllerSource {
    shared: Arc<Shared>,
    last_warnings: Vec<String>,
}

impl ControllerSource {
    /// Starts the worker and watch threads.
    ///
    /// # Errors
    /// A thread could not be spawned.
    pub fn start(s: Settings) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            shim: Shim::new(&s.url, s.token.clone()),
            inner: Mutex::new(Inner {
                scanned: !s.xenstore,
                fabric_ip: s.fabric_ip,
                ..Inner::default()
            }),
            s,
            cv: Condvar::new(),
        });
        let w = shared.clone();
        std::thread::Builder::new()
            .name("controller".into())
            .spawn(move || worker(&w))?;
        let w = shared.clone();
        std::thread::Builder::new()
            .name("controller-watch".into())
            .spawn(move || watcher(&w))?;
        Ok(Self {
            shared,
            last_warnings: Vec::new(),
        })
    }

    /// The binder target (xenstore bindings go to the controller state).
    pub fn bind_target(&self) -> Arc<dyn BindTarget> {
        self.shared.clone()
    }

    /// The observer that advertises what each pass programmed.
    pub fn observer(&self) -> Observer {
        let shared = self.shared.clone();
        Box::new(move |cfg: &Config, compiled: &Compiled| {
            let mut g = shared.lock();
            let want = adverts(cfg, compiled, &g.vmi_of_port);
            if want != g.want_adverts {
                g.want_adverts = want;
                shared.kick(&mut g);
            }
        })
    }
}

impl ConfigSource for ControllerSource {
    fn describe(&self) -> String {
        format!(
            "controller {} (host {})",
            self.shared.s.url, self.shared.s.host
        )
    }

    fn load(&mut self) -> Result<Config, SourceError> {
        let mut g = self.shared.lock();
        g.changed = false;
        let built = g.st.build(&self.shared.s);
        g.vmi_of_port = built.vmi_of_port;
        if built.unresolved != g.unresolved {
            g.unresolved = built.unresolved;
            if !g.unresolved.is_empty() {
                self.shared.kick(&mut g);
            }
        }
        drop(g);
        if built.warnings != self.last_warnings {
            for w in &built.warnings {
                log::warn!("controller: {w}");
            }
            self.last_warnings = built.warnings;
        }
        Ok(built.config)
    }

    fn changed(&mut self) -> bool {
        self.shared.lock().changed
    }

    fn ready(&mut self) -> bool {
        let g = self.shared.lock();
        g.watch_ok && g.scanned
    }
}

/// Exponential backoff 1 s .. 30 s.
#[derive(Debug)]
struct Backoff {
    next: Duration,
    until: Option<Instant>,
}

impl Backoff {
    fn new() -> Self {
        Self {
            next: Duration::from_secs(1),
            until: None,
        }
    }
    fn fail(&mut self) {
        self.until = Some(Instant::now() + self.next);
        self.next = (self.next * 2).min(Duration::from_secs(30));
    }
    fn ok(&mut self) {
        self.next = Duration::from_secs(1);
        self.until = None;
    }
    fn waiting(&self) -> bool {
        self.until.is_some_and(|t| Instant::now() < t)
    }
}

fn dataplane_fabric_ip(sock: &std::path::Path) -> Result<Ipv4Addr, String> {
    use vrouter_dataplane::ctl::{CtlClient, Request, Response};
    let mut c = CtlClient::connect(sock).map_err(|e| e.to_string())?;
    match c.request(&Request::Info).map_err(|e| e.to_string())? {
        Response::Info { host, .. } if host.fabric_ip != 0 => Ok(Ipv4Addr::from(host.fabric_ip)),
        Response::Info { .. } => Err(
            "the dataplane has no fabric IP (vrouter-dp --fabric-ip, or --fabric-ip here)".into(),
        ),
        _ => Err("unexpected answer to Info".into()),
    }
}

/// Known underlay neighbours are re-checked this often.
const NEIGH_REFRESH: Duration = Duration::from_secs(30);

/// Re-announce everything this often (idempotent at the shim; heals a shim that lost state).
const REANNOUNCE: Duration = Duration::from_secs(60);

fn worker(sh: &Shared) {
    let s = &sh.s;
    let mut backoff = Backoff::new();
    let mut announced: BTreeSet<String> = BTreeSet::new();
    let mut advertised: Adverts = Adverts::new();
    let mut last_full = Instant::now();
    let mut down_logged = false;
    let mut cleaned = false;
    let mut last_refresh = Instant::now();
    loop {
        {
            let mut g = sh.lock();
            if !g.kick {
                let t = if g.unresolved.is_empty() {
                    Duration::from_secs(1)
                } else {
                    Duration::from_millis(200)
                };
                g = sh
                    .cv
                    .wait_timeout(g, t)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            g.kick = false;
        }
        // Underlay neighbours (local, works while the shim is down).
        let unresolved: Vec<Ipv4Addr> = sh.lock().unresolved.iter().copied().collect();
        if s.arp && !unresolved.is_empty() {
            let mut found = Vec::new();
            for ip in unresolved {
                match neighbour::lookup(ip) {
                    Some(m) => found.push((ip, m)),
                    None => neighbour::probe(ip),
                }
            }
            if !found.is_empty() {
                let mut g = sh.lock();
                for (ip, m) in found {
                    log::info!("underlay: {ip} is at {m} (ARP)");
                    g.st.neighbours.insert(ip, m);
                    g.unresolved.remove(&ip);
                }
                g.changed = true;
            }
        }
        // Known neighbours: re-check every 30 s (the probe makes a stale entry re-resolve), so a
        // remote host whose fabric MAC changed is followed.
        if s.arp && last_refresh.elapsed() >= NEIGH_REFRESH {
            last_refresh = Instant::now();
            let known: Vec<(Ipv4Addr, MacAddr)> = sh
                .lock()
                .st
                .neighbours
                .iter()
                .map(|(i, m)| (*i, *m))
                .collect();
            for (ip, old) in known {
                neighbour::probe(ip);
                match neighbour::lookup(ip) {
                    Some(m) if m != old => {
                        log::info!("underlay: {ip} moved from {old} to {m} (ARP)");
                        let mut g = sh.lock();
                        g.st.neighbours.insert(ip, m);
                        g.changed = true;
                    }
                    _ => {}
                }
            }
        }
        if backoff.waiting() {
            continue;
        }
        let result = worker_pass(
            sh,
            &mut announced,
            &mut advertised,
            &mut last_full,
            &mut cleaned,
        );
        match result {
            Ok(()) => {
                if down_logged {
                    log::info!("controller {} answers again", s.url);
                    down_logged = false;
                }
                backoff.ok();
            }
            Err(e) => {
                if matches!(&e, ShimError::Status(404, m) if m.contains("not registered")) {
                    log::warn!("controller: {e}; registering again");
                    sh.lock().registered = false;
                    announced.clear();
                    advertised.clear();
                    continue;
                }
                if !down_logged {
                    log::warn!(
                        "controller {}: {e}; keeping the current state, retrying with backoff",
                        s.url
                    );
                    down_logged = true;
                }
                if !matches!(e, ShimError::Local(_)) {
                    backoff.fail();
                }
            }
        }
    }
}

/// A request the shim refuses (4xx other than "not registered" and a bad token) is logged and
/// counted as done: retrying it cannot help, and it must not hold up everything after it.
fn refused_is_done<T>(r: Result<T, ShimError>) -> Result<Option<T>, ShimError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(ShimError::Status(code, msg))
            if (400..500).contains(&code)
                && code != 401
                && !(code == 404 && msg.contains("not registered")) =>
        {
            log::warn!("controller refused a request (HTTP {code}): {msg}");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn worker_pass(
    sh: &Shared,
    announced: &mut BTreeSet<String>,
    advertised: &mut Adverts,
    last_full: &mut Instant,
    cleaned: &mut bool,
) -> Result<(), ShimError> {
    let s = &sh.s;
    let (registered, fabric) = {
        let g = sh.lock();
        (g.registered, g.fabric_ip)
    };
    if !registered {
        let fabric = match fabric {
            Some(f) => f,
            None => {
                let f = dataplane_fabric_ip(&s.dp_socket)
                    .map_err(|e| ShimError::Local(format!("fabric IP: {e}")))?;
                sh.lock().fabric_ip = Some(f);
                f
            }
        };
        sh.register(fabric)?;
        announced.clear();
        advertised.clear();
    }
    // The periodic re-announce is logged at debug level only.
    let mut quiet = false;
    if last_full.elapsed() >= REANNOUNCE {
        *last_full = Instant::now();
        announced.clear();
        advertised.clear();
        quiet = true;
    }
    let level = if quiet {
        log::Level::Debug
    } else {
        log::Level::Info
    };
    let (want_ports, scanned): (BTreeSet<String>, bool) = {
        let g = sh.lock();
        (g.st.ports.keys().cloned().collect(), g.scanned)
    };
    // Once xenstore has been scanned: bindings the shim still holds for us from before a
    // restart that xenstore no longer has are removed (their routes are withdrawn with them).
    if scanned && !*cleaned {
        for vmi in sh.shim.bindings_of(&s.host)? {
            if !want_ports.contains(&vmi) {
                log::info!("controller: vmi {vmi} is no longer on this host; unbinding");
                refused_is_done(sh.shim.unbind(&s.host, &vmi))?;
            }
        }
        *cleaned = true;
    }
    for vmi in want_ports.difference(&announced.clone()) {
        refused_is_done(sh.shim.bind(&s.host, vmi))?;
        announced.insert(vmi.clone());
        log::log!(level, "controller: bound vmi {vmi} to {}", s.host);
        if let Some(c) = refused_is_done(sh.shim.interface(vmi))?.flatten() {
            let mut g = sh.lock();
            if !g.st.ifaces.contains_key(vmi) {
                g.st.ifaces.insert(vmi.clone(), c);
                g.dir_gen += 1;
                g.changed = true;
            }
        }
    }
    for vmi in announced.clone().difference(&want_ports) {
        refused_is_done(sh.shim.unbind(&s.host, vmi))?;
        announced.remove(vmi);
        advertised.retain(|_, (_, v)| v != vmi);
        log::info!("controller: unbound vmi {vmi}");
    }
    let want = sh.lock().want_adverts.clone();
    for (k, v) in &want {
        if advertised.get(k) != Some(v) && announced.contains(&v.1) {
            refused_is_done(sh.shim.advertise(&s.host, &k.0, &k.1, v.0, &v.1))?;
            log::log!(
                level,
                "controller: advertised {} in {} label {} (vmi {})",
                k.1,
                k.0,
                v.0,
                v.1
            );
            advertised.insert(k.clone(), v.clone());
        }
    }
    for k in advertised.keys().cloned().collect::<Vec<_>>() {
        if !want.contains_key(&k) {
            refused_is_done(sh.shim.withdraw(&s.host, &k.0, &k.1))?;
            log::info!("controller: withdrew {} in {}", k.1, k.0);
            advertised.remove(&k);
        }
    }
    Ok(())
}

impl Shared {
    fn register(&self, fabric: Ipv4Addr) -> Result<(), ShimError> {
        let r = self.shim.register(&self.s.host, fabric)?;
        log::info!(
            "controller: registered as {} (fabric {fabric}) at {}, rev {}",
            self.s.host,
            self.s.url,
            r["rev"]
        );
        let mut g = self.lock();
        g.registered = true;
        self.cv.notify_all();
        Ok(())
    }
}

fn watcher(sh: &Shared) {
    let s = &sh.s;
    let mut backoff = Duration::from_secs(1);
    let mut down_logged = false;
    loop {
        let since = {
            let mut g = sh.lock();
            while !g.registered {
                g = sh
                    .cv
                    .wait_timeout(g, Duration::from_secs(1))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            g.st.since
        };
        match sh.shim.watch(&s.host, since, 25) {
            Ok(reply) => {
                let mut g = sh.lock();
                let changed = g.st.apply_watch(&reply);
                if changed || !g.watch_ok {
                    g.changed = true;
                    g.dir_gen += 1;
                }
                if reply.reset {
                    log::info!(
                        "controller: watch snapshot at rev {}: {} interfaces, {} remote routes",
                        reply.rev,
                        g.st.ifaces.len(),
                        g.st.routes.len()
                    );
                }
                g.watch_ok = true;
                if down_logged {
                    log::info!("controller watch resumed at rev {since}");
                    down_logged = false;
                }
                backoff = Duration::from_secs(1);
            }
            Err(e) => {
                if let ShimError::Status(404, _) = &e {
                    let mut g = sh.lock();
                    g.registered = false;
                    sh.kick(&mut g);
                }
                if !down_logged {
                    log::warn!("controller watch: {e}; keeping the current state, retrying");
                    down_logged = true;
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

#[cfg(test)]
mod tests;
