// libFuzzer harness: the fuzzer's bytes pick a layer (sizes, RoPE, window, scale,
// soft-cap, biases, sinks, q/k norms), a KV cache or none, and a sequence of forward calls (lengths,
// masks, positions); every backend built and runnable here runs it next to the
// reference, and any difference aborts with a description of the case.
//
// Compared after each call: whether it threw (and the message), out, z, and the
// whole KV cache with its size; a call that threw must leave the cache as it was.
// Some layers serve sequences from a paged cache instead: joins, steps of several
// sequences (decode and prefill rows, an unknown id now and then), forks,
// rollbacks and leaves, compared by output, error and every sequence's contents.
// Tolerances: tools/tolerance.h; with an fp16 cache, its bounds against the
// reference's own fp16 run (the fuzzer makes no exact run).
//
// Run: gqa-fuzz -max_total_time=60 CORPUS_DIR (scripts/test.sh); regressions:
// gqa-fuzz -runs=0 tests/fuzz_regressions (CTest fuzz.regressions).
#include <fuzzer/FuzzedDataProvider.h>
#include <gqa/attention.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "../tools/tolerance.h"

namespace {

struct Tensor {
    std::vector<float> values;
    std::vector<int64_t> shape;
    gqa::TensorView<float> view() const { return {values.empty() ? nullptr : values.data(), shape}; }
};

struct Call {
    Tensor x;
    std::optional<std::vector<uint8_t>> mask;
    std::vector<int64_t> mask_shape;
    std::optional<std::vector<int32_t>> input_pos;
    std::vector<int64_t> input_pos_shape;
};

// One operation on a paged cache's sequences. `sequence` picks one of the live
// ones (modulo their count; a step's rows are live ones too, or an unknown id).
struct ServingOp {
    enum Kind { join, step, fork, truncate, leave } kind;
    int sequence = 0, length = 0;
    std::vector<gqa::SequenceTokens> rows;  // step: sequence picks, token counts
    Tensor x;
    std::optional<std::vector<int32_t>> input_pos;
};

struct Scenario {
    gqa::Config config;
    Tensor wq, wk, wv, wo, bq, bk, bv, bo, sinks, q_norm, k_norm;
    std::optional<gqa::CacheType> cache;
    int cache_batch = 0, cache_len = 0;
    std::vector<Call> calls;
    // A paged cache (block_size > 0) runs `serving` instead of `calls`.
    int block_size = 0, num_blocks = 0;
    std::vector<ServingOp> serving;
    std::string description;

    gqa::Weights weights() const {
        return {wq.view(), wk.view(), wv.view(),    wo.view(),     bq.view(),    bk.view(),
                bv.view(), bo.view(), sinks.view(), q_norm.view(), k_norm.view()};
    }
};

Tensor normal_tensor(std::vector<int64_t> shape, double stddev, std::mt19937 &rng) {
    Tensor t{{}, std::move(shape)};
    int64_t n = 1;
    for (int64_t e : t.shape) n *= e;
    std::normal_distribution<float> normal(0.f, float(stddev));
    t.values.resize(size_t(n));
    for (float &v : t.values) v = normal(rng);
    return t;
}

Scenario draw(FuzzedDataProvider &in) {
    Scenario s;
    gqa::Config &c = s.config;
    c.num_kv_heads = in.ConsumeIntegralInRange(1, 3);
    c.num_heads = c.num_kv_heads * in.ConsumeIntegralInRange(1, 4);
    c.rope_style = in.PickValueInArray({gqa::RopeStyle::none, gqa::RopeStyle::interleaved, gqa::RopeStyle::rotate_half});
    c.head_dim = in.ConsumeIntegralInRange(1, 24);
    // RoPE rotates pairs: an odd head_dim needs an even rotary_dim below it.
    if (c.rope_style != gqa::RopeStyle::none && c.head_dim == 1) c.rope_style = gqa::RopeStyle::none;
    if (c.rope_style != gqa::RopeStyle::none && (c.head_dim % 2 != 0 || in.ConsumeBool())) {
        c.rotary_dim = 2 * in.ConsumeIntegralInRange(1, c.head_dim / 2);
    }
    c.rope_fp32_angles = in.ConsumeBool();
    c.embed_dim = in.ConsumeIntegralInRange(1, 48);
    c.max_seq_len = in.ConsumeIntegralInRange(1, 96);
    c.is_causal = in.ConsumeProbability<float>() < 0.8f;
    if (in.ConsumeProbability<float>() < 0.25f) c.window = in.ConsumeIntegralInRange(1, 9);
    if (in.ConsumeBool()) c.scale = in.ConsumeFloatingPointInRange(0.05, 2.0);
    if (in.ConsumeProbability<float>() < 0.2f) c.layer_id = in.ConsumeIntegralInRange(0, 3);
    if (in.ConsumeProbability<float>() < 0.25f) c.softcap = in.ConsumeFloatingPointInRange(1.0, 50.0);
    const bool biases = in.ConsumeBool();

    const uint32_t seed = in.ConsumeIntegral<uint32_t>();
    std::mt19937 rng(seed);
    const int64_t q = int64_t(c.num_heads) * c.head_dim, kv = int64_t(c.num_kv_heads) * c.head_dim, d = c.embed_dim;
    s.wq = normal_tensor({q, d}, 1 / std::sqrt(double(d)), rng);
    s.wk = normal_tensor({kv, d}, 1 / std::sqrt(double(d)), rng);
    s.wv = normal_tensor({kv, d}, 1 / std::sqrt(double(d)), rng);
    s.wo = normal_tensor({d, q}, 1 / std::sqrt(double(q)), rng);
    if (biases) {
        s.bq = normal_tensor({q}, 0.5, rng), s.bk = normal_tensor({kv}, 0.5, rng);
        s.bv = normal_tensor({kv}, 0.5, rng), s.bo = normal_tensor({d}, 0.5, rng);
    }
    // The features added after the corpus was grown come from their own generator,
    // so the saved inputs still draw the layers and calls they were saved for.
    std::mt19937 feature_rng(seed + 1);
    std::bernoulli_distribution with_sinks(0.25);
    const bool sinks = with_sinks(feature_rng);
    if (sinks) s.sinks = normal_tensor({c.num_heads}, 2.0, feature_rng);
    c.qk_norm = std::uniform_int_distribution<int>(0, 3)(feature_rng) == 0 ? gqa::QkNorm::per_head
                : std::uniform_int_distribution<int>(0, 3)(feature_rng) == 0 ? gqa::QkNorm::all_heads
                                                                            : gqa::QkNorm::none;
    if (c.qk_norm != gqa::QkNorm::none) {
        const bool per_head = c.qk_norm == gqa::QkNorm::per_head;
        s.q_norm = normal_tensor({per_head ? c.head_dim : q}, 0.5, feature_rng);
        s.k_norm = normal_tensor({per_head ? c.head_dim : kv}, 0.5, feature_rng);
    }
    // Most layers keep their weights in bf16, f16 or int8: the reference then
    // computes from the same rounded values, so the tolerances stay those of fp32.
    const int weight_kind = std::uniform_int_distribution<int>(0, 3)(feature_rng);
    if (weight_kind > 0) {
        c.weight_type = std::array{gqa::WeightType::bf16, gqa::WeightType::f16, gqa::WeightType::int8}[weight_kind - 1];
    }

    const int cache_kind = in.ConsumeIntegralInRange(0, 4);
    const int batch = in.ConsumeIntegralInRange(1, 3);
    if (cache_kind > 0) {
        s.cache = std::array{gqa::CacheType::f32, gqa::CacheType::f16, gqa::CacheType::bf16,
                             gqa::CacheType::int8}[cache_kind - 1];
        s.cache_batch = batch;
        s.cache_len = in.ConsumeIntegralInRange(1, 96);
    }

    // Calls until the bytes run out (at most 6). Lengths may overflow the cache or
    // max_seq_len, positions may go backwards: both sides must then refuse alike.
    int written = 0;
    std::vector<int32_t> last_position(batch, -1);
    const int calls = in.ConsumeIntegralInRange(1, 6);
    for (int n = 0; n < calls && in.remaining_bytes() > 0; ++n) {
        Call call;
        const bool decode = s.cache && written > 0 && in.ConsumeBool();
        const int seq_len = decode ? 1 : in.ConsumeIntegralInRange(1, 70);
        call.x = normal_tensor({batch, seq_len, d}, 1.0, rng);
        const int kv_len = (s.cache ? written : 0) + seq_len;
        if (in.ConsumeProbability<float>() < 0.3f) {
            const int mask_len = s.cache && in.ConsumeBool() ? s.cache_len : kv_len;
            const float density = in.ConsumeProbability<float>();
            std::bernoulli_distribution allowed(density);
            call.mask_shape = {batch, seq_len, mask_len};
            call.mask.emplace(size_t(batch) * seq_len * mask_len);
            for (uint8_t &m : *call.mask) m = allowed(rng);
        }
        if (in.ConsumeProbability<float>() < 0.4f) {
            const bool per_row = in.ConsumeBool();
            const int rows = per_row ? batch : 1;
            call.input_pos_shape = per_row ? std::vector<int64_t>{batch, seq_len} : std::vector<int64_t>{seq_len};
            call.input_pos.emplace();
            for (int b = 0; b < rows; ++b) {
                int32_t p = s.cache ? last_position[b] : -1;
                for (int i = 0; i < seq_len; ++i) {
                    p = s.cache || in.ConsumeBool() ? p + in.ConsumeIntegralInRange(1, 3)
                                                    : in.ConsumeIntegralInRange(0, c.max_seq_len - 1);
                    call.input_pos->push_back(p);
                }
            }
        }
        if (s.cache && kv_len <= s.cache_len) {
            written = kv_len;
            for (int b = 0; b < batch; ++b) {
                last_position[b] = call.input_pos ? (*call.input_pos)[size_t(call.input_pos_shape.size() == 2 ? b : 0) *
                                                                           seq_len + seq_len - 1]
                                                  : kv_len - 1;
            }
        }
        s.calls.push_back(std::move(call));
    }

    // Some layers with a cache serve sequences from a paged one instead, with
    // operations of their own drawn from the same bytes.
    std::mt19937 serving_rng(seed + 2);
    if (s.cache && std::bernoulli_distribution(0.3)(serving_rng)) {
        s.calls.clear();
        s.block_size = std::uniform_int_distribution<int>(1, 2)(serving_rng) * 16;
        s.num_blocks = std::uniform_int_distribution<int>(1, 12)(serving_rng);
        const int ops = std::uniform_int_distribution<int>(1, 12)(serving_rng);
        for (int n = 0; n < ops; ++n) {
            ServingOp op{ServingOp::Kind(std::uniform_int_distribution<int>(0, 4)(serving_rng))};
            op.sequence = std::uniform_int_distribution<int>(0, 7)(serving_rng);
            op.length = std::uniform_int_distribution<int>(0, 40)(serving_rng);
            if (n == 0) op.kind = ServingOp::join;
            if (op.kind == ServingOp::step) {
                const int rows = std::uniform_int_distribution<int>(1, 3)(serving_rng);
                int tokens = 0;
                for (int r = 0; r < rows; ++r) {
                    const int count = std::uniform_int_distribution<int>(0, 3)(serving_rng) == 0
                                          ? std::uniform_int_distribution<int>(2, 40)(serving_rng)
                                          : 1;
                    op.rows.push_back({std::uniform_int_distribution<int>(0, 8)(serving_rng), count});
                    tokens += count;
                }
                op.x = normal_tensor({tokens, d}, 1.0, serving_rng);
                if (std::bernoulli_distribution(0.3)(serving_rng)) {
                    op.input_pos.emplace();
                    int32_t p = -1;
                    for (int t = 0; t < tokens; ++t) op.input_pos->push_back(p += std::uniform_int_distribution<int>(1, 3)(serving_rng));
                }
            }
            s.serving.push_back(std::move(op));
        }
    }

    std::ostringstream text;
    text << "d=" << c.embed_dim << " heads=" << c.num_heads << " kv_heads=" << c.num_kv_heads
         << " head_dim=" << c.head_dim << " max_seq_len=" << c.max_seq_len << " rope=" << int(c.rope_style)
         << " rotary_dim=" << c.rotary_dim << " fp32_angles=" << c.rope_fp32_angles << " causal=" << c.is_causal
         << " window=" << c.window.value_or(0) << " scale=" << c.scale << " layer_id=" << c.layer_id
         << " softcap=" << c.softcap << " biases=" << biases << " sinks=" << sinks
         << " qk_norm=" << int(c.qk_norm)
         << " weights=" << gqa::weight_type_name(c.weight_type.value_or(gqa::WeightType::f32)) << " cache="
         << (s.cache ? std::string(gqa::cache_type_name(*s.cache)) : "none") << " cache_batch=" << s.cache_batch
         << " cache_len=" << s.cache_len << "\n";
    if (s.block_size > 0) text << "  paged: " << s.num_blocks << " blocks of " << s.block_size << "\n";
    for (const ServingOp &op : s.serving) {
        static const char *const kinds[] = {"join", "step", "fork", "truncate", "leave"};
        text << "  " << kinds[op.kind] << " " << op.sequence << " " << op.length;
        for (const gqa::SequenceTokens &row : op.rows) text << " (" << row.sequence << ", " << row.tokens << ")";
        text << (op.input_pos ? " input_pos" : "") << "\n";
    }
    for (const Call &call : s.calls) {
        text << "  call x " << gqa::shape_string(call.x.shape) << " mask "
             << (call.mask ? gqa::shape_string(call.mask_shape) : "none") << " input_pos "
             << (call.input_pos ? gqa::shape_string(call.input_pos_shape) : "none") << "\n";
    }
    s.description = text.str();
    return s;
}

[[noreturn]] void mismatch(const Scenario &s, gqa::Backend backend, const std::string &what) {
    std::fprintf(stderr, "gqa-fuzz: %s differs from the reference: %s\n%s", std::string(gqa::backend_name(backend)).c_str(),
                 what.c_str(), s.description.c_str());
    std::abort();
}

void compare(const Scenario &s, gqa::Backend backend, const std::string &what, const std::vector<float> &got,
             const std::vector<float> &want, double tolerance) {
    if (got.size() != want.size()) mismatch(s, backend, what + ": sizes differ");
    for (size_t n = 0; n < got.size(); ++n) {
        const bool both_nan = std::isnan(got[n]) && std::isnan(want[n]);
        if (!both_nan && gqa_tools::tolerance_excess(got[n], want[n], tolerance, tolerance) > 0) {
            mismatch(s, backend,
                     what + "[" + std::to_string(n) + "] = " + std::to_string(got[n]) + ", reference " +
                         std::to_string(want[n]));
        }
    }
}

std::vector<float> cache_values(const gqa::Attention &layer, bool keys) {
    if (!layer.has_cache()) return {};
    return keys ? layer.k_cache_as_float() : layer.v_cache_as_float();
}

// A cache as fp32 against the reference's: fp32 within the fp32 tolerance, the
// other types within one unit of the type (gqa_tools::within_one_unit); NaN where
// the reference has NaN.
void compare_cache(const Scenario &s, gqa::Backend backend, const std::string &what, const std::vector<float> &got,
                   const std::vector<float> &want) {
    const gqa::CacheType type = s.cache.value_or(gqa::CacheType::f32);
    if (type == gqa::CacheType::f32) return compare(s, backend, what, got, want, GQA_ATOL);
    if (got.size() != want.size()) mismatch(s, backend, what + ": sizes differ");
    const std::vector<size_t> past = gqa_tools::values_past_one_unit(type, got, want, size_t(s.config.head_dim));
    if (!past.empty()) {
        const size_t e = past.front();
        mismatch(s, backend,
                 what + "[" + std::to_string(e) + "] = " + std::to_string(got[e]) + ", reference " +
                     std::to_string(want[e]));
    }
}

struct Outcome {
    std::optional<std::string> error;
    std::vector<float> out, z, k, v;
    int size = 0;
};

Outcome run_call(gqa::Attention &layer, const Call &call) {
    Outcome outcome;
    const std::vector<float> k_before = cache_values(layer, true), v_before = cache_values(layer, false);
    const int size_before = layer.size();
    std::optional<gqa::TensorView<uint8_t>> mask;
    if (call.mask) mask = gqa::TensorView<uint8_t>{call.mask->data(), call.mask_shape};
    std::optional<gqa::TensorView<int32_t>> input_pos;
    if (call.input_pos) input_pos = gqa::TensorView<int32_t>{call.input_pos->data(), call.input_pos_shape};
    try {
        outcome.out = layer.forward(call.x.view(), mask, input_pos);
        const gqa::TensorView<float> z = layer.z();
        outcome.z.assign(z.data, z.data + z.numel());
    } catch (const gqa::Error &error) {
        outcome.error = error.what();
    }
    outcome.k = cache_values(layer, true);
    outcome.v = cache_values(layer, false);
    outcome.size = layer.size();
    if (outcome.error && (outcome.k != k_before || outcome.v != v_before || outcome.size != size_before)) {
        std::fprintf(stderr, "gqa-fuzz: a refused call (%s) changed the KV cache\n", outcome.error->c_str());
        std::abort();
    }
    return outcome;
}

// What a serving operation leaves: its error, its output, and every live
// sequence's length and keys and values. A refused operation must change none.
struct ServingState {
    std::vector<int> ids, lengths;
    std::vector<float> k, v;
    int free_blocks = 0;
    bool operator==(const ServingState &) const = default;
};

ServingState serving_state(const gqa::Attention &layer) {
    ServingState state;
    state.ids = layer.sequences();
    state.free_blocks = layer.free_paged_blocks();
    for (int id : state.ids) {
        state.lengths.push_back(layer.sequence_length(id));
        for (bool keys : {true, false}) {
            const std::vector<float> values = keys ? layer.sequence_k_as_float(id) : layer.sequence_v_as_float(id);
            (keys ? state.k : state.v).insert((keys ? state.k : state.v).end(), values.begin(), values.end());
        }
    }
    return state;
}

struct ServingOutcome {
    std::optional<std::string> error;
    std::vector<float> out;
    ServingState state;
};

ServingOutcome run_op(gqa::Attention &layer, const ServingOp &op) {
    ServingOutcome outcome;
    const ServingState before = serving_state(layer);
    // Live sequences by position (the same on every backend: ids are handed out alike).
    auto live = [&](int pick) { return before.ids.empty() ? pick : before.ids[size_t(pick) % before.ids.size()]; };
    try {
        switch (op.kind) {
        case ServingOp::join: layer.add_sequence(); break;
        case ServingOp::fork: layer.fork_sequence(live(op.sequence)); break;
        case ServingOp::truncate: layer.truncate_sequence(live(op.sequence), op.length); break;
        case ServingOp::leave: layer.remove_sequence(live(op.sequence)); break;
        case ServingOp::step: {
            std::vector<gqa::SequenceTokens> rows = op.rows;
            for (gqa::SequenceTokens &row : rows) row.sequence = row.sequence == 8 ? 99 : live(row.sequence);
            outcome.out.resize(op.x.values.size());
            std::optional<gqa::TensorView<int32_t>> positions;
            if (op.input_pos) positions = gqa::TensorView<int32_t>{op.input_pos->data(), {int64_t(op.input_pos->size())}};
            layer.forward_sequences(rows, op.x.view(), outcome.out, positions);
            break;
        }
        }
    } catch (const gqa::Error &error) {
        outcome.error = error.what();
        outcome.out.clear();
    }
    outcome.state = serving_state(layer);
    if (outcome.error && !(outcome.state == before)) {
        std::fprintf(stderr, "gqa-fuzz: a refused serving call (%s) changed the paged cache\n", outcome.error->c_str());
        std::abort();
    }
    return outcome;
}

std::optional<gqa::Attention> make_layer(const Scenario &s, gqa::Backend backend, std::optional<std::string> &error) {
    try {
        gqa::Attention layer(s.config, s.weights(), backend);
        if (s.block_size > 0) {
            layer.setup_paged_cache(s.num_blocks, s.block_size, *s.cache);
        } else if (s.cache) {
            layer.setup_cache(s.cache_batch, s.cache_len, *s.cache);
        }
        return layer;
    } catch (const gqa::Error &e) {
        error = e.what();
        return std::nullopt;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FuzzedDataProvider in(data, size);
    const Scenario s = draw(in);
    const gqa::CacheType cache_type = s.cache.value_or(gqa::CacheType::f32);
    const double tolerance = cache_type == gqa::CacheType::f32    ? GQA_ATOL
                             : cache_type == gqa::CacheType::int8 ? GQA_INT8_CACHE_TOL
                                                                  : GQA_HALF_CACHE_TOL;

    std::optional<std::string> reference_error;
    std::optional<gqa::Attention> reference = make_layer(s, gqa::Backend::reference, reference_error);
    std::vector<Outcome> want;
    std::vector<ServingOutcome> want_serving;
    if (reference) {
        for (const Call &call : s.calls) want.push_back(run_call(*reference, call));
        for (const ServingOp &op : s.serving) want_serving.push_back(run_op(*reference, op));
    }

    for (gqa::Backend backend : gqa::available_backends()) {
        if (backend == gqa::Backend::reference || backend == gqa::Backend::best) continue;
        std::optional<std::string> error;
        std::optional<gqa::Attention> layer = make_layer(s, backend, error);
        if (error != reference_error) {
            mismatch(s, backend, "construction: " + error.value_or("accepted") + " vs " + reference_error.value_or("accepted"));
        }
        if (!layer) continue;
        for (size_t n = 0; n < s.calls.size(); ++n) {
            const Outcome got = run_call(*layer, s.calls[n]);
            const std::string at = "call " + std::to_string(n) + " ";
            if (got.error != want[n].error) {
                mismatch(s, backend, at + "error: " + got.error.value_or("none") + " vs " + want[n].error.value_or("none"));
            }
            compare(s, backend, at + "out", got.out, want[n].out, tolerance);
            compare(s, backend, at + "z", got.z, want[n].z, tolerance);
            compare_cache(s, backend, at + "k_cache", got.k, want[n].k);
            compare_cache(s, backend, at + "v_cache", got.v, want[n].v);
            if (got.size != want[n].size) mismatch(s, backend, at + "cache size");
        }
        for (size_t n = 0; n < s.serving.size(); ++n) {
            const ServingOutcome got = run_op(*layer, s.serving[n]);
            const ServingOutcome &expected = want_serving[n];
            const std::string at = "operation " + std::to_string(n) + " ";
            if (got.error != expected.error) {
                mismatch(s, backend, at + "error: " + got.error.value_or("none") + " vs " + expected.error.value_or("none"));
            }
            compare(s, backend, at + "out", got.out, expected.out, tolerance);
            if (got.state.ids != expected.state.ids || got.state.lengths != expected.state.lengths ||
                got.state.free_blocks != expected.state.free_blocks) {
                mismatch(s, backend, at + "sequences or free blocks");
            }
            compare_cache(s, backend, at + "sequence keys", got.state.k, expected.state.k);
            compare_cache(s, backend, at + "sequence values", got.state.v, expected.state.v);
        }
    }
    return 0;
}
