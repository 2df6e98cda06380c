// A CUDA device's limits, read from the driver (not measured), so that the CUDA
// rows of the benchmark suite report fractions of the device's own fp32 peak and
// memory bandwidth rather than the host CPU's.
#pragma once

#include <cstddef>
#include <optional>
#include <string>

namespace gqa_bench {

struct DeviceLimits {
    std::string name;
    int sm_count = 0, compute_major = 0, compute_minor = 0;
    double fp32_gflops = 0;  // SMs x fp32 lanes per SM x 2 flops x boost clock
    double dram_gbs = 0;     // 2 transfers per memory clock x bus width
    size_t l2_bytes = 0;
};

// Device 0 of the CUDA driver (loaded at run time); nullopt where there is none or
// it does not answer every attribute.
std::optional<DeviceLimits> cuda_device_limits();

}  // namespace gqa_bench
