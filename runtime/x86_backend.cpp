// The x86 pipelines (AVX-512, AVX2+FMA, SSE4.1 variants in each library) for the
// Halide backend. Halide's own cpuid check picks the variant; GQA_X86_ISA may cap it.
#include <cstdlib>
#include <cstring>
#include <string>

#include "gqa_pipelines_x86.h"

namespace gqa::detail {
namespace {

// GQA_X86_ISA=avx2|sse41 caps the ISA the multitarget wrappers may pick, so tests
// can run every variant on one machine. Read once: the wrappers cache their choice.
int isa_cap_rank() {
    const char *cap = std::getenv("GQA_X86_ISA");
    if (!cap || !*cap || std::strcmp(cap, "avx512") == 0) return 2;
    if (std::strcmp(cap, "avx2") == 0) return 1;
    if (std::strcmp(cap, "sse41") == 0) return 0;
    throw Error(std::string("GQA_X86_ISA is '") + cap + "'; expected avx512, avx2 or sse41");
}

int isa_rank(const uint64_t *features) {
    if (has_target_feature(features, halide_target_feature_avx512)) return 2;
    if (has_target_feature(features, halide_target_feature_avx2) ||
        has_target_feature(features, halide_target_feature_avx)) {
        return 1;
    }
    return 0;
}

int capped_can_use_target_features(int count, const uint64_t *features) {
    static const int cap = isa_cap_rank();
    if (isa_rank(features) > cap) return 0;
    return halide_default_can_use_target_features(count, features);
}

const char *x86_isa_name(const uint64_t *features) {
    static const char *const names[] = {"sse41", "avx2", "avx512"};
    return names[isa_rank(features)];
}

}  // namespace

const HalidePlatform &halide_platform() {
    static const int checked_cap = isa_cap_rank();  // a bad GQA_X86_ISA throws here, before any pipeline runs
    (void)checked_cap;
    static const HalidePlatform platform{.backend = Backend::x86,
                                         .pipelines = pipelines_x86,
                                         .can_use_target_features = capped_can_use_target_features,
                                         .isa_name = x86_isa_name,
                                         .native_device_handle = nullptr};
    return platform;
}

BackendEntry x86_backend_entry() {
    return halide_cpu_backend_entry(Backend::x86);
}

}  // namespace gqa::detail
