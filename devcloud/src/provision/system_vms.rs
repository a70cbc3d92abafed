//! CloudStack's own appliances (issue 19), provisioned as the plugin does it
//! (`shared/reference/contrail-api.md` §4.1, §4.5 step 4): a secondary-storage VM stand-in
//! with its Management Nic on `ip-fabric` and its Control Nic on `__link_local__`, and a VPC
//! (two tiers joined by an ACL policy) with an internal load balancer (`InternalLbVm`: a guest
//! Nic at the VIP on tier 1 and a Control Nic), two backends on tier 1 (on different hosts
//! when there are two) and a client VM on tier 2.
//!
//! Every address is CloudStack's choice, sent as the instance IP's address (the shim does no
//! IPAM on the system networks and honours requested addresses elsewhere), and every MAC is
//! fixed, so the checks know them without asking.

use super::Vnc;
use crate::sys::Result;
use crate::topology::{uuid_for, Plan, Vm};
use serde_json::json;

/// The system VM's Management address on the underlay (172.30.0.0/24).
pub const SSVM_MGMT_IP: &str = "172.30.0.50";
/// The system VM's Control (link-local) address.
pub const SSVM_CONTROL_IP: &str = "169.254.90.1";
/// The internal LB's VIP on tier 1.
pub const VIP: &str = "10.20.1.10";
/// The internal LB's Control address.
pub const ILB_CONTROL_IP: &str = "169.254.91.1";
/// The VPC's tiers: (name, /24 prefix).
pub const TIERS: [(&str, &str); 2] = [("vpc1-tier1", "10.20.1"), ("vpc1-tier2", "10.20.2")];
/// The VPC's ACL policy.
pub const VPC_ACL: &str = "vpc1-acl";

/// One Nic of a system-VM-stand-in scenario: the VM and Nic (a [`Vm`], so the devcloud's
/// hotplug and namespaces apply), its network, address, prefix length and MAC.
#[derive(Debug, Clone)]
pub struct SysNic {
    /// VM and Nic.
    pub vm: Vm,
    /// Network name (under default-domain:default-project).
    pub net: &'static str,
    /// Address.
    pub ip: String,
    /// Prefix length inside the VM.
    pub plen: u8,
    /// MAC.
    pub mac: String,
}

/// A Nic of VM `name` (domid `domid`, device `dev`) on host `host`.
fn nic(name: &str, domid: usize, dev: usize, host: usize, net: &'static str, ip: &str) -> SysNic {
    let plen = if net == "ip-fabric" || ip.starts_with("10.") {
        24
    } else {
        16
    };
    SysNic {
        vm: Vm {
            index: domid,
            name: name.into(),
            uuid: uuid_for(&format!("vm-sys-{name}")),
            nic_uuid: uuid_for(&format!("nic-sys-{name}-{dev}")),
            xapi_vif_uuid: uuid_for(&format!("xapi-vif-sys-{name}-{dev}")),
            host,
            network: usize::MAX,
            dev,
        },
        net,
        ip: ip.into(),
        plen,
        mac: format!("0e:19:00:{:02x}:{:02x}:{dev:02x}", domid >> 8, domid & 0xff),
    }
}

/// The system VMs' first domid; they take [`DOMIDS`] from there.
pub fn first_domid(plan: &Plan) -> usize {
    plan.first_free_domid().max(90)
}

/// How many domids the system VMs take.
pub const DOMIDS: usize = 5;

/// The scenario's Nics: [0, 1] the system VM (Management, Control), [2, 3] the internal LB
/// (VIP, Control), [4] backend 1, [5] backend 2, [6] the tier-2 client. Domids from 90, or
/// after every guest VM's and appliance's when there are more (`--vms 200`): a Xen domid is not
/// CloudStack's instance id, so the names stay.
pub fn nics(plan: &Plan) -> Vec<SysNic> {
    let other = if plan.hosts.len() > 1 { 2 } else { 1 };
    let (t1, t2) = (TIERS[0].0, TIERS[1].0);
    let d = first_domid(plan);
    vec![
        nic("s-90-VM", d, 0, 1, "ip-fabric", SSVM_MGMT_IP),
        nic("s-90-VM", d, 1, 1, "__link_local__", SSVM_CONTROL_IP),
        nic("b-91-VM", d + 1, 0, 1, t1, VIP),
        nic("b-91-VM", d + 1, 1, 1, "__link_local__", ILB_CONTROL_IP),
        nic("i-92-VM", d + 2, 0, 1, t1, "10.20.1.21"),
        nic("i-93-VM", d + 3, 0, other, t1, "10.20.1.22"),
        nic("i-94-VM", d + 4, 0, other, t2, "10.20.2.7"),
    ]
}

/// The tiers, the ACL, and every VM with its Nics.
pub fn provision_system_vms(vnc: &Vnc, plan: &Plan, progress: &dyn Fn(&str)) -> Result<()> {
    create_vpc(vnc)?;
    progress(&format!(
        "VPC vpc1: {} {}.0/24 and {} {}.0/24, ACL {VPC_ACL} (any protocol) attached to both",
        TIERS[0].0, TIERS[0].1, TIERS[1].0, TIERS[1].1
    ));
    let all = nics(plan);
    let mut seen = Vec::new();
    for n in &all {
        if !seen.contains(&n.vm.uuid) {
            vnc.post(
                "/virtual-machines",
                json!({"virtual-machine": {"name": n.vm.name, "uuid": n.vm.uuid,
                    "fq_name": [n.vm.name]}}),
            )?;
            seen.push(n.vm.uuid.clone());
        }
        create_fixed_nic(vnc, n)?;
    }
    progress(&format!(
        "system VM s-90-VM: Management {SSVM_MGMT_IP} on ip-fabric, Control {SSVM_CONTROL_IP} on __link_local__; \
         internal LB b-91-VM: VIP {VIP} on {}, Control {ILB_CONTROL_IP}; backends 10.20.1.21, 10.20.1.22; client 10.20.2.7",
        TIERS[0].0
    ));
    Ok(())
}

/// The two tiers and the ACL policy (pass, any protocol, both ways) attached to both.
fn create_vpc(vnc: &Vnc) -> Result<()> {
    let fq = |n: &str| format!("default-domain:default-project:{n}");
    vnc.post(
        "/network-policys",
        json!({"network-policy": {"name": VPC_ACL, "uuid": uuid_for("policy-vpc1-acl"),
            "fq_name": ["default-domain", "default-project", VPC_ACL], "parent_type": "project",
            "network_policy_entries": {"policy_rule": [{
                "rule_sequence": {"major": 1, "minor": 0},
                "direction": "<>", "protocol": "any",
                "src_addresses": [{"virtual_network": fq(TIERS[0].0)}],
                "src_ports": [{"start_port": 0, "end_port": 65535}],
                "dst_addresses": [{"virtual_network": fq(TIERS[1].0)}],
                "dst_ports": [{"start_port": 0, "end_port": 65535}],
                "action_list": {"simple_action": "pass"}}]}}}),
    )?;
    for (name, net) in TIERS {
        vnc.post(
            "/virtual-networks",
            json!({"virtual-network": {"name": name, "uuid": uuid_for(&format!("net-{name}")),
                "fq_name": ["default-domain", "default-project", name], "parent_type": "project",
                "network_ipam_refs": super::ipam_subnet(&format!("{net}.0"), 24, &format!("{net}.1")),
                "network_policy_refs": [{"to": ["default-domain", "default-project", VPC_ACL],
                    "attr": {"sequence": {"major": 0, "minor": 0}, "timer": null}}]}}),
        )?;
    }
    Ok(())
}

/// One Nic with CloudStack's MAC and address.
fn create_fixed_nic(vnc: &Vnc, n: &SysNic) -> Result<()> {
    let vm = &n.vm;
    let vmi_name = format!("{}-{}", vm.name, vm.dev);
    let vn = json!([{"to": ["default-domain", "default-project", n.net]}]);
    vnc.post(
        "/virtual-machine-interfaces",
        json!({"virtual-machine-interface": {"name": vmi_name, "uuid": vm.nic_uuid,
            "fq_name": [vm.name, vmi_name], "parent_type": "virtual-machine",
            "virtual_machine_interface_mac_addresses": {"mac_address": [n.mac]},
            "virtual_network_refs": vn}}),
    )?;
    vnc.post(
        "/instance-ips",
        json!({"instance-ip": {"name": vmi_name, "fq_name": [vmi_name],
            "instance_ip_address": n.ip, "virtual_network_refs": vn,
            "virtual_machine_interface_refs": [{"to": [vm.name, vmi_name]}]}}),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With as many VMs as a full dom0 runs, the system VMs' vifs must not take a guest's name
    /// on the same host (`--vms 200` failed with "File exists" for vif91.0).
    #[test]
    fn system_vm_vifs_never_collide_with_guests() {
        for (hosts, vms) in [(2, 4), (1, 89), (2, 200), (3, 300)] {
            let plan = Plan::new(hosts, vms);
            let guests = plan.vms.iter();
            let appliances = plan.appliances.iter().flat_map(|a| [&a.left, &a.right]);
            let sys = nics(&plan);
            let mut seen: Vec<(usize, String)> = guests
                .chain(appliances)
                .chain(sys.iter().map(|n| &n.vm))
                .map(|v| (v.host, v.vif()))
                .collect();
            let n = seen.len();
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), n, "{hosts} hosts, {vms} VMs");
            assert!(sys.iter().all(|n| n.mac.len() == 17), "{:?}", sys[0].mac);
        }
        assert_eq!(nics(&Plan::new(2, 4))[0].vm.vif(), "vif90.0");
    }
}
