// gqa::Attention: validates every input before anything is written, owns the KV
// cache and the per-call scratch (grown, never shrunk, so a steady stream of calls
// allocates nothing), and runs the three stages on the chosen backend.
#include <algorithm>
#include <array>
#include <cmath>
#include <tuple>
#include <utility>

#include "aligned_vector.h"
#include "backend_registry.h"
#include "layout.h"
#include "paged_cache.h"
#include "test_hooks.h"
#include "validation.h"
#include "weights.h"

namespace gqa {

using namespace detail;

namespace {

template <typename T>
void grow(AlignedVector<T> &v, size_t n, const char *what) {
    if (v.size() < n) allocate(what, n, sizeof(T), [&] { v.resize(n); });
}

constexpr uint32_t bit(Hook hook) {
    return 1u << int(hook);
}

// What the fast pipelines record; every other hook takes the recording ones.
constexpr uint32_t kFastHooks = bit(Hook::z) | bit(Hook::pattern);
constexpr uint32_t kPatchableHooks = bit(Hook::q) | bit(Hook::k) | bit(Hook::v) | bit(Hook::rot_q) |
                                     bit(Hook::rot_k) | bit(Hook::pattern) | bit(Hook::z);

constexpr std::array<std::string_view, kHookCount> kHookNames = {
    "hook_q", "hook_k", "hook_v", "hook_rot_q", "hook_rot_k", "hook_attn_scores", "hook_pattern", "hook_z", "hook_result"};

// "hook_q, hook_k, ...": the names of the hooks in `hooks`, for messages.
std::string hook_names(uint32_t hooks) {
    std::string names;
    for (int h = 0; h < kHookCount; ++h) {
        if (hooks & (1u << h)) names += (names.empty() ? "" : ", ") + std::string(kHookNames[h]);
    }
    return names;
}

// The input of one forward: one x for q, k and v, or one per head.
struct ForwardInput {
    const float *x_q, *x_k, *x_v;
    bool split;
    int64_t batch, seq_len;
};

int qk_norm_code(QkNorm norm) {
    switch (norm) {
    case QkNorm::per_head: return layout::kQkNormPerHead;
    case QkNorm::all_heads: return layout::kQkNormAllHeads;
    case QkNorm::none: break;
    }
    return layout::kQkNormNone;
}

}  // namespace

struct Attention::State {
    Config config;
    LayerDims dims;
    Backend backend;
    WeightType weight_type = WeightType::f32;
    RopeTables rope;
    std::unique_ptr<Kernels> kernels;
    double scale = 0;

    KvCache cache;  // allocated() once set up
    PagedCache paged;  // or this one, allocated() once set up
    int cache_size = 0;
    std::vector<int32_t> last_position;  // per batch row, of the latest token forward wrote; -1: none

    // Per-call scratch. A forward writes the hooks it records (and the recording
    // path's intermediates) into the spares, which become the hooks only once every
    // stage succeeded.
    AlignedVector<float> q;
    std::array<AlignedVector<float>, kHookCount> hooks, spares;
    std::array<std::vector<int64_t>, kHookCount> hook_shapes;  // the last forward's; empty: not recorded
    uint32_t recording = bit(Hook::z);  // what the next forwards record
    KvCache scratch;  // k and v of a call without a cache
    std::vector<int32_t> positions;
    // Where the call's tokens go (slot, batch row) and each row's valid key slots.
    std::vector<int32_t> dest_slots, dest_rows, kv_lens;
    // The granule table of a contiguous cache: every key where its slot says.
    std::vector<int32_t> contiguous_granules;
    std::vector<int32_t> sequence_granules;  // a serving call's, per row

    // A known cache type with pipelines in this build.
    void require_cache_pipelines(CacheType type) const {
        const std::string_view type_name = cache_type_name(type);  // checks the value
        if (!kernels->supports_cache(type)) {
            fail(backend_name(backend), " was built without pipelines for ", type_name,
                 " caches (CMake GQA_CACHE_TYPES)");
        }
    }

    PagedCache &paged_cache() {
        if (!paged.allocated()) fail("no paged KV cache: call setup_paged_cache first");
        return paged;
    }
    std::vector<float> sequence_as_float(int id, bool values);

    // A hook's shape in a forward of batch x seq_len tokens reaching kv_len slots.
    std::vector<int64_t> hook_shape(Hook hook, int64_t batch, int64_t seq_len, int64_t kv_len) const {
        const LayerDims &d = dims;
        switch (hook) {
        case Hook::q:
        case Hook::rot_q:
        case Hook::z: return {batch, seq_len, d.num_heads, d.head_dim};
        case Hook::k:
        case Hook::v:
        case Hook::rot_k: return {batch, seq_len, d.num_kv_heads, d.head_dim};
        case Hook::attn_scores:
        case Hook::pattern: return {batch, d.num_heads, seq_len, kv_len};
        case Hook::result: return {batch, seq_len, d.num_heads, d.embed_dim};
        }
        return {};
    }

    AlignedVector<float> &spare(Hook hook) { return spares[int(hook)]; }

    void forward(const ForwardInput &input, std::span<float> out, const std::optional<TensorView<uint8_t>> &mask,
                 const std::optional<TensorView<int32_t>> &input_pos, std::span<const Patch> patches);
    void weigh_patched_pattern(const float *pattern, int batch, int seq_len, int kv_len, float *z);

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
    s->rope = make_rope_tables(config);
    s->scale = (config.scale > 0 ? config.scale : 1.0 / std::sqrt(double(config.head_dim))) /
               (config.layer_id >= 0 ? config.layer_id + 1 : 1);
    s->weight_type = stored_weight_type(config, weights);
    const TypedWeights typed(weights, s->weight_type);
    s->kernels = built_backend(s->backend)->make_kernels(s->dims, typed.weights(), s->rope);
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
    State &s = *state_;
    s.require_cache_pipelines(type);
    const size_t elements = require_kv_store_size("the KV cache's k and v", s.dims, type, batch_size, max_seq_len);
    allocate("the KV cache", 2 * elements, KvCache::element_bytes(type),
             [&] { s.cache.allocate(s.dims, type, batch_size, max_seq_len); });
    s.paged.release();
    s.cache_size = 0;
    s.last_position.assign(batch_size, -1);
}

void Attention::setup_paged_cache(int num_blocks, int block_size, CacheType type) {
    require_positive("paged cache num_blocks", num_blocks);
    if (block_size < layout::kCacheGranule || block_size % layout::kCacheGranule != 0) {
        fail("paged cache block_size is ", block_size, "; expected a positive multiple of ", layout::kCacheGranule);
    }
    State &s = *state_;
    s.require_cache_pipelines(type);
    const size_t elements = require_kv_store_size("the paged KV cache's pool", s.dims, type, 1,
                                                  int64_t(num_blocks) * block_size);
    allocate("the paged KV cache", 2 * elements, KvCache::element_bytes(type),
             [&] { s.paged.allocate(s.dims, type, num_blocks, block_size, s.config.window); });
    s.cache.release();
    s.cache_size = 0;
    s.last_position.clear();
}

bool Attention::has_paged_cache() const {
    return state_->paged.allocated();
}

int Attention::paged_block_size() const {
    return state_->paged.block_size();
}

int Attention::paged_blocks() const {
    return state_->paged.num_blocks();
}

int Attention::free_paged_blocks() const {
    return state_->paged.free_blocks();
}

int Attention::add_sequence() {
    PagedCache &paged = state_->paged_cache();
    int id = 0;
    allocate("a sequence", 1, sizeof(PagedCache::Sequence), [&] { id = paged.add_sequence(); });
    return id;
}

int Attention::fork_sequence(int sequence) {
    PagedCache &paged = state_->paged_cache();
    const PagedCache::Sequence &from = paged.sequence(sequence);
    int id = 0;
    allocate("a sequence", from.blocks.size() + from.positions.size(), sizeof(int32_t),
             [&] { id = paged.fork(sequence); });
    return id;
}

void Attention::truncate_sequence(int sequence, int length) {
    state_->paged_cache().truncate(sequence, length);
}

void Attention::remove_sequence(int sequence) {
    state_->paged_cache().remove(sequence);
}

int Attention::min_sequence_length(int sequence) const {
    return state_->paged_cache().min_length(sequence);
}

int Attention::sequence_length(int sequence) const {
    return state_->paged_cache().sequence(sequence).length();
}

std::vector<int> Attention::sequences() const {
    return state_->paged_cache().sequence_ids();
}

std::vector<float> Attention::State::sequence_as_float(int id, bool values) {
    const PagedCache::Sequence &sequence = paged_cache().sequence(id);
    KvCache &pool = paged.pool();
    pool.pull(*kernels);
    const int length = sequence.length(), hd = dims.head_dim, bs = paged.block_size();
    std::vector<float> out(size_t(dims.num_kv_heads) * length * hd, 0.f);
    for (int head = 0; head < dims.num_kv_heads; ++head) {
        for (int slot = 0; slot < length; ++slot) {
            const int32_t block = sequence.blocks[slot / bs];
            if (block < 0) continue;
            const size_t at = pool.slot_index(0, head, paged.pool_slot(sequence.blocks, slot));
            float *row = out.data() + (size_t(head) * length + slot) * hd;
            for (int e = 0; e < hd; ++e) row[e] = pool.load(values ? pool.v() : pool.k(), at, e);
        }
    }
    return out;
}

void Attention::append_sequence_cache(int sequence, const TensorView<float> &k, const TensorView<float> &v) {
    State &s = *state_;
    PagedCache &paged = s.paged_cache();
    const PagedCache::Sequence &target = paged.sequence(sequence);
    const int64_t n_kv = s.dims.num_kv_heads, hd = s.dims.head_dim;
    for (const auto &[name, t] : {std::pair{"k", &k}, std::pair{"v", &v}}) {
        const auto &shape = t->shape;
        if (!t->data || shape.size() != 3 || shape[0] != n_kv || shape[1] < 1 || shape[2] != hd) {
            fail(name, " has shape ", shape_string(shape), "; expected [", n_kv, ", n, ", hd, "]");
        }
    }
    if (k.shape[1] != v.shape[1]) fail("k holds ", k.shape[1], " slots but v holds ", v.shape[1]);
    const int32_t last = target.positions.empty() ? -1 : target.positions.back();
    if (target.length() + k.shape[1] > s.config.max_seq_len || last + k.shape[1] >= s.config.max_seq_len) {
        fail("sequence ", sequence, " holds ", target.length(), " tokens (the last at position ", last, "); ",
             k.shape[1], " more pass max_seq_len (", s.config.max_seq_len, ")");
    }
    const int n = int(k.shape[1]), length = target.length();
    allocate("the appended positions", n, sizeof(int32_t), [&] { s.positions.resize(n); });
    for (int i = 0; i < n; ++i) s.positions[i] = last + 1 + i;
    PagedCache::Step step;
    allocate("the sequence's block table", 1, sizeof(PagedCache::Row),
             [&] { step = paged.reserve({{sequence, n}}, *s.kernels); });
    KvCache &pool = paged.pool();
    try {
        pool.pull(*s.kernels);  // the slots before the new ones must survive the upload that follows
    } catch (...) {
        paged.cancel(step);
        throw;
    }
    for (int head = 0; head < n_kv; ++head) {
        for (int i = 0; i < n; ++i) {
            const size_t at = (size_t(head) * n + i) * hd;
            pool.write_slot(0, head, paged.pool_slot(step.tables[0], length + i), k.data + at, v.data + at);
        }
    }
    paged.commit(step, s.positions);
}

std::vector<float> Attention::sequence_k_as_float(int sequence) const {
    return state_->sequence_as_float(sequence, false);
}

std::vector<float> Attention::sequence_v_as_float(int sequence) const {
    return state_->sequence_as_float(sequence, true);
}

bool Attention::has_cache() const {
    return state_->cache.allocated();
}

void Attention::remove_cache() {
    State &s = *state_;
    s.cache.release();
    s.paged.release();
    s.cache_size = 0;
    s.last_position.clear();
}

void Attention::reset() {
    State &s = *state_;
    for (int id : s.paged.sequence_ids()) s.paged.remove(id);
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
                        const std::optional<TensorView<int32_t>> &input_pos, std::span<const Patch> patches) {
    const Config &c = state_->config;
    if (x.shape.size() != 3 || x.shape[0] < 1 || x.shape[1] < 1 || x.shape[2] != c.embed_dim) {
        fail("x has shape ", shape_string(x.shape), "; expected [batch >= 1, seq_len >= 1, ", c.embed_dim, "]");
    }
    if (!x.data) fail("x has no data");
    state_->forward({x.data, x.data, x.data, false, x.shape[0], x.shape[1]}, out, mask, input_pos, patches);
}

void Attention::forward_split(const SplitQkvInput &input, std::span<float> out,
                              const std::optional<TensorView<uint8_t>> &mask,
                              const std::optional<TensorView<int32_t>> &input_pos, std::span<const Patch> patches) {
    const Config &c = state_->config;
    const auto &q = input.query.shape;
    if (q.size() != 4 || q[0] < 1 || q[1] < 1 || q[2] != c.num_heads || q[3] != c.embed_dim) {
        fail("the query input has shape ", shape_string(q), "; expected [batch >= 1, seq_len >= 1, ", c.num_heads,
             ", ", c.embed_dim, "]");
    }
    for (const auto &[name, t] : {std::pair{"key", &input.key}, std::pair{"value", &input.value}}) {
        const std::vector<int64_t> expected{q[0], q[1], c.num_kv_heads, c.embed_dim};
        if (t->shape != expected) {
            fail("the ", name, " input has shape ", shape_string(t->shape), "; expected ", shape_string(expected));
        }
        if (!t->data) fail("the ", name, " input has no data");
    }
    if (!input.query.data) fail("the query input has no data");
    require_array_size("the query input", {q[0], q[1], c.num_heads, c.embed_dim},
                       "batch x seq_len x num_heads x embed_dim");
    state_->forward({input.query.data, input.key.data, input.value.data, true, q[0], q[1]}, out, mask, input_pos,
                    patches);
}

void Attention::State::forward(const ForwardInput &input, std::span<float> out,
                               const std::optional<TensorView<uint8_t>> &mask,
                               const std::optional<TensorView<int32_t>> &input_pos, std::span<const Patch> patches) {
    State &s = *this;
    const Config &c = s.config;
    if (s.paged.allocated()) fail("the layer's KV cache is paged: run its sequences with forward_sequences");
    // Checked as given, in 64 bits, before anything is narrowed to int.
    if (input.seq_len > c.max_seq_len) {
        fail("seq_len ", input.seq_len, " is larger than max_seq_len (", c.max_seq_len, ")");
    }
    if (input.batch > INT32_MAX) fail("x has batch ", input.batch, "; expected at most ", INT32_MAX);
    require_array_size("x", {input.batch, input.seq_len, c.embed_dim}, "batch x seq_len x embed_dim");
    require_array_size("q", {input.batch, input.seq_len, c.num_heads, c.head_dim},
                       "batch x seq_len x num_heads x head_dim");
    const int batch = int(input.batch), seq_len = int(input.seq_len);
    const bool cached = cache.allocated();
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
    const size_t scratch_elements = cached ? 0 : require_kv_store_size("the k and v of the call", s.dims, CacheType::f32, batch, seq_len);
    for (Hook hook : {Hook::attn_scores, Hook::pattern, Hook::result}) {
        if (s.recording & bit(hook)) {
            const std::vector<int64_t> shape = s.hook_shape(hook, batch, seq_len, kv_len);
            require_array_size(kHookNames[int(hook)].data(), {shape[0], shape[1], shape[2], shape[3]},
                               hook == Hook::result ? "batch x seq_len x num_heads x embed_dim"
                                                    : "batch x num_heads x seq_len x kv_len");
        }
    }
    std::array<const float *, kHookCount> patch{};
    uint32_t patched = 0;
    for (const Patch &p : patches) {
        const std::string_view name = hook_name(p.hook);  // checks the value
        if (!can_patch(p.hook)) {
            fail(name, " cannot be patched; these can: ", hook_names(kPatchableHooks));
        }
        if (patched & bit(p.hook)) fail(name, " is patched twice in one forward");
        const std::vector<int64_t> shape = s.hook_shape(p.hook, batch, seq_len, kv_len);
        if (p.value.shape != shape) {
            fail("the patch of ", name, " has shape ", shape_string(p.value.shape), "; expected ", shape_string(shape));
        }
        if (!p.value.data) fail("the patch of ", name, " has no data");
        patched |= bit(p.hook);
        patch[int(p.hook)] = p.value.data;
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

    // Everything is valid. The stages write the cache's new slots and the spares;
    // only when all of them succeed does the layer take them.
    const LayerDims &d = s.dims;
    const bool recording_path = input.split || patched || (s.recording & ~kFastHooks);
    // Elements of each hook in this call, and which the call writes.
    auto elements = [&](Hook hook) {
        size_t n = 1;
        for (int64_t e : s.hook_shape(hook, batch, seq_len, kv_len)) n *= size_t(e);
        return n;
    };
    const bool attend_records = s.recording & (bit(Hook::pattern) | bit(Hook::attn_scores));
    uint32_t written = bit(Hook::z) | (attend_records ? bit(Hook::pattern) | bit(Hook::attn_scores) : 0);
    if (recording_path) {
        written |= bit(Hook::q) | bit(Hook::k) | bit(Hook::v) | bit(Hook::rot_q) | bit(Hook::rot_k) |
                   (s.recording & bit(Hook::result));
    } else {
        grow(s.q, tokens * d.q_width(), "q");
    }
    for (int h = 0; h < kHookCount; ++h) {
        if (written & (1u << h)) grow(s.spares[h], elements(Hook(h)), kHookNames[h].data());
    }
    if (!cached) {
        allocate("the k and v of the call", 2 * scratch_elements, sizeof(float),
                 [&] { s.scratch.reserve_scratch(d, batch, seq_len); });
    }
    KvCache &kv = cached ? s.cache : s.scratch;
    const int granules = granule_table_length(kv_len);
    allocate("the call's destinations and granule table", 2 * tokens + batch + granules, sizeof(int32_t), [&] {
        s.dest_slots.resize(tokens), s.dest_rows.resize(tokens), s.kv_lens.resize(batch);
        if (s.contiguous_granules.size() < size_t(granules)) s.contiguous_granules.resize(granules, 0);
    });
    for (int b = 0; b < batch; ++b) {
        for (int i = 0; i < seq_len; ++i) {
            s.dest_slots[size_t(b) * seq_len + i] = first_slot + i;
            s.dest_rows[size_t(b) * seq_len + i] = b;
        }
    }
    std::fill(s.kv_lens.begin(), s.kv_lens.end(), kv_len);

    const ForwardStage failing = std::exchange(injected_failure, ForwardStage::none);
    auto after = [failing](ForwardStage stage, const char *name) {
        if (failing == stage) fail("injected failure after ", name);
    };
    // The patch of `hook`, where there is one, over its spare.
    auto apply_patch = [&](Hook hook) {
        if (patch[int(hook)]) std::copy_n(patch[int(hook)], elements(hook), s.spare(hook).data());
    };
    float *z = s.spare(Hook::z).data();
    // A mask replaces the causal and window rules.
    AttendCall attend{.q = nullptr,
                      .batch = batch,
                      .seq_len = seq_len,
                      .kv = &kv,
                      .kv_len = kv_len,
                      .kv_lens = s.kv_lens.data(),
                      .granules = s.contiguous_granules.data(),
                      .granule_count = granules,
                      .granule_row_stride = 0,
                      .pooled = false,
                      .mask = mask ? mask->data : nullptr,
                      .mask_len = mask ? int(mask->shape[2]) : 0,
                      .causal = !mask && (c.is_causal || c.window.has_value()),
                      .window = mask ? 0 : c.window.value_or(0),
                      .scale = float(s.scale),
                      .softcap = float(c.softcap),
                      .z = z,
                      .pattern = attend_records ? s.spare(Hook::pattern).data() : nullptr,
                      .scores = attend_records ? s.spare(Hook::attn_scores).data() : nullptr,
                      .host_io = recording_path};
    try {
        if (!recording_path) {
            s.kernels->project({.x = input.x_q,
                                .batch = batch,
                                .seq_len = seq_len,
                                .positions = s.positions.data(),
                                .q = s.q.data(),
                                .kv = &kv,
                                .dest_slots = s.dest_slots.data(),
                                .dest_rows = s.dest_rows.data(),
                                .qk_norm = qk_norm_code(c.qk_norm),
                                .qk_norm_eps = float(c.qk_norm_eps)});
            after(ForwardStage::project, "project");
            attend.q = s.q.data();
            s.kernels->attend(attend);
            after(ForwardStage::attend, "attend");
            s.kernels->output({.z = z, .batch = batch, .seq_len = seq_len, .out = out.data(), .z_from_host = false});
            after(ForwardStage::output, "output");
        } else {
            // TransformerLens' order, each stage its own pipeline, each patch where
            // its hook sits.
            s.kernels->project_heads({.x_q = input.x_q,
                                      .x_k = input.x_k,
                                      .x_v = input.x_v,
                                      .split = input.split,
                                      .tokens = int(tokens),
                                      .qk_norm = qk_norm_code(c.qk_norm),
                                      .qk_norm_eps = float(c.qk_norm_eps),
                                      .q = s.spare(Hook::q).data(),
                                      .k = s.spare(Hook::k).data(),
                                      .v = s.spare(Hook::v).data()});
            for (Hook hook : {Hook::q, Hook::k, Hook::v}) apply_patch(hook);
            const BackendEntry &entry = *built_backend(s.backend);
            for (const auto &[from, to, heads] : {std::tuple{Hook::q, Hook::rot_q, d.num_heads},
                                                  std::tuple{Hook::k, Hook::rot_k, d.num_kv_heads}}) {
                entry.rope(s.rope, {.x = s.spare(from).data(),
                                    .tokens = int(tokens),
                                    .heads = heads,
                                    .head_dim = d.head_dim,
                                    .positions = s.positions.data(),
                                    .out = s.spare(to).data()});
                apply_patch(to);
            }
            s.kernels->store({.k = s.spare(Hook::rot_k).data(),
                              .v = s.spare(Hook::v).data(),
                              .batch = batch,
                              .seq_len = seq_len,
                              .kv = &kv,
                              .dest_slots = s.dest_slots.data(),
                              .dest_rows = s.dest_rows.data()});
            after(ForwardStage::project, "project");
            attend.q = s.spare(Hook::rot_q).data();
            // A patched pattern makes z itself; the attention runs only for the hooks it records.
            if (!patch[int(Hook::pattern)] || attend_records) s.kernels->attend(attend);
            if (patch[int(Hook::pattern)]) {
                if (s.recording & bit(Hook::pattern)) apply_patch(Hook::pattern);
                s.weigh_patched_pattern(patch[int(Hook::pattern)], batch, seq_len, kv_len, z);
            }
            after(ForwardStage::attend, "attend");
            apply_patch(Hook::z);
            s.kernels->output({.z = z, .batch = batch, .seq_len = seq_len, .out = out.data(), .z_from_host = true});
            if (s.recording & bit(Hook::result)) {
                s.kernels->head_results({.z = z, .tokens = int(tokens), .result = s.spare(Hook::result).data()});
            }
            after(ForwardStage::output, "output");
        }
    } catch (...) {
        if (cached) s.discard_slots(first_slot, seq_len);
        throw;
    }

    for (int h = 0; h < kHookCount; ++h) {
        if (s.recording & (1u << h)) {
            std::swap(s.hooks[h], s.spares[h]);
            s.hook_shapes[h] = s.hook_shape(Hook(h), batch, seq_len, kv_len);
        } else {
            s.hook_shapes[h].clear();
        }
    }
    s.kernels->commit();
    if (cached) {
        s.cache.written_on_device();
        s.cache_size += seq_len;
        for (int b = 0; b < batch; ++b) s.last_position[b] = s.positions[size_t(b) * seq_len + seq_len - 1];
    }
}

// z from a patched pattern: every key slot's value, as the attention reads it
// (with a cache, the cache's, the call's slots just written; without, the call's v).
void Attention::State::weigh_patched_pattern(const float *pattern, int batch, int seq_len, int kv_len, float *z) {
    const LayerDims &d = dims;
    WeighValuesCall call{.pattern = pattern, .v = nullptr, .batch = batch, .seq_len = seq_len, .kv_len = kv_len,
                         .slot_stride = 0, .head_stride = 0, .row_stride = 0, .z = z};
    std::vector<float> cached_values;
    if (cache.allocated()) {
        cache.written_on_device();
        cache.pull(*kernels);
        allocate("the cache's values as fp32", cache.elements(), sizeof(float),
                 [&] { cached_values = cache.as_float(cache.v()); });
        call.v = cached_values.data();
        call.slot_stride = d.head_dim;
        call.head_stride = int64_t(cache.capacity()) * d.head_dim;
        call.row_stride = call.head_stride * d.num_kv_heads;
    } else {
        call.v = spare(Hook::v).data();
        call.slot_stride = d.kv_width();
        call.head_stride = d.head_dim;
        call.row_stride = int64_t(seq_len) * d.kv_width();
    }
    kernels->weigh_values(call);
}

void Attention::forward_sequences(std::span<const SequenceTokens> rows, const TensorView<float> &x,
                                  std::span<float> out, const std::optional<TensorView<int32_t>> &input_pos) {
    State &s = *state_;
    const Config &c = s.config;
    PagedCache &paged = s.paged_cache();
    if (rows.empty()) fail("forward_sequences needs at least one row");
    if (s.recording & ~bit(Hook::z)) {
        fail("forward_sequences records no hooks (the pattern included): call set_recorded_hooks({}) before it");
    }
    int64_t total = 0;
    for (size_t r = 0; r < rows.size(); ++r) {
        const SequenceTokens &row = rows[r];
        const PagedCache::Sequence &sequence = paged.sequence(row.sequence);  // checks the id
        for (size_t earlier = 0; earlier < r; ++earlier) {
            if (rows[earlier].sequence == row.sequence) fail("sequence ", row.sequence, " appears twice in one forward");
        }
        if (row.tokens < 1) fail("sequence ", row.sequence, " is given ", row.tokens, " tokens; expected >= 1");
        if (int64_t(sequence.length()) + row.tokens > c.max_seq_len) {
            fail("sequence ", row.sequence, " holds ", sequence.length(), " tokens; ", row.tokens,
                 " more pass max_seq_len (", c.max_seq_len, ")");
        }
        total += row.tokens;
    }
    if (x.shape.size() != 2 || x.shape[0] != total || x.shape[1] != c.embed_dim) {
        fail("x has shape ", shape_string(x.shape), "; expected [", total, ", ", c.embed_dim,
             "] (the rows' tokens, one row after the other)");
    }
    if (!x.data) fail("x has no data");
    require_array_size("x", {total, c.embed_dim}, "tokens x embed_dim");
    require_array_size("q", {total, c.num_heads, c.head_dim}, "tokens x num_heads x head_dim");
    const int tokens = int(total);
    if (out.size() != size_t(tokens) * c.embed_dim) {
        fail("out holds ", out.size(), " floats; expected ", size_t(tokens) * c.embed_dim, " ([", tokens, ", ",
             c.embed_dim, "])");
    }
    if (input_pos && (input_pos->shape != std::vector<int64_t>{total} || !input_pos->data)) {
        fail("input_pos has shape ", shape_string(input_pos->shape), "; expected [", total, "]");
    }
    // Positions: given or the slots, each below max_seq_len and after its sequence's last.
    allocate("the call's positions", tokens, sizeof(int32_t), [&] { s.positions.resize(tokens); });
    {
        int token = 0;
        for (const SequenceTokens &row : rows) {
            const PagedCache::Sequence &sequence = paged.sequence(row.sequence);
            int32_t last = sequence.positions.empty() ? -1 : sequence.positions.back();
            for (int i = 0; i < row.tokens; ++i, ++token) {
                const int32_t position = input_pos ? input_pos->data[token] : sequence.length() + i;
                if (position < 0 || position >= c.max_seq_len) {
                    fail("input_pos[", token, "] is ", position, "; expected in [0, max_seq_len ", c.max_seq_len, ")");
                }
                if (position <= last) {
                    fail("input_pos[", token, "] is ", position, " but sequence ", row.sequence,
                         "'s previous token is at position ", last, "; positions must increase");
                }
                s.positions[token] = last = position;
            }
        }
    }

    const LayerDims &d = s.dims;
    grow(s.q, size_t(tokens) * d.q_width(), "q");
    grow(s.spare(Hook::z), size_t(tokens) * d.q_width(), "z");  // z() stays the last forward()'s
    std::vector<PagedCache::Row> step_rows;
    PagedCache::Step step;
    allocate("the call's block tables", rows.size(), sizeof(PagedCache::Row), [&] {
        for (const SequenceTokens &row : rows) step_rows.push_back({row.sequence, row.tokens});
        step = paged.reserve(step_rows, *s.kernels);
    });
    KvCache &pool = paged.pool();
    const ForwardStage failing = std::exchange(injected_failure, ForwardStage::none);
    auto after = [failing](ForwardStage stage, const char *name) {
        if (failing == stage) fail("injected failure after ", name);
    };
    try {
        allocate("the call's destinations", 2 * size_t(tokens) + rows.size(), sizeof(int32_t), [&] {
            s.dest_slots.resize(tokens), s.dest_rows.assign(tokens, 0), s.kv_lens.resize(rows.size());
        });
        for (size_t r = 0, token = 0; r < rows.size(); ++r) {
            const int length = paged.sequence(rows[r].sequence).length();
            for (int i = 0; i < rows[r].tokens; ++i) s.dest_slots[token++] = paged.pool_slot(step.tables[r], length + i);
            s.kv_lens[r] = length + rows[r].tokens;
        }
        // The three stages per run of neighbouring rows with as many new tokens (and,
        // to prefill, as long a cache): their q and z are one [rows, n, n_h, hd]
        // block. Each run's arrays start a device backend's (a device handle is no
        // address to offset), so its stages run before the next run's.
        for (size_t first = 0, token = 0; first < rows.size();) {
            size_t end = first + 1;
            while (end < rows.size() && rows[end].tokens == rows[first].tokens &&
                   (rows[first].tokens == 1 || s.kv_lens[end] == s.kv_lens[first])) {
                ++end;
            }
            const int run = int(end - first), n = rows[first].tokens, run_tokens = run * n;
            const int kv_len = *std::max_element(s.kv_lens.begin() + first, s.kv_lens.begin() + end);
            const int granules = granule_table_length(kv_len);
            allocate("the call's granule tables", size_t(run) * granules, sizeof(int32_t),
                     [&] { s.sequence_granules.resize(size_t(run) * granules); });
            for (int r = 0; r < run; ++r) {
                paged.granule_table(step.tables[first + r], granules, s.sequence_granules.data() + size_t(r) * granules);
            }
            // [run, n]: a run of decode rows takes the decode pipelines, as a batch does.
            s.kernels->project({.x = x.data + token * c.embed_dim,
                                .batch = run,
                                .seq_len = n,
                                .positions = s.positions.data() + token,
                                .q = s.q.data(),
                                .kv = &pool,
                                .dest_slots = s.dest_slots.data() + token,
                                .dest_rows = s.dest_rows.data() + token,
                                .qk_norm = qk_norm_code(c.qk_norm),
                                .qk_norm_eps = float(c.qk_norm_eps)});
            after(ForwardStage::project, "project");
            s.kernels->attend({.q = s.q.data(),
                               .batch = run,
                               .seq_len = n,
                               .kv = &pool,
                               .kv_len = kv_len,
                               .kv_lens = s.kv_lens.data() + first,
                               .granules = s.sequence_granules.data(),
                               .granule_count = granules,
                               .granule_row_stride = granules,
                               .pooled = true,
                               .mask = nullptr,
                               .mask_len = 0,
                               .causal = c.is_causal || c.window.has_value(),
                               .window = c.window.value_or(0),
                               .scale = float(s.scale),
                               .softcap = float(c.softcap),
                               .z = s.spare(Hook::z).data(),
                               .pattern = nullptr,
                               .scores = nullptr,
                               .host_io = false});
            after(ForwardStage::attend, "attend");
            s.kernels->output({.z = s.spare(Hook::z).data(),
                               .batch = run,
                               .seq_len = n,
                               .out = out.data() + token * c.embed_dim,
                               .z_from_host = false});
            after(ForwardStage::output, "output");
            token += run_tokens;
            first = end;
        }
    } catch (...) {
        // The device's copy holds every slot the host's does, and perhaps some of
        // the call's past the sequences' ends, which no query sees.
        pool.written_on_device();
        paged.cancel(step);
        throw;
    }
    pool.written_on_device();
    paged.commit(step, s.positions);
}

std::vector<float> Attention::forward(const TensorView<float> &x, const std::optional<TensorView<uint8_t>> &mask,
                                      const std::optional<TensorView<int32_t>> &input_pos) {
    std::vector<float> out(x.numel() > 0 && x.shape.size() == 3 ? size_t(x.numel()) : 0);
    forward(x, out, mask, input_pos);
    return out;
}

std::string_view hook_name(Hook hook) {
    const int index = int(hook);
    if (index < 0 || index >= kHookCount) fail("unknown hook ", index);
    return kHookNames[index];
}

Hook hook_from_name(std::string_view name) {
    for (int h = 0; h < kHookCount; ++h) {
        if (kHookNames[h] == name) return Hook(h);
    }
    fail("unknown hook \"", name, "\"; expected one of ", hook_names((1u << kHookCount) - 1));
}

bool can_patch(Hook hook) {
    hook_name(hook);  // checks the value
    return kPatchableHooks & bit(hook);
}

void Attention::set_recorded_hooks(std::span<const Hook> hooks) {
    uint32_t recording = bit(Hook::z);
    for (Hook hook : hooks) {
        hook_name(hook);  // checks the value
        recording |= bit(hook);
    }
    state_->recording = recording;
}

std::vector<Hook> Attention::recorded_hooks() const {
    std::vector<Hook> hooks;
    for (int h = 0; h < kHookCount; ++h) {
        if (state_->recording & (1u << h)) hooks.push_back(Hook(h));
    }
    return hooks;
}

void Attention::set_record_pattern(bool record) {
    uint32_t &recording = state_->recording;
    recording = record ? recording | bit(Hook::pattern) : recording & ~bit(Hook::pattern);
}

TensorView<float> Attention::hook(Hook hook) const {
    const State &s = *state_;
    const std::string_view name = hook_name(hook);
    const std::vector<int64_t> &shape = s.hook_shapes[int(hook)];
    if (shape.empty()) {
        if (hook == Hook::z) fail("z() needs a forward call first");
        if (hook == Hook::pattern) fail("no attention pattern recorded: call set_record_pattern(true) before forward");
        fail(name, " was not recorded by the last forward: add it with set_recorded_hooks before forward");
    }
    if (hook == Hook::z) s.kernels->copy_to_host(HostArray::z);
    if (hook == Hook::pattern) s.kernels->copy_to_host(HostArray::pattern);
    return {s.hooks[int(hook)].data(), shape};
}

std::vector<int64_t> Attention::hook_shape(Hook hook, int64_t batch, int64_t seq_len) const {
    hook_name(hook);  // checks the value
    const State &s = *state_;
    return s.hook_shape(hook, batch, seq_len, (s.cache.allocated() ? s.cache_size : 0) + seq_len);
}

TensorView<float> Attention::pattern() const {
    return hook(Hook::pattern);
}

TensorView<float> Attention::z() const {
    return hook(Hook::z);
}

namespace {

// A cache of the element type the accessor returns, as [b, n_kv, max_seq_len, slot].
template <typename T>
TensorView<T> cache_view(KvCache &cache, Kernels &kernels, bool values, CacheType type) {
    const std::string array = values ? "v_cache" : "k_cache";
    auto accessor = [&](CacheType of) {
        return array + (of == CacheType::f32 ? "" : "_" + std::string(cache_type_name(of))) + "()";
    };
    if (!cache.allocated()) fail("no KV cache: call setup_cache first");
    if (cache.type() != type) {
        fail("the KV cache holds ", cache_type_name(cache.type()), " elements; read it with ", accessor(cache.type()),
             " or ", array, "_as_float(), not ", accessor(type));
    }
    cache.pull(kernels);
    return {static_cast<const T *>(values ? cache.v() : cache.k()),
            {cache.batch(), cache.num_kv_heads(), cache.capacity(), cache.slot_stride()}};
}

std::vector<float> cache_as_float(KvCache &cache, Kernels &kernels, bool values) {
    if (!cache.allocated()) fail("no KV cache: call setup_cache first");
    cache.pull(kernels);
    return cache.as_float(values ? cache.v() : cache.k());
}

}  // namespace

TensorView<float> Attention::k_cache() const {
    return cache_view<float>(state_->cache, *state_->kernels, false, CacheType::f32);
}

TensorView<float> Attention::v_cache() const {
    return cache_view<float>(state_->cache, *state_->kernels, true, CacheType::f32);
}

TensorView<uint16_t> Attention::k_cache_f16() const {
    return cache_view<uint16_t>(state_->cache, *state_->kernels, false, CacheType::f16);
}

TensorView<uint16_t> Attention::v_cache_f16() const {
    return cache_view<uint16_t>(state_->cache, *state_->kernels, true, CacheType::f16);
}

TensorView<uint16_t> Attention::k_cache_bf16() const {
    return cache_view<uint16_t>(state_->cache, *state_->kernels, false, CacheType::bf16);
}

TensorView<uint16_t> Attention::v_cache_bf16() const {
    return cache_view<uint16_t>(state_->cache, *state_->kernels, true, CacheType::bf16);
}

TensorView<int8_t> Attention::k_cache_int8() const {
    return cache_view<int8_t>(state_->cache, *state_->kernels, false, CacheType::int8);
}

TensorView<int8_t> Attention::v_cache_int8() const {
    return cache_view<int8_t>(state_->cache, *state_->kernels, true, CacheType::int8);
}

std::vector<float> Attention::k_cache_as_float() const {
    return cache_as_float(state_->cache, *state_->kernels, false);
}

std::vector<float> Attention::v_cache_as_float() const {
    return cache_as_float(state_->cache, *state_->kernels, true);
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

WeightType Attention::weight_type() const {
    return state_->weight_type;
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
    const RopeTables rope = make_rope_tables(config);
    const RopeCall call{.x = x.data,
                        .tokens = batch * seq_len,
                        .heads = heads,
                        .head_dim = config.head_dim,
                        .positions = positions.data(),
                        .out = out.data()};
    built_backend(resolve_backend(backend))->rope(rope, call);
}

}  // namespace gqa
