// The algorithm of a grouped-query attention layer, as Halide Funcs, with no
// target and no schedule. Each stage is a struct holding its Funcs and Vars so
// the per-target schedules in schedules/ can reach every loop.
//
// Halide dimension 0 is the innermost. Torch order -> Halide order:
//   x [b, s, d]                  -> x(i, m)              (m = b*s + token, tokens flattened)
//   W [out, in] packed in panels -> w(o % P, i, o / P)   (see common/layout.h)
//   q [b, s, n_h, hd]            -> q(d, r, kvh, i, b)   (head h = kvh*g + r, g = n_h / n_kv)
//   cache [b, n_kv, T, hd]       -> cache(d, t, kvh, b)
//   mask [b, s, T] (1 = attend)  -> mask(t, i, b)
//   z [b, s, n_h, hd]            -> z(d, r, kvh, i, b)
//   pattern [b, n_h, s, T]       -> pattern(t, i, r, kvh, b)
// Viewing q, z and pattern with the head split into (r, kvh) is free: h = kvh*g + r
// with r fastest is the same memory, and it lets a schedule walk one kv head at a
// time so that each K/V row is read once for all g query heads sharing it.
#pragma once

#include <functional>
#include <string>

#include "Halide.h"

namespace gqa::algo {

// How packed projection weights are stored. fp32 as is; bf16 as its bits (uint16);
// fp16 as float16, or its bits (uint16) where the target has no usable float16
// (schedules::cache_storage_type says which); int8 values with an fp32 scale per
// layout::kWeightGroup inputs, packed like the weights: scale(o % P, i / group,
// o / P). Read as fp32 (the 16-bit types exactly, int8 as q * scale), so every
// product accumulates in fp32.
enum class WeightType { f32, bf16, f16, int8 };

// How fp16 elements widen to fp32: with integer operations (widen_half); with
// Halide's cast, where Halide 14 emits a conversion instruction (CUDA, ARM FP16);
// or as a call of kHalfWideningFunction, which a generator links in as LLVM
// bitcode (generators/half_widening.ll: x86 F16C's vcvtph2ps, never emitted by
// Halide 14). Elements stored as their bits (uint16) always take integer operations.
enum class HalfWidening { integer_ops, cast, f16c_call };
inline constexpr const char *kHalfWideningFunction = "gqa_widen_half";

// How the KV cache stores keys and values (gqa::CacheType): fp32; fp16 as float16
// or its bits (as for weights); bf16 as its bits; int8 as a slot of head_dim values
// q followed by the bytes of their fp32 scale s (layout::kInt8CacheScaleBytes),
// read as q * s. The pipelines are told which: the storage type alone does not say
// (fp16 bits and bf16 are both uint16).
enum class CacheType { f32, f16, bf16, int8 };

// bfloat16 bits -> fp32 (exact: the upper half of a float).
Halide::Expr widen_bfloat16(const Halide::Expr &bits);
// fp32 -> the bits of the nearest bfloat16 (ties to even, NaN stays a quiet NaN),
// as gqa::float_to_bfloat16 rounds.
Halide::Expr narrow_bfloat16(const Halide::Expr &value);

// A packed weight element as fp32; `scale` is read for int8 only.
Halide::Expr widen_weight(const Halide::Expr &element, const Halide::Expr &scale, WeightType type,
                          HalfWidening half_widening);

// y(o, m) = sum_i x(i, m) * W[o][i] + bias(o), W packed in panels of `panel` rows.
// The packed weights and the bias are zero-padded to whole panels, so a schedule
// may compute whole panels of outputs. With token_group > 1 the product reads x
// regrouped, grouped_rows(j, i, g) = x(i, g * token_group + j): the mirror of the
// weight panels, so a register tile of token_group tokens finds the x values of
// one step of the reduction side by side (schedules::gemm_token_group picks it).
struct Linear {
    Halide::Var o{"o"}, m{"m"};
    Halide::RDom k;
    Halide::Func product;       // the reduction over k
    Halide::Func result;        // product + bias
    Halide::Func panels;        // the packed weights widened to fp32, (o % panel, i, o / panel)
    Halide::Func weight;        // W[o][i] read from panels
    bool narrow_weights = false;  // not fp32: a schedule may widen a panel once and reuse it
    Halide::Func input;         // x(i, m), for schedules that stage it
    Halide::Func grouped_rows;  // defined when token_group > 1
    int token_group = 1;
    // int8 weights with scale_group_sums: k runs over the groups of
    // layout::kWeightGroup inputs, each group's sum of x times the unscaled values
    // multiplied by its scale once (a multiply per group rather than per weight).
    Halide::Func group_sums;     // (o, group, m)
    Halide::RDom group_members;  // the inputs of one group
};

Linear define_linear(const std::string &name, const Halide::Func &x, const Halide::Func &packed_weight,
                     const Halide::Func &packed_scales, WeightType weight_type, HalfWidening half_widening,
                     const Halide::Func &bias, const Halide::Expr &in_dim, const Halide::Expr &tokens, int panel,
                     int token_group, bool scale_group_sums);

// Rotary position embedding of one head vector, read through `at(d)`, at position `pos`:
//   out(d) = at(d) * cos_table(d, pos) + at(partner(d)) * sin_table(d, pos)
// The tables are per head dim, built by the runtime: for a rotated pair (a, b) at
// angle p * base^(-2j/R), cos_table holds cos at both, sin_table holds -sin at a and
// +sin at b; dims >= R (and style none) have cos 1, sin 0. `style` (layout::kRope*)
// picks the partner: d^1 for interleaved pairs, d +- R/2 for rotate-half.
Halide::Expr rotate(const std::function<Halide::Expr(Halide::Expr)> &at, const Halide::Expr &d,
                    const Halide::Expr &head_dim, const Halide::Expr &pos, const Halide::Func &cos_table,
                    const Halide::Func &sin_table, const Halide::Expr &style, const Halide::Expr &rotary_dim);

// RoPE tables and positions shared by the pipelines that rotate.
struct RopeInputs {
    Halide::Func cos_table, sin_table;  // (d, p)
    Halide::Expr table_len;             // number of positions p in the tables
    Halide::Func positions;             // (m) absolute position of token m
    Halide::Expr style, rotary_dim;
};

// RMS normalisation of q and k before RoPE. `mode` (layout::kQkNorm*) picks the
// groups of consecutive values of a token's q (and of its k) that share one RMS:
// a head, or all heads. weight(o) multiplies value o of the projection's output
// (q then k), so a per-head weight comes in repeated for every head.
struct QkNormInputs {
    Halide::Func weight;  // (o), o < (n_h + n_kv) * hd
    Halide::Expr mode, eps;
};

// The q/k norms of a fused projection's output.
struct QkNormSums {
    Halide::Var d{"d"}, h{"h"}, m{"m"}, kvh{"kvh"}, g{"g"};
    // The sum of squares of group g of token m's q, and of its k; read only when
    // normalising, so a schedule can specialize the layers without a norm back to
    // their own code.
    Halide::Func q_sum_squares, k_sum_squares;  // (g, m)
    Halide::RDom q_values, k_values;            // the values of one group
    Halide::Expr qk_norm_mode;
};

// Fused Q/K/V projection with RoPE (and the q/k norms): the rotated queries, and
// the call's rotated keys and its values in fp32, which define_store then writes
// into the cache in the cache's element type.
struct Project : QkNormSums {
    Linear qkv;
    Halide::Func q;      // q(d, h, m): rotated queries
    Halide::Func k_new;  // k_new(d, kvh, m): rotated keys
    Halide::Func v_new;  // v_new(d, kvh, m)
};

struct ProjectShape {
    Halide::Expr embed_dim, head_dim, num_heads, num_kv_heads, tokens;
};

Project define_project(const Halide::Func &x, const Halide::Func &packed_weight, const Halide::Func &packed_scales,
                       WeightType weight_type, HalfWidening half_widening, const Halide::Func &bias,
                       const QkNormInputs &norm, const RopeInputs &rope, const ProjectShape &shape, int panel,
                       int token_group, bool scale_group_sums, Halide::Func q_out, Halide::Func k_out,
                       Halide::Func v_out);

// The recording pipelines of TransformerLens' hooks, apart from the fast path
// (interpretability, not speed).
//
// The fused projection before RoPE (after the q/k norms), each output head reading
// its own input: q rows x_q(e, h, m), k rows x_k(e, kvh, m), v rows x_v(e, kvh, m)
// (TransformerLens' split per-head inputs); with split_inputs 0, all three are
// one x(e, 0, m). Outputs q(d, h, m), k(d, kvh, m), v(d, kvh, m).
// As in define_linear, the products' reads clamp the token, so that a schedule may
// compute whole register tiles past the last one.
struct ProjectHeads : QkNormSums {
    Halide::Var o{"o"};
    Halide::Func panels;    // the packed weights widened to fp32, (o % panel, i, o / panel)
    Halide::Func product;   // product(o, m): the reduction over k
    Halide::Func qkv;       // qkv(o, m): the projection with its bias
    Halide::RDom k;         // over the inputs
    Halide::Func q, k_out, v_out;
    Halide::Expr split_inputs;
};

ProjectHeads define_project_heads(const Halide::Func &x_q, const Halide::Func &x_k, const Halide::Func &x_v,
                                  const Halide::Expr &split_inputs, const Halide::Func &packed_weight,
                                  const Halide::Func &packed_scales, WeightType weight_type,
                                  HalfWidening half_widening, const Halide::Func &bias, const QkNormInputs &norm,
                                  const ProjectShape &shape, int panel, Halide::Func q_out, Halide::Func k_out,
                                  Halide::Func v_out);

// Each head's share of the output projection, without the bias:
// result(o, h, m) = sum over e < head_dim of z(h * head_dim + e, m) * Wo[o][h * head_dim + e].
struct HeadResults {
    Halide::Var o{"o"}, h{"h"}, m{"m"};
    Halide::RDom dims;
    Halide::Func panels;   // as Linear::panels
    Halide::Func product;  // the reduction, its reads of z clamped to the tokens
    Halide::Func result;   // the output, product copied out
};

HeadResults define_head_results(const Halide::Func &z, const Halide::Expr &tokens, const Halide::Func &packed_weight,
                                const Halide::Func &packed_scales, WeightType weight_type,
                                HalfWidening half_widening, const Halide::Expr &head_dim, int panel,
                                Halide::Func result_out);

// Values weighed by a given pattern (a patched hook_pattern): z(d, r, kvh, i, b) =
// sum over key slots t < kv_len of pattern(t, i, r, kvh, b) * v(d, t, kvh, b), every
// slot, as TransformerLens multiplies its pattern with all values.
struct WeighValues {
    Halide::Var d{"d"}, r{"r"}, kvh{"kvh"}, i{"i"}, b{"b"};
    Halide::RDom keys;
    Halide::Func z;
};

WeighValues define_weigh_values(const Halide::Func &pattern, const Halide::Func &v, const Halide::Expr &kv_len,
                                Halide::Func z_out);

// A call's keys and values (d, kvh, token) into the cache, in place: token m goes to
// slot dest_slot(m) of row dest_row(m) (the runtime's choice: a contiguous cache's
// next slots of the token's batch row, or a paged cache's block in its pool). The
// outputs k and v are the whole cache, of which a call writes only its own slots
// (their pure definitions are undefined). A device
// backend then hands over the cache's own device buffer rather than a crop of it,
// which OpenCL could only make at aligned offsets. They hold cache_type elements,
// rounded to nearest even (fp16 as float16 or its bits, see narrow_half), or for
// int8 quantized per slot: s = max_d |x_d| / 127, q_d = round(x_d / s) (q = 0 when
// s is 0; s NaN and q = 0 when some x_d is not finite, so the NaN rule holds).
struct Store {
    Halide::Var d{"d"}, t{"t"}, kvh{"kvh"}, b{"b"};
    Halide::RDom new_tokens;  // the call's tokens m
    Halide::Func k, v;        // (d, slot, kvh, b)
    // int8 only: the scale of each new token's k and v, (kvh, token), from the
    // largest magnitude's bits (k_amax_bits, v_amax_bits).
    Halide::Func k_scale, v_scale, k_amax_bits, v_amax_bits;
    bool quantized = false;
};

// tokens: the extent of k_new's token dimension. k_out and v_out are the outputs of
// the pipeline, of one shape, which every destination lies in.
Store define_store(const Halide::Func &k_new, const Halide::Func &v_new, const Halide::Expr &tokens,
                   const Halide::Func &dest_slot, const Halide::Func &dest_row, const Halide::Expr &head_dim,
                   Halide::Func k_out, Halide::Func v_out, CacheType cache_type, const Halide::Type &storage);

// Grouped scores, masked softmax and weighted values for the queries of one call,
// each batch row b against its own valid key slots [0, row_kv_len(b)). Query i of
// row b sits in key slot row_kv_len(b) - seq_len + i; it may see key slot t when
//   row_begin(i, b) <= t < row_end(i, b)   (causal / sliding window / all), and mask(t, i, b) != 0.
// Key slot t of row b is read from the cache through the granule table (see
// layout::kCacheGranule).
// Query head r of kv head kvh is head kvh * group + r. Two formulations compute it:
// define_attend (three passes over each row's scores) and define_attend_blocked
// (per-block statistics merged by log-sum-exp); they differ only in rounding. A
// head's sink logit enters its denominator exactly once in each.

// What both formulations share.
struct AttendScores {
    Halide::Var d{"d"}, t{"t"}, r{"r"}, kvh{"kvh"}, i{"i"}, b{"b"};
    Halide::RDom dot;                  // over head dims
    Halide::Func qk;                   // qk(t, r, kvh, i, b): q . k
    Halide::Func score;                // scaled, soft-capped, -inf where not visible
    Halide::Func row_begin, row_end;   // (i, b)
    Halide::Func k_cache, v_cache;     // the cache read as fp32, for schedules that stage it
    CacheType cache_type = CacheType::f32;  // other than f32: a narrow cache, widened as read
    Halide::Func k_scale, v_scale;     // int8 cache: each slot's scale, (t, kvh, b)
    Halide::Expr use_mask, softcap;    // whether the mask is read; soft-cap, 0 for none
    Halide::Expr use_sinks;            // whether the sinks are read
    Halide::Expr head_dim;
};

// Per-row states Tuple(max, sum, acc) of consecutive parts of a row's keys (the
// splits of split-K, the segments of segmented three-pass attention), merged by
// log-sum-exp into z; a head's sink logit joins here, once.
struct PartMerge {
    Halide::RDom parts;          // the parts touching the row's visible keys
    Halide::Func max, sum, acc;  // (r, kvh, i, b); acc also over d, first
};

// Three passes over a row's keys: its max, its exp and sum, its weighted values.
// Segmented, the passes run per segment of segment_keys consecutive slots (a
// run-time value, a positive multiple of layout::kKeySlotPadding): row_max,
// exp_score, row_sum and weighted take the segment s as their last argument and
// leave the sink out, segment_state holds each segment's Tuple(row_max, row_sum,
// weighted), and merge combines them. Segments can be tasks of their own, for a
// decode step with fewer (batch, kv head) rows than threads.
struct Attend : AttendScores {
    Halide::Var s{"s"};
    Halide::RDom keys_max, keys_sum;  // (slot in chunk, chunk) over the chunks a row's visible keys touch
    Halide::RDom keys_values;         // over the visible key slots of a row
    Halide::Func row_max;    // (r, kvh, i, b[, s])
    Halide::Func exp_score;  // (t, r, kvh, i, b[, s]): exp(score - row_max), 0 where not visible
    Halide::Func row_sum;    // (r, kvh, i, b[, s])
    Halide::Func inv_sum;    // 1 / row_sum, 0 for a row that sees no key; unsegmented only
    Halide::Func weighted;   // weighted(d, r, kvh, i, b[, s]) = sum_t exp_score * v
    Halide::Func segment_state;  // (d, r, kvh, i, b, s), defined only when segmented
    PartMerge merge;             // segmented only
    Halide::Func z;          // z(d, r, kvh, i, b): the output
    Halide::Func pattern;    // pattern(t, i, r, kvh, b), defined only when asked for (unsegmented)
    Halide::Func scores;     // scores(t, i, r, kvh, b): score, recorded with the pattern
};

// Keys in blocks of key_block slots (block kb holds slots [kb*key_block, (kb+1)*key_block)).
// Per block, over its visible keys: block_max, block_sum = sum exp(score - block_max),
// block_acc(d) = sum exp(score - block_max) * v; a block with no visible key has
// block_max -inf and adds nothing. The blocks of each split (split_blocks consecutive
// blocks, or all of them when split_blocks is 0) merge in key order into a running
// (max, sum, acc) Tuple: flash attention's online softmax. With several splits
// (split-K), the splits' states then merge by log-sum-exp. Scores live for one
// block only.
struct AttendBlocked : AttendScores {
    Halide::Var kb{"kb"}, sp{"sp"};
    int key_block = 0, split_blocks = 0;
    Halide::RDom block_keys;  // the visible keys of block kb: slot kb * key_block + block_keys
    Halide::RDom blocks;      // the blocks of split sp that touch the row's visible range
    Halide::Func block_max;   // (r, kvh, i, b, kb)
    Halide::Func block_exp;   // (t, r, kvh, i, b): exp(score - block_max of t's block), 0 where not visible
    Halide::Func block_sum;   // (r, kvh, i, b, kb)
    Halide::Func block_acc;   // (d, r, kvh, i, b, kb)
    Halide::Func state;       // (d, r, kvh, i, b, sp): Tuple (max, sum, acc) of split sp
    PartMerge merge;          // split-K only: the splits' states merged
    Halide::Func z;           // z(d, r, kvh, i, b)
};

// fp16 -> fp32, exactly (subnormals, infinities and NaN included), with integer
// operations every vector ISA has. Halide 14's cast emulates it more slowly where
// the target has no conversion instruction it uses (x86: it never emits F16C).
Halide::Expr widen_half(const Halide::Expr &half);

// fp32 -> the bits of the nearest fp16 (ties to even; subnormals, infinities, and
// NaN as a quiet NaN), with integer operations, as gqa::float_to_half rounds. For
// targets where Halide's float16 type is unusable: OpenCL without cl_khr_fp16.
Halide::Expr narrow_half(const Halide::Expr &value);

struct AttendInputs {
    Halide::Func q, mask;
    Halide::Func k_cache, v_cache;  // of cache_type's storage; widened to fp32 as read
    // kv_len is the largest row_kv_len, which bounds the loops over keys. A row's key
    // slots past its row_kv_len, up to it rounded up to layout::kKeySlotPadding, are
    // read (their table entries and cache slots exist) and ignored.
    Halide::Expr head_dim, group, num_kv_heads, seq_len, kv_len, batch;
    Halide::Expr use_mask; // 0: mask is not read
    Halide::Expr scale;    // multiplies q . k
    Halide::Expr softcap;  // > 0: score = softcap * tanh(score / softcap)
    Halide::Expr causal;   // 1: key slot <= query slot
    Halide::Expr window;   // key slot > query slot - window (pass >= kv_len for none)
    // sinks(r, kvh): a learned logit per query head that joins its softmax's
    // denominator and has no value (gpt-oss); read only when use_sinks != 0, so a
    // schedule can specialize the layers without them back to their own code.
    Halide::Func sinks;
    Halide::Expr use_sinks;
    HalfWidening half_widening = HalfWidening::integer_ops;
    CacheType cache_type = CacheType::f32;
    // Every key read lies in the padded valid prefix (a schedule that reads only
    // whole key chunks of the visible keys of one query row), so reads need no clamp.
    bool reads_within_prefix = false;
    // row_kv_len(b): the valid key slots of row b. granule_offset(j, b): key slots
    // [j, j + 1) * kCacheGranule of row b lie at that offset in the cache's row b, for
    // j below `granules`, which covers every row's padded prefix. cache_slots: the
    // extent of the cache's slot dimension, which every granule lies in.
    Halide::Func row_kv_len, granule_offset;
    Halide::Expr granules, cache_slots;
};

// pattern_out and scores_out are null when the attention weights are not asked
// for (both or neither); segment_keys is undefined for whole rows, and must be
// with a pattern.
Attend define_attend(const AttendInputs &in, Halide::Func z_out, const Halide::Func *pattern_out,
                     const Halide::Func *scores_out, const Halide::Expr &segment_keys);

AttendBlocked define_attend_blocked(const AttendInputs &in, Halide::Func z_out, int key_block, int split_blocks);

}  // namespace gqa::algo
