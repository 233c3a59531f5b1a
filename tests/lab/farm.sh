#!/usr/bin/env bash
# shellcheck disable=SC2317 # stopped_early runs from the lab's trap
# Lab tests of issue 3 beyond the smoke test, on one 3-node farm (tests/lab/lib.sh),
# over the IPv4 VIP and the IPv6 VIP alike (test 7):
#  - ICMP echo to the VIP gets exactly one reply per request (SafeKit gives one per node);
#  - a view change (node 2 stopped by the operator) moves exactly node 2's buckets
#    and its clients (IPv4, and the IPv6 sources node 2 served before) are served by the
#    predicted new owners; it is announced by a gratuitous ARP and an unsolicited NA that
#    carry the virtual MACs; every SYN of those connections gets exactly one SYN-ACK;
#  - an ICMP frag-needed / ICMPv6 packet-too-big quoting a flow reaches its owner only;
#  - malformed IPv4 and IPv6 frames from the client are counted as malformed (by reason),
#    the daemons keep serving;
#  - rx = the sum of the verdict counters on every node (scraped from /metrics);
#  - the client's neighbour entries for the VIPs are the virtual MACs after all of it, no
#    frame the client saw had a virtual MAC as Ethernet source, and the bridge's
#    forwarding database never held one.
# Ends with "lab-farm: N passed, M failed"; prints the lab's state on failure. Needs root.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

CHECK_NAME=lab-farm
# shellcheck source=../lib/check.sh
source "$here/../lib/check.sh"
LAB_AT_EXIT=stopped_early
py=/usr/bin/python3
json_field() { $py -c 'import json,sys; d=json.load(sys.stdin); print(eval("d"+sys.argv[1]))' "$1"; }

lab_up 3
lab_start_daemons
lab_wait_ready
lab_start_nginx
conf1=$(lab_node_config 1)
get() { lab_exec_client curl -sS -g --noproxy '*' --max-time 2 --interface "$1" "http://$LAB_VIP4/" 2>&1; }
get6() { lab_exec_client curl -sS -g --noproxy '*' --max-time 2 --interface "$1" "http://[$LAB_VIP6]/" 2>&1; }
owner() {  # owner CLIENT VIEW: the predicted node id
  "$VIPFARMCTL" owner --config "$conf1" --view "$2" --json tcp "$1:40000" "$LAB_VIP4:80" | json_field '["owner"]'
}
owner6() {  # owner6 CLIENT VIEW: the same for an IPv6 client of the IPv6 VIP (0: none)
  local json
  json=$("$VIPFARMCTL" owner --config "$conf1" --view "$2" --json tcp "[$1]:40000" "[$LAB_VIP6]:80")
  if [[ $json =~ \"verdict\":\"farm\" && $json =~ \"owner\":([0-9]+) ]]; then echo "${BASH_REMATCH[1]}"; else echo 0; fi
}
vmac4=$("$VIPFARMCTL" check-config "$conf1" | awk '$1 == "vip" && $2 == "'"$LAB_VIP4"'" {print tolower($4)}')
vmac6=$("$VIPFARMCTL" check-config "$conf1" | awk '$1 == "vip" && $2 == "'"$LAB_VIP6"'" {print tolower($4)}')
[[ $vmac4 =~ ^([0-9a-f]{2}:){5}[0-9a-f]{2}$ && $vmac6 =~ ^([0-9a-f]{2}:){5}[0-9a-f]{2}$ && $vmac4 != "$vmac6" ]] ||
  { echo "FAIL: no virtual MACs in check-config's output ('$vmac4', '$vmac6')" >&2; exit 1; }
# Every frame the client sees with a virtual MAC as Ethernet source, for the whole test
# (there must be none: the switch would learn the MAC and stop flooding it).
vmac_cap=$LAB_DIR/vmac-source.txt
lab_spawn "$LAB_CLIENT_NS" "$vmac_cap" timeout 300 tcpdump -lnnei "$LAB_CLIENT_IF" -c 100 \
  "ether src $vmac4 or ether src $vmac6"
vmac_pid=$LAB_LAST_PID
deadline=$((SECONDS + 10))
until grep -q "listening on" "$vmac_cap" 2>/dev/null || ((SECONDS > deadline)); do sleep 0.1; done

# Converged: a first request per node's probe answered (ARP resolved, daemons serving).
mapfile -t sources < <(lab_client_addrs 120)
deadline=$((SECONDS + 30))
until [[ $(get "${sources[0]}") == "node$(owner "${sources[0]}" 1,2,3)" ]] || ((SECONDS > deadline)); do
  sleep 0.2
done

# --- an idle farm costs little: under 5% of one core per node (adaptive polling) --------
cpu_ticks() {  # cpu_ticks PID: user + system ticks of all its threads
  cat /proc/"$1"/task/*/stat 2>/dev/null | awk '{s += $14 + $15} END {print s + 0}'
}
declare -a t0=()
for k in 1 2 3; do t0[k]=$(cpu_ticks "${LAB_DAEMON_PID[k]}"); done
start_ns=$(date +%s%N)
sleep 5  # the measurement window itself, not a wait for a condition
elapsed_ns=$(($(date +%s%N) - start_ns))
hz=$(getconf CLK_TCK)
for k in 1 2 3; do
  used=$(($(cpu_ticks "${LAB_DAEMON_PID[k]}") - t0[k]))
  pct=$((used * 100 * 1000000000 / hz / elapsed_ns))
  check "idle node $k uses under 5% of one core ($pct%)" test "$pct" -lt 5
done

# --- memory: each daemon's peak resident size with the lab's --no-huge -m 128 -----------
for k in 1 2 3; do
  hwm=$(awk '/^VmHWM:/ {print $2}' /proc/"${LAB_DAEMON_PID[k]}"/status)
  echo "lab-farm: node $k vipfarmd peak RSS $((hwm / 1024)) MiB"
  check "node $k's peak RSS under 160 MiB ($((hwm / 1024)) MiB)" test "$hwm" -lt $((160 * 1024))
done

# --- ICMP echo: exactly one reply each -------------------------------------------------
out=$(lab_exec_client ping -n -c 10 -i 0.2 -W 1 "$LAB_VIP4" 2>&1)
received=$(sed -n 's/.* \([0-9]*\) received.*/\1/p' <<<"$out")
check "ping: 10 replies to 10 requests ($received)" test "${received:-0}" -eq 10
check "ping: no duplicate replies" bash -c '! grep -q DUP <<<"$1"' _ "$out"
out6=$(lab_exec_client ping -n -6 -c 5 -i 0.2 -W 1 "$LAB_VIP6" 2>&1)
check "ping6: 5 replies, no duplicate" bash -c 'grep -q " 5 received" <<<"$1" && ! grep -q DUP <<<"$1"' _ "$out6"

# IPv6 sources of node 2's buckets, served by node 2 before the view change.
mapfile -t sources6 < <(lab_client_addrs 90 6)
moved6=()
for addr in "${sources6[@]}"; do
  [[ $(owner6 "$addr" 1,2,3) == 2 ]] && moved6+=("$addr")
done
served2=0
for addr in "${moved6[@]}"; do
  [[ $(get6 "$addr") == node2 ]] && served2=$((served2 + 1))
done
check "IPv6: the ${#moved6[@]} sources of node 2's buckets (at least 15) served by node 2 ($served2)" \
  test "${#moved6[@]}" -ge 15 -a "$served2" -eq "${#moved6[@]}"

# --- a view change: node 2 stopped by the operator, membership moves its buckets ----------
before=$("$VIPFARMCTL" buckets --socket "$(lab_api_socket 1)" --json)
arp_cap=$LAB_DIR/arp.txt
# ARP, and neighbour advertisements (ICMPv6 type 136, options printed with -v).
lab_spawn "$LAB_CLIENT_NS" "$arp_cap" timeout 30 tcpdump -lnnevi "$LAB_CLIENT_IF" -c 400 \
  "arp or (icmp6 and ip6[40] == 136)"
arp_pid=$LAB_LAST_PID
deadline=$((SECONDS + 10))
until grep -q "listening on" "$arp_cap" 2>/dev/null || ((SECONDS > deadline)); do sleep 0.1; done
check "vipfarmctl stop on node 2" "$VIPFARMCTL" stop --socket "$(lab_api_socket 2)"
check "every node installs the view 1,3" lab_wait_view 1,3 5
# Every ownership change is announced: gratuitous ARP for the VIP carrying the virtual MAC
# inside, and an unsolicited NA for the IPv6 VIP (to all nodes, override flag, the virtual
# MAC as target link-layer address), each sent from a node's own MAC (never a virtual one).
unsolicited_na() {  # unsolicited_na FILE: FILE holds one for the IPv6 VIP with its virtual MAC
  $py - "$1" "$LAB_VIP6" "$vmac6" <<'PY'
import re, sys
path, vip, vmac = sys.argv[1:4]
records, cur = [], ""
for line in open(path, errors="replace"):
    if line[:1].isspace():
        cur += " " + line.strip()
    else:
        records.append(cur)
        cur = line.strip()
records.append(cur)
pat = (rf"^\S+ (\S+) > 33:33:00:00:00:01, .* {re.escape(vip)} > ff02::1: .*"
       rf"neighbor advertisement, .*tgt is {re.escape(vip)}, Flags \[override\].*"
       rf"destination link-address option \(2\), length 8 \(1\): {re.escape(vmac)}")
hits = [m.group(1) for r in records if (m := re.search(pat, r, re.I))]
sys.exit(0 if hits and vmac not in [h.lower() for h in hits] else 1)
PY
}
deadline=$((SECONDS + 10))
until { grep -qi "who-has $LAB_VIP4 tell $LAB_VIP4" "$arp_cap" && unsolicited_na "$arp_cap"; } ||
  ((SECONDS > deadline)); do sleep 0.1; done
kill -INT "$arp_pid" 2>/dev/null
wait "$arp_pid" 2>/dev/null
check "gratuitous ARP for the VIP seen after the view change" grep -qi "who-has $LAB_VIP4 tell $LAB_VIP4" "$arp_cap"
check "unsolicited NA for the IPv6 VIP with its virtual MAC ($vmac6) seen after the view change" \
  unsolicited_na "$arp_cap"
for mac in "$vmac4" "$vmac6"; do
  check "no ARP/NA frame with the virtual MAC $mac as Ethernet source" \
    bash -c '! grep -qi "^[0-9:.]* $1 >" "$2"' _ "$mac" "$arp_cap"
done
after=$("$VIPFARMCTL" buckets --socket "$(lab_api_socket 1)" --json)
check "only node 2's buckets moved" $py - "$before" "$after" <<'PY'
import json, sys
b = json.loads(sys.argv[1])["groups"][0]["owners"]
a = json.loads(sys.argv[2])["groups"][0]["owners"]
moved = [i for i in range(len(b)) if a[i] != b[i]]
assert moved and all(b[i] == 2 for i in moved), moved[:10]
assert 2 not in a
PY
for k in 1 2 3; do
  gen=$("$VIPFARMCTL" status --socket "$(lab_api_socket "$k")" --json | json_field '["applied_generation"]')
  check "node $k's workers applied generation 2 ($gen)" test "$gen" -ge 2
done
# Capture the handshakes of the next 60 IPv4 connections and of the moved IPv6 sources on
# the client (test 3): every SYN gets exactly one SYN-ACK, from one node, and nothing is
# reset. (libpcap's tcp[] does not reach into IPv6: ip6[53] is the flags byte of a TCP
# header right after the IPv6 header.)
cap=$LAB_DIR/handshakes.txt
lab_spawn "$LAB_CLIENT_NS" "$cap" timeout 60 tcpdump -lnni "$LAB_CLIENT_IF" -c 2000 \
  "tcp port 80 and ((ip and tcp[tcpflags] & (tcp-syn|tcp-rst) != 0) or (ip6 and ip6[53] & 0x06 != 0))"
tcpdump_pid=$LAB_LAST_PID
deadline=$((SECONDS + 10))
until grep -q "listening on" "$cap" 2>/dev/null || ((SECONDS > deadline)); do sleep 0.1; done
moved_ok=0
moved_bad=0
for addr in "${sources[@]:1:60}"; do
  want=$(owner "$addr" 1,3)
  body=$(get "$addr")
  if [[ $body == "node$want" ]]; then moved_ok=$((moved_ok + 1)); else moved_bad=$((moved_bad + 1)); fi
done
check "after the view change, 60 clients served by the predicted owner ($moved_ok ok, $moved_bad not)" test "$moved_bad" -eq 0
# The IPv6 sources node 2 served: now each with its predicted new owner (1 or 3).
declare -A new6=()
bad6=0
for addr in "${moved6[@]}"; do
  want=$(owner6 "$addr" 1,3)
  body=$(get6 "$addr")
  new6[$body]=$((${new6[$body]:-0} + 1))
  if [[ $body != "node$want" ]]; then
    ((bad6 < 5)) && echo "IPv6 $addr after the view change: expected node$want, got: ${body//$'\n'/ | }" >&2
    bad6=$((bad6 + 1))
  fi
done
check "IPv6: after the view change, node 2's ${#moved6[@]} sources served by the predicted owner ($bad6 not; node1 ${new6[node1]:-0}, node3 ${new6[node3]:-0})" \
  test "$bad6" -eq 0 -a "${new6[node1]:-0}" -gt 0 -a "${new6[node3]:-0}" -gt 0
# Stop the capture once it holds the handshakes (tcpdump writes asynchronously).
deadline=$((SECONDS + 5))
until (($(grep -c 'Flags \[S\.\]' "$cap") >= 60 + ${#moved6[@]})) || ((SECONDS > deadline)); do sleep 0.1; done
kill -INT "$tcpdump_pid" 2>/dev/null
wait "$tcpdump_pid" 2>/dev/null
check "one SYN-ACK per SYN and no RST, IPv4 and IPv6 (capture on the client)" $py - "$cap" "${#moved6[@]}" <<'PY'
import collections, re, sys
syn, synack, rst = collections.Counter(), collections.Counter(), 0
for line in open(sys.argv[1]):
    m = re.search(r"IP6? (\S+)\.(\d+) > (\S+)\.(\d+): Flags \[([^\]]*)\]", line)
    if not m:
        continue
    flags = m.group(5)
    if "R" in flags:
        rst += 1
    elif flags == "S":
        syn[(m.group(1), m.group(2))] += 1
    elif flags == "S.":
        synack[(m.group(3), m.group(4))] += 1
syn6 = sum(1 for k in syn if ":" in k[0])
assert len(syn) - syn6 >= 60, f"only {len(syn) - syn6} IPv4 SYNs captured"
assert syn6 >= int(sys.argv[2]) > 0, f"{syn6} IPv6 SYNs captured, {sys.argv[2]} expected"
assert rst == 0, f"{rst} resets"
bad = [k for k in syn if synack[k] != syn[k]]
assert not bad, f"SYN/SYN-ACK counts differ for {bad[:5]}"
PY
check "vipfarmctl start on node 2" "$VIPFARMCTL" start --socket "$(lab_api_socket 2)"
check "every node installs the view 1,2,3 again" lab_wait_view 1,2,3 5

# --- an ICMP fragmentation-needed quoting a live flow reaches that flow's owner (I5) -----
flow_client=${sources[5]}
flow_owner=$(owner "$flow_client" 1,2,3)
accepts() {  # accepts K: node K's accept and not_owner counters
  "$VIPFARMCTL" counters --socket "$(lab_api_socket "$1")" --json |
    $py -c 'import json,sys; v=json.load(sys.stdin)["verdicts"]; print(v["accept"], v["not_owner"])'
}
# errors_reach OWNER N: within 10 s, node OWNER accepted N more frames than in acc0 and
# every other node counted N more not_owner and accepted nothing.
errors_reach() {
  local k a0 n0 a1 n1 ok deadline=$((SECONDS + 10))
  while :; do
    ok=1
    for k in 1 2 3; do
      read -r a0 n0 <<<"${acc0[$k]}"
      read -r a1 n1 <<<"$(accepts "$k")"
      if ((k == $1)); then
        ((a1 - a0 == $2)) || ok=0
      else
        ((n1 - n0 == $2 && a1 == a0)) || ok=0
      fi
    done
    ((ok)) && return 0
    ((SECONDS > deadline)) && return 1
    sleep 0.2
  done
}
declare -A acc0=()
for k in 1 2 3; do acc0[$k]=$(accepts "$k"); done
lab_exec_client $py - "$LAB_CLIENT_IF" "$vmac4" "$LAB_VIP4" "$flow_client" <<'PY'
import sys
from scapy.all import ICMP, IP, TCP, Ether, sendp
iface, vmac, vip, client = sys.argv[1:5]
# A router on the client's path reports that the VIP's reply to client:43210 was too big.
err = (Ether(dst=vmac) / IP(src="10.77.0.254", dst=vip) / ICMP(type=3, code=4, nexthopmtu=1280) /
       IP(src=vip, dst=client, flags="DF") / TCP(sport=80, dport=43210, flags="A"))
sendp([err] * 10, iface=iface, verbose=False)
PY
check "10 ICMP frag-needed errors accepted by the flow's owner (node $flow_owner) only" errors_reach "$flow_owner" 10

# The same over IPv6: an ICMPv6 packet-too-big quoting a flow of an IPv6 client the farm
# served (one of node 2's sources: node 2 owns it again).
flow_client6=${moved6[0]}
flow_owner6=$(owner6 "$flow_client6" 1,2,3)
for k in 1 2 3; do acc0[$k]=$(accepts "$k"); done
lab_exec_client $py - "$LAB_CLIENT_IF" "$vmac6" "$LAB_VIP6" "$flow_client6" <<'PY'
import sys
from scapy.all import ICMPv6PacketTooBig, IPv6, TCP, Ether, sendp
iface, vmac, vip, client = sys.argv[1:5]
# A router on the client's path reports that the VIP's reply to [client]:43210 was too big.
err = (Ether(dst=vmac) / IPv6(src="fd77::254", dst=vip) / ICMPv6PacketTooBig(mtu=1280) /
       IPv6(src=vip, dst=client) / TCP(sport=80, dport=43210, flags="A"))
sendp([err] * 10, iface=iface, verbose=False)
PY
check "10 ICMPv6 packet-too-big errors for [$flow_client6] accepted by the flow's owner (node $flow_owner6) only" \
  errors_reach "$flow_owner6" 10

# --- malformed frames from the client ----------------------------------------------------
malformed_before=$(lab_exec_node 1 curl -s http://10.77.0.1:9469/metrics | awk '/^vipfarm_malformed_total/ {s += $2} END {print s + 0}')
lab_exec_client $py - "$LAB_CLIENT_IF" "$vmac4" "$LAB_VIP4" <<'PY'
import sys
from scapy.all import Dot1Q, Ether, IP, TCP, UDP, Raw, sendp
iface, vmac, vip = sys.argv[1], sys.argv[2], sys.argv[3]
good = Ether(dst=vmac) / IP(src="10.77.9.9", dst=vip) / TCP(sport=1234, dport=80, flags="S")
# Broken IPv4 headers travel in an 802.1Q tag too (the classifier reads through it).
tagged = Ether(dst=vmac) / Dot1Q(vlan=7) / IP(src="10.77.9.9", dst=vip) / TCP(sport=1234, dport=80)
frames = []
frames.append(bytes(tagged)[:18 + 12])                             # truncated IPv4 header
bad_ihl = bytearray(bytes(tagged)); bad_ihl[18] = 0x44; frames.append(bytes(bad_ihl))
bad_len = bytearray(bytes(tagged)); bad_len[20:22] = b"\x7f\xff"; frames.append(bytes(bad_len))
bad_doff = bytearray(bytes(good)); bad_doff[14 + 20 + 12] = 0x40; frames.append(bytes(bad_doff))
udp = bytearray(bytes(Ether(dst=vmac) / IP(src="10.77.9.9", dst=vip) / UDP(sport=1, dport=53) / Raw(b"x" * 8)))
udp[14 + 20 + 4:14 + 20 + 6] = b"\x00\x03"; frames.append(bytes(udp))
for f in frames * 20:
    sendp(Raw(f), iface=iface, verbose=False)
PY
deadline=$((SECONDS + 10))
while :; do
  now=$(lab_exec_node 1 curl -s http://10.77.0.1:9469/metrics | awk '/^vipfarm_malformed_total/ {s += $2} END {print s + 0}')
  ((now - malformed_before >= 100)) || ((SECONDS > deadline)) || { sleep 0.2; continue; }
  break
done
check "100 malformed frames counted on node 1 ($((now - malformed_before)))" test $((now - malformed_before)) -ge 100
check "still serving after malformed frames" test "$(get "${sources[0]}")" == "node$(owner "${sources[0]}" 1,2,3)"

# Malformed IPv6 frames, 20 of each kind, flooded to every node: each node counts exactly
# 20 under each reason and nothing else.
counters_json() { "$VIPFARMCTL" counters --socket "$(lab_api_socket "$1")" --json; }
malformed6() {  # malformed6 BEFORE AFTER: increments of the IPv6 reasons, and of all others
  $py - "$1" "$2" <<'PY'
import json, sys
b, a = (json.loads(x)["malformed"] for x in sys.argv[1:3])
reasons = ["l3_truncated", "ipv6_payload_length", "l4_truncated", "ext_chain", "ext_truncated"]
d = {r: a[r] - b.get(r, 0) for r in a}
print(" ".join(f"{r}={d.pop(r, 0)}" for r in reasons), f"others={sum(d.values())}")
PY
}
want6="l3_truncated=20 ipv6_payload_length=20 l4_truncated=20 ext_chain=20 ext_truncated=20 others=0"
declare -A m0=() m6=()
for k in 1 2 3; do m0[$k]=$(counters_json "$k"); done
lab_exec_client $py - "$LAB_CLIENT_IF" "$vmac6" "$LAB_VIP6" <<'PY'
import sys
from scapy.all import Ether, IPv6, IPv6ExtHdrDestOpt, TCP, Raw, sendp
iface, vmac, vip = sys.argv[1], sys.argv[2], sys.argv[3]
good = bytes(Ether(dst=vmac) / IPv6(src="fd77::9:9", dst=vip) / TCP(sport=1234, dport=80, flags="S"))
frames = [good[:14 + 30]]                                          # truncated IPv6 header
long_plen = bytearray(good); long_plen[18:20] = b"\x7f\xff"; frames.append(bytes(long_plen))
frames.append(bytes(Ether(dst=vmac) / IPv6(src="fd77::9:9", dst=vip, nh=6) / Raw(b"x" * 10)))  # 10 of 20 TCP bytes
chain = IPv6(src="fd77::9:9", dst=vip)
for _ in range(9):                                                 # a ninth extension header
    chain = chain / IPv6ExtHdrDestOpt()
frames.append(bytes(Ether(dst=vmac) / chain / TCP(sport=1234, dport=80)))
# A hop-by-hop header claiming 48 bytes where 8 are left.
frames.append(bytes(Ether(dst=vmac) / IPv6(src="fd77::9:9", dst=vip, nh=0) / Raw(b"\x06\x05" + b"\x00" * 6)))
sendp([Raw(f) for f in frames * 20], iface=iface, verbose=False)
PY
deadline=$((SECONDS + 10))
while :; do
  done6=1
  for k in 1 2 3; do
    m6[$k]=$(malformed6 "${m0[$k]}" "$(counters_json "$k")")
    [[ ${m6[$k]} == "$want6" ]] || done6=0
  done
  ((done6 || SECONDS > deadline)) && break
  sleep 0.2
done
for k in 1 2 3; do
  check "node $k: 100 malformed IPv6 frames counted by reason (${m6[$k]})" test "${m6[$k]}" == "$want6"
done
check "still serving IPv6 after malformed frames" \
  test "$(get6 "${sources6[0]}")" == "node$(owner6 "${sources6[0]}" 1,2,3)"

# --- counters: rx = sum of verdicts ------------------------------------------------------
for k in 1 2 3; do
  check "node $k: rx = sum of verdicts" $py - "$(lab_exec_node "$k" curl -s http://10.77.0."$k":9469/metrics)" <<'PY'
import sys
rx = verdicts = 0
for line in sys.argv[1].splitlines():
    if line.startswith("vipfarm_rx_packets_total "):
        rx = float(line.split()[1])
    elif line.startswith("vipfarm_packets_total{"):
        verdicts += float(line.split()[1])
assert rx > 0 and rx == verdicts, (rx, verdicts)
PY
done

# --- vipfarmctl top from the client (an operator's machine): every node's /metrics -------
# Three frames half a second apart; the last must show all three nodes UP in one epoch,
# their shares adding up to every bucket, and live packet rates (heartbeats arrive always).
top_out=$(lab_exec_client "$VIPFARMCTL" top --config "$(lab_node_config 1)" --count 3 --interval 0.5 --json)
check "vipfarmctl top: 3 nodes UP in one epoch, shares adding up to every bucket, rates measured" \
  $py - "$top_out" <<'PY'
import json, sys
frames = [json.loads(l) for l in sys.argv[1].splitlines()]
assert len(frames) == 3, len(frames)
nodes = frames[-1]["nodes"]
assert [n["ok"] for n in nodes] == [True] * 3, nodes
assert {n["state"] for n in nodes} == {"UP"}, nodes
assert len({n["epoch"] for n in nodes}) == 1, nodes
for group, buckets in nodes[0]["buckets"].items():
    assert sum(n["owned"][group] for n in nodes) == buckets, (group, nodes)
assert all(n["rx_pps"] is not None and n["rx_pps"] > 0 for n in nodes), nodes
assert all(n["rx_pps"] is None for n in frames[0]["nodes"]), "no rate without an earlier frame"
PY
echo "$top_out" | tail -1

# --- the virtual MACs: in the client's cache, never a source, never in the bridge's table
neigh=$(ip -n "$LAB_CLIENT_NS" neigh show "$LAB_VIP4")
check "client's ARP entry for the VIP is the virtual MAC ($neigh)" grep -qi "lladdr $vmac4" <<<"$neigh"
neigh6=$(ip -n "$LAB_CLIENT_NS" -6 neigh show "$LAB_VIP6")
check "client's neighbour entry for the IPv6 VIP is its virtual MAC ($neigh6)" grep -qi "lladdr $vmac6" <<<"$neigh6"
for mac in "$vmac4" "$vmac6"; do
  check "the bridge never learned the virtual MAC $mac" \
    bash -c '! bridge -n "$1" fdb show br "$2" | grep -qi "$3"' _ "$LAB_SWITCH_NS" "$LAB_BRIDGE" "$mac"
done
kill -INT "$vmac_pid" 2>/dev/null
wait "$vmac_pid" 2>/dev/null
check "the client never saw a frame from a virtual MAC ($(grep -m1 'packets captured' "$vmac_cap"))" \
  grep -qx "0 packets captured" "$vmac_cap"
# A gratuitous ARP is an announcement: no node answers another's (a reply to the virtual
# MAC would be flooded to every port). The capture of the view change has run since.
check "no ARP reply addressed to the virtual MAC (nodes ignore each other's gratuitous ARP)" \
  bash -c '! grep -qi "> $1, ethertype ARP.*Reply" "$2"' _ "$vmac4" "$arp_cap"

lab_stop_daemons
LAB_AT_EXIT=""
summary
((failed == 0))
