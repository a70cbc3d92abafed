//! The control socket server: a unix socket, root-only, one thread per client, every request
//! answered through [`super::handle`]. Garbage on a connection gets an error frame and a log
//! line, and closes that connection only; forwarding never notices.

use super::handler::{handle, DaemonInfo};
use super::proto::{encode, Decoder, FrameError, Request, Response};
use crate::stats::StatsRegistry;
use crate::tables::TablesWriter;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;

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
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts clients forever on the calling thread.
    pub fn serve(self) {
        for conn in self.listener.incoming() {
            match conn {
                Ok(s) => {
                    if self.root_only && peer_uid(&s).is_some_and(|uid| uid != 0) {
                        log::warn!(
                            "control socket: refusing non-root client (uid {:?})",
                            peer_uid(&s)
                        );
                        let _ = (&s).write_all(&encode(&Response::error(
                            "permission",
                            "the control socket is root-only",
                        )));
                        continue;
                    }
                    let st = self.state.clone();
                    if let Err(e) = thread::Builder::new()
                        .name("ctl-conn".into())
                        .spawn(move || serve_conn(s, st))
                    {
                        log::error!("control socket: cannot start a connection thread: {e}");
                    }
                }
                Err(e) => log::warn!("control socket: accept failed: {e}"),
            }
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

fn serve_conn(mut s: UnixStream, state: Arc<Mutex<CtlState>>) {
    let mut dec = Decoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) if dec.buffered() > 0 => {
                // The client half-closed mid-frame: say so (it may still read) and log it.
                log::warn!(
                    "control socket: truncated frame ({} bytes buffered at end of stream)",
                    dec.buffered()
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
                    log::warn!("control socket: {e}; closing the connection");
                    let _ = s.write_all(&encode(&Response::error(kind, e.to_string())));
                    return;
                }
            };
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
            if s.write_all(&encode(&resp)).is_err() {
                return;
            }
        }
    }
}
