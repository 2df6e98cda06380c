#!/usr/bin/env bash
# The one-shot CUDA check, for a machine with an NVIDIA GPU: the GoogleTest suite
# (every test on every runnable backend, CUDA included), the C API test, every
# conformance set on `--backend cuda` (with each cache type), the demo, gqa-bench
# on CUDA for the W1 and W2 shapes (prefill and decode: TFLOP/s, GB/s, and fractions
# of the GPU's fp32 peak and memory bandwidth read from its driver), and where NCCL
# was found, W2 split by heads with NCCL's all-reduce (gqa-tp-nccl, one rank).
# Everything goes into one Markdown report.
#
#   scripts/gpu-check.sh [--report FILE]
#       Sets up and builds what the check needs in build/ (Debian 12 with the
#       project's packages), then runs it. Report: build/gpu-check/report.md.
#   scripts/gpu-check.sh --bundle FILE.tar.gz
#       Builds here and packs the programs, the shared libraries they need beyond
#       the C/C++ runtime, the vectors and this script, for a GPU machine that cannot
#       build the project (no Halide there); nothing in it needs Halide or a CUDA toolkit.
#   scripts/gpu-check.sh --from-bundle FILE.tar.gz [--report FILE]
#       Runs the check from such a bundle.
#
# Each step has a time limit and a failing step does not stop the others; the exit
# status is 1 when any step failed, 77 when no CUDA device could be used.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
programs=(tests/gqa-tests tests/gqa-c-api-test tools/gqa-conformance tools/gqa-demo bench/gqa-bench)
# Built where NCCL is found: W2 split over the GPU's one rank with NCCL's all-reduce.
nccl_program=examples/tensor_parallel/gqa-tp-nccl
# Every conformance set; in conformance-hf the models that need what this version
# does not compute yet fail, each with the reason.
vector_sets=(conformance conformance-hf)
# Prefill and cold decode with fp32 weights and cache, and decode with the smallest
# types beside them; of the long contexts W1's prefill of 4096, its last chunk of 512,
# and cold decode at 32768; serving's mixed batch, paged and padded: every cuda mode
# took over 400 s on an H200 (about 13 s each).
bench_filter='^(layer|core|proj)/(prefill512(_bf16w)?|decode(2048|8192)(_cold|_bf16w_bf16_cold|_int8w_int8_cold)?)/cuda/W[12]/|^(layer|core)/(prefill4096|chunk512_at3584|decode32768(_cold)?)/cuda/W1/|^serving/decode_mixed8_(paged|padded)/cuda/W1/'

build() {
    set -e
    "$repo/scripts/setup.sh"
    cmake -S "$repo" -B "$repo/build" -G Ninja -DCMAKE_BUILD_TYPE=Release
    local targets=()
    for p in "${programs[@]}"; do targets+=("$(basename "$p")"); done
    cmake --build "$repo/build" --target "${targets[@]}"
    set +e
    cmake --build "$repo/build" --target "$(basename "$nccl_program")" > /dev/null 2>&1 ||
        echo "gpu-check: no NCCL here, so no gqa-tp-nccl"
    [ -x "$repo/build/$nccl_program" ] && programs+=("$nccl_program")
}

bundle() {
    local file=$1 staging
    build
    staging=$(mktemp -d)
    mkdir -p "$staging/gqa-gpu-check/bin" "$staging/gqa-gpu-check/lib"
    for p in "${programs[@]}"; do cp "$repo/build/$p" "$staging/gqa-gpu-check/bin/"; done
    # Every shared library the programs load except the C library itself, which the
    # GPU machine's own (newer) one replaces.
    for p in "${programs[@]}"; do ldd "$repo/build/$p"; done | awk '$3 ~ /^\// {print $3}' | sort -u |
        grep -v -E '/(libc|libm|ld-linux-x86-64)\.so' | while read -r lib; do
        cp -L "$lib" "$staging/gqa-gpu-check/lib/"
    done
    mkdir -p "$staging/gqa-gpu-check/vectors"
    for set in "${vector_sets[@]}"; do cp -r "$repo/tests/$set" "$staging/gqa-gpu-check/vectors/"; done
    cp "$repo/scripts/gpu-check.sh" "$staging/gqa-gpu-check/"
    git -C "$repo" rev-parse --short HEAD > "$staging/gqa-gpu-check/commit" 2>/dev/null || echo unknown > "$staging/gqa-gpu-check/commit"
    tar -C "$staging" -czf "$file" gqa-gpu-check
    rm -rf "$staging"
    echo "gpu-check: bundle $(du -h "$file" | cut -f1) in $file"
}

# run_step NAME SECONDS COMMAND...: runs it under a limit, output to the log, and
# records its status and time for the report.
failed=0
run_step() {
    local name=$1 limit=$2 start status
    shift 2
    start=$(date +%s%N)
    timeout --signal=KILL "$limit" "$@" > "$work/$name.log" 2>&1
    status=$?
    local tenths=$((($(date +%s%N) - start) / 100000000))
    printf '| %s | %s | %d.%d s |\n' "$name" "$(describe_status "$status" "$limit")" $((tenths / 10)) $((tenths % 10)) \
        >> "$work/steps.md"
    [ "$status" -eq 0 ] || failed=1
    return "$status"
}

describe_status() {
    case $1 in
        0) echo "passed" ;;
        137) echo "killed after $2 s, or crashed" ;;
        *) echo "failed (exit $1)" ;;
    esac
}

check() {
    local bin=$1 vectors=$2 commit=$3 report=$4
    work=$(dirname "$report")/gpu-check-logs
    rm -rf "$work" && mkdir -p "$work"
    : > "$work/steps.md"
    if ! nvidia-smi > /dev/null 2>&1; then echo "gpu-check: nvidia-smi finds no GPU" >&2; fi
    "$bin/gqa-conformance" --backend cuda "$vectors/conformance" > "$work/probe.log" 2>&1
    if [ "$?" -eq 77 ]; then
        cat "$work/probe.log" >&2
        echo "gpu-check: the CUDA backend cannot run here" >&2
        exit 77
    fi
    run_step suite 300 "$bin/gqa-tests" --gtest_output="xml:$work/suite.xml"
    run_step c_api 60 "$bin/gqa-c-api-test"
    for set in "$vectors"/*/; do
        run_step "conformance_$(basename "$set")" 120 "$bin/gqa-conformance" --backend cuda "$set"
        for cache in f16 bf16 int8; do
            run_step "conformance_$(basename "$set")_$cache" 120 "$bin/gqa-conformance" --backend cuda --cache "$cache" "$set"
        done
    done
    run_step demo 120 "$bin/gqa-demo"
    # One rank, started without mpirun (Open MPI's singleton); root needs the consent.
    if [ -x "$bin/gqa-tp-nccl" ]; then
        run_step tensor_parallel_nccl 120 env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
            "$bin/gqa-tp-nccl" --workload W2 --prefill 512 --decode 16 --repeat 3
    fi
    run_step bench 400 "$bin/gqa-bench" --benchmark_filter="$bench_filter" --benchmark_repetitions=3 \
        --benchmark_report_aggregates_only=true --benchmark_out="$work/bench.json" --benchmark_out_format=json
    write_report "$commit" "$report"
    echo "gpu-check: report in $report"
    cat "$report"
    return "$failed"
}

# A kernel that faults (a trap, a bad address) leaves the process's CUDA context
# unusable: every later CUDA call of that process fails, so one fault shows as a
# cascade of failures. Name the test where it started.
describe_first_failure() {
    local log=$1 first
    first=$(grep -m 1 -E '^\[  FAILED  \] ' "$log" | sed -E 's/^\[  FAILED  \] ([^ ,]+).*/\1/')
    [ -n "$first" ] || return 0
    echo "First failing test: \`$first\`."
    if grep -q -E 'CUDA_ERROR_(LAUNCH_FAILED|ILLEGAL_ADDRESS|ILLEGAL_INSTRUCTION|MISALIGNED_ADDRESS)' "$log"; then
        echo "A kernel faulted (the log holds CUDA_ERROR_LAUNCH_FAILED or a bad address): the CUDA failures"
        echo "after the first one in this process may only follow from it. Run that test alone"
        echo "(\`gqa-tests --gtest_filter=...\`) and every other CUDA test without it to tell."
    fi
    echo
}

write_report() {
    local commit=$1 report=$2
    {
        echo "# gqa-halide GPU check"
        echo
        echo "Commit \`$commit\`, $(date -u '+%Y-%m-%d %H:%M UTC'), host $(uname -n) ($(nproc) CPUs)."
        echo
        echo '```'
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.memory --format=csv 2>&1
        echo '```'
        echo
        echo "## Steps"
        echo
        echo "| step | result | wall |"
        echo "| --- | --- | --- |"
        cat "$work/steps.md"
        echo
        echo "## GoogleTest suite"
        echo
        describe_first_failure "$work/suite.log"
        echo '```'
        sed -n '/^\[==========\] .* ran\./,$p' "$work/suite.log" | head -80
        echo '```'
        echo
        echo "## Conformance on cuda"
        echo
        echo '```'
        for log in "$work"/conformance_*.log; do
            echo "$(basename "$log" .log): $(tail -n 1 "$log")"
            grep -E '^(FAIL|UNSUPPORTED)' "$log" | head -40
        done
        echo '```'
        echo
        echo "## gqa-bench on cuda (median of 3; cv = coefficient of variation)"
        echo
        if [ -s "$work/bench.json" ] || [ -s "$work/bench.log" ]; then
            python3 - "$work/bench.json" "$work/bench.log" <<'PY'
import json, re, sys

def from_json(path):
    data = json.load(open(path))
    ctx = data["context"]
    header = ""
    if "gpu_name" in ctx:
        header = (f"{ctx['gpu_name']}: fp32 peak {float(ctx['gpu_fp32_gflops'])/1e3:.1f} TFLOP/s, "
                  f"memory {float(ctx['gpu_dram_gbs']):.0f} GB/s (from the driver's attributes)")
    rows = {}
    for b in data["benchmarks"]:
        name, agg = b.get("run_name", b["name"]), b.get("aggregate_name", "")
        rows.setdefault(name, {})[agg] = b
    return header, rows

# A bench step cut short leaves its JSON unfinished; its console log has the same
# aggregates, with counters scaled by k/m/u.
def from_log(path):
    scale = {"k": 1e3, "m": 1e-3, "u": 1e-6}
    def number(text):
        return float(text[:-1]) * scale[text[-1]] if text[-1] in scale else float(text)
    header, rows = "", {}
    for line in open(path, errors="replace"):
        if line.startswith("gqa-bench: ") and "SMs" in line:
            header = line[len("gqa-bench: "):].strip() + " (the bench was cut short: rows from its log)"
        m = re.match(r"(\S+)/real_time_(median|cv)\s+([\d.]+) (?:ms|%)\s+\S+ \S+\s+\d+ ?(.*)", line)
        if not m:
            continue
        name, agg, value, counters = m.groups()
        entry = {k: number(v) for k, v in re.findall(r"(\S+?)=([\d.]+[kmu]?)(?:/s|%)?", counters)}
        if agg == "median":
            entry["real_time"] = float(value)
        else:
            entry = {"real_time": float(value) / 100}
        rows.setdefault(f"{name}/real_time", {})[agg] = entry
    return header, rows

try:
    header, rows = from_json(sys.argv[1])
except (OSError, ValueError):
    header, rows = from_log(sys.argv[2])
if header:
    print(header + "\n")
print("| benchmark | ms | cv | TFLOP/s | GB/s | of fp32 peak | of bandwidth |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for name, aggs in rows.items():
    med = aggs.get("median") or aggs.get("")
    if med is None:
        continue
    if med.get("error_occurred"):
        print(f"| {name} | error: {med.get('error_message', '')} | | | | | |")
        continue
    cv = aggs.get("cv", {}).get("real_time", 0.0)
    print(f"| {name} | {med['real_time']:.3f} | {cv * 100:.1f} % | {med.get('GFLOP/s', 0) / 1e3:.2f} | "
          f"{med.get('GB/s', 0):.0f} | {med.get('peak_frac', 0):.3f} | {med.get('bw_frac', 0):.3f} |")
PY
        else
            echo "No benchmark results; the log ends:"
            echo '```'
            tail -n 20 "$work/bench.log"
            echo '```'
        fi
        echo
        echo "## Demo"
        echo
        echo '```'
        tail -n 40 "$work/demo.log"
        echo '```'
        if [ -f "$work/tensor_parallel_nccl.log" ]; then
            echo
            echo "## Tensor parallel over NCCL (gqa-tp-nccl, W2, one rank)"
            echo
            echo '```'
            tail -n 20 "$work/tensor_parallel_nccl.log"
            echo '```'
        fi
    } > "$report"
}

report=""
mode=build
bundle_file=""
while (($#)); do
    case $1 in
        --report) report=$2; shift 2 ;;
        --bundle) mode=bundle; bundle_file=$2; shift 2 ;;
        --from-bundle) mode=from_bundle; bundle_file=$2; shift 2 ;;
        *) echo "usage: $0 [--report FILE] | --bundle FILE.tar.gz | --from-bundle FILE.tar.gz [--report FILE]" >&2; exit 2 ;;
    esac
done

case $mode in
    bundle) bundle "$bundle_file" ;;
    build)
        build
        report=${report:-$repo/build/gpu-check/report.md}
        mkdir -p "$(dirname "$report")"
        links=$(mktemp -d)
        mkdir -p "$links/bin" "$links/vectors"
        for p in "${programs[@]}"; do ln -s "$repo/build/$p" "$links/bin/"; done
        for set in "${vector_sets[@]}"; do ln -s "$repo/tests/$set" "$links/vectors/$set"; done
        check "$links/bin" "$links/vectors" "$(git -C "$repo" rev-parse --short HEAD)" "$report" ;;
    from_bundle)
        unpacked=$(mktemp -d)
        tar -C "$unpacked" -xzf "$bundle_file" || exit 2
        root=$unpacked/gqa-gpu-check
        export LD_LIBRARY_PATH=$root/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
        report=${report:-$PWD/gpu-check-report.md}
        mkdir -p "$(dirname "$report")"
        check "$root/bin" "$root/vectors" "$(cat "$root/commit")" "$report" ;;
esac
