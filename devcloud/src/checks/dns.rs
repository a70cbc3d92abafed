//! The DNS check (issue 20): a VM asks its gateway, as CloudStack's router used to answer, for
//! another VM of its network by `<instance name>.<network domain>` (the default
//! `cs<account>cloud.internal`), for that VM's reverse name, for a name in the domain that is no
//! VM (NXDOMAIN), and for a name only the host's resolver knows: each host's agent forwards to
//! a stub `dnsmasq` on the loopback of its host namespace (`--dns-resolv-conf`), which stands
//! for dom0's resolver, so nothing leaves the devcloud.

use super::{host_dir, output_in, vm_ip, Checks};
use crate::provision::Provisioned;
use crate::sys::{DevcloudError, Result};
use crate::topology::{Host, Plan, Vm};
use crate::{start, State};
use std::path::PathBuf;

/// The name the stub resolver answers, and its address.
const OUTSIDE: (&str, &str) = ("outside.devcloud.test", "192.0.2.53");

/// The resolver file the agent of `h` forwards with.
pub(super) fn resolv_conf(h: &Host) -> PathBuf {
    host_dir(h).join("resolv.conf")
}

/// Writes `h`'s resolver file and starts its stub resolver (when `dnsmasq` is installed; the
/// forwarding line of the report says so otherwise).
pub(super) fn start_stub(st: &mut State, h: &Host) -> Result<()> {
    let f = resolv_conf(h);
    std::fs::write(&f, "nameserver 127.0.0.1\n")
        .map_err(|e| DevcloudError::Io(f.display().to_string(), e))?;
    let Some(dnsmasq) = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        return Ok(());
    };
    let argv = [
        dnsmasq,
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--listen-address=127.0.0.1",
        "--user=root",
        "--pid-file=",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--address=/{}/{}", OUTSIDE.0, OUTSIDE.1)])
    .collect();
    start(st, &format!("{}-dns-stub", h.name), &h.name, argv, &[])?;
    Ok(())
}

/// `dig +short` from `vm` to its gateway, retried a few times (the names reach the agent a
/// little after the interface).
fn dig(plan: &Plan, vm: &Vm, args: &str, want: &str) -> (bool, String) {
    let gw = &plan.networks[vm.network].gateway;
    let mut last = String::new();
    for _ in 0..10 {
        last = output_in(
            &vm.netns(),
            &format!("dig +short +time=1 +tries=1 @{gw} {args}"),
        )
        .trim()
        .to_string();
        if last == want {
            return (true, format!("{args} -> {last}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    (false, format!("{args} -> {last:?}, want {want:?}"))
}

/// The report's DNS lines, asked from `a` about `b` (same network, another host).
pub(super) fn check_dns(checks: &mut Checks, plan: &Plan, p: &Provisioned, (a, b): (&Vm, &Vm)) {
    let domain = "cs2cloud.internal";
    let name = format!("{}.{domain}", b.name.to_ascii_lowercase());
    let ip = vm_ip(p, b);
    let (ok_a, d_a) = dig(plan, a, &format!("{name} A"), ip);
    let (ok_ptr, d_ptr) = dig(plan, a, &format!("-x {ip}"), &format!("{name}."));
    checks.line(
        ok_a && ok_ptr,
        format!(
            "DNS at the gateway: {} resolves {} (host {}) and its address",
            a.name, b.name, b.host
        ),
        format!("{d_a}; {d_ptr}"),
    );
    let gw = &plan.networks[a.network].gateway;
    let out = output_in(
        &a.netns(),
        &format!("dig +time=2 +tries=2 @{gw} no-such-vm.{domain} A"),
    );
    checks.line(
        out.contains("status: NXDOMAIN"),
        format!("DNS: an unknown name in {domain} is NXDOMAIN"),
        out.lines()
            .find(|l| l.contains("status:"))
            .unwrap_or("no answer")
            .trim()
            .to_string(),
    );
    let (ok, d) = dig(plan, a, &format!("{} A", OUTSIDE.0), OUTSIDE.1);
    checks.line(
        ok,
        "DNS: other names forwarded to the host's resolver (a stub dnsmasq)".into(),
        d,
    );
}
