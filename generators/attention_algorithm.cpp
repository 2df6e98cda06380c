#include "attention_algorithm.h"

#include <limits>

#include "layout.h"

namespace gqa::algo {

using namespace Halide;

Linear define_linear(const std::string &name, const Func &x, const Func &packed_weight, const Func &bias,
                     const Expr &in_dim, const Expr &out_dim, const Expr &tokens, int panel) {
    Linear l;
    l.product = Func(name + "_product");
    l.result = Func(name);
    l.weight = Func(name + "_weight");
    l.k = RDom(0, in_dim, name + "_k");
    l.out_dim = out_dim;
    l.tokens = tokens;

    Var o = l.o, m = l.m, i("i");
    l.weight(o, i) = packed_weight(o % panel, i, o / panel);
    l.product(o, m) = 0.f;
    // Clamped rows let a schedule compute whole register tiles past the last token;
    // those rows are never stored.
    l.product(o, m) += x(l.k, min(m, tokens - 1)) * l.weight(o, l.k);
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

}  // namespace

Project define_project(const Func &x, const Func &packed_weight, const Func &bias, const RopeInputs &rope,
                       const ProjectShape &shape, int panel, Func q_out, Func k_out, Func v_out,
                       const Type &cache_type) {
    Project p;
    const Expr hd = shape.head_dim;
    const Expr q_width = shape.num_heads * hd, kv_width = shape.num_kv_heads * hd;
    p.qkv = define_linear("qkv", x, packed_weight, bias, shape.embed_dim, q_width + 2 * kv_width, shape.tokens,
                          panel);
    const Func qkv = p.qkv.result;
    Var d = p.d, h = p.h, m = p.m, t = p.t, kvh = p.kvh, b = p.b;

    q_out(d, h, m) = rotate([&](Expr dd) { return qkv(h * hd + dd, m); }, d, hd, clamped_position(rope, m),
                            rope.cos_table, rope.sin_table, rope.style, rope.rotary_dim);
    const Expr token = b * shape.seq_len + t;
    k_out(d, t, kvh, b) = cast(cache_type, rotate([&](Expr dd) { return qkv(q_width + kvh * hd + dd, token); }, d,
                                                  hd, clamped_position(rope, token), rope.cos_table, rope.sin_table,
                                                  rope.style, rope.rotary_dim));
    v_out(d, t, kvh, b) = cast(cache_type, qkv(q_width + kv_width + kvh * hd + d, token));
    p.q = q_out;
    p.k = k_out;
    p.v = v_out;
    return p;
}

Attend define_attend(const AttendInputs &in, Func z_out, const Func *pattern_out) {
    Attend a;
    a.use_mask = in.use_mask;
    a.softcap = in.softcap;
    a.q = in.q;
    a.k_cache = Func("k_f32");
    a.v_cache = Func("v_f32");
    a.head_dim = in.head_dim;
    a.group = in.group;
    a.num_kv_heads = in.num_kv_heads;
    a.seq_len = in.seq_len;
    a.kv_len = in.kv_len;
    a.batch = in.batch;
    Var d = a.d, t = a.t, r = a.r, kvh = a.kvh, i = a.i, b = a.b;

    a.qk = Func("qk");
    a.score = Func("score");
    a.row_max = Func("row_max");
    a.exp_score = Func("exp_score");
    a.row_sum = Func("row_sum");
    a.inv_sum = Func("inv_sum");
    a.weighted = Func("weighted");
    a.row_begin = Func("row_begin");
    a.row_end = Func("row_end");

    a.k_cache(d, t, kvh, b) = cast<float>(in.k_cache(d, t, kvh, b));
    a.v_cache(d, t, kvh, b) = cast<float>(in.v_cache(d, t, kvh, b));

    const Expr query_slot = in.kv_len - in.seq_len + i;
    a.row_begin(i) = max(0, query_slot - in.window + 1);
    a.row_end(i) = select(in.causal != 0, min(query_slot + 1, in.kv_len), in.kv_len);

    a.dot = RDom(0, in.head_dim, "dot");
    a.qk(t, r, kvh, i, b) = 0.f;
    a.qk(t, r, kvh, i, b) += in.q(a.dot, r, kvh, i, b) * a.k_cache(a.dot, t, kvh, b);

    // The clamp keeps the mask read inside [0, kv_len) for the padded slots, which
    // the row range already hides.
    const Expr allowed = in.use_mask == 0 || in.mask(min(t, in.kv_len - 1), i, b) != 0;
    const Expr visible = t >= a.row_begin(i) && t < a.row_end(i) && allowed;
    const Expr scaled = a.qk(t, r, kvh, i, b) * in.scale;
    const Expr capped = select(in.softcap > 0.f, in.softcap * tanh(scaled / in.softcap), scaled);
    const float neg_inf = -std::numeric_limits<float>::infinity();
    a.score(t, r, kvh, i, b) = select(visible, capped, neg_inf);

    // Each reduction walks only the row's visible range: the predicates compare the
    // key slot with expressions of the query, so Halide trims the loop bounds.
    auto visible_keys = [&](const char *name) {
        RDom keys(0, in.kv_len, name);
        keys.where(keys >= a.row_begin(i));
        keys.where(keys < a.row_end(i));
        return keys;
    };
    a.keys_max = visible_keys("keys_max");
    a.row_max(r, kvh, i, b) = neg_inf;
    a.row_max(r, kvh, i, b) = max(a.row_max(r, kvh, i, b), a.score(a.keys_max, r, kvh, i, b));

    // A row that sees no key has row_max = -inf; its exp_score is 0 everywhere
    // because the select never takes the exp branch for it.
    a.exp_score(t, r, kvh, i, b) =
        select(a.score(t, r, kvh, i, b) == neg_inf, 0.f, exp(a.score(t, r, kvh, i, b) - a.row_max(r, kvh, i, b)));

    a.keys_sum = visible_keys("keys_sum");
    a.row_sum(r, kvh, i, b) = 0.f;
    a.row_sum(r, kvh, i, b) += a.exp_score(a.keys_sum, r, kvh, i, b);
    a.inv_sum(r, kvh, i, b) = select(a.row_sum(r, kvh, i, b) > 0.f, 1.f / a.row_sum(r, kvh, i, b), 0.f);

    a.keys_values = visible_keys("keys_values");
    a.weighted(d, r, kvh, i, b) = 0.f;
    a.weighted(d, r, kvh, i, b) += a.exp_score(a.keys_values, r, kvh, i, b) * a.v_cache(d, a.keys_values, kvh, b);

    z_out(d, r, kvh, i, b) = a.weighted(d, r, kvh, i, b) * a.inv_sum(r, kvh, i, b);
    a.z = z_out;
    if (pattern_out) {
        a.pattern = *pattern_out;
        a.pattern(t, i, r, kvh, b) = a.exp_score(t, r, kvh, i, b) * a.inv_sum(r, kvh, i, b);
    }
    return a;
}

}  // namespace gqa::algo
