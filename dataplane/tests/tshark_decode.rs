//! Our encapsulation, written to a pcap, decoded by tshark: a decoder we did not write must see
//! the label, bottom-of-stack, TTL and inner addresses we meant.

mod common;

use common::*;
use std::process::Command;
use vrouter_dataplane::harness::fixture::*;
use vrouter_dataplane::harness::{Harness, Verdict};
use vrouter_dataplane::port::pcap::PcapWriter;
use vrouter_dataplane::tables::Limits;
use vrouter_dataplane::wire::MacAddr;

fn tshark() -> &'static str {
    let ok = Command::new("tshark")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "tshark is required: run `apt-get install -y tshark` (scripts/install-deps.sh does)"
    );
    "tshark"
}

#[test]
fn tshark_decodes_mplsoudp_and_mplsogre_encapsulation() {
    let bin = tshark();
    let mut h = Harness::new(Limits::default());
    h.program(ops());
    let udp = ping_frame(MAC_A, MacAddr::VROUTER, IP_A, IP_REMOTE_UDP, 64, 1);
    let gre = ping_frame(MAC_A, MacAddr::VROUTER, IP_A, IP_REMOTE_GRE, 30, 2);
    let mut frames = Vec::new();
    for f in [&udp, &gre] {
        match h.run1(VM_A, f) {
            Verdict::Tx { vif: FABRIC, frame } => frames.push(frame),
            other => panic!("not encapsulated: {other:?}"),
        }
    }
    let dir = std::env::temp_dir().join(format!("vrouter-tshark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("encap.pcap");
    {
        let mut w = PcapWriter::new(std::fs::File::create(&path).expect("create pcap"))
            .expect("pcap header");
        for f in &frames {
            w.write_frame(f).expect("write frame");
        }
        w.flush().expect("flush");
    }
    let out = Command::new(bin)
        .args(["-r"])
        .arg(&path)
        .args([
            "-T",
            "fields",
            "-E",
            "separator=;",
            "-e",
            "frame.protocols",
            "-e",
            "udp.dstport",
            "-e",
            "gre.proto",
            "-e",
            "mpls.label",
            "-e",
            "mpls.bottom",
            "-e",
            "mpls.ttl",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "ip.ttl",
            "-e",
            "icmp.type",
        ])
        .output()
        .expect("run tshark");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(';').collect()).collect();
    assert_eq!(lines.len(), 2, "two frames decoded: {text}");

    let u = &lines[0];
    assert_eq!(u[0], "eth:ethertype:ip:udp:mpls:ip:icmp:data", "{text}");
    assert_eq!(u[1], "6635");
    assert_eq!(u[3], LABEL_REMOTE_UDP.to_string());
    assert_eq!(u[4], "1", "bottom of stack");
    assert_eq!(u[5], "63", "label TTL = decremented inner TTL");
    assert_eq!(u[6], format!("{},{}", dotted(HOST_IP), dotted(IP_A)));
    assert_eq!(
        u[7],
        format!("{},{}", dotted(REMOTE_UDP), dotted(IP_REMOTE_UDP))
    );
    assert_eq!(u[8], "64,63", "outer TTL 64, inner decremented");
    assert_eq!(u[9], "8");

    let g = &lines[1];
    assert_eq!(g[0], "eth:ethertype:ip:gre:mpls:ip:icmp:data", "{text}");
    assert_eq!(g[2], "0x8847");
    assert_eq!(g[3], LABEL_REMOTE_GRE.to_string());
    assert_eq!(g[4], "1");
    assert_eq!(g[5], "29");
    assert_eq!(g[6], format!("{},{}", dotted(HOST_IP), dotted(IP_A)));
    assert_eq!(
        g[7],
        format!("{},{}", dotted(REMOTE_GRE), dotted(IP_REMOTE_GRE))
    );
}
