// SPDX-License-Identifier: Apache-2.0
//! The object graph: every stored VNC object by uuid and the indexes over them (type, fq_name,
//! children, back-references), plus the read-only questions both the VNC semantics ([`crate::core`])
//! and the agent state ([`crate::agents`]) ask of it (a network's subnets, whether it is
//! CloudStack's own). A module of its own so that the agent state reads the objects without
//! depending on the core that owns them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use vrouter_api::Ipv4Prefix;

use crate::error::{bad, ApiError};
use crate::schema::ObjType;

/// One reference as stored: exactly the list the client sent, resolved to uuids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ref {
    /// Target fq_name.
    pub to: Vec<String>,
    /// Target uuid (resolved by the server, never trusted from the client).
    pub uuid: String,
    /// Link attribute (`VnSubnetsType`, `VirtualNetworkPolicyType`, ...) or null.
    pub attr: Value,
}

/// A stored object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Obj {
    /// Object type.
    pub ty: ObjType,
    /// Uuid string exactly as created.
    pub uuid: String,
    /// Fully qualified name.
    pub fq_name: Vec<String>,
    /// Parent type as it will be echoed (`None` for root objects).
    pub parent_type: Option<ObjType>,
    /// Parent uuid when the parent exists.
    pub parent_uuid: Option<String>,
    /// True when the parent is accepted but is not a containment link (see
    /// [`ObjType::lenient_parents`]).
    #[serde(default)]
    pub lenient_parent: bool,
    /// Properties, `id_perms` included.
    pub props: Map<String, Value>,
    /// Outgoing references by target type.
    pub refs: BTreeMap<ObjType, Vec<Ref>>,
}

/// One IPAM subnet of a virtual network, as DHCP and the allocator read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpamSubnet {
    /// The subnet (host bits cleared).
    pub prefix: Ipv4Prefix,
    /// `default_gateway`, when set.
    pub gateway: Option<Ipv4Addr>,
    /// `dns_server_address`, when set.
    pub dns: Option<Ipv4Addr>,
}

impl Obj {
    /// First reference of the given target type.
    pub fn first_ref(&self, ty: ObjType) -> Option<&Ref> {
        self.refs.get(&ty).and_then(|v| v.first())
    }

    /// The last fq_name component.
    pub fn name(&self) -> &str {
        self.fq_name.last().map(String::as_str).unwrap_or("")
    }

    /// The VRF name of a network: its fq_name joined with `:`.
    pub fn vrf(&self) -> String {
        self.fq_name.join(":")
    }

    /// Subnets of a VN from every `network_ipam_refs` attr (entries that do not parse are
    /// skipped: they were refused when written, so only old data can hold them).
    pub fn vn_subnets(&self) -> Vec<IpamSubnet> {
        let mut out = Vec::new();
        for r in self.refs.get(&ObjType::NetworkIpam).into_iter().flatten() {
            let subnets = r.attr.get("ipam_subnets").and_then(Value::as_array);
            out.extend(
                subnets
                    .into_iter()
                    .flatten()
                    .filter_map(|s| parse_ipam_subnet(s).ok()),
            );
        }
        out
    }

    /// CloudStack's own networks (`ip-fabric`, `__link_local__`): no IPAM, no policy reach.
    pub fn is_fabric_vn(&self) -> bool {
        self.fq_name.len() == 3
            && self.fq_name[0] == "default-domain"
            && self.fq_name[1] == "default-project"
            && (self.fq_name[2] == "ip-fabric" || self.fq_name[2] == "__link_local__")
    }
}

/// Parses one `ipam_subnets` entry.
pub fn parse_ipam_subnet(s: &Value) -> Result<IpamSubnet, ApiError> {
    let sub = s
        .get("subnet")
        .ok_or_else(|| bad("ipam_subnets entry needs subnet"))?;
    let addr = sub
        .get("ip_prefix")
        .and_then(Value::as_str)
        .and_then(|p| p.parse::<Ipv4Addr>().ok())
        .ok_or_else(|| bad("subnet.ip_prefix must be an IPv4 address"))?;
    let len = sub
        .get("ip_prefix_len")
        .and_then(Value::as_u64)
        .and_then(|l| u8::try_from(l).ok())
        .filter(|l| *l <= 32)
        .ok_or_else(|| bad("subnet.ip_prefix_len must be 0..32"))?;
    let prefix = Ipv4Prefix::truncating(addr, len).ok_or_else(|| bad("bad subnet"))?;
    let addr = |k: &str| -> Result<Option<Ipv4Addr>, ApiError> {
        match s.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(a)) => a
                .parse::<Ipv4Addr>()
                .map(Some)
                .map_err(|_| bad(format!("{k} {a:?} is not an IPv4 address"))),
            Some(_) => Err(bad(format!("{k} must be a string"))),
        }
    };
    Ok(IpamSubnet {
        prefix,
        gateway: addr("default_gateway")?,
        dns: addr("dns_server_address")?,
    })
}

/// Every object and its indexes. Mutated only by the core; the agent state gets `&Graph`.
#[derive(Debug, Default)]
pub struct Graph {
    pub(crate) objs: HashMap<String, Obj>,
    pub(crate) by_type: BTreeMap<ObjType, BTreeSet<String>>,
    pub(crate) by_fq: HashMap<(ObjType, Vec<String>), String>,
    pub(crate) children: HashMap<String, BTreeSet<String>>,
    pub(crate) back_refs: HashMap<String, BTreeSet<String>>,
}

impl Graph {
    /// Looks an object up by uuid.
    pub fn get(&self, uuid: &str) -> Option<&Obj> {
        self.objs.get(uuid)
    }

    /// Looks a uuid up by type and fq_name.
    pub fn lookup(&self, ty: ObjType, fq: &[String]) -> Option<&str> {
        self.by_fq.get(&(ty, fq.to_vec())).map(String::as_str)
    }

    /// The object `uuid` if it has type `ty`, else the VNC API's 404.
    pub fn get_typed(&self, ty: ObjType, uuid: &str) -> Result<&Obj, ApiError> {
        match self.objs.get(uuid) {
            Some(o) if o.ty == ty => Ok(o),
            _ => Err(ApiError::NotFound(format!(
                "No {} object found for id {uuid}",
                ty.name()
            ))),
        }
    }

    /// Every object of type `ty`, in uuid order.
    pub fn of_type(&self, ty: ObjType) -> impl Iterator<Item = &Obj> {
        self.by_type
            .get(&ty)
            .into_iter()
            .flatten()
            .filter_map(|u| self.objs.get(u))
    }

    /// The objects referring to `uuid`.
    pub fn referrers(&self, uuid: &str) -> impl Iterator<Item = &Obj> {
        self.back_refs
            .get(uuid)
            .into_iter()
            .flatten()
            .filter_map(|u| self.objs.get(u))
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.objs.len()
    }

    /// True when there is no object.
    pub fn is_empty(&self) -> bool {
        self.objs.is_empty()
    }

    pub(crate) fn index(&mut self, o: Obj) {
        self.by_type.entry(o.ty).or_default().insert(o.uuid.clone());
        self.by_fq.insert((o.ty, o.fq_name.clone()), o.uuid.clone());
        if let (Some(p), false) = (&o.parent_uuid, o.lenient_parent) {
            self.children
                .entry(p.clone())
                .or_default()
                .insert(o.uuid.clone());
        }
        for r in o.refs.values().flatten() {
            self.back_refs
                .entry(r.uuid.clone())
                .or_default()
                .insert(o.uuid.clone());
        }
        self.objs.insert(o.uuid.clone(), o);
    }

    pub(crate) fn unindex(&mut self, uuid: &str) -> Option<Obj> {
        let o = self.objs.remove(uuid)?;
        if let Some(s) = self.by_type.get_mut(&o.ty) {
            s.remove(uuid);
        }
        self.by_fq.remove(&(o.ty, o.fq_name.clone()));
        if let Some(p) = &o.parent_uuid {
            if let Some(s) = self.children.get_mut(p) {
                s.remove(uuid);
                if s.is_empty() {
                    self.children.remove(p);
                }
            }
        }
        for r in o.refs.values().flatten() {
            if let Some(s) = self.back_refs.get_mut(&r.uuid) {
                s.remove(uuid);
                if s.is_empty() {
                    self.back_refs.remove(&r.uuid);
                }
            }
        }
        Some(o)
    }
}
