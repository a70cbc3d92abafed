// SPDX-License-Identifier: Apache-2.0
//! `vrouter-xenstored`'s command line as an operator meets it: `--help` and `--version` answer
//! and exit 0, a closed pipe is quiet, a bad value exits 2 naming the flag, and the socket flags
//! take effect.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_vrouter-xenstored");

fn xsd(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run vrouter-xenstored")
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
    let help = xsd(&["--help"]);
    assert_eq!(help.status.code(), Some(0), "{}", stderr(&help));
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--socket",
        "--socket-mode",
        "--privileged-uid",
        "--unprivileged-domid",
        "-v",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}: {text}");
    }
    let version = xsd(&["--version"]);
    assert_eq!(version.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("vrouter-xenstored {}", env!("CARGO_PKG_VERSION"))
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
            .expect("run vrouter-xenstored");
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
        &["--socket-mode", "999"][..],
        &["--socket-mode", "rw"],
        &["--privileged-uid", "root"],
        &["--unprivileged-domid", "many"],
        &["--no-such-flag"],
    ] {
        let out = xsd(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(args[0]), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn socket_and_socket_mode_take_effect() {
    let dir = std::env::temp_dir().join(format!("p21-xsd-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let sock = dir.join("socket");
    let mut child = Command::new(BIN)
        .args(["--socket-mode", "0640", "--socket"])
        .arg(&sock)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn vrouter-xenstored");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mode = std::fs::metadata(&sock).map(|m| m.permissions().mode() & 0o7777);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(mode.expect("the socket exists"), 0o640);
}
