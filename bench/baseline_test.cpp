// The baseline computes the same layer as the library (so the benchmarks compare
// equal work): a prefill then decode steps, against the reference backend.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "../tests/test_util.h"
#include "baseline_layer.h"

namespace {

TEST(Baseline, MatchesTheReferenceLayer) {
    const gqa::Config config = gqa_test::make_config(96, 6, 2, 16, 64);
    const gqa_test::LayerWeights w = gqa_test::random_weights(config, true, 1);
    gqa::Weights weights = w.view();
    weights.bo = {};  // the baseline has q/k/v biases only, like Qwen2
    gqa::Attention reference(config, weights, gqa::Backend::reference);
    gqa_bench::BaselineLayer baseline({config.embed_dim, config.num_heads, config.num_kv_heads, config.head_dim,
                                       config.rope_base},
                                      w.wq.values.data(), w.wk.values.data(), w.wv.values.data(), w.wo.values.data(),
                                      w.bq->values.data(), w.bk->values.data(), w.bv->values.data());
    constexpr int batch = 2;
    reference.setup_cache(batch, 40);
    baseline.setup_cache(batch, 40);
    for (int tokens : {13, 1, 1, 1}) {
        const gqa_test::HostTensor<float> x = gqa_test::random_input(config, batch, tokens, 10 + baseline.size());
        std::vector<float> got(x.values.size());
        baseline.forward(x.values.data(), batch, tokens, got.data());
        EXPECT_TRUE(gqa_test::all_close(got, reference.forward(x.view()))) << tokens << " tokens";
    }
}

}  // namespace
