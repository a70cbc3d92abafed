//! `vrctl`: inspect what the vRouter dataplane holds, over its control socket, in the spirit of
//! the real vRouter's `vif`, `rt`, `nh`, `mpls`, `vrfstats`, `dropstats` and `flow` utilities.
//! Readable tables by default, `--json` on every command; see `docs/vrctl.md`.

use clap::{Parser, Subcommand};
use serde::Serialize;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use vrouter_agent::show::{self, LabelView, Names};
use vrouter_agent::trace::Probe;
use vrouter_dataplane::ctl::client::DEFAULT_SOCKET;
use vrouter_dataplane::ctl::proto::{NhInfo, StateDump, VifInfo, VrfInfo};
use vrouter_dataplane::ctl::{CtlClient, CtlError, Request, Response};
use vrouter_dataplane::tables::VifSpec;
use vrouter_dataplane::wire::MacAddr;

#[derive(Debug, Parser)]
#[command(
    name = "vrctl",
    version,
    about = "Inspect the vRouter dataplane's tables and counters",
    after_help = "VRFs may be given by id or name (full VRF name or its last ':' part); \
                  interfaces by id, vif0/N or OS name."
)]
struct Cli {
    /// Dataplane control socket.
    #[arg(long, global = true, default_value = DEFAULT_SOCKET, value_name = "PATH")]
    socket: PathBuf,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Interfaces (`vif --list`, `vif --get`).
    Vif {
        #[command(subcommand)]
        cmd: VifCmd,
    },
    /// VRFs.
    Vrf {
        #[command(subcommand)]
        cmd: ListCmd,
    },
    /// Routes (`rt --dump`).
    #[command(alias = "rt")]
    Route {
        #[command(subcommand)]
        cmd: RouteCmd,
    },
    /// Nexthops (`nh --list`, `nh --get`).
    Nh {
        #[command(subcommand)]
        cmd: NhCmd,
    },
    /// The MPLS label table (`mpls --dump`).
    Mpls {
        #[command(subcommand)]
        cmd: DumpCmd,
    },
    /// Floating IPs.
    Fip {
        #[command(subcommand)]
        cmd: ListCmd,
    },
    /// Flows (`flow -l`).
    Flow {
        #[command(subcommand)]
        cmd: FlowCmd,
    },
    /// Counters (`vrfstats`, per-interface counters).
    Stats {
        #[command(subcommand)]
        cmd: StatsCmd,
    },
    /// Drop counters by reason (`dropstats`).
    #[command(alias = "dropstats")]
    Drops {
        /// Only non-zero counters (current `dropstats` style).
        #[arg(long)]
        nonzero: bool,
    },
    /// Daemon identity, host config and table sizes (`vrouter --info`).
    Info,
    /// What the dataplane would do with one packet (as OVS `ofproto/trace`): the packet runs
    /// through the real pipeline over a copy of the live tables; nothing is sent and no flow
    /// or counter changes (it is treated as the first packet of a new flow).
    Trace(TraceArgs),
    /// Copies one interface's packets as they pass through the dataplane (as `vifdump`):
    /// received, sent or both, as pcap (`-w FILE`, `-w -` for tshark) or one described frame
    /// at a time. The dataplane keeps a bounded number unread; what a slow reader misses is
    /// counted as lost. Ends after `-c` frames, `--seconds` or Ctrl-C.
    Capture(CaptureArgs),
    /// The agent's view (its `/status` on `--metrics`): bound interfaces with their labels,
    /// and every interface it left unbound with the reason.
    Agent {
        /// The agent's `--metrics` address.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9469")]
        metrics: String,
    },
    /// The controller's BGP neighbours (`show bgp summary`): state, uptime, prefixes received
    /// and advertised, flaps, last error.
    Bgp {
        /// The controller shim's API.
        #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8082")]
        controller: String,
        /// X-Auth-Token, when the shim is not on loopback.
        #[arg(
            long,
            env = "VROUTER_TOKEN",
            value_name = "TOKEN",
            hide_env_values = true
        )]
        token: Option<String>,
    },
}

/// `vrctl trace`: the interface and the packet.
#[derive(Debug, clap::Args)]
struct TraceArgs {
    /// The interface it arrives on: id, vif0/N or OS name.
    vif: String,
    /// Destination address of a packet the interface's VM sends.
    #[arg(long, required_unless_present = "frame")]
    dst: Option<Ipv4Addr>,
    /// Source address [the interface's own].
    #[arg(long)]
    src: Option<Ipv4Addr>,
    /// icmp (echo request), udp or tcp (SYN).
    #[arg(long, default_value = "icmp")]
    proto: vrouter_agent::trace::Proto,
    /// Source port (udp, tcp).
    #[arg(long, default_value_t = 40000)]
    sport: u16,
    /// Destination port (udp, tcp).
    #[arg(long, default_value_t = 80)]
    dport: u16,
    /// IPv4 TTL.
    #[arg(long, default_value_t = 64)]
    ttl: u8,
    /// A whole Ethernet frame in hex instead (e.g. an MPLSoUDP packet arriving on the
    /// fabric).
    #[arg(long, conflicts_with_all = ["dst", "src"])]
    frame: Option<String>,
}

#[derive(Debug, Subcommand)]
enum VifCmd {
    /// Every interface.
    List,
    /// One interface, by id, vif0/N or OS name.
    Get {
        /// Interface.
        vif: String,
    },
}

#[derive(Debug, Subcommand)]
enum ListCmd {
    /// The whole table.
    List,
}

#[derive(Debug, Subcommand)]
enum FlowCmd {
    /// The flow table (`flow -l`), both entries of each pair.
    List {
        /// Only pairs with an entry keyed in this VRF (id or name).
        #[arg(long, value_name = "VRF")]
        vrf: Option<String>,
        /// At most this many pairs [default: 10000].
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Only pairs with an entry from or to this address (and port): `A.B.C.D[:PORT]`
        /// (`flow --match`).
        #[arg(long = "match", value_name = "IP[:PORT]", value_parser = parse_match)]
        matching: Option<(Ipv4Addr, Option<u16>)>,
    },
}

/// `--match IP[:PORT]`.
fn parse_match(v: &str) -> Result<(Ipv4Addr, Option<u16>), String> {
    let bad = || format!("{v:?}: expected A.B.C.D or A.B.C.D:PORT");
    match v.split_once(':') {
        Some((ip, port)) => Ok((
            ip.parse().map_err(|_| bad())?,
            Some(port.parse().map_err(|_| bad())?),
        )),
        None => Ok((v.parse().map_err(|_| bad())?, None)),
    }
}

#[derive(Debug, Subcommand)]
enum DumpCmd {
    /// The whole table.
    Dump,
}

#[derive(Debug, Subcommand)]
enum RouteCmd {
    /// Routes of one VRF.
    Dump {
        /// VRF id or name.
        vrf: String,
        /// Only this prefix (a.b.c.d/n), or the longest match for an address (a.b.c.d).
        #[arg(long, value_name = "P")]
        prefix: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum NhCmd {
    /// Every nexthop.
    List,
    /// One nexthop.
    Get {
        /// Nexthop id.
        id: u32,
    },
}

#[derive(Debug, Subcommand)]
enum StatsCmd {
    /// Per-VRF counters (`vrfstats --dump`, or `--get` with a VRF).
    Vrf {
        /// VRF id or name.
        vrf: Option<String>,
    },
    /// Per-interface counters.
    Vif {
        /// Interface id, vif0/N or OS name.
        vif: Option<String>,
    },
}

/// `vrctl capture`: the interface, which way, and when to stop.
#[derive(Debug, clap::Args)]
struct CaptureArgs {
    /// The interface: id, vif0/N or OS name.
    #[arg(long)]
    vif: String,
    /// Frames it receives, sends, or both.
    #[arg(long, value_enum, default_value = "both")]
    dir: Dir,
    /// Stop after this many frames.
    #[arg(short = 'c', long, value_name = "N")]
    count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "S")]
    seconds: Option<f64>,
    /// Write pcap to FILE (`-`: standard output) instead of describing each frame.
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    write: Option<PathBuf>,
    /// Bytes kept of each frame.
    #[arg(long, default_value_t = vrouter_dataplane::capture::DEFAULT_SNAPLEN)]
    snaplen: u32,
}

/// `--dir`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Dir {
    Rx,
    Tx,
    Both,
}

/// A failure, printed as one line.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Ctl(#[from] CtlError),
    #[error("{0}")]
    Usage(String),
    #[error("unexpected answer from the dataplane: {0}")]
    Unexpected(&'static str),
    #[error("{0}")]
    Agent(String),
    #[error(transparent)]
    Capture(#[from] vrouter_agent::capture::CaptureError),
}

struct Ctx {
    client: CtlClient,
    json: bool,
}

impl Ctx {
    fn req(&mut self, r: &Request) -> Result<Response, Error> {
        Ok(self.client.request(r)?)
    }

    fn vrfs(&mut self) -> Result<Vec<VrfInfo>, Error> {
        match self.req(&Request::VrfList)? {
            Response::Vrfs { vrfs } => Ok(vrfs),
            _ => Err(Error::Unexpected("expected a VRF list")),
        }
    }

    fn vifs(&mut self) -> Result<Vec<VifInfo>, Error> {
        match self.req(&Request::VifList)? {
            Response::Vifs { vifs } => Ok(vifs),
            _ => Err(Error::Unexpected("expected a vif list")),
        }
    }

    fn nhs(&mut self) -> Result<Vec<NhInfo>, Error> {
        match self.req(&Request::NhList)? {
            Response::Nexthops { nhs } => Ok(nhs),
            _ => Err(Error::Unexpected("expected nexthops")),
        }
    }

    fn dump(&mut self) -> Result<StateDump, Error> {
        match self.req(&Request::DumpAll)? {
            Response::State(s) => Ok(*s),
            _ => Err(Error::Unexpected("expected a state dump")),
        }
    }

    fn out<T: Serialize + ?Sized>(&self, value: &T, text: impl FnOnce() -> String) {
        if self.json {
            match serde_json::to_string_pretty(value) {
                Ok(s) => emit(&format!("{s}\n")),
                Err(e) => eprintln!("vrctl: cannot encode JSON: {e}"),
            }
        } else {
            emit(&text());
        }
    }
}

/// One flow entry as `vrctl flow list` shows it.
#[derive(Debug, Serialize)]
struct FlowView {
    index: u32,
    rindex: u32,
    gen: u32,
    forward: bool,
    vrf: u16,
    dvrf: u16,
    proto: u8,
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    /// `F`, `D(Policy)`, `N(S)`, `N(D)`, `N(SD)` as in `flow -l`.
    action: String,
    nat_src: Option<Ipv4Addr>,
    nat_dst: Option<Ipv4Addr>,
    tcp: String,
    packets: u64,
    bytes: u64,
    idle_s: u32,
}

impl From<&vrouter_dataplane::tables::flow::FlowEntryInfo> for FlowView {
    fn from(f: &vrouter_dataplane::tables::flow::FlowEntryInfo) -> Self {
        use vrouter_dataplane::tables::flow::{tcp, FlowAction};
        let (action, nat_src, nat_dst) = match f.action {
            FlowAction::Forward => ("F".to_string(), None, None),
            FlowAction::Drop(r) => (format!("D({r:?})"), None, None),
            FlowAction::Nat { snat, dnat } => {
                let kind = format!(
                    "{}{}",
                    if snat.is_some() { "S" } else { "" },
                    if dnat.is_some() { "D" } else { "" }
                );
                (
                    format!("N({kind})"),
                    snat.map(Ipv4Addr::from),
                    dnat.map(Ipv4Addr::from),
                )
            }
        };
        let mut t = String::new();
        for (bit, c) in [
            (tcp::SYN, 'S'),
            (tcp::ACK, 'A'),
            (tcp::FIN, 'F'),
            (tcp::RST, 'R'),
            (tcp::CLOSED, 'C'),
        ] {
            if f.tcp & bit != 0 {
                t.push(c);
            }
        }
        FlowView {
            index: f.index,
            rindex: f.rindex,
            gen: f.gen,
            forward: f.forward,
            vrf: f.vrf,
            dvrf: f.dvrf,
            proto: f.proto,
            src: Ipv4Addr::from(f.src),
            sport: f.sport,
            dst: Ipv4Addr::from(f.dst),
            dport: f.dport,
            action,
            nat_src,
            nat_dst,
            tcp: t,
            packets: f.packets,
            bytes: f.bytes,
            idle_s: f.idle_s,
        }
    }
}

/// `flow -l` layout: both directions of each pair, action, TCP state, counters.
fn flow_text(
    stats: &vrouter_dataplane::tables::flow::FlowTableStats,
    flows: &[FlowView],
) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "Flow table(size {} entries, {} active)\n",
        stats.capacity, stats.active
    );
    let _ = writeln!(
        o,
        "Entries: Created {} Deleted {} Refused(full) {}\n",
        stats.created, stats.deleted, stats.full
    );
    let _ = writeln!(o, "Action:F=Forward, D=Drop N=NAT(S=SNAT, D=DNAT)");
    let _ = writeln!(o, "TCP:S=SYN, A=ACK, F=FIN, R=RST, C=Closed\n");
    let _ = writeln!(
        o,
        "    Index                Source:Port/Destination:Port                      Proto(V)"
    );
    let _ = writeln!(o, "{}", "-".repeat(83));
    for f in flows {
        let v = if f.dvrf != f.vrf {
            format!("{}->{}", f.vrf, f.dvrf)
        } else {
            f.vrf.to_string()
        };
        let _ = writeln!(
            o,
            "{:>9}<=>{:<13}{:<50}{:>3} ({v})",
            f.index,
            f.rindex,
            format!("{}:{}", f.src, f.sport),
            f.proto
        );
        let _ = writeln!(o, "{:25}{}:{}", "", f.dst, f.dport);
        let nat = match (f.nat_src, f.nat_dst) {
            (None, None) => String::new(),
            (s, d) => format!(
                ", Nat:{}{}",
                s.map(|a| format!(" src {a}")).unwrap_or_default(),
                d.map(|a| format!(" dst {a}")).unwrap_or_default()
            ),
        };
        let _ = writeln!(
            o,
            "(Gen: {}, Action:{}{nat}, TCP:{}, Stats:{}/{}, Idle {}s)\n",
            f.gen, f.action, f.tcp, f.packets, f.bytes, f.idle_s
        );
    }
    o
}

fn parse_prefix(s: &str) -> Result<(u32, u8), Error> {
    let bad = || Error::Usage(format!("--prefix {s:?}: expected a.b.c.d or a.b.c.d/n"));
    let (a, l) = s.split_once('/').unwrap_or((s, "32"));
    let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
    let len: u8 = l.parse().ok().filter(|l| *l <= 32).ok_or_else(bad)?;
    Ok((u32::from(addr), len))
}

/// Connects to the dataplane and runs one subcommand.
fn run(cli: Cli) -> Result<(), Error> {
    if let Cmd::Agent { metrics } = &cli.cmd {
        return agent_status(metrics, cli.json);
    }
    if let Cmd::Bgp { controller, token } = &cli.cmd {
        return bgp_summary(controller, token.as_deref(), cli.json);
    }
    let mut c = Ctx {
        client: CtlClient::connect(&cli.socket)?,
        json: cli.json,
    };
    match cli.cmd {
        Cmd::Vif { cmd } => vif(&mut c, cmd),
        Cmd::Vrf { cmd: ListCmd::List } => vrf_list(&mut c),
        Cmd::Route {
            cmd: RouteCmd::Dump { vrf, prefix },
        } => route_dump(&mut c, &vrf, prefix.as_deref()),
        Cmd::Nh { cmd } => nh(&mut c, cmd),
        Cmd::Mpls { cmd: DumpCmd::Dump } => mpls_dump(&mut c),
        Cmd::Fip { cmd: ListCmd::List } => fip_list(&mut c),
        Cmd::Flow {
            cmd:
                FlowCmd::List {
                    vrf,
                    limit,
                    matching,
                },
        } => flow_list(&mut c, vrf.as_deref(), limit, matching),
        Cmd::Stats {
            cmd: StatsCmd::Vrf { vrf },
        } => vrf_stats(&mut c, vrf.as_deref()),
        Cmd::Stats {
            cmd: StatsCmd::Vif { vif },
        } => vif_stats(&mut c, vif.as_deref()),
        Cmd::Drops { nonzero } => drops(&mut c, nonzero),
        Cmd::Info => info(&mut c),
        Cmd::Trace(a) => trace(&mut c, &a),
        Cmd::Capture(a) => capture(&mut c, &a),
        Cmd::Agent { .. } | Cmd::Bgp { .. } => Ok(()),
    }
}

/// `vrctl trace`: the frame (given, or what the interface's VM would send: its MAC and, unless
/// `--src`, its address, to the vRouter's MAC) through a copy of the dataplane's tables.
fn trace(c: &mut Ctx, a: &TraceArgs) -> Result<(), Error> {
    let dump = c.dump()?;
    let specs: Vec<&VifSpec> = dump.vifs.iter().collect();
    let spec = show::resolve_vif_spec(&specs, &a.vif).map_err(Error::Usage)?;
    let id = spec.id;
    let frame = match (&a.frame, a.dst) {
        (Some(h), _) => parse_hex(h).ok_or_else(|| {
            Error::Usage("--frame: an even number of hex digits (spaces and ':' allowed)".into())
        })?,
        (None, Some(dst)) => vrouter_agent::trace::probe_frame(&Probe {
            smac: spec.mac,
            dmac: MacAddr::VROUTER,
            src: a.src.unwrap_or(Ipv4Addr::from(spec.ip)),
            dst,
            proto: a.proto,
            sport: a.sport,
            dport: a.dport,
            ttl: a.ttl,
        }),
        (None, None) => return Err(Error::Usage("give --dst or --frame".into())),
    };
    let traced = vrouter_agent::trace::trace(&dump, id, &frame).map_err(Error::Agent)?;
    let vrf = dump
        .vrfs
        .iter()
        .find(|v| v.id == spec.vrf)
        .map_or("?", |v| v.name.as_str());
    #[derive(Serialize)]
    struct View<'a> {
        vif: u16,
        name: &'a str,
        vrf: u16,
        input: String,
        #[serde(flatten)]
        traced: &'a vrouter_agent::trace::Trace,
    }
    let input = vrouter_agent::trace::describe(&frame);
    let view = View {
        vif: id,
        name: &spec.name,
        vrf: spec.vrf,
        input: input.clone(),
        traced: &traced,
    };
    c.out(&view, || {
        let indent = |t: &str| t.lines().map(|l| format!("  {l}\n")).collect::<String>();
        let mut out = format!(
            "packet in on vif {id} ({}, VRF {} {vrf}), {} bytes:\n{}",
            spec.name,
            spec.vrf,
            frame.len(),
            indent(&input)
        );
        out.push_str(&vrouter_agent::trace::text(&traced));
        out
    });
    Ok(())
}

/// Writes `text` to standard output; a closed pipe (`vrctl flow list | head -1`) ends the
/// process quietly with status 0, as it would end `cat`, instead of a panic.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("vrctl: cannot write the output: {e}");
            std::process::exit(1)
        }
    }
}

/// Set by SIGINT/SIGTERM during `vrctl capture`: the capture ends and its output is complete.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// `vrctl capture`: frames to a pcap file or stream, or described on standard output; a
/// summary line on standard error at the end (as tcpdump).
fn capture(c: &mut Ctx, a: &CaptureArgs) -> Result<(), Error> {
    use vrouter_agent::capture::{self as cap, CaptureOpts, PcapSink, TextSink};
    use vrouter_dataplane::capture::Direction;
    let vifs = c.vifs()?;
    let specs: Vec<&VifSpec> = vifs.iter().map(|v| &v.spec).collect();
    let spec = show::resolve_vif_spec(&specs, &a.vif).map_err(Error::Usage)?;
    let duration = match a.seconds {
        Some(s) if !(s.is_finite() && s > 0.0) => {
            return Err(Error::Usage(format!("--seconds {s}: a positive number")))
        }
        s => s.map(std::time::Duration::from_secs_f64),
    };
    let o = CaptureOpts {
        vif: spec.id,
        dir: match a.dir {
            Dir::Rx => Direction::Rx,
            Dir::Tx => Direction::Tx,
            Dir::Both => Direction::Both,
        },
        snaplen: a.snaplen,
        count: a.count,
        duration,
    };
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        for sig in [libc::SIGINT, libc::SIGTERM] {
            libc::signal(
                sig,
                on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
    let file_error = |p: &PathBuf, e: std::io::Error| Error::Usage(format!("{}: {e}", p.display()));
    let summary = match &a.write {
        Some(p) if p.as_os_str() == "-" => {
            let mut sink = PcapSink::new(std::io::stdout().lock()).map_err(|e| file_error(p, e))?;
            cap::capture(&mut c.client, &o, &mut sink, &STOP)?
        }
        Some(p) => {
            let f = std::fs::File::create(p).map_err(|e| file_error(p, e))?;
            let mut sink =
                PcapSink::new(std::io::BufWriter::new(f)).map_err(|e| file_error(p, e))?;
            cap::capture(&mut c.client, &o, &mut sink, &STOP)?
        }
        None => {
            let mut sink = TextSink::new(std::io::stdout().lock(), c.json);
            cap::capture(&mut c.client, &o, &mut sink, &STOP)?
        }
    };
    eprintln!(
        "{} frames captured on vif {} ({}), {} lost",
        summary.captured, spec.id, spec.name, summary.lost
    );
    Ok(())
}

/// Bytes from hex digits, ignoring spaces and ':'.
fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b':')
        .collect();
    if !digits.len().is_multiple_of(2) || digits.is_empty() {
        return None;
    }
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect()
}

/// `vrctl agent`: GET `/status` from the agent's metrics address (loopback HTTP, no proxy).
fn agent_status(addr: &str, json: bool) -> Result<(), Error> {
    use std::io::{Read, Write};
    let fail = |e: &dyn std::fmt::Display| Error::Agent(format!("agent at {addr}: {e}"));
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| fail(&e))?;
    let t = Some(std::time::Duration::from_secs(5));
    s.set_read_timeout(t).map_err(|e| fail(&e))?;
    s.write_all(b"GET /status HTTP/1.1\r\nHost: vrctl\r\nConnection: close\r\n\r\n")
        .map_err(|e| fail(&e))?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).map_err(|e| fail(&e))?;
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .ok_or_else(|| fail(&"no HTTP answer"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(fail(&head.lines().next().unwrap_or("?")));
    }
    let st: vrouter_agent::metrics::Status = serde_json::from_str(body).map_err(|e| fail(&e))?;
    if json {
        emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&st).map_err(|e| fail(&e))?
        ));
    } else {
        emit(&show::agent_text(&st));
    }
    Ok(())
}

/// `vrctl bgp`: GET `/vrouter/bgp/neighbors` from the controller shim.
fn bgp_summary(controller: &str, token: Option<&str>, json: bool) -> Result<(), Error> {
    let api = vrouter_api::client::AgentApi::new(controller, token.map(str::to_string));
    let s = api
        .bgp_neighbors()
        .map_err(|e| Error::Agent(format!("controller at {controller}: {e}")))?;
    let fail = |e: &dyn std::fmt::Display| Error::Agent(format!("controller at {controller}: {e}"));
    if json {
        emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&s).map_err(|e| fail(&e))?
        ));
    } else {
        emit(&show::bgp_text(&s));
    }
    Ok(())
}

/// `vif list` / `vif get`: interfaces with their VRFs' names.
fn vif(c: &mut Ctx, cmd: VifCmd) -> Result<(), Error> {
    let vifs = c.vifs()?;
    let names = Names {
        vrfs: c.vrfs()?.into_iter().map(|v| (v.id, v.name)).collect(),
        vifs: Default::default(),
    };
    match cmd {
        VifCmd::List => {
            let v = show::vif_views(&vifs, &names);
            c.out(&v, || show::vif_text(&v, true));
        }
        VifCmd::Get { vif } => {
            let id = show::resolve_vif(&vifs, &vif).map_err(Error::Usage)?;
            let v = show::vif_views(&vifs, &names);
            let one: Vec<_> = v.into_iter().filter(|x| x.id == id).collect();
            if let Some(first) = one.first() {
                c.out(first, || show::vif_text(&one, false));
            }
        }
    }
    Ok(())
}

/// `vrf list`.
fn vrf_list(c: &mut Ctx) -> Result<(), Error> {
    let v = show::vrf_views(&c.vrfs()?);
    c.out(&v, || show::vrf_text(&v));
    Ok(())
}

/// `route dump VRF [--prefix P]`: the routes with their nexthops.
fn route_dump(c: &mut Ctx, vrf: &str, prefix: Option<&str>) -> Result<(), Error> {
    let id = show::resolve_vrf(&c.vrfs()?, vrf).map_err(Error::Usage)?;
    let prefix = prefix.map(parse_prefix).transpose()?;
    let routes = match c.req(&Request::RouteDump { vrf: id, prefix })? {
        Response::Routes { routes } => routes,
        _ => return Err(Error::Unexpected("expected routes")),
    };
    let nhs = c.nhs()?;
    let v = show::route_views(&routes, &nhs);
    c.out(&v, || show::route_text(id, &v));
    Ok(())
}

/// `nh list` / `nh get ID`.
fn nh(c: &mut Ctx, cmd: NhCmd) -> Result<(), Error> {
    let nhs = c.nhs()?;
    let dump = c.dump()?;
    let v = show::nh_views(&nhs, &dump);
    match cmd {
        NhCmd::List => c.out(&v, || show::nh_text(&v)),
        NhCmd::Get { id } => {
            let one: Vec<_> = v.into_iter().filter(|n| n.id == id).collect();
            let Some(first) = one.first() else {
                return Err(Error::Usage(format!(
                    "nexthop {id} does not exist (see `vrctl nh list`)"
                )));
            };
            c.out(first, || show::nh_text(&one));
        }
    }
    Ok(())
}

/// `mpls dump`.
fn mpls_dump(c: &mut Ctx) -> Result<(), Error> {
    let labels = match c.req(&Request::MplsDump)? {
        Response::Labels { labels } => labels,
        _ => return Err(Error::Unexpected("expected labels")),
    };
    let v: Vec<LabelView> = labels
        .into_iter()
        .map(|(label, nh)| LabelView { label, nh })
        .collect();
    c.out(&v, || show::mpls_text(&v));
    Ok(())
}

/// `fip list`: floating IPs with the names of their VRFs and interfaces.
fn fip_list(c: &mut Ctx) -> Result<(), Error> {
    let dump = c.dump()?;
    let v = show::fip_views(&dump.fips, &Names::from_dump(&dump));
    c.out(&v, || show::fip_text(&v));
    Ok(())
}

/// `flow list`: the table's counters and every flow.
/// `flow list [--vrf VRF] [--limit N] [--match IP[:PORT]]`. The header counts entries (a flow
/// pair is two): the dataplane counts created *pairs* and deleted *entries*, so created is
/// doubled here to match deleted and active.
fn flow_list(
    c: &mut Ctx,
    vrf: Option<&str>,
    limit: Option<usize>,
    matching: Option<(Ipv4Addr, Option<u16>)>,
) -> Result<(), Error> {
    let vrf = match vrf {
        Some(a) => Some(show::resolve_vrf(&c.vrfs()?, a).map_err(Error::Usage)?),
        None => None,
    };
    let (mut stats, flows) = match c.req(&Request::FlowList { vrf, limit })? {
        Response::Flows { stats, flows } => (stats, flows),
        _ => return Err(Error::Unexpected("expected flows")),
    };
    stats.created = stats.created.saturating_mul(2);
    let mut views: Vec<FlowView> = flows.iter().map(FlowView::from).collect();
    if let Some((ip, port)) = matching {
        let hit = |f: &FlowView| {
            (f.src == ip && port.is_none_or(|p| p == f.sport))
                || (f.dst == ip && port.is_none_or(|p| p == f.dport))
        };
        let pairs: std::collections::HashSet<u32> = views
            .iter()
            .filter(|f| hit(f))
            .flat_map(|f| [f.index, f.rindex])
            .collect();
        views.retain(|f| pairs.contains(&f.index));
    }
    let doc = serde_json::json!({
        "capacity": stats.capacity, "active": stats.active, "created": stats.created,
        "deleted": stats.deleted, "refused": stats.full, "flows": views,
    });
    c.out(&doc, || flow_text(&stats, &views));
    Ok(())
}

/// `stats vrf [VRF]`: per-VRF counters, of every VRF or one.
fn vrf_stats(c: &mut Ctx, vrf: Option<&str>) -> Result<(), Error> {
    let only = match vrf {
        Some(a) => Some(show::resolve_vrf(&c.vrfs()?, a).map_err(Error::Usage)?),
        None => None,
    };
    let mut stats = match c.req(&Request::VrfStats)? {
        Response::VrfStats { stats } => stats,
        _ => return Err(Error::Unexpected("expected VRF counters")),
    };
    stats.retain(|(id, _, _)| only.is_none_or(|o| o == *id));
    let v = show::vrf_stats_views(&stats);
    c.out(&v, || show::vrf_stats_text(&stats));
    Ok(())
}

/// `stats vif [VIF]`: per-interface counters, of every interface or one.
fn vif_stats(c: &mut Ctx, vif: Option<&str>) -> Result<(), Error> {
    let only = match vif {
        Some(a) => Some(show::resolve_vif(&c.vifs()?, a).map_err(Error::Usage)?),
        None => None,
    };
    let mut stats = match c.req(&Request::VifStats)? {
        Response::VifStats { stats } => stats,
        _ => return Err(Error::Unexpected("expected interface counters")),
    };
    stats.retain(|(id, _, _)| only.is_none_or(|o| o == *id));
    let v: Vec<show::VifStatsView> = stats
        .iter()
        .map(|(id, name, st)| show::VifStatsView {
            vif: *id,
            name: name.clone(),
            stats: st.clone(),
        })
        .collect();
    c.out(&v, || show::vif_stats_text(&stats));
    Ok(())
}

/// `drops [--nonzero]`: drop counters by reason.
fn drops(c: &mut Ctx, nonzero: bool) -> Result<(), Error> {
    let drops = match c.req(&Request::Drops)? {
        Response::Drops { drops } => drops,
        _ => return Err(Error::Unexpected("expected drop counters")),
    };
    let map: serde_json::Map<String, serde_json::Value> = drops
        .iter()
        .filter(|(_, v)| !nonzero || *v != 0)
        .map(|(n, v)| (n.clone(), (*v).into()))
        .collect();
    c.out(&map, || show::drops_text(&drops, !nonzero));
    Ok(())
}

/// `info`: the daemon's identity, host config and table sizes.
fn info(c: &mut Ctx) -> Result<(), Error> {
    let Response::Info {
        version,
        host,
        limits,
        lcores,
        pid,
    } = c.req(&Request::Info)?
    else {
        return Err(Error::Unexpected("expected daemon info"));
    };
    let v = serde_json::json!({
        "version": version,
        "pid": pid,
        "lcores": lcores,
        "fabric_ip": show::ip(host.fabric_ip),
        "fabric_vif": host.fabric_vif,
        "host_vif": host.host_vif,
        "agent_vif": host.agent_vif,
        "limits": limits,
    });
    let opt = |o: Option<u16>| o.map_or("-".to_string(), |x| format!("vif0/{x}"));
    c.out(&v, || {
        format!(
            "vRouter dataplane (control protocol v{version}), pid {pid}, {lcores} lcores\n\
             Fabric IP: {}  Fabric: {}  Host: {}  Agent: {}\n\
             Startup parameters: Interfaces {} VRFs {} Nexthops {} Labels {} Routes {}\n",
            show::ip(host.fabric_ip),
            opt(host.fabric_vif),
            opt(host.host_vif),
            opt(host.agent_vif),
            limits.vifs,
            limits.vrfs,
            limits.nexthops,
            limits.labels,
            limits.routes
        )
    });
    Ok(())
}

fn main() -> ExitCode {
    vrouter_clidocs::generate_if_asked(<Cli as clap::CommandFactory>::command);
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = e.to_string();
            // Keep it to one line whatever the cause says.
            eprintln!("vrctl: {}", msg.lines().next().unwrap_or("error"));
            ExitCode::FAILURE
        }
    }
}
