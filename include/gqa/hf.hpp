// One attention layer of a Hugging Face transformers checkpoint, configured from
// the checkpoint directory itself: config.json for the Config, and that layer's
// tensors from model.safetensors (or the shards model.safetensors.index.json names).
#pragma once

#include <string>
#include <vector>

#include "gqa/attention.hpp"
#include "gqa/safetensors.hpp"
#include "gqa/tensor_parallel.hpp"

namespace gqa {

struct HfLayer {
    std::string model_type;  // config.json's
    Config config;           // rotate-half RoPE with the model's scaling, window, scale, soft-cap, q/k norm
    // The projections in the checkpoint's dtype, the rest fp32; a fused qkv_proj split
    // into q, k and v; Gemma's norm weights as 1 + w.
    LoadedWeights weights;
    // What the layer uses beyond plain causal GQA, for people to read: e.g.
    // "rope_scaling llama3 (factor 32)", "sliding window 4096", "fused qkv_proj".
    std::vector<std::string> features;
};

// Reads `directory`/config.json and layer `layer`'s attention tensors
// (model.layers.<layer>.self_attn.*, F32, F16 or BF16), and nothing else of the
// checkpoint. max_seq_len is the layer's: the RoPE table's length and the bound on
// positions (longrope picks its factors by it). model_type must be one of llama,
// mistral, qwen2, qwen3, olmo2, gemma2, gemma3_text, gpt_oss, phi3. A model type,
// a rope_scaling type or field, or a tensor it does not know, and any inconsistent
// size, is a gqa::Error naming it; nothing is guessed.
HfLayer load_hf_layer(const std::string &directory, int layer, int max_seq_len = 4096);

// Shard `rank` of `ranks` of that layer (gqa/tensor_parallel.hpp's head_shard), read
// alone: only the shard's rows of the q/k/v projections (of qkv_proj, fused), its
// columns of o_proj, its biases and sinks are read from disk. layer.config is the
// shard's; the same errors as load_hf_layer and head_shard.
struct HfLayerShard {
    HfLayer layer;
    Config full_config;  // the layer unsharded
    HeadShard shard;
};
HfLayerShard load_hf_layer_shard(const std::string &directory, int layer, int rank, int ranks,
                                 int max_seq_len = 4096);

}  // namespace gqa
