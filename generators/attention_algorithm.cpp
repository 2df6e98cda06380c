#include "attention_algorithm.h"

#include <limits>
#include <stdexcept>

#include "layout.h"

namespace gqa::algo {

using namespace Halide;

namespace {

// The packed weights (o % panel, i, o / panel) widened to fp32.
Func widened_panels(const std::string &name, const Func &packed_weight, const Func &packed_scales,
                    WeightType weight_type, HalfWidening half_widening) {
    Var lane("lane"), i("i"), p("p");
    Func panels(name);
    panels(lane, i, p) = widen_weight(packed_weight(lane, i, p), packed_scales(lane, i / layout::kWeightGroup, p),
                                      weight_type, half_widening);
    return panels;
}

}  // namespace

Linear define_linear(const std::string &name, const Func &x, const Func &packed_weight, const Func &packed_scales,
                     WeightType weight_type, HalfWidening half_widening, const Func &bias, const Expr &in_dim,
                     const Expr &tokens, int panel, int token_group, bool scale_group_sums) {
    Linear l;
    l.product = Func(name + "_product");
    l.result = Func(name);
    l.panels = widened_panels(name + "_panels", packed_weight, packed_scales, weight_type, half_widening);
    l.weight = Func(name + "_weight");
    l.narrow_weights = weight_type != WeightType::f32;
    l.input = x;
    l.token_group = token_group;
    l.k = RDom(0, in_dim, name + "_k");

    Var o = l.o, m = l.m, i("i"), j("j"), g("g");
    l.weight(o, i) = l.panels(o % panel, i, o / panel);
    l.product(o, m) = 0.f;
    // Clamped rows let a schedule compute whole register tiles past the last token;
    // those rows are never stored.
    if (scale_group_sums) {
        if (weight_type != WeightType::int8 || token_group != 1) {
            throw std::invalid_argument("scale_group_sums needs int8 weights and x read in place");
        }
        constexpr int G = layout::kWeightGroup;
        Var group("group");
        l.group_sums = Func(name + "_group_sums");
        l.group_members = RDom(0, G, name + "_members");
        l.group_members.where(group * G + l.group_members < in_dim);
        l.k = RDom(0, (in_dim + G - 1) / G, name + "_groups");
        // The predicate skips a partial group's missing inputs; bounds inference does
        // not see it, so the index is clamped to the buffers as well.
        const Expr input = min(group * G + l.group_members, in_dim - 1);
        l.group_sums(o, group, m) = 0.f;
        l.group_sums(o, group, m) +=
            x(input, min(m, tokens - 1)) * cast<float>(packed_weight(o % panel, input, o / panel));
        l.product(o, m) += packed_scales(o % panel, l.k, o / panel) * l.group_sums(o, l.k, m);
    } else if (token_group > 1) {
        l.grouped_rows = Func(name + "_grouped_rows");
        l.grouped_rows(j, i, g) = x(i, min(g * token_group + j, tokens - 1));
        l.product(o, m) += l.grouped_rows(m % token_group, l.k, m / token_group) * l.weight(o, l.k);
    } else {
        l.product(o, m) += x(l.k, min(m, tokens - 1)) * l.weight(o, l.k);
    }
    l.result(o, m) = l.product(o, m) + bias(o);
    return l;
}

Expr rotate(const std::function<Expr(Expr)> &at, const Expr &d, const Expr &head_dim, const Expr &pos,
            const Func &cos_table, const Func &sin_table, const Expr &style, const Expr &rotary_dim) {
    const Expr half = rotary_dim / 2;
    const Expr partner = select(style == layout::kRopeInterleaved, select(d % 2 == 0, d + 1, d - 1),
                                select(d < half, d + half, select(d < rotary_dim, d - half, d)));
    // The clamp only keeps bounds inference inside the head.
    return at(d) * cos_table(d, pos) + at(clamp(partner, 0, head_dim - 1)) * sin_table(d, pos);
}

namespace {

Expr clamped_position(const RopeInputs &rope, const Expr &m) {
    return clamp(rope.positions(m), 0, rope.table_len - 1);
}

// A value of a 16-bit or fp32 cache as stored.
Expr to_cache_element(CacheType cache_type, const Type &storage, const Expr &value) {
    if (cache_type == CacheType::bf16) return narrow_bfloat16(value);
    return storage == UInt(16) ? narrow_half(value) : cast(storage, value);
}

const uint32_t kMagnitudeBits = 0x7fffffff, kInfinityBits = 0x7f800000;

// The int8 scale of the slot values(0 .. head_dim - 1, kvh, token), (kvh, token);
// amax_bits receives the largest magnitude's bits. Compared as bits: ordered like
// the magnitudes of finite floats, above them for infinity and NaN, and immune to
// LLVM's no-NaN assumption.
Func slot_scale(const std::string &name, const Func &values, const Expr &head_dim, Func amax_bits) {
    Var kvh("kvh"), token("token");
    RDom dims(0, head_dim, name + "_dims");
    amax_bits(kvh, token) = Expr(uint32_t(0));
    amax_bits(kvh, token) =
        max(amax_bits(kvh, token), reinterpret<uint32_t>(values(dims, kvh, token)) & Expr(kMagnitudeBits));
    Func scale(name);
    const Expr bits = amax_bits(kvh, token);
    // Times the fp32 constant 1/127, not divided by 127: Halide makes that division
    // this product on some targets, and the runtime must compute the same scale.
    // Then rounded to layout::kInt8CacheScaleBits with integer operations.
    const Expr product = reinterpret<uint32_t>(reinterpret<float>(bits) * (1.f / 127.f));
    const uint32_t dropped = (uint32_t(1) << (24 - layout::kInt8CacheScaleBits)) - 1;
    const Expr rounded = (product + Expr((dropped + 1) / 2)) & Expr(~dropped);
    scale(kvh, token) =
        select(bits >= Expr(kInfinityBits), reinterpret<float>(Expr(uint32_t(0x7fc00000))), reinterpret<float>(rounded));
    return scale;
}

// x rounded to the nearest integer, ties to even, for |x| < 2^23. Spelled out:
// Halide 14's round() becomes OpenCL C's round(), which rounds ties away from zero.
Expr round_half_even(const Expr &x) {
    const Expr below = floor(x), fraction = x - below;
    const Expr odd = (cast<int32_t>(below) & 1) == 1;
    return select(fraction > 0.5f || (fraction == 0.5f && odd), below + 1.f, below);
}

// Element d of an int8 slot: q_d for d < head_dim, then the scale's bytes.
Expr quantized_element(const Func &values, const Func &scale, const Expr &head_dim, const Expr &d, const Expr &kvh,
                       const Expr &token) {
    const Expr s = scale(kvh, token), bits = reinterpret<uint32_t>(s);
    const Expr no_values = bits == Expr(uint32_t(0)) || (bits & Expr(kMagnitudeBits)) > Expr(kInfinityBits);
    const Expr q = clamp(round_half_even(values(min(d, head_dim - 1), kvh, token) / s), -127.f, 127.f);
    const Expr scale_byte = cast<int8_t>(bits >> cast<uint32_t>(8 * clamp(d - head_dim, 0, 3)));
    return select(d >= head_dim, scale_byte, no_values, cast<int8_t>(0), cast<int8_t>(q));
}

// The scale of slot (slot, kvh, b) of an int8 cache, from its bytes.
Expr stored_scale(const Func &cache, const Expr &head_dim, const Expr &slot, const Expr &kvh, const Expr &b) {
    Expr bits = Expr(uint32_t(0));
    for (int byte = 0; byte < layout::kInt8CacheScaleBytes; ++byte) {
        bits = bits | (cast<uint32_t>(cast<uint8_t>(cache(head_dim + byte, slot, kvh, b))) << (8 * byte));
    }
    return reinterpret<float>(bits);
}

}  // namespace

namespace {

// Value o of a token's q, and of its k, normalised where the norm asks.
struct NormedValues {
    std::function<Expr(const Expr &, const Expr &)> q, k;
};

// The q/k norms over qkv(o, m), the fused projection's output (q, then k, then v).
NormedValues define_qk_norm(QkNormSums &p, const Func &qkv, const QkNormInputs &norm, const ProjectShape &shape) {
    const Expr hd = shape.head_dim;
    const Expr q_width = shape.num_heads * hd, kv_width = shape.num_kv_heads * hd;
    Var g = p.g, m = p.m;
    // The mean of squares in fp32, as transformers' RMSNorm computes it.
    const Expr all_heads = norm.mode == layout::kQkNormAllHeads;
    const Expr q_group = select(all_heads, q_width, hd), k_group = select(all_heads, kv_width, hd);
    p.q_values = RDom(0, q_group, "q_values");
    p.k_values = RDom(0, k_group, "k_values");
    p.q_sum_squares = Func("q_sum_squares");
    p.k_sum_squares = Func("k_sum_squares");
    p.q_sum_squares(g, m) = 0.f;
    p.q_sum_squares(g, m) += pow(qkv(g * q_group + p.q_values, m), 2);
    p.k_sum_squares(g, m) = 0.f;
    p.k_sum_squares(g, m) += pow(qkv(q_width + g * k_group + p.k_values, m), 2);
    p.qk_norm_mode = norm.mode;
    auto inv_rms = [=](const Func &sum_squares, const Expr &group_size, const Expr &group, const Expr &token) {
        return 1.f / sqrt(sum_squares(group, token) / cast<float>(group_size) + norm.eps);
    };
    NormedValues values;
    const Func q_sums = p.q_sum_squares, k_sums = p.k_sum_squares;
    values.q = [=](const Expr &o, const Expr &token) {
        return select(norm.mode == layout::kQkNormNone, qkv(o, token),
                      qkv(o, token) * inv_rms(q_sums, q_group, o / q_group, token) * norm.weight(o));
    };
    values.k = [=](const Expr &o, const Expr &token) {
        return select(norm.mode == layout::kQkNormNone, qkv(q_width + o, token),
                      qkv(q_width + o, token) * inv_rms(k_sums, k_group, o / k_group, token) *
                          norm.weight(q_width + o));
    };
    return values;
}

}  // namespace

Project define_project(const Func &x, const Func &packed_weight, const Func &packed_scales, WeightType weight_type,
                       HalfWidening half_widening, const Func &bias, const QkNormInputs &norm, const RopeInputs &rope,
                       const ProjectShape &shape, int panel, int token_group, bool scale_group_sums, Func q_out,
                       Func k_out, Func v_out) {
    Project p;
    const Expr hd = shape.head_dim;
    const Expr q_width = shape.num_heads * hd, kv_width = shape.num_kv_heads * hd;
    p.qkv = define_linear("qkv", x, packed_weight, packed_scales, weight_type, half_widening, bias,
                          shape.embed_dim, shape.tokens, panel, token_group, scale_group_sums);
    const Func qkv = p.qkv.result;
    Var d = p.d, h = p.h, m = p.m, kvh = p.kvh;
    const NormedValues normed = define_qk_norm(p, qkv, norm, shape);
    q_out(d, h, m) = rotate([&](Expr dd) { return normed.q(h * hd + dd, m); }, d, hd, clamped_position(rope, m),
                            rope.cos_table, rope.sin_table, rope.style, rope.rotary_dim);
    k_out(d, kvh, m) = rotate([&](Expr dd) { return normed.k(kvh * hd + dd, m); }, d, hd, clamped_position(rope, m),
                              rope.cos_table, rope.sin_table, rope.style, rope.rotary_dim);
    v_out(d, kvh, m) = qkv(q_width + kv_width + kvh * hd + d, m);
    p.q = q_out;
    p.k_new = k_out;
    p.v_new = v_out;
    return p;
}

ProjectHeads define_project_heads(const Func &x_q, const Func &x_k, const Func &x_v, const Expr &split_inputs,
                                  const Func &packed_weight, const Func &packed_scales, WeightType weight_type,
                                  HalfWidening half_widening, const Func &bias, const QkNormInputs &norm,
                                  const ProjectShape &shape, int panel, Func q_out, Func k_out, Func v_out) {
    ProjectHeads p;
    const Expr hd = shape.head_dim;
    const Expr q_width = shape.num_heads * hd, kv_width = shape.num_kv_heads * hd;
    Var o = p.o, m = p.m, d = p.d, h = p.h, kvh = p.kvh;
    p.panels = widened_panels("qkv_heads_panels", packed_weight, packed_scales, weight_type, half_widening);
    p.k = RDom(0, shape.embed_dim, "qkv_heads_k");
    // Output o's input head; the clamps keep bounds inference inside each input.
    auto head = [&](const Expr &first, const Expr &heads) {
        return select(split_inputs != 0, clamp((o - first) / hd, 0, heads - 1), 0);
    };
    const Expr token = min(m, shape.tokens - 1);
    const Expr input = select(o < q_width, x_q(p.k, head(0, shape.num_heads), token),
                              o < q_width + kv_width, x_k(p.k, head(q_width, shape.num_kv_heads), token),
                              x_v(p.k, head(q_width + kv_width, shape.num_kv_heads), token));
    p.split_inputs = split_inputs;
    p.product = Func("qkv_heads_product");
    p.product(o, m) = 0.f;
    p.product(o, m) += input * p.panels(o % panel, p.k, o / panel);
    p.qkv = Func("qkv_heads");
    p.qkv(o, m) = p.product(o, m) + bias(o);
    const NormedValues normed = define_qk_norm(p, p.qkv, norm, shape);
    q_out(d, h, m) = normed.q(h * hd + d, m);
    k_out(d, kvh, m) = normed.k(kvh * hd + d, m);
    v_out(d, kvh, m) = p.qkv(q_width + kv_width + kvh * hd + d, m);
    p.q = q_out;
    p.k_out = k_out;
    p.v_out = v_out;
    return p;
}

HeadResults define_head_results(const Func &z, const Expr &tokens, const Func &packed_weight,
                                const Func &packed_scales, WeightType weight_type, HalfWidening half_widening,
                                const Expr &head_dim, int panel, Func result_out) {
    HeadResults r;
    Var o = r.o, h = r.h, m = r.m;
    r.panels = widened_panels("wo_panels", packed_weight, packed_scales, weight_type, half_widening);
    r.dims = RDom(0, head_dim, "head_dims");
    const Expr column = h * head_dim + r.dims;
    r.product = Func("head_results_product");
    r.product(o, h, m) = 0.f;
    r.product(o, h, m) += z(column, min(m, tokens - 1)) * r.panels(o % panel, column, o / panel);
    result_out(o, h, m) = r.product(o, h, m);
    r.result = result_out;
    return r;
}

WeighValues define_weigh_values(const Func &pattern, const Func &v, const Expr &kv_len, Func z_out) {
    WeighValues w;
    Var d = w.d, r = w.r, kvh = w.kvh, i = w.i, b = w.b;
    w.keys = RDom(0, kv_len, "keys");
    z_out(d, r, kvh, i, b) = 0.f;
    z_out(d, r, kvh, i, b) += pattern(w.keys, i, r, kvh, b) * v(d, w.keys, kvh, b);
    w.z = z_out;
    return w;
}

Store define_store(const Func &k_new, const Func &v_new, const Expr &tokens, const Func &dest_slot,
                   const Func &dest_row, const Expr &head_dim, Func k_out, Func v_out, CacheType cache_type,
                   const Type &storage) {
    Store s;
    Var d = s.d, t = s.t, kvh = s.kvh, b = s.b;
    s.new_tokens = RDom(0, tokens, "new_tokens");
    const Expr token = s.new_tokens;
    k_out(d, t, kvh, b) = undef(storage);
    v_out(d, t, kvh, b) = undef(storage);
    // The runtime's destinations lie in the cache (k and v have one shape); the
    // promises give bounds inference the region a data-dependent write reaches.
    const OutputImageParam cache = k_out.output_buffer();
    const Expr slot = unsafe_promise_clamped(dest_slot(token), 0, cache.dim(1).extent() - 1);
    const Expr row = unsafe_promise_clamped(dest_row(token), 0, cache.dim(3).extent() - 1);
    s.quantized = cache_type == CacheType::int8;
    if (s.quantized) {
        s.k_amax_bits = Func("k_amax_bits");
        s.v_amax_bits = Func("v_amax_bits");
        s.k_scale = slot_scale("k_scale", k_new, head_dim, s.k_amax_bits);
        s.v_scale = slot_scale("v_scale", v_new, head_dim, s.v_amax_bits);
        k_out(d, slot, kvh, row) = quantized_element(k_new, s.k_scale, head_dim, d, kvh, token);
        v_out(d, slot, kvh, row) = quantized_element(v_new, s.v_scale, head_dim, d, kvh, token);
    } else {
        k_out(d, slot, kvh, row) = to_cache_element(cache_type, storage, k_new(d, kvh, token));
        v_out(d, slot, kvh, row) = to_cache_element(cache_type, storage, v_new(d, kvh, token));
    }
    s.k = k_out;
    s.v = v_out;
    return s;
}

Expr widen_half(const Expr &half) {
    const Expr bits = cast<uint32_t>(reinterpret<uint16_t>(half));
    // Exponent and mantissa moved into a float's place: the value times 2^-112, also
    // for subnormal halves (they land on float subnormals), so one multiply rebiases.
    const Expr moved = (bits & 0x7fff) << 13;
    const Expr finite = reinterpret<float>(moved) * 0x1p112f;
    // All-ones exponent: infinity or NaN, payload kept.
    const Expr special = reinterpret<float>(moved | 0x7f800000);
    const Expr magnitude = select((bits & 0x7c00) == 0x7c00, special, finite);
    return reinterpret<float>(reinterpret<uint32_t>(magnitude) | ((bits & 0x8000) << 16));
}

Expr narrow_half(const Expr &value) {
    auto u32 = [](uint32_t c) { return Expr(c); };
    const Expr bits = reinterpret<uint32_t>(value);
    const Expr magnitude = bits & u32(0x7fffffff);
    // `kept` plus one where the bits dropped from it were over half its last place
    // (`tie`), or exactly half with `kept` odd: nearest, ties to even.
    auto rounded = [&](const Expr &kept, const Expr &dropped, const Expr &tie) {
        return kept + select(dropped > tie || (dropped == tie && (kept & u32(1)) == u32(1)), u32(1), u32(0));
    };
    // Normal halves: the exponent rebiased (127 -> 15) and 13 mantissa bits rounded
    // off; a carry moves into the exponent, and past the largest finite to infinity.
    const Expr normal = min(rounded((magnitude - u32(0x38000000)) >> 13, magnitude & u32(0x1fff), u32(0x1000)),
                            u32(0x7c00));
    // Subnormal halves: the value in units of 2^-24, implicit bit included; from a
    // shift of 25 on everything rounds to zero.
    const Expr shift = min(u32(126) - (magnitude >> 23), u32(25));
    const Expr mantissa = (magnitude & u32(0x7fffff)) | u32(0x800000);
    const Expr subnormal =
        rounded(mantissa >> shift, mantissa & ((u32(1) << shift) - u32(1)), u32(1) << (shift - u32(1)));
    const Expr half = select(magnitude > u32(0x7f800000), u32(0x7e00),  // NaN stays NaN (quiet)
                             magnitude >= u32(0x38800000), normal, subnormal);
    return cast<uint16_t>(half | ((bits >> 16) & u32(0x8000)));
}

namespace {

const float kNegInf = -std::numeric_limits<float>::infinity();

// A NaN a query sees (from a NaN in some token's x) must reach its output; see the
// NaN rule in attention.hpp. Halide lets LLVM assume no float is NaN, so float
// compares may treat NaN as equal and is_nan() may fold to false: these test the
// bits. The sums and weights tested for zero are +0.0 exactly when they hold nothing.
Expr is_negative_infinity(const Expr &x) {
    return reinterpret<uint32_t>(x) == Expr(uint32_t(0xff800000));
}

Expr is_positive_zero(const Expr &x) {
    return reinterpret<uint32_t>(x) == Expr(uint32_t(0));
}

// Halide's exp maps NaN to 0 on x86, which would hide a NaN score as weight 0.
Expr exp_keeping_nan(const Expr &x) {
    const Expr magnitude = reinterpret<uint32_t>(x) & Expr(uint32_t(0x7fffffff));
    return select(magnitude > Expr(uint32_t(0x7f800000)), x, exp(x));
}

// The clamp keeps the mask read inside [0, kv_len) for the padded slots, which the
// row range already hides (kv_len: the mask's extent, the longest row's).
Expr mask_allows(const AttendInputs &in, const Expr &t, const Expr &i, const Expr &b) {
    return in.use_mask == 0 || in.mask(min(t, in.kv_len - 1), i, b) != 0;
}

Expr widen(const Expr &element, HalfWidening half_widening) {
    if (element.type() == UInt(16) || (element.type() == Float(16) && half_widening == HalfWidening::integer_ops)) {
        return widen_half(element);
    }
    if (element.type() == Float(16) && half_widening == HalfWidening::f16c_call) {
        return Internal::Call::make(Float(32), kHalfWideningFunction, {reinterpret<uint16_t>(element)},
                                    Internal::Call::PureExtern);
    }
    return cast<float>(element);
}

// Reads of slots past the padded valid prefix (which the runtime guarantees the
// cache holds: capacity is a multiple of kKeySlotPadding) clamp to its last slot,
// unless the schedule reads no such slot (AttendInputs::reads_within_prefix).
// Those slots are never visible, so only the bounds of the reads change. A block or
// split of the blocked formulations may reach beyond that prefix, and so may the
// chunks of a query block's rows in the three-pass one (gqa-fuzz: window 1, 67
// tokens without a cache read slot 191 of 128). The three-pass formulation reads V
// only at a row's visible slots, an RDom inside [0, kv_len) (values_within_prefix).
// Reads without the clamp promise their bounds instead: at no cost in the code, that
// keeps bounds inference inside the prefix where a loop's start varies with the task
// (a segment's chunk loop, whose extent Halide adds to its latest start).
void define_scores(const AttendInputs &in, AttendScores &a, bool values_within_prefix) {
    a.use_mask = in.use_mask;
    a.softcap = in.softcap;
    a.use_sinks = in.use_sinks;
    a.head_dim = in.head_dim;
    Var d = a.d, t = a.t, r = a.r, kvh = a.kvh, i = a.i, b = a.b;

    a.k_cache = Func("k_f32");
    a.v_cache = Func("v_f32");
    a.qk = Func("qk");
    a.score = Func("score");
    a.row_begin = Func("row_begin");
    a.row_end = Func("row_end");

    a.cache_type = in.cache_type;
    constexpr int P = layout::kKeySlotPadding, G = layout::kCacheGranule;
    const Expr last_slot = (in.row_kv_len(b) + P - 1) / P * P - 1;
    auto read = [&](const Func &cache, Func &scale, bool within_prefix) -> Expr {
        const Expr key = within_prefix ? unsafe_promise_clamped(t, 0, last_slot) : min(t, last_slot);
        // The runtime's table covers every row's padded prefix and points inside the
        // cache; the promises give bounds inference what data-dependent reads reach.
        const Expr granule = unsafe_promise_clamped(key / G, 0, in.granules - 1);
        const Expr slot = unsafe_promise_clamped(key + in.granule_offset(granule, b), 0, in.cache_slots - 1);
        const Expr element = cache(d, slot, kvh, b);
        switch (in.cache_type) {
        case CacheType::f32: return element;
        case CacheType::f16: return widen(element, in.half_widening);
        case CacheType::bf16: return widen_bfloat16(element);
        case CacheType::int8:
            scale(t, kvh, b) = stored_scale(cache, in.head_dim, slot, kvh, b);
            return cast<float>(element) * scale(t, kvh, b);
        }
        return element;
    };
    a.k_scale = Func("k_scale");
    a.v_scale = Func("v_scale");
    a.k_cache(d, t, kvh, b) = read(in.k_cache, a.k_scale, in.reads_within_prefix);
    a.v_cache(d, t, kvh, b) = read(in.v_cache, a.v_scale, in.reads_within_prefix || values_within_prefix);

    const Expr row_kv_len = in.row_kv_len(b), query_slot = row_kv_len - in.seq_len + i;
    a.row_begin(i, b) = max(0, query_slot - in.window + 1);
    a.row_end(i, b) = select(in.causal != 0, min(query_slot + 1, row_kv_len), row_kv_len);

    a.dot = RDom(0, in.head_dim, "dot");
    a.qk(t, r, kvh, i, b) = 0.f;
    a.qk(t, r, kvh, i, b) += in.q(a.dot, r, kvh, i, b) * a.k_cache(a.dot, t, kvh, b);

    const Expr visible = t >= a.row_begin(i, b) && t < a.row_end(i, b) && mask_allows(in, t, i, b);
    const Expr scaled = a.qk(t, r, kvh, i, b) * in.scale;
    const Expr capped = select(in.softcap > 0.f, in.softcap * tanh(scaled / in.softcap), scaled);
    a.score(t, r, kvh, i, b) = select(visible, capped, kNegInf);
}

// A head's sink logit, -inf without sinks.
Expr sink_logit(const AttendInputs &in, const Expr &r, const Expr &kvh) {
    return select(in.use_sinks != 0, in.sinks(r, kvh), kNegInf);
}

// The sink's share of a row's denominator against the row's max: exp(sink - max),
// 0 without a sink (-inf, never fed to exp).
Expr sink_weight(const AttendInputs &in, const Expr &r, const Expr &kvh, const Expr &row_max) {
    const Expr sink = in.sinks(r, kvh);
    return select(in.use_sinks == 0 || is_negative_infinity(sink), 0.f, exp_keeping_nan(sink - row_max));
}

// exp(from - to), 0 for an empty side (-inf), so -inf - -inf never meets exp.
Expr rescale(const Expr &from, const Expr &to) {
    return select(is_negative_infinity(from), 0.f, exp_keeping_nan(from - to));
}

// state(d, r, kvh, i, b, part): the Tuple (max, sum, acc) of each part of `span`
// consecutive slots; a part's max and sum are the same at every d, d = 0 holds them.
PartMerge merge_parts(const AttendInputs &in, const AttendScores &a, const Func &state, const Expr &span,
                      Func z_out) {
    Var d = a.d, r = a.r, kvh = a.kvh, i = a.i, b = a.b;
    PartMerge m;
    m.parts = RDom(0, (in.kv_len + span - 1) / span, "parts");
    m.parts.where(m.parts * span < a.row_end(i, b));
    m.parts.where((m.parts + 1) * span > a.row_begin(i, b));
    m.max = Func("merged_max");
    m.sum = Func("merged_sum");
    m.acc = Func("merged_acc");
    const Expr part_max = state(0, r, kvh, i, b, m.parts)[0];
    m.max(r, kvh, i, b) = sink_logit(in, r, kvh);
    m.max(r, kvh, i, b) = max(m.max(r, kvh, i, b), part_max);
    const Expr take = rescale(part_max, m.max(r, kvh, i, b));
    m.sum(r, kvh, i, b) = sink_weight(in, r, kvh, m.max(r, kvh, i, b));
    m.sum(r, kvh, i, b) += state(0, r, kvh, i, b, m.parts)[1] * take;
    m.acc(d, r, kvh, i, b) = 0.f;
    m.acc(d, r, kvh, i, b) += state(d, r, kvh, i, b, m.parts)[2] * take;
    const Expr sum = m.sum(r, kvh, i, b);
    z_out(d, r, kvh, i, b) = select(is_positive_zero(sum), 0.f, m.acc(d, r, kvh, i, b) / sum);
    return m;
}

}  // namespace

Expr widen_bfloat16(const Expr &bits) {
    return reinterpret<float>(cast<uint32_t>(bits) << 16);
}

Expr narrow_bfloat16(const Expr &value) {
    const Expr bits = reinterpret<uint32_t>(value);
    const Expr is_nan = (bits & Expr(kMagnitudeBits)) > Expr(kInfinityBits);
    // The dropped 16 bits rounded to nearest, ties to the even upper half; a carry
    // moves into the exponent, and past the largest finite to infinity.
    const Expr rounded = (bits + Expr(uint32_t(0x7fff)) + ((bits >> 16) & Expr(uint32_t(1)))) >> 16;
    return cast<uint16_t>(select(is_nan, (bits >> 16) | Expr(uint32_t(0x40)), rounded));
}

Expr widen_weight(const Expr &element, const Expr &scale, WeightType type, HalfWidening half_widening) {
    switch (type) {
    case WeightType::f32: return element;
    case WeightType::bf16: return widen_bfloat16(element);
    case WeightType::f16: return widen(element, half_widening);
    case WeightType::int8: return cast<float>(element) * scale;
    }
    return element;
}

Attend define_attend(const AttendInputs &in, Func z_out, const Func *pattern_out, const Func *scores_out,
                     const Expr &segment_keys) {
    Attend a;
    define_scores(in, a, true);
    Var d = a.d, t = a.t, r = a.r, kvh = a.kvh, i = a.i, b = a.b, s = a.s;
    constexpr int P = layout::kKeySlotPadding;
    const bool segmented = segment_keys.defined();
    if (segmented && pattern_out) throw CompileError("define_attend: the pattern is normalized over whole rows");
    const Expr S = segment_keys;

    a.row_max = Func("row_max");
    a.exp_score = Func("exp_score");
    a.row_sum = Func("row_sum");
    a.weighted = Func("weighted");

    // A row's statistics, the segment last where there are segments.
    auto row = [&](std::vector<Expr> args) {
        if (segmented) args.push_back(s);
        return args;
    };
    // The reductions walk the row's visible range (within the segment): the
    // predicates compare the key slot (or chunk) with expressions of the query, so
    // Halide trims the loop bounds.
    // (One predicate a side: Halide trims the loops, and the bounds of what they
    // read, by one bound per side, and reads of K past kv_len are not clamped.)
    auto visible_keys = [&](const char *name) {
        RDom keys(0, in.kv_len, name);
        keys.where(keys >= (segmented ? max(a.row_begin(i, b), s * S) : a.row_begin(i, b)));
        keys.where(keys < (segmented ? min(a.row_end(i, b), (s + 1) * S) : a.row_end(i, b)));
        return keys;
    };
    // The row's max and sum may also walk whole chunks of kKeySlotPadding slots
    // around the visible range: the slots that adds are not visible (score -inf,
    // exp_score 0) and lie inside the padded cache. The inner dimension then has a
    // constant extent, which a schedule can vectorize without a tail.
    auto visible_chunks = [&](const char *name) {
        RDom keys(0, P, 0, (in.kv_len + P - 1) / P, name);
        const Expr first = a.row_begin(i, b) / P, end = (a.row_end(i, b) + P - 1) / P;
        keys.where(keys.y >= (segmented ? max(first, s * (S / P)) : first));
        keys.where(keys.y < (segmented ? min(end, (s + 1) * (S / P)) : end));
        return keys;
    };
    auto chunk_slot = [](const RDom &keys) { return keys.y * P + keys.x; };
    // Segments leave the sink to the merge, which adds it once.
    a.keys_max = visible_chunks("keys_max");
    a.row_max(row({r, kvh, i, b})) = segmented ? kNegInf : sink_logit(in, r, kvh);
    a.row_max(row({r, kvh, i, b})) = max(a.row_max(row({r, kvh, i, b})), a.score(chunk_slot(a.keys_max), r, kvh, i, b));

    // A row that sees no key has row_max = -inf; its exp_score is 0 everywhere
    // because the select never takes the exp branch for it.
    a.exp_score(row({t, r, kvh, i, b})) =
        select(is_negative_infinity(a.score(t, r, kvh, i, b)), 0.f,
               exp_keeping_nan(a.score(t, r, kvh, i, b) - a.row_max(row({r, kvh, i, b}))));

    a.keys_sum = visible_chunks("keys_sum");
    a.row_sum(row({r, kvh, i, b})) = segmented ? Expr(0.f) : sink_weight(in, r, kvh, a.row_max(r, kvh, i, b));
    a.row_sum(row({r, kvh, i, b})) += a.exp_score(row({chunk_slot(a.keys_sum), r, kvh, i, b}));

    // Keys the mask hides are skipped, not weighted by 0: 0 * NaN would carry a NaN
    // token to queries that may not see it.
    a.keys_values = visible_keys("keys_values");
    a.keys_values.where(mask_allows(in, a.keys_values, i, b));
    a.weighted(row({d, r, kvh, i, b})) = 0.f;
    a.weighted(row({d, r, kvh, i, b})) +=
        a.exp_score(row({a.keys_values, r, kvh, i, b})) * a.v_cache(d, a.keys_values, kvh, b);

    if (segmented) {
        a.segment_state = Func("segment_state");
        a.segment_state(d, r, kvh, i, b, s) =
            Tuple(a.row_max(r, kvh, i, b, s), a.row_sum(r, kvh, i, b, s), a.weighted(d, r, kvh, i, b, s));
        a.merge = merge_parts(in, a, a.segment_state, S, z_out);
        a.z = z_out;
        return a;
    }
    // Zero only for a row that sees no key: a NaN sum (a NaN key the row sees) must
    // reach the output.
    a.inv_sum = Func("inv_sum");
    a.inv_sum(r, kvh, i, b) = select(is_positive_zero(a.row_sum(r, kvh, i, b)), 0.f, 1.f / a.row_sum(r, kvh, i, b));
    z_out(d, r, kvh, i, b) = a.weighted(d, r, kvh, i, b) * a.inv_sum(r, kvh, i, b);
    a.z = z_out;
    if (pattern_out) {
        a.pattern = *pattern_out;
        a.pattern(t, i, r, kvh, b) = a.exp_score(t, r, kvh, i, b) * a.inv_sum(r, kvh, i, b);
    }
    if (scores_out) {
        a.scores = *scores_out;
        a.scores(t, i, r, kvh, b) = a.score(t, r, kvh, i, b);
    }
    return a;
}

AttendBlocked define_attend_blocked(const AttendInputs &in, Func z_out, int key_block, int split_blocks) {
    AttendBlocked a;
    define_scores(in, a, false);
    Var d = a.d, t = a.t, r = a.r, kvh = a.kvh, i = a.i, b = a.b, kb = a.kb, sp = a.sp;
    const int B = key_block;
    a.key_block = B;
    a.split_blocks = split_blocks;

    a.block_max = Func("block_max");
    a.block_exp = Func("block_exp");
    a.block_sum = Func("block_sum");
    a.block_acc = Func("block_acc");
    a.state = Func("state");

    // Every loop over keys, blocks or splits is trimmed to the row's visible range
    // by Halide, from these predicates.
    a.block_keys = RDom(0, B, "block_keys");
    const Expr key = kb * B + a.block_keys;
    a.block_keys.where(key >= a.row_begin(i, b));
    a.block_keys.where(key < a.row_end(i, b));
    a.block_keys.where(mask_allows(in, key, i, b));  // as keys_values in define_attend

    a.block_max(r, kvh, i, b, kb) = kNegInf;
    a.block_max(r, kvh, i, b, kb) = max(a.block_max(r, kvh, i, b, kb), a.score(key, r, kvh, i, b));
    const Expr own_max = a.block_max(r, kvh, i, b, t / B);
    a.block_exp(t, r, kvh, i, b) =
        select(is_negative_infinity(a.score(t, r, kvh, i, b)), 0.f, exp_keeping_nan(a.score(t, r, kvh, i, b) - own_max));
    a.block_sum(r, kvh, i, b, kb) = 0.f;
    a.block_sum(r, kvh, i, b, kb) += a.block_exp(key, r, kvh, i, b);
    a.block_acc(d, r, kvh, i, b, kb) = 0.f;
    a.block_acc(d, r, kvh, i, b, kb) += a.block_exp(key, r, kvh, i, b) * a.v_cache(d, key, kvh, b);

    const Expr num_blocks = (in.kv_len + B - 1) / B;
    a.blocks = RDom(0, split_blocks > 0 ? Expr(split_blocks) : num_blocks, "blocks");
    const Expr block = split_blocks > 0 ? sp * split_blocks + a.blocks : Expr(a.blocks);
    // Split-K (decode) visits every block of its splits. One outside the row's
    // visible keys (before its window, or past the end in the last split) holds no
    // visible key: block_max is -inf and merging it leaves the state as it was.
    // Skipping such blocks with the predicates below narrowed the block index in
    // bounds inference, also in the iterations skipped, and the GPU decode checks a
    // thread's block statistics (bound_extent 1) outside the skip: Halide compiled
    // checks it could not prove into the kernel, and on CUDA a windowed decode
    // trapped, which breaks the process's CUDA context (OpenCL drops such checks,
    // so pocl never showed it). The cost: a windowed decode also stages the keys
    // of the blocks before its window.
    if (split_blocks == 0) {
        a.blocks.where(block >= a.row_begin(i, b) / B);
        a.blocks.where(block * B < a.row_end(i, b));
    }
    // Without splits the one state starts from the sink; with splits it enters
    // at the merge, once, whichever splits the row's window leaves out.
    if (split_blocks == 0) {
        a.state(d, r, kvh, i, b, sp) =
            Tuple(sink_logit(in, r, kvh), sink_weight(in, r, kvh, sink_logit(in, r, kvh)), 0.f);
    } else {
        a.state(d, r, kvh, i, b, sp) = Tuple(kNegInf, 0.f, 0.f);
    }
    {
        const Tuple running = a.state(d, r, kvh, i, b, sp);
        const Expr new_max = max(running[0], a.block_max(r, kvh, i, b, block));
        const Expr keep = rescale(running[0], new_max), take = rescale(a.block_max(r, kvh, i, b, block), new_max);
        a.state(d, r, kvh, i, b, sp) = Tuple(new_max, running[1] * keep + a.block_sum(r, kvh, i, b, block) * take,
                                             running[2] * keep + a.block_acc(d, r, kvh, i, b, block) * take);
    }

    if (split_blocks == 0) {
        const Tuple final_state = a.state(d, r, kvh, i, b, 0);
        z_out(d, r, kvh, i, b) = select(is_positive_zero(final_state[1]), 0.f, final_state[2] / final_state[1]);
    } else {
        a.merge = merge_parts(in, a, a.state, split_blocks * B, z_out);
    }
    a.z = z_out;
    return a;
}

}  // namespace gqa::algo
