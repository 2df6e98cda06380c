// Every rejected input throws gqa::Error naming the offending value, and a rejected call
// leaves the KV cache byte for byte as it was.
#include "test_util.h"

#include <gmock/gmock.h>

#include <algorithm>
#include <cstddef>
#include <limits>
#include <optional>
#include <climits>
#include <string>
#include <vector>

namespace {

using gqa_test::HostTensor;
using testing::AllOf;
using testing::AnyOf;
using testing::HasSubstr;

// Every message goes to the test's properties (error_1, error_2, ... in the order
// thrown), so --gtest_output=xml lists each rejected input with what it says.
void record_message(const std::string &message) {
    static int recorded = 0;
    testing::Test::RecordProperty("error_" + std::to_string(++recorded), message);
}

// Runs `call`, which must throw gqa::Error, and returns the message.
template <typename Call>
std::string error_message(Call &&call) {
    std::string message;
    EXPECT_THROW(
        {
            try {
                call();
            } catch (const gqa::Error &error) {
                message = error.what();
                throw;
            }
        },
        gqa::Error);
    record_message(message);
    return message;
}

const auto mentions_nan = AnyOf(HasSubstr("nan"), HasSubstr("NaN"), HasSubstr("NAN"));

struct CacheSnapshot {
    std::vector<std::byte> k, v;
    std::vector<int64_t> k_shape, v_shape;
    int size;

    bool operator==(const CacheSnapshot &) const = default;
};

CacheSnapshot snapshot(const gqa::Attention &layer) {
    const auto bytes = [](const gqa::TensorView<float> &view) {
        const auto *first = reinterpret_cast<const std::byte *>(view.data);
        return std::vector<std::byte>(first, first + view.numel() * sizeof(float));
    };
    return {bytes(layer.k_cache()), bytes(layer.v_cache()), layer.k_cache().shape, layer.v_cache().shape, layer.size()};
}

// d = 30, 4 query heads, 2 kv heads, hd = 6: digits the offending values below avoid.
class Errors : public testing::TestWithParam<gqa::Backend> {
protected:
    static constexpr int cache_batch = 2, cache_len = 11, prefill = 3;

    void SetUp() override {
        layer_.emplace(config_, weights_.view(), GetParam());
        layer_->setup_cache(cache_batch, cache_len);
        layer_->forward(input(cache_batch, prefill).view());
    }

    HostTensor<float> input(int batch, int seq_len) const { return gqa_test::random_input(config_, batch, seq_len, 3); }

    void expect_rejected_at_construction(const gqa::Config &config, const gqa_test::LayerWeights &weights,
                                         const testing::Matcher<const std::string &> &about) const {
        EXPECT_THAT(error_message([&] { gqa::Attention rejected(config, weights.view(), GetParam()); }), about);
    }

    template <typename Call>
    void expect_rejected_keeping_cache(Call &&call, const testing::Matcher<const std::string &> &about) {
        const CacheSnapshot before = snapshot(*layer_);
        EXPECT_THAT(error_message(call), about);
        EXPECT_TRUE(snapshot(*layer_) == before) << "the rejected call changed the KV cache";
    }

    gqa::Config config_ = gqa_test::make_config(30, 4, 2, 6, 16);
    gqa_test::LayerWeights weights_ = gqa_test::random_weights(config_, true, 5);
    std::optional<gqa::Attention> layer_;
};

TEST_P(Errors, HeadsNotAMultipleOfKvHeads) {
    gqa::Config config = config_;
    config.num_heads = 12;
    config.num_kv_heads = 8;
    expect_rejected_at_construction(config, gqa_test::random_weights(config, false, 1),
                                    AnyOf(HasSubstr("12"), HasSubstr("8")));
}

TEST_P(Errors, NonPositiveSizes) {
    for (int gqa::Config::*size : {&gqa::Config::embed_dim, &gqa::Config::num_heads, &gqa::Config::num_kv_heads,
                                   &gqa::Config::head_dim, &gqa::Config::max_seq_len}) {
        for (int value : {0, -7}) {
            SCOPED_TRACE(value);
            gqa::Config config = config_;
            config.*size = value;
            expect_rejected_at_construction(config, weights_, HasSubstr(std::to_string(value)));
        }
    }
}

TEST_P(Errors, OddHeadDimOnlyWithRope) {
    gqa::Config config = config_;
    config.head_dim = 7;
    const auto weights = gqa_test::random_weights(config, false, 1);
    for (gqa::RopeStyle style : {gqa::RopeStyle::interleaved, gqa::RopeStyle::rotate_half}) {
        config.rope_style = style;
        expect_rejected_at_construction(config, weights, HasSubstr("head_dim is 7 with RoPE"));
    }
    config.rotary_dim = 4;  // an even part of an odd head_dim is fine
    EXPECT_NO_THROW({ gqa::Attention accepted(config, weights.view(), GetParam()); });
    config.rotary_dim = 0;
    config.rope_style = gqa::RopeStyle::none;
    EXPECT_NO_THROW({ gqa::Attention accepted(config, weights.view(), GetParam()); });
}

TEST_P(Errors, RotaryDimOddOrBeyondHeadDim) {
    for (int rotary_dim : {5, 8, -2}) {
        SCOPED_TRACE(rotary_dim);
        gqa::Config config = config_;
        config.rotary_dim = rotary_dim;
        expect_rejected_at_construction(config, weights_, HasSubstr(std::to_string(rotary_dim)));
    }
}

TEST_P(Errors, WeightOfWrongShape) {
    struct Mistake {
        const char *what;
        HostTensor<float> gqa_test::LayerWeights::*tensor;
        std::vector<int64_t> shape;  // expected: wq [24, 30], wk/wv [12, 30], wo [30, 24]
        const char *offending;
    };
    const Mistake mistakes[] = {
        {"wq rows", &gqa_test::LayerWeights::wq, {17, 30}, "17"},
        {"wk columns", &gqa_test::LayerWeights::wk, {12, 31}, "31"},
        {"wv rows", &gqa_test::LayerWeights::wv, {13, 30}, "13"},
        {"wo columns", &gqa_test::LayerWeights::wo, {30, 25}, "25"},
        {"wo rank", &gqa_test::LayerWeights::wo, {720}, "720"},
    };
    for (const Mistake &mistake : mistakes) {
        SCOPED_TRACE(mistake.what);
        gqa_test::LayerWeights weights = weights_;
        weights.*mistake.tensor = gqa_test::random_normal(mistake.shape, 0.1, 1);
        expect_rejected_at_construction(config_, weights, HasSubstr(mistake.offending));
    }

    gqa_test::LayerWeights weights = weights_;
    weights.bq = gqa_test::random_normal({23}, 0.1, 1);
    expect_rejected_at_construction(config_, weights, HasSubstr("23"));
    weights = weights_;
    weights.bo = gqa_test::random_normal({29}, 0.1, 1);
    expect_rejected_at_construction(config_, weights, HasSubstr("29"));
}

TEST_P(Errors, WindowNotPositive) {
    for (int window : {0, -2}) {
        gqa::Config config = config_;
        config.window = window;
        expect_rejected_at_construction(config, weights_, AllOf(HasSubstr("window"), HasSubstr(std::to_string(window))));
    }
}

TEST_P(Errors, NanOrInfinityInConfig) {
    for (double gqa::Config::*value : {&gqa::Config::softcap, &gqa::Config::scale, &gqa::Config::rope_base}) {
        gqa::Config config = config_;
        config.*value = std::numeric_limits<double>::quiet_NaN();
        expect_rejected_at_construction(config, weights_, mentions_nan);
        config.*value = std::numeric_limits<double>::infinity();
        expect_rejected_at_construction(config, weights_, HasSubstr("inf"));
    }
}

TEST_P(Errors, NegativeScaleSoftcapOrLayerId) {
    gqa::Config config = config_;
    config.scale = -0.5;
    expect_rejected_at_construction(config, weights_, HasSubstr("-0.5"));
    config = config_;
    config.softcap = -3;
    expect_rejected_at_construction(config, weights_, HasSubstr("-3"));
    config = config_;
    config.layer_id = -4;
    expect_rejected_at_construction(config, weights_, HasSubstr("-4"));
}

TEST_P(Errors, WeightWithoutData) {
    gqa_test::LayerWeights weights = weights_;
    gqa::Weights view = weights.view();
    view.wk.data = nullptr;
    EXPECT_THAT(error_message([&] { gqa::Attention rejected(config_, view, GetParam()); }),
                AllOf(HasSubstr("wk"), HasSubstr("no data")));
}

TEST_P(Errors, InputOfWrongRankOrWidth) {
    const HostTensor<float> rank5 = gqa_test::random_normal({1, 1, 1, 3, 30}, 1.0, 1);
    expect_rejected_keeping_cache([&] { layer_->forward(rank5.view()); },
                                  AnyOf(HasSubstr("5"), HasSubstr("1, 1, 1, 3, 30")));
    const HostTensor<float> too_wide = gqa_test::random_normal({cache_batch, 3, 31}, 1.0, 1);
    expect_rejected_keeping_cache([&] { layer_->forward(too_wide.view()); }, HasSubstr("31"));
}

TEST_P(Errors, EmptyInput) {
    for (const std::vector<int64_t> &shape : {std::vector<int64_t>{0, 3, 30}, std::vector<int64_t>{cache_batch, 0, 30}}) {
        const std::vector<float> none;
        expect_rejected_keeping_cache([&] { layer_->forward({none.data(), shape}); },
                                      HasSubstr(gqa::shape_string(shape)));
    }
    const HostTensor<float> x = input(cache_batch, 3);
    expect_rejected_keeping_cache([&] { layer_->forward({nullptr, x.shape}); }, HasSubstr("x has no data"));
}

TEST_P(Errors, SequenceLongerThanMaxSeqLen) {
    gqa::Attention layer(config_, weights_.view(), GetParam());
    EXPECT_THAT(error_message([&] { layer.forward(input(1, 17).view()); }), HasSubstr("17"));
}

TEST_P(Errors, BadInputPos) {
    const HostTensor<float> x = input(cache_batch, 3);
    const HostTensor<int32_t> wrong_shape{{0, 1, 2, 3, 4}, {5}};
    const HostTensor<int32_t> negative{{0, -3, 2}, {3}};
    const HostTensor<int32_t> beyond_table{{0, 1, 21}, {3}};  // max_seq_len is 16
    expect_rejected_keeping_cache([&] { layer_->forward(x.view(), std::nullopt, wrong_shape.view()); }, HasSubstr("5"));
    expect_rejected_keeping_cache([&] { layer_->forward(x.view(), std::nullopt, negative.view()); }, HasSubstr("-3"));
    expect_rejected_keeping_cache([&] { layer_->forward(x.view(), std::nullopt, beyond_table.view()); },
                                  HasSubstr("21"));
    const gqa::TensorView<int32_t> without_data{nullptr, {3}};
    expect_rejected_keeping_cache([&] { layer_->forward(x.view(), std::nullopt, without_data); },
                                  HasSubstr("input_pos has no data"));
}

// The cache holds 11 slots while the RoPE table has 16 positions.
TEST_P(Errors, InputPosPastTheCache) {
    const HostTensor<float> x = input(cache_batch, 1);
    const HostTensor<int32_t> past{{11, 4}, {cache_batch}};
    expect_rejected_keeping_cache([&] { layer_->forward(x.view(), std::nullopt, past.view()); },
                                  AllOf(HasSubstr("11"), HasSubstr("KV cache")));
}

// SetUp wrote positions 0..2 in both rows.
TEST_P(Errors, InputPosNotIncreasingInTheCache) {
    const HostTensor<float> step = input(cache_batch, 1);
    const HostTensor<int32_t> repeats_last{{3, 2}, {cache_batch}};  // row 1 goes back to 2
    expect_rejected_keeping_cache([&] { layer_->forward(step.view(), std::nullopt, repeats_last.view()); },
                                  AllOf(HasSubstr("position 2 of batch row 1"), HasSubstr("follows position 2")));
    const HostTensor<float> chunk = input(cache_batch, 3);
    const HostTensor<int32_t> out_of_order{{4, 6, 5}, {3}};
    expect_rejected_keeping_cache([&] { layer_->forward(chunk.view(), std::nullopt, out_of_order.view()); },
                                  AllOf(HasSubstr("position 5"), HasSubstr("follows position 6")));
    // After reset() the positions start over.
    layer_->reset();
    const HostTensor<int32_t> from_zero{{0, 1, 2}, {3}};
    EXPECT_NO_THROW(layer_->forward(chunk.view(), std::nullopt, from_zero.view()));
}

TEST_P(Errors, CacheOverflow) {
    const HostTensor<float> x = input(cache_batch, 9);  // 3 + 9 > 11
    expect_rejected_keeping_cache([&] { layer_->forward(x.view()); }, AnyOf(HasSubstr("9"), HasSubstr("12")));
}

// Sizes whose arrays Halide could not address (or whose bytes overflow) are named
// as given, before anything is allocated or narrowed.
TEST_P(Errors, OversizedCacheIsRefusedKeepingTheOldOne) {
    for (const auto &sizes : {std::pair{1000000, 1 << 30}, std::pair{INT_MAX, INT_MAX}}) {
        const int batch = sizes.first, slots = sizes.second;  // clang 14 lambdas cannot capture bindings
        expect_rejected_keeping_cache([&] { layer_->setup_cache(batch, slots); },
                                      AllOf(HasSubstr("KV cache"), HasSubstr(std::to_string(batch)),
                                            HasSubstr(std::to_string(slots))));
    }
}

TEST_P(Errors, MaxSeqLenBeyondTheRopeTable) {
    gqa::Config config = config_;
    config.max_seq_len = INT_MAX;
    expect_rejected_at_construction(config, weights_, AllOf(HasSubstr("RoPE table"), HasSubstr("max_seq_len")));
}

TEST_P(Errors, HugeInputIsNamedAsGiven) {
    const float value = 0;
    const gqa::TensorView<float> huge{&value, {int64_t(1) << 40, int64_t(1) << 40, config_.embed_dim}};
    expect_rejected_keeping_cache([&] { layer_->forward(huge, std::span<float>()); }, HasSubstr("1099511627776"));
    const gqa::TensorView<float> wide_batch{&value, {int64_t(1) << 40, 1, config_.embed_dim}};
    expect_rejected_keeping_cache([&] { layer_->forward(wide_batch, std::span<float>()); },
                                  HasSubstr("batch 1099511627776"));
}

TEST_P(Errors, BatchDiffersFromCache) {
    const HostTensor<float> x = input(5, 1);
    expect_rejected_keeping_cache([&] { layer_->forward(x.view()); }, HasSubstr("5"));
}

TEST_P(Errors, MaskOfWrongShape) {
    const HostTensor<float> x = input(cache_batch, 2);
    const HostTensor<uint8_t> mask{std::vector<uint8_t>(cache_batch * 2 * 7, 1), {cache_batch, 2, 7}};
    expect_rejected_keeping_cache([&] { layer_->forward(x.view(), mask.view()); },
                                  AllOf(HasSubstr("[2, 2, 7]"), HasSubstr("[2, 2, 5]")));
    const HostTensor<uint8_t> rank2{std::vector<uint8_t>(2 * 5, 1), {2, 5}};
    expect_rejected_keeping_cache([&] { layer_->forward(x.view(), rank2.view()); }, HasSubstr("[2, 5]"));
    const gqa::TensorView<uint8_t> without_data{nullptr, {cache_batch, 2, 5}};
    expect_rejected_keeping_cache([&] { layer_->forward(x.view(), without_data); }, HasSubstr("mask has no data"));
}

TEST_P(Errors, AppendCacheOfWrongShapeOrOverflowing) {
    const auto kv = [](int64_t batch, int64_t heads, int64_t n, int64_t hd) {
        return gqa_test::random_normal({batch, heads, n, hd}, 1.0, 2);
    };
    const HostTensor<float> good = kv(cache_batch, 2, 2, 6);
    for (const HostTensor<float> &bad : {kv(3, 2, 2, 6), kv(cache_batch, 1, 2, 6), kv(cache_batch, 2, 2, 5)}) {
        expect_rejected_keeping_cache([&] { layer_->append_cache(bad.view(), good.view()); },
                                      HasSubstr(gqa::shape_string(bad.shape)));
    }
    const HostTensor<float> three = kv(cache_batch, 2, 3, 6);
    expect_rejected_keeping_cache([&] { layer_->append_cache(good.view(), three.view()); },
                                  AllOf(HasSubstr("2"), HasSubstr("3")));
    const HostTensor<float> too_many = kv(cache_batch, 2, 9, 6);  // 3 cached + 9 > 11
    expect_rejected_keeping_cache([&] { layer_->append_cache(too_many.view(), too_many.view()); },
                                  AllOf(HasSubstr("overflow"), HasSubstr("9"), HasSubstr("11")));
}

TEST_P(Errors, CacheReadAsTheOtherType) {
    expect_rejected_keeping_cache([&] { layer_->k_cache_f16(); }, HasSubstr("k_cache()"));
    expect_rejected_keeping_cache([&] { layer_->v_cache_f16(); }, HasSubstr("v_cache()"));
}

TEST_P(Errors, CacheAndOutputsBeforeThereAreAny) {
    gqa::Attention fresh(config_, weights_.view(), GetParam());
    EXPECT_THAT(error_message([&] { fresh.k_cache(); }), HasSubstr("setup_cache"));
    EXPECT_THAT(error_message([&] { fresh.append_cache(input(1, 1).view(), input(1, 1).view()); }),
                HasSubstr("setup_cache"));
    EXPECT_THAT(error_message([&] { fresh.z(); }), HasSubstr("forward"));
}

TEST_P(Errors, RopeAloneRejectsBadInput) {
    const HostTensor<float> x = gqa_test::random_normal({1, 3, 4, 6}, 1.0, 4);
    std::vector<float> out(x.values.size());
    EXPECT_THAT(error_message([&] { gqa::apply_rope(config_, x.view(), out, std::nullopt, -1, GetParam()); }),
                HasSubstr("-1"));
    std::vector<float> short_out(x.values.size() - 1);
    EXPECT_THAT(error_message([&] { gqa::apply_rope(config_, x.view(), short_out, std::nullopt, 0, GetParam()); }),
                HasSubstr(std::to_string(short_out.size())));
    const HostTensor<float> wrong_head_dim = gqa_test::random_normal({1, 3, 4, 7}, 1.0, 4);
    EXPECT_THAT(error_message([&] { gqa::apply_rope(config_, wrong_head_dim.view(), out, std::nullopt, 0, GetParam()); }),
                HasSubstr("[1, 3, 4, 7]"));
    EXPECT_THAT(error_message([&] { gqa::apply_rope(config_, x.view(), out, std::nullopt, 14, GetParam()); }),
                HasSubstr("16"));  // positions 14..16 on a 16-position table
}

TEST_P(Errors, OutputSpanOfWrongSize) {
    const HostTensor<float> x = input(cache_batch, 3);
    std::vector<float> out(cache_batch * 3 * 30 - 1);
    expect_rejected_keeping_cache([&] { layer_->forward(x.view(), out); }, AnyOf(HasSubstr("179"), HasSubstr("180")));
}

TEST_P(Errors, PatternWithoutRecording) {
    expect_rejected_keeping_cache([&] { layer_->pattern(); }, HasSubstr("pattern"));
}

TEST_P(Errors, NonPositiveCacheSizes) {
    expect_rejected_keeping_cache([&] { layer_->setup_cache(0, cache_len); }, HasSubstr("0"));
    expect_rejected_keeping_cache([&] { layer_->setup_cache(cache_batch, -4); }, HasSubstr("-4"));
}

INSTANTIATE_TEST_SUITE_P(AllBackends, Errors, testing::ValuesIn(gqa_test::runnable_backends()),
                         gqa_test::backend_test_name);

TEST(BackendErrors, UnknownName) {
    EXPECT_THAT(error_message([] { gqa::backend_from_name("nope"); }), HasSubstr("nope"));
}

// Every backend this build or machine lacks (not built, or a GPU one without a
// device) is refused by name and reason, by the layer, apply_rope and backend_isa.
TEST(BackendErrors, UnavailableAtConstruction) {
    const std::vector<gqa::Backend> available = gqa::available_backends();
    const gqa::Config config = gqa_test::make_config(32, 4, 2, 8);
    const auto weights = gqa_test::random_weights(config, false, 1);
    int refused = 0;
    for (gqa::Backend backend : {gqa::Backend::cuda, gqa::Backend::opencl, gqa::Backend::arm, gqa::Backend::x86}) {
        if (std::find(available.begin(), available.end(), backend) != available.end()) continue;
        ++refused;
        const std::string reason = gqa::backend_unavailable_reason(backend);
        EXPECT_FALSE(reason.empty());
        const auto names_it = AllOf(HasSubstr(std::string(gqa::backend_name(backend))), HasSubstr(reason));
        EXPECT_THAT(error_message([&] { gqa::Attention rejected(config, weights.view(), backend); }), names_it);
        const HostTensor<float> x = gqa_test::random_normal({1, 2, 4, 8}, 1.0, 1);
        std::vector<float> out(x.values.size());
        EXPECT_THAT(error_message([&] { gqa::apply_rope(config, x.view(), out, std::nullopt, 0, backend); }), names_it);
        EXPECT_THAT(error_message([&] { gqa::backend_isa(backend); }), names_it);
    }
    if (refused == 0) GTEST_SKIP() << "every backend is available here";
}

}  // namespace
