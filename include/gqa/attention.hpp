// gqa-halide public C++ API: one grouped-query attention layer with a KV cache.
//
// Semantics follow torchtune's MultiHeadAttention + KVCache and TransformerLens'
// GroupedQueryAttention (see the README's feature table). All tensors are dense,
// row-major, in torch order; shapes below are torch shapes. The generated pipelines
// see the same memory in Halide order, innermost dimension first, so every shape
// reads reversed there: x [b, s, d] is (d, s, b), a cache [b, n_kv, T, hd] is
// (hd, T, n_kv, b), and q [b, s, n_h, hd] is (hd, r, n_kv, s, b) with head
// h = kv_head * (n_h / n_kv) + r (generators/attention_algorithm.h).
//
// Thread-safety: an Attention object is not safe to use from two threads at once;
// distinct objects are independent and may run concurrently.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gqa {

// Every failure of this library: bad shapes or values, an unbuilt backend, a
// pipeline error. The message names the offending value and what was expected.
// A call that throws, for any reason (a pipeline or an allocation failing too),
// leaves the layer, its KV cache (contents and size), z() and pattern() exactly as
// they were. Sizes are checked as given, in 64 bits: no array the pipelines see may
// hold more than 2^31 - 1 elements (Halide's 32-bit extents and strides).
class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

enum class Backend {
    reference,  // plain loops, double accumulation: the oracle of the tests
    x86,        // Halide AOT, AVX-512 / AVX2 / SSE4.1 chosen at run time
    arm,        // Halide AOT for aarch64, ARMv8.2 FP16 / ARMv8.0 NEON chosen at run time
    cuda,       // Halide AOT for CUDA (x86-64 hosts): weights and KV cache on the GPU
    opencl,     // the GPU schedules as OpenCL C (x86-64 hosts): weights and KV cache on the device
    best,       // the fastest backend built for this machine
};

std::string_view backend_name(Backend backend);
// "reference", "x86", "arm", "cuda", "opencl", "best"; throws Error for anything else.
Backend backend_from_name(std::string_view name);
// Backends compiled into this library that can run here, fastest last.
std::vector<Backend> available_backends();
// Whether this library was compiled with the backend (a GPU one may still have no
// device here), and why it cannot run here ("" when it can).
bool backend_built(Backend backend);
std::string backend_unavailable_reason(Backend backend);
// The instruction set a backend's pipelines run with on this CPU, as its run-time
// dispatch chose it: "avx512", "avx2" or "sse41" for x86, "armv8.2-a+fp16" or
// "armv8-a" for arm, "" for reference. Throws Error if the backend is unavailable.
std::string backend_isa(Backend backend);

// Element type of the KV cache. k and v are converted as they are written, read
// back as fp32 inside the attention loops, and all arithmetic stays fp32.
// f16 and bf16 halve the cache's memory and what a decode step reads: each value
// rounded to the nearest fp16 or bfloat16 (ties to even). int8 about quarters it:
// each slot (the head_dim values x of one token and kv head) holds
// q_d = round(x_d / s) in [-127, 127] and one fp32 scale s = max_d |x_d| * (1/127)
// (times the fp32 constant, then rounded to 17 significant bits) of the slot, stored
// after its values (head_dim + 4 bytes a slot); a value reads as q_d * s, exactly
// (q = 0 where s is 0; s is NaN where some x_d is not, keeping the NaN rule).
enum class CacheType { f32, f16, bf16, int8 };
std::string_view cache_type_name(CacheType type);  // "f32", "f16", "bf16", "int8"
// The inverse; throws Error for any other name.
CacheType cache_type_from_name(std::string_view name);

// "[2, 3, 30]": how the library's messages print a tensor shape.
std::string shape_string(const std::vector<int64_t> &shape);

// IEEE 754 binary16 bits <-> float, rounding to nearest even: how an f16 cache
// stores values.
uint16_t float_to_half(float value);
float half_to_float(uint16_t bits);
// bfloat16 bits (the upper half of a float) <-> float, rounding to nearest even.
uint16_t float_to_bfloat16(float value);
float bfloat16_to_float(uint16_t bits);

// Element type of the projection weights wq, wk, wv, wo as the layer keeps them,
// packed, in host or device memory. bf16 and f16 halve that memory and what a
// decode step reads; each weight is widened to fp32 exactly as it is read, and
// every product is accumulated in fp32 (biases, sinks and norm weights stay fp32).
// int8 (weight-only quantization, as llama.cpp's Q8_0) quarters it: each group of
// kWeightGroup = 32 consecutive inputs of an output row holds round(w / s) in
// [-127, 127] with one fp32 scale s = max |w| / 127 of the group; a weight reads as
// q * s. Its error against the unquantized layer is documented in the README.
enum class WeightType { f32, bf16, f16, int8 };
std::string_view weight_type_name(WeightType type);  // "f32", "bf16", "f16", "int8"
// The inverse; throws Error for any other name.
WeightType weight_type_from_name(std::string_view name);

// RoPE frequency scaling, as transformers' `rope_scaling` (modeling_rope_utils.py)
// computes it: each rotated pair j has the inverse frequency inv_j = base^(-2j/R),
// rescaled as below, and cos and sin are multiplied by an attention factor.
enum class RopeScalingType {
    none,
    linear,    // inv_j / factor
    llama3,    // by wavelength: long ones / factor, short ones kept, a smooth ramp between
    yarn,      // a ramp between interpolation (/ factor) and extrapolation over pair index
    longrope,  // inv_j / long_factor[j] or / short_factor[j]; Phi-3/4
};

struct RopeScaling {
    RopeScalingType type = RopeScalingType::none;
    double factor = 1.0;                       // linear, llama3, yarn
    int original_max_position_embeddings = 0;  // llama3, yarn, longrope: the pretraining context L
    double low_freq_factor = 1.0, high_freq_factor = 4.0;  // llama3
    double beta_fast = 32.0, beta_slow = 1.0;  // yarn: the rotation counts that bound the ramp
    bool truncate = true;                      // yarn: floor / ceil the ramp's ends
    double mscale = 0.0, mscale_all_dim = 0.0; // yarn: the attention factor from these when both > 0
    // longrope: one factor per rotated pair; long_factor once the layer's max_seq_len
    // exceeds L, else short_factor.
    std::vector<double> short_factor, long_factor;
    int max_position_embeddings = 0;           // longrope: M, for its attention factor
    // yarn, longrope: > 0 replaces the derived attention factor. (linear and llama3 have none.)
    double attention_factor = 0.0;
};

enum class RopeStyle {
    none,
    interleaved,  // torchtune / GPT-J: pairs (2j, 2j+1)
    rotate_half,  // GPT-NeoX / HF Llama / TransformerLens default: pairs (j, j + R/2)
};

// RMS normalisation of q and k before RoPE, each element then times its weight
// (Weights::q_norm, k_norm): x * w / sqrt(mean(x^2) + eps), the mean in fp32.
enum class QkNorm {
    none,
    per_head,   // over each head's head_dim values (Qwen3, Gemma 3)
    all_heads,  // over all of a token's q values at once, and all its k values (OLMo 2)
};

struct Config {
    int embed_dim = 0;     // d
    int num_heads = 0;     // n_h (query heads)
    int num_kv_heads = 0;  // n_kv; n_h % n_kv == 0. n_kv == n_h is MHA, 1 is MQA
    int head_dim = 0;      // hd
    int max_seq_len = 4096;  // positions must be < max_seq_len (the RoPE table length)

    RopeStyle rope_style = RopeStyle::interleaved;
    double rope_base = 10000.0;
    int rotary_dim = 0;  // rotated dims [0, rotary_dim); 0 means head_dim
    // The angles p * theta_j in fp64, rounded once (default), or in fp32 as torchtune's
    // RotaryPositionalEmbeddings computes its cache (theta_j, then the product, in
    // fp32): that differs by up to about 1e-4 rad at position 2047, and torchtune's
    // asserted RoPE sums depend on it.
    bool rope_fp32_angles = false;
    RopeScaling rope_scaling;
    // Your own inverse frequency per rotated pair (rotary_dim / 2 of them, > 0):
    // replaces rope_base and rope_scaling's frequencies (not its attention factor).
    std::vector<double> rope_inv_freq;

    bool is_causal = true;  // without a mask: causal (true) or full attention (false)
    // A sliding window of this many slots, key slot in (q - window, q] (TL "local");
    // unset: none. Must be > 0 when set.
    std::optional<int> window;
    double scale = 0.0;     // multiplies q.k; 0 means 1/sqrt(head_dim)
    int layer_id = -1;      // >= 0: TL scale_attn_by_inverse_layer_idx, scores / (layer_id + 1)
    double softcap = 0.0;   // > 0: score = softcap * tanh(score / softcap) (Gemma-2)
    QkNorm qk_norm = QkNorm::none;
    double qk_norm_eps = 1e-6;  // > 0

    // The type the layer keeps wq, wk, wv and wo in. Unset: the type they are given
    // in (all four must share it). Set: each is converted at construction, rounding
    // to nearest even; a finite weight too large for the type is an Error.
    std::optional<WeightType> weight_type;
};

// A read-only dense row-major tensor owned by the caller.
template <typename T>
struct TensorView {
    const T *data = nullptr;
    std::vector<int64_t> shape;

    int64_t numel() const {
        int64_t n = 1;
        for (int64_t e : shape) n *= e;
        return n;
    }
};

// A read-only projection weight owned by the caller: fp32 values, the bits of bf16
// or f16 values (as a checkpoint stores them), or int8 values with their scales.
struct WeightView {
    const void *data = nullptr;
    std::vector<int64_t> shape;
    WeightType type = WeightType::f32;
    // int8: [out, ceil(in / 32)] row-major, the scale of each group of 32 inputs.
    const float *scales = nullptr;

    WeightView() = default;
    WeightView(const float *values, std::vector<int64_t> shape_) : data(values), shape(std::move(shape_)) {}
    WeightView(const TensorView<float> &view) : WeightView(view.data, view.shape) {}
    WeightView(const uint16_t *bits, std::vector<int64_t> shape_, WeightType bits_type)
        : data(bits), shape(std::move(shape_)), type(bits_type) {}
    WeightView(const int8_t *values, const float *group_scales, std::vector<int64_t> shape_)
        : data(values), shape(std::move(shape_)), type(WeightType::int8), scales(group_scales) {}

    int64_t numel() const {
        int64_t n = 1;
        for (int64_t e : shape) n *= e;
        return n;
    }
    // Element `index` (row-major) as fp32: widened exactly, or for int8 q * s (the
    // product rounded to fp32 once, as the pipelines compute it).
    float value(int64_t index) const;
};

// Projection weights in torch nn.Linear layout [out_features, in_features]:
//   wq [n_h*hd, d], wk/wv [n_kv*hd, d], wo [d, n_h*hd].
// Biases are optional (data == nullptr): bq [n_h*hd], bk/bv [n_kv*hd], bo [d].
// sinks [n_h] (optional, gpt-oss): one learned logit per query head that joins
// every softmax denominator of that head and has no value:
//   p_t = exp(s_t - m) / (sum_t' exp(s_t' - m) + exp(sink - m)).
// q_norm, k_norm: the weights of config.qk_norm (given exactly when it is set):
// [hd] each for per_head, [n_h*hd] and [n_kv*hd] for all_heads. They multiply the
// normalised value as given; Gemma 3 stores w for a factor 1 + w, so pass 1 + w
// (load_hf_layer does).
// The layer copies and packs them at construction; the caller's memory is not kept.
struct Weights {
    WeightView wq, wk, wv, wo;
    TensorView<float> bq, bk, bv, bo;
    TensorView<float> sinks;
    TensorView<float> q_norm, k_norm;
};

// TransformerLens' hook points of the layer (README "TransformerLens hooks"): what
// a forward records (Attention::set_recorded_hooks, hook()) and what it can be
// patched at (Patch). Shapes, for a forward of x [b, s, d] reaching kv_len key slots:
//   q, k, v       [b, s, heads, hd] before RoPE (after the q/k norms); k and v with
//                 n_kv heads, unexpanded
//   rot_q, rot_k  the same after RoPE: the call's tokens (with a cache, the keys of
//                 earlier calls are in the cache, rotated)
//   attn_scores   [b, n_h, s, kv_len]: q.k scaled and soft-capped; -inf where the
//                 query may not see the key (causal rule, window, mask)
//   pattern       [b, n_h, s, kv_len]: their softmax (a sink joins its denominator)
//   z             [b, s, n_h, hd]
//   result        [b, s, n_h, d]: each head's z times its columns of wo, no bias
enum class Hook { q, k, v, rot_q, rot_k, attn_scores, pattern, z, result };
inline constexpr int kHookCount = 9;
// "hook_q", "hook_k", ... as TransformerLens names them; throws Error for another value.
std::string_view hook_name(Hook hook);
// The inverse; throws Error for any other name.
Hook hook_from_name(std::string_view name);
// Whether a forward can be patched at the hook (Patch); throws Error for a value that is no hook.
bool can_patch(Hook hook);

// The input of a forward with TransformerLens' use_split_qkv_input: one input per
// head, each projected only by its own head's rows of wq, wk or wv.
struct SplitQkvInput {
    TensorView<float> query;        // [b, s, n_h, d]: query head h reads query[:, :, h]
    TensorView<float> key, value;   // [b, s, n_kv, d]: kv head j reads key[:, :, j], value[:, :, j]
};

// Activation patching: in the forward, the hook's activation is replaced by
// `value` (the shape hook() gives it, for this call) and the layer continues from
// it. q, k, v, rot_q, rot_k, pattern and z can be patched; a patched k or v is
// what the cache then holds (k rotated). A patched pattern weighs every key slot's
// value, visible or not, as TransformerLens does.
struct Patch {
    Hook hook = Hook::z;
    TensorView<float> value;
};

// One row of a serving batch (Attention::forward_sequences): `tokens` new tokens of
// the paged cache's sequence `sequence`.
struct SequenceTokens {
    int sequence = 0;
    int tokens = 0;
};

class Attention {
public:
    Attention(const Config &config, const Weights &weights, Backend backend = Backend::best);
    ~Attention();
    Attention(Attention &&) noexcept;
    Attention &operator=(Attention &&) noexcept;
    Attention(const Attention &) = delete;
    Attention &operator=(const Attention &) = delete;

    // torchtune KVCache(batch_size, max_seq_len, dtype): k/v caches
    // [b, n_kv, max_seq_len, hd], zero-filled, size() == 0. Replaces any previous cache.
    void setup_cache(int batch_size, int max_seq_len, CacheType type = CacheType::f32);
    bool has_cache() const;
    CacheType cache_type() const;
    int cache_batch() const;        // 0 without a cache
    int cache_max_seq_len() const;  // 0 without a cache
    void remove_cache();
    // Zeroes the caches and sets size() to 0; a paged cache forgets its sequences.
    void reset();
    // torchtune KVCache.update: writes k and v, [b, n_kv, n, hd] each (already
    // rotated, as forward stores them), at slots [size(), size() + n) and advances
    // size() by n; e.g. to restore a saved prefix. Converted to the cache's type as
    // forward converts them (what k_cache_as_float returns comes back unchanged).
    void append_cache(const TensorView<float> &k, const TensorView<float> &v);
    // Tokens written to the cache so far.
    int size() const;

    // Serving (README "Serving"): a paged KV cache that sequences of different
    // lengths draw blocks from, each sequence its own positions. A pool of
    // num_blocks blocks of block_size slots (a positive multiple of 16), zero-filled,
    // with no sequences; it replaces any cache, as setup_cache replaces it. The same
    // cache types as setup_cache. In a layer with a sliding window a sequence lets go
    // of the blocks no later query can see but one (kept so that it can always roll
    // back block_size tokens after a forward), so its memory stays within the window plus two blocks
    // (and the new tokens of a call).
    void setup_paged_cache(int num_blocks, int block_size = 32, CacheType type = CacheType::f32);
    bool has_paged_cache() const;
    int paged_block_size() const;   // 0 without a paged cache
    int paged_blocks() const;       // the pool's blocks; 0 without
    int free_paged_blocks() const;  // those no sequence holds
    // A new, empty sequence; ids are never reused.
    int add_sequence();
    // A new sequence holding the same tokens as `sequence` (a shared prompt), sharing
    // its blocks: a shared block is copied when either sequence first writes into it.
    int fork_sequence(int sequence);
    // Keeps the first `length` tokens (rolls back rejected draft tokens), letting go
    // of the blocks past them; the next token goes to slot `length` and its position
    // must follow that of token length - 1. In a windowed layer the tokens a later
    // query would see must still be held: length >= min_sequence_length.
    void truncate_sequence(int sequence, int length);
    // The fewest tokens truncate_sequence can keep: 0, or in a windowed layer the
    // window's worth past the first slot still held. Right after a forward it is at
    // most length - block_size unless an earlier rollback already went further.
    int min_sequence_length(int sequence) const;
    // Forgets the sequence, letting go of its blocks.
    void remove_sequence(int sequence);
    int sequence_length(int sequence) const;
    std::vector<int> sequences() const;  // the ids, ascending
    // As append_cache for a sequence: k and v [n_kv, n, hd] each (rotated, as
    // forward_sequences stores them) become its next n tokens, at the positions after
    // its last (e.g. to restore a saved prefix).
    void append_sequence_cache(int sequence, const TensorView<float> &k, const TensorView<float> &v);
    // A sequence's keys or values as the attention reads them, [n_kv, length, hd]
    // fp32; slots a windowed layer let go of read as 0.
    std::vector<float> sequence_k_as_float(int sequence) const;
    std::vector<float> sequence_v_as_float(int sequence) const;

    // One serving step: each row's new tokens join the end of its sequence, and
    // attend to that sequence alone (causal by slot, the sliding window if set; or
    // all of it if !is_causal), as forward() on a cache holding only that sequence
    // would. x [tokens, d] holds the rows' tokens one row after the other, out the
    // same; each row runs at the cost of its own tokens and cache. A sequence not
    // listed is left as it is; a sequence may appear once.
    // input_pos [tokens]: RoPE positions, increasing within each sequence across
    // calls and < max_seq_len; without it, the slots. The NaN rule holds per sequence.
    // No hook is recorded (the layer refuses to run while any is asked for):
    // pattern(), z() and hook() stay those of the last forward().
    void forward_sequences(std::span<const SequenceTokens> rows, const TensorView<float> &x, std::span<float> out,
                           const std::optional<TensorView<int32_t>> &input_pos = std::nullopt);

    // out = attention(x) for x [b, s, d]; out [b, s, d] (b*s*d floats).
    //
    // With a cache, the new k/v go to cache slots [size(), size() + s) and the queries
    // attend to slots [0, size() + s); query i sits in slot size() + i. Without one,
    // each call attends within x only (slots 0..s-1).
    //
    // mask [b, s, L], 1 = may attend, L = size() + s or the cache's max_seq_len
    // (torchtune generate() passes the latter). It replaces the causal/window rule.
    // Without a mask: causal by slot, a sliding window if config.window is set, or
    // everything written if !config.is_causal. A query that may see no key gets 0.
    //
    // input_pos [s] or [b, s] (or [b] when s == 1): RoPE positions. Without it the
    // positions are the slots, size() + i (0..s-1 on a fresh cache). With a cache they
    // must be < cache_max_seq_len() and, in each batch row, increase from token to
    // token across calls (since setup_cache or reset; append_cache sets no position).
    // Without a cache any order is allowed (e.g. packed sequences).
    //
    // NaN rule, on every backend: a NaN or infinity in a token's x propagates. That
    // token's k and v (its cache slot) become NaN, and so does every output of a query
    // that may see that slot (by mask, causal rule or window; the token's own query
    // too, unless it may see no key), in this call and later ones. Nothing else
    // changes: other queries, other batch rows and their cache slots come out
    // bit-identical to a run without it.
    //
    // patches: activation patching (Patch), each hook at most once.
    void forward(const TensorView<float> &x, std::span<float> out,
                 const std::optional<TensorView<uint8_t>> &mask = std::nullopt,
                 const std::optional<TensorView<int32_t>> &input_pos = std::nullopt,
                 std::span<const Patch> patches = {});
    std::vector<float> forward(const TensorView<float> &x,
                               const std::optional<TensorView<uint8_t>> &mask = std::nullopt,
                               const std::optional<TensorView<int32_t>> &input_pos = std::nullopt);
    // forward with one input per head (SplitQkvInput), b and s from its tensors.
    void forward_split(const SplitQkvInput &input, std::span<float> out,
                       const std::optional<TensorView<uint8_t>> &mask = std::nullopt,
                       const std::optional<TensorView<int32_t>> &input_pos = std::nullopt,
                       std::span<const Patch> patches = {});

    // The hooks the next forwards record: exactly these (z is always kept). A
    // forward that records only z and the pattern, with one x and no patch, runs the
    // fast pipelines (the pattern's from the attention instance that writes it);
    // any other hook, a split input or a patch takes the recording ones, which run
    // each stage apart (TransformerLens' order) and are slower.
    void set_recorded_hooks(std::span<const Hook> hooks);
    std::vector<Hook> recorded_hooks() const;
    // A hook of the last forward(), as it was recorded (a patched one holds the
    // patch); Error if that forward did not record it. Valid until the next call.
    TensorView<float> hook(Hook hook) const;
    // The shape hook() gives `hook`, and a Patch of it must have, in a forward of
    // batch x seq_len tokens now (reaching size() + seq_len key slots with a cache).
    std::vector<int64_t> hook_shape(Hook hook, int64_t batch, int64_t seq_len) const;
    // Adds or removes the pattern from the recorded hooks.
    void set_record_pattern(bool record);
    // hook(Hook::pattern) and hook(Hook::z).
    TensorView<float> pattern() const;
    TensorView<float> z() const;
    // The caches as stored, [b, n_kv, max_seq_len, hd]; slots >= size() are zero.
    // Each pair reads the cache of its type and throws Error for another: f32 with
    // k_cache/v_cache, f16 with k_cache_f16/v_cache_f16 (binary16 bits), bf16 with
    // k_cache_bf16/v_cache_bf16 (bfloat16 bits), int8 with k_cache_int8/v_cache_int8,
    // whose last dimension is hd + 4: a slot's values, then its scale's bytes.
    TensorView<float> k_cache() const;
    TensorView<float> v_cache() const;
    TensorView<uint16_t> k_cache_f16() const;
    TensorView<uint16_t> v_cache_f16() const;
    TensorView<uint16_t> k_cache_bf16() const;
    TensorView<uint16_t> v_cache_bf16() const;
    TensorView<int8_t> k_cache_int8() const;
    TensorView<int8_t> v_cache_int8() const;
    // Any cache type, as the attention reads it: [b, n_kv, max_seq_len, hd] fp32
    // (int8: q * s, exact). A copy.
    std::vector<float> k_cache_as_float() const;
    std::vector<float> v_cache_as_float() const;

    const Config &config() const;
    Backend backend() const;
    // The type the layer keeps its projection weights in (Config::weight_type).
    WeightType weight_type() const;

private:
    struct State;
    State *state_;
};

// Rotary embedding alone: x [b, s, n, hd] -> out (same shape), rotated at positions
// input_pos ([s] or [b, s]) or, without it, position_offset + 0..s-1.
void apply_rope(const Config &config, const TensorView<float> &x, std::span<float> out,
                const std::optional<TensorView<int32_t>> &input_pos = std::nullopt, int position_offset = 0,
                Backend backend = Backend::best);

}  // namespace gqa
