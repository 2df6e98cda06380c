// Shared helpers of the GoogleTest suite: deterministic random tensors, layer setup,
// element-wise comparison and one-call forwards on a chosen backend.
#pragma once

#include <gqa/attention.hpp>

#include "../tools/tolerance.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <vector>

namespace gqa {
// Test names and failure messages show the backend's name, not its bytes.
inline void PrintTo(Backend backend, std::ostream *os) {
    *os << backend_name(backend);
}
}  // namespace gqa

namespace gqa_test {

// Values the test owns, with the torch shape they are viewed at.
template <typename T>
struct HostTensor {
    std::vector<T> values;
    std::vector<int64_t> shape;

    gqa::TensorView<T> view() const { return {values.data(), shape}; }
};

template <typename T>
std::optional<gqa::TensorView<T>> optional_view(const std::optional<HostTensor<T>> &tensor) {
    if (!tensor) return std::nullopt;
    return tensor->view();
}

int64_t element_count(const std::vector<int64_t> &shape);

// Same seed, same values (std::mt19937 with the standard library's distributions).
HostTensor<float> random_normal(std::vector<int64_t> shape, double stddev, uint32_t seed);
HostTensor<float> random_uniform(std::vector<int64_t> shape, double low, double high, uint32_t seed);

gqa::Config make_config(int embed_dim, int num_heads, int num_kv_heads, int head_dim, int max_seq_len = 128);

// Projections in nn.Linear layout, ~N(0, 1/sqrt(fan_in)) so that q, k, v come out ~N(0, 1).
struct LayerWeights {
    HostTensor<float> wq, wk, wv, wo;
    std::optional<HostTensor<float>> bq{}, bk{}, bv{}, bo{};

    gqa::Weights view() const;
};
LayerWeights random_weights(const gqa::Config &config, bool with_biases, uint32_t seed);

// The RoPE scalings of real checkpoints: Llama 3.2 (llama3, factor 32, 8192),
// gpt-oss (yarn, factor 32, 4096, untruncated), Phi-3 style longrope with `pairs`
// made-up factors per list (original 4096, max 131072).
gqa::RopeScaling llama32_scaling();
gqa::RopeScaling gpt_oss_yarn_scaling();
gqa::RopeScaling phi3_longrope_scaling(int pairs);

// x [b, s, d] ~ N(0, 1).
HostTensor<float> random_input(const gqa::Config &config, int batch, int seq_len, uint32_t seed);

struct ForwardInput {
    HostTensor<float> x;
    std::optional<HostTensor<uint8_t>> mask{};
    std::optional<HostTensor<int32_t>> input_pos{};
};

struct ForwardOutput {
    std::vector<float> out;
    std::vector<float> pattern;  // empty unless recorded
    std::vector<float> z;
};

// One no-cache forward of a fresh layer.
ForwardOutput run_forward(const gqa::Config &config, const LayerWeights &weights, gqa::Backend backend,
                          const ForwardInput &input, bool record_pattern);

std::vector<float> copy_of(const gqa::TensorView<float> &view);

double max_abs_diff(std::span<const float> got, std::span<const float> want);
// Every element within the fp32 tolerance (tools/tolerance.h), sizes equal.
testing::AssertionResult all_close(std::span<const float> got, std::span<const float> want, double atol = GQA_ATOL,
                                   double rtol = GQA_RTOL);

// The reduced-precision rule of tools/tolerance.h against the exact (fp32) result.
testing::AssertionResult within_reduced_precision_error(std::span<const float> got,
                                                        std::span<const float> reference_reduced,
                                                        std::span<const float> exact);

// The message of the gqa::Error `call` throws, or "no error".
template <typename Call>
std::string error_of(const Call &call) {
    try {
        call();
    } catch (const gqa::Error &e) {
        return e.what();
    }
    return "no error";
}

// available_backends() without Backend::best, which duplicates one of them.
std::vector<gqa::Backend> runnable_backends();
// runnable_backends() without the reference: what is checked against it.
std::vector<gqa::Backend> backends_under_test();
std::string backend_test_name(const testing::TestParamInfo<gqa::Backend> &info);

}  // namespace gqa_test
