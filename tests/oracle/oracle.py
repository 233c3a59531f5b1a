#!/usr/bin/python3
"""Independent oracle of docs/classifier.md.

Reads a vipfarm config (TOML) and a pcap (linktype Ethernet) and prints, for every
frame, one JSON object per line:

  {"index": i, "verdict": v, "reason": r, "group": g, "bucket": b}

v is one of pass, farm, no_rule, arp_vip, nd_vip, malformed; r is the malformed reason
(else ""); g and b are the group name and bucket of farm verdicts (else "" and -1).

The parser works on raw bytes (struct) and is written from docs/classifier.md only;
scapy is not used here.  Run with /usr/bin/python3 (3.11: tomllib).

Like `vipfarmctl owner`, it classifies against every VIP (offline tools have no ports).
Gateway VIPs (§2): a frame to a gateway's virtual MAC is that gateway's traffic whatever
its destination address, and so is a packet to a gateway's own address with another MAC;
both take the rules naming the gateway or "*", filtered by their dst prefixes.

--selftest checks hand-worked frames, then (gateway_selfcheck) that both directions of
random flows land in one bucket wherever §5 says they do: a symmetric key either way,
on_addr / on_port one way and on_dst_addr / on_dst_port the other, by key words and by
frames through the gateway pairs of the config.
"""

import argparse
import collections
import ipaddress
import json
import struct
import sys
import tomllib

M64 = (1 << 64) - 1

# --------------------------------------------------------------------------- hash (§5)


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def mum(a, b):
    p = a * b
    return ((p >> 64) ^ p) & M64


def seeds(seed):
    return [mix64((seed + (i + 1) * 0x9E3779B97F4A7C15) & M64) for i in range(6)]


def hash_words(s, w0, w1, w2, w3, w4):
    a = mum(w0 ^ s[0], w1 ^ s[1])
    b = mum(w2 ^ s[2], w3 ^ s[3])
    return mum(a ^ s[4], b ^ w4 ^ s[5])


def addr128(addr):
    """bytes of 4 (IPv4) or 16 (IPv6) -> (hi, lo) of the 128-bit form."""
    if len(addr) == 4:
        addr = b"\0" * 10 + b"\xff\xff" + addr
    hi, lo = struct.unpack("!QQ", addr)
    return hi, lo


def mask_addr(addr, prefix):
    n = len(addr) * 8
    prefix = max(0, min(prefix, n))
    v = int.from_bytes(addr, "big")
    mask = ((1 << n) - 1) ^ ((1 << (n - prefix)) - 1)
    return (v & mask).to_bytes(len(addr), "big")


# --------------------------------------------------------------------------- config

PROTO_ANY = None


class Rule:
    __slots__ = ("group", "vip", "proto", "ports", "key", "prefix", "prefix6", "index",
                 "dst")


def default_vip_mac(packed):
    """vip[].mac's default (docs: schema): 5A:FE:<IPv4 in hex>; IPv6: 5A:F6 and the top
    4 bytes of mix64(hi ^ mix64(lo))."""
    if len(packed) == 4:
        return b"\x5a\xfe" + packed
    hi, lo = struct.unpack("!QQ", packed)
    return b"\x5a\xf6" + struct.pack("!Q", mix64(hi ^ mix64(lo)))[:4]


def parse_mac(text):
    parts = text.replace("-", ":").split(":")
    if len(parts) != 6:
        raise ValueError("not a MAC address: %r" % text)
    return bytes(int(x, 16) for x in parts)


def parse_dst(value):
    """group[].rule[].dst: a string of comma-separated prefixes or a list of such strings;
    "*" anywhere (or no dst) means any destination: None. Else a list of (packed network,
    prefix length)."""
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            if part == "*":
                return None
            net = ipaddress.ip_network(part, strict=True)
            out.append((net.network_address.packed, net.prefixlen))
    return out


def in_prefixes(addr, prefixes):
    for net, plen in prefixes:
        if len(net) == len(addr) and mask_addr(addr, plen) == net:
            return True
    return False


class Config:
    def __init__(self, path):
        with open(path, "rb") as f:
            raw = tomllib.load(f)
        cluster = raw.get("cluster", {})
        self.buckets = int(cluster.get("buckets", 256))
        self.seed = int(cluster.get("seed", 0)) & M64
        self.icmp_echo = cluster.get("icmp_echo", "one")
        self.s = seeds(self.seed)
        self.vip4 = set()
        self.vip6 = set()
        self.gateways = set()        # packed addresses of gateway VIPs
        self.gw_by_mac = {}          # virtual MAC -> packed address, gateway VIPs only
        for v in raw.get("vip", []):
            a = ipaddress.ip_address(v["address"])
            (self.vip4 if a.version == 4 else self.vip6).add(a.packed)
            if v.get("gateway", False):
                mac = v.get("mac", "")
                mac = parse_mac(mac) if mac else default_vip_mac(a.packed)
                self.gateways.add(a.packed)
                self.gw_by_mac[mac] = a.packed
        self.rules = []
        for g in raw.get("group", []):
            for r in g.get("rule", []):
                rule = Rule()
                rule.group = g["name"]
                rule.index = len(self.rules)
                vip = r.get("vip", "*")
                rule.vip = None if vip == "*" else ipaddress.ip_address(vip).packed
                rule.proto = r.get("proto", "any")
                rule.ports = parse_ports(r.get("ports", "*"))
                rule.key = r.get("key", "on_addr")
                rule.prefix = int(r.get("prefix", 24))
                rule.prefix6 = int(r.get("prefix6", 64))
                rule.dst = parse_dst(r.get("dst"))
                self.rules.append(rule)

    def is_vip(self, addr):
        return addr in (self.vip4 if len(addr) == 4 else self.vip6)


def parse_ports(text):
    text = str(text).strip()
    if text == "*":
        return None
    ports = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            ports.update(range(int(lo), int(hi) + 1))
        else:
            ports.add(int(part))
    return frozenset(ports)


# --------------------------------------------------------------------------- parsing


class Malformed(Exception):
    pass


EXT_HEADERS = (0, 43, 60, 51, 44)
MAX_EXT = 8


def ipv6_walk(b, pos, end, nh):
    """§1.5 extension walk over b[pos:end].

    Returns (upper_nh, l4_pos, is_fragment, frag_id_or_None, has_l4).
    Raises Malformed('ext_truncated' / 'ext_chain')."""
    count = 0
    frag = False
    frag_id = None
    while nh in EXT_HEADERS:
        count += 1
        if count > MAX_EXT:
            raise Malformed("ext_chain")
        if nh == 44:
            ln = 8
        else:
            if pos + 2 > end:
                raise Malformed("ext_truncated")
            if nh == 51:
                ln = (b[pos + 1] + 2) * 4
            else:
                ln = (b[pos + 1] + 1) * 8
        if pos + ln > end:
            raise Malformed("ext_truncated")
        nxt = b[pos]
        if nh == 44:
            fo_m = struct.unpack_from("!H", b, pos + 2)[0]
            offset = fo_m >> 3
            more = fo_m & 1
            if frag_id is None:
                frag_id = struct.unpack_from("!I", b, pos + 4)[0]
            if offset != 0 or more:
                frag = True
            if offset != 0:
                return nxt, pos + ln, True, frag_id, False
        pos += ln
        nh = nxt
    return nh, pos, frag, frag_id, True


class Packet:
    """Result of §1 for an IP packet."""
    __slots__ = ("fam", "src", "dst", "proto", "ident", "frag", "l4", "end", "has_l4", "hops")


def parse_frame(b):
    """§1. Returns ('malformed', reason) | ('pass',) | ('arp_vip',) | ('arp',) | ('ip', Packet)."""
    n = len(b)
    if n < 14:
        raise Malformed("runt")
    et = struct.unpack_from("!H", b, 12)[0]
    off = 14
    tags = 0
    while et in (0x8100, 0x88A8):
        if tags == 2:
            raise Malformed("vlan_depth")
        if n < off + 4:
            raise Malformed("vlan_truncated")
        et = struct.unpack_from("!H", b, off + 2)[0]
        off += 4
        tags += 1
    avail = n - off
    if et == 0x0806:
        if avail < 28:
            raise Malformed("arp_truncated")
        htype, ptype, hlen, plen, oper = struct.unpack_from("!HHBBH", b, off)
        if (htype == 1 and ptype == 0x0800 and hlen == 6 and plen == 4 and oper == 1
                and b[off + 14:off + 18] != b[off + 24:off + 28]  # gratuitous: pass
                and not b[off + 8] & 1):  # a group sender hardware address: pass
            return ("arp", b[off + 24:off + 28])
        return ("arp", None)
    if et == 0x0800:
        if avail < 20:
            raise Malformed("l3_truncated")
        if b[off] >> 4 != 4:
            raise Malformed("ip_version")
        ihl = b[off] & 15
        if ihl < 5:
            raise Malformed("ipv4_ihl")
        if ihl * 4 > avail:
            raise Malformed("l3_truncated")
        tl, ident, ff = struct.unpack_from("!HHH", b, off + 2)
        if tl < ihl * 4 or tl > avail:
            raise Malformed("ipv4_total_length")
        p = Packet()
        p.fam = 4
        p.src = b[off + 12:off + 16]
        p.dst = b[off + 16:off + 20]
        p.proto = b[off + 9]
        p.ident = ident
        fo = ff & 0x1FFF
        mf = (ff >> 13) & 1
        p.frag = bool(mf or fo)
        p.l4 = off + ihl * 4
        p.end = off + tl
        p.has_l4 = fo == 0
        return ("ip", p)
    if et == 0x86DD:
        if avail < 40:
            raise Malformed("l3_truncated")
        if b[off] >> 4 != 6:
            raise Malformed("ip_version")
        vtf, plen, nh = struct.unpack_from("!IHB", b, off)
        if plen == 0 or 40 + plen > avail:
            raise Malformed("ipv6_payload_length")
        end = off + 40 + plen
        upper, l4, frag, frag_id, has_l4 = ipv6_walk(b, off + 40, end, nh)
        p = Packet()
        p.fam = 6
        p.src = b[off + 8:off + 24]
        p.dst = b[off + 24:off + 40]
        p.proto = upper
        p.ident = frag_id if frag_id is not None else (vtf & 0xFFFFF)
        p.frag = frag
        p.l4 = l4
        p.end = end
        p.has_l4 = has_l4
        p.hops = b[off + 7]
        return ("ip", p)
    return ("pass",)


# --------------------------------------------------------------------------- flow (§3)

PORTS_KNOWN, PORTS_UNKNOWN, PORTS_NONE = 1, 2, 3

ICMP4_ERRORS = (3, 11, 12)
ICMP6_ERRORS = (1, 2, 3, 4)


class Flow:
    __slots__ = ("fam", "client", "server", "proto", "cport", "sport", "ident", "ports",
                 "echo", "frag", "gateway")


def parse_quote(b, q, qend, fam):
    """§3 ICMP errors: returns (client, server, proto, ident, ports, cport, sport)."""
    qlen = qend - q
    if fam == 4:
        if qlen < 20 or b[q] >> 4 != 4:
            raise Malformed("icmp_quote")
        ihl = b[q] & 15
        if ihl < 5 or ihl * 4 > qlen:
            raise Malformed("icmp_quote")
        ident, ff = struct.unpack_from("!HH", b, q + 4)
        qproto = b[q + 9]
        qsrc = b[q + 12:q + 16]
        qdst = b[q + 16:q + 20]
        qfrag = bool(ff & 0x3FFF)
        ql4 = q + ihl * 4
    else:
        if qlen < 40 or b[q] >> 4 != 6:
            raise Malformed("icmp_quote")
        vtf = struct.unpack_from("!I", b, q)[0]
        try:
            qproto, ql4, qfrag, frag_id, _ = ipv6_walk(b, q + 40, qend, b[q + 6])
        except Malformed:
            raise Malformed("icmp_quote")
        ident = frag_id if frag_id is not None else (vtf & 0xFFFFF)
        qsrc = b[q + 8:q + 24]
        qdst = b[q + 24:q + 40]
    if qproto in (6, 17):
        if not qfrag and qend - ql4 >= 4:
            sport, cport = struct.unpack_from("!HH", b, ql4)
            return qdst, qsrc, qproto, ident, PORTS_KNOWN, cport, sport
        return qdst, qsrc, qproto, ident, PORTS_UNKNOWN, 0, 0
    return qdst, qsrc, qproto, ident, PORTS_NONE, 0, 0


def make_flow(b, p):
    f = Flow()
    f.fam = p.fam
    f.client = p.src
    f.server = p.dst
    f.proto = p.proto
    f.ident = p.ident
    f.cport = f.sport = 0
    f.echo = False
    f.frag = p.frag
    f.gateway = None     # the gateway VIP whose traffic this is (§2), set by classify
    if p.frag:
        f.ports = PORTS_UNKNOWN
        return f
    L = p.end - p.l4
    icmp_proto = 1 if p.fam == 4 else 58
    if p.proto == 6:
        if L < 20:
            raise Malformed("l4_truncated")
        doff = b[p.l4 + 12] >> 4
        if doff < 5 or doff * 4 > L:
            raise Malformed("tcp_data_offset")
        f.sport, f.cport = p_ports(b, p.l4)
        f.ports = PORTS_KNOWN
    elif p.proto == 17:
        if L < 8:
            raise Malformed("l4_truncated")
        ulen = struct.unpack_from("!H", b, p.l4 + 4)[0]
        if ulen < 8 or ulen > L:
            raise Malformed("udp_length")
        f.sport, f.cport = p_ports(b, p.l4)
        f.ports = PORTS_KNOWN
    elif p.proto == icmp_proto:
        if L < (8 if p.fam == 4 else 4):
            raise Malformed("l4_truncated")
        t = b[p.l4]
        if t in (ICMP4_ERRORS if p.fam == 4 else ICMP6_ERRORS):
            (f.client, f.server, f.proto, f.ident, f.ports, f.cport,
             f.sport) = parse_quote(b, p.l4 + 8, p.end, p.fam)
        else:
            f.echo = t == (8 if p.fam == 4 else 128)
            f.ports = PORTS_NONE
    else:
        f.ports = PORTS_NONE
    return f


def p_ports(b, l4):
    """(server port, client port) of a packet sent to the VIP: dst port is the server's."""
    sport, dport = struct.unpack_from("!HH", b, l4)
    return dport, sport


# --------------------------------------------------------------------------- rules / key


def rule_matches(cfg, r, f):
    if f.gateway is not None:
        # §4: a gateway VIP's traffic takes the rules naming that gateway VIP or "*",
        # whatever the flow's server address
        if r.vip is not None and r.vip != f.gateway:
            return False
    elif r.vip is None:
        if not cfg.is_vip(f.server):
            return False
    elif r.vip != f.server:
        return False
    # §4 dst: the flow's server address (an ICMP error's quoted source) within a prefix
    if r.dst is not None and not in_prefixes(f.server, r.dst):
        return False
    if r.proto == "tcp":
        if f.proto != 6:
            return False
    elif r.proto == "udp":
        if f.proto != 17:
            return False
    elif r.proto == "icmp":
        if f.proto != (1 if f.fam == 4 else 58):
            return False
    elif r.proto != "any":
        return False
    if r.ports is None:
        return True
    if f.ports == PORTS_KNOWN:
        return f.sport in r.ports
    return f.ports == PORTS_UNKNOWN


def key_words(key, r, f):
    chi, clo = addr128(f.client)
    if key == "on_addr":
        return chi, clo, 0, 0, 0
    if key == "client_net":
        c = mask_addr(f.client, r.prefix if f.fam == 4 else r.prefix6)
        hi, lo = addr128(c)
        return hi, lo, 0, 0, 0
    if key == "on_port":
        return chi, clo, 0, 0, f.cport
    if key == "on_ipid":
        return chi, clo, 0, 0, f.ident
    shi, slo = addr128(f.server)
    if key == "five_tuple":
        return chi, clo, shi, slo, (f.proto << 32) | (f.cport << 16) | f.sport
    if key == "on_dst_addr":
        return shi, slo, 0, 0, 0
    if key == "on_dst_port":
        return shi, slo, 0, 0, f.sport
    if key in ("symmetric", "symmetric_port"):
        # endpoints ordered by (128-bit address, port); ports are 0 when port-less
        a = (chi, clo, f.cport)
        b = (shi, slo, f.sport)
        if b < a:
            a, b = b, a
        if key == "symmetric":
            return a[0], a[1], b[0], b[1], 0
        return a[0], a[1], b[0], b[1], (f.proto << 32) | (a[2] << 16) | b[2]
    raise ValueError("unknown key %r" % key)


def bucket_of(cfg, key, r, f):
    h = hash_words(cfg.s, *key_words(key, r, f))
    return h % cfg.buckets


# --------------------------------------------------------------------------- classify


def classify(cfg, b, stats=None, matched=None):
    """Returns (verdict, reason, group, bucket). When matched is a list, the rule that
    decided a farm verdict (None for the echo fallback) and the flow are appended."""
    try:
        res = parse_frame(b)
        if res[0] == "pass":
            return ("pass", "", "", -1)
        if res[0] == "arp":
            if res[1] is not None and res[1] in cfg.vip4:
                return ("arp_vip", "", "", -1)
            return ("pass", "", "", -1)
        p = res[1]
        # §2
        if (p.fam == 6 and p.proto == 58 and not p.frag and p.has_l4
                and p.end - p.l4 >= 4 and 133 <= b[p.l4] <= 137):
            if (b[p.l4] == 135 and p.end - p.l4 >= 24 and p.hops == 255
                    and bytes(b[p.l4 + 8:p.l4 + 24]) in cfg.vip6):
                return ("nd_vip", "", "", -1)
            return ("pass", "", "", -1)
        # §2 gateway VIPs: the Ethernet destination is a gateway's virtual MAC
        gw = cfg.gw_by_mac.get(bytes(b[0:6]))
        if gw is not None:
            if len(gw) != len(p.dst):            # the other family
                if stats is not None:
                    stats["gateway:wrong_family"] += 1
                return ("no_rule", "", "", -1)
            if stats is not None:
                stats["gateway:by_mac"] += 1
        elif not cfg.is_vip(p.dst):
            return ("pass", "", "", -1)
        elif p.dst in cfg.gateways:
            # a packet sent to a gateway VIP's own address with another MAC: that
            # VIP's farm traffic
            gw = bytes(p.dst)
            if stats is not None:
                stats["gateway:by_address"] += 1
        f = make_flow(b, p)
        f.gateway = gw
    except Malformed as e:
        return ("malformed", e.args[0], "", -1)
    # §4
    for r in cfg.rules:
        if rule_matches(cfg, r, f):
            if stats is not None:
                stats["rule%d:%s/%s/%s" % (r.index, r.group, r.proto, r.key)] += 1
                if f.ports == PORTS_UNKNOWN:
                    stats["rule%d:ports_unknown" % r.index] += 1
            if matched is not None:
                matched += [r, f]
            return ("farm", "", r.group, bucket_of(cfg, r.key, r, f))
    if f.echo and not f.frag and cfg.icmp_echo == "one":
        # the group of the first rule whose vip names this VIP (the gateway whose
        # traffic it is, else the destination) or "*"
        vip = f.gateway if f.gateway is not None else f.server
        for r in cfg.rules:
            if r.vip is None or r.vip == vip:
                if stats is not None:
                    stats["echo_fallback:%s%s" % (r.group, "/gateway" if f.gateway
                                                  else "")] += 1
                if matched is not None:
                    matched += [None, f]
                return ("farm", "", r.group, bucket_of(cfg, "on_addr", r, f))
    return ("no_rule", "", "", -1)


# --------------------------------------------------------------------------- pcap


def read_pcap(path):
    with open(path, "rb") as fh:
        data = fh.read()
    if len(data) < 24:
        raise ValueError("%s: not a pcap file" % path)
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        e = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = ">"
    else:
        raise ValueError("%s: not a pcap file (pcapng is not supported)" % path)
    linktype = struct.unpack_from(e + "I", data, 20)[0] & 0x0FFFFFFF
    if linktype != 1:
        raise ValueError("%s: linktype %d, expected 1 (Ethernet)" % (path, linktype))
    pos = 24
    frames = []
    while pos + 16 <= len(data):
        _, _, incl, _ = struct.unpack_from(e + "IIII", data, pos)
        pos += 16
        frames.append(data[pos:pos + incl])
        pos += incl
    return frames


def run(config_path, pcap_path, stats=None):
    cfg = Config(config_path)
    return [classify(cfg, fr, stats) for fr in read_pcap(pcap_path)]


def to_json(i, v):
    return json.dumps({"index": i, "verdict": v[0], "reason": v[1], "group": v[2],
                       "bucket": v[3]})


# --------------------------------------------------------------------------- self-test


def selftest(config_path):
    """Hand-built frames (struct only) with verdicts and key words worked out by hand
    from docs/classifier.md for tests/oracle/oracle.toml."""
    cfg = Config(config_path)
    assert mix64(0x9E3779B97F4A7C15) == 0xE220A8397B1DCDAF   # SplitMix64(0), 1st output
    assert mum(1 << 63, 4) == 2 and mum(3, 5) == 15
    ip = lambda a: ipaddress.ip_address(a).packed
    V1, V2, V6 = ip("198.51.100.10"), ip("198.51.100.20"), ip("2001:db8::10")

    def eth(et, payload, tags=()):
        f = b"\x02\0\x5e\x10\0\x01" + b"\x02\0\0\0\0\x09"
        for t in tags:
            f += struct.pack("!HH", t, 5)
        f += struct.pack("!H", et) + payload
        return f + b"\xee" * max(0, 60 - len(f))

    def v4(src, dst, proto, payload, ident=0x1234, ff=0, ihl=5):
        h = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(payload), ident, ff,
                        64, proto, 0, ip(src), ip(dst)) + b"\x01" * (ihl * 4 - 20)
        return h + payload

    def v6(src, dst, nh, payload, fl=0x12345, hops=None):
        if hops is None:  # neighbour discovery is sent with hop limit 255 (RFC 4861)
            hops = 255 if nh == 58 and payload and 133 <= payload[0] <= 137 else 64
        return struct.pack("!IHBB16s16s", (6 << 28) | fl, len(payload), nh, hops, ip(src),
                           ip(dst)) + payload

    def tcp(sp, dp):
        return struct.pack("!HHIIBBHHH", sp, dp, 1, 0, 5 << 4, 2, 100, 0, 0)

    def udp(sp, dp, ln=None, data=b"abcd"):
        return struct.pack("!HHHH", sp, dp, 8 + len(data) if ln is None else ln, 0) + data

    def words(*w):
        return hash_words(cfg.s, *w) % cfg.buckets

    c4 = ip("203.0.113.5")
    c4lo = int.from_bytes(b"\0\0\xff\xff" + c4, "big")
    v1lo = int.from_bytes(b"\0\0\xff\xff" + V1, "big")
    c6 = ip("2001:db8:abcd:1234::7")
    c6hi, c6lo = struct.unpack("!QQ", c6)
    quote_tcp = v4("198.51.100.10", "203.0.113.5", 6, tcp(443, 5555), ident=0x4321)
    dest_opt = lambda nh: bytes([nh, 0]) + b"\x01\x04\0\0\0\0"
    cases = [
        ("runt", b"\0" * 13, ("malformed", "runt", "", -1)),
        ("vlan_depth", eth(0x0800, v4("203.0.113.5", "198.51.100.10", 6, tcp(1, 80)),
                           (0x88A8, 0x8100, 0x8100)), ("malformed", "vlan_depth", "", -1)),
        ("vlan_truncated", (b"\x02" * 12) + b"\x81\x00\x00",
         ("malformed", "vlan_truncated", "", -1)),
        ("arp request vip", eth(0x0806, struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) +
                                b"\x02" * 6 + c4 + b"\0" * 6 + V2, (0x8100,)),
         ("arp_vip", "", "", -1)),
        ("arp request vip from a broadcast sender MAC", eth(0x0806, struct.pack(
            "!HHBBH", 1, 0x0800, 6, 4, 1) + b"\xff" * 6 + c4 + b"\0" * 6 + V2),
         ("pass", "", "", -1)),
        ("gratuitous arp vip", eth(0x0806, struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) +
                                   b"\x02" * 6 + V2 + b"\0" * 6 + V2), ("pass", "", "", -1)),
        ("arp reply vip", eth(0x0806, struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2) +
                              b"\x02" * 6 + c4 + b"\0" * 6 + V2), ("pass", "", "", -1)),
        ("tcp on_port", eth(0x0800, v4("203.0.113.5", "198.51.100.10", 6, tcp(40000, 80))),
         ("farm", "", "web", words(0, c4lo, 0, 0, 40000))),
        ("tcp no rule", eth(0x0800, v4("203.0.113.5", "198.51.100.10", 6, tcp(40000, 22))),
         ("no_rule", "", "", -1)),
        ("tcp ipv4 options", eth(0x0800, v4("203.0.113.5", "198.51.100.10", 6,
                                            tcp(40001, 8099), ihl=7)),
         ("farm", "", "web", words(0, c4lo, 0, 0, 40001))),
        ("later fragment", eth(0x0800, v4("203.0.113.5", "198.51.100.10", 6, b"x" * 8,
                                          ff=0x0003)),
         ("farm", "", "web", words(0, c4lo, 0, 0, 0))),
        ("frag-needed quote", eth(0x0800, v4("192.0.2.254", "198.51.100.10", 1,
                                             struct.pack("!BBHHH", 3, 4, 0, 0, 1400) +
                                             quote_tcp[:28])),
         ("farm", "", "web", words(0, c4lo, 0, 0, 5555))),
        ("quote without ports", eth(0x0800, v4("192.0.2.254", "198.51.100.10", 1,
                                               struct.pack("!BBHHH", 3, 4, 0, 0, 1400) +
                                               quote_tcp[:22])),
         ("farm", "", "web", words(0, c4lo, 0, 0, 0))),
        ("quote of the wrong family", eth(0x0800, v4("192.0.2.254", "198.51.100.10", 1,
                                                     struct.pack("!BBHI", 11, 0, 0, 0) +
                                                     bytes([0x60]) + quote_tcp[1:])),
         ("malformed", "icmp_quote", "", -1)),
        ("echo fallback", eth(0x0800, v4("203.0.113.5", "198.51.100.10", 1,
                                         struct.pack("!BBHHH", 8, 0, 0, 1, 1))),
         ("farm", "", "web", words(0, c4lo, 0, 0, 0))),
        ("icmp client_net/16", eth(0x0800, v4("203.0.113.5", "198.51.100.20", 1,
                                              struct.pack("!BBHHH", 8, 0, 0, 1, 1))),
         ("farm", "", "dns", words(0, 0xFFFFCB000000, 0, 0, 0))),
        ("udp no rule", eth(0x0800, v4("203.0.113.5", "198.51.100.20", 17, udp(9, 53))),
         ("no_rule", "", "", -1)),
        ("udp on_ipid *", eth(0x0800, v4("203.0.113.5", "198.51.100.20", 17,
                                         udp(9, 6005), ident=0xBEEF)),
         ("farm", "", "dns", words(0, c4lo, 0, 0, 0xBEEF))),
        ("udp five_tuple", eth(0x0800, v4("203.0.113.5", "198.51.100.10", 17,
                                          udp(1234, 53))),
         ("farm", "", "web", words(0, c4lo, 0, v1lo, (17 << 32) | (1234 << 16) | 53))),
        ("udp_length", eth(0x0800, v4("203.0.113.5", "198.51.100.10", 17,
                                      udp(1234, 53, ln=7))),
         ("malformed", "udp_length", "", -1)),
        ("udp_length, not a vip", eth(0x0800, v4("203.0.113.5", "198.51.100.99", 17,
                                                 udp(1234, 53, ln=7))), ("pass", "", "", -1)),
        ("ipv6 udp on_addr", eth(0x86DD, v6("2001:db8:abcd:1234::7", "2001:db8::10", 17,
                                            udp(1000, 9999))),
         ("farm", "", "v6", words(c6hi, c6lo, 0, 0, 0))),
        ("ipv6 tcp client_net/48", eth(0x86DD, v6("2001:db8:abcd:1234::7", "2001:db8::10",
                                                  6, tcp(1000, 443)), (0x88A8, 0x8100)),
         ("farm", "", "v6", words(0x20010DB8ABCD0000, 0, 0, 0, 0))),
        ("ns for a vip", eth(0x86DD, v6("2001:db8:abcd:1234::7", "ff02::1:ff00:10", 58,
                                        struct.pack("!BBHI", 135, 0, 0, 0) + V6)),
         ("nd_vip", "", "", -1)),
        ("ns for a vip, hop limit 64 (routed: discarded by the host)",
         eth(0x86DD, v6("2001:db8:abcd:1234::7", "ff02::1:ff00:10", 58,
                        struct.pack("!BBHI", 135, 0, 0, 0) + V6, hops=64)),
         ("pass", "", "", -1)),
        ("ipv6 echo fallback to *", eth(0x86DD, v6("2001:db8:abcd:1234::7", "2001:db8::10",
                                                   58, struct.pack("!BBHHH", 128, 0, 0, 1, 1))),
         ("farm", "", "dns", words(c6hi, c6lo, 0, 0, 0))),
        ("ipv6 first fragment", eth(0x86DD, v6("2001:db8:abcd:1234::7", "2001:db8::10", 44,
                                               struct.pack("!BBHI", 17, 0, 1, 0xCAFEF00D) +
                                               udp(1, 7000))),
         ("farm", "", "dns", words(c6hi, c6lo, 0, 0, 0xCAFEF00D))),
        ("ipv6 atomic fragment", eth(0x86DD, v6("2001:db8:abcd:1234::7", "2001:db8::10", 44,
                                                struct.pack("!BBHI", 17, 0, 0, 0xCAFEF00D) +
                                                udp(1, 7000))),
         ("farm", "", "v6", words(c6hi, c6lo, 0, 0, 0))),
        ("ipv6 on_ipid flow label", eth(0x86DD, v6("2001:db8:abcd:1234::7", "2001:db8::10",
                                                   6, tcp(1, 7000), fl=0xABCDE)),
         ("farm", "", "v6", words(c6hi, c6lo, 0, 0, 0xABCDE))),
        ("ipv6 other protocol, port list rule", eth(0x86DD, v6("2001:db8:abcd:1234::7", "2001:db8::10",
                                                   60, dest_opt(47) + b"grepayload",
                                                   fl=0xABCDE)),
         ("no_rule", "", "", -1)),
        ("ext_chain", eth(0x86DD, v6("2001:db8:abcd:1234::7", "2001:db8::10", 60,
                                     b"".join(dest_opt(60) for _ in range(8)) +
                                     dest_opt(6) + tcp(1, 80))),
         ("malformed", "ext_chain", "", -1)),
        ("ext_truncated within payload length",
         eth(0x86DD, v6("2001:db8:abcd:1234::7", "2001:db8::99", 60, dest_opt(60) + b"\x06")
             + b"\x00" * 30), ("malformed", "ext_truncated", "", -1)),
    ]
    cases += gateway_cases(cfg, eth, v4, v6, tcp, udp, words)
    bad = 0
    for name, frame, want in cases:
        got = classify(cfg, frame)
        if got != want:
            bad += 1
            print("selftest %s: got %s, want %s" % (name, got, want))
    print("selftest: %d cases, %d failed" % (len(cases), bad))
    return gateway_selfcheck(cfg) and bad == 0


GW_IN4, GW_OUT4, GW_ONE4 = "203.0.113.1", "198.51.100.1", "203.0.113.2"
GW_IN6, GW_OUT6 = "2001:db8:ff::1", "2001:db8:fe::1"


def gateway_cases(cfg, eth, v4, v6, tcp, udp, words):
    """Hand-worked gateway cases for oracle.toml (docs/classifier.md §2-§5)."""
    ip = lambda a: ipaddress.ip_address(a).packed
    mac = {a: m for m, a in cfg.gw_by_mac.items()}

    def via(gw, et, payload):
        f = eth(et, payload)
        return mac[ip(gw)] + f[6:]

    lo4 = lambda a: int.from_bytes(b"\0\0\xff\xff" + ip(a), "big")
    hl6 = lambda a: struct.unpack("!QQ", ip(a))
    c, s = "192.0.2.50", "198.51.100.77"
    fwd = v4(c, s, 6, tcp(40000, 443))
    c6, s6 = "2001:db8:1::5", "2001:db8:100::1"   # hi orders c first, lo would not
    ch, cl = hl6(c6)
    sh, sl = hl6(s6)
    icmp_err = lambda quote: struct.pack("!BBHHH", 3, 4, 0, 0, 1400) + quote
    echo4 = struct.pack("!BBHHH", 8, 0, 0, 1, 1)
    echo6 = struct.pack("!BBHHH", 128, 0, 0, 1, 1)
    fw_port = ("farm", "", "fw", words(0, lo4(c), 0, 0, 40000))
    return [
        ("gw: inside tcp, on_port", via(GW_IN4, 0x0800, fwd), fw_port),
        ("gw: outside tcp back, on_dst_port",
         via(GW_OUT4, 0x0800, v4(s, c, 6, tcp(443, 40000))), fw_port),
        ("gw: icmp error about the inside flow, through the outside gateway",
         via(GW_OUT4, 0x0800, v4("198.51.100.254", c, 1, icmp_err(fwd[:28]))), fw_port),
        ("gw: icmp error quote without ports, on_dst_port with port 0",
         via(GW_OUT4, 0x0800, v4("198.51.100.254", c, 1, icmp_err(fwd[:22]))),
         ("farm", "", "fw", words(0, lo4(c), 0, 0, 0))),
        ("gw: tcp 22 to 203.0.113.128/25, five_tuple",
         via(GW_IN4, 0x0800, v4(c, "203.0.113.130", 6, tcp(40000, 22))),
         ("farm", "", "fw", words(0, lo4(c), 0, lo4("203.0.113.130"),
                                  (6 << 32) | (40000 << 16) | 22))),
        ("gw: /32 dst prefix", via(GW_IN4, 0x0800, v4(c, "203.0.113.64", 6, tcp(7, 8))),
         ("farm", "", "fw", words(0, lo4(c), 0, 0, 7))),
        ("gw: just outside the /32: catch-all on_addr",
         via(GW_IN4, 0x0800, v4(c, "203.0.113.65", 6, tcp(7, 8))),
         ("farm", "", "fw", words(0, lo4(c), 0, 0, 0))),
        ("gw: IPv6 to an IPv4 gateway's MAC", via(GW_IN4, 0x86DD, v6(c6, s6, 6, tcp(1, 2))),
         ("no_rule", "", "", -1)),
        ("gw: IPv4 to an IPv6 gateway's MAC, L4 truncated",
         via(GW_IN6, 0x0800, v4(c, s, 6, b"\0" * 10)), ("no_rule", "", "", -1)),
        ("gw: L4 truncated", via(GW_IN4, 0x0800, v4(c, s, 6, b"\0" * 10)),
         ("malformed", "l4_truncated", "", -1)),
        ("gw: outside tcp to a destination no rule takes",
         via(GW_OUT4, 0x0800, v4(s, "203.0.113.5", 6, tcp(1234, 80))), ("no_rule", "", "", -1)),
        ("gw: \"*\" tcp 7777, symmetric_port",
         via(GW_OUT4, 0x0800, v4(s, "203.0.113.5", 6, tcp(1234, 7777))),
         ("farm", "", "fw1", words(0, lo4(s), 0, lo4("203.0.113.5"),
                                   (6 << 32) | (1234 << 16) | 7777))),
        ("gw: echo request, no rule, falls back to the first rule naming the gateway",
         via(GW_OUT4, 0x0800, v4(s, "192.0.2.200", 1, echo4)),
         ("farm", "", "fw", words(0, lo4(s), 0, 0, 0))),
        ("gw: echo request falls back to the first rule naming the gateway, whatever its dst",
         via(GW_OUT4, 0x0800, v4(s, "203.0.113.5", 1, echo4)),
         ("farm", "", "fw", words(0, lo4(s), 0, 0, 0))),
        ("gw: echo reply, no rule", via(GW_OUT4, 0x0800, v4(s, "192.0.2.200", 1,
                                                          b"\0" * 8)), ("no_rule", "", "", -1)),
        ("gw: echo request back, on_dst_addr",
         via(GW_OUT4, 0x0800, v4(s, "192.0.2.100", 1, echo4)),
         ("farm", "", "fw", words(0, lo4("192.0.2.100"), 0, 0, 0))),
        ("gw6: echo request falls back to a \"*\" rule",
         via(GW_IN6, 0x86DD, v6(c6, "2001:db8:5::1", 58, echo6)),
         ("farm", "", "dns", words(ch, cl, 0, 0, 0))),
        ("gw: to the gateway's address with another MAC",
         eth(0x0800, v4(c, GW_IN4, 17, udp(5000, 53))),
         ("farm", "", "fw", words(0, lo4(c), 0, 0, 0))),
        ("gw: icmp error to the gateway's address with another MAC, quoting another host",
         eth(0x0800, v4("192.0.2.254", GW_IN4, 1, icmp_err(
             v4(s, c, 6, tcp(443, 40000))[:28]))), fw_port),
        ("gw: ARP for a gateway VIP", eth(0x0806, struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
                                          + b"\x02" * 6 + ip(c) + b"\0" * 6 + ip(GW_ONE4)),
         ("arp_vip", "", "", -1)),
        ("gw6: NS for a gateway VIP, to its MAC",
         via(GW_OUT6, 0x86DD, v6(s6, "ff02::1:ff00:1", 58,
                                 struct.pack("!BBHI", 135, 0, 0, 0) + ip(GW_OUT6))),
         ("nd_vip", "", "", -1)),
        ("gw6: NA to a gateway's MAC", via(GW_IN6, 0x86DD, v6(c6, s6, 58, struct.pack(
            "!BBHI", 136, 0, 0, 0) + ip(s6))), ("pass", "", "", -1)),
        ("gw6: udp symmetric", via(GW_IN6, 0x86DD, v6(c6, s6, 17, udp(5000, 53))),
         ("farm", "", "fw6", words(ch, cl, sh, sl, 0))),
        ("gw6: udp symmetric back", via(GW_OUT6, 0x86DD, v6(s6, c6, 17, udp(53, 5000))),
         ("farm", "", "fw6", words(ch, cl, sh, sl, 0))),
        ("gw6: udp to a \"*\" rule's port", via(GW_IN6, 0x86DD, v6(c6, s6, 17,
                                                                 udp(5000, 5353), fl=7)),
         ("farm", "", "dns", words(ch, cl, 0, 0, 7))),
        ("gw6: tcp later fragment, symmetric_port without ports",
         via(GW_OUT6, 0x86DD, v6(s6, c6, 44, struct.pack("!BBHI", 6, 0, 8, 99) + b"x" * 16)),
         ("farm", "", "fw6", words(ch, cl, sh, sl, 6 << 32))),
        ("gw6: outside, any other destination: client_net /56",
         via(GW_OUT6, 0x86DD, v6(s6, "2001:db8:3::1", 17, udp(53, 5000))),
         ("farm", "", "fw6", words(sh, sl & ~((1 << 72) - 1) & M64, 0, 0, 0))),
        ("gw: one-armed, equal addresses: ordered by port",
         via(GW_ONE4, 0x0800, v4(c, c, 6, tcp(5000, 80))),
         ("farm", "", "fw1", words(0, lo4(c), 0, lo4(c), (6 << 32) | (80 << 16) | 5000))),
    ]


CLAIMED_PAIRS = {frozenset(("on_addr", "on_dst_addr")), frozenset(("on_port", "on_dst_port")),
                 frozenset(("symmetric",)), frozenset(("symmetric_port",))}


def gateway_selfcheck(cfg, flows=3000, seed=7):
    """Both directions of random flows land in one bucket wherever §5 claims it: the two
    directions under a symmetric key, and on_addr / on_port one way with on_dst_addr /
    on_dst_port the other (key words), and through the gateway pairs of the config
    (frames: both directions, fragments, ICMP errors about either direction)."""
    import random
    rnd = random.Random(seed)
    bad = 0

    # 1. key words of a flow and of its mirror
    def mirror(f):
        m = Flow()
        for k in Flow.__slots__:
            setattr(m, k, getattr(f, k))
        m.client, m.server, m.cport, m.sport = f.server, f.client, f.sport, f.cport
        return m

    for i in range(flows):
        f = Flow()
        f.fam = rnd.choice((4, 6))
        n = 4 if f.fam == 4 else 16
        f.client = bytes(rnd.getrandbits(8) for _ in range(n))
        f.server = f.client if rnd.random() < 0.1 else bytes(
            rnd.getrandbits(8) for _ in range(n))
        f.proto = rnd.choice((6, 17, 1, 58, 47))
        f.ports = rnd.choice((PORTS_KNOWN, PORTS_UNKNOWN, PORTS_NONE))
        known = f.ports == PORTS_KNOWN
        f.cport = rnd.getrandbits(16) if known else 0
        f.sport = (f.cport if rnd.random() < 0.1 else rnd.getrandbits(16)) if known else 0
        f.ident = rnd.getrandbits(32)
        f.echo = f.frag = False
        f.gateway = None
        m = mirror(f)
        for k1, k2 in (("symmetric", "symmetric"), ("symmetric_port", "symmetric_port"),
                       ("on_addr", "on_dst_addr"), ("on_port", "on_dst_port")):
            if key_words(k1, None, f) != key_words(k2, None, m):
                bad += 1
                print("selfcheck: key %s / %s of %r differ" % (k1, k2, (
                    f.client.hex(), f.cport, f.server.hex(), f.sport)))

    # 2. frames through the config's gateways
    mac = {a: m for m, a in cfg.gw_by_mac.items()}
    partners = collections.defaultdict(set)  # gateway -> gateways named in a group with it
    pool = collections.defaultdict(list)     # gateway -> dst prefixes of its rules
    by_group = collections.defaultdict(set)
    for r in cfg.rules:
        if r.vip in cfg.gateways:
            by_group[r.group].add(r.vip)
            pool[r.vip] += r.dst if r.dst is not None else []
    for gws in by_group.values():
        for a in gws:
            partners[a] |= {b for b in gws if len(a) == len(b)}

    def addr_in(prefixes, n):
        if not prefixes or rnd.random() < 0.1:
            base = ipaddress.ip_network("192.0.2.0/24" if n == 4 else "2001:db8::/32")
            prefixes = [(base.network_address.packed, base.prefixlen)]
        net, plen = rnd.choice(prefixes)
        host = rnd.getrandbits(n * 8 - plen) if plen < n * 8 else 0
        return (int.from_bytes(net, "big") | host).to_bytes(n, "big")

    def ipv4(src, dst, proto, payload, ident, ff=0):
        return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, ff, 64,
                           proto, 0, src, dst) + payload

    def ipv6(src, dst, nh, payload, fl):
        return struct.pack("!IHBB16s16s", (6 << 28) | fl, len(payload), nh, 64, src,
                           dst) + payload

    def l4(fam, proto, sp, dp, echo_type):
        if proto == 6:
            return struct.pack("!HHIIBBHHH", sp, dp, 1, 0, 5 << 4, 0x12, 100, 0, 0)
        if proto == 17:
            return struct.pack("!HHHH", sp, dp, 12, 0) + b"data"
        if proto in (1, 58):
            return struct.pack("!BBHHH", echo_type, 0, 0, 1, 2)
        return b"\x11" * 12

    def packet(fam, src, dst, proto, sp, dp, frag, echo_type, ident):
        body = l4(fam, proto, sp, dp, echo_type)
        if fam == 4:
            return ipv4(src, dst, proto, body, ident, (0x2000 if frag == 1 else 3 if frag
                                                       else 0))
        if frag:
            fh = struct.pack("!BBHI", proto, 0, 1 if frag == 1 else (3 << 3), ident)
            return ipv6(src, dst, 44, fh + body, ident & 0xFFFFF)
        return ipv6(src, dst, proto, body, ident & 0xFFFFF)

    def frame(gw, fam, l3):
        return mac[gw] + b"\x02\0\0\0\0\x07" + (b"\x08\x00" if fam == 4 else b"\x86\xdd") + l3

    def error(fam, router, to, quote):
        if fam == 4:
            return ipv4(router, to, 1, struct.pack("!BBHHH", 3, 4, 0, 0, 1400) + quote, 9)
        return ipv6(router, to, 58, struct.pack("!BBHI", 2, 0, 0, 1280) + quote, 9)

    seen = collections.Counter()
    gws = sorted(partners)
    for i in range(flows if gws else 0):
        ga = rnd.choice(gws)
        gb = rnd.choice(sorted(partners[ga]))
        fam = 4 if len(ga) == 4 else 6
        n = len(ga)
        c = addr_in(pool[gb], n)          # the reverse direction goes to c through gb
        s = addr_in(pool[ga], n)
        icmp = 1 if fam == 4 else 58
        proto = rnd.choice((6, 6, 17, 17, icmp, 47))
        cp, sp = rnd.getrandbits(16), rnd.choice((22, 53, 80, 443, 7000, 7777,
                                                  rnd.getrandbits(16)))
        frag = rnd.choice((0, 0, 0, 1, 2))   # 1: first fragment, 2: a later one
        ident = rnd.getrandbits(16 if fam == 4 else 32)
        out = packet(fam, c, s, proto, cp, sp, frag, 8 if fam == 4 else 128, ident)
        back = packet(fam, s, c, proto, sp, cp, frag, 0 if fam == 4 else 129, ident)
        router = addr_in([], n)
        frames = [("c->s", frame(ga, fam, out)), ("s->c", frame(gb, fam, back))]
        if not frag:
            qlen = (20 if fam == 4 else 40) + rnd.choice((8, 4, 2))
            frames += [("error about c->s", frame(gb, fam, error(fam, router, c,
                                                                out[:qlen]))),
                       ("error about s->c", frame(ga, fam, error(fam, router, s,
                                                                 back[:qlen])))]
        got = []
        for name, fr in frames:
            matched = []
            v = classify(cfg, fr, matched=matched)
            got.append((name, fr, v, matched[0] if matched else None,
                        matched[1].ports == PORTS_KNOWN if matched else None))
        for x in got:
            for y in got:
                if x is y or x[0][-4:] == y[0][-4:] or x[3] is None or y[3] is None:
                    continue    # same direction (c->s and an error about s->c), or no rule
                if x[2][0] != "farm" or y[2][0] != "farm" or x[2][2] != y[2][2]:
                    continue
                pair = frozenset((x[3].key, y[3].key))
                if pair not in CLAIMED_PAIRS:
                    continue
                if x[4] != y[4] and pair & {"on_port", "symmetric_port"}:
                    continue    # a quote too short for the ports: port keys cannot agree
                seen["/".join(sorted(pair))] += 1
                if x[2][3] != y[2][3]:
                    bad += 1
                    print("selfcheck: %s and %s of one flow in buckets %d and %d (%s)\n"
                          "  %s\n  %s" % (x[0], y[0], x[2][3], y[2][3], "/".join(pair),
                                          x[1].hex(), y[1].hex()))
    need = ["on_addr/on_dst_addr", "on_dst_port/on_port", "symmetric", "symmetric_port"]
    short = [k for k in need if gws and seen[k] < 50]
    if short:
        bad += 1
        print("selfcheck: too few pairs checked for %s (%s)" % (", ".join(short), dict(seen)))
    print("selfcheck: %d random flows (key words), %d through gateways (%s), %d failed"
          % (flows, flows if gws else 0,
             ", ".join("%s %d" % kv for kv in sorted(seen.items())), bad))
    return bad == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--config", required=True)
    ap.add_argument("--pcap")
    ap.add_argument("--selftest", action="store_true",
                    help="check hand-worked cases against --config (oracle.toml)")
    ap.add_argument("--histogram", action="store_true",
                    help="print a verdict/reason and rule-hit histogram on stderr")
    args = ap.parse_args()
    if args.selftest:
        sys.exit(0 if selftest(args.config) else 1)
    if not args.pcap:
        ap.error("--pcap is required")
    stats = collections.Counter() if args.histogram else None
    out = sys.stdout
    verdicts = run(args.config, args.pcap, stats)
    for i, v in enumerate(verdicts):
        out.write(to_json(i, v) + "\n")
    if args.histogram:
        h = collections.Counter(v[0] + ("/" + v[1] if v[1] else "") for v in verdicts)
        g = collections.Counter(v[2] for v in verdicts if v[0] == "farm")
        print("packets: %d" % len(verdicts), file=sys.stderr)
        for k in sorted(h):
            print("  %-32s %6d" % (k, h[k]), file=sys.stderr)
        for k in sorted(g):
            print("  group %-26s %6d" % (k, g[k]), file=sys.stderr)
        for k in sorted(stats):
            print("  %-32s %6d" % (k, stats[k]), file=sys.stderr)
        bk = set((v[2], v[3]) for v in verdicts if v[0] == "farm")
        print("  distinct (group, bucket)         %6d" % len(bk), file=sys.stderr)


if __name__ == "__main__":
    main()
