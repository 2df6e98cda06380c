// The paged KV cache for serving. A property test: random schedules of joins,
// steps mixing decode and prefill rows, forks, rollbacks and leaves, in which every
// row of every step must equal its sequence run alone (the reference backend, a
// contiguous cache, one call over the sequence's whole history); windowed layers
// letting go of blocks, within the memory the window bounds; and the guarantees:
// every bad call is a gqa::Error that changes nothing.
#include <algorithm>
#include <cmath>
#include <map>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "../runtime/test_hooks.h"
#include "test_util.h"

#include <gmock/gmock.h>

namespace {

using gqa::Backend;
using gqa::CacheType;

struct Shape {
    const char *name;
    int embed_dim, num_heads, num_kv_heads, head_dim;
    std::optional<int> window;
    double softcap = 0;
};

const Shape kShapes[] = {
    {"gqa", 64, 4, 2, 16, std::nullopt},
    {"mqa_softcap", 48, 3, 1, 16, std::nullopt, 20.0},
    {"gqa_window", 64, 4, 2, 16, 21},
};

struct ServingCase {
    Backend backend;
    CacheType type;
    const Shape *shape;
    int block_size;
};

std::string name_of(const ServingCase &c) {
    return std::string(gqa::backend_name(c.backend)) + "_" + std::string(gqa::cache_type_name(c.type)) + "_" +
           c.shape->name + "_blocks" + std::to_string(c.block_size);
}

void PrintTo(const ServingCase &c, std::ostream *os) {
    *os << name_of(c);
}

std::string case_name(const testing::TestParamInfo<ServingCase> &info) {
    return name_of(info.param);
}

std::vector<ServingCase> serving_cases() {
    std::vector<ServingCase> cases;
    for (Backend backend : gqa_test::runnable_backends()) {
        for (const Shape &shape : kShapes) {
            for (int block_size : {16, 32}) cases.push_back({backend, CacheType::f32, &shape, block_size});
        }
        for (CacheType type : {CacheType::f16, CacheType::bf16, CacheType::int8}) {
            cases.push_back({backend, type, &kShapes[2], 16});
        }
    }
    return cases;
}

constexpr int kMaxSeqLen = 160;

gqa::Config config_of(const Shape &shape) {
    gqa::Config config = gqa_test::make_config(shape.embed_dim, shape.num_heads, shape.num_kv_heads, shape.head_dim,
                                               kMaxSeqLen);
    config.rope_style = gqa::RopeStyle::rotate_half;
    config.window = shape.window;
    config.softcap = shape.softcap;
    return config;
}

// What a sequence holds: its tokens' x and positions.
struct History {
    std::vector<float> x;
    std::vector<int32_t> positions;
};

class Serving : public testing::TestWithParam<ServingCase> {
protected:
    const ServingCase &c = GetParam();
    const gqa::Config config = config_of(*c.shape);
    const gqa_test::LayerWeights weights = gqa_test::random_weights(config, true, 91);

    // The last `tokens` outputs of the sequence run alone, in one call.
    std::vector<float> alone(const History &h, int tokens) const {
        const int length = int(h.positions.size()), d = config.embed_dim;
        gqa::Attention layer(config, weights.view(), Backend::reference);
        layer.setup_cache(1, kMaxSeqLen, c.type);
        const std::vector<float> out =
            layer.forward({h.x.data(), {1, length, d}}, std::nullopt, gqa::TensorView<int32_t>{h.positions.data(), {1, length}});
        return std::vector<float>(out.end() - size_t(tokens) * d, out.end());
    }

    testing::AssertionResult matches_alone(const std::vector<float> &got, const History &h, int tokens) const {
        const std::vector<float> want = alone(h, tokens);
        if (c.type == CacheType::f32 || c.backend == Backend::reference) return gqa_test::all_close(got, want);
        // k and v may round to neighbouring values of the type (tools/tolerance.h).
        const double tol = c.type == CacheType::int8 ? GQA_INT8_CACHE_TOL : GQA_HALF_CACHE_TOL;
        for (size_t n = 0; n < want.size(); ++n) {
            if (!(std::abs(got[n] - want[n]) <= tol * (1 + std::abs(want[n])))) {
                return testing::AssertionFailure() << "out[" << n << "] " << got[n] << " against " << want[n];
            }
        }
        return testing::AssertionSuccess();
    }
};

// Random schedules, bounded for CI: about 40 operations over up to 5 live sequences.
TEST_P(Serving, RowsEqualTheirSequencesAlone) {
    const int d = config.embed_dim, bs = c.block_size;
    gqa::Attention layer(config, weights.view(), c.backend);
    const int num_blocks = 5 * ((kMaxSeqLen + bs - 1) / bs);
    layer.setup_paged_cache(num_blocks, bs, c.type);
    std::map<int, History> live;
    std::mt19937 rng(1234 + bs);
    auto uniform = [&](int low, int high) { return std::uniform_int_distribution<int>(low, high)(rng); };
    uint32_t seed = 500;

    for (int op = 0; op < 40; ++op) {
        const int choice = uniform(0, 9);
        std::vector<int> ids;
        for (const auto &entry : live) ids.push_back(entry.first);
        if (live.empty() || (choice == 0 && live.size() < 5)) {
            live[layer.add_sequence()] = History();
            continue;
        }
        const int some = ids[uniform(0, int(ids.size()) - 1)];
        if (choice == 1 && live.size() < 5) {
            live[layer.fork_sequence(some)] = live[some];
            continue;
        }
        if (choice == 2) {
            // Roll back, as far as a window lets.
            History &h = live[some];
            const int length = int(h.positions.size());
            const int shortest = layer.min_sequence_length(some);
            if (shortest > 0) {
                EXPECT_THAT(gqa_test::error_of([&] { layer.truncate_sequence(some, shortest - 1); }),
                            testing::HasSubstr("can be truncated to no fewer than"));
            }
            const int keep = uniform(shortest, length);
            layer.truncate_sequence(some, keep);
            h.x.resize(size_t(keep) * d), h.positions.resize(keep);
            ASSERT_EQ(layer.sequence_length(some), keep);
            continue;
        }
        if (choice == 3 && live.size() > 1) {
            layer.remove_sequence(some);
            live.erase(some);
            continue;
        }
        // A step: some of the sequences, in random order, decoding one token or
        // prefilling a chunk; positions consecutive, sometimes with gaps. Where every
        // position is its slot the call leaves them out.
        std::shuffle(ids.begin(), ids.end(), rng);
        ids.resize(uniform(1, int(ids.size())));
        std::vector<gqa::SequenceTokens> rows;
        std::vector<float> x;
        std::vector<int32_t> positions;
        const int stride = uniform(0, 3) == 0 ? 2 : 1;
        bool slots = true;
        for (int id : ids) {
            const History &h = live[id];
            const int32_t last = h.positions.empty() ? -1 : h.positions.back();
            const int room = (kMaxSeqLen - 1 - last) / stride;
            if (room < 1) continue;
            const int tokens = std::min(room, uniform(0, 2) == 0 ? uniform(2, 40) : 1);
            rows.push_back({id, tokens});
            const gqa_test::HostTensor<float> new_x = gqa_test::random_normal({tokens, d}, 1.0, seed++);
            x.insert(x.end(), new_x.values.begin(), new_x.values.end());
            for (int i = 0; i < tokens; ++i) {
                positions.push_back(last + 1 + i * stride + (stride > 1 ? uniform(0, 1) : 0));
                slots = slots && positions.back() == int32_t(h.positions.size()) + i;
            }
        }
        if (rows.empty()) continue;
        const int tokens = int(positions.size());
        std::vector<float> out(x.size());
        if (slots) {
            layer.forward_sequences(rows, {x.data(), {tokens, d}}, out);
        } else {
            layer.forward_sequences(rows, {x.data(), {tokens, d}}, out, gqa::TensorView<int32_t>{positions.data(), {tokens}});
        }
        size_t token = 0;
        for (const gqa::SequenceTokens &row : rows) {
            History &h = live[row.sequence];
            h.x.insert(h.x.end(), x.begin() + token * d, x.begin() + (token + row.tokens) * d);
            h.positions.insert(h.positions.end(), positions.begin() + token, positions.begin() + token + row.tokens);
            const std::vector<float> got(out.begin() + token * d, out.begin() + (token + row.tokens) * d);
            ASSERT_TRUE(matches_alone(got, h, row.tokens))
                << "operation " << op << ", sequence " << row.sequence << " at " << h.positions.size() << " tokens";
            ASSERT_EQ(layer.sequence_length(row.sequence), int(h.positions.size()));
            token += row.tokens;
        }
        if (config.window) {
            // Each sequence holds the blocks of its last window slots, one block more to
            // roll back over, and the one it fills: at most (window - 1) / bs + 3 of
            // them, whatever its length.
            const int held = layer.paged_blocks() - layer.free_paged_blocks();
            EXPECT_LE(held, int(live.size()) * ((*config.window - 1) / bs + 3));
        }
    }
    // Every block comes back.
    for (const auto &entry : live) layer.remove_sequence(entry.first);
    EXPECT_EQ(layer.free_paged_blocks(), num_blocks);
}

INSTANTIATE_TEST_SUITE_P(All, Serving, testing::ValuesIn(serving_cases()), case_name);

// What a failed call must leave as it was.
struct Snapshot {
    std::vector<int> ids, lengths;
    int free_blocks;
    std::vector<std::vector<float>> keys, values;

    explicit Snapshot(const gqa::Attention &layer) : ids(layer.sequences()), free_blocks(layer.free_paged_blocks()) {
        for (int id : ids) {
            lengths.push_back(layer.sequence_length(id));
            keys.push_back(layer.sequence_k_as_float(id)), values.push_back(layer.sequence_v_as_float(id));
        }
    }
    bool operator==(const Snapshot &) const = default;
};

class ServingErrors : public testing::TestWithParam<Backend> {};

TEST_P(ServingErrors, BadCallsChangeNothing) {
    const gqa::Config config = config_of(kShapes[0]);
    const int d = config.embed_dim;
    const gqa_test::LayerWeights weights = gqa_test::random_weights(config, false, 5);
    gqa::Attention layer(config, weights.view(), GetParam());
    layer.setup_paged_cache(5, 16);
    const int a = layer.add_sequence(), b = layer.add_sequence();
    auto step = [&](std::vector<gqa::SequenceTokens> rows, uint32_t seed,
                    std::optional<std::vector<int32_t>> positions = std::nullopt) {
        int tokens = 0;
        for (const auto &row : rows) tokens += row.tokens;
        const gqa_test::HostTensor<float> x = gqa_test::random_normal({tokens, d}, 1.0, seed);
        std::vector<float> out(x.values.size());
        if (positions) {
            layer.forward_sequences(rows, x.view(), out, gqa::TensorView<int32_t>{positions->data(), {tokens}});
        } else {
            layer.forward_sequences(rows, x.view(), out);
        }
        return out;
    };
    step({{a, 20}, {b, 5}}, 1);
    const int c = layer.fork_sequence(a);  // shares a's partly filled second block
    const Snapshot before(layer);
    ASSERT_EQ(before.free_blocks, 2);

    auto expect_error = [&](const char *what, auto call, const std::string &message) {
        EXPECT_THAT(gqa_test::error_of(call), testing::HasSubstr(message)) << what;
        EXPECT_TRUE(Snapshot(layer) == before) << what << " changed the cache";
    };
    expect_error("unknown sequence", [&] { step({{a, 1}, {99, 1}}, 2); }, "no sequence 99");
    expect_error("a sequence twice", [&] { step({{a, 1}, {a, 1}}, 2); }, "appears twice");
    expect_error("no tokens", [&] { step({{a, 0}}, 2); }, "expected >= 1");
    expect_error("no rows", [&] { step({}, 2); }, "at least one row");
    expect_error("positions going back", [&] { step({{b, 2}}, 2, std::vector<int32_t>{3, 7}); },
                 "positions must increase");
    expect_error("a position past max_seq_len", [&] { step({{b, 1}}, 2, std::vector<int32_t>{kMaxSeqLen}); },
                 "max_seq_len");
    expect_error("past max_seq_len", [&] { step({{b, kMaxSeqLen}}, 2); }, "pass max_seq_len");
    // a and c each copy their shared block, and b needs none: three blocks, two free.
    expect_error("pool exhausted", [&] { step({{a, 1}, {c, 1}, {b, 12}}, 2); }, "exhausted");
    expect_error("x's shape", [&] {
        std::vector<float> x(size_t(3) * d), out(x.size());
        const std::vector<gqa::SequenceTokens> rows{{a, 2}};
        layer.forward_sequences(rows, {x.data(), {3, d}}, out);
    }, "x has shape");
    expect_error("contiguous forward", [&] { layer.forward(gqa_test::random_input(config, 1, 1, 3).view()); },
                 "is paged");
    expect_error("truncate past the end", [&] { layer.truncate_sequence(b, 6); }, "cannot truncate");
    expect_error("remove unknown", [&] { layer.remove_sequence(99); }, "no sequence 99");
    expect_error("fork unknown", [&] { layer.fork_sequence(-1); }, "no sequence -1");
    expect_error("block size", [&] { layer.setup_paged_cache(4, 24); }, "multiple of 16");
    expect_error("pattern", [&] {
        layer.set_record_pattern(true);
        try {
            step({{a, 1}}, 2);
        } catch (...) {
            layer.set_record_pattern(false);
            throw;
        }
    }, "records no hooks");
    using gqa::detail::ForwardStage;
    for (ForwardStage stage : {ForwardStage::project, ForwardStage::attend, ForwardStage::output}) {
        expect_error("a failing stage", [&] {
            gqa::detail::fail_next_forward_after(stage);
            step({{c, 3}, {b, 1}}, 2);
        }, "injected failure");
    }

    // The layer goes on as if none of that had happened: c, a fork of a, and a itself
    // each continue from the shared prompt.
    const std::vector<float> out_c = step({{c, 3}}, 10), out_a = step({{a, 3}}, 11);
    EXPECT_EQ(layer.free_paged_blocks(), 1);  // c copied the block it shared with a; a then wrote in place
    gqa::Attention alone(config, weights.view(), Backend::reference);
    alone.setup_cache(1, kMaxSeqLen);
    const std::vector<float> prompt = gqa_test::random_normal({25, d}, 1.0, 1).values;  // a's 20 tokens first
    alone.forward({prompt.data(), {1, 20, d}});
    const std::vector<float> want = alone.forward(gqa_test::random_normal({1, 3, d}, 1.0, 11).view());
    EXPECT_TRUE(gqa_test::all_close(out_a, want));
    alone.reset();
    alone.forward({prompt.data(), {1, 20, d}});
    EXPECT_TRUE(gqa_test::all_close(out_c, alone.forward(gqa_test::random_normal({1, 3, d}, 1.0, 10).view())));
}

INSTANTIATE_TEST_SUITE_P(All, ServingErrors, testing::ValuesIn(gqa_test::runnable_backends()),
                         gqa_test::backend_test_name);

}  // namespace
