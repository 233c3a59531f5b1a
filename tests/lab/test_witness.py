"""Issue 15: majority mode's authenticated witness (membership.witness_port).

Four nodes in majority mode, `vipfarmd --witness` in the client namespace. The halves
{1,2} | {3,4} are cut at the switch and the witness's UDP port is dropped for nodes 3 and 4,
whose pings to the client still get echo replies: with witness_port set those replies
count for nothing (anyone on the path could forge them), so {1,2} serve everything and
{3,4} nothing.
"""
import os
import re
import signal
import time

import labfarm

WITNESS_PORT = 9471


def test_witness_only_an_authentic_answer_counts(farm):
    f = farm(4, "majority", membership__witness=labfarm.CLIENT4,
             membership__witness_port=WITNESS_PORT)
    log = os.path.join(f.dir, "witness.log")
    # The witness reads only cluster.name and the keys: any node's config will do.
    witness = f.spawn(f.client_ns, log, f.vipfarmd, "--witness",
                      f"{labfarm.CLIENT4}:{WITNESS_PORT}", "--config", f.node_conf[1])
    time.sleep(1.5)  # three probe periods: every node has had an authentic answer
    assert witness.poll() is None, open(log).read()
    # Nodes 3 and 4 lose the authenticated witness; ICMP to it still works for them.
    for k in (3, 4):
        f.in_node(k, "nft", "-f", "-", input=(
            "table inet vfwitness {\n"
            "  chain out { type filter hook output priority 0; "
            f"ip daddr {labfarm.CLIENT4} udp dport {WITNESS_PORT} drop; }}\n}}\n"))
        assert " 0% packet loss" in f.in_node(k, "ping", "-c", "1", "-W", "1", labfarm.CLIENT4)
    time.sleep(1.5)  # > 2 misses
    assert f.one_view([1, 2, 3, 4]), f.views()  # the farm is whole: nothing changes yet
    ports = lambda ks: ", ".join(f'"{f.node_veth[k]}"' for k in ks)
    f.nft_switch("table bridge vfwitcut {\n  chain forward { type filter hook forward priority 0;\n"
                 f"    iifname {{ {ports((1, 2))} }} oifname {{ {ports((3, 4))} }} drop\n"
                 f"    iifname {{ {ports((3, 4))} }} oifname {{ {ports((1, 2))} }} drop\n  }}\n}}\n")

    def members(k):
        v = f.view(k)
        return None if v is None else v["members"]

    def settled():
        return all(members(k) == [1, 2] for k in (1, 2)) and \
            all(members(k) == [] for k in (3, 4))
    assert labfarm.wait_for(settled, 10), f.views()
    time.sleep(1)  # and it stays so
    assert settled(), f.views()

    witness.send_signal(signal.SIGTERM)
    witness.wait(timeout=5)
    counts = open(log).read()
    answered = re.search(r"answered (\d+)", counts)
    assert witness.returncode == 0 and answered and int(answered.group(1)) > 0, counts
