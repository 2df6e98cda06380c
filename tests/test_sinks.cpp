// Attention sinks (gpt-oss): a logit per query head in every softmax denominator.
// Every backend against the reference (prefill then decode on a cache of each
// type, with a window, a mask and a row that sees no key), and the formula
// itself on one row, by hand.
#include <gmock/gmock.h>

#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "test_util.h"

namespace {

gqa_test::HostTensor<float> sinks_for(const gqa::Config &c, uint32_t seed) {
    return gqa_test::random_normal({c.num_heads}, 2.0, seed);
}

class Sinks : public testing::TestWithParam<std::tuple<gqa::Backend, gqa::CacheType>> {};

TEST_P(Sinks, MatchTheReference) {
    const auto [backend, type] = GetParam();
    gqa::Config c = gqa_test::make_config(64, 8, 2, 16, 256);
    c.window = 9;
    const auto weights = gqa_test::random_weights(c, true, 51);
    const auto sinks = sinks_for(c, 52);
    gqa::Weights with_sinks = weights.view();
    with_sinks.sinks = sinks.view();
    std::vector<std::vector<float>> outs[3];
    const gqa::Backend runs[] = {gqa::Backend::reference, backend, gqa::Backend::reference};
    for (int run = 0; run < 3; ++run) {
        // Run 2: the reference with an fp32 cache, the exact result for the fp16 rule.
        gqa::Attention layer(c, with_sinks, runs[run]);
        layer.setup_cache(2, 64, run == 2 ? gqa::CacheType::f32 : type);
        outs[run].push_back(layer.forward(gqa_test::random_input(c, 2, 30, 53).view()));
        for (int step = 0; step < 3; ++step) {
            outs[run].push_back(layer.forward(gqa_test::random_input(c, 2, 1, 54 + step).view()));
        }
        // A masked call in which row 0's first query sees no key: it gives 0.
        std::vector<uint8_t> mask(2 * 2 * 35, 1);
        for (int t = 0; t < 35; ++t) mask[t] = 0;
        outs[run].push_back(layer.forward(gqa_test::random_input(c, 2, 2, 58).view(),
                                          gqa::TensorView<uint8_t>{mask.data(), {2, 2, 35}}));
        const std::vector<float> z = gqa_test::copy_of(layer.z());
        for (int e = 0; e < c.num_heads * c.head_dim; ++e) EXPECT_EQ(z[e], 0.f) << "run " << run << " z[" << e << "]";
    }
    for (size_t n = 0; n < outs[0].size(); ++n) {
        if (type == gqa::CacheType::f32) {
            EXPECT_TRUE(gqa_test::all_close(outs[1][n], outs[0][n])) << "call " << n;
        } else {
            EXPECT_TRUE(gqa_test::within_half_cache_error(outs[1][n], outs[0][n], outs[2][n])) << "call " << n;
        }
    }
}

std::string sinks_name(const testing::TestParamInfo<Sinks::ParamType> &info) {
    return std::string(gqa::backend_name(std::get<0>(info.param))) +
           (std::get<1>(info.param) == gqa::CacheType::f16 ? "_f16" : "_f32");
}

INSTANTIATE_TEST_SUITE_P(AllBackends, Sinks,
                         testing::Combine(testing::ValuesIn(gqa_test::runnable_backends()),
                                          testing::Values(gqa::CacheType::f32, gqa::CacheType::f16)),
                         sinks_name);

// One head, two keys, no RoPE: the pattern is exp(s_t - m) / (sum + exp(sink - m)),
// and its row sums to 1 - the sink's share.
TEST(Sinks, EnterTheDenominatorOnce) {
    gqa::Config c = gqa_test::make_config(2, 1, 1, 2, 8);
    c.rope_style = gqa::RopeStyle::none;
    c.scale = 1.0;
    const float identity[] = {1, 0, 0, 1}, sink = 0.5f;
    gqa::Weights w{{identity, {2, 2}}, {identity, {2, 2}}, {identity, {2, 2}}, {identity, {2, 2}}};
    w.sinks = {&sink, {1}};
    const float x[] = {1.0f, 0.0f, 0.0f, 2.0f};  // q = k = v = x
    for (gqa::Backend backend : gqa_test::runnable_backends()) {
        gqa::Attention layer(c, w, backend);
        layer.set_record_pattern(true);
        layer.forward({x, {1, 2, 2}});
        const std::vector<float> p = gqa_test::copy_of(layer.pattern());  // [1, 1, 2, 2]
        // Query 1 sees keys 0 and 1: scores 0 and 4.
        const double denominator = std::exp(0.0) + std::exp(4.0) + std::exp(0.5);
        EXPECT_NEAR(p[2], std::exp(0.0) / denominator, 1e-6) << gqa::backend_name(backend);
        EXPECT_NEAR(p[3], std::exp(4.0) / denominator, 1e-6) << gqa::backend_name(backend);
        // Query 0 sees key 0 only: score 1.
        EXPECT_NEAR(p[0], std::exp(1.0) / (std::exp(1.0) + std::exp(0.5)), 1e-6) << gqa::backend_name(backend);
    }
}

}  // namespace
