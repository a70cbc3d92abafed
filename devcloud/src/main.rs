//! `vrouter-devcloud`: one command brings up a CloudStack-style cloud in network namespaces and
//! proves it works. `up` builds it and prints a report, `status` shows what runs, `down` removes
//! every namespace and process it made.

pub(crate) mod checks;
mod net;
mod provision;
mod sys;
mod topology;

use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use sys::{DevcloudError, Result};
use topology::{Plan, RUN_DIR};

/// Token the devcloud's shim requires (it listens on the underlay, not loopback).
pub(crate) const TOKEN: &str = "devcloud";

/// What `up` started, so `status` and `down` find it.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct State {
    plan: Option<Plan>,
    /// (name, namespace, pid).
    procs: Vec<(String, String, u32)>,
    namespaces: Vec<String>,
    /// Each process's command line as `status` shows it, by name: absolute paths, so it can be
    /// re-run from anywhere (as root) once that process is stopped.
    #[serde(default)]
    commands: std::collections::BTreeMap<String, String>,
}

fn state_path() -> PathBuf {
    Path::new(RUN_DIR).join("state.json")
}

fn load_state() -> State {
    std::fs::read(state_path())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save_state(s: &State) -> Result<()> {
    std::fs::create_dir_all(RUN_DIR).map_err(|e| DevcloudError::Io(RUN_DIR.into(), e))?;
    let body = serde_json::to_vec_pretty(s).map_err(|e| DevcloudError::Step(e.to_string()))?;
    std::fs::write(state_path(), body)
        .map_err(|e| DevcloudError::Io(state_path().display().to_string(), e))
}

pub(crate) struct Opts {
    /// The vif hotplug hook (xen/scripts/vif-vrouter).
    hook: PathBuf,
    hosts: usize,
    vms: usize,
    install_deps: bool,
    keep_on_failure: bool,
    bin_dir: PathBuf,
}

/// The command line; `--help` and `--version` exit 0, a bad flag exits 2 with clap's message.
#[derive(Debug, Parser)]
#[command(
    name = "vrouter-devcloud",
    version,
    about = "A CloudStack-style cloud of network namespaces: hosts, VMs, controller, gateway"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Directory of the vrouter binaries [default: this program's directory].
    #[arg(long, global = true, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// The vif hotplug hook [default: xen/scripts/vif-vrouter].
    #[arg(long, global = true, value_name = "FILE")]
    hook: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build the cloud, provision it through the controller shim and check it end to end.
    Up {
        /// Compute hosts.
        #[arg(long, value_name = "N", default_value_t = 2,
              value_parser = clap::value_parser!(u16).range(1..))]
        hosts: u16,
        /// VMs, spread over the hosts.
        #[arg(long, value_name = "M", default_value_t = 4,
              value_parser = clap::value_parser!(u16).range(1..))]
        vms: u16,
        /// apt-get install the tools that are missing.
        #[arg(long)]
        install_deps: bool,
        /// Leave a failed cloud up for inspection.
        #[arg(long)]
        keep_on_failure: bool,
    },
    /// Show what runs, and each process's command line.
    Status,
    /// Stop every process and remove every namespace `up` made.
    Down,
}

fn main() {
    let (cmd, o) = match opts(Cli::parse()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("vrouter-devcloud: {e}");
            std::process::exit(2);
        }
    };
    let r = match cmd {
        Cmd::Up { .. } => up(&o),
        Cmd::Status => status(),
        Cmd::Down => {
            down();
            Ok(())
        }
    };
    if let Err(e) = r {
        eprintln!("vrouter-devcloud: {e}");
        std::process::exit(1);
    }
}

/// The command and its options. For `up`, the binary directory and the hook are made absolute
/// here (issue 24: daemons started as `./target/release/...` left command lines that only
/// worked from the source tree); a missing one is an error naming it.
fn opts(cli: Cli) -> std::result::Result<(Cmd, Opts), String> {
    let mut o = Opts {
        hook: cli
            .hook
            .unwrap_or_else(|| PathBuf::from("xen/scripts/vif-vrouter")),
        hosts: 2,
        vms: 4,
        install_deps: false,
        keep_on_failure: false,
        bin_dir: cli.bin_dir.unwrap_or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .unwrap_or_default()
        }),
    };
    if let Cmd::Up {
        hosts,
        vms,
        install_deps,
        keep_on_failure,
    } = cli.cmd
    {
        o.hosts = usize::from(hosts);
        o.vms = usize::from(vms);
        o.install_deps = install_deps;
        o.keep_on_failure = keep_on_failure;
        o.bin_dir = absolute("--bin-dir", &o.bin_dir, "cargo build --release --workspace")?;
        o.hook = absolute(
            "--hook",
            &o.hook,
            "run from the source tree or pass --hook PATH/TO/vif-vrouter",
        )?;
    }
    Ok((cli.cmd, o))
}

/// `p` made absolute, symlinks and `..` resolved; an error naming the option when it is missing.
fn absolute(option: &str, p: &Path, fix: &str) -> std::result::Result<PathBuf, String> {
    std::fs::canonicalize(p).map_err(|e| format!("{option} {}: {e} ({fix})", p.display()))
}

pub(crate) fn progress(msg: &str) {
    println!("==> {msg}");
}

/// Tools the devcloud runs, with the Debian package that provides each.
const TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("xenstore-write", "xenstore-utils"),
    ("busybox", "busybox"),
    ("iperf3", "iperf3"),
    ("tshark", "tshark"),
    ("ping", "iputils-ping"),
    ("nft", "nftables"),
    ("haproxy", "haproxy"),
    ("curl", "curl"),
];

fn prerequisites(o: &Opts) -> Result<()> {
    if !sys::is_root() {
        return Err(DevcloudError::NotRoot(
            std::env::args().collect::<Vec<_>>().join(" "),
        ));
    }
    let missing: Vec<&(&str, &str)> = TOOLS
        .iter()
        .filter(|(t, _)| sys::which(t).is_none())
        .collect();
    if !missing.is_empty() {
        let pkgs: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
        let fix = format!(
            "apt-get install -y --no-install-recommends {}",
            pkgs.join(" ")
        );
        if o.install_deps {
            progress(&format!("installing {}", pkgs.join(" ")));
            sys::run(&["apt-get", "update", "-q"])?;
            let mut cmd = vec!["apt-get", "install", "-y", "-q", "--no-install-recommends"];
            cmd.extend(pkgs.iter());
            sys::run(&cmd)?;
        } else {
            return Err(DevcloudError::Missing {
                tool: missing
                    .iter()
                    .map(|(t, _)| *t)
                    .collect::<Vec<_>>()
                    .join(", "),
                fix: format!("{fix} (or rerun with --install-deps)"),
            });
        }
    }
    for b in [
        "vrouter-shim",
        "vrouter-dp",
        "vrouter-agent",
        "vrouter-xenstored",
        "vrctl",
    ] {
        if !o.bin_dir.join(b).is_file() {
            return Err(DevcloudError::Missing {
                tool: b.into(),
                fix: "cargo build --release --workspace".into(),
            });
        }
    }
    if !o.hook.is_file() {
        return Err(DevcloudError::Missing {
            tool: o.hook.display().to_string(),
            fix: "run from the source tree or pass --hook PATH/TO/vif-vrouter".into(),
        });
    }
    Ok(())
}

fn up(o: &Opts) -> Result<()> {
    prerequisites(o)?;
    if o.hosts < 1 || o.vms < 1 {
        return Err(DevcloudError::Step(
            "--hosts and --vms must be at least 1".into(),
        ));
    }
    let existing: Vec<String> = sys::namespaces()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{}-", topology::PREFIX)))
        .collect();
    if !existing.is_empty() || !load_state().procs.is_empty() {
        return Err(DevcloudError::Step(format!(
            "a devcloud is already up ({} namespaces); run `vrouter-devcloud down` first",
            existing.len()
        )));
    }
    let started = Instant::now();
    let plan = Plan::new(o.hosts, o.vms);
    let mut st = State {
        plan: Some(plan.clone()),
        ..State::default()
    };
    let r = build(o, &plan, &mut st);
    if let Err(e) = &r {
        eprintln!("vrouter-devcloud: failed: {e}");
        if o.keep_on_failure {
            eprintln!("vrouter-devcloud: leaving it up for inspection (logs in {RUN_DIR}/logs); `vrouter-devcloud down` removes it");
        } else {
            eprintln!("vrouter-devcloud: tearing down (logs kept in {RUN_DIR}/logs)");
            down();
        }
        return r;
    }
    progress(&format!("devcloud up in {:.1} s; `vrouter-devcloud status` to inspect, `vrouter-devcloud down` to remove", started.elapsed().as_secs_f64()));
    Ok(())
}

fn logs_dir() -> PathBuf {
    Path::new(RUN_DIR).join("logs")
}

fn start(
    st: &mut State,
    name: &str,
    ns: &str,
    argv: Vec<String>,
    env: &[(&str, &str)],
) -> Result<u32> {
    let log = logs_dir().join(format!("{name}.log"));
    let child = sys::spawn_in(ns, &argv, &log, env)?;
    let pid = child.id();
    // The child is reaped by whoever outlives it; we track it by pid from here on.
    std::mem::forget(child);
    st.procs.push((name.into(), ns.into(), pid));
    st.commands
        .insert(name.into(), command_line(ns, env, &argv));
    save_state(st)?;
    Ok(pid)
}

/// The shell command that starts `argv` in namespace `ns` with `env` as the devcloud does, each
/// word quoted when the shell would split or expand it.
fn command_line(ns: &str, env: &[(&str, &str)], argv: &[String]) -> String {
    let quote = |w: &str| {
        if !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._-:=,@+".contains(c))
        {
            w.to_string()
        } else {
            format!("'{}'", w.replace('\'', "'\\''"))
        }
    };
    let mut words: Vec<String> = vec!["ip".into(), "netns".into(), "exec".into(), quote(ns)];
    if !env.is_empty() {
        words.push("env".into());
        words.extend(env.iter().map(|(k, v)| quote(&format!("{k}={v}"))));
    }
    words.extend(argv.iter().map(|w| quote(w)));
    words.join(" ")
}

pub(crate) fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Result<()> {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(DevcloudError::Step(format!(
        "timed out after {:?} waiting for {what}",
        timeout
    )))
}

pub(crate) fn bin(o: &Opts, name: &str) -> String {
    o.bin_dir.join(name).display().to_string()
}

fn build(o: &Opts, plan: &Plan, st: &mut State) -> Result<()> {
    std::fs::create_dir_all(logs_dir()).map_err(|e| DevcloudError::Io(RUN_DIR.into(), e))?;
    progress(&format!(
        "underlay, controller, gateway and {} host namespaces",
        plan.hosts.len()
    ));
    st.namespaces = plan.namespaces();
    save_state(st)?;
    net::build_underlay(plan)?;

    progress(&format!(
        "controller: vrouter-shim on {}:8082",
        plan.controller_ip
    ));
    let db = Path::new(RUN_DIR).join("shim.db");
    let _ = std::fs::remove_file(&db);
    start(
        st,
        "shim",
        &net::ctl_ns(),
        vec![
            bin(o, "vrouter-shim"),
            "--listen".into(),
            format!("{}:8082", plan.controller_ip),
            "--store".into(),
            format!("sqlite:{}", db.display()),
            "--token".into(),
            TOKEN.into(),
            // The BGP speaker for the edge router's session (issue 17).
            "--bgp".into(),
            plan.controller_ip.clone(),
        ],
        &[],
    )?;
    let vnc = provision::Vnc::new(&format!("http://{}:8082", plan.controller_ip), TOKEN);
    // The shim is reachable from the root namespace? No: only inside the devcloud. Talk to it
    // from the controller namespace through a helper thread that enters it.
    let provisioned = in_netns(&net::ctl_ns(), || {
        wait_for("the shim to answer", Duration::from_secs(15), || {
            vnc.get("/").is_ok()
        })?;
        provision::provision(&vnc, plan, &|m| progress(&format!("provision: {m}")))
    })?;
    checks::run_all(o, plan, st, &provisioned)
}

/// Runs `f` on a thread that has joined network namespace `ns` (setns affects one thread).
pub(crate) fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let fd = std::fs::File::open(&path).map_err(|e| DevcloudError::Io(path.clone(), e))?;
            // SAFETY: setns on this thread only, with a valid namespace fd we hold open.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&fd), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(DevcloudError::Io(
                    format!("setns {path}"),
                    std::io::Error::last_os_error(),
                ));
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(DevcloudError::Step("a devcloud thread panicked".into())))
    })
}

fn status() -> Result<()> {
    let st = load_state();
    let Some(plan) = st.plan else {
        println!("devcloud: down");
        return Ok(());
    };
    println!(
        "devcloud: {} hosts, {} VMs",
        plan.hosts.len(),
        plan.vms.len()
    );
    for (name, ns, pid) in &st.procs {
        println!(
            "  {:<24} {:<16} pid {:<8} {}",
            name,
            ns,
            pid,
            if sys::alive(*pid) { "running" } else { "DEAD" }
        );
        if let Some(c) = st.commands.get(name) {
            println!("      {c}");
        }
    }
    let ns: Vec<String> = sys::namespaces()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{}-", topology::PREFIX)))
        .collect();
    println!("  namespaces: {}", ns.len());
    Ok(())
}

fn down() {
    let st = load_state();
    for (_, _, pid) in st.procs.iter().rev() {
        sys::stop_pid(*pid, Duration::from_secs(3));
    }
    let prefix = format!("{}-", topology::PREFIX);
    let mut all: Vec<String> = st.namespaces.clone();
    for n in sys::namespaces() {
        if n.starts_with(&prefix) && !all.contains(&n) {
            all.push(n);
        }
    }
    for n in all.iter().rev() {
        sys::del_netns(n);
    }
    // Everything it wrote goes too (state, sockets, the shim's database, leases), except the
    // logs, which explain a failed run.
    if let Ok(entries) = std::fs::read_dir(RUN_DIR) {
        for e in entries.flatten() {
            let p = e.path();
            if p.file_name().is_some_and(|n| n == "logs") {
                continue;
            }
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
    println!(
        "devcloud: down ({} processes stopped, {} namespaces removed)",
        st.procs.len(),
        all.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn parse(a: &[String]) -> std::result::Result<(Cmd, Opts), String> {
        let cli = Cli::try_parse_from(
            std::iter::once("vrouter-devcloud".to_string()).chain(a.iter().cloned()),
        )
        .map_err(|e| e.to_string())?;
        opts(cli)
    }

    #[test]
    fn up_makes_a_relative_bin_dir_and_hook_absolute() {
        // Tests run in the package directory: ./src and ./Cargo.toml exist.
        let (cmd, o) = parse(&args(&[
            "up",
            "--bin-dir",
            "./src/../src",
            "--hook",
            "./Cargo.toml",
            "--hosts",
            "4",
        ]))
        .expect("parses");
        assert!(matches!(cmd, Cmd::Up { .. }), "{cmd:?}");
        assert_eq!(o.hosts, 4);
        let here = std::env::current_dir()
            .expect("cwd")
            .canonicalize()
            .expect("canonical cwd");
        assert_eq!(o.bin_dir, here.join("src"));
        assert_eq!(o.hook, here.join("Cargo.toml"));
        assert!(bin(&o, "vrouter-agent").starts_with('/'));
    }

    #[test]
    fn up_with_a_missing_bin_dir_is_an_error_naming_it() {
        let e = parse(&args(&["up", "--bin-dir", "./no-such-dir"])).err();
        let e = e.expect("an error");
        assert!(e.starts_with("--bin-dir ./no-such-dir: "), "{e}");
        assert!(e.contains("cargo build --release"), "{e}");
    }

    #[test]
    fn down_does_not_need_the_binaries() {
        assert!(parse(&args(&["down", "--bin-dir", "./no-such-dir"])).is_ok());
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(parse(&args(&["up", "--hosts", "four"])).is_err());
        assert!(parse(&args(&["up", "--hosts"])).is_err());
        assert!(parse(&args(&["up", "--frobnicate"])).is_err());
        assert!(parse(&[]).is_err());
    }

    #[test]
    fn command_lines_can_be_pasted_into_a_shell() {
        let c = command_line(
            "dc-h1",
            &[("XENSTORED_PATH", "/run/x/xs.sock")],
            &args(&["/abs/vrouter-agent", "--hostname", "it's", ""]),
        );
        assert_eq!(
            c,
            "ip netns exec dc-h1 env XENSTORED_PATH=/run/x/xs.sock /abs/vrouter-agent --hostname 'it'\\''s' ''"
        );
    }
}
