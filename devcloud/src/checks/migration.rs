//! The live-migration check (issue 20): a VM moves to another host and back, as Xen moves it
//! (the destination vif connects with the same Nic while the VM still runs on the source, and
//! the peer's host must keep routing to the source; pause, resume with a gratuitous ARP, the
//! source domain goes), under a 2 ms ping and an iperf3 TCP stream from a
//! VM on a third host (or the destination when there are only two). Per move one report line:
//! pings lost, the TCP stall (longest run of empty 100 ms iperf3 intervals; the connection must
//! survive), when the peer's host re-pointed the /32, and that the old host cleaned up.

use super::restart::{ping_loss, seq_ranges, start_ping, stop_ping};
use super::{bound, hotplug, run_hook, vm_ip, vrctl_json, xs_sock, Checks};
use crate::provision::Provisioned;
use crate::sys::{self, ip, run_in, Result};
use crate::topology::{Plan, Vm, RUN_DIR};
use crate::{wait_for, Opts};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// The domid a VM gets on the host it migrates to (Xen gives the destination a new domain):
/// from 200, or after every other VM's when there are more.
fn moved_domid(plan: &Plan, vm: &Vm) -> usize {
    let after =
        crate::provision::system_vms::first_domid(plan) + crate::provision::system_vms::DOMIDS;
    after.max(200) + vm.index
}

/// Moves `m` to host `to` and back under traffic from `peer`; two report lines.
pub(super) fn check_migration(
    checks: &mut Checks,
    o: &Opts,
    plan: &Plan,
    p: &Provisioned,
    (m, peer, to): (&Vm, &Vm, usize),
) {
    let there = Vm {
        index: moved_domid(plan, m),
        host: to,
        ..m.clone()
    };
    for (from, dest) in [(m, &there), (&there, m)] {
        let what = format!(
            "live migration of {} from host {} to host {} under a 2 ms ping and TCP from {} (host {})",
            m.name, from.host, dest.host, peer.name, peer.host
        );
        let mv = Move {
            m,
            from,
            dest,
            peer,
            old_eth: if from.index == m.index {
                "eth0"
            } else {
                "eth9"
            },
            new_eth: if dest.index == m.index {
                "eth0"
            } else {
                "eth9"
            },
        };
        match migrate(o, plan, p, &mv) {
            Ok((ok, detail)) => checks.line(ok, what, detail),
            Err(e) => {
                checks.line(false, what, e.to_string());
                return;
            }
        }
    }
}

/// The label of the route to `ip`/32 in `vrf` on the host of `vm`, if any.
fn route_label(o: &Opts, plan: &Plan, vm: &Vm, vrf: &str, ip: &str) -> Option<u64> {
    let rt = vrctl_json(o, plan.host_of(vm), &["route", "dump", vrf]).ok()?;
    let prefix = format!("{ip}/32");
    let r = rt.as_array()?.iter().find(|r| r["prefix"] == prefix)?;
    r["label"].as_u64()
}

/// Whether the host of `vm` routes `ip`/32 in `vrf` to one of its own vifs (no label).
fn routed_locally(o: &Opts, plan: &Plan, vm: &Vm, vrf: &str, ip: &str) -> bool {
    let Ok(rt) = vrctl_json(o, plan.host_of(vm), &["route", "dump", vrf]) else {
        return false;
    };
    let prefix = format!("{ip}/32");
    rt.as_array()
        .and_then(|a| a.iter().find(|r| r["prefix"] == prefix))
        .is_some_and(|r| r["label"].is_null())
}

/// The label host `h` gives its vif `name`.
fn vif_label(o: &Opts, plan: &Plan, vm: &Vm) -> Option<u64> {
    let h = plan.host_of(vm);
    let vifs = vrctl_json(o, h, &["vif", "list"]).ok()?;
    let nh = vifs.as_array()?.iter().find(|v| v["name"] == vm.vif())?["nh"].clone();
    let labels = vrctl_json(o, h, &["mpls", "dump"]).ok()?;
    labels.as_array()?.iter().find(|l| l["nh"] == nh)?["label"].as_u64()
}

/// The longest run of empty intervals in iperf3's JSON report, in seconds, and whether the
/// test ended without error.
fn tcp_stall(json: &str) -> (f64, bool) {
    let Ok(v) = serde_json::from_str::<Value>(json) else {
        return (f64::NAN, false);
    };
    let (mut run, mut longest) = (0.0_f64, 0.0_f64);
    for i in v["intervals"].as_array().into_iter().flatten() {
        let s = &i["sum"];
        let span = s["seconds"].as_f64().unwrap_or(0.0);
        if s["bytes"].as_u64() == Some(0) {
            run += span;
            longest = longest.max(run);
        } else {
            run = 0.0;
        }
    }
    (longest, v.get("error").is_none())
}

/// Where the VM's traffic should go and what to measure it by.
struct Move<'a> {
    /// The VM as first plugged (its address and MAC are the controller's).
    m: &'a Vm,
    from: &'a Vm,
    dest: &'a Vm,
    peer: &'a Vm,
    /// The VM's NIC on the source, and on the destination (down until resume).
    old_eth: &'static str,
    new_eth: &'static str,
}

/// The destination's NIC in the VM (down) and its dom0 end on the new host.
fn destination_nic(plan: &Plan, mv: &Move, mac: &str) -> Result<()> {
    let dest_host = &plan.host_of(mv.dest).name;
    let ns = mv.m.netns();
    let vif = mv.dest.vif();
    ip(&[
        "link", "add", mv.new_eth, "netns", &ns, "type", "veth", "peer", "name", &vif, "netns",
        dest_host,
    ])?;
    run_in(&ns, &["ip", "link", "set", mv.new_eth, "address", mac])?;
    run_in(dest_host, &["ip", "link", "set", &vif, "up"])?;
    Ok(())
}

/// Pause on the source, the destination vif connects, resume there with a gratuitous ARP (as
/// netfront sends on resume). Returns when the destination's binding was written.
fn pause_and_resume(plan: &Plan, p: &Provisioned, mv: &Move) -> Result<Instant> {
    let (ns, ip_m, old, new) = (mv.m.netns(), vm_ip(p, mv.m), mv.old_eth, mv.new_eth);
    run_in(
        &ns,
        &[
            "sh",
            "-c",
            &format!("ip link set {old} down; ip addr flush dev {old}"),
        ],
    )?;
    let resumed = Instant::now();
    let gw = &plan.networks[mv.m.network].gateway;
    run_in(
        &ns,
        &[
            "sh",
            "-c",
            &format!(
                "ip addr add {ip_m}/24 dev {new} && ip link set {new} up && \
                 ip route replace default via {gw} dev {new} && \
                 busybox arping -U -c 1 -I {new} {ip_m}"
            ),
        ],
    )?;
    Ok(resumed)
}

/// The source domain goes: the hook's remove, its xenstore keys, its vif.
fn destroy_source(o: &Opts, plan: &Plan, from: &Vm) -> Result<()> {
    let h = plan.host_of(from);
    run_hook(o, plan, from, "remove")?;
    let xs = format!("XENSTORED_PATH={}", xs_sock(h).display());
    let d = from.index;
    for path in [
        format!("/local/domain/0/backend/vif/{d}"),
        format!("/xapi/{d}"),
        format!("/local/domain/{d}"),
    ] {
        run_in(&h.name, &["env", &xs, "xenstore-rm", &path])?;
    }
    run_in(&h.name, &["ip", "link", "del", &from.vif()])?;
    Ok(())
}

/// One move of the VM; whether it passed and the report detail.
fn migrate(o: &Opts, plan: &Plan, p: &Provisioned, mv: &Move) -> Result<(bool, String)> {
    let ip_m = vm_ip(p, mv.m).to_string();
    let mac = p.vms[mv.m.index - 1].0.clone();
    let vrf = p.vrfs[mv.m.network].clone();
    destination_nic(plan, mv, &mac)?;
    // Xen connects the destination's vif before it copies the VM: bound there, but the traffic
    // must keep going to the source until the VM resumes.
    hotplug(o, plan, mv.dest, &mac)?;
    let dest_host = plan.host_of(mv.dest);
    wait_for(
        &format!("{} bound on {}", mv.dest.vif(), dest_host.name),
        Duration::from_secs(30),
        || bound(o, dest_host, &mv.dest.vif()),
    )?;
    let source_label = vif_label(o, plan, mv.from);
    run_in(&mv.m.netns(), &["iperf3", "-s", "-D", "-1", "-p", "5202"])?;
    std::thread::sleep(Duration::from_millis(300));
    let iperf_log = Path::new(RUN_DIR).join("migration-iperf.json");
    let argv: Vec<String> = [
        "iperf3", "-c", &ip_m, "-p", "5202", "-t", "8", "-i", "0.1", "-J",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut iperf = sys::spawn_in(&mv.peer.netns(), &argv, &iperf_log, &[])?;
    let ping_log = Path::new(RUN_DIR).join("migration-ping.log");
    let ping = start_ping(mv.peer, &ip_m, &ping_log)?;
    // Traffic to the source while the destination is bound: nobody may re-point yet.
    std::thread::sleep(Duration::from_secs(2));
    let early =
        mv.peer.host != mv.from.host && route_label(o, plan, mv.peer, &vrf, &ip_m) != source_label;
    let resumed = pause_and_resume(plan, p, mv)?;
    let mut repoint = None;
    if mv.peer.host != mv.dest.host {
        let _ = wait_for(
            "the peer's host to re-point",
            Duration::from_secs(10),
            || {
                let want = vif_label(o, plan, mv.dest);
                let ok = want.is_some() && route_label(o, plan, mv.peer, &vrf, &ip_m) == want;
                if ok {
                    repoint = Some(resumed.elapsed());
                }
                ok
            },
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    destroy_source(o, plan, mv.from)?;
    let cleaned = wait_for("the old host to clean up", Duration::from_secs(15), || {
        let gone = vrctl_json(o, plan.host_of(mv.from), &["vif", "list"])
            .map(|v| !v.to_string().contains(&format!("\"{}\"", mv.from.vif())))
            .unwrap_or(false);
        // Not routed to a local vif any more: to the VM's new host, or not at all (the VRF
        // left with the VM's interface when it was the network's last one on that host).
        gone && !routed_locally(o, plan, mv.from, &vrf, &ip_m)
    })
    .is_ok();
    let _ = iperf.wait();
    std::thread::sleep(Duration::from_secs(1));
    let (sent, lost) = ping_loss(&stop_ping(ping, &ping_log));
    let (stall, tcp_ok) = tcp_stall(&std::fs::read_to_string(&iperf_log).unwrap_or_default());
    let lost_seqs = if lost.is_empty() {
        String::new()
    } else {
        format!(" (icmp_seq {})", seq_ranges(&lost))
    };
    let detail = format!(
        "{} of {sent} pings lost ({} ms){lost_seqs}; TCP {} with a {stall:.1} s stall; \
         peer's host re-pointed {}{}; old host cleaned up: {}",
        lost.len(),
        lost.len() * 2,
        if tcp_ok { "kept" } else { "broke" },
        repoint.map_or_else(
            || "(the peer is on the destination)".to_string(),
            |d| format!("{} ms after the resume", d.as_millis())
        ),
        if early {
            " (but before the resume: FAIL)"
        } else {
            ""
        },
        if cleaned { "yes" } else { "no" },
    );
    Ok((tcp_ok && cleaned && !early && sent > 1000, detail))
}
