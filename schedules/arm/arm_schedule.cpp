// aarch64 schedules: NEON, 128-bit vectors of 4 floats, 32 vector registers. Each
// multitarget library runs these once per variant (ARMv8.2 FP16 and plain
// ARMv8.0). Sizes are chosen for the register file and the FMA pipes of
// Cortex-A7x / Neoverse-class cores (fmla latency 4 cycles on two pipes: about 8
// independent accumulator chains keep them busy). There is no ARM machine here to
// time them: correctness is tested under qemu, and the inner loops are checked in
// the generated assembly (fmla on .4s vectors).
#include "../cpu_schedule.h"

namespace gqa::schedules::arm {

using namespace Halide;

namespace {

constexpr int kLanes = 4;

// Prefill: 16 outputs x 5 tokens = 20 accumulator registers, plus the 4 weight
// vectors of a k step and 5 x values used by lane (fmla by element): 29 of 32.
// In the generated code 16 x 6 spills a register every k step and 32 x 3 spills
// too; 16 x 5 keeps 20 fmla per 9 loads with no spill. Decode streams the weights
// for one token: 32 outputs give 8 independent chains.
cpu::GemmTile gemm_tile(const Knobs &knobs) {
    return {kLanes, or_default(knobs.gemm_tile_outputs, knobs.decode ? 32 : 16), knobs.decode ? 0 : knobs.gemm_k_block,
            !knobs.decode};
}

}  // namespace

int gemm_token_group(const Knobs &knobs) {
    return or_default(knobs.gemm_tile_tokens, knobs.decode ? 1 : 5);
}

void schedule_project(algo::Project &p, const Target &, const Knobs &knobs) {
    cpu::schedule_packed_gemm(p.qkv, gemm_tile(knobs));
    cpu::schedule_project_epilogue(p, kLanes, knobs.decode);
}

void schedule_output(algo::Linear &l, Func out, const Target &, const Knobs &knobs) {
    cpu::schedule_packed_gemm(l, gemm_tile(knobs));
    cpu::schedule_output_copy(l, out, kLanes, knobs.decode);
}

void schedule_rope(Func out, const Target &, const Knobs &) {
    cpu::schedule_rope(out, kLanes);
}

// Key chunks of 32: 8 score accumulators per row, enough chains for both FMA
// pipes (4 lanes x 4 vectors, as on AVX-512, would leave them half idle); the
// transposed chunk is 8 KiB at head_dim 64, well inside a 64 KiB L1. P.V keeps 4
// vectors per pass, half what its two pipes could use, as on x86 with AVX2: unmeasured
// on an ARM core (qemu times nothing), so unchanged.
void schedule_attend(algo::Attend &a, const Target &, const Knobs &knobs) {
    cpu::schedule_three_pass_attend(a, {.lanes = kLanes,
                                        .key_chunk = or_default(knobs.key_chunk, 8 * kLanes),
                                        .query_block = or_default(knobs.query_block, 16),
                                        .value_vectors = 4,
                                        .value_heads = 1,
                                        .decode = knobs.decode});
}

}  // namespace gqa::schedules::arm
