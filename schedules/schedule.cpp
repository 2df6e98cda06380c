#include "schedule.h"

#include "cpu_schedule.h"

namespace gqa::schedules {

using namespace Halide;

namespace {

// One GPU family: Halide's GPU schedules compile for CUDA and OpenCL alike (run
// on pocl, the OpenCL build's prefill pipelines match the x86 ones).
enum class Family { x86, arm, gpu };

Family family(const Target &target) {
    if (target.has_gpu_feature()) return Family::gpu;
    require((target.arch == Target::X86 && target.bits == 64) || (target.arch == Target::ARM && target.bits == 64),
            "no schedule for target " + target.to_string() + " yet");
    return target.arch == Target::ARM ? Family::arm : Family::x86;
}

}  // namespace

Softmax attend_formulation(const Target &target, const Knobs &knobs, bool with_pattern) {
    if (with_pattern) {
        require(knobs.softmax == Softmax::automatic || knobs.softmax == Softmax::three_pass,
                "the pattern output needs softmax=three_pass");
        return Softmax::three_pass;
    }
    if (knobs.softmax != Softmax::automatic) return knobs.softmax;
    return family(target) == Family::gpu ? gpu::preferred_softmax(knobs) : cpu::preferred_softmax(knobs);
}

int key_block(const Target &target, const Knobs &knobs) {
    return family(target) == Family::gpu ? gpu::key_block(knobs) : cpu::key_block(knobs);
}

int split_blocks(const Target &target, const Knobs &knobs) {
    return family(target) == Family::gpu ? gpu::split_blocks(knobs) : cpu::split_blocks(knobs);
}

// Only x86 decode yet: arm's would be untimed (qemu), and GPU decode takes the
// blocked formulations.
bool segmented_decode(const Target &target) {
    return family(target) == Family::x86;
}

// The GPU GEMM stages x tiles in shared memory itself.
int gemm_token_group(const Target &target, const Knobs &knobs) {
    switch (family(target)) {
    case Family::gpu: return 1;
    case Family::arm: return arm::gemm_token_group(knobs);
    case Family::x86: return x86::gemm_token_group(knobs);
    }
    return 1;
}

bool scale_group_sums(const Target &target, const Knobs &knobs, algo::WeightType weight_type) {
    return weight_type == algo::WeightType::int8 && knobs.decode && family(target) != Family::gpu;
}

// Halide 14's cast converts on CUDA (cvt.f32.f16) and ARM with FP16 (fcvtl) and
// emulates it elsewhere; x86 with F16C converts through the linked vcvtph2ps.
// OpenCL has fp16 only with cl_khr_fp16, which pocl lacks; plain ARMv8.0 and
// SSE4.1 have no conversion instruction.
algo::HalfWidening half_widening(const Target &target) {
    if (target.has_feature(Target::CUDA) || target.has_feature(Target::ARMFp16)) return algo::HalfWidening::cast;
    if (target.arch == Target::X86 && target.has_feature(Target::F16C) && !target.has_gpu_feature()) {
        return algo::HalfWidening::f16c_call;
    }
    return algo::HalfWidening::integer_ops;
}

// fp16 as its bits on OpenCL: Halide 14 needs cl_half for any float16 there, and
// with it every kernel declares half helpers, which a device without cl_khr_fp16
// (pocl) refuses to build; the bits need only integer operations (algo::narrow_half,
// algo::widen_half).
Type half_storage_type(const Target &target) {
    return target.has_feature(Target::OpenCL) ? UInt(16) : Float(16);
}

void schedule_project(algo::Project &p, const Target &target, const Knobs &knobs) {
    switch (family(target)) {
    case Family::gpu: return gpu::schedule_project(p, target, knobs);
    case Family::arm: return arm::schedule_project(p, target, knobs);
    case Family::x86: return x86::schedule_project(p, target, knobs);
    }
}

// The CPU targets share the store; its vectors are the target's.
void schedule_store(algo::Store &s, const Target &target, const Knobs &knobs) {
    if (family(target) == Family::gpu) return gpu::schedule_store(s, target, knobs);
    cpu::schedule_store(s, target.natural_vector_size<float>(), knobs.decode);
}

void schedule_attend(algo::Attend &a, const Target &target, const Knobs &knobs) {
    switch (family(target)) {
    case Family::gpu: return gpu::schedule_attend(a, target, knobs);
    case Family::arm: return arm::schedule_attend(a, target, knobs);
    case Family::x86: return x86::schedule_attend(a, target, knobs);
    }
}

void schedule_attend(algo::AttendBlocked &a, const Target &target, const Knobs &knobs) {
    if (family(target) == Family::gpu) return gpu::schedule_attend(a, target, knobs);
    cpu::schedule_merged_attend(a, target.natural_vector_size<float>());
}

void schedule_output(algo::Linear &l, Func out, const Target &target, const Knobs &knobs) {
    switch (family(target)) {
    case Family::gpu: return gpu::schedule_output(l, out, target, knobs);
    case Family::arm: return arm::schedule_output(l, out, target, knobs);
    case Family::x86: return x86::schedule_output(l, out, target, knobs);
    }
}

void schedule_project_heads(algo::ProjectHeads &p, const Target &target) {
    if (family(target) == Family::gpu) return gpu::schedule_project_heads(p);
    cpu::schedule_project_heads(p, target.natural_vector_size<float>());
}

void schedule_head_results(algo::HeadResults &r, const Target &target) {
    if (family(target) == Family::gpu) return gpu::schedule_head_results(r);
    cpu::schedule_head_results(r, target.natural_vector_size<float>());
}

void schedule_weigh_values(algo::WeighValues &w, const Target &target) {
    if (family(target) == Family::gpu) return gpu::schedule_weigh_values(w);
    cpu::schedule_weigh_values(w, target.natural_vector_size<float>());
}

void schedule_rope(Func out, const Target &target, const Knobs &knobs) {
    switch (family(target)) {
    case Family::gpu: return gpu::schedule_rope(out, target, knobs);
    case Family::arm: return arm::schedule_rope(out, target, knobs);
    case Family::x86: return x86::schedule_rope(out, target, knobs);
    }
}

}  // namespace gqa::schedules
