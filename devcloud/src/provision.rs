//! Provisions the cloud through the shim's Contrail VNC API in the order CloudStack's Contrail
//! plugin does (reference: `shared/reference/contrail-api.md` §4.5): look up the defaults, create
//! the public network and its floating-IP pool, the guest networks with their subnets, the
//! policy between them, then per VM the virtual-machine, its interface (the Nic UUID) and its
//! instance IP, and a floating IP for the first VM; then source NAT for guest-nat (the
//! service template, instance, policy and NAT appliance VMs, in `provision/snat.rs`).

use crate::sys::{DevcloudError, Result};
use crate::topology::{uuid_for, Plan, Vm};
use serde_json::{json, Value};
use std::time::Duration;
use vrouter_api::client::{ClientError, Http, Timeouts};

pub(crate) mod snat;
pub(crate) mod system_vms;

/// The public network's name as CloudStack's plugin derives it for the default zone.
pub const PUBLIC_VN: &str = "__default_Public__";

/// The network policy provisioned between the first two guest networks.
pub const POLICY: &str = "acl-a-b";

/// The networks [`POLICY`] is attached to (guest-c stays without a policy).
pub const POLICY_NETWORKS: [&str; 2] = ["guest-a", "guest-b"];

/// The VNC API client: the contract crate's shared HTTP client (token, timeouts, error replies),
/// with errors turned into the devcloud's step errors.
#[derive(Debug)]
pub struct Vnc {
    http: Http,
}

/// What provisioning produced, needed by the hotplug and the checks.
#[derive(Debug, Clone, Default)]
pub struct Provisioned {
    /// Per VM (same order as the plan): MAC and fixed IP the shim allocated.
    pub vms: Vec<(String, String)>,
    /// The floating IP of VM 1.
    pub fip: Option<String>,
    /// VRF names of the guest networks.
    pub vrfs: Vec<String>,
    /// MAC of the router VM's public Nic.
    pub outside_mac: String,
    /// Per NAT appliance (plan order): MAC and address of its left and right Nics.
    pub appliances: Vec<snat::ApplianceNics>,
}

impl Vnc {
    /// A client for `http://addr:port` with `token`.
    pub fn new(base: &str, token: &str) -> Self {
        let t = Duration::from_secs(10);
        let timeouts = Timeouts {
            connect: t,
            read: t,
            write: t,
        };
        Self {
            http: Http::new(base, Some(token.to_string()), timeouts),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        self.http
            .call(method, path, body.as_ref())
            .map_err(|e| match e {
                // Already names the call.
                ClientError::Transport(m) => DevcloudError::Step(m),
                e => DevcloudError::Step(format!("{method} {path}: {e}")),
            })
    }

    /// GET.
    pub fn get(&self, path: &str) -> Result<Value> {
        self.call("GET", path, None)
    }
    /// POST.
    pub fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.call("POST", path, Some(body))
    }
    /// PUT.
    pub fn put(&self, path: &str, body: Value) -> Result<Value> {
        self.call("PUT", path, Some(body))
    }
    /// fqname-to-id.
    pub fn fq_to_id(&self, ty: &str, fq: &[&str]) -> Result<String> {
        let v = self.post("/fqname-to-id", json!({"type": ty, "fq_name": fq}))?;
        v["uuid"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| DevcloudError::Step(format!("fqname-to-id {fq:?}: no uuid")))
    }
}

fn str_at(v: &Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for p in path {
        cur = match p.parse::<usize>() {
            Ok(i) => cur.get(i)?,
            Err(_) => cur.get(*p)?,
        };
    }
    cur.as_str().map(str::to_string)
}

/// The default IPAM, whose subnets every network is created with.
const IPAM: [&str; 3] = ["default-domain", "default-project", "default-network-ipam"];

/// A network's `network_ipam_refs`: one subnet of the default IPAM.
fn ipam_subnet(prefix: &str, plen: u8, gw: &str) -> Value {
    json!([{"to": IPAM, "attr": {"ipam_subnets": [{"subnet": {"ip_prefix": prefix, "ip_prefix_len": plen}, "default_gateway": gw}]}}])
}

/// The first MAC of a virtual-machine-interface as the shim returns it.
fn vmi_mac(vmi: &Value) -> Option<String> {
    str_at(
        vmi,
        &[
            "virtual-machine-interface",
            "virtual_machine_interface_mac_addresses",
            "mac_address",
            "0",
        ],
    )
}

/// Runs the whole provisioning, printing one progress line per object kind.
pub fn provision(vnc: &Vnc, plan: &Plan, progress: &dyn Fn(&str)) -> Result<Provisioned> {
    look_up_defaults(vnc)?;
    create_public_network(vnc, plan, progress)?;
    let vrfs = create_guest_networks(vnc, plan, progress)?;
    create_policy(vnc, plan, progress)?;
    let vms = create_vms(vnc, plan, progress)?;
    let outside_mac = create_router_vm(vnc, plan, progress)?;
    let fip = create_floating_ip(vnc, plan, progress)?;
    let appliances = snat::provision_snat(vnc, plan, progress)?;
    system_vms::provision_system_vms(vnc, plan, progress)?;
    Ok(Provisioned {
        vms,
        fip,
        vrfs,
        outside_mac,
        appliances,
    })
}

/// What the plugin reads first: the API's home page, the default project and IPAM.
fn look_up_defaults(vnc: &Vnc) -> Result<()> {
    vnc.get("/")?;
    vnc.fq_to_id("project", &["default-domain", "default-project"])?;
    vnc.fq_to_id("network-ipam", &IPAM)?;
    Ok(())
}

/// The public network (gateway .1 of its subnet) and its floating-IP pool.
fn create_public_network(vnc: &Vnc, plan: &Plan, progress: &dyn Fn(&str)) -> Result<()> {
    let (pub_prefix, pub_plen) = plan
        .public_subnet
        .split_once('/')
        .unwrap_or(("198.51.100.0", "24"));
    let pub_gw = format!(
        "{}.1",
        pub_prefix.rsplit_once('.').map_or("198.51.100", |x| x.0)
    );
    progress(&format!(
        "public network {PUBLIC_VN} {}",
        plan.public_subnet
    ));
    vnc.post(
        "/virtual-networks",
        json!({"virtual-network": {"name": PUBLIC_VN, "uuid": uuid_for("net-public"),
            "fq_name": ["default-domain", "default-project", PUBLIC_VN], "parent_type": "project",
            "network_ipam_refs": ipam_subnet(pub_prefix, pub_plen.parse().unwrap_or(24), &pub_gw)}}),
    )?;
    vnc.post(
        "/floating-ip-pools",
        json!({"floating-ip-pool": {"name": "PublicIpPool",
            "fq_name": ["default-domain", "default-project", PUBLIC_VN, "PublicIpPool"], "parent_type": "virtual-network"}}),
    )?;
    Ok(())
}

/// The guest networks with their subnets; returns their VRF names, in plan order.
fn create_guest_networks(vnc: &Vnc, plan: &Plan, progress: &dyn Fn(&str)) -> Result<Vec<String>> {
    let mut vrfs = Vec::new();
    for n in &plan.networks {
        progress(&format!("guest network {} {}/{}", n.name, n.subnet, n.plen));
        vnc.post(
            "/virtual-networks",
            json!({"virtual-network": {"name": n.name, "uuid": n.uuid,
                "fq_name": ["default-domain", "default-project", n.name], "parent_type": "project",
                "network_ipam_refs": ipam_subnet(&n.subnet, n.plen, &n.gateway)}}),
        )?;
        vrfs.push(format!("default-domain:default-project:{}", n.name));
    }
    Ok(vrfs)
}

/// The VPC-ACL-style policy between guest-a and guest-b (ICMP only), attached to both.
fn create_policy(vnc: &Vnc, plan: &Plan, progress: &dyn Fn(&str)) -> Result<()> {
    let fq = |n: &str| format!("default-domain:default-project:{n}");
    let pol_fq = ["default-domain", "default-project", POLICY];
    vnc.post(
        "/network-policys",
        json!({"network-policy": {"name": POLICY, "uuid": uuid_for("policy-acl-a-b"),
            "fq_name": pol_fq, "parent_type": "project",
            "network_policy_entries": {"policy_rule": [{
                "rule_sequence": {"major": 1, "minor": 0},
                "rule_uuid": uuid_for("policy-acl-a-b-rule-1"),
                "direction": "<>", "protocol": "icmp",
                "src_addresses": [{"virtual_network": fq("guest-a")}],
                "src_ports": [{"start_port": 0, "end_port": 65535}],
                "dst_addresses": [{"virtual_network": fq("guest-b")}],
                "dst_ports": [{"start_port": 0, "end_port": 65535}],
                "action_list": {"simple_action": "pass"}}]}}}),
    )?;
    for n in plan
        .networks
        .iter()
        .filter(|n| POLICY_NETWORKS.contains(&n.name.as_str()))
    {
        vnc.put(
            &format!("/virtual-network/{}", n.uuid),
            json!({"virtual-network": {"fq_name": ["default-domain", "default-project", n.name],
                "network_policy_refs": [{"to": pol_fq,
                    "attr": {"sequence": {"major": 0, "minor": 0}, "timer": null}}]}}),
        )?;
    }
    progress(&format!(
        "network policy {POLICY}: <> icmp pass between {}, attached to both",
        POLICY_NETWORKS.join(" and ")
    ));
    Ok(())
}

/// Every guest VM, in plan order; returns each one's MAC and address.
fn create_vms(vnc: &Vnc, plan: &Plan, progress: &dyn Fn(&str)) -> Result<Vec<(String, String)>> {
    progress(&format!(
        "{} VMs with their Nics and instance IPs",
        plan.vms.len()
    ));
    plan.vms.iter().map(|vm| create_vm(vnc, plan, vm)).collect()
}

/// One guest VM: the virtual-machine and its Nic; returns the MAC and the address the shim
/// allocated.
fn create_vm(vnc: &Vnc, plan: &Plan, vm: &Vm) -> Result<(String, String)> {
    vnc.post(
        "/virtual-machines",
        json!({"virtual-machine": {"name": vm.name, "uuid": vm.uuid, "fq_name": [vm.name]}}),
    )?;
    create_nic(vnc, vm, &plan.networks[vm.network].name, None)
}

/// One Nic of `vm` on network `net`, as ContrailGuru.reserve makes it: the
/// virtual-machine-interface `<instance>-<device>` (client UUID = the Nic UUID, no MAC: the
/// shim allocates it; a service VM's Nic says its `service_interface_type`) and its
/// instance IP; returns the MAC and the address the shim allocated.
pub(crate) fn create_nic(
    vnc: &Vnc,
    vm: &Vm,
    net: &str,
    service_interface: Option<&str>,
) -> Result<(String, String)> {
    let vmi_name = format!("{}-{}", vm.name, vm.dev);
    let mut vmi = json!({"name": vmi_name, "uuid": vm.nic_uuid,
        "fq_name": [vm.name, vmi_name], "parent_type": "virtual-machine",
        "virtual_network_refs": [{"to": ["default-domain", "default-project", net]}]});
    if let Some(kind) = service_interface {
        vmi["virtual_machine_interface_properties"] = json!({"service_interface_type": kind});
    }
    vnc.post(
        "/virtual-machine-interfaces",
        json!({ "virtual-machine-interface": vmi }),
    )?;
    let vmi = vnc.get(&format!("/virtual-machine-interface/{}", vm.nic_uuid))?;
    let mac = vmi_mac(&vmi)
        .ok_or_else(|| DevcloudError::Step(format!("VMI {} has no MAC", vm.nic_uuid)))?;
    let iip = vnc.post(
        "/instance-ips",
        json!({"instance-ip": {"name": vmi_name, "fq_name": [vmi_name],
            "virtual_network_refs": [{"to": ["default-domain", "default-project", net]}],
            "virtual_machine_interface_refs": [{"to": [vm.name, vmi_name]}]}}),
    )?;
    let iip_uuid = str_at(&iip, &["instance-ip", "uuid"])
        .ok_or_else(|| DevcloudError::Step("instance-ip without uuid".into()))?;
    let iip = vnc.get(&format!("/instance-ip/{iip_uuid}"))?;
    let addr = str_at(&iip, &["instance-ip", "instance_ip_address"])
        .ok_or_else(|| DevcloudError::Step(format!("instance-ip {iip_uuid} has no address")))?;
    Ok((mac, addr))
}

/// The gateway's router VM with a Nic on the public network at a fixed address, as CloudStack
/// creates for its virtual routers' public Nics; returns the Nic's MAC.
fn create_router_vm(vnc: &Vnc, plan: &Plan, progress: &dyn Fn(&str)) -> Result<String> {
    let r = &plan.outside_vm;
    let rname = format!("{}-0", r.name);
    vnc.post(
        "/virtual-machines",
        json!({"virtual-machine": {"name": r.name, "uuid": r.uuid, "fq_name": [r.name]}}),
    )?;
    vnc.post(
        "/virtual-machine-interfaces",
        json!({"virtual-machine-interface": {"name": rname, "uuid": r.nic_uuid, "fq_name": [r.name, rname],
            "parent_type": "virtual-machine",
            "virtual_network_refs": [{"to": ["default-domain", "default-project", PUBLIC_VN]}]}}),
    )?;
    vnc.post(
        "/instance-ips",
        json!({"instance-ip": {"name": rname, "fq_name": [rname], "instance_ip_address": plan.outside_ip,
            "virtual_network_refs": [{"to": ["default-domain", "default-project", PUBLIC_VN]}],
            "virtual_machine_interface_refs": [{"to": [r.name, rname]}]}}),
    )?;
    let vmi = vnc.get(&format!("/virtual-machine-interface/{}", r.nic_uuid))?;
    let mac = vmi_mac(&vmi).ok_or_else(|| DevcloudError::Step("router VMI has no MAC".into()))?;
    progress(&format!(
        "router VM {} on the public network at {}",
        r.name, plan.outside_ip
    ));
    Ok(mac)
}

/// A floating IP from the public pool for the first VM's Nic; returns the address the shim
/// allocated (`None` without VMs, or when the shim's answer has none).
fn create_floating_ip(vnc: &Vnc, plan: &Plan, progress: &dyn Fn(&str)) -> Result<Option<String>> {
    let Some(vm) = plan.vms.first() else {
        return Ok(None);
    };
    let fip_uuid = uuid_for("fip-1");
    let vmi_name = format!("{}-0", vm.name);
    vnc.post(
        "/floating-ips",
        json!({"floating-ip": {"name": "1", "uuid": fip_uuid,
            "fq_name": ["default-domain", "default-project", PUBLIC_VN, "PublicIpPool", "1"],
            "parent_type": "floating-ip-pool",
            "virtual_machine_interface_refs": [{"to": [vm.name, vmi_name]}]}}),
    )?;
    let f = vnc.get(&format!("/floating-ip/{fip_uuid}"))?;
    let fip = str_at(&f, &["floating-ip", "floating_ip_address"]);
    progress(&format!(
        "floating IP {} for {}",
        fip.as_deref().unwrap_or("?"),
        vm.name
    ));
    Ok(fip)
}
