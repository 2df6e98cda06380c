/* The closeness policy of every check in this project, in one place: the
 * GoogleTest suite, the C API test, gqa-conformance, the tuner's correctness gate
 * and the fuzzer. C-compatible, for tests/test_c_api.c. */
#ifndef GQA_TOOLS_TOLERANCE_H
#define GQA_TOOLS_TOLERANCE_H

/* fp32 results against the reference (or the conformance vectors):
 * |got - want| <= GQA_ATOL + GQA_RTOL * |want|, element by element. */
#define GQA_ATOL 1e-4
#define GQA_RTOL 1e-4

/* fp16 KV cache. k and v are rounded to fp16 on every backend, from fp32 values
 * whose last bits depend on summation order, so one value can round to the
 * neighbouring half (seen on an H200: out off by 1.9e-4 after a 100-token prefill)
 * and no fp32 tolerance can hold between two backends' fp16 results. Hence:
 * - against the exact result (an fp32 cache): within the fp32 tolerance plus
 *   GQA_HALF_CACHE_FACTOR times the reference backend's own fp16 error;
 * - where no exact result is at hand (the fuzzer, the C test), against the
 *   reference's fp16 run: |got - want| <= GQA_HALF_CACHE_TOL * (1 + |want|), and
 *   stored halves within one unit in the last place (GQA_HALF_ULP, relative). */
#define GQA_HALF_CACHE_FACTOR 2.0
#define GQA_HALF_CACHE_TOL 1e-2
#define GQA_HALF_ULP (1.0 / 1024)

#ifdef __cplusplus
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>

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

/* The fp16-cache rule against the exact result: the excess over the fp32
 * tolerance is at most GQA_HALF_CACHE_FACTOR times the reference's own fp16 error. */
inline bool within_half_cache_rule(std::span<const float> got, std::span<const float> reference_half,
                                   std::span<const float> exact) {
    double reference_error = 0;
    for (std::size_t i = 0; i < std::min(reference_half.size(), exact.size()); ++i) {
        reference_error = std::max(reference_error, double(std::abs(reference_half[i] - exact[i])));
    }
    return got.size() == exact.size() && largest_excess(got, exact) <= GQA_HALF_CACHE_FACTOR * reference_error;
}

}  // namespace gqa_tools
#endif

#endif /* GQA_TOOLS_TOLERANCE_H */
