// SPDX-License-Identifier: Apache-2.0
//! A synchronous xenstore client over any [`Transport`].
//!
//! One request is outstanding at a time. Watch events may arrive at any moment, including
//! between a request and its reply; they are queued and handed out by [`Client::wait_event`], so
//! a caller can interleave reads with event processing on a single connection (what the binder
//! does).
//!
//! Transactions: [`Client::transaction`] runs a closure inside `TRANSACTION_START` /
//! `TRANSACTION_END` and re-runs it when the daemon reports a conflict (`EAGAIN`), as
//! libxenstore callers do.

use std::collections::VecDeque;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::perms::Perms;
use crate::transport::{Transport, UnixTransport, XenbusTransport, DEFAULT_SOCKET, XENBUS_DEVICE};
use crate::wire::{self, Msg, Op, Parser, WireError, XsErrno};

/// How many times [`Client::transaction`] retries a conflicting transaction.
pub const TRANSACTION_ATTEMPTS: u32 = 64;

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The daemon refused the request.
    #[error("xenstore {op:?} {path}: {errno}")]
    Xs {
        /// The request type.
        op: Op,
        /// The path (or other first argument) of the request.
        path: String,
        /// The daemon's error.
        errno: XsErrno,
    },
    /// The transport failed.
    #[error("xenstore I/O: {0}")]
    Io(#[from] io::Error),
    /// The daemon sent bytes that cannot be framed.
    #[error("xenstore stream: {0}")]
    Wire(#[from] WireError),
    /// The daemon closed the connection.
    #[error("xenstore closed the connection")]
    Closed,
    /// No reply within the reply timeout; the connection is unusable afterwards.
    #[error("no reply from xenstore within {0:?}")]
    TimedOut(Duration),
    /// A reply that does not answer the request.
    #[error("unexpected xenstore reply {got:?} (req {got_req}) to {sent:?} (req {sent_req})")]
    UnexpectedReply {
        /// What we sent.
        sent: Op,
        /// Its request id.
        sent_req: u32,
        /// What came back.
        got: Op,
        /// Its request id.
        got_req: u32,
    },
    /// The request does not fit in one message.
    #[error("xenstore request for {0} exceeds the 4096-byte payload limit")]
    TooLarge(String),
    /// A value or name that should be text is not UTF-8.
    #[error("xenstore value at {0} is not UTF-8")]
    NotUtf8(String),
    /// A reply whose payload does not have the expected form.
    #[error("malformed xenstore reply to {0:?}")]
    BadReply(Op),
    /// The transaction kept conflicting.
    #[error("xenstore transaction still conflicting after {0} attempts")]
    TooManyRetries(u32),
    /// An earlier failure left the connection out of step with the daemon.
    #[error("xenstore connection unusable after an earlier failure")]
    Broken,
    /// Neither the socket nor the xenbus device could be opened.
    #[error("cannot reach xenstore: socket {socket}: {socket_err}; {device}: {device_err}")]
    Unreachable {
        /// The socket path tried.
        socket: String,
        /// Why it failed.
        socket_err: io::Error,
        /// The device path tried.
        device: String,
        /// Why it failed.
        device_err: io::Error,
    },
}

impl Error {
    /// The daemon's errno, if this is a refusal.
    pub fn errno(&self) -> Option<&XsErrno> {
        match self {
            Error::Xs { errno, .. } => Some(errno),
            _ => None,
        }
    }

    /// Whether the daemon said `ENOENT`.
    pub fn is_not_found(&self) -> bool {
        self.errno() == Some(&XsErrno::Enoent)
    }
}

/// A watch event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The path that changed (or the watched path, for the initial event).
    pub path: String,
    /// The token given to `watch`.
    pub token: String,
}

/// A transaction id as used in message headers (0 = none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxId(pub u32);

impl TxId {
    /// Outside any transaction.
    pub const NONE: TxId = TxId(0);
}

/// A xenstore connection.
#[derive(Debug)]
pub struct Client<T: Transport> {
    transport: T,
    parser: Parser,
    buf: Vec<u8>,
    next_req: u32,
    events: VecDeque<WatchEvent>,
    reply_timeout: Option<Duration>,
    broken: bool,
}

/// The transport chosen by [`Client::open`].
pub type DynTransport = Box<dyn Transport>;

impl Client<DynTransport> {
    /// Connects the way libxenstore's `xs_open` does: the unix socket at `$XENSTORED_PATH` or
    /// [`DEFAULT_SOCKET`], falling back to [`XENBUS_DEVICE`].
    ///
    /// # Errors
    /// [`Error::Unreachable`] when neither works.
    pub fn open() -> Result<Client<DynTransport>, Error> {
        let socket = std::env::var("XENSTORED_PATH").unwrap_or_else(|_| DEFAULT_SOCKET.to_string());
        let socket_err = match UnixTransport::connect(&socket) {
            Ok(t) => return Ok(Client::new(Box::new(t))),
            Err(e) => e,
        };
        match XenbusTransport::open(XENBUS_DEVICE) {
            Ok(t) => Ok(Client::new(Box::new(t))),
            Err(device_err) => Err(Error::Unreachable {
                socket,
                socket_err,
                device: XENBUS_DEVICE.to_string(),
                device_err,
            }),
        }
    }
}

impl Client<UnixTransport> {
    /// Connects to a xenstored unix socket.
    ///
    /// # Errors
    /// The connect error.
    pub fn connect_unix(path: impl AsRef<Path>) -> Result<Client<UnixTransport>, Error> {
        Ok(Client::new(UnixTransport::connect(path)?))
    }
}

impl Client<XenbusTransport> {
    /// Opens the xenbus device (normally `/dev/xen/xenbus`).
    ///
    /// # Errors
    /// The open error.
    pub fn open_xenbus(path: impl AsRef<Path>) -> Result<Client<XenbusTransport>, Error> {
        Ok(Client::new(XenbusTransport::open(path)?))
    }
}

impl<T: Transport> Client<T> {
    /// A client over an already connected transport. Replies are awaited for at most 30 s.
    pub fn new(transport: T) -> Client<T> {
        Client {
            transport,
            parser: Parser::new(),
            buf: vec![0; 8192],
            next_req: 1,
            events: VecDeque::new(),
            reply_timeout: Some(Duration::from_secs(30)),
            broken: false,
        }
    }

    /// Changes how long a request waits for its reply (`None` = forever).
    pub fn set_reply_timeout(&mut self, t: Option<Duration>) {
        self.reply_timeout = t;
    }

    /// Reads one message, waiting until `deadline`. `Ok(None)` on timeout.
    fn read_msg(&mut self, deadline: Option<Instant>) -> Result<Option<Msg>, Error> {
        loop {
            if let Some(m) = self.parser.next()? {
                return Ok(Some(m));
            }
            let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            match self.transport.recv(&mut self.buf, timeout) {
                Ok(0) => return Err(Error::Closed),
                Ok(n) => self.parser.feed(&self.buf[..n]),
                Err(e)
                    if e.kind() == io::ErrorKind::TimedOut
                        || e.kind() == io::ErrorKind::WouldBlock =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn queue_event(&mut self, m: &Msg) {
        match wire::parse_watch_event(&m.payload) {
            Some((path, token)) => self.events.push_back(WatchEvent {
                path,
                token: String::from_utf8_lossy(&token).into_owned(),
            }),
            None => log::warn!("xenstore: ignoring malformed watch event {m:?}"),
        }
    }

    /// Sends a request and waits for its reply, queueing any watch events that arrive first.
    ///
    /// # Errors
    /// [`Error::Xs`] for an `XS_ERROR` reply; transport and framing errors (after which the
    /// connection is marked broken).
    pub fn request(
        &mut self,
        tx: TxId,
        op: Op,
        payload: Vec<u8>,
        what: &str,
    ) -> Result<Vec<u8>, Error> {
        if self.broken {
            return Err(Error::Broken);
        }
        let req_id = self.next_req;
        self.next_req = self.next_req.wrapping_add(1).max(1);
        let msg =
            Msg::new(op, req_id, tx.0, payload).map_err(|_| Error::TooLarge(what.to_string()))?;
        let r = self.exchange(&msg);
        if matches!(
            r,
            Err(Error::Io(_)
                | Error::Wire(_)
                | Error::Closed
                | Error::TimedOut(_)
                | Error::UnexpectedReply { .. })
        ) {
            self.broken = true;
        }
        match r {
            Ok(reply) => match reply.as_error() {
                Some(errno) => Err(Error::Xs {
                    op,
                    path: what.to_string(),
                    errno,
                }),
                None => Ok(reply.payload),
            },
            Err(e) => Err(e),
        }
    }

    fn exchange(&mut self, msg: &Msg) -> Result<Msg, Error> {
        self.transport.send(&msg.encode())?;
        let deadline = self.reply_timeout.map(|t| Instant::now() + t);
        loop {
            let Some(m) = self.read_msg(deadline)? else {
                return Err(Error::TimedOut(self.reply_timeout.unwrap_or_default()));
            };
            if m.op == Op::WatchEvent {
                self.queue_event(&m);
                continue;
            }
            if m.req_id != msg.req_id || (m.op != msg.op && m.op != Op::Error) {
                return Err(Error::UnexpectedReply {
                    sent: msg.op,
                    sent_req: msg.req_id,
                    got: m.op,
                    got_req: m.req_id,
                });
            }
            return Ok(m);
        }
    }

    /// Next watch event, waiting at most `timeout` (`None` = forever, `Some(ZERO)` = only what
    /// has already arrived). `Ok(None)` on timeout.
    ///
    /// # Errors
    /// Transport and framing errors.
    pub fn wait_event(&mut self, timeout: Option<Duration>) -> Result<Option<WatchEvent>, Error> {
        if let Some(e) = self.events.pop_front() {
            return Ok(Some(e));
        }
        if self.broken {
            return Err(Error::Broken);
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let m = match self.read_msg(deadline) {
                Ok(Some(m)) => m,
                Ok(None) => return Ok(None),
                Err(e) => {
                    self.broken = true;
                    return Err(e);
                }
            };
            if m.op == Op::WatchEvent {
                self.queue_event(&m);
                if let Some(e) = self.events.pop_front() {
                    return Ok(Some(e));
                }
            } else {
                log::warn!("xenstore: ignoring unsolicited {m:?}");
            }
        }
    }

    /// Number of watch events already received and not yet handed out.
    pub fn queued_events(&self) -> usize {
        self.events.len()
    }

    fn strings(parts: &[&str]) -> Vec<u8> {
        let mut v = Vec::new();
        for p in parts {
            v.extend_from_slice(p.as_bytes());
            v.push(0);
        }
        v
    }

    /// `READ` in `tx`.
    ///
    /// # Errors
    /// See [`Client::request`].
    pub fn read_in(&mut self, tx: TxId, path: &str) -> Result<Vec<u8>, Error> {
        self.request(tx, Op::Read, Self::strings(&[path]), path)
    }

    /// `WRITE` in `tx`.
    ///
    /// # Errors
    /// See [`Client::request`].
    pub fn write_in(&mut self, tx: TxId, path: &str, value: &[u8]) -> Result<(), Error> {
        let mut p = Vec::with_capacity(path.len() + 1 + value.len());
        p.extend_from_slice(path.as_bytes());
        p.push(0);
        p.extend_from_slice(value);
        self.request(tx, Op::Write, p, path).map(drop)
    }

    /// `MKDIR` in `tx`.
    ///
    /// # Errors
    /// See [`Client::request`].
    pub fn mkdir_in(&mut self, tx: TxId, path: &str) -> Result<(), Error> {
        self.request(tx, Op::Mkdir, Self::strings(&[path]), path)
            .map(drop)
    }

    /// `RM` in `tx` (the node and its subtree; succeeds if already gone but the parent exists).
    ///
    /// # Errors
    /// See [`Client::request`].
    pub fn rm_in(&mut self, tx: TxId, path: &str) -> Result<(), Error> {
        self.request(tx, Op::Rm, Self::strings(&[path]), path)
            .map(drop)
    }

    /// `DIRECTORY` in `tx`, falling back to `DIRECTORY_PART` when the listing exceeds one
    /// payload (`E2BIG`), as libxenstore does.
    ///
    /// # Errors
    /// See [`Client::request`].
    pub fn directory_in(&mut self, tx: TxId, path: &str) -> Result<Vec<String>, Error> {
        match self.request(tx, Op::Directory, Self::strings(&[path]), path) {
            Ok(p) => names(&p, path),
            Err(Error::Xs {
                errno: XsErrno::E2big,
                ..
            }) => self.directory_part(tx, path),
            Err(e) => Err(e),
        }
    }

    fn directory_part(&mut self, tx: TxId, path: &str) -> Result<Vec<String>, Error> {
        'restart: for _ in 0..TRANSACTION_ATTEMPTS {
            let mut out = Vec::new();
            let mut off = 0usize;
            let mut gen: Option<Vec<u8>> = None;
            loop {
                let offs = off.to_string();
                let p = self.request(tx, Op::DirectoryPart, Self::strings(&[path, &offs]), path)?;
                let nul = p
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or(Error::BadReply(Op::DirectoryPart))?;
                let g = p[..nul].to_vec();
                match &gen {
                    Some(prev) if *prev != g => continue 'restart, // changed under us: start over
                    _ => gen = Some(g),
                }
                let body = &p[nul + 1..];
                let done = body.is_empty() || body == b"\0" || body.ends_with(b"\0\0");
                for n in body.split(|&b| b == 0).filter(|n| !n.is_empty()) {
                    off += n.len() + 1;
                    out.push(
                        String::from_utf8(n.to_vec())
                            .map_err(|_| Error::NotUtf8(path.to_string()))?,
                    );
                }
                if done {
                    return Ok(out);
                }
            }
        }
        Err(Error::TooManyRetries(TRANSACTION_ATTEMPTS))
    }

    /// `GET_PERMS` in `tx`.
    ///
    /// # Errors
    /// See [`Client::request`].
    pub fn get_perms_in(&mut self, tx: TxId, path: &str) -> Result<Perms, Error> {
        let p = self.request(tx, Op::GetPerms, Self::strings(&[path]), path)?;
        let strs: Option<Vec<&str>> = wire::split_strings(&p)
            .into_iter()
            .map(|s| std::str::from_utf8(s).ok())
            .collect();
        strs.and_then(Perms::parse)
            .ok_or(Error::BadReply(Op::GetPerms))
    }

    /// `SET_PERMS` in `tx`.
    ///
    /// # Errors
    /// See [`Client::request`].
    pub fn set_perms_in(&mut self, tx: TxId, path: &str, perms: &Perms) -> Result<(), Error> {
        let mut p = path.as_bytes().to_vec();
        p.push(0);
        p.extend_from_slice(&perms.to_payload());
        self.request(tx, Op::SetPerms, p, path).map(drop)
    }

    /// `READ`.
    ///
    /// # Errors
    /// See [`Client::request`].
    pub fn read(&mut self, path: &str) -> Result<Vec<u8>, Error> {
        self.read_in(TxId::NONE, path)
    }

    /// `READ` as text; `Ok(None)` if the node does not exist.
    ///
    /// # Errors
    /// See [`Client::request`]; [`Error::NotUtf8`].
    pub fn read_opt_string(&mut self, path: &str) -> Result<Option<String>, Error> {
        match self.read(path) {
            Ok(v) => String::from_utf8(v)
                .map(Some)
                .map_err(|_| Error::NotUtf8(path.to_string())),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `WRITE`.
    ///
    /// # Errors
    /// See [`Client::request`].
    pub fn write(&mut self, path: &str, value: &[u8]) -> Result<(), Error> {
        self.write_in(TxId::NONE, path, value)
    }

    /// `MKDIR`.
    ///
    /// # Errors
    /// See [`Client::request`].
    pub fn mkdir(&mut self, path: &str) -> Result<(), Error> {
        self.mkdir_in(TxId::NONE, path)
    }

    /// `RM`.
    ///
    /// # Errors
    /// See [`Client::request`].
    pub fn rm(&mut self, path: &str) -> Result<(), Error> {
        self.rm_in(TxId::NONE, path)
    }

    /// `DIRECTORY`.
    ///
    /// # Errors
    /// See [`Client::request`].
    pub fn directory(&mut self, path: &str) -> Result<Vec<String>, Error> {
        self.directory_in(TxId::NONE, path)
    }

    /// `GET_PERMS`.
    ///
    /// # Errors
    /// See [`Client::request`].
    pub fn get_perms(&mut self, path: &str) -> Result<Perms, Error> {
        self.get_perms_in(TxId::NONE, path)
    }

    /// `SET_PERMS`.
    ///
    /// # Errors
    /// See [`Client::request`].
    pub fn set_perms(&mut self, path: &str, perms: &Perms) -> Result<(), Error> {
        self.set_perms_in(TxId::NONE, path, perms)
    }

    /// `WATCH`. The daemon fires one event for `path` right away.
    ///
    /// # Errors
    /// See [`Client::request`].
    pub fn watch(&mut self, path: &str, token: &str) -> Result<(), Error> {
        self.request(TxId::NONE, Op::Watch, Self::strings(&[path, token]), path)
            .map(drop)
    }

    /// `UNWATCH`. Events of this watch already queued are dropped.
    ///
    /// # Errors
    /// See [`Client::request`].
    pub fn unwatch(&mut self, path: &str, token: &str) -> Result<(), Error> {
        self.request(TxId::NONE, Op::Unwatch, Self::strings(&[path, token]), path)?;
        self.events.retain(|e| e.token != token);
        Ok(())
    }

    /// `TRANSACTION_START`.
    ///
    /// # Errors
    /// See [`Client::request`].
    pub fn transaction_start(&mut self) -> Result<TxId, Error> {
        let p = self.request(
            TxId::NONE,
            Op::TransactionStart,
            b"\0".to_vec(),
            "transaction",
        )?;
        wire::single_string(&p)
            .and_then(|s| s.parse().ok())
            .map(TxId)
            .ok_or(Error::BadReply(Op::TransactionStart))
    }

    /// `TRANSACTION_END`; `commit = false` aborts.
    ///
    /// # Errors
    /// [`Error::Xs`] with `EAGAIN` on conflict; see [`Client::request`].
    pub fn transaction_end(&mut self, tx: TxId, commit: bool) -> Result<(), Error> {
        let p = if commit {
            b"T\0".to_vec()
        } else {
            b"F\0".to_vec()
        };
        self.request(tx, Op::TransactionEnd, p, "transaction")
            .map(drop)
    }

    /// Runs `f` in a transaction and commits it, re-running `f` from scratch when the commit
    /// conflicts (`EAGAIN`). If `f` fails the transaction is aborted and its error returned.
    ///
    /// # Errors
    /// `f`'s error, [`Error::TooManyRetries`], or a transport error.
    pub fn transaction<R>(
        &mut self,
        mut f: impl FnMut(&mut Self, TxId) -> Result<R, Error>,
    ) -> Result<R, Error> {
        for _ in 0..TRANSACTION_ATTEMPTS {
            let tx = self.transaction_start()?;
            let r = match f(self, tx) {
                Ok(r) => r,
                Err(e) => {
                    if !self.broken {
                        // Best effort: the error that matters is `e`.
                        let _ = self.transaction_end(tx, false);
                    }
                    // A conflict seen inside the transaction (EAGAIN on an operation) retries too.
                    if e.errno() == Some(&XsErrno::Eagain) {
                        continue;
                    }
                    return Err(e);
                }
            };
            match self.transaction_end(tx, true) {
                Ok(()) => return Ok(r),
                Err(e) if e.errno() == Some(&XsErrno::Eagain) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::TooManyRetries(TRANSACTION_ATTEMPTS))
    }
}

fn names(payload: &[u8], path: &str) -> Result<Vec<String>, Error> {
    wire::split_strings(payload)
        .into_iter()
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8(n.to_vec()).map_err(|_| Error::NotUtf8(path.to_string())))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A transport that replays scripted chunks and records what was sent.
    #[derive(Default, Clone)]
    struct Script {
        incoming: Arc<Mutex<VecDeque<Vec<u8>>>>,
        sent: Arc<Mutex<Vec<u8>>>,
    }

    impl Transport for Script {
        fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
            self.sent.lock().unwrap().extend_from_slice(bytes);
            Ok(())
        }
        fn recv(&mut self, buf: &mut [u8], _t: Option<Duration>) -> io::Result<usize> {
            match self.incoming.lock().unwrap().pop_front() {
                Some(c) => {
                    buf[..c.len()].copy_from_slice(&c);
                    Ok(c.len())
                }
                None => Err(io::Error::new(io::ErrorKind::TimedOut, "script exhausted")),
            }
        }
    }

    fn script(chunks: Vec<Vec<u8>>) -> (Client<Script>, Script) {
        let s = Script::default();
        s.incoming.lock().unwrap().extend(chunks);
        (Client::new(s.clone()), s)
    }

    fn reply(op: Op, req: u32, tx: u32, payload: &[u8]) -> Vec<u8> {
        Msg::new(op, req, tx, payload.to_vec()).unwrap().encode()
    }

    #[test]
    fn test_read_request_bytes_and_reply() {
        let (mut c, s) = script(vec![reply(Op::Read, 1, 0, b"Domain-0")]);
        assert_eq!(c.read("/local/domain/0/name").unwrap(), b"Domain-0");
        let expect = Msg::with_strings(Op::Read, 1, 0, &[b"/local/domain/0/name"])
            .unwrap()
            .encode();
        assert_eq!(*s.sent.lock().unwrap(), expect);
    }

    #[test]
    fn test_reply_split_across_reads_with_interleaved_events() {
        // An event, then the reply cut in three pieces with a second event wedged in the middle
        // of the stream (between messages), all in odd chunk sizes.
        let mut stream = Msg::watch_event("/a/b", b"t1").unwrap().encode();
        stream.extend(Msg::watch_event("/a/c", b"t1").unwrap().encode());
        stream.extend(reply(Op::Directory, 1, 0, b"x\0y\0"));
        stream.extend(Msg::watch_event("/a/d", b"t2").unwrap().encode());
        let chunks: Vec<Vec<u8>> = stream.chunks(7).map(<[u8]>::to_vec).collect();
        let (mut c, _) = script(chunks);
        assert_eq!(c.directory("/a").unwrap(), vec!["x", "y"]);
        let e1 = c.wait_event(Some(Duration::ZERO)).unwrap().unwrap();
        let e2 = c.wait_event(Some(Duration::ZERO)).unwrap().unwrap();
        let e3 = c.wait_event(Some(Duration::ZERO)).unwrap().unwrap();
        assert_eq!((e1.path.as_str(), e1.token.as_str()), ("/a/b", "t1"));
        assert_eq!(e2.path, "/a/c");
        assert_eq!((e3.path.as_str(), e3.token.as_str()), ("/a/d", "t2"));
        assert_eq!(c.wait_event(Some(Duration::ZERO)).unwrap(), None);
    }

    #[test]
    fn test_error_replies_are_typed() {
        let (mut c, _) = script(vec![
            reply(Op::Error, 1, 0, b"ENOENT\0"),
            reply(Op::Error, 2, 0, b"EACCES\0"),
            reply(Op::Error, 3, 0, b"EINVAL\0"),
        ]);
        let e = c.read("/x").unwrap_err();
        assert!(e.is_not_found());
        assert!(matches!(
            c.write("/x", b"v").unwrap_err(),
            Error::Xs {
                errno: XsErrno::Eacces,
                op: Op::Write,
                ..
            }
        ));
        assert_eq!(c.read("//").unwrap_err().errno(), Some(&XsErrno::Einval));
    }

    #[test]
    fn test_transaction_retries_on_eagain() {
        let (mut c, s) = script(vec![
            reply(Op::TransactionStart, 1, 0, b"5\0"),
            reply(Op::Write, 2, 5, b"OK\0"),
            reply(Op::Error, 3, 5, b"EAGAIN\0"),
            reply(Op::TransactionStart, 4, 0, b"6\0"),
            reply(Op::Write, 5, 6, b"OK\0"),
            reply(Op::TransactionEnd, 6, 6, b"OK\0"),
        ]);
        let mut runs = 0;
        c.transaction(|c, tx| {
            runs += 1;
            c.write_in(tx, "/k", b"v")
        })
        .unwrap();
        assert_eq!(runs, 2);
        // The second write carried tx id 6 in its header.
        let sent = s.sent.lock().unwrap().clone();
        let mut p = Parser::new();
        p.feed(&sent);
        let mut msgs = Vec::new();
        while let Some(m) = p.next().unwrap() {
            msgs.push(m);
        }
        assert_eq!(msgs.len(), 6);
        assert_eq!(msgs[4].op, Op::Write);
        assert_eq!(msgs[4].tx_id, 6);
        assert_eq!(msgs[5].payload, b"T\0");
    }

    #[test]
    fn test_mismatched_reply_breaks_connection() {
        let (mut c, _) = script(vec![reply(Op::Read, 99, 0, b"x")]);
        assert!(matches!(
            c.read("/a").unwrap_err(),
            Error::UnexpectedReply { .. }
        ));
        assert!(matches!(c.read("/a").unwrap_err(), Error::Broken));
    }

    #[test]
    fn test_garbage_from_daemon_is_an_error_not_a_panic() {
        let mut junk = vec![2u8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
        junk.extend_from_slice(&100_000u32.to_le_bytes());
        let (mut c, _) = script(vec![junk]);
        assert!(matches!(c.read("/a").unwrap_err(), Error::Wire(_)));
    }

    #[test]
    fn test_timeout_when_no_reply() {
        let (mut c, _) = script(vec![]);
        c.set_reply_timeout(Some(Duration::from_millis(1)));
        assert!(matches!(c.read("/a").unwrap_err(), Error::TimedOut(_)));
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            /// Whatever a (broken or hostile) daemon sends back, the client returns errors or
            /// values and never panics; a broken stream stays broken.
            #[test]
            fn garbage_replies_never_panic(
                chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..20),
                framed in proptest::collection::vec((0u32..24, 0u32..4, proptest::collection::vec(any::<u8>(), 0..32)), 0..10),
            ) {
                let mut stream: Vec<Vec<u8>> = framed
                    .into_iter()
                    .map(|(op, req, p)| Msg::new(Op::from(op), req, 0, p).unwrap().encode())
                    .collect();
                stream.extend(chunks);
                let (mut c, _) = script(stream);
                c.set_reply_timeout(Some(Duration::from_millis(1)));
                let _ = c.read("/a");
                let _ = c.directory("/a");
                let _ = c.transaction(|c, tx| c.write_in(tx, "/a", b"v"));
                let _ = c.get_perms("/a");
                let _ = c.wait_event(Some(Duration::ZERO));
            }
        }
    }

    #[test]
    fn test_directory_part_fallback() {
        let (mut c, _) = script(vec![
            reply(Op::Error, 1, 0, b"E2BIG\0"),
            reply(Op::DirectoryPart, 2, 0, b"7\0a\0b\0"),
            reply(Op::DirectoryPart, 3, 0, b"7\0c\0\0"),
        ]);
        assert_eq!(c.directory("/big").unwrap(), vec!["a", "b", "c"]);
    }
}
