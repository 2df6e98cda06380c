// Weight types: their names, reading one element, and converting a layer's
// projection weights to the type it keeps them in.
#include "weights.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "layout.h"

#include "validation.h"

namespace gqa {

std::string_view weight_type_name(WeightType type) {
    switch (type) {
    case WeightType::f32: return "f32";
    case WeightType::bf16: return "bf16";
    case WeightType::f16: return "f16";
    case WeightType::int8: return "int8";
    }
    detail::fail("weight type ", int(type), " is not f32, bf16, f16 or int8");
}

WeightType weight_type_from_name(std::string_view name) {
    for (WeightType type : detail::kWeightTypes) {
        if (weight_type_name(type) == name) return type;
    }
    detail::fail("weight type '", std::string(name), "' is not one of f32, bf16, f16, int8");
}

float WeightView::value(int64_t index) const {
    switch (type) {
    case WeightType::f32: return static_cast<const float *>(data)[index];
    case WeightType::bf16: return bfloat16_to_float(static_cast<const uint16_t *>(data)[index]);
    case WeightType::f16: return half_to_float(static_cast<const uint16_t *>(data)[index]);
    case WeightType::int8: {
        const int64_t in = shape.back(), groups = (in + layout::kWeightGroup - 1) / layout::kWeightGroup;
        const float scale = scales[index / in * groups + index % in / layout::kWeightGroup];
        return float(static_cast<const int8_t *>(data)[index]) * scale;
    }
    }
    return 0.f;
}

namespace detail {

WeightType stored_weight_type(const Config &config, const Weights &weights) {
    return config.weight_type.value_or(weights.wq.type);
}

void quantize_int8_with_scale(const float *values, int64_t count, float scale, int8_t *q) {
    for (int64_t n = 0; n < count; ++n) {
        const float rounded = scale > 0.f ? std::nearbyint(values[n] / scale) : 0.f;
        q[n] = int8_t(std::clamp(rounded, -127.f, 127.f));
    }
}

namespace {

// Each group of kWeightGroup inputs of a row as round(w / s), s = max |w| / 127.
void quantize_int8(const char *name, const WeightView &view, std::vector<int8_t> &values, std::vector<float> &scales) {
    const int64_t rows = view.shape[0], in = view.shape[1];
    const int64_t groups = (in + layout::kWeightGroup - 1) / layout::kWeightGroup;
    allocate("quantized weights", size_t(rows * in), sizeof(int8_t), [&] { values.resize(size_t(rows * in)); });
    allocate("weight scales", size_t(rows * groups), sizeof(float), [&] { scales.resize(size_t(rows * groups)); });
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t g = 0; g < groups; ++g) {
            const int64_t begin = g * layout::kWeightGroup, end = std::min(in, begin + layout::kWeightGroup);
            float group[layout::kWeightGroup];  // the group's values, widened once
            float largest = 0.f;
            for (int64_t c = begin; c < end; ++c) {
                const float w = group[c - begin] = view.value(r * in + c);
                if (!std::isfinite(w)) fail(name, "[", r, ", ", c, "] is ", w, ", which int8 weights cannot hold");
                largest = std::max(largest, std::fabs(w));
            }
            const float scale = scales[size_t(r * groups + g)] = largest / 127.f;
            quantize_int8_with_scale(group, end - begin, scale, &values[size_t(r * in + begin)]);
        }
    }
}

}  // namespace

TypedWeights::TypedWeights(const Weights &given, WeightType type) : weights_(given) {
    WeightView *views[4] = {&weights_.wq, &weights_.wk, &weights_.wv, &weights_.wo};
    const char *names[4] = {"wq", "wk", "wv", "wo"};
    for (int n = 0; n < 4; ++n) {
        WeightView &view = *views[n];
        if (view.type == type) continue;
        const int64_t count = view.numel();
        if (type == WeightType::int8) {
            quantize_int8(names[n], view, int8_[n], scales_[n]);
            view = WeightView(int8_[n].data(), scales_[n].data(), view.shape);
            continue;
        }
        if (type == WeightType::f32) {
            std::vector<float> &values = values_[n];
            allocate("converted weights", size_t(count), sizeof(float), [&] { values.resize(size_t(count)); });
            for (int64_t i = 0; i < count; ++i) values[size_t(i)] = view.value(i);
            view = WeightView(values.data(), view.shape);
            continue;
        }
        std::vector<uint16_t> &bits = bits_[n];
        allocate("converted weights", size_t(count), sizeof(uint16_t), [&] { bits.resize(size_t(count)); });
        const bool to_bf16 = type == WeightType::bf16;
        for (int64_t i = 0; i < count; ++i) {
            const float value = view.value(i);
            const uint16_t rounded = to_bf16 ? float_to_bfloat16(value) : float_to_half(value);
            const float back = to_bf16 ? bfloat16_to_float(rounded) : half_to_float(rounded);
            if (std::isfinite(value) && !std::isfinite(back)) {
                const int64_t columns = view.shape.back();
                fail(names[n], "[", i / columns, ", ", i % columns, "] is ", value, ", which overflows ",
                     weight_type_name(type), " (config.weight_type)");
            }
            bits[size_t(i)] = rounded;
        }
        view = WeightView(bits.data(), view.shape, type);
    }
}

}  // namespace detail
}  // namespace gqa
