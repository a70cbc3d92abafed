//! The devcloud's plan: which namespaces, addresses, MACs and UUIDs exist for a given size.
//! Pure data, computed the same way by `up`, `status` and `down`.

use serde::{Deserialize, Serialize};

/// Prefix of every namespace, link and file the devcloud creates, so `down` finds them all.
pub const PREFIX: &str = "dc";

/// Underlay subnet (inside the devcloud's own namespaces only).
pub const UNDERLAY_NET: [u8; 3] = [172, 30, 0];

/// Where the devcloud keeps its state, sockets and logs.
pub const RUN_DIR: &str = "/run/vrouter-devcloud";

/// A compute host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Host {
    /// Index from 1.
    pub index: usize,
    /// Hostname (= namespace name).
    pub name: String,
    /// Underlay (fabric) address.
    pub fabric_ip: String,
}

/// A guest network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Network {
    /// CloudStack network name.
    pub name: String,
    /// Contrail virtual-network UUID (CloudStack's network UUID).
    pub uuid: String,
    /// Subnet prefix, e.g. 10.1.1.0.
    pub subnet: String,
    /// Prefix length.
    pub plen: u8,
    /// Gateway.
    pub gateway: String,
}

/// A VM with one Nic.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Vm {
    /// Index from 1 (also its Xen domid).
    pub index: usize,
    /// CloudStack instance name (`i-2-<n>-VM`), also the namespace suffix.
    pub name: String,
    /// VM UUID.
    pub uuid: String,
    /// Nic (virtual-machine-interface) UUID.
    pub nic_uuid: String,
    /// XAPI VIF UUID (what the hotplug hook is called with).
    pub xapi_vif_uuid: String,
    /// Host index it runs on.
    pub host: usize,
    /// Network index.
    pub network: usize,
}

impl Vm {
    /// The VM's namespace.
    pub fn netns(&self) -> String {
        format!("{PREFIX}-{}", self.name)
    }
    /// The dom0 device (`vif<domid>.<devid>`).
    pub fn vif(&self) -> String {
        format!("vif{}.0", self.index)
    }
}

/// The whole plan.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Plan {
    /// Compute hosts.
    pub hosts: Vec<Host>,
    /// Guest networks (two).
    pub networks: Vec<Network>,
    /// VMs, spread over hosts and networks.
    pub vms: Vec<Vm>,
    /// The public network's floating-IP subnet.
    pub public_subnet: String,
    /// Controller's underlay address.
    pub controller_ip: String,
    /// Gateway's underlay address.
    pub gateway_ip: String,
    /// Address standing for "the internet" behind the gateway: the public-network Nic of a
    /// router VM bound on the gateway host (CloudStack gives its virtual routers such Nics).
    pub outside_ip: String,
    /// The gateway host (runs the same stack as a compute host).
    pub gateway: Host,
    /// The router VM on the gateway, the outside world's end of the public network.
    pub outside_vm: Vm,
}

/// A deterministic UUID (v4 layout) from a label, so reruns name things identically.
pub fn uuid_for(label: &str) -> String {
    // FNV-1a 128 over the label, then set the version/variant bits.
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in label.bytes() {
        h ^= u128::from(b);
        h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    let mut b = h.to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x: String = b.iter().map(|v| format!("{v:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

impl Plan {
    /// The plan for `hosts` compute hosts and `vms` VMs (at least one VM per host per network
    /// for the first 2×hosts VMs, so both networks span hosts).
    pub fn new(hosts: usize, vms: usize) -> Self {
        let ul = |i: usize| {
            format!(
                "{}.{}.{}.{}",
                UNDERLAY_NET[0], UNDERLAY_NET[1], UNDERLAY_NET[2], i
            )
        };
        let hosts: Vec<Host> = (1..=hosts)
            .map(|i| Host {
                index: i,
                name: format!("{PREFIX}-h{i}"),
                fabric_ip: ul(10 + i),
            })
            .collect();
        let networks = vec![
            Network {
                name: "guest-a".into(),
                uuid: uuid_for("net-guest-a"),
                subnet: "10.1.1.0".into(),
                plen: 24,
                gateway: "10.1.1.1".into(),
            },
            Network {
                name: "guest-b".into(),
                uuid: uuid_for("net-guest-b"),
                subnet: "10.2.2.0".into(),
                plen: 24,
                gateway: "10.2.2.1".into(),
            },
            Network {
                name: "guest-c".into(),
                uuid: uuid_for("net-guest-c"),
                subnet: "10.3.3.0".into(),
                plen: 24,
                gateway: "10.3.3.1".into(),
            },
        ];
        let nh = hosts.len().max(1);
        let vms = (1..=vms)
            .map(|i| Vm {
                index: i,
                name: format!("i-2-{i}-VM"),
                uuid: uuid_for(&format!("vm-{i}")),
                nic_uuid: uuid_for(&format!("nic-{i}")),
                xapi_vif_uuid: uuid_for(&format!("xapi-vif-{i}")),
                // VM 1 on host 1, VM 2 on host 2, ...; networks alternate every `hosts` VMs so
                // each network has VMs on every host.
                host: (i - 1) % nh + 1,
                network: ((i - 1) / nh) % 2,
            })
            .chain(std::iter::once(Vm {
                // One more VM in guest-c (no policy), on the last host.
                index: vms + 1,
                name: format!("i-2-{}-VM", vms + 1),
                uuid: uuid_for(&format!("vm-{}", vms + 1)),
                nic_uuid: uuid_for(&format!("nic-{}", vms + 1)),
                xapi_vif_uuid: uuid_for(&format!("xapi-vif-{}", vms + 1)),
                host: nh,
                network: 2,
            }))
            .collect();
        Plan {
            hosts,
            networks,
            vms,
            public_subnet: "198.51.100.0/24".into(),
            controller_ip: ul(2),
            gateway_ip: ul(254),
            outside_ip: "198.51.100.254".into(),
            gateway: Host {
                index: 0,
                name: format!("{PREFIX}-gw"),
                fabric_ip: ul(254),
            },
            outside_vm: Vm {
                index: 100,
                name: "r-1-VM".into(),
                uuid: uuid_for("vm-router"),
                nic_uuid: uuid_for("nic-router"),
                xapi_vif_uuid: uuid_for("xapi-vif-router"),
                host: 0,
                network: usize::MAX,
            },
        }
    }

    /// The host a VM runs on (index 0 is the gateway).
    pub fn host_of(&self, vm: &Vm) -> &Host {
        if vm.host == 0 {
            &self.gateway
        } else {
            &self.hosts[vm.host - 1]
        }
    }

    /// Every host running the vRouter stack: compute hosts and the gateway.
    pub fn all_hosts(&self) -> Vec<&Host> {
        self.hosts
            .iter()
            .chain(std::iter::once(&self.gateway))
            .collect()
    }

    /// Namespaces in creation order.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v = vec![
            format!("{PREFIX}-underlay"),
            format!("{PREFIX}-ctl"),
            format!("{PREFIX}-gw"),
        ];
        v.extend(self.hosts.iter().map(|h| h.name.clone()));
        v.extend(self.vms.iter().map(Vm::netns));
        v.push(self.outside_vm.netns());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_spreads_networks_over_hosts() {
        let p = Plan::new(2, 4);
        let placement: Vec<(usize, usize)> = p.vms.iter().map(|v| (v.host, v.network)).collect();
        assert_eq!(placement, vec![(1, 0), (2, 0), (1, 1), (2, 1), (2, 2)]);
        assert_eq!(p.vms[0].vif(), "vif1.0");
        assert_eq!(p.namespaces().len(), 3 + 2 + 5 + 1);
    }

    #[test]
    fn uuids_are_stable_and_well_formed() {
        let a = uuid_for("x");
        assert_eq!(a, uuid_for("x"));
        assert_ne!(a, uuid_for("y"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }
}
