// The Halide AOT backend, shared by the architectures: each build links the
// pipelines of exactly one (gqa_*_x86 or gqa_*_arm), and x86_backend.cpp or
// arm_backend.cpp describes them to halide_backend.cpp through HalidePlatform.
#pragma once

#include <cstdint>

#include "HalideRuntime.h"
#include "backend.h"

namespace gqa::detail {

using ProjectPipeline = int (*)(halide_buffer_t *x, halide_buffer_t *w, halide_buffer_t *bias,
                                halide_buffer_t *positions, halide_buffer_t *rope_cos, halide_buffer_t *rope_sin,
                                int32_t rope_style, int32_t rotary_dim, int32_t head_dim, int32_t num_heads,
                                int32_t num_kv_heads, int32_t seq_len, halide_buffer_t *q, halide_buffer_t *k,
                                halide_buffer_t *v);
using AttendPipeline = int (*)(halide_buffer_t *q, halide_buffer_t *mask, int32_t kv_len, int32_t use_mask,
                               int32_t causal, int32_t window, float scale, float softcap,
                               halide_buffer_t *k_cache, halide_buffer_t *v_cache, halide_buffer_t *z);
using AttendPatternPipeline = int (*)(halide_buffer_t *q, halide_buffer_t *mask, int32_t kv_len, int32_t use_mask,
                                      int32_t causal, int32_t window, float scale, float softcap,
                                      halide_buffer_t *k_cache, halide_buffer_t *v_cache, halide_buffer_t *z,
                                      halide_buffer_t *pattern);
using OutputPipeline = int (*)(halide_buffer_t *z, halide_buffer_t *w, halide_buffer_t *bias, halide_buffer_t *out);
using RopePipeline = int (*)(halide_buffer_t *x, halide_buffer_t *positions, halide_buffer_t *rope_cos,
                             halide_buffer_t *rope_sin, int32_t rope_style, int32_t rotary_dim, halide_buffer_t *out);

// The pipelines that write or read the KV cache, for one cache element type.
struct CachePipelines {
    ProjectPipeline project_prefill, project_decode;
    AttendPipeline attend_prefill, attend_decode;
    AttendPatternPipeline attend_pattern;
};

struct HalidePlatform {
    Backend backend;
    CachePipelines f32, f16;
    OutputPipeline output_prefill, output_decode;
    RopePipeline rope;
    // Installed as Halide's halide_can_use_target_features hook: whether this CPU
    // runs a multitarget variant needing `features` (halide_target_feature_t bits).
    // Null for a GPU platform, whose libraries have one variant.
    int (*can_use_target_features)(int count, const uint64_t *features);
    // A short name for a variant's instruction set, given its features.
    const char *(*isa_name)(const uint64_t *features);
};

// Defined by the architecture's file (x86_backend.cpp or arm_backend.cpp).
const HalidePlatform &halide_platform();

#ifdef GQA_HAVE_CUDA
// cuda_backend.cpp: the CUDA pipelines, and the device they run on.
const HalidePlatform &cuda_platform();
const halide_device_interface_t *cuda_device_interface();
#endif

inline bool has_target_feature(const uint64_t *features, int feature) {
    return (features[feature / 64] >> (feature % 64)) & 1;
}

}  // namespace gqa::detail
