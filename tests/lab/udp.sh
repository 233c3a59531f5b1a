#!/usr/bin/env bash
# shellcheck disable=SC2317 # at_exit runs from the lab's trap
# Lab test 8 of issue 3: UDP datagrams larger than the MTU (so IPv4 fragments) to a UDP
# echo service on the VIP. Every datagram is answered once, by the node `vipfarmctl owner`
# predicts (fragments of one datagram all land on its owner, I4). The same over the IPv6
# VIP (test 7): IPv6 fragments made by the client's kernel, each node's kernel receiving
# exactly the fragments of the datagrams it owns (/proc/net/snmp6 in each namespace).
# The farm runs on the lab's default uplink, net_af_xdp, which delivers fragments as they
# come, as a real NIC does (DPDK's net_af_packet joins a PACKET_FANOUT group with the
# defragment flag: the IPv4 fragments would reach the data plane reassembled and cut).
# Ends with "lab-udp: N passed, M failed". Needs root.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=/usr/bin/python3
work=$(mktemp -d)
$py - "$here/../../conf/lab.toml" "$work/udp.toml" <<'PY'
import sys
text = open(sys.argv[1]).read()
rule = '\n[[group.rule]]\nproto = "udp"\nports = 7\nkey = "on_addr"\n'
# The lab's default uplink, which delivers fragments as they come (README, "Running
# vipfarmd"): the fragment cases run on what every other lab test runs on.
assert 'uplink = "net_af_xdp0,iface=uplink,busy_budget=0"' in text
anchor = 'key = "on_addr"\n'
assert anchor in text
text = text.replace(anchor, anchor + rule, 1)
# No nginx here: the node is healthy while its UDP echo service listens (a custom checker).
checker = 'kind = "tcp"\ntarget = "127.0.0.1:80"'
assert checker in text
text = text.replace(checker, 'kind = "custom"\ntarget = "ss -Hlun \'sport = :7\' | grep -q ."')
open(sys.argv[2], "w").write(text)
PY
export LAB_CONFIG=$work/udp.toml
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

CHECK_NAME=lab-udp
# shellcheck source=../lib/check.sh
source "$here/../lib/check.sh"
at_exit() {
  stopped_early "$1"
  rm -rf "$work"
}
LAB_AT_EXIT=at_exit

cat >"$work/echo.py" <<'PY'
# A UDP echo service on IPv4 and IPv6: answers every datagram with "<node> <bytes received>".
import select, socket, sys
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)]
socks[1].setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
socks[0].bind(("0.0.0.0", 7))
socks[1].bind(("::", 7))
while True:
    for s in select.select(socks, [], [])[0]:
        data, peer = s.recvfrom(65535)
        s.sendto(f"{sys.argv[1]} {len(data)}".encode(), peer)
PY
# The client: one 3000-byte datagram from each source of FILE ("ADDRESS OWNER" lines) to
# VIP port 7, all sent at once and resent after 1 s until answered (the service may still
# be starting); succeeds when each source got exactly one answer, "node<OWNER> 3000" (a
# second one would come right after the first: 0.5 s are left for it). Prints how many
# datagrams it sent to each owner ("1 N1", "2 N2", ...).
cat >"$work/client.py" <<'PY'
import collections, select, socket, sys, time
expect = [line.split() for line in open(sys.argv[1])]
vip = sys.argv[2]
family = socket.AF_INET6 if ":" in vip else socket.AF_INET
payload = b"x" * 3000  # fragments at a 1500-byte MTU
socks = {}
for addr, owner in expect:
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((addr, 0))
    s.setblocking(False)
    socks[s] = (addr, owner)
answers = {s: [] for s in socks}
sent = collections.Counter()

def drain(seconds, until_all):
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if until_all and all(answers.values()):
            return
        for s in select.select(list(socks), [], [], left)[0]:
            answers[s].append(s.recv(100).decode())

deadline = time.monotonic() + 30
while not all(answers.values()) and time.monotonic() < deadline:
    for s, (addr, owner) in socks.items():
        if not answers[s]:
            s.sendto(payload, (vip, 7))
            sent[owner] += 1
            time.sleep(0.002)
    drain(1.0, True)
drain(0.5, False)
bad = [(addr, owner, answers[s]) for s, (addr, owner) in socks.items() if answers[s] != [f"node{owner} 3000"]]
for b in bad[:5]:
    print("mismatch:", b, file=sys.stderr)
for owner in sorted(sent):
    print(owner, sent[owner])
sys.exit(1 if bad else 0)
PY

lab_up 3
lab_start_daemons
lab_wait_ready
conf=$(lab_node_config 1)
"$VIPFARMCTL" check-config "$conf" | grep -q 'proto=udp ports=7' ||
  { echo "FAIL: the lab config lacks the UDP rule" >&2; exit 1; }
for k in 1 2 3; do lab_spawn "${LAB_NODE_NS[k]}" "$work/echo$k.log" $py "$work/echo.py" "node$k"; done
# The service listens on both families on every node before anything is sent.
both_families() { grep -q ' 0\.0\.0\.0:7 ' <<<"$1" && grep -q ' \[::\]:7 ' <<<"$1"; }  # in `ss -ln` lines
deadline=$((SECONDS + 10))
for k in 1 2 3; do
  until ss=$(lab_exec_node "$k" ss -Hlun 'sport = :7'); both_families "$ss" || ((SECONDS > deadline)); do sleep 0.1; done
  check "node $k: the echo service listens on 0.0.0.0:7 and [::]:7" both_families "$ss"
done
check "the farm agrees on the view 1,2,3 (each node's custom checker sees its service)" \
  lab_wait_view 1,2,3 20
mapfile -t sources < <(lab_client_addrs 60)
: >"$work/expect"
for addr in "${sources[@]}"; do
  echo "$addr $("$VIPFARMCTL" owner --config "$conf" --json udp "$addr:5000" "$LAB_VIP4:7" |
    $py -c 'import json,sys; print(json.load(sys.stdin)["owner"])')" >>"$work/expect"
done
check "60 fragmented datagrams each answered once by the predicted node" \
  lab_exec_client $py "$work/client.py" "$work/expect" "$LAB_VIP4" >/dev/null

# --- the same over IPv6 -------------------------------------------------------------------
mapfile -t sources6 < <(lab_client_addrs 60 6)
: >"$work/expect6"
for addr in "${sources6[@]}"; do
  echo "$addr $("$VIPFARMCTL" owner --config "$conf" --json udp "[$addr]:5000" "[$LAB_VIP6]:7" |
    $py -c 'import json,sys; print(json.load(sys.stdin)["owner"])')" >>"$work/expect6"
done
# The client's kernel holds only a few packets for a neighbour it is still resolving and
# drops the rest: resolve the VIP first (neighbour discovery, answered by the farm), so that
# every fragment counted below leaves the client.
vip6_resolved() {
  lab_exec_client ip -6 neigh show "$LAB_VIP6" dev "$LAB_CLIENT_IF" | grep -qE "REACHABLE|STALE|DELAY|PROBE"
}
lab_exec_client $py -c 'import socket, sys; socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).sendto(b"x", (sys.argv[1], 9))' "$LAB_VIP6"
check "IPv6: the client resolved the VIP's MAC before the burst" lab_wait_for 5 vip6_resolved
snmp6() {  # snmp6 NS COUNTER: the namespace's IPv6 counter
  ip netns exec "$1" awk -v c="$2" '$1 == c {print $2}' /proc/net/snmp6
}
frag0=$(snmp6 "$LAB_CLIENT_NS" Ip6FragCreates)
declare -A reqd0=() ok0=()
for k in 1 2 3; do
  reqd0[$k]=$(snmp6 "${LAB_NODE_NS[k]}" Ip6ReasmReqds)
  ok0[$k]=$(snmp6 "${LAB_NODE_NS[k]}" Ip6ReasmOKs)
done
check "IPv6: 60 fragmented datagrams each answered once by the predicted node" \
  lab_exec_client $py "$work/client.py" "$work/expect6" "$LAB_VIP6" >"$work/sent6"
declare -A sent6=()
while read -r k n; do sent6[$k]=$n; done <"$work/sent6"
frags6=$(($(snmp6 "$LAB_CLIENT_NS" Ip6FragCreates) - frag0))
total=$((${sent6[1]:-0} + ${sent6[2]:-0} + ${sent6[3]:-0}))
check "IPv6: the client's kernel fragmented the $total datagrams ($frags6 fragments)" \
  test "$total" -ge 60 -a "$frags6" -ge $((2 * total))
# Each node's kernel gets exactly the fragments of the datagrams it owns, whole: the
# fragments reach the TAP one by one (net_af_xdp), the kernel reassembles them. (The
# answers were checked, so they have all arrived.)
reqd_sum=0
for k in 1 2 3; do
  reqd=$(($(snmp6 "${LAB_NODE_NS[k]}" Ip6ReasmReqds) - reqd0[$k]))
  oks=$(($(snmp6 "${LAB_NODE_NS[k]}" Ip6ReasmOKs) - ok0[$k]))
  reqd_sum=$((reqd_sum + reqd))
  check "IPv6: node $k's kernel reassembled the ${sent6[$k]:-0} datagrams it owns ($oks, from $reqd fragments)" \
    test "${sent6[$k]:-0}" -gt 0 -a "$oks" -eq "${sent6[$k]:-0}"
done
check "IPv6: every fragment reached exactly one node (client $frags6, nodes $reqd_sum)" test "$reqd_sum" -eq "$frags6"
frags=$(lab_exec_node 1 curl -s http://10.77.0.1:9469/metrics | awk '/^vipfarm_rx_packets_total/ {print $2}')
check "node 1 received the traffic ($frags frames)" test "${frags%.*}" -gt 60

lab_stop_daemons
LAB_AT_EXIT=""
rm -rf "$work"
summary
((failed == 0))
