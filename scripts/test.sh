#!/usr/bin/env bash
# Set up, build, and run every test (GoogleTest suite + conformance vectors, the
# tuner smoke test, torchtune's numbers), then the x86 suite again under
# AddressSanitizer + UndefinedBehaviorSanitizer (CMakePresets.json, preset
# "sanitize", in build-sanitize/) and the demo under LeakSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
ctest --test-dir build --output-on-failure -j2
cmake --preset sanitize
cmake --build --preset sanitize
ctest --preset sanitize
echo "gqa-demo under LeakSanitizer:"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 build-sanitize/tools/gqa-demo > /dev/null
echo "no leaks"
