//! The bench tools' command lines as an operator meets them: `--help` and `--version` answer
//! with exit 0, a bad flag or value exits 2 naming it.

use std::process::Command;

const TOOLS: [(&str, &str); 2] = [
    (env!("CARGO_BIN_EXE_pipeline-bench"), "pipeline-bench"),
    (env!("CARGO_BIN_EXE_mem-probe"), "mem-probe"),
];

#[test]
fn help_and_version_exit_0_and_bad_flags_exit_2() {
    for (bin, name) in TOOLS {
        let help = Command::new(bin).arg("--help").output().expect("run");
        assert_eq!(help.status.code(), Some(0), "{name} --help");
        assert!(
            String::from_utf8_lossy(&help.stdout).contains("--json"),
            "{name}"
        );
        let v = Command::new(bin).arg("--version").output().expect("run");
        assert_eq!(v.status.code(), Some(0), "{name} --version");
        assert_eq!(
            String::from_utf8_lossy(&v.stdout).trim(),
            format!("{name} {}", env!("CARGO_PKG_VERSION"))
        );
        let bad = Command::new(bin).arg("--bogus").output().expect("run");
        assert_eq!(bad.status.code(), Some(2), "{name} --bogus");
        assert!(
            String::from_utf8_lossy(&bad.stderr).contains("--bogus"),
            "{name}"
        );
    }
    let bad = Command::new(TOOLS[0].0)
        .args(["--case", "nope"])
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown case \"nope\""));
}
