#!/usr/bin/python3
"""Generate a deterministic pcap (linktype Ethernet) of varied frames for the oracle.

The traffic is driven by the config (its VIPs and the ports of its rules) and covers
every part of docs/classifier.md: IPv4/IPv6, untagged/802.1Q/QinQ/3 tags, TCP/UDP/ICMP/
ICMPv6/other protocols to VIPs and non-VIPs, IPv4 options, IPv6 extension chains,
fragments, ICMP errors with good/truncated/broken quotes, echo requests, ARP, neighbour
solicitations, Ethernet padding, and malformed frames of every reason. Gateway VIPs
(about a quarter of the frames): frames to their virtual MACs with any destination
(inside and outside the rules' dst prefixes, at their edges), both directions of flows
through the gateway pairs of the config, ICMP errors about either direction, fragments,
echo requests, malformed frames, the other family, ARP/ND for the gateway addresses and
frames to a gateway's address with another MAC.

Same --seed (and --count, --config) => byte-identical pcap.
Run with /usr/bin/python3 (Debian's scapy).
"""

import argparse
import ipaddress
import random
import struct
import sys
import tomllib

from scapy.packet import Raw
from scapy.layers.inet import IP, TCP, UDP, ICMP, IPOption_NOP, IPOption_RR, \
    IPOption_Router_Alert, IPOption_Timestamp, IPOption_EOL
from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, \
    IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, ICMPv6EchoRequest, ICMPv6EchoReply, \
    ICMPv6DestUnreach, ICMPv6PacketTooBig, ICMPv6TimeExceeded, ICMPv6ParamProblem, \
    ICMPv6ND_NS, ICMPv6ND_NA, ICMPv6NDOptSrcLLAddr, PadN
from scapy.layers.ipsec import AH
from scapy.layers.l2 import ARP

VMAC = b"\x02\x00\x5e\x10\x00\x01"
BCAST = b"\xff" * 6
ETH_IP4, ETH_IP6, ETH_ARP = 0x0800, 0x86DD, 0x0806


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def fix_ip4_csum(b):
    """Recompute the header checksum of an IPv4 header at b[0:] (bytearray)."""
    ihl = (b[0] & 15) * 4
    if ihl < 20 or ihl > len(b):
        return b
    b[10:12] = b"\0\0"
    b[10:12] = struct.pack("!H", csum(bytes(b[:ihl])))
    return b


def mix64(z):
    m = (1 << 64) - 1
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def vip_mac(v):
    """A VIP's virtual MAC: vip[].mac, else 5A:FE:<IPv4> / 5A:F6:<hash of the IPv6>."""
    if v.get("mac"):
        return bytes(int(x, 16) for x in v["mac"].replace("-", ":").split(":"))
    a = ipaddress.ip_address(v["address"]).packed
    if len(a) == 4:
        return b"\x5a\xfe" + a
    hi, lo = struct.unpack("!QQ", a)
    return b"\x5a\xf6" + struct.pack("!Q", mix64(hi ^ mix64(lo)))[:4]


def parse_dst(value):
    """A rule's dst: list of ipaddress networks, [] for "*" or none."""
    out = []
    for item in (value if isinstance(value, list) else [value] if value else []):
        for part in str(item).split(","):
            part = part.strip()
            if part == "*":
                return []
            if part:
                out.append(ipaddress.ip_network(part))
    return out


def parse_ports(text):
    """(ports inside the rule's list, ports just outside it) of a rule's ports string."""
    text = str(text).strip()
    if text == "*":
        return [], []
    hit, edge = [], []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = (int(x) for x in part.split("-", 1))
            hit += [lo, hi, (lo + hi) // 2]
            edge += [lo - 1, hi + 1]
        elif part:
            p = int(part)
            hit.append(p)
            edge += [p - 1, p + 1]
    return ([p for p in hit if 0 <= p <= 65535], [p for p in edge if 0 <= p <= 65535])


NH_OF = {"IPv6ExtHdrHopByHop": 0, "IPv6ExtHdrRouting": 43, "IPv6ExtHdrDestOpt": 60,
         "IPv6ExtHdrFragment": 44, "AH": 51, "TCP": 6, "UDP": 17}


def nh_of(layer):
    name = type(layer).__name__
    if name in NH_OF:
        return NH_OF[name]
    if name.startswith("ICMPv6"):
        return 58
    raise ValueError("next header of %s unknown: pass nh" % name)


def stack6(base, exts, up, upper_nh=None):
    """base / exts... / up with every next-header field set explicitly (scapy does not
    always guess the one of AH)."""
    layers = [base] + list(exts)
    for i, layer in enumerate(layers):
        if i + 1 < len(layers):
            layer.nh = nh_of(layers[i + 1])
        else:
            layer.nh = upper_nh if upper_nh is not None else nh_of(up)
    pkt = base
    for e in exts:
        pkt = pkt / e
    return pkt / up


class Gen:
    def __init__(self, config, seed, ambiguous=False):
        self.r = random.Random(seed)
        with open(config, "rb") as f:
            cfg = tomllib.load(f)
        self.vip4, self.vip6 = [], []          # service VIPs
        self.gw = {4: [], 6: []}               # gateway VIPs: (address, virtual MAC)
        self.allvips = set()
        self.vmacs = []                        # every virtual MAC
        for v in cfg.get("vip", []):
            a = ipaddress.ip_address(v["address"])
            self.allvips.add(str(a))
            self.vmacs.append(vip_mac(v))
            if v.get("gateway", False):
                self.gw[a.version].append((str(a), vip_mac(v)))
            else:
                (self.vip4 if a.version == 4 else self.vip6).append(str(a))
        if not self.vip4 or not self.vip6:
            sys.exit("gen_pcap: the config needs at least one IPv4 and one IPv6 service VIP")
        # gateways: the dst prefixes of the rules naming each, and its partners (gateways
        # named in one group with it: the two arms of a two-armed gateway, or itself)
        self.gw_prefixes = {a: [] for f in (4, 6) for a, _m in self.gw[f]}
        self.gw_partners = {a: set() for a in self.gw_prefixes}
        self.all_prefixes = {4: [], 6: []}
        for g in cfg.get("group", []):
            named = set()
            for rule in g.get("rule", []):
                vip = rule.get("vip", "*")
                if vip == "*":
                    continue
                vip = str(ipaddress.ip_address(vip))
                if vip in self.gw_prefixes:
                    named.add(vip)
                    nets = parse_dst(rule.get("dst"))
                    self.gw_prefixes[vip] += nets
                    for n in nets:
                        self.all_prefixes[n.version].append(n)
            for a in named:
                self.gw_partners[a] |= {b for b in named
                                        if ":" in a and ":" in b or ":" not in a + b}
        # the rules that take each gateway's traffic: (dst prefixes, ports, proto)
        self.gw_rules = {a: [] for a in self.gw_prefixes}
        for g in cfg.get("group", []):
            for rule in g.get("rule", []):
                vip = rule.get("vip", "*")
                for a in self.gw_rules:
                    if vip == "*" or str(ipaddress.ip_address(vip)) == a:
                        self.gw_rules[a].append((parse_dst(rule.get("dst")),
                                                 parse_ports(rule.get("ports", "*"))[0],
                                                 rule.get("proto", "any")))
        self.gw_mode = False      # eth(): frames go to a gateway's virtual MAC
        self.gw_addrs = False     # pick_vip(): the gateways' own addresses
        hit, edge = set(), set([22, 25, 53, 80, 123, 443, 8080, 0, 1, 65535])
        for g in cfg.get("group", []):
            for rule in g.get("rule", []):
                h, e = parse_ports(rule.get("ports", "*"))
                hit.update(h)
                edge.update(e)
        self.hit_ports, self.edge_ports = sorted(hit), sorted(edge)
        self.nodes4 = [n["address"] for n in cfg.get("cluster", {}).get("node", [])
                       if ipaddress.ip_address(n["address"]).version == 4]
        self.ambiguous = ambiguous  # edge cases docs/classifier.md now settles; run.sh includes them
        self.frames = []
        self.labels = []
        self.counter = 0

    # ------------------------------------------------------------------ helpers
    def rb(self, n):
        return bytes(self.r.getrandbits(8) for _ in range(n))

    def mac(self):
        return bytes([0x02]) + self.rb(5)

    def client4(self):
        r = self.r
        while True:
            net = r.choice(["203.0.113.", "192.0.2.", "198.51.100."])
            a = net + str(r.randint(4, 254))
            if a not in self.allvips and a not in self.nodes4:
                return a

    def client6(self):
        r = self.r
        if r.random() < 0.3:   # few /48s so client_net prefix6 groups clients together
            return "2001:db8:%x:%x::%x" % (r.choice([1, 2, 0xa]), r.getrandbits(16),
                                            r.getrandbits(16) | 1)
        return str(ipaddress.IPv6Address((0x20010DB8 << 96) | (r.getrandbits(96))))

    def nonvip4(self):
        r = self.r
        c = r.random()
        if c < 0.3:
            return "198.51.100.99"
        if c < 0.5 and self.nodes4:
            return r.choice(self.nodes4)
        return self.client4()

    def nonvip6(self):
        c = self.r.random()
        if c < 0.4:
            return "2001:db8::99"
        if c < 0.5:
            return "2001:db8::1"
        while True:
            a = self.client6()
            if a not in self.allvips:
                return a

    def sport(self):
        r = self.r
        c = r.random()
        if c < 0.55 and self.hit_ports:
            return r.choice(self.hit_ports)
        if c < 0.8:
            return r.choice(self.edge_ports)
        return r.randint(0, 65535)

    def cport(self):
        r = self.r
        return r.randint(1024, 65535) if r.random() < 0.9 else r.randint(0, 1023)

    def tags(self):
        c = self.r.random()
        if c < 0.6:
            return []
        if c < 0.8:
            return [0x8100]
        if c < 0.95:
            return [0x88A8, 0x8100]
        return [self.r.choice([0x8100, 0x88A8]), self.r.choice([0x8100, 0x88A8])]

    def l2dst(self, ethertype=None):
        """The destination MAC of VIP-bound frames: VMAC (no VIP's), or in gateway mode a
        gateway's virtual MAC, mostly of the family of the ethertype."""
        r = self.r
        if not self.gw_mode:
            return VMAC
        fam = {ETH_IP4: 4, ETH_IP6: 6}.get(ethertype, r.choice((4, 6)))
        if r.random() < 0.12 or not self.gw[fam]:
            fam = 10 - fam                                  # the other family
        return r.choice(self.gw[fam] or self.gw[10 - fam])[1]

    def eth(self, ethertype, payload, tags=None, pad=True, dst=None):
        r = self.r
        if tags is None:
            tags = self.tags()
        f = bytearray((dst if dst is not None else self.l2dst(ethertype)) + self.mac())
        for tpid in tags:
            f += struct.pack("!HH", tpid, r.getrandbits(16) & 0xEFFF)
        f += struct.pack("!H", ethertype)
        f += payload
        if pad:
            if len(f) < 60:
                f += b"\0" * (60 - len(f)) if r.random() < 0.5 else self.rb(60 - len(f))
            elif r.random() < 0.08:
                f += self.rb(r.randint(1, 24))
        self.frames.append(bytes(f))

    def payload(self, maxlen=120):
        r = self.r
        return self.rb(r.randint(0, maxlen)) if r.random() < 0.7 else b""

    def l4(self, fam, proto, sport, dport):
        """A scapy upper layer (with payload) for proto in tcp/udp/icmp/other."""
        r = self.r
        if proto == "tcp":
            opts = []
            if r.random() < 0.3:
                opts = [("MSS", 1460), ("SAckOK", b""), ("WScale", 7),
                        ("Timestamp", (r.getrandbits(32), 0))]
            return TCP(sport=sport, dport=dport, seq=r.getrandbits(32),
                       ack=r.getrandbits(32), window=r.randint(0, 65535),
                       flags=r.choice(["S", "A", "PA", "FA", "R", "SA"]),
                       options=opts) / Raw(self.payload())
        if proto == "udp":
            return UDP(sport=sport, dport=dport) / Raw(self.payload())
        if proto == "icmp":
            if fam == 4:
                return ICMP(type=8, code=0, id=r.getrandbits(16),
                            seq=r.getrandbits(16)) / Raw(self.payload(64))
            return ICMPv6EchoRequest(id=r.getrandbits(16), seq=r.getrandbits(16),
                                     data=self.payload(64))
        return Raw(self.rb(r.randint(1, 120)))   # IPv6 payload length 0 is malformed

    def other_proto(self, fam):
        return self.r.choice([47, 50, 132, 103, 59] + ([58] if fam == 4 else [1]))

    def ip4(self, src, dst, up, proto=None, ident=None, flags=0, frag=0, options=None):
        r = self.r
        kw = dict(src=src, dst=dst, id=r.getrandbits(16) if ident is None else ident,
                  flags=flags, frag=frag, ttl=r.randint(1, 255), tos=r.getrandbits(8))
        if proto is not None:
            kw["proto"] = proto
        if options:
            kw["options"] = options
        return bytes(IP(**kw) / up)

    def ext(self, kind):
        r = self.r
        if kind == "hbh":
            return IPv6ExtHdrHopByHop(options=[PadN(optdata=b"\0" * r.randint(0, 20))])
        if kind == "dst":
            return IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\0" * r.randint(0, 20))])
        if kind == "rt":
            n = r.randint(0, 2)
            return IPv6ExtHdrRouting(addresses=[self.nonvip6() for _ in range(n)],
                                     segleft=0)
        if kind == "ah":
            icv = r.choice([12, 16, 20])
            return AH(spi=r.getrandbits(32), seq=r.getrandbits(32), icv=b"\0" * icv,
                      payloadlen=(12 + icv) // 4 - 2)
        if kind == "frag0":   # atomic fragment: not a fragment, but carries an id
            return IPv6ExtHdrFragment(offset=0, m=0, id=r.getrandbits(32))
        raise ValueError(kind)

    def ip6(self, src, dst, up, nh=None, kinds=(), fl=None):
        r = self.r
        pkt = IPv6(src=src, dst=dst, fl=r.getrandbits(20) if fl is None else fl,
                   hlim=r.randint(1, 255), tc=r.getrandbits(8))
        return bytes(stack6(pkt, [self.ext(k) for k in kinds], up, nh))

    def rand_kinds(self, lo=0, hi=4, frag=True):
        """A random extension chain; at most one fragment header (two of them is left
        open by docs/classifier.md: see c_ambiguous)."""
        r = self.r
        kinds = []
        for _ in range(r.randint(lo, hi)):
            k = r.choice(["hbh", "dst", "rt", "ah", "frag0"] if frag and
                         "frag0" not in kinds else ["hbh", "dst", "rt", "ah"])
            kinds.append(k)
        return kinds

    def ip_packet(self, fam, src, dst, proto, sport, dport, kinds=(), options=None):
        up = self.l4(fam, proto, sport, dport)
        if fam == 4:
            p = self.other_proto(4) if proto == "other" else None
            flags = "DF" if self.r.random() < 0.5 else 0
            return self.ip4(src, dst, up, proto=p, flags=flags, options=options)
        nh = self.other_proto(6) if proto == "other" else None
        return self.ip6(src, dst, up, nh=nh, kinds=kinds)

    def pick_fam(self):
        return 4 if self.r.random() < 0.62 else 6

    def pick_vip(self, fam):
        if self.gw_addrs and self.gw[fam]:
            return self.r.choice(self.gw[fam])[0]
        return self.r.choice(self.vip4 if fam == 4 else self.vip6)

    def pick_proto(self):
        c = self.r.random()
        return "tcp" if c < 0.45 else "udp" if c < 0.8 else "icmp" if c < 0.9 else "other"

    def v4opts(self):
        r = self.r
        c = r.randint(0, 4)
        if c == 0:
            return [IPOption_NOP(), IPOption_NOP(), IPOption_NOP(), IPOption_EOL()]
        if c == 1:
            return [IPOption_Router_Alert()]
        if c == 2:
            return [IPOption_RR(routers=[self.client4() for _ in range(r.randint(1, 9))])]
        if c == 3:
            return [IPOption_NOP(), IPOption_Timestamp(flg=0, timestamp=r.getrandbits(32))]
        return [IPOption_NOP()] * r.randint(1, 40)

    # ------------------------------------------------------------------ categories
    def c_vip_l4(self):
        fam = self.pick_fam()
        proto = self.pick_proto()
        kinds = self.rand_kinds(0, 3) if fam == 6 and self.r.random() < 0.25 else ()
        opts = self.v4opts() if fam == 4 and self.r.random() < 0.1 else None
        src = self.client4() if fam == 4 else self.client6()
        self.eth(ETH_IP4 if fam == 4 else ETH_IP6,
                 self.ip_packet(fam, src, self.pick_vip(fam), proto, self.cport(),
                                self.sport(), kinds, opts))

    def c_nonvip_l4(self):
        r = self.r
        fam = self.pick_fam()
        proto = self.pick_proto()
        src = self.client4() if fam == 4 else self.client6()
        dst = self.nonvip4() if fam == 4 else self.nonvip6()
        kinds = self.rand_kinds(0, 3) if fam == 6 and r.random() < 0.3 else ()
        if r.random() < 0.25:
            # L4 problems of passed packets are the kernel's business
            self.eth(ETH_IP4 if fam == 4 else ETH_IP6,
                     self.bad_l4(fam, src, dst, r.choice(["trunc", "doff", "ulen"])))
            return
        self.eth(ETH_IP4 if fam == 4 else ETH_IP6,
                 self.ip_packet(fam, src, dst, proto, self.cport(), self.sport(), kinds))

    def c_v4_options(self):
        proto = self.r.choice(["tcp", "udp", "icmp", "other"])
        dst = self.pick_vip(4) if self.r.random() < 0.85 else self.nonvip4()
        self.eth(ETH_IP4, self.ip_packet(4, self.client4(), dst, proto, self.cport(),
                                         self.sport(), options=self.v4opts()))

    def c_v6_ext(self):
        r = self.r
        proto = self.pick_proto()
        dst = self.pick_vip(6) if r.random() < 0.85 else self.nonvip6()
        self.eth(ETH_IP6, self.ip_packet(6, self.client6(), dst, proto, self.cport(),
                                         self.sport(), self.rand_kinds(1, 6)))

    def frag_chunks(self, data):
        """Split data into 2-4 pieces, all but the last a multiple of 8 bytes."""
        r = self.r
        n = r.randint(2, 4)
        cuts = []
        pos = 0
        for _ in range(n - 1):
            if len(data) - pos <= 8:
                break
            step = 8 * r.randint(1, max(1, (len(data) - pos - 1) // 8 // 2 or 1))
            pos += step
            if pos >= len(data):
                break
            cuts.append(pos)
        bounds = [0] + cuts + [len(data)]
        return [(bounds[i], data[bounds[i]:bounds[i + 1]], i == len(bounds) - 2)
                for i in range(len(bounds) - 1)]

    def c_v4_frag(self):
        r = self.r
        proto = r.choice(["tcp", "udp", "icmp", "other"])
        src = self.client4()
        dst = self.pick_vip(4) if r.random() < 0.85 else self.nonvip4()
        up = self.l4(4, proto, self.cport(), self.sport())
        p = self.other_proto(4) if proto == "other" else None
        full = self.ip4(src, dst, up / Raw(self.rb(r.randint(16, 200))), proto=p)
        ihl = (full[0] & 15) * 4
        data, pnum = full[ihl:], full[9]
        ident = r.getrandbits(16)
        tags = self.tags()
        opts = self.v4opts() if r.random() < 0.1 else None
        pieces = self.frag_chunks(data)
        if r.random() < 0.3:
            pieces.reverse()
        for off, chunk, last in pieces:
            b = self.ip4(src, dst, Raw(chunk), proto=pnum, ident=ident,
                         flags=0 if last else "MF", frag=off // 8, options=opts)
            self.eth(ETH_IP4, b, tags=tags)

    def c_v6_frag(self):
        r = self.r
        proto = r.choice(["tcp", "udp", "icmp", "other"])
        src = self.client6()
        dst = self.pick_vip(6) if r.random() < 0.85 else self.nonvip6()
        up = self.l4(6, proto, self.cport(), self.sport())
        nh = self.other_proto(6) if proto == "other" else None
        full = self.ip6(src, dst, up / Raw(self.rb(r.randint(16, 200))), nh=nh)
        data, pnum = full[40:], full[6]
        ident = r.getrandbits(32)
        fl = r.getrandbits(20)
        unfrag = [r.choice(["hbh", "dst", "rt", "ah"]) for _ in range(r.randint(0, 2))]
        tags = self.tags()
        pieces = self.frag_chunks(data)
        if r.random() < 0.3:
            pieces.reverse()
        for off, chunk, last in pieces:
            pkt = stack6(IPv6(src=src, dst=dst, fl=fl, hlim=64),
                         [self.ext(k) for k in unfrag] +
                         [IPv6ExtHdrFragment(offset=off // 8, m=0 if last else 1,
                                             id=ident)], Raw(chunk), pnum)
            self.eth(ETH_IP6, bytes(pkt), tags=tags)

    def c_short_first_frag(self):
        """First fragments whose L4 header is cut short, later fragments with too few
        bytes for any L4 header: the L4 header of a fragment is never read."""
        r = self.r
        fam = self.pick_fam()
        pnum = r.choice([6, 17, 1 if fam == 4 else 58])
        chunk = self.rb(8 * r.randint(0, 2))
        off = 0 if r.random() < 0.5 else r.randint(1, 100)
        m = 1 if off == 0 or r.random() < 0.5 else 0
        if fam == 4:
            dst = self.pick_vip(4)
            b = self.ip4(self.client4(), dst, Raw(chunk), proto=pnum,
                         flags="MF" if m else 0, frag=off)
            self.eth(ETH_IP4, b)
        else:
            pkt = IPv6(src=self.client6(), dst=self.pick_vip(6)) / IPv6ExtHdrFragment(
                nh=pnum, offset=off, m=m, id=r.getrandbits(32)) / Raw(chunk)
            self.eth(ETH_IP6, bytes(pkt))

    # ICMP errors -----------------------------------------------------------
    def icmp4_raw(self, t, code, rest, body):
        h = bytearray(struct.pack("!BBH", t, code, 0) + rest + body)
        h[2:4] = struct.pack("!H", csum(bytes(h)))
        return bytes(h)

    def quote4(self, vip, client, qproto, kind, ports=None):
        """Bytes of an IPv4 packet the node sent (src = VIP), possibly cut."""
        r = self.r
        sport, cport = ports if ports else (self.sport(), self.cport())
        if qproto == "tcp":
            up = TCP(sport=sport, dport=cport, seq=r.getrandbits(32), flags="SA")
        elif qproto == "udp":
            up = UDP(sport=sport, dport=cport) / Raw(self.payload(40))
        elif qproto == "icmp":
            up = ICMP(type=0, id=r.getrandbits(16), seq=r.getrandbits(16))
        else:
            up = Raw(self.payload(40))
        p = self.other_proto(4) if qproto == "other" else None
        opts = self.v4opts() if r.random() < 0.1 else None
        flags, frag = ("DF" if r.random() < 0.5 else 0), 0
        if kind == "frag":
            if r.random() < 0.5:
                flags = "MF"
            else:
                frag = r.randint(1, 50)
                flags = "MF" if r.random() < 0.5 else 0
        q = self.ip4(vip, client, up / Raw(self.rb(r.randint(0, 40))), proto=p,
                     flags=flags, frag=frag, options=opts)
        ihl = (q[0] & 15) * 4
        if kind == "full":
            return q[:548]
        if kind == "rfc792":
            return q[:ihl + 8]
        if kind == "ports":
            return q[:ihl + 4]
        if kind == "cut":
            return q[:ihl + r.randint(0, 3)]
        return q   # frag

    def quote6(self, vip, client, qproto, kind, ports=None):
        r = self.r
        sport, cport = ports if ports else (self.sport(), self.cport())
        if qproto == "tcp":
            up = TCP(sport=sport, dport=cport, seq=r.getrandbits(32), flags="SA")
        elif qproto == "udp":
            up = UDP(sport=sport, dport=cport) / Raw(self.payload(40))
        elif qproto == "icmp":
            up = ICMPv6EchoReply(id=r.getrandbits(16), seq=r.getrandbits(16))
        else:
            up = Raw(self.payload(40))
        nh = self.other_proto(6) if qproto == "other" else None
        kinds = self.rand_kinds(0, 2, frag=kind != "frag") if r.random() < 0.3 else []
        if kind == "frag":
            # a fragment header in the quote: first fragment or a later one
            off = 0 if r.random() < 0.5 else r.randint(1, 100)
            b = bytes(IPv6(src=vip, dst=client) / up)
            upper = b[6] if nh is None else nh
            pkt = stack6(IPv6(src=vip, dst=client, fl=r.getrandbits(20)),
                         [self.ext(k) for k in kinds] +
                         [IPv6ExtHdrFragment(offset=off, m=1, id=r.getrandbits(32))],
                         Raw(b[40:]), upper)
            return bytes(pkt)[:1232]
        q = self.ip6(vip, client, up / Raw(self.rb(r.randint(0, 40))), nh=nh, kinds=kinds)
        # length of the header chain = position of the upper layer
        hl = self.chain_len(q)
        if kind == "full":
            return q[:1232]
        if kind == "rfc792":
            return q[:hl + 8]
        if kind == "ports":
            return q[:hl + 4]
        if kind == "cut":
            return q[:hl + r.randint(0, 3)]
        return q

    @staticmethod
    def chain_len(q):
        nh, pos = q[6], 40
        while nh in (0, 43, 60, 51, 44):
            ln = 8 if nh == 44 else (q[pos + 1] + 2) * 4 if nh == 51 else \
                (q[pos + 1] + 1) * 8
            nh, pos = q[pos], pos + ln
        return pos

    def c_icmp4_err(self):
        r = self.r
        vip_out = self.pick_vip(4)
        to_vip = r.random() < 0.9
        dst = vip_out if to_vip else self.nonvip4()
        vip_q = vip_out if r.random() < 0.85 else r.choice(self.vip4)
        qproto = r.choice(["tcp", "tcp", "udp", "udp", "icmp", "other"])
        kind = r.choice(["full", "rfc792", "rfc792", "ports", "cut", "frag"])
        quote = self.quote4(vip_q, self.client4(), qproto, kind)
        t = r.choice([3, 3, 3, 11, 12])
        if t == 3:
            code = r.choice([0, 1, 3, 4, 4, 4, 9, 10, 13])
            rest = struct.pack("!HH", 0, r.choice([576, 1280, 1400, 1480])
                               if code == 4 else 0)
        elif t == 11:
            code, rest = r.randint(0, 1), b"\0" * 4
        else:
            code, rest = 0, struct.pack("!B3x", r.randint(0, 40))
        router = r.choice([self.client4(), "192.0.2.254", "203.0.113.254"])
        self.eth(ETH_IP4, self.ip4(router, dst, Raw(self.icmp4_raw(t, code, rest, quote)),
                                   proto=1))

    def c_icmp6_err(self):
        r = self.r
        vip = self.pick_vip(6)
        to_vip = r.random() < 0.9
        dst = vip if to_vip else self.nonvip6()
        qproto = r.choice(["tcp", "tcp", "udp", "udp", "icmp", "other"])
        kind = r.choice(["full", "rfc792", "rfc792", "ports", "cut", "frag"])
        quote = self.quote6(vip, self.client6(), qproto, kind)
        t = r.choice([1, 1, 2, 2, 3, 4])
        if t == 1:
            err = ICMPv6DestUnreach(code=r.choice([0, 1, 3, 4, 5]))
        elif t == 2:
            err = ICMPv6PacketTooBig(mtu=r.choice([1280, 1400, 1480]))
        elif t == 3:
            err = ICMPv6TimeExceeded(code=r.randint(0, 1))
        else:
            err = ICMPv6ParamProblem(code=r.randint(0, 2), ptr=r.randint(0, 60))
        router = r.choice([self.client6(), "2001:db8:ffff::1"])
        kinds = self.rand_kinds(0, 2) if r.random() < 0.15 else ()
        self.eth(ETH_IP6, self.ip6(router, dst, err / Raw(quote), kinds=kinds))

    def bad_quote(self, fam):
        """A quote that must give malformed/icmp_quote (when sent to a VIP)."""
        r = self.r
        vip = self.pick_vip(fam)
        client = self.client4() if fam == 4 else self.client6()
        if fam == 4:
            good = bytearray(self.quote4(vip, client, "tcp", "rfc792"))
            c = r.randint(0, 4)
            if c == 0:                  # too short
                return bytes(good[:r.randint(0, 19)])
            if c == 1:                  # version != 4
                good[0] = (r.choice([0, 5, 6, 15]) << 4) | (good[0] & 15)
                return bytes(good)
            if c == 2:                  # IHL < 5
                good[0] = 0x40 | r.randint(0, 4)
                return bytes(good)
            if c == 3:                  # IHL beyond the quote
                good[0] = 0x40 | 15
                return bytes(good[:r.randint(20, 59)])
            # IPv6 packet quoted in an ICMPv4 error
            return self.quote6(self.vip6[0], self.client6(), "tcp", "rfc792")
        good = bytearray(self.quote6(vip, client, "udp", "rfc792"))
        c = r.randint(0, 4)
        if c == 0:
            return bytes(good[:r.randint(0, 39)])
        if c == 1:
            good[0] = (r.choice([0, 5, 7, 15]) << 4) | (good[0] & 15)
            return bytes(good)
        if c == 2:                      # IPv4 packet quoted in an ICMPv6 error
            q = self.quote4(self.vip4[0], self.client4(), "tcp", "rfc792")
            return q + self.rb(r.randint(0, 30))
        if c == 3:                      # extension header beyond the quote
            q = bytes(IPv6(src=vip, dst=client, plen=60) /
                      IPv6ExtHdrHopByHop(options=[PadN(optdata=b"\0" * 30)]) /
                      UDP(sport=53, dport=1234))
            return q[:r.randint(40, 60)]
        # extension header claims more than the quote holds
        q = bytearray(bytes(IPv6(src=vip, dst=client) / IPv6ExtHdrDestOpt() /
                            TCP(sport=80, dport=4321)))
        q[41] = r.randint(4, 255)
        return bytes(q)

    def c_icmp_bad_quote(self):
        r = self.r
        fam = self.pick_fam()
        to_vip = r.random() < 0.85
        quote = self.bad_quote(fam)
        if fam == 4:
            dst = self.pick_vip(4) if to_vip else self.nonvip4()
            t = r.choice([3, 11, 12])
            body = self.icmp4_raw(t, 4 if t == 3 else 0, b"\0" * 4, quote)
            if r.random() < 0.1:
                body = self.icmp4_raw(t, 0, b"\0" * 4, b"")    # no quote at all
            self.eth(ETH_IP4, self.ip4(self.client4(), dst, Raw(body), proto=1))
        else:
            dst = self.pick_vip(6) if to_vip else self.nonvip6()
            err = r.choice([ICMPv6DestUnreach(), ICMPv6PacketTooBig(mtu=1280),
                            ICMPv6TimeExceeded(), ICMPv6ParamProblem()])
            if r.random() < 0.1:        # 4..7 bytes of ICMPv6: quote starts beyond
                body = Raw(bytes([r.choice([1, 2, 3, 4]), 0, 0, 0]) +
                           self.rb(r.randint(0, 3)))
                self.eth(ETH_IP6, self.ip6(self.client6(), dst, body, nh=58))
                return
            self.eth(ETH_IP6, self.ip6(self.client6(), dst, err / Raw(quote)))

    # echo and other ICMP -----------------------------------------------------
    def c_icmp_misc(self):
        r = self.r
        fam = self.pick_fam()
        to_vip = r.random() < 0.8
        if fam == 4:
            dst = self.pick_vip(4) if to_vip else self.nonvip4()
            c = r.random()
            if c < 0.6:
                up = ICMP(type=8, id=r.getrandbits(16), seq=r.getrandbits(16)) / \
                    Raw(self.payload(64))
            else:
                t = r.choice([0, 13, 14, 5, 9, 10, 17, 42, 200])
                up = Raw(self.icmp4_raw(t, 0, self.rb(4), self.payload(32)))
            self.eth(ETH_IP4, self.ip4(self.client4(), dst, up, proto=1,
                                       options=self.v4opts() if r.random() < 0.1
                                       else None))
        else:
            dst = self.pick_vip(6) if to_vip else self.nonvip6()
            c = r.random()
            kinds = self.rand_kinds(0, 2) if r.random() < 0.2 else ()
            if c < 0.5:
                up = ICMPv6EchoRequest(id=r.getrandbits(16), seq=r.getrandbits(16),
                                       data=self.payload(64))
            elif c < 0.6:               # 4..7 bytes of echo request: still an echo
                up = Raw(bytes([128, 0, 0, 0]) + self.rb(r.randint(0, 3)))
            elif c < 0.7:
                up = ICMPv6EchoReply(id=1, seq=2)
            elif c < 0.8:               # NS to the VIP itself for another target
                up = ICMPv6ND_NS(tgt=self.nonvip6())
            elif c < 0.9:
                up = ICMPv6ND_NA(tgt=self.vip6[0], R=0, S=1, O=1)
            else:
                up = Raw(bytes([r.choice([130, 133, 134, 137, 143, 200]), 0, 0, 0]) +
                         self.payload(32))
            self.eth(ETH_IP6, self.ip6(self.client6(), dst, up, nh=58 if isinstance(
                up, Raw) else None, kinds=kinds))

    # ARP / ND ---------------------------------------------------------------
    def arp(self, op, tpa, spa=None):
        hw = ":".join("%02x" % x for x in self.mac())
        hwdst = "00:00:00:00:00:00" if op == 1 else ":".join("%02x" % x for x in self.mac())
        return bytes(ARP(hwtype=1, ptype=0x0800, hwlen=6, plen=4, op=op, hwsrc=hw,
                         psrc=spa or self.client4(), hwdst=hwdst, pdst=tpa))

    def c_arp(self):
        r = self.r
        c = r.random()
        if c < 0.45:
            b = self.arp(1, self.pick_vip(4))                   # arp_vip
        elif c < 0.6:
            b = self.arp(1, self.nonvip4())
        elif c < 0.7:
            b = self.arp(2, self.pick_vip(4))                   # reply: pass
        elif c < 0.75:
            v = self.pick_vip(4)
            b = self.arp(1, v, spa=v)                           # gratuitous: pass
        else:
            b = bytearray(self.arp(1, self.pick_vip(4)))        # not Ethernet/IPv4
            field = r.randint(0, 3)
            if field == 0:
                b[0:2] = struct.pack("!H", r.choice([6, 0x0800, 0]))
            elif field == 1:
                b[2:4] = struct.pack("!H", r.choice([0x86DD, 0x0806, 0]))
            elif field == 2:
                b[4] = r.choice([0, 8, 16])
            else:
                b[5] = r.choice([0, 6, 16])
            b = bytes(b)
            if r.random() < 0.3:
                b = bytes(b[:6]) + struct.pack("!H", r.choice([3, 4, 8])) + b[8:]
        b = bytes(b)
        if r.random() < 0.2:
            b += self.rb(r.randint(1, 30))                      # trailing bytes
        self.eth(ETH_ARP, b, dst=BCAST)

    def c_nd(self):
        r = self.r
        vip = self.pick_vip(6)
        c = r.random()
        src = self.client6() if r.random() < 0.8 else "::"
        tgt = vip if c < 0.6 else self.nonvip6()
        sn = "ff02::1:ff" + "%02x:%04x" % (ipaddress.IPv6Address(tgt).packed[13],
                                           struct.unpack("!H", ipaddress.IPv6Address(
                                               tgt).packed[14:])[0])
        dst = sn if r.random() < 0.85 else vip
        mac = r.choice([b"\x33\x33\xff" + ipaddress.IPv6Address(tgt).packed[13:],
                        self.l2dst(ETH_IP6)])
        ns = ICMPv6ND_NS(tgt=tgt)
        if src != "::" and r.random() < 0.7:
            ns = ns / ICMPv6NDOptSrcLLAddr(lladdr="02:00:00:%02x:%02x:%02x" % tuple(
                self.rb(3)))
        d = r.random()
        if d < 0.15:                     # MLD-style hop-by-hop in front
            b = self.ip6(src, dst, ns, kinds=["hbh"], fl=0)
        elif d < 0.25:                   # fragmented NS: not a fragment => never nd_vip
            body = bytes(IPv6(src=src, dst=dst) / ns)[40:]
            pkt = IPv6(src=src, dst=dst, hlim=255) / IPv6ExtHdrFragment(
                nh=58, offset=0, m=1, id=r.getrandbits(32)) / Raw(body[:16])
            b = bytes(pkt)
        elif d < 0.35:                   # fewer than 24 bytes of ICMPv6
            body = bytes(IPv6(src=src, dst=dst) / ICMPv6ND_NS(tgt=tgt))[40:]
            b = self.ip6(src, dst, Raw(body[:r.randint(4, 23)]), nh=58)
        else:
            b = self.ip6(src, dst, ns, fl=0)
        self.eth(ETH_IP6, b, dst=mac)

    def c_other_ethertype(self):
        r = self.r
        et = r.choice([0x88CC, 0x8847, 0x8035, 0x88E5, 0x0842, 0x9000, 0x0600, 0x88F7])
        self.eth(et, self.rb(r.randint(0, 80)))

    # malformed ---------------------------------------------------------------
    def bad_l4(self, fam, src, dst, what):
        r = self.r
        proto = r.choice(["tcp", "udp", "icmp"]) if what == "trunc" else \
            "tcp" if what == "doff" else "udp"
        pnum = {"tcp": 6, "udp": 17, "icmp": 1 if fam == 4 else 58}[proto]
        kinds = self.rand_kinds(0, 2) if fam == 6 and r.random() < 0.2 else ()
        if what == "trunc":
            n = {"tcp": 20, "udp": 8, "icmp": 8 if fam == 4 else 4}[proto]
            body = self.rb(r.randint(0, n - 1))
        elif what == "doff":
            b = bytearray(bytes(TCP(sport=self.cport(), dport=self.sport())) +
                          self.payload(40))
            if r.random() < 0.4:
                b[12] = (r.randint(0, 4) << 4) | (b[12] & 15)
            else:
                # data offset beyond the L4 bytes
                b = (b + self.rb(60))[:r.randint(20, 59)]
                doff = r.randint(len(b) // 4 + 1, 15)
                b[12] = (doff << 4) | (b[12] & 15)
            body = bytes(b)
        else:
            n = r.randint(8, 60)
            b = bytearray(struct.pack("!HHHH", self.cport(), self.sport(), 0, 0) +
                          self.rb(n - 8))
            ulen = r.randint(0, 7) if r.random() < 0.4 else r.randint(n + 1, 65535)
            b[4:6] = struct.pack("!H", ulen)
            body = bytes(b)
        if fam == 4:
            return self.ip4(src, dst, Raw(body), proto=pnum)
        return self.ip6(src, dst, Raw(body), nh=pnum, kinds=kinds)

    MALFORMED = ["runt", "vlan_truncated", "vlan_depth", "arp_truncated", "l3_truncated",
                 "ip_version", "ipv4_ihl", "ipv4_total_length", "ipv6_payload_length",
                 "ext_truncated", "ext_chain", "l4_truncated", "tcp_data_offset",
                 "udp_length", "icmp_quote"]

    def good_l3(self, fam, to_vip=True):
        src = self.client4() if fam == 4 else self.client6()
        dst = self.pick_vip(fam) if to_vip else (self.nonvip4() if fam == 4
                                                 else self.nonvip6())
        return self.ip_packet(fam, src, dst, self.pick_proto(), self.cport(), self.sport())

    def c_malformed(self):
        r = self.r
        reason = self.MALFORMED[self.counter % len(self.MALFORMED)]
        self.counter += 1
        fam = self.pick_fam()
        et = ETH_IP4 if fam == 4 else ETH_IP6
        to_vip = r.random() < 0.6
        if reason == "runt":
            self.frames.append(self.rb(r.randint(1, 13)))
        elif reason == "vlan_truncated":
            if r.random() < 0.5:
                f = self.l2dst() + self.mac() + struct.pack("!H", r.choice([0x8100, 0x88A8]))
            else:
                f = self.l2dst() + self.mac() + struct.pack("!HHH", 0x88A8, r.getrandbits(12),
                                                    0x8100)
            self.frames.append(f + self.rb(r.randint(0, 3)))
        elif reason == "vlan_depth":
            tags = [r.choice([0x8100, 0x88A8]) for _ in range(r.choice([3, 3, 3, 4]))]
            self.eth(et, self.good_l3(fam), tags=tags)
        elif reason == "arp_truncated":
            b = self.arp(1, self.pick_vip(4))[:r.randint(0, 27)]
            self.eth(ETH_ARP, b, pad=False, dst=BCAST)
        elif reason == "l3_truncated":
            good = bytearray(self.good_l3(fam, to_vip))
            if fam == 4 and r.random() < 0.5:
                # IHL*4 beyond the available bytes
                ihl = r.randint(6, 15)
                good[0] = 0x40 | ihl
                good = fix_ip4_csum(good[:r.randint(20, ihl * 4 - 1)])
                self.eth(et, bytes(good), pad=False)
            else:
                self.eth(et, bytes(good[:r.randint(0, 19 if fam == 4 else 39)]),
                         pad=False)
        elif reason == "ip_version":
            good = bytearray(self.good_l3(fam, to_vip))
            bad = [0, 5, 6, 7, 15] if fam == 4 else [0, 4, 5, 7, 15]
            good[0] = (r.choice(bad) << 4) | (good[0] & 15)
            self.eth(et, bytes(good))
        elif reason == "ipv4_ihl":
            good = bytearray(self.good_l3(4, to_vip))
            good[0] = 0x40 | r.randint(0, 4)
            self.eth(ETH_IP4, bytes(good))
        elif reason == "ipv4_total_length":
            good = bytearray(self.good_l3(4, to_vip))
            ihl = (good[0] & 15) * 4
            if r.random() < 0.5:
                good[2:4] = struct.pack("!H", r.randint(0, ihl - 1))
                self.eth(ETH_IP4, bytes(fix_ip4_csum(good)))
            else:
                good[2:4] = struct.pack("!H", r.randint(len(good) + 1, len(good) + 600))
                self.eth(ETH_IP4, bytes(fix_ip4_csum(good)), pad=False)
        elif reason == "ipv6_payload_length":
            good = bytearray(self.good_l3(6, to_vip))
            if r.random() < 0.7:
                good[4:6] = struct.pack("!H", r.randint(len(good) - 39, 65535))
                self.eth(ETH_IP6, bytes(good), pad=False)
            else:
                good[4:6] = b"\0\0"         # jumbogram-style zero payload length
                self.eth(ETH_IP6, bytes(good))
        elif reason == "ext_truncated":
            self.eth(ETH_IP6, self.ext_truncated(to_vip))
        elif reason == "ext_chain":
            src, dst = self.client6(), self.pick_vip(6) if to_vip else self.nonvip6()
            kinds = [r.choice(["hbh", "dst", "rt", "ah", "frag0"])
                     for _ in range(r.randint(9, 12))]
            self.eth(ETH_IP6, self.ip6(src, dst, self.l4(6, "tcp", self.cport(), 80),
                                       kinds=kinds))
        elif reason in ("l4_truncated", "tcp_data_offset", "udp_length"):
            what = {"l4_truncated": "trunc", "tcp_data_offset": "doff",
                    "udp_length": "ulen"}[reason]
            src = self.client4() if fam == 4 else self.client6()
            self.eth(et, self.bad_l4(fam, src, self.pick_vip(fam), what))
        elif reason == "icmp_quote":
            self.c_icmp_bad_quote()

    def ext_truncated(self, to_vip):
        r = self.r
        src, dst = self.client6(), self.pick_vip(6) if to_vip else self.nonvip6()
        c = r.randint(0, 4)
        if c == 0:      # header length beyond the payload
            b = bytearray(self.ip6(src, dst, self.l4(6, "udp", self.cport(), 53),
                                   kinds=[r.choice(["hbh", "dst", "rt"])]))
            b[41] = r.randint(max(1, (len(b) - 40) // 8), 255)
            return bytes(b)
        if c == 1:      # the chain announces a header, the payload ends
            kinds = self.rand_kinds(0, 2)
            nxt = r.choice([0, 43, 60, 51, 44])
            lo = 0 if kinds else 1          # payload length 0 is another reason
            b = bytearray(self.ip6(src, dst, Raw(self.rb(r.randint(lo, 1 if nxt != 44
                                                                   else 7))),
                                   nh=nxt, kinds=kinds))
            return bytes(b)
        if c == 2:      # AH longer than the payload
            b = bytearray(self.ip6(src, dst, self.l4(6, "tcp", self.cport(), 443),
                                   kinds=["ah"]))
            b[41] = r.randint(max(1, (len(b) - 40) // 4), 255)
            return bytes(b)
        if c == 3:      # payload length cuts the chain; the frame goes on (padding)
            b = bytearray(self.ip6(src, dst, self.l4(6, "tcp", self.cport(), 80),
                                   kinds=["hbh", "dst"]))
            first = (b[41] + 1) * 8
            plen = r.randint(first + 1, first + 1 + (b[40 + first + 1] + 1) * 8 - 2)
            b[4:6] = struct.pack("!H", plen)
            return bytes(b)
        # fragment header with fewer than 8 bytes
        b = bytes(IPv6(src=src, dst=dst, nh=44) / Raw(self.rb(r.randint(1, 7))))
        return b

    # ambiguous cases (off by default) ----------------------------------------
    def c_ambiguous(self):
        r = self.r
        c = self.counter % (8 if self.gw[4] or self.gw[6] else 7)
        self.counter += 1
        if c == 0:      # third tag that is itself truncated
            f = VMAC + self.mac() + struct.pack("!HHHHH", 0x88A8, 1, 0x8100, 2, 0x8100)
            self.frames.append(f + self.rb(r.randint(0, 3)))
        elif c == 1:    # ninth extension header truncated
            b = bytearray(self.ip6(self.client6(), self.pick_vip(6), Raw(b""), nh=60,
                                   kinds=["dst"] * 8))
            self.eth(ETH_IP6, bytes(b), pad=False)
        elif c == 2:    # IPv4-mapped VIP as an IPv6 destination / NS target
            m = "::ffff:" + self.vip4[0]
            if r.random() < 0.5:
                self.eth(ETH_IP6, self.ip6(self.client6(), m,
                                           self.l4(6, "udp", 1234, 5353)))
            else:
                self.eth(ETH_IP6, self.ip6(self.client6(), "ff02::1:ff00:1",
                                           ICMPv6ND_NS(tgt=m)))
        elif c == 3:    # ICMP error quoting a flow whose source is not a VIP
            q = self.quote4(self.nonvip4(), self.client4(), "udp", "rfc792")
            self.eth(ETH_IP4, self.ip4(self.client4(), self.vip4[0],
                                       Raw(self.icmp4_raw(3, 3, b"\0" * 4, q)), proto=1))
        elif c == 4:    # later fragment whose fragment header announces an ext header
            pkt = IPv6(src=self.client6(), dst=self.vip6[0]) / IPv6ExtHdrFragment(
                nh=60, offset=5, m=0, id=7) / Raw(self.rb(24))
            self.eth(ETH_IP6, bytes(pkt))
        elif c == 5:    # two fragment headers
            pkt = IPv6(src=self.client6(), dst=self.vip6[0]) / IPv6ExtHdrFragment(
                offset=0, m=0, id=1) / IPv6ExtHdrFragment(offset=0, m=1, id=2) / \
                UDP(sport=1, dport=7000)
            self.eth(ETH_IP6, bytes(pkt))
        elif c == 7:    # ICMP error to a gateway's own address, not to its virtual MAC,
            # quoting a packet from another host: the gateway's traffic (§2), so the
            # rules naming the gateway (§4), dst matched against the quoted source
            fam = r.choice([f for f in (4, 6) if self.gw[f]])
            gw = r.choice(self.gw[fam])[0]
            if fam == 4:
                q = self.quote4(self.gw_dest(4, []), self.client4(), r.choice(
                    ["tcp", "udp", "icmp"]), "rfc792")
                self.eth(ETH_IP4, self.ip4(self.client4(), gw, Raw(self.icmp4_raw(
                    3, 4, struct.pack("!HH", 0, 1400), q)), proto=1), dst=VMAC)
            else:
                q = self.quote6(self.gw_dest(6, []), self.client6(), r.choice(
                    ["tcp", "udp", "icmp"]), "rfc792")
                self.eth(ETH_IP6, self.ip6(self.client6(), gw, ICMPv6PacketTooBig(
                    mtu=1280) / Raw(q)), dst=VMAC)
        else:           # ICMPv6 quote with more than 8 extension headers
            q = self.ip6(self.vip6[0], self.client6(), UDP(sport=53, dport=999),
                         kinds=["dst"] * 9)
            self.eth(ETH_IP6, self.ip6(self.client6(), self.vip6[0],
                                       ICMPv6DestUnreach() / Raw(q)))

    # gateway VIPs ------------------------------------------------------------
    def gw_pick(self, fam=None):
        """(gateway a, its partner b) of a family that has gateways."""
        r = self.r
        fams = [f for f in (4, 6) if self.gw[f] and (fam is None or f == fam)]
        fam = r.choice(fams)
        a = r.choice(self.gw[fam])[0]
        partners = sorted(self.gw_partners[a]) or [a]
        b = r.choice(partners) if r.random() < 0.8 else r.choice(self.gw[fam])[0]
        return fam, a, b

    def gw_mac(self, addr):
        for fam in (4, 6):
            for a, m in self.gw[fam]:
                if a == addr:
                    return m
        raise KeyError(addr)

    def gw_dest(self, fam, prefixes):
        """A destination for a gateway's traffic: mostly inside one of its rules' dst
        prefixes (or another rule's), at a prefix's edges, or anywhere."""
        r = self.r
        c = r.random()
        pool = prefixes or self.all_prefixes[fam]
        if pool and c < 0.6:
            n = r.choice(pool)
            host = r.getrandbits(n.max_prefixlen - n.prefixlen) if n.prefixlen < \
                n.max_prefixlen else 0
            return str(n.network_address + host)
        if pool and c < 0.72:
            n = r.choice(pool)
            edge = r.choice([int(n.network_address), int(n.broadcast_address),
                             int(n.network_address) - 1, int(n.broadcast_address) + 1])
            return str(type(n.network_address)(edge % (1 << n.max_prefixlen)))
        if c < 0.8 and self.all_prefixes[fam]:
            n = r.choice(self.all_prefixes[fam])
            host = r.getrandbits(n.max_prefixlen - n.prefixlen) if n.prefixlen < \
                n.max_prefixlen else 0
            return str(n.network_address + host)
        if c < 0.85:                       # a VIP, a gateway's own address
            return r.choice((self.vip4 + [a for a, _m in self.gw[4]]) if fam == 4 else
                            (self.vip6 + [a for a, _m in self.gw[6]]))
        if c < 0.92:                       # anywhere
            return str(ipaddress.IPv4Address(r.getrandbits(32)) if fam == 4 else
                       ipaddress.IPv6Address(r.getrandbits(128)))
        return self.client4() if fam == 4 else self.client6()

    def gw_flow(self, fam=None):
        """A connection through gateway a (c -> s) and back through its partner b."""
        r = self.r
        fam, a, b = self.gw_pick(fam)
        c = self.gw_dest(fam, self.gw_prefixes[b])      # b takes the way back to c
        if self.gw_rules[a] and r.random() < 0.4:       # aimed at one of a's rules
            dst, ports, proto = r.choice(self.gw_rules[a])
            s = self.gw_dest(fam, dst)
            sp = r.choice(ports) if ports else self.sport()
            proto = self.pick_proto() if proto == "any" else proto
        else:
            s = self.gw_dest(fam, self.gw_prefixes[a])
            sp, proto = self.sport(), self.pick_proto()
        return fam, a, b, c, s, proto, self.cport(), sp

    def c_gw_flow(self):
        """Both directions (or one) of a flow through a gateway pair."""
        r = self.r
        fam, a, b, c, s, proto, cp, sp = self.gw_flow()
        et = ETH_IP4 if fam == 4 else ETH_IP6
        kinds = self.rand_kinds(0, 3) if fam == 6 and r.random() < 0.2 else ()
        opts = self.v4opts() if fam == 4 and r.random() < 0.05 else None
        if r.random() < 0.85:
            self.eth(et, self.ip_packet(fam, c, s, proto, cp, sp, kinds, opts),
                     dst=self.gw_mac(a))
        if r.random() < 0.7:
            if proto == "icmp":     # the echo reply
                up = ICMP(type=0, id=r.getrandbits(16), seq=r.getrandbits(16)) \
                    if fam == 4 else ICMPv6EchoReply(id=r.getrandbits(16), seq=1)
                l3 = self.ip4(s, c, up, options=opts) if fam == 4 else \
                    self.ip6(s, c, up, kinds=kinds)
            else:
                l3 = self.ip_packet(fam, s, c, proto, sp, cp, kinds, opts)
            self.eth(et, l3, dst=self.gw_mac(b))

    def c_gw_icmp_err(self):
        """ICMP errors through a gateway about a packet that went either way (I5), with
        good, truncated, fragment and broken quotes."""
        r = self.r
        fam, a, b, c, s, proto, cp, sp = self.gw_flow()
        qproto = proto if r.random() < 0.8 else r.choice(["tcp", "udp", "icmp", "other"])
        kind = r.choice(["full", "rfc792", "rfc792", "ports", "cut", "frag"])
        if r.random() < 0.5:        # about c -> s (sent through a), back to c through b
            src, dst, ports, via = c, s, (cp, sp), b
        else:
            src, dst, ports, via = s, c, (sp, cp), a
        to = src if r.random() < 0.9 else self.gw_dest(fam, [])
        router = self.gw_dest(fam, [])
        if r.random() < 0.08:
            quote = self.bad_quote(fam)
        elif fam == 4:
            quote = self.quote4(src, dst, qproto, kind, ports)
        else:
            quote = self.quote6(src, dst, qproto, kind, ports)
        if fam == 4:
            t = r.choice([3, 3, 11, 12])
            rest = struct.pack("!HH", 0, 1400) if t == 3 else b"\0" * 4
            self.eth(ETH_IP4, self.ip4(router, to, Raw(self.icmp4_raw(
                t, 4 if t == 3 else 0, rest, quote)), proto=1), dst=self.gw_mac(via))
        else:
            err = r.choice([ICMPv6DestUnreach(code=r.choice([0, 1, 3, 4])),
                            ICMPv6PacketTooBig(mtu=1280), ICMPv6TimeExceeded(),
                            ICMPv6ParamProblem(ptr=r.randint(0, 60))])
            kinds = self.rand_kinds(0, 2) if r.random() < 0.15 else ()
            self.eth(ETH_IP6, self.ip6(router, to, err / Raw(quote), kinds=kinds),
                     dst=self.gw_mac(via))

    GW_WRAPPED = ["c_vip_l4", "c_nonvip_l4", "c_v4_options", "c_v6_ext", "c_v4_frag",
                  "c_v6_frag", "c_short_first_frag", "c_icmp4_err", "c_icmp6_err",
                  "c_icmp_bad_quote", "c_icmp_misc", "c_nd", "c_malformed"]

    def c_gw_mac(self):
        """Any of the VIP categories, sent to a gateway's virtual MAC (mostly of the
        packet's family; their destinations are service VIPs and other hosts)."""
        fn = getattr(self, self.r.choice(self.GW_WRAPPED))
        self.gw_mode = True
        try:
            fn()
        finally:
            self.gw_mode = False

    def c_gw_addr(self):
        """Frames to a gateway's own address: with no VIP's MAC, with a gateway's virtual
        MAC, and ARP / neighbour solicitations for it."""
        r = self.r
        fn = getattr(self, r.choice(["c_vip_l4", "c_vip_l4", "c_icmp4_err", "c_icmp6_err",
                                     "c_icmp_misc", "c_v4_frag", "c_v6_frag", "c_arp",
                                     "c_arp", "c_nd", "c_nd", "c_malformed"]))
        self.gw_addrs = True
        self.gw_mode = r.random() < 0.3
        try:
            fn()
        finally:
            self.gw_addrs = self.gw_mode = False

    def c_gw_other_mac(self):
        """A flow packet through a gateway with the destination MAC of another VIP (a
        service VIP, the other family's gateway) or of no VIP."""
        r = self.r
        fam, a, b, c, s, proto, cp, sp = self.gw_flow()
        mac = r.choice(self.vmacs + [VMAC, self.mac()])
        self.eth(ETH_IP4 if fam == 4 else ETH_IP6,
                 self.ip_packet(fam, c, s, proto, cp, sp), dst=mac)

    # ------------------------------------------------------------------ driver
    def categories(self):
        cats = [
            (self.c_vip_l4, 30), (self.c_nonvip_l4, 8), (self.c_v4_options, 3),
            (self.c_v6_ext, 7), (self.c_v4_frag, 3), (self.c_v6_frag, 3),
            (self.c_short_first_frag, 2), (self.c_icmp4_err, 7), (self.c_icmp6_err, 6),
            (self.c_icmp_bad_quote, 2), (self.c_icmp_misc, 6), (self.c_arp, 4),
            (self.c_nd, 4), (self.c_other_ethertype, 1), (self.c_malformed, 8),
        ]
        if self.gw[4] or self.gw[6]:
            cats += [(self.c_gw_flow, 12), (self.c_gw_icmp_err, 5), (self.c_gw_mac, 9),
                     (self.c_gw_addr, 3), (self.c_gw_other_mac, 1)]
        if self.ambiguous:
            cats.append((self.c_ambiguous, 2))
        return [(self.labelled(fn), w) for fn, w in cats]

    def run(self, count):
        cats = self.categories()
        for _ in range(20):                     # every category, several times
            for fn, _w in cats:
                fn()
        malformed = [fn for fn, _w in cats if fn.__name__ == "c_malformed"][0]
        for _ in range(2 * len(self.MALFORMED)):  # every malformed reason twice more
            malformed()
        fns = [c[0] for c in cats]
        weights = [c[1] for c in cats]
        while len(self.frames) < count:
            self.r.choices(fns, weights)[0]()
        return self.frames

    def labelled(self, fn):
        """Wrap a category so that every frame it emits is labelled with its name."""
        def run():
            n = len(self.frames)
            fn()
            self.labels += [fn.__name__] * (len(self.frames) - n)
        run.__name__ = fn.__name__
        return run


def write_pcap(path, frames):
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        base = 1700000000
        for i, fr in enumerate(frames):
            f.write(struct.pack("<IIII", base + i // 1000000, i % 1000000, len(fr), len(fr)))
            f.write(fr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="tests/oracle/oracle.toml")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count", type=int, default=12000, help="minimum number of frames")
    ap.add_argument("--ambiguous", action="store_true",
                    help="also emit frames whose verdict docs/classifier.md leaves open")
    ap.add_argument("--labels", help="write the generating category of each frame "
                    "to this file, one a line (for debugging)")
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()
    gen = Gen(args.config, args.seed, args.ambiguous)
    frames = gen.run(args.count)
    write_pcap(args.output, frames)
    if args.labels:
        with open(args.labels, "w") as f:
            f.writelines(label + "\n" for label in gen.labels)
    print("gen_pcap: %d frames -> %s" % (len(frames), args.output), file=sys.stderr)


if __name__ == "__main__":
    main()
