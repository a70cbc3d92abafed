// SPDX-License-Identifier: Apache-2.0
//! The real `vnc_api` Python client drives the whole CloudStack lifecycle against the shim.

mod common;

use std::process::Command;

use common::{require_tool, Shim, TempDir};

#[test]
fn vnc_api_lifecycle() {
    require_tool("python3", &["--version"], "apt-get install python3");
    require_tool(
        "python3",
        &["-c", "from vnc_api import vnc_api"],
        "pip install contrail-api-client future six requests",
    );
    let dir = TempDir::new("vnc");
    let shim = Shim::start(&format!("sqlite:{}", dir.0.join("shim.db").display()), &[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vnc_lifecycle.py");
    let out = Command::new("timeout")
        .args(["120", "python3", script, "--port", &shim.port.to_string()])
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "vnc_lifecycle.py failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("OK 12 steps"),
        "unexpected output:\n{stdout}"
    );
}
