// The features real checkpoints use (q/k norms, sinks, RoPE scalings, partial
// rotary), each on every backend against the reference over a grid: head_dim 64,
// 80 and 128 with a grouped, a multi-head and a multi-query layer; an odd-length
// prefill far into the RoPE table, decode steps, then a masked call in which one
// query sees no key; on an fp32 and an fp16 cache. The formulas themselves are
// checked by hand in test_qk_norm.cpp, test_sinks.cpp and test_rope_scaling.cpp.
#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <vector>

#include "test_util.h"

namespace {

enum class Feature { qk_norm_per_head, qk_norm_all_heads, sinks, linear, llama3, yarn, longrope_partial };

const char *feature_name(Feature f) {
    switch (f) {
    case Feature::qk_norm_per_head: return "qk_norm_per_head";
    case Feature::qk_norm_all_heads: return "qk_norm_all_heads";
    case Feature::sinks: return "sinks";
    case Feature::linear: return "rope_linear";
    case Feature::llama3: return "rope_llama3";
    case Feature::yarn: return "rope_yarn";
    case Feature::longrope_partial: return "rope_longrope_partial";
    }
    return "?";
}

struct Shape {
    int head_dim, num_heads, num_kv_heads;
};

const Shape kShapes[] = {{64, 8, 2}, {80, 4, 4}, {128, 8, 1}};

// A layer with `feature` and its weights (the projections, plus the feature's own).
struct FeatureLayer {
    gqa::Config config;
    gqa_test::LayerWeights projections;
    gqa_test::HostTensor<float> sinks, q_norm, k_norm;

    gqa::Weights weights() const {
        gqa::Weights w = projections.view();
        if (!sinks.values.empty()) w.sinks = sinks.view();
        if (!q_norm.values.empty()) w.q_norm = q_norm.view(), w.k_norm = k_norm.view();
        return w;
    }
};

FeatureLayer make_layer(Feature feature, const Shape &shape) {
    FeatureLayer l;
    gqa::Config &c = l.config;
    c = gqa_test::make_config(64, shape.num_heads, shape.num_kv_heads, shape.head_dim, 8192);
    c.rope_style = gqa::RopeStyle::rotate_half;
    c.rope_base = 500000;
    c.window = 29;
    const int q = shape.num_heads * shape.head_dim, kv = shape.num_kv_heads * shape.head_dim;
    switch (feature) {
    case Feature::qk_norm_per_head:
    case Feature::qk_norm_all_heads: {
        const bool per_head = feature == Feature::qk_norm_per_head;
        c.qk_norm = per_head ? gqa::QkNorm::per_head : gqa::QkNorm::all_heads;
        c.qk_norm_eps = 1e-5;
        // Around 1, as trained norms are; far from it would only rescale the scores.
        l.q_norm = gqa_test::random_uniform({per_head ? shape.head_dim : q}, 0.5, 1.5, 71);
        l.k_norm = gqa_test::random_uniform({per_head ? shape.head_dim : kv}, 0.5, 1.5, 72);
        break;
    }
    case Feature::sinks: l.sinks = gqa_test::random_normal({shape.num_heads}, 2.0, 73); break;
    case Feature::linear: c.rope_scaling = {.type = gqa::RopeScalingType::linear, .factor = 8}; break;
    case Feature::llama3: c.rope_scaling = gqa_test::llama32_scaling(); break;
    case Feature::yarn: c.rope_scaling = gqa_test::gpt_oss_yarn_scaling(); break;
    case Feature::longrope_partial:
        c.rotary_dim = shape.head_dim / 2;
        c.rope_scaling = gqa_test::phi3_longrope_scaling(c.rotary_dim / 2);
        break;
    }
    l.projections = gqa_test::random_weights(c, true, 70);
    return l;
}

// The outputs of every call of the sequence, on `backend` with a cache of `type`.
std::vector<std::vector<float>> run_sequence(const FeatureLayer &l, gqa::Backend backend, gqa::CacheType type) {
    const gqa::Config &c = l.config;
    gqa::Attention layer(c, l.weights(), backend);
    // Positions far into the table, where the scalings differ most; a cache's
    // positions stay below its length.
    int next_position = 6000;
    layer.setup_cache(2, next_position + 64, type);
    std::vector<std::vector<float>> outs;
    auto positions_for = [&](int s) {
        std::vector<int32_t> positions(s);
        for (int &p : positions) p = next_position++;
        return positions;
    };
    for (int step = 0; step < 4; ++step) {
        const int s = step == 0 ? 37 : 1;
        std::vector<int32_t> positions = positions_for(s);
        outs.push_back(layer.forward(gqa_test::random_input(c, 2, s, 80 + step).view(), std::nullopt,
                                     gqa::TensorView<int32_t>{positions.data(), {s}}));
    }
    // Row 0's first query may see no key: it gives 0, sinks and norms or not.
    const int kv_len = layer.size() + 2;
    std::vector<uint8_t> mask(2 * 2 * kv_len, 1);
    for (int t = 0; t < kv_len; ++t) mask[t] = 0;
    std::vector<int32_t> positions = positions_for(2);
    outs.push_back(layer.forward(gqa_test::random_input(c, 2, 2, 90).view(),
                                 gqa::TensorView<uint8_t>{mask.data(), {2, 2, kv_len}},
                                 gqa::TensorView<int32_t>{positions.data(), {2}}));
    const std::vector<float> z = gqa_test::copy_of(layer.z());
    for (int e = 0; e < c.num_heads * c.head_dim; ++e) EXPECT_EQ(z[e], 0.f) << "z[" << e << "]";
    return outs;
}

using Param = std::tuple<gqa::Backend, Feature, int, gqa::CacheType>;

class ModelFeature : public testing::TestWithParam<Param> {};

TEST_P(ModelFeature, MatchesTheReference) {
    const auto [backend, feature, shape_index, type] = GetParam();
    const FeatureLayer layer = make_layer(feature, kShapes[shape_index]);
    const auto got = run_sequence(layer, backend, type);
    const auto want = run_sequence(layer, gqa::Backend::reference, type);
    // The exact result, for the reduced-precision rule: the reference on an fp32 cache.
    const auto exact = type != gqa::CacheType::f32 ? run_sequence(layer, gqa::Backend::reference, gqa::CacheType::f32)
                                                   : want;
    ASSERT_EQ(got.size(), want.size());
    for (size_t n = 0; n < got.size(); ++n) {
        if (type == gqa::CacheType::f32) {
            EXPECT_TRUE(gqa_test::all_close(got[n], want[n])) << "call " << n;
        } else {
            EXPECT_TRUE(gqa_test::within_reduced_precision_error(got[n], want[n], exact[n])) << "call " << n;
        }
    }
}

std::string param_name(const testing::TestParamInfo<Param> &info) {
    const auto [backend, feature, shape_index, type] = info.param;
    return std::string(gqa::backend_name(backend)) + "_" + feature_name(feature) + "_hd" +
           std::to_string(kShapes[shape_index].head_dim) + "_" + std::string(gqa::cache_type_name(type));
}

INSTANTIATE_TEST_SUITE_P(
    AllBackends, ModelFeature,
    testing::Combine(testing::ValuesIn(gqa_test::backends_under_test()),
                     testing::Values(Feature::qk_norm_per_head, Feature::qk_norm_all_heads, Feature::sinks,
                                     Feature::linear, Feature::llama3, Feature::yarn, Feature::longrope_partial),
                     testing::Range(0, int(std::size(kShapes))),
                     testing::Values(gqa::CacheType::f32, gqa::CacheType::f16, gqa::CacheType::int8)),
    param_name);

}  // namespace
