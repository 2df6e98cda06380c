// gqa-tp-nccl: gqa-tp-mpi on CUDA devices, one per rank (rank % devices), the
// partial outputs summed by ncclAllReduce on device buffers (nccl_sharded_layer.hpp);
// MPI only starts the ranks and hands out NCCL's id. The layer runs on CUDA whatever
// --backend says. Exits 77, a skip, where a rank finds no CUDA device or the library
// has no CUDA backend.
//   mpirun -np 2 gqa-tp-nccl --workload W2 --prefill 512 --decode 16 --repeat 5
#include <algorithm>

#include "nccl_sharded_layer.hpp"
#include "tp_run.hpp"

namespace {

constexpr int kSkipped = 77;

// Whether every rank has a CUDA device and the CUDA backend.
bool every_rank_has_cuda() {
    int devices = 0;
    const auto backends = gqa::available_backends();
    int usable = cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0 &&
                 std::find(backends.begin(), backends.end(), gqa::Backend::cuda) != backends.end();
    int all = 0;
    MPI_Allreduce(&usable, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    return all != 0;
}

int run_on_devices(const tp_example::Options &o) {
    if (!every_rank_has_cuda()) {
        if (gqa_mpi::rank_of(MPI_COMM_WORLD) == 0) std::puts("gqa-tp-nccl: skipped, a rank has no CUDA device or backend");
        return kSkipped;
    }
    const int rank = gqa_mpi::rank_of(MPI_COMM_WORLD), ranks = gqa_mpi::size_of(MPI_COMM_WORLD);
    int devices = 0;
    gqa_nccl::check(cudaGetDeviceCount(&devices), "cudaGetDeviceCount");
    gqa_nccl::check(cudaSetDevice(rank % devices), "cudaSetDevice");
    ncclUniqueId id;
    if (rank == 0) gqa_nccl::check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
    ncclComm_t comm;
    gqa_nccl::check(ncclCommInitRank(&comm, ranks, id, rank), "ncclCommInitRank");

    const gqa_tools::Workload workload = tp_example::find_workload(o);
    const gqa_tools::WorkloadWeights weights(workload, 1);
    int status = 0;
    {
        gqa_nccl::ShardedLayer sharded(comm, rank, ranks, workload.config, weights.view(workload.config));
        sharded.layer().setup_cache(1, o.prefill + o.decode_steps);
        // The summed output stays on the device; rank 0 copies it out for its check.
        status = tp_example::run(o, workload, weights, sharded,
                                 [&](const gqa::TensorView<float> &x, std::span<float> out) {
                                     const float *summed = sharded.forward(x);
                                     if (rank != 0) return;
                                     gqa_nccl::check(cudaMemcpy(out.data(), summed, out.size_bytes(),
                                                                cudaMemcpyDeviceToHost),
                                                     "cudaMemcpy");
                                 });
    }
    ncclCommDestroy(comm);
    return status;
}

}  // namespace

int main(int argc, char **argv) {
    return tp_example::main_of(argc, argv, "gqa-tp-nccl", run_on_devices);
}
