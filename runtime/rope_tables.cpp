// RoPE as the tables the pipelines read, computed once per layer in double (or
// in fp32 as torchtune does, when asked).
#include <cmath>

#include "layout.h"
#include "backend.h"
#include "validation.h"

namespace gqa::detail {

RopeTables make_rope_tables(const Config &c) {
    RopeTables t;
    t.head_dim = c.head_dim;
    t.positions = c.max_seq_len;
    t.rotary_dim = effective_rotary_dim(c);
    t.base = c.rope_base;
    t.style = c.rope_style == RopeStyle::interleaved   ? layout::kRopeInterleaved
              : c.rope_style == RopeStyle::rotate_half ? layout::kRopeRotateHalf
                                                       : layout::kRopeNone;
    t.cos.assign(size_t(t.positions) * t.head_dim, 1.f);
    t.sin.assign(size_t(t.positions) * t.head_dim, 0.f);
    const int half = t.rotary_dim / 2;
    for (int p = 0; p < t.positions; ++p) {
        float *cos_row = &t.cos[size_t(p) * t.head_dim], *sin_row = &t.sin[size_t(p) * t.head_dim];
        for (int j = 0; j < half; ++j) {
            float cos_value, sin_value;
            if (c.rope_fp32_angles) {
                // torchtune: theta = 1 / base ** (arange(0, R, 2).float() / R), then
                // positions.float() * theta, all fp32.
                const float theta = 1.f / std::pow(float(c.rope_base), float(2 * j) / float(t.rotary_dim));
                const float angle = float(p) * theta;
                cos_value = std::cos(angle), sin_value = std::sin(angle);
            } else {
                // In double, then rounded once: the fp64 math the conformance vectors use.
                const double angle = p * std::pow(c.rope_base, -2.0 * j / t.rotary_dim);
                cos_value = float(std::cos(angle)), sin_value = float(std::sin(angle));
            }
            const int a = t.style == layout::kRopeInterleaved ? 2 * j : j;
            const int b = t.style == layout::kRopeInterleaved ? 2 * j + 1 : j + half;
            cos_row[a] = cos_row[b] = cos_value;
            sin_row[a] = -sin_value;
            sin_row[b] = sin_value;
        }
    }
    return t;
}

}  // namespace detail

