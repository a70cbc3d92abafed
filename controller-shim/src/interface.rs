// SPDX-License-Identifier: Apache-2.0
//! What an agent needs to program one interface ([`InterfaceConfig`]), built from the Contrail
//! objects: the VMI, its network and subnets, its instance and floating IPs, the network's
//! policies with their rules resolved, and the policy-connected networks. Read-only over the
//! [`Graph`]; the Contrail objects stay JSON (CloudStack's schema), the result is the typed
//! contract of `vrouter-api`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use serde_json::Value;
use vrouter_api::interface::{
    AllowedAddressPair, AttachedPolicy, ConnectedNetwork, FloatingIpRef, InstanceIp,
    InterfaceConfig, InterfaceProperties, NetworkHost, NetworkRef, ServiceChain,
};
use vrouter_api::{Ipv4Prefix, MacAddr, Uuid};

use crate::graph::{Graph, IpamSubnet, Obj, Ref};
use crate::policy::{self, ChainRule, Entries, Known, Peers};
use crate::schema::ObjType;
use crate::service::{self, ChainCtx, Instances};

/// What policy resolution needs about every network, computed once per view refresh.
#[derive(Debug, Default)]
pub(crate) struct PolicyCtx {
    /// VRF name -> the network's IPAM subnets.
    pub(crate) known: Known,
    /// VRF name -> what its attached policies' pass rules name.
    peers: BTreeMap<String, Peers>,
    /// Networks an `any` pass rule reaches (with subnets, not ip-fabric / link-local).
    eligible: BTreeSet<String>,
    /// Every network-policy's entries, parsed once, by policy uuid.
    entries: BTreeMap<String, Entries>,
    /// The service chains every attached policy asks for.
    chains: BTreeSet<ChainRule>,
    /// Every service instance.
    instances: Instances,
    /// Public networks (`router_external`, or CloudStack's `__<zone>_Public__`).
    public: BTreeSet<String>,
    /// Network uuid -> its DNS domain and VMs (what the gateway's DNS serves).
    names: BTreeMap<String, (Option<String>, Vec<NetworkHost>)>,
}

/// Whether `vn` is a public network: `router_external`, or CloudStack's canonical public name.
fn is_public(vn: &Obj) -> bool {
    let name = vn.name();
    vn.props.get("router_external").and_then(Value::as_bool) == Some(true)
        || (name.starts_with("__") && name.ends_with("_Public__"))
}

/// The network-policies attached to `vn`, in `sequence` order (refs order for ties).
fn attached_policies<'a>(g: &'a Graph, vn: &'a Obj) -> Vec<(&'a Ref, &'a Obj)> {
    let mut v: Vec<_> = vn
        .refs
        .get(&ObjType::NetworkPolicy)
        .into_iter()
        .flatten()
        .filter_map(|r| g.get(&r.uuid).map(|p| (r, p)))
        .collect();
    let seq = |r: &Ref| {
        let n = |k: &str| {
            r.attr
                .pointer(&format!("/sequence/{k}"))
                .and_then(Value::as_i64)
                .unwrap_or(0)
        };
        (n("major"), n("minor"))
    };
    v.sort_by_key(|(r, _)| seq(r));
    v
}

/// Policy context of the whole configuration (see [`crate::policy`], [`crate::service`]).
pub(crate) fn policy_ctx(g: &Graph) -> PolicyCtx {
    let mut ctx = PolicyCtx {
        entries: g
            .of_type(ObjType::NetworkPolicy)
            .map(|p| {
                let e = Entries::parse(p.props.get("network_policy_entries"));
                (p.uuid.clone(), e)
            })
            .collect(),
        instances: service::instances(g),
        ..PolicyCtx::default()
    };
    for vn in g.of_type(ObjType::VirtualNetwork) {
        let subnets: Vec<Ipv4Prefix> = vn.vn_subnets().iter().map(|s| s.prefix).collect();
        if !subnets.is_empty() && !vn.is_fabric_vn() {
            ctx.eligible.insert(vn.vrf());
        }
        if is_public(vn) {
            ctx.public.insert(vn.vrf());
        }
        ctx.known.insert(vn.vrf(), subnets);
        let hosts = network_hosts(g, vn);
        let domain = network_domain(g, vn, &hosts);
        ctx.names.insert(vn.uuid.clone(), (domain, hosts));
    }
    for vn in g.of_type(ObjType::VirtualNetwork) {
        let attached: Vec<(&Obj, &Entries)> = attached_policies(g, vn)
            .into_iter()
            .filter_map(|(_, p)| Some((p, ctx.entries.get(&p.uuid)?)))
            .collect();
        if attached.is_empty() {
            continue;
        }
        let vrf = vn.vrf();
        for (p, e) in &attached {
            let chains = policy::chains_of(&p.vrf(), e, &vrf, &ctx.known);
            ctx.chains.extend(chains);
        }
        let entries: Vec<&Entries> = attached.iter().map(|(_, e)| *e).collect();
        let p = policy::peers_of(&entries, &vrf, &ctx.known);
        ctx.peers.insert(vrf, p);
    }
    ctx
}

/// The config of VMI `vmi`, or `None` if no such VMI exists.
pub(crate) fn interface_config(g: &Graph, vmi: &str) -> Option<InterfaceConfig> {
    interface_config_with(g, vmi, &policy_ctx(g))
}

/// [`interface_config`] with a policy context computed once for many interfaces.
pub(crate) fn interface_config_with(
    g: &Graph,
    vmi: &str,
    pctx: &PolicyCtx,
) -> Option<InterfaceConfig> {
    let o = g
        .get(vmi)
        .filter(|o| o.ty == ObjType::VirtualMachineInterface)?;
    let uuid = o.uuid.parse().ok()?;
    let vn = o
        .first_ref(ObjType::VirtualNetwork)
        .and_then(|r| g.get(&r.uuid));
    let subnets = vn.map(Obj::vn_subnets).unwrap_or_default();
    let vm_uuid = match o.parent_type {
        Some(ObjType::VirtualMachine) => o.parent_uuid.as_deref(),
        _ => o
            .first_ref(ObjType::VirtualMachine)
            .map(|r| r.uuid.as_str()),
    };
    let (ips, floating_ips) = addresses(g, vmi, &subnets);
    let vm = vm_of(g, o);
    Some(InterfaceConfig {
        uuid,
        name: o.fq_name.last().cloned(),
        fq_name: o.fq_name.clone(),
        vm_uuid: vm_uuid.and_then(|u| u.parse().ok()),
        mac: mac(o),
        network: vn.and_then(|v| network_ref(v, &subnets, pctx)),
        ips,
        floating_ips,
        policies: vn.map(|v| policies(g, v, pctx)).unwrap_or_default(),
        connected: vn.map(|v| connected(v, pctx)).unwrap_or_default(),
        properties: o
            .props
            .get("virtual_machine_interface_properties")
            .and_then(properties),
        service_chains: vn.map(|v| chains(v, pctx)).unwrap_or_default(),
        allowed_address_pairs: allowed_address_pairs(o),
        vm_name: vm.map(|v| v.name().to_string()).filter(|n| !n.is_empty()),
        vm_display_name: vm.and_then(display_name),
    })
}

/// An object's `display_name`, when set and not empty.
fn display_name(o: &Obj) -> Option<String> {
    o.props
        .get("display_name")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

/// The VM a VMI belongs to (its parent, else its `virtual_machine_refs`).
fn vm_of<'a>(g: &'a Graph, vmi: &Obj) -> Option<&'a Obj> {
    let uuid = match vmi.parent_type {
        Some(ObjType::VirtualMachine) => vmi.parent_uuid.as_deref(),
        _ => vmi
            .first_ref(ObjType::VirtualMachine)
            .map(|r| r.uuid.as_str()),
    };
    uuid.and_then(|u| g.get(u))
        .filter(|v| v.ty == ObjType::VirtualMachine)
}

/// The value of DHCP option 15 (`domain-name`) in a Contrail `dhcp_option_list`.
fn dhcp_domain(list: Option<&Value>) -> Option<String> {
    list?
        .get("dhcp_option")?
        .as_array()?
        .iter()
        .filter(|o| {
            matches!(
                o.get("dhcp_option_name").and_then(Value::as_str),
                Some("15" | "domain-name")
            )
        })
        .find_map(|o| o.get("dhcp_option_value").and_then(Value::as_str))
        .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase())
        .filter(|d| !d.is_empty())
}

/// The account id in a CloudStack instance name `i-<account>-<id>-VM`.
fn account_of(instance: &str) -> Option<u64> {
    let mut parts = instance.split('-');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("i"), Some(a), Some(_), Some(_)) => a.parse().ok(),
        _ => None,
    }
}

/// The VMs of `vn` (every VMI referring to it, with its IPv4 instance IPs), in VMI order.
fn network_hosts(g: &Graph, vn: &Obj) -> Vec<NetworkHost> {
    let mut out = Vec::new();
    for vmi in g
        .referrers(&vn.uuid)
        .filter(|o| o.ty == ObjType::VirtualMachineInterface)
    {
        let Some(vm) = vm_of(g, vmi) else {
            continue;
        };
        let name = vm.name();
        if name.is_empty() {
            continue;
        }
        for ip in g
            .referrers(&vmi.uuid)
            .filter(|o| o.ty == ObjType::InstanceIp)
        {
            let addr = ip
                .props
                .get("instance_ip_address")
                .and_then(Value::as_str)
                .and_then(|a| a.parse::<Ipv4Addr>().ok());
            if let Some(address) = addr {
                out.push(NetworkHost {
                    name: name.to_string(),
                    display_name: display_name(vm),
                    address,
                });
            }
        }
    }
    out
}

/// The network's DNS domain: DHCP option 15 of its IPAM subnets or of its IPAM, else
/// CloudStack's default `cs<account id in hex>cloud.internal` of the first of its VMs whose
/// instance name carries an account id.
fn network_domain(g: &Graph, vn: &Obj, hosts: &[NetworkHost]) -> Option<String> {
    for r in vn.refs.get(&ObjType::NetworkIpam).into_iter().flatten() {
        let subnets = r.attr.get("ipam_subnets").and_then(Value::as_array);
        for s in subnets.into_iter().flatten() {
            if let Some(d) = dhcp_domain(s.get("dhcp_option_list")) {
                return Some(d);
            }
        }
        let mgmt = g
            .get(&r.uuid)
            .and_then(|i| i.props.get("network_ipam_mgmt"));
        if let Some(d) = dhcp_domain(mgmt.and_then(|m| m.get("dhcp_option_list"))) {
            return Some(d);
        }
    }
    let account = hosts.iter().find_map(|h| account_of(&h.name))?;
    Some(format!("cs{account:x}cloud.internal"))
}

/// The first of `virtual_machine_interface_mac_addresses`, if it is a MAC.
fn mac(o: &Obj) -> Option<MacAddr> {
    o.props
        .get("virtual_machine_interface_mac_addresses")
        .and_then(|m| m.get("mac_address"))
        .and_then(|a| a.get(0))
        .and_then(Value::as_str)
        .and_then(|m| m.parse().ok())
}

fn network_ref(vn: &Obj, subnets: &[IpamSubnet], pctx: &PolicyCtx) -> Option<NetworkRef> {
    let (domain, hosts) = pctx.names.get(&vn.uuid).cloned().unwrap_or_default();
    Some(NetworkRef {
        uuid: vn.uuid.parse().ok()?,
        fq_name: vn.fq_name.clone(),
        vrf: vn.vrf(),
        subnets: subnets.iter().map(|s| s.prefix).collect(),
        domain,
        hosts,
    })
}

/// The instance IPs and floating IPs referring to the VMI, in back-reference order, except that
/// instance IPs with `instance_ip_secondary` come after the others.
fn addresses(
    g: &Graph,
    vmi: &str,
    subnets: &[IpamSubnet],
) -> (Vec<InstanceIp>, Vec<FloatingIpRef>) {
    let mut ips = Vec::new();
    let mut fips = Vec::new();
    for f in g.referrers(vmi) {
        let Ok(uuid) = f.uuid.parse::<Uuid>() else {
            continue;
        };
        match f.ty {
            ObjType::InstanceIp => {
                let address: Option<IpAddr> = f
                    .props
                    .get("instance_ip_address")
                    .and_then(Value::as_str)
                    .and_then(|a| a.parse().ok());
                let sub = match address {
                    Some(IpAddr::V4(a)) => subnets.iter().find(|s| s.prefix.contains(a)),
                    _ => None,
                };
                let secondary = f
                    .props
                    .get("instance_ip_secondary")
                    .and_then(Value::as_bool);
                ips.push((
                    secondary == Some(true),
                    InstanceIp {
                        uuid,
                        address,
                        subnet: sub.map(|s| s.prefix),
                        prefix_len: sub.map(|s| s.prefix.len),
                        gateway: sub.and_then(|s| s.gateway),
                        dns_server: sub.and_then(|s| s.dns.or(s.gateway)),
                    },
                ));
            }
            ObjType::FloatingIp => {
                let pool = f.parent_uuid.as_deref().and_then(|p| g.get(p));
                let pvn = pool
                    .and_then(|p| p.parent_uuid.as_deref())
                    .and_then(|v| g.get(v));
                fips.push(FloatingIpRef {
                    uuid,
                    address: f
                        .props
                        .get("floating_ip_address")
                        .and_then(Value::as_str)
                        .and_then(|a| a.parse::<Ipv4Addr>().ok()),
                    network_uuid: pvn.and_then(|v| v.uuid.parse().ok()),
                    vrf: pvn.map(Obj::vrf),
                });
            }
            _ => {}
        }
    }
    // The fixed address first: an instance IP marked secondary (`addIpToNic`) never is.
    ips.sort_by_key(|(secondary, _)| *secondary);
    (ips.into_iter().map(|(_, ip)| ip).collect(), fips)
}

/// The policies attached to the interface's network, rules resolved.
fn policies(g: &Graph, vn: &Obj, pctx: &PolicyCtx) -> Vec<AttachedPolicy> {
    let own = vn.vrf();
    attached_policies(g, vn)
        .into_iter()
        .filter_map(|(r, p)| {
            let raw = p.props.get("network_policy_entries");
            Some(AttachedPolicy {
                uuid: p.uuid.parse().ok()?,
                fq_name: p.fq_name.clone(),
                attr: r.attr.clone(),
                entries: raw.cloned().unwrap_or(Value::Null),
                rules: pctx
                    .entries
                    .get(&p.uuid)
                    .map(|e| policy::resolve_rules(e, &own, &pctx.known))
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The service chains `vn` takes part in (as left or right), resolved to instance interfaces.
fn chains(vn: &Obj, pctx: &PolicyCtx) -> Vec<ServiceChain> {
    let ctx = ChainCtx {
        instances: &pctx.instances,
        known: &pctx.known,
        public: &pctx.public,
    };
    service::chains_for(&vn.vrf(), &pctx.chains, &ctx)
}

/// The networks a policy connects to `vn`, with their subnets.
fn connected(vn: &Obj, pctx: &PolicyCtx) -> Vec<ConnectedNetwork> {
    policy::connected(&vn.vrf(), &pctx.peers, &pctx.eligible)
        .into_iter()
        .map(|vrf| ConnectedNetwork {
            subnets: pctx.known.get(&vrf).cloned().unwrap_or_default(),
            vrf,
        })
        .collect()
}

/// `virtual_machine_interface_allowed_address_pairs.allowed_address_pair[]`: the pairs whose
/// `ip` is an IPv4 prefix (host bits cleared); an entry that is not is left out (an IPv6 pair,
/// a typo), as is a `mac` that is not a MAC (the prefix is kept).
fn allowed_address_pairs(o: &Obj) -> Vec<AllowedAddressPair> {
    let Some(list) = o
        .props
        .get("virtual_machine_interface_allowed_address_pairs")
        .and_then(|v| v.get("allowed_address_pair"))
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|p| {
            let ip = p.get("ip")?;
            let addr: Ipv4Addr = ip.get("ip_prefix")?.as_str()?.trim().parse().ok()?;
            let len = ip
                .get("ip_prefix_len")
                .and_then(Value::as_u64)
                .unwrap_or(32);
            let prefix = Ipv4Prefix::truncating(addr, u8::try_from(len).ok()?)?;
            let mode = p
                .get("address_mode")
                .cloned()
                .and_then(|m| serde_json::from_value(m).ok())
                .unwrap_or_default();
            Some(AllowedAddressPair {
                prefix,
                mac: p
                    .get("mac")
                    .and_then(Value::as_str)
                    .and_then(|m| m.parse().ok()),
                mode,
            })
        })
        .collect()
}

/// `virtual_machine_interface_properties`: the MTU typed when it is a number, every other key
/// (and an MTU that is not) carried as CloudStack set it, so the JSON is what it stored.
fn properties(v: &Value) -> Option<InterfaceProperties> {
    let mut other: BTreeMap<String, Value> = v
        .as_object()?
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let interface_mtu = other.get("interface_mtu").and_then(Value::as_u64);
    if interface_mtu.is_some() {
        other.remove("interface_mtu");
    }
    Some(InterfaceProperties {
        interface_mtu,
        other,
    })
}

#[cfg(test)]
#[path = "interface_address_tests.rs"]
mod address_tests;
