//! A single-threaded harness that runs frames through the real pipeline and reports where each
//! one went: the scenario tests, property tests and benchmarks use it, and so can anyone
//! debugging a configuration offline.

use crate::batch::{Batch, Next, PktMeta};
use crate::buf::BufPool;
use crate::ctl::proto::StateDump;
use crate::drop::DropReason;
use crate::pipeline::Pipeline;
use crate::stats::StatsRegistry;
use crate::tables::{new_tables, Limits, TableError, TableOp, TablesReader, TablesWriter};

/// What became of one input frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Transmitted on `vif` with these bytes.
    Tx {
        /// Output interface.
        vif: u16,
        /// The frame as sent.
        frame: Vec<u8>,
    },
    /// Dropped.
    Drop(DropReason),
}

impl Verdict {
    /// The frame, if transmitted on `vif`.
    pub fn sent_on(&self, vif: u16) -> Option<&[u8]> {
        match self {
            Verdict::Tx { vif: v, frame } if *v == vif => Some(frame),
            _ => None,
        }
    }
}

/// Tables, a pipeline and a buffer pool, wired together.
#[derive(Debug)]
pub struct Harness {
    /// The tables' writer.
    pub writer: TablesWriter,
    /// A reader for the pipeline.
    pub reader: TablesReader,
    /// The pipeline.
    pub pipeline: Pipeline,
    /// Counters.
    pub stats: StatsRegistry,
    /// Buffers.
    pub pool: BufPool,
    /// What the output stage handed to interfaces in the last [`Harness::run`], in order, as
    /// (vif, frame): the same as the verdicts' frames, except that a packet fragmented on output
    /// appears as its fragments.
    pub sent: Vec<(u16, Vec<u8>)>,
    /// What the pipeline decided for each frame of the last [`Harness::run`] that entered it
    /// (an oversized frame does not), in order: the VRF it was forwarded in, the nexthop, the
    /// label, the trap reason (what `vrctl trace` shows).
    pub metas: Vec<PktMeta>,
    batch: Batch,
}

impl Harness {
    /// Empty tables of `limits`.
    pub fn new(limits: Limits) -> Self {
        let (writer, reader) = new_tables(limits);
        let stats = StatsRegistry::new(usize::from(limits.vifs), limits.vrfs as usize);
        let pipeline = Pipeline::new(stats.register());
        Self {
            writer,
            reader,
            pipeline,
            stats,
            pool: BufPool::new(1024),
            sent: Vec::new(),
            metas: Vec::new(),
            batch: Batch::new(),
        }
    }

    /// Applies operations, panicking with the reason if refused (a broken fixture).
    pub fn program(&mut self, ops: Vec<TableOp>) {
        if let Err((i, e)) = self.writer.apply(ops) {
            panic!("fixture operation {i} refused: {e}");
        }
    }

    /// Applies operations, returning the refusal.
    pub fn try_program(&mut self, ops: Vec<TableOp>) -> Result<(), (usize, TableError)> {
        self.writer.apply(ops)
    }

    /// Runs `frames`, all received on `vif`, through the pipeline as one batch (or several if
    /// more than a batch) and returns one verdict per frame, in order.
    pub fn run(&mut self, vif: u16, frames: &[&[u8]]) -> Vec<Verdict> {
        let mut out = Vec::with_capacity(frames.len());
        self.sent.clear();
        self.metas.clear();
        for chunk in frames.chunks(crate::batch::BATCH_SIZE) {
            for f in chunk {
                let Some(mut b) = self.pool.alloc() else {
                    panic!("harness pool exhausted")
                };
                if !b.fill(f) {
                    // Oversized: what a device would refuse; report as an RX discard.
                    self.pool.free(b);
                    out.push(Verdict::Drop(DropReason::InterfaceRxDiscard));
                    continue;
                }
                if self.batch.push(b, vif).is_err() {
                    panic!("batch overflow");
                }
            }
            {
                let Some(t) = self.reader.enter() else {
                    panic!("tables gone")
                };
                self.pipeline.run(&t, &mut self.batch);
            }
            for p in self.batch.pkts() {
                self.metas.push(p.meta);
                out.push(match p.meta.next {
                    Next::Tx => Verdict::Tx {
                        vif: p.meta.out_vif,
                        frame: p.buf.data().to_vec(),
                    },
                    _ => Verdict::Drop(p.meta.drop),
                });
            }
            // Hand on through the real output stage so counters see what a device port would.
            let mut sent = Vec::new();
            self.pipeline
                .output(&mut self.batch, &mut self.pool, |vif, b| {
                    sent.push((vif, b));
                    Ok(())
                });
            for (vif, b) in sent {
                self.sent.push((vif, b.data().to_vec()));
                self.pool.free(b);
            }
        }
        out
    }

    /// Runs one frame.
    pub fn run1(&mut self, vif: u16, frame: &[u8]) -> Verdict {
        self.run(vif, &[frame]).remove(0)
    }

    /// The flow table (shared with the pipeline).
    pub fn flows(&self) -> std::sync::Arc<crate::tables::FlowTable> {
        match self.writer.read(|t| t.flows.clone()) {
            Some(f) => f,
            None => panic!("tables gone"),
        }
    }

    /// A copy of a running dataplane's tables, from its [`StateDump`], with an empty flow table
    /// (so a frame run through it is treated as a new flow, and the daemon's own flows and
    /// counters are not touched): what `vrctl trace` runs a frame through.
    pub fn from_dump(dump: &StateDump) -> Result<Self, (usize, TableError)> {
        let mut h = Harness::new(dump_limits(dump));
        h.try_program(dump_ops(dump))?;
        Ok(h)
    }
}

/// Tables large enough for everything in `dump`.
fn dump_limits(dump: &StateDump) -> Limits {
    let vif_max = dump.vifs.iter().map(|v| v.id).max().unwrap_or(0);
    let vrf_max = dump.vrfs.iter().map(|v| u32::from(v.id)).max().unwrap_or(0);
    let nh_max = dump.nhs.iter().map(|n| n.id).max().unwrap_or(0);
    let label_max = dump.labels.iter().map(|(l, _)| *l).max().unwrap_or(0);
    Limits {
        vifs: vif_max.saturating_add(1).max(16),
        vrfs: vrf_max + 1,
        nexthops: nh_max + 1,
        labels: label_max + 1,
        routes: dump.routes.len() + 16,
        flows: 1024,
    }
}

/// The operations that rebuild `dump`'s tables, in an order the writer accepts: VRFs,
/// interfaces (an interface may name a nexthop not there yet), the host config, nexthops with ECMP composites
/// after their members, labels, routes, floating IPs, policies and then the VRFs using them.
pub fn dump_ops(dump: &StateDump) -> Vec<TableOp> {
    use crate::tables::NexthopSpec;
    let mut ops: Vec<TableOp> = dump
        .vrfs
        .iter()
        .map(|v| TableOp::AddVrf {
            id: v.id,
            name: v.name.clone(),
        })
        .collect();
    ops.extend(dump.vifs.iter().cloned().map(TableOp::AddVif));
    // The host config names interfaces: after them.
    ops.push(TableOp::SetHost(dump.host));
    let (composites, simple): (Vec<_>, Vec<_>) = dump
        .nhs
        .iter()
        .partition(|n| matches!(n.spec, NexthopSpec::Composite { .. }));
    ops.extend(
        simple
            .into_iter()
            .chain(composites)
            .map(|n| TableOp::AddNh {
                id: n.id,
                spec: n.spec.clone(),
            }),
    );
    ops.extend(
        dump.labels
            .iter()
            .map(|&(label, nh)| TableOp::AddLabel { label, nh }),
    );
    ops.extend(dump.routes.iter().map(|r| TableOp::AddRoute {
        vrf: r.vrf,
        prefix: r.prefix,
        plen: r.plen,
        route: r.route,
    }));
    ops.extend(dump.fips.iter().cloned().map(TableOp::AddFip));
    ops.extend(dump.policies.iter().cloned().map(TableOp::SetPolicy));
    ops.extend(
        dump.vrf_policies
            .iter()
            .map(|(vrf, p)| TableOp::SetVrfPolicy {
                vrf: *vrf,
                policy: Some(p.clone()),
            }),
    );
    ops
}

/// A small but complete topology: one host with a fabric NIC, vhost0 and pkt0; a tenant network
/// with two local VMs and two remote ones (MPLSoUDP and MPLSoGRE); a public network with a
/// floating IP for one VM; a second, isolated tenant network; an ECMP subnet.
pub mod fixture {
    use crate::tables::{
        Fip, HostConfig, NexthopSpec, Route, TableOp, TunnelKind, VifKind, VifSpec,
    };
    use crate::wire::MacAddr;
    use std::net::Ipv4Addr;

    /// Host-order address from dotted quad.
    pub const fn ip(a: u8, b: u8, c: u8, d: u8) -> u32 {
        u32::from_be_bytes([a, b, c, d])
    }

    /// Fabric NIC.
    pub const FABRIC: u16 = 0;
    /// vhost0.
    pub const VHOST: u16 = 1;
    /// pkt0.
    pub const AGENT: u16 = 2;
    /// vif1.0: VM A in vn1 (10.1.1.3).
    pub const VM_A: u16 = 3;
    /// vif2.0: VM B in vn1 (10.1.1.4).
    pub const VM_B: u16 = 4;
    /// vif3.0: VM C in vn2 (10.2.2.3), a different tenant network.
    pub const VM_C: u16 = 5;

    /// VRF of the fabric.
    pub const VRF_FABRIC: u16 = 0;
    /// VRF of vn1.
    pub const VRF_VN1: u16 = 1;
    /// VRF of the public network.
    pub const VRF_PUBLIC: u16 = 2;
    /// VRF of vn2.
    pub const VRF_VN2: u16 = 3;

    /// This host's fabric IP.
    pub const HOST_IP: u32 = ip(192, 168, 100, 1);
    /// A remote compute host reached by MPLSoUDP.
    pub const REMOTE_UDP: u32 = ip(192, 168, 100, 2);
    /// A remote compute host reached by MPLSoGRE.
    pub const REMOTE_GRE: u32 = ip(192, 168, 100, 3);
    /// The gateway router for the public network.
    pub const GATEWAY: u32 = ip(192, 168, 100, 254);

    /// Our fabric MAC.
    pub const FABRIC_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xaa, 0xbb, 0x01]);
    /// The underlay neighbour's MAC.
    pub const UNDERLAY_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xcc, 0xdd, 0x01]);
    /// VM A's MAC.
    pub const MAC_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0x01, 0x03]);
    /// VM B's MAC.
    pub const MAC_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0x01, 0x04]);
    /// VM C's MAC.
    pub const MAC_C: MacAddr = MacAddr([0x02, 0, 0, 0, 0x02, 0x03]);

    /// vn1 gateway.
    pub const GW_VN1: u32 = ip(10, 1, 1, 1);
    /// VM A's IP.
    pub const IP_A: u32 = ip(10, 1, 1, 3);
    /// VM B's IP.
    pub const IP_B: u32 = ip(10, 1, 1, 4);
    /// A VM on the MPLSoUDP host.
    pub const IP_REMOTE_UDP: u32 = ip(10, 1, 1, 5);
    /// A VM on the MPLSoGRE host.
    pub const IP_REMOTE_GRE: u32 = ip(10, 1, 1, 6);
    /// VM C's IP (vn2).
    pub const IP_C: u32 = ip(10, 2, 2, 3);
    /// VM A's floating IP.
    pub const FIP_A: u32 = ip(198, 51, 100, 5);
    /// An address on the internet.
    pub const OUTSIDE: u32 = ip(203, 0, 113, 9);

    /// Label of VM A's interface.
    pub const LABEL_A: u32 = 17;
    /// Label of VM B's interface.
    pub const LABEL_B: u32 = 18;
    /// Label of VM C's interface.
    pub const LABEL_C: u32 = 19;
    /// Label the MPLSoUDP host gave its VM.
    pub const LABEL_REMOTE_UDP: u32 = 25;
    /// Label the MPLSoGRE host gave its VM.
    pub const LABEL_REMOTE_GRE: u32 = 26;
    /// Label the gateway gave the public default route.
    pub const LABEL_GATEWAY: u32 = 100;
    /// Table label of the public VRF on this host (what the gateway sends floating-IP traffic
    /// with).
    pub const LABEL_PUBLIC_TABLE: u32 = 40;

    /// Nexthop: receive to the agent (gateway addresses).
    pub const NH_AGENT: u32 = 1;
    /// Nexthop: receive to vhost0.
    pub const NH_HOST: u32 = 2;
    /// Nexthop: VM A.
    pub const NH_A: u32 = 10;
    /// Nexthop: VM B.
    pub const NH_B: u32 = 11;
    /// Nexthop: VM C.
    pub const NH_C: u32 = 12;
    /// Nexthop: MPLSoUDP tunnel to REMOTE_UDP.
    pub const NH_TUN_UDP: u32 = 20;
    /// Nexthop: MPLSoGRE tunnel to REMOTE_GRE.
    pub const NH_TUN_GRE: u32 = 21;
    /// Nexthop: MPLSoUDP tunnel to the gateway.
    pub const NH_TUN_GW: u32 = 22;
    /// Nexthop: public VRF table.
    pub const NH_PUBLIC_TABLE: u32 = 30;
    /// Nexthop: ECMP over both remote hosts.
    pub const NH_ECMP: u32 = 31;

    fn vif(id: u16, name: &str, kind: VifKind, vrf: u16, mac: MacAddr, ip: u32) -> TableOp {
        TableOp::AddVif(VifSpec {
            id,
            name: name.into(),
            kind,
            vrf,
            mac,
            ip,
            mtu: 1500,
            nh: None,
            allowed: Vec::new(),
        })
    }

    fn route(vrf: u16, prefix: u32, plen: u8, nh: u32, label: Option<u32>) -> TableOp {
        TableOp::AddRoute {
            vrf,
            prefix,
            plen,
            route: Route {
                nh,
                label,
                proxy_arp: true,
            },
        }
    }

    fn tunnel(id: u32, kind: TunnelKind, dip: u32) -> TableOp {
        TableOp::AddNh {
            id,
            spec: NexthopSpec::Tunnel {
                oif: FABRIC,
                kind,
                sip: HOST_IP,
                dip,
                dmac: UNDERLAY_MAC,
                smac: FABRIC_MAC,
            },
        }
    }

    /// The operations that build the topology, table by table in dependency order.
    pub fn ops() -> Vec<TableOp> {
        [
            vrf_ops(),
            interface_ops(),
            nexthop_ops(),
            label_ops(),
            route_ops(),
            fip_ops(),
        ]
        .concat()
    }

    fn vrf_ops() -> Vec<TableOp> {
        let addvrf = |id: u16, name: &str| TableOp::AddVrf {
            id,
            name: name.into(),
        };
        // VRF_FABRIC (0) exists from the start; the others are the networks'.
        vec![
            addvrf(VRF_VN1, "default-domain:demo:vn1"),
            addvrf(VRF_PUBLIC, "default-domain:admin:public"),
            addvrf(VRF_VN2, "default-domain:demo:vn2"),
        ]
    }

    /// The host's three interfaces, the VMs', and the host settings naming the first three.
    fn interface_ops() -> Vec<TableOp> {
        vec![
            vif(
                FABRIC,
                "eth1",
                VifKind::Physical,
                VRF_FABRIC,
                FABRIC_MAC,
                HOST_IP,
            ),
            vif(
                VHOST,
                "vhost0",
                VifKind::Host,
                VRF_FABRIC,
                FABRIC_MAC,
                HOST_IP,
            ),
            vif(
                AGENT,
                "pkt0",
                VifKind::Agent,
                VRF_FABRIC,
                MacAddr::VROUTER,
                0,
            ),
            vif(VM_A, "vif1.0", VifKind::Virtual, VRF_VN1, MAC_A, IP_A),
            vif(VM_B, "vif2.0", VifKind::Virtual, VRF_VN1, MAC_B, IP_B),
            vif(VM_C, "vif3.0", VifKind::Virtual, VRF_VN2, MAC_C, IP_C),
            TableOp::SetHost(HostConfig {
                fabric_ip: HOST_IP,
                fabric_vif: Some(FABRIC),
                host_vif: Some(VHOST),
                agent_vif: Some(AGENT),
            }),
        ]
    }

    fn nexthop_ops() -> Vec<TableOp> {
        let encap = |id, oif, dmac| TableOp::AddNh {
            id,
            spec: NexthopSpec::Encap {
                oif,
                dmac,
                smac: MacAddr::VROUTER,
            },
        };
        vec![
            TableOp::AddNh {
                id: NH_AGENT,
                spec: NexthopSpec::Receive { oif: AGENT },
            },
            TableOp::AddNh {
                id: NH_HOST,
                spec: NexthopSpec::Receive { oif: VHOST },
            },
            encap(NH_A, VM_A, MAC_A),
            encap(NH_B, VM_B, MAC_B),
            encap(NH_C, VM_C, MAC_C),
            tunnel(NH_TUN_UDP, TunnelKind::MplsOverUdp, REMOTE_UDP),
            tunnel(NH_TUN_GRE, TunnelKind::MplsOverGre, REMOTE_GRE),
            tunnel(NH_TUN_GW, TunnelKind::MplsOverUdp, GATEWAY),
            TableOp::AddNh {
                id: NH_PUBLIC_TABLE,
                spec: NexthopSpec::VrfTranslate { vrf: VRF_PUBLIC },
            },
            TableOp::AddNh {
                id: NH_ECMP,
                spec: NexthopSpec::Composite {
                    members: vec![
                        (NH_TUN_UDP, Some(LABEL_REMOTE_UDP)),
                        (NH_TUN_GRE, Some(LABEL_REMOTE_GRE)),
                    ],
                    keys: Vec::new(),
                },
            },
        ]
    }

    /// The labels this host hands out: one per local VM, and the public VRF's table label.
    fn label_ops() -> Vec<TableOp> {
        [
            (LABEL_A, NH_A),
            (LABEL_B, NH_B),
            (LABEL_C, NH_C),
            (LABEL_PUBLIC_TABLE, NH_PUBLIC_TABLE),
        ]
        .into_iter()
        .map(|(label, nh)| TableOp::AddLabel { label, nh })
        .collect()
    }

    fn route_ops() -> Vec<TableOp> {
        vec![
            route(VRF_FABRIC, HOST_IP, 32, NH_HOST, None),
            route(VRF_VN1, GW_VN1, 32, NH_AGENT, None),
            route(VRF_VN1, IP_A, 32, NH_A, None),
            route(VRF_VN1, IP_B, 32, NH_B, None),
            route(
                VRF_VN1,
                IP_REMOTE_UDP,
                32,
                NH_TUN_UDP,
                Some(LABEL_REMOTE_UDP),
            ),
            route(
                VRF_VN1,
                IP_REMOTE_GRE,
                32,
                NH_TUN_GRE,
                Some(LABEL_REMOTE_GRE),
            ),
            route(VRF_VN1, ip(10, 1, 2, 0), 24, NH_ECMP, None),
            route(VRF_VN2, ip(10, 2, 2, 1), 32, NH_AGENT, None),
            route(VRF_VN2, IP_C, 32, NH_C, None),
            route(VRF_PUBLIC, 0, 0, NH_TUN_GW, Some(LABEL_GATEWAY)),
        ]
    }

    fn fip_ops() -> Vec<TableOp> {
        vec![TableOp::AddFip(Fip {
            vrf: VRF_PUBLIC,
            fip: FIP_A,
            vif: VM_A,
            private_ip: IP_A,
        })]
    }

    /// Dotted quad of a host-order address.
    pub fn dotted(a: u32) -> Ipv4Addr {
        Ipv4Addr::from(a)
    }

    /// The network policy [`policy_ops`] attaches to vn1 and vn2.
    pub const POLICY_VN1_VN2: u32 = 1;
    /// vn1's subnet.
    pub const SUBNET_VN1: (u32, u8) = (ip(10, 1, 0, 0), 16);
    /// vn2's subnet.
    pub const SUBNET_VN2: (u32, u8) = (ip(10, 2, 2, 0), 24);

    /// Flow processing on vn1 and vn2 with one policy between them, as Contrail's
    /// `vn1 <> vn2: icmp pass, udp pass, tcp deny`, plus vn1 to anywhere else (the internet,
    /// through the floating IP) one way; and the route leak the agent installs while the policy
    /// permits: each network gets the other's VM route. `max_flows` per VRF (0: the default).
    pub fn policy_ops(max_flows: u32) -> Vec<TableOp> {
        use crate::tables::policy::{
            Direction, Endpoint, Policy, PolicyAction, PolicyRule, VrfPolicy,
        };
        let rule = |direction, proto, src, dst, action| PolicyRule {
            direction,
            proto,
            src,
            src_ports: PolicyRule::ANY_PORT,
            dst,
            dst_ports: PolicyRule::ANY_PORT,
            action,
        };
        let (vn1, vn2) = (Endpoint::Network(VRF_VN1), Endpoint::Network(VRF_VN2));
        let rules = vec![
            rule(Direction::Both, Some(1), vn1, vn2, PolicyAction::Pass),
            rule(Direction::Both, Some(17), vn1, vn2, PolicyAction::Pass),
            rule(Direction::Both, Some(6), vn1, vn2, PolicyAction::Deny),
            rule(
                Direction::OneWay,
                None,
                vn1,
                Endpoint::Any,
                PolicyAction::Pass,
            ),
        ];
        let vrf_policy = |subnet| VrfPolicy {
            subnets: vec![subnet],
            policies: vec![POLICY_VN1_VN2],
            max_flows,
        };
        vec![
            TableOp::SetPolicy(Policy {
                id: POLICY_VN1_VN2,
                name: "default-domain:demo:vn1-vn2".into(),
                rules,
            }),
            TableOp::SetVrfPolicy {
                vrf: VRF_VN1,
                policy: Some(vrf_policy(SUBNET_VN1)),
            },
            TableOp::SetVrfPolicy {
                vrf: VRF_VN2,
                policy: Some(vrf_policy(SUBNET_VN2)),
            },
            route(VRF_VN1, IP_C, 32, NH_C, None),
            route(VRF_VN2, IP_A, 32, NH_A, None),
            route(VRF_VN2, IP_B, 32, NH_B, None),
        ]
    }
}
