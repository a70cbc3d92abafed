// SPDX-License-Identifier: Apache-2.0
//! vrouter-shim: the Contrail VNC REST API that CloudStack's Contrail plugin calls, a durable
//! store behind it, and route distribution to the vrouter agents.
//!
//! Layers, from the wire inwards:
//! * [`server`]: HTTP/1.1 (hyper), request parsing, auth, persistence and the agents' long-poll.
//! * [`core`] and [`agents`]: the whole state and every operation on it, free of I/O: time,
//!   uuids and the base URL come in as arguments, writes go out as a [`store::Batch`].
//! * [`store`]: the durable key/value copy (SQLite by default, etcd for several instances).
//! * [`schema`] and [`util`]: the VNC schema slice, and subnet/MAC/uuid helpers.
//!
//! The wire contract is `shared/reference/contrail-api.md`; the agent API is in `docs/shim.md`.
#![warn(missing_docs)]

pub mod agents;
pub mod core;
pub mod policy;
pub mod schema;
pub mod server;
pub mod store;
pub mod util;
