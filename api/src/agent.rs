// SPDX-License-Identifier: Apache-2.0
//! The agent API: the calls an agent (and the devcloud, and an operator with curl) makes on the
//! shim under `/vrouter/`, their bodies and their replies. `docs/shim.md` ("Agent API") lists
//! the same calls; a test checks it against [`CALLS`].
//!
//! Versioning: every request may carry [`VERSION_HEADER`]; every reply carries it. A request
//! naming another version is refused with 400 and an [`ErrorReply`] naming both versions (a
//! request without the header is taken as this version: curl, older agents). A client that
//! sees another version in a reply refuses the reply the same way. Bump [`API_VERSION`] on any
//! change an older peer would misread; adding an optional field is not one.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::ids::Uuid;
use crate::prefix::{Ipv4Prefix, Label};

/// The contract version this build speaks.
pub const API_VERSION: u32 = 1;

/// The HTTP header carrying [`API_VERSION`] both ways.
pub const VERSION_HEADER: &str = "X-Vrouter-Api-Version";

/// The error a peer of another version gets (and logs).
pub fn version_mismatch(theirs: &str) -> String {
    format!(
        "agent API version {theirs} is not supported: this peer speaks version {API_VERSION} \
         (upgrade the agents and the controller together)"
    )
}

/// Every call of the agent API: method, path (`<x>` is a path parameter), request body and
/// reply types by name. `docs/shim.md` is checked against this list.
pub const CALLS: &[(&str, &str, &str, &str)] = &[
    ("POST", "/vrouter/agents", "RegisterAgent", "Registered"),
    ("DELETE", "/vrouter/agents/<host>", "-", "-"),
    ("GET", "/vrouter/agents", "-", "AgentList"),
    ("POST", "/vrouter/bindings", "Binding", "Bound"),
    ("DELETE", "/vrouter/bindings", "Binding", "Unbound"),
    ("POST", "/vrouter/routes", "Advertise", "Advertised"),
    ("DELETE", "/vrouter/routes", "Withdraw", "Withdrawn"),
    ("GET", "/vrouter/routes?vrf=V", "-", "RouteList"),
    ("GET", "/vrouter/interfaces/<vmi>", "-", "InterfaceConfig"),
    (
        "GET",
        "/vrouter/watch?host=H&since=REV&timeout=S",
        "-",
        "WatchReply",
    ),
    ("GET", "/vrouter/bgp/neighbors", "-", "BgpSummary"),
];

/// An error answer of the shim (any status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// The HTTP status.
    pub code: u16,
    /// What was wrong.
    pub message: String,
}

/// `POST /vrouter/agents`: an agent announces itself (and renews its lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterAgent {
    /// The host's name (no `/`).
    pub hostname: String,
    /// Underlay address other hosts tunnel to.
    pub fabric_ip: Ipv4Addr,
}

/// Reply to [`RegisterAgent`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    /// As registered.
    pub hostname: String,
    /// As registered.
    pub fabric_ip: Ipv4Addr,
    /// The shim's revision after the call.
    pub rev: u64,
}

/// One registered agent in [`AgentList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// Host name.
    pub hostname: String,
    /// Fabric IP.
    pub fabric_ip: Ipv4Addr,
    /// VMIs bound on it.
    #[serde(default)]
    pub bindings: BTreeSet<Uuid>,
}

/// `GET /vrouter/agents`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AgentList {
    /// Registered agents, by host name.
    pub agents: Vec<AgentInfo>,
}

/// `POST` / `DELETE /vrouter/bindings`: an interface appeared on / left a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The host.
    pub host: String,
    /// The VMI (CloudStack Nic) UUID.
    pub vmi_uuid: Uuid,
}

/// Reply to a bind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bound {
    /// The host.
    pub host: String,
    /// The VMI.
    pub vmi_uuid: Uuid,
    /// The shim's revision after the call.
    pub rev: u64,
}

/// Reply to an unbind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unbound {
    /// Whether the binding existed.
    pub removed: bool,
    /// The shim's revision after the call.
    pub rev: u64,
}

/// How packets reach a route's next hop when the route says (a gateway's route, learned over
/// BGP with its encapsulation community); routes of our own hosts leave it to the agents'
/// configured encapsulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteEncap {
    /// MPLS in UDP (RFC 7510).
    MplsOverUdp,
    /// MPLS in GRE (RFC 4023), what gateways expect when they name none.
    MplsOverGre,
}

/// Origins of routes learned from a BGP neighbour start with this (`bgp:<address>`); no agent
/// may register a hostname that does.
pub const GATEWAY_ORIGIN: &str = "bgp:";

/// A route an agent advertised (or the controller learned from a gateway), as the shim holds
/// and distributes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The advertising host.
    pub host: String,
    /// VRF name (network fq_name joined with `:`).
    pub vrf: String,
    /// Destination.
    pub prefix: Ipv4Prefix,
    /// The label the origin decapsulates to the interface (or table).
    pub label: Label,
    /// Tunnel endpoint: the origin's fabric IP unless the advertisement named one.
    pub nexthop: Ipv4Addr,
    /// The interface the route belongs to; withdrawn with it.
    #[serde(default)]
    pub vmi_uuid: Option<Uuid>,
    /// The encapsulation the next hop needs, when not the agents' own (gateway routes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encap: Option<RouteEncap>,
}

/// `POST /vrouter/routes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advertise {
    /// The advertising host.
    pub host: String,
    /// VRF name.
    pub vrf: String,
    /// Destination (host bits are cleared by the shim).
    pub prefix: Ipv4Prefix,
    /// Label.
    pub label: Label,
    /// Tunnel endpoint if not the host's fabric IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nexthop: Option<Ipv4Addr>,
    /// The interface behind it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmi_uuid: Option<Uuid>,
}

/// Reply to [`Advertise`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advertised {
    /// The route as stored.
    pub route: Route,
    /// The shim's revision after the call.
    pub rev: u64,
}

/// `DELETE /vrouter/routes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdraw {
    /// The advertising host.
    pub host: String,
    /// VRF name.
    pub vrf: String,
    /// Destination.
    pub prefix: Ipv4Prefix,
}

/// Reply to [`Withdraw`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdrawn {
    /// Whether the route existed.
    pub withdrawn: bool,
    /// The shim's revision after the call.
    pub rev: u64,
}

/// `GET /vrouter/routes`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RouteList {
    /// Routes, by VRF then host and prefix.
    pub routes: Vec<Route>,
}
