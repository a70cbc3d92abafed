//! Several hosts on one underlay bridge, the shim on the bridge (10.0.0.100:8082), one
//! `vrouter-xenstored` + `vrouter-dp` + `vrouter-agent` per host (host i at 10.0.0.<i+1>), for tests whose VMs live on different hosts (issue 20's address and
//! migration tests). Processes are killed by pid and namespaces deleted on drop.

use super::cloud::{setup, start_agent, start_dp, start_shim, Api, Bins, Proc, TOKEN, VRF};
use super::{sh, tempdir, try_vrctl_json, wait_for, Ns};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

/// One host: its namespace, xenstore socket, dataplane and agent.
pub struct Host {
    pub tag: String,
    pub ns: Ns,
    pub xs: PathBuf,
    _xsd: Proc,
    _dp: Proc,
    pub dp: PathBuf,
    pub pkt0: PathBuf,
    pub agent: Proc,
}

/// The hosts, the shim and the underlay; dropped in that order.
pub struct Hosts {
    pub hosts: Vec<Host>,
    pub shim: Proc,
    pub api: Api,
    pub ul: Ns,
    pub dir: tempfile::TempDir,
}

impl Hosts {
    /// `n` hosts (`h0`, `h1`, ...) for test `test`, or `None` when the binaries are missing.
    pub fn start(test: &str, n: usize) -> Option<Hosts> {
        let bins = setup()?;
        let dir = tempdir();
        let ul = Ns::new(test, "ul");
        sh(&format!("ip -n {} link add br0 type bridge", ul.name));
        sh(&format!("ip -n {} addr add 10.0.0.100/24 dev br0", ul.name));
        sh(&format!("ip -n {} link set br0 up", ul.name));
        let shim = start_shim(&bins, Some(&ul), "10.0.0.100:8082", dir.path(), Some(TOKEN));
        let api = Api {
            base: "http://10.0.0.100:8082".into(),
            ns: Some(ul.name.clone()),
            token: Some(TOKEN.into()),
        };
        let up = wait_for(Duration::from_secs(10), || {
            api.try_call("GET", "/", None).ok()
        });
        assert!(up.is_some(), "shim: {}", shim.log());
        let mut hs = Hosts {
            hosts: Vec::new(),
            shim,
            api,
            ul,
            dir,
        };
        for i in 0..n {
            let h = hs.host(&bins, test, i);
            hs.hosts.push(h);
        }
        Some(hs)
    }

    fn host(&self, bins: &Bins, test: &str, i: usize) -> Host {
        let tag = format!("h{i}");
        let ns = Ns::new(test, &tag);
        let fabric = format!("10.0.0.{}", i + 1);
        let port = format!("p{i}");
        sh(&format!(
            "ip link add fab0 netns {} type veth peer name {port} netns {}",
            ns.name, self.ul.name
        ));
        sh(&format!(
            "ip -n {} link set {port} mtu 1600 master br0 up",
            self.ul.name
        ));
        sh(&format!("ip -n {} link set fab0 mtu 1600", ns.name));
        sh(&format!("ip -n {} addr add {fabric}/24 dev fab0", ns.name));
        sh(&format!("ip -n {} link set fab0 up", ns.name));
        let d = self.dir.path();
        let xs = d.join(format!("xs-{tag}.sock"));
        let xsd = Proc::spawn(
            None,
            &format!("{} --socket {}", bins.xsd.display(), xs.display()),
            &d.join(format!("xenstored-{tag}.log")),
            &[],
        );
        let ready = wait_for(Duration::from_secs(5), || xs.exists().then_some(()));
        assert!(ready.is_some(), "xenstored {tag}: {}", xsd.log());
        let extra = format!("--fabric fab0 --fabric-port-kind af_packet --fabric-ip {fabric}");
        let (dpp, dp, pkt0) = start_dp(bins, &ns, d, &tag, &extra);
        let agent = start_agent(
            Some(&ns),
            d,
            &tag,
            &self.api.base,
            &tag,
            &xs,
            &dp,
            &pkt0,
            Some(TOKEN),
        );
        Host {
            tag,
            ns,
            xs,
            _xsd: xsd,
            _dp: dpp,
            dp,
            pkt0,
            agent,
        }
    }

    /// Kills host `i`'s agent (-9) and starts it again with the same command line; returns
    /// the length of its log before (what the new agent logs comes after).
    pub fn restart_agent(&mut self, i: usize) -> usize {
        let before = self.hosts[i].agent.log().len();
        self.hosts[i].agent.kill9();
        let h = &self.hosts[i];
        let agent = start_agent(
            Some(&h.ns),
            self.dir.path(),
            &h.tag,
            &self.api.base,
            &h.tag,
            &h.xs,
            &h.dp,
            &h.pkt0,
            Some(TOKEN),
        );
        self.hosts[i].agent = agent;
        before
    }

    /// Every agent's log.
    pub fn logs(&self) -> String {
        self.hosts
            .iter()
            .map(|h| format!("agent {}:\n{}", h.tag, h.agent.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The route of `prefix` (`a.b.c.d/32`) in the network's VRF on host `i`, if any.
    pub fn route(&self, i: usize, prefix: &str) -> Option<Value> {
        let rt = try_vrctl_json(&self.hosts[i].dp, &["route", "dump", VRF])?;
        rt.as_array()?
            .iter()
            .find(|r| r["prefix"] == prefix)
            .cloned()
    }

    /// The nexthop of vif `name` on host `i` (`null` if it has none).
    pub fn vif_nh(&self, i: usize, name: &str) -> Value {
        try_vrctl_json(&self.hosts[i].dp, &["vif", "list"])
            .and_then(|v| v.as_array()?.iter().find(|v| v["name"] == name).cloned())
            .map_or(Value::Null, |v| v["nh"].clone())
    }

    /// The label host `i`'s dataplane gives vif `name`, if it has it.
    pub fn label_of(&self, i: usize, name: &str) -> Option<u64> {
        let dp = &self.hosts[i].dp;
        let vifs = try_vrctl_json(dp, &["vif", "list"])?;
        let nh = vifs.as_array()?.iter().find(|v| v["name"] == name)?["nh"].clone();
        let labels = try_vrctl_json(dp, &["mpls", "dump"])?;
        labels.as_array()?.iter().find(|l| l["nh"] == nh)?["label"].as_u64()
    }

    /// The drop counter `reason` (e.g. `Invalid Source`) of host `i`'s dataplane.
    pub fn drops(&self, i: usize, reason: &str) -> u64 {
        try_vrctl_json(&self.hosts[i].dp, &["drops"]).map_or(0, |d| d[reason].as_u64().unwrap_or(0))
    }

    /// The xenstore socket of host `i`.
    pub fn xs(&self, i: usize) -> &Path {
        &self.hosts[i].xs
    }
}

/// Removes a vif's backend directory from xenstore (the domain left this host).
pub fn xs_unplug(xs: &Path, domid: u32) {
    sh(&format!(
        "XENSTORED_PATH={} xenstore-rm /local/domain/0/backend/vif/{domid}",
        xs.display()
    ));
}

/// Runs `f` on a new thread inside the network namespace `ns`.
pub fn spawn_in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        // SAFETY: setns on a valid namespace fd; it changes only this thread's network
        // namespace, and the thread is ours.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
}
