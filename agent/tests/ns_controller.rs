//! The agent with the controller shim, xenstore and the real dataplane: a vif appears in
//! xenstore (written with Debian's `xenstore-write`), the agent binds it by its CloudStack
//! UUIDs, configures it from the shim, programs `vrouter-dp`, advertises its /32, answers the
//! VM's ping to the gateway through pkt0; with two hosts on one underlay bridge, the agents learn
//! each other's routes (underlay MACs by ARP) and the VMs ping each other.
//!
//! Needs root, `ip`, `ping`, `xenstore-write` (xenstore-utils) and the built `vrouter-dp`,
//! `vrouter-shim`, `vrouter-xenstored` next to this test's binaries
//! (`cargo build -p vrouter-dataplane -p vrouter-shim -p vrouter-xen --bins` with the same
//! target dir); they fail with what is missing otherwise. Namespaces are `vrt3-<test>-<pid>-<role>`;
//! every process is killed by pid and every namespace deleted on drop, also on failure.

mod common;

use common::cloud::{
    cloud, ping_ok, routes, setup, start_agent, start_dp, start_shim, vif, vm_ns, xs_plug, Api,
    Proc, TOKEN, VRF,
};
use common::{free_port, sh, tempdir, try_vrctl_json, vrctl_json, wait_for, Ns};
use std::time::Duration;

#[test]
fn ns_controller_single_host_binds_from_xenstore() {
    let Some(bins) = setup() else { return };
    const VM: &str = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a81";
    const VMI: &str = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e51";
    const MAC: &str = "02:aa:00:00:00:05";
    let dir = tempdir();
    let d = dir.path();
    let host = Ns::new("single", "h");
    let vm = vm_ns("single", "vm", &host, "vif5.0", MAC, "10.1.1.5");
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
    cloud(&api, &[(VM, VMI, "i-5-VM", MAC, "10.1.1.5")]);
    let (_dp, dp_sock, pkt0) = start_dp(&bins, &host, d, "h1", "--fabric-ip 10.0.0.1");
    let agent = start_agent(None, d, "h1", &api.base, "h1", &xs, &dp_sock, &pkt0, None);
    // The agent registers (fabric IP taken from the dataplane).
    let registered = wait_for(Duration::from_secs(10), || {
        let a = api.try_call("GET", "/vrouter/agents", None).ok()?;
        a["agents"]
            .as_array()?
            .iter()
            .any(|a| a["hostname"] == "h1" && a["fabric_ip"] == "10.0.0.1")
            .then_some(())
    });
    assert!(
        registered.is_some(),
        "agent did not register:\n{}",
        agent.log()
    );

    xs_plug(&xs, 5, VM, VMI, MAC);
    let v = wait_for(Duration::from_secs(15), || {
        vif(&dp_sock, "vif5.0").filter(|v| v["vrf_name"] == VRF)
    })
    .unwrap_or_else(|| panic!("vif5.0 not programmed:\n{}", agent.log()));
    assert_eq!(v["mac"], MAC, "{v}");
    assert_eq!(v["ip"], "10.1.1.5", "{v}");
    assert_eq!(v["type"], "Virtual", "{v}");
    // The shim has the binding and the advertised /32 with the interface's label.
    let r = wait_for(Duration::from_secs(10), || {
        routes(&api)
            .into_iter()
            .find(|r| r["prefix"] == "10.1.1.5/32" && r["host"] == "h1")
    })
    .unwrap_or_else(|| panic!("route not advertised:\n{}", agent.log()));
    assert_eq!(r["nexthop"], "10.0.0.1", "{r}");
    assert_eq!(r["vmi_uuid"], VMI, "{r}");
    let label = r["label"].as_u64().expect("label");
    let labels = vrctl_json(&dp_sock, &["mpls", "dump"]);
    let nh = labels
        .as_array()
        .and_then(|a| a.iter().find(|l| l["label"] == label))
        .unwrap_or_else(|| panic!("label {label} not in the dataplane: {labels}"))["nh"]
        .clone();
    assert_eq!(
        nh, v["nh"],
        "the advertised label points at the vif's nexthop"
    );
    // The gateway answers ping through pkt0 (ICMP echo served by the agent).
    assert!(
        ping_ok(&vm, "10.1.1.1", Duration::from_secs(10)),
        "no echo reply from the gateway through pkt0:\n{}",
        agent.log()
    );

    // DHCP through pkt0: the VM is offered exactly its configured address.
    let lease = d.join("lease.txt");
    let script = d.join("udhcpc.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$1\" in bound|renew) echo \"ip=$ip router=$router dns=$dns subnet=$subnet\" > {};; esac\nexit 0\n",
            lease.display()
        ),
    )
    .expect("script");
    sh(&format!("chmod 755 {}", script.display()));
    let (ok, out) = vm.exec_ok(&format!(
        "busybox udhcpc -i eth0 -n -q -f -t 5 -T 1 -s {}",
        script.display()
    ));
    let got = std::fs::read_to_string(&lease).unwrap_or_default();
    assert!(ok, "udhcpc failed: {out}\n{}", agent.log());
    assert_eq!(
        got.trim(),
        "ip=10.1.1.5 router=10.1.1.1 dns=10.1.1.1 subnet=255.255.255.0",
        "{out}"
    );

    // Headless: kill -9 the agent and start it again: it finds the dataplane up to date.
    drop(agent);
    let before = std::fs::metadata(d.join("agent-h1.log")).map_or(0, |m| m.len() as usize);
    let agent = start_agent(None, d, "h1", &api.base, "h1", &xs, &dp_sock, &pkt0, None);
    let new_log = || agent.log().get(before..).unwrap_or_default().to_string();
    let first = wait_for(Duration::from_secs(15), || {
        new_log()
            .lines()
            .find(|l| l.contains("reconciled:"))
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("restarted agent did not reconcile:\n{}", new_log()));
    assert!(
        first.contains("dataplane already up to date (0 adds/changes, 0 removals; 1 interfaces)"),
        "restarted agent changed the dataplane: {first}\n{}",
        new_log()
    );
    // The controller goes away: nothing changes, the VM keeps being served.
    drop(shim);
    std::thread::sleep(Duration::from_secs(2));
    assert!(vif(&dp_sock, "vif5.0").is_some(), "{}", new_log());
    assert!(
        ping_ok(&vm, "10.1.1.1", Duration::from_secs(5)),
        "{}",
        new_log()
    );
    // It comes back (same store): the agent resumes its watch and still reacts to xenstore.
    let shim = start_shim(&bins, None, &format!("127.0.0.1:{port}"), d, None);
    assert!(
        wait_for(Duration::from_secs(10), || api
            .try_call("GET", "/", None)
            .ok())
        .is_some(),
        "shim: {}",
        shim.log()
    );

    // Unplug: the vif leaves the dataplane, the binding and the route leave the shim.
    sh(&format!(
        "XENSTORED_PATH={} xenstore-rm /local/domain/0/backend/vif/5",
        xs.display()
    ));
    let gone = wait_for(Duration::from_secs(15), || {
        (vif(&dp_sock, "vif5.0").is_none()
            && !routes(&api).iter().any(|r| r["prefix"] == "10.1.1.5/32"))
        .then_some(())
    });
    assert!(gone.is_some(), "unplug not applied:\n{}", agent.log());

    // Plugged again, then unplugged while the agent is down: the restarted agent removes the
    // vif and the binding it still had at the shim (and with it the route).
    xs_plug(&xs, 5, VM, VMI, MAC);
    assert!(
        wait_for(Duration::from_secs(15), || {
            routes(&api)
                .iter()
                .any(|r| r["prefix"] == "10.1.1.5/32")
                .then_some(())
        })
        .is_some(),
        "re-plug not advertised:\n{}",
        agent.log()
    );
    drop(agent);
    sh(&format!(
        "XENSTORED_PATH={} xenstore-rm /local/domain/0/backend/vif/5",
        xs.display()
    ));
    let agent = start_agent(None, d, "h1", &api.base, "h1", &xs, &dp_sock, &pkt0, None);
    let cleaned = wait_for(Duration::from_secs(15), || {
        let a = api.try_call("GET", "/vrouter/agents", None).ok()?;
        let bound = a["agents"]
            .as_array()?
            .iter()
            .find(|a| a["hostname"] == "h1")?["bindings"]
            .as_array()?
            .len();
        (bound == 0
            && vif(&dp_sock, "vif5.0").is_none()
            && !routes(&api).iter().any(|r| r["prefix"] == "10.1.1.5/32"))
        .then_some(())
    });
    assert!(cleaned.is_some(), "stale binding kept:\n{}", agent.log());
    if std::env::var_os("VRT8_SHOW_LOGS").is_some() {
        eprintln!("{}", agent.log());
    }
}

#[test]
fn ns_controller_two_hosts_exchange_routes_and_ping() {
    let Some(bins) = setup() else { return };
    const VM1: &str = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a91";
    const VM2: &str = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a92";
    const VMI1: &str = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e61";
    const VMI2: &str = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e62";
    const MAC1: &str = "02:aa:00:00:01:02";
    const MAC2: &str = "02:aa:00:00:02:02";
    let dir = tempdir();
    let d = dir.path();
    // Underlay: a bridge in its own namespace, which also hosts the shim (10.0.0.100).
    let ul = Ns::new("two", "ul");
    let ha = Ns::new("two", "ha");
    let hb = Ns::new("two", "hb");
    sh(&format!("ip -n {} link add br0 type bridge", ul.name));
    sh(&format!("ip -n {} addr add 10.0.0.100/24 dev br0", ul.name));
    for (h, p, a) in [(&ha, "pa", "10.0.0.1"), (&hb, "pb", "10.0.0.2")] {
        sh(&format!(
            "ip link add fab0 netns {} type veth peer name {p} netns {}",
            h.name, ul.name
        ));
        sh(&format!(
            "ip -n {} link set {p} mtu 1600 master br0 up",
            ul.name
        ));
        sh(&format!("ip -n {} link set fab0 mtu 1600", h.name));
        sh(&format!("ip -n {} addr add {a}/24 dev fab0", h.name));
        sh(&format!("ip -n {} link set fab0 up", h.name));
    }
    sh(&format!("ip -n {} link set br0 up", ul.name));
    let vm1 = vm_ns("two", "vm1", &ha, "vif7.0", MAC1, "10.1.1.2");
    let vm2 = vm_ns("two", "vm2", &hb, "vif8.0", MAC2, "10.1.1.3");
    // One xenstored per host (each dom0 has its own).
    let xsa = d.join("xsa.sock");
    let xsb = d.join("xsb.sock");
    let _xsds: Vec<Proc> = [&xsa, &xsb]
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Proc::spawn(
                None,
                &format!("{} --socket {}", bins.xsd.display(), s.display()),
                &d.join(format!("xenstored{i}.log")),
                &[],
            )
        })
        .collect();
    assert!(
        wait_for(Duration::from_secs(5), || (xsa.exists() && xsb.exists())
            .then_some(()))
        .is_some()
    );
    let shim = start_shim(&bins, Some(&ul), "10.0.0.100:8082", d, Some(TOKEN));
    let api = Api {
        base: "http://10.0.0.100:8082".into(),
        ns: Some(ul.name.clone()),
        token: Some(TOKEN.into()),
    };
    assert!(
        wait_for(Duration::from_secs(10), || api
            .try_call("GET", "/", None)
            .ok())
        .is_some(),
        "shim: {}",
        shim.log()
    );
    cloud(
        &api,
        &[
            (VM1, VMI1, "i-7-VM", MAC1, "10.1.1.2"),
            (VM2, VMI2, "i-8-VM", MAC2, "10.1.1.3"),
        ],
    );
    let fab = |ip: &str| format!("--fabric fab0 --fabric-port-kind af_packet --fabric-ip {ip}");
    let (_dpa, dpa, pkta) = start_dp(&bins, &ha, d, "ha", &fab("10.0.0.1"));
    let (_dpb, dpb, pktb) = start_dp(&bins, &hb, d, "hb", &fab("10.0.0.2"));
    let aa = start_agent(
        Some(&ha),
        d,
        "ha",
        &api.base,
        "ha",
        &xsa,
        &dpa,
        &pkta,
        Some(TOKEN),
    );
    let ab = start_agent(
        Some(&hb),
        d,
        "hb",
        &api.base,
        "hb",
        &xsb,
        &dpb,
        &pktb,
        Some(TOKEN),
    );
    let logs = || format!("agent ha:\n{}\nagent hb:\n{}", aa.log(), ab.log());
    xs_plug(&xsa, 7, VM1, VMI1, MAC1);
    xs_plug(&xsb, 8, VM2, VMI2, MAC2);
    // Each host gets the other's /32 with the label the other advertised.
    for (sock, prefix, origin) in [(&dpa, "10.1.1.3/32", "hb"), (&dpb, "10.1.1.2/32", "ha")] {
        let found = wait_for(Duration::from_secs(20), || {
            let r = routes(&api)
                .into_iter()
                .find(|r| r["prefix"] == prefix && r["host"] == origin)?;
            // The remote route can reach the controller before this host's agent has bound
            // its own VM and created the VRF: an absent VRF means "not yet".
            let rt = try_vrctl_json(sock, &["route", "dump", VRF])?;
            rt.as_array()?
                .iter()
                .find(|x| x["prefix"] == prefix && x["label"] == r["label"])
                .cloned()
        });
        assert!(
            found.is_some(),
            "{prefix} from {origin} not programmed\n{}",
            logs()
        );
    }
    assert!(
        ping_ok(&vm1, "10.1.1.3", Duration::from_secs(15)),
        "vm1 cannot reach vm2 across the underlay\n{}",
        logs()
    );
    let (ok, out) = vm2.exec_ok("ping -c 3 -i 0.2 10.1.1.2");
    assert!(ok, "{out}");
    assert!(
        aa.log().contains("(ARP)"),
        "underlay MAC not learned by ARP\n{}",
        logs()
    );
    if std::env::var_os("VRT8_SHOW_LOGS").is_some() {
        eprintln!("{}", logs());
    }
}

#[test]
fn ns_file_xenstore_binds_interfaces_with_a_nic_uuid() {
    let Some(bins) = setup() else { return };
    const VM: &str = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7aa1";
    const VMI: &str = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4ea1";
    const MAC: &str = "02:aa:00:00:03:05";
    let dir = tempdir();
    let d = dir.path();
    let host = Ns::new("file", "h");
    let vm = vm_ns("file", "vm", &host, "vif9.0", MAC, "10.1.1.9");
    let xs = d.join("xs.sock");
    let _xsd = Proc::spawn(
        None,
        &format!("{} --socket {}", bins.xsd.display(), xs.display()),
        &d.join("xenstored.log"),
        &[],
    );
    assert!(wait_for(Duration::from_secs(5), || xs.exists().then_some(())).is_some());
    let (_dp, dp_sock, pkt0) = start_dp(&bins, &host, d, "f", "--fabric-ip 10.0.0.1");
    let cfg = d.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[networks]]\nname = \"net1\"\nvrf = \"{VRF}\"\nsubnet = \"10.1.1.0/24\"\n\n\
             [[interfaces]]\nname = \"web-0\"\nmac = \"{MAC}\"\nip = \"10.1.1.9\"\nnetwork = \"net1\"\n\
             dns = [\"10.1.1.53\"]\nnic_uuid = \"{VMI}\"\nvm_uuid = \"{VM}\"\n"
        ),
    )
    .expect("config");
    let agent = Proc::spawn(
        None,
        &format!(
            "{} --config {} --xenstore --xenstore-socket {} --dp-socket {} --agent-socket {} \
             --agent-local-socket {} --state-dir {} --poll-ms 50",
            env!("CARGO_BIN_EXE_vrouter-agent"),
            cfg.display(),
            xs.display(),
            dp_sock.display(),
            pkt0.display(),
            d.join("agent-pkt0.sock").display(),
            d.join("state").display()
        ),
        &d.join("agent.log"),
        &[("RUST_LOG", "info")],
    );
    // Not bound yet: nothing programmed under either name.
    std::thread::sleep(Duration::from_millis(500));
    assert!(vif(&dp_sock, "web-0").is_none() && vif(&dp_sock, "vif9.0").is_none());
    xs_plug(&xs, 9, VM, VMI, MAC);
    let v = wait_for(Duration::from_secs(15), || vif(&dp_sock, "vif9.0"))
        .unwrap_or_else(|| panic!("vif9.0 not programmed:\n{}", agent.log()));
    assert_eq!(v["mac"], MAC, "{v}");
    assert_eq!(v["ip"], "10.1.1.9", "{v}");
    assert_eq!(v["vrf_name"], VRF, "{v}");
    assert!(
        ping_ok(&vm, "10.1.1.1", Duration::from_secs(10)),
        "gateway ping through pkt0:\n{}",
        agent.log()
    );
    sh(&format!(
        "XENSTORED_PATH={} xenstore-rm /local/domain/0/backend/vif/9",
        xs.display()
    ));
    let gone = wait_for(Duration::from_secs(15), || {
        vif(&dp_sock, "vif9.0").is_none().then_some(())
    });
    assert!(gone.is_some(), "unplug not applied:\n{}", agent.log());
}
