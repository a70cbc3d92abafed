// SPDX-License-Identifier: Apache-2.0
//! The I/O-free heart of the shim: the object graph, the VNC REST semantics on it, and the
//! address allocators.
//!
//! Every operation validates first and mutates only when it cannot fail any more, so an error
//! leaves the state untouched. Mutations also queue key/value writes ([`Batch`]) that the caller
//! persists before it acknowledges the request; time and fresh uuids come in through [`Ctx`], so
//! tests drive the core without sockets, clocks or randomness (quinn's protocol/IO split).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use serde_json::{json, Map, Value};

use vrouter_api::agent::{
    Advertise, Advertised, AgentList, Binding, Bound, RegisterAgent, Registered, Route, RouteList,
    Unbound, Withdraw, Withdrawn,
};
use vrouter_api::interface::InterfaceConfig;
use vrouter_api::watch::WatchReply;

use crate::agents::AgentState;
use crate::error::bad;
pub use crate::error::ApiError;
use crate::graph::{parse_ipam_subnet, Graph, IpamSubnet};
pub use crate::graph::{Obj, Ref};
use crate::limits;
use crate::schema::{is_read_only_key, Kind, ObjType};
use crate::store::{Batch, Journal, REV_KEY};
use crate::util;

/// Per-request inputs the core must not fetch itself.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Wall clock, microseconds since the Unix epoch (id_perms timestamps).
    pub now_us: u64,
    /// A fresh uuid4 the core uses if the request does not carry one.
    pub new_uuid: String,
    /// Base URL for hrefs, e.g. `http://127.0.0.1:8082`.
    pub base: String,
}

/// An address held by an instance-ip or floating-ip in a virtual network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Claim<'a> {
    vn: &'a str,
    addr: u32,
}

/// Options for rendering one object.
#[derive(Debug, Clone, Default)]
pub struct ReadOpts {
    /// Leave out `<t>_back_refs`.
    pub exclude_back_refs: bool,
    /// Leave out child lists.
    pub exclude_children: bool,
    /// Only these fields (plus the identity fields) when set.
    pub fields: Option<BTreeSet<String>>,
}

/// Collection query (`GET /<type>s` parameters).
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// `parent_id`: keep objects whose parent is one of these.
    pub parent_ids: Option<BTreeSet<String>>,
    /// `parent_fq_name_str` + `parent_type`.
    pub parent_fq: Option<(Option<ObjType>, Vec<String>)>,
    /// `back_ref_id`: keep objects that refer to one of these.
    pub back_ref_ids: Option<BTreeSet<String>>,
    /// `obj_uuids`.
    pub obj_uuids: Option<BTreeSet<String>>,
    /// `detail=true`.
    pub detail: bool,
    /// `count=true`.
    pub count: bool,
    /// `fields=a,b`.
    pub fields: Option<BTreeSet<String>>,
    /// `exclude_hrefs`.
    pub exclude_hrefs: bool,
}

/// Objects created at first start (§7.5), as (type, fq_name).
pub const DEFAULT_OBJECTS: &[(ObjType, &[&str])] = &[
    (
        ObjType::GlobalSystemConfig,
        &["default-global-system-config"],
    ),
    (ObjType::Domain, &["default-domain"]),
    (ObjType::Project, &["default-domain", "default-project"]),
    (
        ObjType::NetworkIpam,
        &["default-domain", "default-project", "default-network-ipam"],
    ),
    (
        ObjType::NetworkPolicy,
        &[
            "default-domain",
            "default-project",
            "default-network-policy",
        ],
    ),
    (
        ObjType::VirtualNetwork,
        &[
            "default-domain",
            "default-project",
            "default-virtual-network",
        ],
    ),
    (
        ObjType::VirtualNetwork,
        &["default-domain", "default-project", "ip-fabric"],
    ),
    (
        ObjType::VirtualNetwork,
        &["default-domain", "default-project", "__link_local__"],
    ),
    // Where provision_mx.py / provision_bgp.py create gateway bgp-router objects.
    (
        ObjType::RoutingInstance,
        &[
            "default-domain",
            "default-project",
            "ip-fabric",
            "__default__",
        ],
    ),
];

/// The whole configuration state.
#[derive(Debug, Default)]
pub struct Core {
    graph: Graph,
    /// vn uuid → address → owner uuid.
    addrs: HashMap<String, HashMap<u32, String>>,
    /// owner uuid → (vn uuid, address).
    claims: HashMap<String, (String, u32)>,
    /// Revision of the last mutation (persisted as the store's `meta/rev`) and queued writes.
    journal: Journal,
    agents: AgentState,
}

/// Store key of an object.
pub fn obj_key(uuid: &str) -> String {
    format!("obj/{uuid}")
}

/// Error while rebuilding the state from stored records.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A record did not parse.
    #[error("corrupt record {key}: {source}")]
    Corrupt {
        /// The record's key.
        key: String,
        /// Why it did not parse.
        source: serde_json::Error,
    },
}

impl Core {
    /// An empty state (no defaults; see [`Core::bootstrap`]).
    pub fn new() -> Core {
        Core::default()
    }

    /// Rebuilds the state from every stored record.
    pub fn load<I>(records: I) -> Result<Core, LoadError>
    where
        I: IntoIterator<Item = (String, Vec<u8>)>,
    {
        let mut core = Core::new();
        let corrupt = |key: &str, source| LoadError::Corrupt {
            key: key.to_string(),
            source,
        };
        for (key, val) in records {
            if key.starts_with("obj/") {
                let o: Obj = serde_json::from_slice(&val).map_err(|e| corrupt(&key, e))?;
                core.graph.index(o);
            } else if key == REV_KEY {
                core.journal =
                    Journal::at(serde_json::from_slice(&val).map_err(|e| corrupt(&key, e))?);
            } else {
                core.agents
                    .load_record(&key, &val)
                    .map_err(|e| corrupt(&key, e))?;
            }
        }
        // Claims need every object indexed first (a floating-ip finds its VN via the pool).
        let owners: Vec<String> = core
            .graph
            .objs
            .values()
            .filter(|o| matches!(o.ty, ObjType::InstanceIp | ObjType::FloatingIp))
            .map(|o| o.uuid.clone())
            .collect();
        for u in owners {
            if let Some(c) = core
                .graph
                .objs
                .get(&u)
                .and_then(|o| core.claim_of(o).ok().flatten())
            {
                let c = (c.vn.to_string(), c.addr);
                core.addrs
                    .entry(c.0.clone())
                    .or_default()
                    .insert(c.1, u.clone());
                core.claims.insert(u, c);
            }
        }
        Ok(core)
    }

    /// Creates the default objects that are missing (first start).
    pub fn bootstrap(&mut self, ctx: &Ctx, mut fresh: impl FnMut() -> String) {
        for (ty, fq) in DEFAULT_OBJECTS {
            let fq: Vec<String> = fq.iter().map(|s| s.to_string()).collect();
            if self.graph.by_fq.contains_key(&(*ty, fq.clone())) {
                continue;
            }
            let mut inner = json!({ "fq_name": fq });
            if *ty == ObjType::VirtualNetwork && fq[2] == "default-virtual-network" {
                inner["network_ipam_refs"] = json!([]);
            }
            let ctx = Ctx {
                new_uuid: fresh(),
                ..ctx.clone()
            };
            let body = json!({ ty.name(): inner });
            if let Err(e) = self.create(*ty, &body, &ctx) {
                log::error!("creating default {} {:?}: {e}", ty.name(), fq);
            }
        }
    }

    /// The config objects, read-only (the BGP speaker reads peers and networks from them).
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Current revision.
    pub fn rev(&self) -> u64 {
        self.journal.rev()
    }

    /// Number of stored objects.
    pub fn len(&self) -> usize {
        self.graph.len()
    }

    /// True when no object is stored.
    pub fn is_empty(&self) -> bool {
        self.graph.is_empty()
    }

    /// Takes the writes queued since the last call (the caller persists them).
    pub fn take_batch(&mut self) -> Batch {
        self.journal.take()
    }

    fn persist(&mut self, uuid: &str) {
        let val = self
            .graph
            .objs
            .get(uuid)
            .map(|o| serde_json::to_vec(o).unwrap_or_default());
        self.journal.queue(obj_key(uuid), val);
    }

    /// Looks an object up by uuid.
    pub fn get(&self, uuid: &str) -> Option<&Obj> {
        self.graph.get(uuid)
    }

    /// Looks a uuid up by type and fq_name.
    pub fn lookup(&self, ty: ObjType, fq: &[String]) -> Option<&str> {
        self.graph.lookup(ty, fq)
    }

    fn get_typed(&self, ty: ObjType, uuid: &str) -> Result<&Obj, ApiError> {
        self.graph.get_typed(ty, uuid)
    }

    fn set_claim(&mut self, owner: &str, claim: Option<(String, u32)>) {
        if let Some((vn, a)) = self.claims.remove(owner) {
            if let Some(m) = self.addrs.get_mut(&vn) {
                m.remove(&a);
            }
        }
        if let Some((vn, a)) = claim {
            self.addrs
                .entry(vn.clone())
                .or_default()
                .insert(a, owner.to_string());
            self.claims.insert(owner.to_string(), (vn, a));
        }
    }

    // ---- parsing ---------------------------------------------------------------------------

    fn envelope(ty: ObjType, body: &Value) -> Result<&Map<String, Value>, ApiError> {
        body.get(ty.name())
            .or_else(|| body.get(ty.key()))
            .and_then(Value::as_object)
            .ok_or_else(|| bad(format!("body must be {{\"{}\": {{...}}}}", ty.name())))
    }

    fn parse_refs(
        &self,
        ty: ObjType,
        key: &str,
        val: &Value,
        missing: fn(String) -> ApiError,
    ) -> Result<(ObjType, Vec<Ref>), ApiError> {
        let target = key
            .strip_suffix("_refs")
            .and_then(ObjType::parse)
            .filter(|t| ty.ref_types().contains(t))
            .ok_or_else(|| bad(format!("unknown reference field {key} for {}", ty.name())))?;
        let list = match val {
            Value::Null => return Ok((target, Vec::new())),
            Value::Array(a) => a,
            _ => return Err(bad(format!("{key} must be a list"))),
        };
        let mut out = Vec::with_capacity(list.len());
        for r in list {
            let r = r
                .as_object()
                .ok_or_else(|| bad(format!("{key} entries must be objects")))?;
            let to = match r.get("to") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    parse_fq(v)
                        .ok_or_else(|| bad(format!("{key}.to must be a list of strings")))?,
                ),
            };
            let uuid = match (&to, r.get("uuid").and_then(Value::as_str)) {
                (Some(to), _) => self.lookup(target, to).map(str::to_string).ok_or_else(|| {
                    missing(format!(
                        "Reference to {} {} not found",
                        target.name(),
                        to.join(":")
                    ))
                })?,
                (None, Some(u)) => {
                    self.get_typed(target, u).map_err(|_| {
                        missing(format!("Reference to {} {u} not found", target.name()))
                    })?;
                    u.to_string()
                }
                (None, None) => return Err(bad(format!("{key} entry needs \"to\" or \"uuid\""))),
            };
            let to = match to {
                Some(t) => t,
                None => self
                    .graph
                    .objs
                    .get(&uuid)
                    .map(|o| o.fq_name.clone())
                    .unwrap_or_default(),
            };
            let attr = r.get("attr").cloned().unwrap_or(Value::Null);
            out.push(Ref { to, uuid, attr });
        }
        Ok((target, out))
    }

    fn check_prop(ty: ObjType, key: &str, val: &Value) -> Result<(), ApiError> {
        if let ("display_name", Value::String(n)) = (key, val) {
            limits::name(key, n)?;
        }
        let ok = match (ty.prop_kind(key), val) {
            (None, _) | (_, Value::Null) => true,
            (Some(Kind::Object), v) => v.is_object(),
            (Some(Kind::Str), v) => v.is_string(),
            (Some(Kind::Bool), v) => v.is_boolean(),
            (Some(Kind::Int), v) => v.is_i64() || v.is_u64(),
        };
        if ok {
            Ok(())
        } else {
            Err(bad(format!(
                "field {key} of {} has the wrong type",
                ty.name()
            )))
        }
    }

    /// Applies the body's properties and refs onto `o` (PUT semantics: present keys replace).
    fn merge_body(
        &self,
        o: &mut Obj,
        inner: &Map<String, Value>,
        missing: fn(String) -> ApiError,
    ) -> Result<(), ApiError> {
        for (k, v) in inner {
            if is_read_only_key(o.ty, k) {
                continue;
            }
            if k.ends_with("_refs") {
                let (t, refs) = self.parse_refs(o.ty, k, v, missing)?;
                o.refs.insert(t, refs);
            } else {
                Self::check_prop(o.ty, k, v)?;
                if v.is_null() {
                    o.props.remove(k);
                } else {
                    o.props.insert(k.clone(), v.clone());
                }
            }
        }
        Ok(())
    }

    // ---- type hooks ------------------------------------------------------------------------

    /// Validates a VN's subnets and fills `default_gateway` where absent (the server picks the
    /// last usable address, as the Contrail tutorial shows `.254` for a /24).
    fn hook_vn(o: &mut Obj) -> Result<(), ApiError> {
        for r in o.refs.get_mut(&ObjType::NetworkIpam).into_iter().flatten() {
            let Some(subnets) = r.attr.get_mut("ipam_subnets") else {
                continue;
            };
            let Some(list) = subnets.as_array_mut() else {
                return Err(bad("ipam_subnets must be a list"));
            };
            for (i, s) in list.iter_mut().enumerate() {
                let sn = parse_ipam_subnet(s)?;
                limits::ipam_subnet(&format!("ipam_subnets[{i}]"), &sn)?;
                if sn.gateway.is_none() && sn.prefix.len < 31 {
                    let g = Ipv4Addr::from(util::host_range(&sn.prefix).1).to_string();
                    if let Some(m) = s.as_object_mut() {
                        m.insert("default_gateway".into(), Value::String(g));
                    }
                }
            }
        }
        Ok(())
    }

    /// Gives a new network the lowest unused `virtual_network_network_id` (1 and up) unless
    /// the client chose one, as Contrail's API server does: the BGP speaker's route
    /// distinguisher and default route target are made of it.
    fn assign_network_id(&self, o: &mut Obj) {
        const KEY: &str = "virtual_network_network_id";
        if o.props.get(KEY).is_some_and(Value::is_u64) {
            return;
        }
        let used: std::collections::BTreeSet<u64> = self
            .graph
            .of_type(ObjType::VirtualNetwork)
            .filter(|vn| vn.uuid != o.uuid)
            .filter_map(|vn| vn.props.get(KEY).and_then(Value::as_u64))
            .collect();
        let id = (1u64..).find(|i| !used.contains(i)).unwrap_or(1);
        o.props.insert(KEY.into(), json!(id));
    }

    /// The VN an address-holding object draws from.
    fn claim_vn<'a>(&'a self, o: &Obj) -> Result<Option<&'a Obj>, ApiError> {
        let vn_uuid = match o.ty {
            ObjType::InstanceIp => match o.first_ref(ObjType::VirtualNetwork) {
                Some(r) => r.uuid.clone(),
                None => return Ok(None),
            },
            ObjType::FloatingIp => {
                let pool = o
                    .parent_uuid
                    .as_deref()
                    .and_then(|p| self.graph.objs.get(p));
                match pool.and_then(|p| p.parent_uuid.clone()) {
                    Some(v) => v,
                    None => return Ok(None),
                }
            }
            _ => return Ok(None),
        };
        Ok(self.graph.objs.get(&vn_uuid))
    }

    fn addr_key(ty: ObjType) -> &'static str {
        if ty == ObjType::FloatingIp {
            "floating_ip_address"
        } else {
            "instance_ip_address"
        }
    }

    /// The address an existing object holds (used when reloading).
    fn claim_of<'a>(&'a self, o: &Obj) -> Result<Option<Claim<'a>>, ApiError> {
        let Some(vn) = self.claim_vn(o)? else {
            return Ok(None);
        };
        if vn.is_fabric_vn() {
            return Ok(None);
        }
        let addr = o.props.get(Self::addr_key(o.ty)).and_then(Value::as_str);
        Ok(addr
            .and_then(|a| a.parse::<Ipv4Addr>().ok())
            .map(|a| Claim {
                vn: &vn.uuid,
                addr: u32::from(a),
            }))
    }

    /// Decides the address of an instance-ip or floating-ip: the requested one if it is free
    /// and usable, else the lowest free one. Fills the property. No state change.
    fn allocate(&self, o: &mut Obj) -> Result<Option<(String, u32)>, ApiError> {
        let key = Self::addr_key(o.ty);
        let Some(vn) = self.claim_vn(o)? else {
            return match o.ty {
                ObjType::InstanceIp => Err(bad("instance-ip needs virtual_network_refs")),
                _ => Ok(None),
            };
        };
        if vn.is_fabric_vn() {
            // Contrail skips IPAM for ip-fabric and link-local: CloudStack's own addresses.
            return Ok(None);
        }
        let subnets = vn.vn_subnets();
        let taken = self.addrs.get(&vn.uuid);
        let free = |a: u32| {
            taken
                .and_then(|m| m.get(&a))
                .map_or(true, |owner| *owner == o.uuid)
        };
        let vn_name = vn.fq_name.join(":");
        // The gateway and the DNS server are never handed out.
        let reserved = |s: &IpamSubnet, a: u32| {
            s.gateway.map(u32::from) == Some(a) || s.dns.map(u32::from) == Some(a)
        };
        if let Some(req) = o.props.get(key).and_then(Value::as_str) {
            let a: Ipv4Addr = req
                .parse()
                .map_err(|_| bad(format!("{key} {req:?} is not an IPv4 address")))?;
            let a = u32::from(a);
            if !subnets.iter().any(|s| util::usable(&s.prefix, a)) {
                return Err(bad(format!(
                    "address {req} is not in a subnet of {vn_name}"
                )));
            }
            if subnets.iter().any(|s| reserved(s, a)) {
                return Err(ApiError::Conflict(format!(
                    "address {req} is reserved in {vn_name}"
                )));
            }
            if !free(a) {
                return Err(ApiError::Conflict(format!(
                    "address {req} already in use in {vn_name}"
                )));
            }
            return Ok(Some((vn.uuid.clone(), a)));
        }
        if subnets.is_empty() {
            return Err(bad(format!(
                "virtual network {vn_name} has no subnet to allocate from"
            )));
        }
        for s in &subnets {
            let (lo, hi) = util::host_range(&s.prefix);
            let mut a = lo;
            loop {
                if !reserved(s, a) && free(a) {
                    o.props
                        .insert(key.into(), Value::String(Ipv4Addr::from(a).to_string()));
                    return Ok(Some((vn.uuid.clone(), a)));
                }
                if a == hi {
                    break;
                }
                a += 1;
            }
        }
        Err(ApiError::Conflict(format!(
            "no free address left in {vn_name}"
        )))
    }

    /// Type-specific validation and server-side filling, before the object is stored.
    fn prepare(&self, o: &mut Obj) -> Result<Option<(String, u32)>, ApiError> {
        match o.ty {
            ObjType::VirtualNetwork => {
                Self::hook_vn(o)?;
                self.assign_network_id(o);
                Ok(None)
            }
            ObjType::VirtualMachineInterface => {
                let macs = o
                    .props
                    .get("virtual_machine_interface_mac_addresses")
                    .and_then(|m| m.get("mac_address"))
                    .and_then(Value::as_array);
                for (i, m) in macs.into_iter().flatten().enumerate() {
                    let field = format!("virtual_machine_interface_mac_addresses.mac_address[{i}]");
                    limits::vm_mac(&field, m)?;
                }
                let has_mac = macs.is_some_and(|a| !a.is_empty());
                if !has_mac {
                    o.props.insert(
                        "virtual_machine_interface_mac_addresses".into(),
                        json!({ "mac_address": [util::mac_from_uuid(&o.uuid)] }),
                    );
                }
                Ok(None)
            }
            ObjType::InstanceIp | ObjType::FloatingIp => self.allocate(o),
            _ => Ok(None),
        }
    }

    fn id_perms(ctx: &Ctx, uuid: &str, given: Option<&Value>, created: Option<&Value>) -> Value {
        let (hi, lo) = util::uuid_halves(uuid);
        let now = util::iso8601(ctx.now_us);
        let enable = given
            .and_then(|g| g.get("enable"))
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let desc = given
            .and_then(|g| g.get("description"))
            .cloned()
            .unwrap_or(Value::Null);
        json!({
            "permissions": {"owner": "cloud-admin", "owner_access": 7, "group": "cloud-admin-group",
                            "group_access": 7, "other_access": 7},
            "uuid": {"uuid_mslong": hi, "uuid_lslong": lo},
            "enable": enable,
            "created": created.cloned().unwrap_or_else(|| Value::String(now.clone())),
            "last_modified": now,
            "description": desc,
        })
    }

    // ---- operations ------------------------------------------------------------------------

    /// `POST /<type>s`.
    pub fn create(&mut self, ty: ObjType, body: &Value, ctx: &Ctx) -> Result<Value, ApiError> {
        let inner = Self::envelope(ty, body)?;
        let uuid = match inner.get("uuid") {
            None | Some(Value::Null) => ctx.new_uuid.clone(),
            Some(Value::String(u)) if util::is_uuid(u) => u.clone(),
            Some(u) => return Err(bad(format!("invalid uuid {u}"))),
        };
        if let Some(o) = self.graph.objs.get(&uuid) {
            return Err(ApiError::Conflict(format!(
                "uuid {uuid} already in use by {} {}",
                o.ty.name(),
                o.fq_name.join(":")
            )));
        }
        let fq_name = match inner.get("fq_name") {
            Some(v) if !v.is_null() => {
                parse_fq(v).ok_or_else(|| bad("fq_name must be a non-empty list of strings"))?
            }
            _ => {
                let name = inner
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("fq_name or name is required"))?;
                let mut fq: Vec<String> = default_parent_fq(ty)
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                fq.push(name.to_string());
                fq
            }
        };
        limits::fq_name(&fq_name)?;
        if let Some(u) = self.lookup(ty, &fq_name) {
            return Err(ApiError::Conflict(format!(
                "{} {} already exists with uuid: {u}",
                ty.name(),
                fq_name.join(":")
            )));
        }
        let (parent_type, parent_uuid, lenient) = self.resolve_parent(ty, inner, &fq_name)?;
        let mut o = Obj {
            ty,
            uuid: uuid.clone(),
            fq_name,
            parent_type,
            parent_uuid,
            lenient_parent: lenient,
            props: Map::new(),
            refs: BTreeMap::new(),
        };
        self.merge_body(&mut o, inner, ApiError::BadRequest)?;
        let claim = self.prepare(&mut o)?;
        o.props.insert(
            "id_perms".into(),
            Self::id_perms(ctx, &uuid, inner.get("id_perms"), None),
        );

        self.journal.bump();
        let mut reply = json!({
            "name": o.name(),
            "fq_name": o.fq_name,
            "uuid": uuid,
            "href": format!("{}/{}/{}", ctx.base, ty.name(), uuid),
        });
        if let Some(pt) = o.parent_type {
            reply["parent_type"] = json!(pt.name());
        }
        if let (Some(pt), Some(pu)) = (o.parent_type, &o.parent_uuid) {
            reply["parent_uuid"] = json!(pu);
            reply["parent_href"] = json!(format!("{}/{}/{}", ctx.base, pt.name(), pu));
        }
        self.graph.index(o);
        self.set_claim(&uuid, claim);
        self.persist(&uuid);
        self.agents
            .after_config_change(&self.graph, &mut self.journal, ty);
        Ok(json!({ ty.name(): reply }))
    }

    fn resolve_parent(
        &self,
        ty: ObjType,
        inner: &Map<String, Value>,
        fq: &[String],
    ) -> Result<(Option<ObjType>, Option<String>, bool), ApiError> {
        let given = match inner.get("parent_type") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s == "config-root" => None,
            Some(Value::String(s)) => {
                Some(ObjType::parse(s).ok_or_else(|| bad(format!("unknown parent_type {s}")))?)
            }
            Some(_) => return Err(bad("parent_type must be a string")),
        };
        let parent_fq = &fq[..fq.len() - 1];
        let missing = |pt: ObjType| {
            bad(format!(
                "Parent {} type {} does not exist",
                parent_fq.join(":"),
                pt.name()
            ))
        };
        match given {
            Some(pt) if ty.parents().contains(&pt) => {
                let u = self.lookup(pt, parent_fq).ok_or_else(|| missing(pt))?;
                Ok((Some(pt), Some(u.to_string()), false))
            }
            Some(pt) if ty.lenient_parents().contains(&pt) => {
                let u = self.lookup(pt, parent_fq).map(str::to_string);
                Ok((Some(pt), u, true))
            }
            Some(pt) => Err(bad(format!(
                "{} cannot be a parent of {}",
                pt.name(),
                ty.name()
            ))),
            None if parent_fq.is_empty() => {
                if ty.parent_optional() {
                    Ok((None, None, false))
                } else {
                    Err(bad(format!(
                        "{} needs a parent ({})",
                        ty.name(),
                        ty.parents()[0].name()
                    )))
                }
            }
            None => {
                for pt in ty.parents() {
                    if let Some(u) = self.lookup(*pt, parent_fq) {
                        return Ok((Some(*pt), Some(u.to_string()), false));
                    }
                }
                for pt in ty.lenient_parents() {
                    if let Some(u) = self.lookup(*pt, parent_fq) {
                        return Ok((Some(*pt), Some(u.to_string()), true));
                    }
                }
                match ty.parents().first() {
                    Some(pt) => Err(missing(*pt)),
                    None => Ok((None, None, false)),
                }
            }
        }
    }

    /// `GET /<type>/<uuid>`; returns the body and the ETag (`id_perms.last_modified`).
    pub fn read(
        &self,
        ty: ObjType,
        uuid: &str,
        opts: &ReadOpts,
        base: &str,
    ) -> Result<(Value, String), ApiError> {
        let o = self.get_typed(ty, uuid)?;
        let etag = o
            .props
            .get("id_perms")
            .and_then(|p| p.get("last_modified"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        Ok((json!({ ty.name(): self.render(o, opts, base) }), etag))
    }

    fn href(base: &str, ty: ObjType, uuid: &str) -> String {
        format!("{base}/{}/{uuid}", ty.name())
    }

    /// Full JSON form of an object.
    pub fn render(&self, o: &Obj, opts: &ReadOpts, base: &str) -> Value {
        let want = |k: &str| opts.fields.as_ref().map_or(true, |f| f.contains(k));
        let mut m = Map::new();
        m.insert("uuid".into(), json!(o.uuid));
        m.insert("name".into(), json!(o.name()));
        m.insert("fq_name".into(), json!(o.fq_name));
        m.insert("href".into(), json!(Self::href(base, o.ty, &o.uuid)));
        if let Some(pt) = o.parent_type {
            m.insert("parent_type".into(), json!(pt.name()));
            if let Some(pu) = &o.parent_uuid {
                m.insert("parent_uuid".into(), json!(pu));
                m.insert("parent_href".into(), json!(Self::href(base, pt, pu)));
            }
        }
        for (k, v) in &o.props {
            if want(k) {
                m.insert(k.clone(), v.clone());
            }
        }
        for (t, refs) in &o.refs {
            let k = format!("{}_refs", t.key());
            if !want(&k) {
                continue;
            }
            let list: Vec<Value> = refs
                .iter()
                .map(|r| json!({"to": r.to, "href": Self::href(base, *t, &r.uuid), "uuid": r.uuid, "attr": r.attr}))
                .collect();
            m.insert(k, Value::Array(list));
        }
        let explicit = |k: &str| opts.fields.as_ref().is_some_and(|f| f.contains(k));
        if let Some(froms) = self.graph.back_refs.get(&o.uuid) {
            let mut groups: BTreeMap<String, Vec<Value>> = BTreeMap::new();
            for f in froms {
                let Some(from) = self.graph.objs.get(f) else {
                    continue;
                };
                let k = format!("{}_back_refs", from.ty.key());
                if (opts.exclude_back_refs && !explicit(&k)) || !want(&k) {
                    continue;
                }
                let attr = from
                    .refs
                    .get(&o.ty)
                    .and_then(|rs| rs.iter().find(|r| r.uuid == o.uuid))
                    .map(|r| r.attr.clone())
                    .unwrap_or(Value::Null);
                groups.entry(k).or_default().push(json!({
                    "to": from.fq_name, "href": Self::href(base, from.ty, &from.uuid),
                    "uuid": from.uuid, "attr": attr,
                }));
            }
            m.extend(groups.into_iter().map(|(k, v)| (k, Value::Array(v))));
        }
        if let Some(kids) = self.graph.children.get(&o.uuid) {
            let mut groups: BTreeMap<String, Vec<Value>> = BTreeMap::new();
            for c in kids {
                let Some(child) = self.graph.objs.get(c) else {
                    continue;
                };
                let k = format!("{}s", child.ty.key());
                if (opts.exclude_children && !explicit(&k)) || !want(&k) {
                    continue;
                }
                groups.entry(k).or_default().push(json!({
                    "to": child.fq_name, "href": Self::href(base, child.ty, &child.uuid), "uuid": child.uuid,
                }));
            }
            m.extend(groups.into_iter().map(|(k, v)| (k, Value::Array(v))));
        }
        Value::Object(m)
    }

    /// `PUT /<type>/<uuid>`.
    pub fn update(
        &mut self,
        ty: ObjType,
        uuid: &str,
        body: &Value,
        ctx: &Ctx,
    ) -> Result<Value, ApiError> {
        let inner = Self::envelope(ty, body)?;
        let old = self.get_typed(ty, uuid)?;
        let mut o = old.clone();
        self.merge_body(&mut o, inner, ApiError::NotFound)?;
        self.replace(o, ctx)?;
        Ok(json!({ ty.name(): {"uuid": uuid, "href": Self::href(&ctx.base, ty, uuid)} }))
    }

    /// Validates and stores a modified version of an existing object.
    fn replace(&mut self, mut o: Obj, ctx: &Ctx) -> Result<(), ApiError> {
        let claim = self.prepare(&mut o)?;
        let created = o
            .props
            .get("id_perms")
            .and_then(|p| p.get("created"))
            .cloned();
        let given = o.props.get("id_perms").cloned();
        o.props.insert(
            "id_perms".into(),
            Self::id_perms(ctx, &o.uuid, given.as_ref(), created.as_ref()),
        );
        let (uuid, ty) = (o.uuid.clone(), o.ty);
        self.journal.bump();
        self.graph.unindex(&uuid);
        self.graph.index(o);
        self.set_claim(&uuid, claim);
        self.persist(&uuid);
        self.agents
            .after_config_change(&self.graph, &mut self.journal, ty);
        Ok(())
    }

    /// `DELETE /<type>/<uuid>`.
    pub fn delete(&mut self, ty: ObjType, uuid: &str) -> Result<(), ApiError> {
        let o = self.get_typed(ty, uuid)?;
        let mut cascade = Vec::new();
        if let Some(kids) = self.graph.children.get(uuid) {
            // A domain's auto-created, empty default-project goes with it (Contrail ignores the
            // default-named child in this check).
            let blocking: Vec<&Obj> = kids
                .iter()
                .filter_map(|k| self.graph.objs.get(k))
                .filter(|c| {
                    let default_child = ty == ObjType::Domain
                        && c.ty == ObjType::Project
                        && c.name() == "default-project"
                        && !self.graph.children.contains_key(&c.uuid)
                        && !self.graph.back_refs.contains_key(&c.uuid);
                    if default_child {
                        cascade.push(c.uuid.clone());
                    }
                    !default_child
                })
                .collect();
            if !blocking.is_empty() {
                let names: Vec<String> = blocking
                    .iter()
                    .map(|c| format!("{}/{}", c.ty.name(), c.uuid))
                    .collect();
                return Err(ApiError::Conflict(format!(
                    "Delete when children still present: {} {} has children {}",
                    ty.name(),
                    o.fq_name.join(":"),
                    names.join(", ")
                )));
            }
        }
        if let Some(froms) = self.graph.back_refs.get(uuid) {
            let names: Vec<String> = froms
                .iter()
                .filter_map(|f| self.graph.objs.get(f))
                .map(|f| format!("{}/{}", f.ty.name(), f.uuid))
                .collect();
            return Err(ApiError::Conflict(format!(
                "Back-References from {} still exist for {} {}",
                names.join(", "),
                ty.name(),
                o.fq_name.join(":")
            )));
        }
        self.journal.bump();
        for u in cascade
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(uuid))
        {
            self.graph.unindex(u);
            self.set_claim(u, None);
            self.persist(u);
        }
        if ty == ObjType::VirtualMachineInterface {
            self.agents.drop_routes_of_vmi(&mut self.journal, uuid);
        }
        self.agents
            .after_config_change(&self.graph, &mut self.journal, ty);
        Ok(())
    }

    /// `GET /<type>s`.
    pub fn list(&self, ty: ObjType, q: &ListQuery, base: &str) -> Result<Value, ApiError> {
        let parent_ids = match &q.parent_fq {
            Some((pt, fq)) => {
                let types: Vec<ObjType> = match pt {
                    Some(t) => vec![*t],
                    None => ty
                        .parents()
                        .iter()
                        .chain(ty.lenient_parents())
                        .copied()
                        .collect(),
                };
                let found: BTreeSet<String> = types
                    .iter()
                    .filter_map(|t| self.lookup(*t, fq))
                    .map(str::to_string)
                    .collect();
                Some(found)
            }
            None => q.parent_ids.clone(),
        };
        let empty = BTreeSet::new();
        let matches = self
            .graph
            .by_type
            .get(&ty)
            .unwrap_or(&empty)
            .iter()
            .filter_map(|u| self.graph.objs.get(u))
            .filter(|o| {
                parent_ids.as_ref().map_or(true, |p| {
                    o.parent_uuid.as_ref().is_some_and(|pu| p.contains(pu))
                }) && q.back_ref_ids.as_ref().map_or(true, |b| {
                    o.refs.values().flatten().any(|r| b.contains(&r.uuid))
                }) && q.obj_uuids.as_ref().map_or(true, |s| s.contains(&o.uuid))
            });
        let key = format!("{}s", ty.name());
        if q.count {
            return Ok(json!({ key: {"count": matches.count()} }));
        }
        let items: Vec<Value> = if q.detail {
            let opts = ReadOpts {
                exclude_back_refs: true,
                exclude_children: true,
                fields: None,
            };
            matches
                .map(|o| {
                    let mut v = self.render(o, &opts, base);
                    if let Some(f) = &q.fields {
                        // Detail already has props and refs; fields adds back-refs/children.
                        let extra = self.render(
                            o,
                            &ReadOpts {
                                fields: Some(f.clone()),
                                ..Default::default()
                            },
                            base,
                        );
                        if let (Some(m), Value::Object(e)) = (v.as_object_mut(), extra) {
                            m.extend(e);
                        }
                    }
                    if q.exclude_hrefs {
                        strip_hrefs(&mut v);
                    }
                    json!({ ty.name(): v })
                })
                .collect()
        } else {
            matches
                .map(|o| {
                    let mut v = json!({"href": Self::href(base, ty, &o.uuid), "fq_name": o.fq_name, "uuid": o.uuid});
                    if let Some(f) = &q.fields {
                        let extra = self.render(o, &ReadOpts { fields: Some(f.clone()), ..Default::default() }, base);
                        if let (Some(m), Value::Object(e)) = (v.as_object_mut(), extra) {
                            m.extend(e.into_iter().filter(|(k, _)| f.contains(k)));
                        }
                    }
                    if q.exclude_hrefs {
                        strip_hrefs(&mut v);
                    }
                    v
                })
                .collect()
        };
        Ok(json!({ key: items }))
    }

    /// `POST /fqname-to-id`.
    pub fn fqname_to_id(&self, body: &Value) -> Result<Value, ApiError> {
        let tyname = body
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("type is required"))?;
        let fq = body
            .get("fq_name")
            .and_then(parse_fq)
            .ok_or_else(|| bad("fq_name must be a list of strings"))?;
        let not_found = || ApiError::NotFound(format!("Name {} not found", fq.join(":")));
        let ty = ObjType::parse(tyname).ok_or_else(not_found)?;
        let u = self.lookup(ty, &fq).ok_or_else(not_found)?;
        Ok(json!({ "uuid": u }))
    }

    /// `POST /id-to-fqname`.
    pub fn id_to_fqname(&self, body: &Value) -> Result<Value, ApiError> {
        let u = body
            .get("uuid")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("uuid is required"))?;
        let o = self
            .graph
            .objs
            .get(u)
            .ok_or_else(|| ApiError::NotFound(format!("UUID {u} not found")))?;
        Ok(json!({ "fq_name": o.fq_name, "type": o.ty.name() }))
    }

    /// `POST /ref-update`.
    pub fn ref_update(&mut self, body: &Value, ctx: &Ctx) -> Result<Value, ApiError> {
        let field = |k: &str| body.get(k).and_then(Value::as_str);
        let ty = field("type").ok_or_else(|| bad("type is required"))?;
        let ty = ObjType::parse(ty).ok_or_else(|| bad(format!("unknown type {ty}")))?;
        let uuid = field("uuid").ok_or_else(|| bad("uuid is required"))?;
        let rt = field("ref-type").ok_or_else(|| bad("ref-type is required"))?;
        let rt = rt
            .strip_suffix("_refs")
            .or_else(|| rt.strip_suffix("-refs"))
            .unwrap_or(rt);
        let rt = ObjType::parse(rt)
            .filter(|t| ty.ref_types().contains(t))
            .ok_or_else(|| bad(format!("{} has no reference to {rt}", ty.name())))?;
        let op = field("operation").ok_or_else(|| bad("operation is required"))?;
        let add = match op {
            "ADD" | "add" => true,
            "DELETE" | "delete" => false,
            _ => return Err(bad(format!("operation {op} is not ADD or DELETE"))),
        };
        let obj = self.get_typed(ty, uuid)?;
        let target_uuid = match (
            field("ref-uuid"),
            body.get("ref-fq-name").and_then(parse_fq),
        ) {
            (Some(u), _) => {
                self.get_typed(rt, u)?;
                u.to_string()
            }
            (None, Some(fq)) => self
                .lookup(rt, &fq)
                .map(str::to_string)
                .ok_or_else(|| ApiError::NotFound(format!("Name {} not found", fq.join(":"))))?,
            (None, None) => {
                return Err(ApiError::NotFound(
                    "ref-uuid or ref-fq-name is required".into(),
                ))
            }
        };
        let mut o = obj.clone();
        let refs = o.refs.entry(rt).or_default();
        if add {
            let to = self
                .graph
                .objs
                .get(&target_uuid)
                .map(|t| t.fq_name.clone())
                .unwrap_or_default();
            let attr = body.get("attr").cloned().unwrap_or(Value::Null);
            match refs.iter_mut().find(|r| r.uuid == target_uuid) {
                Some(r) => r.attr = attr,
                None => refs.push(Ref {
                    to,
                    uuid: target_uuid,
                    attr,
                }),
            }
        } else {
            refs.retain(|r| r.uuid != target_uuid);
        }
        self.replace(o, ctx)?;
        Ok(json!({ "uuid": uuid }))
    }

    /// The `GET /` homepage: the Python client learns every URI from these links.
    pub fn homepage(base: &str) -> Value {
        let mut links = vec![json!({"link": {"href": base, "name": "root", "rel": "root"}})];
        for t in ObjType::ALL {
            links.push(json!({"link": {"href": format!("{base}/{}", t.plural()), "name": t.name(), "rel": "collection"}}));
            links.push(json!({"link": {"href": format!("{base}/{}", t.name()), "name": t.name(), "rel": "resource-base"}}));
        }
        for (name, path) in [
            ("name-to-id", "fqname-to-id"),
            ("id-to-name", "id-to-fqname"),
            ("ref-update", "ref-update"),
            ("ref-relax-for-delete", "ref-relax-for-delete"),
            ("prop-collection-update", "prop-collection-update"),
            ("list-bulk-collection", "list-bulk-collection"),
        ] {
            links.push(
                json!({"link": {"href": format!("{base}/{path}"), "name": name, "rel": "action"}}),
            );
        }
        links.push(json!({"link": {"href": format!("{base}/vrouter"), "name": "vrouter-agent-api", "rel": "documentation"}}));
        json!({ "href": base, "links": links })
    }
}

/// The agent API: the state lives in [`AgentState`]; the core lends it the objects (read-only)
/// and the journal, so agent writes share the revision and the batch of the config writes.
impl Core {
    /// Records that an agent was heard from at `now_us` (lease renewal).
    pub fn touch_agent(&mut self, host: &str, now_us: u64) {
        self.agents.touch(host, now_us);
    }

    /// How many tombstones each host's view keeps (see [`crate::agents::TombstoneLimit`]).
    pub fn view_tombstones(&self) -> usize {
        self.agents.tombstone_limit.0
    }

    /// Sets [`Core::view_tombstones`]; it applies from the next change of each view.
    pub fn set_view_tombstones(&mut self, n: usize) {
        self.agents.tombstone_limit = crate::agents::TombstoneLimit(n);
    }

    /// Starts every agent's lease at `now_us` (after a load: leases are not persisted).
    pub fn touch_all_agents(&mut self, now_us: u64) {
        self.agents.touch_all(now_us);
    }

    /// `POST /vrouter/agents`.
    pub fn register_agent(
        &mut self,
        req: &RegisterAgent,
        now_us: u64,
    ) -> Result<Registered, ApiError> {
        self.agents
            .register(&self.graph, &mut self.journal, req, now_us)
    }

    /// `DELETE /vrouter/agents/<host>`.
    pub fn deregister_agent(&mut self, host: &str) -> Result<(), ApiError> {
        self.agents.deregister(&self.graph, &mut self.journal, host)
    }

    /// Expires agents not heard from since `now_us - ttl_us`; returns their names.
    pub fn expire_agents(&mut self, now_us: u64, ttl_us: u64) -> Vec<String> {
        self.agents
            .expire(&self.graph, &mut self.journal, now_us, ttl_us)
    }

    /// `GET /vrouter/agents`.
    pub fn list_agents(&self) -> AgentList {
        self.agents.list()
    }

    /// `POST /vrouter/bindings`.
    pub fn bind(&mut self, req: &Binding) -> Result<Bound, ApiError> {
        self.agents.bind(&self.graph, &mut self.journal, req)
    }

    /// `DELETE /vrouter/bindings`.
    pub fn unbind(&mut self, req: &Binding) -> Result<Unbound, ApiError> {
        self.agents.unbind(&self.graph, &mut self.journal, req)
    }

    /// `POST /vrouter/routes`.
    pub fn advertise(&mut self, req: &Advertise) -> Result<Advertised, ApiError> {
        self.agents.advertise(&self.graph, &mut self.journal, req)
    }

    /// `DELETE /vrouter/routes`.
    pub fn withdraw(&mut self, req: &Withdraw) -> Result<Withdrawn, ApiError> {
        self.agents.withdraw(&self.graph, &mut self.journal, req)
    }

    /// The routes learned from one BGP neighbour (`bgp:<address>`), replacing its previous set.
    pub fn set_gateway_routes(&mut self, origin: &str, routes: Vec<Route>) -> usize {
        self.agents
            .set_gateway_routes(&self.graph, &mut self.journal, origin, routes)
    }

    /// The neighbours that have routes here (`bgp:<address>`).
    pub fn gateway_origins(&self) -> std::collections::BTreeSet<String> {
        self.agents.gateway_origins()
    }

    /// `GET /vrouter/routes`, optionally of one VRF.
    pub fn list_routes(&self, vrf: Option<&str>) -> RouteList {
        self.agents.routes(vrf)
    }

    /// `GET /vrouter/interfaces/<vmi>`: `None` if the VMI does not exist.
    pub fn interface_config(&self, vmi: &str) -> Option<InterfaceConfig> {
        crate::interface::interface_config(&self.graph, vmi)
    }

    /// `GET /vrouter/watch?host=H&since=R` without waiting: the changes after `since`.
    pub fn watch(&self, host: &str, since: u64) -> Result<WatchReply, ApiError> {
        self.agents.watch(host, since, self.journal.rev())
    }
}

/// Parses a fq_name: a non-empty list of strings.
pub fn parse_fq(v: &Value) -> Option<Vec<String>> {
    let a = v.as_array()?;
    if a.is_empty() {
        return None;
    }
    a.iter().map(|s| s.as_str().map(str::to_string)).collect()
}

/// fq_name prefix used when a client sends only `name` (vnc_api's default parents).
fn default_parent_fq(ty: ObjType) -> &'static [&'static str] {
    match ty.parents().first() {
        Some(ObjType::Domain) => &["default-domain"],
        Some(ObjType::Project) => &["default-domain", "default-project"],
        _ => &[],
    }
}

fn strip_hrefs(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("href");
            m.remove("parent_href");
            m.values_mut().for_each(strip_hrefs);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_hrefs),
        _ => {}
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
