// The OpenCL pipelines for the Halide backend (halide_backend.cpp runs them with
// device-resident weights and KV cache, as for CUDA), and the check that an OpenCL
// platform with a device is there. Halide's OpenCL runtime loads libOpenCL.so
// itself; the check loads the ICD loader the same way, so both see the same
// platforms (pocl's CPU device in CI).
#include <dlfcn.h>

#include <string>

#include "HalideRuntimeOpenCL.h"
#include "gqa_pipelines_opencl.h"

namespace gqa::detail {
namespace {

// The OpenCL 1.2 entry points the check calls, by their C signatures.
using GetPlatformIds = int (*)(unsigned, void **, unsigned *);
using GetDeviceIds = int (*)(void *, uint64_t, unsigned, void **, unsigned *);
constexpr uint64_t kAllDeviceTypes = 0xFFFFFFFF;  // CL_DEVICE_TYPE_ALL

std::string probe_opencl() {
    void *loader = dlopen("libOpenCL.so.1", RTLD_NOW | RTLD_GLOBAL);
    if (!loader) loader = dlopen("libOpenCL.so", RTLD_NOW | RTLD_GLOBAL);
    if (!loader) return "no OpenCL ICD loader found (neither libOpenCL.so.1 nor libOpenCL.so could be loaded)";
    auto platforms_of = reinterpret_cast<GetPlatformIds>(dlsym(loader, "clGetPlatformIDs"));
    auto devices_of = reinterpret_cast<GetDeviceIds>(dlsym(loader, "clGetDeviceIDs"));
    if (!platforms_of || !devices_of) return "the OpenCL loader has no clGetPlatformIDs / clGetDeviceIDs";
    void *platform = nullptr;
    unsigned platforms = 0;
    if (platforms_of(1, &platform, &platforms) != 0 || platforms == 0) return "no OpenCL platform is installed";
    unsigned devices = 0;
    if (devices_of(platform, kAllDeviceTypes, 0, nullptr, &devices) != 0 || devices == 0) {
        return "the first OpenCL platform has no device";
    }
    return "";
}

const char *opencl_isa_name(const uint64_t *) {
    return "opencl";
}

const HalidePlatform &opencl_platform() {
    static const HalidePlatform platform{.backend = Backend::opencl,
                                         .pipelines = pipelines_opencl,
                                         .can_use_target_features = nullptr,
                                         .isa_name = opencl_isa_name,
                                         .native_device_handle = halide_opencl_get_cl_mem,
                                         .half_element = {halide_type_uint, 16, 1}};
    return platform;
}

}  // namespace

BackendEntry opencl_backend_entry() {
    return halide_gpu_backend_entry<opencl_platform, halide_opencl_device_interface, probe_opencl>();
}

}  // namespace gqa::detail
