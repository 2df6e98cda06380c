// Projection weights kept in bf16, f16 or int8: the bfloat16 conversions, then every
// backend against the reference computing from the same rounded weights, and the
// errors of weights the layer cannot keep.
#include <gmock/gmock.h>

#include <algorithm>
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
// tolerance holds. A prefill then decode steps, then a masked call in which one
// query sees no key, on a cache of each type.
class WeightTypes : public testing::TestWithParam<std::tuple<gqa::Backend, WeightType>> {
protected:
    static constexpr int batch = 2, prefill = 19, decode_steps = 2, masked_tokens = 2, cache_len = 32;

    static std::vector<float> run(const gqa::Config &config, const gqa::Weights &weights, gqa::Backend backend,
                                  CacheType cache) {
        gqa::Attention layer(config, weights, backend);
        layer.setup_cache(batch, cache_len, cache);
        std::vector<float> outputs = layer.forward(gqa_test::random_input(config, batch, prefill, 41).view());
        for (int step = 0; step < decode_steps; ++step) {
            const std::vector<float> out = layer.forward(gqa_test::random_input(config, batch, 1, 42 + step).view());
            outputs.insert(outputs.end(), out.begin(), out.end());
        }
        // Batch row 0's first query sees no key: its z is exactly 0.
        const int kv_len = layer.size() + masked_tokens;
        std::vector<uint8_t> mask(size_t(batch) * masked_tokens * kv_len, 1);
        std::fill(mask.begin(), mask.begin() + kv_len, uint8_t(0));
        const std::vector<float> out =
            layer.forward(gqa_test::random_input(config, batch, masked_tokens, 44).view(),
                          gqa::TensorView<uint8_t>{mask.data(), {batch, masked_tokens, kv_len}});
        outputs.insert(outputs.end(), out.begin(), out.end());
        const std::vector<float> z = gqa_test::copy_of(layer.z());
        for (int e = 0; e < config.num_heads * config.head_dim; ++e) EXPECT_EQ(z[e], 0.f) << "z[" << e << "]";
        return outputs;
    }
};

TEST_P(WeightTypes, MatchTheReferenceOnTheSameRoundedWeights) {
    const auto [backend, type] = GetParam();
    struct Shape {
        const char *name;
        int embed_dim, num_heads, num_kv_heads, head_dim;
        std::optional<int> window;  // a sliding window shorter than the prefill
    };
    for (const Shape &shape : {Shape{"GQA", 128, 8, 2, 32, 11}, Shape{"MHA", 96, 4, 4, 24, std::nullopt},
                               Shape{"MQA", 64, 4, 1, 16, 5}}) {
        SCOPED_TRACE(shape.name);
        gqa::Config config = gqa_test::make_config(shape.embed_dim, shape.num_heads, shape.num_kv_heads,
                                                   shape.head_dim);
        config.window = shape.window;
        const gqa_test::LayerWeights weights = gqa_test::random_weights(config, true, 43);
        const std::vector<float> full = run(config, weights.view(), gqa::Backend::reference, CacheType::f32);
        config.weight_type = type;
        for (CacheType cache : {CacheType::f32, CacheType::f16, CacheType::bf16, CacheType::int8}) {
            SCOPED_TRACE(std::string(gqa::cache_type_name(cache)) + " cache");
            const std::vector<float> want = run(config, weights.view(), gqa::Backend::reference, cache);
            const std::vector<float> got = run(config, weights.view(), backend, cache);
            if (cache == CacheType::f32) {
                EXPECT_TRUE(gqa_test::all_close(got, want));
                // The rounding of the weights must show against fp32 weights, or the
                // comparison above could not tell whether the backend rounded them;
                // so must the window, against no window.
                EXPECT_FALSE(gqa_test::all_close(want, full));
                if (shape.window) {
                    gqa::Config unwindowed = config;
                    unwindowed.window.reset();
                    EXPECT_FALSE(gqa_test::all_close(want, run(unwindowed, weights.view(), gqa::Backend::reference, cache)));
                }
            } else {
                const std::vector<float> exact = run(config, weights.view(), gqa::Backend::reference, CacheType::f32);
                EXPECT_TRUE(gqa_test::within_reduced_precision_error(got, want, exact));
            }
        }
    }
}

// A weight in `type`, made here from fp32 values by the definitions in
// attention.hpp (not by the library's converter): 16-bit bits, or int8 values with
// their group scales.
struct TypedWeight {
    std::vector<uint16_t> bits;
    std::vector<int8_t> int8;
    std::vector<float> scales;
    gqa::WeightView view;

    TypedWeight(const gqa_test::HostTensor<float> &t, WeightType type) {
        if (type != WeightType::int8) {
            for (float w : t.values) bits.push_back(type == WeightType::bf16 ? float_to_bfloat16(w) : gqa::float_to_half(w));
            view = {bits.data(), t.shape, type};
            return;
        }
        const int64_t rows = t.shape[0], in = t.shape[1], groups = (in + 31) / 32;
        for (int64_t r = 0; r < rows; ++r) {
            for (int64_t g = 0; g < groups; ++g) {
                const int64_t begin = g * 32, end = std::min(in, begin + 32);
                double largest = 0;
                for (int64_t c = begin; c < end; ++c) largest = std::max(largest, std::fabs(double(t.values[r * in + c])));
                scales.push_back(float(largest) / 127.f);
            }
            for (int64_t c = 0; c < in; ++c) {
                const float scale = scales[r * groups + c / 32];
                int8.push_back(int8_t(scale > 0 ? std::nearbyint(t.values[r * in + c] / scale) : 0));
            }
        }
        view = {int8.data(), scales.data(), t.shape};
    }
};

// The weights of a checkpoint (or a quantizer) given as they are build the same
// layer as fp32 weights the layer converts; and the layer keeps the type either way.
TEST_P(WeightTypes, GivenAsTheyAreEqualConvertedWeights) {
    const auto [backend, type] = GetParam();
    gqa::Config config = gqa_test::make_config(80, 4, 2, 20);  // 80 inputs: two full groups of 32 and a partial one
    const gqa_test::LayerWeights weights = gqa_test::random_weights(config, false, 47);
    const TypedWeight wq(weights.wq, type), wk(weights.wk, type), wv(weights.wv, type), wo(weights.wo, type);
    gqa::Weights as_bits;
    as_bits.wq = wq.view, as_bits.wk = wk.view, as_bits.wv = wv.view, as_bits.wo = wo.view;

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
        for (WeightType type : {WeightType::bf16, WeightType::f16, WeightType::int8}) cases.emplace_back(backend, type);
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

    config.weight_type = WeightType::int8;
    weights.wk.values[7] = std::numeric_limits<float>::quiet_NaN();
    EXPECT_THAT(build(config, weights.view()), HasSubstr("wk[0, 7] is nan, which int8 weights cannot hold"));
    config.weight_type.reset();
    const std::vector<int8_t> int8(weights.wq.values.size());
    gqa::Weights no_scales = weights.view();
    no_scales.wq = {int8.data(), nullptr, weights.wq.shape};
    EXPECT_THAT(build(config, no_scales), HasSubstr("wq is int8 but has no scales"));

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

namespace {

// int8 weights against the unquantized layer, on the shapes of the benchmark's
// layers (W1 Llama-3.2-1B, W2 Llama-3-8B, W3 Qwen2.5-0.5B): a prefill of 16 tokens,
// then a decode step. The README states the bound: every output within
// kInt8WeightError of the largest output magnitude.
constexpr double kInt8WeightError = 0.02;

TEST(Int8Weights, StayWithinTheDocumentedErrorOfTheUnquantizedLayer) {
    struct Shape {
        const char *name;
        int embed_dim, num_heads, num_kv_heads, head_dim;
    };
    for (const Shape &shape : {Shape{"W1", 2048, 32, 8, 64}, Shape{"W2", 4096, 32, 8, 128}, Shape{"W3", 896, 14, 2, 64}}) {
        gqa::Config config = gqa_test::make_config(shape.embed_dim, shape.num_heads, shape.num_kv_heads, shape.head_dim);
        const gqa_test::LayerWeights weights = gqa_test::random_weights(config, true, 61);
        auto run = [&](const gqa::Config &c) {
            gqa::Attention layer(c, weights.view(), gqa::Backend::best);
            layer.setup_cache(1, 32);
            std::vector<float> out = layer.forward(gqa_test::random_input(c, 1, 16, 62).view());
            const std::vector<float> step = layer.forward(gqa_test::random_input(c, 1, 1, 63).view());
            out.insert(out.end(), step.begin(), step.end());
            return out;
        };
        const std::vector<float> exact = run(config);
        config.weight_type = WeightType::int8;
        const std::vector<float> quantized = run(config);
        double largest = 0;
        for (float value : exact) largest = std::max(largest, double(std::fabs(value)));
        const double error = gqa_test::max_abs_diff(quantized, exact);
        std::printf("%s: int8 weights, max |error| %.3g = %.3g of the largest |output| %.3g\n", shape.name, error,
                    error / largest, largest);
        EXPECT_LE(error, kInt8WeightError * largest) << shape.name;
        EXPECT_GT(error, 0.0) << shape.name << ": the weights were not quantized";
    }
}

}  // namespace
