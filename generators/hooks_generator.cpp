// The recording pipelines of TransformerLens' hooks: the projection before RoPE
// from one input per head, each head's share of the output projection, and values
// weighed by a given pattern. One instance each, for any number of tokens; the
// layer runs them only when a forward records or patches a hook.
#include "attention_algorithm.h"
#include "half_widening.h"
#include "inputs.h"
#include "knob_params.h"
#include "layout.h"

namespace gqa {

using namespace Halide;

class ProjectHeadsGenerator : public Generator<ProjectHeadsGenerator>, public KnobParams {
public:
    // (embed, input head, token) each: one input per query head, per kv head for k
    // and for v; with split_inputs 0 the three are one x, input head extent 1.
    Input<Buffer<float, 3>> x_q{"x_q"};
    Input<Buffer<float, 3>> x_k{"x_k"};
    Input<Buffer<float, 3>> x_v{"x_v"};
    Input<int> split_inputs{"split_inputs"};
    Input<Buffer<float, 1>> b_qkv{"b_qkv"};                    // (n_h + 2 n_kv) * hd
    Input<Buffer<float, 1>> qk_norm_weight{"qk_norm_weight"};  // (n_h + n_kv) * hd: q's, then k's
    Input<int> qk_norm{"qk_norm"};                             // layout::kQkNorm*
    Input<float> qk_norm_eps{"qk_norm_eps"};
    Input<int> head_dim{"head_dim"};
    Input<int> num_heads{"num_heads"};
    Input<int> num_kv_heads{"num_kv_heads"};
    Output<Buffer<float, 3>> q{"q"};  // (d, head, token), before RoPE
    Output<Buffer<float, 3>> k{"k"};  // (d, kv head, token), before RoPE
    Output<Buffer<float, 3>> v{"v"};  // (d, kv head, token)

    // The packed weights and int8 scales, as the project pipeline takes them.
    void configure() {
        w_qkv_ = add_input<Buffer<>>("w_qkv", weight_storage(get_target()), 3);
        w_scales_ = add_input<Buffer<float, 3>>("w_scales");
    }

    void generate() {
        const bool autoscheduled = get_auto_schedule();
        algo::QkNormInputs norm{input_func(qk_norm_weight, autoscheduled), qk_norm, qk_norm_eps};
        algo::ProjectShape shape{x_q.dim(0).extent(), head_dim, num_heads, num_kv_heads, x_q.dim(2).extent()};
        project_ = algo::define_project_heads(
            input_func(x_q, autoscheduled), input_func(x_k, autoscheduled), input_func(x_v, autoscheduled),
            split_inputs, input_func(*w_qkv_, autoscheduled), input_func(*w_scales_, autoscheduled), weight_type,
            link_half_widening(*get_externs_map(), get_target()), input_func(b_qkv, autoscheduled), norm, shape,
            layout::kWeightPanel, q, k, v);
    }

    void schedule() {
        for (Input<Buffer<float, 3>> *x : {&x_q, &x_k, &x_v}) x->set_estimates({{0, 2048}, {0, 32}, {0, 64}});
        w_qkv_->set_estimates({{0, layout::kWeightPanel}, {0, 2048}, {0, 48}});
        w_scales_->set_estimates({{0, layout::kWeightPanel}, {0, 2048 / layout::kWeightGroup}, {0, 48}});
        split_inputs.set_estimate(1);
        b_qkv.set_estimates({{0, 3072}});
        qk_norm_weight.set_estimates({{0, 2560}});
        qk_norm.set_estimate(layout::kQkNormNone);
        qk_norm_eps.set_estimate(1e-6f);
        head_dim.set_estimate(64);
        num_heads.set_estimate(32);
        num_kv_heads.set_estimate(8);
        q.set_estimates({{0, 64}, {0, 32}, {0, 64}});
        k.set_estimates({{0, 64}, {0, 8}, {0, 64}});
        v.set_estimates({{0, 64}, {0, 8}, {0, 64}});
        if (get_auto_schedule()) return;
        schedules::schedule_project_heads(project_, get_target());
    }

private:
    Input<Buffer<>> *w_qkv_ = nullptr;
    Input<Buffer<float, 3>> *w_scales_ = nullptr;
    algo::ProjectHeads project_;
};

class HeadResultsGenerator : public Generator<HeadResultsGenerator>, public KnobParams {
public:
    Input<Buffer<float, 2>> z{"z"};  // (n_h * hd, token)
    Input<int> head_dim{"head_dim"};
    Output<Buffer<float, 3>> result{"result"};  // (embed, head, token)

    // The packed Wo and its int8 scales, as the output pipeline takes them.
    void configure() {
        w_o_ = add_input<Buffer<>>("w_o", weight_storage(get_target()), 3);
        w_scales_ = add_input<Buffer<float, 3>>("w_scales");
    }

    void generate() {
        const bool autoscheduled = get_auto_schedule();
        results_ = algo::define_head_results(input_func(z, autoscheduled), z.dim(1).extent(),
                                             input_func(*w_o_, autoscheduled),
                                             input_func(*w_scales_, autoscheduled), weight_type,
                                             link_half_widening(*get_externs_map(), get_target()), head_dim,
                                             layout::kWeightPanel, result);
    }

    void schedule() {
        z.set_estimates({{0, 2048}, {0, 64}});
        head_dim.set_estimate(64);
        w_o_->set_estimates({{0, layout::kWeightPanel}, {0, 2048}, {0, 32}});
        w_scales_->set_estimates({{0, layout::kWeightPanel}, {0, 2048 / layout::kWeightGroup}, {0, 32}});
        result.set_estimates({{0, 2048}, {0, 32}, {0, 64}});
        if (get_auto_schedule()) return;
        schedules::schedule_head_results(results_, get_target());
    }

private:
    Input<Buffer<>> *w_o_ = nullptr;
    Input<Buffer<float, 3>> *w_scales_ = nullptr;
    algo::HeadResults results_;
};

class WeighValuesGenerator : public Generator<WeighValuesGenerator>, public KnobParams {
public:
    Input<Buffer<float, 5>> pattern{"pattern"};  // (slot, query, r, kv head, batch)
    Input<Buffer<float, 4>> v{"v"};              // (d, slot, kv head, batch), fp32
    Output<Buffer<float, 5>> z{"z"};             // (d, r, kv head, query, batch)

    void generate() {
        const bool autoscheduled = get_auto_schedule();
        weigh_ = algo::define_weigh_values(input_func(pattern, autoscheduled), input_func(v, autoscheduled),
                                           pattern.dim(0).extent(), z);
    }

    void schedule() {
        pattern.set_estimates({{0, 512}, {0, 64}, {0, 4}, {0, 8}, {0, 1}});
        v.set_estimates({{0, 64}, {0, 512}, {0, 8}, {0, 1}});
        z.set_estimates({{0, 64}, {0, 4}, {0, 8}, {0, 64}, {0, 1}});
        if (get_auto_schedule()) return;
        schedules::schedule_weigh_values(weigh_, get_target());
    }

private:
    algo::WeighValues weigh_;
};

}  // namespace gqa

HALIDE_REGISTER_GENERATOR(gqa::ProjectHeadsGenerator, gqa_project_heads)
HALIDE_REGISTER_GENERATOR(gqa::HeadResultsGenerator, gqa_head_results)
HALIDE_REGISTER_GENERATOR(gqa::WeighValuesGenerator, gqa_weigh_values)
