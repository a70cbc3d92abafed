//! `vrouter-agent`: the dom0 daemon that programs the vRouter dataplane from configuration and
//! keeps it programmed across agent and dataplane restarts. See `docs/agent.md`.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use vrouter_agent::daemon::{install_signal_handlers, Agent, Options};
use vrouter_agent::metrics::{self, Health};
use vrouter_agent::source::FileSource;
use vrouter_dataplane::ctl::client::DEFAULT_SOCKET;

#[derive(Debug, Parser)]
#[command(
    name = "vrouter-agent",
    version,
    about = "Programs the vRouter dataplane from a declarative config; reloads on SIGHUP"
)]
struct Cli {
    /// Declarative config file (TOML; see docs/agent.md).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Dataplane control socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    dp_socket: PathBuf,
    /// Controller shim URL (not supported yet: use --config).
    #[arg(long, value_name = "URL")]
    controller: Option<String>,
    /// Serve Prometheus metrics (and /status, /healthz) on this loopback address.
    #[arg(long, value_name = "127.0.0.1:PORT")]
    metrics: Option<SocketAddr>,
    /// Directory of the allocation state file (agent-state.json).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/vrouter")]
    state_dir: PathBuf,
    /// Milliseconds between dataplane liveness checks.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    poll_ms: u64,
    /// Seconds between full reconciles when nothing changes.
    #[arg(long, value_name = "S", default_value_t = 30)]
    resync_s: u64,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let Some(config) = cli.config else {
        let why = if cli.controller.is_some() {
            "the controller config source is not implemented yet; use --config FILE"
        } else {
            "no config source: use --config FILE"
        };
        eprintln!("vrouter-agent: {why}");
        return ExitCode::from(2);
    };
    if let Some(url) = &cli.controller {
        log::warn!("--controller {url} ignored: the controller config source is not implemented yet; using --config");
    }
    if let Err(e) = install_signal_handlers() {
        eprintln!("vrouter-agent: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    let health = Arc::new(Health::default());
    health.start_time.store(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        std::sync::atomic::Ordering::Relaxed,
    );
    let opts = Options {
        dp_socket: cli.dp_socket.clone(),
        state_file: cli.state_dir.join("agent-state.json"),
        poll: Duration::from_millis(cli.poll_ms.max(1)),
        resync: Duration::from_secs(cli.resync_s.max(1)),
    };
    let mut agent = match Agent::new(opts, FileSource::new(&config), health.clone()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vrouter-agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(addr) = cli.metrics {
        match metrics::bind(addr) {
            Ok(l) => {
                let shown = l.local_addr().map_or(addr.to_string(), |a| a.to_string());
                if let Err(e) = metrics::spawn(l, cli.dp_socket.clone(), health) {
                    eprintln!("vrouter-agent: cannot start the metrics thread: {e}");
                    return ExitCode::FAILURE;
                }
                log::info!("metrics on http://{shown}/metrics");
            }
            Err(e) => {
                eprintln!("vrouter-agent: metrics on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    agent.run();
    ExitCode::SUCCESS
}
