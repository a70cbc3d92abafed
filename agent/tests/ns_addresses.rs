//! Multiple addresses per interface (issue 20), through the real shim, xenstored, dataplanes
//! and agents in namespaces:
//!
//! * a secondary IP (an `instance-ip` with `instance_ip_secondary`, CloudStack's
//!   `addIpToNic`) is reachable from another VM and may be used as a source: nothing is dropped
//!   as `Invalid Source`, while an address the VM was not given still is;
//! * a keepalived-style VIP (an allowed address pair on two VMs on two hosts): the member that
//!   sends a gratuitous ARP (busybox `arping -U`) gets the VIP's traffic, from a third VM on
//!   either host, and the VIP moves back and forth.
//!
//! Needs root, `ip`, `ping`, `busybox`, `xenstore-write` and the daemons built (see
//! `ns_controller.rs`). Namespaces `vrt3-m20addr-<pid>-<role>` and `vrt3-m20vip-<pid>-<role>`.

mod common;

use common::cloud::{cloud, ping_ok, routes, vm_ns, xs_plug, VRF};
use common::hosts::{spawn_in_ns, Hosts};
use common::{wait_for, Ns};
use serde_json::json;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const VM1: &str = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a01";
const VM2: &str = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a02";
const VM3: &str = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a03";
const VMI1: &str = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e01";
const VMI2: &str = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e02";
const VMI3: &str = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e03";
const MAC1: &str = "02:20:00:00:00:01";
const MAC2: &str = "02:20:00:00:00:02";
const MAC3: &str = "02:20:00:00:00:03";
const VIP: &str = "10.1.1.100";
const SECONDARY: &str = "10.1.1.50";

/// A secondary instance IP of VMI `vmi` (interface `ifname` of VM `name`), as CloudStack's
/// `addIpToNic` creates it.
fn add_secondary_ip(h: &Hosts, name: &str, addr: &str) {
    let ifname = format!("{name}-0");
    h.api.ok(
        "POST",
        "/instance-ips",
        Some(&json!({"instance-ip": {
            "name": format!("{ifname}-{addr}"), "fq_name": [format!("{ifname}-{addr}")],
            "instance_ip_address": addr, "instance_ip_secondary": true,
            "virtual_network_refs": [{"to": ["default-domain", "default-project", "net1"]}],
            "virtual_machine_interface_refs": [{"to": [name, ifname]}]
        }})),
    );
}

#[test]
fn ns_secondary_ip_is_reachable_and_may_be_a_source_while_other_addresses_are_dropped() {
    let Some(h) = Hosts::start("m20addr", 1) else {
        return;
    };
    let vm1 = vm_ns(
        "m20addr",
        "vm1",
        &h.hosts[0].ns,
        "vif1.0",
        MAC1,
        "10.1.1.11",
    );
    let vm2 = vm_ns(
        "m20addr",
        "vm2",
        &h.hosts[0].ns,
        "vif2.0",
        MAC2,
        "10.1.1.12",
    );
    cloud(
        &h.api,
        &[
            (VM1, VMI1, "i-1-VM", MAC1, "10.1.1.11"),
            (VM2, VMI2, "i-2-VM", MAC2, "10.1.1.12"),
        ],
    );
    add_secondary_ip(&h, "i-1-VM", SECONDARY);
    xs_plug(h.xs(0), 1, VM1, VMI1, MAC1);
    xs_plug(h.xs(0), 2, VM2, VMI2, MAC2);
    // The VM configures its secondary address as CloudStack tells the user to.
    vm1.exec(&format!("ip addr add {SECONDARY}/24 dev eth0"));
    let label = wait_for(Duration::from_secs(20), || h.label_of(0, "vif1.0"));
    let label = label.unwrap_or_else(|| panic!("vif1.0 not programmed\n{}", h.logs()));
    let routed = wait_for(Duration::from_secs(20), || {
        let r = h.route(0, &format!("{SECONDARY}/32"))?;
        let ad = routes(&h.api)
            .into_iter()
            .find(|r| r["prefix"] == format!("{SECONDARY}/32"))?;
        Some((r, ad))
    });
    let (r, ad) = routed.unwrap_or_else(|| panic!("secondary not routed\n{}", h.logs()));
    assert_eq!(r["label"], json!(null), "a local route: {r}");
    assert_eq!(
        ad["label"], label,
        "advertised with the interface's label: {ad}"
    );
    assert_eq!(ad["vmi_uuid"], VMI1, "{ad}");

    assert!(
        ping_ok(&vm2, SECONDARY, Duration::from_secs(10)),
        "vm2 cannot reach vm1's secondary address\n{}",
        h.logs()
    );
    let (ok, out) = vm1.exec_ok(&format!("ping -c 3 -i 0.2 -W 2 -I {SECONDARY} 10.1.1.12"));
    assert!(ok, "vm1 from its secondary address: {out}");
    assert_eq!(
        h.drops(0, "Invalid Source"),
        0,
        "nothing dropped as spoofed"
    );

    // An address the VM was not given is still spoofing: the check can fail.
    vm1.exec("ip addr add 10.1.1.77/24 dev eth0");
    let (ok, out) = vm1.exec_ok("ping -c 2 -i 0.2 -W 1 -I 10.1.1.77 10.1.1.12");
    assert!(!ok, "an address not given must not pass: {out}");
    assert!(
        h.drops(0, "Invalid Source") >= 2,
        "dropped as Invalid Source"
    );
}

/// Answers every TCP connection on port 7000 of namespace `ns` with `name`, until `stop`.
fn whoami_server(ns: &Ns, name: &'static str, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    spawn_in_ns(&ns.name, move || {
        let l = TcpListener::bind(("0.0.0.0", 7000)).expect("listen");
        l.set_nonblocking(true).expect("nonblocking");
        let t0 = Instant::now();
        while !stop.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(300) {
            match l.accept() {
                Ok((mut s, _)) => {
                    let _ = s.write_all(name.as_bytes());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    })
}

/// Who answers on `VIP:7000` from namespace `ns` (`None`: nobody within 1 s).
fn who_has_vip(ns: &Ns) -> Option<String> {
    spawn_in_ns(&ns.name, || {
        let addr: SocketAddr = format!("{VIP}:7000").parse().ok()?;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    })
    .join()
    .ok()
    .flatten()
}

/// keepalived's moves: `from` gives the VIP up, `to` takes it and announces it.
fn move_vip(from: Option<&Ns>, to: &Ns) {
    if let Some(f) = from {
        f.exec(&format!("ip addr del {VIP}/32 dev eth0"));
    }
    to.exec(&format!("ip addr add {VIP}/32 dev eth0"));
    to.exec(&format!("busybox arping -U -c 1 -I eth0 {VIP}"));
}

/// Waits until both hosts route the VIP to `owner` (host index, its vif, its label): a local
/// route to the vif's nexthop on its host, the owner's label on the other. The time it took
/// (polled every 10 ms).
fn routes_follow(h: &Hosts, owner: usize, vif: &str, label: Option<u64>) -> Duration {
    let t0 = Instant::now();
    let prefix = format!("{VIP}/32");
    let nh = h.vif_nh(owner, vif);
    let done = wait_for(Duration::from_secs(15), || {
        let here = h.route(owner, &prefix)?;
        let there = h.route(1 - owner, &prefix)?;
        (here["nh"] == nh && here["label"].is_null() && there["label"].as_u64() == label)
            .then_some(())
    });
    assert!(
        done.is_some(),
        "the VIP's routes did not follow\n{}",
        h.logs()
    );
    t0.elapsed()
}

/// Waits until `want` answers on the VIP from every VM in `from`; the time it took.
fn follows(h: &Hosts, from: &[&Ns], want: &str) -> Duration {
    let t0 = Instant::now();
    let done = wait_for(Duration::from_secs(15), || {
        from.iter()
            .all(|vm| who_has_vip(vm).as_deref() == Some(want))
            .then_some(())
    });
    assert!(
        done.is_some(),
        "the VIP did not move to {want}\n{}",
        h.logs()
    );
    t0.elapsed()
}

#[test]
fn ns_vip_follows_the_member_that_sent_a_gratuitous_arp_across_hosts() {
    let Some(mut h) = Hosts::start("m20vip", 2) else {
        return;
    };
    // Members vm1 on h0 and vm2 on h1; vm3 on h1 uses the VIP.
    let vm1 = vm_ns("m20vip", "vm1", &h.hosts[0].ns, "vif1.0", MAC1, "10.1.1.11");
    let vm2 = vm_ns("m20vip", "vm2", &h.hosts[1].ns, "vif2.0", MAC2, "10.1.1.12");
    let vm3 = vm_ns("m20vip", "vm3", &h.hosts[1].ns, "vif3.0", MAC3, "10.1.1.13");
    cloud(
        &h.api,
        &[
            (VM1, VMI1, "i-1-VM", MAC1, "10.1.1.11"),
            (VM2, VMI2, "i-2-VM", MAC2, "10.1.1.12"),
            (VM3, VMI3, "i-3-VM", MAC3, "10.1.1.13"),
        ],
    );
    for vmi in [VMI1, VMI2] {
        h.api.ok(
            "PUT",
            &format!("/virtual-machine-interface/{vmi}"),
            Some(&json!({"virtual-machine-interface": {
                "virtual_machine_interface_allowed_address_pairs": {"allowed_address_pair": [
                    {"ip": {"ip_prefix": VIP, "ip_prefix_len": 32}, "address_mode": "active-standby"}
                ]}
            }})),
        );
    }
    xs_plug(h.xs(0), 1, VM1, VMI1, MAC1);
    xs_plug(h.xs(1), 2, VM2, VMI2, MAC2);
    xs_plug(h.xs(1), 3, VM3, VMI3, MAC3);
    assert!(
        ping_ok(&vm3, "10.1.1.11", Duration::from_secs(30)),
        "vm3 cannot reach vm1 across hosts\n{}",
        h.logs()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let servers = [
        whoami_server(&vm1, "vm1", stop.clone()),
        whoami_server(&vm2, "vm2", stop.clone()),
    ];
    let labels = [h.label_of(0, "vif1.0"), h.label_of(1, "vif2.0")];

    move_vip(None, &vm1);
    let r1 = routes_follow(&h, 0, "vif1.0", labels[0]);
    let t1 = follows(&h, &[&vm3, &vm2], "vm1");
    move_vip(Some(&vm1), &vm2);
    let r2 = routes_follow(&h, 1, "vif2.0", labels[1]);
    let t2 = follows(&h, &[&vm3, &vm1], "vm2");
    // h0 yielded to h1's later announcement: its route is h1's tunnel with vm2's label.
    let r = h.route(0, &format!("{VIP}/32")).expect("h0 routes the VIP");
    assert_eq!(r["label"].as_u64(), labels[1], "{r}");
    move_vip(Some(&vm2), &vm1);
    let r3 = routes_follow(&h, 0, "vif1.0", labels[0]);
    let t3 = follows(&h, &[&vm3, &vm2], "vm1");
    eprintln!(
        "VIP routes on both hosts followed the gratuitous ARP in {r1:?} (first), {r2:?} \
         (h0 -> h1), {r3:?} (h1 -> h0); the third VM reached the new owner {t1:?}, {t2:?}, \
         {t3:?} later (1 s connect timeouts)"
    );
    let owners: Vec<_> = routes(&h.api)
        .into_iter()
        .filter(|r| r["prefix"] == format!("{VIP}/32") && r["vrf"] == VRF)
        .collect();
    assert_eq!(owners.len(), 1, "one host advertises the VIP: {owners:?}");
    assert_eq!(owners[0]["host"], "h0", "{owners:?}");
    assert_eq!(
        [h.label_of(0, "vif1.0"), h.label_of(1, "vif2.0")],
        labels,
        "no label moved"
    );
    for i in 0..2 {
        assert_eq!(
            h.drops(i, "Invalid Source"),
            0,
            "host {i}: VIP traffic not dropped"
        );
    }
    // The owner's agent restarts (kill -9): the VIP stays where the dataplane routes it.
    let before = h.restart_agent(0);
    let adopted = wait_for(Duration::from_secs(20), || {
        let log = h.hosts[0].agent.log();
        let new = log.get(before..).unwrap_or_default().to_string();
        (new.contains("stays with vif1.0 (dataplane)") && new.contains("reconciled:")).then_some(())
    });
    assert!(
        adopted.is_some(),
        "the restarted agent did not keep the VIP\n{}",
        h.logs()
    );
    std::thread::sleep(Duration::from_secs(1));
    routes_follow(&h, 0, "vif1.0", labels[0]);
    assert_eq!(
        who_has_vip(&vm3).as_deref(),
        Some("vm1"),
        "after the restart"
    );
    stop.store(true, Ordering::Relaxed);
    for s in servers {
        s.join().expect("server");
    }
}
