//! The vrouter-api contract's JSON decoding (`vrouter_api`): what an agent reads from the shim
//! (watch replies and the interface configs and routes inside them, bind and register replies,
//! listings, errors) and what the shim reads from agents (register, bind, advertise, withdraw),
//! plus the strict value parsers behind them (UUID, MAC, IPv4 prefix).
//!
//! The whole input is tried as each message type; short lines of it as each value type.
//!
//! Invariants: whatever decodes re-encodes to JSON that decodes to the same value and encodes to
//! the same text (the shim and the agents agree on every value); each watch event's typed
//! [`WatchEvent::change`] either fails for that key alone or yields values that round-trip too;
//! a value parser's output prints canonically and parses back to itself.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::{Debug, Display};
use std::str::FromStr;
use vrouter_api::agent::{
    Advertise, Advertised, AgentList, Binding, Bound, ErrorReply, RegisterAgent, Registered, Route,
    RouteList, Unbound, Withdraw, Withdrawn,
};
use vrouter_api::interface::InterfaceConfig;
use vrouter_api::watch::{Change, WatchEvent, WatchReply};
use vrouter_api::{Ipv4Prefix, Label, MacAddr, Uuid};

/// Decodes `data` as every message and value type of the contract.
pub fn run(data: &[u8]) {
    if let Some(reply) = try_as::<WatchReply>(data) {
        reply.events.iter().for_each(event);
    }
    try_as::<InterfaceConfig>(data);
    try_as::<Route>(data);
    try_as::<RegisterAgent>(data);
    try_as::<Registered>(data);
    try_as::<AgentList>(data);
    try_as::<Binding>(data);
    try_as::<Bound>(data);
    try_as::<Unbound>(data);
    try_as::<Advertise>(data);
    try_as::<Advertised>(data);
    try_as::<Withdraw>(data);
    try_as::<Withdrawn>(data);
    try_as::<RouteList>(data);
    try_as::<ErrorReply>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        for line in text.lines().take(16) {
            value::<Uuid>(line);
            value::<MacAddr>(line);
            value::<Ipv4Prefix>(line);
            if let Ok(p) = Ipv4Prefix::parse_truncating(line) {
                assert_eq!(Ok(p), p.to_string().parse::<Ipv4Prefix>(), "{line:?}");
            }
        }
    }
    if let Some(l) = try_as::<Label>(data) {
        assert_eq!(Label::new(l.get()), Ok(l));
    }
}

/// `data` as a `T`, checked to round-trip through JSON.
fn try_as<T>(data: &[u8]) -> Option<T>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let v: T = serde_json::from_slice(data).ok()?;
    round_trip(&v);
    Some(v)
}

fn round_trip<T>(v: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let text = serde_json::to_vec(v).expect("our types serialize");
    let back: T = match serde_json::from_slice(&text) {
        Ok(b) => b,
        Err(e) => panic!(
            "{v:?} encodes to {} which does not decode: {e}",
            String::from_utf8_lossy(&text)
        ),
    };
    assert_eq!(&back, v, "JSON round trip changed the value");
    let again = serde_json::to_vec(&back).expect("our types serialize");
    assert_eq!(again, text, "encoding is not stable");
}

/// One watch event: its typed change round-trips, or it is refused for this key alone.
fn event(e: &WatchEvent) {
    match e.change() {
        Ok(Change::Interface { vmi, config }) => {
            assert_eq!(vmi.to_string().parse::<Uuid>(), Ok(vmi));
            if let Some(c) = config {
                round_trip(&*c);
                let _ = (c.vrf(), c.is_service_interface());
            }
        }
        Ok(Change::Route { route, .. }) => {
            if let Some(r) = route {
                round_trip(&r);
            }
        }
        Ok(Change::Unknown { .. }) => {}
        Err(bad) => assert_eq!((bad.kind, &bad.key), (e.kind, &e.key)),
    }
}

/// A value parsed from text prints canonically: parsing what it prints gives it back.
fn value<T>(s: &str)
where
    T: FromStr + Display + PartialEq + Debug,
    T::Err: Debug,
{
    if let Ok(v) = s.parse::<T>() {
        let printed = v.to_string();
        match printed.parse::<T>() {
            Ok(back) => assert_eq!(back, v, "{s:?} printed as {printed:?}"),
            Err(e) => panic!("{s:?} parsed, but its printed form {printed:?} does not: {e:?}"),
        }
    }
}
