// Rotary position embedding on its own: the same rotate() the projection uses,
// exposed for the conformance vectors and for callers that rotate elsewhere.
#include "attention_algorithm.h"
#include "inputs.h"
#include "knob_params.h"
#include "layout.h"

namespace gqa {

using namespace Halide;

class RopeGenerator : public Generator<RopeGenerator>, public KnobParams {
public:
    Input<Buffer<float, 3>> x{"x"};                    // (d, head, token)
    Input<Buffer<int32_t, 1>> positions{"positions"};  // (token)
    Input<Buffer<float, 2>> rope_cos{"rope_cos"};      // (d, position)
    Input<Buffer<float, 2>> rope_sin{"rope_sin"};
    Input<int> rope_style{"rope_style"};
    Input<int> rotary_dim{"rotary_dim"};
    Output<Buffer<float, 3>> out{"out"};

    void generate() {
        Var d("d"), h("h"), m("m");
        const bool autoscheduled = get_auto_schedule();
        const Func x_in = input_func(x, autoscheduled), positions_in = input_func(positions, autoscheduled);
        const Expr pos = clamp(positions_in(m), 0, rope_cos.dim(1).extent() - 1);
        out(d, h, m) = algo::rotate([&](Expr dd) { return x_in(dd, h, m); }, d, x.dim(0).extent(), pos,
                                    input_func(rope_cos, autoscheduled), input_func(rope_sin, autoscheduled),
                                    rope_style, rotary_dim);
    }

    void schedule() {
        x.set_estimates({{0, 128}, {0, 32}, {0, 2048}});
        positions.set_estimates({{0, 2048}});
        rope_cos.set_estimates({{0, 128}, {0, 4096}});
        rope_sin.set_estimates({{0, 128}, {0, 4096}});
        rope_style.set_estimate(layout::kRopeInterleaved);
        rotary_dim.set_estimate(128);
        out.set_estimates({{0, 128}, {0, 32}, {0, 2048}});
        if (get_auto_schedule()) return;
        schedules::schedule_rope(out, get_target(), knobs(get_target()));
    }
};

}  // namespace gqa

HALIDE_REGISTER_GENERATOR(gqa::RopeGenerator, gqa_rope)
