//! A VM's TCP stream to a VM on another host, through two real `vrouter-dp` daemons over an
//! MPLSoUDP underlay of MTU 1500: tshark decodes the tunnelled segments on the underlay (each
//! within the underlay's MTU, label and inner TCP intact), and the receiving VM's interface sees
//! the segments merged again into TCP super-packets larger than its MTU (runs of segments of a
//! flow leave a port as one super-packet, `vnet::tso_run`), which its stack accepts: the transfer
//! completes. Needs root.

mod nsutil;

use nsutil::*;
use std::time::Duration;
use vrouter_dataplane::tables::{NexthopSpec, Route, TableOp, TunnelKind};

const FAB_A: &str = "02:fa:00:00:00:01";
const FAB_B: &str = "02:fa:00:00:00:02";

fn program(
    dp: &Dp,
    vm_mac: &str,
    vm_ip: &str,
    remote_ip: &str,
    sip: &str,
    dip: &str,
    mac: (&str, &str),
) {
    let mut ops = vec![vrf_op(1, "vn1")];
    ops.extend(vm_ops(3, "vif1.0", 1, vm_mac, vm_ip, 10));
    ops.push(TableOp::AddNh {
        id: 20,
        spec: NexthopSpec::Tunnel {
            oif: 0,
            kind: TunnelKind::MplsOverUdp,
            sip: ip(sip),
            dip: ip(dip),
            smac: nsutil::mac(mac.0),
            dmac: nsutil::mac(mac.1),
        },
    });
    ops.push(TableOp::AddRoute {
        vrf: 1,
        prefix: ip(remote_ip),
        plen: 32,
        route: Route {
            nh: 20,
            label: Some(110),
            proxy_arp: true,
        },
    });
    dp.client().apply(ops).expect("program the host");
}

#[test]
fn ns_overlay_tcp_is_segmented_on_the_underlay_and_merged_for_the_receiving_vm() {
    require(&["ip", "ping", "iperf3", "tshark", "ss"]);
    let test = "o23gro";
    let scratch = Scratch::new(test);
    let ha = Ns::new(test, "ha");
    let hb = Ns::new(test, "hb");
    sh(&format!(
        "ip link add fab0 netns {} type veth peer name fab0 netns {}",
        ha.name, hb.name
    ));
    for (h, m, a) in [(&ha, FAB_A, "192.168.100.1"), (&hb, FAB_B, "192.168.100.2")] {
        sh(&format!(
            "ip -n {} link set fab0 address {m} mtu 1500 up",
            h.name
        ));
        sh(&format!("ip -n {} addr add {a}/24 dev fab0", h.name));
    }
    let vm1 = Vm::veth(test, "vm1", &ha, "vif1.0", "02:00:00:00:01:02", "10.1.1.2");
    let vm2 = Vm::veth(test, "vm2", &hb, "vif1.0", "02:00:00:00:02:02", "10.1.1.3");
    // Room for the 32 bytes of MPLSoUDP in the underlay's 1500.
    for (vm, h) in [(&vm1, &ha), (&vm2, &hb)] {
        sh(&format!("ip -n {} link set eth0 mtu 1450", vm.ns.name));
        sh(&format!("ip -n {} link set vif1.0 mtu 1450", h.name));
    }
    let args = |a: &str| format!("--port-kind af_packet --fabric fab0 --fabric-ip {a}");
    let dpa = Dp::start(&ha, &scratch, "dpa", &args("192.168.100.1"));
    let dpb = Dp::start(&hb, &scratch, "dpb", &args("192.168.100.2"));
    let (a, b) = ("192.168.100.1", "192.168.100.2");
    program(
        &dpa,
        "02:00:00:00:01:02",
        "10.1.1.2",
        "10.1.1.3",
        a,
        b,
        (FAB_A, FAB_B),
    );
    program(
        &dpb,
        "02:00:00:00:02:02",
        "10.1.1.3",
        "10.1.1.2",
        b,
        a,
        (FAB_B, FAB_A),
    );
    assert!(
        wait_reachable(&vm1.ns, "10.1.1.3", Duration::from_secs(10)),
        "vm1 cannot reach vm2 across the overlay\nA:\n{}\nB:\n{}",
        dpa.log_text(),
        dpb.log_text()
    );
    // Headers only (snaplen 200), bounded in time and count.
    let under = scratch.path("underlay.pcap");
    let at_vm = scratch.path("vm2.pcap");
    let mut cap_u = Proc::spawn(
        &hb,
        &format!(
            "timeout 20 tshark -i fab0 -s 200 -f 'udp port 6635' -a duration:6 -c 3000 -w {}",
            under.display()
        ),
        &scratch.path("tshark-u.log"),
    );
    let mut cap_v = Proc::spawn(
        &vm2.ns,
        &format!(
            "timeout 20 tshark -i eth0 -s 200 -f 'tcp port 5201' -a duration:6 -c 3000 -w {}",
            at_vm.display()
        ),
        &scratch.path("tshark-v.log"),
    );
    std::thread::sleep(Duration::from_millis(1500));
    let gbps = iperf3(&vm2.ns, &vm1.ns, "10.1.1.3", 2, &scratch);
    eprintln!("{test}: iperf3 TCP across {gbps:.3} Gbit/s");
    assert!(gbps > 0.01, "TCP across too slow: {gbps}");
    assert!(
        cap_u.wait(Duration::from_secs(20)),
        "underlay capture did not finish"
    );
    assert!(
        cap_v.wait(Duration::from_secs(20)),
        "vm capture did not finish"
    );

    // The underlay: MPLSoUDP frames, label 110, inner TCP from vm1, each within the MTU.
    let fields = sh(&format!(
        "tshark -r {} -T fields -e ip.len -e mpls.label -e ip.src -e tcp.len -E separator=\\; 2>/dev/null",
        under.display()
    ));
    let data: Vec<(usize, String)> = fields
        .lines()
        .filter(|l| l.contains("10.1.1.2"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(';').collect();
            let outer = f.first()?.split(',').next()?.parse::<usize>().ok()?;
            let tcp_len = f.get(3)?.parse::<usize>().ok()?;
            let label = f.get(1)?.to_string();
            (tcp_len > 0).then_some((outer, label))
        })
        .collect();
    assert!(
        data.len() >= 20,
        "too few tunnelled data segments decoded: {}",
        fields.lines().take(20).collect::<Vec<_>>().join("\n")
    );
    assert!(
        data.iter()
            .all(|(outer, label)| *outer <= 1500 && label == "110"),
        "a tunnelled segment is over the underlay MTU or mislabelled: {:?}",
        data.iter().find(|(o, l)| *o > 1500 || l != "110")
    );
    // The receiving VM: TCP from vm1 in super-packets over its 1450-byte MTU.
    let lens = sh(&format!(
        "tshark -r {} -Y 'ip.src == 10.1.1.2 && tcp.len > 0' -T fields -e ip.len 2>/dev/null",
        at_vm.display()
    ));
    let lens: Vec<usize> = lens.lines().filter_map(|l| l.trim().parse().ok()).collect();
    let merged = lens.iter().filter(|&&l| l > 1450).count();
    eprintln!(
        "{test}: {} data packets at vm2, {merged} merged over the MTU, largest {:?}",
        lens.len(),
        lens.iter().max()
    );
    assert!(
        merged > 0,
        "no merged super-packet reached vm2 ({} data packets, largest {:?})",
        lens.len(),
        lens.iter().max()
    );
}
