// The loop structures the CPU targets (x86, arm) share. Each target's file picks
// the sizes for its vector width, register file and caches; these functions only
// lay the loops out. None of them changes what is computed.
#pragma once

#include <vector>

#include "schedule.h"

namespace gqa::schedules::cpu {

// The CPU family's defaults for the attention: a row's scores stay in L1, where
// three passes cost little; the merged formulations, when asked for, take blocks of
// 64 keys and 8 blocks per split.
Softmax preferred_softmax(const Knobs &knobs);
int key_block(const Knobs &knobs);
int split_blocks(const Knobs &knobs);

// A register-blocked GEMM over the packed weight panels: `outputs` x the Linear's
// token_group accumulators (the target chose that group through
// schedules::gemm_token_group when the algorithm was defined), `lanes` floats per vector.
struct GemmTile {
    int lanes, outputs;
    // Reduction steps per pass over the token tiles, 0 for all of them. With k
    // blocks a panel's accumulators live in memory and each block of its weights
    // stays in L1; on the AVX-512 Xeon, 128-512 measured within noise of 0.
    int k_block = 0;
    // 16-bit weights: widen the tile's slice of its panel once into fp32 scratch
    // that every token tile then reads (prefill), rather than at each load (decode,
    // where each weight is read once anyway).
    bool widen_once = false;
};
void schedule_packed_gemm(algo::Linear &l, const GemmTile &tile);

// The projection's epilogue (the norms and RoPE into q, k and v), the store of k
// and v into the cache, and the output projection's copy-out: light passes over a
// GEMM result. A decode step has too little of them to pay for waking a thread.
void schedule_project_epilogue(algo::Project &p, int lanes, bool decode);
void schedule_store(algo::Store &s, int lanes, bool decode);
void schedule_output_copy(algo::Linear &l, Halide::Func out, int lanes, bool decode);
void schedule_project_heads(algo::ProjectHeads &p, int lanes);
void schedule_head_results(algo::HeadResults &r, int lanes);
void schedule_weigh_values(algo::WeighValues &w, int lanes);
void schedule_rope(Halide::Func out, int lanes);

// Three-pass attention per (batch, kv head, block of queries), blocks in parallel:
//   scores of the block's g*query_block rows, one chunk of key_chunk keys at a
//   time, so that chunk of K serves all g heads of the group; row max, exp, row
//   sum; then z, a chunk of V rows at a time, loaded once and kept in L1 for the
//   block's g*query_block rows, each row's accumulators in registers.
// Prefill stages each K chunk transposed once for the g * query_block rows and
// vectorizes q.k over keys, so no score needs a horizontal sum. Decode, with g
// rows, sums over head dims along contiguous K rows and reduces each group of
// keys' lane sums together by a shuffle tree: W1 core decode at 8192 keys
// (Zen 4) 3.07 -> 1.93 ms with an f32 cache, 1.81 -> 1.41 ms with bf16. (One
// horizontal sum per key had cost more than the transpose.)
// With the pattern output the softmax stages serve two consumers and run at root.
struct AttendBlocking {
    int lanes, key_chunk, query_block;
    int value_vectors;  // P.V accumulator vectors per pass over a chunk's keys
    int value_heads;    // heads sharing those accumulators (and each V load) where the head dim is fixed
    bool decode;
    // Decode with an fp16 cache widens K and V in the FMA's operand, not through a
    // scratch of widened rows (for a target that widens fp16 in one instruction).
    bool decode_widens_half_in_operand = false;
    // Head dims with code of their own, where every cache row offset is a constant.
    std::vector<int> fixed_head_dims = {};
};
void schedule_three_pass_attend(algo::Attend &a, const AttendBlocking &blocking);

// The merged formulations (online or split-K, which CPUs do not prefer but may be
// asked to run): parallel over (batch, kv head, query), each block's statistics
// computed per merge step, vectorized over head dims.
void schedule_merged_attend(algo::AttendBlocked &a, int lanes);

}  // namespace gqa::schedules::cpu
