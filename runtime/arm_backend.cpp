// The aarch64 pipelines (an ARMv8.2 FP16 variant and a plain ARMv8.0 NEON one in
// each library) for the Halide backend. Halide 14 detects no aarch64 features and
// would always run the first variant, which faults on a core without FP16 (e.g.
// Cortex-A72), so the choice is made here from the kernel's hardware capabilities.
#include <sys/auxv.h>

#include <asm/hwcap.h>

#include "gqa_pipelines_arm.h"

namespace gqa::detail {
namespace {

// The HWCAP bits each optional Halide feature needs (all of them).
struct FeatureCaps {
    halide_target_feature_t feature;
    unsigned long hwcaps;
};
constexpr FeatureCaps kFeatureCaps[] = {
    {halide_target_feature_arm_fp16, HWCAP_FPHP | HWCAP_ASIMDHP},
    {halide_target_feature_arm_dot_prod, HWCAP_ASIMDDP},
    {halide_target_feature_sve, HWCAP_SVE},
};

int hwcap_can_use_target_features(int count, const uint64_t *features) {
    static const unsigned long hwcaps = getauxval(AT_HWCAP);
    for (const FeatureCaps &needed : kFeatureCaps) {
        if (has_target_feature(features, needed.feature) && (hwcaps & needed.hwcaps) != needed.hwcaps) return 0;
    }
    return halide_default_can_use_target_features(count, features);
}

const char *arm_isa_name(const uint64_t *features) {
    return has_target_feature(features, halide_target_feature_arm_fp16) ? "armv8.2-a+fp16" : "armv8-a";
}

}  // namespace

const HalidePlatform &halide_platform() {
    static const HalidePlatform platform{.backend = Backend::arm,
                                         .pipelines = pipelines_arm,
                                         .can_use_target_features = hwcap_can_use_target_features,
                                         .isa_name = arm_isa_name,
                                         .native_device_handle = nullptr};
    return platform;
}

BackendEntry arm_backend_entry() {
    return halide_cpu_backend_entry(Backend::arm);
}

}  // namespace gqa::detail
