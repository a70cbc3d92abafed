// SPDX-License-Identifier: Apache-2.0
//! One BGP peering (RFC 4271 §8), free of I/O: the driver feeds it "connected", bytes,
//! "closed" and the time; it answers with bytes to send and what changed (established, routes
//! learned and withdrawn, down with a reason). Tests drive it message by message.
//!
//! Only what a VPN-IPv4 gateway peering needs: no collision state (the driver keeps one
//! connection per peer), no route refresh beyond answering it with the whole table.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::codec::{self, msg_type, Notification, PathAttrs, Sender, MAX_LEN};
use super::types::{VpnKey, VpnRoute};

/// Where a session is (RFC 4271 §8.2.2; Active/Connect are the driver's business).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum State {
    /// No connection.
    Idle,
    /// Connected, our OPEN sent, waiting for the peer's.
    OpenSent,
    /// OPENs exchanged, waiting for the first KEEPALIVE.
    OpenConfirm,
    /// Routes flow.
    Established,
}

/// This speaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    /// Our AS.
    pub asn: u32,
    /// Our BGP identifier (the `--bgp` address).
    pub router_id: Ipv4Addr,
    /// Hold time we propose, seconds.
    pub hold_time: u16,
}

/// A configured neighbour (a `bgp-router` object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its address, where we connect and what it connects from.
    pub address: Ipv4Addr,
    /// Its BGP port (179 unless `bgp_router_parameters.port` says otherwise).
    pub port: u16,
    /// The AS it must announce.
    pub asn: u32,
    /// The BGP identifier it must announce, if configured.
    pub identifier: Option<Ipv4Addr>,
    /// Hold time to propose to it (0 = the speaker's default).
    pub hold_time: u16,
}

/// What the driver must do or know after an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Write these bytes to the peer.
    Send(Vec<u8>),
    /// The session reached Established.
    Established,
    /// A route from the peer (new or replacing one with the same key).
    Learned(VpnRoute),
    /// A route the peer took back (or that went with the session).
    Withdrawn(VpnKey),
    /// The session ended: close the connection. The reason is for the neighbour table.
    Down(String),
}

/// What we announce: key → (shared attributes, label).
pub type Exports = BTreeMap<VpnKey, (PathAttrs, u32)>;

/// One peering.
#[derive(Debug)]
pub struct Session {
    local: Local,
    peer: Peer,
    state: State,
    /// Negotiated hold time, seconds; 0 = no keepalives, no hold timer.
    hold: u16,
    last_heard_ms: u64,
    last_sent_ms: u64,
    /// Bytes received and not yet a whole message.
    inbuf: Vec<u8>,
    /// Adj-RIB-In.
    learned: BTreeMap<VpnKey, VpnRoute>,
    /// Adj-RIB-Out: what the peer has from us.
    sent: Exports,
    /// What the peer should have (set while the session is not established too).
    wanted: Exports,
}

impl Session {
    /// A session in Idle.
    pub fn new(local: Local, peer: Peer) -> Session {
        Session {
            local,
            peer,
            state: State::Idle,
            hold: 0,
            last_heard_ms: 0,
            last_sent_ms: 0,
            inbuf: Vec::new(),
            learned: BTreeMap::new(),
            sent: Exports::new(),
            wanted: Exports::new(),
        }
    }

    /// Where it is.
    pub fn state(&self) -> State {
        self.state
    }

    /// Our BGP identifier.
    pub fn local_id(&self) -> Ipv4Addr {
        self.local.router_id
    }

    /// The configured neighbour.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// Routes learned from the peer.
    pub fn learned(&self) -> &BTreeMap<VpnKey, VpnRoute> {
        &self.learned
    }

    /// How many routes the peer has from us.
    pub fn advertised(&self) -> usize {
        self.sent.len()
    }

    fn hold_time_proposed(&self) -> u16 {
        if self.peer.hold_time == 0 {
            self.local.hold_time
        } else {
            self.peer.hold_time
        }
    }

    /// The TCP connection is up: send our OPEN.
    pub fn connected(&mut self, now_ms: u64) -> Vec<Output> {
        self.inbuf.clear();
        self.state = State::OpenSent;
        self.last_heard_ms = now_ms;
        self.last_sent_ms = now_ms;
        // Until the peer's OPEN arrives, wait as long as RFC 4271 suggests (4 minutes).
        self.hold = 240;
        vec![Output::Send(codec::open(
            self.local.asn,
            self.hold_time_proposed(),
            self.local.router_id,
        ))]
    }

    /// The connection closed under us (or the driver gave up on it).
    pub fn closed(&mut self, why: &str) -> Vec<Output> {
        self.reset(why.to_string())
    }

    /// Bytes from the peer.
    pub fn received(&mut self, bytes: &[u8], now_ms: u64) -> Vec<Output> {
        if self.state == State::Idle {
            return Vec::new();
        }
        self.inbuf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut used = 0;
        loop {
            match codec::frame(&self.inbuf[used..]) {
                Ok(None) => break,
                Ok(Some(f)) => {
                    used += f.bytes.len();
                    let (kind, msg) = (f.kind, f.bytes.to_vec());
                    self.last_heard_ms = now_ms;
                    if let Err(n) = self.message(kind, &msg, now_ms, &mut out) {
                        return self.fail(n, out);
                    }
                    if self.state == State::Idle {
                        return out;
                    }
                }
                Err(n) => return self.fail(n, out),
            }
        }
        self.inbuf.drain(..used);
        out
    }

    /// Time passes: the hold timer and keepalives.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Output> {
        if self.state == State::Idle || self.hold == 0 {
            return Vec::new();
        }
        let hold_ms = u64::from(self.hold) * 1000;
        if now_ms.saturating_sub(self.last_heard_ms) >= hold_ms {
            return self.fail(Notification::new(4, 0), Vec::new());
        }
        if self.state != State::OpenSent && now_ms.saturating_sub(self.last_sent_ms) >= hold_ms / 3
        {
            self.last_sent_ms = now_ms;
            return vec![Output::Send(codec::keepalive())];
        }
        Vec::new()
    }

    /// What the peer should have from us; sends the difference when established.
    pub fn export(&mut self, wanted: Exports, now_ms: u64) -> Vec<Output> {
        self.wanted = wanted;
        if self.state != State::Established {
            return Vec::new();
        }
        let out = self.sync();
        if !out.is_empty() {
            self.last_sent_ms = now_ms;
        }
        out
    }

    /// Sends withdrawals and announcements that bring the peer from `sent` to `wanted`,
    /// grouped by shared attributes and packed under the message size limit.
    fn sync(&mut self) -> Vec<Output> {
        let gone: Vec<VpnKey> = self
            .sent
            .keys()
            .filter(|k| !self.wanted.contains_key(k))
            .copied()
            .collect();
        let mut out = Vec::new();
        // 4096 bytes less header, lengths and the MP_UNREACH header: 100 slack is plenty.
        for chunk in chunks_by_size(&gone, MAX_LEN - 100) {
            out.push(Output::Send(codec::withdraw(chunk)));
        }
        let mut groups: BTreeMap<&PathAttrs, Vec<(VpnKey, u32)>> = BTreeMap::new();
        for (k, (attrs, label)) in &self.wanted {
            if self.sent.get(k) != Some(&(attrs.clone(), *label)) {
                groups.entry(attrs).or_default().push((*k, *label));
            }
        }
        let sender = Sender {
            asn: self.local.asn,
            ibgp: self.peer.asn == self.local.asn,
        };
        for (attrs, routes) in groups {
            // Attributes take at most 32 bytes plus 8 per community.
            let room = MAX_LEN - 100 - 8 * (attrs.targets.len() + attrs.encaps.len());
            let keys: Vec<VpnKey> = routes.iter().map(|(k, _)| *k).collect();
            let mut at = 0;
            for chunk in chunks_by_size(&keys, room) {
                out.push(Output::Send(codec::announce(
                    sender,
                    attrs,
                    &routes[at..at + chunk.len()],
                )));
                at += chunk.len();
            }
        }
        self.sent = self.wanted.clone();
        out
    }

    fn message(
        &mut self,
        kind: u8,
        msg: &[u8],
        now_ms: u64,
        out: &mut Vec<Output>,
    ) -> Result<(), Notification> {
        match (self.state, kind) {
            (State::OpenSent, msg_type::OPEN) => self.open(msg, now_ms, out),
            (State::OpenConfirm, msg_type::KEEPALIVE) => {
                self.state = State::Established;
                out.push(Output::Established);
                out.extend(self.sync());
                out.push(Output::Send(codec::end_of_rib()));
                Ok(())
            }
            (State::Established, msg_type::KEEPALIVE) => Ok(()),
            (State::Established, msg_type::UPDATE) => {
                let upd = codec::parse_update(msg, self.local.asn)?;
                self.apply(upd, out);
                Ok(())
            }
            (State::Established, msg_type::ROUTE_REFRESH) => {
                self.sent.clear();
                out.extend(self.sync());
                out.push(Output::Send(codec::end_of_rib()));
                Ok(())
            }
            (_, msg_type::NOTIFICATION) => {
                let n = codec::parse_notification(msg);
                out.extend(self.reset(format!("peer sent NOTIFICATION: {}", n.describe())));
                Ok(())
            }
            // Anything else in the wrong state is a finite state machine error (RFC 6608).
            _ => Err(Notification::new(5, state_subcode(self.state))),
        }
    }

    fn open(&mut self, msg: &[u8], now_ms: u64, out: &mut Vec<Output>) -> Result<(), Notification> {
        let open = codec::parse_open(msg)?;
        if open.asn != self.peer.asn {
            let data = u16::try_from(open.asn)
                .unwrap_or(23456)
                .to_be_bytes()
                .to_vec();
            return Err(Notification {
                code: 2,
                subcode: 2,
                data,
            });
        }
        // Zero, ours within our AS, or not the configured one: a bad BGP identifier.
        let ours = open.router_id == self.local.router_id && open.asn == self.local.asn;
        let unexpected = self.peer.identifier.is_some_and(|id| id != open.router_id);
        if open.router_id.is_unspecified() || ours || unexpected {
            return Err(Notification::new(2, 3));
        }
        if open.hold_time == 1 || open.hold_time == 2 {
            return Err(Notification::new(2, 6));
        }
        if !open.vpn_ipv4 {
            // Unsupported capability: we need VPN-IPv4 (RFC 5492 §5).
            return Err(Notification {
                code: 2,
                subcode: 7,
                data: vec![1, 4, 0, 1, 0, 128],
            });
        }
        self.hold = open.hold_time.min(self.hold_time_proposed());
        self.state = State::OpenConfirm;
        self.last_sent_ms = now_ms;
        out.push(Output::Send(codec::keepalive()));
        Ok(())
    }

    fn apply(&mut self, upd: codec::Update, out: &mut Vec<Output>) {
        for k in upd.withdrawn {
            if self.learned.remove(&k).is_some() {
                out.push(Output::Withdrawn(k));
            }
        }
        for r in upd.announced {
            if r.label > 0xfffff || r.label < 16 {
                // Reserved or impossible label: unusable, like a withdrawal (RFC 7606 §5.3 spirit).
                if self.learned.remove(&r.key).is_some() {
                    out.push(Output::Withdrawn(r.key));
                }
                continue;
            }
            self.learned.insert(r.key, r.clone());
            out.push(Output::Learned(r));
        }
    }

    /// Sends the NOTIFICATION and ends the session.
    fn fail(&mut self, n: Notification, mut out: Vec<Output>) -> Vec<Output> {
        out.push(Output::Send(codec::notification(&n)));
        out.extend(self.reset(format!("sent NOTIFICATION: {}", n.describe())));
        out
    }

    /// Back to Idle: everything learned goes, nothing counts as sent.
    fn reset(&mut self, why: String) -> Vec<Output> {
        let mut out: Vec<Output> = std::mem::take(&mut self.learned)
            .into_keys()
            .map(Output::Withdrawn)
            .collect();
        self.sent.clear();
        self.inbuf.clear();
        self.state = State::Idle;
        out.push(Output::Down(why));
        out
    }
}

/// RFC 6608 subcodes: which state received the unexpected message.
fn state_subcode(s: State) -> u8 {
    match s {
        State::OpenSent => 1,
        State::OpenConfirm => 2,
        State::Established => 3,
        State::Idle => 0,
    }
}

/// Splits keys into runs whose NLRI fit in `room` bytes.
fn chunks_by_size(keys: &[VpnKey], room: usize) -> Vec<&[VpnKey]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, k) in keys.iter().enumerate() {
        let n = codec::nlri_len(k);
        if size + n > room && i > start {
            out.push(&keys[start..i]);
            start = i;
            size = 0;
        }
        size += n;
    }
    if start < keys.len() {
        out.push(&keys[start..]);
    }
    out
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
