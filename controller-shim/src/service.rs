// SPDX-License-Identifier: Apache-2.0
//! Service instances and the chains that go through them, free of I/O.
//!
//! In-network mode (what CloudStack's plugin creates): a `service-instance` refers to its
//! `service-template` and names its left and right networks in `service_instance_properties`;
//! its VMs are the `virtual-machine`s whose `service_instance_refs` point to it; their
//! interfaces are the VMIs whose `virtual_machine_interface_properties.service_interface_type`
//! is `left` / `right` (`management` for device 0, not part of the chain).
//!
//! A [`ChainRule`] (a policy rule with `apply_service`) becomes, for each of its two networks,
//! a [`ServiceChain`]: the other network's prefixes, and the instance interfaces on this side
//! the agents steer them to. It is [`ChainStatus::Resolved`] only when the instance exists,
//! its template exists and is in-network, its networks match the rule's and it has at least one
//! interface on this side; otherwise it is down with the reason, and the agents drop the
//! chain's traffic (never connect the networks directly).
//!
//! The Contrail objects are read once into [`Instances`] (typed); nothing here reads JSON later.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::Deserialize;
use serde_json::Value;
use vrouter_api::interface::{ChainSide, ChainStatus, ConnectedNetwork, ServiceChain, ServiceHop};
use vrouter_api::Uuid;

use crate::graph::{Graph, Obj};
use crate::policy::{ChainRule, Known};
use crate::schema::ObjType;

/// `service_instance_properties`: the keys read here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
struct InstanceProps {
    #[serde(default)]
    left_virtual_network: Option<String>,
    #[serde(default)]
    right_virtual_network: Option<String>,
}

/// `service_template_properties`: the keys read here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
struct TemplateProps {
    #[serde(default)]
    service_mode: Option<String>,
}

/// `virtual_machine_interface_properties`: the key read here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
struct VmiProps {
    #[serde(default)]
    service_interface_type: Option<String>,
}

/// One interface of a service VM on one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// The VM.
    pub vm: Uuid,
    /// The interface.
    pub vmi: Uuid,
    /// Its network's VRF, if it has one.
    pub vrf: Option<String>,
    /// Its first IPv4 instance IP.
    pub address: Option<Ipv4Addr>,
}

/// A service instance as the chains need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Its fq_name joined with `:`.
    pub fq: String,
    /// Left network (as named in its properties, `a:b:c`).
    pub left: Option<String>,
    /// Right network.
    pub right: Option<String>,
    /// Why its template is unusable, if it is.
    pub template_problem: Option<String>,
    /// Its VMs' left interfaces.
    pub left_ports: Vec<Port>,
    /// Its VMs' right interfaces.
    pub right_ports: Vec<Port>,
}

/// Every service instance, by fq_name joined with `:`.
pub type Instances = BTreeMap<String, Instance>;

/// What a property says, typed; absent or of the wrong shape is the default (nothing set).
fn props<T: for<'de> Deserialize<'de> + Default>(o: &Obj, key: &str) -> T {
    o.props
        .get(key)
        .and_then(|v| T::deserialize(v).ok())
        .unwrap_or_default()
}

/// Why the instance's template cannot carry a chain, if it cannot.
fn template_problem(g: &Graph, si: &Obj) -> Option<String> {
    let Some(r) = si.first_ref(ObjType::ServiceTemplate) else {
        return Some("has no service template".into());
    };
    let Some(t) = g.get(&r.uuid).filter(|t| t.ty == ObjType::ServiceTemplate) else {
        return Some(format!(
            "its service template {} is missing",
            r.to.join(":")
        ));
    };
    let p: TemplateProps = props(t, "service_template_properties");
    match p.service_mode.as_deref() {
        None | Some("in-network") => None,
        Some(m) => Some(format!(
            "its template's service_mode {m:?} is not supported (only in-network)"
        )),
    }
}

/// The first IPv4 instance IP of `vmi`.
fn address(g: &Graph, vmi: &str) -> Option<Ipv4Addr> {
    g.referrers(vmi)
        .filter(|o| o.ty == ObjType::InstanceIp)
        .find_map(|o| {
            o.props
                .get("instance_ip_address")
                .and_then(Value::as_str)?
                .parse()
                .ok()
        })
}

/// The left and right interfaces of the VMs that refer to `si`, in VM then VMI uuid order.
fn ports(g: &Graph, si: &Obj) -> (Vec<Port>, Vec<Port>) {
    let (mut left, mut right) = (Vec::new(), Vec::new());
    let mut vms: Vec<&Obj> = g
        .referrers(&si.uuid)
        .filter(|o| o.ty == ObjType::VirtualMachine)
        .collect();
    vms.sort_by(|a, b| a.uuid.cmp(&b.uuid));
    for vm in vms {
        let Ok(vm_uuid) = vm.uuid.parse::<Uuid>() else {
            continue;
        };
        let children = g.children.get(&vm.uuid).into_iter().flatten();
        let mut vmis: Vec<&Obj> = children
            .filter_map(|u| g.get(u))
            .chain(g.referrers(&vm.uuid))
            .filter(|i| i.ty == ObjType::VirtualMachineInterface)
            .collect();
        vmis.sort_by(|a, b| a.uuid.cmp(&b.uuid));
        vmis.dedup_by(|a, b| a.uuid == b.uuid);
        for i in vmis {
            let p: VmiProps = props(i, "virtual_machine_interface_properties");
            let side = match p.service_interface_type.as_deref() {
                Some("left") => &mut left,
                Some("right") => &mut right,
                _ => continue,
            };
            let Ok(vmi) = i.uuid.parse::<Uuid>() else {
                continue;
            };
            let vrf = i
                .first_ref(ObjType::VirtualNetwork)
                .and_then(|r| g.get(&r.uuid))
                .map(Obj::vrf);
            side.push(Port {
                vm: vm_uuid,
                vmi,
                vrf,
                address: address(g, &i.uuid),
            });
        }
    }
    (left, right)
}

/// Reads every service instance of the graph.
pub fn instances(g: &Graph) -> Instances {
    g.of_type(ObjType::ServiceInstance)
        .map(|si| {
            let p: InstanceProps = props(si, "service_instance_properties");
            let (left_ports, right_ports) = ports(g, si);
            let fq = si.vrf();
            let i = Instance {
                fq: fq.clone(),
                left: p.left_virtual_network.filter(|s| !s.is_empty()),
                right: p.right_virtual_network.filter(|s| !s.is_empty()),
                template_problem: template_problem(g, si),
                left_ports,
                right_ports,
            };
            (fq, i)
        })
        .collect()
}

/// Why `inst` cannot carry `rule`'s traffic on `side`, or its interfaces there.
fn hops(
    rule: &ChainRule,
    side: ChainSide,
    inst: &Instance,
    known: &Known,
) -> Result<Vec<ServiceHop>, String> {
    let name = &inst.fq;
    if let Some(p) = &inst.template_problem {
        return Err(format!("service instance {name} {p}"));
    }
    for (what, named, want) in [
        ("left", &inst.left, &rule.left),
        ("right", &inst.right, &rule.right),
    ] {
        let Some(n) = named else {
            return Err(format!("service instance {name} has no {what} network"));
        };
        if !known.contains_key(n) {
            return Err(format!(
                "service instance {name}: its {what} network {n} does not exist"
            ));
        }
        if n != want {
            return Err(format!(
                "service instance {name}: its {what} network is {n}, the rule's is {want}"
            ));
        }
    }
    let (ports, vrf, what) = match side {
        ChainSide::Left => (&inst.left_ports, &rule.left, "left"),
        ChainSide::Right => (&inst.right_ports, &rule.right, "right"),
    };
    let hops: Vec<ServiceHop> = ports
        .iter()
        .filter(|p| p.vrf.as_ref() == Some(vrf))
        .map(|p| ServiceHop {
            instance: name.clone(),
            vm_uuid: p.vm,
            vmi_uuid: p.vmi,
            address: p.address,
        })
        .collect();
    if hops.is_empty() {
        return Err(format!(
            "service instance {name} has no {what} interface in {vrf} yet"
        ));
    }
    Ok(hops)
}

/// What resolving a chain reads.
#[derive(Debug, Clone, Copy)]
pub struct ChainCtx<'a> {
    /// Every service instance.
    pub instances: &'a Instances,
    /// VRF -> subnets of every network.
    pub known: &'a Known,
    /// The public networks (their chains also steer `0.0.0.0/0`).
    pub public: &'a BTreeSet<String>,
}

/// The chains `rules` make for the network `own` (one per rule naming it left or right).
pub fn chains_for<'r>(
    own: &str,
    rules: impl IntoIterator<Item = &'r ChainRule>,
    ctx: &ChainCtx,
) -> Vec<ServiceChain> {
    let mut out = Vec::new();
    for r in rules {
        let (side, remote) = if r.left == own {
            (ChainSide::Left, &r.right)
        } else if r.right == own {
            (ChainSide::Right, &r.left)
        } else {
            continue;
        };
        let resolved = match r.instances.as_slice() {
            [one] => match ctx.instances.get(one) {
                Some(inst) => hops(r, side, inst, ctx.known),
                None => Err(format!("unknown service instance {one}")),
            },
            [] => Err("no service instance named".into()),
            _ => Err("chains of more than one service instance are not supported yet".into()),
        };
        let (hops, status) = match resolved {
            Ok(h) => (h, ChainStatus::Resolved),
            Err(why) => (Vec::new(), ChainStatus::Down(why)),
        };
        out.push(ServiceChain {
            policy: r.policy.clone(),
            instances: r.instances.clone(),
            side,
            remote: ConnectedNetwork {
                vrf: remote.clone(),
                subnets: ctx.known.get(remote).cloned().unwrap_or_default(),
            },
            default_route: side == ChainSide::Left && ctx.public.contains(remote),
            hops,
            status,
        });
    }
    out
}
