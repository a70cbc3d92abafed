//! Writes the seed corpus (`fuzz/corpus/<target>/seed-*`): small, valid inputs of every kind each
//! parser handles, built with etherparse and the crates' own encoders so the fuzzer starts from
//! deep inside each format. Run by hand after a format changes:
//!
//! ```text
//! cargo test -p vrouter-fuzz --test seeds -- --ignored
//! ```
//!
//! It only adds or overwrites `seed-*` files; inputs a fuzz run found (`found-*`, `crash-*`)
//! stay. Seeds that fall behind a format still serve as starting points, so nothing checks that
//! they are current.
#![allow(clippy::too_many_arguments)]

use etherparse::PacketBuilder;
use std::path::{Path, PathBuf};
use vrouter_dataplane::ctl::proto::{encode, vif_spec, Request, Response};
use vrouter_dataplane::harness::fixture::*;
use vrouter_dataplane::tables::{NexthopSpec, Route, TableOp, VifKind};
use vrouter_dataplane::trap::{AgentCmd, AgentHeader, TrapReason, AGENT_HEADER_LEN};
use vrouter_dataplane::wire::MacAddr;
use vrouter_xen::wire::{Msg, Op};

type Seeds = Vec<(&'static str, Vec<u8>)>;

fn udp(
    smac: MacAddr,
    dmac: MacAddr,
    src: u32,
    dst: u32,
    ttl: u8,
    ports: (u16, u16),
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(smac.0, dmac.0)
        .ipv4(src.to_be_bytes(), dst.to_be_bytes(), ttl)
        .udp(ports.0, ports.1);
    let mut v = Vec::new();
    b.write(&mut v, payload).expect("udp");
    v
}

fn tcp(smac: MacAddr, dmac: MacAddr, src: u32, dst: u32, ports: (u16, u16)) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(smac.0, dmac.0)
        .ipv4(src.to_be_bytes(), dst.to_be_bytes(), 64)
        .tcp(ports.0, ports.1, 1000, 64240)
        .syn();
    let mut v = Vec::new();
    b.write(&mut v, &[]).expect("tcp");
    v
}

fn ping(smac: MacAddr, dmac: MacAddr, src: u32, dst: u32, ttl: u8, len: usize) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(smac.0, dmac.0)
        .ipv4(src.to_be_bytes(), dst.to_be_bytes(), ttl)
        .icmpv4_echo_request(7, 1);
    let mut v = Vec::new();
    b.write(&mut v, &vec![0x61; len]).expect("icmp");
    v
}

fn arp(sha: MacAddr, spa: u32, tpa: u32) -> Vec<u8> {
    let mut v = vec![0xff; 6];
    v.extend_from_slice(&sha.0);
    v.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    v.extend_from_slice(&sha.0);
    v.extend_from_slice(&spa.to_be_bytes());
    v.extend_from_slice(&[0; 6]);
    v.extend_from_slice(&tpa.to_be_bytes());
    v
}

/// Ethernet + IPv4 (checksum filled) + `l4` of protocol `proto`, from the underlay.
fn outer(proto: u8, src: u32, l4: &[u8]) -> Vec<u8> {
    let mut v = UNDERLAY_MAC.0.to_vec();
    v.splice(0..0, FABRIC_MAC.0);
    v.extend_from_slice(&[8, 0]);
    let total = (20 + l4.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&src.to_be_bytes());
    ip.extend_from_slice(&HOST_IP.to_be_bytes());
    let c = vrouter_dataplane::wire::checksum::checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    v.extend_from_slice(&ip);
    v.extend_from_slice(l4);
    v
}

fn mpls(label: u32) -> [u8; 4] {
    ((label << 12) | 0x100 | 60).to_be_bytes()
}

fn mpls_udp(label: u32, inner: &[u8]) -> Vec<u8> {
    let mut l4 = vec![0xc3, 0x50, 0x19, 0xeb, 0, 0, 0, 0];
    let len = (8 + 4 + inner.len()) as u16;
    l4[4..6].copy_from_slice(&len.to_be_bytes());
    l4.extend_from_slice(&mpls(label));
    l4.extend_from_slice(inner);
    outer(17, REMOTE_UDP, &l4)
}

fn mpls_gre(label: u32, inner: &[u8]) -> Vec<u8> {
    let mut l4 = vec![0, 0, 0x88, 0x47];
    l4.extend_from_slice(&mpls(label));
    l4.extend_from_slice(inner);
    outer(47, REMOTE_GRE, &l4)
}

/// A BOOTP request from the DHCP target's VM with the given DHCP options (message type first).
fn bootp(mac: MacAddr, ciaddr: [u8; 4], options: &[u8]) -> Vec<u8> {
    let mut b = vec![1, 1, 6, 0, 0x12, 0x34, 0x56, 0x78, 0, 0, 0x80, 0];
    b.extend_from_slice(&ciaddr);
    b.extend_from_slice(&[0; 12]);
    b.extend_from_slice(&mac.0);
    b.resize(236, 0);
    b.extend_from_slice(&[99, 130, 83, 99]);
    b.extend_from_slice(options);
    b.push(255);
    b
}

fn dhcp_frame(mac: MacAddr, src: [u8; 4], dst: [u8; 4], bootp: &[u8]) -> Vec<u8> {
    udp(
        mac,
        MacAddr([0xff; 6]),
        u32::from_be_bytes(src),
        u32::from_be_bytes(dst),
        64,
        (68, 67),
        bootp,
    )
}

fn wire_seeds() -> Seeds {
    let inner = udp(MAC_B, MAC_A, IP_REMOTE_UDP, IP_A, 60, (1, 2), b"payload")[14..].to_vec();
    let mut options = udp(MAC_A, MacAddr::VROUTER, IP_A, IP_B, 64, (1000, 2000), b"x");
    // IHL 6 with a NOP option word, checksum refilled.
    options.splice(34..34, [1, 1, 1, 0]);
    options[14] = 0x46;
    options[17] += 4;
    options[24..26].copy_from_slice(&[0, 0]);
    let c = vrouter_dataplane::wire::checksum::checksum(&options[14..38]);
    options[24..26].copy_from_slice(&c.to_be_bytes());
    let mut bad_sum = udp(MAC_A, MacAddr::VROUTER, IP_A, IP_B, 64, (1000, 2000), b"x");
    bad_sum[24] ^= 0x5a;
    vec![
        (
            "udp",
            udp(
                MAC_A,
                MacAddr::VROUTER,
                IP_A,
                IP_B,
                64,
                (1000, 2000),
                b"data",
            ),
        ),
        (
            "tcp",
            tcp(MAC_A, MacAddr::VROUTER, IP_A, OUTSIDE, (1000, 443)),
        ),
        (
            "ping",
            ping(MAC_A, MacAddr::VROUTER, IP_A, IP_REMOTE_GRE, 2, 12),
        ),
        ("arp", arp(MAC_A, IP_A, GW_VN1)),
        ("mpls-udp", mpls_udp(LABEL_A, &inner)),
        ("mpls-gre", mpls_gre(LABEL_PUBLIC_TABLE, &inner)),
        ("ip-options", options),
        ("bad-checksum", bad_sum),
    ]
}

fn with_ctl(ctl: u8, frame: Vec<u8>) -> Vec<u8> {
    let mut v = vec![ctl];
    v.extend_from_slice(&frame);
    v
}

fn injected(cmd: AgentCmd, vif: u16, vrf: u16, frame: &[u8]) -> Vec<u8> {
    let mut v = vec![0; AGENT_HEADER_LEN];
    AgentHeader {
        cmd,
        reason: TrapReason::None,
        vif,
        vrf,
        param: 0,
    }
    .emit(&mut v);
    v.extend_from_slice(frame);
    v
}

fn pipeline_seeds() -> Seeds {
    // Control byte: port index (0 VM A, 1 fabric, 2 VM B, 3 VM C, 4 vhost0, 5 pkt0), +8 policy,
    // +16 twice.
    let inner = udp(MAC_B, MAC_A, IP_REMOTE_UDP, IP_A, 60, (1, 2), b"payload")[14..].to_vec();
    let to_fip = udp(MAC_B, MAC_A, OUTSIDE, FIP_A, 60, (5, 6), b"in")[14..].to_vec();
    let vm_udp = udp(
        MAC_A,
        MacAddr::VROUTER,
        IP_A,
        IP_B,
        64,
        (1000, 2000),
        b"data",
    );
    let mut tagged = vm_udp.clone();
    tagged.splice(12..12, [0x81, 0, 0, 5]);
    let discover = dhcp_frame(MAC_A, [0; 4], [255; 4], &bootp(MAC_A, [0; 4], &[53, 1, 1]));
    vec![
        ("vm-udp", with_ctl(0, vm_udp.clone())),
        (
            "vm-udp-remote",
            with_ctl(
                0,
                udp(
                    MAC_A,
                    MacAddr::VROUTER,
                    IP_A,
                    IP_REMOTE_UDP,
                    64,
                    (1, 2),
                    b"r",
                ),
            ),
        ),
        (
            "vm-tcp-outside-policy-twice",
            with_ctl(24, tcp(MAC_A, MacAddr::VROUTER, IP_A, OUTSIDE, (1000, 443))),
        ),
        (
            "vm-udp-vn2-policy",
            with_ctl(
                8,
                udp(MAC_A, MacAddr::VROUTER, IP_A, IP_C, 64, (7, 8), b"c"),
            ),
        ),
        (
            "vm-ping-gateway",
            with_ctl(0, ping(MAC_A, MacAddr::VROUTER, IP_A, GW_VN1, 64, 8)),
        ),
        (
            "vm-ping-ttl1",
            with_ctl(0, ping(MAC_A, MacAddr::VROUTER, IP_A, IP_REMOTE_GRE, 1, 8)),
        ),
        (
            "vm-ping-ecmp-big",
            with_ctl(
                0,
                ping(MAC_A, MacAddr::VROUTER, IP_A, ip(10, 1, 2, 9), 64, 1460),
            ),
        ),
        ("vm-arp", with_ctl(0, arp(MAC_A, IP_A, GW_VN1))),
        ("vm-dhcp-discover", with_ctl(0, discover)),
        ("vm-vlan-tagged", with_ctl(0, tagged)),
        ("fabric-mpls-udp", with_ctl(1, mpls_udp(LABEL_A, &inner))),
        (
            "fabric-mpls-gre-fip",
            with_ctl(1, mpls_gre(LABEL_PUBLIC_TABLE, &to_fip)),
        ),
        (
            "fabric-arp",
            with_ctl(1, arp(UNDERLAY_MAC, REMOTE_UDP, HOST_IP)),
        ),
        (
            "vhost-udp",
            with_ctl(
                4,
                udp(
                    FABRIC_MAC,
                    UNDERLAY_MAC,
                    HOST_IP,
                    REMOTE_UDP,
                    64,
                    (22, 40000),
                    b"h",
                ),
            ),
        ),
        (
            "agent-txvif",
            with_ctl(5, injected(AgentCmd::TxVif, VM_A, VRF_VN1, &vm_udp)),
        ),
        (
            "agent-route",
            with_ctl(5, injected(AgentCmd::RouteInVrf, 0, VRF_VN1, &vm_udp)),
        ),
    ]
}

/// A ctl seed: read size byte, then frames.
fn stream(chunk: u8, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![chunk];
    for f in frames {
        v.extend_from_slice(f);
    }
    v
}

fn ctl_seeds() -> Seeds {
    let r = |req: Request| encode(&req);
    let ops = vec![
        TableOp::AddVrf {
            id: 5,
            name: "default-domain:demo:vn5".into(),
        },
        TableOp::AddVif(vif_spec(9, "vif9.0", VifKind::Virtual, 5)),
        TableOp::AddNh {
            id: 40,
            spec: NexthopSpec::Encap {
                oif: 9,
                dmac: MAC_C,
                smac: MacAddr::VROUTER,
            },
        },
        TableOp::AddLabel { label: 50, nh: 40 },
        TableOp::AddRoute {
            vrf: 5,
            prefix: ip(10, 5, 0, 3),
            plen: 32,
            route: Route {
                nh: 40,
                label: None,
                proxy_arp: true,
            },
        },
        TableOp::DelRoute {
            vrf: 5,
            prefix: ip(10, 5, 0, 3),
            plen: 32,
        },
    ];
    vec![
        (
            "hello-info",
            stream(
                0,
                &[
                    r(Request::Hello {
                        client: "vrouter-agent".into(),
                    }),
                    r(Request::Info),
                ],
            ),
        ),
        (
            "apply",
            stream(
                0,
                &[r(Request::Apply { ops: ops.clone() }), r(Request::VifList)],
            ),
        ),
        ("apply-in-pieces", stream(7, &[r(Request::Apply { ops })])),
        (
            "dumps",
            stream(
                0,
                &[
                    r(Request::VrfList),
                    r(Request::RouteDump {
                        vrf: 1,
                        prefix: Some((IP_A, 32)),
                    }),
                    r(Request::NhList),
                    r(Request::MplsDump),
                    r(Request::FipList),
                    r(Request::DumpAll),
                ],
            ),
        ),
        (
            "stats-flows",
            stream(
                0,
                &[
                    r(Request::VifStats),
                    r(Request::VrfStats),
                    r(Request::Drops),
                    r(Request::FlowList {
                        vrf: Some(1),
                        limit: Some(10),
                    }),
                    r(Request::FlowStats),
                ],
            ),
        ),
        (
            "responses",
            stream(
                0,
                &[
                    encode(&Response::Ok),
                    encode(&Response::error("invalid_op", "no such vrf")),
                ],
            ),
        ),
    ]
}

fn xs(op: Op, req_id: u32, tx_id: u32, payload: &[u8]) -> Vec<u8> {
    Msg::new(op, req_id, tx_id, payload.to_vec())
        .expect("fits")
        .encode()
}

fn xenstore_seeds() -> Seeds {
    let base = b"/local/domain/0/backend/vif/7/0";
    let mut write = base.to_vec();
    write.extend_from_slice(b"/mac\x0002:00:00:00:00:07");
    vec![
        (
            "read",
            stream(0, &[xs(Op::Read, 2, 0, b"/local/domain/0/name\0")]),
        ),
        (
            "write-read-dir",
            stream(
                0,
                &[
                    xs(Op::Mkdir, 2, 0, &[&base[..], b"\0"].concat()),
                    xs(Op::Write, 4, 0, &write),
                    xs(Op::Directory, 6, 0, &[&base[..], b"\0"].concat()),
                    xs(Op::GetPerms, 8, 0, &[&base[..], b"/mac\0"].concat()),
                ],
            ),
        ),
        (
            "watch",
            stream(
                5,
                &[
                    xs(Op::Watch, 2, 0, b"/local/domain/0/backend/vif\0tok\0"),
                    xs(Op::Write, 4, 0, b"/local/domain/0/backend/vif/1\0x"),
                    xs(Op::Unwatch, 6, 0, b"/local/domain/0/backend/vif\0tok\0"),
                ],
            ),
        ),
        (
            "transaction",
            stream(
                0,
                &[
                    xs(Op::TransactionStart, 2, 0, b"\0"),
                    xs(Op::Write, 4, 1, b"/local/domain/7/data/x\0y"),
                    xs(Op::TransactionEnd, 6, 1, b"T\0"),
                ],
            ),
        ),
        (
            "guest-perms",
            stream(
                0,
                &[
                    xs(Op::Write, 1, 0, b"data/x\0y"),
                    xs(Op::SetPerms, 2, 0, b"/local/domain/7\0b7\0r0\0"),
                    xs(Op::Rm, 3, 0, b"/local/domain/0/name\0"),
                    xs(Op::GetDomainPath, 4, 0, b"7\0"),
                ],
            ),
        ),
    ]
}

fn dhcp_seeds() -> Seeds {
    let vm = MacAddr([0x02, 0, 0, 0, 0, 0x07]);
    let (vm_ip, gw) = ([10, 1, 1, 7], [10, 1, 1, 1]);
    let req_opts = [
        53, 1, 3, 50, 4, 10, 1, 1, 7, 54, 4, 10, 1, 1, 1, 55, 4, 1, 3, 6, 15,
    ];
    let ping_gw = ping(
        vm,
        MacAddr::VROUTER,
        u32::from_be_bytes(vm_ip),
        u32::from_be_bytes(gw),
        64,
        8,
    );
    let ping_far = ping(
        vm,
        MacAddr::VROUTER,
        u32::from_be_bytes(vm_ip),
        ip(10, 2, 0, 9),
        1,
        8,
    );
    let big = ping(
        vm,
        MacAddr::VROUTER,
        u32::from_be_bytes(vm_ip),
        ip(10, 2, 0, 9),
        64,
        1472,
    );
    let discover = dhcp_frame(
        vm,
        [0; 4],
        [255; 4],
        &bootp(vm, [0; 4], &[53, 1, 1, 55, 3, 1, 3, 6]),
    );
    let mut raw = vec![0; AGENT_HEADER_LEN];
    AgentHeader {
        cmd: AgentCmd::Trap,
        reason: TrapReason::L3Protocols,
        vif: 3,
        vrf: 2,
        param: 0,
    }
    .emit(&mut raw);
    raw.extend_from_slice(&discover);
    vec![
        ("discover", with_ctl(0, discover)),
        (
            "request",
            with_ctl(
                0,
                dhcp_frame(vm, [0; 4], [255; 4], &bootp(vm, [0; 4], &req_opts)),
            ),
        ),
        (
            "renew",
            with_ctl(0, dhcp_frame(vm, vm_ip, gw, &bootp(vm, vm_ip, &[53, 1, 3]))),
        ),
        (
            "release",
            with_ctl(1, dhcp_frame(vm, vm_ip, gw, &bootp(vm, vm_ip, &[53, 1, 7]))),
        ),
        (
            "decline",
            with_ctl(
                0,
                dhcp_frame(
                    vm,
                    [0; 4],
                    [255; 4],
                    &bootp(vm, [0; 4], &[53, 1, 4, 50, 4, 10, 1, 1, 7]),
                ),
            ),
        ),
        (
            "inform",
            with_ctl(0, dhcp_frame(vm, vm_ip, gw, &bootp(vm, vm_ip, &[53, 1, 8]))),
        ),
        ("ping-gateway", with_ctl(1, ping_gw)),
        ("ttl-expired", with_ctl(2, ping_far)),
        ("too-big", with_ctl(3, big)),
        ("raw-header", with_ctl(9, raw)),
    ]
}

fn api_seeds() -> Seeds {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/tests/fixtures");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("api fixtures")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let mut v: Seeds = files
        .iter()
        .map(|p| {
            let name = p
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("name")
                .replace('.', "-");
            (
                &*Box::leak(name.into_boxed_str()),
                std::fs::read(p).expect("fixture"),
            )
        })
        .collect();
    v.push((
        "values",
        b"6f1e3c2a-9b1d-4e5f-8a7b-0c1d2e3f4a5b\n02:00:00:00:01:03\n10.1.0.0/16\n10.1.2.3/8\n"
            .to_vec(),
    ));
    v.push(("label", b"1048575".to_vec()));
    v
}

/// A gateway's side of a session: its OPEN and KEEPALIVE, then UPDATEs (announce with RTs
/// and encapsulations, withdraw, End-of-RIB), a ROUTE-REFRESH, a NOTIFICATION; in several read
/// sizes.
fn bgp_seeds() -> Seeds {
    use std::net::Ipv4Addr;
    use vrouter_api::Ipv4Prefix;
    use vrouter_fuzz::bgp::{OUR_AS, PEER_AS};
    use vrouter_shim::bgp::codec::{self, PathAttrs, Sender};
    use vrouter_shim::bgp::types::{Encap, Rd, RouteTarget, VpnKey};
    let key = |a: [u8; 4], len: u8| VpnKey {
        rd: Rd::ip(Ipv4Addr::new(172, 30, 0, 253), 1),
        prefix: Ipv4Prefix::truncating(Ipv4Addr::from(a), len).expect("prefix"),
    };
    let attrs = PathAttrs {
        nexthop: Ipv4Addr::new(172, 30, 0, 253),
        targets: vec![RouteTarget::asn(OUR_AS, 4)],
        encaps: vec![Encap::MplsOverGre],
    };
    let sender = Sender {
        asn: PEER_AS,
        ibgp: false,
    };
    let open = codec::open(PEER_AS, 90, Ipv4Addr::new(172, 30, 0, 253));
    let ka = codec::keepalive();
    let announce = codec::announce(
        sender,
        &attrs,
        &[
            (key([203, 0, 113, 0], 24), 3001),
            (key([0, 0, 0, 0], 0), 3002),
        ],
    );
    let withdraw = codec::withdraw(&[key([203, 0, 113, 0], 24)]);
    let mut refresh = vec![0xff; 16];
    refresh.extend_from_slice(&[0, 23, 5, 0, 1, 0, 128]);
    let notification = codec::notification(&codec::Notification::new(6, 2));
    let session = [
        open.clone(),
        ka.clone(),
        announce.clone(),
        codec::end_of_rib(),
        withdraw.clone(),
        refresh,
        ka.clone(),
        notification,
    ];
    vec![
        ("session-whole", stream(0, &session)),
        ("session-7", stream(7, &session)),
        ("session-19", stream(19, &session)),
        (
            "announce-after-open",
            stream(0, &[open.clone(), ka.clone(), announce]),
        ),
        ("withdraw-after-open", stream(0, &[open, ka, withdraw])),
    ]
}

fn all_seeds() -> Vec<(&'static str, Seeds)> {
    vec![
        ("wire", wire_seeds()),
        ("pipeline", pipeline_seeds()),
        ("ctl", ctl_seeds()),
        ("xenstore", xenstore_seeds()),
        ("dhcp", dhcp_seeds()),
        ("api", api_seeds()),
        ("bgp", bgp_seeds()),
    ]
}

fn seed_path(target: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
        .join(format!("seed-{name}"))
}

#[test]
#[ignore = "writes fuzz/corpus/*/seed-*: run by hand when a format changes"]
fn write_seeds() {
    for (target, seeds) in all_seeds() {
        for (name, bytes) in seeds {
            let p = seed_path(target, name);
            std::fs::create_dir_all(p.parent().expect("dir")).expect("mkdir");
            std::fs::write(&p, bytes).expect("write seed");
        }
    }
}
