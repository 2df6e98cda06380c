// gqa-tune-measure: how tools/gqa-tune measures one build of the pipelines.
//
// For one workload and mode it first checks this build's backend against the
// reference backend on the workload's shape: a prefill of --check-tokens tokens
// (19 by default, which leaves a partial register tile), or for decode a cache
// filled with that many, then decode steps; every output element within the fp32
// tolerance of tools/tolerance.h. (An autoscheduled pipeline may hold only near the sizes it
// was scheduled for, so the tuner checks those at the timed size.) Only then does it time the layer: a causal prefill of 512
// tokens, or one decode step against a cache of --keys tokens (the same layer
// repeated, so the weights stay as warm as the machine lets them). It prints one
// line of JSON with the median time.
//
// Exit status: 0 measured; 2 bad arguments or the backend cannot run here; 3 the
// check failed or a pipeline reported an error (the line says which).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "gqa/attention.hpp"
#include "tolerance.h"
#include "workloads.h"

namespace {

constexpr int kPrefillTokens = 512;
constexpr int kCheckDecodes = 3;
constexpr int kDecodesPerFill = 16;  // timed decode steps between cache refills

struct Options {
    std::string workload = "W1", mode = "prefill", backend = "x86";
    int keys = 2048, repetitions = 5, check_tokens = 19;
};

[[noreturn]] void usage(const std::string &problem) {
    std::fprintf(stderr,
                 "gqa-tune-measure: %s\n"
                 "usage: gqa-tune-measure [--workload small|W1|W2|W3] [--mode prefill|decode]\n"
                 "                        [--keys N] [--repetitions N] [--check-tokens N]\n"
                 "                        [--backend x86|arm|cuda]\n",
                 problem.c_str());
    std::exit(2);
}

int positive(const std::string &flag, const char *value) {
    char *end = nullptr;
    const long n = std::strtol(value, &end, 10);
    if (*value == '\0' || *end != '\0' || n <= 0 || n > 1 << 20) {
        usage(flag + " needs a positive integer, got '" + value + "'");
    }
    return int(n);
}

Options parse(int argc, char **argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        if (i + 1 >= argc) usage(flag == "--help" ? "measures one build for tools/gqa-tune" : flag + " needs a value");
        const char *value = argv[++i];
        if (flag == "--workload") {
            o.workload = value;
        } else if (flag == "--mode") {
            o.mode = value;
        } else if (flag == "--backend") {
            o.backend = value;
        } else if (flag == "--keys") {
            o.keys = positive(flag, value);
        } else if (flag == "--check-tokens") {
            o.check_tokens = positive(flag, value);
        } else if (flag == "--repetitions") {
            o.repetitions = positive(flag, value);
        } else {
            usage("unknown option " + flag);
        }
    }
    if (o.mode != "prefill" && o.mode != "decode") usage("--mode is '" + o.mode + "'; expected prefill or decode");
    return o;
}

using gqa_tools::random_values;

// The largest violation of the fp32 tolerance (tolerance.h; 0 when all hold) on
// `backend` against the reference: a prefill of `tokens` into a KV cache (for
// decode, the cache filled with `tokens` random keys and values instead), then
// single-token decodes.
double check_against_reference(const gqa_tools::Workload &w, const gqa_tools::WorkloadWeights &weights,
                               gqa::Backend backend, int tokens, bool decode) {
    gqa::Config config = w.config;
    config.max_seq_len = tokens + kCheckDecodes;
    const gqa::Weights view = weights.view(config);
    gqa::Attention ours(config, view, backend), reference(config, view, gqa::Backend::reference);
    ours.setup_cache(1, config.max_seq_len);
    reference.setup_cache(1, config.max_seq_len);
    double worst = 0;
    auto compare = [&](int tokens, uint32_t seed) {
        const std::vector<float> x = random_values(size_t(tokens) * config.embed_dim, 1.f, seed);
        const gqa::TensorView<float> view{x.data(), {1, tokens, config.embed_dim}};
        const std::vector<float> a = ours.forward(view), b = reference.forward(view);
        worst = std::max(worst, gqa_tools::largest_excess(a, b));
    };
    if (decode) {
        const std::vector<int64_t> shape{1, config.num_kv_heads, tokens, config.head_dim};
        const std::vector<float> k = random_values(size_t(tokens) * config.num_kv_heads * config.head_dim, 1.f, 98);
        const std::vector<float> v = random_values(k.size(), 1.f, 99);
        ours.append_cache({k.data(), shape}, {v.data(), shape});
        reference.append_cache({k.data(), shape}, {v.data(), shape});
    } else {
        compare(tokens, 100);
    }
    for (int step = 0; step < kCheckDecodes; ++step) compare(1, 101 + step);
    return worst;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double elapsed_ms(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

double time_prefill(gqa::Attention &layer, const gqa::Config &c, int repetitions) {
    const std::vector<float> x = random_values(size_t(kPrefillTokens) * c.embed_dim, 1.f, 200);
    std::vector<float> out(x.size());
    const gqa::TensorView<float> view{x.data(), {1, kPrefillTokens, c.embed_dim}};
    layer.forward(view, out);  // warm-up: first-touch of the scratch buffers
    std::vector<double> times;
    for (int r = 0; r < repetitions; ++r) {
        const auto start = std::chrono::steady_clock::now();
        layer.forward(view, out);
        times.push_back(elapsed_ms(start));
    }
    return median(times);
}

double time_decode(gqa::Attention &layer, const gqa::Config &c, int keys, int repetitions) {
    layer.setup_cache(1, keys + kDecodesPerFill + 1);
    const std::vector<int64_t> shape{1, c.num_kv_heads, keys, c.head_dim};
    const std::vector<float> k = random_values(size_t(keys) * c.num_kv_heads * c.head_dim, 1.f, 300);
    const std::vector<float> v = random_values(k.size(), 1.f, 301);
    const std::vector<float> x = random_values(size_t(c.embed_dim), 1.f, 302);
    std::vector<float> out(x.size());
    const gqa::TensorView<float> view{x.data(), {1, 1, c.embed_dim}};
    std::vector<double> times;
    for (int r = 0; r < repetitions; ++r) {
        layer.reset();
        layer.append_cache({k.data(), shape}, {v.data(), shape});
        layer.forward(view, out);  // warm-up
        for (int step = 1; step < kDecodesPerFill; ++step) {
            const auto start = std::chrono::steady_clock::now();
            layer.forward(view, out);
            times.push_back(elapsed_ms(start));
        }
    }
    return median(times);
}

}  // namespace

int main(int argc, char **argv) {
    const Options o = parse(argc, argv);
    const bool decode = o.mode == "decode";
    const int max_seq_len = decode ? o.keys + kDecodesPerFill + 1 : kPrefillTokens;
    const gqa_tools::Workload *workload = nullptr;
    const auto all = gqa_tools::workloads(max_seq_len);
    for (const auto &w : all) {
        if (o.workload == w.name) workload = &w;
    }
    if (!workload) usage("--workload is '" + o.workload + "'; expected small, W1, W2 or W3");
    try {
        const gqa::Backend backend = gqa::backend_from_name(o.backend);
        const std::string why = gqa::backend_unavailable_reason(backend);
        if (!why.empty()) usage("backend " + o.backend + " cannot run here: " + why);
        const gqa_tools::WorkloadWeights weights(*workload, 1);
        // From here on an error is the candidate's (e.g. a pipeline's bounds check).
        try {
            const double excess = check_against_reference(*workload, weights, backend, o.check_tokens, decode);
            if (excess > 0) {
                std::printf("{\"workload\": \"%s\", \"mode\": \"%s\", \"check\": \"failed\", \"excess\": %.3g}\n",
                            workload->name, o.mode.c_str(), excess);
                return 3;
            }
            gqa::Attention layer(workload->config, weights.view(workload->config), backend);
            const double ms = decode ? time_decode(layer, workload->config, o.keys, o.repetitions)
                                     : time_prefill(layer, workload->config, o.repetitions);
            std::printf("{\"workload\": \"%s\", \"mode\": \"%s\", \"keys\": %d, \"check\": \"passed\", "
                        "\"median_ms\": %.6g}\n",
                        workload->name, o.mode.c_str(), decode ? o.keys : 0, ms);
        } catch (const gqa::Error &e) {
            std::fprintf(stderr, "gqa-tune-measure: %s\n", e.what());
            std::printf("{\"workload\": \"%s\", \"mode\": \"%s\", \"check\": \"failed\", \"error\": true}\n",
                        workload->name, o.mode.c_str());
            return 3;
        }
    } catch (const gqa::Error &e) {
        usage(e.what());
    }
    return 0;
}
