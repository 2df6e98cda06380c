// The call's keys and values into the KV cache, in its element type.
#include "attention_algorithm.h"
#include "inputs.h"
#include "knob_params.h"
#include "layout.h"

namespace gqa {

using namespace Halide;

class StoreGenerator : public Generator<StoreGenerator>, public KnobParams {
public:
    Input<Buffer<float, 3>> k_new{"k_new"};  // (d, kv head, token): the project pipeline's k
    Input<Buffer<float, 3>> v_new{"v_new"};
    // Where each token goes: a slot of a row of the cache.
    Input<Buffer<int32_t, 1>> dest_slots{"dest_slots"};
    Input<Buffer<int32_t, 1>> dest_rows{"dest_rows"};

    // k, v: (d, slot, kv head, batch), the whole cache, of cache_type; added here for that type.
    void configure() {
        cache_element_ = cache_storage(get_target());
        k_ = add_output<Buffer<>>("k", cache_element_, 4);
        v_ = add_output<Buffer<>>("v", cache_element_, 4);
    }

    void generate() {
        const bool autoscheduled = get_auto_schedule();
        store_ = algo::define_store(input_func(k_new, autoscheduled), input_func(v_new, autoscheduled),
                                    k_new.dim(2).extent(), input_func(dest_slots, autoscheduled),
                                    input_func(dest_rows, autoscheduled), k_new.dim(0).extent(), *k_, *v_,
                                    cache_type, cache_element_);
    }

    void schedule() {
        const int tokens = mode == PipelineMode::decode ? 1 : 512;
        k_new.set_estimates({{0, 64}, {0, 8}, {0, tokens}});
        v_new.set_estimates({{0, 64}, {0, 8}, {0, tokens}});
        dest_slots.set_estimates({{0, tokens}});
        dest_rows.set_estimates({{0, tokens}});
        const int slot_elements = estimated_slot_elements();
        k_->set_estimates({{0, slot_elements}, {0, 4096}, {0, 8}, {0, 1}});
        v_->set_estimates({{0, slot_elements}, {0, 4096}, {0, 8}, {0, 1}});
        if (get_auto_schedule()) return;
        schedules::schedule_store(store_, get_target(), knobs(get_target()));
    }

private:
    Halide::Type cache_element_;
    Output<Buffer<>> *k_ = nullptr, *v_ = nullptr;
    algo::Store store_;
};

}  // namespace gqa

HALIDE_REGISTER_GENERATOR(gqa::StoreGenerator, gqa_store)
