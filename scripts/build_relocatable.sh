#!/usr/bin/env bash
# Builds a relocatable `mhc`: one that runs on a GPU host providing only glibc and the
# NVIDIA libraries (driver, cuBLAS/cuBLASLt, cuDNN, NCCL), without the Debian packages
# this machine builds against (yaml-cpp, fmt, spdlog, OpenBLAS, libgomp, MPI, ...).
#
# Configures build-reloc/ with MHC_STATIC_HOST_LIBS=ON (cmake/static_host_libs.cmake),
# MHC_NATIVE=OFF (generic x86-64 code) and MHC_BUILD_TESTS=OFF, builds the `mhc` target
# (with --gpu-suite also the CUDA parity tests, tests/mhc_unit_tests, and the
# connection-kernel microbenchmark, cuda/bench/bench_connections: what
# scripts/bench_gpu.sh --build-dir runs), then checks each binary:
#   - its direct dynamic dependencies (ELF NEEDED) are only glibc's (libc, libm,
#     libpthread, libdl, librt, ld-linux) and NVIDIA's (libcublas, libcublasLt, libcudnn*,
#     libnccl, libcudart);
#   - `ldd` resolves everything here, and its full closure adds nothing but libstdc++ and
#     libgcc_s, which only the NVIDIA libraries (NCCL, cuDNN, cuBLAS) pull in.
#
# Limitations:
#   - glibc stays dynamic: the target host needs glibc >= this build host's (Debian 12:
#     2.36). Build on an older distribution for older hosts.
#   - MPI is not linked: `dist.backend: mpi` is unavailable; multi-node runs bootstrap
#     NCCL over TCP (MASTER_ADDR/MASTER_PORT, or Slurm's environment), and CPU ranks talk
#     over TCP (tests/slurm/multinode_test.sh runs it on a 3-node Slurm cluster).
#   - fmt and spdlog are compiled header-only (Debian ships no static archives of them).
#   - cuBLAS/cuBLASLt/cuDNN/NCCL stay shared and must be the CUDA 13 generation used here;
#     NCCL and cuDNN themselves need libstdc++.so.6 and libgcc_s.so.1 (every glibc
#     distribution has them); mhc's own C++ runtime is static.
#   - GPU code: sm_80 and sm_90 SASS plus PTX (JIT-compiled on newer GPUs at first launch).
#   - Same CPU architecture as the build host.
#   - The top-level CMakeLists.txt must include cmake/static_host_libs.cmake before its
#     host find_package() calls, or MHC_STATIC_HOST_LIBS has no effect (the check fails).
#
# Usage: scripts/build_relocatable.sh [--gpu-suite] [--pack FILE.tgz] [extra cmake -D options]
#   --gpu-suite   also build and check the parity tests and the microbenchmark
#   --pack FILE   write the stripped binaries to FILE (a .tgz laid out like a build
#                 directory: mhc, tests/mhc_unit_tests, cuda/bench/bench_connections), small
#                 enough to carry to a GPU machine (about 22 MB with --gpu-suite)
# Environment: BUILD_DIR (default <repo>/build-reloc), JOBS (default: all cores).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$root/build-reloc}"
jobs="${JOBS:-$(nproc)}"
suite=0
pack=""
cmake_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --gpu-suite) suite=1; shift ;;
    --pack) pack=$(realpath -m "$2"); shift 2 ;;
    *) cmake_args+=("$1"); shift ;;
  esac
done

targets=(mhc)
binaries=(mhc)
if ((suite)); then
  targets+=(mhc_unit_tests bench_connections)
  binaries+=(tests/mhc_unit_tests cuda/bench/bench_connections)
fi
# ccache, where installed and not chosen otherwise, makes a rebuild (CI's reloc_mhc) cheap.
if command -v ccache >/dev/null 2>&1; then
  for lang in C CXX CUDA; do
    var="CMAKE_${lang}_COMPILER_LAUNCHER"
    [ -n "${!var:-}" ] || export "$var=ccache"
  done
fi
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DMHC_STATIC_HOST_LIBS=ON \
  -DMHC_NATIVE=OFF -DMHC_BUILD_TESTS=$( ((suite)) && echo ON || echo OFF) "${cmake_args[@]}"
cmake --build "$build" --target "${targets[@]}" -j "$jobs"

glibc='^(libc|libm|libpthread|libdl|librt)\.so|^ld-linux[-a-z0-9_.]*\.so'
nvidia='^lib(cublas|cublasLt|cudnn[a-z_]*|nccl|cudart)\.so'
status=0

check_binary() {
  local bin=$1
  [[ -x "$bin" ]] || { echo "error: $bin was not built" >&2; status=1; return; }
  echo "== direct dependencies of $bin"
  while read -r lib; do
    if [[ "$lib" =~ $glibc || "$lib" =~ $nvidia ]]; then
      echo "  ok   $lib"
    else
      echo "  BAD  $lib (a host library that should be static)"
      status=1
    fi
  done < <(readelf -d "$bin" | sed -n 's/.*Shared library: \[\(.*\)\]$/\1/p')

  echo "== ldd $bin"
  local ldd_out line lib
  ldd_out="$(ldd "$bin" 2>&1 || true)"
  echo "$ldd_out" | sed 's/^/  /'
  while read -r line; do
    lib="${line%% *}"
    [[ -z "$lib" || "$lib" == linux-vdso* || "$lib" == /* || "$lib" == statically ]] && continue
    if [[ "$line" == *"not found"* ]]; then
      echo "error: $lib is not found on this machine" >&2
      status=1
    elif ! [[ "$lib" =~ $glibc || "$lib" =~ $nvidia || "$lib" =~ ^lib(stdc\+\+|gcc_s)\.so ]]; then
      echo "error: unexpected dependency $lib" >&2
      status=1
    fi
  done <<< "$ldd_out"
}

for b in "${binaries[@]}"; do check_binary "$build/$b"; done

if ((status)); then
  echo "error: not relocatable (is cmake/static_host_libs.cmake included from" \
       "CMakeLists.txt before the host find_package() calls?)" >&2
  exit 1
fi
echo "ok: ${binaries[*]} need only glibc and the NVIDIA libraries"

if [ -n "$pack" ]; then
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' EXIT
  for b in "${binaries[@]}"; do
    mkdir -p "$stage/$(dirname "$b")"
    strip -o "$stage/$b" "$build/$b"
  done
  tar czf "$pack" -C "$stage" "${binaries[@]}"
  echo "packed: $pack ($(du -h "$pack" | cut -f1)); unpack with tar xzf and pass the folder" \
       "to scripts/bench_gpu.sh --build-dir"
fi
