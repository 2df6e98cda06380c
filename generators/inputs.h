// How a generator hands its input buffers to the algorithm.
#pragma once

#include "Halide.h"

namespace gqa {

// An autoscheduler may compute tiles past the region the outputs need (e.g. a
// 19-token call through a schedule estimated for 512), so under one every input is
// read through a clamp to the buffer's bounds; such reads never reach an output.
// The hand schedules stay inside the buffers and read them directly.
template <typename InputBuffer>
Halide::Func input_func(const InputBuffer &buffer, bool autoscheduled) {
    return autoscheduled ? Halide::BoundaryConditions::repeat_edge(buffer) : Halide::Func(buffer);
}

}  // namespace gqa
