//! CloudStack's own appliances (issue 19): the system VM stand-in (Management Nic on
//! ip-fabric, Control Nic on link-local) and the VPC's internal load balancer (Debian's
//! `haproxy` at the VIP on tier 1, Control Nic on link-local, backends `busybox httpd` on tier
//! 1, a client on tier 2). Plugged like any VM (namespaces, the hotplug hook); addresses are
//! static (CloudStack's own, the shim holds them).
//!
//! The report lines: the vif types `vrctl` shows; the controller's namespace (the management
//! server's place on the underlay) and another host reach the system VM's Management address
//! over the underlay; dom0 reaches its Control address (ping and TCP 3922, CloudStack's ssh
//! port), the system VM reaches dom0's 169.254.0.1, and a guest VM reaches neither dom0's 169.254.0.1 nor that address; the tier-2 client
//! gets answers from both backends through the VIP; dom0 reaches the internal LB's Control
//! address on TCP 3922.

use super::{bound, hotplug, output_in, ping, vrctl_json, Checks};
use crate::net::ctl_ns;
use crate::provision::system_vms::{
    nics, SysNic, ILB_CONTROL_IP, SSVM_CONTROL_IP, SSVM_MGMT_IP, TIERS, VIP,
};
use crate::sys::{run_in, DevcloudError, Result};
use crate::topology::{Plan, RUN_DIR};
use crate::{progress, start, wait_for, Opts, State};
use std::path::Path;
use std::time::{Duration, Instant};

/// The internal LB's haproxy configuration: round robin over both backends.
const HAPROXY_CFG: &str = "global\n  maxconn 256\n\
defaults\n  mode http\n  timeout connect 3s\n  timeout client 10s\n  timeout server 10s\n\
frontend vip\n  bind 10.20.1.10:80\n  default_backend tier1\n\
backend tier1\n  balance roundrobin\n  server b1 10.20.1.21:80\n  server b2 10.20.1.22:80\n";

/// Hot-plugs every Nic of the scenario, addresses the namespaces and starts haproxy, the
/// backends and the stand-in ssh listeners (port 3922).
pub(super) fn plug(o: &Opts, plan: &Plan, st: &mut State) -> Result<()> {
    let t = Instant::now();
    let all = nics(plan);
    let db = Path::new(RUN_DIR).join("xe.db");
    let mut lines = std::fs::read_to_string(&db).unwrap_or_default();
    for n in &all {
        let vm = &n.vm;
        lines.push_str(&format!(
            "{} cloudstack-nic-id {}\n{} cloudstack-vm-id {}\n",
            vm.xapi_vif_uuid, vm.nic_uuid, vm.xapi_vif_uuid, vm.uuid
        ));
    }
    std::fs::write(&db, lines).map_err(|e| DevcloudError::Io("xe.db".into(), e))?;
    for n in &all {
        crate::net::build_vm(plan, &n.vm, &n.mac)?;
        hotplug(o, plan, &n.vm, &n.mac)?;
        let addr = format!("{}/{}", n.ip, n.plen);
        run_in(
            &n.vm.netns(),
            &["ip", "addr", "add", &addr, "dev", &n.vm.eth()],
        )?;
    }
    for n in &all {
        let h = plan.host_of(&n.vm);
        wait_for(
            &format!("{} bound on {}", n.vm.vif(), h.name),
            Duration::from_secs(30),
            || bound(o, h, &n.vm.vif()),
        )?;
    }
    for (n, gw) in [
        (2, "10.20.1.1"),
        (4, "10.20.1.1"),
        (5, "10.20.1.1"),
        (6, "10.20.2.1"),
    ] {
        let v = &all[n].vm;
        run_in(
            &v.netns(),
            &["ip", "route", "add", "default", "via", gw, "dev", "eth0"],
        )?;
    }
    start_services(st, &all)?;
    progress(&format!(
        "system VM s-90-VM and the VPC's internal LB b-91-VM (haproxy) with their backends, plugged in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// haproxy at the VIP, `busybox httpd` on each backend (answering its name), and a listener on
/// TCP 3922 in the system VM and the internal LB answering an ssh-like banner.
fn start_services(st: &mut State, all: &[SysNic]) -> Result<()> {
    let dir = Path::new(RUN_DIR).join("system-vms");
    std::fs::create_dir_all(&dir).map_err(|e| DevcloudError::Io(dir.display().to_string(), e))?;
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(&cfg, HAPROXY_CFG).map_err(|e| DevcloudError::Io("haproxy.cfg".into(), e))?;
    let ilb = all[2].vm.netns();
    start(
        st,
        "ilb-haproxy",
        &ilb,
        vec![
            "haproxy".into(),
            "-db".into(),
            "-f".into(),
            cfg.display().to_string(),
        ],
        &[],
    )?;
    for (i, name) in [(4, "backend-1"), (5, "backend-2")] {
        let root = dir.join(name);
        std::fs::create_dir_all(&root).map_err(|e| DevcloudError::Io(name.into(), e))?;
        std::fs::write(root.join("index.html"), format!("{name}\n"))
            .map_err(|e| DevcloudError::Io(name.into(), e))?;
        let argv = ["busybox", "httpd", "-f", "-p", "80", "-h"];
        let mut argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        argv.push(root.display().to_string());
        start(st, &format!("ilb-{name}"), &all[i].vm.netns(), argv, &[])?;
    }
    for (i, who) in [(0, "system-vm"), (2, "internal-lb")] {
        let banner = dir.join(format!("banner-{who}.sh"));
        super::write_exec(
            &banner,
            &format!("#!/bin/sh\necho SSH-2.0-devcloud-{who}\n"),
        )?;
        let argv = ["busybox", "nc", "-ll", "-p", "3922", "-e"];
        let mut argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        argv.push(banner.display().to_string());
        start(st, &format!("{who}-3922"), &all[i].vm.netns(), argv, &[])?;
    }
    Ok(())
}

/// Whether `ns` gets the banner of `who` from `ip`:3922 within 15 s.
fn banner(ns: &str, ip: &str, who: &str) -> (bool, String) {
    let want = format!("SSH-2.0-devcloud-{who}");
    let mut last = String::new();
    let ok = wait_for(&format!("{ip}:3922"), Duration::from_secs(15), || {
        last = output_in(ns, &format!("busybox nc -w 3 {ip} 3922 </dev/null"));
        last.contains(&want)
    })
    .is_ok();
    (ok, last.trim().to_string())
}

/// The report's lines for issue 19.
pub(super) fn check_system_vms(checks: &mut Checks, o: &Opts, plan: &Plan) {
    let all = nics(plan);
    let h1 = &plan.hosts[0];
    let types: Vec<String> = vrctl_json(o, h1, &["vif", "list"])
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter(|v| {
            let name = v["name"].as_str().unwrap_or("");
            name == "xapi0" || name == all[0].vm.vif() || name == all[1].vm.vif()
        })
        .map(|v| {
            format!(
                "{} {} vrf {}",
                v["name"].as_str().unwrap_or("?"),
                v["type"].as_str().unwrap_or("?"),
                v["vrf"]
            )
        })
        .collect();
    let want = ["Virtual(ip-fabric)", "Virtual(link-local)", "XenLL"];
    checks.line(
        types.len() == 3 && want.iter().all(|w| types.iter().any(|t| t.contains(w))),
        format!("system VM s-90-VM on {}: Management Nic on ip-fabric, Control Nic on link-local, dom0's link-local tap (vrctl vif)", h1.name),
        types.join(", "),
    );
    let other = plan.hosts.get(1).map_or(ctl_ns(), |h| h.name.clone());
    for from in [ctl_ns(), other] {
        let (ok, out) = ping(&from, SSVM_MGMT_IP, 3);
        checks.line(
            ok,
            format!("{from} reaches the system VM's Management address {SSVM_MGMT_IP} over the underlay (ip-fabric, no tunnel)"),
            out,
        );
    }
    let (ok, out) = ping(&h1.name, SSVM_CONTROL_IP, 3);
    checks.line(
        ok,
        format!(
            "dom0 of {} pings the system VM's Control address {SSVM_CONTROL_IP} (xapi0)",
            h1.name
        ),
        out,
    );
    if let Some(control) = all.iter().find(|n| n.ip == SSVM_CONTROL_IP) {
        let (ok, out) = ping(&control.vm.netns(), "169.254.0.1", 3);
        checks.line(
            ok,
            format!(
                "the system VM pings dom0 of {} (169.254.0.1) from its Control Nic",
                h1.name
            ),
            out,
        );
    }
    let (ok, out) = banner(&h1.name, SSVM_CONTROL_IP, "system-vm");
    checks.line(
        ok,
        format!(
            "dom0 of {} reaches {SSVM_CONTROL_IP}:3922 (the ssh port)",
            h1.name
        ),
        out,
    );
    check_link_local_isolation(checks, plan, h1.index);
    check_internal_lb(checks, &all);
    let (ok, out) = banner(&h1.name, ILB_CONTROL_IP, "internal-lb");
    checks.line(
        ok,
        format!(
            "dom0 of {} reaches the internal LB's Control address {ILB_CONTROL_IP}:3922",
            h1.name
        ),
        out,
    );
}

/// A guest VM on the system VM's host reaches neither dom0's 169.254.0.1 nor the system VM's
/// Control address (its gateway answers, so the check can fail).
fn check_link_local_isolation(checks: &mut Checks, plan: &Plan, host: usize) {
    let Some(g) = plan.vms.iter().find(|v| v.host == host) else {
        return;
    };
    let ns = g.netns();
    let gw = &plan.networks[g.network].gateway;
    let (gw_ok, _) = ping(&ns, gw, 1);
    let reached: Vec<&str> = ["169.254.0.1", SSVM_CONTROL_IP]
        .into_iter()
        .filter(|dst| ping(&ns, dst, 2).0)
        .collect();
    checks.line(
        gw_ok && reached.is_empty(),
        format!("guest VM {} reaches neither 169.254.0.1 nor {SSVM_CONTROL_IP} (its gateway {gw} answers)", g.name),
        if reached.is_empty() { String::new() } else { format!("reached {reached:?}") },
    );
}

/// The tier-2 client fetches the VIP 8 times: answers from both backends.
fn check_internal_lb(checks: &mut Checks, all: &[SysNic]) {
    let client = all[6].vm.netns();
    let mut answers = Vec::new();
    let _ = wait_for("the VIP", Duration::from_secs(20), || {
        run_in(
            &client,
            &["curl", "-s", "-m", "5", &format!("http://{VIP}/")],
        )
        .is_ok()
    });
    for _ in 0..8 {
        let a = run_in(
            &client,
            &["curl", "-s", "-m", "5", &format!("http://{VIP}/")],
        )
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("({e})"));
        answers.push(a);
    }
    let both = ["backend-1", "backend-2"]
        .iter()
        .all(|b| answers.iter().any(|a| a == b));
    checks.line(
        both,
        format!(
            "VPC internal LB: {} (host {}) on {} gets answers from both backends through VIP {VIP}",
            all[6].vm.name, all[6].vm.host, TIERS[1].0
        ),
        answers.join(" "),
    );
}
