//! The vRouter agent: turns interface configuration into dataplane state over the control socket,
//! and the library behind `vrctl`.
//!
//! The cores are I/O-free and tested without processes: [`config`] parses and validates the
//! declarative config, [`compile`] turns it into the tables the dataplane must hold (with ids from
//! [`alloc`]), [`reconcile`] diffs that against a dataplane dump and emits only the needed
//! operations, [`show`] renders dataplane answers the way the real vRouter utilities do and
//! [`metrics`] renders Prometheus text. [`daemon`] wires them to the socket, signals and clock.

pub mod alloc;
pub mod capture;
pub mod compile;
pub mod config;
pub mod controller;
pub mod daemon;
pub mod dump;
pub mod linklocal;
pub mod metrics;
pub mod pkt0;
pub mod reconcile;
pub mod services;
pub mod show;
pub mod source;
pub mod testkit;
pub mod trace;
pub mod vip;
pub mod xenbind;
