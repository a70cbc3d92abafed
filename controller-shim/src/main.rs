// SPDX-License-Identifier: Apache-2.0
//! `vrouter-shim` daemon: `vrouter-shim --listen 127.0.0.1:8082 --store sqlite:PATH [--token T]`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use sd_notify::NotifyState;
use vrouter_shim::bgp::speaker::SpeakerConfig;
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
    /// Durable store: sqlite:PATH or etcd:http://HOST:PORT[,http://HOST:PORT...] (every
    /// member's client URL: when one cannot be reached the next is used).
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
    /// Run the BGP speaker (VPN-IPv4 to the gateways configured as bgp-router objects),
    /// listening here; the address is the router-id. Without it nothing listens for BGP.
    #[arg(long, value_name = "ADDR[:PORT]", value_parser = bgp_addr)]
    bgp: Option<SocketAddr>,
    /// Hold time proposed to neighbours whose bgp-router sets none (seconds, 0 or 3..65535).
    #[arg(long, value_name = "SECS", default_value_t = 90, value_parser = hold_time)]
    bgp_hold_time: u16,
}

/// `--bgp-hold-time`: RFC 4271 §4.2 allows 0 (no keepalives) or at least 3 seconds.
fn hold_time(v: &str) -> Result<u16, String> {
    match v.parse::<u16>() {
        Ok(n) if n == 0 || n >= 3 => Ok(n),
        _ => Err("0 or 3..65535 seconds (RFC 4271)".into()),
    }
}

/// `--bgp`: an IPv4 address with an optional port (179 by default).
fn bgp_addr(v: &str) -> Result<SocketAddr, String> {
    if let Ok(ip) = v.parse::<std::net::Ipv4Addr>() {
        return Ok(SocketAddr::from((ip, 179)));
    }
    match v.parse::<SocketAddr>() {
        Ok(a) if a.is_ipv4() && !a.ip().is_unspecified() => Ok(a),
        _ => Err("an IPv4 address (the router-id), optionally with :PORT".into()),
    }
}

/// `--view-tombstones`: fewer than 16 would make every reconnecting agent take a full snapshot.
fn at_least_16(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if n >= 16 => Ok(n),
        _ => Err("a number, at least 16".into()),
    }
}

fn main() -> ExitCode {
    vrouter_clidocs::generate_if_asked(<Args as clap::CommandFactory>::command);
    let args = Args::parse();
    // One log format for every daemon (logfmt; journald priorities under systemd).
    if let Err(e) = vrouter_log::init("info") {
        eprintln!("vrouter-shim: {e}");
    }
    let cfg = Config {
        listen: args.listen,
        store: args.store,
        token: args.token.filter(|t| !t.is_empty()),
        agent_ttl: Duration::from_secs(args.agent_ttl),
        view_tombstones: args.view_tombstones,
        bgp: args.bgp.map(|bind| SpeakerConfig {
            bind,
            hold_time: args.bgp_hold_time,
            connect_retry: Duration::from_secs(5),
        }),
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
    notify_when_listening(cfg.listen);
    match server::run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vrouter-shim: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Tells the service manager (systemd, `Type=notify`) the API is ready once a TCP connection to
/// `listen` succeeds; with `WatchdogSec=` in the unit the same thread then pings the watchdog
/// at half its period, but only while an HTTP request gets an HTTP answer (a wedged runtime gets
/// the shim restarted). Without systemd (no `NOTIFY_SOCKET`) it does nothing.
fn notify_when_listening(listen: SocketAddr) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let mut target = listen;
    if target.ip().is_unspecified() {
        target.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let spawned = std::thread::Builder::new()
        .name("sd-notify".into())
        .spawn(move || {
            while std::net::TcpStream::connect_timeout(&target, Duration::from_secs(1)).is_err() {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = sd_notify::notify(false, &[NotifyState::Ready]);
            let mut usec = 0;
            if !sd_notify::watchdog_enabled(false, &mut usec) {
                return;
            }
            let period = Duration::from_micros(usec / 2).max(Duration::from_millis(100));
            loop {
                std::thread::sleep(period);
                match http_answers(target, period) {
                    Ok(()) => {
                        let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
                    }
                    Err(e) => log::warn!("watchdog: the API on {target} does not answer ({e})"),
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot start the service-manager thread: {e}");
    }
}

/// One HTTP request to the API answered with an HTTP status line (any status: 401 without a
/// token still proves the server works) within `timeout`.
fn http_answers(target: SocketAddr, timeout: Duration) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&target, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut head = [0u8; 8];
    s.read_exact(&mut head)?;
    if head.starts_with(b"HTTP/1.") {
        Ok(())
    } else {
        Err(std::io::Error::other("not an HTTP answer"))
    }
}
