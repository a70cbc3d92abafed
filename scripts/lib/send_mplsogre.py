#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# Sends what an RFC 4023 gateway sends: MPLS in GRE to TO with LABEL over an ICMP echo request
# from SRC to DST (IPv4 and ICMP built by hand; the kernel adds the outer IP through a raw GRE
# socket, as this kernel forwards no MPLS). Three copies.
#   send_mplsogre.py TO LABEL SRC DST
# Used by agent/tests/ns_gateway.rs and the devcloud's BGP check (devcloud/src/checks/bgp.rs).
import socket, struct, sys
def csum(b):
    b += b"\0" * (len(b) % 2)
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
to, label, src, dst = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
icmp = struct.pack("!BBHHH", 8, 0, 0, 0x4243, 1) + b"from-the-edge"
icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0,
                 socket.inet_aton(src), socket.inet_aton(dst))
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
mpls = struct.pack("!I", (label << 12) | (1 << 8) | 64)
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 47)
for _ in range(3):
    s.sendto(struct.pack("!HH", 0, 0x8847) + mpls + ip + icmp, (to, 0))
