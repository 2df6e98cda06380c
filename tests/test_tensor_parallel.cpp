// Head shards (tensor parallelism): on every backend, the outputs of a layer's
// shards, summed, equal the unsharded layer's output, through a prefill and decode
// steps with a KV cache, at shard counts that split the kv heads evenly and
// unevenly, that replicate them (MQA, and more ranks than kv heads), with biases,
// sinks, per-head q/k norms, windows and soft-cap, narrow caches and 16-bit weights.
// The checkpoint loaders read a shard's slices that equal those cut from the whole
// layer. And the shards a layout cannot have are gqa::Errors.
#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "gqa/hf.hpp"
#include "gqa/tensor_parallel.hpp"
#include "test_util.h"

#include <gmock/gmock.h>

namespace {

using gqa::Backend;
using gqa::CacheType;
using testing::HasSubstr;

struct Layout {
    const char *name;
    int num_heads, num_kv_heads, head_dim;
    std::optional<int> window;
    double softcap = 0;
    gqa::QkNorm qk_norm = gqa::QkNorm::none;
};

const Layout kGqa{"gqa", 8, 4, 16};
const Layout kMqa{"mqa_window_softcap", 6, 1, 16, 9, 20.0};
const Layout kReplicatedKv{"gqa_qk_norm", 8, 2, 16, std::nullopt, 0, gqa::QkNorm::per_head};
const Layout kWide{"gqa_hd32", 4, 2, 32};

// How the weights reach the shards: fp32, as bf16 bits, or fp32 quantized to int8
// by each layer (config.weight_type).
enum class Weighting { f32, bf16_bits, int8_by_layer };

struct ShardCase {
    Backend backend;
    const Layout *layout;
    int ranks;
    CacheType cache = CacheType::f32;
    Weighting weighting = Weighting::f32;
};

std::string name_of(const ShardCase &c) {
    const char *weighting[] = {"", "_bf16_weights", "_int8_weights"};
    return std::string(gqa::backend_name(c.backend)) + "_" + c.layout->name + "_" + std::to_string(c.ranks) +
           "_ranks_" + std::string(gqa::cache_type_name(c.cache)) + weighting[int(c.weighting)];
}

void PrintTo(const ShardCase &c, std::ostream *os) {
    *os << name_of(c);
}

std::vector<ShardCase> shard_cases() {
    std::vector<ShardCase> cases;
    for (Backend backend : gqa_test::runnable_backends()) {
        for (int ranks : {1, 2, 3, 4}) cases.push_back({backend, &kGqa, ranks});
        for (int ranks : {2, 4}) cases.push_back({backend, &kMqa, ranks});
        cases.push_back({backend, &kReplicatedKv, 4});
        cases.push_back({backend, &kGqa, 3, CacheType::int8});
        cases.push_back({backend, &kGqa, 3, CacheType::f16, Weighting::bf16_bits});
        cases.push_back({backend, &kWide, 2, CacheType::f32, Weighting::int8_by_layer});
    }
    return cases;
}

constexpr int kEmbedDim = 48, kMaxSeqLen = 64, kBatch = 2, kPrompt = 7;

class HeadShards : public testing::TestWithParam<ShardCase> {
protected:
    const ShardCase &c = GetParam();
    const gqa::Config config = make();
    const gqa_test::LayerWeights weights = gqa_test::random_weights(config, true, 17);
    const gqa_test::HostTensor<float> sinks = gqa_test::random_normal({config.num_heads}, 1.0, 18);
    const gqa_test::HostTensor<float> norm = gqa_test::random_uniform({config.head_dim}, 0.5, 1.5, 19);
    std::vector<uint16_t> bf16[4];

    gqa::Config make() const {
        gqa::Config config = gqa_test::make_config(kEmbedDim, c.layout->num_heads, c.layout->num_kv_heads,
                                                   c.layout->head_dim, kMaxSeqLen);
        config.rope_style = gqa::RopeStyle::rotate_half;
        config.window = c.layout->window;
        config.softcap = c.layout->softcap;
        config.qk_norm = c.layout->qk_norm;
        if (c.weighting == Weighting::int8_by_layer) config.weight_type = gqa::WeightType::int8;
        return config;
    }

    gqa::Weights full_weights() {
        gqa::Weights w = weights.view();
        w.sinks = sinks.view();
        if (config.qk_norm != gqa::QkNorm::none) w.q_norm = w.k_norm = norm.view();
        if (c.weighting == Weighting::bf16_bits) {
            gqa::WeightView *views[] = {&w.wq, &w.wk, &w.wv, &w.wo};
            for (int n = 0; n < 4; ++n) {
                const gqa::WeightView fp32 = *views[n];
                bf16[n].resize(size_t(fp32.numel()));
                for (size_t e = 0; e < bf16[n].size(); ++e) bf16[n][e] = gqa::float_to_bfloat16(fp32.value(int64_t(e)));
                *views[n] = gqa::WeightView(bf16[n].data(), fp32.shape, gqa::WeightType::bf16);
            }
        }
        return w;
    }

    // A prompt, then two decode steps: each call's output, one after another.
    std::vector<float> run(gqa::Attention &layer) const {
        layer.setup_cache(kBatch, kMaxSeqLen, c.cache);
        std::vector<float> outputs;
        uint32_t seed = 40;
        for (int tokens : {kPrompt, 1, 1}) {
            const auto x = gqa_test::random_input(config, kBatch, tokens, seed++);
            const std::vector<float> out = layer.forward(x.view());
            outputs.insert(outputs.end(), out.begin(), out.end());
        }
        return outputs;
    }
};

TEST_P(HeadShards, SumToTheUnshardedLayer) {
    const gqa::Weights full = full_weights();
    gqa::Attention unsharded(config, full, c.backend);
    const std::vector<float> want = run(unsharded);

    std::vector<float> sum(want.size(), 0.f);
    int heads = 0;
    for (int rank = 0; rank < c.ranks; ++rank) {
        const gqa::HeadShard shard = gqa::head_shard(config, rank, c.ranks);
        const gqa::LoadedWeights part = gqa::shard_weights(config, full, shard);
        gqa::Attention layer(gqa::shard_config(config, shard), part.view(), c.backend);
        const std::vector<float> got = run(layer);
        for (size_t n = 0; n < sum.size(); ++n) sum[n] += got[n];
        heads += shard.q_end - shard.q_begin;
    }
    EXPECT_EQ(heads, config.num_heads) << "every query head in exactly one shard";
    EXPECT_TRUE(gqa_test::all_close(sum, want));
}

INSTANTIATE_TEST_SUITE_P(AllBackends, HeadShards, testing::ValuesIn(shard_cases()),
                         [](const testing::TestParamInfo<ShardCase> &info) { return name_of(info.param); });

void expect_same_weights(const gqa::LoadedWeights &got, const gqa::LoadedWeights &want) {
    const std::pair<const gqa::WeightData *, const gqa::WeightData *> projections[] = {
        {&got.wq, &want.wq}, {&got.wk, &want.wk}, {&got.wv, &want.wv}, {&got.wo, &want.wo}};
    for (const auto &[g, w] : projections) {
        EXPECT_EQ(g->type, w->type);
        EXPECT_EQ(g->values, w->values);
        EXPECT_EQ(g->bits, w->bits);
    }
    EXPECT_EQ(got.bq, want.bq);
    EXPECT_EQ(got.bk, want.bk);
    EXPECT_EQ(got.bv, want.bv);
    EXPECT_EQ(got.bo, want.bo);
    EXPECT_EQ(got.sinks, want.sinks);
    EXPECT_EQ(got.q_norm, want.q_norm);
    EXPECT_EQ(got.k_norm, want.k_norm);
    EXPECT_EQ(got.q_shape, want.q_shape);
    EXPECT_EQ(got.kv_shape, want.kv_shape);
    EXPECT_EQ(got.o_shape, want.o_shape);
}

const std::filesystem::path kCheckpoints = GQA_HF_VECTORS;

// Each family's layer 1 over rank counts its heads allow (MQA Gemma 3, fused qkv
// Phi-3, biased Qwen2, Qwen3 unevenly): each shard as read equals the same shard
// cut from the whole layer, config included.
TEST(HeadShardLoading, HfShardsAreTheWholeLayersSlices) {
    const std::pair<const char *, int> cases[] = {{"llama", 2},  {"gemma3", 4}, {"gpt_oss", 2}, {"phi3", 2},
                                                  {"qwen2", 2},  {"qwen3", 3},  {"gpt_oss", 4}};
    for (const auto &[model, ranks] : cases) {
        SCOPED_TRACE(std::string(model) + " over " + std::to_string(ranks) + " ranks");
        const std::string dir = (kCheckpoints / model).string();
        const gqa::HfLayer whole = gqa::load_hf_layer(dir, 1, 256);
        for (int rank = 0; rank < ranks; ++rank) {
            const gqa::HfLayerShard part = gqa::load_hf_layer_shard(dir, 1, rank, ranks, 256);
            const gqa::HeadShard shard = gqa::head_shard(whole.config, rank, ranks);
            EXPECT_EQ(part.shard.q_begin, shard.q_begin);
            EXPECT_EQ(part.shard.kv_end, shard.kv_end);
            EXPECT_EQ(part.full_config.num_heads, whole.config.num_heads);
            EXPECT_EQ(part.layer.config.num_heads, shard.q_end - shard.q_begin);
            EXPECT_EQ(part.layer.config.num_kv_heads, shard.kv_end - shard.kv_begin);
            EXPECT_EQ(part.layer.features, whole.features);
            expect_same_weights(part.layer.weights,
                                gqa::shard_weights(whole.config, whole.weights.view(), shard));
        }
    }
    EXPECT_THAT(gqa_test::error_of([&] { gqa::load_hf_layer_shard((kCheckpoints / "olmo2").string(), 0, 0, 2); }),
                HasSubstr("qk_norm all_heads"));
    EXPECT_THAT(gqa_test::error_of([&] { gqa::load_hf_layer_shard((kCheckpoints / "llama").string(), 0, 0, 0); }),
                HasSubstr("ranks is 0; expected >= 1"));
}

TEST(HeadShardLoading, SafetensorsShardsAreTheWholeLayersSlices) {
    const gqa::HfLayer hf = gqa::load_hf_layer((kCheckpoints / "qwen2").string(), 0, 256);
    const std::string file = (kCheckpoints / "qwen2" / "model.safetensors").string();
    const std::string prefix = "model.layers.0.self_attn.";
    const gqa::LoadedWeights whole = gqa::load_safetensors(file, prefix, hf.config);
    for (int rank = 0; rank < 2; ++rank) {
        const gqa::HeadShard shard = gqa::head_shard(hf.config, rank, 2);
        expect_same_weights(gqa::load_safetensors_shard(file, prefix, hf.config, shard),
                            gqa::shard_weights(hf.config, whole.view(), shard));
    }
    EXPECT_THAT(gqa_test::error_of([&] { gqa::load_safetensors_shard(file, prefix, hf.config, {0, 3, 0, 21}); }),
                HasSubstr("is not a shard of 2 kv heads"));
}

TEST(HeadShard, SplitsKvHeadsEvenlyOrReplicatesThem) {
    const gqa::Config gqa = gqa_test::make_config(kEmbedDim, 8, 4, 16);
    // 4 kv heads over 3 ranks: 2, 1, 1, each with its 2 query heads; the bias on rank 0.
    const int want[3][4] = {{0, 2, 0, 4}, {2, 3, 4, 6}, {3, 4, 6, 8}};
    for (int rank = 0; rank < 3; ++rank) {
        const gqa::HeadShard s = gqa::head_shard(gqa, rank, 3);
        EXPECT_THAT((std::vector{s.kv_begin, s.kv_end, s.q_begin, s.q_end}),
                    testing::ElementsAreArray(want[rank]));
        EXPECT_EQ(s.adds_output_bias, rank == 0);
    }
    // MQA over 4 ranks: the kv head on each, 6 query heads as 2, 2, 1, 1.
    const gqa::Config mqa = gqa_test::make_config(kEmbedDim, 6, 1, 16);
    const int mqa_want[4][2] = {{0, 2}, {2, 4}, {4, 5}, {5, 6}};
    for (int rank = 0; rank < 4; ++rank) {
        const gqa::HeadShard s = gqa::head_shard(mqa, rank, 4);
        EXPECT_EQ(s.kv_begin, 0);
        EXPECT_EQ(s.kv_end, 1);
        EXPECT_EQ(s.q_begin, mqa_want[rank][0]);
        EXPECT_EQ(s.q_end, mqa_want[rank][1]);
    }
}

TEST(HeadShard, RefusesShardsTheLayoutCannotHave) {
    const gqa::Config gqa = gqa_test::make_config(kEmbedDim, 8, 4, 16);
    using gqa_test::error_of;
    EXPECT_THAT(error_of([&] { gqa::head_shard(gqa, 0, 0); }), HasSubstr("ranks is 0; expected >= 1"));
    EXPECT_THAT(error_of([&] { gqa::head_shard(gqa, 3, 3); }), HasSubstr("rank 3 is outside [0, 3)"));
    EXPECT_THAT(error_of([&] { gqa::head_shard(gqa, -1, 3); }), HasSubstr("rank -1 is outside [0, 3)"));
    EXPECT_THAT(error_of([&] { gqa::head_shard(gqa, 0, 6); }),
                HasSubstr("6 ranks for 4 kv heads: with more ranks than kv heads, ranks must be a multiple"));
    const gqa::Config mha = gqa_test::make_config(kEmbedDim, 2, 2, 16);
    EXPECT_THAT(error_of([&] { gqa::head_shard(mha, 0, 4); }),
                HasSubstr("each kv head's 1 query heads would be split over 2 ranks"));
    gqa::Config olmo = gqa;
    olmo.qk_norm = gqa::QkNorm::all_heads;
    EXPECT_THAT(error_of([&] { gqa::head_shard(olmo, 0, 2); }), HasSubstr("qk_norm all_heads"));
    gqa::Config invalid = gqa;
    invalid.num_kv_heads = 3;
    EXPECT_THAT(error_of([&] { gqa::head_shard(invalid, 0, 2); }), HasSubstr("num_kv_heads"));

    // A shard that splits a group across kv heads, or reaches past the layer.
    EXPECT_THAT(error_of([&] { gqa::shard_config(gqa, {0, 2, 1, 4}); }), HasSubstr("is not a shard of 4 kv heads"));
    EXPECT_THAT(error_of([&] { gqa::shard_config(gqa, {3, 5, 6, 10}); }), HasSubstr("is not a shard of 4 kv heads"));
    EXPECT_THAT(error_of([&] { gqa::shard_config(gqa, {1, 1, 2, 2}); }), HasSubstr("is not a shard of 4 kv heads"));

    const gqa_test::LayerWeights w = gqa_test::random_weights(gqa, false, 3);
    std::vector<int8_t> q(size_t(w.wq.values.size()), 1);
    std::vector<float> scales(size_t(8 * 16 * 2), 0.5f);
    gqa::Weights int8 = w.view();
    int8.wq = gqa::WeightView(q.data(), scales.data(), w.wq.shape);
    EXPECT_THAT(error_of([&] { gqa::shard_weights(gqa, int8, gqa::head_shard(gqa, 0, 2)); }),
                HasSubstr("not int8"));
    gqa::Weights short_wk = w.view();
    short_wk.wk.shape = {16, kEmbedDim};
    EXPECT_THAT(error_of([&] { gqa::shard_weights(gqa, short_wk, gqa::head_shard(gqa, 0, 2)); }), HasSubstr("wk"));
}

}  // namespace
