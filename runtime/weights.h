// The projection weights in the layer's weight type, for the backends to pack.
#pragma once

#include <cstdint>
#include <vector>

#include "gqa/attention.hpp"

namespace gqa::detail {

// Every gqa::WeightType, in its order.
inline constexpr WeightType kWeightTypes[] = {WeightType::f32, WeightType::bf16, WeightType::f16, WeightType::int8};

// Symmetric int8 of `count` finite values with the scale s = max |x| / 127 given:
// q = round(x / s) (ties to even) in [-127, 127], 0 when s is 0. The int8 weights
// and the int8 KV cache both quantize so.
void quantize_int8_with_scale(const float *values, int64_t count, float scale, int8_t *q);

// The element type the layer keeps its weights in: config.weight_type, or the
// type the (validated) weights share.
WeightType stored_weight_type(const Config &config, const Weights &weights);

// `given` with wq, wk, wv and wo of type `type`: views of the caller's memory where
// they already are, else converted copies owned here (rounded to nearest even, or
// quantized to int8). A finite weight that overflows the type, or any non-finite
// one for int8, is a gqa::Error naming it. Lives while the backend packs them.
class TypedWeights {
public:
    TypedWeights(const Weights &given, WeightType type);
    TypedWeights(const TypedWeights &) = delete;
    TypedWeights &operator=(const TypedWeights &) = delete;

    const Weights &weights() const { return weights_; }

private:
    Weights weights_;
    std::vector<float> values_[4];
    std::vector<uint16_t> bits_[4];
    std::vector<int8_t> int8_[4];
    std::vector<float> scales_[4];
};

}  // namespace gqa::detail
