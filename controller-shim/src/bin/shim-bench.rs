// SPDX-License-Identifier: Apache-2.0
//! `shim-bench`: creates/s and reads/s against a shim on loopback (SQLite store).
//!
//! `shim-bench [--url http://127.0.0.1:8082] [--creates N] [--seconds S] [--threads T]`.
//! Without `--url` it starts `vrouter-shim` (next to this binary) on a free port with a
//! temporary SQLite file, and kills it at the end. Every loop is bounded in count and time.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;

/// The command line; `--help` and `--version` exit 0, a bad value exits 2 naming the flag.
#[derive(Debug, Parser)]
#[command(
    name = "shim-bench",
    version,
    about = "Creates/s and reads/s against a vrouter-shim on loopback"
)]
struct Opts {
    /// A running shim; without it one is started next to this binary (temporary SQLite file).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Objects to create.
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    creates: usize,
    /// Seconds each phase runs at most.
    #[arg(long, value_name = "S", default_value_t = 5)]
    seconds: u64,
    /// Client threads.
    #[arg(long, value_name = "T", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
}

fn post(agent: &ureq::Agent, url: &str, body: &str) -> Result<u16, String> {
    match agent
        .post(url)
        .set("Content-Type", "application/json")
        .send_string(body)
    {
        Ok(r) => {
            let st = r.status();
            let _ = r.into_string();
            Ok(st)
        }
        Err(ureq::Error::Status(st, _)) => Ok(st),
        Err(e) => Err(e.to_string()),
    }
}

/// What one phase of the benchmark did: requests that succeeded, requests that failed, and in
/// what time.
#[derive(Debug)]
struct Phase {
    done: usize,
    failed: usize,
    time: Duration,
}

/// The HTTP client each benchmark thread uses (one per thread: no connection sharing).
fn http_agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build()
}

fn main() {
    let o = Opts::parse();
    let dir = std::env::temp_dir().join(format!("shim-bench-{}", std::process::id()));
    let (url, child) = match &o.url {
        Some(u) => (u.clone(), None),
        None => {
            let (url, c) = start_shim(&dir);
            (url, Some(c))
        }
    };
    let (creates, created) = bench_creates(&url, &o);
    let reads = bench_reads(&url, &o, Arc::new(created));
    println!(
        "creates: {} in {:.2}s = {:.0}/s ({} failed); reads: {} in {:.2}s = {:.0}/s ({} failed); {} client threads",
        creates.done,
        creates.time.as_secs_f64(),
        creates.done as f64 / creates.time.as_secs_f64(),
        creates.failed,
        reads.done,
        reads.time.as_secs_f64(),
        reads.done as f64 / reads.time.as_secs_f64(),
        reads.failed,
        o.threads
    );
    if let Some(mut c) = child {
        let _ = c.kill();
        let _ = c.wait();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Starts `vrouter-shim` (next to this binary) on a free loopback port with a SQLite store in
/// `dir`, and waits up to 10 s for it to listen; returns its URL and process. Exits when it
/// cannot be started.
fn start_shim(dir: &Path) -> (String, Child) {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(18099);
    let _ = std::fs::create_dir_all(dir);
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("vrouter-shim")));
    let Some(exe) = exe else {
        eprintln!("shim-bench: cannot locate vrouter-shim");
        std::process::exit(1);
    };
    let spawned = Command::new(exe)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--store")
        .arg(format!("sqlite:{}", dir.join("bench.db").display()))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn();
    let child = match spawned {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shim-bench: starting vrouter-shim: {e}");
            std::process::exit(1);
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    (format!("http://127.0.0.1:{port}"), child)
}

/// Creates: `o.creates` virtual-machines with client-given uuids, split over the threads,
/// bounded by 4 times `o.seconds`. Returns the phase (only answers 200 count as done) and the
/// indices of the objects that were created, for the reads.
fn bench_creates(url: &str, o: &Opts) -> (Phase, Vec<usize>) {
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let limit = Duration::from_secs(o.seconds * 4);
    let t0 = Instant::now();
    let handles: Vec<_> = (0..usize::from(o.threads))
        .map(|_| {
            let (next, failures, url) = (Arc::clone(&next), Arc::clone(&failures), url.to_string());
            let total = o.creates;
            std::thread::spawn(move || {
                let agent = http_agent();
                let coll = format!("{url}/virtual-machines");
                let mut created = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total || t0.elapsed() > limit {
                        break;
                    }
                    let uuid = format!("b0000000-0000-4000-8000-{n:012x}");
                    let name = format!("bench-{n}");
                    let body =
                        json!({"virtual-machine": {"name": name, "uuid": uuid, "fq_name": [name]}})
                            .to_string();
                    if post(&agent, &coll, &body) == Ok(200) {
                        created.push(n);
                    } else {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                created
            })
        })
        .collect();
    let mut created = Vec::new();
    for h in handles {
        created.extend(h.join().unwrap_or_default());
    }
    let phase = Phase {
        time: t0.elapsed(),
        done: created.len(),
        failed: failures.load(Ordering::Relaxed),
    };
    (phase, created)
}

/// Reads: GET /virtual-machine/<uuid> of the `created` objects (none: no reads), for
/// `o.seconds`; only answers 200 count as done.
fn bench_reads(url: &str, o: &Opts, created: Arc<Vec<usize>>) -> Phase {
    let reads = Arc::new(AtomicUsize::new(0));
    let read_fail = Arc::new(AtomicUsize::new(0));
    let t1 = Instant::now();
    let dur = Duration::from_secs(o.seconds);
    let handles: Vec<_> = (0..usize::from(o.threads))
        .map(|t| {
            let (reads, read_fail, url, created) = (
                Arc::clone(&reads),
                Arc::clone(&read_fail),
                url.to_string(),
                Arc::clone(&created),
            );
            std::thread::spawn(move || {
                let agent = http_agent();
                let mut i = t * 7919;
                while !created.is_empty() && t1.elapsed() < dur {
                    i = (i + 104_729) % created.len();
                    let n = created[i];
                    let u = format!("{url}/virtual-machine/b0000000-0000-4000-8000-{n:012x}");
                    match agent.get(&u).call() {
                        Ok(r) if r.status() == 200 => {
                            let _ = r.into_string();
                            reads.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            read_fail.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    Phase {
        time: t1.elapsed(),
        done: reads.load(Ordering::Relaxed),
        failed: read_fail.load(Ordering::Relaxed),
    }
}
