// RoPE as the tables the pipelines read, computed once per layer in double (or
// in fp32 as torchtune does, when asked), with transformers' frequency scalings
// (modeling_rope_utils.py; docs/semantics.md §4.5 restates them).
#include <algorithm>
#include <cmath>
#include <numbers>

#include "backend.h"
#include "layout.h"
#include "validation.h"

namespace gqa::detail {
namespace {

// llama3: wavelengths longer than L / low_freq_factor are interpolated (/ factor),
// shorter than L / high_freq_factor kept, and those between blended smoothly.
double llama3_inv_freq(const RopeScaling &s, double inv_freq) {
    const double wavelength = 2 * std::numbers::pi / inv_freq, context = s.original_max_position_embeddings;
    if (wavelength < context / s.high_freq_factor) return inv_freq;
    if (wavelength > context / s.low_freq_factor) return inv_freq / s.factor;
    const double smooth = (context / wavelength - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    return (1 - smooth) * inv_freq / s.factor + smooth * inv_freq;
}

// yarn's attention scale of a context stretched `scale` times.
double yarn_mscale(double scale, double mscale = 1) {
    return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

// yarn: pairs that turn fewer than beta_slow times over the original context are
// interpolated, more than beta_fast times extrapolated, with a linear ramp over the
// pair index between.
void apply_yarn(const RopeScaling &s, double base, int rotary_dim, std::vector<double> &inv_freq,
                double &attention_factor) {
    const double context = s.original_max_position_embeddings;
    auto correction_dim = [&](double rotations) {
        return rotary_dim * std::log(context / (rotations * 2 * std::numbers::pi)) / (2 * std::log(base));
    };
    double low = correction_dim(s.beta_fast), high = correction_dim(s.beta_slow);
    if (s.truncate) low = std::floor(low), high = std::ceil(high);
    low = std::max(low, 0.0), high = std::min(high, double(rotary_dim - 1));
    if (low == high) high += 0.001;  // keeps the ramp's slope finite
    for (size_t j = 0; j < inv_freq.size(); ++j) {
        const double ramp = std::clamp((double(j) - low) / (high - low), 0.0, 1.0);
        inv_freq[j] = inv_freq[j] / s.factor * ramp + inv_freq[j] * (1 - ramp);
    }
    if (s.attention_factor > 0) {
        attention_factor = s.attention_factor;
    } else if (s.mscale > 0 && s.mscale_all_dim > 0) {
        attention_factor = yarn_mscale(s.factor, s.mscale) / yarn_mscale(s.factor, s.mscale_all_dim);
    } else {
        attention_factor = yarn_mscale(s.factor);
    }
}

// longrope: per-pair factors, the long ones once the layer may see positions past
// the original context; the attention factor grows with the extension M / L.
void apply_longrope(const RopeScaling &s, int max_seq_len, std::vector<double> &inv_freq,
                    double &attention_factor) {
    const std::vector<double> &factors =
        max_seq_len > s.original_max_position_embeddings ? s.long_factor : s.short_factor;
    for (size_t j = 0; j < inv_freq.size(); ++j) inv_freq[j] /= factors[j];
    const double extension = double(s.max_position_embeddings) / s.original_max_position_embeddings;
    if (s.attention_factor > 0) {
        attention_factor = s.attention_factor;
    } else if (extension > 1) {
        attention_factor = std::sqrt(1 + std::log(extension) / std::log(s.original_max_position_embeddings));
    }
}

}  // namespace

RopeFrequencies rope_frequencies(const Config &c) {
    const int rotary_dim = effective_rotary_dim(c), pairs = rotary_dim / 2;
    RopeFrequencies f;
    f.inv_freq.resize(pairs);
    for (int j = 0; j < pairs; ++j) f.inv_freq[j] = std::pow(c.rope_base, -2.0 * j / rotary_dim);
    const RopeScaling &s = c.rope_scaling;
    switch (s.type) {
    case RopeScalingType::none: break;
    case RopeScalingType::linear:
        for (double &inv : f.inv_freq) inv /= s.factor;
        break;
    case RopeScalingType::llama3:
        for (double &inv : f.inv_freq) inv = llama3_inv_freq(s, inv);
        break;
    case RopeScalingType::yarn: apply_yarn(s, c.rope_base, rotary_dim, f.inv_freq, f.attention_factor); break;
    case RopeScalingType::longrope: apply_longrope(s, c.max_seq_len, f.inv_freq, f.attention_factor); break;
    }
    if (!c.rope_inv_freq.empty()) f.inv_freq = c.rope_inv_freq;
    return f;
}

RopeTables make_rope_tables(const Config &c) {
    RopeTables t;
    t.head_dim = c.head_dim;
    t.positions = c.max_seq_len;
    t.rotary_dim = effective_rotary_dim(c);
    t.style = c.rope_style == RopeStyle::interleaved   ? layout::kRopeInterleaved
              : c.rope_style == RopeStyle::rotate_half ? layout::kRopeRotateHalf
                                                       : layout::kRopeNone;
    t.frequencies = rope_frequencies(c);
    const RopeFrequencies &f = t.frequencies;
    t.cos.assign(size_t(t.positions) * t.head_dim, 1.f);
    t.sin.assign(size_t(t.positions) * t.head_dim, 0.f);
    const int half = t.rotary_dim / 2;
    for (int p = 0; p < t.positions; ++p) {
        float *cos_row = &t.cos[size_t(p) * t.head_dim], *sin_row = &t.sin[size_t(p) * t.head_dim];
        for (int j = 0; j < half; ++j) {
            float cos_value, sin_value;
            if (c.rope_fp32_angles) {
                // torchtune: theta = 1 / base ** (arange(0, R, 2).float() / R), then
                // positions.float() * theta, all fp32 (validation allows no scaling here).
                const float theta = 1.f / std::pow(float(c.rope_base), float(2 * j) / float(t.rotary_dim));
                const float angle = float(p) * theta;
                cos_value = std::cos(angle), sin_value = std::sin(angle);
            } else {
                // In double, then rounded once: the fp64 math the conformance vectors use.
                const double angle = p * f.inv_freq[j];
                cos_value = float(std::cos(angle) * f.attention_factor);
                sin_value = float(std::sin(angle) * f.attention_factor);
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

}  // namespace gqa::detail
