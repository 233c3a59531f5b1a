#!/usr/bin/env bash
# shellcheck disable=SC2317 # at_exit runs from the lab's trap
# Lab test 8 of issue 3: UDP datagrams larger than the MTU (so IPv4 fragments) to a UDP
# echo service on the VIP. Every datagram is answered once, by the node `vipfarmctl owner`
# predicts (fragments of one datagram all land on its owner, I4).
# This farm's uplinks use net_pcap: DPDK's net_af_packet joins a PACKET_FANOUT group with
# the defragment flag, so the kernel would reassemble the fragments before the data plane
# saw them (a real NIC delivers them as they come).
# Ends with "lab-udp: N passed, M failed". Needs root.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=/usr/bin/python3
work=$(mktemp -d)
$py - "$here/../../conf/lab.toml" "$work/udp.toml" <<'PY'
import sys
text = open(sys.argv[1]).read()
rule = '\n[[group.rule]]\nproto = "udp"\nports = 7\nkey = "on_addr"\n'
anchor = 'key = "on_addr"\n'
assert anchor in text
text = text.replace(anchor, anchor + rule, 1)
text = text.replace("net_af_packet0,iface=uplink", "net_pcap0,iface=uplink")
open(sys.argv[2], "w").write(text)
PY
export LAB_CONFIG=$work/udp.toml
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

# shellcheck source=../lib/check.sh
source "$here/../lib/check.sh"
summary() { echo "lab-udp: $passed passed, $failed failed"; }
at_exit() {
  failed=$((failed + 1))
  echo "FAIL: the test stopped early (status $1)" >&2
  summary
  rm -rf "$work"
}
LAB_AT_EXIT=at_exit

cat >"$work/echo.py" <<'PY'
# A UDP echo service: answers every datagram with "<node> <bytes received>".
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 7))
while True:
    data, peer = s.recvfrom(65535)
    s.sendto(f"{sys.argv[1]} {len(data)}".encode(), peer)
PY

lab_up 3
lab_start_daemons
lab_wait_ready
conf=$(lab_node_config 1)
"$VIPFARMCTL" check-config "$conf" | grep -q 'proto=udp ports=7' ||
  { echo "FAIL: the lab config lacks the UDP rule" >&2; exit 1; }
for k in 1 2 3; do lab_spawn "${LAB_NODE_NS[k]}" "$work/echo$k.log" $py "$work/echo.py" "node$k"; done
mapfile -t sources < <(lab_client_addrs 60)
: >"$work/expect"
for addr in "${sources[@]}"; do
  echo "$addr $("$VIPFARMCTL" owner --config "$conf" --json udp "$addr:5000" "$LAB_VIP4:7" |
    $py -c 'import json,sys; print(json.load(sys.stdin)["owner"])')" >>"$work/expect"
done
check "60 fragmented datagrams each answered once by the predicted node" \
  lab_exec_client $py - "$work/expect" "$LAB_VIP4" <<'PY'
import socket, sys, time
expect = [line.split() for line in open(sys.argv[1])]
vip = sys.argv[2]
payload = b"x" * 3000  # two fragments at a 1500-byte MTU
bad = []
deadline = time.monotonic() + 30  # the service may still be starting
for addr, owner in expect:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, 0))
    s.settimeout(1.0)
    answers = []
    while not answers and time.monotonic() < deadline:
        s.sendto(payload, (vip, 7))
        try:
            while True:
                answers.append(s.recv(100).decode())
                s.settimeout(0.2)  # a second answer would come right after the first
        except socket.timeout:
            pass
    if answers != [f"node{owner} 3000"]:
        bad.append((addr, owner, answers))
for b in bad[:5]:
    print("mismatch:", b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
frags=$(lab_exec_node 1 curl -s http://127.0.0.1:9469/metrics | awk '/^vipfarm_rx_packets_total/ {print $2}')
check "node 1 received the traffic ($frags frames)" test "${frags%.*}" -gt 60

lab_stop_daemons
LAB_AT_EXIT=""
rm -rf "$work"
summary
((failed == 0))
