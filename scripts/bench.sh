#!/usr/bin/env bash
# Set up, build, and run the benchmark suite (medians of 3 repetitions) and the
# PyTorch eager comparison (bench/torch_layer.py, skipped unless Debian's
# python3-torch is installed; setup leaves it to you), then write the results as
# JSON, a Markdown table and a PNG chart into build/bench-results/ (with Debian's
# python3, which has the python3-matplotlib that setup installs).
# Extra arguments go to gqa-bench, e.g. --benchmark_filter=W1; a filter also picks
# the PyTorch benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh python3-matplotlib
scripts/build.sh
out=build/bench-results
mkdir -p "$out"
build/bench/gqa-bench --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
    --benchmark_out="$out/bench.json" --benchmark_out_format=json "$@"

# A torch.json left by an earlier run must not join this run's report.
rm -f "$out/torch.json"
filter=()
for arg in "$@"; do
    case "$arg" in --benchmark_filter=*) filter=(--filter "${arg#--benchmark_filter=}") ;; esac
done
torch_status=0
/usr/bin/python3 bench/torch_layer.py --repetitions 3 --out "$out/torch.json" "${filter[@]}" || torch_status=$?
extra=()
case "$torch_status" in
    0) extra=(--extra "$out/torch.json") ;;
    77) echo "bench: skipped the PyTorch comparison" >&2 ;;
    *) echo "bench: bench/torch_layer.py failed (exit $torch_status); the report leaves PyTorch out" >&2 ;;
esac
/usr/bin/python3 tools/bench_report.py "$out/bench.json" --table "$out/bench.md" --png "$out/bench.png" "${extra[@]}"
# A failed comparison fails the run, after the report of everything else.
[ "$torch_status" -eq 0 ] || [ "$torch_status" -eq 77 ]
