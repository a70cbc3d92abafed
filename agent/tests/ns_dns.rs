//! DNS and DHCP names at the gateway, end to end: the shim (VMs with CloudStack instance and
//! display names), `vrouter-xenstored`, `vrouter-dp` and `vrouter-agent` in a host namespace, a
//! VM namespace on `vif5.0`, and a stub upstream resolver (Debian's `dnsmasq`) in a namespace
//! of its own that only the agent reaches (its `--dns-resolv-conf` names it). Debian's `dig`
//! and `nslookup` in the VM resolve another VM's name and address through the gateway, a name
//! only the stub knows (forwarded, then cached), get NXDOMAIN for an unknown VM and FORMERR
//! for a cut query; busybox `udhcpc` shows the host name and domain DHCP hands out.
//!
//! Needs root, `ip`, `dig`/`nslookup` (dnsutils), `dnsmasq` (dnsmasq-base), `busybox`,
//! `xenstore-write` and the daemons built next to the test binaries (see `ns_controller`).
//! Namespaces are `vrt3-d20dns-<pid>-<role>`; processes are killed by pid and namespaces
//! deleted on drop. No traffic leaves the test's namespaces.

mod common;

use common::cloud::{cloud, setup, start_dp, start_shim, vif, vm_ns, xs_plug, Api, Proc, VRF};
use common::{require, sh, wait_for, Ns};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

const VM: &str = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7d20";
const VMI: &str = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4d20";
const MAC: &str = "02:aa:00:00:20:05";
/// A VM of the network on another host: known to the shim only.
const OTHER_VM: &str = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7d21";
const OTHER_VMI: &str = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4d21";

/// The stub upstream resolver: dnsmasq answering one name, logging its queries.
fn stub_resolver(up: &Ns, dir: &Path) -> Proc {
    Proc::spawn(
        Some(up),
        "dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
         --bind-interfaces --listen-address=10.53.0.2 --user=root --pid-file= \
         --address=/outside.d20.test/192.0.2.77 --local-ttl=300 --log-queries --log-facility=-",
        &dir.join("dnsmasq.log"),
        &[],
    )
}

fn start_agent(host: &Ns, dir: &Path, api: &str, xs: &Path, dp: &Path, pkt0: &Path) -> Proc {
    Proc::spawn(
        Some(host),
        &format!(
            "{} --controller {api} --hostname h1 --xenstore --xenstore-socket {} \
             --dp-socket {} --agent-socket {} --agent-local-socket {} --state-dir {} \
             --poll-ms 50 --dns-resolv-conf {}",
            env!("CARGO_BIN_EXE_vrouter-agent"),
            xs.display(),
            dp.display(),
            pkt0.display(),
            dir.join("agent-pkt0.sock").display(),
            dir.join("state").display(),
            dir.join("resolv.conf").display(),
        ),
        &dir.join("agent.log"),
        &[("RUST_LOG", "info")],
    )
}

/// `dig +short` from the VM, retried until it prints `want` (the names reach the agent with
/// the interface's config, a little after the vif is programmed).
fn dig_until(vm: &Ns, args: &str, want: &str) -> Result<(), String> {
    let mut last = String::new();
    let got = wait_for(Duration::from_secs(20), || {
        let (_, out) = vm.exec_ok(&format!("dig +short +time=1 +tries=1 @10.1.1.1 {args}"));
        last = out.trim().to_string();
        (last == want).then_some(())
    });
    got.ok_or(format!("dig {args}: {last:?}, want {want:?}"))
}

#[test]
fn ns_dns_gateway_resolves_vm_names_forwards_the_rest_and_dhcp_names_the_vm() {
    let Some(bins) = setup() else { return };
    require(&["dig", "nslookup", "dnsmasq"]);
    let dir = common::tempdir();
    let d = dir.path();
    let host = Ns::new("d20dns", "h");
    let up = Ns::new("d20dns", "up");
    sh(&format!(
        "ip link add d20u0 netns {} type veth peer name d20u1 netns {}",
        host.name, up.name
    ));
    sh(&format!(
        "ip -n {} addr add 10.53.0.1/24 dev d20u0",
        host.name
    ));
    sh(&format!("ip -n {} link set d20u0 up", host.name));
    sh(&format!(
        "ip -n {} addr add 10.53.0.2/24 dev d20u1",
        up.name
    ));
    sh(&format!("ip -n {} link set d20u1 up", up.name));
    let stub = stub_resolver(&up, d);
    std::fs::write(d.join("resolv.conf"), "nameserver 10.53.0.2\n").expect("resolv.conf");
    let vm = vm_ns("d20dns", "vm", &host, "vif5.0", MAC, "10.1.1.5");

    let xs = d.join("xs.sock");
    let xsd = Proc::spawn(
        None,
        &format!("{} --socket {}", bins.xsd.display(), xs.display()),
        &d.join("xenstored.log"),
        &[],
    );
    let ready = wait_for(Duration::from_secs(5), || xs.exists().then_some(()));
    assert!(ready.is_some(), "xenstored: {}", xsd.log());
    let shim = start_shim(&bins, Some(&host), "127.0.0.1:8082", d, None);
    let api = Api {
        base: "http://127.0.0.1:8082".into(),
        ns: Some(host.name.clone()),
        token: None,
    };
    let up_ok = wait_for(Duration::from_secs(10), || {
        api.try_call("GET", "/", None).ok()
    });
    assert!(up_ok.is_some(), "shim: {}", shim.log());
    cloud(
        &api,
        &[
            (VM, VMI, "i-2-10-VM", MAC, "10.1.1.5"),
            (
                OTHER_VM,
                OTHER_VMI,
                "i-2-11-VM",
                "02:aa:00:00:20:06",
                "10.1.1.6",
            ),
        ],
    );
    for (vm_uuid, display) in [(VM, "web-1"), (OTHER_VM, "db-1")] {
        api.ok(
            "PUT",
            &format!("/virtual-machine/{vm_uuid}"),
            Some(&json!({"virtual-machine": {"display_name": display}})),
        );
    }
    let (_dp, dp_sock, pkt0) = start_dp(&bins, &host, d, "h1", "--fabric-ip 10.0.0.1");
    let agent = start_agent(&host, d, &api.base, &xs, &dp_sock, &pkt0);
    xs_plug(&xs, 5, VM, VMI, MAC);
    let programmed = wait_for(Duration::from_secs(20), || {
        vif(&dp_sock, "vif5.0").filter(|v| v["vrf_name"] == VRF)
    });
    assert!(
        programmed.is_some(),
        "vif5.0 not programmed:\n{}",
        agent.log()
    );

    let check = || -> Result<(), String> {
        // Another VM of the network, by display name and by instance name, and its address.
        dig_until(&vm, "db-1.cs2cloud.internal A", "10.1.1.6")?;
        dig_until(&vm, "I-2-11-VM.cs2cloud.internal A", "10.1.1.6")?;
        dig_until(&vm, "-x 10.1.1.6", "db-1.cs2cloud.internal.")?;
        // A name only the stub upstream knows: forwarded; asked twice, the stub sees it once.
        dig_until(&vm, "outside.d20.test A", "192.0.2.77")?;
        dig_until(&vm, "OUTSIDE.d20.test A", "192.0.2.77")?;
        Ok(())
    };
    if let Err(e) = check() {
        panic!("{e}\nagent:\n{}\nstub:\n{}", agent.log(), stub.log());
    }
    let asked = stub
        .log()
        .to_ascii_lowercase()
        .matches("query[a] outside.d20.test")
        .count();
    assert_eq!(
        asked,
        1,
        "the second answer comes from the cache:\n{}",
        stub.log()
    );

    // nslookup (another client) and an unknown VM name.
    let (ok, out) = vm.exec_ok("nslookup -timeout=2 web-1.cs2cloud.internal 10.1.1.1");
    assert!(ok && out.contains("Address: 10.1.1.5"), "{out}");
    let (_, out) = vm.exec_ok("dig +time=2 +tries=2 @10.1.1.1 nope.cs2cloud.internal A");
    assert!(out.contains("status: NXDOMAIN"), "{out}");
    assert!(
        out.contains(" aa"),
        "authoritative for its own domain: {out}"
    );

    // A query cut in the middle of its question: FORMERR (rcode 1) with the query's id.
    let cut = d.join("cut-query.sh");
    std::fs::write(
        &cut,
        "#!/bin/bash\nexec 3<>/dev/udp/10.1.1.1/53\n\
         printf '\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x05outsi' >&3\n\
         timeout 3 dd bs=512 count=1 <&3 2>/dev/null | od -An -tx1 -N4\n",
    )
    .expect("script");
    sh(&format!("chmod 755 {}", cut.display()));
    // Retried: one datagram each way, nothing resends it under a loaded machine.
    let mut out = String::new();
    for _ in 0..3 {
        out = vm.exec_ok(&cut.display().to_string()).1;
        if !out.trim().is_empty() {
            break;
        }
    }
    let bytes: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(bytes.first().copied(), Some("12"), "id kept: {out:?}");
    assert_eq!(bytes.get(1).copied(), Some("34"), "id kept: {out:?}");
    let rcode = bytes
        .get(3)
        .and_then(|b| u8::from_str_radix(b, 16).ok())
        .map(|b| b & 0x0f);
    assert_eq!(rcode, Some(1), "FORMERR: {out:?}\n{}", agent.log());

    // DHCP hands out the VM's name and the network's domain (options 12 and 15).
    let lease = d.join("lease.txt");
    let script = d.join("udhcpc.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$1\" in bound|renew) echo \"ip=$ip hostname=$hostname domain=$domain dns=$dns\" > {};; esac\nexit 0\n",
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
        "ip=10.1.1.5 hostname=web-1 domain=cs2cloud.internal dns=10.1.1.1",
        "{out}"
    );
}
