// Memory layouts shared by the generated pipelines and the runtime that feeds them.
// Plain constants, no Halide: the runtime includes this file too.
#pragma once

namespace gqa::layout {

// Projection weights are packed once into panels of this many output features:
// packed(o % kWeightPanel, i, o / kWeightPanel) = W[o][i] (torch nn.Linear [out, in]).
// One panel row is 64 contiguous floats, so a GEMM register tile (or a GEMV
// stream) reads each weight exactly once, contiguously. The last panel is
// zero-padded.
inline constexpr int kWeightPanel = 64;

// int8 weights: one fp32 scale per this many consecutive inputs of an output row
// (llama.cpp's Q8_0 blocks hold as many).
inline constexpr int kWeightGroup = 32;

// The attention pipelines read K/V in whole chunks of key slots, up to the valid
// length rounded up to this multiple (those extra slots are masked out). The
// runtime pads every cache's capacity to a multiple of it so the reads stay inside.
inline constexpr int kKeySlotPadding = 64;

// The attention pipelines find a row's key slots through a table, a granule of this
// many consecutive slots at a time: key slot t of row b lies in cache slot
// t + table(t / kCacheGranule, b), each entry the offset of its granule. A contiguous
// cache is a table of zeros; a paged one (runtime/paged_cache.h) lays blocks of a
// multiple of this many slots anywhere in its pool. An offset rather than a slot
// keeps the neighbouring keys of one granule at constant distances, as the x86
// decode's addressing wants them. It divides kKeySlotPadding, and a decode step's
// keys (one vector's worth) share one entry.
inline constexpr int kCacheGranule = 16;
static_assert(kKeySlotPadding % kCacheGranule == 0);

// An int8 KV cache slot holds the head_dim values q of one (token, kv head), then
// the fp32 scale s they share, as this many bytes (little-endian); a value reads as
// q * s. Kept beside its values, as llama.cpp's q8_0 blocks do, so the cache stays
// one array for k and one for v, and a slot is head_dim + 4 bytes.
inline constexpr int kInt8CacheScaleBytes = 4;
// s keeps this many significant bits (its fp32 mantissa rounded, ties up), so that
// q * s (|q| <= 127: 7 bits) is exact in fp32 and quantizing the values a slot
// reads as gives back the same q and s.
inline constexpr int kInt8CacheScaleBits = 17;

// Rotary-embedding style codes, passed to the pipelines as a scalar.
inline constexpr int kRopeNone = 0;
inline constexpr int kRopeInterleaved = 1;  // torchtune / GPT-J: pairs (2j, 2j+1)
inline constexpr int kRopeRotateHalf = 2;   // GPT-NeoX / HF Llama: pairs (j, j + R/2)

// q/k normalisation codes (gqa::QkNorm), passed to the project pipeline as a scalar.
inline constexpr int kQkNormNone = 0;
inline constexpr int kQkNormPerHead = 1;   // RMS over each head's head_dim values
inline constexpr int kQkNormAllHeads = 2;  // RMS over all of a token's q (and k) values

}  // namespace gqa::layout
