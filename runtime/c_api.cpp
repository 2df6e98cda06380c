// The C API (include/gqa/gqa.h): each call forwards to gqa::Attention inside one
// try block, so no C++ exception crosses into C; failures set a per-thread message.
#include "gqa/gqa.h"

#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "gqa/attention.hpp"
#include "validation.h"

struct gqa_attention {
    gqa::Attention layer;
};

namespace {

thread_local std::string last_error;

// Runs `call`, mapping what it throws to a status and this thread's message.
template <typename Call>
gqa_status guarded(Call &&call) {
    try {
        call();
        last_error.clear();
        return GQA_STATUS_OK;
    } catch (const gqa::Error &error) {
        last_error = error.what();
        return GQA_STATUS_INVALID;
    } catch (const std::bad_alloc &) {
        last_error = "out of memory";
        return GQA_STATUS_OUT_OF_MEMORY;
    } catch (const std::exception &error) {
        last_error = error.what();
        return GQA_STATUS_INTERNAL;
    } catch (...) {
        last_error = "unknown exception";
        return GQA_STATUS_INTERNAL;
    }
}

[[noreturn]] void invalid(const std::string &message) {
    throw gqa::Error(message);
}

// A C caller may pass any int as an enum; in C++ loading an enum object that holds
// a value outside its enumerators' range is undefined, so read the bits as an int.
template <typename Enum>
int enum_value(const Enum &value) {
    static_assert(sizeof(Enum) == sizeof(int));
    int bits;
    std::memcpy(&bits, &value, sizeof bits);
    return bits;
}

std::optional<gqa::Backend> known_backend(const gqa_backend &backend) {
    switch (enum_value(backend)) {
    case GQA_BACKEND_REFERENCE: return gqa::Backend::reference;
    case GQA_BACKEND_X86: return gqa::Backend::x86;
    case GQA_BACKEND_ARM: return gqa::Backend::arm;
    case GQA_BACKEND_CUDA: return gqa::Backend::cuda;
    case GQA_BACKEND_OPENCL: return gqa::Backend::opencl;
    case GQA_BACKEND_BEST: return gqa::Backend::best;
    }
    return std::nullopt;
}

gqa::Backend to_backend(const gqa_backend &backend) {
    if (const std::optional<gqa::Backend> known = known_backend(backend)) return *known;
    invalid("backend is " + std::to_string(enum_value(backend)) + "; expected a gqa_backend value (0 to 5)");
}

// A C enum whose values 0, 1, ... name `values` in order (as gqa.h declares them).
template <typename CEnum, typename To>
To from_c_enum(const CEnum &c_value, std::initializer_list<To> values, const char *field, const char *type_name) {
    const int value = enum_value(c_value);
    if (value < 0 || value >= int(values.size())) {
        invalid(std::string(field) + " is " + std::to_string(value) + "; expected a " + type_name + " value (0 to " +
                std::to_string(values.size() - 1) + ")");
    }
    return values.begin()[value];
}

// The per-pair arrays a config points to hold this many values.
int rotary_pairs(const gqa_config &c) {
    return (c.rotary_dim == 0 ? c.head_dim : c.rotary_dim) / 2;
}

std::vector<double> per_pair(const double *values, const char *name, int pairs) {
    if (pairs <= 0) {
        invalid(std::string(name) + " is given, but rotary_dim / 2 (or head_dim / 2) is " + std::to_string(pairs) +
                "; expected > 0");
    }
    return std::vector<double>(values, values + pairs);
}

gqa::RopeScaling to_rope_scaling(const gqa_rope_scaling &s, int pairs) {
    gqa::RopeScaling scaling;
    using gqa::RopeScalingType;
    scaling.type = from_c_enum(s.type, {RopeScalingType::none, RopeScalingType::linear, RopeScalingType::llama3,
                                        RopeScalingType::yarn, RopeScalingType::longrope},
                               "rope_scaling.type", "gqa_rope_scaling_type");
    scaling.factor = s.factor;
    scaling.original_max_position_embeddings = s.original_max_position_embeddings;
    scaling.low_freq_factor = s.low_freq_factor, scaling.high_freq_factor = s.high_freq_factor;
    scaling.beta_fast = s.beta_fast, scaling.beta_slow = s.beta_slow;
    scaling.truncate = s.truncate != 0;
    scaling.mscale = s.mscale, scaling.mscale_all_dim = s.mscale_all_dim;
    if (s.short_factor) scaling.short_factor = per_pair(s.short_factor, "rope_scaling.short_factor", pairs);
    if (s.long_factor) scaling.long_factor = per_pair(s.long_factor, "rope_scaling.long_factor", pairs);
    scaling.max_position_embeddings = s.max_position_embeddings;
    scaling.attention_factor = s.attention_factor;
    return scaling;
}

gqa::WeightType to_weight_type(gqa_weight_type type, const char *name) {
    return from_c_enum(type, {gqa::WeightType::f32, gqa::WeightType::bf16, gqa::WeightType::f16, gqa::WeightType::int8},
                       name, "gqa_weight_type (GQA_WEIGHT_F32, BF16, F16 or INT8)");
}

gqa::Config to_config(const gqa_config &c) {
    gqa::Config config;
    config.embed_dim = c.embed_dim;
    config.num_heads = c.num_heads;
    config.num_kv_heads = c.num_kv_heads;
    config.head_dim = c.head_dim;
    config.max_seq_len = c.max_seq_len;
    config.rope_style = from_c_enum(c.rope_style, {gqa::RopeStyle::none, gqa::RopeStyle::interleaved,
                                                   gqa::RopeStyle::rotate_half},
                                    "rope_style", "gqa_rope_style");
    config.rope_base = c.rope_base;
    config.rotary_dim = c.rotary_dim;
    config.rope_fp32_angles = c.rope_fp32_angles != 0;
    config.is_causal = c.is_causal != 0;
    if (c.has_window) config.window = c.window;
    config.scale = c.scale;
    config.layer_id = c.layer_id;
    config.softcap = c.softcap;
    config.rope_scaling = to_rope_scaling(c.rope_scaling, rotary_pairs(c));
    if (c.rope_inv_freq) config.rope_inv_freq = per_pair(c.rope_inv_freq, "rope_inv_freq", rotary_pairs(c));
    config.qk_norm = from_c_enum(c.qk_norm, {gqa::QkNorm::none, gqa::QkNorm::per_head, gqa::QkNorm::all_heads},
                                 "qk_norm", "gqa_qk_norm");
    config.qk_norm_eps = c.qk_norm_eps;
    if (c.weight_type != GQA_WEIGHT_AS_GIVEN) config.weight_type = to_weight_type(c.weight_type, "weight_type");
    return config;
}

template <typename T>
void require_pointer(const T *pointer, const char *name) {
    if (!pointer) invalid(std::string(name) + " is NULL");
}

}  // namespace

extern "C" {

gqa_config gqa_config_default(void) {
    const gqa::Config defaults;
    gqa_config c{};
    c.max_seq_len = defaults.max_seq_len;
    c.rope_style = GQA_ROPE_INTERLEAVED;
    c.rope_base = defaults.rope_base;
    c.is_causal = 1;
    c.layer_id = defaults.layer_id;
    const gqa::RopeScaling scaling;
    c.rope_scaling.type = GQA_ROPE_SCALING_NONE;
    c.rope_scaling.factor = scaling.factor;
    c.rope_scaling.low_freq_factor = scaling.low_freq_factor, c.rope_scaling.high_freq_factor = scaling.high_freq_factor;
    c.rope_scaling.beta_fast = scaling.beta_fast, c.rope_scaling.beta_slow = scaling.beta_slow;
    c.rope_scaling.truncate = scaling.truncate;
    c.qk_norm = GQA_QK_NORM_NONE;
    c.qk_norm_eps = defaults.qk_norm_eps;
    c.weight_type = GQA_WEIGHT_AS_GIVEN;
    return c;
}

const char *gqa_last_error(void) {
    return last_error.c_str();
}

const char *gqa_status_name(gqa_status status) {
    switch (status) {
    case GQA_STATUS_OK: return "ok";
    case GQA_STATUS_INVALID: return "invalid";
    case GQA_STATUS_OUT_OF_MEMORY: return "out of memory";
    case GQA_STATUS_INTERNAL: return "internal error";
    }
    return "unknown status";
}

// These two return no status, so they leave this thread's message alone: a caller
// may print it next to a backend's name.
const char *gqa_backend_name(gqa_backend backend) {
    const std::optional<gqa::Backend> known = known_backend(backend);
    return known ? gqa::backend_name(*known).data() : "unknown";
}

int gqa_backend_available(gqa_backend backend) {
    const std::optional<gqa::Backend> known = known_backend(backend);
    return known && (*known == gqa::Backend::best || gqa::backend_unavailable_reason(*known).empty());
}

gqa_status gqa_attention_create(const gqa_config *config, const gqa_weights *weights, gqa_backend backend,
                                gqa_attention **layer) {
    if (layer) *layer = nullptr;
    return guarded([&] {
        require_pointer(layer, "layer");
        require_pointer(config, "config");
        require_pointer(weights, "weights");
        const gqa::Config c = to_config(*config);
        const int64_t q = int64_t(c.num_heads) * c.head_dim, kv = int64_t(c.num_kv_heads) * c.head_dim,
                      d = c.embed_dim;
        // The C++ layer checks the config before it reads a weight, so these shapes
        // are only used once the sizes they come from are valid. A NULL weight is an
        // empty view, which it reports as "<name> has no data" (or no bias).
        const auto view = [](const float *data, std::vector<int64_t> shape) {
            return data ? gqa::TensorView<float>{data, std::move(shape)} : gqa::TensorView<float>{};
        };
        const gqa::WeightType type = to_weight_type(weights->type, "weights.type");
        if (type == gqa::WeightType::int8) {
            invalid("weights.type is GQA_WEIGHT_INT8, which comes with no scales here; give fp32, bf16 or f16 "
                    "weights and set config.weight_type to GQA_WEIGHT_INT8 to quantize them");
        }
        const auto projection = [type](const void *data, std::vector<int64_t> shape) {
            if (!data) return gqa::WeightView{};
            return type == gqa::WeightType::f32
                       ? gqa::WeightView(static_cast<const float *>(data), std::move(shape))
                       : gqa::WeightView(static_cast<const uint16_t *>(data), std::move(shape), type);
        };
        const gqa::Weights w{projection(weights->wq, {q, d}), projection(weights->wk, {kv, d}),
                             projection(weights->wv, {kv, d}), projection(weights->wo, {d, q}),
                             view(weights->bq, {q}),     view(weights->bk, {kv}),
                             view(weights->bv, {kv}),   view(weights->bo, {d}),     view(weights->sinks, {c.num_heads}),
                             view(weights->q_norm, {gqa::detail::qk_norm_size(c, false)}),
                             view(weights->k_norm, {gqa::detail::qk_norm_size(c, true)})};
        *layer = new gqa_attention{gqa::Attention(c, w, to_backend(backend))};
    });
}

void gqa_attention_free(gqa_attention *layer) {
    delete layer;
}

gqa_backend gqa_attention_backend(const gqa_attention *layer) {
    if (!layer) return GQA_BACKEND_NONE;
    switch (layer->layer.backend()) {
    case gqa::Backend::reference: return GQA_BACKEND_REFERENCE;
    case gqa::Backend::x86: return GQA_BACKEND_X86;
    case gqa::Backend::arm: return GQA_BACKEND_ARM;
    case gqa::Backend::cuda: return GQA_BACKEND_CUDA;
    case gqa::Backend::opencl: return GQA_BACKEND_OPENCL;
    case gqa::Backend::best: break;
    }
    return GQA_BACKEND_BEST;
}

gqa_status gqa_attention_setup_cache(gqa_attention *layer, int32_t batch, int32_t max_seq_len, gqa_cache_type type) {
    return guarded([&] {
        require_pointer(layer, "layer");
        using gqa::CacheType;
        layer->layer.setup_cache(batch, max_seq_len,
                                 from_c_enum(type, {CacheType::f32, CacheType::f16, CacheType::bf16, CacheType::int8},
                                             "cache type", "gqa_cache_type"));
    });
}

gqa_status gqa_attention_reset(gqa_attention *layer) {
    return guarded([&] {
        require_pointer(layer, "layer");
        layer->layer.reset();
    });
}

int32_t gqa_attention_cache_size(const gqa_attention *layer) {
    return layer ? layer->layer.size() : -1;
}

gqa_status gqa_attention_append_cache(gqa_attention *layer, const float *k, const float *v, int32_t n) {
    return guarded([&] {
        require_pointer(layer, "layer");
        gqa::Attention &a = layer->layer;
        if (!a.has_cache()) invalid("no KV cache: call gqa_attention_setup_cache first");
        const std::vector<int64_t> shape{a.cache_batch(), a.config().num_kv_heads, n, a.config().head_dim};
        a.append_cache({k, shape}, {v, shape});
    });
}

gqa_status gqa_attention_read_cache(const gqa_attention *layer, float *k, float *v, size_t count) {
    return guarded([&] {
        require_pointer(layer, "layer");
        require_pointer(k, "k");
        require_pointer(v, "v");
        const gqa::Attention &a = layer->layer;
        if (!a.has_cache()) invalid("no KV cache: call gqa_attention_setup_cache first");
        const size_t want = size_t(a.cache_batch()) * a.config().num_kv_heads * a.cache_max_seq_len() * a.config().head_dim;
        if (count != want) {
            invalid("count is " + std::to_string(count) + "; the cache holds " + std::to_string(want) +
                    " values in each of k and v");
        }
        const std::vector<float> keys = a.k_cache_as_float(), values = a.v_cache_as_float();
        std::copy(keys.begin(), keys.end(), k);
        std::copy(values.begin(), values.end(), v);
    });
}

namespace {

std::optional<gqa::TensorView<uint8_t>> mask_view(const uint8_t *mask, int32_t batch, int32_t seq_len,
                                                  int32_t mask_len) {
    if (!mask) return std::nullopt;
    return gqa::TensorView<uint8_t>{mask, {batch, seq_len, mask_len}};
}

std::optional<gqa::TensorView<int32_t>> positions_view(const int32_t *input_pos, int32_t rows, int32_t seq_len) {
    if (!input_pos) return std::nullopt;
    if (rows == 1) return gqa::TensorView<int32_t>{input_pos, {seq_len}};
    return gqa::TensorView<int32_t>{input_pos, {rows, seq_len}};
}

gqa::Hook hook_of(gqa_hook hook) {
    using gqa::Hook;
    return from_c_enum(hook,
                       {Hook::q, Hook::k, Hook::v, Hook::rot_q, Hook::rot_k, Hook::attn_scores, Hook::pattern, Hook::z,
                        Hook::result},
                       "hook", "gqa_hook");
}

}  // namespace

gqa_status gqa_attention_forward(gqa_attention *layer, const float *x, int32_t batch, int32_t seq_len, float *out,
                                 size_t out_count, const uint8_t *mask, int32_t mask_len, const int32_t *input_pos,
                                 int32_t input_pos_rows) {
    return guarded([&] {
        require_pointer(layer, "layer");
        require_pointer(out, "out");
        const int64_t d = layer->layer.config().embed_dim;
        layer->layer.forward({x, {batch, seq_len, d}}, {out, out_count}, mask_view(mask, batch, seq_len, mask_len),
                             positions_view(input_pos, input_pos_rows, seq_len));
    });
}

const char *gqa_hook_name(gqa_hook hook) {
    if (int(hook) < 0 || int(hook) >= gqa::kHookCount) return nullptr;
    return gqa::hook_name(gqa::Hook(hook)).data();
}

gqa_status gqa_attention_set_recorded_hooks(gqa_attention *layer, const gqa_hook *hooks, int32_t count) {
    return guarded([&] {
        require_pointer(layer, "layer");
        if (count < 0) invalid("count is " + std::to_string(count) + "; expected >= 0");
        if (count > 0) require_pointer(hooks, "hooks");
        std::vector<gqa::Hook> recorded;
        for (int32_t i = 0; i < count; ++i) recorded.push_back(hook_of(hooks[i]));
        layer->layer.set_recorded_hooks(recorded);
    });
}

gqa_status gqa_attention_hook(const gqa_attention *layer, gqa_hook hook, int64_t shape[4], float *values,
                              size_t count) {
    return guarded([&] {
        require_pointer(layer, "layer");
        require_pointer(shape, "shape");
        const gqa::TensorView<float> view = layer->layer.hook(hook_of(hook));
        if (values && count != size_t(view.numel())) {
            invalid("count is " + std::to_string(count) + "; " + std::string(gqa::hook_name(hook_of(hook))) + " holds " +
                    std::to_string(view.numel()) + " floats " + gqa::shape_string(view.shape));
        }
        std::copy(view.shape.begin(), view.shape.end(), shape);
        if (values) std::copy_n(view.data, view.numel(), values);
    });
}

gqa_status gqa_attention_forward_hooked(gqa_attention *layer, const float *x, const float *query, const float *key,
                                        const float *value, int32_t batch, int32_t seq_len, float *out,
                                        size_t out_count, const uint8_t *mask, int32_t mask_len,
                                        const int32_t *input_pos, int32_t input_pos_rows, const gqa_patch *patches,
                                        int32_t patch_count) {
    return guarded([&] {
        require_pointer(layer, "layer");
        require_pointer(out, "out");
        if (patch_count < 0) invalid("patch_count is " + std::to_string(patch_count) + "; expected >= 0");
        if (patch_count > 0) require_pointer(patches, "patches");
        const gqa::Config &c = layer->layer.config();
        std::vector<gqa::Patch> views;
        for (int32_t i = 0; i < patch_count; ++i) {
            const gqa::Hook hook = hook_of(patches[i].hook);
            const std::vector<int64_t> shape = layer->layer.hook_shape(hook, batch, seq_len);
            const int64_t elements = gqa::TensorView<float>{nullptr, shape}.numel();
            if (patches[i].count != size_t(elements)) {
                invalid("patches[" + std::to_string(i) + "] (" + std::string(gqa::hook_name(hook)) + ") holds " +
                        std::to_string(patches[i].count) + " floats; expected " + std::to_string(elements) + " " +
                        gqa::shape_string(shape));
            }
            views.push_back({hook, {patches[i].values, shape}});
        }
        const auto masked = mask_view(mask, batch, seq_len, mask_len);
        const auto positions = positions_view(input_pos, input_pos_rows, seq_len);
        if (x) {
            if (query || key || value) invalid("x and split inputs at once: pass one or the other");
            layer->layer.forward({x, {batch, seq_len, c.embed_dim}}, {out, out_count}, masked, positions, views);
            return;
        }
        const gqa::SplitQkvInput split{{query, {batch, seq_len, c.num_heads, c.embed_dim}},
                                       {key, {batch, seq_len, c.num_kv_heads, c.embed_dim}},
                                       {value, {batch, seq_len, c.num_kv_heads, c.embed_dim}}};
        layer->layer.forward_split(split, {out, out_count}, masked, positions, views);
    });
}

gqa_status gqa_attention_setup_paged_cache(gqa_attention *layer, int32_t num_blocks, int32_t block_size,
                                           gqa_cache_type type) {
    return guarded([&] {
        require_pointer(layer, "layer");
        using gqa::CacheType;
        layer->layer.setup_paged_cache(num_blocks, block_size,
                                       from_c_enum(type, {CacheType::f32, CacheType::f16, CacheType::bf16,
                                                          CacheType::int8},
                                                   "cache type", "gqa_cache_type"));
    });
}

int32_t gqa_attention_free_blocks(const gqa_attention *layer) {
    return layer && layer->layer.has_paged_cache() ? layer->layer.free_paged_blocks() : -1;
}

gqa_status gqa_attention_add_sequence(gqa_attention *layer, int32_t *sequence) {
    return guarded([&] {
        require_pointer(layer, "layer");
        require_pointer(sequence, "sequence");
        *sequence = layer->layer.add_sequence();
    });
}

gqa_status gqa_attention_fork_sequence(gqa_attention *layer, int32_t from, int32_t *sequence) {
    return guarded([&] {
        require_pointer(layer, "layer");
        require_pointer(sequence, "sequence");
        *sequence = layer->layer.fork_sequence(from);
    });
}

gqa_status gqa_attention_truncate_sequence(gqa_attention *layer, int32_t sequence, int32_t length) {
    return guarded([&] {
        require_pointer(layer, "layer");
        layer->layer.truncate_sequence(sequence, length);
    });
}

gqa_status gqa_attention_remove_sequence(gqa_attention *layer, int32_t sequence) {
    return guarded([&] {
        require_pointer(layer, "layer");
        layer->layer.remove_sequence(sequence);
    });
}

gqa_status gqa_attention_sequence_length(const gqa_attention *layer, int32_t sequence, int32_t *length) {
    return guarded([&] {
        require_pointer(layer, "layer");
        require_pointer(length, "length");
        *length = layer->layer.sequence_length(sequence);
    });
}

gqa_status gqa_attention_forward_sequences(gqa_attention *layer, const int32_t *sequences, const int32_t *tokens,
                                           int32_t rows, const float *x, float *out, size_t out_count,
                                           const int32_t *input_pos) {
    return guarded([&] {
        require_pointer(layer, "layer");
        require_pointer(out, "out");
        if (rows < 1) invalid("rows is " + std::to_string(rows) + "; expected >= 1");
        require_pointer(sequences, "sequences");
        require_pointer(tokens, "tokens");
        std::vector<gqa::SequenceTokens> batch(rows);
        int64_t total = 0;
        for (int32_t r = 0; r < rows; ++r) {
            batch[r] = {sequences[r], tokens[r]};
            total += tokens[r];
        }
        std::optional<gqa::TensorView<int32_t>> positions;
        if (input_pos) positions = gqa::TensorView<int32_t>{input_pos, {total}};
        layer->layer.forward_sequences(batch, {x, {total, layer->layer.config().embed_dim}}, {out, out_count},
                                       positions);
    });
}

}  // extern "C"
