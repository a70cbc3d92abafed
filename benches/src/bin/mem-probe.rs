//! `mem-probe`: what random reads cost on this machine, by working-set size and page size.
//!
//! A FIB of a million routes or a flow table of a million flows is read at random, one cache
//! line per packet, so the pipeline's large-table cases are bounded by two figures this prints
//! for each size: the time per line when many independent reads overlap (the best a prefetching
//! batch can do) and the latency of one read that depends on the previous one. Run it beside
//! `pipeline-bench` to see how much of a large-table case is the machine's memory system.
//!
//! ```text
//! mem-probe [--json] [--max-mib N] [--pages thp|4k|both]
//! ```
//! One line per (size, page kind); sizes 1, 4, 16, ... MiB up to `--max-mib` (default 256, at
//! most 16384; a size the machine cannot allocate ends the run with an error).

use std::hint::black_box;
use std::time::Instant;

/// Reads per timed round of independent loads (dependent rounds do a tenth).
const READS: usize = 20_000_000;
/// Timed rounds per measurement; the fastest counts (the host is shared).
const ROUNDS: usize = 3;
const LINE: usize = 64;
const HUGE: usize = 2 << 20;

/// A buffer of `bytes`, every byte written, whose 2 MiB-aligned interior is advised for (or
/// against) transparent huge pages before the first touch. Returns the buffer and the offset of
/// the aligned interior, which the probe reads.
fn buffer(bytes: usize, huge: bool) -> (Vec<u8>, usize) {
    let mut v: Vec<u8> = Vec::new();
    if let Err(e) = v.try_reserve_exact(bytes + HUGE) {
        eprintln!("mem-probe: cannot allocate {} MiB: {e}", bytes >> 20);
        std::process::exit(1);
    }
    let start = v.as_ptr() as usize;
    let off = start.next_multiple_of(HUGE) - start;
    #[cfg(target_os = "linux")]
    // SAFETY: [start + off, start + off + bytes) lies inside the allocation `v` owns (its
    // capacity is bytes + HUGE and off < HUGE); madvise only changes how the kernel backs those
    // pages, not their contents or validity.
    unsafe {
        libc::madvise(
            (start + off) as *mut libc::c_void,
            bytes,
            if huge {
                libc::MADV_HUGEPAGE
            } else {
                libc::MADV_NOHUGEPAGE
            },
        );
    }
    // The first touch, after the advice: every line written, so no read hits the zero page.
    v.resize(bytes + HUGE, 1);
    (v, off)
}

/// xorshift64: a cheap index stream the prefetcher cannot follow.
#[inline(always)]
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Nanoseconds per line of `READS` independent random reads of `buf` (lines `0..=mask`).
fn independent(buf: &[u8], mask: u64) -> f64 {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut sum = 0u64;
    let t = Instant::now();
    for _ in 0..READS {
        let i = (next(&mut x) & mask) as usize * LINE;
        sum = sum.wrapping_add(u64::from(buf[i]));
    }
    black_box(sum);
    t.elapsed().as_nanos() as f64 / READS as f64
}

/// Nanoseconds per read of a chain of random reads, each index depending on the byte read
/// before (no overlap: the latency of one miss).
fn dependent(buf: &[u8], mask: u64) -> f64 {
    let n = READS / 10;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut idx = 0u64;
    let t = Instant::now();
    for _ in 0..n {
        let b = buf[idx as usize * LINE + 1];
        idx = (next(&mut x) ^ u64::from(b)) & mask;
    }
    black_box(idx);
    t.elapsed().as_nanos() as f64 / n as f64
}

/// Page kinds `--pages` chooses.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Pages {
    /// Transparent huge pages.
    Thp,
    /// 4 KiB pages.
    #[value(name = "4k")]
    Small,
    /// Both, one line each.
    Both,
}

/// The command line.
#[derive(Debug, clap::Parser)]
#[command(
    name = "mem-probe",
    version,
    about = "What random reads cost on this machine, by working-set size and page size"
)]
struct Cli {
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// Largest working set, MiB.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=16384))]
    max_mib: u32,
    /// Page kinds.
    #[arg(long, value_enum, default_value = "both")]
    pages: Pages,
}

fn main() {
    // A closed pipe (`mem-probe | head`) ends it like `cat`, not with a panic.
    // SAFETY: restoring the default disposition of SIGPIPE has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = <Cli as clap::Parser>::parse();
    let json = cli.json;
    let max_mib = cli.max_mib as usize;
    let pages = match cli.pages {
        Pages::Thp => vec![true],
        Pages::Small => vec![false],
        Pages::Both => vec![true, false],
    };
    if !json {
        println!("working set  pages  independent ns/line  dependent ns/read");
    }
    let mut mib = 1usize;
    while mib <= max_mib {
        for &huge in &pages {
            let bytes = mib << 20;
            let (v, off) = buffer(bytes, huge);
            let buf = &v[off..off + bytes];
            let mask = (bytes / LINE - 1) as u64;
            let mut best = (f64::MAX, f64::MAX);
            for _ in 0..ROUNDS {
                best.0 = best.0.min(independent(buf, mask));
                best.1 = best.1.min(dependent(buf, mask));
            }
            let kind = if huge { "thp" } else { "4k" };
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "mib": mib, "pages": kind,
                        "independent_ns_per_line": (best.0 * 100.0).round() / 100.0,
                        "dependent_ns": (best.1 * 10.0).round() / 10.0,
                    })
                );
            } else {
                println!(
                    "{mib:>7} MiB  {kind:>5}  {:>19.2}  {:>17.1}",
                    best.0, best.1
                );
            }
        }
        mib *= 4;
    }
}
