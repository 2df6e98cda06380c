// Several layers, each with its own KV cache, driven from several threads at once
// must give exactly what they give one at a time: the library keeps no hidden
// shared state between gqa::Attention objects (the Halide runtime's thread pool
// and the pipelines' dispatch are shared, and must be safe to share).
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

namespace {

using gqa_test::random_input;
using gqa_test::random_weights;

struct Sequence {
    gqa::Config config;
    gqa::CacheType cache;
};

// GQA, MHA and MQA geometries; one with an fp16 cache and a sliding window.
std::vector<Sequence> sequences() {
    std::vector<Sequence> all;
    all.push_back({gqa_test::make_config(64, 8, 2, 8, 40), gqa::CacheType::f32});
    all.push_back({gqa_test::make_config(96, 4, 4, 24, 40), gqa::CacheType::f32});
    all.push_back({gqa_test::make_config(64, 4, 1, 16, 40), gqa::CacheType::f32});
    Sequence windowed{gqa_test::make_config(48, 6, 3, 8, 40), gqa::CacheType::f16};
    windowed.config.window = 5;
    all.push_back(windowed);
    return all;
}

constexpr int kBatch = 2, kPrefill = 13, kDecodes = 6;

// A prefill into the cache, then single-token decodes; every output and the cache
// after the last step, concatenated.
std::vector<float> run_sequence(const Sequence &s, gqa::Backend backend, uint32_t seed) {
    const gqa_test::LayerWeights weights = random_weights(s.config, true, seed);
    gqa::Attention layer(s.config, weights.view(), backend);
    layer.setup_cache(kBatch, s.config.max_seq_len, s.cache);
    std::vector<float> trace = layer.forward(random_input(s.config, kBatch, kPrefill, seed + 1).view());
    for (int step = 0; step < kDecodes; ++step) {
        const std::vector<float> out = layer.forward(random_input(s.config, kBatch, 1, seed + 2 + step).view());
        trace.insert(trace.end(), out.begin(), out.end());
    }
    if (s.cache == gqa::CacheType::f32) {
        const std::vector<float> k = gqa_test::copy_of(layer.k_cache()), v = gqa_test::copy_of(layer.v_cache());
        trace.insert(trace.end(), k.begin(), k.end());
        trace.insert(trace.end(), v.begin(), v.end());
    } else {
        const gqa::TensorView<uint16_t> k = layer.k_cache_f16(), v = layer.v_cache_f16();
        for (const auto *view : {&k, &v}) {
            for (int64_t i = 0; i < view->numel(); ++i) trace.push_back(float(view->data[i]));
        }
    }
    return trace;
}

class Concurrency : public testing::TestWithParam<gqa::Backend> {};

TEST_P(Concurrency, LayersOnSeveralThreadsMatchOneAtATime) {
    const std::vector<Sequence> all = sequences();
    // Two copies of every sequence, so identical layers also run side by side.
    auto run = [&](size_t i) { return run_sequence(all[i % all.size()], GetParam(), uint32_t(100 + i % all.size())); };
    std::vector<std::vector<float>> alone;
    for (size_t i = 0; i < 2 * all.size(); ++i) alone.push_back(run(i));
    for (int round = 0; round < 3; ++round) {
        std::vector<std::vector<float>> together(alone.size());
        std::vector<std::string> errors(alone.size());
        std::vector<std::thread> threads;
        for (size_t i = 0; i < alone.size(); ++i) {
            threads.emplace_back([&, i] {
                try {
                    together[i] = run(i);
                } catch (const gqa::Error &e) {
                    errors[i] = e.what();
                }
            });
        }
        for (std::thread &t : threads) t.join();
        for (size_t i = 0; i < alone.size(); ++i) {
            ASSERT_EQ(errors[i], "") << "sequence " << i << " in round " << round;
            ASSERT_EQ(together[i], alone[i]) << "sequence " << i << " in round " << round
                                             << " differs from its run alone";
        }
    }
}

INSTANTIATE_TEST_SUITE_P(AllBackends, Concurrency, testing::ValuesIn(gqa_test::runnable_backends()),
                         gqa_test::backend_test_name);

}  // namespace
