// The CUDA pipelines for the Halide backend (halide_backend.cpp runs them with
// device-resident weights and KV cache), and the check that a driver and a device
// are there. Halide's CUDA runtime resolves cuInit & co. in the global namespace,
// then tries dlopen("libcuda.so") only; driver-only installs often ship just
// libcuda.so.1, so that is loaded globally here first.
#include <dlfcn.h>

#include <string>
#include <string_view>

#include "HalideRuntimeCuda.h"
#include "gqa_pipelines_cuda.h"

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

// The compute capability the PTX was generated for (the driver compiles it for the
// GPU), as the libraries' Halide target names it.
const char *cuda_isa_name(const uint64_t *) {
    static const std::string capability = [] {
        const std::string_view targets = pipeline_targets_cuda;
        const size_t at = targets.find("cuda_capability_");
        return std::string(targets.substr(at, targets.find_first_of("- ", at) - at));
    }();
    return capability.c_str();
}

const HalidePlatform &cuda_platform() {
    static const HalidePlatform platform{.backend = Backend::cuda,
                                         .pipelines = pipelines_cuda,
                                         .can_use_target_features = nullptr,
                                         .isa_name = cuda_isa_name,
                                         .native_device_handle = halide_cuda_get_device_ptr};
    return platform;
}

}  // namespace

BackendEntry cuda_backend_entry() {
    return halide_gpu_backend_entry<cuda_platform, halide_cuda_device_interface, probe_cuda>();
}

}  // namespace gqa::detail
