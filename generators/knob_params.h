// GeneratorParams shared by the generators: the pipeline mode and the schedule
// knobs (schedules/knobs.json), so a variant is a CMake PARAMS line. Zero keeps
// the target's default.
#pragma once

#include <map>
#include <string>

#include "../schedules/schedule.h"
#include "layout.h"
#include "Halide.h"

namespace gqa {

enum class PipelineMode { prefill, decode };

inline const std::map<std::string, PipelineMode> kPipelineModes = {{"prefill", PipelineMode::prefill},
                                                                   {"decode", PipelineMode::decode}};

// The runtime's gqa::WeightType and gqa::CacheType names.
inline const std::map<std::string, algo::WeightType> kWeightTypes = {{"f32", algo::WeightType::f32},
                                                                     {"bf16", algo::WeightType::bf16},
                                                                     {"f16", algo::WeightType::f16},
                                                                     {"int8", algo::WeightType::int8}};
inline const std::map<std::string, algo::CacheType> kCacheTypes = {{"f32", algo::CacheType::f32},
                                                                   {"f16", algo::CacheType::f16},
                                                                   {"bf16", algo::CacheType::bf16},
                                                                   {"int8", algo::CacheType::int8}};

// Mixed into a Generator: Halide registers GeneratorParams found in the object.
struct KnobParams {
    Halide::GeneratorParam<PipelineMode> mode{"mode", PipelineMode::prefill, kPipelineModes};
#define GQA_KNOB_PARAM(name) Halide::GeneratorParam<int> name{#name, 0};
    GQA_INT_KNOBS(GQA_KNOB_PARAM)
#undef GQA_KNOB_PARAM
    // The target feature of the variant the knobs were tuned on (avx512, avx2,
    // arm_fp16, cuda, ...): variants without it keep their defaults, and knobs tuned
    // on a CPU never reach a GPU variant. Empty: the knobs apply to every variant.
    Halide::GeneratorParam<std::string> knob_isa{"knob_isa", ""};
    // Type of the KV cache the pipeline writes or reads.
    Halide::GeneratorParam<algo::CacheType> cache_type{"cache_type", algo::CacheType::f32, kCacheTypes};

    // Element type of the projection weights the pipeline reads (project, output).
    Halide::GeneratorParam<algo::WeightType> weight_type{"weight_type", algo::WeightType::f32, kWeightTypes};

    // The packed weights' element type on the target: bf16 as its bits, fp16 as
    // the target stores fp16, int8 as is.
    Halide::Type weight_storage(const Halide::Target &target) const {
        switch (weight_type) {
        case algo::WeightType::f32: return Halide::Float(32);
        case algo::WeightType::bf16: return Halide::UInt(16);
        case algo::WeightType::f16: return schedules::half_storage_type(target);
        case algo::WeightType::int8: return Halide::Int(8);
        }
        return Halide::Float(32);
    }

    // The cache's element type on the target: an int8 slot's scale is bytes too.
    Halide::Type cache_storage(const Halide::Target &target) const {
        switch (cache_type) {
        case algo::CacheType::f32: return Halide::Float(32);
        case algo::CacheType::f16: return schedules::half_storage_type(target);
        case algo::CacheType::bf16: return Halide::UInt(16);
        case algo::CacheType::int8: return Halide::Int(8);
        }
        return Halide::Float(32);
    }

    // Elements per cache slot past its head_dim values: an int8 slot ends in its
    // scale's bytes.
    int slot_extra_elements() const {
        return cache_type == algo::CacheType::int8 ? layout::kInt8CacheScaleBytes : 0;
    }
    Halide::Expr slot_elements(const Halide::Expr &head_dim) const { return head_dim + slot_extra_elements(); }
    // At the estimates' head_dim of 64.
    int estimated_slot_elements() const { return 64 + slot_extra_elements(); }

    bool knobs_apply(const Halide::Target &target) const {
        const std::string isa = knob_isa;
        if (isa.empty()) return true;
        const Halide::Target::Feature feature = Halide::Target::feature_from_name(isa);
        schedules::require(feature != Halide::Target::FeatureEnd, "knob_isa '" + isa + "' is no Halide target feature");
        const bool gpu_knobs = Halide::Target().with_feature(feature).has_gpu_feature();
        return target.has_feature(feature) && target.has_gpu_feature() == gpu_knobs;
    }

    schedules::Knobs knobs(const Halide::Target &target) const {
        schedules::Knobs k;
        k.decode = mode == PipelineMode::decode;
        if (!knobs_apply(target)) return k;
#define GQA_KNOB_COPY(name) k.name = name;
        GQA_INT_KNOBS(GQA_KNOB_COPY)
#undef GQA_KNOB_COPY
        return k;
    }
};

}  // namespace gqa
