#include "test_util.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <sstream>

namespace gqa_test {

int64_t element_count(const std::vector<int64_t> &shape) {
    return gqa::TensorView<float>{nullptr, shape}.numel();
}

HostTensor<float> random_normal(std::vector<int64_t> shape, double stddev, uint32_t seed) {
    std::mt19937 engine(seed);
    std::normal_distribution<float> normal(0.0f, static_cast<float>(stddev));
    HostTensor<float> tensor{std::vector<float>(static_cast<size_t>(element_count(shape))), std::move(shape)};
    for (float &value : tensor.values) value = normal(engine);
    return tensor;
}

HostTensor<float> random_uniform(std::vector<int64_t> shape, double low, double high, uint32_t seed) {
    std::mt19937 engine(seed);
    std::uniform_real_distribution<float> uniform(static_cast<float>(low), static_cast<float>(high));
    HostTensor<float> tensor{std::vector<float>(static_cast<size_t>(element_count(shape))), std::move(shape)};
    for (float &value : tensor.values) value = uniform(engine);
    return tensor;
}

gqa::Config make_config(int embed_dim, int num_heads, int num_kv_heads, int head_dim, int max_seq_len) {
    gqa::Config config;
    config.embed_dim = embed_dim;
    config.num_heads = num_heads;
    config.num_kv_heads = num_kv_heads;
    config.head_dim = head_dim;
    config.max_seq_len = max_seq_len;
    return config;
}

gqa::Weights LayerWeights::view() const {
    const auto bias_view = [](const std::optional<HostTensor<float>> &bias) {
        return bias ? bias->view() : gqa::TensorView<float>{};
    };
    return {wq.view(), wk.view(), wv.view(), wo.view(), bias_view(bq), bias_view(bk), bias_view(bv), bias_view(bo)};
}

LayerWeights random_weights(const gqa::Config &config, bool with_biases, uint32_t seed) {
    const int64_t d = config.embed_dim;
    const int64_t q_width = int64_t{config.num_heads} * config.head_dim;
    const int64_t kv_width = int64_t{config.num_kv_heads} * config.head_dim;
    const double input_scale = 1.0 / std::sqrt(double(d));
    const double output_scale = 1.0 / std::sqrt(double(q_width));
    LayerWeights weights{
        random_normal({q_width, d}, input_scale, seed),
        random_normal({kv_width, d}, input_scale, seed + 1),
        random_normal({kv_width, d}, input_scale, seed + 2),
        random_normal({d, q_width}, output_scale, seed + 3),
    };
    if (with_biases) {
        weights.bq = random_normal({q_width}, 0.5, seed + 4);
        weights.bk = random_normal({kv_width}, 0.5, seed + 5);
        weights.bv = random_normal({kv_width}, 0.5, seed + 6);
        weights.bo = random_normal({d}, 0.5, seed + 7);
    }
    return weights;
}

gqa::RopeScaling llama32_scaling() {
    return {.type = gqa::RopeScalingType::llama3,
            .factor = 32,
            .original_max_position_embeddings = 8192,
            .low_freq_factor = 1,
            .high_freq_factor = 4};
}

gqa::RopeScaling gpt_oss_yarn_scaling() {
    return {.type = gqa::RopeScalingType::yarn,
            .factor = 32,
            .original_max_position_embeddings = 4096,
            .beta_fast = 32,
            .beta_slow = 1,
            .truncate = false};
}

gqa::RopeScaling phi3_longrope_scaling(int pairs) {
    gqa::RopeScaling s{.type = gqa::RopeScalingType::longrope, .original_max_position_embeddings = 4096};
    for (int j = 0; j < pairs; ++j) s.short_factor.push_back(1.0 + 0.1 * j), s.long_factor.push_back(2.0 + j);
    s.max_position_embeddings = 131072;
    return s;
}

HostTensor<float> random_input(const gqa::Config &config, int batch, int seq_len, uint32_t seed) {
    return random_normal({batch, seq_len, config.embed_dim}, 1.0, seed);
}

ForwardOutput run_forward(const gqa::Config &config, const LayerWeights &weights, gqa::Backend backend,
                          const ForwardInput &input, bool record_pattern) {
    gqa::Attention layer(config, weights.view(), backend);
    layer.set_record_pattern(record_pattern);
    ForwardOutput output;
    output.out = layer.forward(input.x.view(), optional_view(input.mask), optional_view(input.input_pos));
    if (record_pattern) output.pattern = copy_of(layer.pattern());
    output.z = copy_of(layer.z());
    return output;
}

std::vector<float> copy_of(const gqa::TensorView<float> &view) {
    return {view.data, view.data + view.numel()};
}

double max_abs_diff(std::span<const float> got, std::span<const float> want) {
    double largest = 0;
    for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
        const double diff = std::abs(double(got[i]) - double(want[i]));
        if (std::isnan(diff) || diff > largest) largest = diff;
    }
    return largest;
}

testing::AssertionResult all_close(std::span<const float> got, std::span<const float> want, double atol, double rtol) {
    if (got.size() != want.size()) {
        return testing::AssertionFailure() << "size " << got.size() << ", expected " << want.size();
    }
    size_t outside = 0, first = 0;
    for (size_t i = 0; i < got.size(); ++i) {
        if (gqa_tools::tolerance_excess(got[i], want[i], atol, rtol) > 0) {
            if (outside++ == 0) first = i;
        }
    }
    if (outside == 0) return testing::AssertionSuccess();
    return testing::AssertionFailure() << outside << " of " << got.size() << " elements out of tolerance (max abs diff "
                                       << max_abs_diff(got, want) << "); first at " << first << ": got " << got[first]
                                       << ", want " << want[first];
}

testing::AssertionResult within_reduced_precision_error(std::span<const float> got,
                                                        std::span<const float> reference_reduced,
                                                        std::span<const float> exact) {
    if (gqa_tools::within_reduced_precision_rule(got, reference_reduced, exact)) return testing::AssertionSuccess();
    return testing::AssertionFailure() << "error " << max_abs_diff(got, exact) << " against the exact result; "
                                       << "the reference's own error in the type is "
                                       << max_abs_diff(reference_reduced, exact);
}

std::vector<gqa::Backend> runnable_backends() {
    std::vector<gqa::Backend> backends = gqa::available_backends();
    std::erase(backends, gqa::Backend::best);
    return backends;
}

std::vector<gqa::Backend> backends_under_test() {
    std::vector<gqa::Backend> backends = runnable_backends();
    std::erase(backends, gqa::Backend::reference);
    return backends;
}

std::string backend_test_name(const testing::TestParamInfo<gqa::Backend> &info) {
    return std::string(gqa::backend_name(info.param));
}

}  // namespace gqa_test
