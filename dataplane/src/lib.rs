//! The vRouter dataplane: wire-format views, packet buffers and batches, the forwarding tables,
//! the batch pipeline that turns received packets into packets to send, and the ports that move
//! them. See `docs/dataplane.md` for the design as built.

pub mod batch;
pub mod buf;
pub mod capture;
pub mod cli;
pub mod config;
pub mod ctl;
pub mod drop;
pub mod engine;
pub mod gso;
pub mod harness;
pub mod pipeline;
pub mod port;
pub mod stats;
pub mod tables;
pub mod trap;
pub mod wire;

pub use batch::{Batch, Next, Pkt, PktMeta, BATCH_SIZE};
pub use buf::{BufPool, PktBuf};
pub use drop::DropReason;
pub use pipeline::Pipeline;
pub use stats::StatsRegistry;
pub use tables::{new_tables, Tables, TablesReader, TablesWriter};
