#!/usr/bin/env python3
"""Vif churn for benches/scale/run.sh (CHURN mode): adds vifs FIRST..LAST one Apply each (vif,
nexthop, /32 route: what a hot-plug of one VM sends), waits until the daemon logged every port
open, then removes them one Apply each and waits until it logged every port closed.
Usage: churn.py SOCK LOG FIRST LAST. Prints one JSON object with the phases' times."""
import json, os, sys, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from vrctl_min import request  # noqa: E402


def vif_ops(i):
    mac = "02:00:00:%02x:%02x:02" % (i // 256, i % 256)
    ip = (10 << 24) | (1 << 16) | ((i // 256) << 8) | (i % 256)
    vif, nh = 2 + i, 10 + i
    return ip, vif, nh, [
        {"AddVif": {"id": vif, "name": "vif%d.0" % i, "kind": "Virtual", "vrf": 1, "mac": mac,
                    "ip": ip, "mtu": 1500, "nh": nh}},
        {"AddNh": {"id": nh, "spec": {"Encap": {"oif": vif, "dmac": mac, "smac": "00:00:5e:00:01:00"}}}},
        {"AddRoute": {"vrf": 1, "prefix": ip, "plen": 32, "route": {"nh": nh, "label": None, "proxy_arp": True}}},
    ]


def count(log, what):
    with open(log) as f:
        return f.read().count(what)


def wait_log(log, what, n, limit=30.0):
    t0 = time.time()
    while count(log, what) < n and time.time() - t0 < limit:
        time.sleep(0.01)
    return count(log, what)


def apply(sock, ops):
    r = request(sock, {"op": "apply", "ops": ops})
    if r.get("result") != "ok":
        sys.exit(f"refused: {r}")


def main():
    sock, log, first, last = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    k = last - first + 1
    opened0, closed0 = count(log, ": opened vif"), count(log, ": closed port")
    t0 = time.time()
    worst_apply = 0.0
    for i in range(first, last + 1):
        a = time.time()
        apply(sock, vif_ops(i)[3])
        worst_apply = max(worst_apply, time.time() - a)
    t1 = time.time()
    opened = wait_log(log, ": opened vif", opened0 + k) - opened0
    t2 = time.time()
    for i in range(first, last + 1):
        ip, vif, nh, _ = vif_ops(i)
        a = time.time()
        apply(sock, [{"DelRoute": {"vrf": 1, "prefix": ip, "plen": 32}}, {"DelNh": nh}, {"DelVif": vif}])
        worst_apply = max(worst_apply, time.time() - a)
    closed = wait_log(log, ": closed port", closed0 + k) - closed0
    t3 = time.time()
    print(json.dumps({"churn_vifs": k, "opened": opened, "closed": closed,
                      "add_applies_s": round(t1 - t0, 3), "add_bound_s": round(t2 - t0, 3),
                      "del_s": round(t3 - t2, 3), "worst_apply_ms": round(1000 * worst_apply, 1)}))


main()
