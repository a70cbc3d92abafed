// SPDX-License-Identifier: Apache-2.0
//! The identifiers that travel through xenstore as text: UUIDs (CloudStack Nic/VM/network ids)
//! and MAC addresses. They are the contract's own types (`vrouter_api::ids`), re-exported so the
//! binder and the agent share one definition and one strict parser.

pub use vrouter_api::ids::{IdError, MacAddr, Uuid};
