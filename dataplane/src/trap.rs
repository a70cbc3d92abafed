//! Packets the dataplane hands to the agent, and the header that travels with them.
//!
//! Trapped packets leave on the agent interface (Contrail's `pkt0`) with an [`AgentHeader`] in
//! front, so the agent knows where the packet came from and why; the agent injects packets back
//! through the same interface with a header saying where they go.

use serde::Serialize;

/// Why a packet goes to the agent (Contrail's `AGENT_TRAP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[repr(u8)]
pub enum TrapReason {
    /// Not trapped.
    None = 0,
    /// ARP the dataplane does not answer itself.
    Arp = 1,
    /// Addressed to a receive nexthop (the VN gateway, the host's own address).
    Receive = 2,
    /// TTL would expire: the agent sends ICMP time exceeded.
    ZeroTtl = 3,
    /// DHCP and other L3 protocols the agent serves.
    L3Protocols = 4,
    /// Too big for the path with DF set: the agent sends ICMP fragmentation needed.
    HandleDf = 5,
    /// A new flow to evaluate against policy.
    FlowMiss = 6,
}

impl TrapReason {
    /// Every reason, in counter order.
    pub const ALL: [TrapReason; 7] = [
        TrapReason::None,
        TrapReason::Arp,
        TrapReason::Receive,
        TrapReason::ZeroTtl,
        TrapReason::L3Protocols,
        TrapReason::HandleDf,
        TrapReason::FlowMiss,
    ];

    /// Decodes the wire value.
    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.get(usize::from(v)).copied()
    }

    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            TrapReason::None => "None",
            TrapReason::Arp => "Arp",
            TrapReason::Receive => "Receive",
            TrapReason::ZeroTtl => "Zero TTL",
            TrapReason::L3Protocols => "L3 Protocols",
            TrapReason::HandleDf => "Handle DF",
            TrapReason::FlowMiss => "Flow Miss",
        }
    }
}

/// Length of the agent header.
pub const AGENT_HEADER_LEN: usize = 16;
/// First bytes of every agent header.
pub const AGENT_MAGIC: [u8; 4] = *b"VRAG";
/// Version of the agent header layout.
pub const AGENT_HEADER_VERSION: u8 = 1;

/// What an agent header asks for on injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentCmd {
    /// Dataplane → agent: a trapped packet.
    Trap = 0,
    /// Agent → dataplane: transmit the Ethernet frame on `vif` as is.
    TxVif = 1,
    /// Agent → dataplane: route the IPv4 packet (Ethernet header in front) in `vrf`.
    RouteInVrf = 2,
}

/// The 16-byte header between dataplane and agent:
/// `magic[4] version cmd reason pad vif:u16 vrf:u16 param:u32` (big-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentHeader {
    /// What to do.
    pub cmd: AgentCmd,
    /// Trap reason (trapped packets).
    pub reason: TrapReason,
    /// Input interface (trap) or output interface (TxVif).
    pub vif: u16,
    /// VRF.
    pub vrf: u16,
    /// Reason-specific: the MTU for HandleDf.
    pub param: u32,
}

impl AgentHeader {
    /// Serialises into `out[..16]`.
    pub fn emit(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&AGENT_MAGIC);
        out[4] = AGENT_HEADER_VERSION;
        out[5] = self.cmd as u8;
        out[6] = self.reason as u8;
        out[7] = 0;
        out[8..10].copy_from_slice(&self.vif.to_be_bytes());
        out[10..12].copy_from_slice(&self.vrf.to_be_bytes());
        out[12..16].copy_from_slice(&self.param.to_be_bytes());
    }

    /// Parses the first 16 bytes; `None` if not a valid header.
    pub fn parse(b: &[u8]) -> Option<Self> {
        if b.len() < AGENT_HEADER_LEN || b[0..4] != AGENT_MAGIC || b[4] != AGENT_HEADER_VERSION {
            return None;
        }
        let cmd = match b[5] {
            0 => AgentCmd::Trap,
            1 => AgentCmd::TxVif,
            2 => AgentCmd::RouteInVrf,
            _ => return None,
        };
        Some(Self {
            cmd,
            reason: TrapReason::from_u8(b[6])?,
            vif: u16::from_be_bytes([b[8], b[9]]),
            vrf: u16::from_be_bytes([b[10], b[11]]),
            param: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = AgentHeader {
            cmd: AgentCmd::Trap,
            reason: TrapReason::ZeroTtl,
            vif: 3,
            vrf: 2,
            param: 1400,
        };
        let mut b = [0u8; 16];
        h.emit(&mut b);
        assert_eq!(&b[..6], b"VRAG\x01\x00");
        assert_eq!(AgentHeader::parse(&b), Some(h));
        b[5] = 9;
        assert_eq!(AgentHeader::parse(&b), None);
        assert_eq!(AgentHeader::parse(&b[..15]), None);
    }
}
