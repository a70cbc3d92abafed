//! The controller-side namespace test helpers: the real `vrouter-shim`, `vrouter-xenstored`,
//! `vrouter-dp` and `vrouter-agent` as processes (in namespaces or not, killed by pid on drop),
//! the shim's HTTP API from the namespace it listens in, a one-network cloud created over the
//! VNC API, VMs on veths and the xenstore entries of a plugged vif. Used by `ns_controller` and
//! `ns_restart`.

use super::{require, sh, vrctl_json, wait_for, Ns, Vm};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const VN: &str = "a0f3c5d2-8e61-4b7a-9c2d-1e4f5a6b7c8d";
pub const VRF: &str = "default-domain:default-project:net1";
pub const TOKEN: &str = "s3cret-token";

/// A process (optionally in a namespace), killed by pid on drop.
pub struct Proc {
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(ns: Option<&Ns>, cmd: &str, log: &Path, env: &[(&str, &str)]) -> Self {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log");
        let mut c = match ns {
            Some(ns) => ns.command(cmd),
            None => {
                let mut c = Command::new("sh");
                c.args(["-c", &format!("exec {cmd}")]);
                c
            }
        };
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c
            .stdout(f.try_clone().expect("dup"))
            .stderr(f)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn");
        Self {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    /// SIGKILL and reap (what dropping it does), e.g. an agent's `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    /// Sends `sig` to the process (by its pid).
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own, not yet reaped child's pid; no memory is involved.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }
    /// Some(()) once the process has exited (reaped).
    pub fn try_wait(&mut self) -> Option<()> {
        let c = self.child.as_mut()?;
        matches!(c.try_wait(), Ok(Some(_))).then_some(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn sibling_bin(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join(name);
    p.exists().then_some(p)
}

pub struct Bins {
    pub dp: PathBuf,
    pub shim: PathBuf,
    pub xsd: PathBuf,
}

pub fn setup() -> Option<Bins> {
    require(&["ip", "ping", "xenstore-write", "xenstore-rm", "busybox"]);
    let (Some(dp), Some(shim), Some(xsd)) = (
        sibling_bin("vrouter-dp"),
        sibling_bin("vrouter-shim"),
        sibling_bin("vrouter-xenstored"),
    ) else {
        panic!("build the daemons first: cargo build -p vrouter-dataplane -p vrouter-shim -p vrouter-xen --bins");
    };
    Some(Bins { dp, shim, xsd })
}

/// Runs `f` on a thread inside the network namespace `ns` (to reach a shim listening there).
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("open netns");
            // SAFETY: setns on a valid namespace fd; it only changes this (scoped) thread's
            // network namespace.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("ns thread")
    })
}

/// The shim's HTTP API, from the namespace it listens in (or the root one).
pub struct Api {
    pub base: String,
    pub ns: Option<String>,
    pub token: Option<String>,
}

impl Api {
    pub fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, String> {
        let run = || {
            let mut r = ureq::request(method, &format!("{}{path}", self.base))
                .timeout(Duration::from_secs(5));
            if let Some(t) = &self.token {
                r = r.set("X-Auth-Token", t);
            }
            let res = match body {
                Some(b) => r.send_json(b.clone()),
                None => r.call(),
            };
            match res {
                Ok(r) => {
                    let t = r.into_string().map_err(|e| e.to_string())?;
                    if t.trim().is_empty() {
                        Ok(Value::Null)
                    } else {
                        serde_json::from_str(&t).map_err(|e| e.to_string())
                    }
                }
                Err(ureq::Error::Status(c, r)) => {
                    Err(format!("HTTP {c}: {}", r.into_string().unwrap_or_default()))
                }
                Err(e) => Err(e.to_string()),
            }
        };
        match &self.ns {
            Some(ns) => in_ns(ns, run),
            None => run(),
        }
    }
    pub fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        self.try_call(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }
}

/// One network 10.1.1.0/24 (gateway 10.1.1.1), and per VM a VM, a VMI with a fixed MAC and an
/// instance IP with a fixed address.
pub fn cloud(api: &Api, vms: &[(&str, &str, &str, &str, &str)]) {
    api.ok(
        "POST",
        "/virtual-networks",
        Some(&json!({"virtual-network": {
            "name": "net1", "uuid": VN,
            "fq_name": ["default-domain", "default-project", "net1"],
            "parent_type": "project",
            "network_ipam_refs": [{"to": ["default-domain", "default-project", "default-network-ipam"],
                "attr": {"ipam_subnets": [{"subnet": {"ip_prefix": "10.1.1.0", "ip_prefix_len": 24},
                                           "default_gateway": "10.1.1.1"}]}}]
        }})),
    );
    for (vm, vmi, name, mac, ip) in vms {
        api.ok(
            "POST",
            "/virtual-machines",
            Some(&json!({"virtual-machine": {"name": name, "uuid": vm, "fq_name": [name]}})),
        );
        let ifname = format!("{name}-0");
        api.ok(
            "POST",
            "/virtual-machine-interfaces",
            Some(&json!({"virtual-machine-interface": {
                "name": ifname, "uuid": vmi, "fq_name": [name, ifname], "parent_type": "virtual-machine",
                "virtual_machine_interface_mac_addresses": {"mac_address": [mac]},
                "virtual_network_refs": [{"to": ["default-domain", "default-project", "net1"]}]
            }})),
        );
        api.ok(
            "POST",
            "/instance-ips",
            Some(&json!({"instance-ip": {
                "name": ifname, "fq_name": [ifname], "instance_ip_address": ip,
                "virtual_network_refs": [{"to": ["default-domain", "default-project", "net1"]}],
                "virtual_machine_interface_refs": [{"to": [name, ifname]}]
            }})),
        );
    }
}

/// A VM: a namespace whose eth0 is the peer of `dev` in the host namespace.
pub fn vm_ns(test: &str, role: &str, host: &Ns, dev: &str, mac: &str, ip: &str) -> Ns {
    let vm = Vm::veth(test, role, host, dev, mac, ip);
    sh(&format!(
        "ip -n {} route add default via 10.1.1.1",
        vm.ns.name
    ));
    vm.ns
}

/// What the hotplug hook and netback leave in xenstore for a connected PV vif.
pub fn xs_plug(xs: &Path, domid: u32, vm: &str, vmi: &str, mac: &str) {
    let b = format!("/local/domain/0/backend/vif/{domid}/0");
    sh(&format!(
        "XENSTORED_PATH={} xenstore-write /local/domain/{domid}/name i-{domid}-VM \
         {b}/frontend /local/domain/{domid}/device/vif/0 {b}/frontend-id {domid} {b}/mac {mac} \
         {b}/handle 0 {b}/online 1 {b}/state 4 {b}/hotplug-status connected \
         {b}/cloudstack/nic-id {vmi} {b}/cloudstack/vm-id {vm}",
        xs.display()
    ));
}

pub fn start_dp(
    bins: &Bins,
    host: &Ns,
    dir: &Path,
    tag: &str,
    extra: &str,
) -> (Proc, PathBuf, PathBuf) {
    let sock = dir.join(format!("dp-{tag}.sock"));
    let pkt0 = dir.join(format!("pkt0-{tag}.sock"));
    let p = Proc::spawn(
        Some(host),
        &format!(
            "{} --ctl-socket {} --agent-socket {} --lcores 0 --port-kind af_packet --log-level info {extra}",
            bins.dp.display(),
            sock.display(),
            pkt0.display()
        ),
        &dir.join(format!("dp-{tag}.log")),
        &[],
    );
    let up = wait_for(Duration::from_secs(10), || {
        super::vrctl(&sock, &["info"])
            .status
            .success()
            .then_some(())
    });
    assert!(up.is_some(), "vrouter-dp did not come up:\n{}", p.log());
    (p, sock, pkt0)
}

pub fn start_shim(
    bins: &Bins,
    ns: Option<&Ns>,
    listen: &str,
    dir: &Path,
    token: Option<&str>,
) -> Proc {
    start_shim_args(bins, ns, listen, dir, token, "")
}

/// [`start_shim`] with more flags (e.g. `--bgp ADDR`).
#[allow(dead_code)] // not every test crate starts a BGP speaker
pub fn start_shim_args(
    bins: &Bins,
    ns: Option<&Ns>,
    listen: &str,
    dir: &Path,
    token: Option<&str>,
    extra: &str,
) -> Proc {
    let tok = token.map(|t| format!(" --token {t}")).unwrap_or_default();
    Proc::spawn(
        ns,
        &format!(
            "{} --listen {listen} --store sqlite:{}{tok} {extra}",
            bins.shim.display(),
            dir.join("shim.db").display()
        ),
        &dir.join("shim.log"),
        &[],
    )
}

#[allow(clippy::too_many_arguments)]
pub fn start_agent(
    ns: Option<&Ns>,
    dir: &Path,
    tag: &str,
    url: &str,
    host: &str,
    xs: &Path,
    dp: &Path,
    pkt0: &Path,
    token: Option<&str>,
) -> Proc {
    let env: Vec<(&str, &str)> = token
        .map(|t| vec![("VROUTER_SHIM_TOKEN", t)])
        .unwrap_or_default();
    Proc::spawn(
        ns,
        &format!(
            "{} --controller {url} --hostname {host} --xenstore --xenstore-socket {} \
             --dp-socket {} --agent-socket {} --agent-local-socket {} --state-dir {} --poll-ms 50",
            env!("CARGO_BIN_EXE_vrouter-agent"),
            xs.display(),
            dp.display(),
            pkt0.display(),
            dir.join(format!("agent-pkt0-{tag}.sock")).display(),
            dir.join(format!("state-{tag}")).display(),
        ),
        &dir.join(format!("agent-{tag}.log")),
        &[&[("RUST_LOG", "info")], env.as_slice()].concat(),
    )
}

pub fn vif(sock: &Path, name: &str) -> Option<Value> {
    let v = vrctl_json(sock, &["vif", "list"]);
    v.as_array()?.iter().find(|v| v["name"] == name).cloned()
}

pub fn routes(api: &Api) -> Vec<Value> {
    api.try_call("GET", &format!("/vrouter/routes?vrf={VRF}"), None)
        .ok()
        .and_then(|v| v["routes"].as_array().cloned())
        .unwrap_or_default()
}

pub fn ping_ok(ns: &Ns, dst: &str, within: Duration) -> bool {
    wait_for(within, || {
        ns.exec_ok(&format!("ping -c 1 -W 1 {dst}")).0.then_some(())
    })
    .is_some()
}
