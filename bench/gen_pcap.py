#!/usr/bin/python3
"""Write the pipeline benchmark's traffic: one packet of each of COUNT distinct flows to
the VIPs, as a client farm sends them (so the packets spread over every bucket, unlike
net_null's identical ones).

Flows: 80 % IPv4, 20 % IPv6 (--v6-share); TCP to port 80 or 443 from a distinct client
address and port each; frames to the VIP's MAC (--vmac4/--vmac6: the virtual MAC, or a
node's own for a directed VIP). Sizes as on a web front end: 70 % bare ACKs
or SYNs (60 or 74 bytes before the FCS), 20 % 576-byte and 10 % 1514-byte segments.
Same --seed and --count => byte-identical file. Run with /usr/bin/python3 (Debian's scapy).
"""

import argparse
import ipaddress
import random

from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

CLIENT_MAC = "02:00:00:c1:1e:07"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--vip4", required=True)
    ap.add_argument("--vmac4", required=True)
    ap.add_argument("--vip6", required=True)
    ap.add_argument("--vmac6", required=True)
    ap.add_argument("--v6-share", type=float, default=0.2,
                    help="share of IPv6 flows (0: IPv4 only, as to a directed VIP)")
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    base4 = int(ipaddress.IPv4Address("10.200.0.0"))
    base6 = int(ipaddress.IPv6Address("fd00:200::"))
    frames = []
    for i in range(args.count):
        v6 = rng.random() < args.v6_share
        port = rng.choice((80, 443))
        sport = rng.randrange(1024, 65536)
        roll = rng.random()
        if roll < 0.7:
            flags, payload = ("S" if rng.random() < 0.3 else "A"), 0
        else:
            flags = "PA"
            overhead = 14 + (40 if v6 else 20) + 20
            payload = (576 if roll < 0.9 else 1514) - overhead
        tcp = TCP(sport=sport, dport=port, flags=flags, seq=rng.randrange(1 << 32),
                  ack=0 if flags == "S" else rng.randrange(1 << 32), window=64240)
        if v6:
            src = str(ipaddress.IPv6Address(base6 + i + 1))
            ip = IPv6(src=src, dst=args.vip6, hlim=64)
            mac = args.vmac6
        else:
            src = str(ipaddress.IPv4Address(base4 + i + 1))
            ip = IP(src=src, dst=args.vip4, ttl=64, id=rng.randrange(1 << 16))
            mac = args.vmac4
        frame = Ether(src=CLIENT_MAC, dst=mac) / ip / tcp
        if payload:
            frame = frame / Raw(bytes(rng.randrange(256) for _ in range(payload)))
        frames.append(frame)
    wrpcap(args.output, frames)


if __name__ == "__main__":
    main()
