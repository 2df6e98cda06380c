// gqa-tp-mpi: one attention layer split by heads across the ranks of mpirun, the
// partial outputs summed by MPI_Allreduce (mpi_sharded_layer.hpp); tp_run.hpp says
// what it runs, checks and prints.
//   mpirun -np 2 gqa-tp-mpi --workload W2 --prefill 512 --decode 16 --repeat 5
#include "mpi_sharded_layer.hpp"
#include "tp_run.hpp"

int main(int argc, char **argv) {
    return tp_example::main_of(argc, argv, "gqa-tp-mpi", [](const tp_example::Options &o) {
        const gqa_tools::Workload workload = tp_example::find_workload(o);
        const gqa_tools::WorkloadWeights weights(workload, 1);
        gqa_mpi::ShardedLayer sharded(MPI_COMM_WORLD, workload.config, weights.view(workload.config), o.backend);
        sharded.layer().setup_cache(1, o.prefill + o.decode_steps);
        return tp_example::run(o, workload, weights, sharded,
                               [&](const gqa::TensorView<float> &x, std::span<float> out) { sharded.forward(x, out); });
    });
}
