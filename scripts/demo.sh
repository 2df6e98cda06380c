#!/usr/bin/env bash
# The main job: set up, build, and run the demo on every built backend: natively
# for x86-64, then the aarch64 build under qemu on a smaller layer.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
./build/tools/gqa-demo "$@"
if [ -x build/aarch64/tools/gqa-demo ]; then
    echo
    echo "aarch64 build under qemu-aarch64, emulating a Cortex-A76 (the results are real, the timings are emulation):"
    QEMU_CPU=cortex-a76 qemu-aarch64 -L /usr/aarch64-linux-gnu build/aarch64/tools/gqa-demo \
        --embed 512 --heads 8 --kv-heads 2 --prefill 64 --decode 4
fi
