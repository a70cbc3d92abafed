// SPDX-License-Identifier: Apache-2.0
//! The hotplug hook `scripts/vif-vrouter` against the dev daemon, with a stand-in `xe` first on
//! PATH, and the binder consuming what it wrote.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{require_xenstore_utils, RecordingSink, TempDir, Xenstored};
use vrouter_xen::binder::{Binder, BinderConfig, IdentifiedBy, NoTaps, StaticDirectory};

const HOOK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/vif-vrouter");
const XAPI_VM: &str = "5f0e4c9a-0000-4000-8000-000000000001";
const XAPI_VIF: &str = "a1b2c3d4-0000-4000-8000-000000000002";
const NIC: &str = "6B1F7A8E-2C3D-4E5F-8A9B-0C1D2E3F4A5B";
const VM: &str = "0a0a0a0a-1111-2222-3333-444444444444";
const NET: &str = "0e0e0e0e-1111-2222-3333-444444444444";
const BASE: &str = "/local/domain/0/backend/vif/12/1";

/// The stand-in for XenServer's `xe` the project ships (`scripts/xe-standin`): answers
/// `vif-param-get` from a table file and logs calls.
const FAKE_XE: &str = include_str!("../scripts/xe-standin");

struct World {
    d: Xenstored,
    tmp: TempDir,
}

impl World {
    fn new(xe_db: &[(&str, &str, &str)]) -> World {
        require_xenstore_utils();
        let d = Xenstored::start(&["-vv"]);
        let tmp = TempDir::new("hook");
        let bin = tmp.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("xe"), FAKE_XE).unwrap();
        std::fs::set_permissions(bin.join("xe"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let w = World { d, tmp };
        w.set_xe_db(xe_db);
        w
    }

    fn set_xe_db(&self, rows: &[(&str, &str, &str)]) {
        let text: String = rows
            .iter()
            .map(|(u, k, v)| format!("{u} {k} {v}\n"))
            .collect();
        std::fs::write(self.tmp.path().join("xe.db"), text).unwrap();
    }

    /// The toolstack's part: backend dir, domain keys, xapi private dir (newer layout).
    fn plug(&self) {
        let mut c = self.d.client();
        c.transaction(|c, tx| {
            for (k, v) in [
                ("frontend", "/local/domain/12/device/vif/1"),
                ("frontend-id", "12"),
                ("online", "1"),
                ("state", "4"),
                ("mac", "02:00:00:00:12:01"),
                ("handle", "1"),
                ("hotplug-status", "connected"),
            ] {
                c.write_in(tx, &format!("{BASE}/{k}"), v.as_bytes())?;
            }
            c.write_in(
                tx,
                "/local/domain/12/vm",
                format!("/vm/{XAPI_VM}").as_bytes(),
            )?;
            c.write_in(tx, "/local/domain/12/name", b"i-2-12-VM")?;
            c.write_in(
                tx,
                &format!("/xapi/{XAPI_VM}/private/vif/1/vif-uuid"),
                XAPI_VIF.as_bytes(),
            )
        })
        .unwrap();
    }

    fn hook(&self, args: &[&str]) -> Output {
        let path = format!(
            "{}:{}",
            self.tmp.path().join("bin").display(),
            std::env::var("PATH").unwrap()
        );
        Command::new("bash")
            .arg(HOOK)
            .args(args)
            .env("PATH", path)
            .env("XENSTORED_PATH", &self.d.socket)
            .env("XE_STANDIN_DB", self.tmp.path().join("xe.db"))
            .env("XE_STANDIN_LOG", self.tmp.path().join("xe.log"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn read(&self, key: &str) -> Option<String> {
        self.d
            .client()
            .read_opt_string(&format!("{BASE}/{key}"))
            .unwrap()
    }

    fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.d.dir.path().join("daemon.log")).unwrap()
    }

    fn xe_log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("xe.log")).unwrap_or_default()
    }
}

fn full_db() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        (XAPI_VIF, "cloudstack-nic-id", NIC),
        (XAPI_VIF, "cloudstack-vm-id", VM),
        (XAPI_VIF, "cloudstack-network-id", NET),
    ]
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "hook failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn hook_online_writes_contract_in_one_transaction_and_binder_binds() {
    let w = World::new(&full_db());
    w.plug();
    ok(&w.hook(&[
        "-action", "online", "-vifuuid", XAPI_VIF, "-vmuuid", XAPI_VM,
    ]));
    assert_eq!(
        w.read("cloudstack/nic-id").as_deref(),
        Some(NIC.to_lowercase().as_str())
    );
    assert_eq!(w.read("cloudstack/vm-id").as_deref(), Some(VM));
    assert_eq!(w.read("cloudstack/network-id").as_deref(), Some(NET));
    assert_eq!(w.read("hotplug-error"), None);
    assert!(w.xe_log().contains(&format!(
        "vif-param-get uuid={XAPI_VIF} param-name=other-config param-key=cloudstack-nic-id"
    )));

    // One transaction: all three contract writes carry the same non-zero transaction id.
    let log = w.daemon_log();
    let tx_ids: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("op: Write") && l.contains("/cloudstack/"))
        .map(|l| {
            l.split("tx_id: ")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap()
        })
        .collect();
    assert_eq!(tx_ids.len(), 3, "{log}");
    assert!(
        tx_ids.iter().all(|t| *t == tx_ids[0] && *t != "0"),
        "{tx_ids:?}"
    );

    // The binder picks it up by contract.
    let mut binder = Binder::new(w.d.client(), BinderConfig::default(), Box::new(NoTaps)).unwrap();
    let mut sink = RecordingSink::default();
    binder
        .poll(
            &StaticDirectory::default(),
            &mut sink,
            Some(Duration::from_secs(1)),
        )
        .unwrap();
    let b = &sink.table["vif12.1"];
    assert_eq!(b.nic_uuid.to_string(), NIC.to_lowercase());
    assert_eq!(b.identified_by, IdentifiedBy::Contract);

    // remove deletes the contract keys and leaves the backend alone.
    ok(&w.hook(&[
        "-action", "remove", "-vifuuid", XAPI_VIF, "-vmuuid", XAPI_VM,
    ]));
    assert_eq!(w.read("cloudstack/nic-id"), None);
    assert!(w
        .d
        .client()
        .directory(&format!("{BASE}/cloudstack"))
        .unwrap_err()
        .is_not_found());
    assert_eq!(w.read("online").as_deref(), Some("1"));
}

#[test]
fn hook_failures_go_to_hotplug_error_and_write_nothing() {
    // No cloudstack-nic-id on the VIF.
    let w = World::new(&[(XAPI_VIF, "cloudstack-vm-id", VM)]);
    w.plug();
    let o = w.hook(&[
        "-action", "online", "-vifuuid", XAPI_VIF, "-vmuuid", XAPI_VM,
    ]);
    assert!(!o.status.success());
    let err = w.read("hotplug-error").unwrap();
    assert!(
        err.starts_with("vif-vrouter:") && err.contains("cloudstack-nic-id"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("cloudstack-nic-id"));
    assert_eq!(w.read("cloudstack/vm-id"), None, "no half-written contract");

    // Malformed nic id.
    w.set_xe_db(&[
        (XAPI_VIF, "cloudstack-nic-id", "nic-42"),
        (XAPI_VIF, "cloudstack-vm-id", VM),
    ]);
    let o = w.hook(&[
        "-action", "online", "-vifuuid", XAPI_VIF, "-vmuuid", XAPI_VM,
    ]);
    assert!(!o.status.success());
    assert!(w
        .read("hotplug-error")
        .unwrap()
        .contains("malformed cloudstack-nic-id"));
    assert_eq!(w.read("cloudstack/nic-id"), None);

    // The hook was called for a different vif than xenstore says.
    w.set_xe_db(&full_db());
    let other = "ffffffff-0000-4000-8000-000000000002";
    let o = w.hook(&[
        "-action", "online", "-domid", "12", "-devid", "1", "-vifuuid", other,
    ]);
    assert!(!o.status.success());
    assert!(w.read("hotplug-error").unwrap().contains("vif-uuid"));

    // Success afterwards clears our earlier error.
    ok(&w.hook(&[
        "-action", "online", "-vifuuid", XAPI_VIF, "-vmuuid", XAPI_VM,
    ]));
    assert_eq!(w.read("hotplug-error"), None);
    assert!(w.read("cloudstack/nic-id").is_some());
    // network-id is optional.
    w.set_xe_db(&[
        (XAPI_VIF, "cloudstack-nic-id", NIC),
        (XAPI_VIF, "cloudstack-vm-id", VM),
    ]);
    ok(&w.hook(&["-action", "add", "-domid", "12", "-devid", "1"]));
    assert_eq!(w.read("cloudstack/network-id"), None);
}

#[test]
fn hook_supports_old_private_layout_and_xenbus_path() {
    let w = World::new(&full_db());
    w.plug();
    let mut c = w.d.client();
    // Older xenopsd: /xapi/<domid>/private; no /local/domain/<domid>/vm.
    c.rm(&format!("/xapi/{XAPI_VM}")).unwrap();
    c.rm("/local/domain/12/vm").unwrap();
    c.write("/xapi/12/private/vif/1/vif-uuid", XAPI_VIF.as_bytes())
        .unwrap();
    let path = format!(
        "{}:{}",
        w.tmp.path().join("bin").display(),
        std::env::var("PATH").unwrap()
    );
    let o = Command::new("bash")
        .arg(HOOK)
        .arg("online")
        .env("XENBUS_PATH", "backend/vif/12/1")
        .env("PATH", path)
        .env("XENSTORED_PATH", &w.d.socket)
        .env("XE_STANDIN_DB", w.tmp.path().join("xe.db"))
        .env("XE_STANDIN_LOG", w.tmp.path().join("xe.log"))
        .output()
        .unwrap();
    ok(&o);
    assert_eq!(
        w.read("cloudstack/nic-id").as_deref(),
        Some(NIC.to_lowercase().as_str())
    );
    // Lookup by -vifuuid alone scans the backends.
    c.rm(&format!("{BASE}/cloudstack")).unwrap();
    ok(&w.hook(&["-action", "online", "-vifuuid", XAPI_VIF]));
    assert!(w.read("cloudstack/vm-id").is_some());
}

#[test]
fn hook_remove_of_a_vanished_vif_is_quiet_and_online_of_unknown_vif_fails() {
    let w = World::new(&full_db());
    ok(&w.hook(&[
        "-action", "remove", "-vifuuid", XAPI_VIF, "-vmuuid", XAPI_VM,
    ]));
    let o = w.hook(&[
        "-action", "online", "-vifuuid", XAPI_VIF, "-vmuuid", XAPI_VM,
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot find vif"));
    // Nothing was created in xenstore by the failed attempt.
    assert!(w
        .d
        .client()
        .directory("/local/domain/0/backend")
        .unwrap_err()
        .is_not_found());
    // Unknown actions are ignored.
    ok(&w.hook(&["-action", "offline", "-vifuuid", XAPI_VIF]));
}
