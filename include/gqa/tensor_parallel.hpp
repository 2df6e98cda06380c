// Tensor parallelism by heads (Megatron-style). Each of `ranks` processes (or
// devices) holds a range of a layer's kv heads with their query heads: it computes
// their q/k/v projections, RoPE, cache and attention alone, and the part of the
// output projection those heads feed. The sum of the ranks' outputs, one all-reduce
// of [b, s, d] per layer, is the layer's output. The library does not communicate:
// examples/tensor_parallel wires the all-reduce over MPI.
#pragma once

#include <string>

#include "gqa/attention.hpp"
#include "gqa/safetensors.hpp"

namespace gqa {

struct HeadShard {
    int kv_begin = 0, kv_end = 0;   // the full config's kv heads the shard holds
    int q_begin = 0, q_end = 0;     // and its query heads
    bool adds_output_bias = false;  // wo's bias: on the first shard only
};

// Shard `rank` of `ranks` of the layer `full` configures. With at most num_kv_heads
// ranks, the kv heads are split (the first num_kv_heads % ranks shards get one
// more), each with its query heads. With more, each kv head is replicated on
// ranks / num_kv_heads shards, which split its group of query heads (MQA: any rank
// count up to num_heads). A gqa::Error, naming the cause: ranks < 1, a rank outside
// [0, ranks), more ranks than kv heads but not a multiple of them, a shard that
// would hold no query head, and qk_norm all_heads (its RMS spans every head of a
// token, which no shard holds alone).
HeadShard head_shard(const Config &full, int rank, int ranks);

// The shard's layer: its heads, everything else as in `full`.
Config shard_config(const Config &full, const HeadShard &shard);

// The shard's weights, owned: its rows of wq, wk, wv, their biases and the sinks,
// its columns of wo, wo's bias where the shard adds it, the per-head q/k norms as
// they are. f32, bf16 and f16 weights keep their type; int8 ones are refused (shard
// the unquantized weights and set the shard config's weight_type: the groups then
// come out the same where head_dim is a multiple of 32).
// view() gives what Attention(shard_config(full, shard), ...) takes.
LoadedWeights shard_weights(const Config &full, const Weights &weights, const HeadShard &shard);

// As load_safetensors for the layer `full` configures, but reading only the shard's
// bytes from the file: its rows of wq, wk, wv and their biases, its columns of wo
// (one read per row), wo's bias where the shard adds it. (gqa/hf.hpp's
// load_hf_layer_shard does the same for a Hugging Face checkpoint directory.)
LoadedWeights load_safetensors_shard(const std::string &path, const std::string &prefix, const Config &full,
                                     const HeadShard &shard, const ProjectionNames &names = {});

}  // namespace gqa
