//! Fuzz targets for every parser of bytes that come from outside the process.
//!
//! Each target is a plain function `run(&[u8])` that parses its input the way the daemon does and
//! asserts invariants beyond "does not panic" (a decoded message re-encodes to itself, a dropped
//! packet leaves no frame behind, a rewritten header still verifies). The same functions serve
//! two harnesses:
//!
//! * `cargo afl` (feature `afl`, `src/bin/fuzz_*.rs`, run by `scripts/fuzz.sh`): coverage-guided
//!   search for new inputs, bounded in time;
//! * `cargo test` (`tests/corpus.rs`): replays every checked-in input of `fuzz/corpus/<target>/`
//!   through its target, deterministically and without AFL, so a crash once found stays fixed.
//!
//! See `docs/fuzzing.md` for how to run them and `docs/adr/0003-fuzzing-harness.md` for why AFL.

pub mod api;
pub mod bgp;
pub mod ctl;
pub mod dhcp;
pub mod pipeline;
pub mod wire;
pub mod xenstore;

/// A fuzz target: parses `data` and panics if an invariant does not hold.
pub type Target = fn(&[u8]);

/// Every target by name; the name is also its corpus directory (`fuzz/corpus/<name>/`) and, with
/// a `fuzz_` prefix, its AFL binary.
pub const TARGETS: &[(&str, Target)] = &[
    ("wire", wire::run),
    ("pipeline", pipeline::run),
    ("ctl", ctl::run),
    ("xenstore", xenstore::run),
    ("dhcp", dhcp::run),
    ("api", api::run),
    ("bgp", bgp::run),
];

/// Splits `data` into the chunk sizes a stream reader would see: the first byte (if any) gives
/// the chunk length (0 means all at once), so targets of incremental parsers also exercise
/// partial reads. Returns the chunk length and the stream.
pub fn chunking(data: &[u8]) -> (usize, &[u8]) {
    match data.split_first() {
        None => (usize::MAX, data),
        Some((&0, rest)) => (usize::MAX, rest),
        Some((&n, rest)) => (usize::from(n), rest),
    }
}
