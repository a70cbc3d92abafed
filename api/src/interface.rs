// SPDX-License-Identifier: Apache-2.0
//! What an agent needs to program one interface: `GET /vrouter/interfaces/<vmi>` and the value
//! of an `interface` watch event. The shim builds it from the Contrail objects (VMI, its network,
//! instance IPs, floating IPs, the network's policies) and resolves names, so the agent works on
//! addresses and VRF names only.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{MacAddr, Uuid};
use crate::prefix::Ipv4Prefix;

/// The interface config. Optional parts are `null` until CloudStack has created them; the agent
/// skips an interface it cannot program yet rather than failing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InterfaceConfig {
    /// VMI UUID (CloudStack's Nic UUID).
    pub uuid: Uuid,
    /// VMI name (`<instance>-<devid>`), the last fq_name component.
    #[serde(default)]
    pub name: Option<String>,
    /// VMI fq_name.
    #[serde(default)]
    pub fq_name: Vec<String>,
    /// The VM it belongs to.
    #[serde(default)]
    pub vm_uuid: Option<Uuid>,
    /// Its MAC (`None` when the VMI has none, or none that parses).
    #[serde(default)]
    pub mac: Option<MacAddr>,
    /// Its network.
    #[serde(default)]
    pub network: Option<NetworkRef>,
    /// Instance IPs, in back-reference order (the agent uses the first IPv4 one).
    #[serde(default)]
    pub ips: Vec<InstanceIp>,
    /// Floating IPs that point at this interface.
    #[serde(default)]
    pub floating_ips: Vec<FloatingIpRef>,
    /// Network-policies attached to the network, in `sequence` order, rules resolved.
    #[serde(default)]
    pub policies: Vec<AttachedPolicy>,
    /// Networks a policy connects to this one (their routes are in the host's watch view).
    #[serde(default)]
    pub connected: Vec<ConnectedNetwork>,
    /// `virtual_machine_interface_properties`, when set.
    #[serde(default)]
    pub properties: Option<InterfaceProperties>,
    /// Service chains the network's policies (or the other side's) apply between this network
    /// and another: traffic across them goes through a service instance, never directly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_chains: Vec<ServiceChain>,
    /// `virtual_machine_interface_allowed_address_pairs`: further addresses (a VRRP VIP, a
    /// prefix behind the VM) the interface may send from, each with an optional MAC.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_address_pairs: Vec<AllowedAddressPair>,
    /// The VM's CloudStack instance name (`i-<account>-<id>-VM`): its DNS name in the network
    /// and its DHCP host name when it has no usable display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_name: Option<String>,
    /// The VM's display name (the VNC object's `display_name`), when CloudStack set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_display_name: Option<String>,
}

impl InterfaceConfig {
    /// The interface's VRF, if its network is known.
    pub fn vrf(&self) -> Option<&str> {
        self.network.as_ref().map(|n| n.vrf.as_str())
    }

    /// A service instance's left or right interface: it forwards traffic of other addresses
    /// (a management interface does not).
    pub fn is_service_interface(&self) -> bool {
        let t = self
            .properties
            .as_ref()
            .and_then(InterfaceProperties::service_interface_type);
        matches!(t, Some("left" | "right"))
    }
}

/// The interface's virtual network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRef {
    /// Virtual-network UUID.
    pub uuid: Uuid,
    /// Its fq_name.
    #[serde(default)]
    pub fq_name: Vec<String>,
    /// VRF name: the fq_name joined with `:`.
    pub vrf: String,
    /// The network's IPAM subnets.
    #[serde(default)]
    pub subnets: Vec<Ipv4Prefix>,
    /// The network's DNS domain: the one CloudStack set (DHCP option 15 `domain-name` of the
    /// IPAM subnet or of the IPAM), else CloudStack's default `cs<account id, hex>cloud.internal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The VMs of the network with their addresses: what the gateway's DNS answers for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<NetworkHost>,
}

/// One VM interface of a network, as the network's DNS names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkHost {
    /// The VM's CloudStack instance name.
    pub name: String,
    /// The VM's display name, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The interface's IPv4 address in the network.
    pub address: Ipv4Addr,
}

/// One instance IP with what its subnet says (DHCP's answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceIp {
    /// Instance-ip UUID.
    pub uuid: Uuid,
    /// The address (IPv4 or IPv6; `None` while unallocated).
    #[serde(default)]
    pub address: Option<IpAddr>,
    /// The IPAM subnet it lies in.
    #[serde(default)]
    pub subnet: Option<Ipv4Prefix>,
    /// That subnet's length.
    #[serde(default)]
    pub prefix_len: Option<u8>,
    /// The subnet's gateway.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// The subnet's DNS server (the gateway unless set).
    #[serde(default)]
    pub dns_server: Option<Ipv4Addr>,
}

impl InstanceIp {
    /// The address if it is IPv4.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        match self.address {
            Some(IpAddr::V4(a)) => Some(a),
            _ => None,
        }
    }
}

/// One allowed address pair (Contrail's `AllowedAddressPair`): the interface may send from
/// `prefix` (and from `mac`, when set); in `active-standby` mode a /32 is routed to the member
/// that last announced it with a gratuitous ARP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowedAddressPair {
    /// The address or prefix (`ip.ip_prefix` / `ip.ip_prefix_len`), host bits cleared.
    pub prefix: Ipv4Prefix,
    /// `mac`, when set and a MAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// `address_mode`.
    #[serde(default)]
    pub mode: AddressMode,
}

/// `address_mode` of an allowed address pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AddressMode {
    /// One member owns the address at a time: the one that last sent a gratuitous ARP for it
    /// (Contrail's default).
    #[default]
    ActiveStandby,
    /// Every member at once (ECMP in Contrail); this build treats it as `active-standby`.
    ActiveActive,
    /// A mode a newer peer added: treated as `active-standby`.
    #[serde(other)]
    Unknown,
}

/// A floating IP of the interface (static NAT into a public network).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloatingIpRef {
    /// Floating-ip UUID.
    pub uuid: Uuid,
    /// The public address (`None` while unallocated).
    #[serde(default)]
    pub address: Option<Ipv4Addr>,
    /// The public network's UUID.
    #[serde(default)]
    pub network_uuid: Option<Uuid>,
    /// The public network's VRF.
    #[serde(default)]
    pub vrf: Option<String>,
}

/// A network-policy attached to the interface's network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachedPolicy {
    /// Policy UUID.
    pub uuid: Uuid,
    /// Its fq_name.
    #[serde(default)]
    pub fq_name: Vec<String>,
    /// The reference's `attr` as CloudStack set it (`sequence`, `timer`): Contrail's own
    /// schema, carried for inspection only; the agent never reads it.
    #[serde(default)]
    pub attr: Value,
    /// The policy's raw `network_policy_entries` (Contrail's schema), for inspection only.
    #[serde(default)]
    pub entries: Value,
    /// The rules resolved for the agent: what it enforces.
    #[serde(default)]
    pub rules: Vec<PolicyRule>,
}

/// One policy rule with names resolved to addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRule {
    /// `<>` (both ways) or `>` (source to destination only).
    pub direction: Direction,
    /// IP protocol number; `None` = any.
    pub protocol: Option<u8>,
    /// Sources.
    pub src: Vec<Endpoint>,
    /// Destinations.
    pub dst: Vec<Endpoint>,
    /// Source port ranges (inclusive; `[0, 65535]` = any).
    pub src_ports: Vec<(u16, u16)>,
    /// Destination port ranges.
    pub dst_ports: Vec<(u16, u16)>,
    /// What a match does.
    pub action: Action,
    /// [`Action::Service`]: the service instances the rule applies (fq_names joined with `:`,
    /// as the rule names them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
}

/// Rule direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// `<>`: both ways.
    #[serde(rename = "<>")]
    Both,
    /// `>`: source to destination.
    #[serde(rename = ">")]
    OneWay,
}

/// Rule action. Only [`Action::Pass`] lets traffic through directly: a service rule steers it
/// through a service instance (or drops it while none runs), and an action this build does not
/// know drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Allow.
    Pass,
    /// Drop.
    Deny,
    /// `apply_service`: through the service instances of the rule's [`ServiceChain`], never
    /// directly.
    Service,
    /// An action a newer shim added: treated as deny.
    #[serde(other)]
    Unknown,
}

/// One side of a rule. On the wire: `{"any": true}`, `{"vrf": V, "subnets": [..]}` or
/// `{"subnet": "a.b.c.d/n"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "EndpointWire", into = "EndpointWire")]
pub enum Endpoint {
    /// Any address.
    Any,
    /// A network by VRF name, with its subnets (none: matches nothing).
    Network {
        /// VRF name.
        vrf: String,
        /// Its subnets.
        subnets: Vec<Ipv4Prefix>,
    },
    /// A CIDR.
    Subnet(Ipv4Prefix),
}

impl Endpoint {
    /// The prefixes this endpoint matches (`None` for any).
    pub fn prefixes(&self) -> Option<&[Ipv4Prefix]> {
        match self {
            Endpoint::Any => None,
            Endpoint::Network { subnets, .. } => Some(subnets),
            Endpoint::Subnet(p) => Some(std::slice::from_ref(p)),
        }
    }
}

/// The JSON shape of [`Endpoint`] (one object with one of three key sets).
#[derive(Serialize, Deserialize)]
struct EndpointWire {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    any: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vrf: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subnets: Option<Vec<Ipv4Prefix>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subnet: Option<Ipv4Prefix>,
}

impl TryFrom<EndpointWire> for Endpoint {
    type Error = String;
    fn try_from(w: EndpointWire) -> Result<Endpoint, String> {
        match w {
            EndpointWire { any: true, .. } => Ok(Endpoint::Any),
            EndpointWire {
                vrf: Some(vrf),
                subnets,
                ..
            } => Ok(Endpoint::Network {
                vrf,
                subnets: subnets.unwrap_or_default(),
            }),
            EndpointWire {
                subnet: Some(p), ..
            } => Ok(Endpoint::Subnet(p)),
            _ => Err("an endpoint needs \"any\": true, a \"vrf\" or a \"subnet\"".into()),
        }
    }
}

impl From<Endpoint> for EndpointWire {
    fn from(e: Endpoint) -> EndpointWire {
        let mut w = EndpointWire {
            any: false,
            vrf: None,
            subnets: None,
            subnet: None,
        };
        match e {
            Endpoint::Any => w.any = true,
            Endpoint::Network { vrf, subnets } => {
                w.vrf = Some(vrf);
                w.subnets = Some(subnets);
            }
            Endpoint::Subnet(p) => w.subnet = Some(p),
        }
        w
    }
}

/// A network policy-connected to the interface's network (its routes leak into ours).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectedNetwork {
    /// Its VRF name.
    pub vrf: String,
    /// Its subnets.
    #[serde(default)]
    pub subnets: Vec<Ipv4Prefix>,
}

/// `virtual_machine_interface_properties`: the keys the agent reads, typed; every other key
/// kept as it came so nothing CloudStack set is lost on the way.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct InterfaceProperties {
    /// MTU CloudStack asks for (the agent honours 68..=9216).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_mtu: Option<u64>,
    /// Everything else, untouched.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

impl InterfaceProperties {
    /// A service VM's interface type: `left`, `right` or `management` (CloudStack: device 0
    /// is management, 1 left, 2 right). Read from the untyped keys, so a `null` or any other
    /// value CloudStack stored still goes back out exactly as it came.
    pub fn service_interface_type(&self) -> Option<&str> {
        self.other
            .get("service_interface_type")
            .and_then(Value::as_str)
    }
}

/// Which side of a service chain a network is: `left` is the rule's source side (where the
/// traffic the instance serves comes from), `right` its destination side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainSide {
    /// The source side.
    Left,
    /// The destination side.
    Right,
}

/// Whether a chain has somewhere to send its traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
pub enum ChainStatus {
    /// An instance with at least one interface on this side: traffic goes through it.
    Resolved,
    /// No usable instance (unknown, missing template or networks, no VM or interface on this
    /// side yet): the traffic is dropped (`Service Chain Down`), never forwarded directly.
    Down(String),
}

/// One interface of a service instance on one side of a chain: where the chain's traffic is
/// sent. Several make an ECMP group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceHop {
    /// The service instance (fq_name joined with `:`).
    pub instance: String,
    /// The service VM.
    pub vm_uuid: Uuid,
    /// The service VM's interface on this side.
    pub vmi_uuid: Uuid,
    /// Its address, once allocated.
    #[serde(default)]
    pub address: Option<Ipv4Addr>,
}

/// A service chain between this interface's network and another, as seen from this network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceChain {
    /// The policy whose rule applies the service (fq_name joined with `:`).
    pub policy: String,
    /// The instances the rule names (fq_names joined with `:`).
    pub instances: Vec<String>,
    /// This network's side.
    pub side: ChainSide,
    /// The network on the other side: its prefixes are steered to `hops` in this VRF.
    pub remote: ConnectedNetwork,
    /// The other side is the public network: `0.0.0.0/0` is steered too (left side only).
    #[serde(default)]
    pub default_route: bool,
    /// The instance interfaces on this side the traffic goes to (empty while down).
    #[serde(default)]
    pub hops: Vec<ServiceHop>,
    /// Resolved or why not.
    pub status: ChainStatus,
}
