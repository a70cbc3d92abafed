//! How `vrctl` shows dataplane tables: JSON views (addresses and MACs as strings) and text laid
//! out like the real vRouter utilities (`vif --list`, `rt --dump`, `nh --list`, `mpls --dump`,
//! `vrfstats`, `dropstats`), so operators who know Contrail read them without a glossary.
//! I/O-free: every function takes dataplane answers and returns a value or a string.

use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use vrouter_dataplane::ctl::proto::{NhInfo, RouteInfo, StateDump, VifInfo, VrfInfo};
use vrouter_dataplane::stats::{VifStats, VrfStats};
use vrouter_dataplane::tables::{Fip, NexthopSpec, TunnelKind, VifSpec};

/// Dotted quad of a host-order address.
pub fn ip(a: u32) -> String {
    Ipv4Addr::from(a).to_string()
}

/// Names of VRFs and interfaces, to label ids in output.
#[derive(Debug, Clone, Default)]
pub struct Names {
    /// VRF id -> name.
    pub vrfs: HashMap<u16, String>,
    /// vif id -> OS name.
    pub vifs: HashMap<u16, String>,
}

impl Names {
    /// From a full dump.
    pub fn from_dump(d: &StateDump) -> Self {
        Self {
            vrfs: d.vrfs.iter().map(|v| (v.id, v.name.clone())).collect(),
            vifs: d.vifs.iter().map(|v| (v.id, v.name.clone())).collect(),
        }
    }
}

/// Resolves a VRF given by id or name: an exact name, else a unique last `:`-component (a VRF
/// named `default-domain:admin:net1` answers to `net1`).
pub fn resolve_vrf(vrfs: &[VrfInfo], arg: &str) -> Result<u16, String> {
    if let Ok(id) = arg.parse::<u16>() {
        if vrfs.iter().any(|v| v.id == id) {
            return Ok(id);
        }
        return Err(format!("vrf {id} does not exist (see `vrctl vrf list`)"));
    }
    if let Some(v) = vrfs.iter().find(|v| v.name == arg) {
        return Ok(v.id);
    }
    let tail: Vec<&VrfInfo> = vrfs
        .iter()
        .filter(|v| v.name.rsplit(':').next() == Some(arg))
        .collect();
    match tail.as_slice() {
        [v] => Ok(v.id),
        [] => Err(format!("vrf {arg:?} does not exist (see `vrctl vrf list`)")),
        many => Err(format!(
            "vrf {arg:?} is ambiguous: {}",
            many.iter()
                .map(|v| format!("{} ({})", v.name, v.id))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Resolves an interface given by id, `vif0/N` or OS name.
pub fn resolve_vif(vifs: &[VifInfo], arg: &str) -> Result<u16, String> {
    let specs: Vec<&VifSpec> = vifs.iter().map(|v| &v.spec).collect();
    resolve_vif_spec(&specs, arg).map(|v| v.id)
}

/// The interface given by id, `vif0/N` or OS name, among `vifs` (e.g. a state dump's).
pub fn resolve_vif_spec<'a>(vifs: &[&'a VifSpec], arg: &str) -> Result<&'a VifSpec, String> {
    let num = arg.strip_prefix("vif0/").unwrap_or(arg);
    if let Ok(id) = num.parse::<u16>() {
        return vifs
            .iter()
            .find(|v| v.id == id)
            .copied()
            .ok_or_else(|| format!("vif {id} does not exist (see `vrctl vif list`)"));
    }
    vifs.iter()
        .find(|v| v.name == arg)
        .copied()
        .ok_or_else(|| format!("interface {arg:?} does not exist (see `vrctl vif list`)"))
}

/// One interface, for JSON.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VifView {
    /// Id.
    pub id: u16,
    /// OS name.
    pub name: String,
    /// Kind (`Virtual`, `Virtual(ip-fabric)`, `Virtual(link-local)`, `XenLL`, `Physical`,
    /// `Host`, `Agent`).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// VRF id.
    pub vrf: u16,
    /// VRF name, if it exists.
    pub vrf_name: Option<String>,
    /// MAC.
    pub mac: String,
    /// IPv4 address.
    pub ip: String,
    /// MTU.
    pub mtu: u16,
    /// Its nexthop.
    pub nh: Option<u32>,
    /// Floating IPs bound to it.
    pub fips: Vec<String>,
    /// Counters.
    pub stats: VifStats,
}

/// JSON views of interfaces.
pub fn vif_views(vifs: &[VifInfo], names: &Names) -> Vec<VifView> {
    vifs.iter()
        .map(|v| VifView {
            id: v.spec.id,
            name: v.spec.name.clone(),
            kind: vif_type(v, names),
            vrf: v.spec.vrf,
            vrf_name: names.vrfs.get(&v.spec.vrf).cloned(),
            mac: v.spec.mac.to_string(),
            ip: ip(v.spec.ip),
            mtu: v.spec.mtu,
            nh: v.spec.nh,
            fips: v.fips.iter().map(|f| ip(*f)).collect(),
            stats: v.stats.clone(),
        })
        .collect()
}

/// An interface's type by name: the kind, and for a VM's interface on a system network which
/// one (`Virtual(ip-fabric)` in the fabric VRF, `Virtual(link-local)` in a link-local VRF).
fn vif_type(v: &VifInfo, names: &Names) -> &'static str {
    use crate::compile::LINK_LOCAL_VRF;
    if v.spec.kind != vrouter_dataplane::tables::VifKind::Virtual {
        return v.spec.kind.name();
    }
    let vrf = names.vrfs.get(&v.spec.vrf).map(String::as_str);
    if v.spec.vrf == vrouter_dataplane::tables::FABRIC_VRF {
        "Virtual(ip-fabric)"
    } else if vrf.is_some_and(|n| n.starts_with(LINK_LOCAL_VRF)) {
        "Virtual(link-local)"
    } else {
        "Virtual"
    }
}

/// `vif --list` layout.
pub fn vif_text(vifs: &[VifView], legend: bool) -> String {
    let mut s = String::new();
    if legend {
        s.push_str("Vrouter Interface Table\n\nFlags: L3=Layer 3\n\n");
    }
    for v in vifs {
        let _ = write!(s, "{:<12}OS: {}", format!("vif0/{}", v.id), v.name);
        if let Some(nh) = v.nh {
            let _ = write!(s, " NH: {nh}");
        }
        s.push('\n');
        let _ = writeln!(
            s,
            "{:12}Type:{} HWaddr:{} IPaddr:{}",
            "", v.kind, v.mac, v.ip
        );
        let _ = writeln!(
            s,
            "{:12}Vrf:{} Flags:L3 MTU:{}{}",
            "",
            v.vrf,
            v.mtu,
            v.vrf_name
                .as_deref()
                .map(|n| format!(" Network:{n}"))
                .unwrap_or_default()
        );
        if !v.fips.is_empty() {
            let _ = writeln!(s, "{:12}FIP: {}", "", v.fips.join(" "));
        }
        let st = &v.stats;
        let _ = writeln!(
            s,
            "{:12}RX packets:{}  bytes:{} errors:{}",
            "", st.rx_packets, st.rx_bytes, st.rx_errors
        );
        let _ = writeln!(
            s,
            "{:12}TX packets:{}  bytes:{} errors:{}",
            "", st.tx_packets, st.tx_bytes, st.tx_errors
        );
        let _ = writeln!(s, "{:12}Drops:{}\n", "", st.drops);
    }
    s
}

/// `vrctl bgp`: the controller's BGP neighbours laid out like a router's `show bgp summary`
/// (Up/Down is the time established, or `never` and the last error when the session is down).
pub fn bgp_text(s: &vrouter_api::bgp::BgpSummary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "BGP router identifier {}, local AS number {}\nNeighbors: {}\n",
        s.router_id,
        s.asn,
        s.neighbors.len()
    );
    let _ = writeln!(
        out,
        "{:<16} {:>10} {:<12} {:>9} {:>8} {:>8} {:>6}  Last error",
        "Neighbor", "AS", "State", "Up/Down", "PfxRcd", "PfxSnt", "Flaps"
    );
    for n in &s.neighbors {
        let up = if n.state == vrouter_api::bgp::BgpState::Established {
            let t = n.uptime_s;
            format!("{:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60)
        } else {
            "never".to_string()
        };
        let _ = writeln!(
            out,
            "{:<16} {:>10} {:<12} {:>9} {:>8} {:>8} {:>6}  {}",
            n.address.to_string(),
            n.asn,
            format!("{:?}", n.state),
            up,
            n.prefixes_received,
            n.prefixes_advertised,
            n.flaps,
            n.last_error.as_deref().unwrap_or("-")
        );
    }
    out
}

/// `vrctl agent`: the agent's view from its `/status`: bound interfaces, then every item it
/// could not program (an interface left unbound and why), then its last error.
pub fn agent_text(s: &crate::metrics::Status) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Config source: {}", s.config_source);
    let _ = writeln!(out, "Dataplane: {}\n", s.dp_socket);
    let _ = writeln!(
        out,
        "{:<12} {:>5} {:>5} {:>7} {:>7}  Network",
        "Interface", "Vif", "Vrf", "Nh", "Label"
    );
    for b in &s.bindings {
        let label = if b.label == 0 {
            "-".to_string()
        } else {
            b.label.to_string()
        };
        let _ = writeln!(
            out,
            "{:<12} {:>5} {:>5} {:>7} {:>7}  {}",
            b.name, b.vif, b.vrf, b.nh, label, b.network
        );
    }
    let _ = writeln!(out, "\nWarnings: {}", s.warnings.len());
    for w in &s.warnings {
        let _ = writeln!(out, "  {w}");
    }
    if let Some(e) = &s.last_error {
        let _ = writeln!(out, "\nLast error: {e}");
    }
    out
}

/// One VRF, for JSON.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VrfView {
    /// Id.
    pub id: u16,
    /// Name.
    pub name: String,
    /// Routes.
    pub routes: u64,
    /// Floating IPs whose public side it is.
    pub fips: u32,
}

/// JSON views of VRFs.
pub fn vrf_views(vrfs: &[VrfInfo]) -> Vec<VrfView> {
    vrfs.iter()
        .map(|v| VrfView {
            id: v.id,
            name: v.name.clone(),
            routes: v.routes,
            fips: v.fips,
        })
        .collect()
}

/// VRF table.
pub fn vrf_text(vrfs: &[VrfView]) -> String {
    let mut s = String::from("VRF Table\n\n   Vrf    Routes    FIPs  Name\n");
    s.push_str("------------------------------------------------\n");
    for v in vrfs {
        let _ = writeln!(s, "{:>6}{:>10}{:>8}  {}", v.id, v.routes, v.fips, v.name);
    }
    s
}

/// One route, for JSON.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RouteView {
    /// VRF.
    pub vrf: u16,
    /// `a.b.c.d/n`.
    pub prefix: String,
    /// Nexthop.
    pub nh: u32,
    /// Label pushed toward a remote host.
    pub label: Option<u32>,
    /// Proxy ARP (flag P).
    pub proxy_arp: bool,
    /// Flags as `rt --dump` prints them.
    pub flags: String,
    /// The MAC the route delivers to (an Encap nexthop's destination MAC).
    pub mac: Option<String>,
}

fn route_flags(label: bool, proxy: bool) -> String {
    let mut f = String::new();
    if label {
        f.push('L');
    }
    if proxy {
        f.push('P');
    }
    if f.is_empty() {
        f.push('-');
    }
    f
}

/// JSON views of routes; `nhs` supplies stitched MACs.
pub fn route_views(routes: &[RouteInfo], nhs: &[NhInfo]) -> Vec<RouteView> {
    let macs: HashMap<u32, String> = nhs
        .iter()
        .filter_map(|n| match &n.spec {
            NexthopSpec::Encap { dmac, .. } => Some((n.id, dmac.to_string())),
            _ => None,
        })
        .collect();
    routes
        .iter()
        .map(|r| RouteView {
            vrf: r.vrf,
            prefix: format!("{}/{}", ip(r.prefix), r.plen),
            nh: r.route.nh,
            label: r.route.label,
            proxy_arp: r.route.proxy_arp,
            flags: route_flags(r.route.label.is_some(), r.route.proxy_arp),
            mac: macs.get(&r.route.nh).cloned(),
        })
        .collect()
}

/// `rt --dump` layout.
pub fn route_text(vrf: u16, routes: &[RouteView]) -> String {
    let mut s = String::from("Flags: L=Label Valid, P=Proxy ARP\n");
    let _ = writeln!(s, "vRouter inet4 routing table 0/{vrf}/unicast");
    s.push_str(
        "Destination           PPL        Flags        Label         Nexthop    Stitched MAC\n",
    );
    for r in routes {
        let label = r.label.map_or("-".to_string(), |l| l.to_string());
        let _ = writeln!(
            s,
            "{:<22}{:>3}{:>13}{:>13}{:>15}        {}",
            r.prefix,
            0,
            r.flags,
            label,
            r.nh,
            r.mac.as_deref().unwrap_or("-")
        );
    }
    s
}

/// One nexthop, for JSON.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NhView {
    /// Id.
    pub id: u32,
    /// `nh --list` type name.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// VRF it belongs to (its interface's, or the translation target).
    pub vrf: u16,
    /// Routes, labels and composites referring to it.
    pub ref_cnt: u64,
    /// Output interface.
    pub oif: Option<u16>,
    /// Destination MAC written (encap, tunnel).
    pub dmac: Option<String>,
    /// Source MAC written.
    pub smac: Option<String>,
    /// Tunnel encapsulation (`MPLSoUDP`, `MPLSoGRE`).
    pub encap: Option<&'static str>,
    /// Tunnel source.
    pub sip: Option<String>,
    /// Tunnel destination.
    pub dip: Option<String>,
    /// Translation target VRF.
    pub target_vrf: Option<u16>,
    /// Composite members (nexthop, label).
    pub members: Vec<(u32, Option<u32>)>,
    /// Where each composite member sends, in member order: `vif N` for a local interface,
    /// the remote host's address for a tunnel (an operator reads a service chain's ECMP group
    /// as the instances it spreads over).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub member_targets: Vec<String>,
    /// Each composite member's key (its service VM's, the same on both sides of a chain and on
    /// every host), in member order: the member is chosen by rendezvous hashing over these.
    /// Empty for a composite without keys (the hash scaled to the member count).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub member_keys: Vec<u32>,
}

/// Composite members shown in full; the rest as a count (Contrail's `nh --list` does the same).
const SHOWN_MEMBERS: usize = 16;

/// Where nexthop `nh` sends, for a composite's member list (and `vrctl trace`).
pub fn member_target(nhs: &HashMap<u32, &NexthopSpec>, nh: u32) -> String {
    match nhs.get(&nh) {
        Some(NexthopSpec::Encap { oif, .. }) => format!("vif {oif}"),
        Some(NexthopSpec::Tunnel { dip, kind, .. }) => {
            format!("{} {}", tunnel_name(*kind), ip(*dip))
        }
        Some(other) => other.type_name().to_string(),
        None => "missing".to_string(),
    }
}

fn tunnel_name(k: TunnelKind) -> &'static str {
    match k {
        TunnelKind::MplsOverUdp => "MPLSoUDP",
        TunnelKind::MplsOverGre => "MPLSoGRE",
    }
}

/// JSON views of nexthops; `dump` supplies reference counts and VRFs.
pub fn nh_views(nhs: &[NhInfo], dump: &StateDump) -> Vec<NhView> {
    let mut refs: HashMap<u32, u64> = HashMap::new();
    for r in &dump.routes {
        *refs.entry(r.route.nh).or_default() += 1;
    }
    for (_, nh) in &dump.labels {
        *refs.entry(*nh).or_default() += 1;
    }
    for n in &dump.nhs {
        for m in n.spec.members() {
            *refs.entry(m).or_default() += 1;
        }
    }
    let vif_vrf: HashMap<u16, u16> = dump.vifs.iter().map(|v| (v.id, v.vrf)).collect();
    // A composite belongs to the VRF of the routes that use it (a service chain's group).
    let route_vrf: HashMap<u32, u16> = dump.routes.iter().map(|r| (r.route.nh, r.vrf)).collect();
    let by_id: HashMap<u32, &NexthopSpec> = nhs.iter().map(|n| (n.id, &n.spec)).collect();
    nhs.iter()
        .map(|n| {
            let mut v = NhView {
                id: n.id,
                kind: n.spec.type_name(),
                vrf: 0,
                ref_cnt: refs.get(&n.id).copied().unwrap_or(0),
                oif: None,
                dmac: None,
                smac: None,
                encap: None,
                sip: None,
                dip: None,
                target_vrf: None,
                members: Vec::new(),
                member_targets: Vec::new(),
                member_keys: Vec::new(),
            };
            match &n.spec {
                NexthopSpec::Discard => {}
                NexthopSpec::Receive { oif } => v.oif = Some(*oif),
                NexthopSpec::Encap { oif, dmac, smac } => {
                    v.oif = Some(*oif);
                    v.vrf = vif_vrf.get(oif).copied().unwrap_or(0);
                    v.dmac = Some(dmac.to_string());
                    v.smac = Some(smac.to_string());
                }
                NexthopSpec::Tunnel {
                    oif,
                    kind,
                    sip,
                    dip,
                    dmac,
                    smac,
                } => {
                    v.oif = Some(*oif);
                    v.encap = Some(tunnel_name(*kind));
                    v.sip = Some(ip(*sip));
                    v.dip = Some(ip(*dip));
                    v.dmac = Some(dmac.to_string());
                    v.smac = Some(smac.to_string());
                }
                NexthopSpec::Composite { members, keys } => {
                    v.vrf = route_vrf.get(&n.id).copied().unwrap_or(0);
                    v.members.clone_from(members);
                    v.member_keys.clone_from(keys);
                    v.member_targets = members
                        .iter()
                        .map(|(m, _)| member_target(&by_id, *m))
                        .collect();
                }
                NexthopSpec::VrfTranslate { vrf } => {
                    v.vrf = *vrf;
                    v.target_vrf = Some(*vrf);
                }
            }
            v
        })
        .collect()
}

fn mac_bytes(m: &str) -> String {
    m.split(':').map(|b| format!("{b} ")).collect()
}

/// `nh --list` layout.
pub fn nh_text(nhs: &[NhView]) -> String {
    let mut s = String::new();
    let ind = " ".repeat(14);
    for n in nhs {
        let _ = writeln!(
            s,
            "{:<14}{:<20}Fmly: AF_INET  Rid:0  Ref_cnt:{:<11}Vrf:{}",
            format!("Id:{}", n.id),
            format!("Type:{}", n.kind),
            n.ref_cnt,
            n.vrf
        );
        let extra = match (n.kind, n.encap) {
            (_, Some(e)) => format!("{e}, "),
            ("Composite", _) => "Ecmp, ".to_string(),
            _ => String::new(),
        };
        let _ = writeln!(s, "{ind}Flags:Valid, {extra}");
        let l2 = |d: &Option<String>, sm: &Option<String>| {
            format!(
                "{}{}08 00 ",
                mac_bytes(d.as_deref().unwrap_or("")),
                mac_bytes(sm.as_deref().unwrap_or(""))
            )
        };
        match n.kind {
            "Receive" => {
                let _ = writeln!(s, "{ind}Oif:{}", n.oif.unwrap_or(0));
            }
            "Encap" => {
                let _ = writeln!(s, "{ind}EncapFmly:0806 Oif:{} Len:14", n.oif.unwrap_or(0));
                let _ = writeln!(s, "{ind}Encap Data: {}", l2(&n.dmac, &n.smac));
            }
            "Tunnel" => {
                let _ = writeln!(
                    s,
                    "{ind}Oif:{} Len:14 Data:{}",
                    n.oif.unwrap_or(0),
                    l2(&n.dmac, &n.smac)
                );
                let _ = writeln!(
                    s,
                    "{ind}Sip:{} Dip:{}",
                    n.sip.as_deref().unwrap_or("-"),
                    n.dip.as_deref().unwrap_or("-")
                );
            }
            "Composite" => composite_text(&mut s, &ind, n),
            "Vrf_Translate" => {
                let _ = writeln!(s, "{ind}Vrf:{}", n.target_vrf.unwrap_or(0));
            }
            _ => {}
        }
        s.push('\n');
    }
    s
}

/// A composite's lines: the fields its member choice hashes (symmetrically: both directions of
/// a flow hash alike) and how the hash picks a member (rendezvous over the members' keys, or
/// scaled to the member count without keys), the members with their labels, where each sends
/// and each one's key.
fn composite_text(s: &mut String, ind: &str, n: &NhView) {
    let pick = if n.member_keys.is_empty() {
        "by member count"
    } else {
        "rendezvous over member keys"
    };
    let _ = writeln!(
        s,
        "{ind}Valid Hash Key Parameters: Proto,SrcIP,SrcPort,DstIp,DstPort (symmetric, {pick})"
    );
    let shown = n.members.iter().take(SHOWN_MEMBERS);
    let m: Vec<String> = shown
        .clone()
        .map(|(nh, l)| match l {
            Some(l) => format!("{nh}({l})"),
            None => format!("{nh}(-)"),
        })
        .collect();
    let more = n.members.len().saturating_sub(SHOWN_MEMBERS);
    let tail = if more > 0 {
        format!(" and {more} more components...")
    } else {
        String::new()
    };
    let _ = writeln!(s, "{ind}Sub NH(label): {}{tail}", m.join(" "));
    let t: Vec<String> = shown
        .zip(&n.member_targets)
        .map(|((nh, _), t)| format!("{nh}:{t}"))
        .collect();
    if !t.is_empty() {
        let _ = writeln!(s, "{ind}Sub NH to: {}", t.join(", "));
    }
    let k: Vec<String> = n
        .members
        .iter()
        .take(SHOWN_MEMBERS)
        .zip(&n.member_keys)
        .map(|((nh, _), k)| format!("{nh}:{k:08x}"))
        .collect();
    if !k.is_empty() {
        let _ = writeln!(s, "{ind}Sub NH key: {}", k.join(", "));
    }
}

/// One label, for JSON.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LabelView {
    /// Label.
    pub label: u32,
    /// Nexthop.
    pub nh: u32,
}

/// `mpls --dump` layout.
pub fn mpls_text(labels: &[LabelView]) -> String {
    let mut s = String::from("MPLS Input Label Map\n\n   Label    NextHop\n-------------------\n");
    for l in labels {
        let _ = writeln!(s, "{:>8}{:>11}", l.label, l.nh);
    }
    s
}

/// One floating IP, for JSON.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FipView {
    /// Public VRF.
    pub vrf: u16,
    /// Its name.
    pub vrf_name: Option<String>,
    /// Floating address.
    pub fip: String,
    /// Interface.
    pub vif: u16,
    /// Its OS name.
    pub vif_name: Option<String>,
    /// The VM's fixed address.
    pub private_ip: String,
}

/// JSON views of floating IPs, sorted by VRF and address.
pub fn fip_views(fips: &[Fip], names: &Names) -> Vec<FipView> {
    let mut f: Vec<&Fip> = fips.iter().collect();
    f.sort_by_key(|f| (f.vrf, f.fip));
    f.into_iter()
        .map(|f| FipView {
            vrf: f.vrf,
            vrf_name: names.vrfs.get(&f.vrf).cloned(),
            fip: ip(f.fip),
            vif: f.vif,
            vif_name: names.vifs.get(&f.vif).cloned(),
            private_ip: ip(f.private_ip),
        })
        .collect()
}

/// Floating IP table.
pub fn fip_text(fips: &[FipView]) -> String {
    let mut s = String::from(
        "Floating IP Table\n\n   Vrf  Floating IP      Vif        Private IP       Interface\n",
    );
    s.push_str("--------------------------------------------------------------------\n");
    for f in fips {
        let _ = writeln!(
            s,
            "{:>6}  {:<17}{:<11}{:<17}{}",
            f.vrf,
            f.fip,
            format!("vif0/{}", f.vif),
            f.private_ip,
            f.vif_name.as_deref().unwrap_or("-")
        );
    }
    s
}

/// Per-VRF counters, for JSON.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VrfStatsView {
    /// VRF.
    pub vrf: u16,
    /// Name.
    pub name: String,
    /// Counters by `vrfstats` name.
    pub counters: BTreeMap<&'static str, u64>,
}

/// JSON views of VRF counters.
pub fn vrf_stats_views(stats: &[(u16, String, VrfStats)]) -> Vec<VrfStatsView> {
    stats
        .iter()
        .map(|(id, name, st)| VrfStatsView {
            vrf: *id,
            name: name.clone(),
            counters: st.named().into_iter().collect(),
        })
        .collect()
}

/// `vrfstats --dump` layout: counters grouped on lines as the real tool does.
pub fn vrf_stats_text(stats: &[(u16, String, VrfStats)]) -> String {
    const LINES: &[&[&str]] = &[
        &["Discards", "Receives", "Vrf Translates"],
        &["Ecmp Composites"],
        &["Udp Mpls Tunnels", "Gre Mpls Tunnels"],
        &["Encaps"],
        &["Arp Virtual Proxys"],
        &["Fip Dnats", "Fip Snats"],
    ];
    let mut s = String::new();
    for (id, name, st) in stats {
        let named = st.named();
        let _ = writeln!(s, "Vrf: {id} ({name})");
        let mut printed = Vec::new();
        for line in LINES {
            let parts: Vec<String> = named
                .iter()
                .filter(|(n, _)| line.contains(n))
                .map(|(n, v)| {
                    printed.push(*n);
                    format!("{n} {v}")
                })
                .collect();
            if !parts.is_empty() {
                let _ = writeln!(s, "{}", parts.join(", "));
            }
        }
        let rest: Vec<String> = named
            .iter()
            .filter(|(n, _)| !printed.contains(n))
            .map(|(n, v)| format!("{n} {v}"))
            .collect();
        if !rest.is_empty() {
            let _ = writeln!(s, "{}", rest.join(", "));
        }
        s.push('\n');
    }
    s
}

/// Per-interface counters table (`vif --list --rate` columns, absolute values).
pub fn vif_stats_text(stats: &[(u16, String, VifStats)]) -> String {
    let mut s = format!(
        "{:<16}{:>7}{:>13}{:>15}{:>10}{:>13}{:>15}{:>10}{:>10}\n",
        "Interface name",
        "VIF ID",
        "RX packets",
        "RX bytes",
        "RX errs",
        "TX packets",
        "TX bytes",
        "TX errs",
        "Drops"
    );
    for (id, name, st) in stats {
        let _ = writeln!(
            s,
            "{:<16}{:>7}{:>13}{:>15}{:>10}{:>13}{:>15}{:>10}{:>10}",
            name,
            format!("vif0/{id}"),
            st.rx_packets,
            st.rx_bytes,
            st.rx_errors,
            st.tx_packets,
            st.tx_bytes,
            st.tx_errors,
            st.drops
        );
    }
    s
}

/// Per-interface counters, for JSON.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VifStatsView {
    /// vif id.
    pub vif: u16,
    /// OS name.
    pub name: String,
    /// Counters.
    #[serde(flatten)]
    pub stats: VifStats,
}

/// `dropstats` groups (the old all-counters layout); reasons not listed print in a last group.
const DROP_GROUPS: &[&[&str]] = &[
    &[
        "Invalid IF",
        "Trap No IF",
        "IF TX Discard",
        "IF Drop",
        "IF RX Discard",
    ],
    &[
        "Flow Unusable",
        "Flow No Memory",
        "Flow Table Full",
        "Flow NAT no rflow",
        "Flow Action Drop",
        "Flow Action Invalid",
        "Flow Invalid Protocol",
        "Flow Queue Limit Exceeded",
        "New Flow Drops",
        "Flow Unusable (Eviction)",
    ],
    &["Original Packet Trapped"],
    &["Discards", "TTL Exceeded", "Mcast Clone Fail"],
    &[
        "Invalid NH",
        "Invalid Label",
        "Invalid Protocol",
        "Rewrite Fail",
        "Invalid Mcast Source",
        "Packet Loop",
    ],
    &[
        "Push Fails",
        "Pull Fails",
        "Duplicate(d)",
        "Head Alloc Fails",
        "PCOW fails",
        "Invalid Packets",
    ],
    &[
        "Misc",
        "Nowhere to go",
        "Checksum errors",
        "No Fmd",
        "Invalid VNID",
        "Fragment errors",
        "Invalid Source",
        "Jumbo Mcast Pkt with DF Bit",
        "No L2 Route",
        "Memory Failures",
        "Fragment Queueing Failures",
        "ICMP errors",
    ],
];

/// `dropstats` layout. `all`: every counter in groups (old style, `%-30s%u`); otherwise only
/// non-zero ones (current style, `%-28s  %u`).
pub fn drops_text(drops: &[(String, u64)], all: bool) -> String {
    let mut s = String::new();
    if !all {
        for (n, v) in drops.iter().filter(|(_, v)| *v != 0) {
            let _ = writeln!(s, "{n:<28}  {v}");
        }
        return s;
    }
    let by_name: HashMap<&str, u64> = drops.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let mut groups: Vec<Vec<(&str, u64)>> = DROP_GROUPS
        .iter()
        .map(|g| {
            g.iter()
                .filter_map(|n| by_name.get(n).map(|v| (*n, *v)))
                .collect()
        })
        .collect();
    let rest: Vec<(&str, u64)> = drops
        .iter()
        .filter(|(n, _)| !DROP_GROUPS.iter().any(|g| g.contains(&n.as_str())))
        .filter(|(n, _)| n != "Cloned Original")
        .map(|(n, v)| (n.as_str(), *v))
        .collect();
    groups.push(rest);
    for g in groups.iter().filter(|g| !g.is_empty()) {
        for (n, v) in g {
            let _ = writeln!(s, "{n:<30}{v}");
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod bgp_tests {
    use super::bgp_text;
    use vrouter_api::bgp::{BgpNeighbor, BgpState, BgpSummary};

    #[test]
    fn bgp_summary_reads_like_a_routers() {
        let n = |a: [u8; 4], state, up, err: Option<&str>| BgpNeighbor {
            address: a.into(),
            asn: 65001,
            state,
            uptime_s: up,
            prefixes_received: 2,
            prefixes_advertised: 7,
            flaps: 1,
            last_error: err.map(str::to_string),
        };
        let s = BgpSummary {
            router_id: [10, 9, 0, 1].into(),
            asn: 64512,
            neighbors: vec![
                n([10, 9, 0, 2], BgpState::Established, 3723, None),
                n([10, 9, 0, 3], BgpState::Idle, 0, Some("connect: refused")),
            ],
        };
        let t = bgp_text(&s);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "BGP router identifier 10.9.0.1, local AS number 64512"
        );
        assert!(lines[3].starts_with("Neighbor"), "{t}");
        assert_eq!(
            lines[4].split_whitespace().collect::<Vec<_>>(),
            [
                "10.9.0.2",
                "65001",
                "Established",
                "01:02:03",
                "2",
                "7",
                "1",
                "-"
            ]
        );
        assert!(
            lines[5].contains("Idle") && lines[5].contains("never"),
            "{t}"
        );
        assert!(lines[5].ends_with("connect: refused"), "{t}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vrouter_dataplane::tables::Route;
    use vrouter_dataplane::wire::MacAddr;

    fn vrfs() -> Vec<VrfInfo> {
        vec![
            VrfInfo {
                id: 2,
                name: "default-domain:admin:net1".into(),
                routes: 3,
                fips: 0,
            },
            VrfInfo {
                id: 3,
                name: "public".into(),
                routes: 1,
                fips: 1,
            },
        ]
    }

    #[test]
    fn vrf_by_id_name_or_short_name() {
        let v = vrfs();
        assert_eq!(resolve_vrf(&v, "2"), Ok(2));
        assert_eq!(resolve_vrf(&v, "public"), Ok(3));
        assert_eq!(resolve_vrf(&v, "net1"), Ok(2));
        assert_eq!(resolve_vrf(&v, "default-domain:admin:net1"), Ok(2));
        assert_eq!(
            resolve_vrf(&v, "nope"),
            Err("vrf \"nope\" does not exist (see `vrctl vrf list`)".into())
        );
        assert!(resolve_vrf(&v, "9").is_err());
    }

    #[test]
    fn route_dump_columns_line_up_with_the_header() {
        let routes = vec![RouteInfo {
            vrf: 2,
            prefix: u32::from(Ipv4Addr::new(10, 1, 1, 4)),
            plen: 32,
            route: Route {
                nh: 31,
                label: Some(25),
                proxy_arp: true,
            },
        }];
        let nhs = vec![NhInfo {
            id: 31,
            spec: NexthopSpec::Encap {
                oif: 3,
                dmac: MacAddr([2, 0, 0, 0, 1, 4]),
                smac: MacAddr::VROUTER,
            },
        }];
        let t = route_text(2, &route_views(&routes, &nhs));
        let lines: Vec<&str> = t.lines().collect();
        let header = lines[2];
        let row = lines[3];
        // Right-aligned columns end where their header word ends.
        for (word, val) in [("PPL", "0"), ("Flags", "LP"), ("Label", "25")] {
            let end = header.find(word).expect("header") + word.len();
            assert_eq!(&row[end - val.len()..end], val, "{word}\n{t}");
        }
        assert!(row.starts_with("10.1.1.4/32 "));
        assert!(row.ends_with("02:00:00:00:01:04"));
    }

    #[test]
    fn dropstats_old_style_groups_every_counter() {
        let drops = vec![
            ("Invalid IF".to_string(), 0),
            ("Discards".to_string(), 3),
            ("No Route".to_string(), 7),
        ];
        let t = drops_text(&drops, true);
        assert_eq!(
            t,
            "Invalid IF                    0\n\nDiscards                      3\n\nNo Route                      7\n\n"
        );
        assert_eq!(
            drops_text(&drops, false),
            "Discards                      3\nNo Route                      7\n"
        );
    }

    #[test]
    fn composite_shows_its_vrf_members_labels_and_where_each_sends() {
        let tunnel = NhInfo {
            id: 31,
            spec: NexthopSpec::Tunnel {
                oif: 0,
                kind: TunnelKind::MplsOverUdp,
                sip: u32::from(std::net::Ipv4Addr::new(10, 0, 0, 1)),
                dip: u32::from(std::net::Ipv4Addr::new(10, 0, 0, 2)),
                dmac: MacAddr([2, 0, 0, 0, 0, 2]),
                smac: MacAddr([2, 0, 0, 0, 0, 1]),
            },
        };
        let encap = NhInfo {
            id: 27,
            spec: NexthopSpec::Encap {
                oif: 7,
                dmac: MacAddr([2, 0, 0, 0, 7, 1]),
                smac: MacAddr::VROUTER,
            },
        };
        let many: Vec<(u32, Option<u32>)> = (0..18).map(|i| (27, Some(100 + i))).collect();
        let composite = |id, members, keys| NhInfo {
            id,
            spec: NexthopSpec::Composite { members, keys },
        };
        let nhs = vec![
            encap,
            tunnel,
            composite(40, vec![(31, Some(51)), (27, None)], vec![0x5f3a_91c2, 7]),
            composite(41, many, Vec::new()),
        ];
        let dump = StateDump {
            routes: vec![vrouter_dataplane::ctl::proto::RouteInfo {
                vrf: 2,
                prefix: 0,
                plen: 0,
                route: Route {
                    nh: 40,
                    label: None,
                    proxy_arp: false,
                },
            }],
            ..StateDump::default()
        };
        let v = nh_views(&nhs, &dump);
        assert_eq!(v[2].vrf, 2);
        assert_eq!(v[2].member_targets, vec!["MPLSoUDP 10.0.0.2", "vif 7"]);
        let t = nh_text(&v);
        assert!(t.contains("Id:40         Type:Composite"), "{t}");
        assert!(t.contains("Flags:Valid, Ecmp, "), "{t}");
        assert!(t.contains("Sub NH(label): 31(51) 27(-)\n"), "{t}");
        assert!(
            t.contains("Sub NH to: 31:MPLSoUDP 10.0.0.2, 27:vif 7\n"),
            "{t}"
        );
        assert!(t.contains("27(115) and 2 more components...\n"), "{t}");
        assert!(
            t.contains("(symmetric, rendezvous over member keys)\n"),
            "{t}"
        );
        assert!(t.contains("Sub NH key: 31:5f3a91c2, 27:00000007\n"), "{t}");
        assert!(t.contains("(symmetric, by member count)\n"), "{t}");
        assert_eq!(v[2].member_keys, vec![0x5f3a_91c2, 7]);
    }
}
