// torchtune's own test numbers, reproduced without Python (docs/semantics.md §10.1,
// §10.2): its attention tests assert the output mean of a GQA, MHA and MQA layer
// (embed 4096, 32 heads, head_dim 128, batch 4, seq 2048, every weight a linear ramp,
// x = torch.randn after manual_seed(16)), with and without a KV cache; its RoPE
// test asserts the mean, sum and max of RoPE applied to randn(4, 2048, 32, 128)
// after manual_seed(0). torch's CPU randn is ported below (§10.3).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "gqa/attention.hpp"

namespace {

// torch's AVX2 normal_fill takes log, sin and cos from Cephes-style polynomials
// (SIMD ports of Cephes logf/sinf/cosf), not from libm. The asserted sums are
// cancellation-heavy (|sum| ~ 2e3 over 3e7 terms of magnitude ~1), so a biased
// last-bit difference in every element shows: with libm the RoPE sum moves by
// 0.005 of its 0.022 tolerance. These follow the same operation sequence, one
// float operation at a time (the file is compiled without FMA contraction).
float cephes_logf(float x) {
    int32_t bits;
    std::memcpy(&bits, &x, 4);
    float e = float((bits >> 23) - 0x7f) + 1.f;
    bits = (bits & ~0x7f800000) | 0x3f000000;  // mantissa in [0.5, 1)
    std::memcpy(&x, &bits, 4);
    if (x < 0.707106781186547524f) {
        e = e - 1.f;
        x = x - 1.f + x;
    } else {
        x = x - 1.f;
    }
    const float z = x * x;
    float y = 7.0376836292e-2f;
    for (float p : {-1.1514610310e-1f, 1.1676998740e-1f, -1.2420140846e-1f, 1.4249322787e-1f, -1.6668057665e-1f,
                    2.0000714765e-1f, -2.4999993993e-1f, 3.3333331174e-1f}) {
        y = y * x + p;
    }
    y = y * x;
    y = y * z;
    y = y + e * -2.12194440e-4f;
    y = y - z * 0.5f;
    x = x + y;
    return x + e * 0.693359375f;
}

void cephes_sincosf(float x, float *sin_out, float *cos_out) {
    const bool negative = x < 0;
    x = std::abs(x);
    int32_t j = int32_t(x * 1.27323954473516f);  // x * 4 / pi, truncated
    j = (j + 1) & ~1;
    const float y = float(j);
    const bool swap_sin = (j & 4) != 0, sin_polynomial = (j & 2) == 0;
    const bool negative_cos = ((~(j - 2)) & 4) != 0;
    // x - y * pi/4 in three parts, for precision.
    x = x + y * -0.78515625f;
    x = x + y * -2.4187564849853515625e-4f;
    x = x + y * -3.77489497744594108e-8f;
    const float z = x * x;
    float c = 2.443315711809948e-5f;
    c = c * z + -1.388731625493765e-3f;
    c = c * z + 4.166664568298827e-2f;
    c = c * z;
    c = c * z;
    c = c - z * 0.5f;
    c = c + 1.f;
    float s = -1.9515295891e-4f;
    s = s * z + 8.3321608736e-3f;
    s = s * z + -1.6666654611e-1f;
    s = s * z;
    s = s * x;
    s = s + x;
    float sin_value = sin_polynomial ? s : c, cos_value = sin_polynomial ? c : s;
    if (negative != swap_sin) sin_value = -sin_value;
    if (negative_cos) cos_value = -cos_value;
    *sin_out = sin_value;
    *cos_out = cos_value;
}

// torch.manual_seed(seed); torch.randn(n) on the CPU, for float (docs/semantics.md §10.3): a
// 32-bit Mersenne Twister, 24-bit uniforms, Box-Muller over blocks of 16 in float
// arithmetic, and the last 16 drawn afresh when n is not a multiple of 16.
std::vector<float> torch_randn(size_t n, uint32_t seed) {
    std::mt19937 mt(seed);
    auto uniform = [&] { return float(mt() & ((1u << 24) - 1)) * (1.f / float(1u << 24)); };
    auto box_muller_16 = [](float *d) {
        for (int j = 0; j < 8; ++j) {
            const float u1 = 1.f - d[j], u2 = d[j + 8];
            const float radius = std::sqrt(-2.f * cephes_logf(u1)), theta = float(2 * M_PI) * u2;
            float sin_theta, cos_theta;
            cephes_sincosf(theta, &sin_theta, &cos_theta);
            d[j] = radius * cos_theta;
            d[j + 8] = radius * sin_theta;
        }
    };
    std::vector<float> data(n);
    for (float &x : data) x = uniform();
    for (size_t i = 0; i + 16 <= n; i += 16) box_muller_16(&data[i]);
    if (n % 16 != 0) {
        float *tail = data.data() + n - 16;
        for (int j = 0; j < 16; ++j) tail[j] = uniform();
        box_muller_16(tail);
    }
    return data;
}

// torch.arange(0.0, 1.0, 1 / numel, dtype=float32): computed in double, stored as float.
std::vector<float> ramp(size_t numel) {
    std::vector<float> w(numel);
    const double step = 1.0 / double(numel);
    for (size_t i = 0; i < numel; ++i) w[i] = float(double(i) * step);
    return w;
}

double mean(const std::vector<float> &v) {
    double sum = 0;
    for (float x : v) sum += x;
    return sum / double(v.size());
}

constexpr int kBatch = 4, kSeq = 2048, kEmbed = 4096, kHeads = 32, kHeadDim = 128, kMaxSeq = 4096;

struct LayerCase {
    const char *name;
    int num_kv_heads;
    double expected_mean;  // torchtune test_attention.py (same with and without the cache)
};

void PrintTo(const LayerCase &c, std::ostream *os) {
    *os << c.name;
}

class TorchtuneAttention : public ::testing::TestWithParam<LayerCase> {
protected:
    static void SetUpTestSuite() { input_ = new std::vector<float>(torch_randn(size_t(kBatch) * kSeq * kEmbed, 16)); }
    static void TearDownTestSuite() {
        delete input_;
        input_ = nullptr;
    }

    gqa::Attention layer() const {
        const int kv = GetParam().num_kv_heads;
        gqa::Config config{.embed_dim = kEmbed, .num_heads = kHeads, .num_kv_heads = kv, .head_dim = kHeadDim,
                           .max_seq_len = kMaxSeq, .rope_fp32_angles = true};
        wq_ = ramp(size_t(kHeads) * kHeadDim * kEmbed), wk_ = ramp(size_t(kv) * kHeadDim * kEmbed);
        wv_ = wk_, wo_ = ramp(size_t(kEmbed) * kHeads * kHeadDim);
        const int64_t q = int64_t(kHeads) * kHeadDim, k = int64_t(kv) * kHeadDim;
        const gqa::Weights w{{wq_.data(), {q, kEmbed}}, {wk_.data(), {k, kEmbed}}, {wv_.data(), {k, kEmbed}},
                             {wo_.data(), {kEmbed, q}}};
        return gqa::Attention(config, w);
    }

    gqa::TensorView<float> x() const { return {input_->data(), {kBatch, kSeq, kEmbed}}; }

    static std::vector<float> *input_;
    mutable std::vector<float> wq_, wk_, wv_, wo_;
};

std::vector<float> *TorchtuneAttention::input_ = nullptr;

// torchtune: assert_close(out.mean(), expected, rtol=1e-3, atol=1e-8).
void expect_torchtune_mean(double actual, double expected) {
    EXPECT_LE(std::abs(actual - expected), 1e-8 + 1e-3 * std::abs(expected))
        << "output mean " << actual << ", torchtune expects " << expected;
}

TEST_P(TorchtuneAttention, ForwardMean) {
    gqa::Attention attention = layer();
    const std::vector<float> out = attention.forward(x());
    ASSERT_EQ(out.size(), size_t(kBatch) * kSeq * kEmbed);
    const double m = mean(out);
    RecordProperty("mean", std::to_string(m));
    std::printf("%s forward: mean %.9g (torchtune %.9g)\n", GetParam().name, m, GetParam().expected_mean);
    expect_torchtune_mean(m, GetParam().expected_mean);
}

// torchtune's _kv_cache variants: a cache of [4, n_kv, 4096, 128], the mask
// tril(ones(4096, 4096))[None, arange(2048)] ([1, 2048, 4096], here per batch row)
// and input_pos arange(2048).
TEST_P(TorchtuneAttention, ForwardWithCacheMean) {
    gqa::Attention attention = layer();
    attention.setup_cache(kBatch, kMaxSeq);
    std::vector<uint8_t> mask(size_t(kBatch) * kSeq * kMaxSeq);
    for (int b = 0; b < kBatch; ++b) {
        for (int i = 0; i < kSeq; ++i) {
            uint8_t *row = mask.data() + (size_t(b) * kSeq + i) * kMaxSeq;
            std::fill(row, row + i + 1, uint8_t(1));
        }
    }
    std::vector<int32_t> positions(kSeq);
    for (int i = 0; i < kSeq; ++i) positions[i] = i;
    const std::vector<float> out = attention.forward(x(), gqa::TensorView<uint8_t>{mask.data(), {kBatch, kSeq, kMaxSeq}},
                                                     gqa::TensorView<int32_t>{positions.data(), {kSeq}});
    const double m = mean(out);
    std::printf("%s forward with KV cache: mean %.9g (torchtune %.9g)\n", GetParam().name, m,
                GetParam().expected_mean);
    expect_torchtune_mean(m, GetParam().expected_mean);
    EXPECT_EQ(attention.size(), kSeq);
}

INSTANTIATE_TEST_SUITE_P(Numbers, TorchtuneAttention,
                         ::testing::Values(LayerCase{"gqa", 8, -2545.42236328125},
                                           LayerCase{"mha", 32, -2597.248046875},
                                           LayerCase{"mqa", 1, -2108.07666015625}),
                         [](const auto &info) { return std::string(info.param.name); });

// torchtune test_position_embeddings.py, with its fp32 angle table (with fp64 angles
// the sum is 2165.597, off by 5 times the tolerance): mean 6.4543e-05, sum 2165.7053, max 5.4546,
// at its default rtol=1e-5, atol=1e-8 (atol 1e-4 on the mean for the input_pos
// variants), for input_pos None, arange(2048) and arange(2048) expanded over batch.
TEST(TorchtuneRope, MeanSumMax) {
    const std::vector<float> x = torch_randn(size_t(4) * 2048 * 32 * 128, 0);
    const gqa::Config config{.embed_dim = 32 * 128, .num_heads = 32, .num_kv_heads = 32, .head_dim = 128,
                             .max_seq_len = 4096, .rope_fp32_angles = true};
    std::vector<int32_t> positions(4 * 2048);
    for (size_t i = 0; i < positions.size(); ++i) positions[i] = int32_t(i % 2048);
    const gqa::TensorView<float> view{x.data(), {4, 2048, 32, 128}};
    const std::optional<gqa::TensorView<int32_t>> variants[] = {
        std::nullopt, gqa::TensorView<int32_t>{positions.data(), {2048}},
        gqa::TensorView<int32_t>{positions.data(), {4, 2048}}};
    for (const auto &input_pos : variants) {
        std::vector<float> out(x.size());
        gqa::apply_rope(config, view, out, input_pos);
        double sum = 0;
        for (float v : out) sum += v;
        const double max = *std::max_element(out.begin(), out.end());
        const double mean_atol = input_pos ? 1e-4 : 1e-8;
        std::printf("rope (input_pos %s): mean %.9g sum %.9g max %.9g\n",
                    input_pos ? (input_pos->shape.size() == 1 ? "[s]" : "[b, s]") : "none", sum / double(out.size()),
                    sum, max);
        EXPECT_LE(std::abs(sum / double(out.size()) - 6.4543e-05), mean_atol + 1e-5 * 6.4543e-05);
        EXPECT_LE(std::abs(sum - 2165.7053), 1e-8 + 1e-5 * 2165.7053);
        EXPECT_LE(std::abs(max - 5.4546), 1e-8 + 1e-5 * 5.4546);
    }
}

}  // namespace
