#!/usr/bin/python3
"""PyTorch side of scripts/bench_cpu.sh: training-step throughput of the reference model
(tests/reference/mhc_reference.py) for a resolved `mhc` config, measured the way
`mhc bench` measures: random tokens, micro_batch x seq_len x grad_accum tokens per step,
forward + backward + gradient clipping (1.0) + AdamW (lr 1e-4, betas 0.9/0.95, eps 1e-8,
weight decay 0.1 on matrices only), float32, warmup steps excluded from the timing.

    /usr/bin/python3 scripts/bench_cpu_torch.py --config resolved.yaml --threads 2 \
        [--steps 10] [--warmup 2] [--json out.json]

resolved.yaml is the output of `mhc train -c CONFIG --set ... --print-config`.
Set OMP_NUM_THREADS / OPENBLAS_NUM_THREADS to the same count before starting Python
(scripts/bench_cpu.sh does); --threads calls torch.set_num_threads.
"""

import argparse
import json
import os
import sys
import time

import torch
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "reference"))
import mhc_reference as ref  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True, help="resolved config YAML (mhc train --print-config)")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", default="")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    with open(args.config) as f:
        resolved = yaml.safe_load(f)
    cfg = ref.config_from_resolved(resolved)
    train = resolved["train"]
    B, T = int(train["micro_batch"]), int(resolved["model"]["seq_len"])
    accum = max(1, int(train.get("grad_accum", 0) or 0))
    seed = int(resolved.get("run", {}).get("seed", 1337))

    w = {k: v.requires_grad_(True) for k, v in ref.init_weights(cfg, torch.float32, seed).items()}
    opt = torch.optim.AdamW(ref.param_groups(cfg, w, 0.1), lr=1e-4, betas=(0.9, 0.95), eps=1e-8)
    g = torch.Generator().manual_seed(1)
    inputs = torch.randint(0, cfg.vocab, (B, T), generator=g)
    targets = torch.randint(0, cfg.vocab, (B, T), generator=g)
    params = list(w.values())

    def step():
        opt.zero_grad(set_to_none=True)
        for _ in range(accum):
            loss = ref.loss_fn(cfg, w, inputs, targets) / accum
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return float(loss)

    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(max(1, args.steps)):
        last = step()
    elapsed = time.perf_counter() - t0
    steps = max(1, args.steps)
    tokens_per_step = B * T * accum
    result = {
        "device": f"torch {torch.__version__} cpu-f32 ({torch.get_num_threads()} threads)",
        "mode": cfg.mode,
        "n": cfg.n,
        "tokens_per_step": tokens_per_step,
        "tokens_per_s": tokens_per_step * steps / elapsed,
        "ms_per_step": 1000.0 * elapsed / steps,
        "last_loss": last,
    }
    print(f"torch {cfg.mode} (n={cfg.n}): {result['tokens_per_s']:.1f} tokens/s, "
          f"{result['ms_per_step']:.2f} ms/step ({torch.get_num_threads()} threads)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
