//! Prometheus metrics on a loopback HTTP port: per-interface and per-VRF counters and drop
//! reasons (read from the dataplane at scrape time, so they are never stale) and the agent's own
//! health. Also `/status` (the agent's view: bindings, labels, dataplane connection, as JSON) and
//! `/healthz`.
//!
//! Rendering is I/O-free ([`render`]); the server is a deliberately tiny HTTP/1.1 responder on
//! one thread: scrapes are rare and small, and a full HTTP stack would be most of the agent.

use crate::compile::Binding;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vrouter_dataplane::ctl::{CtlClient, Request, Response};
use vrouter_dataplane::stats::{VifStats, VrfStats};

/// The agent's health, shared between the control loop (writer) and the metrics thread.
///
/// Thread-safety: counters are relaxed atomics (each written by the control loop only); the
/// status snapshot sits behind a mutex held only to copy it in or out.
#[derive(Debug, Default)]
pub struct Health {
    /// Connected to the dataplane's control socket.
    pub dp_connected: AtomicBool,
    /// The dataplane daemon's pid (0 if unknown).
    pub dp_pid: AtomicU64,
    /// Reconcile passes run.
    pub reconciles: AtomicU64,
    /// Table operations applied, total.
    pub ops_total: AtomicU64,
    /// Operations applied by the last reconcile.
    pub last_ops: AtomicU64,
    /// Times the agent found a (re)started dataplane and programmed it.
    pub dp_restarts: AtomicU64,
    /// Config reloads that succeeded.
    pub reloads: AtomicU64,
    /// Config reloads refused (the previous config stays in force).
    pub reload_errors: AtomicU64,
    /// Apply requests the dataplane refused.
    pub apply_errors: AtomicU64,
    /// Unix time the agent started.
    pub start_time: AtomicU64,
    /// The agent's view, for `/status`.
    pub status: Mutex<Status>,
}

/// The agent's view of what it programmed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    /// Where the config comes from.
    pub config_source: String,
    /// The dataplane control socket.
    pub dp_socket: String,
    /// Local interfaces and their ids and labels.
    pub bindings: Vec<Binding>,
    /// Table labels by VRF name.
    pub table_labels: BTreeMap<String, u32>,
    /// Configured items not programmable now.
    pub warnings: Vec<String>,
    /// Last error (config or dataplane), if any.
    pub last_error: Option<String>,
}

impl Health {
    /// Copy of the status.
    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Updates the status.
    pub fn set_status(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// Dataplane counters read at scrape time.
#[derive(Debug, Clone, Default)]
pub struct DpCounters {
    /// (vif, name, counters).
    pub vifs: Vec<(u16, String, VifStats)>,
    /// (vrf, name, counters).
    pub vrfs: Vec<(u16, String, VrfStats)>,
    /// (reason, count).
    pub drops: Vec<(String, u64)>,
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn snake(s: &str) -> String {
    s.to_ascii_lowercase().replace(' ', "_")
}

/// Prometheus text exposition of `dp` (absent when the dataplane is unreachable) and `h`.
pub fn render(dp: Option<&DpCounters>, h: &Health) -> String {
    let mut s = String::new();
    family(&mut s, "vrouter_agent_up", "gauge", "The agent is running.");
    s.push_str("vrouter_agent_up 1\n");
    render_agent_gauges(&mut s, h);
    render_agent_counters(&mut s, h);
    family(
        &mut s,
        "vrouter_dataplane_up",
        "gauge",
        "The dataplane answered this scrape.",
    );
    let _ = writeln!(s, "vrouter_dataplane_up {}", u64::from(dp.is_some()));
    if let Some(dp) = dp {
        render_vifs(&mut s, dp);
        render_vrfs(&mut s, dp);
        render_drops(&mut s, dp);
    }
    s
}

/// The `# HELP` and `# TYPE` lines that open a metric family. Writing to a `String` cannot
/// fail, so here and in the `render_*` functions the `fmt::Result` is ignored.
fn family(s: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The agent's gauges: connection, dataplane pid, last reconcile, start time, interfaces.
fn render_agent_gauges(s: &mut String, h: &Health) {
    let gauges: [(&str, &str, u64); 4] = [
        (
            "vrouter_agent_dataplane_connected",
            "The agent is connected to the dataplane control socket.",
            u64::from(h.dp_connected.load(Relaxed)),
        ),
        (
            "vrouter_agent_dataplane_pid",
            "Process id of the dataplane daemon (0 if unknown).",
            h.dp_pid.load(Relaxed),
        ),
        (
            "vrouter_agent_last_reconcile_ops",
            "Table operations applied by the last reconcile (0 when the dataplane was already right).",
            h.last_ops.load(Relaxed),
        ),
        (
            "vrouter_agent_start_time_seconds",
            "Unix time the agent started.",
            h.start_time.load(Relaxed),
        ),
    ];
    for (name, help, v) in gauges {
        family(s, name, "gauge", help);
        let _ = writeln!(s, "{name} {v}");
    }
    let bindings = h.status().bindings.len();
    family(
        s,
        "vrouter_agent_interfaces",
        "gauge",
        "Local interfaces programmed.",
    );
    let _ = writeln!(s, "vrouter_agent_interfaces {bindings}");
}

/// The agent's counters: reconciles, operations, dataplane restarts, reloads, refusals.
fn render_agent_counters(s: &mut String, h: &Health) {
    let counters: [(&str, &str, &AtomicU64); 6] = [
        (
            "vrouter_agent_reconciles_total",
            "Reconcile passes against the dataplane.",
            &h.reconciles,
        ),
        (
            "vrouter_agent_reconcile_ops_total",
            "Table operations applied.",
            &h.ops_total,
        ),
        (
            "vrouter_agent_dataplane_restarts_total",
            "Dataplane (re)starts the agent programmed.",
            &h.dp_restarts,
        ),
        (
            "vrouter_agent_config_reloads_total",
            "Configuration reloads applied.",
            &h.reloads,
        ),
        (
            "vrouter_agent_config_reload_errors_total",
            "Configuration reloads refused.",
            &h.reload_errors,
        ),
        (
            "vrouter_agent_apply_errors_total",
            "Table operation batches the dataplane refused.",
            &h.apply_errors,
        ),
    ];
    for (name, help, v) in counters {
        family(s, name, "counter", help);
        let _ = writeln!(s, "{name} {}", v.load(Relaxed));
    }
}

/// One counter family per interface statistic, labelled by vif id and name.
fn render_vifs(s: &mut String, dp: &DpCounters) {
    type VifField = fn(&VifStats) -> u64;
    let vif_fields: [(&str, &str, VifField); 7] = [
        ("rx_packets", "Packets received", |v| v.rx_packets),
        ("rx_bytes", "Bytes received", |v| v.rx_bytes),
        ("rx_errors", "Receive errors", |v| v.rx_errors),
        ("tx_packets", "Packets transmitted", |v| v.tx_packets),
        ("tx_bytes", "Bytes transmitted", |v| v.tx_bytes),
        ("tx_errors", "Transmit errors", |v| v.tx_errors),
        ("drops", "Packets received and dropped", |v| v.drops),
    ];
    for (field, help, get) in vif_fields {
        let name = format!("vrouter_vif_{field}_total");
        family(s, &name, "counter", &format!("{help}, per interface."));
        for (id, ifname, st) in &dp.vifs {
            let _ = writeln!(
                s,
                "{name}{{vif=\"{id}\",name=\"{}\"}} {}",
                esc(ifname),
                get(st)
            );
        }
    }
}

/// Packets per VRF, labelled by what was done with them.
fn render_vrfs(s: &mut String, dp: &DpCounters) {
    family(
        s,
        "vrouter_vrf_packets_total",
        "counter",
        "Packets per VRF by what was done with them (vrfstats).",
    );
    for (id, vrf, st) in &dp.vrfs {
        for (n, v) in st.named() {
            let _ = writeln!(
                s,
                "vrouter_vrf_packets_total{{vrf=\"{id}\",name=\"{}\",type=\"{}\"}} {v}",
                esc(vrf),
                snake(n)
            );
        }
    }
}

/// Drops by reason.
fn render_drops(s: &mut String, dp: &DpCounters) {
    family(
        s,
        "vrouter_drops_total",
        "counter",
        "Dropped packets by reason (dropstats names).",
    );
    for (reason, v) in &dp.drops {
        let _ = writeln!(s, "vrouter_drops_total{{reason=\"{}\"}} {v}", esc(reason));
    }
}

/// Reads the counters from the dataplane; `None` if it does not answer.
pub fn scrape(socket: &std::path::Path) -> Option<DpCounters> {
    let mut c = CtlClient::connect(socket).ok()?;
    let vifs = match c.request(&Request::VifStats).ok()? {
        Response::VifStats { stats } => stats,
        _ => return None,
    };
    let vrfs = match c.request(&Request::VrfStats).ok()? {
        Response::VrfStats { stats } => stats,
        _ => return None,
    };
    let drops = match c.request(&Request::Drops).ok()? {
        Response::Drops { drops } => drops,
        _ => return None,
    };
    Some(DpCounters { vifs, vrfs, drops })
}

/// Binds the metrics listener (refusing non-loopback addresses: the endpoint has no auth).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    if !addr.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("metrics address {addr} is not a loopback address"),
        ));
    }
    TcpListener::bind(addr)
}

/// Serves metrics on `listener` from a background thread.
pub fn spawn(
    listener: TcpListener,
    socket: PathBuf,
    health: Arc<Health>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(s) => {
                        if let Err(e) = serve_one(s, &socket, &health) {
                            log::debug!("metrics connection: {e}");
                        }
                    }
                    Err(e) => log::warn!("metrics: accept failed: {e}"),
                }
            }
        })
}

fn serve_one(mut s: TcpStream, socket: &std::path::Path, h: &Health) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 16 * 1024 {
            return respond(
                &mut s,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            );
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        return respond(&mut s, "405 Method Not Allowed", "text/plain", "GET only\n");
    }
    match path.split('?').next().unwrap_or("") {
        "/metrics" => {
            let body = render(scrape(socket).as_ref(), h);
            respond(&mut s, "200 OK", "text/plain; version=0.0.4", &body)
        }
        "/status" => {
            let body = serde_json::to_string_pretty(&h.status()).unwrap_or_default();
            respond(&mut s, "200 OK", "application/json", &body)
        }
        "/healthz" => respond(&mut s, "200 OK", "text/plain", "ok\n"),
        _ => respond(
            &mut s,
            "404 Not Found",
            "text/plain",
            "try /metrics, /status or /healthz\n",
        ),
    }
}

fn respond(s: &mut TcpStream, status: &str, ctype: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())?;
    s.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_escaped_labels() {
        let h = Health::default();
        h.reconciles.store(3, Relaxed);
        let dp = DpCounters {
            vifs: vec![(
                3,
                "vif\"1.0".into(),
                VifStats {
                    rx_packets: 5,
                    ..Default::default()
                },
            )],
            vrfs: vec![(2, "net1".into(), VrfStats::default())],
            drops: vec![("Invalid Label".into(), 7)],
        };
        let t = render(Some(&dp), &h);
        assert!(t.contains("vrouter_agent_reconciles_total 3\n"));
        assert!(t.contains("vrouter_vif_rx_packets_total{vif=\"3\",name=\"vif\\\"1.0\"} 5\n"));
        assert!(
            t.contains("vrouter_vrf_packets_total{vrf=\"2\",name=\"net1\",type=\"encaps\"} 0\n")
        );
        assert!(t.contains("vrouter_drops_total{reason=\"Invalid Label\"} 7\n"));
        assert!(t.contains("vrouter_dataplane_up 1\n"));
        let t = render(None, &h);
        assert!(t.contains("vrouter_dataplane_up 0\n"));
        assert!(!t.contains("vrouter_vif_"));
    }

    #[test]
    fn refuses_non_loopback() {
        let e = bind("0.0.0.0:0".parse().expect("addr")).expect_err("not loopback");
        assert!(e.to_string().contains("not a loopback"));
    }
}
