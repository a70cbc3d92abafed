// SPDX-License-Identifier: Apache-2.0
//! The agent API's side of a request that is not HTTP: the body parsed once into its
//! `vrouter-api` type (a malformed body gets a 400 naming the field at fault), and the version
//! handshake ([`VERSION_HEADER`] both ways; see `vrouter_api::agent`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::Value;
use vrouter_api::agent::{
    version_mismatch, Advertise, Binding, RegisterAgent, Withdraw, API_VERSION,
};
use vrouter_api::Ipv4Prefix;
pub use vrouter_api::VERSION_HEADER;

use crate::error::{bad, ApiError};

/// A request body of the agent API.
pub trait AgentRequest: DeserializeOwned {
    /// Adjusts the raw body where the shim's rule differs from the type's (nothing by default).
    fn prepare(_body: &mut Value) -> Result<(), ApiError> {
        Ok(())
    }
}

impl AgentRequest for RegisterAgent {}

impl AgentRequest for Binding {}

impl AgentRequest for Advertise {
    fn prepare(body: &mut Value) -> Result<(), ApiError> {
        route_prefix(body)
    }
}

impl AgentRequest for Withdraw {
    fn prepare(body: &mut Value) -> Result<(), ApiError> {
        route_prefix(body)
    }
}

/// A route's `prefix` as the shim has always taken it: `a.b.c.d/len` written out (a bare
/// address is refused) and host bits cleared. [`Ipv4Prefix`] alone would read a bare address as
/// a /32 and refuse host bits, which would change what operators' curl calls do.
fn route_prefix(body: &mut Value) -> Result<(), ApiError> {
    // Absent or not a string: the typed parse names it.
    let Some(Value::String(p)) = body.get_mut("prefix") else {
        return Ok(());
    };
    if !p.contains('/') {
        return Err(bad(format!("prefix: {p:?} is not a.b.c.d/len")));
    }
    let parsed = Ipv4Prefix::parse_truncating(p).map_err(|e| bad(format!("prefix: {e}")))?;
    *p = parsed.to_string();
    Ok(())
}

/// Parses an agent-API request body into `T`; a 400 says which field is wrong
/// (`label: label 1048576 is not below 2^20`).
pub fn parse_body<T: AgentRequest>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(bad("request body is required"));
    }
    let mut v: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("malformed JSON: {e}")))?;
    T::prepare(&mut v)?;
    serde_path_to_error::deserialize(v).map_err(|e| bad(e.to_string()))
}

/// The version a request's [`VERSION_HEADER`] names when it is not ours; a request without the
/// header is taken as ours (curl, agents older than the header).
pub fn foreign_version(header: Option<&[u8]>) -> Option<String> {
    let theirs = String::from_utf8_lossy(header?);
    let theirs = theirs.trim();
    if theirs == API_VERSION.to_string() {
        return None;
    }
    // The text goes into a log line and a reply: keep it short.
    Some(theirs.chars().take(32).collect())
}

/// The 400 a peer of another version gets (`ErrorReply`-shaped through the server's errors).
pub fn version_error(theirs: &str) -> ApiError {
    ApiError::BadRequest(version_mismatch(theirs))
}

/// Keys remembered at most: past that, warnings are dropped until old ones age out.
const LIMITER_KEYS: usize = 1024;

/// Lets one log line through per key and interval. A peer of another version retries every few
/// seconds; one line per peer and version every interval says enough without flooding the log.
#[derive(Debug)]
pub struct LogLimiter {
    every: Duration,
    last: Mutex<HashMap<(IpAddr, String), Instant>>,
}

impl LogLimiter {
    /// At most one line per key each `every`.
    pub fn new(every: Duration) -> LogLimiter {
        LogLimiter {
            every,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// True if a line about `what` from `peer` may be logged at `now`.
    pub fn allow(&self, peer: IpAddr, what: &str, now: Instant) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.retain(|_, t| now.saturating_duration_since(*t) < self.every);
        let key = (peer, what.to_string());
        if last.contains_key(&key) || last.len() >= LIMITER_KEYS {
            return false;
        }
        last.insert(key, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn bad_bodies_name_the_field() {
        let e = parse_body::<Advertise>(
            br#"{"host": "h", "vrf": "v", "prefix": "10.0.0.0/8", "label": 1048576}"#,
        )
        .expect_err("label too big");
        assert_eq!(
            e,
            ApiError::BadRequest("label: label 1048576 is not below 2^20".into())
        );
        let e = parse_body::<Binding>(br#"{"host": "h", "vmi_uuid": "nope"}"#).expect_err("uuid");
        assert_eq!(e.to_string(), "vmi_uuid: malformed UUID \"nope\"");
        let e = parse_body::<Binding>(br#"{"host": "h"}"#).expect_err("missing");
        assert!(e.to_string().contains("vmi_uuid"), "{e}");
        assert!(parse_body::<RegisterAgent>(b"").is_err());
        assert!(parse_body::<RegisterAgent>(b"{not json").is_err());
    }

    #[test]
    fn route_prefixes_keep_their_rule() {
        let body = br#"{"host": "h", "vrf": "v", "prefix": "10.1.1.7/24", "label": 5}"#;
        let ad = parse_body::<Advertise>(body).expect("host bits are cleared");
        assert_eq!(ad.prefix.to_string(), "10.1.1.0/24");
        let e = parse_body::<Withdraw>(br#"{"host": "h", "vrf": "v", "prefix": "10.1.1.1"}"#)
            .expect_err("bare address");
        assert_eq!(e.to_string(), "prefix: \"10.1.1.1\" is not a.b.c.d/len");
    }

    #[test]
    fn version_header() {
        assert_eq!(foreign_version(None), None);
        assert_eq!(foreign_version(Some(b" 1 ")), None);
        assert_eq!(foreign_version(Some(b"2")), Some("2".into()));
        let msg = version_error("2").to_string();
        assert!(
            msg.contains("version 2") && msg.contains("version 1"),
            "{msg}"
        );
    }

    #[test]
    fn limiter_lets_one_line_through_per_interval() {
        let l = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let a = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let b = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        assert!(l.allow(a, "2", t0));
        assert!(!l.allow(a, "2", t0 + Duration::from_secs(9)));
        assert!(l.allow(a, "3", t0 + Duration::from_secs(9)));
        assert!(l.allow(b, "2", t0 + Duration::from_secs(9)));
        assert!(l.allow(a, "2", t0 + Duration::from_secs(10)));
    }
}
