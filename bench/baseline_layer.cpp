// The baseline: the layer as a user would write it with OpenBLAS and loops, for
// comparison in the benchmarks. BLAS does the four projections; the rest is plain loops.
#include "baseline_layer.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace gqa_bench {
namespace {

std::vector<float> copy_weight(const float *data, size_t count, const char *name) {
    if (data == nullptr) throw std::invalid_argument(std::string("BaselineLayer: ") + name + " is null");
    return std::vector<float>(data, data + count);
}

std::vector<float> copy_bias(const float *data, size_t count) {
    return data == nullptr ? std::vector<float>{} : std::vector<float>(data, data + count);
}

// Resizes only upwards, so repeated calls at a size already seen allocate nothing.
void grow(std::vector<float> &buffer, size_t count) {
    if (buffer.size() < count) buffer.resize(count);
}

// out [rows, out_features] = in [rows, in_features] · wᵀ + bias, w in nn.Linear layout
// [out_features, in_features]. The bias is broadcast into out first so the GEMM adds onto it.
void linear(const float *in, int rows, int in_features, const float *w, const std::vector<float> &bias,
            int out_features, float *out) {
    float beta = 0.f;
    if (!bias.empty()) {
        for (int r = 0; r < rows; ++r) std::copy(bias.begin(), bias.end(), out + size_t(r) * out_features);
        beta = 1.f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out_features, in_features, 1.f, in, in_features, w,
                in_features, beta, out, out_features);
}

// Interleaved (torchtune) RoPE on one head: pair (e[2j], e[2j+1]) turns by angle j.
// in may equal out: each pair is read before it is written.
void rotate_pairs(const float *in, const float *cosines, const float *sines, int half, float *out) {
    for (int j = 0; j < half; ++j) {
        const float even = in[2 * j], odd = in[2 * j + 1];
        out[2 * j] = even * cosines[j] - odd * sines[j];
        out[2 * j + 1] = odd * cosines[j] + even * sines[j];
    }
}

}  // namespace

BaselineLayer::BaselineLayer(const BaselineShape &shape, const float *wq, const float *wk, const float *wv,
                             const float *wo, const float *bq, const float *bk, const float *bv)
    : shape_(shape) {
    if (shape.embed_dim <= 0 || shape.num_heads <= 0 || shape.num_kv_heads <= 0 || shape.head_dim <= 0) {
        throw std::invalid_argument("BaselineLayer: every dimension must be positive");
    }
    if (shape.num_heads % shape.num_kv_heads != 0) {
        throw std::invalid_argument("BaselineLayer: num_heads must be a multiple of num_kv_heads");
    }
    if (shape.head_dim % 2 != 0) throw std::invalid_argument("BaselineLayer: head_dim must be even for RoPE");
    if (!(shape.rope_base > 0)) throw std::invalid_argument("BaselineLayer: rope_base must be positive");

    const size_t d = shape.embed_dim, q_size = q_features(), kv_size = kv_features();
    wq_ = copy_weight(wq, q_size * d, "wq");
    wk_ = copy_weight(wk, kv_size * d, "wk");
    wv_ = copy_weight(wv, kv_size * d, "wv");
    wo_ = copy_weight(wo, d * q_size, "wo");
    bq_ = copy_bias(bq, q_size);
    bk_ = copy_bias(bk, kv_size);
    bv_ = copy_bias(bv, kv_size);

    const int half = shape.head_dim / 2;
    inv_freq_.resize(half);
    for (int j = 0; j < half; ++j) inv_freq_[j] = std::pow(shape.rope_base, -2.0 * j / shape.head_dim);
}

void BaselineLayer::setup_cache(int batch, int max_seq_len) {
    if (batch <= 0 || max_seq_len <= 0) {
        throw std::invalid_argument("BaselineLayer::setup_cache: batch and max_seq_len must be positive");
    }
    const size_t cache_size = size_t(batch) * kv_features() * max_seq_len;
    k_cache_.assign(cache_size, 0.f);
    v_cache_.assign(cache_size, 0.f);
    batch_ = batch, max_seq_ = max_seq_len, size_ = 0;
    grow(scores_, size_t(omp_get_max_threads()) * max_seq_);
}

void BaselineLayer::reset() { size_ = 0; }

int BaselineLayer::size() const { return size_; }

void BaselineLayer::append_cache(const float *k, const float *v, int n) {
    require_cache(batch_);
    if (n <= 0 || size_ + n > max_seq_) throw std::invalid_argument("BaselineLayer::append_cache: bad slot count");
    const size_t row = size_t(n) * shape_.head_dim;
    for (int b = 0; b < batch_; ++b) {
        for (int h = 0; h < shape_.num_kv_heads; ++h) {
            const size_t from = (size_t(b) * shape_.num_kv_heads + h) * row;
            std::copy_n(k + from, row, k_cache_.data() + cache_offset(b, h, size_));
            std::copy_n(v + from, row, v_cache_.data() + cache_offset(b, h, size_));
        }
    }
    size_ += n;
}

void BaselineLayer::grow_projections(int rows) {
    grow(q_, size_t(rows) * q_features());
    grow(k_, size_t(rows) * kv_features());
    grow(v_, size_t(rows) * kv_features());
    grow(z_, size_t(rows) * q_features());
}

size_t BaselineLayer::cache_offset(int b, int kv_head, int slot) const {
    return ((size_t(b) * shape_.num_kv_heads + kv_head) * max_seq_ + slot) * shape_.head_dim;
}

void BaselineLayer::require_cache(int batch) const {
    if (max_seq_ == 0) throw std::invalid_argument("BaselineLayer: call setup_cache first");
    if (batch != batch_) {
        throw std::invalid_argument("BaselineLayer: batch " + std::to_string(batch) + " but the cache holds " +
                                    std::to_string(batch_));
    }
}

void BaselineLayer::forward(const float *x, int batch, int seq_len, float *out) {
    require_cache(batch);
    if (seq_len <= 0) throw std::invalid_argument("BaselineLayer::forward: seq_len must be positive");
    if (size_ + seq_len > max_seq_) {
        throw std::invalid_argument("BaselineLayer::forward: " + std::to_string(seq_len) +
                                    " tokens overflow a cache at " + std::to_string(size_) + " of " +
                                    std::to_string(max_seq_));
    }
    const int d = shape_.embed_dim, hd = shape_.head_dim, half = hd / 2;
    const int num_heads = shape_.num_heads, num_kv_heads = shape_.num_kv_heads;
    const int q_size = q_features(), kv_size = kv_features(), rows = batch * seq_len;
    grow_projections(rows);
    grow(rope_cos_, size_t(seq_len) * half);
    grow(rope_sin_, size_t(seq_len) * half);

    linear(x, rows, d, wq_.data(), bq_, q_size, q_.data());
    linear(x, rows, d, wk_.data(), bk_, kv_size, k_.data());
    linear(x, rows, d, wv_.data(), bv_, kv_size, v_.data());

    // One cos/sin table per call, shared by every batch row and head at a position.
    const int first_slot = size_;
    for (int i = 0; i < seq_len; ++i) {
        for (int j = 0; j < half; ++j) {
            const double angle = double(first_slot + i) * inv_freq_[j];
            rope_cos_[size_t(i) * half + j] = float(std::cos(angle));
            rope_sin_[size_t(i) * half + j] = float(std::sin(angle));
        }
    }

    // Rotate q in place; rotate k straight into its cache slot and copy v beside it.
#pragma omp parallel for
    for (int r = 0; r < rows; ++r) {
        const int b = r / seq_len, i = r % seq_len;
        const float *cosines = rope_cos_.data() + size_t(i) * half, *sines = rope_sin_.data() + size_t(i) * half;
        float *q_row = q_.data() + size_t(r) * q_size;
        for (int h = 0; h < num_heads; ++h) rotate_pairs(q_row + h * hd, cosines, sines, half, q_row + h * hd);
        for (int kv_head = 0; kv_head < num_kv_heads; ++kv_head) {
            const size_t source = size_t(r) * kv_size + size_t(kv_head) * hd;
            const size_t slot = cache_offset(b, kv_head, first_slot + i);
            rotate_pairs(k_.data() + source, cosines, sines, half, k_cache_.data() + slot);
            std::copy_n(v_.data() + source, hd, v_cache_.data() + slot);
        }
    }
    size_ += seq_len;

    attention_core(q_.data(), batch, seq_len, z_.data());
    linear(z_.data(), rows, q_size, wo_.data(), {}, d, out);
}

void BaselineLayer::projections(const float *x, int batch, int seq_len, float *out) {
    const int d = shape_.embed_dim, q_size = q_features(), kv_size = kv_features(), rows = batch * seq_len;
    grow_projections(rows);
    linear(x, rows, d, wq_.data(), bq_, q_size, q_.data());
    linear(x, rows, d, wk_.data(), bk_, kv_size, k_.data());
    linear(x, rows, d, wv_.data(), bv_, kv_size, v_.data());
    linear(z_.data(), rows, q_size, wo_.data(), {}, d, out);
}

void BaselineLayer::attention_core(const float *q, int batch, int seq_len, float *z) const {
    require_cache(batch);
    if (seq_len <= 0 || seq_len > size_) {
        throw std::invalid_argument("BaselineLayer::attention_core: seq_len must be in [1, size()]");
    }
    const int num_heads = shape_.num_heads, hd = shape_.head_dim;
    const int group = num_heads / shape_.num_kv_heads, first_slot = size_ - seq_len;
    const float scale = 1.f / std::sqrt(float(hd));
    // Sized at setup_cache; grows only if the OpenMP thread count was raised since.
    const int threads = omp_get_max_threads();
    grow(scores_, size_t(threads) * max_seq_);

    // One task per query row of one head; dynamic because causal rows differ in length.
#pragma omp parallel for collapse(3) schedule(dynamic) num_threads(threads)
    for (int b = 0; b < batch; ++b) {
        for (int h = 0; h < num_heads; ++h) {
            for (int i = 0; i < seq_len; ++i) {
                const int kv_head = h / group, visible = first_slot + i + 1;  // slots t <= position
                const size_t row = ((size_t(b) * seq_len + i) * num_heads + h) * hd;
                const float *q_row = q + row;
                const float *keys = k_cache_.data() + cache_offset(b, kv_head, 0);
                const float *values = v_cache_.data() + cache_offset(b, kv_head, 0);
                float *scores = scores_.data() + size_t(omp_get_thread_num()) * max_seq_;

                float max_score = -std::numeric_limits<float>::infinity();
                for (int t = 0; t < visible; ++t) {
                    const float *key = keys + size_t(t) * hd;
                    float dot = 0.f;
                    for (int e = 0; e < hd; ++e) dot += q_row[e] * key[e];
                    scores[t] = dot * scale;
                    max_score = std::max(max_score, scores[t]);
                }
                float sum = 0.f;
                for (int t = 0; t < visible; ++t) {
                    scores[t] = std::exp(scores[t] - max_score);
                    sum += scores[t];
                }

                float *z_row = z + row;
                std::fill_n(z_row, hd, 0.f);
                for (int t = 0; t < visible; ++t) {
                    const float *value = values + size_t(t) * hd;
                    for (int e = 0; e < hd; ++e) z_row[e] += scores[t] * value[e];
                }
                const float inv_sum = 1.f / sum;
                for (int e = 0; e < hd; ++e) z_row[e] *= inv_sum;
            }
        }
    }
}

size_t BaselineLayer::weight_bytes() const {
    return sizeof(float) *
           (wq_.size() + wk_.size() + wv_.size() + wo_.size() + bq_.size() + bk_.size() + bv_.size());
}

size_t BaselineLayer::cache_bytes(int n) const {
    return 2 * sizeof(float) * size_t(batch_) * kv_features() * size_t(n);
}

}  // namespace gqa_bench
