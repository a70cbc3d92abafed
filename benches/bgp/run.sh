#!/usr/bin/env bash
# BGP route scale, both directions at once, against GoBGP (Debian gobgpd), all on loopback
# (127.78.0.0/24):
#   import: bgp-inject announces N VPN-IPv4 /32s to gobgpd (eBGP); once gobgpd holds them all,
#           the shim's bgp-router for gobgpd is created, and we time until both registered
#           hosts' views (what their agents program) hold all N routes.
#   export: N VM routes advertised by the hosts' agents (POST /vrouter/routes) before the
#           session exists; we time from the bgp-router's creation until gobgpd has received
#           all N from the shim.
# Reports routes/s for each and the shim's RSS with 2N routes. Agents are not run (the hosts
# are registered through the API; the views are what they would fetch).
# Usage: benches/bgp/run.sh        Env: N (routes each way, 100000), SHIM (release vrouter-shim)
# Writes out/summary.json and out/summary.md. Kills only the processes it started.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$here/out"; mkdir -p "$out"
N=${N:-100000}
IMPORT_N=${IMPORT_N:-$N}  # routes bgp-inject announces (0 < IMPORT_N; to time one direction alone)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
rel="$CARGO_TARGET_DIR/release"
SHIM=${SHIM:-$rel/vrouter-shim}
INJECT=${INJECT:-$rel/bgp-inject}
SHIM_IP=127.78.0.1 GOBGP_IP=127.78.0.2 INJ_IP=127.78.0.3
API=127.0.0.1:18682 GRPC=127.0.0.1:18683

command -v gobgpd >/dev/null || { echo "missing gobgpd: apt-get install -y gobgpd" >&2; exit 1; }
[ -x "$SHIM" ] && [ -x "$INJECT" ] || {
  echo "build first: cargo build --release -p vrouter-shim --bins" >&2; exit 1; }

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  cp "$tmp"/*.log "$out"/ 2>/dev/null; rm -rf "$tmp"
}
trap cleanup EXIT
now() { date +%s.%N; }
api() { curl -sf -X "$1" -H 'Content-Type: application/json' "http://$API$2" ${3:+-d "$3"}; }
gobgp() { command gobgp -u 127.0.0.1 -p "${GRPC#*:}" "$@"; }

cat > "$tmp/gobgpd.toml" <<EOF
[global.config]
  as = 65002
  router-id = "$GOBGP_IP"
  port = 179
  local-address-list = ["$GOBGP_IP"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "$INJ_IP"
    peer-as = 65003
  [neighbors.transport.config]
    local-address = "$GOBGP_IP"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "l3vpn-ipv4-unicast"
[[neighbors]]
  [neighbors.config]
    neighbor-address = "$SHIM_IP"
    peer-as = 64512
  [neighbors.transport.config]
    local-address = "$GOBGP_IP"
  [neighbors.timers.config]
    connect-retry = 1
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "l3vpn-ipv4-unicast"
EOF
gobgpd -f "$tmp/gobgpd.toml" --api-hosts "$GRPC" -l warn > "$tmp/gobgpd.log" 2>&1 & pids+=($!)
RUST_LOG=${SHIM_LOG:-warn} "$SHIM" --listen "$API" --store "sqlite:$tmp/shim.db" --bgp "$SHIM_IP" --agent-ttl 3600 \
  > "$tmp/shim.log" 2>&1 & shim_pid=$!; pids+=($shim_pid)
for _ in $(seq 100); do api GET / >/dev/null && break; sleep 0.1; done

# The cloud: network tier-web (its route target imports what bgp-inject announces), one VM
# bound on each of two hosts.
api POST /virtual-networks '{"virtual-network": {"fq_name": ["default-domain","default-project","tier-web"], "parent_type": "project", "network_ipam_refs": [{"to": ["default-domain","default-project","default-network-ipam"], "attr": {"ipam_subnets": [{"subnet": {"ip_prefix": "10.20.0.0", "ip_prefix_len": 16}, "default_gateway": "10.20.0.1"}]}}]}}' > "$tmp/vn.json"
vn_uuid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["virtual-network"]["uuid"])' "$tmp/vn.json")
net_id=$(api GET "/virtual-network/$vn_uuid" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-network"]["virtual_network_network_id"])')
VRF=default-domain:default-project:tier-web
for h in 1 2; do
  api POST /virtual-machines "{\"virtual-machine\": {\"fq_name\": [\"vm$h\"], \"uuid\": \"6e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8$h\"}}" >/dev/null
  api POST /virtual-machine-interfaces "{\"virtual-machine-interface\": {\"uuid\": \"d1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5$h\", \"fq_name\": [\"vm$h\", \"vm$h-0\"], \"parent_type\": \"virtual-machine\", \"virtual_network_refs\": [{\"to\": [\"default-domain\",\"default-project\",\"tier-web\"]}]}}" >/dev/null
  api POST /vrouter/agents "{\"hostname\": \"h$h\", \"fabric_ip\": \"10.0.0.$h\"}" >/dev/null
  api POST /vrouter/bindings "{\"host\": \"h$h\", \"vmi_uuid\": \"d1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5$h\"}" >/dev/null
done

# Export side: N VM routes (alternating hosts), advertised through the agent API.
t=$(now)
python3 - "$API" "$N" "$VRF" <<'EOF'
import http.client, json, sys
api, n, vrf = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = http.client.HTTPConnection(api)
for i in range(n):
    a = 0x0A140000 + 2 + i  # 10.20.0.2 + i (a /16 holds 65534; the rest spills to 10.21/16)
    ip = ".".join(str((a >> s) & 255) for s in (24, 16, 8, 0))
    body = json.dumps({"host": "h%d" % (1 + i % 2), "vrf": vrf, "prefix": ip + "/32", "label": 16 + i})
    c.request("POST", "/vrouter/routes", body, {"Content-Type": "application/json"})
    r = c.getresponse(); r.read()
    if r.status != 200:
        sys.exit("advertise %s: %d" % (ip, r.status))
EOF
adv_s=$(python3 -c "print(round($(now) - $t, 1))")
echo "advertised $N VM routes through the agent API in $adv_s s"

# Import side: bgp-inject fills gobgpd first (timed too: the peer's own floor).
ti=$(now)
"$INJECT" --peer "$GOBGP_IP:179" --source "$INJ_IP" --routes "$IMPORT_N" --rt "64512:$net_id" \
  --linger 3600 > "$tmp/inject.log" 2>&1 & pids+=($!)
for _ in $(seq 600); do
  have=$(gobgp -j global rib -a vpnv4 summary 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin).get("num_destination",0))' 2>/dev/null || echo 0)
  [ "${have:-0}" -ge "$IMPORT_N" ] && break; sleep 0.5
done
inj_s=$(python3 -c "print(round($(now) - $ti, 2))")
echo "gobgpd holds $have routes from bgp-inject after $inj_s s"

# Go: the shim peers with gobgpd.
t0=$(now)
api POST /bgp-routers "{\"bgp-router\": {\"fq_name\": [\"default-domain\",\"default-project\",\"ip-fabric\",\"__default__\",\"gobgp\"], \"parent_type\": \"routing-instance\", \"bgp_router_parameters\": {\"address\": \"$GOBGP_IP\", \"autonomous_system\": 65002, \"address_families\": {\"family\": [\"inet-vpn\"]}}}}" >/dev/null
python3 - "$API" "$N" "$VRF" "$GRPC" "$t0" "$SHIM_IP" "$IMPORT_N" > "$tmp/times.json" <<'EOF'
import http.client, json, subprocess, sys, time
api, n, vrf, grpc, t0, shim_ip = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5]), sys.argv[6]
n_in = int(sys.argv[7])
host, port = grpc.split(":")
deadline = t0 + 600
seen = {"h1": {}, "h2": {}}   # host -> key -> present
rev = {"h1": 0, "h2": 0}
done = {}
c = http.client.HTTPConnection(api, timeout=120)
def poll_view(h):
    c.request("GET", "/vrouter/watch?host=%s&since=%d&timeout=1" % (h, rev[h]))
    w = json.loads(c.getresponse().read())
    if w.get("reset"):
        seen[h] = {}
    for e in w["events"]:
        k = e["key"]
        if "/bgp:" in k:
            if e["op"] == "put":
                seen[h][k] = True
            else:
                seen[h].pop(k, None)
    rev[h] = w["rev"]
    return len(seen[h])
def exported():
    out = subprocess.run(["gobgp", "-u", host, "-p", port, "-j", "neighbor", shim_ip],
                         capture_output=True, text=True).stdout
    try:
        for a in json.loads(out).get("afi_safis", []):
            st = a.get("state", {})
            return int(st.get("received", 0))
    except ValueError:
        pass
    return 0
while time.time() < deadline and len(done) < 3:
    for h in ("h1", "h2"):
        if h not in done and poll_view(h) >= n_in:
            done[h] = time.time() - t0
    if "export" not in done and exported() >= n:
        done["export"] = time.time() - t0
    time.sleep(0.2)
print(json.dumps({"import_h1_s": done.get("h1"), "import_h2_s": done.get("h2"),
                  "export_s": done.get("export"), "in_h1": len(seen["h1"]), "in_h2": len(seen["h2"])}))
EOF
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$shim_pid/status")
python3 - "$tmp/times.json" "$N" "$rss_kb" "$adv_s" "$out" "$inj_s" "$IMPORT_N" <<'EOF'
import json, sys
t = json.load(open(sys.argv[1])); n = int(sys.argv[2]); rss = int(sys.argv[3]); adv = float(sys.argv[4]); out = sys.argv[5]
inj = float(sys.argv[6]); n_in = int(sys.argv[7])
imp = max(filter(None, [t["import_h1_s"], t["import_h2_s"]]), default=None) if t["import_h1_s"] and t["import_h2_s"] else None
rate = lambda s, k=n: round(k / s) if s else None
s = {"routes": n, "import_routes": n_in, "import_s": imp, "import_routes_per_s": rate(imp, n_in), "export_s": t["export_s"],
     "export_routes_per_s": rate(t["export_s"]), "shim_rss_mib": round(rss / 1024, 1),
     "agent_api_advertise_s": adv, "gobgpd_takes_in_s": inj, "in_views": [t["in_h1"], t["in_h2"]], "goal_routes_per_s": 50000}
json.dump(s, open(out + "/summary.json", "w"), indent=1)
md = ("| direction | routes | seconds | routes/s | goal |\n|---|---|---|---|---|\n"
      "| import (gobgpd → both hosts' views) | %d | %s | %s | 50,000 |\n"
      "| export (agents' routes → gobgpd) | %d | %s | %s | 50,000 |\n"
      "| floor: bgp-inject → gobgpd alone | %d | %s | %s | |\n\nshim RSS with %d + %d routes: %.1f MiB\n"
      % (n_in, imp, s["import_routes_per_s"], n, t["export_s"], s["export_routes_per_s"], n_in, inj, rate(inj, n_in), n_in, n, rss / 1024))
open(out + "/summary.md", "w").write(md)
print(md)
EOF
