#!/usr/bin/env bash
# shellcheck disable=SC2317 # stopped_early runs from the lab's trap
# The lab harness tested on its own, without vipfarmd: build a 2-node lab, check its
# topology, nginx, isolation and the bridge's flooding, tear it down and check that
# nothing of the run is left; then the same after a run killed by SIGTERM and one that
# fails under `set -e`. Needs root. Ends with "lab-selftest: N passed, M failed".
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

CHECK_NAME=lab-selftest
# shellcheck source=../lib/check.sh
source "$here/../lib/check.sh"

LAB_AT_EXIT=stopped_early

# --- helpers -----------------------------------------------------------------------
no_addresses() {  # no_addresses NS IFACE: the interface has no IPv4/IPv6 address
    [[ -z $(ip ${1:+-n "$1"} -o addr show dev "$2") ]]
}
answers() {  # answers K URL: node K's nginx, asked from inside node K, says nodeK
    [[ $(lab_exec_node "$1" curl -sS --noproxy '*' --max-time 2 "$2") == "node$1" ]]
}
unreachable() {  # unreachable NS ADDR: no route to ADDR (nothing is sent)
    ! ip -n "$1" route get "$2" >/dev/null 2>&1
}
root_has_no_lab_address() {
    ! ip -o addr show | grep -Eq ' (10\.77\.|fd77:)'
}
no_default_route() {
    [[ -z $(ip -n "$1" -4 route show default) && -z $(ip -n "$1" -6 route show default) ]]
}
names_fit() {  # every interface name of the run is at most 15 characters
    local name
    for name in "$LAB_BRIDGE" "$LAB_CLIENT_VETH" "${LAB_NODE_VETH[@]}"; do
        ((${#name} <= 15)) || return 1
    done
}
leftovers() {  # leftovers SUFFIX PID...: print whatever of that run still exists
    local sfx=$1 pid
    shift
    ip netns list | grep -F -- "-$sfx-"
    ip -o link show | grep -F "vf$sfx"
    ls -d "${TMPDIR:-/tmp}/vipfarm-lab-$sfx".* 2>/dev/null
    ls -d "/var/run/dpdk/vipfarm-$sfx-"* 2>/dev/null
    for pid in "$@"; do
        _lab_alive "$pid" && echo "process $pid"
    done
    # Processes naming the run's temp dir ('[.]': not this grep itself).
    grep -lsE "vipfarm-lab-${sfx}[.]" /proc/[0-9]*/cmdline
    return 0
}
nothing_left() { [[ -z $(leftovers "$@") ]]; }

# --- a 2-node lab ------------------------------------------------------------------
lab_up 2
sfx=$LAB_SUFFIX_USED
check "interface names fit in 15 characters" names_fit
check "the bridge has no address" no_addresses "$LAB_SWITCH_NS" "$LAB_BRIDGE"
check "the root namespace has no lab address" root_has_no_lab_address
check "multicast snooping is off on the bridge" \
    ip netns exec "$LAB_SWITCH_NS" grep -qx 0 "/sys/class/net/$LAB_BRIDGE/bridge/multicast_snooping"
for k in 1 2; do
    check "node $k: uplink is up" grep -q 'state UP' <(ip -n "${LAB_NODE_NS[k]}" link show dev uplink)
    check "node $k: uplink has no address" no_addresses "${LAB_NODE_NS[k]}" uplink
    check "node $k: loopback is up" grep -q 'LOOPBACK,UP' <(ip -n "${LAB_NODE_NS[k]}" link show dev lo)
    check "node $k: no route at all" test -z "$(ip -n "${LAB_NODE_NS[k]}" route; ip -n "${LAB_NODE_NS[k]}" -6 route)"
    if [[ -x $VIPFARMCTL ]]; then
        check "node $k: its config is valid and is node $k's" \
            grep -q "^this node: $k (node$k)" <("$VIPFARMCTL" check-config "$(lab_node_config "$k")")
        check "node $k: its EAL file prefix is unique to the run" \
            grep -qF -- "--file-prefix=vipfarm-$sfx-n$k\"" "$(lab_node_config "$k")"
    fi
done
check "the client has 10.77.0.250/16" grep -q ' 10.77.0.250/16 ' <(ip -n "$LAB_CLIENT_NS" -o addr)
check "the client has fd77::250/64" grep -q ' fd77::250/64 ' <(ip -n "$LAB_CLIENT_NS" -o addr)
check "the client computes its checksums (no tx offload)" \
    grep -qx 'tx-checksumming: off' <(lab_exec_client ethtool -k "$LAB_CLIENT_IF")

# The same names again are refused, and the refusal leaves the running lab alone.
out=$(LAB_SUFFIX=$sfx LAB_DUMP_ON_ERROR=0 bash -c 'source "$1"; lab_up 1' _ "$here/lib.sh" 2>&1)
check "lab_up refuses names that exist" test $? -ne 0
check "the refusal says why" grep -q 'already exist' <<<"$out"
check "the refusal did not touch the running lab" test -e "/run/netns/${LAB_NODE_NS[2]}"

# Source addresses.
mapfile -t addrs < <(lab_client_addrs 300)
check "lab_client_addrs prints 300 addresses" test "${#addrs[@]}" -eq 300
check "they run 10.77.1.1 ... 10.77.2.44" test "${addrs[0]} ${addrs[299]}" = "10.77.1.1 10.77.2.44"
check "they are on the client" test "$(ip -n "$LAB_CLIENT_NS" -4 -o addr show dev lab0 | wc -l)" -eq 301
mapfile -t more < <(lab_client_addrs 2)
check "a second call continues the sequence" test "${more[*]}" = "10.77.2.45 10.77.2.46"
mapfile -t six < <(lab_client_addrs 2 6)
check "IPv6 source addresses" test "${six[*]}" = "fd77::1:1 fd77::1:2"

# The client reaches only the lab: no default route, nothing outside 10.77/16, fd77::/64.
check "client: no default route" no_default_route "$LAB_CLIENT_NS"
check "client: the lab is on-link" ip -n "$LAB_CLIENT_NS" -o route get 10.77.0.100 \
    >/dev/null
check "client: no route to 192.0.2.1" unreachable "$LAB_CLIENT_NS" 192.0.2.1
check "client: no route to 2001:db8::1" unreachable "$LAB_CLIENT_NS" 2001:db8::1
check "client: no route to 10.78.0.1" unreachable "$LAB_CLIENT_NS" 10.78.0.1

# nginx answers with the node's name, on IPv4 and IPv6.
lab_start_nginx
for k in 1 2; do
    check "node $k: nginx answers node$k on 127.0.0.1" answers "$k" http://127.0.0.1/
    check "node $k: nginx answers node$k on [::1]" answers "$k" 'http://[::1]/'
done

# The bridge floods a frame for a MAC nobody uses (the VIP's virtual MAC) to every
# node, as the farm needs: capture it on each uplink.
vmac=5a:fe:0a:4d:00:64
for k in 1 2; do
    lab_spawn "${LAB_NODE_NS[k]}" "$LAB_DIR/flood$k.log" \
        timeout 10 tcpdump -i uplink -n -e -c 1 "ether dst $vmac"
done
deadline=$((SECONDS + 5))
until grep -q 'listening on' "$LAB_DIR"/flood1.log && grep -q 'listening on' "$LAB_DIR"/flood2.log; do
    ((SECONDS < deadline)) || break
    sleep 0.05
done
lab_exec_client "$LAB_PY" -c "
from scapy.all import Ether, IP, UDP, sendp
sendp(Ether(src='02:77:00:00:00:fa', dst='$vmac') / IP(src='$LAB_CLIENT4', dst='$LAB_VIP4')
      / UDP(sport=40000, dport=9) / b'flood', iface='$LAB_CLIENT_IF', count=3, verbose=False)"
for k in 1 2; do
    deadline=$((SECONDS + 5))
    until grep -q '1 packet captured' "$LAB_DIR/flood$k.log"; do
        ((SECONDS < deadline)) || break
        sleep 0.05
    done
    check "node $k: the bridge floods the virtual MAC to it" grep -q '1 packet captured' "$LAB_DIR/flood$k.log"
done
check "the bridge never learnt the virtual MAC" \
    bash -c "! bridge -n $LAB_SWITCH_NS fdb show br $LAB_BRIDGE | grep -qi $vmac"

# lab_down removes everything; processes are gone by PID.
pids=()
for ns in "${LAB_NODE_NS[@]}"; do mapfile -t -O "${#pids[@]}" pids < <(ip netns pids "$ns"); done
check "nginx runs (master + worker) in each node" test "${#pids[@]}" -ge 4
LAB_AT_EXIT=""
lab_down
check "lab_down leaves nothing of the run" nothing_left "$sfx" "${pids[@]}"
leftovers "$sfx" "${pids[@]}" >&2
check "lab_down again is harmless" lab_down

# --- a run killed by SIGTERM, and one failing under set -e: the trap cleans up ---------
child() {  # child HOW: a lab in a separate shell that ends badly; prints its suffix
    local how=$1
    # shellcheck disable=SC2016
    LAB_DUMP_ON_ERROR=0 bash -c '
        set -euo pipefail
        source "$1"
        lab_up 1
        lab_start_nginx
        echo "$LAB_SUFFIX_USED $(ip netns pids "${LAB_NODE_NS[1]}" | tr "\n" " ")"
        case $2 in
            term) kill -TERM $$; sleep 5 ;;
            error) false ;;
        esac
        echo "not reached"' _ "$here/lib.sh" "$how" 2>"$tmp/child-$how.err"
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT # the lab's trap is no longer needed: it is down
for how in term error; do
    child "$how" >"$tmp/child-$how.out"
    status=$?
    read -r csfx cpids <"$tmp/child-$how.out"
    read -r -a cpids <<<"$cpids"
    check "$how: the child failed" test "$status" -ne 0
    check "$how: its lab had nginx" test "${#cpids[@]}" -ge 2
    check "$how: its trap left nothing" nothing_left "$csfx" "${cpids[@]}"
    leftovers "$csfx" "${cpids[@]}" >&2
    check "$how: it said it tore down" grep -q "down: lab $csfx removed" "$tmp/child-$how.err"
done

summary
((failed == 0))
