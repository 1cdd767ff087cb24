#!/usr/bin/env bash
# Runs one fuzz harness, a libFuzzer binary or fuzz_sweep.py (ctest label `fuzz`, and by hand):
#   run_fuzz.sh replay HARNESS NAME          every seed (corpus/NAME) and regression input
#                                           (regressions/NAME) once; fails on any crash
#   run_fuzz.sh run HARNESS NAME WORK SECS   coverage-guided fuzzing for SECS seconds from
#                                           the seeds; new inputs go to WORK/corpus, a crash
#                                           to WORK/crash-* (copy it into regressions/NAME
#                                           once fixed)
# Limits: 10 s per input (a hang is a failure) and 2 GiB of memory (a runaway allocation
# from a bad size field is a failure).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mode=$1 harness=$2 name=$3
# libFuzzer's own failure exit code is 77, which ctest reads as SKIPPED: use 1.
limits=(-timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 -max_len=65536 -error_exitcode=1
        -timeout_exitcode=1)
if [[ -f $here/dict/$name.dict ]]; then limits+=(-dict="$here/dict/$name.dict"); fi
seeds=("$here/corpus/$name")
if compgen -G "$here/regressions/$name/*" >/dev/null; then seeds+=("$here/regressions/$name"); fi
case $mode in
  replay)
    if [[ $harness == *.py ]]; then exec "$harness" replay "${seeds[@]}"; fi
    # -runs=0: load and run every input of the given folders, then stop (a failing input
    # is already a file: its copy goes to a scratch folder).
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    "$harness" "${limits[@]}" -runs=0 -artifact_prefix="$scratch/" "${seeds[@]}"
    ;;
  run)
    work=$4 secs=$5
    # A fresh work corpus each time: a fixed cost, and a result that needs no history.
    rm -rf "$work" && mkdir -p "$work/corpus"
    if [[ $harness == *.py ]]; then exec "$harness" run "$work" "$secs" "${seeds[@]}"; fi
    exec "$harness" "${limits[@]}" -max_total_time="$secs" -print_final_stats=1 \
         -artifact_prefix="$work/" "$work/corpus" "${seeds[@]}"
    ;;
  *) echo "run_fuzz.sh: unknown mode '$mode' (replay or run)" >&2; exit 2 ;;
esac
