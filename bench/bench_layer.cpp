// The benchmark suite: every backend that can run here and the hand-written
// OpenBLAS baseline, on the W1/W2/W3 layer shapes; the full layer and the
// attention core alone; prefill of 512 tokens and decode against 2048 and 8192
// cached tokens, hot (one layer again and again) and cold (a chain of layers whose
// weights and caches exceed the last-level cache, as in a real model); on W1 and W2
// also long contexts: prefills of 4096 and 16384 tokens, the last 512 of each as a
// chunk appended to a cache holding the rest, and decode at 32768; fp32, bf16
// and int8 weights (the modes named _bf16w, _int8w), f32, f16, bf16 and int8 caches
// (_f16, _bf16, _int8; in the layer before _cold, and the core alone); and on W1
// serving: sequences of different lengths decoding together, paged, and sharing a
// prompt (serving/). Counters:
// GFLOP/s, GB/s of the bytes that must be read, and both as fractions of the
// limits of the device that runs them: for the CPU backends this machine's FMA
// peak and DRAM read bandwidth, measured at start (and as probe/ benchmarks, run
// among the others); for CUDA the GPU's fp32 peak and memory bandwidth, read from
// its driver. Names: part/mode/backend/shape (tools/bench_report.py reads them).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "backend_registry.h"
#include "baseline_layer.h"
#include "device_limits.h"
#include "gqa/attention.hpp"
#include "layer_flops.h"
#include "layout.h"
#include "probes.h"
#include "workloads.h"

namespace {

constexpr int kPrefillTokens = 512;
constexpr int kDecodeSteps = 64;  // decodes before a cache is refilled (untimed)
// Long contexts (W1 and W2, the compiled CPU and CUDA backends): prefills of whole
// prompts, a chunk of kPrefillTokens appended to a cache holding the rest of such a
// prompt (chunked prefill), and decode at the longest context.
constexpr int kLongPrefills[] = {4096, 16384};
constexpr int kLongDecode = 32768;
constexpr int kMaxSeqLen = kLongDecode + kDecodeSteps;

using Shape = gqa_tools::Workload;
const auto kShapes = gqa_tools::workloads(kMaxSeqLen);

const int kThreads = int(std::max(1u, std::thread::hardware_concurrency()));

struct Limits {
    double gflops = 0, gbs = 0;
    size_t last_level_cache_bytes = 0;  // a cold chain holds 3x this
};
Limits cpu_limits;
std::optional<gqa_bench::DeviceLimits> gpu;  // set when the CUDA backend runs

// The L3 the kernel reports (glibc's sysconf gave 320 MiB for this VM's 32 MiB);
// 32 MiB where it reports none.
size_t cpu_l3_bytes() {
    std::ifstream file("/sys/devices/system/cpu/cpu0/cache/index3/size");
    size_t kib = 0;
    return file >> kib ? kib << 10 : size_t(32) << 20;
}

// OpenCL is measured against this host's CPU: the one OpenCL device the project
// runs on is pocl, on the CPU.
const Limits &limits_of(int backend) {
    static const Limits cuda = gpu ? Limits{gpu->fp32_gflops, gpu->dram_gbs, gpu->l2_bytes} : Limits{};
    return gqa::Backend(backend) == gqa::Backend::cuda ? cuda : cpu_limits;
}

using gqa_tools::random_values;
using LayerWeights = gqa_tools::WorkloadWeights;

// Bytes of one layer's weights as the layer keeps them (config.weight_type; fp32
// biases), from its shape (no need to draw them).
size_t weight_bytes(const Shape &s) {
    const gqa::Config &c = s.config;
    const size_t d = c.embed_dim, q = size_t(c.num_heads) * c.head_dim, kv = size_t(c.num_kv_heads) * c.head_dim;
    const size_t weights = d * (2 * q + 2 * kv), biases = s.bias ? q + 2 * kv : 0;
    switch (c.weight_type.value_or(gqa::WeightType::f32)) {
    case gqa::WeightType::f32: break;
    case gqa::WeightType::bf16:
    case gqa::WeightType::f16: return 2 * weights + sizeof(float) * biases;
    case gqa::WeightType::int8: return weights + sizeof(float) * (weights / gqa::layout::kWeightGroup + biases);
    }
    return sizeof(float) * (weights + biases);
}

// The shape with its weights kept as `type` (drawn in fp32, converted by the layer).
Shape with_weights(Shape s, gqa::WeightType type) {
    s.config.weight_type = type;
    return s;
}

// The mode-name suffix of a weight type: none for fp32, "_bf16w" for bf16, ...
std::string weight_suffix(const Shape &s) {
    const gqa::WeightType type = s.config.weight_type.value_or(gqa::WeightType::f32);
    return type == gqa::WeightType::f32 ? "" : "_" + std::string(gqa::weight_type_name(type)) + "w";
}

// The mode-name suffix of a cache type: none for fp32, "_f16" for f16, ...
std::string cache_suffix(gqa::CacheType type) {
    return type == gqa::CacheType::f32 ? "" : "_" + std::string(gqa::cache_type_name(type));
}

size_t cache_bytes(const gqa::Config &c, int slots, gqa::CacheType type = gqa::CacheType::f32) {
    using gqa::detail::KvCache;
    const gqa::detail::LayerDims dims{c.embed_dim, c.num_heads, c.num_kv_heads, c.head_dim};
    return 2 * KvCache::element_bytes(type) * size_t(KvCache::slot_elements(dims, type)) * c.num_kv_heads * slots;
}

// A layer of one backend (ours or the baseline), batch 1.
class Layer {
public:
    explicit Layer(const gqa::Config &config) : config_(config) {}
    virtual ~Layer() = default;
    virtual void setup_cache(int capacity, gqa::CacheType type) = 0;
    // Empties the cache and fills `slots` of it with random keys and values, drawn
    // once: a refill happens every kDecodeSteps decodes.
    void refill(int slots) {
        const size_t n = size_t(slots) * config_.num_kv_heads * config_.head_dim;
        if (keys_.size() != n) keys_ = random_values(n, 1.f, 11), values_ = random_values(n, 1.f, 12);
        load_cache(keys_.data(), values_.data(), slots);
    }
    // A causal prefill of `tokens` on a fresh context; `tokens` appended to the cache
    // (one for a decode step), causal by slot.
    virtual void prefill(const float *x, int tokens, float *out) = 0;
    virtual void extend(const float *x, int tokens, float *out) = 0;

protected:
    // Empties the cache, then writes k and v, [1, n_kv, slots, hd] each.
    virtual void load_cache(const float *k, const float *v, int slots) = 0;
    gqa::Config config_;

private:
    std::vector<float> keys_, values_;
};

class OurLayer final : public Layer {
public:
    OurLayer(const Shape &s, const LayerWeights &w, gqa::Backend backend)
        : Layer(s.config), attention_(s.config, w.view(s.config), backend) {}
    void setup_cache(int capacity, gqa::CacheType type) override { attention_.setup_cache(1, capacity, type); }
    // Without a cache the layer attends within x: a prefill with nothing to clear.
    void prefill(const float *x, int tokens, float *out) override {
        if (attention_.has_cache()) attention_.remove_cache();
        attention_.forward({x, {1, tokens, config_.embed_dim}}, {out, size_t(tokens) * config_.embed_dim});
    }
    void extend(const float *x, int tokens, float *out) override {
        attention_.forward({x, {1, tokens, config_.embed_dim}}, {out, size_t(tokens) * config_.embed_dim});
    }

private:
    void load_cache(const float *k, const float *v, int slots) override {
        attention_.reset();
        const std::vector<int64_t> shape{1, config_.num_kv_heads, slots, config_.head_dim};
        attention_.append_cache({k, shape}, {v, shape});
    }

    gqa::Attention attention_;
};

class BaselineRunner final : public Layer {
public:
    BaselineRunner(const Shape &s, const LayerWeights &w)
        : Layer(s.config),
          layer_({s.config.embed_dim, s.config.num_heads, s.config.num_kv_heads, s.config.head_dim,
                  s.config.rope_base},
                 w.wq.data(), w.wk.data(), w.wv.data(), w.wo.data(), w.bq.empty() ? nullptr : w.bq.data(),
                 w.bk.empty() ? nullptr : w.bk.data(), w.bv.empty() ? nullptr : w.bv.data()) {}
    void setup_cache(int capacity, gqa::CacheType) override {
        layer_.setup_cache(1, capacity);
        capacity_ = capacity;
    }
    void prefill(const float *x, int tokens, float *out) override {
        if (layer_.size() + tokens > capacity_) setup_cache(tokens, gqa::CacheType::f32);
        layer_.reset();
        layer_.forward(x, 1, tokens, out);
    }
    void extend(const float *x, int tokens, float *out) override { layer_.forward(x, 1, tokens, out); }
    gqa_bench::BaselineLayer &layer() { return layer_; }

private:
    void load_cache(const float *k, const float *v, int slots) override {
        layer_.reset();
        layer_.append_cache(k, v, slots);
    }

    gqa_bench::BaselineLayer layer_;
    int capacity_ = 0;
};

// Backend::reference ... Backend::best stand for themselves; this one for the baseline.
constexpr int kBaseline = -1;

std::unique_ptr<Layer> make_layer(const Shape &s, const LayerWeights &w, int backend) {
    if (backend == kBaseline) return std::make_unique<BaselineRunner>(s, w);
    return std::make_unique<OurLayer>(s, w, gqa::Backend(backend));
}

void report(benchmark::State &state, int backend, double flops, double bytes) {
    using benchmark::Counter;
    const Limits &limits = limits_of(backend);
    state.counters["GFLOP/s"] = Counter(flops * 1e-9, Counter::kIsIterationInvariantRate);
    state.counters["GB/s"] = Counter(bytes * 1e-9, Counter::kIsIterationInvariantRate);
    if (limits.gflops > 0) {
        state.counters["peak_frac"] = Counter(flops * 1e-9 / limits.gflops, Counter::kIsIterationInvariantRate);
        state.counters["bw_frac"] = Counter(bytes * 1e-9 / limits.gbs, Counter::kIsIterationInvariantRate);
    }
}

// Causal prefill of a fresh layer (no cache for ours, an emptied one for the baseline).
void layer_prefill(benchmark::State &state, const Shape &s, int backend, int tokens) {
    const LayerWeights weights(s, 7);
    std::unique_ptr<Layer> layer = make_layer(s, weights, backend);
    const int d = s.config.embed_dim;
    const std::vector<float> x = random_values(size_t(tokens) * d, 1.f, 9);
    std::vector<float> out(x.size());
    for (auto _ : state) {
        layer->prefill(x.data(), tokens, out.data());
        benchmark::DoNotOptimize(out.data());
    }
    const double bytes = weight_bytes(s) + 2.0 * x.size() * sizeof(float) + cache_bytes(s.config, tokens);
    report(state, backend, gqa_tools::layer_flops(s.config, tokens, (tokens + 1) / 2.0), bytes);
}

// The same prefill recording every TransformerLens hook: the recording pipelines,
// one per stage, against layer/prefill512's fast ones.
void layer_prefill_hooks(benchmark::State &state, const Shape &s, int backend, int tokens) {
    const LayerWeights weights(s, 7);
    gqa::Attention layer(s.config, weights.view(s.config), gqa::Backend(backend));
    using gqa::Hook;
    const Hook every[] = {Hook::q,       Hook::k, Hook::v, Hook::rot_q, Hook::rot_k, Hook::attn_scores,
                          Hook::pattern, Hook::z, Hook::result};
    layer.set_recorded_hooks(every);
    const int d = s.config.embed_dim;
    const std::vector<float> x = random_values(size_t(tokens) * d, 1.f, 9);
    std::vector<float> out(x.size());
    for (auto _ : state) {
        layer.forward({x.data(), {1, tokens, d}}, out);
        benchmark::DoNotOptimize(out.data());
    }
    const double bytes = weight_bytes(s) + 2.0 * x.size() * sizeof(float) + cache_bytes(s.config, tokens);
    report(state, backend, gqa_tools::layer_flops(s.config, tokens, (tokens + 1) / 2.0), bytes);
}

// Chunked prefill: `tokens` new tokens appended to a cache already holding `cached`
// (refilled, untimed, before each), each query causal by slot.
void layer_chunk(benchmark::State &state, const Shape &s, int backend, int tokens, int cached) {
    const LayerWeights weights(s, 7);
    std::unique_ptr<Layer> layer = make_layer(s, weights, backend);
    layer->setup_cache(cached + tokens, gqa::CacheType::f32);
    const int d = s.config.embed_dim;
    const std::vector<float> x = random_values(size_t(tokens) * d, 1.f, 9);
    std::vector<float> out(x.size());
    for (auto _ : state) {
        state.PauseTiming();
        layer->refill(cached);
        state.ResumeTiming();
        layer->extend(x.data(), tokens, out.data());
        benchmark::DoNotOptimize(out.data());
    }
    const double bytes = weight_bytes(s) + 2.0 * x.size() * sizeof(float) + cache_bytes(s.config, cached + tokens);
    report(state, backend, gqa_tools::layer_flops(s.config, tokens, cached + (tokens + 1) / 2.0), bytes);
}

// One-token decodes against `context` cached tokens. Cold: a chain of layers, each
// with its own weights and cache, used in turn, with more bytes than 3x the
// last-level cache of the device that runs them.
void layer_decode(benchmark::State &state, const Shape &s, int backend, int context, bool cold, gqa::CacheType type) {
    const size_t per_layer = weight_bytes(s) + cache_bytes(s.config, context + kDecodeSteps, type);
    const size_t cold_bytes = 3 * limits_of(backend).last_level_cache_bytes;
    const int chain = cold ? int(std::max<size_t>(2, (cold_bytes + per_layer - 1) / per_layer)) : 1;
    std::vector<LayerWeights> weights;
    std::vector<std::unique_ptr<Layer>> layers;
    for (int l = 0; l < chain; ++l) {
        weights.emplace_back(s, 100 + 10 * l);
        layers.push_back(make_layer(s, weights.back(), backend));
        layers.back()->setup_cache(context + kDecodeSteps, type);
        layers.back()->refill(context);
    }
    const int d = s.config.embed_dim;
    const std::vector<float> x = random_values(d, 1.f, 13);
    std::vector<float> out(d);
    int64_t step = 0;
    for (auto _ : state) {
        const int l = int(step % chain);
        if (step > 0 && l == 0 && (step / chain) % kDecodeSteps == 0) {
            state.PauseTiming();
            for (auto &layer : layers) layer->refill(context);
            state.ResumeTiming();
        }
        layers[l]->extend(x.data(), 1, out.data());
        benchmark::DoNotOptimize(out.data());
        ++step;
    }
    const double keys = context + kDecodeSteps / 2.0;  // the cache grows between refills
    const double bytes = weight_bytes(s) + cache_bytes(s.config, int(keys), type) + 2.0 * d * sizeof(float);
    report(state, backend, gqa_tools::layer_flops(s.config, 1, keys), bytes);
    state.counters["layers"] = chain;
}

// Serving (README "Serving"): kServingRows sequences decode one token each per step,
// together, through a chain of layers as the cold decodes above. Mixed: lengths
// spread evenly from 128 to 4096 tokens, in three layouts: a paged cache of
// kServingBlock-slot blocks; a paged cache of one block per sequence, so that each
// sequence's slots lie together as in a contiguous cache; and the batch padded to
// its longest row in the contiguous cache, as a server without ragged batches would
// run it. Shared: the sequences are forks of one 2048-token prompt. GB/s and
// bw_frac count the bytes the rows need: the weights once, each sequence's own keys
// and values, a shared prompt's once. Each step's tokens are rolled back after it
// (O(1)), so the lengths stay put; the padded cache is refilled every kDecodeSteps
// steps instead (untimed).
constexpr int kServingRows = 8, kServingShortest = 128, kServingLongest = 4096, kServingBlock = 32;
constexpr int kServingPrompt = 2048;
enum class ServingLayout { paged, block_per_sequence, padded, shared_prompt };

std::vector<int> serving_lengths(ServingLayout layout) {
    std::vector<int> lengths;
    for (int r = 0; r < kServingRows; ++r) {
        lengths.push_back(layout == ServingLayout::shared_prompt
                              ? kServingPrompt
                              : kServingShortest + r * (kServingLongest - kServingShortest) / (kServingRows - 1));
    }
    return lengths;
}

int round_up_to(int n, int multiple) {
    return (n + multiple - 1) / multiple * multiple;
}

// Sequences of a paged layer at `lengths`, random keys and values; with a shared
// prompt, one sequence and its forks.
std::vector<int> fill_sequences(gqa::Attention &layer, const std::vector<int> &lengths, bool shared) {
    const gqa::Config &c = layer.config();
    std::vector<int> ids;
    for (int length : lengths) {
        if (shared && !ids.empty()) {
            ids.push_back(layer.fork_sequence(ids.front()));
            continue;
        }
        const std::vector<float> k = random_values(size_t(c.num_kv_heads) * length * c.head_dim, 1.f, 41);
        const std::vector<int64_t> shape{c.num_kv_heads, length, c.head_dim};
        ids.push_back(layer.add_sequence());
        layer.append_sequence_cache(ids.back(), {k.data(), shape}, {k.data(), shape});
    }
    return ids;
}

void serving_decode(benchmark::State &state, const Shape &s, int backend, ServingLayout layout) {
    const gqa::Config &c = s.config;
    const std::vector<int> lengths = serving_lengths(layout);
    const bool shared = layout == ServingLayout::shared_prompt;
    size_t needed = shared ? cache_bytes(c, kServingPrompt) : 0;
    double flops = 0;
    for (int length : lengths) {
        if (!shared) needed += cache_bytes(c, length);
        flops += gqa_tools::layer_flops(c, 1, length);
    }
    const int padded_slots = kServingLongest + kDecodeSteps;
    const size_t held = layout == ServingLayout::padded ? kServingRows * cache_bytes(c, padded_slots) : needed;
    const size_t per_layer = weight_bytes(s) + held;
    const int chain = int(std::max<size_t>(2, (3 * limits_of(backend).last_level_cache_bytes + per_layer - 1) / per_layer));
    std::vector<LayerWeights> weights;
    std::vector<std::unique_ptr<gqa::Attention>> layers;
    std::vector<std::vector<int>> ids;
    const std::vector<int64_t> padded_shape{kServingRows, c.num_kv_heads, kServingLongest, c.head_dim};
    const std::vector<float> padded_k =
        layout == ServingLayout::padded
            ? random_values(size_t(gqa::TensorView<float>{nullptr, padded_shape}.numel()), 1.f, 42)
            : std::vector<float>();
    auto refill_padded = [&](gqa::Attention &layer) {
        layer.reset();
        layer.append_cache({padded_k.data(), padded_shape}, {padded_k.data(), padded_shape});
    };
    for (int l = 0; l < chain; ++l) {
        weights.emplace_back(s, 200 + 10 * l);
        layers.push_back(std::make_unique<gqa::Attention>(c, weights.back().view(c), gqa::Backend(backend)));
        gqa::Attention &layer = *layers.back();
        if (layout == ServingLayout::padded) {
            layer.setup_cache(kServingRows, padded_slots);
            refill_padded(layer);
            continue;
        }
        if (layout == ServingLayout::block_per_sequence) {
            layer.setup_paged_cache(kServingRows, round_up_to(kServingLongest + 1, gqa::layout::kCacheGranule));
        } else {
            int blocks = 0;
            for (int length : lengths) blocks += length / kServingBlock + 2;
            layer.setup_paged_cache(blocks, kServingBlock);
        }
        ids.push_back(fill_sequences(layer, lengths, shared));
    }
    const int d = c.embed_dim;
    const std::vector<float> x = random_values(size_t(kServingRows) * d, 1.f, 43);
    std::vector<float> out(x.size());
    std::vector<gqa::SequenceTokens> rows(kServingRows);
    int64_t step = 0;
    for (auto _ : state) {
        const int l = int(step % chain);
        gqa::Attention &layer = *layers[l];
        if (layout == ServingLayout::padded) {
            if (step > 0 && l == 0 && (step / chain) % kDecodeSteps == 0) {
                state.PauseTiming();
                for (auto &each : layers) refill_padded(*each);
                state.ResumeTiming();
            }
            layer.forward({x.data(), {kServingRows, 1, d}}, out);
        } else {
            for (int r = 0; r < kServingRows; ++r) rows[r] = {ids[l][r], 1};
            layer.forward_sequences(rows, {x.data(), {kServingRows, d}}, out);
            for (int r = 0; r < kServingRows; ++r) layer.truncate_sequence(ids[l][r], lengths[r]);
        }
        benchmark::DoNotOptimize(out.data());
        ++step;
    }
    report(state, backend, flops, double(weight_bytes(s) + needed) + 2.0 * x.size() * sizeof(float));
    state.counters["layers"] = chain;
    state.counters["held_MB"] = double(held) * 1e-6;
}

// A chunk of kPrefillTokens appended to a sequence of `cached` tokens, through a
// paged cache of kServingBlock-slot blocks (rolled back after each chunk) or the
// contiguous one (refilled before each, untimed): the cost of paging a prefill.
void serving_chunk(benchmark::State &state, const Shape &s, int backend, int cached, bool paged) {
    const gqa::Config &c = s.config;
    const LayerWeights weights(s, 7);
    gqa::Attention layer(c, weights.view(c), gqa::Backend(backend));
    const std::vector<float> k = random_values(size_t(c.num_kv_heads) * cached * c.head_dim, 1.f, 11);
    int sequence = 0;
    if (paged) {
        layer.setup_paged_cache((cached + kPrefillTokens) / kServingBlock + 2, kServingBlock);
        sequence = fill_sequences(layer, {cached}, false).front();
    } else {
        layer.setup_cache(1, cached + kPrefillTokens);
    }
    const std::vector<int64_t> shape{1, c.num_kv_heads, cached, c.head_dim};
    const int d = c.embed_dim;
    const std::vector<float> x = random_values(size_t(kPrefillTokens) * d, 1.f, 9);
    std::vector<float> out(x.size());
    const std::vector<gqa::SequenceTokens> rows{{sequence, kPrefillTokens}};
    for (auto _ : state) {
        if (paged) {
            layer.forward_sequences(rows, {x.data(), {kPrefillTokens, d}}, out);
            layer.truncate_sequence(sequence, cached);
        } else {
            state.PauseTiming();
            layer.reset();
            layer.append_cache({k.data(), shape}, {k.data(), shape});
            state.ResumeTiming();
            layer.forward({x.data(), {1, kPrefillTokens, d}}, out);
        }
        benchmark::DoNotOptimize(out.data());
    }
    const double bytes = weight_bytes(s) + 2.0 * x.size() * sizeof(float) + cache_bytes(c, cached + kPrefillTokens);
    report(state, backend, gqa_tools::layer_flops(c, kPrefillTokens, cached + (kPrefillTokens + 1) / 2.0), bytes);
}

// A compiled backend's kernels (runtime/backend_registry.h), for the parts measured
// below the layer; null for the reference. `rope` must outlive them.
std::unique_ptr<gqa::detail::Kernels> make_kernels(const Shape &s, const LayerWeights &weights,
                                                   const gqa::detail::RopeTables &rope, int backend) {
    const gqa::Config &c = s.config;
    const gqa::detail::LayerDims dims{c.embed_dim, c.num_heads, c.num_kv_heads, c.head_dim};
    if (gqa::Backend(backend) == gqa::Backend::reference) return nullptr;
    return gqa::detail::built_backend(gqa::Backend(backend))->make_kernels(dims, weights.view(c), rope);
}

// The projections alone at prefill (the fused q/k/v GEMM with RoPE, and the output
// GEMM): ours through the backend's kernels, the baseline's four cblas_sgemm.
void projections(benchmark::State &state, const Shape &s, int backend) {
    const gqa::Config &c = s.config;
    const int d = c.embed_dim, hd = c.head_dim, q_width = c.num_heads * hd, kv_width = c.num_kv_heads * hd;
    const LayerWeights weights(s, 7);
    const std::vector<float> x = random_values(size_t(kPrefillTokens) * d, 1.f, 31);
    std::vector<float> out(x.size());
    if (backend == kBaseline) {
        BaselineRunner runner(s, weights);
        for (auto _ : state) {
            runner.layer().projections(x.data(), 1, kPrefillTokens, out.data());
            benchmark::DoNotOptimize(out.data());
        }
    } else {
        const gqa::detail::RopeTables rope = gqa::detail::make_rope_tables(c);
        std::unique_ptr<gqa::detail::Kernels> kernels = make_kernels(s, weights, rope, backend);
        if (!kernels) return state.SkipWithError("no projections for this backend");
        std::vector<float> q(size_t(kPrefillTokens) * q_width), z(q.size(), 0.5f);
        gqa::detail::KvCache scratch;
        scratch.reserve_scratch({d, c.num_heads, c.num_kv_heads, hd}, 1, kPrefillTokens);
        std::vector<int32_t> positions(kPrefillTokens), rows(kPrefillTokens, 0);
        for (int i = 0; i < kPrefillTokens; ++i) positions[i] = i;
        for (auto _ : state) {
            kernels->project({.x = x.data(),
                              .batch = 1,
                              .seq_len = kPrefillTokens,
                              .positions = positions.data(),
                              .q = q.data(),
                              .kv = &scratch,
                              .dest_slots = positions.data(),
                              .dest_rows = rows.data()});
            kernels->output({.z = z.data(), .batch = 1, .seq_len = kPrefillTokens, .out = out.data()});
            benchmark::DoNotOptimize(out.data());
        }
    }
    const double flops = 2.0 * kPrefillTokens * d * (2.0 * q_width + 2.0 * kv_width);
    report(state, backend, flops, weight_bytes(s) + 2.0 * x.size() * sizeof(float));
}

// The attention core alone: rotated q against a filled cache, causal. Ours through
// the backend's kernels (runtime/backend_registry.h), the baseline through its own loop.
void core(benchmark::State &state, const Shape &s, int backend, int queries, int kv_len, gqa::CacheType type) {
    const gqa::Config &c = s.config;
    const int hd = c.head_dim, n_kv = c.num_kv_heads;
    const std::vector<float> q = random_values(size_t(queries) * c.num_heads * hd, 1.f, 21);
    std::vector<float> z(q.size());
    const std::vector<float> k = random_values(size_t(kv_len) * n_kv * hd, 1.f, 22), v = random_values(k.size(), 1.f, 23);
    const LayerWeights weights(s, 7);
    if (backend == kBaseline) {
        BaselineRunner runner(s, weights);
        runner.setup_cache(kv_len, gqa::CacheType::f32);
        runner.layer().append_cache(k.data(), v.data(), kv_len);
        for (auto _ : state) {
            runner.layer().attention_core(q.data(), 1, queries, z.data());
            benchmark::DoNotOptimize(z.data());
        }
    } else {
        const gqa::detail::RopeTables rope = gqa::detail::make_rope_tables(c);
        std::unique_ptr<gqa::detail::Kernels> kernels = make_kernels(s, weights, rope, backend);
        if (!kernels) return state.SkipWithError("no attention core for this backend");
        gqa::detail::KvCache cache;
        cache.allocate({c.embed_dim, c.num_heads, n_kv, hd}, type, 1, kv_len);
        cache.write_slots(k.data(), v.data(), 0, kv_len);
        const std::vector<int32_t> granules(gqa::detail::granule_table_length(kv_len), 0);  // contiguous
        const gqa::detail::AttendCall call{.q = q.data(),
                                           .batch = 1,
                                           .seq_len = queries,
                                           .kv = &cache,
                                           .kv_len = kv_len,
                                           .kv_lens = &kv_len,
                                           .granules = granules.data(),
                                           .granule_count = int(granules.size()),
                                           .granule_row_stride = 0,
                                           .pooled = false,
                                           .mask = nullptr,
                                           .mask_len = 0,
                                           .causal = true,
                                           .window = 0,
                                           .scale = float(1.0 / std::sqrt(double(hd))),
                                           .softcap = 0.f,
                                           .z = z.data(),
                                           .pattern = nullptr,
                                           .scores = nullptr,
                                           .host_io = false};
        for (auto _ : state) {
            kernels->attend(call);
            kernels->finish();
            benchmark::DoNotOptimize(z.data());
        }
    }
    // Causal: query i sees kv_len - queries + i + 1 keys.
    const double visible = double(kv_len - queries) * queries + queries * (queries + 1) / 2.0;
    const double flops = 4.0 * c.num_heads * hd * visible;
    const double bytes = cache_bytes(c, kv_len, type) + 2.0 * q.size() * sizeof(float);
    report(state, backend, flops, bytes);
}

void probe_fma(benchmark::State &state) {
    double gflops = 0;
    for (auto _ : state) gflops = gqa_bench::measure_fma_peak_gflops(kThreads, 1);
    state.counters["GFLOP/s"] = gflops;
}

void probe_dram(benchmark::State &state) {
    double gbs = 0;
    for (auto _ : state) gbs = gqa_bench::measure_dram_read_gbs(kThreads, size_t(1) << 30, 1);
    state.counters["GB/s"] = gbs;
}

void probe_int8_weights(benchmark::State &state) {
    double gbs = 0;
    for (auto _ : state) gbs = gqa_bench::measure_int8_weight_gbs(kThreads, size_t(1) << 30, 1);
    state.counters["GB/s"] = gbs;
}

template <typename Fn, typename... Args>
void add(const std::string &name, Fn &&fn, Args... args) {
    benchmark::RegisterBenchmark(name.c_str(), fn, args...)->Unit(benchmark::kMillisecond)->UseRealTime();
}

// The long-context modes where they measure something in reasonable time: not on
// the reference, the baseline's plain loops, or OpenCL on pocl.
bool long_contexts(const Shape &s, int backend) {
    const std::string name = s.name;
    return (name == "W1" || name == "W2") && backend != kBaseline && gqa::Backend(backend) != gqa::Backend::reference &&
           gqa::Backend(backend) != gqa::Backend::opencl;
}

void add_long_contexts(const Shape &s, int backend, const std::string &tail) {
    const gqa::CacheType f32 = gqa::CacheType::f32;
    for (int tokens : kLongPrefills) {
        const std::string prefill = "prefill" + std::to_string(tokens);
        add("layer/" + prefill + tail, layer_prefill, s, backend, tokens);
        add("core/" + prefill + tail, core, s, backend, tokens, tokens, f32);
        // The last chunk of the same prompt: its slice of the prefill above.
        const int cached = tokens - kPrefillTokens;
        const std::string chunk = "chunk" + std::to_string(kPrefillTokens) + "_at" + std::to_string(cached);
        add("layer/" + chunk + tail, layer_chunk, s, backend, kPrefillTokens, cached);
        add("core/" + chunk + tail, core, s, backend, kPrefillTokens, tokens, f32);
    }
    const std::string decode = "decode" + std::to_string(kLongDecode);
    add("layer/" + decode + "_hot" + tail, layer_decode, s, backend, kLongDecode, false, f32);
    if (std::string(s.name) == "W1") {
        const std::string mixed = "serving/decode_mixed" + std::to_string(kServingRows);
        add(mixed + "_paged" + tail, serving_decode, s, backend, ServingLayout::paged);
        add(mixed + "_block_per_sequence" + tail, serving_decode, s, backend, ServingLayout::block_per_sequence);
        add(mixed + "_padded" + tail, serving_decode, s, backend, ServingLayout::padded);
        add("serving/prefix_shared" + std::to_string(kServingRows) + tail, serving_decode, s, backend,
            ServingLayout::shared_prompt);
        const int cached = kLongPrefills[0] - kPrefillTokens;
        const std::string chunk = "serving/chunk" + std::to_string(kPrefillTokens) + "_at" + std::to_string(cached);
        add(chunk + "_paged" + tail, serving_chunk, s, backend, cached, true);
        add(chunk + "_contiguous" + tail, serving_chunk, s, backend, cached, false);
    }
    for (gqa::CacheType cache : {f32, gqa::CacheType::f16, gqa::CacheType::bf16, gqa::CacheType::int8}) {
        add("layer/" + decode + cache_suffix(cache) + "_cold" + tail, layer_decode, s, backend, kLongDecode, true, cache);
        add("core/" + decode + cache_suffix(cache) + tail, core, s, backend, 1, kLongDecode, cache);
    }
}

std::string backend_label(int backend) {
    return backend == kBaseline ? "baseline" : std::string(gqa::backend_name(gqa::Backend(backend)));
}

void register_all() {
    std::vector<int> backends{kBaseline};
    for (gqa::Backend b : gqa::available_backends()) backends.push_back(int(b));
    add("probe/fma_peak/cpu/-", probe_fma);
    for (const Shape &s : kShapes) {
        const bool small = std::string(s.name) == "small";
        for (int backend : backends) {
            // The reference (double loops) only on the small shape; the others skip it.
            if ((backend == int(gqa::Backend::reference)) != small) continue;
            const std::string tail = "/" + backend_label(backend) + "/" + s.name;
            add("layer/prefill512" + tail, layer_prefill, s, backend, kPrefillTokens);
            if (backend != kBaseline && (small || std::string(s.name) == "W1")) {
                add("layer/prefill512_hooks" + tail, layer_prefill_hooks, s, backend, kPrefillTokens);
            }
            // bf16 weights, as checkpoints ship them, and int8 ones; the baseline has fp32
            // ones only, and the small shapes (reference) none.
            std::vector<Shape> typed_shapes;
            if (backend != kBaseline && !small) {
                typed_shapes = {with_weights(s, gqa::WeightType::bf16), with_weights(s, gqa::WeightType::int8)};
            }
            for (const Shape &typed : typed_shapes) {
                add("layer/prefill512" + weight_suffix(typed) + tail, layer_prefill, typed, backend, kPrefillTokens);
            }
            add("core/prefill512" + tail, core, s, backend, kPrefillTokens, kPrefillTokens, gqa::CacheType::f32);
            add("proj/prefill512" + tail, projections, s, backend);
            for (int context : {2048, 8192}) {
                const std::string mode = "decode" + std::to_string(context);
                const gqa::CacheType f32 = gqa::CacheType::f32;
                add("layer/" + mode + "_hot" + tail, layer_decode, s, backend, context, false, f32);
                if (small) continue;
                add("layer/" + mode + "_cold" + tail, layer_decode, s, backend, context, true, f32);
                add("core/" + mode + tail, core, s, backend, 1, context, f32);
                // The smaller caches (the baseline has none): each with fp32 weights and in
                // the core alone, and bf16 and int8 each with weights of the same type, as
                // models serve.
                if (backend == kBaseline) continue;
                for (gqa::CacheType cache : {gqa::CacheType::f16, gqa::CacheType::bf16, gqa::CacheType::int8}) {
                    add("layer/" + mode + cache_suffix(cache) + "_cold" + tail, layer_decode, s, backend, context, true,
                        cache);
                    add("core/" + mode + cache_suffix(cache) + tail, core, s, backend, 1, context, cache);
                }
                for (const Shape &typed : typed_shapes) {
                    const std::string name = "layer/" + mode + weight_suffix(typed);
                    const gqa::CacheType cache = gqa::cache_type_from_name(gqa::weight_type_name(*typed.config.weight_type));
                    add(name + "_cold" + tail, layer_decode, typed, backend, context, true, f32);
                    add(name + cache_suffix(cache) + "_cold" + tail, layer_decode, typed, backend, context, true, cache);
                }
            }
            if (long_contexts(s, backend)) add_long_contexts(s, backend, tail);
        }
    }
    add("probe/dram_read/cpu/-", probe_dram);
    add("probe/int8_weights/cpu/-", probe_int8_weights);
}

}  // namespace

int main(int argc, char **argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    std::fprintf(stderr, "gqa-bench: measuring this machine's FMA peak and DRAM read bandwidth ...\n");
    cpu_limits = {gqa_bench::measure_fma_peak_gflops(kThreads),
                  gqa_bench::measure_dram_read_gbs(kThreads, size_t(1) << 30), cpu_l3_bytes()};
    std::fprintf(stderr, "gqa-bench: %.1f GFLOP/s fp32 FMA on %d threads, %.1f GB/s DRAM read, %zu MiB L3\n",
                 cpu_limits.gflops, kThreads, cpu_limits.gbs, cpu_limits.last_level_cache_bytes >> 20);
    benchmark::AddCustomContext("fma_peak_gflops", std::to_string(cpu_limits.gflops));
    benchmark::AddCustomContext("dram_read_gbs", std::to_string(cpu_limits.gbs));
    const auto available = gqa::available_backends();
    if (std::find(available.begin(), available.end(), gqa::Backend::cuda) != available.end()) {
        gpu = gqa_bench::cuda_device_limits();
        if (!gpu) std::fprintf(stderr, "gqa-bench: the CUDA driver did not give the device's limits; no fractions\n");
    }
    if (gpu) {
        std::fprintf(stderr, "gqa-bench: %s, %d SMs, compute %d.%d: %.1f TFLOP/s fp32, %.0f GB/s, %zu MiB L2\n",
                     gpu->name.c_str(), gpu->sm_count, gpu->compute_major, gpu->compute_minor, gpu->fp32_gflops * 1e-3,
                     gpu->dram_gbs, gpu->l2_bytes >> 20);
        benchmark::AddCustomContext("gpu_name", gpu->name);
        benchmark::AddCustomContext("gpu_fp32_gflops", std::to_string(gpu->fp32_gflops));
        benchmark::AddCustomContext("gpu_dram_gbs", std::to_string(gpu->dram_gbs));
    }
    register_all();
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
