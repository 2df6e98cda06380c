#!/usr/bin/env bash
# The tuner end to end on a tiny budget: it must write a record, a rebuild must pass
# the record's knobs to the generators, and that build must pass the conformance
# vectors. The tree builds fp32 weights and caches only (GQA_WEIGHT_TYPES=f32,
# GQA_CACHE_TYPES=f32): a layer or a cache of another type must be a clear error
# there. It runs the built tree's generator executable rather than compiling its own.
# Usage: tune_smoke.sh <source dir> <scratch dir> <built tree>
set -euo pipefail
source_dir=$1
scratch=$2
built_tree=$3
record=$scratch/tuned.cmake
rm -f "$record"

"$source_dir/tools/gqa-tune" --target x86 --shape small --mode both --budget 600s --max-candidates 2 \
    --repetitions 2 --record "$record" --build-dir "$scratch/tree" --generators-from "$built_tree"
grep -q '^set(GQA_KNOB_ISA ' "$record" || { echo "tune_smoke: $record has no GQA_KNOB_ISA" >&2; exit 1; }
grep -q '^set(GQA_KNOBS_project_prefill ' "$record" || { echo "tune_smoke: $record has no project knobs" >&2; exit 1; }

# Rebuild the tuning tree from the written record, as the default build would.
cmake -S "$source_dir" -B "$scratch/tree" -DGQA_TUNED_RECORD="$record" > /dev/null
isa=$(sed -n 's/^set(GQA_KNOB_ISA \(.*\))$/\1/p' "$record")
grep -q "knob_isa=$isa" "$scratch/tree/build.ninja" ||
    { echo "tune_smoke: the rebuild does not pass knob_isa=$isa to the generators" >&2; exit 1; }
cmake --build "$scratch/tree" --target gqa-conformance
"$scratch/tree/tools/gqa-conformance" --backend x86 "$source_dir/tests/conformance"

# No bf16 pipelines in this tree: the layer must say so rather than run anything.
if refusal=$("$scratch/tree/tools/gqa-conformance" --backend x86 --weights bf16 "$source_dir/tests/conformance" 2>&1); then
    echo "tune_smoke: an f32-only build ran bf16 weights" >&2; exit 1
fi
grep -q 'GQA_WEIGHT_TYPES' <<< "$refusal" ||
    { echo "tune_smoke: the bf16 refusal does not name GQA_WEIGHT_TYPES:" >&2; echo "$refusal" | tail -5 >&2; exit 1; }

# Nor int8 cache pipelines: setting up such a cache must say so.
if refusal=$("$scratch/tree/tools/gqa-conformance" --backend x86 --cache int8 "$source_dir/tests/conformance" 2>&1); then
    echo "tune_smoke: an f32-only build ran an int8 cache" >&2; exit 1
fi
grep -q 'GQA_CACHE_TYPES' <<< "$refusal" ||
    { echo "tune_smoke: the int8 cache refusal does not name GQA_CACHE_TYPES:" >&2; echo "$refusal" | tail -5 >&2; exit 1; }
