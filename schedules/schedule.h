// How each pipeline runs on a target. Schedules see only the algorithm's structs;
// they never change what is computed. One definition per target family lives in
// schedules/<target>/; the functions here dispatch on the Target.
#pragma once

#include "../generators/attention_algorithm.h"

namespace gqa::schedules {

// Tunable choices, filled from the generators' GeneratorParams. Zero means
// "the target's default".
struct Knobs {
    bool decode = false;      // single-token instance: GEMV projections, no query blocks
    int gemm_tile_tokens = 0;  // rows of x per register tile
    int gemm_tile_outputs = 0; // output features per register tile (divides layout::kWeightPanel)
    int gemm_k_block = 0;      // reduction steps per pass over the token tiles (CPU prefill)
    int query_block = 0;      // queries sharing one pass over a key block (prefill)
    int key_chunk = 0;        // keys per transposed-K chunk; divides layout::kKeySlotPadding
    int key_block = 0;        // keys per block of the blocked attention formulations
    int split_blocks = 0;     // blocks per split of split-K attention
};

// Which formulation of the attention a target runs best (algo::define_attend or
// define_attend_blocked with one of its merges). All compute the same function.
enum class Softmax { three_pass, online, split };
Softmax preferred_softmax(const Halide::Target &target, const Knobs &knobs);
int key_block(const Halide::Target &target, const Knobs &knobs);
int split_blocks(const Halide::Target &target, const Knobs &knobs);
// Tokens per group of x rows in the GEMMs (algo::Linear's token_group): the
// register tile's token count on CPUs at prefill, 1 (x read in place) otherwise.
int gemm_token_group(const Halide::Target &target, const Knobs &knobs);
// Whether Halide's fp16 -> fp32 cast is a conversion instruction on the target.
bool native_half_widening(const Halide::Target &target);

void schedule_project(algo::Project &p, const Halide::Target &target, const Knobs &knobs);
void schedule_attend(algo::Attend &a, const Halide::Target &target, const Knobs &knobs);
void schedule_attend(algo::AttendBlocked &a, const Halide::Target &target, const Knobs &knobs);
void schedule_output(algo::Linear &l, Halide::Func out, const Halide::Target &target, const Knobs &knobs);
void schedule_rope(Halide::Func out, const Halide::Target &target, const Knobs &knobs);

// A knob's value, or the target's default where it is 0.
inline int or_default(int knob, int fallback) {
    return knob > 0 ? knob : fallback;
}

// Rejects a knob or target the schedules cannot honour, at generation time.
inline void require(bool ok, const std::string &message) {
    if (!ok) throw Halide::CompileError("gqa schedule: " + message);
}

namespace cuda {
void schedule_project(algo::Project &p, const Halide::Target &target, const Knobs &knobs);
void schedule_attend(algo::Attend &a, const Halide::Target &target, const Knobs &knobs);
void schedule_attend(algo::AttendBlocked &a, const Halide::Target &target, const Knobs &knobs);
void schedule_output(algo::Linear &l, Halide::Func out, const Halide::Target &target, const Knobs &knobs);
void schedule_rope(Halide::Func out, const Halide::Target &target, const Knobs &knobs);
}  // namespace cuda

namespace arm {
int gemm_token_group(const Knobs &knobs);
void schedule_project(algo::Project &p, const Halide::Target &target, const Knobs &knobs);
void schedule_attend(algo::Attend &a, const Halide::Target &target, const Knobs &knobs);
void schedule_output(algo::Linear &l, Halide::Func out, const Halide::Target &target, const Knobs &knobs);
void schedule_rope(Halide::Func out, const Halide::Target &target, const Knobs &knobs);
}  // namespace arm

namespace x86 {
int gemm_token_group(const Knobs &knobs);
void schedule_project(algo::Project &p, const Halide::Target &target, const Knobs &knobs);
void schedule_attend(algo::Attend &a, const Halide::Target &target, const Knobs &knobs);
void schedule_output(algo::Linear &l, Halide::Func out, const Halide::Target &target, const Knobs &knobs);
void schedule_rope(Halide::Func out, const Halide::Target &target, const Knobs &knobs);
}  // namespace x86

}  // namespace gqa::schedules
