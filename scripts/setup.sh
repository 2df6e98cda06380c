#!/usr/bin/env bash
# Installs everything the project builds with, from Debian 12 packages, plus any
# packages named as arguments (scripts/bench.sh adds its chart's). pocl runs the
# OpenCL backend on the CPU, so the GPU schedules execute in every test run; Open
# MPI runs the tensor-parallel example (examples/tensor_parallel).
set -euo pipefail
packages=(cmake ninja-build g++ libhalide14-0-dev libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev
          g++-aarch64-linux-gnu qemu-user libopenblas-dev python3 clang libclang-rt-14-dev pkg-config
          pocl-opencl-icd ocl-icd-libopencl1 libopenmpi-dev openmpi-bin "$@")
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "setup: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi
