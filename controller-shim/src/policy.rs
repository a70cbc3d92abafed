// SPDX-License-Identifier: Apache-2.0
//! Network policies as the agents need them, free of I/O: which networks a policy connects
//! (the route leak) and the rules with network names resolved to VRF names and subnets.
//!
//! Rule for route leaks: networks X and Y (X ≠ Y) are *connected* when a network-policy
//! attached to X (by X's `network_policy_refs`) has a `pass` rule naming Y in its
//! `src_addresses` or `dst_addresses` (`virtual_network` = Y's fq_name joined with `:`), or
//! naming `"any"`, or when a policy attached to Y does so for X. `"any"` connects to every other
//! network that has IPAM subnets (never `ip-fabric` / `__link_local__`). `deny` rules, `local`
//! and `subnet` addresses connect nothing. The relation is recomputed after every change, so the
//! leak goes away with the policy, its rule, or the ref.

use std::collections::{BTreeMap, BTreeSet};

use std::net::Ipv4Addr;

use serde_json::Value;
use vrouter_api::interface::{Action, Direction, Endpoint, PolicyRule};
use vrouter_api::Ipv4Prefix;

/// VRF name → the network's IPAM subnets: what names resolve against.
pub type Known = BTreeMap<String, Vec<Ipv4Prefix>>;

/// Peers one network's attached policies name in pass rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peers {
    /// VRF names named by `virtual_network` in pass rules (the network itself excluded).
    pub named: BTreeSet<String>,
    /// A pass rule names `any`.
    pub any: bool,
}

fn rules(entries: &Value) -> impl Iterator<Item = &Value> {
    entries
        .get("policy_rule")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn action(rule: &Value) -> Option<&str> {
    rule.pointer("/action_list/simple_action")
        .and_then(Value::as_str)
}

fn addresses<'a>(rule: &'a Value, k: &str) -> impl Iterator<Item = &'a Value> {
    rule.get(k).and_then(Value::as_array).into_iter().flatten()
}

/// Resolves a rule's `virtual_network` to a VRF name: `local` is `own`, an exact VRF name is
/// itself, a bare name matches a known network whose last fq_name component it is.
pub fn resolve_vn(name: &str, own: &str, known: &Known) -> String {
    if name == "local" {
        return own.to_string();
    }
    if known.contains_key(name) || name.contains(':') {
        return name.to_string();
    }
    let mut hits = known.keys().filter(|k| k.rsplit(':').next() == Some(name));
    match (hits.next(), hits.next()) {
        (Some(k), None) => k.clone(),
        _ => name.to_string(),
    }
}

/// What the pass rules of `policies` (each a `network_policy_entries` value) attached to the
/// network `own` name.
pub fn peers_of(policies: &[&Value], own: &str, known: &Known) -> Peers {
    let mut out = Peers::default();
    for r in policies.iter().flat_map(|p| rules(p)) {
        if action(r) != Some("pass") {
            continue;
        }
        for a in addresses(r, "src_addresses").chain(addresses(r, "dst_addresses")) {
            match a.get("virtual_network").and_then(Value::as_str) {
                Some("any") => out.any = true,
                Some("local") | None => {}
                Some(n) => {
                    let v = resolve_vn(n, own, known);
                    if v != own {
                        out.named.insert(v);
                    }
                }
            }
        }
    }
    out
}

/// The networks connected to `own` (see the module doc). `peers` holds every network's
/// [`Peers`] (networks without policies may be absent); `eligible` are the networks `any`
/// reaches.
pub fn connected(
    own: &str,
    peers: &BTreeMap<String, Peers>,
    eligible: &BTreeSet<String>,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Some(p) = peers.get(own) {
        out.extend(p.named.iter().cloned());
        if p.any {
            out.extend(eligible.iter().cloned());
        }
    }
    for (other, p) in peers {
        if other != own && (p.named.contains(own) || (p.any && eligible.contains(own))) {
            out.insert(other.clone());
        }
    }
    out.remove(own);
    out
}

/// IP protocol number of a rule's `protocol` (`any` → `Some(None)`); `None` for an unknown name.
pub fn protocol(p: Option<&str>) -> Option<Option<u8>> {
    match p.map(str::trim).unwrap_or("any") {
        "any" | "" => Some(None),
        "tcp" | "TCP" => Some(Some(6)),
        "udp" | "UDP" => Some(Some(17)),
        "icmp" | "ICMP" => Some(Some(1)),
        n => n.parse::<u8>().ok().map(Some),
    }
}

/// One address of a rule as the agent matches it; `None` when it names nothing usable (a
/// `subnet` that is not an IPv4 prefix: such a side matches nothing rather than garbage).
fn endpoint(a: &Value, own: &str, known: &Known) -> Option<Endpoint> {
    if let Some(n) = a.get("virtual_network").and_then(Value::as_str) {
        if n == "any" {
            return Some(Endpoint::Any);
        }
        let vrf = resolve_vn(n, own, known);
        let subnets = known.get(&vrf).cloned().unwrap_or_default();
        return Some(Endpoint::Network { vrf, subnets });
    }
    if let Some(s) = a.get("subnet") {
        let p: Ipv4Addr = s.get("ip_prefix").and_then(Value::as_str)?.parse().ok()?;
        let l = s.get("ip_prefix_len").and_then(Value::as_u64)?;
        return Ipv4Prefix::truncating(p, u8::try_from(l).ok()?).map(Endpoint::Subnet);
    }
    None
}

/// Port ranges of a rule side; `-1` or absent is any (`[0, 65535]`).
fn ports(rule: &Value, k: &str) -> Vec<(u16, u16)> {
    let port = |p: &Value, k: &str| p.get(k).and_then(Value::as_i64).unwrap_or(-1);
    let clamp = |v: i64| u16::try_from(v.min(65535)).unwrap_or(u16::MAX);
    let v: Vec<(u16, u16)> = rule
        .get(k)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            let (lo, hi) = (port(p, "start_port"), port(p, "end_port"));
            if lo < 0 || hi < 0 {
                (0, 65535)
            } else {
                (clamp(lo), clamp(hi))
            }
        })
        .collect();
    if v.is_empty() {
        vec![(0, 65535)]
    } else {
        v
    }
}

/// The rules of one policy attached to `own`, resolved for the agent (names to VRFs and
/// subnets, protocols to numbers, ports to ranges; see [`PolicyRule`]). Rules with an unknown
/// protocol or action, or no usable address on a side, are left out.
pub fn resolve_rules(entries: &Value, own: &str, known: &Known) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    for r in rules(entries) {
        let action = match action(r) {
            Some("pass") => Action::Pass,
            Some("deny") => Action::Deny,
            _ => continue,
        };
        let Some(proto) = protocol(r.get("protocol").and_then(Value::as_str)) else {
            continue;
        };
        let side = |k| -> Vec<Endpoint> {
            addresses(r, k)
                .filter_map(|a| endpoint(a, own, known))
                .collect()
        };
        let (src, dst) = (side("src_addresses"), side("dst_addresses"));
        if src.is_empty() || dst.is_empty() {
            continue;
        }
        let direction = if r.get("direction").and_then(Value::as_str) == Some(">") {
            Direction::OneWay
        } else {
            Direction::Both
        };
        out.push(PolicyRule {
            direction,
            protocol: proto,
            src,
            dst,
            src_ports: ports(r, "src_ports"),
            dst_ports: ports(r, "dst_ports"),
            action,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const A: &str = "default-domain:default-project:guest-a";
    const B: &str = "default-domain:default-project:guest-b";
    const C: &str = "default-domain:default-project:guest-c";

    fn known() -> Known {
        [(A, "10.1.1.0/24"), (B, "10.2.2.0/24"), (C, "10.3.3.0/24")]
            .into_iter()
            .map(|(k, s)| (k.to_string(), vec![s.parse().expect("prefix")]))
            .collect()
    }

    fn rule(action: &str, proto: &str, src: Value, dst: Value) -> Value {
        json!({"direction": "<>", "protocol": proto,
               "src_addresses": [src], "dst_addresses": [dst],
               "src_ports": [{"start_port": -1, "end_port": -1}],
               "dst_ports": [{"start_port": 22, "end_port": 22}],
               "action_list": {"simple_action": action}})
    }

    fn acl_a_b() -> Value {
        json!({"policy_rule": [rule("pass", "icmp", json!({"virtual_network": A}), json!({"virtual_network": B}))]})
    }

    fn all_peers(attached: &[(&str, &Value)]) -> BTreeMap<String, Peers> {
        let k = known();
        attached
            .iter()
            .map(|(vn, p)| (vn.to_string(), peers_of(&[*p], vn, &k)))
            .collect()
    }

    fn eligible() -> BTreeSet<String> {
        known().into_keys().collect()
    }

    #[test]
    fn pass_rule_connects_both_ways_and_not_third() {
        let p = acl_a_b();
        // Attached to A only: A ~ B both ways, C alone.
        let peers = all_peers(&[(A, &p)]);
        assert_eq!(connected(A, &peers, &eligible()), [B.to_string()].into());
        assert_eq!(connected(B, &peers, &eligible()), [A.to_string()].into());
        assert!(connected(C, &peers, &eligible()).is_empty());
        // Attached to both: same.
        let peers = all_peers(&[(A, &p), (B, &p)]);
        assert_eq!(connected(B, &peers, &eligible()), [A.to_string()].into());
        // Ref removed: no leak.
        assert!(connected(A, &BTreeMap::new(), &eligible()).is_empty());
    }

    #[test]
    fn deny_local_and_subnet_connect_nothing_any_connects_all() {
        let deny = json!({"policy_rule": [rule("deny", "any", json!({"virtual_network": A}), json!({"virtual_network": B}))]});
        let sub = json!({"policy_rule": [rule("pass", "any", json!({"virtual_network": "local"}),
                                              json!({"subnet": {"ip_prefix": "10.2.2.0", "ip_prefix_len": 24}}))]});
        let peers = all_peers(&[(A, &deny), (B, &sub)]);
        assert!(connected(A, &peers, &eligible()).is_empty());
        assert!(connected(B, &peers, &eligible()).is_empty());
        let any = json!({"policy_rule": [rule("pass", "any", json!({"virtual_network": "local"}), json!({"virtual_network": "any"}))]});
        let peers = all_peers(&[(C, &any)]);
        assert_eq!(
            connected(C, &peers, &eligible()),
            [A.to_string(), B.to_string()].into()
        );
        assert_eq!(connected(A, &peers, &eligible()), [C.to_string()].into());
    }

    #[test]
    fn bare_names_resolve_to_known_vrfs() {
        let p = json!({"policy_rule": [rule("pass", "any", json!({"virtual_network": "local"}), json!({"virtual_network": "guest-b"}))]});
        let peers = all_peers(&[(A, &p)]);
        assert_eq!(connected(A, &peers, &eligible()), [B.to_string()].into());
    }

    #[test]
    fn rules_resolve_names_subnets_protocols_and_ports() {
        let p = json!({"policy_rule": [
            rule("pass", "icmp", json!({"virtual_network": "local"}), json!({"virtual_network": B})),
            rule("deny", "tcp", json!({"subnet": {"ip_prefix": "10.9.0.0", "ip_prefix_len": 16}}), json!({"virtual_network": "any"})),
            rule("pass", "bogus", json!({"virtual_network": "any"}), json!({"virtual_network": "any"})),
            rule("reject", "tcp", json!({"virtual_network": "any"}), json!({"virtual_network": "any"})),
        ]});
        let r: Vec<Value> = resolve_rules(&p, A, &known())
            .iter()
            .map(|r| serde_json::to_value(r).expect("a rule serialises"))
            .collect();
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0],
            json!({"direction": "<>", "protocol": 1,
                   "src": [{"vrf": A, "subnets": ["10.1.1.0/24"]}],
                   "dst": [{"vrf": B, "subnets": ["10.2.2.0/24"]}],
                   "src_ports": [[0, 65535]], "dst_ports": [[22, 22]], "action": "pass"})
        );
        assert_eq!(r[1]["protocol"], json!(6));
        assert_eq!(r[1]["src"], json!([{"subnet": "10.9.0.0/16"}]));
        assert_eq!(r[1]["dst"], json!([{"any": true}]));
        assert_eq!(r[1]["action"], json!("deny"));
        assert_eq!(protocol(Some("58")), Some(Some(58)));
        assert_eq!(protocol(None), Some(None));
        assert_eq!(protocol(Some("sctpx")), None);
    }
}
