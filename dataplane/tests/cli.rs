// SPDX-License-Identifier: Apache-2.0
//! `vrouter-dp`'s command line as an operator meets it: `--help` and `--version` answer and exit
//! 0, a closed pipe is quiet, a bad flag exits 2 naming it, and `--check-config` tells a usable
//! settings file (exit 0) from one with a bad or contradictory setting (non-zero, naming it).

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn dp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vrouter-dp"))
        .args(args)
        .output()
        .expect("run vrouter-dp")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A settings file with `text`, removed when dropped.
struct ConfFile(tempfile::NamedTempFile);

impl ConfFile {
    fn new(text: &str) -> Self {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(text.as_bytes()).expect("write config");
        Self(f)
    }
    fn path(&self) -> &str {
        self.0.path().to_str().expect("utf-8 temp path")
    }
}

#[test]
fn help_and_version_answer_with_exit_0() {
    let help = dp(&["--help"]);
    assert_eq!(help.status.code(), Some(0), "{}", stderr(&help));
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--config",
        "--check-config",
        "--fabric-ip",
        "--ctl-socket",
        "--lcores",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}: {text}");
    }
    let version = dp(&["--version"]);
    assert_eq!(version.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("vrouter-dp {}", env!("CARGO_PKG_VERSION"))
    );
}

/// Standard output that is a pipe whose reading end is already closed, so every write fails
/// with EPIPE (what `vrouter-dp --help | true` meets when `true` is quicker), deterministically.
fn closed_pipe() -> Stdio {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: `fds` is a live array of two ints for pipe(2) to fill.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (read, write) = unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    drop(read);
    Stdio::from(write)
}

#[test]
fn help_into_a_closed_pipe_is_quiet() {
    for flag in ["--help", "--version"] {
        let out = Command::new(env!("CARGO_BIN_EXE_vrouter-dp"))
            .arg(flag)
            .stdout(closed_pipe())
            .stderr(Stdio::piped())
            .output()
            .expect("run vrouter-dp");
        assert_ne!(out.status.code(), Some(101), "{flag}: {}", stderr(&out));
        assert!(
            !stderr(&out).contains("panicked"),
            "{flag}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn an_unknown_flag_exits_2_naming_it() {
    let out = dp(&["--no-such-flag", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--no-such-flag"), "{}", stderr(&out));
}

#[test]
fn check_config_accepts_a_usable_file_and_exits_0() {
    let f = ConfFile::new(
        "# a dom0\nfabric = eth1\nfabric_ip = 192.0.2.10\nlcores = 0\nport_kind = af_xdp\n",
    );
    let out = dp(&["--config", f.path(), "--check-config"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("configuration OK"), "{text}");
    assert!(text.contains("eth1 (192.0.2.10)"), "{text}");
}

#[test]
fn check_config_names_the_bad_setting_and_fails() {
    for (text, flags, key) in [
        ("lcores = zero\n", &[][..], "lcores"),
        ("fabric = eth1\n", &[], "fabric_ip"),
        ("colour = blue\n", &[], "colour"),
        (
            "fabric_ip = 192.0.2.10\n",
            &["--pool-size", "lots"],
            "pool_size",
        ),
        ("lcores = 0,0\n", &[], "lcores"),
        ("log_level = loud\n", &[], "log_level"),
    ] {
        let f = ConfFile::new(text);
        let mut args = vec!["--config", f.path(), "--check-config"];
        args.extend(flags);
        let out = dp(&args);
        assert_ne!(out.status.code(), Some(0), "{text} {flags:?} accepted");
        assert!(stderr(&out).contains(key), "{text}: {}", stderr(&out));
    }
}

#[test]
fn check_config_of_a_missing_file_names_the_file() {
    let out = dp(&["--config", "/nonexistent/p21/dp.conf", "--check-config"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("/nonexistent/p21/dp.conf"),
        "{}",
        stderr(&out)
    );
}
