/* gqa-halide C API: one grouped-query attention layer with a KV cache, over the C++
 * runtime (gqa/attention.hpp), for C programs and foreign-function interfaces.
 *
 * Conventions: every function that can fail returns a gqa_status; on failure
 * gqa_last_error() gives the message (naming the offending value and the expected
 * one) and the layer and its KV cache are exactly as they were. Tensors are dense,
 * row-major float32 in torch order; their shapes are given below and by the sizes
 * passed. Thread-safety: a gqa_attention must not be used from two threads at once;
 * distinct layers are independent. gqa_last_error() is per thread.
 */
#ifndef GQA_GQA_H
#define GQA_GQA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum gqa_status {
    GQA_STATUS_OK = 0,
    GQA_STATUS_INVALID = 1,       /* bad argument, shape or value; or an unavailable backend */
    GQA_STATUS_OUT_OF_MEMORY = 2,
    GQA_STATUS_INTERNAL = 3,      /* anything else (a bug: please report it) */
} gqa_status;

typedef enum gqa_backend {
    GQA_BACKEND_REFERENCE = 0,  /* plain loops, double accumulation */
    GQA_BACKEND_X86 = 1,        /* Halide AOT, AVX-512 / AVX2 / SSE4.1 chosen at run time */
    GQA_BACKEND_ARM = 2,        /* Halide AOT, ARMv8.2 FP16 / ARMv8.0 NEON chosen at run time */
    GQA_BACKEND_CUDA = 3,       /* Halide AOT for CUDA: weights and KV cache on the GPU */
    GQA_BACKEND_BEST = 4,       /* the fastest backend available here */
    GQA_BACKEND_OPENCL = 5,     /* the GPU schedules as OpenCL C: weights and KV cache on the device */
    GQA_BACKEND_NONE = -1,      /* returned by gqa_attention_backend(NULL) */
} gqa_backend;

typedef enum gqa_rope_style {
    GQA_ROPE_NONE = 0,
    GQA_ROPE_INTERLEAVED = 1,   /* torchtune / GPT-J: pairs (2j, 2j+1) */
    GQA_ROPE_ROTATE_HALF = 2,   /* GPT-NeoX / HF Llama / TransformerLens: pairs (j, j + R/2) */
} gqa_rope_style;

typedef enum gqa_cache_type {
    GQA_CACHE_F32 = 0,
    GQA_CACHE_F16 = 1,   /* k and v rounded to IEEE fp16 as written; arithmetic stays fp32 */
    GQA_CACHE_BF16 = 2,  /* rounded to bfloat16 */
    GQA_CACHE_INT8 = 3,  /* int8 with an fp32 scale per (token, kv head): see gqa::CacheType::int8 */
} gqa_cache_type;

typedef enum gqa_weight_type {
    GQA_WEIGHT_F32 = 0,
    GQA_WEIGHT_BF16 = 1,      /* bfloat16 bits */
    GQA_WEIGHT_F16 = 2,       /* IEEE fp16 bits */
    GQA_WEIGHT_INT8 = 3,      /* gqa_config.weight_type only: quantize (see gqa::WeightType::int8) */
    GQA_WEIGHT_AS_GIVEN = 4,  /* gqa_config.weight_type: keep the type the weights come in */
} gqa_weight_type;

typedef enum gqa_rope_scaling_type {
    GQA_ROPE_SCALING_NONE = 0,
    GQA_ROPE_SCALING_LINEAR = 1,
    GQA_ROPE_SCALING_LLAMA3 = 2,
    GQA_ROPE_SCALING_YARN = 3,
    GQA_ROPE_SCALING_LONGROPE = 4,
} gqa_rope_scaling_type;

/* transformers' rope_scaling; the fields mean what gqa::RopeScaling's do. */
typedef struct gqa_rope_scaling {
    gqa_rope_scaling_type type;
    double factor;
    int32_t original_max_position_embeddings;
    double low_freq_factor, high_freq_factor;
    double beta_fast, beta_slow;
    int32_t truncate;
    double mscale, mscale_all_dim;
    const double *short_factor, *long_factor; /* longrope: rotary_dim / 2 each, else NULL */
    int32_t max_position_embeddings;
    double attention_factor;
} gqa_rope_scaling;

typedef enum gqa_qk_norm {
    GQA_QK_NORM_NONE = 0,
    GQA_QK_NORM_PER_HEAD = 1,   /* RMS over each head (Qwen3, Gemma 3) */
    GQA_QK_NORM_ALL_HEADS = 2,  /* RMS over all heads of q, and of k (OLMo 2) */
} gqa_qk_norm;

/* The layer's configuration; start from gqa_config_default(). The fields mean what
 * gqa::Config's do. */
typedef struct gqa_config {
    int32_t embed_dim;       /* d */
    int32_t num_heads;       /* query heads */
    int32_t num_kv_heads;    /* num_heads % num_kv_heads == 0 */
    int32_t head_dim;
    int32_t max_seq_len;     /* positions must be < max_seq_len (default 4096) */
    gqa_rope_style rope_style;  /* default GQA_ROPE_INTERLEAVED */
    double rope_base;        /* default 10000 */
    int32_t rotary_dim;      /* 0: head_dim */
    int32_t rope_fp32_angles;  /* nonzero: torchtune's fp32 angle table */
    int32_t is_causal;       /* without a mask: causal (default, nonzero) or full attention */
    int32_t has_window;      /* nonzero: sliding window of `window` slots (> 0) */
    int32_t window;
    double scale;            /* 0: 1/sqrt(head_dim) */
    int32_t layer_id;        /* >= 0: scores / (layer_id + 1); default -1 */
    double softcap;          /* > 0: softcap * tanh(score / softcap); default 0 */
    gqa_rope_scaling rope_scaling;  /* default: type GQA_ROPE_SCALING_NONE */
    const double *rope_inv_freq;    /* NULL, or your own rotary_dim / 2 inverse frequencies */
    gqa_qk_norm qk_norm;            /* default GQA_QK_NORM_NONE; weights q_norm, k_norm */
    double qk_norm_eps;             /* default 1e-6 */
    gqa_weight_type weight_type;    /* the type the layer keeps wq..wo in; default GQA_WEIGHT_AS_GIVEN */
} gqa_config;

/* Projection weights in nn.Linear layout [out_features, in_features]:
 *   wq [num_heads*head_dim, d], wk and wv [num_kv_heads*head_dim, d],
 *   wo [d, num_heads*head_dim], of element type `type` (floats, or 16-bit words);
 *   biases bq [num_heads*head_dim], bk and bv [num_kv_heads*head_dim], bo [d], or
 *   NULL for none. Copied at creation. */
typedef struct gqa_weights {
    const void *wq, *wk, *wv, *wo;
    const float *bq, *bk, *bv, *bo;
    const float *sinks; /* [num_heads] attention-sink logits (gpt-oss), or NULL */
    /* With qk_norm: [head_dim] each (per head), or [num_heads*head_dim] and
     * [num_kv_heads*head_dim] (all heads); NULL without. */
    const float *q_norm, *k_norm;
    gqa_weight_type type; /* of wq..wo: GQA_WEIGHT_F32 (0, what a zero-initialised struct has), BF16 or F16 */
} gqa_weights;

typedef struct gqa_attention gqa_attention;

gqa_config gqa_config_default(void);

/* The message of this thread's last call that returns a gqa_status: why it failed,
 * or "" when it succeeded. */
const char *gqa_last_error(void);
const char *gqa_status_name(gqa_status status);
const char *gqa_backend_name(gqa_backend backend);
/* 1 when the backend is built into this library and can run here, else 0. */
int gqa_backend_available(gqa_backend backend);

/* Creates a layer; *layer is NULL on failure. */
gqa_status gqa_attention_create(const gqa_config *config, const gqa_weights *weights, gqa_backend backend,
                                gqa_attention **layer);
/* Frees the layer and its cache; NULL is ignored. */
void gqa_attention_free(gqa_attention *layer);
/* The backend the layer runs on (GQA_BACKEND_BEST resolved); GQA_BACKEND_NONE for NULL. */
gqa_backend gqa_attention_backend(const gqa_attention *layer);

/* torchtune KVCache(batch, max_seq_len): zero-filled k/v [batch, num_kv_heads,
 * max_seq_len, head_dim]; replaces any previous cache. */
gqa_status gqa_attention_setup_cache(gqa_attention *layer, int32_t batch, int32_t max_seq_len, gqa_cache_type type);
/* Zeroes the cache; its size becomes 0. */
gqa_status gqa_attention_reset(gqa_attention *layer);
/* Tokens written to the cache so far (0 without one); -1 for a NULL layer. */
int32_t gqa_attention_cache_size(const gqa_attention *layer);
/* torchtune KVCache.update: k and v [batch, num_kv_heads, n, head_dim] (rotated, as
 * forward stores them) into the next n slots, converted to the cache's type. */
gqa_status gqa_attention_append_cache(gqa_attention *layer, const float *k, const float *v, int32_t n);
/* The whole cache as fp32 (int8 dequantized), k and v [batch, num_kv_heads,
 * max_seq_len, head_dim] each, count floats each. */
gqa_status gqa_attention_read_cache(const gqa_attention *layer, float *k, float *v, size_t count);

/* out [batch, seq_len, d] (out_count floats) = attention(x [batch, seq_len, d]).
 * mask: NULL, or [batch, seq_len, mask_len] bytes, nonzero = may attend, mask_len =
 *   cache size + seq_len or the cache's max_seq_len (without a cache, seq_len).
 * input_pos: NULL (positions are the cache slots), or RoPE positions: [seq_len] when
 *   input_pos_rows is 1, [batch, seq_len] when it is batch.
 * Semantics, including the NaN rule, as gqa::Attention::forward. */
gqa_status gqa_attention_forward(gqa_attention *layer, const float *x, int32_t batch, int32_t seq_len, float *out,
                                 size_t out_count, const uint8_t *mask, int32_t mask_len, const int32_t *input_pos,
                                 int32_t input_pos_rows);

/* TransformerLens' hooks (gqa::Hook; README "What is computed"). */
typedef enum gqa_hook {
    GQA_HOOK_Q = 0,           /* [batch, seq_len, num_heads, head_dim], before RoPE */
    GQA_HOOK_K = 1,           /* [batch, seq_len, num_kv_heads, head_dim], before RoPE */
    GQA_HOOK_V = 2,           /* [batch, seq_len, num_kv_heads, head_dim] */
    GQA_HOOK_ROT_Q = 3,       /* as GQA_HOOK_Q, rotated */
    GQA_HOOK_ROT_K = 4,       /* as GQA_HOOK_K, rotated */
    GQA_HOOK_ATTN_SCORES = 5, /* [batch, num_heads, seq_len, kv_len], -inf where not visible */
    GQA_HOOK_PATTERN = 6,     /* [batch, num_heads, seq_len, kv_len] */
    GQA_HOOK_Z = 7,           /* [batch, seq_len, num_heads, head_dim] */
    GQA_HOOK_RESULT = 8,      /* [batch, seq_len, num_heads, d]: each head's share of out, no bias */
} gqa_hook;
/* "hook_q", ...; NULL for a value that is no hook. */
const char *gqa_hook_name(gqa_hook hook);
/* The hooks the next forwards record (count of them; z is always kept). */
gqa_status gqa_attention_set_recorded_hooks(gqa_attention *layer, const gqa_hook *hooks, int32_t count);
/* A hook of the last forward (it must have been recorded): its shape into shape[4]
 * and, when values is not NULL, its elements into values (count floats, as many as
 * the shape holds). */
gqa_status gqa_attention_hook(const gqa_attention *layer, gqa_hook hook, int64_t shape[4], float *values,
                              size_t count);

/* Activation patching: the hook's activation in the forward is replaced by `values`
 * (count floats, the hook's shape in that forward) and the layer continues from it;
 * q, k, v, rot_q, rot_k, pattern and z can be patched. */
typedef struct gqa_patch {
    gqa_hook hook;
    const float *values;
    size_t count;
} gqa_patch;

/* gqa_attention_forward with TransformerLens' inputs: either x [batch, seq_len, d]
 * (query, key and value NULL) or one input per head (x NULL): query [batch, seq_len,
 * num_heads, d], key and value [batch, seq_len, num_kv_heads, d]; and patch_count
 * patches (NULL when 0). */
gqa_status gqa_attention_forward_hooked(gqa_attention *layer, const float *x, const float *query, const float *key,
                                        const float *value, int32_t batch, int32_t seq_len, float *out,
                                        size_t out_count, const uint8_t *mask, int32_t mask_len,
                                        const int32_t *input_pos, int32_t input_pos_rows, const gqa_patch *patches,
                                        int32_t patch_count);

/* Serving (as gqa::Attention's paged cache, README "Serving"): a pool of num_blocks
 * blocks of block_size slots (a positive multiple of 16) that sequences draw from;
 * replaces any cache. */
gqa_status gqa_attention_setup_paged_cache(gqa_attention *layer, int32_t num_blocks, int32_t block_size,
                                           gqa_cache_type type);
/* Blocks of the pool no sequence holds; -1 for a NULL layer or one without a paged cache. */
int32_t gqa_attention_free_blocks(const gqa_attention *layer);
/* A new empty sequence, or a fork of `from` sharing its blocks: its id in *sequence. */
gqa_status gqa_attention_add_sequence(gqa_attention *layer, int32_t *sequence);
gqa_status gqa_attention_fork_sequence(gqa_attention *layer, int32_t from, int32_t *sequence);
/* Keeps the first `length` tokens (at least gqa::Attention::min_sequence_length). */
gqa_status gqa_attention_truncate_sequence(gqa_attention *layer, int32_t sequence, int32_t length);
gqa_status gqa_attention_remove_sequence(gqa_attention *layer, int32_t sequence);
/* The tokens a sequence holds in *length. */
gqa_status gqa_attention_sequence_length(const gqa_attention *layer, int32_t sequence, int32_t *length);
/* One serving step: rows sequences[r] gain tokens[r] new tokens each (r < rows); x
 * [total, d] holds them one row after the other, out the same (out_count floats).
 * input_pos: NULL (the slots), or [total] RoPE positions. As
 * gqa::Attention::forward_sequences. */
gqa_status gqa_attention_forward_sequences(gqa_attention *layer, const int32_t *sequences, const int32_t *tokens,
                                           int32_t rows, const float *x, float *out, size_t out_count,
                                           const int32_t *input_pos);

#ifdef __cplusplus
}
#endif

#endif /* GQA_GQA_H */
