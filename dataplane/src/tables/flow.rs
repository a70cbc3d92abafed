//! The flow table: one fixed array of cache-line entries shared by every lcore, allocated once.
//! Each flow is a forward/reverse pair created together; entries hold the key (VRF, 5-tuple),
//! the action (forward, drop with a reason, NAT), counters, TCP flags and the last-used time.
//! See `docs/adr/0001-flow-table.md` for why it is shared rather than per lcore.
//!
//! Thread-safety: every field is an atomic, so no access is ever undefined behaviour. An entry's
//! `state` word (generation and FREE/BUSY/ACTIVE) orders the rest: an inserter claims a FREE
//! slot by CAS to BUSY, writes the fields, then publishes ACTIVE with a release store; an evictor
//! CASes ACTIVE to BUSY with the next generation, then frees it. A reader loads `state` with
//! acquire, reads the fields, and re-checks `state` after an acquire fence (a seqlock); if it
//! changed, the entry was evicted or reused meanwhile and the read counts as a miss. Counters are
//! a relaxed load and store (one lcore normally sees a direction; a race loses a count, never
//! corrupts one). Placement: a window of slots at the key's hash, then, past an overflow mark,
//! windows at further hashes (see the ADR). Per-VRF occupancy is one atomic per VRF, reserved
//! before an insert and released by whoever evicts, so a VRF never holds more than its limit.
//! The sweep cursor is shared, so lcores and the control thread sweep disjoint stretches.
//!
//! Route cache: a forward entry created from a packet that went through the route lookup keeps
//! that lookup's result (nexthop, label) and the table generation it was made in, in its `nat`
//! word (unused by forward entries) and the spare high bits of `tcp`. While the tables are
//! unchanged, a hit forwards on it without a lookup ([`FlowHit::cached_route`]); any table
//! operation bumps the generation, and the flow goes back to the lookup. The cache is written
//! only by `fill`, before the entry is published, so a reader never sees another flow's route.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};
use std::time::Instant;

/// Entries in a probe window: a flow sits within this many slots of one of its hashes.
const WINDOW: usize = 16;
/// Windows a key may use, each at an independent hash; the next is probed only when the
/// previous one overflowed (linear probing alone has long cluster tails: at half load about
/// one insert in 10^4 finds 16 slots full).
const WINDOWS: usize = 4;
/// Slots of a window [`FlowTable::prefetch`] fetches ahead (about 94% of flows at half load).
const PREFETCH_SLOTS: usize = 3;
const FREE: u32 = 0;
const BUSY: u32 = 1;
const ACTIVE: u32 = 2;
const ST_MASK: u32 = 3;
/// In `info`: this entry is the direction that created the pair.
const FORWARD_BIT: u64 = 1 << 24;
/// In `tcp` of a window's first (home) slot: some key hashed here was placed in its second
/// window, so lookups must probe that too. Never cleared (a conservative hint).
const OVERFLOW: u32 = 1 << 31;
/// The bits of `tcp` that are [`tcp`] flags.
const TCP_FLAGS: u32 = 0x1ff;
/// Where the route cache keeps the high bits of its generation in `tcp`, and how many.
const GEN_HI_SHIFT: u32 = 9;
const GEN_HI_BITS: u32 = 21;
/// Generation bits in the `nat` word (above nexthop, label and label-valid), and in all: a
/// generation repeats only after 2^40 table operations.
const GEN_LO_BITS: u32 = 19;
const GEN_BITS: u32 = GEN_LO_BITS + GEN_HI_BITS;

/// TCP flags a flow has seen, as kept in an entry (and shown by `flow list`).
pub mod tcp {
    /// SYN seen.
    pub const SYN: u32 = 1;
    /// FIN seen.
    pub const FIN: u32 = 2;
    /// RST seen.
    pub const RST: u32 = 4;
    /// ACK seen (established once both directions have it).
    pub const ACK: u32 = 8;
    /// FIN seen both ways: the pair is closed and ages out after `closed_timeout_s`.
    pub const CLOSED: u32 = 0x100;
}

/// Timeouts, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowParams {
    /// Idle time after which a forward or NAT flow is removed (Contrail: 180 s).
    pub idle_timeout_s: u32,
    /// Idle time for drop flows: short, so denied floods free their entries quickly.
    pub drop_timeout_s: u32,
    /// Idle time after FIN both ways, so the last ACKs still match.
    pub closed_timeout_s: u32,
}

impl Default for FlowParams {
    fn default() -> Self {
        Self {
            idle_timeout_s: 180,
            drop_timeout_s: 10,
            closed_timeout_s: 2,
        }
    }
}

/// Why a flow drops (`flow -l`'s `Action:D(reason)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum FlowDropReason {
    /// Unknown.
    Unknown = 0,
    /// A network-policy rule (or the default deny between networks).
    Policy = 1,
    /// A rule applies a service that has no running instance (see
    /// [`super::policy::PolicyAction::NoService`]).
    NoService = 2,
}

impl FlowDropReason {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => FlowDropReason::Policy,
            2 => FlowDropReason::NoService,
            _ => FlowDropReason::Unknown,
        }
    }

    /// The drop counter a packet of such a flow goes to.
    pub fn counter(self) -> crate::drop::DropReason {
        match self {
            FlowDropReason::NoService => crate::drop::DropReason::ServiceChainDown,
            FlowDropReason::Unknown | FlowDropReason::Policy => {
                crate::drop::DropReason::FlowActionDrop
            }
        }
    }
}

/// What a flow does with its packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FlowAction {
    /// Drop.
    Drop(FlowDropReason),
    /// Forward unchanged.
    Forward,
    /// Forward with addresses rewritten (floating IP).
    Nat {
        /// New source address (SNAT).
        snat: Option<u32>,
        /// New destination address (DNAT).
        dnat: Option<u32>,
    },
}

impl FlowAction {
    fn pack(self) -> (u64, u64) {
        match self {
            FlowAction::Drop(r) => (u64::from(r as u8) << 8, 0),
            FlowAction::Forward => (1, 0),
            FlowAction::Nat { snat, dnat } => {
                let flags = u64::from(snat.is_some()) | u64::from(dnat.is_some()) << 1;
                let nat = u64::from(snat.unwrap_or(0)) << 32 | u64::from(dnat.unwrap_or(0));
                (2 | flags << 16, nat)
            }
        }
    }

    fn unpack(info: u64, nat: u64) -> Self {
        match info as u8 {
            1 => FlowAction::Forward,
            2 => {
                let f = (info >> 16) as u8;
                FlowAction::Nat {
                    snat: (f & 1 != 0).then_some((nat >> 32) as u32),
                    dnat: (f & 2 != 0).then_some(nat as u32),
                }
            }
            _ => FlowAction::Drop(FlowDropReason::from_u8((info >> 8) as u8)),
        }
    }
}

/// A forward flow's route: the lookup result its first packet got, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteCache {
    /// Nexthop id (at most [`crate::tables::Route::MAX_NH`]).
    pub nh: u32,
    /// Label to push, or [`crate::batch::NO_LABEL`].
    pub label: u32,
    /// The table generation of the lookup ([`crate::tables::Tables::generation`]).
    pub generation: u64,
}

impl RouteCache {
    /// (`nat` word, `tcp` bits) holding the cache; None when it cannot be represented (a
    /// generation of 0 modulo 2^40 reads as "no cache").
    fn pack(&self) -> Option<(u64, u32)> {
        let g = self.generation & ((1 << GEN_BITS) - 1);
        if g == 0 || self.nh > crate::tables::Route::MAX_NH {
            return None;
        }
        let label = if self.label == crate::batch::NO_LABEL {
            0
        } else {
            1 << 24 | u64::from(self.label & 0xf_ffff) << 25
        };
        let lo = (g & ((1 << GEN_LO_BITS) - 1)) << (64 - GEN_LO_BITS);
        let hi = ((g >> GEN_LO_BITS) as u32) << GEN_HI_SHIFT;
        Some((u64::from(self.nh) | label | lo, hi))
    }
}

/// A flow key: VRF, protocol, addresses and ports, packed into two words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    a: u64,
    b: u64,
}

impl FlowKey {
    /// Builds a key. ICMP echo uses the identifier as both ports, so a reply's key is the
    /// reverse of its request's.
    #[inline]
    pub fn new(vrf: u16, proto: u8, src: u32, dst: u32, sport: u16, dport: u16) -> Self {
        Self {
            a: u64::from(src) << 32 | u64::from(dst),
            b: u64::from(vrf) << 48
                | u64::from(proto) << 32
                | u64::from(sport) << 16
                | u64::from(dport),
        }
    }
    /// VRF.
    pub fn vrf(&self) -> u16 {
        (self.b >> 48) as u16
    }
    /// Protocol.
    pub fn proto(&self) -> u8 {
        (self.b >> 32) as u8
    }
    /// Source address.
    pub fn src(&self) -> u32 {
        (self.a >> 32) as u32
    }
    /// Destination address.
    pub fn dst(&self) -> u32 {
        self.a as u32
    }
    /// Source port.
    pub fn sport(&self) -> u16 {
        (self.b >> 16) as u16
    }
    /// Destination port.
    pub fn dport(&self) -> u16 {
        self.b as u16
    }
    /// The key of replies, seen in `vrf`.
    pub fn reverse_in(&self, vrf: u16) -> Self {
        Self::new(
            vrf,
            self.proto(),
            self.dst(),
            self.src(),
            self.dport(),
            self.sport(),
        )
    }
    /// Table hash.
    #[inline]
    pub fn hash(&self) -> u32 {
        // Two multiply-xorshift rounds: every key bit reaches the index bits, cheaply (the
        // overflow windows absorb what clustering remains).
        let x = self.a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ self.b;
        let x = (x ^ (x >> 32)).wrapping_mul(0xd6e8_feb8_6659_fd93);
        (x ^ (x >> 29)) as u32
    }
    /// Hash of window `n` (0 is [`FlowKey::hash`]); each is an independent finaliser.
    #[inline]
    pub fn hash_n(&self, n: usize) -> u32 {
        if n == 0 {
            return self.hash();
        }
        let mut x =
            self.b ^ self.a.rotate_left(32) ^ (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^= x >> 30;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 27;
        x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
        (x ^ (x >> 31)) as u32
    }
}

/// One entry: exactly one cache line.
#[derive(Debug, Default)]
#[repr(C, align(64))]
struct Entry {
    /// Generation << 2 | FREE/BUSY/ACTIVE.
    state: AtomicU32,
    /// [`tcp`] flags seen in this direction.
    tcp: AtomicU32,
    key_a: AtomicU64,
    key_b: AtomicU64,
    /// Index of the other direction.
    rflow: AtomicU32,
    /// Seconds since the table's epoch.
    last_used: AtomicU32,
    /// action:8 reason:8 nat-flags:8 forward:8 dvrf:16 owner-vrf:16.
    info: AtomicU64,
    /// New source << 32 | new destination.
    nat: AtomicU64,
    packets: AtomicU64,
    bytes: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 64);

/// What a lookup found: the entry and its action words, decoded only as far as asked.
#[derive(Debug, Clone, Copy)]
pub struct FlowHit {
    /// Entry index.
    pub idx: u32,
    /// The entry's state word when read: [`FlowTable::is_current`] tells whether it still is.
    state: u32,
    info: u64,
    nat: u64,
    tcp: u32,
}

impl FlowHit {
    /// The action.
    pub fn action(&self) -> FlowAction {
        FlowAction::unpack(self.info, self.nat)
    }
    /// True for a drop flow.
    #[inline]
    pub fn is_drop(&self) -> bool {
        self.info as u8 == 0
    }
    /// Why a drop flow drops ([`FlowDropReason::Unknown`] for a flow that does not).
    #[inline]
    pub fn drop_reason(&self) -> FlowDropReason {
        match self.info as u8 {
            0 => FlowDropReason::from_u8((self.info >> 8) as u8),
            _ => FlowDropReason::Unknown,
        }
    }
    /// VRF the packet continues in.
    #[inline]
    pub fn dvrf(&self) -> u16 {
        (self.info >> 32) as u16
    }
    /// (nexthop, label) of a forward flow whose route was cached at table generation
    /// `generation` (the one the caller reads in), continuing in `vrf`; None otherwise.
    #[inline]
    pub fn cached_route(&self, vrf: u16, generation: u64) -> Option<(u32, u32)> {
        if self.info as u8 != 1 || self.dvrf() != vrf {
            return None;
        }
        let g = self.nat >> (64 - GEN_LO_BITS)
            | u64::from((self.tcp >> GEN_HI_SHIFT) & ((1 << GEN_HI_BITS) - 1)) << GEN_LO_BITS;
        if g == 0 || g != generation & ((1 << GEN_BITS) - 1) {
            return None;
        }
        let label = if self.nat & 1 << 24 != 0 {
            ((self.nat >> 25) & 0xf_ffff) as u32
        } else {
            crate::batch::NO_LABEL
        };
        Some(((self.nat & 0xff_ffff) as u32, label))
    }
    /// The (source, destination) a packet with `key` has after this flow's rewrite.
    #[inline]
    pub fn rewritten(&self, key: &FlowKey) -> (u32, u32) {
        let f = (self.info >> 16) as u8;
        (
            if f & 1 != 0 {
                (self.nat >> 32) as u32
            } else {
                key.src()
            },
            if f & 2 != 0 {
                self.nat as u32
            } else {
                key.dst()
            },
        )
    }
}

/// What one slot holds for a key being looked up.
enum Slot {
    /// Another key, or no flow.
    Other,
    /// The key's flow.
    Hit(FlowHit),
    /// The key's flow, but it was evicted or reused while being read, or is past its timeout
    /// (and now evicted): a miss.
    Gone,
}

/// Why a pair could not be inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// The VRF holds its limit of entries.
    VrfLimit,
    /// No free slot near the key's hash (the table is full there).
    TableFull,
}

/// One entry in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowEntryInfo {
    /// Index.
    pub index: u32,
    /// Index of the other direction.
    pub rindex: u32,
    /// Generation (changes whenever the slot is reused).
    pub gen: u32,
    /// True for the direction that created the pair.
    pub forward: bool,
    /// VRF of the key.
    pub vrf: u16,
    /// VRF the packet continues in (differs for NAT into another VRF).
    pub dvrf: u16,
    /// Protocol.
    pub proto: u8,
    /// Source address.
    pub src: u32,
    /// Source port.
    pub sport: u16,
    /// Destination address.
    pub dst: u32,
    /// Destination port.
    pub dport: u16,
    /// Action.
    pub action: FlowAction,
    /// [`tcp`] flags seen in this direction.
    pub tcp: u32,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// Seconds since the last packet.
    pub idle_s: u32,
}

/// Occupancy and activity of the table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowTableStats {
    /// Entries.
    pub capacity: u64,
    /// Active entries.
    pub active: u64,
    /// Pairs created.
    pub created: u64,
    /// Entries removed (aged, closed, evicted).
    pub deleted: u64,
    /// New flows refused for lack of room (table or VRF limit).
    pub full: u64,
    /// Timeouts.
    pub params: FlowParams,
    /// Per VRF with entries or refusals: (vrf, active entries, limit, refused new flows).
    pub vrfs: Vec<(u16, u32, u32, u64)>,
}

/// The shared flow table.
#[derive(Debug)]
pub struct FlowTable {
    entries: Slab,
    mask: usize,
    vrf_active: Box<[AtomicU32]>,
    vrf_full: Box<[AtomicU64]>,
    /// idle | drop << 21 | closed << 42 (seconds, 21 bits each).
    params: AtomicU64,
    epoch: Instant,
    /// Manual clock (seconds + 1), 0 when the real clock runs.
    manual: AtomicU64,
    created: AtomicU64,
    deleted: AtomicU64,
    full: AtomicU64,
    cursor: AtomicUsize,
}

fn pack_params(p: FlowParams) -> u64 {
    let c = |x: u32| u64::from(x.min((1 << 21) - 1));
    c(p.idle_timeout_s) | c(p.drop_timeout_s) << 21 | c(p.closed_timeout_s) << 42
}

fn unpack_params(v: u64) -> FlowParams {
    let m = (1u64 << 21) - 1;
    FlowParams {
        idle_timeout_s: (v & m) as u32,
        drop_timeout_s: (v >> 21 & m) as u32,
        closed_timeout_s: (v >> 42 & m) as u32,
    }
}

impl FlowTable {
    /// The entry at `idx` modulo the table size.
    #[inline(always)]
    fn at(&self, idx: usize) -> &Entry {
        let i = idx & self.mask;
        debug_assert!(i < self.entries.len());
        // SAFETY: the table has `mask + 1` entries (a power of two, fixed at creation), so a
        // masked index is in bounds.
        unsafe { self.entries.get_unchecked(i) }
    }

    /// A table of `capacity` entries (rounded up to a power of two, at least [`WINDOW`]) for
    /// `vrfs` VRFs. Zeroed memory is a table of free entries, so the OS hands it over lazily.
    pub fn new(capacity: usize, vrfs: usize) -> Self {
        let n = capacity.max(WINDOW).next_power_of_two();
        Self {
            entries: Slab::new(n),
            mask: n - 1,
            vrf_active: (0..vrfs.max(1)).map(|_| AtomicU32::new(0)).collect(),
            vrf_full: (0..vrfs.max(1)).map(|_| AtomicU64::new(0)).collect(),
            params: AtomicU64::new(pack_params(FlowParams::default())),
            epoch: Instant::now(),
            manual: AtomicU64::new(0),
            created: AtomicU64::new(0),
            deleted: AtomicU64::new(0),
            full: AtomicU64::new(0),
            cursor: AtomicUsize::new(0),
        }
    }

    /// Entries.
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Sets the timeouts.
    pub fn set_params(&self, p: FlowParams) {
        self.params.store(pack_params(p), Relaxed);
    }

    /// The timeouts.
    pub fn params(&self) -> FlowParams {
        unpack_params(self.params.load(Relaxed))
    }

    /// Seconds since the table was created (or the manual clock). Read once per batch.
    #[inline]
    pub fn now(&self) -> u32 {
        match self.manual.load(Relaxed) {
            0 => self.epoch.elapsed().as_secs() as u32,
            m => (m - 1) as u32,
        }
    }

    /// Freezes the clock at `secs` (tests and benchmarks drive aging with it); `None` resumes
    /// the real clock.
    pub fn set_clock(&self, secs: Option<u32>) {
        self.manual
            .store(secs.map_or(0, |s| u64::from(s) + 1), Relaxed);
    }

    /// The entry limit of `vrf` given its configured `max` (0: a quarter of the table).
    #[inline]
    pub fn vrf_limit(&self, max: u32) -> u32 {
        if max == 0 {
            (self.entries.len() / 4).min(u32::MAX as usize) as u32
        } else {
            max
        }
    }

    /// Active entries charged to `vrf`.
    pub fn vrf_active(&self, vrf: u16) -> u32 {
        self.vrf_active
            .get(usize::from(vrf))
            .map_or(0, |c| c.load(Relaxed))
    }

    /// Prefetches the first slots of `hash`'s window. At half load a flow sits in its home slot
    /// only about 75% of the time (then 14% one slot on, 5% two on), and each slot is its own
    /// cache line: prefetching only the home line left a quarter of the lookups of a large
    /// table with a miss nobody had started.
    #[inline]
    pub fn prefetch(&self, hash: u32) {
        self.prefetch_home(hash);
        self.prefetch_beyond_home(hash);
    }

    /// Prefetches the home slot of `hash` only (see [`FlowTable::lookup_home`]).
    #[inline]
    pub fn prefetch_home(&self, hash: u32) {
        crate::tables::fib::prefetch_read(self.at(hash as usize));
    }

    /// Prefetches the slots after the home slot that [`FlowTable::prefetch`] would.
    #[inline]
    pub fn prefetch_beyond_home(&self, hash: u32) {
        for k in 1..PREFETCH_SLOTS {
            crate::tables::fib::prefetch_read(self.at(hash as usize + k));
        }
    }

    #[inline]
    fn expired(&self, info: u64, tcp: u32, last: u32, now: u32, p: &FlowParams) -> bool {
        let timeout = if info as u8 == 0 {
            p.drop_timeout_s
        } else if tcp & tcp::CLOSED != 0 {
            p.closed_timeout_s
        } else {
            p.idle_timeout_s
        };
        now.wrapping_sub(last) >= timeout
    }

    /// Finds the active entry for `key` (whose hash is `hash`). An entry idle past its timeout
    /// is evicted here and reported as a miss, so aging never depends on the sweep keeping up.
    // Always inlined: the flow stage's hit path is built around it (a second caller must not
    // turn it into a call there).
    #[inline(always)]
    pub fn lookup(&self, key: &FlowKey, hash: u32, now: u32) -> Option<FlowHit> {
        let mut home = hash as usize & self.mask;
        for k in 1..=WINDOWS {
            if let Some(hit) = self.probe(key, home, now) {
                return Some(hit);
            }
            if k == WINDOWS || self.at(home).tcp.load(Relaxed) & OVERFLOW == 0 {
                break;
            }
            home = key.hash_n(k) as usize & self.mask;
        }
        None
    }

    #[inline(always)]
    fn probe(&self, key: &FlowKey, start: usize, now: u32) -> Option<FlowHit> {
        for i in 0..WINDOW {
            match self.slot(key, (start + i) & self.mask, now) {
                Slot::Other => continue,
                Slot::Hit(hit) => return Some(hit),
                Slot::Gone => return None,
            }
        }
        None
    }

    /// Reads slot `idx` as a candidate for `key`.
    #[inline(always)]
    fn slot(&self, key: &FlowKey, idx: usize, now: u32) -> Slot {
        let e = self.at(idx);
        let s = e.state.load(Acquire);
        if s & ST_MASK != ACTIVE || e.key_a.load(Relaxed) != key.a || e.key_b.load(Relaxed) != key.b
        {
            return Slot::Other;
        }
        let info = e.info.load(Relaxed);
        let nat = e.nat.load(Relaxed);
        let last = e.last_used.load(Relaxed);
        let tcp = e.tcp.load(Relaxed);
        fence(Acquire);
        if e.state.load(Relaxed) != s {
            return Slot::Gone;
        }
        if last != now && self.expired(info, tcp, last, now, &self.params()) {
            self.evict_pair(idx as u32);
            return Slot::Gone;
        }
        Slot::Hit(FlowHit {
            idx: idx as u32,
            state: s,
            info,
            nat,
            tcp,
        })
    }

    /// The flow of `key` if it sits in its home slot, where three flows in four are at half
    /// load: a probe of one cache line. `None` says nothing: [`FlowTable::lookup`] finds the
    /// others (after [`FlowTable::prefetch_beyond_home`]).
    #[inline(always)]
    pub fn lookup_home(&self, key: &FlowKey, hash: u32, now: u32) -> Option<FlowHit> {
        match self.slot(key, hash as usize & self.mask, now) {
            Slot::Hit(hit) => Some(hit),
            Slot::Other | Slot::Gone => None,
        }
    }

    /// True while the entry `hit` was read from is still that flow (not evicted or reused since).
    #[inline]
    pub fn is_current(&self, hit: &FlowHit) -> bool {
        self.at(hit.idx as usize).state.load(Acquire) == hit.state
    }

    /// Counts a packet of `bytes` on entry `idx` at `now`, with the packet's TCP `flags` (0 for
    /// other protocols). Returns true when the pair should be evicted now (RST).
    #[inline]
    pub fn hit(&self, idx: u32, bytes: u64, now: u32, flags: u32) -> bool {
        let e = self.at(idx as usize);
        // Load and store, not a locked add: one lcore sees a direction of a flow (RSS), and
        // two that race lose a count, never corrupt one.
        e.packets
            .store(e.packets.load(Relaxed).wrapping_add(1), Relaxed);
        e.bytes
            .store(e.bytes.load(Relaxed).wrapping_add(bytes), Relaxed);
        if e.last_used.load(Relaxed) != now {
            e.last_used.store(now, Relaxed);
        }
        if flags & (tcp::FIN | tcp::RST) != 0
            || (flags != 0 && e.tcp.load(Relaxed) & flags != flags)
        {
            return self.tcp_update(e, flags);
        }
        false
    }

    #[cold]
    fn tcp_update(&self, e: &Entry, flags: u32) -> bool {
        let old = e.tcp.load(Relaxed);
        if old & flags != flags {
            e.tcp.fetch_or(flags, Relaxed);
        }
        if flags & tcp::RST != 0 {
            return true;
        }
        if flags & tcp::FIN != 0 && old & tcp::CLOSED == 0 {
            let r = &self.entries[e.rflow.load(Relaxed) as usize & self.mask];
            if r.tcp.load(Relaxed) & tcp::FIN != 0 {
                e.tcp.fetch_or(tcp::CLOSED, Relaxed);
                r.tcp.fetch_or(tcp::CLOSED, Relaxed);
            }
        }
        false
    }

    /// Evicts the entry at `idx` and its reverse.
    pub fn evict_pair(&self, idx: u32) {
        let e = self.at(idx as usize);
        let r = e.rflow.load(Relaxed);
        if self.evict_one(idx) {
            let re = self.at(r as usize);
            if re.rflow.load(Relaxed) == idx {
                self.evict_one(r);
            }
        }
    }

    fn evict_one(&self, idx: u32) -> bool {
        let e = self.at(idx as usize);
        let s = e.state.load(Acquire);
        if s & ST_MASK != ACTIVE {
            return false;
        }
        let next = (s & !ST_MASK).wrapping_add(4);
        if e.state
            .compare_exchange(s, next | BUSY, AcqRel, Relaxed)
            .is_err()
        {
            return false;
        }
        let owner = (e.info.load(Relaxed) >> 48) as usize;
        if let Some(c) = self.vrf_active.get(owner) {
            c.fetch_sub(1, Relaxed);
        }
        self.deleted.fetch_add(1, Relaxed);
        e.state.store(next | FREE, Release);
        true
    }

    /// Claims a free slot in `key`'s window (BUSY, next generation). An active entry with the
    /// same key is evicted first (a stale pair whose reverse is being re-created).
    fn claim(&self, key: &FlowKey, dedupe: bool) -> Option<(u32, u32)> {
        if dedupe {
            self.evict_key(key);
        }
        for k in 0..WINDOWS {
            let home = key.hash_n(k) as usize & self.mask;
            if let Some(c) = self.claim_in(home) {
                return Some(c);
            }
            // This window is full: mark it, so lookups passing here also probe the next.
            if k + 1 < WINDOWS {
                self.at(home).tcp.fetch_or(OVERFLOW, Relaxed);
            }
        }
        None
    }

    /// Evicts every active entry with `key` (and its pair).
    fn evict_key(&self, key: &FlowKey) {
        let mut home = key.hash() as usize & self.mask;
        for k in 1..=WINDOWS {
            for i in 0..WINDOW {
                let idx = (home + i) & self.mask;
                let e = self.at(idx);
                if e.state.load(Acquire) & ST_MASK == ACTIVE
                    && e.key_a.load(Relaxed) == key.a
                    && e.key_b.load(Relaxed) == key.b
                {
                    self.evict_pair(idx as u32);
                }
            }
            if k == WINDOWS || self.at(home).tcp.load(Relaxed) & OVERFLOW == 0 {
                break;
            }
            home = key.hash_n(k) as usize & self.mask;
        }
    }

    fn claim_in(&self, start: usize) -> Option<(u32, u32)> {
        for i in 0..WINDOW {
            let idx = (start + i) & self.mask;
            let e = self.at(idx);
            let s = e.state.load(Relaxed);
            if s & ST_MASK != FREE {
                continue;
            }
            let gen = (s & !ST_MASK).wrapping_add(4);
            if e.state
                .compare_exchange(s, gen | BUSY, AcqRel, Relaxed)
                .is_ok()
            {
                return Some((idx as u32, gen));
            }
        }
        None
    }

    fn release(&self, idx: u32, gen: u32) {
        self.entries[idx as usize].state.store(gen | FREE, Release);
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn fill(
        &self,
        idx: u32,
        gen: u32,
        key: &FlowKey,
        action: FlowAction,
        dvrf: u16,
        owner: u16,
        rflow: u32,
        now: u32,
        forward: bool,
        route: Option<RouteCache>,
    ) {
        let e = &self.entries[idx as usize];
        let (info, nat) = action.pack();
        let info = if forward { info | FORWARD_BIT } else { info };
        // Only a forward action leaves `nat` free for the route.
        let (nat, gen_hi) = match route.filter(|_| action == FlowAction::Forward) {
            Some(r) => r.pack().unwrap_or((nat, 0)),
            None => (nat, 0),
        };
        e.key_a.store(key.a, Relaxed);
        e.key_b.store(key.b, Relaxed);
        e.info.store(
            info | u64::from(dvrf) << 32 | u64::from(owner) << 48,
            Relaxed,
        );
        e.nat.store(nat, Relaxed);
        e.rflow.store(rflow, Relaxed);
        e.tcp.fetch_and(OVERFLOW, Relaxed);
        if gen_hi != 0 {
            e.tcp.fetch_or(gen_hi, Relaxed);
        }
        e.packets.store(0, Relaxed);
        e.bytes.store(0, Relaxed);
        e.last_used.store(now, Relaxed);
        e.state.store(gen | ACTIVE, Release);
    }

    /// Creates a pair: `fwd` (charged to its VRF, limit `limit` entries) doing `fa` and `rev`
    /// doing `ra`, continuing in `dvrfs` (forward, reverse) after their lookups; a forward `fa`
    /// keeps `route`, the lookup result of the packet that made the pair. Returns the forward
    /// entry's index. The caller has just looked `fwd` up and missed, so only `rev` is checked
    /// for a stale entry with its key (evicted first).
    #[allow(clippy::too_many_arguments)]
    pub fn insert_pair(
        &self,
        fwd: &FlowKey,
        fa: FlowAction,
        rev: &FlowKey,
        ra: FlowAction,
        dvrfs: (u16, u16),
        limit: u32,
        now: u32,
        route: Option<RouteCache>,
    ) -> Result<u32, InsertError> {
        let owner = fwd.vrf();
        let Some(count) = self.vrf_active.get(usize::from(owner)) else {
            return Err(InsertError::TableFull);
        };
        if count.fetch_add(2, Relaxed).saturating_add(2) > limit {
            count.fetch_sub(2, Relaxed);
            return Err(self.refused(owner, InsertError::VrfLimit));
        }
        let Some((fi, fg)) = self.claim(fwd, false) else {
            count.fetch_sub(2, Relaxed);
            return Err(self.refused(owner, InsertError::TableFull));
        };
        let Some((ri, rg)) = self.claim(rev, true) else {
            self.release(fi, fg);
            count.fetch_sub(2, Relaxed);
            return Err(self.refused(owner, InsertError::TableFull));
        };
        self.fill(ri, rg, rev, ra, dvrfs.1, owner, fi, now, false, None);
        self.fill(fi, fg, fwd, fa, dvrfs.0, owner, ri, now, true, route);
        self.created.fetch_add(1, Relaxed);
        Ok(fi)
    }

    #[cold]
    fn refused(&self, vrf: u16, e: InsertError) -> InsertError {
        self.full.fetch_add(1, Relaxed);
        if let Some(c) = self.vrf_full.get(usize::from(vrf)) {
            c.fetch_add(1, Relaxed);
        }
        e
    }

    /// Visits the next `budget` entries (a cursor shared by every caller) and evicts those idle
    /// past their timeout. Lcores call it at batch boundaries; the control thread may too.
    pub fn sweep(&self, now: u32, budget: usize) {
        let p = self.params();
        let start = self.cursor.fetch_add(budget, Relaxed);
        for i in 0..budget {
            let idx = (start + i) & self.mask;
            let e = self.at(idx);
            if e.state.load(Relaxed) & ST_MASK != ACTIVE {
                continue;
            }
            let (info, tcp, last) = (
                e.info.load(Relaxed),
                e.tcp.load(Relaxed),
                e.last_used.load(Relaxed),
            );
            if self.expired(info, tcp, last, now, &p) {
                self.evict_pair(idx as u32);
            }
        }
    }

    /// Evicts every entry of `vrf` (its flow configuration was removed), or all with `None`.
    pub fn flush(&self, vrf: Option<u16>) {
        for idx in 0..self.entries.len() {
            let e = self.at(idx);
            if e.state.load(Relaxed) & ST_MASK != ACTIVE {
                continue;
            }
            let k = FlowKey {
                a: 0,
                b: e.key_b.load(Relaxed),
            };
            let owner = (e.info.load(Relaxed) >> 48) as u16;
            if vrf.is_none_or(|v| v == k.vrf() || v == owner) {
                self.evict_pair(idx as u32);
            }
        }
    }

    /// Every active entry, forward before its reverse, optionally only those keyed in `vrf`
    /// (pairs are kept whole). At most `limit` pairs. A control-thread walk of the whole table.
    pub fn list(&self, vrf: Option<u16>, limit: usize) -> Vec<FlowEntryInfo> {
        let now = self.now();
        let mut out = Vec::new();
        let mut pairs = 0;
        for idx in 0..self.entries.len() {
            if pairs >= limit {
                break;
            }
            let Some(f) = self.read(idx as u32, now) else {
                continue;
            };
            if !f.forward {
                continue;
            }
            let Some(r) = self.read(f.rindex, now) else {
                continue;
            };
            if vrf.is_some_and(|v| v != f.vrf && v != r.vrf) {
                continue;
            }
            out.push(f);
            out.push(r);
            pairs += 1;
        }
        out
    }

    /// A consistent snapshot of entry `idx`, if active.
    pub fn read(&self, idx: u32, now: u32) -> Option<FlowEntryInfo> {
        let e = self.entries.get(idx as usize)?;
        let s = e.state.load(Acquire);
        if s & ST_MASK != ACTIVE {
            return None;
        }
        let key = FlowKey {
            a: e.key_a.load(Relaxed),
            b: e.key_b.load(Relaxed),
        };
        let info = e.info.load(Relaxed);
        let nat = e.nat.load(Relaxed);
        let rflow = e.rflow.load(Relaxed);
        let f = FlowEntryInfo {
            index: idx,
            rindex: rflow,
            gen: s >> 2,
            forward: info & FORWARD_BIT != 0,
            vrf: key.vrf(),
            dvrf: (info >> 32) as u16,
            proto: key.proto(),
            src: key.src(),
            sport: key.sport(),
            dst: key.dst(),
            dport: key.dport(),
            action: FlowAction::unpack(info, nat),
            tcp: e.tcp.load(Relaxed) & TCP_FLAGS,
            packets: e.packets.load(Relaxed),
            bytes: e.bytes.load(Relaxed),
            idle_s: now.wrapping_sub(e.last_used.load(Relaxed)),
        };
        fence(Acquire);
        (e.state.load(Relaxed) == s).then_some(f)
    }

    /// Occupancy and counters.
    pub fn stats(&self, limit_of: impl Fn(u16) -> Option<u32>) -> FlowTableStats {
        let active = self
            .entries
            .iter()
            .filter(|e| e.state.load(Relaxed) & ST_MASK == ACTIVE)
            .count() as u64;
        let vrfs = (0..self.vrf_active.len())
            .filter_map(|v| {
                let a = self.vrf_active[v].load(Relaxed);
                let f = self.vrf_full[v].load(Relaxed);
                let lim = limit_of(v as u16);
                (a != 0 || f != 0 || lim.is_some())
                    .then(|| (v as u16, a, self.vrf_limit(lim.unwrap_or(0)), f))
            })
            .collect();
        FlowTableStats {
            capacity: self.entries.len() as u64,
            active,
            created: self.created.load(Relaxed),
            deleted: self.deleted.load(Relaxed),
            full: self.full.load(Relaxed),
            params: self.params(),
            vrfs,
        }
    }
}

/// The entry array: anonymous zeroed memory from `mmap` (the OS supplies pages lazily, a
/// zero entry is a free one), with transparent huge pages requested so a large table does not
/// cost a TLB miss per packet.
struct Slab {
    ptr: std::ptr::NonNull<Entry>,
    len: usize,
}

// SAFETY: the slab owns its memory (like a `Box<[Entry]>`), and `Entry` is all atomics, so it
// may be sent and shared between threads.
unsafe impl Send for Slab {}
// SAFETY: as above: shared access only ever goes through atomics.
unsafe impl Sync for Slab {}

impl std::fmt::Debug for Slab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Slab({} entries)", self.len)
    }
}

impl Slab {
    fn new(n: usize) -> Self {
        let bytes = n
            .checked_mul(std::mem::size_of::<Entry>())
            .unwrap_or_else(|| panic!("flow table of {n} entries does not fit in memory"));
        // SAFETY: an anonymous private mapping with no address hint touches no existing memory;
        // the result is checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            panic!(
                "cannot map a flow table of {bytes} bytes: {}",
                std::io::Error::last_os_error()
            );
        }
        if bytes >= 2 << 20 {
            // SAFETY: `p..p+bytes` is the mapping just created; MADV_HUGEPAGE only changes how
            // it is backed. Failure (no THP support) is harmless.
            unsafe { libc::madvise(p, bytes, libc::MADV_HUGEPAGE) };
        }
        match std::ptr::NonNull::new(p.cast::<Entry>()) {
            Some(ptr) => Self { ptr, len: n },
            None => panic!("mmap returned null"),
        }
    }
}

impl std::ops::Deref for Slab {
    type Target = [Entry];
    fn deref(&self) -> &[Entry] {
        // SAFETY: `ptr` is a live mapping of `len` entries, page-aligned (so 64-byte aligned),
        // zero-initialised by the kernel, and an all-zero `Entry` is valid (atomic integers).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Slab {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` created; no reference to it outlives `self`.
        unsafe {
            libc::munmap(
                self.ptr.as_ptr().cast(),
                self.len * std::mem::size_of::<Entry>(),
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_home_probe_finds_only_flows_in_their_home_slot() {
        let t = FlowTable::new(64, 8);
        let key = |port: u16| FlowKey::new(1, 17, 0x0a01_0103, 0x0a02_0203, port, 53);
        let home = |k: &FlowKey| k.hash() as usize & t.mask;
        // Two keys with one home slot: the second pair's forward entry goes past it.
        let first = key(1);
        let second = (2..u16::MAX)
            .map(key)
            .find(|k| home(k) == home(&first))
            .expect("a colliding key");
        let pair = |f: &FlowKey| {
            let r = FlowKey::new(1, 17, 0x0a02_0203, 0x0a01_0103, 53, f.sport());
            t.insert_pair(
                f,
                FlowAction::Forward,
                &r,
                FlowAction::Forward,
                (1, 1),
                u32::MAX,
                0,
                None,
            )
            .expect("inserted")
        };
        let (a, b) = (pair(&first), pair(&second));
        assert_eq!(a as usize, home(&first));
        assert_ne!(b as usize, home(&second));
        assert_eq!(
            t.lookup_home(&first, first.hash(), 0).map(|h| h.idx),
            Some(a)
        );
        assert!(t.lookup_home(&second, second.hash(), 0).is_none());
        assert_eq!(t.lookup(&second, second.hash(), 0).map(|h| h.idx), Some(b));
        // Past its timeout, the home probe evicts the pair and misses.
        assert!(t.lookup_home(&first, first.hash(), 1000).is_none());
        assert!(t.lookup(&first, first.hash(), 0).is_none());
    }

    #[test]
    fn a_forward_entry_keeps_its_route_for_its_generation_only() {
        let t = FlowTable::new(1 << 12, 8);
        let f = FlowKey::new(1, 6, 0x0a01_0103, 0x0a02_0203, 40000, 80);
        let r = f.reverse_in(1);
        // Generations past the 19 bits kept in `nat`, so both halves matter.
        let generation = (5 << GEN_LO_BITS) + 3;
        for (label, nh) in [
            (crate::batch::NO_LABEL, 12),
            (0xf_ffff, crate::tables::Route::MAX_NH),
        ] {
            let route = RouteCache {
                nh,
                label,
                generation,
            };
            t.flush(None);
            let idx = t
                .insert_pair(
                    &f,
                    FlowAction::Forward,
                    &r,
                    FlowAction::Forward,
                    (1, 1),
                    u32::MAX,
                    0,
                    Some(route),
                )
                .expect("inserted");
            let hit = t.lookup(&f, f.hash(), 0).expect("hit");
            assert_eq!(hit.idx, idx);
            assert_eq!(hit.cached_route(1, generation), Some((nh, label)));
            assert_eq!(hit.cached_route(1, generation + 1), None);
            assert_eq!(hit.cached_route(1, generation - (1 << GEN_LO_BITS)), None);
            assert_eq!(hit.cached_route(2, generation), None, "another VRF");
            // TCP flags still read as flags; the reverse has no route.
            t.hit(idx, 60, 0, tcp::SYN);
            assert_eq!(t.read(idx, 0).map(|e| e.tcp), Some(tcp::SYN));
            let rev = t.lookup(&r, r.hash(), 0).expect("reverse");
            assert_eq!(rev.cached_route(1, generation), None);
        }
        // A NAT entry's `nat` word is its rewrite, never a route.
        t.flush(None);
        let nat = FlowAction::Nat {
            snat: Some(0xc633_6405),
            dnat: None,
        };
        let route = RouteCache {
            nh: 12,
            label: 20,
            generation: 7,
        };
        t.insert_pair(&f, nat, &r, nat, (1, 1), u32::MAX, 0, Some(route))
            .expect("inserted");
        let hit = t.lookup(&f, f.hash(), 0).expect("hit");
        assert_eq!((hit.action(), hit.cached_route(1, 7)), (nat, None));
    }

    #[test]
    fn a_million_pairs_fit_at_half_load() {
        let t = FlowTable::new(4 << 20, 8);
        let mut full = 0;
        for i in 0..1_000_000u32 {
            let (sp, dp) = ((1024 + (i >> 15)) as u16, (0x8000 | (i & 0x7fff)) as u16);
            let f = FlowKey::new(1, 17, 0x0a01_0103, 0x0a02_0203, sp, dp);
            let r = f.reverse_in(3);
            if t.insert_pair(
                &f,
                FlowAction::Forward,
                &r,
                FlowAction::Forward,
                (1, 3),
                u32::MAX,
                0,
                None,
            )
            .is_err()
            {
                full += 1;
            }
        }
        assert_eq!(full, 0);
    }
}
