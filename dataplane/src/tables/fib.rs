//! Per-VRF IPv4 longest-prefix match.
//!
//! One open-addressing hash table holds every route of every VRF, keyed by (VRF, prefix length,
//! masked prefix). Each VRF keeps a bitmask of the prefix lengths it uses, and a lookup probes those
//! lengths longest first. A vRouter's tables are dominated by /32 host routes, which this finds in
//! one probe; the keys for every length are known before the first probe, so the batch lookup
//! prefetches them all at once and the memory latency of a large table overlaps across the batch
//! (see `docs/dataplane.md` for the measurements behind this choice versus an 8-bit-stride mtrie).

use super::{ensure_plen, Limits, Shadow, TableError};
use serde::{Deserialize, Serialize};

/// A route's forwarding data (Contrail keeps the label in the route, not the nexthop, so one
/// tunnel nexthop per remote host serves every route behind it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Nexthop id.
    pub nh: u32,
    /// MPLS label to push toward a remote host, if any.
    pub label: Option<u32>,
    /// Answer ARP for addresses covered by this route (flag P in `rt --dump`).
    pub proxy_arp: bool,
}

impl Route {
    const NH_BITS: u32 = 24;
    const LABEL_VALID: u64 = 1 << 44;
    const PROXY: u64 = 1 << 45;

    /// Largest nexthop id a route can hold.
    pub const MAX_NH: u32 = (1 << Self::NH_BITS) - 1;

    #[inline]
    fn pack(&self) -> u64 {
        let mut v = u64::from(self.nh & Self::MAX_NH);
        if let Some(l) = self.label {
            v |= u64::from(l & 0xf_ffff) << 24 | Self::LABEL_VALID;
        }
        if self.proxy_arp {
            v |= Self::PROXY;
        }
        v
    }

    #[inline]
    fn unpack(v: u64) -> Self {
        Self {
            nh: (v as u32) & Self::MAX_NH,
            label: (v & Self::LABEL_VALID != 0).then_some(((v >> 24) & 0xf_ffff) as u32),
            proxy_arp: v & Self::PROXY != 0,
        }
    }
}

const EMPTY: u64 = 0;
const TOMBSTONE: u64 = 1;
const OCCUPIED: u64 = 1 << 63;

#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
struct Slot {
    key: u64,
    val: u64,
}

/// Slots per cache line.
const BUCKET: usize = 4;

/// One cache line of slots. Probing starts at a bucket's first slot, so a lookup (a hit, or a
/// miss ending at an empty slot) nearly always stays within the one line that was prefetched;
/// with unaligned starts, a probe crossed into an unfetched line often enough to dominate the
/// cost of a large table.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
struct Bucket([Slot; BUCKET]);

// `Fib::flat` relies on buckets being exactly their slots, with no padding.
const _: () = assert!(std::mem::size_of::<Bucket>() == BUCKET * std::mem::size_of::<Slot>());

/// Mask of the top `plen` bits (lengths above 32 count as 32).
#[inline]
pub fn prefix_mask(plen: u8) -> u32 {
    MASKS[usize::from(plen.min(32))]
}

const MASKS: [u32; 33] = {
    let mut m = [0u32; 33];
    let mut i = 1;
    while i <= 32 {
        m[i] = u32::MAX << (32 - i);
        i += 1;
    }
    m
};

#[inline]
fn make_key(vrf: u16, plen: u8, addr: u32) -> u64 {
    OCCUPIED | u64::from(vrf) << 40 | u64::from(plen) << 32 | u64::from(addr & prefix_mask(plen))
}

#[inline]
fn hash(key: u64) -> u64 {
    // Multiply-xorshift: cheap and spreads both the VRF bits and the low address bits.
    let h = key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^ (h >> 29)
}

/// The route table of every VRF.
///
/// Thread-safety: plain data. Lcores read it through the table snapshot they entered
/// (`crate::tables::TablesReader`); only the control thread mutates, on the copy no lcore reads.
#[derive(Debug)]
pub struct Fib {
    buckets: Vec<Bucket>,
    /// Slot count - 1 (slots are numbered across buckets).
    mask: usize,
    len: usize,
    tombstones: usize,
}

/// By hand, so the copy is huge-page backed like the original: the table is double-buffered
/// (`left_right`), lcores read either copy, and a derived clone left the second one on 4 KiB
/// pages (a TLB miss on nearly every lookup of a large table).
impl Clone for Fib {
    fn clone(&self) -> Self {
        let mut buckets = alloc_buckets(self.buckets.len());
        buckets.copy_from_slice(&self.buckets);
        Self {
            buckets,
            mask: self.mask,
            len: self.len,
            tombstones: self.tombstones,
        }
    }
}

impl Default for Fib {
    fn default() -> Self {
        Self::with_capacity(1024)
    }
}

impl Fib {
    /// First slot probed for `key`: the start of its bucket.
    #[inline(always)]
    fn home(&self, key: u64) -> usize {
        (hash(key) as usize & self.mask) & !(BUCKET - 1)
    }

    /// Every slot, as one array (buckets are only the alignment).
    #[inline(always)]
    fn flat(&self) -> &[Slot] {
        // SAFETY: `Bucket` is `repr(C)` around `[Slot; BUCKET]` and exactly that size (4 x 16 =
        // 64 bytes, no padding), so the vector's buffer is `len * BUCKET` initialised, contiguous
        // slots, borrowed here for as long as `self`.
        unsafe {
            std::slice::from_raw_parts(
                self.buckets.as_ptr().cast::<Slot>(),
                self.buckets.len() * BUCKET,
            )
        }
    }

    /// Every slot, mutable.
    #[inline(always)]
    fn flat_mut(&mut self) -> &mut [Slot] {
        // SAFETY: as in `flat`; `&mut self` makes the borrow exclusive.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.buckets.as_mut_ptr().cast::<Slot>(),
                self.buckets.len() * BUCKET,
            )
        }
    }

    #[inline(always)]
    fn slot(&self, i: usize) -> &Slot {
        &self.flat()[i]
    }

    #[inline(always)]
    fn slot_mut(&mut self, i: usize) -> &mut Slot {
        &mut self.flat_mut()[i]
    }

    fn slot_count(&self) -> usize {
        self.mask + 1
    }

    fn slots(&self) -> impl Iterator<Item = &Slot> {
        self.flat().iter()
    }

    /// A table sized for `routes` routes without growing.
    pub fn with_capacity(routes: usize) -> Self {
        let n = (routes.max(16) * 2).next_power_of_two();
        Self {
            buckets: alloc_buckets(n / BUCKET),
            mask: n - 1,
            len: 0,
            tombstones: 0,
        }
    }

    /// Routes in all VRFs.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no route exists.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Inserts or replaces. Returns true if the prefix was new.
    pub fn insert(&mut self, vrf: u16, addr: u32, plen: u8, route: Route) -> bool {
        if (self.len + self.tombstones + 1) * 2 > self.slot_count() {
            self.grow();
        }
        let key = make_key(vrf, plen, addr);
        let mut i = self.home(key);
        let mut first_free = None;
        loop {
            let s = *self.slot(i);
            if s.key == key {
                self.slot_mut(i).val = route.pack();
                return false;
            }
            if s.key == TOMBSTONE && first_free.is_none() {
                first_free = Some(i);
            }
            if s.key == EMPTY {
                let at = match first_free {
                    Some(t) => {
                        self.tombstones -= 1;
                        t
                    }
                    None => i,
                };
                *self.slot_mut(at) = Slot {
                    key,
                    val: route.pack(),
                };
                self.len += 1;
                return true;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Removes an exact prefix. Returns the route it held.
    pub fn remove(&mut self, vrf: u16, addr: u32, plen: u8) -> Option<Route> {
        let key = make_key(vrf, plen, addr);
        let i = self.find_slot(key)?;
        let r = Route::unpack(self.slot(i).val);
        *self.slot_mut(i) = Slot {
            key: TOMBSTONE,
            val: 0,
        };
        self.len -= 1;
        self.tombstones += 1;
        Some(r)
    }

    /// The route of an exact prefix.
    #[inline]
    pub fn get(&self, vrf: u16, addr: u32, plen: u8) -> Option<Route> {
        self.find_slot(make_key(vrf, plen, addr))
            .map(|i| Route::unpack(self.slot(i).val))
    }

    #[inline]
    fn find_slot(&self, key: u64) -> Option<usize> {
        let mut i = self.home(key);
        loop {
            let s = self.slot(i);
            if s.key == key {
                return Some(i);
            }
            if s.key == EMPTY {
                return None;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Longest-prefix match of `addr` in `vrf`, probing the lengths set in `plens` (bit n set
    /// means some prefix of length n exists). Returns the route and its prefix length.
    #[inline]
    pub fn lookup(&self, vrf: u16, plens: u64, addr: u32) -> Option<(Route, u8)> {
        let mut m = plens;
        while m != 0 {
            let plen = 63 - m.leading_zeros() as u8;
            if let Some(i) = self.find_slot(make_key(vrf, plen, addr)) {
                return Some((Route::unpack(self.slot(i).val), plen));
            }
            m &= !(1u64 << plen);
        }
        None
    }

    /// True when the table is larger than a core's L2 cache, i.e. when prefetching its slots
    /// ahead of the lookups pays for the extra hashing.
    #[inline]
    pub fn worth_prefetching(&self) -> bool {
        self.slot_count() * std::mem::size_of::<Slot>() > 1 << 20
    }

    /// Hints the CPU to fetch the first slot probed for `addr` at the longest few lengths of
    /// `plens`, so a later [`Fib::lookup`] finds them in cache.
    #[inline]
    pub fn prefetch(&self, vrf: u16, plens: u64, addr: u32) {
        let mut m = plens;
        // Two lengths cover the common /32 + one subnet length; more would mostly waste
        // memory bandwidth on probes the /32 hit makes unnecessary.
        for _ in 0..2 {
            if m == 0 {
                break;
            }
            let plen = 63 - m.leading_zeros() as u8;
            let i = self.home(make_key(vrf, plen, addr));
            prefetch_read(self.slot(i));
            m &= !(1u64 << plen);
        }
    }

    /// Every route of `vrf` as (prefix, length, route), unordered.
    pub fn routes_of(&self, vrf: u16) -> impl Iterator<Item = (u32, u8, Route)> + '_ {
        self.slots().filter_map(move |s| {
            if s.key & OCCUPIED == 0 || (s.key >> 40) as u16 != vrf {
                return None;
            }
            Some((
                s.key as u32,
                ((s.key >> 32) & 0xff) as u8,
                Route::unpack(s.val),
            ))
        })
    }

    /// Removes every route of `vrf`; returns how many there were.
    pub fn clear_vrf(&mut self, vrf: u16) -> usize {
        let mut n = 0;
        for s in self.flat_mut() {
            if s.key & OCCUPIED != 0 && (s.key >> 40) as u16 == vrf {
                *s = Slot {
                    key: TOMBSTONE,
                    val: 0,
                };
                n += 1;
            }
        }
        self.len -= n;
        self.tombstones += n;
        n
    }

    fn grow(&mut self) {
        // Rebuild at twice the live size (or the same size if tombstones made it look full).
        let want = ((self.len + 1) * 4)
            .next_power_of_two()
            .max(self.slot_count());
        let old = std::mem::replace(&mut self.buckets, alloc_buckets(want / BUCKET));
        self.mask = want - 1;
        self.tombstones = 0;
        for s in old.iter().flat_map(|b| b.0.iter()) {
            if s.key & OCCUPIED != 0 {
                let mut i = self.home(s.key);
                while self.slot(i).key != EMPTY {
                    i = (i + 1) & self.mask;
                }
                *self.slot_mut(i) = *s;
            }
        }
    }
}

/// A zeroed bucket array (64-byte aligned by its type). Large arrays are backed by transparent
/// huge pages where the kernel allows it: a lookup in a table of a million routes touches a
/// random bucket, and with 4 KiB pages nearly every one is also a TLB miss (a costly one under
/// nested paging). The hint is given before the pages are first touched; if the kernel declines,
/// the table works the same.
fn alloc_buckets(n: usize) -> Vec<Bucket> {
    // Reserve first, advise, then write the zeros: the first touch must come after the hint.
    let mut v: Vec<Bucket> = Vec::with_capacity(n);
    let bytes = n * std::mem::size_of::<Bucket>();
    const HUGE: usize = 2 << 20;
    if bytes >= 2 * HUGE {
        let start = v.as_ptr() as usize;
        let aligned = (start + HUGE - 1) & !(HUGE - 1);
        let end = (start + bytes) & !(HUGE - 1);
        if end > aligned {
            // SAFETY: the range [aligned, end) lies inside the allocation `v` owns; MADV_HUGEPAGE
            // only changes how the kernel backs those pages, not their contents or validity.
            unsafe {
                libc::madvise(
                    aligned as *mut libc::c_void,
                    end - aligned,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    v.resize(n, Bucket::default());
    v
}

/// Software prefetch of the cache line holding `p` (a no-op where unsupported).
#[inline(always)]
pub fn prefetch_read<T>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` only hints the cache; it never faults, and `p` is a valid reference.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (p as *const T).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

impl Shadow {
    /// An `AddRoute` (routes are not shadowed, so nothing is recorded): its VRF and nexthop must
    /// exist, and a label must fit MPLS's 20 bits.
    pub(super) fn add_route(
        &self,
        l: &Limits,
        vrf: u16,
        plen: u8,
        route: &Route,
    ) -> Result<(), TableError> {
        self.vrf_exists(l, vrf)?;
        ensure_plen(plen)?;
        self.nh_exists(l, route.nh)?;
        if route.label.is_some_and(|x| x > crate::wire::MplsLabel::MAX) {
            return Err(TableError::Invalid {
                what: "label",
                why: "above 2^20-1".into(),
            });
        }
        Ok(())
    }

    /// A `DelRoute`: deleting an absent route is harmless, but the VRF must exist.
    pub(super) fn del_route(&self, l: &Limits, vrf: u16, plen: u8) -> Result<(), TableError> {
        self.vrf_exists(l, vrf)?;
        ensure_plen(plen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(nh: u32) -> Route {
        Route {
            nh,
            label: None,
            proxy_arp: false,
        }
    }

    fn plens(lens: &[u8]) -> u64 {
        lens.iter().fold(0, |m, l| m | 1 << l)
    }

    #[test]
    fn longest_prefix_wins() {
        let mut f = Fib::default();
        f.insert(1, 0, 0, r(1));
        f.insert(1, 0x0a01_0000, 16, r(2));
        f.insert(1, 0x0a01_0100, 24, r(3));
        f.insert(1, 0x0a01_0105, 32, r(4));
        let m = plens(&[0, 16, 24, 32]);
        assert_eq!(f.lookup(1, m, 0x0a01_0105).map(|x| x.0.nh), Some(4));
        assert_eq!(f.lookup(1, m, 0x0a01_0106).map(|x| x.0.nh), Some(3));
        assert_eq!(f.lookup(1, m, 0x0a01_0206), Some((r(2), 16)));
        assert_eq!(f.lookup(1, m, 0x0b00_0001), Some((r(1), 0)));
    }

    #[test]
    fn vrfs_are_separate() {
        let mut f = Fib::default();
        f.insert(1, 0x0a00_0001, 32, r(1));
        assert!(f.lookup(2, plens(&[32]), 0x0a00_0001).is_none());
        assert_eq!(f.routes_of(1).count(), 1);
        assert_eq!(f.routes_of(2).count(), 0);
    }

    #[test]
    fn a_copy_answers_like_the_original_and_is_independent() {
        // The lcores' second table copy is made by `clone`: large enough for the huge-page path.
        let mut f = Fib::with_capacity(300_000);
        for i in 0..200_000u32 {
            f.insert(1, 0x1000_0000 + (i << 8), 24, r(i));
        }
        let mut c = f.clone();
        let m = plens(&[24]);
        for i in (0..200_000u32).step_by(997) {
            let a = 0x1000_0000 + (i << 8) + 7;
            assert_eq!(c.lookup(1, m, a), f.lookup(1, m, a));
            assert_eq!(c.lookup(1, m, a), Some((r(i), 24)));
        }
        assert_eq!((c.len(), c.routes_of(1).count()), (200_000, 200_000));
        c.remove(1, 0x1000_0000, 24);
        assert_eq!(f.lookup(1, m, 0x1000_0001), Some((r(0), 24)));
        assert_eq!(c.lookup(1, m, 0x1000_0001), None);
    }

    #[test]
    fn remove_and_reinsert_through_tombstones_and_growth() {
        let mut f = Fib::with_capacity(16);
        for i in 0..10_000u32 {
            assert!(f.insert(3, i << 8, 24, r(i)));
        }
        for i in (0..10_000u32).step_by(2) {
            assert_eq!(f.remove(3, i << 8, 24), Some(r(i)));
        }
        assert_eq!(f.len(), 5_000);
        for i in 0..10_000u32 {
            let want = (i % 2 == 1).then_some(r(i));
            assert_eq!(f.get(3, (i << 8) | 7, 24), want);
        }
        assert!(!f.insert(3, 1 << 8, 24, r(99)));
        assert_eq!(f.get(3, 1 << 8, 24), Some(r(99)));
        assert_eq!(f.clear_vrf(3), 5_000);
        assert!(f.is_empty());
    }

    #[test]
    fn route_packing_round_trips() {
        let x = Route {
            nh: Route::MAX_NH,
            label: Some(0xf_ffff),
            proxy_arp: true,
        };
        assert_eq!(Route::unpack(x.pack()), x);
        let y = Route {
            nh: 7,
            label: Some(0),
            proxy_arp: false,
        };
        assert_eq!(Route::unpack(y.pack()), y);
    }
}
