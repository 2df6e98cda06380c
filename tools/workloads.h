// The workloads the benchmarks and the tuner run: one layer of three real models
// at batch 1, and a small shape the reference backend can time.
#pragma once

#include <array>
#include <string_view>

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

}  // namespace gqa_tools
