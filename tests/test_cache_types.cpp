// The reduced-precision KV caches (f16, bf16, int8): the binary16 conversions
// themselves, then every backend's path for each type against the reference's own
// (the same rounding or quantization of k and v, double arithmetic after), both
// measured against the exact fp32-cache result.
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

struct CacheRun {
    std::vector<float> outputs;  // prefill then each decode step, concatenated
    std::vector<float> patterns;
    std::vector<float> k_cache, v_cache;  // as fp32
    std::vector<int64_t> k_raw, v_raw;    // the stored elements (int8: the values, not the scale)
};

struct CacheCase {
    gqa::Backend backend;
    CacheType type;
};

std::string cache_case_name(const testing::TestParamInfo<CacheCase> &info) {
    return std::string(gqa::backend_name(info.param.backend)) + "_" + std::string(gqa::cache_type_name(info.param.type));
}

std::vector<CacheCase> reduced_cache_cases() {
    std::vector<CacheCase> cases;
    for (gqa::Backend backend : gqa_test::backends_under_test()) {
        for (CacheType type : {CacheType::f16, CacheType::bf16, CacheType::int8}) cases.push_back({backend, type});
    }
    return cases;
}

// The stored elements of a cache of `type`, widened to integers; for int8 the
// values of each slot without its scale bytes.
template <typename T>
std::vector<int64_t> raw_elements(const gqa::TensorView<T> &view, int head_dim) {
    std::vector<int64_t> raw;
    const int64_t slot = view.shape.back();
    for (int64_t n = 0; n < view.numel(); ++n) {
        if (n % slot < head_dim) raw.push_back(int64_t(view.data[n]));
    }
    return raw;
}

class ReducedCache : public testing::TestWithParam<CacheCase> {
protected:
    // GQA with groups of 4, a prefill then single-token decode steps, so both the
    // prefill and the decode pipelines run on the cache.
    static constexpr int batch = 2, prefill = 37, decode_steps = 3, cache_len = 48;
    const gqa::Config config = gqa_test::make_config(128, 8, 2, 64);
    const gqa_test::LayerWeights weights = gqa_test::random_weights(config, true, 21);

    CacheRun run(gqa::Backend backend, CacheType type, bool record_pattern) const {
        gqa::Attention layer(config, weights.view(), backend);
        layer.setup_cache(batch, cache_len, type);
        layer.set_record_pattern(record_pattern);
        CacheRun result;
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
        result.k_cache = layer.k_cache_as_float(), result.v_cache = layer.v_cache_as_float();
        const int hd = config.head_dim;
        switch (type) {
        case CacheType::f32: break;
        case CacheType::f16:
            result.k_raw = raw_elements(layer.k_cache_f16(), hd), result.v_raw = raw_elements(layer.v_cache_f16(), hd);
            break;
        case CacheType::bf16:
            result.k_raw = raw_elements(layer.k_cache_bf16(), hd), result.v_raw = raw_elements(layer.v_cache_bf16(), hd);
            break;
        case CacheType::int8:
            result.k_raw = raw_elements(layer.k_cache_int8(), hd), result.v_raw = raw_elements(layer.v_cache_int8(), hd);
            break;
        }
        return result;
    }

    void check(bool record_pattern) const {
        const CacheType type = GetParam().type;
        const CacheRun exact = run(gqa::Backend::reference, CacheType::f32, record_pattern);
        const CacheRun reference = run(gqa::Backend::reference, type, record_pattern);
        const CacheRun got = run(GetParam().backend, type, record_pattern);

        // The type's rounding of k and v must show, or the cache was not of that type.
        EXPECT_GT(gqa_test::max_abs_diff(reference.outputs, exact.outputs), 1e-5);
        EXPECT_TRUE(gqa_test::within_reduced_precision_error(got.outputs, reference.outputs, exact.outputs));
        if (record_pattern) {
            EXPECT_TRUE(gqa_test::within_reduced_precision_error(got.patterns, reference.patterns, exact.patterns));
        }

        // The stored values: the same conversion of values that differ only by fp32
        // summation order, so at most one unit of the type apart, and rarely apart.
        // Read back as fp32 they stand for the exact cache within one unit too.
        for (const bool keys : {true, false}) {
            const std::vector<float> &values = keys ? got.k_cache : got.v_cache;
            const std::vector<float> &want = keys ? reference.k_cache : reference.v_cache;
            ASSERT_EQ(values.size(), want.size());
            EXPECT_EQ(gqa_tools::values_past_one_unit(type, values, want, size_t(config.head_dim)).size(), 0u);
            EXPECT_EQ(gqa_tools::values_past_one_unit(type, values, keys ? exact.k_cache : exact.v_cache,
                                                      size_t(config.head_dim))
                          .size(),
                      0u);
            const std::vector<int64_t> &raw = keys ? got.k_raw : got.v_raw, &raw_want = keys ? reference.k_raw : reference.v_raw;
            ASSERT_EQ(raw.size(), raw_want.size());
            int64_t differing = 0;
            for (size_t n = 0; n < raw.size(); ++n) differing += raw[n] != raw_want[n];
            EXPECT_LT(differing, int64_t(raw.size() / 100)) << "stored elements that differ";
        }
    }
};

TEST_P(ReducedCache, StaysWithinTwiceTheReferencesOwnError) {
    check(false);
}

TEST_P(ReducedCache, PatternStaysWithinTwiceTheReferencesOwnError) {
    check(true);
}

INSTANTIATE_TEST_SUITE_P(AllBackends, ReducedCache, testing::ValuesIn(reduced_cache_cases()), cache_case_name);

// A cache written by append_cache converts as forward's store does: what
// k_cache_as_float returns, appended to a fresh cache of the same type, comes back
// unchanged, and decodes exactly as the cache it came from.
TEST_P(ReducedCache, AppendedValuesRoundTrip) {
    const gqa::Config small = gqa_test::make_config(64, 4, 2, 32);
    const auto small_weights = gqa_test::random_weights(small, false, 41);
    const CacheType type = GetParam().type;
    gqa::Attention written(small, small_weights.view(), GetParam().backend);
    gqa::Attention appended(small, small_weights.view(), GetParam().backend);
    written.setup_cache(1, 16, type);
    appended.setup_cache(1, 16, type);
    written.forward(gqa_test::random_input(small, 1, 9, 42).view());
    const std::vector<float> k = written.k_cache_as_float(), v = written.v_cache_as_float();
    // The first 9 slots of each kv head, [1, n_kv, 9, hd].
    std::vector<float> k_slots, v_slots;
    for (int head = 0; head < small.num_kv_heads; ++head) {
        const size_t first = size_t(head) * 16 * small.head_dim;
        k_slots.insert(k_slots.end(), k.begin() + first, k.begin() + first + 9 * small.head_dim);
        v_slots.insert(v_slots.end(), v.begin() + first, v.begin() + first + 9 * small.head_dim);
    }
    const std::vector<int64_t> shape{1, small.num_kv_heads, 9, small.head_dim};
    appended.append_cache({k_slots.data(), shape}, {v_slots.data(), shape});
    EXPECT_EQ(appended.k_cache_as_float(), k);
    EXPECT_EQ(appended.v_cache_as_float(), v);
    const auto x = gqa_test::random_input(small, 1, 1, 43);
    EXPECT_EQ(written.forward(x.view()), appended.forward(x.view()));
}

// Each backend narrows the new keys and values in its own code (on OpenCL fp16
// with integer operations on the bits); the values that stress a narrowing must
// come out as the runtime's conversions make them. V = x picks each value exactly
// (one nonzero weight per row), at the edges of rounding, overflow and subnormals;
// the last two rows overflow fp32 to inf and -inf. (NaN from finite inputs
// depends on the order of a backend's sums, so none is made here.)
class SixteenBitCache : public testing::TestWithParam<CacheCase> {};

TEST_P(SixteenBitCache, NarrowsEdgeValuesLikeTheRuntime) {
    const CacheType type = GetParam().type;
    const gqa::Config config = gqa_test::make_config(16, 1, 1, 16);
    constexpr float inf = std::numeric_limits<float>::infinity(), largest = std::numeric_limits<float>::max();
    const float half_edges[16] = {65504.f, 65519.99f, 65520.f, 1e6f, -1e6f, std::ldexp(1.f, -25),
                                  3 * std::ldexp(1.f, -25), 1e-8f, -std::ldexp(1.f, -24), 1 + std::ldexp(1.f, -11),
                                  1 + 3 * std::ldexp(1.f, -11), -2.5f, 0.1f, -65505.f, 1e30f, -1e30f};
    // bfloat16 keeps fp32's exponent: its edges are fp32's largest values (rounding
    // past the largest bf16 to inf), its ties, and subnormals.
    const float bfloat16_edges[16] = {largest, -largest, 3.3895e38f, 1 + std::ldexp(1.f, -8), 1 + 3 * std::ldexp(1.f, -8),
                                      1 + std::ldexp(1.f, -9), 1e-39f, -1e-40f, std::ldexp(1.f, -133),
                                      std::ldexp(3.f, -134), 0.1f, -2.5f, 65520.f, 1e-30f, 1e30f, -1e30f};
    const float *inputs = type == CacheType::f16 ? half_edges : bfloat16_edges;
    gqa_test::LayerWeights weights = gqa_test::random_weights(config, false, 31);
    std::fill(weights.wv.values.begin(), weights.wv.values.end(), 0.f);
    for (int row = 0; row < 16; ++row) weights.wv.values[row * 16 + row] = row < 14 ? 1.f : 1e30f;
    const gqa_test::HostTensor<float> x{std::vector<float>(inputs, inputs + 16), {1, 1, 16}};

    gqa::Attention layer(config, weights.view(), GetParam().backend);
    layer.setup_cache(1, 4, type);
    layer.forward(x.view());
    const auto v = type == CacheType::f16 ? layer.v_cache_f16() : layer.v_cache_bf16();
    for (int n = 0; n < 16; ++n) {
        const float value = n < 14 ? inputs[n] : n == 14 ? inf : -inf;
        const uint16_t want = type == CacheType::f16 ? float_to_half(value) : gqa::float_to_bfloat16(value);
        EXPECT_EQ(v.data[n], want) << "element " << n << " (" << value << ")";
    }
}

std::vector<CacheCase> sixteen_bit_cases() {
    std::vector<CacheCase> cases;
    for (gqa::Backend backend : gqa_test::backends_under_test()) {
        for (CacheType type : {CacheType::f16, CacheType::bf16}) cases.push_back({backend, type});
    }
    return cases;
}

INSTANTIATE_TEST_SUITE_P(AllBackends, SixteenBitCache, testing::ValuesIn(sixteen_bit_cases()), cache_case_name);

// int8 slots as the runtime quantizes them, on every backend: V = x again, one
// slot per token. A slot whose largest value is 127 has scale 1 exactly, so each
// q is round(x) with ties to even; a slot of zeros has scale 0; a slot holding an
// infinity (x overflows in V) has a NaN scale and zeros, so its values read as
// NaN (the NaN rule).
class Int8Cache : public testing::TestWithParam<gqa::Backend> {};

TEST_P(Int8Cache, QuantizesSlotsLikeTheRuntime) {
    const gqa::Config config = gqa_test::make_config(8, 1, 1, 8);
    gqa_test::LayerWeights weights = gqa_test::random_weights(config, false, 51);
    std::fill(weights.wv.values.begin(), weights.wv.values.end(), 0.f);
    for (int row = 0; row < 8; ++row) weights.wv.values[row * 8 + row] = 1.f;
    const float inf = std::numeric_limits<float>::infinity();
    const gqa_test::HostTensor<float> x{{127.f, 0.5f, 1.5f, -2.5f, 3.49f, -126.5f, 0.f, -0.4f,  // scale 1
                                         0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f,                // scale 0
                                         1.f, -3.f, 1e-3f, 0.f, 2.f, inf, 0.f, 0.f},            // NaN scale
                                        {1, 3, 8}};

    gqa::Attention layer(config, weights.view(), GetParam());
    gqa::Attention reference(config, weights.view(), gqa::Backend::reference);
    layer.setup_cache(1, 4, CacheType::int8);
    reference.setup_cache(1, 4, CacheType::int8);
    layer.forward(x.view());
    reference.forward(x.view());
    const auto v = layer.v_cache_int8(), want = reference.v_cache_int8();
    ASSERT_EQ(v.shape, (std::vector<int64_t>{1, 1, 4, 8 + 4}));
    EXPECT_EQ(std::vector<int8_t>(v.data, v.data + v.numel()), std::vector<int8_t>(want.data, want.data + want.numel()));
    const std::vector<int8_t> first(v.data, v.data + 8);
    EXPECT_EQ(first, (std::vector<int8_t>{127, 0, 2, -2, 3, -126, 0, 0}));
    const std::vector<float> values = layer.v_cache_as_float();
    EXPECT_EQ(values[1 * 8 + 3], 0.f);  // the zero slot
    for (int e = 0; e < 8; ++e) EXPECT_TRUE(std::isnan(values[2 * 8 + e])) << "element " << e;
}

INSTANTIATE_TEST_SUITE_P(AllBackends, Int8Cache, testing::ValuesIn(gqa_test::backends_under_test()),
                         gqa_test::backend_test_name);

// Accessors of another type, and a bad type, are errors that change nothing.
TEST(CacheTypeErrors, AccessorOfAnotherTypeAndBadType) {
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
    EXPECT_THAT(message([&] { layer.k_cache_int8(); }), testing::HasSubstr("k_cache_f16"));
    EXPECT_THAT(message([&] { layer.v_cache_bf16(); }), testing::HasSubstr("v_cache_f16"));
    EXPECT_THAT(message([&] { layer.setup_cache(1, 8, static_cast<CacheType>(7)); }), testing::HasSubstr("7"));
    EXPECT_THAT(message([] { gqa::cache_type_from_name("q8_0"); }), testing::HasSubstr("q8_0"));
    EXPECT_EQ(layer.cache_type(), CacheType::f16);
    EXPECT_EQ(layer.size(), 3);
    const auto after = layer.k_cache_f16();
    EXPECT_EQ(std::vector<uint16_t>(after.data, after.data + after.numel()), bytes);

    layer.setup_cache(1, 8, CacheType::int8);
    EXPECT_THAT(message([&] { layer.v_cache_f16(); }), testing::HasSubstr("v_cache_int8"));
    for (CacheType type : {CacheType::f32, CacheType::f16, CacheType::bf16, CacheType::int8}) {
        EXPECT_EQ(gqa::cache_type_from_name(gqa::cache_type_name(type)), type);
    }
}

}  // namespace
