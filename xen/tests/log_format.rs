// SPDX-License-Identifier: Apache-2.0
//! The daemons' one log format (vrouter-log), seen on a real daemon's stderr: logfmt lines
//! (`ts=... level=info target=... msg="..."`), each prefixed with its syslog priority (`<6>`)
//! when stderr is the journal (`JOURNAL_STREAM` set, as systemd does).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// The first line `vrouter-xenstored` logs, with `JOURNAL_STREAM` set or not.
fn first_line(journal: bool) -> String {
    let dir = std::env::temp_dir().join(format!("p21-xsd-log-{}-{journal}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vrouter-xenstored"));
    cmd.arg("--socket")
        .arg(dir.join("socket"))
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .stderr(Stdio::piped());
    if journal {
        cmd.env("JOURNAL_STREAM", "8:12345");
    }
    let mut child = cmd.spawn().expect("spawn vrouter-xenstored");
    let mut line = String::new();
    if let Some(err) = child.stderr.take() {
        let _ = BufReader::new(err).read_line(&mut line);
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    line
}

#[test]
fn lines_are_logfmt_with_a_journald_priority_under_systemd() {
    let plain = first_line(false);
    assert!(plain.starts_with("ts="), "{plain}");
    assert!(plain.contains(" level=info target="), "{plain}");
    assert!(
        plain.contains(" msg=\"vrouter-xenstored listening on "),
        "{plain}"
    );
    let journal = first_line(true);
    assert!(journal.starts_with("<6>ts="), "{journal}");
}
