// SPDX-License-Identifier: Apache-2.0
//! kill -9 under a write load: every acknowledged object is there after the restart, and an
//! agent's watch resumes where it left off.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Shim, TempDir};
use serde_json::json;

/// Creates VMs until told to stop or the server dies; returns the uuids acknowledged with 200.
fn writer(port: u16, id: usize, stop: Arc<AtomicBool>) -> Vec<String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build();
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in 0..20_000u32 {
        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
            break;
        }
        let uuid = format!("{id:08x}-0000-4000-8000-{n:012x}");
        let name = format!("i-{id}-{n}-VM");
        let body = json!({"virtual-machine": {"name": name, "uuid": uuid, "fq_name": [name]}});
        match agent
            .post(&format!("http://127.0.0.1:{port}/virtual-machines"))
            .set("Content-Type", "application/json")
            .send_string(&body.to_string())
        {
            Ok(r) if r.status() == 200 => acked.push(uuid),
            Ok(_) | Err(ureq::Error::Status(..)) => {
                panic!("unexpected error status creating {uuid}")
            }
            Err(_) => break, // the server died: this one was not acknowledged
        }
    }
    acked
}

#[test]
fn kill_9_under_write_load_keeps_every_acknowledged_object() {
    let dir = TempDir::new("restart");
    let store = format!("sqlite:{}", dir.0.join("shim.db").display());
    let mut shim = Shim::start(&store, &[]);
    let port = shim.port;

    // An agent with a resumable position, to check the watch survives too.
    shim.ok(
        "POST",
        "/vrouter/agents",
        Some(&json!({"hostname": "h1", "fabric_ip": "10.0.0.1"})),
    );
    let w = shim.ok("GET", "/vrouter/watch?host=h1&since=0&timeout=1", None);
    let rev = w["rev"].as_u64().expect("rev");

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|id| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || writer(port, id + 1, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    shim.kill(); // SIGKILL while the writers are mid-request
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<String> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("writer thread"))
        .collect();
    assert!(
        acked.len() > 100,
        "too few writes acknowledged before the kill: {}",
        acked.len()
    );

    let shim = Shim::start_on(port, &store, &[]);
    let mut missing = Vec::new();
    for u in &acked {
        if shim.get(&format!("/virtual-machine/{u}")).0 != 200 {
            missing.push(u.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged objects lost: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    let count = shim.ok("GET", "/virtual-machines?count=true", None);
    assert!(count["virtual-machines"]["count"].as_u64() >= Some(acked.len() as u64));
    // Defaults were not re-created (one of each), and the agent resumes without a reset.
    let vns = shim.ok("GET", "/virtual-networks?count=true", None);
    assert_eq!(vns["virtual-networks"]["count"], 3);
    let w = shim.ok(
        "GET",
        &format!("/vrouter/watch?host=h1&since={rev}&timeout=1"),
        None,
    );
    assert_eq!(w["reset"], false, "{w}");
    eprintln!("{} acknowledged creates survived kill -9", acked.len());
}
