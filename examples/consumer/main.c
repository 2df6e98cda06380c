/* The installed package from C: a small GQA layer (4 query heads sharing 2 KV heads)
 * with a KV cache on the fastest backend here, a prompt and one decode step. */
#include <gqa/gqa.h>

#include <stdio.h>
#include <stdlib.h>

enum { D = 64, HEADS = 4, KV_HEADS = 2, HEAD_DIM = 16, PROMPT = 8 };

static void fill(float *values, int count, float scale) {
    for (int i = 0; i < count; ++i) values[i] = scale * (float)((i * 37 % 101) - 50) / 50.0f;
}

int main(void) {
    static float wq[HEADS * HEAD_DIM * D], wk[KV_HEADS * HEAD_DIM * D], wv[KV_HEADS * HEAD_DIM * D],
        wo[D * HEADS * HEAD_DIM], prompt[PROMPT * D], token[D], out[PROMPT * D];
    fill(wq, HEADS * HEAD_DIM * D, 0.1f), fill(wk, KV_HEADS * HEAD_DIM * D, 0.1f);
    fill(wv, KV_HEADS * HEAD_DIM * D, 0.1f), fill(wo, D * HEADS * HEAD_DIM, 0.1f);
    fill(prompt, PROMPT * D, 1.0f), fill(token, D, 1.0f);

    gqa_config config = gqa_config_default();
    config.embed_dim = D, config.num_heads = HEADS, config.num_kv_heads = KV_HEADS, config.head_dim = HEAD_DIM;
    config.max_seq_len = 128;
    const gqa_weights weights = {wq, wk, wv, wo, NULL, NULL, NULL, NULL};

    gqa_attention *layer = NULL;
    if (gqa_attention_create(&config, &weights, GQA_BACKEND_BEST, &layer) != GQA_STATUS_OK ||
        gqa_attention_setup_cache(layer, 1, 128, GQA_CACHE_F16) != GQA_STATUS_OK ||
        gqa_attention_forward(layer, prompt, 1, PROMPT, out, PROMPT * D, NULL, 0, NULL, 0) != GQA_STATUS_OK ||
        gqa_attention_forward(layer, token, 1, 1, out, D, NULL, 0, NULL, 0) != GQA_STATUS_OK) {
        fprintf(stderr, "gqa: %s\n", gqa_last_error());
        gqa_attention_free(layer);
        return 1;
    }
    printf("C API on %s: %d tokens cached (fp16), decode output[0..3] = %.4f %.4f %.4f %.4f\n",
           gqa_backend_name(gqa_attention_backend(layer)), gqa_attention_cache_size(layer), out[0], out[1], out[2],
           out[3]);
    gqa_attention_free(layer);
    return 0;
}
