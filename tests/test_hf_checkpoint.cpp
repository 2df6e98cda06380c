// load_hf_layer on the checkpoints of tests/conformance-hf: what each model's
// config becomes, and every config, tensor or directory it must refuse, by name.
#include <gmock/gmock.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>
#include <unistd.h>

#include "gqa/hf.hpp"
#include "safetensors_file.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using testing::HasSubstr;

const fs::path kCheckpoints = GQA_HF_VECTORS;

std::string load_error(const fs::path &dir, int layer = 0) {
    return gqa_test::error_of([&] { gqa::load_hf_layer(dir.string(), layer); });
}

// A copy of one checkpoint whose config.json the test may edit.
class EditedCheckpoint {
public:
    explicit EditedCheckpoint(const std::string &model)
        : dir_(fs::temp_directory_path() / ("gqa-hf-" + model + "-" + std::to_string(::getpid()))) {
        fs::remove_all(dir_);
        fs::copy(kCheckpoints / model, dir_, fs::copy_options::recursive);
        std::ifstream in(dir_ / "config.json");
        config = nlohmann::json::parse(in);
    }
    ~EditedCheckpoint() { fs::remove_all(dir_); }

    const fs::path &write() {
        std::ofstream(dir_ / "config.json") << config.dump(2);
        return dir_;
    }

    nlohmann::json config;

private:
    fs::path dir_;
};

TEST(HfCheckpoint, LlamaIsRotateHalfWithLlama3Scaling) {
    const gqa::HfLayer hf = gqa::load_hf_layer((kCheckpoints / "llama").string(), 1, 2048);
    const gqa::Config &c = hf.config;
    EXPECT_EQ(hf.model_type, "llama");
    EXPECT_EQ(c.embed_dim, 128);
    EXPECT_EQ(c.num_heads, 8);
    EXPECT_EQ(c.num_kv_heads, 2);
    EXPECT_EQ(c.head_dim, 16);
    EXPECT_EQ(c.rope_style, gqa::RopeStyle::rotate_half);
    EXPECT_EQ(c.rope_base, 500000.0);
    EXPECT_EQ(c.max_seq_len, 2048);
    EXPECT_EQ(c.rope_scaling.type, gqa::RopeScalingType::llama3);
    EXPECT_EQ(c.rope_scaling.factor, 32);
    EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
    EXPECT_FALSE(c.window.has_value());
    EXPECT_TRUE(hf.weights.bq.empty());
    EXPECT_EQ(hf.weights.wq.size(), 128u * 128u);  // read from the second shard or the first
}

TEST(HfCheckpoint, Phi3SplitsTheFusedProjectionAndRotatesPartly) {
    const gqa::HfLayer hf = gqa::load_hf_layer((kCheckpoints / "phi3").string(), 0, 8192);
    EXPECT_EQ(hf.config.rotary_dim, 12);  // 16 * 0.75
    EXPECT_EQ(hf.config.rope_scaling.type, gqa::RopeScalingType::longrope);
    EXPECT_EQ(hf.config.rope_scaling.max_position_embeddings, 131072);
    EXPECT_THAT(hf.features, testing::Contains("fused qkv_proj"));
    EXPECT_EQ(hf.weights.wk.size(), size_t(hf.config.num_kv_heads) * 16 * 96);
}

TEST(HfCheckpoint, Qwen2HasBiases) {
    const gqa::HfLayer hf = gqa::load_hf_layer((kCheckpoints / "qwen2").string(), 0);
    EXPECT_EQ(hf.config.head_dim, 8);  // 112 / 14
    EXPECT_FALSE(hf.weights.bq.empty());
    EXPECT_FALSE(hf.weights.bk.empty());
    EXPECT_TRUE(hf.weights.bo.empty());
}

TEST(HfCheckpoint, Qwen3NormalisesEachHead) {
    const gqa::HfLayer hf = gqa::load_hf_layer((kCheckpoints / "qwen3").string(), 0);
    EXPECT_EQ(hf.config.qk_norm, gqa::QkNorm::per_head);
    EXPECT_EQ(hf.config.qk_norm_eps, 1e-6);
    EXPECT_EQ(hf.weights.q_norm.size(), 32u);
    EXPECT_EQ(hf.weights.k_norm.size(), 32u);
}

TEST(HfCheckpoint, Olmo2NormalisesAllHeadsAtOnce) {
    const gqa::HfLayer hf = gqa::load_hf_layer((kCheckpoints / "olmo2").string(), 1);
    EXPECT_EQ(hf.config.qk_norm, gqa::QkNorm::all_heads);
    EXPECT_EQ(hf.config.head_dim, 16);  // 128 / 8
    EXPECT_EQ(hf.weights.q_norm.size(), 128u);
    EXPECT_EQ(hf.weights.k_norm.size(), 128u);
}

// Gemma 3: norm weights stored as w for a factor 1 + w; the sliding layer rotates
// with the local base and no scaling, the global one with rope_theta and linear 8.
TEST(HfCheckpoint, Gemma3OffsetsItsNormsAndRotatesLocalLayersWithTheirOwnBase) {
    const gqa::HfLayer sliding = gqa::load_hf_layer((kCheckpoints / "gemma3").string(), 0);
    EXPECT_EQ(sliding.config.window, 8);
    EXPECT_EQ(sliding.config.rope_base, 10000.0);
    EXPECT_EQ(sliding.config.rope_scaling.type, gqa::RopeScalingType::none);
    EXPECT_EQ(sliding.config.qk_norm, gqa::QkNorm::per_head);
    const gqa::HfLayer global = gqa::load_hf_layer((kCheckpoints / "gemma3").string(), 1);
    EXPECT_FALSE(global.config.window.has_value());
    EXPECT_EQ(global.config.rope_base, 1e6);
    EXPECT_EQ(global.config.rope_scaling.type, gqa::RopeScalingType::linear);
    EXPECT_EQ(global.config.rope_scaling.factor, 8);
    EXPECT_DOUBLE_EQ(global.config.scale, 1 / std::sqrt(32.0));

    // The stored weights, read as plain tensors, are 1 less than the loaded ones.
    gqa::detail::SafetensorsFile file((kCheckpoints / "gemma3" / "model.safetensors").string());
    const std::vector<float> q_norm = file.read("model.layers.1.self_attn.q_norm.weight", {32});
    const std::vector<float> k_norm = file.read("model.layers.1.self_attn.k_norm.weight", {32});
    for (int e = 0; e < 32; ++e) {
        EXPECT_EQ(global.weights.q_norm[e], q_norm[e] + 1.f) << e;
        EXPECT_EQ(global.weights.k_norm[e], k_norm[e] + 1.f) << e;
    }
}

TEST(HfCheckpoint, Gemma3WithoutLayerTypesFollowsItsSlidingPattern) {
    EditedCheckpoint gemma("gemma3");
    gemma.config.erase("layer_types");
    gemma.config["sliding_window_pattern"] = 2;  // layer 0 slides, layer 1 is global
    const fs::path &dir = gemma.write();
    EXPECT_EQ(gqa::load_hf_layer(dir.string(), 0).config.window, 8);
    EXPECT_FALSE(gqa::load_hf_layer(dir.string(), 1).config.window.has_value());
}

TEST(HfCheckpoint, NormModelsNeedTheirEpsAndWeights) {
    EditedCheckpoint qwen("qwen3");
    qwen.config.erase("rms_norm_eps");
    EXPECT_THAT(load_error(qwen.write()), HasSubstr("'rms_norm_eps'"));
    EditedCheckpoint gemma("gemma3");
    gemma.config.erase("rope_local_base_freq");
    EXPECT_THAT(load_error(gemma.write()), HasSubstr("'rope_local_base_freq'"));
    // A qwen2 checkpoint's tensors (no norm weights) under a qwen3 config.
    EditedCheckpoint qwen2("qwen2");
    qwen2.config["model_type"] = "qwen3";
    qwen2.config["rms_norm_eps"] = 1e-6;
    EXPECT_THAT(load_error(qwen2.write()), HasSubstr("has no tensor 'model.layers.0.self_attn.q_norm.weight'"));
}

TEST(HfCheckpoint, GptOssHasSinksYarnAndSlidingLayers) {
    const gqa::HfLayer sliding = gqa::load_hf_layer((kCheckpoints / "gpt_oss").string(), 0);
    EXPECT_EQ(sliding.config.window, 6);
    EXPECT_EQ(sliding.config.rope_scaling.type, gqa::RopeScalingType::yarn);
    EXPECT_FALSE(sliding.config.rope_scaling.truncate);
    EXPECT_EQ(sliding.weights.sinks.size(), 8u);
    EXPECT_FALSE(sliding.weights.bo.empty());
    EXPECT_THAT(sliding.features, testing::Contains("attention sinks"));
    const gqa::HfLayer full = gqa::load_hf_layer((kCheckpoints / "gpt_oss").string(), 1);
    EXPECT_FALSE(full.config.window.has_value());
}

TEST(HfCheckpoint, BadConfigsAreErrorsNamingTheField) {
    EditedCheckpoint llama("llama");
    llama.config["model_type"] = "falcon";
    EXPECT_THAT(load_error(llama.write()), HasSubstr("model_type 'falcon'"));
    llama.config["model_type"] = "llama";
    llama.config["rope_scaling"]["rope_type"] = "dynamic";
    EXPECT_THAT(load_error(llama.write()), HasSubstr("rope_scaling type 'dynamic'"));
    llama.config["rope_scaling"]["rope_type"] = "llama3";
    llama.config["rope_scaling"]["beta_fast"] = 32;
    EXPECT_THAT(load_error(llama.write()), HasSubstr("rope_scaling field 'beta_fast'"));
    llama.config["rope_scaling"].erase("beta_fast");
    llama.config["num_attention_heads"] = "eight";
    EXPECT_THAT(load_error(llama.write()), HasSubstr("'num_attention_heads'"));
    llama.config["num_attention_heads"] = 8;
    llama.config["num_key_value_heads"] = 3;
    EXPECT_THAT(load_error(llama.write()), HasSubstr("num_kv_heads (3)"));
    llama.config["num_key_value_heads"] = 2;
    llama.config["head_dim"] = 32;  // the tensors hold 16
    EXPECT_THAT(load_error(llama.write()), HasSubstr("has shape [128, 128]; expected [256, 128]"));
    llama.config["head_dim"] = 16;
    EXPECT_THAT(load_error(llama.write(), 2), HasSubstr("layer is 2"));
    llama.config["layer_types"] = {"full_attention", "chunked_attention"};
    EXPECT_THAT(load_error(llama.write(), 1), HasSubstr("'chunked_attention'"));
}

TEST(HfCheckpoint, MissingOrUnknownTensorsAreErrors) {
    const fs::path dir = fs::temp_directory_path() / ("gqa-hf-bare-" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    fs::copy_file(kCheckpoints / "qwen2" / "config.json", dir / "config.json");
    EXPECT_THAT(load_error(dir), HasSubstr("neither model.safetensors nor model.safetensors.index.json"));
    // A qwen3 checkpoint's tensors (with q_norm) under a qwen2 config: the norm
    // must not be dropped silently.
    fs::copy_file(kCheckpoints / "qwen3" / "model.safetensors", dir / "model.safetensors");
    nlohmann::json config = nlohmann::json::parse(std::ifstream(kCheckpoints / "qwen3" / "config.json"));
    config["model_type"] = "qwen2";
    std::ofstream(dir / "config.json") << config.dump();
    EXPECT_THAT(load_error(dir), HasSubstr("_norm.weight' is not one this version computes with"));
    fs::remove_all(dir);
}

}  // namespace
