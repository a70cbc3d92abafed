//! ip-fabric interfaces in the pipeline (issue 19): CloudStack's system VMs whose Management or
//! Storage NIC is on the underlay. Their vif is in the fabric VRF (VRF 0) with its /32 there.
//!
//! * In (fabric NIC or host interface, non-overlay): an IPv4 packet whose destination has a
//!   fabric-VRF route to a VM's Encap nexthop is routed to it; an ARP request for such an
//!   address is answered with the fabric NIC's MAC (proxy ARP on the fabric side); an ARP
//!   reply to such an address is handed to the VM with its own MAC as target. Everything else
//!   goes on as before (the host stack or the fabric), so the fabric VRF costs other traffic
//!   one lookup that its empty prefix-length set ends at once.
//! * Out (from the VM): the underlay is the way out. An ARP request for an address with no
//!   fabric-VRF route goes out of the fabric NIC with the fabric MAC as sender (the underlay
//!   only ever sees this host's MAC), so the VM learns its underlay neighbours' real MACs; an
//!   IPv4 frame to such a MAC leaves the same way, unchanged but for the source MAC (to the
//!   host interface instead if it is that interface's MAC). Frames to the vRouter MAC are
//!   routed in the fabric VRF (another local ip-fabric VM).
//!
//! No tunnel is involved: other hosts reach the VM over the underlay as they reach any host.

use super::{Pipeline, ETH};
use crate::batch::{Next, Pkt};
use crate::drop::DropReason;
use crate::tables::{Nexthop, Tables, VifKind, FABRIC_VRF};
use crate::wire::{arp, MacAddr};

/// ARP sender / target hardware address offsets in an Ethernet frame.
const SHA: std::ops::Range<usize> = ETH + 8..ETH + 14;
const THA: std::ops::Range<usize> = ETH + 18..ETH + 24;

/// The local ip-fabric VM that `addr` routes to in the fabric VRF: (its vif, its nexthop).
#[inline]
fn fabric_vm(t: &Tables, addr: u32) -> Option<(u16, u32, MacAddr)> {
    let (r, _) = t.lookup(FABRIC_VRF, addr)?;
    match t.nh(r.nh)? {
        Nexthop::Encap { oif, .. } => {
            let v = t.vif(*oif)?;
            (v.spec.kind == VifKind::Virtual).then_some((*oif, r.nh, v.spec.mac))
        }
        _ => None,
    }
}

/// The MAC this host shows the underlay: the fabric NIC's.
fn fabric_mac(t: &Tables) -> Option<(u16, MacAddr)> {
    let f = t.host.fabric_vif?;
    Some((f, t.vif(f)?.spec.mac))
}

impl Pipeline {
    /// A non-overlay IPv4 packet from the fabric or the host interface (checksum checked,
    /// `total` bytes of IP): routed to the local ip-fabric VM it is for. False if it is for none.
    #[inline]
    pub(super) fn fabric_ip_in(&self, t: &Tables, p: &mut Pkt, dst: u32, total: usize) -> bool {
        let Some((_, nh, _)) = fabric_vm(t, dst) else {
            return false;
        };
        if p.buf.data().get(ETH + 8).is_some_and(|&ttl| ttl <= 1) {
            p.meta.drop(DropReason::TtlExceeded);
            return true;
        }
        p.buf.truncate(ETH + total);
        p.meta.vrf = FABRIC_VRF;
        p.meta.dec_ttl = true;
        p.meta.nh = nh;
        p.meta.next = Next::Nexthop;
        true
    }

    /// An ARP packet from the fabric or the host interface about a local ip-fabric VM: a
    /// request is answered with the fabric MAC, a reply is handed to the VM. False if it is
    /// about none (it goes on as before).
    #[inline]
    pub(super) fn fabric_arp_in(&self, t: &Tables, p: &mut Pkt) -> bool {
        let in_vif = p.meta.in_vif;
        let d = p.buf.data_mut();
        let Some(body) = d.get_mut(ETH..) else {
            return false;
        };
        let Ok(mut a) = crate::wire::ArpPacket::new_checked(body) else {
            return false;
        };
        let Some((vif, _, vm_mac)) = fabric_vm(t, a.tpa()) else {
            return false;
        };
        if a.op() == arp::OP_REQUEST {
            if a.spa() == a.tpa() {
                return false; // someone's gratuitous ARP: not ours to answer
            }
            let mac = fabric_mac(t).map_or(MacAddr::VROUTER, |(_, m)| m);
            let asker = a.sha();
            a.make_reply(mac);
            d[0..6].copy_from_slice(&asker.0);
            d[6..12].copy_from_slice(&mac.0);
            p.buf.truncate(ETH + arp::ARP_LEN);
            p.meta.tx(in_vif);
        } else {
            d[0..6].copy_from_slice(&vm_mac.0);
            d[THA].copy_from_slice(&vm_mac.0);
            p.buf.truncate(ETH + arp::ARP_LEN);
            p.meta.tx(vif);
        }
        true
    }

    /// An ARP request of an ip-fabric VM for an address with no fabric-VRF route: out to the
    /// underlay with the fabric MAC as sender, so the answer comes back to this host.
    #[inline(never)]
    pub(super) fn fabric_arp_out(&self, t: &Tables, p: &mut Pkt) {
        let Some((f, mac)) = fabric_mac(t) else {
            p.meta.drop(DropReason::ArpNoRoute);
            return;
        };
        let d = p.buf.data_mut();
        d[6..12].copy_from_slice(&mac.0);
        if let Some(sha) = d.get_mut(SHA) {
            sha.copy_from_slice(&mac.0);
        }
        // Toward this host's own address the host interface answers, if there is one.
        let tpa = d
            .get(ETH + 24..ETH + 28)
            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let out = match t.host.host_vif {
            Some(h) if tpa == t.host.fabric_ip => h,
            _ => f,
        };
        p.buf.truncate(ETH + arp::ARP_LEN);
        p.meta.tx(out);
    }

    /// An ip-fabric VM's IPv4 frame (sources checked) to a unicast underlay MAC it learned by
    /// ARP: out of the fabric with the fabric MAC as source (to the host interface if it is
    /// that interface's MAC).
    #[inline(never)]
    pub(super) fn fabric_bridge_out(&self, t: &Tables, p: &mut Pkt, total: usize) {
        let Some((f, mac)) = fabric_mac(t) else {
            p.meta.drop(DropReason::L2NoRoute);
            return;
        };
        let d = p.buf.data_mut();
        if d[0] & 1 != 0 {
            p.meta.drop(DropReason::L2NoRoute);
            return;
        }
        let host = t
            .host
            .host_vif
            .and_then(|h| Some((h, t.vif(h)?.spec.mac)))
            .filter(|(_, m)| d[0..6] == m.0);
        d[6..12].copy_from_slice(&mac.0);
        p.buf.truncate(ETH + total);
        p.meta.tx(host.map_or(f, |(h, _)| h));
    }
}
