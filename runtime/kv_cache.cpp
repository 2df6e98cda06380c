#include "kv_cache.h"

#include <algorithm>
#include <atomic>

#include "layout.h"
#include "backend.h"

namespace gqa::detail {
namespace {

// Versions are unique across caches, so a device backend never mistakes a new
// cache at a reused address for the one it mirrors.
std::atomic<uint64_t> next_version{1};

}  // namespace

std::optional<int64_t> KvCache::elements(const LayerDims &dims, int64_t batch, int64_t capacity, int64_t limit) {
    const std::optional<int64_t> slots = product_within({batch, dims.num_kv_heads, capacity}, limit);
    if (!slots) return std::nullopt;
    return product_within({*slots + layout::kKeySlotPadding, dims.head_dim}, limit);
}

void KvCache::allocate(const LayerDims &dims, CacheType type, int batch, int capacity) {
    const size_t n = size_t(*elements(dims, batch, capacity, INT64_MAX));
    const size_t bytes = n * (type == CacheType::f16 ? sizeof(uint16_t) : sizeof(float));
    // Built aside and swapped in: a failed allocation leaves the old cache.
    AlignedVector<std::byte> k(bytes, std::byte{0}), v(bytes, std::byte{0});
    k_.swap(k), v_.swap(v);
    type_ = type, batch_ = batch, capacity_ = capacity;
    num_kv_heads_ = dims.num_kv_heads, head_dim_ = dims.head_dim, elements_ = n;
    host_written();
}

void KvCache::reserve_scratch(const LayerDims &dims, int batch, int capacity) {
    const size_t n = size_t(*elements(dims, batch, capacity, INT64_MAX));
    if (k_.size() < n * sizeof(float)) k_.resize(n * sizeof(float)), v_.resize(n * sizeof(float));
    type_ = CacheType::f32, batch_ = batch, capacity_ = capacity;
    num_kv_heads_ = dims.num_kv_heads, head_dim_ = dims.head_dim, elements_ = n;
    version_ = 0, newer_on_device_ = false;
}

void KvCache::release() {
    *this = KvCache();
}

double KvCache::load(const void *array, size_t index) const {
    if (type_ == CacheType::f16) return half_to_float(static_cast<const uint16_t *>(array)[index]);
    return static_cast<const float *>(array)[index];
}

void KvCache::store(void *array, size_t index, double value) {
    if (type_ == CacheType::f16) {
        static_cast<uint16_t *>(array)[index] = float_to_half(float(value));
    } else {
        static_cast<float *>(array)[index] = float(value);
    }
}

void KvCache::zero() {
    std::fill(k_.begin(), k_.end(), std::byte{0});
    std::fill(v_.begin(), v_.end(), std::byte{0});
    host_written();
}

void KvCache::zero_slots(int first, int count) {
    const size_t bytes = size_t(count) * slot_stride() * element_bytes();
    for (int row = 0; row < batch_; ++row) {
        for (int head = 0; head < num_kv_heads_; ++head) {
            const size_t at = slot_index(row, head, first) * element_bytes();
            std::fill_n(k_.begin() + at, bytes, std::byte{0});
            std::fill_n(v_.begin() + at, bytes, std::byte{0});
        }
    }
    host_written();
}

void KvCache::write_slots(const float *k, const float *v, int first, int n) {
    const size_t per_head = size_t(n) * head_dim_;
    for (int row = 0; row < batch_; ++row) {
        for (int head = 0; head < num_kv_heads_; ++head) {
            const size_t from = (size_t(row) * num_kv_heads_ + head) * per_head, to = slot_index(row, head, first);
            for (size_t e = 0; e < per_head; ++e) {
                store(k_.data(), to + e, k[from + e]);
                store(v_.data(), to + e, v[from + e]);
            }
        }
    }
    host_written();
}

void KvCache::pull(Kernels &kernels) {
    if (!newer_on_device_) return;
    kernels.copy_to_host(HostArray::kv_cache);
    newer_on_device_ = false;
}

void KvCache::host_written() {
    version_ = next_version++;
    newer_on_device_ = false;
}

}  // namespace gqa::detail
