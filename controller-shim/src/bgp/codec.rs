// SPDX-License-Identifier: Apache-2.0
//! BGP messages on the wire: framing, what the shim sends, and what it makes of what a peer
//! sends.
//!
//! Our own, for the subset a VPN-IPv4 speaker needs: both BGP crates we tried panic on
//! malformed VPN NLRI or attribute lists from a peer (zettabgp 0.3.9, routecore 0.7.2; the
//! inputs are in docs/adr/0005-bgp-messages.md), and a peer's bytes must never crash the shim.
//! Every read is bounds-checked through [`Reader`]; the tests feed random mutations; FRR and
//! GoBGP decode what we compose in the namespace tests.

use std::net::Ipv4Addr;

use vrouter_api::Ipv4Prefix;

use super::types::{Encap, Rd, RouteTarget, VpnKey, VpnRoute};

/// Header length: 16-byte marker, 2-byte length, 1-byte type.
pub const HEADER_LEN: usize = 19;
/// The largest message without the extended-message capability (RFC 4271 §4).
pub const MAX_LEN: usize = 4096;
/// AFI/SAFI of VPN-IPv4.
const AFI_IPV4: u16 = 1;
const SAFI_VPN: u8 = 128;
/// The AS number an OPEN carries when ours does not fit in two bytes (RFC 6793).
const AS_TRANS: u16 = 23456;

/// Message types (RFC 4271 §4.1, RFC 2918).
pub mod msg_type {
    /// OPEN.
    pub const OPEN: u8 = 1;
    /// UPDATE.
    pub const UPDATE: u8 = 2;
    /// NOTIFICATION.
    pub const NOTIFICATION: u8 = 3;
    /// KEEPALIVE.
    pub const KEEPALIVE: u8 = 4;
    /// ROUTE-REFRESH.
    pub const ROUTE_REFRESH: u8 = 5;
}

/// A NOTIFICATION's error code, subcode and data (RFC 4271 §4.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Error code.
    pub code: u8,
    /// Error subcode.
    pub subcode: u8,
    /// Data, as the subcode defines it.
    pub data: Vec<u8>,
}

impl Notification {
    /// A NOTIFICATION without data.
    pub fn new(code: u8, subcode: u8) -> Notification {
        Notification {
            code,
            subcode,
            data: Vec::new(),
        }
    }

    /// What an operator reads in the neighbour table.
    pub fn describe(&self) -> String {
        let what = match (self.code, self.subcode) {
            (1, 1) => "header: connection not synchronized",
            (1, 2) => "header: bad message length",
            (1, 3) => "header: bad message type",
            (1, _) => "message header error",
            (2, 1) => "open: unsupported version",
            (2, 2) => "open: bad peer AS",
            (2, 3) => "open: bad BGP identifier",
            (2, 6) => "open: unacceptable hold time",
            (2, _) => "open message error",
            (3, 1) => "update: malformed attribute list",
            (3, 3) => "update: missing well-known attribute",
            (3, 10) => "update: invalid network field",
            (3, _) => "update message error",
            (4, _) => "hold timer expired",
            (5, _) => "finite state machine error",
            (6, 2) => "cease: administrative shutdown",
            (6, 3) => "cease: peer de-configured",
            (6, 4) => "cease: administrative reset",
            (6, 5) => "cease: connection rejected",
            (6, 7) => "cease: connection collision resolution",
            (6, _) => "cease",
            _ => "unknown error",
        };
        format!("{what} ({}/{})", self.code, self.subcode)
    }
}

/// The parts of a peer's OPEN the session needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The peer's AS (the 4-byte capability's value when present).
    pub asn: u32,
    /// Proposed hold time, seconds.
    pub hold_time: u16,
    /// BGP identifier.
    pub router_id: Ipv4Addr,
    /// Whether the peer can carry VPN-IPv4 (multiprotocol capability AFI 1 / SAFI 128).
    pub vpn_ipv4: bool,
}

/// What an UPDATE meant, after RFC 7606 error handling.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    /// Routes announced.
    pub announced: Vec<VpnRoute>,
    /// Routes withdrawn, including announcements treated as withdrawals.
    pub withdrawn: Vec<VpnKey>,
    /// Why announcements were treated as withdrawals (RFC 7606), for the log.
    pub treated_as_withdraw: Option<String>,
}

/// A framed message: its type and its whole bytes (header included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Message type.
    pub kind: u8,
    /// The whole message, header included.
    pub bytes: &'a [u8],
}

/// Splits the first message off `buf`: `Ok(None)` when more bytes are needed, an error
/// (the NOTIFICATION to send) when the header is bad.
pub fn frame(buf: &[u8]) -> Result<Option<Frame<'_>>, Notification> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[..16] != [0xff; 16] {
        return Err(Notification::new(1, 1));
    }
    let len = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
    let kind = buf[18];
    let min = match kind {
        msg_type::OPEN => 29,
        msg_type::UPDATE => 23,
        msg_type::NOTIFICATION => 21,
        msg_type::KEEPALIVE => 19,
        msg_type::ROUTE_REFRESH => 23,
        _ => {
            return Err(Notification {
                code: 1,
                subcode: 3,
                data: vec![kind],
            })
        }
    };
    if len < min || len > MAX_LEN || (kind == msg_type::KEEPALIVE && len != HEADER_LEN) {
        return Err(Notification {
            code: 1,
            subcode: 2,
            data: (len as u16).to_be_bytes().to_vec(),
        });
    }
    Ok((buf.len() >= len).then(|| Frame {
        kind,
        bytes: &buf[..len],
    }))
}

fn with_header(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(HEADER_LEN + body.len());
    m.extend_from_slice(&[0xff; 16]);
    m.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
    m.push(kind);
    m.extend_from_slice(body);
    m
}

/// KEEPALIVE.
pub fn keepalive() -> Vec<u8> {
    with_header(msg_type::KEEPALIVE, &[])
}

/// NOTIFICATION.
pub fn notification(n: &Notification) -> Vec<u8> {
    let mut body = vec![n.code, n.subcode];
    body.extend_from_slice(&n.data);
    with_header(msg_type::NOTIFICATION, &body)
}

/// OPEN with the capabilities the speaker uses: multiprotocol VPN-IPv4, route refresh and
/// 4-byte AS numbers.
pub fn open(asn: u32, hold_time: u16, router_id: Ipv4Addr) -> Vec<u8> {
    let mut caps = Vec::new();
    // Multiprotocol (1): AFI 1, reserved, SAFI 128.
    caps.extend_from_slice(&[1, 4, 0, AFI_IPV4 as u8, 0, SAFI_VPN]);
    // Route refresh (2), no value.
    caps.extend_from_slice(&[2, 0]);
    // 4-byte AS (65).
    caps.extend_from_slice(&[65, 4]);
    caps.extend_from_slice(&asn.to_be_bytes());
    let mut body = vec![4];
    body.extend_from_slice(&u16::try_from(asn).unwrap_or(AS_TRANS).to_be_bytes());
    body.extend_from_slice(&hold_time.to_be_bytes());
    body.extend_from_slice(&router_id.octets());
    // One optional parameter of type 2 (capabilities) holding them all.
    body.push((caps.len() + 2) as u8);
    body.extend_from_slice(&[2, caps.len() as u8]);
    body.extend_from_slice(&caps);
    with_header(msg_type::OPEN, &body)
}

/// Attribute header: flags, type, length (extended when over 255 bytes).
fn attr(out: &mut Vec<u8>, flags: u8, kind: u8, value: &[u8]) {
    if value.len() > 255 {
        out.extend_from_slice(&[flags | 0x10, kind]);
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    } else {
        out.extend_from_slice(&[flags, kind, value.len() as u8]);
    }
    out.extend_from_slice(value);
}

/// One VPN-IPv4 NLRI (RFC 8277 §2.2 with RFC 4364's RD): length in bits, label, RD, prefix.
fn vpn_nlri(out: &mut Vec<u8>, key: &VpnKey, label: u32) {
    let plen = usize::from(key.prefix.len);
    out.push((24 + 64 + plen) as u8);
    let l = (label << 4) | 1; // bottom of stack
    out.extend_from_slice(&l.to_be_bytes()[1..]);
    out.extend_from_slice(&key.rd.0);
    out.extend_from_slice(&key.prefix.addr.octets()[..plen.div_ceil(8)]);
}

/// Bytes one announced route takes in MP_REACH_NLRI.
pub fn nlri_len(key: &VpnKey) -> usize {
    1 + 3 + 8 + usize::from(key.prefix.len).div_ceil(8)
}

/// Path attributes shared by a group of announced routes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathAttrs {
    /// Tunnel endpoint.
    pub nexthop: Ipv4Addr,
    /// Route targets.
    pub targets: Vec<RouteTarget>,
    /// Encapsulations, in preference order.
    pub encaps: Vec<Encap>,
}

/// How the speaker relates to a peer: attributes differ for iBGP and eBGP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sender {
    /// Our AS.
    pub asn: u32,
    /// Whether the peer is in our AS.
    pub ibgp: bool,
}

/// UPDATE announcing `routes` (all with `attrs`) as VPN-IPv4. The caller keeps each message
/// under [`MAX_LEN`] (see [`nlri_len`]).
pub fn announce(sender: Sender, attrs: &PathAttrs, routes: &[(VpnKey, u32)]) -> Vec<u8> {
    let mut pa = Vec::new();
    attr(&mut pa, 0x40, 1, &[0]); // ORIGIN IGP
    if sender.ibgp {
        attr(&mut pa, 0x40, 2, &[]); // empty AS_PATH
        attr(&mut pa, 0x40, 5, &100u32.to_be_bytes()); // LOCAL_PREF
    } else {
        let mut seg = vec![2, 1]; // AS_SEQUENCE of one 4-byte AS
        seg.extend_from_slice(&sender.asn.to_be_bytes());
        attr(&mut pa, 0x40, 2, &seg);
    }
    let mut ec = Vec::new();
    for rt in &attrs.targets {
        ec.extend_from_slice(&rt.0);
    }
    for e in &attrs.encaps {
        ec.extend_from_slice(&e.ext_community());
    }
    if !ec.is_empty() {
        attr(&mut pa, 0xc0, 16, &ec); // EXTENDED COMMUNITIES, optional transitive
    }
    let mut mp = Vec::new();
    mp.extend_from_slice(&AFI_IPV4.to_be_bytes());
    mp.push(SAFI_VPN);
    mp.push(12); // next hop: RD 0 + IPv4
    mp.extend_from_slice(&[0; 8]);
    mp.extend_from_slice(&attrs.nexthop.octets());
    mp.push(0); // reserved
    for (key, label) in routes {
        vpn_nlri(&mut mp, key, *label);
    }
    attr(&mut pa, 0x80, 14, &mp); // MP_REACH_NLRI, optional non-transitive
    update_with(&pa)
}

/// UPDATE withdrawing `keys` (MP_UNREACH_NLRI; the label field is 0x800000, RFC 8277 §2.4).
pub fn withdraw(keys: &[VpnKey]) -> Vec<u8> {
    let mut mp = Vec::new();
    mp.extend_from_slice(&AFI_IPV4.to_be_bytes());
    mp.push(SAFI_VPN);
    for key in keys {
        let plen = usize::from(key.prefix.len);
        mp.push((24 + 64 + plen) as u8);
        mp.extend_from_slice(&[0x80, 0, 0]);
        mp.extend_from_slice(&key.rd.0);
        mp.extend_from_slice(&key.prefix.addr.octets()[..plen.div_ceil(8)]);
    }
    let mut pa = Vec::new();
    attr(&mut pa, 0x80, 15, &mp);
    update_with(&pa)
}

/// End-of-RIB for VPN-IPv4 (RFC 4724 §2): an empty MP_UNREACH_NLRI.
pub fn end_of_rib() -> Vec<u8> {
    let mut pa = Vec::new();
    attr(&mut pa, 0x80, 15, &[0, AFI_IPV4 as u8, SAFI_VPN]);
    update_with(&pa)
}

fn update_with(path_attrs: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 0]; // no IPv4 withdrawals
    body.extend_from_slice(&(path_attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(path_attrs);
    with_header(msg_type::UPDATE, &body)
}

/// A bounds-checked reader over a message body.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
}

/// Parses an OPEN (header included); the error is the NOTIFICATION to send.
pub fn parse_open(msg: &[u8]) -> Result<Open, Notification> {
    let bad = || Notification::new(2, 0);
    let mut r = Reader {
        buf: msg.get(HEADER_LEN..).ok_or_else(bad)?,
    };
    let version = r.u8().ok_or_else(bad)?;
    if version != 4 {
        return Err(Notification {
            code: 2,
            subcode: 1,
            data: 4u16.to_be_bytes().to_vec(),
        });
    }
    let mut asn = u32::from(r.u16().ok_or_else(bad)?);
    let hold_time = r.u16().ok_or_else(bad)?;
    let id = r.take(4).ok_or_else(bad)?;
    let router_id = Ipv4Addr::new(id[0], id[1], id[2], id[3]);
    let opt_len = usize::from(r.u8().ok_or_else(bad)?);
    let mut params = Reader {
        buf: r.take(opt_len).ok_or_else(bad)?,
    };
    let mut vpn_ipv4 = false;
    while !params.buf.is_empty() {
        let kind = params.u8().ok_or_else(bad)?;
        let len = usize::from(params.u8().ok_or_else(bad)?);
        let value = params.take(len).ok_or_else(bad)?;
        if kind != 2 {
            // Only capabilities (RFC 5492) are defined; anything else is unsupported.
            return Err(Notification::new(2, 4));
        }
        let mut caps = Reader { buf: value };
        while !caps.buf.is_empty() {
            let code = caps.u8().ok_or_else(bad)?;
            let len = usize::from(caps.u8().ok_or_else(bad)?);
            let v = caps.take(len).ok_or_else(bad)?;
            match (code, v) {
                (1, [0, 1, _, SAFI_VPN]) => vpn_ipv4 = true,
                (65, [a, b, c, d]) => asn = u32::from_be_bytes([*a, *b, *c, *d]),
                _ => {}
            }
        }
    }
    Ok(Open {
        asn,
        hold_time,
        router_id,
        vpn_ipv4,
    })
}

/// What the path attributes of an UPDATE say, attribute by attribute.
#[derive(Default)]
struct Attrs<'a> {
    origin: bool,
    as_path: Option<&'a [u8]>,
    /// `(next hop, NLRI bytes)` of a VPN-IPv4 MP_REACH_NLRI.
    reach: Option<(Option<Ipv4Addr>, &'a [u8])>,
    /// NLRI bytes of a VPN-IPv4 MP_UNREACH_NLRI.
    unreach: Option<&'a [u8]>,
    communities: Option<&'a [u8]>,
    /// The first attribute error that makes announcements unusable (RFC 7606 treat-as-withdraw).
    unusable: Option<String>,
}

/// Walks the path attributes. Framing errors and a repeated MP attribute reset the session
/// (RFC 7606 §3, §4); a malformed ORIGIN, AS_PATH, LOCAL_PREF or community list makes the
/// announcements withdrawals; other repeated attributes keep their first copy.
fn attributes(mut r: Reader<'_>) -> Result<Attrs<'_>, Notification> {
    let mut a = Attrs::default();
    let mut seen = [false; 256];
    let reset = || Notification::new(3, 1);
    while !r.buf.is_empty() {
        let flags = r.u8().ok_or_else(reset)?;
        let kind = r.u8().ok_or_else(reset)?;
        let len = if flags & 0x10 != 0 {
            usize::from(r.u16().ok_or_else(reset)?)
        } else {
            usize::from(r.u8().ok_or_else(reset)?)
        };
        let v = r.take(len).ok_or_else(reset)?;
        if std::mem::replace(&mut seen[usize::from(kind)], true) {
            if kind == 14 || kind == 15 {
                return Err(reset());
            }
            continue;
        }
        let mut unusable = |why: &str| {
            a.unusable.get_or_insert_with(|| why.to_string());
        };
        match kind {
            1 if v.len() == 1 && v[0] <= 2 => a.origin = true,
            1 => unusable("malformed ORIGIN"),
            2 if as_path_ok(v) => a.as_path = Some(v),
            2 => unusable("malformed AS_PATH"),
            4 | 5 if v.len() != 4 => unusable("malformed MED or LOCAL_PREF"),
            16 if v.len() % 8 == 0 => a.communities = Some(v),
            16 => unusable("malformed extended communities"),
            14 => a.reach = mp_reach(v)?,
            15 => a.unreach = mp_unreach(v)?,
            _ => {}
        }
    }
    Ok(a)
}

/// AS_PATH segments (type, count, 4-byte ASes) that exactly fill the attribute.
fn as_path_ok(mut v: &[u8]) -> bool {
    while !v.is_empty() {
        let [kind, count, rest @ ..] = v else {
            return false;
        };
        let n = usize::from(*count) * 4;
        if !(1..=4).contains(kind) || *count == 0 || rest.len() < n {
            return false;
        }
        v = &rest[n..];
    }
    true
}

/// Whether an AS_PATH names `asn` (a loop when it is ours).
fn as_path_has(mut v: &[u8], asn: u32) -> bool {
    while let [_, count, rest @ ..] = v {
        let n = (usize::from(*count) * 4).min(rest.len());
        if rest[..n].chunks_exact(4).any(|c| c == asn.to_be_bytes()) {
            return true;
        }
        v = &rest[n..];
    }
    false
}

/// MP_REACH_NLRI: `None` for another address family (not negotiated, ignored).
#[allow(clippy::type_complexity)]
fn mp_reach(v: &[u8]) -> Result<Option<(Option<Ipv4Addr>, &[u8])>, Notification> {
    let reset = || Notification::new(3, 1);
    let mut r = Reader { buf: v };
    let (afi, safi) = (r.u16().ok_or_else(reset)?, r.u8().ok_or_else(reset)?);
    let nh_len = usize::from(r.u8().ok_or_else(reset)?);
    let nh = r.take(nh_len).ok_or_else(reset)?;
    r.u8().ok_or_else(reset)?; // reserved
    if (afi, safi) != (AFI_IPV4, SAFI_VPN) {
        return Ok(None);
    }
    let nexthop = match nh {
        [_, _, _, _, _, _, _, _, a, b, c, d] | [a, b, c, d] => Some(Ipv4Addr::new(*a, *b, *c, *d)),
        _ => None,
    };
    Ok(Some((nexthop, r.buf)))
}

/// MP_UNREACH_NLRI: `None` for another address family.
fn mp_unreach(v: &[u8]) -> Result<Option<&[u8]>, Notification> {
    let reset = || Notification::new(3, 1);
    let mut r = Reader { buf: v };
    let (afi, safi) = (r.u16().ok_or_else(reset)?, r.u8().ok_or_else(reset)?);
    Ok(((afi, safi) == (AFI_IPV4, SAFI_VPN)).then_some(r.buf))
}

/// VPN-IPv4 NLRI (RFC 4364 §4.3.4 with one label, RFC 8277): `(key, label)` each. An NLRI
/// that cannot be parsed resets the session (RFC 7606 §5.3): nothing after it can be found.
fn vpn_nlri_list(v: &[u8]) -> Result<Vec<(VpnKey, u32)>, Notification> {
    let bad = || Notification::new(3, 10);
    let mut r = Reader { buf: v };
    let mut out = Vec::new();
    while !r.buf.is_empty() {
        let bits = usize::from(r.u8().ok_or_else(bad)?);
        if !(88..=88 + 32).contains(&bits) {
            return Err(bad());
        }
        let label = r.take(3).ok_or_else(bad)?;
        let rd = r.take(8).ok_or_else(bad)?;
        let plen = bits - 88;
        let p = r.take(plen.div_ceil(8)).ok_or_else(bad)?;
        let mut addr = [0u8; 4];
        addr[..p.len()].copy_from_slice(p);
        let prefix = Ipv4Prefix::truncating(Ipv4Addr::from(addr), plen as u8).ok_or_else(bad)?;
        let mut rd8 = [0u8; 8];
        rd8.copy_from_slice(rd);
        let label = u32::from_be_bytes([0, label[0], label[1], label[2]]) >> 4;
        out.push((
            VpnKey {
                rd: Rd(rd8),
                prefix,
            },
            label,
        ));
    }
    Ok(out)
}

/// The route targets and encapsulations among extended communities (8 bytes each).
fn communities(v: &[u8]) -> (Vec<RouteTarget>, Vec<Encap>) {
    let mut targets = Vec::new();
    let mut encaps = Vec::new();
    for c in v.chunks_exact(8) {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(c);
        if let Some(rt) = RouteTarget::from_ext_community(raw) {
            targets.push(rt);
        } else if let Some(e) = Encap::from_ext_community(raw) {
            encaps.push(e);
        }
    }
    (targets, encaps)
}

/// Parses an UPDATE (header included) for VPN-IPv4, handling errors as RFC 7606 says: a
/// malformed attribute list or NLRI field resets the session (the error is the NOTIFICATION);
/// a malformed or missing attribute the routes need turns the announcements into withdrawals;
/// a path holding `our_asn` (a loop) is not used. Other address families are ignored (they
/// were not negotiated).
pub fn parse_update(msg: &[u8], our_asn: u32) -> Result<Update, Notification> {
    let reset = || Notification::new(3, 1);
    let mut r = Reader {
        buf: msg.get(HEADER_LEN..).ok_or_else(reset)?,
    };
    let wlen = usize::from(r.u16().ok_or_else(reset)?);
    r.take(wlen).ok_or_else(reset)?; // IPv4 unicast: not negotiated
    let alen = usize::from(r.u16().ok_or_else(reset)?);
    let attrs = attributes(Reader {
        buf: r.take(alen).ok_or_else(reset)?,
    })?;
    let mut out = Update::default();
    if let Some(nlri) = attrs.unreach {
        out.withdrawn = vpn_nlri_list(nlri)?.into_iter().map(|(k, _)| k).collect();
    }
    let Some((nexthop, nlri)) = attrs.reach else {
        return Ok(out);
    };
    let announced = vpn_nlri_list(nlri)?;
    let why = if !attrs.origin {
        Some("missing ORIGIN".to_string())
    } else if attrs.as_path.is_none() {
        Some("missing AS_PATH".to_string())
    } else if let Some(why) = attrs.unusable {
        Some(why)
    } else if attrs.as_path.is_some_and(|p| as_path_has(p, our_asn)) {
        Some(format!("AS_PATH holds our AS {our_asn} (loop)"))
    } else {
        match nexthop {
            Some(a) if !(a.is_unspecified() || a.is_multicast() || a.is_broadcast()) => None,
            other => Some(format!("next hop {other:?} is not a unicast IPv4 address")),
        }
    };
    if let Some(why) = why {
        out.withdrawn.extend(announced.into_iter().map(|(k, _)| k));
        out.treated_as_withdraw = Some(why);
        return Ok(out);
    }
    let nexthop = nexthop.unwrap_or(Ipv4Addr::UNSPECIFIED);
    let (targets, encaps) = communities(attrs.communities.unwrap_or_default());
    out.announced = announced
        .into_iter()
        .map(|(key, label)| VpnRoute {
            key,
            label,
            nexthop,
            targets: targets.clone(),
            encaps: encaps.clone(),
        })
        .collect();
    Ok(out)
}

/// Parses a NOTIFICATION (header included).
pub fn parse_notification(msg: &[u8]) -> Notification {
    let body = &msg[HEADER_LEN.min(msg.len())..];
    Notification {
        code: body.first().copied().unwrap_or(0),
        subcode: body.get(1).copied().unwrap_or(0),
        data: body.get(2..).map(<[u8]>::to_vec).unwrap_or_default(),
    }
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
