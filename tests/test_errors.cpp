// Every rejected input throws gqa::Error naming the offending value, and a rejected call
// leaves the KV cache byte for byte as it was.
#include "test_util.h"

#include <gmock/gmock.h>

#include <algorithm>
#include <cstddef>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace {

using gqa_test::HostTensor;
using testing::AnyOf;
using testing::HasSubstr;

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
        expect_rejected_at_construction(config, weights, HasSubstr("7"));
    }
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

TEST_P(Errors, NegativeWindow) {
    gqa::Config config = config_;
    config.window = -2;
    expect_rejected_at_construction(config, weights_, HasSubstr("-2"));
}

TEST_P(Errors, NanSoftcapOrScale) {
    gqa::Config config = config_;
    config.softcap = std::numeric_limits<double>::quiet_NaN();
    expect_rejected_at_construction(config, weights_, mentions_nan);
    config = config_;
    config.scale = std::numeric_limits<double>::quiet_NaN();
    expect_rejected_at_construction(config, weights_, mentions_nan);
}

TEST_P(Errors, InputOfWrongRankOrWidth) {
    const HostTensor<float> rank5 = gqa_test::random_normal({1, 1, 1, 3, 30}, 1.0, 1);
    expect_rejected_keeping_cache([&] { layer_->forward(rank5.view()); },
                                  AnyOf(HasSubstr("5"), HasSubstr("1, 1, 1, 3, 30")));
    const HostTensor<float> too_wide = gqa_test::random_normal({cache_batch, 3, 31}, 1.0, 1);
    expect_rejected_keeping_cache([&] { layer_->forward(too_wide.view()); }, HasSubstr("31"));
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
}

TEST_P(Errors, CacheOverflow) {
    const HostTensor<float> x = input(cache_batch, 9);  // 3 + 9 > 11
    expect_rejected_keeping_cache([&] { layer_->forward(x.view()); }, AnyOf(HasSubstr("9"), HasSubstr("12")));
}

TEST_P(Errors, BatchDiffersFromCache) {
    const HostTensor<float> x = input(5, 1);
    expect_rejected_keeping_cache([&] { layer_->forward(x.view()); }, HasSubstr("5"));
}

TEST_P(Errors, MaskOfWrongShape) {
    const HostTensor<float> x = input(cache_batch, 2);
    const HostTensor<uint8_t> mask{std::vector<uint8_t>(cache_batch * 2 * 7, 1), {cache_batch, 2, 7}};
    expect_rejected_keeping_cache([&] { layer_->forward(x.view(), mask.view()); }, HasSubstr("7"));
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

TEST(BackendErrors, UnavailableAtConstruction) {
    const std::vector<gqa::Backend> available = gqa::available_backends();
    for (gqa::Backend backend : {gqa::Backend::cuda, gqa::Backend::arm, gqa::Backend::x86}) {
        if (std::find(available.begin(), available.end(), backend) != available.end()) continue;
        const gqa::Config config = gqa_test::make_config(32, 4, 2, 8);
        const auto weights = gqa_test::random_weights(config, false, 1);
        EXPECT_THAT(error_message([&] { gqa::Attention rejected(config, weights.view(), backend); }),
                    HasSubstr(std::string(gqa::backend_name(backend))));
        return;
    }
    GTEST_SKIP() << "every backend is available here";
}

}  // namespace
