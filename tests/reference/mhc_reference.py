"""PyTorch reference model of `mhc` (baseline / HC / mHC residual connections).

tests/reference/ -- what is here and how it is used
===================================================

mhc_reference.py      this file: the same decoder-only transformer as core/model.cpp,
                      written independently from the specs (shared/spec/residuals.md,
                      architecture.md "Model backbone" / "Exported weights") with ordinary
                      tensor ops; gradients come from autograd (Sinkhorn-Knopp is unrolled
                      and differentiated by autograd, not by a hand-written backward).
                      Runs in float64 or float32. Weights are a dict keyed by the export
                      names (embed.weight, blocks.{l}.attn.wq.weight, ...).
dump_reference.cpp    `mhc_reference_dump` (built by tests/CMakeLists.txt): one forward +
                      backward of a tiny model with CpuBackend<double> or <float>, written
                      to one safetensors file (weights, grad.<name>, inputs, targets, loss,
                      config metadata).
compare_reference.py  loads that file (read_safetensors below: json + struct + numpy),
                      runs this reference and compares the loss and every gradient tensor:
                      max|a-b| / max|b| <= 1e-5 (float64) or 1e-4 (float32). Prints a
                      per-tensor table; exit 0 pass, 1 fail, 77 skipped (no torch).
run_reference_test.sh the ctest driver of `torch_reference_<case>`: checks that
                      /usr/bin/python3 can import torch (else prints the reason and exits
                      77, which ctest reports as skipped), then dumps and compares in
                      float64 and in float32.

Run by hand:
    build/tests/mhc_reference_dump --mode mhc --n 4 --out /tmp/ref.safetensors
    /usr/bin/python3 tests/reference/compare_reference.py /tmp/ref.safetensors
or all cases: cd build && ctest -R torch_reference --output-on-failure

The module also provides `load_exported(path)` (config + weights of an `mhc export` file
or a checkpoint's model.safetensors, BF16 included), and `init_weights` and the AdamW
parameter groups used by scripts/bench_cpu_torch.py (the PyTorch side of
scripts/bench_cpu.sh).

float32 note: a few gradients are tiny differences of large terms (HC's `a` of the first
sublayer, where all streams equal the embedding and RMSNorm's scale invariance cancels
<X_i, du>); for those compare_reference.py allows 10x PyTorch's own float32-vs-float64
error instead of 1e-4 and says so in its output. float64 has no such allowance.

Use Debian's /usr/bin/python3 (PyTorch 1.13 + numpy); the python3 first on PATH may not
have them.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


# ---------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------


@dataclass
class RefConfig:
    vocab: int            # V (real vocabulary; the reference never materialises padding)
    d_model: int          # C
    n_layer: int          # L
    n_head: int
    hidden: int           # MLP hidden size H
    mlp: str = "swiglu"   # swiglu | gelu
    tied: bool = True
    mode: str = "mhc"     # baseline | hc | mhc
    n: int = 4            # residual streams (forced to 1 for baseline)
    hc_dynamic: bool = False
    sinkhorn_iters: int = 20
    norm_eps: float = 1e-5
    mhc_eps: float = 1e-6
    rope_theta: float = 10000.0
    # init (only used by init_weights; comparisons load weights from a file)
    init_std: float = 0.02
    hc_gate_init: float = 0.01
    mhc_alpha_init: float = 0.01
    mhc_init_logit: float = 3.0
    # mHC variants (residuals.md "Variants") and the collapse
    mhc_projection: str = "sinkhorn"  # sinkhorn | birkhoff | kronecker | identity
    mhc_numerics: str = "paper"       # paper | deepseek_v4
    mhc_dynamic: bool = True          # False: static mHC (H~ = bias)
    collapse: str = "sum"             # sum | learned

    def __post_init__(self):
        if self.mode not in ("baseline", "hc", "mhc"):
            raise ValueError(f"unknown residual mode {self.mode!r}")
        if self.mlp not in ("swiglu", "gelu"):
            raise ValueError(f"unknown mlp {self.mlp!r}")
        if self.mode == "baseline":
            self.n = 1
        if self.d_model % self.n_head or (self.d_model // self.n_head) % 2:
            raise ValueError("d_model must split into heads of even size")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def n_res(self) -> int:  # res logits R: n^2, n!, log2 n or 0 by projection
        n = self.n
        return {"sinkhorn": n * n, "birkhoff": math.factorial(n),
                "kronecker": int(round(math.log2(n))), "identity": 0}[self.mhc_projection]

    @property
    def n_coeff(self) -> int:  # mHC coefficient columns D = 2n + R
        return 2 * self.n + self.n_res


def _truthy(s: str) -> bool:
    return str(s).strip().lower() in ("1", "true", "yes", "on")


def config_from_metadata(meta: Dict[str, str]) -> RefConfig:
    """The config written by mhc_reference_dump into the safetensors metadata."""
    return RefConfig(
        vocab=int(meta["V"]), d_model=int(meta["C"]), n_layer=int(meta["L"]),
        n_head=int(meta["n_head"]), hidden=int(meta["hidden"]), mlp=meta["mlp"],
        tied=_truthy(meta["tied"]), mode=meta["mode"], n=int(meta["n"]),
        hc_dynamic=_truthy(meta["hc_dynamic"]), sinkhorn_iters=int(meta["sinkhorn_iters"]),
        norm_eps=float(meta["norm_eps"]), mhc_eps=float(meta["mhc_eps"]),
        rope_theta=float(meta["rope_theta"]),
        mhc_projection=meta.get("mhc_projection", "sinkhorn"),
        mhc_numerics=meta.get("mhc_numerics", "paper"),
        mhc_dynamic=_truthy(meta.get("mhc_dynamic", "true")),
        collapse=meta.get("collapse", "sum"))


def config_from_resolved(cfg: dict) -> RefConfig:
    """From a resolved `mhc` config (the YAML of --print-config, as nested dicts)."""
    m, r = cfg["model"], cfg["residual"]
    C = int(m["d_model"])
    hidden = int(m.get("mlp_hidden", 0) or 0)
    if hidden <= 0:  # the same default as the trainer: 8/3 C (swiglu) or 4 C, multiple of 64
        raw = (8 * C) // 3 if m["mlp"] == "swiglu" else 4 * C
        hidden = (raw + 63) // 64 * 64
    hc, mhc = r.get("hc", {}), r.get("mhc", {})
    return RefConfig(
        vocab=int(m["vocab_size"]), d_model=C, n_layer=int(m["n_layer"]),
        n_head=int(m["n_head"]), hidden=hidden, mlp=str(m["mlp"]),
        tied=bool(m["tie_embeddings"]), mode=str(r["mode"]), n=int(r["n"]),
        hc_dynamic=bool(hc.get("dynamic", False)),
        sinkhorn_iters=int(mhc.get("sinkhorn_iters", 20)),
        norm_eps=float(m.get("norm_eps", 1e-5)), mhc_eps=float(mhc.get("eps", 1e-6)),
        rope_theta=float(m.get("rope_theta", 10000.0)), init_std=float(m.get("init_std", 0.02)),
        hc_gate_init=float(hc.get("gate_init", 0.01)),
        mhc_alpha_init=float(mhc.get("alpha_init", 0.01)),
        mhc_init_logit=float(mhc.get("init_logit", 3.0)),
        mhc_projection=str(mhc.get("projection", "sinkhorn")),
        mhc_numerics=str(mhc.get("numerics", "paper")),
        mhc_dynamic=bool(mhc.get("dynamic", True)),
        collapse=str(r.get("collapse", "sum")))


# ---------------------------------------------------------------------------------------
# safetensors (a small reader: 8-byte header length, JSON header, raw little-endian data)
# ---------------------------------------------------------------------------------------

_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "I64": "<i8", "I32": "<i4", "BF16": "<u2"}


def read_safetensors(path: str):
    """(dict name -> numpy array, metadata dict). BF16 is widened to float32."""
    import json
    import struct

    import numpy as np

    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    (hlen,) = struct.unpack("<Q", blob[:8])
    if 8 + hlen > len(blob):
        raise ValueError(f"{path}: header length {hlen} exceeds the file")
    header = json.loads(blob[8:8 + hlen].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    data = memoryview(blob)[8 + hlen:]
    tensors = {}
    for name, info in header.items():
        dt = info["dtype"]
        if dt not in _ST_DTYPES:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {dt}")
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if not 0 <= begin <= end <= len(data):
            raise ValueError(f"{path}: tensor {name} lies outside the data section")
        arr = np.frombuffer(data[begin:end], dtype=_ST_DTYPES[dt])
        if arr.size != int(np.prod(shape, dtype=np.int64)):
            raise ValueError(f"{path}: tensor {name}: {arr.size} values for shape {list(shape)}")
        if dt == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = arr.reshape(shape).copy()
    return tensors, meta


def load_exported(path: str, dtype=torch.float32) -> Tuple[RefConfig, Dict[str, Tensor]]:
    """Config and weights of a file written by `mhc export` or a checkpoint's
    model.safetensors (the resolved config is the YAML in metadata "config")."""
    import yaml  # Debian's python3-yaml; only needed here

    tensors, meta = read_safetensors(path)
    if "config" not in meta:
        raise ValueError(f"{path}: no 'config' metadata (not an mhc export?)")
    cfg = config_from_resolved(yaml.safe_load(meta["config"]))
    names = [name for name, _, _ in param_specs(cfg)]
    missing = [n for n in names if n not in tensors]
    if missing:
        raise ValueError(f"{path}: missing {', '.join(missing[:5])}")
    return cfg, {n: torch.from_numpy(tensors[n]).to(dtype) for n in names}


# ---------------------------------------------------------------------------------------
# Parameter table (export names, shapes, weight decay)
# ---------------------------------------------------------------------------------------


def param_specs(cfg: RefConfig) -> List[Tuple[str, Tuple[int, ...], bool]]:
    """(export name, shape, weight decay) of every parameter, in export order."""
    V, C, H, n, D = cfg.vocab, cfg.d_model, cfg.hidden, cfg.n, cfg.n_coeff
    specs: List[Tuple[str, Tuple[int, ...], bool]] = [("embed.weight", (V, C), True)]

    def conn(prefix: str):
        if cfg.mode == "hc":
            specs.extend([(prefix + "a", (n,), False), (prefix + "A", (n, n), False),
                          (prefix + "b", (n,), False)])
            if cfg.hc_dynamic:
                specs.extend([(prefix + "norm.weight", (C,), False), (prefix + "w_a", (C,), True),
                              (prefix + "W_A", (C, n), True), (prefix + "w_b", (C,), True),
                              (prefix + "s_alpha", (), False), (prefix + "s_beta", (), False)])
        elif cfg.mode == "mhc":
            if cfg.mhc_dynamic:  # static mHC has the bias alone
                specs.extend([(prefix + "phi", (n * C, D), True), (prefix + "alpha", (3,), False)])
            specs.append((prefix + "bias", (D,), False))

    for l in range(cfg.n_layer):
        p = f"blocks.{l}."
        specs.append((p + "attn_norm.weight", (C,), False))
        specs.extend((p + f"attn.{w}.weight", (C, C), True) for w in ("wq", "wk", "wv", "wo"))
        specs.append((p + "mlp_norm.weight", (C,), False))
        if cfg.mlp == "swiglu":
            specs.append((p + "mlp.w_gate.weight", (H, C), True))
        specs.append((p + "mlp.w_up.weight", (H, C), True))
        specs.append((p + "mlp.w_down.weight", (C, H), True))
        conn(p + "attn_conn.")
        conn(p + "mlp_conn.")
    if cfg.collapse == "learned" and cfg.mode != "baseline":
        specs.extend([("collapse.phi", (n * C, n), True), ("collapse.alpha", (1,), False),
                      ("collapse.bias", (n,), False)])
    specs.append(("final_norm.weight", (C,), False))
    if not cfg.tied:
        specs.append(("lm_head.weight", (V, C), True))
    return specs


def init_weights(cfg: RefConfig, dtype=torch.float32, seed: int = 0) -> Dict[str, Tensor]:
    """Spec initialisation (residuals.md "Init"), drawn from torch's generator. Used for
    benchmarking; the numbers differ from the C++ counter-based draws."""
    g = torch.Generator().manual_seed(seed)
    n, s = cfg.n, cfg.mhc_init_logit
    out_std = cfg.init_std / math.sqrt(2.0 * cfg.n_layer)
    w: Dict[str, Tensor] = {}
    for name, shape, _ in param_specs(cfg):
        leaf, k = None, None
        if name.startswith("collapse."):  # learned collapse: phi = 0, alpha, bias = 0
            w[name] = torch.full(shape, cfg.mhc_alpha_init if name == "collapse.alpha" else 0.0,
                                 dtype=dtype)
            continue
        if "_conn." in name:  # sublayer index: 2l (attn) or 2l+1 (mlp)
            l = int(name.split(".")[1])
            k = 2 * l + (1 if ".mlp_conn." in name else 0)
            leaf = name.split("_conn.", 1)[1]
        if leaf is None:
            if name.endswith("norm.weight"):
                t = torch.ones(shape, dtype=dtype)
            else:
                std = out_std if (name.endswith("wo.weight") or name.endswith("w_down.weight")) \
                    else cfg.init_std
                t = torch.randn(shape, generator=g, dtype=dtype) * std
        elif leaf == "a":
            t = torch.zeros(shape, dtype=dtype)
            t[k % n] = 1
        elif leaf == "A":
            t = torch.eye(n, dtype=dtype)
        elif leaf in ("b", "norm.weight"):
            t = torch.ones(shape, dtype=dtype)
        elif leaf in ("s_alpha", "s_beta"):
            t = torch.full(shape, cfg.hc_gate_init, dtype=dtype)
        elif leaf == "alpha":
            t = torch.full(shape, cfg.mhc_alpha_init, dtype=dtype)
        elif leaf == "bias":
            pre = torch.full((n,), -s, dtype=dtype)
            pre[k % n] = s
            res = res_bias_init(cfg, dtype)
            t = torch.cat([pre, torch.zeros(n, dtype=dtype), res.reshape(-1)])
        else:  # phi, w_a, W_A, w_b
            t = torch.zeros(shape, dtype=dtype)
        w[name] = t
    return w


def res_bias_init(cfg: RefConfig, dtype) -> Tensor:
    """Init of the res part of the mHC bias by projection (residuals.md "Variants")."""
    n, s = cfg.n, cfg.mhc_init_logit
    if cfg.mhc_projection == "sinkhorn":
        return 2 * s * torch.eye(n, dtype=dtype) - s
    if cfg.mhc_projection == "birkhoff":
        # identity logit x (others 0) so the diagonal mass equals the Sinkhorn init's:
        # (e^x + (n-1)! - 1) / (e^x + n! - 1) = 1 / (1 + (n-1) e^{-2s})
        t = torch.zeros(math.factorial(n), dtype=dtype)
        if n > 1:
            d = 1.0 / (1.0 + (n - 1) * math.exp(-2 * s))
            t[0] = math.log((d * (math.factorial(n) - 1) - (math.factorial(n - 1) - 1)) / (1 - d))
        return t
    if cfg.mhc_projection == "kronecker":
        return torch.full((cfg.n_res,), s, dtype=dtype)
    return torch.zeros(0, dtype=dtype)


# ---------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """y = x / sqrt(mean(x^2) + eps) * w over the last dimension."""
    return x * torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + eps) * weight


def rope_tables(T: int, head_dim: int, theta: float, dtype) -> Tuple[Tensor, Tensor]:
    """cos/sin [T, head_dim] for rotate-half RoPE: angle t * theta^(-2i/hd), i < hd/2,
    repeated for both halves. Computed in float64, then cast."""
    half = head_dim // 2
    inv_freq = theta ** (-2.0 * torch.arange(half, dtype=torch.float64) / head_dim)
    ang = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x [..., T, hd]: element i pairs with i + hd/2."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def causal_attention(h: Tensor, wq: Tensor, wk: Tensor, wv: Tensor, wo: Tensor, n_head: int,
                     cos: Tensor, sin: Tensor) -> Tensor:
    B, T, C = h.shape
    hd = C // n_head

    def heads(t: Tensor) -> Tensor:  # [B, T, C] -> [B, heads, T, hd]
        return t.view(B, T, n_head, hd).transpose(1, 2)

    q = apply_rope(heads(F.linear(h, wq)), cos, sin)
    k = apply_rope(heads(F.linear(h, wk)), cos, sin)
    v = heads(F.linear(h, wv))
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
    mask = torch.ones(T, T, dtype=torch.bool, device=h.device).triu(1)
    probs = scores.masked_fill(mask, float("-inf")).softmax(dim=-1)
    out = (probs @ v).transpose(1, 2).reshape(B, T, C)
    return F.linear(out, wo)


def mlp(h: Tensor, w: Dict[str, Tensor], prefix: str, kind: str) -> Tensor:
    if kind == "swiglu":
        act = F.silu(F.linear(h, w[prefix + "w_gate.weight"])) * F.linear(h, w[prefix + "w_up.weight"])
    else:
        act = F.gelu(F.linear(h, w[prefix + "w_up.weight"]), approximate="tanh")
    return F.linear(act, w[prefix + "w_down.weight"])


def sinkhorn_knopp(Z: Tensor, iters: int) -> Tensor:
    """Alternating normalisation of exp(Z) over the last two dims, columns then rows,
    `iters` times; returns the last iterate (rows sum to 1). Differentiated by autograd
    through every iteration. The max shift is a constant (Sinkhorn is invariant to it)."""
    M = torch.exp(Z - Z.detach().amax(dim=(-2, -1), keepdim=True))
    for _ in range(iters):
        M = M / M.sum(dim=-2, keepdim=True)   # columns
        M = M / M.sum(dim=-1, keepdim=True)   # rows
    return M


def v4_sinkhorn(Z: Tensor, iters: int, eps: float) -> Tensor:
    """DeepSeek-V4's projection of Z (already transposed): softmax over each column, + eps,
    rows divided by (sum + eps), then iters-1 times columns and rows, each by (sum + eps)."""
    M = Z.softmax(dim=-2) + eps
    M = M / (M.sum(dim=-1, keepdim=True) + eps)
    for _ in range(iters - 1):
        M = M / (M.sum(dim=-2, keepdim=True) + eps)
        M = M / (M.sum(dim=-1, keepdim=True) + eps)
    return M


def permutation_matrices(n: int, dtype) -> Tensor:
    """[n!, n, n]: P_k[i][sigma_k(i)] = 1, sigma_k the k-th permutation in lexicographic order."""
    perms = list(itertools.permutations(range(n)))  # lexicographic for a sorted input
    P = torch.zeros(len(perms), n, n, dtype=dtype)
    for k, sigma in enumerate(perms):
        for i, j in enumerate(sigma):
            P[k, i, j] = 1
    return P


def project_res(logits: Tensor, cfg: RefConfig) -> Tensor:
    """H_res [..., n, n] from the res logits [..., R] of the configured projection."""
    n = cfg.n
    if cfg.mhc_projection == "sinkhorn":
        Z = logits.unflatten(-1, (n, n))
        if cfg.mhc_numerics == "deepseek_v4":
            return v4_sinkhorn(Z.transpose(-2, -1), cfg.sinkhorn_iters, cfg.mhc_eps)
        return sinkhorn_knopp(Z, cfg.sinkhorn_iters)
    if cfg.mhc_projection == "birkhoff":
        w = logits.softmax(dim=-1)
        return torch.einsum("...k,kij->...ij", w, permutation_matrices(n, logits.dtype))
    shape = logits.shape[:-1]
    if cfg.mhc_projection == "kronecker":  # kron(B_1, kron(B_2, ...)), B_1 outermost
        H = torch.ones(shape + (1, 1), dtype=logits.dtype)
        for l in range(cfg.n_res):
            p = torch.sigmoid(logits[..., l])
            B = torch.stack([torch.stack([p, 1 - p], -1), torch.stack([1 - p, p], -1)], -2)
            H = torch.einsum("...ab,...ij->...aibj", H, B).flatten(-4, -3).flatten(-2, -1)
        return H
    return torch.eye(n, dtype=logits.dtype).expand(shape + (n, n))


# ---------------------------------------------------------------------------------------
# Connections: each returns (u, merge) where u is the sublayer input and merge(f) the new
# residual state. X is [B, T, n, C] (stream i = X[..., i, :]).
# ---------------------------------------------------------------------------------------


def hc_connection(X: Tensor, w: Dict[str, Tensor], p: str, cfg: RefConfig):
    a, A, b = w[p + "a"], w[p + "A"], w[p + "b"]
    if cfg.hc_dynamic:
        Xbar = rms_norm(X, w[p + "norm.weight"], cfg.norm_eps)             # per stream
        a = w[p + "s_alpha"] * torch.tanh(Xbar @ w[p + "w_a"]) + a           # [B,T,n]
        A = w[p + "s_alpha"] * torch.tanh(Xbar @ w[p + "W_A"]) + A           # [B,T,n,n], row i from X_i
        b = w[p + "s_beta"] * torch.tanh(Xbar @ w[p + "w_b"]) + b            # [B,T,n]
    else:
        a, A, b = a.expand(X.shape[:-2] + a.shape), A.expand(X.shape[:-2] + A.shape), \
            b.expand(X.shape[:-2] + b.shape)
    u = torch.einsum("...i,...ic->...c", a, X)

    def merge(f: Tensor) -> Tensor:  # X'_j = sum_i A_ij X_i + b_j f
        return torch.einsum("...ij,...ic->...jc", A, X) + b.unsqueeze(-1) * f.unsqueeze(-2)

    return u, merge


def mhc_connection(X: Tensor, w: Dict[str, Tensor], p: str, cfg: RefConfig, record=None):
    n, R = cfg.n, cfg.n_res
    beta = w[p + "bias"]
    b_pre, b_post, b_res = beta.split([n, n, R])
    if cfg.mhc_dynamic:
        v = X.flatten(-2)                                                    # [B,T,nC]
        r = torch.sqrt(v.square().mean(dim=-1, keepdim=True) + cfg.mhc_eps)
        m = (v @ w[p + "phi"]) / r                                           # [B,T,D]
        alpha = w[p + "alpha"]
        m_pre, m_post, m_res = m.split([n, n, R], dim=-1)
        t_pre, t_post, t_res = alpha[0] * m_pre + b_pre, alpha[1] * m_post + b_post, \
            alpha[2] * m_res + b_res
    else:  # static mHC: H~ = bias for every token
        shape = X.shape[:-2]
        t_pre, t_post, t_res = b_pre.expand(shape + (n,)), b_post.expand(shape + (n,)), \
            b_res.expand(shape + (R,))
    H_pre = torch.sigmoid(t_pre)
    if cfg.mhc_numerics == "deepseek_v4":
        H_pre = H_pre + cfg.mhc_eps
    H_post = 2 * torch.sigmoid(t_post)
    H_res = project_res(t_res, cfg)
    if record is not None:
        record.append({"pre": H_pre, "post": H_post, "res": H_res})
    u = torch.einsum("...i,...ic->...c", H_pre, X)

    def merge(f: Tensor) -> Tensor:  # X'_i = sum_j H_res_ij X_j + H_post_i f
        return torch.einsum("...ij,...jc->...ic", H_res, X) + H_post.unsqueeze(-1) * f.unsqueeze(-2)

    return u, merge


# ---------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------


def forward_logits(cfg: RefConfig, w: Dict[str, Tensor], tokens: Tensor, record=None) -> Tensor:
    """Logits [B, T, V] for tokens [B, T] (int64). With `record` (a list), mHC appends
    each sublayer's coefficients {pre, post, res} and then {"X": the merged state}."""
    B, T = tokens.shape
    emb = F.embedding(tokens, w["embed.weight"])                             # [B,T,C]
    cos, sin = rope_tables(T, cfg.head_dim, cfg.rope_theta, emb.dtype)

    def sublayer(k: int, u: Tensor) -> Tensor:  # F_k(u) = Sublayer_k(RMSNorm_k(u))
        l, is_mlp = divmod(k, 2)
        p = f"blocks.{l}."
        if not is_mlp:
            h = rms_norm(u, w[p + "attn_norm.weight"], cfg.norm_eps)
            return causal_attention(h, w[p + "attn.wq.weight"], w[p + "attn.wk.weight"],
                                    w[p + "attn.wv.weight"], w[p + "attn.wo.weight"],
                                    cfg.n_head, cos, sin)
        h = rms_norm(u, w[p + "mlp_norm.weight"], cfg.norm_eps)
        return mlp(h, w, p + "mlp.", cfg.mlp)

    def conn_prefix(k: int) -> str:
        return f"blocks.{k // 2}." + ("mlp_conn." if k % 2 else "attn_conn.")

    if cfg.mode == "baseline":
        x = emb
        for k in range(2 * cfg.n_layer):
            x = x + sublayer(k, x)
        y = x
    else:
        X = emb.unsqueeze(-2).expand(B, T, cfg.n, cfg.d_model)              # expand
        for k in range(2 * cfg.n_layer):
            if cfg.mode == "hc":
                u, merge = hc_connection(X, w, conn_prefix(k), cfg)
            else:
                u, merge = mhc_connection(X, w, conn_prefix(k), cfg, record)
            X = merge(sublayer(k, u))
            if record is not None and cfg.mode == "mhc":
                record[-1]["X"] = X
        if cfg.collapse == "learned":  # DeepSeek-V4's head mix: sigmoid weights + eps
            v = X.flatten(-2)
            r = torch.sqrt(v.square().mean(dim=-1, keepdim=True) + cfg.mhc_eps)
            m = (v @ w["collapse.phi"]) / r
            wts = torch.sigmoid(w["collapse.alpha"][0] * m + w["collapse.bias"]) + cfg.mhc_eps
            y = torch.einsum("...i,...ic->...c", wts, X)
        else:
            y = X.sum(dim=-2)                                                # collapse
    yn = rms_norm(y, w["final_norm.weight"], cfg.norm_eps)
    head = w["embed.weight"] if cfg.tied else w["lm_head.weight"]
    return F.linear(yn, head)


def loss_fn(cfg: RefConfig, w: Dict[str, Tensor], inputs: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy over all B*T positions."""
    logits = forward_logits(cfg, w, inputs)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def loss_and_grads(cfg: RefConfig, weights: Dict[str, Tensor], inputs: Tensor, targets: Tensor,
                   dtype=torch.float64) -> Tuple[float, Dict[str, Tensor]]:
    """Loss and d(loss)/d(weight) for every weight, computed in `dtype` by autograd."""
    w = {k: v.detach().to(dtype).clone().requires_grad_(True) for k, v in weights.items()}
    loss = loss_fn(cfg, w, inputs, targets)
    grads = torch.autograd.grad(loss, list(w.values()), allow_unused=True)
    out = {}
    for (name, t), g in zip(w.items(), grads):
        out[name] = torch.zeros_like(t) if g is None else g.detach()
    return float(loss.detach()), out


def param_groups(cfg: RefConfig, w: Dict[str, Tensor], weight_decay: float):
    """AdamW groups like the trainer: decay on matrices only."""
    decay = {name for name, _, d in param_specs(cfg) if d}
    return [{"params": [t for k, t in w.items() if k in decay], "weight_decay": weight_decay},
            {"params": [t for k, t in w.items() if k not in decay], "weight_decay": 0.0}]
