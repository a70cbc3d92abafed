//! What the agent knows from the controller (the watch view, first-config fetches) and from
//! xenstore (which dom0 port is which VMI), and how a watch answer updates it. I/O-free.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use vrouter_api::agent::Route;
use vrouter_api::interface::InterfaceConfig;
use vrouter_api::watch::{Change, WatchReply};
use vrouter_api::Uuid;
use vrouter_dataplane::wire::MacAddr;
use vrouter_xen::binder::KnownInterface;

/// A dom0 port bound to a VMI by xenstore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// dom0 device name.
    pub name: String,
    /// MAC xenstore has.
    pub mac: MacAddr,
}

/// What the agent knows from the controller and xenstore. I/O-free.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ControllerState {
    /// VMI -> config (watch view and fetches).
    pub ifaces: BTreeMap<Uuid, InterfaceConfig>,
    /// Watch key -> (revision, remote route); the revision decides between two origins.
    pub routes: BTreeMap<String, (u64, Route)>,
    /// VMI -> the dom0 port xenstore bound to it.
    pub ports: BTreeMap<Uuid, Port>,
    /// Resolved underlay MACs of remote hosts.
    pub neighbours: BTreeMap<Ipv4Addr, MacAddr>,
    /// Underlay MACs the dataplane's tunnel nexthops held when we found them (programmed
    /// before a restart): they serve a host until ARP answers for it, so the first reconcile
    /// after a restart keeps its routes instead of removing them while ARP is asked.
    pub adopted: BTreeMap<Ipv4Addr, MacAddr>,
    /// Watch resume point.
    pub since: u64,
    /// Allowed-address-pair VIPs owned by a local member (copied from [`crate::vip`] before
    /// each build).
    pub claims: crate::vip::Owned,
    /// Ports whose VM announced its own address, with the watch revision it was taken at
    /// (copied from [`crate::vip`] before each build): another host's advertisement of the
    /// VM with a later revision means the VM runs there now.
    pub arrived: BTreeMap<String, u64>,
}

impl ControllerState {
    /// Applies a watch answer. True if anything changed. An event whose key or value does not
    /// parse costs that key only: it is logged and dropped, the rest applies.
    pub fn apply_watch(&mut self, reply: &WatchReply) -> bool {
        let before_i = self.ifaces.clone();
        let before_r = self.routes.clone();
        if reply.reset {
            self.ifaces.clear();
            self.routes.clear();
        }
        for ev in &reply.events {
            match ev.change() {
                Ok(Change::Interface { vmi, config }) => {
                    self.put_interface(vmi, config.map(|c| *c))
                }
                Ok(Change::Route { key, route }) => match route {
                    Some(r) => {
                        self.routes.insert(key, (ev.rev, r));
                    }
                    None => {
                        self.routes.remove(&key);
                    }
                },
                Ok(Change::Unknown { key }) => {
                    log::debug!(
                        "controller: ignoring watch event of kind {:?} ({key})",
                        ev.kind
                    );
                }
                Err(e) => {
                    log::warn!("controller: {e}; dropping that key");
                    self.drop_key(&ev.key);
                }
            }
        }
        self.since = reply.rev;
        before_i != self.ifaces || before_r != self.routes
    }

    fn put_interface(&mut self, vmi: Uuid, config: Option<InterfaceConfig>) {
        match config {
            Some(c) => {
                self.ifaces.insert(vmi, c);
            }
            None => {
                self.ifaces.remove(&vmi);
            }
        }
    }

    /// Takes the underlay MACs of the dataplane's tunnels for hosts that ARP has not resolved
    /// and that have none adopted yet (see [`ControllerState::adopted`]). True if that is
    /// something new.
    pub fn adopt_tunnel_macs(&mut self, macs: BTreeMap<Ipv4Addr, MacAddr>) -> bool {
        let mut new = false;
        for (ip, mac) in macs {
            if self.neighbours.contains_key(&ip) {
                continue;
            }
            if let std::collections::btree_map::Entry::Vacant(e) = self.adopted.entry(ip) {
                e.insert(mac);
                new = true;
            }
        }
        new
    }

    /// Forgets what a key held (its new value was unusable).
    fn drop_key(&mut self, key: &str) {
        if let Some(vmi) = key.strip_prefix("iface/").and_then(|v| v.parse().ok()) {
            self.ifaces.remove(&vmi);
        }
        self.routes.remove(key);
    }

    /// The known interfaces, for the xenstore binder's directory.
    pub fn directory(&self) -> Vec<KnownInterface> {
        self.ifaces
            .iter()
            .filter_map(|(vmi, c)| {
                Some(KnownInterface {
                    nic_uuid: *vmi,
                    vm_uuid: c.vm_uuid?,
                    network_uuid: c.network.as_ref().map(|n| n.uuid),
                    name: c.name.clone().unwrap_or_default(),
                    mac: c.mac,
                })
            })
            .collect()
    }
}
