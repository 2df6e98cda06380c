// GPU schedules, one family for CUDA (PTX) and OpenCL (OpenCL C): Halide lowers
// the same gpu_blocks / gpu_threads / shared-memory schedule to either, so nothing
// here depends on the API. Sizes are chosen for NVIDIA GPUs (32-thread warps, the
// 48 KiB of shared memory a kernel gets without opting in) and stay within what any
// OpenCL 1.2 device must offer (256 work-items are not guaranteed, but pocl and
// every GPU this targets allow them). fp32 FMA: Halide 14 has no tensor-core path.
// Thread counts are constants: a dimension of run-time extent (head dims, the
// group's heads) is split with GuardWithIf and only its inner part becomes
// threads. Staged tiles sit at block level, in shared memory, and every thread
// loop is inside the block loops. CI runs them on pocl (OpenCL on the CPU) and
// assembles the PTX with ptxas; an H200 ran the CUDA build once (README).
#include "layout.h"
#include "../schedule.h"

namespace gqa::schedules::gpu {

using namespace Halide;

namespace {

constexpr int kWarp = 32;
// Split-K decode's second thread dimension: heads of the group (4 of Llama's 4 or 8).
constexpr int kDecodeHeadThreads = 4;

// Splits `v` so that its inner `threads` iterations become GPU threads.
template <typename StageOrFunc>
void thread_split(StageOrFunc &&s, const VarOrRVar &v, const VarOrRVar &outer, const VarOrRVar &inner, int threads) {
    s.split(v, outer, inner, threads, TailStrategy::GuardWithIf);
}

// Prefill GEMM: each block computes a 64-output x 64-token tile with 16 x 16
// threads, each thread a 4 x 4 register tile; per 16-wide step of the reduction,
// the block stages its slices of x and of the packed weights in shared memory
// once, and every thread reads them 4 times from there.
void schedule_gemm(algo::Linear &l, const Knobs &knobs) {
    const int tile = or_default(knobs.gemm_tile_outputs, 64), k_step = 16, per_thread = 4;
    require(tile % (per_thread * 4) == 0 && layout::kWeightPanel % tile == 0,
            "gpu gemm_tile_outputs must divide 64 and be a multiple of 16");
    Var o = l.o, m = l.m, ob("ob"), mb("mb"), oi("oi"), mi("mi"), ot("ot"), mt("mt"), oii("oii"), mii("mii");
    RVar k = l.k.x, ko("ko"), ki("ki");

    l.result.compute_root()
        .tile(o, m, ob, mb, oi, mi, tile, tile, TailStrategy::RoundUp)
        .tile(oi, mi, ot, mt, oii, mii, per_thread, per_thread)
        .reorder(oii, mii, ot, mt, ob, mb)
        .unroll(oii)
        .unroll(mii)
        .gpu_threads(ot, mt)
        .gpu_blocks(ob, mb);
    // Per block: the whole tile in registers, spread over the threads.
    l.product.compute_at(l.result, ob)
        .store_in(MemoryType::Register)
        .bound_extent(o, tile)
        .bound_extent(m, tile)
        .tile(o, m, ot, mt, oii, mii, per_thread, per_thread)
        .reorder(oii, mii, ot, mt)
        .unroll(oii)
        .unroll(mii)
        .gpu_threads(ot, mt);
    l.product.update()
        .split(k, ko, ki, k_step, TailStrategy::GuardWithIf)
        .tile(o, m, ot, mt, oii, mii, per_thread, per_thread)
        .reorder(oii, mii, ki, ot, mt, ko)
        .unroll(oii)
        .unroll(mii)
        .gpu_threads(ot, mt);
    Func x_tile = l.input.in(l.product), w_tile = l.weight.in(l.product);
    const std::vector<Var> xargs = x_tile.args(), wargs = w_tile.args();  // (k, m), (o, k)
    x_tile.compute_at(l.product, ko).store_in(MemoryType::GPUShared);
    thread_split(x_tile, xargs[1], Var("xmo"), Var("xmi"), 16);
    x_tile.gpu_threads(xargs[0], Var("xmi"));
    w_tile.compute_at(l.product, ko).store_in(MemoryType::GPUShared);
    thread_split(w_tile, wargs[0], Var("woo"), Var("woi"), 16);
    w_tile.reorder(Var("woi"), wargs[1], Var("woo")).gpu_threads(Var("woi"), wargs[1]);
}

// Decode GEMV: one block per 64 outputs; its 256 threads are 64 outputs x 4 slices
// of the reduction (rfactor), so consecutive threads read consecutive floats of a
// packed panel; the slices are summed through shared memory.
void schedule_gemv(algo::Linear &l) {
    Var o = l.o, m = l.m, ob("ob"), ot("ot"), u("u");
    RVar k = l.k.x, ko("ko"), ki("ki");
    l.result.compute_root().split(o, ob, ot, layout::kWeightPanel, TailStrategy::RoundUp).gpu_threads(ot).gpu_blocks(ob);
    l.product.compute_at(l.result, ob).gpu_threads(o);
    l.product.update().gpu_threads(o);
    Func slices = l.product.update().split(k, ko, ki, 4, TailStrategy::GuardWithIf).rfactor(ki, u);
    slices.compute_at(l.result, ob).gpu_threads(o, u);
    slices.update().reorder(ko, o, u).gpu_threads(o, u);
}

void schedule_linear(algo::Linear &l, const Knobs &knobs) {
    if (knobs.decode) {
        schedule_gemv(l);
    } else {
        schedule_gemm(l, knobs);
    }
}

// A light elementwise pass over (d, row...): head dims across a warp, one block
// per `row`, any other dimension serial inside the thread. (An update's RVars
// start innermost, hence the full order.) Returns the thread loop's Var.
Var rows_over_warps(Stage s, const Var &d, const VarOrRVar &row) {
    Var dout("dout"), dt("dt");
    thread_split(s, d, dout, dt, kWarp);
    s.reorder(dt, dout, row).gpu_threads(dt).gpu_blocks(row);
    return dt;
}

}  // namespace

// Prefill streams key blocks through shared memory; decode, with one query, splits
// the keys over GPU blocks.
Softmax preferred_softmax(const Knobs &knobs) {
    return knobs.decode ? Softmax::split : Softmax::online;
}

// A block's K tile and its scores share the 48 KiB of shared memory a kernel gets
// without opting in: 32 keys keep them under it up to head_dim 128.
int key_block(const Knobs &knobs) {
    return or_default(knobs.key_block, 32);
}

// Split-K decode: 8 blocks (256 keys) per split, one GPU block each.
int split_blocks(const Knobs &knobs) {
    return or_default(knobs.split_blocks, 8);
}

void schedule_project(algo::Project &p, const Target &, const Knobs &knobs) {
    schedule_linear(p.qkv, knobs);
    for (Func f : {p.q, p.k_new, p.v_new}) rows_over_warps(f, p.d, p.m);
    // One thread per group (a head, or all heads) of a token, summing serially.
    for (Func sum_squares : {p.q_sum_squares, p.k_sum_squares}) {
        sum_squares.compute_root();
        for (Stage s : {Stage(sum_squares), sum_squares.update()}) {
            Var mo("mo"), mi("mi");
            thread_split(s, p.m, mo, mi, kWarp);
            s.reorder(mi, p.g, mo).gpu_threads(mi).gpu_blocks(p.g, mo);
        }
    }
    p.q.specialize(p.qk_norm_mode == layout::kQkNormNone);
    p.k_new.specialize(p.qk_norm_mode == layout::kQkNormNone);
}

void schedule_store(algo::Store &s, const Target &, const Knobs &) {
    // A GPU block per token: the runtime gives each its own slot.
    for (Func f : {s.k, s.v}) f.update().allow_race_conditions();
    const Var k_thread = rows_over_warps(s.k.update(), s.d, s.new_tokens.x);
    const Var v_thread = rows_over_warps(s.v.update(), s.d, s.new_tokens.x);
    if (s.quantized) {
        // Each thread finds its token's scale itself, from the head_dim values its
        // warp reads anyway: no shared memory, no barrier.
        for (Func f : {s.k_scale, s.k_amax_bits}) f.compute_at(s.k, k_thread);
        for (Func f : {s.v_scale, s.v_amax_bits}) f.compute_at(s.v, v_thread);
    }
}

void schedule_output(algo::Linear &l, Func out, const Target &, const Knobs &knobs) {
    schedule_linear(l, knobs);
    Var ob("ob"), ot("ot");
    out.split(l.o, ob, ot, 128, TailStrategy::GuardWithIf).gpu_threads(ot).gpu_blocks(ob, l.m);
}

void schedule_rope(Func out, const Target &, const Knobs &) {
    const std::vector<Var> args = out.args();  // (d, head, token)
    rows_over_warps(out, args[0], args[2]);
}

namespace {

// The hooks' pipelines: each stage at root, a warp across the innermost dimension
// and 8 rows (tokens, or heads and tokens fused) per block.
void tile_rows(Stage s, const Var &inner, const Var &row) {
    Var io("io"), ii("ii"), ro("ro"), ri("ri");
    s.tile(inner, row, io, ro, ii, ri, kWarp, 8, TailStrategy::GuardWithIf).gpu_threads(ii, ri).gpu_blocks(io, ro);
}

}  // namespace

void schedule_project_heads(algo::ProjectHeads &p) {
    p.product.compute_root();
    for (Stage s : {Stage(p.product), p.product.update()}) tile_rows(s, p.o, p.m);
    for (Func sum_squares : {p.q_sum_squares, p.k_sum_squares}) {
        sum_squares.compute_root();
        for (Stage s : {Stage(sum_squares), sum_squares.update()}) tile_rows(s, p.m, p.g);
    }
    for (Func f : {p.q, p.k_out, p.v_out}) {
        const std::vector<Var> args = f.args();  // (d, head, token)
        Var rows("rows");
        f.fuse(args[1], args[2], rows);
        tile_rows(f, args[0], rows);
    }
}

void schedule_head_results(algo::HeadResults &r) {
    r.product.compute_root();
    for (Stage s : {Stage(r.product), r.product.update(), Stage(r.result)}) {
        Var rows("rows");
        s.fuse(r.h, r.m, rows);
        tile_rows(s, r.o, rows);
    }
}

void schedule_weigh_values(algo::WeighValues &w) {
    for (Stage s : {Stage(w.z), w.z.update()}) {
        Var rows("rows");
        s.fuse(w.r, w.kvh, rows).fuse(rows, w.i, rows).fuse(rows, w.b, rows);
        tile_rows(s, w.d, rows);
    }
}

// Three passes, for the pattern output (interpretability, not speed): each stage
// over the whole rows, at root, one thread per (key, query) or per row.
void schedule_attend(algo::Attend &a, const Target &, const Knobs &) {
    Var d = a.d, tk = a.t, r = a.r, kvh = a.kvh, i = a.i, b = a.b;
    Var to("to"), ti("ti"), io("io"), ii("ii"), rows("rows"), ro("ro"), rt("rt");
    for (Func f : {a.score, a.exp_score}) {
        f.compute_root()
            .tile(tk, i, to, io, ti, ii, kWarp, 8, TailStrategy::GuardWithIf)
            .fuse(r, kvh, rows)
            .fuse(rows, b, rows)
            .gpu_threads(ti, ii)
            .gpu_blocks(to, io, rows);
    }
    a.qk.compute_at(a.score, ti);
    for (Func f : {a.row_max, a.row_sum}) {
        f.compute_root();
        for (Stage s : {Stage(f), f.update()}) {
            s.fuse(r, kvh, rows).fuse(rows, i, rows).fuse(rows, b, rows);
            thread_split(s, rows, ro, rt, 64);
            s.gpu_threads(rt).gpu_blocks(ro);
        }
    }
    a.z.fuse(r, kvh, rows).fuse(rows, i, rows).fuse(rows, b, rows);
    rows_over_warps(a.z, d, rows);
    a.weighted.compute_at(a.z, Var("dt"));
    if (a.pattern.defined()) {
        for (Func recorded : {a.pattern, a.scores}) {
            const std::vector<Var> pargs = recorded.args();  // (t, i, r, kvh, b)
            recorded.tile(pargs[0], pargs[1], to, io, ti, ii, kWarp, 8, TailStrategy::GuardWithIf)
                .fuse(pargs[2], pargs[3], rows)
                .fuse(rows, pargs[4], rows)
                .gpu_threads(ti, ii)
                .gpu_blocks(to, io, rows);
        }
    }
}

// Blocked attention. One GPU block per (query block, kv head, batch) for prefill,
// per (split, kv head, batch) for split-K decode, with a serial loop over its key
// blocks (the online merge). The running states (max, sum, acc) live in global
// memory, each thread updating its own, so that only a key block's K tile and its
// scores take shared memory: (head_dim + 2 * group * queries) * key_block floats,
// under the 48 KiB Halide 14 can launch with (e.g. 20 KiB at head_dim 128, group
// 4, 8 queries, 32 keys). Per key block the GPU block stages K once for all g heads
// and all its queries, transposed so threads over keys read distinct banks;
// scores stay in shared memory; each thread then sums exp(score) * V for its own
// (head dim, head, query), V rows read coalesced across the warp from L1/L2.
// Threads: 32 head dims (or keys) x 8 queries (prefill), or x 4 heads of the group
// (decode, one query).
void schedule_attend(algo::AttendBlocked &a, const Target &, const Knobs &knobs) {
    Var d = a.d, tk = a.t, r = a.r, kvh = a.kvh, i = a.i, b = a.b, sp = a.sp;
    Var dout("dout"), dt("dt"), io("io"), ii("ii"), tout("tout"), tt("tt"), rout("rout"), rt("rt");
    const bool decode = knobs.decode;
    const int query_block = decode ? 1 : or_default(knobs.query_block, 8);
    // The thread dimension besides head dims (or keys): queries, or the group's heads.
    const Var lane = decode ? rt : ii;
    auto split_rows = [&](Stage s) {
        s.split(i, io, ii, query_block, TailStrategy::GuardWithIf);
        if (decode) s.split(r, rout, rt, kDecodeHeadThreads, TailStrategy::GuardWithIf);
    };

    a.state.compute_root();
    const Stage state_stages[] = {Stage(a.state), a.state.update()};
    for (Stage s : state_stages) {
        s.split(d, dout, dt, kWarp, TailStrategy::GuardWithIf);
        split_rows(s);
    }
    // Blocks: (query block, kv head, batch) with the splits (one) outside, or for
    // decode (split, kv head, batch) with the query (one) outside; serial inside a
    // thread: the rest of its head dims and heads.
    const std::vector<VarOrRVar> rows =
        decode ? std::vector<VarOrRVar>{dt, rt, dout, rout, ii} : std::vector<VarOrRVar>{dt, ii, dout, r};
    const std::vector<VarOrRVar> blocks =
        decode ? std::vector<VarOrRVar>{sp, kvh, b, io} : std::vector<VarOrRVar>{io, kvh, b, sp};
    auto loops = [](std::vector<VarOrRVar> inner, const std::vector<VarOrRVar> &outer) {
        inner.insert(inner.end(), outer.begin(), outer.end());
        return inner;
    };
    std::vector<VarOrRVar> update_loops = rows;
    update_loops.push_back(a.blocks.x);
    a.state.reorder(loops(rows, blocks)).gpu_threads(dt, lane).gpu_blocks(blocks[0], kvh, b);
    a.state.update().reorder(loops(update_loops, blocks)).gpu_threads(dt, lane).gpu_blocks(blocks[0], kvh, b);

    // The output from the final states (or the split states merged), per thread.
    Stage z(a.z);
    z.split(d, dout, dt, kWarp, TailStrategy::GuardWithIf);
    split_rows(z);
    z.reorder(loops(rows, {io, kvh, b})).gpu_threads(dt, lane).gpu_blocks(io, kvh, b);
    if (a.split_blocks > 0) {
        for (Func f : {a.merge.max, a.merge.sum, a.merge.acc}) f.compute_at(a.z, dt);
    }

    // Per key block, at block level inside the serial loop over blocks. Decode
    // stages K with as many thread rows as the state update has (the group's
    // heads), so that no block-level stage leaves thread rows idle.
    const LoopLevel step(a.state, a.blocks.x);
    Func k_tile = a.k_cache.in(a.qk);
    const std::vector<Var> kargs = k_tile.args();  // (d, t, kvh, b)
    Var kdo("kdo"), kdt("kdt"), kto("kto"), kti("kti");
    k_tile.compute_at(step)
        .store_in(MemoryType::GPUShared)
        .reorder_storage(kargs[1], kargs[0], kargs[2], kargs[3])
        .split(kargs[0], kdo, kdt, kWarp, TailStrategy::GuardWithIf)
        .split(kargs[1], kto, kti, decode ? kDecodeHeadThreads : query_block, TailStrategy::GuardWithIf)
        .reorder(kdt, kti, kdo, kto)
        .gpu_threads(kdt, kti);
    // Scores of the block: a thread per (key, query or head), the dot over d serial.
    std::vector<Func> block_scores{a.qk};
    if (!decode) block_scores.push_back(a.block_exp);
    for (Func f : block_scores) {
        f.compute_at(step).store_in(MemoryType::GPUShared);
        std::vector<Stage> stages{Stage(f)};
        if (f.has_update_definition()) stages.push_back(f.update());
        for (Stage s : stages) {
            s.split(tk, tout, tt, kWarp, TailStrategy::GuardWithIf);
            if (decode) s.split(r, rout, rt, kDecodeHeadThreads, TailStrategy::GuardWithIf);
            s.gpu_threads(tt, decode ? rt : i);
        }
    }
    if (decode) {
        // Each thread derives its row's max and sum of the block itself, from the
        // scores in shared memory (32 keys: cheap next to its P.V), and recomputes
        // exp(score - max) where it uses it. Row statistics as block-level stages of
        // their own ran on pocl with every work-item of the block instead of one per
        // row, multiplying the sums by the block's thread rows (issue 16).
        a.block_exp.compute_inline();
        for (Func f : {a.block_max, a.block_sum}) {
            f.compute_at(LoopLevel(a.state, dt)).store_in(MemoryType::Register);
            for (const Var &v : f.args()) f.bound_extent(v, 1);
        }
    } else {
        // Row statistics of the block: a thread per query.
        for (Func f : {a.block_max, a.block_sum}) {
            f.compute_at(step).store_in(MemoryType::GPUShared);
            for (Stage s : {Stage(f), f.update()}) s.gpu_threads(i);
        }
    }
    // Each thread's own block P.V: one value, in a register.
    a.block_acc.compute_at(LoopLevel(a.state, dt)).store_in(MemoryType::Register);
    for (const Var &v : a.block_acc.args()) a.block_acc.bound_extent(v, 1);
}

}  // namespace gqa::schedules::gpu
