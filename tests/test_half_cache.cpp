// The fp16 KV cache: the binary16 conversions themselves, then every backend's
// fp16 path against the reference's own fp16 path (same rounding of k and v,
// double arithmetic after), both measured against the exact fp32-cache result.
#include <gmock/gmock.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "test_util.h"

namespace {

using gqa::CacheType;
using gqa::float_to_half;
using gqa::half_to_float;

TEST(HalfConversion, KnownValues) {
    EXPECT_EQ(float_to_half(1.0f), 0x3c00);
    EXPECT_EQ(float_to_half(-2.0f), 0xc000);
    EXPECT_EQ(float_to_half(0.1f), 0x2e66);
    EXPECT_EQ(float_to_half(65504.0f), 0x7bff);        // largest finite
    EXPECT_EQ(float_to_half(65519.0f), 0x7bff);        // below the halfway point to 65536
    EXPECT_EQ(float_to_half(65520.0f), 0x7c00);        // the tie rounds to even: inf
    EXPECT_EQ(float_to_half(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
    EXPECT_EQ(float_to_half(std::ldexp(1.0f, -25)), 0x0000);  // tie with zero: even
    EXPECT_EQ(float_to_half(std::ldexp(1.5f, -25)), 0x0001);
    EXPECT_EQ(float_to_half(std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
    EXPECT_EQ(float_to_half(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie: even mantissa stays
    EXPECT_EQ(float_to_half(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);  // tie: odd rounds up
    EXPECT_EQ(float_to_half(-std::numeric_limits<float>::infinity()), 0xfc00);
    EXPECT_TRUE(std::isnan(half_to_float(float_to_half(std::numeric_limits<float>::quiet_NaN()))));
    EXPECT_EQ(half_to_float(0x0001), std::ldexp(1.0f, -24));
    EXPECT_EQ(half_to_float(0xc000), -2.0f);
}

TEST(HalfConversion, EveryHalfRoundTrips) {
    for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
        const float value = half_to_float(uint16_t(bits));
        if (std::isnan(value)) {
            EXPECT_EQ(bits & 0x7c00u, 0x7c00u);
            continue;
        }
        ASSERT_EQ(float_to_half(value), bits) << "half 0x" << std::hex << bits;
    }
}

#if defined(__aarch64__)
using CompilerHalf = __fp16;  // g++ has no _Float16 in C++ on aarch64
#define GQA_HAVE_COMPILER_HALF 1
#elif defined(__FLT16_MAX__)
using CompilerHalf = _Float16;
#define GQA_HAVE_COMPILER_HALF 1
#endif

#ifdef GQA_HAVE_COMPILER_HALF
// The compiler's own conversion (hardware on aarch64, libgcc on x86-64) as an
// independent oracle, over random bit patterns of every magnitude.
TEST(HalfConversion, MatchesTheCompilersFloat16) {
    std::mt19937 rng(7);
    for (int n = 0; n < 1000000; ++n) {
        const uint32_t bits = rng();
        float value;
        std::memcpy(&value, &bits, sizeof value);
        if (std::isnan(value)) continue;
        const CompilerHalf native = static_cast<CompilerHalf>(value);
        uint16_t native_bits;
        std::memcpy(&native_bits, &native, sizeof native_bits);
        ASSERT_EQ(float_to_half(value), native_bits) << value;
    }
}
#endif

struct HalfRun {
    std::vector<float> outputs;  // prefill then each decode step, concatenated
    std::vector<float> patterns;
    std::vector<uint16_t> k_cache, v_cache;  // empty for an f32 cache
};

class HalfCache : public testing::TestWithParam<gqa::Backend> {
protected:
    // GQA with groups of 4, a prefill then single-token decode steps, so both the
    // prefill and the decode pipelines run on the cache.
    static constexpr int batch = 2, prefill = 37, decode_steps = 3, cache_len = 48;
    const gqa::Config config = gqa_test::make_config(128, 8, 2, 64);
    const gqa_test::LayerWeights weights = gqa_test::random_weights(config, true, 21);

    HalfRun run(gqa::Backend backend, CacheType type, bool record_pattern) const {
        gqa::Attention layer(config, weights.view(), backend);
        layer.setup_cache(batch, cache_len, type);
        layer.set_record_pattern(record_pattern);
        HalfRun result;
        auto keep = [&](const std::vector<float> &out) {
            result.outputs.insert(result.outputs.end(), out.begin(), out.end());
            if (record_pattern) {
                const std::vector<float> pattern = gqa_test::copy_of(layer.pattern());
                result.patterns.insert(result.patterns.end(), pattern.begin(), pattern.end());
            }
        };
        keep(layer.forward(gqa_test::random_input(config, batch, prefill, 22).view()));
        for (int step = 0; step < decode_steps; ++step) {
            keep(layer.forward(gqa_test::random_input(config, batch, 1, 23 + step).view()));
        }
        if (type == CacheType::f16) {
            const auto k = layer.k_cache_f16(), v = layer.v_cache_f16();
            result.k_cache.assign(k.data, k.data + k.numel());
            result.v_cache.assign(v.data, v.data + v.numel());
        }
        return result;
    }

    void check(bool record_pattern) const {
        const HalfRun exact = run(gqa::Backend::reference, CacheType::f32, record_pattern);
        const HalfRun reference = run(gqa::Backend::reference, CacheType::f16, record_pattern);
        const HalfRun got = run(GetParam(), CacheType::f16, record_pattern);

        // fp16 rounding of k and v must show, or the cache was not fp16 at all.
        EXPECT_GT(gqa_test::max_abs_diff(reference.outputs, exact.outputs), 1e-5);
        EXPECT_TRUE(gqa_test::within_half_cache_error(got.outputs, reference.outputs, exact.outputs));
        if (record_pattern) {
            EXPECT_TRUE(gqa_test::within_half_cache_error(got.patterns, reference.patterns, exact.patterns));
        }

        // The stored halves: the same rounding of values that differ only by fp32
        // summation order, so at most one unit in the last place apart.
        ASSERT_EQ(got.k_cache.size(), reference.k_cache.size());
        for (const auto *caches : {&got.k_cache, &got.v_cache}) {
            const auto &want = caches == &got.k_cache ? reference.k_cache : reference.v_cache;
            int64_t differing = 0;
            for (size_t n = 0; n < want.size(); ++n) {
                const int ulps = std::abs(int(caches->at(n)) - int(want[n]));
                ASSERT_TRUE(ulps <= 1 || std::abs(half_to_float(caches->at(n)) - half_to_float(want[n])) <=
                                             std::ldexp(1.0f, -24))
                    << "element " << n;
                differing += ulps != 0;
            }
            EXPECT_LT(differing, int64_t(want.size() / 100)) << "halves that differ in the last place";
        }
    }
};

TEST_P(HalfCache, StaysWithinTwiceTheReferencesFp16Error) {
    check(false);
}

TEST_P(HalfCache, PatternStaysWithinTwiceTheReferencesFp16Error) {
    check(true);
}

INSTANTIATE_TEST_SUITE_P(AllBackends, HalfCache, testing::ValuesIn(gqa_test::backends_under_test()),
                         gqa_test::backend_test_name);

// Each backend narrows the new keys and values to fp16 in its own code (on OpenCL
// with integer operations on the bits); the values that stress a narrowing must
// come out as the runtime's float_to_half makes them. V = x picks each value
// exactly (one nonzero weight per row), at the edges of rounding, overflow and
// subnormals; the last two rows overflow fp32 to inf and -inf. (NaN from finite
// inputs depends on the order of a backend's sums, so none is made here.)
TEST_P(HalfCache, NarrowsEdgeValuesLikeTheRuntime) {
    const gqa::Config config = gqa_test::make_config(16, 1, 1, 16);
    constexpr float inf = std::numeric_limits<float>::infinity();
    const float inputs[16] = {65504.f, 65519.99f, 65520.f, 1e6f, -1e6f, std::ldexp(1.f, -25),
                              3 * std::ldexp(1.f, -25), 1e-8f, -std::ldexp(1.f, -24), 1 + std::ldexp(1.f, -11),
                              1 + 3 * std::ldexp(1.f, -11), -2.5f, 0.1f, -65505.f, 1e30f, -1e30f};
    gqa_test::LayerWeights weights = gqa_test::random_weights(config, false, 31);
    std::fill(weights.wv.values.begin(), weights.wv.values.end(), 0.f);
    for (int row = 0; row < 16; ++row) weights.wv.values[row * 16 + row] = row < 14 ? 1.f : 1e30f;
    const gqa_test::HostTensor<float> x{std::vector<float>(inputs, inputs + 16), {1, 1, 16}};

    gqa::Attention layer(config, weights.view(), GetParam());
    layer.setup_cache(1, 4, CacheType::f16);
    layer.forward(x.view());
    const auto v = layer.v_cache_f16();
    for (int n = 0; n < 16; ++n) {
        const float value = n < 14 ? inputs[n] : n == 14 ? inf : -inf;
        EXPECT_EQ(v.data[n], float_to_half(value)) << "element " << n << " (" << value << ")";
    }
}

// Accessors of the other element type, and a bad type, are errors that change nothing.
TEST(HalfCacheErrors, AccessorOfTheOtherTypeAndBadType) {
    const gqa::Config config = gqa_test::make_config(64, 4, 2, 16);
    const auto weights = gqa_test::random_weights(config, false, 3);
    gqa::Attention layer(config, weights.view(), gqa::Backend::reference);
    layer.setup_cache(1, 8, CacheType::f16);
    layer.forward(gqa_test::random_input(config, 1, 3, 4).view());
    const auto before = layer.k_cache_f16();
    const std::vector<uint16_t> bytes(before.data, before.data + before.numel());

    auto message = [](auto &&call) {
        try {
            call();
        } catch (const gqa::Error &e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    EXPECT_THAT(message([&] { layer.k_cache(); }), testing::HasSubstr("k_cache_f16"));
    EXPECT_THAT(message([&] { layer.setup_cache(1, 8, static_cast<CacheType>(7)); }), testing::HasSubstr("7"));
    EXPECT_EQ(layer.cache_type(), CacheType::f16);
    EXPECT_EQ(layer.size(), 3);
    const auto after = layer.k_cache_f16();
    EXPECT_EQ(std::vector<uint16_t>(after.data, after.data + after.numel()), bytes);

    layer.setup_cache(1, 8);
    EXPECT_THAT(message([&] { layer.v_cache_f16(); }), testing::HasSubstr("v_cache"));
}

}  // namespace
