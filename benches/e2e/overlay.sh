#!/usr/bin/env bash
# Overlay benchmark: the tenant's main path, a VM on one host to a VM on another host through a
# tunnel over the underlay, for every forwarder side by side in one run.
#   host A (ns o23ob-ha) --- underlay veth fab0<->fab0, MTU $UMTU --- host B (ns o23ob-hb)
#   vm1 (10.1.1.2, ns o23ob-vm1) on A's vif1.0          vm2 (10.1.1.3, ns o23ob-vm2) on B's vif1.0
# Forwarders:
#   vrouter-udp-af_packet, vrouter-udp-af_xdp : this dataplane, MPLSoUDP, ports of that kind
#   vrouter-gre-af_packet, vrouter-gre-af_xdp : this dataplane, MPLSoGRE
#   kernel-vxlan                              : Linux VXLAN + bridge in each host namespace
#   ovs-vxlan                                 : Open vSwitch userspace datapath (netdev), a VXLAN
#                                               port on br-int, native tunnelling through br-phy
# The VMs' MTU is (by default) the underlay's minus 50 (VXLAN's overhead, the largest of the three) for every
# forwarder, so all carry the same inner packets.
# Figures: TCP Gbit/s single stream and 4 streams (iperf3) with the sender's retransmits, 60-byte
# (64 on the wire) pps delivered to vm2 (trafgen from vm1), ping RTT (avg of 50 x 20 ms), and CPU
# seconds per GB moved during the single-stream run: the forwarder processes' CPU time (every
# process in the host namespaces), the machine's irq + softirq time (the kernel's forwarding;
# other tenants' share of it is small) and both iperf3 ends' own CPU figures.
# Writes out/overlay-<umtu>-<vmtu>.json and .md; prints one line per peer skipped.
# Root only; namespaces o23ob-*, all removed at exit. Every step is bounded by `timeout`.
# Usage: benches/e2e/overlay.sh [forwarder ...]   (default: all)
# Env: UMTU (underlay MTU, 1500; 9000 for the jumbo variant), VMTU (the VMs' MTU, UMTU - 50;
#      VMTU=1500 with UMTU=9000 is the usual jumbo-underlay deployment: the dataplane's 2 KiB
#      buffers do not take VM frames over 1920 bytes), SECS (iperf3 seconds, 5),
#      NUM (trafgen frames, 1000000), REPEAT (rounds, interleaved, 1).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$here/out"; mkdir -p "$out"
P=o23ob
UMTU=${UMTU:-1500}
VMTU=${VMTU:-$((UMTU - 50))}
SECS=${SECS:-5}
NUM=${NUM:-1000000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
skipped="$out/overlay-skipped.txt"; : > "$skipped"

# A peer's tool, installed when missing (bounded); false when it still is not there.
peer_tool() {  # $1 command, $2 Debian package
  command -v "$1" >/dev/null && return 0
  if command -v apt-get >/dev/null; then
    echo "installing $2 for $1" >&2
    timeout 600 apt-get install -y --no-install-recommends "$2" >/dev/null 2>&1
  fi
  command -v "$1" >/dev/null
}
need() { command -v "$1" >/dev/null || peer_tool "$1" "$2" || { echo "missing $1 ($2)" >&2; exit 1; }; }
need ip iproute2; need iperf3 iperf3; need trafgen netsniff-ng; need ping iputils-ping; need ethtool ethtool

pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
  sleep 0.3
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done
  pids=()
  for n in $(ip netns list | awk '{print $1}' | grep "^$P-"); do
    for q in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$q" 2>/dev/null; done
    ip netns del "$n"
  done
}
trap cleanup EXIT

FAB_A=02:fa:00:00:00:01; FAB_B=02:fa:00:00:00:02
VM1_MAC=02:00:00:00:01:02; VM2_MAC=02:00:00:00:02:02

topo() {
  cleanup
  for n in ha hb vm1 vm2; do ip netns add $P-$n; ip -n $P-$n link set lo up
    ip netns exec $P-$n sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1; done
  ip link add fab0 netns $P-ha type veth peer name fab0 netns $P-hb
  ip -n $P-ha link set fab0 address $FAB_A mtu "$UMTU" up
  ip -n $P-hb link set fab0 address $FAB_B mtu "$UMTU" up
  ip -n $P-ha addr add 192.168.100.1/24 dev fab0
  ip -n $P-hb addr add 192.168.100.2/24 dev fab0
  ip link add vif1.0 netns $P-ha type veth peer name eth0 netns $P-vm1
  ip link add vif1.0 netns $P-hb type veth peer name eth0 netns $P-vm2
  ip -n $P-vm1 link set eth0 address $VM1_MAC mtu $VMTU up
  ip -n $P-vm2 link set eth0 address $VM2_MAC mtu $VMTU up
  ip -n $P-ha link set vif1.0 mtu $VMTU up
  ip -n $P-hb link set vif1.0 mtu $VMTU up
  ip -n $P-vm1 addr add 10.1.1.2/24 dev eth0
  ip -n $P-vm2 addr add 10.1.1.3/24 dev eth0
}

# CPU jiffies of the forwarder processes (every process in the two host namespaces: vrouter-dp,
# ovs-vswitchd) plus the machine's irq and softirq time (where the kernel's own forwarding runs).
fwd_jiffies() {
  local n=0 p t
  for h in ha hb; do for p in $(ip netns pids $P-$h 2>/dev/null); do
    t=$(awk '{print $14+$15}' /proc/$p/stat 2>/dev/null) && n=$((n + ${t:-0}))
  done; done
  echo $((n + $(awk '/^cpu /{print $7+$8}' /proc/stat)))
}
hz() { getconf CLK_TCK; }

iperf() {  # $1 streams; prints "gbps retransmits cpu_s_per_gb"
  local f0 f1 j
  timeout $((SECS + 20)) ip netns exec $P-vm2 iperf3 -s -1 -B 10.1.1.3 -p 5201 >/dev/null 2>&1 & local sp=$!
  sleep 0.5
  f0=$(fwd_jiffies)
  j=$(timeout $((SECS + 15)) ip netns exec $P-vm1 iperf3 -c 10.1.1.3 -p 5201 -t "$SECS" -P "$1" -J 2>/dev/null)
  f1=$(fwd_jiffies)
  wait $sp 2>/dev/null
  # CPU = forwarders + irq/softirq + both iperf3 ends (iperf3's own figures: user + system).
  echo "$j" | python3 -c '
import json, sys
hz, f0, f1 = map(float, sys.argv[1:4])
try:
    e = json.load(sys.stdin)["end"]
    bits = e["sum_received"]["bits_per_second"]; moved = e["sum_received"]["bytes"]
    secs = e["sum_received"]["seconds"]
    retr = e["sum_sent"].get("retransmits", 0)
    u = e.get("cpu_utilization_percent", {})
    ends = (u.get("host_total", 0) + u.get("remote_total", 0)) / 100 * secs
except Exception:
    print("0 null null"); sys.exit()
cpu = (f1 - f0) / hz + ends
print(round(bits / 1e9, 3), retr, round(cpu / (moved / 1e9), 3) if moved else "null")
' "$(hz)" "$f0" "$f1"
}

measure() {  # $1 name; prints a JSON object
  local name=$1 rtt one four pps dmac m r0 r1 t0 t1
  ip netns exec $P-vm1 ping -c 3 -W 2 -q 10.1.1.3 >/dev/null 2>&1
  rtt=$(timeout 20 ip netns exec $P-vm1 ping -c 50 -i 0.02 -W 2 -q 10.1.1.3 2>/dev/null | awk -F/ '/rtt/{print $5}')
  read -r g1 r1s c1 <<<"$(iperf 1)"
  read -r g4 r4s _ <<<"$(iperf 4)"
  dmac=$(ip -n $P-vm1 neigh show 10.1.1.3 | awk '{for(i=1;i<=NF;i++) if($i=="lladdr") print $(i+1)}')
  m=$(echo "${dmac:-ff:ff:ff:ff:ff:ff}" | sed 's/^/0x/; s/:/, 0x/g')
  cat > "$out/o23-udp60.cfg" <<CFG
{ $m, 0x02, 0x00, 0x00, 0x00, 0x01, 0x02, 0x08, 0x00,
  0x45, 0x00, const16(46), const16(0), 0x40, 0x00, 64, 17, csumip(14, 33),
  10, 1, 1, 2,   10, 1, 1, 3,
  const16(9), const16(9), const16(26), const16(0), fill(0x41, 18), }
CFG
  r0=$(ip netns exec $P-vm2 cat /sys/class/net/eth0/statistics/rx_packets); t0=$(date +%s.%N)
  timeout 60 ip netns exec $P-vm1 trafgen --dev eth0 --conf "$out/o23-udp60.cfg" --num "$NUM" --cpus 1 > "$out/o23-trafgen.log" 2>&1
  sleep 0.2
  r1=$(ip netns exec $P-vm2 cat /sys/class/net/eth0/statistics/rx_packets); t1=$(date +%s.%N)
  pps=$(python3 -c "print(int(($r1-$r0)/($t1-$t0-0.2)))")
  echo "{\"forwarder\":\"$name\",\"umtu\":$UMTU,\"gbps\":${g1:-0},\"retr\":${r1s:-null},\"gbps4\":${g4:-0},\"retr4\":${r4s:-null},\"pps\":${pps:-0},\"rtt_ms\":${rtt:-null},\"cpu_s_per_gb\":${c1:-null},\"load\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}"
}

ip2int() { python3 -c "import ipaddress,sys; print(int(ipaddress.IPv4Address(sys.argv[1])))" "$1"; }

run_vrouter() {  # $1 MplsOverUdp|MplsOverGre, $2 af_packet|af_xdp, $3 name
  topo
  local bin="$CARGO_TARGET_DIR/release/vrouter-dp" h sock
  for h in ha hb; do
    sock="$out/o23-dp-$h.sock"; rm -f "$sock"
    local fip=192.168.100.1; [ $h = hb ] && fip=192.168.100.2
    ip netns exec $P-$h "$bin" --port-kind "$2" --fabric fab0 --fabric-ip $fip --ctl-socket "$sock" \
      --agent-socket none --log-level warn > "$out/o23-$3-$h.log" 2>&1 & pids+=($!)
  done
  for h in ha hb; do sock="$out/o23-dp-$h.sock"; for _ in $(seq 200); do [ -S "$sock" ] && break; sleep 0.05; done; done
  program() {  # $1 host, $2 local vm mac, $3 local ip, $4 remote ip, $5 sip, $6 dip, $7 smac, $8 dmac, $9 remote label
    python3 "$here/vrctl_min.py" "$out/o23-dp-$1.sock" <<JSON
[{"AddVrf":{"id":1,"name":"vn1"}},
 {"AddVif":{"id":3,"name":"vif1.0","kind":"Virtual","vrf":1,"mac":"$2","ip":$(ip2int "$3"),"mtu":$VMTU,"nh":10}},
 {"AddNh":{"id":10,"spec":{"Encap":{"oif":3,"dmac":"$2","smac":"00:00:5e:00:01:00"}}}},
 {"AddRoute":{"vrf":1,"prefix":$(ip2int "$3"),"plen":32,"route":{"nh":10,"label":null,"proxy_arp":true}}},
 {"AddLabel":{"label":110,"nh":10}},
 {"AddNh":{"id":20,"spec":{"Tunnel":{"oif":0,"kind":"$TK","sip":$(ip2int "$5"),"dip":$(ip2int "$6"),"dmac":"$8","smac":"$7"}}}},
 {"AddRoute":{"vrf":1,"prefix":$(ip2int "$4"),"plen":32,"route":{"nh":20,"label":$9,"proxy_arp":true}}}]
JSON
  }
  TK=$1
  program ha $VM1_MAC 10.1.1.2 10.1.1.3 192.168.100.1 192.168.100.2 $FAB_A $FAB_B 110 || { cleanup; return; }
  program hb $VM2_MAC 10.1.1.3 10.1.1.2 192.168.100.2 192.168.100.1 $FAB_B $FAB_A 110 || { cleanup; return; }
  for _ in $(seq 40); do ip netns exec $P-vm1 ping -c 1 -W 1 -q 10.1.1.3 >/dev/null 2>&1 && break; sleep 0.25; done
  measure "$3"
  for h in ha hb; do  # what each dataplane dropped, beside the figures (stderr)
    echo "$3 host $h drops: $("$CARGO_TARGET_DIR/release/vrctl" --socket "$out/o23-dp-$h.sock" drops --nonzero 2>&1 | tr -s ' \n' ' ')" >&2
    echo "$3 host $h kernel: $(ip -n $P-$h -s -s link show fab0 | tr -s ' \n' ' ' | cut -c1-400)" >&2
  done
  cleanup
}

run_kernel_vxlan() {
  topo
  local h l r
  for h in ha hb; do
    l=192.168.100.1; r=192.168.100.2; [ $h = hb ] && { l=192.168.100.2; r=192.168.100.1; }
    ip -n $P-$h link add vx0 type vxlan id 42 local $l remote $r dstport 4789 dev fab0
    ip -n $P-$h link add br0 type bridge
    ip -n $P-$h link set vx0 master br0 mtu $VMTU up
    ip -n $P-$h link set vif1.0 master br0
    ip -n $P-$h link set br0 up
  done
  for _ in $(seq 20); do ip netns exec $P-vm1 ping -c 1 -W 1 -q 10.1.1.3 >/dev/null 2>&1 && break; sleep 0.25; done
  measure kernel-vxlan
  cleanup
}

ovs_host() {  # $1 host, $2 local ip, $3 remote ip, $4 fabric mac; one ovs-vswitchd per host namespace
  local D="$out/o23-ovs-$1"; rm -rf "$D"; mkdir -p "$D"
  export OVS_RUNDIR=$D OVS_LOGDIR=$D OVS_DBDIR=$D OVS_SYSCONFDIR=$D
  local db="unix:$D/db.sock" vs=(ovs-vsctl --db="unix:$D/db.sock" --timeout=20)
  ovsdb-tool create "$D/conf.db" /usr/share/openvswitch/vswitch.ovsschema
  ovsdb-server "$D/conf.db" --remote="punix:$D/db.sock" --pidfile="$D/ovsdb-server.pid" \
    --log-file="$D/ovsdb-server.log" --unixctl="$D/ovsdb-server.ctl" --detach
  "${vs[@]}" --no-wait init
  ip netns exec $P-$1 ovs-vswitchd "$db" --pidfile="$D/ovs-vswitchd.pid" --log-file="$D/ovs-vswitchd.log" \
    --unixctl="$D/ovs-vswitchd.ctl" --detach
  pids+=("$(cat "$D/ovsdb-server.pid")" "$(cat "$D/ovs-vswitchd.pid")")
  # The underlay address moves from fab0 to br-phy, the bridge OVS's native tunnelling routes
  # through; fab0 becomes br-phy's port.
  ip -n $P-$1 addr flush dev fab0
  "${vs[@]}" add-br br-phy -- set bridge br-phy datapath_type=netdev other_config:hwaddr="$4" \
    -- add-port br-phy fab0
  "${vs[@]}" add-br br-int -- set bridge br-int datapath_type=netdev \
    -- add-port br-int vif1.0 \
    -- add-port br-int vx0 -- set interface vx0 type=vxlan options:remote_ip="$3" options:key=42
  ip -n $P-$1 link set br-phy mtu "$UMTU" up
  ip -n $P-$1 addr add "$2/24" dev br-phy
  ovs-appctl -t "$D/ovs-vswitchd.ctl" ovs/route/add "$3/32" br-phy >/dev/null 2>&1
}

ovs_stop() {
  local h
  for h in ha hb; do
    ovs-appctl -t "$out/o23-ovs-$h/ovs-vswitchd.ctl" exit >/dev/null 2>&1
    ovs-appctl -t "$out/o23-ovs-$h/ovsdb-server.ctl" exit >/dev/null 2>&1
  done
}

run_ovs_vxlan() {
  peer_tool ovs-vswitchd openvswitch-switch || { echo "ovs-vxlan: openvswitch-switch not installed" >> "$skipped"; return; }
  topo
  # OVS's userspace datapath on kernel ports carries no checksum offload metadata: the VMs must
  # send complete checksums and no super-packets (as the one-host bench runs it).
  local x
  for x in vm1:eth0 vm2:eth0 ha:vif1.0 hb:vif1.0; do
    ip netns exec $P-${x%%:*} ethtool -K ${x##*:} tx off tso off gso off >/dev/null 2>&1
  done
  ovs_host ha 192.168.100.1 192.168.100.2 $FAB_A
  ovs_host hb 192.168.100.2 192.168.100.1 $FAB_B
  # OVS resolves the tunnel's next hop by ARP from br-phy; first packets may be lost meanwhile.
  local ok=0
  for _ in $(seq 60); do ip netns exec $P-vm1 ping -c 1 -W 1 -q 10.1.1.3 >/dev/null 2>&1 && { ok=1; break; }; sleep 0.25; done
  if [ $ok = 1 ]; then measure ovs-vxlan
  else echo "ovs-vxlan: vm1 could not reach vm2 through OVS (logs: $out/o23-ovs-*/)" >> "$skipped"; fi
  ovs_stop
  cleanup
}

(cd "$root" && timeout 1800 cargo build --release -p vrouter-dataplane --bin vrouter-dp >/dev/null 2>&1) \
  || { echo "build failed" >&2; exit 1; }
which=("$@")
[ ${#which[@]} -eq 0 ] && which=(vrouter-udp-af_packet vrouter-udp-af_xdp vrouter-gre-af_packet vrouter-gre-af_xdp kernel-vxlan ovs-vxlan)
REPEAT=${REPEAT:-1}
results=()
echo "underlay MTU $UMTU, VM MTU $VMTU, load $(cut -d' ' -f1-3 /proc/loadavg), kernel $(uname -r)" >&2
for rep in $(seq "$REPEAT"); do
for f in "${which[@]}"; do
  echo "== $f" >&2
  case $f in
    vrouter-udp-af_packet) r=$(run_vrouter MplsOverUdp af_packet "$f") ;;
    vrouter-udp-af_xdp) r=$(run_vrouter MplsOverUdp af_xdp "$f") ;;
    vrouter-gre-af_packet) r=$(run_vrouter MplsOverGre af_packet "$f") ;;
    vrouter-gre-af_xdp) r=$(run_vrouter MplsOverGre af_xdp "$f") ;;
    kernel-vxlan) r=$(run_kernel_vxlan) ;;
    ovs-vxlan) r=$(run_ovs_vxlan) ;;
    *) echo "unknown forwarder $f" >&2; continue ;;
  esac
  [ -n "$r" ] && { echo "round $rep: $r" >&2; results+=("$r"); }
done
done
printf '%s\n' "${results[@]:-}" | python3 -c '
import json, statistics, sys
rows = [json.loads(l) for l in sys.stdin if l.strip()]
by = {}
for r in rows:
    by.setdefault(r["forwarder"], []).append(r)
metrics = ("gbps", "retr", "gbps4", "retr4", "pps", "rtt_ms", "cpu_s_per_gb")
summary = {}
for k, rs in by.items():
    e = {"runs": len(rs), "umtu": rs[0]["umtu"], "load": [r["load"] for r in rs]}
    for m in metrics:
        vals = [r[m] for r in rs if r[m] is not None]
        e[m] = statistics.median(vals) if vals else None
        e[m + "_all"] = [r[m] for r in rs]
    summary[k] = e
ref = summary.get("kernel-vxlan", {})
for k, e in summary.items():
    for m in ("gbps", "gbps4", "pps", "rtt_ms"):
        if ref.get(m) and e[m] is not None:
            e[m + "_vs_kernel_vxlan"] = round(e[m] / ref[m], 3)
open(sys.argv[1], "w").write(json.dumps(summary, indent=2) + "\n")
def f(v, p="%.3f"):
    if v is None:
        return "-"
    s = p % v
    return s.rstrip("0").rstrip(".") if "." in s else s
md = ["| forwarder | TCP Gbit/s (x VXLAN) | retr | TCP x4 Gbit/s | retr x4 | 60 B pps (x VXLAN) | ping RTT ms (x VXLAN) | CPU s/GB | load |",
      "|---|---|---|---|---|---|---|---|---|"]
for k, e in summary.items():
    x = lambda m: "" if e.get(m + "_vs_kernel_vxlan") is None else " (%sx)" % f(e[m + "_vs_kernel_vxlan"], "%.2f")
    md.append("| %s | %s%s | %s | %s | %s | %s%s | %s%s | %s | %s |" % (
        k, f(e["gbps"]), x("gbps"), f(e["retr"], "%d"), f(e["gbps4"]), f(e["retr4"], "%d"),
        "-" if e["pps"] is None else format(int(e["pps"]), ","), x("pps"),
        f(e["rtt_ms"]), x("rtt_ms"), f(e["cpu_s_per_gb"], "%.2f"), " / ".join(e["load"])))
open(sys.argv[2], "w").write("\n".join(md) + "\n")
print("\n".join(md))
' "$out/overlay-$UMTU-$VMTU.json" "$out/overlay-$UMTU-$VMTU.md"
while read -r line; do echo "skipped: $line"; done < "$skipped"
