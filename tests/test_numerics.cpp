// Numerical edges on every backend: extreme logits stay finite, and a NaN in one
// batch row's input never reaches another row's outputs or cache.
#include <cmath>
#include <limits>
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

// Batch row 0 carries a NaN in one token; row 1 must come out exactly as without it,
// outputs and cache, through a prefill and a decode step.
TEST_P(Numerics, NanInOneBatchRowStaysInThatRow) {
    const gqa::Config config = gqa_test::make_config(64, 4, 2, 16, 32);
    const gqa_test::LayerWeights weights = random_weights(config, true, 11);
    constexpr int kSeq = 7;
    auto run = [&](bool with_nan, std::vector<float> *cache) {
        gqa::Attention layer(config, weights.view(), GetParam());
        layer.setup_cache(2, 32);
        gqa_test::HostTensor<float> x = random_input(config, 2, kSeq, 12);
        if (with_nan) x.values[3 * config.embed_dim + 5] = std::numeric_limits<float>::quiet_NaN();  // row 0, token 3
        std::vector<float> out = layer.forward(x.view());
        const std::vector<float> step = layer.forward(random_input(config, 2, 1, 13).view());
        out.insert(out.end(), step.begin(), step.end());
        *cache = gqa_test::copy_of(layer.k_cache());
        const std::vector<float> v = gqa_test::copy_of(layer.v_cache());
        cache->insert(cache->end(), v.begin(), v.end());
        return out;
    };
    std::vector<float> clean_cache, nan_cache;
    const std::vector<float> clean = run(false, &clean_cache), dirty = run(true, &nan_cache);

    const size_t d = size_t(config.embed_dim), prefill_row = kSeq * d;
    // Outputs: [2, kSeq, d] of the prefill, then [2, 1, d] of the decode step.
    const std::vector<float> clean_row1(clean.begin() + prefill_row, clean.begin() + 2 * prefill_row);
    const std::vector<float> dirty_row1(dirty.begin() + prefill_row, dirty.begin() + 2 * prefill_row);
    EXPECT_EQ(dirty_row1, clean_row1) << "batch row 1's prefill output changed";
    const std::vector<float> clean_step1(clean.end() - d, clean.end()), dirty_step1(dirty.end() - d, dirty.end());
    EXPECT_EQ(dirty_step1, clean_step1) << "batch row 1's decode output changed";

    // Caches [b, n_kv, T, hd] for k then v: row 1 is the second half of each.
    const size_t per_cache = clean_cache.size() / 2, per_row = per_cache / 2;
    for (size_t which : {size_t(0), per_cache}) {
        const std::vector<float> want(clean_cache.begin() + which + per_row, clean_cache.begin() + which + per_cache);
        const std::vector<float> got(nan_cache.begin() + which + per_row, nan_cache.begin() + which + per_cache);
        EXPECT_EQ(got, want) << (which ? "v" : "k") << " cache of batch row 1 changed";
    }
}

INSTANTIATE_TEST_SUITE_P(AllBackends, Numerics, testing::ValuesIn(gqa_test::runnable_backends()),
                         gqa_test::backend_test_name);

}  // namespace
