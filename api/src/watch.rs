// SPDX-License-Identifier: Apache-2.0
//! The watch stream: `GET /vrouter/watch?host=H&since=R` answers with every key of the host's
//! view whose revision is above `R` (see `docs/shim.md`, "Watch semantics").
//!
//! An event's value depends on its kind, so [`WatchEvent`] keeps the value as it came and
//! [`WatchEvent::change`] turns it into a typed [`Change`]: one bad value costs that key only
//! (the agent drops it and logs), never the whole reply.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agent::Route;
use crate::ids::Uuid;
use crate::interface::InterfaceConfig;

/// A watch answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchReply {
    /// Where to resume (`since` of the next watch).
    pub rev: u64,
    /// True when `events` is a full snapshot replacing everything the agent holds.
    #[serde(default)]
    pub reset: bool,
    /// Changes after `since`, in revision order.
    #[serde(default)]
    pub events: Vec<WatchEvent>,
}

/// The kind of a view key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// `iface/<vmi>`: an interface config.
    Interface,
    /// `route/<vrf>/<prefix>/<origin>`: another host's route.
    Route,
    /// A kind a newer shim added: skipped, not an error.
    #[serde(other)]
    Other,
}

/// Put or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// The key has this value now.
    Put,
    /// The key is gone (tombstone).
    Delete,
}

/// One changed key of the view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// Revision of the change.
    pub rev: u64,
    /// What the key holds.
    pub kind: EventKind,
    /// The view key.
    pub key: String,
    /// Put or delete.
    pub op: Op,
    /// The value (put), as JSON: decode with [`WatchEvent::change`].
    #[serde(default)]
    pub value: Option<Value>,
}

/// A decoded event.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// An interface's config, or `None` when it left the view.
    Interface {
        /// The VMI (from the key).
        vmi: Uuid,
        /// Its config (put) or nothing (delete).
        config: Option<Box<InterfaceConfig>>,
    },
    /// A remote route, or `None` when withdrawn.
    Route {
        /// The view key (`route/<vrf>/<prefix>/<origin>`).
        key: String,
        /// The route (put) or nothing (delete).
        route: Option<Route>,
    },
    /// An event of a kind this build does not know.
    Unknown {
        /// The view key.
        key: String,
    },
}

/// An event whose key or value does not parse as its kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?} {key}: unusable: {why}")]
pub struct BadEvent {
    /// Kind.
    pub kind: EventKind,
    /// Key.
    pub key: String,
    /// Why.
    pub why: String,
}

impl WatchEvent {
    /// A put event of `kind` at `key` with `value`, or a delete when `value` is `None`.
    pub fn new(rev: u64, key: &str, value: Option<Value>) -> Option<WatchEvent> {
        let kind = match key.split('/').next() {
            Some("iface") => EventKind::Interface,
            Some("route") => EventKind::Route,
            _ => return None,
        };
        Some(WatchEvent {
            rev,
            kind,
            key: key.to_string(),
            op: if value.is_some() { Op::Put } else { Op::Delete },
            value,
        })
    }

    /// The typed change; a key or put value that does not parse is an error for this key only.
    pub fn change(&self) -> Result<Change, BadEvent> {
        let bad = |why: &dyn std::fmt::Display| BadEvent {
            kind: self.kind,
            key: self.key.clone(),
            why: why.to_string(),
        };
        let value = self.value.as_ref().filter(|_| self.op == Op::Put);
        match self.kind {
            EventKind::Interface => Ok(Change::Interface {
                vmi: self
                    .key
                    .strip_prefix("iface/")
                    .unwrap_or(&self.key)
                    .parse()
                    .map_err(|e| bad(&e))?,
                config: value
                    .map(InterfaceConfig::deserialize)
                    .transpose()
                    .map_err(|e| bad(&e))?
                    .map(Box::new),
            }),
            EventKind::Route => Ok(Change::Route {
                key: self.key.clone(),
                route: value
                    .map(Route::deserialize)
                    .transpose()
                    .map_err(|e| bad(&e))?,
            }),
            EventKind::Other => Ok(Change::Unknown {
                key: self.key.clone(),
            }),
        }
    }
}

/// The view key of an interface.
pub fn interface_key(vmi: &Uuid) -> String {
    format!("iface/{vmi}")
}
