// gqa-demo: one attention layer (Llama-shaped with random weights, or a layer of a
// Hugging Face checkpoint), prefill then token-by-token decode with the KV cache,
// on every built backend (the compiled ones with each cache type: f32, f16, bf16, int8);
// prints time and the largest difference from the reference backend.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gqa/attention.hpp"
#include "gqa/hf.hpp"
#include "gqa/safetensors.hpp"
#include "layer_flops.h"

namespace {

struct Options {
    gqa::Config config{.embed_dim = 2048, .num_heads = 32, .num_kv_heads = 8, .head_dim = 64, .max_seq_len = 4096,
                       .rope_base = 500000.0};
    int prefill = 512;
    int decode_steps = 16;
    std::string weights_path;  // a .safetensors checkpoint; random weights without one
    std::string prefix = "model.layers.0.self_attn.";
    gqa::ProjectionNames names;
    std::string model_dir;  // a Hugging Face checkpoint directory: config and weights from there
    int layer = 0;
};

void usage() {
    std::puts(
        "usage: gqa-demo [--embed D] [--heads H] [--kv-heads K] [--head-dim HD] [--rope-base B]\n"
        "                [--prefill S] [--decode N] [--weights FILE.safetensors [--prefix P] [--o-name NAME]]\n"
        "       gqa-demo --model DIR [--layer L] [--prefill S] [--decode N]\n"
        "Runs one attention layer (default: Llama-3.2-1B, embed 2048, 32 heads, 8 kv heads, head_dim 64)\n"
        "on every built backend: a prefill of S tokens, then N single-token decode steps with the KV cache\n"
        "(f32, and f16, bf16 and int8 for the compiled backends). Random weights, or P{q,k,v,o}_proj.weight (and\n"
        "biases) from a checkpoint; the default prefix is model.layers.0.self_attn. (Hugging Face),\n"
        "torchtune's is layers.0.attn. with --o-name output_proj.\n"
        "--model runs layer L (default 0) of a Hugging Face checkpoint directory (config.json and\n"
        "model.safetensors or its shards): its config and weights, with every feature it uses.");
}

bool parse(int argc, char **argv, Options &o) {
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--help" || arg == "-h") return usage(), std::exit(0), true;
        if (i + 1 >= argc) return false;
        const std::string text = argv[++i];
        if (arg == "--weights") {
            o.weights_path = text;
            continue;
        }
        if (arg == "--model") {
            o.model_dir = text;
            continue;
        }
        if (arg == "--prefix") {
            o.prefix = text;
            continue;
        }
        if (arg == "--o-name") {
            o.names.o = text;
            continue;
        }
        if (arg == "--rope-base") {
            o.config.rope_base = std::atof(text.c_str());
            continue;
        }
        const int value = std::atoi(text.c_str());
        if (arg == "--embed") o.config.embed_dim = value;
        else if (arg == "--heads") o.config.num_heads = value;
        else if (arg == "--kv-heads") o.config.num_kv_heads = value;
        else if (arg == "--head-dim") o.config.head_dim = value;
        else if (arg == "--prefill") o.prefill = value;
        else if (arg == "--decode") o.decode_steps = value;
        else if (arg == "--layer") o.layer = value;
        else return false;
    }
    return o.prefill > 0 && o.decode_steps >= 0;
}

std::vector<float> random_vector(size_t n, float stddev, std::mt19937 &rng) {
    std::normal_distribution<float> dist(0.f, stddev);
    std::vector<float> v(n);
    for (float &x : v) x = dist(rng);
    return v;
}

struct Run {
    double prefill_ms = 0, decode_ms_per_token = 0;
    std::vector<float> outputs;  // prefill output, then each decode step's
};

double elapsed_ms(std::chrono::steady_clock::time_point since) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - since).count();
}

struct Variant {
    gqa::Backend backend;
    gqa::CacheType cache;
};

Run run(const Variant &variant, const Options &o, const gqa::Weights &weights, const std::vector<float> &x) {
    const gqa::Config &c = o.config;
    gqa::Attention layer(c, weights, variant.backend);
    const int total = o.prefill + o.decode_steps;
    layer.setup_cache(1, total, variant.cache);
    Run r;
    r.outputs.resize(size_t(total) * c.embed_dim);

    auto start = std::chrono::steady_clock::now();
    layer.forward({x.data(), {1, o.prefill, c.embed_dim}}, std::span(r.outputs).first(size_t(o.prefill) * c.embed_dim));
    r.prefill_ms = elapsed_ms(start);

    start = std::chrono::steady_clock::now();
    for (int t = o.prefill; t < total; ++t) {
        const size_t at = size_t(t) * c.embed_dim;
        layer.forward({x.data() + at, {1, 1, c.embed_dim}}, std::span(r.outputs).subspan(at, c.embed_dim));
    }
    r.decode_ms_per_token = o.decode_steps ? elapsed_ms(start) / o.decode_steps : 0;
    return r;
}

}  // namespace

int main(int argc, char **argv) {
    Options o;
    if (!parse(argc, argv, o)) {
        usage();
        return 2;
    }
    const gqa::Config &c = o.config;
    try {
        gqa::HfLayer hf_layer;
        if (!o.model_dir.empty()) {
            hf_layer = gqa::load_hf_layer(o.model_dir, o.layer, o.prefill + o.decode_steps);
            o.config = hf_layer.config;
            std::string features;
            for (const std::string &f : hf_layer.features) features += (features.empty() ? "" : ", ") + f;
            std::printf("model: %s, layer %d of %s\nfeatures: %s\n", hf_layer.model_type.c_str(), o.layer,
                        o.model_dir.c_str(), features.empty() ? "none beyond causal GQA" : features.c_str());
        }
        std::printf("gqa-demo: layer embed %d, heads %d/%d, head_dim %d; prefill %d tokens, %d decode steps\n",
                    c.embed_dim, c.num_heads, c.num_kv_heads, c.head_dim, o.prefill, o.decode_steps);
        std::mt19937 rng(2024);
        // A checkpoint's weights, or random ones (LoadedWeights holds either).
        gqa::LoadedWeights loaded;
        const int q_width = c.num_heads * c.head_dim, kv_width = c.num_kv_heads * c.head_dim;
        if (!o.model_dir.empty()) {
            loaded = std::move(hf_layer.weights);
        } else if (!o.weights_path.empty()) {
            loaded = gqa::load_safetensors(o.weights_path, o.prefix, c, o.names);
            std::printf("weights: %s{%s,%s,%s,%s} from %s\n", o.prefix.c_str(), o.names.q.c_str(), o.names.k.c_str(),
                        o.names.v.c_str(), o.names.o.c_str(), o.weights_path.c_str());
        } else {
            const float w_std = 1.f / std::sqrt(float(c.embed_dim));
            loaded.wq.values = random_vector(size_t(q_width) * c.embed_dim, w_std, rng);
            loaded.wk.values = random_vector(size_t(kv_width) * c.embed_dim, w_std, rng);
            loaded.wv.values = random_vector(size_t(kv_width) * c.embed_dim, w_std, rng);
            loaded.wo.values = random_vector(size_t(c.embed_dim) * q_width, 1.f / std::sqrt(float(q_width)), rng);
            loaded.q_shape = {q_width, c.embed_dim}, loaded.kv_shape = {kv_width, c.embed_dim};
            loaded.o_shape = {c.embed_dim, q_width};
        }
        const gqa::Weights weights = loaded.view();
        const auto x = random_vector(size_t(o.prefill + o.decode_steps) * c.embed_dim, 1.f, rng);

        // The reference goes first: it is what every other run is compared with.
        std::vector<Variant> variants;
        for (gqa::Backend b : gqa::available_backends()) {
            if (b == gqa::Backend::best) continue;
            variants.push_back({b, gqa::CacheType::f32});
            if (b == gqa::Backend::reference) continue;
            for (gqa::CacheType cache : {gqa::CacheType::f16, gqa::CacheType::bf16, gqa::CacheType::int8}) {
                variants.push_back({b, cache});
            }
        }
        auto label = [](const Variant &v) {
            const std::string isa = gqa::backend_isa(v.backend);
            return std::string(gqa::backend_name(v.backend)) + (isa.empty() ? "" : " (" + isa + ")");
        };
        std::vector<Run> runs;
        for (const Variant &v : variants) {
            std::printf("  running %s, %s cache ...", label(v).c_str(), std::string(gqa::cache_type_name(v.cache)).c_str());
            std::fflush(stdout);
            runs.push_back(run(v, o, weights, x));
            std::printf(" done\n");
        }

        const double prefill_gflop = gqa_tools::layer_flops(c, o.prefill, (o.prefill + 1) / 2.0) * 1e-9;
        const double decode_gflop = gqa_tools::layer_flops(c, 1, o.prefill + o.decode_steps / 2.0) * 1e-9;
        std::printf("\n%-26s %6s %12s %10s %16s %10s %12s\n", "backend", "cache", "prefill ms", "GFLOP/s",
                    "decode ms/token", "GFLOP/s", "max |diff|");
        for (size_t i = 0; i < variants.size(); ++i) {
            double max_diff = 0;
            for (size_t e = 0; e < runs[i].outputs.size(); ++e) {
                max_diff = std::max(max_diff, double(std::fabs(runs[i].outputs[e] - runs[0].outputs[e])));
            }
            const Run &r = runs[i];
            std::printf("%-26s %6s %12.2f %10.1f %16.3f %10.1f %12.3g\n", label(variants[i]).c_str(),
                        std::string(gqa::cache_type_name(variants[i].cache)).c_str(), r.prefill_ms, prefill_gflop / (r.prefill_ms * 1e-3), r.decode_ms_per_token,
                        r.decode_ms_per_token > 0 ? decode_gflop / (r.decode_ms_per_token * 1e-3) : 0.0, max_diff);
        }
        std::printf("\nmax |diff| is against the reference backend (fp32 cache) over every prefill and decode\n"
                    "output; with another cache type it includes the rounding (or int8 quantization) of k and v.\n");
    } catch (const gqa::Error &e) {
        std::fprintf(stderr, "gqa-demo: %s\n", e.what());
        return 1;
    }
    return 0;
}
