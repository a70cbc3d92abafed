#!/usr/bin/env bash
# End-to-end forwarding benchmark: the same two-VM topology for every forwarder, measured in one
# run, side by side. vm1 (10.1.1.2) -> forwarder namespace -> vm2 (10.2.2.2).
#   vrouter-af_xdp, vrouter-af_packet : this dataplane (full L3 lookup, 1 lcore on cpu 1)
#   testpmd-af_xdp, testpmd-af_packet : DPDK io-forward on the same veths (no work: I/O ceiling)
#   ovs-afxdp                         : Open vSwitch userspace datapath, afxdp ports
#   kernel                            : Linux ip_forward in a namespace
# Figures: 60-byte pps (trafgen, 1 thread on cpu 0, delivered = vm2 rx delta), TCP Gbit/s
# (iperf3), ping RTT (avg of 50). Writes out/summary.json and out/summary.md.
# Root only; everything lives in namespaces named vrt3b-*; all are removed at exit.
# Usage: benches/e2e/run.sh [forwarder ...]   (default: all whose tools are installed)
# Env: NUM (trafgen frames, 1500000), SECS (iperf3 seconds, 5), REPEAT (rounds over all the
# forwarders, interleaved, 1): with REPEAT > 1 the tables show the median and the min-max range.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$here/out"; mkdir -p "$out"
P=vrt3b
NUM=${NUM:-1500000}      # trafgen frames per run
SECS=${SECS:-5}          # iperf3 seconds
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}

need() { command -v "$1" >/dev/null || { echo "missing $1: apt-get install -y --no-install-recommends $2" >&2; return 1; }; }
# A peer's tool: installed when missing (bounded); else the peer is named on a 'skipped:' line at
# the end of the run.
skipped="$out/skipped.txt"; : > "$skipped"
peer() {  # $1 command, $2 Debian package, $3 forwarder
  command -v "$1" >/dev/null && return 0
  command -v apt-get >/dev/null && timeout 600 apt-get install -y --no-install-recommends "$2" >/dev/null 2>&1
  command -v "$1" >/dev/null && return 0
  echo "$3: $1 not installed (apt-get install -y $2 failed)" >> "$skipped"
  return 1
}
need ip iproute2 && need iperf3 iperf3 && need trafgen netsniff-ng && need ping iputils-ping || exit 1

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

topo() {  # $1: vm addressing mode (routed|onlink|l2)
  cleanup
  for n in vm1 vm2 fw; do ip netns add $P-$n; ip -n $P-$n link set lo up
    ip netns exec $P-$n sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1; done
  ip link add vif1.0 netns $P-fw type veth peer name eth0 netns $P-vm1
  ip link add vif2.0 netns $P-fw type veth peer name eth0 netns $P-vm2
  ip -n $P-vm1 link set eth0 address 02:00:00:00:01:02
  ip -n $P-vm2 link set eth0 address 02:00:00:00:02:02
  for v in vm1 vm2; do ip -n $P-$v link set eth0 up; done
  ip -n $P-fw link set vif1.0 up; ip -n $P-fw link set vif2.0 up
  case $1 in
    routed) ip -n $P-vm1 addr add 10.1.1.2/24 dev eth0; ip -n $P-vm1 route add default via 10.1.1.1
            ip -n $P-vm2 addr add 10.2.2.2/24 dev eth0; ip -n $P-vm2 route add default via 10.2.2.1 ;;
    onlink) ip -n $P-vm1 addr add 10.1.1.2/24 dev eth0; ip -n $P-vm1 route add default dev eth0
            ip -n $P-vm2 addr add 10.2.2.2/24 dev eth0; ip -n $P-vm2 route add default dev eth0 ;;
    l2)     ip -n $P-vm1 addr add 10.1.1.2/8 dev eth0; ip -n $P-vm2 addr add 10.2.2.2/8 dev eth0 ;;
  esac
}

offloads_off() { for x in $P-vm1:eth0 $P-vm2:eth0 $P-fw:vif1.0 $P-fw:vif2.0; do
  ip netns exec ${x%%:*} ethtool -K ${x##*:} tx off tso off gso off >/dev/null 2>&1; done; }

measure() {  # $1: name; prints a JSON object
  local name=$1 rtt gbps pps nh dmac
  ip netns exec $P-vm1 ping -c 3 -W 2 -q 10.2.2.2 >/dev/null 2>&1
  rtt=$(ip netns exec $P-vm1 ping -c 50 -i 0.02 -W 2 -q 10.2.2.2 2>/dev/null | awk -F/ '/rtt/{print $5}')
  timeout $((SECS+15)) ip netns exec $P-vm2 iperf3 -s -1 -B 10.2.2.2 -p 5201 >/dev/null 2>&1 & local sp=$!
  sleep 0.5
  gbps=$(timeout $((SECS+10)) ip netns exec $P-vm1 iperf3 -c 10.2.2.2 -p 5201 -t $SECS -J 2>/dev/null \
        | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9,3))' 2>/dev/null)
  wait $sp 2>/dev/null
  nh=$(ip -n $P-vm1 route get 10.2.2.2 | awk '/via/{for(i=1;i<=NF;i++) if($i=="via") print $(i+1)}')
  [ -z "$nh" ] && nh=10.2.2.2
  dmac=$(ip -n $P-vm1 neigh show "$nh" | awk '{for(i=1;i<=NF;i++) if($i=="lladdr") print $(i+1)}')
  local m; m=$(echo "$dmac" | sed 's/^/0x/; s/:/, 0x/g')
  cat > "$out/udp60.cfg" <<CFG
{ $m, 0x02, 0x00, 0x00, 0x00, 0x01, 0x02, 0x08, 0x00,
  0x45, 0x00, const16(46), const16(0), 0x40, 0x00, 64, 17, csumip(14, 33),
  10, 1, 1, 2,   10, 2, 2, 2,
  const16(9), const16(9), const16(26), const16(0), fill(0x41, 18), }
CFG
  local r0 r1 t0 t1
  r0=$(ip netns exec $P-vm2 cat /sys/class/net/eth0/statistics/rx_packets); t0=$(date +%s.%N)
  timeout 60 ip netns exec $P-vm1 taskset -c 0 trafgen --dev eth0 --conf "$out/udp60.cfg" --num $NUM --cpus 1 > "$out/trafgen.log" 2>&1
  sleep 0.2
  r1=$(ip netns exec $P-vm2 cat /sys/class/net/eth0/statistics/rx_packets); t1=$(date +%s.%N)
  pps=$(python3 -c "print(int(($r1-$r0)/($t1-$t0-0.2)))")
  echo "{\"forwarder\":\"$name\",\"pps\":${pps:-0},\"gbps\":${gbps:-0},\"rtt_ms\":${rtt:-null}}"
}

run_vrouter() {  # $1 port kind
  topo onlink
  local sock="$out/dp.sock" bin="$CARGO_TARGET_DIR/release/vrouter-dp"
  ip netns exec $P-fw "$bin" --lcores 1 --port-kind "$1" --ctl-socket "$sock" --agent-socket none \
     --log-level warn > "$out/vrouter-$1.log" 2>&1 & pids+=($!)
  for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
  python3 "$here/vrctl_min.py" "$sock" <<'JSON'
[{"AddVrf":{"id":1,"name":"vn1"}},
 {"AddVif":{"id":3,"name":"vif1.0","kind":"Virtual","vrf":1,"mac":"02:00:00:00:01:02","ip":167837954,"mtu":1500,"nh":10}},
 {"AddVif":{"id":4,"name":"vif2.0","kind":"Virtual","vrf":1,"mac":"02:00:00:00:02:02","ip":167903746,"mtu":1500,"nh":11}},
 {"AddNh":{"id":10,"spec":{"Encap":{"oif":3,"dmac":"02:00:00:00:01:02","smac":"00:00:5e:00:01:00"}}}},
 {"AddNh":{"id":11,"spec":{"Encap":{"oif":4,"dmac":"02:00:00:00:02:02","smac":"00:00:5e:00:01:00"}}}},
 {"AddRoute":{"vrf":1,"prefix":167837954,"plen":32,"route":{"nh":10,"label":null,"proxy_arp":true}}},
 {"AddRoute":{"vrf":1,"prefix":167903746,"plen":32,"route":{"nh":11,"label":null,"proxy_arp":true}}}]
JSON
  sleep 0.5
  measure "vrouter-$1"
  cleanup
}

run_kernel() {
  topo routed
  ip -n $P-fw addr add 10.1.1.1/24 dev vif1.0; ip -n $P-fw addr add 10.2.2.1/24 dev vif2.0
  ip netns exec $P-fw sysctl -qw net.ipv4.ip_forward=1
  measure kernel
  cleanup
}

run_testpmd() {  # $1 af_xdp|af_packet
  peer dpdk-testpmd dpdk "testpmd-$1" || return 0
  topo l2; offloads_off
  local v0 v1
  if [ "$1" = af_xdp ]; then v0="net_af_xdp0,iface=vif1.0,start_queue=0,queue_count=1"; v1="net_af_xdp1,iface=vif2.0,start_queue=0,queue_count=1"
  else v0="net_af_packet0,iface=vif1.0"; v1="net_af_packet1,iface=vif2.0"; fi
  timeout 300 ip netns exec $P-fw dpdk-testpmd --no-huge -m 512 -l 0,1 --no-pci --file-prefix=$P$1 \
    --vdev "$v0" --vdev "$v1" -- --forward-mode=io --auto-start --stats-period=3600 --total-num-mbufs=32768 \
    </dev/null > "$out/testpmd-$1.log" 2>&1 & pids+=($!)
  # (--stats-period > 0 keeps testpmd running without a terminal: with 0 it waits for "enter"
  # on stdin, reads EOF from /dev/null and quits before any traffic.)
  sleep 4
  measure "testpmd-$1"
  cleanup; rm -rf /var/run/dpdk/$P$1
}

run_ovs() {
  peer ovs-vswitchd openvswitch-switch ovs-afxdp || return 0
  topo l2; offloads_off   # AF_XDP carries no checksum metadata: OVS forwards partial csums as-is
  local D="$out/ovs"; rm -rf "$D"; mkdir -p "$D"
  export OVS_RUNDIR=$D OVS_LOGDIR=$D OVS_DBDIR=$D OVS_SYSCONFDIR=$D
  ovsdb-tool create $D/conf.db /usr/share/openvswitch/vswitch.ovsschema
  ovsdb-server $D/conf.db --remote=punix:$D/db.sock --pidfile=$D/ovsdb-server.pid --log-file=$D/ovsdb-server.log --detach
  ovs-vsctl --db=unix:$D/db.sock --no-wait init
  ip netns exec $P-fw ovs-vswitchd unix:$D/db.sock --pidfile=$D/ovs-vswitchd.pid --log-file=$D/ovs-vswitchd.log --detach
  pids+=("$(cat $D/ovsdb-server.pid)" "$(cat $D/ovs-vswitchd.pid)")
  ovs-vsctl --db=unix:$D/db.sock add-br br0 -- set bridge br0 datapath_type=netdev
  ovs-vsctl --db=unix:$D/db.sock add-port br0 vif1.0 -- set interface vif1.0 type=afxdp options:xdp-mode=native \
    -- add-port br0 vif2.0 -- set interface vif2.0 type=afxdp options:xdp-mode=native
  sleep 3
  measure ovs-afxdp
  ovs-appctl -t $D/ovs-vswitchd.$(cat $D/ovs-vswitchd.pid).ctl exit >/dev/null 2>&1
  ovs-appctl -t $D/ovsdb-server.$(cat $D/ovsdb-server.pid).ctl exit >/dev/null 2>&1
  cleanup
}

(cd "$root" && cargo build --release -p vrouter-dataplane --bin vrouter-dp >/dev/null 2>&1) || { echo "build failed" >&2; exit 1; }
which=("$@"); [ ${#which[@]} -eq 0 ] && which=(vrouter-af_xdp vrouter-af_packet testpmd-af_xdp testpmd-af_packet ovs-afxdp kernel)
REPEAT=${REPEAT:-1}
results=()
for rep in $(seq "$REPEAT"); do
for f in "${which[@]}"; do
  echo "== $f" >&2
  case $f in
    vrouter-af_xdp) r=$(run_vrouter af_xdp) ;;
    vrouter-af_packet) r=$(run_vrouter af_packet) ;;
    testpmd-af_xdp) r=$(run_testpmd af_xdp) ;;
    testpmd-af_packet) r=$(run_testpmd af_packet) ;;
    ovs-afxdp) r=$(run_ovs) ;;
    kernel) r=$(run_kernel) ;;
    *) echo "unknown forwarder $f" >&2; continue ;;
  esac
  [ -n "$r" ] && { echo "round $rep: $r" >&2; results+=("$r"); }
done
done
printf '%s\n' "${results[@]}" | python3 -c '
import json, statistics, sys
rows = [json.loads(l) for l in sys.stdin if l.strip()]
by = {}
for r in rows:
    by.setdefault(r["forwarder"], []).append(r)
def agg(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None, None, None
    return statistics.median(vals), min(vals), max(vals)
summary = {}
for k, rs in by.items():
    e = {"runs": len(rs)}
    for m in ("pps", "gbps", "rtt_ms"):
        med, lo, hi = agg([r[m] for r in rs])
        e[m] = med
        e[m + "_range"] = [lo, hi]
        e[m + "_all"] = [r[m] for r in rs]
    summary[k] = e
open(sys.argv[1], "w").write(json.dumps(summary, indent=2) + "\n")
def cell(e, m, fmt):
    v, (lo, hi) = e[m], e[m + "_range"]
    if v is None:
        return "-"
    if e["runs"] == 1 or lo == hi:
        return fmt(v)
    return "%s (%s-%s)" % (fmt(v), fmt(lo), fmt(hi))
pps = lambda v: format(int(v), ",")
num = lambda v: ("%.3f" % v).rstrip("0").rstrip(".")
md = ["| forwarder | 60 B pps (delivered) | TCP Gbit/s | ping RTT ms | runs |", "|---|---|---|---|---|"]
md += ["| %s | %s | %s | %s | %d |" % (k, cell(e, "pps", pps), cell(e, "gbps", num), cell(e, "rtt_ms", num), e["runs"]) for k, e in summary.items()]
open(sys.argv[2], "w").write("\n".join(md) + "\n")
print("\n".join(md))
' "$out/summary.json" "$out/summary.md"
while read -r line; do echo "skipped: $line"; done < "$skipped"
