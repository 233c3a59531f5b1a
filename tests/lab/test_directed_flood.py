"""Issue 16 item 8: a flood of spoofed ARP requests does not make the real clients of a directed
VIP miss their re-announcement after a failover (docs/directed.md, "Moving clients";
include/vipfarm/flow/requester_table.hpp).

A 3-node farm whose IPv4 VIP is directed, on a switch that floods no unknown unicast. From the
client namespace (raw frames, each requester with its own address and MAC):
  1. 50 real requesters each send an ARP request for the VIP and, to the node that answered
     (their predicted ARP owner), a TCP SYN;
  2. a flood of 12000 ARP requests from random addresses and MACs and 2000 from one MAC with
     random addresses (bounded: 4000 a second, 15 s at most); every node sees at least 10^4;
  3. kill -9 of the node that is the ARP owner of most real requesters: each of them receives
     the unicast ARP reply from its new ARP owner (predicted by `vipfarmctl owner --view`)
     within 2 s of the kill (sniffed on the client's interface).
Before the fix (1024 slots by a hash of the address, the latest request kept) the flood
overwrote nearly every real requester and none of them got its re-announcement.
"""
import json
import os
import re
import time

import labfarm

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

REAL = 50
FLOOD_RANDOM = 12000
FLOOD_ONE_MAC = 2000
FLOOD_RATE = 4000
BOUND_S = 2.0
SNIFF_S = 5.0

# Runs in the client namespace: ask (the real requesters), flood, sniff. Raw frames on one
# AF_PACKET socket; every loop is bounded in count and time.
CLIENT = r'''
import json, os, random, socket, struct, sys, time

IFACE, VIP = "lab0", socket.inet_aton(sys.argv[2])
BROADCAST = b"\xff" * 6


def mac_bytes(text):
    return bytes.fromhex(text.replace(":", ""))


def mac_text(b):
    return ":".join("%02x" % x for x in b)


def open_socket():
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    s.bind((IFACE, 0))
    # Promiscuous (PACKET_ADD_MEMBERSHIP, PACKET_MR_PROMISC): frames for the requesters' MACs.
    s.setsockopt(263, 1, struct.pack("iHH8s", socket.if_nametoindex(IFACE), 1, 0, b""))
    s.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE: a burst of announcements
    return s


def arp(op, eth_dst, sha, spa, tha, tpa):
    f = eth_dst + sha + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, op)
    f += sha + spa + tha + tpa
    return f + b"\0" * (60 - len(f))


def checksum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def syn(eth_dst, eth_src, src, dst, sport):
    tcp = struct.pack("!HHIIBBHHH", sport, 80, random.getrandbits(32), 0, 5 << 4, 0x02, 65535, 0, 0)
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    f = eth_dst + eth_src + b"\x08\x00" + ip + tcp
    return f + b"\0" * max(0, 60 - len(f))


def arp_reply_from_vip(f):
    """(eth dst, eth src, sha, tpa) of an ARP reply whose sender is the VIP, else None."""
    if len(f) < 42 or f[12:14] != b"\x08\x06" or f[20:22] != b"\x00\x02" or f[28:32] != VIP:
        return None
    return f[0:6], f[6:12], f[22:28], f[38:42]


def ask(reqs):
    """Each (address, MAC): an ARP request for the VIP, then a SYN to the MAC that answered."""
    s = open_socket()
    s.settimeout(0.05)
    owners = {}
    for n, (ip, mac) in enumerate(reqs):
        spa, sha = socket.inet_aton(ip), mac_bytes(mac)
        for _ in range(3):
            s.send(arp(1, BROADCAST, sha, spa, b"\0" * 6, VIP))
            end = time.monotonic() + 0.5
            while ip not in owners and time.monotonic() < end:
                try:
                    f, addr = s.recvfrom(2048)
                except socket.timeout:
                    continue
                got = arp_reply_from_vip(f)
                if addr[2] != 4 and got and got[0] == sha and got[3] == spa:
                    owners[ip] = mac_text(got[2])
            if ip in owners:
                s.send(syn(mac_bytes(owners[ip]), sha, spa, VIP, 40000 + n))
                break
    print(json.dumps(owners))


def flood(count, one_mac, rate, seconds):
    """count ARP requests from random addresses and MACs, then one_mac from one MAC."""
    rng = random.Random(16)
    frames = []
    for n in range(count + one_mac):
        spa = bytes([10, rng.randint(100, 249), rng.randint(0, 255), rng.randint(1, 254)])
        if n < count:
            sha = bytes([0x02 | (rng.getrandbits(8) & 0xFC)]) + rng.getrandbits(40).to_bytes(5, "big")
        else:
            sha = b"\x02\xba\xd0\x00\x00\x01"
        frames.append(arp(1, BROADCAST, sha, spa, b"\0" * 6, VIP))
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((IFACE, 0))
    start = time.monotonic()
    sent = 0
    while sent < len(frames) and time.monotonic() - start < seconds:
        due = min(len(frames), int((time.monotonic() - start) * rate) + 1)
        while sent < due:
            try:
                s.send(frames[sent])
            except OSError:
                time.sleep(0.001)
                continue
            sent += 1
        time.sleep(0.001)
    print(json.dumps({"sent": sent, "seconds": round(time.monotonic() - start, 2)}))


def sniff(watch_path, out_path, seconds):
    """Every ARP reply from the VIP to a watched address, with its CLOCK_MONOTONIC time."""
    watch = {socket.inet_aton(ip): ip for ip in json.load(open(watch_path))}
    s = open_socket()
    s.settimeout(0.05)
    print("ready", flush=True)
    seen, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            f, addr = s.recvfrom(2048)
        except socket.timeout:
            continue
        got = arp_reply_from_vip(f)
        if addr[2] != 4 and got and got[3] in watch:
            seen.append({"t": time.monotonic(), "ip": watch[got[3]], "dst": mac_text(got[0]),
                         "src": mac_text(got[1]), "sha": mac_text(got[2])})
    with open(out_path + ".tmp", "w") as out:
        json.dump(seen, out)
    os.rename(out_path + ".tmp", out_path)


mode = sys.argv[1]
if mode == "ask":
    ask(json.loads(sys.argv[3]))
elif mode == "flood":
    flood(*map(int, sys.argv[3:6]), float(sys.argv[6]))
elif mode == "sniff":
    sniff(sys.argv[3], sys.argv[4], float(sys.argv[5]))
'''


def directed_config(tmp_path):
    """conf/lab.toml with its IPv4 VIP directed (its rules as they are)."""
    text = open(os.path.join(ROOT, "conf", "lab.toml")).read()
    text, n = re.subn(r'(?m)^(address = "%s".*)$' % re.escape(labfarm.VIP4),
                      r'\1\nl2_mode = "directed"', text, count=1)
    assert n == 1, "conf/lab.toml has no [[vip]] address line for the IPv4 VIP"
    path = tmp_path / "lab-directed.toml"
    path.write_text(text)
    return str(path)


def arp_owner(f, address, view=None):
    """The node `vipfarmctl owner` names the ARP owner of requester `address` (its echo
    request's owner, docs/directed.md)."""
    cmd = [f.vipfarmctl, "owner", "--config", f.node_conf[1]]
    if view is not None:
        cmd += ["--view", ",".join(map(str, view))]
    return json.loads(labfarm.run(*cmd, "icmp", address, labfarm.VIP4, "--json"))["owner"]


def requests_seen(f, k):
    """ARP requests for the directed VIP node k handled: answered or left to another node."""
    c = f.ctl(k, "counters") or {}
    return c.get("arp_replies", 0) + c.get("directed", {}).get("silent", 0)


def test_flood_of_spoofed_requesters_does_not_hide_real_clients(farm, tmp_path):
    f = farm(3, config=directed_config(tmp_path), flood=False)
    script = tmp_path / "directed_client.py"
    script.write_text(CLIENT)

    def client(*args, timeout=60):
        return f.in_client(labfarm.LAB_PY, str(script), args[0], labfarm.VIP4,
                           *map(str, args[1:]), timeout=timeout)

    # 1. Real requesters: addresses in the lab's /16 that nothing else uses, a MAC each.
    reqs = [(f"10.77.200.{i}", "02:77:c8:00:00:%02x" % i) for i in range(1, REAL + 1)]
    mac_of = dict(reqs)
    owners = json.loads(client("ask", json.dumps(reqs)))
    node_of_mac = {mac.lower(): k for k, mac in f.macs.items()}
    assert len(owners) == REAL, f"only {len(owners)} of {REAL} requesters were answered"
    for ip, mac in owners.items():
        assert node_of_mac.get(mac) == arp_owner(f, ip), \
            f"{ip} answered by {mac}, not by its predicted ARP owner"

    # 2. The flood; each node must have handled at least 10^4 of it.
    before = {k: requests_seen(f, k) for k in f.all_nodes()}
    sent = json.loads(client("flood", FLOOD_RANDOM, FLOOD_ONE_MAC, FLOOD_RATE, 15, timeout=60))
    assert sent["sent"] == FLOOD_RANDOM + FLOOD_ONE_MAC, sent

    def flood_arrived():
        return all(requests_seen(f, k) - before[k] >= 10**4 for k in f.all_nodes())
    labfarm.wait_for(flood_arrived, 5, 0.2)
    seen = {k: requests_seen(f, k) - before[k] for k in f.all_nodes()}
    assert all(n >= 10**4 for n in seen.values()), f"the flood did not reach every node: {seen}"

    # 3. kill -9 of the ARP owner of most real requesters.
    by_node = {k: [ip for ip, mac in owners.items() if node_of_mac[mac] == k]
               for k in f.all_nodes()}
    victim = max(by_node, key=lambda k: len(by_node[k]))
    moved = by_node[victim]
    survivors = [k for k in f.all_nodes() if k != victim]
    want = {ip: f.macs[arp_owner(f, ip, survivors)].lower() for ip in moved}
    watch, out = tmp_path / "watch.json", tmp_path / "announcements.json"
    watch.write_text(json.dumps(moved))
    log = str(tmp_path / "sniff.log")
    sniffer = f.spawn(f.client_ns, log, labfarm.LAB_PY, str(script), "sniff", labfarm.VIP4,
                      str(watch), str(out), str(SNIFF_S))
    def ready():
        with open(log) as text:
            return "ready" in text.read()
    assert labfarm.wait_for(ready, 10), f"the sniffer did not start (log {log})"
    killed_at = time.monotonic()
    f.kill_daemon(victim)
    sniffer.wait(timeout=SNIFF_S + 10)
    heard = json.loads(out.read_text())

    late, missing = {}, []
    for ip in moved:
        from_owner = [h["t"] - killed_at for h in heard
                      if h["ip"] == ip and h["dst"] == mac_of[ip] and h["src"] == want[ip]
                      and h["sha"] == want[ip]]
        if not from_owner:
            missing.append(ip)
        elif min(from_owner) > BOUND_S:
            late[ip] = round(min(from_owner), 2)
    delays = sorted(min(h["t"] - killed_at for h in heard if h["ip"] == ip)
                    for ip in moved if ip not in missing)
    labfarm.SUMMARY.append(
        f"directed flood: {REAL} real requesters, flood of {sent['sent']} ARP requests in "
        f"{sent['seconds']} s (nodes saw {sorted(seen.values())}); kill -9 of node {victim}: "
        f"{len(moved) - len(missing) - len(late)} of {len(moved)} of its requesters "
        f"re-announced by their new ARP owner within {BOUND_S} s"
        + (f" (first {delays[0]:.2f} s, last {delays[-1]:.2f} s)" if delays else ""))
    assert not missing and not late, \
        (f"of node {victim}'s {len(moved)} real requesters, {len(missing)} got no "
         f"re-announcement from their new ARP owner ({missing[:5]}...), {len(late)} got it "
         f"after {BOUND_S} s ({late})")

    # The tables' counters: the random flood was mostly excess, the one-MAC flood rotated
    # through its MAC's own slots, and the SYNs confirmed requesters on the nodes that
    # answered them.
    for k in survivors:
        r = (f.ctl(k, "counters") or {}).get("directed", {}).get("requesters", {})
        assert r.get("excess", 0) >= FLOOD_RANDOM * 9 // 10 - 64, (k, r)
        assert r.get("capped", 0) >= FLOOD_ONE_MAC * 9 // 10, (k, r)
        assert REAL <= r.get("admitted", 0) <= 64 + 4 * 30, (k, r)
    confirmed = sum((f.ctl(k, "counters") or {}).get("directed", {}).get("requesters", {})
                    .get("confirmed", 0) for k in survivors)
    assert confirmed >= sum(len(by_node[k]) for k in survivors), confirmed
