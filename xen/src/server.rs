// SPDX-License-Identifier: Apache-2.0
//! The dev daemon's protocol engine, with no I/O: requests in, replies and watch events out.
//!
//! [`Server::handle`] takes one decoded request from one connection and returns every message
//! that must be sent as a result, each addressed to a connection: the reply to the caller first,
//! then watch events (to the caller and to other connections). The I/O layer (`daemon`) only
//! moves bytes and must deliver each connection's messages in the order returned.
//!
//! Semantics follow C xenstored (docs/misc/xenstore.txt) where clients can tell the difference:
//! relative paths are relative to `/local/domain/<domid>`; a new watch fires once immediately
//! with its own path; watches fire on the changed node and its ancestors, and a removal also fires
//! every watch below the removed node; transaction ids come from `TRANSACTION_START` and are
//! carried in the header's `tx_id`; changes inside a transaction fire watches only at commit;
//! unknown message types get `ENOSYS`.

use std::collections::{BTreeMap, HashMap};

use crate::perms::Perms;
use crate::store::{Caller, Change, Store, Tx};
use crate::wire::{self, Msg, Op, XsErrno, ABS_PATH_MAX, PAYLOAD_MAX, REL_PATH_MAX};

/// Identifies a connection to the daemon.
pub type ConnId = u64;

/// Per-connection quotas (C xenstored has similar ones), so that one client cannot make the
/// daemon grow without bound.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Watches per connection.
    pub watches: usize,
    /// Open transactions per connection.
    pub transactions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            watches: 1024,
            transactions: 64,
        }
    }
}

/// A message to send to a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Destination.
    pub to: ConnId,
    /// The message.
    pub msg: Msg,
}

#[derive(Debug)]
struct Watch {
    /// The path as the client gave it (relative paths are reported back relative).
    given: String,
    /// Canonical absolute path, or the special `@...` name.
    canon: String,
    token: Vec<u8>,
}

#[derive(Debug)]
struct Conn {
    caller: Caller,
    watches: Vec<Watch>,
    txs: HashMap<u32, Tx>,
}

/// The protocol engine: the store plus connections, their watches and transactions.
#[derive(Debug)]
pub struct Server {
    store: Store,
    conns: BTreeMap<ConnId, Conn>,
    next_tx: u32,
    limits: Limits,
}

impl Default for Server {
    fn default() -> Self {
        Server::new(Limits::default())
    }
}

impl Server {
    /// An engine with an initial store.
    pub fn new(limits: Limits) -> Server {
        Server {
            store: Store::new(),
            conns: BTreeMap::new(),
            next_tx: 1,
            limits,
        }
    }

    /// The store (tests and leak checks).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Number of open connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Registers a connection.
    pub fn connect(&mut self, id: ConnId, caller: Caller) {
        self.conns.insert(
            id,
            Conn {
                caller,
                watches: Vec::new(),
                txs: HashMap::new(),
            },
        );
    }

    /// Forgets a connection: its watches go, its open transactions are aborted.
    pub fn disconnect(&mut self, id: ConnId) {
        self.conns.remove(&id);
    }

    /// Handles one request from `from`. Requests from unknown connections are ignored.
    pub fn handle(&mut self, from: ConnId, req: &Msg) -> Vec<Outgoing> {
        let Some(conn) = self.conns.get(&from) else {
            return Vec::new();
        };
        let caller = conn.caller;
        let mut out = Vec::new();
        let reply = match self.dispatch(from, caller, req, &mut out) {
            Ok(payload) => match Msg::reply(req, payload) {
                Ok(m) => m,
                Err(_) => Msg::error_reply(req, XsErrno::E2big),
            },
            Err(e) => Msg::error_reply(req, e),
        };
        out.insert(
            0,
            Outgoing {
                to: from,
                msg: reply,
            },
        );
        out
    }

    fn dispatch(
        &mut self,
        from: ConnId,
        caller: Caller,
        req: &Msg,
        out: &mut Vec<Outgoing>,
    ) -> Result<Vec<u8>, XsErrno> {
        const OK: &[u8] = b"OK\0";
        match req.op {
            Op::Read
            | Op::Directory
            | Op::GetPerms
            | Op::Write
            | Op::Mkdir
            | Op::Rm
            | Op::SetPerms
            | Op::DirectoryPart => self.node_op(from, caller, req, out),
            Op::Watch => {
                let (given, canon, token) = watch_args(caller, &req.payload)?;
                let limit = self.limits.watches;
                let conn = self.conns.get_mut(&from).ok_or(XsErrno::Einval)?;
                if conn
                    .watches
                    .iter()
                    .any(|w| w.canon == canon && w.token == token)
                {
                    return Err(XsErrno::Eexist);
                }
                if conn.watches.len() >= limit {
                    return Err(XsErrno::Enospc);
                }
                // The initial event goes after the reply (which `handle` puts first).
                let ev = Msg::watch_event(&given, &token).map_err(|_| XsErrno::E2big)?;
                out.push(Outgoing { to: from, msg: ev });
                conn.watches.push(Watch {
                    given,
                    canon,
                    token,
                });
                Ok(OK.to_vec())
            }
            Op::Unwatch => {
                let (_, canon, token) = watch_args(caller, &req.payload)?;
                let conn = self.conns.get_mut(&from).ok_or(XsErrno::Einval)?;
                let before = conn.watches.len();
                conn.watches
                    .retain(|w| !(w.canon == canon && w.token == token));
                if conn.watches.len() == before {
                    return Err(XsErrno::Enoent);
                }
                Ok(OK.to_vec())
            }
            Op::TransactionStart => {
                if req.tx_id != 0 {
                    return Err(XsErrno::Ebusy);
                }
                let limit = self.limits.transactions;
                let id = self.next_tx;
                let conn = self.conns.get_mut(&from).ok_or(XsErrno::Einval)?;
                if conn.txs.len() >= limit {
                    return Err(XsErrno::Enospc);
                }
                conn.txs.insert(id, Tx::new());
                self.next_tx = self.next_tx.wrapping_add(1).max(1);
                Ok(format!("{id}\0").into_bytes())
            }
            Op::TransactionEnd => {
                let commit = match wire::single_string(&req.payload) {
                    Some("T") => true,
                    Some("F") => false,
                    _ => return Err(XsErrno::Einval),
                };
                let conn = self.conns.get_mut(&from).ok_or(XsErrno::Einval)?;
                let tx = conn.txs.remove(&req.tx_id).ok_or(XsErrno::Enoent)?;
                if commit {
                    let changes = self.store.commit(tx)?;
                    self.fire(&changes, out);
                }
                Ok(OK.to_vec())
            }
            Op::GetDomainPath => {
                let d = wire::single_string(&req.payload).ok_or(XsErrno::Einval)?;
                let domid: u32 = d.parse().map_err(|_| XsErrno::Einval)?;
                Ok(format!("/local/domain/{domid}\0").into_bytes())
            }
            Op::IsDomainIntroduced => {
                let d = wire::single_string(&req.payload).ok_or(XsErrno::Einval)?;
                let domid: u32 = d.parse().map_err(|_| XsErrno::Einval)?;
                Ok(if domid == 0 {
                    b"T\0".to_vec()
                } else {
                    b"F\0".to_vec()
                })
            }
            Op::Introduce | Op::Release | Op::Resume | Op::SetTarget => {
                if !caller.privileged {
                    return Err(XsErrno::Eacces);
                }
                let special = match req.op {
                    Op::Introduce => Some("@introduceDomain"),
                    Op::Release => Some("@releaseDomain"),
                    _ => None,
                };
                if let Some(name) = special {
                    self.fire(&[Change::Modified(name.to_string())], out);
                }
                Ok(OK.to_vec())
            }
            Op::ResetWatches => {
                let conn = self.conns.get_mut(&from).ok_or(XsErrno::Einval)?;
                conn.watches.clear();
                conn.txs.clear();
                Ok(OK.to_vec())
            }
            Op::Control | Op::WatchEvent | Op::Error => Err(XsErrno::Einval),
            Op::Unknown(_) => Err(XsErrno::Enosys),
        }
    }

    fn node_op(
        &mut self,
        from: ConnId,
        caller: Caller,
        req: &Msg,
        out: &mut Vec<Outgoing>,
    ) -> Result<Vec<u8>, XsErrno> {
        const OK: &[u8] = b"OK\0";
        // Split the payload before touching the store.
        enum Args<'a> {
            Path(String),
            Write(String, &'a [u8]),
            Perms(String, Perms),
            Part(String, usize),
        }
        let args = match req.op {
            Op::Write => {
                let nul = req
                    .payload
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or(XsErrno::Einval)?;
                let p = std::str::from_utf8(&req.payload[..nul]).map_err(|_| XsErrno::Einval)?;
                Args::Write(canonical(caller, p)?, &req.payload[nul + 1..])
            }
            Op::SetPerms => {
                let parts = wire::split_strings(&req.payload);
                let (p, rest) = parts.split_first().ok_or(XsErrno::Einval)?;
                let p = std::str::from_utf8(p).map_err(|_| XsErrno::Einval)?;
                let strs: Option<Vec<&str>> =
                    rest.iter().map(|s| std::str::from_utf8(s).ok()).collect();
                let perms = Perms::parse(strs.ok_or(XsErrno::Einval)?).ok_or(XsErrno::Einval)?;
                Args::Perms(canonical(caller, p)?, perms)
            }
            Op::DirectoryPart => {
                let parts = wire::split_strings(&req.payload);
                if parts.len() != 2 {
                    return Err(XsErrno::Einval);
                }
                let p = std::str::from_utf8(parts[0]).map_err(|_| XsErrno::Einval)?;
                let off = std::str::from_utf8(parts[1])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(XsErrno::Einval)?;
                Args::Part(canonical(caller, p)?, off)
            }
            _ => {
                let p = wire::single_string(&req.payload).ok_or(XsErrno::Einval)?;
                Args::Path(canonical(caller, p)?)
            }
        };

        let mut scratch = Tx::new();
        let in_tx = req.tx_id != 0;
        let conn = self.conns.get_mut(&from).ok_or(XsErrno::Einval)?;
        let tx = if in_tx {
            conn.txs.get_mut(&req.tx_id).ok_or(XsErrno::Enoent)?
        } else {
            &mut scratch
        };
        let mut ops = self.store.op(tx, caller);
        let reply = match (req.op, &args) {
            (Op::Read, Args::Path(p)) => ops.read(p)?,
            (Op::Directory, Args::Path(p)) => {
                let mut v = Vec::new();
                for c in ops.directory(p)? {
                    v.extend_from_slice(c.as_bytes());
                    v.push(0);
                }
                if v.len() > PAYLOAD_MAX {
                    return Err(XsErrno::E2big);
                }
                v
            }
            (Op::DirectoryPart, Args::Part(p, off)) => {
                let (gen, children) = ops.directory_with_gen(p)?;
                directory_part(gen, &children, *off)
            }
            (Op::GetPerms, Args::Path(p)) => ops.get_perms(p)?.to_payload(),
            (Op::Write, Args::Write(p, v)) => {
                ops.write(p, v)?;
                OK.to_vec()
            }
            (Op::Mkdir, Args::Path(p)) => {
                ops.mkdir(p)?;
                OK.to_vec()
            }
            (Op::Rm, Args::Path(p)) => {
                ops.rm(p)?;
                OK.to_vec()
            }
            (Op::SetPerms, Args::Perms(p, perms)) => {
                ops.set_perms(p, perms.clone())?;
                OK.to_vec()
            }
            _ => return Err(XsErrno::Einval),
        };
        if !in_tx {
            // Cannot conflict: nothing else ran since the scratch transaction started.
            let changes = self.store.commit(scratch)?;
            self.fire(&changes, out);
        }
        Ok(reply)
    }

    /// Queues watch events for committed changes.
    fn fire(&self, changes: &[Change], out: &mut Vec<Outgoing>) {
        for change in changes {
            let (path, removed) = match change {
                Change::Modified(p) => (p.as_str(), false),
                Change::Removed(p) => (p.as_str(), true),
            };
            for (&id, conn) in &self.conns {
                for w in &conn.watches {
                    let event_path = if is_prefix(&w.canon, path) {
                        path
                    } else if removed && is_prefix(path, &w.canon) {
                        w.canon.as_str()
                    } else {
                        continue;
                    };
                    if !path.starts_with('@') && !self.store.readable_by(event_path, conn.caller) {
                        continue;
                    }
                    let shown = relative_for(w, event_path);
                    if let Ok(msg) = Msg::watch_event(shown, &w.token) {
                        out.push(Outgoing { to: id, msg });
                    }
                }
            }
        }
    }
}

/// Whether `watch` is `path` or an ancestor of it.
fn is_prefix(watch: &str, path: &str) -> bool {
    if watch.starts_with('@') || path.starts_with('@') {
        return watch == path;
    }
    watch == "/"
        || path == watch
        || (path.len() > watch.len()
            && path.starts_with(watch)
            && path.as_bytes()[watch.len()] == b'/')
}

/// Reports an event path relative if the watch was registered relative.
fn relative_for<'a>(w: &Watch, path: &'a str) -> &'a str {
    if w.given.starts_with('/') || w.given.starts_with('@') {
        return path;
    }
    // canon = prefix + given; strip the same prefix from the event path.
    let prefix_len = w.canon.len() - w.given.len();
    path.get(prefix_len..).unwrap_or(path)
}

fn watch_args(caller: Caller, payload: &[u8]) -> Result<(String, String, Vec<u8>), XsErrno> {
    let parts = wire::split_strings(payload);
    if parts.len() < 2 {
        return Err(XsErrno::Einval);
    }
    let given = std::str::from_utf8(parts[0]).map_err(|_| XsErrno::Einval)?;
    let canon = if given.starts_with('@') {
        if given.len() > REL_PATH_MAX || !valid_chars(given) {
            return Err(XsErrno::Einval);
        }
        given.to_string()
    } else {
        canonical(caller, given)?
    };
    Ok((given.to_string(), canon, parts[1].to_vec()))
}

fn valid_chars(p: &str) -> bool {
    p.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-/_@".contains(&b))
}

/// Validates a client path and makes it absolute (C xenstored's `is_valid_nodename`).
pub fn canonical(caller: Caller, p: &str) -> Result<String, XsErrno> {
    let abs = if p.starts_with('/') {
        p.to_string()
    } else {
        if p.is_empty() || p.len() > REL_PATH_MAX {
            return Err(XsErrno::Einval);
        }
        format!("/local/domain/{}/{}", caller.domid, p)
    };
    if abs.len() > ABS_PATH_MAX
        || abs.contains("//")
        || (abs.len() > 1 && abs.ends_with('/'))
        || abs.contains('@')
        || !valid_chars(&abs)
    {
        return Err(XsErrno::Einval);
    }
    Ok(abs)
}

/// `DIRECTORY_PART` reply: `<gen>\0` then as many whole `child\0` entries from byte offset `off`
/// as fit, then one more `\0` if the list is complete (libxenstore `xs_directory_part`).
fn directory_part(gen: u64, children: &[String], off: usize) -> Vec<u8> {
    let mut out = format!("{gen}\0").into_bytes();
    let budget = PAYLOAD_MAX - out.len() - 1;
    let mut pos = 0usize;
    let mut used = 0usize;
    let mut complete = true;
    for c in children {
        let len = c.len() + 1;
        if pos >= off {
            if used + len > budget {
                complete = false;
                break;
            }
            out.extend_from_slice(c.as_bytes());
            out.push(0);
            used += len;
        }
        pos += len;
    }
    if complete {
        out.push(0);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const A: ConnId = 1;
    const B: ConnId = 2;
    const GUEST: ConnId = 3;

    fn server() -> Server {
        let mut s = Server::default();
        s.connect(A, Caller::DOM0);
        s.connect(B, Caller::DOM0);
        s.connect(
            GUEST,
            Caller {
                domid: 9,
                privileged: false,
            },
        );
        s
    }

    fn req(op: Op, tx: u32, parts: &[&str]) -> Msg {
        let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
        Msg::with_strings(op, 42, tx, &parts).unwrap()
    }

    fn write(path: &str, v: &str) -> Msg {
        Msg::write(42, 0, path, v.as_bytes()).unwrap()
    }

    fn reply(out: &[Outgoing]) -> &Msg {
        &out[0].msg
    }

    fn events(out: &[Outgoing], to: ConnId) -> Vec<(String, String)> {
        out.iter()
            .filter(|o| o.to == to && o.msg.op == Op::WatchEvent)
            .map(|o| {
                let (p, t) = wire::parse_watch_event(&o.msg.payload).unwrap();
                (p, String::from_utf8(t).unwrap())
            })
            .collect()
    }

    #[test]
    fn test_write_read_reply_bytes() {
        let mut s = server();
        let out = s.handle(A, &write("/a/b", "hello"));
        assert_eq!(
            reply(&out).encode(),
            Msg::ack(&write("/a/b", "hello")).encode()
        );
        let out = s.handle(A, &req(Op::Read, 0, &["/a/b"]));
        assert_eq!(reply(&out).op, Op::Read);
        assert_eq!(reply(&out).req_id, 42);
        assert_eq!(reply(&out).payload, b"hello");
        let out = s.handle(A, &req(Op::Directory, 0, &["/a"]));
        assert_eq!(reply(&out).payload, b"b\0");
        let out = s.handle(A, &req(Op::Read, 0, &["/zz"]));
        assert_eq!(reply(&out).as_error(), Some(XsErrno::Enoent));
        assert_eq!(reply(&out).payload, b"ENOENT\0");
    }

    #[test]
    fn test_relative_paths_are_under_own_domain() {
        let mut s = server();
        s.handle(A, &write("name", "Domain-0"));
        let out = s.handle(B, &req(Op::Read, 0, &["/local/domain/0/name"]));
        assert_eq!(reply(&out).payload, b"Domain-0");
    }

    #[test]
    fn test_watch_initial_event_then_children_and_removal() {
        let mut s = server();
        let out = s.handle(
            B,
            &req(Op::Watch, 0, &["/local/domain/0/backend/vif", "tok"]),
        );
        assert_eq!(reply(&out).payload, b"OK\0");
        assert_eq!(
            events(&out, B),
            vec![("/local/domain/0/backend/vif".into(), "tok".into())]
        );
        let out = s.handle(A, &write("/local/domain/0/backend/vif/3/0/online", "1"));
        assert_eq!(
            events(&out, B),
            vec![(
                "/local/domain/0/backend/vif/3/0/online".into(),
                "tok".into()
            )]
        );
        // Unrelated paths do not fire; neither does a sibling with a common string prefix.
        let out = s.handle(A, &write("/local/domain/0/backend/vif2", "x"));
        assert!(events(&out, B).is_empty());
        // Removing an ancestor fires the watch, with the watch's own path (the node it watched
        // is gone), as C xenstored does for the children of a removed node.
        let out = s.handle(A, &req(Op::Rm, 0, &["/local/domain/0/backend"]));
        assert_eq!(
            events(&out, B),
            vec![("/local/domain/0/backend/vif".into(), "tok".into())]
        );
        // Unwatch; then nothing fires.
        let out = s.handle(
            B,
            &req(Op::Unwatch, 0, &["/local/domain/0/backend/vif", "tok"]),
        );
        assert_eq!(reply(&out).payload, b"OK\0");
        let out = s.handle(A, &write("/local/domain/0/backend/vif/1", "x"));
        assert!(events(&out, B).is_empty());
        let out = s.handle(
            B,
            &req(Op::Unwatch, 0, &["/local/domain/0/backend/vif", "tok"]),
        );
        assert_eq!(reply(&out).as_error(), Some(XsErrno::Enoent));
    }

    #[test]
    fn test_relative_watch_reports_relative_paths() {
        let mut s = server();
        s.handle(B, &req(Op::Watch, 0, &["device", "t"]));
        let out = s.handle(A, &write("/local/domain/0/device/vif/0/state", "4"));
        assert_eq!(
            events(&out, B),
            vec![("device/vif/0/state".into(), "t".into())]
        );
    }

    #[test]
    fn test_duplicate_watch_is_eexist() {
        let mut s = server();
        s.handle(B, &req(Op::Watch, 0, &["/x", "t"]));
        let out = s.handle(B, &req(Op::Watch, 0, &["/x", "t"]));
        assert_eq!(reply(&out).as_error(), Some(XsErrno::Eexist));
    }

    #[test]
    fn test_transaction_fires_at_commit_and_conflicts() {
        let mut s = server();
        s.handle(B, &req(Op::Watch, 0, &["/v", "t"]));
        let out = s.handle(A, &req(Op::TransactionStart, 0, &[""]));
        let id: u32 = wire::single_string(&reply(&out).payload)
            .unwrap()
            .parse()
            .unwrap();
        let out = s.handle(A, &Msg::write(1, id, "/v/k1", b"a").unwrap());
        assert_eq!(reply(&out).tx_id, id);
        assert!(events(&out, B).is_empty(), "no events before commit");
        s.handle(A, &Msg::write(1, id, "/v/k2", b"b").unwrap());
        // Invisible outside.
        let out = s.handle(B, &req(Op::Read, 0, &["/v/k1"]));
        assert_eq!(reply(&out).as_error(), Some(XsErrno::Enoent));
        let out = s.handle(A, &req(Op::TransactionEnd, id, &["T"]));
        assert_eq!(reply(&out).payload, b"OK\0");
        assert_eq!(events(&out, B).len(), 2);

        // Conflict: a tx reads /v/k1, someone else writes it, commit fails with EAGAIN.
        let out = s.handle(A, &req(Op::TransactionStart, 0, &[""]));
        let id: u32 = wire::single_string(&reply(&out).payload)
            .unwrap()
            .parse()
            .unwrap();
        s.handle(A, &req(Op::Read, id, &["/v/k1"]));
        s.handle(A, &Msg::write(1, id, "/v/k3", b"c").unwrap());
        s.handle(B, &write("/v/k1", "changed"));
        let out = s.handle(A, &req(Op::TransactionEnd, id, &["T"]));
        assert_eq!(reply(&out).as_error(), Some(XsErrno::Eagain));
        let out = s.handle(A, &req(Op::TransactionEnd, id, &["T"]));
        assert_eq!(
            reply(&out).as_error(),
            Some(XsErrno::Enoent),
            "tx is gone after EAGAIN"
        );
        let out = s.handle(A, &req(Op::Read, 0, &["/v/k3"]));
        assert_eq!(reply(&out).as_error(), Some(XsErrno::Enoent));
        // Unknown transaction id.
        let out = s.handle(A, &Msg::write(1, 999, "/v/k", b"").unwrap());
        assert_eq!(reply(&out).as_error(), Some(XsErrno::Enoent));
        // Nested start.
        let out = s.handle(A, &req(Op::TransactionStart, 5, &[""]));
        assert_eq!(reply(&out).as_error(), Some(XsErrno::Ebusy));
    }

    #[test]
    fn test_abort_discards() {
        let mut s = server();
        let out = s.handle(A, &req(Op::TransactionStart, 0, &[""]));
        let id: u32 = wire::single_string(&reply(&out).payload)
            .unwrap()
            .parse()
            .unwrap();
        s.handle(A, &Msg::write(1, id, "/gone", b"a").unwrap());
        s.handle(A, &req(Op::TransactionEnd, id, &["F"]));
        let out = s.handle(A, &req(Op::Read, 0, &["/gone"]));
        assert_eq!(reply(&out).as_error(), Some(XsErrno::Enoent));
    }

    #[test]
    fn test_unprivileged_write_refused() {
        let mut s = server();
        s.handle(A, &write("/a", "v"));
        let out = s.handle(GUEST, &req(Op::Read, 0, &["/a"]));
        assert_eq!(reply(&out).payload, b"v");
        let out = s.handle(GUEST, &write("/a", "x"));
        assert_eq!(reply(&out).as_error(), Some(XsErrno::Eacces));
        let out = s.handle(GUEST, &req(Op::Introduce, 0, &["1", "2", "3"]));
        assert_eq!(reply(&out).as_error(), Some(XsErrno::Eacces));
        let out = s.handle(GUEST, &req(Op::SetPerms, 0, &["/a", "b9"]));
        assert_eq!(reply(&out).as_error(), Some(XsErrno::Eacces));
    }

    #[test]
    fn test_perms_round_trip() {
        let mut s = server();
        s.handle(A, &write("/a", "v"));
        let out = s.handle(A, &req(Op::SetPerms, 0, &["/a", "n0", "r9"]));
        assert_eq!(reply(&out).payload, b"OK\0");
        let out = s.handle(A, &req(Op::GetPerms, 0, &["/a"]));
        assert_eq!(reply(&out).payload, b"n0\0r9\0");
        let out = s.handle(A, &req(Op::SetPerms, 0, &["/a", "x0"]));
        assert_eq!(reply(&out).as_error(), Some(XsErrno::Einval));
    }

    #[test]
    fn test_bad_requests() {
        let mut s = server();
        for bad in ["", "/a//b", "/a/", "a b", "/x@y"] {
            let out = s.handle(A, &req(Op::Read, 0, &[bad]));
            assert_eq!(reply(&out).as_error(), Some(XsErrno::Einval), "{bad:?}");
        }
        // Missing NUL.
        let out = s.handle(A, &Msg::new(Op::Read, 1, 0, b"/a".to_vec()).unwrap());
        assert_eq!(reply(&out).as_error(), Some(XsErrno::Einval));
        let out = s.handle(A, &Msg::new(Op::Unknown(77), 1, 0, vec![]).unwrap());
        assert_eq!(reply(&out).as_error(), Some(XsErrno::Enosys));
        let out = s.handle(A, &Msg::new(Op::WatchEvent, 1, 0, vec![]).unwrap());
        assert_eq!(reply(&out).as_error(), Some(XsErrno::Einval));
    }

    #[test]
    fn test_big_directory_needs_directory_part() {
        let mut s = server();
        for i in 0..1000 {
            s.handle(A, &write(&format!("/big/child-number-{i:04}"), ""));
        }
        let out = s.handle(A, &req(Op::Directory, 0, &["/big"]));
        assert_eq!(reply(&out).as_error(), Some(XsErrno::E2big));
        let mut names = Vec::new();
        let mut off = 0;
        loop {
            let out = s.handle(A, &req(Op::DirectoryPart, 0, &["/big", &off.to_string()]));
            let p = &reply(&out).payload;
            assert!(p.len() <= PAYLOAD_MAX);
            let gen_end = p.iter().position(|&b| b == 0).unwrap();
            let body = &p[gen_end + 1..];
            let done = body.ends_with(b"\0\0") || body == b"\0";
            for n in body.split(|&b| b == 0).filter(|n| !n.is_empty()) {
                off += n.len() + 1;
                names.push(String::from_utf8(n.to_vec()).unwrap());
            }
            if done {
                break;
            }
        }
        assert_eq!(names.len(), 1000);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn arb_msg() -> impl Strategy<Value = Msg> {
            let path = prop_oneof![
                Just("/a".to_string()),
                Just("/a/b".to_string()),
                Just("/a/b/c".to_string()),
                Just("rel".to_string()),
                Just("@introduceDomain".to_string()),
                "[a-z/@.]{0,12}",
            ];
            (
                0u32..30,
                any::<u32>(),
                prop_oneof![Just(0u32), 1u32..4, any::<u32>()],
                path,
                proptest::collection::vec(any::<u8>(), 0..16),
                0u8..4,
            )
                .prop_map(|(op, req, tx, path, junk, shape)| {
                    let payload = match shape {
                        0 => format!("{path}\0").into_bytes(),
                        1 => format!("{path}\0tok\0").into_bytes(),
                        2 => {
                            let mut v = format!("{path}\0").into_bytes();
                            v.extend(junk);
                            v
                        }
                        _ => junk,
                    };
                    Msg {
                        op: Op::from(op),
                        req_id: req,
                        tx_id: tx,
                        payload,
                    }
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            /// Any request sequence from a mix of privileged and unprivileged connections: no
            /// panic, and every request gets exactly one reply, first, echoing its ids.
            #[test]
            fn random_requests_get_one_reply_each(
                msgs in proptest::collection::vec((0u64..3, arb_msg()), 1..60)
            ) {
                let mut s = server();
                for (i, (conn, m)) in msgs.iter().enumerate() {
                    let from = [A, B, GUEST][*conn as usize];
                    let out = s.handle(from, m);
                    prop_assert!(!out.is_empty());
                    prop_assert_eq!(out[0].to, from);
                    prop_assert_eq!(out[0].msg.req_id, m.req_id);
                    prop_assert_eq!(out[0].msg.tx_id, m.tx_id);
                    prop_assert!(out[0].msg.op == m.op || out[0].msg.op == Op::Error);
                    let replies = out.iter().filter(|o| o.msg.op != Op::WatchEvent).count();
                    prop_assert_eq!(replies, 1, "request {} {:?}", i, m);
                    for o in &out {
                        prop_assert!(o.msg.payload.len() <= PAYLOAD_MAX);
                    }
                }
                s.disconnect(A);
                s.disconnect(B);
                s.disconnect(GUEST);
                prop_assert_eq!(s.connections(), 0);
            }
        }
    }

    #[test]
    fn test_watch_limits_and_disconnect_cleanup() {
        let mut s = Server::new(Limits {
            watches: 2,
            transactions: 1,
        });
        s.connect(A, Caller::DOM0);
        s.handle(A, &req(Op::Watch, 0, &["/a", "1"]));
        s.handle(A, &req(Op::Watch, 0, &["/a", "2"]));
        let out = s.handle(A, &req(Op::Watch, 0, &["/a", "3"]));
        assert_eq!(reply(&out).as_error(), Some(XsErrno::Enospc));
        s.handle(A, &req(Op::TransactionStart, 0, &[""]));
        let out = s.handle(A, &req(Op::TransactionStart, 0, &[""]));
        assert_eq!(reply(&out).as_error(), Some(XsErrno::Enospc));
        s.disconnect(A);
        assert_eq!(s.connections(), 0);
        assert!(s.handle(A, &req(Op::Read, 0, &["/"])).is_empty());
    }
}
