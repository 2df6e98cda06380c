// x86-64 schedules (SSE4.1, AVX2+FMA, AVX-512). Each multitarget library runs
// these once per ISA, so sizes derive from the variant's vector width and
// register count. Defaults tuned on 2-core VMs (Zen 4; a Xeon with two AVX-512
// FMA units), Halide 14, 2026-11.
#include "../cpu_schedule.h"

#include <algorithm>

#include "layout.h"

namespace gqa::schedules::x86 {

using namespace Halide;

namespace {

int lanes(const Target &t) {
    return t.natural_vector_size<float>();
}

// GEMM register tile: with 32 registers (AVX-512) 4 vectors x 6 tokens = 24
// accumulators, with 16 registers 2 vectors x 6 tokens = 12; each k step then
// loads 4 (2) weight vectors and 6 x values for 24 (12) FMAs. 6 tokens rather than
// 4: prefill W1 72.2 -> 66.9 ms, W2 238 -> 212 ms (AVX-512 Xeon, one run). The
// token count is gemm_token_group, below. Decode has one token and streams each
// weight once: its tile spans a whole panel (at most 8 vectors), so a thread reads
// every cache line of a panel row in full and in order. With 2 AVX2 vectors, a
// row of bf16 weights gave each tile half of each line, the other half going to
// another tile, perhaps on the other core: W1 cold decode (2048) read 16-bit
// weights at 11 GB/s.
cpu::GemmTile gemm_tile(const Target &t, const Knobs &knobs) {
    const int vectors = t.has_feature(Target::AVX512) ? 4 : 2;
    const int outputs = knobs.decode ? std::min(layout::kWeightPanel, lanes(t) * 8) : lanes(t) * vectors;
    return {lanes(t), or_default(knobs.gemm_tile_outputs, outputs), knobs.decode ? 0 : knobs.gemm_k_block,
            !knobs.decode};
}

}  // namespace

int gemm_token_group(const Knobs &knobs) {
    return or_default(knobs.gemm_tile_tokens, knobs.decode ? 1 : 6);
}

void schedule_project(algo::Project &p, const Target &t, const Knobs &knobs) {
    cpu::schedule_packed_gemm(p.qkv, gemm_tile(t, knobs));
    cpu::schedule_project_epilogue(p, lanes(t), knobs.decode);
}

void schedule_output(algo::Linear &l, Func out, const Target &t, const Knobs &knobs) {
    cpu::schedule_packed_gemm(l, gemm_tile(t, knobs));
    cpu::schedule_output_copy(l, out, lanes(t), knobs.decode);
}

void schedule_rope(Func out, const Target &t, const Knobs &) {
    cpu::schedule_rope(out, lanes(t));
}

// Key chunks of 64 keys (on AVX-512 4 vectors: 4 score accumulators per row, the
// transposed chunk 16 KiB at head_dim 64, in L1) and 16-query blocks. With AVX2 a
// prefill's chunk is also 64 keys, 8 accumulators for two FMA pipes (32 keys: core
// prefill on Zen 3, W1 512 13.2-13.4 -> 11.6-12.1 ms, W2 25.1-26.2 -> 22.0-23.2 ms,
// W1 4096 788-848 -> 692-723 ms); decode keeps 32 (64 cost W2 decode at 2048 keys
// 0.47 -> 0.60-0.72 ms). P.V keeps 64 head dims per pass in registers: 4 zmm chains
// (Zen 4 issues one 512-bit FMA per cycle), 8 ymm with AVX2 (two FMA pipes of
// 4-cycle latency; 4 chains left them half idle: core prefill at 512 on Zen 3, W1
// 13.8 -> 12.8 ms, W2 26.6 -> 24.3 ms). Decode has code of its own for head dims 64
// and 128: with a variable row stride, the 8 K rows of a q.k step had 8 addresses,
// half of them kept in vector registers and moved out (vpextrq) before each FMA;
// with a constant one they are one base plus displacements (Zen 3, W1 core decode
// at 2048 keys: 0.231-0.241 -> 0.198-0.206 ms). Not for SSE4.1, the fallback for
// CPUs without AVX2, to spare the build a third copy. AVX2 prefill has them too,
// where P.V runs 4 heads x 2 vectors per V load (6 loads per 8 FMAs, against 9):
// core prefill on Zen 3, W1 512 10.6-11.6 -> 9.3-10.9 ms, W1 4096 633-663 -> 535-605
// ms. (AVX-512 prefill keeps one head per pass: untimed, no Zen 4 at hand.) With
// F16C, fp16 decode widens in the FMA's operand (vcvtph2ps from memory): W1 core
// decode at 8192 keys on Zen 3, 1.31-1.45 -> 0.98-1.09 ms; bf16 did not gain and
// int8 (a scale per slot) lost 20-50 %, so they keep the widened rows.
void schedule_attend(algo::Attend &a, const Target &t, const Knobs &knobs) {
    const bool avx2_prefill = lanes(t) == 8 && !knobs.decode;
    cpu::schedule_three_pass_attend(a, {.lanes = lanes(t),
                                        .key_chunk = or_default(knobs.key_chunk, avx2_prefill ? 64 : 4 * lanes(t)),
                                        .query_block = or_default(knobs.query_block, 16),
                                        .value_vectors = lanes(t) == 8 ? 8 : 4,
                                        .value_heads = avx2_prefill ? 4 : 1,
                                        .decode = knobs.decode,
                                        .decode_widens_half_in_operand = t.has_feature(Target::F16C),
                                        .fixed_head_dims = (knobs.decode && lanes(t) >= 8) || avx2_prefill
                                                               ? std::vector{64, 128}
                                                               : std::vector<int>{}});
}

}  // namespace gqa::schedules::x86
