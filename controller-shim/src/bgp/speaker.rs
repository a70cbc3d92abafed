// SPDX-License-Identifier: Apache-2.0
//! The speaker's I/O: the BGP listener, one task per neighbour that connects out (and takes
//! the neighbour's own connection, resolving collisions by BGP identifier as RFC 4271 §6.8
//! says), and a planner that re-reads neighbours and exports whenever the config or the
//! routes change. All protocol decisions are the [`Session`]'s; this file moves bytes, and
//! writes what each neighbour taught us into the shim's route table (origin `bgp:<address>`),
//! whence the agents' views carry it to the hosts of the importing networks.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::codec::{self, Notification};
use super::plan::{exports, imported, imports, origin, plan, Imports};
use super::session::{Exports, Local, Output, Peer, Session, State};
use crate::server::Shared;
use vrouter_api::agent::Route;
use vrouter_api::bgp::{BgpNeighbor, BgpState, BgpSummary};

/// How the speaker runs (`vrouter-shim --bgp ADDR[:PORT]`).
#[derive(Debug, Clone)]
pub struct SpeakerConfig {
    /// Where to listen; its address is our router-id.
    pub bind: SocketAddr,
    /// Hold time we propose when a `bgp-router` does not set one.
    pub hold_time: u16,
    /// Wait between connection attempts to a neighbour.
    pub connect_retry: Duration,
}

/// One neighbour's row in the table (the API's [`BgpNeighbor`] plus when it came up).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Neighbour {
    address: Ipv4Addr,
    asn: u32,
    state: State,
    prefixes_received: usize,
    prefixes_advertised: usize,
    flaps: u64,
    last_error: Option<String>,
    since: Option<Instant>,
}

impl Neighbour {
    fn shown(&self) -> BgpNeighbor {
        BgpNeighbor {
            address: self.address,
            asn: self.asn,
            state: match self.state {
                State::Idle => BgpState::Idle,
                State::OpenSent => BgpState::OpenSent,
                State::OpenConfirm => BgpState::OpenConfirm,
                State::Established => BgpState::Established,
            },
            uptime_s: self.since.map_or(0, |s| s.elapsed().as_secs()),
            prefixes_received: self.prefixes_received,
            prefixes_advertised: self.prefixes_advertised,
            flaps: self.flaps,
            last_error: self.last_error.clone(),
        }
    }
}

/// The neighbour table the tasks write and the API reads.
#[derive(Debug)]
pub struct Neighbours {
    router_id: Ipv4Addr,
    inner: Mutex<(u32, BTreeMap<Ipv4Addr, Neighbour>)>,
}

impl Neighbours {
    /// An empty table for this router-id.
    pub fn new(router_id: Ipv4Addr) -> Neighbours {
        Neighbours {
            router_id,
            inner: Mutex::new((0, BTreeMap::new())),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut (u32, BTreeMap<Ipv4Addr, Neighbour>)) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// What an operator reads (`show bgp summary`).
    pub fn summary(&self) -> BgpSummary {
        self.with(|(asn, t)| BgpSummary {
            router_id: self.router_id,
            asn: *asn,
            neighbors: t.values().map(Neighbour::shown).collect(),
        })
    }

    fn update(&self, addr: Ipv4Addr, f: impl FnOnce(&mut Neighbour)) {
        self.with(|(_, t)| {
            if let Some(n) = t.get_mut(&addr) {
                f(n);
            }
        })
    }
}

/// Runs the speaker until the listener fails.
pub async fn run(
    shared: Arc<Shared>,
    cfg: SpeakerConfig,
    table: Arc<Neighbours>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(cfg.bind).await?;
    let IpAddr::V4(router_id) = cfg.bind.ip() else {
        return Err(std::io::Error::other("--bgp needs an IPv4 address"));
    };
    log::info!("BGP speaker listening on {}", listener.local_addr()?);
    let mut planner = Planner {
        shared,
        cfg,
        router_id,
        table,
        peers: HashMap::new(),
        logged: BTreeSet::new(),
    };
    let mut rev = planner.shared.subscribe();
    planner.replan();
    loop {
        tokio::select! {
            acc = listener.accept() => match acc {
                Ok((stream, from)) => planner.incoming(stream, from),
                Err(e) => log::warn!("BGP accept: {e}"),
            },
            changed = rev.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                // Let a burst of writes settle, then plan once for all of them.
                tokio::time::sleep(Duration::from_millis(100)).await;
                rev.borrow_and_update();
                planner.replan();
            }
        }
    }
}

/// What every neighbour task follows: the routes to announce and which networks import
/// which route targets.
#[derive(Debug, Default, PartialEq)]
struct Feed {
    exports: Exports,
    imports: Imports,
}

struct PeerTask {
    peer: Peer,
    feed: watch::Sender<Arc<Feed>>,
    incoming: mpsc::Sender<TcpStream>,
    task: tokio::task::JoinHandle<()>,
}

struct Planner {
    shared: Arc<Shared>,
    cfg: SpeakerConfig,
    router_id: Ipv4Addr,
    table: Arc<Neighbours>,
    peers: HashMap<Ipv4Addr, PeerTask>,
    /// Config problems already logged (each is logged once while it lasts).
    logged: BTreeSet<String>,
}

impl Planner {
    /// Re-reads neighbours, exports and imports; starts, stops and feeds the neighbour tasks;
    /// drops routes of neighbours that are gone (also those of a previous run).
    fn replan(&mut self) {
        let rid = self.router_id;
        let Ok((plan, feed, origins)) = self.shared.read_core(|c| {
            let mut p = plan(c, rid);
            let exports = exports(c, rid, p.asn, &mut p.problems);
            let imports = imports(c, p.asn, &mut p.problems);
            (p, Feed { exports, imports }, c.gateway_origins())
        }) else {
            return;
        };
        let problems: BTreeSet<String> = plan.problems.iter().cloned().collect();
        for p in problems.difference(&self.logged) {
            log::warn!("BGP: {p}");
        }
        self.logged = problems;
        let local = Local {
            asn: plan.asn,
            router_id: rid,
            hold_time: self.cfg.hold_time,
        };
        let feed = Arc::new(feed);
        let wanted: HashMap<Ipv4Addr, &Peer> = plan.peers.iter().map(|p| (p.address, p)).collect();
        let asn_changed = self
            .table
            .with(|(asn, _)| std::mem::replace(asn, plan.asn) != plan.asn);
        self.peers.retain(|addr, t| {
            let keep = !asn_changed && wanted.get(addr).is_some_and(|p| **p == t.peer);
            if !keep {
                t.task.abort();
                self.table.with(|(_, tab)| tab.remove(addr));
            }
            keep
        });
        let live: BTreeSet<String> = self.peers.keys().map(|a| origin(*a)).collect();
        for stale in origins.difference(&live) {
            tokio::spawn(sync_imports(
                Arc::clone(&self.shared),
                stale.clone(),
                Vec::new(),
            ));
        }
        for p in plan.peers {
            if let Some(t) = self.peers.get(&p.address) {
                t.feed.send_if_modified(|f| {
                    let changed = **f != *feed;
                    *f = Arc::clone(&feed);
                    changed
                });
                continue;
            }
            self.start(local, p, &feed);
        }
    }

    /// Starts a neighbour's task.
    fn start(&mut self, local: Local, p: Peer, feed: &Arc<Feed>) {
        self.table.with(|(_, t)| {
            t.insert(
                p.address,
                Neighbour {
                    address: p.address,
                    asn: p.asn,
                    state: State::Idle,
                    prefixes_received: 0,
                    prefixes_advertised: 0,
                    flaps: 0,
                    last_error: None,
                    since: None,
                },
            )
        });
        let (ftx, frx) = watch::channel(Arc::clone(feed));
        let (itx, irx) = mpsc::channel(2);
        let link = Link {
            shared: Arc::clone(&self.shared),
            table: Arc::clone(&self.table),
            feed: frx,
            incoming: irx,
            epoch: Instant::now(),
        };
        let task = tokio::spawn(peer_task(
            Session::new(local, p.clone()),
            link,
            self.cfg.connect_retry,
        ));
        self.peers.insert(
            p.address,
            PeerTask {
                peer: p,
                feed: ftx,
                incoming: itx,
                task,
            },
        );
    }

    /// A neighbour connected to us: hand the connection to its task; strangers are closed.
    fn incoming(&mut self, stream: TcpStream, from: SocketAddr) {
        let IpAddr::V4(addr) = from.ip() else {
            return;
        };
        match self.peers.get(&addr) {
            Some(t) => {
                if t.incoming.try_send(stream).is_err() {
                    log::debug!("BGP: {addr} connects faster than its task takes connections");
                }
            }
            None => {
                if self
                    .logged
                    .insert(format!("connection from unknown {addr}"))
                {
                    log::warn!(
                        "BGP: connection from {addr}, which is no configured bgp-router: closed"
                    );
                }
            }
        }
    }
}

/// What a neighbour's task works with besides its session.
struct Link {
    shared: Arc<Shared>,
    table: Arc<Neighbours>,
    feed: watch::Receiver<Arc<Feed>>,
    incoming: mpsc::Receiver<TcpStream>,
    epoch: Instant,
}

/// Makes `routes` the routes of `origin` in the shim (off the async workers: a write waits for
/// the store).
async fn sync_imports(shared: Arc<Shared>, origin: String, routes: Vec<Route>) {
    let o = origin.clone();
    let r = tokio::task::spawn_blocking(move || {
        shared.write_core(|c| Ok(c.set_gateway_routes(&o, routes.clone())))
    })
    .await;
    match r {
        Ok(Ok(n)) if n > 0 => log::debug!("BGP {origin}: {n} route changes for the hosts"),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => log::warn!("BGP {origin}: routes not stored: {e}"),
        Err(e) => log::warn!("BGP {origin}: route store task failed: {e}"),
    }
}

/// One neighbour's life: connect (or take its connection), run the session, wait, again.
/// Whenever a connection ends, the neighbour's routes leave the hosts.
async fn peer_task(mut session: Session, mut link: Link, retry: Duration) {
    let peer = session.peer().clone();
    let target = SocketAddr::from((peer.address, peer.port));
    let source = session.local_id();
    loop {
        let stream = tokio::select! {
            Some(s) = link.incoming.recv() => Some(s),
            r = tokio::time::timeout(Duration::from_secs(5), connect_from(source, target)) => match r {
                Ok(Ok(s)) => Some(s),
                Ok(Err(e)) => {
                    link.table.update(peer.address, |n| n.last_error = Some(format!("connect: {e}")));
                    None
                }
                Err(_) => {
                    link.table.update(peer.address, |n| n.last_error = Some("connect: timed out".into()));
                    None
                }
            },
        };
        if let Some(s) = stream {
            sessions(&mut session, s, &mut link).await;
        }
        // Wait before the next attempt, but take the neighbour's own connection at once.
        tokio::select! {
            Some(s) = link.incoming.recv() => sessions(&mut session, s, &mut link).await,
            _ = tokio::time::sleep(retry) => {}
        }
    }
}

/// Runs a connection, then the neighbour's own connection when it won a collision, and so on.
async fn sessions(session: &mut Session, first: TcpStream, link: &mut Link) {
    let addr = session.peer().address;
    let mut next = Some(first);
    while let Some(s) = next.take() {
        let (why, adopt) = connection(session, s, link).await;
        session_ended(link, addr, why).await;
        next = adopt;
    }
}

/// A connection ended: the neighbour's routes go, the table says why.
async fn session_ended(link: &Link, addr: Ipv4Addr, why: String) {
    sync_imports(Arc::clone(&link.shared), origin(addr), Vec::new()).await;
    link.table.update(addr, |n| {
        // Counted here when the session ended without its state leaving Established first
        // (a write to the neighbour failed); `act` counts the other endings.
        if n.state == State::Established {
            n.flaps += 1;
        }
        n.state = State::Idle;
        n.since = None;
        n.prefixes_received = 0;
        n.prefixes_advertised = 0;
        n.last_error = Some(why.clone());
    });
    log::warn!("BGP neighbour {addr}: down: {why}");
}

/// Connects from our router-id, the address the neighbour has configured for us (as a
/// router's `update-source`): the kernel's own choice (another interface's address, or
/// 127.0.0.1 on loopback) would be refused as a stranger.
async fn connect_from(source: Ipv4Addr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::from((source, 0)))?;
    sock.connect(target).await
}

/// How often learned routes are written for the hosts while they keep coming: a full table
/// arrives in many UPDATEs and is written in a few batches, not one write per message.
const IMPORT_EVERY: Duration = Duration::from_millis(100);

/// Runs one connection until the session ends; returns why it ended, and the neighbour's
/// connection that replaces it when it won a collision (RFC 4271 §6.8).
async fn connection(
    session: &mut Session,
    stream: TcpStream,
    link: &mut Link,
) -> (String, Option<TcpStream>) {
    let addr = session.peer().address;
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let epoch = link.epoch;
    let now = || epoch.elapsed().as_millis() as u64;
    let mut out = session.connected(now());
    let feed = Arc::clone(&link.feed.borrow_and_update());
    out.extend(session.export(feed.exports.clone(), now()));
    let mut imports = feed;
    let mut buf = vec![0u8; 65536];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut flush = tokio::time::interval(IMPORT_EVERY);
    let mut dirty = false;
    // One write of learned routes at a time, off this loop: the session keeps reading (and
    // answering keepalives) while the store commits.
    let mut writing: Option<tokio::task::JoinHandle<()>> = None;
    let mut adopt = None;
    loop {
        let acted = act(session, out, &mut wr, &link.table).await;
        if let Some(why) = acted.ended {
            if let Some(w) = writing.take() {
                let _ = w.await; // the caller's withdrawal must come after it
            }
            return (why, adopt);
        }
        dirty |= acted.rib_changed;
        out = tokio::select! {
            r = rd.read(&mut buf) => match r {
                Ok(0) => session.closed("connection closed by the neighbour"),
                Ok(n) => session.received(&buf[..n], now()),
                Err(e) => session.closed(&format!("read: {e}")),
            },
            _ = tick.tick() => session.tick(now()),
            _ = flush.tick(), if dirty && !writing.as_ref().is_some_and(|w| !w.is_finished()) => {
                dirty = false;
                let routes = imported(addr, session.learned().values(), &imports.imports, session.local_id());
                writing = Some(tokio::spawn(sync_imports(Arc::clone(&link.shared), origin(addr), routes)));
                Vec::new()
            }
            changed = link.feed.changed() => match changed {
                Ok(()) => {
                    let f = Arc::clone(&link.feed.borrow_and_update());
                    dirty |= f.imports != imports.imports;
                    imports = Arc::clone(&f);
                    session.export(f.exports.clone(), now())
                }
                Err(_) => session.closed("neighbour removed from the configuration"),
            },
            Some(other) = link.incoming.recv() => match collision(session, other, addr).await {
                Ok(out) => out,
                Err((out, theirs)) => {
                    adopt = Some(theirs);
                    out
                }
            },
        };
    }
}

/// The neighbour opened a second connection while this one runs (RFC 4271 §6.8): once
/// established, or when our identifier is higher, the new one is refused (`Ok`); else ours
/// closes and the neighbour's goes on (`Err` with it).
async fn collision(
    session: &mut Session,
    mut other: TcpStream,
    addr: Ipv4Addr,
) -> Result<Vec<Output>, (Vec<Output>, TcpStream)> {
    let theirs = session.peer().identifier.unwrap_or(addr);
    let keep_ours = session.state() == State::Established || session.local_id() > theirs;
    let cease = codec::notification(&Notification::new(6, 7));
    if keep_ours {
        let _ = tokio::time::timeout(Duration::from_secs(1), other.write_all(&cease)).await;
        return Ok(Vec::new());
    }
    let mut out = vec![Output::Send(cease)];
    out.extend(session.closed("connection collision: the neighbour's connection wins"));
    Err((out, other))
}

/// What carrying out a session's outputs came to.
struct Acted {
    /// The session ended, for this reason.
    ended: Option<String>,
    /// Routes were learned or withdrawn.
    rib_changed: bool,
}

/// Carries out a session's outputs.
async fn act(
    session: &Session,
    out: Vec<Output>,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    table: &Neighbours,
) -> Acted {
    let addr = session.peer().address;
    let mut acted = Acted {
        ended: None,
        rib_changed: false,
    };
    for o in out {
        match o {
            Output::Send(bytes) => {
                let w = tokio::time::timeout(Duration::from_secs(10), wr.write_all(&bytes)).await;
                if !matches!(w, Ok(Ok(()))) && acted.ended.is_none() {
                    acted.ended = Some("write to the neighbour failed or stalled for 10 s".into());
                }
            }
            Output::Established => {
                log::info!("BGP neighbour {addr}: established");
                table.update(addr, |n| {
                    n.since = Some(Instant::now());
                    n.last_error = None;
                });
            }
            Output::Learned(_) | Output::Withdrawn(_) => acted.rib_changed = true,
            Output::Down(why) => acted.ended = Some(why),
        }
    }
    table.update(addr, |n| {
        if n.state == State::Established && session.state() != State::Established {
            n.flaps += 1;
        }
        n.state = session.state();
        n.prefixes_received = session.learned().len();
        n.prefixes_advertised = session.advertised();
    });
    acted
}
