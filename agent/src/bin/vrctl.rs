//! `vrctl`: inspect what the vRouter dataplane holds, over its control socket, in the spirit of
//! the real vRouter's `vif`, `rt`, `nh`, `mpls`, `vrfstats`, `dropstats` and `flow` utilities.
//! Readable tables by default, `--json` on every command; see `docs/vrctl.md`.

use clap::{Parser, Subcommand};
use serde::Serialize;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use vrouter_agent::show::{self, LabelView, Names};
use vrouter_dataplane::ctl::client::DEFAULT_SOCKET;
use vrouter_dataplane::ctl::proto::{StateDump, VifInfo, VrfInfo};
use vrouter_dataplane::ctl::{CtlClient, CtlError, Request, Response};

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
        cmd: ListCmd,
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

/// A failure, printed as one line.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Ctl(#[from] CtlError),
    #[error("{0}")]
    Usage(String),
    #[error("unexpected answer from the dataplane: {0}")]
    Unexpected(&'static str),
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

    fn dump(&mut self) -> Result<StateDump, Error> {
        match self.req(&Request::DumpAll)? {
            Response::State(s) => Ok(*s),
            _ => Err(Error::Unexpected("expected a state dump")),
        }
    }

    fn out<T: Serialize + ?Sized>(&self, value: &T, text: impl FnOnce() -> String) {
        if self.json {
            match serde_json::to_string_pretty(value) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("vrctl: cannot encode JSON: {e}"),
            }
        } else {
            print!("{}", text());
        }
    }
}

fn parse_prefix(s: &str) -> Result<(u32, u8), Error> {
    let bad = || Error::Usage(format!("--prefix {s:?}: expected a.b.c.d or a.b.c.d/n"));
    let (a, l) = s.split_once('/').unwrap_or((s, "32"));
    let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
    let len: u8 = l.parse().ok().filter(|l| *l <= 32).ok_or_else(bad)?;
    Ok((u32::from(addr), len))
}

fn run(cli: Cli) -> Result<(), Error> {
    if let Cmd::Flow { .. } = cli.cmd {
        // Checked before connecting: the answer does not depend on the daemon.
        return Err(Error::Usage(
            "flow list: this dataplane keeps no flow table yet (control protocol v1 has no flow dump)"
                .into(),
        ));
    }
    let mut c = Ctx {
        client: CtlClient::connect(&cli.socket)?,
        json: cli.json,
    };
    match cli.cmd {
        Cmd::Vif { cmd } => {
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
        }
        Cmd::Vrf { cmd: ListCmd::List } => {
            let v = show::vrf_views(&c.vrfs()?);
            c.out(&v, || show::vrf_text(&v));
        }
        Cmd::Route {
            cmd: RouteCmd::Dump { vrf, prefix },
        } => {
            let id = show::resolve_vrf(&c.vrfs()?, &vrf).map_err(Error::Usage)?;
            let prefix = prefix.as_deref().map(parse_prefix).transpose()?;
            let routes = match c.req(&Request::RouteDump { vrf: id, prefix })? {
                Response::Routes { routes } => routes,
                _ => return Err(Error::Unexpected("expected routes")),
            };
            let nhs = match c.req(&Request::NhList)? {
                Response::Nexthops { nhs } => nhs,
                _ => return Err(Error::Unexpected("expected nexthops")),
            };
            let v = show::route_views(&routes, &nhs);
            c.out(&v, || show::route_text(id, &v));
        }
        Cmd::Nh { cmd } => {
            let nhs = match c.req(&Request::NhList)? {
                Response::Nexthops { nhs } => nhs,
                _ => return Err(Error::Unexpected("expected nexthops")),
            };
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
        }
        Cmd::Mpls { cmd: DumpCmd::Dump } => {
            let labels = match c.req(&Request::MplsDump)? {
                Response::Labels { labels } => labels,
                _ => return Err(Error::Unexpected("expected labels")),
            };
            let v: Vec<LabelView> = labels
                .into_iter()
                .map(|(label, nh)| LabelView { label, nh })
                .collect();
            c.out(&v, || show::mpls_text(&v));
        }
        Cmd::Fip { cmd: ListCmd::List } => {
            let dump = c.dump()?;
            let v = show::fip_views(&dump.fips, &Names::from_dump(&dump));
            c.out(&v, || show::fip_text(&v));
        }
        Cmd::Flow { .. } => {}
        Cmd::Stats {
            cmd: StatsCmd::Vrf { vrf },
        } => {
            let only = match vrf {
                Some(a) => Some(show::resolve_vrf(&c.vrfs()?, &a).map_err(Error::Usage)?),
                None => None,
            };
            let mut stats = match c.req(&Request::VrfStats)? {
                Response::VrfStats { stats } => stats,
                _ => return Err(Error::Unexpected("expected VRF counters")),
            };
            stats.retain(|(id, _, _)| only.is_none_or(|o| o == *id));
            let v = show::vrf_stats_views(&stats);
            c.out(&v, || show::vrf_stats_text(&stats));
        }
        Cmd::Stats {
            cmd: StatsCmd::Vif { vif },
        } => {
            let only = match vif {
                Some(a) => Some(show::resolve_vif(&c.vifs()?, &a).map_err(Error::Usage)?),
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
        }
        Cmd::Drops { nonzero } => {
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
        }
        Cmd::Info => match c.req(&Request::Info)? {
            Response::Info {
                version,
                host,
                limits,
                lcores,
                pid,
            } => {
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
            }
            _ => return Err(Error::Unexpected("expected daemon info")),
        },
    }
    Ok(())
}

fn main() -> ExitCode {
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
