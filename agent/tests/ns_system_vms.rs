//! CloudStack's own appliances on our networks (issue 19), with the real shim, agents and
//! dataplanes in namespaces: a system VM (secondary storage / console proxy stand-in) with its
//! Management NIC on `ip-fabric` and its Control NIC on `__link_local__`, and a VPC's internal
//! load balancer (Debian's `haproxy` in an appliance namespace) at the VIP on tier 1.
//!
//! * ip-fabric: another host on the underlay reaches the system VM's Management address and
//!   the VM reaches it (plain IPv4 on the underlay: nothing is advertised, no tunnel exists).
//! * link-local: dom0 (the host namespace) reaches the VM's Control address through its
//!   link-local tap (`xapi0`, 169.254.0.1/16; ping and TCP 3922) and the VM reaches dom0; a
//!   guest VM reaches neither 169.254.0.1 nor the system VM's link-local address.
//! * `vrctl vif` names the types; a link-local address outside 169.254/16 leaves that
//!   interface unbound with a clear warning and disturbs nothing else.
//! * VPC internal LB: a VM on tier 2 reaches the VIP and gets answers from both backends (one
//!   per host); dom0 reaches the appliance's Control address on TCP 3922.
//!
//! Needs root, `ip`, `ping`, `busybox`, `haproxy`, `xenstore-write` and the built daemons (see
//! `ns_controller`). Namespaces are `vrt3-s19*-<pid>-<role>`, killed and deleted on drop.

mod common;

use common::cloud::{setup, start_dp, start_shim, vif, Api, Bins, Proc, TOKEN};
use common::{require, sh, tempdir, vrctl_json, wait_for, Ns};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One NIC: (VMI uuid, device id, MAC, IP, prefix length, network name).
type Nic<'a> = (&'a str, u32, &'a str, &'a str, u8, &'a str);

/// A VM: (uuid, name, domid, NICs).
type VmSpec<'a> = (&'a str, &'a str, u32, &'a [Nic<'a>]);

const WAIT: Duration = Duration::from_secs(20);

/// A host with a vRouter: its namespace (fabric `fab0` on the underlay), xenstored,
/// dataplane and agent.
struct Host {
    ns: Ns,
    xs: PathBuf,
    sock: PathBuf,
    pkt0: PathBuf,
    agent: Proc,
    _dp: Proc,
    _xsd: Proc,
}

/// The underlay (a bridge in its own namespace, which also runs the shim at 10.0.0.100).
struct Underlay {
    ns: Ns,
    api: Api,
    _shim: Proc,
}

fn underlay(bins: &Bins, test: &str, d: &Path) -> Underlay {
    let ns = Ns::new(test, "ul");
    sh(&format!("ip -n {} link add br0 type bridge", ns.name));
    sh(&format!("ip -n {} addr add 10.0.0.100/24 dev br0", ns.name));
    sh(&format!("ip -n {} link set br0 up", ns.name));
    let shim = start_shim(bins, Some(&ns), "10.0.0.100:8082", d, Some(TOKEN));
    let api = Api {
        base: "http://10.0.0.100:8082".into(),
        ns: Some(ns.name.clone()),
        token: Some(TOKEN.into()),
    };
    let up = wait_for(Duration::from_secs(10), || {
        api.try_call("GET", "/", None).ok()
    });
    assert!(up.is_some(), "shim: {}", shim.log());
    Underlay {
        ns,
        api,
        _shim: shim,
    }
}

/// A namespace on the underlay with `fab0` at `ip`/24.
fn on_underlay(ul: &Underlay, test: &str, role: &str, port: &str, ip: &str) -> Ns {
    let h = Ns::new(test, role);
    sh(&format!(
        "ip link add fab0 netns {} type veth peer name {port} netns {}",
        h.name, ul.ns.name
    ));
    sh(&format!(
        "ip -n {} link set {port} mtu 1600 master br0 up",
        ul.ns.name
    ));
    sh(&format!("ip -n {} link set fab0 mtu 1600", h.name));
    sh(&format!("ip -n {} addr add {ip}/24 dev fab0", h.name));
    sh(&format!("ip -n {} link set fab0 up", h.name));
    h
}

/// A vRouter host on the underlay at `ip`: dataplane and agent in its namespace.
fn vrouter_host(bins: &Bins, ul: &Underlay, test: &str, d: &Path, tag: &str, ip: &str) -> Host {
    let ns = on_underlay(ul, test, tag, &format!("p{tag}"), ip);
    let xs = d.join(format!("xs-{tag}.sock"));
    let xsd = Proc::spawn(
        None,
        &format!("{} --socket {}", bins.xsd.display(), xs.display()),
        &d.join(format!("xenstored-{tag}.log")),
        &[],
    );
    assert!(wait_for(Duration::from_secs(5), || xs.exists().then_some(())).is_some());
    let fab = format!("--fabric fab0 --fabric-port-kind af_packet --fabric-ip {ip}");
    let (dp, sock, pkt0) = start_dp(bins, &ns, d, tag, &fab);
    let agent = agent(&ns, d, tag, &ul.api.base, &xs, &sock, &pkt0);
    Host {
        ns,
        xs,
        sock,
        pkt0,
        agent,
        _dp: dp,
        _xsd: xsd,
    }
}

/// The agent of host `tag` (as `common::cloud::start_agent` starts it) with its status served
/// on the namespace's loopback (`vrctl agent`).
fn agent(ns: &Ns, d: &Path, tag: &str, url: &str, xs: &Path, dp: &Path, pkt0: &Path) -> Proc {
    Proc::spawn(
        Some(ns),
        &format!(
            "{} --controller {url} --hostname {tag} --xenstore --xenstore-socket {} \
             --dp-socket {} --agent-socket {} --agent-local-socket {} --state-dir {} \
             --poll-ms 50 --metrics 127.0.0.1:9469",
            env!("CARGO_BIN_EXE_vrouter-agent"),
            xs.display(),
            dp.display(),
            pkt0.display(),
            d.join(format!("agent-pkt0-{tag}.sock")).display(),
            d.join(format!("state-{tag}")).display(),
        ),
        &d.join(format!("agent-{tag}.log")),
        &[("RUST_LOG", "info"), ("VROUTER_SHIM_TOKEN", TOKEN)],
    )
}

/// A guest network (`10.1.N.0/24`, gateway `.1`), optionally with a policy attached.
fn network(api: &Api, name: &str, net: &str, policy: Option<&str>) {
    let mut vn = json!({
        "fq_name": ["default-domain", "default-project", name], "parent_type": "project",
        "network_ipam_refs": [{"to": ["default-domain", "default-project", "default-network-ipam"],
            "attr": {"ipam_subnets": [{"subnet": {"ip_prefix": format!("{net}.0"), "ip_prefix_len": 24},
                                       "default_gateway": format!("{net}.1")}]}}]
    });
    if let Some(p) = policy {
        vn["network_policy_refs"] = json!([{"to": ["default-domain", "default-project", p],
            "attr": {"sequence": {"major": 0, "minor": 0}}}]);
    }
    api.ok(
        "POST",
        "/virtual-networks",
        Some(&json!({ "virtual-network": vn })),
    );
}

/// A VM with its interfaces and their instance IPs (CloudStack's own addresses on the system
/// networks: the shim does no IPAM there).
fn add_vm(api: &Api, (vm, name, _, nics): VmSpec) {
    api.ok(
        "POST",
        "/virtual-machines",
        Some(&json!({"virtual-machine": {"name": name, "uuid": vm, "fq_name": [name]}})),
    );
    for &(vmi, dev, mac, ip, _, net) in nics {
        let ifname = format!("{name}-{dev}");
        let vn = json!([{"to": ["default-domain", "default-project", net]}]);
        api.ok(
            "POST",
            "/virtual-machine-interfaces",
            Some(&json!({"virtual-machine-interface": {
                "name": ifname, "uuid": vmi, "fq_name": [name, ifname],
                "parent_type": "virtual-machine",
                "virtual_machine_interface_mac_addresses": {"mac_address": [mac]},
                "virtual_network_refs": vn}})),
        );
        if ip.is_empty() {
            continue; // no address (a NIC on a network without IPAM)
        }
        api.ok(
            "POST",
            "/instance-ips",
            Some(&json!({"instance-ip": {
                "name": ifname, "fq_name": [ifname], "instance_ip_address": ip,
                "virtual_network_refs": vn, "virtual_machine_interface_refs": [{"to": [name, ifname]}]}})),
        );
    }
}

/// The VM's namespace: one veth per NIC (`eth<dev>` inside, `vif<domid>.<dev>` in the host).
fn vm_ns(test: &str, host: &Host, (_, name, domid, nics): VmSpec) -> Ns {
    let ns = Ns::new(test, name);
    for &(_, dev, mac, ip, plen, _) in nics {
        let (v, h) = (&ns.name, &host.ns.name);
        sh(&format!(
            "ip link add vif{domid}.{dev} netns {h} type veth peer name eth{dev} netns {v}"
        ));
        sh(&format!("ip -n {v} link set eth{dev} address {mac}"));
        if !ip.is_empty() {
            sh(&format!("ip -n {v} addr add {ip}/{plen} dev eth{dev}"));
        }
        sh(&format!("ip -n {v} link set eth{dev} up"));
        sh(&format!("ip -n {h} link set vif{domid}.{dev} up"));
    }
    ns
}

/// What the hotplug hook and netback leave in xenstore for each connected PV vif of `vm`.
fn xs_plug(host: &Host, (vm, _, domid, nics): VmSpec) {
    for &(vmi, dev, mac, _, _, _) in nics {
        let b = format!("/local/domain/0/backend/vif/{domid}/{dev}");
        sh(&format!(
            "XENSTORED_PATH={} xenstore-write /local/domain/{domid}/name i-{domid}-VM \
             {b}/frontend /local/domain/{domid}/device/vif/{dev} {b}/frontend-id {domid} \
             {b}/mac {mac} {b}/handle {dev} {b}/online 1 {b}/state 4 \
             {b}/hotplug-status connected {b}/cloudstack/nic-id {vmi} {b}/cloudstack/vm-id {vm}",
            host.xs.display()
        ));
    }
}

/// Waits until `dev` is in the host's dataplane with vif type `ty`; returns its JSON.
fn wait_vif(host: &Host, dev: &str, ty: &str) -> serde_json::Value {
    wait_for(WAIT, || vif(&host.sock, dev).filter(|v| v["type"] == ty)).unwrap_or_else(|| {
        panic!(
            "{dev} not programmed as {ty}: {}\n{}",
            vrctl_json(&host.sock, &["vif", "list"]),
            host.agent.log()
        )
    })
}

fn ping_ok(ns: &Ns, dst: &str) -> bool {
    wait_for(WAIT, || {
        ns.exec_ok(&format!("ping -c 1 -W 1 {dst}")).0.then_some(())
    })
    .is_some()
}

/// Whether any of three pings of `dst` from `ns` is answered.
fn ping_answered(ns: &Ns, dst: &str) -> bool {
    ns.exec_ok(&format!("ping -c 3 -i 0.3 -W 1 {dst}")).0
}

const SSVM: VmSpec = (
    "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f1901",
    "s-1-VM",
    1,
    &[
        (
            "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d1910",
            0,
            "06:00:0a:00:00:32",
            "10.0.0.50",
            24,
            "ip-fabric",
        ),
        (
            "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d1911",
            1,
            "0e:00:a9:fe:03:04",
            "169.254.3.4",
            16,
            "__link_local__",
        ),
    ],
);

const GUEST: VmSpec = (
    "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f1902",
    "i-2-VM",
    2,
    &[(
        "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d1920",
        0,
        "02:aa:00:00:19:02",
        "10.1.1.5",
        24,
        "net1",
    )],
);

/// A Control NIC CloudStack would never send: outside 169.254/16.
const BAD: VmSpec = (
    "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f1903",
    "v-3-VM",
    3,
    &[(
        "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d1930",
        0,
        "0e:00:0a:09:09:09",
        "10.9.9.9",
        16,
        "__link_local__",
    )],
);

/// A NIC on a system network this agent does not serve (the shim's default network, which
/// has no IPAM).
const UNKNOWN: VmSpec = (
    "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f1908",
    "v-8-VM",
    8,
    &[(
        "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d1980",
        0,
        "0e:00:0a:08:08:08",
        "",
        16,
        "default-virtual-network",
    )],
);

#[test]
fn ns_system_vm_on_ip_fabric_and_link_local() {
    let Some(bins) = setup() else { return };
    let dir = tempdir();
    let d = dir.path();
    let ul = underlay(&bins, "s19a", d);
    let mut ha = vrouter_host(&bins, &ul, "s19a", d, "ha", "10.0.0.1");
    // Another host on the underlay (its own stack only: it reaches the VM as any host).
    let hb = on_underlay(&ul, "s19a", "hb", "phb", "10.0.0.2");
    network(&ul.api, "net1", "10.1.1", None);
    for vm in [SSVM, GUEST, BAD, UNKNOWN] {
        add_vm(&ul.api, vm);
    }
    let ssvm = vm_ns("s19a", &ha, SSVM);
    let guest = vm_ns("s19a", &ha, GUEST);
    let _bad = vm_ns("s19a", &ha, BAD);
    let _unknown = vm_ns("s19a", &ha, UNKNOWN);
    guest.exec("ip route add default via 10.1.1.1");
    ssvm.exec("ip route add default via 10.0.0.100");
    xs_plug(&ha, GUEST);
    xs_plug(&ha, BAD);
    xs_plug(&ha, UNKNOWN);
    xs_plug(&ha, SSVM);
    // vrctl names the types: the Management NIC in the fabric VRF, the Control NIC in a
    // link-local VRF, dom0's link-local tap.
    let mgmt = wait_vif(&ha, "vif1.0", "Virtual(ip-fabric)");
    assert_eq!(mgmt["vrf"], 0, "{mgmt}");
    let ctl = wait_vif(&ha, "vif1.1", "Virtual(link-local)");
    let xapi = wait_vif(&ha, "xapi0", "XenLL");
    assert_eq!(xapi["ip"], "169.254.0.1", "{xapi}");
    assert_eq!(
        xapi["vrf_name"], "default-domain:default-project:__link_local__",
        "{xapi}"
    );
    assert_ne!(
        ctl["vrf"], xapi["vrf"],
        "each Control NIC has a VRF of its own"
    );
    wait_vif(&ha, "vif2.0", "Virtual");
    let dom0_addr = ha.ns.exec("ip -4 -o addr show dev xapi0");
    assert!(dom0_addr.contains("169.254.0.1/16"), "{dom0_addr}");

    // ip-fabric: another host reaches the Management address over the underlay, and back.
    assert!(
        ping_ok(&hb, "10.0.0.50"),
        "another host cannot reach the system VM's ip-fabric address:\n{}\n{}",
        vrctl_json(&ha.sock, &["drops", "--nonzero"]),
        ha.agent.log()
    );
    assert!(
        ping_ok(&ssvm, "10.0.0.2"),
        "the system VM cannot reach 10.0.0.2"
    );
    // Nothing is advertised for system networks (no overlay route exists to be tunnelled).
    for vrf in ["ip-fabric", "__link_local__"] {
        let r = ul.api.ok(
            "GET",
            &format!("/vrouter/routes?vrf=default-domain:default-project:{vrf}"),
            None,
        );
        assert_eq!(r["routes"], json!([]), "{vrf}: {r}");
    }

    // link-local: dom0 <-> the Control address, ping and TCP 3922.
    assert!(
        ping_ok(&ha.ns, "169.254.3.4"),
        "dom0 cannot reach the system VM's link-local address:\n{}\n{}",
        vrctl_json(&ha.sock, &["drops", "--nonzero"]),
        ha.agent.log()
    );
    assert!(
        ping_ok(&ssvm, "169.254.0.1"),
        "the system VM cannot reach dom0"
    );
    let banner = d.join("ssh-banner.sh");
    std::fs::write(&banner, "#!/bin/sh\necho SSH-2.0-s19-system-vm\n").expect("write");
    sh(&format!("chmod +x {}", banner.display()));
    let _sshd = Proc::spawn(
        Some(&ssvm),
        &format!("busybox nc -ll -p 3922 -e {}", banner.display()),
        &d.join("nc-3922.log"),
        &[],
    );
    let hello = wait_for(WAIT, || {
        let (ok, out) = ha.ns.exec_ok("busybox nc -w 3 169.254.3.4 3922 </dev/null");
        (ok && out.contains("SSH-2.0-s19-system-vm")).then_some(out)
    });
    assert!(hello.is_some(), "dom0 gets no answer on 169.254.3.4:3922");

    // Isolation: the guest reaches neither dom0's nor the system VM's link-local address,
    // through its gateway or on-link.
    assert!(ping_ok(&guest, "10.1.1.1"), "the guest's own gateway");
    for dst in ["169.254.0.1", "169.254.3.4"] {
        assert!(!ping_answered(&guest, dst), "a guest VM reached {dst}");
    }
    guest.exec("ip route add 169.254.0.0/16 dev eth0");
    for dst in ["169.254.0.1", "169.254.3.4"] {
        assert!(
            !ping_answered(&guest, dst),
            "a guest VM reached {dst} on-link"
        );
    }

    // Bad input: the out-of-range Control NIC is left unbound, with a clear warning.
    let log = ha.agent.log();
    // The log is logfmt (vrouter-log): the quotes around the name are escaped in `msg="..."`.
    assert!(
        log.contains(
            r#"interface \"vif3.0\" on link-local (10.9.9.9): a link-local address must be in 169.254.0.0/16"#
        ),
        "{log}"
    );
    assert!(vif(&ha.sock, "vif3.0").is_none(), "vif3.0 was bound");
    assert!(
        log.contains("interface vif8.0 (vmi c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d1980): network default-domain:default-project:default-virtual-network has no subnet")
            && log.contains("unknown system network"),
        "{log}"
    );
    assert!(vif(&ha.sock, "vif8.0").is_none(), "vif8.0 was bound");
    // `vrctl agent` shows both, and the system VM's bindings without a label.
    let st = ha.ns.exec(&format!(
        "{} agent --metrics 127.0.0.1:9469",
        env!("CARGO_BIN_EXE_vrctl")
    ));
    assert!(
        st.contains(
            "a link-local address must be in 169.254.0.0/16, 10.9.9.9 is not; left unbound"
        ) && st.contains("default-virtual-network has no subnet")
            && st
                .lines()
                .any(|l| l.starts_with("vif1.1 ") && l.contains(" -  "))
            && st
                .lines()
                .any(|l| l.starts_with("vif1.0 ") && l.ends_with("ip-fabric")),
        "{st}"
    );
    // ... and everything else still works.
    assert!(ping_ok(&ha.ns, "169.254.3.4") && ping_ok(&hb, "10.0.0.50"));

    eprintln!(
        "{}\n{st}",
        common::stdout(&common::vrctl(&ha.sock, &["vif", "list"]))
    );
    // A restarted agent (kill -9) finds dom0's tap and every interface as it left them: its
    // reconcile changes nothing.
    let before = ha.agent.log().matches("reconciled:").count();
    ha.agent.kill9();
    ha.agent = agent(&ha.ns, d, "ha", &ul.api.base, &ha.xs, &ha.sock, &ha.pkt0);
    let passes = wait_for(WAIT, || {
        let log = ha.agent.log();
        let lines: Vec<String> = log
            .lines()
            .filter(|l| l.contains("reconciled:"))
            .skip(before)
            .map(str::to_string)
            .collect();
        (!lines.is_empty()).then_some(lines)
    })
    .unwrap_or_else(|| panic!("the restarted agent did not reconcile:\n{}", ha.agent.log()));
    assert!(
        passes
            .iter()
            .all(|l| l.contains("0 adds/changes, 0 removals")),
        "{passes:?}"
    );
    assert!(ping_ok(&ha.ns, "169.254.3.4") && ping_ok(&hb, "10.0.0.50"));
}

const TIER1: &str = "vpc1-tier1";
const TIER2: &str = "vpc1-tier2";

/// The VPC's ACL: tier 1 and tier 2 talk to each other.
fn vpc(api: &Api) {
    let fq = |n: &str| format!("default-domain:default-project:{n}");
    api.ok(
        "POST",
        "/network-policys",
        Some(&json!({"network-policy": {
            "fq_name": ["default-domain", "default-project", "vpc1-acl"], "parent_type": "project",
            "network_policy_entries": {"policy_rule": [{"direction": "<>", "protocol": "any",
                "src_addresses": [{"virtual_network": fq(TIER1)}],
                "dst_addresses": [{"virtual_network": fq(TIER2)}],
                "src_ports": [{"start_port": 0, "end_port": 65535}],
                "dst_ports": [{"start_port": 0, "end_port": 65535}],
                "action_list": {"simple_action": "pass"}}]}}})),
    );
    network(api, TIER1, "10.1.1", Some("vpc1-acl"));
    network(api, TIER2, "10.1.2", Some("vpc1-acl"));
}

/// The InternalLbVm stand-in: guest NIC at the VIP on tier 1, Control NIC on link-local.
const ILB: VmSpec = (
    "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f1904",
    "b-4-VM",
    4,
    &[
        (
            "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d1940",
            0,
            "02:aa:00:00:19:04",
            "10.1.1.10",
            24,
            TIER1,
        ),
        (
            "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d1941",
            1,
            "0e:00:a9:fe:04:04",
            "169.254.4.4",
            16,
            "__link_local__",
        ),
    ],
);

const BACKEND1: VmSpec = (
    "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f1905",
    "i-5-VM",
    5,
    &[(
        "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d1950",
        0,
        "02:aa:00:00:19:05",
        "10.1.1.21",
        24,
        TIER1,
    )],
);

const BACKEND2: VmSpec = (
    "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f1906",
    "i-6-VM",
    6,
    &[(
        "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d1960",
        0,
        "02:aa:00:00:19:06",
        "10.1.1.22",
        24,
        TIER1,
    )],
);

const CLIENT: VmSpec = (
    "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f1907",
    "i-7-VM",
    7,
    &[(
        "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d1970",
        0,
        "02:aa:00:00:19:07",
        "10.1.2.7",
        24,
        TIER2,
    )],
);

/// A backend: `busybox httpd` answering its own name.
fn backend(ns: &Ns, d: &Path, name: &str) -> Proc {
    let root = d.join(format!("www-{name}"));
    std::fs::create_dir_all(&root).expect("mkdir");
    std::fs::write(root.join("index.html"), format!("{name}\n")).expect("write");
    Proc::spawn(
        Some(ns),
        &format!("busybox httpd -f -p 80 -h {}", root.display()),
        &d.join(format!("httpd-{name}.log")),
        &[],
    )
}

/// haproxy at the VIP, round robin over both backends.
fn haproxy(ns: &Ns, d: &Path) -> Proc {
    let cfg = d.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        "global\n  maxconn 64\n\
         defaults\n  mode http\n  timeout connect 3s\n  timeout client 10s\n  timeout server 10s\n\
         frontend vip\n  bind 10.1.1.10:80\n  default_backend tier1\n\
         backend tier1\n  balance roundrobin\n  server b1 10.1.1.21:80\n  server b2 10.1.1.22:80\n",
    )
    .expect("write");
    Proc::spawn(
        Some(ns),
        &format!("haproxy -db -f {}", cfg.display()),
        &d.join("haproxy.log"),
        &[],
    )
}

#[test]
fn ns_vpc_internal_lb_answers_tier2_from_both_backends() {
    let Some(bins) = setup() else { return };
    require(&["haproxy", "curl"]);
    let dir = tempdir();
    let d = dir.path();
    let ul = underlay(&bins, "s19b", d);
    let ha = vrouter_host(&bins, &ul, "s19b", d, "ha", "10.0.0.1");
    let hb = vrouter_host(&bins, &ul, "s19b", d, "hb", "10.0.0.2");
    vpc(&ul.api);
    for vm in [ILB, BACKEND1, BACKEND2, CLIENT] {
        add_vm(&ul.api, vm);
    }
    let ilb = vm_ns("s19b", &ha, ILB);
    let b1 = vm_ns("s19b", &ha, BACKEND1);
    let b2 = vm_ns("s19b", &hb, BACKEND2);
    let client = vm_ns("s19b", &hb, CLIENT);
    for ns in [&ilb, &b1, &b2] {
        ns.exec("ip route add default via 10.1.1.1 dev eth0");
    }
    client.exec("ip route add default via 10.1.2.1");
    let _www = [backend(&b1, d, "backend-1"), backend(&b2, d, "backend-2")];
    let lb = haproxy(&ilb, d);
    for (h, vm) in [(&ha, ILB), (&ha, BACKEND1), (&hb, BACKEND2), (&hb, CLIENT)] {
        xs_plug(h, vm);
    }
    wait_vif(&ha, "vif4.0", "Virtual");
    wait_vif(&ha, "vif4.1", "Virtual(link-local)");
    wait_vif(&ha, "xapi0", "XenLL");
    wait_vif(&hb, "vif7.0", "Virtual");
    // The VM on tier 2 reaches the VIP (across the ACL, from the other host) ...
    let logs = || {
        format!(
            "agent ha:\n{}\nagent hb:\n{}",
            ha.agent.log(),
            hb.agent.log()
        )
    };
    assert!(
        ping_ok(&client, "10.1.1.10"),
        "tier 2 cannot reach the VIP\n{}",
        logs()
    );
    // ... and gets answers from both backends.
    let mut answers = Vec::new();
    for _ in 0..8 {
        let got = wait_for(WAIT, || {
            let (ok, out) = client.exec_ok("curl -s -m 5 http://10.1.1.10/");
            ok.then(|| out.trim().to_string())
        });
        answers.push(got.unwrap_or_else(|| {
            panic!(
                "no answer from the VIP: {}\nhaproxy: {}\n{}",
                client.exec_ok("curl -s -m 5 http://10.1.1.10/").1,
                lb.log(),
                logs()
            )
        }));
    }
    for b in ["backend-1", "backend-2"] {
        assert!(
            answers.iter().any(|a| a == b),
            "no answer from {b}: {answers:?}"
        );
    }
    // dom0 of the appliance's host reaches its Control address on TCP 3922.
    let banner = d.join("ssh-banner.sh");
    std::fs::write(&banner, "#!/bin/sh\necho SSH-2.0-s19-internal-lb\n").expect("write");
    sh(&format!("chmod +x {}", banner.display()));
    let _sshd = Proc::spawn(
        Some(&ilb),
        &format!("busybox nc -ll -p 3922 -e {}", banner.display()),
        &d.join("nc-3922.log"),
        &[],
    );
    let hello = wait_for(WAIT, || {
        let (ok, out) = ha.ns.exec_ok("busybox nc -w 3 169.254.4.4 3922 </dev/null");
        (ok && out.contains("SSH-2.0-s19-internal-lb")).then_some(())
    });
    assert!(
        hello.is_some(),
        "dom0 gets no answer on 169.254.4.4:3922\n{}",
        logs()
    );
    eprintln!("internal LB: answers over 8 requests: {answers:?}");
}
