// Every built backend against Backend::reference over a grid of head layouts, sequence
// lengths, masks, RoPE layouts and options; plus prefill-then-decode against one full
// forward, fully masked rows, and which CPU variant each backend dispatches to.
#include "test_util.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <numeric>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <tuple>
#include <vector>

namespace {

using gqa_test::all_close;
using gqa_test::ForwardInput;
using gqa_test::HostTensor;

struct HeadLayout {
    const char *name;
    int embed_dim, num_heads, num_kv_heads, head_dim;
};

// Group sizes 1, 2, 3, 4, 8 and head dims 32, 64, 80, 128; n_h * hd need not equal d.
const HeadLayout head_layouts[] = {
    {"mha_h4_hd32", 64, 4, 4, 32},        {"mha_h2_hd80", 160, 2, 2, 80},       {"gqa2_h4kv2_hd64", 128, 4, 2, 64},
    {"gqa2_h2kv1_hd128", 256, 2, 1, 128}, {"gqa3_h6kv2_hd32", 96, 6, 2, 32},    {"gqa3_h3kv1_hd80", 80, 3, 1, 80},
    {"gqa4_h8kv2_hd32", 256, 8, 2, 32},   {"gqa4_h4kv1_hd128", 128, 4, 1, 128}, {"mqa8_h8kv1_hd64", 128, 8, 1, 64},
};

// "<backend>_<case name>" for suites over (backend, named case).
const auto backend_and_case_name = [](const auto &info) {
    return std::string(gqa::backend_name(std::get<0>(info.param))) + "_" + std::get<1>(info.param).name;
};

enum class Positions { slots, shared, per_batch };

struct Feature {
    const char *name;
    bool is_causal = true;
    bool bool_mask = false;  // random [b, s, s] with some fully masked rows
    std::optional<int> window;
    gqa::RopeStyle rope = gqa::RopeStyle::interleaved;
    bool partial_rotary = false;  // rotary_dim = head_dim / 2
    bool biases = false;
    Positions positions = Positions::slots;
    bool tl_scaling = false;  // soft-cap and layer_id, as TL Gemma-2 / stanford-gpt2
    double scale = 0.0;
};

const Feature features[] = {
    {.name = "causal"},
    {.name = "bidirectional", .is_causal = false},
    {.name = "bool_mask", .bool_mask = true},
    {.name = "window4", .window = 4},
    {.name = "tl_softcap_layer_id",
     .rope = gqa::RopeStyle::rotate_half,
     .partial_rotary = true,
     .biases = true,
     .tl_scaling = true},
    {.name = "rotate_half", .rope = gqa::RopeStyle::rotate_half},
    {.name = "interleaved_partial", .partial_rotary = true},
    {.name = "no_rope", .rope = gqa::RopeStyle::none},
    {.name = "biases", .biases = true},
    {.name = "input_pos_shared", .positions = Positions::shared},
    {.name = "input_pos_per_batch", .positions = Positions::per_batch},
    {.name = "explicit_scale", .scale = 0.3},
};

const int sequence_lengths[] = {1, 3, 7, 13, 33, 65};

struct GridCase {
    HeadLayout heads;
    Feature feature;
    int batch, seq_len;
    uint32_t seed;

    std::string name() const {
        return std::string(feature.name) + "_" + heads.name + "_b" + std::to_string(batch) + "_s" +
               std::to_string(seq_len);
    }

    friend void PrintTo(const GridCase &c, std::ostream *os) { *os << c.name(); }

    gqa::Config config() const {
        gqa::Config config =
            gqa_test::make_config(heads.embed_dim, heads.num_heads, heads.num_kv_heads, heads.head_dim);
        config.is_causal = feature.is_causal;
        config.window = feature.window;
        config.rope_style = feature.rope;
        config.rotary_dim = feature.partial_rotary ? heads.head_dim / 2 : 0;
        config.scale = feature.scale;
        if (feature.tl_scaling) {
            config.softcap = 1.5;
            config.layer_id = 2;
        }
        return config;
    }

    ForwardInput input(const gqa::Config &config) const {
        ForwardInput input{gqa_test::random_input(config, batch, seq_len, seed)};
        if (feature.bool_mask) input.mask = random_mask();
        if (feature.positions == Positions::shared) {
            // Unevenly spaced: scores see only position differences, so a plain shift of
            // 0..s-1 would pass even if input_pos were ignored.
            input.input_pos = HostTensor<int32_t>{{}, {seq_len}};
            for (int i = 0; i < seq_len; ++i) input.input_pos->values.push_back((3 * i + 7) % 101);
        } else if (feature.positions == Positions::per_batch) {
            // Packed documents: positions restart every few tokens, differently per sample.
            input.input_pos = HostTensor<int32_t>{{}, {batch, seq_len}};
            for (int b = 0; b < batch; ++b) {
                for (int i = 0; i < seq_len; ++i) input.input_pos->values.push_back(i % (3 + 2 * b));
            }
        }
        return input;
    }

    HostTensor<uint8_t> random_mask() const {
        std::mt19937 engine(seed + 100);
        std::bernoulli_distribution attend(0.6);
        HostTensor<uint8_t> mask{{}, {batch, seq_len, seq_len}};
        for (int b = 0; b < batch; ++b) {
            for (int q = 0; q < seq_len; ++q) {
                const bool fully_masked = (q + b) % 4 == 1;
                for (int k = 0; k < seq_len; ++k) mask.values.push_back(!fully_masked && attend(engine));
            }
        }
        return mask;
    }
};

// Every feature on every head layout; the sequence length and batch rotate with both
// indices so that each feature and each layout meets every length.
std::vector<GridCase> backend_grid() {
    std::vector<GridCase> grid;
    const int feature_count = std::size(features), layout_count = std::size(head_layouts);
    for (int f = 0; f < feature_count; ++f) {
        for (int h = 0; h < layout_count; ++h) {
            const int seq_len = sequence_lengths[(f + h) % std::size(sequence_lengths)];
            const int batch = (f + 2 * h) % 3 == 0 ? 3 : 1;
            grid.push_back({head_layouts[h], features[f], batch, seq_len, uint32_t(1000 + 17 * grid.size())});
        }
    }
    return grid;
}

class BackendMatchesReference : public testing::TestWithParam<GridCase> {};

TEST_P(BackendMatchesReference, OutPatternAndZ) {
    const std::vector<gqa::Backend> backends = gqa_test::backends_under_test();
    if (backends.empty()) GTEST_SKIP() << "only the reference backend is built; nothing to compare with it";

    const GridCase &grid_case = GetParam();
    const gqa::Config config = grid_case.config();
    const gqa_test::LayerWeights weights = gqa_test::random_weights(config, grid_case.feature.biases, grid_case.seed);
    const ForwardInput input = grid_case.input(config);
    const auto want = gqa_test::run_forward(config, weights, gqa::Backend::reference, input, true);

    for (gqa::Backend backend : backends) {
        SCOPED_TRACE(gqa::backend_name(backend));
        // The plain pipeline and the one that records the pattern are different code.
        for (bool record_pattern : {false, true}) {
            SCOPED_TRACE(record_pattern ? "recording the pattern" : "not recording the pattern");
            const auto got = gqa_test::run_forward(config, weights, backend, input, record_pattern);
            EXPECT_TRUE(all_close(got.out, want.out)) << "out";
            EXPECT_TRUE(all_close(got.z, want.z)) << "z";
            if (record_pattern) {
                EXPECT_TRUE(all_close(got.pattern, want.pattern)) << "pattern";
            }
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Grid, BackendMatchesReference, testing::ValuesIn(backend_grid()),
                         [](const testing::TestParamInfo<GridCase> &info) { return info.param.name(); });

// ---------------------------------------------------------------------------------------
// Prefill then decode steps through the cache equals one full causal forward.

struct DecodeVariant {
    const char *name;
    bool tl_config;       // rotate_half partial RoPE, window, soft-cap, layer_id, biases
    bool generate_masks;  // torchtune generate(): masks [b, s, max_seq_len] and input_pos

    friend void PrintTo(const DecodeVariant &v, std::ostream *os) { *os << v.name; }
};

const DecodeVariant decode_variants[] = {
    {"slot_positions", false, false},
    {"torchtune_generate", false, true},
    {"transformerlens_window", true, false},
};

class PrefillThenDecode : public testing::TestWithParam<std::tuple<gqa::Backend, DecodeVariant>> {};

TEST_P(PrefillThenDecode, MatchesFullForward) {
    const auto [backend, variant] = GetParam();
    constexpr int batch = 2, cache_len = 20;
    const int chunk_lengths[] = {7, 1, 1, 3, 1};  // prefill, then steps (one of three tokens)
    const int total = 13;

    gqa::Config config = gqa_test::make_config(128, 8, 2, 32, 32);
    if (variant.tl_config) {
        config.rope_style = gqa::RopeStyle::rotate_half;
        config.rotary_dim = 16;
        config.window = 4;
        config.softcap = 2.0;
        config.layer_id = 1;
    }
    const auto weights = gqa_test::random_weights(config, variant.tl_config, 42);
    const auto x = gqa_test::random_input(config, batch, total, 43);
    const auto full = gqa_test::run_forward(config, weights, gqa::Backend::reference, {x}, false).out;

    gqa::Attention layer(config, weights.view(), backend);
    layer.setup_cache(batch, cache_len);
    const int d = config.embed_dim;
    int start = 0;
    for (int s : chunk_lengths) {
        SCOPED_TRACE("tokens " + std::to_string(start) + ".." + std::to_string(start + s - 1));
        ForwardInput chunk{HostTensor<float>{{}, {batch, s, d}}};
        std::vector<float> want;
        for (int b = 0; b < batch; ++b) {
            const auto row = x.values.begin() + (int64_t(b) * total + start) * d;
            chunk.x.values.insert(chunk.x.values.end(), row, row + int64_t(s) * d);
            const auto full_row = full.begin() + (int64_t(b) * total + start) * d;
            want.insert(want.end(), full_row, full_row + int64_t(s) * d);
        }
        if (variant.generate_masks) {
            chunk.mask = HostTensor<uint8_t>{{}, {batch, s, cache_len}};
            for (int b = 0; b < batch; ++b) {
                for (int i = 0; i < s; ++i) {
                    for (int slot = 0; slot < cache_len; ++slot) chunk.mask->values.push_back(slot <= start + i);
                }
            }
            // generate() passes input_pos [b] for single tokens, [s] for the prefill.
            if (s == 1) {
                chunk.input_pos = HostTensor<int32_t>{std::vector<int32_t>(batch, start), {batch}};
            } else {
                chunk.input_pos = HostTensor<int32_t>{{}, {s}};
                for (int i = 0; i < s; ++i) chunk.input_pos->values.push_back(start + i);
            }
        }
        const std::vector<float> got = layer.forward(chunk.x.view(), gqa_test::optional_view(chunk.mask),
                                                     gqa_test::optional_view(chunk.input_pos));
        EXPECT_TRUE(all_close(got, want));
        start += s;
    }
    EXPECT_EQ(layer.size(), total);
}

INSTANTIATE_TEST_SUITE_P(AllBackends, PrefillThenDecode,
                         testing::Combine(testing::ValuesIn(gqa_test::runnable_backends()),
                                          testing::ValuesIn(decode_variants)),
                         backend_and_case_name);

// ---------------------------------------------------------------------------------------
// One decode step against caches of many lengths: across the 32-key blocks and the
// 256-key splits of the GPU decode, their edges, and a window that leaves splits
// out; past the 2048-key segments of x86 decode, with a window that leaves whole
// segments out, and in narrow caches. On pocl the first GPU decode schedule gave z
// divided by its block's thread rows (issue 16); the short vectors never reach a
// second block. MQA at batch 1 has one (batch, kv head) row, which x86 decode
// splits into segments for its threads.

struct LongDecodeCase {
    int cached;  // slots before the step
    std::optional<int> window;
    gqa::CacheType cache_type = gqa::CacheType::f32;
    bool mqa_batch1 = false;  // else 2 kv heads, batch 2

    friend void PrintTo(const LongDecodeCase &c, std::ostream *os) {
        *os << c.cached << " cached" << (c.window ? ", window " + std::to_string(*c.window) : "") << ", "
            << gqa::cache_type_name(c.cache_type) << (c.mqa_batch1 ? ", MQA at batch 1" : "");
    }
};

class LongCacheDecode : public testing::TestWithParam<std::tuple<gqa::Backend, LongDecodeCase>> {};

TEST_P(LongCacheDecode, MatchesReference) {
    // Not a structured binding: clang 14 cannot capture one in a lambda.
    const gqa::Backend backend = std::get<0>(GetParam());
    const LongDecodeCase &c = std::get<1>(GetParam());
    const int batch = c.mqa_batch1 ? 1 : 2;
    gqa::Config config = gqa_test::make_config(128, 8, c.mqa_batch1 ? 1 : 2, 64, c.cached + 1);
    config.window = c.window;
    const auto weights = gqa_test::random_weights(config, false, 61);
    const int64_t kv_heads = config.num_kv_heads, hd = config.head_dim;
    const auto k = gqa_test::random_normal({batch, kv_heads, c.cached, hd}, 1.0, 62);
    const auto v = gqa_test::random_normal({batch, kv_heads, c.cached, hd}, 1.0, 63);
    const auto step = gqa_test::random_input(config, batch, 1, 64);
    // The step's output, then its z.
    auto decode = [&](gqa::Backend b, gqa::CacheType type) {
        gqa::Attention layer(config, weights.view(), b);
        layer.setup_cache(batch, c.cached + 1, type);
        layer.append_cache(k.view(), v.view());
        std::vector<float> out = layer.forward(step.view());
        return std::pair(out, gqa_test::copy_of(layer.z()));
    };
    const auto [out, z] = decode(backend, c.cache_type);
    const auto [want_out, want_z] = decode(gqa::Backend::reference, c.cache_type);
    if (c.cache_type == gqa::CacheType::f32) {
        EXPECT_TRUE(all_close(z, want_z));
        EXPECT_TRUE(all_close(out, want_out));
    } else {
        const auto [exact_out, exact_z] = decode(gqa::Backend::reference, gqa::CacheType::f32);
        EXPECT_TRUE(gqa_test::within_reduced_precision_error(z, want_z, exact_z));
        EXPECT_TRUE(gqa_test::within_reduced_precision_error(out, want_out, exact_out));
    }
}

const LongDecodeCase long_decode_cases[] = {
    {31, {}},   {63, {}},   {255, {}},  {256, {}},  {299, {}},  {512, {}},
    {1023, {}}, {2048, {}}, {31, 64},   {63, 64},   {299, 64},  {2048, 64},
    {4500, {}}, {4500, 300}, {4500, {}, gqa::CacheType::f16}, {4500, 300, gqa::CacheType::int8},
    {4500, {}, gqa::CacheType::f32, true}, {4500, 300, gqa::CacheType::f32, true},
    {4500, {}, gqa::CacheType::f16, true}, {4500, 300, gqa::CacheType::int8, true}};

INSTANTIATE_TEST_SUITE_P(AllBackends, LongCacheDecode,
                         testing::Combine(testing::ValuesIn(gqa_test::backends_under_test()),
                                          testing::ValuesIn(long_decode_cases)),
                         [](const auto &info) {
                             const LongDecodeCase &c = std::get<1>(info.param);
                             return std::string(gqa::backend_name(std::get<0>(info.param))) + "_" +
                                    std::to_string(c.cached) + (c.window ? "_window" + std::to_string(*c.window) : "") +
                                    (c.cache_type == gqa::CacheType::f32
                                         ? ""
                                         : "_" + std::string(gqa::cache_type_name(c.cache_type))) +
                                    (c.mqa_batch1 ? "_mqa_batch1" : "");
                         });

// ---------------------------------------------------------------------------------------
// Chunked prefill (vLLM's, or torchtune generate() with a long prompt): a prompt fed
// to the cache in chunks gives the rows of one prefill of the whole prompt, RoPE
// positions and causal slots included. Chunks and caches of lengths off the 64-key
// chunks and 16-query blocks, windows, masks with holes, an fp16 cache. Narrow
// layers, so the reference's double loops take seconds.

struct ChunkedCase {
    const char *name;
    std::vector<int> chunks;  // tokens per forward; the first fills an empty cache
    int batch, num_heads, num_kv_heads;
    std::optional<int> window;
    bool mask = false;  // torchtune's [b, s, cache] mask: causal by slot, with random holes
    gqa::CacheType cache_type = gqa::CacheType::f32;

    int total() const { return std::accumulate(chunks.begin(), chunks.end(), 0); }

    gqa::Config config() const {
        gqa::Config config = gqa_test::make_config(16 * num_heads, num_heads, num_kv_heads, 16, total());
        config.window = window;
        return config;
    }

    // Each row keeps its own slot, so no row is fully masked.
    HostTensor<uint8_t> full_mask() const {
        std::mt19937 engine(91);
        std::bernoulli_distribution attend(0.7);
        HostTensor<uint8_t> mask{{}, {batch, total(), total()}};
        for (int b = 0; b < batch; ++b) {
            for (int q = 0; q < total(); ++q) {
                for (int slot = 0; slot < total(); ++slot) mask.values.push_back(slot == q || (slot < q && attend(engine)));
            }
        }
        return mask;
    }

    // Outputs [b, total, d] of the prompt x fed in `chunk_lengths` through a cache of `type`.
    std::vector<float> run(gqa::Backend backend, const std::vector<int> &chunk_lengths, gqa::CacheType type,
                           const gqa_test::LayerWeights &weights, const HostTensor<float> &x) const {
        const gqa::Config config = this->config();
        const int d = config.embed_dim, n = total();
        const std::optional<HostTensor<uint8_t>> mask = this->mask ? std::optional(full_mask()) : std::nullopt;
        gqa::Attention layer(config, weights.view(), backend);
        layer.setup_cache(batch, n, type);
        std::vector<float> out(x.values.size());
        int first = 0;
        for (int s : chunk_lengths) {
            ForwardInput chunk{HostTensor<float>{{}, {batch, s, d}}};
            if (mask) chunk.mask = HostTensor<uint8_t>{{}, {batch, s, n}};
            for (int b = 0; b < batch; ++b) {
                const int64_t row = int64_t(b) * n + first;
                chunk.x.values.insert(chunk.x.values.end(), x.values.begin() + row * d, x.values.begin() + (row + s) * d);
                if (mask) {
                    const auto mask_rows = mask->values.begin() + row * n;
                    chunk.mask->values.insert(chunk.mask->values.end(), mask_rows, mask_rows + int64_t(s) * n);
                }
            }
            const std::vector<float> got =
                layer.forward(chunk.x.view(), gqa_test::optional_view(chunk.mask), std::nullopt);
            for (int b = 0; b < batch; ++b) {
                std::copy_n(got.begin() + int64_t(b) * s * d, int64_t(s) * d, out.begin() + (int64_t(b) * n + first) * d);
            }
            first += s;
        }
        EXPECT_EQ(layer.size(), n);
        return out;
    }

    friend void PrintTo(const ChunkedCase &c, std::ostream *os) { *os << c.name; }
};

class ChunkedPrefill : public testing::TestWithParam<std::tuple<gqa::Backend, ChunkedCase>> {};

TEST_P(ChunkedPrefill, MatchesOnePrefill) {
    const auto &[backend, c] = GetParam();
    const gqa::Config config = c.config();
    const auto weights = gqa_test::random_weights(config, false, 71);
    const auto x = gqa_test::random_input(config, c.batch, c.total(), 72);
    const std::vector<float> got = c.run(backend, c.chunks, c.cache_type, weights, x);
    const std::vector<float> whole = c.run(gqa::Backend::reference, {c.total()}, c.cache_type, weights, x);
    if (c.cache_type == gqa::CacheType::f32) {
        EXPECT_TRUE(all_close(got, whole));
    } else {
        const std::vector<float> exact = c.run(gqa::Backend::reference, {c.total()}, gqa::CacheType::f32, weights, x);
        EXPECT_TRUE(gqa_test::within_reduced_precision_error(got, whole, exact));
    }
}

const ChunkedCase chunked_cases[] = {
    {.name = "last512_of_4096", .chunks = {3584, 512}, .batch = 1, .num_heads = 2, .num_kv_heads = 1},
    {.name = "odd_lengths", .chunks = {600, 77, 131, 1, 63}, .batch = 2, .num_heads = 4, .num_kv_heads = 2},
    {.name = "window100", .chunks = {300, 97, 45}, .batch = 1, .num_heads = 4, .num_kv_heads = 1, .window = 100},
    {.name = "mask_with_holes", .chunks = {200, 65, 33}, .batch = 2, .num_heads = 2, .num_kv_heads = 2, .mask = true},
    {.name = "f16_cache",
     .chunks = {600, 77, 131},
     .batch = 1,
     .num_heads = 4,
     .num_kv_heads = 2,
     .cache_type = gqa::CacheType::f16},
};

INSTANTIATE_TEST_SUITE_P(AllBackends, ChunkedPrefill,
                         testing::Combine(testing::ValuesIn(gqa_test::backends_under_test()),
                                          testing::ValuesIn(chunked_cases)),
                         backend_and_case_name);

// ---------------------------------------------------------------------------------------
// Narrow sliding windows over more than one 64-slot chunk, without a cache (the
// scratch holds just the padded prefix) and with one. gqa-fuzz found the x86
// prefill reading slot 191 of a 128-slot scratch at window 1, 67 tokens.

class NarrowWindow : public testing::TestWithParam<gqa::Backend> {};

TEST_P(NarrowWindow, MatchesReferenceAcrossChunks) {
    for (int window : {1, 2, 5}) {
        for (int seq_len : {65, 67, 130}) {
            for (bool cached : {false, true}) {
                SCOPED_TRACE("window " + std::to_string(window) + ", " + std::to_string(seq_len) + " tokens" +
                             (cached ? ", cached" : ""));
                gqa::Config config = gqa_test::make_config(16, 2, 1, 8, 256);
                config.window = window;
                const auto weights = gqa_test::random_weights(config, false, 3);
                const auto x = gqa_test::random_input(config, 1, seq_len, 4);
                std::vector<float> got, want;
                for (auto [backend, out] : {std::pair{GetParam(), &got}, std::pair{gqa::Backend::reference, &want}}) {
                    gqa::Attention layer(config, weights.view(), backend);
                    if (cached) layer.setup_cache(1, 200);
                    *out = layer.forward(x.view());
                }
                EXPECT_TRUE(all_close(got, want));
            }
        }
    }
}

INSTANTIATE_TEST_SUITE_P(AllBackends, NarrowWindow, testing::ValuesIn(gqa_test::backends_under_test()),
                         gqa_test::backend_test_name);

// ---------------------------------------------------------------------------------------
// A query that may see no key gets exactly 0 (not NaN) in out, z and pattern.

class FullyMaskedRow : public testing::TestWithParam<gqa::Backend> {};

TEST_P(FullyMaskedRow, IsExactlyZero) {
    constexpr int batch = 2, seq_len = 5, masked_query = 2;
    const gqa::Config config = gqa_test::make_config(64, 4, 2, 16);
    const auto weights = gqa_test::random_weights(config, false, 7);
    ForwardInput input{gqa_test::random_input(config, batch, seq_len, 8),
                       HostTensor<uint8_t>{{}, {batch, seq_len, seq_len}}};
    for (int b = 0; b < batch; ++b) {
        for (int q = 0; q < seq_len; ++q) {
            for (int k = 0; k < seq_len; ++k) input.mask->values.push_back(q != masked_query && k <= q);
        }
    }
    const auto got = gqa_test::run_forward(config, weights, GetParam(), input, true);

    for (float value : got.out) ASSERT_FALSE(std::isnan(value));
    const auto all_zero = [](std::vector<float>::const_iterator first, int64_t count) {
        return std::all_of(first, first + count, [](float value) { return value == 0.0f; });
    };
    const int64_t d = config.embed_dim, heads = config.num_heads, hd = config.head_dim;
    for (int64_t b = 0; b < batch; ++b) {
        EXPECT_TRUE(all_zero(got.out.begin() + (b * seq_len + masked_query) * d, d)) << "out of sample " << b;
        EXPECT_TRUE(all_zero(got.z.begin() + (b * seq_len + masked_query) * heads * hd, heads * hd))
            << "z of sample " << b;
        for (int64_t h = 0; h < heads; ++h) {
            EXPECT_TRUE(all_zero(got.pattern.begin() + ((b * heads + h) * seq_len + masked_query) * seq_len, seq_len))
                << "pattern of sample " << b << ", head " << h;
        }
    }
}

TEST_P(FullyMaskedRow, IsExactlyZeroInADecodeStep) {
    constexpr int batch = 1, cache_len = 8;
    const gqa::Config config = gqa_test::make_config(64, 4, 2, 16);
    const auto weights = gqa_test::random_weights(config, false, 9);
    gqa::Attention layer(config, weights.view(), GetParam());
    layer.setup_cache(batch, cache_len);
    layer.forward(gqa_test::random_input(config, batch, 3, 10).view());

    const HostTensor<uint8_t> nothing_visible{std::vector<uint8_t>(cache_len, 0), {batch, 1, cache_len}};
    const std::vector<float> out =
        layer.forward(gqa_test::random_input(config, batch, 1, 11).view(), nothing_visible.view());
    for (float value : out) ASSERT_EQ(value, 0.0f);
}

INSTANTIATE_TEST_SUITE_P(AllBackends, FullyMaskedRow, testing::ValuesIn(gqa_test::runnable_backends()),
                         gqa_test::backend_test_name);

// The variant a run must reach, from the environment tests/CMakeLists.txt gives it:
// the x86 ISA cap, or the CPU qemu-user emulates. Null where the CPU decides alone.
const char *expected_isa() {
    struct Expectation {
        const char *variable, *value, *isa;
    };
    static const Expectation expectations[] = {
        {"GQA_X86_ISA", "avx2", "avx2"},           {"GQA_X86_ISA", "sse41", "sse41"},
        {"QEMU_CPU", "cortex-a72", "armv8-a"},     // ARMv8.0: no FP16
        {"QEMU_CPU", "cortex-a76", "armv8.2-a+fp16"}, {"QEMU_CPU", "max", "armv8.2-a+fp16"},
    };
    for (const Expectation &e : expectations) {
        const char *value = std::getenv(e.variable);
        if (value && std::string(value) == e.value) return e.isa;
    }
    return nullptr;
}

TEST(Dispatch, RunsTheVariantThisCpuCanExecute) {
    const char *expected = expected_isa();
    const std::vector<gqa::Backend> backends = gqa_test::backends_under_test();
    ASSERT_FALSE(backends.empty()) << "no compiled backend besides the reference";
    for (gqa::Backend backend : backends) {
        const std::string isa = gqa::backend_isa(backend);
        const bool cpu = backend == gqa::Backend::x86 || backend == gqa::Backend::arm;
        if (expected && cpu) {
            EXPECT_EQ(isa, expected) << gqa::backend_name(backend);
        } else {
            EXPECT_FALSE(isa.empty()) << gqa::backend_name(backend);
        }
    }
    EXPECT_EQ(gqa::backend_isa(gqa::Backend::reference), "");
}

}  // namespace
