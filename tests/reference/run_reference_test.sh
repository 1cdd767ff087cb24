#!/bin/sh
# ctest driver of torch_reference_<case> (see tests/reference/mhc_reference.py) and of
# bench_peer_<case> (--peer: scripts/bench_peer.py, the PyTorch model `mhc bench` is
# compared with on GPUs, must be the same model too):
#   run_reference_test.sh [--peer] DUMP_EXE WORK_DIR CASE_NAME [dump flags...]
# Dumps the case with mhc_reference_dump in float64 and in float32 and compares each
# file with the PyTorch model. Exit 0 pass, 1 fail, 77 skipped (no usable
# /usr/bin/python3 with torch; the reason is printed).
set -u
PY=${MHC_REFERENCE_PYTHON:-/usr/bin/python3}  # override only to test the skip path
HERE=$(cd "$(dirname "$0")" && pwd)
PEER=0
if [ "${1:-}" = "--peer" ]; then PEER=1; shift; fi
[ $# -ge 3 ] || { echo "usage: $0 [--peer] DUMP_EXE WORK_DIR CASE_NAME [dump flags...]"; exit 2; }
DUMP=$1; WORK=$2; NAME=$3; shift 3

if [ ! -x "$PY" ]; then
  echo "SKIPPED: $PY not found (the PyTorch reference needs Debian's python3 with torch)"
  exit 77
fi
if ! why=$("$PY" -c "import torch, numpy" 2>&1); then
  echo "SKIPPED: $PY cannot import torch/numpy: $(printf '%s' "$why" | tail -n 1)"
  exit 77
fi

mkdir -p "$WORK" || exit 1
files=""
for dtype in f64 f32; do
  file="$WORK/$NAME.$dtype.safetensors"
  "$DUMP" --out "$file" --dtype "$dtype" "$@" || { echo "FAIL: mhc_reference_dump ($dtype)"; exit 1; }
  files="$files $file"
done
if [ $PEER -eq 1 ]; then
  rc=0
  for file in $files; do
    "$PY" "$HERE/../../scripts/bench_peer.py" --check-dump "$file" || rc=1
  done
  [ $rc -eq 0 ] && echo "bench_peer_$NAME: PASS (float64 and float32)"
  exit $rc
fi
# shellcheck disable=SC2086  # the file names are ours, without spaces
"$PY" "$HERE/compare_reference.py" $files
rc=$?
[ $rc -eq 0 ] && echo "torch_reference_$NAME: PASS (float64 and float32)"
exit $rc
