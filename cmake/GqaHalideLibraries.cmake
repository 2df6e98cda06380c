# The generator executable and one AOT static library per pipeline, mode and
# backend. Library names carry their dispatch key: gqa_<pipeline>_<mode>_<backend>.

# The schedule knobs (schedules/knobs.json, which tools/gqa-tune reads too) as C++:
# gqa_knobs.h defines GQA_INT_KNOBS(X), one X(name) per int knob, and
# GQA_SOFTMAX_NAMES, the softmax knob's choices (schedules/schedule.h).
set(knob_table ${PROJECT_SOURCE_DIR}/schedules/knobs.json)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${knob_table})
file(READ ${knob_table} knobs_json)
string(JSON knob_count LENGTH "${knobs_json}" knobs)
math(EXPR last_knob "${knob_count} - 1")
set(int_knobs)
set(softmax_names)
foreach (n RANGE ${last_knob})
    string(JSON name GET "${knobs_json}" knobs ${n} name)
    string(JSON choices ERROR_VARIABLE not_a_choice GET "${knobs_json}" knobs ${n} choices)
    if (not_a_choice)
        string(APPEND int_knobs " X(${name})")
    elseif (name STREQUAL "softmax")
        string(JSON choice_count LENGTH "${choices}")
        math(EXPR last_choice "${choice_count} - 1")
        foreach (c RANGE ${last_choice})
            string(JSON choice GET "${choices}" ${c})
            list(APPEND softmax_names "\"${choice}\"")
        endforeach ()
    else ()
        message(FATAL_ERROR "${knob_table}: the choice knob '${name}' has no C++ type in schedules/schedule.h")
    endif ()
endforeach ()
list(JOIN softmax_names ", " softmax_names)
file(CONFIGURE OUTPUT ${CMAKE_CURRENT_BINARY_DIR}/gqa_knobs.h CONTENT [[
// Generated from schedules/knobs.json by cmake/GqaHalideLibraries.cmake.
#pragma once

#define GQA_INT_KNOBS(X)@int_knobs@
#define GQA_SOFTMAX_NAMES @softmax_names@
]] @ONLY)

# Link the pipelines another build tree of this project generates, rather than
# generating them again: the sanitize preset does, since Halide's code is not
# instrumented and regenerating it took a third of that tree's build. This tree
# then builds them there first and takes that tree's types and targets (normal
# variables, which the cache entries below leave in place: policy CMP0126).
set(GQA_PIPELINES_FROM "" CACHE PATH "A build tree of this project whose pipelines to build and link")
if (GQA_PIPELINES_FROM)
    if (NOT EXISTS "${GQA_PIPELINES_FROM}/CMakeCache.txt")
        message(FATAL_ERROR "GQA_PIPELINES_FROM: ${GQA_PIPELINES_FROM} is not a configured build tree "
                            "(configure and build it first, e.g. scripts/build.sh for build/)")
    endif ()
    load_cache("${GQA_PIPELINES_FROM}" READ_WITH_PREFIX from_ GQA_WEIGHT_TYPES GQA_CACHE_TYPES GQA_X86_TARGETS)
    foreach (setting IN ITEMS GQA_WEIGHT_TYPES GQA_CACHE_TYPES GQA_X86_TARGETS)
        set(${setting} "${from_${setting}}")
    endforeach ()
    message(STATUS "gqa: pipelines built in and linked from ${GQA_PIPELINES_FROM}")
endif ()

if (NOT GQA_PIPELINES_FROM)  # that tree runs the generators
    # x86 F16C's fp16 widening as LLVM bitcode that the generators link into
    # pipelines (generators/half_widening.ll); llvm-as comes with Halide's LLVM.
    find_program(GQA_LLVM_AS NAMES llvm-as-14 HINTS /usr/lib/llvm-14/bin REQUIRED)
    add_custom_command(OUTPUT ${CMAKE_CURRENT_BINARY_DIR}/half_widening_bitcode.h
                       COMMAND ${GQA_LLVM_AS} ${PROJECT_SOURCE_DIR}/generators/half_widening.ll -o half_widening.bc
                       COMMAND ${CMAKE_COMMAND} -DINPUT=half_widening.bc -DOUTPUT=half_widening_bitcode.h
                               -DNAME=kHalfWideningBitcode -P ${PROJECT_SOURCE_DIR}/cmake/embed_bytes.cmake
                       DEPENDS ${PROJECT_SOURCE_DIR}/generators/half_widening.ll ${PROJECT_SOURCE_DIR}/cmake/embed_bytes.cmake
                       WORKING_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}
                       VERBATIM)
    add_halide_generator(gqa_generators
                         SOURCES
                         ${CMAKE_CURRENT_BINARY_DIR}/half_widening_bitcode.h
                         ${PROJECT_SOURCE_DIR}/generators/attention_algorithm.cpp
                         ${PROJECT_SOURCE_DIR}/generators/attend_generator.cpp
                         ${PROJECT_SOURCE_DIR}/generators/half_widening.cpp
                         ${PROJECT_SOURCE_DIR}/generators/hooks_generator.cpp
                         ${PROJECT_SOURCE_DIR}/generators/output_generator.cpp
                         ${PROJECT_SOURCE_DIR}/generators/project_generator.cpp
                         ${PROJECT_SOURCE_DIR}/generators/rope_generator.cpp
                         ${PROJECT_SOURCE_DIR}/generators/store_generator.cpp
                         ${PROJECT_SOURCE_DIR}/schedules/schedule.cpp
                         ${PROJECT_SOURCE_DIR}/schedules/cpu_schedule.cpp
                         ${PROJECT_SOURCE_DIR}/schedules/arm/arm_schedule.cpp
                         ${PROJECT_SOURCE_DIR}/schedules/gpu/gpu_schedule.cpp
                         ${PROJECT_SOURCE_DIR}/schedules/x86/x86_schedule.cpp)
    # Not where the executable is imported (from gqa_halide-halide_generators_ROOT):
    # the cross half imports the host's, a tuning tree may import a built tree's.
    if (TARGET gqa_generators)
        target_link_libraries(gqa_generators PRIVATE gqa_common)
        target_include_directories(gqa_generators PRIVATE ${CMAKE_CURRENT_BINARY_DIR})
    endif ()
endif ()

# Most specific first: the multitarget wrapper picks the first variant the CPU
# runs. Spelled out, never `host`: on Zen 4 Halide 14 would pick sapphirerapids
# and emit AVX512-FP16 (docs/halide14.md §2.1).
set(GQA_X86_TARGETS
    x86-64-linux-avx-avx2-avx512-avx512_skylake-f16c-fma-sse41
    x86-64-linux-avx-avx2-f16c-fma-sse41
    x86-64-linux-sse41
    CACHE STRING "Halide targets of the x86 libraries, most specific first")

# FP16 arithmetic (ARMv8.2 FEAT_FP16) first, plain ARMv8.0 NEON last. Halide 14
# detects no aarch64 features, so the runtime's own HWCAP check decides
# (runtime/arm_backend.cpp).
set(GQA_ARM_TARGETS
    arm-64-linux-arm_fp16
    arm-64-linux
    CACHE STRING "Halide targets of the aarch64 libraries, most specific first")

# Schedule knobs from a tuned record (tools/gqa-tune writes one per target family
# into schedules/<backend>/tuned.cmake). It sets GQA_KNOBS_<generator>_<mode>, a
# list of key=value GeneratorParams, and GQA_KNOB_ISA, the variant they were tuned
# on (the other variants of a multitarget library keep their defaults).
set(GQA_TUNED_RECORD "${PROJECT_SOURCE_DIR}/schedules/${GQA_BACKEND}/tuned.cmake"
    CACHE FILEPATH "Tuned schedule record to build with (ignored when the file does not exist)")
if (EXISTS "${GQA_TUNED_RECORD}")
    include("${GQA_TUNED_RECORD}")
    message(STATUS "gqa: schedule knobs from ${GQA_TUNED_RECORD}")
endif ()

# The weight types whose project and output pipelines are built, and the KV cache
# types whose store and attend pipelines are (f32 always): fewer make a faster build
# (the tuner builds f32 only); a layer or cache of a type left out is a gqa::Error
# when it is made.
set(GQA_WEIGHT_TYPES "f32;bf16;f16;int8" CACHE STRING "Weight types to build pipelines for (f32, bf16, f16, int8)")
set(GQA_CACHE_TYPES "f32;f16;bf16;int8" CACHE STRING "KV cache types to build pipelines for (f32, f16, bf16, int8)")
foreach (types IN ITEMS GQA_WEIGHT_TYPES GQA_CACHE_TYPES)
    foreach (type IN LISTS ${types})
        if (NOT type MATCHES "^(f32|bf16|f16|int8)$")
            message(FATAL_ERROR "${types}: '${type}' is not one of f32, bf16, f16, int8")
        endif ()
    endforeach ()
endforeach ()

# Schedules from one of Halide's autoschedulers instead of ours, to compare with:
# Adams2019 or Mullapudi2016 (Debian's plugins), for this machine's 2 cores and 32 MiB L3.
set(GQA_AUTOSCHEDULER "" CACHE STRING "Halide autoscheduler for every pipeline (empty: the hand schedules)")
set(GQA_MACHINE_PARAMS "2,33554432,40" CACHE STRING "Autoscheduler machine_params: cores,LLC bytes,balance")

# The PARAMS of one generator run: the given ones, the tuned knobs of
# (generator, mode), or an autoscheduler's settings.
function(gqa_generator_params out generator mode)
    set(params ${ARGN})
    if (GQA_AUTOSCHEDULER)
        list(APPEND params machine_params=${GQA_MACHINE_PARAMS})
    elseif (DEFINED GQA_KNOBS_${generator}_${mode})
        list(APPEND params ${GQA_KNOBS_${generator}_${mode}} knob_isa=${GQA_KNOB_ISA})
    endif ()
    set(${out} ${params} PARENT_SCOPE)
endfunction()

# The library name suffix of a weight type: none for fp32, _w<type> otherwise.
function(gqa_weight_suffix out weights)
    if (weights STREQUAL "f32")
        set(${out} "" PARENT_SCOPE)
    else ()
        set(${out} _w${weights} PARENT_SCOPE)
    endif ()
endfunction()

# add_halide_library's arguments, or with GQA_PIPELINES_FROM the library of that
# name from there (its runtime likewise), listed in the global property
# gqa_imported_pipelines.
function(gqa_halide_library lib)
    if (NOT GQA_PIPELINES_FROM)
        add_halide_library(${lib} ${ARGN})
        return ()
    endif ()
    add_library(${lib} STATIC IMPORTED GLOBAL)
    set_target_properties(${lib} PROPERTIES IMPORTED_LOCATION ${GQA_PIPELINES_FROM}/lib${lib}.a
                                            INTERFACE_INCLUDE_DIRECTORIES ${GQA_PIPELINES_FROM})
    set_property(GLOBAL APPEND PROPERTY gqa_imported_pipelines ${lib})
    cmake_parse_arguments(ARG "" "USE_RUNTIME" "" ${ARGN})
    if (NOT ARG_USE_RUNTIME)  # the first library of a backend makes the runtime
        add_library(${lib}.runtime STATIC IMPORTED GLOBAL)
        set_target_properties(${lib}.runtime PROPERTIES IMPORTED_LOCATION ${GQA_PIPELINES_FROM}/lib${lib}.runtime.a)
        target_link_libraries(${lib}.runtime INTERFACE Halide::Runtime Threads::Threads ${CMAKE_DL_LIBS})
        set_property(GLOBAL APPEND PROPERTY gqa_imported_pipelines ${lib}.runtime)
    endif ()
endfunction()

# In gqa_add_pipelines (a macro, so it sees that function's backend, targets,
# runtime and libs): adds gqa_<generator>_<mode><suffix>_<backend> for both modes
# with the given params, and sets `out` to their table entry
# {.prefill = ..., .decode = ...}.
macro(gqa_add_mode_pair out generator suffix)
    set(pair)
    foreach (mode IN ITEMS prefill decode)
        set(lib gqa_${generator}_${mode}${suffix}_${backend})
        gqa_generator_params(params ${generator} ${mode} mode=${mode} ${ARGN})
        gqa_halide_library(${lib} FROM gqa_generators GENERATOR gqa_${generator}
                           TARGETS ${ARG_TARGETS} PARAMS ${params} USE_RUNTIME ${runtime} ${autoscheduler})
        list(APPEND libs ${lib})
        list(APPEND pair ".${mode} = ${lib}")
    endforeach ()
    list(JOIN pair ", " pair)
    set(${out} "{${pair}}")
endmacro()

# gqa_add_pipelines(<backend> TARGETS ... [RUNTIME <runtime>]): every pipeline for
# one backend, all sharing one Halide runtime: gqa_rope_<backend>.runtime, or the
# given one (one runtime per host architecture serves its CPU and GPU backends). The pipelines that
# touch the KV cache (store, attend) come once per cache type:
# gqa_<pipeline>_<mode>_<backend> for fp32, gqa_<pipeline>_<mode>_<type>_<backend>
# for f16, bf16 and int8; those that read the projection weights (project, output)
# once per weight type, the others suffixed _wbf16, _wf16 or _wint8 in the same place. It also writes
# gqa_pipelines_<backend>.h, the runtime's table of them by name (PipelineTable in
# runtime/halide_backend.h, fields in the order these loops add them), and the
# INTERFACE target gqa_pipelines_<backend> that carries all of it, and the global
# property gqa_pipeline_libraries_<backend> that lists them.
function(gqa_add_pipelines backend)
    cmake_parse_arguments(ARG "" "RUNTIME" "TARGETS" ${ARGN})
    if (ARG_RUNTIME)
        set(runtime ${ARG_RUNTIME})
        gqa_halide_library(gqa_rope_${backend} FROM gqa_generators GENERATOR gqa_rope
                           TARGETS ${ARG_TARGETS} USE_RUNTIME ${runtime})
    else ()
        set(runtime gqa_rope_${backend}.runtime)
        gqa_halide_library(gqa_rope_${backend} FROM gqa_generators GENERATOR gqa_rope
                           TARGETS ${ARG_TARGETS})
    endif ()
    set(autoscheduler)
    if (GQA_AUTOSCHEDULER)
        set(autoscheduler AUTOSCHEDULER Halide::${GQA_AUTOSCHEDULER})
    endif ()
    # The hooks' recording pipelines (generators/hooks_generator.cpp): one instance
    # each, for any number of tokens.
    gqa_generator_params(params weigh_values prefill)
    gqa_halide_library(gqa_weigh_values_${backend} FROM gqa_generators GENERATOR gqa_weigh_values
                       TARGETS ${ARG_TARGETS} PARAMS ${params} USE_RUNTIME ${runtime} ${autoscheduler})
    set(libs gqa_rope_${backend} gqa_weigh_values_${backend})
    set(table ".rope = gqa_rope_${backend},\n    .weigh_values = gqa_weigh_values_${backend}")
    # Per weight type, in gqa::WeightType's order, which PipelineTable's arrays follow.
    foreach (generator IN ITEMS project output)
        set(entries)
        foreach (weights IN ITEMS f32 bf16 f16 int8)
            if (weights STREQUAL "f32" OR weights IN_LIST GQA_WEIGHT_TYPES)
                gqa_weight_suffix(weight_suffix ${weights})
                gqa_add_mode_pair(entry ${generator} "${weight_suffix}" weight_type=${weights})
            else ()
                set(entry "{}")  # not built: null pipelines
            endif ()
            list(APPEND entries "${entry}")
        endforeach ()
        list(JOIN entries ", " entries)
        string(APPEND table ",\n    .${generator} = {${entries}}")
    endforeach ()
    foreach (generator IN ITEMS project_heads head_results)
        set(entries)
        foreach (weights IN ITEMS f32 bf16 f16 int8)
            if (weights STREQUAL "f32" OR weights IN_LIST GQA_WEIGHT_TYPES)
                gqa_weight_suffix(weight_suffix ${weights})
                set(lib gqa_${generator}${weight_suffix}_${backend})
                gqa_generator_params(params ${generator} prefill weight_type=${weights})
                gqa_halide_library(${lib} FROM gqa_generators GENERATOR gqa_${generator}
                                   TARGETS ${ARG_TARGETS} PARAMS ${params} USE_RUNTIME ${runtime} ${autoscheduler})
                list(APPEND libs ${lib})
                list(APPEND entries ${lib})
            else ()
                list(APPEND entries "nullptr")
            endif ()
        endforeach ()
        list(JOIN entries ", " entries)
        string(APPEND table ",\n    .${generator} = {${entries}}")
    endforeach ()
    # Per cache type, in gqa::CacheType's order.
    set(entries)
    foreach (cache IN ITEMS f32 f16 bf16 int8)
        if (NOT (cache STREQUAL "f32" OR cache IN_LIST GQA_CACHE_TYPES))
            list(APPEND entries "{}")  # not built: null pipelines
            continue ()
        endif ()
        set(cache_suffix "")
        if (NOT cache STREQUAL "f32")
            set(cache_suffix _${cache})
        endif ()
        gqa_add_mode_pair(store store "${cache_suffix}" cache_type=${cache})
        gqa_add_mode_pair(attend attend "${cache_suffix}" cache_type=${cache})
        # Attention weights for interpretability: one instance, any sequence length.
        set(lib gqa_attend_pattern${cache_suffix}_${backend})
        gqa_generator_params(params attend prefill with_pattern=true cache_type=${cache})
        list(FILTER params EXCLUDE REGEX "^softmax=")  # the pattern exists only in the three-pass form
        gqa_halide_library(${lib} FROM gqa_generators GENERATOR gqa_attend
                           TARGETS ${ARG_TARGETS} PARAMS ${params} USE_RUNTIME ${runtime} ${autoscheduler})
        list(APPEND libs ${lib})
        list(APPEND entries "{.store = ${store}, .attend = ${attend}, .attend_pattern = ${lib}}")
    endforeach ()
    list(JOIN entries ",\n        " entries)
    string(APPEND table ",\n    .cache = {${entries}}")

    set(includes)
    foreach (lib IN LISTS libs)
        string(APPEND includes "#include \"${lib}.h\"\n")
    endforeach ()
    string(REPLACE ";" " " targets "${ARG_TARGETS}")
    file(CONFIGURE OUTPUT ${CMAKE_CURRENT_BINARY_DIR}/gqa_pipelines_${backend}.h CONTENT [[
// Generated by cmake/GqaHalideLibraries.cmake: the @backend@ pipelines, by name.
#pragma once

@includes@#include "halide_backend.h"

namespace gqa::detail {

inline constexpr PipelineTable pipelines_@backend@{
    @table@};
inline constexpr const char *pipeline_targets_@backend@ = "@targets@";

}  // namespace gqa::detail
]] @ONLY)

    # The libraries themselves, for tests that read them (the CUDA PTX check).
    set_property(GLOBAL PROPERTY gqa_pipeline_libraries_${backend} ${libs})
    add_library(gqa_pipelines_${backend} INTERFACE)
    target_link_libraries(gqa_pipelines_${backend} INTERFACE ${libs} ${runtime})
    target_include_directories(gqa_pipelines_${backend} INTERFACE ${CMAKE_CURRENT_BINARY_DIR})
endfunction()

if (GQA_BACKEND STREQUAL "arm")
    gqa_add_pipelines(arm TARGETS ${GQA_ARM_TARGETS})
else ()
    gqa_add_pipelines(x86 TARGETS ${GQA_X86_TARGETS})
    # CUDA: PTX for compute capability 7.0+ (the driver JIT-compiles it for newer
    # GPUs), with an AVX2 host side; it shares the x86 runtime, which gains the
    # CUDA module and loads the driver at run time.
    option(GQA_BUILD_CUDA "Build the CUDA libraries (they need no CUDA toolkit)" ON)
    if (GQA_BUILD_CUDA)
        gqa_add_pipelines(cuda TARGETS x86-64-linux-avx-avx2-f16c-fma-sse41-cuda-cuda_capability_70
                          RUNTIME gqa_rope_x86.runtime)
    endif ()
    # OpenCL: the same GPU schedules as OpenCL C, which the driver compiles at first
    # use (pocl runs them on the CPU in CI); the x86 runtime gains the OpenCL module.
    # The sanitize preset leaves them out: pocl compiles kernels with its own LLVM
    # inside the process, which is not code of ours to sanitize.
    option(GQA_BUILD_OPENCL "Build the OpenCL libraries (they need no OpenCL SDK)" ON)
    set(GQA_OPENCL_TARGET x86-64-linux-avx-avx2-f16c-fma-sse41-opencl CACHE STRING
        "Halide target of the OpenCL libraries (host code for AVX2 x86-64)")
    if (GQA_BUILD_OPENCL)
        gqa_add_pipelines(opencl TARGETS ${GQA_OPENCL_TARGET} RUNTIME gqa_rope_x86.runtime)
    endif ()
endif ()

if (GQA_PIPELINES_FROM)
    get_property(imported GLOBAL PROPERTY gqa_imported_pipelines)
    list(TRANSFORM imported REPLACE "^(.+)$" "${GQA_PIPELINES_FROM}/lib\\1.a" OUTPUT_VARIABLE imported_files)
    add_custom_target(gqa_pipelines_from_tree
                      COMMAND ${CMAKE_COMMAND} --build ${GQA_PIPELINES_FROM} --target ${imported}
                      BYPRODUCTS ${imported_files}
                      COMMENT "Building the pipelines in ${GQA_PIPELINES_FROM}"
                      USES_TERMINAL)
    add_dependencies(gqa_pipelines_${GQA_BACKEND} gqa_pipelines_from_tree)
endif ()
