// The GPU decode schedule in each formulation the knobs can pick, not only the one
// the libraries are built with (split-K, 8 key blocks per split): split-K with 1
// and 2 blocks per split, and the online softmax. Each is an extra OpenCL build of the fp32 decode
// attend pipeline (tests/CMakeLists.txt), called directly with host buffers and
// checked against the x86 pipeline on the same inputs. On pocl the first GPU decode
// schedule gave wrong z in every one of them, or crashed (issue 16).
#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "HalideBuffer.h"
#include "gqa/attention.hpp"
#include "gqa_attend_decode_opencl.h"
#include "gqa_attend_decode_opencl_online.h"
#include "gqa_attend_decode_opencl_split1.h"
#include "gqa_attend_decode_opencl_split2.h"
#include "gqa_attend_decode_x86.h"
#include "layout.h"
#include "test_util.h"

namespace {

using Halide::Runtime::Buffer;
using AttendDecode = int (*)(halide_buffer_t *, halide_buffer_t *, int32_t, int32_t, int32_t, int32_t, float, float,
                             int32_t, halide_buffer_t *, int32_t, halide_buffer_t *, halide_buffer_t *,
                             halide_buffer_t *, halide_buffer_t *, halide_buffer_t *);

struct Formulation {
    const char *name;
    AttendDecode pipeline;

    friend void PrintTo(const Formulation &f, std::ostream *os) { *os << f.name; }
};

const Formulation formulations[] = {{"default", gqa_attend_decode_opencl},
                                    {"split1", gqa_attend_decode_opencl_split1},
                                    {"split2", gqa_attend_decode_opencl_split2},
                                    {"online", gqa_attend_decode_opencl_online}};

struct Case {
    int kv_len;
    std::optional<int> window;
};

// Values of a seeded normal draw, shaped as the pipelines take them.
Buffer<float> normal_buffer(std::vector<int> extents, uint32_t seed) {
    Buffer<float> buffer(extents);
    std::vector<int64_t> shape(extents.begin(), extents.end());
    const auto values = gqa_test::random_normal(shape, 1.0, seed).values;
    std::copy(values.begin(), values.end(), buffer.data());
    return buffer;
}

// z of one decode step (one query at slot kv_len - 1) for head dim 64, groups of
// 4 heads, 2 kv heads, 2 batch rows, called as the runtime calls it: the cache
// padded to whole chunks of slots (their contents masked out), no window as one
// wider than the cache; the x86 pipeline in segments of 128 keys. The granules of
// each row lie in the cache in reverse order, as a paged cache's may.
std::vector<float> decode_z(AttendDecode pipeline, const Case &c) {
    constexpr int hd = 64, group = 4, kv_heads = 2, batch = 2;
    const int slots = (c.kv_len + gqa::layout::kKeySlotPadding - 1) / gqa::layout::kKeySlotPadding *
                      gqa::layout::kKeySlotPadding;
    Buffer<float> q = normal_buffer({hd, group, kv_heads, 1, batch}, 1);
    Buffer<float> k = normal_buffer({hd, slots, kv_heads, batch}, 2);
    Buffer<float> v = normal_buffer({hd, slots, kv_heads, batch}, 3);
    Buffer<uint8_t> mask(c.kv_len, 1, batch);  // unread: use_mask is 0
    Buffer<float> sinks(group, kv_heads);      // unread: use_sinks is 0
    Buffer<float> z(hd, group, kv_heads, 1, batch);
    for (Buffer<float> *input : {&q, &k, &v, &sinks}) input->set_host_dirty();
    mask.set_host_dirty();
    const int granules = slots / gqa::layout::kCacheGranule;
    Buffer<int32_t> kv_lens(batch), granule_offsets(granules, batch);
    kv_lens.fill(c.kv_len);
    granule_offsets.for_each_element(
        [&](int j, int b) { granule_offsets(j, b) = (granules - 1 - 2 * j) * gqa::layout::kCacheGranule; });
    kv_lens.set_host_dirty(), granule_offsets.set_host_dirty();
    const int window = c.window.value_or(c.kv_len + 1);
    const int status =
        pipeline(q, mask, c.kv_len, 0, 1, window, 0.125f, 0.f, 0, sinks, 128, kv_lens, granule_offsets, k, v, z);
    EXPECT_EQ(status, 0) << "pipeline status";
    z.copy_to_host();
    return std::vector<float>(z.data(), z.data() + z.number_of_elements());
}

class GpuDecodeFormulation : public testing::TestWithParam<Formulation> {};

TEST_P(GpuDecodeFormulation, MatchesTheCpuPipeline) {
    const std::string reason = gqa::backend_unavailable_reason(gqa::Backend::opencl);
    if (!reason.empty()) GTEST_SKIP() << "OpenCL: " << reason;
    const Case cases[] = {{32, {}},  {64, {}},   {256, {}},  {257, {}}, {300, {}},
                          {513, {}}, {1024, {}}, {2049, {}}, {32, 64},  {300, 64}};
    for (const Case &c : cases) {
        SCOPED_TRACE("kv_len " + std::to_string(c.kv_len) + (c.window ? ", window 64" : ""));
        EXPECT_TRUE(gqa_test::all_close(decode_z(GetParam().pipeline, c), decode_z(gqa_attend_decode_x86, c)));
    }
}

INSTANTIATE_TEST_SUITE_P(OpenCL, GpuDecodeFormulation, testing::ValuesIn(formulations),
                         [](const auto &info) { return std::string(info.param.name); });

}  // namespace
