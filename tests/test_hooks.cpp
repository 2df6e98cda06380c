// TransformerLens' hooks, split per-head inputs and activation patching. Every
// backend records what the reference records, through the recording pipelines,
// over GQA / MHA / MQA, windows, masks, soft-cap, sinks, q/k norms, a cache and its
// decode steps, and an fp16 cache; the reference's hooks are checked against their
// definitions (the relations between them) so that it is not only trusted.
#include <gmock/gmock.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "../runtime/test_hooks.h"
#include "test_util.h"

namespace {

using gqa::Hook;
using gqa_test::all_close;
using gqa_test::HostTensor;

constexpr std::array<Hook, gqa::kHookCount> kAllHooks = {Hook::q,           Hook::k,       Hook::v, Hook::rot_q,
                                                          Hook::rot_k,       Hook::attn_scores, Hook::pattern,
                                                          Hook::z,           Hook::result};

struct HookCase {
    std::string name;
    gqa::Config config;
    int batch = 2, prefill = 5, decode_steps = 0;
    bool cached = false, mask = false, sinks = false, split = false;
    gqa::CacheType cache_type = gqa::CacheType::f32;
};

std::vector<HookCase> hook_cases() {
    auto config = [](int heads, int kv_heads) {
        gqa::Config c = gqa_test::make_config(24, heads, kv_heads, 8, 32);
        c.rope_style = gqa::RopeStyle::rotate_half;
        return c;
    };
    std::vector<HookCase> cases;
    cases.push_back({.name = "gqa", .config = config(6, 2)});
    cases.push_back({.name = "mha_split", .config = config(4, 4), .split = true});
    cases.push_back({.name = "mqa_split", .config = config(4, 1), .split = true});
    {
        HookCase c{.name = "local_softcap_split", .config = config(4, 2), .prefill = 7, .split = true};
        c.config.window = 3, c.config.softcap = 2.0, c.config.rotary_dim = 4;
        cases.push_back(c);
    }
    cases.push_back({.name = "mask_sinks", .config = config(6, 3), .mask = true, .sinks = true});
    {
        HookCase c{.name = "qk_norm_layer_scaled", .config = config(4, 2)};
        c.config.qk_norm = gqa::QkNorm::per_head, c.config.layer_id = 3;
        c.config.rope_style = gqa::RopeStyle::interleaved;
        cases.push_back(c);
    }
    cases.push_back({.name = "cache_decode", .config = config(6, 2), .prefill = 4, .decode_steps = 3, .cached = true});
    cases.push_back({.name = "cache_decode_split_mask", .config = config(4, 1), .prefill = 3, .decode_steps = 2,
                     .cached = true, .mask = true, .split = true});
    cases.push_back({.name = "f16_cache_decode", .config = config(6, 2), .prefill = 4, .decode_steps = 2,
                     .cached = true, .cache_type = gqa::CacheType::f16});
    return cases;
}

// Every hook of one forward, copied.
using Hooks = std::array<std::vector<float>, gqa::kHookCount>;

// The hooks the layer records, of its last forward.
Hooks recorded(const gqa::Attention &layer) {
    Hooks hooks;
    for (Hook h : layer.recorded_hooks()) hooks[int(h)] = gqa_test::copy_of(layer.hook(h));
    return hooks;
}

// The inputs of one forward of a case, the same on every backend.
struct Call {
    int seq_len;
    HostTensor<float> x, query, key, value;
    std::optional<HostTensor<uint8_t>> mask;
};

// Step `step` of a case on `layer`: the prefill, then one-token decodes.
Call make_call(const HookCase &hc, const gqa::Attention &layer, int step) {
    const gqa::Config &c = hc.config;
    const int seq_len = step == 0 ? hc.prefill : 1;
    const int kv_len = (hc.cached ? layer.size() : 0) + seq_len;
    const uint32_t seed = 100 + 10 * step;
    Call call{.seq_len = seq_len};
    call.x = gqa_test::random_input(c, hc.batch, seq_len, seed);
    call.query = gqa_test::random_normal({hc.batch, seq_len, c.num_heads, c.embed_dim}, 1.0, seed + 1);
    call.key = gqa_test::random_normal({hc.batch, seq_len, c.num_kv_heads, c.embed_dim}, 1.0, seed + 2);
    call.value = gqa_test::random_normal({hc.batch, seq_len, c.num_kv_heads, c.embed_dim}, 1.0, seed + 3);
    if (hc.mask) {
        // Causal, with holes; every query keeps its own slot.
        HostTensor<uint8_t> mask{std::vector<uint8_t>(size_t(hc.batch) * seq_len * kv_len), {hc.batch, seq_len, kv_len}};
        for (int b = 0; b < hc.batch; ++b) {
            for (int i = 0; i < seq_len; ++i) {
                const int slot = kv_len - seq_len + i;
                for (int t = 0; t < kv_len; ++t) {
                    mask.values[(size_t(b) * seq_len + i) * kv_len + t] = t == slot || (t < slot && (t + i + b) % 3 != 0);
                }
            }
        }
        call.mask = mask;
    }
    return call;
}

std::vector<float> run(gqa::Attention &layer, const HookCase &hc, const Call &call,
                       std::span<const gqa::Patch> patches = {}) {
    std::vector<float> out(call.x.values.size());
    if (hc.split) {
        layer.forward_split({call.query.view(), call.key.view(), call.value.view()}, out,
                            gqa_test::optional_view(call.mask), std::nullopt, patches);
    } else {
        layer.forward(call.x.view(), out, gqa_test::optional_view(call.mask), std::nullopt, patches);
    }
    return out;
}

struct Forwards {
    std::vector<std::vector<float>> outs;
    std::vector<Hooks> hooks;
};

// The case's layer (with its cache, recording nothing but z).
gqa::Attention make_layer(const HookCase &hc, gqa::Backend backend) {
    const gqa_test::LayerWeights weights = gqa_test::random_weights(hc.config, true, 7);
    const HostTensor<float> sinks = gqa_test::random_normal({hc.config.num_heads}, 1.0, 9);
    gqa::Weights w = weights.view();
    if (hc.sinks) w.sinks = sinks.view();
    std::vector<float> q_norm(hc.config.head_dim), k_norm(hc.config.head_dim);
    if (hc.config.qk_norm != gqa::QkNorm::none) {
        for (int e = 0; e < hc.config.head_dim; ++e) q_norm[e] = 0.5f + 0.1f * e, k_norm[e] = 1.5f - 0.05f * e;
        w.q_norm = {q_norm.data(), {hc.config.head_dim}}, w.k_norm = {k_norm.data(), {hc.config.head_dim}};
    }
    gqa::Attention layer(hc.config, w, backend);
    if (hc.cached) layer.setup_cache(hc.batch, hc.config.max_seq_len, hc.cache_type);
    return layer;
}

// The case's prefill and decode steps, recording every hook; with `patched` set,
// each forward patches that hook with values of its own (the same on every backend).
Forwards run_case(const HookCase &hc, gqa::Backend backend, std::optional<Hook> patched = std::nullopt) {
    gqa::Attention layer = make_layer(hc, backend);
    layer.set_recorded_hooks(kAllHooks);
    Forwards f;
    for (int step = 0; step <= hc.decode_steps; ++step) {
        const Call call = make_call(hc, layer, step);
        if (!patched) {
            f.outs.push_back(run(layer, hc, call));
            f.hooks.push_back(recorded(layer));
            continue;
        }
        const HostTensor<float> value =
            gqa_test::random_uniform(layer.hook_shape(*patched, hc.batch, call.seq_len), 0.0, 0.5, 300 + step);
        const gqa::Patch patch{*patched, value.view()};
        f.outs.push_back(run(layer, hc, call, {&patch, 1}));
        f.hooks.push_back(recorded(layer));
        EXPECT_EQ(f.hooks.back()[int(*patched)], value.values) << "the recorded hook is the patch";
    }
    return f;
}

// Every output and hook of a case on the backend under test against the reference's.
// A narrow cache: the reduced-precision rule against the fp32 cache's reference,
// since a value may round to either neighbour of the type.
void expect_matches_reference(const HookCase &hc, gqa::Backend backend, std::optional<Hook> patched = std::nullopt) {
    const Forwards want = run_case(hc, gqa::Backend::reference, patched);
    const Forwards got = run_case(hc, backend, patched);
    HookCase exact_case = hc;
    exact_case.cache_type = gqa::CacheType::f32;
    const Forwards exact = run_case(exact_case, gqa::Backend::reference, patched);
    auto close = [&](std::span<const float> got, std::span<const float> want, std::span<const float> exact) {
        if (hc.cache_type == gqa::CacheType::f32) return all_close(got, want);
        return gqa_test::within_reduced_precision_error(got, want, exact);
    };
    for (size_t step = 0; step < want.outs.size(); ++step) {
        SCOPED_TRACE("step " + std::to_string(step));
        EXPECT_TRUE(close(got.outs[step], want.outs[step], exact.outs[step]));
        for (Hook h : kAllHooks) {
            EXPECT_TRUE(close(got.hooks[step][int(h)], want.hooks[step][int(h)], exact.hooks[step][int(h)]))
                << gqa::hook_name(h);
        }
    }
}

class HookGrid : public testing::TestWithParam<gqa::Backend> {};

TEST_P(HookGrid, EveryHookMatchesTheReference) {
    for (const HookCase &hc : hook_cases()) {
        SCOPED_TRACE(hc.name);
        expect_matches_reference(hc, GetParam());
    }
}

// The recording pipelines compute what the fast ones do: out and z of a forward
// recording every hook equal those of one recording only z, on each backend. (Not
// with a narrow cache, where the two paths' v may round to neighbouring values:
// that case meets the reduced-precision rule above.)
TEST_P(HookGrid, RecordingLeavesTheOutputAsTheFastPath) {
    for (const HookCase &hc : hook_cases()) {
        if (hc.split || hc.cache_type != gqa::CacheType::f32) continue;
        SCOPED_TRACE(hc.name);
        gqa::Attention fast = make_layer(hc, GetParam()), recording = make_layer(hc, GetParam());
        recording.set_recorded_hooks(kAllHooks);
        for (int step = 0; step <= hc.decode_steps; ++step) {
            const Call call = make_call(hc, fast, step);
            EXPECT_TRUE(all_close(run(recording, hc, call), run(fast, hc, call)));
            EXPECT_TRUE(all_close(gqa_test::copy_of(recording.z()), gqa_test::copy_of(fast.z())));
        }
        if (hc.cached) EXPECT_TRUE(all_close(recording.v_cache_as_float(), fast.v_cache_as_float()));
    }
}

// Patching each patchable hook: the output and every hook match the reference's
// with the same patch, and the recorded hook is the patch.
TEST_P(HookGrid, PatchesMatchTheReference) {
    for (const HookCase &hc : hook_cases()) {
        SCOPED_TRACE(hc.name);
        for (Hook h : {Hook::q, Hook::k, Hook::v, Hook::rot_q, Hook::rot_k, Hook::pattern, Hook::z}) {
            SCOPED_TRACE(std::string(gqa::hook_name(h)));
            expect_matches_reference(hc, GetParam(), h);
        }
    }
}

// A patched pattern makes z itself: recording only z (where the attention pass is
// skipped) gives the output and z of recording every hook, with the cache after it.
TEST_P(HookGrid, PatchedPatternWithoutRecordingMatches) {
    for (const HookCase &hc : hook_cases()) {
        SCOPED_TRACE(hc.name);
        gqa::Attention every = make_layer(hc, GetParam()), only_z = make_layer(hc, GetParam());
        every.set_recorded_hooks(kAllHooks);
        for (int step = 0; step <= hc.decode_steps; ++step) {
            const Call call = make_call(hc, every, step);
            const HostTensor<float> value =
                gqa_test::random_uniform(every.hook_shape(Hook::pattern, hc.batch, call.seq_len), 0.0, 0.5, 300 + step);
            const gqa::Patch patch{Hook::pattern, value.view()};
            EXPECT_EQ(run(only_z, hc, call, {&patch, 1}), run(every, hc, call, {&patch, 1})) << "step " << step;
            EXPECT_EQ(gqa_test::copy_of(only_z.z()), gqa_test::copy_of(every.z())) << "step " << step;
        }
        if (hc.cached) EXPECT_EQ(only_z.v_cache_as_float(), every.v_cache_as_float());
    }
}

INSTANTIATE_TEST_SUITE_P(Backends, HookGrid, testing::ValuesIn(gqa_test::backends_under_test()),
                         gqa_test::backend_test_name);

// The reference's hooks against their definitions, on one uncached forward:
// rot_q and rot_k are q and k rotated (apply_rope), the scores are the scaled dot
// products of rot_q and rot_k where visible and -inf elsewhere, the pattern is their
// softmax, z weighs v by it, the results sum with bo to out, and a split input
// whose heads all hold x is the forward of x.
TEST(Hooks, ReferenceHooksFollowTheirDefinitions) {
    gqa::Config c = gqa_test::make_config(24, 6, 2, 8, 32);
    c.rope_style = gqa::RopeStyle::rotate_half;
    c.window = 4;
    const gqa_test::LayerWeights weights = gqa_test::random_weights(c, true, 11);
    const int batch = 2, seq_len = 6, hd = c.head_dim, n_h = c.num_heads, n_kv = c.num_kv_heads, g = n_h / n_kv;
    const HostTensor<float> x = gqa_test::random_input(c, batch, seq_len, 12);
    gqa::Attention layer(c, weights.view(), gqa::Backend::reference);
    layer.set_recorded_hooks(kAllHooks);
    const std::vector<float> out = layer.forward(x.view());
    const Hooks h = recorded(layer);

    for (const auto &[from, to, heads] : {std::tuple{Hook::q, Hook::rot_q, n_h}, std::tuple{Hook::k, Hook::rot_k, n_kv}}) {
        std::vector<float> rotated(h[int(from)].size());
        gqa::apply_rope(c, {h[int(from)].data(), {batch, seq_len, heads, hd}}, rotated, std::nullopt, 0,
                        gqa::Backend::reference);
        EXPECT_TRUE(all_close(h[int(to)], rotated)) << gqa::hook_name(to);
    }
    std::vector<float> scores(h[int(Hook::pattern)].size()), pattern(scores.size()), z(h[int(Hook::z)].size());
    for (int b = 0; b < batch; ++b) {
        for (int head = 0; head < n_h; ++head) {
            for (int i = 0; i < seq_len; ++i) {
                const size_t row = ((size_t(b) * n_h + head) * seq_len + i) * seq_len;
                double max = -INFINITY, sum = 0;
                for (int t = 0; t < seq_len; ++t) {
                    double dot = 0;
                    for (int e = 0; e < hd; ++e) {
                        dot += double(h[int(Hook::rot_q)][((size_t(b) * seq_len + i) * n_h + head) * hd + e]) *
                               h[int(Hook::rot_k)][((size_t(b) * seq_len + t) * n_kv + head / g) * hd + e];
                    }
                    const bool visible = t <= i && t > i - *c.window;
                    scores[row + t] = visible ? float(dot / std::sqrt(double(hd))) : -INFINITY;
                    if (visible) max = std::max(max, double(scores[row + t]));
                }
                for (int t = 0; t < seq_len; ++t) sum += std::exp(double(scores[row + t]) - max);
                for (int t = 0; t < seq_len; ++t) pattern[row + t] = float(std::exp(double(scores[row + t]) - max) / sum);
                for (int e = 0; e < hd; ++e) {
                    double acc = 0;
                    for (int t = 0; t < seq_len; ++t) {
                        acc += double(pattern[row + t]) * h[int(Hook::v)][((size_t(b) * seq_len + t) * n_kv + head / g) * hd + e];
                    }
                    z[((size_t(b) * seq_len + i) * n_h + head) * hd + e] = float(acc);
                }
            }
        }
    }
    EXPECT_TRUE(all_close(h[int(Hook::attn_scores)], scores));
    EXPECT_TRUE(all_close(h[int(Hook::pattern)], pattern));
    EXPECT_TRUE(all_close(h[int(Hook::z)], z));
    std::vector<float> summed(out.size());
    for (size_t m = 0; m < size_t(batch) * seq_len; ++m) {
        for (int o = 0; o < c.embed_dim; ++o) {
            double acc = weights.bo->values[o];
            for (int head = 0; head < n_h; ++head) acc += h[int(Hook::result)][(m * n_h + head) * c.embed_dim + o];
            summed[m * c.embed_dim + o] = float(acc);
        }
    }
    EXPECT_TRUE(all_close(summed, out));

    // One x for every head, as a split input.
    HostTensor<float> query{{}, {batch, seq_len, n_h, c.embed_dim}}, kv{{}, {batch, seq_len, n_kv, c.embed_dim}};
    for (size_t m = 0; m < size_t(batch) * seq_len; ++m) {
        const float *row = x.values.data() + m * c.embed_dim;
        for (int head = 0; head < n_h; ++head) query.values.insert(query.values.end(), row, row + c.embed_dim);
        for (int head = 0; head < n_kv; ++head) kv.values.insert(kv.values.end(), row, row + c.embed_dim);
    }
    std::vector<float> split_out(out.size());
    layer.forward_split({query.view(), kv.view(), kv.view()}, split_out);
    EXPECT_TRUE(all_close(split_out, out));
}

// The hooks, shapes and refusals of the API.
TEST(Hooks, NamesShapesAndErrors) {
    for (Hook h : kAllHooks) {
        EXPECT_EQ(gqa::hook_from_name(gqa::hook_name(h)), h);
        EXPECT_EQ(gqa::can_patch(h), h != Hook::attn_scores && h != Hook::result) << gqa::hook_name(h);
    }
    EXPECT_THAT(gqa_test::error_of([] { gqa::hook_from_name("hook_x"); }), testing::HasSubstr("unknown hook \"hook_x\""));
    EXPECT_THAT(gqa_test::error_of([] { gqa::hook_name(Hook(42)); }), testing::HasSubstr("unknown hook 42"));

    const gqa::Config c = gqa_test::make_config(16, 4, 2, 4, 16);
    const gqa_test::LayerWeights weights = gqa_test::random_weights(c, false, 3);
    gqa::Attention layer(c, weights.view(), gqa::Backend::reference);
    EXPECT_THAT(layer.recorded_hooks(), testing::ElementsAre(Hook::z));
    const HostTensor<float> x = gqa_test::random_input(c, 1, 3, 4);
    layer.forward(x.view());
    EXPECT_THAT(gqa_test::error_of([&] { layer.hook(Hook::q); }),
                testing::HasSubstr("hook_q was not recorded by the last forward"));
    const Hook some[] = {Hook::result, Hook::attn_scores};
    layer.set_recorded_hooks(some);
    EXPECT_THAT(layer.recorded_hooks(), testing::ElementsAre(Hook::attn_scores, Hook::z, Hook::result));
    layer.setup_cache(1, 16);
    layer.forward(x.view());
    // What the next forward's hooks (and patches) hold: 3 cached slots + 1.
    EXPECT_EQ(layer.hook_shape(Hook::attn_scores, 1, 1), (std::vector<int64_t>{1, 4, 1, 4}));
    EXPECT_EQ(layer.hook_shape(Hook::rot_k, 1, 1), (std::vector<int64_t>{1, 1, 2, 4}));
    layer.forward(gqa_test::random_input(c, 1, 1, 5).view());
    EXPECT_EQ(layer.hook(Hook::attn_scores).shape, (std::vector<int64_t>{1, 4, 1, 4}));
    EXPECT_EQ(layer.hook(Hook::result).shape, (std::vector<int64_t>{1, 1, 4, 16}));
    const Hooks before = recorded(layer);
    const int size = layer.size();
    const std::vector<float> cache = layer.k_cache_as_float();

    // Refused, each leaving the layer as it was.
    const HostTensor<float> one = gqa_test::random_input(c, 1, 1, 6);
    std::vector<float> out(16);
    const HostTensor<float> scores = gqa_test::random_normal({1, 4, 1, 5}, 1.0, 7);
    const HostTensor<float> z_wrong = gqa_test::random_normal({1, 1, 4, 5}, 1.0, 7);
    const HostTensor<float> z = gqa_test::random_normal({1, 1, 4, 4}, 1.0, 7);
    const gqa::Patch attn_scores{Hook::attn_scores, scores.view()}, wrong{Hook::z, z_wrong.view()};
    const gqa::Patch twice[] = {{Hook::z, z.view()}, {Hook::z, z.view()}};
    const gqa::Patch no_data{Hook::z, {nullptr, {1, 1, 4, 4}}};
    const gqa::Patch bad_hook{Hook(42), z.view()};
    const std::pair<const gqa::Patch *, const char *> refused[] = {
        {&attn_scores, "hook_attn_scores cannot be patched"},
        {&wrong, "the patch of hook_z has shape [1, 1, 4, 5]; expected [1, 1, 4, 4]"},
        {&no_data, "the patch of hook_z has no data"},
        {&bad_hook, "unknown hook 42"}};
    for (const auto &refusal : refused) {
        const gqa::Patch *patch = refusal.first;
        EXPECT_THAT(gqa_test::error_of([&] { layer.forward(one.view(), out, std::nullopt, std::nullopt, {patch, 1}); }),
                    testing::HasSubstr(refusal.second));
    }
    EXPECT_THAT(gqa_test::error_of([&] { layer.forward(one.view(), out, std::nullopt, std::nullopt, twice); }),
                testing::HasSubstr("hook_z is patched twice"));
    const HostTensor<float> query = gqa_test::random_normal({1, 1, 4, 16}, 1.0, 8);
    const HostTensor<float> key = gqa_test::random_normal({1, 1, 1, 16}, 1.0, 8);
    EXPECT_THAT(gqa_test::error_of([&] { layer.forward_split({query.view(), key.view(), key.view()}, out); }),
                testing::HasSubstr("the key input has shape [1, 1, 1, 16]; expected [1, 1, 2, 16]"));
    // A stage failing in the recording path.
    for (auto stage : {gqa::detail::ForwardStage::project, gqa::detail::ForwardStage::attend,
                       gqa::detail::ForwardStage::output}) {
        gqa::detail::fail_next_forward_after(stage);
        EXPECT_THAT(gqa_test::error_of([&] { layer.forward(one.view(), out); }), testing::HasSubstr("injected failure"));
    }
    EXPECT_EQ(layer.size(), size);
    EXPECT_EQ(layer.k_cache_as_float(), cache);
    const Hooks after = recorded(layer);
    for (Hook h : some) EXPECT_EQ(after[int(h)], before[int(h)]) << gqa::hook_name(h);
    EXPECT_EQ(after[int(Hook::z)], before[int(Hook::z)]);

    layer.setup_paged_cache(4, 16);
    const int sequence = layer.add_sequence();
    const gqa::SequenceTokens row{sequence, 1};
    EXPECT_THAT(gqa_test::error_of([&] { layer.forward_sequences({&row, 1}, {one.values.data(), {1, 16}}, out); }),
                testing::HasSubstr("forward_sequences records no hooks"));
}

}  // namespace
