// The reference backend: plain loops in double precision, written for reading,
// not speed. It is the oracle of every test. RoPE is computed from its
// definition here, not from the tables the pipelines use.
#include <cmath>
#include <limits>

#include "layout.h"
#include "backend_registry.h"

namespace gqa::detail {
namespace {

// Rotates the pairs of one head at position pos: interleaved (2j, 2j+1) or
// rotate-half (j, j + R/2), by the angle pos * inv_freq_j, cos and sin times the
// attention factor.
void rotate(const RopeTables &rope, double *head, int pos) {
    if (rope.style == layout::kRopeNone) return;
    const int half = rope.rotary_dim / 2;
    for (int j = 0; j < half; ++j) {
        const RopeFrequencies &f = rope.frequencies;
        const double angle = pos * f.inv_freq[j];
        const double cos = std::cos(angle) * f.attention_factor, sin = std::sin(angle) * f.attention_factor;
        const int a = rope.style == layout::kRopeInterleaved ? 2 * j : j;
        const int b = rope.style == layout::kRopeInterleaved ? 2 * j + 1 : j + half;
        const double xa = head[a], xb = head[b];
        head[a] = xa * cos - xb * sin;
        head[b] = xb * cos + xa * sin;
    }
}

class ReferenceKernels final : public Kernels {
public:
    ReferenceKernels(const LayerDims &dims, const Weights &w, const RopeTables &rope) : dims_(dims), rope_(rope) {
        auto copy = [](const TensorView<float> &t) {
            return t.data ? std::vector<float>(t.data, t.data + t.numel()) : std::vector<float>();
        };
        // The stored values, widened: what the pipelines compute from.
        auto widen = [](const WeightView &t) {
            std::vector<float> values(size_t(t.numel()));
            for (size_t i = 0; i < values.size(); ++i) values[i] = t.value(int64_t(i));
            return values;
        };
        wq_ = widen(w.wq), wk_ = widen(w.wk), wv_ = widen(w.wv), wo_ = widen(w.wo);
        bq_ = copy(w.bq), bk_ = copy(w.bk), bv_ = copy(w.bv), bo_ = copy(w.bo);
        sinks_ = copy(w.sinks);
        q_norm_ = copy(w.q_norm), k_norm_ = copy(w.k_norm);
    }

    void project(const ProjectCall &c) override {
        const int d = dims_.embed_dim, hd = dims_.head_dim;
        std::vector<double> q(dims_.q_width()), k(dims_.kv_width()), v(dims_.kv_width());
        std::vector<float> k_slot(hd), v_slot(hd);  // one kv head's k and v in fp32, as the pipelines hold them
        for (int b = 0; b < c.batch; ++b) {
            for (int s = 0; s < c.seq_len; ++s) {
                const int token = b * c.seq_len + s;
                const float *x = c.x + static_cast<size_t>(token) * d;
                project_token(x, x, x, 0, c.qk_norm, c.qk_norm_eps, q, k, v);
                const int pos = c.positions[token];
                for (int h = 0; h < dims_.num_heads; ++h) {
                    rotate(rope_, &q[h * hd], pos);
                    for (int e = 0; e < hd; ++e) c.q[(static_cast<size_t>(token) * dims_.num_heads + h) * hd + e] = float(q[h * hd + e]);
                }
                for (int h = 0; h < dims_.num_kv_heads; ++h) {
                    rotate(rope_, &k[h * hd], pos);
                    for (int e = 0; e < hd; ++e) k_slot[e] = float(k[h * hd + e]), v_slot[e] = float(v[h * hd + e]);
                    const size_t slot = c.kv->slot_index(c.dest_rows[token], h, c.dest_slots[token]);
                    c.kv->store(c.kv->k(), slot, k_slot.data());
                    c.kv->store(c.kv->v(), slot, v_slot.data());
                }
            }
        }
    }

    void project_heads(const ProjectHeadsCall &c) override {
        const int d = dims_.embed_dim;
        std::vector<double> q(dims_.q_width()), k(dims_.kv_width()), v(dims_.kv_width());
        for (int m = 0; m < c.tokens; ++m) {
            const size_t q_heads = c.split ? dims_.num_heads : 1, kv_heads = c.split ? dims_.num_kv_heads : 1;
            project_token(c.x_q + m * q_heads * d, c.x_k + m * kv_heads * d, c.x_v + m * kv_heads * d,
                          c.split ? d : 0, c.qk_norm, c.qk_norm_eps, q, k, v);
            for (int o = 0; o < dims_.q_width(); ++o) c.q[size_t(m) * dims_.q_width() + o] = float(q[o]);
            for (int o = 0; o < dims_.kv_width(); ++o) {
                c.k[size_t(m) * dims_.kv_width() + o] = float(k[o]);
                c.v[size_t(m) * dims_.kv_width() + o] = float(v[o]);
            }
        }
    }

    void store(const StoreCall &c) override {
        const int hd = dims_.head_dim;
        for (int m = 0; m < c.batch * c.seq_len; ++m) {
            for (int h = 0; h < dims_.num_kv_heads; ++h) {
                const size_t at = (size_t(m) * dims_.num_kv_heads + h) * hd;
                const size_t slot = c.kv->slot_index(c.dest_rows[m], h, c.dest_slots[m]);
                c.kv->store(c.kv->k(), slot, c.k + at);
                c.kv->store(c.kv->v(), slot, c.v + at);
            }
        }
    }

    void weigh_values(const WeighValuesCall &c) override {
        const int hd = dims_.head_dim, g = dims_.group();
        for (int b = 0; b < c.batch; ++b) {
            for (int i = 0; i < c.seq_len; ++i) {
                for (int h = 0; h < dims_.num_heads; ++h) {
                    const float *p = c.pattern + ((size_t(b) * dims_.num_heads + h) * c.seq_len + i) * c.kv_len;
                    float *z = c.z + ((size_t(b) * c.seq_len + i) * dims_.num_heads + h) * hd;
                    for (int e = 0; e < hd; ++e) {
                        double acc = 0;
                        for (int t = 0; t < c.kv_len; ++t) {
                            acc += double(p[t]) * c.v[b * c.row_stride + (h / g) * c.head_stride + t * c.slot_stride + e];
                        }
                        z[e] = float(acc);
                    }
                }
            }
        }
    }

    void head_results(const HeadResultsCall &c) override {
        const int hd = dims_.head_dim, d = dims_.embed_dim, width = dims_.q_width();
        for (int m = 0; m < c.tokens; ++m) {
            for (int h = 0; h < dims_.num_heads; ++h) {
                for (int o = 0; o < d; ++o) {
                    double acc = 0;
                    for (int e = 0; e < hd; ++e) {
                        acc += double(c.z[size_t(m) * width + h * hd + e]) * wo_[size_t(o) * width + h * hd + e];
                    }
                    c.result[(size_t(m) * dims_.num_heads + h) * d + o] = float(acc);
                }
            }
        }
    }

    void attend(const AttendCall &c) override {
        const int hd = dims_.head_dim, g = dims_.group();
        std::vector<double> scores(c.kv_len), z(hd);
        std::vector<bool> visible(c.kv_len);
        constexpr int G = layout::kCacheGranule;
        for (int b = 0; b < c.batch; ++b) {
            const int kv_len = c.kv_lens[b];
            // Where key slot t of this row lies in the cache.
            auto slot_of = [&](int kvh, int t) {
                return c.kv->slot_index(c.pooled ? 0 : b, kvh, t + c.granules[b * c.granule_row_stride + t / G]);
            };
            for (int i = 0; i < c.seq_len; ++i) {
                const int query_slot = kv_len - c.seq_len + i;
                for (int h = 0; h < dims_.num_heads; ++h) {
                    const int kvh = h / g;
                    const float *q = c.q + ((static_cast<size_t>(b) * c.seq_len + i) * dims_.num_heads + h) * hd;
                    double max_score = -std::numeric_limits<double>::infinity();
                    bool sees_any = false;
                    if (c.scores) {
                        std::fill_n(c.scores + row_start(c, b, h, i), c.kv_len, -std::numeric_limits<float>::infinity());
                    }
                    for (int t = 0; t < c.kv_len; ++t) {
                        visible[t] = t < kv_len &&
                                     (!c.mask || c.mask[(static_cast<size_t>(b) * c.seq_len + i) * c.mask_len + t]) &&
                                     (!c.causal || t <= query_slot) && (c.window <= 0 || t > query_slot - c.window);
                        if (!visible[t]) continue;
                        sees_any = true;
                        const size_t k = slot_of(kvh, t);
                        double dot = 0;
                        for (int e = 0; e < hd; ++e) dot += double(q[e]) * c.kv->load(c.kv->k(), k, e);
                        double score = dot * c.scale;
                        if (c.softcap > 0) score = c.softcap * std::tanh(score / c.softcap);
                        scores[t] = score;
                        if (c.scores) c.scores[row_start(c, b, h, i) + t] = float(score);
                        // A NaN score must reach the output (NaN propagates), so
                        // it becomes the max rather than being skipped by std::max.
                        max_score = std::isnan(score) ? score : std::max(max_score, score);
                    }
                    // The sink joins the denominator (and the max, unless that is NaN).
                    double sum = 0;
                    if (!sinks_.empty()) {
                        if (!std::isnan(max_score)) max_score = std::max(max_score, double(sinks_[h]));
                        sum = std::exp(sinks_[h] - max_score);
                    }
                    for (int t = 0; t < c.kv_len; ++t) {
                        scores[t] = visible[t] ? std::exp(scores[t] - max_score) : 0.0;
                        sum += scores[t];
                    }
                    std::fill(z.begin(), z.end(), 0.0);
                    for (int t = 0; t < c.kv_len; ++t) {
                        // A query that sees no key outputs 0; the others divide even
                        // a NaN sum, so a NaN key reaches every query that sees it.
                        const double p = sees_any ? scores[t] / sum : 0.0;
                        if (c.pattern) c.pattern[row_start(c, b, h, i) + t] = float(p);
                        if (!visible[t]) continue;
                        const size_t v = slot_of(kvh, t);
                        for (int e = 0; e < hd; ++e) z[e] += p * c.kv->load(c.kv->v(), v, e);
                    }
                    float *z_out = c.z + ((static_cast<size_t>(b) * c.seq_len + i) * dims_.num_heads + h) * hd;
                    for (int e = 0; e < hd; ++e) z_out[e] = float(z[e]);
                }
            }
        }
    }

    void output(const OutputCall &c) override {
        std::vector<double> out(dims_.embed_dim);
        for (int m = 0; m < c.batch * c.seq_len; ++m) {
            linear(c.z + static_cast<size_t>(m) * dims_.q_width(), wo_, bo_, out);
            for (int e = 0; e < dims_.embed_dim; ++e) c.out[static_cast<size_t>(m) * dims_.embed_dim + e] = float(out[e]);
        }
    }

private:
    // Where query i of head h in row b starts in the pattern and the scores.
    size_t row_start(const AttendCall &c, int b, int h, int i) const {
        return ((static_cast<size_t>(b) * dims_.num_heads + h) * c.seq_len + i) * c.kv_len;
    }

    // One token's q, k and v before RoPE (after the norms). Query head h reads
    // x_q + h * head_step, kv head j x_k + j * head_step and x_v + j * head_step.
    void project_token(const float *x_q, const float *x_k, const float *x_v, size_t head_step, int qk_norm,
                       double qk_norm_eps, std::vector<double> &q, std::vector<double> &k,
                       std::vector<double> &v) const {
        const int hd = dims_.head_dim;
        for (int h = 0; h < dims_.num_heads; ++h) linear(x_q + h * head_step, wq_, bq_, q, h * hd, hd);
        for (int h = 0; h < dims_.num_kv_heads; ++h) {
            linear(x_k + h * head_step, wk_, bk_, k, h * hd, hd);
            linear(x_v + h * head_step, wv_, bv_, v, h * hd, hd);
        }
        if (qk_norm != layout::kQkNormNone) {
            const bool per_head = qk_norm == layout::kQkNormPerHead;
            rms_normalise(q, q_norm_, per_head ? hd : dims_.q_width(), qk_norm_eps);
            rms_normalise(k, k_norm_, per_head ? hd : dims_.kv_width(), qk_norm_eps);
        }
    }

    // Each run of `group` values of `values`: x_e * w_e / sqrt(mean(x^2) + eps),
    // with w the group's weight.
    static void rms_normalise(std::vector<double> &values, const std::vector<float> &weight, int group, double eps) {
        for (size_t first = 0; first < values.size(); first += group) {
            double sum_squares = 0;
            for (int e = 0; e < group; ++e) sum_squares += values[first + e] * values[first + e];
            const double inv_rms = 1.0 / std::sqrt(sum_squares / group + eps);
            for (int e = 0; e < group; ++e) values[first + e] *= inv_rms * weight[e];
        }
    }

    // out[o] = b[o] + sum_i x[i] * w[o][i], for the `rows` outputs from `first` (all without them)
    void linear(const float *x, const std::vector<float> &w, const std::vector<float> &bias,
                std::vector<double> &out, size_t first = 0, size_t rows = 0) const {
        const size_t in = w.size() / out.size();
        for (size_t o = first; o < (rows ? first + rows : out.size()); ++o) {
            double acc = bias.empty() ? 0.0 : bias[o];
            for (size_t i = 0; i < in; ++i) acc += double(x[i]) * w[o * in + i];
            out[o] = acc;
        }
    }

    LayerDims dims_;
    const RopeTables &rope_;
    std::vector<float> wq_, wk_, wv_, wo_, bq_, bk_, bv_, bo_, sinks_, q_norm_, k_norm_;
};

void reference_rope(const RopeTables &rope, const RopeCall &c) {
    std::vector<double> head(c.head_dim);
    for (int m = 0; m < c.tokens; ++m) {
        for (int h = 0; h < c.heads; ++h) {
            const size_t at = (static_cast<size_t>(m) * c.heads + h) * c.head_dim;
            for (int e = 0; e < c.head_dim; ++e) head[e] = c.x[at + e];
            rotate(rope, head.data(), c.positions[m]);
            for (int e = 0; e < c.head_dim; ++e) c.out[at + e] = float(head[e]);
        }
    }
}

std::unique_ptr<Kernels> make_reference_kernels(const LayerDims &dims, const Weights &weights,
                                                const RopeTables &rope) {
    return std::make_unique<ReferenceKernels>(dims, weights, rope);
}

}  // namespace

BackendEntry reference_backend_entry() {
    return {.backend = Backend::reference,
            .unavailable_reason = [] { return std::string(); },
            .isa = [] { return std::string(); },
            .make_kernels = make_reference_kernels,
            .rope = reference_rope};
}

}  // namespace gqa::detail
