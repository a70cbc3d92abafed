#!/usr/bin/env python3
"""Minimal control-socket client for the bench: sends one Apply of table operations (JSON list on
stdin) to vrouter-dp. Frame: b"VRC" version(1) length(u32 BE) JSON."""
import json, socket, struct, sys

def request(path, msg):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    body = json.dumps(msg).encode()
    s.sendall(b"VRC\x01" + struct.pack(">I", len(body)) + body)
    hdr = b""
    while len(hdr) < 8:
        hdr += s.recv(8 - len(hdr))
    n = struct.unpack(">I", hdr[4:8])[0]
    data = b""
    while len(data) < n:
        data += s.recv(n - len(data))
    return json.loads(data)

if __name__ == "__main__":
    ops = json.load(sys.stdin)
    r = request(sys.argv[1], {"op": "apply", "ops": ops})
    if r.get("result") != "ok":
        sys.exit(f"refused: {r}")
