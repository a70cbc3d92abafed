//! The flow stage, for packets in VRFs with flow processing on (Contrail's policy flag).
//!
//! Before the first lookup, [`Pipeline::flow_capture`] records each packet's key (VRF and
//! 5-tuple as received), and [`Pipeline::flow_established`] finds the flows of the packets
//! waiting for a lookup: a forward flow whose cached route is current (no table operation since
//! the flow was made) forwards the packet on that route and it skips the lookup; the others keep
//! what the probe found for the flow stage. After the lookup (which applies floating-IP NAT and
//! picks the route) and before the nexthop, [`Pipeline::flow_stage`] prefetches a fixed
//! distance ahead and finds each packet's flow: a hit counts and applies its action; a miss
//! evaluates the policies of the VRFs involved inline (no agent round trip, nothing held) and
//! creates the forward/reverse pair, the reverse keyed on the packet as it leaves, so replies,
//! NATed or not, match it. A forward pair remembers its first packet's route (see
//! [`crate::tables::flow`]), valid until the next table operation.
//! Fragments: routing forwards them whole; flows use the first fragment's ports, remembered per
//! lcore by (VRF, addresses, protocol, IP id).
//!
//! ICMP errors (destination unreachable, time exceeded, parameter problem) belong to the flow of
//! the packet they quote: they are keyed on the quoted header and ports reversed (an error
//! travels back toward the quoted packet's sender, like a reply), never set up a flow of their
//! own, and are forwarded only if that flow exists, permits, and describes what the lookup did to
//! the quote (its NAT and VRF); otherwise they are dropped as `ICMP errors`.

use super::Pipeline;
use crate::batch::{Batch, Next, BATCH_SIZE};
use crate::drop::DropReason;
use crate::tables::flow::{
    tcp, FlowAction, FlowDropReason, FlowHit, FlowKey, InsertError, RouteCache,
};
use crate::tables::policy::Tuple;
use crate::tables::{Nexthop, Tables};
use crate::wire::{ip_proto, l4, ETHERNET_HEADER_LEN as ETH};

/// Entries the lcore's share of the aging sweep visits per batch.
const SWEEP_PER_BATCH: usize = 32;
/// How many packets ahead the flow stage prefetches flow slots.
const PREFETCH_AHEAD: usize = 12;
/// How many packets ahead [`Pipeline::flow_established`] prefetches: its loop is short, so
/// the same number of misses in flight needs a longer lead.
const ESTABLISHED_AHEAD: usize = 16;
/// Packets [`Pipeline::flow_established`] probes after a batch in which many packets started
/// flows.
const EARLY_SAMPLE: usize = 16;
/// Fragment-port memory slots (per lcore, direct-mapped).
const FRAG_SLOTS: usize = 1024;

/// Whether a packet's key was captured, and of what kind of packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Kind {
    /// Not captured: no flow processing.
    #[default]
    None,
    /// Keyed on its own headers.
    Plain,
    /// An ICMP error, keyed on the quoted packet, reversed.
    IcmpError,
    /// An ICMP error whose quoted header cannot be read.
    BadIcmpError,
}

/// What [`Pipeline::flow_established`] found for a packet, for the flow stage.
#[derive(Debug, Clone, Copy, Default)]
enum Probed {
    /// Not probed: the flow stage looks the flow up.
    #[default]
    No,
    /// No flow.
    Miss,
    /// This flow (its route not usable: the stage checks it against the lookup's result).
    Hit(FlowHit),
}

/// Per-packet flow state for one batch, and the lcore's fragment memory.
#[derive(Debug)]
pub(crate) struct FlowScratch {
    key: [FlowKey; BATCH_SIZE],
    hash: [u32; BATCH_SIZE],
    captured: [Kind; BATCH_SIZE],
    /// Captured while waiting for its first lookup: the lookup's result is the flow's route.
    routed: [bool; BATCH_SIZE],
    probed: [Probed; BATCH_SIZE],
    /// Packets whose flow [`Pipeline::flow_established`] looks up in its second pass.
    later: [u16; BATCH_SIZE],
    /// Keys of the pairs this lcore created since the probes in `probed`, as a bloom filter of
    /// [`INSERTED_BITS`] bits: a recorded miss whose key may be among them is probed again (an
    /// earlier packet of the batch made the flow a later one missed).
    inserted: [u64; INSERTED_BITS / 64],
    /// (packets, pairs created) of the last batch: when many of its packets started flows, the
    /// next batch probes only a sample early (new flows gain nothing from the early probe and
    /// many would pay for a second one).
    last: (u32, u32),
    now: u32,
    /// (tag, sport << 16 | dport); tag 0 is empty.
    frags: Box<[(u64, u32)]>,
}

impl Default for FlowScratch {
    fn default() -> Self {
        Self {
            key: [FlowKey::default(); BATCH_SIZE],
            hash: [0; BATCH_SIZE],
            captured: [Kind::None; BATCH_SIZE],
            routed: [false; BATCH_SIZE],
            probed: [Probed::No; BATCH_SIZE],
            later: [0; BATCH_SIZE],
            inserted: [0; INSERTED_BITS / 64],
            last: (0, 0),
            now: 0,
            frags: vec![(0, 0); FRAG_SLOTS].into_boxed_slice(),
        }
    }
}

/// Bits of [`FlowScratch::inserted`]: at two keys per new pair, a batch of new flows sets
/// under half of them.
const INSERTED_BITS: usize = 1024;

impl FlowScratch {
    #[inline]
    fn inserted_bit(hash: u32) -> (usize, u64) {
        // Bits the table index does not use first.
        let b = hash.rotate_right(16) as usize % INSERTED_BITS;
        (b / 64, 1 << (b % 64))
    }

    /// Records that the pair of a key with `hash` was (or may have been) inserted.
    #[inline]
    fn note_inserted(&mut self, hash: u32) {
        let (w, bit) = Self::inserted_bit(hash);
        self.inserted[w] |= bit;
    }

    /// False when no key with `hash` was inserted since the batch began.
    #[inline]
    fn maybe_inserted(&self, hash: u32) -> bool {
        let (w, bit) = Self::inserted_bit(hash);
        self.inserted[w] & bit != 0
    }
}

/// The fragment-memory tag of a packet: never 0.
#[inline]
fn frag_tag(vrf: u16, proto: u8, src: u32, dst: u32, id: u16) -> u64 {
    let k = FlowKey::new(vrf, proto, src, dst, id, 0);
    u64::from(k.hash()) << 32 | u64::from(id) << 16 | 1
}

impl Pipeline {
    /// Records the key of every packet that may need a flow and prefetches its home slot.
    // Once per batch, and large: kept out of `run` so its inlining stays as without flows.
    #[inline(never)]
    pub(super) fn flow_capture(&self, t: &Tables, batch: &Batch, fs: &mut FlowScratch) {
        fs.now = t.flows.now();
        fs.inserted = [0; INSERTED_BITS / 64];
        for (i, p) in batch.pkts().iter().enumerate() {
            capture(t, fs, i, p);
        }
    }
}

/// Records packet `i`'s key if it may need a flow, and prefetches its home slot.
#[inline(always)]
fn capture(t: &Tables, fs: &mut FlowScratch, i: usize, p: &crate::batch::Pkt) {
    fs.captured[i] = Kind::None;
    fs.routed[i] = false;
    fs.probed[i] = Probed::No;
    if !matches!(p.meta.next, Next::Lookup | Next::Nexthop)
        || Some(p.meta.in_vif) == t.host.agent_vif
    {
        return;
    }
    let d = p.buf.data();
    let Some(ip) = d.get(ETH..ETH + 20) else {
        return;
    };
    let ip: &[u8] = ip;
    let proto = ip[9];
    let src = u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]);
    let dst = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    let hl = usize::from(ip[0] & 0x0f) * 4;
    let (sport, dport) = if frag & 0x1fff == 0 {
        let seg = d.get(ETH + hl..).unwrap_or(&[]);
        if proto == ip_proto::ICMP && seg.first().is_some_and(|&t| is_flow_error(t)) {
            let plain = FlowKey::new(p.meta.vrf, proto, src, dst, 0, 0);
            capture_icmp_error(fs, i, plain, seg);
            return;
        }
        let ports = l4::ports(proto, seg);
        if frag & 0x2000 != 0 {
            // First of several fragments: remember its ports for the rest.
            let id = u16::from_be_bytes([ip[4], ip[5]]);
            let tag = frag_tag(p.meta.vrf, proto, src, dst, id);
            fs.frags[(tag >> 32) as usize % FRAG_SLOTS] =
                (tag, u32::from(ports.0) << 16 | u32::from(ports.1));
        }
        ports
    } else {
        let id = u16::from_be_bytes([ip[4], ip[5]]);
        let tag = frag_tag(p.meta.vrf, proto, src, dst, id);
        match fs.frags[(tag >> 32) as usize % FRAG_SLOTS] {
            (t, ports) if t == tag => ((ports >> 16) as u16, ports as u16),
            // Ahead of its first fragment: keyed without ports.
            _ => (0, 0),
        }
    };
    let key = FlowKey::new(p.meta.vrf, proto, src, dst, sport, dport);
    let h = key.hash();
    fs.key[i] = key;
    fs.hash[i] = h;
    fs.captured[i] = Kind::Plain;
    // Only where the packet's own VRF has flows on: elsewhere most packets have no
    // flow, and a miss costs a probe the flow stage can often skip.
    if t.vrf(p.meta.vrf).is_some_and(|v| v.flow.is_some()) {
        t.flows.prefetch_home(h);
        fs.routed[i] = p.meta.next == Next::Lookup && p.meta.dec_ttl;
    }
}

impl Pipeline {
    /// Finds the flows of the captured packets waiting for their first lookup. A forward flow
    /// whose cached route is current forwards the packet on it (counted like any hit) and the
    /// packet skips the lookup and the flow stage; a TTL about to expire is left to the lookup
    /// (which traps it). What the probe found otherwise is kept for the flow stage.
    ///
    /// Two passes, so a packet costs one cache line where it can: the capture prefetched every
    /// home slot, the first pass probes only those, and the packets whose flow is elsewhere
    /// (a quarter at half load) prefetch the next slots and are looked up in the second pass.
    #[inline(never)]
    pub(super) fn flow_established(&self, t: &Tables, batch: &mut Batch, fs: &mut FlowScratch) {
        let (flows, now, generation) = (&t.flows, fs.now, t.generation);
        // Many new flows last time (a flood, a burst of connections): probe a sample only, and
        // leave the rest to the flow stage.
        let (packets, created) = fs.last;
        let limit = if created * 4 > packets {
            EARLY_SAMPLE.min(batch.len())
        } else {
            batch.len()
        };
        fs.last = (batch.len() as u32, 0);
        let pkts = batch.pkts_mut();
        let mut later = 0;
        for (i, p) in pkts[..limit].iter_mut().enumerate() {
            if fs.routed.get(i + ESTABLISHED_AHEAD) == Some(&true) {
                flows.prefetch_home(fs.hash[i + ESTABLISHED_AHEAD]);
            }
            if !fs.routed[i] {
                continue;
            }
            match flows.lookup_home(&fs.key[i], fs.hash[i], now) {
                Some(hit) => established(fs, i, p, hit, t, generation),
                None => {
                    flows.prefetch_beyond_home(fs.hash[i]);
                    fs.later[later] = i as u16;
                    later += 1;
                }
            }
        }
        for k in 0..later {
            let i = usize::from(fs.later[k]);
            match flows.lookup(&fs.key[i], fs.hash[i], now) {
                Some(hit) => established(fs, i, &mut pkts[i], hit, t, generation),
                None => fs.probed[i] = Probed::Miss,
            }
        }
    }

    /// Finds or creates the flow of every captured packet now waiting for its nexthop.
    // Stays whole: the per-batch hot loop (probe, create, reverse pair) measured by callgrind.
    #[inline(never)]
    pub(super) fn flow_stage(&self, t: &Tables, batch: &mut Batch, fs: &mut FlowScratch) {
        for (i, p) in batch.pkts_mut().iter_mut().enumerate() {
            // Software pipelining: keep a bounded number of slot misses in flight (issuing a
            // whole batch's at once overflows the core's miss buffers and prefetches are lost).
            // Packets already probed had theirs fetched then.
            if let Some(&h) = fs.hash.get(i + PREFETCH_AHEAD) {
                if fs.captured[i + PREFETCH_AHEAD] != Kind::None
                    && matches!(fs.probed[i + PREFETCH_AHEAD], Probed::No)
                {
                    t.flows.prefetch(h);
                }
            }
            let kind = fs.captured[i];
            if kind == Kind::None || p.meta.next != Next::Nexthop {
                continue;
            }
            fs.captured[i] = Kind::None;
            let key = fs.key[i];
            let orig = t.vrf(key.vrf()).and_then(|v| v.flow.as_deref());
            let cur_vrf = p.meta.vrf;
            // Where replies come from: a local VM's own VRF (a route leak delivers into another
            // network), else the VRF the packet leaves in.
            let dst_vrf = || match t.nh(p.meta.nh) {
                Some(Nexthop::Encap { oif, .. }) => t.vif(*oif).map_or(cur_vrf, |v| v.spec.vrf),
                _ => cur_vrf,
            };
            let policy_of = |vrf: u16| {
                if vrf == key.vrf() {
                    None
                } else {
                    t.vrf(vrf).and_then(|v| v.flow.as_deref())
                }
            };
            if orig.is_none() && policy_of(cur_vrf).is_none() && policy_of(dst_vrf()).is_none() {
                continue;
            }
            if kind != Kind::Plain {
                self.flow_icmp_error(t, p, &key, fs.hash[i], kind, fs.now);
                continue;
            }
            let d = p.buf.data();
            let Some(ip) = d.get(ETH..ETH + 20) else {
                continue;
            };
            let ip: &[u8] = ip;
            let src = u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]);
            let dst = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
            let flags = if key.proto() == ip_proto::TCP {
                tcp_flags(d)
            } else {
                0
            };
            let len = (d.len() - ETH) as u64;
            let now = fs.now;
            let flows = &t.flows;
            // What the early probe found, unless this lcore changed it since: a hit's entry
            // evicted or reused, a miss's key possibly inserted by an earlier packet.
            let found = match std::mem::take(&mut fs.probed[i]) {
                Probed::Miss if !fs.maybe_inserted(fs.hash[i]) => None,
                Probed::Hit(hit) if flows.is_current(&hit) => Some(hit),
                _ => flows.lookup(&key, fs.hash[i], now),
            };
            if let Some(hit) = found {
                // The flow must describe what the lookup did; a changed floating IP or route
                // (another VRF) makes it stale: evict and set up again.
                let drop = hit.is_drop();
                if drop || (hit.rewritten(&key) == (src, dst) && hit.dvrf() == cur_vrf) {
                    if flows.hit(hit.idx, len, now, flags) {
                        flows.evict_pair(hit.idx);
                    }
                    if drop {
                        p.meta.drop(hit.drop_reason().counter());
                    }
                    continue;
                }
                flows.evict_pair(hit.idx);
            }
            // Miss: policy inline. The source side judges the tuple as sent, the destination
            // side (after NAT into another VRF) as it arrives.
            let dst_vrf = dst_vrf();
            let cur = policy_of(dst_vrf);
            let proto = key.proto();
            let sent = Tuple {
                proto,
                src: key.src(),
                dst: key.dst(),
                sport: key.sport(),
                dport: key.dport(),
            };
            let arrives = Tuple { src, dst, ..sent };
            let denied: Option<FlowDropReason> = orig
                .and_then(|c| c.verdict(&sent))
                .or_else(|| cur.and_then(|c| c.verdict(&arrives)));
            let snat = (src != key.src()).then_some(src);
            let dnat = (dst != key.dst()).then_some(dst);
            let (fa, ra) = if let Some(why) = denied {
                let a = FlowAction::Drop(why);
                (a, a)
            } else if snat.is_some() || dnat.is_some() {
                (
                    FlowAction::Nat { snat, dnat },
                    FlowAction::Nat {
                        snat: dnat.map(|_| key.dst()),
                        dnat: snat.map(|_| key.src()),
                    },
                )
            } else {
                (FlowAction::Forward, FlowAction::Forward)
            };
            let max = orig.or(cur).map_or(0, |c| c.max_flows);
            let rev = FlowKey::new(dst_vrf, proto, dst, src, key.dport(), key.sport());
            // Replies continue where this packet started when it changed VRF (NAT).
            let rev_dvrf = if cur_vrf != key.vrf() {
                key.vrf()
            } else {
                dst_vrf
            };
            let dvrfs = (cur_vrf, rev_dvrf);
            // The lookup's result is this flow's route when the packet was looked up as
            // received, in the VRF of its key, without NAT (a forward action).
            let route = (fs.routed[i] && cur_vrf == key.vrf()).then_some(RouteCache {
                nh: p.meta.nh,
                label: p.meta.label,
                generation: t.generation,
            });
            let limit = flows.vrf_limit(max);
            fs.note_inserted(fs.hash[i]);
            fs.note_inserted(rev.hash());
            fs.last.1 += 1;
            match flows.insert_pair(&key, fa, &rev, ra, dvrfs, limit, now, route) {
                Ok(idx) => {
                    if flows.hit(idx, len, now, flags) {
                        flows.evict_pair(idx);
                    }
                    if let Some(why) = denied {
                        p.meta.drop(why.counter());
                    }
                }
                Err(InsertError::VrfLimit | InsertError::TableFull) => {
                    p.meta
                        .drop(denied.map_or(DropReason::FlowTableFull, |why| why.counter()));
                }
            }
        }
    }

    /// An ICMP error in a flow VRF: forwarded as its quoted flow says, or dropped. `key` is the
    /// quoted packet's key reversed, in the VRF the error arrived in. The flow must exist, not
    /// drop, and match what the lookup did: the quote, read again after any floating-IP NAT (which
    /// translates it along with the outer header), reversed, is what the flow rewrites its key
    /// to, the error is addressed to the quoted packet's sender, and it continues in the flow's
    /// VRF. An error never creates, evicts or refreshes TCP state of a flow (it only counts).
    #[cold]
    #[inline(never)]
    fn flow_icmp_error(
        &self,
        t: &Tables,
        p: &mut crate::batch::Pkt,
        key: &FlowKey,
        hash: u32,
        kind: Kind,
        now: u32,
    ) {
        if kind == Kind::BadIcmpError {
            p.meta.drop(DropReason::InvalidPacket);
            return;
        }
        let Some(hit) = t.flows.lookup(key, hash, now) else {
            p.meta.drop(DropReason::IcmpError);
            return;
        };
        if hit.is_drop() {
            p.meta.drop(DropReason::FlowActionDrop);
            return;
        }
        let d = p.buf.data();
        let Some(ip) = d.get(ETH..ETH + 20) else {
            p.meta.drop(DropReason::Pull);
            return;
        };
        let dst = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
        let hl = usize::from(ip[0] & 0x0f) * 4;
        let Some(q) = d.get(ETH + hl + 8..ETH + hl + 28) else {
            p.meta.drop(DropReason::InvalidPacket);
            return;
        };
        let q_src = u32::from_be_bytes([q[12], q[13], q[14], q[15]]);
        let q_dst = u32::from_be_bytes([q[16], q[17], q[18], q[19]]);
        if hit.rewritten(key) != (q_dst, q_src) || q_src != dst || hit.dvrf() != p.meta.vrf {
            p.meta.drop(DropReason::IcmpError);
            return;
        }
        let len = (d.len() - ETH) as u64;
        // Flags 0: the count can never ask for an eviction.
        let _ = t.flows.hit(hit.idx, len, now, 0);
    }

    /// The lcore's share of aging, at the batch boundary.
    #[inline(never)]
    pub(super) fn flow_sweep(&self, t: &Tables, fs: &FlowScratch) {
        t.flows.sweep(fs.now, SWEEP_PER_BATCH);
    }
}

/// Packet `i`'s flow `hit`, found before the lookup: forwards it on the flow's cached route
/// when that is current, else keeps the hit for the flow stage.
#[inline(always)]
fn established(
    fs: &mut FlowScratch,
    i: usize,
    p: &mut crate::batch::Pkt,
    hit: FlowHit,
    t: &Tables,
    generation: u64,
) {
    let key = fs.key[i];
    let d = p.buf.data();
    let route = hit.cached_route(key.vrf(), generation);
    let (Some((nh, label)), Some(&ttl)) = (route, d.get(ETH + 8)) else {
        fs.probed[i] = Probed::Hit(hit);
        return;
    };
    if ttl <= 1 {
        fs.probed[i] = Probed::Hit(hit);
        return;
    }
    let flags = if key.proto() == ip_proto::TCP {
        tcp_flags(d)
    } else {
        0
    };
    if t.flows.hit(hit.idx, (d.len() - ETH) as u64, fs.now, flags) {
        t.flows.evict_pair(hit.idx);
    }
    p.meta.nh = nh;
    p.meta.label = label;
    p.meta.next = Next::Nexthop;
    fs.captured[i] = Kind::None;
}

/// ICMP types that report on a packet of a flow (and quote it): destination unreachable
/// (including fragmentation needed), time exceeded, parameter problem.
#[inline]
fn is_flow_error(icmp_type: u8) -> bool {
    matches!(icmp_type, 3 | 11 | 12)
}

/// Captures packet `i`, the ICMP error `icmp` (from its type on) whose own headers give the key
/// `plain`, under its quoted packet's key (see [`quoted_key`]). Kept out of the capture loop.
#[cold]
#[inline(never)]
fn capture_icmp_error(fs: &mut FlowScratch, i: usize, plain: FlowKey, icmp: &[u8]) {
    let (key, kind) = match quoted_key(plain.vrf(), icmp) {
        Some(k) => (k, Kind::IcmpError),
        None => (plain, Kind::BadIcmpError),
    };
    fs.key[i] = key;
    fs.hash[i] = key.hash();
    fs.captured[i] = kind;
}

/// The key of the flow an ICMP error `icmp` (from its type on) belongs to, arriving in `vrf`:
/// the quoted IPv4 header and first transport bytes, reversed. `None` if the quote is not a
/// readable IPv4 header (ports of a quoted non-first fragment, or cut short, are 0).
#[inline]
fn quoted_key(vrf: u16, icmp: &[u8]) -> Option<FlowKey> {
    let q = icmp.get(8..)?;
    let h = q.get(..20)?;
    let hl = usize::from(h[0] & 0x0f) * 4;
    if h[0] >> 4 != 4 || hl < 20 {
        return None;
    }
    let proto = h[9];
    let src = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
    let dst = u32::from_be_bytes([h[16], h[17], h[18], h[19]]);
    let (sport, dport) = if u16::from_be_bytes([h[6], h[7]]) & 0x1fff == 0 {
        l4::ports(proto, q.get(hl..).unwrap_or(&[]))
    } else {
        (0, 0)
    };
    Some(FlowKey::new(vrf, proto, dst, src, dport, sport))
}

/// The [`tcp`] flags of a TCP first fragment (0 otherwise, and for plain ACKs only ACK).
#[inline]
fn tcp_flags(d: &[u8]) -> u32 {
    let Some(ip) = d.get(ETH..ETH + 20) else {
        return 0;
    };
    if ip[9] != ip_proto::TCP || u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
        return 0;
    }
    let hl = usize::from(ip[0] & 0x0f) * 4;
    let Some(&f) = d.get(ETH + hl + 13) else {
        return 0;
    };
    let mut out = 0;
    if f & 0x01 != 0 {
        out |= tcp::FIN;
    }
    if f & 0x02 != 0 {
        out |= tcp::SYN;
    }
    if f & 0x04 != 0 {
        out |= tcp::RST;
    }
    if f & 0x10 != 0 {
        out |= tcp::ACK;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_key_is_the_quoted_packet_reversed() {
        // ICMP port unreachable quoting UDP 10.1.1.3:40000 -> 10.2.2.3:5001.
        let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&[0x45, 0, 0, 33, 0, 1, 0x40, 0, 63, 17, 0, 0]);
        icmp.extend_from_slice(&[10, 1, 1, 3, 10, 2, 2, 3]);
        icmp.extend_from_slice(&[0x9c, 0x40, 0x13, 0x89, 0, 13, 0, 0]);
        let k = quoted_key(3, &icmp).expect("readable quote");
        assert_eq!(
            k,
            FlowKey::new(3, 17, 0x0a02_0203, 0x0a01_0103, 5001, 40000)
        );
        // Only the first 4 transport bytes quoted still give the ports; fewer give none.
        assert_eq!(quoted_key(3, &icmp[..8 + 24]), Some(k));
        let k = quoted_key(3, &icmp[..8 + 22]).expect("header only");
        assert_eq!((k.sport(), k.dport()), (0, 0));
        // A quoted non-first fragment has no ports.
        let mut frag = icmp.clone();
        frag[8 + 7] = 3;
        let k = quoted_key(3, &frag).expect("fragment");
        assert_eq!((k.sport(), k.dport()), (0, 0));
        // Not IPv4, a bad IHL, or short of a header: unreadable.
        let mut v6 = icmp.clone();
        v6[8] = 0x65;
        assert_eq!(quoted_key(3, &v6), None);
        let mut ihl = icmp.clone();
        ihl[8] = 0x44;
        assert_eq!(quoted_key(3, &ihl), None);
        assert_eq!(quoted_key(3, &icmp[..8 + 19]), None);
    }

    #[test]
    fn only_errors_that_quote_a_flow_packet_are_flow_errors() {
        for t in [3, 11, 12] {
            assert!(is_flow_error(t));
        }
        // Echo reply/request, redirect, source quench, timestamp.
        for t in [0, 8, 5, 4, 13, 14] {
            assert!(!is_flow_error(t));
        }
    }
}
