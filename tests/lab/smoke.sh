#!/usr/bin/env bash
# shellcheck disable=SC2119,SC2317 # lab_* functions take optional args; stopped_early runs from the trap
# Lab test 1 of issue 3: a 3-node farm in network namespaces (tests/lab/lib.sh), 300 client
# source addresses, 10 HTTP GETs each to the VIP, each on its own connection (3000 in all).
# Every request must succeed, once, served by the node that `vipfarmctl owner` predicts (a
# source always lands on the same node); the same from 90 IPv6 sources; the
# daemons must exit 0 on SIGTERM. Needs root, build/vipfarmd and build/vipfarmctl.
#
#   VIPFARMD=build/vipfarmd VIPFARMCTL=build/vipfarmctl tests/lab/smoke.sh
#   knobs: LAB_SMOKE_CLIENTS (300), LAB_SMOKE_REPEAT (10 requests per source),
#          LAB_SMOKE_DEADLINE (120 s for all requests),
#          LAB_CONVERGE_TIMEOUT (30 s), and lib.sh's (LAB_KEEP_DIR=1 keeps the logs)
#
# Ends with "lab-smoke: N passed, M failed"; prints the lab's state (lab_dump) on failure.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

clients=${LAB_SMOKE_CLIENTS:-300}
repeat=${LAB_SMOKE_REPEAT:-10}
requests_deadline=${LAB_SMOKE_DEADLINE:-120}
converge_timeout=${LAB_CONVERGE_TIMEOUT:-30}
n_nodes=3

CHECK_NAME=lab-smoke
# shellcheck source=../lib/check.sh
source "$here/../lib/check.sh"
finish() {
    LAB_AT_EXIT=""
    summary
    ((failed == 0))
    exit
}
LAB_AT_EXIT=stopped_early

for tool in "$VIPFARMD" "$VIPFARMCTL"; do
    if [[ ! -x $tool ]]; then
        echo "lab-smoke: $tool is not built (set VIPFARMD / VIPFARMCTL)" >&2
        failed=1
        finish
    fi
done

# owner CLIENT SERVER: the node id `vipfarmctl owner` predicts for a TCP flow (0: none).
owner() {
    local json
    json=$("$VIPFARMCTL" owner --config "$conf1" --view "$view" --json tcp "$1" "$2") || return 1
    if [[ $json =~ \"verdict\":\"farm\" && $json =~ \"owner\":([0-9]+) ]]; then
        echo "${BASH_REMATCH[1]}"
    else
        echo 0
    fi
}
# get SOURCE URL [COUNT]: COUNT (default 1) bounded HTTP GETs from the client, from that
# source address, each on a new connection; prints each answer on a line.
get() {
    local urls=() i
    for ((i = 0; i < ${3:-1}; i++)); do urls+=("$2"); done
    lab_exec_client curl -sS -g --noproxy '*' --max-time $((2 * ${3:-1})) --interface "$1" \
        -H 'Connection: close' "${urls[@]}"
}

# --- the farm ------------------------------------------------------------------------
lab_up "$n_nodes"
lab_start_daemons
lab_wait_ready
lab_start_nginx
conf1=$(lab_node_config 1)
view=$(lab_view)

# Wait until the farm has converged: a probe address owned by each node (not one of the
# test's sources) is answered by that node, twice in a row.
mapfile -t probes < <(lab_client_addrs 30)
declare -A probe_of=()
for addr in "${probes[@]}"; do
    k=$(owner "$addr:40000" "$LAB_VIP4:80") || k=0
    if [[ $k != 0 && -z ${probe_of[$k]:-} ]]; then probe_of[$k]=$addr; fi
done
check "the owner query gives a probe address for every node" test "${#probe_of[@]}" -eq "$n_nodes"
deadline=$((SECONDS + converge_timeout))
good=0
while ((good < 2 && SECONDS < deadline)); do
    ok=1
    for k in "${!probe_of[@]}"; do
        [[ $(get "${probe_of[$k]}" "http://$LAB_VIP4/" 2>/dev/null) == "node$k" ]] || ok=0
    done
    if ((ok)); then good=$((good + 1)); else good=0; sleep 0.5; fi
done
check "the farm converges within ${converge_timeout}s (each node serves its probe)" test "$good" -ge 2

# --- $repeat GETs from each of $clients sources -------------------------------------------
mapfile -t sources < <(lab_client_addrs "$clients")
declare -A expect=()
declare -a predicted=() answered=() as_predicted=() lost=()
for ((k = 0; k <= n_nodes; k++)); do predicted[k]=0 answered[k]=0 as_predicted[k]=0 lost[k]=0; done
unknown=0
for addr in "${sources[@]}"; do
    k=$(owner "$addr:40000" "$LAB_VIP4:80") || k=0
    expect[$addr]=$k
    ((k >= 1 && k <= n_nodes)) || unknown=$((unknown + 1))
    predicted[k]=$((predicted[k] + repeat))
done
check "every source has a predicted owner among nodes 1..$n_nodes" test "$unknown" -eq 0

shown=0
deadline=$((SECONDS + requests_deadline))
for addr in "${sources[@]}"; do
    want=${expect[$addr]}
    if ((SECONDS >= deadline)); then
        out="(not sent: the ${requests_deadline}s deadline passed)"
    else
        out=$(get "$addr" "http://$LAB_VIP4/" "$repeat" 2>&1)
    fi
    mapfile -t bodies <<<"$out"
    for ((i = 0; i < repeat; i++)); do
        body=${bodies[i]:-"(no answer)"}
        if [[ $body =~ ^node([0-9]+)$ ]]; then
            answered[BASH_REMATCH[1]]=$((answered[BASH_REMATCH[1]] + 1))
        fi
        if [[ $body == "node$want" ]]; then
            passed=$((passed + 1))
            as_predicted[want]=$((as_predicted[want] + 1))
        else
            failed=$((failed + 1))
            [[ $body =~ ^node[0-9]+$ ]] || lost[want]=$((lost[want] + 1))
            if ((shown < 10)); then
                echo "FAIL: GET $((i + 1)) from $addr: expected node$want, got: $body" >&2
            fi
            shown=$((shown + 1))
        fi
    done
    # Nothing beyond the answers asked for (a duplicate answer would show here).
    if ((${#bodies[@]} > repeat)); then
        failed=$((failed + 1))
        echo "FAIL: $addr got ${#bodies[@]} answers to $repeat requests" >&2
    fi
done
((shown > 10)) && echo "FAIL: ... and $((shown - 10)) more requests" >&2

echo
printf '%-6s %9s %9s %12s %6s\n' node predicted answered as-predicted lost
for ((k = 1; k <= n_nodes; k++)); do
    printf '%-6s %9d %9d %12d %6d\n' "node$k" "${predicted[k]}" "${answered[k]}" "${as_predicted[k]}" "${lost[k]}"
done
echo "(requests; predicted: to sources vipfarmctl owner gives the node; answered: responses saying this"
echo " node; as-predicted: answered here and predicted here; lost: predicted here, no answer)"
echo

# nginx's access logs agree: each source reached exactly one node, the predicted one, on
# the VIP, $repeat times.
declare -A seen=()
for ((k = 1; k <= n_nodes; k++)); do
    while read -r remote local _; do
        [[ -n ${expect[$remote]:-} ]] || continue # a probe or the IPv6 client
        if [[ $local == "$LAB_VIP4:80" ]]; then seen[$remote]+="$k "; else seen[$remote]+="$k($local) "; fi
    done <"$LAB_DIR/nginx-node$k/access.log"
done
bad_logs=0
for addr in "${sources[@]}"; do
    want_log=""
    for ((i = 0; i < repeat; i++)); do want_log+="${expect[$addr]} "; done
    if [[ ${seen[$addr]:-} != "$want_log" ]]; then
        ((bad_logs < 5)) && echo "FAIL: access logs: $addr expected at node ${expect[$addr]}, logged at: ${seen[$addr]:-nowhere}" >&2
        bad_logs=$((bad_logs + 1))
    fi
done
check "access logs: each source served $repeat times, by its predicted node, on the VIP" test "$bad_logs" -eq 0

# One request over IPv6.
want6=$(owner "[$LAB_CLIENT6]:40000" "[$LAB_VIP6]:80") || want6=0
body6=$(get "$LAB_CLIENT6" "http://[$LAB_VIP6]/" 2>&1)
echo "IPv6: [$LAB_CLIENT6] -> [$LAB_VIP6]: expected node$want6, got: ${body6//$'\n'/ | }"
check "IPv6 GET served by its predicted node" test "$body6" = "node$want6"

# The same over IPv6 from many sources (issue 3, test 7): each served by its predicted node.
mapfile -t sources6 < <(lab_client_addrs 90 6)
declare -A served6=()
bad6=0
for addr in "${sources6[@]}"; do
    want=$(owner "[$addr]:40000" "[$LAB_VIP6]:80") || want=0
    body=$(get "$addr" "http://[$LAB_VIP6]/" 2>&1)
    served6[$body]=$((${served6[$body]:-0} + 1))
    if [[ $body != "node$want" ]]; then
        ((bad6 < 5)) && echo "FAIL: IPv6 GET from $addr: expected node$want, got: ${body//$'\n'/ | }" >&2
        bad6=$((bad6 + 1))
    fi
done
echo "IPv6, ${#sources6[@]} sources: node1 ${served6[node1]:-0}, node2 ${served6[node2]:-0}, node3 ${served6[node3]:-0}"
check "IPv6: ${#sources6[@]} sources each served by the predicted node ($bad6 not)" test "$bad6" -eq 0
for ((k = 1; k <= n_nodes; k++)); do
    check "IPv6: node $k served some sources" test "${served6[node$k]:-0}" -gt 0
done

((failed == 0)) || lab_dump

# --- shutdown: SIGTERM, exit 0 within 2 s, the VIP gone -------------------------------
lab_stop_daemons
echo -n "SIGTERM to exit:"
for ((k = 1; k <= n_nodes; k++)); do
    echo -n " node$k ${LAB_DAEMON_STOP_MS[k]:-?} ms (status ${LAB_DAEMON_STATUS[k]:-?})"
done
echo
for ((k = 1; k <= n_nodes; k++)); do
    check "node $k: vipfarmd exits 0 on SIGTERM (status ${LAB_DAEMON_STATUS[k]:-?})" \
        test "${LAB_DAEMON_STATUS[k]:-x}" = 0
    check "node $k: ... within 2 s (took ${LAB_DAEMON_STOP_MS[k]:-?} ms)" \
        test "${LAB_DAEMON_STOP_MS[k]:-99999}" -le 2000
    check "node $k: no VIP left after the daemon stopped" \
        bash -c "! ip -n '${LAB_NODE_NS[k]}' -o addr | grep -Eq ' (10\.77\.0\.100|fd77::100)/'"
done
if ((failed)); then
    for ((k = 1; k <= n_nodes; k++)); do
        echo "--- vipfarmd node $k: tail of its log" >&2
        tail -n 15 "${LAB_DAEMON_LOG[k]}" >&2
    done
fi

lab_down
finish
