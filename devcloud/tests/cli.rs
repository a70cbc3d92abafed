// SPDX-License-Identifier: Apache-2.0
//! `vrouter-devcloud`'s command line as an operator meets it: `--help` and `--version` answer and
//! exit 0 (also for a subcommand), a closed pipe is quiet, a bad value exits 2 naming the flag,
//! and the flags `scripts/devcloud` appends are accepted after every subcommand.

use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_vrouter-devcloud");

fn devcloud(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run vrouter-devcloud")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Standard output that is a pipe whose reading end is already closed, so every write fails
/// with EPIPE (what `BIN --help | true` meets when `true` is quicker), deterministically.
fn closed_pipe() -> Stdio {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: `fds` is a live array of two ints for pipe(2) to fill.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    Stdio::from(write)
}

#[test]
fn help_and_version_answer_with_exit_0() {
    let help = devcloud(&["--help"]);
    assert_eq!(help.status.code(), Some(0), "{}", stderr(&help));
    let text = String::from_utf8_lossy(&help.stdout);
    for word in ["up", "status", "down", "--bin-dir", "--hook"] {
        assert!(text.contains(word), "--help lacks {word}: {text}");
    }
    let up = devcloud(&["up", "--help"]);
    assert_eq!(up.status.code(), Some(0), "{}", stderr(&up));
    let text = String::from_utf8_lossy(&up.stdout);
    for flag in ["--hosts", "--vms", "--install-deps", "--keep-on-failure"] {
        assert!(text.contains(flag), "up --help lacks {flag}: {text}");
    }
    let version = devcloud(&["--version"]);
    assert_eq!(version.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("vrouter-devcloud {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_into_a_closed_pipe_is_quiet() {
    for flag in ["--help", "--version"] {
        let out = Command::new(BIN)
            .arg(flag)
            .stdout(closed_pipe())
            .stderr(Stdio::piped())
            .output()
            .expect("run vrouter-devcloud");
        assert_ne!(out.status.code(), Some(101), "{flag}: {}", stderr(&out));
        assert!(
            !stderr(&out).contains("panicked"),
            "{flag}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn a_bad_value_exits_2_naming_the_flag() {
    for args in [
        &["up", "--hosts", "0"][..],
        &["up", "--vms", "four"],
        &["up", "--frobnicate"],
    ] {
        let out = devcloud(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(args[1]), "{args:?}: {}", stderr(&out));
    }
    let none = devcloud(&[]);
    assert_eq!(none.status.code(), Some(2));
}

#[test]
fn up_with_a_missing_bin_dir_exits_2_naming_it() {
    let out = devcloud(&["up", "--bin-dir", "/nonexistent/p21-bin"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--bin-dir /nonexistent/p21-bin"),
        "{}",
        stderr(&out)
    );
}
