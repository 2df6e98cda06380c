// Fused Q/K/V projection + RoPE: q, and the call's k and v for the store pipeline.
#include "attention_algorithm.h"
#include "half_widening.h"
#include "inputs.h"
#include "knob_params.h"
#include "layout.h"

namespace gqa {

using namespace Halide;

class ProjectGenerator : public Generator<ProjectGenerator>, public KnobParams {
public:
    Input<Buffer<float, 2>> x{"x"};                    // (embed, token)
    Input<Buffer<float, 1>> b_qkv{"b_qkv"};            // (n_h + 2 n_kv) * hd
    Input<Buffer<float, 1>> qk_norm_weight{"qk_norm_weight"};  // (n_h + n_kv) * hd: q's, then k's
    Input<Buffer<int32_t, 1>> positions{"positions"};  // (token)
    Input<Buffer<float, 2>> rope_cos{"rope_cos"};      // (d, position)
    Input<Buffer<float, 2>> rope_sin{"rope_sin"};
    Input<int> rope_style{"rope_style"};
    Input<int> rotary_dim{"rotary_dim"};
    Input<int> qk_norm{"qk_norm"};  // layout::kQkNorm*
    Input<float> qk_norm_eps{"qk_norm_eps"};
    Input<int> head_dim{"head_dim"};
    Input<int> num_heads{"num_heads"};
    Input<int> num_kv_heads{"num_kv_heads"};
    Output<Buffer<float, 3>> q{"q"};  // (d, head, token)
    Output<Buffer<float, 3>> k{"k"};  // (d, kv head, token), rotated
    Output<Buffer<float, 3>> v{"v"};  // (d, kv head, token)

    // w_qkv, the packed [Wq; Wk; Wv] panels of weight_type: added here for its type,
    // after the inputs above; then the int8 scales in the same panels, which the
    // other types take (and ignore) too, so every project pipeline has one signature.
    void configure() {
        w_qkv_ = add_input<Buffer<>>("w_qkv", weight_storage(get_target()), 3);
        w_scales_ = add_input<Buffer<float, 3>>("w_scales");
    }

    void generate() {
        const bool autoscheduled = get_auto_schedule();
        algo::RopeInputs rope{input_func(rope_cos, autoscheduled), input_func(rope_sin, autoscheduled),
                              rope_cos.dim(1).extent(), input_func(positions, autoscheduled), rope_style, rotary_dim};
        algo::QkNormInputs norm{input_func(qk_norm_weight, autoscheduled), qk_norm, qk_norm_eps};
        // Outputs cannot be measured before they are defined, so the shape comes in as scalars.
        algo::ProjectShape shape{x.dim(0).extent(), head_dim, num_heads, num_kv_heads, x.dim(1).extent()};
        const int token_group = schedules::gemm_token_group(get_target(), knobs(get_target()));
        project_ = algo::define_project(input_func(x, autoscheduled), input_func(*w_qkv_, autoscheduled),
                                        input_func(*w_scales_, autoscheduled), weight_type,
                                        link_half_widening(*get_externs_map(), get_target()),
                                        input_func(b_qkv, autoscheduled), norm, rope, shape, layout::kWeightPanel,
                                        token_group,
                                        schedules::scale_group_sums(get_target(), knobs(get_target()), weight_type),
                                        q, k, v);
    }

    void schedule() {
        const int tokens = mode == PipelineMode::decode ? 1 : 512;
        x.set_estimates({{0, 2048}, {0, tokens}});
        w_qkv_->set_estimates({{0, layout::kWeightPanel}, {0, 2048}, {0, 48}});
        w_scales_->set_estimates({{0, layout::kWeightPanel}, {0, 2048 / layout::kWeightGroup}, {0, 48}});
        b_qkv.set_estimates({{0, 3072}});
        qk_norm_weight.set_estimates({{0, 2560}});
        positions.set_estimates({{0, tokens}});
        rope_cos.set_estimates({{0, 64}, {0, 4096}});
        rope_sin.set_estimates({{0, 64}, {0, 4096}});
        rope_style.set_estimate(layout::kRopeInterleaved);
        rotary_dim.set_estimate(64);
        qk_norm.set_estimate(layout::kQkNormNone);
        qk_norm_eps.set_estimate(1e-6f);
        head_dim.set_estimate(64);
        num_heads.set_estimate(32);
        num_kv_heads.set_estimate(8);
        q.set_estimates({{0, 64}, {0, 32}, {0, tokens}});
        k.set_estimates({{0, 64}, {0, 8}, {0, tokens}});
        v.set_estimates({{0, 64}, {0, 8}, {0, tokens}});
        if (get_auto_schedule()) return;
        schedules::schedule_project(project_, get_target(), knobs(get_target()));
    }

private:
    Input<Buffer<>> *w_qkv_ = nullptr;
    Input<Buffer<float, 3>> *w_scales_ = nullptr;
    algo::Project project_;
};

}  // namespace gqa

HALIDE_REGISTER_GENERATOR(gqa::ProjectGenerator, gqa_project)
