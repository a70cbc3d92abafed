//! The controller state turned into the agent's [`Config`], I/O-free, in small passes:
//! bound interfaces (with their networks, policies and floating IPs) → the floating IPs' public
//! networks → the floating-IP policy rules → remote routes and the underlay neighbours they
//! need. Items that cannot be programmed (no network or IP yet, a conflict) are left out with a
//! warning; the rest still is.

use super::chains;
use super::rules::{expand_rules, fip_rules};
use super::{ControllerState, Port, Settings};
use crate::config::{
    ChainMember, Config, FloatingIp, Interface, NetPolicy, Network, Prefix, RemoteRoute, Underlay,
};
use crate::vip::Pair;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::Ipv4Addr;
use vrouter_api::agent::RouteEncap;
use vrouter_api::interface::InterfaceConfig;
use vrouter_api::{Ipv4Prefix, Uuid};
use vrouter_dataplane::tables::TunnelKind;
use vrouter_dataplane::wire::MacAddr;

/// A configuration built from the controller state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Built {
    /// The agent's config.
    pub config: Config,
    /// Things skipped, one line each.
    pub warnings: Vec<String>,
    /// Remote fabric IPs to resolve by ARP: with no underlay MAC yet (their routes are left out
    /// until resolved), or served by the MAC adopted from the dataplane until ARP answers.
    pub unresolved: BTreeSet<Ipv4Addr>,
    /// Port name -> VMI of the interfaces in `config` (what their adverts belong to).
    pub vmi_of_port: BTreeMap<String, Uuid>,
    /// VIPs we claimed that another host announced later: the claims are to be dropped.
    pub yielded: Vec<(String, Ipv4Addr)>,
}

impl ControllerState {
    /// Builds the agent's configuration. Items that cannot be programmed (no network or IP
    /// yet, a conflict) are left out with a warning; the rest still is.
    pub fn build(&self, s: &Settings) -> Built {
        let mut b = Builder::new(self, s);
        b.interfaces();
        b.public_networks();
        b.fip_policy_rules();
        let routes = b.remote_routes();
        b.finish(routes)
    }
}

/// The best remote route per (VRF, prefix), with the watch revision that chose it.
type BestRoutes = BTreeMap<(String, Prefix), (u64, RemoteRoute)>;

/// The build in progress.
struct Builder<'a> {
    st: &'a ControllerState,
    s: &'a Settings,
    out: Built,
    networks: BTreeMap<String, Network>,
    interfaces: Vec<Interface>,
    fips: Vec<FloatingIp>,
    /// (VRF, IP) of the interfaces kept so far: a second claimant is skipped.
    taken: HashSet<(String, Ipv4Addr)>,
    /// (public VRF, address) of the floating IPs kept so far.
    fip_seen: HashSet<(String, Ipv4Addr)>,
}

/// How one interface is addressed, from its config and its port.
struct Addressing {
    vrf: String,
    ip: Ipv4Addr,
    mac: MacAddr,
    subnet: Option<Prefix>,
    gateway: Option<Ipv4Addr>,
    dns: Option<Ipv4Addr>,
}

/// The interface's VRF, first IPv4 address (with what its subnet says) and MAC (the config's,
/// else the one xenstore has); an error says what is still missing or wrong.
fn addressing(c: &InterfaceConfig, port: &Port) -> Result<Addressing, String> {
    let vrf = c
        .vrf()
        .filter(|v| !v.trim().is_empty())
        .ok_or("no network yet")?
        .to_string();
    let (ip, ipc) = c
        .ips
        .iter()
        .find_map(|i| i.ipv4().map(|a| (a, i)))
        .ok_or("no IPv4 address yet")?;
    let mac = c.mac.unwrap_or(port.mac);
    if !mac.is_unicast() {
        return Err(format!("mac {mac} is not a unicast MAC"));
    }
    let subnet = ipc
        .subnet
        .or_else(|| Ipv4Prefix::truncating(ip, ipc.prefix_len?))
        .filter(|p| p.contains(ip));
    let gateway = ipc
        .gateway
        .filter(|g| subnet.is_none_or(|p| p.contains(*g)));
    Ok(Addressing {
        vrf,
        ip,
        mac,
        subnet,
        gateway,
        dns: ipc.dns_server,
    })
}

/// The MTU the config asks for if the dataplane can honour it, else the default.
fn mtu(c: &InterfaceConfig, default: u16) -> u16 {
    c.properties
        .as_ref()
        .and_then(|p| p.interface_mtu)
        .and_then(|m| u16::try_from(m).ok())
        .filter(|m| (68..=9216).contains(m))
        .unwrap_or(default)
}

/// A network with neither subnet nor gateway (a floating IP's public network).
fn bare_network(vrf: &str) -> Network {
    Network {
        name: vrf.to_string(),
        vrf: vrf.to_string(),
        subnet: None,
        gateway: None,
        policy: None,
        names: crate::config::NetworkNames::default(),
    }
}

/// The VM's host name: its display name when that is a host name label, else its instance
/// name when that is one.
fn host_name(c: &InterfaceConfig) -> Option<String> {
    [c.vm_display_name.as_deref(), c.vm_name.as_deref()]
        .into_iter()
        .flatten()
        .find(|n| crate::services::dns_zone::is_host_label(n))
        .map(str::to_string)
}

/// The network's DNS names from the interface's config: its domain, then every VM by display
/// name and by instance name.
fn network_names(c: &InterfaceConfig) -> crate::config::NetworkNames {
    let Some(n) = &c.network else {
        return crate::config::NetworkNames::default();
    };
    let mut hosts = Vec::new();
    for h in &n.hosts {
        hosts.extend(h.display_name.iter().map(|d| (d.clone(), h.address)));
        hosts.push((h.name.clone(), h.address));
    }
    crate::config::NetworkNames {
        domain: n.domain.clone(),
        hosts,
    }
}

impl<'a> Builder<'a> {
    fn new(st: &'a ControllerState, s: &'a Settings) -> Self {
        Builder {
            st,
            s,
            out: Built::default(),
            networks: BTreeMap::new(),
            interfaces: Vec::new(),
            fips: Vec::new(),
            taken: HashSet::new(),
            fip_seen: HashSet::new(),
        }
    }

    /// The bound interfaces in port-name order (the first of two claimants wins, stably).
    fn interfaces(&mut self) {
        let st = self.st;
        let mut ports: Vec<(&Uuid, &Port)> = st.ports.iter().collect();
        ports.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        for (vmi, port) in ports {
            let Some(c) = st.ifaces.get(vmi) else {
                continue; // not configured yet: the watch or the fetch brings it
            };
            let item = format!("interface {} (vmi {vmi})", port.name);
            if let Err(why) = self.interface(*vmi, port, c, &item) {
                self.out.warnings.push(format!("{item}: {why}"));
            }
        }
    }

    /// One bound interface with its network and floating IPs.
    fn interface(
        &mut self,
        vmi: Uuid,
        port: &Port,
        c: &InterfaceConfig,
        item: &str,
    ) -> Result<(), String> {
        super::system::check(c)?;
        let a = addressing(c, port)?;
        self.join_network(c, &a)?;
        let secondary = self.secondary_ips(c, &a, item);
        let pairs: Vec<Pair> = c
            .allowed_address_pairs
            .iter()
            .map(|p| Pair {
                prefix: p.prefix,
                mac: p.mac,
            })
            .collect();
        let vips = self.owned_vips(&a.vrf, &port.name, &pairs, item);
        self.floating_ips(c, &a.vrf, &port.name, item);
        let standby = self.runs_elsewhere(vmi, &a, &port.name);
        self.out.vmi_of_port.insert(port.name.clone(), vmi);
        self.interfaces.push(Interface {
            name: port.name.clone(),
            mac: a.mac,
            ip: a.ip,
            network: a.vrf,
            mtu: mtu(c, self.s.mtu),
            dns: a.dns.into_iter().collect(),
            nic_uuid: Some(vmi.to_string()),
            vm_uuid: c.vm_uuid.map(|u| u.to_string()),
            service: c.is_service_interface(),
            hostname: host_name(c),
            standby,
            secondary,
            pairs,
            vips,
        });
        Ok(())
    }

    /// The interface's other IPv4 instance IPs (CloudStack's secondary IPs) in its network's
    /// subnet; one outside it, the gateway or taken is skipped with a warning.
    fn secondary_ips(&mut self, c: &InterfaceConfig, a: &Addressing, item: &str) -> Vec<Ipv4Addr> {
        let subnet = self.networks.get(&a.vrf).and_then(|n| n.subnet);
        let gateway = self.networks.get(&a.vrf).and_then(|n| n.gateway);
        let mut out = Vec::new();
        for ip in c
            .ips
            .iter()
            .filter_map(|i| i.ipv4())
            .filter(|ip| *ip != a.ip)
        {
            let why = if subnet.is_some_and(|s| !s.contains(ip)) {
                "is outside the network's subnet"
            } else if gateway == Some(ip) {
                "is the gateway"
            } else if !self.taken.insert((a.vrf.clone(), ip)) {
                "is already used"
            } else {
                out.push(ip);
                continue;
            };
            self.out
                .warnings
                .push(format!("{item}: secondary ip {ip} {why}"));
        }
        out
    }

    /// The pair addresses a local member of this interface announced last (see
    /// [`crate::vip`]): claims another host announced after us are yielded instead.
    fn owned_vips(&mut self, vrf: &str, port: &str, pairs: &[Pair], item: &str) -> Vec<Ipv4Addr> {
        let mut out = Vec::new();
        for ((cvrf, ip), claim) in &self.st.claims {
            if cvrf != vrf || claim.port != port || !pairs.iter().any(|p| p.prefix.contains(*ip)) {
                continue;
            }
            if self.announced_later(vrf, *ip, claim.rev) {
                self.out.yielded.push((cvrf.clone(), *ip));
            } else if !self.taken.insert((vrf.to_string(), *ip)) {
                self.out
                    .warnings
                    .push(format!("{item}: vip {ip} is another interface's address"));
            } else {
                out.push(*ip);
            }
        }
        out
    }

    /// Whether the interface's VM runs on another host: that host advertises the VMI's address
    /// at a later watch revision than the VM's last announcement here (none: 0). True for a VM
    /// migrating in (bound here, not resumed yet) and for one that left (resumed elsewhere,
    /// its vif not yet gone). See [`crate::vip`].
    fn runs_elsewhere(&self, vmi: Uuid, a: &Addressing, port: &str) -> bool {
        let p = Ipv4Prefix::host(a.ip);
        let here = self.st.arrived.get(port).copied().unwrap_or(0);
        self.st.routes.values().any(|(rev, r)| {
            *rev > here
                && r.host != self.s.host
                && r.vmi_uuid == Some(vmi)
                && r.vrf == a.vrf
                && r.prefix == p
        })
    }

    /// Whether another host advertised `ip`/32 in `vrf` after our advertisement at `rev`.
    fn announced_later(&self, vrf: &str, ip: Ipv4Addr, rev: Option<u64>) -> bool {
        let Some(ours) = rev else {
            return false;
        };
        let p = Ipv4Prefix::host(ip);
        self.st.routes.values().any(|(r, route)| {
            route.host != self.s.host && route.vrf == vrf && route.prefix == p && *r > ours
        })
    }

    /// The network's policy as the first interface carrying one describes it: its policies' rules
    /// expanded (a service rule passes only while its chains are steered), the subnets flows are
    /// judged for, the networks it connects (route leak), its service chains.
    fn policy(&mut self, c: &InterfaceConfig, vrf: &str, subnet: Option<Prefix>) -> NetPolicy {
        let mut subnets: Vec<Prefix> = c
            .network
            .iter()
            .flat_map(|n| n.subnets.iter().copied())
            .collect();
        if subnets.is_empty() {
            subnets.extend(subnet);
        }
        let has_mac = |nh: Ipv4Addr| self.underlay_mac(nh).is_some();
        let cx = chains::Ctx {
            st: self.st,
            s: self.s,
            has_mac: &has_mac,
        };
        let ch = chains::resolve(&cx, c, vrf);
        self.out.unresolved.extend(ch.unresolved.iter().copied());
        let up = |services: &[String]| ch.up.iter().any(|u| u.as_slice() == services);
        NetPolicy {
            names: c.policies.iter().map(|p| p.fq_name.join(":")).collect(),
            subnets,
            rules: expand_rules(&c.policies, &up, &mut self.out.warnings),
            connected: c
                .connected
                .iter()
                .map(|x| x.vrf.clone())
                .filter(|x| x != vrf)
                .collect(),
            chain_down: ch.down,
            chains: ch.chains,
        }
    }

    /// The interface's network: created on first sight with the interface's subnet and
    /// gateway, given the policy of the first interface that carries one (even if that
    /// interface is then skipped: the policy is the network's). The interface's IP must then
    /// lie in the network's subnet, not be its gateway, and be free.
    fn join_network(&mut self, c: &InterfaceConfig, a: &Addressing) -> Result<(), String> {
        let (vrf, ip) = (&a.vrf, a.ip);
        let has_policy = self.networks.get(vrf).is_some_and(|n| n.policy.is_some());
        let carries =
            !c.policies.is_empty() || !c.connected.is_empty() || !c.service_chains.is_empty();
        let policy = (!has_policy && carries).then(|| self.policy(c, vrf, a.subnet));
        let net = self.networks.entry(vrf.clone()).or_insert_with(|| Network {
            subnet: a.subnet,
            gateway: a.gateway,
            ..bare_network(vrf)
        });
        if policy.is_some() {
            net.policy = policy;
        }
        if net.names.domain.is_none() {
            net.names = network_names(c);
        }
        if net.subnet.is_none() && net.gateway.is_none() {
            net.subnet = a.subnet;
            net.gateway = a.gateway;
        }
        if let Some(ns) = net.subnet.filter(|ns| !ns.contains(ip)) {
            return Err(format!(
                "ip {ip} is outside {vrf}'s subnet {ns} (one subnet per network is supported)"
            ));
        }
        if net.gateway == Some(ip) {
            return Err(format!("ip {ip} is the gateway of {vrf}"));
        }
        if !self.taken.insert((vrf.clone(), ip)) {
            return Err(format!("ip {ip} is already used in {vrf}"));
        }
        Ok(())
    }

    /// The interface's allocated floating IPs; one in its own network or already taken is
    /// skipped with a warning.
    fn floating_ips(&mut self, c: &InterfaceConfig, vrf: &str, port: &str, item: &str) {
        for f in &c.floating_ips {
            let (Some(addr), Some(fvrf)) = (f.address, f.vrf.clone().filter(|v| !v.is_empty()))
            else {
                continue;
            };
            if fvrf == vrf {
                self.out.warnings.push(format!(
                    "{item}: floating ip {addr} is in the interface's own network"
                ));
                continue;
            }
            if !self.fip_seen.insert((fvrf.clone(), addr)) {
                self.out.warnings.push(format!(
                    "{item}: floating ip {addr} in {fvrf} is used twice"
                ));
                continue;
            }
            self.fips.push(FloatingIp {
                network: fvrf,
                address: addr,
                interface: port.to_string(),
            });
        }
    }

    /// Public networks of floating IPs (no local subnet, no gateway).
    fn public_networks(&mut self) {
        for f in &self.fips {
            self.networks
                .entry(f.network.clone())
                .or_insert_with(|| bare_network(&f.network));
        }
    }

    /// Floating-IP traffic is governed by the public network (Contrail), which has no policy
    /// here, but the dataplane also judges it by the private network's policy: after that
    /// policy's own rules, a VM with a floating IP may talk to anything except the networks
    /// the policy connects (whose traffic those rules alone decide). When the public network
    /// does carry a policy here (a source-NAT chain's), its floating IPs get the same rules
    /// there: otherwise the outside beyond the public subnet (a gateway's routes in the public
    /// VRF) could not reach them.
    fn fip_policy_rules(&mut self) {
        for net in self.networks.values_mut() {
            let Some(pol) = net.policy.as_mut() else {
                continue;
            };
            let connected = connected_prefixes(self.st, &net.vrf, &pol.connected);
            let with_fip: BTreeSet<Ipv4Addr> = self
                .interfaces
                .iter()
                .filter(|i| {
                    i.network == net.name && self.fips.iter().any(|f| f.interface == i.name)
                })
                .map(|i| i.ip)
                .collect();
            let fips_in_net = self
                .fips
                .iter()
                .filter(|f| f.network == net.vrf)
                .map(|f| f.address);
            for ip in with_fip.into_iter().chain(fips_in_net) {
                pol.rules.extend(fip_rules(ip, &connected));
            }
        }
    }

    /// Local /32s (interfaces, floating IPs): they win over remote routes for the same prefix
    /// (a VM that moved here).
    fn local_prefixes(&self) -> HashSet<(String, Prefix)> {
        self.interfaces
            .iter()
            .flat_map(|i| i.routed_addresses().map(|a| (i.network.clone(), a)))
            .chain(self.fips.iter().map(|f| (f.network.clone(), f.address)))
            .map(|(vrf, a)| (vrf, Ipv4Prefix::host(a)))
            .collect()
    }

    /// The underlay MAC of a remote host: configured, else resolved, else adopted from the
    /// dataplane ([`Self::adopted_mac`]), else the gateway's.
    fn underlay_mac(&self, nh: Ipv4Addr) -> Option<MacAddr> {
        self.s
            .neighbours
            .get(&nh)
            .or_else(|| self.st.neighbours.get(&nh))
            .copied()
            .or_else(|| self.adopted_mac(nh))
            .or(self.s.gateway_mac)
    }

    /// The MAC the dataplane's tunnel to `nh` held when the agent started, while neither the
    /// settings nor ARP have one: the restarted agent keeps the host's routes as they are, and
    /// still asks ARP (whose answer then wins). Not with `--no-arp` (the settings are then the
    /// only source, known from the start) nor when it is just the gateway MAC.
    fn adopted_mac(&self, nh: Ipv4Addr) -> Option<MacAddr> {
        if !self.s.arp
            || self.s.neighbours.contains_key(&nh)
            || self.st.neighbours.contains_key(&nh)
        {
            return None;
        }
        self.st
            .adopted
            .get(&nh)
            .copied()
            .filter(|m| Some(*m) != self.s.gateway_mac)
    }

    /// Other hosts' routes in our networks and in the networks leaked into them, the newest
    /// per prefix; a route via a host whose underlay MAC is unknown waits (`unresolved`).
    fn remote_routes(&mut self) -> BestRoutes {
        let local = self.local_prefixes();
        let leaked: HashSet<&String> = self
            .networks
            .values()
            .filter_map(|n| n.policy.as_ref())
            .flat_map(|p| p.connected.iter())
            .collect();
        let mut best = BestRoutes::new();
        let mut waiting = BTreeSet::new();
        for (rev, r) in self.st.routes.values() {
            if r.host == self.s.host
                || !(self.networks.contains_key(&r.vrf) || leaked.contains(&r.vrf))
            {
                continue;
            }
            let (prefix, nh) = (r.prefix, r.nexthop);
            if Some(nh) == self.s.fabric_ip || local.contains(&(r.vrf.clone(), prefix)) {
                continue;
            }
            if self.underlay_mac(nh).is_none() {
                self.out.unresolved.insert(nh);
                waiting.insert(nh);
                continue;
            }
            if self.adopted_mac(nh).is_some() {
                self.out.unresolved.insert(nh); // ARP is still asked
            }
            let k = (r.vrf.clone(), prefix);
            if best.get(&k).is_none_or(|(brev, _)| rev > brev) {
                let rr = RemoteRoute {
                    network: r.vrf.clone(),
                    prefix,
                    label: r.label.get(),
                    remote: nh,
                    // A gateway's route names what its next hop decapsulates.
                    encap: r.encap.map_or(self.s.encap, |e| match e {
                        RouteEncap::MplsOverUdp => TunnelKind::MplsOverUdp,
                        RouteEncap::MplsOverGre => TunnelKind::MplsOverGre,
                    }),
                };
                best.insert(k, (*rev, rr));
            }
        }
        if !waiting.is_empty() {
            self.out.warnings.push(format!(
                "routes via {waiting:?} wait for the underlay MAC of those hosts"
            ));
        }
        best
    }

    /// The config: the underlay carries the MAC of each remote host a route or a service
    /// chain's member uses.
    fn finish(mut self, best: BestRoutes) -> Built {
        let chain_hosts = self
            .networks
            .values()
            .filter_map(|n| n.policy.as_ref())
            .flat_map(|p| p.chains.iter())
            .flat_map(|c| c.members.iter())
            .filter_map(|m| match m {
                ChainMember::Remote { remote, .. } => Some(*remote),
                ChainMember::Local(_) => None,
            });
        let neighbours: BTreeMap<Ipv4Addr, MacAddr> = best
            .values()
            .map(|(_, r)| r.remote)
            .chain(chain_hosts)
            .filter_map(|h| Some((h, self.underlay_mac(h)?)))
            .collect();
        let s = self.s;
        self.out.config = Config {
            underlay: Underlay {
                fabric_ip: s.fabric_ip,
                fabric_mac: None,
                gateway_mac: s.gateway_mac,
                neighbours,
                encap: s.encap,
            },
            networks: self.networks.into_values().collect(),
            interfaces: self.interfaces,
            routes: best.into_values().map(|(_, r)| r).collect(),
            floating_ips: self.fips,
        };
        self.out
    }
}

/// The subnets of the networks `connected` (of `vrf`'s policy), as the interfaces of `vrf`
/// list them.
fn connected_prefixes(st: &ControllerState, vrf: &str, connected: &[String]) -> Vec<Prefix> {
    st.ifaces
        .values()
        .filter(|c| c.vrf() == Some(vrf))
        .flat_map(|c| c.connected.iter())
        .filter(|c| connected.contains(&c.vrf))
        .flat_map(|c| c.subnets.iter().copied())
        .collect::<BTreeSet<Prefix>>()
        .into_iter()
        .collect()
}

#[cfg(test)]
mod name_tests {
    use super::{host_name, network_names};
    use serde_json::json;
    use std::net::Ipv4Addr;
    use vrouter_api::interface::InterfaceConfig;

    fn config(display: Option<&str>) -> InterfaceConfig {
        let mut v = json!({
            "uuid": "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f",
            "vm_name": "i-2-10-VM",
            "network": {"uuid": "a0f3c5d2-8e61-4b7a-9c2d-1e4f5a6b7c8d", "vrf": "d:p:net1",
                "domain": "cs2cloud.internal",
                "hosts": [{"name": "i-2-10-VM", "display_name": "web-1", "address": "10.1.1.5"},
                          {"name": "i-2-11-VM", "address": "10.1.1.6"}]}
        });
        if let Some(d) = display {
            v["vm_display_name"] = json!(d);
        }
        serde_json::from_value(v).expect("an interface config")
    }

    #[test]
    fn the_host_name_is_the_display_name_when_it_is_a_label_else_the_instance_name() {
        assert_eq!(host_name(&config(Some("web-1"))).as_deref(), Some("web-1"));
        assert_eq!(
            host_name(&config(Some("my web server"))).as_deref(),
            Some("i-2-10-VM")
        );
        assert_eq!(host_name(&config(None)).as_deref(), Some("i-2-10-VM"));
    }

    #[test]
    fn the_network_names_every_vm_by_display_name_first_then_instance_name() {
        let n = network_names(&config(None));
        assert_eq!(n.domain.as_deref(), Some("cs2cloud.internal"));
        let five = Ipv4Addr::new(10, 1, 1, 5);
        let six = Ipv4Addr::new(10, 1, 1, 6);
        assert_eq!(
            n.hosts,
            vec![
                ("web-1".to_string(), five),
                ("i-2-10-VM".to_string(), five),
                ("i-2-11-VM".to_string(), six)
            ]
        );
    }
}
