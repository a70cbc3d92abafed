//! Strict input checks of the real daemon on both device port kinds (AF_PACKET and AF_XDP, for
//! the VM ports and the fabric alike): frames that must not be forwarded (802.1Q-tagged from a
//! VM, a bad IPv4 header checksum from a VM or on the fabric's outer header, unicast from a VM
//! to another MAC than the vRouter's, an overlay packet whose UDP length disagrees with its IP
//! payload) reach no VM and are counted under their drop reason, while good frames of the same
//! shape are delivered. Needs root.

mod nsutil;

use nsutil::*;
use std::time::{Duration, Instant};

const VM1_MAC: &str = "02:00:00:00:01:02";
const VM2_MAC: &str = "02:00:00:00:02:02";
const GW_MAC: &str = "00:00:5e:00:01:00";
/// VM2's label (`vm_ops` gives nexthop + 100).
const VM2_LABEL: u32 = 111;
/// Of each bad frame, this many are sent.
const N: usize = 5;

/// A UDP datagram (checksum 0) inside a valid IPv4 header.
fn udp_packet(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut udp = vec![0x9c, 0x40, 0x13, 0x89];
    udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    ipv4(src, dst, 17, &udp)
}

/// MPLSoUDP to `fabric_mac` (host 192.168.100.1) from the remote host, with VM2's label.
fn overlay(fabric_mac: &str, remote_mac: &str, inner: &[u8]) -> Vec<u8> {
    let mut udp = vec![0xc0, 0x00, 0x19, 0xeb];
    udp.extend_from_slice(&((8 + 4 + inner.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&((VM2_LABEL << 12) | 0x100 | 64).to_be_bytes());
    udp.extend_from_slice(inner);
    let ip = ipv4([192, 168, 100, 2], [192, 168, 100, 1], 17, &udp);
    eth(fabric_mac, remote_mac, 0x0800, &ip)
}

/// The frame with its IPv4 header checksum (at Ethernet + 10) off by one.
fn bad_checksum(mut f: Vec<u8>) -> Vec<u8> {
    f[14 + 11] ^= 1;
    f
}

/// Counters of interest, by `dropstats` name.
const REASONS: [&str; 4] = [
    "VLAN Tagged",
    "Checksum errors",
    "No L2 Route",
    "Invalid Packets",
];

fn counts(dp: &Dp) -> [u64; 4] {
    let d = drops(dp);
    REASONS.map(|r| drop_count(&d, r))
}

fn input_checks_on(kind: &str) {
    require(&["ip", "ping", "python3"]);
    let t = &format!("chk{}", &kind[3..]);
    let scratch = Scratch::new(t);
    let host = Ns::new(t, "h");
    let remote = Ns::new(t, "r");
    sh(&format!(
        "ip link add fab0 netns {} type veth peer name fab0 netns {}",
        host.name, remote.name
    ));
    for (ns, ip) in [(&host, "192.168.100.1"), (&remote, "192.168.100.2")] {
        sh(&format!("ip -n {} addr add {ip}/24 dev fab0", ns.name));
        sh(&format!("ip -n {} link set fab0 up", ns.name));
    }
    let vm1 = Vm::veth(t, "vm1", &host, "vif1.0", VM1_MAC, "10.1.1.2");
    let vm2 = Vm::veth(t, "vm2", &host, "vif2.0", VM2_MAC, "10.1.1.3");
    let mut dp = Dp::start(
        &host,
        &scratch,
        "dp",
        &format!(
            "--lcores 1 --port-kind {kind} --fabric fab0 --fabric-ip 192.168.100.1 \
             --fabric-port-kind {kind}"
        ),
    );
    let mut ops = vec![vrf_op(1, "vn1")];
    ops.extend(vm_ops(3, "vif1.0", 1, VM1_MAC, "10.1.1.2", 10));
    ops.extend(vm_ops(4, "vif2.0", 1, VM2_MAC, "10.1.1.3", 11));
    dp.client().apply(ops).expect("program");
    assert!(
        wait_reachable(&vm1.ns, "10.1.1.3", Duration::from_secs(10)),
        "no forwarding on {kind}\n{}",
        dp.log_text()
    );
    let fab_mac = sh(&format!(
        "ip netns exec {} cat /sys/class/net/fab0/address",
        host.name
    ));
    let remote_mac = remote.exec("cat /sys/class/net/fab0/address");
    let (fab_mac, remote_mac) = (fab_mac.trim(), remote_mac.trim());

    let to_vm2 = udp_packet([10, 1, 1, 2], [10, 1, 1, 3], b"from vm1");
    let good_vm = eth(GW_MAC, VM1_MAC, 0x0800, &to_vm2);
    let mut tagged = eth(GW_MAC, VM1_MAC, 0x8100, &[0x00, 0x05, 0x08, 0x00]);
    tagged.extend_from_slice(&to_vm2);
    let inner = udp_packet([10, 1, 1, 9], [10, 1, 1, 3], b"from afar");
    let good_overlay = overlay(fab_mac, remote_mac, &inner);
    let mut bad_udp_len = good_overlay.clone();
    bad_udp_len[14 + 20 + 5] += 1;

    let before = counts(&dp);
    let received = ip_in_receives(&vm2.ns);
    let vm_frames: Vec<Vec<u8>> = [
        vec![tagged; N],
        vec![bad_checksum(good_vm.clone()); N],
        vec![eth(VM2_MAC, VM1_MAC, 0x0800, &to_vm2); N],
        vec![good_vm],
    ]
    .concat();
    py_send(&vm1.ns, "eth0", &vm_frames);
    let fabric_frames: Vec<Vec<u8>> = [
        vec![bad_checksum(good_overlay.clone()); N],
        vec![bad_udp_len; N],
        vec![good_overlay],
    ]
    .concat();
    py_send(&remote, "fab0", &fabric_frames);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        ip_in_receives(&vm2.ns) - received,
        2,
        "on {kind}: VM2 must get the good frame from VM1 and the good overlay frame, \
         none of the bad ones"
    );

    // Drops inside a port are folded into the counters every 1024 lcore rounds: traffic
    // turns the rounds over.
    let want = [N as u64, 2 * N as u64, N as u64, N as u64];
    let end = Instant::now() + Duration::from_secs(20);
    let got = loop {
        let now = counts(&dp);
        let got: Vec<u64> = now.iter().zip(before).map(|(a, b)| a - b).collect();
        if got == want || Instant::now() > end {
            break got;
        }
        ping(&vm1.ns, "10.1.1.3", 2);
    };
    assert_eq!(
        got,
        want,
        "on {kind}: drops by reason {REASONS:?}\n{:?}",
        drops(&dp).iter().filter(|x| x.1 > 0).collect::<Vec<_>>()
    );
    assert!(dp.alive(), "daemon died");
}

#[test]
fn ns_malformed_input_is_dropped_and_counted_on_af_packet() {
    input_checks_on("af_packet");
}

#[test]
fn ns_malformed_input_is_dropped_and_counted_on_af_xdp() {
    input_checks_on("af_xdp");
}
