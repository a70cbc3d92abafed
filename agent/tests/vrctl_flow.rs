//! `vrctl flow list` filters (`--vrf`, `--limit`, `--match`) and its header's counts, against
//! flows made by real traffic through the real pipeline.

mod common;

use common::*;
use std::path::Path;
use vrouter_dataplane::harness::fixture::*;
use vrouter_dataplane::harness::Harness;
use vrouter_dataplane::tables::Limits;
use vrouter_dataplane::wire::MacAddr;

/// VM B (vn1) sends UDP to VM C's port 53 and TCP to its port 22 (denied by policy): two flow
/// pairs, four entries; served on a control socket in `dir`.
fn two_pairs(dir: &Path) -> std::path::PathBuf {
    let mut h = Harness::new(Limits::default());
    h.program(ops());
    h.program(policy_ops(0));
    let frame = |udp: bool| {
        let b = etherparse::PacketBuilder::ethernet2(MAC_B.0, MacAddr::VROUTER.0).ipv4(
            IP_B.to_be_bytes(),
            IP_C.to_be_bytes(),
            64,
        );
        let mut v = Vec::new();
        if udp {
            b.udp(4000, 53).write(&mut v, b"q").expect("udp");
        } else {
            b.tcp(4001, 22, 1, 1000)
                .syn()
                .write(&mut v, &[])
                .expect("tcp");
        }
        v
    };
    let (udp, tcp) = (frame(true), frame(false));
    h.run(VM_B, &[&udp, &tcp]);
    let sock = dir.join("dp.sock");
    serve_harness(h, &sock);
    sock
}

fn count(v: &serde_json::Value) -> usize {
    v["flows"].as_array().map_or(0, Vec::len)
}

#[test]
fn header_counts_entries_created_like_active_and_deleted() {
    let dir = tempdir();
    let sock = two_pairs(dir.path());
    let v = vrctl_json(&sock, &["flow", "list"]);
    assert_eq!(v["active"], 4, "{v}");
    assert_eq!(v["created"], 4, "two pairs are four entries: {v}");
    assert_eq!(v["deleted"], 0, "{v}");
    let t = stdout(&vrctl(&sock, &["flow", "list"]));
    assert!(t.contains("Entries: Created 4 Deleted 0"), "{t}");
}

#[test]
fn match_keeps_the_pairs_of_an_address_and_port() {
    let dir = tempdir();
    let sock = two_pairs(dir.path());
    let ip_c = std::net::Ipv4Addr::from(IP_C).to_string();
    let v = vrctl_json(&sock, &["flow", "list", "--match", &format!("{ip_c}:53")]);
    assert_eq!(count(&v), 2, "the UDP pair, both directions: {v}");
    let flows = v["flows"].as_array().expect("flows");
    assert!(
        flows
            .iter()
            .any(|f| f["dport"] == 53 && f["dst"] == ip_c.as_str()),
        "{v}"
    );
    assert!(
        flows
            .iter()
            .any(|f| f["sport"] == 53 && f["src"] == ip_c.as_str()),
        "{v}"
    );
    assert_eq!(
        count(&vrctl_json(&sock, &["flow", "list", "--match", &ip_c])),
        4
    );
    assert_eq!(
        count(&vrctl_json(
            &sock,
            &["flow", "list", "--match", "192.0.2.99"]
        )),
        0
    );
    let bad = vrctl(&sock, &["flow", "list", "--match", "nowhere"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("--match"), "{}", stderr(&bad));
}

#[test]
fn limit_and_vrf_bound_the_listing() {
    let dir = tempdir();
    let sock = two_pairs(dir.path());
    assert_eq!(
        count(&vrctl_json(&sock, &["flow", "list", "--limit", "1"])),
        2
    );
    let all = vrctl_json(&sock, &["flow", "list"]);
    let vrf = all["flows"][0]["vrf"].to_string();
    assert_eq!(
        count(&vrctl_json(&sock, &["flow", "list", "--vrf", &vrf])),
        4
    );
    let unknown = vrctl(&sock, &["flow", "list", "--vrf", "no-such-vrf"]);
    assert_ne!(unknown.status.code(), Some(0));
}
