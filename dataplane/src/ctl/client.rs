//! A blocking client for the control socket, used by the agent and `vrctl`.

use super::proto::{encode, Decoder, FrameError, Request, Response};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default control socket path.
pub const DEFAULT_SOCKET: &str = "/run/vrouter/dp.sock";

/// Why a control request failed, phrased for the operator.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Nothing listens at the path.
    #[error(
        "dataplane not running: no control socket at {0} (start vrouter-dp, or give its \
         ctl_socket path: vrctl --socket PATH, vrouter-agent --dp-socket PATH)"
    )]
    NotRunning(PathBuf),
    /// The socket exists but we may not use it.
    #[error("permission denied on {0}: the control socket is root-only (run as root)")]
    Permission(PathBuf),
    /// Another I/O failure.
    #[error("control socket {path}: {err}")]
    Io {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        err: std::io::Error,
    },
    /// The daemon answered something we cannot decode.
    #[error("protocol error: {0}")]
    Protocol(#[from] FrameError),
    /// The daemon closed the connection mid-answer.
    #[error("dataplane closed the control connection")]
    Closed,
    /// The daemon refused the request.
    #[error("{message}")]
    Refused {
        /// Error kind.
        kind: String,
        /// Message.
        message: String,
        /// Failing operation index (Apply).
        index: Option<usize>,
    },
}

/// A connection to the dataplane's control socket.
#[derive(Debug)]
pub struct CtlClient {
    stream: UnixStream,
    path: PathBuf,
    dec: Decoder,
}

impl CtlClient {
    /// Connects to `path`.
    pub fn connect(path: impl AsRef<Path>) -> Result<Self, CtlError> {
        let path = path.as_ref().to_path_buf();
        let stream = UnixStream::connect(&path).map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                CtlError::NotRunning(path.clone())
            }
            std::io::ErrorKind::PermissionDenied => CtlError::Permission(path.clone()),
            _ => CtlError::Io {
                path: path.clone(),
                err,
            },
        })?;
        // A wedged daemon must not hang the agent or an operator's shell forever.
        let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
        Ok(Self {
            stream,
            path,
            dec: Decoder::new(),
        })
    }

    /// Sends `req` and waits for the answer. A refusal is `Err(CtlError::Refused)`.
    pub fn request(&mut self, req: &Request) -> Result<Response, CtlError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |err| CtlError::Io { path, err }
        };
        self.stream
            .write_all(&encode(req))
            .map_err(io(&self.path))?;
        let mut chunk = [0u8; 64 * 1024];
        loop {
            if let Some(resp) = self.dec.next_message::<Response>()? {
                return match resp {
                    Response::Error {
                        kind,
                        message,
                        index,
                    } => Err(CtlError::Refused {
                        kind,
                        message,
                        index,
                    }),
                    r => Ok(r),
                };
            }
            let n = self.stream.read(&mut chunk).map_err(io(&self.path))?;
            if n == 0 {
                return Err(CtlError::Closed);
            }
            self.dec.feed(&chunk[..n]);
        }
    }

    /// Applies table operations (one atomic bulk).
    pub fn apply(&mut self, ops: Vec<crate::tables::TableOp>) -> Result<(), CtlError> {
        self.request(&Request::Apply { ops }).map(|_| ())
    }
}
