"""Issue 16: the kernel of a node never answers for another node's buckets, and the data
plane never leaks a frame of a bucket it lost into the TAP, after a view change.

A 3-node farm (flood mode: every node receives every frame). Each node's TAP is watched by a
packet socket in its namespace for the whole test: every TCP SYN to the VIP that the data
plane hands to the kernel is recorded with the node. The client sends one SYN from each of
256 source addresses (the rule keys on the client's address) in rounds, and records every
answer (SYN-ACK or reset from the VIP) with its source MAC, which tells the nodes apart.
Rounds run in the view {1,2,3}, after node 3 left (SIGTERM, view {1,2}) and after it came
back (view {1,2,3}, its buckets handed back), plus rounds sent *while* each view changes.
In every round each SYN reaches exactly one TAP and gets answers from exactly one node;
in the settled rounds that node is the one `vipfarmctl owner --view` predicts.
"""
import threading
import time

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

import labfarm

KEYS = 256
ANSWER_TIMEOUT = 5.0


def is_syn_to_vip(data):
    pkt = Ether(data)
    return IP in pkt and TCP in pkt and pkt[IP].dst == labfarm.VIP4 and pkt[TCP].dport == 80 \
        and (pkt[TCP].flags & 0x12) == 0x02, pkt


def watch_tap(ready, stop, seen, lock):
    """In a node namespace: every SYN to the VIP:80 the data plane writes into the TAP, as
    (source address, source port), appended to `seen` until `stop` is set. The TAP goes with
    its daemon (SIGTERM) and comes back with the next one: the watcher binds again."""
    first = True
    while not stop.is_set():
        try:
            s = labfarm.packet_socket(labfarm.TAP)
        except OSError:  # no TAP (yet, or any more): bind again shortly
            time.sleep(0.02)
            continue
        try:
            if first:
                ready.set()
                first = False
            while not stop.is_set():
                for data in labfarm.received(s, time.monotonic() + 0.05):
                    syn, pkt = is_syn_to_vip(data)  # from the data plane, not the kernel's
                    if syn:
                        with lock:
                            seen.append((pkt[IP].src, pkt[TCP].sport))
        except OSError:  # the TAP went with its daemon
            pass
        finally:
            s.close()


def syn_round(client_mac, vmac, sources, sport):
    """In the client namespace: one SYN from each source to the VIP's virtual MAC; returns
    {source: set of MACs that answered} once every source was answered or the timeout."""
    answers = {src: set() for src in sources}
    s = labfarm.packet_socket(labfarm.CLIENT_IF)
    try:
        def read(until, to_the_last=False):
            for data in labfarm.received(s, until):
                pkt = Ether(data)
                if IP not in pkt or TCP not in pkt or pkt[IP].src != labfarm.VIP4 or \
                        pkt[TCP].sport != 80 or pkt[TCP].dport != sport or \
                        pkt[IP].dst not in answers:
                    continue
                answers[pkt[IP].dst].add(pkt[Ether].src.lower())
                if to_the_last and all(answers.values()):
                    return

        for src in sources:
            s.send(bytes(Ether(src=client_mac, dst=vmac) / IP(src=src, dst=labfarm.VIP4) /
                         TCP(sport=sport, dport=80, flags="S", seq=1000)))
            read(time.monotonic() + 0.002)  # a client's pace, answers read meanwhile
        read(time.monotonic() + ANSWER_TIMEOUT, to_the_last=True)
        return answers
    finally:
        s.close()


class Taps:
    """A watcher on every node's TAP for the life of the test."""

    def __init__(self, f):
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.seen = {k: [] for k in f.all_nodes()}
        self.threads = []
        for k in f.all_nodes():
            ready = threading.Event()
            t = labfarm.InNetns(f.node_ns[k], watch_tap, ready, self.stop, self.seen[k], self.lock)
            t.start()
            self.threads.append(t)
            assert ready.wait(5), f"no watcher on node {k}'s TAP"

    def take(self, sport):
        """{node: [sources]} of the SYNs with this source port seen so far."""
        with self.lock:
            return {k: [src for src, p in v if p == sport] for k, v in self.seen.items()}

    def close(self):
        self.stop.set()
        for t in self.threads:
            t.result(5)


def check_round(f, taps, name, sport, answers, view):
    """Each SYN in at most one TAP and answered by at most one node; with a view (a settled
    farm), in exactly one, the node `vipfarmctl owner` predicts (while a view changes a
    departing node's buckets may go unanswered for a moment: a hole, not a leak). Returns a
    one-line summary."""
    node_of_mac = {labfarm.node_mac(k): k for k in f.all_nodes()}
    deadline = time.monotonic() + 2  # the TAP watchers read what is already written
    while True:
        tapped = taps.take(sport)
        total = sum(len(v) for v in tapped.values())
        if total >= len(answers) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    where = {}
    for k, sources in tapped.items():
        for src in sources:
            where.setdefault(src, []).append(k)
    leaks = {src: ks for src, ks in where.items() if len(ks) > 1}
    missing = [src for src in answers if src not in where]
    unanswered = [src for src, macs in answers.items() if not macs]
    doubles = {src: sorted(macs) for src, macs in answers.items() if len(macs) > 1}
    foreign = {src: macs for src, macs in answers.items()
               if any(m not in node_of_mac for m in macs)}
    wrong_tap, wrong_answer = [], []
    if view is not None:
        for src in answers:
            want = f.owner(src, sport, view=view)
            if where.get(src, [want]) != [want]:
                wrong_tap.append((src, want, where.get(src)))
            if answers[src] and answers[src] != {labfarm.node_mac(want)}:
                wrong_answer.append((src, want, sorted(answers[src])))
    per_node = {k: len(v) for k, v in tapped.items()}
    summary = (f"{name}: {len(answers)} SYNs, into the TAPs {per_node}, {len(leaks)} in two "
               f"TAPs, {len(doubles)} answered by two nodes, {len(wrong_tap)} in another "
               f"TAP than the owner's, {len(unanswered)} unanswered")
    labfarm.SUMMARY.append("no leaks: " + summary)
    assert not leaks, f"{summary}: SYNs handed to two nodes' kernels: {list(leaks.items())[:5]}"
    assert not doubles, f"{summary}: SYNs answered by two nodes: {list(doubles.items())[:5]}"
    assert not foreign, f"{summary}: answers from a MAC of no node: {list(foreign.items())[:5]}"
    assert not wrong_tap, f"{summary}: SYNs in another TAP than the owner's: {wrong_tap[:5]}"
    assert not wrong_answer, f"{summary}: answered by another node than the owner: " \
                             f"{wrong_answer[:5]}"
    if view is not None:
        assert not missing and not unanswered, \
            f"{summary}: not in a TAP {missing[:5]}, unanswered {unanswered[:5]}"
    return summary


def test_no_frame_of_a_lost_bucket_reaches_the_kernel(farm):
    f = farm(3)
    sources = f.add_client_addrs(KEYS)
    vmac = f.vip_mac()
    client_mac = labfarm.link_mac(f.client_ns, labfarm.CLIENT_IF)
    taps = Taps(f)
    try:
        sport = [40000]

        def one_round(name, view):
            sport[0] += 1
            answers = labfarm.in_netns(f.client_ns, syn_round, client_mac, vmac, sources,
                                       sport[0])
            return check_round(f, taps, name, sport[0], answers, view)

        def rounds_while(name, settled, view):
            """Rounds (each checked for one TAP and one answer per SYN) until settled()."""
            deadline = time.monotonic() + 20
            n = 0
            while True:
                one_round(f"{name}, round {n + 1} while the view changes", None)
                n += 1
                if settled() or time.monotonic() > deadline:
                    break
            assert settled(), f"{name}: the farm did not settle on {view} within 20 s"
            return n

        one_round("view {1,2,3}", [1, 2, 3])
        f.signal_daemon(3, 15)
        rounds_while("node 3 leaves", lambda: f.one_view([1, 2]), [1, 2])
        one_round("view {1,2} after node 3 left", [1, 2])
        f.start_daemon(3)

        def handed_back():
            if not f.one_view([1, 2, 3]):
                return False
            # Every handoff over: no node still takes or releases a bucket.
            for k in f.all_nodes():
                samples = f.metrics(k)
                if labfarm.metric(samples, "vipfarm_handoff_taking_buckets") != 0 or \
                        labfarm.metric(samples, "vipfarm_handoff_releasing_buckets") != 0:
                    return False
            return True

        rounds_while("node 3 returns", handed_back, [1, 2, 3])
        one_round("view {1,2,3} after node 3 returned", [1, 2, 3])
    finally:
        taps.close()
