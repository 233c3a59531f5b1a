"""Issue 16, item 11: a directed-mode farm built the way the README tells a user to, with
nothing of the lab harness's own preparation: the veths and the bridge at their defaults
(kernel-chosen MACs, IPv6 left on the nodes' uplinks, the client's address through duplicate
address detection), a switch that floods no unknown unicast to the nodes, each node's TOML
written from the configuration reference. Every TCP SYN to each VIP, IPv4 and IPv6, sent to
each node's own MAC in turn (as a router or a client holding any node's MAC would), must be
answered by the node `vipfarmctl owner` predicts, from that node's MAC: the entry node
forwards what it does not own. Before the fix only the client's ND owner ever answered IPv6
(the TAP's link-local address failed duplicate address detection against the uplink's).

Frames are built and read with scapy in-process, on a packet socket opened in the client's
namespace (a thread that entered it).
"""
import os
import time

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

import labfarm

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PER_ENTRY = 90          # SYNs per entry node and address family
ANSWER_TIMEOUT = 5.0    # seconds for the last answer
SPACING = 0.002         # seconds between two SYNs


def readme_config(tmp_path):
    """conf/lab.toml with both VIPs directed and the web rule keyed on the client's port, so
    that one client's SYNs spread over every owner (configuration reference: vip[].l2_mode,
    group.rule[].key)."""
    text = open(os.path.join(ROOT, "conf", "lab.toml"), encoding="utf-8").read()
    for vip in (labfarm.VIP4, labfarm.VIP6):
        line = f'address = "{vip}"\n'
        assert text.count(line) == 1, f"conf/lab.toml: expected one {line!r}"
        text = text.replace(line, line + 'l2_mode = "directed"\n')
    assert text.count('key = "on_addr"') == 1
    text = text.replace('key = "on_addr"', 'key = "on_port"')
    path = tmp_path / "readme.toml"
    path.write_text(text)
    return str(path)


def syn_round(client_mac, entries, v6, base_port):
    """PER_ENTRY SYNs to the VIP (v6 or not) sent to each entry MAC; returns
    {sport: (entry MAC, MAC of the answer or None)}."""
    vip = labfarm.VIP6 if v6 else labfarm.VIP4
    client = labfarm.CLIENT6 if v6 else labfarm.CLIENT4
    s = labfarm.packet_socket(labfarm.CLIENT_IF)
    try:
        sent = {}
        waiting = 0

        def read(until, to_the_last=False):
            # Every frame the socket sees (the SYNs and the client kernel's resets too), so
            # read while sending: a full receive buffer would drop answers.
            nonlocal waiting
            for data in labfarm.received(s, until):
                pkt = Ether(data)
                if TCP not in pkt or pkt[TCP].sport != 80 or pkt[TCP].dport not in sent:
                    continue
                l3 = pkt[IPv6] if v6 else pkt[IP]
                if l3.src != vip:
                    continue
                entry, got = sent[pkt[TCP].dport]
                if got is None:
                    sent[pkt[TCP].dport] = (entry, pkt[Ether].src.lower())
                    waiting -= 1
                    if to_the_last and not waiting:
                        return

        port = base_port
        for mac in entries:
            for _ in range(PER_ENTRY):
                l3 = IPv6(src=client, dst=vip) if v6 else IP(src=client, dst=vip)
                frame = Ether(src=client_mac, dst=mac) / l3 / TCP(sport=port, dport=80,
                                                                  flags="S", seq=1000)
                sent[port] = (mac, None)
                waiting += 1
                s.send(bytes(frame))
                read(time.monotonic() + SPACING)  # a client's pace, not a burst of 270
                port += 1
        read(time.monotonic() + ANSWER_TIMEOUT, to_the_last=True)
        return sent
    finally:
        s.close()


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_directed_farm_from_the_readme_alone(farm, tmp_path, v6):
    f = farm(3, config=readme_config(tmp_path), plain=True, flood=False)
    node_of_mac = {mac: k for k, mac in f.macs.items()}
    assert len(node_of_mac) == 3, f"the nodes' kernel-chosen MACs collide: {f.macs}"
    client_mac = labfarm.link_mac(f.client_ns, labfarm.CLIENT_IF)
    base = 20000 if not v6 else 30000
    sent = labfarm.in_netns(f.client_ns,
                    lambda: syn_round(client_mac, [f.macs[k] for k in f.all_nodes()], v6, base))
    client = labfarm.CLIENT6 if v6 else labfarm.CLIENT4
    vip = labfarm.VIP6 if v6 else labfarm.VIP4
    missing, wrong, answered = {}, [], {}
    for sport, (entry, got) in sorted(sent.items()):
        k_entry = node_of_mac[entry]
        if got is None:
            missing[k_entry] = missing.get(k_entry, 0) + 1
            continue
        want = f.owner(client, sport, vip=vip)
        answered.setdefault(k_entry, {}).setdefault(node_of_mac.get(got, got), 0)
        answered[k_entry][node_of_mac.get(got, got)] += 1
        if f.macs.get(want) != got:
            wrong.append((sport, k_entry, want, node_of_mac.get(got, got)))
    summary = ", ".join(f"via node {k}: {sum(answered.get(k, {}).values())}/{PER_ENTRY} "
                        f"answered by {answered.get(k, {})}" for k in f.all_nodes())
    labfarm.SUMMARY.append(f"README-only directed farm, {'IPv6' if v6 else 'IPv4'}: {summary}")
    assert not missing, f"SYNs unanswered, by entry node: {missing} ({summary})"
    assert not wrong, f"answered by another node than predicted (sport, entry, want, got): " \
                      f"{wrong[:10]} ({summary})"
    owners = {node_of_mac[got] for _, got in sent.values()}
    assert owners == set(f.all_nodes()), f"the SYNs reached only owners {owners}"
    # The ordinary path too: the client's kernel resolves the VIP (to one node's own MAC)
    # and connects; nginx on the owner answers.
    target = f"[{vip}]" if v6 else vip
    for i in range(5):
        body = f.in_client("curl", "-s", "--max-time", "3", f"http://{target}/", timeout=10)
        assert body.strip(), f"request {i} to {target} got no answer"
