// Output projection: out = z Wo^T + bo.
#include "attention_algorithm.h"
#include "half_widening.h"
#include "inputs.h"
#include "knob_params.h"
#include "layout.h"

namespace gqa {

using namespace Halide;

class OutputGenerator : public Generator<OutputGenerator>, public KnobParams {
public:
    Input<Buffer<float, 2>> z{"z"};        // (n_h * hd, token)
    Input<Buffer<float, 1>> b_o{"b_o"};    // (embed)
    Output<Buffer<float, 2>> out{"out"};  // (embed, token)

    // w_o, the packed Wo panels of weight_type: added here for its type, after b_o;
    // then the int8 scales, as in the project pipeline.
    void configure() {
        w_o_ = add_input<Buffer<>>("w_o", weight_storage(get_target()), 3);
        w_scales_ = add_input<Buffer<float, 3>>("w_scales");
    }

    void generate() {
        const bool autoscheduled = get_auto_schedule();
        linear_ = algo::define_linear("output_proj", input_func(z, autoscheduled), input_func(*w_o_, autoscheduled),
                                      input_func(*w_scales_, autoscheduled), weight_type,
                                      link_half_widening(*get_externs_map(), get_target()), input_func(b_o, autoscheduled),
                                      z.dim(0).extent(), z.dim(1).extent(), layout::kWeightPanel,
                                      schedules::gemm_token_group(get_target(), knobs(get_target())),
                                      schedules::scale_group_sums(get_target(), knobs(get_target()), weight_type));
        out(linear_.o, linear_.m) = linear_.result(linear_.o, linear_.m);
    }

    void schedule() {
        const int tokens = mode == PipelineMode::decode ? 1 : 512;
        z.set_estimates({{0, 2048}, {0, tokens}});
        w_o_->set_estimates({{0, layout::kWeightPanel}, {0, 2048}, {0, 32}});
        w_scales_->set_estimates({{0, layout::kWeightPanel}, {0, 2048 / layout::kWeightGroup}, {0, 32}});
        b_o.set_estimates({{0, 2048}});
        out.set_estimates({{0, 2048}, {0, tokens}});
        if (get_auto_schedule()) return;
        schedules::schedule_output(linear_, out, get_target(), knobs(get_target()));
    }

private:
    Input<Buffer<>> *w_o_ = nullptr;
    Input<Buffer<float, 3>> *w_scales_ = nullptr;
    algo::Linear linear_;
};

}  // namespace gqa

HALIDE_REGISTER_GENERATOR(gqa::OutputGenerator, gqa_output)
