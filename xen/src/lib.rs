// SPDX-License-Identifier: Apache-2.0
//! Xen integration for the vRouter: how the agent learns which dom0 vif belongs to which
//! CloudStack Nic.
//!
//! Layers, from bytes up (after ocaml-xenstore's split of an I/O-free protocol core from its
//! transports):
//!
//! * [`wire`]: the xenstore message format and an incremental [`wire::Parser`]; no I/O.
//! * [`transport`]: the unix socket (`/var/run/xenstored/socket`, `$XENSTORED_PATH`) and
//!   `/dev/xen/xenbus`.
//! * [`client`]: a synchronous client (read, write, directory, rm, perms, watches, transactions
//!   with `EAGAIN` retry) that queues watch events arriving between requests and replies.
//! * [`store`] + [`server`]: the dev daemon's store and protocol engine; no I/O.
//! * [`daemon`]: the dev daemon's sockets and threads (`vrouter-xenstored`).
//! * [`binder`]: watches `/local/domain/0/backend/vif`, identifies each vif by our contract keys
//!   (or the MAC / instance-name fallbacks) and tells the agent to bind or unbind it.
//!
//! The key layout and the contract written by the hotplug hook (`scripts/vif-vrouter`) are in
//! `docs/xen.md`.

pub mod binder;
pub mod client;
pub mod daemon;
pub mod ids;
pub mod perms;
pub mod server;
pub mod store;
pub mod transport;
pub mod wire;

pub use client::{Client, Error, TxId, WatchEvent};
pub use ids::{MacAddr, Uuid};
