// Attention sinks (gpt-oss): a logit per query head in every softmax denominator,
// the formula itself on one row, by hand. Every backend against the reference:
// test_model_features.cpp.
#include <gmock/gmock.h>

#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "test_util.h"

namespace {

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
