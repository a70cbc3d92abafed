//! The rolling restart check: every agent of the cloud (compute hosts and gateway), one after
//! the other, killed (`kill -9`) and started again with the same command line, while a 2 ms
//! ping runs between two VMs on different hosts. An agent restart must be hitless: no ping
//! lost, every reconcile of a restarted agent `0 adds/changes, 0 removals`, and what `vrctl`
//! shows on every host (interfaces, nexthops, labels, VRFs, routes of every VRF) unchanged.
//! Tungsten Fabric's agents reset forwarding when they restart; ours must not, and this is the
//! check that says so on a whole cloud.

use super::{agent_argv, vm_ip, vrctl_json, xs_sock, Checks};
use crate::provision::Provisioned;
use crate::sys::{self, alive, DevcloudError, Result};
use crate::topology::{Host, Plan, Vm, RUN_DIR};
use crate::{logs_dir, start, wait_for, Opts, State};
use serde_json::Value;
use std::path::Path;
use std::process::Child;
use std::time::Duration;

/// What the agent logs for a pass that changed nothing (`reconcile::Summary`'s display).
const NOTHING_CHANGED: &str = "0 adds/changes, 0 removals";

/// Fewer echo requests than this means the ping did not really run through the restarts.
const MIN_PINGS: u64 = 500;

/// Kills every agent in turn under a ping from `a` to `b`; three report lines.
pub(super) fn check_rolling_restart(
    checks: &mut Checks,
    o: &Opts,
    plan: &Plan,
    st: &mut State,
    p: &Provisioned,
    (a, b): (&Vm, &Vm),
) {
    let hosts = plan.all_hosts();
    let what = format!(
        "rolling restart of all {} agents (kill -9, same command line) under a 2 ms ping {} -> {}",
        hosts.len(),
        a.name,
        b.name
    );
    let before: Vec<Result<Value>> = hosts.iter().map(|h| tables(o, h)).collect();
    let log = Path::new(RUN_DIR).join("rolling-restart-ping.log");
    let ping = match start_ping(a, vm_ip(p, b), &log) {
        Ok(c) => c,
        Err(e) => {
            checks.line(false, what, e.to_string());
            return;
        }
    };
    std::thread::sleep(Duration::from_secs(1));
    let passes: Vec<(&str, Result<Vec<String>>)> = hosts
        .iter()
        .map(|h| (h.name.as_str(), restart_agent(o, plan, st, h)))
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let (sent, lost) = ping_loss(&stop_ping(ping, &log));
    let errors: Vec<String> = passes
        .iter()
        .filter_map(|(h, r)| r.as_ref().err().map(|e| format!("{h}: {e}")))
        .collect();
    let mut detail = format!("{sent} sent, {} lost", lost.len());
    if !lost.is_empty() {
        detail.push_str(&format!(" (icmp_seq {})", seq_ranges(&lost)));
    }
    for e in &errors {
        detail.push_str(&format!("; {e}"));
    }
    checks.line(
        errors.is_empty() && lost.is_empty() && sent >= MIN_PINGS,
        what,
        detail,
    );
    let summaries: Vec<(bool, String)> = passes
        .iter()
        .filter_map(|(h, r)| r.as_ref().ok().map(|l| (*h, l)))
        .map(|(h, lines)| {
            let (ok, s) = reconcile_summary(lines);
            (ok, format!("{h}: {s}"))
        })
        .collect();
    checks.line(
        summaries.len() == hosts.len() && summaries.iter().all(|(ok, _)| *ok),
        format!("every restarted agent's reconcile: {NOTHING_CHANGED}"),
        summaries
            .into_iter()
            .map(|(_, s)| s)
            .collect::<Vec<_>>()
            .join("; "),
    );
    let changed: Vec<String> = hosts
        .iter()
        .zip(&before)
        .filter_map(|(h, b)| {
            let d = match (b, &tables(o, h)) {
                (Ok(b), Ok(a)) => table_diff(b, a),
                (Err(e), _) | (_, Err(e)) => vec![format!("vrctl failed: {e}")],
            };
            (!d.is_empty()).then(|| format!("{}: {}", h.name, d.join(", ")))
        })
        .collect();
    checks.line(
        changed.is_empty(),
        "vrctl --json vif/nh/mpls/vrf/route dumps identical before and after, every host".into(),
        if changed.is_empty() {
            format!("{} hosts", hosts.len())
        } else {
            format!("changed: {}", changed.join("; "))
        },
    );
}

/// Starts a ping every 2 ms from `a` to `dst`, output to `log`; bounded by count and time in
/// case nobody stops it.
pub(super) fn start_ping(a: &Vm, dst: &str, log: &Path) -> Result<Child> {
    let argv: Vec<String> = ["ping", "-i", "0.002", "-c", "60000", "-w", "120", dst]
        .iter()
        .map(|s| s.to_string())
        .collect();
    sys::spawn_in(&a.netns(), &argv, log, &[])
}

/// Stops the ping (SIGINT: it prints its statistics) and returns what it printed.
pub(super) fn stop_ping(mut ping: Child, log: &Path) -> String {
    // SAFETY: kill(2) on the ping we started and have not reaped yet.
    unsafe {
        libc::kill(ping.id() as libc::pid_t, libc::SIGINT);
    }
    let stopped = wait_for("ping to stop", Duration::from_secs(5), || {
        matches!(ping.try_wait(), Ok(Some(_)))
    });
    if stopped.is_err() {
        let _ = ping.kill();
        let _ = ping.wait();
    }
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Kills host `h`'s agent (-9) and starts it again with the same command line; its reconcile
/// log lines once it has reconciled (and half a second more for passes that follow).
fn restart_agent(o: &Opts, plan: &Plan, st: &mut State, h: &Host) -> Result<Vec<String>> {
    let name = format!("{}-agent", h.name);
    let i = st
        .procs
        .iter()
        .position(|(n, _, _)| *n == name)
        .ok_or_else(|| DevcloudError::Step(format!("no {name} running")))?;
    let (_, ns, pid) = st.procs.remove(i);
    // SAFETY: kill(2) with a pid we started and recorded.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
    wait_for(&format!("{name} to die"), Duration::from_secs(5), || {
        !alive(pid)
    })?;
    // The killed agent's log stays, under its pid.
    let log = logs_dir().join(format!("{name}.log"));
    let _ = std::fs::rename(&log, logs_dir().join(format!("{name}.{pid}.log")));
    let xs = xs_sock(h).display().to_string();
    start(
        st,
        &name,
        &ns,
        agent_argv(o, plan, h),
        &[("XENSTORED_PATH", xs.as_str())],
    )?;
    let reconciled = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("reconciled:"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    wait_for(
        &format!("{name} to reconcile"),
        Duration::from_secs(30),
        || !reconciled().is_empty(),
    )?;
    std::thread::sleep(Duration::from_millis(500));
    Ok(reconciled())
}

/// Whether a restarted agent's reconcile passes (its `reconciled:` log lines) changed nothing,
/// and what to show for them: the summary when every pass was a no-op, else each pass.
fn reconcile_summary(lines: &[String]) -> (bool, String) {
    let ok = !lines.is_empty() && lines.iter().all(|l| l.contains(NOTHING_CHANGED));
    let passes = if lines.len() == 1 { "pass" } else { "passes" };
    if ok {
        return (ok, format!("{} {passes}, {NOTHING_CHANGED}", lines.len()));
    }
    let each: Vec<&str> = lines
        .iter()
        .map(|l| l.split_once("reconciled: ").map_or(l.as_str(), |(_, r)| r))
        .collect();
    (
        ok,
        format!("{} {passes}: {}", lines.len(), each.join(" / ")),
    )
}

/// What `vrctl --json` shows on `h`: interfaces, nexthops, labels, VRFs and every VRF's routes,
/// without the counters (they move with the traffic).
fn tables(o: &Opts, h: &Host) -> Result<Value> {
    let vrfs = vrctl_json(o, h, &["vrf", "list"])?;
    let mut routes = serde_json::Map::new();
    for id in vrfs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("id").and_then(Value::as_u64))
    {
        routes.insert(
            id.to_string(),
            vrctl_json(o, h, &["route", "dump", &id.to_string()])?,
        );
    }
    let mut v = serde_json::json!({
        "vif": vrctl_json(o, h, &["vif", "list"])?,
        "nh": vrctl_json(o, h, &["nh", "list"])?,
        "mpls": vrctl_json(o, h, &["mpls", "dump"])?,
        "vrf": vrfs,
        "route": routes,
    });
    strip_counters(&mut v);
    Ok(v)
}

/// Removes every `stats` member, at any depth.
fn strip_counters(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("stats");
            m.values_mut().for_each(strip_counters);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_counters),
        _ => {}
    }
}

/// The tables of two [`tables`] dumps that differ (`route vrf N` per VRF), empty when identical.
fn table_diff(before: &Value, after: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for t in ["vif", "nh", "mpls", "vrf"] {
        if before.get(t) != after.get(t) {
            out.push(t.to_string());
        }
    }
    let none = serde_json::Map::new();
    let b = before
        .get("route")
        .and_then(Value::as_object)
        .unwrap_or(&none);
    let a = after
        .get("route")
        .and_then(Value::as_object)
        .unwrap_or(&none);
    let mut vrfs: Vec<&String> = b.keys().chain(a.keys()).collect();
    vrfs.sort();
    vrfs.dedup();
    for id in vrfs {
        if b.get(id) != a.get(id) {
            out.push(format!("route vrf {id}"));
        }
    }
    out
}

/// Echo requests sent and the sequence numbers lost before the last answered one, from
/// `ping` output (requests still in flight when it was stopped are not lost).
pub(super) fn ping_loss(out: &str) -> (u64, Vec<u64>) {
    let seqs: std::collections::BTreeSet<u64> = out
        .lines()
        .filter(|l| l.contains("bytes from") && !l.contains("DUP!"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("icmp_seq="))?
                .parse()
                .ok()
        })
        .collect();
    let sent = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let last = seqs.iter().next_back().copied().unwrap_or(0);
    (sent, (1..=last).filter(|s| !seqs.contains(s)).collect())
}

/// `3-5 9` for `[3, 4, 5, 9]`: lost sequence numbers, short enough for a report line.
pub(super) fn seq_ranges(seqs: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < seqs.len() {
        let mut j = i;
        while j + 1 < seqs.len() && seqs[j + 1] == seqs[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            seqs[i].to_string()
        } else {
            format!("{}-{}", seqs[i], seqs[j])
        });
        i = j + 1;
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ping_loss_counts_gaps_not_the_tail() {
        let out = "PING 10.1.1.3 (10.1.1.3) 56(84) bytes of data.\n\
                   64 bytes from 10.1.1.3: icmp_seq=1 ttl=64 time=0.1 ms\n\
                   64 bytes from 10.1.1.3: icmp_seq=3 ttl=64 time=0.1 ms\n\
                   64 bytes from 10.1.1.3: icmp_seq=3 ttl=64 time=0.1 ms (DUP!)\n\
                   64 bytes from 10.1.1.3: icmp_seq=4 ttl=64 time=0.1 ms\n\
                   \n--- 10.1.1.3 ping statistics ---\n\
                   5 packets transmitted, 3 received, +1 duplicates, 40% packet loss, time 8ms\n";
        assert_eq!(ping_loss(out), (5, vec![2]));
    }

    #[test]
    fn lost_sequence_numbers_are_shown_as_ranges() {
        assert_eq!(seq_ranges(&[3, 4, 5, 9, 11, 12]), "3-5 9 11-12");
        assert_eq!(seq_ranges(&[]), "");
    }

    fn lines(l: &[&str]) -> Vec<String> {
        l.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_restart_that_reconciles_nothing_passes() {
        let l = lines(&["[INFO] reconciled: dataplane already up to date (0 adds/changes, 0 removals; 3 interfaces)"]);
        assert_eq!(
            reconcile_summary(&l),
            (true, "1 pass, 0 adds/changes, 0 removals".into())
        );
    }

    #[test]
    fn a_restart_that_removes_then_adds_routes_fails() {
        // What issue 24 saw: the first pass removed every remote route, the next put them back.
        let l = lines(&[
            "[INFO] reconciled: applied 7 operations (0 adds/changes, 7 removals) in 2ms",
            "[INFO] reconciled: applied 7 operations (7 adds/changes, 0 removals) in 2ms",
        ]);
        let (ok, s) = reconcile_summary(&l);
        assert!(!ok);
        assert!(s.contains("(0 adds/changes, 7 removals)"), "{s}");
        assert!(s.starts_with("2 passes: applied 7"), "{s}");
    }

    #[test]
    fn a_restart_that_never_reconciled_fails() {
        assert!(!reconcile_summary(&[]).0);
    }

    fn dump() -> Value {
        json!({
            "vif": [{"id": 3, "name": "vif1.0", "nh": 1}],
            "nh": [{"id": 5, "kind": "tunnel", "dip": "172.30.0.12"}],
            "mpls": [{"label": 16, "nh": 1}],
            "vrf": [{"id": 1, "name": "guest-a"}, {"id": 2, "name": "guest-b"}],
            "route": {
                "1": [{"prefix": "10.1.1.3/32", "nh": 5, "label": 16}],
                "2": [{"prefix": "10.2.2.3/32", "nh": 5, "label": 17}],
            },
        })
    }

    #[test]
    fn identical_dumps_have_no_diff() {
        assert!(table_diff(&dump(), &dump()).is_empty());
    }

    #[test]
    fn a_renumbered_tunnel_nexthop_is_a_diff_in_nh_and_routes() {
        let mut after = dump();
        after["nh"][0]["id"] = json!(6);
        after["route"]["1"][0]["nh"] = json!(6);
        assert_eq!(table_diff(&dump(), &after), vec!["nh", "route vrf 1"]);
    }

    #[test]
    fn a_removed_route_a_moved_label_and_a_missing_vrf_are_diffs() {
        let mut after = dump();
        after["mpls"][0]["label"] = json!(18);
        after["route"]["2"] = json!([]);
        assert_eq!(table_diff(&dump(), &after), vec!["mpls", "route vrf 2"]);
        let mut after = dump();
        after["vrf"] = json!([{"id": 1, "name": "guest-a"}]);
        after["route"].as_object_mut().expect("routes").remove("2");
        assert_eq!(table_diff(&dump(), &after), vec!["vrf", "route vrf 2"]);
    }

    #[test]
    fn counters_are_not_compared() {
        let mut before = dump();
        before["vif"][0]["stats"] = json!({"rx_packets": 1});
        let mut after = dump();
        after["vif"][0]["stats"] = json!({"rx_packets": 900});
        strip_counters(&mut before);
        strip_counters(&mut after);
        assert!(table_diff(&before, &after).is_empty());
    }
}
