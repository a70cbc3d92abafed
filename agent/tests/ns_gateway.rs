//! The data path to an RFC 4364/4023 gateway, with GoBGP as the gateway's BGP and the Linux
//! kernel's raw GRE socket as its MPLS-in-GRE forwarding (this kernel has no MPLS): the shim
//! peers with GoBGP over the underlay, GoBGP announces 198.51.100.0/24 with the VM network's
//! route target and no encapsulation community, the host's agent programs it; then
//! - MPLS-in-GRE built in the gateway namespace with the label the shim advertised for the VM
//!   reaches the VM, and
//! - the VM's answer and its own ping to 198.51.100.1 leave the host as MPLS in GRE to the
//!   gateway's address with the gateway's label (tshark decodes both).
//!
//! Needs root, `ip`, `ping`, `xenstore-write`, `gobgpd`, `tshark`, `python3` and the daemons
//! built next to this test (as `ns_controller`). Namespaces `vrt3-gwt-<pid>-*`, removed on drop.

mod common;

use common::cloud::{
    cloud, routes, setup, start_agent, start_dp, start_shim_args, vm_ns, xs_plug, Api, Proc, TOKEN,
    VN, VRF,
};
use common::{require, sh, tempdir, try_vrctl_json, wait_for, Ns};
use std::path::Path;
use std::time::Duration;

const VM1: &str = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7aa1";
const VMI1: &str = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4ea1";
const MAC1: &str = "02:aa:00:00:0a:02";
const GW_LABEL: u32 = 777;

/// gobgpd in the gateway namespace: AS 65001, peer the shim (AS 64512) at 10.0.0.100.
fn start_gobgp(gw: &Ns, d: &Path) -> Proc {
    let conf = d.join("gobgpd.toml");
    std::fs::write(
        &conf,
        r#"[global.config]
  as = 65001
  router-id = "10.0.0.254"
  port = 179
  local-address-list = ["10.0.0.254"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "10.0.0.100"
    peer-as = 64512
  [neighbors.timers.config]
    connect-retry = 1
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "l3vpn-ipv4-unicast"
"#,
    )
    .expect("gobgpd.toml");
    Proc::spawn(
        Some(gw),
        &format!(
            "gobgpd -f {} --api-hosts 127.0.0.1:50051 -l info",
            conf.display()
        ),
        &d.join("gobgpd.log"),
        &[],
    )
}

/// What a gateway sends: `to label src dst` (shared with the devcloud's BGP check).
const SEND_MPLSOGRE: &str = include_str!("../../scripts/lib/send_mplsogre.py");

#[test]
fn ns_gateway_routes_carry_vm_traffic_as_mpls_over_gre_both_ways() {
    let Some(bins) = setup() else { return };
    require(&["gobgpd", "gobgp", "tshark", "python3"]);
    let dir = tempdir();
    let d = dir.path();
    // Underlay bridge (and the shim, 10.0.0.100) in ul; host ha at 10.0.0.1; gateway at .254.
    let ul = Ns::new("gwt", "ul");
    let ha = Ns::new("gwt", "ha");
    let gw = Ns::new("gwt", "gw");
    sh(&format!("ip -n {} link add br0 type bridge", ul.name));
    sh(&format!("ip -n {} addr add 10.0.0.100/24 dev br0", ul.name));
    for (ns, dev, peer, addr) in [
        (&ha, "fab0", "pa", "10.0.0.1"),
        (&gw, "gw0", "pg", "10.0.0.254"),
    ] {
        sh(&format!(
            "ip link add {dev} netns {} type veth peer name {peer} netns {}",
            ns.name, ul.name
        ));
        sh(&format!(
            "ip -n {} link set {peer} mtu 1600 master br0 up",
            ul.name
        ));
        sh(&format!("ip -n {} link set {dev} mtu 1600", ns.name));
        sh(&format!("ip -n {} addr add {addr}/24 dev {dev}", ns.name));
        sh(&format!("ip -n {} link set {dev} up", ns.name));
        sh(&format!("ip -n {} link set lo up", ns.name));
    }
    sh(&format!("ip -n {} link set br0 up", ul.name));
    let vm1 = vm_ns("gwt", "vm1", &ha, "vif7.0", MAC1, "10.1.1.2");
    let xs = d.join("xs.sock");
    let _xsd = Proc::spawn(
        None,
        &format!("{} --socket {}", bins.xsd.display(), xs.display()),
        &d.join("xenstored.log"),
        &[],
    );
    assert!(wait_for(Duration::from_secs(5), || xs.exists().then_some(())).is_some());
    let shim = start_shim_args(
        &bins,
        Some(&ul),
        "10.0.0.100:8082",
        d,
        Some(TOKEN),
        "--bgp 10.0.0.100",
    );
    let api = Api {
        base: "http://10.0.0.100:8082".into(),
        ns: Some(ul.name.clone()),
        token: Some(TOKEN.into()),
    };
    let up = wait_for(Duration::from_secs(10), || {
        api.try_call("GET", "/", None).ok()
    });
    assert!(up.is_some(), "shim: {}", shim.log());
    cloud(&api, &[(VM1, VMI1, "i-7-VM", MAC1, "10.1.1.2")]);
    let net_id = api.ok("GET", &format!("/virtual-network/{VN}"), None)["virtual-network"]
        ["virtual_network_network_id"]
        .as_u64()
        .expect("network id");
    let fab = "--fabric fab0 --fabric-port-kind af_packet --fabric-ip 10.0.0.1";
    let (_dp, dp, pkt0) = start_dp(&bins, &ha, d, "ha", fab);
    let agent = start_agent(
        Some(&ha),
        d,
        "ha",
        &api.base,
        "ha",
        &xs,
        &dp,
        &pkt0,
        Some(TOKEN),
    );
    xs_plug(&xs, 7, VM1, VMI1, MAC1);
    let _gobgp = start_gobgp(&gw, d);
    api.ok(
        "POST",
        "/bgp-routers",
        Some(&serde_json::json!({"bgp-router": {
            "fq_name": ["default-domain", "default-project", "ip-fabric", "__default__", "gw"],
            "parent_type": "routing-instance",
            "bgp_router_parameters": {"vendor": "mx", "address": "10.0.0.254",
                "autonomous_system": 65001, "address_families": {"family": ["inet-vpn"]}}}})),
    );
    let logs = || format!("agent:\n{}\nshim:\n{}", agent.log(), shim.log());
    // The VM's route, with the label the shim advertises for it.
    let vm_label = wait_for(Duration::from_secs(20), || {
        routes(&api)
            .into_iter()
            .find(|r| r["prefix"] == "10.1.1.2/32" && r["host"] == "ha")?["label"]
            .as_u64()
    })
    .unwrap_or_else(|| panic!("the VM's route never reached the shim\n{}", logs()));
    // The gateway announces the outside with tier net1's route target, no encapsulation
    // community (so MPLS in GRE), once the session is up.
    let add = format!(
        "gobgp global rib -a vpnv4 add 198.51.100.0/24 label {GW_LABEL} rd 65001:1 \
         rt 64512:{net_id} nexthop 10.0.0.254"
    );
    let programmed = wait_for(Duration::from_secs(30), || {
        let _ = gw.exec_ok(&add);
        let rt = try_vrctl_json(&dp, &["route", "dump", VRF])?;
        rt.as_array()?
            .iter()
            .find(|x| x["prefix"] == "198.51.100.0/24" && x["label"] == GW_LABEL)
            .cloned()
    });
    assert!(
        programmed.is_some(),
        "the gateway route was not programmed\n{}",
        logs()
    );

    // Capture on the gateway, then: MPLSoGRE in to the VM (its answer comes back), and the
    // VM's own ping out.
    let cap = d.join("gw.pcap.txt");
    let mut tshark = Proc::spawn(
        Some(&gw),
        "tshark -l -i gw0 -a duration:12 -f 'ip proto 47' -T fields -E separator=/s \
         -e ip.src -e ip.dst -e mpls.label -e icmp.type",
        &cap,
        &[],
    );
    std::thread::sleep(Duration::from_secs(3));
    let script = d.join("send_mplsogre.py");
    std::fs::write(&script, SEND_MPLSOGRE).expect("script");
    let (ok, out) = gw.exec_ok(&format!(
        "python3 {} 10.0.0.1 {vm_label} 198.51.100.1 10.1.1.2",
        script.display()
    ));
    assert!(ok, "send MPLSoGRE: {out}");
    let _ = vm1.exec_ok("ping -c 2 -i 0.3 -W 1 198.51.100.1");
    let done = wait_for(Duration::from_secs(20), || tshark.try_wait());
    assert!(done.is_some(), "tshark did not stop");
    let lines = std::fs::read_to_string(&cap).unwrap_or_default();
    if std::env::var_os("VRT8_SHOW_LOGS").is_some() {
        eprintln!("gateway capture (outer,inner src; outer,inner dst; label; icmp type):\n{lines}");
    }
    // Fields: outer src,inner src  outer dst,inner dst  label  icmp type.
    let from_host = |icmp_type: &str| {
        lines.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() == 4
                && f[0] == "10.0.0.1,10.1.1.2"
                && f[1] == "10.0.0.254,198.51.100.1"
                && f[2] == GW_LABEL.to_string()
                && f[3] == icmp_type
        })
    };
    assert!(
        from_host("0"),
        "no echo reply from the VM as MPLSoGRE label {GW_LABEL} to 10.0.0.254:\n{lines}\n{}",
        logs()
    );
    assert!(
        from_host("8"),
        "the VM's ping did not leave as MPLSoGRE label {GW_LABEL}:\n{lines}"
    );
}
