#!/usr/bin/python3
"""The lab's black-box judge of single ownership (I1), run inside the client namespace.

Every --period-ms one round: one TCP SYN to VIP:80 from each probe key (a client source
address: the lab's rule key is on_addr), sent on a raw AF_PACKET socket to the VIP's
virtual MAC; the SYN-ACKs are collected for --window-ms and each is attributed to a node by
its Ethernet SOURCE address (vipfarmd gives a node's TAP its uplink's MAC, so that is what
every frame of the node's kernel carries). A probe is told apart from every other by its
sequence number, (round << 9 | key), and its source port (1024 + round % 60000, fresh for
an hour of rounds): an answer names its probe in its acknowledgement number, however late
it comes. The client's kernel answers each SYN-ACK with a RST (it has no socket): that
clears the node's half-open connection and changes nothing here.

One JSON line per round to --out:
  {"round": R, "t_ms": T, "lag_ms": L, "answers": {"KEY": [node, ...]}, "late": [[R', KEY,
   node], ...], "unknown": ["mac", ...]}
T is the wall-clock send time (ms since the epoch, as time.time() in the test); answers
holds the keys answered within the window, each with the distinct nodes that answered (a
key with no answer is absent); late lists answers that arrived after their round's window
(stale queued frames, SYN-ACK retransmissions), by the round they answer; unknown lists
source MACs of answers that are no node's. The first line is {"ready": ...} once the
sockets are up, the last {"end": ..., "rounds": N, "cpu_s": ..., "max_lag_ms": ...}: what the
prober cost and how late its latest round went out.

Bounded: at most --rounds rounds and --seconds seconds; stops as soon as --stop-file
exists. Scapy only builds the frame templates; the rounds use prebuilt bytes (patched port,
sequence number and checksum), so 256 probes a round cost a few ms of one core.
"""
import argparse
import ctypes
import json
import os
import select
import socket
import struct
import sys
import time

from scapy.all import IP, TCP, Ether  # noqa: E402 (templates only)

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
SO_ATTACH_FILTER = 26
KEY_BITS = 9  # up to 512 keys a round


def bpf_tcp_from_port_80():
    """Classic BPF: IPv4, TCP, not a fragment, source port 80 (the rest is checked here)."""
    insns = [
        (0x28, 0, 0, 12),       # ldh [12]              ethertype
        (0x15, 0, 8, 0x0800),   # jeq #0x800, else drop
        (0x30, 0, 0, 23),       # ldb [23]              IP protocol
        (0x15, 0, 6, 6),        # jeq #6 (TCP), else drop
        (0x28, 0, 0, 20),       # ldh [20]              flags + fragment offset
        (0x45, 4, 0, 0x1fff),   # jset #0x1fff: a fragment, drop
        (0xb1, 0, 0, 14),       # ldxb 4*([14]&0xf)     IP header length
        (0x48, 0, 0, 14),       # ldh [x+14]            TCP source port
        (0x15, 0, 1, 80),       # jeq #80, else drop
        (0x06, 0, 0, 0x40000),  # ret: accept
        (0x06, 0, 0, 0),        # ret: drop
    ]
    return b"".join(struct.pack("HBBI", *i) for i in insns), len(insns)


def attach_filter(sock):
    code, n = bpf_tcp_from_port_80()
    buf = ctypes.create_string_buffer(code)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                    struct.pack("HL", n, ctypes.addressof(buf)))
    return buf  # keep it alive as long as the socket


def mac_bytes(mac):
    return bytes.fromhex(mac.replace(":", ""))


def fold(s):
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def words(b):
    return sum(struct.unpack("!%dH" % (len(b) // 2), b))


class Probe:
    """The SYN frame of one key: a template whose source port, sequence number and TCP
    checksum are patched each round (checksum: the constant part summed once)."""

    def __init__(self, src, dst, src_mac, dst_mac):
        frame = bytes(Ether(src=src_mac, dst=dst_mac) /
                      IP(src=src, dst=dst, ttl=64, id=0, flags="DF") /
                      TCP(sport=0, dport=80, seq=0, flags="S", window=64240,
                          options=[("MSS", 1460)]))
        frame += b"\0" * max(0, 60 - len(frame))  # an Ethernet frame's minimum
        self.frame = bytearray(frame)
        ihl = (frame[14] & 0x0F) * 4
        self.tcp = 14 + ihl
        tcp_len = struct.unpack("!H", frame[16:18])[0] - ihl
        tcp = bytearray(frame[self.tcp:self.tcp + tcp_len])
        tcp[16:18] = b"\0\0"
        pseudo = frame[26:34] + struct.pack("!BBH", 0, 6, tcp_len)
        self.base = words(pseudo) + words(bytes(tcp))  # port and sequence are zero here

    def build(self, sport, seq):
        f = self.frame
        t = self.tcp
        struct.pack_into("!H", f, t, sport)
        struct.pack_into("!I", f, t + 4, seq)
        s = fold(self.base + sport + (seq >> 16) + (seq & 0xFFFF))
        struct.pack_into("!H", f, t + 16, (~s) & 0xFFFF)
        return bytes(f)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iface", required=True)
    ap.add_argument("--vip", default="10.77.0.100")
    ap.add_argument("--vmac", required=True, help="the VIP's virtual MAC")
    ap.add_argument("--src-mac", required=True, help="the client interface's MAC")
    ap.add_argument("--keys", required=True, help="file: one source address a line")
    ap.add_argument("--node-mac", action="append", default=[], help="K=MAC (repeated)")
    ap.add_argument("--period-ms", type=float, default=100)
    ap.add_argument("--window-ms", type=float, default=90)
    ap.add_argument("--rounds", type=int, default=3000)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--stop-file", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    keys = [line.strip() for line in open(a.keys) if line.strip()]
    if not 1 <= len(keys) <= 1 << KEY_BITS:
        sys.exit(f"prober: 1..{1 << KEY_BITS} keys, got {len(keys)}")
    key_of_addr = {socket.inet_aton(k): i for i, k in enumerate(keys)}
    node_of_mac = {}
    for spec in a.node_mac:
        k, _, mac = spec.partition("=")
        node_of_mac[mac_bytes(mac)] = int(k)
    vip = socket.inet_aton(a.vip)
    probes = [Probe(k, a.vip, a.src_mac, a.vmac) for k in keys]

    tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    tx.bind((a.iface, 0))
    rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    filt = attach_filter(rx)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    rx.bind((a.iface, ETH_P_IP))
    rx.setblocking(False)
    while True:  # what arrived before the filter was attached
        try:
            rx.recv(2048)
        except BlockingIOError:
            break
    poller = select.poll()
    poller.register(rx, select.POLLIN)

    out = open(a.out, "w", buffering=1)
    out.write(json.dumps({"ready": time.time() * 1000, "keys": len(keys)}) + "\n")
    key_mask = (1 << KEY_BITS) - 1
    round_mask = (1 << (32 - KEY_BITS)) - 1
    current = {"round": -1, "answers": {}}
    late, unknown = [], set()

    def drain():
        """Read every answer queued; file each under its probe's round."""
        while True:
            try:
                f = rx.recv(2048)
            except BlockingIOError:
                return
            if len(f) < 54 or f[12:14] != b"\x08\x00":
                continue
            ihl = (f[14] & 0x0F) * 4
            t = 14 + ihl
            if f[26:30] != vip or len(f) < t + 20:
                continue
            sport, dport, _, ack = struct.unpack_from("!HHII", f, t)
            flags = f[t + 13]
            if sport != 80 or flags & 0x12 != 0x12:  # SYN-ACKs only
                continue
            key = key_of_addr.get(f[30:34])
            probe = (ack - 1) & 0xFFFFFFFF
            if key is None or probe & key_mask != key:
                continue
            rnd = probe >> KEY_BITS
            if dport != 1024 + rnd % 60000:
                continue
            node = node_of_mac.get(f[6:12])
            if node is None:
                unknown.add(f[6:12].hex(":"))
                node = f[6:12].hex(":")
            if rnd == current["round"]:
                current["answers"].setdefault(key, set()).add(node)
            else:
                late.append([rnd, key, node])

    start = time.time()
    end = start + a.seconds
    period = a.period_ms / 1000
    window = a.window_ms / 1000
    rounds_done, max_lag = 0, 0.0

    def drain_until(t):
        """Read answers until time t; returns the time then."""
        while True:
            now = time.time()
            if now >= t:
                return now
            if poller.poll(max(1, int((t - now) * 1000))):
                drain()

    for i in range(a.rounds):
        due = start + i * period
        now = drain_until(due)  # late answers of the rounds before
        if now >= end or os.path.exists(a.stop_file):
            break
        rnd = i & round_mask
        sport = 1024 + rnd % 60000
        base = rnd << KEY_BITS
        current = {"round": rnd, "answers": {}}
        t_send = time.time()
        for key, p in enumerate(probes):
            try:
                tx.send(p.build(sport, base | key))
            except BlockingIOError:
                pass  # the queue is full: an unsent probe reads as a hole, never a double
        drain_until(t_send + window)
        drain()
        line = {"round": rnd, "t_ms": round(t_send * 1000, 1),
                "lag_ms": round((t_send - due) * 1000, 1),
                "answers": {str(k): sorted(v, key=str) for k, v in current["answers"].items()}}
        if late:
            line["late"] = late
            late = []
        if unknown:
            line["unknown"] = sorted(unknown)
            unknown = set()
        current = {"round": -1, "answers": {}}
        out.write(json.dumps(line, separators=(",", ":")) + "\n")
        rounds_done = i + 1
        max_lag = max(max_lag, line["lag_ms"])
    cpu = os.times()
    out.write(json.dumps({"end": time.time() * 1000, "rounds": rounds_done,
                          "cpu_s": round(cpu.user + cpu.system, 2),
                          "max_lag_ms": max_lag}) + "\n")
    out.close()
    del filt


if __name__ == "__main__":
    main()
