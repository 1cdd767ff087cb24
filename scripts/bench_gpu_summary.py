#!/usr/bin/env python3
"""Summary table of a scripts/bench_gpu.sh results folder (standard library only, so it
runs on the GPU machine or later, here, over results copied back and merged).

Usage: bench_gpu_summary.py RESULTS_DIR [STEPS]

Reads mhc_<mode>_d<width>_rc<recompute>.json (mhc bench), peer_<mode>_d<width>.json
(scripts/bench_peer.py), config_<...>.yaml (the resolved configs) and copy.json (the
device-to-device copy bandwidth) and prints, per run: tokens/s of mhc and of the PyTorch
peer and their ratio, ms/step, MFU, peak memory, each mode's step-time overhead over the
baseline of the same implementation and width, and the connection kernels' byte floor
with the ratio overhead / floor.
"""
import glob, json, os, re, sys

if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
    print(__doc__)
    sys.exit(0 if len(sys.argv) >= 2 else 2)
out = sys.argv[1]
steps = sys.argv[2] if len(sys.argv) > 2 else "?"
def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except Exception:
        return None

copy = load(os.path.join(out, "copy.json")) or {}
copy_gbs = copy.get("copy_gbs")

def tiny_yaml(path):
    root = {}
    stack = [(-1, root)]
    try:
        lines = open(path).read().splitlines()
    except Exception:
        return {}
    for raw in lines:
        if not raw.strip():
            continue
        ind = len(raw) - len(raw.lstrip(" "))
        k, _, v = raw.strip().partition(":")
        while stack[-1][0] >= ind:
            stack.pop()
        if v.strip() == "":
            stack[-1][1][k] = {}
            stack.append((ind, stack[-1][1][k]))
        else:
            stack[-1][1][k] = v.strip()
    return root

def shape(tag):
    """Shape from the resolved config the run used (defaults: configs/*.yaml)."""
    c = tiny_yaml(os.path.join(out, "config_%s.yaml" % tag.rsplit("_rc", 1)[0]))
    m, t = c.get("model", {}), c.get("train", {})
    mode, width, _ = TAG.match(tag).groups()
    C = int(m.get("d_model", width))
    return dict(C=C, L=int(m.get("n_layer", 12)), T=int(m.get("seq_len", 1024)),
                B=int(t.get("micro_batch", 16 if C == 768 else 8)),
                n=int(c.get("residual", {}).get("n", 4)))

def extra_bytes(mode, s, recompute):
    """Bytes the HC/mHC connection kernels must move per step beyond the baseline's
    residual path (each input read once, each output written once; activations bf16,
    coefficients fp32), summed over the 2L sublayers and the ends."""
    e, f4 = 2, 4
    C, n, N, K = s["C"], s["n"], s["B"] * s["T"], 2 * s["L"]
    nC, D, nn = n * C, 2 * n + n * n, n * n
    base = 2 * C * e                          # residual add in the output GEMM's epilogue
    agg_f = nC * e + n * f4 + C * e           # u = Σ pre X
    mrg_f = 2 * nC * e + C * e + (nn + n) * f4  # X' = res X + post f
    mrg_b = 3 * nC * e + 2 * C * e + 2 * (nn + n) * f4
    agg_b = 3 * nC * e + C * e + 2 * n * f4   # dX += pre du (RMW), dpre
    if mode == "mhc":
        cf_f = nC * e + (D + 1 + D) * f4      # X·φ with Σv² → m, r, pre, post, res
        cf_b = 3 * nC * e + (2 * D + 1) * f4  # X, dX RMW, m, r, dcoeffs
    elif mode == "hc-dynamic":
        cf_f = nC * e + (n + n * (n + 2) + D) * f4
        cf_b = 3 * nC * e + (n + n * (n + 2) + D) * f4
    else:  # hc static: per-token broadcast of the static coefficients
        cf_f, cf_b = D * f4, D * f4
    per_sub = cf_f + agg_f + mrg_f + mrg_b + agg_b + cf_b - base
    if recompute:
        per_sub += agg_f  # u again
        R = max(1, min(K, round(K ** 0.5)))
        per_sub += mrg_f * (R - 1) / R  # replayed merges of non-stored states
    ends = 2 * (C * e + nC * e)  # expand + collapse, forward and backward
    return N * (K * per_sub + ends)

MODE_ORDER = {"baseline": 0, "hc": 1, "hc-dynamic": 2, "mhc": 3}
TAG = re.compile(r"(.+)_d(\d+)_rc([\w-]+)$")  # <mode>_d<width>_rc<recompute>; rc- = peer only

def sort_key(tag):
    mode, width, rc = TAG.match(tag).groups()
    return (int(width), MODE_ORDER.get(mode, 9), rc)

def names(prefix):
    """Tags of the runs with files <prefix><tag>.json or .txt (a failed run has no .json)."""
    found = set()
    for ext in (".json", ".txt"):
        for p in glob.glob(os.path.join(out, prefix + "*_d*" + ext)):
            found.add(os.path.basename(p)[len(prefix):-len(ext)])
    return sorted(found)

# One row per mhc run (with the peer of its mode and width), plus one per peer run that
# has no mhc run (bench_gpu.sh --no-mhc).
rows = {}
for tag in names("mhc_"):
    mode_width = tag.rsplit("_rc", 1)[0]
    rows[tag] = (load(os.path.join(out, "mhc_%s.json" % tag)),
                 load(os.path.join(out, "peer_%s.json" % mode_width)))
for mode_width in names("peer_"):
    if not any(t.rsplit("_rc", 1)[0] == mode_width for t in rows):
        rows[mode_width + "_rc-"] = (None, load(os.path.join(out, "peer_%s.json" % mode_width)))
rows = dict(sorted(rows.items(), key=lambda kv: sort_key(kv[0])))
not_gpu = [t for t, (m, _) in rows.items() if m and not str(m.get("device", "")).startswith("cuda")]

def gib(b):
    return "%.2f" % (b / 2**30) if b else "-"

print("# GPU benchmark (%s)" % (copy.get("device") or "device unknown"))
print()
if not_gpu:
    print("**WARNING: these mhc runs did not run on a GPU: %s**" % ", ".join(not_gpu))
    print()
if copy_gbs:
    print("device-to-device copy bandwidth (read + write): %.0f GB/s" % copy_gbs)
print()
print("| run | mhc tok/s | peer tok/s | mhc/peer | mhc ms/step | MFU | mhc peak GiB | peer peak GiB | overhead vs baseline (mhc / peer) | floor ms | overhead/floor |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for tag, (m, p) in rows.items():
    mode, width, rc = TAG.match(tag).groups()
    base = [v for k, v in rows.items() if k.startswith("baseline_d%s_rc" % width)]
    bm, bp = (base[0] if base else (None, None))
    def ov(a, b):
        return "%.1f%%" % (100 * (a["ms_per_step"] - b["ms_per_step"]) / b["ms_per_step"]) if a and b else "-"
    floor = ratio = "-"
    if mode != "baseline" and copy_gbs and m and bm:
        fl_ms = extra_bytes(mode, shape(tag), rc == "true") / (copy_gbs * 1e9) * 1e3
        floor = "%.2f" % fl_ms
        ratio = "%.2f" % ((m["ms_per_step"] - bm["ms_per_step"]) / fl_ms)
    print("| %s | %s | %s | %s | %s | %s | %s | %s | %s / %s | %s | %s |" % (
        tag,
        "%.0f" % m["tokens_per_s"] if m else ("-" if rc == "-" else "FAILED"),
        "%.0f" % p["tokens_per_s"] if p else "-",
        "%.2fx" % (m["tokens_per_s"] / p["tokens_per_s"]) if m and p else "-",
        "%.1f" % m["ms_per_step"] if m else "-",
        "%.1f%%" % (100 * m["mfu"]) if m and m.get("mfu") else "-",
        gib(m["peak_bytes"]) if m else "-",
        gib(p["peak_bytes"]) if p else "-",
        ov(m, bm) if mode != "baseline" else "-", ov(p, bp) if mode != "baseline" else "-",
        floor, ratio))
print()
print("overhead = (step time − baseline step time) / baseline step time, same width and")
print("implementation (the mHC paper reports 6.7% at n = 4 with its kernels). floor = extra")
print("bytes the connection kernels must move per step / the copy bandwidth above;")
print("overhead/floor = (mode − baseline step time) / floor (target ≤ 1.25 for mHC).")
print("Steps timed: %s (after warmup); peak memory: mhc = bytes allocated through the backend," % steps)
print("peer = torch.cuda.max_memory_allocated().")
