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
//! value per key. Tombstones are compacted past a [`TombstoneLimit`]; an agent asking from
//! before the compaction point gets a full snapshot flagged `reset`.
//!
//! Views are persisted with their revisions, so resumption survives a shim restart.
//!
//! [`AgentState`] is its own state: the config objects come in read-only ([`Graph`]) and the
//! writes go out through the shared [`Journal`], so nothing here reaches into the core.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use vrouter_api::agent::{
    Advertise, Advertised, AgentInfo, AgentList, Binding, Bound, RegisterAgent, Registered, Route,
    RouteList, Unbound, Withdraw, Withdrawn, GATEWAY_ORIGIN,
};
use vrouter_api::watch::{WatchEvent, WatchReply};
use vrouter_api::{Ipv4Prefix, Uuid};

use crate::error::{bad, ApiError};
use crate::graph::Graph;
use crate::interface::{self, PolicyCtx};
use crate::schema::ObjType;
use crate::store::Journal;
use vrouter_api::interface::InterfaceConfig;

/// Tombstones kept per host before compaction, by default (`--view-tombstones`).
pub const TOMBSTONE_LIMIT: usize = 4096;

/// How many tombstones a host's view keeps before it forgets them all. They are what lets a
/// reconnecting agent catch up without a full snapshot, and the only state that grows with
/// churn (a created, bound, unbound and deleted VM leaves one or two per host, about 0.5 kB
/// in all), so this bounds the shim's memory under churn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TombstoneLimit(pub usize);

impl Default for TombstoneLimit {
    fn default() -> Self {
        TombstoneLimit(TOMBSTONE_LIMIT)
    }
}

#[derive(Debug, Clone, PartialEq)]
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

/// Agents, their bindings, their routes and their views.
#[derive(Debug, Default)]
pub struct AgentState {
    /// Registered agents, stored as they registered (`agent/<host>`).
    agents: BTreeMap<String, RegisterAgent>,
    /// host → bound VMIs.
    bindings: BTreeMap<String, BTreeSet<Uuid>>,
    /// vrf → (host, prefix text) → route; the text keeps listings in their historic order.
    routes: BTreeMap<String, BTreeMap<(String, String), Route>>,
    views: HashMap<String, View>,
    /// host → last time it was heard from (not persisted; reset at load).
    last_seen: HashMap<String, u64>,
    /// When views compact (a setting, not persisted).
    pub(crate) tombstone_limit: TombstoneLimit,
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
fn binding_key(host: &str, vmi: &Uuid) -> String {
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

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// A stored agent-API record as its contract type. JSON that does not parse is corrupt (the
/// caller refuses the store); JSON the stricter types refuse (a route of an older shim naming
/// a `vmi_uuid` that is no UUID) is skipped with a warning rather than keeping the shim down.
fn typed<T: DeserializeOwned>(key: &str, val: &[u8]) -> Result<Option<T>, serde_json::Error> {
    let v: Value = serde_json::from_slice(val)?;
    match serde_json::from_value(v) {
        Ok(t) => Ok(Some(t)),
        Err(e) => {
            log::warn!("skipping stored record {key}: {e}");
            Ok(None)
        }
    }
}

/// A field the contract types as a string but the shim needs non-empty.
fn required(value: &str, name: &str) -> Result<(), ApiError> {
    if value.is_empty() {
        return Err(bad(format!("{name} is required")));
    }
    Ok(())
}

impl AgentState {
    /// Loads one persisted record (agent, binding, route or view entry).
    pub(crate) fn load_record(&mut self, key: &str, val: &[u8]) -> Result<(), serde_json::Error> {
        if key.starts_with("agent/") {
            if let Some(a) = typed::<RegisterAgent>(key, val)? {
                self.views.entry(a.hostname.clone()).or_default();
                self.agents.insert(a.hostname.clone(), a);
            }
        } else if key.starts_with("bind/") {
            if let Some(b) = typed::<Binding>(key, val)? {
                self.bindings.entry(b.host).or_default().insert(b.vmi_uuid);
            }
        } else if key.starts_with("route/") {
            if let Some(r) = typed::<Route>(key, val)? {
                self.routes
                    .entry(r.vrf.clone())
                    .or_default()
                    .insert((r.host.clone(), r.prefix.to_string()), r);
            }
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

    fn require_agent(&self, host: &str) -> Result<&RegisterAgent, ApiError> {
        self.agents
            .get(host)
            .ok_or_else(|| ApiError::NotFound(format!("agent {host} is not registered")))
    }

    /// Records that an agent was heard from at `now_us` (lease renewal).
    pub(crate) fn touch(&mut self, host: &str, now_us: u64) {
        if self.agents.contains_key(host) {
            self.last_seen.insert(host.to_string(), now_us);
        }
    }

    /// Starts every agent's lease at `now_us` (after a load: leases are not persisted).
    pub(crate) fn touch_all(&mut self, now_us: u64) {
        for h in self.agents.keys() {
            self.last_seen.insert(h.clone(), now_us);
        }
    }

    /// An agent announces itself; a new fabric IP moves the nexthops that defaulted to the old.
    pub(crate) fn register(
        &mut self,
        g: &Graph,
        j: &mut Journal,
        req: &RegisterAgent,
        now_us: u64,
    ) -> Result<Registered, ApiError> {
        let host = &req.hostname;
        required(host, "hostname")?;
        if host.contains('/') {
            return Err(bad("hostname must not contain '/'"));
        }
        if host.starts_with(GATEWAY_ORIGIN) {
            return Err(bad(format!(
                "hostname must not start with {GATEWAY_ORIGIN:?} (routes learned over BGP)"
            )));
        }
        if self.agents.get(host) != Some(req) {
            j.bump();
            j.queue(agent_key(host), Some(to_json(req)));
            if let Some(old) = self.agents.insert(host.clone(), req.clone()) {
                for r in self.routes.values_mut().flat_map(|m| m.values_mut()) {
                    if r.host == *host && r.nexthop == old.fabric_ip {
                        r.nexthop = req.fabric_ip;
                        j.queue(route_key(r), Some(to_json(r)));
                    }
                }
            }
            self.views.entry(host.clone()).or_default();
            self.refresh_views(g, j);
        }
        self.touch(host, now_us);
        Ok(Registered {
            hostname: host.clone(),
            fabric_ip: req.fabric_ip,
            rev: j.rev(),
        })
    }

    /// Removes an agent with its bindings, routes and view (its routes are withdrawn).
    pub(crate) fn deregister(
        &mut self,
        g: &Graph,
        j: &mut Journal,
        host: &str,
    ) -> Result<(), ApiError> {
        self.require_agent(host)?;
        j.bump();
        self.agents.remove(host);
        self.last_seen.remove(host);
        j.queue(agent_key(host), None);
        for vmi in self.bindings.remove(host).unwrap_or_default() {
            j.queue(binding_key(host, &vmi), None);
        }
        self.drop_routes_where(j, |r| r.host == host);
        if let Some(view) = self.views.remove(host) {
            for k in view.entries.keys() {
                j.queue(view_key(host, k), None);
            }
            j.queue(vmeta_key(host), None);
        }
        self.refresh_views(g, j);
        Ok(())
    }

    /// Expires agents not heard from since `now_us - ttl_us`; returns their names.
    pub(crate) fn expire(
        &mut self,
        g: &Graph,
        j: &mut Journal,
        now_us: u64,
        ttl_us: u64,
    ) -> Vec<String> {
        let stale: Vec<String> = self
            .agents
            .keys()
            .filter(|h| {
                self.last_seen
                    .get(*h)
                    .map_or(true, |t| now_us.saturating_sub(*t) > ttl_us)
            })
            .cloned()
            .collect();
        for h in &stale {
            log::warn!("agent {h} lease expired; withdrawing its routes");
            let _ = self.deregister(g, j, h);
        }
        stale
    }

    /// Registered agents with their bindings.
    pub(crate) fn list(&self) -> AgentList {
        let agents = self
            .agents
            .values()
            .map(|a| AgentInfo {
                hostname: a.hostname.clone(),
                fabric_ip: a.fabric_ip,
                bindings: self.bindings.get(&a.hostname).cloned().unwrap_or_default(),
            })
            .collect();
        AgentList { agents }
    }

    /// The agent found this interface on its host (the VMI may not exist yet).
    pub(crate) fn bind(
        &mut self,
        g: &Graph,
        j: &mut Journal,
        req: &Binding,
    ) -> Result<Bound, ApiError> {
        required(&req.host, "host")?;
        self.require_agent(&req.host)?;
        let set = self.bindings.entry(req.host.clone()).or_default();
        if set.insert(req.vmi_uuid) {
            j.bump();
            j.queue(binding_key(&req.host, &req.vmi_uuid), Some(to_json(req)));
            self.refresh_views(g, j);
        }
        Ok(Bound {
            host: req.host.clone(),
            vmi_uuid: req.vmi_uuid,
            rev: j.rev(),
        })
    }

    /// The interface left the host; that host's routes for it are withdrawn.
    pub(crate) fn unbind(
        &mut self,
        g: &Graph,
        j: &mut Journal,
        req: &Binding,
    ) -> Result<Unbound, ApiError> {
        required(&req.host, "host")?;
        self.require_agent(&req.host)?;
        let (host, vmi) = (&req.host, req.vmi_uuid);
        let removed = self.bindings.get_mut(host).is_some_and(|s| s.remove(&vmi));
        if removed {
            j.bump();
            j.queue(binding_key(host, &vmi), None);
            self.drop_routes_where(j, |r| r.host == *host && r.vmi_uuid == Some(vmi));
            self.refresh_views(g, j);
        }
        Ok(Unbound {
            removed,
            rev: j.rev(),
        })
    }

    /// Stores a route (host bits cleared, nexthop defaulting to the agent's fabric IP).
    pub(crate) fn advertise(
        &mut self,
        g: &Graph,
        j: &mut Journal,
        req: &Advertise,
    ) -> Result<Advertised, ApiError> {
        required(&req.host, "host")?;
        required(&req.vrf, "vrf")?;
        let agent = self.require_agent(&req.host)?;
        let prefix = Ipv4Prefix::truncating(req.prefix.addr, req.prefix.len).unwrap_or(req.prefix);
        let route = Route {
            host: req.host.clone(),
            vrf: req.vrf.clone(),
            prefix,
            label: req.label,
            nexthop: req.nexthop.unwrap_or(agent.fabric_ip),
            vmi_uuid: req.vmi_uuid,
            encap: None,
        };
        let slot = self.routes.entry(req.vrf.clone()).or_default();
        let k = (req.host.clone(), prefix.to_string());
        if slot.get(&k) != Some(&route) {
            slot.insert(k.clone(), route.clone());
            j.bump();
            j.queue(route_key(&route), Some(to_json(&route)));
            self.refresh_routes(g, j, &[(req.vrf.clone(), k)]);
        }
        Ok(Advertised {
            route,
            rev: j.rev(),
        })
    }

    /// Removes a route if it exists.
    pub(crate) fn withdraw(
        &mut self,
        g: &Graph,
        j: &mut Journal,
        req: &Withdraw,
    ) -> Result<Withdrawn, ApiError> {
        required(&req.host, "host")?;
        required(&req.vrf, "vrf")?;
        let prefix = Ipv4Prefix::truncating(req.prefix.addr, req.prefix.len).unwrap_or(req.prefix);
        let k = (req.host.clone(), prefix.to_string());
        let removed = self.routes.get_mut(&req.vrf).and_then(|m| m.remove(&k));
        if let Some(r) = &removed {
            if self.routes.get(&req.vrf).is_some_and(|m| m.is_empty()) {
                self.routes.remove(&req.vrf);
            }
            j.bump();
            j.queue(route_key(r), None);
            self.refresh_routes(g, j, &[(req.vrf.clone(), k)]);
        }
        Ok(Withdrawn {
            withdrawn: removed.is_some(),
            rev: j.rev(),
        })
    }

    /// Makes `routes` exactly the routes of `origin` (a BGP neighbour, `bgp:<address>`): what
    /// it no longer has is withdrawn, what changed is replaced, all in one revision. Returns
    /// how many routes changed. Two routes of one origin for one prefix in one VRF (two RDs
    /// imported into the same network) keep the first.
    pub(crate) fn set_gateway_routes(
        &mut self,
        g: &Graph,
        j: &mut Journal,
        origin: &str,
        routes: Vec<Route>,
    ) -> usize {
        let mut wanted: BTreeMap<(String, String), Route> = BTreeMap::new();
        for r in routes.into_iter().filter(|r| r.host == origin) {
            wanted
                .entry((r.vrf.clone(), r.prefix.to_string()))
                .or_insert(r);
        }
        let mut changes = Vec::new();
        for (vrf, m) in &self.routes {
            for ((host, prefix), r) in m {
                if host == origin && !wanted.contains_key(&(vrf.clone(), prefix.clone())) {
                    changes.push((vrf.clone(), prefix.clone(), None, r.clone()));
                }
            }
        }
        for ((vrf, prefix), r) in wanted {
            let k = (origin.to_string(), prefix.clone());
            if self.routes.get(&vrf).and_then(|m| m.get(&k)) != Some(&r) {
                changes.push((vrf, prefix, Some(r.clone()), r));
            }
        }
        if changes.is_empty() {
            return 0;
        }
        j.bump();
        for (vrf, prefix, new, old) in &changes {
            let slot = self.routes.entry(vrf.clone()).or_default();
            let k = (origin.to_string(), prefix.clone());
            match new {
                Some(r) => {
                    j.queue(route_key(r), Some(to_json(r)));
                    slot.insert(k, r.clone());
                }
                None => {
                    j.queue(route_key(old), None);
                    slot.remove(&k);
                }
            }
        }
        self.routes.retain(|_, m| !m.is_empty());
        let keys: Vec<(String, (String, String))> = changes
            .into_iter()
            .map(|(vrf, prefix, _, _)| (vrf, (origin.to_string(), prefix)))
            .collect();
        self.refresh_routes(g, j, &keys);
        keys.len()
    }

    /// The origins of every route learned over BGP (to purge those of a previous run).
    pub(crate) fn gateway_origins(&self) -> BTreeSet<String> {
        self.routes
            .values()
            .flat_map(|m| m.keys())
            .filter(|(h, _)| h.starts_with(GATEWAY_ORIGIN))
            .map(|(h, _)| h.clone())
            .collect()
    }

    /// All routes, optionally of one VRF (inspection).
    pub(crate) fn routes(&self, vrf: Option<&str>) -> RouteList {
        let routes = self
            .routes
            .iter()
            .filter(|(v, _)| vrf.map_or(true, |f| f == v.as_str()))
            .flat_map(|(_, m)| m.values().cloned())
            .collect();
        RouteList { routes }
    }

    fn drop_routes_where(&mut self, j: &mut Journal, pred: impl Fn(&Route) -> bool) {
        for m in self.routes.values_mut() {
            m.retain(|_, r| {
                let hit = pred(r);
                if hit {
                    j.queue(route_key(r), None);
                }
                !hit
            });
        }
        self.routes.retain(|_, m| !m.is_empty());
    }

    /// A deleted interface takes its routes with it (the caller has bumped the revision).
    pub(crate) fn drop_routes_of_vmi(&mut self, j: &mut Journal, vmi: &str) {
        // Routes name their VMI as a UUID; an object id that is none has no routes.
        if let Ok(vmi) = vmi.parse::<Uuid>() {
            self.drop_routes_where(j, |r| r.vmi_uuid == Some(vmi));
        }
    }

    /// Hook after any config object changed: views depend on interfaces, IPs, networks,
    /// floating IPs and policies.
    pub(crate) fn after_config_change(&mut self, g: &Graph, j: &mut Journal, ty: ObjType) {
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
            self.refresh_views(g, j);
        }
    }

    /// A route is live while its agent is registered and, if it names a VMI, while that VMI
    /// exists and is bound on the origin host.
    fn route_live(&self, g: &Graph, r: &Route) -> bool {
        if r.host.starts_with(GATEWAY_ORIGIN) {
            return true;
        }
        if !self.agents.contains_key(&r.host) {
            return false;
        }
        match &r.vmi_uuid {
            Some(v) => {
                g.get(&v.to_string()).is_some()
                    && self.bindings.get(&r.host).is_some_and(|s| s.contains(v))
            }
            None => true,
        }
    }

    /// The VRFs whose routes reach an interface: its network's, the networks a policy connects
    /// to it (route leak) and those of its floating IPs.
    fn vrfs_of(cfg: &InterfaceConfig, vrfs: &mut BTreeSet<String>) {
        vrfs.extend(cfg.vrf().map(str::to_string));
        vrfs.extend(cfg.connected.iter().map(|c| c.vrf.clone()));
        vrfs.extend(cfg.floating_ips.iter().filter_map(|f| f.vrf.clone()));
    }

    /// The VRFs whose routes a host receives.
    fn host_vrfs(&self, g: &Graph, host: &str, pctx: &PolicyCtx) -> BTreeSet<String> {
        let mut vrfs = BTreeSet::new();
        for vmi in self.bindings.get(host).into_iter().flatten() {
            if let Some(cfg) = interface::interface_config_with(g, &vmi.to_string(), pctx) {
                Self::vrfs_of(&cfg, &mut vrfs);
            }
        }
        vrfs
    }

    /// The value of `route/<vrf>/<prefix>/<origin>` in `host`'s view, if it has one.
    fn route_entry(&self, g: &Graph, host: &str, vrf: &str, k: &(String, String)) -> Option<Value> {
        let r = self.routes.get(vrf)?.get(k)?;
        if k.0 == host || !self.route_live(g, r) {
            return None;
        }
        serde_json::to_value(r).ok()
    }

    /// The view a host should hold now.
    fn desired_view(&self, g: &Graph, host: &str, pctx: &PolicyCtx) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        let mut vrfs = BTreeSet::new();
        for vmi in self.bindings.get(host).into_iter().flatten() {
            let Some(cfg) = interface::interface_config_with(g, &vmi.to_string(), pctx) else {
                continue;
            };
            Self::vrfs_of(&cfg, &mut vrfs);
            match serde_json::to_value(&cfg) {
                Ok(v) => {
                    out.insert(format!("iface/{vmi}"), v);
                }
                Err(e) => log::error!("interface {vmi}: {e}"),
            }
        }
        for vrf in &vrfs {
            for k in self.routes.get(vrf).into_iter().flatten().map(|(k, _)| k) {
                if let Some(v) = self.route_entry(g, host, vrf, k) {
                    out.insert(format!("route/{vrf}/{}/{}", k.1, k.0), v);
                }
            }
        }
        out
    }

    /// After routes changed (and nothing else): updates only their keys in each view, so a
    /// route costs the same with 10 routes or 100,000 in the table. `changed` holds
    /// (vrf, (origin, prefix)) as the route table keys them.
    fn refresh_routes(
        &mut self,
        g: &Graph,
        j: &mut Journal,
        changed: &[(String, (String, String))],
    ) {
        let hosts: Vec<String> = self.agents.keys().cloned().collect();
        let rev = j.rev();
        let pctx = interface::policy_ctx(g);
        for host in hosts {
            let vrfs = self.host_vrfs(g, &host, &pctx);
            let mut writes = Vec::new();
            for (vrf, k) in changed.iter().filter(|(v, _)| vrfs.contains(v)) {
                let want = self.route_entry(g, &host, vrf, k);
                let key = format!("route/{vrf}/{}/{}", k.1, k.0);
                let have = self
                    .views
                    .get(&host)
                    .and_then(|v| v.entries.get(&key))
                    .and_then(|e| e.value.as_ref());
                if have != want.as_ref() && (have.is_some() || want.is_some()) {
                    writes.push((key, ViewEntry { rev, value: want }));
                }
            }
            if writes.is_empty() {
                continue;
            }
            let tombstoned = writes.iter().any(|(_, e)| e.value.is_none());
            let view = self.views.entry(host.clone()).or_default();
            for (k, e) in writes {
                let rec = ViewRec {
                    host: host.clone(),
                    key: k.clone(),
                    rev: e.rev,
                    value: e.value.clone(),
                };
                j.queue(view_key(&host, &k), Some(to_json(&rec)));
                view.entries.insert(k, e);
            }
            if tombstoned {
                compact(j, &host, view, rev, self.tombstone_limit);
            }
        }
    }

    /// Recomputes every host's view and records the differences at the current revision.
    fn refresh_views(&mut self, g: &Graph, j: &mut Journal) {
        let hosts: Vec<String> = self.agents.keys().cloned().collect();
        let rev = j.rev();
        let pctx = interface::policy_ctx(g);
        for host in hosts {
            let desired = self.desired_view(g, &host, &pctx);
            let view = self.views.entry(host.clone()).or_default();
            let mut writes = Vec::new();
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
            for (k, e) in writes {
                let rec = ViewRec {
                    host: host.clone(),
                    key: k.clone(),
                    rev: e.rev,
                    value: e.value,
                };
                j.queue(view_key(&host, &k), Some(to_json(&rec)));
            }
            compact(j, &host, view, rev, self.tombstone_limit);
        }
    }

    /// The changes of `host`'s view after `since`, at revision `current`.
    pub(crate) fn watch(
        &self,
        host: &str,
        since: u64,
        current: u64,
    ) -> Result<WatchReply, ApiError> {
        self.require_agent(host)?;
        let empty = View::default();
        let view = self.views.get(host).unwrap_or(&empty);
        let reset = since == 0 || since < view.compacted || since > current;
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
            .filter_map(|(rev, key, value)| WatchEvent::new(rev, key, value.clone()))
            .collect();
        Ok(WatchReply {
            rev: current,
            reset,
            events,
        })
    }
}

/// Past `limit` tombstones a view forgets them; a watch from before gets a reset.
fn compact(j: &mut Journal, host: &str, view: &mut View, rev: u64, limit: TombstoneLimit) {
    let tombstones = view.entries.values().filter(|e| e.value.is_none()).count();
    if tombstones <= limit.0 {
        return;
    }
    view.compacted = rev;
    let mut gone = Vec::new();
    view.entries.retain(|k, e| {
        if e.value.is_none() {
            gone.push(k.clone());
        }
        e.value.is_some()
    });
    for k in gone {
        j.queue(view_key(host, &k), None);
    }
    let m = ViewMetaRec {
        host: host.to_string(),
        compacted: view.compacted,
    };
    j.queue(vmeta_key(host), Some(to_json(&m)));
}
