// SPDX-License-Identifier: Apache-2.0
//! The BGP speaker's neighbour table as the shim shows it (`GET /vrouter/bgp/neighbors`) and
//! `vrctl bgp` reads it: what `show bgp summary` tells a router's operator.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// Where a session is (RFC 4271 §8.2.2; the speaker's Connect/Active are `Idle` here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BgpState {
    /// No connection.
    Idle,
    /// Connected, our OPEN sent, waiting for the neighbour's.
    OpenSent,
    /// OPENs exchanged, waiting for the first KEEPALIVE.
    OpenConfirm,
    /// Routes flow.
    Established,
}

/// One neighbour (a `bgp-router` object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpNeighbor {
    /// Its address.
    pub address: Ipv4Addr,
    /// Its AS.
    pub asn: u32,
    /// Session state.
    pub state: BgpState,
    /// Seconds since the session was established (0 when it is not).
    pub uptime_s: u64,
    /// VPN-IPv4 routes learned from it.
    pub prefixes_received: usize,
    /// VPN-IPv4 routes it has from us.
    pub prefixes_advertised: usize,
    /// Times the session left Established.
    pub flaps: u64,
    /// Why the session last went down or could not come up.
    pub last_error: Option<String>,
}

/// `GET /vrouter/bgp/neighbors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpSummary {
    /// Our BGP identifier (the `--bgp` address).
    pub router_id: Ipv4Addr,
    /// Our AS (`global-system-config.autonomous_system`, 64512 by default).
    pub asn: u32,
    /// Neighbours by address.
    pub neighbors: Vec<BgpNeighbor>,
}
