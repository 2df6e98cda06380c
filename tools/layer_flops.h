// Floating-point work of one attention layer, shared by the demo and the benchmarks.
#pragma once

#include "gqa/attention.hpp"

namespace gqa_tools {

// Two flops per multiply-add: the four projections for `tokens` tokens, plus
// q.k and p.v over `avg_keys` visible keys per query.
inline double layer_flops(const gqa::Config &c, double tokens, double avg_keys) {
    const double d = c.embed_dim, q = double(c.num_heads) * c.head_dim, kv = double(c.num_kv_heads) * c.head_dim;
    return 2 * tokens * d * (2 * q + 2 * kv) + 4 * tokens * avg_keys * q;
}

}  // namespace gqa_tools
