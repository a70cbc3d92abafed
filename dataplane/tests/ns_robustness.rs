//! Isolation and robustness of the real daemon: two VNs with no route between them exchange
//! nothing; a fuzzed control socket and malformed packets on every port kind (AF_XDP, tap,
//! AF_PACKET fabric) get error replies and counted drops while forwarding goes on. Needs root.

mod nsutil;

use nsutil::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;
use vrouter_dataplane::ctl::{Decoder, Request, Response};

#[test]
fn ns_isolation_two_vns_no_route() {
    require(&["ip", "ping"]);
    let t = "iso";
    let scratch = Scratch::new(t);
    let host = Ns::new(t, "h");
    let vm1 = Vm::veth(t, "vm1", &host, "vif1.0", "02:00:00:00:01:02", "10.1.1.2");
    let vm2 = Vm::veth(t, "vm2", &host, "vif2.0", "02:00:00:00:02:02", "10.1.1.3");
    let dp = Dp::start(&host, &scratch, "dp", "--lcores 1 --port-kind af_packet");
    let mut ops = vec![vrf_op(1, "vn-red"), vrf_op(2, "vn-blue")];
    ops.extend(vm_ops(3, "vif1.0", 1, "02:00:00:00:01:02", "10.1.1.2", 10));
    ops.extend(vm_ops(4, "vif2.0", 2, "02:00:00:00:02:02", "10.1.1.3", 11));
    dp.client().apply(ops).expect("program");
    // Force IP packets into the dataplane despite proxy ARP refusing: static neighbours.
    vm1.ns
        .exec("ip neigh replace 10.1.1.3 lladdr 00:00:5e:00:01:00 dev eth0");
    vm2.ns
        .exec("ip neigh replace 10.1.1.2 lladdr 00:00:5e:00:01:00 dev eth0");
    std::thread::sleep(Duration::from_millis(300));
    let before = ip_in_receives(&vm2.ns);
    let (ok1, _) = vm1.ns.exec_ok("ping -c 5 -i 0.1 -W 1 -q 10.1.1.3");
    let (ok2, _) = vm2.ns.exec_ok("ping -c 5 -i 0.1 -W 1 -q 10.1.1.2");
    std::thread::sleep(Duration::from_millis(300));
    let after = ip_in_receives(&vm2.ns);
    assert!(!ok1 && !ok2, "a ping crossed between VNs");
    assert_eq!(after, before, "vm2 received packets from the other VN");
    let d = drops(&dp);
    assert!(
        drop_count(&d, "No Route") >= 10,
        "pings not counted as No Route: {d:?}"
    );
}

/// Malformed frames a VM might send (from its own MAC).
fn bad_vm_frames(src: &str) -> Vec<Vec<u8>> {
    let g = "00:00:5e:00:01:00";
    let good = ipv4([10, 1, 1, 2], [10, 1, 1, 3], 17, &[0; 16]);
    let mut bad_ihl = good.clone();
    bad_ihl[0] = 0x43;
    let mut long = good.clone();
    long[2..4].copy_from_slice(&1400u16.to_be_bytes());
    vec![
        eth(g, src, 0x0800, &[]),           // Pull Fails
        eth(g, src, 0x0800, &bad_ihl),      // Invalid Packets
        eth(g, src, 0x0800, &long),         // Invalid Packets
        eth(g, src, 0x88b5, &[1, 2, 3, 4]), // Nowhere to go
        eth(
            g,
            src,
            0x0800,
            &ipv4([6, 6, 6, 6], [10, 1, 1, 3], 17, &[0; 8]),
        ), // Invalid Source
        eth("ff:ff:ff:ff:ff:ff", src, 0x0806, &[0, 1, 8]), // Invalid ARP
    ]
}

#[test]
fn ns_fuzz_control_socket_and_malformed_packets() {
    require(&["ip", "ping", "python3"]);
    let t = "fuzz";
    let scratch = Scratch::new(t);
    let host = Ns::new(t, "h");
    let remote = Ns::new(t, "r");
    sh(&format!(
        "ip link add fab0 netns {} type veth peer name fab0 netns {}",
        host.name, remote.name
    ));
    sh(&format!(
        "ip -n {} addr add 192.168.100.1/24 dev fab0",
        host.name
    ));
    sh(&format!(
        "ip -n {} addr add 192.168.100.2/24 dev fab0",
        remote.name
    ));
    sh(&format!("ip -n {} link set fab0 up", host.name));
    sh(&format!("ip -n {} link set fab0 up", remote.name));
    let vm1 = Vm::veth(t, "vm1", &host, "vif1.0", "02:00:00:00:01:02", "10.1.1.2");
    let mut dp = Dp::start(
        &host,
        &scratch,
        "dp",
        "--lcores 1 --port-kind af_xdp --fabric fab0 --fabric-ip 192.168.100.1 \
         --fabric-port-kind af_packet",
    );
    let mut ops = vec![vrf_op(1, "vn1")];
    ops.extend(vm_ops(3, "vif1.0", 1, "02:00:00:00:01:02", "10.1.1.2", 10));
    ops.extend(vm_ops(4, "tap2.0", 1, "02:00:00:00:02:02", "10.1.1.3", 11));
    dp.client().apply(ops).expect("program");
    let vm2 = Vm::adopt_tap(t, "vm2", &host, "tap2.0", "02:00:00:00:02:02", "10.1.1.3");
    assert!(
        wait_reachable(&vm1.ns, "10.1.1.3", Duration::from_secs(10)),
        "no forwarding before fuzzing\n{}",
        dp.log_text()
    );

    // Control socket: each kind of garbage gets an error reply; random bytes never kill it.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bad magic", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ("unknown version", b"VRC\x09\0\0\0\x02{}".to_vec()),
        ("garbage json", b"VRC\x01\0\0\0\x05hello".to_vec()),
        ("unknown op", b"VRC\x01\0\0\0\x0d{\"op\":\"nuke\"}".to_vec()),
        ("truncated", b"VRC\x01\0\0\0\x40{\"op\":".to_vec()),
        ("too large", b"VRC\x01\xff\xff\xff\xff".to_vec()),
    ];
    for (what, bytes) in &cases {
        let mut s = UnixStream::connect(&dp.sock).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        s.write_all(bytes).expect("write");
        if *what == "truncated" {
            s.shutdown(std::net::Shutdown::Write).expect("half-close");
        }
        let mut dec = Decoder::new();
        let mut buf = [0u8; 4096];
        let resp = loop {
            let n = s.read(&mut buf).expect("reply");
            assert!(n > 0, "{what}: closed without an error reply");
            dec.feed(&buf[..n]);
            if let Some(r) = dec.next_message::<Response>().expect("decodable reply") {
                break r;
            }
        };
        assert!(
            matches!(resp, Response::Error { .. }),
            "{what}: expected an error reply, got {resp:?}"
        );
    }
    // Truncated frames and random bytes, each on its own connection.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..200 {
        let mut s = UnixStream::connect(&dp.sock).expect("connect");
        let len = (i * 7) % 300 + 1;
        let mut b: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        if i % 3 == 0 {
            b.splice(0..0, b"VRC\x01\0\0\x01\0".iter().copied());
        }
        let _ = s.write_all(&b);
    }
    assert!(dp.alive(), "daemon died from control socket fuzz");
    dp.client().request(&Request::Info).expect("still answers");

    // Malformed packets on every port kind.
    py_send(&vm1.ns, "eth0", &bad_vm_frames("02:00:00:00:01:02"));
    py_send(&vm2.ns, "tap2.0", &bad_vm_frames("02:00:00:00:02:02"));
    let fab = sh(&format!("cat /sys/class/net/fab0/address 2>/dev/null || ip -n {} -br link show fab0 | awk '{{print $3}}'", host.name));
    let fab_mac = fab.trim();
    let r_mac = remote.exec("cat /sys/class/net/fab0/address");
    let mut udp = vec![0xc0, 0x00, 0x19, 0xeb, 0, 16, 0, 0];
    udp.extend_from_slice(&((999u32 << 12) | 0x100 | 64).to_be_bytes());
    udp.extend_from_slice(&[0; 4]);
    let gre = [0u8, 0, 0x08, 0x00, 0x45, 0, 0, 0];
    let fabric_frames = vec![
        eth(
            fab_mac,
            r_mac.trim(),
            0x0800,
            &ipv4([192, 168, 100, 2], [192, 168, 100, 1], 17, &udp),
        ),
        eth(
            fab_mac,
            r_mac.trim(),
            0x0800,
            &ipv4([192, 168, 100, 2], [192, 168, 100, 1], 47, &gre),
        ),
        eth(fab_mac, r_mac.trim(), 0x0800, &[0x45, 0]),
    ];
    py_send(&remote, "fab0", &fabric_frames);
    std::thread::sleep(Duration::from_millis(500));
    // Counters are folded in from the ports periodically; a little traffic flushes them.
    let (ok, out) = ping(&vm1.ns, "10.1.1.3", 5);
    assert!(ok, "forwarding stopped after malformed input: {out}");
    assert!(dp.alive(), "daemon died from malformed packets");
    let d = drops(&dp);
    for name in [
        "Pull Fails",
        "Invalid Packets",
        "Nowhere to go",
        "Invalid Source",
        "Invalid ARP",
        "Invalid Label",
        "Invalid Protocol",
    ] {
        assert!(drop_count(&d, name) > 0, "no {name:?} drops counted: {d:?}");
    }
    let vifs = match dp.client().request(&Request::VifList).expect("vifs") {
        Response::Vifs { vifs } => vifs,
        r => panic!("unexpected {r:?}"),
    };
    for id in [0u16, 3, 4] {
        let v = vifs.iter().find(|v| v.spec.id == id).expect("vif listed");
        assert!(
            v.stats.drops > 0,
            "vif {id} ({}) counted no drops",
            v.spec.name
        );
    }
    eprintln!(
        "fuzz: drops {:?}",
        d.iter().filter(|x| x.1 > 0).collect::<Vec<_>>()
    );
}
