#!/usr/bin/env bash
# Fuzz smoke test (make fuzz-smoke): every libFuzzer target of the fuzz build for
# $FUZZ_SECONDS seconds each, on a scratch copy of its seed corpus; fails on any crash.
# With FUZZ_RUNS ("NAME=COUNT ... *=COUNT", make fuzz-long) each target runs a number of
# executions instead (-runs), and the total is printed at the end.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build="${FUZZ_BUILD:-build-fuzz}"
seconds="${FUZZ_SECONDS:-60}"
runs_spec="${FUZZ_RUNS:-}"
mode=fuzz-smoke
[[ -n $runs_spec ]] && mode=fuzz-long
runs_of() {  # runs_of NAME: its -runs count from FUZZ_RUNS (NAME=, else *=), empty if none
  local - item count=""
  set -f  # "*=" is no pattern
  for item in $runs_spec; do
    [[ $item == "*="* && -z $count ]] && count=${item#*=}
    [[ $item == "$1="* ]] && { echo "${item#*=}"; return; }
  done
  echo "$count"
}
# Crash inputs must outlive the scratch dir; the build dir is git-ignored.
artifacts="${FUZZ_ARTIFACTS:-$build/fuzz-artifacts}"

# UBSan only reports and carries on unless told otherwise: make undefined behaviour a
# crash so the smoke test fails on it. A caller's own setting wins.
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"

scratch="$(mktemp -d -t vipfarm-fuzz.XXXXXX)"
trap 'rm -rf "$scratch"' EXIT

shopt -s nullglob
targets=()
for exe in "$build"/tests/fuzz/fuzz_*; do
  [[ -f "$exe" && -x "$exe" ]] && targets+=("$exe")
done
if ((${#targets[@]} == 0)); then
  echo "$mode: no fuzz_* targets under $build/tests/fuzz (run make fuzz-build)" >&2
  exit 1
fi
mkdir -p "$artifacts"

passed=0
failed=0
total=0
# One target after the other: CI has two cores, and libFuzzer's rate is the figure we print.
for exe in "${targets[@]}"; do
  name="$(basename "$exe")"
  name="${name#fuzz_}"
  corpus="$scratch/corpus-$name"
  mkdir -p "$corpus"
  if [[ -d "$here/corpus/$name" ]]; then
    cp -R "$here/corpus/$name/." "$corpus/"
  fi

  args=(-print_final_stats=1 -rss_limit_mb=2048 -timeout=25 -artifact_prefix="$artifacts/$name-")
  count=$(runs_of "$name")
  if [[ -n $runs_spec ]]; then
    [[ $count =~ ^[0-9]+$ ]] || { echo "$mode: FUZZ_RUNS has no count for $name" >&2; exit 1; }
    args+=(-runs="$count")
  else
    args+=(-max_total_time="$seconds")
  fi
  case "$name" in
    config) args+=(-max_len=8192) ;;
    # A userconfig.xml, its cluster.xml and a node name: the fixtures run to 2.5 KiB each.
    safekit) args+=(-max_len=16384) ;;
    # One frame, VLAN tags and ND options included.
    reply) args+=(-max_len=512) ;;
    *) args+=(-max_len=4096) ;;
  esac
  if [[ -f "$here/$name.dict" ]]; then
    args+=(-dict="$here/$name.dict")
  fi

  log="$scratch/$name.log"
  start="$(date +%s.%N)"
  rc=0
  "$exe" "${args[@]}" "$corpus" >"$log" 2>&1 || rc=$?
  end="$(date +%s.%N)"

  runs="$(awk '/^stat::number_of_executed_units:/ {print $2}' "$log")"
  rate="$(awk '/^stat::average_exec_per_sec:/ {print $2}' "$log")"
  elapsed="$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.1f", b - a}')"

  if ((rc == 0)) && [[ -n "$runs" ]]; then
    echo "fuzz $name: $runs runs in $elapsed s = $rate execs/s, no crash"
    passed=$((passed + 1))
    total=$((total + runs))
  else
    echo "fuzz $name: FAILED (exit $rc after $elapsed s); last lines of its log:"
    tail -n 60 "$log" | sed 's/^/  /'
    for crash in "$artifacts/$name-"*; do
      echo "  input kept: $crash"
    done
    failed=$((failed + 1))
  fi
done

echo "$mode: $passed passed, $failed failed, $total executions in all"
((failed == 0))
