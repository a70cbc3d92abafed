// SPDX-License-Identifier: Apache-2.0
//! The command line as an operator meets it: `--help` and `--version` answer and exit 0, a
//! bad value is refused with exit 2 naming the flag, and a closed pipe on `--help` is quiet.

use std::process::{Command, Stdio};

fn shim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vrouter-shim"))
        .args(args)
        .output()
        .expect("run vrouter-shim")
}

#[test]
fn help_and_version_answer_with_exit_0() {
    let help = shim(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--listen",
        "--store",
        "--token",
        "--agent-ttl",
        "--view-tombstones",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}: {text}");
    }
    let version = shim(&["--version"]);
    assert_eq!(version.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("vrouter-shim {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_bad_value_exits_2_naming_the_flag() {
    for args in [
        &["--view-tombstones", "3"][..],
        &["--listen", "not-an-address"],
        &["--agent-ttl", "soon"],
        &["--no-such-flag"],
    ] {
        let out = shim(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(args[0]), "{args:?}: {err}");
    }
}

#[test]
fn help_into_a_closed_pipe_is_quiet() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vrouter-shim"))
        .arg("--help")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    assert_ne!(out.status.code(), Some(101), "panicked");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn shim_bench_help_and_version_answer_with_exit_0() {
    let bench = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_shim-bench"))
            .args(args)
            .output()
            .expect("run shim-bench")
    };
    let help = bench(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in ["--url", "--creates", "--seconds", "--threads"] {
        assert!(text.contains(flag), "--help lacks {flag}: {text}");
    }
    assert_eq!(bench(&["--version"]).status.code(), Some(0));
    let bad = bench(&["--threads", "0"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--threads"));
}
