//! The crate-independent part of the namespace test helpers: shell commands, namespaces and VMs
//! that clean up after themselves (Drop guards, also on failure), tool checks that fail with
//! the install command. The agent's namespace tests include this file too.
#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Fails the test (never skips) when a tool is missing.
pub fn require(tools: &[&str]) {
    assert!(
        nix_root(),
        "namespace tests need root (CI runs `cargo test` as root)"
    );
    for t in tools {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {t}"))
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        let pkg = match *t {
            "ip" => "iproute2",
            "ping" => "iputils-ping",
            "trafgen" => "netsniff-ng",
            "tshark" => "tshark",
            "iperf3" => "iperf3",
            "ethtool" => "ethtool",
            "xenstore-write" | "xenstore-rm" => "xenstore-utils",
            o => o,
        };
        assert!(
            ok,
            "{t} is required: install it with `apt-get install -y --no-install-recommends {pkg}` \
             (or run scripts/install-deps.sh)"
        );
    }
}

fn nix_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a shell command, panicking with its output if it fails.
pub fn sh(cmd: &str) -> String {
    let o = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("spawn sh");
    assert!(
        o.status.success(),
        "command failed: {cmd}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs a shell command, returning (success, stdout+stderr).
pub fn sh_ok(cmd: &str) -> (bool, String) {
    let o = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("spawn sh");
    let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&o.stderr));
    (o.status.success(), s)
}

/// A network namespace, deleted on drop.
pub struct Ns {
    pub name: String,
}

impl Ns {
    pub fn new(test: &str, role: &str) -> Self {
        let name = format!("vrt3-{test}-{}-{role}", std::process::id());
        let _ = sh_ok(&format!("ip netns del {name} 2>/dev/null"));
        sh(&format!("ip netns add {name}"));
        sh(&format!("ip -n {name} link set lo up"));
        // No IPv6 chatter (router solicitations, DAD) muddying counters.
        let _ = sh_ok(&format!(
            "ip netns exec {name} sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1"
        ));
        Self { name }
    }

    /// `ip netns exec <ns> <cmd>` through sh.
    pub fn exec(&self, cmd: &str) -> String {
        sh(&format!("ip netns exec {} {cmd}", self.name))
    }

    pub fn exec_ok(&self, cmd: &str) -> (bool, String) {
        sh_ok(&format!("ip netns exec {} {cmd}", self.name))
    }

    /// `cmd` to run in the namespace as a process of its own (`sh` execs it, so its pid is the
    /// command's and killing it by pid kills the command).
    pub fn command(&self, cmd: &str) -> Command {
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            &self.name,
            "sh",
            "-c",
            &format!("exec {cmd}"),
        ]);
        c
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        // Kill anything still running inside, then delete.
        let _ = sh_ok(&format!(
            "for p in $(ip netns pids {} 2>/dev/null); do kill -9 $p; done; ip netns del {}",
            self.name, self.name
        ));
    }
}

/// A VM: a namespace with `eth0` whose dom0 end `dev` lives in the host namespace.
pub struct Vm {
    pub ns: Ns,
    pub mac: String,
    pub ip: String,
    pub dev: String,
}

impl Vm {
    /// A veth VM (`dev` is e.g. vif1.0 in `host`).
    pub fn veth(test: &str, role: &str, host: &Ns, dev: &str, mac: &str, ip: &str) -> Self {
        let ns = Ns::new(test, role);
        sh(&format!(
            "ip link add {dev} netns {} type veth peer name eth0 netns {}",
            host.name, ns.name
        ));
        sh(&format!("ip -n {} link set eth0 address {mac}", ns.name));
        sh(&format!("ip -n {} addr add {ip}/24 dev eth0", ns.name));
        sh(&format!("ip -n {} link set eth0 up", ns.name));
        sh(&format!("ip -n {} link set {dev} up", host.name));
        Self {
            ns,
            mac: mac.into(),
            ip: ip.into(),
            dev: dev.into(),
        }
    }

    /// A tap VM: waits for the daemon to create `dev` in `host`, then moves it into the VM.
    pub fn adopt_tap(test: &str, role: &str, host: &Ns, dev: &str, mac: &str, ip: &str) -> Self {
        let ns = Ns::new(test, role);
        let end = Instant::now() + Duration::from_secs(5);
        while !sh_ok(&format!("ip -n {} link show {dev}", host.name)).0 {
            assert!(Instant::now() < end, "daemon did not create {dev}");
            std::thread::sleep(Duration::from_millis(20));
        }
        sh(&format!(
            "ip -n {} link set {dev} netns {}",
            host.name, ns.name
        ));
        sh(&format!("ip -n {} link set {dev} address {mac}", ns.name));
        sh(&format!("ip -n {} addr add {ip}/24 dev {dev}", ns.name));
        sh(&format!("ip -n {} link set {dev} up", ns.name));
        Self {
            ns,
            mac: mac.into(),
            ip: ip.into(),
            dev: dev.into(),
        }
    }
}
