//! One host, two VMs in the same VN, forwarding through the real `vrouter-dp`: ping and an
//! iperf3 TCP stream with the kernel's default offloads on, for each port kind. Needs root.

mod nsutil;

use nsutil::*;
use std::time::Duration;

fn one_host(test: &str, kind: &str, second_vm_tap: bool) {
    require(&["ip", "ping", "iperf3", "ss"]);
    let scratch = Scratch::new(test);
    let host = Ns::new(test, "h");
    let vm1 = Vm::veth(
        test,
        "vm1",
        &host,
        "vif1.0",
        "02:00:00:00:01:02",
        "10.1.1.2",
    );
    let vm2_dev = if second_vm_tap { "tap2.0" } else { "vif2.0" };
    let vm2_early = (!second_vm_tap).then(|| {
        Vm::veth(
            test,
            "vm2",
            &host,
            "vif2.0",
            "02:00:00:00:02:02",
            "10.1.1.3",
        )
    });
    let dp = Dp::start(
        &host,
        &scratch,
        "dp",
        &format!("--lcores 1 --port-kind {kind}"),
    );
    let mut c = dp.client();
    let mut ops = vec![vrf_op(1, "default-domain:p:vn1")];
    ops.extend(vm_ops(3, "vif1.0", 1, "02:00:00:00:01:02", "10.1.1.2", 10));
    ops.extend(vm_ops(4, vm2_dev, 1, "02:00:00:00:02:02", "10.1.1.3", 11));
    c.apply(ops).expect("program tables");
    let vm2 = match vm2_early {
        Some(v) => v,
        None => Vm::adopt_tap(
            test,
            "vm2",
            &host,
            "tap2.0",
            "02:00:00:00:02:02",
            "10.1.1.3",
        ),
    };
    assert!(
        wait_reachable(&vm1.ns, "10.1.1.3", Duration::from_secs(10)),
        "vm1 cannot reach vm2 through the dataplane\n{}",
        dp.log_text()
    );
    let (ok, out) = ping(&vm1.ns, "10.1.1.3", 5);
    assert!(ok, "ping failed: {out}");
    eprintln!("{test}: ping: {}", out.lines().last().unwrap_or(""));
    let gbps = iperf3(&vm2.ns, &vm1.ns, "10.1.1.3", 3, &scratch);
    eprintln!("{test}: iperf3 TCP {gbps:.3} Gbit/s");
    assert!(gbps > 0.01, "TCP stream too slow: {gbps} Gbit/s");
}

#[test]
fn ns_one_host_af_packet() {
    one_host("1hpkt", "af_packet", false);
}

#[test]
fn ns_one_host_af_xdp() {
    one_host("1hxdp", "af_xdp", false);
}

#[test]
fn ns_one_host_tap() {
    one_host("1htap", "af_packet", true);
}
