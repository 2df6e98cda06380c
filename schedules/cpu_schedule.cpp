#include "cpu_schedule.h"

#include <string>

#include "layout.h"

namespace gqa::schedules::cpu {

using namespace Halide;

Softmax preferred_softmax(const Knobs &) {
    return Softmax::three_pass;
}

int key_block(const Knobs &knobs) {
    return or_default(knobs.key_block, 64);
}

int split_blocks(const Knobs &knobs) {
    return or_default(knobs.split_blocks, 8);
}

// The reduction runs innermost-outside the tile, so each packed weight vector and
// each x element is loaded once per tile. Tails round up: x reads are clamped and
// the panels zero-padded.
void schedule_packed_gemm(algo::Linear &l, const GemmTile &tile) {
    require(layout::kWeightPanel % tile.outputs == 0 && tile.outputs % tile.lanes == 0,
            "gemm_tile_outputs must be a multiple of the vector width (" + std::to_string(tile.lanes) +
                ") dividing " + std::to_string(layout::kWeightPanel));
    const int tokens = l.token_group;
    require(tokens >= 1, "gemm_tile_tokens must be positive");

    Var o = l.o, m = l.m, oo("oo"), oi("oi"), mo("mo"), mi("mi");
    // Aligned to the panel, o / panel and o % panel fold into contiguous loads;
    // aligned to the token group, so does m / group.
    l.result.compute_root()
        .align_bounds(o, layout::kWeightPanel)
        .align_bounds(m, tokens)
        .split(o, oo, oi, tile.outputs, TailStrategy::RoundUp)
        .split(m, mo, mi, tokens, TailStrategy::RoundUp)
        .reorder(oi, mi, mo, oo)
        .vectorize(oi, tile.lanes)
        .unroll(oi)
        .unroll(mi)
        .parallel(oo);
    if (tile.k_block > 0) {
        Var pmo("pmo"), pmi("pmi");
        RVar ko("ko"), ki("ki");
        l.product.compute_at(l.result, oo).vectorize(o, tile.lanes).unroll(o);
        l.product.update()
            .split(m, pmo, pmi, tokens, TailStrategy::RoundUp)
            .split(l.k.x, ko, ki, tile.k_block, TailStrategy::GuardWithIf)
            .reorder(o, pmi, ki, pmo, ko)
            .vectorize(o, tile.lanes)
            .unroll(o)
            .unroll(pmi);
    } else {
        l.product.compute_at(l.result, mo).vectorize(o, tile.lanes).unroll(o).unroll(m);
        l.product.update().reorder(o, m, l.k.x).vectorize(o, tile.lanes).unroll(o).unroll(m);
    }
    if (l.group_sums.defined()) {
        // Each group's sums in registers beside the tile's accumulators.
        require(tile.k_block == 0, "int8 group sums take no gemm_k_block");
        const std::vector<Var> args = l.group_sums.args();  // (o, group, m)
        l.group_sums.compute_at(l.product, l.k.x).vectorize(args[0], tile.lanes).unroll(args[0]);
        l.group_sums.update()
            .reorder(args[0], l.group_members.x)
            .vectorize(args[0], tile.lanes)
            .unroll(args[0]);
    }
    if (l.narrow_weights && tile.widen_once) {
        const std::vector<Var> args = l.panels.args();  // (lane, i, panel)
        l.panels.compute_at(l.result, oo).vectorize(args[0], tile.lanes);
    }
    if (tokens > 1) {
        // Regrouped once per call, not per weight panel; rows are read contiguously.
        const std::vector<Var> args = l.grouped_rows.args();  // (j, i, g)
        l.grouped_rows.compute_root()
            .reorder(args[0], args[1], args[2])
            .unroll(args[0])
            .vectorize(args[1], tile.lanes, TailStrategy::GuardWithIf)
            .parallel(args[2]);
    }
}

void schedule_project_epilogue(algo::Project &p, int lanes, bool decode) {
    for (Func f : {p.q, p.k_new, p.v_new}) {
        f.vectorize(p.d, lanes, TailStrategy::GuardWithIf);
        if (!decode) f.parallel(p.m);
    }
    // A token's q/k norms next to the rows that read them: a few thousand adds per
    // token, against the projection's millions. Layers without a norm run the code
    // they ran before norms existed.
    p.q_sum_squares.compute_at(p.q, p.m);
    p.k_sum_squares.compute_at(p.k_new, p.m);
    p.q.specialize(p.qk_norm_mode == layout::kQkNormNone);
    p.k_new.specialize(p.qk_norm_mode == layout::kQkNormNone);
}

void schedule_store(algo::Store &s, int lanes, bool decode) {
    const RVar token = s.new_tokens.x;
    for (Func f : {s.k, s.v}) {
        // An update's RVars start innermost; head dims go inside, in vectors. Tokens
        // may run in parallel: the runtime gives each its own slot.
        f.update().reorder(s.d, token).vectorize(s.d, lanes, TailStrategy::GuardWithIf);
        if (!decode) f.update().allow_race_conditions().parallel(token);
    }
    if (s.quantized) {
        // Each token's scales just before its slot is written.
        for (Func f : {s.k_scale, s.k_amax_bits}) f.compute_at(s.k, token);
        for (Func f : {s.v_scale, s.v_amax_bits}) f.compute_at(s.v, token);
    }
}

void schedule_output_copy(algo::Linear &l, Func out, int lanes, bool decode) {
    out.vectorize(l.o, lanes, TailStrategy::GuardWithIf);
    if (!decode) out.parallel(l.m);
}

namespace {

// The hooks' products in register tiles of 4 vectors of outputs (inside one weight
// panel) x kHookTileTokens tokens, the reduction outside the tile, as
// schedule_packed_gemm: each weight vector is loaded once per tile, not per token.
// Walking the outputs innermost instead read the whole weight matrix again for
// every token (W1, 512 tokens: the projection took 10 s, SPR AVX-512).
constexpr int kHookTileTokens = 4;

// `tiles` holds whole tiles (rounded up: the panels are padded and the products'
// token reads clamped), `product` one tile at a time; `across` are the tiles' other
// loops, outermost last, run in parallel.
void schedule_hook_tiles(Func tiles, Func product, const RVar &reduction, int lanes, const std::vector<Var> &across) {
    const int outputs = 4 * lanes;
    const std::vector<Var> args = tiles.args();  // (o, ..., m)
    const Var o = args.front(), m = args.back();
    Var oo("oo"), oi("oi"), mo("mo"), mi("mi"), task("task");
    tiles.compute_root()
        .align_bounds(o, layout::kWeightPanel)
        .align_bounds(m, kHookTileTokens)
        .split(o, oo, oi, outputs, TailStrategy::RoundUp)
        .split(m, mo, mi, kHookTileTokens, TailStrategy::RoundUp);
    std::vector<VarOrRVar> order{oi, mi, mo, oo};
    order.insert(order.end(), across.begin(), across.end());
    tiles.reorder(order).vectorize(oi, lanes).unroll(oi).unroll(mi);
    Var parallel_loop = oo;
    for (const Var &v : across) tiles.fuse(parallel_loop, v, task), parallel_loop = task;
    tiles.parallel(parallel_loop);
    const std::vector<Var> pargs = product.args();
    product.compute_at(tiles, mo).vectorize(pargs.front(), lanes).unroll(pargs.front()).unroll(pargs.back());
    product.update()
        .reorder(pargs.front(), pargs.back(), reduction)
        .vectorize(pargs.front(), lanes)
        .unroll(pargs.front())
        .unroll(pargs.back());
}

}  // namespace

void schedule_project_heads(algo::ProjectHeads &p, int lanes) {
    schedule_hook_tiles(p.qkv, p.product, p.k.x, lanes, {});
    // One x: a broadcast per token, rather than each lane finding its head's input
    // (W1, 512 tokens: 3.4 s with the per-lane search).
    p.product.update().specialize(p.split_inputs == 0);
    for (Func sum_squares : {p.q_sum_squares, p.k_sum_squares}) sum_squares.compute_root().parallel(p.m);
    for (Func f : {p.q, p.k_out, p.v_out}) f.vectorize(p.d, lanes, TailStrategy::GuardWithIf).parallel(p.m);
}

void schedule_head_results(algo::HeadResults &r, int lanes) {
    Func tiles = r.product.in(r.result);
    schedule_hook_tiles(tiles, r.product, r.dims.x, lanes, {tiles.args()[1]});
    r.result.vectorize(r.o, lanes, TailStrategy::GuardWithIf).parallel(r.m);
}

void schedule_weigh_values(algo::WeighValues &w, int lanes) {
    for (Stage s : {Stage(w.z), w.z.update()}) s.vectorize(w.d, lanes, TailStrategy::GuardWithIf).parallel(w.i);
    w.z.update().reorder(w.d, w.keys.x, w.r, w.kvh, w.i, w.b);
}

void schedule_rope(Func out, int lanes) {
    const std::vector<Var> args = out.args();  // (d, head, token)
    out.vectorize(args[0], lanes, TailStrategy::GuardWithIf).parallel(args[2]);
}

namespace {

// Per row, its parts' states merged with d innermost.
void schedule_part_merge(algo::PartMerge &m, Func z, Var d, Var r, int lanes) {
    m.max.compute_at(z, r);
    m.sum.compute_at(z, r);
    m.acc.compute_at(z, r).vectorize(d, lanes, TailStrategy::GuardWithIf);
    m.acc.update().reorder(d, m.parts.x).vectorize(d, lanes, TailStrategy::GuardWithIf);
}

// A staged copy of K or V rows (or their int8 scales), key slots in dimension
// `slot`, produced a granule of rows at a time from a granule's start: the rows of a
// granule then share one table entry in the simplified code, whose load LLVM hoists
// out of the granule's rows. Found per row, W1's int8 core decode at 8192 keys took
// 1.03-1.10 ms against 0.87-0.89 (SPR AVX-512; 0.87-0.88 before the table).
void stage_by_granule(Func staged, const Var &slot) {
    constexpr int G = layout::kCacheGranule;
    Var granule("granule"), row("row");
    staged.align_bounds(slot, G).split(slot, granule, row, G, TailStrategy::RoundUp);
}

}  // namespace

void schedule_three_pass_attend(algo::Attend &a, const AttendBlocking &blocking) {
    const int vec = blocking.lanes, key_chunk = blocking.key_chunk;
    const int query_block = blocking.decode ? 1 : blocking.query_block;
    require(layout::kKeySlotPadding % key_chunk == 0 && key_chunk % vec == 0,
            "key_chunk must be a multiple of the vector width (" + std::to_string(vec) + ") dividing " +
                std::to_string(layout::kKeySlotPadding));
    require(query_block >= 1, "query_block must be positive");

    Var d = a.d, tk = a.t, r = a.r, kvh = a.kvh, i = a.i, b = a.b, s = a.s;
    Var io("io"), ii("ii"), task("task"), to("to"), ti("ti");
    const bool with_pattern = a.pattern.defined();
    const bool segmented = a.segment_state.defined();

    // The tasks' output: z, or with segments each segment's state, which z then merges.
    Func rows = segmented ? a.segment_state : a.z;
    rows.split(i, io, ii, query_block, TailStrategy::GuardWithIf);
    if (segmented) {
        rows.reorder(d, r, ii, io, s, kvh, b).fuse(io, s, task).fuse(task, kvh, task);
    } else {
        rows.reorder(d, r, ii, io, kvh, b).fuse(io, kvh, task);
    }
    rows.fuse(task, b, task).parallel(task).vectorize(d, vec, TailStrategy::GuardWithIf);
    const LoopLevel block = with_pattern ? LoopLevel::root() : LoopLevel(rows, task);
    if (segmented) {
        rows.compute_root();
        a.z.vectorize(d, vec, TailStrategy::GuardWithIf);
        schedule_part_merge(a.merge, a.z, d, r, vec);
    }

    // Scores over whole key chunks (the cache is padded for it).
    a.score.compute_at(block)
        .align_bounds(tk, key_chunk)
        .split(tk, to, ti, key_chunk, TailStrategy::RoundUp)
        .reorder(ti, r, i, to)
        .vectorize(ti, vec)
        .unroll(ti);
    a.qk.compute_at(a.score, r);
    a.qk.vectorize(tk, vec).unroll(tk);
    // The stage that reads the chunk's K rows.
    Func k_reader;
    if (blocking.decode) {
        // One query row per head: a transposed chunk would serve only g rows, and
        // gathering it cost more than the products. Instead each group of `vec`
        // keys keeps one accumulator vector per key over the head dims (contiguous
        // K rows, in registers across the dims), and those vec x vec lane sums
        // reduce to one vector of scores by a shuffle tree (log2(vec) levels).
        RVar dot_o("dot_o"), dot_i("dot_i");
        Var lane("lane"), tko("tko"), tki("tki");
        Func lane_sums =
            a.qk.update().split(a.dot.x, dot_o, dot_i, vec, TailStrategy::GuardWithIf).rfactor(dot_i, lane);
        a.qk.update().split(tk, tko, tki, vec).reorder(dot_i, tki, tko).atomic().vectorize(dot_i).vectorize(tki);
        // Lanes innermost in memory: the tree reads the vec x vec sums as one vector.
        std::vector<Var> storage = lane_sums.args();
        storage.pop_back();
        storage.insert(storage.begin(), lane);
        lane_sums.compute_at(a.qk, tko).reorder_storage(storage).vectorize(lane).unroll(tk);
        lane_sums.update().reorder(lane, tk, dot_o).vectorize(lane).unroll(tk);
        k_reader = lane_sums;
    } else {
        a.qk.update().reorder(tk, a.dot.x).vectorize(tk, vec).unroll(tk);
        Func k_transposed = a.k_cache.in(a.qk);
        const std::vector<Var> kargs = k_transposed.args();  // (d, t, kvh, b)
        k_transposed.compute_at(a.score, to)
            .reorder_storage(kargs[1], kargs[0], kargs[2], kargs[3])
            .reorder(kargs[1], kargs[0])
            .vectorize(kargs[1], vec);
        k_reader = k_transposed;
    }
    // A prefill's K rows copied (a narrow cache's widened) once per chunk, each row
    // found through the granule table once, for the block's rows, which then read
    // floats from L1 at constant distances: the transpose neither finds nor widens
    // rows lane by lane (finding them so cost W1's core prefill at 512 keys 45 %,
    // SPR AVX-512), nor does P.V per key. Decode reads an f32 (or with F16C, fp16)
    // row in the FMA's operand, 16 keys sharing one table entry. On the stack: sized
    // by head_dim, a run-time value, Halide would allocate it on the heap per chunk.
    const bool stage_rows =
        !blocking.decode ||
        (a.cache_type != algo::CacheType::f32 &&
         !(blocking.decode_widens_half_in_operand && a.cache_type == algo::CacheType::f16));
    if (stage_rows) {
        Func k_rows = a.k_cache.in(k_reader);
        k_rows.compute_at(a.score, to)
            .store_in(MemoryType::Stack)
            .vectorize(k_rows.args()[0], vec, TailStrategy::GuardWithIf);
        stage_by_granule(k_rows, k_rows.args()[1]);
    }
    // An int8 slot's scale once per chunk, not once per element.
    if (a.k_scale.defined()) {
        a.k_scale.compute_at(a.score, to);
        stage_by_granule(a.k_scale, a.k_scale.args()[0]);
    }
    // Branches without the mask load and without tanh (a select evaluates both sides).
    a.score.specialize(a.softcap > 0.f);
    a.score.specialize(a.use_mask == 0);
    // Decode layers without sinks run the code they ran before sinks existed: an exp
    // per row, in the task's code, cost W1's decode core 10 % (0.247 -> 0.272 ms); a
    // prefill row's keys make it noise, so prefill spares the build that copy. The
    // fixed head dims first; not where the pattern is recorded, whose speed matters
    // less than the build time of another copy. Segments leave the sinks to the merge.
    const bool sinks_apart = blocking.decode && !segmented;
    if (!with_pattern) {
        for (int head_dim : blocking.fixed_head_dims) {
            Stage fixed = rows.specialize(a.head_dim == head_dim);
            if (sinks_apart) fixed.specialize(a.use_sinks == 0);
        }
    }
    if (sinks_apart) a.z.specialize(a.use_sinks == 0);

    a.row_max.compute_at(block);
    a.row_max.update().atomic().vectorize(a.keys_max.x, vec);
    a.exp_score.compute_at(block).align_bounds(tk, key_chunk).vectorize(tk, vec, TailStrategy::RoundUp);
    a.row_sum.compute_at(block);
    a.row_sum.update().atomic().vectorize(a.keys_sum.x, vec);

    // P.V for the task's block of queries a chunk of keys at a time, so the chunk's V
    // rows stay in L1 for all the block's rows (computed per query, each query re-read its
    // V rows from L2 or L3: W1's prefill core at 4096 on Zen 3, 684-716 -> 633-663 ms).
    // Each row's accumulators (value_vectors of head dims) stay in registers across
    // the chunk's keys; accumulating in memory (an FMA, a load and a store per vector
    // per key) cost W1's prefill core 19.7 ms against 14.7. With a fixed head dim,
    // value_heads heads share each V load, their accumulators at constant offsets
    // (with a run-time head dim LLVM kept them in memory).
    a.weighted.compute_at(rows, task).vectorize(d, vec, TailStrategy::GuardWithIf);
    {
        RVar ko("ko"), ki("ki");
        Var dv("dv"), dl("dl"), dvo("dvo"), dvi("dvi"), ro("ro"), ri("ri");
        Stage values = a.weighted.update();
        values.split(a.keys_values.x, ko, ki, key_chunk, TailStrategy::GuardWithIf);
        auto tile = [&](Stage stage, int heads) {
            stage.split(d, dv, dl, vec, TailStrategy::GuardWithIf)
                .split(dv, dvo, dvi, blocking.value_vectors / heads, TailStrategy::GuardWithIf)
                .split(r, ro, ri, heads, TailStrategy::GuardWithIf)
                .reorder(dl, dvi, ri, ki, dvo, ro, i, ko)
                .vectorize(dl)
                .unroll(dvi)
                .unroll(ri);
            // Without a mask no key needs a test of its own.
            stage.specialize(a.use_mask == 0);
        };
        if (blocking.value_heads > 1) {
            for (int head_dim : blocking.fixed_head_dims) tile(values.specialize(a.head_dim == head_dim), blocking.value_heads);
        }
        tile(values, 1);
        if (stage_rows) {
            // As the K rows.
            Func v_rows = a.v_cache.in(a.weighted);
            v_rows.compute_at(a.weighted, ko)
                .store_in(MemoryType::Stack)
                .vectorize(v_rows.args()[0], vec, TailStrategy::GuardWithIf);
            stage_by_granule(v_rows, v_rows.args()[1]);
        }
        if (a.v_scale.defined()) {
            a.v_scale.compute_at(a.weighted, ko);
            stage_by_granule(a.v_scale, a.v_scale.args()[0]);
        }
    }

    if (with_pattern) {
        for (Func f : {a.score, a.row_max, a.exp_score, a.row_sum}) f.parallel(i);
        for (Func recorded : {a.pattern, a.scores}) {
            const std::vector<Var> pargs = recorded.args();  // (t, i, r, kvh, b)
            recorded.vectorize(pargs[0], vec, TailStrategy::GuardWithIf).parallel(pargs[1]);
        }
    }
}

void schedule_merged_attend(algo::AttendBlocked &a, int lanes) {
    Var d = a.d, r = a.r, kvh = a.kvh, i = a.i, b = a.b, task("task");
    a.z.reorder(d, r, i, kvh, b).fuse(i, kvh, task).fuse(task, b, task).parallel(task);
    a.z.vectorize(d, lanes, TailStrategy::GuardWithIf);
    // Per row, its splits' states, each merged over its blocks with d innermost;
    // each block's statistics (scores inline) per merge step.
    a.state.compute_at(a.z, r).vectorize(d, lanes, TailStrategy::GuardWithIf);
    a.state.update().reorder(d, a.blocks.x).vectorize(d, lanes, TailStrategy::GuardWithIf);
    const LoopLevel step(a.state, a.blocks.x);
    a.block_max.compute_at(step);
    a.block_sum.compute_at(step);
    a.block_acc.compute_at(step).vectorize(d, lanes, TailStrategy::GuardWithIf);
    a.block_acc.update().reorder(d, a.block_keys.x).vectorize(d, lanes, TailStrategy::GuardWithIf);
    a.qk.compute_at(step);
    a.qk.update().atomic().vectorize(a.dot.x, lanes, TailStrategy::GuardWithIf);
    if (a.split_blocks > 0) {
        schedule_part_merge(a.merge, a.z, d, r, lanes);
    }
}

}  // namespace gqa::schedules::cpu
