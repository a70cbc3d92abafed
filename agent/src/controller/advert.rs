//! What this host advertises for what it programmed. I/O-free; the worker sends the difference.

use crate::compile::Compiled;
use crate::config::{Config, Interface};
use std::collections::{BTreeMap, HashMap};
use vrouter_api::{Ipv4Prefix, Label, Uuid};

/// What we advertise: (VRF, prefix) -> (label, VMI the route belongs to).
pub type Adverts = BTreeMap<(String, Ipv4Prefix), (Label, Uuid)>;

/// What to advertise for what was programmed: each interface's /32s (fixed IP, secondary IPs,
/// the pair addresses it owns) with its label, each
/// floating IP's /32 in its public VRF with that VRF's table label.
pub fn adverts(cfg: &Config, compiled: &Compiled, vmi_of_port: &BTreeMap<String, Uuid>) -> Adverts {
    let mut out = Adverts::new();
    let ifaces: HashMap<&str, &Interface> = cfg
        .interfaces
        .iter()
        .map(|i| (i.name.as_str(), i))
        .collect();
    for b in &compiled.bindings {
        let (Some(i), Some(vmi)) = (ifaces.get(b.name.as_str()), vmi_of_port.get(&b.name)) else {
            continue;
        };
        // The allocator hands out 20-bit labels only; anything else cannot be advertised.
        let (Some(net), Ok(label)) = (cfg.network(&i.network), Label::new(b.label)) else {
            continue;
        };
        if crate::compile::SystemNet::of_vrf(&net.vrf).is_some() {
            continue; // reached over the underlay or host-local: nothing to advertise
        }
        for addr in i.routed_addresses() {
            out.insert((net.vrf.clone(), Ipv4Prefix::host(addr)), (label, *vmi));
        }
    }
    for f in &cfg.floating_ips {
        let (Some(net), Some(vmi)) = (cfg.network(&f.network), vmi_of_port.get(&f.interface))
        else {
            continue;
        };
        if ifaces.get(f.interface.as_str()).is_some_and(|i| i.standby) {
            continue; // migrating in: the old host still serves it
        }
        let label = compiled.table_labels.get(&net.vrf).copied().map(Label::new);
        if let Some(Ok(label)) = label {
            out.insert(
                (net.vrf.clone(), Ipv4Prefix::host(f.address)),
                (label, *vmi),
            );
        }
    }
    out
}
