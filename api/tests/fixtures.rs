// SPDX-License-Identifier: Apache-2.0
//! Every message of the agent API, as pinned in `fixtures/` (captured from the shim before this
//! crate existed; `controller-shim/tests/api_fixtures.rs` checks the shim still sends exactly
//! these), parses as its type and re-serialises to the same JSON.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use vrouter_api::agent::{
    Advertise, Advertised, AgentList, Binding, Bound, RegisterAgent, Registered, RouteList,
    Unbound, Withdraw, Withdrawn,
};
use vrouter_api::interface::{Endpoint, InterfaceConfig};
use vrouter_api::watch::{Change, Op, WatchReply};

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Parses fixture `name` as `T` and checks it serialises back to the same JSON.
fn round_trip<T: Serialize + DeserializeOwned>(name: &str) -> T {
    let wire = fixture(name);
    let typed: T = serde_json::from_value(wire.clone())
        .unwrap_or_else(|e| panic!("{name}: does not parse as its type: {e}"));
    let again = serde_json::to_value(&typed).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(again, wire, "{name}: re-serialised JSON differs");
    typed
}

#[test]
fn every_request_and_reply_round_trips() {
    round_trip::<RegisterAgent>("register.request");
    round_trip::<Registered>("register.reply");
    round_trip::<Binding>("bind.request");
    round_trip::<Bound>("bind.reply");
    round_trip::<Binding>("unbind.request");
    round_trip::<Unbound>("unbind.reply");
    round_trip::<Advertise>("advertise.request");
    round_trip::<Advertised>("advertise.reply");
    round_trip::<Withdraw>("withdraw.request");
    round_trip::<Withdrawn>("withdraw.reply");
    round_trip::<AgentList>("agents.reply");
    round_trip::<RouteList>("routes.reply");
    round_trip::<WatchReply>("watch_since.reply");
}

#[test]
fn interface_config_is_typed_down_to_the_rules() {
    let c: InterfaceConfig = round_trip("interface.reply");
    assert_eq!(c.vrf(), Some("default-domain:default-project:guest-a"));
    assert_eq!(c.ips[0].ipv4(), Some("10.1.1.2".parse().expect("ip")));
    assert_eq!(
        c.properties.as_ref().and_then(|p| p.interface_mtu),
        Some(1450)
    );
    let rule = &c.policies[0].rules[0];
    assert_eq!(rule.protocol, Some(6));
    assert_eq!(rule.dst[2], Endpoint::Any);
    assert_eq!(
        rule.dst[1].prefixes().map(|p| p[0].to_string()),
        Some("192.0.2.0/24".to_string())
    );
    assert_eq!(
        c.floating_ips[0].address,
        Some("198.51.100.2".parse().expect("ip"))
    );
}

#[test]
fn watch_events_decode_to_typed_changes() {
    let w: WatchReply = round_trip("watch_reset.reply");
    assert!(w.reset);
    let mut interfaces = 0;
    let mut routes = 0;
    for ev in &w.events {
        assert_eq!(ev.op, Op::Put);
        match ev.change().expect("every event of the fixture decodes") {
            Change::Interface { config, .. } => interfaces += usize::from(config.is_some()),
            Change::Route { route, .. } => routes += usize::from(route.is_some()),
            Change::Unknown { key } => panic!("unknown event {key}"),
        }
    }
    assert_eq!((interfaces, routes), (1, 2));
    let w: WatchReply = round_trip("watch_since.reply");
    match w.events[0].change().expect("decodes") {
        Change::Route { route: None, key } => assert!(key.ends_with("/10.2.2.0/24/h2")),
        other => panic!("expected a route delete, got {other:?}"),
    }
}

#[test]
fn a_bad_value_costs_its_key_only() {
    let mut w = fixture("watch_reset.reply");
    w["events"][0]["value"]["mac"] = "not a mac".into();
    w["events"][1]["kind"] = "bgp-route".into();
    let w: WatchReply = serde_json::from_value(w).expect("the reply still parses");
    let e = w.events[0].change().expect_err("bad mac");
    assert!(e.to_string().contains("malformed MAC address"), "{e}");
    assert!(matches!(w.events[1].change(), Ok(Change::Unknown { .. })));
    assert!(w.events[2].change().is_ok());
    let mut bad_key = w.events[0].clone();
    bad_key.key = "iface/not-a-uuid".into();
    let e = bad_key.change().expect_err("bad key");
    assert!(e.to_string().contains("malformed UUID"), "{e}");
}

#[test]
fn requests_refuse_what_the_shim_would() {
    let mut r = fixture("advertise.request");
    r["label"] = (1u64 << 20).into();
    let e = serde_json::from_value::<Advertise>(r).expect_err("label too big");
    assert!(e.to_string().contains("not below 2^20"), "{e}");
    let mut r = fixture("register.request");
    r["fabric_ip"] = "10.0.0".into();
    assert!(serde_json::from_value::<RegisterAgent>(r).is_err());
}
