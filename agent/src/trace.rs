//! `vrctl trace`: what the dataplane would do with one packet (as OVS `ofproto/trace` and VPP
//! `trace` answer). The packet runs through the real pipeline code over a copy of the daemon's
//! tables rebuilt from its state dump ([`Harness::from_dump`]), so the daemon's flows and
//! counters are untouched and the packet is treated as the first of a new flow.
//!
//! I/O-free: [`probe_frame`] builds the frame a VM would send, [`trace`] runs it, and
//! [`describe`] decodes what came out (tunnel headers and labels included) for a person.

use etherparse::{Ipv4Slice, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use serde::Serialize;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use vrouter_dataplane::batch::{Next, PktMeta, NO_LABEL};
use vrouter_dataplane::ctl::proto::StateDump;
use vrouter_dataplane::harness::{Harness, Verdict};
use vrouter_dataplane::tables::fib::prefix_mask;
use vrouter_dataplane::tables::flow::FlowAction;
use vrouter_dataplane::tables::NexthopSpec;
use vrouter_dataplane::trap::{AgentHeader, AGENT_HEADER_LEN};
use vrouter_dataplane::wire::MacAddr;

/// The protocol of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// ICMP echo request.
    Icmp,
    /// UDP.
    Udp,
    /// TCP SYN.
    Tcp,
}

impl std::str::FromStr for Proto {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "icmp" => Ok(Proto::Icmp),
            "udp" => Ok(Proto::Udp),
            "tcp" => Ok(Proto::Tcp),
            _ => Err(format!("protocol {s:?}: icmp, udp or tcp")),
        }
    }
}

/// A packet as a VM on the traced interface would send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Source MAC (the interface's VM MAC by default).
    pub smac: MacAddr,
    /// Destination MAC (the vRouter's by default: the VM's gateway).
    pub dmac: MacAddr,
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol.
    pub proto: Proto,
    /// Source port (UDP, TCP).
    pub sport: u16,
    /// Destination port (UDP, TCP).
    pub dport: u16,
    /// IPv4 TTL.
    pub ttl: u8,
}

/// The Ethernet frame of `p`, with valid checksums.
pub fn probe_frame(p: &Probe) -> Vec<u8> {
    let ip =
        PacketBuilder::ethernet2(p.smac.0, p.dmac.0).ipv4(p.src.octets(), p.dst.octets(), p.ttl);
    let payload = b"vrctl trace";
    let mut out = Vec::new();
    // Writing into a Vec only fails on a payload too large for IPv4: not these 11 bytes.
    let _ = match p.proto {
        Proto::Icmp => ip.icmpv4_echo_request(0x7672, 1).write(&mut out, payload),
        Proto::Udp => ip.udp(p.sport, p.dport).write(&mut out, payload),
        Proto::Tcp => ip
            .tcp(p.sport, p.dport, 1, 64240)
            .syn()
            .write(&mut out, payload),
    };
    out
}

/// What became of the traced frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Traced {
    /// Sent on an interface.
    Sent {
        /// Output interface.
        vif: u16,
        /// Its OS name.
        name: String,
        /// The frame as sent, decoded.
        summary: String,
        /// The frame as sent, hex.
        frame: String,
    },
    /// Dropped, and counted under this reason.
    Dropped {
        /// The drop reason as `vrctl drops` names it.
        reason: String,
    },
}

/// What the pipeline decided on the way, from the packet's metadata and the copy's flow table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decisions {
    /// The VRF it was forwarded (or dropped) in, after any translation.
    pub vrf: u16,
    /// That VRF's name.
    pub vrf_name: String,
    /// The nexthop it resolved to, and where that sends.
    pub nexthop: Option<(u32, String)>,
    /// The MPLS label pushed.
    pub label: Option<u32>,
    /// Why it went to the agent, when trapped.
    pub trap: Option<String>,
    /// The flow it created, when the VRF has flow processing: `F` (forward), `D(...)`
    /// (drop, with the policy's reason), `N(S)`/`N(D)`/`N(SD)` (NAT).
    pub flow: Option<String>,
    /// The addresses the flow rewrites: `src A -> B`, `dst A -> B`.
    pub nat: Vec<String>,
    /// The route its destination (after NAT) matches in that VRF, `a.b.c.d/n`.
    pub route: Option<String>,
}

/// A traced packet: the decisions on the way and the outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trace {
    /// Decisions, when the frame entered the pipeline.
    pub decisions: Option<Decisions>,
    /// What became of it.
    #[serde(flatten)]
    pub outcome: Traced,
}

/// Runs `frame`, received on `vif`, through a copy of `dump`'s tables.
pub fn trace(dump: &StateDump, vif: u16, frame: &[u8]) -> Result<Trace, String> {
    let mut h = Harness::from_dump(dump)
        .map_err(|(i, e)| format!("the dump does not rebuild (operation {i}: {e})"))?;
    let outcome = outcome(dump, h.run1(vif, frame));
    let decisions = h.metas.first().map(|m| decisions(dump, &h, m, frame));
    Ok(Trace { decisions, outcome })
}

fn decisions(dump: &StateDump, h: &Harness, m: &PktMeta, frame: &[u8]) -> Decisions {
    let nhs: HashMap<u32, &NexthopSpec> = dump.nhs.iter().map(|n| (n.id, &n.spec)).collect();
    let entry = h.flows().list(None, 4).into_iter().find(|f| f.forward);
    let mut nat = Vec::new();
    let mut dst = packet_dst(frame);
    if let Some((f, FlowAction::Nat { snat, dnat })) = entry.as_ref().map(|f| (f, f.action)) {
        if let Some(a) = snat {
            nat.push(format!(
                "src {} -> {}",
                Ipv4Addr::from(f.src),
                Ipv4Addr::from(a)
            ));
        }
        if let Some(a) = dnat {
            nat.push(format!(
                "dst {} -> {}",
                Ipv4Addr::from(f.dst),
                Ipv4Addr::from(a)
            ));
            dst = Some(a);
        }
    }
    let flow = entry.map(|f| match f.action {
        FlowAction::Forward => "F".to_string(),
        FlowAction::Drop(r) => format!("D({r:?})"),
        FlowAction::Nat { snat, dnat } => format!(
            "N({}{})",
            if snat.is_some() { "S" } else { "" },
            if dnat.is_some() { "D" } else { "" }
        ),
    });
    Decisions {
        vrf: m.vrf,
        vrf_name: dump
            .vrfs
            .iter()
            .find(|v| v.id == m.vrf)
            .map_or_else(|| "?".into(), |v| v.name.clone()),
        nexthop: (m.nh != 0 || m.next == Next::Tx)
            .then(|| (m.nh, crate::show::member_target(&nhs, m.nh))),
        label: (m.label != NO_LABEL).then_some(m.label),
        trap: (m.next == Next::Trap).then(|| format!("{:?}", m.trap)),
        flow,
        nat,
        route: dst.and_then(|d| longest_match(dump, m.vrf, d)),
    }
}

/// The innermost IPv4 destination of `frame`: through MPLSoUDP and MPLSoGRE to the inner
/// packet, as [`describe`] walks it.
fn packet_dst(frame: &[u8]) -> Option<u32> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        return None;
    };
    let Some(mpls) = tunnelled_mpls(ip, &p.transport) else {
        return Some(u32::from(ip.header().destination_addr()));
    };
    match SlicedPacket::from_ip(split_labels(mpls).1).ok()?.net {
        Some(NetSlice::Ipv4(inner)) => Some(u32::from(inner.header().destination_addr())),
        _ => None,
    }
}

/// The MPLS payload an IPv4 packet tunnels: MPLS over UDP (port 6635) or over GRE (without
/// options, protocol 0x8847).
fn tunnelled_mpls<'a>(
    ip: &Ipv4Slice<'a>,
    transport: &Option<TransportSlice<'a>>,
) -> Option<&'a [u8]> {
    match transport {
        Some(TransportSlice::Udp(u)) if u.destination_port() == 6635 => Some(u.payload()),
        _ if ip.header().protocol().0 == 47 => {
            let gre = ip.payload().payload;
            (gre.len() >= 4 && gre[2..4] == [0x88, 0x47]).then(|| &gre[4..])
        }
        _ => None,
    }
}

/// An MPLS payload's label stack (label, bottom of stack) and what follows the bottom label.
fn split_labels(mut b: &[u8]) -> (Vec<(u32, bool)>, &[u8]) {
    let mut labels = Vec::new();
    while b.len() >= 4 {
        let v = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let bos = v & 0x100 != 0;
        labels.push((v >> 12, bos));
        b = &b[4..];
        if bos {
            break;
        }
    }
    (labels, b)
}

/// The longest prefix of VRF `vrf` in `dump` that covers `dst`.
fn longest_match(dump: &StateDump, vrf: u16, dst: u32) -> Option<String> {
    dump.routes
        .iter()
        .filter(|r| r.vrf == vrf && dst & prefix_mask(r.plen) == r.prefix)
        .max_by_key(|r| r.plen)
        .map(|r| format!("{}/{}", Ipv4Addr::from(r.prefix), r.plen))
}

/// The decisions and the outcome, indented lines under their headings.
pub fn text(t: &Trace) -> String {
    let indent = |s: &str| s.lines().map(|l| format!("  {l}\n")).collect::<String>();
    let mut out = String::new();
    if let Some(d) = &t.decisions {
        out.push_str("decisions:\n");
        out.push_str(&format!("  vrf {} ({})\n", d.vrf, d.vrf_name));
        if let Some(f) = &d.flow {
            out.push_str(&format!("  flow {f}\n"));
        }
        for n in &d.nat {
            out.push_str(&format!("  nat {n}\n"));
        }
        if let Some(r) = &d.route {
            out.push_str(&format!("  route {r}\n"));
        }
        if let Some((nh, to)) = &d.nexthop {
            out.push_str(&format!("  nexthop {nh} ({to})\n"));
        }
        if let Some(l) = d.label {
            out.push_str(&format!("  label {l}\n"));
        }
        if let Some(r) = &d.trap {
            out.push_str(&format!("  trap {r}\n"));
        }
    }
    match &t.outcome {
        Traced::Sent {
            vif, name, summary, ..
        } => out.push_str(&format!("sent on vif {vif} ({name}):\n{}", indent(summary))),
        Traced::Dropped { reason } => out.push_str(&format!("dropped: {reason}\n")),
    }
    out
}

/// The verdict, with the output interface named and the frame decoded.
fn outcome(dump: &StateDump, v: Verdict) -> Traced {
    match v {
        Verdict::Tx { vif, frame } => Traced::Sent {
            vif,
            name: dump
                .vifs
                .iter()
                .find(|v| v.id == vif)
                .map_or_else(|| "?".into(), |v| v.name.clone()),
            summary: describe(&frame),
            frame: frame.iter().map(|b| format!("{b:02x}")).collect(),
        },
        Verdict::Drop(r) => Traced::Dropped {
            reason: r.name().to_string(),
        },
    }
}

/// One line per header of `frame`: Ethernet, IPv4 and transport, through MPLSoUDP (port 6635)
/// and MPLSoGRE tunnels to the inner packet, or the agent header of a trapped packet.
pub fn describe(frame: &[u8]) -> String {
    if let Some(h) = AgentHeader::parse(frame) {
        return format!(
            "to the agent: {:?} (reason {:?}, vif {}, vrf {})\n{}",
            h.cmd,
            h.reason,
            h.vif,
            h.vrf,
            describe(&frame[AGENT_HEADER_LEN..])
        );
    }
    let mut out = String::new();
    let Ok(p) = SlicedPacket::from_ethernet(frame) else {
        return format!("{} bytes, not an Ethernet frame\n", frame.len());
    };
    if let Some(etherparse::LinkSlice::Ethernet2(e)) = &p.link {
        out.push_str(&format!(
            "eth {} -> {} type 0x{:04x}\n",
            MacAddr(e.source()),
            MacAddr(e.destination()),
            e.ether_type().0
        ));
    }
    describe_ip(&p, &mut out);
    out
}

/// The IPv4 and transport lines of `p`, then what a tunnel carries.
fn describe_ip(p: &SlicedPacket<'_>, out: &mut String) {
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        if p.net.is_none() {
            out.push_str("not IPv4 (ARP or other)\n");
        }
        return;
    };
    let h = ip.header();
    out.push_str(&format!(
        "ipv4 {} -> {} proto {} ttl {}\n",
        h.source_addr(),
        h.destination_addr(),
        h.protocol().0,
        h.ttl()
    ));
    match &p.transport {
        Some(TransportSlice::Udp(u)) => {
            out.push_str(&format!(
                "udp {} -> {}\n",
                u.source_port(),
                u.destination_port()
            ));
        }
        Some(TransportSlice::Tcp(t)) => out.push_str(&format!(
            "tcp {} -> {}{}\n",
            t.source_port(),
            t.destination_port(),
            if t.syn() { " syn" } else { "" }
        )),
        Some(TransportSlice::Icmpv4(i)) => {
            out.push_str(&format!("icmp type {} code {}\n", i.type_u8(), i.code_u8()))
        }
        _ => {}
    }
    if let Some(mpls) = tunnelled_mpls(ip, &p.transport) {
        if h.protocol().0 == 47 {
            out.push_str("gre mpls\n");
        }
        describe_mpls(mpls, out);
    }
}

/// The label stack and the inner IPv4 packet of an MPLS payload.
fn describe_mpls(b: &[u8], out: &mut String) {
    let (labels, b) = split_labels(b);
    for (label, bos) in labels {
        out.push_str(&format!(
            "mpls label {label}{}\n",
            if bos { " (bottom)" } else { "" }
        ));
    }
    match SlicedPacket::from_ip(b) {
        Ok(inner) => {
            out.push_str("inner: ");
            describe_ip(&inner, out);
        }
        Err(_) => out.push_str(&format!("inner: {} bytes, not IPv4\n", b.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vrouter_dataplane::ctl::handler::{handle, DaemonInfo};
    use vrouter_dataplane::ctl::proto::{Request, Response};
    use vrouter_dataplane::harness::fixture::*;
    use vrouter_dataplane::stats::StatsRegistry;
    use vrouter_dataplane::tables::{new_tables, Limits};

    fn fixture_dump() -> StateDump {
        let (mut w, _r) = new_tables(Limits::default());
        if let Err((i, e)) = w.apply(ops()) {
            panic!("fixture op {i}: {e}");
        }
        match handle(
            &mut w,
            &StatsRegistry::new(16, 8),
            &DaemonInfo {
                lcores: 1,
                ..Default::default()
            },
            Request::DumpAll,
        ) {
            Response::State(d) => *d,
            other => panic!("{other:?}"),
        }
    }

    fn probe(src: u32, dst: u32, proto: Proto) -> Probe {
        Probe {
            smac: MAC_A,
            dmac: MacAddr::VROUTER,
            src: Ipv4Addr::from(src),
            dst: Ipv4Addr::from(dst),
            proto,
            sport: 40000,
            dport: 5001,
            ttl: 64,
        }
    }

    #[test]
    fn a_ping_to_a_remote_vm_leaves_as_mpls_over_udp_with_its_label() {
        let f = probe_frame(&probe(IP_A, IP_REMOTE_UDP, Proto::Icmp));
        let Traced::Sent { vif, summary, .. } =
            trace(&fixture_dump(), VM_A, &f).expect("trace").outcome
        else {
            panic!("not sent")
        };
        assert_eq!(vif, FABRIC);
        let want = format!(
            "ipv4 {} -> {} proto 17",
            Ipv4Addr::from(HOST_IP),
            Ipv4Addr::from(REMOTE_UDP)
        );
        assert!(summary.contains(&want), "{summary}");
        assert!(summary.contains("-> 6635"), "{summary}");
        assert!(
            summary.contains(&format!("mpls label {LABEL_REMOTE_UDP} (bottom)")),
            "{summary}"
        );
        let inner = format!(
            "inner: ipv4 {} -> {} proto 1 ttl 63",
            Ipv4Addr::from(IP_A),
            Ipv4Addr::from(IP_REMOTE_UDP)
        );
        assert!(summary.contains(&inner), "{summary}");
    }

    #[test]
    fn a_spoofed_source_is_dropped_under_its_reason() {
        let f = probe_frame(&probe(IP_B, IP_REMOTE_UDP, Proto::Udp));
        assert_eq!(
            trace(&fixture_dump(), VM_A, &f).expect("trace").outcome,
            Traced::Dropped {
                reason: "Invalid Source".into()
            }
        );
    }

    #[test]
    fn a_local_tcp_syn_goes_to_the_other_vm_unencapsulated() {
        let f = probe_frame(&probe(IP_A, IP_B, Proto::Tcp));
        let Traced::Sent { vif, summary, .. } =
            trace(&fixture_dump(), VM_A, &f).expect("trace").outcome
        else {
            panic!("not sent")
        };
        assert_eq!(vif, VM_B);
        assert!(summary.contains("tcp 40000 -> 5001 syn"), "{summary}");
        assert!(summary.contains(&format!("-> {MAC_B}")), "{summary}");
    }
}
