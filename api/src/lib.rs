// SPDX-License-Identifier: Apache-2.0
//! The typed contract between the controller shim, the agents and the devcloud.
//!
//! One message schema per boundary (as `vrouter_dataplane::ctl::proto` is for agent ↔
//! dataplane): the shim serialises these types, the agent and the devcloud deserialise the same
//! types, and nobody builds or parses agent-API JSON by hand. The JSON each message has on the
//! wire is pinned by the fixtures in `tests/fixtures/` (captured from the code before this crate
//! existed), and `docs/shim.md` ("Agent API") is checked against [`agent::CALLS`].
//!
//! * [`ids`], [`prefix`]: the value types that cross crate boundaries (UUID, MAC, IPv4 prefix,
//!   MPLS label), parsed strictly once, printed canonically.
//! * [`agent`]: the calls (register, bind/unbind, advertise/withdraw, listings) and the
//!   version handshake ([`API_VERSION`], [`VERSION_HEADER`]).
//! * [`interface`]: what an agent needs to program one interface (network, IPs, floating IPs,
//!   resolved policies, policy-connected networks).
//! * [`watch`]: the watch stream with revisions and its typed events.
//! * [`bgp`]: the BGP speaker's neighbour table (`vrctl bgp`).
//! * `client` (feature `client`): the blocking HTTP client the agent and the devcloud share.

pub mod agent;
pub mod bgp;
#[cfg(feature = "client")]
pub mod client;
pub mod ids;
pub mod interface;
pub mod prefix;
pub mod watch;

pub use agent::{API_VERSION, VERSION_HEADER};
pub use ids::{IdError, MacAddr, Uuid};
pub use prefix::{Ipv4Prefix, Label, PrefixError};
