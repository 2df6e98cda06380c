// The contract between the layer object (attention.cpp), which validates every
// input and owns the KV cache, and the backends, which only compute. Calls reach a
// backend already checked; a backend throws gqa::Error only for its own failures.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gqa/attention.hpp"
#include "kv_cache.h"

namespace gqa::detail {

// The inverse frequency of each rotated pair after rope_scaling (or the config's
// own), and the attention factor on cos and sin; from an already validated config.
struct RopeFrequencies {
    std::vector<double> inv_freq;
    double attention_factor = 1;
};
RopeFrequencies rope_frequencies(const Config &config);

// RoPE as per-dim tables (see generators/attention_algorithm.h, rotate()):
// cos/sin [positions, head_dim] row-major, sign folded into sin, pass-through
// dims cos 1 sin 0.
struct RopeTables {
    int head_dim = 0, positions = 0, style = 0, rotary_dim = 0;
    // What the tables hold, for a backend that computes the angles itself.
    RopeFrequencies frequencies;
    std::vector<float> cos, sin;
};
RopeTables make_rope_tables(const Config &config);

// x [b*s, d] -> q [b*s, n_h, hd] rotated; token m's k (rotated) and v into slot
// dest_slots[m] of row dest_rows[m] of `kv`.
struct ProjectCall {
    const float *x;
    int batch, seq_len;
    const int32_t *positions;  // [b*s], each in [0, rope.positions)
    float *q;
    KvCache *kv;  // the layer's cache (or a paged cache's pool), or scratch standing in for one
    const int32_t *dest_slots, *dest_rows;  // [b*s]
    int qk_norm;  // layout::kQkNorm*: q and k normalised before RoPE, with the weights' q_norm / k_norm
    float qk_norm_eps;
};

// q [b, s, n_h, hd], row b against its key slots [0, kv_lens[b]) -> z [b, s, n_h, hd]
// (+ pattern [b, n_h, s, kv_len] when non-null). Query i of row b is in key slot
// kv_lens[b] - s + i. Key slot t of row b lies in cache slot
//   t + granules[b * granule_row_stride + t / kCacheGranule]
// of the cache's row b, or of its only row where `pooled` (a paged cache's pool).
// Each row's granule_count entries cover kv_len rounded up to kKeySlotPadding, and
// those slots lie inside the cache.
struct AttendCall {
    const float *q;
    int batch, seq_len;
    const KvCache *kv;
    int kv_len;              // the largest kv_lens[b]
    const int32_t *kv_lens;  // [b]; where seq_len > 1 (prefill), every row's is kv_len
    const int32_t *granules;
    int granule_count;
    int64_t granule_row_stride;  // 0: one table for every row (a contiguous cache's zeros)
    bool pooled;
    const uint8_t *mask;     // [b, s, mask_len] or null
    int mask_len;
    bool causal;
    int window;              // 0: none
    float scale, softcap;    // softcap 0: none
    float *z;
    // Both or neither: the pattern and the scores [b, n_h, s, kv_len] it came from
    // (TransformerLens hook_attn_scores: -inf where a key is not visible).
    float *pattern, *scores;
    // The recording forward's: q comes from the host, and z, the pattern and the
    // scores are on the host when the call returns.
    bool host_io;
};

// z [b*s, n_h*hd] -> out [b*s, d]
struct OutputCall {
    const float *z;
    int batch, seq_len;
    float *out;
    bool z_from_host;  // the recording forward's z, possibly patched, not the last attend's
};

// The recording forward's stages (TransformerLens hooks), all on host memory.
// The projection before RoPE: q [tokens, n_h, hd], k and v [tokens, n_kv, hd];
// query head h reads x_q [tokens, n_h, d] at h, kv head j x_k and x_v [tokens,
// n_kv, d] at j, or with !split all three are one x [tokens, d].
struct ProjectHeadsCall {
    const float *x_q, *x_k, *x_v;
    bool split;
    int tokens;
    int qk_norm;  // as ProjectCall's
    float qk_norm_eps;
    float *q, *k, *v;
};

// Rotated k and v [b*s, n_kv, hd] into the cache, token m into slot dest_slots[m]
// of row dest_rows[m], as ProjectCall stores them.
struct StoreCall {
    const float *k, *v;
    int batch, seq_len;
    KvCache *kv;
    const int32_t *dest_slots, *dest_rows;
};

// z [b, s, n_h, hd] = pattern [b, n_h, s, kv_len] times values v(d, t, kvh, b) at
// v[b * row_stride + kvh * head_stride + t * slot_stride + d], every key slot.
struct WeighValuesCall {
    const float *pattern, *v;
    int batch, seq_len, kv_len;
    int64_t slot_stride, head_stride, row_stride;
    float *z;
};

// Each head's share of the output projection, without the bias: z [tokens, n_h * hd]
// -> result [tokens, n_h, d].
struct HeadResultsCall {
    const float *z;
    int tokens;
    float *result;
};

// x [tokens, heads, hd] -> out, rotated at positions[tokens].
struct RopeCall {
    const float *x;
    int tokens, heads, head_dim;
    const int32_t *positions;
    float *out;
};

// Arrays a backend may hold in device memory, newer than the layer's host copy.
enum class HostArray { kv_cache, z, pattern };

class Kernels {
public:
    virtual ~Kernels() = default;
    virtual void project(const ProjectCall &call) = 0;
    virtual void attend(const AttendCall &call) = 0;
    virtual void output(const OutputCall &call) = 0;
    virtual void project_heads(const ProjectHeadsCall &call) = 0;
    virtual void store(const StoreCall &call) = 0;
    virtual void weigh_values(const WeighValuesCall &call) = 0;
    virtual void head_results(const HeadResultsCall &call) = 0;
    // Brings the layer's host copy of `array` up to date before the caller reads it
    // (the KV cache, or z / pattern of the last attend). Host backends hold it already.
    virtual void copy_to_host(HostArray) {}
    // The z and pattern of the last attend become the ones copy_to_host reads: the
    // layer calls this once every stage of a forward succeeded, so a failed one
    // leaves the previous results readable.
    virtual void commit() {}
    // Whether this build holds the pipelines for a cache of `type`.
    virtual bool supports_cache(CacheType) const { return true; }
    // Returns once the work of the calls above has finished: a GPU backend only
    // queues it, so whoever times the kernels alone (the bench) waits here.
    virtual void finish() {}
};

}  // namespace gqa::detail
