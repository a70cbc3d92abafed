//! Source NAT through the NAT service instance (issue 18). guest-nat's VMs have no floating IP;
//! the policy `snat-guest-nat` applies the instance `nat-si` between guest-nat and the public
//! network, so every host's guest-nat VRF routes 0.0.0.0/0 to the appliances' left Nics (one
//! ECMP composite for two appliances). Each appliance is a VM namespace with a left Nic on
//! guest-nat and a right Nic on the public network, forwarding, with nftables masquerade out
//! its right Nic and new connections from the public side dropped, as a NAT gateway does.
//!
//! The report lines: a guest-nat VM pings and opens TCP to the outside (the router VM
//! r-1-VM); a burst of TCP connections from every guest-nat VM completes and is spread over
//! both appliances, each connection translated by exactly one (a connection split across
//! appliances is reset by the other one's masquerade and does not complete); one appliance
//! stops and its vifs are unplugged as XenServer does, and new connections all go through the
//! survivor within 5 s; a capture on the outside shows only the appliances' public addresses,
//! never a guest-nat address; and the outside cannot reach guest-nat's private addresses.

use super::{bound, hotplug, output_in, ping, run_hook, vm_ip, vrctl_json, xs_sock, Checks};
use crate::provision::snat::ApplianceNics;
use crate::provision::Provisioned;
use crate::sys::{self, run_in, DevcloudError, Result};
use crate::topology::{Appliance, Host, Plan, Vm, RUN_DIR, SNAT_NETWORK};
use crate::{progress, start, wait_for, Opts, State};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

/// The port the outside listens on (a busybox `nc` accepting and closing each connection).
const OUTSIDE_PORT: &str = "8080";

/// TCP connections of the scale-out burst, over all guest-nat VMs.
const BURST: usize = 100;

/// The burst stops opening connections after this long (each one is bounded by 3 s).
const BURST_LIMIT_S: u64 = 60;

/// New connections must all go through the surviving appliance this soon after the other stops.
const FAILOVER_LIMIT: Duration = Duration::from_secs(5);

/// Connections per guest-nat VM in each batch of the failover probe.
const FAILOVER_BATCH: usize = 5;

/// The appliance's nftables ruleset: masquerade out the right Nic (its counter counts the
/// connections it translated: NAT rules see a connection's first packet only), and no new
/// connection in from the public side (a NAT gateway, not a router into the guest network).
const NAT_RULES: &str = "table ip nat {
  chain post { type nat hook postrouting priority 100; oifname \"eth2\" counter masquerade; }
  chain inbound { type filter hook forward priority 0; policy accept; iifname \"eth2\" ct state new counter drop; }
}
";

fn step(msg: String) -> DevcloudError {
    DevcloudError::Step(msg)
}

/// The public network's gateway (`.1` of its subnet), where an appliance's default route goes.
fn public_gateway(plan: &Plan) -> String {
    let prefix = plan.public_subnet.split('/').next().unwrap_or_default();
    format!("{}.1", prefix.rsplit_once('.').map_or(prefix, |x| x.0))
}

/// guest-nat's VRF name.
fn snat_vrf(plan: &Plan) -> String {
    format!(
        "default-domain:default-project:{}",
        plan.networks[SNAT_NETWORK].name
    )
}

/// Starts every NAT appliance: its namespace and both Nics hot-plugged like any VM's, static
/// addresses (what the shim allocated), forwarding, a default route out the right Nic and the
/// masquerade ruleset; then waits until every host with a guest-nat VM steers guest-nat's
/// default route to all the appliances.
pub(super) fn plug_appliances(o: &Opts, plan: &Plan, p: &Provisioned) -> Result<()> {
    if plan.appliances.is_empty() {
        return Ok(());
    }
    let t = Instant::now();
    let rules = Path::new(RUN_DIR).join("nat.nft");
    std::fs::write(&rules, NAT_RULES).map_err(|e| DevcloudError::Io("nat.nft".into(), e))?;
    for (a, n) in plan.appliances.iter().zip(&p.appliances) {
        for (nic, (mac, _)) in [(&a.left, &n.left), (&a.right, &n.right)] {
            crate::net::build_vm(plan, nic, mac)?;
            hotplug(o, plan, nic, mac)?;
        }
        for nic in [&a.left, &a.right] {
            let h = plan.host_of(nic);
            wait_for(
                &format!("{} bound on {}", nic.vif(), h.name),
                Duration::from_secs(30),
                || bound(o, h, &nic.vif()),
            )?;
        }
        configure_appliance(plan, a, n, &rules)?;
    }
    let hosts: Vec<&Host> = guest_nat_vms(plan)
        .iter()
        .map(|v| plan.host_of(v))
        .collect();
    let want = plan.appliances.len();
    for h in &hosts {
        wait_for(
            &format!("guest-nat's 0.0.0.0/0 to {want} appliance(s) on {}", h.name),
            Duration::from_secs(30),
            || default_route_members(o, h, &snat_vrf(plan)) == Some(want),
        )?;
    }
    progress(&format!(
        "NAT appliances {}: nftables masquerade; guest-nat's 0.0.0.0/0 steered to {want} on {} host(s) in {:.1} s ({}: {})",
        plan.appliances
            .iter()
            .map(|a| format!("{} (host {})", a.left.name, a.left.host))
            .collect::<Vec<_>>()
            .join(", "),
        hosts.len(),
        t.elapsed().as_secs_f64(),
        hosts[0].name,
        default_route_text(o, hosts[0], &snat_vrf(plan))
    ));
    Ok(())
}

/// Addresses, forwarding, default route and nftables in appliance `a`'s namespace.
fn configure_appliance(plan: &Plan, a: &Appliance, n: &ApplianceNics, rules: &Path) -> Result<()> {
    let ns = a.left.netns();
    let gw = public_gateway(plan);
    let script = format!(
        "set -e; ip addr add {l}/24 dev eth1; ip addr add {r}/24 dev eth2; \
         sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
         net.ipv4.conf.default.rp_filter=0 net.ipv4.conf.eth1.rp_filter=0 net.ipv4.conf.eth2.rp_filter=0; \
         ip route add default via {gw} dev eth2; nft -f {f}",
        l = n.left.1,
        r = n.right.1,
        f = rules.display()
    );
    run_in(&ns, &["sh", "-c", &script])?;
    Ok(())
}

/// guest-nat's VMs (one per host).
fn guest_nat_vms(plan: &Plan) -> Vec<&Vm> {
    plan.vms
        .iter()
        .filter(|v| v.network == SNAT_NETWORK)
        .collect()
}

/// The nexthop of `vrf`'s 0.0.0.0/0 on `h`, as `vrctl --json nh list` shows it.
fn default_route_nh(o: &Opts, h: &Host, vrf: &str) -> Option<Value> {
    let routes = vrctl_json(o, h, &["route", "dump", vrf]).ok()?;
    let nh = routes
        .as_array()?
        .iter()
        .find(|r| r["prefix"] == "0.0.0.0/0")?["nh"]
        .as_u64()?;
    let nhs = vrctl_json(o, h, &["nh", "list"]).ok()?;
    nhs.as_array()?.iter().find(|n| n["id"] == nh).cloned()
}

/// How many nexthops guest-nat's 0.0.0.0/0 spreads over on `h` (a composite's members, else
/// 1); `None` without the route.
fn default_route_members(o: &Opts, h: &Host, vrf: &str) -> Option<usize> {
    let n = default_route_nh(o, h, vrf)?;
    Some(if n["type"] == "Composite" {
        n["members"].as_array().map_or(0, Vec::len)
    } else {
        1
    })
}

/// `composite 12 -> vif 5, MPLSoUDP 172.30.0.12`: where `h` sends guest-nat's default route.
fn default_route_text(o: &Opts, h: &Host, vrf: &str) -> String {
    let Some(n) = default_route_nh(o, h, vrf) else {
        return "no route".into();
    };
    let targets: Vec<&str> = n["member_targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    format!(
        "{} {} -> {}",
        n["type"].as_str().unwrap_or("?").to_lowercase(),
        n["id"],
        if targets.is_empty() {
            format!("vif {}", n["oif"])
        } else {
            targets.join(", ")
        }
    )
}

/// Connections appliance `a` translated so far: its masquerade counter (`None` when nft cannot
/// tell, e.g. the appliance is gone).
fn translated(a: &Appliance) -> Option<u64> {
    run_in(
        &a.left.netns(),
        &["nft", "-j", "list", "chain", "ip", "nat", "post"],
    )
    .ok()
    .and_then(|out| masquerade_count(&out))
}

/// The packet counters of a chain's rules in `nft -j list chain` output, summed.
fn masquerade_count(json: &str) -> Option<u64> {
    let v: Value = serde_json::from_str(json).ok()?;
    let rules = v["nftables"].as_array()?;
    Some(
        rules
            .iter()
            .filter_map(|o| o["rule"]["expr"].as_array())
            .flatten()
            .filter_map(|e| e["counter"]["packets"].as_u64())
            .sum(),
    )
}

/// Every appliance's masquerade counter (0 for one nft cannot read).
fn counters(plan: &Plan) -> Vec<u64> {
    plan.appliances
        .iter()
        .map(|a| translated(a).unwrap_or(0))
        .collect()
}

/// Runs every source-NAT check of the report.
pub(super) fn check_snat(
    checks: &mut Checks,
    o: &Opts,
    plan: &Plan,
    st: &mut State,
    p: &Provisioned,
) {
    let guests = guest_nat_vms(plan);
    let Some(first) = guests.first() else { return };
    if plan.appliances.is_empty() {
        return;
    }
    let outside = plan.outside_ip.clone();
    if let Err(e) = start_listener(plan, st) {
        checks.line(
            false,
            "source NAT: the outside listener".into(),
            e.to_string(),
        );
        return;
    }
    let cap = Path::new(RUN_DIR).join("outside.pcap");
    let capture = start_capture(plan, &cap);
    if let Err(e) = &capture {
        checks.line(
            false,
            format!("capture on {} (tshark)", plan.outside_vm.name),
            e.to_string(),
        );
    }
    check_reach(checks, plan, first, &outside);
    check_burst(checks, plan, &guests, &outside);
    if plan.appliances.len() >= 2 {
        check_failover(checks, o, plan, &guests, &outside);
    } else {
        println!(
            "  [skip] scale-out failover: one NAT appliance with --hosts 1 (two need 2 hosts)"
        );
    }
    if let Ok(c) = capture {
        check_capture(checks, plan, p, c, &cap);
    }
    check_isolation(checks, o, plan, p, &guests);
}

/// The outside's TCP listener in the router VM, kept running (and stopped by `down`).
fn start_listener(plan: &Plan, st: &mut State) -> Result<()> {
    let busybox = sys::which("busybox").ok_or_else(|| step("busybox not found".into()))?;
    start(
        st,
        "outside-listener",
        &plan.outside_vm.netns(),
        vec![
            busybox.display().to_string(),
            "nc".into(),
            "-ll".into(),
            "-p".into(),
            OUTSIDE_PORT.into(),
            "-e".into(),
            "/bin/true".into(),
        ],
        &[],
    )?;
    std::thread::sleep(Duration::from_millis(200));
    Ok(())
}

/// tshark on the router VM's `eth0` (the public network as the outside sees it), every IPv4
/// packet to `cap`, stopped by [`stop_capture`] (or after 180 s).
fn start_capture(plan: &Plan, cap: &Path) -> Result<u32> {
    let _ = std::fs::remove_file(cap);
    let log = crate::logs_dir().join("outside-tshark.log");
    let argv: Vec<String> = [
        "tshark",
        "-q",
        "-n",
        "-i",
        "eth0",
        "-f",
        "ip",
        "-a",
        "duration:180",
        "-w",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(std::iter::once(cap.display().to_string()))
    .collect();
    let child = sys::spawn_in(&plan.outside_vm.netns(), &argv, &log, &[])?;
    let pid = child.id();
    std::mem::forget(child);
    let started = wait_for("tshark to capture", Duration::from_secs(20), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("Capturing on")
    });
    if let Err(e) = started {
        sys::stop_pid(pid, Duration::from_secs(1));
        return Err(e);
    }
    Ok(pid)
}

/// Stops tshark (SIGINT: it closes the file) and returns (source, destination) of every packet.
fn stop_capture(pid: u32, cap: &Path) -> Vec<(String, String)> {
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) on the tshark we started.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGINT);
    }
    let _ = wait_for("tshark to stop", Duration::from_secs(10), || {
        !sys::alive(pid)
    });
    sys::stop_pid(pid, Duration::from_millis(100));
    let out = sys::run(&[
        "tshark",
        "-n",
        "-r",
        &cap.display().to_string(),
        "-T",
        "fields",
        "-e",
        "ip.src",
        "-e",
        "ip.dst",
    ])
    .unwrap_or_default();
    out.lines()
        .filter_map(|l| {
            let (s, d) = l.split_once('\t')?;
            Some((s.to_string(), d.to_string()))
        })
        .collect()
}

/// Whether one TCP connection from namespace `ns` to `dst` completes (bounded by 3 s).
fn tcp_ok(ns: &str, dst: &str) -> bool {
    run_in(
        ns,
        &[
            "timeout",
            "3",
            "busybox",
            "nc",
            "-w",
            "1",
            dst,
            OUTSIDE_PORT,
        ],
    )
    .is_ok()
}

/// (a) `vm` (no floating IP) pings and opens TCP to the outside through the NAT instance.
fn check_reach(checks: &mut Checks, plan: &Plan, vm: &Vm, outside: &str) {
    let before = counters(plan);
    let (ok, d) = ping(&vm.netns(), outside, 3);
    checks.line(
        ok,
        format!(
            "source NAT: ping {} (guest-nat, no floating IP, host {}) -> outside {outside} ({}) through {}",
            vm.name,
            vm.host,
            plan.outside_vm.name,
            crate::provision::snat::NAT_SI
        ),
        d,
    );
    let tcp = tcp_ok(&vm.netns(), outside);
    let after = counters(plan);
    checks.line(
        tcp,
        format!(
            "source NAT: TCP {} -> {outside}:{OUTSIDE_PORT} completes",
            vm.name
        ),
        format!(
            "appliances translated {} connection(s) (ping + TCP)",
            deltas(&before, &after).iter().sum::<u64>()
        ),
    );
}

/// `after - before`, per appliance.
fn deltas(before: &[u64], after: &[u64]) -> Vec<u64> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| a.saturating_sub(*b))
        .collect()
}

/// A shell loop that opens `n` TCP connections to `dst` one after the other (each bounded by
/// 3 s, the loop by `limit_s`) and prints how many completed.
fn sequential_connections(dst: &str, n: usize, limit_s: u64) -> String {
    format!(
        "end=$(($(date +%s) + {limit_s})); k=0; for i in $(seq {n}); do \
         [ $(date +%s) -lt $end ] || break; \
         timeout 3 busybox nc -w 1 {dst} {OUTSIDE_PORT} </dev/null >/dev/null 2>&1 && k=$((k+1)); \
         done; echo $k"
    )
}

/// Runs `cmd` in every VM's namespace at once; the last line of each output as a number.
fn in_parallel(vms: &[&Vm], cmd: &str) -> Vec<usize> {
    std::thread::scope(|s| {
        let hs: Vec<_> = vms
            .iter()
            .map(|v| s.spawn(move || output_in(&v.netns(), cmd)))
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .ok()
                    .and_then(|out| out.lines().last()?.trim().parse().ok())
                    .unwrap_or(0)
            })
            .collect()
    })
}

/// (b) [`BURST`] TCP connections from the guest-nat VMs (in parallel, each VM's one after the
/// other): all complete and are spread over the appliances, each translated by one.
fn check_burst(checks: &mut Checks, plan: &Plan, guests: &[&Vm], outside: &str) {
    let per_vm = BURST.div_ceil(guests.len());
    let wanted = per_vm * guests.len();
    let before = counters(plan);
    let t = Instant::now();
    let done: usize = in_parallel(
        guests,
        &sequential_connections(outside, per_vm, BURST_LIMIT_S),
    )
    .iter()
    .sum();
    let took = t.elapsed();
    let per = deltas(&before, &counters(plan));
    let (ok, why) = judge_spread(wanted, done, &per);
    let shares: Vec<String> = plan
        .appliances
        .iter()
        .zip(&per)
        .map(|(a, n)| format!("{} (host {}) {n}", a.left.name, a.left.host))
        .collect();
    checks.line(
        ok,
        format!(
            "scale-out: {wanted} TCP connections from {} guest-nat VMs to {outside}:{OUTSIDE_PORT} complete, spread over {} appliance(s), each translated by one",
            guests.len(),
            plan.appliances.len()
        ),
        format!(
            "{done}/{wanted} completed in {:.1} s; translated: {}{why}",
            took.as_secs_f64(),
            shares.join(", ")
        ),
    );
}

/// Whether a burst of `wanted` connections went well: all `completed`, every one translated
/// by exactly one appliance (`translated` per appliance sums to the connections: a connection
/// whose packets took both appliances is translated twice and reset), and with two or more
/// appliances each took at least a fifth of its fair share. The reason when not.
fn judge_spread(wanted: usize, completed: usize, translated: &[u64]) -> (bool, String) {
    let sum: u64 = translated.iter().sum();
    if completed != wanted {
        return (
            false,
            format!(" — {} did not complete", wanted - completed.min(wanted)),
        );
    }
    if sum != wanted as u64 {
        return (
            false,
            format!(" — {sum} translations for {wanted} connections (split or lost connections)"),
        );
    }
    if translated.len() >= 2 {
        let fair = wanted as u64 / translated.len() as u64;
        if let Some(min) = translated.iter().min().filter(|m| **m * 5 < fair) {
            return (
                false,
                format!(" — not spread: one appliance took {min} of {wanted}"),
            );
        }
    }
    (true, String::new())
}

/// XenServer stopping appliance `a`: the domain dies (its Nics go down), the vif script runs
/// the hook with `remove` for each Nic and the toolstack removes the domain's xenstore
/// entries; the agent then unbinds both vifs and the shim withdraws their routes.
fn stop_appliance(o: &Opts, plan: &Plan, a: &Appliance) -> Result<()> {
    run_in(
        &a.left.netns(),
        &["sh", "-c", "ip link set eth1 down; ip link set eth2 down"],
    )?;
    for nic in [&a.left, &a.right] {
        run_hook(o, plan, nic, "remove")?;
    }
    let h = plan.host_of(&a.left);
    let xs = format!("XENSTORED_PATH={}", xs_sock(h).display());
    let d = a.left.index;
    for path in [
        format!("/local/domain/0/backend/vif/{d}"),
        format!("/xapi/{d}"),
        format!("/local/domain/{d}"),
    ] {
        run_in(&h.name, &["env", &xs, "xenstore-rm", &path])?;
    }
    Ok(())
}

/// (b) The second appliance stops; batches of new connections from every guest-nat VM until
/// one batch completes entirely through the survivor: that batch's start, after the stop,
/// must be within [`FAILOVER_LIMIT`].
fn check_failover(checks: &mut Checks, o: &Opts, plan: &Plan, guests: &[&Vm], outside: &str) {
    let (survivor, dead) = (&plan.appliances[0], &plan.appliances[1]);
    let what = format!(
        "scale-out failover: {} (host {}) stopped and unplugged; new connections all through {} (host {}) within {} s",
        dead.left.name,
        dead.left.host,
        survivor.left.name,
        survivor.left.host,
        FAILOVER_LIMIT.as_secs()
    );
    let stopped = Instant::now();
    if let Err(e) = stop_appliance(o, plan, dead) {
        checks.line(false, what, e.to_string());
        return;
    }
    let wanted = FAILOVER_BATCH * guests.len();
    // The routes' side, measured while the batches run: when every guest-nat host's default
    // route is down to the survivor.
    let ((moved, batches), converged) = std::thread::scope(|s| {
        let poll = s.spawn(|| one_member_everywhere(o, plan, guests, stopped));
        let b = failover_batches(guests, survivor, outside, stopped);
        (b, poll.join().ok().flatten())
    });
    let routes = match converged {
        Some(c) => format!(
            "; every guest-nat host's 0.0.0.0/0 down to one member after {:.2} s",
            c.as_secs_f64()
        ),
        None => "; a guest-nat host's 0.0.0.0/0 still had two members after 10 s".into(),
    };
    checks.line(
        moved.is_some_and(|m| m <= FAILOVER_LIMIT),
        what,
        match moved {
            Some(m) => format!(
                "the first batch all through the survivor ({wanted} connections, {} per VM) opened {:.1} s after the stop (batch {batches}){routes}",
                FAILOVER_BATCH,
                m.as_secs_f64()
            ),
            None => format!("not within 15 s ({batches} batches of {wanted}){routes}"),
        },
    );
}

/// Batches of [`FAILOVER_BATCH`] parallel connections from every guest-nat VM until one batch
/// completes entirely through `survivor` (its masquerade counter grows by the batch), for at
/// most 15 s after `stopped`: when that batch was opened, and how many batches ran.
fn failover_batches(
    guests: &[&Vm],
    survivor: &Appliance,
    outside: &str,
    stopped: Instant,
) -> (Option<Duration>, usize) {
    let cmd = format!(
        "for i in $(seq {FAILOVER_BATCH}); do (timeout 3 busybox nc -w 1 {outside} {OUTSIDE_PORT} </dev/null >/dev/null 2>&1 && echo ok) & done; wait; echo"
    );
    let wanted = FAILOVER_BATCH * guests.len();
    let mut batches = 0;
    while stopped.elapsed() < Duration::from_secs(15) {
        let at = stopped.elapsed();
        let before = translated(survivor).unwrap_or(0);
        let outs: Vec<String> = std::thread::scope(|s| {
            let hs: Vec<_> = guests
                .iter()
                .map(|v| s.spawn(|| output_in(&v.netns(), &cmd)))
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        let done: usize = outs.iter().map(|o| o.matches("ok").count()).sum();
        let through = translated(survivor).unwrap_or(0).saturating_sub(before);
        batches += 1;
        if done == wanted && through == wanted as u64 {
            return (Some(at), batches);
        }
    }
    (None, batches)
}

/// When (after `stopped`) every host with a guest-nat VM routes guest-nat's 0.0.0.0/0 to one
/// nexthop only (polled every 50 ms, for at most 10 s).
fn one_member_everywhere(
    o: &Opts,
    plan: &Plan,
    guests: &[&Vm],
    stopped: Instant,
) -> Option<Duration> {
    let vrf = snat_vrf(plan);
    while stopped.elapsed() < Duration::from_secs(10) {
        if guests
            .iter()
            .all(|g| default_route_members(o, plan.host_of(g), &vrf) == Some(1))
        {
            return Some(stopped.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Whether `addr` is in `subnet`/`plen`.
fn in_subnet(addr: &str, subnet: &str, plen: u8) -> bool {
    match (addr.parse::<Ipv4Addr>(), subnet.parse::<Ipv4Addr>()) {
        (Ok(a), Ok(s)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(plen)).unwrap_or(0);
            u32::from(a) & mask == u32::from(s) & mask
        }
        _ => false,
    }
}

/// What the outside saw: packets per source address among those sent to it, and the packets
/// (either direction) that carry a private guest-nat address.
fn judge_sources(
    rows: &[(String, String)],
    outside: &str,
    private: (&str, u8),
) -> (BTreeMap<String, usize>, usize) {
    let mut by_source = BTreeMap::new();
    let mut leaked = 0;
    for (s, d) in rows {
        if in_subnet(s, private.0, private.1) || in_subnet(d, private.0, private.1) {
            leaked += 1;
        }
        if d == outside {
            *by_source.entry(s.clone()).or_insert(0) += 1;
        }
    }
    (by_source, leaked)
}

/// (a) and (c): every packet the outside received during the checks above came from an
/// appliance's public address, none carried a guest-nat address.
fn check_capture(checks: &mut Checks, plan: &Plan, p: &Provisioned, pid: u32, cap: &Path) {
    let rows = stop_capture(pid, cap);
    let net = &plan.networks[SNAT_NETWORK];
    let (by_source, leaked) = judge_sources(&rows, &plan.outside_ip, (&net.subnet, net.plen));
    let public: Vec<&str> = p.appliances.iter().map(|n| n.right.1.as_str()).collect();
    let others: Vec<&String> = by_source
        .keys()
        .filter(|s| !public.contains(&s.as_str()))
        .collect();
    let from_appliances: usize = by_source
        .iter()
        .filter(|(s, _)| public.contains(&s.as_str()))
        .map(|(_, n)| n)
        .sum();
    checks.line(
        leaked == 0 && others.is_empty() && from_appliances >= 2 * BURST,
        format!(
            "outside capture on {} (tshark): sources only the appliances' public addresses, never {}/{}",
            plan.outside_vm.name, net.subnet, net.plen
        ),
        format!(
            "{} packets to {}: {}; {leaked} with a guest-nat address{}",
            by_source.values().sum::<usize>(),
            plan.outside_ip,
            by_source
                .iter()
                .map(|(s, n)| format!("{s} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            if others.is_empty() {
                String::new()
            } else {
                format!("; other sources {others:?}")
            }
        ),
    );
}

/// (c) Isolation stays: no host's public VRF holds a guest-nat VM's /32 (only guest-nat's
/// subnet, steered to the appliances' right Nics), and the outside cannot reach a guest-nat
/// VM by its private address.
fn check_isolation(checks: &mut Checks, o: &Opts, plan: &Plan, p: &Provisioned, guests: &[&Vm]) {
    let public_vrf = format!(
        "default-domain:default-project:{}",
        crate::provision::PUBLIC_VN
    );
    let mut leaked: Vec<String> = Vec::new();
    let mut hosts_with_public = 0;
    for h in plan.all_hosts() {
        let Ok(routes) = vrctl_json(o, h, &["route", "dump", &public_vrf]) else {
            continue;
        };
        hosts_with_public += 1;
        for g in guests {
            let ip = vm_ip(p, g);
            if routes.to_string().contains(&format!("\"{ip}/32\"")) {
                leaked.push(format!("{ip}/32 on {}", h.name));
            }
        }
    }
    let target = vm_ip(p, guests[0]);
    let (reached, _) = ping(&plan.outside_vm.netns(), target, 2);
    checks.line(
        leaked.is_empty() && hosts_with_public > 0 && !reached,
        format!(
            "isolation: no guest-nat /32 in the public VRF (on the {hosts_with_public} hosts that have it), and {} cannot ping {} ({target}) by its private address",
            plan.outside_vm.name, guests[0].name
        ),
        if leaked.is_empty() {
            String::new()
        } else {
            format!("leaked: {}", leaked.join(", "))
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masquerade_counters_are_summed_from_nft_json() {
        let out = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
            {"chain": {"family": "ip", "table": "nat", "name": "post"}},
            {"rule": {"expr": [{"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "eth2"}},
                               {"counter": {"packets": 52, "bytes": 3120}}, {"masquerade": null}]}},
            {"rule": {"expr": [{"counter": {"packets": 3, "bytes": 180}}]}}]}"#;
        assert_eq!(masquerade_count(out), Some(55));
        assert_eq!(
            masquerade_count(r#"{"nftables": [{"metainfo": {}}]}"#),
            Some(0)
        );
        assert_eq!(masquerade_count("Error: No such file or directory"), None);
    }

    #[test]
    fn a_spread_burst_with_every_connection_translated_once_passes() {
        assert_eq!(judge_spread(100, 100, &[48, 52]), (true, String::new()));
        assert!(judge_spread(100, 100, &[100]).0);
    }

    #[test]
    fn lost_split_or_unspread_connections_fail() {
        let (ok, why) = judge_spread(100, 97, &[48, 49]);
        assert!(!ok && why.contains("3 did not complete"), "{why}");
        // A connection whose packets took both appliances is translated by both.
        let (ok, why) = judge_spread(100, 100, &[55, 52]);
        assert!(!ok && why.contains("107 translations"), "{why}");
        let (ok, why) = judge_spread(100, 100, &[95, 5]);
        assert!(!ok && why.contains("not spread"), "{why}");
        assert!(judge_spread(100, 100, &[90, 10]).0);
    }

    #[test]
    fn the_outside_seeing_a_private_address_is_counted() {
        let rows: Vec<(String, String)> = [
            ("198.51.100.3", "198.51.100.254"),
            ("198.51.100.254", "198.51.100.3"),
            ("198.51.100.4", "198.51.100.254"),
            ("198.51.100.3", "198.51.100.254"),
            ("10.4.4.2", "198.51.100.254"),
            ("198.51.100.254", "10.4.4.3"),
        ]
        .iter()
        .map(|(s, d)| (s.to_string(), d.to_string()))
        .collect();
        let (by_source, leaked) = judge_sources(&rows, "198.51.100.254", ("10.4.4.0", 24));
        assert_eq!(leaked, 2);
        assert_eq!(by_source.get("198.51.100.3"), Some(&2));
        assert_eq!(by_source.get("198.51.100.4"), Some(&1));
        assert_eq!(by_source.get("10.4.4.2"), Some(&1));
        assert!(!in_subnet("10.4.5.1", "10.4.4.0", 24));
        assert!(in_subnet("10.4.4.255", "10.4.4.0", 24));
        assert!(in_subnet("1.2.3.4", "0.0.0.0", 0));
    }

    #[test]
    fn the_public_gateway_is_dot_one_of_the_public_subnet() {
        let p = Plan::new(2, 4);
        assert_eq!(public_gateway(&p), "198.51.100.1");
        assert_eq!(snat_vrf(&p), "default-domain:default-project:guest-nat");
    }
}
