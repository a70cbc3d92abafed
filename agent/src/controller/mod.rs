//! The controller config source (`--controller URL`): the agent's half of the shim's agent API
//! (`docs/shim.md`, "Agent API"), spoken through the typed contract of `vrouter-api`.
//!
//! * A **worker** thread registers the agent (`POST /vrouter/agents`), announces every vif the
//!   xenstore binder bound (`POST /vrouter/bindings`, then `GET /vrouter/interfaces/<vmi>` for a
//!   quick first config), withdraws unbound ones, advertises each programmed interface's /32
//!   with its label (and each floating IP with its public VRF's table label), and resolves the
//!   underlay MAC of every remote host it needs (ARP through the host stack, see
//!   [`neighbour`]).
//! * A **watch** thread follows `GET /vrouter/watch` (long-poll, resumed with `since`, a
//!   `reset` replaces everything) into the [`ControllerState`].
//! * [`ControllerState::build`] (I/O-free) turns that state into the agent's [`Config`]:
//!   one network per VRF name, the bound interfaces under their dom0 port names, floating IPs,
//!   remote routes with label, nexthop = the remote fabric IP and the default encapsulation.
//!
//! Headless-safe: an unreachable shim changes nothing (the state is kept, calls are retried with
//! a backoff up to 30 s); the agent applies nothing before the first watch answer (and the first
//! xenstore scan), so a restarted agent never removes what the dataplane holds; it takes the
//! underlay MACs of remote hosts from the dataplane's tunnels until ARP answers
//! ([`ConfigSource::adopt`]), so its first pass keeps their routes too. A shim speaking
//! another contract version is logged as an error and retried the same way.
//!
//! Modules: `state` (what the watch and xenstore told us), `build` (state → [`Config`]),
//! `rules` (policy rule expansion), `advert` (what to advertise), [`neighbour`] (underlay
//! MACs), and the threads: `shared` (their common state), `worker`, `watcher`.

mod advert;
mod build;
mod chains;
pub mod neighbour;
mod rules;
mod shared;
mod state;
mod system;
mod watcher;
mod worker;

pub use advert::{adverts, Adverts};
pub use build::Built;
pub use rules::{expand_rules, fip_rules, MAX_RULES};
pub use state::{ControllerState, Port};
pub use worker::{FabricIpError, WorkerError};

use crate::compile::Compiled;
use crate::config::Config;
use crate::daemon::Observer;
use crate::dump::DumpIndex;
use crate::source::{ConfigSource, SourceError};
use crate::xenbind::BindTarget;
use shared::Shared;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use vrouter_api::client::AgentApi;
use vrouter_dataplane::tables::TunnelKind;
use vrouter_dataplane::wire::MacAddr;

/// Fixed settings of the controller source.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Controller base URL, e.g. `http://10.0.0.5:8082`.
    pub url: String,
    /// `X-Auth-Token`.
    pub token: Option<String>,
    /// Our host name at the shim.
    pub host: String,
    /// Our fabric IP (default: the dataplane's).
    pub fabric_ip: Option<Ipv4Addr>,
    /// Underlay next-hop MAC for remote hosts whose MAC is not resolved (routed underlay).
    pub gateway_mac: Option<MacAddr>,
    /// Fixed underlay MACs per remote host (win over ARP).
    pub neighbours: BTreeMap<Ipv4Addr, MacAddr>,
    /// Resolve remote hosts' MACs by ARP through the host stack.
    pub arp: bool,
    /// Encapsulation of remote routes.
    pub encap: TunnelKind,
    /// MTU of interfaces whose config has none.
    pub mtu: u16,
    /// Dataplane control socket (to learn the fabric IP).
    pub dp_socket: PathBuf,
    /// Whether a xenstore binder reports the bound ports (readiness waits for its first scan).
    pub xenstore: bool,
}

/// The controller config source. See the module docs.
#[derive(Debug)]
pub struct ControllerSource {
    shared: Arc<Shared>,
    last_warnings: Vec<String>,
    /// The VIP claim table's generation the last load saw.
    vip_gen: u64,
    /// Whether the dataplane's VIP routes were adopted (once, at the first pass).
    vips_adopted: bool,
}

impl ControllerSource {
    /// Starts the worker and watch threads.
    ///
    /// # Errors
    /// A thread could not be spawned.
    pub fn start(s: Settings) -> std::io::Result<Self> {
        let api = AgentApi::new(&s.url, s.token.clone());
        let shared = Arc::new(Shared::new(s, api));
        let w = shared.clone();
        std::thread::Builder::new()
            .name("controller".into())
            .spawn(move || worker::run(&w))?;
        let w = shared.clone();
        std::thread::Builder::new()
            .name("controller-watch".into())
            .spawn(move || watcher::run(&w))?;
        Ok(Self {
            shared,
            last_warnings: Vec::new(),
            vip_gen: 0,
            vips_adopted: false,
        })
    }

    /// The binder target (xenstore bindings go to the controller state).
    pub fn bind_target(&self) -> Arc<dyn BindTarget> {
        self.shared.clone()
    }

    /// The observer that advertises what each pass programmed.
    pub fn observer(&self) -> Observer {
        let shared = self.shared.clone();
        Box::new(move |cfg: &Config, compiled: &Compiled| {
            crate::vip::registry().set_members(vip_members(cfg, compiled));
            let mut g = shared.lock();
            let want = adverts(cfg, compiled, &g.vmi_of_port);
            if want != g.want_adverts {
                g.want_adverts = want;
                shared.kick(&mut g);
            }
        })
    }
}

/// The VIP claims a previous run left in the dataplane: a pair address (not one of the
/// interface's own) whose /32 in the interface's VRF goes to the nexthop of a bound interface
/// with that pair. ((VRF, VIP), port) each.
fn dataplane_vip_claims(st: &ControllerState, dp: &DumpIndex) -> Vec<((String, Ipv4Addr), String)> {
    let d = &dp.dump;
    let vrf_name: BTreeMap<u16, &str> = d.vrfs.iter().map(|v| (v.id, v.name.as_str())).collect();
    let port_of_nh: BTreeMap<u32, &str> = d
        .vifs
        .iter()
        .filter_map(|v| Some((v.nh?, v.name.as_str())))
        .collect();
    let config_of_port: BTreeMap<&str, &vrouter_api::interface::InterfaceConfig> = st
        .ports
        .iter()
        .filter_map(|(vmi, p)| Some((p.name.as_str(), st.ifaces.get(vmi)?)))
        .collect();
    d.routes
        .iter()
        .filter(|r| r.plen == 32 && r.route.label.is_none())
        .filter_map(|r| {
            let port = *port_of_nh.get(&r.route.nh)?;
            let c = config_of_port.get(port)?;
            let vrf = *vrf_name.get(&r.vrf)?;
            let ip = Ipv4Addr::from(r.prefix);
            let pair = c
                .allowed_address_pairs
                .iter()
                .any(|p| p.prefix.contains(ip));
            let own = c.ips.iter().any(|i| i.ipv4() == Some(ip));
            (c.vrf() == Some(vrf) && pair && !own)
                .then(|| ((vrf.to_string(), ip), port.to_string()))
        })
        .collect()
}

/// The programmed interfaces by vif id: who may claim a VIP, whose VM may announce itself.
fn vip_members(cfg: &Config, compiled: &Compiled) -> BTreeMap<u16, crate::vip::Member> {
    compiled
        .bindings
        .iter()
        .filter_map(|b| {
            let i = cfg.interfaces.iter().find(|i| i.name == b.name)?;
            let net = cfg.network(&i.network)?;
            let m = crate::vip::Member {
                port: i.name.clone(),
                vrf: net.vrf.clone(),
                mac: i.mac,
                pairs: i.pairs.clone(),
                own: std::iter::once(i.ip)
                    .chain(i.secondary.iter().copied())
                    .collect(),
            };
            Some((b.vif, m))
        })
        .collect()
}

impl ConfigSource for ControllerSource {
    fn describe(&self) -> String {
        format!(
            "controller {} (host {})",
            self.shared.s.url, self.shared.s.host
        )
    }

    fn load(&mut self) -> Result<Config, SourceError> {
        let mut g = self.shared.lock();
        g.changed = false;
        {
            let mut claims = crate::vip::registry();
            self.vip_gen = claims.generation();
            g.st.claims = claims.owned().clone();
            claims.stamp_arrivals(g.st.since);
            g.st.arrived = claims.arrived();
        }
        let built = g.st.build(&self.shared.s);
        if !built.yielded.is_empty() {
            // Yielded claims leave the table; the next pass routes those VIPs to their host.
            crate::vip::registry().yield_to_remote(&built.yielded);
        }
        g.vmi_of_port = built.vmi_of_port;
        if built.unresolved != g.unresolved {
            g.unresolved = built.unresolved;
            if !g.unresolved.is_empty() {
                self.shared.kick(&mut g);
            }
        }
        drop(g);
        if built.warnings != self.last_warnings {
            for w in &built.warnings {
                log::warn!("controller: {w}");
            }
            self.last_warnings = built.warnings;
        }
        Ok(built.config)
    }

    fn changed(&mut self) -> bool {
        self.shared.lock().changed || crate::vip::registry().generation() != self.vip_gen
    }

    fn ready(&mut self) -> bool {
        let g = self.shared.lock();
        g.watch_ok && g.scanned
    }

    fn warnings(&self) -> Vec<String> {
        self.last_warnings.clone()
    }

    fn adopt(&mut self, dp: &DumpIndex) -> bool {
        let vips = !self.vips_adopted && self.adopt_vip_claims(dp);
        self.vips_adopted = true;
        self.adopt_tunnel_macs(dp) | vips
    }
}

impl ControllerSource {
    /// Once, at the first pass: the VIP claims of a previous run, from the dataplane's routes
    /// (see [`dataplane_vip_claims`]). True if any was taken.
    fn adopt_vip_claims(&mut self, dp: &DumpIndex) -> bool {
        let found = dataplane_vip_claims(&self.shared.lock().st, dp);
        let mut claims = crate::vip::registry();
        let mut taken = false;
        for (key, port) in found {
            log::info!("vip: {} in {} stays with {port} (dataplane)", key.1, key.0);
            taken |= claims.adopt(key, port);
        }
        taken
    }

    /// The underlay MACs of the dataplane's tunnels (see [`neighbour::tunnel_macs`]).
    fn adopt_tunnel_macs(&mut self, dp: &DumpIndex) -> bool {
        let s = &self.shared.s;
        if !s.arp {
            return false; // adopted MACs are not used without ARP (see build)
        }
        let mut macs = neighbour::tunnel_macs(dp);
        macs.retain(|ip, _| !s.neighbours.contains_key(ip));
        if macs.is_empty() {
            return false;
        }
        let new = self.shared.lock().st.adopt_tunnel_macs(macs);
        if new {
            log::info!("underlay: taking the MACs of the dataplane's tunnels until ARP answers");
        }
        new
    }
}

#[cfg(test)]
mod address_tests;
#[cfg(test)]
mod chain_tests;
#[cfg(test)]
mod tests;
