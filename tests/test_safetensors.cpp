// load_safetensors on files the tests write themselves: fp32, fp16 and bf16 round
// trips, torchtune's names, and every malformed file or tensor as a gqa::Error
// naming what is wrong.
#include <gqa/safetensors.hpp>

#include <gmock/gmock.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "test_util.h"

namespace {

using testing::AllOf;
using testing::HasSubstr;

struct Entry {
    std::string name, dtype;
    std::vector<int64_t> shape;
    std::vector<char> bytes;
    std::string offsets_override;  // written instead of the true data_offsets when set
};

std::vector<char> as_bytes(const std::vector<float> &values, const std::string &dtype) {
    std::vector<char> bytes;
    for (float v : values) {
        if (dtype == "F32") {
            const char *p = reinterpret_cast<const char *>(&v);
            bytes.insert(bytes.end(), p, p + 4);
        } else {
            uint16_t bits;
            if (dtype == "F16") {
                bits = gqa::float_to_half(v);
            } else {
                uint32_t wide;
                std::memcpy(&wide, &v, 4);
                bits = uint16_t(wide >> 16);  // truncation: the tests pick exactly representable values
            }
            const char *p = reinterpret_cast<const char *>(&bits);
            bytes.insert(bytes.end(), p, p + 2);
        }
    }
    return bytes;
}

// Where a test's file goes: named by the process too, since CTest runs each test
// once per instruction set, possibly at the same time.
std::string temp_path(const std::string &name) {
    const std::string file = "gqa_test_" + std::to_string(getpid()) + "_" + name + ".safetensors";
    return (std::filesystem::temp_directory_path() / file).string();
}

// A safetensors file: 8-byte header length, JSON header, data.
std::string write_file(const std::string &name, const std::vector<Entry> &entries, const std::string &header_tail = "") {
    std::string header = "{\"__metadata__\":{\"format\":\"pt\"}";
    std::vector<char> data;
    for (const Entry &e : entries) {
        std::string shape;
        for (size_t i = 0; i < e.shape.size(); ++i) shape += (i ? "," : "") + std::to_string(e.shape[i]);
        const std::string offsets = e.offsets_override.empty()
                                        ? std::to_string(data.size()) + "," + std::to_string(data.size() + e.bytes.size())
                                        : e.offsets_override;
        header += ",\"" + e.name + "\":{\"dtype\":\"" + e.dtype + "\",\"shape\":[" + shape + "],\"data_offsets\":[" +
                  offsets + "]}";
        data.insert(data.end(), e.bytes.begin(), e.bytes.end());
    }
    header += header_tail + "}";
    const std::string path = temp_path(name);
    std::ofstream out(path, std::ios::binary);
    const uint64_t length = header.size();
    out.write(reinterpret_cast<const char *>(&length), 8);
    out << header;
    out.write(data.data(), std::streamsize(data.size()));
    return path;
}

std::string write_raw(const std::string &name, const std::string &content) {
    const std::string path = temp_path(name);
    std::ofstream(path, std::ios::binary) << content;
    return path;
}

class Safetensors : public testing::Test {
protected:
    // d = 24, 4 query heads, 2 kv heads, hd = 6.
    gqa::Config config_ = gqa_test::make_config(24, 4, 2, 6, 32);
    gqa_test::LayerWeights weights_ = gqa_test::random_weights(config_, true, 21);
    const std::string prefix_ = "model.layers.3.self_attn.";

    std::vector<Entry> layer_entries(const std::string &dtype, const std::string &o_name = "o_proj") const {
        const auto entry = [&](const std::string &name, const gqa_test::HostTensor<float> &t) {
            return Entry{prefix_ + name, dtype, t.shape, as_bytes(t.values, dtype), ""};
        };
        return {entry("q_proj.weight", weights_.wq), entry("k_proj.weight", weights_.wk),
                entry("v_proj.weight", weights_.wv), entry(o_name + ".weight", weights_.wo),
                entry("q_proj.bias", *weights_.bq),   entry(o_name + ".bias", *weights_.bo)};
    }

    std::string error_of(const std::string &path, const gqa::ProjectionNames &names = {}) const {
        try {
            gqa::load_safetensors(path, prefix_, config_, names);
        } catch (const gqa::Error &error) {
            return error.what();
        }
        ADD_FAILURE() << "no error for " << path;
        return "";
    }
};

TEST_F(Safetensors, Fp32RoundTripBuildsTheSameLayer) {
    const std::string path = write_file("f32", layer_entries("F32"));
    const gqa::LoadedWeights loaded = gqa::load_safetensors(path, prefix_, config_);
    EXPECT_EQ(loaded.wq.type, gqa::WeightType::f32);
    EXPECT_EQ(loaded.wq.values, weights_.wq.values);
    EXPECT_EQ(loaded.wk.values, weights_.wk.values);
    EXPECT_EQ(loaded.wv.values, weights_.wv.values);
    EXPECT_EQ(loaded.wo.values, weights_.wo.values);
    EXPECT_EQ(loaded.bq, weights_.bq->values);
    EXPECT_EQ(loaded.bo, weights_.bo->values);
    EXPECT_TRUE(loaded.bk.empty() && loaded.bv.empty()) << "biases the file lacks stay absent";

    gqa_test::LayerWeights same = weights_;
    same.bk.reset(), same.bv.reset();
    const auto x = gqa_test::random_input(config_, 2, 5, 22);
    for (gqa::Backend backend : gqa_test::runnable_backends()) {
        gqa::Attention from_file(config_, loaded.view(), backend), direct(config_, same.view(), backend);
        EXPECT_EQ(from_file.forward(x.view()), direct.forward(x.view())) << gqa::backend_name(backend);
    }
}

TEST_F(Safetensors, HalfAndBfloat16WeightsKeepTheirType) {
    for (const std::string dtype : {"F16", "BF16"}) {
        SCOPED_TRACE(dtype);
        // Values both formats hold exactly: multiples of 1/64 below 2 in magnitude.
        for (gqa_test::HostTensor<float> *t : {&weights_.wq, &weights_.wk, &weights_.wv, &weights_.wo}) {
            for (float &v : t->values) v = std::round(v * 64.f) / 64.f;
        }
        for (float &v : weights_.bq->values) v = std::round(v * 64.f) / 64.f;
        for (float &v : weights_.bo->values) v = std::round(v * 64.f) / 64.f;
        const gqa::LoadedWeights loaded = gqa::load_safetensors(write_file(dtype, layer_entries(dtype)), prefix_, config_);
        const gqa::WeightType type = dtype == "F16" ? gqa::WeightType::f16 : gqa::WeightType::bf16;
        for (const gqa::WeightData *w : {&loaded.wq, &loaded.wk, &loaded.wv, &loaded.wo}) {
            EXPECT_EQ(w->type, type);
            EXPECT_TRUE(w->values.empty());
        }
        EXPECT_EQ(loaded.wq.to_float(), weights_.wq.values);
        EXPECT_EQ(loaded.wo.to_float(), weights_.wo.values);
        EXPECT_EQ(loaded.bo, weights_.bo->values);  // biases become fp32
    }
}

TEST_F(Safetensors, TorchtuneOutputProjName) {
    const std::string path = write_file("torchtune", layer_entries("F32", "output_proj"));
    EXPECT_THAT(error_of(path), HasSubstr("o_proj.weight"));
    const gqa::LoadedWeights loaded = gqa::load_safetensors(path, prefix_, config_, {.o = "output_proj"});
    EXPECT_EQ(loaded.wo.values, weights_.wo.values);
}

TEST_F(Safetensors, MalformedFilesAreErrors) {
    EXPECT_THAT(error_of("/nonexistent/gqa.safetensors"), HasSubstr("cannot be opened"));
    EXPECT_THAT(error_of(write_raw("short", "abc")), HasSubstr("shorter than the 8-byte header length"));
    std::string huge(8, '\0');
    huge[0] = char(0x40), huge[1] = char(0x42), huge[2] = char(0x0f);  // 1 000 000 bytes declared
    EXPECT_THAT(error_of(write_raw("huge_header", huge + "{}")), HasSubstr("declares a 1000000-byte header"));
    std::string not_json(8, '\0');
    not_json[0] = 5;
    EXPECT_THAT(error_of(write_raw("not_json", not_json + "{\"a\":")), HasSubstr("not valid JSON"));
    std::string array(8, '\0');
    array[0] = 2;
    EXPECT_THAT(error_of(write_raw("array", array + "[]")), HasSubstr("not a JSON object"));
}

TEST_F(Safetensors, BadTensorsAreErrorsNamingThem) {
    std::vector<Entry> entries = layer_entries("F32");
    entries.erase(entries.begin() + 1);  // k_proj.weight
    EXPECT_THAT(error_of(write_file("missing", entries)),
                AllOf(HasSubstr("no tensor 'model.layers.3.self_attn.k_proj.weight'"), HasSubstr("it has")));

    entries = layer_entries("F32");
    entries[0].shape = {12, 48};  // same size, wrong shape
    EXPECT_THAT(error_of(write_file("shape", entries)), HasSubstr("has shape [12, 48]; expected [24, 24]"));

    entries = layer_entries("F32");
    entries[2].dtype = "I32";
    EXPECT_THAT(error_of(write_file("dtype", entries)), HasSubstr("dtype I32; expected F32, F16 or BF16"));

    entries = layer_entries("F32");
    entries[3].offsets_override = "0,99999999";
    EXPECT_THAT(error_of(write_file("outside", entries)),
                AllOf(HasSubstr("o_proj.weight"), HasSubstr("data_offsets [0,99999999]")));

    entries = layer_entries("F32");
    entries[1].offsets_override = "0,8";  // 2 floats for a [12, 24] tensor
    EXPECT_THAT(error_of(write_file("short_range", entries)), HasSubstr("expected 1152 bytes"));

    EXPECT_THAT(error_of(write_file("no_fields", {}, ",\"" + prefix_ + "q_proj.weight\":{\"dtype\":\"F32\"}")),
                HasSubstr("no valid dtype, shape and data_offsets"));
}

}  // namespace
