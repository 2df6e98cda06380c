// A head-sharded attention layer over MPI: each rank of a communicator holds its
// shard of the layer (gqa/tensor_parallel.hpp) and the ranks sum their partial
// outputs with one MPI_Allreduce per call. Header-only, so that the library itself
// needs no MPI: copy it, or include it from here.
#pragma once

#include <mpi.h>

#include <optional>
#include <span>
#include <string>

#include "gqa/tensor_parallel.hpp"

namespace gqa_mpi {

// Seconds spent by this rank since construction: in its layer, and in the all-reduce
// (waiting for the slowest rank included).
struct Timings {
    double layer_s = 0, allreduce_s = 0;
};

inline int rank_of(MPI_Comm comm) {
    int rank = 0;
    MPI_Comm_rank(comm, &rank);
    return rank;
}

inline int size_of(MPI_Comm comm) {
    int size = 0;
    MPI_Comm_size(comm, &size);
    return size;
}

class ShardedLayer {
public:
    // Every rank passes the same full config and weights (it keeps only its slices).
    ShardedLayer(MPI_Comm comm, const gqa::Config &full, const gqa::Weights &full_weights,
                 gqa::Backend backend = gqa::Backend::best)
        : comm_(comm),
          shard_(gqa::head_shard(full, rank_of(comm), size_of(comm))),
          layer_(gqa::shard_config(full, shard_), gqa::shard_weights(full, full_weights, shard_).view(), backend) {}

    gqa::Attention &layer() { return layer_; }
    const gqa::HeadShard &shard() const { return shard_; }
    const Timings &timings() const { return timings_; }

    // The full layer's output on every rank: this rank's partial output, summed over
    // the communicator. Every rank must call it with the same x and positions.
    void forward(const gqa::TensorView<float> &x, std::span<float> out,
                 const std::optional<gqa::TensorView<int32_t>> &input_pos = std::nullopt) {
        const double start = MPI_Wtime();
        layer_.forward(x, out, std::nullopt, input_pos);
        const double computed = MPI_Wtime();
        const int status = MPI_Allreduce(MPI_IN_PLACE, out.data(), int(out.size()), MPI_FLOAT, MPI_SUM, comm_);
        if (status != MPI_SUCCESS) throw gqa::Error("MPI_Allreduce failed with code " + std::to_string(status));
        timings_.layer_s += computed - start;
        timings_.allreduce_s += MPI_Wtime() - computed;
    }

private:
    MPI_Comm comm_;
    gqa::HeadShard shard_;
    gqa::Attention layer_;
    Timings timings_;
};

}  // namespace gqa_mpi
