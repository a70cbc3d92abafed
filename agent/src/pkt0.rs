//! The agent's end of `pkt0`: a thread that receives the packets the dataplane traps (agent
//! header + Ethernet frame), hands them to [`PacketServices`] (DHCP, ICMP) and sends back what
//! they answer.
//!
//! The dataplane binds its datagram socket (`vrouter-dp --agent-socket`); we bind ours
//! (`--agent-local-socket`) and send to theirs. Trapped packets go to whoever sent last, so the
//! thread says hello (an empty datagram) at start and every few seconds: a restarted dataplane
//! learns where we are within that time. The served interfaces follow what the agent programmed
//! (an [`Observer`] after each pass: vif id, VRF, MAC, IP, subnet, gateway, DNS, MTU).

use crate::compile::Compiled;
use crate::config::Config;
use crate::daemon::Observer;
use crate::services::{PacketServices, ServedInterface, VrfGateway};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the services should serve.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Interfaces by vif id.
    pub ifaces: BTreeMap<u16, ServedInterface>,
    /// Gateways per VRF id.
    pub gateways: BTreeMap<u16, Vec<VrfGateway>>,
}

/// Computes the plan from a programmed configuration. I/O-free.
pub fn plan(cfg: &Config, compiled: &Compiled) -> Plan {
    let mut p = Plan::default();
    let vrf_id: BTreeMap<&str, u16> = compiled
        .desired
        .vrfs
        .iter()
        .map(|(id, n)| (n.as_str(), *id))
        .collect();
    for n in &cfg.networks {
        if let (Some(g), Some(s), Some(id)) = (n.gateway, n.subnet, vrf_id.get(n.vrf.as_str())) {
            p.gateways.entry(*id).or_default().push(VrfGateway {
                addr: g,
                prefix_len: s.len,
            });
        }
    }
    let by_name: std::collections::HashMap<&str, &crate::config::Interface> = cfg
        .interfaces
        .iter()
        .map(|i| (i.name.as_str(), i))
        .collect();
    for b in &compiled.bindings {
        let Some(i) = by_name.get(b.name.as_str()) else {
            continue;
        };
        let Some(net) = cfg.network(&i.network) else {
            continue;
        };
        let (Some(gw), Some(sub)) = (net.gateway, net.subnet) else {
            continue;
        };
        let mut s = ServedInterface::new(b.vif, b.vrf, i.mac, i.ip, sub.len, gw);
        s.dns = i
            .dns
            .iter()
            .copied()
            .take(crate::services::MAX_DNS_SERVERS)
            .collect();
        s.mtu = Some(i.mtu);
        p.ifaces.insert(b.vif, s);
    }
    p
}

/// Shared between the observer (agent loop) and the pkt0 thread.
#[derive(Debug, Clone, Default)]
pub struct PlanHandle(Arc<Mutex<(u64, Plan)>>);

impl PlanHandle {
    /// The observer that keeps the plan equal to what was programmed.
    pub fn observer(&self) -> Observer {
        let h = self.0.clone();
        Box::new(move |cfg: &Config, compiled: &Compiled| {
            let p = plan(cfg, compiled);
            let mut g = h.lock().unwrap_or_else(|e| e.into_inner());
            if g.1 != p {
                g.0 += 1;
                g.1 = p;
            }
        })
    }

    fn get(&self) -> (u64, Plan) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Applies `p` to `svc` (leases of unchanged interfaces are kept).
pub fn apply_plan(svc: &mut PacketServices, old: &Plan, p: &Plan) {
    for vif in old.ifaces.keys() {
        if !p.ifaces.contains_key(vif) {
            svc.remove_interface(*vif);
        }
    }
    for (vif, i) in &p.ifaces {
        if svc.interface(*vif) != Some(i) {
            if let Err(e) = svc.add_interface(i.clone()) {
                log::warn!("pkt0: not serving vif {vif}: {e}");
            }
        }
    }
    for vrf in old.gateways.keys() {
        if !p.gateways.contains_key(vrf) {
            let _ = svc.set_vrf_gateways(*vrf, Vec::new());
        }
    }
    for (vrf, g) in &p.gateways {
        if let Err(e) = svc.set_vrf_gateways(*vrf, g.clone()) {
            log::warn!("pkt0: gateways of vrf {vrf}: {e}");
        }
    }
}

/// pkt0 settings.
#[derive(Debug, Clone)]
pub struct Pkt0Options {
    /// The dataplane's socket.
    pub dp_socket: PathBuf,
    /// Ours.
    pub local_socket: PathBuf,
}

/// Starts the thread. Our socket is bound there; if that fails (a missing directory that cannot
/// be created, permissions) it is logged and retried every 5 s: forwarding does not depend on
/// pkt0, so the agent keeps running.
///
/// # Errors
/// The thread could not be spawned.
pub fn spawn(opts: Pkt0Options, plan: PlanHandle) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("pkt0".into())
        .spawn(move || {
            let mut logged = false;
            let sock = loop {
                match bind(&opts.local_socket) {
                    Ok(s) => break s,
                    Err(e) => {
                        if !logged {
                            log::error!(
                            "pkt0: cannot bind {}: {e}; DHCP/ICMP not served, retrying every 5s",
                            opts.local_socket.display()
                        );
                            logged = true;
                        }
                        std::thread::sleep(Duration::from_secs(5));
                    }
                }
            };
            run(&opts, &sock, &plan)
        })
}

fn bind(path: &Path) -> std::io::Result<UnixDatagram> {
    if let Some(d) = path.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    let _ = std::fs::remove_file(path);
    let s = UnixDatagram::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(s)
}

const HELLO_EVERY: Duration = Duration::from_secs(2);

fn run(opts: &Pkt0Options, sock: &UnixDatagram, handle: &PlanHandle) {
    let mut svc = PacketServices::new();
    let mut cur = Plan::default();
    let mut gen = 0u64;
    let mut last_hello: Option<Instant> = None;
    let mut down_logged = false;
    let mut buf = vec![0u8; 65_536];
    log::info!(
        "pkt0: {} <-> dataplane {}",
        opts.local_socket.display(),
        opts.dp_socket.display()
    );
    loop {
        if last_hello.is_none_or(|t| t.elapsed() >= HELLO_EVERY) {
            last_hello = Some(Instant::now());
            match sock.send_to(&[], &opts.dp_socket) {
                Ok(_) => {
                    if down_logged {
                        log::info!("pkt0: dataplane socket reachable again");
                        down_logged = false;
                    }
                }
                Err(e) => {
                    if !down_logged {
                        log::warn!("pkt0: hello to {}: {e}; retrying", opts.dp_socket.display());
                        down_logged = true;
                    }
                }
            }
        }
        let (g, p) = handle.get();
        if g != gen {
            apply_plan(&mut svc, &cur, &p);
            log::info!(
                "pkt0: serving {} interfaces in {} VRFs",
                p.ifaces.len(),
                p.gateways.len()
            );
            gen = g;
            cur = p;
        }
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                log::warn!("pkt0: receive: {e}");
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        if let Some(g) = crate::vip::parse_garp(&buf[..n]) {
            if let Some((vrf, ip)) = crate::vip::registry().garp(&g) {
                log::info!("vip: {ip} in {vrf} announced by vif {} ({})", g.vif, g.mac);
            }
        }
        for out in svc.handle(&buf[..n]) {
            if let Err(e) = sock.send_to(&out, &opts.dp_socket) {
                log::debug!("pkt0: inject: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::Binding;
    use std::net::Ipv4Addr;

    #[test]
    fn plan_follows_what_was_programmed() {
        let cfg = Config::parse(
            r#"
[[networks]]
name = "net1"
vrf = "v1"
subnet = "10.1.1.0/24"
[[networks]]
name = "public"
[[interfaces]]
name = "vif1.0"
mac = "02:00:00:00:01:03"
ip = "10.1.1.3"
network = "net1"
mtu = 9000
dns = ["10.1.1.53"]
[[interfaces]]
name = "vif2.0"
mac = "02:00:00:00:01:04"
ip = "10.1.1.4"
network = "net1"
"#,
        )
        .expect("config");
        let mut compiled = Compiled::default();
        compiled.desired.vrfs.insert(1, "v1".into());
        compiled.desired.vrfs.insert(2, "public".into());
        // vif2.0 not programmed (yet): not served.
        compiled.bindings.push(Binding {
            name: "vif1.0".into(),
            network: "net1".into(),
            vif: 3,
            vrf: 1,
            nh: 1,
            label: 16,
        });
        let p = plan(&cfg, &compiled);
        assert_eq!(p.ifaces.len(), 1);
        let i = &p.ifaces[&3];
        assert_eq!((i.vif, i.vrf, i.prefix_len), (3, 1, 24));
        assert_eq!(i.ip, Ipv4Addr::new(10, 1, 1, 3));
        assert_eq!(i.gateway, Ipv4Addr::new(10, 1, 1, 1));
        assert_eq!(i.dns, vec![Ipv4Addr::new(10, 1, 1, 53)]);
        assert_eq!(i.mtu, Some(9000));
        assert_eq!(
            p.gateways.get(&1),
            Some(&vec![VrfGateway {
                addr: Ipv4Addr::new(10, 1, 1, 1),
                prefix_len: 24
            }])
        );
        assert!(
            !p.gateways.contains_key(&2),
            "no gateway in a network without subnet"
        );

        // Applying, then applying a plan without the interface, stops serving it.
        let mut svc = PacketServices::new();
        apply_plan(&mut svc, &Plan::default(), &p);
        assert!(svc.interface(3).is_some());
        apply_plan(&mut svc, &p, &Plan::default());
        assert!(svc.interface(3).is_none());
    }
}
