// SPDX-License-Identifier: Apache-2.0
//! The slice of the Contrail VNC schema (vnc_cfg.xsd, v1.06) that CloudStack's plugin uses.
//!
//! Names follow the wire: the hyphenated type name (`virtual-network`) is the URL and envelope
//! key, the underscored form (`virtual_network`) prefixes `_refs`, `_back_refs` and child lists.

use serde::{Deserialize, Serialize};

/// JSON kind a known property must have; anything else is a 400 (the real server's
/// generated type constructors reject such bodies too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A JSON object (a complex schema type).
    Object,
    /// A JSON string.
    Str,
    /// A JSON boolean.
    Bool,
    /// A JSON integer.
    Int,
}

macro_rules! obj_types {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// An object type the shim serves.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "kebab-case")]
        #[allow(missing_docs)] // each variant is its wire name
        pub enum ObjType { $($variant),* }

        impl ObjType {
            /// Every served type, in homepage order.
            pub const ALL: &'static [ObjType] = &[$(ObjType::$variant),*];

            /// Hyphenated wire name (`virtual-network`).
            pub fn name(self) -> &'static str {
                match self { $(ObjType::$variant => $name),* }
            }
        }
    };
}

obj_types! {
    GlobalSystemConfig => "global-system-config",
    Domain => "domain",
    Project => "project",
    NetworkIpam => "network-ipam",
    VirtualNetwork => "virtual-network",
    NetworkPolicy => "network-policy",
    SecurityGroup => "security-group",
    VirtualMachine => "virtual-machine",
    VirtualMachineInterface => "virtual-machine-interface",
    InstanceIp => "instance-ip",
    FloatingIpPool => "floating-ip-pool",
    FloatingIp => "floating-ip",
    ServiceTemplate => "service-template",
    ServiceInstance => "service-instance",
    RoutingInstance => "routing-instance",
    BgpRouter => "bgp-router",
}

use ObjType::*;

impl ObjType {
    /// Parses the hyphenated or the underscored form (the v1.06 server emits the latter in
    /// `id-to-fqname`, so clients may send either back).
    pub fn parse(s: &str) -> Option<ObjType> {
        let s = s.replace('_', "-");
        ObjType::ALL.iter().copied().find(|t| t.name() == s)
    }

    /// Underscored form used in JSON keys (`virtual_network`).
    pub fn key(self) -> String {
        self.name().replace('-', "_")
    }

    /// Collection path segment: the type name plus `s`, even where English disagrees
    /// (`network-policys`), because that is what the Java client builds.
    pub fn plural(self) -> String {
        format!("{}s", self.name())
    }

    /// Parent types the schema allows. Empty: the type lives at the root (config-root).
    pub fn parents(self) -> &'static [ObjType] {
        match self {
            GlobalSystemConfig | Domain | InstanceIp => &[],
            Project | ServiceTemplate => &[Domain],
            NetworkIpam | VirtualNetwork | NetworkPolicy | SecurityGroup | ServiceInstance => {
                &[Project]
            }
            VirtualMachine => &[],
            VirtualMachineInterface => &[VirtualMachine, Project],
            FloatingIpPool => &[VirtualNetwork],
            FloatingIp => &[FloatingIpPool],
            RoutingInstance => &[VirtualNetwork],
            BgpRouter => &[RoutingInstance],
        }
    }

    /// Parent types accepted without being in the schema (CloudStack sends `project` as the
    /// parent of a `virtual-machine`; Contrail 1.x skipped the check for parentless types).
    /// Such a parent is echoed back but is not a containment link: it neither lists the object
    /// as a child nor blocks the parent's delete.
    pub fn lenient_parents(self) -> &'static [ObjType] {
        match self {
            VirtualMachine => &[Project],
            _ => &[],
        }
    }

    /// Whether the object may be created without any parent.
    pub fn parent_optional(self) -> bool {
        self.parents().is_empty()
    }

    /// Types this type may hold `<t>_refs` to.
    pub fn ref_types(self) -> &'static [ObjType] {
        match self {
            VirtualNetwork => &[NetworkIpam, NetworkPolicy],
            VirtualMachine => &[ServiceInstance],
            VirtualMachineInterface => &[
                VirtualNetwork,
                VirtualMachine,
                SecurityGroup,
                VirtualMachineInterface,
            ],
            InstanceIp => &[VirtualNetwork, VirtualMachineInterface],
            FloatingIp => &[VirtualMachineInterface, Project],
            ServiceInstance => &[ServiceTemplate],
            Project => &[FloatingIpPool],
            // The peering mesh provision_bgp.py builds between routers.
            BgpRouter => &[BgpRouter],
            _ => &[],
        }
    }

    /// Properties with a checked JSON kind. Unknown property names are stored and echoed as
    /// given (newer clients send fields this schema slice does not know).
    pub fn props(self) -> &'static [(&'static str, Kind)] {
        match self {
            Domain => &[
                ("domain_limits", Kind::Object),
                ("api_access_list", Kind::Object),
            ],
            Project => &[("quota", Kind::Object)],
            NetworkIpam => &[("network_ipam_mgmt", Kind::Object)],
            VirtualNetwork => &[
                ("virtual_network_properties", Kind::Object),
                ("route_target_list", Kind::Object),
                ("router_external", Kind::Bool),
                ("is_shared", Kind::Bool),
                ("virtual_network_network_id", Kind::Int),
            ],
            NetworkPolicy => &[("network_policy_entries", Kind::Object)],
            SecurityGroup => &[("security_group_entries", Kind::Object)],
            VirtualMachineInterface => &[
                ("virtual_machine_interface_mac_addresses", Kind::Object),
                ("virtual_machine_interface_properties", Kind::Object),
                ("virtual_machine_interface_device_owner", Kind::Str),
                (
                    "virtual_machine_interface_allowed_address_pairs",
                    Kind::Object,
                ),
            ],
            InstanceIp => &[
                ("instance_ip_address", Kind::Str),
                ("instance_ip_family", Kind::Str),
                ("instance_ip_mode", Kind::Str),
                ("instance_ip_secondary", Kind::Bool),
            ],
            FloatingIp => &[
                ("floating_ip_address", Kind::Str),
                ("floating_ip_is_virtual_ip", Kind::Bool),
                ("floating_ip_fixed_ip_address", Kind::Str),
            ],
            FloatingIpPool => &[("floating_ip_pool_prefixes", Kind::Object)],
            ServiceTemplate => &[("service_template_properties", Kind::Object)],
            ServiceInstance => &[("service_instance_properties", Kind::Object)],
            GlobalSystemConfig => &[("autonomous_system", Kind::Int)],
            RoutingInstance => &[("routing_instance_is_default", Kind::Bool)],
            BgpRouter => &[("bgp_router_parameters", Kind::Object)],
            VirtualMachine => &[],
        }
    }

    /// Expected kind of a property, if it is a known one.
    pub fn prop_kind(self, name: &str) -> Option<Kind> {
        const COMMON: &[(&str, Kind)] = &[
            ("display_name", Kind::Str),
            ("perms2", Kind::Object),
            ("annotations", Kind::Object),
        ];
        COMMON
            .iter()
            .chain(self.props().iter())
            .find(|(n, _)| *n == name)
            .map(|(_, k)| *k)
    }

    /// Child types listed on read (`<child>s`) and checked on delete.
    pub fn child_types(self) -> Vec<ObjType> {
        ObjType::ALL
            .iter()
            .copied()
            .filter(|c| c.parents().contains(&self))
            .collect()
    }
}

/// Keys the server owns or derives: ignored in PUT bodies (the Java client echoes whatever it
/// read) and not stored as properties.
pub fn is_read_only_key(ty: ObjType, key: &str) -> bool {
    if matches!(
        key,
        "uuid"
            | "href"
            | "fq_name"
            | "name"
            | "parent_type"
            | "parent_uuid"
            | "parent_href"
            | "id_perms"
    ) {
        return true;
    }
    if key.ends_with("_back_refs") {
        return true;
    }
    ObjType::ALL
        .iter()
        .any(|c| c.parents().contains(&ty) && key == format!("{}s", c.key()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in ObjType::ALL {
            assert_eq!(ObjType::parse(t.name()), Some(*t));
            assert_eq!(ObjType::parse(&t.key()), Some(*t));
        }
        assert_eq!(NetworkPolicy.plural(), "network-policys");
        assert_eq!(ObjType::parse("virtual-router"), None);
    }

    #[test]
    fn children_follow_parents() {
        assert_eq!(VirtualMachine.child_types(), vec![VirtualMachineInterface]);
        assert!(Project.child_types().contains(&VirtualNetwork));
        assert!(!Project.child_types().contains(&VirtualMachine));
        assert!(is_read_only_key(Project, "virtual_networks"));
        assert!(is_read_only_key(VirtualNetwork, "instance_ip_back_refs"));
        assert!(!is_read_only_key(VirtualNetwork, "network_ipam_refs"));
    }
}
