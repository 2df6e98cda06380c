/* The closeness policy of every check in this project, in one place: the
 * GoogleTest suite, the C API test, gqa-conformance, the tuner's correctness gate
 * and the fuzzer. C-compatible, for tests/test_c_api.c. */
#ifndef GQA_TOOLS_TOLERANCE_H
#define GQA_TOOLS_TOLERANCE_H

/* fp32 results against the reference (or the conformance vectors):
 * |got - want| <= GQA_ATOL + GQA_RTOL * |want|, element by element. */
#define GQA_ATOL 1e-4
#define GQA_RTOL 1e-4

/* KV caches of f16, bf16 or int8 (and weights of those types). k and v are
 * rounded or quantized on every backend, from fp32 values whose last bits depend
 * on summation order, so one value can land on the neighbouring representable one
 * (seen on an H200: out off by 1.9e-4 after a 100-token prefill with an fp16
 * cache) and no fp32 tolerance can hold between two backends' results. Hence:
 * - against the exact result (fp32): within the fp32 tolerance plus
 *   GQA_REDUCED_PRECISION_FACTOR times the reference backend's own error in the
 *   same type;
 * - where no exact result is at hand (the fuzzer, the C test), against the
 *   reference's run in that type: |got - want| <= GQA_HALF_CACHE_TOL * (1 + |want|)
 *   for f16 and bf16, GQA_INT8_CACHE_TOL for int8; and stored values within one
 *   unit of the type (stored_value_unit) of the reference's. */
#define GQA_REDUCED_PRECISION_FACTOR 2.0
#define GQA_HALF_CACHE_TOL 1e-2
#define GQA_INT8_CACHE_TOL 5e-2
#define GQA_HALF_ULP (1.0 / 1024)
#define GQA_BF16_ULP (1.0 / 128)

#ifdef __cplusplus
#include <gqa/attention.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <vector>

namespace gqa_tools {

/* How far |got - want| is past atol + rtol |want| (<= 0 when within). A NaN on
 * either side is never within (inf): where NaN is the expected result (the NaN
 * rule), the caller matches it explicitly. */
inline double tolerance_excess(double got, double want, double atol = GQA_ATOL, double rtol = GQA_RTOL) {
    if (std::isnan(got) || std::isnan(want)) return INFINITY;
    if (got == want) return 0.0;  // equal infinities
    return std::abs(got - want) - (atol + rtol * std::abs(want));
}

/* The largest tolerance_excess over two results of the same size. */
inline double largest_excess(std::span<const float> got, std::span<const float> want, double atol = GQA_ATOL,
                             double rtol = GQA_RTOL) {
    double largest = -INFINITY;
    for (std::size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
        largest = std::max(largest, tolerance_excess(got[i], want[i], atol, rtol));
    }
    return largest;
}

/* The reduced-precision rule against the exact result: the excess over the fp32
 * tolerance is at most GQA_REDUCED_PRECISION_FACTOR times the reference's own error
 * in the same type (reference_reduced). */
inline bool within_reduced_precision_rule(std::span<const float> got, std::span<const float> reference_reduced,
                                          std::span<const float> exact) {
    double reference_error = 0;
    for (std::size_t i = 0; i < std::min(reference_reduced.size(), exact.size()); ++i) {
        reference_error = std::max(reference_error, double(std::abs(reference_reduced[i] - exact[i])));
    }
    return got.size() == exact.size() && largest_excess(got, exact) <= GQA_REDUCED_PRECISION_FACTOR * reference_error;
}

/* One unit of a value stored in a cache of `type`, beside the value `want` it
 * stands for: a unit in the last place for f16 and bf16 (relative, subnormals by
 * the smallest normal's), the slot's scale for int8 (slot_max: the largest |value|
 * of want's slot), widened by 2^-10 of it: two runs' scales differ in their last
 * bits, which q (up to 127) multiplies. 0 for f32. */
inline double stored_value_unit(gqa::CacheType type, double want, double slot_max) {
    switch (type) {
    case gqa::CacheType::f32: return 0;
    case gqa::CacheType::f16: return GQA_HALF_ULP * std::max(std::abs(want), 0x1p-14);
    case gqa::CacheType::bf16: return GQA_BF16_ULP * std::max(std::abs(want), 0x1p-126);
    case gqa::CacheType::int8: return slot_max / 127 * (1 + 0x1p-10);
    }
    return 0;
}

/* Whether a stored value `got` stands for the same value as `want`: at most one
 * stored_value_unit apart beyond the fp32 tolerance, since the fp32 values they were
 * converted from may differ by that much (a k near 0 from a sum that cancels keeps
 * only the terms' absolute accuracy, which for bf16 is many units of the result). */
inline bool within_one_unit(gqa::CacheType type, double got, double want, double slot_max) {
    return tolerance_excess(got, want) <= stored_value_unit(type, want, slot_max);
}

/* The positions of `got` that are not within_one_unit of `want`, both a cache
 * [..., head_dim] as fp32; NaN matches NaN, and a slot's scale comes from its
 * finite values. */
inline std::vector<std::size_t> values_past_one_unit(gqa::CacheType type, std::span<const float> got,
                                                     std::span<const float> want, std::size_t head_dim) {
    std::vector<std::size_t> outside;
    for (std::size_t slot = 0; slot + head_dim <= std::min(got.size(), want.size()); slot += head_dim) {
        double slot_max = 0;
        for (std::size_t e = slot; e < slot + head_dim; ++e) {
            if (std::isfinite(want[e])) slot_max = std::max(slot_max, double(std::abs(want[e])));
        }
        for (std::size_t e = slot; e < slot + head_dim; ++e) {
            if (std::isnan(got[e]) && std::isnan(want[e])) continue;
            if (!within_one_unit(type, got[e], want[e], slot_max)) outside.push_back(e);
        }
    }
    return outside;
}

}  // namespace gqa_tools
#endif

#endif /* GQA_TOOLS_TOLERANCE_H */
