//! dom0's link-local interface (issue 19): a persistent tap (`xapi0` by default) with dom0's
//! link-local address (169.254.0.1/16), like the one XenServer keeps for its host-internal
//! management network. The agent creates it the first time a link-local interface needs it;
//! the dataplane then attaches to it as vif kind `XenLL`. Persistent, so dom0's address and
//! route stay while the dataplane restarts (the tap just has no carrier meanwhile).

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use vrouter_dataplane::wire::MacAddr;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

/// Why dom0's link-local interface could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LinkLocalError {
    /// A name the kernel cannot hold.
    #[error("bad interface name {0:?} (1 to 15 bytes)")]
    Name(String),
    /// A system call failed.
    #[error("{what} on {dev}: {err}")]
    Sys {
        /// What was done.
        what: &'static str,
        /// The device.
        dev: String,
        /// The error.
        err: std::io::Error,
    },
    /// The device has no readable MAC.
    #[error("{0}: no MAC address in /sys/class/net")]
    NoMac(String),
}

fn ifreq(name: &str) -> Result<libc::ifreq, LinkLocalError> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(LinkLocalError::Name(name.into()));
    }
    // SAFETY: ifreq is plain data; all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(ifr)
}

fn sys_err(what: &'static str, dev: &str) -> LinkLocalError {
    LinkLocalError::Sys {
        what,
        dev: dev.into(),
        err: std::io::Error::last_os_error(),
    }
}

/// Opens `path` (a C string) with `flags`, or an AF_INET datagram socket for `None`.
fn open_fd(path: Option<&std::ffi::CStr>, dev: &str) -> Result<OwnedFd, LinkLocalError> {
    let fd = match path {
        // SAFETY: `p` is a valid C string; open has no other preconditions.
        Some(p) => unsafe { libc::open(p.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) },
        // SAFETY: socket(2) with constant arguments.
        None => unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) },
    };
    if fd < 0 {
        return Err(sys_err("open", dev));
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Creates tap `name` as a persistent device (or finds it), so it outlives this descriptor.
fn persistent_tap(name: &str) -> Result<(), LinkLocalError> {
    let fd = open_fd(Some(c"/dev/net/tun"), name)?;
    let mut ifr = ifreq(name)?;
    ifr.ifr_ifru.ifru_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    // SAFETY: TUNSETIFF reads and writes an ifreq, which `ifr` is.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut ifr) } < 0 {
        return Err(sys_err("TUNSETIFF", name));
    }
    // SAFETY: TUNSETPERSIST takes an integer argument.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETPERSIST, 1 as libc::c_ulong) } < 0 {
        return Err(sys_err("TUNSETPERSIST", name));
    }
    Ok(())
}

fn sockaddr(a: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; this is how the socket API
    // passes an IPv4 address in an ifreq.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// Sets `addr`/`plen` on `name` and brings it up.
fn address_and_up(name: &str, addr: Ipv4Addr, plen: u8) -> Result<(), LinkLocalError> {
    let s = open_fd(None, name)?;
    let mask = Ipv4Addr::from(
        u32::MAX
            .checked_shl(32 - u32::from(plen.min(32)))
            .unwrap_or(0),
    );
    for (req, what, a) in [
        (libc::SIOCSIFADDR, "SIOCSIFADDR", addr),
        (libc::SIOCSIFNETMASK, "SIOCSIFNETMASK", mask),
    ] {
        let mut ifr = ifreq(name)?;
        ifr.ifr_ifru.ifru_addr = sockaddr(a);
        // SAFETY: these requests read an ifreq carrying an address, which `ifr` is.
        if unsafe { libc::ioctl(s.as_raw_fd(), req, &ifr) } < 0 {
            return Err(sys_err(what, name));
        }
    }
    let mut ifr = ifreq(name)?;
    // SAFETY: SIOCGIFFLAGS fills the flags of an ifreq.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } < 0 {
        return Err(sys_err("SIOCGIFFLAGS", name));
    }
    // SAFETY: the flags member was just written by the kernel.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    ifr.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads an ifreq's flags.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } < 0 {
        return Err(sys_err("SIOCSIFFLAGS", name));
    }
    Ok(())
}

/// Makes sure tap `name` exists with `addr`/`plen` and is up; returns its MAC.
pub fn ensure_tap(name: &str, addr: Ipv4Addr, plen: u8) -> Result<MacAddr, LinkLocalError> {
    // An existing tap is left as it is: a restarted agent finds the one it made, which the
    // dataplane holds open (a second attach would fail with EBUSY).
    if !std::path::Path::new("/sys/class/net").join(name).exists() {
        persistent_tap(name)?;
    }
    address_and_up(name, addr, plen)?;
    vrouter_dataplane::port::sys::mac_of(name)
        .map(MacAddr)
        .ok_or_else(|| LinkLocalError::NoMac(name.into()))
}
