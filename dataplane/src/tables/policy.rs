//! Network policies (Contrail's `network-policy`): ordered rules attached to networks, evaluated
//! inline on a flow miss. Rules are compiled per VRF when the configuration changes, so a miss
//! walks a flat list of address masks and port ranges and never touches a map.

use super::flow::FlowDropReason;
use super::{ensure_below, ensure_plen, Limits, Shadow, TableError};
use serde::{Deserialize, Serialize};

/// Which packets a rule's endpoints describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// `>`: from `src` to `dst` only.
    OneWay,
    /// `<>`: either way (the rule also matches with source and destination swapped).
    Both,
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyAction {
    /// Permit: the flow forwards.
    Pass,
    /// Deny: the flow drops (`Flow Action Drop`, flow reason `Policy`).
    Deny,
    /// The rule applies a service (service chain) that has no running instance: the flow drops
    /// (`Service Chain Down`, flow reason `NoService`). Never passes: the networks are not
    /// connected directly.
    NoService,
}

/// One side of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Endpoint {
    /// Any address.
    Any,
    /// The subnets of the network whose VRF this is (see [`VrfPolicy::subnets`]).
    Network(u16),
    /// An IPv4 prefix (address, length).
    Cidr(u32, u8),
}

/// One rule. Ports are inclusive ranges; `(0, 65535)` is any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRule {
    /// `>` or `<>`.
    pub direction: Direction,
    /// IP protocol number, `None` for any.
    pub proto: Option<u8>,
    /// Source.
    pub src: Endpoint,
    /// Source ports.
    pub src_ports: (u16, u16),
    /// Destination.
    pub dst: Endpoint,
    /// Destination ports.
    pub dst_ports: (u16, u16),
    /// Pass or deny.
    pub action: PolicyAction,
}

impl PolicyRule {
    /// Every port.
    pub const ANY_PORT: (u16, u16) = (0, u16::MAX);
}

/// A named, ordered rule list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Id.
    pub id: u32,
    /// Name (Contrail: the policy's fq_name).
    pub name: String,
    /// Rules, first match wins.
    pub rules: Vec<PolicyRule>,
}

/// Flow processing and policy of one VRF (Contrail: the VN's policy flag, its attached
/// network-policies and its IPAM subnets). A VRF with one of these runs every packet through the
/// flow table; a VRF without runs none (the fast path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VrfPolicy {
    /// The network's own prefixes: `Network(vrf)` endpoints match them, and traffic with both
    /// ends inside them is intra-network and always allowed.
    pub subnets: Vec<(u32, u8)>,
    /// Attached policy ids, in evaluation order.
    pub policies: Vec<u32>,
    /// Most flow entries (a forward/reverse pair is two) this VRF may hold; 0 means a quarter
    /// of the table.
    pub max_flows: u32,
}

/// A 5-tuple as policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    /// Protocol.
    pub proto: u8,
    /// Source address.
    pub src: u32,
    /// Destination address.
    pub dst: u32,
    /// Source port (ICMP: echo id).
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

#[derive(Debug, Clone, Default)]
struct Prefixes {
    any: bool,
    /// (address, mask).
    list: Vec<(u32, u32)>,
}

impl Prefixes {
    #[inline]
    fn contains(&self, a: u32) -> bool {
        self.any || self.list.iter().any(|&(p, m)| a & m == p)
    }
}

#[derive(Debug, Clone)]
struct Compiled {
    both: bool,
    proto: Option<u8>,
    src: Prefixes,
    sp: (u16, u16),
    dst: Prefixes,
    dp: (u16, u16),
    action: PolicyAction,
}

impl Compiled {
    #[inline]
    fn matches_one_way(&self, t: &Tuple) -> bool {
        self.src.contains(t.src)
            && self.dst.contains(t.dst)
            && (self.sp.0..=self.sp.1).contains(&t.sport)
            && (self.dp.0..=self.dp.1).contains(&t.dport)
    }

    #[inline]
    fn matches(&self, t: &Tuple) -> bool {
        if self.proto.is_some_and(|p| p != t.proto) {
            return false;
        }
        self.matches_one_way(t)
            || (self.both
                && self.matches_one_way(&Tuple {
                    proto: t.proto,
                    src: t.dst,
                    dst: t.src,
                    sport: t.dport,
                    dport: t.sport,
                }))
    }
}

/// A VRF's policy, compiled: what the pipeline evaluates on a flow miss.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    own: Prefixes,
    rules: Vec<Compiled>,
    /// Entry limit for this VRF (0 resolved to the table's default share by the flow table).
    pub max_flows: u32,
}

/// Mask of a prefix length (clamped to 32).
fn mask(plen: u8) -> u32 {
    super::fib::prefix_mask(plen)
}

impl CompiledPolicy {
    /// Compiles `cfg`: policy ids resolve through `policy`, `Network` endpoints through `subnets`
    /// (a network with no flow configuration has no subnets here and so matches nothing).
    pub fn compile<'a>(
        cfg: &VrfPolicy,
        policy: impl Fn(u32) -> Option<&'a Policy>,
        subnets: impl Fn(u16) -> Option<&'a [(u32, u8)]>,
    ) -> Self {
        let prefixes = |e: &Endpoint| match *e {
            Endpoint::Any => Prefixes {
                any: true,
                list: Vec::new(),
            },
            Endpoint::Cidr(a, l) => Prefixes {
                any: false,
                list: vec![(a & mask(l), mask(l))],
            },
            Endpoint::Network(v) => Prefixes {
                any: false,
                list: subnets(v)
                    .unwrap_or(&[])
                    .iter()
                    .map(|&(a, l)| (a & mask(l), mask(l)))
                    .collect(),
            },
        };
        let rules = cfg
            .policies
            .iter()
            .filter_map(|id| policy(*id))
            .flat_map(|p| p.rules.iter())
            .map(|r| Compiled {
                both: r.direction == Direction::Both,
                proto: r.proto,
                src: prefixes(&r.src),
                sp: r.src_ports,
                dst: prefixes(&r.dst),
                dp: r.dst_ports,
                action: r.action,
            })
            .collect();
        Self {
            own: Prefixes {
                any: false,
                list: cfg
                    .subnets
                    .iter()
                    .map(|&(a, l)| (a & mask(l), mask(l)))
                    .collect(),
            },
            rules,
            max_flows: cfg.max_flows,
        }
    }

    /// Whether `t` may start a flow: intra-network traffic always may; otherwise the first
    /// matching rule decides, and no match denies (networks are isolated by default).
    pub fn permits(&self, t: &Tuple) -> bool {
        self.verdict(t).is_none()
    }

    /// [`Self::permits`] with the reason of a refusal: `None` permits.
    pub fn verdict(&self, t: &Tuple) -> Option<FlowDropReason> {
        if self.own.contains(t.src) && self.own.contains(t.dst) {
            return None;
        }
        match self.rules.iter().find(|r| r.matches(t)).map(|r| r.action) {
            Some(PolicyAction::Pass) => None,
            Some(PolicyAction::NoService) => Some(FlowDropReason::NoService),
            Some(PolicyAction::Deny) | None => Some(FlowDropReason::Policy),
        }
    }
}

impl Shadow {
    /// A `SetPolicy`: every rule must be well formed (the networks it names need not be
    /// configured yet).
    pub(super) fn set_policy(&mut self, l: &Limits, p: &Policy) -> Result<(), TableError> {
        for rule in &p.rules {
            check_rule(l, rule)?;
        }
        self.policies.insert(p.id);
        Ok(())
    }

    /// A `DelPolicy`: refused while a VRF uses the policy.
    pub(super) fn del_policy(&mut self, id: u32) -> Result<(), TableError> {
        if !self.policies.contains(&id) {
            return Err(TableError::NotFound {
                what: "policy",
                id: id.into(),
            });
        }
        if let Some((vrf, _)) = self.attached.iter().find(|(_, p)| p.contains(&id)) {
            return Err(TableError::InUse {
                what: "policy",
                id: id.into(),
                by: format!("vrf {vrf}"),
            });
        }
        self.policies.remove(&id);
        Ok(())
    }

    /// A `SetVrfPolicy`: the VRF and every policy attached must exist, and the subnets be
    /// prefixes. Recorded so a policy in use cannot be deleted.
    pub(super) fn set_vrf_policy(
        &mut self,
        l: &Limits,
        vrf: u16,
        policy: Option<&VrfPolicy>,
    ) -> Result<(), TableError> {
        self.vrf_exists(l, vrf)?;
        let Some(p) = policy else {
            self.attached.remove(&vrf);
            return Ok(());
        };
        if let Some(id) = p.policies.iter().find(|id| !self.policies.contains(id)) {
            return Err(TableError::NotFound {
                what: "policy",
                id: (*id).into(),
            });
        }
        for &(_, plen) in &p.subnets {
            ensure_plen(plen)?;
        }
        self.attached.insert(vrf, p.policies.clone());
        Ok(())
    }
}

/// One rule of a policy: endpoints in range and port ranges low..=high.
fn check_rule(l: &Limits, r: &PolicyRule) -> Result<(), TableError> {
    for e in [r.src, r.dst] {
        match e {
            Endpoint::Network(vrf) => ensure_below("vrf", vrf.into(), l.vrfs.into())?,
            Endpoint::Cidr(_, plen) => ensure_plen(plen)?,
            Endpoint::Any => {}
        }
    }
    if r.src_ports.0 > r.src_ports.1 || r.dst_ports.0 > r.dst_ports.1 {
        return Err(TableError::Invalid {
            what: "port range",
            why: format!("{:?} / {:?} not low..=high", r.src_ports, r.dst_ports),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn ip(a: u8, b: u8, c: u8, d: u8) -> u32 {
        u32::from_be_bytes([a, b, c, d])
    }

    #[test]
    fn first_match_wins_default_deny_intra_allowed() {
        let pol = Policy {
            id: 1,
            name: "p".into(),
            rules: vec![
                PolicyRule {
                    direction: Direction::Both,
                    proto: Some(6),
                    src: Endpoint::Network(1),
                    src_ports: PolicyRule::ANY_PORT,
                    dst: Endpoint::Network(3),
                    dst_ports: (22, 22),
                    action: PolicyAction::Deny,
                },
                PolicyRule {
                    direction: Direction::Both,
                    proto: None,
                    src: Endpoint::Network(1),
                    src_ports: PolicyRule::ANY_PORT,
                    dst: Endpoint::Network(3),
                    dst_ports: PolicyRule::ANY_PORT,
                    action: PolicyAction::Pass,
                },
            ],
        };
        let vn1 = [(ip(10, 1, 1, 0), 24)];
        let vn2 = [(ip(10, 2, 2, 0), 24)];
        let cfg = VrfPolicy {
            subnets: vn1.to_vec(),
            policies: vec![1],
            max_flows: 0,
        };
        let c = CompiledPolicy::compile(
            &cfg,
            |id| (id == 1).then_some(&pol),
            |v| match v {
                1 => Some(&vn1[..]),
                3 => Some(&vn2[..]),
                _ => None,
            },
        );
        let t = |proto, src, dst, dport| Tuple {
            proto,
            src,
            dst,
            sport: 40000,
            dport,
        };
        assert!(!c.permits(&t(6, ip(10, 1, 1, 3), ip(10, 2, 2, 3), 22)));
        assert!(c.permits(&t(6, ip(10, 1, 1, 3), ip(10, 2, 2, 3), 80)));
        // `<>`: the other way matches too (ports swapped).
        assert!(c.permits(&Tuple {
            proto: 17,
            src: ip(10, 2, 2, 3),
            dst: ip(10, 1, 1, 3),
            sport: 53,
            dport: 40000
        }));
        assert!(c.permits(&t(6, ip(10, 1, 1, 3), ip(10, 1, 1, 4), 22)));
        assert!(!c.permits(&t(6, ip(10, 1, 1, 3), ip(8, 8, 8, 8), 80)));
    }

    #[test]
    fn a_service_rule_without_instance_drops_with_its_own_reason_and_shadows_later_passes() {
        let rule = |action| PolicyRule {
            direction: Direction::Both,
            proto: None,
            src: Endpoint::Cidr(ip(10, 1, 1, 0), 24),
            src_ports: PolicyRule::ANY_PORT,
            dst: Endpoint::Cidr(ip(10, 2, 2, 0), 24),
            dst_ports: PolicyRule::ANY_PORT,
            action,
        };
        let pol = Policy {
            id: 1,
            name: "chain".into(),
            rules: vec![rule(PolicyAction::NoService), rule(PolicyAction::Pass)],
        };
        let cfg = VrfPolicy {
            subnets: vec![(ip(10, 1, 1, 0), 24)],
            policies: vec![1],
            max_flows: 0,
        };
        let c = CompiledPolicy::compile(&cfg, |id| (id == 1).then_some(&pol), |_| None);
        let t = |src, dst| Tuple {
            proto: 6,
            src,
            dst,
            sport: 40000,
            dport: 80,
        };
        for (s, d) in [
            (ip(10, 1, 1, 3), ip(10, 2, 2, 3)),
            (ip(10, 2, 2, 3), ip(10, 1, 1, 3)),
        ] {
            assert!(!c.permits(&t(s, d)));
            assert_eq!(c.verdict(&t(s, d)), Some(FlowDropReason::NoService));
        }
        assert_eq!(
            FlowDropReason::NoService.counter(),
            crate::drop::DropReason::ServiceChainDown
        );
        assert_eq!(c.verdict(&t(ip(10, 1, 1, 3), ip(10, 1, 1, 4))), None);
        assert_eq!(
            c.verdict(&t(ip(10, 1, 1, 3), ip(8, 8, 8, 8))),
            Some(FlowDropReason::Policy)
        );
    }
}
