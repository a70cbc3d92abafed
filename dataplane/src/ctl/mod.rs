//! The control channel between the dataplane and its clients (`vrouter-agent`, `vrctl`): typed,
//! versioned messages (the protocol core here is I/O-free), the request handler that applies
//! them to the tables, and a small blocking client.

pub mod client;
pub mod handler;
pub mod proto;
pub mod server;

pub use client::{CtlClient, CtlError};
pub use handler::{handle, DaemonInfo};
pub use proto::{Decoder, FrameError, Request, Response, PROTO_VERSION};
pub use server::{CtlServer, CtlState};
