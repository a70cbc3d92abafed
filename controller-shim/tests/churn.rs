// SPDX-License-Identifier: Apache-2.0
//! The shim's memory under VM churn: create a VM, its interface and address, bind it on a
//! host, unbind it and delete all three, over and over. Each cycle leaves tombstones in the
//! hosts' views (what lets a reconnecting agent catch up); past `--view-tombstones` a view
//! forgets them, so the resident set levels off instead of growing with every VM ever seen.
//! The same churn with the limit out of reach is the control: there it does grow, so a flat
//! curve is not a measurement that cannot move.

mod common;

use common::bodies::{iip, vm, vmi, vn};
use common::{Shim, TempDir};
use serde_json::json;

const VN: &str = "a0f3c5d2-8e61-4b7a-9c2d-1e4f5a6b7c8d";

/// Hosts that watch the network besides h1 (each has a view that gets every route).
const WATCHERS: u32 = 2;

/// The child's resident set in kB.
fn rss_kb(shim: &Shim) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", shim.child.id()))
        .expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// One cycle: VM `i` created, bound on h1 (the watchers have the network too, so they get the route),
/// unbound and deleted.
fn cycle(shim: &Shim, i: u32) {
    let name = format!("i-2-{i}-VM");
    let vm_uuid = format!("5e6f7a8b-9c0d-4e1f-8a2b-{i:012x}");
    let vmi_uuid = format!("c1d2e3f4-a5b6-4c7d-8e9f-{i:012x}");
    shim.ok("POST", "/virtual-machines", Some(&vm(&vm_uuid, &name)));
    shim.ok(
        "POST",
        "/virtual-machine-interfaces",
        Some(&vmi(&vmi_uuid, &name, 0, "churn")),
    );
    let r = shim.ok("POST", "/instance-ips", Some(&iip(&name, 0, "churn")));
    let iip_uuid = r["instance-ip"]["uuid"].as_str().expect("iip uuid");
    let binding = json!({"host": "h1", "vmi_uuid": vmi_uuid});
    shim.ok("POST", "/vrouter/bindings", Some(&binding));
    shim.ok("DELETE", "/vrouter/bindings", Some(&binding));
    for path in [
        format!("/instance-ip/{iip_uuid}"),
        format!("/virtual-machine-interface/{vmi_uuid}"),
        format!("/virtual-machine/{vm_uuid}"),
    ] {
        let (code, reply) = shim.delete(&path);
        assert!(code == 200 || code == 204, "DELETE {path}: {code} {reply}");
    }
}

/// Runs `warmup` cycles, then `cycles` more, with the shim given `extra`; the resident set
/// growth over the second part, in kB.
fn growth_kb(tag: &str, extra: &[&str], warmup: u32, cycles: u32) -> i64 {
    let dir = TempDir::new(tag);
    let mut args = vec!["--agent-ttl", "0"];
    args.extend_from_slice(extra);
    let shim = Shim::start(
        &format!("sqlite:{}", dir.0.join("shim.db").display()),
        &args,
    );
    shim.ok(
        "POST",
        "/virtual-networks",
        Some(&vn(VN, "churn", "10.20.0.0", "10.20.0.1")),
    );
    let agent = json!({"hostname": "h1", "fabric_ip": "172.30.0.11"});
    shim.ok("POST", "/vrouter/agents", Some(&agent));
    // Hosts h2.. keep one VM of the network bound each, so every h1 binding reaches each of
    // their views as a route: the tombstones a cycle leaves grow with the watchers, while
    // what the store itself keeps (SQLite's page cache) does not — a clear signal over noise.
    for w in 2..=1 + WATCHERS {
        let host = format!("h{w}");
        let agent = json!({"hostname": host, "fabric_ip": format!("172.30.0.{}", 10 + w)});
        shim.ok("POST", "/vrouter/agents", Some(&agent));
        let vm_uuid = format!("5e6f7a8b-9c0d-4e1f-8a2b-0000fffff{w:03x}");
        let vmi_uuid = format!("c1d2e3f4-a5b6-4c7d-8e9f-0000fffff{w:03x}");
        let name = format!("watcher-{w}");
        shim.ok("POST", "/virtual-machines", Some(&vm(&vm_uuid, &name)));
        shim.ok(
            "POST",
            "/virtual-machine-interfaces",
            Some(&vmi(&vmi_uuid, &name, 0, "churn")),
        );
        shim.ok("POST", "/instance-ips", Some(&iip(&name, 0, "churn")));
        let bind = json!({"host": host, "vmi_uuid": vmi_uuid});
        shim.ok("POST", "/vrouter/bindings", Some(&bind));
    }
    for i in 1..=warmup {
        cycle(&shim, i);
    }
    let before = rss_kb(&shim);
    for i in warmup + 1..=warmup + cycles {
        cycle(&shim, i);
    }
    let after = rss_kb(&shim);
    eprintln!("{tag}: rss {before} kB after {warmup} cycles, {after} kB after {cycles} more");
    after as i64 - before as i64
}

#[test]
fn memory_levels_off_under_vm_churn_once_views_compact() {
    // 1200 cycles leave ~1200 tombstones per view: past a limit of 64 the views compact about
    // every 64 cycles, with the default (4096) never.
    let bounded = growth_kb("churn-bounded", &["--view-tombstones", "64"], 300, 1200);
    let unbounded = growth_kb("churn-unbounded", &[], 300, 1200);
    assert!(
        unbounded >= 400,
        "control: without compaction 1200 cycles should grow the shim (~0.5 kB each), grew {unbounded} kB"
    );
    // What both runs share (SQLite's page cache, allocator slack) grows by 80-290 kB here from
    // run to run; the tombstones alone are what the difference measures.
    assert!(
        unbounded - bounded >= 200,
        "the shim keeps growing under churn: {bounded} kB over 1200 cycles with compaction \
         every 64, {unbounded} kB without"
    );
}
