#!/usr/bin/env bash
# README command 2: set up, build, and run the whole test suite with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --tests
ctest --test-dir "${MHC_BUILD_DIR:-build}" --output-on-failure -j "$(nproc)" "$@"
