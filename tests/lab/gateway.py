#!/usr/bin/python3
"""Analysis for the gateway lab (tests/lab/gateway.sh), on probe.py's events.

  gateway.py conntrack --ctl C --config F --view 1,2,3 --vmac MAC --server ADDR \
      --events E.jsonl --dump 1=FILE --dump 2=FILE ...
      Every attempt answered; each connection's conntrack entry (from the nodes'
      /proc/net/nf_conntrack dumps) on exactly one node, the one `vipfarmctl owner`
      predicts for the connection's first packet sent to the gateway's virtual MAC.

  gateway.py failover --ctl C --config F --victim K --kill-ms T --view-ms V --bound-ms B \
      --family 4:VMAC:SERVER:E4.jsonl --family 6:VMAC:SERVER:E6.jsonl
      Across a kill -9 of node K at T (the survivors installed the view without it at V):
      the long-lived connections through the survivors never broke; every new connection
      through a survivor succeeded; every one started more than B ms after the kill
      succeeded; and the victim's clients were answered again (a new connection through on
      its first SYN) within B ms.

The predictions come from one `vipfarmctl owner --pcap` run over SYNs built with scapy
(client to server, Ethernet destination the gateway's virtual MAC): the classifier and
the assignment the nodes run, offline. Prints what it found; exit status 0 when every
check holds, 1 otherwise. Run with /usr/bin/python3 (scapy).
"""
import argparse
import collections
import ipaddress
import json
import os
import re
import subprocess
import sys
import tempfile

from scapy.all import IP, TCP, Ether, IPv6, wrpcap  # noqa: E402


def predict(ctl, config, view, vmac, flows):
    """Owner node of each (src, sport, dst, dport) TCP flow's SYN through the gateway."""
    if not flows:
        return []
    frames = []
    for src, sport, dst, dport in flows:
        l3 = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
        frames.append(Ether(src="02:77:00:00:00:fa", dst=vmac) / l3 /
                      TCP(sport=sport, dport=dport, flags="S"))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "flows.pcap")
        wrpcap(path, frames)
        out = subprocess.run([ctl, "owner", "--config", config, "--view", view, "--pcap", path,
                              "--json"], check=True, capture_output=True, text=True).stdout
    owners = [json.loads(line).get("owner", 0) for line in out.splitlines() if line.strip()]
    assert len(owners) == len(flows), (len(owners), len(flows))
    return owners


def events(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


CT = re.compile(r"\bsrc=(\S+) dst=(\S+) sport=(\d+) dport=(\d+)")


def conntrack(path, server):
    """(client, client port) of the TCP connections to server:80 in a conntrack dump."""
    out = set()
    server = ipaddress.ip_address(server)
    with open(path) as f:
        for line in f:
            fields = line.split()
            if "tcp" not in fields[:4]:
                continue
            m = CT.search(line)  # the first tuple: the original direction
            if m and ipaddress.ip_address(m.group(2)) == server and m.group(4) == "80":
                out.add((str(ipaddress.ip_address(m.group(1))), int(m.group(3))))
    return out


def cmd_conntrack(a):
    attempts = [e for e in events(a.events) if e["kind"] == "attempt"]
    answered = [e for e in attempts if e["ok"] and e["node"] == "server"]
    held = {}  # node -> its connections
    for spec in a.dump:
        node, path = spec.split("=", 1)
        held[int(node)] = conntrack(path, a.server)
    conns = [(str(ipaddress.ip_address(e["src"])), e["sport"]) for e in attempts]
    owners = predict(a.ctl, a.config, a.view, a.vmac, [(s, p, a.server, 80) for s, p in conns])
    where = [sorted(n for n, c in held.items() if conn in c) for conn in conns]
    single = sum(1 for w in where if len(w) == 1)
    predicted = sum(1 for w, o in zip(where, owners) if w == [o])
    per_node = collections.Counter(w[0] for w in where if len(w) == 1)
    print(f"{len(answered)} of {len(attempts)} connections answered by the server; "
          f"conntrack entry on exactly one node: {single}; on the predicted owner: {predicted}; "
          f"per node: " + ", ".join(f"node{n} {per_node[n]}" for n in sorted(held)))
    shown = 0
    for conn, w, o in zip(conns, where, owners):
        if w != [o] and shown < 5:
            print(f"  {conn[0]} port {conn[1]}: conntrack on {w or 'no node'}, predicted node {o}")
            shown += 1
    ok = (len(attempts) == a.expect and len(answered) == len(attempts) and
          predicted == len(attempts) and all(per_node[n] > 0 for n in held))
    return 0 if ok else 1


def cmd_failover(a):
    problems = []
    recovered = []
    summary = []
    for spec in a.family:
        family, vmac, server, path = spec.split("@")
        evs = events(path)
        end = max((e.get("end", e.get("at", 0)) for e in evs), default=0)
        # Long-lived connections open at the kill: the last one opened per source before it.
        opened = {}
        for e in evs:
            if e["kind"] == "keep_open" and e["at"] < a.kill_ms:
                opened[e["src"]] = e
        keeps = sorted(opened.values(), key=lambda e: e["src"])
        keep_owner = predict(a.ctl, a.config, a.view, vmac,
                             [(e["src"], e["sport"], server, 80) for e in keeps])
        broke = {e["src"] for e in evs if e["kind"] == "keep_break" and e["at"] >= a.kill_ms}
        kept_survivors = [e for e, o in zip(keeps, keep_owner) if o != a.victim]
        cut = [e["src"] for e in kept_survivors if e["src"] in broke]
        on_victim = len(keeps) - len(kept_survivors)
        lost = sum(1 for e, o in zip(keeps, keep_owner) if o == a.victim and e["src"] in broke)
        if cut:
            problems.append(f"IPv{family}: long-lived connections through survivors broke: {cut[:5]}")
        # New connections started after the kill, by predicted owner in the old view.
        after = [e for e in evs if e["kind"] == "attempt" and e["start"] >= a.kill_ms]
        owner = predict(a.ctl, a.config, a.view, vmac,
                        [(e["src"], e["sport"], server, 80) for e in after])
        survivors_failed = [e for e, o in zip(after, owner) if o != a.victim and not e["ok"]]
        late_failed = [e for e in after if e["start"] > a.kill_ms + a.bound_ms and not e["ok"]]
        victims = sorted((e for e, o in zip(after, owner) if o == a.victim),
                         key=lambda e: e["start"])
        # Answered again: the first of them that went through on its first SYN (no
        # retransmission, which TCP makes after 1 s).
        first_ok = next((e for e in victims if e["ok"] and e["end"] - e["start"] < 1000), None)
        if survivors_failed:
            problems.append(f"IPv{family}: {len(survivors_failed)} new connections through a "
                            f"survivor failed, e.g. {survivors_failed[0]}")
        if late_failed:
            problems.append(f"IPv{family}: {len(late_failed)} new connections started more than "
                            f"{a.bound_ms} ms after the kill failed, e.g. {late_failed[0]}")
        if first_ok is None:
            problems.append(f"IPv{family}: no client of node {a.victim} answered after the kill")
        else:
            recovered.append(max(first_ok["start"], a.view_ms) - a.kill_ms)
        summary.append(f"IPv{family}: {len(kept_survivors)} long-lived connections through "
                       f"the survivors, {len(cut)} broke; {lost} of the {on_victim} through "
                       f"node {a.victim} lost; {len(after)} new connections after the kill "
                       f"({len(victims)} of node {a.victim}'s), {sum(not e['ok'] for e in after)} "
                       f"failed, {len(late_failed)} of them after {a.bound_ms:.0f} ms; "
                       f"{end - a.kill_ms:.0f} ms of traffic after the kill")
        if not kept_survivors or not victims:
            problems.append(f"IPv{family}: the traffic did not cover both the victim and the "
                            f"survivors ({len(kept_survivors)} kept, {len(victims)} new)")
    for line in summary:
        print(line)
    if recovered:
        print(f"the victim's clients answered again {max(recovered):.0f} ms after the kill "
              f"(view without it after {a.view_ms - a.kill_ms:.0f} ms; bound {a.bound_ms:.0f} ms)")
        if max(recovered) > a.bound_ms:
            problems.append(f"recovery {max(recovered):.0f} ms exceeds {a.bound_ms:.0f} ms")
    for p in problems:
        print("  problem: " + p)
    return 0 if not problems else 1


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("conntrack")
    f = sub.add_parser("failover")
    for p in (c, f):
        p.add_argument("--ctl", required=True)
        p.add_argument("--config", required=True)
        p.add_argument("--view", default="1,2,3", help="the view the owners are predicted in")
    c.add_argument("--vmac", required=True)
    c.add_argument("--server", required=True)
    c.add_argument("--events", required=True)
    c.add_argument("--expect", type=int, required=True, help="connections the probe made")
    c.add_argument("--dump", action="append", default=[], help="NODE=conntrack dump")
    f.add_argument("--victim", type=int, required=True)
    f.add_argument("--kill-ms", type=float, required=True)
    f.add_argument("--view-ms", type=float, required=True)
    f.add_argument("--bound-ms", type=float, required=True)
    f.add_argument("--family", action="append", default=[], help="4|6@VMAC@SERVER@EVENTS")
    a = ap.parse_args()
    sys.exit(cmd_conntrack(a) if a.cmd == "conntrack" else cmd_failover(a))


if __name__ == "__main__":
    main()
