#!/usr/bin/python3
"""A forged-heartbeat flood for the lab, run inside the client namespace: UDP datagrams to
each target node's membership port, round robin, TTL 255, on a raw AF_PACKET socket.

  --kind random   random bytes (1..400 of them): rejected as malformed, or worse
  --kind bad_mac  a heartbeat header that looks valid (wire.hpp version 2: magic, version,
                  state UP, key 1, the lab's cluster id, a configured peer's id, address,
                  uplink MAC and incarnation, the farm's fingerprint and epoch, a fresh
                  sequence) signed with a random HMAC: only the MAC check can refuse it.
                  The datagram claims to come from that peer's address.

Bounded: --rate datagrams a second in all (default 10^5), for at most --seconds and at most
--count datagrams; stops when --stop-file exists. Frames are built before the clock starts
(a pool per target, sent in turn), so the rate is the socket's, not Python's packet
building. Prints one JSON line at the end: {"sent": N, "seconds": S, "rate": R, "by": {..}}.
"""
import argparse
import hashlib
import json
import os
import random
import socket
import struct
import time


def checksum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def frame(src_mac, dst_mac, src, dst, payload, sport=9470, dport=9470, ttl=255):
    src_ip, dst_ip = socket.inet_aton(src), socket.inet_aton(dst)
    udp_len = 8 + len(payload)
    pseudo = src_ip + dst_ip + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    csum = checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, random.getrandbits(16), 0x4000,
                     ttl, 17, 0, src_ip, dst_ip)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    eth = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) + b"\x08\x00"
    f = eth + ip + udp
    return f + b"\0" * max(0, 60 - len(f))


def forged_header(node, mac, incarnation, sequence, fingerprint, epoch, cluster_name):
    """A version-2 heartbeat as tests/lab/partition.sh's forger builds it, unsigned."""
    cluster = hashlib.sha256(cluster_name.encode()).digest()[:8]
    members = 0b111
    return (b"VFHB" + struct.pack(">BBH", 2, 2, 1) + cluster +
            struct.pack(">BBBB", node, 0, 1, 0) + struct.pack(">QQ", incarnation, sequence) +
            fingerprint + struct.pack(">QQQ", epoch, members, members) +
            bytes.fromhex(mac.replace(":", "")) + b"\0\0" + struct.pack(">H", 1) +
            struct.pack(">H", 0))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iface", required=True)
    ap.add_argument("--src-mac", required=True)
    ap.add_argument("--src", default="10.77.0.250", help="source address (random kind)")
    ap.add_argument("--target", action="append", required=True,
                    help="ID=MAC=ADDR of a node to flood (repeated)")
    ap.add_argument("--peer", action="append", default=[],
                    help="ID=MAC=ADDR=INCARNATION of a node a bad_mac heartbeat claims to be")
    ap.add_argument("--kind", choices=["random", "bad_mac"], default="random")
    ap.add_argument("--fingerprint", default="00" * 32)
    ap.add_argument("--epoch", type=int, default=1)
    ap.add_argument("--cluster", default="lab")
    ap.add_argument("--port", type=int, default=9470)
    ap.add_argument("--rate", type=float, default=1e5)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--count", type=int, default=10 ** 6)
    ap.add_argument("--pool", type=int, default=512, help="distinct frames per target")
    ap.add_argument("--stop-file", required=True)
    a = ap.parse_args()

    targets = []
    for spec in a.target:
        k, mac, addr = spec.split("=")
        targets.append((int(k), mac, addr))
    peers = {}
    for spec in a.peer:
        k, mac, addr, inc = spec.split("=")
        peers[int(k)] = (mac, addr, int(inc))
    fingerprint = bytes.fromhex(a.fingerprint)
    pools = []
    seq = 1 << 50
    for k, mac, addr in targets:
        pool = []
        for i in range(a.pool):
            if a.kind == "random":
                payload = os.urandom(random.randint(1, 400))
                pool.append(frame(a.src_mac, mac, a.src, addr, payload, dport=a.port))
            else:
                claimed = [j for j in peers if j != k]
                j = claimed[i % len(claimed)]
                pmac, paddr, inc = peers[j]
                seq += 1
                payload = forged_header(j, pmac, inc, seq, fingerprint, a.epoch, a.cluster)
                pool.append(frame(a.src_mac, mac, paddr, addr, payload + os.urandom(32),
                                  dport=a.port))
        pools.append(pool)

    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    s.bind((a.iface, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    by = [0] * len(targets)
    sent = 0
    start = time.monotonic()
    end = start + a.seconds
    n = len(targets)
    idx = 0
    batch = max(1, int(a.rate / 1000))  # one batch a millisecond at full rate
    next_check = 0
    while sent < a.count:
        now = time.monotonic()
        if now >= end:
            break
        if sent >= next_check:
            if os.path.exists(a.stop_file):
                break
            next_check = sent + 10000
        due = min(a.count, int((now - start) * a.rate) + batch)
        if sent >= due:
            time.sleep(0.0005)
            continue
        while sent < due:
            t = sent % n
            try:
                s.send(pools[t][idx % a.pool])
            except (BlockingIOError, OSError):
                time.sleep(0.0002)  # the device queue is full: count only what went out
                break
            by[t] += 1
            sent += 1
            if t == n - 1:
                idx += 1
    took = time.monotonic() - start
    s.close()
    print(json.dumps({"sent": sent, "seconds": round(took, 3), "rate": round(sent / took) if took else 0,
                      "by": {str(targets[i][0]): by[i] for i in range(n)}}))


if __name__ == "__main__":
    main()
