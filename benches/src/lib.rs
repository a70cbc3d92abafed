//! Benchmark drivers for the vRouter dataplane.
//!
//! [`run_case`] moves packets the way the daemon does: a generator port receives into pool
//! buffers (copying a 64-byte frame, as a NIC's DMA would), the pipeline runs over the batch,
//! the output stage sorts packets into per-port queues, and sink ports "transmit" them by
//! recycling the buffers. Nothing allocates per packet; like DPDK's testpmd on `net_null`.

pub mod stage;

use std::time::{Duration, Instant};
use vrouter_dataplane::batch::Batch;
use vrouter_dataplane::buf::{BufPool, PktBuf};
use vrouter_dataplane::harness::fixture::{self, *};
use vrouter_dataplane::pipeline::Pipeline;
use vrouter_dataplane::port::{Port, TxQueues};
use vrouter_dataplane::stats::StatsRegistry;
use vrouter_dataplane::tables::{
    new_tables, FlowParams, Limits, Route, TableOp, TablesReader, TablesWriter,
};
use vrouter_dataplane::wire::{checksum, MacAddr};

/// The benchmark cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// Swap the MACs only, same harness: the floor.
    BaselineL2Touch,
    /// VM to VM on this host.
    L3Local,
    /// VM to a remote host over MPLSoUDP.
    EncapMplsoudp,
    /// VM to a remote host over MPLSoGRE.
    EncapMplsogre,
    /// VM traffic to the outside through a scaled-out service instance: its route (the public
    /// subnet's /24 the agent installs for the chain) resolves to a 4-member ECMP composite of MPLSoUDP tunnels to four hosts (each member
    /// with its own label), the member picked per packet by the flow hash over 1024 distinct
    /// UDP port pairs.
    ServiceChainEcmp,
    /// Fabric MPLSoUDP to a local VM.
    DecapMplsoudp,
    /// Floating-IP traffic from the public VRF to a VM.
    FipDnat,
    /// VM traffic leaving through its floating IP.
    FipSnat,
    /// Policy VRFs, established flows: VM A (vn1) to VM C (vn2) over `flows` distinct UDP
    /// 5-tuples, every packet a flow hit.
    FlowForward,
    /// Policy VRFs, a new flow every packet: the same traffic, but each packet's previous flow
    /// has aged out (idle timeout 0, clock advanced per batch), so each pays eviction, policy
    /// evaluation on both networks (second rule matches) and pair setup.
    FlowMissPolicy,
}

impl Case {
    /// The flow cases (run per flow count, not per route count).
    pub const FLOWS: [Case; 2] = [Case::FlowForward, Case::FlowMissPolicy];

    /// Every case, in report order.
    pub const ALL: [Case; 10] = [
        Case::BaselineL2Touch,
        Case::L3Local,
        Case::EncapMplsoudp,
        Case::ServiceChainEcmp,
        Case::EncapMplsogre,
        Case::DecapMplsoudp,
        Case::FipDnat,
        Case::FipSnat,
        Case::FlowForward,
        Case::FlowMissPolicy,
    ];

    /// Report name.
    pub fn name(self) -> &'static str {
        match self {
            Case::BaselineL2Touch => "baseline-l2-touch",
            Case::L3Local => "l3-local",
            Case::EncapMplsoudp => "encap-mplsoudp",
            Case::EncapMplsogre => "encap-mplsogre",
            Case::ServiceChainEcmp => "service-chain-ecmp",
            Case::DecapMplsoudp => "decap-mplsoudp",
            Case::FipDnat => "fip-dnat",
            Case::FipSnat => "fip-snat",
            Case::FlowForward => "flow-forward",
            Case::FlowMissPolicy => "flow-miss-policy",
        }
    }

    /// Parses a report name.
    pub fn from_name(s: &str) -> Option<Case> {
        Case::ALL.into_iter().find(|c| c.name() == s)
    }
}

/// One measurement.
#[derive(Debug, Clone)]
pub struct Report {
    /// Case.
    pub case: Case,
    /// Million packets per second.
    pub mpps: f64,
    /// Nanoseconds per packet.
    pub ns_per_pkt: f64,
    /// Routes in the VRF.
    pub routes: usize,
    /// Flows (distinct 5-tuples of the flow cases; 0 otherwise).
    pub flows: usize,
    /// Batch size.
    pub batch: usize,
    /// Frame length.
    pub pkt_len: usize,
    /// Packets forwarded.
    pub packets: u64,
    /// Packets dropped (must be 0 for a valid run).
    pub drops: u64,
    /// Mean rate over the whole run, Mpps (`mpps` is the best window's when `windows` > 1).
    pub mean_mpps: f64,
    /// Equal windows the run was split into.
    pub windows: usize,
}

impl Report {
    /// The JSON line `pipeline-bench --json` prints.
    pub fn json(&self) -> String {
        serde_json::json!({
            "case": self.case.name(), "mpps": round3(self.mpps), "ns_per_pkt": round3(self.ns_per_pkt),
            "routes": self.routes, "flows": self.flows, "batch": self.batch, "pkt_len": self.pkt_len,
            "packets": self.packets, "drops": self.drops, "mean_mpps": round3(self.mean_mpps),
            "windows": self.windows,
        })
        .to_string()
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A traffic generator port: copies a template frame into each buffer and writes the next
/// destination address from a list into it (fixing the IP checksum incrementally).
#[derive(Debug)]
pub struct GenPort {
    template: Vec<u8>,
    /// Offset of the IPv4 header whose destination is varied.
    ip_at: usize,
    dsts: Vec<u32>,
    next: usize,
    /// (source port << 16 | destination port) per packet, cycled, when non-empty.
    ports: Vec<u32>,
    next_port: usize,
    base_dst: u32,
    base_ck: u16,
    /// Most packets one receive call returns.
    pub burst: usize,
}

impl GenPort {
    /// Generates `template`, varying the destination of the IPv4 header at `ip_at` over `dsts`.
    pub fn new(template: Vec<u8>, ip_at: usize, dsts: Vec<u32>) -> Self {
        let ip = &template[ip_at..];
        let base_dst = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
        let base_ck = u16::from_be_bytes([ip[10], ip[11]]);
        Self {
            template,
            ip_at,
            dsts,
            next: 0,
            ports: Vec::new(),
            next_port: 0,
            base_dst,
            base_ck,
            burst: vrouter_dataplane::BATCH_SIZE,
        }
    }
}

impl GenPort {
    /// The destinations it cycles through.
    pub fn destinations(&self) -> &[u32] {
        &self.dsts
    }

    /// Also cycles the UDP/TCP ports over `ports` (sport << 16 | dport); the template's UDP
    /// checksum must be 0.
    pub fn with_ports(mut self, ports: Vec<u32>) -> Self {
        self.ports = ports;
        self
    }
}

impl Port for GenPort {
    fn name(&self) -> &str {
        "gen"
    }

    #[inline]
    fn rx_burst(&mut self, pool: &mut BufPool, batch: &mut Batch, vif: u16) -> usize {
        let mut n = 0;
        let many = self.dsts.len() > 1;
        while !batch.is_full() && n < self.burst {
            let Some(mut b) = pool.alloc() else { break };
            b.fill(&self.template);
            if many {
                let dst = self.dsts[self.next];
                self.next = if self.next + 1 == self.dsts.len() {
                    0
                } else {
                    self.next + 1
                };
                let ip = &mut b.data_mut()[self.ip_at..];
                ip[16..20].copy_from_slice(&dst.to_be_bytes());
                let ck = checksum::update32(self.base_ck, self.base_dst, dst);
                ip[10..12].copy_from_slice(&ck.to_be_bytes());
            }
            if !self.ports.is_empty() {
                let pp = self.ports[self.next_port];
                self.next_port = if self.next_port + 1 == self.ports.len() {
                    0
                } else {
                    self.next_port + 1
                };
                let hl = usize::from(self.template[self.ip_at] & 0x0f) * 4;
                let l4 = &mut b.data_mut()[self.ip_at + hl..];
                l4[0..4].copy_from_slice(&pp.to_be_bytes());
            }
            if let Err(b) = batch.push(b, vif) {
                pool.free(b);
                break;
            }
            n += 1;
        }
        n
    }

    fn tx_burst(&mut self, pool: &mut BufPool, pkts: &mut Vec<PktBuf>) -> usize {
        let n = pkts.len();
        for b in pkts.drain(..) {
            pool.free(b);
        }
        n
    }
}

/// A sink port: counts and recycles.
#[derive(Debug, Default)]
pub struct SinkPort {
    /// Frames sent.
    pub sent: u64,
}

impl Port for SinkPort {
    fn name(&self) -> &str {
        "sink"
    }
    fn rx_burst(&mut self, _: &mut BufPool, _: &mut Batch, _: u16) -> usize {
        0
    }
    #[inline]
    fn tx_burst(&mut self, pool: &mut BufPool, pkts: &mut Vec<PktBuf>) -> usize {
        let n = pkts.len();
        self.sent += n as u64;
        for b in pkts.drain(..) {
            pool.free(b);
        }
        n
    }
}

fn frame_udp(
    smac: MacAddr,
    dmac: MacAddr,
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
    len: usize,
) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2(smac.0, dmac.0)
        .ipv4(src.to_be_bytes(), dst.to_be_bytes(), 64)
        .udp(sport, dport);
    let payload = vec![0u8; len.saturating_sub(14 + 20 + 8)];
    let mut v = Vec::new();
    // Building into a Vec only fails on I/O errors, which a Vec does not have.
    let _ = b.write(&mut v, &payload);
    v
}

fn mplsoudp(outer_src: u32, label: u32, inner: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&FABRIC_MAC.0);
    v.extend_from_slice(&UNDERLAY_MAC.0);
    v.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + 4 + inner.len()) as u16;
    let mut ip = [
        0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[12..16].copy_from_slice(&outer_src.to_be_bytes());
    ip[16..20].copy_from_slice(&HOST_IP.to_be_bytes());
    let ck = checksum::checksum(&ip);
    ip[10..12].copy_from_slice(&ck.to_be_bytes());
    v.extend_from_slice(&ip);
    v.extend_from_slice(&50000u16.to_be_bytes());
    v.extend_from_slice(&6635u16.to_be_bytes());
    v.extend_from_slice(&(total - 20).to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(&((label << 12) | 0x100 | 63).to_be_bytes());
    v.extend_from_slice(inner);
    v
}

/// Deterministic pseudo-random numbers (xorshift), so every run measures the same tables.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }
    /// Next value.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Adds `n` routes (a random mix of /32 and /24 prefixes via the MPLSoUDP tunnel) to vn1 and
/// returns destinations covered by them, one per route, shuffled.
fn add_routes(w: &mut TablesWriter, n: usize) -> Vec<u32> {
    let mut rng = Rng::new(0x5eed_1234);
    let mut dsts = Vec::with_capacity(n);
    let mut ops = Vec::with_capacity(n.min(100_000));
    let mut seen = std::collections::HashSet::with_capacity(n);
    while dsts.len() < n {
        let r = rng.next();
        // Unicast space outside the fixture's own prefixes.
        let addr = (r as u32 % 0xdf00_0000).max(0x0100_0000) | 0x0100_0000;
        if (addr >> 24) == 10 || (addr >> 24) == 192 || (addr >> 24) == 198 || (addr >> 24) == 203 {
            continue;
        }
        let plen: u8 = if r >> 63 == 0 { 32 } else { 24 };
        let prefix = addr & vrouter_dataplane::tables::fib::prefix_mask(plen);
        if !seen.insert((prefix, plen)) {
            continue;
        }
        let host = if plen == 24 {
            prefix | ((r >> 40) as u32 & 0xff)
        } else {
            prefix
        };
        dsts.push(host);
        ops.push(TableOp::AddRoute {
            vrf: VRF_VN1,
            prefix,
            plen,
            route: Route {
                nh: NH_TUN_UDP,
                label: Some(1000 + (dsts.len() as u32 % 4000)),
                proxy_arp: true,
            },
        });
        if ops.len() == 100_000 {
            apply(w, std::mem::take(&mut ops));
        }
    }
    apply(w, ops);
    // Shuffle so consecutive packets hit unrelated table slots.
    for i in (1..dsts.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        dsts.swap(i, j);
    }
    dsts
}

fn apply(w: &mut TablesWriter, ops: Vec<TableOp>) {
    if let Err((i, e)) = w.apply(ops) {
        panic!("bench fixture operation {i} refused: {e}");
    }
}

/// First nexthop id of [`service_chain_ops`] (clear of the fixture's).
const NH_CHAIN: u32 = 40;

/// A service chain scaled out to four instances on four hosts, as the agent programs it: a
/// tunnel per host (the fixture's MPLSoUDP one and three more), an ECMP composite of them with
/// each instance interface's label, and vn1's routes of the chain toward the public network to
/// it: the public subnet (the outside address's /24) and the default route.
fn service_chain_ops() -> Vec<TableOp> {
    use vrouter_dataplane::tables::{NexthopSpec, TunnelKind};
    let mut ops = Vec::new();
    let mut members = vec![(NH_TUN_UDP, Some(LABEL_REMOTE_UDP))];
    for i in 0..3u32 {
        let id = NH_CHAIN + i;
        ops.push(TableOp::AddNh {
            id,
            spec: NexthopSpec::Tunnel {
                oif: FABRIC,
                kind: TunnelKind::MplsOverUdp,
                sip: HOST_IP,
                dip: REMOTE_UDP + 10 + i,
                dmac: UNDERLAY_MAC,
                smac: FABRIC_MAC,
            },
        });
        members.push((id, Some(2000 + i)));
    }
    let composite = NH_CHAIN + 3;
    ops.push(TableOp::AddNh {
        id: composite,
        // Keyed as the agent's: the member is the bucket's rendezvous winner.
        spec: NexthopSpec::Composite {
            keys: (0..members.len() as u32)
                .map(|i| 0x9e37_79b9u32.wrapping_mul(i + 1))
                .collect(),
            members,
        },
    });
    for (prefix, plen) in [(OUTSIDE & 0xffff_ff00, 24), (0, 0)] {
        ops.push(TableOp::AddRoute {
            vrf: VRF_VN1,
            prefix,
            plen,
            route: Route {
                nh: composite,
                label: None,
                proxy_arp: false,
            },
        });
    }
    ops
}

/// `n` distinct (sport << 16 | dport) pairs, shuffled, clear of DHCP's port 67.
fn port_pairs(n: usize) -> Vec<u32> {
    let mut rng = Rng::new(0xf10f_5eed);
    let mut v: Vec<u32> = (0..n as u32)
        .map(|i| (1024 + (i >> 15)) << 16 | (0x8000 | (i & 0x7fff)))
        .collect();
    for i in (1..v.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

/// Builds tables for `case` with `routes` extra routes (or, for the flow cases, room for
/// `routes` flows); returns the writer (keep it alive), a reader, the generator and the input
/// vif.
pub fn setup(
    case: Case,
    routes: usize,
    pkt_len: usize,
) -> (TablesWriter, TablesReader, GenPort, u16) {
    let flow_case = Case::FLOWS.contains(&case);
    let flows = if flow_case { routes.max(1) } else { 0 };
    let limits = Limits {
        routes: if flow_case { 4096 } else { routes.max(4096) },
        // Two entries per flow at most half full.
        flows: (flows * 4).next_power_of_two().max(1 << 16) as u32,
        ..Limits::default()
    };
    let (mut w, r) = new_tables(limits);
    apply(&mut w, fixture::ops());
    if flow_case {
        let mut ops = fixture::policy_ops((flows * 2 + 1024) as u32);
        if case == Case::FlowMissPolicy {
            ops.push(TableOp::SetFlowParams(FlowParams {
                idle_timeout_s: 0,
                drop_timeout_s: 0,
                closed_timeout_s: 0,
            }));
        }
        apply(&mut w, ops);
        w.read(|t| t.flows.set_clock(Some(1)));
        let mut udp = frame_udp(MAC_A, MacAddr::VROUTER, IP_A, IP_C, 40000, 5001, pkt_len);
        udp[14 + 20 + 6] = 0;
        udp[14 + 20 + 7] = 0;
        let gen = GenPort::new(udp, 14, vec![IP_C]).with_ports(port_pairs(flows));
        return (w, r, gen, VM_A);
    }
    let extra = if routes > 1 {
        add_routes(&mut w, routes)
    } else {
        Vec::new()
    };
    let vm_b = |dst| frame_udp(MAC_B, MacAddr::VROUTER, IP_B, dst, 40000, 5001, pkt_len);
    let gen = match case {
        Case::BaselineL2Touch | Case::L3Local => GenPort::new(vm_b(IP_A), 14, vec![IP_A]),
        Case::EncapMplsoudp => {
            let dsts = if extra.is_empty() {
                vec![IP_REMOTE_UDP]
            } else {
                extra
            };
            GenPort::new(vm_b(dsts[0]), 14, dsts)
        }
        Case::EncapMplsogre => GenPort::new(vm_b(IP_REMOTE_GRE), 14, vec![IP_REMOTE_GRE]),
        Case::ServiceChainEcmp => {
            apply(&mut w, service_chain_ops());
            let mut udp = vm_b(OUTSIDE);
            udp[14 + 20 + 6] = 0;
            udp[14 + 20 + 7] = 0;
            GenPort::new(udp, 14, vec![OUTSIDE]).with_ports(port_pairs(1024))
        }
        Case::DecapMplsoudp => {
            let inner = frame_udp(
                MAC_B,
                MAC_A,
                IP_REMOTE_UDP,
                IP_A,
                5001,
                40000,
                pkt_len.saturating_sub(32),
            );
            GenPort::new(
                mplsoudp(REMOTE_UDP, LABEL_A, &inner[14..]),
                14 + 32,
                vec![IP_A],
            )
        }
        Case::FipDnat => {
            let inner = frame_udp(
                MAC_B,
                MAC_A,
                OUTSIDE,
                FIP_A,
                443,
                40000,
                pkt_len.saturating_sub(32),
            );
            GenPort::new(
                mplsoudp(GATEWAY, LABEL_PUBLIC_TABLE, &inner[14..]),
                14 + 32,
                vec![FIP_A],
            )
        }
        Case::FipSnat => GenPort::new(
            frame_udp(MAC_A, MacAddr::VROUTER, IP_A, OUTSIDE, 40000, 443, pkt_len),
            14,
            vec![OUTSIDE],
        ),
        Case::FlowForward | Case::FlowMissPolicy => unreachable!("set up above"),
    };
    let in_vif = match case {
        Case::DecapMplsoudp | Case::FipDnat => FABRIC,
        Case::FipSnat => VM_A,
        _ => VM_B,
    };
    (w, r, gen, in_vif)
}

/// How a case is run.
#[derive(Debug, Clone, Copy)]
pub struct RunOpts {
    /// Packets per receive burst (at most `BATCH_SIZE`).
    pub batch: usize,
    /// Frame length.
    pub pkt_len: usize,
    /// Measuring time (ignored when `packets` is set).
    pub duration: Duration,
    /// A fixed packet count instead of a duration (for callgrind).
    pub packets: Option<u64>,
    /// Split the duration into this many equal windows and report the fastest: on a shared
    /// host, other tenants' bursts slow some windows, and the fastest is the machine's rate.
    pub windows: usize,
}

/// The sink ports, boxed because [`TxQueues::flush`] takes boxed ports (as the daemon's are).
type Sinks = Vec<Box<SinkPort>>;

/// The ports and buffers the packets of a run go through, kept together so that each phase of
/// [`run_case`] drives the same step over them.
struct Rig {
    gen: GenPort,
    pool: BufPool,
    batch: Batch,
    sinks: Sinks,
}

impl Rig {
    /// A rig receiving from `gen` and transmitting to `sinks`, with a pool of 4096 buffers.
    fn new(gen: GenPort, sinks: Sinks) -> Self {
        Rig {
            gen,
            pool: BufPool::new(4 * 1024),
            batch: Batch::new(),
            sinks,
        }
    }

    /// Frames the sinks have transmitted so far.
    fn sent(&self) -> u64 {
        self.sinks.iter().map(|s| s.sent).sum()
    }

    /// One receive, pipeline and transmit step over the rig.
    #[inline(always)]
    fn step<F: Step>(&mut self, step: &mut F) {
        step(
            &mut self.gen,
            &mut self.pool,
            &mut self.batch,
            &mut self.sinks,
        );
    }
}

/// One step of a run: receive a batch from the generator, process it, transmit to the sinks.
trait Step: FnMut(&mut GenPort, &mut BufPool, &mut Batch, &mut Sinks) {}
impl<F: FnMut(&mut GenPort, &mut BufPool, &mut Batch, &mut Sinks)> Step for F {}

/// The output side: a sink per vif the cases send to, and the per-port queues in front of them.
fn output_ports() -> (TxQueues, Sinks) {
    let out_vifs = [FABRIC, VHOST, AGENT, VM_A, VM_B, VM_C];
    let mut txq = TxQueues::new(usize::from(Limits::default().vifs));
    let mut sinks: Sinks = Vec::new();
    for v in out_vifs {
        txq.add(v);
        sinks.push(Box::default());
    }
    (txq, sinks)
}

/// Every drop counted so far.
fn total_drops(stats: &StatsRegistry) -> u64 {
    stats.drops().iter().map(|(_, n)| n).sum()
}

/// What the measured part of a run produced.
struct Measured {
    /// Frames transmitted.
    sent: u64,
    /// Seconds it took.
    elapsed: f64,
    /// The fastest window's rate, Mpps (0 when no window completed).
    best_window: f64,
}

impl Measured {
    /// The reported rate (the best window's when there were windows) and the mean rate, Mpps.
    fn rates(&self, windows: usize) -> (f64, f64) {
        let mean_mpps = self.sent as f64 / self.elapsed / 1e6;
        let mpps = if windows > 1 && self.best_window > 0.0 {
            self.best_window
        } else {
            mean_mpps
        };
        (mpps, mean_mpps)
    }
}

/// Warm up: caches, branch predictors, page faults of the tables; 200 ms, or nothing for a
/// fixed packet count (so that callgrind counts the measured packets only).
fn warm_up<F: Step>(rig: &mut Rig, step: &mut F, fixed_count: bool) {
    let warm = Instant::now();
    let warm_for = if fixed_count {
        Duration::ZERO
    } else {
        Duration::from_millis(200)
    };
    while warm.elapsed() < warm_for {
        rig.step(step);
    }
}

/// The non-zero drop counters by reason, on stderr (`BENCH_DEBUG_DROPS`: why a run dropped).
fn print_drops(stats: &StatsRegistry) {
    for (r, n) in stats.drops() {
        if n != 0 {
            eprintln!("  drop {}: {n}", r.name());
        }
    }
}

/// The measured part of a run: steps for `duration`, split into `windows` windows (checking
/// the clock every 256 steps only), or until `packets` packets when given.
fn measure<F: Step>(
    rig: &mut Rig,
    step: &mut F,
    batch_size: usize,
    duration: Duration,
    packets: Option<u64>,
    windows: usize,
) -> Measured {
    let sent0 = rig.sent();
    let window = duration / windows as u32;
    let start = Instant::now();
    let (mut win_start, mut win_sent0) = (start, sent0);
    let mut best_window = 0.0f64;
    let mut iters = 0u64;
    loop {
        rig.step(step);
        iters += 1;
        match packets {
            Some(n) if iters * batch_size as u64 >= n => break,
            Some(_) => {}
            None if iters.is_multiple_of(256) => {
                let now = Instant::now();
                let in_window = now - win_start;
                if in_window >= window {
                    let sent = rig.sent();
                    let rate = (sent - win_sent0) as f64 / in_window.as_secs_f64() / 1e6;
                    best_window = best_window.max(rate);
                    (win_start, win_sent0) = (now, sent);
                }
                if now - start >= duration {
                    break;
                }
            }
            None => {}
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    Measured {
        sent: rig.sent() - sent0,
        elapsed,
        best_window,
    }
}

/// Runs `case` with `routes` routes (or flows, for the flow cases) for `opts.duration` (or
/// exactly `opts.packets` packets when given) on the calling thread.
pub fn run_case(case: Case, routes: usize, opts: RunOpts) -> Report {
    let RunOpts {
        batch: batch_size,
        pkt_len,
        duration,
        packets,
        windows,
    } = opts;
    let windows = windows.max(1);
    let (_w, reader, gen, in_vif) = setup(case, routes, pkt_len);
    let stats = StatsRegistry::new(
        usize::from(Limits::default().vifs),
        Limits::default().vrfs as usize,
    );
    let lcore = stats.register();
    // As the engine builds it: with a capture attached (disarmed), so what a capture costs
    // when off is in the figures.
    let pipeline = Pipeline::new(lcore.clone()).with_capture(std::sync::Arc::new(
        vrouter_dataplane::capture::Capture::new(),
    ));
    let (mut txq, sinks) = output_ports();
    let mut rig = Rig::new(gen, sinks);
    let batch_size = batch_size.clamp(1, vrouter_dataplane::BATCH_SIZE);
    rig.gen.burst = batch_size;
    let flow_case = Case::FLOWS.contains(&case);
    let mut clock = 1u32;
    let mut step = |gen: &mut GenPort, pool: &mut BufPool, batch: &mut Batch, sinks: &mut Sinks| {
        gen.rx_burst(pool, batch, in_vif);
        if case == Case::FlowMissPolicy {
            // Every flow of earlier batches is now past its (zero) idle timeout.
            clock = clock.wrapping_add(1);
            if let Some(t) = reader.enter() {
                t.flows.set_clock(Some(clock));
            }
        }
        if case == Case::BaselineL2Touch {
            for p in batch.pkts_mut() {
                let d = p.buf.data_mut();
                let (dst, src) = d.split_at_mut(6);
                dst.swap_with_slice(&mut src[..6]);
                p.meta.tx(VM_A);
            }
        } else if let Some(t) = reader.enter() {
            pipeline.run(&t, batch);
        }
        pipeline.output(batch, pool, |vif, b| txq.push(vif, b));
        txq.flush(sinks, pool, &lcore);
    };
    // The flow cases start with every flow established (one packet per 5-tuple).
    if flow_case {
        let mut n = 0;
        while n < routes.max(1) {
            rig.step(&mut step);
            n += batch_size;
        }
    }
    warm_up(&mut rig, &mut step, packets.is_some());
    let drops0 = total_drops(&stats);
    let run = measure(&mut rig, &mut step, batch_size, duration, packets, windows);
    let drops = total_drops(&stats) - drops0;
    if std::env::var_os("BENCH_DEBUG_DROPS").is_some() {
        print_drops(&stats);
    }
    let (mpps, mean_mpps) = run.rates(windows);
    Report {
        case,
        mpps,
        mean_mpps,
        windows,
        // The same rate as `mpps`, as time per packet.
        ns_per_pkt: if mpps > 0.0 {
            1e3 / mpps
        } else {
            f64::INFINITY
        },
        routes: if flow_case { 1 } else { routes.max(1) },
        flows: if flow_case { routes.max(1) } else { 0 },
        batch: batch_size,
        pkt_len: rig.gen.template.len(),
        packets: run.sent,
        drops,
    }
}
