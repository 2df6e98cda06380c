// The layer's input checks (validation.h), and how the library prints a shape.
#include "validation.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <string>

#include "weights.h"

namespace gqa {

std::string shape_string(const std::vector<int64_t> &shape) {
    std::ostringstream s;
    s << '[';
    for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
    s << ']';
    return s.str();
}

namespace detail {
namespace {

template <typename View>
void validate_tensor(const char *name, const View &t, std::vector<int64_t> expected, bool optional) {
    if (optional && !t.data && t.shape.empty()) return;
    if (!t.data) fail(name, " has no data");
    if (t.shape != expected) fail(name, " has shape ", shape_string(t.shape), "; expected ", shape_string(expected));
}

bool known_weight_type(WeightType type) {
    return std::find(std::begin(kWeightTypes), std::end(kWeightTypes), type) != std::end(kWeightTypes);
}

// Each projection of a known type; without config.weight_type, all of one type,
// which the layer then keeps.
void validate_weight_types(const Config &c, const Weights &w) {
    if (c.weight_type && !known_weight_type(*c.weight_type)) {
        fail("config.weight_type is ", int(*c.weight_type), "; expected f32, bf16, f16 or int8");
    }
    const std::pair<const char *, const WeightView *> views[] = {{"wq", &w.wq}, {"wk", &w.wk}, {"wv", &w.wv},
                                                                 {"wo", &w.wo}};
    for (const auto &[name, view] : views) {
        if (!known_weight_type(view->type)) {
            fail(name, " has type ", int(view->type), "; expected f32, bf16, f16 or int8");
        }
        if (view->type == WeightType::int8 && !view->scales) fail(name, " is int8 but has no scales");
        if (!c.weight_type && view->type != w.wq.type) {
            fail(name, " is ", weight_type_name(view->type), " but wq is ", weight_type_name(w.wq.type),
                 "; give the four projections one type, or set config.weight_type to convert them to it");
        }
    }
}

}  // namespace

void require_positive(const char *name, double value) {
    if (!(value > 0)) fail(name, " is ", value, "; expected > 0");
}

void require_finite(const char *name, double value) {
    if (!std::isfinite(value)) fail(name, " is ", value, "; expected a finite number");
}

void require_array_size(const char *name, std::initializer_list<int64_t> factors, const char *sized_by) {
    if (product_within(factors, kMaxArrayElements)) return;
    fail(name, " would hold more than ", kMaxArrayElements, " elements (", sized_by,
         "), the most a Halide buffer addresses");
}

size_t require_kv_store_size(const char *name, const LayerDims &d, CacheType type, int64_t batch,
                             int64_t capacity) {
    if (const auto elements = KvCache::elements(d, type, batch, capacity, kMaxArrayElements)) {
        return size_t(*elements);
    }
    fail(name, " would hold more than ", kMaxArrayElements, " elements (batch ", batch, " x num_kv_heads ",
         d.num_kv_heads, " x ", capacity, " slots x ", KvCache::slot_elements(d, type), " per slot), the most a ",
         "Halide buffer addresses");
}

int effective_rotary_dim(const Config &c) {
    return c.rope_style == RopeStyle::none ? 0 : (c.rotary_dim == 0 ? c.head_dim : c.rotary_dim);
}

namespace {

void require_positive_finite(const char *name, double value) {
    require_finite(name, value);
    require_positive(name, value);
}

// One positive, finite value per rotated pair.
void require_per_pair(const char *name, const std::vector<double> &values, int pairs) {
    if (int64_t(values.size()) != pairs) {
        fail(name, " holds ", values.size(), " values; expected one per rotated pair (", pairs, ")");
    }
    for (size_t j = 0; j < values.size(); ++j) {
        if (!std::isfinite(values[j]) || !(values[j] > 0)) {
            fail(name, "[", j, "] is ", values[j], "; expected a finite number > 0");
        }
    }
}

void validate_rope_scaling(const Config &c, int pairs) {
    const RopeScaling &s = c.rope_scaling;
    switch (s.type) {
    case RopeScalingType::none: break;
    case RopeScalingType::linear: require_positive_finite("rope_scaling.factor", s.factor); break;
    case RopeScalingType::llama3:
        require_positive_finite("rope_scaling.factor", s.factor);
        require_positive("rope_scaling.original_max_position_embeddings", s.original_max_position_embeddings);
        require_positive_finite("rope_scaling.low_freq_factor", s.low_freq_factor);
        require_finite("rope_scaling.high_freq_factor", s.high_freq_factor);
        if (!(s.high_freq_factor > s.low_freq_factor)) {
            fail("rope_scaling.high_freq_factor is ", s.high_freq_factor, "; expected more than low_freq_factor (",
                 s.low_freq_factor, ")");
        }
        break;
    case RopeScalingType::yarn:
        require_positive_finite("rope_scaling.factor", s.factor);
        require_positive("rope_scaling.original_max_position_embeddings", s.original_max_position_embeddings);
        require_positive_finite("rope_scaling.beta_fast", s.beta_fast);
        require_positive_finite("rope_scaling.beta_slow", s.beta_slow);
        break;
    case RopeScalingType::longrope:
        require_positive("rope_scaling.original_max_position_embeddings", s.original_max_position_embeddings);
        require_per_pair("rope_scaling.short_factor", s.short_factor, pairs);
        require_per_pair("rope_scaling.long_factor", s.long_factor, pairs);
        break;
    default:
        fail("rope_scaling.type is ", int(s.type), "; expected none, linear, llama3, yarn or longrope");
    }
    for (const auto &[name, value] : {std::pair{"rope_scaling.attention_factor", s.attention_factor},
                                      std::pair{"rope_scaling.mscale", s.mscale},
                                      std::pair{"rope_scaling.mscale_all_dim", s.mscale_all_dim}}) {
        if (!std::isfinite(value) || value < 0) fail(name, " is ", value, "; expected >= 0 (0: derived or unused)");
    }
    if (s.max_position_embeddings < 0) {
        fail("rope_scaling.max_position_embeddings is ", s.max_position_embeddings, "; expected >= 0");
    }
    if (!c.rope_inv_freq.empty()) require_per_pair("rope_inv_freq", c.rope_inv_freq, pairs);
    if (c.rope_fp32_angles && (s.type != RopeScalingType::none || !c.rope_inv_freq.empty())) {
        fail("rope_fp32_angles reproduces torchtune's unscaled table; expected no rope_scaling and no rope_inv_freq "
             "with it");
    }
}

}  // namespace

int64_t qk_norm_size(const Config &c, bool keys) {
    if (c.qk_norm == QkNorm::per_head) return c.head_dim;
    return int64_t(keys ? c.num_kv_heads : c.num_heads) * c.head_dim;
}

void validate_rope(const Config &c) {
    require_positive("head_dim", c.head_dim);
    require_positive("max_seq_len", c.max_seq_len);
    if (c.rope_style == RopeStyle::none) return;
    require_finite("rope_base", c.rope_base);
    require_positive("rope_base", c.rope_base);
    if (c.rotary_dim == 0 && c.head_dim % 2 != 0) {
        fail("head_dim is ", c.head_dim, " with RoPE, which rotates pairs; expected an even head_dim, or an even ",
             "rotary_dim below it");
    }
    const int rotary = effective_rotary_dim(c);
    if (rotary <= 0 || rotary % 2 != 0 || rotary > c.head_dim) {
        fail("rotary_dim is ", rotary, " (head_dim ", c.head_dim, "); expected an even number in [2, head_dim]");
    }
    validate_rope_scaling(c, rotary / 2);
}

void validate_config(const Config &c) {
    require_positive("embed_dim", c.embed_dim);
    require_positive("num_heads", c.num_heads);
    require_positive("num_kv_heads", c.num_kv_heads);
    if (c.num_heads % c.num_kv_heads != 0) {
        fail("num_heads (", c.num_heads, ") must be a multiple of num_kv_heads (", c.num_kv_heads, ")");
    }
    validate_rope(c);
    require_array_size("the RoPE table", {c.max_seq_len, c.head_dim}, "max_seq_len x head_dim");
    require_array_size("wq", {c.num_heads, c.head_dim, c.embed_dim}, "num_heads x head_dim x embed_dim");
    if (c.window && *c.window <= 0) fail("window is ", *c.window, "; expected > 0, or unset for no sliding window");
    require_finite("scale", c.scale);
    if (c.scale < 0) fail("scale is ", c.scale, "; expected > 0, or 0 for 1/sqrt(head_dim)");
    require_finite("softcap", c.softcap);
    if (c.softcap < 0) fail("softcap is ", c.softcap, "; expected > 0, or 0 for none");
    if (c.layer_id < -1) fail("layer_id is ", c.layer_id, "; expected >= 0, or -1 for no layer scaling");
    if (c.qk_norm != QkNorm::none && c.qk_norm != QkNorm::per_head && c.qk_norm != QkNorm::all_heads) {
        fail("qk_norm is ", int(c.qk_norm), "; expected none, per_head or all_heads");
    }
    require_finite("qk_norm_eps", c.qk_norm_eps);
    require_positive("qk_norm_eps", c.qk_norm_eps);
}

void validate_weights(const Config &c, const Weights &w) {
    const int64_t q = int64_t(c.num_heads) * c.head_dim, kv = int64_t(c.num_kv_heads) * c.head_dim, d = c.embed_dim;
    validate_tensor("wq", w.wq, {q, d}, false);
    validate_tensor("wk", w.wk, {kv, d}, false);
    validate_tensor("wv", w.wv, {kv, d}, false);
    validate_tensor("wo", w.wo, {d, q}, false);
    validate_weight_types(c, w);
    validate_tensor("bq", w.bq, {q}, true);
    validate_tensor("bk", w.bk, {kv}, true);
    validate_tensor("bv", w.bv, {kv}, true);
    validate_tensor("bo", w.bo, {d}, true);
    validate_tensor("sinks", w.sinks, {c.num_heads}, true);
    if (c.qk_norm == QkNorm::none) {
        if (w.q_norm.data || w.k_norm.data) fail("q_norm / k_norm are given, but config.qk_norm is none");
        return;
    }
    validate_tensor("q_norm", w.q_norm, {qk_norm_size(c, false)}, false);
    validate_tensor("k_norm", w.k_norm, {qk_norm_size(c, true)}, false);
}

// Positions for RoPE, one per token of x: input_pos [s], [b, s], [b] (s == 1), or
// the cache slots first_slot + i. Each must be < position_limit (the RoPE table's
// length, or the cache's when smaller).
void fill_positions(const std::optional<TensorView<int32_t>> &input_pos, int batch, int seq_len, int first_slot,
                    int position_limit, const char *limit_name, std::vector<int32_t> &positions) {
    positions.resize(size_t(batch) * seq_len);
    if (!input_pos) {
        if (first_slot + seq_len > position_limit) {
            fail("position ", first_slot + seq_len - 1, " is not below ", limit_name, " (", position_limit, ")");
        }
        for (int b = 0; b < batch; ++b) {
            for (int i = 0; i < seq_len; ++i) positions[size_t(b) * seq_len + i] = first_slot + i;
        }
        return;
    }
    const auto &shape = input_pos->shape;
    const bool shared = shape == std::vector<int64_t>{seq_len};
    const bool per_sample = shape == std::vector<int64_t>{batch, seq_len} || (seq_len == 1 && shape == std::vector<int64_t>{batch});
    if (!input_pos->data) fail("input_pos has no data");
    if (!shared && !per_sample) {
        fail("input_pos has shape ", shape_string(shape), "; expected [", seq_len, "] or [", batch, ", ", seq_len, "]");
    }
    for (int b = 0; b < batch; ++b) {
        for (int i = 0; i < seq_len; ++i) {
            const int32_t p = input_pos->data[shared ? i : size_t(b) * seq_len + i];
            if (p < 0 || p >= position_limit) {
                fail("input_pos holds ", p, "; expected a position in [0, ", position_limit, ") (", limit_name, ")");
            }
            positions[size_t(b) * seq_len + i] = p;
        }
    }
}

// A cache's tokens sit in slot order, so each batch row's positions must increase
// from one token to the next, across calls: `last` holds the latest per row (-1 for
// none yet).
void require_increasing(const std::vector<int32_t> &positions, const std::vector<int32_t> &last, int batch,
                        int seq_len) {
    for (int b = 0; b < batch; ++b) {
        int32_t previous = last[b];
        for (int i = 0; i < seq_len; ++i) {
            const int32_t p = positions[size_t(b) * seq_len + i];
            if (p <= previous) {
                fail("position ", p, " of batch row ", b, " follows position ", previous,
                     " in the KV cache; expected positions that increase token by token");
            }
            previous = p;
        }
    }
}

}  // namespace detail
}  // namespace gqa
