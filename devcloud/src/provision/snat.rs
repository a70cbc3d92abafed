//! Source NAT for guest-nat, provisioned as CloudStack's Contrail plugin does it
//! (`shared/reference/contrail-api.md` §4.1 and §4.3; the same bodies as
//! `agent/tests/ns_snat.rs`): the in-network service template, the service instance with
//! guest-nat on the left and the public network on the right, the service-chain policy
//! (`apply_service`) attached to both networks, then each NAT appliance VM with
//! `service_instance_refs` to the instance and its left and right Nics
//! (`virtual_machine_interface_properties.service_interface_type`).
//!
//! Two deviations, both forced by the devcloud: the plugin sends `service_scaling` false and
//! `scale_out.max_instances` 1 (it never scales out), the devcloud sends true and the number of
//! appliances so the instance says what it is; and the appliances have no management Nic
//! (device 0 on `ip-fabric`), which the devcloud does not have.

use super::{create_nic, Vnc, PUBLIC_VN};
use crate::sys::Result;
use crate::topology::{uuid_for, Appliance, Plan, SNAT_NETWORK};
use serde_json::json;

/// The service template's name (under the default domain).
pub const NAT_TEMPLATE: &str = "nat-template";

/// The service instance's name (under the default project).
pub const NAT_SI: &str = "nat-si";

/// The service-chain policy between guest-nat and the public network.
pub const SNAT_POLICY: &str = "snat-guest-nat";

/// What the shim allocated to one appliance's Nics: (MAC, address) of each.
#[derive(Debug, Clone, Default)]
pub struct ApplianceNics {
    /// The left Nic, on guest-nat.
    pub left: (String, String),
    /// The right Nic, on the public network.
    pub right: (String, String),
}

/// `default-domain:default-project:<name>`, the form policies and instances name networks in.
fn fq(name: &str) -> String {
    format!("default-domain:default-project:{name}")
}

/// Template, instance, policy and appliances; returns each appliance's Nics (plan order).
pub fn provision_snat(
    vnc: &Vnc,
    plan: &Plan,
    progress: &dyn Fn(&str),
) -> Result<Vec<ApplianceNics>> {
    if plan.appliances.is_empty() {
        return Ok(Vec::new());
    }
    let left = &plan.networks[SNAT_NETWORK];
    create_service_instance(vnc, &left.name, plan.appliances.len())?;
    progress(&format!(
        "service template {NAT_TEMPLATE} (in-network) and instance {NAT_SI}: left {}, right {PUBLIC_VN}, {} VMs",
        left.name,
        plan.appliances.len()
    ));
    create_chain_policy(vnc, plan, &left.name)?;
    progress(&format!(
        "network policy {SNAT_POLICY}: {} <> {PUBLIC_VN} apply_service {NAT_SI}, attached to both",
        left.name
    ));
    let nics = plan
        .appliances
        .iter()
        .map(|a| create_appliance(vnc, a, &left.name))
        .collect::<Result<Vec<_>>>()?;
    for (a, n) in plan.appliances.iter().zip(&nics) {
        progress(&format!(
            "NAT appliance {} (host {}): left {} on {}, right {} on {PUBLIC_VN}",
            a.left.name, a.left.host, n.left.1, left.name, n.right.1
        ));
    }
    Ok(nics)
}

/// The in-network template and the instance between `left` and the public network.
fn create_service_instance(vnc: &Vnc, left: &str, vms: usize) -> Result<()> {
    vnc.post(
        "/service-templates",
        json!({"service-template": {"name": NAT_TEMPLATE, "uuid": uuid_for("st-nat"),
            "fq_name": ["default-domain", NAT_TEMPLATE], "parent_type": "domain",
            "service_template_properties": {"service_mode": "in-network",
                "service_type": "firewall",
                "image_name": "http://devcloud.invalid/templates/nat-appliance.vhd",
                "service_scaling": vms > 1}}}),
    )?;
    vnc.post(
        "/service-instances",
        json!({"service-instance": {"name": NAT_SI,
            "fq_name": ["default-domain", "default-project", NAT_SI], "parent_type": "project",
            "service_template_refs": [{"to": ["default-domain", NAT_TEMPLATE]}],
            "service_instance_properties": {"auto_policy": false,
                "management_virtual_network": fq("ip-fabric"),
                "left_virtual_network": fq(left), "right_virtual_network": fq(PUBLIC_VN),
                "scale_out": {"max_instances": vms, "auto_scale": false}}}}),
    )?;
    Ok(())
}

/// The service-chain policy (src = left, dst = public, any protocol, every port, through the
/// instance), attached to both networks with a PUT of each.
fn create_chain_policy(vnc: &Vnc, plan: &Plan, left: &str) -> Result<()> {
    let pol_fq = ["default-domain", "default-project", SNAT_POLICY];
    vnc.post(
        "/network-policys",
        json!({"network-policy": {"name": SNAT_POLICY, "uuid": uuid_for("policy-snat"),
            "fq_name": pol_fq, "parent_type": "project",
            "network_policy_entries": {"policy_rule": [{
                "rule_sequence": {"major": 1, "minor": 0},
                "direction": "<>", "protocol": "any",
                "src_addresses": [{"virtual_network": fq(left)}],
                "src_ports": [{"start_port": 0, "end_port": 65535}],
                "dst_addresses": [{"virtual_network": fq(PUBLIC_VN)}],
                "dst_ports": [{"start_port": 0, "end_port": 65535}],
                "action_list": {"simple_action": "pass", "gateway_name": "in-network",
                    "apply_service": [fq(NAT_SI)]}}]}}}),
    )?;
    let left_uuid = &plan.networks[SNAT_NETWORK].uuid;
    for (name, uuid) in [
        (left, left_uuid.as_str()),
        (PUBLIC_VN, &uuid_for("net-public")),
    ] {
        vnc.put(
            &format!("/virtual-network/{uuid}"),
            json!({"virtual-network": {"fq_name": ["default-domain", "default-project", name],
                "network_policy_refs": [{"to": pol_fq,
                    "attr": {"sequence": {"major": 0, "minor": 0}, "timer": null}}]}}),
        )?;
    }
    Ok(())
}

/// One appliance VM of the instance with its left and right Nics.
fn create_appliance(vnc: &Vnc, a: &Appliance, left: &str) -> Result<ApplianceNics> {
    let vm = &a.left;
    vnc.post(
        "/virtual-machines",
        json!({"virtual-machine": {"name": vm.name, "uuid": vm.uuid, "fq_name": [vm.name],
            "service_instance_refs": [{"to": ["default-domain", "default-project", NAT_SI]}]}}),
    )?;
    Ok(ApplianceNics {
        left: create_nic(vnc, &a.left, left, Some("left"))?,
        right: create_nic(vnc, &a.right, PUBLIC_VN, Some("right"))?,
    })
}
