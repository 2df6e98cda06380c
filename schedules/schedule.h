// How each pipeline runs on a target. Schedules see only the algorithm's structs;
// they never change what is computed. One definition per target family lives in
// schedules/<target>/; the functions here dispatch on the Target.
#pragma once

#include <iterator>

#include "../generators/attention_algorithm.h"
#include "gqa_knobs.h"

namespace gqa::schedules {

// The attention's formulation: algo::define_attend (three passes over each row),
// or define_attend_blocked merged online or split-K. All compute the same
// function; automatic lets the target choose.
enum class Softmax { automatic, three_pass, online, split };
// The softmax knob's names in schedules/knobs.json, in the enum's order.
inline constexpr const char *kSoftmaxNames[] = {GQA_SOFTMAX_NAMES};
static_assert(std::size(kSoftmaxNames) == 4, "schedules/knobs.json: the softmax choices must match schedules::Softmax");

// Tunable choices (schedules/knobs.json says what each sets), filled from the
// generators' GeneratorParams. 0 and Softmax::automatic mean the target's default.
struct Knobs {
    bool decode = false;  // single-token instance: GEMV projections, no query blocks
#define GQA_KNOB_FIELD(name) int name = 0;
    GQA_INT_KNOBS(GQA_KNOB_FIELD)
#undef GQA_KNOB_FIELD
    Softmax softmax = Softmax::automatic;
};

// The formulation the attend pipeline builds: the knob's, or the target's
// preference; three passes whenever the attention pattern is an output (it exists
// only there).
Softmax attend_formulation(const Halide::Target &target, const Knobs &knobs, bool with_pattern);
// Keys per block and blocks per split of the merged formulations.
int key_block(const Halide::Target &target, const Knobs &knobs);
int split_blocks(const Halide::Target &target, const Knobs &knobs);
// Whether three-pass decode runs in segments (algo::Attend), sized at run time.
bool segmented_decode(const Halide::Target &target);
// Tokens per group of x rows in the GEMMs (algo::Linear's token_group): the
// register tile's token count on CPUs at prefill, 1 (x read in place) otherwise.
int gemm_token_group(const Halide::Target &target, const Knobs &knobs);
// Whether int8 weights scale each group's sum rather than each weight
// (algo::Linear::group_sums): CPU decode, where the GEMV's conversions, not the
// bytes, set its pace.
bool scale_group_sums(const Halide::Target &target, const Knobs &knobs, algo::WeightType weight_type);
// How the target's pipelines widen fp16 to fp32 (its fastest exact way).
algo::HalfWidening half_widening(const Halide::Target &target);
// The element type the pipelines store fp16 values (weights, a cache) in on the target.
Halide::Type half_storage_type(const Halide::Target &target);

void schedule_project(algo::Project &p, const Halide::Target &target, const Knobs &knobs);
void schedule_store(algo::Store &s, const Halide::Target &target, const Knobs &knobs);
void schedule_attend(algo::Attend &a, const Halide::Target &target, const Knobs &knobs);
void schedule_attend(algo::AttendBlocked &a, const Halide::Target &target, const Knobs &knobs);
void schedule_output(algo::Linear &l, Halide::Func out, const Halide::Target &target, const Knobs &knobs);
void schedule_rope(Halide::Func out, const Halide::Target &target, const Knobs &knobs);
// The recording pipelines of the hooks (generators/hooks_generator.cpp): plain
// loops, vectors over the innermost dimension and threads over tokens or rows.
void schedule_project_heads(algo::ProjectHeads &p, const Halide::Target &target);
void schedule_head_results(algo::HeadResults &r, const Halide::Target &target);
void schedule_weigh_values(algo::WeighValues &w, const Halide::Target &target);

// A knob's value, or the target's default where it is 0.
inline int or_default(int knob, int fallback) {
    return knob > 0 ? knob : fallback;
}

// Rejects a knob or target the schedules cannot honour, at generation time.
inline void require(bool ok, const std::string &message) {
    if (!ok) throw Halide::CompileError("gqa schedule: " + message);
}

namespace gpu {
Softmax preferred_softmax(const Knobs &knobs);
int key_block(const Knobs &knobs);
int split_blocks(const Knobs &knobs);
void schedule_project(algo::Project &p, const Halide::Target &target, const Knobs &knobs);
void schedule_store(algo::Store &s, const Halide::Target &target, const Knobs &knobs);
void schedule_attend(algo::Attend &a, const Halide::Target &target, const Knobs &knobs);
void schedule_attend(algo::AttendBlocked &a, const Halide::Target &target, const Knobs &knobs);
void schedule_output(algo::Linear &l, Halide::Func out, const Halide::Target &target, const Knobs &knobs);
void schedule_rope(Halide::Func out, const Halide::Target &target, const Knobs &knobs);
void schedule_project_heads(algo::ProjectHeads &p);
void schedule_head_results(algo::HeadResults &r);
void schedule_weigh_values(algo::WeighValues &w);
}  // namespace gpu

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
