// SPDX-License-Identifier: Apache-2.0
//! Debian's `xenstore-write` plays the toolstack and the hotplug script against our dev daemon;
//! the binder must bind the right interface, wait on half-written and bad entries, and unbind
//! when the vif goes away.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{require_xenstore_utils, RecordingSink, Xenstored};
use vrouter_xen::binder::{
    Binder, BinderConfig, IdentifiedBy, KnownInterface, NoTaps, PendingReason, StaticDirectory,
    VifKey,
};
use vrouter_xen::transport::UnixTransport;

const NIC_A: &str = "6b1f7a8e-2c3d-4e5f-8a9b-0c1d2e3f4a5b";
const NIC_D: &str = "dddddddd-2c3d-4e5f-8a9b-0c1d2e3f4a5b";
const NIC_B: &str = "bbbbbbbb-2c3d-4e5f-8a9b-0c1d2e3f4a5b";
const NIC_E1: &str = "e1e1e1e1-2c3d-4e5f-8a9b-0c1d2e3f4a5b";
const NIC_E2: &str = "e2e2e2e2-2c3d-4e5f-8a9b-0c1d2e3f4a5b";
const VM: &str = "0a0a0a0a-1111-2222-3333-444444444444";
const NET: &str = "0e0e0e0e-1111-2222-3333-444444444444";

fn iface(nic: &str, name: &str, mac: Option<&str>) -> KnownInterface {
    KnownInterface {
        nic_uuid: nic.parse().unwrap(),
        vm_uuid: VM.parse().unwrap(),
        network_uuid: None,
        name: name.into(),
        mac: mac.map(|m| m.parse().unwrap()),
    }
}

fn directory() -> StaticDirectory {
    StaticDirectory {
        interfaces: vec![
            iface(NIC_A, "web-0", None),
            // A decoy that the name fallback would pick for domain 7: the contract must win.
            iface(NIC_D, "i-2-7-VM-0", None),
            iface(NIC_B, "db-0", Some("02:00:00:00:00:0b")),
            iface(NIC_E1, "e1", Some("02:00:00:00:00:ee")),
            iface(NIC_E2, "e2", Some("02:00:00:00:00:ee")),
        ],
    }
}

struct Harness {
    binder: Binder<UnixTransport>,
    dir: StaticDirectory,
    sink: RecordingSink,
}

impl Harness {
    /// Polls until `cond` holds (or fails after 10 s), then polls once more to make sure nothing
    /// else was pending.
    fn settle(&mut self, what: &str, cond: impl Fn(&Harness) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.binder
                .poll(&self.dir, &mut self.sink, Some(Duration::from_millis(50)))
                .unwrap();
            if cond(self) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for: {what}; sink {:?}",
                self.sink.table
            );
        }
        self.binder
            .poll(&self.dir, &mut self.sink, Some(Duration::from_millis(100)))
            .unwrap();
        assert!(self.sink.errors.is_empty(), "{:?}", self.sink.errors);
        self.binder.check_invariants().unwrap();
    }

    fn pending(&self, domid: u32) -> Option<PendingReason> {
        self.binder
            .pending()
            .find(|(k, _)| *k == VifKey { domid, devid: 0 })
            .map(|(_, r)| r.clone())
    }
}

fn backend(domid: u32, devid: u32, key: &str) -> String {
    format!("/local/domain/0/backend/vif/{domid}/{devid}/{key}")
}

/// The toolstack's part: backend keys without `hotplug-status` (the vif is being plugged).
fn plug(d: &Xenstored, domid: u32, mac: &str) {
    let front = format!("/local/domain/{domid}/device/vif/0");
    let did = domid.to_string();
    d.xs_ok(
        "xenstore-write",
        &[
            &backend(domid, 0, "frontend"),
            &front,
            &backend(domid, 0, "frontend-id"),
            &did,
            &backend(domid, 0, "online"),
            "1",
            &backend(domid, 0, "state"),
            "2",
            &backend(domid, 0, "mac"),
            mac,
            &backend(domid, 0, "handle"),
            "0",
        ],
    );
}

#[test]
fn xenstore_write_plays_hotplug_and_binder_binds_the_right_vif() {
    require_xenstore_utils();
    let d = Xenstored::start(&[]);
    let cfg = BinderConfig {
        retry_interval: Duration::from_millis(100),
        ..BinderConfig::default()
    };
    let binder = Binder::new(d.client(), cfg, Box::new(NoTaps)).unwrap();
    let mut h = Harness {
        binder,
        dir: directory(),
        sink: RecordingSink::default(),
    };
    h.settle("initial scan", |_| true);
    d.xs_ok(
        "xenstore-write",
        &[
            "/local/domain/7/name",
            "i-2-7-VM",
            "/local/domain/7/vm",
            "/vm/x",
        ],
    );

    // vif 7.0: toolstack writes the backend; not connected yet → nothing bound.
    plug(&d, 7, "02:00:00:00:00:07");
    h.settle("7.0 pending", |h| {
        matches!(h.pending(7), Some(PendingReason::NotConnected(None)))
    });
    assert!(h.sink.table.is_empty());

    // Our hook's transaction (nic id in upper case on purpose), still before hotplug-status.
    d.xs_ok(
        "xenstore-write",
        &[
            &backend(7, 0, "cloudstack/nic-id"),
            &NIC_A.to_uppercase(),
            &backend(7, 0, "cloudstack/vm-id"),
            VM,
            &backend(7, 0, "cloudstack/network-id"),
            NET,
        ],
    );
    h.settle("7.0 still pending", |h| h.pending(7).is_some());
    assert!(h.sink.table.is_empty());

    // The vif script reports the device ready.
    d.xs_ok(
        "xenstore-write",
        &[
            &backend(7, 0, "hotplug-status"),
            "connected",
            &backend(7, 0, "state"),
            "4",
        ],
    );
    h.settle("7.0 bound", |h| h.sink.table.contains_key("vif7.0"));
    let b = &h.sink.table["vif7.0"];
    assert_eq!(
        b.nic_uuid.to_string(),
        NIC_A,
        "contract wins over the name fallback (decoy i-2-7-VM-0)"
    );
    assert_eq!(b.vm_uuid.to_string(), VM);
    assert_eq!(b.network_uuid.unwrap().to_string(), NET);
    assert_eq!(b.mac.to_string(), "02:00:00:00:00:07");
    assert_eq!(
        (b.domid, b.devid, b.identified_by),
        (7, 0, IdentifiedBy::Contract)
    );

    // vif 8.0: no contract, MAC of exactly one interface → bound by MAC.
    plug(&d, 8, "02:00:00:00:00:0B");
    d.xs_ok(
        "xenstore-write",
        &[&backend(8, 0, "hotplug-status"), "connected"],
    );
    h.settle("8.0 bound", |h| h.sink.table.contains_key("vif8.0"));
    assert_eq!(h.sink.table["vif8.0"].nic_uuid.to_string(), NIC_B);
    assert_eq!(h.sink.table["vif8.0"].identified_by, IdentifiedBy::Mac);

    // vif 9.0: malformed contract → never bound, not even by a fallback; fixed → bound.
    plug(&d, 9, "02:00:00:00:00:0b");
    d.xs_ok(
        "xenstore-write",
        &[
            &backend(9, 0, "cloudstack/nic-id"),
            "not-a-uuid",
            &backend(9, 0, "cloudstack/vm-id"),
            VM,
            &backend(9, 0, "hotplug-status"),
            "connected",
        ],
    );
    h.settle("9.0 malformed", |h| {
        matches!(h.pending(9), Some(PendingReason::Malformed { .. }))
    });
    assert!(!h.sink.table.contains_key("vif9.0"));

    // vif 10.0: MAC shared by two interfaces → ambiguous, waits.
    plug(&d, 10, "02:00:00:00:00:ee");
    d.xs_ok(
        "xenstore-write",
        &[&backend(10, 0, "hotplug-status"), "connected"],
    );
    h.settle("10.0 ambiguous", |h| {
        matches!(h.pending(10), Some(PendingReason::AmbiguousMac(_, 2)))
    });
    assert!(!h.sink.table.contains_key("vif10.0"));

    // Fix 9.0's contract: it names D, whose interface exists; bound.
    d.xs_ok(
        "xenstore-write",
        &[&backend(9, 0, "cloudstack/nic-id"), NIC_D],
    );
    h.settle("9.0 bound", |h| h.sink.table.contains_key("vif9.0"));
    assert_eq!(h.sink.table["vif9.0"].nic_uuid.to_string(), NIC_D);

    // Going away: online=0, state=Closed, rm.
    d.xs_ok("xenstore-write", &[&backend(7, 0, "online"), "0"]);
    d.xs_ok("xenstore-write", &[&backend(8, 0, "state"), "6"]);
    d.xs_ok("xenstore-rm", &["/local/domain/0/backend/vif/9"]);
    d.xs_ok("xenstore-rm", &["/local/domain/0/backend/vif/10/0"]);
    h.settle("all unbound", |h| h.sink.table.is_empty());
    assert_eq!(h.binder.bindings().count(), 0);
    assert_eq!(
        h.binder.pending().count(),
        0,
        "{:?}",
        h.binder.pending().collect::<Vec<_>>()
    );
    assert_eq!(h.sink.binds, 3);
    assert_eq!(h.sink.unbinds, 3);

    // Removing the whole backend tree (toolstack restart) is handled too.
    plug(&d, 11, "02:00:00:00:00:0b");
    d.xs_ok(
        "xenstore-write",
        &[&backend(11, 0, "hotplug-status"), "connected"],
    );
    h.settle("11.0 bound", |h| h.sink.table.contains_key("vif11.0"));
    d.xs_ok("xenstore-rm", &["/local/domain/0/backend"]);
    h.settle("11.0 unbound", |h| h.sink.table.is_empty());
}

#[test]
fn binder_adopts_existing_bindings_and_drops_stale_ones() {
    require_xenstore_utils();
    let d = Xenstored::start(&[]);
    plug(&d, 3, "02:00:00:00:00:0b");
    d.xs_ok(
        "xenstore-write",
        &[&backend(3, 0, "hotplug-status"), "connected"],
    );
    // First agent run binds 3.0.
    let mut h1 = Harness {
        binder: Binder::new(d.client(), BinderConfig::default(), Box::new(NoTaps)).unwrap(),
        dir: directory(),
        sink: RecordingSink::default(),
    };
    h1.settle("3.0 bound", |h| h.sink.table.contains_key("vif3.0"));
    let mut stale = h1.sink.table["vif3.0"].clone();
    stale.domid = 4;
    stale.port = "vif4.0".into();
    stale.nic_uuid = NIC_A.parse().unwrap();
    // "Agent restart": the dataplane still has vif3.0 (live) and vif4.0 (gone while we were away).
    let mut table = h1.sink.table.clone();
    table.insert(stale.port.clone(), stale.clone());
    drop(h1);
    let mut binder = Binder::new(d.client(), BinderConfig::default(), Box::new(NoTaps)).unwrap();
    binder.adopt(table.values().cloned());
    let mut h2 = Harness {
        binder,
        dir: directory(),
        sink: RecordingSink {
            table,
            ..RecordingSink::default()
        },
    };
    h2.settle("stale dropped", |h| !h.sink.table.contains_key("vif4.0"));
    assert_eq!(
        h2.sink.ports().into_iter().collect::<Vec<_>>(),
        vec!["vif3.0".to_string()]
    );
    assert_eq!(h2.sink.binds, 0, "the live binding was kept, not re-bound");
    assert_eq!(h2.sink.unbinds, 1);
}

/// xenstored goes away (restart): poll reports the lost connection; after `reconnect` the
/// binder resynchronises, keeping what is still there and dropping what is not.
#[test]
fn binder_reconnects_after_losing_xenstore() {
    require_xenstore_utils();
    let d1 = Xenstored::start(&[]);
    plug(&d1, 3, "02:00:00:00:00:0b");
    d1.xs_ok(
        "xenstore-write",
        &[&backend(3, 0, "hotplug-status"), "connected"],
    );
    let mut h = Harness {
        binder: Binder::new(d1.client(), BinderConfig::default(), Box::new(NoTaps)).unwrap(),
        dir: directory(),
        sink: RecordingSink::default(),
    };
    h.settle("3.0 bound", |h| h.sink.table.contains_key("vif3.0"));
    drop(d1);
    let err = h
        .binder
        .poll(&h.dir, &mut h.sink, Some(Duration::from_secs(2)));
    assert!(err.is_err(), "a dead xenstored must be reported");
    // The new xenstored has vif 4.0 (by contract) and no 3.0.
    let d2 = Xenstored::start(&[]);
    plug(&d2, 4, "02:00:00:00:00:04");
    d2.xs_ok(
        "xenstore-write",
        &[
            &backend(4, 0, "cloudstack/nic-id"),
            NIC_A,
            &backend(4, 0, "cloudstack/vm-id"),
            VM,
            &backend(4, 0, "hotplug-status"),
            "connected",
        ],
    );
    h.binder.reconnect(d2.client()).unwrap();
    h.settle("resynced", |h| {
        h.sink.ports().into_iter().collect::<Vec<_>>() == vec!["vif4.0".to_string()]
    });
    assert_eq!(h.sink.table["vif4.0"].nic_uuid.to_string(), NIC_A);
}

/// Some inputs change outside the watched tree (the domain name) or fail transiently (the
/// dataplane refuses a bind): the periodic retry picks them up without any new event.
#[test]
fn binder_retries_what_no_event_reveals() {
    use std::fmt;

    #[derive(Debug)]
    struct Refused;
    impl fmt::Display for Refused {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("dataplane busy")
        }
    }
    impl std::error::Error for Refused {}

    /// Refuses the first two binds, then records.
    #[derive(Default)]
    struct Flaky {
        refusals: u32,
        inner: RecordingSink,
    }
    impl vrouter_xen::binder::BindSink for Flaky {
        type Error = Refused;
        fn bind(&mut self, b: &vrouter_xen::binder::VifBinding) -> Result<(), Refused> {
            if self.refusals < 2 {
                self.refusals += 1;
                return Err(Refused);
            }
            let _ = self.inner.bind(b);
            Ok(())
        }
        fn unbind(&mut self, b: &vrouter_xen::binder::VifBinding) -> Result<(), Refused> {
            let _ = self.inner.unbind(b);
            Ok(())
        }
    }

    require_xenstore_utils();
    let d = Xenstored::start(&[]);
    let cfg = BinderConfig {
        retry_interval: Duration::from_millis(100),
        ..BinderConfig::default()
    };
    let mut binder = Binder::new(d.client(), cfg, Box::new(NoTaps)).unwrap();
    let dir = directory();
    let mut sink = Flaky::default();
    // vif 7.0 with an unknown MAC and no name yet: unidentified.
    plug(&d, 7, "02:00:00:00:00:77");
    d.xs_ok(
        "xenstore-write",
        &[&backend(7, 0, "hotplug-status"), "connected"],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while binder.pending().next().map(|(_, r)| r.clone()) != Some(PendingReason::Unidentified) {
        binder
            .poll(&dir, &mut sink, Some(Duration::from_millis(50)))
            .unwrap();
        assert!(Instant::now() < deadline);
    }
    // The name appears (outside the watched tree): i-2-7-VM-0 is NIC_D in the directory.
    d.xs_ok("xenstore-write", &["/local/domain/7/name", "i-2-7-VM"]);
    while !sink.inner.table.contains_key("vif7.0") {
        binder
            .poll(&dir, &mut sink, Some(Duration::from_millis(50)))
            .unwrap();
        assert!(
            Instant::now() < deadline,
            "never bound; pending {:?}",
            binder.pending().collect::<Vec<_>>()
        );
    }
    assert_eq!(sink.refusals, 2, "two refused binds were retried");
    assert_eq!(sink.inner.table["vif7.0"].nic_uuid.to_string(), NIC_D);
    assert_eq!(sink.inner.table["vif7.0"].identified_by, IdentifiedBy::Name);
    assert_eq!(binder.pending().count(), 0);
}
