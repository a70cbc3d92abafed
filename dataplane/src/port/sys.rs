//! Small syscall helpers shared by the device backends: typed errors, interface lookups, and an
//! owned memory mapping.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Why a device port could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// No such network device (in this namespace).
    #[error("no network device named {0:?}")]
    NoDevice(String),
    /// A system call failed.
    #[error("{what} on {dev}: {err}")]
    Sys {
        /// Which call.
        what: &'static str,
        /// Device.
        dev: String,
        /// Cause.
        err: io::Error,
    },
    /// The device or kernel cannot do what this backend needs (callers fall back).
    #[error("{dev}: {why}")]
    Unsupported {
        /// Device.
        dev: String,
        /// Why.
        why: String,
    },
}

impl PortError {
    /// A failed call with the current `errno`.
    pub fn last(what: &'static str, dev: &str) -> Self {
        PortError::Sys {
            what,
            dev: dev.to_string(),
            err: io::Error::last_os_error(),
        }
    }
}

/// The interface index of `name`.
pub fn ifindex(name: &str) -> Result<u32, PortError> {
    let c = CString::new(name).map_err(|_| PortError::NoDevice(name.to_string()))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(PortError::NoDevice(name.to_string()));
    }
    Ok(i)
}

/// Number of receive queues the device exposes (at least 1).
pub fn rx_queues(name: &str) -> u32 {
    std::fs::read_dir(format!("/sys/class/net/{name}/queues"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count() as u32
        })
        .unwrap_or(1)
        .max(1)
}

/// Creates a socket, close-on-exec.
pub fn socket(domain: i32, ty: i32, proto: i32, dev: &str) -> Result<OwnedFd, PortError> {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(PortError::last("socket", dev));
    }
    // SAFETY: `fd` was just returned by socket() and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `setsockopt` with a plain-data value.
pub fn setsockopt<T: Copy>(
    fd: RawFd,
    level: i32,
    opt: i32,
    val: &T,
    what: &'static str,
    dev: &str,
) -> Result<(), PortError> {
    // SAFETY: `val` points to a live `T` of the size passed; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (val as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(PortError::last(what, dev));
    }
    Ok(())
}

/// `getsockopt` into a plain-data value.
pub fn getsockopt<T: Copy>(
    fd: RawFd,
    level: i32,
    opt: i32,
    val: &mut T,
    what: &'static str,
    dev: &str,
) -> Result<(), PortError> {
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `val` points to a live, writable `T` of the size passed.
    let rc = unsafe { libc::getsockopt(fd, level, opt, (val as *mut T).cast(), &mut len) };
    if rc < 0 {
        return Err(PortError::last(what, dev));
    }
    Ok(())
}

/// A shared memory mapping, unmapped on drop.
#[derive(Debug)]
pub struct Mmap {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; moving it to another thread moves
// that ownership. Concurrent access with the kernel is governed by the ring protocols.
unsafe impl Send for Mmap {}

impl Mmap {
    /// Maps `len` bytes of `fd` at `offset` (a packet or XDP ring), or anonymous memory if
    /// `fd` is `None`.
    pub fn new(
        fd: Option<RawFd>,
        len: usize,
        offset: i64,
        populate: bool,
        dev: &str,
    ) -> Result<Self, PortError> {
        let mut flags = match fd {
            Some(_) => libc::MAP_SHARED,
            None => libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        };
        if populate {
            flags |= libc::MAP_POPULATE;
        }
        // SAFETY: a fresh mapping at an address the kernel chooses; no existing memory is
        // affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd.unwrap_or(-1),
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(PortError::last("mmap", dev));
        }
        Ok(Self { ptr: p.cast(), len })
    }

    /// Start of the mapping.
    #[inline]
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Length of the mapping.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty mapping (never, once created).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping this value created and still owns.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// Sets `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: &impl AsRawFd, dev: &str) -> Result<(), PortError> {
    let fd = fd.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, integer arguments only.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if fl < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
        return Err(PortError::last("fcntl", dev));
    }
    Ok(())
}

/// The MAC address of a device, from sysfs.
pub fn mac_of(name: &str) -> Option<[u8; 6]> {
    let s = std::fs::read_to_string(format!("/sys/class/net/{name}/address")).ok()?;
    let mut m = [0u8; 6];
    let mut it = s.trim().split(':');
    for b in &mut m {
        *b = u8::from_str_radix(it.next()?, 16).ok()?;
    }
    Some(m)
}
