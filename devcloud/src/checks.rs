//! Host bring-up (per host: the dev xenstored, `vrouter-dp`, `vrouter-agent`), the simulated Xen
//! hotplug of every Nic through the real hook, DHCP in the VMs, and the checks of the report.

use crate::provision::Provisioned;
use crate::sys::{self, run_in, DevcloudError, Result};
use crate::topology::{Host, Plan, Vm, RUN_DIR};
use crate::{bin, progress, start, wait_for, Opts, State, TOKEN};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod addresses;
mod bgp;
mod dns;
mod migration;
mod restart;
mod snat;
mod system_vms;

fn host_dir(h: &Host) -> PathBuf {
    Path::new(RUN_DIR).join(&h.name)
}

fn xs_sock(h: &Host) -> PathBuf {
    host_dir(h).join("xenstored.sock")
}

fn dp_sock(h: &Host) -> PathBuf {
    host_dir(h).join("dp.sock")
}

/// A stand-in for XAPI's `xe` (the project's `xen/scripts/xe-standin`): answers
/// `vif-param-get` from a table, as XenServer would from the VIF's other-config CloudStack set.
const FAKE_XE: &str = include_str!("../../xen/scripts/xe-standin");

/// The DHCP client's hook script: configures the interface and records the lease.
const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    echo "ip=$ip mask=$mask router=$router dns=$dns mtu=$mtu lease=$lease" > "$LEASE_FILE" ;;
esac
exit 0
"#;

fn write_exec(path: &Path, body: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, body).map_err(|e| DevcloudError::Io(path.display().to_string(), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| DevcloudError::Io(path.display().to_string(), e))
}

/// Starts the vRouter stack on one host.
fn start_host(o: &Opts, plan: &Plan, st: &mut State, h: &Host) -> Result<()> {
    let dir = host_dir(h);
    std::fs::create_dir_all(&dir).map_err(|e| DevcloudError::Io(dir.display().to_string(), e))?;
    start(
        st,
        &format!("{}-xenstored", h.name),
        &h.name,
        vec![
            bin(o, "vrouter-xenstored"),
            "--socket".into(),
            xs_sock(h).display().to_string(),
        ],
        &[],
    )?;
    start(
        st,
        &format!("{}-dp", h.name),
        &h.name,
        vec![
            bin(o, "vrouter-dp"),
            "--fabric".into(),
            "eth1".into(),
            "--fabric-ip".into(),
            h.fabric_ip.clone(),
            "--ctl-socket".into(),
            dp_sock(h).display().to_string(),
            "--agent-socket".into(),
            dir.join("pkt0.sock").display().to_string(),
            "--port-kind".into(),
            "af_packet".into(),
            "--fabric-port-kind".into(),
            "af_packet".into(),
        ],
        &[],
    )?;
    wait_for(
        &format!("vrouter-dp on {}", h.name),
        Duration::from_secs(15),
        || dp_sock(h).exists(),
    )?;
    dns::start_stub(st, h)?;
    let cfg = dir.join("agent.toml");
    std::fs::write(
        &cfg,
        format!("[underlay]\nfabric_ip = \"{}\"\n", h.fabric_ip),
    )
    .map_err(|e| DevcloudError::Io(cfg.display().to_string(), e))?;
    let xs = xs_sock(h).display().to_string();
    start(
        st,
        &format!("{}-agent", h.name),
        &h.name,
        agent_argv(o, plan, h),
        &[("XENSTORED_PATH", xs.as_str())],
    )?;
    Ok(())
}

/// The agent's command line on host `h` (its config file written by [`start_host`]); run with
/// `XENSTORED_PATH` = its xenstored socket.
fn agent_argv(o: &Opts, plan: &Plan, h: &Host) -> Vec<String> {
    let dir = host_dir(h);
    vec![
        bin(o, "vrouter-agent"),
        "--config".into(),
        dir.join("agent.toml").display().to_string(),
        "--dp-socket".into(),
        dp_sock(h).display().to_string(),
        "--controller".into(),
        format!("http://{}:8082", plan.controller_ip),
        "--token".into(),
        TOKEN.into(),
        "--hostname".into(),
        h.name.clone(),
        "--xenstore".into(),
        "--xenstore-socket".into(),
        xs_sock(h).display().to_string(),
        "--agent-socket".into(),
        dir.join("pkt0.sock").display().to_string(),
        "--agent-local-socket".into(),
        dir.join("agent-pkt0.sock").display().to_string(),
        "--state-dir".into(),
        dir.display().to_string(),
        "--dns-resolv-conf".into(),
        dns::resolv_conf(h).display().to_string(),
    ]
}

/// What XenServer does when a VM with this Nic starts: the netback backend entries, the domain
/// keys, the xapi private dir; then the vif hotplug hook (ours, unmodified) runs.
fn hotplug(o: &Opts, plan: &Plan, vm: &Vm, mac: &str) -> Result<()> {
    let h = plan.host_of(vm);
    let xs = xs_sock(h).display().to_string();
    let (d, n) = (vm.index, vm.dev);
    let be = format!("/local/domain/0/backend/vif/{d}/{n}");
    let pairs: Vec<(String, String)> = vec![
        (format!("/local/domain/{d}/name"), vm.name.clone()),
        (format!("/local/domain/{d}/vm"), format!("/vm/{}", vm.uuid)),
        (
            format!("/xapi/{d}/private/vif/{n}/vif-uuid"),
            vm.xapi_vif_uuid.clone(),
        ),
        (
            format!("{be}/frontend"),
            format!("/local/domain/{d}/device/vif/{n}"),
        ),
        (format!("{be}/frontend-id"), d.to_string()),
        (format!("{be}/handle"), n.to_string()),
        (format!("{be}/mac"), mac.into()),
        (format!("{be}/script"), "/etc/xensource/scripts/vif".into()),
        (format!("{be}/online"), "1".into()),
        (format!("{be}/state"), "4".into()),
        (format!("{be}/hotplug-status"), "connected".into()),
    ];
    let mut argv = vec![
        "env".to_string(),
        format!("XENSTORED_PATH={xs}"),
        "xenstore-write".into(),
    ];
    for (k, v) in pairs {
        argv.push(k);
        argv.push(v);
    }
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    run_in(&h.name, &refs)?;
    run_hook(o, plan, vm, "online")
}

/// Runs the vif hotplug hook for `vm`'s Nic with `action` (`online`, `remove`) in its host, as
/// XenServer's vif script does, with the stand-in `xe` first on PATH.
fn run_hook(o: &Opts, plan: &Plan, vm: &Vm, action: &str) -> Result<()> {
    let h = plan.host_of(vm);
    let xs = xs_sock(h).display().to_string();
    let hook = o.hook.display().to_string();
    let path = format!(
        "{}:{}",
        Path::new(RUN_DIR).join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let db = format!(
        "XE_STANDIN_DB={}",
        Path::new(RUN_DIR).join("xe.db").display()
    );
    run_in(
        &h.name,
        &[
            "env",
            &format!("PATH={path}"),
            &format!("XENSTORED_PATH={xs}"),
            &db,
            &hook,
            "-action",
            action,
            "-vifuuid",
            &vm.xapi_vif_uuid,
            "-vmuuid",
            &vm.uuid,
        ],
    )?;
    Ok(())
}

fn vrctl_json(o: &Opts, h: &Host, args: &[&str]) -> Result<serde_json::Value> {
    let sock = dp_sock(h).display().to_string();
    let mut argv = vec![bin(o, "vrctl"), "--socket".into(), sock, "--json".into()];
    argv.extend(args.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = sys::run(&refs)?;
    serde_json::from_str(&out).map_err(|e| DevcloudError::Step(format!("vrctl {args:?}: {e}")))
}

fn vrctl_text(o: &Opts, h: &Host, args: &[&str]) -> String {
    let sock = dp_sock(h).display().to_string();
    let mut argv = vec![bin(o, "vrctl"), "--socket".into(), sock];
    argv.extend(args.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    sys::run(&refs).unwrap_or_else(|e| format!("({e})\n"))
}

/// Hotplugs (and DHCP clients) run this many at a time: a real host starts VMs side by side.
const PLUG_WORKERS: usize = 16;

/// The first error of results run side by side.
fn first_error<R>(results: Vec<Result<R>>) -> Result<Vec<R>> {
    results.into_iter().collect()
}

/// Waits until every vif of `vms` is in its host's dataplane: one `vrctl vif list` per host and
/// round, whatever the number of VMs.
fn wait_all_bound<'a>(o: &Opts, plan: &Plan, vms: impl Iterator<Item = &'a Vm>) -> Result<()> {
    let mut left: Vec<&Vm> = vms.collect();
    let until = Instant::now() + Duration::from_secs(60);
    while !left.is_empty() {
        let mut lists = std::collections::HashMap::new();
        left.retain(|vm| {
            let h = plan.host_of(vm);
            let list = lists
                .entry(h.name.clone())
                .or_insert_with(|| vrctl_json(o, h, &["vif", "list"]).map(|v| v.to_string()));
            !matches!(list, Ok(l) if l.contains(&format!("\"{}\"", vm.vif())))
        });
        if left.is_empty() {
            break;
        }
        if Instant::now() >= until {
            let names: Vec<String> = left
                .iter()
                .map(|vm| format!("{} on {}", vm.vif(), plan.host_of(vm).name))
                .collect();
            return Err(DevcloudError::Step(format!(
                "timed out after 60 s waiting for {} vif(s) to be bound: {}",
                names.len(),
                names.join(", ")
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn bound(o: &Opts, h: &Host, vif: &str) -> bool {
    vrctl_json(o, h, &["vif", "list"])
        .map(|v| v.to_string().contains(&format!("\"{vif}\"")))
        .unwrap_or(false)
}

fn dhcp(vm: &Vm) -> Result<String> {
    let lease = Path::new(RUN_DIR).join(format!("lease-{}", vm.name));
    let _ = std::fs::remove_file(&lease);
    let script = Path::new(RUN_DIR)
        .join("bin")
        .join("udhcpc.script")
        .display()
        .to_string();
    let ns = vm.netns();
    let lf = format!("LEASE_FILE={}", lease.display());
    run_in(
        &ns,
        &[
            "env", &lf, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "10", "-T", "1",
            "-O", "mtu", "-s", &script,
        ],
    )?;
    std::fs::read_to_string(&lease).map_err(|e| DevcloudError::Io(lease.display().to_string(), e))
}

/// Runs a shell command line in namespace `ns`, returning stdout and stderr whatever it exits with.
fn output_in(ns: &str, cmd: &str) -> String {
    std::process::Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", &format!("{cmd} 2>&1")])
        .stdin(std::process::Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn ping(ns: &str, dst: &str, count: u32) -> (bool, String) {
    match run_in(
        ns,
        &[
            "ping",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "2",
            "-q",
            dst,
        ],
    ) {
        Ok(out) => (
            true,
            out.lines()
                .filter(|l| l.contains("packet") || l.contains("rtt"))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        Err(e) => (false, e.to_string()),
    }
}

/// Brings up every host, plugs every VM, and runs the checks; prints the report.
pub fn run_all(o: &Opts, plan: &Plan, st: &mut State, p: &Provisioned) -> Result<()> {
    let bin_dir = Path::new(RUN_DIR).join("bin");
    std::fs::create_dir_all(&bin_dir)
        .map_err(|e| DevcloudError::Io(bin_dir.display().to_string(), e))?;
    write_exec(&bin_dir.join("xe"), FAKE_XE)?;
    write_exec(&bin_dir.join("udhcpc.script"), UDHCPC_SCRIPT)?;
    let mut db = String::new();
    let nat_nics = plan.appliances.iter().flat_map(|a| [&a.left, &a.right]);
    for vm in plan
        .vms
        .iter()
        .chain(std::iter::once(&plan.outside_vm))
        .chain(nat_nics)
    {
        db.push_str(&format!(
            "{} cloudstack-nic-id {}\n{} cloudstack-vm-id {}\n",
            vm.xapi_vif_uuid, vm.nic_uuid, vm.xapi_vif_uuid, vm.uuid
        ));
    }
    std::fs::write(Path::new(RUN_DIR).join("xe.db"), db)
        .map_err(|e| DevcloudError::Io("xe.db".into(), e))?;

    progress(&format!(
        "hosts: vrouter-xenstored, vrouter-dp, vrouter-agent on {} hosts and the gateway",
        plan.hosts.len()
    ));
    for h in plan.all_hosts() {
        start_host(o, plan, st, h)?;
    }

    progress(&format!(
        "VMs: {} namespaces with vifs, Xen hotplug through xen/scripts/vif-vrouter",
        plan.vms.len() + 1
    ));
    let macs: Vec<(&Vm, &str)> = plan
        .vms
        .iter()
        .zip(p.vms.iter().map(|(m, _)| m.as_str()))
        .chain(std::iter::once((&plan.outside_vm, p.outside_mac.as_str())))
        .collect();
    // The VMs' namespaces and veths first, then their hotplugs (as Xen does: the backend
    // device exists before the hook runs), so the bind time below is the hotplugs' and the
    // agents' alone.
    let t = Instant::now();
    first_error(sys::parallel(&macs, PLUG_WORKERS, |(vm, mac)| {
        crate::net::build_vm(plan, vm, mac)
    }))?;
    let built = t.elapsed();
    let t = Instant::now();
    first_error(sys::parallel(&macs, PLUG_WORKERS, |(vm, mac)| {
        hotplug(o, plan, vm, mac)
    }))?;
    let plugged = t.elapsed();
    wait_all_bound(o, plan, macs.iter().map(|(vm, _)| *vm))?;
    let bound = t.elapsed();
    progress(&format!(
        "agents bound every vif by its CloudStack Nic UUID {:.1} s after the first hotplug, \
         {:.1} s after the last ({} VMs, {PLUG_WORKERS} at a time: namespaces and veths in {:.1} s, \
         hotplugs in {:.1} s)",
        bound.as_secs_f64(),
        (bound - plugged).as_secs_f64(),
        macs.len(),
        built.as_secs_f64(),
        plugged.as_secs_f64(),
    ));

    progress("DHCP: busybox udhcpc in every VM");
    let leases = sys::parallel(&macs, PLUG_WORKERS, |(vm, _)| dhcp(vm));
    for (i, ((vm, _), lease)) in macs.iter().zip(leases).enumerate() {
        let lease = lease?;
        let want = if i < p.vms.len() {
            p.vms[i].1.clone()
        } else {
            plan.outside_ip.clone()
        };
        if !lease.contains(&format!("ip={want} ")) {
            return Err(DevcloudError::Step(format!(
                "{} got a lease {lease:?}, expected {want}",
                vm.name
            )));
        }
    }
    progress("every VM has the address the controller allocated");
    snat::plug_appliances(o, plan, p)?;
    system_vms::plug(o, plan, st)?;
    report(o, plan, st, p)
}

/// The report's check lines as they are printed, and the checks that failed (any failure fails
/// `up`).
#[derive(Debug, Default)]
struct Checks {
    failures: Vec<String>,
}

impl Checks {
    /// Prints one check line, with `detail` after a dash when there is one.
    fn line(&mut self, ok: bool, what: String, detail: String) {
        println!(
            "  [{}] {what}{}",
            if ok { " ok " } else { "FAIL" },
            if detail.is_empty() {
                String::new()
            } else {
                format!(" — {detail}")
            }
        );
        if !ok {
            self.failures.push(what);
        }
    }

    /// The report's last line, or the error naming every failed check.
    fn finish(self) -> Result<()> {
        if self.failures.is_empty() {
            println!("\nall checks passed");
            Ok(())
        } else {
            Err(DevcloudError::Step(format!(
                "{} check(s) failed: {}",
                self.failures.len(),
                self.failures.join("; ")
            )))
        }
    }
}

/// The address the controller allocated to `vm` (plan VMs are numbered from 1).
fn vm_ip<'a>(p: &'a Provisioned, vm: &Vm) -> &'a str {
    &p.vms[vm.index - 1].1
}

/// Whether `ip`/32 is in VRF `vrf` on host `h`, per `vrctl route dump`.
fn has_route(o: &Opts, h: &Host, vrf: &str, ip: &str) -> Result<bool> {
    vrctl_json(o, h, &["route", "dump", vrf])
        .map(|v| v.to_string().contains(&format!("\"{ip}/32\"")))
}

/// The drop counter `reason` on host `h` (0 when vrctl cannot tell), to see a check's drops
/// as its difference.
fn drop_count(o: &Opts, h: &Host, reason: &str) -> u64 {
    vrctl_json(o, h, &["drops"])
        .ok()
        .and_then(|v| v.get(reason).and_then(|n| n.as_u64()))
        .unwrap_or(0)
}

/// Runs the checks in report order, then shows what vrctl holds on every host.
fn report(o: &Opts, plan: &Plan, st: &mut State, p: &Provisioned) -> Result<()> {
    let mut checks = Checks::default();
    println!("\nDevcloud report");
    let same_net: Vec<&Vm> = plan.vms.iter().filter(|v| v.network == 0).collect();
    // Two VMs of guest-a on different hosts: the traffic between them crosses the underlay.
    let across_hosts = same_net
        .first()
        .zip(same_net.iter().find(|v| v.host != same_net[0].host));
    if let Some((a, b)) = across_hosts {
        check_same_network(&mut checks, o, plan, p, a, b);
    }
    // Policy acl-a-b (<> icmp pass, guest-a and guest-b): ICMP leaks across, TCP is dropped by
    // the flow policy; guest-c has no policy and stays isolated.
    let guest_b_vms: Vec<&Vm> = plan.vms.iter().filter(|v| v.network == 1).collect();
    let policy_peer = guest_b_vms
        .iter()
        .find(|v| v.host != same_net[0].host)
        .or(guest_b_vms.first());
    if let (Some(a), Some(b)) = (same_net.first(), policy_peer) {
        check_policy(&mut checks, o, plan, p, a, b);
    }
    let guest_c_vms: Vec<&Vm> = plan.vms.iter().filter(|v| v.network == 2).collect();
    if let (Some(a), Some(c)) = (same_net.first(), guest_c_vms.first()) {
        check_isolation(&mut checks, o, plan, p, a, c);
    }
    // What a first-hop router owes its tenants: ICMP errors (traceroute, path MTU) and
    // anti-spoofing, seen from inside the VMs.
    if let Some((a, b)) = across_hosts {
        check_traceroute(&mut checks, plan, p, a, b);
        check_path_mtu(&mut checks, p, a, b);
        check_anti_spoofing(&mut checks, o, plan, p, a, b);
        // Guest services of a DomainRouter (issue 20): a secondary IP, live migration.
        addresses::check_secondary_ip(&mut checks, o, plan, p, (a, b));
        // DNS at the gateway: the network's VMs by name, the rest forwarded (issue 20).
        dns::check_dns(&mut checks, plan, p, (a, b));
    }
    if let Some(fip) = &p.fip {
        check_floating_ip(&mut checks, plan, fip);
    }
    // Source NAT through the NAT instance, its scale-out and the failover (issue 18).
    snat::check_snat(&mut checks, o, plan, st, p);
    // CloudStack's own appliances: a system VM and the VPC's internal LB (issue 19).
    system_vms::check_system_vms(&mut checks, o, plan);
    // Live migration of guest-a's VM on another host, there and back (issue 20).
    if let Some((a, b)) = across_hosts {
        let third = plan
            .hosts
            .iter()
            .map(|h| h.index)
            .find(|&i| i != a.host && i != b.host);
        migration::check_migration(&mut checks, o, plan, p, (b, a, third.unwrap_or(a.host)));
    }
    // Last: every agent restarted under traffic must change nothing (what vrctl then shows is
    // what the restarted agents hold).
    if let Some(ab) = across_hosts {
        restart::check_rolling_restart(&mut checks, o, plan, st, p, (*ab.0, *ab.1));
    }
    // The gateway as an RFC 4364 peer (issue 17); after the others, which its routes must
    // not change.
    bgp::check_bgp(&mut checks, o, plan, st, p);
    show_vrctl(o, plan, p);
    checks.finish()
}

/// Ping, then TCP, from `a` to `b` of the same network on another host; the underlay port of
/// A's host is captured during the ping to show where the packets went.
fn check_same_network(checks: &mut Checks, o: &Opts, plan: &Plan, p: &Provisioned, a: &Vm, b: &Vm) {
    let cap = Path::new(RUN_DIR).join("underlay.pcap");
    let _ = std::fs::remove_file(&cap);
    let port = format!("p-h{}", a.host);
    let capture = start_capture(&port, &cap);
    std::thread::sleep(Duration::from_millis(1500));
    let (ok, d) = ping(&a.netns(), vm_ip(p, b), 5);
    checks.line(
        ok,
        format!(
            "ping {} (host {}) -> {} (host {}), same network",
            a.name, a.host, b.name, b.host
        ),
        d,
    );
    if let Ok(mut c) = capture {
        let _ = c.wait();
    }
    let decoded = decode_capture(&cap);
    let rows: Vec<&str> = decoded.lines().filter(|l| !l.trim().is_empty()).collect();
    let ok = rows
        .iter()
        .any(|r| r.contains(vm_ip(p, a)) && r.contains(vm_ip(p, b)));
    checks.line(ok, format!("underlay capture on {port} decoded by tshark (outer,inner src; outer,inner dst; udp dport; label; bottom-of-stack; icmp type):"), String::new());
    for r in rows.iter().take(4) {
        println!("         {r}");
    }
    check_trace(checks, o, plan, p, (a, b), &rows);
    check_iperf(checks, p, a, b);
}

/// `vrctl trace` on A's host for a ping from `a` to `b`: the tunnel and label it predicts must
/// be the ones tshark saw on the wire (`rows`, as [`decode_capture`] prints them).
fn check_trace(
    checks: &mut Checks,
    o: &Opts,
    plan: &Plan,
    p: &Provisioned,
    (a, b): (&Vm, &Vm),
    rows: &[&str],
) {
    let (ip_a, ip_b) = (vm_ip(p, a), vm_ip(p, b));
    let out = vrctl_text(o, plan.host_of(a), &["trace", &a.vif(), "--dst", ip_b]);
    let traced = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("mpls label "))
        .and_then(|r| r.split(' ').next())
        .map(str::to_string);
    // outer src, inner src, outer dst, inner dst, udp port, label, bottom, icmp type
    let on_wire = rows.iter().find_map(|r| {
        let f: Vec<&str> = r.split(',').collect();
        (f.len() >= 6 && f[1] == ip_a && f[3] == ip_b).then(|| f[5].to_string())
    });
    let tunnel = format!(
        "ipv4 {} -> {} ",
        plan.host_of(a).fabric_ip,
        plan.host_of(b).fabric_ip
    );
    let ok = traced.is_some() && traced == on_wire && out.contains(&tunnel);
    let sent = out
        .lines()
        .find(|l| l.starts_with("sent on") || l.starts_with("dropped"))
        .unwrap_or("no verdict");
    checks.line(
        ok,
        format!(
            "vrctl trace {} --dst {ip_b} on {}: the tunnel and label it predicts are the ones on the wire",
            a.vif(),
            plan.host_of(a).name
        ),
        format!(
            "{sent} label {} to {}; tshark saw label {}",
            traced.as_deref().unwrap_or("none"),
            plan.host_of(b).fabric_ip,
            on_wire.as_deref().unwrap_or("none")
        ),
    );
}

/// Starts tshark on underlay port `port`: the first 4 overlay packets (MPLSoUDP or GRE),
/// written to `cap`, for at most 8 s.
fn start_capture(port: &str, cap: &Path) -> std::io::Result<std::process::Child> {
    let ul = crate::net::underlay_ns();
    std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ul,
            "timeout",
            "8",
            "tshark",
            "-q",
            "-i",
            port,
            "-f",
            "udp port 6635 or ip proto 47",
            "-c",
            "4",
            "-w",
        ])
        .arg(cap)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
}

/// The capture's packets decoded by tshark, one comma-separated row each: outer and inner
/// addresses, UDP port, MPLS label and bottom-of-stack, ICMP type. Empty when tshark fails.
fn decode_capture(cap: &Path) -> String {
    sys::run(&[
        "tshark",
        "-r",
        &cap.display().to_string(),
        "-T",
        "fields",
        "-E",
        "separator=,",
        "-e",
        "ip.src",
        "-e",
        "ip.dst",
        "-e",
        "udp.dstport",
        "-e",
        "mpls.label",
        "-e",
        "mpls.bottom",
        "-e",
        "icmp.type",
    ])
    .unwrap_or_default()
}

/// A 2 s iperf3 TCP run from `a` to `b`, with the receiver's summary line as the detail.
fn check_iperf(checks: &mut Checks, p: &Provisioned, a: &Vm, b: &Vm) {
    let server = run_in(&b.netns(), &["iperf3", "-s", "-D", "-1", "-p", "5201"]);
    let tcp = server.and_then(|_| {
        std::thread::sleep(Duration::from_millis(300));
        run_in(
            &a.netns(),
            &[
                "timeout",
                "20",
                "iperf3",
                "-c",
                vm_ip(p, b),
                "-t",
                "2",
                "-p",
                "5201",
            ],
        )
    });
    match tcp {
        Ok(out) => checks.line(
            true,
            "TCP (iperf3, 2 s) across hosts".into(),
            format!(
                "{}, retransmits {}",
                out.lines()
                    .rev()
                    .find(|l| l.contains("receiver"))
                    .unwrap_or("")
                    .trim(),
                iperf_retransmits(&out).map_or_else(|| "?".to_string(), |n| n.to_string())
            ),
        ),
        Err(e) => checks.line(
            false,
            "TCP (iperf3, 2 s) across hosts".into(),
            e.to_string(),
        ),
    }
}

/// The sender's TCP retransmit count from iperf3's summary (the field before `sender`).
fn iperf_retransmits(out: &str) -> Option<u64> {
    let line = out
        .lines()
        .rev()
        .find(|l| l.trim_end().ends_with("sender"))?;
    let mut fields = line.split_whitespace().rev();
    fields.next();
    fields.next()?.parse().ok()
}

/// The policy between guest-a's `a` and guest-b's `b`: B's route leaked into A's VRF, ICMP
/// passes, TCP is dropped by the flow policy and counted on A's host.
fn check_policy(checks: &mut Checks, o: &Opts, plan: &Plan, p: &Provisioned, a: &Vm, b: &Vm) {
    let ha = plan.host_of(a);
    let b_ip = vm_ip(p, b);
    let vrf_a = p.vrfs.first().cloned().unwrap_or_default();
    checks.line(
        has_route(o, ha, &vrf_a, b_ip).unwrap_or(false),
        format!(
            "route leak: {b_ip} ({}, guest-b) is in guest-a's VRF on {} while {} permits it",
            b.name,
            ha.name,
            crate::provision::POLICY
        ),
        String::new(),
    );
    let (ok, d) = ping(&a.netns(), b_ip, 3);
    checks.line(
        ok,
        format!(
            "ping {} (guest-a, host {}) -> {} (guest-b, host {}): policy {} permits ICMP",
            a.name,
            a.host,
            b.name,
            b.host,
            crate::provision::POLICY
        ),
        d,
    );
    let before = drop_count(o, ha, "Flow Action Drop");
    let tcp = run_in(
        &a.netns(),
        &["timeout", "5", "busybox", "nc", "-w", "2", b_ip, "22"],
    );
    let after = drop_count(o, ha, "Flow Action Drop");
    checks.line(
        tcp.is_err() && after > before,
        format!(
            "TCP {} (guest-a) -> {} (guest-b) :22: the policy does not permit TCP, dropped",
            a.name, b.name
        ),
        format!(
            "{} `Flow Action Drop` on {} ({before} -> {after})",
            after.saturating_sub(before),
            ha.name
        ),
    );
}

/// guest-a's `a` and guest-c's `c` share no policy: no route to C in A's VRF, and neither ping
/// nor TCP gets through.
fn check_isolation(checks: &mut Checks, o: &Opts, plan: &Plan, p: &Provisioned, a: &Vm, c: &Vm) {
    let c_ip = vm_ip(p, c);
    let ha = plan.host_of(a);
    let vrf_a = p.vrfs.first().cloned().unwrap_or_default();
    // When vrctl cannot tell, count the route as there: isolation is not proven.
    let routed = has_route(o, ha, &vrf_a, c_ip).unwrap_or(true);
    let (ok, d) = ping(&a.netns(), c_ip, 2);
    checks.line(
        !ok && !routed,
        format!(
            "ping {} (guest-a, host {}) -> {} (guest-c, host {}): no policy, no route, isolated",
            a.name, a.host, c.name, c.host
        ),
        if ok { d } else { String::new() },
    );
    let tcp = run_in(
        &a.netns(),
        &["timeout", "5", "busybox", "nc", "-w", "2", c_ip, "22"],
    );
    checks.line(
        tcp.is_err(),
        format!("TCP {} (guest-a) -> {} (guest-c): isolated", a.name, c.name),
        String::new(),
    );
}

/// Traceroute from `a` to `b`: the vRouter must answer TTL expiry as the gateway, so the hops
/// are the gateway, then B.
fn check_traceroute(checks: &mut Checks, plan: &Plan, p: &Provisioned, a: &Vm, b: &Vm) {
    let dst = vm_ip(p, b);
    let gw = &plan.networks[a.network].gateway;
    let out = output_in(
        &a.netns(),
        &format!("busybox traceroute -I -n -q 1 -w 2 -m 4 {dst}"),
    );
    let hops = traceroute_hops(&out);
    checks.line(
        hops.first() == Some(gw) && hops.last().map(String::as_str) == Some(dst),
        format!(
            "traceroute {} -> {}: the vRouter answers TTL expiry from the gateway",
            a.name, b.name
        ),
        format!("hops {}", hops.join(" ")),
    );
}

/// The hop addresses of `traceroute -n` output (the second field of each numbered line).
fn traceroute_hops(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| {
            l.trim_start()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
        .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
        .collect()
}

/// A 1500-byte ping with DF from `a` to `b` does not fit the encapsulation over the 1500-byte
/// underlay: the vRouter must answer ICMP fragmentation needed with the MTU that fits.
fn check_path_mtu(checks: &mut Checks, p: &Provisioned, a: &Vm, b: &Vm) {
    let dst = vm_ip(p, b);
    let out = output_in(&a.netns(), &format!("ping -M do -s 1472 -c 2 -W 2 {dst}"));
    let mtu = reported_mtu(&out);
    checks.line(
        mtu.is_some(),
        format!("path MTU: 1500-byte DF ping {} -> {} over the 1500-byte underlay gets ICMP fragmentation needed", a.name, b.name),
        mtu.map(|m| format!("mtu {m}")).unwrap_or_else(|| out.lines().last().unwrap_or("").to_string()),
    );
}

/// The MTU ping reports after its first "mtu": iputils prints "Frag needed and DF set
/// (mtu = N)", then "message too long, mtu=N".
fn reported_mtu(out: &str) -> Option<String> {
    out.find("mtu")
        .map(|i| {
            out[i + 3..]
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .filter(|m| !m.is_empty())
}

/// `a` sending from an address it does not own (to `b`) must be dropped and counted as
/// `Invalid Source` on A's host.
fn check_anti_spoofing(
    checks: &mut Checks,
    o: &Opts,
    plan: &Plan,
    p: &Provisioned,
    a: &Vm,
    b: &Vm,
) {
    let ha = plan.host_of(a);
    let before = drop_count(o, ha, "Invalid Source");
    let _ = output_in(&a.netns(), "ip addr add 10.1.1.250/32 dev eth0");
    let ok = run_in(
        &a.netns(),
        &[
            "ping",
            "-I",
            "10.1.1.250",
            "-c",
            "2",
            "-W",
            "1",
            "-q",
            vm_ip(p, b),
        ],
    )
    .is_ok();
    let _ = output_in(&a.netns(), "ip addr del 10.1.1.250/32 dev eth0");
    let after = drop_count(o, ha, "Invalid Source");
    checks.line(
        !ok && after > before,
        format!(
            "anti-spoofing: {} sending from 10.1.1.250 (not its address) is dropped",
            a.name
        ),
        format!(
            "{} `Invalid Source` on {} ({before} -> {after})",
            after.saturating_sub(before),
            ha.name
        ),
    );
}

/// The first VM's floating IP answers ping from the router VM on the public network.
fn check_floating_ip(checks: &mut Checks, plan: &Plan, fip: &str) {
    let (ok, d) = ping(&plan.outside_vm.netns(), fip, 3);
    checks.line(
        ok,
        format!(
            "floating IP {fip} of {} reachable from the gateway's public network",
            plan.vms[0].name
        ),
        d,
    );
}

/// What vrctl shows on every host: the VRFs, the first guest VRF's routes on host 1, and the
/// floating IPs where there are any.
fn show_vrctl(o: &Opts, plan: &Plan, p: &Provisioned) {
    for h in plan.all_hosts() {
        println!("\nWhat vrctl shows on {}:", h.name);
        print!("{}", vrctl_text(o, h, &["vrf", "list"]));
        if h.index == 1 {
            if let Some(vrf) = p.vrfs.first() {
                print!("{}", vrctl_text(o, h, &["route", "dump", vrf]));
            }
        }
        let fips = vrctl_text(o, h, &["fip", "list"]);
        if fips.lines().count() > 4 {
            print!("{fips}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::iperf_retransmits;

    #[test]
    fn tcp_check_reads_the_senders_retransmit_count() {
        // iperf3 3.x summary, as printed by the client.
        let out = "- - - - - - - - - - - - - - - - - - - - - - - - -\n\
[ ID] Interval           Transfer     Bitrate         Retr\n\
[  5]   0.00-2.00   sec   352 MBytes  1.48 Gbits/sec  40321             sender\n\
[  5]   0.00-2.00   sec   350 MBytes  1.47 Gbits/sec                  receiver\n";
        assert_eq!(iperf_retransmits(out), Some(40321));
        assert_eq!(iperf_retransmits("no summary"), None);
    }
}
