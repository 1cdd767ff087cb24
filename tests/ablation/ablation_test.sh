#!/usr/bin/env bash
# End-to-end tests of scripts/ablate and scripts/report, one case per ctest entry:
#   ablation_test.sh MHC_BINARY CASE WORK_DIR
# Cases:
#   sweep   configs/ablations/default_modes_short.yaml (3 modes x 2 seeds), cut to 24 steps,
#           on a small corpus:
#           one run stopped early and continued, the figure and tables written, the
#           diagnostics present in metrics.jsonl, a second invocation skipping every run
#   reject  sweep files with an unknown key, an impossible value, a bad type, missing data
#           or a malformed layout are rejected before any run starts (one error line);
#           the built-in YAML reader agrees with PyYAML; --slurm submits one job per run
#   diverge an lr sweep (2 modes x 2 learning rates, one huge, no clipping) on the tiny model:
#           the huge-lr runs stop early with a `diverged` record and exit status 3, the sweep
#           goes on and exits 0, the report marks them and draws lr_stability.png, a second
#           invocation skips them; a NaN loss stops a run the same way
set -uo pipefail
mhc=$1
case_name=$2
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../test_lib.sh
source "$here/../test_lib.sh"
start_test_dir "$3"
ablate="$repo/scripts/ablate"

make_corpus
data=(--set "data.train=$work/corpus/*_train_*.bin" --set "data.val=$work/corpus/*_val_*.bin")

case_sweep() {
  local sweep="$repo/configs/ablations/default_modes_short.yaml" runs="$work/runs"
  # Shorter still than the sweep file's 60 steps, so that the six runs take about a minute
  # on two idle cores.
  local common=(--mhc "$mhc" --runs-dir "$runs" "${data[@]}" --set train.threads=2 --set train.steps=24
                --set train.eval_every=8 --set train.eval_batches=2 --set train.log_every=4)
  # One run first, stopped at step 8 (as a job hitting its time limit would be).
  check "ablate --only one run --stop-at-step 8" "$ablate" "$sweep" "${common[@]}" --only mode-mhc_seed-1 \
    --stop-at-step 8 --no-report
  check "the stopped run has a step-8 checkpoint" test -f "$runs/default_modes_short/mode-mhc_seed-1/checkpoints/step_00000008/model.safetensors"
  local t0=$SECONDS
  "$ablate" "$sweep" "${common[@]}" >ablate.out 2>&1
  local rc=$?
  cat ablate.out
  check "the full sweep runs (exit 0, $((SECONDS - t0)) s)" test "$rc" -eq 0
  check "the stopped run is continued, not restarted" grep -q "mode-mhc_seed-1: continuing from step 8" ablate.out
  check "six runs finished" test "$(grep -c ': done in' ablate.out)" -eq 6
  local out="$runs/default_modes_short/report"
  for f in ablation.png diagnostics.png table.md hres_hc.png hres_mhc.png sweep_json; do
    [ "$f" = sweep_json ] && f=../sweep.json
    check "report wrote $f" test -s "$out/$f"
  done
  check "table has a row per mode with the seed spread" python3 - "$out/table.md" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
for mode in ("baseline", "hc", "mhc"):
    row = [l for l in text.splitlines() if l.startswith("| %s | 1, 2 |" % mode)]
    assert row, (mode, text)
    assert re.search(r"\d\.\d{4} ± \d\.\d{4}", row[0]), row[0]
mhc_row = [l for l in text.splitlines() if l.startswith("| mhc | 1, 2 |")][0]
assert "| 1 / " in mhc_row, mhc_row   # forward Amax gain of mHC prints as 1
print("table ok")
PY
  check "diagnostics in every eval line; mHC forward gain is 1" python3 - "$runs/default_modes_short" <<'PY'
import json, os, sys
root = sys.argv[1]
for run in sorted(os.listdir(root)):
    path = os.path.join(root, run, "metrics.jsonl")
    if not os.path.isfile(path):
        continue
    evals = [json.loads(l) for l in open(path) if '"eval"' in l]
    steps = [e["step"] for e in evals]
    assert steps == [0, 8, 16, 24, 24], (run, steps)  # the continued run kept its early evals
    assert [e["split"] for e in evals] == ["subset"] * 4 + ["full"], (run, evals)
    for e in evals:
        d = e["diagnostics"]
        assert len(d["act_rms"]) == 9 and "total" in d["grad_norm"], (run, d.keys())
        if "baseline" in run:
            assert "amax" not in d and "h_res" not in d
            continue
        for key in ("amax", "h_res", "h_pre", "h_post"):
            assert key in d, (run, key)
        assert len(d["h_res"]["diag_mass"]) == 8
        if "mhc" in run:
            assert abs(d["amax"]["fwd_max"] - 1) < 1e-5, (run, d["amax"])
    assert evals[-1]["diagnostics"]["grad_norm"]["total"] > 0
print("diagnostics ok")
PY
  "$ablate" "$sweep" "${common[@]}" >again.out 2>&1
  check "a second invocation skips all six complete runs" test "$(grep -c 'complete, skipped' again.out)" -eq 6
}

# expect_reject DESCRIPTION PATTERN SWEEP_FILE [ablate args...]: exit code 1, one stderr
# line "ablate: error: ..." matching PATTERN, and no run directory created.
expect_reject() {
  local what=$1 pattern=$2 file=$3
  shift 3
  rm -rf rejected_runs
  "$ablate" "$file" --mhc "$mhc" --runs-dir rejected_runs "${data[@]}" "$@" >out.txt 2>err.txt
  local rc=$? lines
  lines=$(grep -c '' err.txt)
  local made
  made=$(find rejected_runs -mindepth 2 -maxdepth 2 -type d 2>/dev/null | wc -l)
  if [ "$rc" -eq 1 ] && [ "$lines" -eq 1 ] && grep -q "^ablate: error: " err.txt && grep -qE -- "$pattern" err.txt &&
     [ "$made" -eq 0 ]; then
    echo "ok: $what -> $(cat err.txt)"
  else
    echo "FAIL: $what (exit $rc, $lines lines, $made run dirs): $(cat err.txt)"
    failures=$((failures + 1))
  fi
}

sweep_file() {  # sweep_file NAME AXES_YAML [SET_YAML]
  {
    echo "name: $1"
    echo "base: configs/default.yaml"
    [ -n "${3:-}" ] && printf 'set:\n%s\n' "$3"
    printf 'axes:\n%s\n' "$2"
  } >"$1.yaml"
}

case_reject() {
  local short=(--set train.steps=2)
  sweep_file unknown_key "  residual.mdoe: [hc, mhc]"
  expect_reject "unknown key" "residual.mdoe.*did you mean 'residual.mode'" unknown_key.yaml
  sweep_file bad_value "  residual.mode: [baseline, hcx]"
  expect_reject "impossible value (after a good one)" "mode-hcx.*'hcx' is not one of" bad_value.yaml
  sweep_file bad_combo "  model.n_head: [4, 3]"
  expect_reject "impossible combination" "n_head-3.*not divisible" bad_combo.yaml
  sweep_file bad_type "  train.steps: [100, many]"
  expect_reject "wrong type" "train.steps.*integer" bad_type.yaml
  sweep_file bad_n "  residual.n: [0]" "  residual.mode: mhc"
  expect_reject "impossible stream count" "residual.n" bad_n.yaml
  sweep_file no_data "  run.seed: [1, 2]"
  expect_reject "data glob matching nothing" "data.train=.*matches no file" no_data.yaml --set "data.train=$work/nowhere/*.bin"
  sweep_file named "  run.name: [a, b]"
  expect_reject "run.name as an axis" "run.name.*set by ablate" named.yaml
  sweep_file empty_axis "  run.seed: []"
  expect_reject "empty axis" "non-empty list" empty_axis.yaml
  sweep_file repeated "  run.seed: [1, 1]"
  expect_reject "repeated value" "repeats a value" repeated.yaml
  printf 'base: configs/default.yaml\naxis:\n  run.seed: [1]\n' >typo_top.yaml
  expect_reject "unknown top-level key" "unknown top-level key 'axis'" typo_top.yaml
  printf 'axes:\n  run.seed: [1]\n' >no_base.yaml
  expect_reject "missing base" "'base'.*missing" no_base.yaml
  printf 'base: configs/nope.yaml\naxes:\n  run.seed: [1]\n' >missing_base.yaml
  expect_reject "missing base file" "nope.yaml.*not found" missing_base.yaml
  expect_reject "unknown --only run" "--only nope: no such run" "$repo/configs/ablations/default_modes.yaml" --only nope
  printf 'base: configs/default.yaml\nvariants:\n  lite: {residual.mode: mhc, residual.mhc.projection: birkhoff}\naxes:\n  residual.n: [4, 6]\n' >variant_bad.yaml
  expect_reject "variant impossible with an axis value" "variant-lite_n-6.*residual.mhc.projection=birkhoff needs residual.n <= 5" variant_bad.yaml
  printf 'base: configs/default.yaml\nvariants:\n  a: {residual.mode: mhc}\naxes:\n  residual.mode: [hc]\n' >variant_clash.yaml
  expect_reject "variant key that is also an axis" "variant 'a' sets 'residual.mode'.*also an axis" variant_clash.yaml

  # The committed sweep files are accepted, and the YAML subset reader (for machines without
  # python3-yaml) reads them as PyYAML does.
  for f in default_modes:9 default_modes_short:6; do
    local n=${f#*:}
    f=${f%:*}
    check "$f.yaml plans $n runs" sh -c "'$ablate' '$repo/configs/ablations/$f.yaml' --mhc '$mhc' --plan --runs-dir plan $(printf "'%s' " "${data[@]}") >plan_$f.txt && test \$(grep -c ' new ' plan_$f.txt) -eq $n"
    MHC_ABLATE_NO_PYYAML=1 "$ablate" "$repo/configs/ablations/$f.yaml" --mhc "$mhc" --plan --runs-dir plan "${data[@]}" >plan_${f}_subset.txt 2>&1
    check "$f.yaml: built-in YAML reader agrees with PyYAML" cmp -s plan_$f.txt plan_${f}_subset.txt
  done
  check "lr_stability.yaml plans 50 runs" sh -c "'$ablate' '$repo/configs/ablations/lr_stability.yaml' --mhc '$mhc' --plan --runs-dir plan $(printf "'%s' " "${data[@]}") | grep -c ' new ' | grep -qx 50"
  check "variants.yaml plans 24 runs" sh -c "'$ablate' '$repo/configs/ablations/variants.yaml' --mhc '$mhc' --plan --runs-dir plan $(printf "'%s' " "${data[@]}") >plan_variants.txt && test \$(grep -c ' new ' plan_variants.txt) -eq 24"
  MHC_ABLATE_NO_PYYAML=1 "$ablate" "$repo/configs/ablations/variants.yaml" --mhc "$mhc" --plan --runs-dir plan "${data[@]}" >plan_variants_subset.txt 2>&1
  check "variants.yaml: built-in YAML reader agrees with PyYAML" cmp -s plan_variants.txt plan_variants_subset.txt
  check "variants.yaml: the mhc-v4 runs get all three of its keys" grep -q "variant-mhc-v4_seed-1 .*residual.mode=mhc --set residual.mhc.numerics=deepseek_v4 --set residual.collapse=learned" plan_variants.txt
  # The GPU sweep is checked without a backend under --slurm (the submitting host may have no GPU).
  check "gpu_12l_d512.yaml plans 3 runs for Slurm" sh -c "'$ablate' '$repo/configs/ablations/gpu_12l_d512.yaml' --mhc '$mhc' --plan --slurm --runs-dir plan $(printf "'%s' " "${data[@]}") | grep -c ' new ' | grep -qx 3"
  check "YAML subset reader: nested maps, flow lists, comments, quotes" env PYTHONPATH="$repo/scripts/ablation" python3 -c '
from sweep import parse_yaml_subset as p
text = """# comment
name: "x y"   # trailing
set:
  a.b: 1.5e-3
  c: [1, "two", {d: 3}]
axes:
  e: [true, off, null, -4]
list:
  - 1
  - 2
"""
got = p(text, "t")
assert got == {"name": "x y", "set": {"a.b": 1.5e-3, "c": [1, "two", {"d": 3}]},
               "axes": {"e": [True, False, None, -4]}, "list": [1, 2]}, got
'

  # --slurm: one sbatch per run, each job running `srun mhc train ... --resume auto`.
  mkdir -p fakebin
  cat >fakebin/sbatch <<'SH'
#!/bin/sh
echo "$@" >>"$SBATCH_LOG"
echo "Submitted batch job $(wc -l <"$SBATCH_LOG")"
SH
  chmod +x fakebin/sbatch
  SBATCH_LOG="$work/sbatch.log" PATH="$work/fakebin:$PATH" "$ablate" "$repo/configs/ablations/default_modes.yaml" \
    --mhc "$mhc" --runs-dir slurm_runs "${data[@]}" --slurm --sbatch-arg=--gres=gpu:1 >slurm.out 2>&1
  check "--slurm submits 9 jobs with the extra sbatch arguments" sh -c "test \$(grep -c -- '--gres=gpu:1 .*job.sh' sbatch.log) -eq 9"
  check "each job script runs srun mhc train --resume auto" grep -q \
    "^srun .*mhc train -c .*--run-dir slurm_runs/default_modes/mode-hc_seed-2 --resume auto\$" \
    slurm_runs/default_modes/mode-hc_seed-2/job.sh
}

case_diverge() {
  local runs="$work/runs"
  {
    echo "name: diverge"
    echo "base: [configs/default.yaml, tests/e2e/tiny.yaml]"
    printf 'set:\n  train.steps: 24\n  train.warmup: 4\n  train.eval_every: 8\n  train.eval_batches: 2\n'
    printf '  train.final_eval_batches: 8\n  train.grad_clip: 0.0\n  train.min_lr: 0.0\n  train.checkpoint_every: 24\n'
    printf 'axes:\n  residual.mode: [baseline, mhc]\n  train.lr: [1.0e-3, 10.0]\n  run.seed: [1]\n'
  } >diverge.yaml
  local common=(--mhc "$mhc" --runs-dir "$runs" "${data[@]}")
  "$ablate" diverge.yaml "${common[@]}" >ablate.out 2>&1
  local rc=$?
  cat ablate.out
  check "the sweep with diverging runs exits 0" test "$rc" -eq 0
  check "both lr-10 runs are reported as diverged" test "$(grep -c 'lr-10.*: DIVERGED at step' ablate.out)" -eq 2
  check "both lr-0.001 runs finish" test "$(grep -c 'lr-0.001.*: done in' ablate.out)" -eq 2
  check "the summary counts 2 diverged, 0 failed" grep -q "4 runs, 0 failed, 2 diverged" ablate.out
  local div="$runs/diverge/mode-mhc_lr-10.0_seed-1"
  check "diverged runs stop early with a diverged record, no checkpoint, no window file" python3 - "$runs/diverge" <<'PY'
import glob, json, os, sys
for run in glob.glob(os.path.join(sys.argv[1], "*lr-10_*")):
    recs = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))]
    last = recs[-1]
    assert last["type"] == "diverged", (run, last)
    assert last["step"] < 24 and last["reason"] in ("loss_above_threshold", "nonfinite_loss", "nonfinite_grad_norm"), last
    assert last["threshold"] > 8.3 and last["threshold"] < 8.4, last   # 1.5 ln 256
    assert last["reason"] != "loss_above_threshold" or last["loss"] > last["threshold"], last
    assert not any(r["type"] == "eval" and r.get("split") == "full" for r in recs), run
    assert not glob.glob(os.path.join(run, "checkpoints", "step_*")), run
    assert not os.path.exists(os.path.join(run, "final_eval_windows.safetensors")), run
print("diverged records ok")
PY
  check "the diverged metrics.jsonl is documented" python3 "$here/../e2e/check_metrics_doc.py" "$div/metrics.jsonl" "$repo/docs/metrics.md"
  local out="$runs/diverge/report"
  check "report wrote lr_stability.png" test -s "$out/lr_stability.png"
  check "report marks the diverged runs and has the lr table" python3 - "$out/table.md" <<'PY'
import sys
text = open(sys.argv[1]).read()
assert "## Learning-rate stability" in text, text
for mode in ("baseline", "mhc"):
    row = [l for l in text.splitlines() if l.startswith("| %s | " % mode) and "**div**" in l]
    assert row, (mode, text)
    assert "| 0.001 | 0.001 |" in row[0], row[0]   # best lr, largest stable lr
runs = [l for l in text.splitlines() if l.startswith("| mode-") and "lr-10.0_" in l]
assert len(runs) == 2 and all("**diverged at step" in l for l in runs), runs
print("report ok")
PY
  "$ablate" diverge.yaml "${common[@]}" --no-report >again.out 2>&1
  check "a second invocation skips the diverged runs" test "$(grep -c 'diverged (step [0-9]*), skipped' again.out)" -eq 2
  # mhc train itself: exit status 3 and one line naming the step, for a loss above the
  # threshold and for a NaN (the threshold out of the way).
  "$mhc" train -c "$repo/configs/default.yaml" -c "$repo/tests/e2e/tiny.yaml" "${data[@]}" --set train.lr=10 \
    --set train.grad_clip=0 --run-dir direct >direct.out 2>direct.err
  rc=$?
  cat direct.err
  check "mhc train of a diverging run exits 3" test "$rc" -eq 3
  check "its last stderr line says where it diverged" sh -c "tail -n 1 direct.err | grep -q '^mhc train: diverged at step [0-9]* (lr .*exit status 3)'"
  "$mhc" train -c "$repo/configs/default.yaml" -c "$repo/tests/e2e/tiny.yaml" "${data[@]}" --set train.lr=1e8 \
    --set train.warmup=1 --set train.grad_clip=0 --set train.diverge_loss=1e300 --run-dir nan >nan.out 2>nan.err
  rc=$?
  check "a NaN loss stops the run with exit 3 and reason nonfinite_loss" sh -c \
    "test $rc -eq 3 && tail -n 1 nan/metrics.jsonl | grep -q '\"reason\":\"nonfinite_loss\",\"loss\":null'"
}

case "$case_name" in
  sweep) case_sweep ;;
  diverge) case_diverge ;;
  reject) case_reject ;;
  *) echo "unknown case $case_name"; exit 2 ;;
esac
finish
