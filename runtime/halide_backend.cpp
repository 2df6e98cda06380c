// The Halide backends: wrap caller and layer memory in halide_buffer_t views and
// call AOT pipelines, those of this build's CPU (views over host memory, no copies)
// or of a GPU. On a GPU each array has a grow-only device allocation that the views
// point at: weights and rope tables go up once, the KV cache stays there, and a
// forward uploads x (positions, mask) and downloads out; the cache, z and the
// pattern come down only when the layer asks. Weights are packed once, here.
#include <algorithm>
#include <atomic>
#include <climits>
#include <initializer_list>
#include <limits>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "layout.h"
#include "aligned_vector.h"
#include "halide_backend.h"

namespace gqa::detail {
namespace {

thread_local std::string last_halide_error;

extern "C" void record_halide_error(void *, const char *message) {
    last_halide_error = message;
}

// The instruction set the multitarget wrappers settled on, as they report it
// through the hook: every wrapper asks about its variants in order and runs the
// first one accepted, and the answer is the same for all of them. The last
// variant, the baseline, is run without asking; null then.
std::atomic<const char *> chosen_isa{nullptr};

int can_use_target_features(int count, const uint64_t *features) {
    const HalidePlatform &platform = halide_platform();
    const int usable = platform.can_use_target_features(count, features);
    if (usable) chosen_isa.store(platform.isa_name(features));
    return usable;
}

void install_halide_hooks() {
    halide_platform();  // throws on a bad setting before any hook can run
    static std::once_flag once;
    std::call_once(once, [] {
        // Halide's default handler aborts; this one keeps the message for check().
        halide_set_error_handler(record_halide_error);
        halide_set_custom_can_use_target_features(can_use_target_features);
    });
}

void check(int status, Backend backend, const char *what) {
    if (status != 0) {
        throw Error(std::string(backend_name(backend)) + " " + what + " failed (" + std::to_string(status) +
                    "): " + last_halide_error);
    }
}

// A halide_buffer_t over existing memory, dims innermost first as {extent, stride}.
class View {
public:
    View(const void *host, halide_type_t type, std::initializer_list<std::pair<int, int64_t>> dims) {
        int n = 0;
        for (const auto &[extent, stride] : dims) dims_[n++] = {0, extent, static_cast<int32_t>(stride), 0};
        buffer_.host = static_cast<uint8_t *>(const_cast<void *>(host));
        buffer_.type = type;
        buffer_.dimensions = n;
        buffer_.dim = dims_;
    }
    View(const View &) = delete;
    View &operator=(const View &) = delete;
    ~View() {
        if (device_) device_->detach_native(nullptr, &buffer_);
    }
    halide_buffer_t *get() { return &buffer_; }

    // Bytes from the first element to one past the last.
    size_t bytes() const {
        int64_t last = 0;
        for (int d = 0; d < buffer_.dimensions; ++d) last += int64_t(dims_[d].extent - 1) * dims_[d].stride;
        return size_t(last + 1) * buffer_.type.bytes();
    }

    // Also backs the view with the device memory `handle` (as the device interface's
    // wrap_native takes it: a CUdeviceptr, a cl_mem).
    void wrap_device(const halide_device_interface_t *device, uint64_t handle, Backend backend) {
        check(device->wrap_native(nullptr, &buffer_, handle, device), backend, "wrapping device memory");
        device_ = device;
    }

private:
    halide_dimension_t dims_[5] = {};
    halide_buffer_t buffer_ = {};
    const halide_device_interface_t *device_ = nullptr;
};

// One array's device memory: a grow-only allocation.
class DeviceArray {
public:
    DeviceArray() = default;
    DeviceArray(const DeviceArray &) = delete;
    DeviceArray &operator=(const DeviceArray &) = delete;
    ~DeviceArray() {
        if (buffer_.device) halide_device_free(nullptr, &buffer_);
    }

    // Grows the allocation to `bytes`; returns its native handle.
    uint64_t reserve(const halide_device_interface_t *device, size_t bytes, const HalidePlatform &platform) {
        const Backend backend = platform.backend;
        if (bytes > capacity_) {
            if (bytes > size_t(INT32_MAX)) throw Error("a device array of " + std::to_string(bytes) + " bytes is over 2 GiB");
            if (buffer_.device) check(halide_device_free(nullptr, &buffer_), backend, "freeing device memory");
            extent_ = {0, int32_t(bytes), 1, 0};
            buffer_.type = {halide_type_uint, 8, 1};
            buffer_.dimensions = 1;
            buffer_.dim = &extent_;
            check(halide_device_malloc(nullptr, &buffer_, device), backend, "allocating device memory");
            capacity_ = bytes;
        }
        return platform.native_device_handle(nullptr, &buffer_);
    }

    // Waits for the device work queued so far (Halide syncs the whole stream).
    void sync(Backend backend) {
        if (buffer_.device) check(halide_device_sync(nullptr, &buffer_), backend, "waiting for the device");
    }

private:
    halide_dimension_t extent_ = {};
    halide_buffer_t buffer_ = {};
    size_t capacity_ = 0;
};

const halide_type_t kF32{halide_type_float, 32, 1};
const halide_type_t kI32{halide_type_int, 32, 1};
const halide_type_t kU8{halide_type_uint, 8, 1};
const halide_type_t kU16{halide_type_uint, 16, 1};
const halide_type_t kI8{halide_type_int, 8, 1};

int round_up(int n, int multiple) {
    return (n + multiple - 1) / multiple * multiple;
}

// Keys per segment of a segmented decode (the x86 pipelines; the others ignore it):
// a whole row while the call's (batch, kv head) rows give every thread two tasks,
// else enough segments that they do, of no fewer than kMinSegmentKeys keys. Each
// segment starts its K and V streams anew: W1 at 32768 cached tokens (8 rows) in
// segments of 2048 keys took 8.0 ms against 7.0 in whole rows (Zen 3).
int decode_segment_keys(int kv_len, int rows) {
    constexpr int kMinSegmentKeys = 1024;
    static const int tasks_wanted = 2 * int(std::max(1u, std::thread::hardware_concurrency()));
    const int segments = (tasks_wanted + rows - 1) / rows;
    const int keys = round_up((kv_len + segments - 1) / segments, layout::kKeySlotPadding);
    return segments == 1 ? keys : std::max(keys, kMinSegmentKeys);
}

// Packs [rows of W1; rows of W2; ...] ([out, in] each, all of one weight type) into
// kWeightPanel-wide panels of that type, zero-padded, and the matching biases
// (zeros where absent).
struct PackedLinear {
    WeightType type;
    halide_type_t element;          // as the pipelines take it
    AlignedVector<float> values;    // fp32 weights
    AlignedVector<uint16_t> bits;   // bf16 or f16 weights
    AlignedVector<int8_t> int8;     // int8 weights
    AlignedVector<float> scales;    // int8: (lane, group, panel), one per kWeightGroup inputs; else one unread 1
    AlignedVector<float> bias;
    int in = 0, panels = 0, groups = 0;

    using Part = std::pair<const WeightView *, const TensorView<float> *>;

    PackedLinear(std::initializer_list<Part> parts, int in_features, const HalidePlatform &platform)
        : type(parts.begin()->first->type),
          element(type == WeightType::f32    ? kF32
                  : type == WeightType::bf16 ? kU16
                  : type == WeightType::int8 ? kI8
                                             : platform.half_element),
          in(in_features),
          groups((in_features + layout::kWeightGroup - 1) / layout::kWeightGroup) {
        switch (type) {
        case WeightType::f32: pack(parts, values); break;
        case WeightType::bf16:
        case WeightType::f16: pack(parts, bits); break;
        case WeightType::int8: pack(parts, int8), pack_scales(parts); break;
        }
        if (type != WeightType::int8) scales.assign(1, 1.f);
    }

    // The int8 groups' scales in the weights' panel order.
    void pack_scales(std::initializer_list<Part> parts) {
        constexpr int P = layout::kWeightPanel;
        scales.assign(static_cast<size_t>(panels) * P * groups, 0.f);
        int row = 0;
        for (const auto &part : parts) {
            const WeightView &w = *part.first;
            for (int r = 0; r < w.shape[0]; ++r, ++row) {
                float *panel = scales.data() + static_cast<size_t>(row / P) * P * groups + row % P;
                for (int g = 0; g < groups; ++g) panel[static_cast<size_t>(g) * P] = w.scales[size_t(r) * groups + g];
            }
        }
    }

    template <typename Element>
    void pack(std::initializer_list<Part> parts, AlignedVector<Element> &packed) {
        constexpr int P = layout::kWeightPanel;
        int out = 0;
        for (const auto &part : parts) out += static_cast<int>(part.first->shape[0]);
        panels = (out + P - 1) / P;
        packed.assign(static_cast<size_t>(panels) * P * in, Element(0));
        bias.assign(static_cast<size_t>(panels) * P, 0.f);
        int row = 0;
        for (const auto &[w, b] : parts) {
            const Element *weights = static_cast<const Element *>(w->data);
            for (int r = 0; r < w->shape[0]; ++r, ++row) {
                const Element *src = weights + static_cast<size_t>(r) * in;
                Element *panel = packed.data() + static_cast<size_t>(row / P) * P * in + row % P;
                for (int i = 0; i < in; ++i) panel[static_cast<size_t>(i) * P] = src[i];
                if (b->data) bias[row] = b->data[r];
            }
        }
    }

    View weight_view() const {
        const void *data = type == WeightType::f32    ? static_cast<const void *>(values.data())
                           : type == WeightType::int8 ? static_cast<const void *>(int8.data())
                                                      : bits.data();
        return View(data, element, {{layout::kWeightPanel, 1}, {in, layout::kWeightPanel},
                                    {panels, int64_t(layout::kWeightPanel) * in}});
    }
    View scale_view() const {
        if (type != WeightType::int8) return View(scales.data(), kF32, {{1, 1}, {1, 1}, {1, 1}});
        return View(scales.data(), kF32, {{layout::kWeightPanel, 1}, {groups, layout::kWeightPanel},
                                          {panels, int64_t(layout::kWeightPanel) * groups}});
    }
    View bias_view() const { return View(bias.data(), kF32, {{int(bias.size()), 1}}); }
};

View rope_table_view(const RopeTables &rope, const std::vector<float> &table) {
    return View(table.data(), kF32, {{rope.head_dim, 1}, {rope.positions, rope.head_dim}});
}

// Where a view's contents must be before the pipeline runs, and after.
enum class Sync { device_only, upload, download };

// Backs `view` with `array` (grown to hold it), uploading the view's host contents
// when asked. Every view starts where its array does: on OpenCL a device handle is
// a cl_mem, not an address to offset.
void place_on_device(View &view, DeviceArray &array, const halide_device_interface_t *device,
                     const HalidePlatform &platform, Sync sync) {
    const Backend backend = platform.backend;
    view.wrap_device(device, array.reserve(device, view.bytes(), platform), backend);
    if (sync == Sync::upload) {
        view.get()->set_host_dirty();
        check(halide_copy_to_device(nullptr, view.get(), device), backend, "copy to device");
    }
}

// The pipeline's weight for every value of a token's q and then k: a per-head
// weight repeated for each head. Ones (unread) without a norm.
std::vector<float> qk_norm_weight(const LayerDims &dims, const Weights &w) {
    std::vector<float> weight(size_t(dims.q_width()) + dims.kv_width(), 1.f);
    if (!w.q_norm.data) return weight;
    const size_t q_size = w.q_norm.numel(), k_size = w.k_norm.numel();
    for (int o = 0; o < dims.q_width(); ++o) weight[o] = w.q_norm.data[o % q_size];
    for (int o = 0; o < dims.kv_width(); ++o) weight[dims.q_width() + o] = w.k_norm.data[o % k_size];
    return weight;
}

class HalideKernels final : public Kernels {
public:
    HalideKernels(const HalidePlatform &platform, const halide_device_interface_t *device, const LayerDims &dims,
                  const Weights &w, const RopeTables &rope)
        : platform_(platform),
          device_(device),
          dims_(dims),
          rope_(rope),
          qkv_({{&w.wq, &w.bq}, {&w.wk, &w.bk}, {&w.wv, &w.bv}}, dims.embed_dim, platform),
          out_({{&w.wo, &w.bo}}, dims.q_width(), platform),
          sinks_(w.sinks.data ? std::vector<float>(w.sinks.data, w.sinks.data + dims.num_heads)
                              : std::vector<float>(dims.num_heads, -std::numeric_limits<float>::infinity())),
          use_sinks_(w.sinks.data ? 1 : 0),
          qk_norm_weight_(qk_norm_weight(dims, w)) {
        if (!platform.pipelines.project[int(qkv_.type)].prefill) {
            throw Error(std::string(backend_name(platform.backend)) + " was built without pipelines for " +
                        std::string(weight_type_name(qkv_.type)) + " weights (CMake GQA_WEIGHT_TYPES)");
        }
        install_halide_hooks();
    }

    void project(const ProjectCall &c) override {
        const int hd = dims_.head_dim, n_kv = dims_.num_kv_heads, tokens = c.batch * c.seq_len;
        View x(c.x, kF32, {{dims_.embed_dim, 1}, {tokens, dims_.embed_dim}});
        View w = qkv_.weight_view(), scales = qkv_.scale_view(), bias = qkv_.bias_view();
        View norm_weight(qk_norm_weight_.data(), kF32, {{int64_t(qk_norm_weight_.size()), 1}});
        View positions(c.positions, kI32, {{tokens, 1}});
        View cos = rope_table_view(rope_, rope_.cos), sin = rope_table_view(rope_, rope_.sin);
        View q(c.q, kF32, {{hd, 1}, {dims_.num_heads, hd}, {tokens, dims_.q_width()}});
        // The call's keys and values, from the projection to the store.
        const size_t new_values = size_t(tokens) * dims_.kv_width();
        if (k_new_.size() < new_values) k_new_.resize(new_values), v_new_.resize(new_values);
        View k_new(k_new_.data(), kF32, {{hd, 1}, {n_kv, hd}, {tokens, dims_.kv_width()}});
        View v_new(v_new_.data(), kF32, {{hd, 1}, {n_kv, hd}, {tokens, dims_.kv_width()}});
        if (device_) {
            place_constant(w, qkv_weights_), place_constant(scales, qkv_scales_), place_constant(bias, qkv_bias_);
            place_constant(norm_weight, qk_norm_weight_array_);
            place_constant(cos, rope_cos_), place_constant(sin, rope_sin_);
            place(x, x_, Sync::upload), place(positions, positions_, Sync::upload);
            place(q, q_, Sync::device_only);
            place(k_new, k_new_array_, Sync::device_only), place(v_new, v_new_array_, Sync::device_only);
        }
        const bool decode = c.seq_len == 1;
        const ModePipelines<ProjectPipeline> &project = platform_.pipelines.project[int(qkv_.type)];
        run((decode ? project.decode : project.prefill)(x.get(), bias.get(), norm_weight.get(), positions.get(),
                                                        cos.get(), sin.get(), rope_.style, rope_.rotary_dim,
                                                        c.qk_norm, c.qk_norm_eps, hd, dims_.num_heads, n_kv, w.get(),
                                                        scales.get(), q.get(), k_new.get(), v_new.get()),
            "gqa_project");
        store_into_cache(k_new, v_new, {.k = nullptr, .v = nullptr, .batch = c.batch, .seq_len = c.seq_len, .kv = c.kv,
                                        .dest_slots = c.dest_slots, .dest_rows = c.dest_rows});
    }

    void store(const StoreCall &c) override {
        const int hd = dims_.head_dim, n_kv = dims_.num_kv_heads, tokens = c.batch * c.seq_len;
        View k_new(c.k, kF32, {{hd, 1}, {n_kv, hd}, {tokens, dims_.kv_width()}});
        View v_new(c.v, kF32, {{hd, 1}, {n_kv, hd}, {tokens, dims_.kv_width()}});
        if (device_) place(k_new, k_new_array_, Sync::upload), place(v_new, v_new_array_, Sync::upload);
        store_into_cache(k_new, v_new, c);
    }

    void project_heads(const ProjectHeadsCall &c) override {
        const int hd = dims_.head_dim, n_kv = dims_.num_kv_heads, d = dims_.embed_dim;
        const int q_inputs = c.split ? dims_.num_heads : 1, kv_inputs = c.split ? n_kv : 1;
        View x_q(c.x_q, kF32, {{d, 1}, {q_inputs, d}, {c.tokens, int64_t(q_inputs) * d}});
        View x_k(c.x_k, kF32, {{d, 1}, {kv_inputs, d}, {c.tokens, int64_t(kv_inputs) * d}});
        View x_v(c.x_v, kF32, {{d, 1}, {kv_inputs, d}, {c.tokens, int64_t(kv_inputs) * d}});
        View w = qkv_.weight_view(), scales = qkv_.scale_view(), bias = qkv_.bias_view();
        View norm_weight(qk_norm_weight_.data(), kF32, {{int64_t(qk_norm_weight_.size()), 1}});
        View q(c.q, kF32, {{hd, 1}, {dims_.num_heads, hd}, {c.tokens, dims_.q_width()}});
        View k(c.k, kF32, {{hd, 1}, {n_kv, hd}, {c.tokens, dims_.kv_width()}});
        View v(c.v, kF32, {{hd, 1}, {n_kv, hd}, {c.tokens, dims_.kv_width()}});
        HookArrays arrays;
        if (device_) {
            place_constant(w, qkv_weights_), place_constant(scales, qkv_scales_), place_constant(bias, qkv_bias_);
            place_constant(norm_weight, qk_norm_weight_array_);
            place(x_q, arrays.in[0], Sync::upload), place(x_k, arrays.in[1], Sync::upload);
            place(x_v, arrays.in[2], Sync::upload);
            place(q, arrays.out[0], Sync::download), place(k, arrays.out[1], Sync::download);
            place(v, arrays.out[2], Sync::download);
        }
        run(platform_.pipelines.project_heads[int(qkv_.type)](
                x_q.get(), x_k.get(), x_v.get(), c.split ? 1 : 0, bias.get(), norm_weight.get(), c.qk_norm,
                c.qk_norm_eps, hd, dims_.num_heads, n_kv, w.get(), scales.get(), q.get(), k.get(), v.get()),
            "gqa_project_heads");
        if (device_) download(q), download(k), download(v);
    }

    void weigh_values(const WeighValuesCall &c) override {
        const int hd = dims_.head_dim, g = dims_.group(), n_kv = dims_.num_kv_heads;
        const int64_t plane = int64_t(c.seq_len) * c.kv_len, row = int64_t(dims_.num_heads) * hd;
        View pattern(c.pattern, kF32, {{c.kv_len, 1}, {c.seq_len, c.kv_len}, {g, plane}, {n_kv, plane * g},
                                       {c.batch, plane * dims_.num_heads}});
        View v(c.v, kF32, {{hd, 1}, {c.kv_len, c.slot_stride}, {n_kv, c.head_stride}, {c.batch, c.row_stride}});
        View z(c.z, kF32, {{hd, 1}, {g, hd}, {n_kv, int64_t(g) * hd}, {c.seq_len, row}, {c.batch, row * c.seq_len}});
        HookArrays arrays;
        if (device_) {
            place(pattern, arrays.in[0], Sync::upload), place(v, arrays.in[1], Sync::upload);
            place(z, arrays.out[0], Sync::download);
        }
        run(platform_.pipelines.weigh_values(pattern.get(), v.get(), z.get()), "gqa_weigh_values");
        if (device_) download(z);
    }

    void head_results(const HeadResultsCall &c) override {
        const int d = dims_.embed_dim;
        View z(c.z, kF32, {{dims_.q_width(), 1}, {c.tokens, dims_.q_width()}});
        View w = out_.weight_view(), scales = out_.scale_view();
        View result(c.result, kF32, {{d, 1}, {dims_.num_heads, d}, {c.tokens, int64_t(dims_.num_heads) * d}});
        HookArrays arrays;
        if (device_) {
            place_constant(w, out_weights_), place_constant(scales, out_scales_);
            place(z, arrays.in[0], Sync::upload), place(result, arrays.out[0], Sync::download);
        }
        run(platform_.pipelines.head_results[int(out_.type)](z.get(), dims_.head_dim, w.get(), scales.get(),
                                                              result.get()),
            "gqa_head_results");
        if (device_) download(result);
    }

    void attend(const AttendCall &c) override {
        // Only a GPU decode reads each row's length (attend_generator.cpp): on the
        // CPU, rows of different lengths go in separate calls.
        const bool uniform = std::all_of(c.kv_lens, c.kv_lens + c.batch, [&](int32_t n) { return n == c.kv_len; });
        if (device_ || uniform) return attend_rows(c);
        const int64_t q_row = int64_t(c.seq_len) * dims_.q_width();
        for (int first = 0; first < c.batch;) {
            int end = first + 1;
            while (end < c.batch && c.kv_lens[end] == c.kv_lens[first]) ++end;
            AttendCall rows = c;
            rows.q = c.q + first * q_row, rows.z = c.z + first * q_row;
            rows.batch = end - first, rows.kv_len = c.kv_lens[first], rows.kv_lens = c.kv_lens + first;
            rows.granules = c.granules + first * c.granule_row_stride;
            attend_rows(rows);
            first = end;
        }
    }

    void attend_rows(const AttendCall &c) {
        const int hd = dims_.head_dim, g = dims_.group(), n_kv = dims_.num_kv_heads;
        const int64_t row = int64_t(dims_.num_heads) * hd;
        View q(c.q, kF32, {{hd, 1}, {g, hd}, {n_kv, int64_t(g) * hd}, {c.seq_len, row}, {c.batch, row * c.seq_len}});
        View z(c.z, kF32, {{hd, 1}, {g, hd}, {n_kv, int64_t(g) * hd}, {c.seq_len, row}, {c.batch, row * c.seq_len}});
        // The pipelines read whole chunks of key slots; the cache's padding covers them.
        // A pool's slots are every row's.
        const int slots = c.pooled ? c.kv->capacity() : round_up(c.kv_len, layout::kKeySlotPadding);
        const int rows = c.pooled ? c.batch : c.kv->batch();
        const int64_t row_stride = c.pooled ? 0 : c.kv->row_stride();
        const CachePipelines &cache = pipelines(*c.kv);
        View k = slots_view(*c.kv, c.kv->k(), slots, rows, row_stride);
        View v = slots_view(*c.kv, c.kv->v(), slots, rows, row_stride);
        View kv_lens(c.kv_lens, kI32, {{c.batch, 1}});
        View granules(c.granules, kI32, {{c.granule_count, 1}, {c.batch, c.granule_row_stride}});
        if (!c.mask && int(no_mask_.size()) < c.kv_len) no_mask_.assign(c.kv_len, 1);
        View mask = c.mask ? View(c.mask, kU8, {{c.kv_len, 1}, {c.seq_len, c.mask_len}, {c.batch, int64_t(c.mask_len) * c.seq_len}})
                           : View(no_mask_.data(), kU8, {{c.kv_len, 1}, {c.seq_len, 0}, {c.batch, 0}});
        const int window = c.window > 0 ? c.window : c.kv_len + 1;
        const int causal = c.causal ? 1 : 0, use_mask = c.mask ? 1 : 0;
        View sinks(sinks_.data(), kF32, {{g, 1}, {n_kv, g}});  // head kvh * g + r
        const int segment_keys = decode_segment_keys(c.kv_len, c.batch * n_kv);
        if (device_) {
            place_constant(sinks, sinks_array_);
            place(q, q_, c.host_io ? Sync::upload : Sync::device_only);
            place(z, z_[pending_], Sync::device_only);
            place(mask, mask_, Sync::upload);
            place(kv_lens, kv_lens_, Sync::upload), place(granules, granules_, Sync::upload);
            KvArrays kv = kv_arrays(*c.kv);
            place(k, kv.k, Sync::device_only), place(v, kv.v, Sync::device_only);
            // What the recording forward takes to the host now, copy_to_host need not.
            pending_z_ = c.host_io ? HostRegion{} : HostRegion{c.z, z.bytes()};
            pending_pattern_ = {};
        }
        if (c.pattern) {
            const int64_t plane = int64_t(c.seq_len) * c.kv_len;
            auto weights_view = [&](float *data) {
                return View(data, kF32, {{c.kv_len, 1}, {c.seq_len, c.kv_len}, {g, plane}, {n_kv, plane * g},
                                         {c.batch, plane * dims_.num_heads}});
            };
            View pattern = weights_view(c.pattern), scores = weights_view(c.scores);
            if (device_) {
                place(pattern, pattern_[pending_], Sync::device_only), place(scores, scores_, Sync::device_only);
                if (!c.host_io) pending_pattern_ = {c.pattern, pattern.bytes()};
            }
            run(cache.attend_pattern(q.get(), mask.get(), c.kv_len, use_mask, causal, window, c.scale, c.softcap,
                                     use_sinks_, sinks.get(), segment_keys, kv_lens.get(), granules.get(), k.get(),
                                     v.get(), z.get(), pattern.get(), scores.get()),
                "gqa_attend_pattern");
            if (device_ && c.host_io) download(pattern), download(scores);
        } else {
            auto *pipeline = c.seq_len == 1 ? cache.attend.decode : cache.attend.prefill;
            run(pipeline(q.get(), mask.get(), c.kv_len, use_mask, causal, window, c.scale, c.softcap, use_sinks_,
                         sinks.get(), segment_keys, kv_lens.get(), granules.get(), k.get(), v.get(), z.get()),
                "gqa_attend");
        }
        if (device_ && c.host_io) download(z);
    }

    void output(const OutputCall &c) override {
        const int tokens = c.batch * c.seq_len;
        View z(c.z, kF32, {{dims_.q_width(), 1}, {tokens, dims_.q_width()}});
        View w = out_.weight_view(), scales = out_.scale_view(), bias = out_.bias_view();
        View out(c.out, kF32, {{dims_.embed_dim, 1}, {tokens, dims_.embed_dim}});
        if (device_) {
            place_constant(w, out_weights_), place_constant(scales, out_scales_), place_constant(bias, out_bias_);
            place(z, z_[pending_], c.z_from_host ? Sync::upload : Sync::device_only);
            place(out, out_array_, Sync::download);
        }
        const ModePipelines<OutputPipeline> &output = platform_.pipelines.output[int(out_.type)];
        auto *pipeline = c.seq_len == 1 ? output.decode : output.prefill;
        run(pipeline(z.get(), bias.get(), w.get(), scales.get(), out.get()), "gqa_output");
        if (device_) download(out);
    }

    bool supports_cache(CacheType type) const override {
        return platform_.pipelines.cache[int(type)].attend.prefill != nullptr;
    }

    void copy_to_host(HostArray array) override {
        if (!device_) return;
        switch (array) {
        case HostArray::kv_cache:
            if (cache_.host_k) {
                download_bytes(cache_.host_k, cache_k_, cache_.bytes);
                download_bytes(cache_.host_v, cache_v_, cache_.bytes);
            }
            return;
        case HostArray::z: return download_bytes(last_z_.host, z_[1 - pending_], last_z_.bytes);
        case HostArray::pattern: return download_bytes(last_pattern_.host, pattern_[1 - pending_], last_pattern_.bytes);
        }
    }

    void commit() override {
        if (!device_) return;
        last_z_ = pending_z_, last_pattern_ = pending_pattern_;
        pending_ = 1 - pending_;
    }

    void finish() override {
        if (device_) z_[pending_].sync(platform_.backend);
    }

private:
    struct KvArrays {
        DeviceArray &k, &v;
    };
    // The host cache the device copy mirrors; a cache of another version is uploaded.
    struct MirroredCache {
        void *host_k = nullptr, *host_v = nullptr;
        uint64_t version = 0;
        size_t bytes = 0;
    };
    struct HostRegion {
        void *host = nullptr;
        size_t bytes = 0;
    };

    // A hook stage's device memory, for its one call.
    struct HookArrays {
        DeviceArray in[3], out[3];
    };

    const CachePipelines &pipelines(const KvCache &kv) const {
        return platform_.pipelines.cache[int(kv.type())];
    }

    // The store pipeline: keys and values (d, kv head, token), on the device where
    // there is one, into the call's slots of the cache.
    void store_into_cache(View &k_new, View &v_new, const StoreCall &c) {
        const int tokens = c.batch * c.seq_len;
        View dest_slots(c.dest_slots, kI32, {{tokens, 1}}), dest_rows(c.dest_rows, kI32, {{tokens, 1}});
        // The whole cache: the store writes this call's slots in place.
        View k = whole_cache_view(*c.kv, c.kv->k()), v = whole_cache_view(*c.kv, c.kv->v());
        if (device_) {
            place(dest_slots, dest_slots_, Sync::upload), place(dest_rows, dest_rows_, Sync::upload);
            KvArrays kv = kv_arrays(*c.kv);
            place(k, kv.k, Sync::device_only), place(v, kv.v, Sync::device_only);
        }
        const ModePipelines<StorePipeline> &store = pipelines(*c.kv).store;
        run((c.seq_len == 1 ? store.decode : store.prefill)(k_new.get(), v_new.get(), dest_slots.get(),
                                                            dest_rows.get(), k.get(), v.get()),
            "gqa_store");
    }

    // Slots [0, slots) of every kv head of `rows` rows of one of the cache's arrays,
    // as the pipelines see them: (slot element, slot, kv head, row).
    View slots_view(const KvCache &kv, const void *array, int slots, int rows, int64_t row_stride) const {
        halide_type_t element = kF32;
        switch (kv.type()) {
        case CacheType::f32: break;
        case CacheType::f16: element = platform_.half_element; break;
        case CacheType::bf16: element = kU16; break;
        case CacheType::int8: element = kI8; break;
        }
        return View(array, element,
                    {{kv.slot_stride(), 1}, {slots, kv.slot_stride()}, {kv.num_kv_heads(), kv.head_stride()},
                     {rows, row_stride}});
    }

    View whole_cache_view(const KvCache &kv, const void *array) const {
        return slots_view(kv, array, kv.capacity(), kv.batch(), kv.row_stride());
    }

    void run(int status, const char *pipeline) const {
        if (status != 0) check(status, platform_.backend, (std::string("pipeline ") + pipeline).c_str());
    }

    // Backs `view` with `array`, uploading its host contents when asked. The array
    // grows to hold the view.
    void place(View &view, DeviceArray &array, Sync sync) {
        place_on_device(view, array, device_, platform_, sync);
    }

    // Weights and tables: uploaded the first time only.
    void place_constant(View &view, DeviceArray &array) {
        const bool first = uploaded_.insert(&array).second;
        place(view, array, first ? Sync::upload : Sync::device_only);
    }

    void download(View &view) {
        check(halide_copy_to_host(nullptr, view.get()), platform_.backend, "copy to host");
    }

    void download_bytes(void *host, DeviceArray &array, size_t bytes) {
        if (!host || bytes == 0) return;
        View view(host, kU8, {{int(bytes), 1}});
        place(view, array, Sync::device_only);
        view.get()->set_device_dirty();
        download(view);
    }

    void upload_bytes(const void *host, DeviceArray &array, size_t bytes) {
        View view(host, kU8, {{int(bytes), 1}});
        place(view, array, Sync::upload);
    }

    // The device copy of the layer's KV cache, or scratch standing in for one.
    KvArrays kv_arrays(const KvCache &kv) {
        const size_t bytes = kv.bytes();
        if (kv.version() == 0) {
            // Sized for the whole store now: attend's views reach the padded slots past
            // what project's views cover, and growing the array then would drop the
            // keys and values project just wrote.
            scratch_k_.reserve(device_, bytes, platform_);
            scratch_v_.reserve(device_, bytes, platform_);
            return {scratch_k_, scratch_v_};
        }
        if (kv.version() != cache_.version) {
            upload_bytes(kv.k(), cache_k_, bytes);
            upload_bytes(kv.v(), cache_v_, bytes);
            // The layer's own memory, which copy_to_host later writes back into.
            cache_ = {const_cast<void *>(kv.k()), const_cast<void *>(kv.v()), kv.version(), bytes};
        }
        return {cache_k_, cache_v_};
    }

    const HalidePlatform &platform_;
    const halide_device_interface_t *device_;  // null: the CPU, host memory only
    LayerDims dims_;
    const RopeTables &rope_;
    PackedLinear qkv_, out_;
    std::vector<float> sinks_;      // per query head; -inf: none
    int use_sinks_;
    std::vector<float> qk_norm_weight_;
    std::vector<uint8_t> no_mask_;  // all ones: the mask input when no mask is given
    AlignedVector<float> k_new_, v_new_;  // a call's keys and values, before the store

    DeviceArray qkv_weights_, qkv_scales_, qkv_bias_, out_weights_, out_scales_, out_bias_;
    DeviceArray rope_cos_, rope_sin_, sinks_array_;
    DeviceArray qk_norm_weight_array_;
    DeviceArray x_, positions_, mask_, q_, k_new_array_, v_new_array_, out_array_;
    DeviceArray dest_slots_, dest_rows_, kv_lens_, granules_;
    // z and the pattern: a forward writes pair `pending_`; the other holds the last
    // committed forward's (Kernels::commit).
    DeviceArray z_[2], pattern_[2], scores_;
    int pending_ = 0;
    DeviceArray cache_k_, cache_v_, scratch_k_, scratch_v_;
    std::set<const DeviceArray *> uploaded_;
    MirroredCache cache_;
    HostRegion pending_z_, pending_pattern_, last_z_, last_pattern_;
};

// The instruction set of the variant the multitarget dispatch runs on this CPU.
std::string halide_cpu_isa() {
    if (const char *isa = chosen_isa.load()) return isa;
    // Either no pipeline has run yet or the baseline did: a one-token RoPE makes
    // the dispatch decide, then no answer means the baseline.
    RopeTables rope;
    rope.head_dim = 2, rope.positions = 1, rope.rotary_dim = 2;
    rope.cos = {1.f, 1.f}, rope.sin = {0.f, 0.f};
    const float x[2] = {0.f, 0.f};
    float out[2];
    const int32_t position = 0;
    run_halide_rope(halide_platform(), nullptr, rope,
                    {.x = x, .tokens = 1, .heads = 1, .head_dim = 2, .positions = &position, .out = out});
    if (const char *isa = chosen_isa.load()) return isa;
    const uint64_t no_features[(halide_target_feature_end + 63) / 64] = {};
    return halide_platform().isa_name(no_features);
}

}  // namespace

// The standalone RoPE on a platform's pipeline: on host memory, or (device set)
// through temporary device arrays, inputs up and the result back down.
void run_halide_rope(const HalidePlatform &platform, const halide_device_interface_t *device, const RopeTables &rope,
              const RopeCall &c) {
    install_halide_hooks();
    DeviceArray x_array, positions_array, cos_array, sin_array, out_array;  // outlive the views
    View x(c.x, kF32, {{c.head_dim, 1}, {c.heads, c.head_dim}, {c.tokens, int64_t(c.heads) * c.head_dim}});
    View out(c.out, kF32, {{c.head_dim, 1}, {c.heads, c.head_dim}, {c.tokens, int64_t(c.heads) * c.head_dim}});
    View positions(c.positions, kI32, {{c.tokens, 1}});
    View cos = rope_table_view(rope, rope.cos), sin = rope_table_view(rope, rope.sin);
    if (device) {
        for (auto [view, array] : {std::pair{&x, &x_array}, {&positions, &positions_array}, {&cos, &cos_array},
                                   {&sin, &sin_array}}) {
            place_on_device(*view, *array, device, platform, Sync::upload);
        }
        place_on_device(out, out_array, device, platform, Sync::download);
    }
    check(platform.pipelines.rope(x.get(), positions.get(), cos.get(), sin.get(), rope.style, rope.rotary_dim, out.get()),
          platform.backend, "pipeline gqa_rope");
    if (device) check(halide_copy_to_host(nullptr, out.get()), platform.backend, "copy to host");
}

std::unique_ptr<Kernels> make_halide_kernels(const HalidePlatform &platform, const halide_device_interface_t *device,
                                             const LayerDims &dims, const Weights &weights, const RopeTables &rope) {
    return std::make_unique<HalideKernels>(platform, device, dims, weights, rope);
}

BackendEntry halide_cpu_backend_entry(Backend backend) {
    return {.backend = backend,
            .unavailable_reason = [] { return std::string(); },
            .isa = halide_cpu_isa,
            .make_kernels =
                [](const LayerDims &dims, const Weights &weights, const RopeTables &rope) {
                    return make_halide_kernels(halide_platform(), nullptr, dims, weights, rope);
                },
            .rope = [](const RopeTables &rope, const RopeCall &call) {
                run_halide_rope(halide_platform(), nullptr, rope, call);
            }};
}

}  // namespace gqa::detail
