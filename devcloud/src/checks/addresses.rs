//! The secondary-IP check (issue 20): a second instance IP for a VM's Nic, created through the
//! VNC API the way CloudStack's `addIpToNic` does (`instance_ip_secondary`, the address
//! allocated by the shim), configured in the VM; the other VM pings it across hosts, and the VM
//! sends from it, with nothing counted as `Invalid Source` on its host.

use super::{drop_count, has_route, ping, vm_ip, Checks};
use crate::provision::{Provisioned, Vnc};
use crate::sys::{run_in, DevcloudError, Result};
use crate::topology::{Plan, Vm};
use crate::{wait_for, Opts, TOKEN};
use serde_json::json;
use std::time::Duration;

/// Creates a secondary instance IP for `vm`'s Nic; the address the shim allocated. The shim is
/// reachable only from the controller's namespace.
fn add_ip_to_nic(plan: &Plan, vm: &Vm) -> Result<String> {
    crate::in_netns(&crate::net::ctl_ns(), || vnc_add_ip_to_nic(plan, vm))
}

fn vnc_add_ip_to_nic(plan: &Plan, vm: &Vm) -> Result<String> {
    let vnc = Vnc::new(&format!("http://{}:8082", plan.controller_ip), TOKEN);
    let net = &plan.networks[vm.network].name;
    let vmi_name = format!("{}-{}", vm.name, vm.dev);
    let name = format!("{vmi_name}-secondary");
    let iip = vnc.post(
        "/instance-ips",
        json!({"instance-ip": {"name": name, "fq_name": [name], "instance_ip_secondary": true,
            "virtual_network_refs": [{"to": ["default-domain", "default-project", net]}],
            "virtual_machine_interface_refs": [{"to": [vm.name, vmi_name]}]}}),
    )?;
    let uuid = iip["instance-ip"]["uuid"]
        .as_str()
        .ok_or_else(|| DevcloudError::Step("instance-ip without uuid".into()))?;
    let got = vnc.get(&format!("/instance-ip/{uuid}"))?;
    got["instance-ip"]["instance_ip_address"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| DevcloudError::Step(format!("instance-ip {uuid} has no address")))
}

/// One report line: `a`'s secondary IP reachable from `b` (another host) and usable as a source.
pub(super) fn check_secondary_ip(
    checks: &mut Checks,
    o: &Opts,
    plan: &Plan,
    p: &Provisioned,
    (a, b): (&Vm, &Vm),
) {
    let what = format!(
        "secondary IP (addIpToNic) of {} reachable from {} on host {} and usable as a source",
        a.name, b.name, b.host
    );
    match secondary_ip(o, plan, p, (a, b)) {
        Ok((ok, detail)) => checks.line(ok, what, detail),
        Err(e) => checks.line(false, what, e.to_string()),
    }
}

fn secondary_ip(
    o: &Opts,
    plan: &Plan,
    p: &Provisioned,
    (a, b): (&Vm, &Vm),
) -> Result<(bool, String)> {
    let (ha, hb) = (plan.host_of(a), plan.host_of(b));
    let vrf = p
        .vrfs
        .get(a.network)
        .ok_or_else(|| DevcloudError::Step("no VRF for the network".into()))?;
    let before = drop_count(o, ha, "Invalid Source");
    let ip = add_ip_to_nic(plan, a)?;
    run_in(
        &a.netns(),
        &["ip", "addr", "add", &format!("{ip}/32"), "dev", "eth0"],
    )?;
    wait_for(
        &format!("{ip}/32 routed on {}", hb.name),
        Duration::from_secs(15),
        || has_route(o, hb, vrf, &ip).unwrap_or(false),
    )?;
    let (to, d_to) = ping(&b.netns(), &ip, 3);
    let from = run_in(
        &a.netns(),
        &[
            "ping",
            "-I",
            &ip,
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "2",
            "-q",
            vm_ip(p, b),
        ],
    )
    .is_ok();
    let after = drop_count(o, ha, "Invalid Source");
    let detail = format!(
        "{ip}: {} -> {ip}: {d_to}; from {ip} -> {}: {}; `Invalid Source` on {} {before} -> {after}",
        b.name,
        b.name,
        if from { "answered" } else { "no answer" },
        ha.name
    );
    Ok((to && from && after == before, detail))
}
