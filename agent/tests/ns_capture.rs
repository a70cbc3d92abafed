//! `vrctl capture` on real dataplanes (issue 21): two hosts, a VM on each, a ping across.
//!
//! * On host 0's fabric interface, `-w FILE` writes pcap that tshark decodes as the real
//!   encapsulated packet: outer addresses of the two hosts, MPLS over UDP (port 6635) with the
//!   label host 1 gave its VM, and the inner ICMP between the VMs, both directions.
//! * On the VM's interface the default output describes each frame (`rx` from the VM, `tx` to
//!   it).
//! * The agent's log lines about the interface carry `vif=`, `vm=` and `nic=` fields.
//! * A second capture while one runs is refused as busy; once the first `vrctl` is killed
//!   (-9) the dataplane has disarmed it, and a new capture starts.
//!
//! Needs root, `ip`, `ping`, `tshark`, `xenstore-write` and the daemons built (see
//! `ns_controller.rs`). Namespaces `vrt3-m21cap-<pid>-<role>`.

mod common;

use common::cloud::{cloud, ping_ok, vm_ns, xs_plug};
use common::hosts::Hosts;
use common::{stderr, stdout, vrctl, wait_for};
use std::process::{Command, Stdio};
use std::time::Duration;

const VM1: &str = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7b01";
const VM2: &str = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7b02";
const VMI1: &str = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4f01";
const VMI2: &str = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4f02";
const MAC1: &str = "02:21:00:00:00:01";
const MAC2: &str = "02:21:00:00:00:02";

/// tshark's fields of every frame in `pcap`, tab-separated.
fn tshark_fields(pcap: &std::path::Path, fields: &[&str]) -> Vec<String> {
    let mut cmd = Command::new("tshark");
    cmd.args(["-n", "-r"]).arg(pcap);
    // Port 6635 is MPLS over UDP (RFC 7510); older tshark needs telling.
    cmd.args(["-d", "udp.port==6635,mpls", "-T", "fields"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let o = cmd.output().expect("run tshark");
    assert!(o.status.success(), "tshark: {}", stderr(&o));
    stdout(&o).lines().map(str::to_string).collect()
}

#[test]
fn ns_capture_writes_pcap_tshark_decodes_and_a_killed_reader_disarms_it() {
    common::require(&["tshark"]);
    let Some(h) = Hosts::start("m21cap", 2) else {
        return;
    };
    let vm1 = vm_ns("m21cap", "vm1", &h.hosts[0].ns, "vif1.0", MAC1, "10.1.1.21");
    let _vm2 = vm_ns("m21cap", "vm2", &h.hosts[1].ns, "vif1.0", MAC2, "10.1.1.22");
    cloud(
        &h.api,
        &[
            (VM1, VMI1, "i-21-VM", MAC1, "10.1.1.21"),
            (VM2, VMI2, "i-22-VM", MAC2, "10.1.1.22"),
        ],
    );
    xs_plug(h.xs(0), 1, VM1, VMI1, MAC1);
    xs_plug(h.xs(1), 1, VM2, VMI2, MAC2);
    let label = wait_for(Duration::from_secs(20), || h.label_of(1, "vif1.0"));
    let label = label.unwrap_or_else(|| panic!("vm2 not programmed\n{}", h.logs()));
    // The agent's lines about an interface carry its vif, VM and Nic as fields (greppable by
    // CloudStack's UUIDs).
    let log = h.hosts[0].agent.log();
    let plugged = format!("vif=vif1.0 vm={VM1} nic={VMI1}");
    assert!(
        log.lines()
            .any(|l| l.contains("msg=\"xenstore: interface plugged\"") && l.contains(&plugged)),
        "no plugged line with {plugged}:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("msg=\"controller: binding announced\"")
                && l.contains(&format!("nic={VMI1}"))),
        "no binding line with nic={VMI1}:\n{log}"
    );
    assert!(
        ping_ok(&vm1, "10.1.1.22", Duration::from_secs(20)),
        "vm1 cannot reach vm2\n{}",
        h.logs()
    );

    // The fabric, as pcap: 4 frames (2 requests out, 2 replies in).
    let pcap = h.dir.path().join("fabric.pcap");
    let dp = &h.hosts[0].dp;
    let dp_s = dp.display().to_string();
    let pcap_s = pcap.display().to_string();
    let cap = Command::new(env!("CARGO_BIN_EXE_vrctl"))
        .args(["--socket", &dp_s, "capture", "--vif", "fab0", "-c", "4"])
        .args(["--seconds", "20", "-w", &pcap_s])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vrctl capture");
    std::thread::sleep(Duration::from_millis(300));
    vm1.exec("ping -c 2 -i 0.2 -W 2 10.1.1.22");
    let o = cap.wait_with_output().expect("vrctl capture ends");
    assert!(o.status.success(), "vrctl capture: {}", stderr(&o));
    assert!(
        stderr(&o).contains("4 frames captured on vif 0 (fab0), 0 lost"),
        "{}",
        stderr(&o)
    );
    let rows = tshark_fields(
        &pcap,
        &["ip.src", "ip.dst", "udp.dstport", "mpls.label", "icmp.type"],
    );
    assert_eq!(rows.len(), 4, "{rows:?}");
    // Outer then inner addresses (tshark lists both layers' values, comma-separated).
    let request = format!("10.0.0.1,10.1.1.21\t10.0.0.2,10.1.1.22\t6635\t{label}\t8");
    assert!(
        rows.iter().filter(|r| **r == request).count() == 2,
        "two echo requests to host 1 with label {label}: {rows:?}"
    );
    assert!(
        rows.iter()
            .filter(
                |r| r.starts_with("10.0.0.2,10.1.1.22\t10.0.0.1,10.1.1.21\t6635\t")
                    && r.ends_with("\t0")
            )
            .count()
            == 2,
        "two echo replies from host 1: {rows:?}"
    );

    // The VM's interface, described: what the VM sent is rx, what it got is tx.
    let vm_rx = |seconds: &str| {
        vrctl(
            dp,
            &[
                "capture",
                "--vif",
                "vif1.0",
                "-c",
                "2",
                "--dir",
                "rx",
                "--seconds",
                seconds,
            ],
        )
    };
    // Nothing is sent yet: the time limit ends it with what it saw.
    let o = vm_rx("1");
    assert!(o.status.success(), "{}", stderr(&o));
    let vm1_ping = std::thread::spawn({
        let ns = vm1.name.clone();
        move || {
            std::thread::sleep(Duration::from_millis(300));
            common::sh(&format!(
                "ip netns exec {ns} ping -c 3 -i 0.2 -W 2 10.1.1.22"
            ));
        }
    });
    let o = vm_rx("20");
    vm1_ping.join().expect("ping");
    let text = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        text.lines().filter(|l| l.ends_with(" rx 98 bytes")).count(),
        2,
        "{text}"
    );
    assert!(text.contains("10.1.1.21 -> 10.1.1.22"), "{text}");
    assert!(!text.contains(" tx "), "only what the VM sent: {text}");

    // One capture at a time, and a reader killed -9 leaves nothing armed. The first capture
    // is known to be armed once it has printed a frame.
    let mut first = Command::new(env!("CARGO_BIN_EXE_vrctl"))
        .args(["--socket", &dp_s, "capture", "--vif", "vif1.0"])
        .args(["--seconds", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("vrctl capture");
    let out = first.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    // The reader keeps the pipe open (a closed one ends a capture, as for tcpdump | head).
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(out)) {
            let _ = tx.send(line);
        }
    });
    let armed = wait_for(Duration::from_secs(10), || {
        vm1.exec("ping -c 1 -W 1 10.1.1.22");
        rx.try_recv().ok()
    });
    assert!(armed.is_some(), "the first capture printed nothing");
    let o = vrctl(dp, &["capture", "--vif", "fab0", "--seconds", "1"]);
    first.kill().expect("kill -9 the first capture");
    let _ = first.wait();
    assert!(
        stderr(&o).contains("a capture of vif") && stderr(&o).contains("already running"),
        "a second capture must be refused while one runs: {}",
        stderr(&o)
    );
    let o = vrctl(dp, &["capture", "--vif", "fab0", "--seconds", "0.5"]);
    assert!(
        o.status.success(),
        "the killed reader's capture must be disarmed: {}",
        stderr(&o)
    );
}
