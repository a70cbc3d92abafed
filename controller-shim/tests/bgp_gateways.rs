// SPDX-License-Identifier: Apache-2.0
//! The shim's BGP speaker against two gateways we did not write: GoBGP as an iBGP neighbour and
//! FRR's bgpd as an eBGP neighbour, both configured the way `provision_mx.py` does it (a
//! `bgp-router` object under `ip-fabric:__default__`). A VM route an agent advertises must show
//! up in both routers' VPN-IPv4 tables with our RD, the network's route target, the agent's
//! label, the compute host as next hop and the MPLS-in-UDP encapsulation community; withdrawing
//! it must remove it from both. Everything talks over 127.77.0.0/24 on loopback.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::bodies::{iip, vm, vmi, vn};
use common::{free_port, require_tool, Shim, TempDir};
use serde_json::{json, Value};

const SHIM_BGP: &str = "127.77.0.1";
const GOBGP: &str = "127.77.0.2";
const FRR: &str = "127.77.0.3";
const VN: &str = "b0f3c5d2-8e61-4b7a-9c2d-1e4f5a6b7c8d";
const VM1: &str = "6e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a81";
const VMI1: &str = "d1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e51";
const VN2: &str = "b0f3c5d2-8e61-4b7a-9c2d-1e4f5a6b7c8e";
const VM2: &str = "6e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a82";
const VMI2: &str = "d1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e52";
const VRF: &str = "default-domain:default-project:tier-web";
const FRR_BGPD: &str = "/usr/lib/frr/bgpd";

/// A child process killed on drop (the routers must not outlive a failed assertion).
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// gobgpd at `me` (AS 64512, iBGP) peering with the shim at `shim`.
fn start_gobgp(dir: &Path, api_port: u16, me: &str, shim: &str) -> Daemon {
    let conf = dir.join("gobgpd.toml");
    std::fs::write(
        &conf,
        format!(
            r#"[global.config]
  as = 64512
  router-id = "{me}"
  port = 179
  local-address-list = ["{me}"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "{shim}"
    peer-as = 64512
  [neighbors.transport.config]
    local-address = "{me}"
  [neighbors.timers.config]
    connect-retry = 1
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "l3vpn-ipv4-unicast"
"#
        ),
    )
    .expect("write gobgpd.toml");
    let log = std::fs::File::create(dir.join("gobgpd.log")).expect("gobgpd.log");
    Daemon(
        Command::new("gobgpd")
            .arg("-f")
            .arg(&conf)
            .args([
                "--api-hosts",
                &format!("127.0.0.1:{api_port}"),
                "-l",
                "info",
            ])
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn gobgpd"),
    )
}

fn start_frr(dir: &Path, net_id: u64) -> Daemon {
    let conf = dir.join("bgpd.conf");
    std::fs::write(
        &conf,
        format!(
            "hostname gw-frr\n\
             log file {}/bgpd.log debugging\n\
             router bgp 65001\n \
             bgp router-id {FRR}\n \
             no bgp ebgp-requires-policy\n \
             no bgp default ipv4-unicast\n \
             timers bgp 3 9\n \
             neighbor {SHIM_BGP} remote-as 64512\n \
             neighbor {SHIM_BGP} update-source {FRR}\n \
             neighbor {SHIM_BGP} timers connect 1\n \
             address-family ipv4 vpn\n  \
             neighbor {SHIM_BGP} activate\n \
             exit-address-family\n\
             route-map GW-RT permit 10\n \
             set extcommunity rt 64512:{net_id}\n",
            dir.display()
        ),
    )
    .expect("write bgpd.conf");
    Daemon(
        Command::new(FRR_BGPD)
            .args([
                "-Z",
                "-S",
                "-l",
                FRR,
                "-p",
                "179",
                "-A",
                "127.0.0.1",
                "-P",
                "0",
            ])
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("bgpd.pid"))
            .arg("--vty_socket")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn FRR bgpd"),
    )
}

/// GoBGP's VPN-IPv4 table, as JSON (prefix → paths).
fn gobgp_rib(api_port: u16) -> Value {
    let out = Command::new("gobgp")
        .args(["-u", "127.0.0.1", "-p", &api_port.to_string(), "-j"])
        .args(["global", "rib", "-a", "vpnv4"])
        .output()
        .expect("run gobgp");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn vtysh(dir: &Path, cmd: &str) -> String {
    let out = Command::new("vtysh")
        .arg("--vty_socket")
        .arg(dir)
        .args(["-c", cmd])
        .output()
        .expect("run vtysh");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Configures FRR live (`conf t`, the lines, `end`).
fn vtysh_conf(dir: &Path, lines: &[&str]) {
    let mut c = Command::new("vtysh");
    c.arg("--vty_socket").arg(dir).args(["-c", "conf t"]);
    for l in lines {
        c.args(["-c", l]);
    }
    let out = c.args(["-c", "end"]).output().expect("run vtysh");
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "vtysh {lines:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits up to `secs` for `f` to give `Some`; panics with `what` and the last state otherwise.
fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => panic!("{what}: not within {secs} s: {last}"),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// The CloudStack side: network tier-web with one VM bound on host h1 (fabric 10.0.0.1),
/// whose agent advertises the VM's /32 with label 17, and network tier-db with one VM on h2.
/// Returns tier-web's network id.
fn cloud(shim: &Shim) -> u64 {
    let tiers = [
        (VN2, "tier-db", "10.20.2", VM2, "i-2-2-VM", VMI2, "h2"),
        (VN, "tier-web", "10.20.1", VM1, "i-2-1-VM", VMI1, "h1"),
    ];
    for (vn_uuid, net, pfx, vm_uuid, vm_name, vmi_uuid, host) in tiers {
        let (subnet, gw) = (format!("{pfx}.0"), format!("{pfx}.1"));
        shim.ok(
            "POST",
            "/virtual-networks",
            Some(&vn(vn_uuid, net, &subnet, &gw)),
        );
        shim.ok("POST", "/virtual-machines", Some(&vm(vm_uuid, vm_name)));
        let nic = vmi(vmi_uuid, vm_name, 0, net);
        shim.ok("POST", "/virtual-machine-interfaces", Some(&nic));
        shim.ok("POST", "/instance-ips", Some(&iip(vm_name, 0, net)));
        let fabric = format!("10.0.0.{}", &host[1..]);
        let agent = json!({"hostname": host, "fabric_ip": fabric});
        shim.ok("POST", "/vrouter/agents", Some(&agent));
        let bind = json!({"host": host, "vmi_uuid": vmi_uuid});
        shim.ok("POST", "/vrouter/bindings", Some(&bind));
    }
    let route = json!({"host": "h1", "vrf": VRF, "prefix": "10.20.1.2/32", "label": 17,
                       "vmi_uuid": VMI1});
    shim.ok("POST", "/vrouter/routes", Some(&route));
    let v = shim.ok("GET", &format!("/virtual-network/{VN}"), None);
    v["virtual-network"]["virtual_network_network_id"]
        .as_u64()
        .expect("the network has an id")
}

/// A gateway as `provision_mx.py` creates it.
fn bgp_router(name: &str, address: &str, asn: u32) -> Value {
    json!({"bgp-router": {
        "fq_name": ["default-domain", "default-project", "ip-fabric", "__default__", name],
        "parent_type": "routing-instance",
        "bgp_router_parameters": {
            "vendor": "mx", "router_type": "router", "address": address, "identifier": address,
            "autonomous_system": asn, "port": 179, "hold_time": 0,
            "address_families": {"family": ["route-target", "inet-vpn", "e-vpn"]}
        }
    }})
}

/// A neighbour's state as `vrctl bgp` reads it (the typed client of the contract).
fn neighbour_state(shim: &Shim, addr: &str) -> String {
    let api = vrouter_api::client::AgentApi::new(&shim.url(""), None);
    let sum = api.bgp_neighbors().expect("GET /vrouter/bgp/neighbors");
    sum.neighbors
        .iter()
        .find(|n| n.address.to_string() == addr)
        .map(|n| format!("{:?}", n.state))
        .unwrap_or_else(|| format!("absent from {sum:?}"))
}

/// The routes in a host's view (what its agent programs), by key.
fn view_routes(shim: &Shim, host: &str) -> std::collections::BTreeMap<String, Value> {
    let w = shim.ok(
        "GET",
        &format!("/vrouter/watch?host={host}&since=0&timeout=1"),
        None,
    );
    w["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["op"] == "put" && e["key"].as_str().is_some_and(|k| k.starts_with("route/")))
        .map(|e| {
            (
                e["key"].as_str().unwrap_or("").to_string(),
                e["value"].clone(),
            )
        })
        .collect()
}

/// GoBGP's path for 10.20.1.2/32, if it has one.
fn gobgp_path(api_port: u16) -> Option<Value> {
    let rib = gobgp_rib(api_port);
    rib.as_object()?
        .iter()
        .find(|(k, _)| k.contains("10.20.1.2/32"))
        .and_then(|(_, paths)| paths.get(0).cloned())
}

#[test]
fn gateways_learn_and_lose_vm_routes_over_vpnv4() {
    require_tool("gobgpd", &["--version"], "apt-get install gobgpd");
    require_tool(FRR_BGPD, &["--version"], "apt-get install frr");
    let dir = TempDir::new("bgp");
    let api_port = free_port();
    let shim = Shim::start(
        &format!("sqlite:{}", dir.0.join("shim.db").display()),
        &["--bgp", SHIM_BGP, "--bgp-hold-time", "9"],
    );
    let net_id = cloud(&shim);
    let gobgp = start_gobgp(&dir.0, api_port, GOBGP, SHIM_BGP);
    let _frr = start_frr(&dir.0, net_id);
    shim.ok(
        "POST",
        "/bgp-routers",
        Some(&bgp_router("gw-gobgp", GOBGP, 64512)),
    );
    shim.ok(
        "POST",
        "/bgp-routers",
        Some(&bgp_router("gw-frr", FRR, 65001)),
    );

    for addr in [GOBGP, FRR] {
        wait_for(60, &format!("session with {addr}"), || {
            let s = neighbour_state(&shim, addr);
            if s == "Established" {
                Ok(())
            } else {
                Err(s)
            }
        });
    }

    // GoBGP (iBGP): RD <router-id>:<network id>, label 17, next hop the compute host, the
    // network's route target and the MPLS-in-UDP tunnel type.
    let path = wait_for(30, "the route at GoBGP", || {
        gobgp_path(api_port).ok_or_else(|| gobgp_rib(api_port).to_string())
    });
    let text = path.to_string();
    let nlri = &path["nlri"];
    assert_eq!(
        nlri["rd"],
        json!({"type": 1, "admin": SHIM_BGP, "assigned": net_id}),
        "{text}"
    );
    assert_eq!(nlri["labels"], json!([17]), "{text}");
    assert!(text.contains("\"nexthop\":\"10.0.0.1\""), "{text}");
    let ext = path["attrs"]
        .as_array()
        .expect("attrs")
        .iter()
        .find(|a| a["type"] == 16)
        .expect("extended communities")
        .to_string();
    assert!(
        ext.contains(&format!("\"value\":\"64512:{net_id}\"")),
        "route target target:64512:{net_id} in {ext}"
    );
    assert!(ext.contains("\"tunnel_type\":13"), "MPLS-in-UDP in {ext}");

    // FRR (eBGP): the same route, our AS on the path, ET:13 and the route target.
    let shown = wait_for(30, "the route at FRR", || {
        let s = vtysh(&dir.0, "show bgp ipv4 vpn 10.20.1.2/32");
        if s.contains("10.0.0.1") {
            Ok(s)
        } else {
            Err(s)
        }
    });
    assert!(shown.contains(&format!("{SHIM_BGP}:{net_id}")), "{shown}");
    assert!(shown.contains(&format!("RT:64512:{net_id}")), "{shown}");
    assert!(shown.contains("ET:13"), "{shown}");
    assert!(shown.contains("64512"), "our AS on the path: {shown}");
    assert!(
        shown.contains("label=17") || shown.contains("Remote label: 17"),
        "{shown}"
    );

    let (_, sum) = shim.get("/vrouter/bgp/neighbors");
    for n in sum["neighbors"].as_array().expect("neighbors") {
        assert_eq!(n["prefixes_advertised"], 1, "{sum}");
    }

    // Import: GoBGP announces 10.99.0.0/24 with tier-web's route target and no encapsulation
    // community (so MPLS in GRE), FRR a default route with it (route-map GW-RT; a `network`
    // in bgpd.conf is not originated under -Z, so it is configured live). Hosts of tier-web
    // get both as tunnel routes to the gateway with its label; h2 (tier-db only) gets neither.
    vtysh_conf(
        &dir.0,
        &[
            "router bgp 65001",
            "address-family ipv4 vpn",
            "network 0.0.0.0/0 rd 65001:1 label 200 route-map GW-RT",
        ],
    );
    let add = Command::new("gobgp")
        .args(["-u", "127.0.0.1", "-p", &api_port.to_string()])
        .args([
            "global",
            "rib",
            "-a",
            "vpnv4",
            "add",
            "10.99.0.0/24",
            "label",
            "100",
        ])
        .args([
            "rd",
            "64512:77",
            "rt",
            &format!("64512:{net_id}"),
            "nexthop",
            GOBGP,
        ])
        .output()
        .expect("gobgp add");
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    let from_gobgp = format!("route/{VRF}/10.99.0.0/24/bgp:{GOBGP}");
    let from_frr = format!("route/{VRF}/0.0.0.0/0/bgp:{FRR}");
    let view = wait_for(30, "gateway routes in h1's view", || {
        let v = view_routes(&shim, "h1");
        if v.contains_key(&from_gobgp) && v.contains_key(&from_frr) {
            Ok(v)
        } else {
            Err(format!("{:?}", v.keys().collect::<Vec<_>>()))
        }
    });
    let r = &view[&from_gobgp];
    assert_eq!(
        (&r["label"], &r["nexthop"], &r["encap"]),
        (&json!(100), &json!(GOBGP), &json!("mpls-over-gre")),
        "{r}"
    );
    let r = &view[&from_frr];
    assert_eq!(
        (&r["label"], &r["nexthop"]),
        (&json!(200), &json!(FRR)),
        "{r}"
    );
    let h2 = view_routes(&shim, "h2");
    assert!(
        h2.keys().all(|k| !k.contains("bgp:")),
        "tier-db imports nothing: {h2:?}"
    );
    // Not sent back: no gateway hears another's route from us (we reflect nothing).
    let p = gobgp_rib(api_port).to_string();
    assert!(
        !p.contains("0.0.0.0/0"),
        "FRR's route reflected to GoBGP: {p}"
    );

    // The VM goes away on h1: both gateways lose the route, the sessions stay up.
    shim.ok(
        "DELETE",
        "/vrouter/routes",
        Some(&json!({"host": "h1", "vrf": VRF, "prefix": "10.20.1.2/32"})),
    );
    wait_for(30, "the withdraw at GoBGP", || match gobgp_path(api_port) {
        None => Ok(()),
        Some(p) => Err(p.to_string()),
    });
    wait_for(30, "the withdraw at FRR", || {
        let s = vtysh(&dir.0, "show bgp ipv4 vpn json");
        if s.contains("10.20.1.2/32") {
            Err(s)
        } else {
            Ok(())
        }
    });
    for addr in [GOBGP, FRR] {
        assert_eq!(neighbour_state(&shim, addr), "Established");
    }

    // GoBGP goes away: its route leaves h1 at once, FRR's stays.
    drop(gobgp);
    wait_for(30, "GoBGP's route gone with its session", || {
        let v = view_routes(&shim, "h1");
        if v.contains_key(&from_gobgp) || !v.contains_key(&from_frr) {
            Err(format!("{:?}", v.keys().collect::<Vec<_>>()))
        } else {
            Ok(())
        }
    });
    assert_ne!(neighbour_state(&shim, GOBGP), "Established");
    let api = vrouter_api::client::AgentApi::new(&shim.url(""), None);
    let table = api.bgp_neighbors().expect("neighbours");
    let flaps: Vec<(String, u64)> = table
        .neighbors
        .iter()
        .map(|n| (n.address.to_string(), n.flaps))
        .collect();
    assert_eq!(flaps, [(GOBGP.to_string(), 1), (FRR.to_string(), 0)]);
}

/// The gateway configured with the real `vnc_api` client as `provision_mx.py` does it (AS on
/// global-system-config, a bgp-router read back under ip-fabric:__default__, a network with an
/// explicit route target): the session comes up and GoBGP gets the network's route with that
/// route target, not the default `target:<AS>:<network id>`.
#[test]
fn vnc_api_provisions_a_gateway_like_provision_mx() {
    require_tool("gobgpd", &["--version"], "apt-get install gobgpd");
    require_tool(
        "python3",
        &["-c", "from vnc_api import vnc_api"],
        "pip install contrail-api-client future six requests",
    );
    const SHIM: &str = "127.77.1.1";
    const PEER: &str = "127.77.1.2";
    let dir = TempDir::new("bgp-vnc");
    let api_port = free_port();
    let shim = Shim::start(
        &format!("sqlite:{}", dir.0.join("shim.db").display()),
        &["--bgp", SHIM],
    );
    let _gobgp = start_gobgp(&dir.0, api_port, PEER, SHIM);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vnc_provision_gateway.py"
    );
    let out = Command::new("timeout")
        .args(["120", "python3", script, "--port", &shim.port.to_string()])
        .args([
            "--peer",
            PEER,
            "--peer-asn",
            "64512",
            "--network",
            "tier-gw",
        ])
        .args(["--route-target", "target:64512:100"])
        .output()
        .expect("run python3");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("OK "),
        "vnc_provision_gateway.py: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    shim.ok(
        "POST",
        "/vrouter/agents",
        Some(&json!({"hostname": "h1", "fabric_ip": "10.0.0.1"})),
    );
    let vrf = "default-domain:default-project:tier-gw";
    let route = json!({"host": "h1", "vrf": vrf, "prefix": "10.30.1.5/32", "label": 33});
    shim.ok("POST", "/vrouter/routes", Some(&route));
    wait_for(60, "session with the vnc_api-provisioned gateway", || {
        let s = neighbour_state(&shim, PEER);
        if s == "Established" {
            Ok(())
        } else {
            Err(s)
        }
    });
    let path = wait_for(30, "the route at GoBGP", || {
        let rib = gobgp_rib(api_port);
        rib.as_object()
            .and_then(|m| m.iter().find(|(k, _)| k.contains("10.30.1.5/32")))
            .and_then(|(_, p)| p.get(0).cloned())
            .ok_or_else(|| rib.to_string())
    });
    let text = path.to_string();
    assert!(
        text.contains("\"value\":\"64512:100\""),
        "route target 64512:100: {text}"
    );
    assert_eq!(path["nlri"]["labels"], json!([33]), "{text}");
}

/// The shim's resident set, kB.
fn rss_kb(shim: &Shim) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", shim.child.id()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A peer that flaps 100 times (bgp-inject: connect, announce 50 routes with tier-web's
/// route target, close): every flap is counted, no route outlives its session, and the shim's
/// memory stays flat. Once, mid-way, the peer stays up long enough to see its routes reach the
/// host, so the flaps carry real routes.
#[test]
fn a_flapping_peer_leaves_no_stale_route_and_no_leak() {
    const SHIM: &str = "127.77.2.1";
    const PEER: &str = "127.77.2.2";
    const FLAPS: u64 = 100;
    let dir = TempDir::new("bgp-flap");
    let shim = Shim::start(
        &format!("sqlite:{}", dir.0.join("shim.db").display()),
        &["--bgp", SHIM],
    );
    let net_id = cloud(&shim);
    let peer = json!({"bgp-router": {
        "fq_name": ["default-domain", "default-project", "ip-fabric", "__default__", "flappy"],
        "parent_type": "routing-instance",
        "bgp_router_parameters": {"address": PEER, "autonomous_system": 65003}}});
    shim.ok("POST", "/bgp-routers", Some(&peer));
    let gateway_routes = |shim: &Shim| {
        let (_, v) = shim.get("/vrouter/routes");
        v["routes"].as_array().map_or(0, |r| {
            r.iter()
                .filter(|r| r["host"] == format!("bgp:{PEER}"))
                .count()
        })
    };
    let flap = move |linger: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_bgp-inject"))
            .args([
                "--peer",
                &format!("{SHIM}:179"),
                "--source",
                PEER,
                "--asn",
                "65003",
            ])
            .args(["--routes", "50", "--rt", &format!("64512:{net_id}")])
            .args(["--linger", linger, "--settle-ms", "50"])
            .output()
            .expect("run bgp-inject");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let mut rss_after_10 = 0;
    for i in 1..=FLAPS {
        if i == FLAPS / 2 {
            // Stay up: the 50 routes reach tier-web's host, then go with the session.
            let t = std::thread::spawn(move || flap("3"));
            wait_for(10, "the flapping peer's routes on h1", || {
                let n = view_routes(&shim, "h1")
                    .keys()
                    .filter(|k| k.contains("bgp:"))
                    .count();
                if n == 50 {
                    Ok(())
                } else {
                    Err(format!("{n} routes"))
                }
            });
            t.join().expect("bgp-inject thread");
        } else {
            flap("0");
        }
        // Each session ends before the next starts (the table counts it).
        wait_for(10, &format!("flap {i} counted"), || {
            let api = vrouter_api::client::AgentApi::new(&shim.url(""), None);
            let n = api.bgp_neighbors().map_err(|e| e.to_string())?;
            let f = n.neighbors.first().map_or(0, |n| n.flaps);
            let up = neighbour_state(&shim, PEER) == "Established";
            if f >= i && !up {
                Ok(())
            } else {
                Err(format!("flaps {f}, established {up}"))
            }
        });
        if i == 10 {
            rss_after_10 = rss_kb(&shim);
        }
    }
    wait_for(10, "no route of the flapping peer left", || {
        match (
            gateway_routes(&shim),
            view_routes(&shim, "h1")
                .keys()
                .filter(|k| k.contains("bgp:"))
                .count(),
        ) {
            (0, 0) => Ok(()),
            other => Err(format!("{other:?} (shim, h1's view)")),
        }
    });
    let api = vrouter_api::client::AgentApi::new(&shim.url(""), None);
    let table = api.bgp_neighbors().expect("neighbours");
    assert_eq!(table.neighbors[0].flaps, FLAPS, "{table:?}");
    let grown = rss_kb(&shim).saturating_sub(rss_after_10);
    assert!(grown < 8 * 1024, "RSS grew {grown} kB over 90 flaps");
}
