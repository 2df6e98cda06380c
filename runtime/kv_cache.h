// The KV cache as the runtime holds it, or the per-call scratch standing in for
// one. Everything about its memory lives here: the element type, the padded
// layout and its arithmetic, the values' conversions, and which copy (host or a
// device backend's) is the valid one. A new cache type is a change here plus the
// pipelines that read it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <vector>

#include "aligned_vector.h"
#include "gqa/attention.hpp"
#include "layout.h"

namespace gqa::detail {

class Kernels;

// The product of `factors` (each >= 0), or nullopt when it exceeds `limit`; never
// overflows.
inline std::optional<int64_t> product_within(std::initializer_list<int64_t> factors, int64_t limit) {
    int64_t product = 1;
    for (int64_t f : factors) {
        if (f != 0 && product > limit / f) return std::nullopt;
        product *= f;
    }
    return product;
}

// Every gqa::CacheType, in its order.
inline constexpr CacheType kCacheTypes[] = {CacheType::f32, CacheType::f16, CacheType::bf16, CacheType::int8};

// Entries of a granule table (layout::kCacheGranule) covering key slots [0, kv_len)
// rounded up to whole chunks of layout::kKeySlotPadding, which the attend pipelines read.
inline int granule_table_length(int kv_len) {
    constexpr int P = layout::kKeySlotPadding;
    return (kv_len + P - 1) / P * (P / layout::kCacheGranule);
}

struct LayerDims {
    int embed_dim, num_heads, num_kv_heads, head_dim;
    int group() const { return num_heads / num_kv_heads; }
    int q_width() const { return num_heads * head_dim; }
    int kv_width() const { return num_kv_heads * head_dim; }
};

// k and v, each [batch, n_kv, capacity, slot] row-major and then key-slot padding
// (layout::kKeySlotPadding slots: the attend pipelines read whole chunks of slots
// past the valid ones, masked). A slot is hd elements: fp32, fp16 bits or bfloat16
// bits; or for int8 hd values and their scale's bytes (layout::kInt8CacheScaleBytes).
class KvCache {
public:
    // Elements of one slot of a cache of `type`.
    static int64_t slot_elements(const LayerDims &dims, CacheType type);
    // Elements of each of k and v for this size, padding included; nullopt when more
    // than `limit`.
    static std::optional<int64_t> elements(const LayerDims &dims, CacheType type, int64_t batch, int64_t capacity,
                                           int64_t limit);
    static size_t element_bytes(CacheType type);

    // A zero-filled cache, replacing the contents. A failed allocation throws
    // std::bad_alloc and leaves the cache as it was. Sizes already validated.
    void allocate(const LayerDims &dims, CacheType type, int batch, int capacity);
    // Per-call scratch (fp32): grown to hold batch x capacity, never shrunk; its
    // contents are not kept from one call to the next.
    void reserve_scratch(const LayerDims &dims, int batch, int capacity);
    void release();

    bool allocated() const { return capacity_ > 0; }
    CacheType type() const { return type_; }
    int batch() const { return batch_; }
    int capacity() const { return capacity_; }
    int num_kv_heads() const { return num_kv_heads_; }
    int head_dim() const { return head_dim_; }
    size_t element_bytes() const { return element_bytes(type_); }
    size_t elements() const { return elements_; }
    size_t bytes() const { return elements_ * element_bytes(); }
    // Strides in elements between neighbouring slots, kv heads and batch rows.
    int64_t slot_stride() const { return slot_stride_; }
    int64_t head_stride() const { return int64_t(capacity_) * slot_stride_; }
    int64_t row_stride() const { return head_stride() * num_kv_heads_; }
    // The first element of `slot` of kv head `head` in batch row `row`.
    size_t slot_index(int row, int head, int slot) const {
        return size_t(row) * row_stride() + size_t(head) * head_stride() + size_t(slot) * slot_stride();
    }

    void *k() { return k_.data(); }
    void *v() { return v_.data(); }
    const void *k() const { return k_.data(); }
    const void *v() const { return v_.data(); }

    // Value e of the slot starting at element `slot` as the pipelines read it
    // (widened; int8: q * s, exact).
    float load(const void *array, size_t slot, int e) const;
    // A slot's hd values, converted to the type as the store pipelines convert them.
    void store(void *array, size_t slot, const float *values);
    // All of k or v as fp32, [batch, n_kv, capacity, hd].
    std::vector<float> as_float(const void *array) const;

    // Host writes (each makes the host copy the valid one). The host copy must be
    // current first (pull) where older slots are to survive.
    void zero();
    void zero_slots(int first, int count);
    // k and v [batch, n_kv, n, hd] into slots [first, first + n), rounded to the type.
    void write_slots(const float *k, const float *v, int first, int n);
    // One slot's k and v (hd values each) of kv head `head` in row `row`, rounded to the type.
    void write_slot(int row, int head, int slot, const float *k, const float *v);
    // Slots [from, from + n) of every kv head and row, k and v, copied as stored to
    // slots [to, to + n).
    void copy_slots(int from, int to, int n);

    // Where the valid copy lives. A device backend mirrors the cache and uploads
    // the host's copy whenever version() differs from the one it holds; 0 marks
    // scratch, whose contents need not survive. After a forward wrote the device's
    // copy the layer marks it newer, and pull() brings it back before the host's
    // is read or written.
    uint64_t version() const { return version_; }
    void written_on_device() { newer_on_device_ = true; }
    void pull(Kernels &kernels);

private:
    void host_written();

    CacheType type_ = CacheType::f32;
    int batch_ = 0, capacity_ = 0, num_kv_heads_ = 0, head_dim_ = 0;
    int64_t slot_stride_ = 0;
    size_t elements_ = 0;
    // Element storage, by type_.
    AlignedVector<std::byte> k_, v_;
    uint64_t version_ = 0;
    bool newer_on_device_ = false;
};

}  // namespace gqa::detail
