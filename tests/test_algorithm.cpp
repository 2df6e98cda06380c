// The attention algorithm's formulations against each other, JIT-compiled for
// this CPU: the blocked ones (flash-style online merge, split-K with log-sum-exp
// merge) that the GPU runs, and the three-pass one in segments that x86 decode
// runs, must compute what the whole-row three-pass one computes, which the suite
// checks against the reference on every CPU backend. Slots past kv_len
// hold NaN, so a formulation that reads outside the visible range shows.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "../generators/attention_algorithm.h"
#include "layout.h"
#include "../tools/tolerance.h"

namespace {

// Formulations of one algorithm, all fp32, agree more closely than a backend and
// the fp64 reference: the policy's rtol with a tenth of its atol.
constexpr double kFormulationAtol = GQA_ATOL / 10;

using namespace Halide;
namespace algo = gqa::algo;

struct Case {
    const char *name;
    int head_dim, group, kv_heads, seq_len, kv_len, batch;
    bool causal = true;
    int window = 0;  // 0: none
    bool use_mask = false;
    float softcap = 0.f;
    bool sinks = false;  // a learned logit per query head (else -inf: none)
};

void PrintTo(const Case &c, std::ostream *os) {
    *os << c.name;
}

const Case kCases[] = {
    {"prefill_causal", 16, 4, 2, 37, 37, 2},
    {"prefill_after_cache", 16, 2, 2, 9, 50, 1},
    {"decode", 32, 4, 1, 1, 61, 2},
    {"decode_window", 8, 3, 2, 1, 45, 1, true, 7},
    {"prefill_window_softcap", 16, 2, 1, 20, 20, 1, true, 5, false, 30.f},
    {"bidirectional_masked", 8, 2, 2, 12, 30, 2, false, 0, true},
    {"mqa_masked_decode", 16, 8, 1, 1, 33, 1, true, 0, true},
    {"prefill_sinks_masked", 16, 4, 2, 21, 40, 2, true, 0, true, 0.f, true},
    {"decode_window_sinks", 8, 2, 2, 1, 70, 1, true, 9, false, 0.f, true},
    // Several segments of 64 keys, the window leaving the first ones out.
    {"decode_long_window_sinks", 8, 2, 2, 1, 300, 1, true, 150, false, 0.f, true},
    {"decode_long_masked_softcap", 16, 4, 1, 1, 200, 2, true, 0, true, 20.f},
};

// Every other variant: three passes in segments of one or two key chunks (the size a
// run-time parameter, as in the x86 decode pipelines); blocked with key blocks of a few sizes, one
// split or several, and the CPU default split (512 slots), which reaches past every
// case's cache.
struct Variant {
    int segment_keys = 0;  // > 0: three-pass in segments
    int key_block = 0, split_blocks = 0;  // else blocked

    std::string name() const {
        if (segment_keys > 0) return "three-pass, segments of " + std::to_string(segment_keys);
        return "key_block " + std::to_string(key_block) + ", split_blocks " + std::to_string(split_blocks);
    }
};
const Variant kVariants[] = {{64}, {128}, {0, 4, 0}, {0, 8, 0}, {0, 16, 0}, {0, 4, 2}, {0, 8, 3}, {0, 16, 1}, {0, 64, 8}};

// One formulation as a JIT pipeline over parameters, compiled once for every case.
// Every stage at root: this checks what is computed, not how fast.
class Pipeline {
public:
    // The whole-row three-pass formulation where variant is null.
    explicit Pipeline(const Variant *variant) {
        algo::AttendInputs in{q_,
                                    mask_,
                                    k_,
                                    v_,
                                    q_.dim(0).extent(),
                                    q_.dim(1).extent(),
                                    q_.dim(2).extent(),
                                    q_.dim(3).extent(),
                                    kv_len_,
                                    q_.dim(4).extent(),
                                    use_mask_,
                                    scale_,
                                    softcap_,
                                    causal_,
                                    window_,
                                    sinks_,
                                    use_sinks_};
        // A contiguous cache: every row kv_len long, every key at its slot.
        Var b("b"), j("j");
        in.row_kv_len(b) = Expr(kv_len_);
        in.granule_offset(j, b) = 0;
        in.granules = k_.dim(1).extent() / gqa::layout::kCacheGranule;
        in.cache_slots = k_.dim(1).extent();
        if (!variant || variant->segment_keys > 0) {
            segment_keys_.set(variant ? variant->segment_keys : 0);
            algo::Attend a = algo::define_attend(in, z_, nullptr, nullptr, variant ? Expr(segment_keys_) : Expr());
            for (Func f : {a.qk, a.row_max, a.exp_score, a.row_sum, a.weighted}) f.compute_root();
            if (variant) {
                for (Func f : {a.segment_state, a.merge.max, a.merge.sum, a.merge.acc}) f.compute_root();
            }
        } else {
            algo::AttendBlocked a = algo::define_attend_blocked(in, z_, variant->key_block, variant->split_blocks);
            for (Func f : {a.qk, a.block_max, a.block_exp, a.block_sum, a.block_acc, a.state}) f.compute_root();
            if (variant->split_blocks > 0) {
                for (Func f : {a.merge.max, a.merge.sum, a.merge.acc}) f.compute_root();
            }
        }
        // Spelled out: `host` on Zen 4 selects AVX512-FP16 (docs/halide14.md §2.1).
        z_.compile_jit(Target("x86-64-linux-avx-avx2-f16c-fma-sse41"));
    }

    Buffer<float> run(const Case &c, Buffer<float> q, Buffer<float> k, Buffer<float> v, Buffer<uint8_t> mask,
                      Buffer<float> sinks) {
        q_.set(q), k_.set(k), v_.set(v), mask_.set(mask), sinks_.set(sinks);
        use_sinks_.set(c.sinks ? 1 : 0);
        kv_len_.set(c.kv_len);
        use_mask_.set(c.use_mask ? 1 : 0);
        causal_.set(c.causal ? 1 : 0);
        window_.set(c.window > 0 ? c.window : c.kv_len + 1);
        scale_.set(1.f / std::sqrt(float(c.head_dim)));
        softcap_.set(c.softcap);
        return z_.realize({c.head_dim, c.group, c.kv_heads, c.seq_len, c.batch});
    }

private:
    ImageParam q_{Float(32), 5, "q"}, k_{Float(32), 4, "k"}, v_{Float(32), 4, "v"}, mask_{UInt(8), 3, "mask"},
        sinks_{Float(32), 2, "sinks"};
    Param<int> kv_len_{"kv_len"}, use_mask_{"use_mask"}, causal_{"causal"}, window_{"window"}, use_sinks_{"use_sinks"},
        segment_keys_{"segment_keys"};
    Param<float> scale_{"scale"}, softcap_{"softcap"};
    Func z_{"z"};
};

class Formulations : public testing::TestWithParam<Case> {
protected:
    static void SetUpTestSuite() {
        three_pass_ = new Pipeline(nullptr);
        for (const Variant &variant : kVariants) variants_.push_back(new Pipeline(&variant));
    }
    static void TearDownTestSuite() {
        delete three_pass_;
        for (Pipeline *p : variants_) delete p;
        variants_.clear();
    }

    Formulations() {
        const Case &c = GetParam();
        std::mt19937 rng(17);
        std::normal_distribution<float> normal(0.f, 1.f);
        // Exactly what the runtime guarantees: the valid prefix padded to whole chunks.
        constexpr int P = gqa::layout::kKeySlotPadding;
        const int slots = (c.kv_len + P - 1) / P * P;
        q_ = Buffer<float>(c.head_dim, c.group, c.kv_heads, c.seq_len, c.batch);
        k_ = Buffer<float>(c.head_dim, slots, c.kv_heads, c.batch);
        v_ = Buffer<float>(c.head_dim, slots, c.kv_heads, c.batch);
        mask_ = Buffer<uint8_t>(c.kv_len, c.seq_len, c.batch);
        q_.for_each_value([&](float &x) { x = normal(rng); });
        for (Buffer<float> *cache : {&k_, &v_}) {
            cache->for_each_element([&](const int *at) {
                (*cache)(at) = at[1] < c.kv_len ? normal(rng) : std::numeric_limits<float>::quiet_NaN();
            });
        }
        sinks_ = Buffer<float>(c.group, c.kv_heads);
        sinks_.for_each_value([&](float &x) { x = c.sinks ? 2.f * normal(rng) : -std::numeric_limits<float>::infinity(); });
        // Query 3 of the first sample sees nothing (it must give zeros).
        mask_.for_each_element([&](int t, int i, int b) {
            mask_(t, i, b) = b == 0 ? (i != 3 && (t + i) % 3 != 0) : (t * 7 + i) % 4 != 0;
        });
    }

    Buffer<float> run(Pipeline &pipeline) { return pipeline.run(GetParam(), q_, k_, v_, mask_, sinks_); }

    static Pipeline *three_pass_;
    static std::vector<Pipeline *> variants_;
    Buffer<float> q_, k_, v_, sinks_;
    Buffer<uint8_t> mask_;
};

Pipeline *Formulations::three_pass_ = nullptr;
std::vector<Pipeline *> Formulations::variants_;

TEST_P(Formulations, VariantsMatchThreePass) {
    const Buffer<float> want = run(*three_pass_);
    int empty = 0;
    want.for_each_element([&](const int *at) {
        ASSERT_TRUE(std::isfinite(want(at)));
        empty += want(at) == 0.f;
    });
    if (GetParam().use_mask && GetParam().seq_len > 3) EXPECT_GT(empty, 0) << "query 3 should see no key";

    for (size_t n = 0; n < variants_.size(); ++n) {
        const Buffer<float> got = run(*variants_[n]);
        int mismatches = 0;
        got.for_each_element([&](const int *at) {
            const bool close = gqa_tools::tolerance_excess(got(at), want(at), kFormulationAtol) <= 0;
            mismatches += !close || (want(at) == 0.f && got(at) != 0.f);
        });
        EXPECT_EQ(mismatches, 0) << kVariants[n].name();
    }
}

// The NaN rule (attention.hpp), per formulation: a NaN key/value slot reaches exactly
// the queries that see that slot (all NaN); every other query computes what it
// computes without it. Halide's exp(NaN) is 0 on x86 and its float compares may
// treat NaN as equal, so this fails if the algorithm lets either hide the NaN.
TEST_P(Formulations, NanSlotReachesExactlyTheQueriesThatSeeIt) {
    const Case &c = GetParam();
    const Buffer<float> clean = run(*three_pass_);
    const int nan_slot = c.kv_len - c.seq_len;  // the first query's own slot: inside every window
    for (int e = 0; e < c.head_dim; ++e) {
        k_(e, nan_slot, 0, 0) = std::numeric_limits<float>::quiet_NaN();
        v_(e, nan_slot, 0, 0) = std::numeric_limits<float>::quiet_NaN();
    }
    const auto sees_nan_slot = [&](int i, int kvh, int b) {
        if (kvh != 0 || b != 0) return false;
        const int query_slot = c.kv_len - c.seq_len + i;
        const bool in_window = c.window == 0 || nan_slot > query_slot - c.window;
        const bool causal_ok = !c.causal || nan_slot <= query_slot;
        return in_window && causal_ok && (!c.use_mask || mask_(nan_slot, i, b) != 0);
    };
    std::vector<Pipeline *> all = variants_;
    all.insert(all.begin(), three_pass_);
    for (size_t n = 0; n < all.size(); ++n) {
        SCOPED_TRACE(n == 0 ? std::string("three-pass") : kVariants[n - 1].name());
        const Buffer<float> got = run(*all[n]);
        int seeing = 0, wrong = 0;
        got.for_each_element([&](int d, int r, int kvh, int i, int b) {
            if (sees_nan_slot(i, kvh, b)) {
                ++seeing;
                wrong += !std::isnan(got(d, r, kvh, i, b));
            } else {
                const float want = clean(d, r, kvh, i, b);
                wrong += gqa_tools::tolerance_excess(got(d, r, kvh, i, b), want, kFormulationAtol) > 0;
            }
        });
        EXPECT_GT(seeing, 0);
        EXPECT_EQ(wrong, 0);
    }
}

// widen_half against Halide's own cast, on every half, vectorized as the
// pipelines use it.
TEST(WidenHalf, MatchesTheCastOnEveryHalf) {
    Buffer<uint16_t> halves(1 << 16);
    halves.for_each_element([&](int n) { halves(n) = uint16_t(n); });
    Var n("n");
    Func half("half"), fast("fast"), exact("exact");
    half(n) = reinterpret(Float(16), halves(n));
    fast(n) = algo::widen_half(half(n));
    exact(n) = cast<float>(half(n));
    fast.vectorize(n, 16);
    const Target target("x86-64-linux-avx-avx2-f16c-fma-sse41");
    const Buffer<float> got = fast.realize({1 << 16}, target), want = exact.realize({1 << 16}, target);
    int mismatches = 0;
    for (int i = 0; i < (1 << 16); ++i) {
        uint32_t got_bits, want_bits;
        std::memcpy(&got_bits, &got(i), 4);
        std::memcpy(&want_bits, &want(i), 4);
        const bool both_nan = std::isnan(got(i)) && std::isnan(want(i));
        mismatches += !both_nan && got_bits != want_bits;
    }
    EXPECT_EQ(mismatches, 0);
}

INSTANTIATE_TEST_SUITE_P(Cases, Formulations, testing::ValuesIn(kCases),
                         [](const testing::TestParamInfo<Case> &info) { return std::string(info.param.name); });

}  // namespace
