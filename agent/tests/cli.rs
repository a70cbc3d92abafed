// SPDX-License-Identifier: Apache-2.0
//! `vrouter-agent`, `vrctl` and `vrouter-status` command lines as an operator meets them: `--help` and `--version`
//! answer and exit 0, a closed pipe is quiet (for vrctl's listings too), and `vrouter-agent --check-config` tells a usable
//! config (exit 0) from an invalid file (exit 1, naming the field) or bad flags (exit 2).

use std::io::Write;
use std::process::{Command, Output, Stdio};

const AGENT: &str = env!("CARGO_BIN_EXE_vrouter-agent");
const VRCTL: &str = env!("CARGO_BIN_EXE_vrctl");
const STATUS: &str = env!("CARGO_BIN_EXE_vrouter-status");

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .output()
        .expect("run the binary")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(text.as_bytes()).expect("write config");
    f
}

fn path(f: &tempfile::NamedTempFile) -> &str {
    f.path().to_str().expect("utf-8 temp path")
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
    for (bin, name, flag) in [
        (AGENT, "vrouter-agent", "--check-config"),
        (AGENT, "vrouter-agent", "--dp-socket"),
        (VRCTL, "vrctl", "--socket"),
        (STATUS, "vrouter-status", "--shim"),
    ] {
        let help = run(bin, &["--help"]);
        assert_eq!(help.status.code(), Some(0), "{name}: {}", stderr(&help));
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(text.contains(flag), "{name} --help lacks {flag}: {text}");
        let version = run(bin, &["--version"]);
        assert_eq!(version.status.code(), Some(0), "{name}");
        assert_eq!(
            String::from_utf8_lossy(&version.stdout).trim(),
            format!("{name} {}", env!("CARGO_PKG_VERSION"))
        );
    }
}

#[test]
fn help_into_a_closed_pipe_is_quiet() {
    for bin in [AGENT, VRCTL, STATUS] {
        for flag in ["--help", "--version"] {
            let out = Command::new(bin)
                .arg(flag)
                .stdout(closed_pipe())
                .stderr(Stdio::piped())
                .output()
                .expect("run the binary");
            assert_ne!(
                out.status.code(),
                Some(101),
                "{bin} {flag}: {}",
                stderr(&out)
            );
            assert!(
                !stderr(&out).contains("panicked"),
                "{bin} {flag}: {}",
                stderr(&out)
            );
        }
    }
}

#[test]
fn vrctl_listings_into_a_closed_pipe_end_quietly_with_status_0() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sock = dir.path().join("dp.sock");
    let _dp = vrouter_agent::testkit::TestDataplane::start(&sock, 0xc000_020a).expect("dataplane");
    let sock = sock.to_str().expect("utf-8 path");
    for args in [&["vif", "list"][..], &["--json", "vrf", "list"], &["drops"]] {
        let out = Command::new(VRCTL)
            .args(["--socket", sock])
            .args(args)
            .stdout(closed_pipe())
            .stderr(Stdio::piped())
            .output()
            .expect("run vrctl");
        assert_eq!(
            out.status.code(),
            Some(0),
            "vrctl {args:?}: {}",
            stderr(&out)
        );
        assert_eq!(stderr(&out), "", "vrctl {args:?}");
    }
}

#[test]
fn check_config_accepts_a_usable_file_and_exits_0() {
    let f = config_file("[underlay]\nfabric_ip = \"192.0.2.10\"\n");
    let out = run(AGENT, &["--config", path(&f), "--check-config"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("configuration OK"), "{text}");
    assert!(text.contains("fabric IP 192.0.2.10"), "{text}");
}

#[test]
fn check_config_names_the_bad_field_and_exits_1() {
    for (text, field) in [
        ("[underlay]\nfabric_ip = \"192.0.2.x\"\n", "fabric_ip"),
        ("[underlay\n", "line 1"),
    ] {
        let f = config_file(text);
        let out = run(AGENT, &["--config", path(&f), "--check-config"]);
        assert_eq!(out.status.code(), Some(1), "{text}: {}", stderr(&out));
        assert!(stderr(&out).contains(field), "{text}: {}", stderr(&out));
        assert!(stderr(&out).contains(path(&f)), "{text}: {}", stderr(&out));
    }
}

#[test]
fn check_config_refuses_bad_flags_with_exit_2() {
    let f = config_file("");
    for (args, named) in [
        (&["--encap", "vxlan"][..], "--encap"),
        (&["--mtu", "40"], "--mtu"),
        (&["--controller", "ftp://shim"], "--controller"),
    ] {
        let mut all = vec!["--config", path(&f), "--check-config"];
        all.extend(args);
        let out = run(AGENT, &all);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(named), "{args:?}: {}", stderr(&out));
    }
    let none = run(AGENT, &["--check-config"]);
    assert_eq!(none.status.code(), Some(2), "{}", stderr(&none));
    assert!(stderr(&none).contains("--config FILE or --controller URL"));
}
