// RoPE scaling as transformers computes it (linear, llama3, yarn, longrope, your
// own frequencies): the frequencies against numbers worked out from the
// definitions, and the configs that must be refused. Every backend against the
// reference with each scaling: test_model_features.cpp.
#include <gmock/gmock.h>

#include <cmath>
#include <numbers>
#include <string>
#include <vector>

#include "backend.h"
#include "test_util.h"

namespace {

using testing::HasSubstr;

std::vector<double> unscaled(double base, int rotary_dim) {
    std::vector<double> inv(rotary_dim / 2);
    for (int j = 0; j < rotary_dim / 2; ++j) inv[j] = std::pow(base, -2.0 * j / rotary_dim);
    return inv;
}

gqa::Config rotate_half_config(int head_dim, double base) {
    gqa::Config c = gqa_test::make_config(64, 4, 2, head_dim, 256);
    c.rope_style = gqa::RopeStyle::rotate_half;
    c.rope_base = base;
    return c;
}

// Llama-3.2-1B (head_dim 64, base 500000): pairs whose wavelength is under
// 8192 / 4 keep their frequency, over 8192 / 1 are divided by 32, and the band
// between blends; 17 of the 32 pairs change.
TEST(RopeScaling, Llama3ChangesTheLowFrequencyBand) {
    gqa::Config c = rotate_half_config(64, 500000);
    c.rope_scaling = gqa_test::llama32_scaling();
    const auto f = gqa::detail::rope_frequencies(c);
    const auto plain = unscaled(500000, 64);
    int changed = 0;
    for (int j = 0; j < 32; ++j) {
        const double wavelength = 2 * std::numbers::pi / plain[j];
        if (wavelength < 8192.0 / 4) {
            EXPECT_EQ(f.inv_freq[j], plain[j]) << "pair " << j;
        } else if (wavelength > 8192.0) {
            EXPECT_DOUBLE_EQ(f.inv_freq[j], plain[j] / 32) << "pair " << j;
        } else {
            EXPECT_LT(f.inv_freq[j], plain[j]);
            EXPECT_GT(f.inv_freq[j], plain[j] / 32);
        }
        changed += f.inv_freq[j] != plain[j];
    }
    EXPECT_EQ(changed, 17);
    EXPECT_EQ(f.attention_factor, 1.0);
}

// gpt-oss (factor 32, L 4096, truncate false, base 150000): the attention factor
// is 0.1 ln 32 + 1, the first pairs extrapolate (kept), the last interpolate (/ 32).
TEST(RopeScaling, YarnRampsAndScalesCosAndSin) {
    gqa::Config c = rotate_half_config(64, 150000);
    c.rope_scaling = gqa_test::gpt_oss_yarn_scaling();
    const auto f = gqa::detail::rope_frequencies(c);
    const auto plain = unscaled(150000, 64);
    EXPECT_NEAR(f.attention_factor, 0.1 * std::log(32.0) + 1, 1e-15);
    EXPECT_NEAR(f.attention_factor, 1.3466, 1e-4);
    EXPECT_DOUBLE_EQ(f.inv_freq[0], plain[0]);
    EXPECT_DOUBLE_EQ(f.inv_freq[31], plain[31] / 32);
    for (int j = 1; j < 32; ++j) EXPECT_LE(f.inv_freq[j] / plain[j], f.inv_freq[j - 1] / plain[j - 1] + 1e-15);

    c.rope_scaling.attention_factor = 1.25;  // given: replaces the derived one
    EXPECT_EQ(gqa::detail::rope_frequencies(c).attention_factor, 1.25);
    c.rope_scaling.attention_factor = 0, c.rope_scaling.mscale = 2, c.rope_scaling.mscale_all_dim = 1;
    EXPECT_NEAR(gqa::detail::rope_frequencies(c).attention_factor,
                (0.2 * std::log(32.0) + 1) / (0.1 * std::log(32.0) + 1), 1e-15);
}

TEST(RopeScaling, LinearDividesEveryFrequency) {
    gqa::Config c = rotate_half_config(32, 10000);
    c.rope_scaling = {.type = gqa::RopeScalingType::linear, .factor = 8};
    const auto f = gqa::detail::rope_frequencies(c);
    const auto plain = unscaled(10000, 32);
    for (int j = 0; j < 16; ++j) EXPECT_DOUBLE_EQ(f.inv_freq[j], plain[j] / 8);
}

// longrope: short factors while the layer stays within L, long ones past it; the
// attention factor sqrt(1 + ln(M / L) / ln L) either way.
TEST(RopeScaling, LongropePicksItsFactorsByTheLayersLength) {
    gqa::Config c = rotate_half_config(32, 10000);
    c.rotary_dim = 24;
    c.rope_scaling = gqa_test::phi3_longrope_scaling(12);
    const auto plain = unscaled(10000, 24);
    for (int max_seq_len : {4096, 4097}) {
        c.max_seq_len = max_seq_len;
        const auto f = gqa::detail::rope_frequencies(c);
        const auto &factors = max_seq_len > 4096 ? c.rope_scaling.long_factor : c.rope_scaling.short_factor;
        for (int j = 0; j < 12; ++j) EXPECT_DOUBLE_EQ(f.inv_freq[j], plain[j] / factors[j]);
        EXPECT_DOUBLE_EQ(f.attention_factor, std::sqrt(1 + std::log(32.0) / std::log(4096.0)));
    }
}

// Frequencies of your own replace the base's: base^(-2j/R) given by hand is the
// layer with that base.
TEST(RopeScaling, OwnFrequenciesAreUsedAsGiven) {
    gqa::Config own = rotate_half_config(32, 10000), base = rotate_half_config(32, 1000);
    own.rope_inv_freq = unscaled(1000, 32);
    const auto weights = gqa_test::random_weights(own, true, 3);
    const auto x = gqa_test::random_input(own, 1, 40, 4);
    for (gqa::Backend backend : gqa_test::runnable_backends()) {
        const auto a = gqa_test::run_forward(own, weights, backend, {x}, false);
        const auto b = gqa_test::run_forward(base, weights, backend, {x}, false);
        EXPECT_EQ(a.out, b.out) << gqa::backend_name(backend);
    }
}

std::string construction_error(const gqa::Config &config) {
    const auto weights = gqa_test::random_weights(config, false, 1);
    return gqa_test::error_of([&] { gqa::Attention layer(config, weights.view(), gqa::Backend::reference); });
}

TEST(RopeScaling, BadScalingsAreErrorsNamingTheField) {
    gqa::Config c = rotate_half_config(32, 10000);
    c.rope_scaling = {.type = gqa::RopeScalingType::linear, .factor = 0};
    EXPECT_THAT(construction_error(c), HasSubstr("rope_scaling.factor is 0"));
    c.rope_scaling = gqa_test::llama32_scaling();
    c.rope_scaling.high_freq_factor = 0.5;
    EXPECT_THAT(construction_error(c), HasSubstr("rope_scaling.high_freq_factor is 0.5"));
    c.rope_scaling = gqa_test::gpt_oss_yarn_scaling();
    c.rope_scaling.original_max_position_embeddings = 0;
    EXPECT_THAT(construction_error(c), HasSubstr("rope_scaling.original_max_position_embeddings is 0"));
    c.rope_scaling = gqa_test::phi3_longrope_scaling(15);  // 16 pairs at rotary_dim 32
    EXPECT_THAT(construction_error(c), HasSubstr("rope_scaling.short_factor holds 15 values"));
    c.rope_scaling = gqa_test::phi3_longrope_scaling(16);
    c.rope_scaling.long_factor[3] = -1;
    EXPECT_THAT(construction_error(c), HasSubstr("rope_scaling.long_factor[3] is -1"));
    c.rope_scaling = {.type = gqa::RopeScalingType(9)};
    EXPECT_THAT(construction_error(c), HasSubstr("rope_scaling.type is 9"));
    c.rope_scaling = {};
    c.rope_inv_freq = {1.0, 0.5};
    EXPECT_THAT(construction_error(c), HasSubstr("rope_inv_freq holds 2 values"));
    c.rope_inv_freq = {};
    c.rope_scaling = {.type = gqa::RopeScalingType::linear, .factor = 2};
    c.rope_fp32_angles = true;
    EXPECT_THAT(construction_error(c), HasSubstr("rope_fp32_angles"));
}

}  // namespace
