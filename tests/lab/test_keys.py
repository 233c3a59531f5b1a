"""Lab tests 2, 4 and 7 of issue 3: weights 1:2:3 and the on_port key, on a 3-node farm whose
group has members of weights 1, 2 and 3 and whose rule is keyed on the client's port.

  - each node owns exactly the buckets issue 2's allocation gives it (`vipfarmctl buckets`);
  - connections from ONE client address with distinct source ports (300 over IPv4, 120 over
    IPv6 to the IPv6 VIP) are each served by the node `vipfarmctl owner` predicts for that
    port, every node takes some, and node 3 more than node 1.

The connections are made in-process (http.client) from a thread in the client's namespace.
"""
import http.client
import json
import os

import pytest

import labfarm

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WEIGHTS = {1: 1, 2: 2, 3: 3}
CONNECT_TIMEOUT = 2.0   # seconds for one connection, as the bash test's curl --max-time
WARM_UP_S = 30          # until a first request is answered


def keys_config(tmp_path):
    """conf/lab.toml with the group's members weighted 1:2:3 and its rule keyed on_port."""
    text = open(os.path.join(ROOT, "conf", "lab.toml"), encoding="utf-8").read()
    assert text.count('key = "on_addr"') == 1, "conf/lab.toml: expected one on_addr rule"
    text = text.replace('key = "on_addr"', 'key = "on_port"')
    head = '[[group]]\nname = "web"\n'
    assert text.count(head) == 1, f"conf/lab.toml: expected one {head!r}"
    members = "".join(f"\n[[group.member]]\nnode = {k}\nweight = {w}\n"
                      for k, w in WEIGHTS.items())
    text = text.replace(head, head + members)
    path = tmp_path / "keys.toml"
    path.write_text(text)
    return str(path)


def keys_farm(farm, tmp_path):
    f = farm(3, config=keys_config(tmp_path))
    out = labfarm.run(f.vipfarmctl, "check-config", f.node_conf[1])
    assert "1(w1,p0) 2(w2,p0) 3(w3,p0)" in out, f"the lab config lacks weights 1:2:3:\n{out}"
    return f


def get(vip, source, port):
    """The body of GET http://vip/ from source:port (port 0: any), or what went wrong."""
    c = http.client.HTTPConnection(vip, 80, timeout=CONNECT_TIMEOUT, source_address=(source, port))
    try:
        c.request("GET", "/", headers={"Connection": "close"})
        return c.getresponse().read().decode(errors="replace").strip()
    except (OSError, http.client.HTTPException) as e:
        return f"error: {e!r}"
    finally:
        c.close()


def test_nodes_own_their_weighted_share(farm, tmp_path):
    f = keys_farm(farm, tmp_path)
    assert f.wait_one_view(20, [1, 2, 3]) is not None, \
        f"the farm does not agree on the view 1,2,3: {f.views()}"
    allocation = json.loads(labfarm.run(f.vipfarmctl, "buckets", "--config", f.node_conf[1],
                                         "--json"))[0]
    want = {o["node"]: o["owned"] for o in allocation["owners"]}
    status = {k: f.ctl(k, "status") for k in f.all_nodes()}
    got = {k: s["groups"][0]["owned"] if s else None for k, s in status.items()}
    for k in f.all_nodes():
        assert got[k] == want[k], \
            f"node {k} owns {got[k]} buckets, the allocation gives it {want[k]} " \
            f"(owned: {got}, allocation: {want})"


@pytest.mark.parametrize("v6, count, first", [(False, 300, 20000), (True, 120, 30000)],
                         ids=["ipv4", "ipv6"])
def test_one_client_spreads_by_port(farm, tmp_path, v6, count, first):
    """count connections from one client address, source ports first, first+7, ...: each
    served by the node `vipfarmctl owner` predicts for its port."""
    f = keys_farm(farm, tmp_path)
    client = labfarm.CLIENT6 if v6 else labfarm.CLIENT4
    vip = labfarm.VIP6 if v6 else labfarm.VIP4
    label = "IPv6" if v6 else "IPv4"
    ports = [first + i * 7 for i in range(count)]
    want = {port: f"node{f.owner(client, port, vip=vip)}" for port in ports}

    def spread():
        if not labfarm.wait_for(lambda: not get(vip, client, 0).startswith("error:"),
                                WARM_UP_S, 0.2):
            return None
        return {port: get(vip, client, port) for port in ports}
    served = labfarm.in_netns(f.client_ns, spread)
    assert served is not None, f"{label}: no answer from {vip} within {WARM_UP_S} s"

    mismatches = [(port, want[port], body) for port, body in served.items() if body != want[port]]
    tally = {k: sum(body == f"node{k}" for body in served.values()) for k in f.all_nodes()}
    shares = ", ".join(f"node{k} {n}" for k, n in tally.items())
    labfarm.SUMMARY.append(f"keys {label}: one client, {count} ports: {shares}")
    assert not mismatches, \
        f"{label}: {len(mismatches)} connections not served by the predicted node " \
        f"(port, expected, got): {mismatches[:5]} ({shares})"
    for k in f.all_nodes():
        assert tally[k] > 0, f"{label}: node {k} served none of one client's connections ({shares})"
    assert tally[3] > tally[1], f"{label}: shares do not follow the weights 1:2:3 ({shares})"
