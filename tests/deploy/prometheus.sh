#!/usr/bin/env bash
# Checks deploy/prometheus/ and deploy/grafana/ without root and without a farm:
#  - promtool check config / check rules / test rules (the alerts' unit tests);
#  - every metric name used by an alert expression or a dashboard query is one vipfarmd
#    exports, as src/metrics/metrics.cpp and the counter tables it reads declare them
#    (histograms as _bucket, _sum and _count), and the label values they match (state, verdict, reason) exist in the sources;
#  - every alert has a `for:`, a severity, a summary and a description naming its node or
#    group, and a unit test where it fires and one where it does not; the heartbeat alert
#    covers every rejection reason of src/membership/wire.cpp;
#  - the dashboard: schema, the datasource and node variables, every variable it uses
#    defined, unique panel ids, panels inside the grid and not overlapping, every query
#    valid PromQL (checked by promtool), every exported metric family shown;
#  - the README's Metrics list names exactly the families vipfarmd exports; the scrape config
#    has job "vipfarm", loads the rules, and scrapes the default [metrics] listen port.
# Ends with "deploy-prometheus: N passed, M failed"; exits non-zero on any failure.
#
# Also the one place that reads metric names (tests/lab/prometheus.sh calls it):
#   tests/deploy/prometheus.sh --used-metrics     series names the rules and dashboard use
#   tests/deploy/prometheus.sh --readme-metrics   family names of the README's Metrics list
#   tests/deploy/prometheus.sh --source-metrics   family names of metrics.cpp ("NAME histogram"
#                                                 for histograms)
#   tests/deploy/prometheus.sh --dashboard-queries  JSON [[where, PromQL], ...]: the dashboard's
#                                                 queries, variables replaced (node, farm: all)
# Needs promtool (Debian package prometheus) and Debian's python3 with python3-yaml.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
py=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cat >"$tmp/deploy_metrics.py" <<'PY'
"""Metric names of vipfarm's sources, README, alert rules and dashboard; and the checks."""
import json
import re
import sys

import yaml

ROOT = sys.argv[1]
PROM = f"{ROOT}/deploy/prometheus"
DASHBOARD = f"{ROOT}/deploy/grafana/vipfarm-dashboard.json"
# Series Prometheus itself makes for every target; the only non-vipfarm name allowed.
SYNTHETIC = {"up"}
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s"}
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
            "group_right", "bool", "offset", "inf", "nan"}


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def source_families():
    """{family: type} of every "vipfarm_..." name literal in metrics.cpp. The type is the
    first MetricType:: after the name and before the next name (kCounters entries have
    none there: counters). The data plane's counters are declared in two headers, all
    counters (VIPFARM_LCORE_COUNTERS, VIPFARM_HANDOFF_COUNTERS)."""
    fams = {}
    for header in ("include/vipfarm/dataplane/counters.hpp", "include/vipfarm/flow/handoff.hpp"):
        for m in re.finditer(r'"(vipfarm_[a-z0-9_]+)"', read(f"{ROOT}/{header}")):
            fams[m.group(1)] = "counter"
    text = read(f"{ROOT}/src/metrics/metrics.cpp")
    lits = list(re.finditer(r'"(vipfarm_[a-z0-9_]+)"', text))
    for i, m in enumerate(lits):
        end = lits[i + 1].start() if i + 1 < len(lits) else len(text)
        kind = re.search(r"MetricType::(\w+)", text[m.end():end])
        if re.search(r"\bhistogram\(\s*$", text[:m.start()]):  # histogram("vipfarm_...", ...)
            fams[m.group(1)] = "histogram"
        else:
            fams[m.group(1)] = kind.group(1).lower() if kind else "counter"
    return fams


def exported_series(fams):
    out = set()
    for name, kind in fams.items():
        if kind == "histogram":
            out |= {name + "_bucket", name + "_sum", name + "_count"}
        else:
            out.add(name)
    return out


def family_of(series, fams):
    for suffix in ("_bucket", "_sum", "_count"):
        base = series[: -len(suffix)]
        if series.endswith(suffix) and fams.get(base) == "histogram":
            return base
    return series


def source_names(path, enum):
    """The kNames of `to_string(ENUM ...)` in a source file."""
    m = re.search(r"to_string\(" + enum + r"\b[^)]*\)\s*noexcept\s*\{\s*static constexpr "
                  r"std::string_view kNames\[\]\s*=\s*\{([^}]*)\}", read(f"{ROOT}/{path}"))
    if not m:
        sys.exit(f"{path}: no to_string({enum}) name table")
    return [s for s in re.findall(r'"([^"]*)"', m.group(1)) if s]


def label_values():
    """(metric, label) -> the values vipfarmd exports."""
    verdicts = [v for v in source_names("src/packet/classify.cpp", "Verdict") if v != "farm"]
    return {
        ("vipfarm_node_state", "state"): set(source_names("src/membership/wire.cpp", "NodeState")),
        ("vipfarm_packets_total", "verdict"): set(verdicts),
        ("vipfarm_heartbeats_rejected_total", "reason"):
            set(source_names("src/membership/wire.cpp", "Reject")),
        ("vipfarm_malformed_total", "reason"):
            set(source_names("src/packet/classify.cpp", "Malformed")),
    }


def readme_families():
    """Backquoted vipfarm_ names of the README's metrics paragraph ("Metrics (" to the next
    blank line: the base list, the membership list and the flow-handoff list)."""
    text = read(f"{ROOT}/README.md")
    start = text.find("\nMetrics (")
    if start < 0:
        sys.exit("README.md: no paragraph starting with 'Metrics ('")
    end = text.find("\n\n", start + 1)
    return re.findall(r"`(vipfarm_[a-z0-9_]+)", text[start:end])


def strip_strings(expr):
    return re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)


def metric_names(expr):
    """Metric names of a PromQL expression (Grafana variables allowed)."""
    e = strip_strings(expr)
    e = re.sub(r"\{[^{}]*\}", " ", e)
    e = re.sub(r"\[[^\[\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", e)
    e = re.sub(r"\$\{?\w+\}?", " ", e)
    e = re.sub(r"(?<![\w.])\d+(\.\d+)?([eE][+-]?\d+)?(ms|s|m|h|d|w|y)?\b", " ", e)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        if e[m.end():].lstrip().startswith("(") or m.group(0).lower() in KEYWORDS:
            continue  # a function, an aggregation, an operator
        names.add(m.group(0))
    return names


def selectors(expr):
    """(metric, [(label, op, value)]) of each selector with a metric name and matchers."""
    out = []
    for m in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^{}]*)\}", expr):
        matchers = re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:\\.|[^"\\])*)"', m.group(2))
        out.append((m.group(1), matchers))
    return out


def rules():
    return [r for g in yaml.safe_load(read(f"{PROM}/vipfarm-alerts.yml"))["groups"]
            for r in g["rules"]]


def dashboard():
    return json.loads(read(DASHBOARD))


def dashboard_panels(d):
    for p in d.get("panels", []):
        yield p
        yield from p.get("panels", [])  # collapsed rows hold theirs


def dashboard_queries(d):
    """(where, PromQL) of every panel query, and of every variable's label_values()."""
    out = []
    for p in dashboard_panels(d):
        for t in p.get("targets", []):
            out.append((f"panel {p.get('id')} '{p.get('title')}' {t.get('refId')}", t.get("expr", "")))
    for v in d.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else q or ""
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", q)
        out.append((f"variable {v.get('name')}", m.group(1) if m else q))
    return out


def used_series():
    used = set()
    for r in rules():
        used |= metric_names(r["expr"])
    for _, q in dashboard_queries(dashboard()):
        used |= metric_names(q)
    return used


# --- checks: each prints its problems and exits 1 when there is one -------------------

def check_names(what):
    fams = source_families()
    allowed = exported_series(fams) | SYNTHETIC
    if what == "rules":
        exprs = [(f"alert {r.get('alert')}", r["expr"]) for r in rules()]
    else:
        exprs = dashboard_queries(dashboard())
    bad = []
    for where, expr in exprs:
        names = metric_names(expr)
        if not names:
            bad.append(f"{where}: no metric name found in {expr!r}")
        bad += [f"{where}: {n} is not exported by vipfarmd" for n in sorted(names - allowed)]
    return bad


def check_label_values():
    known = label_values()
    exprs = [(f"alert {r.get('alert')}", r["expr"]) for r in rules()]
    exprs += dashboard_queries(dashboard())
    bad = []
    for where, expr in exprs:
        for metric, matchers in selectors(expr):
            for label, op, value in matchers:
                values = known.get((family_of(metric, source_families()), label))
                if values is None or "$" in value:
                    continue
                alternatives = value.split("|") if op in ("=~", "!~") else [value]
                for alt in alternatives:
                    if not re.fullmatch(r"[\w]+", alt) or alt not in values:
                        bad.append(f"{where}: {metric}{{{label}{op}\"{value}\"}}: '{alt}' is not "
                                   f"one of {sorted(values)}")
    return bad


def check_rule_fields():
    bad = []
    for r in rules():
        name = r.get("alert")
        if not name:
            bad.append(f"a rule without 'alert': {r}")
            continue
        if not re.fullmatch(r"\d+[smhdw]", str(r.get("for", ""))):
            bad.append(f"{name}: no 'for:' duration")
        if r.get("labels", {}).get("severity") not in ("critical", "warning"):
            bad.append(f"{name}: severity must be critical or warning")
        ann = r.get("annotations", {})
        for key in ("summary", "description"):
            if not ann.get(key, "").strip():
                bad.append(f"{name}: no {key} annotation")
        if "$labels." not in ann.get("summary", ""):
            bad.append(f"{name}: the summary names no node or group ($labels.)")
        for metric, matchers in selectors(r["expr"]):
            if metric not in KEYWORDS and ("job", "=", "vipfarm") not in matchers:
                bad.append(f"{name}: selector {metric} is not scoped to job=\"vipfarm\"")
    required = {"VipfarmNodeDown", "VipfarmDaemonUnreachable", "VipfarmBucketsUnowned",
                "VipfarmBucketsOwnedTwice", "VipfarmFingerprintMismatch",
                "VipfarmHeartbeatsRejected", "VipfarmExceptionRingFull",
                "VipfarmExceptionTxDrops", "VipfarmFlowTableNearFull", "VipfarmLeaseLapsed",
                "VipfarmCheckerFailing"}
    bad += [f"required alert {n} is missing" for n in sorted(required - {r.get("alert") for r in rules()})]
    names = [r.get("alert") for r in rules()]
    bad += [f"alert {n} is defined twice" for n in sorted({n for n in names if names.count(n) > 1})]
    reasons = set(source_names("src/membership/wire.cpp", "Reject"))
    for r in rules():
        if "vipfarm_heartbeats_rejected_total" in r["expr"]:
            m = re.search(r'reason=~"([^"]*)"', r["expr"])
            got = set(m.group(1).split("|")) if m else set()
            if got != reasons:
                bad.append(f"{r['alert']}: reasons {sorted(got)} != wire.cpp's {sorted(reasons)}")
    return bad


def check_rule_tests():
    tests = yaml.safe_load(read(f"{PROM}/vipfarm-alerts.test.yml"))
    if tests.get("rule_files") != ["vipfarm-alerts.yml"]:
        return ["vipfarm-alerts.test.yml must test rule_files: [vipfarm-alerts.yml]"]
    fires, quiet = set(), set()
    for t in tests.get("tests", []):
        for a in t.get("alert_rule_test", []):
            (fires if a.get("exp_alerts") else quiet).add(a["alertname"])
    bad = []
    for name in [r["alert"] for r in rules()]:
        if name not in fires:
            bad.append(f"{name}: no unit test where it fires")
        if name not in quiet:
            bad.append(f"{name}: no unit test where it must not fire")
    return bad


def check_dashboard():
    d = dashboard()
    bad = []
    if not isinstance(d.get("schemaVersion"), int) or d["schemaVersion"] < 36:
        bad.append(f"schemaVersion {d.get('schemaVersion')} < 36")
    for key in ("title", "uid"):
        if not d.get(key):
            bad.append(f"no {key}")
    variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    ds = variables.get("datasource", {})
    if ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        bad.append("no 'datasource' variable of type datasource for prometheus")
    node = variables.get("node", {})
    if node.get("type") != "query" or "instance" not in json.dumps(node.get("query")):
        bad.append("no 'node' query variable over the instance label")
    ids, boxes = [], []
    for p in dashboard_panels(d):
        where = f"panel {p.get('id')} '{p.get('title')}'"
        ids.append(p.get("id"))
        g = p.get("gridPos", {})
        w, h, x, y = (g.get(k) for k in ("w", "h", "x", "y"))
        if not all(isinstance(v, int) for v in (w, h, x, y)) or w < 1 or h < 1 or x < 0 or y < 0 \
                or x + w > 24:
            bad.append(f"{where}: gridPos {g} outside the 24-column grid")
        else:
            for other, (ox, oy, ow, oh) in boxes:
                if x < ox + ow and ox < x + w and y < oy + oh and oy < y + h:
                    bad.append(f"{where} overlaps {other}")
            boxes.append((where, (x, y, w, h)))
        if p.get("type") == "row":
            continue
        if not p.get("title"):
            bad.append(f"{where}: no title")
        if p.get("datasource", {}).get("uid") != "${datasource}":
            bad.append(f"{where}: datasource is not ${{datasource}}")
        targets = p.get("targets", [])
        if not targets:
            bad.append(f"{where}: no query")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs):
            bad.append(f"{where}: duplicate refIds {refs}")
        for t in targets:
            if t.get("datasource", {}).get("uid") != "${datasource}":
                bad.append(f"{where} {t.get('refId')}: datasource is not ${{datasource}}")
            if not t.get("expr", "").strip():
                bad.append(f"{where} {t.get('refId')}: empty expr")
    if len(set(ids)) != len(ids):
        bad.append(f"panel ids not unique: {sorted(i for i in ids if ids.count(i) > 1)}")
    for where, q in dashboard_queries(d):
        for var in re.findall(r"\$\{?(\w+)", q):
            if var not in variables and var not in GRAFANA_BUILTINS:
                bad.append(f"{where}: ${var} is not a dashboard variable")
    fams = source_families()
    shown = {family_of(n, fams) for _, q in dashboard_queries(d) for n in metric_names(q)}
    bad += [f"metric {f} is on no panel" for f in sorted(set(fams) - shown)]
    return bad


def concrete_queries():
    """The dashboard's queries with Grafana's variables replaced: durations of 1 min (1 h
    for $__range), every other variable (inside label matchers) ".*", i.e. All."""
    durations = {"__rate_interval": "1m", "__interval": "1m", "__interval_ms": "60000",
                 "__range": "1h", "__range_s": "3600"}
    return [(where, re.sub(r"\$\{?(\w+)\}?", lambda m: durations.get(m.group(1), ".*"), q))
            for where, q in dashboard_queries(dashboard())]


def dashboard_rules():
    """The dashboard's queries as a rules file, for promtool."""
    rules_out = []
    for i, (where, expr) in enumerate(concrete_queries()):
        rules_out.append({"record": f"dashboard:query_{i}", "expr": expr,
                          "labels": {"where": where}})
    print(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules_out}]}))
    return []


def check_readme():
    readme = readme_families()
    fams = set(source_families())
    bad = [f"README lists {n}, which metrics.cpp does not export" for n in sorted(set(readme) - fams)]
    bad += [f"metrics.cpp exports {n}, missing from the README's Metrics list" for n in sorted(fams - set(readme))]
    bad += [f"README lists {n} twice" for n in sorted({n for n in readme if readme.count(n) > 1})]
    return bad


def check_scrape_config():
    conf = yaml.safe_load(read(f"{PROM}/prometheus.yml"))
    m = re.search(r"\|\s*`metrics\.listen`\s*\|[^|]*\|[^|]*\bport (\d+)", read(f"{ROOT}/README.md"))
    if not m:
        return ["README: no default for metrics.listen in the configuration reference"]
    port = m.group(1)
    bad = []
    if "vipfarm-alerts.yml" not in conf.get("rule_files", []):
        bad.append("rule_files does not load vipfarm-alerts.yml")
    jobs = [j for j in conf.get("scrape_configs", []) if j.get("job_name") == "vipfarm"]
    if len(jobs) != 1:
        return bad + ["no single scrape job named vipfarm"]
    job = jobs[0]
    if job.get("metrics_path", "/metrics") != "/metrics" or job.get("honor_labels"):
        bad.append("job vipfarm: metrics_path must be /metrics, honor_labels off")
    statics = job.get("static_configs", [])
    if not statics:
        bad.append("job vipfarm: no static_configs")
    for s in statics:
        labels = s.get("labels", {})
        if not labels.get("farm"):
            bad.append(f"static_config {s.get('targets')}: no farm label")
        bad += [f"static_config: target label {k} would hide vipfarm's own" for k in labels
                if k in ("node", "name", "group", "instance", "job")]
        for t in s.get("targets", []):
            if not t.endswith(":" + port):
                bad.append(f"target {t}: not the default metrics port {port} (README metrics.listen)")
    return bad


def main():
    cmd = sys.argv[2]
    if cmd == "used-metrics":
        print("\n".join(sorted(used_series())))
        return
    if cmd == "readme-metrics":
        print("\n".join(readme_families()))
        return
    if cmd == "dashboard-queries":
        print(json.dumps(concrete_queries(), indent=1))
        return
    if cmd == "source-metrics":
        for name, kind in sorted(source_families().items()):
            print(name + (" histogram" if kind == "histogram" else ""))
        return
    checks = {"rule-names": lambda: check_names("rules"),
              "dashboard-names": lambda: check_names("dashboard"),
              "label-values": check_label_values, "rule-fields": check_rule_fields,
              "rule-tests": check_rule_tests, "dashboard": check_dashboard,
              "dashboard-rules": dashboard_rules, "readme": check_readme,
              "scrape-config": check_scrape_config}
    if len(source_families()) < 10:
        sys.exit("src/metrics/metrics.cpp: fewer than 10 vipfarm_ families found; parser out of date?")
    bad = checks[cmd]()
    for line in bad:
        print("  " + line, file=sys.stderr)
    sys.exit(1 if bad else 0)


main()
PY

lib() { "$py" "$tmp/deploy_metrics.py" "$root" "$@"; }

case ${1:-} in
  --used-metrics | --readme-metrics | --source-metrics | --dashboard-queries)
    lib "${1#--}"
    exit
    ;;
  "") ;;
  *)
    echo "usage: $0 [--used-metrics | --readme-metrics | --source-metrics | --dashboard-queries]" >&2
    exit 2
    ;;
esac

CHECK_NAME=deploy-prometheus
# shellcheck source-path=SCRIPTDIR source=../lib/check.sh
source "$root/tests/lib/check.sh"

prom=$root/deploy/prometheus
quiet() { # quiet CMD...: run CMD, show its output only when it fails
  local out
  out=$("$@" 2>&1) && return 0
  printf '%s\n' "$out" >&2
  return 1
}

check "promtool is installed (Debian package prometheus)" quiet command -v promtool
check "python3-yaml is installed" quiet "$py" -c 'import yaml'
check "promtool check config prometheus.yml" quiet promtool check config "$prom/prometheus.yml"
check "promtool check rules vipfarm-alerts.yml" quiet promtool check rules "$prom/vipfarm-alerts.yml"
rule_tests() { (cd "$prom" && quiet promtool test rules vipfarm-alerts.test.yml); }
check "promtool test rules vipfarm-alerts.test.yml" rule_tests
check "alert expressions use only metrics vipfarmd exports" lib rule-names
check "dashboard queries use only metrics vipfarmd exports" lib dashboard-names
check "label values matched by rules and dashboard exist in the sources" lib label-values
check "every alert: for, severity, summary and description naming its node/group, job scope" lib rule-fields
check "every alert has a unit test where it fires and one where it does not" lib rule-tests
check "dashboard: schema, variables, panels, grid, every metric family shown" lib dashboard
dashboard_is_promql() {
  lib dashboard-rules >"$tmp/dashboard-rules.yml" && quiet promtool check rules "$tmp/dashboard-rules.yml"
}
check "every dashboard query is valid PromQL (promtool)" dashboard_is_promql
check "README's Metrics list = the families of src/metrics/metrics.cpp" lib readme
check "scrape config: job vipfarm, rules loaded, default metrics port, farm label" lib scrape-config

summary
((failed == 0))
