// x86 F16C's fp16 -> fp32 conversion, linked into the pipelines as LLVM bitcode
// (half_widening.ll) because Halide 14 never emits it.
#pragma once

#include "Halide.h"

namespace gqa {

// Adds the conversion to the module a generator builds for `target`, where its
// pipelines widen fp16 with it (schedules::half_widening).
void link_half_widening(Halide::GeneratorContext::ExternsMap &externs, const Halide::Target &target);

}  // namespace gqa
