// SPDX-License-Identifier: Apache-2.0
//! `vrouter-shim` daemon: `vrouter-shim --listen 127.0.0.1:8082 --store sqlite:PATH [--token T]`.

use std::process::ExitCode;
use std::time::Duration;

use vrouter_shim::server::{self, Config};

const USAGE: &str = "usage: vrouter-shim [--listen ADDR:PORT] [--store sqlite:PATH|etcd:http://HOST:PORT] \
[--token TOKEN] [--agent-ttl SECS] [--view-tombstones N]
  --listen     address to serve the VNC API and the agent API on (default 127.0.0.1:8082);
               without --token only loopback addresses are accepted
  --store      durable store (default sqlite:/var/lib/vrouter-shim/shim.db)
  --token      require this X-Auth-Token on every request (also read from VROUTER_SHIM_TOKEN)
  --agent-ttl  seconds without contact before an agent's routes are withdrawn (default 90, 0 = never)
  --view-tombstones  deletions each host's view remembers for agents that reconnect (default 4096,
               at least 16); past it the view forgets them and such an agent gets a full snapshot";

fn parse_args() -> Result<Config, String> {
    let mut cfg = Config {
        listen: "127.0.0.1:8082".parse().map_err(|e| format!("{e}"))?,
        store: "sqlite:/var/lib/vrouter-shim/shim.db".into(),
        token: std::env::var("VROUTER_SHIM_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
        agent_ttl: Duration::from_secs(90),
        view_tombstones: vrouter_shim::agents::TOMBSTONE_LIMIT,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--listen" => {
                let v = val("--listen")?;
                cfg.listen = v.parse().map_err(|e| format!("--listen {v}: {e}"))?;
            }
            "--store" => cfg.store = val("--store")?,
            "--token" => cfg.token = Some(val("--token")?),
            "--agent-ttl" => {
                let v = val("--agent-ttl")?;
                cfg.agent_ttl =
                    Duration::from_secs(v.parse().map_err(|e| format!("--agent-ttl {v}: {e}"))?);
            }
            "--view-tombstones" => {
                let v = val("--view-tombstones")?;
                cfg.view_tombstones = v
                    .parse()
                    .ok()
                    .filter(|n| *n >= 16)
                    .ok_or_else(|| format!("--view-tombstones {v}: a number, at least 16"))?;
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(cfg)
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cfg = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("vrouter-shim: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
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
