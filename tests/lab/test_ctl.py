"""Issue 16: every vipfarmctl command, in its table form and its --json form, against a live
3-node farm whose config has a flood, a directed and a gateway VIP: each exits with its
documented status, prints what it should, and none ends by an uncaught exception (an abort
exits 134; a signal, 128 and more).
"""
import json
import os
import subprocess

import pytest

import labfarm

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# conf/lab.toml plus a directed VIP and a gateway VIP (the lab's own rules take them).
EXTRA_VIPS = """
[[vip]]
address = "10.77.0.101"
l2_mode = "directed"

[[vip]]
address = "10.77.0.254"
gateway = true
"""


@pytest.fixture
def ctl_farm(farm, tmp_path):
    config = tmp_path / "lab-ctl.toml"
    config.write_text(open(os.path.join(ROOT, "conf", "lab.toml")).read() + EXTRA_VIPS)
    return farm(3, config=str(config))


def run(f, *args, ns=None, timeout=15):
    cmd = [f.vipfarmctl, *args]
    if ns is not None:
        cmd = ["ip", "netns", "exec", ns, *cmd]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert p.returncode < 128 and p.returncode != 134, \
        f"{' '.join(args)}: killed or aborted ({p.returncode}): {p.stderr[-2000:]}"
    assert "terminate called" not in p.stderr, f"{' '.join(args)}: {p.stderr[-2000:]}"
    return p


def both_forms(f, *args, status=0, ns=None, lines=False):
    """The command in table form and in --json form: both exit `status`; the table is
    non-empty text, the JSON one non-empty object or array (lines: one object a line).
    Returns (table text, parsed JSON)."""
    table = run(f, *args, ns=ns)
    assert table.returncode == status, \
        f"{' '.join(args)}: exit {table.returncode}, want {status}: {table.stderr[-2000:]}"
    assert table.stdout.strip(), f"{' '.join(args)}: no output"
    js = run(f, *args, "--json", ns=ns)
    assert js.returncode == status, \
        f"{' '.join(args)} --json: exit {js.returncode}, want {status}: {js.stderr[-2000:]}"
    try:
        if lines:
            parsed = [json.loads(line) for line in js.stdout.splitlines()]
            assert parsed and all(isinstance(p, dict) for p in parsed), parsed
            return table.stdout, parsed
        parsed = json.loads(js.stdout)
    except ValueError as e:
        raise AssertionError(f"{' '.join(args)} --json: not JSON ({e}): {js.stdout[:500]}")
    assert isinstance(parsed, (dict, list)) and parsed, f"{' '.join(args)} --json: {parsed!r}"
    return table.stdout, parsed


def test_every_command_in_both_forms(ctl_farm):
    f = ctl_farm
    sock = ["--socket", f.api_socket(1)]
    # Some traffic to the directed VIP first (its ARP owner answers, the bucket's owner
    # serves: frames may be forwarded, counted per peer in an object).
    for _ in range(3):
        f.in_client("curl", "-s", "-m", "2", "-o", "/dev/null", "http://10.77.0.101/",
                    check=False)

    text, js = both_forms(f, "status", *sock)
    assert js["ok"] and js["node"] == 1, js
    assert "epoch" in text or "view" in text, text
    text, js = both_forms(f, "counters", *sock)
    assert isinstance(js["directed"]["forwarded"], dict), js["directed"]
    assert "directed.forward_refused" in text, text
    for peer, count in js["directed"]["forwarded"].items():
        assert f"directed.forwarded.{peer}  {count}" in text, text
    for line in text.splitlines():
        assert len(line.split()) == 2, f"counters line not 'name value': {line!r}"
    text, js = both_forms(f, "nodes", *sock)
    assert [n["id"] for n in js["nodes"]] == [1, 2, 3], js
    text, js = both_forms(f, "view", *sock)
    assert js["members"] == [1, 2, 3], js
    text, js = both_forms(f, "history", *sock)
    assert js["history"] and js["history"][-1]["members"] == [1, 2, 3], js
    both_forms(f, "state", *sock, status=2)  # UP
    text, js = both_forms(f, "buckets", *sock)
    both_forms(f, "reload", *sock)
    # Planned changes, each undone: stop/start, drain/resume.
    both_forms(f, "stop", *sock)
    both_forms(f, "state", *sock, status=0)  # STOP
    both_forms(f, "start", *sock)
    assert labfarm.wait_for(lambda: (f.ctl(1, "state") or {}).get("state") == "UP", 5)
    both_forms(f, "drain", "--timeout", "1", *sock)
    both_forms(f, "resume", *sock)
    # view set exists only without [membership]: refused with a message, exit 1.
    for extra in ([], ["--json"]):
        p = run(f, "view", "set", "1,2", *sock, *extra)
        assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
        assert "membership" in (p.stdout + p.stderr), (p.stdout, p.stderr)

    # Offline tools, on the same config.
    conf = f.node_conf[1]
    text, js = both_forms(f, "check-config", conf)
    text, js = both_forms(f, "owner", "--config", conf, "tcp", "10.77.1.7:40000",
                          "10.77.0.100:80")
    assert js.get("owner") in (1, 2, 3), js
    text, js = both_forms(f, "owner", "--config", conf, "tcp", "10.77.1.7:40000",
                          "10.77.0.101:80")
    pcap = os.path.join(f.dir, "ctl.pcap")
    subprocess.run([labfarm.LAB_PY, "-c", (
        "import sys\n"
        "from scapy.all import Ether, IP, TCP, ARP, wrpcap\n"
        "wrpcap(sys.argv[1], [Ether(dst='5a:fe:0a:4d:00:64')/IP(src='10.77.1.%d' % i, "
        "dst='10.77.0.100')/TCP(sport=40000, dport=80, flags='S') for i in range(1, 9)] + "
        "[Ether(dst='ff:ff:ff:ff:ff:ff')/ARP(pdst='10.77.0.101', psrc='10.77.1.9')])\n"), pcap],
        check=True, capture_output=True, timeout=60)
    text, js = both_forms(f, "owner", "--config", conf, "--pcap", pcap, lines=True)
    assert [r["verdict"] for r in js] == ["farm"] * 8 + ["arp_vip"], js
    text, js = both_forms(f, "buckets", "--config", conf, "--view", "1,2,3", "--from-view", "1,2")
    assert js[0]["moved"] > 0 and sum(o["owned"] for o in js[0]["owners"]) == 256, js
    p = run(f, "config-reference")
    assert p.returncode == 0 and "| `metrics.listen` |" in p.stdout, p.stdout[:500]
    safekit = os.path.join(ROOT, "tests", "fixtures", "safekit", "web_farm.xml")
    cluster = os.path.join(ROOT, "tests", "fixtures", "safekit", "cluster_three_nodes.xml")
    p = run(f, "import-safekit", safekit, "--cluster", cluster, "--node", "node1")
    assert p.returncode == 0 and "[[vip]]" in p.stdout, (p.returncode, p.stderr[-1000:])
    # top reads every node's /metrics (each node's own address): from the client's side.
    text, js = both_forms(f, "top", "--config", conf, "--count", "1", ns=f.client_ns)
    assert [n["id"] for n in js["nodes"]] == [1, 2, 3] and all(n["ok"] for n in js["nodes"]), js
    p = run(f, "--version")
    assert p.returncode == 0 and p.stdout.startswith("vipfarmctl "), p.stdout
