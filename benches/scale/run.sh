#!/usr/bin/env bash
# Scale bench (issue 25): one vrouter-dp (release) with N VM ports, N = 2, 50, 100, 200 by
# default. Per N it reports:
#   rss_kib, rss_anon_kib, rss_file_kib  /proc/PID/status of the daemon with all N ports open
#   rss_per_vif_kib                      (VmRSS with N ports - VmRSS with none) / N
#   mem_used_delta_kib                   /proc/meminfo (MemTotal - MemAvailable) with N ports
#                                        minus with none: everything the ports cost, kernel side
#                                        included (noisy: other processes run on this host)
#   idle_cpu_pct                         dataplane CPU (run time by /proc/PID/task/*/schedstat)
#                                        over IDLE_SECS with no traffic, in % of one core
#   rtt_avg_ms, rtt_p99_ms, rtt_max_ms   ping vm1 -> vm2 through the dataplane, 50 x 10 ms
#   bind_s                               time from the one Apply that adds N vifs until the
#                                        daemon logged every port open
#   xrtt_avg_ms, xrtt_p99_ms, xrtt_max_ms  cross-host: ping vm1 -> vm3 (on host B), 50 x 10 ms,
#                                        MPLSoUDP over the underlay veth
#   xtcp_gbps, xtcp_retr                 cross-host: iperf3 vm1 -> vm3, one stream, TCP_SECS
# Topology: namespace <P>-host runs the daemon (1 lcore on CPU 1, as benches/e2e); vif1.0 and
# vif2.0 lead to VM namespaces <P>-vm1 (10.1.0.1) and <P>-vm2 (10.1.0.2); vif3.0 .. vifN.0 lead
# to idle VMs, all of their ends in one namespace <P>-idle (IPv6 off, so they send nothing).
# Host B, namespace <P>-hb, runs a second daemon (1 lcore on CPU 0) with one VM, <P>-vm3
# (10.1.3.1); fab0 in each host namespace is the underlay (192.168.100.1 and .2, MTU 1500), and
# both VMs' MTU is 1450. The memory and CPU figures are host A's daemon only.
# Root only; every namespace is <P>-*, removed at exit; the daemon is killed by its PID.
# CHURN=K (instead of the N list): vif churn. vm1 pings vm2 every 2 ms while K more vifs are
# added (one Apply each, as hot-plugs arrive) until all are open, then removed one Apply each
# until all are closed (benches/scale/churn.py); reports lost pings and the worst gap between
# two replies (the worst stall of forwarding between two other VMs), with the phases' times.
# Usage: benches/scale/run.sh [N ...]
# Env: CHURN (0: off), BIN (a vrouter-dp binary to use instead of building one: before/after runs side by
# side), IDLE_SECS (10), PORT_KIND (af_packet), DP_ARGS (extra daemon flags), TAG (label in the
# JSON), OUT (benches/scale/out), TCP_SECS (5). Writes $OUT/scale[-TAG].json and prints it.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
OUT=${OUT:-$here/out}; mkdir -p "$OUT"
P=vrt25s
IDLE_SECS=${IDLE_SECS:-10}
PORT_KIND=${PORT_KIND:-af_packet}
DP_ARGS=${DP_ARGS:-}
TAG=${TAG:-}
TCP_SECS=${TCP_SECS:-5}
FAB_A=02:fa:00:00:00:01; FAB_B=02:fa:00:00:00:02
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
bin=${BIN:-$CARGO_TARGET_DIR/release/vrouter-dp}
ns_list=(2 50 100 200); [ $# -gt 0 ] && ns_list=("$@")

dp_pid= dpb_pid=
cleanup() {
  local p
  for p in $dp_pid $dpb_pid; do
    kill "$p" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null
  done
  dp_pid= dpb_pid=
  for n in $(ip netns list | awk '{print $1}' | grep "^$P-"); do
    for q in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$q" 2>/dev/null; done
    ip netns del "$n"
  done
}
trap cleanup EXIT

mem_used_kib() { awk '/^MemTotal:/{t=$2} /^MemAvailable:/{a=$2} END{print t-a}' /proc/meminfo; }
status_kib() { awk -v k="$2:" '$1==k{print $2}' "/proc/$1/status"; }
# CPU time in ns from schedstat (the scheduler's own sum of run time), not utime + stime: those
# are sampled at the tick, and an lcore that wakes on a 10 ms timer runs exactly when the tick
# samples (in a 100-VM devcloud: 8 % by ticks where schedstat says 0.4 %).
cpu_ticks() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s+=$1} END{printf "%.0f\n", s}'; }
# "comm ns" per thread of the daemon (comm has no spaces: lcore0, vrouter-dp, ...).
thread_ticks() { for t in /proc/"$dp_pid"/task/*; do
  echo "$(cat "$t/comm") $(awk '{print $1}' "$t/schedstat")"; done; }
mac_of() { printf '02:00:00:%02x:%02x:02' $(($1 / 256)) $(($1 % 256)); }

# Namespaces and N veth pairs, created with one `ip -batch` per namespace.
topo() {
  local n=$1 i
  for x in host vm1 vm2 idle hb vm3; do
    ip netns add $P-$x; ip -n $P-$x link set lo up
    ip netns exec $P-$x sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  done
  {
    for i in $(seq 1 "$n"); do
      case $i in
        1) echo "link add vif1.0 type veth peer name eth0 netns $P-vm1" ;;
        2) echo "link add vif2.0 type veth peer name eth0 netns $P-vm2" ;;
        *) echo "link add vif$i.0 type veth peer name e$i netns $P-idle" ;;
      esac
      echo "link set vif$i.0 up"
    done
  } | ip -n $P-host -batch -
  { for i in $(seq 3 "$n"); do echo "link set e$i address $(mac_of "$i") up"; done; } \
    | ip -n $P-idle -batch - 2>/dev/null
  for v in 1 2; do
    ip -n $P-vm$v link set eth0 address "$(mac_of $v)" mtu 1450 up
    ip -n $P-vm$v addr add 10.1.0.$v/16 dev eth0
    ip -n $P-vm$v route add default dev eth0
  done
  ip -n $P-host link set vif1.0 mtu 1450; ip -n $P-host link set vif2.0 mtu 1450
  ip link add fab0 netns $P-host type veth peer name fab0 netns $P-hb
  ip -n $P-host link set fab0 address $FAB_A up
  ip -n $P-hb link set fab0 address $FAB_B up
  ip -n $P-host addr add 192.168.100.1/24 dev fab0
  ip -n $P-hb addr add 192.168.100.2/24 dev fab0
  ip link add vif1.0 netns $P-hb mtu 1450 type veth peer name eth0 netns $P-vm3
  ip -n $P-hb link set vif1.0 up
  ip -n $P-vm3 link set eth0 address 02:00:00:03:01:02 mtu 1450 up
  ip -n $P-vm3 addr add 10.1.3.1/16 dev eth0
  ip -n $P-vm3 route add default dev eth0
}

# Host B: its daemon (1 lcore on CPU 0) and its VM, vm3; routes both ways over MPLSoUDP: label
# 110 on host A is vm1's nexthop (11), label 210 on host B is vm3's. $1: host A's control socket.
host_b() {
  local sock="$OUT/dpb.sock" ip1 ip3
  rm -f "$sock"
  ip netns exec $P-hb "$bin" --lcores 0 --port-kind "$PORT_KIND" --fabric fab0 \
    --fabric-ip 192.168.100.2 --ctl-socket "$sock" --agent-socket none --log-level warn \
    > "$OUT/dpb.log" 2>&1 &
  dpb_pid=$!
  for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
  ip1=$(( (10 << 24) | (1 << 16) | 1 )); ip3=$(( (10 << 24) | (1 << 16) | (3 << 8) | 1 ))
  python3 "$root/benches/e2e/vrctl_min.py" "$sock" <<JSON || return 1
[{"AddVrf":{"id":1,"name":"vn1"}},
 {"AddVif":{"id":3,"name":"vif1.0","kind":"Virtual","vrf":1,"mac":"02:00:00:03:01:02","ip":$ip3,"mtu":1450,"nh":10}},
 {"AddNh":{"id":10,"spec":{"Encap":{"oif":3,"dmac":"02:00:00:03:01:02","smac":"00:00:5e:00:01:00"}}}},
 {"AddRoute":{"vrf":1,"prefix":$ip3,"plen":32,"route":{"nh":10,"label":null,"proxy_arp":true}}},
 {"AddLabel":{"label":210,"nh":10}},
 {"AddNh":{"id":20,"spec":{"Tunnel":{"oif":0,"kind":"MplsOverUdp","sip":$(( (192 << 24) | (168 << 16) | (100 << 8) | 2 )),"dip":$(( (192 << 24) | (168 << 16) | (100 << 8) | 1 )),"dmac":"$FAB_A","smac":"$FAB_B"}}}},
 {"AddRoute":{"vrf":1,"prefix":$ip1,"plen":32,"route":{"nh":20,"label":110,"proxy_arp":true}}}]
JSON
  python3 "$root/benches/e2e/vrctl_min.py" "$1" <<JSON
[{"AddLabel":{"label":110,"nh":11}},
 {"AddNh":{"id":9,"spec":{"Tunnel":{"oif":0,"kind":"MplsOverUdp","sip":$(( (192 << 24) | (168 << 16) | (100 << 8) | 1 )),"dip":$(( (192 << 24) | (168 << 16) | (100 << 8) | 2 )),"dmac":"$FAB_B","smac":"$FAB_A"}}}},
 {"AddRoute":{"vrf":1,"prefix":$ip3,"plen":32,"route":{"nh":9,"label":210,"proxy_arp":true}}}]
JSON
}

# Cross-host figures vm1 -> vm3: ping 50 x 10 ms into $OUT/xping-N.txt, then iperf3; prints
# "gbps retransmits".
cross_host() {  # $1: N (file names)
  local j
  for _ in $(seq 40); do ip netns exec $P-vm1 ping -c 1 -W 1 -q 10.1.3.1 >/dev/null 2>&1 && break; sleep 0.25; done
  ip netns exec $P-vm1 ping -c 50 -i 0.01 -W 2 10.1.3.1 > "$OUT/xping-$1.txt" 2>&1
  timeout $((TCP_SECS + 20)) ip netns exec $P-vm3 iperf3 -s -1 -B 10.1.3.1 -p 5201 >/dev/null 2>&1 &
  local sp=$!
  sleep 0.5
  j=$(timeout $((TCP_SECS + 15)) ip netns exec $P-vm1 iperf3 -c 10.1.3.1 -p 5201 -t "$TCP_SECS" -J 2>/dev/null)
  wait $sp 2>/dev/null
  echo "$j" | python3 -c '
import json, sys
try:
    e = json.load(sys.stdin)["end"]
    print(round(e["sum_received"]["bits_per_second"] / 1e9, 3), e["sum_sent"].get("retransmits", 0))
except Exception:
    print("null null")'
}

# The Apply that adds N vifs (ids 3..N+2), their nexthops and /32 routes in VRF 1.
ops_json() {
  python3 - "$1" <<'PY'
import json, sys
n = int(sys.argv[1])
ops = [{"AddVrf": {"id": 1, "name": "vn1"}}]
for i in range(1, n + 1):
    mac = "02:00:00:%02x:%02x:02" % (i // 256, i % 256)
    ip = (10 << 24) | (1 << 16) | ((i // 256) << 8) | (i % 256)
    vif, nh = 2 + i, 10 + i
    ops.append({"AddNh": {"id": nh, "spec": {"Encap": {"oif": vif, "dmac": mac, "smac": "00:00:5e:00:01:00"}}}})
    ops.append({"AddVif": {"id": vif, "name": "vif%d.0" % i, "kind": "Virtual", "vrf": 1, "mac": mac,
                           "ip": ip, "mtu": 1450 if i <= 2 else 1500, "nh": nh}})
    ops.append({"AddRoute": {"vrf": 1, "prefix": ip, "plen": 32, "route": {"nh": nh, "label": None, "proxy_arp": True}}})
# Nexthops name their vif: add every vif first, then the nexthops, then the routes.
ops.sort(key=lambda o: {"AddVrf": 0, "AddVif": 1, "AddNh": 2, "AddRoute": 3}[next(iter(o))])
print(json.dumps(ops))
PY
}

run_one() {  # $1: N; prints one JSON object
  local n=$1 sock="$OUT/dp.sock" log="$OUT/dp-$1.log"
  cleanup
  topo "$n"
  rm -f "$sock"
  ip netns exec $P-host "$bin" --lcores 1 --port-kind "$PORT_KIND" --fabric fab0 \
    --fabric-ip 192.168.100.1 --ctl-socket "$sock" --agent-socket none --log-level info \
    $DP_ARGS > "$log" 2>&1 &
  dp_pid=$!
  for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
  sleep 1
  local rss0 used0 t0 t1 opened=0
  rss0=$(status_kib "$dp_pid" VmRSS); used0=$(mem_used_kib)
  ops_json "$n" > "$OUT/ops.json"
  t0=$(date +%s.%N)
  python3 "$root/benches/e2e/vrctl_min.py" "$sock" < "$OUT/ops.json" || { echo "apply refused" >&2; return 1; }
  for _ in $(seq 3000); do   # up to 60 s
    opened=$(grep -c 'msg="port opened" vif=vif' "$log")
    [ "$opened" -ge "$n" ] && break
    sleep 0.02
  done
  t1=$(date +%s.%N)
  [ "$opened" -ge "$n" ] || echo "only $opened of $n ports opened" >&2
  sleep 2
  local rss anon file used
  rss=$(status_kib "$dp_pid" VmRSS); anon=$(status_kib "$dp_pid" RssAnon); file=$(status_kib "$dp_pid" RssFile)
  used=$(mem_used_kib)
  # Idle CPU: no traffic at all (the busy-poll window of the last packet is long over).
  local c0 c1 hz=1000000000
  thread_ticks > "$OUT/threads0"
  c0=$(cpu_ticks "$dp_pid"); sleep "$IDLE_SECS"; c1=$(cpu_ticks "$dp_pid")
  thread_ticks > "$OUT/threads1"
  # RTT vm1 -> vm2: warm-up (proxy ARP), then 50 x 10 ms.
  ip netns exec $P-vm1 ping -c 3 -i 0.2 -W 2 -q 10.1.0.2 >/dev/null 2>&1
  ip netns exec $P-vm1 ping -c 50 -i 0.01 -W 2 10.1.0.2 > "$OUT/ping-$n.txt" 2>&1
  local xtcp
  if host_b "$sock"; then xtcp=$(cross_host "$n"); else echo "host B refused" >&2; xtcp="null null"; fi
  python3 - "$n" "$rss0" "$rss" "$anon" "$file" "$used0" "$used" "$c0" "$c1" "$hz" "$IDLE_SECS" \
    "$t0" "$t1" "$OUT/ping-$n.txt" "$PORT_KIND" "$TAG" "$opened" "$OUT/threads0" "$OUT/threads1" \
    "$OUT/xping-$n.txt" $xtcp <<'PY'
import json, re, sys
a = sys.argv[1:]
n, rss0, rss, anon, file, used0, used = (int(x) for x in a[0:7])
c0, c1, hz, secs = int(a[7]), int(a[8]), int(a[9]), float(a[10])
t0, t1 = float(a[11]), float(a[12])
def threads():
    out = {}
    d0 = {}
    for l in open(a[17]):
        k, v = l.split(); d0[k] = d0.get(k, 0) + int(v)
    for l in open(a[18]):
        k, v = l.split(); out[k] = out.get(k, 0) + int(v)
    return {k: round(100.0 * (v - d0.get(k, 0)) / hz / secs, 2) for k, v in out.items() if v - d0.get(k, 0)}
def rtt_of(path):
    try:
        return sorted(float(m) for m in re.findall(r"time=([0-9.]+) ms", open(path).read()))
    except OSError:
        return []
def p99_of(r):
    return r[min(len(r) - 1, max(0, -(-99 * len(r) // 100) - 1))] if r else None
rtts, xrtts = rtt_of(a[13]), rtt_of(a[19])
p99 = p99_of(rtts)
num = lambda x: None if x == "null" else float(x)
print(json.dumps({
    "tag": a[15], "port_kind": a[14], "vifs": n, "opened": int(a[16]),
    "rss_kib": rss, "rss_anon_kib": anon, "rss_file_kib": file,
    "rss_base_kib": rss0, "rss_per_vif_kib": round((rss - rss0) / n, 1),
    "mem_used_delta_kib": used - used0, "mem_used_delta_per_vif_kib": round((used - used0) / n, 1),
    "idle_cpu_pct": round(100.0 * (c1 - c0) / hz / secs, 2), "idle_secs": secs,
    "rtt_n": len(rtts), "rtt_avg_ms": round(sum(rtts) / len(rtts), 3) if rtts else None,
    "rtt_p99_ms": p99, "rtt_max_ms": rtts[-1] if rtts else None,
    "xrtt_n": len(xrtts), "xrtt_avg_ms": round(sum(xrtts) / len(xrtts), 3) if xrtts else None,
    "xrtt_p99_ms": p99_of(xrtts), "xrtt_max_ms": xrtts[-1] if xrtts else None,
    "xtcp_gbps": num(a[20]), "xtcp_retr": num(a[21]),
    "bind_s": round(t1 - t0, 3),
    "idle_cpu_pct_by_thread": threads(),
}))
PY
  cleanup
}

run_churn() {  # $1: vifs to add and remove; prints one JSON object
  local k=$1 sock="$OUT/dp.sock" log="$OUT/dp-churn.log" ping_pid
  cleanup
  topo $((k + 2))
  rm -f "$sock"
  ip netns exec $P-host "$bin" --lcores 1 --port-kind "$PORT_KIND" --ctl-socket "$sock" \
    --agent-socket none --log-level info $DP_ARGS > "$log" 2>&1 &
  dp_pid=$!
  for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
  ops_json 2 | python3 "$root/benches/e2e/vrctl_min.py" "$sock" || { echo "apply refused" >&2; return 1; }
  for _ in $(seq 500); do [ "$(grep -c 'msg="port opened" vif=vif' "$log")" -ge 2 ] && break; sleep 0.02; done
  ip netns exec $P-vm1 ping -c 3 -i 0.2 -W 2 -q 10.1.0.2 >/dev/null 2>&1
  # 2 ms pings, bounded to 60 s; stopped with SIGINT (summary line) once the churn is over.
  ip netns exec $P-vm1 ping -D -i 0.002 -W 1 -w 60 10.1.0.2 > "$OUT/ping-churn.txt" 2>&1 &
  ping_pid=$!
  sleep 1
  local churn
  churn=$(python3 "$here/churn.py" "$sock" "$log" 3 $((k + 2))) || { kill -INT "$ping_pid"; return 1; }
  sleep 1
  kill -INT "$ping_pid"; wait "$ping_pid"
  python3 - "$OUT/ping-churn.txt" "$churn" "$PORT_KIND" "$TAG" <<'PY'
import json, re, sys
txt = open(sys.argv[1]).read()
ts = [float(t) for t in re.findall(r"^\[([0-9.]+)\] \d+ bytes from", txt, re.M)]
rtts = sorted(float(m) for m in re.findall(r"time=([0-9.]+) ms", txt))
m = re.search(r"(\d+) packets transmitted, (\d+) received", txt)
sent, recv = (int(m.group(1)), int(m.group(2))) if m else (None, len(ts))
gaps = sorted(b - a for a, b in zip(ts, ts[1:]))
out = {"tag": sys.argv[4], "port_kind": sys.argv[3], "ping_interval_ms": 2,
       "ping_sent": sent, "ping_received": recv, "ping_lost": (sent - recv) if sent is not None else None,
       "worst_gap_ms": round(1000 * gaps[-1], 2) if gaps else None,
       "gap_p99_ms": round(1000 * gaps[min(len(gaps) - 1, 99 * len(gaps) // 100)], 2) if gaps else None,
       "rtt_max_ms": rtts[-1] if rtts else None}
out.update(json.loads(sys.argv[2]))
print(json.dumps(out))
PY
  cleanup
}

[ "$(id -u)" = 0 ] || { echo "root only" >&2; exit 1; }
if [ -z "${BIN:-}" ]; then
  (cd "$root" && cargo build --release -p vrouter-dataplane --bin vrouter-dp >/dev/null 2>&1) \
    || { echo "build failed" >&2; exit 1; }
fi
if [ "${CHURN:-0}" -gt 0 ]; then
  r=$(run_churn "$CHURN") && [ -n "$r" ] || exit 1
  name="churn${TAG:+-$TAG}"
  echo "$r" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin), indent=1))' > "$OUT/$name.json"
  cat "$OUT/$name.json"
  exit 0
fi
results=()
for n in "${ns_list[@]}"; do
  echo "== N=$n" >&2
  r=$(run_one "$n") && [ -n "$r" ] && { echo "$r" >&2; results+=("$r"); }
done
name="scale${TAG:+-$TAG}"
printf '%s\n' "${results[@]}" | python3 -c 'import json,sys; print(json.dumps([json.loads(l) for l in sys.stdin if l.strip()], indent=1))' \
  > "$OUT/$name.json"
cat "$OUT/$name.json"
