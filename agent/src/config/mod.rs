//! The agent's declarative configuration: networks, interfaces, remote routes, floating IPs and
//! the underlay, parsed from TOML (see `docs/agent.md`) and validated into typed values.
//!
//! Parsing is I/O-free ([`Config::parse`] takes the file's text) so the same code serves the
//! file source, tests and the fuzzer. Every error names the item it is about, because an
//! operator reading a SIGHUP-reload failure in a log has nothing else to go on.

mod validate;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use vrouter_dataplane::tables::TunnelKind;
use vrouter_dataplane::wire::MacAddr;

/// Largest MPLS label (20 bits).
pub const MAX_LABEL: u32 = (1 << 20) - 1;

/// Why a configuration was refused. Nothing is applied from a refused file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not valid TOML, or a field of the wrong type, or an unknown field.
    #[error("config syntax: {0}")]
    Syntax(String),
    /// A value that parses but makes no sense (bad address, unknown network, duplicate...).
    #[error("config: {item}: {why}")]
    Invalid {
        /// The item at fault, e.g. `interface "vif1.0"`.
        item: String,
        /// What is wrong with it.
        why: String,
    },
}

/// An IPv4 prefix, host bits zero: the contract's type (strict `FromStr`: `a.b.c.d/n` or a
/// bare address as /32, host bits must be zero).
pub use vrouter_api::Ipv4Prefix as Prefix;

/// A virtual network: one VRF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// Network name (how interfaces, routes and vrctl refer to it).
    pub name: String,
    /// VRF name in the dataplane (Contrail: the network's fq_name joined with ':').
    pub vrf: String,
    /// Subnet, if the network has local interfaces or a gateway.
    pub subnet: Option<Prefix>,
    /// Gateway address (answered by the dataplane's ARP proxy, trapped to the agent).
    pub gateway: Option<Ipv4Addr>,
    /// Network policy (Contrail network-policies attached to the network, or a policy connecting
    /// it to another network). `None`: no flow processing, the fast path.
    pub policy: Option<NetPolicy>,
    /// The network's DNS names (served by its gateway): its domain and its VMs.
    pub names: NetworkNames,
}

/// What a network's gateway answers DNS for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkNames {
    /// The DNS domain (also DHCP option 15); `None`: no names are served.
    pub domain: Option<String>,
    /// Host labels and their addresses, in preference order (the first name of an address is
    /// its reverse name). The local interfaces' host names are served too.
    pub hosts: Vec<(String, Ipv4Addr)>,
}

/// The flow policy of one network, resolved (network names are already subnets).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetPolicy {
    /// Names of the attached policies (for the dataplane's policy name).
    pub names: Vec<String>,
    /// The network's own prefixes (intra-network traffic is always allowed).
    pub subnets: Vec<Prefix>,
    /// Rules of every attached policy, in order; first match wins, no match denies.
    pub rules: Vec<vrouter_dataplane::tables::policy::PolicyRule>,
    /// VRF names of the networks a pass rule connects to this one: their routes are leaked
    /// into this network's VRF (route leak).
    pub connected: Vec<String>,
    /// Prefixes of the networks across a service chain whose instance is not running: routed
    /// to a discard nexthop, so their traffic reaches the flow stage and drops there as
    /// `Service Chain Down` (the service rule's action) instead of being forwarded anywhere.
    pub chain_down: Vec<Prefix>,
    /// Service chains with a running instance: their prefixes are routed to the instance's
    /// interfaces on this network's side (several: an ECMP composite nexthop).
    pub chains: Vec<ChainRoutes>,
}

/// One service chain as this network steers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRoutes {
    /// A stable name (the policy and the network across), for the composite nexthop's key.
    pub name: String,
    /// The prefixes across the chain (and `0.0.0.0/0` toward the public network).
    pub prefixes: Vec<Prefix>,
    /// Where they go, in a stable order.
    pub members: Vec<ChainMember>,
    /// One key per member, in the same order: derived from the member's service VM, so the
    /// same on both sides of the chain and on every host (the dataplane chooses among a
    /// composite's members by rendezvous hashing over these keys).
    pub keys: Vec<u32>,
}

/// One instance interface a chain sends to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainMember {
    /// A local interface, by name.
    Local(String),
    /// An interface on another host: its label there.
    Remote {
        /// The host's fabric IP.
        remote: Ipv4Addr,
        /// The interface's label.
        label: u32,
        /// Encapsulation.
        encap: TunnelKind,
    },
}

/// A local VM interface bound to a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// dom0 device name (`vif<domid>.<devid>` / `tap<domid>.<devid>`).
    pub name: String,
    /// The VM's MAC.
    pub mac: MacAddr,
    /// The VM's fixed IP.
    pub ip: Ipv4Addr,
    /// Network name.
    pub network: String,
    /// MTU.
    pub mtu: u16,
    /// DNS servers handed out by DHCP (none: the option is left out).
    pub dns: Vec<Ipv4Addr>,
    /// CloudStack Nic (= VMI) UUID, lower case. With `--xenstore`, an interface that has one is
    /// programmed only while xenstore binds a vif to that Nic, under the vif's port name.
    pub nic_uuid: Option<String>,
    /// CloudStack VM UUID (for the xenstore binder's directory).
    pub vm_uuid: Option<String>,
    /// A service instance's left/right interface: it forwards other addresses, so
    /// anti-spoofing checks only its MAC (its vif carries no IP).
    pub service: bool,
    /// The VM's host name (DHCP option 12, and its DNS name in the network).
    pub hostname: Option<String>,
    /// Further addresses (CloudStack's secondary IPs): each gets its /32 to the interface and
    /// may be a source.
    pub secondary: Vec<Ipv4Addr>,
    /// Allowed address pairs: prefixes (and MACs) the interface may send from.
    pub pairs: Vec<crate::vip::Pair>,
    /// The pairs' addresses this interface owns now (its member announced them last): their
    /// /32s go to it.
    pub vips: Vec<Ipv4Addr>,
    /// The VM runs on another host: migrating in (not resumed here yet) or gone (resumed
    /// elsewhere, its vif not removed yet). The vif is programmed (port, nexthop, label) but
    /// its addresses are neither routed to it nor advertised.
    pub standby: bool,
}

impl Interface {
    /// Every address routed to the interface: its fixed IP, then its secondary IPs, then the
    /// pair addresses it owns now.
    pub fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        std::iter::once(self.ip)
            .chain(self.secondary.iter().copied())
            .chain(self.vips.iter().copied())
    }

    /// The addresses routed to the interface and advertised: none while it is on standby.
    pub fn routed_addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.addresses().filter(|_| !self.standby)
    }
}

/// A route to a prefix behind another host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRoute {
    /// Network name.
    pub network: String,
    /// Destination.
    pub prefix: Prefix,
    /// The label the remote host allocated.
    pub label: u32,
    /// The remote host's fabric IP.
    pub remote: Ipv4Addr,
    /// Encapsulation.
    pub encap: TunnelKind,
}

/// A floating IP: `address` in the public `network` maps to `interface`'s fixed IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloatingIp {
    /// Public network name.
    pub network: String,
    /// Floating address.
    pub address: Ipv4Addr,
    /// Interface name.
    pub interface: String,
}

/// How to reach the underlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Underlay {
    /// Overrides the dataplane's fabric IP as tunnel source.
    pub fabric_ip: Option<Ipv4Addr>,
    /// Our fabric MAC (default: the fabric vif's).
    pub fabric_mac: Option<MacAddr>,
    /// Default underlay next-hop MAC.
    pub gateway_mac: Option<MacAddr>,
    /// Underlay next-hop MAC per remote host.
    pub neighbours: BTreeMap<Ipv4Addr, MacAddr>,
    /// Default encapsulation.
    pub encap: TunnelKind,
}

impl Default for Underlay {
    fn default() -> Self {
        Self {
            fabric_ip: None,
            fabric_mac: None,
            gateway_mac: None,
            neighbours: BTreeMap::new(),
            encap: TunnelKind::MplsOverUdp,
        }
    }
}

impl Underlay {
    /// The underlay MAC to reach `remote`.
    pub fn neighbour_mac(&self, remote: Ipv4Addr) -> Option<MacAddr> {
        self.neighbours.get(&remote).copied().or(self.gateway_mac)
    }
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// Underlay settings.
    pub underlay: Underlay,
    /// Networks, in file order.
    pub networks: Vec<Network>,
    /// Interfaces, in file order.
    pub interfaces: Vec<Interface>,
    /// Remote routes.
    pub routes: Vec<RemoteRoute>,
    /// Floating IPs.
    pub floating_ips: Vec<FloatingIp>,
}

/// Parses an encapsulation name as written in the config and on the command line.
pub fn parse_encap(s: &str) -> Option<TunnelKind> {
    match s.to_ascii_lowercase().replace('_', "-").as_str() {
        "mpls-over-udp" | "mplsoudp" | "udp" => Some(TunnelKind::MplsOverUdp),
        "mpls-over-gre" | "mplsogre" | "gre" => Some(TunnelKind::MplsOverGre),
        _ => None,
    }
}

impl Config {
    /// Parses and validates a TOML document.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let raw: validate::RawConfig = toml::from_str(text).map_err(|e| {
            // toml's message spans several lines (with a source excerpt); keep the first
            // line plus the position so the error stays one log line.
            let msg = e.message().to_string();
            match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    ConfigError::Syntax(format!("line {line}: {msg}"))
                }
                None => ConfigError::Syntax(msg),
            }
        })?;
        validate::validate(raw)
    }

    /// The network called `name`.
    pub fn network(&self, name: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const EXAMPLE: &str = r#"
[underlay]
fabric_mac = "52:54:00:aa:bb:01"
gateway_mac = "52:54:00:cc:dd:01"
encap = "mpls-over-udp"
[underlay.neighbours]
"10.0.0.12" = "52:54:00:cc:dd:02"

[[networks]]
name = "net1"
vrf = "default-domain:admin:net1"
subnet = "10.1.1.0/24"

[[networks]]
name = "public"
subnet = "192.0.2.0/24"

[[interfaces]]
name = "vif1.0"
mac = "02:00:00:00:01:03"
ip = "10.1.1.3"
network = "net1"

[[routes]]
network = "net1"
prefix = "10.1.1.4/32"
label = 25
remote = "10.0.0.12"
encap = "mpls-over-gre"

[[floating_ips]]
network = "public"
address = "192.0.2.10"
interface = "vif1.0"
"#;

    #[test]
    fn parses_the_documented_example() {
        let c = Config::parse(EXAMPLE).expect("valid");
        assert_eq!(c.networks.len(), 2);
        assert_eq!(c.networks[0].gateway, Some(Ipv4Addr::new(10, 1, 1, 1)));
        assert_eq!(c.networks[1].vrf, "public");
        assert_eq!(c.routes[0].encap, TunnelKind::MplsOverGre);
        assert_eq!(
            c.underlay.neighbour_mac(Ipv4Addr::new(10, 0, 0, 99)),
            c.underlay.gateway_mac
        );
        assert_eq!(c.floating_ips[0].interface, "vif1.0");
    }

    #[test]
    fn errors_name_the_item() {
        let bad = EXAMPLE.replace(
            "network = \"net1\"\n\n[[routes]]",
            "network = \"nope\"\n\n[[routes]]",
        );
        let e = Config::parse(&bad).expect_err("unknown network");
        assert_eq!(
            e.to_string(),
            "config: interface \"vif1.0\": unknown network \"nope\""
        );
        let e = Config::parse("[[networks]]\nname = 3\n").expect_err("type");
        assert!(e.to_string().starts_with("config syntax: line 2"), "{e}");
        let e = Config::parse("[[networks]]\nname = \"a\"\nsubnet = \"10.0.0.1/24\"\n")
            .expect_err("host bits");
        assert!(e.to_string().contains("did you mean 10.0.0.0/24"), "{e}");
        let e = Config::parse("bogus = 1\n").expect_err("unknown field");
        assert!(e.to_string().contains("unknown field"), "{e}");
        let e =
            Config::parse(&EXAMPLE.replace("label = 25", "label = 2000000")).expect_err("label");
        assert!(e.to_string().contains("above 2^20-1"), "{e}");
    }

    #[test]
    fn empty_file_is_an_empty_config() {
        assert_eq!(Config::parse("").expect("empty"), Config::default());
    }
}
