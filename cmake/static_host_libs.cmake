# MHC_STATIC_HOST_LIBS: link every host dependency statically so that `mhc` runs on a GPU
# host that has only glibc and the NVIDIA libraries (no Debian packages).
#
# Include this file from the top-level CMakeLists.txt BEFORE the host find_package()
# calls: it pre-defines the imported targets that yaml-cpp's, fmt's and spdlog's package
# files would define (their generated target files then skip themselves), and pre-sets
# the cache results of the OpenBLAS and libgomp searches, so nothing else changes.
#
#   yaml-cpp   libyaml-cpp.a (Debian ships it)
#   xxHash     libxxhash.a (Debian's libxxhash-dev ships it), via the MHC_XXHASH_LIB cache
#              entry that the top-level find_library() then keeps
#   fmt        header-only (FMT_HEADER_ONLY): Debian ships no libfmt.a
#   spdlog     header-only (SPDLOG_HEADER_ONLY): Debian ships no libspdlog.a
#   OpenBLAS   openblas-openmp/libopenblas.a + libgfortran.a + libquadmath.a (its LAPACK
#              part is Fortran)
#   OpenMP     libgomp.a (via FindOpenMP's OpenMP_gomp_LIBRARY cache entry)
#   C++ / gcc  -static-libstdc++ -static-libgcc
#   MPI        off (CMAKE_DISABLE_FIND_PACKAGE_MPI): a relocatable binary cannot assume an
#              MPI installation; multi-node runs use NCCL with TCP bootstrap instead.
# CUDA: cudart is already static (CUDA::cudart_static); cuBLAS, cuBLASLt, cuDNN and NCCL
# stay shared: they are the "NVIDIA libraries" the target host provides.
#
# Use a dedicated build folder: the cache entries set here persist (scripts/build_relocatable.sh
# uses build-reloc/).
if(NOT MHC_STATIC_HOST_LIBS)
  return()
endif()
message(STATUS "mhc: MHC_STATIC_HOST_LIBS=ON, linking host libraries statically")

# A static archive from the compiler's own library folders (libgomp, libgfortran, ...).
function(mhc_compiler_archive out name)
  execute_process(COMMAND ${CMAKE_CXX_COMPILER} -print-file-name=${name}
                  OUTPUT_VARIABLE path OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT IS_ABSOLUTE "${path}" OR NOT EXISTS "${path}")
    message(FATAL_ERROR "MHC_STATIC_HOST_LIBS: ${name} not found (install the matching "
                        "gcc -dev package, e.g. libgfortran-12-dev)")
  endif()
  set(${out} "${path}" PARENT_SCOPE)
endfunction()

# A static archive from the system; the OpenMP build of OpenBLAS is preferred, as in the
# shared build (BLAS threads share our OpenMP pool).
function(mhc_require_archive out)
  find_library(${out} NAMES ${ARGN} NO_CACHE NO_DEFAULT_PATH
    PATHS /usr/lib/x86_64-linux-gnu/openblas-openmp /usr/lib/aarch64-linux-gnu/openblas-openmp)
  if(NOT ${out})
    find_library(${out} NAMES ${ARGN} NO_CACHE)
  endif()
  if(NOT ${out})
    message(FATAL_ERROR "MHC_STATIC_HOST_LIBS: none of ${ARGN} found")
  endif()
  set(${out} "${${out}}" PARENT_SCOPE)
endfunction()

find_package(Threads REQUIRED)

# ---- yaml-cpp -------------------------------------------------------------------------
mhc_require_archive(_mhc_yaml libyaml-cpp.a)
add_library(yaml-cpp STATIC IMPORTED)
set_target_properties(yaml-cpp PROPERTIES IMPORTED_LOCATION "${_mhc_yaml}")

# ---- xxHash (checkpoint checksums) ----------------------------------------------------
mhc_require_archive(_mhc_xxhash libxxhash.a)
set(MHC_XXHASH_LIB "${_mhc_xxhash}" CACHE FILEPATH "libxxhash (static, MHC_STATIC_HOST_LIBS)" FORCE)

# ---- fmt and spdlog, header-only ------------------------------------------------------
# The definitions are directory-wide so every translation unit (C++ and CUDA) sees the
# same fmt/spdlog configuration.
add_compile_definitions(FMT_HEADER_ONLY=1 SPDLOG_HEADER_ONLY SPDLOG_FMT_EXTERNAL)
add_library(fmt::fmt INTERFACE IMPORTED)
add_library(fmt::fmt-header-only INTERFACE IMPORTED)
add_library(spdlog::spdlog INTERFACE IMPORTED)
set_target_properties(spdlog::spdlog PROPERTIES INTERFACE_LINK_LIBRARIES "Threads::Threads")
add_library(spdlog::spdlog_header_only INTERFACE IMPORTED)
set_target_properties(spdlog::spdlog_header_only PROPERTIES
                      INTERFACE_LINK_LIBRARIES "Threads::Threads")

# ---- OpenBLAS (OpenMP build) with its Fortran runtime ---------------------------------
mhc_require_archive(_mhc_openblas libopenblas.a)
mhc_compiler_archive(_mhc_gfortran libgfortran.a)
mhc_compiler_archive(_mhc_quadmath libquadmath.a)
mhc_compiler_archive(_mhc_gomp libgomp.a)
# libgomp again after OpenBLAS: static archives resolve left to right, and the OpenMP
# target's copy of libgomp comes before OpenBLAS on core's link line.
set(MHC_OPENBLAS_LIB "${_mhc_openblas};${_mhc_gfortran};${_mhc_quadmath};${_mhc_gomp}"
    CACHE STRING "OpenBLAS and its runtime (static, MHC_STATIC_HOST_LIBS)" FORCE)

# ---- OpenMP runtime ---------------------------------------------------------------------
set(OpenMP_gomp_LIBRARY "${_mhc_gomp}" CACHE FILEPATH "libgomp (static, MHC_STATIC_HOST_LIBS)"
    FORCE)

# ---- MPI off; the C++ runtime and libgcc static ---------------------------------------
set(CMAKE_DISABLE_FIND_PACKAGE_MPI TRUE)
add_link_options(-static-libstdc++ -static-libgcc)
