//! The agent's end of `pkt0`: a thread that receives the packets the dataplane traps (agent
//! header + Ethernet frame), hands them to [`PacketServices`] (DHCP, DNS, ICMP) and sends back
//! what they answer. DNS queries that are not a network's own names go to the host's resolvers
//! (`--dns-resolv-conf`, re-read when it changes) from one UDP socket the same thread polls.
//!
//! The dataplane binds its datagram socket (`vrouter-dp --agent-socket`); we bind ours
//! (`--agent-local-socket`) and send to theirs. Trapped packets go to whoever sent last, so the
//! thread says hello (an empty datagram) at start and every few seconds: a restarted dataplane
//! learns where we are within that time. The served interfaces follow what the agent programmed
//! (an [`Observer`] after each pass: vif id, VRF, MAC, IP, subnet, gateway, DNS, MTU).

use crate::compile::Compiled;
use crate::config::Config;
use crate::daemon::Observer;
use crate::services::dns_upstream::parse_resolv_conf;
use crate::services::dns_zone::Zone;
use crate::services::{DnsSettings, PacketServices, ServedInterface, VrfGateway};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
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
    /// DNS names per VRF id: the network's domain and its hosts.
    pub zones: BTreeMap<u16, (String, Vec<(String, std::net::Ipv4Addr)>)>,
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
        s.hostname = i.hostname.clone();
        s.domain = net.names.domain.clone();
        s.dns = i
            .dns
            .iter()
            .copied()
            .take(crate::services::MAX_DNS_SERVERS)
            .collect();
        s.mtu = Some(i.mtu);
        p.ifaces.insert(b.vif, s);
    }
    p.zones = zones(cfg, &vrf_id);
    p
}

/// The DNS names of every network with a domain: its hosts, then its local interfaces' host
/// names.
fn zones(
    cfg: &Config,
    vrf_id: &BTreeMap<&str, u16>,
) -> BTreeMap<u16, (String, Vec<(String, std::net::Ipv4Addr)>)> {
    let mut out = BTreeMap::new();
    for n in &cfg.networks {
        let (Some(domain), Some(id)) = (&n.names.domain, vrf_id.get(n.vrf.as_str())) else {
            continue;
        };
        let mut hosts = n.names.hosts.clone();
        hosts.extend(
            cfg.interfaces
                .iter()
                .filter(|i| i.network == n.name)
                .filter_map(|i| Some((i.hostname.clone()?, i.ip))),
        );
        out.insert(*id, (domain.clone(), hosts));
    }
    out
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

    /// The plan if it is newer than generation `seen` (no copy otherwise: this is asked for
    /// every batch of trapped packets).
    fn newer(&self, seen: u64) -> Option<(u64, Plan)> {
        let g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        (g.0 != seen).then(|| g.clone())
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
    for vrf in old.zones.keys() {
        if !p.zones.contains_key(vrf) {
            svc.set_dns_zone(*vrf, None);
        }
    }
    for (vrf, (domain, hosts)) in &p.zones {
        if old.zones.get(vrf) == Some(&(domain.clone(), hosts.clone())) {
            continue;
        }
        match Zone::new(domain, hosts) {
            Ok(z) => svc.set_dns_zone(*vrf, Some(z)),
            Err(e) => {
                log::warn!("pkt0: no DNS names in vrf {vrf}: {e}");
                svc.set_dns_zone(*vrf, None);
            }
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
    /// DNS forwarding.
    pub dns: DnsOptions,
}

/// Where and how the gateway's DNS forwards.
#[derive(Debug, Clone)]
pub struct DnsOptions {
    /// The file naming the host's resolvers (`nameserver` lines), re-read when it changes.
    pub resolv_conf: PathBuf,
    /// Cache, rate limit, timeouts.
    pub settings: DnsSettings,
}

impl Default for DnsOptions {
    fn default() -> Self {
        Self {
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            settings: DnsSettings::default(),
        }
    }
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
    Ok(s)
}

const HELLO_EVERY: Duration = Duration::from_secs(2);

fn run(opts: &Pkt0Options, sock: &UnixDatagram, handle: &PlanHandle) {
    let mut svc = PacketServices::with_dns(opts.dns.settings);
    let mut up = Upstream::new(opts.dns.resolv_conf.clone());
    let mut cur = Plan::default();
    let mut gen = 0u64;
    let mut last_hello: Option<Instant> = None;
    let mut down_logged = false;
    let mut buf = vec![0u8; 65_536];
    let mut batch = Batch::new();
    let dest = unix_addr(&opts.dp_socket);
    let mut outbox: Vec<Vec<u8>> = Vec::new();
    let start = Instant::now();
    let mut next_expire = 0u64;
    if let Err(e) = sock.set_nonblocking(true) {
        log::warn!("pkt0: non-blocking socket: {e}");
    }
    log::info!(
        "pkt0: {} <-> dataplane {}",
        opts.local_socket.display(),
        opts.dp_socket.display()
    );
    loop {
        if last_hello.is_none_or(|t| t.elapsed() >= HELLO_EVERY) {
            last_hello = Some(Instant::now());
            hello(sock, &opts.dp_socket, &mut down_logged);
            up.refresh();
        }
        if let Some((g, p)) = handle.newer(gen) {
            apply_plan(&mut svc, &cur, &p);
            log::info!(
                "pkt0: serving {} interfaces in {} VRFs, DNS names in {}",
                p.ifaces.len(),
                p.gateways.len(),
                p.zones.len()
            );
            gen = g;
            cur = p;
        }
        let (traps, replies) = wait(sock, up.sock.as_ref(), Duration::from_millis(100));
        let now = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        svc.set_now(now);
        if traps {
            drain_traps(sock, &mut svc, &mut batch, &mut outbox);
        }
        if replies {
            while let Some(n) = up.recv(&mut buf) {
                outbox.extend(svc.dns_upstream_reply(&buf[..n]));
            }
        }
        for q in svc.take_dns_forwards() {
            up.send(&q);
        }
        if now >= next_expire {
            next_expire = now + 100;
            let late = svc.dns_expire();
            if !late.is_empty() {
                up.next_server();
            }
            outbox.extend(late);
        }
        match &dest {
            Some(d) => send_all(sock, d, &mut outbox),
            None => outbox.clear(),
        }
    }
}

/// Most datagrams read from one socket per wake-up (others get their turn).
const BATCH: usize = 256;

/// Handles the trapped packets waiting on `sock` (at most [`BATCH`] per call), queueing the
/// answers in `outbox`.
fn drain_traps(
    sock: &UnixDatagram,
    svc: &mut PacketServices,
    batch: &mut Batch,
    outbox: &mut Vec<Vec<u8>>,
) {
    for _ in 0..BATCH / MMSG {
        let n = match batch.recv(sock) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) =>
            {
                return
            }
            Err(e) => {
                log::warn!("pkt0: receive: {e}");
                std::thread::sleep(Duration::from_millis(200));
                return;
            }
        };
        for pkt in batch.datagrams(n) {
            if let Some(g) = crate::vip::parse_garp(pkt) {
                if let Some((vrf, ip)) = crate::vip::registry().garp(&g) {
                    log::info!("vip: {ip} in {vrf} announced by vif {} ({})", g.vif, g.mac);
                }
            }
            outbox.extend(svc.handle(pkt));
        }
        if n < MMSG {
            return;
        }
    }
}

/// Datagrams one recvmmsg(2) / sendmmsg(2) call moves.
const MMSG: usize = 32;

/// Receive buffers for [`MMSG`] datagrams of up to 64 KiB each (a trapped super-packet is
/// whole).
struct Batch {
    bufs: Vec<Vec<u8>>,
    lens: [usize; MMSG],
}

impl Batch {
    fn new() -> Self {
        Self {
            bufs: (0..MMSG).map(|_| vec![0u8; 65_536]).collect(),
            lens: [0; MMSG],
        }
    }

    /// Receives what waits (up to [`MMSG`] datagrams) in one call, without blocking.
    fn recv(&mut self, sock: &UnixDatagram) -> std::io::Result<usize> {
        let mut iovs: Vec<libc::iovec> = self
            .bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: an all-zero mmsghdr is valid (no name, no control, no iovec yet).
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        // SAFETY: `msgs` holds MMSG headers, each pointing at one iovec of `iovs` that spans a
        // buffer of `self.bufs`; all three outlive the call and are not otherwise borrowed.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                MMSG as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let n = usize::try_from(n).map_err(|_| std::io::Error::last_os_error())?;
        for (len, m) in self.lens.iter_mut().zip(&msgs).take(n) {
            *len = m.msg_len as usize;
        }
        Ok(n)
    }

    /// The first `n` datagrams received.
    fn datagrams(&self, n: usize) -> impl Iterator<Item = &[u8]> {
        self.bufs
            .iter()
            .zip(self.lens)
            .take(n)
            .map(|(b, l)| &b[..l.min(b.len())])
    }
}

/// The dataplane socket's address for sendmmsg(2), `None` if the path does not fit.
fn unix_addr(path: &Path) -> Option<libc::sockaddr_un> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: an all-zero sockaddr_un is valid (empty path).
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= a.sun_path.len() {
        log::error!("pkt0: socket path {} is too long", path.display());
        return None;
    }
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in a.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Some(a)
}

/// Sends every frame of `out` to `dest`, [`MMSG`] per call; empties `out`. A frame the
/// dataplane does not take (its queue full, it restarting) is dropped and logged at debug.
fn send_all(sock: &UnixDatagram, dest: &libc::sockaddr_un, out: &mut Vec<Vec<u8>>) {
    let mut at = 0;
    while at < out.len() {
        let end = (at + MMSG).min(out.len());
        let chunk = &mut out[at..end];
        let mut iovs: Vec<libc::iovec> = chunk
            .iter_mut()
            .map(|f| libc::iovec {
                iov_base: f.as_mut_ptr().cast(),
                iov_len: f.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: an all-zero mmsghdr is valid; name and iovec are set below.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_name = (dest as *const libc::sockaddr_un).cast_mut().cast();
                m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        // SAFETY: each header points at `dest` (only read by the kernel) and at one iovec of
        // `iovs` spanning a frame of `out`; all outlive the call.
        let n = unsafe {
            libc::sendmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                msgs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        match usize::try_from(n) {
            Ok(sent) if sent > 0 => at += sent,
            _ => {
                log::debug!("pkt0: inject: {}", std::io::Error::last_os_error());
                at += 1; // drop the frame that was refused, go on with the rest
            }
        }
    }
    out.clear();
}

/// Says hello to the dataplane (it sends traps to whoever spoke last).
fn hello(sock: &UnixDatagram, dp: &Path, down_logged: &mut bool) {
    match sock.send_to(&[], dp) {
        Ok(_) => {
            if *down_logged {
                log::info!("pkt0: dataplane socket reachable again");
                *down_logged = false;
            }
        }
        Err(e) => {
            if !*down_logged {
                log::warn!("pkt0: hello to {}: {e}; retrying", dp.display());
                *down_logged = true;
            }
        }
    }
}

/// Waits up to `timeout` for either socket to be readable: (traps, upstream replies).
fn wait(sock: &UnixDatagram, up: Option<&UdpSocket>, timeout: Duration) -> (bool, bool) {
    let mut fds = [
        libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: up.map_or(-1, AsRawFd::as_raw_fd),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(100);
    // SAFETY: `fds` is a valid, exclusively borrowed array of two pollfd for the whole call,
    // and its length is passed with it; a negative fd is ignored by poll(2).
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
    if rc <= 0 {
        return (false, false);
    }
    let ready = |f: &libc::pollfd| f.revents & (libc::POLLIN | libc::POLLERR) != 0;
    (ready(&fds[0]), ready(&fds[1]))
}

/// The socket to the host's resolvers and which of them is asked.
struct Upstream {
    path: PathBuf,
    sock: Option<UdpSocket>,
    servers: Vec<SocketAddr>,
    current: usize,
    stamp: Option<(std::time::SystemTime, u64)>,
    logged: bool,
}

impl Upstream {
    fn new(path: PathBuf) -> Self {
        // One dual-stack socket when IPv6 is there, else IPv4 only.
        let sock = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0))
            .or_else(|_| UdpSocket::bind(("0.0.0.0", 0)))
            .and_then(|s| s.set_nonblocking(true).map(|()| s));
        let sock = match sock {
            Ok(s) => Some(s),
            Err(e) => {
                log::error!("pkt0: no socket for DNS forwarding: {e}; only local names answer");
                None
            }
        };
        let mut u = Self {
            path,
            sock,
            servers: Vec::new(),
            current: 0,
            stamp: None,
            logged: false,
        };
        u.refresh();
        u
    }

    /// Re-reads the resolver file when its modification time or size changed.
    fn refresh(&mut self) {
        let meta = std::fs::metadata(&self.path).ok();
        let stamp = meta.and_then(|m| Some((m.modified().ok()?, m.len())));
        if stamp.is_some() && stamp == self.stamp {
            return;
        }
        self.stamp = stamp;
        let servers = std::fs::read_to_string(&self.path)
            .map(|t| parse_resolv_conf(&t))
            .unwrap_or_default();
        if servers != self.servers || !self.logged {
            let list: Vec<String> = servers.iter().map(ToString::to_string).collect();
            log::info!(
                "pkt0: DNS forwarded to [{}] ({})",
                list.join(", "),
                self.path.display()
            );
            self.logged = true;
        }
        self.servers = servers;
        self.current = 0;
    }

    fn next_server(&mut self) {
        if !self.servers.is_empty() {
            self.current = (self.current + 1) % self.servers.len();
        }
    }

    /// `addr` as the socket's family needs it (IPv4 as IPv4-mapped on a dual-stack socket).
    fn target(&self, addr: SocketAddr) -> SocketAddr {
        match (self.sock.as_ref().and_then(|s| s.local_addr().ok()), addr) {
            (Some(SocketAddr::V6(_)), SocketAddr::V4(a)) => {
                SocketAddr::new(IpAddr::V6(a.ip().to_ipv6_mapped()), a.port())
            }
            _ => addr,
        }
    }

    fn send(&self, q: &[u8]) {
        let (Some(s), Some(to)) = (&self.sock, self.servers.get(self.current)) else {
            return;
        };
        if let Err(e) = s.send_to(q, self.target(*to)) {
            log::debug!("pkt0: DNS to {to}: {e}");
        }
    }

    /// One reply from a configured resolver, if one waits (others are dropped).
    fn recv(&self, buf: &mut [u8]) -> Option<usize> {
        let s = self.sock.as_ref()?;
        loop {
            let (n, from) = s.recv_from(buf).ok()?;
            let from = match from {
                SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
                    Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
                    None => from,
                },
                v4 => v4,
            };
            if self.servers.contains(&from) {
                return Some(n);
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
domain = "Net1.Example."
[[networks]]
name = "public"
[[interfaces]]
name = "vif1.0"
mac = "02:00:00:00:01:03"
ip = "10.1.1.3"
network = "net1"
mtu = 9000
dns = ["10.1.1.53"]
hostname = "web-1"
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
        assert_eq!(i.hostname.as_deref(), Some("web-1"), "DHCP option 12");
        assert_eq!(i.domain.as_deref(), Some("net1.example"), "DHCP option 15");
        assert_eq!(
            p.zones.get(&1),
            Some(&(
                "net1.example".to_string(),
                vec![("web-1".to_string(), Ipv4Addr::new(10, 1, 1, 3))]
            )),
            "the network's DNS names: its interfaces' host names"
        );
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
