#!/usr/bin/env bash
# Runs every benchmark with repetitions and prints the medians (these machines are shared
# and noisy: one run is not a figure). Usage: bench/run.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
reps=${BENCH_REPETITIONS:-7}
for bench in bench_classify bench_assignment bench_flow; do
  echo "== $bench (median of $reps runs)"
  "$build/bench/$bench" --benchmark_repetitions="$reps" --benchmark_min_time=0.2 \
    --benchmark_report_aggregates_only=true --benchmark_format=console 2>/dev/null |
    grep -E '^(Benchmark|-|.*_median)'
done
