// Input checks of the layer and apply_rope. Each throws gqa::Error naming the
// offending value, as given, and what was expected; none changes anything.
#pragma once

#include <climits>
#include <cstdint>
#include <initializer_list>
#include <new>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "gqa/attention.hpp"
#include "kv_cache.h"

namespace gqa::detail {

template <typename... Parts>
[[noreturn]] void fail(const Parts &...parts) {
    std::ostringstream s;
    (s << ... << parts);
    throw Error(s.str());
}

// Halide addresses every array the pipelines see with 32-bit extents and strides,
// so none may hold more elements than this; the layer refuses larger ones up front.
inline constexpr int64_t kMaxArrayElements = INT32_MAX;

void require_positive(const char *name, double value);
void require_finite(const char *name, double value);
// `name` of the product of `factors` elements: refused when over the limit,
// saying how it was sized.
void require_array_size(const char *name, std::initializer_list<int64_t> factors, const char *sized_by);
// A KV cache, or the scratch standing in for one, of batch x capacity slots: the
// elements of each of its k and v.
size_t require_kv_store_size(const char *name, const LayerDims &d, CacheType type, int64_t batch,
                             int64_t capacity);

// Allocations report a failure as gqa::Error naming what they were for.
template <typename Allocate>
void allocate(const char *what, size_t elements, size_t element_bytes, Allocate &&allocation) {
    try {
        allocation();
    } catch (const std::bad_alloc &) {
        fail("could not allocate ", elements * element_bytes, " bytes for ", what);
    } catch (const std::length_error &) {
        fail("could not allocate ", elements * element_bytes, " bytes for ", what);
    }
}

int effective_rotary_dim(const Config &c);
// The length of the q_norm (or, for keys, k_norm) weight config.qk_norm takes: head_dim
// per head, all of a token's q (or k) values over all heads.
int64_t qk_norm_size(const Config &c, bool keys);
void validate_rope(const Config &c);
void validate_config(const Config &c);
void validate_weights(const Config &c, const Weights &w);

// Positions for RoPE, one per token of x: input_pos [s], [b, s], [b] (s == 1), or
// the cache slots first_slot + i. Each must be < position_limit (the RoPE table's
// length, or the cache's when smaller).
void fill_positions(const std::optional<TensorView<int32_t>> &input_pos, int batch, int seq_len, int first_slot,
                    int position_limit, const char *limit_name, std::vector<int32_t> &positions);

// A cache's tokens sit in slot order, so each batch row's positions must increase
// from one token to the next, across calls: `last` holds the latest per row (-1 for
// none yet).
void require_increasing(const std::vector<int32_t> &positions, const std::vector<int32_t> &last, int batch,
                        int seq_len);

}  // namespace gqa::detail
