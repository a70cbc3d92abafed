//! The agent interface (`pkt0`): a unix datagram socket, root-only.
//!
//! Each datagram is one packet with the 16-byte [`crate::trap::AgentHeader`] in front. The
//! dataplane binds the socket; the agent binds its own socket and sends to ours, either packets
//! to inject or an empty datagram to say hello. Trapped packets go to whichever address last
//! sent to us. Datagrams keep packet boundaries without framing, and no kernel device parses the
//! agent header as Ethernet.

use super::sys::{self, PortError};
use super::{Port, PortDrops};
use crate::batch::Batch;
use crate::buf::{BufPool, PktBuf};
use crate::drop::DropReason;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The agent's datagram socket.
#[derive(Debug)]
pub struct AgentPort {
    name: String,
    path: PathBuf,
    fd: OwnedFd,
    /// Where trapped packets go: the last sender. Shared with the transmit-only handles of other
    /// lcores.
    ///
    /// Thread-safety: a mutex, taken once per burst on this slow path only.
    peer: Arc<Mutex<Option<Peer>>>,
    rx: bool,
    drops: PortDrops,
}

type Peer = (libc::sockaddr_un, libc::socklen_t);

impl AgentPort {
    /// Binds `path` (replacing a stale socket file) with mode 0600.
    pub fn bind(path: &Path) -> Result<Self, PortError> {
        let dev = path.display().to_string();
        if let Some(d) = path.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        let _ = std::fs::remove_file(path);
        let fd = sys::socket(
            libc::AF_UNIX,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK,
            0,
            &dev,
        )?;
        let (addr, len) = sockaddr_un(path).ok_or_else(|| PortError::Unsupported {
            dev: dev.clone(),
            why: "socket path too long".into(),
        })?;
        // SAFETY: `addr` is a valid sockaddr_un of length `len`.
        if unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                len,
            )
        } < 0
        {
            return Err(PortError::last("bind", &dev));
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|err| {
            PortError::Sys {
                what: "chmod",
                dev: dev.clone(),
                err,
            }
        })?;
        // Room for bursts of traps while the agent is slow.
        let _ = sys::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            &(4i32 << 20),
            "SO_SNDBUF",
            &dev,
        );
        Ok(Self {
            name: "pkt0".into(),
            path: path.to_path_buf(),
            fd,
            peer: Arc::default(),
            rx: true,
            drops: PortDrops::default(),
        })
    }

    /// A transmit-only handle for another lcore.
    pub fn tx_handle(&self) -> Result<Self, PortError> {
        let fd = self.fd.try_clone().map_err(|err| PortError::Sys {
            what: "dup",
            dev: self.name.clone(),
            err,
        })?;
        Ok(Self {
            name: self.name.clone(),
            path: PathBuf::new(),
            fd,
            peer: self.peer.clone(),
            rx: false,
            drops: PortDrops::default(),
        })
    }

    fn set_peer(&self, p: Option<Peer>) {
        *self.peer.lock().unwrap_or_else(|e| e.into_inner()) = p;
    }
}

impl Drop for AgentPort {
    fn drop(&mut self) {
        if self.rx {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A `sockaddr_un` for `path`.
pub fn sockaddr_un(path: &Path) -> Option<(libc::sockaddr_un, libc::socklen_t)> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: sockaddr_un is plain data; all-zero is valid.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let b = path.as_os_str().as_bytes();
    if b.len() >= a.sun_path.len() {
        return None;
    }
    for (d, s) in a.sun_path.iter_mut().zip(b) {
        *d = *s as libc::c_char;
    }
    let len = (std::mem::size_of::<libc::sa_family_t>() + b.len() + 1) as libc::socklen_t;
    Some((a, len))
}

impl Port for AgentPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_burst(&mut self, pool: &mut BufPool, batch: &mut Batch, vif: u16) -> usize {
        if !self.rx {
            return 0;
        }
        let mut n = 0;
        while !batch.is_full() {
            let Some(mut b) = pool.alloc() else { break };
            let area = b.rx_area();
            // SAFETY: sockaddr_un is plain data; all-zero is valid.
            let mut from: libc::sockaddr_un = unsafe { std::mem::zeroed() };
            let mut flen = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            // SAFETY: the buffer and address are live and writable for the lengths passed.
            let r = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    area.as_mut_ptr().cast(),
                    area.len(),
                    libc::MSG_TRUNC,
                    (&mut from as *mut libc::sockaddr_un).cast(),
                    &mut flen,
                )
            };
            if r < 0 {
                pool.free(b);
                break;
            }
            if flen as usize > std::mem::size_of::<libc::sa_family_t>() {
                self.set_peer(Some((from, flen)));
            }
            let r = r as usize;
            if r == 0 {
                pool.free(b);
                continue;
            }
            if r > area.len() {
                self.drops.add(DropReason::InterfaceRxDiscard);
                pool.free(b);
                continue;
            }
            b.set_len(r);
            match batch.push(b, vif) {
                Ok(()) => n += 1,
                Err(b) => {
                    pool.free(b);
                    break;
                }
            }
        }
        n
    }

    fn tx_burst(&mut self, pool: &mut BufPool, pkts: &mut Vec<PktBuf>) -> usize {
        if pkts.is_empty() {
            return 0;
        }
        let peer = *self.peer.lock().unwrap_or_else(|e| e.into_inner());
        let Some((addr, len)) = peer else {
            return 0;
        };
        let mut sent = 0;
        for b in pkts.iter() {
            // SAFETY: the data and address are live for the lengths passed; sendto only reads.
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    b.data().as_ptr().cast(),
                    b.len(),
                    libc::MSG_DONTWAIT,
                    (&addr as *const libc::sockaddr_un).cast(),
                    len,
                )
            };
            if r < 0 {
                match std::io::Error::last_os_error().raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::ECONNREFUSED) | Some(libc::ENOENT) => {
                        log::info!("agent socket peer went away; waiting for it to say hello");
                        self.set_peer(None);
                        break;
                    }
                    _ => self.drops.add(DropReason::InterfaceTxDiscard),
                }
            }
            sent += 1;
        }
        for b in pkts.drain(..sent) {
            pool.free(b);
        }
        sent
    }

    fn poll_fd(&self) -> Option<RawFd> {
        self.rx.then(|| self.fd.as_raw_fd())
    }

    fn take_drops(&mut self) -> PortDrops {
        std::mem::take(&mut self.drops)
    }
}
