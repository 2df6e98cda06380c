#!/usr/bin/env bash
# Set up, build, and run every test (GoogleTest suite + conformance vectors).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
ctest --test-dir build --output-on-failure -j2
