// Numerical edges on every backend: extreme logits stay finite, and a NaN in one
// token's input reaches exactly the outputs and cache slot the documented rule names.
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <optional>
#include <vector>

#include "test_util.h"

namespace {

using gqa_test::random_input;
using gqa_test::random_weights;

class Numerics : public testing::TestWithParam<gqa::Backend> {};

bool all_finite(const std::vector<float> &values) {
    for (float v : values) {
        if (!std::isfinite(v)) return false;
    }
    return true;
}

// Scores of about +-1e4 (scale 1000 on q.k of order +-10): the max-subtracted
// softmax must not overflow to inf or produce 0/0.
TEST_P(Numerics, ExtremeLogitsStayFinite) {
    for (double scale : {300.0, 1000.0}) {
        gqa::Config config = gqa_test::make_config(64, 4, 2, 16, 32);
        config.scale = scale;
        const gqa_test::LayerWeights weights = random_weights(config, false, 7);
        gqa::Attention layer(config, weights.view(), GetParam());
        layer.setup_cache(2, 32);
        const std::vector<float> prefill = layer.forward(random_input(config, 2, 11, 8).view());
        const std::vector<float> z = gqa_test::copy_of(layer.z());
        const std::vector<float> decode = layer.forward(random_input(config, 2, 1, 9).view());
        EXPECT_TRUE(all_finite(prefill)) << "prefill output at scale " << scale;
        EXPECT_TRUE(all_finite(z)) << "z at scale " << scale;
        EXPECT_TRUE(all_finite(decode)) << "decode output at scale " << scale;
    }
}

// The documented NaN rule (attention.hpp): a NaN in one token's x reaches exactly
// the queries of its batch row that may see that token, and that token's cache slot;
// every other output and cache element is bit-identical to a run without it. Checked
// causal, with a sliding window and with a mask, across a 64-slot chunk boundary,
// through a prefill and a decode step.
struct NanCase {
    const char *name;
    std::optional<int> window;
    bool mask;  // odd query slots may not see slot kNanToken
};

constexpr int kBatch = 2, kSeq = 70, kNanToken = 3;

bool sees_nan_token(const NanCase &c, int query_slot) {
    if (query_slot == kNanToken) return true;  // its own q is NaN
    if (query_slot < kNanToken) return false;
    if (c.window && query_slot >= kNanToken + *c.window) return false;
    return !(c.mask && query_slot < kSeq && query_slot % 2 == 1);
}

struct NanRun {
    std::vector<float> prefill, step, k_cache, v_cache;
};

NanRun run_with_optional_nan(const NanCase &c, gqa::Backend backend, bool with_nan) {
    gqa::Config config = gqa_test::make_config(64, 4, 2, 16, 128);
    config.window = c.window;
    const gqa_test::LayerWeights weights = random_weights(config, true, 11);
    gqa::Attention layer(config, weights.view(), backend);
    layer.setup_cache(kBatch, 128);
    gqa_test::HostTensor<float> x = random_input(config, kBatch, kSeq, 12);
    if (with_nan) x.values[kNanToken * config.embed_dim + 5] = std::numeric_limits<float>::quiet_NaN();
    std::optional<gqa_test::HostTensor<uint8_t>> mask;
    if (c.mask) {
        mask = gqa_test::HostTensor<uint8_t>{std::vector<uint8_t>(kBatch * kSeq * kSeq, 0), {kBatch, kSeq, kSeq}};
        for (int b = 0; b < kBatch; ++b) {
            for (int i = 0; i < kSeq; ++i) {
                for (int t = 0; t <= i; ++t) mask->values[(b * kSeq + i) * kSeq + t] = !(t == kNanToken && i % 2 == 1);
            }
        }
    }
    NanRun run;
    run.prefill = layer.forward(x.view(), gqa_test::optional_view(mask));
    run.step = layer.forward(random_input(config, kBatch, 1, 13).view());
    run.k_cache = gqa_test::copy_of(layer.k_cache());
    run.v_cache = gqa_test::copy_of(layer.v_cache());
    return run;
}

// Each [d] row of `got` is all NaN where `poisoned(row)`, else bit-identical to `clean`.
void expect_nan_exactly_where(const std::vector<float> &got, const std::vector<float> &clean, size_t row_width,
                              const std::function<bool(size_t)> &poisoned, const char *what) {
    ASSERT_EQ(got.size(), clean.size());
    for (size_t row = 0; row < got.size() / row_width; ++row) {
        const auto first = got.begin() + row * row_width;
        const std::vector<float> got_row(first, first + row_width);
        if (poisoned(row)) {
            EXPECT_TRUE(std::all_of(got_row.begin(), got_row.end(), [](float v) { return std::isnan(v); }))
                << what << " row " << row << " sees the NaN token but is not all NaN: " << got_row[0];
        } else {
            const auto want = clean.begin() + row * row_width;
            EXPECT_TRUE(std::equal(got_row.begin(), got_row.end(), want))
                << what << " row " << row << " does not see the NaN token but changed: " << got_row[0] << " vs "
                << *want;
        }
    }
}

TEST_P(Numerics, NanReachesExactlyTheQueriesThatSeeIt) {
    for (const NanCase &c : {NanCase{"causal", std::nullopt, false}, NanCase{"window 3", 3, false},
                             NanCase{"mask", std::nullopt, true}}) {
        SCOPED_TRACE(c.name);
        const NanRun clean = run_with_optional_nan(c, GetParam(), false);
        const NanRun dirty = run_with_optional_nan(c, GetParam(), true);
        constexpr size_t d = 64, hd = 16, kv_heads = 2, slots = 128;
        // out rows are (b, token); batch row 1 never sees it.
        expect_nan_exactly_where(dirty.prefill, clean.prefill, d,
                                 [&](size_t row) { return row < kSeq && sees_nan_token(c, int(row)); }, "prefill");
        expect_nan_exactly_where(dirty.step, clean.step, d,
                                 [&](size_t row) { return row == 0 && sees_nan_token(c, kSeq); }, "decode step");
        // cache rows are (b, kv head, slot): only the NaN token's own slot in batch row 0.
        const auto own_slot = [&](size_t row) { return row < kv_heads * slots && row % slots == kNanToken; };
        expect_nan_exactly_where(dirty.k_cache, clean.k_cache, hd, own_slot, "k cache");
        expect_nan_exactly_where(dirty.v_cache, clean.v_cache, hd, own_slot, "v cache");
    }
}

INSTANTIATE_TEST_SUITE_P(AllBackends, Numerics, testing::ValuesIn(gqa_test::runnable_backends()),
                         gqa_test::backend_test_name);

}  // namespace
