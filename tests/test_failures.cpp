// A forward that fails after validation, here by a failure injected after each of
// its stages as a pipeline error would be, leaves the layer as it was: the cache's
// contents and size, z(), pattern(), and what later calls compute.
#include "test_util.h"

#include <array>
#include <cstring>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include "test_hooks.h"

namespace gqa::detail {
// For the test list: the stage's name, not its bytes.
void PrintTo(ForwardStage stage, std::ostream *os) {
    static const char *const names[] = {"none", "project", "attend", "output"};
    *os << names[int(stage)];
}
}  // namespace gqa::detail

namespace {

using gqa::detail::ForwardStage;

// int8 stands for the other types: its slots hold scales beside the values.
enum class Cache { none, f32, f16, int8 };
const char *const kCacheNames[] = {"no_cache", "f32_cache", "f16_cache", "int8_cache"};

void PrintTo(Cache cache, std::ostream *os) {
    *os << kCacheNames[int(cache)];
}

// Everything of a layer a caller can read, as bytes, so NaN-safe and exact.
struct Snapshot {
    int size = 0;
    std::vector<uint8_t> k, v, z, pattern;
    std::vector<int64_t> z_shape, pattern_shape;

    bool operator==(const Snapshot &) const = default;
};

template <typename T>
std::vector<uint8_t> bytes_of(const gqa::TensorView<T> &view) {
    std::vector<uint8_t> bytes(size_t(view.numel()) * sizeof(T));
    std::memcpy(bytes.data(), view.data, bytes.size());
    return bytes;
}

Snapshot snapshot(const gqa::Attention &layer) {
    Snapshot s;
    s.size = layer.size();
    if (layer.has_cache()) {
        switch (layer.cache_type()) {
        case gqa::CacheType::f32: s.k = bytes_of(layer.k_cache()), s.v = bytes_of(layer.v_cache()); break;
        case gqa::CacheType::f16: s.k = bytes_of(layer.k_cache_f16()), s.v = bytes_of(layer.v_cache_f16()); break;
        case gqa::CacheType::bf16: s.k = bytes_of(layer.k_cache_bf16()), s.v = bytes_of(layer.v_cache_bf16()); break;
        case gqa::CacheType::int8: s.k = bytes_of(layer.k_cache_int8()), s.v = bytes_of(layer.v_cache_int8()); break;
        }
    }
    s.z = bytes_of(layer.z()), s.pattern = bytes_of(layer.pattern());
    s.z_shape = layer.z().shape, s.pattern_shape = layer.pattern().shape;
    return s;
}

class FailedForward : public testing::TestWithParam<std::tuple<gqa::Backend, ForwardStage, Cache>> {};

TEST_P(FailedForward, LeavesTheLayerAsItWas) {
    const auto [backend, stage, cache] = GetParam();
    const gqa::Config config = gqa_test::make_config(64, 4, 2, 16, 64);
    const auto weights = gqa_test::random_weights(config, true, 41);
    gqa::Attention layer(config, weights.view(), backend), twin(config, weights.view(), backend);
    for (gqa::Attention *l : {&layer, &twin}) {
        if (cache != Cache::none) {
            l->setup_cache(2, 32, std::array{gqa::CacheType::f32, gqa::CacheType::f16, gqa::CacheType::int8}[int(cache) - 1]);
        }
        l->set_record_pattern(true);
        l->forward(gqa_test::random_input(config, 2, 5, 42).view());
    }
    const Snapshot before = snapshot(layer);

    // A longer call than the first, so that every buffer it writes must grow.
    gqa::detail::fail_next_forward_after(stage);
    try {
        layer.forward(gqa_test::random_input(config, 2, 7, 43).view());
        ADD_FAILURE() << "the injected failure did not throw";
    } catch (const gqa::Error &e) {
        EXPECT_NE(std::string(e.what()).find("injected failure"), std::string::npos) << e.what();
    }
    EXPECT_TRUE(snapshot(layer) == before) << "the failed call changed what the layer shows";

    // And it computes on as if the call had never been made.
    const auto x = gqa_test::random_input(config, 2, 3, 44);
    const std::vector<float> got = layer.forward(x.view()), want = twin.forward(x.view());
    EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0);
    EXPECT_TRUE(snapshot(layer) == snapshot(twin));
}

std::string failed_forward_name(const testing::TestParamInfo<FailedForward::ParamType> &info) {
    const auto [backend, stage, cache] = info.param;
    return std::string(gqa::backend_name(backend)) + "_after_" + testing::PrintToString(stage) + "_" +
           kCacheNames[int(cache)];
}

INSTANTIATE_TEST_SUITE_P(AllBackends, FailedForward,
                         testing::Combine(testing::ValuesIn(gqa_test::runnable_backends()),
                                          testing::Values(ForwardStage::project, ForwardStage::attend,
                                                          ForwardStage::output),
                                          testing::Values(Cache::none, Cache::f32, Cache::f16, Cache::int8)),
                         failed_forward_name);

}  // namespace
