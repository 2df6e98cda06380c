// One attention layer's projections from a .safetensors file (the format of Hugging
// Face checkpoints): an 8-byte little-endian header length, a JSON header naming
// each tensor's dtype, shape and byte range, then the data.
#pragma once

#include <string>
#include <vector>

#include "gqa/attention.hpp"

namespace gqa {

// The tensor names under the layer's prefix, without ".weight" / ".bias".
// Hugging Face Llama/Mistral/Qwen: "q_proj" ... "o_proj" (the defaults), under
// "model.layers.<i>.self_attn."; torchtune: "output_proj" for o, under
// "layers.<i>.attn.".
struct ProjectionNames {
    std::string q = "q_proj", k = "k_proj", v = "v_proj", o = "o_proj";
};

// One projection weight as the file stores it, owned: fp32 values, or the bits of
// bf16 or f16 values (a layer keeps that type unless config.weight_type converts).
struct WeightData {
    WeightType type = WeightType::f32;
    std::vector<float> values;    // f32
    std::vector<uint16_t> bits;   // bf16, f16

    size_t size() const { return type == WeightType::f32 ? values.size() : bits.size(); }
    WeightView view(std::vector<int64_t> shape) const;
    // Every element widened to fp32, exactly.
    std::vector<float> to_float() const;
};

// The four weights, each in the file's dtype, and whichever biases the file has
// (fp32), owned; view() gives the gqa::Weights a layer is built from.
class LoadedWeights {
public:
    Weights view() const;

    WeightData wq, wk, wv, wo;
    std::vector<float> bq, bk, bv, bo;  // empty: not in the file
    std::vector<float> sinks;           // [num_heads] (gpt-oss; load_hf_layer), empty: none
    std::vector<float> q_norm, k_norm;  // config.qk_norm's weights (load_hf_layer), empty: none
    std::vector<int64_t> q_shape, kv_shape, o_shape;
};

// Reads <prefix><name>.weight for q, k, v and o (and <prefix><name>.bias where
// present) from `path`. F32, F16 and BF16 weights keep their dtype (f32, f16,
// bf16); biases are converted to fp32. Each
// weight must have the nn.Linear shape `config` implies: wq [n_h*hd, d], wk/wv
// [n_kv*hd, d], wo [d, n_h*hd]. Throws gqa::Error naming the file and the tensor
// for a file that cannot be read or parsed, a missing tensor, another dtype, a
// wrong shape or a byte range outside the data. Safe to call from several threads
// at once (each call opens the file itself).
LoadedWeights load_safetensors(const std::string &path, const std::string &prefix, const Config &config,
                               const ProjectionNames &names = {});

}  // namespace gqa
