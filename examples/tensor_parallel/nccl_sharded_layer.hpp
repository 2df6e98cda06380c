// A head-sharded attention layer over NCCL: each rank drives one CUDA device with
// its shard of the layer (Backend::cuda: weights and KV cache on the device) and the
// ranks sum their partial outputs with ncclAllReduce on device buffers, where the
// layer's output then stays. The layer hands its output to the host, so each call
// uploads the partial output before the all-reduce (a copy of [b, s, d] floats).
// Header-only, so that the library itself needs neither CUDA nor NCCL.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <span>
#include <string>
#include <vector>

#include "gqa/tensor_parallel.hpp"

namespace gqa_nccl {

inline void check(cudaError_t status, const char *what) {
    if (status != cudaSuccess) throw gqa::Error(std::string(what) + ": " + cudaGetErrorString(status));
}

inline void check(ncclResult_t status, const char *what) {
    if (status != ncclSuccess) throw gqa::Error(std::string(what) + ": " + ncclGetErrorString(status));
}

// Seconds spent by this rank since construction, by what it waited for.
struct Timings {
    double layer_s = 0, upload_s = 0, allreduce_s = 0;
};

class ShardedLayer {
public:
    // `comm` holds `ranks` members, this one `rank`, its device current. Every rank
    // passes the same full config and weights (it keeps only its slices).
    ShardedLayer(ncclComm_t comm, int rank, int ranks, const gqa::Config &full, const gqa::Weights &full_weights)
        : comm_(comm),
          shard_(gqa::head_shard(full, rank, ranks)),
          layer_(gqa::shard_config(full, shard_), gqa::shard_weights(full, full_weights, shard_).view(),
                 gqa::Backend::cuda) {
        check(cudaStreamCreate(&stream_), "cudaStreamCreate");
        for (cudaEvent_t *event : {&start_, &uploaded_, &reduced_}) check(cudaEventCreate(event), "cudaEventCreate");
    }
    ~ShardedLayer() {
        cudaFree(device_output_);
        for (cudaEvent_t event : {start_, uploaded_, reduced_}) cudaEventDestroy(event);
        cudaStreamDestroy(stream_);
    }
    ShardedLayer(const ShardedLayer &) = delete;
    ShardedLayer &operator=(const ShardedLayer &) = delete;

    gqa::Attention &layer() { return layer_; }
    const gqa::HeadShard &shard() const { return shard_; }
    const Timings &timings() const { return timings_; }

    // The full layer's output, on this rank's device: its partial output summed over
    // the communicator. Every rank must call it with the same x. The pointer holds
    // x's token count times d floats until the next call.
    const float *forward(const gqa::TensorView<float> &x) {
        const size_t count = size_t(x.numel());
        host_output_.resize(count);
        const auto begin = std::chrono::steady_clock::now();
        layer_.forward(x, host_output_);
        timings_.layer_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
        if (count > device_capacity_) {
            check(cudaFree(device_output_), "cudaFree");
            device_output_ = nullptr;
            check(cudaMalloc(&device_output_, count * sizeof(float)), "cudaMalloc");
            device_capacity_ = count;
        }
        check(cudaEventRecord(start_, stream_), "cudaEventRecord");
        check(cudaMemcpyAsync(device_output_, host_output_.data(), count * sizeof(float), cudaMemcpyHostToDevice,
                              stream_),
              "cudaMemcpyAsync");
        check(cudaEventRecord(uploaded_, stream_), "cudaEventRecord");
        check(ncclAllReduce(device_output_, device_output_, count, ncclFloat, ncclSum, comm_, stream_),
              "ncclAllReduce");
        check(cudaEventRecord(reduced_, stream_), "cudaEventRecord");
        check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
        float upload_ms = 0, allreduce_ms = 0;
        check(cudaEventElapsedTime(&upload_ms, start_, uploaded_), "cudaEventElapsedTime");
        check(cudaEventElapsedTime(&allreduce_ms, uploaded_, reduced_), "cudaEventElapsedTime");
        timings_.upload_s += upload_ms * 1e-3;
        timings_.allreduce_s += allreduce_ms * 1e-3;
        return device_output_;
    }

private:
    ncclComm_t comm_;
    gqa::HeadShard shard_;
    gqa::Attention layer_;
    cudaStream_t stream_ = nullptr;
    cudaEvent_t start_ = nullptr, uploaded_ = nullptr, reduced_ = nullptr;
    std::vector<float> host_output_;
    float *device_output_ = nullptr;
    size_t device_capacity_ = 0;
    Timings timings_;
};

}  // namespace gqa_nccl
