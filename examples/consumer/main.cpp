// A consumer of the installed gqa package: one small GQA layer with a KV cache,
// a prefill and a few decode steps on every backend this program can run, each
// checked against the reference backend. Exit status 1 if any differs.
#include <gqa/attention.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace {

std::vector<float> random_values(size_t count, float stddev, std::mt19937 &rng) {
    std::normal_distribution<float> normal(0.f, stddev);
    std::vector<float> values(count);
    for (float &v : values) v = normal(rng);
    return values;
}

// The prefill's output followed by each decode step's.
std::vector<float> run(gqa::Backend backend, const gqa::Config &config, const gqa::Weights &weights,
                       const std::vector<float> &prompt, const std::vector<std::vector<float>> &steps) {
    gqa::Attention layer(config, weights, backend);
    layer.setup_cache(1, config.max_seq_len);
    const int d = config.embed_dim;
    std::vector<float> outputs = layer.forward({prompt.data(), {1, int64_t(prompt.size()) / d, d}});
    for (const std::vector<float> &token : steps) {
        const std::vector<float> out = layer.forward({token.data(), {1, 1, d}});
        outputs.insert(outputs.end(), out.begin(), out.end());
    }
    return outputs;
}

}  // namespace

int main() {
    // 8 query heads share 2 KV heads; torchtune's interleaved RoPE.
    gqa::Config config{.embed_dim = 128, .num_heads = 8, .num_kv_heads = 2, .head_dim = 16, .max_seq_len = 64};
    std::mt19937 rng(1);
    const int64_t d = config.embed_dim, q = 8 * 16, kv = 2 * 16;
    const float w_std = 1.f / std::sqrt(float(d));
    const std::vector<float> wq = random_values(q * d, w_std, rng), wk = random_values(kv * d, w_std, rng),
                             wv = random_values(kv * d, w_std, rng), wo = random_values(d * q, w_std, rng);
    const gqa::Weights weights{.wq = {wq.data(), {q, d}}, .wk = {wk.data(), {kv, d}}, .wv = {wv.data(), {kv, d}},
                               .wo = {wo.data(), {d, q}}};
    const std::vector<float> prompt = random_values(size_t(20 * d), 1.f, rng);
    std::vector<std::vector<float>> steps;
    for (int i = 0; i < 4; ++i) steps.push_back(random_values(size_t(d), 1.f, rng));

    const std::vector<float> want = run(gqa::Backend::reference, config, weights, prompt, steps);
    int failures = 0;
    for (gqa::Backend backend : gqa::available_backends()) {
        if (backend == gqa::Backend::reference || backend == gqa::Backend::best) continue;
        const std::vector<float> got = run(backend, config, weights, prompt, steps);
        double worst = 0;
        for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, double(std::fabs(got[i] - want[i])));
        const bool ok = worst <= 1e-4;
        failures += !ok;
        std::printf("%-5s (%s): 20-token prefill + 4 decode steps, max |diff| vs reference %.2e %s\n",
                    std::string(gqa::backend_name(backend)).c_str(), gqa::backend_isa(backend).c_str(), worst,
                    ok ? "ok" : "FAILED");
    }
    for (gqa::Backend backend : {gqa::Backend::x86, gqa::Backend::arm, gqa::Backend::cuda, gqa::Backend::opencl}) {
        const std::string why = gqa::backend_unavailable_reason(backend);
        if (gqa::backend_built(backend) && !why.empty()) {
            std::printf("%-5s linked in, cannot run here: %s\n", std::string(gqa::backend_name(backend)).c_str(),
                        why.c_str());
        }
    }
    return failures == 0 ? 0 : 1;
}
