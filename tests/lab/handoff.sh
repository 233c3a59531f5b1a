#!/usr/bin/env bash
# shellcheck disable=SC2119,SC2317 # lab_* functions take optional args; at_exit runs from the trap
# Lab test of issue 5 (flow handoff): LAB_HANDOFF_CONNECTIONS (200) long-lived TCP
# connections (HTTP keep-alive to nginx on the VIP, a request every 100 ms, each answer
# checked: same node, within 1 s) spread over a 3-node farm, plus new connections from 6
# more sources every 100 ms. Then, one at a time: node 4 joins (during a SYN flood of
# 30000 random sources, beyond the flow tables' 4096 flows per worker); node 2 is drained
# (vipfarmctl drain); node 3's weight goes from 1 to 3 (vipfarmctl reload of every node's
# file); a rule change is reloaded node by node. Across all of it: no long-lived connection breaks or stalls, every new connection
# succeeds. Then node 2, still serving its connections, is killed: only those are lost; an
# invalid file and a restart-only change are refused at reload; a drain with a timeout ends
# in STOP. The
# same scenario with [flows] handoff = false counts how many break
# without it; both numbers are printed.
# Needs root, build/vipfarmd and build/vipfarmctl. Ends with "lab-handoff: N passed, M failed".
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=/usr/bin/python3
connections=${LAB_HANDOFF_CONNECTIONS:-200}
capacity=${LAB_HANDOFF_CAPACITY:-4096}  # flows per worker: the SYN flood overflows it
flood=${LAB_HANDOFF_FLOOD:-30000}
work=$(mktemp -d "${TMPDIR:-/tmp}/vipfarm-handoff.XXXXXX")
# The lab config with handoff on (the default) and off.
$py - "$here/../../conf/lab.toml" "$work" "$capacity" <<'PY' || exit 1
import sys
text = open(sys.argv[1]).read()
# Explicit members (weight 1 each) so that a reload can change node 3's weight.
assert "[flows]\n" in text, "conf/lab.toml has no [flows] table"
anchor = 'name = "web"\n'
assert anchor in text
members = "".join(f"\n[[group.member]]\nnode = {k}\nweight = 1\n" for k in (1, 2, 3, 4))
text = text.replace(anchor, anchor + members, 1)
text += '\n[[cluster.node]]\nid = 4\nname = "node4"\naddress = "10.77.0.4"\n'
import re
text = re.sub(r"(?m)^capacity = \d+", "capacity = " + sys.argv[3], text)
open(sys.argv[2] + "/on.toml", "w").write(text.replace("[flows]\n", "[flows]\nhandoff = true\n", 1))
open(sys.argv[2] + "/off.toml", "w").write(text.replace("[flows]\n", "[flows]\nhandoff = false\n", 1))
PY

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"
CHECK_NAME=lab-handoff
# shellcheck source=../lib/check.sh
source "$here/../lib/check.sh"
at_exit() {
  stopped_early "$1"
  rm -rf "$work"
}
LAB_AT_EXIT=at_exit

owned_by() {  # owned_by K: buckets node K owns in node 1's live owner map
  "$VIPFARMCTL" buckets --socket "$(lab_api_socket 1)" --json |
    $py -c 'import json,sys; print(json.load(sys.stdin)["groups"][0]["owners"].count(int(sys.argv[1])))' "$1"
}
owns_more() { (($(owned_by "$1") > $2)); }
reload_all() {  # reload_all [K...]: every node (1-4) by default
  local k nodes=("$@")
  ((${#nodes[@]})) || nodes=(1 2 3 4)
  for k in "${nodes[@]}"; do "$VIPFARMCTL" reload --socket "$(lab_api_socket "$k")" >/dev/null || return 1; done
}
metric() {  # metric K NAME: node K's sample of NAME (no labels)
  lab_exec_node "$1" curl -s --max-time 2 http://10.77.0."$1":9469/metrics | awk -v n="$2" '$1 == n {print $2}'
}
epoch_of() { metric "$1" vipfarm_view_epoch; }
heartbeat_rate() {  # heartbeat_rate K SECONDS: heartbeats node K sent per second
  local a b
  a=$(metric "$1" vipfarm_heartbeats_sent_total)
  sleep "$2"  # the measuring window itself
  b=$(metric "$1" vipfarm_heartbeats_sent_total)
  $py -c 'import sys; print("%.1f" % ((float(sys.argv[2]) - float(sys.argv[1])) / float(sys.argv[3])))' "$a" "$b" "$2"
}
checker_runs() {  # checker_runs K NAME: node K has run checker NAME twice, and it is healthy
  local text
  text=$(lab_exec_node "$1" curl -s --max-time 2 http://10.77.0."$1":9469/metrics)
  grep -q "^vipfarm_checker_healthy{.*checker=\"$2\".*} 1" <<<"$text" &&
    grep "^vipfarm_checker_checks_total{.*checker=\"$2\"" <<<"$text" | awk '{exit !($2 >= 2)}'
}

# scenario MODE: the whole scenario on a fresh 4-node lab (node 4 starts later); prints
# "MODE: B breaks of C long-lived connections, F failed of N new connections" and leaves
# the counts in breaks/new_failed.
scenario() {
  local mode=$1 events stop_file probe_pid k
  evicted=0
  LAB_CONFIG=$work/$mode.toml
  lab_up 4
  lab_start_daemons 1 2 3
  lab_wait_ready 1 2 3
  lab_start_nginx
  check "$mode: nodes 1-3 agree on the view 1,2,3" lab_wait_view 1,2,3 20 1 2 3
  mapfile -t keep < <(lab_client_addrs "$connections")
  mapfile -t fresh < <(lab_client_addrs 6)
  local args=()
  for a in "${keep[@]}"; do args+=(--keep "$a"); done
  for a in "${fresh[@]}"; do args+=(--source "$a"); done
  events=$LAB_DIR/probe-$mode.jsonl
  stop_file=$LAB_DIR/probe-$mode.stop
  lab_spawn "$LAB_CLIENT_NS" "$LAB_DIR/probe-$mode.log" "$py" "$here/probe.py" \
    --target "$LAB_VIP4:80" --every-ms 100 --timeout-ms 2000 --keep-every-ms 100 \
    --keep-timeout-ms 1000 --seconds 120 --stop-file "$stop_file" --out "$events" "${args[@]}"
  probe_pid=$LAB_LAST_PID
  opened() { [[ $(grep -c '"keep_open"' "$events" 2>/dev/null) -ge $connections ]]; }
  check "$mode: $connections long-lived connections open" lab_wait_for 30 opened
  sleep 3  # a soak window of steady traffic before the first change (not a wait)

  # 1. node 4 joins, under a SYN flood from random sources (more SYNs than the flow tables,
  # LAB_HANDOFF_CAPACITY flows per worker, hold): the tracked connections must not suffer.
  local vmac flood_pid
  vmac=$("$VIPFARMCTL" check-config "$(lab_node_config 1)" | awk '$1 == "vip" && $2 == "'"$LAB_VIP4"'" {print $4}')
  lab_spawn "$LAB_CLIENT_NS" "$LAB_DIR/flood-$mode.log" "$py" "$here/flood.py" \
    --iface "$LAB_CLIENT_IF" --src-mac "$LAB_CLIENT_MAC" --kind syn --rate "$flood" \
    --seconds 10 --count "$flood" --pool "$flood" --stop-file "$work/ackflood.stop" \
    --target "0=$vmac=$LAB_VIP4"
  flood_pid=$LAB_LAST_PID
  # ... and spoofed ACKs from random sources, 10^5 a second for 10 s (issue 16): each one
  # a new flow to every node that owns its bucket, which must never displace a real one.
  local ack_pid
  lab_spawn "$LAB_CLIENT_NS" "$LAB_DIR/ackflood-$mode.log" "$py" "$here/flood.py" \
    --iface "$LAB_CLIENT_IF" --src-mac "$LAB_CLIENT_MAC" --kind ack --rate 100000 \
    --seconds 10 --count 1000000 --pool 600000 --stop-file "$work/ackflood.stop" \
    --target "0=$vmac=$LAB_VIP4"
  ack_pid=$LAB_LAST_PID
  lab_start_daemon 4
  lab_wait_ready 4
  check "$mode: node 4 joins: the view 1,2,3,4" lab_wait_view 1,2,3,4 20
  local flood_deadline=$((SECONDS + 120))
  while _lab_alive "$flood_pid" && ((SECONDS < flood_deadline)); do sleep 0.2; done
  check "$mode: the SYN flood of $flood random sources was sent" grep -q "^{\"sent\": $flood," "$LAB_DIR/flood-$mode.log"
  while _lab_alive "$ack_pid" && ((SECONDS < flood_deadline)); do sleep 0.2; done
  local acks
  acks=$($py -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])["sent"])' \
    "$LAB_DIR/ackflood-$mode.log" 2>/dev/null)
  echo "$mode: spoofed ACK flood: $(tail -1 "$LAB_DIR/ackflood-$mode.log")"
  # 10^5/s for 10 s is asked for (issue 16): flood.py sends in sendmmsg() batches and
  # catches up when it was not scheduled; at least 95 % of it must have gone out.
  check "$mode: the spoofed ACK flood sent at least 9.5 x 10^5 in its 10 s (${acks:-none})" \
    test "${acks:-0}" -ge 950000
  if [[ $mode == on ]]; then
    # The handoff ends bucket by bucket: once the flood's embryonic flows have timed out
    # ([flows] syn_timeout_ms, 5 s), the buckets node 4 took that hold no live connection
    # are whole, the others still wait for their old owner's connections (a per-node
    # release would keep all of them waiting while any connection lives).
    local gained4
    gained4=$(owned_by 4)
    taking4() {
      lab_exec_node 4 curl -s --max-time 2 http://10.77.0.4:9469/metrics |
        awk '/^vipfarm_handoff_taking_buckets / {printf "%d", $2}'
    }
    partly_taken() { local t; t=$(taking4); [[ -n $t ]] && ((t > 0 && t < gained4)); }
    check "$mode: node 4's taken buckets become whole bucket by bucket (of $gained4)" \
      lab_wait_for 15 partly_taken
    echo "$mode: node 4 took $gained4 buckets; $(taking4) still wait for the old owners' connections"
  fi
  sleep 3  # a soak window: traffic goes on across the change
  # 2. node 2 is drained: it leaves the view, its connections stay (until the timeout).
  check "$mode: node 2 drained" "$VIPFARMCTL" drain --timeout 600 --socket "$(lab_api_socket 2)"
  check "$mode: node 2 leaves: the view 1,3,4" lab_wait_view 1,3,4 5 1 3 4
  sleep 3  # a soak window: traffic goes on across the change
  # 3. node 3's weight: 1 -> 3, reloaded on every node (each advertises its own weight).
  local before3 after3
  before3=$(owned_by 3)
  for k in 1 2 3 4; do
    sed -i '/^\[\[group.member\]\]$/{n;/^node = 3$/{n;s/^weight = 1$/weight = 3/}}' "$(lab_node_config "$k")"
  done
  check "$mode: node 3's new weight reloaded on every node" reload_all
  check "$mode: node 3 owns more buckets after the weight change" lab_wait_for 5 owns_more 3 "$before3"
  after3=$(owned_by 3)
  echo "$mode: node 3 owned $before3 buckets, $after3 with weight 3"
  sleep 3  # a soak window: traffic goes on across the change
  # 4. a rule change (ports 80,443 -> 80,443,8080: a new fingerprint) reloaded node by node:
  # each node is outnumbered by the other config until most have it (docs/handoff.md).
  for k in 1 3 4 2; do
    sed -i 's/^ports = "80,443"$/ports = "80,443,8080"/' "$(lab_node_config "$k")"
    check "$mode: the rule change reloaded on node $k" \
      "$VIPFARMCTL" reload --socket "$(lab_api_socket "$k")"
    sleep 2  # a soak window: traffic goes on while the farm changes sides
  done
  check "$mode: after the rule change every node is back in the view 1,3,4" lab_wait_view 1,3,4 10 1 3 4
  same_fingerprint() {
    local k
    for k in 1 2 3 4; do
      "$VIPFARMCTL" status --json --socket "$(lab_api_socket "$k")" | $py -c 'import json,sys; print(json.load(sys.stdin)["fingerprint"])'
    done | sort -u | wc -l | grep -qx 1
  }
  check "$mode: one fingerprint on every node" same_fingerprint
  sleep 2  # a soak window after the last change

  # 5. the old owner dies in the middle of a handoff: node 2 (drained, still serving its
  # connections) is killed: its connections are lost, nothing else is.
  _lab_ms
  local kill_ms=$_LAB_MS
  lab_kill_daemon 2
  sleep 3  # a soak window: the survivors take node 2's buckets at once

  # 6. an invalid file is refused at reload, naming the problem; the running config stays.
  local conf1 out after_ms
  _lab_ms
  after_ms=$_LAB_MS
  conf1=$(lab_node_config 1)
  cp "$conf1" "$work/node1.toml"
  printf '\n[flows]\nwindow = 0\n' >>"$conf1"
  out=$("$VIPFARMCTL" reload --socket "$(lab_api_socket 1)" 2>&1)
  check "$mode: an invalid file is refused at reload, naming the key" \
    grep -q "reload refused: the file is invalid" <<<"$out"
  cp "$work/node1.toml" "$conf1"
  sed -i 's/^workers = 1$/workers = 2/' "$conf1"
  out=$("$VIPFARMCTL" reload --socket "$(lab_api_socket 1)" 2>&1)
  check "$mode: a restart-only change is refused, named (dataplane.workers)" \
    grep -q "need a restart.*dataplane.workers" <<<"$out"
  cp "$work/node1.toml" "$conf1"
  check "$mode: the farm still runs the view 1,3,4" lab_wait_view 1,3,4 2 1 3 4
  if [[ $mode == on ]]; then
    # 6b. Timers and checkers reload without a restart. Heartbeats 100 -> 200 ms on every
    # node (a step the peers can follow) and a second checker: no view change, and node 1's
    # heartbeat rate halves. 100 -> 1000 ms at once is refused (the peers would lose it).
    local epoch0 rate
    epoch0=$(epoch_of 1)
    for k in 1 2 3 4; do
      sed -i 's/^split_brain = "serve"$/split_brain = "serve"\ninterval_ms = 200/' "$(lab_node_config "$k")"
      printf '\n[[checker]]\nname = "nginx-again"\nkind = "tcp"\ntarget = "127.0.0.1:80"\ninterval_ms = 300\n' \
        >>"$(lab_node_config "$k")"
    done
    check "$mode: heartbeat interval and a new checker reloaded on nodes 1,3,4" reload_all 1 3 4
    rate=$(heartbeat_rate 1 2)
    echo "$mode: node 1 sends $rate heartbeats/s to its 3 peers after the reload (30/s at 100 ms)"
    check "$mode: node 1 beats every 200 ms now ($rate/s, 15 expected)" \
      $py -c 'import sys; r = float(sys.argv[1]); sys.exit(0 if 12 <= r <= 19 else 1)' "$rate"
    check "$mode: the new checker runs on node 3" lab_wait_for 5 checker_runs 3 nginx-again
    check "$mode: no view change from the timer and checker reload" test "$(epoch_of 1)" = "$epoch0"
    sed -i 's/^interval_ms = 200$/interval_ms = 1000/' "$conf1"
    out=$("$VIPFARMCTL" reload --socket "$(lab_api_socket 1)" 2>&1)
    check "$mode: a heartbeat interval the peers cannot follow (200 -> 1000 ms) is refused, named" \
      grep -q "membership.interval_ms 1000" <<<"$out"
    sed -i 's/^interval_ms = 1000$/interval_ms = 200/' "$conf1"
    # A checker that fails, added by reload on node 3: it leaves the view once the check has
    # failed twice (fall), and returns when the reload takes it away again.
    local conf3
    conf3=$(lab_node_config 3)
    cp "$conf3" "$work/node3.toml"
    printf '\n[[checker]]\nname = "port81"\nkind = "tcp"\ntarget = "127.0.0.1:81"\ninterval_ms = 200\n' >>"$conf3"
    check "$mode: a failing checker reloaded on node 3" "$VIPFARMCTL" reload --socket "$(lab_api_socket 3)"
    check "$mode: node 3 leaves on its new failing checker" lab_wait_view 1,4 5 1 3 4
    cp "$work/node3.toml" "$conf3"
    check "$mode: the failing checker reloaded away on node 3" "$VIPFARMCTL" reload --socket "$(lab_api_socket 3)"
    check "$mode: node 3 is back" lab_wait_view 1,3,4 5 1 3 4
  fi
  # 7. a drain with a timeout ends in STOP, cutting what is left.
  check "$mode: node 4 drained with a 1 s timeout" \
    "$VIPFARMCTL" drain --timeout 1 --socket "$(lab_api_socket 4)"
  stopped4() { "$VIPFARMCTL" state --socket "$(lab_api_socket 4)" >/dev/null; test $? -eq 0; }
  check "$mode: node 4 is STOP after its drain timeout (exit status 0)" lab_wait_for 5 stopped4

  touch "$stop_file"
  _lab_ms
  local deadline=$((_LAB_MS + 5000))
  while _lab_alive "$probe_pid" && { _lab_ms && ((_LAB_MS < deadline)); }; do sleep 0.05; done
  read -r breaks new_total new_failed lost2 lost_others < <($py - "$events" "$kill_ms" "$after_ms" <<'PY'
import json, sys
events = [json.loads(l) for l in open(sys.argv[1])]
kill, until = float(sys.argv[2]), float(sys.argv[3])
breaks = [e for e in events if e["kind"] == "keep_break" and e["at"] < kill]
after = [e for e in events if e["kind"] == "keep_break" and kill <= e["at"] < until]
attempts = [e for e in events if e["kind"] == "attempt" and e["start"] < kill]
failed = [e for e in attempts if not e["ok"]]
for e in breaks[:5]:
    print(f"  break: {e['src']} ({e['node']}): {e['why']}", file=sys.stderr)
for e in failed[:5]:
    print(f"  new connection failed: {e['src']}: {e['why']}", file=sys.stderr)
lost2 = {e["src"] for e in after if e["node"] == "node2"}
others = {e["src"] for e in after if e["node"] != "node2"}
for e in [e for e in after if e["node"] != "node2"][:5]:
    print(f"  after the kill, broke: {e['src']} ({e['node']}): {e['why']}", file=sys.stderr)
print(len({e["src"] for e in breaks}), len(attempts), len(failed), len(lost2), len(others))
PY
  )
  echo "$mode: $breaks of $connections long-lived connections broke or stalled; $new_failed of $new_total new connections failed"
  echo "$mode: node 2 killed mid-handoff: $lost2 of its connections lost, $lost_others others broke"
  for k in 1 3 4; do  # node 2 was killed
    "$VIPFARMCTL" counters --socket "$(lab_api_socket "$k")" --json |
      $py -c 'import json,sys; c=json.load(sys.stdin); print("  node", sys.argv[1], "handoff", c.get("handoff"))' "$k"
    local flows_line
    flows_line=$(lab_exec_node "$k" curl -s --max-time 2 http://10.77.0."$k":9469/metrics |
      awk '/^vipfarm_flows_(inserted|refused|evicted)_total / {printf "%s %s  ", $1, $2}')
    echo "    flows: $flows_line"
    [[ $flows_line =~ vipfarm_flows_evicted_total\ ([0-9]+) ]] && evicted=$((evicted + BASH_REMATCH[1]))
  done
  lab_stop_daemons
  lab_down
}

scenario on
on_breaks=$breaks
check "handoff on: the SYN flood overflowed the flow tables ($evicted embryonic flows evicted) and no tracked connection broke" \
  test "$evicted" -gt 0 -a "$on_breaks" -eq 0
check "handoff on: the old owner's death mid-handoff lost its own connections ($lost2), no other ($lost_others)" \
  test "$lost2" -gt 0 -a "$lost_others" -eq 0
check "handoff on: no long-lived connection broke or stalled ($on_breaks of $connections)" test "$on_breaks" -eq 0
check "handoff on: every new connection succeeded ($new_failed of $new_total failed)" test "$new_failed" -eq 0
scenario off
off_breaks=$breaks
echo "long-lived connections broken by a join, a drain, a weight change and a rule change: $on_breaks with handoff, $off_breaks without (of $connections)"
check "handoff off: connections in moved buckets break (the comparison shows something: $off_breaks)" \
  test "$off_breaks" -gt 0

LAB_AT_EXIT=""
rm -rf "$work"
summary
((failed == 0))
