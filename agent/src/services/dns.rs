//! DNS at every network's gateway: the query in, the decision out. I/O-free: the caller owns
//! the sockets and the clock.
//!
//! A query (the UDP payload a VM sent to its gateway on port 53) is answered from the network's
//! [`Zone`] (its VMs under its domain, and their reverse names), from the [`Cache`] of upstream
//! answers, or handed back to be forwarded to the host's resolvers under a fresh message id; the
//! upstream's reply comes back through [`DnsService::upstream_reply`], is cached and returned
//! to the VM with its own id. Bad input is answered (FORMERR for what does not parse, REFUSED
//! for an oversized query or another class, NOTIMP for another opcode) or dropped (responses,
//! fragments of headers, VMs past their rate), never a panic. Message format: `hickory-proto`
//! (see `docs/adr/0007-dns-message-crate.md`).

use super::dns_cache::{Cache, CacheKey, RateLimit};
use super::dns_zone::{Lookup, Zone};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// Largest query taken (the DNS flag day's EDNS buffer size); larger ones are REFUSED.
pub const MAX_QUERY_LEN: usize = 1232;
/// UDP payload a client without EDNS accepts (RFC 1035).
const CLASSIC_UDP: usize = 512;
/// TTL of the answers about a network's own VMs.
pub const ZONE_TTL: u32 = 30;
/// DNS header length.
const HEADER_LEN: usize = 12;

/// Forwarder and limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsSettings {
    /// Most upstream answers cached.
    pub cache_entries: usize,
    /// Longest time an upstream answer is cached, seconds.
    pub max_ttl: u32,
    /// Queries a second one VM may ask (0: no limit).
    pub rate: u32,
    /// Burst above the rate.
    pub burst: u32,
    /// How long a forwarded query waits for the upstream before the VM gets SERVFAIL, ms.
    pub timeout_ms: u64,
    /// Most forwarded queries waiting at once; past this a query gets SERVFAIL.
    pub max_pending: usize,
}

impl Default for DnsSettings {
    fn default() -> Self {
        Self {
            cache_entries: 10_000,
            max_ttl: 300,
            rate: 1_000,
            burst: 2_000,
            timeout_ms: 2_000,
            max_pending: 4_096,
        }
    }
}

/// How a query was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// From the network's own names (including NXDOMAIN / no data for them).
    Local,
    /// From the cache.
    Cached,
    /// An error answer (FORMERR, REFUSED, NOTIMP, SERVFAIL).
    Error(ResponseCode),
}

/// Why a query got no answer at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Shorter than a DNS header: nothing to answer to.
    TooShort,
    /// A response (QR set) sent to the gateway: never answered (no loops).
    NotAQuery,
    /// The VM is past its rate.
    RateLimited,
}

/// What to do with one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Send this answer back to the VM.
    Answer(Vec<u8>, Answered),
    /// Send this query to an upstream resolver; its reply goes to [`DnsService::upstream_reply`].
    Forward(Vec<u8>),
    /// Nothing to send.
    Dropped(Dropped),
}

#[derive(Debug, Clone)]
struct Pending<C> {
    ctx: C,
    client_id: u16,
    query: Query,
    recursion_desired: bool,
    key: CacheKey,
    deadline_ms: u64,
}

/// The DNS service of one host; `C` is what the caller needs to send an answer back (where the
/// VM is), kept with each forwarded query.
#[derive(Debug)]
pub struct DnsService<C> {
    settings: DnsSettings,
    zones: HashMap<u16, Zone>,
    cache: Cache,
    limit: RateLimit,
    pending: HashMap<u16, Pending<C>>,
    next_id: u16,
}

impl<C: Clone> DnsService<C> {
    /// A service with no zone yet.
    pub fn new(settings: DnsSettings) -> Self {
        Self {
            settings,
            zones: HashMap::new(),
            cache: Cache::new(settings.cache_entries, settings.max_ttl),
            limit: RateLimit::new(settings.rate, settings.burst),
            pending: HashMap::new(),
            next_id: 1,
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> DnsSettings {
        self.settings
    }

    /// Sets (or with `None` removes) the names of the network of VRF `vrf`.
    pub fn set_zone(&mut self, vrf: u16, zone: Option<Zone>) {
        match zone {
            Some(z) => self.zones.insert(vrf, z),
            None => self.zones.remove(&vrf),
        };
    }

    /// The zone of `vrf`.
    pub fn zone(&self, vrf: u16) -> Option<&Zone> {
        self.zones.get(&vrf)
    }

    /// Forwarded queries waiting for an upstream answer.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Answers cached.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Decides about one query from the VM at `src` in `vrf`.
    pub fn query(
        &mut self,
        vrf: u16,
        src: Ipv4Addr,
        ctx: C,
        payload: &[u8],
        now_ms: u64,
    ) -> Outcome {
        let Some(h) = payload.first_chunk::<HEADER_LEN>() else {
            return Outcome::Dropped(Dropped::TooShort);
        };
        if h[2] & 0x80 != 0 {
            return Outcome::Dropped(Dropped::NotAQuery);
        }
        if !self.limit.allow(vrf, src, now_ms) {
            return Outcome::Dropped(Dropped::RateLimited);
        }
        let id = u16::from_be_bytes([h[0], h[1]]);
        if payload.len() > MAX_QUERY_LEN {
            return error(id, ResponseCode::Refused);
        }
        let Ok(q) = Message::from_vec(payload) else {
            return error(id, ResponseCode::FormErr);
        };
        if q.metadata.op_code != OpCode::Query {
            return error(id, ResponseCode::NotImp);
        }
        let [question] = q.queries.as_slice() else {
            return error(id, ResponseCode::FormErr);
        };
        if question.query_class != DNSClass::IN {
            return error(id, ResponseCode::Refused);
        }
        if let Some(z) = self.zones.get(&vrf) {
            if let Some(m) = local_answer(z, &q, question) {
                return Outcome::Answer(encode(&q, m), Answered::Local);
            }
        }
        let key = CacheKey {
            name: question.name.to_lowercase(),
            qtype: question.query_type,
            qclass: question.query_class,
        };
        if let Some(mut m) = self.cache.get(&key, now_ms) {
            m.metadata.id = id;
            m.metadata.recursion_desired = q.metadata.recursion_desired;
            m.queries = q.queries.clone();
            return Outcome::Answer(encode(&q, m), Answered::Cached);
        }
        self.forward(&q, question, key, ctx, payload, now_ms)
    }

    fn forward(
        &mut self,
        q: &Message,
        question: &Query,
        key: CacheKey,
        ctx: C,
        payload: &[u8],
        now_ms: u64,
    ) -> Outcome {
        if self.pending.len() >= self.settings.max_pending {
            return error(q.metadata.id, ResponseCode::ServFail);
        }
        let mut upstream_id = self.next_id;
        while self.pending.contains_key(&upstream_id) {
            upstream_id = upstream_id.wrapping_add(1);
        }
        self.next_id = upstream_id.wrapping_add(1);
        self.pending.insert(
            upstream_id,
            Pending {
                ctx,
                client_id: q.metadata.id,
                query: question.clone(),
                recursion_desired: q.metadata.recursion_desired,
                key,
                deadline_ms: now_ms.saturating_add(self.settings.timeout_ms),
            },
        );
        let mut out = payload.to_vec();
        out[..2].copy_from_slice(&upstream_id.to_be_bytes());
        Outcome::Forward(out)
    }

    /// An upstream resolver's reply: the VM it is for and the answer to send it, once the id and
    /// the question match a forwarded query (anything else is dropped). Cacheable answers are
    /// cached.
    pub fn upstream_reply(&mut self, payload: &[u8], now_ms: u64) -> Option<(C, Vec<u8>)> {
        let m = Message::from_vec(payload).ok()?;
        if m.metadata.message_type != MessageType::Response {
            return None;
        }
        let p = self.pending.get(&m.metadata.id)?;
        let same = match m.queries.as_slice() {
            [q] => {
                q.name.to_lowercase() == p.key.name
                    && q.query_type == p.key.qtype
                    && q.query_class == p.key.qclass
            }
            _ => false,
        };
        if !same {
            return None;
        }
        let p = self.pending.remove(&m.metadata.id)?;
        self.cache.put(p.key, &m, now_ms);
        let mut out = payload.to_vec();
        out[..2].copy_from_slice(&p.client_id.to_be_bytes());
        Some((p.ctx, out))
    }

    /// Forwarded queries whose upstream did not answer in time: SERVFAIL to each VM.
    pub fn expire(&mut self, now_ms: u64) -> Vec<(C, Vec<u8>)> {
        let late: Vec<u16> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline_ms <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        late.into_iter()
            .filter_map(|id| self.pending.remove(&id))
            .map(|p| {
                let mut m = Message::new(p.client_id, MessageType::Response, OpCode::Query);
                m.metadata.response_code = ResponseCode::ServFail;
                m.metadata.recursion_desired = p.recursion_desired;
                m.metadata.recursion_available = true;
                m.add_query(p.query);
                (p.ctx, m.to_vec().unwrap_or_default())
            })
            .filter(|(_, b)| !b.is_empty())
            .collect()
    }
}

/// An error answer carrying only the header.
fn error(id: u16, rcode: ResponseCode) -> Outcome {
    let m = Message::error_msg(id, OpCode::Query, rcode);
    match m.to_vec() {
        Ok(b) => Outcome::Answer(b, Answered::Error(rcode)),
        Err(_) => Outcome::Dropped(Dropped::TooShort),
    }
}

/// The network's own answer to `question`, or `None` when the name is not its business.
fn local_answer(z: &Zone, q: &Message, question: &Query) -> Option<Message> {
    let qt = question.query_type;
    let mut m = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    m.metadata.authoritative = true;
    m.metadata.recursion_desired = q.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.add_query(question.clone());
    match z.lookup(&question.name) {
        Lookup::Addresses(ips) => {
            if matches!(qt, RecordType::A | RecordType::ANY) {
                for ip in ips {
                    m.add_answer(Record::from_rdata(
                        question.name.clone(),
                        ZONE_TTL,
                        RData::A(A(*ip)),
                    ));
                }
            }
        }
        Lookup::Pointer(target) => {
            if matches!(qt, RecordType::PTR | RecordType::ANY) {
                m.add_answer(Record::from_rdata(
                    question.name.clone(),
                    ZONE_TTL,
                    RData::PTR(PTR(target.clone())),
                ));
            }
        }
        Lookup::NoSuchName => m.metadata.response_code = ResponseCode::NXDomain,
        Lookup::Apex => {}
        Lookup::Elsewhere => return None,
    }
    Some(m)
}

/// Encodes an answer to `q`: with EDNS when the query had it, truncated (TC, no records) when
/// it does not fit what the client takes.
fn encode(q: &Message, mut m: Message) -> Vec<u8> {
    let limit = match &q.edns {
        Some(e) => usize::from(e.max_payload()).clamp(CLASSIC_UDP, MAX_QUERY_LEN),
        None => CLASSIC_UDP,
    };
    m.edns = q.edns.as_ref().map(|_| {
        let mut e = Edns::new();
        e.set_max_payload(MAX_QUERY_LEN as u16);
        e
    });
    match m.to_vec() {
        Ok(b) if b.len() <= limit => b,
        _ => {
            m.metadata.truncation = true;
            m.answers.clear();
            m.authorities.clear();
            m.additionals.clear();
            m.to_vec().unwrap_or_default()
        }
    }
}

#[cfg(test)]
#[path = "dns_tests.rs"]
mod tests;
