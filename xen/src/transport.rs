// SPDX-License-Identifier: Apache-2.0
//! Byte transports to a xenstore daemon: the unix socket that dom0 tools use
//! (`/var/run/xenstored/socket`, or `$XENSTORED_PATH`) and the `/dev/xen/xenbus` device the
//! kernel offers where no socket exists (e.g. in a driver domain, or when xenstored runs in a
//! stub domain). Both carry the same byte stream; the device additionally wants each message in
//! a single `write` (the kernel accumulates partial writes, but one write per message is the
//! portable form).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Default path of xenstored's unix socket.
pub const DEFAULT_SOCKET: &str = "/var/run/xenstored/socket";
/// The kernel's xenbus device.
pub const XENBUS_DEVICE: &str = "/dev/xen/xenbus";

/// A connected byte stream to xenstored.
pub trait Transport: Send {
    /// Sends one complete encoded message.
    ///
    /// # Errors
    /// The underlying write error.
    fn send(&mut self, bytes: &[u8]) -> io::Result<()>;

    /// Receives some bytes, waiting at most `timeout` (`None` = forever). `Ok(0)` is end of
    /// stream.
    ///
    /// # Errors
    /// `ErrorKind::TimedOut` when nothing arrived in time; otherwise the read error.
    fn recv(&mut self, buf: &mut [u8], timeout: Option<Duration>) -> io::Result<usize>;
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        (**self).send(bytes)
    }

    fn recv(&mut self, buf: &mut [u8], timeout: Option<Duration>) -> io::Result<usize> {
        (**self).recv(buf, timeout)
    }
}

/// Waits until `fd` is readable (or hung up). `Ok(false)` on timeout.
pub(crate) fn wait_readable(fd: RawFd, timeout: Option<Duration>) -> io::Result<bool> {
    let ms: libc::c_int = match timeout {
        None => -1,
        // Round up so that a sub-millisecond wait does not become a busy poll.
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
        }
    };
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: `pfd` is a valid, initialised pollfd living on our stack for the duration of the
        // call, and nfds = 1 matches the single element passed.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r >= 0 {
            return Ok(r > 0);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn recv_fd<R: Read + AsRawFd>(
    r: &mut R,
    buf: &mut [u8],
    timeout: Option<Duration>,
) -> io::Result<usize> {
    if !wait_readable(r.as_raw_fd(), timeout)? {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no data from xenstore",
        ));
    }
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// xenstored's unix socket.
#[derive(Debug)]
pub struct UnixTransport(UnixStream);

impl UnixTransport {
    /// Connects to the socket at `path`.
    ///
    /// # Errors
    /// The connect error.
    pub fn connect(path: impl AsRef<Path>) -> io::Result<UnixTransport> {
        Ok(UnixTransport(UnixStream::connect(path)?))
    }

    /// Wraps an already connected stream.
    pub fn from_stream(s: UnixStream) -> UnixTransport {
        UnixTransport(s)
    }
}

impl Transport for UnixTransport {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }

    fn recv(&mut self, buf: &mut [u8], timeout: Option<Duration>) -> io::Result<usize> {
        recv_fd(&mut self.0, buf, timeout)
    }
}

/// The `/dev/xen/xenbus` device.
#[derive(Debug)]
pub struct XenbusTransport(File);

impl XenbusTransport {
    /// Opens the device at `path` (normally [`XENBUS_DEVICE`]).
    ///
    /// # Errors
    /// The open error.
    pub fn open(path: impl AsRef<Path>) -> io::Result<XenbusTransport> {
        Ok(XenbusTransport(
            OpenOptions::new().read(true).write(true).open(path)?,
        ))
    }

    /// Wraps an already open file (or any byte-stream fd converted into a `File`; the tests run
    /// this transport over a socket to the dev daemon).
    pub fn from_file(f: File) -> XenbusTransport {
        XenbusTransport(f)
    }
}

impl Transport for XenbusTransport {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        // One write per message: the device parses each write as (part of) one message.
        let n = self.0.write(bytes)?;
        if n == bytes.len() {
            Ok(())
        } else {
            self.0.write_all(&bytes[n..])
        }
    }

    fn recv(&mut self, buf: &mut [u8], timeout: Option<Duration>) -> io::Result<usize> {
        recv_fd(&mut self.0, buf, timeout)
    }
}
