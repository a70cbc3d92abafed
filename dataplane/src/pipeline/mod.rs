//! The forwarding pipeline: stages that each walk the whole batch (VPP's vector model), so the
//! instructions and table lines of a stage stay hot across packets and the FIB lookup can
//! prefetch for every packet before the first probe.
//!
//! ```text
//! classify ─┬─ VM:     ARP proxy → (reply) | IPv4 checks, anti-spoof ─┐
//!           ├─ fabric: MPLSoUDP/GRE to us → pop label → nexthop ──────┤
//!           ├─ host:   → fabric                                       │
//!           └─ agent:  injected → vif | VRF lookup                    │
//! lookup (FIP DNAT, TTL, LPM, FIP SNAT) ◄─────────────────────────────┘
//! nexthop (encap to vif | tunnel | receive | discard | ECMP | VRF translate → lookup again)
//! trap (agent header → pkt0)   output (per-port queues, drop accounting)
//! ```
//!
//! In VRFs with flow processing on, a flow stage sits between lookup and nexthop, and before the
//! lookup established flows whose cached route is current send their packets straight to the
//! nexthop (see [`flow`]); elsewhere flows cost one branch per batch.
//!
//! Every packet ends as `Tx` or `Drop`; nothing allocates, locks or makes a syscall.

pub mod flow;
pub mod frag;
pub mod nat;
mod system;

use crate::batch::{Batch, Next, Pkt, NO_LABEL};
use crate::buf::{BufPool, PktBuf};
use crate::capture::Capture;
use crate::drop::DropReason;
use crate::stats::LcoreStats;
use crate::tables::{
    fib::prefetch_read, Nexthop, Tables, TunnelKind, VifKind, FABRIC_VRF, NH_DISCARD,
};
use crate::trap::{AgentCmd, AgentHeader, TrapReason, AGENT_HEADER_LEN};
use crate::wire::{
    arp, ethernet::EtherType, ip_proto, ArpPacket, MacAddr, MplsLabel, ETHERNET_HEADER_LEN as ETH,
    GRE_PROTO_MPLS, MPLS_UDP_PORT, MPLS_UDP_PORT_LEGACY,
};
use nat::Side;
use std::cell::RefCell;
use std::sync::Arc;

/// Rounds of lookup/nexthop a packet may take (one VRF translation, e.g. a table label or a
/// floating-IP VRF); more means a loop in the configuration.
const MAX_LOOKUPS: usize = 3;

/// How many packets ahead the lookup stage prefetches FIB slots when the table exceeds L2.
const PREFETCH_AHEAD: usize = 12;

/// DHCP server port: requests from VMs go to the agent.
const DHCP_SERVER_PORT: u16 = 67;

/// One lcore's pipeline: the stages plus that lcore's counters.
#[derive(Debug)]
pub struct Pipeline {
    stats: Arc<LcoreStats>,
    /// `vrctl capture`: frames in and out of one interface are copied there while a session is
    /// armed (checked once per batch and per output pass).
    capture: Option<Arc<Capture>>,
    /// Per-batch flow keys and the lcore's fragment memory (borrowed once per batch).
    flow: RefCell<Box<flow::FlowScratch>>,
}

impl Pipeline {
    /// A pipeline counting into `stats`.
    pub fn new(stats: Arc<LcoreStats>) -> Self {
        Self {
            stats,
            capture: None,
            flow: RefCell::default(),
        }
    }

    /// The same, offering frames to `capture` while it is armed.
    pub fn with_capture(self, capture: Arc<Capture>) -> Self {
        Self {
            capture: Some(capture),
            ..self
        }
    }

    /// The capture, if a session is armed.
    #[inline]
    fn capturing(&self) -> Option<&Capture> {
        self.capture.as_deref().filter(|c| c.armed())
    }

    /// The counters this pipeline writes.
    pub fn stats(&self) -> &Arc<LcoreStats> {
        &self.stats
    }

    /// Runs every stage over `batch`. Afterwards each packet is `Tx` (with `out_vif`) or `Drop`
    /// (with a reason); [`Pipeline::output`] hands them on.
    pub fn run(&self, t: &Tables, batch: &mut Batch) {
        // Receive counters are added once per run of packets from the same interface (a batch
        // normally comes from one port), in the same pass as classification.
        let mut rx: (u16, u64, u64) = (u16::MAX, 0, 0);
        // A pass of its own, so the per-packet loops carry nothing while no capture runs.
        if let Some(c) = self.capturing() {
            capture_rx(c, batch);
        }
        for p in batch.pkts_mut() {
            if rx.0 != p.meta.in_vif {
                self.count_rx(rx);
                rx = (p.meta.in_vif, 0, 0);
            }
            rx.1 += 1;
            rx.2 += p.buf.len() as u64;
            self.classify(t, p);
        }
        self.count_rx(rx);
        let mut flows = (t.flow_vrfs != 0).then(|| self.flow.borrow_mut());
        if let Some(fs) = flows.as_deref_mut() {
            self.flow_capture(t, batch, fs);
            self.flow_established(t, batch, fs);
        }
        for round in 0..MAX_LOOKUPS {
            self.lookup(t, batch);
            if let Some(fs) = flows.as_deref_mut() {
                self.flow_stage(t, batch, fs);
            }
            // Nexthops, and traps from any stage so far, in one pass.
            let mut again = false;
            for p in batch.pkts_mut() {
                if p.meta.next == Next::Nexthop {
                    self.nexthop(t, p);
                    again |= p.meta.next == Next::Lookup;
                }
                if p.meta.next == Next::Trap {
                    self.trap(t, p);
                }
            }
            if !again {
                break;
            }
            if round + 1 == MAX_LOOKUPS {
                for p in batch.pkts_mut() {
                    if matches!(p.meta.next, Next::Lookup | Next::Nexthop | Next::Classify) {
                        p.meta.drop(DropReason::PktLoop);
                    }
                }
            }
        }
        if let Some(fs) = flows.as_deref() {
            self.flow_sweep(t, fs);
        }
    }

    /// Hands every packet of `batch` to `tx(out_vif, buf)`, or counts its drop and frees it. A
    /// refused transmit (`Err` gives the buffer back) counts as `IF TX Discard`.
    #[inline]
    pub fn output(
        &self,
        batch: &mut Batch,
        pool: &mut BufPool,
        mut tx: impl FnMut(u16, PktBuf) -> Result<(), PktBuf>,
    ) {
        // Transmit counters are summed over runs of packets to the same interface.
        let mut run: (u16, u64, u64) = (u16::MAX, 0, 0);
        let count = |r: (u16, u64, u64)| {
            if r.1 != 0 {
                if let Some(v) = self.stats.vif.get(usize::from(r.0)) {
                    v.tx_packets.add(r.1);
                    v.tx_bytes.add(r.2);
                }
            }
        };
        if let Some(c) = self.capturing() {
            capture_tx(c, batch);
        }
        for p in batch.drain() {
            let m = p.meta;
            if m.next == Next::Tx {
                if m.frag {
                    self.output_fragments(p.buf, &m, pool, &mut tx);
                    continue;
                }
                let len = p.buf.len() as u64;
                match tx(m.out_vif, p.buf) {
                    Ok(()) => {
                        if run.0 != m.out_vif {
                            count(run);
                            run = (m.out_vif, 0, 0);
                        }
                        run.1 += 1;
                        run.2 += len;
                    }
                    Err(buf) => self.tx_refused(&m, buf, pool),
                }
            } else {
                self.stats.dropped(m.in_vif, m.drop);
                pool.free(p.buf);
            }
        }
        count(run);
    }

    /// Splits a tunnelled packet marked for fragmentation into fragments that fit
    /// `meta.trap_param` bytes, each from a pool buffer, hands them to `tx` in order and frees
    /// the original. All or nothing: with fewer free buffers than fragments the packet is dropped
    /// as `Head Alloc Fails`; one that cannot be fragmented as `Fragment errors`.
    #[cold]
    #[inline(never)]
    fn output_fragments(
        &self,
        buf: PktBuf,
        m: &crate::batch::PktMeta,
        pool: &mut BufPool,
        tx: &mut dyn FnMut(u16, PktBuf) -> Result<(), PktBuf>,
    ) {
        let plan = match frag::plan(buf.data(), m.trap_param as usize) {
            Ok(plan) if pool.available() >= plan.count() => plan,
            Ok(_) => {
                self.stats.dropped(m.in_vif, DropReason::HeadAllocFail);
                pool.free(buf);
                return;
            }
            Err(_) => {
                self.stats.dropped(m.in_vif, DropReason::Fragments);
                pool.free(buf);
                return;
            }
        };
        let vif = self.stats.vif.get(usize::from(m.out_vif));
        let mut made = 0;
        for n in 0..plan.count() {
            let Some(mut b) = pool.alloc() else {
                self.stats.dropped(m.in_vif, DropReason::HeadAllocFail);
                break;
            };
            let len = frag::write(buf.data(), &plan, n, b.rx_area());
            if len == 0 {
                self.stats.dropped(m.in_vif, DropReason::Fragments);
                pool.free(b);
                break;
            }
            b.set_len(len);
            made += 1;
            if let Some(c) = self.capturing() {
                c.offer(m.out_vif, true, b.data());
            }
            match tx(m.out_vif, b) {
                Ok(()) => {
                    if let Some(v) = vif {
                        v.tx_packets.add(1);
                        v.tx_bytes.add(len as u64);
                    }
                }
                Err(b) => self.tx_refused(m, b, pool),
            }
        }
        self.stats.vrf(m.vrf).fragments.add(made);
        pool.free(buf);
    }

    /// Counts a transmit the output queue refused (`IF TX Discard`) and frees the buffer.
    #[inline(never)]
    fn tx_refused(&self, m: &crate::batch::PktMeta, buf: PktBuf, pool: &mut BufPool) {
        if let Some(v) = self.stats.vif.get(usize::from(m.out_vif)) {
            v.tx_errors.add(1);
        }
        self.stats.dropped(m.in_vif, DropReason::InterfaceTxDiscard);
        pool.free(buf);
    }

    /// Adds a run of received packets (vif, packets, bytes) to that interface's counters.
    #[inline]
    fn count_rx(&self, (vif, n, bytes): (u16, u64, u64)) {
        if n != 0 {
            if let Some(c) = self.stats.vif.get(usize::from(vif)) {
                c.rx_packets.add(n);
                c.rx_bytes.add(bytes);
            }
        }
    }

    #[inline]
    fn classify(&self, t: &Tables, p: &mut Pkt) {
        let Some(vif) = t.vif(p.meta.in_vif) else {
            p.meta.drop(DropReason::InvalidIf);
            return;
        };
        match vif.spec.kind {
            VifKind::Virtual | VifKind::XenLinkLocal => self.vm_input(t, vif, p),
            VifKind::Physical => self.fabric_input(t, p),
            VifKind::Host => self.host_input(t, p),
            VifKind::Agent => self.agent_input(t, p),
        }
    }

    #[inline]
    fn vm_input(&self, t: &Tables, vif: &crate::tables::Vif, p: &mut Pkt) {
        let d = p.buf.data();
        let Some(eth) = d.first_chunk::<ETH>() else {
            p.meta.drop(DropReason::Pull);
            return;
        };
        p.meta.vrf = vif.spec.vrf;
        match u16::from_be_bytes([eth[12], eth[13]]) {
            EtherType::IPV4 => {
                let ip = &d[ETH..];
                let Some(h) = ip.first_chunk::<20>() else {
                    p.meta.drop(DropReason::Pull);
                    return;
                };
                let Ok((hl, total)) = crate::wire::ipv4::lengths(h, ip.len()) else {
                    p.meta.drop(DropReason::InvalidPacket);
                    return;
                };
                let src = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
                if h[9] == ip_proto::UDP
                    && u16::from_be_bytes([h[6], h[7]]) & 0x1fff == 0
                    && ip.get(hl + 2..hl + 4) == Some(&DHCP_SERVER_PORT.to_be_bytes()[..])
                {
                    if !crate::wire::ipv4::checksum_ok(h, ip, hl) {
                        p.meta.drop(DropReason::CksumErr);
                        return;
                    }
                    p.buf.truncate(ETH + total);
                    p.meta.trap(TrapReason::L3Protocols);
                    return;
                }
                // Anti-spoofing (a VM may only send from its own MAC and address), and only
                // frames sent to the router are routed (its MAC is every VM's one neighbour):
                // both MACs in one compare, the reason worked out only for a mismatch.
                let mut bridge = false;
                if eth[..12] != vif.routed_l2 {
                    match l2_refusal(eth, h, vif) {
                        // An ip-fabric VM's frame to an underlay neighbour (see `system`).
                        Some(DropReason::L2NoRoute) if vif.spec.vrf == FABRIC_VRF => bridge = true,
                        Some(why) => {
                            p.meta.drop(why);
                            return;
                        }
                        None => {}
                    }
                }
                // RFC 1812 5.2.2, before any decision on the header's fields (the MACs above
                // are not in it): a corrupted source address is a checksum error, not spoofing.
                if !crate::wire::ipv4::checksum_ok(h, ip, hl) {
                    p.meta.drop(DropReason::CksumErr);
                    return;
                }
                if vif.spec.ip != 0 && src != vif.spec.ip && !vif.allows_source(src) {
                    p.meta.drop(DropReason::InvalidSource);
                    return;
                }
                if bridge {
                    self.fabric_bridge_out(t, p, total);
                    return;
                }
                p.buf.truncate(ETH + total);
                p.meta.next = Next::Lookup;
            }
            EtherType::ARP => self.arp_from_vm(t, vif.spec.id, p),
            ty if EtherType::is_vlan_tag(ty) => p.meta.drop(DropReason::VlanTagged),
            _ => p.meta.drop(DropReason::NowhereToGo),
        }
    }

    /// Proxy ARP: answer for the gateway and every address with a route in the VRF, with the
    /// vRouter MAC, straight back out of the asking interface.
    #[inline]
    fn arp_from_vm(&self, t: &Tables, vif: u16, p: &mut Pkt) {
        let vrf = p.meta.vrf;
        let d = p.buf.data_mut();
        let Ok(mut a) = ArpPacket::new_checked(&mut d[ETH..]) else {
            p.meta.drop(DropReason::InvalidArp);
            return;
        };
        if a.op() != arp::OP_REQUEST || a.tpa() == a.spa() {
            // Replies and gratuitous ARP: the agent may want to learn from them.
            p.meta.trap(TrapReason::Arp);
            return;
        }
        match t.lookup(vrf, a.tpa()) {
            Some((r, _)) if r.nh != NH_DISCARD => {
                let asker = a.sha();
                a.make_reply(MacAddr::VROUTER);
                d[0..6].copy_from_slice(&asker.0);
                d[6..12].copy_from_slice(&MacAddr::VROUTER.0);
                p.buf.truncate(ETH + arp::ARP_LEN);
                self.stats.vrf(vrf).arp_virtual_proxys.add(1);
                p.meta.tx(vif);
            }
            // An ip-fabric VM asks for an underlay neighbour (see `system`).
            _ if vrf == FABRIC_VRF => self.fabric_arp_out(t, p),
            _ => p.meta.drop(DropReason::ArpNoRoute),
        }
    }

    /// From the host interface: to a local ip-fabric VM (see `system`), else to the fabric.
    #[inline]
    fn host_input(&self, t: &Tables, p: &mut Pkt) {
        let d = p.buf.data();
        let ty = d.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]]));
        let for_vm = match ty {
            Some(EtherType::ARP) => self.fabric_arp_in(t, p),
            Some(EtherType::IPV4) => match d.get(ETH..).map(|ip| (ip, ip.first_chunk::<20>())) {
                Some((ip, Some(h))) => match crate::wire::ipv4::lengths(h, ip.len()) {
                    Ok((hl, total)) if crate::wire::ipv4::checksum_ok(h, ip, hl) => {
                        let dst = u32::from_be_bytes([h[16], h[17], h[18], h[19]]);
                        self.fabric_ip_in(t, p, dst, total)
                    }
                    _ => false,
                },
                _ => false,
            },
            _ => false,
        };
        if !for_vm {
            match t.host.fabric_vif {
                Some(f) => p.meta.tx(f),
                None => p.meta.drop(DropReason::NowhereToGo),
            }
        }
    }

    // Stays whole: the per-packet decap path (outer checks, label, inner classify) is one
    // inlined hot-path step; splitting it only adds call boundaries to read through.
    #[inline]
    fn fabric_input(&self, t: &Tables, p: &mut Pkt) {
        let to_host = |p: &mut Pkt| match t.host.host_vif {
            Some(h) => p.meta.tx(h),
            None => p.meta.drop(DropReason::NowhereToGo),
        };
        let d = p.buf.data();
        let Some(eth) = d.first_chunk::<ETH>() else {
            p.meta.drop(DropReason::Pull);
            return;
        };
        let ty = u16::from_be_bytes([eth[12], eth[13]]);
        if ty != EtherType::IPV4 {
            if ty != EtherType::ARP || !self.fabric_arp_in(t, p) {
                to_host(p);
            }
            return;
        }
        let ip = &d[ETH..];
        let Some(h) = ip.first_chunk::<20>() else {
            p.meta.drop(DropReason::Pull);
            return;
        };
        let Ok((hl, total)) = crate::wire::ipv4::lengths(h, ip.len()) else {
            p.meta.drop(DropReason::InvalidPacket);
            return;
        };
        // RFC 1812 5.2.2 for every IPv4 packet on the fabric, before any field of the header
        // decides where it goes (a flipped protocol or address bit would send it elsewhere).
        if !crate::wire::ipv4::checksum_ok(h, ip, hl) {
            p.meta.drop(DropReason::CksumErr);
            return;
        }
        let ip = &ip[..total];
        let dst = u32::from_be_bytes([h[16], h[17], h[18], h[19]]);
        let unfragmented = u16::from_be_bytes([h[6], h[7]]) & 0x3fff == 0;
        let seg = &ip[hl..];
        // Where the label sits, if this is overlay traffic.
        let label_at = match h[9] {
            ip_proto::UDP => match seg.first_chunk::<8>() {
                Some(udp) => {
                    let dport = u16::from_be_bytes([udp[2], udp[3]]);
                    if dport != MPLS_UDP_PORT && dport != MPLS_UDP_PORT_LEGACY {
                        None
                    } else if usize::from(u16::from_be_bytes([udp[4], udp[5]])) != seg.len() {
                        // The UDP length must say where the IP payload ends, or which of the
                        // two bounds the inner packet is unknown.
                        p.meta.drop(DropReason::InvalidPacket);
                        return;
                    } else {
                        Some(hl + 8)
                    }
                }
                None => None,
            },
            ip_proto::GRE => match seg.first_chunk::<4>() {
                Some(gre) => {
                    let flags = gre[0];
                    let opt = 4
                        * (usize::from(flags & 0x80 != 0)
                            + usize::from(flags & 0x20 != 0)
                            + usize::from(flags & 0x10 != 0));
                    let proto = u16::from_be_bytes([gre[2], gre[3]]);
                    if proto == GRE_PROTO_MPLS && gre[1] & 0x07 == 0 {
                        Some(hl + 4 + opt)
                    } else if dst == t.host.fabric_ip {
                        p.meta.drop(DropReason::InvalidProtocol);
                        return;
                    } else {
                        None
                    }
                }
                None => None,
            },
            _ => None,
        };
        let Some(label_at) = label_at else {
            if !self.fabric_ip_in(t, p, dst, total) {
                to_host(p);
            }
            return;
        };
        if dst != t.host.fabric_ip {
            p.meta.drop(DropReason::NotForHost);
            return;
        }
        if !unfragmented {
            // Outer fragments would need reassembly; senders must not fragment the underlay.
            p.meta.drop(DropReason::Fragments);
            return;
        }
        let inner_at = label_at + 4;
        let Some(lw) = ip.get(label_at..).and_then(|b| b.first_chunk::<4>()) else {
            p.meta.drop(DropReason::Pull);
            return;
        };
        let l = MplsLabel::from_word(u32::from_be_bytes(*lw));
        if !l.bos {
            p.meta.drop(DropReason::InvalidLabel);
            return;
        }
        let Some(nh) = t.label(l.label) else {
            p.meta.drop(DropReason::InvalidLabel);
            return;
        };
        let inner = &ip[inner_at..];
        if inner.first().map(|b| b >> 4) != Some(4) {
            p.meta.drop(DropReason::InvalidProtocol);
            return;
        }
        let Some(ih) = inner.first_chunk::<20>() else {
            p.meta.drop(DropReason::InvalidPacket);
            return;
        };
        let Ok((_, inner_total)) = crate::wire::ipv4::lengths(ih, inner.len()) else {
            p.meta.drop(DropReason::InvalidPacket);
            return;
        };
        // Keep 14 bytes in front of the inner packet for the Ethernet header the nexthop writes.
        let strip = inner_at; // ETH + inner_at - ETH
        if !p.buf.adjust_front(strip as isize) {
            p.meta.drop(DropReason::Pull);
            return;
        }
        p.buf.truncate(ETH + inner_total);
        p.meta.dec_ttl = false;
        match t.nh(nh) {
            Some(Nexthop::VrfTranslate { vrf }) => {
                p.meta.vrf = *vrf;
                self.stats.vrf(*vrf).vrf_translates.add(1);
                p.meta.next = Next::Lookup;
            }
            Some(Nexthop::Tunnel(_)) => p.meta.drop(DropReason::PktLoop),
            Some(Nexthop::Encap { oif, .. }) => {
                p.meta.vrf = t.vif(*oif).map_or(0, |v| v.spec.vrf);
                p.meta.nh = nh;
                p.meta.next = Next::Nexthop;
            }
            Some(_) => {
                p.meta.nh = nh;
                p.meta.next = Next::Nexthop;
            }
            None => p.meta.drop(DropReason::InvalidNh),
        }
    }

    #[inline]
    fn agent_input(&self, t: &Tables, p: &mut Pkt) {
        let Some(h) = AgentHeader::parse(p.buf.data()) else {
            p.meta.drop(DropReason::InvalidPacket);
            return;
        };
        if p.buf.pull_front(AGENT_HEADER_LEN).is_none() {
            p.meta.drop(DropReason::Pull);
            return;
        }
        match h.cmd {
            // Not back to pkt0 itself: what goes to the agent is only ever a trap.
            AgentCmd::TxVif if h.vif != p.meta.in_vif && t.vif(h.vif).is_some() => p.meta.tx(h.vif),
            AgentCmd::TxVif => p.meta.drop(DropReason::InvalidIf),
            AgentCmd::RouteInVrf => {
                let d = p.buf.data();
                if d.len() < ETH + 20 || crate::wire::ipv4::check(&d[ETH..]).is_err() {
                    p.meta.drop(DropReason::InvalidPacket);
                    return;
                }
                p.meta.vrf = h.vrf;
                p.meta.dec_ttl = false;
                p.meta.next = Next::Lookup;
            }
            AgentCmd::Trap => p.meta.drop(DropReason::InvalidPacket),
        }
    }

    /// FIP DNAT, TTL check, longest-prefix match and FIP SNAT for every packet waiting for a
    /// lookup. A first pass prefetches each packet's FIB slots so the probes of the second pass
    /// overlap their cache misses.
    fn lookup(&self, t: &Tables, batch: &mut Batch) {
        let pkts = batch.pkts_mut();
        if !t.fib.worth_prefetching() {
            for p in pkts.iter_mut() {
                if p.meta.next == Next::Lookup {
                    self.lookup_one(t, p);
                }
            }
            return;
        }
        // A large table: software-pipeline the probes. While packet i is looked up, the slots of
        // packet i + PREFETCH_AHEAD are being fetched, so about that many cache misses are in
        // flight at once (more would overflow the core's miss buffers and be dropped).
        let prefetch = |p: &Pkt| {
            if p.meta.next != Next::Lookup {
                return;
            }
            if let (Some(d), Some(v)) = (p.buf.data().get(ETH + 16..ETH + 20), t.vrf(p.meta.vrf)) {
                let dst = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
                t.fib.prefetch(p.meta.vrf, v.plens_for(dst), dst);
            }
        };
        for p in pkts.iter().take(PREFETCH_AHEAD) {
            prefetch(p);
        }
        for i in 0..pkts.len() {
            if let Some(ahead) = pkts.get(i + PREFETCH_AHEAD) {
                prefetch(ahead);
            }
            if pkts[i].meta.next == Next::Lookup {
                self.lookup_one(t, &mut pkts[i]);
            }
        }
    }

    #[inline]
    fn lookup_one(&self, t: &Tables, p: &mut Pkt) {
        let Some(vrf) = t.vrf(p.meta.vrf) else {
            p.meta.drop(DropReason::InvalidVrf);
            return;
        };
        let Some(h) = hdr34(p.buf.data_mut()) else {
            p.meta.drop(DropReason::Pull);
            return;
        };
        let mut dst = u32::from_be_bytes([h[ETH + 16], h[ETH + 17], h[ETH + 18], h[ETH + 19]]);
        let ttl = h[ETH + 8];
        let mut vrf_id = vrf.id;
        let mut plens = vrf.plens_for(dst);
        if vrf.fip_count != 0 {
            if let Some(f) = t.fips.get(vrf_id, dst) {
                let Some(vm) = t.vif(f.vif) else {
                    p.meta.drop(DropReason::InvalidIf);
                    return;
                };
                nat::rewrite(&mut p.buf.data_mut()[ETH..], Side::Dst, f.private_ip);
                self.stats.vrf(vrf_id).fip_dnats.add(1);
                dst = f.private_ip;
                vrf_id = vm.spec.vrf;
                plens = t.vrf(vrf_id).map_or(0, |v| v.plens_for(dst));
                p.meta.vrf = vrf_id;
            }
        }
        if p.meta.dec_ttl && ttl <= 1 {
            p.meta.trap(TrapReason::ZeroTtl);
            return;
        }
        let mut found = t
            .fib
            .lookup(vrf_id, plens, dst)
            .filter(|(r, _)| r.nh != NH_DISCARD);
        if found.is_none() && !p.meta.fip_tried {
            p.meta.fip_tried = true;
            found = self.try_snat(t, p);
        }
        match found {
            Some((r, _)) => {
                p.meta.nh = r.nh;
                p.meta.label = r.label.unwrap_or(NO_LABEL);
                p.meta.next = Next::Nexthop;
            }
            None => {
                let explicit = t.fib.lookup(vrf_id, plens, dst).is_some();
                if explicit {
                    self.stats.vrf(vrf_id).discards.add(1);
                    p.meta.drop(DropReason::Discard);
                } else {
                    p.meta.drop(DropReason::NoRoute);
                }
            }
        }
    }

    /// A VM packet with no route in its own VRF: if the VM has a floating IP whose VRF routes
    /// the destination, rewrite the source to the floating IP and forward in that VRF.
    /// Not inlined: only packets without a route in their own VRF come here.
    #[inline(never)]
    fn try_snat(&self, t: &Tables, p: &mut Pkt) -> Option<(crate::tables::Route, u8)> {
        let vif = t.vif(p.meta.in_vif)?;
        if vif.spec.kind != VifKind::Virtual || vif.fips.is_empty() {
            return None;
        }
        let h = hdr34(p.buf.data_mut())?;
        let src = u32::from_be_bytes([h[ETH + 12], h[ETH + 13], h[ETH + 14], h[ETH + 15]]);
        let dst = u32::from_be_bytes([h[ETH + 16], h[ETH + 17], h[ETH + 18], h[ETH + 19]]);
        for vf in vif.fips.iter().filter(|vf| vf.private_ip == src) {
            if let Some(found) = t.lookup(vf.vrf, dst).filter(|(r, _)| r.nh != NH_DISCARD) {
                nat::rewrite(&mut p.buf.data_mut()[ETH..], Side::Src, vf.fip);
                self.stats.vrf(vf.vrf).fip_snats.add(1);
                p.meta.vrf = vf.vrf;
                return Some(found);
            }
        }
        None
    }

    #[inline]
    fn nexthop(&self, t: &Tables, p: &mut Pkt) {
        let Some(mut nh) = t.nh(p.meta.nh) else {
            p.meta.drop(DropReason::InvalidNh);
            return;
        };
        let vrf_stats = self.stats.vrf(p.meta.vrf);
        // The ECMP hash, once per packet: the member's tunnel reuses it for its entropy.
        let mut hash = None;
        if let Nexthop::Composite(ecmp) = nh {
            vrf_stats.ecmp_composites.add(1);
            let h = ecmp_hash(p.buf.data());
            hash = Some(h);
            // The hash bucket's member: with keys (the agent's) the rendezvous winner, stable
            // when members come and go; without, the hash scaled to the member count.
            // In range by construction (see `Ecmp`).
            let (m_nh, m_label) = ecmp.members[ecmp.buckets.pick(h)];
            if let Some(l) = m_label {
                p.meta.label = l;
            }
            match t.nh(m_nh) {
                Some(Nexthop::Composite(_)) | None => {
                    p.meta.drop(DropReason::InvalidNh);
                    return;
                }
                Some(x) => nh = x,
            }
        }
        match nh {
            Nexthop::Encap { oif, l2 } => {
                let Some(h) = hdr34(p.buf.data_mut()) else {
                    p.meta.drop(DropReason::Pull);
                    return;
                };
                let (eth, ip) = h.split_at_mut(ETH);
                if p.meta.dec_ttl {
                    decrement_ttl(ip);
                }
                eth.copy_from_slice(l2);
                vrf_stats.encaps.add(1);
                p.meta.tx(*oif);
            }
            Nexthop::Tunnel(tpl) => {
                if p.meta.label == NO_LABEL {
                    p.meta.drop(DropReason::InvalidLabel);
                    return;
                }
                // (A GSO super-packet leaves as segments: each must fit.)
                if crate::gso::segment_len(&p.buf) > tpl.max_frame {
                    // Too big for the fabric once encapsulated: with DF the VM must learn the
                    // smaller MTU (the agent answers ICMP fragmentation needed); without DF the
                    // output stage fragments the inner packet (see `frag`).
                    if p.buf.data().get(ETH + 6).is_some_and(|f| f & 0x40 != 0) {
                        p.meta.trap_param = tpl.inner_mtu();
                        p.meta.trap(TrapReason::HandleDf);
                        return;
                    }
                    p.meta.frag = true;
                    p.meta.trap_param = (tpl.max_frame + (tpl.len - ETH)) as u32;
                }
                if p.meta.dec_ttl {
                    decrement_ttl(&mut p.buf.data_mut()[ETH..]);
                }
                let h = hash.unwrap_or_else(|| flow_hash(p.buf.data(), p.meta.vrf));
                let sport = udp_source_port(h);
                if !encap(&mut p.buf, tpl, p.meta.label, sport) {
                    p.meta.drop(DropReason::Push);
                    return;
                }
                match tpl.kind {
                    TunnelKind::MplsOverUdp => vrf_stats.udp_mpls_tunnels.add(1),
                    TunnelKind::MplsOverGre => vrf_stats.gre_mpls_tunnels.add(1),
                }
                p.meta.tx(tpl.oif);
            }
            Nexthop::Receive { oif } => {
                vrf_stats.receives.add(1);
                if Some(*oif) == t.host.agent_vif {
                    p.meta.trap(TrapReason::Receive);
                } else {
                    if let Some(v) = t.vif(*oif) {
                        p.buf.data_mut()[..6].copy_from_slice(&v.spec.mac.0);
                    }
                    p.meta.tx(*oif);
                }
            }
            Nexthop::Discard => {
                vrf_stats.discards.add(1);
                p.meta.drop(DropReason::Discard);
            }
            Nexthop::VrfTranslate { vrf } => {
                vrf_stats.vrf_translates.add(1);
                p.meta.vrf = *vrf;
                p.meta.next = Next::Lookup;
            }
            Nexthop::Composite(_) => p.meta.drop(DropReason::InvalidNh),
        }
    }

    #[cold]
    fn trap(&self, t: &Tables, p: &mut Pkt) {
        let reason = p.meta.trap;
        // The agent gets ordinary packets: a super-packet is cut to its first segment (the
        // agent only needs the headers).
        if p.buf.is_gso() && !crate::gso::trim_to_first(&mut p.buf) {
            p.meta.drop(DropReason::InvalidPacket);
            return;
        }
        let Some(agent) = t.host.agent_vif else {
            p.meta.drop(if reason == TrapReason::ZeroTtl {
                DropReason::TtlExceeded
            } else {
                DropReason::TrapNoIf
            });
            return;
        };
        let h = AgentHeader {
            cmd: AgentCmd::Trap,
            reason,
            vif: p.meta.in_vif,
            vrf: p.meta.vrf,
            param: p.meta.trap_param,
        };
        match p.buf.push_front(AGENT_HEADER_LEN) {
            Some(front) => {
                h.emit(front);
                if let Some(c) = self.stats.traps.get(reason as usize) {
                    c.add(1);
                }
                p.meta.tx(agent);
            }
            None => p.meta.drop(DropReason::Push),
        }
    }
}

/// Why a frame from a VM whose MAC addresses are not (vRouter, the interface's) must not be
/// routed: `Invalid Source` for another source MAC (anti-spoofing), `No L2 Route` for a
/// destination that is neither the vRouter nor a group address carrying an IPv4 multicast or
/// limited broadcast (RFC 1812 5.3.4 has a router discard unicast packets that arrived as
/// link-layer broadcasts); `None` for such a group frame, which is routed.
#[cold]
#[inline(never)]
fn l2_refusal(eth: &[u8; ETH], h: &[u8; 20], vif: &crate::tables::Vif) -> Option<DropReason> {
    if eth[6..12] != vif.spec.mac.0 && !vif.allows_mac(&eth[6..12]) {
        return Some(DropReason::InvalidSource);
    }
    let dst = u32::from_be_bytes([h[16], h[17], h[18], h[19]]);
    let group = eth[0] & 1 != 0 && (dst >> 28 == 0xe || dst == u32::MAX);
    (eth[..6] != MacAddr::VROUTER.0 && !group).then_some(DropReason::L2NoRoute)
}

/// The Ethernet and fixed IPv4 header of a packet, as a fixed-size array so field accesses need
/// no bounds checks. Every packet past classification has them (checked there).
#[inline(always)]
fn hdr34(d: &mut [u8]) -> Option<&mut [u8; ETH + 20]> {
    d.get_mut(..ETH + 20)?.try_into().ok()
}

/// Decrements the TTL of the IPv4 header at the start of `ip`, fixing its checksum.
///
/// RFC 1624 eqn. 3 specialised to this rewrite: the word (TTL, protocol) drops by 0x0100, so
/// `~m + m'` is the constant 0xfeff and the update is one addition and two folds.
#[inline(always)]
fn decrement_ttl(ip: &mut [u8]) {
    let Some(ip) = ip.get_mut(..12) else { return };
    let ip: &mut [u8; 12] = match ip.try_into() {
        Ok(h) => h,
        Err(_) => return,
    };
    if ip[8] == 0 {
        return;
    }
    ip[8] -= 1;
    // One fold is enough: 0xffff + 0xfeff carries once, and the folded sum cannot carry again.
    let s = u32::from(!u16::from_be_bytes([ip[10], ip[11]])) + 0xfeff;
    let c = !((s & 0xffff) + (s >> 16)) as u16;
    ip[10..12].copy_from_slice(&c.to_be_bytes());
}

/// The hashed fields of the Ethernet+IPv4 packet `d`: both addresses as one word, both ports
/// as one word (source in the first two bytes), the protocol. Read straight from the header:
/// byte order is irrelevant to a hash. Non-first fragments have no ports, so all fragments of
/// a packet take one path.
#[inline(always)]
fn hash_fields(d: &[u8]) -> Option<(u64, u32, u8)> {
    let h: &[u8; 20] = d.get(ETH..ETH + 20)?.try_into().ok()?;
    let addrs = u64::from_ne_bytes([h[12], h[13], h[14], h[15], h[16], h[17], h[18], h[19]]);
    let proto = h[9];
    let first = u16::from_be_bytes([h[6], h[7]]) & 0x3fff == 0;
    let hl = usize::from(h[0] & 0x0f) * 4;
    let ports = if first {
        match (proto, d.get(ETH + hl..ETH + hl + 6)) {
            (ip_proto::TCP | ip_proto::UDP, Some(l4)) => {
                u32::from_ne_bytes([l4[0], l4[1], l4[2], l4[3]])
            }
            // ICMP echo: the identifier, in both port positions as `l4::ports` does.
            (ip_proto::ICMP, Some(l4)) => u32::from_ne_bytes([l4[4], l4[5], l4[4], l4[5]]),
            (ip_proto::TCP | ip_proto::UDP, None) => match d.get(ETH + hl..ETH + hl + 4) {
                Some(l4) => u32::from_ne_bytes([l4[0], l4[1], l4[2], l4[3]]),
                None => 0,
            },
            _ => 0,
        }
    } else {
        0
    };
    Some((addrs, ports, proto))
}

/// The final mix of both hashes: a 64-bit key to 32 well-spread bits.
#[inline(always)]
fn mix(a: u64, b: u64) -> u32 {
    let h = (a ^ b.rotate_left(23)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let h = (h ^ (h >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (h >> 32) as u32
}

/// Hash of the inner 5-tuple and VRF of the Ethernet+IPv4 packet `d`: the MPLSoUDP source
/// port of a tunnel reached directly (not through a composite, which uses [`ecmp_hash`]).
#[inline]
pub fn flow_hash(d: &[u8], vrf: u16) -> u32 {
    let Some((addrs, ports, proto)) = hash_fields(d) else {
        return 0;
    };
    mix(
        addrs,
        u64::from(ports) << 32 | u64::from(proto) << 16 | u64::from(vrf),
    )
}

/// Symmetric hash of the inner 5-tuple of the Ethernet+IPv4 packet `d`: the ECMP member
/// choice (and the source port of the member's tunnel). Both directions of a flow hash alike,
/// so they land in the same bucket: the addresses enter as their XOR and sum, the ports as
/// their sum, all commutative; and the VRF does not enter (a service chain's forward direction
/// is hashed in the left VRF, the reply in the right one, and both sides' composites carry the
/// same service VMs' keys, so the bucket's rendezvous winner is the same VM; see
/// [`crate::tables::EcmpBuckets`]). Commutative combinations
/// instead of ordering the endpoints: a few instructions cheaper per packet, and as well spread
/// for the flows of a chain (many ports or clients against few servers).
#[inline]
pub fn ecmp_hash(d: &[u8]) -> u32 {
    let Some((addrs, ports, proto)) = hash_fields(d) else {
        return 0;
    };
    let (x, y) = (addrs as u32, (addrs >> 32) as u32);
    let a = u64::from(x ^ y) << 32 | u64::from(x.wrapping_add(y));
    let p = ports.wrapping_add(ports.rotate_left(16));
    mix(a, u64::from(p) << 32 | u64::from(proto) << 16)
}

/// Maps a flow hash into the RFC 7510 entropy range 49152..=65535.
#[inline]
pub fn udp_source_port(hash: u32) -> u16 {
    0xc000 | (hash as u16 & 0x3fff)
}

/// Replaces the Ethernet header of `buf` with the tunnel's outer headers and `label`
/// (bottom of stack, TTL = inner TTL). False if there is no headroom.
#[inline]
fn encap(
    buf: &mut PktBuf,
    tpl: &crate::tables::nexthop::TunnelTemplate,
    label: u32,
    sport: u16,
) -> bool {
    match tpl.kind {
        TunnelKind::MplsOverUdp => encap_fixed::<MPLSOUDP_HDR>(buf, tpl, label, Some(sport)),
        TunnelKind::MplsOverGre => encap_fixed::<MPLSOGRE_HDR>(buf, tpl, label, None),
    }
}

/// Ethernet + IPv4 + UDP + label.
const MPLSOUDP_HDR: usize = ETH + 20 + 8 + 4;
/// Ethernet + IPv4 + GRE + label.
const MPLSOGRE_HDR: usize = ETH + 20 + 4 + 4;

/// [`encap`] for an outer header of `N` bytes known at compile time, so the template copy and
/// every field write are fixed-size stores without bounds checks.
#[inline(always)]
fn encap_fixed<const N: usize>(
    buf: &mut PktBuf,
    tpl: &crate::tables::nexthop::TunnelTemplate,
    label: u32,
    sport: Option<u16>,
) -> bool {
    let inner_len = buf.len() - ETH;
    let Some(d) = buf.push_front(N - ETH) else {
        return false;
    };
    let Some((hdr, inner)) = d.split_first_chunk_mut::<N>() else {
        return false;
    };
    let Some(inner) = inner.first_chunk::<9>() else {
        return false;
    };
    let (ttl, ident) = (inner[8], [inner[4], inner[5]]);
    let Some(t) = tpl.hdr.first_chunk::<N>() else {
        return false;
    };
    hdr.copy_from_slice(t);
    let total = (N - ETH + inner_len) as u16;
    hdr[ETH + 2..ETH + 4].copy_from_slice(&total.to_be_bytes());
    hdr[ETH + 4..ETH + 6].copy_from_slice(&ident);
    let ck = !crate::wire::checksum::fold(
        tpl.ip_sum + u32::from(total) + u32::from(u16::from_be_bytes(ident)),
    );
    hdr[ETH + 10..ETH + 12].copy_from_slice(&ck.to_be_bytes());
    if let Some(sport) = sport {
        hdr[ETH + 20..ETH + 22].copy_from_slice(&sport.to_be_bytes());
        hdr[ETH + 24..ETH + 26].copy_from_slice(&(total - 20).to_be_bytes());
    }
    let word = MplsLabel {
        label,
        tc: 0,
        bos: true,
        ttl,
    }
    .word();
    hdr[N - 4..N].copy_from_slice(&word.to_be_bytes());
    true
}

/// Prefetches the buffer data of the packets in `batch` (helps when packets arrive cold, e.g.
/// from a NIC ring).
#[inline]
pub fn prefetch_packets(batch: &Batch) {
    for p in batch.pkts() {
        if let Some(b) = p.buf.data().first() {
            prefetch_read(b);
        }
    }
}

/// Offers every packet of `batch` to the capture as received on its input interface.
#[cold]
#[inline(never)]
fn capture_rx(c: &Capture, batch: &Batch) {
    for p in batch.pkts() {
        c.offer(p.meta.in_vif, false, p.buf.data());
    }
}

/// Offers every packet of `batch` about to be sent whole to the capture as sent on its output
/// interface (fragments are offered one by one as they are made).
#[cold]
#[inline(never)]
fn capture_tx(c: &Capture, batch: &Batch) {
    for p in batch.pkts() {
        if p.meta.next == Next::Tx && !p.meta.frag {
            c.offer(p.meta.out_vif, true, p.buf.data());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum;

    #[test]
    fn ttl_decrement_matches_rfc1624_for_every_checksum() {
        for ck in 0..=u16::MAX {
            for (ttl, proto) in [(64u8, 17u8), (2, 6), (255, 1), (1, 0xff)] {
                let mut ip = [0u8; 20];
                ip[8] = ttl;
                ip[9] = proto;
                ip[10..12].copy_from_slice(&ck.to_be_bytes());
                decrement_ttl(&mut ip);
                let old = u16::from_be_bytes([ttl, proto]);
                let new = u16::from_be_bytes([ttl - 1, proto]);
                assert_eq!(ip[8], ttl - 1);
                assert_eq!(
                    u16::from_be_bytes([ip[10], ip[11]]),
                    checksum::update16(ck, old, new),
                    "checksum {ck:#06x} ttl {ttl}"
                );
            }
        }
    }

    /// An Ethernet+IPv4 frame `src:sport -> dst:dport` of protocol `proto` (an ICMP echo
    /// carries `sport` as its identifier).
    fn frame(proto: u8, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; ETH + 20 + 8];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[ETH..];
        ip[0] = 0x45;
        ip[8] = 64;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        let l4 = &mut ip[20..];
        if proto == ip_proto::ICMP {
            l4[4..6].copy_from_slice(&sport.to_be_bytes());
        } else {
            l4[0..2].copy_from_slice(&sport.to_be_bytes());
            l4[2..4].copy_from_slice(&dport.to_be_bytes());
        }
        f
    }

    #[test]
    fn both_directions_of_a_flow_pick_the_same_ecmp_member() {
        let (a, b) = ([10, 1, 1, 5], [198, 51, 100, 6]);
        let mut checked = 0;
        for (proto, sport, dport) in [
            (ip_proto::TCP, 40000u16, 80u16),
            (ip_proto::UDP, 5353, 53),
            (ip_proto::TCP, 80, 80),
            (ip_proto::ICMP, 0x1234, 0),
        ] {
            for i in 0..64u16 {
                let fwd = frame(proto, a, b, sport.wrapping_add(i), dport);
                let rev = if proto == ip_proto::ICMP {
                    frame(proto, b, a, sport.wrapping_add(i), dport)
                } else {
                    frame(proto, b, a, dport, sport.wrapping_add(i))
                };
                // The forward packet is hashed in the left VRF, the reply in the right one:
                // the VRF is no input, so only the packets matter.
                let (hf, hr) = (ecmp_hash(&fwd), ecmp_hash(&rev));
                assert_eq!(hf, hr, "proto {proto} sport {}", sport.wrapping_add(i));
                for n in 1..=8 {
                    let b = crate::tables::EcmpBuckets::scaled(n);
                    assert_eq!(b.pick(hf), b.pick(hr));
                    assert!(b.pick(hf) < n);
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 256);
    }

    #[test]
    fn flows_spread_evenly_over_ecmp_members_by_port_and_by_client() {
        let mut per_member = [0u32; 4];
        for sport in 0..4096u16 {
            let f = frame(
                ip_proto::TCP,
                [10, 1, 1, 5],
                [198, 51, 100, 6],
                1024 + sport,
                80,
            );
            per_member[crate::tables::EcmpBuckets::scaled(4).pick(ecmp_hash(&f))] += 1;
        }
        // 1024 each if perfectly even; within 10%.
        assert!(
            per_member.iter().all(|&c| (922..=1126).contains(&c)),
            "{per_member:?}"
        );
        // Many clients, one port each, to one server spread as well.
        let mut per_member = [0u32; 4];
        for c in 0..4096u16 {
            let [hi, lo] = c.to_be_bytes();
            let f = frame(ip_proto::TCP, [10, 1, hi, lo], [198, 51, 100, 6], 40000, 80);
            per_member[crate::tables::EcmpBuckets::scaled(4).pick(ecmp_hash(&f))] += 1;
        }
        assert!(
            per_member.iter().all(|&c| (922..=1126).contains(&c)),
            "{per_member:?}"
        );
    }

    /// Member keys as the agent derives them (hashes of service VM uuids): arbitrary words.
    const KEYS: [u32; 8] = [
        0x5f3a_91c2,
        0x0bad_cafe,
        0x9e37_79b9,
        0x1234_5678,
        0xdead_beef,
        0x7fff_0001,
        0x0000_0003,
        0xc0ff_ee00,
    ];

    /// The key of the member each of `flows` picks through a keyed composite with `keys`.
    fn keyed_picks(keys: &[u32], flows: &[(u32, u32)]) -> Vec<u32> {
        let b = crate::tables::EcmpBuckets::build(keys);
        flows.iter().map(|&(h, _)| keys[b.pick(h)]).collect()
    }

    /// 4096 TCP flows from many ports of one client to one server.
    fn flow_hashes() -> Vec<(u32, u32)> {
        (0..4096u16)
            .map(|i| {
                let [hi, lo] = i.to_be_bytes();
                let fwd = frame(
                    ip_proto::TCP,
                    [10, 1, hi, lo],
                    [198, 51, 100, 6],
                    1024 + i,
                    80,
                );
                let rev = frame(
                    ip_proto::TCP,
                    [198, 51, 100, 6],
                    [10, 1, hi, lo],
                    80,
                    1024 + i,
                );
                (ecmp_hash(&fwd), ecmp_hash(&rev))
            })
            .collect()
    }

    #[test]
    fn keyed_ecmp_is_symmetric_whatever_the_member_order() {
        let flows = flow_hashes();
        for n in 1..=KEYS.len() {
            let left = &KEYS[..n];
            // The other side lists the same service VMs in another order.
            let mut right = left.to_vec();
            right.reverse();
            right.rotate_left(n / 2);
            let (bl, br) = (
                crate::tables::EcmpBuckets::build(left),
                crate::tables::EcmpBuckets::build(&right),
            );
            for &(hf, hr) in &flows {
                assert_eq!(left[bl.pick(hf)], right[br.pick(hr)], "{n} members");
            }
        }
    }

    #[test]
    fn keyed_ecmp_spreads_flows_within_ten_percent_over_four_members() {
        let keys = &KEYS[..4];
        let mut per_member = [0u32; 4];
        let b = crate::tables::EcmpBuckets::build(keys);
        for &(h, _) in &flow_hashes() {
            per_member[b.pick(h)] += 1;
        }
        assert!(
            per_member.iter().all(|&c| (922..=1126).contains(&c)),
            "{per_member:?}"
        );
    }

    #[test]
    fn removing_a_keyed_member_moves_only_its_own_flows() {
        let flows = flow_hashes();
        let all = &KEYS[..4];
        for gone in all {
            let left: Vec<u32> = all.iter().copied().filter(|k| k != gone).collect();
            let (mut moved_survivors, mut moved_lost) = (0, 0);
            let picks = keyed_picks(all, &flows).into_iter();
            for (before, after) in picks.zip(keyed_picks(&left, &flows)) {
                if before == *gone {
                    moved_lost += 1;
                } else if before != after {
                    moved_survivors += 1;
                }
            }
            assert_eq!(moved_survivors, 0, "member {gone:#x} removed");
            assert!(moved_lost > 0);
        }
    }

    #[test]
    fn adding_a_keyed_member_takes_about_one_nth_of_the_flows() {
        let flows = flow_hashes();
        for n in 2..=7 {
            let (old, new) = (&KEYS[..n], &KEYS[..=n]);
            let mut moved = 0usize;
            let picks = keyed_picks(old, &flows).into_iter();
            for (before, after) in picks.zip(keyed_picks(new, &flows)) {
                if before != after {
                    // Only to the new member.
                    assert_eq!(after, KEYS[n]);
                    moved += 1;
                }
            }
            // 1/(n+1) of the flows, with 3 points of margin.
            let limit = flows.len() / (n + 1) + flows.len() * 3 / 100;
            assert!(
                moved <= limit,
                "{n} -> {}: {moved} of {} moved",
                n + 1,
                flows.len()
            );
            assert!(moved > 0);
        }
    }

    #[test]
    fn ttl_decrement_keeps_a_real_header_valid() {
        let mut ip = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        decrement_ttl(&mut ip);
        assert_eq!(ip[8], 0x3f);
        assert_eq!(checksum::checksum(&ip), 0);
    }
}
