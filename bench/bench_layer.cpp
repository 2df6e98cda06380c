// Layer benchmarks: every built backend on the same shapes, prefill and decode,
// with GFLOP/s counters. The reference backend runs on the small shape only.
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gqa/attention.hpp"
#include "layer_flops.h"

namespace {

struct Shape {
    const char *name;
    gqa::Config config;
    bool bias;
};

const Shape kShapes[] = {
    {"small", {.embed_dim = 256, .num_heads = 8, .num_kv_heads = 2, .head_dim = 32}, false},
    {"W1_llama3.2_1b", {.embed_dim = 2048, .num_heads = 32, .num_kv_heads = 8, .head_dim = 64, .max_seq_len = 8192}, false},
    {"W2_llama3_8b", {.embed_dim = 4096, .num_heads = 32, .num_kv_heads = 8, .head_dim = 128, .max_seq_len = 8192}, false},
    {"W3_qwen2.5_0.5b", {.embed_dim = 896, .num_heads = 14, .num_kv_heads = 2, .head_dim = 64, .max_seq_len = 8192}, true},
};

struct Layer {
    std::vector<float> wq, wk, wv, wo, bq, bk, bv;
    gqa::Attention attention;

    static std::vector<float> random(size_t n, std::mt19937 &rng) {
        std::normal_distribution<float> dist(0.f, 0.05f);
        std::vector<float> v(n);
        for (float &x : v) x = dist(rng);
        return v;
    }

    static gqa::Attention make(const Shape &s, gqa::Backend backend, Layer &l) {
        const gqa::Config &c = s.config;
        std::mt19937 rng(7);
        const int q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
        l.wq = random(size_t(q) * c.embed_dim, rng);
        l.wk = random(size_t(kv) * c.embed_dim, rng);
        l.wv = random(size_t(kv) * c.embed_dim, rng);
        l.wo = random(size_t(c.embed_dim) * q, rng);
        gqa::Weights w{{l.wq.data(), {q, c.embed_dim}}, {l.wk.data(), {kv, c.embed_dim}},
                       {l.wv.data(), {kv, c.embed_dim}}, {l.wo.data(), {c.embed_dim, q}}};
        if (s.bias) {
            l.bq = random(q, rng), l.bk = random(kv, rng), l.bv = random(kv, rng);
            w.bq = {l.bq.data(), {q}}, w.bk = {l.bk.data(), {kv}}, w.bv = {l.bv.data(), {kv}};
        }
        return gqa::Attention(c, w, backend);
    }

    Layer(const Shape &s, gqa::Backend backend) : attention(make(s, backend, *this)) {}
};

void prefill(benchmark::State &state, const Shape &s, gqa::Backend backend, int tokens) {
    Layer layer(s, backend);
    std::vector<float> x(size_t(tokens) * s.config.embed_dim, 0.5f), out(x.size());
    for (auto _ : state) {
        layer.attention.forward({x.data(), {1, tokens, s.config.embed_dim}}, out);
        benchmark::DoNotOptimize(out.data());
    }
    state.counters["GFLOP/s"] = benchmark::Counter(gqa_tools::layer_flops(s.config, tokens, (tokens + 1) / 2.0) * 1e-9,
                                                   benchmark::Counter::kIsIterationInvariantRate);
}

void decode(benchmark::State &state, const Shape &s, gqa::Backend backend, int context) {
    Layer layer(s, backend);
    const int d = s.config.embed_dim;
    layer.attention.setup_cache(1, context + 1);
    std::vector<float> x(size_t(context) * d, 0.5f), out(x.size());
    layer.attention.forward({x.data(), {1, context, d}}, out);
    std::vector<float> token(d, 0.25f), token_out(d);
    for (auto _ : state) {
        layer.attention.forward({token.data(), {1, 1, d}}, token_out);
        state.PauseTiming();
        layer.attention.reset();  // keep the cache at `context` tokens
        layer.attention.forward({x.data(), {1, context, d}}, out);
        state.ResumeTiming();
    }
    state.counters["GFLOP/s"] = benchmark::Counter(gqa_tools::layer_flops(s.config, 1, context + 1) * 1e-9,
                                                   benchmark::Counter::kIsIterationInvariantRate);
}

const bool registered = [] {
    for (gqa::Backend backend : gqa::available_backends()) {
        const std::string b(gqa::backend_name(backend));
        for (const Shape &s : kShapes) {
            const bool small = std::string(s.name) == "small";
            if (backend == gqa::Backend::reference && !small) continue;
            const int tokens = small ? 64 : 512, context = small ? 256 : 2048;
            benchmark::RegisterBenchmark(("prefill/" + b + "/" + s.name).c_str(), prefill, s, backend, tokens)
                ->Unit(benchmark::kMillisecond)
                ->UseRealTime();
            benchmark::RegisterBenchmark(("decode/" + b + "/" + s.name).c_str(), decode, s, backend, context)
                ->Unit(benchmark::kMillisecond)
                ->UseRealTime();
        }
    }
    return true;
}();

}  // namespace

BENCHMARK_MAIN();
