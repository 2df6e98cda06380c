#include "probes.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <vector>

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

}  // namespace gqa_bench
