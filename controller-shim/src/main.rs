// SPDX-License-Identifier: Apache-2.0
//! `vrouter-shim` daemon: `vrouter-shim --listen 127.0.0.1:8082 --store sqlite:PATH [--token T]`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use vrouter_shim::server::{self, Config};

/// The command line; `--help` and `--version` exit 0, a bad flag exits 2 with clap's message.
#[derive(Debug, Parser)]
#[command(
    name = "vrouter-shim",
    version,
    about = "Contrail VNC API controller for CloudStack's Contrail plugin, and the vrouter agents' \
             route distribution"
)]
struct Args {
    /// Address to serve the VNC API and the agent API on; without --token only loopback
    /// addresses are accepted.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8082")]
    listen: SocketAddr,
    /// Durable store: sqlite:PATH or etcd:http://HOST:PORT.
    #[arg(
        long,
        value_name = "SPEC",
        default_value = "sqlite:/var/lib/vrouter-shim/shim.db"
    )]
    store: String,
    /// Require this X-Auth-Token on every request.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "VROUTER_SHIM_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Seconds without contact before an agent's routes are withdrawn (0 = never).
    #[arg(long, value_name = "SECS", default_value_t = 90)]
    agent_ttl: u64,
    /// Deletions each host's view remembers for agents that reconnect; past it the view
    /// forgets them and such an agent gets a full snapshot (bounds memory under churn).
    #[arg(long, value_name = "N", default_value_t = vrouter_shim::agents::TOMBSTONE_LIMIT,
          value_parser = at_least_16)]
    view_tombstones: usize,
}

/// `--view-tombstones`: fewer than 16 would make every reconnecting agent take a full snapshot.
fn at_least_16(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if n >= 16 => Ok(n),
        _ => Err("a number, at least 16".into()),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cfg = Config {
        listen: args.listen,
        store: args.store,
        token: args.token.filter(|t| !t.is_empty()),
        agent_ttl: Duration::from_secs(args.agent_ttl),
        view_tombstones: args.view_tombstones,
    };
    if let Some(dir) = cfg
        .store
        .strip_prefix("sqlite:")
        .and_then(|p| std::path::Path::new(p).parent())
    {
        if !dir.as_os_str().is_empty() {
            let _ = std::fs::create_dir_all(dir);
        }
    }
    match server::run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vrouter-shim: {e}");
            ExitCode::FAILURE
        }
    }
}
