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
//!
//! A rule with `action_list.apply_service` (service chaining; `simple_action` `pass` or
//! absent) connects nothing directly: it is a [`ChainRule`] from its source networks (left) to
//! its destination networks (right), whose traffic goes through the named service instances
//! (see [`crate::service`]) or, while none runs, is dropped. Its resolved rule carries
//! [`Action::Service`], never [`Action::Pass`]; an action the shim does not know is a deny.
//!
//! `network_policy_entries` is parsed once into [`Entries`]; nothing here reads JSON.

use std::collections::{BTreeMap, BTreeSet};

use std::net::Ipv4Addr;

use serde::Deserialize;
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

/// `network_policy_entries` as CloudStack writes it, parsed once at the edge. A rule that does
/// not parse (a field of the wrong JSON type) is kept as [`Entry::Bad`] for inspection: it
/// matches nothing and connects nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entries {
    /// The rules, in order.
    pub rules: Vec<Entry>,
}

/// One entry of `policy_rule`.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A rule with the fields the shim reads.
    Rule(RuleEntry),
    /// A rule that does not parse, and why.
    Bad(String),
}

/// A `policy_rule` entry: the keys the shim reads, typed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RuleEntry {
    /// `<>` or `>`.
    #[serde(default)]
    pub direction: Option<String>,
    /// `any`, a name or a number.
    #[serde(default)]
    pub protocol: Option<String>,
    /// Sources.
    #[serde(default)]
    pub src_addresses: Vec<AddressEntry>,
    /// Destinations.
    #[serde(default)]
    pub dst_addresses: Vec<AddressEntry>,
    /// Source port ranges.
    #[serde(default)]
    pub src_ports: Vec<PortEntry>,
    /// Destination port ranges.
    #[serde(default)]
    pub dst_ports: Vec<PortEntry>,
    /// What a match does.
    #[serde(default)]
    pub action_list: Option<ActionList>,
}

/// One address of a rule side.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct AddressEntry {
    /// A network name, `local` or `any`.
    #[serde(default)]
    pub virtual_network: Option<String>,
    /// A CIDR.
    #[serde(default)]
    pub subnet: Option<SubnetEntry>,
}

/// `{"ip_prefix": "a.b.c.d", "ip_prefix_len": n}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SubnetEntry {
    /// Address.
    #[serde(default)]
    pub ip_prefix: Option<String>,
    /// Length.
    #[serde(default)]
    pub ip_prefix_len: Option<i64>,
}

/// `{"start_port": a, "end_port": b}`; `-1` or absent is any.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PortEntry {
    /// First port.
    #[serde(default)]
    pub start_port: Option<i64>,
    /// Last port.
    #[serde(default)]
    pub end_port: Option<i64>,
}

/// `action_list`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ActionList {
    /// `pass`, `deny`, ...
    #[serde(default)]
    pub simple_action: Option<String>,
    /// Service instances (fq_names joined with `:`) the traffic goes through.
    #[serde(default)]
    pub apply_service: Vec<String>,
}

/// What a rule does, as the shim reads `action_list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleAction {
    /// `pass` without services: connects the networks directly.
    Pass,
    /// `deny`, `drop`, `reject`, or an action this shim does not know: drops.
    Deny,
    /// `apply_service` (with `pass` or no simple action): through these instances only.
    Service(Vec<String>),
}

impl RuleEntry {
    /// The rule's action. `apply_service` wins over `pass` (Contrail's service rules carry
    /// both); an explicit deny with services is still a deny; anything unknown denies.
    pub fn action(&self) -> RuleAction {
        let a = self.action_list.clone().unwrap_or_default();
        let simple = a.simple_action.as_deref().map(str::trim);
        let services: Vec<String> = a
            .apply_service
            .into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        match simple {
            Some("pass") | None | Some("") if !services.is_empty() => RuleAction::Service(services),
            Some("pass") => RuleAction::Pass,
            _ => RuleAction::Deny,
        }
    }

    fn addresses(&self) -> impl Iterator<Item = &AddressEntry> {
        self.src_addresses.iter().chain(self.dst_addresses.iter())
    }
}

impl Entries {
    /// Parses a stored `network_policy_entries` value (absent or not an object: no rules).
    pub fn parse(v: Option<&Value>) -> Entries {
        let rules = v
            .and_then(|v| v.get("policy_rule"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|r| match RuleEntry::deserialize(r) {
                Ok(r) => Entry::Rule(r),
                Err(e) => Entry::Bad(e.to_string()),
            })
            .collect();
        Entries { rules }
    }

    fn parsed(&self) -> impl Iterator<Item = &RuleEntry> {
        self.rules.iter().filter_map(|e| match e {
            Entry::Rule(r) => Some(r),
            Entry::Bad(_) => None,
        })
    }
}

/// A service chain a rule asks for: traffic between `left` and `right` (VRF names) goes
/// through `instances`, never directly.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChainRule {
    /// The policy's fq_name joined with `:`.
    pub policy: String,
    /// The rule's source network.
    pub left: String,
    /// The rule's destination network.
    pub right: String,
    /// The instances the rule names.
    pub instances: Vec<String>,
}

/// The chains the service rules of policy `policy` (attached to `own`) ask for: one per
/// (source network, destination network) pair of each rule. `any` and subnets name no
/// network and make no chain (the rule still matches, and drops, see [`resolve_rules`]).
pub fn chains_of(policy: &str, entries: &Entries, own: &str, known: &Known) -> Vec<ChainRule> {
    let mut out = Vec::new();
    let vn = |a: &AddressEntry| match a.virtual_network.as_deref() {
        Some("any") | None => None,
        Some(n) => Some(resolve_vn(n, own, known)),
    };
    for r in entries.parsed() {
        let RuleAction::Service(instances) = r.action() else {
            continue;
        };
        for left in r.src_addresses.iter().filter_map(vn) {
            for right in r.dst_addresses.iter().filter_map(vn) {
                if left != right {
                    out.push(ChainRule {
                        policy: policy.to_string(),
                        left: left.clone(),
                        right,
                        instances: instances.clone(),
                    });
                }
            }
        }
    }
    out
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

/// What the pass rules of `policies` attached to the network `own` name. Service rules
/// connect nothing directly (their traffic goes through the instance, see [`chains_of`]).
pub fn peers_of(policies: &[&Entries], own: &str, known: &Known) -> Peers {
    let mut out = Peers::default();
    for r in policies.iter().flat_map(|p| p.parsed()) {
        if r.action() != RuleAction::Pass {
            continue;
        }
        for a in r.addresses() {
            match a.virtual_network.as_deref() {
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
fn endpoint(a: &AddressEntry, own: &str, known: &Known) -> Option<Endpoint> {
    if let Some(n) = a.virtual_network.as_deref() {
        if n == "any" {
            return Some(Endpoint::Any);
        }
        let vrf = resolve_vn(n, own, known);
        let subnets = known.get(&vrf).cloned().unwrap_or_default();
        return Some(Endpoint::Network { vrf, subnets });
    }
    let s = a.subnet.as_ref()?;
    let p: Ipv4Addr = s.ip_prefix.as_deref()?.parse().ok()?;
    let l = u8::try_from(s.ip_prefix_len?).ok()?;
    Ipv4Prefix::truncating(p, l).map(Endpoint::Subnet)
}

/// Port ranges of a rule side; `-1` or absent is any (`[0, 65535]`).
fn ports(list: &[PortEntry]) -> Vec<(u16, u16)> {
    let clamp = |v: i64| u16::try_from(v.min(65535)).unwrap_or(u16::MAX);
    let v: Vec<(u16, u16)> = list
        .iter()
        .map(|p| {
            let (lo, hi) = (p.start_port.unwrap_or(-1), p.end_port.unwrap_or(-1));
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
/// subnets, protocols to numbers, ports to ranges; see [`PolicyRule`]). Rules that do not
/// parse, with an unknown protocol, or with no usable address on a side, are left out. An
/// unknown action is a deny and a service rule stays a service rule: neither ever passes.
pub fn resolve_rules(entries: &Entries, own: &str, known: &Known) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    for r in entries.parsed() {
        let (action, services) = match r.action() {
            RuleAction::Pass => (Action::Pass, Vec::new()),
            RuleAction::Deny => (Action::Deny, Vec::new()),
            RuleAction::Service(s) => (Action::Service, s),
        };
        let Some(proto) = protocol(r.protocol.as_deref()) else {
            continue;
        };
        let side = |l: &[AddressEntry]| -> Vec<Endpoint> {
            l.iter().filter_map(|a| endpoint(a, own, known)).collect()
        };
        let (src, dst) = (side(&r.src_addresses), side(&r.dst_addresses));
        if src.is_empty() || dst.is_empty() {
            continue;
        }
        let direction = if r.direction.as_deref() == Some(">") {
            Direction::OneWay
        } else {
            Direction::Both
        };
        out.push(PolicyRule {
            direction,
            protocol: proto,
            src,
            dst,
            src_ports: ports(&r.src_ports),
            dst_ports: ports(&r.dst_ports),
            action,
            services,
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

    fn entries(v: &Value) -> Entries {
        Entries::parse(Some(v))
    }

    fn all_peers(attached: &[(&str, &Value)]) -> BTreeMap<String, Peers> {
        let k = known();
        attached
            .iter()
            .map(|(vn, p)| (vn.to_string(), peers_of(&[&entries(p)], vn, &k)))
            .collect()
    }

    /// CloudStack's service-chain rule: left to right through `si`.
    fn chain(simple: Option<&str>, si: &str) -> Value {
        let mut r = rule(
            "pass",
            "any",
            json!({"virtual_network": A}),
            json!({"virtual_network": B}),
        );
        r["action_list"] = match simple {
            Some(a) => {
                json!({"simple_action": a, "gateway_name": "in-network", "apply_service": [si]})
            }
            None => json!({"apply_service": [si]}),
        };
        json!({"policy_rule": [r]})
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
        let r: Vec<Value> = resolve_rules(&entries(&p), A, &known())
            .iter()
            .map(|r| serde_json::to_value(r).expect("a rule serialises"))
            .collect();
        assert_eq!(r.len(), 3, "{r:?}");
        assert_eq!(r[2]["action"], json!("deny"), "an unknown action denies");
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

    #[test]
    fn service_rules_connect_nothing_and_never_pass() {
        const SI: &str = "default-domain:default-project:nat-si";
        for simple in [Some("pass"), None] {
            let p = chain(simple, SI);
            // Attached to either side or both: no route leak either way.
            for attached in [vec![(A, &p)], vec![(B, &p)], vec![(A, &p), (B, &p)]] {
                let peers = all_peers(&attached);
                assert!(connected(A, &peers, &eligible()).is_empty(), "{simple:?}");
                assert!(connected(B, &peers, &eligible()).is_empty(), "{simple:?}");
            }
            let e = entries(&p);
            let rules = resolve_rules(&e, A, &known());
            assert_eq!(rules.len(), 1);
            assert_eq!(rules[0].action, Action::Service, "{simple:?}");
            assert_eq!(rules[0].services, vec![SI.to_string()]);
            assert_eq!(
                chains_of("pol", &e, A, &known()),
                vec![ChainRule {
                    policy: "pol".into(),
                    left: A.into(),
                    right: B.into(),
                    instances: vec![SI.into()],
                }]
            );
        }
        // An explicit deny with services stays a deny and makes no chain.
        let p = chain(Some("deny"), SI);
        let e = entries(&p);
        assert_eq!(resolve_rules(&e, A, &known())[0].action, Action::Deny);
        assert!(chains_of("pol", &e, A, &known()).is_empty());
    }

    #[test]
    fn a_rule_that_does_not_parse_is_left_out_not_misread() {
        let p = json!({"policy_rule": [
            {"protocol": 6, "action_list": {"simple_action": "pass"}},
            rule("pass", "any", json!({"virtual_network": "local"}), json!({"virtual_network": B})),
        ]});
        let e = entries(&p);
        assert!(matches!(e.rules[0], Entry::Bad(_)));
        assert_eq!(resolve_rules(&e, A, &known()).len(), 1);
    }
}
