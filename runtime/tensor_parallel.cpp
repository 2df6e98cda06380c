// Head shards of a layer: which heads a rank holds, and its slices of the weights.
#include "gqa/tensor_parallel.hpp"

#include <algorithm>
#include <cstring>
#include <tuple>

#include "head_slices.h"
#include "validation.h"

namespace gqa {

namespace {

using detail::fail;

// Part `part` of `count` items split into `parts` as evenly as possible, the first
// count % parts parts one larger: [begin, end).
std::pair<int, int> even_part(int count, int parts, int part) {
    const int base = count / parts, extra = count % parts;
    const int begin = part * base + std::min(part, extra);
    return {begin, begin + base + (part < extra ? 1 : 0)};
}

// Rows [first_row, first_row + rows) by columns [first_column, first_column +
// columns) of a row-major weight, in its own type.
WeightData copy_block(const WeightView &w, int64_t first_row, int64_t rows, int64_t first_column, int64_t columns) {
    const int64_t row_length = w.shape[1];
    WeightData block;
    block.type = w.type;
    const size_t element = w.type == WeightType::f32 ? sizeof(float) : sizeof(uint16_t);
    void *destination = nullptr;
    detail::allocate("a shard's weights", size_t(rows * columns), element, [&] {
        if (w.type == WeightType::f32) {
            block.values.resize(size_t(rows * columns));
            destination = block.values.data();
        } else {
            block.bits.resize(size_t(rows * columns));
            destination = block.bits.data();
        }
    });
    for (int64_t r = 0; r < rows; ++r) {
        const auto *from = static_cast<const char *>(w.data) + ((first_row + r) * row_length + first_column) * element;
        std::memcpy(static_cast<char *>(destination) + r * columns * element, from, size_t(columns) * element);
    }
    return block;
}

std::vector<float> copy_range(const TensorView<float> &v, int64_t first, int64_t count) {
    if (v.data == nullptr) return {};
    return std::vector<float>(v.data + first, v.data + first + count);
}

}  // namespace

namespace detail {

HeadSlices head_slices(const Config &full, const HeadShard &shard) {
    const int64_t hd = full.head_dim;
    return {shard.q_begin * hd, (shard.q_end - shard.q_begin) * hd, shard.kv_begin * hd,
            (shard.kv_end - shard.kv_begin) * hd};
}

HeadShard whole_layer(const Config &full) {
    return {0, full.num_kv_heads, 0, full.num_heads, true};
}

}  // namespace detail

HeadShard head_shard(const Config &full, int rank, int ranks) {
    detail::validate_config(full);
    if (ranks < 1) fail("ranks is ", ranks, "; expected >= 1");
    if (rank < 0 || rank >= ranks) fail("rank ", rank, " is outside [0, ", ranks, ")");
    if (full.qk_norm == QkNorm::all_heads) {
        fail("qk_norm all_heads normalises over every head of a token, which no shard holds alone; it cannot be "
             "sharded by heads");
    }
    const int kv_heads = full.num_kv_heads, group = full.num_heads / full.num_kv_heads;
    HeadShard shard;
    shard.adds_output_bias = rank == 0;
    if (ranks <= kv_heads) {
        std::tie(shard.kv_begin, shard.kv_end) = even_part(kv_heads, ranks, rank);
        shard.q_begin = shard.kv_begin * group;
        shard.q_end = shard.kv_end * group;
        return shard;
    }
    if (ranks % kv_heads != 0) {
        fail(ranks, " ranks for ", kv_heads, " kv heads: with more ranks than kv heads, ranks must be a multiple of "
             "num_kv_heads (each kv head is then replicated on ranks / num_kv_heads ranks)");
    }
    const int replicas = ranks / kv_heads, kv = rank / replicas;
    if (group < replicas) {
        fail(ranks, " ranks: each kv head's ", group, " query heads would be split over ", replicas,
             " ranks, leaving a rank without a query head");
    }
    const auto [first, end] = even_part(group, replicas, rank % replicas);
    shard.kv_begin = kv;
    shard.kv_end = kv + 1;
    shard.q_begin = kv * group + first;
    shard.q_end = kv * group + end;
    return shard;
}

Config shard_config(const Config &full, const HeadShard &shard) {
    detail::validate_config(full);
    const int group = full.num_heads / full.num_kv_heads;
    const int kv_heads = shard.kv_end - shard.kv_begin, q_heads = shard.q_end - shard.q_begin;
    const bool within = shard.kv_begin >= 0 && kv_heads >= 1 && shard.kv_end <= full.num_kv_heads &&
                        q_heads >= 1 && shard.q_begin >= shard.kv_begin * group && shard.q_end <= shard.kv_end * group;
    // A shard's query heads fill its kv heads' groups, or share its one kv head.
    const bool whole_groups = q_heads == kv_heads * group;
    if (!within || !(whole_groups || kv_heads == 1)) {
        fail("head shard kv [", shard.kv_begin, ", ", shard.kv_end, ") q [", shard.q_begin, ", ", shard.q_end,
             ") is not a shard of ", full.num_kv_heads, " kv heads with ", group, " query heads each (head_shard "
             "gives one)");
    }
    Config config = full;
    config.num_heads = q_heads;
    config.num_kv_heads = kv_heads;
    return config;
}

LoadedWeights shard_weights(const Config &full, const Weights &weights, const HeadShard &shard) {
    const Config config = shard_config(full, shard);
    for (const WeightView *w : {&weights.wq, &weights.wk, &weights.wv, &weights.wo}) {
        if (w->type == WeightType::int8) {
            fail("shard_weights takes f32, bf16 or f16 weights, not int8: shard the unquantized weights and set the "
                 "shard config's weight_type to int8");
        }
    }
    detail::validate_weights(full, weights);
    const int64_t d = full.embed_dim;
    const detail::HeadSlices h = detail::head_slices(full, shard);
    LoadedWeights w;
    w.q_shape = {h.q_count, d}, w.kv_shape = {h.kv_count, d}, w.o_shape = {d, h.q_count};
    w.wq = copy_block(weights.wq, h.q_first, h.q_count, 0, d);
    w.wk = copy_block(weights.wk, h.kv_first, h.kv_count, 0, d);
    w.wv = copy_block(weights.wv, h.kv_first, h.kv_count, 0, d);
    w.wo = copy_block(weights.wo, 0, d, h.q_first, h.q_count);
    w.bq = copy_range(weights.bq, h.q_first, h.q_count);
    w.bk = copy_range(weights.bk, h.kv_first, h.kv_count);
    w.bv = copy_range(weights.bv, h.kv_first, h.kv_count);
    if (shard.adds_output_bias) w.bo = copy_range(weights.bo, 0, d);
    w.sinks = copy_range(weights.sinks, shard.q_begin, config.num_heads);
    w.q_norm = copy_range(weights.q_norm, 0, weights.q_norm.numel());
    w.k_norm = copy_range(weights.k_norm, 0, weights.k_norm.numel());
    return w;
}

LoadedWeights load_safetensors_shard(const std::string &path, const std::string &prefix, const Config &full,
                                     const HeadShard &shard, const ProjectionNames &names) {
    shard_config(full, shard);  // refuses a shard the layer cannot have
    return detail::load_safetensors_heads(path, prefix, full, shard, names);
}

}  // namespace gqa
