// The layer's input checks (validation.h), and how the library prints a shape.
#include "validation.h"

#include <cmath>
#include <string>

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

// The product of `factors` (each >= 0), or -1 when it exceeds kMaxArrayElements.
int64_t elements_within_limit(std::initializer_list<int64_t> factors) {
    int64_t product = 1;
    for (int64_t f : factors) {
        if (f != 0 && product > kMaxArrayElements / f) return -1;
        product *= f;
    }
    return product;
}

void validate_tensor(const char *name, const TensorView<float> &t, std::vector<int64_t> expected, bool optional) {
    if (optional && !t.data && t.shape.empty()) return;
    if (!t.data) fail(name, " has no data");
    if (t.shape != expected) fail(name, " has shape ", shape_string(t.shape), "; expected ", shape_string(expected));
}

}  // namespace

void require_positive(const char *name, double value) {
    if (!(value > 0)) fail(name, " is ", value, "; expected > 0");
}

void require_finite(const char *name, double value) {
    if (!std::isfinite(value)) fail(name, " is ", value, "; expected a finite number");
}

void require_array_size(const char *name, std::initializer_list<int64_t> factors, const char *sized_by) {
    if (elements_within_limit(factors) >= 0) return;
    fail(name, " would hold more than ", kMaxArrayElements, " elements (", sized_by,
         "), the most a Halide buffer addresses");
}

void require_kv_store_size(const char *name, const LayerDims &d, int64_t batch, int64_t capacity) {
    if (KvCache::elements(d, batch, capacity, kMaxArrayElements)) return;
    fail(name, " would hold more than ", kMaxArrayElements, " elements (batch ", batch, " x num_kv_heads ",
         d.num_kv_heads, " x ", capacity, " slots x head_dim ", d.head_dim, "), the most a Halide buffer addresses");
}

int effective_rotary_dim(const Config &c) {
    return c.rope_style == RopeStyle::none ? 0 : (c.rotary_dim == 0 ? c.head_dim : c.rotary_dim);
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
}

void validate_weights(const Config &c, const Weights &w) {
    const int64_t q = int64_t(c.num_heads) * c.head_dim, kv = int64_t(c.num_kv_heads) * c.head_dim, d = c.embed_dim;
    validate_tensor("wq", w.wq, {q, d}, false);
    validate_tensor("wk", w.wk, {kv, d}, false);
    validate_tensor("wv", w.wv, {kv, d}, false);
    validate_tensor("wo", w.wo, {d, q}, false);
    validate_tensor("bq", w.bq, {q}, true);
    validate_tensor("bk", w.bk, {kv}, true);
    validate_tensor("bv", w.bv, {kv}, true);
    validate_tensor("bo", w.bo, {d}, true);
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
