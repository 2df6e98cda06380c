/* The C API from C: a layer on every available backend against the reference, a
 * prefill then decode steps through the cache; and failures that return
 * GQA_STATUS_INVALID with a message naming the value, leaving the cache as it was. */
#include <gqa/gqa.h>

#include "../tools/tolerance.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { D = 48, HEADS = 6, KV_HEADS = 2, HEAD_DIM = 8, PROMPT = 9, STEPS = 3, MAX_SEQ = 32 };

static int failures = 0;

#define CHECK(condition, ...)                                          \
    do {                                                               \
        if (!(condition)) {                                            \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #condition); \
            fprintf(stderr, __VA_ARGS__);                              \
            fputc('\n', stderr);                                       \
            ++failures;                                                \
        }                                                              \
    } while (0)

/* Uniform in [-0.5, 0.5) from a hash of (seed, index). */
static float uniform(unsigned seed, unsigned index) {
    unsigned h = seed * 0x9e3779b9u + index;
    h ^= h >> 16, h *= 0x7feb352du, h ^= h >> 15, h *= 0x846ca68bu, h ^= h >> 16;
    return (float)(h & 0xffff) / 65536.0f - 0.5f;
}

static void fill(float *values, size_t count, float scale, unsigned seed) {
    for (size_t i = 0; i < count; ++i) values[i] = scale * uniform(seed, (unsigned)i);
}

/* NaN counts as infinitely far. An early exit, not an fmax reduction: gcc 12's
 * aarch64 vectorizer stops with an internal compiler error on that. */
static double max_abs_diff(const float *got, const float *want, int count) {
    double worst = 0;
    for (int i = 0; i < count; ++i) {
        const double diff = fabs((double)got[i] - want[i]);
        if (isnan(diff)) return INFINITY;
        if (diff > worst) worst = diff;
    }
    return worst;
}

static float wq[HEADS * HEAD_DIM * D], wk[KV_HEADS * HEAD_DIM * D], wv[KV_HEADS * HEAD_DIM * D],
    wo[D * HEADS * HEAD_DIM], bo[D];
static float prompt[2 * PROMPT * D], steps[STEPS][2 * D];
static float sinks[HEADS], q_norm[HEAD_DIM], k_norm[HEAD_DIM];

/* Prefill then STEPS decode steps, batch 2; out holds every output in order. With
 * model_features: rotate-half RoPE with llama3 scaling, q/k norms per head, sinks. */
static gqa_status run(gqa_backend backend, gqa_cache_type cache, int model_features, float *out) {
    gqa_config config = gqa_config_default();
    config.embed_dim = D, config.num_heads = HEADS, config.num_kv_heads = KV_HEADS, config.head_dim = HEAD_DIM;
    config.max_seq_len = MAX_SEQ;
    gqa_weights weights = {wq, wk, wv, wo, NULL, NULL, NULL, bo};
    if (model_features) {
        config.rope_style = GQA_ROPE_ROTATE_HALF;
        config.rope_scaling.type = GQA_ROPE_SCALING_LLAMA3;
        config.rope_scaling.factor = 8, config.rope_scaling.original_max_position_embeddings = 16;
        config.qk_norm = GQA_QK_NORM_PER_HEAD;
        weights.sinks = sinks, weights.q_norm = q_norm, weights.k_norm = k_norm;
    }
    gqa_attention *layer = NULL;
    gqa_status status = gqa_attention_create(&config, &weights, backend, &layer);
    if (status != GQA_STATUS_OK) return status;
    status = gqa_attention_setup_cache(layer, 2, MAX_SEQ, cache);
    if (status == GQA_STATUS_OK) {
        status = gqa_attention_forward(layer, prompt, 2, PROMPT, out, 2 * PROMPT * D, NULL, 0, NULL, 0);
    }
    for (int s = 0; s < STEPS && status == GQA_STATUS_OK; ++s) {
        status = gqa_attention_forward(layer, steps[s], 2, 1, out + (2 * PROMPT + 2 * s) * D, 2 * D, NULL, 0, NULL, 0);
    }
    if (status == GQA_STATUS_OK) CHECK(gqa_attention_cache_size(layer) == PROMPT + STEPS, "cache size");
    gqa_attention_free(layer);
    return status;
}

static void backends_match_reference(void) {
    enum { OUTPUTS = (2 * PROMPT + 2 * STEPS) * D };
    static float want[OUTPUTS], got[OUTPUTS], plain[OUTPUTS];
    for (int features = 0; features <= 1; ++features) {
        for (int type = GQA_CACHE_F32; type <= GQA_CACHE_INT8; ++type) {
            const gqa_cache_type cache = (gqa_cache_type)type;
            static const char *const names[] = {"f32", "f16", "bf16", "int8"};
            /* A reduced-precision cache may round a k or v to the neighbouring value on one side. */
            const double tolerance = cache == GQA_CACHE_F32    ? GQA_ATOL
                                     : cache == GQA_CACHE_INT8 ? GQA_INT8_CACHE_TOL
                                                               : GQA_HALF_CACHE_TOL;
            CHECK(run(GQA_BACKEND_REFERENCE, cache, features, want) == GQA_STATUS_OK, "reference: %s", gqa_last_error());
            if (features) {
                /* The model fields reach the layer: they change its output. */
                CHECK(run(GQA_BACKEND_REFERENCE, cache, 0, plain) == GQA_STATUS_OK, "%s", gqa_last_error());
                CHECK(max_abs_diff(plain, want, OUTPUTS) > 1e-2, "the model features changed nothing");
            }
            for (int b = GQA_BACKEND_X86; b <= GQA_BACKEND_OPENCL; ++b) {
                if (!gqa_backend_available((gqa_backend)b)) continue;
                CHECK(run((gqa_backend)b, cache, features, got) == GQA_STATUS_OK, "%s: %s",
                      gqa_backend_name((gqa_backend)b), gqa_last_error());
                const double worst = max_abs_diff(got, want, OUTPUTS);
                CHECK(worst <= tolerance, "%s, %s cache: max |diff| %g", gqa_backend_name((gqa_backend)b),
                      names[type], worst);
                printf("%s, %s cache%s: max |diff| vs reference %.2e\n", gqa_backend_name((gqa_backend)b),
                       names[type], features ? ", model features" : "", worst);
            }
        }
    }
}

/* An int8 cache read back as fp32 and appended to a fresh one holds the same
 * values (the conversion is idempotent), on the best backend; misuse is refused. */
static void cache_reads_back_and_appends(void) {
    enum { VALUES = 2 * KV_HEADS * MAX_SEQ * HEAD_DIM };
    static float k[VALUES], v[VALUES], k_again[VALUES], v_again[VALUES], k_slots[VALUES], v_slots[VALUES];
    static float out[2 * PROMPT * D];
    gqa_config config = gqa_config_default();
    config.embed_dim = D, config.num_heads = HEADS, config.num_kv_heads = KV_HEADS, config.head_dim = HEAD_DIM;
    config.max_seq_len = MAX_SEQ;
    const gqa_weights weights = {.wq = wq, .wk = wk, .wv = wv, .wo = wo};
    gqa_attention *written = NULL, *appended = NULL;
    CHECK(gqa_attention_create(&config, &weights, GQA_BACKEND_BEST, &written) == GQA_STATUS_OK, "%s", gqa_last_error());
    CHECK(gqa_attention_create(&config, &weights, GQA_BACKEND_BEST, &appended) == GQA_STATUS_OK, "%s", gqa_last_error());
    CHECK(gqa_attention_append_cache(appended, k, v, 1) == GQA_STATUS_INVALID, "append without a cache");
    CHECK(strstr(gqa_last_error(), "setup_cache") != NULL, "message: %s", gqa_last_error());
    CHECK(gqa_attention_setup_cache(written, 2, MAX_SEQ, GQA_CACHE_INT8) == GQA_STATUS_OK, "%s", gqa_last_error());
    CHECK(gqa_attention_setup_cache(appended, 2, MAX_SEQ, GQA_CACHE_INT8) == GQA_STATUS_OK, "%s", gqa_last_error());
    CHECK(gqa_attention_forward(written, prompt, 2, PROMPT, out, 2 * PROMPT * D, NULL, 0, NULL, 0) == GQA_STATUS_OK,
          "%s", gqa_last_error());
    CHECK(gqa_attention_read_cache(written, k, v, VALUES - 1) == GQA_STATUS_INVALID, "read with a short count");
    CHECK(strstr(gqa_last_error(), "count is") != NULL, "message: %s", gqa_last_error());
    CHECK(gqa_attention_read_cache(written, k, v, VALUES) == GQA_STATUS_OK, "%s", gqa_last_error());
    /* The first PROMPT slots of each (row, kv head): [2, KV_HEADS, PROMPT, HEAD_DIM]. */
    int n = 0;
    for (int row_head = 0; row_head < 2 * KV_HEADS; ++row_head) {
        for (int e = 0; e < PROMPT * HEAD_DIM; ++e, ++n) {
            k_slots[n] = k[row_head * MAX_SEQ * HEAD_DIM + e], v_slots[n] = v[row_head * MAX_SEQ * HEAD_DIM + e];
        }
    }
    CHECK(gqa_attention_append_cache(appended, k_slots, v_slots, PROMPT) == GQA_STATUS_OK, "%s", gqa_last_error());
    CHECK(gqa_attention_cache_size(appended) == PROMPT, "size after append");
    CHECK(gqa_attention_read_cache(appended, k_again, v_again, VALUES) == GQA_STATUS_OK, "%s", gqa_last_error());
    CHECK(memcmp(k, k_again, sizeof k) == 0 && memcmp(v, v_again, sizeof v) == 0, "appended values differ");
    gqa_attention_free(written);
    gqa_attention_free(appended);
}

/* One prefill (fp32 cache) of layers built from `weights`, kept as `keep`. */
static gqa_status prefill_with(gqa_backend backend, const gqa_weights *weights, gqa_weight_type keep, float *out) {
    gqa_config config = gqa_config_default();
    config.embed_dim = D, config.num_heads = HEADS, config.num_kv_heads = KV_HEADS, config.head_dim = HEAD_DIM;
    config.max_seq_len = MAX_SEQ;
    config.weight_type = keep;
    gqa_attention *layer = NULL;
    gqa_status status = gqa_attention_create(&config, weights, backend, &layer);
    if (status == GQA_STATUS_OK) {
        status = gqa_attention_forward(layer, prompt, 2, PROMPT, out, 2 * PROMPT * D, NULL, 0, NULL, 0);
    }
    gqa_attention_free(layer);
    return status;
}

/* bf16 bits as given, against the reference on the same values as floats; and the
 * config's weight_type converts. bf16 bits here are the upper halves of the fp32
 * weights (truncated), which fp32 holds exactly. */
static void bf16_weights_reach_the_layer(void) {
    enum { Q = HEADS * HEAD_DIM * D, KV = KV_HEADS * HEAD_DIM * D, OUTPUTS = 2 * PROMPT * D };
    static uint16_t q16[Q], k16[KV], v16[KV], o16[Q];
    static float q_cut[Q], k_cut[KV], v_cut[KV], o_cut[Q];
    static float want[OUTPUTS], got[OUTPUTS], full[OUTPUTS];
    const float *floats[4] = {wq, wk, wv, wo};
    uint16_t *bits[4] = {q16, k16, v16, o16};
    float *cut[4] = {q_cut, k_cut, v_cut, o_cut};
    const int counts[4] = {Q, KV, KV, Q};
    for (int w = 0; w < 4; ++w) {
        for (int i = 0; i < counts[w]; ++i) {
            uint32_t word;
            memcpy(&word, &floats[w][i], 4);
            bits[w][i] = (uint16_t)(word >> 16);
            word &= 0xffff0000u;
            memcpy(&cut[w][i], &word, 4);
        }
    }
    const gqa_weights as_floats = {q_cut, k_cut, v_cut, o_cut, NULL, NULL, NULL, bo};
    CHECK(prefill_with(GQA_BACKEND_REFERENCE, &as_floats, GQA_WEIGHT_AS_GIVEN, want) == GQA_STATUS_OK, "%s",
          gqa_last_error());
    gqa_weights as_bits = {q16, k16, v16, o16, NULL, NULL, NULL, bo};
    as_bits.type = GQA_WEIGHT_BF16;
    for (int b = GQA_BACKEND_REFERENCE; b <= GQA_BACKEND_OPENCL; ++b) {
        if (!gqa_backend_available((gqa_backend)b)) continue;
        CHECK(prefill_with((gqa_backend)b, &as_bits, GQA_WEIGHT_AS_GIVEN, got) == GQA_STATUS_OK, "%s: %s",
              gqa_backend_name((gqa_backend)b), gqa_last_error());
        const double worst = max_abs_diff(got, want, OUTPUTS);
        CHECK(worst <= GQA_ATOL, "%s, bf16 weights: max |diff| %g", gqa_backend_name((gqa_backend)b), worst);
        printf("%s, bf16 weights: max |diff| vs reference %.2e\n", gqa_backend_name((gqa_backend)b), worst);
    }
    /* fp32 weights kept as bf16 are rounded: they differ from the fp32 layer. */
    const gqa_weights originals = {wq, wk, wv, wo, NULL, NULL, NULL, bo};
    CHECK(prefill_with(GQA_BACKEND_REFERENCE, &originals, GQA_WEIGHT_AS_GIVEN, full) == GQA_STATUS_OK, "%s",
          gqa_last_error());
    CHECK(prefill_with(GQA_BACKEND_REFERENCE, &originals, GQA_WEIGHT_BF16, got) == GQA_STATUS_OK, "%s",
          gqa_last_error());
    CHECK(max_abs_diff(got, full, OUTPUTS) > 1e-3, "config.weight_type changed nothing");

    as_bits.type = (gqa_weight_type)5;
    CHECK(prefill_with(GQA_BACKEND_REFERENCE, &as_bits, GQA_WEIGHT_AS_GIVEN, got) == GQA_STATUS_INVALID, "type 5");
    CHECK(strstr(gqa_last_error(), "weights.type is 5") != NULL, "message: %s", gqa_last_error());
}

static void failures_are_reported(void) {
    gqa_config config = gqa_config_default();
    config.embed_dim = D, config.num_heads = HEADS, config.num_kv_heads = 4, config.head_dim = HEAD_DIM;
    const gqa_weights weights = {wq, wk, wv, wo, NULL, NULL, NULL, NULL};
    gqa_attention *layer = (gqa_attention *)&config; /* must come back NULL */
    CHECK(gqa_attention_create(&config, &weights, GQA_BACKEND_REFERENCE, &layer) == GQA_STATUS_INVALID, "6 heads over 4 kv heads");
    CHECK(layer == NULL, "layer set on failure");
    CHECK(strstr(gqa_last_error(), "num_kv_heads (4)") != NULL, "message: %s", gqa_last_error());

    config.num_kv_heads = KV_HEADS;
    config.has_window = 1, config.window = 0;
    CHECK(gqa_attention_create(&config, &weights, GQA_BACKEND_REFERENCE, &layer) == GQA_STATUS_INVALID, "window 0");
    CHECK(strstr(gqa_last_error(), "window is 0") != NULL, "message: %s", gqa_last_error());
    config.has_window = 0;

    const gqa_weights no_wk = {wq, NULL, wv, wo, NULL, NULL, NULL, NULL};
    CHECK(gqa_attention_create(&config, &no_wk, GQA_BACKEND_REFERENCE, &layer) == GQA_STATUS_INVALID, "wk NULL");
    CHECK(strstr(gqa_last_error(), "wk has no data") != NULL, "message: %s", gqa_last_error());
    /* Calls without a status leave the message for the caller to print. */
    CHECK(strcmp(gqa_backend_name(GQA_BACKEND_X86), "x86") == 0 && gqa_backend_available(GQA_BACKEND_REFERENCE) == 1 &&
              strstr(gqa_last_error(), "wk has no data") != NULL,
          "message after gqa_backend_name/available: %s", gqa_last_error());
    config.qk_norm = (gqa_qk_norm)3;
    CHECK(gqa_attention_create(&config, &weights, GQA_BACKEND_REFERENCE, &layer) == GQA_STATUS_INVALID, "qk_norm 3");
    CHECK(strstr(gqa_last_error(), "qk_norm is 3") != NULL, "message: %s", gqa_last_error());
    config.qk_norm = GQA_QK_NORM_PER_HEAD;
    CHECK(gqa_attention_create(&config, &weights, GQA_BACKEND_REFERENCE, &layer) == GQA_STATUS_INVALID, "no q_norm");
    CHECK(strstr(gqa_last_error(), "q_norm has no data") != NULL, "message: %s", gqa_last_error());
    config.qk_norm = GQA_QK_NORM_NONE;
    config.rope_scaling.type = (gqa_rope_scaling_type)5;
    CHECK(gqa_attention_create(&config, &weights, GQA_BACKEND_REFERENCE, &layer) == GQA_STATUS_INVALID, "scaling 5");
    CHECK(strstr(gqa_last_error(), "rope_scaling.type is 5") != NULL, "message: %s", gqa_last_error());
    config.rope_scaling.type = GQA_ROPE_SCALING_NONE;
    CHECK(gqa_attention_create(&config, &weights, (gqa_backend)9, &layer) == GQA_STATUS_INVALID, "backend 9");
    CHECK(strstr(gqa_last_error(), "backend is 9") != NULL, "message: %s", gqa_last_error());

    CHECK(gqa_attention_create(&config, &weights, GQA_BACKEND_BEST, &layer) == GQA_STATUS_OK, "%s", gqa_last_error());
    CHECK(gqa_attention_setup_cache(layer, 2, 12, GQA_CACHE_F32) == GQA_STATUS_OK, "%s", gqa_last_error());
    static float out[2 * PROMPT * D];
    CHECK(gqa_attention_forward(layer, prompt, 2, PROMPT, out, 2 * PROMPT * D, NULL, 0, NULL, 0) == GQA_STATUS_OK,
          "%s", gqa_last_error());
    CHECK(gqa_last_error()[0] == '\0', "a successful call leaves the message empty");
    /* 9 cached + 9 new > 12 slots: refused, cache untouched. */
    CHECK(gqa_attention_forward(layer, prompt, 2, PROMPT, out, 2 * PROMPT * D, NULL, 0, NULL, 0) ==
              GQA_STATUS_INVALID, "overflow");
    CHECK(strstr(gqa_last_error(), "overflow") != NULL, "message: %s", gqa_last_error());
    CHECK(gqa_attention_cache_size(layer) == PROMPT, "size after a refused call: %d", gqa_attention_cache_size(layer));
    CHECK(gqa_attention_forward(layer, prompt, 2, 1, out, 5, NULL, 0, NULL, 0) == GQA_STATUS_INVALID, "out size");
    CHECK(strstr(gqa_last_error(), "out holds 5 floats") != NULL, "message: %s", gqa_last_error());
    const uint8_t mask[2 * 1 * 7] = {0};
    CHECK(gqa_attention_forward(layer, prompt, 2, 1, out, 2 * D, mask, 7, NULL, 0) == GQA_STATUS_INVALID, "mask");
    CHECK(strstr(gqa_last_error(), "[2, 1, 7]") != NULL, "message: %s", gqa_last_error());
    CHECK(gqa_attention_setup_cache(layer, 2, 12, (gqa_cache_type)5) == GQA_STATUS_INVALID, "cache type 5");
    CHECK(strstr(gqa_last_error(), "cache type is 5") != NULL, "message: %s", gqa_last_error());
    CHECK(gqa_attention_cache_size(layer) == PROMPT, "size after a refused setup_cache");
    CHECK(gqa_attention_reset(layer) == GQA_STATUS_OK && gqa_attention_cache_size(layer) == 0, "reset");
    gqa_attention_free(layer);
    gqa_attention_free(NULL);
    /* NULL handles: a status, or the documented sentinel. */
    CHECK(gqa_attention_backend(NULL) == GQA_BACKEND_NONE, "backend of NULL");
    CHECK(gqa_attention_cache_size(NULL) == -1, "cache size of NULL");
    CHECK(gqa_attention_reset(NULL) == GQA_STATUS_INVALID && strstr(gqa_last_error(), "layer is NULL") != NULL,
          "reset(NULL): %s", gqa_last_error());
    CHECK(gqa_attention_setup_cache(NULL, 1, 4, GQA_CACHE_F32) == GQA_STATUS_INVALID, "setup_cache(NULL)");
    CHECK(gqa_attention_forward(NULL, prompt, 1, 1, out, D, NULL, 0, NULL, 0) == GQA_STATUS_INVALID, "forward(NULL)");
}

/* Two sequences served through a paged cache give what the batch of two gives
 * through the contiguous one, on every backend; a fork and a rollback replay a
 * step exactly. */
static void sequences_serve_like_a_batch(void) {
    enum { OUT = 2 * (PROMPT + STEPS) * D };
    static float want[OUT], got[OUT], again[2 * D];
    gqa_config config = gqa_config_default();
    config.embed_dim = D, config.num_heads = HEADS, config.num_kv_heads = KV_HEADS, config.head_dim = HEAD_DIM;
    config.max_seq_len = MAX_SEQ;
    const gqa_weights weights = {.wq = wq, .wk = wk, .wv = wv, .wo = wo, .bo = bo};
    CHECK(run(GQA_BACKEND_REFERENCE, GQA_CACHE_F32, 0, want) == GQA_STATUS_OK, "reference: %s", gqa_last_error());
    for (int b = GQA_BACKEND_REFERENCE; b <= GQA_BACKEND_OPENCL; ++b) {
        if (!gqa_backend_available((gqa_backend)b)) continue;
        gqa_attention *layer = NULL;
        CHECK(gqa_attention_create(&config, &weights, (gqa_backend)b, &layer) == GQA_STATUS_OK, "%s", gqa_last_error());
        if (!layer) continue;
        CHECK(gqa_attention_setup_paged_cache(layer, 6, 16, GQA_CACHE_F32) == GQA_STATUS_OK, "%s", gqa_last_error());
        int32_t ids[2], fork = -1, length = 0;
        CHECK(gqa_attention_add_sequence(layer, &ids[0]) == GQA_STATUS_OK, "%s", gqa_last_error());
        CHECK(gqa_attention_add_sequence(layer, &ids[1]) == GQA_STATUS_OK, "%s", gqa_last_error());
        const int32_t prompt_tokens[2] = {PROMPT, PROMPT}, one[2] = {1, 1};
        CHECK(gqa_attention_forward_sequences(layer, ids, prompt_tokens, 2, prompt, got, 2 * PROMPT * D, NULL) ==
                  GQA_STATUS_OK, "%s", gqa_last_error());
        CHECK(gqa_attention_fork_sequence(layer, ids[0], &fork) == GQA_STATUS_OK, "%s", gqa_last_error());
        for (int step = 0; step < STEPS; ++step) {
            float *out = got + 2 * (PROMPT + step) * D;
            CHECK(gqa_attention_forward_sequences(layer, ids, one, 2, steps[step], out, 2 * D, NULL) == GQA_STATUS_OK,
                  "%s", gqa_last_error());
        }
        /* Row 0's first step again, through the fork and through a rollback of row 1's. */
        CHECK(gqa_attention_forward_sequences(layer, &fork, one, 1, steps[0], again, D, NULL) == GQA_STATUS_OK, "%s",
              gqa_last_error());
        CHECK(gqa_attention_truncate_sequence(layer, ids[1], PROMPT) == GQA_STATUS_OK, "%s", gqa_last_error());
        CHECK(gqa_attention_sequence_length(layer, ids[1], &length) == GQA_STATUS_OK && length == PROMPT, "length %d",
              length);
        CHECK(gqa_attention_forward_sequences(layer, &ids[1], one, 1, steps[0] + D, again + D, D, NULL) ==
                  GQA_STATUS_OK, "%s", gqa_last_error());
        const double tolerance = GQA_ATOL;
        CHECK(max_abs_diff(got, want, OUT) <= tolerance, "%s: max |diff| %g", gqa_backend_name((gqa_backend)b),
              max_abs_diff(got, want, OUT));
        CHECK(max_abs_diff(again, want + 2 * PROMPT * D, 2 * D) <= tolerance, "%s: fork and rollback differ",
              gqa_backend_name((gqa_backend)b));
        const int32_t unknown = 99;
        CHECK(gqa_attention_forward_sequences(layer, &unknown, one, 1, steps[0], again, D, NULL) == GQA_STATUS_INVALID &&
                  strstr(gqa_last_error(), "no sequence 99") != NULL, "unknown sequence: %s", gqa_last_error());
        CHECK(gqa_attention_remove_sequence(layer, fork) == GQA_STATUS_OK, "%s", gqa_last_error());
        CHECK(gqa_attention_free_blocks(layer) == 6 - 2, "free blocks %d", gqa_attention_free_blocks(layer));
        gqa_attention_free(layer);
    }
    CHECK(gqa_attention_free_blocks(NULL) == -1, "free blocks of NULL");
}

/* TransformerLens' hooks from C, on every backend: the heads' results sum with bo
 * to out; a zero z patch leaves bo; split inputs that all hold x give x's output;
 * a patch of the wrong size is refused. */
static void hooks_and_patches(void) {
    enum { TOKENS = 2 * PROMPT, RESULT = TOKENS * HEADS * D, Z = TOKENS * HEADS * HEAD_DIM };
    static float out[TOKENS * D], patched[TOKENS * D], split_out[TOKENS * D], result[RESULT], zeros[Z];
    static float summed[TOKENS * D], biases[TOKENS * D];
    static float query[TOKENS * HEADS * D], kv[TOKENS * KV_HEADS * D];
    for (int m = 0; m < TOKENS; ++m) {
        for (int h = 0; h < HEADS; ++h) memcpy(query + (m * HEADS + h) * D, prompt + m * D, D * sizeof(float));
        for (int h = 0; h < KV_HEADS; ++h) memcpy(kv + (m * KV_HEADS + h) * D, prompt + m * D, D * sizeof(float));
    }
    CHECK(strcmp(gqa_hook_name(GQA_HOOK_ATTN_SCORES), "hook_attn_scores") == 0, "%s", gqa_hook_name(GQA_HOOK_ATTN_SCORES));
    CHECK(gqa_hook_name((gqa_hook)9) == NULL, "hook 9 has a name");
    gqa_config config = gqa_config_default();
    config.embed_dim = D, config.num_heads = HEADS, config.num_kv_heads = KV_HEADS, config.head_dim = HEAD_DIM;
    config.max_seq_len = MAX_SEQ;
    const gqa_weights weights = {.wq = wq, .wk = wk, .wv = wv, .wo = wo, .bo = bo};
    for (int b = GQA_BACKEND_REFERENCE; b <= GQA_BACKEND_OPENCL; ++b) {
        if (b == GQA_BACKEND_BEST || !gqa_backend_available((gqa_backend)b)) continue;
        const char *name = gqa_backend_name((gqa_backend)b);
        gqa_attention *layer = NULL;
        CHECK(gqa_attention_create(&config, &weights, (gqa_backend)b, &layer) == GQA_STATUS_OK, "%s", gqa_last_error());
        const gqa_hook recorded[] = {GQA_HOOK_RESULT, GQA_HOOK_PATTERN};
        CHECK(gqa_attention_set_recorded_hooks(layer, recorded, 2) == GQA_STATUS_OK, "%s", gqa_last_error());
        CHECK(gqa_attention_forward_hooked(layer, prompt, NULL, NULL, NULL, 2, PROMPT, out, TOKENS * D, NULL, 0, NULL,
                                           0, NULL, 0) == GQA_STATUS_OK,
              "%s: %s", name, gqa_last_error());
        int64_t shape[4];
        CHECK(gqa_attention_hook(layer, GQA_HOOK_RESULT, shape, result, RESULT) == GQA_STATUS_OK, "%s", gqa_last_error());
        CHECK(shape[0] == 2 && shape[1] == PROMPT && shape[2] == HEADS && shape[3] == D, "%s: result shape", name);
        CHECK(gqa_attention_hook(layer, GQA_HOOK_PATTERN, shape, NULL, 0) == GQA_STATUS_OK, "%s", gqa_last_error());
        CHECK(shape[1] == HEADS && shape[2] == PROMPT && shape[3] == PROMPT, "%s: pattern shape", name);
        CHECK(gqa_attention_hook(layer, GQA_HOOK_Q, shape, NULL, 0) == GQA_STATUS_INVALID, "%s: q not recorded", name);
        for (int m = 0; m < TOKENS; ++m) {
            for (int o = 0; o < D; ++o) {
                double sum = bo[o];
                for (int h = 0; h < HEADS; ++h) sum += result[(m * HEADS + h) * D + o];
                summed[m * D + o] = (float)sum, biases[m * D + o] = bo[o];
            }
        }
        double worst = max_abs_diff(summed, out, TOKENS * D);
        CHECK(worst <= GQA_ATOL, "%s: results sum to out within %g", name, worst);

        const gqa_patch zero_z = {GQA_HOOK_Z, zeros, Z};
        CHECK(gqa_attention_forward_hooked(layer, prompt, NULL, NULL, NULL, 2, PROMPT, patched, TOKENS * D, NULL, 0,
                                           NULL, 0, &zero_z, 1) == GQA_STATUS_OK,
              "%s: %s", name, gqa_last_error());
        worst = max_abs_diff(patched, biases, TOKENS * D);
        CHECK(worst <= GQA_ATOL, "%s: a zero z leaves bo, within %g", name, worst);

        CHECK(gqa_attention_forward_hooked(layer, NULL, query, kv, kv, 2, PROMPT, split_out, TOKENS * D, NULL, 0, NULL,
                                           0, NULL, 0) == GQA_STATUS_OK,
              "%s: %s", name, gqa_last_error());
        CHECK(max_abs_diff(split_out, out, TOKENS * D) <= GQA_ATOL, "%s: split inputs of x", name);

        const gqa_patch short_z = {GQA_HOOK_Z, zeros, Z - 1};
        CHECK(gqa_attention_forward_hooked(layer, prompt, NULL, NULL, NULL, 2, PROMPT, patched, TOKENS * D, NULL, 0,
                                           NULL, 0, &short_z, 1) == GQA_STATUS_INVALID,
              "%s: a short patch", name);
        CHECK(strstr(gqa_last_error(), "holds 863 floats; expected 864") != NULL, "message: %s", gqa_last_error());
        gqa_attention_free(layer);
    }
}

int main(void) {
    fill(wq, sizeof wq / sizeof *wq, 0.3f, 1);
    fill(wk, sizeof wk / sizeof *wk, 0.3f, 2);
    fill(wv, sizeof wv / sizeof *wv, 0.3f, 3);
    fill(wo, sizeof wo / sizeof *wo, 0.3f, 4);
    fill(bo, sizeof bo / sizeof *bo, 1.0f, 5);
    fill(prompt, sizeof prompt / sizeof *prompt, 2.0f, 6);
    fill(&steps[0][0], sizeof steps / sizeof steps[0][0], 2.0f, 7);
    fill(sinks, HEADS, 4.0f, 8);
    fill(q_norm, HEAD_DIM, 1.0f, 9);
    fill(k_norm, HEAD_DIM, 1.0f, 10);
    for (int e = 0; e < HEAD_DIM; ++e) q_norm[e] += 1.0f, k_norm[e] += 1.0f; /* around 1, as trained norms are */
    backends_match_reference();
    bf16_weights_reach_the_layer();
    failures_are_reported();
    cache_reads_back_and_appends();
    sequences_serve_like_a_batch();
    hooks_and_patches();
    if (failures) fprintf(stderr, "%d checks failed\n", failures);
    return failures ? 1 : 0;
}
