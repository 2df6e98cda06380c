// Projection weights kept in bf16 or f16: the bfloat16 conversions, then every
// backend against the reference computing from the same rounded weights, and the
// errors of weights the layer cannot keep.
#include <gmock/gmock.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "test_util.h"

namespace {

using gqa::bfloat16_to_float;
using gqa::CacheType;
using gqa::float_to_bfloat16;
using gqa::WeightType;
using testing::HasSubstr;

TEST(Bfloat16Conversion, KnownValues) {
    EXPECT_EQ(float_to_bfloat16(1.0f), 0x3f80);
    EXPECT_EQ(float_to_bfloat16(-2.0f), 0xc000);
    EXPECT_EQ(float_to_bfloat16(0.1f), 0x3dcd);                         // 0x3dcccccd rounds up
    EXPECT_EQ(float_to_bfloat16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);  // tie: even mantissa stays
    EXPECT_EQ(float_to_bfloat16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);  // tie: odd rounds up
    EXPECT_EQ(float_to_bfloat16(std::numeric_limits<float>::max()), 0x7f80);  // rounds past the largest bf16
    EXPECT_EQ(float_to_bfloat16(-std::numeric_limits<float>::infinity()), 0xff80);
    EXPECT_EQ(float_to_bfloat16(std::numeric_limits<float>::denorm_min()), 0x0000);
    EXPECT_TRUE(std::isnan(bfloat16_to_float(float_to_bfloat16(std::numeric_limits<float>::quiet_NaN()))));
    // A signalling NaN whose payload sits in the dropped bits stays a NaN.
    uint32_t signalling = 0x7f800001u;
    float nan;
    std::memcpy(&nan, &signalling, sizeof nan);
    EXPECT_TRUE(std::isnan(bfloat16_to_float(float_to_bfloat16(nan))));
    EXPECT_EQ(bfloat16_to_float(0x4049), 3.140625f);
}

// Against the definition: the nearer of the two bf16 values around x (computed in
// double), ties to the even one, over random bit patterns of every magnitude.
TEST(Bfloat16Conversion, RoundsToTheNearestEven) {
    std::mt19937 rng(11);
    for (int n = 0; n < 1000000; ++n) {
        const uint32_t bits = rng();
        float value;
        std::memcpy(&value, &bits, sizeof value);
        if (!std::isfinite(value)) continue;
        const uint16_t below = uint16_t(bits >> 16), above = uint16_t(below + 1);  // toward zero / away from it
        const double low = std::fabs(double(bfloat16_to_float(below)));
        const double high = (above & 0x7f80) == 0x7f80 ? std::ldexp(1.0, 128) : std::fabs(double(bfloat16_to_float(above)));
        const double magnitude = std::fabs(double(value));
        const uint16_t want = magnitude - low < high - magnitude   ? below
                              : magnitude - low > high - magnitude ? above
                              : (below & 1) == 0                    ? below
                                                                    : above;
        ASSERT_EQ(float_to_bfloat16(value), want) << value;
    }
}

// Layers of each weight type against the reference with the same type: the
// reference widens the same rounded weights and works in double, so the fp32
// tolerance holds. A prefill then decode steps, on an f32 and an f16 cache.
class WeightTypes : public testing::TestWithParam<std::tuple<gqa::Backend, WeightType>> {
protected:
    static constexpr int batch = 2, prefill = 19, decode_steps = 2, cache_len = 32;

    static std::vector<float> run(const gqa::Config &config, const gqa::Weights &weights, gqa::Backend backend,
                                  CacheType cache) {
        gqa::Attention layer(config, weights, backend);
        layer.setup_cache(batch, cache_len, cache);
        std::vector<float> outputs = layer.forward(gqa_test::random_input(config, batch, prefill, 41).view());
        for (int step = 0; step < decode_steps; ++step) {
            const std::vector<float> out = layer.forward(gqa_test::random_input(config, batch, 1, 42 + step).view());
            outputs.insert(outputs.end(), out.begin(), out.end());
        }
        return outputs;
    }
};

TEST_P(WeightTypes, MatchTheReferenceOnTheSameRoundedWeights) {
    const auto [backend, type] = GetParam();
    struct Shape {
        const char *name;
        int embed_dim, num_heads, num_kv_heads, head_dim;
    };
    for (const Shape &shape : {Shape{"GQA", 128, 8, 2, 32}, Shape{"MHA", 96, 4, 4, 24}, Shape{"MQA", 64, 4, 1, 16}}) {
        SCOPED_TRACE(shape.name);
        gqa::Config config = gqa_test::make_config(shape.embed_dim, shape.num_heads, shape.num_kv_heads,
                                                   shape.head_dim);
        const gqa_test::LayerWeights weights = gqa_test::random_weights(config, true, 43);
        const std::vector<float> full = run(config, weights.view(), gqa::Backend::reference, CacheType::f32);
        config.weight_type = type;
        for (CacheType cache : {CacheType::f32, CacheType::f16}) {
            SCOPED_TRACE(cache == CacheType::f32 ? "f32 cache" : "f16 cache");
            const std::vector<float> want = run(config, weights.view(), gqa::Backend::reference, cache);
            const std::vector<float> got = run(config, weights.view(), backend, cache);
            if (cache == CacheType::f32) {
                EXPECT_TRUE(gqa_test::all_close(got, want));
                // The rounding of the weights must show against fp32 weights, or the
                // comparison above could not tell whether the backend rounded them.
                EXPECT_FALSE(gqa_test::all_close(want, full));
            } else {
                const std::vector<float> exact = run(config, weights.view(), gqa::Backend::reference, CacheType::f32);
                EXPECT_TRUE(gqa_test::within_half_cache_error(got, want, exact));
            }
        }
    }
}

// The bits of a checkpoint, given as they are, build the same layer as fp32
// weights the layer converts; and the layer keeps the type either way.
TEST_P(WeightTypes, BitsGivenAsTheyAreEqualConvertedWeights) {
    const auto [backend, type] = GetParam();
    gqa::Config config = gqa_test::make_config(64, 4, 2, 16);
    const gqa_test::LayerWeights weights = gqa_test::random_weights(config, false, 47);
    auto to_bits = [type](const gqa_test::HostTensor<float> &t) {
        std::vector<uint16_t> bits(t.values.size());
        for (size_t i = 0; i < bits.size(); ++i) {
            bits[i] = type == WeightType::bf16 ? float_to_bfloat16(t.values[i]) : gqa::float_to_half(t.values[i]);
        }
        return bits;
    };
    const std::vector<uint16_t> wq = to_bits(weights.wq), wk = to_bits(weights.wk), wv = to_bits(weights.wv),
                                wo = to_bits(weights.wo);
    gqa::Weights as_bits;
    as_bits.wq = {wq.data(), weights.wq.shape, type}, as_bits.wk = {wk.data(), weights.wk.shape, type};
    as_bits.wv = {wv.data(), weights.wv.shape, type}, as_bits.wo = {wo.data(), weights.wo.shape, type};

    const gqa::Attention kept(config, as_bits, backend);
    EXPECT_EQ(kept.weight_type(), type);
    const std::vector<float> given = run(config, as_bits, backend, CacheType::f32);
    config.weight_type = type;
    EXPECT_EQ(run(config, weights.view(), backend, CacheType::f32), given);
    // And back to fp32: widening is exact, so the fp32 layer computes the same.
    config.weight_type = WeightType::f32;
    const gqa::Attention widened(config, as_bits, backend);
    EXPECT_EQ(widened.weight_type(), WeightType::f32);
    EXPECT_TRUE(gqa_test::all_close(run(config, as_bits, backend, CacheType::f32), given));
}

std::vector<std::tuple<gqa::Backend, WeightType>> backends_and_types() {
    std::vector<std::tuple<gqa::Backend, WeightType>> cases;
    for (gqa::Backend backend : gqa_test::backends_under_test()) {
        for (WeightType type : {WeightType::bf16, WeightType::f16}) cases.emplace_back(backend, type);
    }
    return cases;
}

INSTANTIATE_TEST_SUITE_P(AllBackends, WeightTypes, testing::ValuesIn(backends_and_types()),
                         [](const testing::TestParamInfo<std::tuple<gqa::Backend, WeightType>> &info) {
                             return std::string(gqa::backend_name(std::get<0>(info.param))) + "_" +
                                    std::string(gqa::weight_type_name(std::get<1>(info.param)));
                         });

TEST(WeightTypeErrors, MixedTypesOverflowAndUnknownTypes) {
    gqa::Config config = gqa_test::make_config(32, 2, 1, 16);
    gqa_test::LayerWeights weights = gqa_test::random_weights(config, false, 53);
    std::vector<uint16_t> wo(weights.wo.values.size());
    for (size_t i = 0; i < wo.size(); ++i) wo[i] = float_to_bfloat16(weights.wo.values[i]);
    gqa::Weights mixed = weights.view();
    mixed.wo = {wo.data(), weights.wo.shape, WeightType::bf16};
    auto build = [&](const gqa::Config &c, const gqa::Weights &w) {
        return gqa_test::error_of([&] { gqa::Attention(c, w, gqa::Backend::reference); });
    };
    EXPECT_THAT(build(config, mixed), HasSubstr("wo is bf16 but wq is f32"));
    config.weight_type = WeightType::f32;
    EXPECT_EQ(build(config, mixed), "no error");  // converted to one type

    weights.wk.values[1 * 32 + 5] = 1e6f;  // beyond fp16's 65504, well inside bf16's range
    config.weight_type = WeightType::f16;
    EXPECT_THAT(build(config, weights.view()), HasSubstr("wk[1, 5] is 1e+06, which overflows f16"));
    config.weight_type = WeightType::bf16;
    EXPECT_EQ(build(config, weights.view()), "no error");

    config.weight_type = WeightType(7);
    EXPECT_THAT(build(config, weights.view()), HasSubstr("config.weight_type is 7"));
    config.weight_type.reset();
    gqa::Weights unknown = weights.view();
    for (gqa::WeightView *w : {&unknown.wq, &unknown.wk, &unknown.wv, &unknown.wo}) w->type = WeightType(9);
    EXPECT_THAT(build(config, unknown), HasSubstr("wq has type 9"));

    EXPECT_EQ(gqa::weight_type_from_name("bf16"), WeightType::bf16);
    EXPECT_THAT(gqa_test::error_of([] { gqa::weight_type_from_name("int4"); }), HasSubstr("'int4'"));
}

}  // namespace
