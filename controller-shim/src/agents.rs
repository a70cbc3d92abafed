// SPDX-License-Identifier: Apache-2.0
//! Route distribution: agents, interface bindings, advertised routes and per-host views.
//!
//! Each registered host has a *view*: a map from key to value holding exactly what its agent
//! must program — `iface/<vmi>` for every interface bound on the host and
//! `route/<vrf>/<prefix>/<origin>` for every live route another host advertised in a VRF this
//! host has interfaces in. After every mutation the views are recomputed and diffed; each
//! changed key gets the mutation's revision, a removed key becomes a tombstone. A watch with
//! `since=R` returns every key whose revision is above R (tombstones included), so a
//! reconnecting agent gets exactly what changed while it was away, collapsed to the latest
//! value per key. Tombstones are compacted past [`TOMBSTONE_LIMIT`]; an agent asking from
//! before the compaction point gets a full snapshot flagged `reset`.
//!
//! Views are persisted with their revisions, so resumption survives a shim restart.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::core::{ApiError, Core, Obj};
use crate::policy::{self, Peers};
use crate::schema::ObjType;
use crate::util::{self, Subnet};

/// Tombstones kept per host before compaction.
pub const TOMBSTONE_LIMIT: usize = 4096;

/// A registered agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    /// Host name the agent registered with.
    pub hostname: String,
    /// Underlay address other hosts tunnel to.
    pub fabric_ip: String,
}

/// A route an agent advertised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    /// Advertising host.
    pub host: String,
    /// VRF name (network fq_name joined with ':').
    pub vrf: String,
    /// IPv4 prefix `a.b.c.d/len`.
    pub prefix: String,
    /// MPLS label (20 bits) the origin host decapsulates to the interface.
    pub label: u32,
    /// Tunnel endpoint (the origin's fabric IP unless given).
    pub nexthop: String,
    /// Interface the route belongs to; withdrawn with it.
    #[serde(default)]
    pub vmi_uuid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ViewEntry {
    rev: u64,
    value: Option<Value>,
}

#[derive(Debug, Clone, Default)]
struct View {
    entries: BTreeMap<String, ViewEntry>,
    /// Tombstones at or below this revision are gone.
    compacted: u64,
}

/// Agent-side state held by [`Core`].
#[derive(Debug, Default)]
pub struct AgentState {
    agents: BTreeMap<String, Agent>,
    /// host → bound VMI uuids.
    bindings: BTreeMap<String, BTreeSet<String>>,
    /// vrf → (host, prefix) → route.
    routes: BTreeMap<String, BTreeMap<(String, String), Route>>,
    views: HashMap<String, View>,
    /// host → last time it was heard from (not persisted; reset at load).
    last_seen: HashMap<String, u64>,
}

#[derive(Serialize, Deserialize)]
struct BindingRec {
    host: String,
    vmi_uuid: String,
}

#[derive(Serialize, Deserialize)]
struct ViewRec {
    host: String,
    key: String,
    rev: u64,
    value: Option<Value>,
}

#[derive(Serialize, Deserialize)]
struct ViewMetaRec {
    host: String,
    compacted: u64,
}

fn agent_key(host: &str) -> String {
    format!("agent/{host}")
}
fn binding_key(host: &str, vmi: &str) -> String {
    format!("bind/{host}/{vmi}")
}
fn route_key(r: &Route) -> String {
    format!("route/{}/{}/{}", r.host, r.vrf, r.prefix)
}
fn view_key(host: &str, key: &str) -> String {
    format!("view/{host}/{key}")
}
fn vmeta_key(host: &str) -> String {
    format!("vmeta/{host}")
}

impl AgentState {
    /// Loads one persisted record (agent, binding, route or view entry).
    pub(crate) fn load_record(&mut self, key: &str, val: &[u8]) -> Result<(), serde_json::Error> {
        if key.starts_with("agent/") {
            let a: Agent = serde_json::from_slice(val)?;
            self.views.entry(a.hostname.clone()).or_default();
            self.agents.insert(a.hostname.clone(), a);
        } else if key.starts_with("bind/") {
            let b: BindingRec = serde_json::from_slice(val)?;
            self.bindings.entry(b.host).or_default().insert(b.vmi_uuid);
        } else if key.starts_with("route/") {
            let r: Route = serde_json::from_slice(val)?;
            self.routes
                .entry(r.vrf.clone())
                .or_default()
                .insert((r.host.clone(), r.prefix.clone()), r);
        } else if key.starts_with("view/") {
            let v: ViewRec = serde_json::from_slice(val)?;
            let view = self.views.entry(v.host).or_default();
            view.entries.insert(
                v.key,
                ViewEntry {
                    rev: v.rev,
                    value: v.value,
                },
            );
        } else if key.starts_with("vmeta/") {
            let m: ViewMetaRec = serde_json::from_slice(val)?;
            self.views.entry(m.host).or_default().compacted = m.compacted;
        } else {
            log::warn!("ignoring unknown stored record {key}");
        }
        Ok(())
    }
}

/// Reply to a watch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WatchReply {
    /// Revision to resume from next time.
    pub rev: u64,
    /// True when `events` is a full snapshot replacing everything the agent holds.
    pub reset: bool,
    /// Changes after `since`, in revision order.
    pub events: Vec<Value>,
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// What policy resolution needs about every network, computed once per view refresh.
#[derive(Debug, Default)]
pub(crate) struct PolicyCtx {
    /// VRF name -> the network's IPAM subnets (`a.b.c.d/n`).
    known: BTreeMap<String, Vec<String>>,
    /// VRF name -> what its attached policies' pass rules name.
    peers: BTreeMap<String, Peers>,
    /// Networks an `any` pass rule reaches (with subnets, not ip-fabric / link-local).
    eligible: BTreeSet<String>,
}

fn field<'a>(body: &'a Value, k: &str) -> Result<&'a str, ApiError> {
    body.get(k)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::BadRequest(format!("{k} is required")))
}

impl Core {
    fn require_agent(&self, host: &str) -> Result<&Agent, ApiError> {
        self.agents
            .agents
            .get(host)
            .ok_or_else(|| ApiError::NotFound(format!("agent {host} is not registered")))
    }

    /// Records that an agent was heard from at `now_us` (lease renewal).
    pub fn touch_agent(&mut self, host: &str, now_us: u64) {
        if self.agents.agents.contains_key(host) {
            self.agents.last_seen.insert(host.to_string(), now_us);
        }
    }

    /// Starts every agent's lease at `now_us` (after a load: leases are not persisted).
    pub fn touch_all_agents(&mut self, now_us: u64) {
        let hosts: Vec<String> = self.agents.agents.keys().cloned().collect();
        for h in hosts {
            self.agents.last_seen.insert(h, now_us);
        }
    }

    /// `POST /vrouter/agents` {hostname, fabric_ip}.
    pub fn register_agent(&mut self, body: &Value, now_us: u64) -> Result<Value, ApiError> {
        let hostname = field(body, "hostname")?.to_string();
        let fabric_ip = field(body, "fabric_ip")?;
        fabric_ip.parse::<std::net::Ipv4Addr>().map_err(|_| {
            ApiError::BadRequest(format!("fabric_ip {fabric_ip:?} is not an IPv4 address"))
        })?;
        if hostname.contains('/') {
            return Err(ApiError::BadRequest("hostname must not contain '/'".into()));
        }
        let agent = Agent {
            hostname: hostname.clone(),
            fabric_ip: fabric_ip.to_string(),
        };
        if self.agents.agents.get(&hostname) != Some(&agent) {
            self.bump();
            self.queue(agent_key(&hostname), Some(to_json(&agent)));
            // A new fabric IP changes the nexthop of routes that defaulted to the old one.
            let old = self.agents.agents.insert(hostname.clone(), agent);
            if let Some(old) = old {
                let mut changed = Vec::new();
                for r in self.agents.routes.values_mut().flat_map(|m| m.values_mut()) {
                    if r.host == hostname && r.nexthop == old.fabric_ip {
                        r.nexthop = fabric_ip.to_string();
                        changed.push(r.clone());
                    }
                }
                for r in changed {
                    self.queue(route_key(&r), Some(to_json(&r)));
                }
            }
            self.agents.views.entry(hostname.clone()).or_default();
            self.refresh_views();
        }
        self.touch_agent(&hostname, now_us);
        Ok(json!({"hostname": hostname, "fabric_ip": fabric_ip, "rev": self.rev}))
    }

    /// `DELETE /vrouter/agents/<host>`: withdraws its routes, bindings and view.
    pub fn deregister_agent(&mut self, host: &str) -> Result<(), ApiError> {
        self.require_agent(host)?;
        self.bump();
        self.agents.agents.remove(host);
        self.agents.last_seen.remove(host);
        self.queue(agent_key(host), None);
        for vmi in self.agents.bindings.remove(host).unwrap_or_default() {
            self.queue(binding_key(host, &vmi), None);
        }
        let mut gone = Vec::new();
        for m in self.agents.routes.values_mut() {
            m.retain(|_, r| {
                let keep = r.host != host;
                if !keep {
                    gone.push(route_key(r));
                }
                keep
            });
        }
        self.agents.routes.retain(|_, m| !m.is_empty());
        for k in gone {
            self.queue(k, None);
        }
        if let Some(view) = self.agents.views.remove(host) {
            for k in view.entries.keys() {
                self.queue(view_key(host, k), None);
            }
            self.queue(vmeta_key(host), None);
        }
        self.refresh_views();
        Ok(())
    }

    /// Expires agents not heard from since `now_us - ttl_us`; returns their names.
    pub fn expire_agents(&mut self, now_us: u64, ttl_us: u64) -> Vec<String> {
        let stale: Vec<String> = self
            .agents
            .agents
            .keys()
            .filter(|h| {
                self.agents
                    .last_seen
                    .get(*h)
                    .map_or(true, |t| now_us.saturating_sub(*t) > ttl_us)
            })
            .cloned()
            .collect();
        for h in &stale {
            log::warn!("agent {h} lease expired; withdrawing its routes");
            let _ = self.deregister_agent(h);
        }
        stale
    }

    /// Registered agents.
    pub fn list_agents(&self) -> Value {
        let list: Vec<Value> = self
            .agents
            .agents
            .values()
            .map(|a| {
                let bound: Vec<&String> = self
                    .agents
                    .bindings
                    .get(&a.hostname)
                    .into_iter()
                    .flatten()
                    .collect();
                json!({"hostname": a.hostname, "fabric_ip": a.fabric_ip, "bindings": bound})
            })
            .collect();
        json!({ "agents": list })
    }

    /// `POST /vrouter/bindings` {host, vmi_uuid}: the agent found this interface on its host.
    pub fn bind(&mut self, body: &Value) -> Result<Value, ApiError> {
        let host = field(body, "host")?.to_string();
        let vmi = field(body, "vmi_uuid")?.to_string();
        self.require_agent(&host)?;
        if !util::is_uuid(&vmi) {
            return Err(ApiError::BadRequest(format!(
                "vmi_uuid {vmi:?} is not a uuid"
            )));
        }
        let set = self.agents.bindings.entry(host.clone()).or_default();
        if set.insert(vmi.clone()) {
            self.bump();
            self.queue(
                binding_key(&host, &vmi),
                Some(to_json(&BindingRec {
                    host: host.clone(),
                    vmi_uuid: vmi.clone(),
                })),
            );
            self.refresh_views();
        }
        Ok(json!({"host": host, "vmi_uuid": vmi, "rev": self.rev}))
    }

    /// `DELETE /vrouter/bindings` {host, vmi_uuid}: the interface left the host; its routes
    /// from that host are withdrawn.
    pub fn unbind(&mut self, body: &Value) -> Result<Value, ApiError> {
        let host = field(body, "host")?.to_string();
        let vmi = field(body, "vmi_uuid")?.to_string();
        self.require_agent(&host)?;
        let removed = self
            .agents
            .bindings
            .get_mut(&host)
            .is_some_and(|s| s.remove(&vmi));
        if removed {
            self.bump();
            self.queue(binding_key(&host, &vmi), None);
            self.drop_routes_where(|r| {
                r.host == host && r.vmi_uuid.as_deref() == Some(vmi.as_str())
            });
            self.refresh_views();
        }
        Ok(json!({"removed": removed, "rev": self.rev}))
    }

    /// `POST /vrouter/routes` {host, vrf, prefix, label, nexthop?, vmi_uuid?}.
    pub fn advertise(&mut self, body: &Value) -> Result<Value, ApiError> {
        let host = field(body, "host")?.to_string();
        let vrf = field(body, "vrf")?.to_string();
        let prefix = field(body, "prefix")?;
        let sn = Subnet::parse_cidr(prefix)
            .ok_or_else(|| ApiError::BadRequest(format!("prefix {prefix:?} is not a.b.c.d/len")))?;
        let label = body
            .get("label")
            .and_then(Value::as_u64)
            .filter(|l| *l < (1 << 20))
            .ok_or_else(|| ApiError::BadRequest("label must be an integer below 2^20".into()))?;
        let agent = self.require_agent(&host)?;
        let nexthop = match body.get("nexthop").and_then(Value::as_str) {
            Some(n) => {
                n.parse::<std::net::Ipv4Addr>().map_err(|_| {
                    ApiError::BadRequest(format!("nexthop {n:?} is not an IPv4 address"))
                })?;
                n.to_string()
            }
            None => agent.fabric_ip.clone(),
        };
        let vmi_uuid = body
            .get("vmi_uuid")
            .and_then(Value::as_str)
            .map(str::to_string);
        let route = Route {
            host: host.clone(),
            vrf: vrf.clone(),
            prefix: sn.to_string(),
            label: label as u32,
            nexthop,
            vmi_uuid,
        };
        let slot = self.agents.routes.entry(vrf).or_default();
        let k = (host, route.prefix.clone());
        if slot.get(&k) != Some(&route) {
            slot.insert(k, route.clone());
            self.bump();
            self.queue(route_key(&route), Some(to_json(&route)));
            self.refresh_views();
        }
        Ok(json!({"route": route, "rev": self.rev}))
    }

    /// `DELETE /vrouter/routes` {host, vrf, prefix}.
    pub fn withdraw(&mut self, body: &Value) -> Result<Value, ApiError> {
        let host = field(body, "host")?.to_string();
        let vrf = field(body, "vrf")?.to_string();
        let prefix = field(body, "prefix")?;
        let prefix = Subnet::parse_cidr(prefix)
            .ok_or_else(|| ApiError::BadRequest(format!("prefix {prefix:?} is not a.b.c.d/len")))?
            .to_string();
        let removed = self
            .agents
            .routes
            .get_mut(&vrf)
            .and_then(|m| m.remove(&(host.clone(), prefix.clone())));
        if let Some(r) = &removed {
            if self.agents.routes.get(&vrf).is_some_and(|m| m.is_empty()) {
                self.agents.routes.remove(&vrf);
            }
            self.bump();
            self.queue(route_key(r), None);
            self.refresh_views();
        }
        Ok(json!({"withdrawn": removed.is_some(), "rev": self.rev}))
    }

    /// All routes, optionally of one VRF (inspection).
    pub fn list_routes(&self, vrf: Option<&str>) -> Value {
        let list: Vec<&Route> = self
            .agents
            .routes
            .iter()
            .filter(|(v, _)| vrf.map_or(true, |f| f == v.as_str()))
            .flat_map(|(_, m)| m.values())
            .collect();
        json!({ "routes": list })
    }

    fn drop_routes_where(&mut self, pred: impl Fn(&Route) -> bool) {
        let mut gone = Vec::new();
        for m in self.agents.routes.values_mut() {
            m.retain(|_, r| {
                let hit = pred(r);
                if hit {
                    gone.push(route_key(r));
                }
                !hit
            });
        }
        self.agents.routes.retain(|_, m| !m.is_empty());
        for k in gone {
            self.queue(k, None);
        }
    }

    /// A deleted interface takes its routes with it (the caller has bumped the revision).
    pub(crate) fn drop_routes_of_vmi(&mut self, vmi: &str) {
        self.drop_routes_where(|r| r.vmi_uuid.as_deref() == Some(vmi));
    }

    /// Hook after any config object changed: views depend on interfaces, IPs, networks,
    /// floating IPs and policies.
    pub(crate) fn after_config_change(&mut self, ty: ObjType) {
        if matches!(
            ty,
            ObjType::VirtualNetwork
                | ObjType::VirtualMachineInterface
                | ObjType::InstanceIp
                | ObjType::FloatingIp
                | ObjType::FloatingIpPool
                | ObjType::NetworkPolicy
                | ObjType::NetworkIpam
                | ObjType::VirtualMachine
        ) {
            self.refresh_views();
        }
    }

    /// The network-policies attached to `vn`, in `sequence` order (refs order for ties).
    fn attached_policies<'a>(&'a self, vn: &'a Obj) -> Vec<(&'a crate::core::Ref, &'a Obj)> {
        let mut v: Vec<_> = vn
            .refs
            .get(&ObjType::NetworkPolicy)
            .into_iter()
            .flatten()
            .filter_map(|r| self.objs.get(&r.uuid).map(|p| (r, p)))
            .collect();
        let seq = |r: &crate::core::Ref| {
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

    /// Policy context of the whole configuration (see [`crate::policy`]).
    pub(crate) fn policy_ctx(&self) -> PolicyCtx {
        let mut ctx = PolicyCtx::default();
        let vns: Vec<&Obj> = self
            .objs
            .values()
            .filter(|o| o.ty == ObjType::VirtualNetwork)
            .collect();
        for vn in &vns {
            let subnets: Vec<String> = Core::vn_subnets(vn)
                .iter()
                .map(|(s, _, _)| s.to_string())
                .collect();
            let vrf = vn.fq_name.join(":");
            if !subnets.is_empty() && !Core::is_fabric_vn(vn) {
                ctx.eligible.insert(vrf.clone());
            }
            ctx.known.insert(vrf, subnets);
        }
        for vn in &vns {
            let entries: Vec<&Value> = self
                .attached_policies(vn)
                .into_iter()
                .filter_map(|(_, p)| p.props.get("network_policy_entries"))
                .collect();
            if entries.is_empty() {
                continue;
            }
            let vrf = vn.fq_name.join(":");
            let p = policy::peers_of(&entries, &vrf, &ctx.known);
            ctx.peers.insert(vrf, p);
        }
        ctx
    }

    /// What an agent needs to program one interface, or `None` if the VMI does not exist.
    pub fn interface_config(&self, vmi: &str) -> Option<Value> {
        self.interface_config_with(vmi, &self.policy_ctx())
    }

    fn interface_config_with(&self, vmi: &str, pctx: &PolicyCtx) -> Option<Value> {
        let o = self
            .objs
            .get(vmi)
            .filter(|o| o.ty == ObjType::VirtualMachineInterface)?;
        let vn = o
            .first_ref(ObjType::VirtualNetwork)
            .and_then(|r| self.objs.get(&r.uuid));
        let subnets = vn.map(Core::vn_subnets).unwrap_or_default();
        let mac = o
            .props
            .get("virtual_machine_interface_mac_addresses")
            .and_then(|m| m.get("mac_address"))
            .and_then(|a| a.get(0))
            .cloned()
            .unwrap_or(Value::Null);
        let ip4 = |a: u32| std::net::Ipv4Addr::from(a).to_string();
        let mut ips = Vec::new();
        let mut fips = Vec::new();
        for from in self.back_refs.get(vmi).into_iter().flatten() {
            let Some(f) = self.objs.get(from) else {
                continue;
            };
            match f.ty {
                ObjType::InstanceIp => {
                    let addr = f.props.get("instance_ip_address").and_then(Value::as_str);
                    let parsed = addr
                        .and_then(|a| a.parse::<std::net::Ipv4Addr>().ok())
                        .map(u32::from);
                    let sub = parsed.and_then(|a| subnets.iter().find(|(s, _, _)| s.contains(a)));
                    ips.push(json!({
                        "uuid": f.uuid,
                        "address": addr,
                        "subnet": sub.map(|(s, _, _)| s.to_string()),
                        "prefix_len": sub.map(|(s, _, _)| s.len),
                        "gateway": sub.and_then(|(_, g, _)| g.map(ip4)),
                        "dns_server": sub.and_then(|(_, g, d)| d.or(*g).map(ip4)),
                    }));
                }
                ObjType::FloatingIp => {
                    let pool = f.parent_uuid.as_deref().and_then(|p| self.objs.get(p));
                    let pvn = pool
                        .and_then(|p| p.parent_uuid.as_deref())
                        .and_then(|v| self.objs.get(v));
                    fips.push(json!({
                        "uuid": f.uuid,
                        "address": f.props.get("floating_ip_address"),
                        "network_uuid": pvn.map(|v| v.uuid.clone()),
                        "vrf": pvn.map(|v| v.fq_name.join(":")),
                    }));
                }
                _ => {}
            }
        }
        let own_vrf = vn.map(|v| v.fq_name.join(":")).unwrap_or_default();
        let policies: Vec<Value> = vn
            .map(|v| self.attached_policies(v))
            .unwrap_or_default()
            .into_iter()
            .map(|(r, p)| {
                let entries = p.props.get("network_policy_entries");
                let rules = entries
                    .map(|e| policy::resolve_rules(e, &own_vrf, &pctx.known))
                    .unwrap_or_default();
                json!({"uuid": p.uuid, "fq_name": p.fq_name, "attr": r.attr,
                       "entries": entries, "rules": rules})
            })
            .collect();
        let connected: Vec<Value> = if vn.is_some() {
            policy::connected(&own_vrf, &pctx.peers, &pctx.eligible)
                .into_iter()
                .map(|v| {
                    let subnets = pctx.known.get(&v).cloned().unwrap_or_default();
                    json!({"vrf": v, "subnets": subnets})
                })
                .collect()
        } else {
            Vec::new()
        };
        let vm_uuid = match o.parent_type {
            Some(ObjType::VirtualMachine) => o.parent_uuid.clone(),
            _ => o.first_ref(ObjType::VirtualMachine).map(|r| r.uuid.clone()),
        };
        Some(json!({
            "uuid": o.uuid,
            "name": o.fq_name.last(),
            "fq_name": o.fq_name,
            "vm_uuid": vm_uuid,
            "mac": mac,
            "network": vn.map(|v| json!({"uuid": v.uuid, "fq_name": v.fq_name, "vrf": v.fq_name.join(":"),
                                          "subnets": subnets.iter().map(|(s, _, _)| s.to_string()).collect::<Vec<_>>()})),
            "ips": ips,
            "floating_ips": fips,
            "policies": policies,
            "connected": connected,
            "properties": o.props.get("virtual_machine_interface_properties"),
        }))
    }

    fn route_live(&self, r: &Route) -> bool {
        if !self.agents.agents.contains_key(&r.host) {
            return false;
        }
        match &r.vmi_uuid {
            Some(v) => {
                self.objs.contains_key(v)
                    && self
                        .agents
                        .bindings
                        .get(&r.host)
                        .is_some_and(|s| s.contains(v))
            }
            None => true,
        }
    }

    /// The view a host should hold now.
    fn desired_view(&self, host: &str, pctx: &PolicyCtx) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        let mut vrfs = BTreeSet::new();
        for vmi in self.agents.bindings.get(host).into_iter().flatten() {
            let Some(cfg) = self.interface_config_with(vmi, pctx) else {
                continue;
            };
            if let Some(v) = cfg.pointer("/network/vrf").and_then(Value::as_str) {
                vrfs.insert(v.to_string());
            }
            // Route leak: the routes of networks a policy connects to this one.
            for c in cfg
                .get("connected")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(v) = c.get("vrf").and_then(Value::as_str) {
                    vrfs.insert(v.to_string());
                }
            }
            for f in cfg
                .get("floating_ips")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(v) = f.get("vrf").and_then(Value::as_str) {
                    vrfs.insert(v.to_string());
                }
            }
            out.insert(format!("iface/{vmi}"), cfg);
        }
        for vrf in &vrfs {
            for ((origin, prefix), r) in self.agents.routes.get(vrf).into_iter().flatten() {
                if origin != host && self.route_live(r) {
                    out.insert(format!("route/{vrf}/{prefix}/{origin}"), json!(r));
                }
            }
        }
        out
    }

    /// Recomputes every host's view and records the differences at the current revision.
    pub(crate) fn refresh_views(&mut self) {
        let hosts: Vec<String> = self.agents.agents.keys().cloned().collect();
        let rev = self.rev;
        let pctx = self.policy_ctx();
        for host in hosts {
            let desired = self.desired_view(&host, &pctx);
            let mut writes = Vec::new();
            let view = self.agents.views.entry(host.clone()).or_default();
            for (k, v) in &desired {
                let same = view
                    .entries
                    .get(k)
                    .is_some_and(|e| e.value.as_ref() == Some(v));
                if !same {
                    let e = ViewEntry {
                        rev,
                        value: Some(v.clone()),
                    };
                    writes.push((k.clone(), e.clone()));
                    view.entries.insert(k.clone(), e);
                }
            }
            for (k, e) in view.entries.iter_mut() {
                if e.value.is_some() && !desired.contains_key(k) {
                    *e = ViewEntry { rev, value: None };
                    writes.push((k.clone(), e.clone()));
                }
            }
            let tombstones = view.entries.values().filter(|e| e.value.is_none()).count();
            let mut compacted = Vec::new();
            if tombstones > TOMBSTONE_LIMIT {
                view.compacted = rev;
                view.entries.retain(|k, e| {
                    if e.value.is_none() {
                        compacted.push(k.clone());
                    }
                    e.value.is_some()
                });
            }
            let compacted_rev = view.compacted;
            for (k, e) in writes {
                let rec = ViewRec {
                    host: host.clone(),
                    key: k.clone(),
                    rev: e.rev,
                    value: e.value,
                };
                self.queue(view_key(&host, &k), Some(to_json(&rec)));
            }
            if !compacted.is_empty() {
                for k in compacted {
                    self.queue(view_key(&host, &k), None);
                }
                let m = ViewMetaRec {
                    host: host.clone(),
                    compacted: compacted_rev,
                };
                self.queue(vmeta_key(&host), Some(to_json(&m)));
            }
        }
    }

    /// `GET /vrouter/watch?host=H&since=R` without waiting: the changes after `since`.
    pub fn watch(&self, host: &str, since: u64) -> Result<WatchReply, ApiError> {
        self.require_agent(host)?;
        let empty = View::default();
        let view = self.agents.views.get(host).unwrap_or(&empty);
        let reset = since == 0 || since < view.compacted || since > self.rev;
        let mut events: Vec<(u64, &String, &Option<Value>)> = view
            .entries
            .iter()
            .filter(|(_, e)| {
                if reset {
                    e.value.is_some()
                } else {
                    e.rev > since
                }
            })
            .map(|(k, e)| (e.rev, k, &e.value))
            .collect();
        events.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let events = events
            .into_iter()
            .map(|(rev, key, value)| {
                let kind = key.split('/').next().unwrap_or("");
                let kind = if kind == "iface" { "interface" } else { kind };
                json!({
                    "rev": rev, "kind": kind, "key": key,
                    "op": if value.is_some() { "put" } else { "delete" },
                    "value": value,
                })
            })
            .collect();
        Ok(WatchReply {
            rev: self.rev,
            reset,
            events,
        })
    }
}
