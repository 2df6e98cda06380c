// load_hf_layer: a transformers checkpoint directory to one layer's Config and
// weights. Every attention field of config.json it reads is checked, and a field,
// type or tensor it does not understand is an error: a wrong layer that runs is
// worse than none.
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>

#include "gqa/hf.hpp"
#include "head_slices.h"
#include "safetensors_file.h"
#include "validation.h"

namespace gqa {
namespace {

using detail::fail;
using detail::SafetensorsFile;
using detail::TensorBlock;
using nlohmann::json;

// The model types this version computes, with what sets their attention apart
// beyond config.json's generic fields.
struct ModelType {
    QkNorm qk_norm = QkNorm::none;
    bool norm_weight_offset = false;    // the norms scale by 1 + w (Gemma 3)
    bool local_rope_on_sliding = false; // sliding layers: rope_local_base_freq, no scaling (Gemma 3)
};
const std::map<std::string, ModelType> kModelTypes = {
    {"llama", {}},
    {"mistral", {}},
    {"qwen2", {}},
    {"qwen3", {.qk_norm = QkNorm::per_head}},
    {"olmo2", {.qk_norm = QkNorm::all_heads}},
    {"gemma2", {}},
    {"gemma3_text", {.qk_norm = QkNorm::per_head, .norm_weight_offset = true, .local_rope_on_sliding = true}},
    {"gpt_oss", {}},
    {"phi3", {}},
};

json read_json(const std::filesystem::path &path) {
    std::ifstream in(path);
    if (!in) fail(path.string(), " cannot be opened");
    try {
        return json::parse(in);
    } catch (const json::exception &e) {
        fail(path.string(), " is not valid JSON: ", e.what());
    }
}

// Typed reads of config.json fields: missing (or null) gives the fallback, a
// value of another type is an error naming the field.
class ConfigFile {
public:
    explicit ConfigFile(const std::filesystem::path &path) : path_(path.string()), root_(read_json(path)) {
        if (!root_.is_object()) fail(path_, " is not a JSON object");
    }

    const json &root() const { return root_; }
    bool has(const std::string &key) const { return root_.contains(key) && !root_.at(key).is_null(); }

    template <typename T>
    T get(const std::string &key, const T &fallback) const {
        return has(key) ? as<T>(root_.at(key), key) : fallback;
    }
    template <typename T>
    T require(const std::string &key) const {
        if (!has(key)) fail(path_, " has no '", key, "'");
        return as<T>(root_.at(key), key);
    }

    template <typename T>
    T as(const json &value, const std::string &what) const {
        const bool ok = std::is_same_v<T, bool>          ? value.is_boolean()
                        : std::is_same_v<T, std::string> ? value.is_string()
                        : std::is_integral_v<T>          ? value.is_number_integer()
                        : std::is_floating_point_v<T>    ? value.is_number()
                                                         : value.is_array();
        if (!ok) fail(path_, ": '", what, "' is ", value.dump(), ", of the wrong type");
        return value.get<T>();
    }

    const std::string &path() const { return path_; }

private:
    std::string path_;
    json root_;
};

RopeScaling parse_rope_scaling(const ConfigFile &file, std::vector<std::string> &features) {
    RopeScaling s;
    if (!file.has("rope_scaling")) return s;
    const json &rs = file.root().at("rope_scaling");
    if (!rs.is_object()) fail(file.path(), ": 'rope_scaling' is ", rs.dump(), "; expected an object or null");
    const std::string type = rs.contains("rope_type") ? file.as<std::string>(rs.at("rope_type"), "rope_scaling.rope_type")
                             : rs.contains("type")   ? file.as<std::string>(rs.at("type"), "rope_scaling.type")
                                                     : "";
    std::set<std::string> keys;
    if (type == "default") {
        s.type = RopeScalingType::none;
    } else if (type == "linear") {
        s.type = RopeScalingType::linear, keys = {"factor"};
    } else if (type == "llama3") {
        s.type = RopeScalingType::llama3;
        keys = {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"};
    } else if (type == "yarn") {
        s.type = RopeScalingType::yarn;
        keys = {"factor", "beta_fast", "beta_slow", "truncate", "original_max_position_embeddings",
                "attention_factor", "mscale", "mscale_all_dim"};
    } else if (type == "longrope") {
        s.type = RopeScalingType::longrope;
        keys = {"short_factor", "long_factor", "original_max_position_embeddings", "attention_factor"};
    } else {
        fail(file.path(), ": rope_scaling type '", type, "' is not one this version computes (default, linear, ",
             "llama3, yarn, longrope)");
    }
    for (const auto &item : rs.items()) {
        if (item.key() == "rope_type" || item.key() == "type" || item.value().is_null()) continue;
        if (!keys.count(item.key())) {
            fail(file.path(), ": rope_scaling field '", item.key(), "' is not one a ", type, " scaling takes");
        }
    }
    auto number = [&](const char *key, double fallback) {
        return rs.contains(key) && !rs.at(key).is_null() ? file.as<double>(rs.at(key), std::string("rope_scaling.") + key)
                                                         : fallback;
    };
    s.factor = number("factor", 1.0);
    s.low_freq_factor = number("low_freq_factor", 1.0);
    s.high_freq_factor = number("high_freq_factor", 4.0);
    s.beta_fast = number("beta_fast", 32.0);
    s.beta_slow = number("beta_slow", 1.0);
    s.attention_factor = number("attention_factor", 0.0);
    s.mscale = number("mscale", 0.0);
    s.mscale_all_dim = number("mscale_all_dim", 0.0);
    if (rs.contains("truncate") && !rs.at("truncate").is_null()) {
        s.truncate = file.as<bool>(rs.at("truncate"), "rope_scaling.truncate");
    }
    // The pretraining context: rope_scaling's, else the config's own field, else
    // (yarn) max_position_embeddings.
    const int max_positions = file.get<int>("max_position_embeddings", 0);
    s.original_max_position_embeddings =
        rs.contains("original_max_position_embeddings")
            ? file.as<int>(rs.at("original_max_position_embeddings"), "rope_scaling.original_max_position_embeddings")
            : file.get<int>("original_max_position_embeddings", s.type == RopeScalingType::yarn ? max_positions : 0);
    if (s.type == RopeScalingType::longrope) {
        s.short_factor = file.as<std::vector<double>>(rs.value("short_factor", json()), "rope_scaling.short_factor");
        s.long_factor = file.as<std::vector<double>>(rs.value("long_factor", json()), "rope_scaling.long_factor");
        s.max_position_embeddings = max_positions;
    }
    if (s.type != RopeScalingType::none) {
        std::ostringstream text;
        text << "rope_scaling " << type;
        if (s.type != RopeScalingType::longrope) text << " (factor " << s.factor << ")";
        features.push_back(text.str());
    }
    return s;
}

// The sliding window of `layer`, 0 for none: layer_types where the config has it,
// else the model's own rule.
int sliding_window(const ConfigFile &file, const std::string &model_type, int layer) {
    const int window = file.get<int>("sliding_window", 0);
    bool sliding = false;
    if (file.has("layer_types")) {
        const auto types = file.as<std::vector<std::string>>(file.root().at("layer_types"), "layer_types");
        if (int(types.size()) <= layer) fail(file.path(), ": layer_types has no entry for layer ", layer);
        if (types[layer] != "sliding_attention" && types[layer] != "full_attention") {
            fail(file.path(), ": layer_types[", layer, "] is '", types[layer],
                 "'; expected sliding_attention or full_attention");
        }
        sliding = types[layer] == "sliding_attention";
    } else if (model_type == "mistral" || model_type == "phi3") {
        sliding = window > 0;
    } else if (model_type == "qwen2") {
        sliding = file.get<bool>("use_sliding_window", false) && layer >= file.get<int>("max_window_layers", 28);
    } else if (model_type == "gemma2") {
        sliding = layer % 2 == 0;  // transformers' Gemma 2: even layers slide
    } else if (model_type == "gemma3_text") {
        // Every sliding_window_pattern-th layer is global, the others slide.
        const int pattern = file.get<int>("sliding_window_pattern", 6);
        if (pattern <= 0) fail(file.path(), ": sliding_window_pattern is ", pattern, "; expected > 0");
        sliding = (layer + 1) % pattern != 0;
    }
    if (!sliding) return 0;
    if (window <= 0) fail(file.path(), ": layer ", layer, " slides, but sliding_window is ", window);
    return window;
}

// The checkpoint's tensors: a single model.safetensors, or the shards of an index.
class Checkpoint {
public:
    explicit Checkpoint(const std::filesystem::path &directory) : directory_(directory) {
        const auto index = directory / "model.safetensors.index.json";
        if (std::filesystem::exists(index)) {
            const json root = read_json(index);
            if (!root.contains("weight_map") || !root.at("weight_map").is_object()) {
                fail(index.string(), " has no weight_map object");
            }
            for (const auto &item : root.at("weight_map").items()) {
                if (!item.value().is_string()) fail(index.string(), ": weight_map['", item.key(), "'] is not a file name");
                shard_of_[item.key()] = item.value().get<std::string>();
            }
        } else {
            const auto single = directory / "model.safetensors";
            if (!std::filesystem::exists(single)) {
                fail(directory.string(), " has neither model.safetensors nor model.safetensors.index.json");
            }
            for (const std::string &name : file("model.safetensors").names()) shard_of_[name] = "model.safetensors";
        }
    }

    bool has(const std::string &name) const { return shard_of_.count(name) > 0; }
    std::vector<std::string> names_with_prefix(const std::string &prefix) const {
        std::vector<std::string> names;
        for (const auto &[name, shard] : shard_of_) {
            if (name.rfind(prefix, 0) == 0) names.push_back(name);
        }
        return names;
    }
    std::vector<float> read(const std::string &name, const std::vector<int64_t> &shape, const TensorBlock &block = {}) {
        return file_of(name).read(name, shape, block);
    }
    WeightData read_weight(const std::string &name, const std::vector<int64_t> &shape, const TensorBlock &block = {}) {
        return file_of(name).read_weight(name, shape, block);
    }

private:
    SafetensorsFile &file_of(const std::string &name) {
        if (!has(name)) fail(directory_.string(), " has no tensor '", name, "'");
        return file(shard_of_.at(name));
    }
    SafetensorsFile &file(const std::string &shard) {
        auto &opened = files_[shard];
        if (!opened) opened = std::make_unique<SafetensorsFile>((directory_ / shard).string());
        return *opened;
    }

    std::filesystem::path directory_;
    std::map<std::string, std::string> shard_of_;
    std::map<std::string, std::unique_ptr<SafetensorsFile>> files_;
};

// The layer, or with ranks > 0 shard `rank` of it, whose slices alone are read.
HfLayerShard load_layer(const std::string &directory, int layer, int max_seq_len, int rank, int ranks) {
    const std::filesystem::path dir(directory);
    const ConfigFile file(dir / "config.json");
    HfLayer out;
    out.model_type = file.require<std::string>("model_type");
    const auto known_type = kModelTypes.find(out.model_type);
    if (known_type == kModelTypes.end()) {
        std::string known;
        for (const auto &[name, type] : kModelTypes) known += (known.empty() ? "" : ", ") + name;
        fail(file.path(), ": model_type '", out.model_type, "' is not one this version knows (", known, ")");
    }
    const ModelType &model = known_type->second;
    const int layers = file.require<int>("num_hidden_layers");
    if (layer < 0 || layer >= layers) fail("layer is ", layer, "; ", file.path(), " has ", layers, " layers");

    Config &c = out.config;
    c.embed_dim = file.require<int>("hidden_size");
    c.num_heads = file.require<int>("num_attention_heads");
    c.num_kv_heads = file.get<int>("num_key_value_heads", c.num_heads);
    if (c.num_heads <= 0 || c.embed_dim <= 0) fail(file.path(), ": hidden_size and num_attention_heads must be > 0");
    if (file.has("head_dim")) {
        c.head_dim = file.require<int>("head_dim");
    } else {
        if (c.embed_dim % c.num_heads != 0) {
            fail(file.path(), ": no head_dim, and hidden_size ", c.embed_dim, " is not a multiple of ",
                 "num_attention_heads ", c.num_heads);
        }
        c.head_dim = c.embed_dim / c.num_heads;
    }
    c.max_seq_len = max_seq_len;
    c.rope_style = RopeStyle::rotate_half;
    c.rope_base = file.get<double>("rope_theta", 10000.0);
    const double partial = file.get<double>("partial_rotary_factor", 1.0);
    c.rotary_dim = int(c.head_dim * partial);
    if (partial != 1.0) {
        out.features.push_back("partial rotary (" + std::to_string(c.rotary_dim) + " of " +
                               std::to_string(c.head_dim) + " dims)");
    }
    const int window = sliding_window(file, out.model_type, layer);
    if (model.local_rope_on_sliding && window > 0) {
        c.rope_base = file.require<double>("rope_local_base_freq");
        out.features.push_back("local RoPE base " + std::to_string(int64_t(c.rope_base)));
    } else {
        c.rope_scaling = parse_rope_scaling(file, out.features);
    }
    if (window > 0) {
        c.window = window;
        out.features.push_back("sliding window " + std::to_string(window));
    }
    if (model.qk_norm != QkNorm::none) {
        c.qk_norm = model.qk_norm;
        c.qk_norm_eps = file.require<double>("rms_norm_eps");
        out.features.push_back(std::string("q/k RMSNorm ") + (c.qk_norm == QkNorm::per_head ? "per head" : "over all heads") +
                               (model.norm_weight_offset ? " (weight 1 + w)" : ""));
    }
    if (file.has("query_pre_attn_scalar")) {
        const double scalar = file.require<double>("query_pre_attn_scalar");
        if (!(scalar > 0)) fail(file.path(), ": query_pre_attn_scalar is ", scalar, "; expected > 0");
        c.scale = 1.0 / std::sqrt(scalar);
        out.features.push_back("scale 1/sqrt(" + std::to_string(int(scalar)) + ")");
    }
    if (file.has("attn_logit_softcapping")) {
        c.softcap = file.require<double>("attn_logit_softcapping");
        out.features.push_back("logit soft-cap " + std::to_string(c.softcap));
    }
    detail::validate_config(c);
    HfLayerShard sharded;
    sharded.full_config = c;
    sharded.shard = ranks > 0 ? head_shard(c, rank, ranks) : detail::whole_layer(c);
    const HeadShard &shard = sharded.shard;

    // The layer's tensors: each must be one this loader reads, so that a feature it
    // does not compute (a norm, sinks) cannot be dropped silently.
    Checkpoint checkpoint(dir);
    const std::string prefix = "model.layers." + std::to_string(layer) + ".self_attn.";
    const bool fused = checkpoint.has(prefix + "qkv_proj.weight");
    std::set<std::string> known = fused ? std::set<std::string>{"qkv_proj.weight", "qkv_proj.bias", "o_proj.weight",
                                                                "o_proj.bias"}
                                        : std::set<std::string>{"q_proj.weight", "k_proj.weight", "v_proj.weight",
                                                                "o_proj.weight", "q_proj.bias", "k_proj.bias",
                                                                "v_proj.bias", "o_proj.bias"};
    known.insert("sinks");
    if (c.qk_norm != QkNorm::none) known.insert({"q_norm.weight", "k_norm.weight"});
    for (const std::string &name : checkpoint.names_with_prefix(prefix)) {
        if (!known.count(name.substr(prefix.size()))) {
            fail(directory, ": tensor '", name, "' is not one this version computes with");
        }
    }
    const int64_t q = int64_t(c.num_heads) * c.head_dim, kv = int64_t(c.num_kv_heads) * c.head_dim, d = c.embed_dim;
    const detail::HeadSlices h = detail::head_slices(c, shard);
    LoadedWeights &w = out.weights;
    w.q_shape = {h.q_count, d}, w.kv_shape = {h.kv_count, d}, w.o_shape = {d, h.q_count};
    // A 1-d tensor the checkpoint may leave out (a bias, the sinks), elements
    // [first, first + count): empty when absent.
    auto optional_tensor = [&](const std::string &name, int64_t size, int64_t first, int64_t count) {
        return checkpoint.has(prefix + name) ? checkpoint.read(prefix + name, {size}, {0, 1, first, count})
                                             : std::vector<float>{};
    };
    if (fused) {
        // Rows q, then k, then v (Phi-3/4): the shard's rows of each.
        const std::string name = prefix + "qkv_proj.weight";
        const std::vector<int64_t> shape{q + 2 * kv, d};
        w.wq = checkpoint.read_weight(name, shape, {h.q_first, h.q_count});
        w.wk = checkpoint.read_weight(name, shape, {q + h.kv_first, h.kv_count});
        w.wv = checkpoint.read_weight(name, shape, {q + kv + h.kv_first, h.kv_count});
        w.bq = optional_tensor("qkv_proj.bias", q + 2 * kv, h.q_first, h.q_count);
        w.bk = optional_tensor("qkv_proj.bias", q + 2 * kv, q + h.kv_first, h.kv_count);
        w.bv = optional_tensor("qkv_proj.bias", q + 2 * kv, q + kv + h.kv_first, h.kv_count);
        out.features.push_back("fused qkv_proj");
    } else {
        w.wq = checkpoint.read_weight(prefix + "q_proj.weight", {q, d}, {h.q_first, h.q_count});
        w.wk = checkpoint.read_weight(prefix + "k_proj.weight", {kv, d}, {h.kv_first, h.kv_count});
        w.wv = checkpoint.read_weight(prefix + "v_proj.weight", {kv, d}, {h.kv_first, h.kv_count});
        w.bq = optional_tensor("q_proj.bias", q, h.q_first, h.q_count);
        w.bk = optional_tensor("k_proj.bias", kv, h.kv_first, h.kv_count);
        w.bv = optional_tensor("v_proj.bias", kv, h.kv_first, h.kv_count);
    }
    w.wo = checkpoint.read_weight(prefix + "o_proj.weight", {d, q}, {0, d, h.q_first, h.q_count});
    if (shard.adds_output_bias) w.bo = optional_tensor("o_proj.bias", d, 0, d);
    w.sinks = optional_tensor("sinks", c.num_heads, shard.q_begin, shard.q_end - shard.q_begin);
    if (c.qk_norm != QkNorm::none) {
        w.q_norm = checkpoint.read(prefix + "q_norm.weight", {detail::qk_norm_size(c, false)});
        w.k_norm = checkpoint.read(prefix + "k_norm.weight", {detail::qk_norm_size(c, true)});
        if (model.norm_weight_offset) {
            for (std::vector<float> *weight : {&w.q_norm, &w.k_norm}) {
                for (float &value : *weight) value += 1.f;
            }
        }
    }
    if (!w.sinks.empty()) out.features.push_back("attention sinks");
    if (!w.bq.empty()) out.features.push_back("q/k/v biases");
    if (checkpoint.has(prefix + "o_proj.bias")) out.features.push_back("o_proj bias");
    if (ranks > 0) c = shard_config(c, shard);
    sharded.layer = std::move(out);
    return sharded;
}

}  // namespace

HfLayer load_hf_layer(const std::string &directory, int layer, int max_seq_len) {
    return load_layer(directory, layer, max_seq_len, 0, 0).layer;
}

HfLayerShard load_hf_layer_shard(const std::string &directory, int layer, int rank, int ranks, int max_seq_len) {
    if (ranks < 1) fail("ranks is ", ranks, "; expected >= 1");
    return load_layer(directory, layer, max_seq_len, rank, ranks);
}

}  // namespace gqa
