// SPDX-License-Identifier: Apache-2.0
//! Multiple addresses per interface (issue 20): the interface config lists every instance IP
//! (the fixed one first, secondary ones after) and the VMI's allowed address pairs.

use serde_json::{json, Value};

use crate::core::{Core, Ctx};
use crate::schema::ObjType;

const VN: &str = "a0f3c5d2-8e61-4b7a-9c2d-1e4f5a6b7c8d";
const VM: &str = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b";
const VMI: &str = "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f";

struct Shim {
    core: Core,
    n: u32,
}

impl Shim {
    fn new() -> Shim {
        let mut s = Shim {
            core: Core::new(),
            n: 0,
        };
        let ctx = s.ctx();
        let mut n = 0u32;
        s.core.bootstrap(&ctx, || {
            n += 1;
            format!("00000000-0000-4000-8000-{n:012x}")
        });
        s
    }

    fn ctx(&mut self) -> Ctx {
        self.n += 1;
        Ctx {
            now_us: 1_700_000_000_000_000 + u64::from(self.n),
            new_uuid: format!("ffffffff-0000-4000-8000-{:012x}", self.n),
            base: "http://shim".into(),
        }
    }

    fn create(&mut self, ty: ObjType, body: Value) {
        let ctx = self.ctx();
        self.core.create(ty, &body, &ctx).expect("created");
        let _ = self.core.take_batch();
    }

    fn iip(&mut self, name: &str, addr: &str, secondary: Option<bool>) {
        let mut b = json!({"instance-ip": {"fq_name": [name], "instance_ip_address": addr,
            "virtual_network_refs": [{"to": ["default-domain", "default-project", "net"]}],
            "virtual_machine_interface_refs": [{"to": ["i-2-10-VM", "i-2-10-VM-0"]}]}});
        if let Some(s) = secondary {
            b["instance-ip"]["instance_ip_secondary"] = json!(s);
        }
        self.create(ObjType::InstanceIp, b);
    }
}

/// A VM on 10.1.1.0/24 whose VMI has `pairs` as its allowed address pairs.
fn vm_with_pairs(pairs: Value) -> Shim {
    let mut s = Shim::new();
    s.create(
        ObjType::VirtualNetwork,
        json!({"virtual-network": {"uuid": VN, "fq_name": ["default-domain", "default-project", "net"],
            "parent_type": "project",
            "network_ipam_refs": [{"to": ["default-domain", "default-project", "default-network-ipam"],
                "attr": {"ipam_subnets": [{"subnet": {"ip_prefix": "10.1.1.0", "ip_prefix_len": 24},
                    "default_gateway": "10.1.1.1"}]}}]}}),
    );
    s.create(
        ObjType::VirtualMachine,
        json!({"virtual-machine": {"uuid": VM, "fq_name": ["i-2-10-VM"]}}),
    );
    s.create(
        ObjType::VirtualMachineInterface,
        json!({"virtual-machine-interface": {"uuid": VMI, "fq_name": ["i-2-10-VM", "i-2-10-VM-0"],
            "parent_type": "virtual-machine",
            "virtual_network_refs": [{"to": ["default-domain", "default-project", "net"]}],
            "virtual_machine_interface_allowed_address_pairs": pairs}}),
    );
    s
}

fn config(s: &Shim) -> Value {
    serde_json::to_value(s.core.interface_config(VMI).expect("config")).expect("serialises")
}

#[test]
fn a_secondary_instance_ip_comes_after_the_fixed_one_whatever_the_creation_order() {
    let mut s = vm_with_pairs(json!({"allowed_address_pair": []}));
    s.iip("sec", "10.1.1.50", Some(true));
    s.iip("fixed", "10.1.1.3", None);
    s.iip("sec2", "10.1.1.51", Some(true));
    let c = config(&s);
    let addrs: Vec<&str> = c["ips"]
        .as_array()
        .expect("ips")
        .iter()
        .filter_map(|i| i["address"].as_str())
        .collect();
    assert_eq!(addrs, ["10.1.1.3", "10.1.1.50", "10.1.1.51"]);
    assert!(c.get("allowed_address_pairs").is_none(), "none: left out");
}

#[test]
fn allowed_address_pairs_are_typed_and_unusable_entries_left_out() {
    let s = vm_with_pairs(json!({"allowed_address_pair": [
        {"ip": {"ip_prefix": "10.1.1.100", "ip_prefix_len": 32}, "mac": "00:00:5e:00:01:01",
         "address_mode": "active-standby"},
        {"ip": {"ip_prefix": "10.1.1.200", "ip_prefix_len": 28}},
        {"ip": {"ip_prefix": "10.1.1.101", "ip_prefix_len": 32}, "mac": "not a mac",
         "address_mode": "active-active"},
        {"ip": {"ip_prefix": "fd00::1", "ip_prefix_len": 128}},
        {"ip": {"ip_prefix": "10.1.1.102", "ip_prefix_len": 40}},
        {"mac": "00:00:5e:00:01:02"}
    ]}));
    assert_eq!(
        config(&s)["allowed_address_pairs"],
        json!([
            {"prefix": "10.1.1.100/32", "mac": "00:00:5e:00:01:01", "mode": "active-standby"},
            {"prefix": "10.1.1.192/28", "mode": "active-standby"},
            {"prefix": "10.1.1.101/32", "mode": "active-active"}
        ])
    );
}

#[test]
fn allowed_address_pairs_that_are_not_an_object_are_refused() {
    let mut s = Shim::new();
    let ctx = s.ctx();
    let r = s.core.create(
        ObjType::VirtualMachineInterface,
        &json!({"virtual-machine-interface": {"fq_name": ["x", "x-0"],
            "virtual_machine_interface_allowed_address_pairs": "10.1.1.100"}}),
        &ctx,
    );
    assert!(r.is_err(), "{r:?}");
}
