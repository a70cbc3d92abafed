// SPDX-License-Identifier: Apache-2.0
//! The agent API's version handshake and typed request parsing, at the HTTP level: every
//! `/vrouter/...` answer names the version, a request naming another one is refused with a 400
//! naming both, a malformed body gets a 400 naming the field, and the shared typed client of
//! `vrouter-api` talks to the shim end to end.

mod common;

use common::{RawConn, Shim, TempDir};
use serde_json::{json, Value};
use vrouter_api::agent::{version_mismatch, Advertise, ErrorReply, Withdraw};
use vrouter_api::client::{AgentApi, ClientError};
use vrouter_api::{Label, API_VERSION, VERSION_HEADER};

fn start(dir: &TempDir) -> Shim {
    Shim::start(&format!("sqlite:{}", dir.0.join("shim.db").display()), &[])
}

#[test]
fn another_version_is_refused_with_both_versions_named() {
    let dir = TempDir::new("version");
    let shim = start(&dir);
    let mut c = RawConn::open(shim.port);
    let body = r#"{"hostname": "h1", "fabric_ip": "10.0.0.1"}"#;
    let r = c.send_with(
        "POST",
        "/vrouter/agents",
        &[(VERSION_HEADER, "2")],
        Some(body),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let e: ErrorReply = serde_json::from_str(&r.body).expect("an ErrorReply");
    assert_eq!(e.code, 400);
    assert_eq!(e.message, version_mismatch("2"));
    assert!(
        e.message.contains("version 2") && e.message.contains("version 1"),
        "{}",
        e.message
    );
    assert_eq!(r.header(VERSION_HEADER), Some("1"));
    // Refused means not applied.
    let r = c.send("GET", "/vrouter/agents", None);
    assert_eq!(r.json(), json!({"agents": []}));
    // Our own version, or none at all (curl), is accepted.
    let r = c.send_with(
        "POST",
        "/vrouter/agents",
        &[(VERSION_HEADER, "1")],
        Some(body),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // The VNC API has no such header either way.
    let r = c.send_with("GET", "/virtual-networks", &[(VERSION_HEADER, "2")], None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header(VERSION_HEADER), None);
}

#[test]
fn every_agent_api_reply_names_the_version() {
    let dir = TempDir::new("version-reply");
    let shim = start(&dir);
    let mut c = RawConn::open(shim.port);
    let want = API_VERSION.to_string();
    for (method, path, body, status) in [
        ("GET", "/vrouter/agents", None, 200),
        (
            "POST",
            "/vrouter/agents",
            Some(r#"{"hostname": "h1", "fabric_ip": "10.0.0.1"}"#),
            200,
        ),
        ("GET", "/vrouter/routes", None, 200),
        ("GET", "/vrouter/watch?host=h1&since=0&timeout=0", None, 200),
        ("GET", "/vrouter/watch?host=nobody&timeout=0", None, 404),
        ("GET", "/vrouter/no-such-call", None, 404),
        ("DELETE", "/vrouter/agents/h1", None, 200),
    ] {
        let r = c.send(method, path, body);
        assert_eq!(r.status, status, "{method} {path}: {}", r.body);
        assert_eq!(
            r.header(VERSION_HEADER),
            Some(want.as_str()),
            "{method} {path}"
        );
    }
}

#[test]
fn a_malformed_body_gets_400_naming_the_field() {
    let dir = TempDir::new("bad-body");
    let shim = start(&dir);
    shim.ok(
        "POST",
        "/vrouter/agents",
        Some(&json!({"hostname": "h1", "fabric_ip": "10.0.0.1"})),
    );
    let message = |(st, v): (u16, Value)| {
        assert_eq!(st, 400, "{v}");
        assert_eq!(v["code"], 400);
        v["message"].as_str().expect("a message").to_string()
    };
    let vrf = "default-domain:default-project:net";
    let m = message(shim.post(
        "/vrouter/routes",
        &json!({"host": "h1", "vrf": vrf, "prefix": "10.1.1.0/24", "label": 1_048_576}),
    ));
    assert_eq!(m, "label: label 1048576 is not below 2^20");
    let m = message(shim.post(
        "/vrouter/bindings",
        &json!({"host": "h1", "vmi_uuid": "not-a-uuid"}),
    ));
    assert_eq!(m, "vmi_uuid: malformed UUID \"not-a-uuid\"");
    let m = message(shim.post(
        "/vrouter/agents",
        &json!({"hostname": "h2", "fabric_ip": "ten.0.0.1"}),
    ));
    assert!(m.starts_with("fabric_ip: "), "{m}");
    let m = message(shim.post(
        "/vrouter/routes",
        &json!({"host": "h1", "vrf": vrf, "prefix": "10.1.1.1", "label": 1}),
    ));
    assert_eq!(m, "prefix: \"10.1.1.1\" is not a.b.c.d/len");
    // The semantic checks keep their words.
    let m = message(shim.post(
        "/vrouter/agents",
        &json!({"hostname": "a/b", "fabric_ip": "10.0.0.1"}),
    ));
    assert_eq!(m, "hostname must not contain '/'");
    // Host bits of an advertised prefix are cleared, as they always were.
    let r = shim.ok(
        "POST",
        "/vrouter/routes",
        Some(&json!({"host": "h1", "vrf": vrf, "prefix": "10.1.1.7/24", "label": 5})),
    );
    assert_eq!(r["route"]["prefix"], "10.1.1.0/24");
}

#[test]
fn the_shared_client_talks_to_the_shim() {
    let dir = TempDir::new("client");
    let shim = start(&dir);
    let api = AgentApi::new(&shim.url(""), None);
    let vmi = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e51"
        .parse()
        .expect("uuid");
    let reg = api
        .register("h1", "10.0.0.1".parse().expect("ip"))
        .expect("register");
    assert_eq!(reg.hostname, "h1");
    api.register("h2", "10.0.0.2".parse().expect("ip"))
        .expect("register");
    let bound = api.bind("h1", vmi).expect("bind");
    assert!(bound.rev > reg.rev);
    assert_eq!(
        api.bindings_of("h1").expect("agents"),
        std::collections::BTreeSet::from([vmi])
    );
    let vrf = "default-domain:default-project:net";
    let ad = Advertise {
        host: "h1".into(),
        vrf: vrf.into(),
        prefix: "10.1.1.2/32".parse().expect("prefix"),
        label: Label::new(17).expect("label"),
        nexthop: None,
        vmi_uuid: None,
    };
    let r = api.advertise(&ad).expect("advertise");
    assert_eq!(
        r.route.nexthop,
        "10.0.0.1".parse::<std::net::Ipv4Addr>().expect("ip")
    );
    assert_eq!(api.routes(Some(vrf)).expect("routes").routes, vec![r.route]);
    let w = api.watch("h2", 0, 0).expect("watch");
    assert!(w.reset);
    let wd = Withdraw {
        host: "h1".into(),
        vrf: vrf.into(),
        prefix: ad.prefix,
    };
    assert!(api.withdraw(&wd).expect("withdraw").withdrawn);
    // The VMI has no object yet: the typed 404 is `None`.
    assert_eq!(api.interface(vmi).expect("interface"), None);
    // Errors come back typed with the shim's message.
    let e = api.bind("ghost", vmi).expect_err("not registered");
    assert_eq!(
        e,
        ClientError::Status {
            code: 404,
            message: "agent ghost is not registered".into()
        }
    );
}
