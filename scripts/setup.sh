#!/usr/bin/env bash
# Installs what mhc needs from Debian's archive (only the missing packages), then
# configures and builds it into build/. Safe to re-run; the second run is fast.
#   scripts/setup.sh            build mhc and the tests
#   scripts/setup.sh --tests    also install what only the test suite needs (a private
#                               Slurm cluster: slurm-wlm, munge); scripts/test.sh passes it
#   scripts/setup.sh --mhc      build only the mhc binary (what training needs; the
#                               quickstart passes it): not the tests, fuzzers or emulator,
#                               and without the CUDA backend where no GPU is visible
#                               (nvidia-smi -L), since that binary could not use it
#   MHC_BUILD_DIR=dir           build elsewhere (default build)
#   MHC_CMAKE_ARGS="..."        extra CMake arguments (e.g. -DMHC_CUDA=OFF)
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake pkg-config git
  libyaml-cpp-dev libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev libgtest-dev libxxhash-dev
  libopenblas-openmp-dev libopenmpi-dev openmpi-bin
  python3-torch python3-numpy python3-matplotlib python3-yaml
  clang-14 libclang-rt-14-dev lld-14   # the libFuzzer harnesses (tests/fuzz/)
  libboost-context-dev                # the CUDA emulator's fibers (cuda/emu/)
)
# Only for the test suite (tests/slurm/ runs jobs on a private one-node Slurm cluster).
test_packages=(slurm-wlm munge)
targets=()  # empty: everything
cuda=AUTO   # CMake's default: the CUDA backend wherever nvcc is found
for arg in "$@"; do
  case "$arg" in
    --tests) packages+=("${test_packages[@]}") ;;
    --mhc)
      targets=(--target mhc)
      if ! nvidia-smi -L >/dev/null 2>&1; then
        cuda=OFF
        echo "setup: no GPU visible (nvidia-smi -L): building mhc without the CUDA backend" \
             "(scripts/setup.sh without --mhc builds it)"
      fi ;;
    *) echo "setup: unknown argument '$arg' (allowed: --tests, --mhc)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root or sudo to apt-get install ${missing[*]}" >&2; exit 1; }
    sudo_cmd=(sudo)
  fi
  "${sudo_cmd[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

build_dir=${MHC_BUILD_DIR:-build}
# MHC_CUDA is passed every time, so that a full build after a CPU-only quickstart build
# brings the CUDA backend back; MHC_CMAKE_ARGS come last and win.
# shellcheck disable=SC2086
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DMHC_CUDA=$cuda ${MHC_CMAKE_ARGS:-}
cmake --build "$build_dir" -j "$(nproc)" "${targets[@]}"
echo "setup: built $build_dir/mhc"
