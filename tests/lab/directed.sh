#!/usr/bin/env bash
# shellcheck disable=SC2317 # stopped_early runs from the lab's trap
# Lab test of issue 7's directed mode (docs/directed.md) on a switch that does not flood:
# the lab bridge's ports get `flood off` (unknown unicast is not flooded; learning, broadcast
# and multicast stay on), as port security or a cloud switch would behave.
#  1. Flood mode there is broken, which shows the set-up really blocks flooding: the client's
#     requests to the IPv4 VIP (resolved to its virtual MAC) reach no node and all fail.
#  2. Directed mode (the IPv4 VIP with l2_mode = "directed", its rule keyed on_port so that
#     most connections belong to another node than the one the client's ARP entry names):
#     exactly one node answers the client's ARP request, with its own MAC, the predicted
#     one (the owner of the client's address keyed on_addr); every request from many
#     sources and ports succeeds and is served by the predicted owner of its bucket; the
#     nodes forwarded frames to each other and refused none.
#  3. kill -9 of the client's ARP owner: its new ARP owner tells it its MAC (unicast ARP
#     reply) and the client is answered again within LAB_DIRECTED_BOUND_MS (2 s).
#  4. flow handoff in directed mode: 60 long-lived connections and new ones across the dead
#     node's return and another node's drain: none breaks, every new one succeeds.
# Ends with "lab-directed: N passed, M failed". Needs root.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"
CHECK_NAME=lab-directed
# shellcheck source=../lib/check.sh
source "$here/../lib/check.sh"
LAB_AT_EXIT=stopped_early
py=/usr/bin/python3
requests=${LAB_DIRECTED_REQUESTS:-60}

lab_up 3
lab_start_daemons
lab_wait_ready
lab_start_nginx
check "the farm agrees on the view 1,2,3" lab_wait_view 1,2,3 20

# The switch stops flooding unknown unicast on every port (it still learns, and floods
# broadcast and multicast).
for port in "$LAB_CLIENT_VETH" "${LAB_NODE_VETH[@]:1}"; do
  ip netns exec "$LAB_SWITCH_NS" bridge link set dev "$port" flood off ||
    { echo "FAIL: cannot turn flooding off on $port" >&2; exit 1; }
done
check "flooding is off on every port of the switch" bash -c \
  '! ip netns exec "$1" bridge -d link show | grep -q " flood on "' _ "$LAB_SWITCH_NS"

get() {  # get SOURCE PORT: the body nginx answered (the node's name), or nothing; the VIP
  # of the source's family
  local host=$LAB_VIP4
  [[ $1 == *:* ]] && host="[$LAB_VIP6]"
  lab_exec_client curl -sS -g --noproxy '*' --max-time 1 --interface "$1" --local-port "$2" \
    "http://$host/" 2>/dev/null
}
first_answer() {  # first_answer SOURCE PORT SECONDS: the first answer, a new port per try
  local got="" port=$2 deadline=$((SECONDS + $3))
  until [[ -n $got ]] || ((SECONDS > deadline)); do
    got=$(get "$1" "$port")
    port=$((port + 1))
  done
  echo "$got"
}
counter() {  # counter K PATH: node K's counter (PATH: arp_replies, directed.silent, ...)
  "$VIPFARMCTL" counters --socket "$(lab_api_socket "$1")" --json |
    $py -c 'import json,sys
v = json.load(sys.stdin)
for part in sys.argv[1].split("."): v = v[part]
print(v)' "$2"
}

# --- 1. flood mode on a switch that does not flood -----------------------------------------
declare -A acc0=()
for k in 1 2 3; do acc0[$k]=$(counter "$k" verdicts.accept); done
ok=0
for i in 1 2 3 4 5; do
  [[ -n $(get "$LAB_CLIENT4" $((41000 + i))) ]] && ok=$((ok + 1))
done
gained=0
for k in 1 2 3; do gained=$((gained + $(counter "$k" verdicts.accept) - acc0[$k])); done
check "flood mode without flooding: 0 of 5 requests answered ($ok), no node accepted a frame ($gained)" \
  test "$ok" -eq 0 -a "$gained" -eq 0

# --- 2. directed mode ------------------------------------------------------------------------
lab_stop_daemons
for k in 1 2 3; do
  $py - "$(lab_node_config "$k")" "$LAB_VIP4" <<'PY' || exit 1
import re, sys
path, vip = sys.argv[1], sys.argv[2]
text = open(path).read()
text, n = re.subn(r'(?m)^(address = "%s".*)$' % re.escape(vip), r'\1\nl2_mode = "directed"', text, count=1)
text, n6 = re.subn(r'(?m)^(address = "fd77::100".*)$', r'\1\nl2_mode = "directed"', text, count=1)
text, m = re.subn(r'(?m)^key = "on_addr"', 'key = "on_port"', text)
assert n == 1 and n6 == 1 and m >= 1, (n, n6, m)
open(path, "w").write(text)
PY
done
check "node 1's config has a directed VIP" bash -c \
  '"$1" check-config "$2" | grep -q "vip $3 .* directed"' _ "$VIPFARMCTL" "$(lab_node_config 1)" "$LAB_VIP4"
lab_start_daemons
lab_wait_ready
check "directed: the farm agrees on the view 1,2,3" lab_wait_view 1,2,3 20
conf1=$(lab_node_config 1)
predict() {  # predict [--view IDS] PROTO CLIENT SERVER: the node vipfarmctl owner names
  "$VIPFARMCTL" owner --config "$conf1" --json "$@" |
    $py -c 'import json,sys; print(json.load(sys.stdin)["owner"])'
}
node_mac() {  # node_mac K: node K's uplink MAC, as it reports it
  "$VIPFARMCTL" nodes --json --socket "$(lab_api_socket "$1")" |
    $py -c 'import json,sys; print(next(n["mac"] for n in json.load(sys.stdin)["nodes"] if n["self"]))'
}
# The client's ARP owner: its address keyed on_addr, like an unmatched echo request.
arp_owner=$(predict icmp "$LAB_CLIENT4" "$LAB_VIP4")
lab_exec_client ip neigh flush dev "$LAB_CLIENT_IF" >/dev/null 2>&1
declare -A silent0=() arp0=()
for k in 1 2 3; do
  arp0[$k]=$(counter "$k" arp_replies)
  silent0[$k]=$(counter "$k" directed.silent)
done
first=$(first_answer "$LAB_CLIENT4" 40800 10)
check "directed: the first request is answered ($first)" test -n "$first"
neigh=$(lab_exec_client ip neigh show "$LAB_VIP4" dev "$LAB_CLIENT_IF" | awk '{print $3}')
check "directed: the client's ARP entry for the VIP is node $arp_owner's own MAC ($neigh)" \
  test "$neigh" = "$(node_mac "$arp_owner")"
answered=0 silent=0
for k in 1 2 3; do
  a=$(($(counter "$k" arp_replies) - arp0[$k]))
  s=$(($(counter "$k" directed.silent) - silent0[$k]))
  ((k == arp_owner)) && answered=$a
  ((k != arp_owner && a == 0 && s > 0)) && silent=$((silent + 1))
done
check "directed: node $arp_owner answered the ARP request ($answered), the other two stayed silent ($silent)" \
  test "$answered" -ge 1 -a "$silent" -eq 2

mapfile -t sources < <(lab_client_addrs 20)
wrong=0 req_failed=0 total=0 remote=0
declare -A served=()
for ((i = 0; i < requests; i++)); do
  src=${sources[i % ${#sources[@]}]}
  port=$((42000 + i))
  want=$(predict tcp "$src:$port" "$LAB_VIP4:80")
  got=$(get "$src" "$port")
  total=$((total + 1))
  if [[ -z $got ]]; then
    req_failed=$((req_failed + 1))
  elif [[ $got != "node$want" ]]; then
    wrong=$((wrong + 1))
    echo "  $src:$port served by $got, predicted node$want"
  fi
  ((want != arp_owner)) && remote=$((remote + 1))
  served[$want]=1
done
echo "directed: $total requests, $remote of them for another node than the ARP owner; $req_failed failed, $wrong served by another node than predicted"
check "directed: every request answered ($req_failed of $total failed)" test "$req_failed" -eq 0
check "directed: every request served by its predicted owner ($wrong wrong)" test "$wrong" -eq 0
check "directed: the requests covered every node (${!served[*]}) and most went through forwarding ($remote)" \
  test "${#served[@]}" -eq 3 -a "$remote" -gt $((requests / 3))
forwarded=0 refused=0
for k in 1 2 3; do
  metrics=$(lab_exec_node "$k" curl -s --max-time 2 http://10.77.0."$k":9469/metrics)
  f=$(awk '/^vipfarm_forwarded_total\{/ {s += $2} END {print s + 0}' <<<"$metrics")
  r=$(awk '/^vipfarm_forward_refused_total / {print $2 + 0}' <<<"$metrics")
  echo "  node $k: forwarded $f frames, refused ${r:-?}"
  forwarded=$((forwarded + ${f%.*}))
  refused=$((refused + ${r%.*}))
done
check "directed: the ARP owner forwarded frames to the other owners ($forwarded), none refused ($refused)" \
  test "$forwarded" -gt 0 -a "$refused" -eq 0

# --- 2b. the same over IPv6: neighbour discovery answered by one node, requests forwarded -----
arp_owner6=$(predict icmp "$LAB_CLIENT6" "$LAB_VIP6")
first6=$(first_answer "$LAB_CLIENT6" 40900 10)
check "directed IPv6: the first request is answered ($first6)" test -n "$first6"
neigh6=$(lab_exec_client ip -6 neigh show "$LAB_VIP6" dev "$LAB_CLIENT_IF" | awk '{print $3}')
check "directed IPv6: the client's neighbour entry for the VIP is node $arp_owner6's own MAC ($neigh6)" \
  test "$neigh6" = "$(node_mac "$arp_owner6")"
mapfile -t sources6 < <(lab_client_addrs 10 6)
wrong6=0 failed6=0 remote6=0
for ((i = 0; i < 30; i++)); do
  src=${sources6[i % ${#sources6[@]}]}
  port=$((44000 + i))
  want=$(predict tcp "[$src]:$port" "[$LAB_VIP6]:80")
  got=$(get "$src" "$port")
  if [[ -z $got ]]; then
    failed6=$((failed6 + 1))
  elif [[ $got != "node$want" ]]; then
    wrong6=$((wrong6 + 1))
  fi
  ((want != arp_owner6)) && remote6=$((remote6 + 1))
done
echo "directed IPv6: 30 requests, $remote6 for another node than the ND owner; $failed6 failed, $wrong6 served by another node than predicted"
check "directed IPv6: 30 of 30 requests answered by their predicted owners ($failed6 failed, $wrong6 wrong, $remote6 forwarded)" \
  test "$failed6" -eq 0 -a "$wrong6" -eq 0 -a "$remote6" -gt 0
neigh6=$(lab_exec_client ip -6 neigh show "$LAB_VIP6" dev "$LAB_CLIENT_IF" | awk '{print $3}')
check "directed IPv6: the nodes' own solicitations did not re-point the VIP ($neigh6)" \
  test "$neigh6" = "$(node_mac "$arp_owner6")"

# --- 3. the client's ARP owner dies ---------------------------------------------------------
# Its MAC is in the client's ARP cache; after the failover the client's new ARP owner sends
# it a unicast ARP reply with its own MAC. A new connection every 100 ms from the client's
# own address (each to a bucket of any node): the time from the kill -9 to the first answer
# through the new ARP owner, and every request after it answered.
victim=$arp_owner
survivors=$(printf '%s\n' 1 2 3 | grep -vx "$victim" | paste -sd,)
new_owner=$(predict --view "$survivors" icmp "$LAB_CLIENT4" "$LAB_VIP4")
new_mac=$(node_mac "$new_owner")
bound_ms=${LAB_DIRECTED_BOUND_MS:-2000}
_lab_ms
kill_ms=$_LAB_MS
lab_kill_daemon "$victim"
recovered_ms=-1 after=0 after_failed=0
for ((i = 0; i < 80; i++)); do  # 8 s at most
  port=$((43000 + i))
  got=$(lab_exec_client curl -sS -g --noproxy '*' --max-time 0.3 --interface "$LAB_CLIENT4" \
    --local-port "$port" "http://$LAB_VIP4/" 2>/dev/null)
  _lab_ms
  if ((recovered_ms < 0)); then
    neigh=$(lab_exec_client ip neigh show "$LAB_VIP4" dev "$LAB_CLIENT_IF" | awk '{print $3}')
    [[ -n $got && $neigh == "$new_mac" ]] && recovered_ms=$((_LAB_MS - kill_ms))
  else
    after=$((after + 1))
    [[ -n $got ]] || after_failed=$((after_failed + 1))
    ((after >= 10)) && break
  fi
  sleep 0.1
done
echo "directed: kill -9 of node $victim (the client's ARP owner): the client's ARP entry is node $new_owner's MAC and it is answered again after $recovered_ms ms (bound $bound_ms ms); $after_failed of $after requests after that failed"
check "directed: after its ARP owner's kill -9 the client moves to node $new_owner within $bound_ms ms ($recovered_ms ms)" \
  test "$recovered_ms" -ge 0 -a "$recovered_ms" -le "$bound_ms"
check "directed: every request after the recovery answered ($after_failed of $after failed)" \
  test "$after" -ge 10 -a "$after_failed" -eq 0
announced=$(counter "$new_owner" directed.announcements)
check "directed: node $new_owner sent unicast announcements ($announced)" test "$announced" -gt 0
# IPv6 after the same kill: the client's neighbour entry for the IPv6 VIP names its ND owner
# in the new view, and it is answered.
new_owner6=$(predict --view "$survivors" icmp "$LAB_CLIENT6" "$LAB_VIP6")
ok6=$(first_answer "$LAB_CLIENT6" 45000 5)
neigh6=$(lab_exec_client ip -6 neigh show "$LAB_VIP6" dev "$LAB_CLIENT_IF" | awk '{print $3}')
check "directed IPv6: after the kill the client is answered ($ok6) through node $new_owner6 ($neigh6)" \
  test -n "$ok6" -a "$neigh6" = "$(node_mac "$new_owner6")"

# --- 4. planned changes keep connections in directed mode (flow handoff) ----------------------
# Long-lived keep-alive connections from many sources (a request every 100 ms, each answer
# checked; a stall over 1 s is a break) and new connections every 100 ms; node $victim
# returns (its buckets come back through handoff), then node $survivor2 is drained. The
# frames of a connection reach the client's ARP owner, which forwards them to the nodes that
# would take them in flood mode: the new owner and the old one while it releases the bucket.
survivor2=$(printf '%s\n' 1 2 3 | grep -vx "$victim" | grep -vx "$new_owner" | head -1)
mapfile -t keep < <(lab_client_addrs 60)
mapfile -t fresh < <(lab_client_addrs 4)
args=()
for a in "${keep[@]}"; do args+=(--keep "$a"); done
for a in "${fresh[@]}"; do args+=(--source "$a"); done
events=$LAB_DIR/probe.jsonl
stop_file=$LAB_DIR/probe.stop
lab_spawn "$LAB_CLIENT_NS" "$LAB_DIR/probe.log" "$py" "$here/probe.py" \
  --target "$LAB_VIP4:80" --every-ms 100 --timeout-ms 2000 --keep-every-ms 100 \
  --keep-timeout-ms 1000 --seconds 90 --stop-file "$stop_file" --out "$events" "${args[@]}"
probe_pid=$LAB_LAST_PID
opened() { [[ $(grep -c '"keep_open"' "$events" 2>/dev/null) -ge ${#keep[@]} ]]; }
check "directed: ${#keep[@]} long-lived connections open" lab_wait_for 30 opened
sleep 2  # a soak window of steady traffic before the change (not a wait)
lab_start_daemon "$victim"
lab_wait_ready "$victim"
check "directed: node $victim returns: the view 1,2,3" lab_wait_view 1,2,3 20
sleep 3  # a soak window: traffic goes on across the change
check "directed: node $survivor2 drained" \
  "$VIPFARMCTL" drain --timeout 600 --socket "$(lab_api_socket "$survivor2")"
remaining=$(printf '%s\n' 1 2 3 | grep -vx "$survivor2" | paste -sd,)
check "directed: node $survivor2 leaves: the view $remaining" lab_wait_view "$remaining" 10
sleep 3  # a soak window: traffic goes on across the change
touch "$stop_file"
deadline=$((SECONDS + 10))
while _lab_alive "$probe_pid" && ((SECONDS < deadline)); do sleep 0.1; done
read -r breaks attempts attempt_failed < <($py - "$events" <<'PY'
import json, sys
events = [json.loads(l) for l in open(sys.argv[1])]
breaks = {e["src"] for e in events if e["kind"] == "keep_break"}
attempts = [e for e in events if e["kind"] == "attempt"]
for e in [e for e in events if e["kind"] == "keep_break"][:5]:
    print(f"  break: {e['src']} ({e.get('node')}): {e.get('why')}", file=sys.stderr)
print(len(breaks), len(attempts), sum(1 for e in attempts if not e["ok"]))
PY
)
echo "directed: a return and a drain under ${#keep[@]} long-lived connections: $breaks broke; $attempt_failed of $attempts new connections failed"
check "directed: no long-lived connection broke across a return and a drain ($breaks)" test "$breaks" -eq 0
check "directed: every new connection succeeded ($attempt_failed of $attempts failed)" \
  test "$attempts" -gt 0 -a "$attempt_failed" -eq 0

lab_stop_daemons
lab_down
LAB_AT_EXIT=""
summary
((failed == 0))
