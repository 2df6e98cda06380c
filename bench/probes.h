// This machine's limits, measured by the benchmark suite itself so that every run
// reports its results as fractions of them: the fp32 FMA peak on all hardware
// threads, and the DRAM read bandwidth.
#pragma once

#include <cstddef>

namespace gqa_bench {

// GFLOP/s of independent fused multiply-adds on the widest vectors the CPU has,
// on `threads` threads at once; the best of `repeats` runs.
double measure_fma_peak_gflops(int threads, int repeats = 3);

// GB/s of summing a `bytes` array that no cache holds, split over `threads`
// threads; the best of `repeats` runs.
double measure_dram_read_gbs(int threads, size_t bytes, int repeats = 3);

// GB/s (weights and their scales) of the int8 decode GEMV's own arithmetic over a
// `bytes` array that no cache holds, split over `threads` threads: widened and
// converted per weight, scaled per group. Beside measure_dram_read_gbs it shows
// whether the cores, not the memory, set the pace of int8 weights.
double measure_int8_weight_gbs(int threads, size_t bytes, int repeats = 3);

}  // namespace gqa_bench
