// What a head shard (gqa/tensor_parallel.hpp) holds of a layer's weights, as
// element ranges; the unsharded loaders read the whole layer as one shard.
#pragma once

#include <cstdint>
#include <string>

#include "gqa/tensor_parallel.hpp"

namespace gqa::detail {

struct HeadSlices {
    int64_t q_first = 0, q_count = 0;    // wq's rows, bq, wo's columns
    int64_t kv_first = 0, kv_count = 0;  // wk's and wv's rows, bk, bv
};

HeadSlices head_slices(const Config &full, const HeadShard &shard);

// Every head: the shard an unsharded load reads.
HeadShard whole_layer(const Config &full);

// load_safetensors of the shard's slices only (safetensors.cpp).
LoadedWeights load_safetensors_heads(const std::string &path, const std::string &prefix, const Config &full,
                                     const HeadShard &shard, const ProjectionNames &names);

}  // namespace gqa::detail
