#!/usr/bin/env python3
"""PyTorch peer of `mhc bench`: the same architecture and training step in PyTorch.

The model follows /work/shared/spec/architecture.md and residuals.md exactly as `mhc`
implements them: token embedding (tied head by default), RoPE (rotate-half), RMSNorm with
a learnable weight before every sublayer, causal multi-head attention through
F.scaled_dot_product_attention (flash attention), SwiGLU or GELU MLP, no biases,
vocabulary padded to a multiple of 64 (the padded logits are excluded from the loss), and
the residual connection of the sublayers:
  baseline  x ← x + F(x)
  hc        static a, A, b (and with --hc-dynamic the tanh-gated dynamic parts on an
            RMS-normed stream)
  mhc       v·φ / r, σ / 2σ gates and Sinkhorn–Knopp unrolled for t_max iterations
            (columns first, then rows; H = the last iterate), u = Σ H_pre X,
            X' = H_res X + H_post f; coefficient math in fp32
with the spec's initialisation. One training step = one micro-batch forward + backward
under bf16 autocast, gradient-norm clipping and a fused AdamW step (the step `mhc bench`
times). The model and loss are torch.compile'd.

Usage (normally driven by scripts/bench_gpu.sh):
  bench_peer.py --mode mhc --n 4 --d-model 768 --n-layer 12 --n-head 12 --seq-len 1024 \\
                --vocab 50257 --micro-batch 16 [--steps 20 --warmup 5] [--json out.json]
  bench_peer.py --copy-bandwidth [--json out.json]     (device-to-device copy GB/s)
  bench_peer.py --config-yaml resolved.yaml ...         (shape from `mhc train --print-config`)
Needs only PyTorch 2.x with CUDA; prints one line of JSON (and writes it with --json).
"""
import argparse
import json
import math
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-yaml", help="resolved config (mhc train --print-config) for the shape")
    p.add_argument("--mode", choices=["baseline", "hc", "mhc"])
    p.add_argument("--n", type=int)
    p.add_argument("--hc-dynamic", action="store_true")
    p.add_argument("--sinkhorn-iters", type=int)
    p.add_argument("--d-model", type=int)
    p.add_argument("--n-layer", type=int)
    p.add_argument("--n-head", type=int)
    p.add_argument("--seq-len", type=int)
    p.add_argument("--vocab", type=int)
    p.add_argument("--mlp", choices=["swiglu", "gelu"])
    p.add_argument("--mlp-hidden", type=int)
    p.add_argument("--untied", action="store_true")
    p.add_argument("--micro-batch", type=int)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode (default: default)")
    p.add_argument("--copy-bandwidth", action="store_true", help="only measure D2D copy bandwidth")
    p.add_argument("--check-dump", metavar="FILE",
                   help="check the peer model against an mhc_reference_dump file (CPU, no "
                        "compile): loss and every gradient from mhc's own CpuBackend")
    p.add_argument("--json", help="also write the result here")
    p.add_argument("--seed", type=int, default=1337)
    return p.parse_args()


def tiny_yaml(text):
    """The subset of YAML `mhc --print-config` writes: nested maps by 2-space indent."""
    root = {}
    stack = [(-1, root)]
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        indent = len(raw) - len(raw.lstrip(" "))
        key, _, value = raw.strip().partition(":")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        value = value.strip()
        if value == "":
            parent[key] = {}
            stack.append((indent, parent[key]))
        else:
            parent[key] = value
    return root


def shape_from_args(a):
    s = {"mode": "mhc", "n": 4, "hc_dynamic": False, "sinkhorn_iters": 20, "d_model": 768,
         "n_layer": 12, "n_head": 12, "seq_len": 1024, "vocab": 50257, "mlp": "swiglu",
         "mlp_hidden": 0, "tied": True, "micro_batch": 16, "norm_eps": 1e-5, "rope_theta": 10000.0,
         "init_std": 0.02, "mhc_eps": 1e-6, "alpha_init": 0.01, "init_logit": 3.0,
         "gate_init": 0.01}
    if a.config_yaml:
        with open(a.config_yaml) as f:
            c = tiny_yaml(f.read())
        m, r, t = c.get("model", {}), c.get("residual", {}), c.get("train", {})
        s.update(mode=r.get("mode", s["mode"]), n=int(r.get("n", s["n"])),
                 hc_dynamic=r.get("hc", {}).get("dynamic", "false") == "true",
                 sinkhorn_iters=int(r.get("mhc", {}).get("sinkhorn_iters", 20)),
                 mhc_eps=float(r.get("mhc", {}).get("eps", 1e-6)),
                 alpha_init=float(r.get("mhc", {}).get("alpha_init", 0.01)),
                 init_logit=float(r.get("mhc", {}).get("init_logit", 3.0)),
                 gate_init=float(r.get("hc", {}).get("gate_init", 0.01)),
                 d_model=int(m.get("d_model", 768)), n_layer=int(m.get("n_layer", 12)),
                 n_head=int(m.get("n_head", 12)), seq_len=int(m.get("seq_len", 1024)),
                 vocab=int(m.get("vocab_size", 50257)), mlp=m.get("mlp", "swiglu"),
                 mlp_hidden=int(m.get("mlp_hidden", 0)),
                 tied=m.get("tie_embeddings", "true") == "true",
                 norm_eps=float(m.get("norm_eps", 1e-5)), rope_theta=float(m.get("rope_theta", 1e4)),
                 init_std=float(m.get("init_std", 0.02)), micro_batch=int(t.get("micro_batch", 16)))
    for key in ["mode", "n", "sinkhorn_iters", "d_model", "n_layer", "n_head", "seq_len", "vocab",
                "mlp", "mlp_hidden", "micro_batch"]:
        v = getattr(a, key, None)
        if v is not None:
            s[key] = v
    if a.hc_dynamic:
        s["hc_dynamic"] = True
    if a.untied:
        s["tied"] = False
    if s["mode"] == "baseline":
        s["n"] = 1
    if s["mlp_hidden"] <= 0:
        raw = (8 * s["d_model"]) // 3 if s["mlp"] == "swiglu" else 4 * s["d_model"]
        s["mlp_hidden"] = (raw + 63) // 64 * 64
    s["vocab_padded"] = (s["vocab"] + 63) // 64 * 64
    return s


def copy_bandwidth(torch, reps=30):
    n = 1 << 30
    src = torch.randint(0, 255, (n,), dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(5):
        dst.copy_(src)
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dst.copy_(src)
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    ms = times[len(times) // 2]
    return {"copy_gbs": 2.0 * n / (ms * 1e-3) / 1e9, "copy_ms": ms, "bytes": 2 * n,
            "device": torch.cuda.get_device_name()}


def build(torch, s):
    import torch.nn as nn
    import torch.nn.functional as F

    C, L, H, T = s["d_model"], s["n_layer"], s["n_head"], s["seq_len"]

    def up(x):  # fp32 math for half types; float64 stays float64 (--check-dump)
        return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x

    def fp32_region():
        import contextlib
        return torch.autocast("cuda", enabled=False) if torch.cuda.is_available() else contextlib.nullcontext()
    hd, n, Hm, V, Vp = C // H, s["n"], s["mlp_hidden"], s["vocab"], s["vocab_padded"]
    std, out_std = s["init_std"], s["init_std"] / math.sqrt(2.0 * L)
    mode, dyn, iters = s["mode"], s["hc_dynamic"], s["sinkhorn_iters"]
    D = 2 * n + n * n

    class RMSNorm(nn.Module):
        def __init__(self, dim, eps):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(dim))
            self.eps = eps

        def forward(self, x):
            xf = up(x)
            y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
            return (y * up(self.weight)).to(x.dtype)

    def rope_tables():
        inv = s["rope_theta"] ** (-torch.arange(0, hd // 2, dtype=torch.float32) * 2.0 / hd)
        ang = torch.arange(T, dtype=torch.float32)[:, None] * inv[None, :]
        return torch.cos(ang), torch.sin(ang)

    def rope(x, cos, sin):  # x [B, H, T, hd], rotate-half
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        c, sn = cos[: x.shape[-2]].to(x.dtype), sin[: x.shape[-2]].to(x.dtype)
        return torch.cat([x1 * c - x2 * sn, x2 * c + x1 * sn], dim=-1)

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.wqkv = nn.Linear(C, 3 * C, bias=False)
            self.wo = nn.Linear(C, C, bias=False)
            nn.init.normal_(self.wqkv.weight, std=std)
            nn.init.normal_(self.wo.weight, std=out_std)

        def forward(self, x, cos, sin):
            B, Tn, _ = x.shape
            q, k, v = self.wqkv(x).view(B, Tn, 3, H, hd).permute(2, 0, 3, 1, 4)
            q, k = rope(q, cos, sin), rope(k, cos, sin)
            if hasattr(F, "scaled_dot_product_attention"):
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:  # PyTorch 1.x (CPU checks only): the same math, unfused
                att = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
                mask = torch.ones(Tn, Tn, dtype=torch.bool, device=x.device).tril()
                y = att.masked_fill(~mask, float("-inf")).softmax(-1) @ v
            return self.wo(y.transpose(1, 2).reshape(B, Tn, C))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.swiglu = s["mlp"] == "swiglu"
            self.w_in = nn.Linear(C, (2 if self.swiglu else 1) * Hm, bias=False)
            self.w_down = nn.Linear(Hm, C, bias=False)
            nn.init.normal_(self.w_in.weight, std=std)
            nn.init.normal_(self.w_down.weight, std=out_std)

        def forward(self, x, cos=None, sin=None):
            h = self.w_in(x)
            if self.swiglu:
                g, u = h.chunk(2, dim=-1)
                return self.w_down(F.silu(g) * u)
            return self.w_down(F.gelu(h, approximate="tanh"))

    def sinkhorn(Z):  # [..., n, n] fp32; columns first then rows; H = last iterate
        M = torch.exp(Z - Z.amax(dim=(-2, -1), keepdim=True))
        for _ in range(iters):
            M = M / M.sum(dim=-2, keepdim=True)
            M = M / M.sum(dim=-1, keepdim=True)
        return M

    class Connection(nn.Module):
        """HC / mHC connection of sublayer k around F (X: [B, T, n, C])."""

        def __init__(self, k):
            super().__init__()
            if mode == "hc":
                a = torch.zeros(n)
                a[k % n] = 1.0
                self.a = nn.Parameter(a)
                self.A = nn.Parameter(torch.eye(n))
                self.b = nn.Parameter(torch.ones(n))
                if dyn:
                    self.norm = RMSNorm(C, s["norm_eps"])
                    self.w_a = nn.Parameter(torch.zeros(C))
                    self.W_A = nn.Parameter(torch.zeros(C, n))
                    self.w_b = nn.Parameter(torch.zeros(C))
                    self.s_alpha = nn.Parameter(torch.tensor(s["gate_init"]))
                    self.s_beta = nn.Parameter(torch.tensor(s["gate_init"]))
            else:
                sc = s["init_logit"]
                self.phi = nn.Parameter(torch.zeros(n * C, D))
                self.alpha = nn.Parameter(torch.full((3,), s["alpha_init"]))
                bias = torch.zeros(D)
                bias[:n] = -sc
                bias[k % n] = sc
                bias[2 * n:] = (2 * sc * torch.eye(n) - sc).reshape(-1)
                self.bias = nn.Parameter(bias)

        def coefficients(self, X):
            if mode == "hc":
                Bn, Tn = X.shape[:2]
                pre = self.a.expand(Bn, Tn, n)
                res = self.A.t().expand(Bn, Tn, n, n)  # H_res = Aᵀ: X'_j = Σ_i A_ij X_i
                post = self.b.expand(Bn, Tn, n)
                if dyn:
                    Xn = up(self.norm(X))
                    pre = self.s_alpha * torch.tanh(Xn @ self.w_a) + self.a
                    A_dyn = self.s_alpha * torch.tanh(Xn @ self.W_A) + self.A  # row i from stream i
                    res = A_dyn.transpose(-1, -2)
                    post = self.s_beta * torch.tanh(Xn @ self.w_b) + self.b
                return up(pre), up(post), up(res)
            with fp32_region():
                v = up(X.flatten(-2))
                r = torch.sqrt(v.pow(2).mean(-1, keepdim=True) + s["mhc_eps"])
                m = (v @ self.phi) / r
                pre = torch.sigmoid(self.alpha[0] * m[..., :n] + self.bias[:n])
                post = 2 * torch.sigmoid(self.alpha[1] * m[..., n:2 * n] + self.bias[n:2 * n])
                Z = (self.alpha[2] * m[..., 2 * n:] + self.bias[2 * n:]).unflatten(-1, (n, n))
                res = sinkhorn(Z)  # H = the last iterate (rows sum to 1), as core/mhc_math.h
            return pre, post, res

        def forward(self, X, sub, norm, cos, sin):
            pre, post, res = self.coefficients(X)
            dt = X.dtype
            u = torch.einsum("btn,btnc->btc", pre.to(dt), X)
            f = sub(norm(u), cos, sin)
            return torch.einsum("btij,btjc->btic", res.to(dt), X) + post.to(dt).unsqueeze(-1) * f.unsqueeze(-2)

    class Block(nn.Module):
        def __init__(self, l):
            super().__init__()
            self.attn_norm, self.mlp_norm = RMSNorm(C, s["norm_eps"]), RMSNorm(C, s["norm_eps"])
            self.attn, self.mlp = Attention(), MLP()
            if mode != "baseline":
                self.attn_conn, self.mlp_conn = Connection(2 * l), Connection(2 * l + 1)

        def forward(self, x, cos, sin):
            if mode == "baseline":
                x = x + self.attn(self.attn_norm(x), cos, sin)
                return x + self.mlp(self.mlp_norm(x))
            x = self.attn_conn(x, self.attn, self.attn_norm, cos, sin)
            return self.mlp_conn(x, self.mlp, self.mlp_norm, cos, sin)

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(Vp, C)
            nn.init.normal_(self.embed.weight, std=std)
            with torch.no_grad():
                self.embed.weight[V:].zero_()
            self.blocks = nn.ModuleList([Block(l) for l in range(L)])
            self.final_norm = RMSNorm(C, s["norm_eps"])
            if not s["tied"]:
                self.lm_head = nn.Linear(C, Vp, bias=False)
                nn.init.normal_(self.lm_head.weight, std=std)
            cos, sin = rope_tables()
            self.register_buffer("cos", cos, persistent=False)
            self.register_buffer("sin", sin, persistent=False)

        def forward(self, idx, targets):
            x = self.embed(idx)
            if mode != "baseline":
                x = x.unsqueeze(-2).expand(-1, -1, n, -1).contiguous()
            for blk in self.blocks:
                x = blk(x, self.cos, self.sin)
            if mode != "baseline":
                x = x.sum(-2)
            x = self.final_norm(x)
            w = self.embed.weight if s["tied"] else self.lm_head.weight
            logits = (x @ w.t())[..., :V]
            return F.cross_entropy(up(logits).reshape(-1, V), targets.reshape(-1))

    return GPT()


def flops_per_token(s):
    C, L, Hm, Vp, T = s["d_model"], s["n_layer"], s["mlp_hidden"], s["vocab_padded"], s["seq_len"]
    matmul = Vp * C + L * (4 * C * C + (3 if s["mlp"] == "swiglu" else 2) * Hm * C)
    return 6.0 * matmul + 12.0 * L * C * T


def bench(torch, s, a):
    torch.manual_seed(a.seed)
    torch.backends.cuda.matmul.allow_tf32 = False
    model = build(torch, s).cuda()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)
    step_model = model if a.no_compile else torch.compile(model, mode=a.compile_mode)
    B, T, V = s["micro_batch"], s["seq_len"], s["vocab"]
    g = torch.Generator(device="cuda").manual_seed(a.seed)
    idx = torch.randint(0, V, (B, T), device="cuda", generator=g)
    tgt = torch.randint(0, V, (B, T), device="cuda", generator=g)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = step_model(idx, tgt)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    t0 = time.time()
    for _ in range(a.warmup):
        loss = step()
    torch.cuda.synchronize()
    compile_s = time.time() - t0
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(a.steps):
        loss = step()
    end.record()
    end.synchronize()
    ms = start.elapsed_time(end) / a.steps
    tokens = B * T
    tps = tokens / (ms / 1e3)
    fpt = flops_per_token(s)
    return {"impl": "pytorch", "mode": s["mode"] + ("-dynamic" if s["mode"] == "hc" and s["hc_dynamic"] else ""),
            "n": s["n"], "d_model": s["d_model"], "micro_batch": B, "seq_len": T,
            "tokens_per_step": tokens, "ms_per_step": ms, "tokens_per_s": tps,
            "flops_per_token": fpt, "achieved_tflops": tps * fpt / 1e12,
            "peak_bytes": torch.cuda.max_memory_allocated(),
            "peak_reserved_bytes": torch.cuda.max_memory_reserved(),
            "final_loss": float(loss.item()), "warmup_s": compile_s,
            "compiled": not a.no_compile, "torch": torch.__version__,
            "device": torch.cuda.get_device_name()}


def read_safetensors(torch, path):
    import struct
    with open(path, "rb") as f:
        blob = f.read()
    (hlen,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + hlen].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    dtypes = {"F64": torch.float64, "F32": torch.float32, "I32": torch.int32, "I64": torch.int64}
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        raw = bytearray(blob[8 + hlen + b:8 + hlen + e])
        t = torch.frombuffer(raw, dtype=dtypes[info["dtype"]]) if raw else torch.zeros(0)
        out[name] = t.reshape(info["shape"]).clone()
    return out, meta


def check_dump(torch, path):
    """Loads mhc's weights into the peer model and compares its loss and gradients with
    the ones mhc's CpuBackend computed (max|peer − mhc| / max|mhc| per tensor)."""
    t, meta = read_safetensors(torch, path)
    truth = lambda v: str(v).strip().lower() in ("1", "true", "yes", "on")
    B, T = int(meta["B"]), int(meta["T"])
    inputs, targets = t["inputs"].long().reshape(B, T), t["targets"].long().reshape(B, T)
    s = {"mode": meta["mode"], "n": int(meta["n"]), "hc_dynamic": truth(meta["hc_dynamic"]),
         "sinkhorn_iters": int(meta["sinkhorn_iters"]), "d_model": int(meta["C"]),
         "n_layer": int(meta["L"]), "n_head": int(meta["n_head"]), "seq_len": inputs.shape[1],
         "vocab": int(meta["V"]), "mlp": meta["mlp"], "mlp_hidden": int(meta["hidden"]),
         "tied": truth(meta["tied"]), "micro_batch": inputs.shape[0],
         "norm_eps": float(meta["norm_eps"]), "rope_theta": float(meta["rope_theta"]),
         "init_std": 0.02, "mhc_eps": float(meta["mhc_eps"]), "alpha_init": 0.01,
         "init_logit": 3.0, "gate_init": 0.01}
    s["vocab_padded"] = (s["vocab"] + 63) // 64 * 64
    dtype = t["embed.weight"].dtype
    model = build(torch, s).to(dtype)
    C, H, V = s["d_model"], s["mlp_hidden"], s["vocab"]
    # export name -> (peer parameter, rows of it)
    target = {"embed.weight": (model.embed.weight, slice(0, V)),
              "final_norm.weight": (model.final_norm.weight, slice(None))}
    if not s["tied"]:
        target["lm_head.weight"] = (model.lm_head.weight, slice(0, V))
    for l, blk in enumerate(model.blocks):
        p = "blocks.%d." % l
        target[p + "attn_norm.weight"] = (blk.attn_norm.weight, slice(None))
        target[p + "mlp_norm.weight"] = (blk.mlp_norm.weight, slice(None))
        for i, w in enumerate(["wq", "wk", "wv"]):
            target[p + "attn.%s.weight" % w] = (blk.attn.wqkv.weight, slice(i * C, (i + 1) * C))
        target[p + "attn.wo.weight"] = (blk.attn.wo.weight, slice(None))
        if s["mlp"] == "swiglu":
            target[p + "mlp.w_gate.weight"] = (blk.mlp.w_in.weight, slice(0, H))
            target[p + "mlp.w_up.weight"] = (blk.mlp.w_in.weight, slice(H, 2 * H))
        else:
            target[p + "mlp.w_up.weight"] = (blk.mlp.w_in.weight, slice(None))
        target[p + "mlp.w_down.weight"] = (blk.mlp.w_down.weight, slice(None))
        if s["mode"] != "baseline":
            for which, conn in (("attn_conn.", blk.attn_conn), ("mlp_conn.", blk.mlp_conn)):
                for name, param in conn.named_parameters():
                    target[p + which + name] = (param, slice(None))
    weights = {k: v for k, v in t.items() if not k.startswith(("grad.", "inter."))  # inter.: intermediates
               and k not in ("inputs", "targets", "loss")}
    missing = sorted(set(weights) ^ set(target))
    if missing:
        raise SystemExit("check-dump: names differ between the dump and the peer: %s" % missing)
    def part(tensor, rows):  # the rows of a parameter (0-d parameters whole)
        return tensor if tensor.dim() == 0 else tensor[rows]

    with torch.no_grad():
        for name, (param, rows) in target.items():
            part(param, rows).copy_(weights[name].reshape(part(param, rows).shape))
    loss = model(inputs, targets)
    loss.backward()
    ref_loss = float(t["loss"].reshape(-1)[0])
    tol = 1e-6 if dtype == torch.float64 else 1e-4
    report = {"file": path, "mode": s["mode"], "n": s["n"], "dtype": str(dtype),
              "loss_peer": float(loss), "loss_mhc": ref_loss,
              "loss_rel_err": abs(float(loss) - ref_loss) / abs(ref_loss)}
    worst = ("", 0.0)
    for name, (param, rows) in target.items():
        g = part(param.grad, rows)
        g_ref = t["grad." + name].reshape(g.shape)
        scale = float(g_ref.abs().max())
        err = float((g - g_ref).abs().max()) / scale if scale > 0 else float((g - g_ref).abs().max())
        if err > worst[1]:
            worst = (name, err)
    report.update(worst_grad=worst[0], worst_grad_rel_err=worst[1],
                  ok=report["loss_rel_err"] <= tol and worst[1] <= 100 * tol)
    return report


def main():
    a = parse_args()
    try:
        import torch
    except ImportError:
        print(json.dumps({"error": "PyTorch is not installed"}))
        return 2
    if a.check_dump:
        result = check_dump(torch, a.check_dump)
        print(json.dumps(result))
        return 0 if result["ok"] else 1
    if not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA device visible to PyTorch"}))
        return 2
    if a.copy_bandwidth:
        result = copy_bandwidth(torch)
    else:
        result = bench(torch, shape_from_args(a), a)
    line = json.dumps(result)
    print(line)
    if a.json:
        with open(a.json, "w") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
