// The CUDA pipelines for the Halide backend (halide_backend.cpp runs them with
// device-resident weights and KV cache), and the check that a driver and a device
// are there. Halide's CUDA runtime resolves cuInit & co. in the global namespace,
// then tries dlopen("libcuda.so") only; driver-only installs often ship just
// libcuda.so.1, so that is loaded globally here first.
#include <dlfcn.h>

#include <string>

#include "HalideRuntimeCuda.h"
#include "gqa_attend_decode_cuda.h"
#include "gqa_attend_decode_f16_cuda.h"
#include "gqa_attend_pattern_cuda.h"
#include "gqa_attend_pattern_f16_cuda.h"
#include "gqa_attend_prefill_cuda.h"
#include "gqa_attend_prefill_f16_cuda.h"
#include "gqa_output_decode_cuda.h"
#include "gqa_output_prefill_cuda.h"
#include "gqa_project_decode_cuda.h"
#include "gqa_project_decode_f16_cuda.h"
#include "gqa_project_prefill_cuda.h"
#include "gqa_project_prefill_f16_cuda.h"
#include "gqa_rope_cuda.h"
#include "halide_backend.h"

namespace gqa::detail {
namespace {

std::string probe_cuda() {
    void *driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
    if (!driver) driver = dlopen("libcuda.so", RTLD_NOW | RTLD_GLOBAL);
    if (!driver) return "no CUDA driver found (neither libcuda.so.1 nor libcuda.so could be loaded)";
    // Kept loaded: the Halide runtime finds the driver's symbols through it.
    using Init = int (*)(unsigned);
    using DeviceCount = int (*)(int *);
    auto init = reinterpret_cast<Init>(dlsym(driver, "cuInit"));
    auto device_count = reinterpret_cast<DeviceCount>(dlsym(driver, "cuDeviceGetCount"));
    if (!init || !device_count) return "the CUDA driver has no cuInit / cuDeviceGetCount";
    if (const int status = init(0)) return "cuInit failed with CUDA error " + std::to_string(status);
    int devices = 0;
    if (const int status = device_count(&devices)) {
        return "cuDeviceGetCount failed with CUDA error " + std::to_string(status);
    }
    if (devices == 0) return "the CUDA driver found no device";
    return "";
}

const char *cuda_isa_name(const uint64_t *) {
    return "cuda_capability_70";
}

}  // namespace

const std::string &cuda_unavailable_reason() {
    static const std::string reason = probe_cuda();
    return reason;
}

const HalidePlatform &cuda_platform() {
    static const HalidePlatform platform{Backend::cuda,
                                         {gqa_project_prefill_cuda, gqa_project_decode_cuda, gqa_attend_prefill_cuda,
                                          gqa_attend_decode_cuda, gqa_attend_pattern_cuda},
                                         {gqa_project_prefill_f16_cuda, gqa_project_decode_f16_cuda,
                                          gqa_attend_prefill_f16_cuda, gqa_attend_decode_f16_cuda,
                                          gqa_attend_pattern_f16_cuda},
                                         gqa_output_prefill_cuda,
                                         gqa_output_decode_cuda,
                                         gqa_rope_cuda,
                                         nullptr,
                                         cuda_isa_name};
    return platform;
}

const halide_device_interface_t *cuda_device_interface() {
    return halide_cuda_device_interface();
}

}  // namespace gqa::detail
