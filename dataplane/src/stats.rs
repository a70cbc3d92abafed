//! Counters: per interface, per VRF (by nexthop type, like `vrfstats`), per drop reason and per
//! trap reason.
//!
//! Thread-safety: each lcore owns one [`LcoreStats`] and is its only writer; it bumps counters
//! with a relaxed load and store (a plain add on x86, no lock prefix). Readers (the control
//! socket) load every lcore's counters relaxed and sum them: a sum may be a few packets behind,
//! never torn.

use crate::drop::DropReason;
use crate::trap::TrapReason;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// One single-writer counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n` (only the owning lcore calls this).
    #[inline(always)]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }
    /// Current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Per-interface counters.
#[derive(Debug, Default)]
pub struct VifCounters {
    /// Packets received.
    pub rx_packets: Counter,
    /// Bytes received.
    pub rx_bytes: Counter,
    /// Receive errors (bad frames from the device).
    pub rx_errors: Counter,
    /// Packets transmitted.
    pub tx_packets: Counter,
    /// Bytes transmitted.
    pub tx_bytes: Counter,
    /// Transmit errors (device refused).
    pub tx_errors: Counter,
    /// Packets received here and dropped.
    pub drops: Counter,
}

macro_rules! vrf_counters {
    ($( $(#[$doc:meta])* $field:ident => $name:literal, )*) => {
        /// Per-VRF counters by what was done (Contrail's `vrfstats`).
        #[derive(Debug, Default)]
        pub struct VrfCounters { $( $(#[$doc])* pub $field: Counter, )* }

        /// A summed snapshot of [`VrfCounters`].
        #[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
        pub struct VrfStats { $( $(#[$doc])* pub $field: u64, )* }

        impl VrfStats {
            fn add_from(&mut self, c: &VrfCounters) {
                $( self.$field += c.$field.get(); )*
            }

            /// (display name, value) pairs in `vrfstats` order.
            pub fn named(&self) -> Vec<(&'static str, u64)> {
                vec![$( ($name, self.$field), )*]
            }
        }
    };
}

vrf_counters! {
    /// Discard nexthops executed.
    discards => "Discards",
    /// Receive nexthops executed.
    receives => "Receives",
    /// VRF translations.
    vrf_translates => "Vrf Translates",
    /// ECMP composites executed.
    ecmp_composites => "Ecmp Composites",
    /// MPLSoUDP encapsulations.
    udp_mpls_tunnels => "Udp Mpls Tunnels",
    /// MPLSoGRE encapsulations.
    gre_mpls_tunnels => "Gre Mpls Tunnels",
    /// Local deliveries (encap nexthops).
    encaps => "Encaps",
    /// ARP requests answered by the dataplane.
    arp_virtual_proxys => "Arp Virtual Proxys",
    /// Floating-IP destination translations.
    fip_dnats => "Fip Dnats",
    /// Floating-IP source translations.
    fip_snats => "Fip Snats",
    /// Extension: fragments made of inner packets too big for the tunnel path (DF clear).
    fragments => "Fragments",
}

/// Per-interface snapshot.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VifStats {
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Packets transmitted.
    pub tx_packets: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// Drops of packets received here.
    pub drops: u64,
}

/// Counters owned by one lcore.
#[derive(Debug)]
pub struct LcoreStats {
    /// By vif id.
    pub vif: Box<[VifCounters]>,
    /// By VRF id.
    pub vrf: Box<[VrfCounters]>,
    /// By drop reason.
    pub drops: Box<[Counter]>,
    /// By trap reason.
    pub traps: Box<[Counter]>,
}

impl LcoreStats {
    /// Counters for `vifs` interfaces and `vrfs` VRFs.
    pub fn new(vifs: usize, vrfs: usize) -> Self {
        Self {
            vif: (0..vifs).map(|_| VifCounters::default()).collect(),
            vrf: (0..vrfs).map(|_| VrfCounters::default()).collect(),
            drops: (0..DropReason::COUNT).map(|_| Counter::default()).collect(),
            traps: (0..TrapReason::ALL.len())
                .map(|_| Counter::default())
                .collect(),
        }
    }

    /// Counts a dropped packet received on `vif`.
    #[inline]
    pub fn dropped(&self, vif: u16, reason: DropReason) {
        self.drops[reason.index()].add(1);
        if let Some(v) = self.vif.get(usize::from(vif)) {
            v.drops.add(1);
        }
    }

    /// The VRF counters of `vrf` (a dummy sink for ids past the table).
    #[inline]
    pub fn vrf(&self, vrf: u16) -> &VrfCounters {
        self.vrf.get(usize::from(vrf)).unwrap_or(&self.vrf[0])
    }
}

/// Every lcore's counters, for summing.
#[derive(Debug, Default, Clone)]
pub struct StatsRegistry {
    lcores: Arc<Mutex<Vec<Arc<LcoreStats>>>>,
    sizes: (usize, usize),
}

impl StatsRegistry {
    /// A registry whose lcores count `vifs` interfaces and `vrfs` VRFs.
    pub fn new(vifs: usize, vrfs: usize) -> Self {
        Self {
            lcores: Arc::default(),
            sizes: (vifs, vrfs),
        }
    }

    /// Creates and registers the counters of a new lcore.
    pub fn register(&self) -> Arc<LcoreStats> {
        let s = Arc::new(LcoreStats::new(self.sizes.0.max(1), self.sizes.1.max(1)));
        self.with(|l| l.push(s.clone()));
        s
    }

    fn with<R>(&self, f: impl FnOnce(&mut Vec<Arc<LcoreStats>>) -> R) -> R {
        // A panic while holding this lock cannot leave the list inconsistent (push or iterate),
        // so a poisoned lock is still usable.
        let mut g = self.lcores.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    /// Summed counters of one interface.
    pub fn vif(&self, id: u16) -> VifStats {
        self.with(|l| {
            let mut s = VifStats::default();
            for c in l.iter().filter_map(|x| x.vif.get(usize::from(id))) {
                s.rx_packets += c.rx_packets.get();
                s.rx_bytes += c.rx_bytes.get();
                s.rx_errors += c.rx_errors.get();
                s.tx_packets += c.tx_packets.get();
                s.tx_bytes += c.tx_bytes.get();
                s.tx_errors += c.tx_errors.get();
                s.drops += c.drops.get();
            }
            s
        })
    }

    /// Summed counters of one VRF.
    pub fn vrf(&self, id: u16) -> VrfStats {
        self.with(|l| {
            let mut s = VrfStats::default();
            for c in l.iter().filter_map(|x| x.vrf.get(usize::from(id))) {
                s.add_from(c);
            }
            s
        })
    }

    /// Summed drop counters, by reason, every reason present (zeros included).
    pub fn drops(&self) -> Vec<(DropReason, u64)> {
        self.with(|l| {
            DropReason::ALL
                .iter()
                .map(|r| (*r, l.iter().map(|x| x.drops[r.index()].get()).sum()))
                .collect()
        })
    }

    /// Summed trap counters.
    pub fn traps(&self) -> Vec<(TrapReason, u64)> {
        self.with(|l| {
            TrapReason::ALL
                .iter()
                .map(|r| (*r, l.iter().map(|x| x.traps[*r as usize].get()).sum()))
                .collect()
        })
    }
}
