"""Lab test 8 of issue 3: UDP datagrams larger than the MTU (so IPv4 fragments) to a UDP echo
service on the VIP. Every datagram is answered once, by the node `vipfarmctl owner` predicts
(fragments of one datagram all land on its owner, I4). The same over the IPv6 VIP (test 7):
IPv6 fragments made by the client's kernel, each node's kernel receiving exactly the
fragments of the datagrams it owns (/proc/net/snmp6 in each namespace).

The farm runs on the lab's default uplink, net_af_xdp, which delivers fragments as they come,
as a real NIC does (DPDK's net_af_packet joins a PACKET_FANOUT group with the defragment
flag: the IPv4 fragments would reach the data plane reassembled and cut). No nginx: each node
is healthy while its echo service listens (a custom checker). The echo service is this file
run as a script in each node's namespace; the client runs in-process, from a thread in the
client's namespace.
"""
import collections
import json
import os
import select
import socket
import sys
import time

import pytest

import labfarm

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PORT = 7
SOURCES = 60
PAYLOAD = 3000          # bytes: fragments at a 1500-byte MTU
ANSWER_DEADLINE_S = 30  # for every source to be answered (the service may still be starting)
RESEND_S = 1.0          # an unanswered source sends again after this
DOUBLE_WINDOW_S = 0.5   # a second answer would come right after the first: watched this long
LISTEN_TIMEOUT_S = 10


def udp_config(tmp_path):
    """conf/lab.toml with a UDP rule for port 7 and a custom checker that holds a node healthy
    while its echo service listens."""
    text = open(os.path.join(ROOT, "conf", "lab.toml"), encoding="utf-8").read()
    # The lab's default uplink, which delivers fragments as they come (README, "Running
    # vipfarmd"): the fragment cases run on what every other lab test runs on.
    assert 'uplink = "net_af_xdp0,iface=uplink,busy_budget=0"' in text
    anchor = 'key = "on_addr"\n'
    assert anchor in text, f"conf/lab.toml: no {anchor!r}"
    text = text.replace(anchor, anchor + f'\n[[group.rule]]\nproto = "udp"\nports = {PORT}\n'
                        'key = "on_addr"\n', 1)
    checker = 'kind = "tcp"\ntarget = "127.0.0.1:80"'
    assert checker in text, f"conf/lab.toml: no {checker!r}"
    text = text.replace(checker, 'kind = "custom"\n'
                        f'target = "ss -Hlun \'sport = :{PORT}\' | grep -q ."')
    path = tmp_path / "udp.toml"
    path.write_text(text)
    return str(path)


def echo_main(name):
    """The UDP echo service on IPv4 and IPv6: answers every datagram with "<name> <bytes
    received>". Runs until killed (the farm's teardown, by PID)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
             socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)]
    socks[1].setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    socks[0].bind(("0.0.0.0", PORT))
    socks[1].bind(("::", PORT))
    while True:
        for s in select.select(socks, [], [])[0]:
            data, peer = s.recvfrom(65535)
            s.sendto(f"{name} {len(data)}".encode(), peer)


def exchange(expect, vip):
    """In the client's namespace: one PAYLOAD-byte datagram from each source of expect
    ([(address, owner)]) to vip:PORT, all sent at once and resent after RESEND_S until
    answered. Returns (bad, sent): the sources that did not get exactly one answer,
    "node<owner> PAYLOAD", as (address, owner, answers); how many datagrams went to each
    owner."""
    family = socket.AF_INET6 if ":" in vip else socket.AF_INET
    payload = b"x" * PAYLOAD
    socks = {}
    try:
        for addr, owner in expect:
            s = socket.socket(family, socket.SOCK_DGRAM)
            socks[s] = (addr, owner)
            s.bind((addr, 0))
            s.setblocking(False)
        answers = {s: [] for s in socks}
        sent = collections.Counter()

        def drain(seconds, until_all):
            end = time.monotonic() + seconds
            while (left := end - time.monotonic()) > 0:
                if until_all and all(answers.values()):
                    return
                for s in select.select(list(socks), [], [], left)[0]:
                    answers[s].append(s.recv(100).decode(errors="replace"))

        deadline = time.monotonic() + ANSWER_DEADLINE_S
        while not all(answers.values()) and time.monotonic() < deadline:
            for s, (addr, owner) in socks.items():
                if not answers[s]:
                    s.sendto(payload, (vip, PORT))
                    sent[owner] += 1
                    time.sleep(0.002)  # a client's pace, not one burst
            drain(RESEND_S, True)
        drain(DOUBLE_WINDOW_S, False)
        bad = [(addr, owner, answers[s]) for s, (addr, owner) in socks.items()
               if answers[s] != [f"node{owner} {PAYLOAD}"]]
        return bad, dict(sent)
    finally:
        for s in socks:
            s.close()


def predicted(f, sources, vip):
    return [(addr, f.owner(addr, 5000, vip=vip, proto="udp", dport=PORT)) for addr in sources]


def snmp6(f, ns):
    """The IPv6 counters of namespace ns (/proc/net/snmp6) as {name: int}."""
    return {name: int(value) for name, value in
            (line.split() for line in f.in_ns(ns, "cat", "/proc/net/snmp6").splitlines())}


@pytest.fixture
def udp_farm(farm, tmp_path):
    """A 3-node farm on the UDP config, an echo service on each node, the full view."""
    f = farm(3, config=udp_config(tmp_path), start=False)
    f.start_daemons()
    f.wait_ready()
    out = labfarm.run(f.vipfarmctl, "check-config", f.node_conf[1])
    assert f"proto=udp ports={PORT}" in out, f"the lab config lacks the UDP rule:\n{out}"
    for k in f.all_nodes():
        f.spawn(f.node_ns[k], os.path.join(f.dir, f"echo{k}.log"), labfarm.LAB_PY, "-B",
                os.path.abspath(__file__), "echo", f"node{k}")
    # The service listens on both families on every node before anything is sent.
    def both_families(k):
        out = f.in_node(k, "ss", "-Hlun", f"sport = :{PORT}", check=False)
        return f" 0.0.0.0:{PORT} " in out and f" [::]:{PORT} " in out
    end = time.monotonic() + LISTEN_TIMEOUT_S
    for k in f.all_nodes():
        assert labfarm.wait_for(lambda: both_families(k), max(0.0, end - time.monotonic()), 0.1), \
            f"node {k}: the echo service does not listen on 0.0.0.0:{PORT} and [::]:{PORT}"
    assert f.wait_one_view(20, [1, 2, 3]) is not None, \
        f"the farm does not agree on the view 1,2,3 (each node's custom checker sees its " \
        f"service): {f.views()}"
    return f


def assert_node1_received(f):
    samples = [v for (name, _), v in f.metrics(1).items() if name == "vipfarm_rx_packets_total"]
    assert len(samples) == 1 and samples[0] > SOURCES, \
        f"node 1 did not receive the traffic (vipfarm_rx_packets_total: {samples})"


def test_ipv4_fragmented_datagrams(udp_farm):
    f = udp_farm
    expect = predicted(f, f.add_client_addrs(SOURCES), labfarm.VIP4)
    bad, sent = labfarm.in_netns(f.client_ns, exchange, expect, labfarm.VIP4)
    assert not bad, f"{len(bad)} of {SOURCES} fragmented datagrams not answered once by the " \
                    f"predicted node (address, owner, answers): {bad[:5]} (sent: {sent})"
    assert_node1_received(f)


def test_ipv6_fragmented_datagrams(udp_farm):
    f = udp_farm
    expect = predicted(f, f.add_client_addrs(SOURCES, family=6), labfarm.VIP6)
    # The client's kernel holds only a few packets for a neighbour it is still resolving and
    # drops the rest: resolve the VIP first (neighbour discovery, answered by the farm), so
    # that every fragment counted below leaves the client.
    def send_one():
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.sendto(b"x", (labfarm.VIP6, 9))
    labfarm.in_netns(f.client_ns, send_one)

    def resolved():
        neigh = json.loads(labfarm.run("ip", "-n", f.client_ns, "-j", "-6", "neigh", "show",
                                       labfarm.VIP6, "dev", labfarm.CLIENT_IF) or "[]")
        return any({"REACHABLE", "STALE", "DELAY", "PROBE"} & set(n.get("state", []))
                   for n in neigh)
    assert labfarm.wait_for(resolved, 5), "IPv6: the client did not resolve the VIP's MAC"

    before = {ns: snmp6(f, ns) for ns in [f.client_ns, *f.node_ns.values()]}
    bad, sent = labfarm.in_netns(f.client_ns, exchange, expect, labfarm.VIP6)
    after = {ns: snmp6(f, ns) for ns in before}

    def delta(ns, name):
        return after[ns][name] - before[ns][name]
    assert not bad, f"IPv6: {len(bad)} of {SOURCES} fragmented datagrams not answered once by " \
                    f"the predicted node (address, owner, answers): {bad[:5]} (sent: {sent})"
    frags = delta(f.client_ns, "Ip6FragCreates")
    total = sum(sent.values())
    assert total >= SOURCES and frags >= 2 * total, \
        f"IPv6: the client's kernel did not fragment the {total} datagrams ({frags} fragments)"
    # Each node's kernel gets exactly the fragments of the datagrams it owns, whole: the
    # fragments reach the TAP one by one (net_af_xdp), the kernel reassembles them. (The
    # answers were checked, so they have all arrived.)
    reqds = {k: delta(f.node_ns[k], "Ip6ReasmReqds") for k in f.all_nodes()}
    for k in f.all_nodes():
        oks = delta(f.node_ns[k], "Ip6ReasmOKs")
        assert sent.get(k, 0) > 0 and oks == sent.get(k, 0), \
            f"IPv6: node {k}'s kernel did not reassemble the {sent.get(k, 0)} datagrams it " \
            f"owns ({oks}, from {reqds[k]} fragments)"
    assert sum(reqds.values()) == frags, \
        f"IPv6: not every fragment reached exactly one node (client {frags}, nodes {reqds})"
    assert_node1_received(f)


if __name__ == "__main__":
    if sys.argv[1:2] != ["echo"] or len(sys.argv) != 3:
        sys.exit("usage: test_udp.py echo NAME")
    echo_main(sys.argv[2])
