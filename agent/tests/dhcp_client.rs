//! A stock DHCP client (busybox `udhcpc`) gets its address from `services::PacketServices`, and
//! then pings the gateway through it.
//!
//! Two network namespaces joined by a veth pair: `vrt7-dhcp-<pid>` is the VM (its end is `eth0`
//! with the configured MAC), `vrt7-dhcph-<pid>` is dom0 (its end `vif7` stands for the netback
//! vif). A thread in the dom0 namespace plays the dataplane: it reads frames from `vif7` with an
//! AF_PACKET socket, traps the ones the pipeline would trap (UDP to port 67 as `L3Protocols`,
//! ICMP to the gateway as `Receive`) with an agent header, hands them to
//! `PacketServices::handle`, and writes the `TxVif` frames it gets back out of `vif7`.
//!
//! Needs root and busybox (`apt-get install busybox`); fails, never skips, without them.
//! Everything lives in the namespaces the test makes; a guard deletes them and kills the
//! processes it started by PID, also when the test fails.

use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vrouter_agent::services::{PacketServices, Served, ServedInterface};
use vrouter_dataplane::trap::{AgentCmd, AgentHeader, TrapReason, AGENT_HEADER_LEN};
use vrouter_dataplane::wire::ethernet::MacAddr;

const VIF: u16 = 7;
const VRF: u16 = 1;
const VM_MAC: &str = "02:00:0a:01:01:07";
const VM_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 7);
const GW: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 1);
const DNS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 1, 1, 2), Ipv4Addr::new(10, 1, 1, 3)];
const MTU: u16 = 1400;

fn run(cmd: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"))
}

fn must(cmd: &str) -> String {
    let o = run(cmd);
    assert!(
        o.status.success(),
        "{cmd} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Fails (not skips) when busybox or its udhcpc applet is missing.
fn require_busybox() {
    let list = Command::new("busybox").arg("--list").output();
    let ok = matches!(&list, Ok(o) if o.status.success()
        && String::from_utf8_lossy(&o.stdout).lines().any(|l| l == "udhcpc"));
    assert!(
        ok,
        "busybox with the udhcpc applet is required: apt-get install busybox \
         (listed in scripts/deps/apt.txt)"
    );
}

/// The two namespaces, the dataplane stand-in thread and the child processes; torn down on drop.
struct Lab {
    vm_ns: String,
    host_ns: String,
    dir: PathBuf,
    stop: Arc<AtomicBool>,
    pump: Option<JoinHandle<()>>,
    children: Vec<Child>,
}

impl Lab {
    fn new() -> Self {
        let pid = std::process::id();
        let lab = Lab {
            vm_ns: format!("vrt7-dhcp-{pid}"),
            host_ns: format!("vrt7-dhcph-{pid}"),
            dir: std::env::temp_dir().join(format!("vrt7-dhcp-{pid}")),
            stop: Arc::new(AtomicBool::new(false)),
            pump: None,
            children: Vec::new(),
        };
        // Leftovers of an earlier run with the same pid.
        let _ = run(&format!("ip netns del {} 2>/dev/null", lab.vm_ns));
        let _ = run(&format!("ip netns del {} 2>/dev/null", lab.host_ns));
        let _ = fs::remove_dir_all(&lab.dir);
        fs::create_dir_all(&lab.dir).expect("temp dir");
        must(&format!("ip netns add {}", lab.vm_ns));
        must(&format!("ip netns add {}", lab.host_ns));
        let (vm, host) = (&lab.vm_ns, &lab.host_ns);
        must(&format!(
            "ip -n {host} link add vif7 type veth peer name eth0 netns {vm}"
        ));
        must(&format!("ip -n {vm} link set eth0 address {VM_MAC}"));
        for (ns, dev) in [(vm, "eth0"), (vm, "lo"), (host, "vif7"), (host, "lo")] {
            // Quiet links: no IPv6 chatter to read past.
            let _ = run(&format!(
                "ip netns exec {ns} sysctl -qw net.ipv6.conf.all.disable_ipv6=1"
            ));
            must(&format!("ip -n {ns} link set {dev} up"));
        }
        lab
    }

    fn exec(&self, ns: &str, cmd: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, "sh", "-c", cmd]);
        c
    }

    /// Runs `cmd` in the VM namespace until it exits or `timeout` passes (then it is killed by
    /// PID); returns (exit status, stdout+stderr).
    fn vm_run(&mut self, cmd: &str, timeout: Duration) -> (Option<i32>, String) {
        let log = self.dir.join("child.log");
        let out = fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = self
            .exec(&self.vm_ns, cmd)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn in the VM namespace");
        self.children.push(child);
        let deadline = Instant::now() + timeout;
        let status = loop {
            let child = self.children.last_mut().expect("just pushed");
            match child.try_wait().expect("wait") {
                Some(st) => break st.code(),
                None if Instant::now() > deadline => break None,
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        if let Some(mut child) = self.children.pop() {
            let _ = child.kill();
            let _ = child.wait();
        }
        (status, fs::read_to_string(&log).unwrap_or_default())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.pump.take() {
            let _ = t.join();
        }
        let _ = run(&format!("ip netns del {}", self.vm_ns));
        let _ = run(&format!("ip netns del {}", self.host_ns));
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// An AF_PACKET socket on `dev` inside the namespace `ns`; moves the calling thread into `ns`.
fn packet_socket_in(ns: &str, dev: &str) -> io::Result<OwnedFd> {
    let nsf = fs::File::open(format!("/var/run/netns/{ns}"))?;
    // SAFETY: `nsf` is an open namespace file; setns only changes this thread's network namespace.
    if unsafe { libc::setns(nsf.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket we own from here on.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(dev).expect("device name");
    // SAFETY: `name` is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = i32::try_from(ifindex).expect("ifindex");
    // SAFETY: `sll` is a valid sockaddr_ll and the length passed is its size.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            std::ptr::addr_of!(sll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: `tv` is a valid timeval and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            std::ptr::addr_of!(tv).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sock)
}

/// What the pipeline would trap, with which reason (`None`: not trapped, forwarded elsewhere).
fn trap_reason(frame: &[u8]) -> Option<TrapReason> {
    let ip = frame.get(14..)?;
    if frame.get(12..14)? != [0x08, 0x00] || ip.len() < 20 {
        return None;
    }
    let hl = usize::from(ip[0] & 0x0f) * 4;
    let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
    if ip[9] == 17 && frag == 0 && ip.get(hl + 2..hl + 4) == Some(&67u16.to_be_bytes()[..]) {
        return Some(TrapReason::L3Protocols);
    }
    if ip[16..20] == GW.octets() {
        return Some(TrapReason::Receive);
    }
    None
}

/// One line per frame that went through the services, for the test log.
type Trace = Arc<Mutex<Vec<String>>>;

/// The dataplane stand-in: vif7 <-> PacketServices.
fn pump(sock: OwnedFd, services: Arc<Mutex<PacketServices>>, stop: Arc<AtomicBool>, trace: Trace) {
    let mut buf = vec![0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        // SAFETY: `buf` and `from` are valid for the lengths passed.
        let n = unsafe {
            libc::recvfrom(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                std::ptr::addr_of_mut!(from).cast(),
                &mut from_len,
            )
        };
        let Ok(n) = usize::try_from(n) else {
            continue; // timeout: look at `stop` again
        };
        if from.sll_pkttype == libc::PACKET_OUTGOING {
            continue;
        }
        let frame = &buf[..n];
        let Some(reason) = trap_reason(frame) else {
            continue;
        };
        let mut trapped = vec![0u8; AGENT_HEADER_LEN];
        AgentHeader {
            cmd: AgentCmd::Trap,
            reason,
            vif: VIF,
            vrf: VRF,
            param: 0,
        }
        .emit(&mut trapped);
        trapped.extend_from_slice(frame);
        let out = services.lock().expect("services").handle(&trapped);
        trace.lock().expect("trace").push(format!(
            "vif7 rx {n} bytes, trapped as {} -> {} frame(s) back",
            reason.name(),
            out.len()
        ));
        for o in out {
            let h = AgentHeader::parse(&o).expect("agent header");
            assert_eq!(
                (h.cmd, h.vif),
                (AgentCmd::TxVif, VIF),
                "injected to the VM's vif"
            );
            let eth = &o[AGENT_HEADER_LEN..];
            // SAFETY: `eth` is valid for its length; the socket is bound to vif7.
            let sent = unsafe { libc::send(sock.as_raw_fd(), eth.as_ptr().cast(), eth.len(), 0) };
            assert_eq!(sent, eth.len() as isize, "send on vif7");
        }
    }
}

fn parse_kv(s: &str) -> std::collections::BTreeMap<String, String> {
    s.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

#[test]
fn udhcpc_gets_the_configured_address_and_pings_the_gateway() {
    require_busybox();
    let mut lab = Lab::new();

    let mut services = PacketServices::new();
    services
        .add_interface(ServedInterface {
            dns: DNS.to_vec(),
            mtu: Some(MTU),
            lease_secs: 600,
            hostname: Some("vm-7".into()),
            domain: Some("cloud.test".into()),
            ..ServedInterface::new(
                VIF,
                VRF,
                VM_MAC.parse::<MacAddr>().expect("mac"),
                VM_IP,
                24,
                GW,
            )
        })
        .expect("valid interface");
    let services = Arc::new(Mutex::new(services));
    let trace: Trace = Arc::default();

    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    {
        let (ns, services, stop, trace) = (
            lab.host_ns.clone(),
            Arc::clone(&services),
            Arc::clone(&lab.stop),
            Arc::clone(&trace),
        );
        lab.pump = Some(std::thread::spawn(move || {
            match packet_socket_in(&ns, "vif7") {
                Ok(sock) => {
                    let _ = ready_tx.send(Ok(()));
                    pump(sock, services, stop, trace);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        }));
    }
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("pump thread starts")
        .expect("AF_PACKET socket on vif7");

    // The udhcpc script records what it got, then configures eth0 with it.
    let result = lab.dir.join("lease.txt");
    let script = lab.dir.join("udhcpc.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             echo \"udhcpc script: $1 ip=$ip\" >&2\n\
             case \"$1\" in\n\
             bound|renew)\n\
               {{ echo \"ip=$ip\"; echo \"subnet=$subnet\"; echo \"router=$router\"; \
                  echo \"dns=$dns\"; echo \"mtu=$mtu\"; echo \"serverid=$serverid\"; \
                  echo \"lease=$lease\"; echo \"hostname=$hostname\"; echo \"domain=$domain\"; \
                  echo \"interface=$interface\"; }} > {out}\n\
               ip addr add \"$ip/$subnet\" dev \"$interface\"\n\
               ip route add default via \"$router\" dev \"$interface\"\n\
               ;;\n\
             esac\n\
             exit 0\n",
            out = result.display()
        ),
    )
    .expect("write script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");

    let (status, output) = lab.vm_run(
        &format!(
            "busybox udhcpc -i eth0 -n -q -f -t 5 -T 2 -O mtu -s {}",
            script.display()
        ),
        Duration::from_secs(30),
    );
    println!("--- udhcpc output ---\n{output}--- end ---");
    for l in trace.lock().expect("trace").iter() {
        println!("{l}");
    }
    assert_eq!(status, Some(0), "udhcpc got no lease:\n{output}");

    let got = parse_kv(&fs::read_to_string(&result).expect("the script recorded a lease"));
    println!("lease: {got:?}");
    assert_eq!(got["interface"], "eth0");
    assert_eq!(got["ip"], VM_IP.to_string());
    assert_eq!(got["subnet"], "255.255.255.0");
    assert_eq!(got["router"], GW.to_string());
    assert_eq!(got["dns"], "10.1.1.2 10.1.1.3");
    assert_eq!(got["mtu"], MTU.to_string());
    assert_eq!(got["serverid"], GW.to_string());
    assert_eq!(got["lease"], "600");
    assert_eq!(got["hostname"], "vm-7");
    assert_eq!(got["domain"], "cloud.test");

    // The kernel agrees: eth0 holds exactly the address.
    let addrs = must(&format!("ip -n {} -4 -o addr show dev eth0", lab.vm_ns));
    assert!(addrs.contains("inet 10.1.1.7/24"), "{addrs}");
    assert_eq!(addrs.lines().count(), 1, "{addrs}");

    {
        let s = services.lock().expect("services");
        let st = s.stats();
        assert!(st.served(Served::DhcpOffer) >= 1);
        assert!(st.served(Served::DhcpAck) >= 1);
        assert_eq!(st.served(Served::DhcpNak), 0);
        assert_eq!(
            s.lease_state(VIF),
            Some(vrouter_agent::services::LeaseState::Bound)
        );
    }

    // The dataplane answers ARP for the gateway; stand in for that with a static entry, then
    // ping the gateway through the services.
    must(&format!(
        "ip -n {} neigh replace {GW} lladdr {} dev eth0",
        lab.vm_ns,
        MacAddr::VROUTER
    ));
    let (status, output) = lab.vm_run(
        &format!("busybox ping -c 3 -W 2 {GW}"),
        Duration::from_secs(15),
    );
    println!("--- ping output ---\n{output}--- end ---");
    assert_eq!(status, Some(0), "ping to the gateway failed:\n{output}");
    assert!(output.contains("3 packets received"), "{output}");
    assert!(
        services
            .lock()
            .expect("services")
            .stats()
            .served(Served::EchoReply)
            >= 3
    );
}
