//! The devcloud run as an end-to-end test: two compute hosts, four VMs (plus guest-c's and
//! guest-nat's), two NAT appliances, the controller and the gateway, all in namespaces; `up`
//! must print a passing report and `down` must leave nothing.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn devcloud() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouter-devcloud"))
}

/// Tears the devcloud down whatever happens to the test.
struct Down;

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(devcloud()).arg("down").status();
    }
}

fn dc_namespaces() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("dc-"))
        .map(str::to_string)
        .collect()
}

#[test]
fn devcloud_up_checks_pass_and_down_leaves_nothing() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(uid, 0, "the devcloud test builds namespaces: run as root");
    let bin_dir = devcloud().parent().expect("target dir").to_path_buf();
    for b in [
        "vrouter-shim",
        "vrouter-dp",
        "vrouter-agent",
        "vrouter-xenstored",
        "vrctl",
    ] {
        assert!(bin_dir.join(b).is_file(), "{b} not built in {}: run `cargo build --workspace --bins` (cargo test --workspace does)", bin_dir.display());
    }
    let hook = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../xen/scripts/vif-vrouter");
    let _down = Down;
    let started = Instant::now();
    let out = Command::new("timeout")
        .args([
            "300",
            devcloud().to_str().expect("utf-8 path"),
            "up",
            "--hosts",
            "2",
            "--vms",
            "4",
            "--bin-dir",
        ])
        .arg(&bin_dir)
        .arg("--hook")
        .arg(&hook)
        .output()
        .expect("run vrouter-devcloud up");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "devcloud up failed after {:?}:\n{stdout}\n{stderr}",
        started.elapsed()
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    for want in [
        "same network",
        "floating IP",
        "vRouter inet4 routing table",
        "policy acl-a-b permits ICMP",
        "`Flow Action Drop`",
        "(guest-c",
        "rolling restart of all 3 agents",
        "every restarted agent's reconcile: 0 adds/changes, 0 removals",
        "dumps identical before and after",
        // Source NAT through the NAT instance and its scale-out (issue 18).
        "source NAT: ping i-2-6-VM (guest-nat, no floating IP, host 1)",
        "source NAT: TCP i-2-6-VM -> 198.51.100.254:8080 completes",
        "scale-out: 100 TCP connections from 2 guest-nat VMs",
        "spread over 2 appliance(s), each translated by one",
        "scale-out failover: i-2-9-VM (host 2) stopped and unplugged",
        "sources only the appliances' public addresses",
        "isolation: no guest-nat /32 in the public VRF",
    ] {
        assert!(stdout.contains(want), "report lacks {want:?}:\n{stdout}");
    }
    let status = Command::new(devcloud())
        .arg("status")
        .output()
        .expect("status");
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("running") && !status.contains("DEAD"),
        "{status}"
    );
    // Every daemon's command line names its binary by absolute path (issue 24).
    let abs = bin_dir.canonicalize().expect("canonical bin dir");
    let agent = format!("{}/vrouter-agent ", abs.display());
    assert!(status.contains(&agent), "no {agent:?} in:\n{status}");
    assert!(!status.contains(" ./"), "a relative path in:\n{status}");
    let down = Command::new(devcloud()).arg("down").output().expect("down");
    assert!(down.status.success());
    let t = Instant::now();
    while !dc_namespaces().is_empty() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        dc_namespaces(),
        Vec::<String>::new(),
        "down left namespaces behind"
    );
}
