//! Applies control requests to the tables and answers from them. I/O-free: the daemon's socket
//! loop and in-process tests call [`handle`] alike.

use super::proto::{
    NhInfo, Request, Response, RouteInfo, StateDump, VifInfo, VrfInfo, PROTO_VERSION,
};
use crate::capture::{Capture, CaptureError, DEFAULT_SNAPLEN, MAX_SLOTS};
use crate::stats::StatsRegistry;
use crate::tables::{fib::prefix_mask, Tables, TablesWriter};
use std::sync::Arc;

/// Facts about the running daemon reported by `Info`, and what requests reach besides the
/// tables.
#[derive(Debug, Clone, Default)]
pub struct DaemonInfo {
    /// Number of forwarding lcores.
    pub lcores: usize,
    /// The lcores' capture slots (`vrctl capture`).
    pub capture: Arc<Capture>,
}

/// Frames a `CaptureRead` returns by default.
const CAPTURE_READ_MAX: usize = 256;

/// Answers one request.
pub fn handle(
    w: &mut TablesWriter,
    stats: &StatsRegistry,
    info: &DaemonInfo,
    req: Request,
) -> Response {
    match req {
        Request::Apply { ops } => {
            let n = ops.len();
            match w.apply(ops) {
                Ok(()) => {
                    log::debug!("applied {n} table operations");
                    Response::Ok
                }
                Err((i, e)) => {
                    log::warn!("refused table operation {i} of {n}: {e}");
                    Response::Error {
                        kind: "invalid_op".into(),
                        message: e.to_string(),
                        index: Some(i),
                    }
                }
            }
        }
        other => w
            .read(|t| answer(t, stats, info, other))
            .unwrap_or_else(|| Response::error("internal", "tables unavailable")),
    }
}

fn vrf_info(v: &crate::tables::Vrf) -> VrfInfo {
    VrfInfo {
        id: v.id,
        name: v.name.clone(),
        routes: v.routes(),
        fips: v.fip_count,
    }
}

fn routes_of(t: &Tables, vrf: u16) -> Vec<RouteInfo> {
    let mut r: Vec<RouteInfo> = t
        .fib
        .routes_of(vrf)
        .map(|(prefix, plen, route)| RouteInfo {
            vrf,
            prefix,
            plen,
            route,
        })
        .collect();
    r.sort_by_key(|x| (x.prefix, x.plen));
    r
}

fn answer(t: &Tables, stats: &StatsRegistry, info: &DaemonInfo, req: Request) -> Response {
    match req {
        Request::Hello { client } => {
            log::info!("control client {client:?} connected");
            info_response(t, info)
        }
        Request::Info => info_response(t, info),
        Request::Apply { .. } => Response::error("internal", "apply is handled by the writer"),
        Request::VifList => Response::Vifs {
            vifs: t
                .vifs
                .iter()
                .flatten()
                .map(|v| VifInfo {
                    spec: v.spec.clone(),
                    fips: v.fips.iter().map(|f| f.fip).collect(),
                    stats: stats.vif(v.spec.id),
                })
                .collect(),
        },
        Request::VrfList => Response::Vrfs {
            vrfs: t.vrfs.iter().flatten().map(vrf_info).collect(),
        },
        Request::RouteDump { vrf, prefix } => route_dump(t, vrf, prefix),
        Request::NhList => Response::Nexthops {
            nhs: nh_list(t, true),
        },
        Request::MplsDump => Response::Labels {
            labels: t.labels().collect(),
        },
        Request::FipList => Response::Fips {
            fips: t.fips.iter().copied().collect(),
        },
        Request::VifStats => Response::VifStats {
            stats: t
                .vifs
                .iter()
                .flatten()
                .map(|v| (v.spec.id, v.spec.name.clone(), stats.vif(v.spec.id)))
                .collect(),
        },
        Request::VrfStats => Response::VrfStats {
            stats: t
                .vrfs
                .iter()
                .flatten()
                .map(|v| (v.id, v.name.clone(), stats.vrf(v.id)))
                .collect(),
        },
        Request::Drops => Response::Drops {
            drops: stats
                .drops()
                .into_iter()
                .map(|(r, n)| (r.name().to_string(), n))
                .collect(),
        },
        Request::DumpAll => Response::State(Box::new(state_dump(t))),
        Request::FlowList { vrf, limit } => flow_list(t, vrf, limit),
        Request::FlowStats => Response::FlowStats {
            stats: flow_stats(t),
        },
        Request::CaptureStart { vif, dir, snaplen } => {
            if t.vif(vif).is_none() {
                return Response::error("not_found", format!("vif {vif} does not exist"));
            }
            let snaplen = snaplen.unwrap_or(DEFAULT_SNAPLEN);
            match info.capture.start(vif, dir, snaplen) {
                Ok((session, slots)) => Response::CaptureStarted {
                    session,
                    snaplen,
                    slots,
                },
                Err(e @ CaptureError::Busy { .. }) => Response::error("busy", e.to_string()),
                Err(e) => Response::error("bad_request", e.to_string()),
            }
        }
        Request::CaptureRead { session, max } => {
            match info
                .capture
                .read(session, max.unwrap_or(CAPTURE_READ_MAX).min(MAX_SLOTS))
            {
                Ok((packets, lost)) => Response::Captured { packets, lost },
                Err(e) => Response::error("not_found", e.to_string()),
            }
        }
        Request::CaptureStop { session } => {
            info.capture.stop(session);
            Response::Ok
        }
    }
}

/// One VRF's routes: all of them, the longest match for an address (`plen` 32), or one exact
/// prefix.
fn route_dump(t: &Tables, vrf: u16, prefix: Option<(u32, u8)>) -> Response {
    let Some(v) = t.vrf(vrf) else {
        return Response::error("not_found", format!("vrf {vrf} does not exist"));
    };
    let routes = match prefix {
        None => routes_of(t, vrf),
        Some((addr, plen)) if plen > 32 => {
            return Response::error(
                "bad_request",
                format!(
                    "prefix length {plen} > 32 for {}",
                    std::net::Ipv4Addr::from(addr)
                ),
            )
        }
        Some((addr, 32)) => t
            .fib
            .lookup(vrf, v.plens, addr)
            .map(|(route, plen)| RouteInfo {
                vrf,
                prefix: addr & prefix_mask(plen),
                plen,
                route,
            })
            .into_iter()
            .collect(),
        Some((addr, plen)) => t
            .fib
            .get(vrf, addr, plen)
            .map(|route| RouteInfo {
                vrf,
                prefix: addr & prefix_mask(plen),
                plen,
                route,
            })
            .into_iter()
            .collect(),
    };
    Response::Routes { routes }
}

/// The whole configured state.
fn state_dump(t: &Tables) -> StateDump {
    let mut policies: Vec<_> = t.policies.values().cloned().collect();
    policies.sort_by_key(|p| p.id);
    StateDump {
        host: t.host,
        vrfs: t.vrfs.iter().flatten().map(vrf_info).collect(),
        vifs: t.vifs.iter().flatten().map(|v| v.spec.clone()).collect(),
        nhs: nh_list(t, false),
        labels: t.labels().collect(),
        routes: t
            .vrfs
            .iter()
            .flatten()
            .flat_map(|v| routes_of(t, v.id))
            .collect(),
        fips: t.fips.iter().copied().collect(),
        policies,
        vrf_policies: t
            .vrfs
            .iter()
            .flatten()
            .filter_map(|v| Some((v.id, v.policy.clone()?)))
            .collect(),
    }
}

fn flow_list(t: &Tables, vrf: Option<u16>, limit: Option<usize>) -> Response {
    // The control thread takes a share of aging too, so an idle dataplane's listing does not
    // show flows that have timed out.
    t.flows.sweep(t.flows.now(), t.flows.capacity());
    Response::Flows {
        flows: t.flows.list(vrf, limit.unwrap_or(10_000)),
        stats: flow_stats(t),
    }
}

fn flow_stats(t: &Tables) -> crate::tables::flow::FlowTableStats {
    t.flows.stats(|v| {
        t.vrf(v)
            .and_then(|v| v.policy.as_ref())
            .map(|p| p.max_flows)
    })
}

fn nh_list(t: &Tables, with_discard: bool) -> Vec<NhInfo> {
    t.nh_specs
        .iter()
        .enumerate()
        .filter(|(id, _)| with_discard || *id != 0)
        .filter_map(|(id, s)| {
            s.as_ref().map(|spec| NhInfo {
                id: id as u32,
                spec: spec.clone(),
            })
        })
        .collect()
}

fn info_response(t: &Tables, info: &DaemonInfo) -> Response {
    Response::Info {
        version: PROTO_VERSION,
        host: t.host,
        limits: t.limits,
        lcores: info.lcores,
        pid: std::process::id(),
    }
}
