// The baseline: the layer as a user would write it with OpenBLAS and loops, for
// comparison in the benchmarks. Same math and KV-cache layout as gqa::Attention.
#pragma once

#include <cstddef>
#include <vector>

namespace gqa_bench {

struct BaselineShape {
    int embed_dim, num_heads, num_kv_heads, head_dim;
    double rope_base = 10000.0;
};

// Grouped-query attention with interleaved RoPE and a causal KV cache
// [batch, num_kv_heads, max_seq_len, head_dim]. Query head h reads kv head
// h / (num_heads / num_kv_heads); K and V are never expanded. Not thread-safe:
// one call at a time per object (calls parallelise internally with OpenMP).
class BaselineLayer {
public:
    // Weights in nn.Linear layout [out, in]: wq [nh*hd, d], wk and wv [nkv*hd, d],
    // wo [d, nh*hd]; biases bq [nh*hd], bk and bv [nkv*hd] may be null. All are copied.
    BaselineLayer(const BaselineShape &shape, const float *wq, const float *wk, const float *wv, const float *wo,
                  const float *bq, const float *bk, const float *bv);

    void setup_cache(int batch, int max_seq_len);  // zero-filled, size() == 0
    void reset();                                  // size() = 0 (contents may stay)
    int size() const;
    // Writes k and v, [batch, num_kv_heads, n, head_dim] each, at slots [size(), size() + n).
    void append_cache(const float *k, const float *v, int n);

    // x [batch, seq_len, d] -> out [batch, seq_len, d]; appends to the cache. Throws
    // std::invalid_argument on overflow / batch mismatch / no cache.
    void forward(const float *x, int batch, int seq_len, float *out);

    // The attention core alone over the current cache: q [batch, seq_len, nh, hd]
    // already rotated, queries at slots size()-seq_len .. size()-1 (the cache already
    // holds their keys), causal; writes z [batch, seq_len, nh, hd].
    void attention_core(const float *q, int batch, int seq_len, float *z) const;

    // The four projections alone (q/k/v of x, and the output projection of z as
    // last computed), for x [batch, seq_len, d]; out [batch, seq_len, d].
    void projections(const float *x, int batch, int seq_len, float *out);

    // Bytes of weights (biases included), and of the cache prefix a decode at cache
    // size n reads (k+v, n slots, for the batch of setup_cache).
    size_t weight_bytes() const;
    size_t cache_bytes(int n) const;

private:
    int q_features() const { return shape_.num_heads * shape_.head_dim; }
    int kv_features() const { return shape_.num_kv_heads * shape_.head_dim; }
    size_t cache_offset(int b, int kv_head, int slot) const;
    void grow_projections(int rows);  // q_, k_, v_, z_ for `rows` tokens
    void require_cache(int batch) const;

    BaselineShape shape_;
    std::vector<float> wq_, wk_, wv_, wo_, bq_, bk_, bv_;  // biases empty when absent
    std::vector<double> inv_freq_;                        // base^(-2j/hd), j in [0, hd/2)

    std::vector<float> k_cache_, v_cache_;
    int batch_ = 0, max_seq_ = 0, size_ = 0;

    // Per-call scratch, grown to the largest call seen and never shrunk.
    std::vector<float> q_, k_, v_, z_;        // [batch * seq_len, features]
    std::vector<float> rope_cos_, rope_sin_;  // [seq_len, hd/2] for this call's positions
    mutable std::vector<float> scores_;       // [threads, max_seq]: one softmax row per thread
};

}  // namespace gqa_bench
