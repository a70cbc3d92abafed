//! The forwarder's bounded answer cache and the per-VM query rate limit. I/O-free: the time is
//! always passed in (milliseconds on any monotonic clock).

use hickory_proto::op::Message;
use hickory_proto::rr::{DNSClass, Name, RecordType};
use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;

/// What a cached answer is filed under: the question, name in lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// The name asked for (lower case).
    pub name: Name,
    /// Its type.
    pub qtype: RecordType,
    /// Its class.
    pub qclass: DNSClass,
}

#[derive(Debug, Clone)]
struct Entry {
    msg: Message,
    stored_ms: u64,
    expires_ms: u64,
}

/// Answers from the upstream resolvers, at most `capacity`, each kept for its TTL (the smallest
/// of its records', capped); the oldest goes first when full.
#[derive(Debug)]
pub struct Cache {
    capacity: usize,
    max_ttl: u32,
    map: HashMap<CacheKey, Entry>,
    order: VecDeque<(CacheKey, u64)>,
}

impl Cache {
    /// A cache of at most `capacity` answers kept at most `max_ttl` seconds.
    pub fn new(capacity: usize, max_ttl: u32) -> Self {
        Self {
            capacity,
            max_ttl,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// How many answers are held (expired ones included until they are met).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Keeps `msg` (an upstream answer) if it can be cached: NOERROR or NXDOMAIN, not truncated,
    /// with a TTL above zero (negative answers: the SOA's TTL).
    pub fn put(&mut self, key: CacheKey, msg: &Message, now_ms: u64) {
        if self.capacity == 0 || msg.metadata.truncation {
            return;
        }
        use hickory_proto::op::ResponseCode::{NXDomain, NoError};
        if !matches!(msg.metadata.response_code, NoError | NXDomain) {
            return;
        }
        let ttl = msg
            .answers
            .iter()
            .chain(msg.authorities.iter())
            .map(|r| r.ttl)
            .min()
            .unwrap_or(0)
            .min(self.max_ttl);
        if ttl == 0 {
            return;
        }
        while self.map.len() >= self.capacity {
            let Some((old, stamp)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|e| e.stored_ms == stamp) {
                self.map.remove(&old);
            }
        }
        let mut stored = msg.clone();
        stored.edns = None;
        self.order.push_back((key.clone(), now_ms));
        self.map.insert(
            key,
            Entry {
                msg: stored,
                stored_ms: now_ms,
                expires_ms: now_ms.saturating_add(u64::from(ttl) * 1000),
            },
        );
        // Keys replaced in place leave stale order slots behind: bound those too.
        if self.order.len() > self.capacity.saturating_mul(2) {
            let map = &self.map;
            self.order
                .retain(|(k, s)| map.get(k).is_some_and(|e| e.stored_ms == *s));
        }
    }

    /// The cached answer to `key`, its TTLs lowered by the time it has been held; `None` when
    /// absent or expired (an expired one is dropped).
    pub fn get(&mut self, key: &CacheKey, now_ms: u64) -> Option<Message> {
        let e = self.map.get(key)?;
        if now_ms >= e.expires_ms {
            self.map.remove(key);
            return None;
        }
        let held = u32::try_from((now_ms.saturating_sub(e.stored_ms)) / 1000).unwrap_or(u32::MAX);
        let mut m = e.msg.clone();
        for r in m
            .answers
            .iter_mut()
            .chain(m.authorities.iter_mut())
            .chain(m.additionals.iter_mut())
        {
            r.ttl = r.ttl.saturating_sub(held);
        }
        Some(m)
    }
}

/// A token bucket per VM (VRF and source address): `rate` queries a second, bursts of `burst`.
#[derive(Debug)]
pub struct RateLimit {
    rate: u32,
    burst: u32,
    buckets: HashMap<(u16, Ipv4Addr), Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens in thousandths.
    milli: u64,
    at_ms: u64,
}

/// Most VMs tracked at once; past this, buckets that are full again are forgotten.
const MAX_BUCKETS: usize = 65_536;

impl RateLimit {
    /// `rate` queries per second per VM with bursts of `burst`; a rate of 0 means no limit.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate,
            burst: burst.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Takes one token for the VM at `src` in `vrf`; false when it has none left.
    pub fn allow(&mut self, vrf: u16, src: Ipv4Addr, now_ms: u64) -> bool {
        if self.rate == 0 {
            return true;
        }
        let full = u64::from(self.burst) * 1000;
        if self.buckets.len() >= MAX_BUCKETS && !self.buckets.contains_key(&(vrf, src)) {
            let rate = u64::from(self.rate);
            self.buckets.retain(|_, b| {
                b.milli + now_ms.saturating_sub(b.at_ms).saturating_mul(rate) < full
            });
            if self.buckets.len() >= MAX_BUCKETS {
                return false;
            }
        }
        let b = self.buckets.entry((vrf, src)).or_insert(Bucket {
            milli: full,
            at_ms: now_ms,
        });
        let refill = now_ms
            .saturating_sub(b.at_ms)
            .saturating_mul(u64::from(self.rate));
        b.milli = b.milli.saturating_add(refill).min(full);
        b.at_ms = now_ms;
        if b.milli >= 1000 {
            b.milli -= 1000;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{MessageType, OpCode};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, Record};

    fn key(n: &str) -> CacheKey {
        CacheKey {
            name: Name::from_ascii(n).expect("name"),
            qtype: RecordType::A,
            qclass: DNSClass::IN,
        }
    }

    fn answer(n: &str, ttl: u32) -> Message {
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        m.add_answer(Record::from_rdata(
            Name::from_ascii(n).expect("name"),
            ttl,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
        ));
        m
    }

    #[test]
    fn answers_are_served_with_their_remaining_ttl_until_they_expire() {
        let mut c = Cache::new(8, 300);
        c.put(key("a.example."), &answer("a.example.", 60), 1_000);
        let m = c.get(&key("a.example."), 11_000).expect("cached");
        assert_eq!(m.answers[0].ttl, 50);
        assert!(c.get(&key("a.example."), 61_000).is_none());
        assert!(c.is_empty(), "an expired answer is dropped");
    }

    #[test]
    fn the_cache_is_bounded_and_drops_the_oldest_first() {
        let mut c = Cache::new(2, 300);
        for (i, n) in ["a.example.", "b.example.", "c.example."]
            .iter()
            .enumerate()
        {
            c.put(key(n), &answer(n, 60), i as u64);
        }
        assert_eq!(c.len(), 2);
        assert!(c.get(&key("a.example."), 10).is_none());
        assert!(c.get(&key("c.example."), 10).is_some());
    }

    #[test]
    fn ttls_are_capped_and_zero_ttl_answers_are_not_kept() {
        let mut c = Cache::new(8, 5);
        c.put(key("a.example."), &answer("a.example.", 86_400), 0);
        assert!(c.get(&key("a.example."), 4_999).is_some());
        assert!(c.get(&key("a.example."), 5_000).is_none());
        c.put(key("z.example."), &answer("z.example.", 0), 0);
        assert!(c.is_empty());
    }

    #[test]
    fn a_vm_past_its_rate_is_refused_until_its_bucket_refills() {
        let mut r = RateLimit::new(10, 5);
        let vm = Ipv4Addr::new(10, 0, 0, 2);
        let other = Ipv4Addr::new(10, 0, 0, 3);
        let allowed = (0..20).filter(|_| r.allow(1, vm, 0)).count();
        assert_eq!(allowed, 5, "the burst");
        assert!(r.allow(1, other, 0), "another VM has its own bucket");
        assert!(!r.allow(1, vm, 50));
        assert!(r.allow(1, vm, 100), "10/s: one token after 100 ms");
        let mut unlimited = RateLimit::new(0, 0);
        assert!((0..10_000).all(|_| unlimited.allow(1, vm, 0)));
    }
}
