// Heap arrays that start on a cache line. malloc aligns to 16 bytes, so half the
// 64-byte vector loads of an AVX-512 kernel would straddle two lines; the packed
// weights, the KV cache and the scratch the pipelines stream through use this.
#pragma once

#include <cstddef>
#include <new>
#include <vector>

namespace gqa::detail {

inline constexpr std::size_t kCacheLine = 64;

template <typename T>
struct CacheLineAllocator {
    using value_type = T;

    CacheLineAllocator() = default;
    template <typename U>
    CacheLineAllocator(const CacheLineAllocator<U> &) {}

    T *allocate(std::size_t n) {
        return static_cast<T *>(::operator new(n * sizeof(T), std::align_val_t{kCacheLine}));
    }
    void deallocate(T *p, std::size_t) {
        ::operator delete(p, std::align_val_t{kCacheLine});
    }

    template <typename U>
    bool operator==(const CacheLineAllocator<U> &) const {
        return true;
    }
    template <typename U>
    bool operator!=(const CacheLineAllocator<U> &) const {
        return false;
    }
};

template <typename T>
using AlignedVector = std::vector<T, CacheLineAllocator<T>>;

}  // namespace gqa::detail
