//! The config file as written (strings, optional fields) and its checks, one per section, in
//! file order: underlay, networks, interfaces, routes, floating IPs. Later sections are checked
//! against the validated earlier ones (an interface's network must exist), and the first error
//! wins, naming its item.

use super::{
    parse_encap, Config, ConfigError, FloatingIp, Interface, Network, Prefix, RemoteRoute,
    Underlay, MAX_LABEL,
};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use vrouter_dataplane::tables::TunnelKind;
use vrouter_dataplane::wire::MacAddr;

/// The file as written; strings are checked in [`validate`].
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    underlay: RawUnderlay,
    #[serde(default)]
    networks: Vec<RawNetwork>,
    #[serde(default)]
    interfaces: Vec<RawInterface>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    floating_ips: Vec<RawFip>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawUnderlay {
    fabric_ip: Option<String>,
    fabric_mac: Option<String>,
    gateway_mac: Option<String>,
    encap: Option<String>,
    #[serde(default)]
    neighbours: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    name: String,
    vrf: Option<String>,
    subnet: Option<String>,
    gateway: Option<String>,
    domain: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    name: String,
    mac: String,
    ip: String,
    network: String,
    mtu: Option<u16>,
    #[serde(default)]
    dns: Vec<String>,
    nic_uuid: Option<String>,
    vm_uuid: Option<String>,
    #[serde(default)]
    service: bool,
    hostname: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    network: String,
    prefix: String,
    label: u32,
    remote: String,
    encap: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFip {
    network: String,
    address: String,
    interface: String,
}

fn invalid(item: impl Into<String>, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        item: item.into(),
        why: why.into(),
    }
}

fn ip(item: &str, field: &str, s: &str) -> Result<Ipv4Addr, ConfigError> {
    s.trim()
        .parse()
        .map_err(|_| invalid(item, format!("{field} {s:?} is not an IPv4 address")))
}

fn mac(item: &str, field: &str, s: &str) -> Result<MacAddr, ConfigError> {
    s.trim().parse().map_err(|_| {
        invalid(
            item,
            format!("{field} {s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"),
        )
    })
}

fn encap(item: &str, s: &str) -> Result<TunnelKind, ConfigError> {
    parse_encap(s).ok_or_else(|| {
        invalid(
            item,
            format!("encap {s:?} is not one of mpls-over-udp, mpls-over-gre"),
        )
    })
}

fn name_ok(item: &str, what: &str, s: &str) -> Result<(), ConfigError> {
    if s.trim().is_empty() {
        return Err(invalid(item, format!("{what} must not be empty")));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(invalid(
            item,
            format!("{what} {s:?} contains control characters"),
        ));
    }
    Ok(())
}

/// Validates every section in file order.
pub(super) fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let underlay = check_underlay(&raw.underlay)?;
    let networks = check_networks(&raw.networks)?;
    let interfaces = check_interfaces(&raw.interfaces, &networks)?;
    let routes = check_routes(&raw.routes, &networks, &underlay)?;
    let floating_ips = check_floating_ips(&raw.floating_ips, &networks, &interfaces)?;
    Ok(Config {
        underlay,
        networks: networks.list,
        interfaces,
        routes,
        floating_ips,
    })
}

/// The underlay: addresses, default encapsulation and the per-host neighbour MACs.
fn check_underlay(u: &RawUnderlay) -> Result<Underlay, ConfigError> {
    let mut underlay = Underlay {
        fabric_ip: u
            .fabric_ip
            .as_deref()
            .map(|s| ip("underlay", "fabric_ip", s))
            .transpose()?,
        fabric_mac: u
            .fabric_mac
            .as_deref()
            .map(|s| mac("underlay", "fabric_mac", s))
            .transpose()?,
        gateway_mac: u
            .gateway_mac
            .as_deref()
            .map(|s| mac("underlay", "gateway_mac", s))
            .transpose()?,
        neighbours: BTreeMap::new(),
        encap: u
            .encap
            .as_deref()
            .map(|s| encap("underlay", s))
            .transpose()?
            .unwrap_or(TunnelKind::MplsOverUdp),
    };
    for (host, m) in &u.neighbours {
        let item = format!("underlay neighbour {host:?}");
        underlay
            .neighbours
            .insert(ip(&item, "key", host)?, mac(&item, "MAC", m)?);
    }
    Ok(underlay)
}

/// The validated networks, indexed by name for the sections that refer to them.
struct Networks {
    /// In file order.
    list: Vec<Network>,
    /// Name -> index into `list`.
    by_name: HashMap<String, usize>,
}

impl Networks {
    fn get(&self, name: &str) -> Option<&Network> {
        self.by_name.get(name).map(|&i| &self.list[i])
    }

    fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }
}

/// Networks: names and VRF names unique, the gateway inside the subnet.
fn check_networks(raw: &[RawNetwork]) -> Result<Networks, ConfigError> {
    let mut networks = Networks {
        list: Vec::new(),
        by_name: HashMap::new(),
    };
    let mut vrf_names = HashSet::new();
    for n in raw {
        let item = format!("network {:?}", n.name);
        name_ok(&item, "name", &n.name)?;
        let vrf = n.vrf.clone().unwrap_or_else(|| n.name.clone());
        name_ok(&item, "vrf", &vrf)?;
        if networks
            .by_name
            .insert(n.name.clone(), networks.list.len())
            .is_some()
        {
            return Err(invalid(item, "defined twice"));
        }
        if !vrf_names.insert(vrf.clone()) {
            return Err(invalid(
                item,
                format!("vrf {vrf:?} is used by another network"),
            ));
        }
        let (subnet, gateway) = check_addressing(&item, n)?;
        networks.list.push(Network {
            name: n.name.clone(),
            vrf,
            subnet,
            gateway,
            policy: None,
            names: super::NetworkNames {
                domain: optional_name(&item, "domain", &n.domain)?,
                hosts: Vec::new(),
            },
        });
    }
    Ok(networks)
}

/// A network's subnet and gateway (by default the subnet's first host address, as in
/// Contrail); the gateway must lie in the subnet.
fn check_addressing(
    item: &str,
    n: &RawNetwork,
) -> Result<(Option<Prefix>, Option<Ipv4Addr>), ConfigError> {
    let subnet = n
        .subnet
        .as_deref()
        .map(|s| {
            s.parse::<Prefix>()
                .map_err(|e| invalid(item, format!("subnet {e}")))
        })
        .transpose()?;
    let gateway = match (&n.gateway, subnet) {
        (Some(g), _) => Some(ip(item, "gateway", g)?),
        (None, Some(s)) if s.len <= 30 => Some(Ipv4Addr::from(u32::from(s.addr) + 1)),
        (None, _) => None,
    };
    if let (Some(g), Some(s)) = (gateway, subnet) {
        if !s.contains(g) {
            return Err(invalid(item, format!("gateway {g} is outside subnet {s}")));
        }
    }
    Ok((subnet, gateway))
}

/// Interfaces: names unique, each on a known network with an address of its own there.
fn check_interfaces(
    raw: &[RawInterface],
    networks: &Networks,
) -> Result<Vec<Interface>, ConfigError> {
    let mut interfaces: Vec<Interface> = Vec::new();
    let mut if_names = HashSet::new();
    // (network, address) -> the interface that has it.
    let mut taken_ips: HashMap<(String, Ipv4Addr), String> = HashMap::new();
    for i in raw {
        let item = format!("interface {:?}", i.name);
        name_ok(&item, "name", &i.name)?;
        if !if_names.insert(i.name.clone()) {
            return Err(invalid(item, "defined twice"));
        }
        let Some(net) = networks.get(&i.network) else {
            return Err(invalid(item, format!("unknown network {:?}", i.network)));
        };
        let (addr, m) = check_interface_address(&item, i, net)?;
        if let Some(other) = taken_ips.insert((net.name.clone(), addr), i.name.clone()) {
            return Err(invalid(
                item,
                format!("ip {addr} is already used by interface {other:?}"),
            ));
        }
        interfaces.push(check_interface_rest(&item, i, addr, m)?);
    }
    Ok(interfaces)
}

/// An interface's IP and MAC: a unicast MAC, an IP in its network's subnet that is not the
/// gateway.
fn check_interface_address(
    item: &str,
    i: &RawInterface,
    net: &Network,
) -> Result<(Ipv4Addr, MacAddr), ConfigError> {
    let addr = ip(item, "ip", &i.ip)?;
    let m = mac(item, "mac", &i.mac)?;
    if m.0[0] & 1 != 0 || m.0 == [0; 6] {
        return Err(invalid(item, format!("mac {m} is not a unicast MAC")));
    }
    if let Some(s) = net.subnet {
        if !s.contains(addr) {
            return Err(invalid(
                item,
                format!("ip {addr} is outside {}'s subnet {s}", net.name),
            ));
        }
    }
    if Some(addr) == net.gateway {
        return Err(invalid(
            item,
            format!("ip {addr} is the gateway of {}", net.name),
        ));
    }
    Ok((addr, m))
}

/// The rest of an interface (MTU, DNS servers, CloudStack UUIDs), given its checked address.
fn check_interface_rest(
    item: &str,
    i: &RawInterface,
    addr: Ipv4Addr,
    m: MacAddr,
) -> Result<Interface, ConfigError> {
    let mtu = i.mtu.unwrap_or(1500);
    if !(68..=9216).contains(&mtu) {
        return Err(invalid(item, format!("mtu {mtu} is outside 68..9216")));
    }
    let dns = i
        .dns
        .iter()
        .map(|d| ip(item, "dns", d))
        .collect::<Result<Vec<_>, _>>()?;
    let nic_uuid = uuid(item, "nic_uuid", &i.nic_uuid)?;
    let vm_uuid = uuid(item, "vm_uuid", &i.vm_uuid)?;
    if vm_uuid.is_some() && nic_uuid.is_none() {
        return Err(invalid(item, "vm_uuid needs nic_uuid"));
    }
    Ok(Interface {
        name: i.name.clone(),
        mac: m,
        ip: addr,
        network: i.network.clone(),
        mtu,
        dns,
        nic_uuid,
        vm_uuid,
        service: i.service,
        hostname: optional_name(item, "hostname", &i.hostname)?,
        secondary: Vec::new(),
        pairs: Vec::new(),
        vips: Vec::new(),
        standby: false,
    })
}

/// An optional DNS name field (`domain`, `hostname`): a valid name, trimmed, lower case.
fn optional_name(
    item: &str,
    field: &str,
    v: &Option<String>,
) -> Result<Option<String>, ConfigError> {
    let Some(s) = v.as_deref().map(str::trim) else {
        return Ok(None);
    };
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.trim_end_matches('.')
            .split('.')
            .all(crate::services::dns_zone::is_host_label);
    if !ok {
        return Err(invalid(item, format!("{field} {s:?} is not a DNS name")));
    }
    Ok(Some(s.trim_end_matches('.').to_ascii_lowercase()))
}

/// An optional UUID field, normalised to lower case.
fn uuid(item: &str, field: &str, v: &Option<String>) -> Result<Option<String>, ConfigError> {
    v.as_deref()
        .map(|u| {
            u.parse::<vrouter_xen::Uuid>()
                .map(|u| u.to_string())
                .map_err(|_| invalid(item, format!("{field} {u:?} is not a UUID")))
        })
        .transpose()
}

/// Remote routes: one per (network, prefix), each on a known network.
fn check_routes(
    raw: &[RawRoute],
    networks: &Networks,
    underlay: &Underlay,
) -> Result<Vec<RemoteRoute>, ConfigError> {
    let mut routes = Vec::new();
    let mut seen_routes = HashSet::new();
    for r in raw {
        let item = format!("route {:?} in {:?}", r.prefix, r.network);
        if !networks.contains(&r.network) {
            return Err(invalid(item, format!("unknown network {:?}", r.network)));
        }
        let prefix = r
            .prefix
            .parse::<Prefix>()
            .map_err(|e| invalid(&item, e.to_string()))?;
        if !seen_routes.insert((r.network.clone(), prefix)) {
            return Err(invalid(item, "defined twice"));
        }
        routes.push(check_route_path(&item, r, prefix, underlay)?);
    }
    Ok(routes)
}

/// How a remote route is reached: a 20-bit label, a remote host whose underlay MAC is known,
/// and an encapsulation (the underlay's default if not given).
fn check_route_path(
    item: &str,
    r: &RawRoute,
    prefix: Prefix,
    underlay: &Underlay,
) -> Result<RemoteRoute, ConfigError> {
    if r.label > MAX_LABEL {
        return Err(invalid(item, format!("label {} is above 2^20-1", r.label)));
    }
    let remote = ip(item, "remote", &r.remote)?;
    if underlay.neighbour_mac(remote).is_none() {
        return Err(invalid(
            item,
            format!(
                "no underlay MAC for remote host {remote}: set underlay.gateway_mac or underlay.neighbours.\"{remote}\""
            ),
        ));
    }
    let kind = r
        .encap
        .as_deref()
        .map(|s| encap(item, s))
        .transpose()?
        .unwrap_or(underlay.encap);
    Ok(RemoteRoute {
        network: r.network.clone(),
        prefix,
        label: r.label,
        remote,
        encap: kind,
    })
}

/// Floating IPs: each in a known network other than its (known) interface's own, once per
/// network.
fn check_floating_ips(
    raw: &[RawFip],
    networks: &Networks,
    interfaces: &[Interface],
) -> Result<Vec<FloatingIp>, ConfigError> {
    let mut floating_ips = Vec::new();
    let mut seen_fips = HashSet::new();
    for f in raw {
        let item = format!("floating ip {:?}", f.address);
        if !networks.contains(&f.network) {
            return Err(invalid(item, format!("unknown network {:?}", f.network)));
        }
        let Some(iface) = interfaces.iter().find(|i| i.name == f.interface) else {
            return Err(invalid(
                item,
                format!("unknown interface {:?}", f.interface),
            ));
        };
        if iface.network == f.network {
            return Err(invalid(
                item,
                format!(
                    "network {:?} is the interface's own network; a floating IP lives in another (public) network",
                    f.network
                ),
            ));
        }
        let address = ip(&item, "address", &f.address)?;
        if !seen_fips.insert((f.network.clone(), address)) {
            return Err(invalid(item, format!("defined twice in {:?}", f.network)));
        }
        floating_ips.push(FloatingIp {
            network: f.network.clone(),
            address,
            interface: f.interface.clone(),
        });
    }
    Ok(floating_ips)
}
