// torchtune KVCache semantics: zero-filled buffers [b, n_kv, max_seq_len, hd] holding
// RoPE-rotated keys at sequential slots, a size counter, reset and removal.
#include "test_util.h"

#include <algorithm>
#include <string>
#include <vector>

namespace {

using gqa_test::all_close;
using gqa_test::HostTensor;

bool all_zero(const gqa::TensorView<float> &view) {
    return std::all_of(view.data, view.data + view.numel(), [](float value) { return value == 0.0f; });
}

// Slots [first, first + count) of a cache [b, n_kv, T, hd], in x's order [b, count, n_kv, hd].
std::vector<float> cache_slots(const gqa::TensorView<float> &cache, int first, int count) {
    const int64_t batch = cache.shape[0], heads = cache.shape[1], slots = cache.shape[2], hd = cache.shape[3];
    std::vector<float> values;
    for (int64_t b = 0; b < batch; ++b) {
        for (int64_t i = first; i < first + count; ++i) {
            for (int64_t g = 0; g < heads; ++g) {
                const float *row = cache.data + ((b * heads + g) * slots + i) * hd;
                values.insert(values.end(), row, row + hd);
            }
        }
    }
    return values;
}

// x @ w^T + bias for x [b, s, d], w [rows, d]: [b, s, rows], accumulated in double.
std::vector<float> project(const HostTensor<float> &x, const HostTensor<float> &w,
                           const std::optional<HostTensor<float>> &bias) {
    const int64_t tokens = x.shape[0] * x.shape[1], d = x.shape[2], rows = w.shape[0];
    std::vector<float> y;
    for (int64_t t = 0; t < tokens; ++t) {
        for (int64_t r = 0; r < rows; ++r) {
            double sum = bias ? bias->values[r] : 0.0;
            for (int64_t i = 0; i < d; ++i) sum += double(x.values[t * d + i]) * w.values[r * d + i];
            y.push_back(static_cast<float>(sum));
        }
    }
    return y;
}

class KvCache : public testing::TestWithParam<gqa::Backend> {
protected:
    static constexpr int batch = 2, cache_len = 16;

    KvCache() : layer_(config_, weights_.view(), GetParam()) {}

    HostTensor<float> input(int batch_size, int seq_len, uint32_t seed) const {
        return gqa_test::random_input(config_, batch_size, seq_len, seed);
    }

    gqa::Config config_ = gqa_test::make_config(48, 4, 2, 16, 64);
    gqa_test::LayerWeights weights_ = gqa_test::random_weights(config_, true, 21);
    gqa::Attention layer_;
};

TEST_P(KvCache, ZeroFilledAfterSetup) {
    EXPECT_FALSE(layer_.has_cache());
    layer_.setup_cache(batch, cache_len);
    EXPECT_TRUE(layer_.has_cache());
    EXPECT_EQ(layer_.size(), 0);
    const std::vector<int64_t> shape{batch, config_.num_kv_heads, cache_len, config_.head_dim};
    EXPECT_EQ(layer_.k_cache().shape, shape);
    EXPECT_EQ(layer_.v_cache().shape, shape);
    EXPECT_TRUE(all_zero(layer_.k_cache()));
    EXPECT_TRUE(all_zero(layer_.v_cache()));
}

TEST_P(KvCache, SizeGrowsByTokensWritten) {
    layer_.setup_cache(batch, cache_len);
    int written = 0;
    for (int s : {5, 1, 3}) {
        layer_.forward(input(batch, s, 30 + s).view());
        written += s;
        EXPECT_EQ(layer_.size(), written);
    }
    for (const gqa::TensorView<float> &cache : {layer_.k_cache(), layer_.v_cache()}) {
        const std::vector<float> unwritten = cache_slots(cache, written, cache_len - written);
        EXPECT_TRUE(std::all_of(unwritten.begin(), unwritten.end(), [](float value) { return value == 0.0f; }));
        const std::vector<float> last = cache_slots(cache, written - 1, 1);
        EXPECT_FALSE(std::all_of(last.begin(), last.end(), [](float value) { return value == 0.0f; }));
    }
}

// input_pos only sets the RoPE angle: the write slot is the counter, as in torchtune
// since Sept 2024. Keys are stored rotated (with bk added first), values as projected.
TEST_P(KvCache, HoldsRotatedKeysAtSequentialSlots) {
    layer_.setup_cache(batch, cache_len);
    gqa::Config rope_config = config_;  // for k [b, s, n_kv, hd]
    rope_config.num_heads = config_.num_kv_heads;
    rope_config.embed_dim = config_.num_kv_heads * config_.head_dim;

    struct Call {
        HostTensor<float> x;
        HostTensor<int32_t> input_pos;
    };
    const Call calls[] = {
        {input(batch, 3, 40), {{10, 11, 12, 4, 5, 6}, {batch, 3}}},
        {input(batch, 2, 41), {{13, 15}, {2}}},
    };
    int slot = 0;
    for (const Call &call : calls) {
        const int s = static_cast<int>(call.x.shape[1]);
        SCOPED_TRACE("slots " + std::to_string(slot) + ".." + std::to_string(slot + s - 1));
        layer_.forward(call.x.view(), std::nullopt, call.input_pos.view());

        const std::vector<float> k = project(call.x, weights_.wk, weights_.bk);
        std::vector<float> rotated_k(k.size());
        gqa::apply_rope(rope_config, {k.data(), {batch, s, config_.num_kv_heads, config_.head_dim}}, rotated_k,
                        call.input_pos.view(), 0, gqa::Backend::reference);
        EXPECT_TRUE(all_close(cache_slots(layer_.k_cache(), slot, s), rotated_k)) << "k_cache";
        EXPECT_TRUE(all_close(cache_slots(layer_.v_cache(), slot, s), project(call.x, weights_.wv, weights_.bv)))
            << "v_cache";
        slot += s;
    }
    EXPECT_EQ(layer_.size(), slot);
}

TEST_P(KvCache, ResetZeroesAndReplaysIdentically) {
    layer_.setup_cache(batch, cache_len);
    const HostTensor<float> chunks[] = {input(batch, 4, 50), input(batch, 1, 51), input(batch, 1, 52)};
    const auto run_all = [&] {
        std::vector<std::vector<float>> outputs;
        for (const HostTensor<float> &chunk : chunks) outputs.push_back(layer_.forward(chunk.view()));
        return outputs;
    };
    const auto first_outputs = run_all();
    const std::vector<float> first_k = gqa_test::copy_of(layer_.k_cache());
    const std::vector<float> first_v = gqa_test::copy_of(layer_.v_cache());

    layer_.reset();
    EXPECT_TRUE(layer_.has_cache());
    EXPECT_EQ(layer_.size(), 0);
    EXPECT_TRUE(all_zero(layer_.k_cache()));
    EXPECT_TRUE(all_zero(layer_.v_cache()));

    EXPECT_EQ(run_all(), first_outputs);
    EXPECT_EQ(gqa_test::copy_of(layer_.k_cache()), first_k);
    EXPECT_EQ(gqa_test::copy_of(layer_.v_cache()), first_v);
}

TEST_P(KvCache, SetupCacheReplacesThePreviousOne) {
    layer_.setup_cache(batch, cache_len);
    layer_.forward(input(batch, 3, 60).view());
    layer_.setup_cache(1, 8);
    EXPECT_EQ(layer_.size(), 0);
    EXPECT_EQ(layer_.k_cache().shape, (std::vector<int64_t>{1, config_.num_kv_heads, 8, config_.head_dim}));
    EXPECT_TRUE(all_zero(layer_.k_cache()));
    EXPECT_TRUE(all_zero(layer_.v_cache()));
    layer_.forward(input(1, 2, 61).view());
    EXPECT_EQ(layer_.size(), 2);
}

TEST_P(KvCache, RemoveCacheReturnsToPlainForwards) {
    layer_.setup_cache(batch, cache_len);
    layer_.forward(input(batch, 3, 70).view());
    layer_.remove_cache();
    EXPECT_FALSE(layer_.has_cache());

    // Attends within x only, as a layer that never had a cache.
    const HostTensor<float> x = input(batch, 5, 71);
    const auto want = gqa_test::run_forward(config_, weights_, GetParam(), {x}, false).out;
    EXPECT_TRUE(all_close(layer_.forward(x.view()), want));
}

// torchtune KVCache.update: a cache restored from another layer's slots decodes
// exactly as the layer that computed them.
TEST_P(KvCache, AppendedSlotsDecodeLikeComputedOnes) {
    constexpr int prefix = 5;
    layer_.setup_cache(batch, cache_len);
    layer_.forward(input(batch, prefix, 80).view());
    // The prefix as [b, n_kv, prefix, hd].
    auto slots = [&](const gqa::TensorView<float> &cache) {
        const int64_t heads = cache.shape[1], hd = cache.shape[3];
        std::vector<float> values;
        for (int64_t b = 0; b < batch; ++b) {
            for (int64_t g = 0; g < heads; ++g) {
                const float *row = cache.data + (b * heads + g) * cache_len * hd;
                values.insert(values.end(), row, row + prefix * hd);
            }
        }
        return HostTensor<float>{values, {batch, heads, prefix, hd}};
    };
    const HostTensor<float> k = slots(layer_.k_cache()), v = slots(layer_.v_cache());

    gqa::Attention restored(config_, weights_.view(), GetParam());
    restored.setup_cache(batch, cache_len);
    restored.append_cache(k.view(), v.view());
    EXPECT_EQ(restored.size(), prefix);
    EXPECT_EQ(gqa_test::copy_of(restored.k_cache()), gqa_test::copy_of(layer_.k_cache()));
    const HostTensor<float> step = input(batch, 1, 81);
    EXPECT_EQ(restored.forward(step.view()), layer_.forward(step.view()));
}

TEST_P(KvCache, AppendRejectsBadShapesAndOverflowKeepingTheCache) {
    layer_.setup_cache(batch, cache_len);
    layer_.forward(input(batch, 3, 82).view());
    const std::vector<float> before = gqa_test::copy_of(layer_.k_cache());
    const int64_t heads = config_.num_kv_heads, hd = config_.head_dim;
    auto attempt = [&](int64_t b, int64_t n, int64_t dim) {
        const HostTensor<float> t{std::vector<float>(size_t(b * heads * n * dim), 1.f), {b, heads, n, dim}};
        try {
            layer_.append_cache(t.view(), t.view());
        } catch (const gqa::Error &e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    EXPECT_NE(attempt(batch + 1, 2, hd).find(std::to_string(batch + 1)), std::string::npos);
    EXPECT_NE(attempt(batch, 2, hd + 1).find(std::to_string(hd + 1)), std::string::npos);
    EXPECT_NE(attempt(batch, cache_len, hd).find("overflow"), std::string::npos);
    EXPECT_EQ(layer_.size(), 3);
    EXPECT_EQ(gqa_test::copy_of(layer_.k_cache()), before);
}

INSTANTIATE_TEST_SUITE_P(AllBackends, KvCache, testing::ValuesIn(gqa_test::runnable_backends()),
                         gqa_test::backend_test_name);

}  // namespace
