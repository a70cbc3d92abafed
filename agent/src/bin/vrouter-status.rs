//! `vrouter-status`: is everything a vRouter host needs running? One line per component
//! (dataplane, agent, shim, xenstore, hook), like `contrail-status`; exit 0 when all are up, 1
//! when something is down or missing.

use clap::Parser;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use vrouter_dataplane::ctl::client::DEFAULT_SOCKET;
use vrouter_dataplane::ctl::{CtlClient, Request};
use vrouter_xen::client::Client;

/// How long each check may take.
const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Parser)]
#[command(
    name = "vrouter-status",
    version,
    about = "One line per vRouter component (dataplane, agent, shim, xenstore, hook); exit 1 when one is down"
)]
struct Cli {
    /// Dataplane control socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Controller shim URL [default: the agent's --controller in /etc/vrouter/agent.env, else
    /// http://127.0.0.1:8082].
    #[arg(long, value_name = "URL")]
    shim: Option<String>,
    /// The agent's metrics address (vrouter-agent --metrics): checks /healthz there instead of
    /// looking for a vrouter-agent process.
    #[arg(long, value_name = "ADDR:PORT")]
    agent_metrics: Option<SocketAddr>,
    /// xenstored socket [default: $XENSTORED_PATH, /var/run/xenstored/socket, /dev/xen/xenbus].
    #[arg(long, value_name = "PATH")]
    xenstore_socket: Option<PathBuf>,
    /// The vif hotplug hook XAPI runs.
    #[arg(long, value_name = "FILE", default_value = "/etc/xapi.d/vif-hotplug")]
    hook: PathBuf,
}

/// One component's state: the word shown and what was found.
struct Check {
    up: bool,
    state: &'static str,
    detail: String,
}

fn up(detail: String) -> Check {
    Check {
        up: true,
        state: "up",
        detail,
    }
}

fn down(state: &'static str, detail: String) -> Check {
    Check {
        up: false,
        state,
        detail,
    }
}

fn main() -> ExitCode {
    vrouter_clidocs::generate_if_asked(<Cli as clap::CommandFactory>::command);
    let cli = Cli::parse();
    let shim = cli.shim.clone().unwrap_or_else(default_shim_url);
    let checks = [
        ("dataplane", dataplane(&cli.socket)),
        ("agent", agent(cli.agent_metrics)),
        ("shim", http_up(&shim, "/")),
        ("xenstore", xenstore(cli.xenstore_socket.as_deref())),
        ("hook", hook(&cli.hook)),
    ];
    let mut out = std::io::stdout().lock();
    for (name, c) in &checks {
        // A closed stdout only loses the listing; the exit status still tells.
        let _ = writeln!(out, "{name:<10} {:<8} {}", c.state, c.detail);
    }
    if checks.iter().all(|(_, c)| c.up) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The dataplane answers an `Info` request on its control socket.
fn dataplane(socket: &Path) -> Check {
    match CtlClient::connect(socket).and_then(|mut c| c.request(&Request::Info)) {
        Ok(_) => up(format!("control socket {}", socket.display())),
        Err(e) => down("down", e.to_string()),
    }
}

/// The agent: its /healthz answers 200, or (without a metrics address) a process runs.
fn agent(metrics: Option<SocketAddr>) -> Check {
    if let Some(addr) = metrics {
        return match http_status(addr, "/healthz") {
            Ok(line) if line.contains(" 200") => up(format!("healthz on {addr}")),
            Ok(line) => down("down", format!("healthz on {addr}: {line}")),
            Err(e) => down("down", format!("metrics on {addr}: {e}")),
        };
    }
    match pids_named("vrouter-agent").first() {
        Some(pid) => up(format!("pid {pid}")),
        None => down("down", "no vrouter-agent process".into()),
    }
}

/// Pids whose command name is `name`.
fn pids_named(name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// The shim: any HTTP answer at `url` (a 401 without a token still proves it serves).
fn http_up(url: &str, path: &str) -> Check {
    let Some(hostport) = url.strip_prefix("http://").map(|r| r.trim_end_matches('/')) else {
        return down("down", format!("{url}: expected http://HOST:PORT"));
    };
    let addr = match hostport.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => a,
        Ok(None) | Err(_) => return down("down", format!("{url}: cannot resolve")),
    };
    match http_status(addr, path) {
        Ok(_) => up(url.to_string()),
        Err(e) => down("down", format!("{url}: {e}")),
    }
}

/// The status line of a GET of `path` at `addr`.
fn http_status(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: vrouter-status\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head)?;
    let text = String::from_utf8_lossy(&head[..n]);
    let line = text.lines().next().unwrap_or("").to_string();
    if line.starts_with("HTTP/1.") {
        Ok(line)
    } else {
        Err(std::io::Error::other("not an HTTP answer"))
    }
}

/// The shim URL the agent uses: `--controller` in /etc/vrouter/agent.env.
fn default_shim_url() -> String {
    std::fs::read_to_string("/etc/vrouter/agent.env")
        .ok()
        .and_then(|env| {
            let mut words = env
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .flat_map(|l| l.split(|c: char| c.is_whitespace() || c == '"' || c == '='))
                .skip_while(|w| *w != "--controller")
                .skip(1)
                .filter(|w| !w.is_empty());
            words.next().map(str::to_string)
        })
        .unwrap_or_else(|| "http://127.0.0.1:8082".into())
}

/// xenstore answers a directory read of `/`.
fn xenstore(socket: Option<&Path>) -> Check {
    let res = match socket {
        Some(p) => Client::connect_unix(p).and_then(|mut c| {
            c.set_reply_timeout(Some(TIMEOUT));
            c.directory("/")
        }),
        None => Client::open().and_then(|mut c| {
            c.set_reply_timeout(Some(TIMEOUT));
            c.directory("/")
        }),
    };
    let place = socket.map_or("xenstore".to_string(), |p| p.display().to_string());
    match res {
        Ok(_) => up(place),
        Err(e) => down("down", format!("{place}: {e}")),
    }
}

/// The hook is installed and executable.
fn hook(path: &Path) -> Check {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {
            up(path.display().to_string())
        }
        Ok(_) => down("missing", format!("{} is not executable", path.display())),
        Err(e) => down("missing", format!("{}: {e}", path.display())),
    }
}
