//! Policy rules for the dataplane: the shim's resolved rules expanded to one dataplane rule per
//! address pair and port range, and the rules a VM with a floating IP gets. I/O-free.

use crate::config::Prefix;
use std::net::Ipv4Addr;
use vrouter_api::interface::{Action, AttachedPolicy, Direction, Endpoint};
use vrouter_dataplane::tables::policy::{
    Direction as DpDirection, Endpoint as DpEndpoint, PolicyAction, PolicyRule,
};

/// Most dataplane rules one network's policy expands to (addresses x ports).
pub const MAX_RULES: usize = 4096;

/// The rules appended for a VM with a floating IP (see [`super::ControllerState::build`]):
/// deny to and from each connected prefix, then pass to and from anywhere.
pub fn fip_rules(ip: Ipv4Addr, connected: &[Prefix]) -> Vec<PolicyRule> {
    let rule = |dst, action| PolicyRule {
        direction: DpDirection::Both,
        proto: None,
        src: DpEndpoint::Cidr(u32::from(ip), 32),
        src_ports: PolicyRule::ANY_PORT,
        dst,
        dst_ports: PolicyRule::ANY_PORT,
        action,
    };
    connected
        .iter()
        .map(|p| {
            rule(
                DpEndpoint::Cidr(u32::from(p.addr), p.len),
                PolicyAction::Deny,
            )
        })
        .chain(std::iter::once(rule(DpEndpoint::Any, PolicyAction::Pass)))
        .collect()
}

/// The dataplane endpoints of one rule side. Endpoints without prefixes (a network with no
/// subnets) match nothing and are left out.
fn endpoints(list: &[Endpoint]) -> Vec<DpEndpoint> {
    let mut out = Vec::new();
    for e in list {
        match e.prefixes() {
            None => out.push(DpEndpoint::Any),
            Some(ps) => out.extend(
                ps.iter()
                    .map(|p| DpEndpoint::Cidr(u32::from(p.addr), p.len)),
            ),
        }
    }
    out
}

/// The dataplane action of a rule's action. Only a pass passes: a service rule's traffic goes
/// through the service instance by route, never directly (the rule itself drops with
/// `Service Chain Down`: what reaches the flow stage under it has no instance to go to), and
/// an action this build does not know denies.
pub fn action(a: Action) -> PolicyAction {
    match a {
        Action::Pass => PolicyAction::Pass,
        Action::Service => PolicyAction::NoService,
        Action::Deny | Action::Unknown => PolicyAction::Deny,
    }
}

/// Port ranges of one side; reversed ranges are ignored, and none left means any port.
fn ports(l: &[(u16, u16)]) -> Vec<(u16, u16)> {
    let v: Vec<(u16, u16)> = l.iter().copied().filter(|(a, b)| a <= b).collect();
    if v.is_empty() {
        vec![PolicyRule::ANY_PORT]
    } else {
        v
    }
}

/// Expands the shim's rules to dataplane rules (one per source prefix, destination prefix and
/// port ranges); a rule with a side left empty yields none. A service rule passes when `up`
/// says every chain of its instances in this network is steered through them (their routes
/// send its traffic to the instance, never directly), and is `NoService` otherwise. At most
/// [`MAX_RULES`]: the rest is left out with a warning, so one huge policy cannot exhaust the
/// dataplane's table.
pub fn expand_rules(
    policies: &[AttachedPolicy],
    up: &dyn Fn(&[String]) -> bool,
    warnings: &mut Vec<String>,
) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    for p in policies {
        for r in &p.rules {
            let action = match r.action {
                Action::Service if up(&r.services) => PolicyAction::Pass,
                a => action(a),
            };
            let direction = match r.direction {
                Direction::OneWay => DpDirection::OneWay,
                Direction::Both => DpDirection::Both,
            };
            let (src, dst) = (endpoints(&r.src), endpoints(&r.dst));
            let (sp, dp) = (ports(&r.src_ports), ports(&r.dst_ports));
            for s in &src {
                for d in &dst {
                    for a in &sp {
                        for b in &dp {
                            if out.len() >= MAX_RULES {
                                warnings.push(format!(
                                    "policy {}: more than {MAX_RULES} rules after expansion; the rest are left out",
                                    p.fq_name.join(":")
                                ));
                                return out;
                            }
                            out.push(PolicyRule {
                                direction,
                                proto: r.protocol,
                                src: *s,
                                src_ports: *a,
                                dst: *d,
                                dst_ports: *b,
                                action,
                            });
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_pass_passes_service_and_unknown_actions_never_do() {
        assert_eq!(action(Action::Pass), PolicyAction::Pass);
        assert_eq!(action(Action::Deny), PolicyAction::Deny);
        assert_eq!(action(Action::Service), PolicyAction::NoService);
        assert_eq!(action(Action::Unknown), PolicyAction::Deny);
        let unknown: Action = serde_json::from_str("\"mirror\"").expect("an unknown action parses");
        assert_eq!(action(unknown), PolicyAction::Deny);
    }
}
