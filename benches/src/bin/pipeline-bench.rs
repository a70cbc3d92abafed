//! `pipeline-bench`: packets per second of the dataplane pipeline on one core.
//!
//! `cargo run --release -p vrouter-benches --bin pipeline-bench -- --json` prints one JSON object
//! per case. Options: `--case NAME` (repeatable), `--routes N` (repeatable, for the route-scale
//! sweep of encap-mplsoudp), `--flows N` (repeatable, the flow counts of `flow-forward` and
//! `flow-miss-policy`; default 1000 and 1000000), `--seconds S`, `--batch B`, `--pkt-len L`,
//! `--packets N` (a fixed count instead of a duration: for `valgrind --tool=callgrind`),
//! `--windows K` (split the run into K equal windows and report the fastest as `mpps`, with the
//! whole run's mean as `mean_mpps`: on a shared host other tenants slow some windows).

use std::time::Duration;
use vrouter_benches::{run_case, Case, Report, RunOpts};

/// What the command line asked for.
struct Args {
    json: bool,
    cases: Vec<Case>,
    routes_sweep: Vec<usize>,
    flows_sweep: Vec<usize>,
    opts: RunOpts,
}

const USAGE: &str = "usage: pipeline-bench [--json] [--case NAME]... [--routes N]... [--flows N]... [--seconds S] [--batch B] [--pkt-len L] [--packets N] [--windows K]";

fn main() {
    let Some(args) = parse_args() else {
        println!("{USAGE}");
        return;
    };
    let reports = run_all(&args);
    if !args.json {
        print_ratios(&reports);
    }
}

/// Parses the command line, with the defaults of a full run; `None` for `--help`. Exits on a
/// bad argument.
fn parse_args() -> Option<Args> {
    let mut json = false;
    let mut cases = Vec::new();
    let mut routes_sweep = Vec::new();
    let mut flows_sweep = Vec::new();
    let mut seconds = 1.0f64;
    let mut batch = 256usize;
    let mut pkt_len = 64usize;
    let mut packets = None;
    let mut windows = 1usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| {
            args.next()
                .unwrap_or_else(|| die(&format!("{name} needs a value\n{USAGE}")))
        };
        match a.as_str() {
            "--json" => json = true,
            "--case" => {
                let v = val("--case");
                cases.push(Case::from_name(&v).unwrap_or_else(|| {
                    die(&format!(
                        "unknown case {v:?}; cases: {}",
                        Case::ALL.map(|c| c.name()).join(", ")
                    ))
                }));
            }
            "--routes" => routes_sweep.push(parse(&val("--routes"), "--routes")),
            "--flows" => flows_sweep.push(parse(&val("--flows"), "--flows")),
            "--seconds" => seconds = parse(&val("--seconds"), "--seconds"),
            "--batch" => batch = parse(&val("--batch"), "--batch"),
            "--pkt-len" => pkt_len = parse(&val("--pkt-len"), "--pkt-len"),
            "--packets" => packets = Some(parse(&val("--packets"), "--packets")),
            "--windows" => windows = parse(&val("--windows"), "--windows"),
            "-h" | "--help" => return None,
            other => die(&format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let default_run = cases.is_empty() && routes_sweep.is_empty();
    if cases.is_empty() {
        cases = Case::ALL.to_vec();
    }
    if routes_sweep.is_empty() && default_run {
        routes_sweep = vec![1, 1000, 100_000, 1_000_000];
    }
    if flows_sweep.is_empty() {
        flows_sweep = vec![1000, 1_000_000];
    }
    let opts = RunOpts {
        batch,
        pkt_len,
        duration: Duration::from_secs_f64(seconds),
        packets,
        windows,
    };
    Some(Args {
        json,
        cases,
        routes_sweep,
        flows_sweep,
        opts,
    })
}

/// Runs every case (the flow cases per flow count, then the encap-mplsoudp route sweep),
/// printing each result as it comes.
fn run_all(args: &Args) -> Vec<Report> {
    let opts = args.opts;
    let mut reports: Vec<Report> = Vec::new();
    let mut emit = |r: Report| {
        if args.json {
            println!("{}", r.json());
        } else {
            println!(
                "{:<20} routes={:<8} flows={:<8} {:>8.2} Mpps {:>7.2} ns/pkt  drops={}",
                r.case.name(),
                r.routes,
                r.flows,
                r.mpps,
                r.ns_per_pkt,
                r.drops
            );
        }
        reports.push(r);
    };
    for &c in &args.cases {
        if Case::FLOWS.contains(&c) {
            for &n in &args.flows_sweep {
                emit(run_case(c, n, opts));
            }
        } else {
            emit(run_case(c, 1, opts));
        }
    }
    for &n in &args.routes_sweep {
        if n > 1 || !args.cases.contains(&Case::EncapMplsoudp) {
            emit(run_case(Case::EncapMplsoudp, n, opts));
        }
    }
    reports
}

/// Each result as a multiple of baseline-l2-touch's rate, when it ran.
fn print_ratios(reports: &[Report]) {
    if let Some(base) = reports
        .iter()
        .find(|r| r.case == Case::BaselineL2Touch)
        .map(|r| r.mpps)
    {
        println!("ratios to baseline-l2-touch ({base:.2} Mpps):");
        for r in reports {
            println!(
                "  {:<20} routes={:<8} flows={:<8} {:.2}x",
                r.case.name(),
                r.routes,
                r.flows,
                r.mpps / base
            );
        }
    }
}

fn parse<T: std::str::FromStr>(s: &str, name: &str) -> T {
    s.parse()
        .unwrap_or_else(|_| die(&format!("{name}: cannot parse {s:?}")))
}

fn die(msg: &str) -> ! {
    eprintln!("pipeline-bench: {msg}");
    std::process::exit(2)
}
