#!/usr/bin/env bash
# Set up, build, and run the benchmark suite (medians of 3 repetitions), then write
# the results as JSON, a Markdown table and a PNG chart into build/bench-results/
# (with Debian's python3, which has the python3-matplotlib that setup installs).
# Extra arguments go to gqa-bench, e.g. --benchmark_filter=W1.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh python3-matplotlib
scripts/build.sh
out=build/bench-results
mkdir -p "$out"
build/bench/gqa-bench --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
    --benchmark_out="$out/bench.json" --benchmark_out_format=json "$@"
/usr/bin/python3 tools/bench_report.py "$out/bench.json" --table "$out/bench.md" --png "$out/bench.png"
