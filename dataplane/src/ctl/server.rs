//! The control socket server: a unix socket, root-only, one thread per client up to
//! [`MAX_CONNECTIONS`], every request answered through [`super::handle`]. Garbage on a
//! connection gets an error frame and a log line (at most [`WARN_BURST`] such lines a minute,
//! then one line with the count of those suppressed), and closes that connection only;
//! forwarding never notices.

use super::handler::{handle, DaemonInfo};
use super::proto::{encode, Decoder, FrameError, Request, Response, MAX_REQUEST};
use crate::capture::Capture;
use crate::stats::StatsRegistry;
use crate::tables::TablesWriter;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Connections served at once (each has a thread). The agent holds one and `vrctl` opens one per
/// command; beyond this a client gets a `busy` error reply and is closed, without a thread.
pub const MAX_CONNECTIONS: usize = 64;
/// WARN lines about bad clients logged per [`WARN_WINDOW`]; the rest are counted and the count
/// is logged with the next line let through.
pub const WARN_BURST: u32 = 10;
/// The window of [`WARN_BURST`].
pub const WARN_WINDOW: Duration = Duration::from_secs(60);

/// Rate limit for the WARN lines bad clients cause: at most `burst` lines per `window`; lines
/// beyond it are only counted.
#[derive(Debug)]
pub struct WarnLimit {
    burst: u32,
    window: Duration,
    start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl WarnLimit {
    /// `burst` lines per `window`.
    pub fn new(burst: u32, window: Duration) -> Self {
        Self {
            burst,
            window,
            start: None,
            in_window: 0,
            suppressed: 0,
        }
    }

    /// Whether a line may be logged at `now`: `Some(n)` with the number of lines suppressed
    /// since the last one logged, or `None` to suppress this one (it is counted).
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        if self
            .start
            .is_none_or(|s| now.saturating_duration_since(s) >= self.window)
        {
            self.start = Some(now);
            self.in_window = 0;
        }
        if self.in_window >= self.burst {
            self.suppressed += 1;
            return None;
        }
        self.in_window += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Logs a WARN line about a client through `limit`.
fn warn_limited(limit: &Mutex<WarnLimit>, msg: std::fmt::Arguments<'_>) {
    let admitted = limit
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .admit(Instant::now());
    match admitted {
        Some(0) => log::warn!("control socket: {msg}"),
        Some(n) => log::warn!("control socket: {msg} ({n} similar lines suppressed before this)"),
        None => {}
    }
}

/// One connection's place under [`MAX_CONNECTIONS`], given back when the connection ends.
struct ConnSlot(Arc<AtomicUsize>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What every connection shares: the one table writer and the counters.
#[derive(Debug)]
pub struct CtlState {
    /// The tables' single writer.
    pub writer: TablesWriter,
    /// Counters of every lcore.
    pub stats: StatsRegistry,
    /// Daemon facts.
    pub info: DaemonInfo,
}

/// A bound control socket.
#[derive(Debug)]
pub struct CtlServer {
    listener: UnixListener,
    path: PathBuf,
    state: Arc<Mutex<CtlState>>,
    /// Refuse clients whose uid is not 0 (off only in tests run unprivileged).
    pub root_only: bool,
    /// Connections served at once ([`MAX_CONNECTIONS`] unless changed before serving).
    pub max_connections: usize,
    open: Arc<AtomicUsize>,
    warn: Arc<Mutex<WarnLimit>>,
    notify: Notify,
}

/// Called after every request a connection has handled (outside the state lock): the daemon
/// wakes its port manager with it instead of polling the table generation.
#[derive(Clone, Default)]
struct Notify(Option<Arc<dyn Fn() + Send + Sync>>);

impl std::fmt::Debug for Notify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Notify(set)"
        } else {
            "Notify(none)"
        })
    }
}

impl CtlServer {
    /// Binds `path` (replacing a stale socket), creating its directory, with mode 0600 so only
    /// root can connect.
    pub fn bind(path: &Path, state: Arc<Mutex<CtlState>>) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("{} is in use by a running dataplane", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
            state,
            root_only: true,
            max_connections: MAX_CONNECTIONS,
            open: Arc::new(AtomicUsize::new(0)),
            warn: Arc::new(Mutex::new(WarnLimit::new(WARN_BURST, WARN_WINDOW))),
            notify: Notify::default(),
        })
    }

    /// Calls `f` after each handled request, once the state lock is released (a table change
    /// is visible to readers by then).
    pub fn with_on_request(self, f: Arc<dyn Fn() + Send + Sync>) -> Self {
        Self {
            notify: Notify(Some(f)),
            ..self
        }
    }

    /// Lets `burst` WARN lines about bad clients through per `window` instead of
    /// [`WARN_BURST`] a minute.
    pub fn with_warn_limit(self, burst: u32, window: Duration) -> Self {
        Self {
            warn: Arc::new(Mutex::new(WarnLimit::new(burst, window))),
            ..self
        }
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts clients forever on the calling thread.
    pub fn serve(self) {
        for conn in self.listener.incoming() {
            match conn {
                Ok(s) => self.accept(s),
                Err(e) => {
                    warn_limited(&self.warn, format_args!("accept failed: {e}"));
                    // Out of descriptors, say: do not spin on the error.
                    thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    /// Serves one new client on a thread of its own, or refuses it with an error reply: a
    /// non-root client, or one over the connection limit.
    fn accept(&self, s: UnixStream) {
        if self.root_only && peer_uid(&s).is_some_and(|uid| uid != 0) {
            warn_limited(
                &self.warn,
                format_args!("refusing non-root client (uid {:?})", peer_uid(&s)),
            );
            refuse(&s, "permission", "the control socket is root-only".into());
            return;
        }
        // Only this thread adds, so the check and the add cannot race another accept.
        let open = self.open.load(Ordering::Acquire);
        if open >= self.max_connections {
            warn_limited(
                &self.warn,
                format_args!("refusing a client: {open} connections open (the limit)"),
            );
            refuse(
                &s,
                "busy",
                format!(
                    "too many control connections ({open} open, the limit is {}); close one \
                     and retry",
                    self.max_connections
                ),
            );
            return;
        }
        self.open.fetch_add(1, Ordering::AcqRel);
        let slot = ConnSlot(self.open.clone());
        let (st, warn, notify) = (self.state.clone(), self.warn.clone(), self.notify.clone());
        if let Err(e) = thread::Builder::new()
            .name("ctl-conn".into())
            .spawn(move || {
                let _slot = slot;
                serve_conn(s, &st, &warn, &notify)
            })
        {
            log::error!("control socket: cannot start a connection thread: {e}");
        }
    }

    /// Serves on a background thread.
    pub fn spawn(self) -> std::io::Result<thread::JoinHandle<()>> {
        thread::Builder::new()
            .name("ctl".into())
            .spawn(move || self.serve())
    }
}

fn peer_uid(s: &UnixStream) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes passed; the fd is owned by `s`
    // for the duration of the call.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(s),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

/// Sends a refused client its error reply (without waiting on a client that does not read) and
/// closes the connection.
fn refuse(s: &UnixStream, kind: &str, message: String) {
    let _ = s.set_write_timeout(Some(Duration::from_millis(100)));
    let mut w = s;
    let _ = w.write_all(&encode(&Response::error(kind, message)));
}

fn serve_conn(
    mut s: UnixStream,
    state: &Mutex<CtlState>,
    warn: &Mutex<WarnLimit>,
    notify: &Notify,
) {
    let mut dec = Decoder::with_limit(MAX_REQUEST);
    let mut buf = vec![0u8; 64 * 1024];
    let mut captures = OwnedCaptures {
        capture: state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .info
            .capture
            .clone(),
        sessions: Vec::new(),
    };
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) if dec.buffered() > 0 => {
                // The client half-closed mid-frame: say so (it may still read) and log it.
                warn_limited(
                    warn,
                    format_args!(
                        "truncated frame ({} bytes buffered at end of stream)",
                        dec.buffered()
                    ),
                );
                let _ = s.write_all(&encode(&Response::error(
                    "bad_request",
                    "truncated frame: connection closed mid-message",
                )));
                return;
            }
            Ok(0) => return,
            Ok(n) => n,
            Err(e) => {
                log::debug!("control connection read error: {e}");
                return;
            }
        };
        dec.feed(&buf[..n]);
        loop {
            let req = match dec.next_message::<Request>() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    let kind = match e {
                        FrameError::Version(_) => "version",
                        _ => "bad_request",
                    };
                    warn_limited(warn, format_args!("{e}; closing the connection"));
                    let _ = s.write_all(&encode(&Response::error(kind, e.to_string())));
                    return;
                }
            };
            let polling = matches!(req, Request::CaptureRead { .. });
            let resp = {
                // A panic inside `handle` would be a bug; the state it guards is still
                // consistent (the writer validates before it publishes), so keep serving.
                let mut g = state.lock().unwrap_or_else(|e| e.into_inner());
                let CtlState {
                    writer,
                    stats,
                    info,
                } = &mut *g;
                handle(writer, stats, info, req)
            };
            if let Response::CaptureStarted { session, .. } = resp {
                captures.sessions.push(session);
            }
            // The port manager looks at the tables after a request; a capture's reads (every
            // few milliseconds) change nothing there.
            if let (Some(f), false) = (&notify.0, polling) {
                f();
            }
            if s.write_all(&encode(&resp)).is_err() {
                return;
            }
        }
    }
}

/// The captures a connection started: stopped when it ends, however it ends (a `vrctl capture`
/// killed by Ctrl-C leaves nothing armed).
struct OwnedCaptures {
    capture: Arc<Capture>,
    sessions: Vec<u64>,
}

impl Drop for OwnedCaptures {
    fn drop(&mut self) {
        for &s in &self.sessions {
            self.capture.stop(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warn_lines_beyond_the_burst_are_counted_and_the_count_is_logged_next() {
        let mut w = WarnLimit::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        let got: Vec<Option<u64>> = (0..10).map(|_| w.admit(t0)).collect();
        assert_eq!(
            got,
            [
                Some(0),
                Some(0),
                Some(0),
                None,
                None,
                None,
                None,
                None,
                None,
                None
            ]
        );
        // Still inside the window: suppressed.
        assert_eq!(w.admit(t0 + Duration::from_secs(59)), None);
        // A new window: the first line carries the 8 suppressed before it.
        assert_eq!(w.admit(t0 + Duration::from_secs(60)), Some(8));
        assert_eq!(w.admit(t0 + Duration::from_secs(61)), Some(0));
    }
}
