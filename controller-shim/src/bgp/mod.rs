// SPDX-License-Identifier: Apache-2.0
//! The shim's BGP speaker: the control node's role towards gateway routers (RFC 4364 L3VPN).
//!
//! * [`types`]: route distinguishers, route targets, encapsulations and VPN routes.
//! * [`codec`]: messages on the wire (framing, composing, RFC 7606 parsing).
//! * [`session`]: one peering's state machine, free of I/O: bytes and time in, bytes and
//!   events out.
//! * [`plan`]: our AS, the neighbours and the exported routes, read from the config objects
//!   and the agents' routes.
//! * [`speaker`]: the sockets: listener, one task per neighbour, the neighbour table.

pub mod codec;
pub mod plan;
pub mod session;
pub mod speaker;
pub mod types;
