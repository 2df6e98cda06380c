// gqa-conformance: runs the conformance vectors of a directory (manifest.json plus the
// raw arrays it names, format in docs/semantics.md §11) on the library's backends and prints
// PASS / FAIL / UNSUPPORTED per (case, backend). With --cache f16, bf16 or int8
// the cases that use a KV cache run with a cache of that type, their outputs held
// to the reduced-precision rule of tools/tolerance.h and the stored values to one
// unit of the type.
//
// Exit status: 0 when nothing failed and something was compared, 1 when a case
// failed or every case was unsupported, 2 for a bad command line, manifest or data
// file, including a kind, field or value this version does not know (everything is
// loaded and checked, and run once on the reference for its shapes, before any
// backend is compared), 77 when the backend asked for is built but cannot run here
// (no GPU).
#include <gqa/attention.hpp>
#include <gqa/hf.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>
#include <regex>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "tolerance.h"

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

static_assert(std::endian::native == std::endian::little, "the vector files are little-endian");

// A command line, manifest or data file that cannot be used as given (exit status 2).
// The backend asked for is built but cannot run on this machine (no GPU).
struct NoDevice : std::runtime_error {
    using std::runtime_error::runtime_error;
};
constexpr int kExitNoDevice = 77;  // CTest's customary "skipped"

struct InvalidInput : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// A case this tool understands but the gqa API cannot express; it is reported, not
// failed.
struct Unsupported : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// ---------------------------------------------------------------------------------------
// Manifest fields

std::string field_path(const std::string &where, const std::string &key) {
    return where + "." + key;
}

template <typename T>
std::optional<T> optional_field(const json &object, const std::string &key, const std::string &where) {
    // null is absent: TransformerLens writes None for unused options.
    if (!object.is_object() || !object.contains(key) || object.at(key).is_null()) return std::nullopt;
    const json &value = object.at(key);
    if constexpr (std::is_same_v<T, int>) {
        // get<int>() would silently truncate 2.5 or wrap 2^40.
        if (!value.is_number_integer() || value.get<int64_t>() < std::numeric_limits<int>::min() ||
            value.get<int64_t>() > std::numeric_limits<int>::max()) {
            throw InvalidInput(field_path(where, key) + ": expected an int, got " + value.dump());
        }
    }
    try {
        return value.get<T>();
    } catch (const json::exception &) {
        throw InvalidInput(field_path(where, key) + ": wrong type: " + value.dump());
    }
}

template <typename T>
T field(const json &object, const std::string &key, const std::string &where) {
    std::optional<T> value = optional_field<T>(object, key, where);
    if (!value) throw InvalidInput(where + ": missing field \"" + key + "\"");
    return *value;
}

const json &object_field(const json &object, const std::string &key, const std::string &where) {
    if (!object.is_object() || !object.contains(key) || !object.at(key).is_object()) {
        throw InvalidInput(where + ": missing object field \"" + key + "\"");
    }
    return object.at(key);
}

// Inputs or expectations this tool does not know would be silently ignored otherwise:
// the set was made for another version, and nothing of it can be trusted to be checked.
void reject_unknown_keys(const json &object, std::initializer_list<std::string_view> known, const std::string &where) {
    for (const auto &item : object.items()) {
        if (std::find(known.begin(), known.end(), item.key()) == known.end()) {
            throw InvalidInput(field_path(where, item.key()) + " is not a field this version knows");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Tensors

enum class Dtype { float32, uint8, int32 };

std::string_view dtype_name(Dtype dtype) {
    switch (dtype) {
    case Dtype::float32: return "float32";
    case Dtype::uint8: return "uint8";
    case Dtype::int32: return "int32";
    }
    return "?";
}

// One array of the manifest; the alternative held is its dtype.
struct Tensor {
    std::vector<int64_t> shape;
    std::variant<std::vector<float>, std::vector<uint8_t>, std::vector<int32_t>> values;

    template <typename T>
    gqa::TensorView<T> view() const {
        return {std::get<std::vector<T>>(values).data(), shape};
    }
    int64_t numel() const { return gqa::TensorView<float>{nullptr, shape}.numel(); }
};

template <typename T>
std::vector<T> read_array(const fs::path &path, int64_t count, const std::string &where) {
    std::vector<T> values(static_cast<size_t>(count));
    std::ifstream in(path, std::ios::binary);
    if (!in.read(reinterpret_cast<char *>(values.data()), static_cast<std::streamsize>(count * sizeof(T)))) {
        throw InvalidInput(where + ": cannot read " + path.string());
    }
    return values;
}

// Reads the array an entry {"file", "dtype", "shape"} names, checking that it holds
// exactly dtype x shape bytes and that the dtype is the one its role needs.
Tensor load_tensor(const fs::path &dir, const json &entry, const std::string &where, Dtype expected) {
    const auto file = field<std::string>(entry, "file", where);
    const auto dtype_text = field<std::string>(entry, "dtype", where);
    const auto shape = field<std::vector<int64_t>>(entry, "shape", where);

    std::optional<Dtype> dtype;
    for (Dtype candidate : {Dtype::float32, Dtype::uint8, Dtype::int32}) {
        if (dtype_text == dtype_name(candidate)) dtype = candidate;
    }
    if (!dtype) throw InvalidInput(where + ": unknown dtype \"" + dtype_text + "\"");
    if (*dtype != expected) {
        throw InvalidInput(where + ": dtype " + dtype_text + ", expected " + std::string(dtype_name(expected)));
    }

    constexpr int64_t max_elements = int64_t{1} << 36;
    int64_t count = 1;
    for (int64_t extent : shape) {
        if (extent < 0 || (extent > 0 && count > max_elements / extent)) {
            throw InvalidInput(where + ": unusable shape " + gqa::shape_string(shape));
        }
        count *= extent;
    }
    const int64_t element_size = expected == Dtype::uint8 ? 1 : 4;
    const fs::path path = dir / file;
    std::error_code error;
    const auto file_size = fs::file_size(path, error);
    if (error) throw InvalidInput(where + ": cannot read " + path.string() + ": " + error.message());
    if (file_size != static_cast<uintmax_t>(count * element_size)) {
        throw InvalidInput(where + ": " + path.string() + " has " + std::to_string(file_size) + " bytes, but " +
                           dtype_text + " " + gqa::shape_string(shape) + " needs " + std::to_string(count * element_size));
    }

    Tensor tensor{shape, {}};
    switch (expected) {
    case Dtype::float32: tensor.values = read_array<float>(path, count, where); break;
    case Dtype::uint8: tensor.values = read_array<uint8_t>(path, count, where); break;
    case Dtype::int32: tensor.values = read_array<int32_t>(path, count, where); break;
    }
    return tensor;
}

std::optional<Tensor> load_optional(const fs::path &dir, const json &parent, const std::string &key,
                                    const std::string &where, Dtype expected) {
    if (!parent.is_object() || !parent.contains(key)) return std::nullopt;
    return load_tensor(dir, parent.at(key), field_path(where, key), expected);
}

Tensor load_required(const fs::path &dir, const json &parent, const std::string &key, const std::string &where,
                     Dtype expected) {
    if (!parent.is_object() || !parent.contains(key)) throw InvalidInput(where + ": missing tensor \"" + key + "\"");
    return load_tensor(dir, parent.at(key), field_path(where, key), expected);
}

void require_rank(const Tensor &tensor, size_t rank, const std::string &where) {
    if (tensor.shape.size() != rank) {
        throw InvalidInput(where + ": shape " + gqa::shape_string(tensor.shape) + ", expected rank " + std::to_string(rank));
    }
}

// The smallest RoPE table that covers x's tokens and the given positions.
int positions_needed(const Tensor &x, const std::optional<Tensor> &input_pos) {
    int64_t needed = x.shape[1];
    if (input_pos) {
        for (int32_t position : std::get<std::vector<int32_t>>(input_pos->values)) {
            needed = std::max<int64_t>(needed, int64_t{position} + 1);
        }
    }
    return static_cast<int>(std::min<int64_t>(needed, std::numeric_limits<int>::max()));
}

// ---------------------------------------------------------------------------------------
// Cases, as the gqa API will run them

struct WeightTensors {
    Tensor wq, wk, wv, wo;
    std::optional<Tensor> bq, bk, bv, bo;

    gqa::Weights view() const {
        const auto optional_view = [](const std::optional<Tensor> &bias) {
            return bias ? bias->view<float>() : gqa::TensorView<float>{};
        };
        return {wq.view<float>(),  wk.view<float>(),  wv.view<float>(),  wo.view<float>(),
                optional_view(bq), optional_view(bk), optional_view(bv), optional_view(bo)};
    }
};

// A TransformerLens hook with its array: an expected activation, or a patch.
struct HookTensor {
    gqa::Hook hook;
    Tensor tensor;
};

// One forward with what it must produce.
struct Call {
    Tensor x;  // absent (no shape) where the call has split inputs
    std::optional<Tensor> mask{}, input_pos{};
    Tensor out{};
    std::optional<Tensor> pattern{}, z{};
    // TransformerLens' split per-head inputs, all three or none.
    std::optional<Tensor> query_input{}, key_input{}, value_input{};
    std::vector<HookTensor> hooks{};    // expected activations
    std::optional<HookTensor> patch{};  // replaces its hook's activation
    std::string label{};                // how the outputs are named; "" for "call <i>"

    // [b, s]: of x, or of the query input.
    std::pair<int64_t, int64_t> tokens() const {
        const Tensor &input = query_input ? *query_input : x;
        return {input.shape[0], input.shape[1]};
    }
};

struct FinalCache {
    Tensor k, v;
    int size = 0;
};

struct LayerCase {
    gqa::Config config;
    WeightTensors weights;
    std::optional<int> cache_batch{};  // setup_cache(batch, cache_len or config.max_seq_len) when set
    std::vector<Call> calls{};
    std::optional<FinalCache> final_cache{};
    int cache_len = 0;
    // hf_layer: the checkpoint's own weights, used instead of `weights`.
    std::shared_ptr<const gqa::LoadedWeights> checkpoint_weights{};

    gqa::Weights weights_view() const { return checkpoint_weights ? checkpoint_weights->view() : weights.view(); }
};

// A case this build cannot run, such as a checkpoint whose model needs what this
// version does not compute: it fails, on every backend.
struct Unrunnable : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct RopeCase {
    struct Variant {
        std::string name;
        std::optional<Tensor> input_pos;
        int position_offset = 0;
        Tensor want;
    };
    gqa::Config config;
    Tensor x;
    std::vector<Variant> variants;
};

struct Case {
    std::string name;
    std::variant<RopeCase, LayerCase, Unsupported, Unrunnable> body;
};

gqa::RopeStyle rope_style_from(const std::string &text, const std::string &where) {
    if (text.starts_with("interleaved")) return gqa::RopeStyle::interleaved;
    if (text.starts_with("rotate_half")) return gqa::RopeStyle::rotate_half;
    if (text == "none") return gqa::RopeStyle::none;
    throw InvalidInput(where + ": rope_style \"" + text + "\" is not one this version knows");
}

void require_default_scale(const json &config, const std::string &where) {
    if (config.contains("scale") && config.at("scale") != "1/sqrt(head_dim)") {
        throw Unsupported(field_path(where, "scale") + " " + config.at("scale").dump());
    }
}

WeightTensors load_weights(const fs::path &dir, const json &c, const std::string &where) {
    const json &weights = object_field(c, "weights", where);
    const std::string at = field_path(where, "weights");
    reject_unknown_keys(weights, {"wq", "wk", "wv", "wo", "bq", "bk", "bv", "bo"}, at);
    return {
        load_required(dir, weights, "wq", at, Dtype::float32), load_required(dir, weights, "wk", at, Dtype::float32),
        load_required(dir, weights, "wv", at, Dtype::float32), load_required(dir, weights, "wo", at, Dtype::float32),
        load_optional(dir, weights, "bq", at, Dtype::float32), load_optional(dir, weights, "bk", at, Dtype::float32),
        load_optional(dir, weights, "bv", at, Dtype::float32), load_optional(dir, weights, "bo", at, Dtype::float32),
    };
}

// x, mask and input_pos of a torchtune-style call; TransformerLens calls have only x.
Call load_call_inputs(const fs::path &dir, const json &inputs, const std::string &where) {
    Call call{load_required(dir, inputs, "x", where, Dtype::float32)};
    require_rank(call.x, 3, field_path(where, "x"));
    call.mask = load_optional(dir, inputs, "mask", where, Dtype::uint8);
    call.input_pos = load_optional(dir, inputs, "input_pos", where, Dtype::int32);
    return call;
}

RopeCase parse_rope(const fs::path &dir, const json &c, const std::string &where) {
    const json &inputs = object_field(c, "inputs", where);
    const json &expected = object_field(c, "expected", where);
    RopeCase rope{{}, load_required(dir, inputs, "x", field_path(where, "inputs"), Dtype::float32), {}};
    require_rank(rope.x, 4, field_path(where, "inputs.x"));

    // Expectation "out" uses inputs.input_pos or position_offset; "out_default_pos" the
    // positions 0..s-1; "out_<name>" the positions in inputs.<name>.
    const int position_offset = optional_field<int>(c, "position_offset", where).value_or(0);
    int positions = 0;
    for (const auto &item : expected.items()) {
        const std::string &key = item.key();
        const std::string at = field_path(where, "expected");
        RopeCase::Variant variant{key, {}, 0, load_required(dir, expected, key, at, Dtype::float32)};
        if (key == "out") {
            variant.input_pos = load_optional(dir, inputs, "input_pos", field_path(where, "inputs"), Dtype::int32);
            if (!variant.input_pos) variant.position_offset = position_offset;
        } else if (key.starts_with("out_") && inputs.contains(key.substr(4))) {
            variant.input_pos = load_required(dir, inputs, key.substr(4), field_path(where, "inputs"), Dtype::int32);
        } else if (key != "out_default_pos") {
            throw InvalidInput(field_path(at, key) + " is not an array this version knows: no input says which "
                               "positions it uses");
        }
        positions = std::max({positions, variant.position_offset + static_cast<int>(rope.x.shape[1]),
                              positions_needed(rope.x, variant.input_pos)});
        rope.variants.push_back(std::move(variant));
    }

    gqa::Config &config = rope.config;
    const int heads = static_cast<int>(rope.x.shape[2]);
    config.head_dim = optional_field<int>(c, "head_dim", where).value_or(static_cast<int>(rope.x.shape[3]));
    // apply_rope reads the RoPE fields; the layer fields are filled in to match x.
    config.num_heads = config.num_kv_heads = heads;
    config.embed_dim = heads * config.head_dim;
    config.max_seq_len = optional_field<int>(c, "max_seq_len", where).value_or(positions);
    config.rope_style = rope_style_from(field<std::string>(c, "rope_style", where), where);
    config.rope_base = optional_field<double>(c, "rope_base", where).value_or(config.rope_base);
    config.rotary_dim = optional_field<int>(c, "rotary_dim", where).value_or(0);
    return rope;
}

gqa::Config torchtune_config(const json &c, const std::string &where) {
    gqa::Config config;
    config.embed_dim = field<int>(c, "embed_dim", where);
    config.num_heads = field<int>(c, "num_heads", where);
    config.num_kv_heads = field<int>(c, "num_kv_heads", where);
    config.head_dim = field<int>(c, "head_dim", where);
    config.rope_base = optional_field<double>(c, "rope_base", where).value_or(config.rope_base);
    config.rope_style = rope_style_from(
        optional_field<std::string>(c, "rope_style", where).value_or("interleaved_pairs(torchtune)"), where);
    config.is_causal = optional_field<bool>(c, "is_causal", where).value_or(true);
    require_default_scale(c, where);
    return config;
}

LayerCase parse_torchtune_forward(const fs::path &dir, const json &c, const std::string &where) {
    const json &config_json = object_field(c, "config", where);
    const json &inputs = object_field(c, "inputs", where);
    const json &expected = object_field(c, "expected", where);
    reject_unknown_keys(inputs, {"x", "mask", "input_pos"}, field_path(where, "inputs"));
    reject_unknown_keys(expected, {"out", "attn_weights"}, field_path(where, "expected"));

    LayerCase layer{torchtune_config(config_json, field_path(where, "config")), load_weights(dir, c, where)};
    Call call = load_call_inputs(dir, inputs, field_path(where, "inputs"));
    call.out = load_required(dir, expected, "out", field_path(where, "expected"), Dtype::float32);
    call.pattern = load_optional(dir, expected, "attn_weights", field_path(where, "expected"), Dtype::float32);
    layer.config.max_seq_len = optional_field<int>(config_json, "max_seq_len", field_path(where, "config"))
                                   .value_or(positions_needed(call.x, call.input_pos));
    layer.calls.push_back(std::move(call));
    return layer;
}

LayerCase parse_torchtune_decode(const fs::path &dir, const json &c, const std::string &where) {
    const json &config_json = object_field(c, "config", where);
    LayerCase layer{torchtune_config(config_json, field_path(where, "config")), load_weights(dir, c, where)};
    layer.config.max_seq_len = field<int>(config_json, "max_seq_len", field_path(where, "config"));

    const auto calls = field<std::vector<json>>(c, "calls", where);
    for (size_t i = 0; i < calls.size(); ++i) {
        const std::string at = where + ".calls[" + std::to_string(i) + "]";
        reject_unknown_keys(calls[i], {"call", "x", "mask", "input_pos", "expected_out"}, at);
        Call call = load_call_inputs(dir, calls[i], at);
        // Without them torchtune attends to every cache slot (written or not) at
        // positions 0..s-1, which this API has no switch for; generate() passes both.
        if (!call.mask || !call.input_pos) throw Unsupported(at + ": a torchtune cache call without mask or input_pos");
        call.out = load_required(dir, calls[i], "expected_out", at, Dtype::float32);
        layer.calls.push_back(std::move(call));
    }
    if (layer.calls.empty()) throw InvalidInput(where + ".calls is empty");
    layer.cache_batch = static_cast<int>(layer.calls.front().x.shape[0]);

    const json &final_json = object_field(c, "expected_final_cache", where);
    const std::string at = field_path(where, "expected_final_cache");
    reject_unknown_keys(final_json, {"k_cache", "v_cache", "cache_size"}, at);
    layer.final_cache = FinalCache{load_required(dir, final_json, "k_cache", at, Dtype::float32),
                                   load_required(dir, final_json, "v_cache", at, Dtype::float32),
                                   field<int>(final_json, "cache_size", at)};
    return layer;
}

gqa::Config transformerlens_config(const json &c, const std::string &where) {
    gqa::Config config;
    config.embed_dim = field<int>(c, "d_model", where);
    config.num_heads = field<int>(c, "n_heads", where);
    config.num_kv_heads = optional_field<int>(c, "n_key_value_heads", where).value_or(config.num_heads);
    config.head_dim = field<int>(c, "d_head", where);

    // TL's default positional embedding is "standard" (added before the layer): no RoPE.
    const bool rotary = optional_field<bool>(c, "rotary", where)
                            .value_or(optional_field<std::string>(c, "positional_embedding_type", where) == "rotary");
    if (rotary) {
        config.rope_style = optional_field<bool>(c, "rotary_adjacent_pairs", where).value_or(false)
                                ? gqa::RopeStyle::interleaved
                                : gqa::RopeStyle::rotate_half;
        config.rotary_dim = optional_field<int>(c, "rotary_dim", where).value_or(0);
        config.rope_base = optional_field<double>(c, "rotary_base", where).value_or(config.rope_base);
    } else {
        config.rope_style = gqa::RopeStyle::none;
    }

    const auto attn_type = optional_field<std::string>(c, "attn_type", where).value_or("global");
    if (attn_type == "local") {
        config.window = field<int>(c, "window_size", where);
    } else if (attn_type != "global") {
        throw InvalidInput(field_path(where, "attn_type") + " \"" + attn_type + "\" is not one this version knows");
    }
    const auto direction = optional_field<std::string>(c, "attention_dir", where).value_or("causal");
    if (direction != "causal" && direction != "bidirectional") {
        throw InvalidInput(field_path(where, "attention_dir") + " \"" + direction +
                           "\" is not one this version knows");
    }
    config.is_causal = direction == "causal";

    if (optional_field<bool>(c, "scale_attn_by_inverse_layer_idx", where).value_or(false)) {
        config.layer_id = field<int>(c, "layer_id", where);
    }
    // TL turns the soft-cap off with values <= 0 (its default is -1).
    config.softcap = std::max(0.0, optional_field<double>(c, "attn_scores_soft_cap", where).value_or(0.0));

    // TL divides scores by attn_scale * (layer_id + 1); the layer applies (layer_id + 1)
    // itself, so only an attn_scale other than sqrt(d_head) needs an explicit scale.
    if (auto divisor = optional_field<double>(c, "effective_attn_scale_divisor", where)) {
        const double layer_factor = config.layer_id >= 0 ? config.layer_id + 1.0 : 1.0;
        const double default_divisor = std::sqrt(double(config.head_dim)) * layer_factor;
        if (!(*divisor > 0)) throw InvalidInput(field_path(where, "effective_attn_scale_divisor") + " must be > 0");
        if (std::abs(*divisor - default_divisor) > 1e-9 * default_divisor) config.scale = layer_factor / *divisor;
    }
    return config;
}

LayerCase parse_transformerlens_forward(const fs::path &dir, const json &c, const std::string &where) {
    const json &inputs = object_field(c, "inputs", where);
    const json &expected = object_field(c, "expected", where);
    reject_unknown_keys(inputs, {"x"}, field_path(where, "inputs"));
    reject_unknown_keys(expected, {"out", "pattern", "z"}, field_path(where, "expected"));

    LayerCase layer{transformerlens_config(object_field(c, "config", where), field_path(where, "config")),
                    load_weights(dir, c, where)};
    Call call = load_call_inputs(dir, inputs, field_path(where, "inputs"));
    call.out = load_required(dir, expected, "out", field_path(where, "expected"), Dtype::float32);
    call.pattern = load_optional(dir, expected, "pattern", field_path(where, "expected"), Dtype::float32);
    call.z = load_optional(dir, expected, "z", field_path(where, "expected"), Dtype::float32);
    layer.config.max_seq_len = static_cast<int>(call.x.shape[1]);
    layer.calls.push_back(std::move(call));
    return layer;
}

// TL appends to its cache and rotates at offset = cache length, which is this API's
// default: no mask, no input_pos, query i in slot size() + i.
LayerCase parse_transformerlens_decode(const fs::path &dir, const json &c, const std::string &where) {
    LayerCase layer{transformerlens_config(object_field(c, "config", where), field_path(where, "config")),
                    load_weights(dir, c, where)};
    const auto calls = field<std::vector<json>>(c, "calls", where);
    int tokens = 0;
    for (size_t i = 0; i < calls.size(); ++i) {
        const std::string at = where + ".calls[" + std::to_string(i) + "]";
        reject_unknown_keys(calls[i], {"call", "x", "positions", "expected_out", "expected_pattern", "expected_z"}, at);
        Call call = load_call_inputs(dir, calls[i], at);
        const int s = static_cast<int>(call.x.shape[1]);
        if (auto positions = optional_field<std::vector<int>>(calls[i], "positions", at)) {
            if (*positions != std::vector<int>{tokens, tokens + s}) {
                throw Unsupported(field_path(at, "positions") + " do not follow the cache slots [" +
                                  std::to_string(tokens) + ", " + std::to_string(tokens + s) + "]");
            }
        }
        call.out = load_required(dir, calls[i], "expected_out", at, Dtype::float32);
        call.pattern = load_optional(dir, calls[i], "expected_pattern", at, Dtype::float32);
        call.z = load_optional(dir, calls[i], "expected_z", at, Dtype::float32);
        tokens += s;
        layer.calls.push_back(std::move(call));
    }
    if (layer.calls.empty()) throw InvalidInput(where + ".calls is empty");
    layer.cache_batch = static_cast<int>(layer.calls.front().x.shape[0]);
    layer.config.max_seq_len = tokens;
    return layer;
}

// The hook an array names: "q" is hook_q, and so on.
gqa::Hook hook_named(const std::string &name, const std::string &where) {
    try {
        return gqa::hook_from_name("hook_" + name);
    } catch (const gqa::Error &) {
        throw InvalidInput(where + ": \"" + name + "\" is not a hook this version knows");
    }
}

// TransformerLens' hooks of one forward without a cache (its format in
// docs/semantics.md §11): every expected activation compared, then each patch a
// forward of its own on the same inputs.
LayerCase parse_transformerlens_hooks(const fs::path &dir, const json &c, const std::string &where) {
    reject_unknown_keys(c, {"name", "kind", "config", "weights", "inputs", "expected", "patches"}, where);
    const json &inputs = object_field(c, "inputs", where);
    const json &expected = object_field(c, "expected", where);
    const std::string inputs_at = field_path(where, "inputs"), expected_at = field_path(where, "expected");
    reject_unknown_keys(inputs, {"x", "query_input", "key_input", "value_input"}, inputs_at);
    reject_unknown_keys(expected, {"q", "k", "v", "rot_q", "rot_k", "attn_scores", "pattern", "z", "result", "out"},
                        expected_at);

    LayerCase layer{transformerlens_config(object_field(c, "config", where), field_path(where, "config")),
                    load_weights(dir, c, where)};
    Call call;
    if (inputs.contains("x")) {
        if (inputs.contains("query_input") || inputs.contains("key_input") || inputs.contains("value_input")) {
            throw InvalidInput(inputs_at + ": x and split inputs at once");
        }
        call.x = load_required(dir, inputs, "x", inputs_at, Dtype::float32);
        require_rank(call.x, 3, field_path(inputs_at, "x"));
    } else {
        call.query_input = load_required(dir, inputs, "query_input", inputs_at, Dtype::float32);
        call.key_input = load_required(dir, inputs, "key_input", inputs_at, Dtype::float32);
        call.value_input = load_required(dir, inputs, "value_input", inputs_at, Dtype::float32);
        for (const char *name : {"query_input", "key_input", "value_input"}) {
            const Tensor &t = name[0] == 'q' ? *call.query_input : name[0] == 'k' ? *call.key_input : *call.value_input;
            require_rank(t, 4, field_path(inputs_at, name));
        }
    }
    call.out = load_required(dir, expected, "out", expected_at, Dtype::float32);
    for (const auto &item : expected.items()) {
        if (item.key() == "out") continue;
        call.hooks.push_back({hook_named(item.key(), expected_at),
                              load_required(dir, expected, item.key(), expected_at, Dtype::float32)});
    }
    layer.config.max_seq_len = static_cast<int>(call.tokens().second);

    const auto patches = optional_field<std::vector<json>>(c, "patches", where).value_or(std::vector<json>{});
    for (size_t i = 0; i < patches.size(); ++i) {
        const std::string at = where + ".patches[" + std::to_string(i) + "]";
        reject_unknown_keys(patches[i], {"replace", "with", "expected_out", "expected_z"}, at);
        const auto replace = field<std::string>(patches[i], "replace", at);
        const gqa::Hook hook = hook_named(replace, field_path(at, "replace"));
        if (!gqa::can_patch(hook)) throw Unsupported(field_path(at, "replace") + ": the layer cannot patch " + replace);
        Call patched = call;
        patched.hooks.clear();
        patched.patch = HookTensor{hook, load_required(dir, patches[i], "with", at, Dtype::float32)};
        patched.out = load_required(dir, patches[i], "expected_out", at, Dtype::float32);
        patched.z = load_optional(dir, patches[i], "expected_z", at, Dtype::float32);
        patched.label = "patch " + replace + " ";
        layer.calls.push_back(std::move(patched));
    }
    layer.calls.insert(layer.calls.begin(), std::move(call));
    return layer;
}

// One layer of a Hugging Face checkpoint directory (docs/semantics.md §11): its
// config and weights come from the checkpoint itself, through gqa::load_hf_layer.
LayerCase parse_hf_layer(const fs::path &dir, const json &c, const std::string &where) {
    reject_unknown_keys(c, {"name", "kind", "model", "layer", "max_seq_len", "cache", "calls"}, where);
    const auto model = field<std::string>(c, "model", where);
    const int layer_index = field<int>(c, "layer", where), max_seq_len = field<int>(c, "max_seq_len", where);
    gqa::HfLayer hf;
    try {
        hf = gqa::load_hf_layer((dir / model).string(), layer_index, max_seq_len);
    } catch (const gqa::Error &error) {
        throw Unrunnable(where + ": " + error.what());
    }
    LayerCase layer{hf.config, {}};
    layer.checkpoint_weights = std::make_shared<const gqa::LoadedWeights>(std::move(hf.weights));
    const json &cache = c.contains("cache") ? c.at("cache") : json();
    if (!cache.is_null()) {
        reject_unknown_keys(cache, {"batch", "max_seq_len"}, field_path(where, "cache"));
        layer.cache_batch = field<int>(cache, "batch", field_path(where, "cache"));
        layer.cache_len = field<int>(cache, "max_seq_len", field_path(where, "cache"));
    }
    const auto calls = field<std::vector<json>>(c, "calls", where);
    for (size_t i = 0; i < calls.size(); ++i) {
        const std::string at = where + ".calls[" + std::to_string(i) + "]";
        reject_unknown_keys(calls[i], {"x", "input_pos", "expected_out"}, at);
        Call call{load_required(dir, calls[i], "x", at, Dtype::float32)};
        call.input_pos = load_optional(dir, calls[i], "input_pos", at, Dtype::int32);
        call.out = load_required(dir, calls[i], "expected_out", at, Dtype::float32);
        layer.calls.push_back(std::move(call));
    }
    if (layer.calls.empty()) throw InvalidInput(where + ".calls is empty");
    return layer;
}

Case parse_case(const fs::path &dir, const json &c, size_t index) {
    const std::string where = "cases[" + std::to_string(index) + "]";
    Case parsed{field<std::string>(c, "name", where), Unsupported("")};
    const std::string at = "case " + parsed.name;
    const auto kind = field<std::string>(c, "kind", where);
    try {
        if (kind == "rope") {
            parsed.body = parse_rope(dir, c, at);
        } else if (kind == "torchtune_forward") {
            parsed.body = parse_torchtune_forward(dir, c, at);
        } else if (kind == "torchtune_kv_decode") {
            parsed.body = parse_torchtune_decode(dir, c, at);
        } else if (kind == "transformerlens_forward") {
            parsed.body = parse_transformerlens_forward(dir, c, at);
        } else if (kind == "transformerlens_kv_decode") {
            parsed.body = parse_transformerlens_decode(dir, c, at);
        } else if (kind == "transformerlens_hooks") {
            parsed.body = parse_transformerlens_hooks(dir, c, at);
        } else if (kind == "hf_layer") {
            parsed.body = parse_hf_layer(dir, c, at);
        } else {
            throw InvalidInput(at + ": kind \"" + kind + "\" is not one this version knows (rope, torchtune_forward, "
                               "torchtune_kv_decode, transformerlens_forward, transformerlens_kv_decode, "
                               "transformerlens_hooks, hf_layer)");
        }
    } catch (const Unsupported &unsupported) {
        parsed.body = unsupported;
    } catch (const Unrunnable &unrunnable) {
        parsed.body = unrunnable;
    }
    return parsed;
}

std::vector<Case> load_manifest(const fs::path &dir) {
    const fs::path path = dir / "manifest.json";
    std::ifstream in(path);
    if (!in) throw InvalidInput("cannot open " + path.string());
    json manifest;
    try {
        manifest = json::parse(in);
    } catch (const json::exception &error) {
        throw InvalidInput(path.string() + ": " + error.what());
    }
    const auto cases = field<std::vector<json>>(manifest, "cases", path.string());
    if (cases.empty()) throw InvalidInput(path.string() + ": no cases");
    std::vector<Case> parsed;
    for (size_t i = 0; i < cases.size(); ++i) parsed.push_back(parse_case(dir, cases[i], i));
    return parsed;
}

// ---------------------------------------------------------------------------------------
// Running and comparing

// Collects every comparison of one (case, backend): |got - want| <= atol + rtol * |want|.
class Checker {
public:
    Checker(double atol, double rtol) : atol_(atol), rtol_(rtol) {}

    void compare(const std::string &what, const gqa::TensorView<float> &got, const Tensor &want) {
        if (got.shape != want.shape || (got.data == nullptr && want.numel() > 0)) {
            fail(what + ": shape " + gqa::shape_string(got.shape) + (got.data ? "" : " without data") + ", expected " +
                 gqa::shape_string(want.shape));
            return;
        }
        const auto &wanted = std::get<std::vector<float>>(want.values);
        int64_t outside = 0, worst = -1;
        double worst_excess = 0;
        for (size_t i = 0; i < wanted.size(); ++i) {
            const double error = absolute_error(got.data[i], wanted[i]);
            const double excess = gqa_tools::tolerance_excess(got.data[i], wanted[i], atol_, rtol_);
            if (std::isnan(error) || error > max_abs_err_) max_abs_err_ = error;
            if (excess > 0) {
                ++outside;
                if (worst < 0 || !(excess <= worst_excess)) {
                    worst = int64_t(i);
                    worst_excess = excess;
                }
            }
        }
        if (outside > 0) {
            std::ostringstream text;
            text << what << ": " << outside << " of " << wanted.size()
                 << " elements out of tolerance; worst at flat index " << worst << ": got " << got.data[worst]
                 << ", want " << wanted[worst];
            fail(text.str());
        }
    }

    // An output computed with a reduced-precision cache or weights, by the rule of
    // tools/tolerance.h: against the expected (exact) array, at most
    // GQA_REDUCED_PRECISION_FACTOR times the reference backend's own error in that
    // type past the fp32 tolerance.
    void compare_reduced_precision_rule(const std::string &what, const gqa::TensorView<float> &got,
                                        const std::vector<float> &reference_reduced, const Tensor &want) {
        if (got.shape != want.shape || got.data == nullptr) {
            fail(what + ": shape " + gqa::shape_string(got.shape) + ", expected " + gqa::shape_string(want.shape));
            return;
        }
        const auto &wanted = std::get<std::vector<float>>(want.values);
        const std::span<const float> values(got.data, wanted.size());
        for (size_t i = 0; i < wanted.size(); ++i) {
            const double error = absolute_error(values[i], wanted[i]);
            if (std::isnan(error) || error > max_abs_err_) max_abs_err_ = error;
        }
        if (!gqa_tools::within_reduced_precision_rule(values, reference_reduced, wanted)) {
            fail(what + ": outside the reduced-precision rule (worst excess over the fp32 tolerance " +
                 std::to_string(gqa_tools::largest_excess(values, wanted)) + ")");
        }
    }

    // A cache's stored values (as fp32) against the expected fp32 values: within
    // one unit of the type (gqa_tools::stored_value_unit).
    void compare_stored(const std::string &what, gqa::CacheType type, const std::vector<float> &got,
                        const Tensor &want) {
        const auto &wanted = std::get<std::vector<float>>(want.values);
        if (got.size() != wanted.size() || want.shape.empty()) {
            fail(what + ": " + std::to_string(got.size()) + " values, expected shape " +
                 gqa::shape_string(want.shape));
            return;
        }
        const size_t outside = gqa_tools::values_past_one_unit(type, got, wanted, size_t(want.shape.back())).size();
        if (outside > 0) {
            fail(what + ": " + std::to_string(outside) + " of " + std::to_string(wanted.size()) + " " +
                 std::string(gqa::cache_type_name(type)) + " values more than one unit from the expected values");
        }
    }

    void expect_equal(const std::string &what, int got, int want) {
        if (got != want) fail(what + ": " + std::to_string(got) + ", expected " + std::to_string(want));
    }

    void fail(std::string message) { failures_.push_back(std::move(message)); }
    bool passed() const { return failures_.empty(); }
    double max_abs_err() const { return max_abs_err_; }
    const std::vector<std::string> &failures() const { return failures_; }

private:
    // 0 for equal values, so that masked scores (-inf on both sides) count as exact.
    static double absolute_error(float got, float want) {
        return got == want ? 0.0 : std::abs(double(got) - double(want));
    }

    double atol_, rtol_;
    double max_abs_err_ = 0;
    std::vector<std::string> failures_;
};

template <typename T>
std::optional<gqa::TensorView<T>> optional_view(const std::optional<Tensor> &tensor) {
    if (!tensor) return std::nullopt;
    return tensor->view<T>();
}

void run_case(const RopeCase &rope, gqa::Backend backend, Checker &check) {
    std::vector<float> out(static_cast<size_t>(rope.x.numel()));
    for (const auto &variant : rope.variants) {
        gqa::apply_rope(rope.config, rope.x.view<float>(), out, optional_view<int32_t>(variant.input_pos),
                        variant.position_offset, backend);
        check.compare(variant.name, {out.data(), rope.x.shape}, variant.want);
    }
}

// Runs a layer case on `backend`, its cache (if it has one) of element type
// `cache`, handing every output and its expected array to `observe(what, got,
// want)` in call order; the final cache goes to `check`.
template <typename Observe>
void run_layer(const LayerCase &layer_case, gqa::Backend backend, gqa::CacheType cache,
               std::optional<gqa::WeightType> weights, Observe &&observe, Checker &check) {
    gqa::Config config = layer_case.config;
    if (weights) config.weight_type = weights;
    gqa::Attention layer(config, layer_case.weights_view(), backend);
    if (layer_case.cache_batch) {
        layer.setup_cache(*layer_case.cache_batch,
                          layer_case.cache_len > 0 ? layer_case.cache_len : layer_case.config.max_seq_len, cache);
    }
    std::vector<gqa::Hook> recorded;
    for (const Call &call : layer_case.calls) {
        if (call.pattern) recorded.push_back(gqa::Hook::pattern);
        for (const HookTensor &expected : call.hooks) recorded.push_back(expected.hook);
    }
    layer.set_recorded_hooks(recorded);

    for (size_t i = 0; i < layer_case.calls.size(); ++i) {
        const Call &call = layer_case.calls[i];
        const std::string prefix = !call.label.empty()            ? call.label
                                   : layer_case.calls.size() > 1 ? "call " + std::to_string(i) + " "
                                                                 : "";
        const auto [batch, seq_len] = call.tokens();
        std::vector<float> out(size_t(batch * seq_len * layer_case.config.embed_dim));
        std::vector<gqa::Patch> patches;
        if (call.patch) patches.push_back({call.patch->hook, call.patch->tensor.view<float>()});
        if (call.query_input) {
            layer.forward_split({call.query_input->view<float>(), call.key_input->view<float>(),
                                 call.value_input->view<float>()},
                                out, optional_view<uint8_t>(call.mask), optional_view<int32_t>(call.input_pos), patches);
        } else {
            layer.forward(call.x.view<float>(), out, optional_view<uint8_t>(call.mask),
                          optional_view<int32_t>(call.input_pos), patches);
        }
        observe(prefix + "out", gqa::TensorView<float>{out.data(), {batch, seq_len, layer_case.config.embed_dim}},
                call.out);
        if (call.pattern) observe(prefix + "pattern", layer.pattern(), *call.pattern);
        if (call.z) observe(prefix + "z", layer.z(), *call.z);
        for (const HookTensor &expected : call.hooks) {
            observe(prefix + std::string(gqa::hook_name(expected.hook)), layer.hook(expected.hook), expected.tensor);
        }
    }
    if (const auto &final_cache = layer_case.final_cache) {
        const std::vector<int64_t> cache_shape{layer.cache_batch(), config.num_kv_heads, layer.cache_max_seq_len(),
                                               config.head_dim};
        if (weights) {
            // Other weights write other keys and values: the cache, read as fp32,
            // follows the outputs' rule.
            for (const bool keys : {true, false}) {
                const char *what = keys ? "k_cache" : "v_cache";
                const Tensor &want = keys ? final_cache->k : final_cache->v;
                const std::vector<float> values = keys ? layer.k_cache_as_float() : layer.v_cache_as_float();
                observe(what, gqa::TensorView<float>{values.data(), cache_shape}, want);
            }
        } else if (layer_case.cache_batch && cache != gqa::CacheType::f32) {
            check.compare_stored("k_cache", cache, layer.k_cache_as_float(), final_cache->k);
            check.compare_stored("v_cache", cache, layer.v_cache_as_float(), final_cache->v);
        } else {
            check.compare("k_cache", layer.k_cache(), final_cache->k);
            check.compare("v_cache", layer.v_cache(), final_cache->v);
        }
        check.expect_equal("cache size", layer.size(), final_cache->size);
    }
}

// The largest |reference - expected| over the outputs of the cases run with
// --weights, and the largest |expected| beside it: that type's own error.
struct WeightTypeError {
    double max_abs_err = 0, max_abs_expected = 0;
};

// With an fp16 cache or converted weights (--weights), outputs follow the fp16
// rule (tools/tolerance.h), which needs the reference backend's results under the
// same settings next to the expected ones; a case without a cache and with its own
// weights runs as with fp32.
void run_case(const LayerCase &layer_case, gqa::Backend backend, Checker &check,
              gqa::CacheType cache = gqa::CacheType::f32, std::optional<gqa::WeightType> weights = std::nullopt,
              WeightTypeError *weight_error = nullptr) {
    if (!layer_case.cache_batch) cache = gqa::CacheType::f32;
    if (cache == gqa::CacheType::f32 && !weights) {
        run_layer(layer_case, backend, cache, weights,
                  [&](const std::string &what, const gqa::TensorView<float> &got, const Tensor &want) {
                      check.compare(what, got, want);
                  },
                  check);
        return;
    }
    std::vector<std::vector<float>> reference;
    Checker reference_check(std::numeric_limits<double>::max(), 0);
    run_layer(layer_case, gqa::Backend::reference, cache, weights,
              [&](const std::string &, const gqa::TensorView<float> &got, const Tensor &want) {
                  reference.emplace_back(got.data, got.data + got.numel());
                  const auto *wanted = std::get_if<std::vector<float>>(&want.values);
                  if (!weight_error || !wanted || wanted->size() != reference.back().size()) return;
                  for (size_t n = 0; n < wanted->size(); ++n) {
                      weight_error->max_abs_err =
                          std::max(weight_error->max_abs_err, double(std::abs(reference.back()[n] - (*wanted)[n])));
                      weight_error->max_abs_expected =
                          std::max(weight_error->max_abs_expected, double(std::abs((*wanted)[n])));
                  }
              },
              reference_check);
    size_t next = 0;
    run_layer(layer_case, backend, cache, weights,
              [&](const std::string &what, const gqa::TensorView<float> &got, const Tensor &want) {
                  check.compare_reduced_precision_rule(what, got, reference.at(next++), want);
              },
              check);
}

struct Options {
    std::string backend = "all";
    gqa::CacheType cache = gqa::CacheType::f32;  // of the cases that use a KV cache
    std::optional<gqa::WeightType> weights;      // the layers' weights converted to this type
    double atol = GQA_ATOL, rtol = GQA_RTOL;
    std::optional<std::regex> cases;  // run only the cases whose names it matches
    fs::path dir;
};

constexpr const char *usage =
    "usage: gqa-conformance [--backend NAME[,NAME...]|all] [--cache f32|f16|bf16|int8] [--weights f32|bf16|f16|int8] "
    "[--atol X] [--rtol X] [--cases REGEX] DIR";

double parse_tolerance(const std::string &flag, const std::string &text) {
    size_t used = 0;
    double value = -1;
    try {
        value = std::stod(text, &used);
    } catch (const std::exception &) {
    }
    if (used != text.size() || !(value >= 0) || !std::isfinite(value)) {
        throw InvalidInput(flag + " wants a finite number >= 0, got \"" + text + "\"\n" + usage);
    }
    return value;
}

Options parse_options(int argc, char **argv) {
    Options options;
    bool have_dir = false;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        const bool has_value = i + 1 < argc;
        if ((arg == "--backend" || arg == "--cache" || arg == "--weights" || arg == "--atol" || arg == "--rtol" ||
             arg == "--cases") &&
            !has_value) {
            throw InvalidInput(arg + " needs a value\n" + usage);
        }
        if (arg == "--backend") {
            options.backend = argv[++i];
        } else if (arg == "--cache") {
            try {
                options.cache = gqa::cache_type_from_name(argv[++i]);
            } catch (const gqa::Error &error) {
                throw InvalidInput(std::string("--cache: ") + error.what());
            }
        } else if (arg == "--weights") {
            try {
                options.weights = gqa::weight_type_from_name(argv[++i]);
            } catch (const gqa::Error &error) {
                throw InvalidInput(std::string("--weights: ") + error.what());
            }
        } else if (arg == "--atol") {
            options.atol = parse_tolerance(arg, argv[++i]);
        } else if (arg == "--rtol") {
            options.rtol = parse_tolerance(arg, argv[++i]);
        } else if (arg == "--cases") {
            try {
                options.cases = std::regex(argv[++i]);
            } catch (const std::regex_error &error) {
                throw InvalidInput(std::string("--cases: ") + error.what());
            }
        } else if (arg.starts_with("-") || have_dir) {
            throw InvalidInput("unexpected argument \"" + arg + "\"\n" + usage);
        } else {
            options.dir = arg;
            have_dir = true;
        }
    }
    if (!have_dir) throw InvalidInput(usage);
    return options;
}

// One backend by name; a GPU one without a device is NoDevice.
gqa::Backend selected_backend(const std::string &name, const std::vector<gqa::Backend> &available) {
    gqa::Backend backend;
    try {
        backend = gqa::backend_from_name(name);
    } catch (const gqa::Error &error) {
        throw InvalidInput(std::string("--backend: ") + error.what());
    }
    if (backend == gqa::Backend::best || std::find(available.begin(), available.end(), backend) != available.end()) {
        return backend;
    }
    if (gqa::backend_built(backend)) {
        throw NoDevice("backend " + name + " is built but " + gqa::backend_unavailable_reason(backend));
    }
    std::string names;
    for (gqa::Backend each : available) names += " " + std::string(gqa::backend_name(each));
    throw InvalidInput("backend " + name + " is not available in this build (available:" + names + ")");
}

// "all", or backend names separated by commas.
std::vector<gqa::Backend> selected_backends(const std::string &names) {
    std::vector<gqa::Backend> available = gqa::available_backends();
    std::erase(available, gqa::Backend::best);  // an alias of one of the others
    if (names == "all") return available;
    std::vector<gqa::Backend> selected;
    for (size_t begin = 0; begin <= names.size();) {
        const size_t end = std::min(names.find(',', begin), names.size());
        selected.push_back(selected_backend(names.substr(begin, end - begin), available));
        begin = end + 1;
    }
    return selected;
}

// A manifest whose arrays do not fit its config (a weight of the wrong shape, an x
// of the wrong width, an expected array of another shape than the output) is
// malformed, not a failure of a backend: each case runs once on the reference
// first, comparing shapes only (any finite difference passes), and any error there
// is exit status 2.
void require_consistent(const std::vector<Case> &cases) {
    for (const Case &test_case : cases) {
        Checker shapes_only(std::numeric_limits<double>::max(), 0);
        try {
            if (const auto *rope = std::get_if<RopeCase>(&test_case.body)) {
                run_case(*rope, gqa::Backend::reference, shapes_only);
            } else if (const auto *layer = std::get_if<LayerCase>(&test_case.body)) {
                run_case(*layer, gqa::Backend::reference, shapes_only);
            }
        } catch (const gqa::Error &error) {
            throw InvalidInput("case " + test_case.name + ": " + error.what());
        }
        if (!shapes_only.passed()) throw InvalidInput("case " + test_case.name + ": " + shapes_only.failures()[0]);
    }
}

int run(const Options &options) {
    const std::vector<gqa::Backend> backends = selected_backends(options.backend);
    std::vector<Case> cases = load_manifest(options.dir);
    if (options.cases) {
        std::erase_if(cases, [&](const Case &c) { return !std::regex_search(c.name, *options.cases); });
        if (cases.empty()) throw InvalidInput("--cases matches no case of " + options.dir.string());
    }
    require_consistent(cases);

    int passed = 0, failed = 0, unsupported = 0;
    WeightTypeError weight_error;
    for (const Case &test_case : cases) {
        for (gqa::Backend backend : backends) {
            const std::string label = test_case.name + "  " + std::string(gqa::backend_name(backend));
            if (const auto *reason = std::get_if<Unsupported>(&test_case.body)) {
                ++unsupported;
                std::cout << "UNSUPPORTED  " << label << "  max_abs_err=n/a" << std::endl;
                std::cerr << "  " << reason->what() << '\n';
                continue;
            }
            Checker check(options.atol, options.rtol);
            if (const auto *reason = std::get_if<Unrunnable>(&test_case.body)) check.fail(reason->what());
            try {
                if (const auto *rope = std::get_if<RopeCase>(&test_case.body)) {
                    run_case(*rope, backend, check);
                } else if (const auto *layer = std::get_if<LayerCase>(&test_case.body)) {
                    run_case(*layer, backend, check, options.cache, options.weights, &weight_error);
                }
            } catch (const std::exception &error) {
                check.fail(std::string("threw: ") + error.what());
            }
            (check.passed() ? passed : failed) += 1;
            std::cout << (check.passed() ? "PASS  " : "FAIL  ") << label << "  max_abs_err=" << check.max_abs_err()
                      << std::endl;
            for (const std::string &failure : check.failures()) std::cerr << "  " << failure << '\n';
        }
    }
    std::cout << passed << " passed, " << failed << " failed";
    if (unsupported > 0) std::cout << ", " << unsupported << " unsupported";
    std::cout << std::endl;
    if (options.weights) {
        std::cout << gqa::weight_type_name(*options.weights)
                  << " weights: the reference's largest deviation from the expected arrays " << weight_error.max_abs_err
                  << " (largest |expected| " << weight_error.max_abs_expected << ")" << std::endl;
    }
    // A run that compared nothing checked nothing: it is not a pass.
    if (passed + failed == 0) {
        std::cerr << "gqa-conformance: nothing was compared: every case was unsupported" << '\n';
        return 1;
    }
    return failed == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char **argv) {
    try {
        return run(parse_options(argc, argv));
    } catch (const InvalidInput &error) {
        std::cerr << "gqa-conformance: " << error.what() << '\n';
    } catch (const NoDevice &error) {
        std::cerr << "gqa-conformance: skipped: " << error.what() << '\n';
        return kExitNoDevice;
    } catch (const std::exception &error) {
        std::cerr << "gqa-conformance: unexpected error: " << error.what() << '\n';
    }
    return 2;
}
