// The .safetensors reader: the header is parsed whole, then only the eight (or
// fewer) tensors of one layer are read, each from its own byte range, so a
// multi-gigabyte checkpoint costs what one layer's weights cost. load_safetensors
// reads one file; load_hf_layer (hf_checkpoint.cpp) a directory, through the same
// SafetensorsFile.
#include "gqa/safetensors.hpp"

#include "head_slices.h"
#include "safetensors_file.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <optional>

namespace gqa::detail {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");

// A header larger than this is not a checkpoint's (the format's own limit is 100 MB).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

SafetensorsFile::SafetensorsFile(const std::string &path) : path_(path), in_(path, std::ios::binary) {
    if (!in_) fail("cannot be opened");
    in_.seekg(0, std::ios::end);
    const auto file_size = static_cast<uint64_t>(in_.tellg());
    in_.seekg(0);
    uint64_t header_size = 0;
    if (file_size < 8 || !in_.read(reinterpret_cast<char *>(&header_size), 8)) {
        fail("is shorter than the 8-byte header length");
    }
    if (header_size > kMaxHeaderBytes || header_size > file_size - 8) {
        fail("declares a " + std::to_string(header_size) + "-byte header, but holds " +
             std::to_string(file_size - 8) + " bytes after the length");
    }
    std::string text(header_size, '\0');
    if (!in_.read(text.data(), std::streamsize(header_size))) fail("header cannot be read");
    try {
        header_ = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception &error) {
        fail(std::string("header is not valid JSON: ") + error.what());
    }
    if (!header_.is_object()) fail("header is not a JSON object");
    data_begin_ = 8 + header_size;
    data_size_ = file_size - data_begin_;
}

WeightData SafetensorsFile::read_weight(const std::string &name, const std::vector<int64_t> &expected,
                                        const TensorBlock &block) {
    if (!has(name)) fail("has no tensor '" + name + "'" + names_hint());
    const nlohmann::json &entry = header_.at(name);
    std::string dtype;
    std::vector<int64_t> shape;
    std::vector<uint64_t> offsets;
    try {
        dtype = entry.at("dtype").get<std::string>();
        shape = entry.at("shape").get<std::vector<int64_t>>();
        offsets = entry.at("data_offsets").get<std::vector<uint64_t>>();
    } catch (const nlohmann::json::exception &) {
        fail("tensor '" + name + "' has no valid dtype, shape and data_offsets: " + entry.dump());
    }
    if (shape != expected) {
        fail("tensor '" + name + "' has shape " + shape_string(shape) + "; expected " + shape_string(expected));
    }
    const size_t element_size = dtype == "F32" ? 4 : dtype == "F16" || dtype == "BF16" ? 2 : 0;
    if (element_size == 0) fail("tensor '" + name + "' has dtype " + dtype + "; expected F32, F16 or BF16");
    uint64_t count = 1;
    for (int64_t extent : shape) count *= uint64_t(extent);
    if (offsets.size() != 2 || offsets[0] > offsets[1] || offsets[1] > data_size_ ||
        offsets[1] - offsets[0] != count * element_size) {
        fail("tensor '" + name + "' has data_offsets " + entry.at("data_offsets").dump() + "; expected " +
             std::to_string(count * element_size) + " bytes (" + dtype + " " + shape_string(shape) +
             ") inside the " + std::to_string(data_size_) + " data bytes");
    }
    const int64_t row_length = shape.empty() ? 1 : shape.back(), row_count = int64_t(count) / std::max<int64_t>(row_length, 1);
    const int64_t rows = block.rows < 0 ? row_count - block.first_row : block.rows;
    const int64_t columns = block.columns < 0 ? row_length - block.first_column : block.columns;
    if (block.first_row < 0 || block.first_column < 0 || block.first_row + rows > row_count ||
        block.first_column + columns > row_length) {
        fail("tensor '" + name + "' " + shape_string(shape) + " has no block of rows [" +
             std::to_string(block.first_row) + ", +" + std::to_string(rows) + ") by columns [" +
             std::to_string(block.first_column) + ", +" + std::to_string(columns) + ")");
    }
    // Little-endian, as stored.
    WeightData data;
    const size_t block_count = size_t(rows * columns);
    char *to = nullptr;
    if (dtype == "F32") {
        data.values.resize(block_count);
        to = reinterpret_cast<char *>(data.values.data());
    } else {
        data.type = dtype == "F16" ? WeightType::f16 : WeightType::bf16;
        data.bits.resize(block_count);
        to = reinterpret_cast<char *>(data.bits.data());
    }
    // Whole rows are one read; a block of columns one read per row.
    const bool whole_rows = columns == row_length;
    const int64_t reads = whole_rows ? 1 : rows, elements_per_read = whole_rows ? rows * columns : columns;
    for (int64_t n = 0; n < reads; ++n) {
        const uint64_t first = uint64_t((block.first_row + n) * row_length + block.first_column);
        in_.clear();
        in_.seekg(std::streamoff(data_begin_ + offsets[0] + first * element_size));
        const auto bytes = std::streamsize(uint64_t(elements_per_read) * element_size);
        if (!in_.read(to + n * bytes, bytes)) fail("tensor '" + name + "' cannot be read");
    }
    return data;
}

std::vector<float> SafetensorsFile::read(const std::string &name, const std::vector<int64_t> &expected,
                                         const TensorBlock &block) {
    WeightData data = read_weight(name, expected, block);
    return data.type == WeightType::f32 ? std::move(data.values) : data.to_float();
}

void SafetensorsFile::fail(const std::string &what) const {
    throw Error("safetensors file " + path_ + " " + what);
}

std::vector<std::string> SafetensorsFile::names() const {
    std::vector<std::string> names;
    for (const auto &item : header_.items()) {
        if (item.key() != "__metadata__") names.push_back(item.key());
    }
    return names;
}

std::string SafetensorsFile::names_hint() const {
    std::string hint;
    int shown = 0;
    for (const auto &item : header_.items()) {
        if (item.key() == "__metadata__") continue;
        if (shown == 4) return hint + ", ...)";
        hint += (shown++ ? ", " : " (it has ") + item.key();
    }
    return shown ? hint + ")" : " (it has no tensors)";
}

}  // namespace gqa::detail

namespace gqa {

using detail::SafetensorsFile;

WeightView WeightData::view(std::vector<int64_t> shape) const {
    return type == WeightType::f32 ? WeightView(values.data(), std::move(shape))
                                   : WeightView(bits.data(), std::move(shape), type);
}

std::vector<float> WeightData::to_float() const {
    if (type == WeightType::f32) return values;
    const WeightView typed = view({int64_t(bits.size())});
    std::vector<float> widened(bits.size());
    for (size_t i = 0; i < bits.size(); ++i) widened[i] = typed.value(int64_t(i));
    return widened;
}

Weights LoadedWeights::view() const {
    const auto optional = [](const std::vector<float> &bias) {
        return bias.empty() ? TensorView<float>{} : TensorView<float>{bias.data(), {int64_t(bias.size())}};
    };
    return {wq.view(q_shape),     wk.view(kv_shape),    wv.view(kv_shape),    wo.view(o_shape),
            optional(bq),         optional(bk),         optional(bv),         optional(bo),
            optional(sinks),      optional(q_norm),     optional(k_norm)};
}

namespace detail {

LoadedWeights load_safetensors_heads(const std::string &path, const std::string &prefix, const Config &full,
                                     const HeadShard &shard, const ProjectionNames &names) {
    for (const auto &[value, name] : {std::pair{full.embed_dim, "embed_dim"}, std::pair{full.num_heads, "num_heads"},
                                      std::pair{full.num_kv_heads, "num_kv_heads"},
                                      std::pair{full.head_dim, "head_dim"}}) {
        if (value <= 0) throw Error(std::string(name) + " is " + std::to_string(value) + "; expected > 0");
    }
    const int64_t q = int64_t(full.num_heads) * full.head_dim, kv = int64_t(full.num_kv_heads) * full.head_dim,
                  d = full.embed_dim;
    const HeadSlices h = head_slices(full, shard);
    const TensorBlock q_rows{h.q_first, h.q_count}, kv_rows{h.kv_first, h.kv_count};
    SafetensorsFile file(path);
    LoadedWeights w;
    w.q_shape = {h.q_count, d}, w.kv_shape = {h.kv_count, d}, w.o_shape = {d, h.q_count};
    w.wq = file.read_weight(prefix + names.q + ".weight", {q, d}, q_rows);
    w.wk = file.read_weight(prefix + names.k + ".weight", {kv, d}, kv_rows);
    w.wv = file.read_weight(prefix + names.v + ".weight", {kv, d}, kv_rows);
    w.wo = file.read_weight(prefix + names.o + ".weight", {d, q}, {0, d, h.q_first, h.q_count});
    // A bias is one row: the shard's range of its columns.
    const auto bias = [&](const std::string &name, int64_t size, int64_t first, int64_t count) {
        const std::string tensor = prefix + name + ".bias";
        return file.has(tensor) ? file.read(tensor, {size}, {0, 1, first, count}) : std::vector<float>{};
    };
    w.bq = bias(names.q, q, h.q_first, h.q_count);
    w.bk = bias(names.k, kv, h.kv_first, h.kv_count);
    w.bv = bias(names.v, kv, h.kv_first, h.kv_count);
    if (shard.adds_output_bias) w.bo = bias(names.o, d, 0, d);
    return w;
}

}  // namespace detail

LoadedWeights load_safetensors(const std::string &path, const std::string &prefix, const Config &config,
                               const ProjectionNames &names) {
    return detail::load_safetensors_heads(path, prefix, config, detail::whole_layer(config), names);
}

}  // namespace gqa
