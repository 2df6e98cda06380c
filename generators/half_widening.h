// x86 F16C's fp16 -> fp32 conversion, linked into the pipelines as LLVM bitcode
// (half_widening.ll) because Halide 14 never emits it.
#pragma once

#include "Halide.h"
#include "attention_algorithm.h"

namespace gqa {

// How a generator's pipelines for `target` widen fp16 (schedules::half_widening);
// where that is the linked conversion, adds it to the module the generator builds,
// so no pipeline can call it without it.
algo::HalfWidening link_half_widening(Halide::GeneratorContext::ExternsMap &externs, const Halide::Target &target);

}  // namespace gqa
