//! The devcloud's wiring: an underlay switch (a bridge in its own namespace) joining the hosts,
//! the controller and the gateway; each VM a namespace whose `eth0` is one end of a veth and
//! whose other end, in the host's namespace, is named like a Xen netback device (`vif<d>.0`).

use crate::sys::{add_netns, ip, run_in, Result};
use crate::topology::{Plan, Vm, PREFIX};

/// The underlay namespace.
pub fn underlay_ns() -> String {
    format!("{PREFIX}-underlay")
}

/// The controller namespace.
pub fn ctl_ns() -> String {
    format!("{PREFIX}-ctl")
}

/// Attaches namespace `ns` to the underlay bridge with `dev` = `addr`/24.
pub(crate) fn attach(ns: &str, dev: &str, addr: &str, port: &str) -> Result<()> {
    let ul = underlay_ns();
    ip(&[
        "link", "add", dev, "netns", ns, "type", "veth", "peer", "name", port, "netns", &ul,
    ])?;
    run_in(&ul, &["ip", "link", "set", port, "master", "br0", "up"])?;
    run_in(
        ns,
        &["ip", "addr", "add", &format!("{addr}/24"), "dev", dev],
    )?;
    run_in(ns, &["ip", "link", "set", dev, "up"])?;
    Ok(())
}

/// Builds the underlay and attaches controller, gateway and hosts.
pub fn build_underlay(plan: &Plan) -> Result<()> {
    let ul = underlay_ns();
    add_netns(&ul)?;
    run_in(&ul, &["ip", "link", "add", "br0", "type", "bridge"])?;
    run_in(&ul, &["ip", "link", "set", "br0", "up"])?;
    add_netns(&ctl_ns())?;
    attach(&ctl_ns(), "eth1", &plan.controller_ip, "p-ctl")?;
    add_netns(&plan.gateway.name)?;
    attach(&plan.gateway.name, "eth1", &plan.gateway.fabric_ip, "p-gw")?;
    for h in &plan.hosts {
        add_netns(&h.name)?;
        attach(&h.name, "eth1", &h.fabric_ip, &format!("p-h{}", h.index))?;
    }
    Ok(())
}

/// Creates a VM's namespace (with its first Nic) and the Nic's veth: `eth<dev>` inside, the
/// vif in the host's namespace (down until bound).
pub fn build_vm(plan: &Plan, vm: &Vm, mac: &str) -> Result<()> {
    let host = &plan.host_of(vm).name;
    let ns = vm.netns();
    if !crate::sys::namespaces().contains(&ns) {
        add_netns(&ns)?;
    }
    let eth = vm.eth();
    ip(&[
        "link",
        "add",
        &eth,
        "netns",
        &ns,
        "type",
        "veth",
        "peer",
        "name",
        &vm.vif(),
        "netns",
        host,
    ])?;
    run_in(&ns, &["ip", "link", "set", &eth, "address", mac])?;
    run_in(&ns, &["ip", "link", "set", &eth, "up"])?;
    run_in(host, &["ip", "link", "set", &vm.vif(), "up"])?;
    Ok(())
}
