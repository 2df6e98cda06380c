// q/k RMS normalisation before RoPE (Qwen3, Gemma 3, OLMo 2): the attention
// weights of tiny layers worked out by hand, on every backend, and the configs and
// weights that must be refused. Every backend against the reference over a grid:
// test_model_features.cpp.
#include <gmock/gmock.h>

#include <cmath>
#include <string>
#include <vector>

#include "test_util.h"

namespace {

using testing::HasSubstr;

// q = k = v = x (identity projections), no RoPE, scale 1: the pattern shows the
// normalised q . k directly.
gqa::Config identity_config(int num_heads, int head_dim, gqa::QkNorm norm) {
    gqa::Config c = gqa_test::make_config(num_heads * head_dim, num_heads, num_heads, head_dim, 8);
    c.rope_style = gqa::RopeStyle::none;
    c.scale = 1.0;
    c.qk_norm = norm;
    c.qk_norm_eps = 1e-30;  // below fp32's resolution of these sums: the exact RMS
    return c;
}

// softmax(a, b)
std::vector<float> softmax2(double a, double b) {
    const double m = std::max(a, b), ea = std::exp(a - m), eb = std::exp(b - m);
    return {float(ea / (ea + eb)), float(eb / (ea + eb))};
}

// Tokens (3, 4) and (1, 0) through a layer with 2 values per token (as heads of
// `head_dim`) and norm weight `weight` for q and k: the attention weights of
// head 0's second query over the two keys, on `backend`.
std::vector<float> second_query_weights(gqa::QkNorm norm, int head_dim, const float (&weight)[2],
                                        gqa::Backend backend) {
    const gqa::Config c = identity_config(2 / head_dim, head_dim, norm);
    const float identity[] = {1, 0, 0, 1}, x[] = {3, 4, 1, 0};
    gqa::Weights w{{identity, {2, 2}}, {identity, {2, 2}}, {identity, {2, 2}}, {identity, {2, 2}}};
    const int64_t weight_size = norm == gqa::QkNorm::per_head ? head_dim : 2;
    w.q_norm = {weight, {weight_size}};
    w.k_norm = {weight, {weight_size}};
    gqa::Attention layer(c, w, backend);
    layer.set_record_pattern(true);
    layer.forward({x, {1, 2, 2}});
    const std::vector<float> pattern = gqa_test::copy_of(layer.pattern());  // [1, heads, 2, 2]
    return {pattern[2], pattern[3]};
}

// One head of width 2 with weight (2, 1): the tokens normalise to
// (6, 4) * sqrt(2) / 5 and (2 sqrt(2), 0), so the second query scores 24/5
// against the first key and 8 against its own.
TEST(QkNorm, PerHeadNormalisesEachHeadThenWeighs) {
    for (gqa::Backend backend : gqa_test::runnable_backends()) {
        EXPECT_TRUE(gqa_test::all_close(second_query_weights(gqa::QkNorm::per_head, 2, {2, 1}, backend),
                                        softmax2(24.0 / 5, 8.0)))
            << gqa::backend_name(backend);
    }
}

// Two heads of width 1: over all heads, token (3, 4) has RMS 5 / sqrt(2) and
// (1, 0) has 1 / sqrt(2), so head 0's second query scores
// sqrt(2) * 3 sqrt(2) / 5 = 6/5 and 2. Per head, each value would normalise to
// 1 and both scores would be 1.
TEST(QkNorm, AllHeadsShareOneRms) {
    for (gqa::Backend backend : gqa_test::runnable_backends()) {
        EXPECT_TRUE(gqa_test::all_close(second_query_weights(gqa::QkNorm::all_heads, 1, {1, 1}, backend),
                                        softmax2(6.0 / 5, 2.0)))
            << gqa::backend_name(backend);
    }
}

std::string construction_error(const gqa::Config &c, const gqa::Weights &w) {
    return gqa_test::error_of([&] { gqa::Attention layer(c, w, gqa::Backend::reference); });
}

TEST(QkNorm, BadConfigsAndWeightsAreErrorsNamingThem) {
    gqa::Config c = gqa_test::make_config(64, 4, 2, 16);
    const auto projections = gqa_test::random_weights(c, false, 1);
    const auto per_head = gqa_test::random_uniform({16}, 0.5, 1.5, 2);
    const auto all_q = gqa_test::random_uniform({64}, 0.5, 1.5, 3);
    gqa::Weights w = projections.view();
    w.q_norm = per_head.view();
    w.k_norm = per_head.view();
    EXPECT_THAT(construction_error(c, w), HasSubstr("q_norm / k_norm are given, but config.qk_norm is none"));
    c.qk_norm = gqa::QkNorm::per_head;
    c.qk_norm_eps = 0;
    EXPECT_THAT(construction_error(c, w), HasSubstr("qk_norm_eps is 0; expected > 0"));
    c.qk_norm_eps = 1e-6;
    c.qk_norm = gqa::QkNorm(7);
    EXPECT_THAT(construction_error(c, w), HasSubstr("qk_norm is 7"));
    c.qk_norm = gqa::QkNorm::all_heads;
    EXPECT_THAT(construction_error(c, w), HasSubstr("q_norm has shape [16]; expected [64]"));
    w.q_norm = all_q.view();
    EXPECT_THAT(construction_error(c, w), HasSubstr("k_norm has shape [16]; expected [32]"));
    c.qk_norm = gqa::QkNorm::per_head;
    w.q_norm = {};
    EXPECT_THAT(construction_error(c, w), HasSubstr("q_norm has no data"));
}

}  // namespace
