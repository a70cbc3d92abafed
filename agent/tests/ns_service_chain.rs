//! Service chaining with the real shim, agent and dataplane in namespaces: a policy rule with
//! `apply_service` between a guest network (left) and the public network (right) never
//! connects the two directly. With no service instance running, the left VM reaches the right
//! VM neither by ICMP nor by TCP (and the other way round), the dataplane counts the drops as
//! `Service Chain Down`, and the right VRF holds none of the left network's /32s. The same
//! setup with the rule turned into a plain `pass` does connect them (the control: the
//! negative checks above are not a broken setup).
//!
//! Needs root, `ip`, `ping`, `busybox`, `xenstore-write` and the built daemons (see
//! `ns_controller`). Namespaces are `vrt3-<test>-<pid>-<role>`, killed and deleted on drop.

mod common;

use common::cloud::{setup, start_agent, start_dp, start_shim, vif, xs_plug, Api, Proc};
use common::{free_port, sh, tempdir, vrctl_json, wait_for, Ns, Vm};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const LEFT: &str = "default-domain:default-project:guest-a";
const RIGHT: &str = "default-domain:default-project:__zone1_Public__";
const POL: &str = "d1f3c5d2-8e61-4b7a-9c2d-1e4f5a6b7c8d";
const NAT_SI: &str = "default-domain:default-project:nat-si";

/// (VM uuid, VMI uuid, name, MAC, IP, network, domid).
type VmSpec<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, &'a str, u32);

const VMS: [VmSpec; 2] = [
    (
        "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a81",
        "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e51",
        "i-5-VM",
        "02:aa:00:00:00:05",
        "10.1.1.5",
        "guest-a",
        5,
    ),
    (
        "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a82",
        "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e52",
        "i-6-VM",
        "02:aa:00:00:00:06",
        "198.51.100.6",
        "__zone1_Public__",
        6,
    ),
];

/// The policy's one rule: left to right, any protocol; through `nat-si` when `chain`.
fn entries(chain: bool) -> Value {
    let action = if chain {
        json!({"simple_action": "pass", "gateway_name": "in-network", "apply_service": [NAT_SI]})
    } else {
        json!({"simple_action": "pass"})
    };
    json!({"policy_rule": [{"direction": "<>", "protocol": "any",
        "src_addresses": [{"virtual_network": LEFT}], "dst_addresses": [{"virtual_network": RIGHT}],
        "src_ports": [{"start_port": 0, "end_port": 65535}],
        "dst_ports": [{"start_port": 0, "end_port": 65535}],
        "action_list": action}]})
}

/// guest-a 10.1.1.0/24 and the public network 198.51.100.0/24, both with the chain policy
/// attached, and the two VMs of [`VMS`].
fn chain_cloud(api: &Api) {
    api.ok(
        "POST",
        "/network-policys",
        Some(&json!({"network-policy": {"uuid": POL,
            "fq_name": ["default-domain", "default-project", "snat-guest-a"], "parent_type": "project",
            "network_policy_entries": entries(true)}})),
    );
    for (name, net) in [("guest-a", "10.1.1"), ("__zone1_Public__", "198.51.100")] {
        api.ok(
            "POST",
            "/virtual-networks",
            Some(&json!({"virtual-network": {
                "fq_name": ["default-domain", "default-project", name], "parent_type": "project",
                "network_ipam_refs": [{"to": ["default-domain", "default-project", "default-network-ipam"],
                    "attr": {"ipam_subnets": [{"subnet": {"ip_prefix": format!("{net}.0"), "ip_prefix_len": 24},
                                               "default_gateway": format!("{net}.1")}]}}],
                "network_policy_refs": [{"to": ["default-domain", "default-project", "snat-guest-a"],
                                         "attr": {"sequence": {"major": 0, "minor": 0}}}]
            }})),
        );
    }
    for (vm, vmi, name, mac, ip, net, _) in VMS {
        let ifname = format!("{name}-0");
        let vn = json!([{"to": ["default-domain", "default-project", net]}]);
        api.ok(
            "POST",
            "/virtual-machines",
            Some(&json!({"virtual-machine": {"name": name, "uuid": vm, "fq_name": [name]}})),
        );
        api.ok(
            "POST",
            "/virtual-machine-interfaces",
            Some(&json!({"virtual-machine-interface": {
                "name": ifname, "uuid": vmi, "fq_name": [name, ifname], "parent_type": "virtual-machine",
                "virtual_machine_interface_mac_addresses": {"mac_address": [mac]},
                "virtual_network_refs": vn}})),
        );
        api.ok(
            "POST",
            "/instance-ips",
            Some(&json!({"instance-ip": {
                "name": ifname, "fq_name": [ifname], "instance_ip_address": ip,
                "virtual_network_refs": vn, "virtual_machine_interface_refs": [{"to": [name, ifname]}]}})),
        );
    }
}

/// The prefixes of `vrf`'s routes in the dataplane.
fn rt(sock: &Path, vrf: &str) -> Vec<String> {
    vrctl_json(sock, &["route", "dump", vrf])
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["prefix"].as_str().map(str::to_string))
        .collect()
}

fn chain_drops(sock: &Path) -> u64 {
    vrctl_json(sock, &["drops"])["Service Chain Down"]
        .as_u64()
        .unwrap_or(0)
}

/// Whether a TCP connection from `from` to `ip`:8080 (a listener runs there) completes.
fn tcp_ok(from: &Ns, ip: &str) -> bool {
    from.exec_ok(&format!("busybox nc -w 3 {ip} 8080 </dev/null"))
        .0
}

#[test]
fn ns_service_chain_without_instance_never_connects_left_and_right() {
    let Some(bins) = setup() else { return };
    let dir = tempdir();
    let d = dir.path();
    let host = Ns::new("chain", "h");
    let vms: Vec<Vm> = VMS
        .iter()
        .map(|(_, _, name, mac, ip, _, domid)| {
            let vm = Vm::veth("chain", name, &host, &format!("vif{domid}.0"), mac, ip);
            let gw = format!("{}.1", ip.rsplit_once('.').map_or("", |(n, _)| n));
            sh(&format!("ip -n {} route add default via {gw}", vm.ns.name));
            vm
        })
        .collect();
    let (left, right) = (&vms[0].ns, &vms[1].ns);
    let xs = d.join("xs.sock");
    let xsd = Proc::spawn(
        None,
        &format!("{} --socket {}", bins.xsd.display(), xs.display()),
        &d.join("xenstored.log"),
        &[],
    );
    assert!(
        wait_for(Duration::from_secs(5), || xs.exists().then_some(())).is_some(),
        "xenstored: {}",
        xsd.log()
    );
    let port = free_port();
    let shim = start_shim(&bins, None, &format!("127.0.0.1:{port}"), d, None);
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        ns: None,
        token: None,
    };
    assert!(
        wait_for(Duration::from_secs(10), || api
            .try_call("GET", "/", None)
            .ok())
        .is_some(),
        "shim: {}",
        shim.log()
    );
    chain_cloud(&api);
    let (_dp, sock, pkt0) = start_dp(&bins, &host, d, "h1", "--fabric-ip 10.0.0.1");
    let agent = start_agent(None, d, "h1", &api.base, "h1", &xs, &sock, &pkt0, None);
    for (vm, vmi, _, mac, _, net, domid) in VMS {
        xs_plug(&xs, domid, vm, vmi, mac);
        let vrf = format!("default-domain:default-project:{net}");
        wait_for(Duration::from_secs(15), || {
            vif(&sock, &format!("vif{domid}.0")).filter(|v| v["vrf_name"] == vrf)
        })
        .unwrap_or_else(|| panic!("vif{domid}.0 not programmed:\n{}", agent.log()));
    }
    // The chain is down (no instance) and says why, on the interface config the agent reads.
    let cfg = api.ok("GET", &format!("/vrouter/interfaces/{}", VMS[0].1), None);
    assert_eq!(cfg["connected"], json!([]), "{cfg}");
    assert_eq!(cfg["service_chains"][0]["status"]["state"], "down", "{cfg}");
    // The left VRF steers the right subnet to the chain (its discard while down); the right
    // VRF holds none of the left network's /32s.
    let steered = wait_for(Duration::from_secs(10), || {
        rt(&sock, LEFT)
            .contains(&"198.51.100.0/24".to_string())
            .then_some(())
    });
    assert!(
        steered.is_some(),
        "no chain route in the left VRF:\n{}",
        agent.log()
    );
    let right_rt = rt(&sock, RIGHT);
    assert!(
        !right_rt
            .iter()
            .any(|p| p.starts_with("10.1.1.") && p.ends_with("/32")),
        "the left network's /32s leaked into the right VRF: {right_rt:?}"
    );
    // Neither ICMP nor TCP crosses, either way, and the drops are counted as the chain's.
    let _listen_r = Proc::spawn(
        Some(right),
        "busybox nc -ll -p 8080 -e /bin/true",
        &d.join("nc-right.log"),
        &[],
    );
    let _listen_l = Proc::spawn(
        Some(left),
        "busybox nc -ll -p 8080 -e /bin/true",
        &d.join("nc-left.log"),
        &[],
    );
    let before = chain_drops(&sock);
    assert!(
        !left.exec_ok("ping -c 2 -W 1 198.51.100.6").0,
        "left pinged right"
    );
    assert!(!tcp_ok(left, "198.51.100.6"), "left opened TCP to right");
    assert!(
        !right.exec_ok("ping -c 2 -W 1 10.1.1.5").0,
        "right pinged left"
    );
    assert!(!tcp_ok(right, "10.1.1.5"), "right opened TCP to left");
    let after = chain_drops(&sock);
    assert!(
        after >= before + 3,
        "drops not counted as Service Chain Down: {before} -> {after}: {}",
        vrctl_json(&sock, &["drops", "--nonzero"])
    );

    // Control: the same rule as a plain pass connects them (so the checks above can fail).
    api.ok(
        "PUT",
        &format!("/network-policy/{POL}"),
        Some(&json!({"network-policy": {"network_policy_entries": entries(false)}})),
    );
    let reached = wait_for(Duration::from_secs(15), || {
        left.exec_ok("ping -c 1 -W 1 198.51.100.6").0.then_some(())
    });
    assert!(
        reached.is_some(),
        "a plain pass rule did not connect:\n{}",
        agent.log()
    );
    assert!(
        tcp_ok(left, "198.51.100.6"),
        "a plain pass rule did not carry TCP"
    );
}
