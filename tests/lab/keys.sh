#!/usr/bin/env bash
# shellcheck disable=SC2317 # at_exit runs from the lab's trap
# Lab tests 2 and 4 of issue 3 on one farm: weights 1:2:3 and the on_port key.
#  - each node owns exactly the buckets issue 2's allocation gives it (vipfarmctl buckets);
#  - 300 connections from ONE client address with distinct source ports are each served by
#    the node `vipfarmctl owner` predicts for that port, and all three nodes take some;
#  - the same over IPv6 (issue 3 test 7): 120 connections from one IPv6 client address to
#    the IPv6 VIP.
# Ends with "lab-keys: N passed, M failed". Needs root.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=/usr/bin/python3
work=$(mktemp -d)
# The lab config with weights 1:2:3 and the rule keyed on the client's port.
$py - "$here/../../conf/lab.toml" "$work/keys.toml" <<'PY'
import sys
text = open(sys.argv[1]).read()
text = text.replace('key = "on_addr"', 'key = "on_port"')
members = "".join(f'\n[[group.member]]\nnode = {k}\nweight = {k}\n' for k in (1, 2, 3))
text = text.replace('[[group]]\nname = "web"\n', '[[group]]\nname = "web"\n' + members)
assert 'key = "on_port"' in text and "weight = 3" in text
open(sys.argv[2], "w").write(text)
PY
export LAB_CONFIG=$work/keys.toml
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

CHECK_NAME=lab-keys
# shellcheck source=../lib/check.sh
source "$here/../lib/check.sh"
at_exit() {
  stopped_early "$1"
  rm -rf "$work"
}
LAB_AT_EXIT=at_exit

lab_up 3
lab_start_daemons
lab_wait_ready
lab_start_nginx
check "the farm agrees on the view 1,2,3" lab_wait_view 1,2,3 20
conf=$(lab_node_config 1)
"$VIPFARMCTL" check-config "$conf" | grep -q "1(w1,p0) 2(w2,p0) 3(w3,p0)" ||
  { echo "FAIL: the lab config lacks weights 1:2:3" >&2; exit 1; }

# --- weights: the owned counts are issue 2's allocation --------------------------------
expected=$("$VIPFARMCTL" buckets --config "$conf" --json)
for k in 1 2 3; do
  want=$($py -c 'import json,sys; g=json.loads(sys.argv[1])[0]; print(next(o["owned"] for o in g["owners"] if o["node"]==int(sys.argv[2])))' "$expected" "$k")
  got=$("$VIPFARMCTL" status --socket "$(lab_api_socket "$k")" --json | $py -c 'import json,sys; print(json.load(sys.stdin)["groups"][0]["owned"])')
  check "node $k owns its weighted share: $got buckets (allocation: $want)" test "$got" -eq "$want"
done

# --- on_port: one client address, many source ports, over IPv4 and IPv6 -----------------
# spread LABEL COUNT FIRST_PORT CLIENT SERVER URL [CURL ARGS...]: COUNT connections from
# CLIENT with source ports FIRST_PORT, +7, +14, ...: each served by the node `vipfarmctl
# owner` predicts for its port, every node takes some, node 3 more than node 1 (1:2:3).
spread() {
  local label=$1 count=$2 first=$3 client=$4 server=$5 url=$6
  shift 6
  local -A served=()
  local mismatch=0 i port json want body deadline=$((SECONDS + 30))
  until lab_exec_client curl -s -g --max-time 2 "$@" "$url" >/dev/null || ((SECONDS > deadline)); do
    sleep 0.2
  done
  for ((i = 0; i < count; i++)); do
    port=$((first + i * 7))
    json=$("$VIPFARMCTL" owner --config "$conf" --json tcp "$client:$port" "$server")
    want=none
    [[ $json =~ \"owner\":([0-9]+) ]] && want=${BASH_REMATCH[1]}
    body=$(lab_exec_client curl -sS -g --max-time 2 "$@" --local-port "$port" "$url" 2>&1)
    served[$body]=$((${served[$body]:-0} + 1))
    if [[ $body != "node$want" ]]; then
      mismatch=$((mismatch + 1))
      ((mismatch <= 5)) && echo "$label $client:$port: expected node$want, got: $body" >&2
    fi
  done
  echo "$label: one client, $count ports: node1 ${served[node1]:-0}, node2 ${served[node2]:-0}, node3 ${served[node3]:-0}"
  check "$label: every connection served by the predicted node ($mismatch mismatches)" test "$mismatch" -eq 0
  for k in 1 2 3; do
    check "$label: node $k served some of one client's connections" test "${served[node$k]:-0}" -gt 0
  done
  check "$label: shares follow the weights (node3 > node1)" test "${served[node3]:-0}" -gt "${served[node1]:-0}"
}
spread IPv4 300 20000 "$LAB_CLIENT4" "$LAB_VIP4:80" "http://$LAB_VIP4/"
spread IPv6 120 30000 "[$LAB_CLIENT6]" "[$LAB_VIP6]:80" "http://[$LAB_VIP6]/" --interface "$LAB_CLIENT6"

lab_stop_daemons
LAB_AT_EXIT=""
rm -rf "$work"
summary
((failed == 0))
