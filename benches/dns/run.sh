#!/usr/bin/env bash
# DNS at the gateway, measured with dnsperf (Debian) from a VM namespace against its gateway
# 10.1.1.1, through the real vrouter-dp (af_packet, 1 lcore) and vrouter-agent (pkt0 services).
#   local   : names of the network's VMs (web-1 / db-1 under cs2cloud.internal, A and PTR)
#   cached  : names only the upstream knows (a stub dnsmasq in a namespace of its own), asked
#             once to fill the agent's cache, then measured from the cache
# For each: queries/s at full load (dnsperf -q outstanding), then the latency distribution
# (avg, p50, p99, max from dnsperf -v per-query lines) at full load and at a fixed rate (RATE).
# Root only; namespaces are vrt3d20-*, all removed at exit; no traffic leaves them.
# Usage: benches/dns/run.sh        Env: SECS (per run, 10), RATE (fixed-rate pass, 20000),
#        OUTSTANDING (dnsperf -q, 200), CPU_DP / CPU_PERF (cpus of the lcore and dnsperf, 1 / 0),
#        QLEN (net.unix.max_dgram_qlen of the host namespace: how many trapped packets may wait
#        for the agent on pkt0; the kernel's default 10 loses a burst of queries, 512),
#        AGENT (the vrouter-agent binary, default target/release/vrouter-agent: to compare builds
#        side by side), LABEL (names the run in the summary, default the agent's path)
# Then the machine's floor (the same load against dnsmasq with no vRouter in the path) and a
# vm2 -> vm1 ping through the dataplane, quiet and while dnsperf runs at full load.
# Writes out/summary.json and out/summary.md.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$here/out"; mkdir -p "$out"
P=vrt3d20
SECS=${SECS:-10}
RATE=${RATE:-20000}
OUTSTANDING=${OUTSTANDING:-200}
CPU_DP=${CPU_DP:-1}
CPU_PERF=${CPU_PERF:-0}
QLEN=${QLEN:-512}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
rel="$CARGO_TARGET_DIR/release"
AGENT=${AGENT:-$rel/vrouter-agent}
LABEL=${LABEL:-$AGENT}

need() { command -v "$1" >/dev/null || { echo "missing $1: apt-get install -y $2" >&2; exit 1; }; }
need dnsperf dnsperf; need dnsmasq dnsmasq-base; need dig dnsutils; need ip iproute2
[ -x "$rel/vrouter-dp" ] && [ -x "$AGENT" ] || {
  echo "build first: cargo build --release -p vrouter-dataplane -p vrouter-agent --bins" >&2; exit 1; }

pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
  sleep 0.3
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done
  pids=()
  for n in $(ip netns list | awk '{print $1}' | grep "^$P-"); do ip netns del "$n"; done
}
trap cleanup EXIT
cleanup

for n in vm1 vm2 h up; do ip netns add $P-$n; ip -n $P-$n link set lo up
  ip netns exec $P-$n sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1; done
ip link add vif1.0 netns $P-h type veth peer name eth0 netns $P-vm1
ip link add vif2.0 netns $P-h type veth peer name eth0 netns $P-vm2
ip -n $P-vm1 link set eth0 address 02:00:00:00:01:02
ip -n $P-vm2 link set eth0 address 02:00:00:00:01:03
ip -n $P-vm1 addr add 10.1.1.2/24 dev eth0; ip -n $P-vm2 addr add 10.1.1.3/24 dev eth0
for v in vm1 vm2; do ip -n $P-$v link set eth0 up; ip -n $P-$v route add default via 10.1.1.1
  ip netns exec $P-$v ethtool -K eth0 tx off >/dev/null 2>&1; done
ip -n $P-h link set vif1.0 up; ip -n $P-h link set vif2.0 up
ip link add d20u0 netns $P-h type veth peer name d20u1 netns $P-up
ip -n $P-h addr add 10.53.0.1/24 dev d20u0; ip -n $P-h link set d20u0 up
ip -n $P-up addr add 10.53.0.2/24 dev d20u1; ip -n $P-up link set d20u1 up

ip netns exec $P-up dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
  --bind-interfaces --listen-address=10.53.0.2 --user=root --pid-file= \
  --address=/fwd.d20.test/192.0.2.77 --local-ttl=300 --log-queries --log-facility=- > "$out/dnsmasq.log" 2>&1 & pids+=($!)
echo "nameserver 10.53.0.2" > "$out/resolv.conf"
cat > "$out/agent.toml" <<'TOML'
[[networks]]
name = "net1"
vrf = "default-domain:default-project:net1"
subnet = "10.1.1.0/24"
domain = "cs2cloud.internal"

[[interfaces]]
name = "vif1.0"
mac = "02:00:00:00:01:02"
ip = "10.1.1.2"
network = "net1"
hostname = "web-1"

[[interfaces]]
name = "vif2.0"
mac = "02:00:00:00:01:03"
ip = "10.1.1.3"
network = "net1"
hostname = "db-1"
TOML
rm -rf "$out/state"; rm -f "$out"/*.sock
ip netns exec $P-h sysctl -qw net.unix.max_dgram_qlen="$QLEN"
ip netns exec $P-h taskset -c "$CPU_DP" "$rel/vrouter-dp" --lcores "$CPU_DP" --port-kind af_packet \
  --ctl-socket "$out/dp.sock" --agent-socket "$out/pkt0.sock" --log-level warn > "$out/dp.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do [ -S "$out/dp.sock" ] && break; sleep 0.05; done
ip netns exec $P-h "$AGENT" --config "$out/agent.toml" --dp-socket "$out/dp.sock" \
  --agent-socket "$out/pkt0.sock" --agent-local-socket "$out/agent-pkt0.sock" --state-dir "$out/state" \
  --dns-resolv-conf "$out/resolv.conf" --dns-rate 0 > "$out/agent.log" 2>&1 & pids+=($!)
ok=
for _ in $(seq 100); do
  [ "$(ip netns exec $P-vm1 dig +short +time=1 +tries=1 @10.1.1.1 db-1.cs2cloud.internal)" = 10.1.1.3 ] && { ok=1; break; }
  sleep 0.2
done
[ -n "$ok" ] || { echo "the gateway does not answer; agent log:" >&2; tail -20 "$out/agent.log" >&2; exit 1; }

printf 'web-1.cs2cloud.internal A\ndb-1.cs2cloud.internal A\n3.1.1.10.in-addr.arpa PTR\n2.1.1.10.in-addr.arpa PTR\n' > "$out/local.txt"
: > "$out/cached.txt"
for i in $(seq 1 100); do echo "n$i.fwd.d20.test A" >> "$out/cached.txt"; done
# Fill the cache (each name forwarded once).
ip netns exec $P-vm1 dnsperf -s 10.1.1.1 -d "$out/cached.txt" -n 1 -q 10 > "$out/fill.txt" 2>&1

perf() {  # $1 data file, $2 extra dnsperf args; prints dnsperf's report
  ip netns exec $P-vm1 taskset -c "$CPU_PERF" dnsperf -s 10.1.1.1 -d "$1" -l "$SECS" -q "$OUTSTANDING" -c 4 $2 2>&1
}
lat() {  # dnsperf -v lines "> NOERROR name type latency" on stdin -> "avg p50 p99 max" (ms)
  awk '$1==">" {print $NF}' | sort -g | awk '{v[NR]=$1; s+=$1} END {
    if (NR==0) {print "null null null null"; exit}
    i50=int(NR*0.50); if(i50<1)i50=1; i99=int(NR*0.99); if(i99<1)i99=1;
    printf "%.3f %.3f %.3f %.3f\n", s/NR*1000, v[i50]*1000, v[i99]*1000, v[NR]*1000 }'
}
results=()
load="$(cat /proc/loadavg)"
for kind in local cached; do
  f="$out/$kind.txt"
  full=$(perf "$f" "")
  echo "$full" > "$out/$kind-full.txt"
  qps=$(echo "$full" | awk '/Queries per second/ {print $4}')
  lost=$(echo "$full" | awk '/Queries lost/ {print $3}')
  read -r a50 p50 p99 mx <<< "$(perf "$f" "-v" | lat)"
  read -r ra rp50 rp99 rmx <<< "$(perf "$f" "-v -Q $RATE" | lat)"
  results+=("{\"names\":\"$kind\",\"qps\":${qps:-0},\"lost\":${lost:-0},\"full_load_ms\":{\"avg\":$a50,\"p50\":$p50,\"p99\":$p99,\"max\":$mx},\"at_rate\":$RATE,\"at_rate_ms\":{\"avg\":$ra,\"p50\":$rp50,\"p99\":$rp99,\"max\":$rmx}}")
done
# The machine's floor: the same dnsperf, same rate, against a dnsmasq that answers every name
# itself (no logging), from the host namespace over a kernel veth, no vRouter in the path. If
# its p99 is above 1 ms too, the p99 goal is bounded by this machine, not by the agent.
ip netns exec $P-up dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
  --bind-interfaces --listen-address=10.53.0.3 --user=root --pid-file= \
  --address=/fwd.d20.test/192.0.2.77 --local-ttl=300 > "$out/dnsmasq-floor.log" 2>&1 & pids+=($!)
ip -n $P-up addr add 10.53.0.3/24 dev d20u1
sleep 0.5
read -r fa fp50 fp99 fmx <<< "$(ip netns exec $P-h taskset -c "$CPU_PERF" dnsperf -s 10.53.0.3 \
  -d "$out/cached.txt" -l "$SECS" -q "$OUTSTANDING" -c 4 -v -Q "$RATE" 2>&1 | lat)"
floor="{\"at_rate\":$RATE,\"ms\":{\"avg\":$fa,\"p50\":$fp50,\"p99\":$fp99,\"max\":$fmx}}"

# Other traffic while DNS runs: vm2 pings vm1 through the dataplane (300 x 10 ms), alone and
# while dnsperf keeps the gateway at full load.
rtt() {  # prints "avg p99 max lost" of 300 pings vm2 -> vm1
  local o; o=$(ip netns exec $P-vm2 ping -n -c 300 -i 0.01 -W 1 10.1.1.2 2>/dev/null)
  local lost; lost=$(echo "$o" | awk '/packets transmitted/ {print $1-$4}')
  echo "$o" | sed -n 's/.*time=\([0-9.]*\) ms.*/\1/p' | sort -g | awk -v lost="${lost:-null}" '
    {v[NR]=$1; s+=$1}
    END { if (NR==0) {print "null null null " lost; exit}
      i=int(NR*0.99); if(i<1)i=1;
      printf "%.3f %.3f %.3f %s\n", s/NR, v[i], v[NR], lost }'
}
read -r qa q99 qmx qlost <<< "$(rtt)"
perf "$out/local.txt" "" > "$out/under-load-perf.txt" &
perfpid=$!
sleep 0.5
read -r la l99 lmx llost <<< "$(rtt)"
wait $perfpid
underload="{\"quiet\":{\"avg\":$qa,\"p99\":$q99,\"max\":$qmx,\"lost\":$qlost},\"dns_full_load\":{\"avg\":$la,\"p99\":$l99,\"max\":$lmx,\"lost\":$llost}}"

stub=$(grep -c 'query\[A\] n[0-9]*.fwd.d20.test' "$out/dnsmasq.log" 2>/dev/null || echo 0)
{
  echo "{\"label\":\"$LABEL\",\"date\":\"$(date -u +%FT%TZ)\",\"loadavg_before\":\"$load\",\"cpus\":$(nproc),\"secs\":$SECS,"
  echo " \"qlen\":$QLEN,\"outstanding\":$OUTSTANDING,\"results\":[$(IFS=,; echo "${results[*]}")],"
  echo " \"floor_dnsmasq_no_vrouter\":$floor,\"vm_to_vm_ping_ms\":$underload}"
} > "$out/summary.json"
{
  echo "| names | queries/s (full load) | lost | avg / p50 / p99 / max ms (full load) | avg / p50 / p99 / max ms at $RATE q/s |"
  echo "|---|---|---|---|---|"
  python3 - "$out/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
for r in s["results"]:
    f, q = r["full_load_ms"], r["at_rate_ms"]
    print(f"| {r['names']} | {r['qps']:,.0f} | {r['lost']} | {f['avg']} / {f['p50']} / {f['p99']} / {f['max']} | {q['avg']} / {q['p50']} / {q['p99']} / {q['max']} |")
PY
  echo
  echo "floor (dnsperf -> dnsmasq over a kernel veth, no vRouter) at $RATE q/s: avg / p50 / p99 / max $fa / $fp50 / $fp99 / $fmx ms"
  echo "vm2 -> vm1 ping through the dataplane (300 x 10 ms), avg / p99 / max ms, lost: quiet $qa / $q99 / $qmx, $qlost; with dnsperf at full load $la / $l99 / $lmx, $llost"
  echo
  echo "agent: $LABEL"
  echo "load average before: $load; $(nproc) cpus; dp lcore on cpu $CPU_DP, dnsperf on cpu $CPU_PERF;"
  echo "net.unix.max_dgram_qlen=$QLEN in the host namespace; dnsperf -q $OUTSTANDING -c 4, $SECS s per run;"
  echo "upstream stub saw the forwarded names $stub times (100 names: each once, then the cache)."
} > "$out/summary.md"
cat "$out/summary.md"
