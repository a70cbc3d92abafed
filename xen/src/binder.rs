// SPDX-License-Identifier: Apache-2.0
//! The vif binder: which dom0 vif belongs to which CloudStack Nic.
//!
//! The binder owns a xenstore connection and a watch on `/local/domain/0/backend/vif`. For every
//! vif `<domid>/<devid>` that an event touches it reads the backend directory and decides, from
//! what xenstore says *now*, whether the vif should be bound and to which interface:
//!
//! 1. **Gone or going**: the backend dir is missing, `online` is `0`, or `state` is 5 (Closing)
//!    or 6 (Closed) → unbind if bound.
//! 2. **Not ready**: `online` not `1`, `state` missing, `hotplug-status` not `connected` (the
//!    dom0 device does not exist yet), `mac` missing or malformed → wait (pending).
//! 3. **Identity**, in the contract's order (`docs/xen.md`):
//!    1. `cloudstack/nic-id` + `cloudstack/vm-id` (+ optional `cloudstack/network-id`) in the
//!       backend dir, written by our hotplug hook;
//!    2. the xapi private dir's `other-config/cloudstack-nic-id` (`/xapi/<XAPI VM uuid>/private/
//!       vif/<devid>/` on newer toolstacks, `/xapi/<domid>/private/vif/<devid>/` on older ones);
//!    3. the backend `mac`, if it equals the MAC of exactly one known interface;
//!    4. `/local/domain/<domid>/name` + `-<devid>` equal to a known interface's name.
//!
//!    A contract key that is present but malformed stops the search: the vif waits rather than
//!    falling through to a weaker match that could pick the wrong interface. A MAC matching two
//!    interfaces is ambiguous and waits too. When the directory knows the Nic named by the
//!    contract and its MAC differs from xenstore's, the vif waits (and the mismatch is logged).
//!
//! The binder keeps no opinion once xenstore stops supporting it: a bound vif that becomes
//! unidentifiable (keys removed, vif re-plugged half-written) is unbound, so the dataplane never
//! keeps a port attached to an interface that xenstore no longer says it is. Identical decisions
//! are no-ops (idempotent), one Nic is never bound to two vifs (the second waits until the first
//! goes), and a changed decision (e.g. `tap` → `vif` when an HVM guest loads PV drivers, or a new
//! MAC) is an unbind followed by a bind.
//!
//! # Port name: `vif` or `tap`
//! The dom0 device is `vif<domid>.<devid>` (netback) or `tap<domid>.<devid>` (qemu's emulated
//! NIC of an HVM guest without PV drivers). xenstore does not say which one carries traffic, so:
//! if the backend `state` is 4 (Connected) a PV frontend is using netback and the port is `vif`;
//! otherwise, if a `tap<domid>.<devid>` net device exists ([`NetdevProbe`]), it is `tap`;
//! otherwise `vif`. When the guest's PV drivers connect (state → 4) the binding moves to `vif`.
//!
//! # Retrying
//! Pending vifs are re-evaluated on the next watch event that touches them, when the agent calls
//! [`Binder::retry_pending`] (do so when the interface directory changes, e.g. config arrived from
//! the controller), and, for the reasons that no watch event would reveal a change of
//! ([`PendingReason::needs_periodic_retry`]: nothing identified it yet, or a transient failure),
//! every [`BinderConfig::retry_interval`] from [`Binder::poll`]. Periodic retries are limited to
//! those so that many vifs waiting on, say, `hotplug-status` do not turn into a steady read load
//! on xenstored.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::client::{Client, Error as XsError};
use crate::ids::{MacAddr, Uuid};
use crate::transport::Transport;

/// Where netback vifs appear.
pub const BACKEND_VIF: &str = "/local/domain/0/backend/vif";
/// Token of the binder's watch.
pub const WATCH_TOKEN: &str = "vrouter-binder";

/// A vif, by the guest domain and device number (= CloudStack Nic device id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VifKey {
    /// Guest domain id.
    pub domid: u32,
    /// Device number.
    pub devid: u32,
}

impl fmt::Display for VifKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.domid, self.devid)
    }
}

/// Which dom0 device carries the vif's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortKind {
    /// `vif<domid>.<devid>`: netback (PV frontend).
    Vif,
    /// `tap<domid>.<devid>`: qemu's emulated NIC (HVM guest without PV drivers).
    Tap,
}

impl PortKind {
    /// The dom0 device name.
    pub fn port_name(self, key: VifKey) -> String {
        match self {
            PortKind::Vif => format!("vif{}.{}", key.domid, key.devid),
            PortKind::Tap => format!("tap{}.{}", key.domid, key.devid),
        }
    }
}

/// How a vif was identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentifiedBy {
    /// `cloudstack/nic-id` in the backend dir (our hook's contract).
    Contract,
    /// `other-config/cloudstack-nic-id` in the xapi private dir.
    XapiPrivate,
    /// The MAC matched exactly one known interface.
    Mac,
    /// `<instance name>-<devid>` matched a known interface's name.
    Name,
}

/// A decision to attach a dom0 port to a CloudStack Nic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VifBinding {
    /// dom0 device: `vif<domid>.<devid>` or `tap<domid>.<devid>`.
    pub port: String,
    /// Which of the two.
    pub kind: PortKind,
    /// Guest domain id.
    pub domid: u32,
    /// Device number.
    pub devid: u32,
    /// CloudStack Nic UUID = Contrail virtual-machine-interface UUID.
    pub nic_uuid: Uuid,
    /// CloudStack VM UUID = Contrail virtual-machine UUID.
    pub vm_uuid: Uuid,
    /// CloudStack network UUID = Contrail virtual-network UUID, when known.
    pub network_uuid: Option<Uuid>,
    /// The guest MAC as xenstore has it.
    pub mac: MacAddr,
    /// How the vif was identified.
    pub identified_by: IdentifiedBy,
}

impl VifBinding {
    /// The vif's key.
    pub fn key(&self) -> VifKey {
        VifKey {
            domid: self.domid,
            devid: self.devid,
        }
    }

    /// Same dataplane effect (everything but `identified_by`).
    fn same_effect(&self, o: &VifBinding) -> bool {
        self.port == o.port
            && self.nic_uuid == o.nic_uuid
            && self.vm_uuid == o.vm_uuid
            && self.network_uuid == o.network_uuid
            && self.mac == o.mac
    }
}

/// An interface the agent knows about (from the controller, or its config file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownInterface {
    /// Nic / VMI UUID.
    pub nic_uuid: Uuid,
    /// VM UUID.
    pub vm_uuid: Uuid,
    /// Network UUID, if known.
    pub network_uuid: Option<Uuid>,
    /// Interface name; CloudStack names them `<instance-name>-<device-id>`.
    pub name: String,
    /// `virtual_machine_interface_mac_addresses`, if known.
    pub mac: Option<MacAddr>,
}

/// Lookup of known interfaces; implemented by the agent.
pub trait InterfaceDirectory {
    /// The interface with this Nic UUID.
    fn by_nic(&self, nic: &Uuid) -> Option<KnownInterface>;
    /// Every interface with this MAC (more than one makes a MAC match ambiguous).
    fn by_mac(&self, mac: &MacAddr) -> Vec<KnownInterface>;
    /// The interface with this name.
    fn by_name(&self, name: &str) -> Option<KnownInterface>;
}

/// A fixed list of interfaces (the agent's config file before the controller shim exists, and
/// tests).
#[derive(Debug, Clone, Default)]
pub struct StaticDirectory {
    /// The interfaces.
    pub interfaces: Vec<KnownInterface>,
}

impl InterfaceDirectory for StaticDirectory {
    fn by_nic(&self, nic: &Uuid) -> Option<KnownInterface> {
        self.interfaces.iter().find(|i| i.nic_uuid == *nic).cloned()
    }
    fn by_mac(&self, mac: &MacAddr) -> Vec<KnownInterface> {
        self.interfaces
            .iter()
            .filter(|i| i.mac.as_ref() == Some(mac))
            .cloned()
            .collect()
    }
    fn by_name(&self, name: &str) -> Option<KnownInterface> {
        self.interfaces.iter().find(|i| i.name == name).cloned()
    }
}

/// Where bind/unbind decisions go; implemented by the agent (which programs the dataplane).
///
/// Calls are idempotent from the binder's side: `bind` is called once per decision and `unbind`
/// once per bound vif, with exactly the value that was given to `bind`. A decision with the same
/// dataplane effect (port, Nic, VM, network, MAC) reached another way is not a new bind. A failed
/// call is retried later.
pub trait BindSink {
    /// Error of the sink.
    type Error: std::error::Error;
    /// Attach `b.port` to the Nic.
    ///
    /// # Errors
    /// Whatever kept the dataplane from binding; the vif stays pending and is retried.
    fn bind(&mut self, b: &VifBinding) -> Result<(), Self::Error>;
    /// Detach the port bound by `b`.
    ///
    /// # Errors
    /// Whatever kept the dataplane from unbinding; the binding is kept and retried.
    fn unbind(&mut self, b: &VifBinding) -> Result<(), Self::Error>;
}

/// Whether a dom0 network device exists (used to tell `tap` from `vif`).
pub trait NetdevProbe: Send {
    /// Does a net device of this name exist?
    fn exists(&self, name: &str) -> bool;
}

/// Looks in `/sys/class/net`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SysfsProbe;

impl NetdevProbe for SysfsProbe {
    fn exists(&self, name: &str) -> bool {
        !name.contains('/') && Path::new("/sys/class/net").join(name).exists()
    }
}

/// Says no device exists, so ports are always `vif` (tests, PV-only hosts).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTaps;

impl NetdevProbe for NoTaps {
    fn exists(&self, _: &str) -> bool {
        false
    }
}

/// Why a vif is not bound (yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingReason {
    /// A required key is absent.
    Missing(&'static str),
    /// A key has a value that does not parse.
    Malformed {
        /// The key.
        key: &'static str,
        /// Its value.
        value: String,
    },
    /// `online` is not `1`.
    NotOnline(String),
    /// `hotplug-status` is not `connected`: the dom0 device is not ready.
    NotConnected(Option<String>),
    /// No contract keys and no fallback matched.
    Unidentified,
    /// The MAC matches several interfaces.
    AmbiguousMac(MacAddr, usize),
    /// The Nic is bound to another vif.
    NicInUse {
        /// The Nic.
        nic: Uuid,
        /// The vif holding it.
        holder: VifKey,
    },
    /// The contract names a Nic whose known MAC differs from xenstore's.
    MacMismatch {
        /// The Nic.
        nic: Uuid,
        /// MAC in xenstore.
        xenstore: MacAddr,
        /// MAC the directory knows.
        known: MacAddr,
    },
    /// xenstore refused a read (e.g. `EACCES`).
    Xenstore(String),
    /// The sink refused to bind.
    BindFailed(String),
    /// The sink refused to unbind; the old binding is kept and retried.
    UnbindFailed(String),
}

impl PendingReason {
    /// Whether the state behind this reason can change without a write below the watched
    /// backend dir (so only a periodic retry notices): the xapi private dir and domain name are
    /// outside the watch, and the sink or xenstore may have failed transiently. Everything else
    /// changes by a backend write (which fires the watch) or by the interface directory (the
    /// agent calls [`Binder::retry_pending`]).
    pub fn needs_periodic_retry(&self) -> bool {
        matches!(
            self,
            PendingReason::Unidentified
                | PendingReason::Xenstore(_)
                | PendingReason::BindFailed(_)
                | PendingReason::UnbindFailed(_)
        )
    }

    /// How loudly to log it: the normal plug sequence passes through some of these states.
    fn log_level(&self) -> log::Level {
        match self {
            PendingReason::Missing(_)
            | PendingReason::NotOnline(_)
            | PendingReason::NotConnected(_) => log::Level::Debug,
            PendingReason::Unidentified | PendingReason::NicInUse { .. } => log::Level::Info,
            _ => log::Level::Warn,
        }
    }
}

impl fmt::Display for PendingReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PendingReason::Missing(k) => write!(f, "{k} missing"),
            PendingReason::Malformed { key, value } => write!(f, "{key} malformed: {value:?}"),
            PendingReason::NotOnline(v) => write!(f, "online={v:?}"),
            PendingReason::NotConnected(v) => write!(f, "hotplug-status={v:?}, not connected yet"),
            PendingReason::Unidentified => write!(f, "no contract keys and no fallback match"),
            PendingReason::AmbiguousMac(m, n) => write!(f, "MAC {m} matches {n} interfaces"),
            PendingReason::NicInUse { nic, holder } => {
                write!(f, "nic {nic} is bound to vif {holder}")
            }
            PendingReason::MacMismatch {
                nic,
                xenstore,
                known,
            } => {
                write!(
                    f,
                    "nic {nic}: xenstore MAC {xenstore} differs from the interface's {known}"
                )
            }
            PendingReason::Xenstore(e) => write!(f, "xenstore: {e}"),
            PendingReason::BindFailed(e) => write!(f, "bind failed: {e}"),
            PendingReason::UnbindFailed(e) => write!(f, "unbind failed: {e}"),
        }
    }
}

/// What xenstore says about one vif (the binder's input for one decision).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VifSnapshot {
    /// `online`.
    pub online: Option<String>,
    /// `state` (XenbusState).
    pub state: Option<String>,
    /// `hotplug-status`.
    pub hotplug_status: Option<String>,
    /// `mac`.
    pub mac: Option<String>,
    /// `cloudstack/nic-id`.
    pub nic_id: Option<String>,
    /// `cloudstack/vm-id`.
    pub vm_id: Option<String>,
    /// `cloudstack/network-id`.
    pub network_id: Option<String>,
    /// xapi private `other-config/cloudstack-nic-id`.
    pub private_nic_id: Option<String>,
    /// xapi private `other-config/cloudstack-vm-id`.
    pub private_vm_id: Option<String>,
    /// xapi private `other-config/cloudstack-network-id`.
    pub private_network_id: Option<String>,
    /// `/local/domain/<domid>/name`.
    pub domain_name: Option<String>,
}

/// The binder's decision for one vif.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Should be bound like this.
    Bind(VifBinding),
    /// Should not be bound: it is gone or going (reason for the log).
    Down(String),
    /// Cannot be decided yet.
    Pending(PendingReason),
}

fn parse_uuid(key: &'static str, v: &str) -> Result<Uuid, PendingReason> {
    v.parse().map_err(|_| PendingReason::Malformed {
        key,
        value: v.to_string(),
    })
}

fn opt_uuid(key: &'static str, v: Option<&String>) -> Result<Option<Uuid>, PendingReason> {
    v.map(|s| parse_uuid(key, s)).transpose()
}

/// Decides what to do with a vif from what xenstore says. Pure: no I/O.
pub fn decide<D: InterfaceDirectory + ?Sized>(
    key: VifKey,
    s: &VifSnapshot,
    dir: &D,
    probe: &dyn NetdevProbe,
) -> Decision {
    match decide_inner(key, s, dir, probe) {
        Ok(d) => d,
        Err(r) => Decision::Pending(r),
    }
}

fn decide_inner<D: InterfaceDirectory + ?Sized>(
    key: VifKey,
    s: &VifSnapshot,
    dir: &D,
    probe: &dyn NetdevProbe,
) -> Result<Decision, PendingReason> {
    let state = match s.state.as_deref().map(str::trim) {
        None => None,
        Some(v) => Some(v.parse::<u32>().map_err(|_| PendingReason::Malformed {
            key: "state",
            value: v.to_string(),
        })?),
    };
    if s.online.as_deref() == Some("0") {
        return Ok(Decision::Down("online=0".into()));
    }
    if let Some(st) = state.filter(|&st| st >= 5) {
        return Ok(Decision::Down(format!("state={st} (closing/closed)")));
    }
    match s.online.as_deref() {
        Some("1") => {}
        None => return Err(PendingReason::Missing("online")),
        Some(v) => return Err(PendingReason::NotOnline(v.to_string())),
    }
    let state = state.ok_or(PendingReason::Missing("state"))?;
    if state == 0 {
        return Err(PendingReason::Malformed {
            key: "state",
            value: "0".into(),
        });
    }
    if s.hotplug_status.as_deref() != Some("connected") {
        return Err(PendingReason::NotConnected(s.hotplug_status.clone()));
    }
    let mac_s = s.mac.as_deref().ok_or(PendingReason::Missing("mac"))?;
    let mac: MacAddr = mac_s.parse().map_err(|_| PendingReason::Malformed {
        key: "mac",
        value: mac_s.into(),
    })?;

    let (nic, vm, net, how) = if let Some(nic_s) = &s.nic_id {
        let nic = parse_uuid("cloudstack/nic-id", nic_s)?;
        let vm_s = s
            .vm_id
            .as_ref()
            .ok_or(PendingReason::Missing("cloudstack/vm-id"))?;
        let vm = parse_uuid("cloudstack/vm-id", vm_s)?;
        let net = opt_uuid("cloudstack/network-id", s.network_id.as_ref())?;
        (nic, vm, net, IdentifiedBy::Contract)
    } else if let Some(nic_s) = &s.private_nic_id {
        let nic = parse_uuid("other-config/cloudstack-nic-id", nic_s)?;
        let known = dir.by_nic(&nic);
        let vm = match &s.private_vm_id {
            Some(v) => parse_uuid("other-config/cloudstack-vm-id", v)?,
            None => known
                .as_ref()
                .map(|k| k.vm_uuid)
                .ok_or(PendingReason::Missing("other-config/cloudstack-vm-id"))?,
        };
        let net = match opt_uuid(
            "other-config/cloudstack-network-id",
            s.private_network_id.as_ref(),
        )? {
            Some(n) => Some(n),
            None => known.as_ref().and_then(|k| k.network_uuid),
        };
        (nic, vm, net, IdentifiedBy::XapiPrivate)
    } else {
        let by_mac = dir.by_mac(&mac);
        if by_mac.len() > 1 {
            return Err(PendingReason::AmbiguousMac(mac, by_mac.len()));
        }
        if let Some(k) = by_mac.into_iter().next() {
            (k.nic_uuid, k.vm_uuid, k.network_uuid, IdentifiedBy::Mac)
        } else {
            let name = s.domain_name.as_ref().ok_or(PendingReason::Unidentified)?;
            let k = dir
                .by_name(&format!("{name}-{}", key.devid))
                .ok_or(PendingReason::Unidentified)?;
            if let Some(known) = k.mac.filter(|m| *m != mac) {
                return Err(PendingReason::MacMismatch {
                    nic: k.nic_uuid,
                    xenstore: mac,
                    known,
                });
            }
            (k.nic_uuid, k.vm_uuid, k.network_uuid, IdentifiedBy::Name)
        }
    };
    if matches!(how, IdentifiedBy::Contract | IdentifiedBy::XapiPrivate) {
        if let Some(known) = dir.by_nic(&nic).and_then(|k| k.mac).filter(|m| *m != mac) {
            return Err(PendingReason::MacMismatch {
                nic,
                xenstore: mac,
                known,
            });
        }
    }
    let kind = if state == 4 {
        PortKind::Vif
    } else if probe.exists(&PortKind::Tap.port_name(key)) {
        PortKind::Tap
    } else {
        PortKind::Vif
    };
    Ok(Decision::Bind(VifBinding {
        port: kind.port_name(key),
        kind,
        domid: key.domid,
        devid: key.devid,
        nic_uuid: nic,
        vm_uuid: vm,
        network_uuid: net,
        mac,
        identified_by: how,
    }))
}

/// Binder settings.
#[derive(Debug, Clone)]
pub struct BinderConfig {
    /// The watched directory (normally [`BACKEND_VIF`]).
    pub root: String,
    /// The watch token.
    pub token: String,
    /// How often [`Binder::poll`] re-evaluates pending vifs without an event.
    pub retry_interval: Duration,
    /// At most this many events are drained per [`Binder::poll`] before acting on them.
    pub max_batch: usize,
}

impl Default for BinderConfig {
    fn default() -> Self {
        BinderConfig {
            root: BACKEND_VIF.to_string(),
            token: WATCH_TOKEN.to_string(),
            retry_interval: Duration::from_secs(5),
            max_batch: 4096,
        }
    }
}

/// Fatal binder errors: the xenstore connection failed. Rebuild the client and call
/// [`Binder::reconnect`]; the binder keeps its bindings and resynchronises.
#[derive(Debug, thiserror::Error)]
pub enum BinderError {
    /// The xenstore connection failed.
    #[error("binder: {0}")]
    Xenstore(#[from] XsError),
}

/// What one [`Binder::poll`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollStats {
    /// Watch events consumed.
    pub events: usize,
    /// Vifs evaluated.
    pub evaluated: usize,
    /// Successful binds.
    pub bound: usize,
    /// Successful unbinds.
    pub unbound: usize,
}

enum Target {
    All,
    Domain(u32),
    Vif(VifKey),
}

/// The binder. See the module docs.
pub struct Binder<T: Transport> {
    client: Client<T>,
    cfg: BinderConfig,
    probe: Box<dyn NetdevProbe>,
    bound: BTreeMap<VifKey, VifBinding>,
    by_nic: HashMap<Uuid, VifKey>,
    pending: BTreeMap<VifKey, PendingReason>,
    last_retry: Instant,
}

impl<T: Transport> fmt::Debug for Binder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Binder")
            .field("root", &self.cfg.root)
            .field("bound", &self.bound.len())
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl<T: Transport> Binder<T> {
    /// Takes over `client` and watches `cfg.root`. The watch's initial event makes the first
    /// [`Binder::poll`] scan everything.
    ///
    /// # Errors
    /// The watch request failed.
    pub fn new(
        mut client: Client<T>,
        cfg: BinderConfig,
        probe: Box<dyn NetdevProbe>,
    ) -> Result<Self, BinderError> {
        client.watch(&cfg.root, &cfg.token)?;
        Ok(Binder {
            client,
            cfg,
            probe,
            bound: BTreeMap::new(),
            by_nic: HashMap::new(),
            pending: BTreeMap::new(),
            last_retry: Instant::now(),
        })
    }

    /// Replaces a failed connection and re-registers the watch; bindings are kept and the next
    /// poll resynchronises them with xenstore.
    ///
    /// # Errors
    /// The watch request failed.
    pub fn reconnect(&mut self, mut client: Client<T>) -> Result<(), BinderError> {
        client.watch(&self.cfg.root, &self.cfg.token)?;
        self.client = client;
        Ok(())
    }

    /// Seeds the binder with bindings the dataplane already has (agent restart: the dataplane is
    /// headless and kept forwarding). The next resync keeps those that xenstore still supports
    /// and unbinds the rest, instead of resetting everything.
    pub fn adopt(&mut self, existing: impl IntoIterator<Item = VifBinding>) {
        for b in existing {
            let key = b.key();
            if let Some(&holder) = self.by_nic.get(&b.nic_uuid) {
                if holder != key {
                    log::warn!(
                        "adopt: nic {} already held by vif {holder}; ignoring {}",
                        b.nic_uuid,
                        b.port
                    );
                    continue;
                }
            }
            self.by_nic.insert(b.nic_uuid, key);
            self.bound.insert(key, b);
        }
    }

    /// The current bindings.
    pub fn bindings(&self) -> impl Iterator<Item = &VifBinding> {
        self.bound.values()
    }

    /// The binding of one vif.
    pub fn binding(&self, key: VifKey) -> Option<&VifBinding> {
        self.bound.get(&key)
    }

    /// Vifs waiting, with why.
    pub fn pending(&self) -> impl Iterator<Item = (VifKey, &PendingReason)> {
        self.pending.iter().map(|(k, r)| (*k, r))
    }

    /// Checks the internal maps agree with each other (tests; cheap enough for debug asserts).
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.by_nic.len() != self.bound.len() {
            return Err(format!(
                "by_nic has {} entries, bound {}",
                self.by_nic.len(),
                self.bound.len()
            ));
        }
        for (nic, key) in &self.by_nic {
            match self.bound.get(key) {
                Some(b) if b.nic_uuid == *nic && b.key() == *key => {}
                other => return Err(format!("by_nic {nic} -> {key} but bound has {other:?}")),
            }
        }
        Ok(())
    }

    /// The xenstore connection (e.g. for the agent's other reads).
    pub fn client(&mut self) -> &mut Client<T> {
        &mut self.client
    }

    /// Waits up to `timeout` for watch events, then acts on every event received (coalesced per
    /// vif). Also re-evaluates pending vifs every `retry_interval`; pass a `timeout` no longer
    /// than that (with `None` it blocks until the next event).
    ///
    /// # Errors
    /// The xenstore connection failed (see [`BinderError`]).
    pub fn poll<D, S>(
        &mut self,
        dir: &D,
        sink: &mut S,
        timeout: Option<Duration>,
    ) -> Result<PollStats, BinderError>
    where
        D: InterfaceDirectory + ?Sized,
        S: BindSink + ?Sized,
    {
        let mut stats = PollStats::default();
        let mut all = false;
        let mut domains = BTreeSet::new();
        let mut vifs = BTreeSet::new();
        let mut wait = timeout;
        while stats.events < self.cfg.max_batch {
            let Some(ev) = self.client.wait_event(wait)? else {
                break;
            };
            wait = Some(Duration::ZERO);
            stats.events += 1;
            if ev.token != self.cfg.token {
                continue;
            }
            match self.classify(&ev.path) {
                Some(Target::All) => all = true,
                Some(Target::Domain(d)) => {
                    domains.insert(d);
                }
                Some(Target::Vif(k)) => {
                    vifs.insert(k);
                }
                None => {}
            }
        }
        let mut keys = BTreeSet::new();
        if all {
            keys.extend(self.scan_all()?);
        } else {
            for d in domains {
                keys.extend(self.scan_domain(d)?);
            }
        }
        keys.extend(vifs);
        self.evaluate_set(keys, dir, sink, &mut stats)?;
        if !self.pending.is_empty() && self.last_retry.elapsed() >= self.cfg.retry_interval {
            self.last_retry = Instant::now();
            let keys: BTreeSet<VifKey> = self
                .pending
                .iter()
                .filter(|(_, r)| r.needs_periodic_retry())
                .map(|(k, _)| *k)
                .collect();
            self.evaluate_set(keys, dir, sink, &mut stats)?;
        }
        Ok(stats)
    }

    /// Re-evaluates every vif xenstore lists, and every vif the binder holds.
    ///
    /// # Errors
    /// The xenstore connection failed.
    pub fn resync<D, S>(&mut self, dir: &D, sink: &mut S) -> Result<PollStats, BinderError>
    where
        D: InterfaceDirectory + ?Sized,
        S: BindSink + ?Sized,
    {
        let mut stats = PollStats::default();
        let keys = self.scan_all()?;
        self.evaluate_set(keys, dir, sink, &mut stats)?;
        Ok(stats)
    }

    /// Re-evaluates the pending vifs (call when the interface directory changed).
    ///
    /// # Errors
    /// The xenstore connection failed.
    pub fn retry_pending<D, S>(&mut self, dir: &D, sink: &mut S) -> Result<PollStats, BinderError>
    where
        D: InterfaceDirectory + ?Sized,
        S: BindSink + ?Sized,
    {
        let mut stats = PollStats::default();
        self.retry_pending_inner(dir, sink, &mut stats)?;
        Ok(stats)
    }

    fn retry_pending_inner<D, S>(
        &mut self,
        dir: &D,
        sink: &mut S,
        stats: &mut PollStats,
    ) -> Result<(), BinderError>
    where
        D: InterfaceDirectory + ?Sized,
        S: BindSink + ?Sized,
    {
        self.last_retry = Instant::now();
        let keys: BTreeSet<VifKey> = self.pending.keys().copied().collect();
        self.evaluate_set(keys, dir, sink, stats)
    }

    fn classify(&self, path: &str) -> Option<Target> {
        let root = self.cfg.root.as_str();
        if path == root
            || (root.starts_with(path) && root.as_bytes().get(path.len()) == Some(&b'/'))
        {
            return Some(Target::All);
        }
        let rest = path.strip_prefix(root)?.strip_prefix('/')?;
        let mut parts = rest.split('/');
        let domid = parse_id(parts.next()?)?;
        match parts.next() {
            None => Some(Target::Domain(domid)),
            Some(dev) => Some(Target::Vif(VifKey {
                domid,
                devid: parse_id(dev)?,
            })),
        }
    }

    fn list(&mut self, path: &str) -> Result<Vec<String>, BinderError> {
        match self.client.directory(path) {
            Ok(v) => Ok(v),
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            Err(e @ XsError::Xs { .. }) => {
                log::warn!("binder: cannot list {path}: {e}");
                Ok(Vec::new())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn scan_domain(&mut self, domid: u32) -> Result<BTreeSet<VifKey>, BinderError> {
        let path = format!("{}/{domid}", self.cfg.root);
        let mut keys: BTreeSet<VifKey> = self
            .list(&path)?
            .iter()
            .filter_map(|d| parse_id(d))
            .map(|devid| VifKey { domid, devid })
            .collect();
        keys.extend(self.known_keys().filter(|k| k.domid == domid));
        Ok(keys)
    }

    fn scan_all(&mut self) -> Result<BTreeSet<VifKey>, BinderError> {
        let root = self.cfg.root.clone();
        let mut keys: BTreeSet<VifKey> = self.known_keys().collect();
        for d in self.list(&root)? {
            let Some(domid) = parse_id(&d) else { continue };
            for dev in self.list(&format!("{root}/{domid}"))? {
                if let Some(devid) = parse_id(&dev) {
                    keys.insert(VifKey { domid, devid });
                }
            }
        }
        Ok(keys)
    }

    fn known_keys(&self) -> impl Iterator<Item = VifKey> + '_ {
        self.bound.keys().chain(self.pending.keys()).copied()
    }

    fn evaluate_set<D, S>(
        &mut self,
        keys: BTreeSet<VifKey>,
        dir: &D,
        sink: &mut S,
        stats: &mut PollStats,
    ) -> Result<(), BinderError>
    where
        D: InterfaceDirectory + ?Sized,
        S: BindSink + ?Sized,
    {
        let mut freed = BTreeSet::new();
        for key in keys {
            self.evaluate(key, dir, sink, stats, &mut freed)?;
        }
        // Vifs that waited for a Nic another vif just released get their turn now (a VM
        // rebooting into a new domain while the old one is torn down).
        while !freed.is_empty() {
            let waiting: Vec<VifKey> = self
                .pending
                .iter()
                .filter(|(_, r)| matches!(r, PendingReason::NicInUse { nic, .. } if freed.contains(nic)))
                .map(|(k, _)| *k)
                .collect();
            freed.clear();
            for key in waiting {
                self.evaluate(key, dir, sink, stats, &mut freed)?;
            }
        }
        Ok(())
    }

    /// Reads one value; `None` if absent. Connection failures are fatal, other refusals are
    /// reported as a pending reason.
    fn get(&mut self, path: &str) -> Result<Result<Option<String>, PendingReason>, BinderError> {
        match self.client.read(path) {
            Ok(v) => Ok(Ok(Some(String::from_utf8_lossy(&v).into_owned()))),
            Err(e) if e.is_not_found() => Ok(Ok(None)),
            Err(e @ XsError::Xs { .. }) => Ok(Err(PendingReason::Xenstore(e.to_string()))),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads what the decision needs. `Ok(None)` if the backend dir is gone.
    fn observe(
        &mut self,
        key: VifKey,
    ) -> Result<Result<Option<VifSnapshot>, PendingReason>, BinderError> {
        let base = format!("{}/{}/{}", self.cfg.root, key.domid, key.devid);
        let listing = match self.client.directory(&base) {
            Ok(l) => l,
            Err(e) if e.is_not_found() => return Ok(Ok(None)),
            Err(e @ XsError::Xs { .. }) => return Ok(Err(PendingReason::Xenstore(e.to_string()))),
            Err(e) => return Err(e.into()),
        };
        let has = |k: &str| listing.iter().any(|n| n == k);
        let mut s = VifSnapshot::default();
        macro_rules! field {
            ($path:expr) => {
                match self.get(&$path)? {
                    Ok(v) => v,
                    Err(r) => return Ok(Err(r)),
                }
            };
        }
        if has("online") {
            s.online = field!(format!("{base}/online"));
        }
        if has("state") {
            s.state = field!(format!("{base}/state"));
        }
        if has("hotplug-status") {
            s.hotplug_status = field!(format!("{base}/hotplug-status"));
        }
        if has("mac") {
            s.mac = field!(format!("{base}/mac"));
        }
        if has("cloudstack") {
            s.nic_id = field!(format!("{base}/cloudstack/nic-id"));
            s.vm_id = field!(format!("{base}/cloudstack/vm-id"));
            s.network_id = field!(format!("{base}/cloudstack/network-id"));
        }
        // Fallbacks only when the contract is absent and the vif is otherwise ready (saves
        // round trips for the common half-written states).
        let ready =
            s.online.as_deref() == Some("1") && s.hotplug_status.as_deref() == Some("connected");
        if s.nic_id.is_none() && ready {
            let dom = format!("/local/domain/{}", key.domid);
            let vm_path = field!(format!("{dom}/vm"));
            let mut private_dirs = Vec::new();
            if let Some(uuid) = vm_path.as_deref().and_then(|p| p.strip_prefix("/vm/")) {
                if uuid.parse::<Uuid>().is_ok() {
                    private_dirs.push(format!("/xapi/{uuid}/private/vif/{}", key.devid));
                }
            }
            private_dirs.push(format!("/xapi/{}/private/vif/{}", key.domid, key.devid));
            for p in private_dirs {
                let nic = field!(format!("{p}/other-config/cloudstack-nic-id"));
                if nic.is_some() {
                    s.private_nic_id = nic;
                    s.private_vm_id = field!(format!("{p}/other-config/cloudstack-vm-id"));
                    s.private_network_id =
                        field!(format!("{p}/other-config/cloudstack-network-id"));
                    break;
                }
            }
            if s.private_nic_id.is_none() {
                s.domain_name = field!(format!("{dom}/name"));
            }
        }
        Ok(Ok(Some(s)))
    }

    fn set_pending(&mut self, key: VifKey, reason: PendingReason) {
        if self.pending.get(&key) != Some(&reason) {
            log::log!(reason.log_level(), "vif {key}: not bound: {reason}");
        }
        self.pending.insert(key, reason);
    }

    /// Unbinds; `false` (and pending) if the sink refused.
    fn do_unbind<S: BindSink + ?Sized>(
        &mut self,
        key: VifKey,
        why: &str,
        sink: &mut S,
        stats: &mut PollStats,
        freed: &mut BTreeSet<Uuid>,
    ) -> bool {
        let Some(b) = self.bound.get(&key).cloned() else {
            return true;
        };
        match sink.unbind(&b) {
            Ok(()) => {
                tracing::info!(
                    vif = %b.port,
                    vm = %b.vm_uuid,
                    nic = %b.nic_uuid,
                    xenstore = %key,
                    "unbound ({why})"
                );
                self.bound.remove(&key);
                if self.by_nic.get(&b.nic_uuid) == Some(&key) {
                    self.by_nic.remove(&b.nic_uuid);
                }
                freed.insert(b.nic_uuid);
                stats.unbound += 1;
                true
            }
            Err(e) => {
                self.set_pending(key, PendingReason::UnbindFailed(e.to_string()));
                false
            }
        }
    }

    fn evaluate<D, S>(
        &mut self,
        key: VifKey,
        dir: &D,
        sink: &mut S,
        stats: &mut PollStats,
        freed: &mut BTreeSet<Uuid>,
    ) -> Result<(), BinderError>
    where
        D: InterfaceDirectory + ?Sized,
        S: BindSink + ?Sized,
    {
        stats.evaluated += 1;
        let decision = match self.observe(key)? {
            Ok(None) => Decision::Down("backend dir gone".into()),
            Ok(Some(s)) => decide(key, &s, dir, self.probe.as_ref()),
            Err(r) => Decision::Pending(r),
        };
        match decision {
            Decision::Down(why) => {
                if self.do_unbind(key, &why, sink, stats, freed) {
                    self.pending.remove(&key);
                }
            }
            Decision::Pending(reason) => {
                if self.bound.contains_key(&key) {
                    let why = format!("no longer identifiable: {reason}");
                    if !self.do_unbind(key, &why, sink, stats, freed) {
                        return Ok(());
                    }
                }
                self.set_pending(key, reason);
            }
            Decision::Bind(b) => {
                if let Some(cur) = self.bound.get(&key) {
                    // Same dataplane effect (possibly found another way, e.g. the contract keys
                    // arrived after a fallback matched): nothing to do. The stored binding stays
                    // exactly what the sink was given, so `unbind` gets the same value.
                    if cur.same_effect(&b) {
                        self.pending.remove(&key);
                        return Ok(());
                    }
                }
                if let Some(&holder) = self.by_nic.get(&b.nic_uuid) {
                    if holder != key {
                        self.set_pending(
                            key,
                            PendingReason::NicInUse {
                                nic: b.nic_uuid,
                                holder,
                            },
                        );
                        return Ok(());
                    }
                }
                if self.bound.contains_key(&key)
                    && !self.do_unbind(key, "binding changed", sink, stats, freed)
                {
                    return Ok(());
                }
                match sink.bind(&b) {
                    Ok(()) => {
                        tracing::info!(
                            vif = %b.port,
                            vm = %b.vm_uuid,
                            nic = %b.nic_uuid,
                            xenstore = %key,
                            by = ?b.identified_by,
                            "bound"
                        );
                        self.by_nic.insert(b.nic_uuid, key);
                        self.bound.insert(key, b);
                        self.pending.remove(&key);
                        stats.bound += 1;
                    }
                    Err(e) => self.set_pending(key, PendingReason::BindFailed(e.to_string())),
                }
            }
        }
        Ok(())
    }
}

/// A decimal domid/devid without sign or leading junk.
fn parse_id(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const NIC: &str = "11111111-2222-3333-4444-555555555555";
    const VM: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
    const NET: &str = "99999999-8888-7777-6666-555555555555";
    const KEY: VifKey = VifKey { domid: 5, devid: 1 };

    fn ready() -> VifSnapshot {
        VifSnapshot {
            online: Some("1".into()),
            state: Some("4".into()),
            hotplug_status: Some("connected".into()),
            mac: Some("02:00:00:00:00:01".into()),
            ..VifSnapshot::default()
        }
    }

    fn contract() -> VifSnapshot {
        VifSnapshot {
            nic_id: Some(NIC.to_uppercase()),
            vm_id: Some(VM.into()),
            network_id: Some(NET.into()),
            ..ready()
        }
    }

    fn iface(nic: &str, name: &str, mac: Option<&str>) -> KnownInterface {
        KnownInterface {
            nic_uuid: nic.parse().unwrap(),
            vm_uuid: VM.parse().unwrap(),
            network_uuid: Some(NET.parse().unwrap()),
            name: name.into(),
            mac: mac.map(|m| m.parse().unwrap()),
        }
    }

    struct Taps;
    impl NetdevProbe for Taps {
        fn exists(&self, name: &str) -> bool {
            name.starts_with("tap")
        }
    }

    fn bind(d: Decision) -> VifBinding {
        match d {
            Decision::Bind(b) => b,
            other => panic!("expected bind, got {other:?}"),
        }
    }

    fn pending(d: Decision) -> PendingReason {
        match d {
            Decision::Pending(r) => r,
            other => panic!("expected pending, got {other:?}"),
        }
    }

    #[test]
    fn test_contract_binds_lower_case() {
        let b = bind(decide(
            KEY,
            &contract(),
            &StaticDirectory::default(),
            &NoTaps,
        ));
        assert_eq!(b.port, "vif5.1");
        assert_eq!(b.nic_uuid.to_string(), NIC);
        assert_eq!(b.vm_uuid.to_string(), VM);
        assert_eq!(b.network_uuid.map(|u| u.to_string()).as_deref(), Some(NET));
        assert_eq!(b.identified_by, IdentifiedBy::Contract);
    }

    #[test]
    fn test_down_states() {
        let dir = StaticDirectory::default();
        for s in [
            VifSnapshot {
                online: Some("0".into()),
                ..contract()
            },
            VifSnapshot {
                state: Some("5".into()),
                ..contract()
            },
            VifSnapshot {
                state: Some("6".into()),
                ..contract()
            },
        ] {
            assert!(
                matches!(decide(KEY, &s, &dir, &NoTaps), Decision::Down(_)),
                "{s:?}"
            );
        }
    }

    #[test]
    fn test_half_written_waits() {
        let dir = StaticDirectory::default();
        let cases: Vec<(VifSnapshot, PendingReason)> = vec![
            (
                VifSnapshot {
                    online: None,
                    ..contract()
                },
                PendingReason::Missing("online"),
            ),
            (
                VifSnapshot {
                    state: None,
                    ..contract()
                },
                PendingReason::Missing("state"),
            ),
            (
                VifSnapshot {
                    hotplug_status: None,
                    ..contract()
                },
                PendingReason::NotConnected(None),
            ),
            (
                VifSnapshot {
                    mac: None,
                    ..contract()
                },
                PendingReason::Missing("mac"),
            ),
            (
                VifSnapshot {
                    vm_id: None,
                    ..contract()
                },
                PendingReason::Missing("cloudstack/vm-id"),
            ),
            (ready(), PendingReason::Unidentified),
        ];
        for (s, want) in cases {
            assert_eq!(pending(decide(KEY, &s, &dir, &NoTaps)), want);
        }
        let bad = VifSnapshot {
            nic_id: Some("not-a-uuid".into()),
            ..contract()
        };
        assert!(matches!(
            pending(decide(KEY, &bad, &dir, &NoTaps)),
            PendingReason::Malformed { .. }
        ));
        let bad = VifSnapshot {
            state: Some("four".into()),
            ..contract()
        };
        assert!(matches!(
            pending(decide(KEY, &bad, &dir, &NoTaps)),
            PendingReason::Malformed { .. }
        ));
        let bad = VifSnapshot {
            mac: Some("02:00".into()),
            ..contract()
        };
        assert!(matches!(
            pending(decide(KEY, &bad, &dir, &NoTaps)),
            PendingReason::Malformed { .. }
        ));
    }

    #[test]
    fn test_malformed_contract_does_not_fall_back_to_mac() {
        let dir = StaticDirectory {
            interfaces: vec![iface(NIC, "i-2-5-VM-1", Some("02:00:00:00:00:01"))],
        };
        let s = VifSnapshot {
            nic_id: Some("garbage".into()),
            vm_id: Some(VM.into()),
            ..ready()
        };
        assert!(matches!(
            pending(decide(KEY, &s, &dir, &NoTaps)),
            PendingReason::Malformed { .. }
        ));
    }

    #[test]
    fn test_fallback_order() {
        let other = "22222222-2222-3333-4444-555555555555";
        let dir = StaticDirectory {
            interfaces: vec![
                iface(NIC, "i-2-5-VM-1", Some("02:00:00:00:00:01")),
                iface(other, "x", None),
            ],
        };
        // Private dir beats MAC.
        let s = VifSnapshot {
            private_nic_id: Some(other.into()),
            ..ready()
        };
        let b = bind(decide(KEY, &s, &dir, &NoTaps));
        assert_eq!(
            (b.nic_uuid.to_string().as_str(), b.identified_by),
            (other, IdentifiedBy::XapiPrivate)
        );
        // MAC.
        let b = bind(decide(KEY, &ready(), &dir, &NoTaps));
        assert_eq!(
            (b.nic_uuid.to_string().as_str(), b.identified_by),
            (NIC, IdentifiedBy::Mac)
        );
        // Name, when the MAC is unknown.
        let s = VifSnapshot {
            mac: Some("02:00:00:00:00:99".into()),
            domain_name: Some("i-2-5-VM".into()),
            ..ready()
        };
        let dir = StaticDirectory {
            interfaces: vec![iface(NIC, "i-2-5-VM-1", None)],
        };
        let b = bind(decide(KEY, &s, &dir, &NoTaps));
        assert_eq!(b.identified_by, IdentifiedBy::Name);
        // Name of another devid does not match.
        let other_dev = VifKey { domid: 5, devid: 0 };
        assert_eq!(
            pending(decide(other_dev, &s, &dir, &NoTaps)),
            PendingReason::Unidentified
        );
    }

    #[test]
    fn test_ambiguous_mac_waits() {
        let dir = StaticDirectory {
            interfaces: vec![
                iface(NIC, "a", Some("02:00:00:00:00:01")),
                iface(
                    "22222222-2222-3333-4444-555555555555",
                    "b",
                    Some("02:00:00:00:00:01"),
                ),
            ],
        };
        assert!(matches!(
            pending(decide(KEY, &ready(), &dir, &NoTaps)),
            PendingReason::AmbiguousMac(_, 2)
        ));
    }

    #[test]
    fn test_contract_mac_mismatch_waits() {
        let dir = StaticDirectory {
            interfaces: vec![iface(NIC, "a", Some("02:00:00:00:00:77"))],
        };
        assert!(matches!(
            pending(decide(KEY, &contract(), &dir, &NoTaps)),
            PendingReason::MacMismatch { .. }
        ));
    }

    #[test]
    fn test_tap_until_pv_connected() {
        let dir = StaticDirectory::default();
        let s = VifSnapshot {
            state: Some("2".into()),
            ..contract()
        };
        assert_eq!(bind(decide(KEY, &s, &dir, &Taps)).port, "tap5.1");
        assert_eq!(bind(decide(KEY, &s, &dir, &NoTaps)).port, "vif5.1");
        assert_eq!(bind(decide(KEY, &contract(), &dir, &Taps)).port, "vif5.1");
    }

    #[test]
    fn test_parse_id() {
        assert_eq!(parse_id("12"), Some(12));
        for bad in ["", "-1", "+1", "1a", "99999999999", " 1"] {
            assert_eq!(parse_id(bad), None);
        }
    }
}
