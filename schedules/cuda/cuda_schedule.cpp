// CUDA schedules (PTX from Halide 14, fp32 FMA: Halide 14 has no tensor-core path).
// Thread counts are constants: a dimension of run-time extent (head dims, the
// group's heads) is split with GuardWithIf and only its inner part becomes
// threads. Staged tiles sit at block level, in shared memory, and every thread
// loop is inside the block loops. Written without a GPU to run them on: the
// generated PTX is checked with ptxas; results and timings are owed to a GPU run.
#include "../../generators/layout.h"
#include "../schedule.h"

namespace gqa::schedules::cuda {

using namespace Halide;

namespace {

constexpr int kWarp = 32;

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
            "cuda gemm_tile_outputs must divide 64 and be a multiple of 16");
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
// per `row`, any other dimension serial inside the thread.
void rows_over_warps(Func f, const Var &d, const Var &row) {
    Var dout("dout"), dt("dt");
    thread_split(f, d, dout, dt, kWarp);
    f.reorder(dout, dt).gpu_threads(dt).gpu_blocks(row);
}

}  // namespace

void schedule_project(algo::Project &p, const Target &, const Knobs &knobs) {
    schedule_linear(p.qkv, knobs);
    rows_over_warps(p.q, p.d, p.m);
    rows_over_warps(p.k, p.d, p.t);
    rows_over_warps(p.v, p.d, p.t);
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
        const std::vector<Var> pargs = a.pattern.args();  // (t, i, r, kvh, b)
        a.pattern.tile(pargs[0], pargs[1], to, io, ti, ii, kWarp, 8, TailStrategy::GuardWithIf)
            .fuse(pargs[2], pargs[3], rows)
            .fuse(rows, pargs[4], rows)
            .gpu_threads(ti, ii)
            .gpu_blocks(to, io, rows);
    }
}

// Blocked attention. One GPU block per (query block, kv head, batch) for prefill,
// per (split, kv head, batch) for split-K decode. Inside, a serial loop over key
// blocks (the online merge); per key block the GPU block stages K and V in shared
// memory once, for all g heads and all its queries, and the scores of the block
// live only in shared memory. Threads: 32 head dims (or keys) x 8 queries
// (prefill) or x 4 heads of the group (decode, one query).
void schedule_attend(algo::AttendBlocked &a, const Target &, const Knobs &knobs) {
    Var d = a.d, tk = a.t, r = a.r, kvh = a.kvh, i = a.i, b = a.b, sp = a.sp;
    Var dout("dout"), dt("dt"), io("io"), ii("ii"), tout("tout"), tt("tt"), rout("rout"), rt("rt");
    const bool decode = knobs.decode;
    // 8 queries x 32 dims = 256 threads: the merge kernel needs ~140 registers a thread,
    // and 512 threads would ask for more than an SM's 64K.
    const int query_block = or_default(knobs.query_block, 8);
    // The second thread dimension: queries of the block (prefill) or heads (decode).
    const Var lane = decode ? rt : ii;
    auto split_lanes = [&](auto &&s) {
        if (decode) {
            thread_split(s, r, rout, rt, 4);
        }
    };

    const bool split_k = a.split_blocks > 0;
    if (split_k) {
        // The splits' states at root, one block each, then a small merge kernel.
        a.state.compute_root();
        for (Stage s : {Stage(a.state), a.state.update()}) {
            thread_split(s, d, dout, dt, kWarp);
            split_lanes(s);
        }
        a.state.reorder(dout, rout, dt, rt, i, sp, kvh, b).gpu_threads(dt, rt).gpu_blocks(sp, kvh, b);
        a.state.update().reorder(dout, rout, dt, rt, a.blocks.x, i, sp, kvh, b).gpu_threads(dt, rt).gpu_blocks(sp, kvh, b);
        thread_split(a.z, d, dout, dt, kWarp);
        split_lanes(a.z);
        a.z.reorder(dout, rout, dt, rt, i, kvh, b).gpu_threads(dt, rt).gpu_blocks(i, kvh, b);
        for (Func f : {a.merged_max, a.merged_sum, a.merged_acc}) f.compute_at(a.z, rt);
    } else {
        a.z.split(i, io, ii, query_block, TailStrategy::GuardWithIf);
        thread_split(a.z, d, dout, dt, kWarp);
        a.z.reorder(dout, r, dt, ii, io, kvh, b).gpu_threads(dt, ii).gpu_blocks(io, kvh, b);
        a.state.compute_at(a.z, io);
        for (Stage s : {Stage(a.state), a.state.update()}) thread_split(s, d, dout, dt, kWarp);
        a.state.reorder(dout, r, sp, dt, i).gpu_threads(dt, i);
        a.state.update().reorder(dout, r, sp, dt, i, a.blocks.x).gpu_threads(dt, i);
    }

    // Per key block, at block level inside the serial loop over blocks.
    const LoopLevel step(a.state, a.blocks.x);
    const Var queries = decode ? rt : i;  // the thread dimension besides dims or keys
    Func k_tile = a.k_cache.in(a.qk), v_tile = a.v_cache.in(a.block_acc);
    for (Func tile : {k_tile, v_tile}) {
        const std::vector<Var> args = tile.args();  // (d, t, kvh, b)
        Var tiled_dout("tiled_dout"), tiled_dt("tiled_dt"), tiled_to("tiled_to"), tiled_ti("tiled_ti");
        tile.compute_at(step).store_in(MemoryType::GPUShared);
        thread_split(tile, args[0], tiled_dout, tiled_dt, kWarp);
        thread_split(tile, args[1], tiled_to, tiled_ti, 16);
        tile.reorder(tiled_dout, tiled_to, tiled_dt, tiled_ti).gpu_threads(tiled_dt, tiled_ti);
    }
    // Scores of the block: one thread per (key, query or head), the dot over d serial.
    for (Func f : {a.qk, a.block_exp}) {
        f.compute_at(step);
        for (Stage s : f.defined() && f.has_update_definition() ? std::vector<Stage>{Stage(f), f.update()}
                                                               : std::vector<Stage>{Stage(f)}) {
            thread_split(s, tk, tout, tt, kWarp);
            split_lanes(s);
            s.gpu_threads(tt, queries);
        }
    }
    a.block_exp.store_in(MemoryType::GPUShared);
    // Row statistics of the block: one thread per row, over the block's keys.
    for (Func f : {a.block_max, a.block_sum}) {
        f.compute_at(step);
        for (Stage s : {Stage(f), f.update()}) {
            split_lanes(s);
            s.gpu_threads(queries);
        }
    }
    // The block's P.V: threads over head dims and queries (heads), keys serial.
    a.block_acc.compute_at(step);
    for (Stage s : {Stage(a.block_acc), a.block_acc.update()}) {
        thread_split(s, d, dout, dt, kWarp);
        split_lanes(s);
        s.gpu_threads(dt, queries);
    }
}

}  // namespace gqa::schedules::cuda
