#!/usr/bin/env bash
# shellcheck disable=SC2119,SC2317 # lab_* functions take optional args; at_exit runs from the trap
# Lab tests of issue 4 for partitions, loss, forged heartbeats and a stalled daemon, on real
# farms in network namespaces (tests/lab/lib.sh), membership at its defaults (100 ms
# heartbeats, dead after 8):
#  1. serve mode, 4 nodes: nftables rules in the node namespaces cut the heartbeats between
#     {1,2} and {3,4}; each half installs its own view and owns all 256 buckets between its
#     two nodes; the rules go: every node installs 1,2,3,4 again within LAB_HEAL_BOUND_MS;
#  2. majority mode, 3 nodes: node 3 cut off from {1,2}; {1,2} installs 1,2, node 3 the
#     empty view and serves nothing (owns no bucket, accepts no client frame while its
#     former clients are served by the predicted owner among 1,2); healed within the bound;
#  2b. majority mode with a witness (the client's address), 4 nodes: nodes 3 and 4 lose the
#     witness (their pings dropped), then {1,2} | {3,4} are cut: the half that reaches the
#     witness installs its view and serves all 256 buckets, the other the empty view;
#  3. serve mode, 3 nodes: 5% of the heartbeats dropped at random on the switch (a bridge
#     nftables table) for LAB_LOSS_SECONDS: no node installs a new view; the rule's
#     counters show the loss was really 2-10% of the heartbeats;
#  4. the same farm: forged, replayed, truncated, oversized, wrongly signed, foreign, stale
#     and TTL-64 heartbeats from the client namespace to node 1 (scapy): each counted under
#     its rejection reason, exactly; none accepted; no view change anywhere;
#  5. the same farm: node 2's daemon SIGSTOPped for LAB_STALL_SECONDS, then SIGCONT, under
#     continuous client connections to node 2's buckets (captured on the client): nodes 1
#     and 3 take node 2's buckets during the stall; after SIGCONT node 2 drops what queued
#     for its old buckets (lease_expired grows) and answers nothing until nodes 1 and 3 have
#     installed a view after the stall (its lease never comes back under the pre-stall
#     epoch); no connection attempt is answered by two nodes, except around that view's
#     installs and then within one heartbeat interval; node 2 serves its buckets again.
# Needs root, nft (Debian package nftables), build/vipfarmd and build/vipfarmctl.
# Knobs: LAB_LOSS_SECONDS (60), LAB_HEAL_BOUND_MS (3000), LAB_STALL_SECONDS (3), and
# lib.sh's. Ends with "lab-partition: N passed, M failed"; prints figures on stdout.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=/usr/bin/python3
loss_seconds=${LAB_LOSS_SECONDS:-60}
heal_bound_ms=${LAB_HEAL_BOUND_MS:-3000}
stall_seconds=${LAB_STALL_SECONDS:-3}
interval_ms=100 # conf/lab.toml's [membership] interval (the default)
hb_port=9470    # conf/lab.toml's [membership] port (the default)

# The lab config (LAB_CONFIG, default conf/lab.toml) for the serve-mode farms, and a copy
# in majority mode for test 2 (removed on every exit path).
serve_config=${LAB_CONFIG:-$here/../../conf/lab.toml}
serve_config=$(cd "$(dirname "$serve_config")" && pwd)/$(basename "$serve_config")
work=$(mktemp -d "${TMPDIR:-/tmp}/vipfarm-partition.XXXXXX")
majority_config=$work/lab-majority.toml
witness_config=$work/lab-witness.toml
$py - "$serve_config" "$majority_config" "$witness_config" <<'PY' || { rm -rf "$work"; echo "lab-partition: 0 passed, 1 failed"; exit 1; }
import sys
text = open(sys.argv[1]).read()
assert text.count('split_brain = "serve"') == 1, f'{sys.argv[1]}: no split_brain = "serve"'
open(sys.argv[2], "w").write(text.replace('split_brain = "serve"', 'split_brain = "majority"'))
# The witness: the client's address (every node reaches it through its TAP and the switch).
open(sys.argv[3], "w").write(text.replace('split_brain = "serve"',
                                          'split_brain = "majority"\nwitness = "10.77.0.250"'))
PY

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"
CHECK_NAME=lab-partition
# shellcheck source=../lib/check.sh
source "$here/../lib/check.sh"
at_exit() {
  stopped_early "$1"
  rm -rf "$work"
}
LAB_AT_EXIT=at_exit

command -v nft >/dev/null || {
  echo "lab-partition: nft not found (Debian package nftables)" >&2
  exit 1
}

# --- helpers --------------------------------------------------------------------------
ctl() { # ctl K CMD...: vipfarmctl CMD --json on node K's admin socket
  local k=$1
  shift
  "$VIPFARMCTL" "$@" --json --socket "$(lab_api_socket "$k")"
}
# view_of K: "EPOCH MEMBERS LEASE" of node K's installed view (MEMBERS "-" when empty,
# LEASE 1/0), or "none" when it does not answer.
view_of() {
  ctl "$1" view 2>/dev/null | $py -c '
import json, sys
v = json.load(sys.stdin)
print(v["epoch"], ",".join(map(str, v["members"])) or "-", int(v["lease_ok"]))' 2>/dev/null || echo none
}
# metrics K: node K's Prometheus page as "name value" lines, with
# vipfarm_heartbeats_rejected_total{reason="X"} shortened to rejected_X.
metrics() {
  lab_exec_node "$1" curl -s --max-time 2 http://10.77.0."$1":9469/metrics |
    sed -n -e 's/^vipfarm_heartbeats_rejected_total{reason="\([a-z_]*\)"} /rejected_\1 /p' \
      -e 's/^\(vipfarm_[a-z_]*\) \([0-9.e+]*\)$/\1 \2/p'
}
metric() { # metric K NAME: one value of metrics (NaN when absent)
  metrics "$1" | awk -v n="$2" '$1 == n {v = $2} END {print (v == "" ? "NaN" : v)}'
}
# same_epoch K...: every node K... has installed the same view under the same epoch.
same_epoch() {
  local k first=""
  for k in "$@"; do
    local v
    v=$(view_of "$k")
    [[ $v != none ]] || return 1
    v=${v% *}
    [[ -z $first ]] && first=$v
    [[ $v == "$first" ]] || return 1
  done
}
# half_owns NODES K...: in every node K...'s owner map, the 256 buckets are all owned by
# NODES (e.g. 1,2), each of NODES owns some, and the maps are identical (I2).
half_owns() {
  local want=$1 k
  shift
  for k in "$@"; do ctl "$k" buckets || return 1; done | $py -c '
import json, sys
want = {int(x) for x in sys.argv[1].split(",")}
maps = [json.loads(line)["groups"][0]["owners"] for line in sys.stdin]
for m in maps:
    assert len(m) == 256 and set(m) == want, (len(m), sorted(set(m)))
assert all(m == maps[0] for m in maps), "owner maps differ"
print(" ".join(f"node{n}={maps[0].count(n)}" for n in sorted(want)))' "$want"
}
quiet() { "$@" >/dev/null 2>&1; } # quiet CMD...: CMD without its output
owned() { # owned K: buckets node K owns now (status)
  ctl "$1" status | $py -c 'import json,sys; print(json.load(sys.stdin)["groups"][0]["owned"])'
}
# cut K ADDR...: in node K's namespace, drop heartbeats to and from ADDR...
cut() {
  local k=$1
  shift
  local set
  set=$(
    IFS=,
    echo "$*"
  )
  lab_exec_node "$k" nft -f - <<EOF
table inet vfpart {
  chain out { type filter hook output priority 0; policy accept; ip daddr { $set } udp dport $hb_port counter drop; }
  chain in { type filter hook input priority 0; policy accept; ip saddr { $set } udp dport $hb_port counter drop; }
}
EOF
}
cut_halves() { # cut_halves: heartbeats cut between {1,2} and {3,4}
  cut 1 10.77.0.3 10.77.0.4
  cut 2 10.77.0.3 10.77.0.4
  cut 3 10.77.0.1 10.77.0.2
  cut 4 10.77.0.1 10.77.0.2
}
cut_drops() { # cut_drops K: heartbeats node K's partition rules dropped (out + in)
  lab_exec_node "$1" nft list table inet vfpart 2>/dev/null |
    awk '/counter packets/ {for (i = 1; i < NF; i++) if ($i == "packets") s += $(i + 1)} END {print s + 0}'
}
heal() { # heal K...: delete the partition rules in nodes K...
  local k
  for k in "$@"; do lab_exec_node "$k" nft delete table inet vfpart; done
}
farm() { # farm N LABEL: a fresh farm of N nodes with nginx, converged on the full view
  lab_up "$1"
  lab_start_daemons
  lab_wait_ready
  lab_start_nginx
  check "$2: the farm agrees on the view $(lab_view)" lab_wait_view "$(lab_view)" 20
}

# --- 1. a partition in serve mode: each half serves all its buckets --------------------
echo "== test 1: partition {1,2} | {3,4}, split_brain = serve"
farm 4 "test 1"
epoch0=$(view_of 1)
epoch0=${epoch0%% *}
cut_halves
_lab_ms
t_cut=$_LAB_MS
check "test 1: nodes 1 and 2 install the view 1,2" lab_wait_view 1,2 5 1 2
check "test 1: nodes 3 and 4 install the view 3,4" lab_wait_view 3,4 5 3 4
_lab_ms
echo "test 1: both halves installed their own view $((_LAB_MS - t_cut)) ms after the cut"
one=no
same_epoch 1 2 && same_epoch 3 4 && one=yes
check "test 1: each half agrees on its epoch ($one)" test "$one" == yes
shares=$(half_owns 1,2 1 2) || shares=""
shares34=$(half_owns 3,4 3 4) || shares34=""
echo "test 1: half {1,2} owner maps: ${shares:-wrong}; half {3,4}: ${shares34:-wrong}"
check "test 1: {1,2} own all 256 buckets between them, {3,4} too, each half with one map" \
  test -n "$shares" -a -n "$shares34"
sum12=$(($(owned 1) + $(owned 2)))
sum34=$(($(owned 3) + $(owned 4)))
check "test 1: owned (status) nodes 1+2 = 256 ($sum12), nodes 3+4 = 256 ($sum34)" \
  test "$sum12" -eq 256 -a "$sum34" -eq 256
drops=0
for k in 1 2 3 4; do drops=$((drops + $(cut_drops "$k"))); done
echo "test 1: the partition rules dropped $drops heartbeats"
_lab_ms
t_heal=$_LAB_MS
heal 1 2 3 4
if lab_wait_view 1,2,3,4 10; then
  done_ms=$(lab_installed_at 1,2,3,4 1 2 3 4) || done_ms=-1
else
  done_ms=-1
fi
heal_ms=$((done_ms < 0 ? -1 : done_ms - t_heal))
echo "test 1: healed: every node installed 1,2,3,4 ${heal_ms} ms after the rules went (bound ${heal_bound_ms} ms)"
check "test 1: healed within ${heal_bound_ms} ms (${heal_ms} ms)" \
  test "$heal_ms" -ge 0 -a "$heal_ms" -le "$heal_bound_ms"
epoch1=$(view_of 1)
epoch1=${epoch1%% *}
one=no
same_epoch 1 2 3 4 && one=yes
check "test 1: after the heal every node has one view under one new epoch (one: $one, $epoch1 > $epoch0)" \
  test "$one" == yes -a "$epoch1" -gt "$epoch0"
shares=$(half_owns 1,2,3,4 1 2 3 4) || shares=""
check "test 1: after the heal one owner map on the 4 nodes, each owns some (${shares:-wrong})" test -n "$shares"
check "test 1: the daemons exit 0 on SIGTERM" lab_stop_daemons
lab_down

# --- 2. a partition in majority mode: the minority serves nothing -----------------------
echo "== test 2: node 3 cut off from {1,2}, split_brain = majority"
LAB_CONFIG=$majority_config
farm 3 "test 2"
mapfile -t sources2 < <(lab_client_addrs 30)
mine3=()
for addr in "${sources2[@]}"; do
  [[ $(lab_owner "$addr" 1,2,3) == 3 ]] && mine3+=("$addr")
  ((${#mine3[@]} == 4)) && break
done
cut 1 10.77.0.3
cut 2 10.77.0.3
cut 3 10.77.0.1 10.77.0.2
_lab_ms
t_cut=$_LAB_MS
check "test 2: nodes 1 and 2 install the view 1,2" lab_wait_view 1,2 5 1 2
check "test 2: node 3 installs the empty view" lab_wait_view "" 5 3
_lab_ms
v3=$(view_of 3)
echo "test 2: views installed $((_LAB_MS - t_cut)) ms after the cut; node 3: epoch, members, lease: $v3"
read -r e3 m3 _ <<<"$v3"
check "test 2: node 3's view is empty, under an epoch ($v3)" test "$m3" == "-" -a "$e3" -ge 1
check "test 2: node 3 owns no bucket ($(owned 3))" test "$(owned 3)" -eq 0
shares=$(half_owns 1,2 1 2) || shares=""
check "test 2: {1,2} own all 256 buckets (${shares:-wrong})" test -n "$shares"
# Node 3's former clients: answered by their owner in the view 1,2; node 3 accepts nothing.
accept3() { ctl 3 counters | $py -c 'import json,sys; print(json.load(sys.stdin)["verdicts"]["accept"])'; }
a0=$(accept3)
bad=0
for addr in "${mine3[@]}"; do
  want=$(lab_owner "$addr" 1,2)
  body=$(lab_exec_client curl -sS --noproxy '*' --max-time 2 --interface "$addr" "http://$LAB_VIP4/" 2>&1)
  [[ $body == "node$want" ]] || {
    bad=$((bad + 1))
    echo "test 2: $addr: expected node$want, got ${body//$'\n'/ }" >&2
  }
done
a1=$(accept3)
check "test 2: node 3's ${#mine3[@]} former client sources answered by their owner in 1,2 ($bad not)" \
  test "${#mine3[@]}" -ge 2 -a "$bad" -eq 0
check "test 2: node 3 accepted no client frame meanwhile ($((a1 - a0)))" test "$a1" -eq "$a0"
_lab_ms
t_heal=$_LAB_MS
heal 1 2 3
if lab_wait_view 1,2,3 10; then
  done_ms=$(lab_installed_at 1,2,3 1 2 3) || done_ms=-1
else
  done_ms=-1
fi
heal_ms=$((done_ms < 0 ? -1 : done_ms - t_heal))
echo "test 2: healed: every node installed 1,2,3 ${heal_ms} ms after the rules went (bound ${heal_bound_ms} ms)"
check "test 2: healed within ${heal_bound_ms} ms (${heal_ms} ms)" \
  test "$heal_ms" -ge 0 -a "$heal_ms" -le "$heal_bound_ms"
one=no
same_epoch 1 2 3 && one=yes
check "test 2: after the heal one epoch everywhere ($one), node 3 owns its share again ($(owned 3))" \
  test "$one" == yes -a "$(owned 3)" -ge 85
check "test 2: the daemons exit 0 on SIGTERM" lab_stop_daemons
lab_down

# --- 2b. majority with a witness: of two equal halves, the one that reaches it serves ------
echo "== test 2b: partition {1,2} | {3,4}, split_brain = majority, witness $LAB_CLIENT4"
LAB_CONFIG=$witness_config
farm 4 "test 2b"
witness_of() { # witness_of K: true/false, node K's witness checker
  ctl "$1" view | $py -c 'import json,sys; print(str(json.load(sys.stdin)["witness"]).lower())'
}
all_reach() { local k; for k in 1 2 3 4; do [[ $(witness_of "$k") == true ]] || return 1; done; }
check "test 2b: every node reaches the witness" lab_wait_for 10 all_reach
# Nodes 3 and 4 lose the witness (their pings to it dropped), then the halves are cut.
for k in 3 4; do
  lab_exec_node "$k" nft -f - <<EOF
table inet vfwitness {
  chain out { type filter hook output priority 0; ip daddr $LAB_CLIENT4 icmp type echo-request drop; }
}
EOF
done
lost() { [[ $(witness_of 3) == false && $(witness_of 4) == false ]]; }
check "test 2b: nodes 3 and 4 see the witness unreachable" lab_wait_for 10 lost
check "test 2b: with the witness lost, no view change yet (the farm is whole)" lab_wait_view 1,2,3,4 1
cut_halves
_lab_ms
t_cut=$_LAB_MS
check "test 2b: the half with the witness (1,2) installs the view 1,2" lab_wait_view 1,2 5 1 2
check "test 2b: the half without it (3,4) installs the empty view" lab_wait_view "" 5 3 4
_lab_ms
echo "test 2b: views installed $((_LAB_MS - t_cut)) ms after the cut"
shares=$(half_owns 1,2 1 2) || shares=""
check "test 2b: {1,2} own all 256 buckets (${shares:-wrong}), nodes 3 and 4 none ($(owned 3), $(owned 4))" \
  test -n "$shares" -a "$(owned 3)" -eq 0 -a "$(owned 4)" -eq 0
heal 1 2 3 4
for k in 3 4; do lab_exec_node "$k" nft delete table inet vfwitness; done
check "test 2b: healed: the view 1,2,3,4 again" lab_wait_view 1,2,3,4 10
check "test 2b: the daemons exit 0 on SIGTERM" lab_stop_daemons
lab_down

# --- 3. 5% heartbeat loss on the switch: no view change ---------------------------------
# Only heartbeats (UDP port 9470) are dropped: failure detection is what loss could upset,
# no client traffic runs meanwhile, and counting one kind of frame makes the rule's loss
# rate exact (ARP and the rest pass untouched).
echo "== test 3: 5% heartbeat loss for ${loss_seconds} s, split_brain = serve"
LAB_CONFIG=$serve_config
farm 3 "test 3"
declare -A epoch_before=() views_before=()
for k in 1 2 3; do
  epoch_before[$k]=$(metric "$k" vipfarm_view_epoch)
  views_before[$k]=$(metric "$k" vipfarm_views_installed_total)
done
ip netns exec "$LAB_SWITCH_NS" nft -f - <<EOF
table bridge vfloss {
  counter heartbeats {}
  counter dropped {}
  chain forward {
    type filter hook forward priority 0; policy accept;
    meta l4proto udp udp dport $hb_port counter name "heartbeats"
    meta l4proto udp udp dport $hb_port numgen random mod 100 < 5 counter name "dropped" drop
  }
}
EOF
check "test 3: the loss rule is in place on the switch" \
  quiet ip netns exec "$LAB_SWITCH_NS" nft list table bridge vfloss
nft_count() { # nft_count NAME: packets of the switch's named counter NAME
  ip netns exec "$LAB_SWITCH_NS" nft list counter bridge vfloss "$1" 2>/dev/null |
    awk '{for (i = 1; i < NF; i++) if ($i == "packets") print $(i + 1)}'
}
_lab_ms
soak_end=$((_LAB_MS + loss_seconds * 1000))
changed=""
polls=0
while :; do
  polls=$((polls + 1))
  for k in 1 2 3; do
    v=$(view_of "$k")
    if [[ $v != "${epoch_before[$k]%.*} 1,2,3 1" ]]; then
      changed="node $k: '$v' after $polls polls (was epoch ${epoch_before[$k]} 1,2,3)"
      break 2
    fi
  done
  _lab_ms
  ((_LAB_MS >= soak_end)) && break
  next=$((_LAB_MS + 1000 < soak_end ? 1000 : soak_end - _LAB_MS))
  sleep "$((next / 1000)).$(printf '%03d' $((next % 1000)))"
done
all=$(nft_count heartbeats)
dropped=$(nft_count dropped)
ip netns exec "$LAB_SWITCH_NS" nft delete table bridge vfloss
echo "test 3: ${loss_seconds} s of loss: the switch dropped ${dropped:-?} of ${all:-?} heartbeats ($($py -c 'import sys; a, d = int(sys.argv[1] or 0), int(sys.argv[2] or 0); print(f"{100 * d / a:.2f}%" if a else "-")' "${all:-0}" "${dropped:-0}"))"
check "test 3: no view change on any node during the loss ${changed:+($changed)}" test -z "$changed"
for k in 1 2 3; do
  e=$(metric "$k" vipfarm_view_epoch)
  n=$(metric "$k" vipfarm_views_installed_total)
  check "test 3: node $k installed no view (epoch ${epoch_before[$k]} -> $e, views installed ${views_before[$k]} -> $n)" \
    test "$e" == "${epoch_before[$k]}" -a "$n" == "${views_before[$k]}"
done
# 3 nodes x 2 peers x 10 heartbeats a second; the drop rate between 2% and 10%.
check "test 3: the rule saw the heartbeats (${all:-0}, about $((loss_seconds * 60)) expected) and dropped 2-10% (${dropped:-0})" \
  test "${all:-0}" -ge $((loss_seconds * 50)) -a "$((${dropped:-0} * 100))" -ge "$((${all:-0} * 2))" \
  -a "$((${dropped:-0} * 100))" -le "$((${all:-0} * 10))"

# --- 4. forged and replayed heartbeats from the client namespace -------------------------
# Signed forgeries ((e) wrong cluster, (f) unknown node, (g) stale, (h) TTL 64) use the real
# cluster key (LAB_KEY): they exercise the checks that stand behind the MAC, which no one
# without the key can reach. Every datagram the daemon reads moves exactly one counter,
# either a rejection reason or heartbeats_received: so when the rejection counters grow by
# exactly what was sent, none of it was accepted (and received is also checked against what
# the real peers sent meanwhile).
echo "== test 4: forged heartbeats to node 1"
pcap=$LAB_DIR/node2-heartbeats.pcap
lab_exec_node 1 timeout 5 tcpdump -Z root -i "$LAB_TAP" -w "$pcap" -c 5 "udp port $hb_port and src host 10.77.0.2" 2>/dev/null
check "test 4: 5 heartbeats of node 2 captured on node 1's $LAB_TAP" \
  test "$(tcpdump -r "$pcap" 2>/dev/null | wc -l)" -eq 5
declare -A before4=()
for k in 1 2 3; do before4[$k]=$(metrics "$k"); done
status1=$(ctl 1 status)
fingerprint=$($py -c 'import json,sys; print(json.loads(sys.argv[1])["fingerprint"])' "$status1")
incarnation2=$(ctl 1 nodes | $py -c 'import json,sys; print(next(n["incarnation"] for n in json.load(sys.stdin)["nodes"] if n["id"] == 2))')
read -r epoch4 _ <<<"$(view_of 1)"
client_mac=$(ip -n "$LAB_CLIENT_NS" link show dev "$LAB_CLIENT_IF" | awk '/link\/ether/ {print $2}')
mac_of() {  # mac_of K J: node J's uplink MAC as node K knows it (K = J: its own)
  ctl "$1" nodes | $py -c 'import json,sys; print(next(n["mac"] for n in json.load(sys.stdin)["nodes"] if n["id"] == int(sys.argv[1])))' "$2"
}
mac2=$(mac_of 2 2)
check "test 4: node 1 learned node 2's uplink MAC ($mac2) from its heartbeats" test "$(mac_of 1 2)" = "$mac2"
sent4=$(lab_exec_client $py - "$LAB_CLIENT_IF" "$client_mac" 02:77:00:00:01:01 "$LAB_KEY" "$pcap" \
  "$incarnation2" "$fingerprint" "$epoch4" "$mac2" <<'PY'
import hashlib, hmac, json, os, struct, sys, time
from scapy.all import IP, UDP, Ether, Raw, conf, rdpcap
iface, src_mac, dst_mac, key_path, pcap, incarnation, fp_hex, epoch, mac2 = sys.argv[1:10]
incarnation, epoch = int(incarnation), int(epoch)
mac2 = bytes.fromhex(mac2.replace(":", ""))
key = open(key_path, "rb").read()
cluster = hashlib.sha256(b"lab").digest()[:8]
fingerprint = bytes.fromhex(fp_hex)
members = 0b111

def header(node=2, key_id=1, cluster=cluster, incarnation=incarnation, sequence=1, state=2,
           weights=(1,), version=3, count=None, release=b"", release_len=None, flags=0,
           heard=(), heard_count=None):
    # wire.hpp, version 3: a 100-byte header (flags at 17, the heard count at 19, the
    # sender's MAC and 2 reserved bytes at 92), 2 bytes per group weight, the release map's
    # length (2 bytes) and the map, then 10 bytes per heard peer (id, flags, sequence),
    # big-endian.
    return (b"VFHB" + struct.pack(">BBH", version, state, key_id) + cluster +
            struct.pack(">BBBB", node, flags, len(weights) if count is None else count,
                        len(heard) if heard_count is None else heard_count) +
            struct.pack(">QQ", incarnation, sequence) + fingerprint +
            struct.pack(">QQQ", epoch, members, members) + mac2 + b"\0\0" +
            b"".join(struct.pack(">H", w) for w in weights) +
            struct.pack(">H", len(release) if release_len is None else release_len) + release +
            b"".join(struct.pack(">BBQ", *e) for e in heard))

def sign(h, k=key):
    return h + hmac.new(k, h, hashlib.sha256).digest()

# The captured heartbeats of node 2: our encoder must reproduce them bit for bit.
real = [bytes(p[UDP].payload) for p in rdpcap(pcap) if UDP in p and p[IP].src == "10.77.0.2"]
assert len(real) == 5, f"{len(real)} heartbeats of node 2 in the capture"
for r in real:
    assert hmac.new(key, r[:-32], hashlib.sha256).digest() == r[-32:], "captured MAC does not verify"
    node, flags, w, n_heard = struct.unpack(">BBBB", r[16:20])
    assert len(r) == 100 + 2 * w + 2 + 10 * n_heard + 32, len(r)
    inc, seq = struct.unpack(">QQ", r[20:36])
    ep, inst, prop = struct.unpack(">QQQ", r[68:92])
    mac = r[92:98]
    weights = struct.unpack(">%dH" % w, r[100:100 + 2 * w])
    (release_len,) = struct.unpack(">H", r[100 + 2 * w:102 + 2 * w])
    at = 102 + 2 * w + release_len
    heard = [struct.unpack(">BBQ", r[at + 10 * i:at + 10 * i + 10]) for i in range(n_heard)]
    assert sorted(e[0] for e in heard) == [1, 3], f"node 2 hears {heard}"
    assert all(e[1] & 3 == 3 for e in heard), f"node 2 does not count both mutual: {heard}"
    again = sign(b"VFHB" + r[4:16] + struct.pack(">BBBB", node, flags, w, n_heard) +
                 struct.pack(">QQ", inc, seq) + r[36:68] + struct.pack(">QQQ", ep, inst, prop) +
                 mac + b"\0\0" + b"".join(struct.pack(">H", x) for x in weights) +
                 struct.pack(">H", release_len) + r[102 + 2 * w:at] +
                 b"".join(struct.pack(">BBQ", *e) for e in heard))
    assert mac == mac2, f"node 2 advertises {mac.hex()}, its uplink is {mac2.hex()}"
    assert again == r and node == 2 and inc == incarnation and r[8:16] == cluster, "re-encoding differs"

# Sequences a little ahead of node 2's live one (wire.hpp: a receiver refuses any more than
# Freshness::kWindow ahead before the HMAC, as "ahead"), so each kind reaches the check it is
# meant for.
base = max(struct.unpack(">Q", r[28:36])[0] for r in real) + 10000
good = sign(header(sequence=base + 100))
kinds = []  # (expected reason, payload, ttl, source)
for r in real:                                             # (a) replayed as captured
    kinds.append(("replay", r, 255, "10.77.0.2"))
for n in (1, 7, 50, 124, 200):                             # (b) garbage
    kinds.append(("malformed", os.urandom(n), 255, "10.77.0.250"))
for i in range(5):                                         # (c) right layout, random MAC
    kinds.append(("bad_mac", header(sequence=base + 200 + i) + os.urandom(32), 255, "10.77.0.2"))
for i in range(5):                                         # (d) key id 9
    kinds.append(("unknown_key", sign(header(key_id=9, sequence=base + 300 + i)), 255, "10.77.0.2"))
other = hashlib.sha256(b"not-lab").digest()[:8]
for i in range(5):                                         # (e) another cluster
    kinds.append(("wrong_cluster", sign(header(cluster=other, sequence=base + 400 + i)), 255, "10.77.0.2"))
for node in (9, 9, 4, 1, 0):                               # (f) unconfigured, own id, zero
    kinds.append(("unknown_node", sign(header(node=node, sequence=base + 500)), 255, "10.77.0.9"))
for i in range(5):                                         # (g) node 2, another incarnation
    kinds.append(("stale", sign(header(incarnation=incarnation ^ (1 + i), sequence=base + 600)), 255, "10.77.0.2"))
# (h) fresh and signed, not TTL 255: were one accepted, node 2's sequence would jump 10^4
# ahead on node 1, its real heartbeats would be replays meanwhile and node 1 would lose
# node 2 (a view change, caught below).
for i, ttl in enumerate((64, 64, 64, 254, 1)):
    kinds.append(("bad_ttl", sign(header(sequence=base + 700 + i)), ttl, "10.77.0.2"))
for i in range(5):                                         # (j) node 2's id, signed, from elsewhere
    kinds.append(("wrong_source", sign(header(sequence=base + 900 + i)), 255, "10.77.0.250"))
for i in range(5):                                         # (k) signed, too far ahead
    kinds.append(("ahead", sign(header(sequence=base + (1 << 17) + i)), 255, "10.77.0.2"))
for cut in (0, 20, 91, 100, 123, len(good) - 1):           # (i) truncated
    kinds.append(("malformed", good[:cut], 255, "10.77.0.2"))
for extra in (1, 256, 257, 1300):                          # (i) too long: for W=1, the largest
                                                           # heartbeat (1148), the read buffer, IP
    kinds.append(("malformed", good + os.urandom(extra), 255, "10.77.0.2"))
kinds.append(("malformed", sign(header(count=2, sequence=base + 800)), 255, "10.77.0.2"))    # W says 2, 1 there
kinds.append(("malformed", sign(header(version=1, sequence=base + 800)), 255, "10.77.0.2"))  # version 1
kinds.append(("malformed", sign(header(version=2, sequence=base + 800)), 255, "10.77.0.2"))  # version 2
kinds.append(("malformed", sign(header(heard_count=1, sequence=base + 800)), 255, "10.77.0.2"))  # N says 1, 0 there
kinds.append(("malformed", sign(header(heard=((3, 1, 5), (1, 1, 5)), sequence=base + 800)), 255,
              "10.77.0.2"))                                                                 # heard list not ascending
kinds.append(("malformed", sign(header(flags=2, sequence=base + 800)), 255, "10.77.0.2"))    # undefined flag
kinds.append(("malformed", sign(header(release=b"\xff" * 32, release_len=33, sequence=base + 800)),
              255, "10.77.0.2"))                                                            # map: 33 said, 32 there
kinds.append(("malformed", sign(header(state=4, sequence=base + 800)), 255, "10.77.0.2"))    # no such state
s = conf.L2socket(iface=iface)
counts = {}
for reason, payload, ttl, src in kinds:
    s.send(Ether(src=src_mac, dst=dst_mac) / IP(src=src, dst="10.77.0.1", ttl=ttl) /
           UDP(sport=9470, dport=9470) / Raw(payload))
    counts[reason] = counts.get(reason, 0) + 1
    time.sleep(0.004)
s.close()
print(json.dumps(counts, sort_keys=True))
PY
)
echo "test 4: sent to node 1: ${sent4:-nothing}"
check "test 4: the forger reproduced node 2's captured heartbeats bit for bit and sent its datagrams" \
  test -n "$sent4"
# rejections BEFORE AFTER: "reason=delta ..." for every reason, then received=delta
rejections() {
  $py - "$1" "$2" <<'PY'
import sys
def parse(text):
    return {l.split()[0]: float(l.split()[1]) for l in text.splitlines() if len(l.split()) == 2}
b, a = parse(sys.argv[1]), parse(sys.argv[2])
reasons = ["malformed", "unknown_key", "bad_mac", "wrong_cluster", "unknown_node", "stale", "replay", "bad_ttl", "wrong_source", "ahead", "over_budget"]
print(" ".join(f"{r}={int(a['rejected_' + r] - b['rejected_' + r])}" for r in reasons))
PY
}
want4=$($py -c '
import json, sys
c = json.loads(sys.argv[1] or "{}")
reasons = ["malformed", "unknown_key", "bad_mac", "wrong_cluster", "unknown_node", "stale", "replay", "bad_ttl", "wrong_source", "ahead", "over_budget"]
print(" ".join(f"{r}={c.get(r, 0)}" for r in reasons))' "$sent4")
_lab_ms
deadline=$((_LAB_MS + 5000))
while :; do
  after1=$(metrics 1)
  after2=$(metrics 2)
  after3=$(metrics 3)
  got4=$(rejections "${before4[1]}" "$after1")
  _lab_ms
  [[ $got4 == "$want4" ]] || ((_LAB_MS > deadline)) && break
  sleep 0.1
done
echo "test 4: node 1 rejected: $got4"
check "test 4: node 1 counted each kind under its reason, exactly (want $want4)" test "$got4" == "$want4"
for k in 2 3; do
  got=$(rejections "${before4[$k]}" "$(metrics "$k")")  # later than after2/3: still nothing
  check "test 4: node $k rejected nothing ($got)" \
    test "$got" == "malformed=0 unknown_key=0 bad_mac=0 wrong_cluster=0 unknown_node=0 stale=0 replay=0 bad_ttl=0 wrong_source=0 ahead=0 over_budget=0"
done
# Accepted heartbeats on node 1 = what nodes 2 and 3 sent it meanwhile (each sends to 2
# peers), within a few in flight at either end of the window: none of the forgeries.
received_check=$($py - "${before4[1]}" "$after1" "${before4[2]}" "$after2" "${before4[3]}" "$after3" <<'PY'
import sys
def parse(text):
    return {l.split()[0]: float(l.split()[1]) for l in text.splitlines() if len(l.split()) == 2}
b1, a1, b2, a2, b3, a3 = map(parse, sys.argv[1:7])
k = "vipfarm_heartbeats_received_total"
s = "vipfarm_heartbeats_sent_total"
recv = a1[k] - b1[k]
sent = (a2[s] - b2[s] + a3[s] - b3[s]) / 2
print(f"{int(recv)} {sent:.0f} {0 if abs(recv - sent) <= 4 else 1}")
PY
)
read -r recv4 peers4 off4 <<<"$received_check"
echo "test 4: node 1 accepted $recv4 heartbeats meanwhile; nodes 2 and 3 sent it about $peers4"
check "test 4: heartbeats_received counted only the real ones ($recv4 vs $peers4 sent, within 4)" \
  test "${off4:-1}" -eq 0
for k in 1 2 3; do
  b=$(awk '$1 == "vipfarm_views_installed_total" {print $2}' <<<"${before4[$k]}")
  a=$(metric "$k" vipfarm_views_installed_total)
  check "test 4: node $k installed no view ($b -> $a) and holds 1,2,3 under epoch $epoch4 ($(view_of "$k"))" \
    test "$a" == "$b" -a "$(view_of "$k")" == "$epoch4 1,2,3 1"
done

# --- 5. SIGSTOP node 2's daemon, SIGCONT: the lease keeps its stale ownership off -------
echo "== test 5: node 2's vipfarmd stopped for ${stall_seconds} s"
mapfile -t sources5 < <(lab_client_addrs 60)
src2=()     # 6 sources of node 2's buckets
declare -A ctrl_of=() # one source of node 1's, one of node 3's: never disturbed
for addr in "${sources5[@]}"; do
  o=$(lab_owner "$addr" 1,2,3)
  if ((o == 2)); then
    ((${#src2[@]} < 6)) && src2+=("$addr")
  elif [[ -z ${ctrl_of[$o]:-} ]]; then
    ctrl_of[$o]=$addr
  fi
  ((${#src2[@]} == 6 && ${#ctrl_of[@]} == 2)) && break
done
ctrl=("${ctrl_of[@]}")
check "test 5: 6 client sources of node 2's buckets, one of node 1's and one of node 3's" \
  test "${#src2[@]}" -eq 6 -a "${#ctrl[@]}" -eq 2
# The handshakes on the client: SYNs and SYN-ACKs with the Ethernet source (which node).
cap=$LAB_DIR/stall-handshakes.txt
lab_spawn "$LAB_CLIENT_NS" "$cap" timeout 60 tcpdump -lnnei "$LAB_CLIENT_IF" -tt -c 20000 \
  "tcp port 80 and tcp[tcpflags] & tcp-syn != 0"
cap_pid=$LAB_LAST_PID
_lab_ms
deadline=$((_LAB_MS + 10000))
until grep -q "listening on" "$cap" 2>/dev/null || { _lab_ms && ((_LAB_MS > deadline)); }; do sleep 0.05; done
# Connection attempts: from each source one every 80 ms, each from its own source port (a
# SYN is never retransmitted: an attempt gives up after 500 ms, before the 1 s RTO), an
# HTTP/1.0 GET when connected. One JSON line per attempt.
events=$LAB_DIR/stall-attempts.jsonl
stop_file=$LAB_DIR/stall.stop
cat >"$LAB_DIR/connector.py" <<'PY'
import errno, json, os, selectors, socket, sys, time
vip, stop_file, out_path, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
sources = sys.argv[5:]
out = open(out_path, "w", buffering=1)
sel = selectors.DefaultSelector()
now = time.time
end = now() + seconds
next_start = {s: now() for s in sources}
port = 20000
live = {}
def finish(sock, ok, why):
    a = live.pop(sock)
    sel.unregister(sock)
    sock.close()
    body = a["buf"].split(b"\r\n\r\n", 1)[-1].decode(errors="replace").strip()
    out.write(json.dumps({"src": a["src"], "port": a["port"], "start": a["start"] * 1000,
                          "end": now() * 1000, "ok": ok, "node": body if ok else "", "why": why}) + "\n")
while now() < end and not os.path.exists(stop_file):
    t = now()
    for src in sources:
        if next_start[src] <= t:
            next_start[src] = t + 0.08
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                sock.bind((src, port))
            except OSError:
                sock.close()
                continue
            finally:
                port = port + 1 if port < 60000 else 20000
            rc = sock.connect_ex((vip, 80))
            live[sock] = {"src": src, "port": sock.getsockname()[1], "start": t, "buf": b"", "sent": False}
            if rc not in (0, errno.EINPROGRESS):
                sel.register(sock, selectors.EVENT_WRITE)
                finish(sock, False, os.strerror(rc))
                continue
            sel.register(sock, selectors.EVENT_WRITE)
    for key, _ in sel.select(timeout=0.005):
        sock, a = key.fileobj, live[key.fileobj]
        if not a["sent"]:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                finish(sock, False, os.strerror(err))
                continue
            sock.send(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
            a["sent"] = True
            sel.modify(sock, selectors.EVENT_READ)
        else:
            try:
                data = sock.recv(4096)
            except OSError as e:
                finish(sock, False, str(e))
                continue
            if data:
                a["buf"] += data
            else:
                finish(sock, a["buf"].startswith(b"HTTP/1.1 200"), "closed")
    t = now()
    for sock in [s for s, a in live.items() if t - a["start"] > 0.5]:
        finish(sock, False, "timeout")
for sock in list(live):
    finish(sock, False, "stopped")
PY
lab_spawn "$LAB_CLIENT_NS" "$LAB_DIR/connector.log" $py "$LAB_DIR/connector.py" "$LAB_VIP4" \
  "$stop_file" "$events" 40 "${src2[@]}" "${ctrl[@]}"
conn_pid=$LAB_LAST_PID
# answered_by NODE SINCE_MS: attempts of node 2's sources started after SINCE_MS answered by NODE
answered_by() {
  $py - "$events" "$1" "$2" "${src2[@]}" <<'PY' 2>/dev/null || echo 0
import json, sys
path, node, since, sources = sys.argv[1], "node" + sys.argv[2], float(sys.argv[3]), set(sys.argv[4:])
n = 0
for line in open(path):
    e = json.loads(line)
    n += e["src"] in sources and e["ok"] and e["node"] == node and e["start"] > since
print(n)
PY
}
_lab_ms
t_traffic=$_LAB_MS
deadline=$((_LAB_MS + 5000))
until (($(answered_by 2 "$t_traffic") >= 12)) || { _lab_ms && ((_LAB_MS > deadline)); }; do sleep 0.1; done
check "test 5: before the stall node 2 answers its sources ($(answered_by 2 "$t_traffic") answers)" \
  test "$(answered_by 2 "$t_traffic")" -ge 12
lease0=$(ctl 2 counters | $py -c 'import json,sys; c = json.load(sys.stdin); print(c["lease_expired"] + c["exception_stalled"] + c["exception_stale"])')
read -r epoch5 _ <<<"$(view_of 2)"
pid2=${LAB_DAEMON_PID[2]}
_lab_ms
t_stop=$_LAB_MS
kill -STOP "$pid2"
if lab_wait_view 1,3 5 1 3; then
  _lab_ms
  failover_ms=$((_LAB_MS - t_stop))
else
  failover_ms=-1
fi
echo "test 5: nodes 1 and 3 installed the view 1,3 ${failover_ms} ms after the SIGSTOP"
check "test 5: during the stall nodes 1 and 3 take node 2's buckets (view 1,3 after ${failover_ms} ms)" \
  test "$failover_ms" -gt 0
_lab_ms
remain=$((t_stop + stall_seconds * 1000 - _LAB_MS))
((remain > 0)) && sleep "$((remain / 1000)).$(printf '%03d' $((remain % 1000)))" # the stall itself
_lab_ms
t_cont=$_LAB_MS
kill -CONT "$pid2"
# Node 2's view and lease right after it resumes, until it holds the lease again.
lease_log=$LAB_DIR/stall-lease.txt
: >"$lease_log"
deadline=$((t_cont + 5000))
while :; do
  v=$(view_of 2)
  _lab_ms
  echo "$_LAB_MS $v" >>"$lease_log"
  [[ $v == *" 1,2,3 1" && ${v%% *} -gt $epoch5 ]] && break
  ((_LAB_MS > deadline)) && break
  sleep 0.02
done
check "test 5: every node installs 1,2,3 again after the SIGCONT" lab_wait_view 1,2,3 5
_lab_ms
t_rejoin=$_LAB_MS
deadline=$((_LAB_MS + 5000))
until (($(answered_by 2 "$((t_rejoin + 200))") >= 12)) || { _lab_ms && ((_LAB_MS > deadline)); }; do sleep 0.1; done
_lab_ms
t_end=$_LAB_MS
touch "$stop_file"
deadline=$((_LAB_MS + 3000))
while _lab_alive "$conn_pid" && { _lab_ms && ((_LAB_MS < deadline)); }; do sleep 0.05; done
sleep 0.2 # the last SYN-ACKs reach the capture (written line by line)
kill -INT "$cap_pid" 2>/dev/null
wait "$cap_pid" 2>/dev/null
lease1=$(ctl 2 counters | $py -c 'import json,sys; c = json.load(sys.stdin); print(c["lease_expired"] + c["exception_stalled"] + c["exception_stale"])')
# Refused by the lapsed lease (lease_expired), or, when the exception lcore had not run again
# yet, by the stalled host path (exception_stalled, exception_stale): either way not served.
echo "test 5: node 2 dropped $((lease1 - lease0)) frames of its old buckets after the SIGCONT (lease_expired + exception_stalled + exception_stale)"
check "test 5: node 2 refused the traffic that queued during the stall ($((lease1 - lease0)))" \
  test "$((lease1 - lease0))" -gt 0
histories=$LAB_DIR/stall-histories.jsonl
for k in 1 2 3; do ctl "$k" history; done >"$histories"
$py - "$cap" "$events" "$histories" "$lease_log" "$t_stop" "$t_cont" "$epoch5" "$interval_ms" "$t_end" \
  "${src2[*]}" "${ctrl[*]}" >"$LAB_DIR/stall-analysis.txt" 2>&1 <<'PY'
import collections, datetime, json, re, sys
cap, events, histories, lease_log = sys.argv[1:5]
t_stop, t_cont, epoch0, interval = float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7]), float(sys.argv[8])
t_end = float(sys.argv[9])
src2, ctrl = set(sys.argv[10].split()), set(sys.argv[11].split())
mac_node = {f"02:77:00:00:01:{k:02x}": k for k in range(1, 65)}
problems = []
# Handshakes: SYN time per (client, port), the nodes that answered it.
syn, answers = {}, collections.defaultdict(set)
pat = re.compile(r"^(\d+\.\d+) (\S+) > (\S+), .*?: (\S+)\.(\d+) > (\S+)\.(\d+): Flags \[(S\.?)\]")
for line in open(cap, errors="replace"):
    m = pat.match(line)
    if not m:
        continue
    t, smac, _, a, ap, b, bp, flags = m.groups()
    if flags == "S":
        syn.setdefault((a, ap), float(t) * 1000)
    else:
        answers[(b, bp)].add(mac_node.get(smac.lower(), smac))
# The final view 1,2,3 (the first install after the SIGCONT on each node) and the view 1,3.
# The final view 1,2,3 on nodes 1 and 3: their first install of it after the SIGCONT. Node 2
# may install it too, or only align the epoch of the view it held (the same members) and
# get its lease back once both peers confirm it: either way its history may have no record,
# so when it served again is read from the capture (its first SYN-ACK after the SIGSTOP).
final, node2_install = {}, None
for k, line in enumerate(open(histories), 1):
    for h in json.loads(line)["history"]:
        t = datetime.datetime.strptime(h["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
        ms = t.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000
        if h["members"] == [1, 2, 3] and ms > t_cont:
            if k == 2:
                node2_install = node2_install or ms
            elif k not in final:
                final[k] = (ms, h["epoch"])
if sorted(final) != [1, 3]:
    problems.append(f"nodes 1 and 3 did not both install 1,2,3 after the SIGCONT: {final}")
    first = last = float("inf")
else:
    first = min(t for t, _ in final.values())
    last = max(t for t, _ in final.values())
    epochs = {e for _, e in final.values()}
    print(f"final view 1,2,3: installed by nodes 1 and 3 +{first - t_cont:.0f} and +{last - t_cont:.0f} ms "
          f"after the SIGCONT (epochs {sorted(epochs)}, before the stall {epoch0}); node 2 "
          + (f"installed it +{node2_install - t_cont:.0f} ms" if node2_install else "aligned its view's epoch (no install)"))
    if len(epochs) != 1 or min(epochs) <= epoch0:
        problems.append(f"final epochs {sorted(epochs)}, before the stall {epoch0}")
    if last - first > interval:
        problems.append(f"nodes 1 and 3 installed the final view {last - first:.0f} ms apart, more than one interval")
# Node 2's lease after the SIGCONT: never held under the pre-stall epoch.
lease_obs = [l.split() for l in open(lease_log)]
bad_lease = [o for o in lease_obs if len(o) == 4 and o[3] == "1" and int(o[1]) <= epoch0]
if bad_lease:
    problems.append(f"node 2 held its lease under the pre-stall epoch after the SIGCONT: {bad_lease[0]}")
held = [float(o[0]) for o in lease_obs if len(o) == 4 and o[3] == "1"]
print(f"node 2 after the SIGCONT: first view answer (epoch members lease) {lease_obs[0][1:] if lease_obs else '-'}, "
      + (f"lease seen held again +{held[0] - t_cont:.0f} ms" if held else "never seen holding its lease again"))
def nodes_of(key):
    return tuple(sorted(answers.get(key, set()), key=str)) or "none"
back = [t for key, t in syn.items() if key[0] in src2 and t >= t_stop and 2 in answers.get(key, set())]
node2_back = min(back) if back else float("inf")
print(f"node 2 answered its sources again from SYNs sent +{node2_back - t_cont:.0f} ms after the SIGCONT: "
      f"its buckets had no server for {node2_back - first:.0f} ms after nodes 1/3 gave them back")
# Node 2 answers nothing that queued during the stall, and nothing before nodes 1 and 3 gave
# its buckets back (that would be a bucket with two serving owners).
stale = [(key, round(t - t_cont)) for key, t in syn.items()
         if key[0] in src2 and 2 in answers.get(key, set()) and t_stop <= t < first - 10]
if stale:
    problems.append(f"node 2 answered {len(stale)} SYNs sent after the SIGSTOP and before nodes 1/3 gave its "
                    f"buckets back, e.g. {stale[:3]} (ms after the SIGCONT)")
# At most one node answers each attempt, but around the final view's installs by nodes 1
# and 3 (+-1 interval), where the attempts answered twice must all fall within one interval:
# no bucket has two serving owners for longer than that.
h1 = max(last, node2_back if node2_back < float("inf") else last) + 10
dups, excused, during, after = [], [], collections.Counter(), collections.Counter()
for key, t in syn.items():
    nodes = nodes_of(key)
    if nodes != "none" and len(nodes) > 1:
        (excused if first - interval <= t <= last + interval else dups).append((key, t, nodes))
    if key[0] in src2:
        if t_stop <= t < t_cont:
            during[nodes] += 1
        if h1 + interval < t < t_end - 50:
            after[nodes] += 1
    elif key[0] in ctrl and len(nodes) != 1 and t < t_end - 50:
        problems.append(f"control source {key} (another node's bucket) answered by {nodes}")
if excused and max(t for _, t, _ in excused) - min(t for _, t, _ in excused) > interval:
    dups += excused
    excused = []
print(f"handshakes: {len(syn)} SYNs captured, {sum(1 for k in syn if answers.get(k))} answered; "
      f"answered by two nodes: {len(dups)} outside the final view's installs, {len(excused)} at them")
print(f"node 2's sources, SYNs during the stall, answered by: {dict(during)}")
print(f"node 2's sources, SYNs after the final handoff, answered by: {dict(after)}")
if dups:
    problems.append(f"{len(dups)} attempts answered by two nodes, e.g. "
                    f"{[(k, round(t - t_cont), n) for k, t, n in dups[:3]]} (ms after the SIGCONT)")
if not any(k != "none" and 2 not in k for k in during):
    problems.append("nodes 1 and 3 answered none of node 2's sources during the stall")
if set(after) != {(2,)} or after[(2,)] < 10:
    problems.append(f"after the final view node 2's sources should be answered by node 2 alone: {dict(after)}")
# The connector's own account: which node served the HTTP answer.
att = [json.loads(l) for l in open(events)]
served = collections.Counter(e["node"] for e in att if e["ok"])
print(f"attempts: {len(att)}, answered {sum(e['ok'] for e in att)}; bodies {dict(served)}")
for p in problems:
    print("PROBLEM:", p)
sys.exit(1 if problems else 0)
PY
analysis=$?
sed 's/^/test 5: /' "$LAB_DIR/stall-analysis.txt"
check "test 5: no stale ownership after the SIGCONT, no attempt answered by two nodes outside one interval's handoff, node 2 serves again" \
  test "$analysis" -eq 0
check "test 5: every node ends on 1,2,3 under one epoch" same_epoch 1 2 3

check "the daemons exit 0 on SIGTERM" lab_stop_daemons
LAB_AT_EXIT=""
rm -rf "$work"
summary
((failed == 0))
