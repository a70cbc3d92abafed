//! Packet services for VMs: the DHCP server and ICMP (echo to the gateway, time exceeded,
//! fragmentation needed), as one I/O-free core.
//!
//! The dataplane traps packets to the agent with an [`AgentHeader`] in front (see
//! `vrouter_dataplane::trap`). [`PacketServices::handle`] takes one trapped frame and returns the
//! frames to inject back, each with its own agent header: `TxVif` (send this Ethernet frame out
//! of that interface) for answers to a VM we serve, `RouteInVrf` (route this IPv4 packet in that
//! VRF) for answers to anyone else. Nothing here reads a clock, a socket or a file; the daemon owns
//! the I/O, the tests feed bytes (quinn's `quinn-proto` split).
//!
//! | trap reason     | packet                        | answer                                   |
//! |-----------------|-------------------------------|------------------------------------------|
//! | `L3Protocols`   | UDP to port 67 (DHCP)         | OFFER / ACK / NAK ([`dhcp`])             |
//! | `Receive`       | ICMP echo to a gateway        | echo reply from the gateway ([`icmp`])   |
//! | `ZeroTtl`       | anything whose TTL expires    | time exceeded, type 11 code 0            |
//! | `HandleDf`      | too big, DF set, param = MTU  | frag needed, type 3 code 4, next-hop MTU |
//!
//! Addresses are bound statically, as in Contrail: an interface is only ever offered its own
//! configured address; there is no pool. Everything that is not answered is counted by reason
//! ([`Ignored`]), everything that is answered by kind ([`Served`]).
//!
//! Wire formats are smoltcp's (`smoltcp::wire`): packets are checked once with `new_checked`, then
//! read through accessors that cannot panic.

pub mod dhcp;
pub mod dns;
pub mod dns_cache;
pub mod dns_upstream;
pub mod dns_zone;
pub mod icmp;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr,
    UdpPacket, ETHERNET_HEADER_LEN, IPV4_HEADER_LEN, UDP_HEADER_LEN,
};
use vrouter_dataplane::trap::{AgentCmd, AgentHeader, TrapReason, AGENT_HEADER_LEN};
use vrouter_dataplane::wire::ethernet::MacAddr;

pub use dhcp::LeaseState;
use dns::DnsService;
pub use dns::DnsSettings;

/// The frame carrying DNS message `bytes` from the gateway's port 53 back to the VM.
fn dns_frame(to: &DnsReply, bytes: &[u8]) -> Vec<u8> {
    to.origin
        .udp(DNS_PORT, to.port, bytes.len(), |b| b.copy_from_slice(bytes))
}

/// TTL of the packets we originate.
pub const REPLY_TTL: u8 = 64;

/// Default DHCP lease: one day.
pub const DEFAULT_LEASE_SECS: u32 = 86_400;

/// One VM interface the services answer for: what DHCP hands out and where ICMP comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedInterface {
    /// Dataplane interface id (the `vif` of trapped packets).
    pub vif: u16,
    /// VRF of the interface.
    pub vrf: u16,
    /// The VM's MAC; DHCP from any other `chaddr` or source MAC is ignored.
    pub mac: MacAddr,
    /// The VM's address: the only one ever offered.
    pub ip: Ipv4Addr,
    /// Prefix length of the VM's subnet (subnet mask option).
    pub prefix_len: u8,
    /// The VN gateway: router option, DHCP server identifier, source of ICMP we originate.
    pub gateway: Ipv4Addr,
    /// DNS servers (option 6), at most [`MAX_DNS_SERVERS`]; none means the option is left out.
    pub dns: Vec<Ipv4Addr>,
    /// Interface MTU (option 26); `None` leaves it out.
    pub mtu: Option<u16>,
    /// Lease time in seconds (option 51); `u32::MAX` is infinite (and then no T1/T2 are sent).
    pub lease_secs: u32,
    /// Host name (option 12).
    pub hostname: Option<String>,
    /// Domain name (option 15).
    pub domain: Option<String>,
}

/// Most DNS servers one DHCP reply carries (smoltcp's `DHCP_MAX_DNS_SERVER_COUNT`).
pub const MAX_DNS_SERVERS: usize = smoltcp::wire::DHCP_MAX_DNS_SERVER_COUNT;

impl ServedInterface {
    /// An interface with no DNS, no MTU option and the default lease.
    pub fn new(
        vif: u16,
        vrf: u16,
        mac: MacAddr,
        ip: Ipv4Addr,
        prefix_len: u8,
        gateway: Ipv4Addr,
    ) -> Self {
        Self {
            vif,
            vrf,
            mac,
            ip,
            prefix_len,
            gateway,
            dns: Vec::new(),
            mtu: None,
            lease_secs: DEFAULT_LEASE_SECS,
            hostname: None,
            domain: None,
        }
    }

    /// The subnet mask for `prefix_len`.
    pub fn netmask(&self) -> Ipv4Addr {
        netmask(self.prefix_len)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.prefix_len > 32 {
            return Err(ConfigError::PrefixLen(self.prefix_len));
        }
        if self.ip.is_unspecified() || self.gateway.is_unspecified() {
            return Err(ConfigError::Unspecified);
        }
        if self.dns.len() > MAX_DNS_SERVERS {
            return Err(ConfigError::TooManyDns(self.dns.len()));
        }
        if let Some(mtu) = self.mtu {
            if mtu < 68 {
                return Err(ConfigError::Mtu(mtu));
            }
        }
        for (what, name) in [("hostname", &self.hostname), ("domain", &self.domain)] {
            if name.as_ref().is_some_and(|n| n.is_empty() || n.len() > 255) {
                return Err(ConfigError::Name(what));
            }
        }
        Ok(())
    }
}

/// A gateway address of a VRF with the prefix length of its subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VrfGateway {
    /// The gateway address (answers pings, sources ICMP errors).
    pub addr: Ipv4Addr,
    /// Prefix length of the subnet it is the gateway of.
    pub prefix_len: u8,
}

/// A configuration the services refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Prefix longer than 32.
    #[error("prefix length {0} is longer than 32")]
    PrefixLen(u8),
    /// 0.0.0.0 as the VM address or the gateway.
    #[error("the interface address and the gateway must be set")]
    Unspecified,
    /// More DNS servers than one reply carries.
    #[error("{0} DNS servers; at most {MAX_DNS_SERVERS} are supported")]
    TooManyDns(usize),
    /// MTU below the IPv4 minimum of 68.
    #[error("MTU {0} is below the IPv4 minimum of 68")]
    Mtu(u16),
    /// Empty or longer than a DHCP option holds (255 bytes).
    #[error("{0} must be 1 to 255 bytes")]
    Name(&'static str),
}

macro_rules! counter_enum {
    ($(#[$m:meta])* $name:ident { $($(#[doc = $doc:literal])* $v:ident => $n:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[doc = $doc])* $v,)*
        }

        impl $name {
            /// Every value, in counter order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];

            /// Counter name (snake case, for metrics and `--json`).
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$v => $n,)*
                }
            }
        }
    };
}

counter_enum! {
    /// What the services answered (or absorbed without an answer: RELEASE, DECLINE).
    Served {
        /// DHCPOFFER sent for a DISCOVER.
        DhcpOffer => "dhcp_offer",
        /// DHCPACK sent for a REQUEST.
        DhcpAck => "dhcp_ack",
        /// DHCPNAK sent for a REQUEST of another address.
        DhcpNak => "dhcp_nak",
        /// DHCPACK sent for an INFORM.
        DhcpInformAck => "dhcp_inform_ack",
        /// DHCPRELEASE taken.
        DhcpRelease => "dhcp_release",
        /// DHCPDECLINE taken (the VM saw its address in use).
        DhcpDecline => "dhcp_decline",
        /// ICMP echo reply from a gateway.
        EchoReply => "icmp_echo_reply",
        /// ICMP time exceeded (TTL expired in transit).
        TimeExceeded => "icmp_time_exceeded",
        /// ICMP destination unreachable, fragmentation needed.
        FragNeeded => "icmp_frag_needed",
        /// DNS answer from the network's own names.
        DnsLocal => "dns_local",
        /// DNS answer from the forwarder's cache.
        DnsCached => "dns_cached",
        /// DNS query forwarded to the host's resolvers.
        DnsForward => "dns_forward",
        /// DNS answer of an upstream resolver relayed to the VM.
        DnsRelayed => "dns_relayed",
        /// DNS error answer (FORMERR, REFUSED, NOTIMP, SERVFAIL).
        DnsError => "dns_error",
    }
}

counter_enum! {
    /// Why a trapped packet got no answer.
    Ignored {
        /// No valid agent header.
        BadHeader => "bad_header",
        /// The header is not a trap (an injection looped back).
        NotTrap => "not_trap",
        /// A trap reason these services do not handle (ARP, flow miss).
        UnsupportedReason => "unsupported_reason",
        /// Not an IPv4 frame.
        NotIpv4 => "not_ipv4",
        /// Truncated or inconsistent headers, or an unparsable DHCP message.
        Malformed => "malformed",
        /// Wrong IPv4 header or ICMP checksum.
        BadChecksum => "bad_checksum",
        /// An IPv4 fragment where a whole packet is needed, or a non-first fragment (RFC 1122).
        Fragment => "fragment",
        /// DHCP from an interface we do not serve.
        UnknownVif => "unknown_vif",
        /// DHCP whose client or source MAC is not the interface's.
        UnknownMac => "unknown_mac",
        /// DHCP through a relay (giaddr set).
        Relayed => "relayed",
        /// A DHCPREQUEST for another server (the client chose someone else).
        OtherServer => "other_server",
        /// A DHCP message type a server does not take (OFFER, ACK, ...).
        UnsupportedDhcp => "unsupported_dhcp",
        /// Addressed to the agent but not to a gateway address.
        NotForGateway => "not_for_gateway",
        /// A protocol or ICMP type to a gateway that is not served (only echo is).
        UnsupportedProtocol => "unsupported_protocol",
        /// No ICMP error about an ICMP error (RFC 1122 3.2.2).
        IcmpError => "icmp_about_icmp_error",
        /// No ICMP error about a link or IP broadcast or multicast (RFC 1122 3.2.2).
        Broadcast => "broadcast",
        /// No ICMP error to a source that is not one host (RFC 1122 3.2.2).
        BadSource => "bad_source",
        /// No gateway address known to send the ICMP error from.
        NoGateway => "no_gateway",
        /// A HandleDf trap without a usable MTU.
        BadMtu => "bad_mtu",
        /// A HandleDf trap for a packet without DF.
        DfNotSet => "df_not_set",
        /// A DNS query from a VM past its rate.
        DnsRateLimited => "dns_rate_limited",
        /// A DNS message to the gateway that is no query (a response, less than a header).
        DnsNotQuery => "dns_not_query",
        /// An upstream DNS reply that matches no forwarded query.
        DnsUnmatched => "dns_unmatched",
    }
}

/// Counters of the services. Reset only by making new services.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceStats {
    /// Frames given to [`PacketServices::handle`].
    pub trapped: u64,
    served: [u64; Served::ALL.len()],
    ignored: [u64; Ignored::ALL.len()],
}

impl ServiceStats {
    /// How many of `kind` were served.
    pub fn served(&self, kind: Served) -> u64 {
        self.served[kind as usize]
    }

    /// How many were ignored for `reason`.
    pub fn ignored(&self, reason: Ignored) -> u64 {
        self.ignored[reason as usize]
    }

    /// Sum over every ignore reason.
    pub fn ignored_total(&self) -> u64 {
        self.ignored.iter().sum()
    }

    /// Every counter as `(name, value)`: `trapped`, then `served_*`, then `ignored_*`.
    pub fn iter(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        std::iter::once(("trapped".to_owned(), self.trapped))
            .chain(
                Served::ALL
                    .iter()
                    .map(|s| (format!("served_{}", s.name()), self.served(*s))),
            )
            .chain(
                Ignored::ALL
                    .iter()
                    .map(|r| (format!("ignored_{}", r.name()), self.ignored(*r))),
            )
    }
}

/// The DHCP server, DNS server and ICMP responder for the VMs of one host. I/O-free: see the
/// module docs.
#[derive(Debug)]
pub struct PacketServices {
    ifaces: BTreeMap<u16, ServedInterface>,
    vrf_gateways: BTreeMap<u16, Vec<VrfGateway>>,
    leases: BTreeMap<u16, LeaseState>,
    stats: ServiceStats,
    dns: DnsService<DnsReply>,
    /// DNS queries to send to the upstream resolvers.
    dns_out: Vec<Vec<u8>>,
    /// The time the caller last gave ([`PacketServices::set_now`]), ms.
    now_ms: u64,
}

impl Default for PacketServices {
    fn default() -> Self {
        Self::with_dns(DnsSettings::default())
    }
}

/// Where a DNS answer goes back to: the VM's address and port, from the gateway it asked.
#[derive(Debug, Clone)]
pub struct DnsReply {
    origin: Origin,
    port: u16,
}

/// DNS server port.
pub const DNS_PORT: u16 = 53;

/// What one handled packet produced.
pub(crate) struct Answer {
    pub(crate) served: Served,
    pub(crate) frame: Option<Vec<u8>>,
}

/// A trapped Ethernet + IPv4 frame, checked: the accessors below cannot panic.
pub(crate) struct Ipv4Frame<'a> {
    pub(crate) eth: EthernetFrame<&'a [u8]>,
    pub(crate) ip: Ipv4Packet<&'a [u8]>,
    /// The IPv4 packet, header and payload, cut at its total length.
    pub(crate) raw_ip: &'a [u8],
}

impl<'a> Ipv4Frame<'a> {
    fn parse(frame: &'a [u8]) -> Result<Self, Ignored> {
        let eth = EthernetFrame::new_checked(frame).map_err(|_| Ignored::Malformed)?;
        if eth.ethertype() != EthernetProtocol::Ipv4 {
            return Err(Ignored::NotIpv4);
        }
        let payload = &frame[ETHERNET_HEADER_LEN..];
        let ip = Ipv4Packet::new_checked(payload).map_err(|_| Ignored::Malformed)?;
        if ip.version() != 4 {
            return Err(Ignored::NotIpv4);
        }
        if usize::from(ip.header_len()) < IPV4_HEADER_LEN {
            return Err(Ignored::Malformed);
        }
        if !ip.verify_checksum() {
            return Err(Ignored::BadChecksum);
        }
        let raw_ip = payload
            .get(..usize::from(ip.total_len()))
            .ok_or(Ignored::Malformed)?;
        Ok(Self { eth, ip, raw_ip })
    }

    pub(crate) fn src_mac(&self) -> MacAddr {
        MacAddr(self.eth.src_addr().0)
    }

    pub(crate) fn is_fragment(&self) -> bool {
        self.ip.more_frags() || self.ip.frag_offset() != 0
    }

    /// The UDP datagram if this is UDP to `port`.
    pub(crate) fn udp_to(&self, port: u16) -> Option<UdpPacket<&'a [u8]>> {
        if self.ip.next_header() != IpProtocol::Udp {
            return None;
        }
        let udp = UdpPacket::new_checked(self.ip.payload()).ok()?;
        (udp.dst_port() == port).then_some(udp)
    }
}

/// Where an originated frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dest {
    /// Out of this interface, as is (`TxVif`).
    Vif(u16),
    /// Routed in this VRF (`RouteInVrf`).
    Vrf(u16),
}

/// An IPv4 frame we originate, before its payload is written.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub(crate) dest: Dest,
    pub(crate) vrf: u16,
    pub(crate) dst_mac: MacAddr,
    pub(crate) src: Ipv4Addr,
    pub(crate) dst: Ipv4Addr,
}

impl Origin {
    /// Agent header + Ethernet + IPv4 (no options, DF, TTL 64) + `payload_len` zero bytes, with
    /// the IP header checksum filled; returns the frame and where the IP payload starts.
    fn frame(&self, proto: IpProtocol, payload_len: usize) -> (Vec<u8>, usize) {
        let ip_at = AGENT_HEADER_LEN + ETHERNET_HEADER_LEN;
        let mut out = vec![0u8; ip_at + IPV4_HEADER_LEN + payload_len];
        let (cmd, vif, vrf) = match self.dest {
            Dest::Vif(v) => (AgentCmd::TxVif, v, self.vrf),
            Dest::Vrf(v) => (AgentCmd::RouteInVrf, 0, v),
        };
        AgentHeader {
            cmd,
            reason: TrapReason::None,
            vif,
            vrf,
            param: 0,
        }
        .emit(&mut out[..AGENT_HEADER_LEN]);
        let mut eth = EthernetFrame::new_unchecked(&mut out[AGENT_HEADER_LEN..]);
        eth.set_dst_addr(EthernetAddress(self.dst_mac.0));
        eth.set_src_addr(EthernetAddress(MacAddr::VROUTER.0));
        eth.set_ethertype(EthernetProtocol::Ipv4);
        let repr = Ipv4Repr {
            src_addr: self.src,
            dst_addr: self.dst,
            next_header: proto,
            payload_len,
            hop_limit: REPLY_TTL,
        };
        repr.emit(
            &mut Ipv4Packet::new_unchecked(&mut out[ip_at..]),
            &ChecksumCapabilities::default(),
        );
        (out, ip_at + IPV4_HEADER_LEN)
    }

    /// A UDP datagram `sport -> dport` whose payload `fill` writes (exactly `len` bytes).
    pub(crate) fn udp(
        &self,
        sport: u16,
        dport: u16,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Vec<u8> {
        let udp_len = UDP_HEADER_LEN + len;
        let (mut out, at) = self.frame(IpProtocol::Udp, udp_len);
        let mut udp = UdpPacket::new_unchecked(&mut out[at..]);
        udp.set_src_port(sport);
        udp.set_dst_port(dport);
        udp.set_len(u16::try_from(udp_len).unwrap_or(u16::MAX));
        fill(udp.payload_mut());
        udp.fill_checksum(&IpAddress::Ipv4(self.src), &IpAddress::Ipv4(self.dst));
        out
    }

    /// An ICMP message: `fill` writes everything after the checksum (from byte 4), then the
    /// checksum is filled.
    pub(crate) fn icmp(
        &self,
        msg_type: u8,
        code: u8,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Vec<u8> {
        let (mut out, at) = self.frame(IpProtocol::Icmp, len);
        let msg = &mut out[at..];
        msg[0] = msg_type;
        msg[1] = code;
        fill(&mut msg[4..]);
        let mut icmp = smoltcp::wire::Icmpv4Packet::new_unchecked(msg);
        icmp.fill_checksum();
        out
    }
}

impl PacketServices {
    /// Services for no interface yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Services for no interface yet, DNS with `settings`.
    pub fn with_dns(settings: DnsSettings) -> Self {
        Self {
            ifaces: BTreeMap::new(),
            vrf_gateways: BTreeMap::new(),
            leases: BTreeMap::new(),
            stats: ServiceStats::default(),
            dns: DnsService::new(settings),
            dns_out: Vec::new(),
            now_ms: 0,
        }
    }

    /// Tells the time (ms on a monotonic clock): DNS caching, rate limits and timeouts use it.
    pub fn set_now(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
    }

    /// Sets (or with `None` removes) the DNS names of the network of `vrf`.
    pub fn set_dns_zone(&mut self, vrf: u16, zone: Option<dns_zone::Zone>) {
        self.dns.set_zone(vrf, zone);
    }

    /// The DNS service.
    pub fn dns(&self) -> &DnsService<DnsReply> {
        &self.dns
    }

    /// The DNS queries to forward to the upstream resolvers since the last call.
    pub fn take_dns_forwards(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.dns_out)
    }

    /// An upstream resolver's reply: the frame that takes it to the VM that asked, if it
    /// matches a forwarded query.
    pub fn dns_upstream_reply(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        match self.dns.upstream_reply(payload, self.now_ms) {
            Some((to, bytes)) => {
                self.stats.served[Served::DnsRelayed as usize] += 1;
                Some(dns_frame(&to, &bytes))
            }
            None => {
                self.stats.ignored[Ignored::DnsUnmatched as usize] += 1;
                None
            }
        }
    }

    /// SERVFAIL frames for the forwarded queries no upstream answered in time.
    pub fn dns_expire(&mut self) -> Vec<Vec<u8>> {
        let late = self.dns.expire(self.now_ms);
        self.stats.served[Served::DnsError as usize] += late.len() as u64;
        late.iter().map(|(to, b)| dns_frame(to, b)).collect()
    }

    /// Serves `iface` (replacing any interface with the same vif).
    pub fn add_interface(&mut self, iface: ServedInterface) -> Result<(), ConfigError> {
        iface.validate()?;
        if self.ifaces.get(&iface.vif).map(|old| (old.mac, old.ip)) != Some((iface.mac, iface.ip)) {
            self.leases.remove(&iface.vif);
        }
        self.ifaces.insert(iface.vif, iface);
        Ok(())
    }

    /// Stops serving `vif`; returns what it was.
    pub fn remove_interface(&mut self, vif: u16) -> Option<ServedInterface> {
        self.leases.remove(&vif);
        self.ifaces.remove(&vif)
    }

    /// The interface served on `vif`.
    pub fn interface(&self, vif: u16) -> Option<&ServedInterface> {
        self.ifaces.get(&vif)
    }

    /// Sets the gateway addresses of `vrf` (replacing the previous ones). The gateways of the
    /// served interfaces of a VRF count as its gateways too.
    pub fn set_vrf_gateways(
        &mut self,
        vrf: u16,
        gateways: Vec<VrfGateway>,
    ) -> Result<(), ConfigError> {
        if let Some(g) = gateways.iter().find(|g| g.prefix_len > 32) {
            return Err(ConfigError::PrefixLen(g.prefix_len));
        }
        if gateways.is_empty() {
            self.vrf_gateways.remove(&vrf);
        } else {
            self.vrf_gateways.insert(vrf, gateways);
        }
        Ok(())
    }

    /// The DHCP state of the VM on `vif`, if it has spoken DHCP since it was added.
    pub fn lease_state(&self, vif: u16) -> Option<LeaseState> {
        self.leases.get(&vif).copied()
    }

    /// The counters.
    pub fn stats(&self) -> &ServiceStats {
        &self.stats
    }

    /// Handles one trapped frame (agent header + Ethernet frame) and returns the frames to
    /// inject, each an agent header (`TxVif` or `RouteInVrf`) + Ethernet frame. Never panics,
    /// whatever the bytes.
    pub fn handle(&mut self, trapped: &[u8]) -> Vec<Vec<u8>> {
        self.stats.trapped += 1;
        match self.dispatch(trapped) {
            Ok(a) => {
                self.stats.served[a.served as usize] += 1;
                a.frame.into_iter().collect()
            }
            Err(reason) => {
                log::debug!("services: ignored trapped packet: {}", reason.name());
                self.stats.ignored[reason as usize] += 1;
                Vec::new()
            }
        }
    }

    fn dispatch(&mut self, trapped: &[u8]) -> Result<Answer, Ignored> {
        let hdr = AgentHeader::parse(trapped).ok_or(Ignored::BadHeader)?;
        if hdr.cmd != AgentCmd::Trap {
            return Err(Ignored::NotTrap);
        }
        let pkt = match hdr.reason {
            TrapReason::L3Protocols
            | TrapReason::Receive
            | TrapReason::ZeroTtl
            | TrapReason::HandleDf => Ipv4Frame::parse(&trapped[AGENT_HEADER_LEN..])?,
            _ => return Err(Ignored::UnsupportedReason),
        };
        match hdr.reason {
            TrapReason::L3Protocols | TrapReason::Receive => {
                if let Some(udp) = pkt.udp_to(smoltcp::wire::DHCP_SERVER_PORT) {
                    if pkt.is_fragment() {
                        return Err(Ignored::Fragment);
                    }
                    let iface = self.ifaces.get(&hdr.vif).ok_or(Ignored::UnknownVif)?;
                    let (answer, state) = dhcp::serve(iface, &pkt, &udp)?;
                    if let Some(s) = state {
                        self.leases.insert(hdr.vif, s);
                    }
                    return Ok(answer);
                }
                if hdr.reason == TrapReason::L3Protocols {
                    return Err(Ignored::UnsupportedProtocol);
                }
                if !self.is_gateway(hdr.vrf, pkt.ip.dst_addr()) {
                    return Err(Ignored::NotForGateway);
                }
                if let Some(udp) = pkt.udp_to(DNS_PORT) {
                    return self.dns_query(&hdr, &pkt, &udp);
                }
                icmp::echo_reply(&self.route_back(&hdr, &pkt), &pkt)
            }
            TrapReason::ZeroTtl => {
                // A ping with TTL 1 to the gateway itself is delivered, not expired.
                if self.is_gateway(hdr.vrf, pkt.ip.dst_addr()) && icmp::is_echo_request(&pkt) {
                    return icmp::echo_reply(&self.route_back(&hdr, &pkt), &pkt);
                }
                self.may_send_error(&hdr, &pkt)?;
                icmp::time_exceeded(&self.error_origin(&hdr, &pkt)?, &pkt)
            }
            TrapReason::HandleDf => {
                self.may_send_error(&hdr, &pkt)?;
                if !pkt.ip.dont_frag() {
                    return Err(Ignored::DfNotSet);
                }
                let mtu = u16::try_from(hdr.param).map_err(|_| Ignored::BadMtu)?;
                if mtu < 68 {
                    return Err(Ignored::BadMtu);
                }
                icmp::frag_needed(&self.error_origin(&hdr, &pkt)?, &pkt, mtu)
            }
            _ => Err(Ignored::UnsupportedReason),
        }
    }

    /// A DNS query to a gateway: answered, forwarded (the query waits in `dns_out`) or dropped.
    fn dns_query(
        &mut self,
        hdr: &AgentHeader,
        pkt: &Ipv4Frame<'_>,
        udp: &UdpPacket<&[u8]>,
    ) -> Result<Answer, Ignored> {
        if pkt.is_fragment() {
            return Err(Ignored::Fragment);
        }
        let (src, dst) = (pkt.ip.src_addr(), pkt.ip.dst_addr());
        if !udp.verify_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst)) {
            return Err(Ignored::BadChecksum);
        }
        let to = DnsReply {
            origin: self.route_back(hdr, pkt),
            port: udp.src_port(),
        };
        let payload = udp.payload();
        match self
            .dns
            .query(hdr.vrf, src, to.clone(), payload, self.now_ms)
        {
            dns::Outcome::Answer(bytes, how) => Ok(Answer {
                served: match how {
                    dns::Answered::Local => Served::DnsLocal,
                    dns::Answered::Cached => Served::DnsCached,
                    dns::Answered::Error(_) => Served::DnsError,
                },
                frame: Some(dns_frame(&to, &bytes)),
            }),
            dns::Outcome::Forward(q) => {
                self.dns_out.push(q);
                Ok(Answer {
                    served: Served::DnsForward,
                    frame: None,
                })
            }
            dns::Outcome::Dropped(dns::Dropped::RateLimited) => Err(Ignored::DnsRateLimited),
            dns::Outcome::Dropped(_) => Err(Ignored::DnsNotQuery),
        }
    }

    /// Whether `addr` is a gateway address of `vrf`.
    fn is_gateway(&self, vrf: u16, addr: Ipv4Addr) -> bool {
        self.gateways(vrf).any(|(g, _)| g == addr)
    }

    /// Every (gateway, prefix length) of `vrf`: configured ones first, then the interfaces'.
    fn gateways(&self, vrf: u16) -> impl Iterator<Item = (Ipv4Addr, u8)> + '_ {
        self.vrf_gateways
            .get(&vrf)
            .into_iter()
            .flatten()
            .map(|g| (g.addr, g.prefix_len))
            .chain(
                self.ifaces
                    .values()
                    .filter(move |i| i.vrf == vrf)
                    .map(|i| (i.gateway, i.prefix_len)),
            )
    }

    /// An answer to the sender of `pkt` from the address it was sent to (echo replies).
    fn route_back(&self, hdr: &AgentHeader, pkt: &Ipv4Frame<'_>) -> Origin {
        self.origin_to_source(hdr, pkt, pkt.ip.dst_addr())
    }

    fn origin_to_source(&self, hdr: &AgentHeader, pkt: &Ipv4Frame<'_>, src: Ipv4Addr) -> Origin {
        // Back out of the VM's own interface when we serve it; otherwise let the dataplane route.
        let (dest, dst_mac) = match self.ifaces.get(&hdr.vif) {
            Some(i) => (Dest::Vif(hdr.vif), i.mac),
            None => (Dest::Vrf(hdr.vrf), MacAddr::VROUTER),
        };
        Origin {
            dest,
            vrf: hdr.vrf,
            dst_mac,
            src,
            dst: pkt.ip.src_addr(),
        }
    }

    /// An ICMP error to the sender of `pkt`, from the gateway the sender sees: its interface's
    /// gateway, else the VRF gateway whose subnet holds the sender, else the VRF's first one.
    fn error_origin(&self, hdr: &AgentHeader, pkt: &Ipv4Frame<'_>) -> Result<Origin, Ignored> {
        let sender = pkt.ip.src_addr();
        let from = match self.ifaces.get(&hdr.vif) {
            Some(i) => i.gateway,
            None => self
                .gateways(hdr.vrf)
                .find(|&(g, plen)| same_subnet(g, sender, plen))
                .or_else(|| self.gateways(hdr.vrf).next())
                .map(|(g, _)| g)
                .ok_or(Ignored::NoGateway)?,
        };
        Ok(self.origin_to_source(hdr, pkt, from))
    }

    /// RFC 1122 3.2.2: no ICMP error about an ICMP error, a non-first fragment, a link or IP
    /// broadcast or multicast, or a source that is not a single host.
    fn may_send_error(&self, hdr: &AgentHeader, pkt: &Ipv4Frame<'_>) -> Result<(), Ignored> {
        if pkt.ip.frag_offset() != 0 {
            return Err(Ignored::Fragment);
        }
        let dst_mac = pkt.eth.dst_addr();
        if dst_mac.is_broadcast() || dst_mac.is_multicast() {
            return Err(Ignored::Broadcast);
        }
        let dst = pkt.ip.dst_addr();
        if dst.is_broadcast() || dst.is_multicast() || self.is_subnet_broadcast(hdr.vrf, dst) {
            return Err(Ignored::Broadcast);
        }
        let src = pkt.ip.src_addr();
        if src.is_unspecified()
            || src.is_loopback()
            || src.is_broadcast()
            || src.is_multicast()
            || src.octets()[0] >= 240
            || self.is_subnet_broadcast(hdr.vrf, src)
        {
            return Err(Ignored::BadSource);
        }
        if pkt.ip.next_header() == IpProtocol::Icmp && !icmp::is_query(pkt.ip.payload()) {
            return Err(Ignored::IcmpError);
        }
        Ok(())
    }

    fn is_subnet_broadcast(&self, vrf: u16, addr: Ipv4Addr) -> bool {
        self.gateways(vrf).any(|(g, plen)| {
            plen < 31 && u32::from(addr) == u32::from(g) | !u32::from(netmask(plen))
        })
    }
}

/// The mask of a prefix length (0..=32; longer is clamped).
pub(crate) fn netmask(prefix_len: u8) -> Ipv4Addr {
    let plen = u32::from(prefix_len.min(32));
    Ipv4Addr::from(u32::MAX.checked_shl(32 - plen).unwrap_or(0))
}

fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix_len: u8) -> bool {
    let m = u32::from(netmask(prefix_len));
    u32::from(a) & m == u32::from(b) & m
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Packet builders (etherparse, independent of the smoltcp code under test) and checks.

    use super::*;
    use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};

    pub const VM_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x07];
    pub const VM_IP: [u8; 4] = [10, 1, 1, 7];
    pub const GW: [u8; 4] = [10, 1, 1, 1];
    pub const VIF: u16 = 3;
    pub const VRF: u16 = 2;

    pub fn iface() -> ServedInterface {
        ServedInterface {
            dns: vec![Ipv4Addr::new(10, 1, 1, 2), Ipv4Addr::new(8, 8, 8, 8)],
            mtu: Some(1400),
            lease_secs: 3600,
            hostname: Some("vm-7".into()),
            domain: Some("cs.example".into()),
            ..ServedInterface::new(
                VIF,
                VRF,
                MacAddr(VM_MAC),
                Ipv4Addr::from(VM_IP),
                24,
                Ipv4Addr::from(GW),
            )
        }
    }

    pub fn services() -> PacketServices {
        let mut s = PacketServices::new();
        s.add_interface(iface()).expect("valid interface");
        s
    }

    /// Agent trap header in front of `frame`.
    pub fn trap(reason: TrapReason, vif: u16, vrf: u16, param: u32, frame: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; AGENT_HEADER_LEN];
        AgentHeader {
            cmd: AgentCmd::Trap,
            reason,
            vif,
            vrf,
            param,
        }
        .emit(&mut out);
        out.extend_from_slice(frame);
        out
    }

    /// Splits an injected frame into its header and Ethernet frame.
    pub fn split(out: &[u8]) -> (AgentHeader, &[u8]) {
        let h = AgentHeader::parse(out).expect("agent header on every injected frame");
        (h, &out[AGENT_HEADER_LEN..])
    }

    /// Parses an Ethernet frame with etherparse and asserts every checksum on it is right.
    pub fn checked(frame: &[u8]) -> PacketHeaders<'_> {
        let p = PacketHeaders::from_ethernet_slice(frame).expect("etherparse parses our frame");
        let Some(NetHeaders::Ipv4(ip, _)) = &p.net else {
            panic!("not IPv4")
        };
        assert_eq!(
            ip.header_checksum,
            ip.calc_header_checksum(),
            "IPv4 checksum"
        );
        assert_eq!(
            usize::from(ip.total_len),
            frame.len() - 14,
            "IPv4 total length"
        );
        let payload = p.payload.slice();
        match &p.transport {
            Some(TransportHeader::Udp(u)) => assert_eq!(
                u.checksum,
                u.calc_checksum_ipv4(ip, payload).expect("udp checksum"),
                "UDP checksum"
            ),
            Some(TransportHeader::Icmpv4(i)) => {
                assert_eq!(
                    i.checksum,
                    i.icmp_type.calc_checksum(payload),
                    "ICMP checksum"
                )
            }
            other => panic!("unexpected transport {other:?}"),
        }
        p
    }

    /// An Ethernet + IPv4 + UDP frame.
    #[allow(clippy::too_many_arguments)]
    pub fn udp_frame(
        smac: [u8; 6],
        dmac: [u8; 6],
        src: [u8; 4],
        dst: [u8; 4],
        ttl: u8,
        sport: u16,
        dport: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(smac, dmac)
            .ipv4(src, dst, ttl)
            .udp(sport, dport);
        let mut v = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut v, payload).expect("write");
        v
    }

    /// An Ethernet + IPv4 + ICMP echo request frame.
    pub fn echo_frame(
        src: [u8; 4],
        dst: [u8; 4],
        ttl: u8,
        id: u16,
        seq: u16,
        data: &[u8],
    ) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(VM_MAC, MacAddr::VROUTER.0)
            .ipv4(src, dst, ttl)
            .icmpv4_echo_request(id, seq);
        let mut v = Vec::with_capacity(b.size(data.len()));
        b.write(&mut v, data).expect("write");
        v
    }

    /// Rewrites the IPv4 header of an Ethernet frame and fixes its checksum.
    pub fn patch_ipv4(frame: &mut [u8], f: impl FnOnce(&mut etherparse::Ipv4Header)) {
        let (mut h, _) = etherparse::Ipv4Header::from_slice(&frame[14..]).expect("ipv4");
        f(&mut h);
        h.header_checksum = h.calc_header_checksum();
        let len = h.header_len();
        let mut w = Vec::new();
        h.write(&mut w).expect("write");
        frame[14..14 + len].copy_from_slice(&w);
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn config_is_validated() {
        let mut s = PacketServices::new();
        let bad = |f: fn(&mut ServedInterface)| {
            let mut i = iface();
            f(&mut i);
            i
        };
        assert_eq!(
            s.add_interface(bad(|i| i.prefix_len = 33)),
            Err(ConfigError::PrefixLen(33))
        );
        assert_eq!(
            s.add_interface(bad(|i| i.dns = vec![Ipv4Addr::LOCALHOST; 4])),
            Err(ConfigError::TooManyDns(4))
        );
        assert_eq!(
            s.add_interface(bad(|i| i.mtu = Some(67))),
            Err(ConfigError::Mtu(67))
        );
        assert_eq!(
            s.add_interface(bad(|i| i.hostname = Some("x".repeat(256)))),
            Err(ConfigError::Name("hostname"))
        );
        assert_eq!(
            s.add_interface(bad(|i| i.gateway = Ipv4Addr::UNSPECIFIED)),
            Err(ConfigError::Unspecified)
        );
        assert!(s.interface(VIF).is_none());
        s.add_interface(iface()).expect("valid");
        assert_eq!(
            s.interface(VIF).map(|i| i.netmask()),
            Some(Ipv4Addr::new(255, 255, 255, 0))
        );
        assert_eq!(
            s.set_vrf_gateways(
                1,
                vec![VrfGateway {
                    addr: Ipv4Addr::LOCALHOST,
                    prefix_len: 40
                }]
            ),
            Err(ConfigError::PrefixLen(40))
        );
        assert!(s.remove_interface(VIF).is_some());
        assert!(s.interface(VIF).is_none());
    }

    #[test]
    fn netmasks() {
        assert_eq!(netmask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(netmask(8), Ipv4Addr::new(255, 0, 0, 0));
        assert_eq!(netmask(30), Ipv4Addr::new(255, 255, 255, 252));
        assert_eq!(netmask(32), Ipv4Addr::BROADCAST);
        assert_eq!(netmask(99), Ipv4Addr::BROADCAST);
    }

    #[test]
    fn junk_is_counted_not_answered() {
        let mut s = services();
        assert!(s.handle(b"").is_empty());
        assert!(s.handle(b"VRAG\x01").is_empty());
        let frame = udp_frame(VM_MAC, [0xff; 6], [0; 4], [255; 4], 64, 68, 67, b"x");
        // An injection header coming back.
        let mut tx = trap(TrapReason::L3Protocols, VIF, VRF, 0, &frame);
        tx[5] = AgentCmd::TxVif as u8;
        assert!(s.handle(&tx).is_empty());
        // ARP and flow misses are not ours.
        assert!(s
            .handle(&trap(TrapReason::Arp, VIF, VRF, 0, &frame))
            .is_empty());
        assert!(s
            .handle(&trap(TrapReason::FlowMiss, VIF, VRF, 0, &frame))
            .is_empty());
        // Truncated IPv4.
        assert!(s
            .handle(&trap(TrapReason::Receive, VIF, VRF, 0, &frame[..30]))
            .is_empty());
        // Not IPv4.
        let mut arp = frame.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(s
            .handle(&trap(TrapReason::ZeroTtl, VIF, VRF, 0, &arp))
            .is_empty());
        // Bad IPv4 checksum.
        let mut bad = frame.clone();
        bad[14 + 10] ^= 0xff;
        assert!(s
            .handle(&trap(TrapReason::ZeroTtl, VIF, VRF, 0, &bad))
            .is_empty());
        // Not DHCP under L3Protocols.
        let dns = udp_frame(VM_MAC, MacAddr::VROUTER.0, VM_IP, GW, 64, 5353, 53, b"q");
        assert!(s
            .handle(&trap(TrapReason::L3Protocols, VIF, VRF, 0, &dns))
            .is_empty());
        // UDP to the gateway under Receive on a port nothing serves.
        let other = udp_frame(VM_MAC, MacAddr::VROUTER.0, VM_IP, GW, 64, 5353, 5354, b"q");
        assert!(s
            .handle(&trap(TrapReason::Receive, VIF, VRF, 0, &other))
            .is_empty());

        let st = s.stats();
        assert_eq!(st.trapped, 10);
        assert_eq!(st.ignored(Ignored::BadHeader), 2);
        assert_eq!(st.ignored(Ignored::NotTrap), 1);
        assert_eq!(st.ignored(Ignored::UnsupportedReason), 2);
        assert_eq!(st.ignored(Ignored::Malformed), 1);
        assert_eq!(st.ignored(Ignored::NotIpv4), 1);
        assert_eq!(st.ignored(Ignored::BadChecksum), 1);
        assert_eq!(st.ignored(Ignored::UnsupportedProtocol), 2);
        assert_eq!(st.ignored_total(), 10);
        assert!(Served::ALL.iter().all(|k| st.served(*k) == 0));
        let names: Vec<_> = st.iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), 1 + Served::ALL.len() + Ignored::ALL.len());
        assert!(names.contains(&"ignored_bad_checksum".to_owned()));
    }

    #[test]
    fn counter_arrays_fit_the_enums() {
        let st = ServiceStats::default();
        assert_eq!(st.served.len(), Served::ALL.len());
        assert_eq!(st.ignored.len(), Ignored::ALL.len());
    }

    fn valid_frames() -> Vec<(TrapReason, u32, Vec<u8>)> {
        vec![
            (
                TrapReason::L3Protocols,
                0,
                udp_frame(
                    VM_MAC,
                    [0xff; 6],
                    [0; 4],
                    [255; 4],
                    64,
                    68,
                    67,
                    &dhcp::tests::client_msg(1, [0; 4], &[(50, &VM_IP)]),
                ),
            ),
            (
                TrapReason::Receive,
                0,
                echo_frame(VM_IP, GW, 64, 1, 1, b"abcdefgh"),
            ),
            (
                TrapReason::ZeroTtl,
                0,
                udp_frame(
                    VM_MAC,
                    MacAddr::VROUTER.0,
                    VM_IP,
                    [10, 9, 9, 9],
                    1,
                    3333,
                    33434,
                    b"tr",
                ),
            ),
            (TrapReason::HandleDf, 1400, {
                let mut f = udp_frame(
                    VM_MAC,
                    MacAddr::VROUTER.0,
                    VM_IP,
                    [10, 9, 9, 9],
                    5,
                    1,
                    2,
                    &[0; 64],
                );
                patch_ipv4(&mut f, |h| h.dont_fragment = true);
                f
            }),
        ]
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            let mut s = services();
            let _ = s.handle(&bytes);
        }

        #[test]
        fn random_frames_behind_a_valid_header_never_panic(
            reason in 0u8..7,
            vif in prop_oneof![Just(VIF), any::<u16>()],
            param in any::<u32>(),
            frame in proptest::collection::vec(any::<u8>(), 0..700),
        ) {
            let mut s = services();
            let reason = TrapReason::from_u8(reason).unwrap_or(TrapReason::None);
            for out in s.handle(&trap(reason, vif, VRF, param, &frame)) {
                prop_assert!(AgentHeader::parse(&out).is_some());
            }
        }

        #[test]
        fn mutated_valid_frames_never_panic(
            which in 0usize..4,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let mut s = services();
            let (reason, param, mut frame) = valid_frames().swap_remove(which);
            for (at, x) in flips {
                let n = frame.len();
                frame[at % n] ^= x;
            }
            frame.truncate(cut % (frame.len() + 1));
            for out in s.handle(&trap(reason, VIF, VRF, param, &frame)) {
                let (h, eth) = split(&out);
                prop_assert!(h.cmd != AgentCmd::Trap);
                // Whatever we send is well formed.
                checked(eth);
            }
        }
    }

    #[test]
    fn valid_frames_are_all_answered() {
        let mut s = services();
        for (reason, param, frame) in valid_frames() {
            let out = s.handle(&trap(reason, VIF, VRF, param, &frame));
            assert_eq!(out.len(), 1, "{reason:?}");
            checked(split(&out[0]).1);
        }
        assert_eq!(s.stats().ignored_total(), 0);
    }
}

#[cfg(test)]
mod dns_trap_tests {
    //! DNS through the trap path: the frame a VM sends to its gateway's port 53 in, the frame
    //! back (from the gateway's port 53 to the VM's port) out.

    use super::testutil::*;
    use super::*;
    use etherparse::TransportHeader;
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RData, RecordType};

    fn dns_query(id: u16, name: &str, qt: RecordType) -> Vec<u8> {
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).expect("name"), qt));
        m.to_vec().expect("encode")
    }

    fn served() -> PacketServices {
        let mut s = services();
        let zone = dns_zone::Zone::new(
            "cs2cloud.internal",
            &[("web-1".into(), Ipv4Addr::new(10, 1, 1, 9))],
        )
        .expect("zone");
        s.set_dns_zone(VRF, Some(zone));
        s
    }

    #[test]
    fn a_query_to_the_gateway_is_answered_from_the_gateway_port_53_to_the_vm() {
        let mut s = served();
        let q = dns_query(77, "web-1.cs2cloud.internal.", RecordType::A);
        let f = udp_frame(VM_MAC, MacAddr::VROUTER.0, VM_IP, GW, 64, 40_000, 53, &q);
        let out = s.handle(&trap(TrapReason::Receive, VIF, VRF, 0, &f));
        assert_eq!(out.len(), 1);
        let (h, frame) = split(&out[0]);
        assert_eq!((h.cmd, h.vif), (AgentCmd::TxVif, VIF));
        let p = checked(frame);
        let Some(TransportHeader::Udp(u)) = &p.transport else {
            panic!("not UDP")
        };
        assert_eq!((u.source_port, u.destination_port), (53, 40_000));
        let m = Message::from_vec(p.payload.slice()).expect("a DNS answer");
        assert_eq!(m.metadata.id, 77);
        let addrs: Vec<Ipv4Addr> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect();
        assert_eq!(addrs, vec![Ipv4Addr::new(10, 1, 1, 9)]);
        assert_eq!(s.stats().served(Served::DnsLocal), 1);
    }

    #[test]
    fn a_query_for_another_name_goes_upstream_and_its_answer_back_to_the_vm() {
        let mut s = served();
        let q = dns_query(5, "deb.example.org.", RecordType::A);
        let f = udp_frame(VM_MAC, MacAddr::VROUTER.0, VM_IP, GW, 64, 40_001, 53, &q);
        assert!(s
            .handle(&trap(TrapReason::Receive, VIF, VRF, 0, &f))
            .is_empty());
        let fwd = s.take_dns_forwards();
        assert_eq!(fwd.len(), 1);
        let mut reply = Message::from_vec(&fwd[0]).expect("forwarded query");
        reply.metadata.message_type = MessageType::Response;
        let name = reply.queries[0].name.clone();
        reply.add_answer(hickory_proto::rr::Record::from_rdata(
            name,
            60,
            RData::A(hickory_proto::rr::rdata::A(Ipv4Addr::new(192, 0, 2, 7))),
        ));
        let frame = s
            .dns_upstream_reply(&reply.to_vec().expect("encode"))
            .expect("matches");
        let (h, eth) = split(&frame);
        assert_eq!((h.cmd, h.vif), (AgentCmd::TxVif, VIF));
        let p = checked(eth);
        let m = Message::from_vec(p.payload.slice()).expect("a DNS answer");
        assert_eq!(m.metadata.id, 5);
        assert_eq!(s.stats().served(Served::DnsRelayed), 1);
    }

    #[test]
    fn a_corrupted_dns_datagram_is_dropped_not_answered() {
        let mut s = served();
        let q = dns_query(5, "web-1.cs2cloud.internal.", RecordType::A);
        let mut f = udp_frame(VM_MAC, MacAddr::VROUTER.0, VM_IP, GW, 64, 40_002, 53, &q);
        let n = f.len();
        f[n - 1] ^= 0x5a;
        assert!(s
            .handle(&trap(TrapReason::Receive, VIF, VRF, 0, &f))
            .is_empty());
        assert_eq!(s.stats().ignored(Ignored::BadChecksum), 1);
    }
}
