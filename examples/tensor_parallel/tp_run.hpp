// What gqa-tp-mpi and gqa-tp-nccl share: their options, and the run itself. A
// workload's layer with random weights, split by heads over the ranks of
// MPI_COMM_WORLD: a prefill, then decode steps with each rank's KV cache, the
// partial outputs summed across the ranks. Rank 0 checks every call's summed output
// of the last repeat against the unsharded layer, and prints the time in the layer
// and in the all-reduce, and the bytes all-reduced per token.
#pragma once

#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

#include "gqa/tensor_parallel.hpp"
#include "mpi_sharded_layer.hpp"  // rank_of, size_of
#include "tolerance.h"
#include "workloads.h"

namespace tp_example {

struct Options {
    std::string workload = "small";
    int prefill = 64;
    int decode_steps = 8;
    gqa::Backend backend = gqa::Backend::best;
    bool check = true;
    int repeats = 1;
};

inline void usage(const char *program) {
    std::printf(
        "usage: mpirun -np N %s [--workload small|W1|W2|W3] [--prefill S] [--decode N]\n"
        "                          [--backend NAME] [--repeat R] [--no-check]\n"
        "Runs one attention layer (random weights) split by heads over the N ranks: a prefill of S\n"
        "tokens, then N decode steps with the KV cache, each output summed across the ranks;\n"
        "R times on a fresh cache, timed. Rank 0 checks every call of the last run against the\n"
        "unsharded layer (unless --no-check).\n",
        program);
}

inline bool parse(int argc, char **argv, Options &o) {
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        const bool has_value = i + 1 < argc;
        if (arg == "--workload" && has_value) {
            o.workload = argv[++i];
        } else if (arg == "--prefill" && has_value) {
            o.prefill = std::stoi(argv[++i]);
        } else if (arg == "--decode" && has_value) {
            o.decode_steps = std::stoi(argv[++i]);
        } else if (arg == "--backend" && has_value) {
            o.backend = gqa::backend_from_name(argv[++i]);
        } else if (arg == "--repeat" && has_value) {
            o.repeats = std::stoi(argv[++i]);
        } else if (arg == "--no-check") {
            o.check = false;
        } else {
            return false;
        }
    }
    return o.prefill >= 1 && o.decode_steps >= 0 && o.repeats >= 1;
}

// The workload named by the options, at the positions the run needs.
inline gqa_tools::Workload find_workload(const Options &o) {
    const auto all = gqa_tools::workloads(o.prefill + o.decode_steps);
    const auto found = std::find_if(all.begin(), all.end(), [&](const auto &w) { return o.workload == w.name; });
    if (found == all.end()) throw gqa::Error("unknown workload '" + o.workload + "'");
    return *found;
}

// "median ms [min, max]".
inline std::string spread_ms(std::vector<double> seconds) {
    std::sort(seconds.begin(), seconds.end());
    char text[96];
    std::snprintf(text, sizeof text, "%.3f ms [%.3f, %.3f]", seconds[seconds.size() / 2] * 1e3, seconds.front() * 1e3,
                  seconds.back() * 1e3);
    return text;
}

// Across the ranks, the largest (or smallest) of a time.
inline double across_ranks(double seconds, MPI_Op op) {
    double result = 0;
    MPI_Allreduce(&seconds, &result, 1, MPI_DOUBLE, op, MPI_COMM_WORLD);
    return result;
}

// Runs the options' calls on `sharded` (a gqa_mpi or gqa_nccl ShardedLayer, its
// cache set up), `step(x, out)` making one call and leaving the summed output in
// `out` on rank 0. Returns the exit status: 0, or 1 where the check failed.
template <class Sharded, class Step>
int run(const Options &o, const gqa_tools::Workload &workload, const gqa_tools::WorkloadWeights &weights,
        Sharded &sharded, Step step) {
    const int rank = gqa_mpi::rank_of(MPI_COMM_WORLD), ranks = gqa_mpi::size_of(MPI_COMM_WORLD);
    const gqa::Config &config = workload.config;
    const int d = config.embed_dim;
    std::vector<int> lengths{o.prefill};
    lengths.insert(lengths.end(), size_t(o.decode_steps), 1);

    const gqa::HeadShard &shard = sharded.shard();
    const int mine[4] = {shard.kv_begin, shard.kv_end, shard.q_begin, shard.q_end};
    std::vector<int> layout(size_t(4 * ranks));
    MPI_Gather(mine, 4, MPI_INT, layout.data(), 4, MPI_INT, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        std::printf("%s (d %d, %d heads, %d kv heads, head_dim %d) over %d ranks, backend %s\n", workload.name, d,
                    config.num_heads, config.num_kv_heads, config.head_dim, ranks,
                    std::string(gqa::backend_name(sharded.layer().backend())).c_str());
        for (int r = 0; r < ranks; ++r) {
            const int *s = &layout[size_t(4 * r)];
            std::printf("  rank %d: kv heads [%d, %d), query heads [%d, %d)\n", r, s[0], s[1], s[2], s[3]);
        }
    }

    // Each repeat: the prompt and decode steps on a fresh cache. Per repeat and phase,
    // the slowest rank's seconds in the layer, and the shortest all-reduce: that of the
    // rank that arrived last, which waited for no other (the others' includes the
    // wait). The first call, untimed, lets the ranks connect.
    const std::vector<float> connect = gqa_tools::random_values(size_t(d), 1.f, 99);
    std::vector<float> connected(connect.size());
    step(gqa::TensorView<float>{connect.data(), {1, 1, d}}, std::span(connected));
    std::vector<std::vector<float>> outputs;
    std::vector<double> prefill_layer, prefill_reduce, decode_layer, decode_reduce, prefill_upload, decode_upload;
    const int steps = std::max(o.decode_steps, 1);
    for (int repeat = 0; repeat < o.repeats; ++repeat) {
        sharded.layer().reset();
        outputs.clear();
        const auto before = sharded.timings();
        auto after_prefill = before;
        uint32_t seed = 100;
        for (int tokens : lengths) {
            const std::vector<float> x = gqa_tools::random_values(size_t(tokens) * d, 1.f, seed++);
            std::vector<float> out(x.size());
            step(gqa::TensorView<float>{x.data(), {1, tokens, d}}, std::span(out));
            outputs.push_back(std::move(out));
            if (outputs.size() == 1) after_prefill = sharded.timings();
        }
        const auto &done = sharded.timings();
        prefill_layer.push_back(across_ranks(after_prefill.layer_s - before.layer_s, MPI_MAX));
        prefill_reduce.push_back(across_ranks(after_prefill.allreduce_s - before.allreduce_s, MPI_MIN));
        decode_layer.push_back(across_ranks(done.layer_s - after_prefill.layer_s, MPI_MAX) / steps);
        decode_reduce.push_back(across_ranks(done.allreduce_s - after_prefill.allreduce_s, MPI_MIN) / steps);
        if constexpr (requires { done.upload_s; }) {
            prefill_upload.push_back(across_ranks(after_prefill.upload_s - before.upload_s, MPI_MAX));
            decode_upload.push_back(across_ranks(done.upload_s - after_prefill.upload_s, MPI_MAX) / steps);
        }
    }
    if (rank == 0) {
        std::printf("medians of %d repeats [min, max]; the slowest rank's layer, the last-arriving rank's all-reduce:\n",
                    o.repeats);
        std::printf("prefill %d tokens: layer %s, all-reduce %s\n", o.prefill, spread_ms(prefill_layer).c_str(),
                    spread_ms(prefill_reduce).c_str());
        std::printf("decode, per token: layer %s, all-reduce %s\n", spread_ms(decode_layer).c_str(),
                    spread_ms(decode_reduce).c_str());
        if (!prefill_upload.empty()) {
            std::printf("upload of the partial output (the slowest rank's): prefill %s, decode per token %s\n",
                        spread_ms(prefill_upload).c_str(), spread_ms(decode_upload).c_str());
        }
        // A ring all-reduce sends (and receives) 2 (N - 1) / N of the buffer per rank.
        std::printf("all-reduced per token: %d floats (%d bytes); sent per rank by a ring: %.0f bytes\n", d, 4 * d,
                    4.0 * d * 2 * (ranks - 1) / ranks);
    }

    int failures = 0;
    if (o.check && rank == 0) {
        gqa::Attention unsharded(config, weights.view(config), sharded.layer().backend());
        unsharded.setup_cache(1, o.prefill + o.decode_steps);
        uint32_t seed = 100;
        double max_diff = 0;
        for (size_t call = 0; call < lengths.size(); ++call) {
            const std::vector<float> x = gqa_tools::random_values(size_t(lengths[call]) * d, 1.f, seed++);
            const std::vector<float> want = unsharded.forward({x.data(), {1, lengths[call], d}});
            for (size_t n = 0; n < want.size(); ++n) {
                const double diff = std::abs(double(outputs[call][n]) - want[n]);
                max_diff = std::max(max_diff, diff);
                if (!(diff <= GQA_ATOL + GQA_RTOL * std::abs(want[n]))) ++failures;
            }
        }
        std::printf("check against the unsharded layer: %s (largest difference %.3g, %d elements off)\n",
                    failures == 0 ? "pass" : "FAIL", max_diff, failures);
    }
    MPI_Bcast(&failures, 1, MPI_INT, 0, MPI_COMM_WORLD);
    return failures == 0 ? 0 : 1;
}

// main() of either program: `run_program(options)` returns its exit status. A rank
// that throws ends the job: the others would wait in the all-reduce.
template <class RunProgram>
int main_of(int argc, char **argv, const char *program, RunProgram run_program) {
    MPI_Init(&argc, &argv);
    Options o;
    int status = 0;
    try {
        if (!parse(argc, argv, o)) {
            if (gqa_mpi::rank_of(MPI_COMM_WORLD) == 0) usage(program);
            status = 2;
        } else {
            status = run_program(o);
        }
    } catch (const std::exception &e) {
        std::fprintf(stderr, "%s: rank %d: %s\n", program, gqa_mpi::rank_of(MPI_COMM_WORLD), e.what());
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    MPI_Finalize();
    return status;
}

}  // namespace tp_example
