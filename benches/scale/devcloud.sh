#!/usr/bin/env bash
# The full devcloud at several sizes (issue 25, the agent's side): for each M in the list,
# `scripts/devcloud up --hosts 2 --vms M`, then with everything up and idle:
#   bind_s            the devcloud's own figure: first hotplug until every vif is bound
#   bind_after_last_hotplug_s  of that, after the last hook returned (the agents' lag)
#   hotplugs_s, veths_s  the hotplugs themselves (xenstore and the hook, 16 side by side), and
#                     the namespaces and veths made before them
#   dp_rss_kib        VmRSS of each host's vrouter-dp (dc-h1, dc-h2)
#   agent_rss_kib     VmRSS of each host's vrouter-agent
#   lcore_idle_pct    each host's lcore run time (schedstat) over IDLE_SECS, % of one core
#   rtt_*             i-2-1-VM (host 1) -> i-2-2-VM (host 2): 50 x 10 ms, and 5 x 500 ms (an
#                     lcore asleep at every ping)
#   tcp_gbps, tcp_retr  iperf3 i-2-1-VM -> i-2-2-VM, one stream, TCP_SECS
# then `devcloud down`. Root only; never run beside another devcloud (or CI's devcloud test).
# Usage: benches/scale/devcloud.sh [M ...]   (default: 4 200)
# Env: IDLE_SECS (10), TCP_SECS (5), OUT (benches/scale/out). Writes $OUT/devcloud.json.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
OUT=${OUT:-$here/out}; mkdir -p "$OUT"
IDLE_SECS=${IDLE_SECS:-10}
TCP_SECS=${TCP_SECS:-5}
sizes=(4 200); [ $# -gt 0 ] && sizes=("$@")
[ "$(id -u)" = 0 ] || { echo "root only" >&2; exit 1; }
trap '"$root/scripts/devcloud" down >/dev/null 2>&1' EXIT

# PID of the process whose command line starts with $1 and names $2 (one host's daemon).
pid_of() { for p in $(pgrep -f "^$root/target/release/$1 "); do
  tr '\0' ' ' < "/proc/$p/cmdline" | grep -q -- "$2" && { echo "$p"; return; }; done; }
rss() { awk '$1=="VmRSS:"{print $2}' "/proc/$1/status" 2>/dev/null; }
lcore_ns() { for t in /proc/"$1"/task/*; do
  grep -q '^lcore' "$t/comm" && awk '{print $1}' "$t/schedstat"; done | awk '{s+=$1} END{printf "%.0f\n", s}'; }

one() {  # $1: VMs; prints one JSON object
  local m=$1 log="$OUT/devcloud-$1.txt"
  "$root/scripts/devcloud" up --hosts 2 --vms "$m" > "$log" 2>&1 || { echo "devcloud up --vms $m failed: $log" >&2; return 1; }
  local dp1 dp2 ag1 ag2 a1 a2 b1 b2
  dp1=$(pid_of vrouter-dp dc-h1/); dp2=$(pid_of vrouter-dp dc-h2/)
  ag1=$(pid_of vrouter-agent dc-h1); ag2=$(pid_of vrouter-agent dc-h2)
  sleep 5   # the report's last traffic is over
  a1=$(lcore_ns "$dp1"); a2=$(lcore_ns "$dp2"); sleep "$IDLE_SECS"; b1=$(lcore_ns "$dp1"); b2=$(lcore_ns "$dp2")
  ip netns exec dc-i-2-1-VM ping -c 50 -i 0.01 -W 2 10.1.1.3 > "$OUT/dc-ping-fast-$m.txt" 2>&1
  ip netns exec dc-i-2-1-VM ping -c 5 -i 0.5 -W 2 10.1.1.3 > "$OUT/dc-ping-slow-$m.txt" 2>&1
  timeout $((TCP_SECS + 20)) ip netns exec dc-i-2-2-VM iperf3 -s -1 -p 5299 >/dev/null 2>&1 &
  local sp=$!; sleep 0.5
  timeout $((TCP_SECS + 15)) ip netns exec dc-i-2-1-VM iperf3 -c 10.1.1.3 -p 5299 -t "$TCP_SECS" -J > "$OUT/dc-iperf-$m.json" 2>/dev/null
  wait "$sp" 2>/dev/null
  python3 - "$m" "$log" "$(rss "$dp1")" "$(rss "$dp2")" "$(rss "$ag1")" "$(rss "$ag2")" \
    "$a1" "$b1" "$a2" "$b2" "$IDLE_SECS" "$OUT" <<'PY'
import json, re, sys
a = sys.argv[1:]
m, log, out = int(a[0]), open(a[1]).read(), a[11]
b = re.search(r"bound every vif .* ([0-9.]+) s after the first hotplug, ([0-9.]+) s after the last \((\d+) VMs, \d+ at a time: namespaces and veths in ([0-9.]+) s, hotplugs in ([0-9.]+) s", log)
def rtt(path):
    r = sorted(float(x) for x in re.findall(r"time=([0-9.]+) ms", open(path).read()))
    return {"n": len(r), "avg_ms": round(sum(r) / len(r), 3) if r else None,
            "p99_ms": r[min(len(r) - 1, max(0, -(-99 * len(r) // 100) - 1))] if r else None,
            "max_ms": r[-1] if r else None}
try:
    e = json.load(open(f"{out}/dc-iperf-{m}.json"))["end"]
    tcp = (round(e["sum_received"]["bits_per_second"] / 1e9, 3), e["sum_sent"].get("retransmits"))
except Exception:
    tcp = (None, None)
secs = float(a[10])
pct = lambda x, y: round(100.0 * (int(y) - int(x)) / 1e9 / secs, 2)
print(json.dumps({
    "vms": m, "vifs_plugged": int(b.group(3)) if b else None,
    "bind_s": float(b.group(1)) if b else None, "bind_after_last_hotplug_s": float(b.group(2)) if b else None,
    "hotplugs_s": float(b.group(5)) if b else None, "veths_s": float(b.group(4)) if b else None,
    "dp_rss_kib": [int(a[2] or 0), int(a[3] or 0)], "agent_rss_kib": [int(a[4] or 0), int(a[5] or 0)],
    "lcore_idle_pct": [pct(a[6], a[7]), pct(a[8], a[9])], "idle_secs": secs,
    "rtt_10ms": rtt(f"{out}/dc-ping-fast-{m}.txt"), "rtt_500ms": rtt(f"{out}/dc-ping-slow-{m}.txt"),
    "tcp_gbps": tcp[0], "tcp_retr": tcp[1],
}))
PY
  "$root/scripts/devcloud" down >/dev/null 2>&1
}

results=()
for m in "${sizes[@]}"; do
  echo "== devcloud --vms $m" >&2
  r=$(one "$m") && [ -n "$r" ] && { echo "$r" >&2; results+=("$r"); }
done
printf '%s\n' "${results[@]}" | python3 -c 'import json,sys; print(json.dumps([json.loads(l) for l in sys.stdin if l.strip()], indent=1))' \
  > "$OUT/devcloud.json"
cat "$OUT/devcloud.json"
