// binary16 and bfloat16 conversions written out, so the reference backend and
// callers get the same rounding on every compiler and CPU (round to nearest, ties
// to even, with subnormals, infinities and NaN), matching the pipelines' casts.
#include <cmath>
#include <cstring>

#include "gqa/attention.hpp"

namespace gqa {

uint16_t float_to_half(float value) {
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    const uint16_t sign = uint16_t((bits >> 16) & 0x8000u);
    bits &= 0x7fffffffu;
    if (bits > 0x7f800000u) return sign | 0x7e00u;  // NaN stays NaN (quiet)
    if (bits >= 0x38800000u) {                       // normal in fp16, or overflow
        // Rebias the exponent (127 -> 15) and drop 13 mantissa bits; a carry out of
        // the mantissa bumps the exponent, and past the largest finite gives inf.
        uint32_t half = (bits - 0x38000000u) >> 13;
        const uint32_t dropped = bits & 0x1fffu;
        if (dropped > 0x1000u || (dropped == 0x1000u && (half & 1u))) ++half;
        return sign | uint16_t(half >= 0x7c00u ? 0x7c00u : half);
    }
    if (bits < 0x33000000u) return sign;  // at most 2^-25: rounds to zero
    // Subnormal: value / 2^-24, with the implicit bit, rounded.
    const uint32_t exponent = bits >> 23, mantissa = (bits & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - exponent;
    uint32_t half = mantissa >> shift;
    const uint32_t dropped = mantissa & ((1u << shift) - 1), tie = 1u << (shift - 1);
    if (dropped > tie || (dropped == tie && (half & 1u))) ++half;
    return sign | uint16_t(half);
}

float half_to_float(uint16_t half) {
    const uint32_t sign = uint32_t(half & 0x8000u) << 16;
    const uint32_t exponent = (half >> 10) & 0x1fu, mantissa = half & 0x3ffu;
    uint32_t bits;
    if (exponent == 0x1f) {
        bits = sign | 0x7f800000u | (mantissa << 13);
    } else if (exponent != 0) {
        bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
    } else {
        const float magnitude = std::ldexp(float(mantissa), -24);  // zero or subnormal
        return sign ? -magnitude : magnitude;
    }
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
}

uint16_t float_to_bfloat16(float value) {
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x0040u);  // NaN stays NaN (quiet)
    // Round the dropped 16 bits to nearest, ties to the even upper half; a carry
    // moves into the exponent, and past the largest finite to infinity.
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return uint16_t(bits >> 16);
}

float bfloat16_to_float(uint16_t bits) {
    const uint32_t widened = uint32_t(bits) << 16;
    float value;
    std::memcpy(&value, &widened, sizeof value);
    return value;
}

}  // namespace gqa
