// gqa::Attention: validates every input before anything is written, owns the KV
// cache and the per-call scratch (grown, never shrunk, so a steady stream of calls
// allocates nothing), and runs the three stages on the chosen backend.
#include <algorithm>
#include <climits>
#include <cmath>
#include <initializer_list>
#include <new>
#include <stdexcept>
#include <sstream>
#include <utility>

#include "../generators/layout.h"
#include "aligned_vector.h"
#include "backend_registry.h"
#include "test_hooks.h"

namespace gqa {

using detail::LayerDims;
using detail::RopeTables;

namespace {

template <typename... Parts>
[[noreturn]] void fail(const Parts &...parts) {
    std::ostringstream s;
    (s << ... << parts);
    throw Error(s.str());
}

void require_positive(const char *name, double value) {
    if (!(value > 0)) fail(name, " is ", value, "; expected > 0");
}

void require_finite(const char *name, double value) {
    if (!std::isfinite(value)) fail(name, " is ", value, "; expected a finite number");
}

// Halide addresses every array the pipelines see with 32-bit extents and strides,
// so none may hold more elements than this; the layer refuses larger ones up front.
constexpr int64_t kMaxArrayElements = INT32_MAX;

// The product of `factors` (each >= 0), or -1 when it exceeds kMaxArrayElements.
int64_t elements_within_limit(std::initializer_list<int64_t> factors) {
    int64_t product = 1;
    for (int64_t f : factors) {
        if (f != 0 && product > kMaxArrayElements / f) return -1;
        product *= f;
    }
    return product;
}

// `name` of `factors` elements: refused when over the limit, with how it was sized.
void require_array_size(const char *name, std::initializer_list<int64_t> factors, const char *sized_by) {
    if (elements_within_limit(factors) >= 0) return;
    fail(name, " would hold more than ", kMaxArrayElements, " elements (", sized_by,
         "), the most a Halide buffer addresses");
}

// A KV cache or the scratch standing in for one (kv_cache.h).
void require_kv_store_size(const char *name, const LayerDims &d, int64_t batch, int64_t capacity) {
    if (detail::KvCache::elements(d, batch, capacity, kMaxArrayElements)) return;
    fail(name, " would hold more than ", kMaxArrayElements, " elements (batch ", batch, " x num_kv_heads ",
         d.num_kv_heads, " x ", capacity, " slots x head_dim ", d.head_dim, "), the most a Halide buffer addresses");
}

// Allocations report a failure as gqa::Error naming what they were for.
template <typename Allocate>
void allocate(const char *what, size_t elements, size_t element_bytes, Allocate &&allocation) {
    try {
        allocation();
    } catch (const std::bad_alloc &) {
        fail("could not allocate ", elements * element_bytes, " bytes for ", what);
    } catch (const std::length_error &) {
        fail("could not allocate ", elements * element_bytes, " bytes for ", what);
    }
}

int effective_rotary_dim(const Config &c) {
    return c.rope_style == RopeStyle::none ? 0 : (c.rotary_dim == 0 ? c.head_dim : c.rotary_dim);
}

void validate_rope(const Config &c) {
    require_positive("head_dim", c.head_dim);
    require_positive("max_seq_len", c.max_seq_len);
    if (c.rope_style == RopeStyle::none) return;
    require_finite("rope_base", c.rope_base);
    require_positive("rope_base", c.rope_base);
    if (c.rotary_dim == 0 && c.head_dim % 2 != 0) {
        fail("head_dim is ", c.head_dim, " with RoPE, which rotates pairs; expected an even head_dim, or an even ",
             "rotary_dim below it");
    }
    const int rotary = effective_rotary_dim(c);
    if (rotary <= 0 || rotary % 2 != 0 || rotary > c.head_dim) {
        fail("rotary_dim is ", rotary, " (head_dim ", c.head_dim, "); expected an even number in [2, head_dim]");
    }
}

void validate_config(const Config &c) {
    require_positive("embed_dim", c.embed_dim);
    require_positive("num_heads", c.num_heads);
    require_positive("num_kv_heads", c.num_kv_heads);
    if (c.num_heads % c.num_kv_heads != 0) {
        fail("num_heads (", c.num_heads, ") must be a multiple of num_kv_heads (", c.num_kv_heads, ")");
    }
    validate_rope(c);
    require_array_size("the RoPE table", {c.max_seq_len, c.head_dim}, "max_seq_len x head_dim");
    require_array_size("wq", {c.num_heads, c.head_dim, c.embed_dim}, "num_heads x head_dim x embed_dim");
    if (c.window && *c.window <= 0) fail("window is ", *c.window, "; expected > 0, or unset for no sliding window");
    require_finite("scale", c.scale);
    if (c.scale < 0) fail("scale is ", c.scale, "; expected > 0, or 0 for 1/sqrt(head_dim)");
    require_finite("softcap", c.softcap);
    if (c.softcap < 0) fail("softcap is ", c.softcap, "; expected > 0, or 0 for none");
    if (c.layer_id < -1) fail("layer_id is ", c.layer_id, "; expected >= 0, or -1 for no layer scaling");
}

void validate_tensor(const char *name, const TensorView<float> &t, std::vector<int64_t> expected, bool optional) {
    if (optional && !t.data && t.shape.empty()) return;
    if (!t.data) fail(name, " has no data");
    if (t.shape != expected) fail(name, " has shape ", shape_string(t.shape), "; expected ", shape_string(expected));
}

void validate_weights(const Config &c, const Weights &w) {
    const int64_t q = int64_t(c.num_heads) * c.head_dim, kv = int64_t(c.num_kv_heads) * c.head_dim, d = c.embed_dim;
    validate_tensor("wq", w.wq, {q, d}, false);
    validate_tensor("wk", w.wk, {kv, d}, false);
    validate_tensor("wv", w.wv, {kv, d}, false);
    validate_tensor("wo", w.wo, {d, q}, false);
    validate_tensor("bq", w.bq, {q}, true);
    validate_tensor("bk", w.bk, {kv}, true);
    validate_tensor("bv", w.bv, {kv}, true);
    validate_tensor("bo", w.bo, {d}, true);
}

Backend resolve_backend(Backend backend) {
    if (backend == Backend::best) return available_backends().back();
    const std::string reason = backend_unavailable_reason(backend);
    if (!reason.empty()) fail("backend '", backend_name(backend), "' cannot run here: ", reason);
    return backend;
}

// Positions for RoPE, one per token of x: input_pos [s], [b, s], [b] (s == 1), or
// the cache slots first_slot + i. Each must be < position_limit (the RoPE table's
// length, or the cache's when smaller).
void fill_positions(const std::optional<TensorView<int32_t>> &input_pos, int batch, int seq_len, int first_slot,
                    int position_limit, const char *limit_name, std::vector<int32_t> &positions) {
    positions.resize(size_t(batch) * seq_len);
    if (!input_pos) {
        if (first_slot + seq_len > position_limit) {
            fail("position ", first_slot + seq_len - 1, " is not below ", limit_name, " (", position_limit, ")");
        }
        for (int b = 0; b < batch; ++b) {
            for (int i = 0; i < seq_len; ++i) positions[size_t(b) * seq_len + i] = first_slot + i;
        }
        return;
    }
    const auto &shape = input_pos->shape;
    const bool shared = shape == std::vector<int64_t>{seq_len};
    const bool per_sample = shape == std::vector<int64_t>{batch, seq_len} || (seq_len == 1 && shape == std::vector<int64_t>{batch});
    if (!input_pos->data) fail("input_pos has no data");
    if (!shared && !per_sample) {
        fail("input_pos has shape ", shape_string(shape), "; expected [", seq_len, "] or [", batch, ", ", seq_len, "]");
    }
    for (int b = 0; b < batch; ++b) {
        for (int i = 0; i < seq_len; ++i) {
            const int32_t p = input_pos->data[shared ? i : size_t(b) * seq_len + i];
            if (p < 0 || p >= position_limit) {
                fail("input_pos holds ", p, "; expected a position in [0, ", position_limit, ") (", limit_name, ")");
            }
            positions[size_t(b) * seq_len + i] = p;
        }
    }
}

// A cache's tokens sit in slot order, so each batch row's positions must increase
// from one token to the next, across calls: `last` holds the latest per row (-1 for
// none yet).
void require_increasing(const std::vector<int32_t> &positions, const std::vector<int32_t> &last, int batch,
                        int seq_len) {
    for (int b = 0; b < batch; ++b) {
        int32_t previous = last[b];
        for (int i = 0; i < seq_len; ++i) {
            const int32_t p = positions[size_t(b) * seq_len + i];
            if (p <= previous) {
                fail("position ", p, " of batch row ", b, " follows position ", previous,
                     " in the KV cache; expected positions that increase token by token");
            }
            previous = p;
        }
    }
}

template <typename T>
void grow(detail::AlignedVector<T> &v, size_t n, const char *what) {
    if (v.size() < n) allocate(what, n, sizeof(T), [&] { v.resize(n); });
}

}  // namespace

namespace detail {

RopeTables make_rope_tables(const Config &c) {
    RopeTables t;
    t.head_dim = c.head_dim;
    t.positions = c.max_seq_len;
    t.rotary_dim = effective_rotary_dim(c);
    t.base = c.rope_base;
    t.style = c.rope_style == RopeStyle::interleaved   ? layout::kRopeInterleaved
              : c.rope_style == RopeStyle::rotate_half ? layout::kRopeRotateHalf
                                                       : layout::kRopeNone;
    t.cos.assign(size_t(t.positions) * t.head_dim, 1.f);
    t.sin.assign(size_t(t.positions) * t.head_dim, 0.f);
    const int half = t.rotary_dim / 2;
    for (int p = 0; p < t.positions; ++p) {
        float *cos_row = &t.cos[size_t(p) * t.head_dim], *sin_row = &t.sin[size_t(p) * t.head_dim];
        for (int j = 0; j < half; ++j) {
            float cos_value, sin_value;
            if (c.rope_fp32_angles) {
                // torchtune: theta = 1 / base ** (arange(0, R, 2).float() / R), then
                // positions.float() * theta, all fp32.
                const float theta = 1.f / std::pow(float(c.rope_base), float(2 * j) / float(t.rotary_dim));
                const float angle = float(p) * theta;
                cos_value = std::cos(angle), sin_value = std::sin(angle);
            } else {
                // In double, then rounded once: the fp64 math the conformance vectors use.
                const double angle = p * std::pow(c.rope_base, -2.0 * j / t.rotary_dim);
                cos_value = float(std::cos(angle)), sin_value = float(std::sin(angle));
            }
            const int a = t.style == layout::kRopeInterleaved ? 2 * j : j;
            const int b = t.style == layout::kRopeInterleaved ? 2 * j + 1 : j + half;
            cos_row[a] = cos_row[b] = cos_value;
            sin_row[a] = -sin_value;
            sin_row[b] = sin_value;
        }
    }
    return t;
}

}  // namespace detail

std::string shape_string(const std::vector<int64_t> &shape) {
    std::ostringstream s;
    s << '[';
    for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
    s << ']';
    return s.str();
}

std::string_view backend_name(Backend backend) {
    switch (backend) {
    case Backend::reference: return "reference";
    case Backend::x86: return "x86";
    case Backend::arm: return "arm";
    case Backend::cuda: return "cuda";
    case Backend::best: return "best";
    }
    return "unknown";
}

Backend backend_from_name(std::string_view name) {
    for (Backend b : {Backend::reference, Backend::x86, Backend::arm, Backend::cuda, Backend::best}) {
        if (backend_name(b) == name) return b;
    }
    fail("unknown backend '", name, "'; expected reference, x86, arm, cuda or best");
}

std::vector<Backend> available_backends() {
    std::vector<Backend> backends;
    for (const detail::BackendEntry &entry : detail::built_backends()) {
        if (entry.unavailable_reason().empty()) backends.push_back(entry.backend);
    }
    return backends;
}

bool backend_built(Backend backend) {
    return backend == Backend::best || detail::built_backend(backend) != nullptr;
}

std::string backend_unavailable_reason(Backend backend) {
    if (backend == Backend::best) return "";
    const detail::BackendEntry *entry = detail::built_backend(backend);
    return entry ? entry->unavailable_reason() : "it is not built into this library";
}

std::string backend_isa(Backend backend) {
    return detail::built_backend(resolve_backend(backend))->isa();
}

namespace detail {

const BackendEntry *built_backend(Backend backend) {
    for (const BackendEntry &entry : built_backends()) {
        if (entry.backend == backend) return &entry;
    }
    return nullptr;
}

}  // namespace detail

struct Attention::State {
    Config config;
    LayerDims dims;
    Backend backend;
    RopeTables rope;
    std::unique_ptr<detail::Kernels> kernels;
    double scale = 0;

    detail::KvCache cache;  // allocated() once set up
    int cache_size = 0;
    std::vector<int32_t> last_position;  // per batch row, of the latest token forward wrote; -1: none

    // Per-call scratch. A forward writes z and the pattern into the spares, which
    // become z and pattern only once every stage succeeded.
    detail::AlignedVector<float> q, z, pattern, z_spare, pattern_spare;
    detail::KvCache scratch;  // k and v of a call without a cache
    std::vector<int32_t> positions;
    bool record_pattern = false;
    int last_batch = 0, last_seq_len = 0, last_kv_len = 0;
    bool has_pattern = false;

    // Undoes what a failed forward wrote to the cache: its slots [first, first +
    // count), past size(), are zero again on the host, and a device copy is
    // replaced from there. If the device cannot even return its copy, that copy
    // keeps the failed call's values past size(); every later call overwrites a
    // slot before it reads it.
    void discard_slots(int first, int count) noexcept {
        try {
            cache.pull(*kernels);
        } catch (const Error &) {
            return;
        }
        cache.zero_slots(first, count);
    }
};

namespace detail {

namespace {
thread_local ForwardStage injected_failure = ForwardStage::none;
}

void fail_next_forward_after(ForwardStage stage) {
    injected_failure = stage;
}

}  // namespace detail

Attention::Attention(const Config &config, const Weights &weights, Backend backend) : state_(nullptr) {
    validate_config(config);
    validate_weights(config, weights);
    auto s = std::make_unique<State>();
    s->config = config;
    s->dims = {config.embed_dim, config.num_heads, config.num_kv_heads, config.head_dim};
    s->backend = resolve_backend(backend);
    s->rope = detail::make_rope_tables(config);
    s->scale = (config.scale > 0 ? config.scale : 1.0 / std::sqrt(double(config.head_dim))) /
               (config.layer_id >= 0 ? config.layer_id + 1 : 1);
    s->kernels = detail::built_backend(s->backend)->make_kernels(s->dims, weights, s->rope);
    state_ = s.release();
}

Attention::~Attention() {
    delete state_;
}

Attention::Attention(Attention &&other) noexcept : state_(std::exchange(other.state_, nullptr)) {}

Attention &Attention::operator=(Attention &&other) noexcept {
    std::swap(state_, other.state_);
    return *this;
}

void Attention::setup_cache(int batch_size, int max_seq_len, CacheType type) {
    require_positive("cache batch_size", batch_size);
    require_positive("cache max_seq_len", max_seq_len);
    if (type != CacheType::f32 && type != CacheType::f16) {
        fail("cache type is ", int(type), "; expected CacheType::f32 or CacheType::f16");
    }
    State &s = *state_;
    require_kv_store_size("the KV cache's k and v", s.dims, batch_size, max_seq_len);
    const size_t elements = size_t(*detail::KvCache::elements(s.dims, batch_size, max_seq_len, kMaxArrayElements));
    allocate("the KV cache", 2 * elements, type == CacheType::f16 ? sizeof(uint16_t) : sizeof(float),
             [&] { s.cache.allocate(s.dims, type, batch_size, max_seq_len); });
    s.cache_size = 0;
    s.last_position.assign(batch_size, -1);
}

bool Attention::has_cache() const {
    return state_->cache.allocated();
}

void Attention::remove_cache() {
    State &s = *state_;
    s.cache.release();
    s.cache_size = 0;
    s.last_position.clear();
}

void Attention::reset() {
    State &s = *state_;
    s.cache.zero();
    s.cache_size = 0;
    std::fill(s.last_position.begin(), s.last_position.end(), -1);
}

void Attention::append_cache(const TensorView<float> &k, const TensorView<float> &v) {
    State &s = *state_;
    if (!has_cache()) fail("no KV cache: call setup_cache first");
    const int64_t n_kv = s.dims.num_kv_heads, hd = s.dims.head_dim, batch = s.cache.batch();
    for (const auto &[name, t] : {std::pair{"k", &k}, std::pair{"v", &v}}) {
        const auto &shape = t->shape;
        if (!t->data || shape.size() != 4 || shape[0] != batch || shape[1] != n_kv || shape[2] < 1 ||
            shape[3] != hd) {
            fail(name, " has shape ", shape_string(shape), "; expected [", batch, ", ", n_kv, ", n, ", hd, "]");
        }
    }
    if (k.shape[2] != v.shape[2]) fail("k holds ", k.shape[2], " slots but v holds ", v.shape[2]);
    if (s.cache_size + k.shape[2] > s.cache.capacity()) {
        fail("KV cache overflow: ", s.cache_size, " tokens cached + ", k.shape[2], " appended > max_seq_len ",
             s.cache.capacity());
    }
    const int n = int(k.shape[2]);
    s.cache.pull(*s.kernels);  // the slots before size() must survive the upload that follows
    s.cache.write_slots(k.data, v.data, s.cache_size, n);
    s.cache_size += n;
}

int Attention::size() const {
    return state_->cache_size;
}

void Attention::forward(const TensorView<float> &x, std::span<float> out,
                        const std::optional<TensorView<uint8_t>> &mask,
                        const std::optional<TensorView<int32_t>> &input_pos) {
    State &s = *state_;
    const Config &c = s.config;
    if (x.shape.size() != 3 || x.shape[0] < 1 || x.shape[1] < 1 || x.shape[2] != c.embed_dim) {
        fail("x has shape ", shape_string(x.shape), "; expected [batch >= 1, seq_len >= 1, ", c.embed_dim, "]");
    }
    if (!x.data) fail("x has no data");
    // Checked as given, in 64 bits, before anything is narrowed to int.
    if (x.shape[1] > c.max_seq_len) fail("seq_len ", x.shape[1], " is larger than max_seq_len (", c.max_seq_len, ")");
    if (x.shape[0] > INT32_MAX) fail("x has batch ", x.shape[0], "; expected at most ", INT32_MAX);
    require_array_size("x", {x.shape[0], x.shape[1], c.embed_dim}, "batch x seq_len x embed_dim");
    require_array_size("q", {x.shape[0], x.shape[1], c.num_heads, c.head_dim}, "batch x seq_len x num_heads x head_dim");
    const int batch = int(x.shape[0]), seq_len = int(x.shape[1]);
    const bool cached = has_cache();
    if (cached && batch != s.cache.batch()) {
        fail("x has batch ", batch, " but the KV cache was set up for batch ", s.cache.batch());
    }
    if (cached && s.cache_size + seq_len > s.cache.capacity()) {
        fail("KV cache overflow: ", s.cache_size, " tokens cached + ", seq_len, " new > max_seq_len ",
             s.cache.capacity());
    }
    const size_t tokens = size_t(batch) * seq_len;
    if (out.size() != tokens * c.embed_dim) {
        fail("out holds ", out.size(), " floats; expected ", tokens * c.embed_dim, " ([", batch, ", ", seq_len, ", ",
             c.embed_dim, "])");
    }
    const int first_slot = cached ? s.cache_size : 0;
    const int kv_len = first_slot + seq_len;
    if (!cached) {
        require_kv_store_size("the k and v of the call", s.dims, batch, seq_len);
    }
    if (s.record_pattern) {
        require_array_size("the attention pattern", {batch, c.num_heads, seq_len, kv_len},
                           "batch x num_heads x seq_len x kv_len");
    }
    if (mask) {
        const auto &m = mask->shape;
        const bool len_ok = m.size() == 3 && (m[2] == kv_len || (cached && m[2] == s.cache.capacity()));
        if (m.size() != 3 || m[0] != batch || m[1] != seq_len || !len_ok) {
            fail("mask has shape ", shape_string(m), "; expected [", batch, ", ", seq_len, ", ", kv_len, "]",
                 cached ? " or [" + std::to_string(batch) + ", " + std::to_string(seq_len) + ", " +
                              std::to_string(s.cache.capacity()) + "]"
                        : std::string());
        }
        if (!mask->data) fail("mask has no data");
    }
    const bool cache_is_shorter = cached && s.cache.capacity() < c.max_seq_len;
    fill_positions(input_pos, batch, seq_len, first_slot, cache_is_shorter ? s.cache.capacity() : c.max_seq_len,
                   cache_is_shorter ? "the KV cache's max_seq_len" : "max_seq_len", s.positions);
    if (cached) require_increasing(s.positions, s.last_position, batch, seq_len);

    // Everything is valid. The stages write the cache's new slots and the spare z
    // and pattern; only when all three succeed does the layer take them.
    const LayerDims &d = s.dims;
    grow(s.q, tokens * d.q_width(), "q");
    grow(s.z_spare, tokens * d.q_width(), "z");
    if (!cached) {
        const size_t elements = size_t(*detail::KvCache::elements(d, batch, seq_len, kMaxArrayElements));
        allocate("the k and v of the call", 2 * elements, sizeof(float),
                 [&] { s.scratch.reserve_scratch(d, batch, seq_len); });
    }
    detail::KvCache &kv = cached ? s.cache : s.scratch;
    if (s.record_pattern) grow(s.pattern_spare, tokens * d.num_heads * kv_len, "the attention pattern");

    const detail::ForwardStage failing = std::exchange(detail::injected_failure, detail::ForwardStage::none);
    auto after = [failing](detail::ForwardStage stage, const char *name) {
        if (failing == stage) fail("injected failure after ", name);
    };
    try {
        s.kernels->project({x.data, batch, seq_len, s.positions.data(), s.q.data(), &kv, first_slot});
        after(detail::ForwardStage::project, "project");
        detail::AttendCall attend{s.q.data(), batch, seq_len, &kv, kv_len, nullptr, 0, false, 0, float(s.scale),
                                  float(c.softcap), s.z_spare.data(),
                                  s.record_pattern ? s.pattern_spare.data() : nullptr};
        if (mask) {
            attend.mask = mask->data;
            attend.mask_len = int(mask->shape[2]);
        } else {
            attend.causal = c.is_causal || c.window.has_value();
            attend.window = c.window.value_or(0);
        }
        s.kernels->attend(attend);
        after(detail::ForwardStage::attend, "attend");
        s.kernels->output({s.z_spare.data(), batch, seq_len, out.data()});
        after(detail::ForwardStage::output, "output");
    } catch (...) {
        if (cached) s.discard_slots(first_slot, seq_len);
        throw;
    }

    std::swap(s.z, s.z_spare);
    if (s.record_pattern) std::swap(s.pattern, s.pattern_spare);
    s.has_pattern = s.record_pattern;
    s.kernels->commit();
    if (cached) {
        s.cache.written_on_device();
        s.cache_size += seq_len;
        for (int b = 0; b < batch; ++b) s.last_position[b] = s.positions[size_t(b) * seq_len + seq_len - 1];
    }
    s.last_batch = batch;
    s.last_seq_len = seq_len;
    s.last_kv_len = kv_len;
}

std::vector<float> Attention::forward(const TensorView<float> &x, const std::optional<TensorView<uint8_t>> &mask,
                                      const std::optional<TensorView<int32_t>> &input_pos) {
    std::vector<float> out(x.numel() > 0 && x.shape.size() == 3 ? size_t(x.numel()) : 0);
    forward(x, out, mask, input_pos);
    return out;
}

void Attention::set_record_pattern(bool record) {
    state_->record_pattern = record;
}

TensorView<float> Attention::pattern() const {
    const State &s = *state_;
    if (!s.has_pattern || s.last_batch == 0) {
        fail("no attention pattern recorded: call set_record_pattern(true) before forward");
    }
    s.kernels->copy_to_host(detail::HostArray::pattern);
    return {s.pattern.data(), {s.last_batch, s.dims.num_heads, s.last_seq_len, s.last_kv_len}};
}

TensorView<float> Attention::z() const {
    const State &s = *state_;
    if (s.last_batch == 0) fail("z() needs a forward call first");
    s.kernels->copy_to_host(detail::HostArray::z);
    return {s.z.data(), {s.last_batch, s.last_seq_len, s.dims.num_heads, s.dims.head_dim}};
}

namespace {

// A cache of the element type the accessor returns, as [b, n_kv, max_seq_len, hd].
template <typename T>
TensorView<T> cache_view(detail::KvCache &cache, detail::Kernels &kernels, const void *array, CacheType type,
                         const char *accessor, const char *other) {
    if (!cache.allocated()) fail("no KV cache: call setup_cache first");
    if (cache.type() != type) fail("the KV cache holds ", type == CacheType::f32 ? "fp16" : "fp32",
                                   " elements; read it with ", other, "(), not ", accessor, "()");
    cache.pull(kernels);
    return {static_cast<const T *>(array), {cache.batch(), cache.num_kv_heads(), cache.capacity(), cache.head_dim()}};
}

}  // namespace

TensorView<float> Attention::k_cache() const {
    return cache_view<float>(state_->cache, *state_->kernels, state_->cache.k(), CacheType::f32, "k_cache",
                             "k_cache_f16");
}

TensorView<float> Attention::v_cache() const {
    return cache_view<float>(state_->cache, *state_->kernels, state_->cache.v(), CacheType::f32, "v_cache",
                             "v_cache_f16");
}

TensorView<uint16_t> Attention::k_cache_f16() const {
    return cache_view<uint16_t>(state_->cache, *state_->kernels, state_->cache.k(), CacheType::f16, "k_cache_f16",
                                "k_cache");
}

TensorView<uint16_t> Attention::v_cache_f16() const {
    return cache_view<uint16_t>(state_->cache, *state_->kernels, state_->cache.v(), CacheType::f16, "v_cache_f16",
                                "v_cache");
}

CacheType Attention::cache_type() const {
    return state_->cache.type();
}

int Attention::cache_batch() const {
    return state_->cache.batch();
}

int Attention::cache_max_seq_len() const {
    return state_->cache.capacity();
}

const Config &Attention::config() const {
    return state_->config;
}

Backend Attention::backend() const {
    return state_->backend;
}

void apply_rope(const Config &config, const TensorView<float> &x, std::span<float> out,
                const std::optional<TensorView<int32_t>> &input_pos, int position_offset, Backend backend) {
    validate_rope(config);
    if (x.shape.size() != 4 || x.shape[0] < 1 || x.shape[1] < 1 || x.shape[2] < 1 || x.shape[3] != config.head_dim) {
        fail("x has shape ", shape_string(x.shape), "; expected [batch >= 1, seq_len >= 1, heads >= 1, ",
             config.head_dim, "]");
    }
    if (!x.data) fail("x has no data");
    if (out.size() != size_t(x.numel())) fail("out holds ", out.size(), " floats; expected ", x.numel());
    if (position_offset < 0) fail("position_offset is ", position_offset, "; expected >= 0");
    const int batch = int(x.shape[0]), seq_len = int(x.shape[1]), heads = int(x.shape[2]);
    std::vector<int32_t> positions;
    fill_positions(input_pos, batch, seq_len, position_offset, config.max_seq_len, "max_seq_len", positions);
    const RopeTables rope = detail::make_rope_tables(config);
    const detail::RopeCall call{x.data, batch * seq_len, heads, config.head_dim, positions.data(), out.data()};
    detail::built_backend(resolve_backend(backend))->rope(rope, call);
}

}  // namespace gqa
