#!/usr/bin/env bash
# Installs build/ into a temporary prefix and uses it the way a consumer would:
# examples/consumer (C++ and C) through find_package(gqa), and the same two files
# through pkg-config. No program may depend on libHalide. Needs scripts/build.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
prefix="$scratch/prefix"

cmake --install build --prefix "$prefix" > "$scratch/install.log"
echo "installed into a temporary prefix:"
(cd "$prefix" && find . -type f | sort | sed 's/^/  /')

# consumer: the default component (x86); consumer-cuda: x86 + CUDA (which only
# reports the CUDA backend where a GPU is found); consumer-opencl: x86 + OpenCL (on
# pocl here); consumer-arm: cross-built for
# aarch64 against the arm component and run under qemu-user.
configure_and_build() {
    local name=$1
    shift
    cmake -S examples/consumer -B "$scratch/$name" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" "$@" > /dev/null
    cmake --build "$scratch/$name" > /dev/null
}
configure_and_build consumer
"$scratch/consumer/gqa-consumer"
"$scratch/consumer/gqa-consumer-c"
configure_and_build consumer-cuda -DGQA_COMPONENTS="x86;cuda"
"$scratch/consumer-cuda/gqa-consumer"
configure_and_build consumer-opencl -DGQA_COMPONENTS="x86;opencl"
"$scratch/consumer-opencl/gqa-consumer"
# A component of the other architecture is refused at configure time, by name.
if cmake -S examples/consumer -B "$scratch/wrong-arch" -DCMAKE_PREFIX_PATH="$prefix" -DGQA_COMPONENTS=arm \
        > "$scratch/wrong-arch.log" 2>&1 || ! grep -q "component 'arm' does not link into" "$scratch/wrong-arch.log"; then
    echo "check_install: find_package(gqa COMPONENTS arm) on x86-64 was not refused with its reason" >&2
    exit 1
fi
if [ -f "$prefix/lib/aarch64-linux-gnu/libgqa_arm.a" ]; then
    configure_and_build consumer-arm -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/toolchain-aarch64-linux-gnu.cmake"
    qemu-aarch64 -L /usr/aarch64-linux-gnu "$scratch/consumer-arm/gqa-consumer"
    qemu-aarch64 -L /usr/aarch64-linux-gnu "$scratch/consumer-arm/gqa-consumer-c"
fi

export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
g++ -std=c++20 examples/consumer/main.cpp -o "$scratch/pkg-config-consumer" $(pkg-config --cflags --libs gqa)
"$scratch/pkg-config-consumer" > /dev/null
gcc -std=c11 examples/consumer/main.c -o "$scratch/pkg-config-consumer-c" $(pkg-config --cflags --libs gqa)
"$scratch/pkg-config-consumer-c" > /dev/null

for program in "$scratch"/consumer*/gqa-consumer* "$scratch"/pkg-config-consumer*; do
    if readelf -d "$program" | grep -i 'NEEDED.*halide'; then
        echo "check_install: $(basename "$program") depends on libHalide" >&2
        exit 1
    fi
done
echo "no libHalide dependency: $(readelf -d "$scratch/consumer/gqa-consumer" | grep NEEDED | sed 's/.*\[\(.*\)\]/\1/' | tr '\n' ' ')"
