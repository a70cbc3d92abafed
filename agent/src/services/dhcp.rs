//! The DHCPv4 server (RFC 2131, options from RFC 2132) for the VMs of one host.
//!
//! Bindings are static, as in Contrail: the interface on the trapped `vif` is offered its own
//! configured address and nothing else, so there is no pool and no lease table to lose. A client
//! asking for another address gets a DHCPNAK and starts over with DISCOVER; a RELEASE or DECLINE
//! only changes the [`LeaseState`] shown to operators.
//!
//! Replies come from the gateway (server identifier = router = the VN gateway), from port 67 to
//! port 68, and are addressed as RFC 2131 §4.1 says (no relays here, `giaddr` is always 0):
//! a NAK is broadcast; otherwise a client with `ciaddr` gets a unicast to `ciaddr`; a client with
//! the broadcast flag gets a broadcast; anyone else a unicast to `yiaddr` at its `chaddr`. All go
//! out of the client's own interface (`TxVif`).

use std::net::Ipv4Addr;

use smoltcp::wire::{
    DhcpMessageType, DhcpOption, DhcpPacket, DhcpRepr, UdpPacket, DHCP_CLIENT_PORT,
    DHCP_SERVER_PORT,
};
use vrouter_dataplane::wire::ethernet::MacAddr;

use super::{Answer, Dest, Ignored, Ipv4Frame, Origin, Served, ServedInterface};

/// Smallest BOOTP message we send (RFC 1542 §2.1: some clients drop shorter ones).
pub const MIN_BOOTP_LEN: usize = 300;

/// DHCP option codes we send beyond those smoltcp's `DhcpRepr` emits itself.
mod opt {
    pub const HOSTNAME: u8 = 12;
    pub const DOMAIN_NAME: u8 = 15;
    pub const INTERFACE_MTU: u8 = 26;
    pub const RENEWAL_TIME: u8 = 58;
    pub const REBINDING_TIME: u8 = 59;
}

/// Where the DHCP conversation of a VM stands, for operators (the binding itself is static).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum LeaseState {
    /// Offered, not yet requested.
    Offered,
    /// Acknowledged: the VM uses its address.
    Bound,
    /// The VM released its address.
    Released,
    /// The VM declined its address (it saw it in use).
    Declined,
}

/// The reply kinds a server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Offer,
    Ack,
    Nak,
    InformAck,
}

/// Serves one DHCP message from the VM on `iface`. Returns the answer and the new lease state
/// (if it changes).
pub(crate) fn serve(
    iface: &ServedInterface,
    pkt: &Ipv4Frame<'_>,
    udp: &UdpPacket<&[u8]>,
) -> Result<(Answer, Option<LeaseState>), Ignored> {
    let payload = udp.payload();
    let dhcp = DhcpPacket::new_checked(payload).map_err(|_| Ignored::Malformed)?;
    let req = DhcpRepr::parse(&dhcp).map_err(|_| Ignored::Malformed)?;
    if req.client_hardware_address.0 != iface.mac.0 || pkt.src_mac() != iface.mac {
        return Err(Ignored::UnknownMac);
    }
    if !req.relay_agent_ip.is_unspecified() {
        return Err(Ignored::Relayed);
    }
    let ours = req.server_identifier.is_none_or(|s| s == iface.gateway);
    let answer = |served, frame| Answer { served, frame };
    match req.message_type {
        DhcpMessageType::Discover => Ok((
            answer(
                Served::DhcpOffer,
                Some(reply(iface, &req, pkt, Kind::Offer)?),
            ),
            Some(LeaseState::Offered),
        )),
        DhcpMessageType::Request => {
            if !ours {
                return Err(Ignored::OtherServer);
            }
            // SELECTING and INIT-REBOOT name the address in option 50; RENEWING and
            // REBINDING in ciaddr (RFC 2131 §4.3.2).
            let wanted = req
                .requested_ip
                .or((!req.client_ip.is_unspecified()).then_some(req.client_ip));
            if wanted == Some(iface.ip) {
                Ok((
                    answer(Served::DhcpAck, Some(reply(iface, &req, pkt, Kind::Ack)?)),
                    Some(LeaseState::Bound),
                ))
            } else {
                log::info!(
                    "dhcp: vif {} ({}) asked for {:?}, its address is {}: NAK",
                    iface.vif,
                    iface.mac,
                    wanted,
                    iface.ip
                );
                Ok((
                    answer(Served::DhcpNak, Some(reply(iface, &req, pkt, Kind::Nak)?)),
                    None,
                ))
            }
        }
        DhcpMessageType::Decline if ours => {
            log::warn!(
                "dhcp: vif {} ({}) declined {}: the address is in use on its link",
                iface.vif,
                iface.mac,
                iface.ip
            );
            Ok((
                answer(Served::DhcpDecline, None),
                Some(LeaseState::Declined),
            ))
        }
        DhcpMessageType::Release if ours => Ok((
            answer(Served::DhcpRelease, None),
            Some(LeaseState::Released),
        )),
        DhcpMessageType::Decline | DhcpMessageType::Release => Err(Ignored::OtherServer),
        DhcpMessageType::Inform => Ok((
            answer(
                Served::DhcpInformAck,
                Some(reply(iface, &req, pkt, Kind::InformAck)?),
            ),
            None,
        )),
        _ => Err(Ignored::UnsupportedDhcp),
    }
}

/// Builds the reply frame (agent header + Ethernet + IPv4 + UDP + BOOTP).
fn reply(
    iface: &ServedInterface,
    req: &DhcpRepr<'_>,
    pkt: &Ipv4Frame<'_>,
    kind: Kind,
) -> Result<Vec<u8>, Ignored> {
    let config = kind != Kind::Nak;
    let leased = matches!(kind, Kind::Offer | Kind::Ack);
    let lease = iface.lease_secs;
    // T1 = 0.5 and T2 = 0.875 of the lease (RFC 2131 §4.4.5); none for an infinite lease.
    let t1 = (lease / 2).to_be_bytes();
    let t2 = u32::try_from(u64::from(lease) * 7 / 8)
        .unwrap_or(u32::MAX)
        .to_be_bytes();
    let mtu = iface.mtu.map(u16::to_be_bytes);
    let mut extra = Vec::with_capacity(5);
    if leased && lease != u32::MAX {
        extra.push(DhcpOption {
            kind: opt::RENEWAL_TIME,
            data: &t1,
        });
        extra.push(DhcpOption {
            kind: opt::REBINDING_TIME,
            data: &t2,
        });
    }
    if config {
        if let Some(mtu) = &mtu {
            extra.push(DhcpOption {
                kind: opt::INTERFACE_MTU,
                data: mtu,
            });
        }
        if let Some(h) = &iface.hostname {
            extra.push(DhcpOption {
                kind: opt::HOSTNAME,
                data: h.as_bytes(),
            });
        }
        if let Some(d) = &iface.domain {
            extra.push(DhcpOption {
                kind: opt::DOMAIN_NAME,
                data: d.as_bytes(),
            });
        }
    }
    let mut repr = DhcpRepr {
        message_type: match kind {
            Kind::Offer => DhcpMessageType::Offer,
            Kind::Ack | Kind::InformAck => DhcpMessageType::Ack,
            Kind::Nak => DhcpMessageType::Nak,
        },
        transaction_id: req.transaction_id,
        secs: 0,
        client_hardware_address: req.client_hardware_address,
        client_ip: match kind {
            Kind::Ack | Kind::InformAck => req.client_ip,
            Kind::Offer | Kind::Nak => Ipv4Addr::UNSPECIFIED,
        },
        your_ip: if leased {
            iface.ip
        } else {
            Ipv4Addr::UNSPECIFIED
        },
        server_ip: Ipv4Addr::UNSPECIFIED,
        router: config.then_some(iface.gateway),
        subnet_mask: config.then(|| iface.netmask()),
        relay_agent_ip: Ipv4Addr::UNSPECIFIED,
        broadcast: req.broadcast,
        requested_ip: None,
        // Echoed as RFC 6842 asks.
        client_identifier: req.client_identifier,
        server_identifier: Some(iface.gateway),
        parameter_request_list: None,
        dns_servers: None,
        max_size: None,
        lease_duration: leased.then_some(lease),
        renew_duration: None,
        rebind_duration: None,
        additional_options: &extra,
    };
    if config && !iface.dns.is_empty() {
        // The list type is smoltcp's (a `heapless::Vec`); `Default` names it for us.
        let servers = repr.dns_servers.insert(Default::default());
        for d in &iface.dns {
            // At most MAX_DNS_SERVERS, checked when the interface was added.
            let _ = servers.push(*d);
        }
    }

    let (dst_mac, dst_ip) = destination(iface, req, pkt, kind);
    let origin = Origin {
        dest: Dest::Vif(iface.vif),
        vrf: iface.vrf,
        dst_mac,
        src: iface.gateway,
        dst: dst_ip,
    };
    let len = repr.buffer_len().max(MIN_BOOTP_LEN);
    let mut emitted = Ok(());
    let frame = origin.udp(DHCP_SERVER_PORT, DHCP_CLIENT_PORT, len, |buf| {
        emitted = repr.emit(&mut DhcpPacket::new_unchecked(buf));
    });
    emitted.map_err(|_| Ignored::Malformed)?;
    Ok(frame)
}

/// RFC 2131 §4.1, for a server on the client's link (`giaddr` = 0).
fn destination(
    iface: &ServedInterface,
    req: &DhcpRepr<'_>,
    pkt: &Ipv4Frame<'_>,
    kind: Kind,
) -> (MacAddr, Ipv4Addr) {
    let broadcast = (MacAddr::BROADCAST, Ipv4Addr::BROADCAST);
    let client = MacAddr(req.client_hardware_address.0);
    match kind {
        Kind::Nak => broadcast,
        _ if !req.client_ip.is_unspecified() => (client, req.client_ip),
        // An INFORM without ciaddr: answer the address it came from, if any (§4.3.5).
        Kind::InformAck if !pkt.ip.src_addr().is_unspecified() => (client, pkt.ip.src_addr()),
        Kind::InformAck => broadcast,
        _ if req.broadcast => broadcast,
        Kind::Offer | Kind::Ack => (client, iface.ip),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::super::testutil::*;
    use super::super::{PacketServices, ServedInterface};
    use super::*;
    use vrouter_dataplane::trap::{AgentCmd, TrapReason};

    const XID: [u8; 4] = [0xde, 0xad, 0xbe, 0xef];

    /// A BOOTREQUEST from the VM, written out byte by byte (RFC 2131 figure 1): DHCP message
    /// type `msg`, `ciaddr`, client identifier = type 1 + VM MAC, a parameter request list,
    /// then `extra` options.
    pub(crate) fn client_msg(msg: u8, ciaddr: [u8; 4], extra: &[(u8, &[u8])]) -> Vec<u8> {
        let mut b = vec![1, 1, 6, 0]; // op BOOTREQUEST, htype Ethernet, hlen 6, hops
        b.extend_from_slice(&XID);
        b.extend_from_slice(&[0, 3, 0, 0]); // secs 3, flags 0
        b.extend_from_slice(&ciaddr);
        b.extend_from_slice(&[0; 12]); // yiaddr, siaddr, giaddr
        b.extend_from_slice(&VM_MAC);
        b.extend_from_slice(&[0; 10 + 64 + 128]); // chaddr padding, sname, file
        b.extend_from_slice(&[0x63, 0x82, 0x53, 0x63]);
        b.extend_from_slice(&[53, 1, msg]);
        b.extend_from_slice(&[61, 7, 1]);
        b.extend_from_slice(&VM_MAC);
        b.extend_from_slice(&[55, 7, 1, 3, 6, 12, 15, 26, 28]);
        for (code, data) in extra {
            b.push(*code);
            b.push(data.len() as u8);
            b.extend_from_slice(data);
        }
        b.push(255);
        b
    }

    fn set_broadcast(msg: &mut [u8]) {
        msg[10] |= 0x80;
    }

    /// The VM's frame: broadcast from 0.0.0.0, or unicast from `ciaddr` to the gateway.
    fn vm_frame(msg: &[u8]) -> Vec<u8> {
        let ciaddr = [msg[12], msg[13], msg[14], msg[15]];
        if ciaddr == [0; 4] {
            udp_frame(VM_MAC, [0xff; 6], [0; 4], [255; 4], 64, 68, 67, msg)
        } else {
            udp_frame(VM_MAC, MacAddr::VROUTER.0, ciaddr, GW, 64, 68, 67, msg)
        }
    }

    fn send(s: &mut PacketServices, msg: &[u8]) -> Vec<Vec<u8>> {
        s.handle(&trap(TrapReason::L3Protocols, VIF, VRF, 0, &vm_frame(msg)))
    }

    /// A server reply, read with etherparse and by hand (independent of smoltcp).
    #[derive(Debug)]
    struct Reply {
        eth_dst: [u8; 6],
        eth_src: [u8; 6],
        ip_src: [u8; 4],
        ip_dst: [u8; 4],
        ports: (u16, u16),
        bootp_len: usize,
        op: u8,
        flags: u16,
        xid: [u8; 4],
        ciaddr: [u8; 4],
        yiaddr: [u8; 4],
        chaddr: [u8; 6],
        options: BTreeMap<u8, Vec<u8>>,
    }

    fn one_reply(out: &[Vec<u8>]) -> Reply {
        assert_eq!(out.len(), 1, "exactly one reply");
        let (h, eth) = split(&out[0]);
        assert_eq!(h.cmd, AgentCmd::TxVif);
        assert_eq!(h.vif, VIF);
        let p = checked(eth);
        let Some(etherparse::LinkHeader::Ethernet2(e)) = &p.link else {
            panic!("ethernet")
        };
        let Some(etherparse::NetHeaders::Ipv4(ip, _)) = &p.net else {
            panic!("ipv4")
        };
        assert_eq!(ip.time_to_live, 64);
        let Some(etherparse::TransportHeader::Udp(u)) = &p.transport else {
            panic!("udp")
        };
        let b = p.payload.slice();
        assert_eq!(&b[236..240], &[0x63, 0x82, 0x53, 0x63], "magic cookie");
        let mut options = BTreeMap::new();
        let mut i = 240;
        while i < b.len() && b[i] != 255 {
            if b[i] == 0 {
                i += 1;
                continue;
            }
            let (code, len) = (b[i], usize::from(b[i + 1]));
            assert!(
                options
                    .insert(code, b[i + 2..i + 2 + len].to_vec())
                    .is_none(),
                "option {code} twice"
            );
            i += 2 + len;
        }
        assert_eq!(b.get(i), Some(&255), "end option");
        Reply {
            eth_dst: e.destination,
            eth_src: e.source,
            ip_src: ip.source,
            ip_dst: ip.destination,
            ports: (u.source_port, u.destination_port),
            bootp_len: b.len(),
            op: b[0],
            flags: u16::from_be_bytes([b[10], b[11]]),
            xid: [b[4], b[5], b[6], b[7]],
            ciaddr: [b[12], b[13], b[14], b[15]],
            yiaddr: [b[16], b[17], b[18], b[19]],
            chaddr: [b[28], b[29], b[30], b[31], b[32], b[33]],
            options,
        }
    }

    fn opt(r: &Reply, code: u8) -> Option<&[u8]> {
        r.options.get(&code).map(Vec::as_slice)
    }

    fn assert_config(r: &Reply) {
        assert_eq!(opt(r, 1), Some(&[255, 255, 255, 0][..]), "subnet mask");
        assert_eq!(opt(r, 3), Some(&GW[..]), "router");
        assert_eq!(opt(r, 6), Some(&[10, 1, 1, 2, 8, 8, 8, 8][..]), "dns");
        assert_eq!(opt(r, 26), Some(&1400u16.to_be_bytes()[..]), "mtu");
        assert_eq!(opt(r, 54), Some(&GW[..]), "server identifier");
        assert_eq!(opt(r, 12), Some(&b"vm-7"[..]), "hostname");
        assert_eq!(opt(r, 15), Some(&b"cs.example"[..]), "domain");
        assert_eq!(opt(r, 61), Some(&[1, 2, 0, 0, 0, 0, 7][..]), "client id");
    }

    fn assert_lease(r: &Reply) {
        assert_eq!(opt(r, 51), Some(&3600u32.to_be_bytes()[..]), "lease");
        assert_eq!(opt(r, 58), Some(&1800u32.to_be_bytes()[..]), "T1");
        assert_eq!(opt(r, 59), Some(&3150u32.to_be_bytes()[..]), "T2");
    }

    fn assert_from_gateway(r: &Reply) {
        assert_eq!(r.eth_src, MacAddr::VROUTER.0);
        assert_eq!(r.ip_src, GW);
        assert_eq!(r.ports, (67, 68));
        assert_eq!(r.op, 2, "BOOTREPLY");
        assert_eq!(r.xid, XID);
        assert_eq!(r.chaddr, VM_MAC);
        assert!(r.bootp_len >= MIN_BOOTP_LEN);
    }

    #[test]
    fn discover_gets_an_offer_unicast_to_yiaddr() {
        let mut s = services();
        let r = one_reply(&send(&mut s, &client_msg(1, [0; 4], &[])));
        assert_from_gateway(&r);
        assert_eq!(opt(&r, 53), Some(&[2][..]), "OFFER");
        assert_eq!(r.yiaddr, VM_IP);
        assert_eq!(r.ciaddr, [0; 4]);
        assert_eq!(r.flags, 0);
        // No broadcast flag: unicast to yiaddr at chaddr (RFC 2131 §4.1).
        assert_eq!((r.eth_dst, r.ip_dst), (VM_MAC, VM_IP));
        assert_config(&r);
        assert_lease(&r);
        assert_eq!(s.stats().served(Served::DhcpOffer), 1);
        assert_eq!(s.lease_state(VIF), Some(LeaseState::Offered));
    }

    #[test]
    fn discover_for_another_address_still_offers_the_configured_one() {
        let mut s = services();
        let r = one_reply(&send(
            &mut s,
            &client_msg(1, [0; 4], &[(50, &[10, 1, 1, 99])]),
        ));
        assert_eq!(r.yiaddr, VM_IP);
    }

    #[test]
    fn broadcast_flag_gets_a_broadcast_reply() {
        let mut s = services();
        let mut m = client_msg(1, [0; 4], &[]);
        set_broadcast(&mut m);
        let r = one_reply(&send(&mut s, &m));
        assert_eq!((r.eth_dst, r.ip_dst), ([0xff; 6], [255; 4]));
        assert_eq!(r.flags, 0x8000);
        assert_eq!(r.yiaddr, VM_IP);
    }

    #[test]
    fn request_while_selecting_gets_an_ack() {
        let mut s = services();
        let m = client_msg(3, [0; 4], &[(50, &VM_IP), (54, &GW)]);
        let r = one_reply(&send(&mut s, &m));
        assert_from_gateway(&r);
        assert_eq!(opt(&r, 53), Some(&[5][..]), "ACK");
        assert_eq!(r.yiaddr, VM_IP);
        assert_eq!((r.eth_dst, r.ip_dst), (VM_MAC, VM_IP));
        assert_config(&r);
        assert_lease(&r);
        assert_eq!(s.lease_state(VIF), Some(LeaseState::Bound));
        assert_eq!(s.stats().served(Served::DhcpAck), 1);
    }

    #[test]
    fn renewal_is_acked_unicast_to_ciaddr() {
        let mut s = services();
        let r = one_reply(&send(&mut s, &client_msg(3, VM_IP, &[])));
        assert_eq!(opt(&r, 53), Some(&[5][..]));
        assert_eq!(r.ciaddr, VM_IP);
        assert_eq!(r.yiaddr, VM_IP);
        assert_eq!((r.eth_dst, r.ip_dst), (VM_MAC, VM_IP));
    }

    #[test]
    fn request_for_another_address_gets_a_broadcast_nak() {
        let mut s = services();
        // INIT-REBOOT with a stale address.
        let r = one_reply(&send(
            &mut s,
            &client_msg(3, [0; 4], &[(50, &[10, 1, 1, 99])]),
        ));
        assert_from_gateway(&r);
        assert_eq!(opt(&r, 53), Some(&[6][..]), "NAK");
        assert_eq!((r.eth_dst, r.ip_dst), ([0xff; 6], [255; 4]));
        assert_eq!(r.yiaddr, [0; 4]);
        assert_eq!(opt(&r, 54), Some(&GW[..]));
        for code in [1, 3, 6, 26, 51, 58, 59] {
            assert_eq!(opt(&r, code), None, "option {code} in a NAK");
        }
        // Renewing a wrong ciaddr, and a request naming no address at all.
        assert_eq!(
            opt(
                &one_reply(&send(&mut s, &client_msg(3, [10, 1, 1, 98], &[]))),
                53
            ),
            Some(&[6][..])
        );
        assert_eq!(
            opt(&one_reply(&send(&mut s, &client_msg(3, [0; 4], &[]))), 53),
            Some(&[6][..])
        );
        assert_eq!(s.stats().served(Served::DhcpNak), 3);
        assert_eq!(s.lease_state(VIF), None);
    }

    #[test]
    fn request_for_another_server_is_ignored() {
        let mut s = services();
        let m = client_msg(3, [0; 4], &[(50, &VM_IP), (54, &[10, 1, 1, 254])]);
        assert!(send(&mut s, &m).is_empty());
        assert_eq!(s.stats().ignored(Ignored::OtherServer), 1);
    }

    #[test]
    fn release_and_decline_are_taken_without_a_reply() {
        let mut s = services();
        assert!(send(&mut s, &client_msg(7, VM_IP, &[(54, &GW)])).is_empty());
        assert_eq!(s.lease_state(VIF), Some(LeaseState::Released));
        assert!(send(&mut s, &client_msg(4, [0; 4], &[(50, &VM_IP), (54, &GW)])).is_empty());
        assert_eq!(s.lease_state(VIF), Some(LeaseState::Declined));
        assert!(send(&mut s, &client_msg(7, VM_IP, &[(54, &[1, 2, 3, 4])])).is_empty());
        let st = s.stats();
        assert_eq!(st.served(Served::DhcpRelease), 1);
        assert_eq!(st.served(Served::DhcpDecline), 1);
        assert_eq!(st.ignored(Ignored::OtherServer), 1);
    }

    #[test]
    fn inform_gets_an_ack_without_a_lease() {
        let mut s = services();
        let r = one_reply(&send(&mut s, &client_msg(8, VM_IP, &[])));
        assert_eq!(opt(&r, 53), Some(&[5][..]));
        assert_eq!(r.yiaddr, [0; 4]);
        assert_eq!(r.ciaddr, VM_IP);
        assert_eq!((r.eth_dst, r.ip_dst), (VM_MAC, VM_IP));
        assert_config(&r);
        for code in [51, 58, 59] {
            assert_eq!(opt(&r, code), None, "option {code} in an INFORM ACK");
        }
        assert_eq!(s.stats().served(Served::DhcpInformAck), 1);
    }

    #[test]
    fn strangers_get_nothing_and_are_counted() {
        let mut s = services();
        let m = client_msg(1, [0; 4], &[]);
        // Unknown vif.
        let f = vm_frame(&m);
        assert!(s
            .handle(&trap(TrapReason::L3Protocols, 9, VRF, 0, &f))
            .is_empty());
        // Another chaddr.
        let mut other = m.clone();
        other[28 + 5] = 0x99;
        assert!(send(&mut s, &other).is_empty());
        // Right chaddr, another source MAC.
        let mut f2 = f.clone();
        f2[11] = 0x99;
        assert!(s
            .handle(&trap(TrapReason::L3Protocols, VIF, VRF, 0, &f2))
            .is_empty());
        // Relayed.
        let mut relayed = m.clone();
        relayed[24..28].copy_from_slice(&[10, 9, 0, 1]);
        assert!(send(&mut s, &relayed).is_empty());
        // A BOOTREPLY (an OFFER) from the client: not for a server.
        let mut offer = client_msg(2, [0; 4], &[]);
        offer[0] = 2;
        assert!(send(&mut s, &offer).is_empty());
        // Bad magic, truncated, no message type.
        let mut bad = m.clone();
        bad[236] = 0;
        assert!(send(&mut s, &bad).is_empty());
        assert!(send(&mut s, &m[..200]).is_empty());
        let mut untyped = m.clone();
        untyped[240] = 0; // the message type option becomes a pad
        untyped[241] = 0;
        untyped[242] = 0;
        assert!(send(&mut s, &untyped).is_empty());
        // A fragment.
        let mut frag = f.clone();
        patch_ipv4(&mut frag, |h| h.more_fragments = true);
        assert!(s
            .handle(&trap(TrapReason::L3Protocols, VIF, VRF, 0, &frag))
            .is_empty());

        let st = s.stats();
        assert_eq!(st.ignored(Ignored::UnknownVif), 1);
        assert_eq!(st.ignored(Ignored::UnknownMac), 2);
        assert_eq!(st.ignored(Ignored::Relayed), 1);
        assert_eq!(st.ignored(Ignored::UnsupportedDhcp), 1);
        assert_eq!(st.ignored(Ignored::Malformed), 3);
        assert_eq!(st.ignored(Ignored::Fragment), 1);
        assert!(Served::ALL.iter().all(|k| st.served(*k) == 0));
        assert_eq!(s.lease_state(VIF), None);
    }

    #[test]
    fn optional_options_follow_the_config() {
        let mut s = PacketServices::new();
        let i = ServedInterface {
            lease_secs: u32::MAX,
            ..ServedInterface::new(
                VIF,
                VRF,
                MacAddr(VM_MAC),
                Ipv4Addr::from(VM_IP),
                16,
                Ipv4Addr::from(GW),
            )
        };
        s.add_interface(i).expect("valid");
        let r = one_reply(&send(&mut s, &client_msg(1, [0; 4], &[])));
        assert_eq!(opt(&r, 1), Some(&[255, 255, 0, 0][..]));
        assert_eq!(opt(&r, 51), Some(&[0xff; 4][..]), "infinite lease");
        for code in [6, 12, 15, 26, 58, 59] {
            assert_eq!(opt(&r, code), None, "option {code}");
        }
    }

    #[test]
    fn renewal_under_receive_is_served_too() {
        // A unicast renewal to the gateway may reach us as a Receive trap.
        let mut s = services();
        let f = vm_frame(&client_msg(3, VM_IP, &[]));
        let out = s.handle(&trap(TrapReason::Receive, VIF, VRF, 0, &f));
        assert_eq!(opt(&one_reply(&out), 53), Some(&[5][..]));
    }
}
