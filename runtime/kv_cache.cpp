#include "kv_cache.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>

#include "layout.h"
#include "backend.h"
#include "validation.h"
#include "weights.h"

namespace gqa {

std::string_view cache_type_name(CacheType type) {
    switch (type) {
    case CacheType::f32: return "f32";
    case CacheType::f16: return "f16";
    case CacheType::bf16: return "bf16";
    case CacheType::int8: return "int8";
    }
    detail::fail("cache type ", int(type), " is not f32, f16, bf16 or int8");
}

CacheType cache_type_from_name(std::string_view name) {
    for (CacheType type : detail::kCacheTypes) {
        if (cache_type_name(type) == name) return type;
    }
    detail::fail("cache type '", std::string(name), "' is not one of f32, f16, bf16, int8");
}

}  // namespace gqa

namespace gqa::detail {
namespace {

// Versions are unique across caches, so a device backend never mistakes a new
// cache at a reused address for the one it mirrors.
std::atomic<uint64_t> next_version{1};

}  // namespace

int64_t KvCache::slot_elements(const LayerDims &dims, CacheType type) {
    return dims.head_dim + (type == CacheType::int8 ? layout::kInt8CacheScaleBytes : 0);
}

std::optional<int64_t> KvCache::elements(const LayerDims &dims, CacheType type, int64_t batch, int64_t capacity,
                                         int64_t limit) {
    const std::optional<int64_t> slots = product_within({batch, dims.num_kv_heads, capacity}, limit);
    if (!slots) return std::nullopt;
    return product_within({*slots + layout::kKeySlotPadding, slot_elements(dims, type)}, limit);
}

size_t KvCache::element_bytes(CacheType type) {
    switch (type) {
    case CacheType::f32: return sizeof(float);
    case CacheType::f16:
    case CacheType::bf16: return sizeof(uint16_t);
    case CacheType::int8: return sizeof(int8_t);
    }
    return sizeof(float);
}

void KvCache::allocate(const LayerDims &dims, CacheType type, int batch, int capacity) {
    const size_t n = size_t(*elements(dims, type, batch, capacity, INT64_MAX));
    // Built aside and swapped in: a failed allocation leaves the old cache.
    AlignedVector<std::byte> k(n * element_bytes(type), std::byte{0}), v(n * element_bytes(type), std::byte{0});
    k_.swap(k), v_.swap(v);
    type_ = type, batch_ = batch, capacity_ = capacity;
    num_kv_heads_ = dims.num_kv_heads, head_dim_ = dims.head_dim, elements_ = n;
    slot_stride_ = slot_elements(dims, type);
    host_written();
}

void KvCache::reserve_scratch(const LayerDims &dims, int batch, int capacity) {
    const size_t n = size_t(*elements(dims, CacheType::f32, batch, capacity, INT64_MAX));
    if (k_.size() < n * sizeof(float)) k_.resize(n * sizeof(float)), v_.resize(n * sizeof(float));
    type_ = CacheType::f32, batch_ = batch, capacity_ = capacity;
    num_kv_heads_ = dims.num_kv_heads, head_dim_ = dims.head_dim, elements_ = n;
    slot_stride_ = slot_elements(dims, CacheType::f32);
    version_ = 0, newer_on_device_ = false;
}

void KvCache::release() {
    *this = KvCache();
}

namespace {

// A slot's scale from its largest magnitude, as the store pipelines compute it
// (generators/attention_algorithm.cpp): times 1/127, rounded to
// layout::kInt8CacheScaleBits significant bits.
float int8_slot_scale_of(float largest) {
    const float product = largest * (1.f / 127.f);
    uint32_t bits;
    std::memcpy(&bits, &product, sizeof bits);
    const uint32_t dropped = (uint32_t(1) << (24 - layout::kInt8CacheScaleBits)) - 1;
    bits = (bits + (dropped + 1) / 2) & ~dropped;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return scale;
}

float int8_slot_scale(const std::byte *slot, int head_dim) {
    float scale;
    std::memcpy(&scale, slot + head_dim, sizeof scale);  // little-endian, as the pipelines assemble it
    return scale;
}

}  // namespace

float KvCache::load(const void *array, size_t slot, int e) const {
    switch (type_) {
    case CacheType::f32: return static_cast<const float *>(array)[slot + e];
    case CacheType::f16: return half_to_float(static_cast<const uint16_t *>(array)[slot + e]);
    case CacheType::bf16: return bfloat16_to_float(static_cast<const uint16_t *>(array)[slot + e]);
    case CacheType::int8: {
        const auto *bytes = static_cast<const std::byte *>(array) + slot;
        return float(static_cast<const int8_t *>(array)[slot + e]) * int8_slot_scale(bytes, head_dim_);
    }
    }
    return 0.f;
}

void KvCache::store(void *array, size_t slot, const float *values) {
    switch (type_) {
    case CacheType::f32: std::copy_n(values, head_dim_, static_cast<float *>(array) + slot); return;
    case CacheType::f16:
        for (int e = 0; e < head_dim_; ++e) static_cast<uint16_t *>(array)[slot + e] = float_to_half(values[e]);
        return;
    case CacheType::bf16:
        for (int e = 0; e < head_dim_; ++e) static_cast<uint16_t *>(array)[slot + e] = float_to_bfloat16(values[e]);
        return;
    case CacheType::int8: {
        float largest = 0.f;
        bool finite = true;
        for (int e = 0; e < head_dim_; ++e) {
            finite = finite && std::isfinite(values[e]);
            largest = std::max(largest, std::fabs(values[e]));
        }
        auto *q = static_cast<int8_t *>(array) + slot;
        const float scale = finite ? int8_slot_scale_of(largest) : std::numeric_limits<float>::quiet_NaN();
        if (finite) {
            quantize_int8_with_scale(values, head_dim_, scale, q);
        } else {
            std::fill_n(q, head_dim_, int8_t(0));
        }
        std::memcpy(q + head_dim_, &scale, sizeof scale);
        return;
    }
    }
}

std::vector<float> KvCache::as_float(const void *array) const {
    std::vector<float> values(size_t(batch_) * num_kv_heads_ * capacity_ * head_dim_);
    float *out = values.data();
    for (int row = 0; row < batch_; ++row) {
        for (int head = 0; head < num_kv_heads_; ++head) {
            for (int slot = 0; slot < capacity_; ++slot) {
                const size_t at = slot_index(row, head, slot);
                for (int e = 0; e < head_dim_; ++e) *out++ = load(array, at, e);
            }
        }
    }
    return values;
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
    for (int row = 0; row < batch_; ++row) {
        for (int head = 0; head < num_kv_heads_; ++head) {
            const float *k_head = k + (size_t(row) * num_kv_heads_ + head) * n * head_dim_;
            const float *v_head = v + (k_head - k);
            for (int slot = 0; slot < n; ++slot) {
                store(k_.data(), slot_index(row, head, first + slot), k_head + size_t(slot) * head_dim_);
                store(v_.data(), slot_index(row, head, first + slot), v_head + size_t(slot) * head_dim_);
            }
        }
    }
    host_written();
}

void KvCache::write_slot(int row, int head, int slot, const float *k, const float *v) {
    store(k_.data(), slot_index(row, head, slot), k);
    store(v_.data(), slot_index(row, head, slot), v);
    host_written();
}

void KvCache::copy_slots(int from, int to, int n) {
    const size_t bytes = size_t(n) * slot_stride() * element_bytes();
    for (int row = 0; row < batch_; ++row) {
        for (int head = 0; head < num_kv_heads_; ++head) {
            const size_t source = slot_index(row, head, from) * element_bytes();
            const size_t target = slot_index(row, head, to) * element_bytes();
            std::copy_n(k_.begin() + source, bytes, k_.begin() + target);
            std::copy_n(v_.begin() + source, bytes, v_.begin() + target);
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
