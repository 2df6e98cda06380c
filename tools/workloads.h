// The workloads the benchmarks and the tuner run: one layer of three real models
// at batch 1, and a small shape the reference backend can time; and the random
// values they are filled with.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gqa/attention.hpp"

namespace gqa_tools {

struct Workload {
    const char *name;
    gqa::Config config;
    bool bias;  // q/k/v projections with bias (Qwen2)
};

inline std::array<Workload, 4> workloads(int max_seq_len) {
    return {{
        {"small", {.embed_dim = 256, .num_heads = 8, .num_kv_heads = 2, .head_dim = 32, .max_seq_len = max_seq_len}, false},
        // Llama-3.2-1B
        {"W1", {.embed_dim = 2048, .num_heads = 32, .num_kv_heads = 8, .head_dim = 64, .max_seq_len = max_seq_len}, false},
        // Llama-3-8B
        {"W2", {.embed_dim = 4096, .num_heads = 32, .num_kv_heads = 8, .head_dim = 128, .max_seq_len = max_seq_len}, false},
        // Qwen2.5-0.5B
        {"W3", {.embed_dim = 896, .num_heads = 14, .num_kv_heads = 2, .head_dim = 64, .max_seq_len = max_seq_len}, true},
    }};
}

// n values ~ N(0, stddev); the same seed gives the same values.
inline std::vector<float> random_values(size_t n, float stddev, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.f, stddev);
    std::vector<float> v(n);
    for (float &x : v) x = normal(rng);
    return v;
}

// One layer's weights in nn.Linear layout, ~N(0, 1/sqrt(fan_in)) so that q, k, v
// and the output come out ~N(0, 1), and N(0, 0.1) biases where the workload has
// them; drawn from seeds seed .. seed + 6.
struct WorkloadWeights {
    std::vector<float> wq, wk, wv, wo, bq, bk, bv;

    WorkloadWeights(const Workload &w, uint32_t seed) {
        const gqa::Config &c = w.config;
        const size_t d = c.embed_dim, q = size_t(c.num_heads) * c.head_dim, kv = size_t(c.num_kv_heads) * c.head_dim;
        const float scale = 1.f / std::sqrt(float(d));
        wq = random_values(q * d, scale, seed), wk = random_values(kv * d, scale, seed + 1);
        wv = random_values(kv * d, scale, seed + 2), wo = random_values(d * q, 1.f / std::sqrt(float(q)), seed + 3);
        if (w.bias) {
            bq = random_values(q, 0.1f, seed + 4), bk = random_values(kv, 0.1f, seed + 5);
            bv = random_values(kv, 0.1f, seed + 6);
        }
    }

    gqa::Weights view(const gqa::Config &c) const {
        const int64_t d = c.embed_dim, q = int64_t(c.num_heads) * c.head_dim, kv = int64_t(c.num_kv_heads) * c.head_dim;
        gqa::Weights w{{wq.data(), {q, d}}, {wk.data(), {kv, d}}, {wv.data(), {kv, d}}, {wo.data(), {d, q}}};
        if (!bq.empty()) w.bq = {bq.data(), {q}}, w.bk = {bk.data(), {kv}}, w.bv = {bv.data(), {kv}};
        return w;
    }
};

}  // namespace gqa_tools
