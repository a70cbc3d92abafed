//! `vrctl` against an in-process dataplane: text layouts, `--json`, and the error paths (no
//! daemon, unknown VRF, permission): one line on stderr, non-zero exit, never a panic.

mod common;

use common::*;
use vrouter_agent::testkit::TestDataplane;

fn one_line_error(o: &std::process::Output) -> String {
    assert!(!o.status.success(), "expected failure, got {o:?}");
    let e = stderr(o);
    assert_eq!(e.lines().count(), 1, "one line: {e:?}");
    assert!(e.starts_with("vrctl: "), "{e:?}");
    assert!(!e.contains("panicked"), "{e:?}");
    e
}

#[test]
fn no_daemon_is_one_line_and_nonzero() {
    let dir = tempdir();
    let sock = dir.path().join("dp.sock");
    for cmd in [
        &["vif", "list"][..],
        &["--json", "route", "dump", "1"],
        &["drops"],
        &["info"],
    ] {
        let o = vrctl(&sock, cmd);
        let e = one_line_error(&o);
        assert!(e.contains("dataplane not running"), "{e}");
        assert_eq!(o.status.code(), Some(1));
    }
}

#[test]
fn unknown_vrf_vif_and_nexthop_are_clear() {
    let dir = tempdir();
    let sock = dir.path().join("dp.sock");
    let _dp = TestDataplane::start(&sock, FABRIC_IP.into()).expect("dataplane");
    let e = one_line_error(&vrctl(&sock, &["route", "dump", "nope"]));
    assert_eq!(
        e.trim(),
        "vrctl: vrf \"nope\" does not exist (see `vrctl vrf list`)"
    );
    let e = one_line_error(&vrctl(&sock, &["route", "dump", "77"]));
    assert!(e.contains("vrf 77 does not exist"), "{e}");
    let e = one_line_error(&vrctl(&sock, &["vif", "get", "vif9.9"]));
    assert!(e.contains("interface \"vif9.9\" does not exist"), "{e}");
    let e = one_line_error(&vrctl(&sock, &["nh", "get", "4242"]));
    assert!(e.contains("nexthop 4242 does not exist"), "{e}");
    let e = one_line_error(&vrctl(&sock, &["route", "dump", "0", "--prefix", "1.2.3"]));
    assert!(e.contains("expected a.b.c.d"), "{e}");
}

#[test]
fn permission_problem_is_clear() {
    let dir = tempdir();
    let sock = dir.path().join("dp.sock");
    let _dp = TestDataplane::start(&sock, FABRIC_IP.into()).expect("dataplane");
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped: needs root to run vrctl as another user");
        return;
    }
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_vrctl"))
        .arg("--socket")
        .arg(&sock)
        .args(["vif", "list"])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run vrctl as nobody");
    let e = one_line_error(&o);
    assert!(e.contains("permission denied"), "{e}");
}

use std::os::unix::process::CommandExt as _;

#[test]
fn text_layouts_follow_the_vrouter_utilities() {
    let dir = tempdir();
    let sock = dir.path().join("dp.sock");
    let _dp = TestDataplane::start(&sock, FABRIC_IP.into()).expect("dataplane");
    let o = vrctl(&sock, &["vif", "list"]);
    assert!(o.status.success());
    let t = stdout(&o);
    assert!(t.starts_with("Vrouter Interface Table\n"), "{t}");
    assert!(t.contains("vif0/0      OS: eth1\n            Type:Physical HWaddr:52:54:00:aa:bb:01 IPaddr:10.0.0.11\n"), "{t}");
    let t = stdout(&vrctl(&sock, &["mpls", "dump"]));
    assert_eq!(
        t,
        "MPLS Input Label Map\n\n   Label    NextHop\n-------------------\n"
    );
    let t = stdout(&vrctl(&sock, &["nh", "list"]));
    assert!(t.starts_with("Id:0          Type:Drop           Fmly: AF_INET  Rid:0  Ref_cnt:0          Vrf:0\n              Flags:Valid, \n"), "{t:?}");
    let t = stdout(&vrctl(&sock, &["route", "dump", "fabric"]));
    assert!(t.contains("vRouter inet4 routing table 0/0/unicast\nDestination           PPL        Flags        Label"), "{t}");
    let t = stdout(&vrctl(&sock, &["drops"]));
    assert!(
        t.starts_with("Invalid IF                    0\nTrap No IF                    0\n"),
        "{t}"
    );
    let t = stdout(&vrctl(&sock, &["stats", "vrf"]));
    assert!(
        t.starts_with("Vrf: 0 (fabric)\nDiscards 0, Receives 0, Vrf Translates 0\n"),
        "{t}"
    );
    let t = stdout(&vrctl(&sock, &["info"]));
    assert!(
        t.contains("Fabric IP: 10.0.0.11  Fabric: vif0/0  Host: vif0/1  Agent: vif0/2"),
        "{t}"
    );
    // --json anywhere on the line.
    let a = vrctl_json(&sock, &["vif", "get", "vhost0"]);
    let o = vrctl(&sock, &["vif", "get", "1", "--json"]);
    let b: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(a, b);
    assert_eq!(a["type"], "Host");
}

#[test]
fn flow_list_shows_both_directions_actions_and_counters() {
    use vrouter_dataplane::harness::fixture::*;
    use vrouter_dataplane::harness::Harness;
    use vrouter_dataplane::tables::Limits;
    use vrouter_dataplane::wire::MacAddr;

    // Real traffic through the real pipeline: VM B (vn1) sends UDP and TCP to VM C (vn2); the
    // policy passes UDP and denies TCP.
    let mut h = Harness::new(Limits::default());
    h.program(ops());
    h.program(policy_ops(0));
    let frame = |proto: &str| {
        let b = etherparse::PacketBuilder::ethernet2(MAC_B.0, MacAddr::VROUTER.0).ipv4(
            IP_B.to_be_bytes(),
            IP_C.to_be_bytes(),
            64,
        );
        let mut v = Vec::new();
        match proto {
            "udp" => b.udp(4000, 53).write(&mut v, b"q").expect("udp"),
            _ => b
                .tcp(4001, 22, 1, 1000)
                .syn()
                .write(&mut v, &[])
                .expect("tcp"),
        }
        v
    };
    let (udp, tcp) = (frame("udp"), frame("tcp"));
    h.run(VM_B, &[&udp, &udp, &tcp]);

    let dir = tempdir();
    let sock = dir.path().join("dp.sock");
    serve_harness(h, &sock);

    let v = vrctl_json(&sock, &["flow", "list"]);
    let flows = v["flows"].as_array().expect("flows array");
    assert_eq!(flows.len(), 4, "two pairs, both directions: {v}");
    let find = |sport: u64, dst: &str| {
        flows
            .iter()
            .find(|f| f["sport"] == sport && f["dst"] == dst)
            .unwrap_or_else(|| panic!("no flow {sport} -> {dst}: {v}"))
    };
    let fwd = find(4000, "10.2.2.3");
    assert_eq!(fwd["action"], "F");
    assert_eq!(fwd["packets"], 2);
    assert_eq!(fwd["forward"], true);
    let rev = find(53, "10.1.1.4");
    assert_eq!(rev["action"], "F");
    assert_eq!(rev["index"], fwd["rindex"]);
    assert_eq!(find(4001, "10.2.2.3")["action"], "D(Policy)");

    let t = stdout(&vrctl(&sock, &["flow", "list"]));
    assert!(t.starts_with("Flow table(size "), "{t}");
    assert!(
        t.contains("10.1.1.4:4000") && t.contains("Action:D(Policy)"),
        "{t}"
    );
}

#[test]
fn trace_shows_the_tunnel_and_label_a_packet_would_leave_with_and_changes_nothing() {
    use vrouter_dataplane::harness::fixture::*;
    use vrouter_dataplane::harness::Harness;
    use vrouter_dataplane::tables::Limits;

    let mut h = Harness::new(Limits::default());
    h.program(ops());
    h.program(policy_ops(0));
    let dir = tempdir();
    let sock = dir.path().join("dp.sock");
    serve_harness(h, &sock);
    let drops_before = stdout(&vrctl(&sock, &["drops", "--nonzero"]));

    // VM A (vif1.0) pings the VM behind the MPLSoUDP host: out on the fabric, label 25.
    let o = vrctl(&sock, &["trace", "vif1.0", "--dst", "10.1.1.5"]);
    assert!(o.status.success(), "{o:?}");
    let t = stdout(&o);
    assert!(t.starts_with("packet in on vif 3 (vif1.0, VRF 1 "), "{t}");
    assert!(t.contains("sent on vif 0 (eth1):\n"), "{t}");
    assert!(
        t.contains("decisions:\n  vrf 1 (default-domain:demo:vn1)\n  flow F\n  route 10.1.1.5/32\n  nexthop 20 (MPLSoUDP 192.168.100.2)\n  label 25\n"),
        "{t}"
    );
    assert!(
        t.contains("  ipv4 192.168.100.1 -> 192.168.100.2 proto 17"),
        "{t}"
    );
    assert!(t.contains("  mpls label 25 (bottom)\n"), "{t}");
    assert!(
        t.contains("  inner: ipv4 10.1.1.3 -> 10.1.1.5 proto 1 ttl 63\n"),
        "{t}"
    );

    // VM A to the internet: through its floating IP, source-NATed in the public VRF, to the
    // gateway's tunnel by the default route.
    let v = vrctl_json(&sock, &["trace", "vif1.0", "--dst", "203.0.113.9"]);
    assert_eq!(v["verdict"], "sent", "{v}");
    assert_eq!(v["decisions"]["flow"], "N(S)", "{v}");
    assert_eq!(
        v["decisions"]["nat"],
        serde_json::json!(["src 10.1.1.3 -> 198.51.100.5"]),
        "{v}"
    );
    assert_eq!(v["decisions"]["route"], "0.0.0.0/0", "{v}");
    assert_eq!(v["decisions"]["vrf"], VRF_PUBLIC, "{v}");
    assert!(
        v["summary"]
            .as_str()
            .is_some_and(|s| s.contains("inner: ipv4 198.51.100.5 -> 203.0.113.9")),
        "the packet leaves with the floating IP as its source: {v}"
    );

    // VM B to VM C over TCP: the policy between vn1 and vn2 denies it.
    let v = vrctl_json(
        &sock,
        &[
            "trace", "vif2.0", "--dst", "10.2.2.3", "--proto", "tcp", "--dport", "22",
        ],
    );
    assert_eq!(v["verdict"], "dropped", "{v}");
    assert_eq!(v["reason"], "Flow Action Drop", "{v}");
    assert_eq!(v["decisions"]["flow"], "D(Policy)", "{v}");
    assert_eq!(v["vif"], 4, "{v}");

    // A spoofed source (VM B's address from VM A), as a raw frame.
    let mut raw = Vec::new();
    etherparse::PacketBuilder::ethernet2(MAC_A.0, vrouter_dataplane::wire::MacAddr::VROUTER.0)
        .ipv4(IP_B.to_be_bytes(), IP_REMOTE_UDP.to_be_bytes(), 64)
        .udp(4000, 53)
        .write(&mut raw, b"q")
        .expect("frame");
    let spoofed: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let o = vrctl(&sock, &["trace", "3", "--frame", &spoofed]);
    let t = stdout(&o);
    assert!(o.status.success(), "{o:?}");
    assert!(t.ends_with("dropped: Invalid Source\n"), "{t}");

    // Nothing was forwarded, counted or remembered by the daemon.
    assert_eq!(stdout(&vrctl(&sock, &["drops", "--nonzero"])), drops_before);
    let flows = vrctl_json(&sock, &["flow", "list"]);
    assert_eq!(flows["flows"].as_array().map(Vec::len), Some(0), "{flows}");

    let e = one_line_error(&vrctl(&sock, &["trace", "vif9.9", "--dst", "10.1.1.5"]));
    assert!(e.contains("interface \"vif9.9\" does not exist"), "{e}");
    let e = one_line_error(&vrctl(&sock, &["trace", "3", "--frame", "abc"]));
    assert!(e.contains("--frame"), "{e}");
}
