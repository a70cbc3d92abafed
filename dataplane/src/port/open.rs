//! Opening a device as ports: the backend is chosen per interface, one handle per lcore, and
//! AF_XDP falls back to AF_PACKET (with a log line) when the device or kernel cannot do it.

use super::af_packet::{AfPacketOpts, AfPacketPort};
use super::sys::PortError;
use super::tap::TapPort;
use super::Port;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Which backend moves a device's packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortKind {
    /// XSK rings fed by our XDP program.
    AfXdp,
    /// TPACKET_V2 rings.
    AfPacket,
    /// /dev/net/tun.
    Tap,
}

impl FromStr for PortKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "af_xdp" | "afxdp" | "xdp" => Ok(PortKind::AfXdp),
            "af_packet" | "afpacket" | "packet" => Ok(PortKind::AfPacket),
            "tap" => Ok(PortKind::Tap),
            o => Err(format!(
                "unknown port kind {o:?} (expected af_xdp, af_packet or tap)"
            )),
        }
    }
}

impl fmt::Display for PortKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PortKind::AfXdp => "af_xdp",
            PortKind::AfPacket => "af_packet",
            PortKind::Tap => "tap",
        })
    }
}

/// What the device is to the vRouter (decides the XDP program).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A VM interface: every packet is ours.
    Vm,
    /// The fabric NIC: only overlay traffic to `host_ip` is ours, the rest goes to the kernel.
    Fabric {
        /// This host's fabric address.
        host_ip: u32,
    },
}

/// XDP attach mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XdpMode {
    /// Driver (native) mode; veth supports it.
    Native,
    /// Generic (skb) mode: works everywhere, slower.
    Generic,
}

impl FromStr for XdpMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "native" | "drv" => Ok(XdpMode::Native),
            "generic" | "skb" => Ok(XdpMode::Generic),
            o => Err(format!(
                "unknown xdp mode {o:?} (expected native or generic)"
            )),
        }
    }
}

/// How to open a device.
#[derive(Debug, Clone, Copy)]
pub struct OpenOpts {
    /// Requested backend.
    pub kind: PortKind,
    /// What the device is.
    pub role: Role,
    /// Number of lcores (one handle each).
    pub lcores: usize,
    /// XDP attach mode for AF_XDP.
    pub xdp_mode: XdpMode,
    /// Fanout group id for AF_PACKET (unique per device in this process).
    pub group: u16,
}

/// A device opened for every lcore.
pub struct DevicePorts {
    /// The backend actually used (after any fallback).
    pub kind: PortKind,
    /// Per lcore: its handle and whether it receives.
    pub handles: Vec<(Box<dyn Port>, bool)>,
    /// Keeps device-wide resources (the XDP program attachment) alive.
    pub guard: Option<Box<dyn std::any::Any + Send>>,
}

impl fmt::Debug for DevicePorts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevicePorts")
            .field("kind", &self.kind)
            .field("handles", &self.handles.len())
            .finish()
    }
}

/// Opens `name` with `o.kind`, one handle per lcore. AF_XDP falls back to AF_PACKET with a log
/// line when it cannot be used.
pub fn open_device(name: &str, o: &OpenOpts) -> Result<DevicePorts, PortError> {
    match o.kind {
        PortKind::AfXdp => match super::af_xdp::open_device(name, o) {
            Ok(d) => Ok(d),
            Err(e) => {
                log::warn!("{name}: AF_XDP unavailable ({e}); falling back to AF_PACKET");
                open_af_packet(name, o)
            }
        },
        PortKind::AfPacket => open_af_packet(name, o),
        PortKind::Tap => {
            let first = TapPort::open(name)?;
            let owner = usize::from(o.group) % o.lcores.max(1);
            let mut handles: Vec<(Box<dyn Port>, bool)> = Vec::new();
            let mut first = Some(first);
            let mut extra = Vec::new();
            for i in 0..o.lcores.max(1) {
                if i != owner {
                    if let Some(f) = &first {
                        extra.push((i, f.tx_handle()?));
                    }
                }
            }
            let mut extra = extra.into_iter();
            for i in 0..o.lcores.max(1) {
                if i == owner {
                    if let Some(f) = first.take() {
                        handles.push((Box::new(f), true));
                    }
                } else if let Some((_, h)) = extra.next() {
                    handles.push((Box::new(h), false));
                }
            }
            Ok(DevicePorts {
                kind: PortKind::Tap,
                handles,
                guard: None,
            })
        }
    }
}

fn open_af_packet(name: &str, o: &OpenOpts) -> Result<DevicePorts, PortError> {
    let n = o.lcores.max(1);
    let mut handles: Vec<(Box<dyn Port>, bool)> = Vec::new();
    for _ in 0..n {
        let p = AfPacketPort::open(
            name,
            AfPacketOpts {
                rx: true,
                fanout_group: (n > 1).then_some(o.group),
                vnet_hdr: true,
                big_rings: matches!(o.role, Role::Fabric { .. }),
            },
        )?;
        handles.push((Box::new(p), true));
    }
    Ok(DevicePorts {
        kind: PortKind::AfPacket,
        handles,
        guard: None,
    })
}
