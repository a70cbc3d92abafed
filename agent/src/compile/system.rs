//! CloudStack's system networks (issue 19): the interfaces of system VMs (secondary storage,
//! console proxy, the VPC internal load balancer) on the networks the plugin maps to Contrail's
//! `ip-fabric` (Management, Storage) and `__link_local__` (Control). Recognised by their VRF
//! name, as the shim and CloudStack spell them.
//!
//! * **ip-fabric**: the VM is on the underlay. Its vif is in the fabric VRF (VRF 0) with its /32
//!   there (proxy ARP); the dataplane routes underlay traffic for it in and lets it out to the
//!   underlay (see the dataplane's `pipeline::system`). No label, no advertisement: other
//!   hosts reach it over the underlay, never through a tunnel.
//! * **link-local**: host-local. dom0's link-local interface (a tap, `xapi0` by default, at
//!   169.254.0.1/16, vif kind `XenLL`) sits in the link-local VRF, which holds every system
//!   VM's link-local /32; each VM's link-local vif has a VRF of its own holding only dom0's
//!   address. So dom0 reaches every VM and each VM reaches dom0, but no VM reaches another's
//!   link-local address, and no route of either kind exists in any tenant VRF or leaves the
//!   host. An address outside 169.254.0.0/16 leaves the interface unbound with a warning.

use super::{encap_key, Binding, Builder};
use crate::config::{Interface, Prefix};
use crate::dump::DumpIndex;
use std::net::Ipv4Addr;
use vrouter_dataplane::tables::{NexthopSpec, Route, VifKind, VifSpec, FABRIC_VRF, VROUTER_MAC};
use vrouter_dataplane::wire::MacAddr;

/// The VRF name of CloudStack's Management / Storage networks.
pub const IP_FABRIC_VRF: &str = "default-domain:default-project:ip-fabric";
/// The VRF name of CloudStack's Control network (dom0's link-local VRF).
pub const LINK_LOCAL_VRF: &str = "default-domain:default-project:__link_local__";
/// The link-local range (RFC 3927).
pub const LINK_LOCAL_NET: Prefix = Prefix {
    addr: Ipv4Addr::new(169, 254, 0, 0),
    len: 16,
};

/// A system network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemNet {
    /// `ip-fabric`: on the underlay, in the fabric VRF.
    IpFabric,
    /// `__link_local__`: host-local, reached from dom0's link-local interface.
    LinkLocal,
}

impl SystemNet {
    /// The system network a VRF name is, if any.
    pub fn of_vrf(vrf: &str) -> Option<Self> {
        match vrf {
            IP_FABRIC_VRF => Some(SystemNet::IpFabric),
            LINK_LOCAL_VRF => Some(SystemNet::LinkLocal),
            _ => None,
        }
    }

    /// How `vrctl` and the logs name it.
    pub fn name(self) -> &'static str {
        match self {
            SystemNet::IpFabric => "ip-fabric",
            SystemNet::LinkLocal => "link-local",
        }
    }
}

/// dom0's link-local interface: a tap the agent creates (see [`crate::linklocal`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkLocalHost {
    /// Device name (`xapi0`).
    pub name: String,
    /// dom0's address on it (169.254.0.1).
    pub addr: Ipv4Addr,
    /// Its prefix length (16).
    pub plen: u8,
    /// The tap's MAC, once the tap exists; until then link-local interfaces stay unbound.
    pub mac: Option<MacAddr>,
    /// Why the tap is not there (for the interfaces' warnings).
    pub error: Option<String>,
}

impl Default for LinkLocalHost {
    fn default() -> Self {
        Self {
            name: "xapi0".into(),
            addr: Ipv4Addr::new(169, 254, 0, 1),
            plen: 16,
            mac: None,
            error: None,
        }
    }
}

/// What the host provides for system networks (given to [`super::compile_with`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemHost {
    /// dom0's link-local interface; `None`: link-local interfaces are not served.
    pub link_local: Option<LinkLocalHost>,
}

/// The VRF of one VM's link-local interface (holds dom0's address only).
pub fn link_local_vm_vrf(ifname: &str) -> String {
    format!("{LINK_LOCAL_VRF}/{ifname}")
}

/// A route to a local nexthop that the dataplane answers ARP for.
fn proxied(nh: u32) -> Route {
    Route {
        nh,
        label: None,
        proxy_arp: true,
    }
}

impl<'a> Builder<'a> {
    /// The system network interface `i` is on, if any.
    pub(super) fn system_net(&self, i: &Interface) -> Option<SystemNet> {
        SystemNet::of_vrf(&self.cfg.network(&i.network)?.vrf)
    }

    /// Link-local interfaces whose address is in 169.254.0.0/16.
    fn link_local_interfaces(&self) -> impl Iterator<Item = &'a Interface> + '_ {
        self.cfg.interfaces.iter().filter(move |i| {
            self.system_net(i) == Some(SystemNet::LinkLocal) && LINK_LOCAL_NET.contains(i.ip)
        })
    }

    /// dom0's link-local interface, if some link-local interface needs it and the tap exists.
    fn link_local_host(&self) -> Option<(&'a LinkLocalHost, MacAddr)> {
        let ll = self.sys.link_local.as_ref()?;
        let mac = ll.mac?;
        self.link_local_interfaces().next()?;
        Some((ll, mac))
    }

    /// VRFs the system networks add: one per link-local VM interface (adopted by name).
    pub(super) fn system_vrf_wants(&self, dp: &DumpIndex) -> Vec<(String, Option<u16>)> {
        if self.link_local_host().is_none() {
            return Vec::new();
        }
        self.link_local_interfaces()
            .map(|i| {
                let name = link_local_vm_vrf(&i.name);
                let adopt = dp.vrf_by_name.get(&name).copied();
                (name, adopt)
            })
            .collect()
    }

    /// Whether network `vrf` lives in the fabric VRF (so gets no VRF of its own).
    pub(super) fn in_fabric_vrf(vrf: &str) -> bool {
        SystemNet::of_vrf(vrf) == Some(SystemNet::IpFabric)
    }

    /// dom0's link-local vif, adopted by name if the dataplane's is one.
    pub(super) fn system_vif_wants(&self, dp: &DumpIndex) -> Vec<(String, Option<u16>)> {
        let Some((ll, _)) = self.link_local_host() else {
            return Vec::new();
        };
        let adopt = dp
            .vif_by_name
            .get(&ll.name)
            .filter(|v| v.kind == VifKind::XenLinkLocal)
            .map(|v| v.id);
        vec![(ll.name.clone(), adopt)]
    }

    /// The name of dom0's link-local interface, if it is programmed (its Encap nexthop is
    /// wanted like a VM interface's).
    pub(super) fn system_encap_names(&self) -> Vec<String> {
        self.link_local_host()
            .map(|(ll, _)| ll.name.clone())
            .into_iter()
            .collect()
    }

    /// Names kept in the allocations besides the config's: (VRFs, vifs).
    pub(super) fn system_alloc_names(&self) -> (Vec<String>, Vec<String>) {
        if self.link_local_host().is_none() {
            return (Vec::new(), Vec::new());
        }
        let vrfs = self
            .link_local_interfaces()
            .map(|i| link_local_vm_vrf(&i.name))
            .collect();
        (vrfs, self.system_encap_names())
    }

    /// dom0's link-local vif and its Encap nexthop.
    pub(super) fn link_local_host_vif(&mut self) {
        let Some((ll, mac)) = self.link_local_host() else {
            return;
        };
        let (Some(&vif), Some(&vrf), Some(&nh)) = (
            self.alloc.vifs.get(&ll.name),
            self.alloc.vrfs.get(LINK_LOCAL_VRF),
            self.alloc.nhs.get(&encap_key(&ll.name)),
        ) else {
            return;
        };
        let want = &mut self.out.desired;
        want.vifs.insert(
            vif,
            VifSpec {
                id: vif,
                name: ll.name.clone(),
                kind: VifKind::XenLinkLocal,
                vrf,
                mac,
                ip: u32::from(ll.addr),
                mtu: 1500,
                nh: Some(nh),
                allowed: Vec::new(),
            },
        );
        want.nhs.insert(
            nh,
            NexthopSpec::Encap {
                oif: vif,
                dmac: mac,
                smac: VROUTER_MAC,
            },
        );
    }

    /// A system-network interface: programmed here (true), or left unbound with a warning
    /// (also true). False for any other interface.
    pub(super) fn system_interface(&mut self, i: &'a Interface) -> bool {
        let Some(net) = self.system_net(i) else {
            return false;
        };
        if let Err(why) = self.try_system_interface(i, net) {
            self.out.warnings.push(format!(
                "interface {:?} on {} ({}): {why}; left unbound",
                i.name,
                net.name(),
                i.ip
            ));
        }
        true
    }

    fn try_system_interface(&mut self, i: &'a Interface, net: SystemNet) -> Result<(), String> {
        let vrf = match net {
            SystemNet::IpFabric => FABRIC_VRF,
            SystemNet::LinkLocal => self.link_local_vrf(i)?,
        };
        let (Some(&vif), Some(&nh)) = (
            self.alloc.vifs.get(&i.name),
            self.alloc.nhs.get(&encap_key(&i.name)),
        ) else {
            return Err("no ids allocated".into());
        };
        let want = &mut self.out.desired;
        want.vifs.insert(
            vif,
            VifSpec {
                id: vif,
                name: i.name.clone(),
                kind: VifKind::Virtual,
                vrf,
                mac: i.mac,
                ip: u32::from(i.ip),
                mtu: i.mtu,
                nh: Some(nh),
                allowed: Vec::new(),
            },
        );
        want.nhs.insert(
            nh,
            NexthopSpec::Encap {
                oif: vif,
                dmac: i.mac,
                smac: VROUTER_MAC,
            },
        );
        match net {
            SystemNet::IpFabric => {
                want.routes
                    .insert((FABRIC_VRF, u32::from(i.ip), 32), proxied(nh));
            }
            SystemNet::LinkLocal => self.link_local_routes(i, vrf, nh)?,
        }
        self.out.bindings.push(Binding {
            name: i.name.clone(),
            network: i.network.clone(),
            vif,
            vrf,
            nh,
            label: 0,
        });
        Ok(())
    }

    /// The VRF of link-local interface `i`, or why it cannot be programmed.
    fn link_local_vrf(&mut self, i: &Interface) -> Result<u16, String> {
        if !LINK_LOCAL_NET.contains(i.ip) {
            return Err(format!(
                "a link-local address must be in {LINK_LOCAL_NET}, {} is not",
                i.ip
            ));
        }
        let Some(ll) = self.sys.link_local.as_ref() else {
            return Err(
                "this agent serves no link-local interface (--link-local-interface none)".into(),
            );
        };
        if ll.mac.is_none() {
            let why = ll.error.as_deref().unwrap_or("not created yet");
            return Err(format!(
                "dom0's link-local interface {} is not available: {why}",
                ll.name
            ));
        }
        if i.ip == ll.addr {
            return Err(format!("{} is dom0's own link-local address", i.ip));
        }
        let name = link_local_vm_vrf(&i.name);
        let id = *self.alloc.vrfs.get(&name).ok_or("no VRF allocated")?;
        self.out.desired.vrfs.insert(id, name);
        Ok(id)
    }

    /// dom0 -> the VM (its /32 in the link-local VRF) and the VM -> dom0 (dom0's /32 in the
    /// VM's own VRF), both answered by proxy ARP.
    fn link_local_routes(&mut self, i: &Interface, vm_vrf: u16, nh: u32) -> Result<(), String> {
        let (Some(ll), Some(&ll_vrf)) = (
            self.sys.link_local.as_ref(),
            self.alloc.vrfs.get(LINK_LOCAL_VRF),
        ) else {
            return Err("no link-local VRF allocated".into());
        };
        let ll_nh = *self
            .alloc
            .nhs
            .get(&encap_key(&ll.name))
            .ok_or("no nexthop allocated for dom0's link-local interface")?;
        let want = &mut self.out.desired;
        want.routes
            .insert((ll_vrf, u32::from(i.ip), 32), proxied(nh));
        want.routes
            .insert((vm_vrf, u32::from(ll.addr), 32), proxied(ll_nh));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc::Allocations;
    use crate::compile::compile_with;
    use crate::config::Config;
    use crate::reconcile::reconcile;
    use crate::testkit::MemDataplane;
    use vrouter_dataplane::tables::Limits;

    const CFG: &str = r#"
[[networks]]
name = "ip-fabric"
vrf = "default-domain:default-project:ip-fabric"
[[networks]]
name = "link-local"
vrf = "default-domain:default-project:__link_local__"
[[networks]]
name = "net1"
subnet = "10.1.1.0/24"

[[interfaces]]
name = "vif1.0"
mac = "06:00:0a:00:00:32"
ip = "10.0.0.50"
network = "ip-fabric"
[[interfaces]]
name = "vif1.1"
mac = "0e:00:a9:fe:03:04"
ip = "169.254.3.4"
network = "link-local"
[[interfaces]]
name = "vif2.1"
mac = "0e:00:a9:fe:03:05"
ip = "169.254.3.5"
network = "link-local"
[[interfaces]]
name = "vif3.0"
mac = "0e:00:0a:09:09:09"
ip = "10.9.9.9"
network = "link-local"
[[interfaces]]
name = "vif4.0"
mac = "02:00:00:00:04:00"
ip = "10.1.1.4"
network = "net1"
"#;

    const TAP_MAC: MacAddr = MacAddr([0x5a, 0, 0, 0, 0, 1]);

    fn host() -> SystemHost {
        SystemHost {
            link_local: Some(LinkLocalHost {
                mac: Some(TAP_MAC),
                ..LinkLocalHost::default()
            }),
        }
    }

    /// Compiles CFG against an in-memory dataplane, applies the result and returns it.
    fn programmed(sys: &SystemHost) -> (super::super::Compiled, MemDataplane) {
        let cfg = Config::parse(CFG).expect("config");
        let mut dp = MemDataplane::new(u32::from(Ipv4Addr::new(10, 0, 0, 1)));
        let idx = DumpIndex::new(dp.dump());
        let mut alloc = Allocations::default();
        let c = compile_with(&cfg, &idx, &mut alloc, &Limits::default(), sys).expect("ids");
        dp.apply(reconcile(&c.desired, &idx))
            .expect("the dataplane takes it");
        (c, dp)
    }

    fn route(dp: &mut MemDataplane, vrf: u16, addr: [u8; 4]) -> Option<u32> {
        let a = u32::from(Ipv4Addr::from(addr));
        dp.dump()
            .routes
            .iter()
            .find(|r| r.vrf == vrf && r.prefix == a && r.plen == 32)
            .map(|r| r.route.nh)
    }

    #[test]
    fn ip_fabric_is_a_proxied_32_in_the_fabric_vrf_without_a_label() {
        let (c, mut dp) = programmed(&host());
        let b = c
            .bindings
            .iter()
            .find(|b| b.name == "vif1.0")
            .expect("bound");
        assert_eq!((b.vrf, b.label), (FABRIC_VRF, 0));
        assert_eq!(route(&mut dp, FABRIC_VRF, [10, 0, 0, 50]), Some(b.nh));
        assert!(!dp.dump().labels.iter().any(|(_, nh)| *nh == b.nh));
        // The tenant VRF has none of it.
        let net1 = c
            .bindings
            .iter()
            .find(|b| b.name == "vif4.0")
            .expect("bound")
            .vrf;
        assert_eq!(route(&mut dp, net1, [10, 0, 0, 50]), None);
    }

    #[test]
    fn link_local_vms_reach_dom0_and_dom0_reaches_each_but_not_each_other() {
        let (c, mut dp) = programmed(&host());
        let d = dp.dump();
        let xapi = d.vifs.iter().find(|v| v.name == "xapi0").expect("tap vif");
        assert_eq!(xapi.kind, VifKind::XenLinkLocal);
        assert_eq!(
            (xapi.mac, xapi.ip),
            (TAP_MAC, u32::from(Ipv4Addr::new(169, 254, 0, 1)))
        );
        let b1 = c
            .bindings
            .iter()
            .find(|b| b.name == "vif1.1")
            .expect("vif1.1");
        let b2 = c
            .bindings
            .iter()
            .find(|b| b.name == "vif2.1")
            .expect("vif2.1");
        assert_ne!(b1.vrf, b2.vrf);
        // dom0's VRF: both VMs.
        assert_eq!(route(&mut dp, xapi.vrf, [169, 254, 3, 4]), Some(b1.nh));
        assert_eq!(route(&mut dp, xapi.vrf, [169, 254, 3, 5]), Some(b2.nh));
        // Each VM's VRF: dom0 only.
        for b in [b1, b2] {
            assert_eq!(route(&mut dp, b.vrf, [169, 254, 0, 1]), xapi.nh);
            let n = dp.dump().routes.iter().filter(|r| r.vrf == b.vrf).count();
            assert_eq!(n, 1, "VRF {} holds dom0's /32 only", b.vrf);
        }
    }

    #[test]
    fn an_address_outside_169_254_leaves_the_interface_unbound_and_the_rest_bound() {
        let (c, dp_) = programmed(&host());
        drop(dp_);
        assert!(!c.bindings.iter().any(|b| b.name == "vif3.0"));
        assert_eq!(c.bindings.len(), 4, "{:?}", c.bindings);
        assert!(
            c.warnings.iter().any(|w| w
                == "interface \"vif3.0\" on link-local (10.9.9.9): a link-local address must be \
                    in 169.254.0.0/16, 10.9.9.9 is not; left unbound"),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn a_restarted_agent_changes_nothing_and_a_removed_interface_leaves_no_route() {
        let (_, mut dp) = programmed(&host());
        // Restart without a state file: everything adopted, nothing to do.
        let cfg = Config::parse(CFG).expect("config");
        let idx = DumpIndex::new(dp.dump());
        let mut fresh = Allocations::default();
        let c = compile_with(&cfg, &idx, &mut fresh, &Limits::default(), &host()).expect("ids");
        assert_eq!(reconcile(&c.desired, &idx), vec![]);
        // The system VM goes: its fabric-VRF /32, both link-local routes of vif1.1 and its
        // VRF go; vif2.1 and dom0's tap stay.
        let mut cfg = cfg;
        cfg.interfaces
            .retain(|i| i.name != "vif1.0" && i.name != "vif1.1");
        let c = compile_with(&cfg, &idx, &mut fresh, &Limits::default(), &host()).expect("ids");
        dp.apply(reconcile(&c.desired, &idx)).expect("applied");
        let d = dp.dump();
        assert!(!d.routes.iter().any(|r| r.vrf == FABRIC_VRF
            && r.plen == 32
            && r.prefix == u32::from(Ipv4Addr::new(10, 0, 0, 50))));
        assert!(!d
            .routes
            .iter()
            .any(|r| r.prefix == u32::from(Ipv4Addr::new(169, 254, 3, 4))));
        assert!(!d.vrfs.iter().any(|v| v.name == link_local_vm_vrf("vif1.1")));
        assert!(d.vifs.iter().any(|v| v.name == "xapi0"));
        assert!(d.vrfs.iter().any(|v| v.name == link_local_vm_vrf("vif2.1")));
        let idx = DumpIndex::new(dp.dump());
        let c = compile_with(&cfg, &idx, &mut fresh, &Limits::default(), &host()).expect("ids");
        assert_eq!(reconcile(&c.desired, &idx), vec![], "converged");
    }

    #[test]
    fn without_dom0_tap_link_local_interfaces_wait_with_the_reason() {
        let sys = SystemHost {
            link_local: Some(LinkLocalHost {
                error: Some("TUNSETIFF on xapi0: Operation not permitted".into()),
                ..LinkLocalHost::default()
            }),
        };
        let (c, mut dp) = programmed(&sys);
        assert!(!c.bindings.iter().any(|b| b.name == "vif1.1"));
        assert!(c.bindings.iter().any(|b| b.name == "vif1.0"));
        assert!(!dp.dump().vifs.iter().any(|v| v.name == "xapi0"));
        assert!(
            c.warnings.iter().any(|w| w.contains(
                "dom0's link-local interface xapi0 is not available: TUNSETIFF on xapi0: Operation not permitted"
            )),
            "{:?}",
            c.warnings
        );
    }
}
