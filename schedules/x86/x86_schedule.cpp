// x86-64 schedules (SSE4.1, AVX2+FMA, AVX-512). Each multitarget library runs
// these once per ISA, so sizes derive from the target's vector width and register
// count. Defaults tuned on a 2-core Zen 4 (AVX-512), Halide 14, 2026-11.
#include <string>

#include "../../generators/layout.h"
#include "../schedule.h"

namespace gqa::schedules::x86 {

using namespace Halide;

namespace {

int vector_width(const Target &t) {
    return t.natural_vector_size<float>();
}

int vector_registers(const Target &t) {
    return t.has_feature(Target::AVX512) ? 32 : 16;
}

int or_default(int knob, int fallback) {
    return knob > 0 ? knob : fallback;
}

// Register-blocked GEMM (cookbook §3.1): walk down the tokens of one weight panel
// with a tile of (tile_outputs x tile_tokens) accumulators; the reduction runs
// innermost-outside, so each packed weight row and each x element is loaded once
// per tile. Tails round up: x reads are clamped and the panels are zero-padded.
void schedule_linear(algo::Linear &l, const Target &t, const Knobs &knobs) {
    const int vec = vector_width(t);
    const int tile_outputs =
        or_default(knobs.gemm_tile_outputs, vec * (vector_registers(t) >= 32 ? 4 : 2));
    const int tile_tokens = or_default(knobs.gemm_tile_tokens, knobs.decode ? 1 : 4);
    require(layout::kWeightPanel % tile_outputs == 0 && tile_outputs % vec == 0,
            "gemm_tile_outputs must be a multiple of the vector width dividing " +
                std::to_string(layout::kWeightPanel));

    Var o = l.o, m = l.m, oo("oo"), oi("oi"), mo("mo"), mi("mi");
    // Aligned to the panel, o / panel and o % panel fold into dense loads.
    l.result.compute_root()
        .align_bounds(o, layout::kWeightPanel)
        .split(o, oo, oi, tile_outputs, TailStrategy::RoundUp)
        .split(m, mo, mi, tile_tokens, TailStrategy::RoundUp)
        .reorder(oi, mi, mo, oo)
        .vectorize(oi, vec)
        .unroll(oi)
        .unroll(mi)
        .parallel(oo);
    l.product.compute_at(l.result, mo).vectorize(o, vec).unroll(o).unroll(m);
    l.product.update().reorder(o, m, l.k.x).vectorize(o, vec).unroll(o).unroll(m);
}

}  // namespace

void schedule_project(algo::Project &p, const Target &t, const Knobs &knobs) {
    schedule_linear(p.qkv, t, knobs);
    const int vec = vector_width(t);
    // The epilogue (RoPE, scatter into q and the cache crops) is a cheap pass over
    // the GEMM result; a decode step has too little of it to pay a thread wake-up.
    p.q.vectorize(p.d, vec, TailStrategy::GuardWithIf);
    p.k.vectorize(p.d, vec, TailStrategy::GuardWithIf);
    p.v.vectorize(p.d, vec, TailStrategy::GuardWithIf);
    if (!knobs.decode) {
        p.q.parallel(p.m);
        p.k.parallel(p.t);
        p.v.parallel(p.t);
    }
}

void schedule_output(algo::Linear &l, Func out, const Target &t, const Knobs &knobs) {
    schedule_linear(l, t, knobs);
    Var o = l.o, m = l.m;
    out.vectorize(o, vector_width(t), TailStrategy::GuardWithIf);
    if (!knobs.decode) out.parallel(m);
}

void schedule_rope(Func out, const Target &t, const Knobs &) {
    const std::vector<Var> args = out.args();  // (d, head, token)
    out.vectorize(args[0], vector_width(t), TailStrategy::GuardWithIf).parallel(args[2]);
}

// Attention, three-pass per block of queries of one kv head:
//   for each (batch, kv head, query block)            -- parallel
//     scores of the block's g*block rows over the keys they can see, one key chunk
//     at a time, so a chunk of K (in L1) serves all g query heads of the group;
//     row max, exp, row sum (vectorized over keys);
//     per query: z rows of all g heads, each V row read once for the group.
// Prefill stages K^T per chunk and vectorizes q.k over keys; decode (one query,
// g rows) vectorizes each q.k over head dims instead, which needs no transpose.
// With the pattern output the softmax stages are shared by z and pattern, so they
// are computed at root.
void schedule_attend(algo::Attend &a, const Target &t, const Knobs &knobs) {
    const int vec = vector_width(t);
    const int key_chunk = or_default(knobs.key_chunk, vec * 4);
    const int query_block = knobs.decode ? 1 : or_default(knobs.query_block, 16);
    require(layout::kKeySlotPadding % key_chunk == 0 && key_chunk % vec == 0,
            "key_chunk must be a multiple of the vector width dividing " + std::to_string(layout::kKeySlotPadding));

    Var d = a.d, tk = a.t, r = a.r, kvh = a.kvh, i = a.i, b = a.b;
    Var io("io"), ii("ii"), task("task"), to("to"), ti("ti");
    const bool with_pattern = a.pattern.defined();

    Func z = a.z;
    z.split(i, io, ii, query_block, TailStrategy::GuardWithIf)
        .reorder(d, r, ii, io, kvh, b)
        .fuse(io, kvh, task)
        .fuse(task, b, task)
        .parallel(task)
        .vectorize(d, vec, TailStrategy::GuardWithIf);
    const LoopLevel block = with_pattern ? LoopLevel::root() : LoopLevel(z, task);

    // Scores over whole key chunks (the cache is padded for it).
    a.score.compute_at(block)
        .align_bounds(tk, key_chunk)
        .split(tk, to, ti, key_chunk, TailStrategy::RoundUp)
        .reorder(ti, r, i, to)
        .vectorize(ti, vec)
        .unroll(ti);
    a.qk.compute_at(a.score, r);
    if (knobs.decode) {
        a.qk.update().atomic().vectorize(a.dot.x, vec, TailStrategy::GuardWithIf);
    } else {
        a.qk.vectorize(tk, vec).unroll(tk);
        a.qk.update().reorder(tk, a.dot.x).vectorize(tk, vec).unroll(tk);
        Func k_transposed = a.k_cache.in(a.qk);
        const std::vector<Var> kargs = k_transposed.args();  // (d, t, kvh, b)
        k_transposed.compute_at(a.score, to)
            .reorder_storage(kargs[1], kargs[0], kargs[2], kargs[3])
            .reorder(kargs[1], kargs[0])
            .vectorize(kargs[1], vec);
    }
    // Branches without the mask load and without tanh (a select evaluates both sides).
    a.score.specialize(a.softcap > 0.f);
    a.score.specialize(a.use_mask == 0);

    a.row_max.compute_at(block);
    a.row_max.update().atomic().vectorize(a.keys_max.x, vec, TailStrategy::GuardWithIf);
    a.exp_score.compute_at(block).align_bounds(tk, key_chunk).vectorize(tk, vec, TailStrategy::RoundUp);
    a.row_sum.compute_at(block);
    a.row_sum.update().atomic().vectorize(a.keys_sum.x, vec, TailStrategy::GuardWithIf);

    // Per query, all g rows of the group together: each V row feeds g accumulators.
    a.weighted.compute_at(z, ii).vectorize(d, vec, TailStrategy::GuardWithIf);
    a.weighted.update().reorder(d, r, a.keys_values.x).vectorize(d, vec, TailStrategy::GuardWithIf);

    if (with_pattern) {
        for (Func f : {a.score, a.row_max, a.exp_score, a.row_sum}) f.parallel(i);
        const std::vector<Var> pargs = a.pattern.args();  // (t, i, r, kvh, b)
        a.pattern.vectorize(pargs[0], vec, TailStrategy::GuardWithIf).parallel(pargs[1]);
    }
}

}  // namespace gqa::schedules::x86
