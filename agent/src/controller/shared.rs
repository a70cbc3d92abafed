//! The state the agent loop, the worker and watch threads and the xenstore binder share, and
//! the binder's view of it.

use super::{Adverts, ControllerState, Port, Settings};
use crate::xenbind::BindTarget;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;
use vrouter_api::client::AgentApi;
use vrouter_api::Uuid;
use vrouter_xen::binder::{KnownInterface, VifBinding};

/// Everything behind the lock.
#[derive(Debug, Default)]
pub(super) struct Inner {
    /// What the controller and xenstore said.
    pub(super) st: ControllerState,
    /// Something for the agent loop to reload.
    pub(super) changed: bool,
    /// What the last pass programmed wants advertised.
    pub(super) want_adverts: Adverts,
    /// Remote hosts whose MAC we need.
    pub(super) unresolved: BTreeSet<Ipv4Addr>,
    /// Port -> VMI of the last built config.
    pub(super) vmi_of_port: BTreeMap<String, Uuid>,
    /// The shim knows us (the watch waits for it).
    pub(super) registered: bool,
    /// Our fabric IP, once known (settings or the dataplane).
    pub(super) fabric_ip: Option<Ipv4Addr>,
    /// A watch answer has arrived since start (readiness).
    pub(super) watch_ok: bool,
    /// xenstore has been scanned once (readiness).
    pub(super) scanned: bool,
    /// Bumped whenever the binder's directory may answer differently.
    pub(super) dir_gen: u64,
    /// The worker has something to do now.
    pub(super) kick: bool,
}

/// The settings, the shim client and the shared state with its wake-up.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) s: Settings,
    pub(super) api: AgentApi,
    inner: Mutex<Inner>,
    cv: Condvar,
}

impl Shared {
    pub(super) fn new(s: Settings, api: AgentApi) -> Self {
        Shared {
            inner: Mutex::new(Inner {
                scanned: !s.xenstore,
                fabric_ip: s.fabric_ip,
                ..Inner::default()
            }),
            s,
            api,
            cv: Condvar::new(),
        }
    }

    /// The state; a panicked holder does not stop the others (the state stays consistent
    /// field by field).
    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the worker now.
    pub(super) fn kick(&self, g: &mut Inner) {
        g.kick = true;
        self.cv.notify_all();
    }

    /// Wakes the threads waiting for something other than a kick (registration).
    pub(super) fn notify(&self) {
        self.cv.notify_all();
    }

    /// Waits for a notification or `t`, whichever comes first.
    pub(super) fn wait<'a>(&self, g: MutexGuard<'a, Inner>, t: Duration) -> MutexGuard<'a, Inner> {
        self.cv
            .wait_timeout(g, t)
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0)
    }
}

impl BindTarget for Shared {
    fn directory(&self) -> Vec<KnownInterface> {
        self.lock().st.directory()
    }
    fn directory_generation(&self) -> u64 {
        self.lock().dir_gen
    }
    fn bound(&self, b: &VifBinding) {
        let mut g = self.lock();
        g.st.ports.insert(
            b.nic_uuid,
            Port {
                name: b.port.clone(),
                mac: b.mac,
            },
        );
        g.changed = true;
        self.kick(&mut g);
    }
    fn unbound(&self, b: &VifBinding) {
        let mut g = self.lock();
        if g.st
            .ports
            .get(&b.nic_uuid)
            .is_some_and(|p| p.name == b.port)
        {
            g.st.ports.remove(&b.nic_uuid);
        }
        g.changed = true;
        self.kick(&mut g);
    }
    fn scanned(&self) {
        let mut g = self.lock();
        g.scanned = true;
        g.changed = true;
        self.kick(&mut g);
    }
}
