//! Replays every checked-in input of `fuzz/corpus/<target>/` through its target, without AFL: the
//! seeds, and every crash a fuzz run ever found (kept there as a regression input once fixed).

use std::path::{Path, PathBuf};
use vrouter_fuzz::TARGETS;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = corpus_dir(target);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

fn replay(target: &str) {
    let (_, run) = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .expect("target listed in TARGETS");
    let files = inputs(target);
    assert!(!files.is_empty(), "no seed for {target}");
    for f in &files {
        let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{target}: {} fails", f.display());
    }
    eprintln!("{target}: {} inputs replayed", files.len());
}

#[test]
fn every_target_has_a_test_here() {
    let names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        ["wire", "pipeline", "ctl", "xenstore", "dhcp", "api", "bgp"],
        "add a replay test below for each new target"
    );
    for n in names {
        let bin = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/bin")
            .join(format!("fuzz_{n}.rs"));
        assert!(bin.is_file(), "{} missing", bin.display());
    }
}

#[test]
fn wire() {
    replay("wire");
}

#[test]
fn pipeline() {
    replay("pipeline");
}

#[test]
fn ctl() {
    replay("ctl");
}

#[test]
fn xenstore() {
    replay("xenstore");
}

#[test]
fn dhcp() {
    replay("dhcp");
}

#[test]
fn api() {
    replay("api");
}

/// An empty input and one byte of every value reach every target (the cheapest edge cases).
#[test]
fn tiny_inputs() {
    for (_, run) in TARGETS {
        run(&[]);
        for b in 0..=255u8 {
            run(&[b]);
        }
    }
}

#[test]
fn bgp() {
    replay("bgp");
}
