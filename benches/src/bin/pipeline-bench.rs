//! `pipeline-bench`: packets per second of the dataplane pipeline on one core.
//!
//! `cargo run --release -p vrouter-benches --bin pipeline-bench -- --json` prints one JSON object
//! per case. Options: `--case NAME` (repeatable), `--routes N` (repeatable, for the route-scale
//! sweep of encap-mplsoudp), `--flows N` (repeatable, the flow counts of `flow-forward` and
//! `flow-miss-policy`; default 1000 and 1000000), `--seconds S`, `--batch B`, `--pkt-len L`,
//! `--packets N` (a fixed count instead of a duration: for `valgrind --tool=callgrind`),
//! `--windows K` (split the run into K equal windows and report the fastest as `mpps`, with the
//! whole run's mean as `mean_mpps`: on a shared host other tenants slow some windows).

use clap::Parser;
use std::time::Duration;
use vrouter_benches::{run_case, Case, Report, RunOpts};

/// What the command line asked for.
#[derive(Debug, Parser)]
#[command(
    name = "pipeline-bench",
    version,
    about = "Packets per second of the dataplane pipeline on one core, per case"
)]
struct Cli {
    /// One JSON object per case.
    #[arg(long)]
    json: bool,
    /// A case to run (repeatable) [every case, and the route sweep].
    #[arg(long = "case", value_name = "NAME", value_parser = parse_case)]
    cases: Vec<Case>,
    /// Route counts of the encap-mplsoudp sweep (repeatable) [1, 1000, 100000, 1000000].
    #[arg(long = "routes", value_name = "N")]
    routes_sweep: Vec<usize>,
    /// Flow counts of flow-forward and flow-miss-policy (repeatable) [1000, 1000000].
    #[arg(long = "flows", value_name = "N")]
    flows_sweep: Vec<usize>,
    /// Measuring time per case.
    #[arg(long, default_value_t = 1.0, value_name = "S")]
    seconds: f64,
    /// Packets per receive burst.
    #[arg(long, default_value_t = 256, value_name = "B")]
    batch: usize,
    /// Frame length.
    #[arg(long = "pkt-len", default_value_t = 64, value_name = "L")]
    pkt_len: usize,
    /// A fixed packet count instead of a duration (for `valgrind --tool=callgrind`).
    #[arg(long, value_name = "N")]
    packets: Option<u64>,
    /// Split the run into K windows and report the fastest.
    #[arg(long, default_value_t = 1, value_name = "K")]
    windows: usize,
}

/// The run the command line asks for, with the defaults of a full run.
struct Args {
    json: bool,
    cases: Vec<Case>,
    routes_sweep: Vec<usize>,
    flows_sweep: Vec<usize>,
    opts: RunOpts,
}

fn parse_case(v: &str) -> Result<Case, String> {
    Case::from_name(v).ok_or_else(|| {
        format!(
            "unknown case {v:?}; cases: {}",
            Case::ALL.map(|c| c.name()).join(", ")
        )
    })
}

fn main() {
    // A closed pipe (`pipeline-bench | head`) ends it like `cat`, not with a panic.
    // SAFETY: restoring the default disposition of SIGPIPE has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = args(Cli::parse());
    let reports = run_all(&args);
    if !args.json {
        print_ratios(&reports);
    }
}

fn args(c: Cli) -> Args {
    let default_run = c.cases.is_empty() && c.routes_sweep.is_empty();
    let cases = if c.cases.is_empty() {
        Case::ALL.to_vec()
    } else {
        c.cases
    };
    let routes_sweep = if c.routes_sweep.is_empty() && default_run {
        vec![1, 1000, 100_000, 1_000_000]
    } else {
        c.routes_sweep
    };
    let flows_sweep = if c.flows_sweep.is_empty() {
        vec![1000, 1_000_000]
    } else {
        c.flows_sweep
    };
    Args {
        json: c.json,
        cases,
        routes_sweep,
        flows_sweep,
        opts: RunOpts {
            batch: c.batch,
            pkt_len: c.pkt_len,
            duration: Duration::from_secs_f64(c.seconds.max(0.0)),
            packets: c.packets,
            windows: c.windows,
        },
    }
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
