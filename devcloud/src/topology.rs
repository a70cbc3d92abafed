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
    /// Xen device id of this Nic (0 for ordinary VMs; a NAT appliance has one `Vm` per Nic,
    /// left = 1 and right = 2, sharing name, UUID and domid).
    #[serde(default)]
    pub dev: usize,
}

impl Vm {
    /// The VM's namespace.
    pub fn netns(&self) -> String {
        format!("{PREFIX}-{}", self.name)
    }
    /// The dom0 device (`vif<domid>.<devid>`).
    pub fn vif(&self) -> String {
        format!("vif{}.{}", self.index, self.dev)
    }
    /// The Nic's device inside the VM (`eth<devid>`).
    pub fn eth(&self) -> String {
        format!("eth{}", self.dev)
    }
}

/// Index in [`Plan::networks`] of the source-NAT guest network: its VMs have no floating IP
/// and reach the outside through the NAT service instance (issue 18).
pub const SNAT_NETWORK: usize = 3;

/// A NAT appliance VM of the source-NAT service instance: one VM (one namespace, one domid)
/// with a left Nic on the source-NAT guest network and a right Nic on the public network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Appliance {
    /// The left Nic (device 1, `service_interface_type` left).
    pub left: Vm,
    /// The right Nic (device 2, `service_interface_type` right), on the public network.
    pub right: Vm,
}

impl Appliance {
    /// Appliance `n` (from 1) with domid `domid` on host `host`.
    fn new(n: usize, domid: usize, host: usize) -> Self {
        let nic = |dev: usize, network: usize| Vm {
            index: domid,
            name: format!("i-2-{domid}-VM"),
            uuid: uuid_for(&format!("vm-nat-{n}")),
            nic_uuid: uuid_for(&format!("nic-nat-{n}-{dev}")),
            xapi_vif_uuid: uuid_for(&format!("xapi-vif-nat-{n}-{dev}")),
            host,
            network,
            dev,
        };
        Appliance {
            left: nic(1, SNAT_NETWORK),
            right: nic(2, usize::MAX),
        }
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
    /// The NAT appliances of the source-NAT service instance: two on different hosts
    /// (scale-out), one with a single host.
    #[serde(default)]
    pub appliances: Vec<Appliance>,
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
            Network {
                name: "guest-nat".into(),
                uuid: uuid_for("net-guest-nat"),
                subnet: "10.4.4.0".into(),
                plen: 24,
                gateway: "10.4.4.1".into(),
            },
        ];
        let nh = hosts.len().max(1);
        let guest_vm = |i: usize, host: usize, network: usize| Vm {
            index: i,
            name: format!("i-2-{i}-VM"),
            uuid: uuid_for(&format!("vm-{i}")),
            nic_uuid: uuid_for(&format!("nic-{i}")),
            xapi_vif_uuid: uuid_for(&format!("xapi-vif-{i}")),
            host,
            network,
            dev: 0,
        };
        let n_vms = vms;
        let vms: Vec<Vm> = (1..=vms)
            // VM 1 on host 1, VM 2 on host 2, ...; networks alternate every `hosts` VMs so each
            // network has VMs on every host.
            .map(|i| guest_vm(i, (i - 1) % nh + 1, ((i - 1) / nh) % 2))
            // One more VM in guest-c (no policy), on the last host.
            .chain(std::iter::once(guest_vm(vms + 1, nh, 2)))
            // One VM per host in guest-nat (no floating IP: source NAT), so every host's
            // chain routes carry traffic.
            .chain((1..=nh).map(|h| guest_vm(vms + 1 + h, h, SNAT_NETWORK)))
            .collect();
        // The NAT appliances on hosts 1 and 2 (scale-out), after every guest VM's domid.
        let appliances = (1..=nh.min(2))
            .map(|n| Appliance::new(n, n_vms + 1 + nh + n, n))
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
                dev: 0,
            },
            appliances,
        }
    }

    /// The first domid after every guest VM's and NAT appliance's on the compute hosts (the
    /// outside VM is alone on the gateway).
    pub fn first_free_domid(&self) -> usize {
        let guests = self.vms.iter().map(|v| v.index);
        let appliances = self.appliances.iter().map(|a| a.left.index);
        guests.chain(appliances).max().unwrap_or(0) + 1
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
        v.extend(self.appliances.iter().map(|a| a.left.netns()));
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
        assert_eq!(
            placement,
            vec![(1, 0), (2, 0), (1, 1), (2, 1), (2, 2), (1, 3), (2, 3)]
        );
        assert_eq!(p.vms[0].vif(), "vif1.0");
        assert_eq!(p.namespaces().len(), 3 + 2 + 7 + 1 + 2);
    }

    #[test]
    fn two_nat_appliances_on_different_hosts_one_with_one_host() {
        let p = Plan::new(4, 8);
        let hosts: Vec<usize> = p.appliances.iter().map(|a| a.left.host).collect();
        assert_eq!(hosts, vec![1, 2]);
        let a = &p.appliances[0];
        assert_eq!(
            (a.left.vif(), a.right.vif()),
            ("vif14.1".into(), "vif14.2".into())
        );
        assert_eq!(
            (a.left.eth(), a.right.eth()),
            ("eth1".into(), "eth2".into())
        );
        assert_eq!(a.left.netns(), a.right.netns());
        assert_ne!(a.left.nic_uuid, a.right.nic_uuid);
        // Every domid is distinct and the guest VMs stay numbered 1.. (the shim's order).
        let mut domids: Vec<usize> = p.vms.iter().map(|v| v.index).collect();
        assert_eq!(domids, (1..=13).collect::<Vec<_>>());
        domids.extend(p.appliances.iter().map(|a| a.left.index));
        domids.sort_unstable();
        domids.dedup();
        assert_eq!(domids.len(), 15);
        assert_eq!(Plan::new(1, 2).appliances.len(), 1);
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
