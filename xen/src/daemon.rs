// SPDX-License-Identifier: Apache-2.0
//! The dev xenstore daemon's I/O: a unix socket, one reader and one writer thread per
//! connection, and one lock around the protocol engine ([`Server`]).
//!
//! # Thread-safety
//! `Shared` (engine + outboxes) is behind one `Mutex`. A reader thread decodes requests, takes the
//! lock, runs [`Server::handle`] and pushes every resulting message into the addressed
//! connection's bounded outbox while still holding the lock, so each connection receives its
//! messages in the order the engine produced them (a reply before the events it caused). Writer
//! threads only pop their own outbox and write to their own socket, never under the lock, so a
//! slow client cannot stall the daemon. A client that lets its outbox fill up (it stopped reading
//! while watches keep firing) is disconnected, as C xenstored does when a connection exceeds its
//! output quota.
//!
//! # Privilege
//! The peer's uid comes from `SO_PEERCRED`. uid 0 (and any uid given with `--privileged-uid`) is
//! dom0: privileged. Everyone else is treated as an unprivileged domain
//! ([`DaemonConfig::unprivileged_domid`]) and is subject to node permissions: by default it may
//! read but not write. The socket file itself is created with [`DaemonConfig::socket_mode`]
//! (0600 by default, like xenstored's), so only root can connect unless the operator widens it.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;

use crate::server::{ConnId, Limits, Outgoing, Server};
use crate::store::Caller;
use crate::wire::Parser;

/// Domain id given to unprivileged connections (`DOMID_FIRST_RESERVED`, never a real guest).
pub const DEFAULT_UNPRIVILEGED_DOMID: u32 = 0x7FF0;

/// Daemon settings.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Socket path.
    pub socket: PathBuf,
    /// Mode of the socket file (who may connect at all).
    pub socket_mode: u32,
    /// Non-root uids treated as dom0.
    pub privileged_uids: Vec<u32>,
    /// Domain id of unprivileged connections.
    pub unprivileged_domid: u32,
    /// Per-connection quotas.
    pub limits: Limits,
    /// Messages queued for one connection before it is dropped as unresponsive.
    pub max_queued: usize,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            socket: PathBuf::from(crate::transport::DEFAULT_SOCKET),
            socket_mode: 0o600,
            privileged_uids: Vec::new(),
            unprivileged_domid: DEFAULT_UNPRIVILEGED_DOMID,
            limits: Limits::default(),
            max_queued: 65_536,
        }
    }
}

struct Outbox {
    tx: SyncSender<Vec<u8>>,
    stream: UnixStream,
}

struct Shared {
    server: Server,
    outboxes: HashMap<ConnId, Outbox>,
    next_id: ConnId,
}

impl Shared {
    fn deliver(&mut self, out: Vec<Outgoing>) {
        for o in out {
            let Some(ob) = self.outboxes.get(&o.to) else {
                continue;
            };
            match ob.tx.try_send(o.msg.encode()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    log::warn!("connection {}: output queue full, disconnecting it", o.to);
                    let _ = ob.stream.shutdown(Shutdown::Both);
                }
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }
}

/// A bound, not yet running daemon.
#[derive(Debug)]
pub struct Daemon {
    listener: UnixListener,
    shared: Arc<Mutex<SharedCell>>,
    config: DaemonConfig,
}

/// Wrapper so `Daemon` can derive `Debug` without exposing internals.
struct SharedCell(Shared);

impl std::fmt::Debug for SharedCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("connections", &self.0.outboxes.len())
            .finish()
    }
}

fn lock(m: &Mutex<SharedCell>) -> MutexGuard<'_, SharedCell> {
    // A panic while holding the lock is a bug in the engine; the state it left is still the
    // best we have, and the daemon must keep serving the other connections.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Prepares the socket path: creates the parent directory, removes a stale socket left by a
/// dead daemon, and refuses to start if another daemon still answers on it.
fn prepare_socket_path(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            fs::create_dir_all(dir)?;
        }
    }
    match fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{}: another xenstore daemon is listening", path.display()),
                ));
            }
            fs::remove_file(path)
        }
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{}: exists and is not a socket", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl Daemon {
    /// Creates the listening socket.
    ///
    /// # Errors
    /// The socket path is not usable (exists and is not a socket, or another daemon answers on
    /// it), and bind errors.
    pub fn bind(config: DaemonConfig) -> io::Result<Daemon> {
        prepare_socket_path(&config.socket)?;
        // Bind with a tight umask so the socket is never connectable by others, even briefly,
        // then widen it to the configured mode.
        // SAFETY: umask has no memory-safety preconditions; it only swaps the process's mask.
        let old = unsafe { libc::umask(0o177) };
        let bound = UnixListener::bind(&config.socket);
        // SAFETY: as above, restoring the previous mask.
        unsafe { libc::umask(old) };
        let listener = bound?;
        fs::set_permissions(
            &config.socket,
            fs::Permissions::from_mode(config.socket_mode),
        )?;
        let shared = Shared {
            server: Server::new(config.limits),
            outboxes: HashMap::new(),
            next_id: 1,
        };
        Ok(Daemon {
            listener,
            shared: Arc::new(Mutex::new(SharedCell(shared))),
            config,
        })
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.config.socket
    }

    /// Serves connections forever (each on its own threads).
    ///
    /// # Errors
    /// Only fatal listener errors.
    pub fn run(self) -> io::Result<()> {
        log::info!(
            "vrouter-xenstored listening on {}",
            self.config.socket.display()
        );
        for stream in self.listener.incoming() {
            let stream = match stream {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_transient_accept_error(&e) => {
                    log::warn!("accept: {e}");
                    thread::sleep(std::time::Duration::from_millis(50));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let shared = Arc::clone(&self.shared);
            let config = self.config.clone();
            let spawned = thread::Builder::new()
                .name("xs-conn".into())
                .spawn(move || serve_connection(&shared, stream, &config));
            if let Err(e) = spawned {
                log::warn!("cannot spawn connection thread: {e}");
            }
        }
        Ok(())
    }
}

fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::ECONNABORTED)
    )
}

/// The peer's uid from `SO_PEERCRED`.
fn peer_uid(s: &UnixStream) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::ucred>())
        .map_err(|_| io::Error::other("ucred size"))?;
    // SAFETY: `cred` is a properly aligned, writable `ucred` and `len` holds its exact size, as
    // getsockopt(SO_PEERCRED) requires; the fd is owned by `s` and open for the call.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

fn writer_loop(rx: Receiver<Vec<u8>>, mut stream: UnixStream) {
    for bytes in rx {
        if stream.write_all(&bytes).is_err() {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    }
}

fn serve_connection(shared: &Mutex<SharedCell>, stream: UnixStream, config: &DaemonConfig) {
    let caller = match peer_uid(&stream) {
        Ok(uid) if uid == 0 || config.privileged_uids.contains(&uid) => Caller::DOM0,
        Ok(_) => Caller {
            domid: config.unprivileged_domid,
            privileged: false,
        },
        Err(e) => {
            log::warn!("SO_PEERCRED failed ({e}); treating peer as unprivileged");
            Caller {
                domid: config.unprivileged_domid,
                privileged: false,
            }
        }
    };
    let (Ok(write_half), Ok(shutdown_half)) = (stream.try_clone(), stream.try_clone()) else {
        log::warn!("cannot clone connection socket; dropping it");
        return;
    };
    let (tx, rx) = mpsc::sync_channel(config.max_queued);
    let id = {
        let mut g = lock(shared);
        let id = g.0.next_id;
        g.0.next_id += 1;
        g.0.server.connect(id, caller);
        g.0.outboxes.insert(
            id,
            Outbox {
                tx,
                stream: shutdown_half,
            },
        );
        id
    };
    log::debug!("connection {id}: open ({caller:?})");
    let writer = thread::Builder::new()
        .name("xs-write".into())
        .spawn(move || writer_loop(rx, write_half));

    let mut reader = stream;
    let mut parser = Parser::new();
    let mut buf = vec![0u8; 16 * 1024];
    'conn: loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        parser.feed(&buf[..n]);
        loop {
            match parser.next() {
                Ok(Some(msg)) => {
                    log::trace!("connection {id}: {msg:?}");
                    let mut g = lock(shared);
                    let out = g.0.server.handle(id, &msg);
                    g.0.deliver(out);
                }
                Ok(None) => break,
                Err(e) => {
                    log::warn!("connection {id}: {e}; closing it");
                    break 'conn;
                }
            }
        }
    }
    {
        let mut g = lock(shared);
        g.0.server.disconnect(id);
        // Dropping the sender ends the writer after it flushed what is queued.
        g.0.outboxes.remove(&id);
    }
    if let Ok(w) = writer {
        let _ = w.join();
    }
    let _ = reader.shutdown(Shutdown::Both);
    log::debug!("connection {id}: closed");
}
