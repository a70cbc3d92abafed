//! The agent's packet services (`vrouter_agent::services`): DHCP and the gateway's ICMP, on the
//! frames the dataplane traps to the agent. A VM controls every byte of those frames.
//!
//! Input layout: one control byte, then the frame. Control values 0-3 put a trap header for
//! `L3 Protocols`, `Receive`, `Zero TTL` or `Handle DF` from the served VM's interface in front
//! of the frame (what the dataplane sends); any other value hands the input on as is, header
//! included, so the header parser is fuzzed too.
//!
//! Invariants: at most one answer per trapped frame; each is an injection header (`TxVif` or
//! `RouteInVrf`) and an Ethernet/IPv4 frame whose IPv4 header, UDP and ICMP checksums verify and
//! whose total length fits the frame; DHCP answers go from port 67 to port 68 and only ever
//! offer the interface's own address.

use std::net::Ipv4Addr;
use vrouter_agent::services::{PacketServices, ServedInterface, VrfGateway};
use vrouter_dataplane::trap::{AgentCmd, AgentHeader, TrapReason, AGENT_HEADER_LEN};
use vrouter_dataplane::wire::{checksum, ip_proto, Ipv4Packet, MacAddr, ETHERNET_HEADER_LEN};

/// The served VM's interface, VRF, MAC and address.
pub const VIF: u16 = 3;
/// VRF of the served interface.
pub const VRF: u16 = 2;
/// The served VM's MAC.
pub const VM_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x07]);
/// The only address ever offered.
pub const VM_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 7);
/// The VN gateway.
pub const GW: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 1);

const REASONS: [TrapReason; 4] = [
    TrapReason::L3Protocols,
    TrapReason::Receive,
    TrapReason::ZeroTtl,
    TrapReason::HandleDf,
];

fn services() -> PacketServices {
    let iface = ServedInterface {
        dns: vec![Ipv4Addr::new(10, 1, 1, 2), Ipv4Addr::new(8, 8, 8, 8)],
        mtu: Some(1400),
        lease_secs: 3600,
        hostname: Some("vm-7".into()),
        domain: Some("cs.example".into()),
        ..ServedInterface::new(VIF, VRF, VM_MAC, VM_IP, 24, GW)
    };
    let mut s = PacketServices::new();
    s.add_interface(iface).expect("valid interface");
    let gw = VrfGateway {
        addr: Ipv4Addr::new(10, 9, 0, 1),
        prefix_len: 16,
    };
    s.set_vrf_gateways(VRF, vec![gw]).expect("valid gateway");
    s
}

/// Hands the frame in `data[1..]` to the services as `data[0]` says.
pub fn run(data: &[u8]) {
    let Some((&ctl, frame)) = data.split_first() else {
        return;
    };
    let trapped = match REASONS.get(usize::from(ctl)) {
        Some(&reason) => {
            let mut t = vec![0u8; AGENT_HEADER_LEN];
            AgentHeader {
                cmd: AgentCmd::Trap,
                reason,
                vif: VIF,
                vrf: VRF,
                param: 1400,
            }
            .emit(&mut t);
            t.extend_from_slice(frame);
            t
        }
        None => frame.to_vec(),
    };
    let mut s = services();
    let out = s.handle(&trapped);
    assert!(out.len() <= 1, "{} answers to one frame", out.len());
    for o in &out {
        answer(o);
    }
}

/// Checks one injected answer.
fn answer(o: &[u8]) {
    let Some(h) = AgentHeader::parse(o) else {
        panic!("answer without an injection header: {o:02x?}");
    };
    assert!(
        matches!(h.cmd, AgentCmd::TxVif | AgentCmd::RouteInVrf),
        "{h:?}"
    );
    let eth = &o[AGENT_HEADER_LEN..];
    assert!(eth.len() > ETHERNET_HEADER_LEN, "answer too short");
    assert_eq!(&eth[12..14], &[8, 0], "answers are IPv4");
    let ip = &eth[ETHERNET_HEADER_LEN..];
    let p = Ipv4Packet::new_checked(ip).expect("answer's IPv4 header is well formed");
    assert!(p.verify_checksum(), "answer's IPv4 checksum");
    let (hl, seg) = (p.header_len(), p.payload());
    match p.protocol() {
        ip_proto::UDP => {
            assert!(seg.len() >= 8, "UDP header");
            let c = u16::from_be_bytes([seg[6], seg[7]]);
            if c != 0 {
                let mut pseudo = ip[12..20].to_vec();
                pseudo.extend_from_slice(&[0, ip_proto::UDP]);
                pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
                pseudo.extend_from_slice(seg);
                assert_eq!(checksum::checksum(&pseudo), 0, "UDP checksum");
            }
            assert_eq!(&seg[0..4], &[0, 67, 0, 68], "DHCP from 67 to 68");
            dhcp_reply(&seg[8..]);
        }
        ip_proto::ICMP => assert_eq!(checksum::checksum(seg), 0, "ICMP checksum"),
        other => panic!("answer of protocol {other} (header {hl} bytes)"),
    }
}

/// A DHCP reply offers (`yiaddr`) the interface's own address or nothing (a NAK).
fn dhcp_reply(bootp: &[u8]) {
    assert!(bootp.len() >= 240, "BOOTP fixed part and magic cookie");
    assert_eq!(bootp[0], 2, "BOOTREPLY");
    let yiaddr = Ipv4Addr::new(bootp[16], bootp[17], bootp[18], bootp[19]);
    assert!(
        yiaddr == VM_IP || yiaddr.is_unspecified(),
        "offered {yiaddr}"
    );
    assert_eq!(&bootp[28..34], &VM_MAC.0, "reply to the VM's own chaddr");
}
