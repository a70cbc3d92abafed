// SPDX-License-Identifier: Apache-2.0
//! What the shim refuses to store, over HTTP: values no agent could use get a 400 naming the
//! field and are not stored; a request whose body stalls gets a 408 and its connection closed,
//! while an idle keep-alive connection between requests stays open.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::{bodies, RawConn, Shim, TempDir};
use serde_json::{json, Value};

fn start(dir: &TempDir) -> Shim {
    Shim::start(&format!("sqlite:{}", dir.0.join("shim.db").display()), &[])
}

/// The 400's message, after checking the status.
fn refused(shim: &Shim, path: &str, body: &Value) -> String {
    let (code, reply) = shim.post(path, body);
    assert_eq!(code, 400, "{path} {body}: {reply}");
    reply["message"].as_str().unwrap_or_default().to_string()
}

#[test]
fn values_no_agent_can_use_are_refused_with_the_field_named() {
    let dir = TempDir::new("limits");
    let shim = start(&dir);
    let vn_uuid = "0d9b4a3c-0000-4000-8000-000000000001";
    shim.ok(
        "POST",
        "/virtual-networks",
        Some(&bodies::vn(vn_uuid, "guest-a", "10.1.0.0", "10.1.0.1")),
    );
    shim.ok(
        "POST",
        "/virtual-machines",
        Some(&bodies::vm("0d9b4a3c-0000-4000-8000-000000000002", "vm1")),
    );

    // A MAC that is not one.
    let mut vmi = bodies::vmi("0d9b4a3c-0000-4000-8000-000000000003", "vm1", 0, "guest-a");
    vmi["virtual-machine-interface"]["virtual_machine_interface_mac_addresses"] =
        json!({"mac_address": ["zz:zz"]});
    let m = refused(&shim, "/virtual-machine-interfaces", &vmi);
    assert!(
        m.contains("virtual_machine_interface_mac_addresses.mac_address[0]") && m.contains("zz:zz"),
        "{m}"
    );
    // A broadcast MAC parses but no VM owns it.
    vmi["virtual-machine-interface"]["virtual_machine_interface_mac_addresses"] =
        json!({"mac_address": ["ff:ff:ff:ff:ff:ff"]});
    assert!(refused(&shim, "/virtual-machine-interfaces", &vmi).contains("multicast"));
    let (code, _) = shim.get("/virtual-machine-interface/0d9b4a3c-0000-4000-8000-000000000003");
    assert_eq!(code, 404, "a refused VMI is not stored");

    // A /0 IPAM subnet.
    let mut vn = bodies::vn(
        "0d9b4a3c-0000-4000-8000-000000000004",
        "everything",
        "0.0.0.0",
        "0.0.0.1",
    );
    vn["virtual-network"]["network_ipam_refs"][0]["attr"]["ipam_subnets"][0]["subnet"]
        ["ip_prefix_len"] = json!(0);
    let m = refused(&shim, "/virtual-networks", &vn);
    assert!(
        m.starts_with("ipam_subnets[0].subnet.ip_prefix_len: /0"),
        "{m}"
    );
    // A gateway outside its subnet.
    let vn = bodies::vn(
        "0d9b4a3c-0000-4000-8000-000000000005",
        "guest-b",
        "10.2.0.0",
        "10.9.0.1",
    );
    assert!(refused(&shim, "/virtual-networks", &vn).contains("default_gateway: 10.9.0.1"));

    // A 100 kB name, in fq_name and as display_name.
    let long = "n".repeat(100_000);
    let m = refused(
        &shim,
        "/virtual-machines",
        &json!({"virtual-machine": {"fq_name": [long]}}),
    );
    assert!(m.starts_with("fq_name[0]: 100000 bytes"), "{m}");
    let body = json!({"virtual-machine": {"fq_name": ["vm2"], "display_name": long}});
    assert!(refused(&shim, "/virtual-machines", &body).starts_with("display_name: 100000 bytes"));

    // Only guest-a and the VM made it in.
    let (_, vns) = shim.get("/virtual-networks");
    let names: Vec<&str> = vns["virtual-networks"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|v| v["fq_name"][2].as_str())
        .collect();
    assert!(names.contains(&"guest-a"), "{names:?}");
    assert!(
        !names.contains(&"everything") && !names.contains(&"guest-b"),
        "{names:?}"
    );
}

/// Sends headers announcing `announced` body bytes and only `sent` of them, then reads what
/// comes back until the server closes: (status line, time it took, closed).
fn stall(port: u16, announced: usize, sent: &[u8]) -> (String, Duration, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let head = format!(
        "POST /virtual-networks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {announced}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).expect("head");
    s.write_all(sent).expect("body start");
    let t = Instant::now();
    let mut got = Vec::new();
    let closed = s.read_to_end(&mut got).is_ok();
    let text = String::from_utf8_lossy(&got);
    let status = text.lines().next().unwrap_or_default().to_string();
    (status, t.elapsed(), closed)
}

#[test]
fn a_stalled_body_times_out_but_an_idle_connection_stays_open() {
    let dir = TempDir::new("stall");
    let shim = start(&dir);
    let port = shim.port;
    // An idle keep-alive connection (CloudStack's client pools them) outlives the body timeout.
    let idle = thread::spawn(move || {
        let mut c = RawConn::open(port);
        assert_eq!(c.send("GET", "/virtual-networks", None).status, 200);
        thread::sleep(Duration::from_secs(12));
        c.send("GET", "/virtual-networks", None).status
    });
    let (status, took, closed) = stall(port, 50_000_000, b"{\"");
    assert!(status.contains(" 408 "), "{status:?}");
    assert!(closed, "the connection is closed after the 408");
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(20),
        "answered after {took:?}"
    );
    assert_eq!(
        idle.join().expect("idle connection thread"),
        200,
        "the idle connection still serves"
    );
    // The shim still serves everyone.
    assert_eq!(shim.get("/virtual-networks").0, 200);
}
