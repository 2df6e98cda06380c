// The .safetensors reader shared by load_safetensors and load_hf_layer: the
// header is parsed whole, then each tensor is read from its own byte range.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "gqa/safetensors.hpp"

namespace gqa::detail {

// A block of a tensor: rows [first_row, first_row + rows) by columns [first_column,
// first_column + columns), a 1-d tensor being one row; negative counts run to the
// end. Only its bytes are read.
struct TensorBlock {
    int64_t first_row = 0, rows = -1, first_column = 0, columns = -1;
};

class SafetensorsFile {
public:
    // Throws gqa::Error naming the file when it cannot be opened or parsed.
    explicit SafetensorsFile(const std::string &path);

    bool has(const std::string &name) const { return header_.contains(name); }
    // Every tensor's name.
    std::vector<std::string> names() const;
    // The tensor `name` (F32, F16 or BF16), checked against `expected`, or a block of
    // it: as stored, or as fp32.
    WeightData read_weight(const std::string &name, const std::vector<int64_t> &expected, const TensorBlock &block = {});
    std::vector<float> read(const std::string &name, const std::vector<int64_t> &expected, const TensorBlock &block = {});
    const std::string &path() const { return path_; }

private:
    [[noreturn]] void fail(const std::string &what) const;
    // A few of the file's tensor names, to show which prefix it uses.
    std::string names_hint() const;

    std::string path_;
    std::ifstream in_;
    nlohmann::json header_;
    uint64_t data_begin_ = 0, data_size_ = 0;
};

}  // namespace gqa::detail
