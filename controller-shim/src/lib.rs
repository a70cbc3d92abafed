// SPDX-License-Identifier: Apache-2.0
//! vrouter-shim: the Contrail VNC REST API that CloudStack's Contrail plugin calls, a durable
//! store behind it, and route distribution to the vrouter agents.
//!
//! Layers, from the wire inwards:
//! * [`server`]: HTTP/1.1 (hyper), request parsing, auth, persistence and the agents' long-poll.
//! * [`contract`]: the agent API's request parsing and version handshake (typed by
//!   `vrouter-api`), free of HTTP.
//! * [`core`]: the whole state and every operation on it, free of I/O: time, uuids and the base
//!   URL come in as arguments, writes go out as a [`store::Batch`]. It owns the [`graph`] of
//!   config objects and the [`agents`] state, which reads the graph and writes through the
//!   [`store::Journal`] (it never reaches into the core); [`interface`] and [`policy`] build
//!   what an agent programs from the objects.
//! * [`store`]: the durable key/value copy (SQLite by default, etcd for several instances).
//! * [`schema`], [`error`] and [`util`]: the VNC schema slice, the request error, and
//!   address/MAC/uuid helpers; [`limits`]: what a write may not store (names, MACs, subnets).
//!
//! The wire contract is `shared/reference/contrail-api.md`; the agent API is in `docs/shim.md`.
#![warn(missing_docs)]

pub mod agents;
pub mod bgp;
pub mod contract;
pub mod core;
pub mod error;
pub mod graph;
pub mod interface;
pub mod limits;
pub mod policy;
pub mod schema;
pub mod server;
pub mod service;
pub mod store;
pub mod util;
