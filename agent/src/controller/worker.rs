//! The worker thread: registers the agent, announces the xenstore bindings (and fetches a
//! first config for each), advertises and withdraws routes, and resolves underlay MACs. Every
//! call to the shim is idempotent, so a failed pass is simply run again after a backoff.

use super::neighbour;
use super::shared::Shared;
use super::Adverts;
use std::collections::btree_map::Entry;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use vrouter_api::agent::{Advertise, Withdraw};
use vrouter_api::client::ClientError;
use vrouter_api::Uuid;
use vrouter_dataplane::ctl::{CtlClient, CtlError, Request, Response};
use vrouter_dataplane::wire::MacAddr;

/// Known underlay neighbours are re-checked this often.
const NEIGH_REFRESH: Duration = Duration::from_secs(30);

/// Re-announce everything this often (idempotent at the shim; heals a shim that lost state).
const REANNOUNCE: Duration = Duration::from_secs(60);

/// Why a worker pass stopped short.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The shim did not do what was asked (down, refused, another contract version).
    #[error(transparent)]
    Shim(#[from] ClientError),
    /// Our fabric IP is not known yet: local, so retried every second without backoff.
    #[error("fabric IP: {0}")]
    FabricIp(#[from] FabricIpError),
}

/// Why the dataplane could not tell our fabric IP.
#[derive(Debug, thiserror::Error)]
pub enum FabricIpError {
    /// The control socket failed.
    #[error(transparent)]
    Ctl(#[from] CtlError),
    /// The dataplane runs without one.
    #[error("the dataplane has no fabric IP (vrouter-dp --fabric-ip, or --fabric-ip here)")]
    Unset,
    /// The dataplane answered something else.
    #[error("unexpected answer to Info")]
    Unexpected,
}

fn dataplane_fabric_ip(sock: &std::path::Path) -> Result<Ipv4Addr, FabricIpError> {
    match CtlClient::connect(sock)?.request(&Request::Info)? {
        Response::Info { host, .. } if host.fabric_ip != 0 => Ok(Ipv4Addr::from(host.fabric_ip)),
        Response::Info { .. } => Err(FabricIpError::Unset),
        _ => Err(FabricIpError::Unexpected),
    }
}

/// The shim forgot us (restarted, lease expired): register again.
fn not_registered(e: &ClientError) -> bool {
    matches!(e, ClientError::Status { code: 404, message } if message.contains("not registered"))
}

/// A request the shim refuses (4xx other than "not registered" and a bad token) is logged and
/// counted as done: retrying it cannot help, and it must not hold up everything after it.
fn refused_is_done<T>(r: Result<T, ClientError>) -> Result<Option<T>, ClientError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(ClientError::Status { code, message })
            if (400..500).contains(&code)
                && code != 401
                && !(code == 404 && message.contains("not registered")) =>
        {
            log::warn!("controller refused a request (HTTP {code}): {message}");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Exponential backoff 1 s .. 30 s.
#[derive(Debug)]
struct Backoff {
    next: Duration,
    until: Option<Instant>,
}

impl Backoff {
    fn new() -> Self {
        Self {
            next: Duration::from_secs(1),
            until: None,
        }
    }
    fn fail(&mut self) {
        self.until = Some(Instant::now() + self.next);
        self.next = (self.next * 2).min(Duration::from_secs(30));
    }
    fn ok(&mut self) {
        self.next = Duration::from_secs(1);
        self.until = None;
    }
    fn waiting(&self) -> bool {
        self.until.is_some_and(|t| Instant::now() < t)
    }
}

/// The worker thread's loop. Never returns.
pub(super) fn run(sh: &Shared) {
    let mut backoff = Backoff::new();
    let mut ann = Announcer::new();
    let mut down_logged = false;
    let mut last_refresh = Instant::now();
    loop {
        wait_for_work(sh);
        // Underlay neighbours are local: they work while the shim is down.
        if sh.s.arp {
            resolve_neighbours(sh);
            if last_refresh.elapsed() >= NEIGH_REFRESH {
                last_refresh = Instant::now();
                refresh_neighbours(sh);
            }
        }
        if backoff.waiting() {
            continue;
        }
        match ann.pass(sh) {
            Ok(()) => {
                if down_logged {
                    log::info!("controller {} answers again", sh.s.url);
                    down_logged = false;
                }
                backoff.ok();
            }
            Err(WorkerError::Shim(e)) if not_registered(&e) => {
                log::warn!("controller: {e}; registering again");
                sh.lock().registered = false;
                ann.forget();
            }
            Err(WorkerError::Shim(ClientError::Version(v))) => {
                // Logged at every retry (the backoff spaces them): nothing works until an
                // operator upgrades one side.
                log::error!("controller {}: {v}; retrying with backoff", sh.s.url);
                down_logged = true;
                backoff.fail();
            }
            Err(e) => {
                if !down_logged {
                    log::warn!(
                        "controller {}: {e}; keeping the current state, retrying with backoff",
                        sh.s.url
                    );
                    down_logged = true;
                }
                if !matches!(e, WorkerError::FabricIp(_)) {
                    backoff.fail();
                }
            }
        }
    }
}

/// Sleeps until kicked, or 1 s (200 ms while underlay MACs are missing).
fn wait_for_work(sh: &Shared) {
    let mut g = sh.lock();
    if !g.kick {
        let t = if g.unresolved.is_empty() {
            Duration::from_secs(1)
        } else {
            Duration::from_millis(200)
        };
        g = sh.wait(g, t);
    }
    g.kick = false;
}

/// Looks up the hosts whose MAC routes wait for; probes those not in the ARP table yet.
fn resolve_neighbours(sh: &Shared) {
    let unresolved: Vec<Ipv4Addr> = sh.lock().unresolved.iter().copied().collect();
    let mut found = Vec::new();
    for ip in unresolved {
        match neighbour::lookup(ip) {
            Some(m) => found.push((ip, m)),
            None => neighbour::probe(ip),
        }
    }
    if !found.is_empty() {
        let mut g = sh.lock();
        for (ip, m) in found {
            log::info!("underlay: {ip} is at {m} (ARP)");
            g.st.neighbours.insert(ip, m);
            g.unresolved.remove(&ip);
        }
        g.changed = true;
    }
}

/// Re-checks known neighbours (the probe makes a stale entry re-resolve), so a remote host
/// whose fabric MAC changed is followed.
fn refresh_neighbours(sh: &Shared) {
    let known: Vec<(Ipv4Addr, MacAddr)> = sh
        .lock()
        .st
        .neighbours
        .iter()
        .map(|(i, m)| (*i, *m))
        .collect();
    for (ip, old) in known {
        neighbour::probe(ip);
        match neighbour::lookup(ip) {
            Some(m) if m != old => {
                log::info!("underlay: {ip} moved from {old} to {m} (ARP)");
                let mut g = sh.lock();
                g.st.neighbours.insert(ip, m);
                g.changed = true;
            }
            _ => {}
        }
    }
}

/// What the worker has told the shim; forgotten (so told again) on re-registration and every
/// [`REANNOUNCE`].
#[derive(Debug)]
struct Announcer {
    /// VMIs bound at the shim.
    announced: BTreeSet<Uuid>,
    /// Routes advertised.
    advertised: Adverts,
    /// When everything was last re-announced.
    last_full: Instant,
    /// Stale bindings from before a restart have been removed.
    cleaned: bool,
}

impl Announcer {
    fn new() -> Self {
        Announcer {
            announced: BTreeSet::new(),
            advertised: Adverts::new(),
            last_full: Instant::now(),
            cleaned: false,
        }
    }

    fn forget(&mut self) {
        self.announced.clear();
        self.advertised.clear();
    }

    /// One pass: register if needed, then bring the shim's bindings and routes for this host
    /// to what xenstore and the last programmed config say.
    fn pass(&mut self, sh: &Shared) -> Result<(), WorkerError> {
        self.ensure_registered(sh)?;
        let level = self.reannounce_level();
        let (want_ports, scanned): (BTreeSet<Uuid>, bool) = {
            let g = sh.lock();
            (g.st.ports.keys().copied().collect(), g.scanned)
        };
        if scanned && !self.cleaned {
            clean_stale_bindings(sh, &want_ports)?;
            self.cleaned = true;
        }
        self.sync_bindings(sh, &want_ports, level)?;
        self.sync_adverts(sh, level)?;
        Ok(())
    }

    fn ensure_registered(&mut self, sh: &Shared) -> Result<(), WorkerError> {
        let (registered, fabric) = {
            let g = sh.lock();
            (g.registered, g.fabric_ip)
        };
        if registered {
            return Ok(());
        }
        let fabric = match fabric {
            Some(f) => f,
            None => {
                let f = dataplane_fabric_ip(&sh.s.dp_socket)?;
                sh.lock().fabric_ip = Some(f);
                f
            }
        };
        let r = sh.api.register(&sh.s.host, fabric)?;
        log::info!(
            "controller: registered as {} (fabric {fabric}) at {}, rev {}",
            sh.s.host,
            sh.s.url,
            r.rev
        );
        sh.lock().registered = true;
        sh.notify();
        self.forget();
        Ok(())
    }

    /// Info normally; the periodic re-announce forgets what was told and is logged at debug
    /// level only.
    fn reannounce_level(&mut self) -> log::Level {
        if self.last_full.elapsed() < REANNOUNCE {
            return log::Level::Info;
        }
        self.last_full = Instant::now();
        self.forget();
        log::Level::Debug
    }

    /// Binds new ports (fetching a first config the watch may not have brought yet), unbinds
    /// gone ones (their routes go with them at the shim).
    fn sync_bindings(
        &mut self,
        sh: &Shared,
        want_ports: &BTreeSet<Uuid>,
        level: log::Level,
    ) -> Result<(), WorkerError> {
        let host = &sh.s.host;
        let new: Vec<Uuid> = want_ports.difference(&self.announced).copied().collect();
        for vmi in new {
            refused_is_done(sh.api.bind(host, vmi))?;
            self.announced.insert(vmi);
            if level == log::Level::Info {
                tracing::info!(nic = %vmi, host = %host, "controller: binding announced");
            } else {
                tracing::debug!(nic = %vmi, host = %host, "controller: binding announced");
            }
            if let Some(c) = refused_is_done(sh.api.interface(vmi))?.flatten() {
                // The watch's value, if it already brought one, is as new or newer.
                let mut g = sh.lock();
                if let Entry::Vacant(e) = g.st.ifaces.entry(vmi) {
                    e.insert(c);
                    g.dir_gen += 1;
                    g.changed = true;
                }
            }
        }
        let gone: Vec<Uuid> = self.announced.difference(want_ports).copied().collect();
        for vmi in gone {
            refused_is_done(sh.api.unbind(host, vmi))?;
            self.announced.remove(&vmi);
            self.advertised.retain(|_, (_, v)| *v != vmi);
            tracing::info!(nic = %vmi, "controller: binding removed");
        }
        Ok(())
    }

    /// Advertises what the last programmed config wants (once its VMI is bound), withdraws
    /// what it no longer does.
    fn sync_adverts(&mut self, sh: &Shared, level: log::Level) -> Result<(), WorkerError> {
        let host = &sh.s.host;
        let want = sh.lock().want_adverts.clone();
        for (k, v) in &want {
            let ((vrf, prefix), (label, vmi)) = (k, v);
            if self.advertised.get(k) == Some(v) || !self.announced.contains(vmi) {
                continue;
            }
            let ad = Advertise {
                host: host.clone(),
                vrf: vrf.clone(),
                prefix: *prefix,
                label: *label,
                nexthop: None,
                vmi_uuid: Some(*vmi),
            };
            if let Some(done) = refused_is_done(sh.api.advertise(&ad))? {
                crate::vip::registry().advertised(vrf, *prefix, done.rev);
            }
            log::log!(
                level,
                "controller: advertised {prefix} in {vrf} label {label} (vmi {vmi})"
            );
            self.advertised.insert(k.clone(), *v);
        }
        let gone: Vec<(String, _)> = self
            .advertised
            .keys()
            .filter(|k| !want.contains_key(*k))
            .cloned()
            .collect();
        for k in gone {
            let w = Withdraw {
                host: host.clone(),
                vrf: k.0.clone(),
                prefix: k.1,
            };
            refused_is_done(sh.api.withdraw(&w))?;
            log::info!("controller: withdrew {} in {}", k.1, k.0);
            self.advertised.remove(&k);
        }
        Ok(())
    }
}

/// Once xenstore has been scanned: bindings the shim still holds for us from before a restart
/// that xenstore no longer has are removed (their routes are withdrawn with them).
fn clean_stale_bindings(sh: &Shared, want_ports: &BTreeSet<Uuid>) -> Result<(), WorkerError> {
    let host = &sh.s.host;
    for vmi in sh.api.bindings_of(host)? {
        if !want_ports.contains(&vmi) {
            tracing::info!(
                nic = %vmi,
                "controller: no longer on this host (xenstore); removing the binding"
            );
            refused_is_done(sh.api.unbind(host, vmi))?;
        }
    }
    Ok(())
}
