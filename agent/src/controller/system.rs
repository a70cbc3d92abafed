//! System-network interfaces as the controller describes them (issue 19). CloudStack puts its
//! system VMs' NICs on `ip-fabric` (Management, Storage) and `__link_local__` (Control), which
//! the compile step serves (see [`crate::compile::SystemNet`]). An interface on any other
//! network of `default-domain:default-project` (where CloudStack's system networks live)
//! without IPAM (no subnet on the network or its address: a system network this agent does not
//! know, such as `default-virtual-network`) would otherwise land in an isolated VRF with no
//! subnet, gateway, DHCP or route: it is refused instead, with a clear reason, and left
//! unbound. (The shim gives such an interface no address: the check comes first, so the
//! reason is this and not the missing address.)

use crate::compile::{SystemNet, IP_FABRIC_VRF, LINK_LOCAL_VRF};
use vrouter_api::interface::InterfaceConfig;

/// Where CloudStack's system networks (and the shim's default network) live.
const SYSTEM_PROJECT: &str = "default-domain:default-project:";

/// Whether the interface can be programmed as far as system networks go; the error says why
/// not (the network is an unknown system network).
pub(super) fn check(c: &InterfaceConfig) -> Result<(), String> {
    let Some(n) = &c.network else {
        return Ok(()); // no network at all: reported as such by the addressing
    };
    if SystemNet::of_vrf(&n.vrf).is_some() || !n.vrf.starts_with(SYSTEM_PROJECT) {
        return Ok(());
    }
    let ipam = !n.subnets.is_empty()
        || c.ips
            .iter()
            .any(|i| i.subnet.is_some() || i.prefix_len.is_some());
    if ipam {
        return Ok(());
    }
    Err(format!(
        "network {} has no subnet and is not a system network this agent serves \
         ({IP_FABRIC_VRF} or {LINK_LOCAL_VRF}): unknown system network",
        n.vrf
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(vrf: &str, subnets: &str, ip_subnet: &str) -> InterfaceConfig {
        serde_json::from_value(serde_json::json!({
            "uuid": "11111111-1111-1111-1111-111111111111",
            "network": {"uuid": "33333333-3333-3333-3333-333333333333", "vrf": vrf,
                        "subnets": if subnets.is_empty() { vec![] } else { vec![subnets] }},
            "ips": [{"uuid": "22222222-2222-2222-2222-222222222222", "address": "10.0.0.5",
                     "subnet": if ip_subnet.is_empty() { None } else { Some(ip_subnet) }}]
        }))
        .expect("interface config")
    }

    #[test]
    fn system_networks_and_guest_networks_pass_an_unknown_system_network_is_refused() {
        assert_eq!(check(&iface(IP_FABRIC_VRF, "", "")), Ok(()));
        assert_eq!(check(&iface(LINK_LOCAL_VRF, "", "")), Ok(()));
        assert_eq!(check(&iface("d:p:net1", "10.0.0.0/24", "")), Ok(()));
        assert_eq!(check(&iface("d:p:net1", "", "10.0.0.0/24")), Ok(()));
        // A project's network whose subnets the view left out is not a system network.
        assert_eq!(check(&iface("default-domain:admin:net1", "", "")), Ok(()));
        let e = check(&iface(
            "default-domain:default-project:default-virtual-network",
            "",
            "",
        ))
        .expect_err("refused");
        assert!(
            e.starts_with(
                "network default-domain:default-project:default-virtual-network has no subnet"
            ),
            "{e}"
        );
        assert!(e.ends_with("unknown system network"), "{e}");
    }
}
