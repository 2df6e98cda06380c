#!/usr/bin/env bash
# Set up, build, and run every test (GoogleTest suite + conformance vectors, the
# tuner smoke test, torchtune's numbers), the installed package as a consumer uses
# it (scripts/check_install.sh), then the x86 suite again (once, at the machine's
# own ISA) built by clang under AddressSanitizer + UndefinedBehaviorSanitizer
# (CMakePresets.json, preset "sanitize", in build-sanitize/), the libFuzzer harness
# for 60 s (each backend against the reference; a failing input lands in
# build-sanitize/fuzz-artifacts/) and the demo under LeakSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each stage's start, so the CI log shows where its time goes.
stage() { echo "== test.sh: $1 at $SECONDS s"; }
stage setup
scripts/setup.sh
stage build
scripts/build.sh
stage tests
ctest --test-dir build --output-on-failure -j2
stage "installed package"
scripts/check_install.sh
stage "sanitize build"
cmake --preset sanitize
cmake --build --preset sanitize
stage "sanitize tests"
ctest --preset sanitize
stage "gqa-fuzz, 60 s"
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
mkdir -p build-sanitize/fuzz-artifacts
build-sanitize/tests/gqa-fuzz -max_total_time=60 -timeout=30 -max_len=512 -print_final_stats=1 \
    -artifact_prefix=build-sanitize/fuzz-artifacts/ "$corpus" tests/fuzz_regressions 2>&1 | grep -v -e '^#' -e '^"'
# A short run makes the same calls as the default one, without its 512-token prefill
# on the reference backend's loops under ASan (75 s against 11 s).
stage "gqa-demo under LeakSanitizer"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 build-sanitize/tools/gqa-demo --prefill 64 --decode 4 > /dev/null
echo "no leaks"
stage done
