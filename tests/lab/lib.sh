# shellcheck shell=bash disable=SC2034,SC2015
# (SC2034: the LAB_* variables are for the scripts that source this file.)
# The network-namespace lab: a farm of N nodes on one machine (DESIGN.md, "Lab").
# Sourced by the lab tests and the demo; needs root.
#
#   vflab-<S>-switch: bridge vf<S>br (no address, floods unknown unicast: the switch)
#                      ├─ vf<S>c  ── veth ── lab0    in vflab-<S>-client
#                      ├─ vf<S>n1 ── veth ── uplink  in vflab-<S>-node1
#                      └─ ...
#   client:  10.77.0.250/16, fd77::250/64, plus lab_client_addrs' sources
#   node k:  uplink up without addresses (vipfarmd owns it through net_af_xdp),
#            vipfarmd (TAP vipfarm0 with 10.77.0.k and the VIPs), nginx on port 80
#
# <S> is a random per-run suffix (or $LAB_SUFFIX): leftovers of a crashed run never
# collide, and lab_up refuses to start when one of its names already exists.
# Everything lives in namespaces the lab creates; nothing is routed out. lab_up
# installs an EXIT/INT/TERM trap that tears the lab down (after lab_dump when the
# script fails), so every exit path cleans up. Typical use:
#
#   source tests/lab/lib.sh
#   lab_up 3                      # namespaces, bridge, veths, node configs, traps
#   lab_start_daemons; lab_wait_ready
#   lab_start_nginx
#   lab_client_addrs 300 >/dev/null; lab_exec_client curl --interface "${LAB_CLIENT_ADDRS[0]}" ...
#   lab_down                      # also runs from the trap; idempotent
#
# Knobs: VIPFARMD, VIPFARMCTL, LAB_CONFIG (node 1's file, default conf/lab.toml),
# LAB_SUFFIX, LAB_READY_TIMEOUT (20 s), LAB_STOP_TIMEOUT (3 s), LAB_KEEP_DIR=1 (keep
# the temp dir with configs and logs), LAB_DUMP_ON_ERROR=0 (no lab_dump when the
# script exits non-zero), LAB_AT_EXIT (a command the trap runs last, with the exit
# status: e.g. to print a test's summary line on every exit path).
# Functions exit the script (through the trap) on setup errors; call them from the
# main shell, not from $(...), unless said otherwise.

LAB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

_lab_abs() {  # _lab_abs PATH: PATH made absolute against the current directory
    case $1 in
        /*) echo "$1" ;;
        */*) echo "$PWD/$1" ;;
        *) command -v "$1" || echo "$PWD/$1" ;;
    esac
}
VIPFARMD=$(_lab_abs "${VIPFARMD:-$LAB_ROOT/build/vipfarmd}")
VIPFARMCTL=$(_lab_abs "${VIPFARMCTL:-$LAB_ROOT/build/vipfarmctl}")
LAB_CONFIG=$(_lab_abs "${LAB_CONFIG:-$LAB_ROOT/conf/lab.toml}")
LAB_PY=/usr/bin/python3             # Debian's python3 (tomllib, scapy)
LAB_READY_TIMEOUT=${LAB_READY_TIMEOUT:-20}
LAB_STOP_TIMEOUT=${LAB_STOP_TIMEOUT:-3}

LAB_VIP4=10.77.0.100
LAB_VIP6=fd77::100
LAB_CLIENT4=10.77.0.250
LAB_CLIENT6=fd77::250
LAB_CLIENT_IF=lab0                  # the client's interface, inside its namespace
LAB_CLIENT_MAC=02:77:00:00:00:fa     # ... and its MAC
LAB_TAP=vipfarm0                    # the daemon's exception interface ([exception] name)

# State of the lab of this shell (reset by lab_down).
_lab_reset() {
    LAB_N=0
    LAB_SUFFIX_USED=""
    LAB_DIR=""
    LAB_BRIDGE=""
    LAB_SWITCH_NS=""     # the namespace holding the bridge and the switch-side veths
    LAB_CLIENT_NS=""
    LAB_CLIENT_VETH=""
    LAB_NODE_NS=()       # [k] namespace of node k (k = 1..N)
    LAB_NODE_VETH=()     # [k] root-side veth of node k
    LAB_NODE_CONF=()     # [k] node k's config file
    LAB_DAEMON_PID=()    # [k] running vipfarmd of node k
    LAB_DAEMON_LOG=()    # [k] its stdout+stderr
    LAB_NGINX_PID=()     # [k] nginx master of node k
    LAB_CLIENT_ADDRS=()  # source addresses added by lab_client_addrs, in order
    LAB_SERVER_NS=""     # lab_add_outside's server namespace
    LAB_LAST_PID=""      # set by lab_spawn
    _LAB_BG_PIDS=()      # other background processes (lab_spawn)
    _LAB_NETNS=()        # namespaces created, in creation order
    _LAB_EAL_PREFIXES=() # DPDK file prefixes of the daemons (/var/run/dpdk/<prefix>)
    _LAB_UP=0
    _LAB_DUMPED=0
}
_lab_reset
# Kept by lab_down, for tests to read afterwards:
LAB_DAEMON_STATUS=()  # [k] exit status of node k's last daemon (137: killed)
LAB_DAEMON_STOP_MS=() # [k] how long its last stop took, SIGTERM to exit

_lab_log() { echo "lab: $*" >&2; }
_lab_die() {
    _lab_log "error: $*"
    exit 1
}

_lab_ms() {  # _lab_ms: _LAB_MS = now, in milliseconds (deadlines finer than $SECONDS)
    local t=${EPOCHREALTIME/[.,]/}
    _LAB_MS=$((t / 1000))
}

_lab_alive() {  # _lab_alive PID: running (a zombie is not)
    local stat
    [[ -n $1 ]] && read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# _lab_stop_pids TIMEOUT PID...: TERM, wait up to TIMEOUT seconds, then KILL. Sets
# _LAB_KILLED to the PIDs that needed a KILL and _LAB_GONE_MS[pid] to how long each
# took to go after the TERM (50 ms resolution).
_lab_stop_pids() {
    local - timeout=$1 pid deadline left start
    set +e
    shift
    _LAB_KILLED=()
    declare -gA _LAB_GONE_MS=()
    for pid in "$@"; do
        _lab_alive "$pid" && kill -TERM "$pid" 2>/dev/null
    done
    _lab_ms
    start=$_LAB_MS
    deadline=$((start + timeout * 1000))
    while :; do
        left=()
        _lab_ms
        for pid in "$@"; do
            if _lab_alive "$pid"; then
                left+=("$pid")
            elif [[ -z ${_LAB_GONE_MS[$pid]:-} ]]; then
                _LAB_GONE_MS[$pid]=$((_LAB_MS - start))
            fi
        done
        ((${#left[@]})) || break
        if ((_LAB_MS >= deadline)); then
            _LAB_KILLED=("${left[@]}")
            kill -KILL "${left[@]}" 2>/dev/null
            deadline=$((SECONDS + 3))
            while ((SECONDS < deadline)); do
                left=()
                for pid in "${_LAB_KILLED[@]}"; do _lab_alive "$pid" && left+=("$pid"); done
                ((${#left[@]})) || break
                sleep 0.05
            done
            break
        fi
        sleep 0.05
    done
    return 0
}

_lab_reap() {  # _lab_reap PID: _LAB_STATUS = its exit status (127: not our child)
    _LAB_STATUS=0
    wait "$1" 2>/dev/null || _LAB_STATUS=$?
}

_lab_name_taken() {  # _lab_name_taken NAME: a namespace or root-namespace link has it
    [[ -e /run/netns/$1 ]] || ip link show dev "$1" >/dev/null 2>&1
}

_lab_on_exit() {
    local rc=$?
    set +e
    trap '' INT TERM
    if ((rc != 0 && _LAB_UP && !_LAB_DUMPED)) && [[ ${LAB_DUMP_ON_ERROR:-1} == 1 ]]; then
        _lab_log "exiting with status $rc; the lab as it was:"
        lab_dump
    fi
    lab_down
    if [[ -n ${LAB_AT_EXIT:-} ]]; then "$LAB_AT_EXIT" "$rc"; fi
    exit "$rc"
}
_lab_on_signal() {
    _lab_log "interrupted (signal $1)"
    exit $((128 + $1))
}

# lab_up N: build the topology for N nodes (1..64) and write their configs.
lab_up() {
    local n=${1:-3} sfx k ns veth
    [[ $n =~ ^[0-9]+$ ]] && ((n >= 1 && n <= 64)) || _lab_die "lab_up: N must be 1..64, got '$n'"
    ((_LAB_UP == 0)) || _lab_die "lab_up: a lab (suffix $LAB_SUFFIX_USED) is already up in this shell"
    ((EUID == 0)) || _lab_die "lab_up: needs root (network namespaces)"
    local tool
    for tool in ip bridge ethtool "$LAB_PY"; do
        command -v "$tool" >/dev/null || _lab_die "lab_up: $tool not found"
    done
    [[ -r $LAB_CONFIG ]] || _lab_die "lab_up: no config $LAB_CONFIG (LAB_CONFIG)"

    sfx=${LAB_SUFFIX:-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')}
    [[ $sfx =~ ^[a-z0-9]{1,6}$ ]] || _lab_die "lab_up: LAB_SUFFIX must be 1-6 of [a-z0-9], got '$sfx'"

    # Every name of this run; refuse before creating anything if one exists.
    local bridge=vf${sfx}br client_ns=vflab-$sfx-client client_veth=vf${sfx}c
    local switch_ns=vflab-$sfx-switch
    local names=("$bridge" "$switch_ns" "$client_ns" "$client_veth")
    for ((k = 1; k <= n; k++)); do names+=("vflab-$sfx-node$k" "vf${sfx}n$k"); done
    local taken=()
    for tool in "${names[@]}"; do _lab_name_taken "$tool" && taken+=("$tool"); done
    ((${#taken[@]} == 0)) ||
        _lab_die "lab_up: names of lab $sfx already exist: ${taken[*]} (a leftover run? remove them, or pick another LAB_SUFFIX)"

    # From here on, whatever happens, the trap tears down what was registered.
    trap _lab_on_exit EXIT
    trap '_lab_on_signal 2' INT
    trap '_lab_on_signal 15' TERM
    _LAB_UP=1
    LAB_N=$n
    LAB_DAEMON_STATUS=()
    LAB_DAEMON_STOP_MS=()
    LAB_SUFFIX_USED=$sfx
    LAB_BRIDGE=$bridge
    LAB_CLIENT_NS=$client_ns
    LAB_CLIENT_VETH=$client_veth
    LAB_DIR=$(mktemp -d "${TMPDIR:-/tmp}/vipfarm-lab-$sfx.XXXXXX") || _lab_die "lab_up: mktemp failed"
    # The cluster key of this run (membership.key[].file in every node's config).
    LAB_KEY=$LAB_DIR/cluster.key
    (umask 077 && head -c 32 /dev/urandom >"$LAB_KEY") || _lab_die "lab_up: cannot write $LAB_KEY"

    # The switch, in a namespace of its own: the host's netfilter (br_netfilter, when it is
    # loaded, would defragment and validate IPv4 on a root-namespace bridge) never sees lab
    # frames, and in this namespace bridge netfilter is off. No STP (ports forward at
    # once), no multicast snooping (flood ND and everything else like a dumb switch), no
    # IPv6 on the switch's own links.
    _lab_add_ns "$switch_ns"
    LAB_SWITCH_NS=$switch_ns
    ip netns exec "$switch_ns" sh -c \
        'for f in /proc/sys/net/bridge/bridge-nf-call-*; do [ -e "$f" ] && echo 0 >"$f"; done; true'
    ip -n "$switch_ns" link add name "$bridge" type bridge stp_state 0 mcast_snooping 0 ||
        _lab_die "lab_up: cannot create bridge $bridge"
    _lab_no_ipv6 "$bridge" "$switch_ns"
    ip -n "$switch_ns" link set dev "$bridge" up || _lab_die "lab_up: cannot bring up $bridge"

    # The client.
    _lab_add_ns "$client_ns"
    _lab_add_veth "$client_veth" "$client_ns" "$LAB_CLIENT_IF" "$LAB_CLIENT_MAC"
    # veths offload the TCP/UDP checksum by default: the frames a client sends would
    # reach the data plane with the checksum not filled in, and the node's kernel would drop
    # them (TcpInCsumErrors). A real client's NIC fills it in; so does this one's.
    ip netns exec "$client_ns" ethtool -K "$LAB_CLIENT_IF" tx off gso off tso off >/dev/null ||
        _lab_die "lab_up: cannot turn off checksum offload on the client"
    ip -n "$client_ns" addr add "$LAB_CLIENT4/16" dev "$LAB_CLIENT_IF" &&
        ip -n "$client_ns" addr add "$LAB_CLIENT6/64" dev "$LAB_CLIENT_IF" nodad ||
        _lab_die "lab_up: cannot address the client"

    # The nodes: uplink up, no address (not even IPv6 link-local), loopback up.
    for ((k = 1; k <= n; k++)); do
        ns=vflab-$sfx-node$k
        veth=vf${sfx}n$k
        LAB_NODE_NS[k]=$ns
        LAB_NODE_VETH[k]=$veth
        _lab_add_ns "$ns"
        _lab_add_veth "$veth" "$ns" uplink "$(printf '02:77:00:00:01:%02x' "$k")"
        LAB_NODE_CONF[k]=$LAB_DIR/node$k.toml
        _LAB_EAL_PREFIXES+=("vipfarm-$sfx-n$k")
        _lab_write_config "$k"
    done
    _lab_log "up: $n nodes, suffix $sfx, bridge $bridge, dir $LAB_DIR"
}

# lab_add_lan PREFIX6: a second network for heartbeats ([[membership.lan]]): a bridge in
# the switch namespace and an interface "hb0" in each node namespace with PREFIX6::K/64
# (no DAD). Nothing else uses it; lab_down removes it with the namespaces.
lab_add_lan() {
    local prefix=$1 br=vf${LAB_SUFFIX_USED}hb k
    ip -n "$LAB_SWITCH_NS" link add name "$br" type bridge stp_state 0 mcast_snooping 0 &&
        ip -n "$LAB_SWITCH_NS" link set dev "$br" up || _lab_die "lab_add_lan: cannot create $br"
    for ((k = 1; k <= LAB_N; k++)); do
        ip -n "$LAB_SWITCH_NS" link add name "vf${LAB_SUFFIX_USED}h$k" type veth peer name hb0 \
            netns "${LAB_NODE_NS[k]}" &&
            ip -n "$LAB_SWITCH_NS" link set dev "vf${LAB_SUFFIX_USED}h$k" master "$br" up &&
            ip -n "${LAB_NODE_NS[k]}" addr add "$prefix::$k/64" dev hb0 nodad &&
            ip -n "${LAB_NODE_NS[k]}" link set dev hb0 up ||
            _lab_die "lab_add_lan: cannot connect node $k"
    done
}

# lab_add_outside: the outside network of a gateway farm (docs/gateway.md): a second bridge
# in the switch namespace, an interface "outside" in each node namespace (up, without
# addresses: vipfarmd owns it through the uplink vdev, like uplink), and a server namespace
# (LAB_SERVER_NS) on it with lab1 = LAB_SERVER4/24 and LAB_SERVER6/64, whose routes back to
# the inside (10.77.0.0/16, fd77::/64) go through LAB_GW_OUT4 / LAB_GW_OUT6. lab_down
# removes it with the other namespaces.
LAB_SERVER4=198.51.100.80
LAB_SERVER6=fd79::80
LAB_GW_OUT4=198.51.100.1
LAB_GW_OUT6=fd79::1
LAB_SERVER_IF=lab1
lab_add_outside() {
    local sfx=$LAB_SUFFIX_USED k br=vf${LAB_SUFFIX_USED}ob
    ip -n "$LAB_SWITCH_NS" link add name "$br" type bridge stp_state 0 mcast_snooping 0 &&
        ip -n "$LAB_SWITCH_NS" link set dev "$br" up || _lab_die "lab_add_outside: cannot create $br"
    _lab_no_ipv6 "$br" "$LAB_SWITCH_NS"
    for ((k = 1; k <= LAB_N; k++)); do
        LAB_BRIDGE=$br _lab_add_veth "vf${sfx}o$k" "${LAB_NODE_NS[k]}" outside \
            "$(printf '02:77:00:00:02:%02x' "$k")"
    done
    LAB_SERVER_NS=vflab-$sfx-server
    _lab_add_ns "$LAB_SERVER_NS"
    LAB_BRIDGE=$br _lab_add_veth "vf${sfx}s" "$LAB_SERVER_NS" "$LAB_SERVER_IF" 02:77:00:00:03:50
    # A real server's NIC fills in the checksums (see the client's, in lab_up).
    ip netns exec "$LAB_SERVER_NS" ethtool -K "$LAB_SERVER_IF" tx off gso off tso off >/dev/null &&
        ip -n "$LAB_SERVER_NS" addr add "$LAB_SERVER4/24" dev "$LAB_SERVER_IF" &&
        ip -n "$LAB_SERVER_NS" addr add "$LAB_SERVER6/64" dev "$LAB_SERVER_IF" nodad &&
        ip -n "$LAB_SERVER_NS" route add 10.77.0.0/16 via "$LAB_GW_OUT4" &&
        ip -n "$LAB_SERVER_NS" route add fd77::/64 via "$LAB_GW_OUT6" ||
        _lab_die "lab_add_outside: cannot address the server"
}

_lab_no_ipv6() {  # _lab_no_ipv6 IFACE [NS]
    local cmd="echo 1 >/proc/sys/net/ipv6/conf/$1/disable_ipv6"
    if [[ -n ${2:-} ]]; then
        ip netns exec "$2" sh -c "$cmd"
    else
        sh -c "$cmd"
    fi || _lab_die "cannot disable IPv6 on $1${2:+ in $2}"
}

_lab_add_ns() {  # _lab_add_ns NAME: create it, loopback up
    ip netns add "$1" || _lab_die "cannot create namespace $1"
    _LAB_NETNS+=("$1")
    ip -n "$1" link set dev lo up || _lab_die "cannot bring up lo in $1"
}

# _lab_add_veth SWNAME NS INNAME MAC: a veth pair from the switch's bridge into NS, up.
_lab_add_veth() {
    local sw=$1 ns=$2 inner=$3 mac=$4
    ip -n "$LAB_SWITCH_NS" link add name "$sw" type veth peer name "$inner" netns "$ns" ||
        _lab_die "cannot create veth $sw <-> $ns:$inner"
    _lab_no_ipv6 "$sw" "$LAB_SWITCH_NS"
    if [[ $inner == uplink || $inner == outside ]]; then # no address at all, not even link-local
        _lab_no_ipv6 "$inner" "$ns"
    fi
    ip -n "$LAB_SWITCH_NS" link set dev "$sw" master "$LAB_BRIDGE" up &&
        ip -n "$ns" link set dev "$inner" address "$mac" up ||
        _lab_die "cannot bring up veth $sw <-> $ns:$inner"
}

# _lab_write_config K: conf/lab.toml with [node] set to node K, a per-run EAL file
# prefix, and [[cluster.node]] entries added for nodes the file does not list.
_lab_write_config() {
    local k=$1
    "$LAB_PY" - "$LAB_CONFIG" "${LAB_NODE_CONF[k]}" "$k" "vipfarm-$LAB_SUFFIX_USED-n$k" "$LAB_N" "$(lab_api_socket "$k")" "$LAB_KEY" <<'PY' ||
import re, sys, tomllib

src, out, k, prefix, n, sock, key = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6], sys.argv[7]
text = open(src, encoding="utf-8").read()
base = tomllib.loads(text)
listed = {node["id"]: node for node in base["cluster"]["node"]}
name = listed[k]["name"] if k in listed else f"node{k}"

section = re.search(r"(?ms)^\[node\][^\n]*\n(.*?)(?=^\s*\[|\Z)", text)
if not section:
    sys.exit(f"{src}: no [node] table")
body, ids = re.subn(r"(?m)^(\s*id\s*=\s*)\d+", lambda m: f"{m.group(1)}{k}", section.group(1), count=1)
body, names = re.subn(r'(?m)^(\s*name\s*=\s*)"[^"]*"', lambda m: f'{m.group(1)}"{name}"', body, count=1)
text = text[: section.start(1)] + body + text[section.end(1):]
text, prefixes = re.subn(r"--file-prefix=[^\"'\s]*", f"--file-prefix={prefix}", text)
text = re.sub(r'(?m)^(\s*socket\s*=\s*)"[^"]*"', lambda m: f'{m.group(1)}"{sock}"', text)
text = re.sub(r'(?m)^(\s*file\s*=\s*)"[^"]*"', lambda m: f'{m.group(1)}"{key}"', text)
if (ids, names, prefixes) != (1, 1, 1):
    sys.exit(f"{src}: expected one [node] id, one [node] name and one --file-prefix= "
             f"(found {ids}, {names}, {prefixes})")
for i in range(1, n + 1):
    if i not in listed:
        text += f'\n[[cluster.node]]\nid = {i}\nname = "node{i}"\naddress = "10.77.0.{i}"\n'

new = tomllib.loads(text)
assert new["node"]["id"] == k and new["node"]["name"] == name, new["node"]
assert f"--file-prefix={prefix}" in new["dataplane"]["eal_args"], new["dataplane"]
assert set(range(1, n + 1)) <= {node["id"] for node in new["cluster"]["node"]}
with open(out, "w", encoding="utf-8") as f:
    f.write(text)
PY
        _lab_die "cannot write node $k's config from $LAB_CONFIG"
}

lab_node_config() { echo "${LAB_NODE_CONF[$1]:?no node $1}"; }   # lab_node_config K: its file
lab_api_socket() { echo "$LAB_DIR/node$1.sock"; }                # lab_api_socket K: its admin API
lab_view() {                                                     # lab_view: "1,2,...,N"
    local k view=""
    for ((k = 1; k <= LAB_N; k++)); do view+=${view:+,}$k; done
    echo "$view"
}

lab_exec_client() { ip netns exec "$LAB_CLIENT_NS" "$@"; }
lab_exec_node() {  # lab_exec_node K CMD...
    local k=$1
    shift
    ip netns exec "${LAB_NODE_NS[k]:?no node $k}" "$@"
}

# lab_spawn NS LOG CMD...: run CMD in namespace NS in the background (stdout+stderr to
# LOG), killed by lab_down. Its PID goes to LAB_LAST_PID.
lab_spawn() {
    local ns=$1 log=$2
    shift 2
    ip netns exec "$ns" "$@" </dev/null >"$log" 2>&1 &
    LAB_LAST_PID=$!
    _LAB_BG_PIDS+=("$LAB_LAST_PID")
}

_lab_daemon_ready() {  # the TAP exists in node K's namespace and has the IPv4 VIP
    ip -n "${LAB_NODE_NS[$1]}" -4 -o addr show dev "$LAB_TAP" 2>/dev/null |
        grep -q " inet $LAB_VIP4/"
}

# lab_start_daemon K: check node K's config, start its vipfarmd in the background.
lab_start_daemon() {
    local k=$1 conf=${LAB_NODE_CONF[$1]:?no node $1} out
    [[ -x $VIPFARMD ]] || _lab_die "no daemon at $VIPFARMD (build it, or set VIPFARMD)"
    [[ -x $VIPFARMCTL ]] || _lab_die "no CLI at $VIPFARMCTL (build it, or set VIPFARMCTL)"
    _lab_alive "${LAB_DAEMON_PID[k]:-}" && _lab_die "node $k's daemon is already running"
    out=$("$VIPFARMCTL" check-config "$conf" 2>&1) || _lab_die "node $k's config is invalid:"$'\n'"$out"
    grep -q "^this node: $k (" <<<"$out" || _lab_die "node $k's config is not node $k's:"$'\n'"$out"
    LAB_DAEMON_LOG[k]=$LAB_DIR/vipfarmd-node$k.log
    ip netns exec "${LAB_NODE_NS[k]}" "$VIPFARMD" --config "$conf" \
        </dev/null >>"${LAB_DAEMON_LOG[k]}" 2>&1 &
    LAB_DAEMON_PID[k]=$!
    unset 'LAB_DAEMON_STATUS[k]'
}

lab_start_daemons() {  # lab_start_daemons [K...]: default every node
    local k nodes=("$@")
    ((${#nodes[@]})) || for ((k = 1; k <= LAB_N; k++)); do nodes+=("$k"); done
    for k in "${nodes[@]}"; do lab_start_daemon "$k"; done
}

# lab_wait_ready [K...]: wait until each daemon has its TAP with the VIP; fail with its
# log when one exits or LAB_READY_TIMEOUT passes.
lab_wait_ready() {
    local k nodes=("$@") pending deadline=$((SECONDS + LAB_READY_TIMEOUT))
    ((${#nodes[@]})) || for ((k = 1; k <= LAB_N; k++)); do nodes+=("$k"); done
    while ((${#nodes[@]})); do
        pending=()
        for k in "${nodes[@]}"; do
            if _lab_daemon_ready "$k"; then
                continue
            elif ! _lab_alive "${LAB_DAEMON_PID[k]:-}"; then
                _lab_reap "${LAB_DAEMON_PID[k]:-}"
                LAB_DAEMON_STATUS[k]=$_LAB_STATUS
                unset 'LAB_DAEMON_PID[k]'
                _lab_log "node $k: vipfarmd exited with status $_LAB_STATUS before it was ready; its log:"
                tail -n 40 "${LAB_DAEMON_LOG[k]:-/dev/null}" >&2
                _lab_die "node $k's daemon did not start"
            fi
            pending+=("$k")
        done
        ((${#pending[@]})) || break
        if ((SECONDS >= deadline)); then
            for k in "${pending[@]}"; do
                _lab_log "node $k: no $LAB_TAP with $LAB_VIP4 after ${LAB_READY_TIMEOUT}s; its log:"
                tail -n 40 "${LAB_DAEMON_LOG[k]:-/dev/null}" >&2
            done
            _lab_die "daemons not ready: nodes ${pending[*]}"
        fi
        nodes=("${pending[@]}")
        sleep 0.1
    done
    _lab_log "daemons ready"
}

# lab_kill_daemon K [SIGNAL]: send SIGNAL (default KILL) to node K's vipfarmd, by PID, and
# reap it (its status lands in LAB_DAEMON_STATUS[k]); lab_start_daemon K starts it again.
lab_kill_daemon() {
    local k=$1 sig=${2:-KILL} pid=${LAB_DAEMON_PID[$1]:-}
    [[ -n $pid ]] || _lab_die "lab_kill_daemon: node $k has no daemon"
    kill "-$sig" "$pid" 2>/dev/null
    _lab_reap "$pid"
    LAB_DAEMON_STATUS[k]=$_LAB_STATUS
    unset 'LAB_DAEMON_PID[k]'
}

# lab_stop_nginx K: stop node K's nginx (by PID) and wait until it has exited.
lab_stop_nginx() {
    local k=$1 pid=${LAB_NGINX_PID[$1]:-}
    [[ -n $pid ]] || _lab_die "lab_stop_nginx: node $k has no nginx"
    _lab_stop_pids 5 "$pid"
    _lab_reap "$pid"
    unset 'LAB_NGINX_PID[k]'
}

# lab_wait_for TIMEOUT CMD...: run CMD every 50 ms until it succeeds (returns 0) or TIMEOUT
# seconds have passed (returns 1).
lab_wait_for() {
    local timeout=$1 deadline
    shift
    _lab_ms
    deadline=$((_LAB_MS + timeout * 1000))
    until "$@"; do
        _lab_ms
        ((_LAB_MS < deadline)) || return 1
        sleep 0.05
    done
}

# lab_owner SOURCE VIEW: the node `vipfarmctl owner` predicts (0: none) for a TCP flow from
# SOURCE:40000 to the IPv4 VIP's port 80 when VIEW (e.g. 1,3) is the view.
lab_owner() {
    "$VIPFARMCTL" owner --config "$(lab_node_config 1)" --view "$2" --json tcp "$1:40000" "$LAB_VIP4:80" |
        "$LAB_PY" -c 'import json,sys; print(json.load(sys.stdin).get("owner", 0))'
}

# lab_installed_at IDS K...: the latest time (ms since the epoch) at which one of nodes K...
# installed the view IDS, from each one's newest history record of that view (the daemon's
# clock, not this script's polling); fails if one of them has none.
lab_installed_at() {
    local want=$1 k
    shift
    for k in "$@"; do
        "$VIPFARMCTL" history --json --socket "$(lab_api_socket "$k")" || return 1
    done | "$LAB_PY" -c '
import datetime, json, sys
want, latest = [int(x) for x in sys.argv[1].split(",")], 0
for line in sys.stdin:
    records = [h for h in json.loads(line)["history"] if h["members"] == want]
    if not records:
        sys.exit(1)
    t = datetime.datetime.strptime(records[-1]["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
    latest = max(latest, t.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000)
print(int(latest))' "$want"
}

# lab_wait_view IDS [TIMEOUT] [K...]: wait until each node (default every node) has
# installed the view IDS (e.g. "1,3"; "" for the empty view) and holds its lease; at most
# TIMEOUT seconds (default 10). Returns 1 on timeout, naming each node's view.
lab_wait_view() {
    local want=$1 timeout=${2:-10} k nodes=("${@:3}") got pending deadline
    ((${#nodes[@]})) || for ((k = 1; k <= LAB_N; k++)); do nodes+=("$k"); done
    _lab_ms
    deadline=$((_LAB_MS + timeout * 1000))
    while :; do
        pending=()
        for k in "${nodes[@]}"; do
            got=$("$VIPFARMCTL" view --json --socket "$(lab_api_socket "$k")" 2>/dev/null |
                "$LAB_PY" -c 'import json,sys; v=json.load(sys.stdin); print(",".join(map(str, v["members"])) + ("" if v["lease_ok"] or not v["members"] else " (lease lapsed)"))' 2>/dev/null)
            [[ $got == "$want" ]] || pending+=("node $k: ${got:-no answer}")
        done
        ((${#pending[@]})) || return 0
        _lab_ms
        if ((_LAB_MS >= deadline)); then
            _lab_log "view $want not installed within ${timeout}s: ${pending[*]}"
            return 1
        fi
        sleep 0.05
    done
}

# lab_stop_daemon K / lab_stop_daemons [K...]: TERM, KILL after LAB_STOP_TIMEOUT.
# Exit statuses land in LAB_DAEMON_STATUS[k] (137 when it had to be killed), the time
# each took in LAB_DAEMON_STOP_MS[k]; returns non-zero when a daemon did not exit 0 by
# itself.
lab_stop_daemon() { lab_stop_daemons "$1"; }
lab_stop_daemons() {
    local k nodes=("$@") pids=() ok=0
    ((${#nodes[@]})) || for ((k = 1; k <= LAB_N; k++)); do nodes+=("$k"); done
    for k in "${nodes[@]}"; do
        if [[ -n ${LAB_DAEMON_PID[k]:-} ]]; then pids+=("${LAB_DAEMON_PID[k]}"); fi
    done
    ((${#pids[@]})) || return 0
    _lab_stop_pids "$LAB_STOP_TIMEOUT" "${pids[@]}"
    for k in "${nodes[@]}"; do
        [[ -n ${LAB_DAEMON_PID[k]:-} ]] || continue
        _lab_reap "${LAB_DAEMON_PID[k]}"
        LAB_DAEMON_STATUS[k]=$_LAB_STATUS
        LAB_DAEMON_STOP_MS[k]=${_LAB_GONE_MS[${LAB_DAEMON_PID[k]}]:-}
        if [[ " ${_LAB_KILLED[*]} " == *" ${LAB_DAEMON_PID[k]} "* ]]; then
            _lab_log "node $k: vipfarmd ignored SIGTERM for ${LAB_STOP_TIMEOUT}s; killed"
            LAB_DAEMON_STATUS[k]=137
        fi
        ((LAB_DAEMON_STATUS[k] == 0)) || ok=1
        unset 'LAB_DAEMON_PID[k]'
    done
    return "$ok"
}

# _lab_nginx_conf DIR BODY: DIR/nginx.conf, an nginx answering BODY on port 80 (IPv4 and
# IPv6 wildcards), logging each request to DIR/access.log (the client address first).
_lab_nginx_conf() {
    local dir=$1 body=$2
    mkdir -p "$dir/tmp"
    cat >"$dir/nginx.conf" <<EOF
# nginx of the lab (generated by tests/lab/lib.sh)
daemon off;
master_process on;
worker_processes 1;
user root;
pid $dir/nginx.pid;
error_log $dir/error.log info;
events { worker_connections 4096; }
http {
    keepalive_requests 1000000;  # long-lived test connections are never closed by nginx
    log_format lab '\$remote_addr \$server_addr:\$server_port "\$request" \$status';
    access_log $dir/access.log lab;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    server {
        listen 80 default_server;
        listen [::]:80 default_server ipv6only=on;
        default_type text/plain;
        location / { return 200 "$body\n"; }
    }
}
EOF
}

# _lab_wait_nginx NS PID DIR WHAT: until nginx listens on port 80 in NS (both families);
# dies with its error log when PID exits or 10 s pass.
_lab_wait_nginx() {
    local ns=$1 pid=$2 dir=$3 what=$4 deadline=$((SECONDS + 10))
    until [[ $(ip netns exec "$ns" ss -Hltn 'sport = :80' 2>/dev/null | wc -l) -ge 2 ]]; do
        if ! _lab_alive "$pid" || ((SECONDS >= deadline)); then
            _lab_log "$what: nginx is not listening on port 80; its error log:"
            tail -n 20 "$dir/error.log" "$dir/stdout.log" >&2
            _lab_die "nginx of $what did not start"
        fi
        sleep 0.05
    done
}

# lab_start_nginx: in every node namespace, nginx answering "node<k>\n" on port 80
# (IPv4 and IPv6 wildcards: works before and after the daemon puts the VIPs up).
lab_start_nginx() {  # lab_start_nginx [K...]: default every node
    command -v nginx >/dev/null || _lab_die "nginx not found"
    local k dir nodes=("$@")
    ((${#nodes[@]})) || for ((k = 1; k <= LAB_N; k++)); do nodes+=("$k"); done
    for k in "${nodes[@]}"; do
        dir=$LAB_DIR/nginx-node$k
        _lab_nginx_conf "$dir" "node$k"
        ip netns exec "${LAB_NODE_NS[k]}" nginx -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf" \
            </dev/null >"$dir/stdout.log" 2>&1 &
        LAB_NGINX_PID[k]=$!
    done
    for k in "${nodes[@]}"; do
        _lab_wait_nginx "${LAB_NODE_NS[k]}" "${LAB_NGINX_PID[k]}" "$LAB_DIR/nginx-node$k" "node $k"
    done
    _lab_log "nginx listening on port 80 in nodes ${nodes[*]}"
}

# lab_start_server NS NAME [BODY]: nginx in namespace NS (a server of the lab's, e.g.
# LAB_SERVER_NS) answering "BODY\n" (default NAME) on port 80, its files in
# $LAB_DIR/nginx-NAME (requests logged to access.log, the client address first); stopped
# by lab_down.
lab_start_server() {
    local ns=$1 name=$2 body=${3:-$2} dir=$LAB_DIR/nginx-$2
    _lab_nginx_conf "$dir" "$body"
    lab_spawn "$ns" "$dir/stdout.log" nginx -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf"
    _lab_wait_nginx "$ns" "$LAB_LAST_PID" "$dir" "$name"
}

# lab_client_addrs COUNT [4|6]: add COUNT more source addresses to the client and print
# them, one a line (IPv4: 10.77.1.1, 10.77.1.2, ...; IPv6: fd77::1:1, ...). They are
# appended to LAB_CLIENT_ADDRS too (not when called from $(...)). Safe in $(...).
lab_client_addrs() {
    local count=${1:-} fam=${2:-4} have i addr batch
    [[ $count =~ ^[0-9]+$ ]] && ((count >= 1 && count <= 20000)) ||
        _lab_die "lab_client_addrs: COUNT must be 1..20000, got '$count'"
    [[ $fam == 4 || $fam == 6 ]] || _lab_die "lab_client_addrs: family must be 4 or 6"
    # How many this helper added before: every global address but the primary one.
    have=$(ip -n "$LAB_CLIENT_NS" -"$fam" -o addr show dev "$LAB_CLIENT_IF" scope global | wc -l)
    have=$((have - 1))
    ((have + count <= 20000)) || _lab_die "lab_client_addrs: at most 20000 addresses"
    batch=$LAB_DIR/addrs.$BASHPID
    : >"$batch"
    local added=()
    for ((i = have + 1; i <= have + count; i++)); do
        if [[ $fam == 4 ]]; then
            addr=10.77.$((1 + i / 256)).$((i % 256))
            echo "address add $addr/16 dev $LAB_CLIENT_IF" >>"$batch"
        else
            addr=$(printf 'fd77::1:%x' "$i")
            echo "address add $addr/64 dev $LAB_CLIENT_IF nodad" >>"$batch"
        fi
        added+=("$addr")
    done
    ip -n "$LAB_CLIENT_NS" -batch "$batch" || _lab_die "lab_client_addrs: cannot add addresses"
    rm -f "$batch"
    LAB_CLIENT_ADDRS+=("${added[@]}")
    printf '%s\n' "${added[@]}"
}

# lab_dump: the state of the lab, for a failing test (to stderr).
lab_dump() {
    ((_LAB_UP)) || return 0
    local - ns k log
    set +e
    _LAB_DUMPED=1
    {
        echo "=============== lab dump: suffix $LAB_SUFFIX_USED, $LAB_N nodes, dir $LAB_DIR"
        echo "--- bridge $LAB_BRIDGE (namespace $LAB_SWITCH_NS)"
        ip -n "$LAB_SWITCH_NS" -d link show dev "$LAB_BRIDGE" 2>&1 | head -n 3
        bridge -n "$LAB_SWITCH_NS" link show 2>&1 | grep -F "master $LAB_BRIDGE"
        echo "--- bridge fdb show br $LAB_BRIDGE"
        bridge -n "$LAB_SWITCH_NS" fdb show br "$LAB_BRIDGE" 2>&1
        for ns in "${_LAB_NETNS[@]}"; do
            echo "--- namespace $ns: link"
            ip -n "$ns" -s link 2>&1
            echo "--- namespace $ns: addr"
            ip -n "$ns" addr 2>&1 | _lab_head 40
            echo "--- namespace $ns: neigh"
            ip -n "$ns" neigh 2>&1 | _lab_head 40
            echo "--- namespace $ns: routes"
            { ip -n "$ns" -4 route; ip -n "$ns" -6 route; } 2>&1
            echo "--- namespace $ns: processes: $(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')"
        done
        for ((k = 1; k <= LAB_N; k++)); do
            log=${LAB_DAEMON_LOG[k]:-}
            [[ -n $log ]] || continue
            if _lab_alive "${LAB_DAEMON_PID[k]:-}"; then
                echo "--- vipfarmd node $k (pid ${LAB_DAEMON_PID[k]}, running): tail of $log"
            else
                echo "--- vipfarmd node $k (exited ${LAB_DAEMON_STATUS[k]:-?}): tail of $log"
            fi
            tail -n 30 "$log" 2>&1
        done
        for ((k = 1; k <= LAB_N; k++)); do
            log=$LAB_DIR/nginx-node$k/error.log
            [[ -s $log ]] || continue
            echo "--- nginx node $k: tail of $log"
            tail -n 10 "$log"
        done
        echo "=============== end of lab dump"
    } >&2
}

_lab_head() {  # _lab_head N: the first N lines of stdin, then a count of the rest
    awk -v n="$1" 'NR <= n { print } END { if (NR > n) printf "    ... %d more lines\n", NR - n }'
}

# lab_down: stop every process of the lab, delete its links, namespaces, DPDK runtime
# directories and temp dir. Idempotent; runs from the trap on every exit path.
lab_down() {
    ((_LAB_UP)) || return 0
    local - k pids=() ns link deadline
    set +e
    # Daemons first (they own the uplinks), then nginx and spawned helpers.
    lab_stop_daemons || true
    for k in "${!LAB_NGINX_PID[@]}"; do pids+=("${LAB_NGINX_PID[k]}"); done
    pids+=("${_LAB_BG_PIDS[@]}")
    if ((${#pids[@]})); then
        _lab_stop_pids "$LAB_STOP_TIMEOUT" "${pids[@]}"
        for k in "${pids[@]}"; do _lab_reap "$k"; done
    fi
    # Anything else still inside the lab's namespaces (nginx workers, stray curls).
    pids=()
    for ns in "${_LAB_NETNS[@]}"; do
        [[ -e /run/netns/$ns ]] && mapfile -t -O "${#pids[@]}" pids < <(ip netns pids "$ns" 2>/dev/null)
    done
    ((${#pids[@]})) && _lab_stop_pids 2 "${pids[@]}"
    # Deleting the namespaces deletes every link: the switch's holds the bridge and
    # one end of every veth.
    for ns in "${_LAB_NETNS[@]}"; do
        [[ -e /run/netns/$ns ]] && ip netns del "$ns"
    done
    for ns in "${_LAB_NETNS[@]}"; do
        [[ -e /run/netns/$ns ]] && _lab_log "warning: namespace $ns is still there"
    done
    for link in "${_LAB_EAL_PREFIXES[@]}"; do
        [[ -d /var/run/dpdk/$link ]] && rm -rf "/var/run/dpdk/$link"
    done
    if [[ -n $LAB_DIR && -d $LAB_DIR ]]; then
        if [[ ${LAB_KEEP_DIR:-0} == 1 ]]; then
            _lab_log "kept $LAB_DIR"
        else
            rm -rf "$LAB_DIR"
        fi
    fi
    _lab_log "down: lab $LAB_SUFFIX_USED removed"
    _lab_reset
    return 0
}
