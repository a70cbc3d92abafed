//! Two hosts (namespaces joined by an underlay veth), a VM on each in the same VN, forwarding
//! across with MPLS over UDP and MPLS over GRE through two real `vrouter-dp` daemons. A capture
//! on the underlay, decoded by tshark, shows the label and the inner addresses; the host stack
//! on the fabric NIC keeps answering its own ping while overlay traffic flows. Needs root.

mod nsutil;

use nsutil::*;
use std::time::Duration;
use vrouter_dataplane::tables::{NexthopSpec, Route, TableOp, TunnelKind};

const FAB_A: &str = "02:fa:00:00:00:01";
const FAB_B: &str = "02:fa:00:00:00:02";

fn two_hosts(test: &str, kind: &str, tunnel: TunnelKind) {
    require(&["ip", "ping", "iperf3", "tshark", "ss"]);
    let scratch = Scratch::new(test);
    let ha = Ns::new(test, "ha");
    let hb = Ns::new(test, "hb");
    // The underlay: each host's fabric NIC plugs into a bridge (a switch) in its own namespace,
    // where the capture sees both directions.
    let ul = Ns::new(test, "ul");
    sh(&format!("ip -n {} link add br0 type bridge", ul.name));
    for (h, p) in [(&ha, "pa"), (&hb, "pb")] {
        sh(&format!(
            "ip link add fab0 netns {} type veth peer name {p} netns {}",
            h.name, ul.name
        ));
        sh(&format!(
            "ip -n {} link set {p} mtu 1600 master br0 up",
            ul.name
        ));
    }
    sh(&format!("ip -n {} link set br0 up", ul.name));
    for (h, m, a) in [(&ha, FAB_A, "192.168.100.1"), (&hb, FAB_B, "192.168.100.2")] {
        sh(&format!(
            "ip -n {} link set fab0 address {m} mtu 1600",
            h.name
        ));
        sh(&format!("ip -n {} addr add {a}/24 dev fab0", h.name));
        sh(&format!("ip -n {} link set fab0 up", h.name));
    }
    let vm1 = Vm::veth(test, "vm1", &ha, "vif1.0", "02:00:00:00:01:02", "10.1.1.2");
    let vm2 = Vm::veth(test, "vm2", &hb, "vif1.0", "02:00:00:00:02:02", "10.1.1.3");
    let args = |ip: &str| format!("--lcores 1 --port-kind {kind} --fabric fab0 --fabric-ip {ip}");
    let dpa = Dp::start(&ha, &scratch, "dpa", &args("192.168.100.1"));
    let dpb = Dp::start(&hb, &scratch, "dpb", &args("192.168.100.2"));
    // Host A: vm1 local (label 110), vm2 behind host B's label 111. Host B mirrors it.
    let tun = |sip: &str, dip: &str, smac: &str, dmac: &str| TableOp::AddNh {
        id: 20,
        spec: NexthopSpec::Tunnel {
            oif: 0,
            kind: tunnel,
            sip: ip(sip),
            dip: ip(dip),
            dmac: mac(dmac),
            smac: mac(smac),
        },
    };
    let remote = |prefix: &str, label: u32| TableOp::AddRoute {
        vrf: 1,
        prefix: ip(prefix),
        plen: 32,
        route: Route {
            nh: 20,
            label: Some(label),
            proxy_arp: true,
        },
    };
    let mut a = vec![vrf_op(1, "vn1")];
    a.extend(vm_ops(3, "vif1.0", 1, "02:00:00:00:01:02", "10.1.1.2", 10));
    a.push(tun("192.168.100.1", "192.168.100.2", FAB_A, FAB_B));
    a.push(remote("10.1.1.3", 111));
    dpa.client().apply(a).expect("program host A");
    let mut b = vec![vrf_op(1, "vn1")];
    b.extend(vm_ops(3, "vif1.0", 1, "02:00:00:00:02:02", "10.1.1.3", 11));
    b.push(tun("192.168.100.2", "192.168.100.1", FAB_B, FAB_A));
    b.push(remote("10.1.1.2", 110));
    dpb.client().apply(b).expect("program host B");

    assert!(
        wait_reachable(&vm1.ns, "10.1.1.3", Duration::from_secs(10)),
        "vm1 cannot reach vm2 across the overlay\nA:\n{}\nB:\n{}",
        dpa.log_text(),
        dpb.log_text()
    );
    // Capture on the underlay while pinging.
    let pcap = scratch.path("underlay.pcap");
    let mut cap = Proc::spawn(
        &ul,
        &format!(
            "timeout 20 tshark -i pa -f 'udp port 6635 or ip proto 47' -c 6 -w {}",
            pcap.display()
        ),
        &scratch.path("tshark.log"),
    );
    std::thread::sleep(Duration::from_millis(1500));
    let (ok, out) = ping(&vm1.ns, "10.1.1.3", 5);
    assert!(ok, "overlay ping failed: {out}");
    eprintln!("{test}: overlay ping: {}", out.lines().last().unwrap_or(""));
    assert!(cap.wait(Duration::from_secs(15)), "capture did not finish");
    let fields = sh(&format!(
        "tshark -r {} -T fields -e mpls.label -e ip.src -e ip.dst -E separator=\\; 2>/dev/null",
        pcap.display()
    ));
    eprintln!("{test}: underlay decode:\n{fields}");
    let lines: Vec<&str> = fields.lines().filter(|l| !l.is_empty()).collect();
    assert!(
        lines.len() >= 4,
        "too few overlay packets captured: {fields}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("111;")
            && l.contains("192.168.100.1,10.1.1.2")
            && l.contains("192.168.100.2,10.1.1.3")),
        "no vm1->vm2 packet with label 111 and inner addresses: {fields}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("110;") && l.contains("10.1.1.3")),
        "no vm2->vm1 packet with label 110: {fields}"
    );
    if tunnel == TunnelKind::MplsOverGre {
        let p = sh(&format!(
            "tshark -r {} -T fields -e gre.proto 2>/dev/null",
            pcap.display()
        ));
        assert!(p.contains("0x8847"), "not MPLS over GRE: {p}");
    } else {
        let p = sh(&format!(
            "tshark -r {} -T fields -e udp.dstport 2>/dev/null",
            pcap.display()
        ));
        assert!(p.contains("6635"), "not MPLS over UDP: {p}");
    }
    // Overlay traffic flows (iperf3) while the fabric host stacks ping each other.
    let flood = Proc::spawn(
        &vm1.ns,
        "timeout 8 ping -i 0.01 -q 10.1.1.3",
        &scratch.path("flood.log"),
    );
    let (ok, out) = ha.exec_ok("ping -c 5 -i 0.2 -W 2 -q 192.168.100.2");
    drop(flood);
    assert!(ok, "host stack on the fabric NIC does not answer: {out}");
    let gbps = iperf3(&vm2.ns, &vm1.ns, "10.1.1.3", 3, &scratch);
    eprintln!("{test}: iperf3 TCP across {gbps:.3} Gbit/s");
    assert!(gbps > 0.01, "TCP across too slow: {gbps}");
}

#[test]
fn ns_two_hosts_mpls_over_udp_af_xdp() {
    two_hosts("2hudp", "af_xdp", TunnelKind::MplsOverUdp);
}

#[test]
fn ns_two_hosts_mpls_over_gre_af_packet() {
    two_hosts("2hgre", "af_packet", TunnelKind::MplsOverGre);
}
