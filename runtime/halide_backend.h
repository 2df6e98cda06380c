// The Halide AOT backend, shared by the architectures: each build links the
// pipelines of exactly one (gqa_*_x86 or gqa_*_arm), and x86_backend.cpp or
// arm_backend.cpp describes them to halide_backend.cpp through HalidePlatform.
#pragma once

#include <cstdint>
#include <string>

#include "HalideRuntime.h"
#include "backend_registry.h"

namespace gqa::detail {

using ProjectPipeline = int (*)(halide_buffer_t *x, halide_buffer_t *bias, halide_buffer_t *qk_norm_weight,
                                halide_buffer_t *positions, halide_buffer_t *rope_cos, halide_buffer_t *rope_sin,
                                int32_t rope_style, int32_t rotary_dim, int32_t qk_norm, float qk_norm_eps,
                                int32_t head_dim, int32_t num_heads, int32_t num_kv_heads, halide_buffer_t *w,
                                halide_buffer_t *w_scales, halide_buffer_t *q, halide_buffer_t *k, halide_buffer_t *v);
using StorePipeline = int (*)(halide_buffer_t *k_new, halide_buffer_t *v_new, halide_buffer_t *dest_slots,
                              halide_buffer_t *dest_rows, halide_buffer_t *k, halide_buffer_t *v);
using AttendPipeline = int (*)(halide_buffer_t *q, halide_buffer_t *mask, int32_t kv_len, int32_t use_mask,
                               int32_t causal, int32_t window, float scale, float softcap, int32_t use_sinks,
                               halide_buffer_t *sinks, int32_t segment_keys, halide_buffer_t *kv_lens,
                               halide_buffer_t *granule_offsets, halide_buffer_t *k_cache, halide_buffer_t *v_cache,
                               halide_buffer_t *z);
using AttendPatternPipeline = int (*)(halide_buffer_t *q, halide_buffer_t *mask, int32_t kv_len, int32_t use_mask,
                                      int32_t causal, int32_t window, float scale, float softcap, int32_t use_sinks,
                                      halide_buffer_t *sinks, int32_t segment_keys, halide_buffer_t *kv_lens,
                                      halide_buffer_t *granule_offsets, halide_buffer_t *k_cache,
                                      halide_buffer_t *v_cache, halide_buffer_t *z, halide_buffer_t *pattern,
                                      halide_buffer_t *scores);
using OutputPipeline = int (*)(halide_buffer_t *z, halide_buffer_t *bias, halide_buffer_t *w, halide_buffer_t *w_scales,
                               halide_buffer_t *out);
using ProjectHeadsPipeline = int (*)(halide_buffer_t *x_q, halide_buffer_t *x_k, halide_buffer_t *x_v,
                                     int32_t split_inputs, halide_buffer_t *bias, halide_buffer_t *qk_norm_weight,
                                     int32_t qk_norm, float qk_norm_eps, int32_t head_dim, int32_t num_heads,
                                     int32_t num_kv_heads, halide_buffer_t *w, halide_buffer_t *w_scales,
                                     halide_buffer_t *q, halide_buffer_t *k, halide_buffer_t *v);
using HeadResultsPipeline = int (*)(halide_buffer_t *z, int32_t head_dim, halide_buffer_t *w, halide_buffer_t *w_scales,
                                    halide_buffer_t *result);
using WeighValuesPipeline = int (*)(halide_buffer_t *pattern, halide_buffer_t *v, halide_buffer_t *z);
using RopePipeline = int (*)(halide_buffer_t *x, halide_buffer_t *positions, halide_buffer_t *rope_cos,
                             halide_buffer_t *rope_sin, int32_t rope_style, int32_t rotary_dim, halide_buffer_t *out);

template <typename Pipeline>
struct ModePipelines {
    Pipeline prefill, decode;
};

// Arrays indexed by gqa::WeightType hold one entry per weight type.
inline constexpr int kWeightTypeCount = 4;
static_assert(int(WeightType::int8) == kWeightTypeCount - 1, "one pipeline entry per gqa::WeightType");

// Arrays indexed by gqa::CacheType hold one entry per cache type.
inline constexpr int kCacheTypeCount = 4;
static_assert(int(CacheType::int8) == kCacheTypeCount - 1, "one pipeline entry per gqa::CacheType");

// The pipelines that write or read the KV cache, for one cache type.
struct CachePipelines {
    ModePipelines<StorePipeline> store;
    ModePipelines<AttendPipeline> attend;
    AttendPatternPipeline attend_pattern;
};

// Every pipeline of one backend. Filled, by name, in the header that
// cmake/GqaHalideLibraries.cmake generates with the libraries:
// gqa_pipelines_<backend>.h defines gqa::detail::pipelines_<backend> and
// pipeline_targets_<backend> (the Halide targets they were compiled for).
struct PipelineTable {
    RopePipeline rope;
    WeighValuesPipeline weigh_values;
    ModePipelines<ProjectPipeline> project[kWeightTypeCount];
    ModePipelines<OutputPipeline> output[kWeightTypeCount];
    ProjectHeadsPipeline project_heads[kWeightTypeCount];
    HeadResultsPipeline head_results[kWeightTypeCount];
    CachePipelines cache[kCacheTypeCount];
};

struct HalidePlatform {
    Backend backend;
    PipelineTable pipelines;
    // Installed as Halide's halide_can_use_target_features hook: whether this CPU
    // runs a multitarget variant needing `features` (halide_target_feature_t bits).
    // Null for a GPU platform, whose libraries have one variant.
    int (*can_use_target_features)(int count, const uint64_t *features);
    // A short name for a variant's instruction set, given its features.
    const char *(*isa_name)(const uint64_t *features);
    // A GPU platform's native handle of a buffer's device memory, as its device
    // interface's wrap_native takes it (halide_cuda_get_device_ptr: a CUdeviceptr;
    // for OpenCL halide_opencl_get_cl_mem, a cl_mem, where halide_buffer_t::device
    // is Halide's own record of it). Null for a CPU platform.
    uintptr_t (*native_device_handle)(void *user_context, halide_buffer_t *buffer);
    // The element type the pipelines take fp16 weights or an fp16 cache as: float16,
    // or its bits (uint16) where the target stores them so
    // (schedules::half_storage_type: OpenCL).
    halide_type_t half_element = {halide_type_float, 16, 1};
};

// The CPU pipelines of this build, defined by the architecture's file
// (x86_backend.cpp or arm_backend.cpp).
const HalidePlatform &halide_platform();

// Kernels over a platform's pipelines: on host memory (device null), or with
// weights and the KV cache kept in the memory of `device`.
std::unique_ptr<Kernels> make_halide_kernels(const HalidePlatform &platform, const halide_device_interface_t *device,
                                             const LayerDims &dims, const Weights &weights, const RopeTables &rope);
void run_halide_rope(const HalidePlatform &platform, const halide_device_interface_t *device, const RopeTables &rope,
                     const RopeCall &call);

// The registry entry of this build's CPU backend (Backend::x86 or Backend::arm).
BackendEntry halide_cpu_backend_entry(Backend backend);

// The registry entry of a GPU platform: its pipelines on `device()`'s memory,
// available when `probe()` (run once) finds a driver and a device.
template <const HalidePlatform &(*platform)(), const halide_device_interface_t *(*device)(),
          std::string (*probe)()>
BackendEntry halide_gpu_backend_entry() {
    return {.backend = platform().backend,
            .unavailable_reason =
                [] {
                    static const std::string reason = probe();
                    return reason;
                },
            .isa = [] { return std::string(platform().isa_name(nullptr)); },
            .make_kernels =
                [](const LayerDims &dims, const Weights &weights, const RopeTables &rope) {
                    return make_halide_kernels(platform(), device(), dims, weights, rope);
                },
            .rope = [](const RopeTables &rope, const RopeCall &call) { run_halide_rope(platform(), device(), rope, call); }};
}

inline bool has_target_feature(const uint64_t *features, int feature) {
    return (features[feature / 64] >> (feature % 64)) & 1;
}

}  // namespace gqa::detail
