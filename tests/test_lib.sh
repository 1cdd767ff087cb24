# Shared by the shell-driven tests (tests/e2e, tests/dist, tests/ablation, tests/safety, ...);
# sourced, not run.
# Expects $mhc (the binary), and sets up $work as a fresh working directory.
#   start_test_dir WORK_DIR   make WORK_DIR empty and enter it; sets $repo
#   check DESCRIPTION CMD...  run CMD; count a failure unless it succeeds
#   make_corpus               byte-level shards of the project's own sources in $work/corpus
#   train_tiny RUN_DIR [ARGS] train tests/e2e/tiny.yaml on that corpus into RUN_DIR
#   finish                    print the summary; exit 1 if any check failed

failures=0

start_test_dir() {
  work=$1
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  rm -rf "$work" && mkdir -p "$work"
  cd "$work" || exit 1
}

check() {
  local what=$1
  shift
  if "$@"; then echo "ok: $what"; else echo "FAIL: $what"; failures=$((failures + 1)); fi
}

# A small real corpus: the project's own sources (a few hundred KB of text).
make_corpus() {
  "$mhc" prepare --input "$repo/core" --input "$repo/app" --output "$work/corpus" \
    --val-fraction 0.1 >/dev/null || { echo "FAIL: prepare"; exit 1; }
}

train_tiny() {
  local run=$1
  shift
  "$mhc" train -c "$repo/tests/e2e/tiny.yaml" --set "data.train=$work/corpus/*_train_*.bin" \
    --set "data.val=$work/corpus/*_val_*.bin" --run-dir "$run" "$@"
}

finish() {
  if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed"
    exit 1
  fi
  echo "all checks passed"
}
