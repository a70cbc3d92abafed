//! The gateway as a real RFC 4364 peer (issue 17). An edge router namespace (`dc-edge`,
//! 172.30.0.253 on the underlay) runs Debian FRR's `bgpd` (no zebra: this kernel forwards no
//! MPLS) in AS 65001; the shim's speaker (`--bgp` on the controller's underlay address) peers
//! with it through a `bgp-router` object as `provision_mx.py` makes it. The report checks the
//! session (`vrctl bgp`), the cloud's routes at FRR (the floating IP as VPN-IPv4 with its host
//! as next hop), FRR's outside prefix in the public VRF of the floating IP's host, and traffic
//! between the outside and the floating IP: MPLS in GRE from the edge (a raw GRE socket stands
//! in for the router's forwarding, which FRR without kernel MPLS has not) reaches the VM, whose
//! answer comes back to the edge as MPLS in GRE with FRR's label (tshark on the edge).

use super::{output_in, vrctl_json, Checks};
use crate::provision::{Provisioned, Vnc, PUBLIC_VN};
use crate::sys::{self, DevcloudError, Result};
use crate::topology::{Plan, RUN_DIR};
use crate::{bin, in_netns, net, start, Opts, State, TOKEN};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The edge router's namespace, address and AS.
const EDGE_NS: &str = "dc-edge";
const EDGE_IP: &str = "172.30.0.253";
const EDGE_AS: u32 = 65001;
/// The prefix "outside" the edge announces, and the label it gives it.
const OUTSIDE: &str = "203.0.113.0/24";
const OUTSIDE_LABEL: u32 = 3001;
const OUTSIDE_HOST: &str = "203.0.113.1";

fn edge_dir() -> PathBuf {
    Path::new(RUN_DIR).join("edge")
}

fn public_vrf() -> String {
    format!("default-domain:default-project:{PUBLIC_VN}")
}

/// Builds the edge namespace, starts FRR's bgpd in it, and configures it as the cloud's
/// gateway (a `bgp-router`); returns the shim's client.
fn start_edge(plan: &Plan, st: &mut State) -> Result<Vnc> {
    sys::add_netns(EDGE_NS)?;
    net::attach(EDGE_NS, "eth1", EDGE_IP, "p-edge")?;
    let dir = edge_dir();
    std::fs::create_dir_all(&dir).map_err(|e| DevcloudError::Io(dir.display().to_string(), e))?;
    let conf = dir.join("bgpd.conf");
    let ctl = &plan.controller_ip;
    std::fs::write(
        &conf,
        format!(
            "hostname dc-edge\nrouter bgp {EDGE_AS}\n bgp router-id {EDGE_IP}\n \
             no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n \
             neighbor {ctl} remote-as 64512\n neighbor {ctl} timers connect 1\n \
             address-family ipv4 vpn\n  neighbor {ctl} activate\n exit-address-family\n"
        ),
    )
    .map_err(|e| DevcloudError::Io(conf.display().to_string(), e))?;
    let d = dir.display().to_string();
    let argv = [
        "/usr/lib/frr/bgpd",
        "-Z",
        "-S",
        "-l",
        EDGE_IP,
        "-p",
        "179",
        "-A",
        "127.0.0.1",
        "-P",
        "0",
        "-f",
        &conf.display().to_string(),
        "-i",
        &format!("{d}/bgpd.pid"),
        "--vty_socket",
        &d,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    start(st, "edge-bgpd", EDGE_NS, argv, &[])?;
    let vnc = Vnc::new(&format!("http://{ctl}:8082"), TOKEN);
    in_netns(&net::ctl_ns(), || {
        vnc.post(
            "/bgp-routers",
            json!({"bgp-router": {
                "fq_name": ["default-domain", "default-project", "ip-fabric", "__default__", "dc-edge"],
                "parent_type": "routing-instance",
                "bgp_router_parameters": {"vendor": "mx", "router_type": "router",
                    "address": EDGE_IP, "identifier": EDGE_IP, "autonomous_system": EDGE_AS,
                    "address_families": {"family": ["route-target", "inet-vpn"]}}}}),
        )
    })?;
    Ok(vnc)
}

fn vtysh(cmd: &str) -> String {
    output_in(
        EDGE_NS,
        &format!("vtysh --vty_socket {} -c '{cmd}'", edge_dir().display()),
    )
}

/// Waits up to `secs` for `f`; the last answer either way.
fn poll<T>(secs: u64, mut f: impl FnMut() -> (bool, T)) -> (bool, T) {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let (ok, v) = f();
        if ok || Instant::now() > until {
            return (ok, v);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The report's BGP lines (run last: the edge's routes must not change what other checks see).
pub(super) fn check_bgp(
    checks: &mut Checks,
    o: &Opts,
    plan: &Plan,
    st: &mut State,
    p: &Provisioned,
) {
    let vnc = match start_edge(plan, st) {
        Ok(v) => v,
        Err(e) => {
            checks.line(
                false,
                "BGP: FRR bgpd on the edge router".into(),
                e.to_string(),
            );
            return;
        }
    };
    // The session, as the operator sees it.
    let bgp = format!(
        "{} bgp --controller http://{}:8082 --token {TOKEN}",
        bin(o, "vrctl"),
        plan.controller_ip
    );
    let (up, table) = poll(30, || {
        let t = output_in(&net::ctl_ns(), &bgp);
        let established = t
            .lines()
            .any(|l| l.starts_with(EDGE_IP) && l.contains("Established"));
        (established, t)
    });
    let row = table
        .lines()
        .find(|l| l.starts_with(EDGE_IP))
        .unwrap_or("")
        .trim()
        .to_string();
    checks.line(
        up,
        format!("BGP: the controller and FRR bgpd on the edge router ({EDGE_IP}, AS {EDGE_AS}) are Established (vrctl bgp)"),
        if up { row } else { table },
    );
    let Some(fip) = &p.fip else { return };
    // The cloud's routes at FRR: the floating IP with its host as next hop.
    let fip_host = plan.host_of(&plan.vms[0]);
    let (at_frr, shown) = poll(20, || {
        let s = vtysh(&format!("show bgp ipv4 vpn {fip}/32"));
        (s.contains(&fip_host.fabric_ip), s)
    });
    let summary: Vec<&str> = shown
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.starts_with("Route Distinguisher")
                || l.contains("Extended Community")
                || l.contains("Remote label")
                || l.contains(&fip_host.fabric_ip)
        })
        .collect();
    checks.line(
        at_frr,
        format!(
            "BGP: FRR learned floating IP {fip}/32 with {} ({}) as next hop",
            fip_host.fabric_ip, fip_host.name
        ),
        if at_frr { summary.join("; ") } else { shown },
    );
    check_outside(checks, o, &vnc, fip, fip_host);
}

/// FRR announces the outside with the public network's route target; the floating IP's host
/// gets it, and traffic flows between the outside and the floating IP.
fn check_outside(checks: &mut Checks, o: &Opts, vnc: &Vnc, fip: &str, h: &crate::topology::Host) {
    let vrf = public_vrf();
    let id = in_netns(&net::ctl_ns(), || {
        let fq = ["default-domain", "default-project", PUBLIC_VN];
        let uuid = vnc.fq_to_id("virtual-network", &fq)?;
        let v = vnc.get(&format!("/virtual-network/{uuid}"))?;
        Ok(v["virtual-network"]["virtual_network_network_id"]
            .as_u64()
            .unwrap_or(0))
    });
    let Ok(id) = id else {
        checks.line(
            false,
            "BGP: the public network's id".into(),
            format!("{id:?}"),
        );
        return;
    };
    let cfg = format!(
        "conf t\nroute-map RT-PUBLIC permit 10\n set extcommunity rt 64512:{id}\nexit\n\
         router bgp {EDGE_AS}\n address-family ipv4 vpn\n  \
         network {OUTSIDE} rd {EDGE_AS}:1 label {OUTSIDE_LABEL} route-map RT-PUBLIC\nend"
    );
    let cmds: Vec<String> = cfg.lines().map(|l| format!("-c '{}'", l.trim())).collect();
    let _ = output_in(
        EDGE_NS,
        &format!(
            "vtysh --vty_socket {} {}",
            edge_dir().display(),
            cmds.join(" ")
        ),
    );
    let (installed, got) = poll(20, || {
        let rt = vrctl_json(o, h, &["route", "dump", &vrf]).unwrap_or_default();
        let r = rt
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["prefix"] == OUTSIDE)
            .cloned();
        (r.as_ref().is_some_and(|r| r["label"] == OUTSIDE_LABEL), r)
    });
    checks.line(
        installed,
        format!(
            "BGP: FRR's {OUTSIDE} (label {OUTSIDE_LABEL}) is in the public VRF on {}",
            h.name
        ),
        got.map(|r| r.to_string())
            .unwrap_or_else(|| "absent".into()),
    );
    let (ok, d) = outside_to_fip(fip, h);
    checks.line(
        ok,
        format!(
            "BGP: outside {OUTSIDE_HOST} <-> floating IP {fip}: MPLSoGRE from the edge reaches \
             the VM, its answer returns as MPLSoGRE label {OUTSIDE_LABEL} (tshark on the edge)"
        ),
        d,
    );
}

/// MPLS in GRE to a host, as a gateway sends it: an ICMP echo request from `src` to `dst`
/// under `label` (IPv4 and ICMP built by hand; the kernel adds the outer IP).
const SEND_MPLSOGRE: &str = include_str!("../../../scripts/lib/send_mplsogre.py");

/// The floating IP's label (what the shim advertised to FRR), an echo request under it from
/// the edge, and the capture of what comes back.
fn outside_to_fip(fip: &str, h: &crate::topology::Host) -> (bool, String) {
    let shown = vtysh(&format!("show bgp ipv4 vpn {fip}/32"));
    let Some(label) = shown
        .lines()
        .find_map(|l| l.trim().strip_prefix("Remote label: "))
        .and_then(|l| l.trim().parse::<u32>().ok())
    else {
        return (false, format!("no remote label for {fip} at FRR: {shown}"));
    };
    let script = edge_dir().join("send_mplsogre.py");
    if let Err(e) = std::fs::write(&script, SEND_MPLSOGRE) {
        return (false, e.to_string());
    }
    let cap = edge_dir().join("edge.txt");
    // tshark's own chatter goes to its stderr, kept out of the capture file.
    let tshark = format!(
        "(timeout 15 tshark -l -i eth1 -a duration:6 -f 'ip proto 47' -T fields -E separator=/s \
         -e ip.src -e ip.dst -e mpls.label -e icmp.type 2>/dev/null > {})",
        cap.display()
    );
    let capture = std::thread::spawn(move || output_in(EDGE_NS, &tshark));
    std::thread::sleep(Duration::from_secs(2));
    let _ = output_in(
        EDGE_NS,
        &format!(
            "python3 {} {} {label} {OUTSIDE_HOST} {fip}",
            script.display(),
            h.fabric_ip
        ),
    );
    let _ = capture.join();
    let lines = std::fs::read_to_string(&cap).unwrap_or_default();
    let back = lines.lines().find(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() == 4
            && f[0] == format!("{},{fip}", h.fabric_ip)
            && f[1] == format!("{EDGE_IP},{OUTSIDE_HOST}")
            && f[2] == OUTSIDE_LABEL.to_string()
            && f[3] == "0"
    });
    match back {
        Some(l) => (
            true,
            format!("in: label {label} to {}; back: {l}", h.fabric_ip),
        ),
        None => (
            false,
            format!("in: label {label} to {}; captured: {lines:?}", h.fabric_ip),
        ),
    }
}
