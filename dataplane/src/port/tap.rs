//! tap port: a `/dev/net/tun` descriptor in tap mode with the virtio-net header, used for the
//! host interface `vhost0` and for HVM-style `tap<domid>.<devid>` VM ports. The kernel side may
//! be moved into another namespace (a VM) after creation; the descriptor keeps working.
//!
//! Checksum offload is negotiated (`TUN_F_CSUM`) so the kernel hands over partial checksums,
//! which are finished here; TSO is not, so frames always fit a buffer. One syscall per frame is
//! the price of tap; it is the slow-path device.

use super::sys::{self, PortError};
use super::vnet::{self, VnetHdr, VNET_HDR_LEN};
use super::{Port, PortDrops};
use crate::batch::Batch;
use crate::buf::{BufPool, PktBuf};
use crate::drop::DropReason;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUN_F_CSUM: libc::c_uint = 0x01;

/// A tap device descriptor.
#[derive(Debug)]
pub struct TapPort {
    name: String,
    fd: OwnedFd,
    rx: bool,
    drops: PortDrops,
}

impl TapPort {
    /// Creates (or attaches to a persistent) tap device `name` and brings it up.
    pub fn open(name: &str) -> Result<Self, PortError> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(PortError::NoDevice(name.to_string()));
        }
        // SAFETY: the path is a valid C string literal.
        let fd = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
            )
        };
        if fd < 0 {
            return Err(PortError::last("open /dev/net/tun", name));
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ifreq is plain data; all-zero is valid.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
            *d = s as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
        // SAFETY: TUNSETIFF reads and writes an ifreq, which `ifr` is.
        if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut ifr) } < 0 {
            return Err(PortError::last("TUNSETIFF", name));
        }
        // SAFETY: TUNSETOFFLOAD takes an integer argument.
        if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, TUN_F_CSUM) } < 0 {
            return Err(PortError::last("TUNSETOFFLOAD", name));
        }
        set_up(name);
        Ok(Self {
            name: name.to_string(),
            fd,
            rx: true,
            drops: PortDrops::default(),
        })
    }

    /// A transmit-only handle on the same device for another lcore.
    pub fn tx_handle(&self) -> Result<Self, PortError> {
        let fd = self.fd.try_clone().map_err(|err| PortError::Sys {
            what: "dup",
            dev: self.name.clone(),
            err,
        })?;
        Ok(Self {
            name: self.name.clone(),
            fd,
            rx: false,
            drops: PortDrops::default(),
        })
    }
}

/// Brings `name` up (best effort: it may already be up, or live in another namespace).
pub fn set_up(name: &str) {
    let Ok(s) = sys::socket(libc::AF_INET, libc::SOCK_DGRAM, 0, name) else {
        return;
    };
    // SAFETY: ifreq is plain data; all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, c) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = c as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq passed.
    unsafe {
        if libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr);
        }
    }
}

impl Port for TapPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_burst(&mut self, pool: &mut BufPool, batch: &mut Batch, vif: u16) -> usize {
        if !self.rx {
            return 0;
        }
        let mut n = 0;
        while !batch.is_full() {
            let Some(mut b) = pool.alloc() else {
                break;
            };
            let area = b.rx_area();
            // SAFETY: reads at most `area.len()` bytes into the buffer's writable area.
            let r =
                unsafe { libc::read(self.fd.as_raw_fd(), area.as_mut_ptr().cast(), area.len()) };
            if r <= 0 {
                pool.free(b);
                break;
            }
            let r = r as usize;
            b.set_len(r);
            let h = VnetHdr::parse(b.data());
            if r < VNET_HDR_LEN || b.pull_front(VNET_HDR_LEN).is_none() {
                self.drops.add(DropReason::Pull);
                pool.free(b);
                continue;
            }
            if let Some(h) = h {
                if h.gso_type != vnet::GSO_NONE {
                    self.drops.add(DropReason::InvalidPacket);
                    pool.free(b);
                    continue;
                }
                if h.flags & vnet::F_NEEDS_CSUM != 0
                    && !vnet::complete_csum(
                        b.data_mut(),
                        usize::from(h.csum_start),
                        usize::from(h.csum_offset),
                    )
                {
                    self.drops.add(DropReason::InvalidPacket);
                    pool.free(b);
                    continue;
                }
            }
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
        let mut sent = 0;
        let hdr = [0u8; VNET_HDR_LEN];
        for b in pkts.iter() {
            let iov = [
                libc::iovec {
                    iov_base: hdr.as_ptr() as *mut libc::c_void,
                    iov_len: VNET_HDR_LEN,
                },
                libc::iovec {
                    iov_base: b.data().as_ptr() as *mut libc::c_void,
                    iov_len: b.len(),
                },
            ];
            // SAFETY: both iovecs point to live memory of the given lengths; writev only reads.
            let r = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), 2) };
            if r < 0 {
                let e = std::io::Error::last_os_error().raw_os_error();
                if e == Some(libc::EAGAIN) {
                    break;
                }
                // The device is down or gone: count it and move on.
                self.drops.add(DropReason::InterfaceDrop);
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
