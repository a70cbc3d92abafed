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

/// A 1500-byte inner packet without DF over a 1500-byte fabric, fragmented before encapsulation:
/// tshark must see two MPLSoUDP frames within the MTU whose inner IPv4 fragments it reassembles
/// into the original UDP datagram, every checksum good.
#[test]
fn tshark_reassembles_inner_fragments() {
    let bin = tshark();
    let mut h = Harness::new(Limits::default());
    h.program(ops());
    let payload: Vec<u8> = (0..1472).map(|i| (i % 253) as u8).collect();
    let mut big = udp_frame(
        MAC_A,
        MacAddr::VROUTER,
        IP_A,
        IP_REMOTE_UDP,
        64,
        40000,
        5001,
        &payload,
    );
    big[14 + 6] &= !0x40;
    set_ip_id(&mut big, 0x4242);
    assert!(matches!(
        h.run1(VM_A, &big),
        Verdict::Tx { vif: FABRIC, .. }
    ));
    let frames: Vec<Vec<u8>> = h.sent.iter().map(|(_, f)| f.clone()).collect();
    assert_eq!(frames.len(), 2);
    let dir = std::env::temp_dir().join(format!("vrouter-tshark-frag-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("frag.pcap");
    {
        let mut w = PcapWriter::new(std::fs::File::create(&path).expect("create pcap"))
            .expect("pcap header");
        for f in &frames {
            w.write_frame(f).expect("write frame");
        }
        w.flush().expect("flush");
    }
    let out = Command::new(bin)
        .args([
            "-o",
            "ip.check_checksum:TRUE",
            "-o",
            "udp.check_checksum:TRUE",
            "-r",
        ])
        .arg(&path)
        .args([
            "-T",
            "fields",
            "-E",
            "separator=;",
            "-e",
            "frame.len",
            "-e",
            "frame.protocols",
            "-e",
            "ip.flags.mf",
            "-e",
            "ip.frag_offset",
            "-e",
            "ip.checksum.status",
            "-e",
            "ip.reassembled.length",
            "-e",
            "udp.length",
            "-e",
            "udp.checksum.status",
            "-e",
            "_ws.expert",
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
    // Statuses: 1 = good, 3 = not present (the outer UDP checksum is 0).
    let (a, b) = (&lines[0], &lines[1]);
    assert_eq!(a[0], "1514", "fills the 1500-byte MTU: {text}");
    assert_eq!(a[1], "eth:ethertype:ip:udp:mpls:ip:data", "{text}");
    assert_eq!(
        (a[2], a[3], a[4]),
        ("0,1", "0,0", "1,1"),
        "inner MF, offset 0: {text}"
    );
    assert_eq!((a[6], a[7]), ("1480", "3"), "outer UDP: {text}");
    assert_eq!(
        b[1], "eth:ethertype:ip:udp:mpls:ip:udp:data",
        "reassembled: {text}"
    );
    assert_eq!(
        (b[2], b[3], b[4]),
        ("0,0", "0,181", "1,1"),
        "last, offset 1448: {text}"
    );
    assert_eq!(b[5], "1480", "reassembled inner length: {text}");
    assert_eq!(
        (b[6], b[7]),
        ("64,1480", "3,1"),
        "inner UDP checksum good: {text}"
    );
    assert!(a[8].is_empty() && b[8].is_empty(), "no expert info: {text}");
}
