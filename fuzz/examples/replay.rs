//! Runs inputs through one fuzz target without AFL, to debug a crash a fuzz run saved:
//!
//! ```text
//! cargo run -p vrouter-fuzz --example replay -- pipeline fuzz/out/crashes/pipeline/id:000000*
//! ```

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(name) = args.next() else {
        eprintln!("usage: replay TARGET FILE...");
        std::process::exit(2);
    };
    let Some((_, run)) = vrouter_fuzz::TARGETS.iter().find(|(n, _)| *n == name) else {
        eprintln!("unknown target {name}");
        std::process::exit(2);
    };
    for f in args {
        let data = std::fs::read(&f).unwrap_or_else(|e| panic!("{f}: {e}"));
        eprintln!("{f}: {} bytes", data.len());
        run(&data);
    }
    eprintln!("no crash");
}
