#include "probes.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <vector>

#include "layout.h"

namespace gqa_bench {
namespace {

constexpr long kFmaIterations = 20'000'000;

// 12 independent chains: enough to cover FMA latency x throughput on current cores.
// One function per ISA, each compiled for it (the rest of the suite is generic).
__attribute__((target("avx512f"))) float chains512() {
    __m512 acc[12];
    for (int c = 0; c < 12; ++c) acc[c] = _mm512_set1_ps(1.f + c * 1e-3f);
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    for (long i = 0; i < kFmaIterations; ++i) {
        for (int c = 0; c < 12; ++c) acc[c] = _mm512_fmadd_ps(acc[c], a, b);
    }
    for (int c = 1; c < 12; ++c) acc[0] = _mm512_add_ps(acc[0], acc[c]);
    return _mm512_reduce_add_ps(acc[0]);
}

__attribute__((target("avx2,fma"))) float chains256() {
    __m256 acc[12];
    for (int c = 0; c < 12; ++c) acc[c] = _mm256_set1_ps(1.f + c * 1e-3f);
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    for (long i = 0; i < kFmaIterations; ++i) {
        for (int c = 0; c < 12; ++c) acc[c] = _mm256_fmadd_ps(acc[c], a, b);
    }
    for (int c = 1; c < 12; ++c) acc[0] = _mm256_add_ps(acc[0], acc[c]);
    float lanes[8];
    _mm256_storeu_ps(lanes, acc[0]);
    return lanes[0];
}

// An int8 weight stream as the decode GEMV reads it: per input, four vectors of
// weights widened and converted to fp32 and multiplied into partial sums by a
// broadcast input; per group of layout::kWeightGroup inputs, the partial sums
// scaled into the totals. Returns the sum so the work is kept.
constexpr int kStreamVectors = 4;
constexpr int kGroup = gqa::layout::kWeightGroup;

__attribute__((target("avx512f"))) float int8_stream512(const int8_t *weights, const float *scales, const float *x,
                                                          size_t groups) {
    constexpr int lanes = 16;
    __m512 total[kStreamVectors];
    for (__m512 &t : total) t = _mm512_setzero_ps();
    for (size_t g = 0; g < groups; ++g, scales += kStreamVectors * lanes) {
        __m512 partial[kStreamVectors];
        for (__m512 &p : partial) p = _mm512_setzero_ps();
        for (int k = 0; k < kGroup; ++k, weights += kStreamVectors * lanes) {
            const __m512 input = _mm512_set1_ps(x[k]);
            // Unrolled at every optimization level, so the sums stay in registers.
#pragma GCC unroll 4
            for (int v = 0; v < kStreamVectors; ++v) {
                const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i *>(weights + v * lanes));
                partial[v] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(packed)), input, partial[v]);
            }
        }
#pragma GCC unroll 4
        for (int v = 0; v < kStreamVectors; ++v)
            total[v] = _mm512_fmadd_ps(partial[v], _mm512_loadu_ps(scales + v * lanes), total[v]);
    }
    for (int v = 1; v < kStreamVectors; ++v) total[0] = _mm512_add_ps(total[0], total[v]);
    return _mm512_reduce_add_ps(total[0]);
}

__attribute__((target("avx2,fma"))) float int8_stream256(const int8_t *weights, const float *scales, const float *x,
                                                          size_t groups) {
    constexpr int lanes = 8;
    __m256 total[kStreamVectors];
    for (__m256 &t : total) t = _mm256_setzero_ps();
    for (size_t g = 0; g < groups; ++g, scales += kStreamVectors * lanes) {
        __m256 partial[kStreamVectors];
        for (__m256 &p : partial) p = _mm256_setzero_ps();
        for (int k = 0; k < kGroup; ++k, weights += kStreamVectors * lanes) {
            const __m256 input = _mm256_set1_ps(x[k]);
            // Unrolled at every optimization level, so the sums stay in registers.
#pragma GCC unroll 4
            for (int v = 0; v < kStreamVectors; ++v) {
                const __m128i packed = _mm_loadl_epi64(reinterpret_cast<const __m128i *>(weights + v * lanes));
                partial[v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(packed)), input, partial[v]);
            }
        }
#pragma GCC unroll 4
        for (int v = 0; v < kStreamVectors; ++v)
            total[v] = _mm256_fmadd_ps(partial[v], _mm256_loadu_ps(scales + v * lanes), total[v]);
    }
    for (int v = 1; v < kStreamVectors; ++v) total[0] = _mm256_add_ps(total[0], total[v]);
    float sums[lanes];
    _mm256_storeu_ps(sums, total[0]);
    return sums[0];
}

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Runs `work` on `threads` threads at once; the wall time of the slowest.
template <typename Work>
double run_on_threads(int threads, Work work) {
    std::vector<std::thread> pool;
    const auto start = std::chrono::steady_clock::now();
    for (int t = 0; t < threads; ++t) pool.emplace_back(work, t);
    for (std::thread &thread : pool) thread.join();
    return seconds_since(start);
}

}  // namespace

double measure_fma_peak_gflops(int threads, int repeats) {
    const bool avx512 = __builtin_cpu_supports("avx512f");
    const int lanes = avx512 ? 16 : 8;
    double best = 0;
    for (int r = 0; r < repeats; ++r) {
        std::vector<float> sink(threads);
        const double seconds =
            run_on_threads(threads, [&](int t) { sink[t] = avx512 ? chains512() : chains256(); });
        const double flops = 2.0 * lanes * 12 * kFmaIterations * threads;
        best = std::max(best, flops / seconds * 1e-9);
    }
    return best;
}

double measure_dram_read_gbs(int threads, size_t bytes, int repeats) {
    std::vector<float> data(bytes / sizeof(float), 1.f);  // written once, so every page is real
    const size_t per_thread = data.size() / threads;
    double best = 0;
    for (int r = 0; r < repeats; ++r) {
        std::vector<float> sink(threads);
        const double seconds = run_on_threads(threads, [&](int t) {
            // Eight partial sums let the compiler vectorize without reassociating one chain.
            float partial[8] = {};
            const float *begin = data.data() + t * per_thread;
            for (size_t i = 0; i + 8 <= per_thread; i += 8) {
                for (int lane = 0; lane < 8; ++lane) partial[lane] += begin[i + lane];
            }
            for (float p : partial) sink[t] += p;
        });
        best = std::max(best, double(per_thread * threads * sizeof(float)) / seconds * 1e-9);
    }
    return best;
}

double measure_int8_weight_gbs(int threads, size_t bytes, int repeats) {
    const bool avx512 = __builtin_cpu_supports("avx512f");
    const size_t group_bytes = size_t(kStreamVectors) * (avx512 ? 16 : 8) * kGroup;
    const size_t groups_per_thread = bytes / threads / group_bytes;
    // Written once (values that do not overflow), so every page is real.
    std::vector<int8_t> weights(groups_per_thread * threads * group_bytes);
    for (size_t i = 0; i < weights.size(); ++i) weights[i] = int8_t(i % 255 - 127);
    std::vector<float> scales(groups_per_thread * threads * group_bytes / kGroup, 1e-3f), x(kGroup, 0.5f);
    const size_t moved = weights.size() + scales.size() * sizeof(float);
    double best = 0;
    for (int r = 0; r < repeats; ++r) {
        std::vector<float> sink(threads);
        const double seconds = run_on_threads(threads, [&](int t) {
            const int8_t *w = weights.data() + t * groups_per_thread * group_bytes;
            const float *s = scales.data() + t * groups_per_thread * group_bytes / kGroup;
            sink[t] = avx512 ? int8_stream512(w, s, x.data(), groups_per_thread)
                             : int8_stream256(w, s, x.data(), groups_per_thread);
        });
        best = std::max(best, double(moved) / seconds * 1e-9);
    }
    return best;
}

}  // namespace gqa_bench
