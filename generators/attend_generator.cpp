// Grouped scores, masked softmax and weighted values against the KV cache.
#include "attention_algorithm.h"
#include "half_widening.h"
#include "inputs.h"
#include "knob_params.h"
#include "layout.h"

namespace gqa {

using namespace Halide;

// The softmax knob's values by name (schedules/knobs.json).
std::map<std::string, schedules::Softmax> softmax_names() {
    std::map<std::string, schedules::Softmax> names;
    for (size_t n = 0; n < std::size(schedules::kSoftmaxNames); ++n) {
        names[schedules::kSoftmaxNames[n]] = schedules::Softmax(n);
    }
    return names;
}

class AttendGenerator : public Generator<AttendGenerator>, public KnobParams {
public:
    GeneratorParam<bool> with_pattern{"with_pattern", false};
    GeneratorParam<schedules::Softmax> softmax{"softmax", schedules::Softmax::automatic, softmax_names()};

    Input<Buffer<float, 5>> q{"q"};              // (d, r, kv head, query, batch)
    Input<Buffer<uint8_t, 3>> mask{"mask"};      // (slot, query, batch), read when use_mask != 0
    Input<int> kv_len{"kv_len"};
    Input<int> use_mask{"use_mask"};
    Input<int> causal{"causal"};
    Input<int> window{"window"};
    Input<float> scale{"scale"};
    Input<float> softcap{"softcap"};
    Input<int> use_sinks{"use_sinks"};
    Input<Buffer<float, 2>> sinks{"sinks"};      // (r, kv head): a logit per query head, read when use_sinks
    // Keys per segment where decode runs in segments (schedules::segmented_decode), a
    // positive multiple of layout::kKeySlotPadding; unread elsewhere.
    Input<int> segment_keys{"segment_keys"};
    // Valid key slots per batch row (kv_len is the largest), read by GPU decode
    // only: elsewhere every row holds kv_len. And where each granule of a row's key
    // slots lies in the cache: (granule, batch), see layout::kCacheGranule.
    Input<Buffer<int32_t, 1>> kv_lens{"kv_lens"};
    Input<Buffer<int32_t, 2>> granule_offsets{"granule_offsets"};
    Output<Buffer<float, 5>> z{"z"};  // (d, r, kv head, query, batch)

    // Added here for their cache_type; they come after the inputs above.
    void configure() {
        const Type element = cache_storage(get_target());
        k_cache_ = add_input<Buffer<>>("k_cache", element, 4);  // (d, slot, kv head, batch)
        v_cache_ = add_input<Buffer<>>("v_cache", element, 4);
        if (with_pattern) {
            // (slot, query, r, kv head, batch): the weights and the scores they came from.
            pattern_ = add_output<Buffer<float, 5>>("pattern");
            scores_ = add_output<Buffer<float, 5>>("scores");
        }
    }

    void generate() {
        const bool autoscheduled = get_auto_schedule();
        algo::AttendInputs in{input_func(q, autoscheduled),
                              input_func(mask, autoscheduled),
                              input_func(*k_cache_, autoscheduled),
                              input_func(*v_cache_, autoscheduled),
                              q.dim(0).extent(),
                              q.dim(1).extent(),
                              q.dim(2).extent(),
                              q.dim(3).extent(),
                              kv_len,
                              q.dim(4).extent(),
                              use_mask,
                              scale,
                              softcap,
                              causal,
                              window,
                              input_func(sinks, autoscheduled),
                              use_sinks,
                              link_half_widening(*get_externs_map(), get_target()),
                              cache_type};
        // Rows of different lengths meet in a GPU decode only. A CPU decode with the
        // loop bounds read from memory lost its P.V accumulators to memory (W1 core
        // decode at 8192 keys 1.05 -> 1.27 ms, SPR AVX-512), so the CPU runtime
        // calls it per length instead; on pocl the GPU prefill read the lengths
        // wrong, in every row.
        if (mode == PipelineMode::decode && get_target().has_gpu_feature()) {
            in.row_kv_len = input_func(kv_lens, autoscheduled);
        } else {
            Var row("row");
            in.row_kv_len(row) = kv_len;
        }
        in.granule_offset = input_func(granule_offsets, autoscheduled);
        in.granules = granule_offsets.dim(0).extent();
        in.cache_slots = k_cache_->dim(1).extent();
        // Slots lie back to back (runtime/kv_cache.h), so a schedule that fixes the
        // head dim fixes every row offset too.
        for (Input<Buffer<>> *cache : {k_cache_, v_cache_}) cache->dim(1).set_stride(slot_elements(q.dim(0).extent()));
        in.reads_within_prefix = mode == PipelineMode::decode && !get_target().has_gpu_feature() &&
                                 formulation() == schedules::Softmax::three_pass;
        const schedules::Knobs tuned = attend_knobs();
        if (formulation() == schedules::Softmax::three_pass) {
            Func pattern_func, scores_func;
            if (pattern_) pattern_func = *pattern_, scores_func = *scores_;
            // The pattern is normalized over whole rows, so its pipeline has no segments.
            const bool segmented = mode == PipelineMode::decode && !pattern_ && schedules::segmented_decode(get_target());
            attend_ = algo::define_attend(in, z, pattern_ ? &pattern_func : nullptr, pattern_ ? &scores_func : nullptr,
                                          segmented ? Expr(segment_keys) : Expr());
        } else {
            const int split_blocks =
                formulation() == schedules::Softmax::split ? schedules::split_blocks(get_target(), tuned) : 0;
            blocked_ = algo::define_attend_blocked(in, z, schedules::key_block(get_target(), tuned), split_blocks);
        }
        // So that a schedule fixing the head dim also fixes z's row length, and with it
        // the offsets of the P.V accumulators of several heads.
        z.dim(0).set_extent(q.dim(0).extent());
    }

    void schedule() {
        const int queries = mode == PipelineMode::decode ? 1 : 512;
        q.set_estimates({{0, 64}, {0, 4}, {0, 8}, {0, queries}, {0, 1}});
        const int slot_elements = estimated_slot_elements();
        k_cache_->set_estimates({{0, slot_elements}, {0, 2048}, {0, 8}, {0, 1}});
        v_cache_->set_estimates({{0, slot_elements}, {0, 2048}, {0, 8}, {0, 1}});
        mask.set_estimates({{0, 2048}, {0, queries}, {0, 1}});
        kv_len.set_estimate(2048);
        use_mask.set_estimate(0);
        causal.set_estimate(1);
        window.set_estimate(1 << 30);
        scale.set_estimate(0.125f);
        softcap.set_estimate(0.f);
        use_sinks.set_estimate(0);
        segment_keys.set_estimate(2048);
        kv_lens.set_estimates({{0, 1}});
        granule_offsets.set_estimates({{0, 2048 / layout::kCacheGranule}, {0, 1}});
        sinks.set_estimates({{0, 4}, {0, 8}});
        z.set_estimates({{0, 64}, {0, 4}, {0, 8}, {0, queries}, {0, 1}});
        if (pattern_) {
            for (Output<Buffer<float, 5>> *out : {pattern_, scores_}) {
                out->set_estimates({{0, 2048}, {0, queries}, {0, 4}, {0, 8}, {0, 1}});
            }
        }
        if (get_auto_schedule()) return;
        if (formulation() == schedules::Softmax::three_pass) {
            schedules::schedule_attend(attend_, get_target(), attend_knobs());
        } else {
            schedules::schedule_attend(blocked_, get_target(), attend_knobs());
        }
    }

private:
    Input<Buffer<>> *k_cache_ = nullptr, *v_cache_ = nullptr;
    Output<Buffer<float, 5>> *pattern_ = nullptr, *scores_ = nullptr;
    algo::Attend attend_;
    algo::AttendBlocked blocked_;

    // The shared knobs plus the softmax; a tuned choice holds for the variant it was
    // tuned on (knob_isa) only.
    schedules::Knobs attend_knobs() const {
        schedules::Knobs k = knobs(get_target());
        if (knobs_apply(get_target())) k.softmax = softmax;
        return k;
    }

    schedules::Softmax formulation() const {
        return schedules::attend_formulation(get_target(), attend_knobs(), with_pattern);
    }
};

}  // namespace gqa

HALIDE_REGISTER_GENERATOR(gqa::AttendGenerator, gqa_attend)
