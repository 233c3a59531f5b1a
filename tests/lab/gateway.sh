#!/usr/bin/env bash
# shellcheck disable=SC2317 # stopped_early and the helpers run from checks and the trap
# Lab test of issue 8's gateway farms (docs/gateway.md): a two-armed firewall farm of 3
# nodes (tests/lab/gateway.toml). Inside: the lab's bridge, where the client's default
# routes are the gateway VIPs 10.77.0.254 and fd77::254 (and a service VIP, 10.77.0.100,
# lives beside them); outside: a second bridge with a server namespace running nginx, whose
# routes back are the gateway VIPs 198.51.100.1 and fd79::1. Each node forwards (the kernel
# routes what its data plane accepts) through a stateful nftables ruleset: new connections
# only from the inside, the outside may only answer established ones, and conntrack does not
# pick up connections mid-stream, so a packet handled by the wrong node is dropped (and
# counted).
#  1. Both families reach the server through the farm; the service VIP still answers.
#  2. LAB_GATEWAY_CONNECTIONS (300) IPv4 connections from 60 inside sources all succeed, and
#     each one's conntrack entry exists on exactly one node: the one `vipfarmctl owner`
#     predicts (keys on_addr inside, on_dst_addr outside). The same over IPv6 (forwarding,
#     no NAT; key symmetric_port both ways).
#     A one-armed gateway VIP on the inside port for a second server on the inside bridge
#     (another subnet): 60 connections, each on its predicted node.
#  3. Source NAT (masquerade to each node's own outside address): 60 connections, each on
#     its predicted node; the server sees only the nodes' addresses.
#  4. A control: with the IPv4 outside rule keyed on the server's address (on_addr), the two
#     directions split and most connections fail; restored, they work again.
#  5. kill -9 of node 2's daemon under load (long-lived and new connections, both
#     families): the long-lived connections through nodes 1 and 3 never break, new
#     connections through them never fail, and node 2's share works again within
#     LAB_GATEWAY_BOUND_MS (1000 ms); every connection started later succeeds. Then node 2
#     returns under the same load: through flow handoff, no long-lived connection breaks
#     (their conntrack state stays on the node that has it) and every new one succeeds.
# LAB_GATEWAY_WORKERS=2 runs it all with two worker lcores per node (both ports' traffic
# spread over them; `make lab` runs both). Ends with "lab-gateway: N passed, M failed"
# ("lab-gateway-2-workers: ..."). Needs root.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"
workers=${LAB_GATEWAY_WORKERS:-1}  # 2: each node's two worker lcores share both ports' traffic
CHECK_NAME=lab-gateway
((workers == 1)) || CHECK_NAME=lab-gateway-$workers-workers
# shellcheck source=../lib/check.sh
source "$here/../lib/check.sh"
LAB_AT_EXIT=stopped_early
py=/usr/bin/python3
connections=${LAB_GATEWAY_CONNECTIONS:-300}
bound_ms=${LAB_GATEWAY_BOUND_MS:-1000}
GW_IN4=10.77.0.254
GW_IN6=fd77::254

gw_conf=$(mktemp /tmp/vipfarm-gateway.XXXXXX)
at_exit() {
  stopped_early "$1"
  rm -f "$gw_conf"
}
LAB_AT_EXIT=at_exit
LAB_CONFIG=$here/gateway.toml
if ((workers > 1)); then
  # Two workers on one veth: af_xdp would need two combined queues, which a veth does not
  # report, so this farm runs on net_af_packet, whose fanout spreads flows by the kernel's
  # symmetric hash (vipfarmd warns that it reassembles fragments: this test sends none).
  sed -e 's/net_af_xdp\([01]\),iface=\([a-z]*\),busy_budget=0/net_af_packet\1,iface=\2/' \
    "$here/gateway.toml" >"$gw_conf"
  LAB_CONFIG=$gw_conf
fi
lab_up 3
for k in 1 2 3; do  # each node's own addresses (the file has node 1's)
  sed -i -e "s|\"fd77::1/64\"|\"fd77::$k/64\"|" -e "s|\"198.51.100.11/24\"|\"198.51.100.1$k/24\"|" \
    -e "s|\"fd79::11/64\"|\"fd79::1$k/64\"|" -e "s|\"198.51.101.11/24\"|\"198.51.101.1$k/24\"|" \
    "$(lab_node_config "$k")"
  grep -q "\"198.51.100.1$k/24\"" "$(lab_node_config "$k")" ||
    { echo "FAIL: node $k's config has no outside address" >&2; exit 1; }
  if ((workers > 1)); then  # more lcores than the lab's 2 cores: place them explicitly
    sed -i -e "s/^workers = 1/workers = $workers/" \
      -e "s/\"--no-pci\",/\"--no-pci\", \"--lcores=0@0,1@1,2@0\",/" "$(lab_node_config "$k")"
    grep -q "^workers = $workers" "$(lab_node_config "$k")" ||
      { echo "FAIL: node $k's config has no workers = $workers" >&2; exit 1; }
  fi
done
lab_add_outside

# Each node is a router with a stateful firewall (the application a gateway farm runs):
# new connections only from the inside clients, through either arm.
ruleset='
table inet vflab {
  counter dropped { }
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    ip saddr 10.77.0.0/16 tcp flags & (fin | syn | rst | ack) == syn ct state new accept
    ip6 saddr fd77::/64 tcp flags & (fin | syn | rst | ack) == syn ct state new accept
    ip saddr 10.77.0.0/16 icmp type echo-request ct state new accept
    ip6 saddr fd77::/64 icmpv6 type echo-request ct state new accept
    counter name "dropped" drop
  }
}'
for k in 1 2 3; do
  lab_exec_node "$k" nft -f - <<<"$ruleset" &&
    lab_exec_node "$k" sh -c 'echo 1 >/proc/sys/net/ipv4/ip_forward &&
      echo 1 >/proc/sys/net/ipv6/conf/all/forwarding &&
      echo 0 >/proc/sys/net/netfilter/nf_conntrack_tcp_loose' ||
    { echo "FAIL: cannot make node $k a stateful router" >&2; exit 1; }
done

lab_start_daemons
lab_wait_ready
lab_start_nginx
check "the farm agrees on the view 1,2,3" lab_wait_view 1,2,3 20

# The server: nginx answering "server" on port 80 (both families).
lab_start_server "$LAB_SERVER_NS" server
server_dir=$LAB_DIR/nginx-server
ip -n "$LAB_CLIENT_NS" route add default via "$GW_IN4" &&
  ip -n "$LAB_CLIENT_NS" -6 route add default via "$GW_IN6" ||
  { echo "FAIL: cannot route the client through the gateway VIPs" >&2; exit 1; }

get() {  # get URL: the body, within 2 s
  lab_exec_client curl -sS -g --noproxy '*' --max-time 2 "$1" 2>/dev/null
}
answers() { [[ $(get "$1") == "$2" ]]; }
# The first connection waits for the neighbour entries on the way; later ones do not.
check "IPv4: the client reaches the server through the farm" lab_wait_for 5 answers "http://$LAB_SERVER4/" server
check "IPv6: the client reaches the server through the farm" lab_wait_for 5 answers "http://[$LAB_SERVER6]/" server
web=$(get "http://$LAB_VIP4/")
check "the service VIP beside the gateways answers ($web)" grep -qx 'node[123]' <<<"$web"

vmac_of() {  # vmac_of VIP: its virtual MAC, from check-config's summary
  "$VIPFARMCTL" check-config "$(lab_node_config 1)" | awk -v v="$1" '$1 == "vip" && $2 == v {print $4}'
}
dump_conntrack() {  # dump_conntrack TAG: every node's conntrack table to $LAB_DIR/ct-TAG-K
  local k
  for k in 1 2 3; do lab_exec_node "$k" cat /proc/net/nf_conntrack >"$LAB_DIR/ct-$1-$k"; done
}
dropped() {  # dropped K: packets node K's firewall dropped
  lab_exec_node "$1" nft list counter inet vflab dropped | awk '$1 == "packets" {print $2}'
}

# --- 2. connections through the farm, each held by its predicted node --------------------
per_source=5
sources=$((connections / per_source))
# through TAG FAMILY SERVER GATEWAY SOURCES PER_SOURCE: SOURCES x PER_SOURCE connections from
# new inside sources, then the conntrack check of gateway.py.
through() {
  local tag=$1 family=$2 server=$3 gateway=$4 n=$5 each=$6 args=() a out
  local events=$LAB_DIR/connections-$tag.jsonl
  mapfile -t addrs < <(lab_client_addrs "$n" "$family")
  for a in "${addrs[@]}"; do args+=(--source "$a"); done
  [[ $family == 6 ]] && server="[$server]"
  lab_exec_client "$py" "$here/probe.py" --target "$server:80" --attempts "$each" \
    --every-ms 100 --timeout-ms 3000 --seconds 60 --stop-file "$LAB_DIR/never" --out "$events" \
    "${args[@]}" >"$LAB_DIR/probe-$tag.log" 2>&1
  dump_conntrack "$tag"
  out=$("$py" "$here/gateway.py" conntrack --ctl "$VIPFARMCTL" --config "$(lab_node_config 1)" \
    --vmac "$(vmac_of "$gateway")" --server "${server//[\[\]]/}" --events "$events" \
    --expect $((n * each)) --dump 1="$LAB_DIR/ct-$tag-1" --dump 2="$LAB_DIR/ct-$tag-2" \
    --dump 3="$LAB_DIR/ct-$tag-3")
  local status=$?
  echo "$tag: $out"
  return "$status"
}
check "IPv4: $connections connections from $sources sources all answered, each held by exactly the node the owner query predicts" \
  through 4 4 "$LAB_SERVER4" "$GW_IN4" "$sources" "$per_source"
check "IPv6: $connections connections from $sources sources all answered, each held by exactly the node the owner query predicts" \
  through 6 6 "$LAB_SERVER6" "$GW_IN6" "$sources" "$per_source"
drops=$(for k in 1 2 3; do dropped "$k"; done | paste -sd' ')
echo "packets the nodes' firewalls dropped: $drops"
check "no packet reached a node without its connection (firewall drops: $drops)" test "$drops" == "0 0 0"

# The owner query names the gateway with --via, and agrees with the conntrack tables.
first=$("$py" -c 'import json,sys; e=json.loads(open(sys.argv[1]).readline()); print(e["src"], e["sport"])' \
  "$LAB_DIR/connections-4.jsonl")
read -r src sport <<<"$first"
via_owner=$("$VIPFARMCTL" owner --config "$(lab_node_config 1)" --via "$GW_IN4" --json tcp "$src:$sport" "$LAB_SERVER4:80" |
  "$py" -c 'import json,sys; print(json.load(sys.stdin)["owner"])')
held_by=$(grep -l "src=$src dst=$LAB_SERVER4 sport=$sport dport=80 " "$LAB_DIR"/ct-4-* | sed 's/.*-//')
check "owner --via $GW_IN4 names node $via_owner for $src:$sport; conntrack holds it on node $held_by" \
  test "$via_owner" == "$held_by"
out=$("$VIPFARMCTL" owner --config "$(lab_node_config 1)" tcp "$src:$sport" "$LAB_SERVER4:80" 2>&1)
check "owner without --via asks which gateway VIP (there are two IPv4 ones)" \
  grep -q "name the gateway VIP the flow goes through with --via" <<<"$out"

# The one-armed gateway: a second server on the inside bridge, in another subnet, whose
# route back is 198.51.101.1 (a gateway VIP on the inside port): the kernel routes in and
# out of the same TAP.
server2_ns=vflab-$LAB_SUFFIX_USED-server2
_lab_add_ns "$server2_ns"
_lab_add_veth "vf${LAB_SUFFIX_USED}t" "$server2_ns" lab2 02:77:00:00:03:51
ip netns exec "$server2_ns" ethtool -K lab2 tx off gso off tso off >/dev/null &&
  ip -n "$server2_ns" addr add 198.51.101.80/24 dev lab2 &&
  ip -n "$server2_ns" route add 10.77.0.0/16 via 198.51.101.1 ||
  { echo "FAIL: cannot set up the one-armed server" >&2; exit 1; }
lab_start_server "$server2_ns" server2 server  # "server" too: gateway.py reads the body
check "one-armed: 60 connections from 20 sources to a server on the inside bridge, each held by exactly the predicted node" \
  through onearm 4 198.51.101.80 "$GW_IN4" 20 3
check "one-armed: the nodes keep ICMP redirects off on the gateway TAP" bash -c \
  'for k in 1 2 3; do [[ $(ip netns exec "vflab-$1-node$k" cat /proc/sys/net/ipv4/conf/vipfarm0/send_redirects) == 0 ]] || exit 1; done' \
  _ "$LAB_SUFFIX_USED"

# --- 3. source NAT to each node's own outside address (docs/gateway.md, "NAT") -----------
# The answers come back to the translating node's own address and MAC, not through the
# outside gateway VIP: the inside rule alone keeps each connection on one node.
for k in 1 2 3; do
  lab_exec_node "$k" nft -f - <<<'table ip vflab_nat {
    chain postrouting { type nat hook postrouting priority srcnat; oifname "vfout" masquerade; }
  }' || { echo "FAIL: cannot add source NAT on node $k" >&2; exit 1; }
done
: >"$server_dir/access.log"
nat_sources() {  # the addresses the server saw since the NAT was added
  awk '{print $1}' "$server_dir/access.log" | sort -u | paste -sd' '
}
check "source NAT: 60 connections from 20 sources all answered, each held by exactly the predicted node" \
  through nat 4 "$LAB_SERVER4" "$GW_IN4" 20 3
seen=$(nat_sources)
echo "source NAT: the server saw the clients as $seen"
check "source NAT: the server saw only the nodes' own outside addresses ($seen)" \
  test "$seen" == "198.51.100.11 198.51.100.12 198.51.100.13"
for k in 1 2 3; do lab_exec_node "$k" nft delete table ip vflab_nat; done

# --- 4. control: a key that splits the two directions breaks the firewall ---------------
same_fingerprint() {
  local k
  for k in 1 2 3; do
    "$VIPFARMCTL" status --json --socket "$(lab_api_socket "$k")" | $py -c 'import json,sys; print(json.load(sys.stdin)["fingerprint"])'
  done | sort -u | wc -l | grep -qx 1
}
rekey() {  # rekey KEY: the IPv4 outside rule's key on every node, reloaded
  local k
  for k in 1 2 3; do
    sed -i "/^dst = \"10.77.0.0\/16\"$/{n;s/^key = .*/key = \"$1\"/}" "$(lab_node_config "$k")"
  done
  for k in 1 2 3; do "$VIPFARMCTL" reload --socket "$(lab_api_socket "$k")" >/dev/null || return 1; done
  lab_wait_for 5 same_fingerprint && lab_wait_view 1,2,3 10
}
split() {  # split N: of N connections from new sources, how many were answered
  local events=$LAB_DIR/split-$RANDOM.jsonl args=() a
  mapfile -t addrs < <(lab_client_addrs "$1" 4)
  for a in "${addrs[@]}"; do args+=(--source "$a"); done
  lab_exec_client "$py" "$here/probe.py" --target "$LAB_SERVER4:80" --attempts 1 --every-ms 10 \
    --timeout-ms 1500 --seconds 30 --stop-file "$LAB_DIR/never" --out "$events" "${args[@]}" \
    >/dev/null 2>&1
  grep -c '"ok": true' "$events"
}
check "control: the outside rule keyed on the server's address (on_addr), reloaded everywhere" rekey on_addr
answered=$(split 30)
echo "control: with the directions split, $answered of 30 connections answered"
check "control: with the directions split most connections fail ($answered of 30 answered)" \
  test "$answered" -le 20
check "the outside rule keyed on_dst_addr again, reloaded everywhere" rekey on_dst_addr
answered=$(split 30)
check "... and every connection is answered again ($answered of 30)" test "$answered" -eq 30

# --- 5. kill -9 under load, then the node's return ----------------------------------------
# load TAG: in both families, 30 long-lived connections (a request every 100 ms) and new
# connections from 15 sources every 100 ms, from new client addresses, logged to
# $LAB_DIR/TAG-4.jsonl and TAG-6.jsonl until $LAB_DIR/TAG.stop appears (60 s at most).
load() {
  local tag=$1 family a target args keep fresh
  probes=()
  for family in 4 6; do
    mapfile -t keep < <(lab_client_addrs 30 "$family")
    mapfile -t fresh < <(lab_client_addrs 15 "$family")
    args=()
    for a in "${keep[@]}"; do args+=(--keep "$a"); done
    for a in "${fresh[@]}"; do args+=(--source "$a"); done
    target=$LAB_SERVER4
    [[ $family == 6 ]] && target="[$LAB_SERVER6]"
    lab_spawn "$LAB_CLIENT_NS" "$LAB_DIR/$tag-$family.log" "$py" "$here/probe.py" \
      --target "$target:80" --every-ms 100 --timeout-ms 3000 --keep-every-ms 100 \
      --keep-timeout-ms 1000 --seconds 60 --stop-file "$LAB_DIR/$tag.stop" \
      --out "$LAB_DIR/$tag-$family.jsonl" "${args[@]}"
    probes+=("$LAB_LAST_PID")
  done
}
all_open() {  # all_open TAG: every long-lived connection of load TAG answered once
  [[ $(grep -c '"keep_open"' "$LAB_DIR/$1-4.jsonl" 2>/dev/null) -ge 30 &&
    $(grep -c '"keep_open"' "$LAB_DIR/$1-6.jsonl" 2>/dev/null) -ge 30 ]]
}
unload() {  # unload TAG: stop load TAG's probes and wait for them
  local pid deadline=$((SECONDS + 10))
  touch "$LAB_DIR/$1.stop"
  for pid in "${probes[@]}"; do
    while _lab_alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
  done
}
victim=2
load load
check "60 long-lived connections open through the farm (30 per family)" lab_wait_for 20 all_open load
sleep 2  # a soak window of steady traffic before the kill (not a wait)
_lab_ms
kill_ms=$_LAB_MS
lab_kill_daemon "$victim"
check "node $victim killed: the survivors install the view 1,3" lab_wait_view 1,3 10 1 3
view_ms=$(lab_installed_at 1,3 1 3) || view_ms=$kill_ms
sleep 3  # a soak window: traffic goes on through the survivors
unload load
out=$("$py" "$here/gateway.py" failover --ctl "$VIPFARMCTL" --config "$(lab_node_config 1)" \
  --victim "$victim" --kill-ms "$kill_ms" --view-ms "$view_ms" --bound-ms "$bound_ms" \
  --family "4@$(vmac_of "$GW_IN4")@$LAB_SERVER4@$LAB_DIR/load-4.jsonl" \
  --family "6@$(vmac_of "$GW_IN6")@$LAB_SERVER6@$LAB_DIR/load-6.jsonl")
status=$?
echo "$out"
check "kill -9 of node $victim under load: its share works again within ${bound_ms} ms, nothing through the survivors broke or failed" \
  test "$status" -eq 0

# The node returns (a planned change): its buckets come back through flow handoff, so the
# connections the survivors hold there keep their node (and their conntrack state) until
# they end, while new ones go to the returning node.
load return
check "60 long-lived connections open through nodes 1 and 3" lab_wait_for 20 all_open return
sleep 1  # a soak window before the return (not a wait)
lab_start_daemon "$victim"
lab_wait_ready "$victim"
check "node $victim returns: the view 1,2,3" lab_wait_view 1,2,3 20
taking() {  # node K's buckets still waiting for the survivors' connections
  lab_exec_node "$1" curl -s --max-time 2 http://127.0.0.1:9469/metrics |
    awk '/^vipfarm_handoff_taking_buckets / {printf "%d", $2}'
}
handing=$(taking "$victim")
sleep 3  # a soak window: traffic goes on across the change
unload return
read -r breaks attempts attempt_failed < <($py - "$LAB_DIR"/return-[46].jsonl <<'PY'
import json, sys
events = [json.loads(l) for path in sys.argv[1:] for l in open(path) if l.strip()]
attempts = [e for e in events if e["kind"] == "attempt"]
for e in [e for e in events if e["kind"] == "keep_break"][:5]:
    print(f"  break: {e['src']}: {e.get('why')}", file=sys.stderr)
print(sum(e["kind"] == "keep_break" for e in events), len(attempts), sum(not e["ok"] for e in attempts))
PY
)
echo "node $victim's return: $handing buckets taken through handoff; $breaks of 60 long-lived connections broke; $attempt_failed of $attempts new connections failed"
check "node $victim's return keeps every long-lived connection ($breaks broke) and every new one succeeds ($attempt_failed of $attempts failed)" \
  test "$breaks" -eq 0 -a "$attempts" -gt 0 -a "$attempt_failed" -eq 0
check "node $victim took buckets through handoff ($handing still waiting for connections)" \
  test "${handing:-0}" -gt 0

lab_stop_daemons
if ((workers > 1)); then
  # Each daemon's exit line counts the frames each worker received: both ports' traffic
  # spread over the workers (af_packet's fanout), and the connections above, whose two
  # directions must meet on one worker for flow handoff, survived the return.
  spread() {
    local k line
    for k in 1 2 3; do
      line=$(grep -o "by worker: [0-9 ]*" "${LAB_DAEMON_LOG[k]}" | tail -n 1)
      echo "node $k: frames $line"
      $py -c 'import sys; n = [int(x) for x in sys.argv[1:]]; sys.exit(0 if len(n) == 2 and min(n) * 5 > sum(n) else 1)' \
        ${line#by worker: } || return 1
    done
  }
  check "each node's $workers workers each received over a fifth of its frames" spread
fi
lab_down
LAB_AT_EXIT=""
rm -f "$gw_conf"
summary
((failed == 0))
