//! Wire format of the control socket.
//!
//! Each message is one frame: `"VRC" version:u8 length:u32(BE)` then `length` bytes of JSON
//! encoding a [`Request`] or [`Response`]. JSON keeps the protocol debuggable with `socat` and
//! tolerant of added fields; the version byte lets either side refuse what it does not speak.
//! Bulk table changes are one `Apply` request holding many operations, validated together and
//! published with one table swap.

use crate::capture::{CapturedPacket, Direction};
use crate::stats::{VifStats, VrfStats};
use crate::tables::flow::{FlowEntryInfo, FlowTableStats};
use crate::tables::{
    Fip, HostConfig, Limits, NexthopSpec, Policy, Route, TableOp, VifKind, VifSpec, VrfPolicy,
};
use serde::{Deserialize, Serialize};

/// Protocol version spoken by this build.
pub const PROTO_VERSION: u8 = 1;
/// Frame header length.
pub const HEADER_LEN: usize = 8;
/// Largest accepted frame payload for a client reading replies (a full dump of a large table
/// fits: a million routes take about 100 MiB of JSON).
pub const MAX_FRAME: usize = 256 << 20;
/// Largest request the daemon reads. The largest real request is the agent's first `Apply` on a
/// full host: every interface the vif table holds (4352 by default) with its VRF, nexthop,
/// label, routes and floating IP, plus remote routes, about 2.3 MiB at 1000 interfaces with
/// 16 remote routes each and 10 MiB at 4352 (test `the_largest_real_request_fits`). A frame
/// header claiming more is refused before anything is buffered.
pub const MAX_REQUEST: usize = 32 << 20;
const MAGIC: &[u8; 3] = b"VRC";

/// A request to the dataplane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Identify; answered with [`Response::Info`].
    Hello {
        /// Client name, for logs.
        client: String,
    },
    /// Validates and applies table operations atomically, in order.
    Apply {
        /// The operations.
        ops: Vec<TableOp>,
    },
    /// Daemon identity, host config and table sizes.
    Info,
    /// Every interface.
    VifList,
    /// Every VRF.
    VrfList,
    /// Routes of one VRF, optionally only those covering or equal to a prefix.
    RouteDump {
        /// VRF id.
        vrf: u16,
        /// Only the longest match for this address (with `plen` 32) or this exact prefix.
        prefix: Option<(u32, u8)>,
    },
    /// Every nexthop.
    NhList,
    /// The label table.
    MplsDump,
    /// Every floating IP.
    FipList,
    /// Per-interface counters.
    VifStats,
    /// Per-VRF counters.
    VrfStats,
    /// Drop counters by reason.
    Drops,
    /// Everything the agent needs to reconcile after a restart.
    DumpAll,
    /// Flow entries, each forward entry followed by its reverse (`flow -l`), with the table's
    /// counters. Walks the whole table on the control thread.
    FlowList {
        /// Only pairs with an entry keyed in this VRF.
        #[serde(default)]
        vrf: Option<u16>,
        /// At most this many pairs (default 10000).
        #[serde(default)]
        limit: Option<usize>,
    },
    /// Flow table counters only (`flow -s`).
    FlowStats,
    /// Arms a packet capture on one interface (`vrctl capture`); answered with
    /// [`Response::CaptureStarted`]. It stops when the connection that started it closes.
    CaptureStart {
        /// Interface id.
        vif: u16,
        /// Received, sent or both.
        #[serde(default)]
        dir: Direction,
        /// Bytes kept of each frame [`crate::capture::DEFAULT_SNAPLEN`].
        #[serde(default)]
        snaplen: Option<u32>,
    },
    /// Frames captured since the last read; answered with [`Response::Captured`] at once
    /// (empty when none came).
    CaptureRead {
        /// The id [`Response::CaptureStarted`] gave.
        session: u64,
        /// At most this many frames [256].
        #[serde(default)]
        max: Option<usize>,
    },
    /// Disarms a capture.
    CaptureStop {
        /// Its id.
        session: u64,
    },
}

/// One interface in a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VifInfo {
    /// Configuration.
    pub spec: VifSpec,
    /// Floating IPs bound to it.
    pub fips: Vec<u32>,
    /// Counters.
    pub stats: VifStats,
}

/// One VRF in a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VrfInfo {
    /// Id.
    pub id: u16,
    /// Name.
    pub name: String,
    /// Routes.
    pub routes: u64,
    /// Floating IPs in it.
    pub fips: u32,
}

/// One route in a dump.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteInfo {
    /// VRF.
    pub vrf: u16,
    /// Prefix.
    pub prefix: u32,
    /// Length.
    pub plen: u8,
    /// Forwarding data.
    pub route: Route,
}

/// One nexthop in a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NhInfo {
    /// Id.
    pub id: u32,
    /// What it does.
    pub spec: NexthopSpec,
}

/// The whole configured state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StateDump {
    /// Host config.
    pub host: HostConfig,
    /// VRFs.
    pub vrfs: Vec<VrfInfo>,
    /// Interfaces.
    pub vifs: Vec<VifSpec>,
    /// Nexthops (the fixed discard nexthop 0 excluded).
    pub nhs: Vec<NhInfo>,
    /// (label, nexthop).
    pub labels: Vec<(u32, u32)>,
    /// Routes of every VRF.
    pub routes: Vec<RouteInfo>,
    /// Floating IPs.
    pub fips: Vec<Fip>,
    /// Network policies.
    #[serde(default)]
    pub policies: Vec<Policy>,
    /// Flow configuration of VRFs that have one.
    #[serde(default)]
    pub vrf_policies: Vec<(u16, VrfPolicy)>,
}

/// A response from the dataplane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// Done.
    Ok,
    /// Refused; nothing was changed.
    Error {
        /// Short machine-readable kind (`bad_request`, `invalid_op`, `version`).
        kind: String,
        /// Human-readable explanation.
        message: String,
        /// For `Apply`: index of the operation that failed.
        index: Option<usize>,
    },
    /// Daemon information.
    Info {
        /// Protocol version.
        version: u8,
        /// Host config.
        host: HostConfig,
        /// Table sizes.
        limits: Limits,
        /// Number of lcores.
        lcores: usize,
        /// Daemon process id.
        pid: u32,
    },
    /// Interfaces.
    Vifs {
        /// Listing.
        vifs: Vec<VifInfo>,
    },
    /// VRFs.
    Vrfs {
        /// Listing.
        vrfs: Vec<VrfInfo>,
    },
    /// Routes.
    Routes {
        /// Dump.
        routes: Vec<RouteInfo>,
    },
    /// Nexthops.
    Nexthops {
        /// Listing.
        nhs: Vec<NhInfo>,
    },
    /// Labels.
    Labels {
        /// (label, nexthop).
        labels: Vec<(u32, u32)>,
    },
    /// Floating IPs.
    Fips {
        /// Listing.
        fips: Vec<Fip>,
    },
    /// Per-interface counters.
    VifStats {
        /// (vif id, name, counters).
        stats: Vec<(u16, String, VifStats)>,
    },
    /// Per-VRF counters.
    VrfStats {
        /// (vrf id, name, counters).
        stats: Vec<(u16, String, VrfStats)>,
    },
    /// Drop counters.
    Drops {
        /// (display name, count), every reason.
        drops: Vec<(String, u64)>,
    },
    /// Full state.
    State(Box<StateDump>),
    /// Flow entries, forward then reverse for each pair.
    Flows {
        /// Table counters.
        stats: FlowTableStats,
        /// Entries.
        flows: Vec<FlowEntryInfo>,
    },
    /// Flow table counters.
    FlowStats {
        /// Counters.
        stats: FlowTableStats,
    },
    /// A capture is armed.
    CaptureStarted {
        /// Its id, for reads and the stop.
        session: u64,
        /// Bytes kept of each frame.
        snaplen: u32,
        /// Frames it can hold unread before it loses some.
        slots: usize,
    },
    /// Captured frames.
    Captured {
        /// Oldest first.
        packets: Vec<CapturedPacket>,
        /// Frames lost since the session started (the reader was too slow).
        lost: u64,
    },
}

impl Response {
    /// An error response.
    pub fn error(kind: &str, message: impl Into<String>) -> Self {
        Response::Error {
            kind: kind.into(),
            message: message.into(),
            index: None,
        }
    }
}

/// Why bytes on the control socket could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The stream does not start with the frame magic: not our protocol.
    #[error("bad frame magic (not a vrouter control frame)")]
    BadMagic,
    /// A version this build does not speak.
    #[error("unsupported protocol version {0} (this build speaks {PROTO_VERSION})")]
    Version(u8),
    /// A frame longer than the decoder's limit ([`MAX_REQUEST`] in the daemon, [`MAX_FRAME`]
    /// for replies).
    #[error("frame of {len} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Length the header claims.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The payload is not a valid message.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Encodes one message into a frame.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serialising our own types to JSON cannot fail (no non-string map keys, no foreign impls).
    let body =
        serde_json::to_vec(msg).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
    let mut f = Vec::with_capacity(HEADER_LEN + body.len());
    f.extend_from_slice(MAGIC);
    f.push(PROTO_VERSION);
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(&body);
    f
}

/// Accumulates bytes from a stream and yields whole frames; partial reads are fine.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    limit: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::with_limit(MAX_FRAME)
    }
}

impl Decoder {
    /// A decoder with nothing buffered, accepting frames up to [`MAX_FRAME`] (for replies).
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder accepting payloads of at most `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            limit,
        }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet consumed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole frame's payload, `Ok(None)` if more bytes are needed. After an error the
    /// stream cannot be resynchronised; the connection should be answered and closed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let have = self.buf.len().min(3);
        if self.buf[..have] != MAGIC[..have] {
            return Err(FrameError::BadMagic);
        }
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        if self.buf[3] != PROTO_VERSION {
            return Err(FrameError::Version(self.buf[3]));
        }
        let len = u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]) as usize;
        if len > self.limit {
            return Err(FrameError::TooLarge {
                len,
                limit: self.limit,
            });
        }
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let payload = self.buf[HEADER_LEN..HEADER_LEN + len].to_vec();
        self.buf.drain(..HEADER_LEN + len);
        Ok(Some(payload))
    }

    /// The next whole frame decoded as `T`.
    pub fn next_message<T: for<'de> Deserialize<'de>>(&mut self) -> Result<Option<T>, FrameError> {
        match self.next_frame()? {
            None => Ok(None),
            Some(p) => serde_json::from_slice(&p)
                .map(Some)
                .map_err(|e| FrameError::Malformed(e.to_string())),
        }
    }
}

/// Convenience for tests and tools: a vif spec with the usual defaults.
pub fn vif_spec(id: u16, name: &str, kind: VifKind, vrf: u16) -> VifSpec {
    VifSpec {
        id,
        name: name.into(),
        kind,
        vrf,
        mac: crate::wire::MacAddr::default(),
        ip: 0,
        mtu: 1500,
        nh: None,
        allowed: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_in_pieces() {
        let req = Request::Apply {
            ops: vec![TableOp::AddVrf {
                id: 2,
                name: "default-domain:p:vn1".into(),
            }],
        };
        let f = encode(&req);
        let mut d = Decoder::new();
        for chunk in f.chunks(3) {
            d.feed(chunk);
        }
        assert_eq!(d.next_message::<Request>().expect("valid"), Some(req));
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn partial_frame_waits() {
        let f = encode(&Request::Info);
        let mut d = Decoder::new();
        d.feed(&f[..f.len() - 1]);
        assert_eq!(d.next_frame(), Ok(None));
        d.feed(&f[f.len() - 1..]);
        assert!(d.next_frame().expect("whole").is_some());
    }

    #[test]
    fn bad_input_gets_typed_errors() {
        let mut d = Decoder::new();
        d.feed(b"GET / HTTP/1.1\r\n");
        assert_eq!(d.next_frame(), Err(FrameError::BadMagic));
        let mut d = Decoder::new();
        d.feed(b"VRC\x09\0\0\0\0");
        assert_eq!(d.next_frame(), Err(FrameError::Version(9)));
        let mut d = Decoder::new();
        d.feed(b"VRC\x01\xff\xff\xff\xff");
        assert!(matches!(d.next_frame(), Err(FrameError::TooLarge { .. })));
        let mut d = Decoder::new();
        d.feed(b"VRC\x01\0\0\0\x02{}");
        assert!(matches!(
            d.next_message::<Request>(),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn a_request_over_the_limit_is_refused_from_its_header() {
        let f = encode(&Request::Info);
        let body = f.len() - HEADER_LEN;
        let mut d = Decoder::with_limit(body - 1);
        d.feed(&f[..HEADER_LEN]);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooLarge {
                len: body,
                limit: body - 1
            })
        );
        let mut d = Decoder::with_limit(body);
        d.feed(&f);
        assert_eq!(d.next_message::<Request>(), Ok(Some(Request::Info)));
        let mut d = Decoder::with_limit(MAX_REQUEST);
        d.feed(b"VRC\x01");
        d.feed(&((MAX_REQUEST + 1) as u32).to_be_bytes());
        assert!(matches!(d.next_frame(), Err(FrameError::TooLarge { .. })));
    }

    /// The `Apply` the agent sends when it first programs a host of `n` interfaces: per
    /// interface its network's VRF (a long Contrail name) and gateway route, its vif, nexthop,
    /// label, /32 and floating IP, and `remote` routes to other hosts' VMs; one tunnel per 16
    /// interfaces.
    fn first_apply(n: u16, remote: u32) -> Request {
        use crate::tables::{NexthopSpec, TunnelKind};
        let mac = crate::wire::MacAddr([0x02, 0xab, 0xcd, 0xef, 0x12, 0x34]);
        let route = |vrf, prefix, nh, label| TableOp::AddRoute {
            vrf,
            prefix,
            plen: 32,
            route: Route {
                nh,
                label,
                proxy_arp: true,
            },
        };
        let mut ops = Vec::new();
        for i in 0..n {
            let (vrf, vif, nh, a) = (i + 1, i + 3, u32::from(i) + 100, 0x0a00_0000 + u32::from(i));
            ops.push(TableOp::AddVrf {
                id: vrf,
                name: format!("default-domain:a-project-of-a-customer-{i:05}:its-network-{i:05}"),
            });
            ops.push(TableOp::AddVif(VifSpec {
                ip: a,
                mac,
                mtu: 1500,
                nh: Some(nh),
                allowed: Vec::new(),
                ..vif_spec(
                    vif,
                    &format!("vif{}.{}", 1000 + i, 0),
                    VifKind::Virtual,
                    vrf,
                )
            }));
            ops.push(TableOp::AddNh {
                id: nh,
                spec: NexthopSpec::Encap {
                    oif: vif,
                    dmac: mac,
                    smac: crate::wire::MacAddr::VROUTER,
                },
            });
            ops.push(TableOp::AddLabel { label: nh + 16, nh });
            ops.push(route(vrf, a, nh, None));
            ops.push(route(vrf, a | 0xff, 1, None));
            ops.push(TableOp::AddFip(Fip {
                vrf: 1,
                fip: 0xc000_0200 + u32::from(i),
                vif,
                private_ip: a,
            }));
            for r in 0..remote {
                ops.push(route(
                    vrf,
                    0x0b00_0000 + r,
                    50_000 + u32::from(i) / 16,
                    Some(99_999),
                ));
            }
            if i % 16 == 0 {
                ops.push(TableOp::AddNh {
                    id: 50_000 + u32::from(i) / 16,
                    spec: NexthopSpec::Tunnel {
                        oif: 0,
                        kind: TunnelKind::MplsOverUdp,
                        sip: 0xc0a8_6401,
                        dip: 0xc0a8_6402,
                        dmac: mac,
                        smac: mac,
                    },
                });
            }
        }
        Request::Apply { ops }
    }

    #[test]
    fn the_largest_real_request_fits() {
        let at_1000 = encode(&first_apply(1000, 16)).len();
        let full = encode(&first_apply(4352, 16)).len();
        assert!(
            full < MAX_REQUEST / 2,
            "a full host's first apply ({full} bytes) leaves no margin under {MAX_REQUEST}"
        );
        assert!(at_1000 < full);
        eprintln!("first apply: 1000 interfaces {at_1000} bytes, 4352 interfaces {full} bytes");
    }

    proptest! {
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut d = Decoder::new();
            d.feed(&bytes);
            for _ in 0..4 {
                match d.next_message::<Request>() {
                    Ok(Some(_)) => continue,
                    _ => break,
                }
            }
        }

        #[test]
        fn valid_header_with_random_payload_never_panics(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut f = b"VRC\x01".to_vec();
            f.extend_from_slice(&(body.len() as u32).to_be_bytes());
            f.extend_from_slice(&body);
            let mut d = Decoder::new();
            d.feed(&f);
            let _ = d.next_message::<Request>();
        }
    }
}
