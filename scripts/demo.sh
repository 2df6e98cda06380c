#!/usr/bin/env bash
# The main job: set up, build, and run the demo on every built backend.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
./build/tools/gqa-demo "$@"
