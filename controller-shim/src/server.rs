// SPDX-License-Identifier: Apache-2.0
//! HTTP front end: routes requests to the [`Core`], persists the writes, answers. Agent-API
//! requests (`/vrouter/...`) pass the version handshake and have their bodies typed by
//! [`crate::contract`]; their answers carry the version header.
//!
//! One mutex owns the core; handlers only parse, lock, apply, queue the batch and answer
//! (Firecracker's API thread → single owner). Persistence has two modes:
//!
//! * **Group commit** (exclusive stores, SQLite): the batch is queued to the committer thread
//!   *while the lock is held*, so batches reach the store in mutation order; the handler then
//!   waits for the commit before it answers. The committer writes every queued batch in one
//!   transaction, so one fsync acknowledges many concurrent writes. If a commit fails, the
//!   committer reloads the core from the store and fails every queued request (503).
//! * **Serial** (shared stores, etcd): under the lock, the handler first checks the stored
//!   revision and reloads when another instance wrote, then applies and commits
//!   synchronously, retrying on a conflict.
//!
//! Keep-alive connections stay open while idle (no timer is configured in hyper): the Java
//! client never reconnects on its own, so closing an idle connection would break it.

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use vrouter_api::agent::{Advertise, Binding, ErrorReply, RegisterAgent, Withdraw, API_VERSION};

use crate::contract::{self, parse_body, LogLimiter, VERSION_HEADER};
use crate::core::{Core, Ctx, ListQuery, ReadOpts};
use crate::error::{bad, ApiError};
use crate::schema::ObjType;
use crate::store::{Batch, Store, StoreError};

/// Largest request body accepted.
const MAX_BODY: usize = 16 << 20;
/// A request body that sends nothing for this long is answered 408 and its connection closed.
/// Idle connections *between* requests have no timeout: CloudStack's client keeps them.
pub const BODY_STALL: Duration = Duration::from_secs(10);
/// Most batches one group commit writes.
const MAX_GROUP: usize = 512;
/// At most one warning per peer and kind (each foreign agent-API version, a stalled body) in this interval.
const PEER_LOG_EVERY: Duration = Duration::from_secs(10);

/// Daemon configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address.
    pub listen: SocketAddr,
    /// Store spec (`sqlite:PATH` or `etcd:URL`).
    pub store: String,
    /// Token required in `X-Auth-Token`, if any.
    pub token: Option<String>,
    /// Agent lease; 0 disables expiry.
    pub agent_ttl: Duration,
    /// Tombstones each host's view keeps before compaction (bounds memory under churn).
    pub view_tombstones: usize,
    /// The BGP speaker, when `--bgp` turns it on.
    pub bgp: Option<crate::bgp::speaker::SpeakerConfig>,
}

/// Startup failure.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Stored state does not parse.
    #[error(transparent)]
    Load(#[from] crate::core::LoadError),
    /// Socket or runtime error.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Refused configuration.
    #[error("{0}")]
    Config(String),
}

struct Job {
    base_rev: u64,
    batch: Batch,
    ack: tokio::sync::oneshot::Sender<Result<(), String>>,
}

enum Persist {
    Group(mpsc::Sender<Job>),
    /// A shared store: requests refresh and commit through `store` under the state lock; the
    /// periodic poll asks `probe` (a second client) for the stored revision without holding
    /// either lock, so a store that hangs (etcd without quorum) delays the poll, not requests.
    Serial {
        store: Mutex<Box<dyn Store>>,
        probe: Mutex<Box<dyn Store>>,
    },
}

/// State shared by every connection.
pub struct Shared {
    core: Mutex<Core>,
    persist: Persist,
    token: Option<String>,
    notify: tokio::sync::watch::Sender<u64>,
    default_base: String,
    /// Rate limit of warnings about a peer: another agent-API version, a stalled body.
    peer_log: LogLimiter,
    /// The BGP neighbour table, when the speaker runs.
    bgp: std::sync::OnceLock<Arc<crate::bgp::speaker::Neighbours>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("base", &self.default_base)
            .finish_non_exhaustive()
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn lock(m: &Mutex<Core>) -> MutexGuard<'_, Core> {
    // A panic while holding the lock must not wedge the daemon; the core validates before it
    // mutates, so the state is consistent at every await-free point.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn reload(core: &mut Core, store: &mut dyn Store) -> Result<(), ServeError> {
    let records = store.load()?;
    let tombstones = core.view_tombstones();
    *core = Core::load(records)?;
    core.set_view_tombstones(tombstones);
    core.touch_all_agents(now_us());
    Ok(())
}

/// A parsed request, independent of hyper.
#[derive(Debug, Default)]
struct Req {
    method: Method,
    path: String,
    query: HashMap<String, String>,
    body: Bytes,
    base: String,
    if_none_match: Option<String>,
}

/// An answer before it becomes an HTTP response.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: Option<Value>,
    etag: Option<String>,
}

impl Reply {
    fn ok(v: Value) -> Reply {
        Reply {
            status: 200,
            body: Some(v),
            etag: None,
        }
    }
    fn empty() -> Reply {
        Reply {
            status: 200,
            body: None,
            etag: None,
        }
    }
    fn err(e: &ApiError) -> Reply {
        let body = ErrorReply {
            code: e.status(),
            message: e.to_string(),
        };
        Reply {
            status: e.status(),
            body: serde_json::to_value(body).ok(),
            etag: None,
        }
    }

    /// A 200 with a typed (agent-API) body.
    fn typed<T: Serialize>(v: &T) -> Result<Reply, ApiError> {
        serde_json::to_value(v)
            .map(Reply::ok)
            .map_err(|e| ApiError::Unavailable(format!("encoding the reply: {e}")))
    }
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (pct_decode(k), pct_decode(v)),
            None => (pct_decode(p), String::new()),
        })
        .collect()
}

fn truthy(v: Option<&String>) -> bool {
    v.is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | ""))
}

fn csv_set(v: Option<&String>) -> Option<BTreeSet<String>> {
    v.map(|v| {
        v.split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    })
}

fn list_query(q: &HashMap<String, String>) -> Result<ListQuery, ApiError> {
    let parent_fq = match q.get("parent_fq_name_str") {
        Some(s) => {
            let pt = match q.get("parent_type") {
                Some(t) => {
                    Some(ObjType::parse(t).ok_or_else(|| bad(format!("unknown parent_type {t}")))?)
                }
                None => None,
            };
            Some((pt, s.split(':').map(str::to_string).collect()))
        }
        None => None,
    };
    Ok(ListQuery {
        parent_ids: csv_set(q.get("parent_id")),
        parent_fq,
        back_ref_ids: csv_set(q.get("back_ref_id")),
        obj_uuids: csv_set(q.get("obj_uuids")),
        detail: q.get("detail").is_some_and(|v| truthy(Some(v))),
        count: q.get("count").is_some_and(|v| truthy(Some(v))),
        fields: csv_set(q.get("fields")).filter(|s| !s.is_empty()),
        exclude_hrefs: q.get("exclude_hrefs").is_some_and(|v| truthy(Some(v))),
    })
}

fn body_json(req: &Req) -> Result<Value, ApiError> {
    if req.body.is_empty() {
        return Err(bad("request body is required"));
    }
    serde_json::from_slice(&req.body).map_err(|e| bad(format!("malformed JSON: {e}")))
}

/// Which collection or resource a path names.
fn type_of_collection(seg: &str) -> Option<ObjType> {
    seg.strip_suffix('s')
        .and_then(ObjType::parse)
        .filter(|t| t.plural() == seg)
}

impl Shared {
    /// Opens the store, loads (or bootstraps) the state and starts the committer.
    pub fn open(cfg: &Config) -> Result<Arc<Shared>, ServeError> {
        let mut store = crate::store::open(&cfg.store)?;
        let base = format!("http://{}", cfg.listen);
        // Several instances may start together on one etcd: the loser of the defaults race
        // reloads and finds them there.
        let mut attempt = 0;
        let core = loop {
            let mut core = Core::load(store.load()?)?;
            core.set_view_tombstones(cfg.view_tombstones);
            core.touch_all_agents(now_us());
            let ctx = Ctx {
                now_us: now_us(),
                new_uuid: String::new(),
                base: base.clone(),
            };
            let base_rev = core.rev();
            core.bootstrap(&ctx, || uuid::Uuid::new_v4().to_string());
            let batch = core.take_batch();
            if batch.is_empty() {
                break core;
            }
            match store.commit(base_rev, &[batch]) {
                Ok(()) => {
                    log::info!("created the default objects");
                    break core;
                }
                Err(StoreError::Conflict) if attempt < 5 => attempt += 1,
                Err(e) => return Err(e.into()),
            }
        };
        let (notify, _) = tokio::sync::watch::channel(core.rev());
        let shared_store = store.shared();
        let (persist, committer) = if shared_store {
            let probe = crate::store::open(&cfg.store)?;
            (
                Persist::Serial {
                    store: Mutex::new(store),
                    probe: Mutex::new(probe),
                },
                None,
            )
        } else {
            let (tx, rx) = mpsc::channel::<Job>();
            (Persist::Group(tx), Some((rx, store)))
        };
        let shared = Arc::new(Shared {
            core: Mutex::new(core),
            persist,
            token: cfg.token.clone(),
            notify,
            default_base: base,
            peer_log: LogLimiter::new(PEER_LOG_EVERY),
            bgp: std::sync::OnceLock::new(),
        });
        if let Some((rx, store)) = committer {
            let s = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("shim-commit".into())
                .spawn(move || committer_loop(&s, rx, store))?;
        }
        Ok(shared)
    }

    /// A read of the core for the BGP speaker (same freshness as an API read).
    pub(crate) fn read_core<T>(&self, f: impl FnOnce(&Core) -> T) -> Result<T, ApiError> {
        self.read(f)
    }

    /// A durable write to the core for the BGP speaker (blocking, like an API write).
    pub(crate) fn write_core<T>(
        &self,
        f: impl Fn(&mut Core) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        self.write(f)
    }

    /// Wakes on every revision the core reaches (the agents' long-poll uses it too).
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.notify.subscribe()
    }

    /// Runs a read-only closure on a fresh view of the core.
    fn read<T>(&self, f: impl FnOnce(&Core) -> T) -> Result<T, ApiError> {
        let mut core = lock(&self.core);
        if let Persist::Serial { store, .. } = &self.persist {
            let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
            refresh(&mut core, store.as_mut())?;
        }
        Ok(f(&core))
    }

    /// Runs a mutation and makes it durable before returning. Blocking (store I/O or waiting
    /// for the committer), so callers run it off the async workers.
    fn write<T>(&self, f: impl Fn(&mut Core) -> Result<T, ApiError>) -> Result<T, ApiError> {
        match &self.persist {
            Persist::Group(tx) => {
                let (ack_tx, ack_rx) = tokio::sync::oneshot::channel();
                let out = {
                    let mut core = lock(&self.core);
                    let base_rev = core.rev();
                    let out = f(&mut core);
                    let batch = core.take_batch();
                    if batch.is_empty() {
                        return out;
                    }
                    tx.send(Job {
                        base_rev,
                        batch,
                        ack: ack_tx,
                    })
                    .map_err(|_| ApiError::Unavailable("store committer stopped".into()))?;
                    out
                };
                match ack_rx.blocking_recv() {
                    Ok(Ok(())) => out,
                    Ok(Err(e)) => Err(ApiError::Unavailable(format!("store: {e}"))),
                    Err(_) => Err(ApiError::Unavailable("store committer stopped".into())),
                }
            }
            Persist::Serial { store, .. } => {
                let mut core = lock(&self.core);
                let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
                for _ in 0..5 {
                    refresh(&mut core, store.as_mut())?;
                    let base_rev = core.rev();
                    let out = f(&mut core);
                    let batch = core.take_batch();
                    if batch.is_empty() {
                        return out;
                    }
                    match store.commit(base_rev, &[batch]) {
                        Ok(()) => {
                            self.notify.send_replace(core.rev());
                            return out;
                        }
                        Err(e) => {
                            log::warn!("commit failed ({e}); reloading");
                            reload(&mut core, store.as_mut())
                                .map_err(|e| ApiError::Unavailable(format!("store: {e}")))?;
                            if !matches!(e, StoreError::Conflict) {
                                return Err(ApiError::Unavailable(format!("store: {e}")));
                            }
                        }
                    }
                }
                Err(ApiError::Unavailable(
                    "store: too many concurrent updates, retry".into(),
                ))
            }
        }
    }

    /// Shared stores: picks up writes made by other instances (called periodically).
    pub fn poll_store(&self) {
        if let Persist::Serial { store, probe } = &self.persist {
            // The stored revision first, holding no lock that requests need.
            let stored = probe.lock().unwrap_or_else(|p| p.into_inner()).stored_rev();
            match stored {
                Ok(r) if r == lock(&self.core).rev() => return,
                Ok(_) => {}
                Err(e) => {
                    log::warn!("store poll: {e}");
                    return;
                }
            }
            let mut core = lock(&self.core);
            let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
            let before = core.rev();
            if let Err(e) = refresh(&mut core, store.as_mut()) {
                log::warn!("store poll: {e}");
            }
            if core.rev() != before {
                self.notify.send_replace(core.rev());
            }
        }
    }

    /// Expires agents whose lease ran out.
    pub fn expire_agents(&self, ttl: Duration) {
        let r = self.write(|core| {
            let gone = core.expire_agents(now_us(), ttl.as_micros() as u64);
            Ok(gone)
        });
        if let Err(e) = r {
            log::warn!("agent expiry: {e}");
        }
    }
}

fn refresh(core: &mut Core, store: &mut dyn Store) -> Result<(), ApiError> {
    let stored = store
        .stored_rev()
        .map_err(|e| ApiError::Unavailable(format!("store: {e}")))?;
    if stored != core.rev() {
        log::info!(
            "store revision {stored} differs from ours ({}); reloading",
            core.rev()
        );
        reload(core, store).map_err(|e| ApiError::Unavailable(format!("store: {e}")))?;
    }
    Ok(())
}

fn committer_loop(shared: &Shared, rx: mpsc::Receiver<Job>, mut store: Box<dyn Store>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let batches: Vec<Batch> = jobs
            .iter_mut()
            .map(|j| std::mem::take(&mut j.batch))
            .collect();
        match store.commit(jobs[0].base_rev, &batches) {
            Ok(()) => {
                let rev = lock(&shared.core).rev();
                for j in jobs {
                    let _ = j.ack.send(Ok(()));
                }
                shared.notify.send_replace(rev);
            }
            Err(e) => {
                log::error!("commit failed: {e}; reloading from the store");
                let msg = e.to_string();
                let mut core = lock(&shared.core);
                // Batches queued after this group were computed from state that is now gone.
                while let Ok(j) = rx.try_recv() {
                    jobs.push(j);
                }
                if let Err(e) = reload(&mut core, store.as_mut()) {
                    log::error!("reload failed: {e}");
                }
                for j in jobs {
                    let _ = j.ack.send(Err(msg.clone()));
                }
            }
        }
    }
}

/// Serves HTTP on `listener` until the process ends.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) -> std::io::Result<()> {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                log::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(Arc::clone(&shared), peer, req));
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                log::debug!("connection from {peer}: {e}");
            }
        });
    }
}

async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let agent_api = is_agent_api(req.uri().path());
    let reply = match parse_request(&shared, peer, agent_api, req).await {
        Ok(r) => dispatch(shared, r).await,
        Err(e) => Reply::err(&e),
    };
    let close = reply.status == 408;
    let mut resp = to_response(reply);
    if close {
        // The rest of a stalled body may still come: the connection cannot carry another request.
        resp.headers_mut()
            .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    }
    if agent_api {
        // Every agent-API answer names its version, errors included: the client checks it
        // before it reads the body.
        if let Ok(name) = HeaderName::from_bytes(VERSION_HEADER.as_bytes()) {
            resp.headers_mut()
                .insert(name, HeaderValue::from(API_VERSION));
        }
    }
    Ok(resp)
}

/// `/vrouter/...`, as [`dispatch`] routes it.
fn is_agent_api(path: &str) -> bool {
    path.split('/').find(|s| !s.is_empty()) == Some("vrouter")
}

/// The agent-API version check: another version is refused with a 400 naming both, and a
/// warning at most every [`PEER_LOG_EVERY`] per peer and version.
fn check_version(
    shared: &Shared,
    peer: SocketAddr,
    req: &Request<Incoming>,
) -> Result<(), ApiError> {
    let header = req.headers().get(VERSION_HEADER).map(HeaderValue::as_bytes);
    let Some(theirs) = contract::foreign_version(header) else {
        return Ok(());
    };
    let e = contract::version_error(&theirs);
    if shared.peer_log.allow(peer.ip(), &theirs, Instant::now()) {
        log::warn!("refusing {peer}: {e}");
    }
    Err(e)
}

fn to_response(r: Reply) -> Response<Full<Bytes>> {
    let body = r
        .body
        .map(|v| Bytes::from(v.to_string()))
        .unwrap_or_default();
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() =
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    if let Some(tag) = r
        .etag
        .and_then(|t| HeaderValue::from_str(&format!("\"{t}\"")).ok())
    {
        resp.headers_mut().insert(hyper::header::ETAG, tag);
    }
    resp
}

async fn parse_request(
    shared: &Shared,
    peer: SocketAddr,
    agent_api: bool,
    req: Request<Incoming>,
) -> Result<Req, ApiError> {
    if let Some(tok) = &shared.token {
        let given = req
            .headers()
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok());
        if given != Some(tok.as_str()) {
            return Err(ApiError::Unauthorized);
        }
    }
    // Refused after the body is read, so that the connection stays usable.
    let version = if agent_api {
        check_version(shared, peer, &req)
    } else {
        Ok(())
    };
    let base = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| format!("http://{h}"))
        .unwrap_or_else(|| shared.default_base.clone());
    let if_none_match = req
        .headers()
        .get(hyper::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim_matches('"').to_string());
    let method = req.method().clone();
    let path = req.uri().path().trim_end_matches('/').to_string();
    let query = parse_query(req.uri().query());
    let body = match read_body(req.into_body()).await {
        Err(e @ ApiError::Timeout(_)) => {
            if shared
                .peer_log
                .allow(peer.ip(), "stalled body", Instant::now())
            {
                log::warn!("{peer}: {method} {path}: {e}; closing the connection");
            }
            return Err(e);
        }
        b => b?,
    };
    version?;
    Ok(Req {
        method,
        path,
        query,
        body,
        base,
        if_none_match,
    })
}

/// Reads a request body of at most [`MAX_BODY`] bytes, giving up when no byte comes for
/// [`BODY_STALL`] (a slow body that keeps sending is fine).
async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    let mut body = Limited::new(body, MAX_BODY);
    let mut out = Vec::new();
    loop {
        let frame = tokio::time::timeout(BODY_STALL, body.frame())
            .await
            .map_err(|_| {
                ApiError::Timeout(format!(
                    "request body stalled: nothing for {} s after {} bytes",
                    BODY_STALL.as_secs(),
                    out.len()
                ))
            })?;
        match frame {
            None => return Ok(Bytes::from(out)),
            Some(Err(e)) => return Err(bad(format!("reading body: {e}"))),
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    out.extend_from_slice(&d);
                }
            }
        }
    }
}

/// Runs a blocking closure off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Unavailable(format!("worker failed: {e}")))
}

fn ctx(base: &str) -> Ctx {
    Ctx {
        now_us: now_us(),
        new_uuid: uuid::Uuid::new_v4().to_string(),
        base: base.to_string(),
    }
}

/// Routes a request by its top-level path family.
async fn dispatch(shared: Arc<Shared>, req: Req) -> Reply {
    let segs: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    let reply = match segs.as_slice() {
        ["vrouter", rest @ ..] => agent_api(shared, &req, rest).await,
        [] if req.method == Method::GET => Ok(Reply::ok(Core::homepage(&req.base))),
        [name] if req.method == Method::POST && ACTIONS.contains(name) => {
            action(shared, &req, name).await
        }
        [coll] => collection(shared, &req, coll).await,
        [tyname, uuid] => object(shared, &req, tyname, uuid).await,
        _ => Err(no_such_path(&req)),
    };
    reply.unwrap_or_else(|e| Reply::err(&e))
}

fn no_such_path(req: &Req) -> ApiError {
    ApiError::NotFound(format!("no such path {}", req.path))
}

/// The VNC API's `POST /<action>` paths.
const ACTIONS: &[&str] = &[
    "fqname-to-id",
    "id-to-fqname",
    "ref-update",
    "ref-relax-for-delete",
    "prop-collection-update",
    "list-bulk-collection",
];

/// `POST /<action>` (one of [`ACTIONS`]).
async fn action(shared: Arc<Shared>, req: &Req, name: &str) -> Result<Reply, ApiError> {
    match name {
        "prop-collection-update" => {
            return Err(bad(
                "prop-collection-update is not supported; PUT the whole property",
            ))
        }
        "ref-relax-for-delete" => {
            // Contrail relaxes ref checks for the delete that follows; our deletes check
            // back-refs only, which the client removes first, so there is nothing to record.
            let body = body_json(req).unwrap_or(Value::Null);
            return Ok(Reply::ok(json!({"uuid": body.get("uuid")})));
        }
        _ => {}
    }
    let body = body_json(req)?;
    let v = match name {
        "fqname-to-id" => shared.read(|c| c.fqname_to_id(&body))??,
        "id-to-fqname" => shared.read(|c| c.id_to_fqname(&body))??,
        "ref-update" => {
            let base = req.base.clone();
            run_write(shared, move |c| c.ref_update(&body, &ctx(&base))).await?
        }
        _ => {
            let (ty, q) = bulk_query(&body)?;
            shared.read(|c| c.list(ty, &q, &req.base))??
        }
    };
    Ok(Reply::ok(v))
}

/// `list-bulk-collection`: the type and the list query, given as body keys.
fn bulk_query(body: &Value) -> Result<(ObjType, ListQuery), ApiError> {
    let ty = body
        .get("type")
        .and_then(Value::as_str)
        .and_then(ObjType::parse)
        .ok_or_else(|| bad("list-bulk-collection needs a known type"))?;
    let q: HashMap<String, String> = body
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let v = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            (k.clone(), v)
        })
        .collect();
    Ok((ty, list_query(&q)?))
}

/// `GET` / `POST /<type>s`.
async fn collection(shared: Arc<Shared>, req: &Req, coll: &str) -> Result<Reply, ApiError> {
    let ty = type_of_collection(coll)
        .ok_or_else(|| ApiError::NotFound(format!("unknown collection /{coll}")))?;
    match req.method {
        Method::GET => {
            let q = list_query(&req.query)?;
            Ok(Reply::ok(shared.read(|c| c.list(ty, &q, &req.base))??))
        }
        Method::POST => {
            let body = body_json(req)?;
            let ctx = ctx(&req.base);
            let v = run_write(shared, move |c| c.create(ty, &body, &ctx)).await?;
            Ok(Reply::ok(v))
        }
        _ => Ok(method_not_allowed()),
    }
}

/// `GET` / `PUT` / `DELETE /<type>/<uuid>`.
async fn object(
    shared: Arc<Shared>,
    req: &Req,
    tyname: &str,
    uuid: &str,
) -> Result<Reply, ApiError> {
    let ty = ObjType::parse(tyname)
        .filter(|t| t.name() == tyname)
        .ok_or_else(|| ApiError::NotFound(format!("unknown resource type {tyname}")))?;
    let uuid = uuid.to_string();
    match req.method {
        Method::GET => read_object(&shared, req, ty, &uuid),
        Method::PUT => {
            let body = body_json(req)?;
            let ctx = ctx(&req.base);
            let v = run_write(shared, move |c| c.update(ty, &uuid, &body, &ctx)).await?;
            Ok(Reply::ok(v))
        }
        Method::DELETE => {
            run_write(shared, move |c| c.delete(ty, &uuid)).await?;
            Ok(Reply::empty())
        }
        _ => Ok(method_not_allowed()),
    }
}

/// `GET /<type>/<uuid>` with its ETag (304 when `If-None-Match` names it).
fn read_object(shared: &Shared, req: &Req, ty: ObjType, uuid: &str) -> Result<Reply, ApiError> {
    let opts = ReadOpts {
        exclude_back_refs: truthy(req.query.get("exclude_back_refs")),
        exclude_children: truthy(req.query.get("exclude_children")),
        fields: csv_set(req.query.get("fields")).filter(|s| !s.is_empty()),
    };
    let (v, tag) = shared.read(|c| c.read(ty, uuid, &opts, &req.base))??;
    let not_modified = req.if_none_match.as_deref() == Some(tag.as_str());
    Ok(Reply {
        status: if not_modified { 304 } else { 200 },
        body: (!not_modified).then_some(v),
        etag: Some(tag),
    })
}

fn method_not_allowed() -> Reply {
    let e = ErrorReply {
        code: 405,
        message: "method not allowed".into(),
    };
    Reply {
        status: 405,
        body: serde_json::to_value(e).ok(),
        etag: None,
    }
}

async fn run_write<T: Send + 'static>(
    shared: Arc<Shared>,
    f: impl Fn(&mut Core) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    blocking(move || shared.write(f)).await.and_then(|r| r)
}

/// A write of the agent API, answered with its typed reply.
async fn agent_write<T: Serialize + Send + 'static>(
    shared: Arc<Shared>,
    f: impl Fn(&mut Core) -> Result<T, ApiError> + Send + 'static,
) -> Result<Reply, ApiError> {
    Reply::typed(&run_write(shared, f).await?)
}

/// `/vrouter/...`: every write body is parsed once into its `vrouter-api` type.
async fn agent_api(shared: Arc<Shared>, req: &Req, segs: &[&str]) -> Result<Reply, ApiError> {
    match (&req.method, segs) {
        (&Method::GET, ["agents"]) => Reply::typed(&shared.read(Core::list_agents)?),
        (&Method::POST, ["agents"]) => {
            let b: RegisterAgent = parse_body(&req.body)?;
            agent_write(shared, move |c| c.register_agent(&b, now_us())).await
        }
        (&Method::DELETE, ["agents", host]) => {
            let host = host.to_string();
            run_write(shared, move |c| c.deregister_agent(&host)).await?;
            Ok(Reply::empty())
        }
        (&Method::POST, ["bindings"]) => {
            let b: Binding = parse_body(&req.body)?;
            agent_write(shared, move |c| c.bind(&b)).await
        }
        (&Method::DELETE, ["bindings"]) => {
            let b: Binding = parse_body(&req.body)?;
            agent_write(shared, move |c| c.unbind(&b)).await
        }
        (&Method::GET, ["routes"]) => {
            let vrf = req.query.get("vrf").map(String::as_str);
            Reply::typed(&shared.read(|c| c.list_routes(vrf))?)
        }
        (&Method::POST, ["routes"]) => {
            let b: Advertise = parse_body(&req.body)?;
            agent_write(shared, move |c| c.advertise(&b)).await
        }
        (&Method::DELETE, ["routes"]) => {
            let b: Withdraw = parse_body(&req.body)?;
            agent_write(shared, move |c| c.withdraw(&b)).await
        }
        (&Method::GET, ["interfaces", uuid]) => {
            let cfg = shared.read(|c| c.interface_config(uuid))?.ok_or_else(|| {
                ApiError::NotFound(format!("No virtual-machine-interface {uuid}"))
            })?;
            Reply::typed(&cfg)
        }
        (&Method::GET, ["watch"]) => watch(shared, req).await,
        (&Method::GET, ["bgp", "neighbors"]) => match shared.bgp.get() {
            Some(t) => Reply::typed(&t.summary()),
            None => Err(ApiError::NotFound(
                "the BGP speaker is off (vrouter-shim --bgp ADDR turns it on)".into(),
            )),
        },
        _ => Err(no_such_path(req)),
    }
}

/// Long-poll: answers as soon as there is something after `since`, or empty at the timeout.
async fn watch(shared: Arc<Shared>, req: &Req) -> Result<Reply, ApiError> {
    let host = req
        .query
        .get("host")
        .cloned()
        .ok_or_else(|| bad("host is required"))?;
    let since: u64 = match req.query.get("since").map(|s| s.parse()) {
        None => 0,
        Some(Ok(v)) => v,
        Some(Err(_)) => return Err(bad("since must be an integer")),
    };
    let secs: u64 = req
        .query
        .get("timeout")
        .and_then(|t| t.parse().ok())
        .unwrap_or(25)
        .min(300);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let mut rx = shared.notify.subscribe();
        let s2 = Arc::clone(&shared);
        let h2 = host.clone();
        let w = blocking(move || {
            s2.read(|c| c.watch(&h2, since))
                .and_then(|r| r)
                .inspect(|_| {
                    lock(&s2.core).touch_agent(&h2, now_us());
                })
        })
        .await??;
        if !w.events.is_empty() || w.reset || tokio::time::Instant::now() >= deadline {
            return Reply::typed(&w);
        }
        if tokio::time::timeout_at(deadline, rx.changed())
            .await
            .is_err()
        {
            // Timed out: one last look, then answer (empty if still nothing).
            continue;
        }
    }
}

/// Runs the daemon: opens the store, binds, serves forever.
pub fn run(cfg: Config) -> Result<(), ServeError> {
    if cfg.token.is_none() && !cfg.listen.ip().is_loopback() {
        return Err(ServeError::Config(format!(
            "refusing to listen on {} without --token: without a token the shim serves loopback only",
            cfg.listen
        )));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let shared = blocking_open(&cfg).await?;
        let listener = TcpListener::bind(cfg.listen).await?;
        log::info!(
            "vrouter-shim listening on {} (store {})",
            listener.local_addr()?,
            cfg.store
        );
        if !cfg.agent_ttl.is_zero() {
            let s = Arc::clone(&shared);
            let ttl = cfg.agent_ttl;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval((ttl / 3).max(Duration::from_secs(1)));
                loop {
                    tick.tick().await;
                    let s = Arc::clone(&s);
                    let _ = tokio::task::spawn_blocking(move || s.expire_agents(ttl)).await;
                }
            });
        }
        if matches!(shared.persist, Persist::Serial { .. }) {
            let s = Arc::clone(&shared);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    let s = Arc::clone(&s);
                    let _ = tokio::task::spawn_blocking(move || s.poll_store()).await;
                }
            });
        }
        if let Some(bgp) = cfg.bgp.clone() {
            start_bgp(&shared, bgp);
        }
        serve(listener, shared).await?;
        Ok(())
    })
}

/// Starts the BGP speaker; a failure to bind is logged and leaves the API serving.
fn start_bgp(shared: &Arc<Shared>, cfg: crate::bgp::speaker::SpeakerConfig) {
    let std::net::IpAddr::V4(rid) = cfg.bind.ip() else {
        log::error!(
            "--bgp {}: the router-id must be an IPv4 address; BGP is off",
            cfg.bind
        );
        return;
    };
    let table = Arc::new(crate::bgp::speaker::Neighbours::new(rid));
    let _ = shared.bgp.set(Arc::clone(&table));
    let s = Arc::clone(shared);
    tokio::spawn(async move {
        if let Err(e) = crate::bgp::speaker::run(s, cfg.clone(), table).await {
            log::error!("BGP speaker on {}: {e}; BGP is off", cfg.bind);
        }
    });
}

async fn blocking_open(cfg: &Config) -> Result<Arc<Shared>, ServeError> {
    let cfg = cfg.clone();
    tokio::task::spawn_blocking(move || Shared::open(&cfg))
        .await
        .map_err(|e| ServeError::Config(format!("startup task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = parse_query(Some(
            "fields=a%2Cb&detail=True&parent_fq_name_str=default-domain%3Ap&x",
        ));
        assert_eq!(q.get("fields").map(String::as_str), Some("a,b"));
        assert_eq!(
            q.get("parent_fq_name_str").map(String::as_str),
            Some("default-domain:p")
        );
        assert!(truthy(q.get("detail")));
        assert_eq!(pct_decode("100%"), "100%");
        assert_eq!(pct_decode("a+b%20c"), "a b c");
    }

    #[test]
    fn collection_names() {
        assert_eq!(
            type_of_collection("network-policys"),
            Some(ObjType::NetworkPolicy)
        );
        assert_eq!(type_of_collection("virtual_networks"), None);
        assert_eq!(type_of_collection("foos"), None);
    }
}
