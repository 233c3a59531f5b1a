#!/usr/bin/env bash
# shellcheck disable=SC2119 # lab_* functions take optional args
# Lab test of issue 6: Debian's Prometheus server against a 3-node lab farm, with the
# shipped alert rules (deploy/prometheus/vipfarm-alerts.yml, linked, not copied) and a
# scrape config made from the shipped deploy/prometheus/prometheus.yml by changing only the
# targets (the lab nodes' addresses, the farm label) and the scrape and evaluation
# intervals (1 s); the script checks that nothing else differs.
#  - Prometheus runs in the client namespace: the nodes' metrics endpoints ([metrics]
#    listen's default, each node's own address, port 9469) are reached at the nodes' own addresses
#    through the switch and each node's data plane, as a monitoring host reaches a farm
#    (not from inside a node, which would go blind with its node). Its web port is
#    127.0.0.1:9090 of that namespace, its storage in the lab's temp dir.
#  - Every target up, every rule evaluated without error, no alert firing, every
#    dashboard query runs on the server;
#  - node 1's /metrics against the README's Metrics list (both ways) and against every
#    metric name the dashboard and the alert rules use;
#  - kill -9 node 2's daemon: VipfarmNodeDown{name="node2"} and VipfarmDaemonUnreachable for
#    its address fire, through /api/v1/alerts, within the rules' `for:` plus 20 s, and no
#    other alert does; prints the time from the kill to firing.
# Needs root, prometheus and promtool (Debian package prometheus), build/vipfarmd and
# build/vipfarmctl. Knobs: lib.sh's. Ends with "lab-prometheus: N passed, M failed".
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"
root=$(cd "$here/../.." && pwd)
py=/usr/bin/python3
deploy_check=$root/tests/deploy/prometheus.sh
shipped=$root/deploy/prometheus
victim=2
prom_port=9090

CHECK_NAME=lab-prometheus
# shellcheck source-path=SCRIPTDIR source=../lib/check.sh
source "$here/../lib/check.sh"
LAB_AT_EXIT=stopped_early

for tool in prometheus promtool curl; do
  command -v "$tool" >/dev/null || _lab_die "$tool not found (scripts/setup installs it)"
done

lab_up 3
lab_start_daemons
lab_wait_ready
lab_start_nginx # the lab config's tcp checker watches it: without it the nodes stay in WAIT
check "the farm agrees on the view 1,2,3" lab_wait_view 1,2,3 20

# --- Prometheus in the client namespace ----------------------------------------------------
promdir=$LAB_DIR/prometheus
mkdir -p "$promdir/data"
ln -s "$shipped/vipfarm-alerts.yml" "$promdir/vipfarm-alerts.yml"
# The lab's targets: every node's address ([[cluster.node]]) on the [metrics] listen port.
mapfile -t lab_targets < <("$py" - "$(lab_node_config 1)" <<'PY'
import sys, tomllib
conf = tomllib.load(open(sys.argv[1], "rb"))
# [metrics] listen, or its default: the node's own address, port 9469.
port = conf.get("metrics", {}).get("listen", ":9469").rsplit(":", 1)[1]
print(conf["cluster"]["name"])
for node in conf["cluster"]["node"]:
    print(f"{node['address']}:{port}")
PY
)
farm=${lab_targets[0]}
lab_targets=("${lab_targets[@]:1}")
check "the lab config lists 3 nodes to scrape (${lab_targets[*]})" test "${#lab_targets[@]}" = 3

derive_config() { # the shipped config with the lab's targets, farm label and 1 s intervals
  "$py" - "$shipped/prometheus.yml" "$promdir/prometheus.yml" "$farm" "${lab_targets[@]}" <<'PY'
import re, sys, yaml
src, out, farm, targets = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
text = open(src).read()
text, n_scrape = re.subn(r"(?m)^(\s*scrape_interval:\s*)\S+", r"\g<1>1s", text)
text, n_eval = re.subn(r"(?m)^(\s*evaluation_interval:\s*)\S+", r"\g<1>1s", text)
block = re.compile(r"(?m)^(?P<ind>[ \t]*)- targets:\n(?P<items>(?:(?P=ind)[ \t]+- \S+\n)+)")
m = block.search(text)
if not m or len(block.findall(text)) != 1 or n_scrape != 1 or n_eval != 1:
    sys.exit(f"{src}: expected one global scrape_interval, evaluation_interval and target list")
item = re.match(r"[ \t]*- ", m.group("items")).group(0)
text = text[: m.start("items")] + "".join(f"{item}{t}\n" for t in targets) + text[m.end("items"):]
text, n_farm = re.subn(r"(?m)^(\s*farm:\s*)\S+", lambda x: x.group(1) + farm, text)
if n_farm != 1:
    sys.exit(f"{src}: expected one farm label")
open(out, "w").write(text)
# Nothing else may differ from the shipped file.
want = yaml.safe_load(open(src))
want["global"]["scrape_interval"] = want["global"]["evaluation_interval"] = "1s"
static = want["scrape_configs"][0]["static_configs"][0]
static["targets"], static["labels"]["farm"] = targets, farm
if yaml.safe_load(text) != want:
    sys.exit("the derived config differs from the shipped one beyond targets and intervals")
PY
}
check "scrape config derived from the shipped one (targets, farm label, intervals only)" derive_config
config_ok() {
  local out
  out=$(promtool check config "$promdir/prometheus.yml" 2>&1) || { echo "$out" >&2 && return 1; }
}
check "promtool check config accepts it" config_ok
lab_spawn "$LAB_CLIENT_NS" "$promdir/prometheus.log" prometheus \
  --config.file="$promdir/prometheus.yml" --storage.tsdb.path="$promdir/data" \
  --web.listen-address="127.0.0.1:$prom_port" --log.level=warn
prom_pid=$LAB_LAST_PID

# prom_py PYTHON [ARG...]: run PYTHON (stdin) with the server's API in the client namespace;
# it gets api(path) -> the decoded "data" of a successful answer (exit 1 otherwise).
prom_py() {
  local code
  code=$(cat)
  lab_exec_client "$py" -c "
import json, sys, urllib.parse, urllib.request
def api(path, **form):
    data = urllib.parse.urlencode(form).encode() if form else None
    with urllib.request.urlopen('http://127.0.0.1:$prom_port/api/v1/' + path, data, timeout=2) as r:
        answer = json.load(r)
    if answer.get('status') != 'success':
        sys.exit(f'{path}: {answer}')
    return answer['data']
$code" "$@"
}

targets_up() {
  prom_py "${lab_targets[@]}" <<'PY' 2>/dev/null
want = set(sys.argv[1:])
up = {t["labels"]["instance"] for t in api("targets")["activeTargets"]
      if t["labels"].get("job") == "vipfarm" and t["health"] == "up"}
sys.exit(0 if up == want else 1)
PY
}
lab_wait_for 20 targets_up
targets_rc=$?
check "Prometheus scrapes every node (3 targets up)" test "$targets_rc" = 0
if ((targets_rc != 0)); then
  tail -n 20 "$promdir/prometheus.log" >&2
  prom_py <<<'print(json.dumps(api("targets")["activeTargets"], indent=1))' >&2
fi
_lab_ms
up_at=$_LAB_MS

# Every rule group evaluated after the targets were up, every rule healthy.
rules_evaluated() {
  prom_py "$up_at" "$promdir/vipfarm-alerts.yml" <<'PY' 2>/dev/null
import datetime
since, path = int(sys.argv[1]) / 1000, sys.argv[2]
groups = api("rules")["groups"]
def t(s):
    s = s.rstrip("Z").split(".")[0]
    return datetime.datetime.fromisoformat(s).replace(tzinfo=datetime.timezone.utc).timestamp()
ok = groups and all(g["file"] == path and t(g["lastEvaluation"]) > since + 1 for g in groups)
sys.exit(0 if ok else 1)
PY
}
check "the shipped rules are loaded and evaluated" lab_wait_for 10 rules_evaluated
rules_report=$LAB_DIR/rules.txt
prom_py "$shipped/vipfarm-alerts.yml" >"$rules_report" 2>&1 <<'PY'
import yaml
shipped = sorted(r["alert"] for g in yaml.safe_load(open(sys.argv[1]))["groups"] for r in g["rules"])
loaded = [r for g in api("rules")["groups"] for r in g["rules"]]
print("loaded", len(loaded), "rules, shipped", len(shipped))
bad = [f"{r['name']}: {r['health']} {r.get('lastError', '')}" for r in loaded if r["health"] != "ok"]
if sorted(r["name"] for r in loaded) != shipped:
    bad.append(f"loaded {sorted(r['name'] for r in loaded)} != shipped {shipped}")
for line in bad:
    print(line)
sys.exit(1 if bad else 0)
PY
check "every shipped alert rule is loaded and evaluates without error ($(head -n 1 "$rules_report"))" \
  test "$(wc -l <"$rules_report")" = 1
[[ $(wc -l <"$rules_report") == 1 ]] || cat "$rules_report" >&2

# alerts STATE...: the alerts in those states (pending, firing), one
# "alertname label=value ... (state)" a line; firing: the firing ones, without the state.
alerts() {
  prom_py "$@" <<'PY'
for a in api("alerts")["alerts"]:
    if a["state"] in sys.argv[1:]:
        labels = dict(a["labels"])
        print(labels.pop("alertname"), " ".join(f"{k}={v}" for k, v in sorted(labels.items())),
              f"({a['state']})")
PY
}
firing() { alerts firing | sed 's/ (firing)$//'; }
no_alert_active() {
  local out
  out=$(alerts pending firing 2>/dev/null) && [[ -z $out ]]
}
check "no alert is pending or firing in the healthy farm" lab_wait_for 10 no_alert_active
alerts pending firing >&2

# Every dashboard query runs on the server (variables as "All"); how many return data.
queries_report=$LAB_DIR/queries.txt
"$deploy_check" --dashboard-queries >"$LAB_DIR/queries.json"
prom_py "$LAB_DIR/queries.json" >"$queries_report" 2>&1 <<'PY'
queries = json.load(open(sys.argv[1]))
bad, empty = [], []
for where, expr in queries:
    try:
        data = api("query", query=expr)
    except Exception as e:  # an HTTP 400 names the PromQL error
        bad.append(f"{where}: {e}: {getattr(e, 'read', lambda: b'')().decode()[:300]}")
        continue
    if not data["result"]:
        empty.append(where)
print(f"{len(queries)} queries, {len(queries) - len(bad) - len(empty)} with data, "
      f"{len(empty)} empty now, {len(bad)} failed")
for line in bad:
    print("FAILED", line)
for where in empty:
    print("empty (nothing to show in a healthy idle farm):", where)
sys.exit(1 if bad else 0)
PY
queries_ran() { [[ -s $queries_report ]] && ! grep -q "^FAILED" "$queries_report"; }
check "every dashboard query runs on Prometheus ($(head -n 1 "$queries_report"))" queries_ran
sed -n 1p "$queries_report"
grep "^FAILED\|^empty" "$queries_report" >&2

# --- node 1's /metrics against the README and the dashboard and rules ----------------------
scrape=$LAB_DIR/node1.metrics
lab_exec_node 1 curl -s --max-time 2 http://10.77.0.1:9469/metrics >"$scrape"
"$deploy_check" --readme-metrics >"$LAB_DIR/readme.txt"
"$deploy_check" --used-metrics >"$LAB_DIR/used.txt"
# metrics_diff MODE: the problems, one a line (none: exit 0).
#   readme: every README name has samples in the scrape (none may be absent here: the lab
#     runs [membership], a [[checker]] and flow handoff, and every peer has been heard; on
#     other nodes the membership families are absent without [membership], the checker
#     families have no samples without a [[checker]], and vipfarm_peer_last_heard_seconds
#     has none for a peer never heard), and every vipfarm_ family of the scrape is listed;
#   used: every series name the dashboard and rules use has samples (`up` is Prometheus's).
metrics_diff() {
  "$py" - "$1" "$scrape" "$LAB_DIR/readme.txt" "$LAB_DIR/used.txt" <<'PY'
import re, sys
mode, scrape, readme, used = sys.argv[1:]
families, samples = {}, set()
for line in open(scrape):
    m = re.match(r"# TYPE (\S+) (\S+)", line)
    if m:
        families[m.group(1)] = m.group(2)
    elif line.strip() and not line.startswith("#"):
        samples.add(re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line).group(0))
def has_samples(family):
    if families.get(family) == "histogram":
        return {family + s for s in ("_bucket", "_sum", "_count")} <= samples
    return family in samples
bad = []
if mode == "readme":
    listed = [l.strip() for l in open(readme) if l.strip()]
    bad += [f"README lists {n}: no sample in the scrape" for n in listed if not has_samples(n)]
    bad += [f"the scrape has {n} ({t}): not in the README's Metrics list"
            for n, t in sorted(families.items()) if n.startswith("vipfarm_") and n not in listed]
else:
    names = [l.strip() for l in open(used) if l.strip() and l.strip() != "up"]
    bad += [f"{n} (dashboard or alert rules): no sample in the scrape" for n in names
            if n not in samples]
for line in bad:
    print(line)
sys.exit(1 if bad else 0)
PY
}
check "node 1's /metrics answers ($(grep -c '^# TYPE vipfarm_' "$scrape") vipfarm_ families)" \
  test "$(grep -c '^# TYPE vipfarm_' "$scrape")" -gt 0
check "README Metrics list = the vipfarm_ families of node 1's /metrics" metrics_diff readme
check "every metric the dashboard and the rules use is in node 1's /metrics" metrics_diff used

# --- kill -9 node 2: the node-down alerts fire ---------------------------------------------
for_s=$("$py" - "$shipped/vipfarm-alerts.yml" <<'PY'
import re, sys, yaml
rules = {r["alert"]: r for g in yaml.safe_load(open(sys.argv[1]))["groups"] for r in g["rules"]}
units = {"s": 1, "m": 60, "h": 3600}
def seconds(d):
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smh])", d))
print(max(seconds(rules[a]["for"]) for a in ("VipfarmNodeDown", "VipfarmDaemonUnreachable")))
PY
)
bound_s=$((for_s + 20))
victim_instance=${lab_targets[victim - 1]}
_lab_ms
kill_ms=$_LAB_MS
lab_kill_daemon "$victim"
check "nodes 1 and 3 install the view 1,3" lab_wait_view 1,3 5 1 3
declare -A fired_ms=()
# both_fired: both node-down alerts fire for the victim; the first time each is seen firing
# (after the kill, by this script's clock) goes to fired_ms.
both_fired() {
  local now
  now=$(firing 2>/dev/null)
  _lab_ms
  if [[ -z ${fired_ms[VipfarmNodeDown]:-} ]] && grep -q "^VipfarmNodeDown .*name=node$victim node=$victim " <<<"$now"; then
    fired_ms[VipfarmNodeDown]=$((_LAB_MS - kill_ms))
  fi
  if [[ -z ${fired_ms[VipfarmDaemonUnreachable]:-} ]] && grep "^VipfarmDaemonUnreachable " <<<"$now" | grep -qF "instance=$victim_instance "; then
    fired_ms[VipfarmDaemonUnreachable]=$((_LAB_MS - kill_ms))
  fi
  [[ -n ${fired_ms[VipfarmNodeDown]:-} && -n ${fired_ms[VipfarmDaemonUnreachable]:-} ]]
}
lab_wait_for "$bound_s" both_fired
check "VipfarmNodeDown fires for node$victim within ${bound_s} s of the kill (for: ${for_s}s)" \
  test -n "${fired_ms[VipfarmNodeDown]:-}"
check "VipfarmDaemonUnreachable fires for $victim_instance within ${bound_s} s of the kill" \
  test -n "${fired_ms[VipfarmDaemonUnreachable]:-}"
after() { [[ -n ${fired_ms[$1]:-} ]] && echo "after ${fired_ms[$1]} ms" || echo "not within $bound_s s"; }
echo "kill -9 of node $victim's daemon -> firing: VipfarmNodeDown $(after VipfarmNodeDown), VipfarmDaemonUnreachable $(after VipfarmDaemonUnreachable) (for: ${for_s}s; scrape and evaluation every 1 s)"
firing >"$LAB_DIR/firing.txt" 2>&1
check "no other alert fires (the survivors own every bucket)" \
  test "$(grep -vc "^VipfarmNodeDown .*name=node$victim \|^VipfarmDaemonUnreachable .*instance=$victim_instance " "$LAB_DIR/firing.txt")" = 0
cat "$LAB_DIR/firing.txt" >&2
summary_ok() {
  prom_py "$victim" "$farm" <<'PY'
want = f"vipfarm node node{sys.argv[1]} (id {sys.argv[1]}) of farm {sys.argv[2]} is down"
got = [a["annotations"]["summary"] for a in api("alerts")["alerts"]
       if a["labels"]["alertname"] == "VipfarmNodeDown" and a["state"] == "firing"]
sys.exit(0 if got == [want] else f"summaries {got}, want [{want!r}]")
PY
}
check "its summary names the node: \"vipfarm node node$victim (id $victim) of farm $farm is down\"" summary_ok
check "Prometheus ran throughout" _lab_alive "$prom_pid"

lab_stop_daemons
LAB_AT_EXIT=""
summary
((failed == 0))
