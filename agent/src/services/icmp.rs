//! ICMP the agent originates: echo replies from the VN gateway (RFC 792), time exceeded for
//! packets whose TTL expires in the vRouter (RFC 792, what makes traceroute show the gateway), and
//! fragmentation needed with the next-hop MTU (RFC 1191) for packets too big for the tunnel.
//!
//! Errors quote the offending IP header and the first 8 bytes of its payload (RFC 792); when to
//! stay silent (RFC 1122 §3.2.2) is decided by `PacketServices::may_send_error`.

use smoltcp::wire::{Icmpv4Packet, IpProtocol};

use super::{Answer, Ignored, Ipv4Frame, Origin, Served};

/// ICMP types we use or look at.
mod ty {
    pub const ECHO_REPLY: u8 = 0;
    pub const DST_UNREACHABLE: u8 = 3;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
}

/// Destination unreachable code 4: fragmentation needed and DF set.
const CODE_FRAG_NEEDED: u8 = 4;
/// Time exceeded code 0: TTL exceeded in transit.
const CODE_TTL_EXCEEDED: u8 = 0;
/// Payload bytes quoted after the IP header.
const QUOTE_PAYLOAD: usize = 8;

/// Whether the ICMP message starting at `icmp` is a query (echo, router discovery, timestamp,
/// information, address mask), about which errors may be sent. Anything else, unknown types and
/// a message too short to have a type included, counts as an error message.
pub(crate) fn is_query(icmp: &[u8]) -> bool {
    matches!(icmp.first(), Some(0 | 8 | 9 | 10 | 13..=18))
}

/// Whether `pkt` is an ICMP echo request.
pub(crate) fn is_echo_request(pkt: &Ipv4Frame<'_>) -> bool {
    pkt.ip.next_header() == IpProtocol::Icmp && pkt.ip.payload().first() == Some(&ty::ECHO_REQUEST)
}

/// The echo reply to an echo request `pkt` addressed to a gateway: same identifier, sequence
/// number and data, from the address that was pinged.
pub(crate) fn echo_reply(origin: &Origin, pkt: &Ipv4Frame<'_>) -> Result<Answer, Ignored> {
    if !is_echo_request(pkt) {
        return Err(Ignored::UnsupportedProtocol);
    }
    if pkt.is_fragment() {
        return Err(Ignored::Fragment);
    }
    let src = pkt.ip.src_addr();
    if src.is_unspecified() || src.is_broadcast() || src.is_multicast() {
        return Err(Ignored::BadSource);
    }
    let msg = pkt.ip.payload();
    let icmp = Icmpv4Packet::new_checked(msg).map_err(|_| Ignored::Malformed)?;
    if !icmp.verify_checksum() {
        return Err(Ignored::BadChecksum);
    }
    let rest = &msg[4..];
    let frame = origin.icmp(ty::ECHO_REPLY, 0, msg.len(), |out| {
        out.copy_from_slice(rest)
    });
    Ok(Answer {
        served: Served::EchoReply,
        frame: Some(frame),
    })
}

/// Time exceeded in transit (type 11 code 0) about `pkt`.
pub(crate) fn time_exceeded(origin: &Origin, pkt: &Ipv4Frame<'_>) -> Result<Answer, Ignored> {
    Ok(Answer {
        served: Served::TimeExceeded,
        frame: Some(error(
            origin,
            ty::TIME_EXCEEDED,
            CODE_TTL_EXCEEDED,
            [0; 4],
            pkt,
        )),
    })
}

/// Fragmentation needed and DF set (type 3 code 4) about `pkt`, with the next-hop MTU in the
/// low half of the second word (RFC 1191 §4).
pub(crate) fn frag_needed(
    origin: &Origin,
    pkt: &Ipv4Frame<'_>,
    mtu: u16,
) -> Result<Answer, Ignored> {
    let [hi, lo] = mtu.to_be_bytes();
    Ok(Answer {
        served: Served::FragNeeded,
        frame: Some(error(
            origin,
            ty::DST_UNREACHABLE,
            CODE_FRAG_NEEDED,
            [0, 0, hi, lo],
            pkt,
        )),
    })
}

/// An ICMP error: type, code, the second word, then the IP header + 8 bytes of `pkt`.
fn error(origin: &Origin, msg_type: u8, code: u8, word: [u8; 4], pkt: &Ipv4Frame<'_>) -> Vec<u8> {
    let quote_len = usize::from(pkt.ip.header_len()) + QUOTE_PAYLOAD;
    let quote = &pkt.raw_ip[..quote_len.min(pkt.raw_ip.len())];
    origin.icmp(msg_type, code, 8 + quote.len(), |out| {
        out[..4].copy_from_slice(&word);
        out[4..].copy_from_slice(quote);
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::super::testutil::*;
    use super::super::{PacketServices, VrfGateway};
    use super::*;
    use etherparse::{Icmpv4Type, NetHeaders, PacketBuilder, TransportHeader};
    use vrouter_dataplane::trap::{AgentCmd, AgentHeader, TrapReason};
    use vrouter_dataplane::wire::ethernet::MacAddr;

    const FAR: [u8; 4] = [10, 9, 9, 9];
    const FABRIC_VIF: u16 = 0;

    /// The one injected frame, checked: its header, and the ICMP message read by etherparse
    /// with the IP source and destination.
    fn one_icmp(out: &[Vec<u8>]) -> (AgentHeader, [u8; 6], [u8; 4], [u8; 4], Icmpv4Type, Vec<u8>) {
        assert_eq!(out.len(), 1, "exactly one frame");
        let (h, eth) = split(&out[0]);
        let p = checked(eth);
        let Some(etherparse::LinkHeader::Ethernet2(e)) = &p.link else {
            panic!("ethernet")
        };
        assert_eq!(e.source, MacAddr::VROUTER.0);
        let Some(NetHeaders::Ipv4(ip, _)) = &p.net else {
            panic!("ipv4")
        };
        let Some(TransportHeader::Icmpv4(i)) = &p.transport else {
            panic!("icmp")
        };
        (
            h,
            e.destination,
            ip.source,
            ip.destination,
            i.icmp_type.clone(),
            p.payload.slice().to_vec(),
        )
    }

    fn udp_out(ttl: u8, payload_len: usize) -> Vec<u8> {
        let data: Vec<u8> = (0..payload_len).map(|i| i as u8).collect();
        udp_frame(
            VM_MAC,
            MacAddr::VROUTER.0,
            VM_IP,
            FAR,
            ttl,
            40000,
            33434,
            &data,
        )
    }

    #[test]
    fn ping_to_the_gateway_is_answered() {
        let mut s = services();
        let f = echo_frame(VM_IP, GW, 64, 0x1234, 7, b"0123456789abcdef");
        let (h, dmac, src, dst, t, data) =
            one_icmp(&s.handle(&trap(TrapReason::Receive, VIF, VRF, 0, &f)));
        assert_eq!((h.cmd, h.vif), (AgentCmd::TxVif, VIF));
        assert_eq!(dmac, VM_MAC);
        assert_eq!((src, dst), (GW, VM_IP));
        let Icmpv4Type::EchoReply(e) = t else {
            panic!("{t:?}")
        };
        assert_eq!((e.id, e.seq), (0x1234, 7));
        assert_eq!(data, b"0123456789abcdef");
        assert_eq!(s.stats().served(Served::EchoReply), 1);
    }

    #[test]
    fn ping_from_elsewhere_is_routed_back_in_the_vrf() {
        let mut s = services();
        let f = echo_frame(FAR, GW, 60, 1, 2, b"x");
        let (h, _, src, dst, t, _) =
            one_icmp(&s.handle(&trap(TrapReason::Receive, FABRIC_VIF, VRF, 0, &f)));
        assert_eq!((h.cmd, h.vrf), (AgentCmd::RouteInVrf, VRF));
        assert_eq!((src, dst), (GW, FAR));
        assert!(matches!(t, Icmpv4Type::EchoReply(_)));
        // A configured VRF gateway answers too.
        s.set_vrf_gateways(
            VRF,
            vec![VrfGateway {
                addr: Ipv4Addr::new(10, 2, 0, 1),
                prefix_len: 16,
            }],
        )
        .expect("valid");
        let f = echo_frame(FAR, [10, 2, 0, 1], 60, 1, 2, b"x");
        let (_, _, src, ..) =
            one_icmp(&s.handle(&trap(TrapReason::Receive, FABRIC_VIF, VRF, 0, &f)));
        assert_eq!(src, [10, 2, 0, 1]);
    }

    #[test]
    fn only_good_echo_requests_to_a_gateway_are_answered() {
        let mut s = services();
        // Not a gateway (another VRF's gateway is not ours either).
        let f = echo_frame(VM_IP, [10, 1, 1, 9], 64, 1, 1, b"x");
        assert!(s
            .handle(&trap(TrapReason::Receive, VIF, VRF, 0, &f))
            .is_empty());
        let f = echo_frame(VM_IP, GW, 64, 1, 1, b"x");
        assert!(s
            .handle(&trap(TrapReason::Receive, VIF, VRF + 1, 0, &f))
            .is_empty());
        // Bad ICMP checksum.
        let mut bad = echo_frame(VM_IP, GW, 64, 1, 1, b"x");
        let n = bad.len();
        bad[n - 1] ^= 0xff;
        assert!(s
            .handle(&trap(TrapReason::Receive, VIF, VRF, 0, &bad))
            .is_empty());
        // An echo reply to the gateway.
        let b = PacketBuilder::ethernet2(VM_MAC, MacAddr::VROUTER.0)
            .ipv4(VM_IP, GW, 64)
            .icmpv4_echo_reply(1, 1);
        let mut reply = Vec::new();
        b.write(&mut reply, b"x").expect("write");
        assert!(s
            .handle(&trap(TrapReason::Receive, VIF, VRF, 0, &reply))
            .is_empty());
        // A fragment of a big ping.
        let mut frag = echo_frame(VM_IP, GW, 64, 1, 1, b"x");
        patch_ipv4(&mut frag, |h| h.more_fragments = true);
        assert!(s
            .handle(&trap(TrapReason::Receive, VIF, VRF, 0, &frag))
            .is_empty());
        // From 0.0.0.0.
        let f = echo_frame([0; 4], GW, 64, 1, 1, b"x");
        assert!(s
            .handle(&trap(TrapReason::Receive, VIF, VRF, 0, &f))
            .is_empty());

        let st = s.stats();
        assert_eq!(st.ignored(Ignored::NotForGateway), 2);
        assert_eq!(st.ignored(Ignored::BadChecksum), 1);
        assert_eq!(st.ignored(Ignored::UnsupportedProtocol), 1);
        assert_eq!(st.ignored(Ignored::Fragment), 1);
        assert_eq!(st.ignored(Ignored::BadSource), 1);
        assert_eq!(st.served(Served::EchoReply), 0);
    }

    #[test]
    fn expired_ttl_gets_time_exceeded_quoting_header_and_8_bytes() {
        let mut s = services();
        let f = udp_out(1, 100);
        let (h, dmac, src, dst, t, quote) =
            one_icmp(&s.handle(&trap(TrapReason::ZeroTtl, VIF, VRF, 0, &f)));
        assert_eq!((h.cmd, h.vif), (AgentCmd::TxVif, VIF));
        assert_eq!(dmac, VM_MAC);
        assert_eq!((src, dst), (GW, VM_IP));
        assert_eq!(
            t,
            Icmpv4Type::TimeExceeded(etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit)
        );
        assert_eq!(quote, &f[14..14 + 20 + 8], "IP header + 8 bytes");
        assert_eq!(s.stats().served(Served::TimeExceeded), 1);
    }

    #[test]
    fn the_quote_keeps_ip_options_and_short_packets_whole() {
        let mut s = services();
        // 4 bytes of options (NOP NOP NOP EOL): IHL 6.
        let plain = udp_out(1, 20);
        let mut f = plain[..34].to_vec();
        f.extend_from_slice(&[1, 1, 1, 0]);
        f.extend_from_slice(&plain[34..]);
        f[14] = 0x46;
        let total = u16::from_be_bytes([f[16], f[17]]) + 4;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        patch_ipv4(&mut f, |_| {});
        let (.., quote) = one_icmp(&s.handle(&trap(TrapReason::ZeroTtl, VIF, VRF, 0, &f)));
        assert_eq!(quote, &f[14..14 + 24 + 8]);
        // Fewer than 8 payload bytes: all of it.
        let f = udp_out(1, 0);
        let (.., quote) = one_icmp(&s.handle(&trap(TrapReason::ZeroTtl, VIF, VRF, 0, &f)));
        assert_eq!(quote, &f[14..]);
    }

    #[test]
    fn traceroute_from_the_fabric_is_answered_from_the_vrf_gateway_of_the_sender() {
        let mut s = services();
        s.set_vrf_gateways(
            VRF,
            vec![
                VrfGateway {
                    addr: Ipv4Addr::new(10, 5, 0, 1),
                    prefix_len: 16,
                },
                VrfGateway {
                    addr: Ipv4Addr::new(10, 9, 0, 1),
                    prefix_len: 16,
                },
            ],
        )
        .expect("valid");
        let f = udp_frame(
            MacAddr::VROUTER.0,
            MacAddr::VROUTER.0,
            FAR,
            VM_IP,
            1,
            1,
            2,
            b"12345678",
        );
        let (h, _, src, dst, ..) =
            one_icmp(&s.handle(&trap(TrapReason::ZeroTtl, FABRIC_VIF, VRF, 0, &f)));
        assert_eq!((h.cmd, h.vrf), (AgentCmd::RouteInVrf, VRF));
        assert_eq!((src, dst), ([10, 9, 0, 1], FAR));
        // A sender in no gateway's subnet: the first gateway.
        let f = udp_frame(
            MacAddr::VROUTER.0,
            MacAddr::VROUTER.0,
            [192, 0, 2, 1],
            VM_IP,
            1,
            1,
            2,
            b"1",
        );
        let (_, _, src, ..) =
            one_icmp(&s.handle(&trap(TrapReason::ZeroTtl, FABRIC_VIF, VRF, 0, &f)));
        assert_eq!(src, [10, 5, 0, 1]);
        // A VRF we know no gateway of.
        assert!(s
            .handle(&trap(TrapReason::ZeroTtl, FABRIC_VIF, VRF + 7, 0, &f))
            .is_empty());
        assert_eq!(s.stats().ignored(Ignored::NoGateway), 1);
    }

    #[test]
    fn ttl_1_ping_to_the_gateway_is_answered_not_expired() {
        let mut s = services();
        let f = echo_frame(VM_IP, GW, 1, 9, 9, b"x");
        let (.., t, _) = one_icmp(&s.handle(&trap(TrapReason::ZeroTtl, VIF, VRF, 0, &f)));
        assert!(matches!(t, Icmpv4Type::EchoReply(_)));
        // ICMP traceroute (echo requests with a small TTL) past the gateway gets time exceeded.
        let f = echo_frame(VM_IP, FAR, 1, 9, 9, b"x");
        let (.., t, quote) = one_icmp(&s.handle(&trap(TrapReason::ZeroTtl, VIF, VRF, 0, &f)));
        assert!(matches!(t, Icmpv4Type::TimeExceeded(_)));
        assert_eq!(quote, &f[14..14 + 28]);
    }

    #[test]
    fn too_big_with_df_gets_frag_needed_with_the_mtu() {
        let mut s = services();
        let mut f = udp_out(63, 1500);
        patch_ipv4(&mut f, |h| h.dont_fragment = true);
        let (h, dmac, src, dst, t, quote) =
            one_icmp(&s.handle(&trap(TrapReason::HandleDf, VIF, VRF, 1400, &f)));
        assert_eq!((h.cmd, h.vif), (AgentCmd::TxVif, VIF));
        assert_eq!(dmac, VM_MAC);
        assert_eq!((src, dst), (GW, VM_IP));
        assert_eq!(
            t,
            Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                    next_hop_mtu: 1400
                }
            )
        );
        assert_eq!(quote, &f[14..14 + 28]);
        // Raw bytes: type 3, code 4, unused 0, MTU.
        let out = s.handle(&trap(TrapReason::HandleDf, VIF, VRF, 1400, &f));
        let (_, eth) = split(&out[0]);
        assert_eq!(&eth[34..36], &[3, 4]);
        assert_eq!(&eth[38..42], &[0, 0, 0x05, 0x78]);

        // Without DF, with no or an impossible MTU: nothing.
        let mut plain = udp_out(63, 1500);
        patch_ipv4(&mut plain, |h| h.dont_fragment = false);
        assert!(s
            .handle(&trap(TrapReason::HandleDf, VIF, VRF, 1400, &plain))
            .is_empty());
        assert!(s
            .handle(&trap(TrapReason::HandleDf, VIF, VRF, 0, &f))
            .is_empty());
        assert!(s
            .handle(&trap(TrapReason::HandleDf, VIF, VRF, 70_000, &f))
            .is_empty());
        let st = s.stats();
        assert_eq!(st.served(Served::FragNeeded), 2);
        assert_eq!(st.ignored(Ignored::DfNotSet), 1);
        assert_eq!(st.ignored(Ignored::BadMtu), 2);
    }

    /// RFC 1122 §3.2.2: the packets no ICMP error may be sent about.
    #[test]
    fn no_errors_about_errors_broadcasts_fragments_or_odd_sources() {
        let mut s = services();
        let icmp_err = |t: Icmpv4Type| {
            let b = PacketBuilder::ethernet2(VM_MAC, MacAddr::VROUTER.0)
                .ipv4(VM_IP, FAR, 1)
                .icmpv4(t);
            let mut v = Vec::new();
            b.write(&mut v, &[0x45; 28]).expect("write");
            v
        };
        let silent: Vec<(&str, Vec<u8>, Ignored)> = vec![
            (
                "time exceeded",
                icmp_err(Icmpv4Type::TimeExceeded(
                    etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit,
                )),
                Ignored::IcmpError,
            ),
            (
                "unreachable",
                icmp_err(Icmpv4Type::DestinationUnreachable(
                    etherparse::icmpv4::DestUnreachableHeader::Port,
                )),
                Ignored::IcmpError,
            ),
            (
                "unknown icmp type",
                icmp_err(Icmpv4Type::Unknown {
                    type_u8: 42,
                    code_u8: 0,
                    bytes5to8: [0; 4],
                }),
                Ignored::IcmpError,
            ),
            (
                "non-first fragment",
                {
                    let mut f = udp_out(1, 16);
                    patch_ipv4(&mut f, |h| {
                        h.fragment_offset = etherparse::IpFragOffset::try_new(185).expect("offset")
                    });
                    f
                },
                Ignored::Fragment,
            ),
            (
                "link broadcast",
                udp_frame(VM_MAC, [0xff; 6], VM_IP, FAR, 1, 1, 2, b"x"),
                Ignored::Broadcast,
            ),
            (
                "link multicast",
                udp_frame(VM_MAC, [0x01, 0, 0x5e, 0, 0, 5], VM_IP, FAR, 1, 1, 2, b"x"),
                Ignored::Broadcast,
            ),
            (
                "limited broadcast",
                udp_frame(VM_MAC, MacAddr::VROUTER.0, VM_IP, [255; 4], 1, 1, 2, b"x"),
                Ignored::Broadcast,
            ),
            (
                "subnet broadcast",
                udp_frame(
                    VM_MAC,
                    MacAddr::VROUTER.0,
                    VM_IP,
                    [10, 1, 1, 255],
                    1,
                    1,
                    2,
                    b"x",
                ),
                Ignored::Broadcast,
            ),
            (
                "multicast",
                udp_frame(
                    VM_MAC,
                    MacAddr::VROUTER.0,
                    VM_IP,
                    [224, 0, 0, 5],
                    1,
                    1,
                    2,
                    b"x",
                ),
                Ignored::Broadcast,
            ),
            (
                "from 0.0.0.0",
                udp_frame(VM_MAC, MacAddr::VROUTER.0, [0; 4], FAR, 1, 1, 2, b"x"),
                Ignored::BadSource,
            ),
            (
                "from loopback",
                udp_frame(
                    VM_MAC,
                    MacAddr::VROUTER.0,
                    [127, 0, 0, 1],
                    FAR,
                    1,
                    1,
                    2,
                    b"x",
                ),
                Ignored::BadSource,
            ),
            (
                "from class E",
                udp_frame(
                    VM_MAC,
                    MacAddr::VROUTER.0,
                    [240, 0, 0, 1],
                    FAR,
                    1,
                    1,
                    2,
                    b"x",
                ),
                Ignored::BadSource,
            ),
            (
                "from a subnet broadcast",
                udp_frame(
                    VM_MAC,
                    MacAddr::VROUTER.0,
                    [10, 1, 1, 255],
                    FAR,
                    1,
                    1,
                    2,
                    b"x",
                ),
                Ignored::BadSource,
            ),
        ];
        for (what, frame, why) in silent {
            let before = s.stats().ignored(why);
            for reason in [TrapReason::ZeroTtl, TrapReason::HandleDf] {
                let mut f = frame.clone();
                patch_ipv4(&mut f, |h| h.dont_fragment = true);
                assert!(
                    s.handle(&trap(reason, VIF, VRF, 1400, &f)).is_empty(),
                    "{what}: {reason:?} answered"
                );
            }
            assert_eq!(s.stats().ignored(why), before + 2, "{what}");
        }
        // A first fragment and an ICMP query may get errors.
        let mut first = udp_out(1, 16);
        patch_ipv4(&mut first, |h| h.more_fragments = true);
        assert_eq!(
            s.handle(&trap(TrapReason::ZeroTtl, VIF, VRF, 0, &first))
                .len(),
            1
        );
        assert!(is_query(&[8]) && is_query(&[0]) && is_query(&[13]));
        assert!(!is_query(&[3]) && !is_query(&[11]) && !is_query(&[5]) && !is_query(&[]));
        let _ = PacketServices::new();
    }
}
