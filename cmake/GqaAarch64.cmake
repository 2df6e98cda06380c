# The aarch64 half of the super-build: the same source tree configured with the
# cross toolchain into build/aarch64. It imports this build's generator
# executable (so Halide itself is never cross-compiled) and produces the arm
# static libraries, the runtime, the tools and the test suite for aarch64. Its
# tests, which run under qemu-user, join this build's CTest run.
find_program(GQA_AARCH64_CXX aarch64-linux-gnu-g++)
find_program(GQA_QEMU_AARCH64 qemu-aarch64)
if (NOT GQA_AARCH64_CXX OR NOT GQA_QEMU_AARCH64)
    message(FATAL_ERROR "The aarch64 cross build needs aarch64-linux-gnu-g++ and qemu-aarch64 "
                        "(Debian: g++-aarch64-linux-gnu qemu-user; scripts/setup.sh installs them). "
                        "Configure with -DGQA_BUILD_AARCH64=OFF to build for x86 only.")
endif ()

include(ExternalProject)
set(GQA_AARCH64_BINARY_DIR ${PROJECT_BINARY_DIR}/aarch64)
ExternalProject_Add(gqa_aarch64
                    SOURCE_DIR ${PROJECT_SOURCE_DIR}
                    BINARY_DIR ${GQA_AARCH64_BINARY_DIR}
                    CMAKE_ARGS
                    -DCMAKE_TOOLCHAIN_FILE=${PROJECT_SOURCE_DIR}/cmake/toolchain-aarch64-linux-gnu.cmake
                    -DCMAKE_BUILD_TYPE=${CMAKE_BUILD_TYPE}
                    -D${PROJECT_NAME}-halide_generators_ROOT=${PROJECT_BINARY_DIR}
                    -DHalideHelpers_DIR=${HalideHelpers_DIR}
                    -DGQA_BUILD_TESTS=${GQA_BUILD_TESTS}
                    -DGQA_BUILD_BENCH=OFF
                    BUILD_ALWAYS ON
                    INSTALL_COMMAND ""
                    DEPENDS gqa_generators)

if (GQA_BUILD_TESTS)
    # CTest reads the aarch64 build's tests as a subdirectory of this one.
    file(WRITE ${PROJECT_BINARY_DIR}/aarch64_tests.cmake "subdirs(\"${GQA_AARCH64_BINARY_DIR}\")\n")
    set_property(DIRECTORY ${PROJECT_SOURCE_DIR} APPEND PROPERTY TEST_INCLUDE_FILES
                 ${PROJECT_BINARY_DIR}/aarch64_tests.cmake)
endif ()
