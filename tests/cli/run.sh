#!/usr/bin/env bash
# vipfarmctl end to end: exit codes, error format, owner query consistent with the
# bucket map and with --view, JSON output. Ends with "cli: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
ctl=${VIPFARMCTL:-build/vipfarmctl}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
CHECK_NAME=cli
# shellcheck source=../lib/check.sh
source tests/lib/check.sh

status_of() { "$@" >"$tmp/out" 2>"$tmp/err"; echo $?; }

# check-config: 0 and a summary for a good file, 1 and every error for a bad one.
check "good config exits 0" test "$(status_of "$ctl" check-config conf/production.toml)" = 0
check "summary names the fingerprint" grep -qE '^fingerprint: [0-9a-f]{64}$' "$tmp/out"
cat >"$tmp/bad.toml" <<'TOML'
[node]
id = "one"

[cluster]
name = "x"
buckets = 3
colour = "red"
TOML
check "bad config exits 1" test "$(status_of "$ctl" check-config "$tmp/bad.toml")" = 1
check "errors are file:line:col: key: reason" \
  grep -qx "$tmp/bad.toml:2:6: node.id: expected an integer" "$tmp/err"
check "every error is reported" grep -q "cluster.colour: unknown key" "$tmp/err"
check "power of two" grep -q "$tmp/bad.toml:6:11: cluster.buckets: must be a power of two, got 3" "$tmp/err"
check "missing file exits 1" test "$(status_of "$ctl" check-config "$tmp/none.toml")" = 1
check "check-config --json: exit 1, every error with line, column, key and reason" \
  test "$(status_of "$ctl" check-config --json "$tmp/bad.toml")" = 1
check "check-config --json errors" /usr/bin/python3 - "$tmp/out" <<'PY'
import json, sys
out = json.load(open(sys.argv[1]))
assert out["ok"] is False, out
assert {"line": 2, "column": 6, "key": "node.id", "reason": "expected an integer"}.items() <= \
    next(e for e in out["errors"] if e["key"] == "node.id").items(), out
assert any(e["key"] == "cluster.colour" for e in out["errors"]), out
PY
check "check-config --json on a good file: exit 0, its fingerprint" \
  test "$(status_of "$ctl" check-config conf/production.toml --json)" = 0
check "check-config --json fingerprint" /usr/bin/python3 -c '
import json, re, sys
out = json.load(open(sys.argv[1]))
assert out["ok"] and re.fullmatch("[0-9a-f]{64}", out["fingerprint"]) and out["errors"] == [], out
' "$tmp/out"
check "usage error exits 2" test "$(status_of "$ctl" frobnicate)" = 2
check "bad endpoint exits 2" test "$(status_of "$ctl" owner --config conf/lab.toml tcp 10.77.1.1 10.77.0.100:80)" = 2

# owner: the JSON answer agrees with the human one and with the bucket map.
"$ctl" owner --config conf/lab.toml --json tcp 10.77.1.10:40001 10.77.0.100:80 >"$tmp/owner.json"
owner=$(/usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["owner"])' <"$tmp/owner.json")
bucket=$(/usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["bucket"])' <"$tmp/owner.json")
check "owner is a lab node" test "$owner" -ge 1 -a "$owner" -le 3
check "human output matches JSON" \
  grep -q "bucket $bucket  owner $owner " <("$ctl" owner --config conf/lab.toml tcp 10.77.1.10:40001 10.77.0.100:80)
# Without the owner in the view, another node takes the flow; with only the owner, it keeps it.
others=$(echo 1 2 3 | tr ' ' '\n' | grep -vx "$owner" | paste -sd,)
moved=$(/usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["owner"])' \
  < <("$ctl" owner --config conf/lab.toml --view "$others" --json tcp 10.77.1.10:40001 10.77.0.100:80))
check "a view without the owner moves the flow" test "$moved" != "$owner" -a "$moved" != 0
kept=$(/usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["owner"])' \
  < <("$ctl" owner --config conf/lab.toml --view "$owner" --json tcp 10.77.1.10:40001 10.77.0.100:80))
check "a view of the owner alone keeps it" test "$kept" = "$owner"
check "ipv6 flow is farm traffic" \
  grep -q '^farm ' <("$ctl" owner --config conf/lab.toml tcp '[fd77::1:10]:40001' '[fd77::100]:443')
check "not a vip passes" grep -qx 'pass' <("$ctl" owner --config conf/lab.toml tcp 10.77.1.10:40001 10.77.0.1:22)

# buckets: counts add up, and removing node 2 moves exactly its buckets.
"$ctl" buckets --config conf/lab.toml --json >"$tmp/all.json"
"$ctl" buckets --config conf/lab.toml --json --from-view 1,2,3 --view 1,3 >"$tmp/down.json"
check "bucket counts add up and node 2's move" /usr/bin/python3 - "$tmp/all.json" "$tmp/down.json" <<'PY'
import json, sys
full = json.load(open(sys.argv[1]))[0]
down = json.load(open(sys.argv[2]))[0]
owned = {o["node"]: o["owned"] for o in full["owners"]}
assert sum(owned.values()) == full["buckets"] == 256, owned
assert max(owned.values()) - min(owned.values()) <= 1, owned
assert down["moved"] == owned[2], (down["moved"], owned)
assert {o["node"] for o in down["owners"]} == {1, 3}
PY

# Daemon commands without a daemon: `state` answers 4 (its exit status is the node's state,
# 0-3), the others 1; a malformed `view set` is a usage error.
check "state without a daemon exits 4" test "$(status_of "$ctl" state --socket "$tmp/none.sock")" = 4
for cmd in nodes view history stop start reload; do
  check "$cmd without a daemon exits 1" test "$(status_of "$ctl" "$cmd" --socket "$tmp/none.sock")" = 1
done
check "view set without ids exits 2" test "$(status_of "$ctl" view set --socket "$tmp/none.sock")" = 2

# top: a farm none of whose nodes answers (loopback addresses, a port nothing listens on):
# each node reported unreachable with the reason, exit 1; usage errors exit 2.
port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed -e 's/"10\.77\.0\.\([123]\)"/"127.0.0.\1"/' conf/lab.toml >"$tmp/top.toml"
printf '\n[metrics]\nlisten = "127.0.0.1:%s"\n' "$port" >>"$tmp/top.toml"
check "top config points at loopback" grep -q "listen = \"127.0.0.1:$port\"" "$tmp/top.toml"
check "top with no node answering exits 1" \
  test "$(status_of "$ctl" top --config "$tmp/top.toml" --count 1 --json)" = 1
check "top reports every node unreachable, with the reason" /usr/bin/python3 - "$tmp/out" <<'PY'
import json, sys
frame = json.loads(open(sys.argv[1]).read())
assert [n["id"] for n in frame["nodes"]] == [1, 2, 3], frame
assert all(not n["ok"] and "refused" in n["error"] for n in frame["nodes"]), frame
PY
check "top without --config exits 2" test "$(status_of "$ctl" top --count 1)" = 2
check "top with a bad interval exits 2" \
  test "$(status_of "$ctl" top --config "$tmp/top.toml" --interval 0)" = 2

# import-safekit: a SafeKit farm module converts into a config vipfarm loads; what cannot be
# mapped is named on stderr; malformed XML exits 1 with its position; no file exits 2.
sk=tests/fixtures/safekit
check "import-safekit converts the web farm example (exit 0)" \
  test "$(status_of "$ctl" import-safekit "$sk/web_farm.xml" --cluster "$sk/cluster_three_nodes.xml" \
    --node node2 -o "$tmp/sk.toml")" = 0
check "the imported config loads, as node 2 of 3" \
  bash -c '"$1" check-config "$2" | grep -q "^this node: 2 (node2)$"' _ "$ctl" "$tmp/sk.toml"
check "what SafeKit had and vipfarm does not is named (the module scripts)" \
  grep -q "/safe/service/user: unmapped" "$tmp/err"
printf '<safe><service mode="farm"><vip>\n<interface_list>\n' >"$tmp/broken.xml"
check "malformed XML exits 1" test "$(status_of "$ctl" import-safekit "$tmp/broken.xml")" = 1
check "malformed XML: the error names the file and line" grep -q "^$tmp/broken.xml:[0-9]*:" "$tmp/err"
check "import-safekit without a file exits 2" test "$(status_of "$ctl" import-safekit)" = 2

# The daemon's commands, declared once (api/commands.hpp): vipfarmctl's usage lists them
# from the declarations; each is a vipfarmctl command (a dead socket: exit 1, not "unknown
# command", 2), in the bash completion's list and in the man page's COMMANDS.
check "the man page check can fail" bash -c '! grep -qF "\\fBfrobnicate\\fR" "$1"' _ docs/man/vipfarmctl.8
"$ctl" --help >"$tmp/help"
mapfile -t daemon_cmds < <(sed -n '/^commands for a running vipfarmd/,/^  --version/p' "$tmp/help" |
  sed -n 's/^  \([a-z][a-z-]*\) .*/\1/p')
check "usage lists the declared daemon commands (13 declared, owner API-only)" \
  test "${#daemon_cmds[@]}" = 12
completion_cmds=$(sed -n '/local commands="/,/"$/p' deploy/bash-completion/vipfarmctl)
for c in "${daemon_cmds[@]}"; do
  check "$c: a vipfarmctl command (no daemon: exit 1, state 4; never 2)" \
    test "$(status_of "$ctl" "$c" --socket "$tmp/no.sock")" = "$([[ $c == state ]] && echo 4 || echo 1)"
  check "$c: in the bash completion" grep -qw -- "$c" <<<"$completion_cmds"
  check "$c: in the man page" bash -c \
    'grep -qF "\\fB$1\\fR" "$2" || grep -qE "^\.BR? $1( |,|$)" "$2"' _ "$c" docs/man/vipfarmctl.8
done

summary
((failed == 0))
