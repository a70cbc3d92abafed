//! Every table the pipeline reads, the operations that change them, and how changes reach the
//! lcores without readers ever locking.
//!
//! Thread-safety: the tables are kept twice (the `left-right` scheme). Lcores read one copy
//! through a [`TablesReader`], entering it once per batch; the control thread, the only writer,
//! applies operations to the other copy, swaps the two with one atomic store, waits until every
//! lcore has left the old copy (each does at its next batch boundary, a quiescent point), then
//! applies the same operations to it. Readers never wait; a bulk of operations costs one swap.

pub mod fib;
pub mod fip;
pub mod flow;
pub mod nexthop;
pub mod policy;
pub mod vif;
pub mod vrf;

use crate::wire::MacAddr;
pub use fib::{Fib, Route};
pub use fip::{Fip, FipTable};
pub use flow::{FlowParams, FlowTable};
pub use nexthop::{
    Ecmp, EcmpBuckets, Nexthop, NexthopSpec, TunnelKind, MAX_KEYED_MEMBERS, NH_DISCARD,
};
pub use policy::{CompiledPolicy, Policy, VrfPolicy};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
pub use vif::{AllowedSource, Vif, VifFip, VifKind, VifSpec};
pub use vrf::Vrf;

/// Sizes of the tables (Contrail's module parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Interfaces.
    pub vifs: u16,
    /// VRFs.
    pub vrfs: u32,
    /// Nexthops.
    pub nexthops: u32,
    /// MPLS labels (the label table is indexed by label, so labels are below this).
    pub labels: u32,
    /// Initial route capacity (the table grows past it).
    pub routes: usize,
    /// Flow table entries (a forward/reverse pair takes two), allocated once.
    #[serde(default = "default_flows")]
    pub flows: u32,
}

fn default_flows() -> u32 {
    Limits::default().flows
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            vifs: 4352,
            vrfs: 4096,
            nexthops: 65536,
            labels: 65536,
            routes: 4096,
            flows: 512 * 1024,
        }
    }
}

/// Host-wide settings: who we are on the fabric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct HostConfig {
    /// This host's fabric (underlay) IPv4 address; tunnels are accepted only to it.
    pub fabric_ip: u32,
    /// The fabric interface.
    pub fabric_vif: Option<u16>,
    /// The host-stack interface (vhost0): non-overlay fabric traffic goes there.
    pub host_vif: Option<u16>,
    /// The agent interface (pkt0): trapped packets go there.
    pub agent_vif: Option<u16>,
}

/// One change to the tables. Operations are validated before they are queued (see
/// [`TablesWriter::apply`]), so applying one never fails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TableOp {
    /// Sets the host configuration.
    SetHost(HostConfig),
    /// Adds or replaces a VRF.
    AddVrf {
        /// Id.
        id: u16,
        /// Name.
        name: String,
    },
    /// Deletes a VRF and its routes.
    DelVrf(u16),
    /// Adds or replaces an interface.
    AddVif(VifSpec),
    /// Deletes an interface.
    DelVif(u16),
    /// Adds or replaces a nexthop.
    AddNh {
        /// Id.
        id: u32,
        /// What it does.
        spec: NexthopSpec,
    },
    /// Deletes a nexthop.
    DelNh(u32),
    /// Adds or replaces a route.
    AddRoute {
        /// VRF.
        vrf: u16,
        /// Prefix address.
        prefix: u32,
        /// Prefix length.
        plen: u8,
        /// Forwarding data.
        route: Route,
    },
    /// Deletes a route.
    DelRoute {
        /// VRF.
        vrf: u16,
        /// Prefix address.
        prefix: u32,
        /// Prefix length.
        plen: u8,
    },
    /// Maps an incoming MPLS label to a nexthop.
    AddLabel {
        /// Label.
        label: u32,
        /// Nexthop.
        nh: u32,
    },
    /// Removes a label.
    DelLabel(u32),
    /// Adds or replaces a floating IP.
    AddFip(Fip),
    /// Removes a floating IP.
    DelFip {
        /// Public VRF.
        vrf: u16,
        /// Floating address.
        fip: u32,
    },
    /// Adds or replaces a network policy. Flows of VRFs using it are flushed (re-evaluated by
    /// their next packet).
    SetPolicy(Policy),
    /// Deletes a policy no VRF uses.
    DelPolicy(u32),
    /// Turns flow processing on for a VRF with its policies, subnets and flow limit, or off
    /// (`None`). Either way the VRF's flows are flushed.
    SetVrfPolicy {
        /// VRF.
        vrf: u16,
        /// Configuration, or `None` for no flows (the fast path).
        policy: Option<VrfPolicy>,
    },
    /// Sets the flow timeouts.
    SetFlowParams(FlowParams),
}

/// Why an operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// An id outside the configured table size.
    #[error("{what} id {id} out of range (limit {limit})")]
    OutOfRange {
        /// Table.
        what: &'static str,
        /// Id.
        id: u64,
        /// Limit.
        limit: u64,
    },
    /// A reference to something that does not exist.
    #[error("{what} {id} does not exist")]
    NotFound {
        /// Table.
        what: &'static str,
        /// Id.
        id: u64,
    },
    /// Deleting something still in use.
    #[error("{what} {id} is in use: {by}")]
    InUse {
        /// Table.
        what: &'static str,
        /// Id.
        id: u64,
        /// By what.
        by: String,
    },
    /// An id the dataplane keeps for itself (the fabric VRF, the discard nexthop, the daemon's
    /// own interfaces, the special-purpose MPLS labels).
    #[error("{what} {id} is reserved: {why}")]
    Reserved {
        /// Table.
        what: &'static str,
        /// Id.
        id: u64,
        /// Why, and what may be used instead.
        why: &'static str,
    },
    /// A value the table cannot hold.
    #[error("invalid {what}: {why}")]
    Invalid {
        /// Field.
        what: &'static str,
        /// Reason.
        why: String,
    },
}

/// Label table entry meaning "no nexthop".
const NO_NH: u32 = u32::MAX;

/// All forwarding state.
#[derive(Debug, Clone)]
pub struct Tables {
    /// Host settings.
    pub host: HostConfig,
    /// Interfaces by id.
    pub vifs: Vec<Option<Vif>>,
    /// VRFs by id.
    pub vrfs: Vec<Option<Vrf>>,
    /// Routes of all VRFs.
    pub fib: Fib,
    /// Nexthops by id, compiled.
    pub nhs: Vec<Option<Nexthop>>,
    /// Nexthop specs by id, as configured (for dumps).
    pub nh_specs: Vec<Option<NexthopSpec>>,
    /// Label -> nexthop id ([`NO_NH`] if unset).
    labels: Vec<u32>,
    /// Floating IPs.
    pub fips: FipTable,
    /// Sizes.
    pub limits: Limits,
    /// Incremented on every applied operation; lets readers notice change.
    pub generation: u64,
    /// The flow table, shared by both copies of the tables (it is not versioned: lcores write
    /// it).
    pub flows: Arc<FlowTable>,
    /// Network policies by id.
    pub policies: HashMap<u32, Policy>,
    /// VRFs with flow processing on (the pipeline skips the flow stage when zero).
    pub flow_vrfs: u32,
}

impl Tables {
    /// Empty tables of the given sizes, with the discard nexthop (id 0) present.
    pub fn new(limits: Limits) -> Self {
        let mut t = Self {
            host: HostConfig::default(),
            vifs: vec![None; usize::from(limits.vifs)],
            vrfs: Vec::new(),
            fib: Fib::with_capacity(limits.routes),
            nhs: Vec::new(),
            nh_specs: Vec::new(),
            labels: Vec::new(),
            fips: FipTable::default(),
            limits,
            generation: 0,
            flows: Arc::new(FlowTable::new(limits.flows as usize, limits.vrfs as usize)),
            policies: HashMap::new(),
            flow_vrfs: 0,
        };
        t.vrfs.resize_with(limits.vrfs as usize, || None);
        t.nhs.resize_with(limits.nexthops as usize, || None);
        t.nh_specs.resize_with(limits.nexthops as usize, || None);
        t.labels.resize(limits.labels as usize, NO_NH);
        t.nhs[0] = Some(Nexthop::Discard);
        t.nh_specs[0] = Some(NexthopSpec::Discard);
        if let Some(v) = t.vrfs.get_mut(usize::from(FABRIC_VRF)) {
            *v = Some(Vrf::new(FABRIC_VRF, FABRIC_VRF_NAME.to_owned()));
        }
        t
    }

    /// The interface with this id.
    #[inline]
    pub fn vif(&self, id: u16) -> Option<&Vif> {
        self.vifs.get(usize::from(id))?.as_ref()
    }

    /// The VRF with this id.
    #[inline]
    pub fn vrf(&self, id: u16) -> Option<&Vrf> {
        self.vrfs.get(usize::from(id))?.as_ref()
    }

    /// The VRF with this name.
    pub fn vrf_by_name(&self, name: &str) -> Option<&Vrf> {
        self.vrfs.iter().flatten().find(|v| v.name == name)
    }

    /// The nexthop with this id.
    #[inline]
    pub fn nh(&self, id: u32) -> Option<&Nexthop> {
        self.nhs.get(id as usize)?.as_ref()
    }

    /// The nexthop an incoming label maps to.
    #[inline]
    pub fn label(&self, label: u32) -> Option<u32> {
        match self.labels.get(label as usize) {
            Some(&nh) if nh != NO_NH => Some(nh),
            _ => None,
        }
    }

    /// Every (label, nexthop) pair, ascending.
    pub fn labels(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.labels
            .iter()
            .enumerate()
            .filter(|(_, &nh)| nh != NO_NH)
            .map(|(l, &nh)| (l as u32, nh))
    }

    /// Longest-prefix match in `vrf`.
    #[inline]
    pub fn lookup(&self, vrf: u16, addr: u32) -> Option<(Route, u8)> {
        let v = self.vrf(vrf)?;
        self.fib.lookup(vrf, v.plens_for(addr), addr)
    }

    /// Applies a validated operation.
    pub fn apply(&mut self, op: &TableOp) {
        self.generation += 1;
        match op {
            TableOp::SetHost(h) => self.host = *h,
            TableOp::AddVrf { id, name } => {
                let slot = &mut self.vrfs[usize::from(*id)];
                match slot {
                    Some(v) => v.name.clone_from(name),
                    None => *slot = Some(Vrf::new(*id, name.clone())),
                }
            }
            TableOp::DelVrf(id) => {
                self.fib.clear_vrf(*id);
                if self.vrfs[usize::from(*id)]
                    .take()
                    .is_some_and(|v| v.policy.is_some())
                {
                    self.flows.flush(Some(*id));
                    self.compile_policies();
                }
            }
            TableOp::AddVif(spec) => {
                let slot = &mut self.vifs[usize::from(spec.id)];
                let fips = slot.take().map(|v| v.fips).unwrap_or_default();
                *slot = Some(Vif::new(spec.clone(), fips));
                // Tunnels out of this interface check packets against its MTU.
                for nh in self.nhs.iter_mut().flatten() {
                    if let Nexthop::Tunnel(tpl) = nh {
                        if tpl.oif == spec.id {
                            tpl.set_mtu(spec.mtu);
                        }
                    }
                }
            }
            TableOp::DelVif(id) => self.vifs[usize::from(*id)] = None,
            TableOp::AddNh { id, spec } => {
                let mut nh = Nexthop::compile(spec);
                if let Nexthop::Tunnel(tpl) = &mut nh {
                    tpl.set_mtu(self.vif(tpl.oif).map_or(0, |v| v.spec.mtu));
                }
                self.nhs[*id as usize] = Some(nh);
                self.nh_specs[*id as usize] = Some(spec.clone());
            }
            TableOp::DelNh(id) => {
                self.nhs[*id as usize] = None;
                self.nh_specs[*id as usize] = None;
            }
            TableOp::AddRoute {
                vrf,
                prefix,
                plen,
                route,
            } => {
                if self.fib.insert(*vrf, *prefix, *plen, *route) {
                    if let Some(v) = self.vrfs[usize::from(*vrf)].as_mut() {
                        v.route_added(*prefix, *plen);
                    }
                }
            }
            TableOp::DelRoute { vrf, prefix, plen } => {
                if self.fib.remove(*vrf, *prefix, *plen).is_some() {
                    if let Some(v) = self.vrfs[usize::from(*vrf)].as_mut() {
                        v.route_removed(*prefix, *plen);
                    }
                }
            }
            TableOp::AddLabel { label, nh } => self.labels[*label as usize] = *nh,
            TableOp::DelLabel(label) => self.labels[*label as usize] = NO_NH,
            TableOp::AddFip(f) => {
                if let Some(old) = self.fips.insert(*f) {
                    self.unlink_fip(&old);
                }
                if let Some(v) = self.vrfs[usize::from(f.vrf)].as_mut() {
                    v.fip_count += 1;
                }
                if let Some(v) = self.vifs[usize::from(f.vif)].as_mut() {
                    v.fips.push(VifFip {
                        fip: f.fip,
                        vrf: f.vrf,
                        private_ip: f.private_ip,
                    });
                }
            }
            TableOp::DelFip { vrf, fip } => {
                if let Some(old) = self.fips.remove(*vrf, *fip) {
                    self.unlink_fip(&old);
                }
            }
            TableOp::SetPolicy(p) => {
                self.policies.insert(p.id, p.clone());
                self.flush_policy_users(Some(p.id));
                self.compile_policies();
            }
            TableOp::DelPolicy(id) => {
                self.policies.remove(id);
                self.compile_policies();
            }
            TableOp::SetVrfPolicy { vrf, policy } => {
                if let Some(v) = self.vrfs[usize::from(*vrf)].as_mut() {
                    v.policy = policy.clone();
                }
                self.flows.flush(Some(*vrf));
                // Other networks' rules may name this one's subnets.
                self.flush_policy_users(None);
                self.compile_policies();
            }
            TableOp::SetFlowParams(p) => self.flows.set_params(*p),
        }
    }

    /// Flushes the flows of every VRF using policy `id` (any policy with `None`).
    fn flush_policy_users(&self, id: Option<u32>) {
        for v in self.vrfs.iter().flatten() {
            if let Some(p) = &v.policy {
                if id.is_none_or(|id| p.policies.contains(&id)) {
                    self.flows.flush(Some(v.id));
                }
            }
        }
    }

    /// Recompiles every VRF's policy (control path; a configuration has few).
    fn compile_policies(&mut self) {
        let subnets: HashMap<u16, Vec<(u32, u8)>> = self
            .vrfs
            .iter()
            .flatten()
            .filter_map(|v| Some((v.id, v.policy.as_ref()?.subnets.clone())))
            .collect();
        let mut n = 0;
        for v in self.vrfs.iter_mut().flatten() {
            v.flow = v.policy.as_ref().map(|cfg| {
                n += 1;
                Arc::new(CompiledPolicy::compile(
                    cfg,
                    |id| self.policies.get(&id),
                    |vrf| subnets.get(&vrf).map(Vec::as_slice),
                ))
            });
        }
        self.flow_vrfs = n;
    }

    fn unlink_fip(&mut self, f: &Fip) {
        if let Some(v) = self.vrfs[usize::from(f.vrf)].as_mut() {
            v.fip_count = v.fip_count.saturating_sub(1);
        }
        if let Some(v) = self.vifs[usize::from(f.vif)].as_mut() {
            v.fips.retain(|x| !(x.fip == f.fip && x.vrf == f.vrf));
        }
    }
}

impl left_right::Absorb<TableOp> for Tables {
    fn absorb_first(&mut self, op: &mut TableOp, _other: &Self) {
        self.apply(op);
    }
    fn absorb_second(&mut self, op: TableOp, _other: &Self) {
        self.apply(&op);
    }
    fn sync_with(&mut self, first: &Self) {
        *self = first.clone();
    }
}

/// What the writer remembers to validate operations before queueing them: which ids exist and
/// who refers to whom. Small next to the tables (no routes are kept here). The checks of each
/// operation are `impl Shadow` blocks in the module of the table it changes.
#[derive(Debug, Default)]
struct Shadow {
    /// The host settings as last set (which interfaces are the daemon's own).
    host: HostConfig,
    vrfs: HashMap<u16, String>,
    /// vif id -> its VRF.
    vifs: HashMap<u16, u16>,
    nhs: HashSet<u32>,
    /// (public VRF, fip) -> vif.
    fips: HashMap<(u16, u32), u16>,
    policies: HashSet<u32>,
    /// VRF -> policies attached.
    attached: HashMap<u16, Vec<u32>>,
}

/// The control thread's handle: validates operations and publishes them.
pub struct TablesWriter {
    w: left_right::WriteHandle<Tables, TableOp>,
    shadow: Shadow,
    limits: Limits,
}

impl std::fmt::Debug for TablesWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TablesWriter")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// An lcore's (or any reader's) handle on the tables.
pub struct TablesReader {
    r: left_right::ReadHandle<Tables>,
}

impl std::fmt::Debug for TablesReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TablesReader").finish_non_exhaustive()
    }
}

impl Clone for TablesReader {
    fn clone(&self) -> Self {
        Self { r: self.r.clone() }
    }
}

/// A reader's view of the tables, valid until dropped. Hold it for one batch: a writer waits for
/// it to be dropped before reusing the copy it points at.
pub type TablesGuard<'a> = left_right::ReadGuard<'a, Tables>;

impl TablesReader {
    /// Enters the current tables. `None` only after the writer is gone.
    #[inline]
    pub fn enter(&self) -> Option<TablesGuard<'_>> {
        self.r.enter()
    }
}

/// Creates empty tables and their writer and first reader.
pub fn new_tables(limits: Limits) -> (TablesWriter, TablesReader) {
    let (w, r) = left_right::new_from_empty::<Tables, TableOp>(Tables::new(limits));
    let mut shadow = Shadow::default();
    shadow.nhs.insert(NH_DISCARD);
    if limits.vrfs > 0 {
        shadow.vrfs.insert(FABRIC_VRF, FABRIC_VRF_NAME.to_owned());
    }
    (TablesWriter { w, shadow, limits }, TablesReader { r })
}

impl TablesWriter {
    /// A new reader handle (one per lcore).
    pub fn reader(&self) -> TablesReader {
        TablesReader {
            r: (*self.w).clone(),
        }
    }

    /// Validates `ops` in order (each sees the effect of the ones before it), then publishes them
    /// all with one swap. On the first invalid operation nothing is applied and its index and
    /// error are returned.
    pub fn apply(&mut self, ops: Vec<TableOp>) -> Result<(), (usize, TableError)> {
        let snapshot = self.shadow_clone();
        for (i, op) in ops.iter().enumerate() {
            if let Err(e) = self.check_and_record(op) {
                self.shadow = snapshot;
                return Err((i, e));
            }
        }
        for op in ops {
            self.w.append(op);
        }
        self.w.publish();
        Ok(())
    }

    fn shadow_clone(&self) -> Shadow {
        Shadow {
            host: self.shadow.host,
            vrfs: self.shadow.vrfs.clone(),
            vifs: self.shadow.vifs.clone(),
            nhs: self.shadow.nhs.clone(),
            fips: self.shadow.fips.clone(),
            policies: self.shadow.policies.clone(),
            attached: self.shadow.attached.clone(),
        }
    }

    /// Reads the published tables (what lcores see).
    pub fn read<R>(&self, f: impl FnOnce(&Tables) -> R) -> Option<R> {
        let g = self.w.enter()?;
        Some(f(&g))
    }

    /// Validates one operation against the shadow and records its effect there. The checks of
    /// each kind live beside its table; the host and the label table are this module's.
    fn check_and_record(&mut self, op: &TableOp) -> Result<(), TableError> {
        let l = &self.limits;
        let s = &mut self.shadow;
        match op {
            TableOp::SetHost(h) => s.set_host(l, h),
            TableOp::AddVrf { id, name } => s.add_vrf(l, *id, name),
            TableOp::DelVrf(id) => s.del_vrf(l, *id),
            TableOp::AddVif(spec) => s.add_vif(l, spec),
            TableOp::DelVif(id) => s.del_vif(l, *id),
            TableOp::AddNh { id, spec } => s.add_nh(l, *id, spec),
            TableOp::DelNh(id) => s.del_nh(l, *id),
            TableOp::AddRoute {
                vrf, plen, route, ..
            } => s.add_route(l, *vrf, *plen, route),
            TableOp::DelRoute { vrf, plen, .. } => s.del_route(l, *vrf, *plen),
            TableOp::AddLabel { label, nh } => s.add_label(l, *label, *nh),
            TableOp::DelLabel(label) => s.del_label(l, *label),
            TableOp::AddFip(f) => s.add_fip(l, f),
            TableOp::DelFip { vrf, fip } => s.del_fip(*vrf, *fip),
            TableOp::SetPolicy(p) => s.set_policy(l, p),
            TableOp::DelPolicy(id) => s.del_policy(*id),
            TableOp::SetVrfPolicy { vrf, policy } => s.set_vrf_policy(l, *vrf, policy.as_ref()),
            TableOp::SetFlowParams(_) => Ok(()),
        }
    }
}

impl Shadow {
    /// A `SetHost`: the interfaces it names must exist.
    fn set_host(&mut self, l: &Limits, h: &HostConfig) -> Result<(), TableError> {
        for vif in [h.fabric_vif, h.host_vif, h.agent_vif]
            .into_iter()
            .flatten()
        {
            self.vif_exists(l, vif)?;
        }
        self.host = *h;
        Ok(())
    }

    /// An `AddLabel`: the label indexes the label table, is not one of the special-purpose
    /// labels 0-15 (RFC 3032, 7274), and its nexthop must exist.
    fn add_label(&self, l: &Limits, label: u32, nh: u32) -> Result<(), TableError> {
        ensure_below("label", label.into(), l.labels.into())?;
        if label < FIRST_LABEL {
            return Err(TableError::Reserved {
                what: "label",
                id: label.into(),
                why: "labels 0-15 are special-purpose (RFC 3032); the first usable one is 16",
            });
        }
        self.nh_exists(l, nh)
    }

    /// A `DelLabel`: only the range matters (clearing an unset label is harmless).
    fn del_label(&self, l: &Limits, label: u32) -> Result<(), TableError> {
        ensure_below("label", label.into(), l.labels.into())
    }
}

/// VRF 0 is the fabric VRF (the underlay's, where the daemon's own interfaces live): it exists
/// from the start with this name and cannot be replaced, renamed or deleted.
pub const FABRIC_VRF: u16 = 0;
/// The fabric VRF's name.
pub const FABRIC_VRF_NAME: &str = "fabric";
/// MPLS labels below this are special-purpose (RFC 3032): never in the label table.
pub const FIRST_LABEL: u32 = 16;

/// Every table is a vector of the configured size, so an id at or past `limit` cannot be stored.
fn ensure_below(what: &'static str, id: u64, limit: u64) -> Result<(), TableError> {
    if id >= limit {
        return Err(TableError::OutOfRange { what, id, limit });
    }
    Ok(())
}

/// A reference must name something that exists: `exists` says whether it does.
fn ensure_exists(what: &'static str, id: u64, exists: bool) -> Result<(), TableError> {
    if !exists {
        return Err(TableError::NotFound { what, id });
    }
    Ok(())
}

/// An IPv4 prefix is at most 32 bits long.
fn ensure_plen(plen: u8) -> Result<(), TableError> {
    if plen > 32 {
        return Err(TableError::Invalid {
            what: "prefix length",
            why: format!("{plen} > 32"),
        });
    }
    Ok(())
}

/// The vRouter MAC every VM sees as its gateway's.
pub const VROUTER_MAC: MacAddr = MacAddr::VROUTER;
