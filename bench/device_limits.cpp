#include "device_limits.h"

#include <dlfcn.h>

namespace gqa_bench {
namespace {

// CUdevice_attribute values of the CUDA driver API (cuda.h), stable across versions.
enum Attribute {
    kMaxClockKhz = 13,
    kSmCount = 16,
    kMemoryClockKhz = 36,
    kMemoryBusBits = 37,
    kL2Bytes = 38,
    kComputeMajor = 75,
    kComputeMinor = 76,
};

// fp32 FMA lanes per SM, from the CUDA C Programming Guide's throughput table:
// 64 on Volta, Turing and GA100; 128 on GA10x, Ada, Hopper and Blackwell.
int fp32_lanes_per_sm(int major, int minor) {
    if (major < 8 || (major == 8 && minor == 0)) return 64;
    return 128;
}

}  // namespace

std::optional<DeviceLimits> cuda_device_limits() {
    void *driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
    if (!driver) driver = dlopen("libcuda.so", RTLD_NOW | RTLD_GLOBAL);
    if (!driver) return std::nullopt;
    using Init = int (*)(unsigned);
    using Get = int (*)(int *, int);
    using GetAttribute = int (*)(int *, int, int);
    using GetName = int (*)(char *, int, int);
    auto init = reinterpret_cast<Init>(dlsym(driver, "cuInit"));
    auto get = reinterpret_cast<Get>(dlsym(driver, "cuDeviceGet"));
    auto attribute = reinterpret_cast<GetAttribute>(dlsym(driver, "cuDeviceGetAttribute"));
    auto get_name = reinterpret_cast<GetName>(dlsym(driver, "cuDeviceGetName"));
    int device = 0;
    if (!init || !get || !attribute || !get_name || init(0) != 0 || get(&device, 0) != 0) return std::nullopt;
    auto read = [&](Attribute which) {
        int value = 0;
        return attribute(&value, which, device) == 0 ? value : 0;
    };
    DeviceLimits limits;
    char name[256] = {};
    if (get_name(name, sizeof name, device) == 0) limits.name = name;
    limits.sm_count = read(kSmCount);
    limits.compute_major = read(kComputeMajor);
    limits.compute_minor = read(kComputeMinor);
    const double clock_khz = read(kMaxClockKhz), memory_khz = read(kMemoryClockKhz), bus_bits = read(kMemoryBusBits);
    limits.l2_bytes = size_t(read(kL2Bytes));
    if (limits.sm_count == 0 || clock_khz == 0 || memory_khz == 0 || bus_bits == 0) return std::nullopt;
    limits.fp32_gflops =
        limits.sm_count * fp32_lanes_per_sm(limits.compute_major, limits.compute_minor) * 2.0 * clock_khz * 1e-6;
    limits.dram_gbs = 2.0 * memory_khz * 1e3 * bus_bits / 8 * 1e-9;
    return limits;
}

}  // namespace gqa_bench
