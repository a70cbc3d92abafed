// SPDX-License-Identifier: Apache-2.0
//! Churn: 1000 vifs appear and disappear in random order through the dev daemon, written by two
//! concurrent "toolstacks" in every way the binder must cope with (contract in one transaction,
//! key by key without a transaction, MAC and name fallbacks, half-written, malformed, ambiguous,
//! online=0, state Closing/Closed, rm). After each round the recording sink's vif table must equal
//! exactly the set of live, identifiable vifs, bound to the right Nics; the binder's own maps must
//! hold exactly that set (pending: exactly the live, unidentifiable ones), and memory must stay
//! flat across rounds.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{mac, rss_kib, uuid, RecordingSink, Rng, Xenstored};
use vrouter_xen::binder::{Binder, BinderConfig, KnownInterface, NoTaps, StaticDirectory, VifKey};
use vrouter_xen::transport::UnixTransport;
use vrouter_xen::{Client, Error};

const DOMAINS: u32 = 250;
const DEVS: u32 = 4; // 1000 vifs
const AMBIGUOUS_MAC: &str = "02:ff:ff:ff:ff:ff";
const NIC_PREFIX: u32 = 0xc0ff_ee00;
const VM_PREFIX: u32 = 0x0f0f_0000;

fn idx(k: VifKey) -> u32 {
    (k.domid - 1) * DEVS + k.devid
}

fn nic(k: VifKey) -> String {
    uuid(NIC_PREFIX, idx(k))
}

fn base(k: VifKey) -> String {
    format!("/local/domain/0/backend/vif/{}/{}", k.domid, k.devid)
}

/// What the writer left in xenstore for one vif.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Model {
    Absent,
    /// Backend dir exists but the vif is down (online=0 or state>=5).
    Down,
    /// Live and identifiable: must be bound.
    Bindable,
    /// Live but must not be bound (half-written, malformed, ambiguous).
    Waiting,
}

/// Interfaces the "controller" knows: every Nic; MACs only for every third one (the others can
/// only be found by name), plus two interfaces sharing one MAC.
fn directory() -> StaticDirectory {
    let mut interfaces = Vec::new();
    for domid in 1..=DOMAINS {
        for devid in 0..DEVS {
            let k = VifKey { domid, devid };
            interfaces.push(KnownInterface {
                nic_uuid: nic(k).parse().unwrap(),
                vm_uuid: uuid(VM_PREFIX, domid).parse().unwrap(),
                network_uuid: None,
                name: format!("i-2-{domid}-VM-{devid}"),
                mac: idx(k)
                    .is_multiple_of(3)
                    .then(|| mac(idx(k)).parse().unwrap()),
            });
        }
    }
    for n in 0..2 {
        interfaces.push(KnownInterface {
            nic_uuid: uuid(0xa0a0_0000, n).parse().unwrap(),
            vm_uuid: uuid(VM_PREFIX, 0).parse().unwrap(),
            network_uuid: None,
            name: format!("amb-{n}"),
            mac: Some(AMBIGUOUS_MAC.parse().unwrap()),
        });
    }
    StaticDirectory { interfaces }
}

fn common_keys(k: VifKey, mac: &str, state: &str) -> Vec<(String, String)> {
    let b = base(k);
    vec![
        (
            format!("{b}/frontend"),
            format!("/local/domain/{}/device/vif/{}", k.domid, k.devid),
        ),
        (format!("{b}/frontend-id"), k.domid.to_string()),
        (format!("{b}/online"), "1".into()),
        (format!("{b}/state"), state.into()),
        (format!("{b}/mac"), mac.into()),
        (format!("{b}/handle"), k.devid.to_string()),
        (format!("{b}/script"), "/etc/xensource/scripts/vif".into()),
    ]
}

fn contract(k: VifKey, nic: &str) -> Vec<(String, String)> {
    let b = base(k);
    vec![
        (format!("{b}/cloudstack/nic-id"), nic.into()),
        (format!("{b}/cloudstack/vm-id"), uuid(VM_PREFIX, k.domid)),
        (
            format!("{b}/cloudstack/network-id"),
            uuid(0x4e7, k.domid % 7),
        ),
    ]
}

fn write_tx(c: &mut Client<UnixTransport>, kv: &[(String, String)]) -> Result<(), Error> {
    c.transaction(|c, tx| {
        for (p, v) in kv {
            c.write_in(tx, p, v.as_bytes())?;
        }
        Ok(())
    })
}

/// One toolstack: creates and destroys vifs of its own domains.
struct Writer {
    c: Client<UnixTransport>,
    rng: Rng,
    vifs: BTreeMap<VifKey, Model>,
}

impl Writer {
    fn create(&mut self, k: VifKey) {
        if self.vifs[&k] != Model::Absent {
            self.c.rm(&base(k)).unwrap();
        }
        let i = idx(k);
        let m = mac(i);
        let connected = (
            format!("{}/hotplug-status", base(k)),
            "connected".to_string(),
        );
        let roll = self.rng.below(100);
        let model = if roll < 55 {
            // The normal path: toolstack + hook contract + connected, one transaction.
            let mut kv = common_keys(k, &m, "4");
            kv.extend(contract(k, &nic(k).to_uppercase()));
            kv.push(connected);
            write_tx(&mut self.c, &kv).unwrap();
            Model::Bindable
        } else if roll < 70 {
            // Key by key, no transaction, in random order: the binder sees every partial state.
            let mut kv = common_keys(k, &m, "2");
            kv.extend(contract(k, &nic(k)));
            kv.push(connected);
            for j in (1..kv.len()).rev() {
                let r = self.rng.below(j as u64 + 1) as usize;
                kv.swap(j, r);
            }
            for (p, v) in &kv {
                self.c.write(p, v.as_bytes()).unwrap();
            }
            Model::Bindable
        } else if roll < 82 {
            // No contract: MAC fallback (idx % 3 == 0) or name fallback (the others).
            let mut kv = common_keys(k, &m, "4");
            kv.push(connected);
            write_tx(&mut self.c, &kv).unwrap();
            Model::Bindable
        } else if roll < 90 {
            // Half-written: contract present, hotplug not connected yet.
            let mut kv = common_keys(k, &m, "2");
            kv.extend(contract(k, &nic(k)));
            write_tx(&mut self.c, &kv).unwrap();
            Model::Waiting
        } else if roll < 95 {
            // Malformed contract UUID (and a MAC that a fallback *would* match).
            let mut kv = common_keys(k, &m, "4");
            kv.extend(contract(k, &format!("{}x", &nic(k)[..35])));
            kv.push(connected);
            write_tx(&mut self.c, &kv).unwrap();
            Model::Waiting
        } else {
            // A MAC shared by two interfaces and nothing else to go on.
            let mut kv = common_keys(k, AMBIGUOUS_MAC, "4");
            kv.push(connected);
            write_tx(&mut self.c, &kv).unwrap();
            // An ambiguous MAC stops the search: the name fallback (which would match) is not
            // consulted, so the vif waits.
            Model::Waiting
        };
        self.vifs.insert(k, model);
    }

    fn destroy(&mut self, k: VifKey) {
        let b = base(k);
        match self.rng.below(10) {
            0..=4 => self.c.rm(&b).unwrap(),
            5 | 6 => {
                self.c.write(&format!("{b}/online"), b"0").unwrap();
                self.c.rm(&b).unwrap();
            }
            7 | 8 => {
                self.c.write(&format!("{b}/state"), b"5").unwrap();
                self.c.write(&format!("{b}/state"), b"6").unwrap();
                self.c.rm(&b).unwrap();
            }
            _ => {
                // Down but the dir stays (until the next create).
                self.c.write(&format!("{b}/online"), b"0").unwrap();
                self.vifs.insert(k, Model::Down);
                return;
            }
        }
        self.vifs.insert(k, Model::Absent);
    }

    fn finish_or_fix(&mut self, k: VifKey) {
        // A waiting vif gets completed (connected / contract fixed) half of the time.
        let b = base(k);
        let listing = self.c.directory(&b).unwrap();
        let mac = self.c.read_opt_string(&format!("{b}/mac")).unwrap();
        if mac.as_deref() == Some(AMBIGUOUS_MAC) {
            self.destroy(k);
            return;
        }
        let mut kv = contract(k, &nic(k));
        if !listing.iter().any(|n| n == "hotplug-status") {
            kv.push((format!("{b}/hotplug-status"), "connected".into()));
            kv.push((format!("{b}/state"), "4".into()));
        }
        write_tx(&mut self.c, &kv).unwrap();
        self.vifs.insert(k, Model::Bindable);
    }

    fn step(&mut self) {
        let keys: Vec<VifKey> = self.vifs.keys().copied().collect();
        let k = keys[self.rng.below(keys.len() as u64) as usize];
        match self.vifs[&k] {
            Model::Absent | Model::Down => self.create(k),
            Model::Bindable => self.destroy(k),
            Model::Waiting => {
                if self.rng.below(2) == 0 {
                    self.finish_or_fix(k)
                } else {
                    self.destroy(k)
                }
            }
        }
    }
}

fn run_writers(writers: Vec<Writer>, f: fn(&mut Writer)) -> Vec<Writer> {
    let handles: Vec<_> = writers
        .into_iter()
        .map(|mut w| {
            thread::spawn(move || {
                f(&mut w);
                w
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn expected(writers: &[Writer]) -> (BTreeMap<String, String>, BTreeSet<VifKey>) {
    let mut bound = BTreeMap::new();
    let mut waiting = BTreeSet::new();
    for w in writers {
        for (&k, &m) in &w.vifs {
            match m {
                Model::Bindable => {
                    bound.insert(format!("vif{}.{}", k.domid, k.devid), nic(k));
                }
                Model::Waiting => {
                    waiting.insert(k);
                }
                Model::Absent | Model::Down => {}
            }
        }
    }
    (bound, waiting)
}

type Shared = Arc<Mutex<(Binder<UnixTransport>, RecordingSink)>>;

/// Waits until the sink's table equals the expected one, then checks the binder's maps.
fn settle_and_check(shared: &Shared, writers: &[Writer], round: usize) {
    let (want, waiting) = expected(writers);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        {
            let g = shared.lock().unwrap();
            let got: BTreeMap<String, String> =
                g.1.table
                    .iter()
                    .map(|(p, b)| (p.clone(), b.nic_uuid.to_string()))
                    .collect();
            if got == want {
                break;
            }
            if Instant::now() > deadline {
                let extra: Vec<_> = got.iter().filter(|(p, _)| !want.contains_key(*p)).collect();
                let missing: Vec<_> = want
                    .iter()
                    .filter(|(p, n)| got.get(*p) != Some(*n))
                    .take(20)
                    .collect();
                panic!(
                    "round {round}: sink never matched: extra {extra:?}, missing/wrong {missing:?}"
                );
            }
        }
        thread::sleep(Duration::from_millis(50));
    }
    // Give the binder a moment to drain anything still in flight, then compare everything.
    thread::sleep(Duration::from_millis(300));
    let g = shared.lock().unwrap();
    let (binder, sink) = &*g;
    assert!(
        sink.errors.is_empty(),
        "round {round}: sink misuse: {:?}",
        &sink.errors[..sink.errors.len().min(5)]
    );
    let got: BTreeMap<String, String> = sink
        .table
        .iter()
        .map(|(p, b)| (p.clone(), b.nic_uuid.to_string()))
        .collect();
    assert_eq!(got, want, "round {round}: sink table");
    let internal: BTreeMap<String, String> = binder
        .bindings()
        .map(|b| (b.port.clone(), b.nic_uuid.to_string()))
        .collect();
    assert_eq!(internal, want, "round {round}: binder's bound map");
    binder.check_invariants().unwrap();
    let pending: BTreeSet<VifKey> = binder.pending().map(|(k, _)| k).collect();
    assert_eq!(pending, waiting, "round {round}: binder's pending map");
    assert_eq!(
        sink.binds - sink.unbinds,
        want.len(),
        "round {round}: binds - unbinds"
    );
    eprintln!(
        "churn round {round}: {} bound, {} waiting; {} binds / {} unbinds so far",
        want.len(),
        waiting.len(),
        sink.binds,
        sink.unbinds
    );
}

#[test]
fn churn_1000_vifs_binder_tracks_exactly_the_live_set() {
    let d = Xenstored::start(&[]);
    let mut setup = d.client();
    // Domain names for the name fallback.
    setup
        .transaction(|c, tx| {
            for domid in 1..=DOMAINS {
                c.write_in(
                    tx,
                    &format!("/local/domain/{domid}/name"),
                    format!("i-2-{domid}-VM").as_bytes(),
                )?;
            }
            Ok(())
        })
        .unwrap();

    let cfg = BinderConfig {
        retry_interval: Duration::from_millis(200),
        ..BinderConfig::default()
    };
    let binder = Binder::new(d.client(), cfg, Box::new(NoTaps)).unwrap();
    let shared: Shared = Arc::new(Mutex::new((binder, RecordingSink::default())));
    let stop = Arc::new(AtomicBool::new(false));
    let runner = {
        let shared = Arc::clone(&shared);
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let dir = directory();
            while !stop.load(Ordering::Relaxed) {
                let mut g = shared.lock().unwrap();
                let (binder, sink) = &mut *g;
                binder
                    .poll(&dir, sink, Some(Duration::from_millis(20)))
                    .unwrap();
            }
        })
    };

    let mut writers: Vec<Writer> = (0..2u32)
        .map(|t| Writer {
            c: d.client(),
            rng: Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(t + 1)),
            vifs: (1..=DOMAINS)
                .filter(|d| d % 2 == t)
                .flat_map(|domid| (0..DEVS).map(move |devid| VifKey { domid, devid }))
                .map(|k| (k, Model::Absent))
                .collect(),
        })
        .collect();

    // Round 0: every vif appears once, in random order.
    writers = run_writers(writers, |w| {
        let mut keys: Vec<VifKey> = w.vifs.keys().copied().collect();
        for j in (1..keys.len()).rev() {
            let r = w.rng.below(j as u64 + 1) as usize;
            keys.swap(j, r);
        }
        for k in keys {
            w.create(k);
        }
    });
    settle_and_check(&shared, &writers, 0);

    // Rounds 1..=4: random appear/disappear/complete.
    let mut rss = Vec::new();
    for round in 1..=4 {
        writers = run_writers(writers, |w| {
            for _ in 0..1500 {
                w.step();
            }
        });
        settle_and_check(&shared, &writers, round);
        rss.push((d.rss_kib(), rss_kib(std::process::id())));
    }

    // Last round: everything disappears, in random order.
    writers = run_writers(writers, |w| {
        let mut keys: Vec<VifKey> = w.vifs.keys().copied().collect();
        for j in (1..keys.len()).rev() {
            let r = w.rng.below(j as u64 + 1) as usize;
            keys.swap(j, r);
        }
        for k in keys {
            if w.vifs[&k] != Model::Absent {
                w.c.rm(&base(k)).unwrap();
                w.vifs.insert(k, Model::Absent);
            }
        }
    });
    settle_and_check(&shared, &writers, 5);
    stop.store(true, Ordering::Relaxed);
    runner.join().unwrap();

    let mut g = shared.lock().unwrap();
    let (binder, sink) = &mut *g;
    assert_eq!(binder.bindings().count(), 0);
    assert_eq!(binder.pending().count(), 0);
    assert!(sink.table.is_empty());
    // A full resync finds nothing to do.
    let stats = binder.resync(&directory(), sink).unwrap();
    assert_eq!((stats.bound, stats.unbound), (0, 0));
    // Nothing leaked in xenstore either (rm leaves the empty per-domain dirs, as xenstored does).
    for domid in setup.directory("/local/domain/0/backend/vif").unwrap() {
        let left = setup
            .directory(&format!("/local/domain/0/backend/vif/{domid}"))
            .unwrap();
        assert!(left.is_empty(), "domain {domid} still has vifs {left:?}");
    }

    // Memory flat: between round 1 and round 4 (same population size) neither the daemon nor
    // the process running the binder grew by more than allocator noise.
    let (d1, p1) = rss[0];
    let (d4, p4) = rss[3];
    eprintln!("rss KiB: daemon {d1} -> {d4}, binder process {p1} -> {p4}");
    assert!(d4 <= d1 + 4 * 1024, "daemon RSS grew from {d1} to {d4} KiB");
    assert!(
        p4 <= p1 + 8 * 1024,
        "binder process RSS grew from {p1} to {p4} KiB"
    );
}
