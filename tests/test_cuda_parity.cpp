// CUDA-vs-CPU parity (ggml's test-backend-ops idea): every Backend op runs on fresh
// random inputs on CpuBackend<float> and on the CUDA backend in fp32 and in bf16, and
// every output and gradient must agree: max |cuda − cpu| / max |cpu| ≤ 1e-4 (fp32) or
// ≤ 1e-2 (bf16). bf16 activation inputs are rounded to bf16 for both sides, so only the
// device's own rounding counts. A model-level test runs one forward+backward of a tiny
// model in every residual mode (and in the mHC variants) on CUDA fp32 and on the CPU.
//
// Built without CUDA, or without a usable device, every test here is skipped with the
// reason. The CUDA emulator's build (MHC_CUDA_EMULATED, cuda/emu/) compiles this file a
// second time against the emulated backend, where every case runs on the CPU (all of
// them, the GPT-2-sized attention shapes included). Adding an op: append an OpCase to
// op_cases() (its tensors and a lambda that calls the op).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include "config.h"
#include "cpu/cpu_backend.h"
#include "model.h"
#include "rng.h"
#include "test_support.h"

#if defined(MHC_WITH_CUDA) || defined(MHC_CUDA_EMULATED)
#include "cuda/cuda_backend.h"
#endif

namespace mhc {
namespace {

// Empty when CUDA tests can run, otherwise why not.
std::string cuda_skip_reason() {
#if defined(MHC_WITH_CUDA) || defined(MHC_CUDA_EMULATED)
  const CudaProbe probe = probe_cuda(0);
  return probe.usable ? std::string() : "no usable CUDA device: " + probe.reason;
#else
  return "built without CUDA";
#endif
}

std::unique_ptr<Backend> make_gpu_backend(DType compute) {
#if defined(MHC_WITH_CUDA) || defined(MHC_CUDA_EMULATED)
  return make_cuda_backend(0, compute);
#else
  (void)compute;
  return nullptr;
#endif
}

// Round to the nearest bf16 (ties to even), as the device does on upload.
double round_to_bf16(double x) {
  float f = static_cast<float>(x);
  uint32_t u = 0;
  std::memcpy(&u, &f, sizeof(u));
  if ((u & 0x7f800000u) == 0x7f800000u) return f;
  u += 0x7fffu + ((u >> 16) & 1u);
  u &= 0xffff0000u;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// ---- the op-case harness -------------------------------------------------------------

enum class Kind { Act, Master, Ids };

struct Arg {
  std::string name;
  int64_t numel = 0;
  Kind kind = Kind::Act;
  bool compare = false;  // an output or "+=" target, compared after the op
  double scale = 1.0;    // entries scale·N(0,1) + offset (Ids: token ids below `scale`)
  double offset = 0.0;
  bool positive = false;  // |entries| (e.g. Adam's second moment)
};

Arg act(std::string name, int64_t numel, double scale = 1.0, double offset = 0.0) {
  return {std::move(name), numel, Kind::Act, false, scale, offset};
}
Arg master(std::string name, int64_t numel, double scale = 1.0, double offset = 0.0) {
  return {std::move(name), numel, Kind::Master, false, scale, offset};
}
Arg ids(std::string name, int64_t numel, int vocab) {
  return {std::move(name), numel, Kind::Ids, false, static_cast<double>(vocab)};
}
Arg out(Arg a) {
  a.compare = true;
  return a;
}

using Tensors = std::vector<Tensor>;
constexpr double kNoScalar = std::numeric_limits<double>::quiet_NaN();

struct OpCase {
  std::string name;
  std::vector<Arg> args;
  // Calls the op(s) with tensors in args order; returns a host scalar to compare, or NaN.
  std::function<double(Backend&, const Tensors&)> run;
};

struct Outcome {
  std::vector<std::vector<double>> outputs;  // compared args, in args order
  double scalar = kNoScalar;
};

std::vector<std::vector<double>> make_inputs(const OpCase& c, bool round_acts) {
  std::vector<std::vector<double>> values;
  const uint64_t key = hash_string(c.name);
  for (size_t a = 0; a < c.args.size(); ++a) {
    const Arg& arg = c.args[a];
    std::vector<double> v(static_cast<size_t>(arg.numel));
    const uint64_t seed = hash_combine(key, a);
    for (size_t i = 0; i < v.size(); ++i) {
      if (arg.kind == Kind::Ids) {
        const int vocab = static_cast<int>(arg.scale);
        v[i] = static_cast<int>(uniform01(seed, i) * vocab) % vocab;
        continue;
      }
      double x = arg.scale * normal01(seed, i);
      if (arg.positive) x = std::fabs(x);
      x += arg.offset;
      v[i] = round_acts && arg.kind == Kind::Act ? round_to_bf16(x) : x;
    }
    values.push_back(std::move(v));
  }
  return values;
}

Outcome run_case(Backend& be, const OpCase& c, const std::vector<std::vector<double>>& inputs) {
  Tensors ts;
  for (size_t a = 0; a < c.args.size(); ++a) {
    const Arg& arg = c.args[a];
    const DType dt = arg.kind == Kind::Act      ? be.compute_dtype()
                     : arg.kind == Kind::Master ? be.master_dtype()
                                                : DType::I32;
    Tensor t = be.alloc(arg.numel, dt);
    if (arg.kind == Kind::Ids) {
      std::vector<int32_t> tokens(inputs[a].begin(), inputs[a].end());
      be.upload(t, tokens.data());
    } else {
      be.upload(t, inputs[a].data());
    }
    ts.push_back(t);
  }
  Outcome o;
  o.scalar = c.run(be, ts);
  be.synchronize();
  for (size_t a = 0; a < c.args.size(); ++a) {
    if (!c.args[a].compare) continue;
    std::vector<double> v(static_cast<size_t>(c.args[a].numel));
    be.download(ts[a], v.data());
    o.outputs.push_back(std::move(v));
  }
  for (Tensor& t : ts) be.release(t);
  return o;
}

// max |a − b| / max |b| (b is the reference).
double relative_error(const std::vector<double>& got, const std::vector<double>& ref) {
  double scale = 0, err = 0;
  for (double v : ref) scale = std::max(scale, std::fabs(v));
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = std::fabs(got[i] - ref[i]);
    err = std::max(err, std::isnan(d) ? std::numeric_limits<double>::infinity() : d);
  }
  return scale > 0 ? err / scale : err;
}

// ---- the cases ------------------------------------------------------------------------

void add_elementwise_cases(std::vector<OpCase>& cases) {
  const int64_t n = 1031;
  cases.push_back({"fill", {out(act("t", n))}, [](Backend& be, const Tensors& t) {
                     be.fill(t[0], 0.37);
                     return kNoScalar;
                   }});
  cases.push_back({"copy_master_to_act", {master("src", n), out(act("dst", n))},
                   [](Backend& be, const Tensors& t) {
                     be.copy(t[1], t[0]);
                     return kNoScalar;
                   }});
  cases.push_back({"copy_act_to_master", {act("src", n), out(master("dst", n))},
                   [](Backend& be, const Tensors& t) {
                     be.copy(t[1], t[0]);
                     return kNoScalar;
                   }});
  cases.push_back({"add", {out(act("out", n)), act("a", n), act("b", n)},
                   [](Backend& be, const Tensors& t) {
                     be.add(t[0], t[1], t[2]);
                     return kNoScalar;
                   }});
  cases.push_back({"add_in_place", {out(act("a", n)), act("b", n)},
                   [](Backend& be, const Tensors& t) {
                     be.add(t[0], t[0], t[1]);
                     return kNoScalar;
                   }});
  cases.push_back({"scale", {out(master("t", n))}, [](Backend& be, const Tensors& t) {
                     be.scale(t[0], 0.7);
                     return kNoScalar;
                   }});
  cases.push_back({"zero", {out(act("t", n))}, [](Backend& be, const Tensors& t) {
                     be.zero(t[0]);
                     return kNoScalar;
                   }});
  cases.push_back({"sum_squares_act", {act("x", 300007)}, [](Backend& be, const Tensors& t) {
                     return be.sum_squares(t[0]);
                   }});
  cases.push_back({"sum_squares_master", {master("x", 4099)}, [](Backend& be, const Tensors& t) {
                     return be.sum_squares(t[0]);
                   }});
}

void add_gemm_cases(std::vector<OpCase>& cases) {
  const int m = 37, n = 45, k = 29, pad = 3;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb)
      for (int accumulate = 0; accumulate < 2; ++accumulate) {
        const int lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
        const int64_t a_rows = ta ? k : m, b_rows = tb ? n : k;
        // beta = 0 writes an activation; beta = 1 accumulates into an fp32 gradient.
        Arg c = accumulate ? master("C", int64_t(m) * ldc) : act("C", int64_t(m) * ldc);
        const std::string name = std::string("gemm_") + (ta ? "t" : "n") + (tb ? "t" : "n") +
                                 (accumulate ? "_beta1_master" : "_beta0");
        cases.push_back({name,
                         {act("A", a_rows * lda), act("B", b_rows * ldb), out(c)},
                         [=](Backend& be, const Tensors& t) {
                           be.gemm(ta, tb, m, n, k, 0.5f, t[0], lda, t[1], ldb,
                                   accumulate ? 1.f : 0.f, t[2], ldc);
                           return kNoScalar;
                         }});
      }
  // The model's shapes: y = x Wᵀ and the weight gradient dW += dyᵀ x.
  const int N = 130, in = 96, outw = 160;
  cases.push_back({"gemm_linear_forward",
                   {act("x", int64_t(N) * in), act("W", int64_t(outw) * in),
                    out(act("y", int64_t(N) * outw))},
                   [=](Backend& be, const Tensors& t) {
                     be.gemm(false, true, N, outw, in, 1.f, t[0], in, t[1], in, 0.f, t[2], outw);
                     return kNoScalar;
                   }});
  cases.push_back({"gemm_weight_grad",
                   {act("dy", int64_t(N) * outw), act("x", int64_t(N) * in),
                    out(master("dW", int64_t(outw) * in))},
                   [=](Backend& be, const Tensors& t) {
                     be.gemm(true, false, outw, in, N, 1.f, t[0], outw, t[1], in, 1.f, t[2], in);
                     return kNoScalar;
                   }});
}

// gemm_ex: D = alpha op(A) op(B) + beta C with C ≠ D (cuBLASLt's C ≠ D epilogue on CUDA,
// copy + gemm on the CPU), as the baseline's fused residual add uses it.
void add_gemm_ex_cases(std::vector<OpCase>& cases) {
  const int N = 70, in = 48, outw = 40;
  for (int variant = 0; variant < 3; ++variant) {
    // 0: residual add (beta 1, same ld); 1: beta 0.5 with ldc ≠ ldd; 2: beta 0 (C unread)
    const float beta = variant == 0 ? 1.f : (variant == 1 ? 0.5f : 0.f);
    const int ldc = variant == 1 ? outw + 5 : outw, ldd = outw;
    const std::string name = std::string("gemm_ex_") +
                             (variant == 0 ? "residual" : (variant == 1 ? "ld" : "beta0"));
    cases.push_back({name,
                     {act("x", int64_t(N) * in), act("W", int64_t(outw) * in),
                      act("C", int64_t(N) * ldc), out(act("D", int64_t(N) * ldd))},
                     [=](Backend& be, const Tensors& t) {
                       be.gemm_ex(false, true, N, outw, in, 1.f, t[0], in, t[1], in, beta, t[2],
                                  ldc, t[3], ldd);
                       return kNoScalar;
                     }});
  }
}

// The chunked classifier (Backend::classifier): losses, dx and dW against the CPU, with
// chunks that do and do not divide N, and without a gradient.
void add_classifier_cases(std::vector<OpCase>& cases) {
  const int N = 37, C = 24, V = 100, Vp = 128;
  for (int chunk : {10, 37})
    for (float dloss : {0.f, 0.25f}) {
      cases.push_back({"classifier_chunk" + std::to_string(chunk) + (dloss != 0.f ? "_grad" : ""),
                       {out(master("losses", N)), out(act("dx", int64_t(N) * C)),
                        out(master("dW", int64_t(Vp) * C)), act("x", int64_t(N) * C),
                        act("W", int64_t(Vp) * C, 0.5), ids("targets", N, V),
                        act("scratch", int64_t(chunk) * Vp)},
                       [=](Backend& be, const Tensors& t) {
                         be.classifier(t[0], t[1], t[2], t[3], t[4], t[5], t[6], N, C, V, Vp,
                                       chunk, dloss);
                         return kNoScalar;
                       }});
    }
}

void add_embedding_cases(std::vector<OpCase>& cases) {
  const int N = 300, C = 40, V = 13;  // few ids: long runs of repeated tokens
  cases.push_back({"embedding_forward",
                   {out(act("out", int64_t(N) * C)), ids("tokens", N, V), act("wte", int64_t(V) * C)},
                   [=](Backend& be, const Tensors& t) {
                     be.embedding_forward(t[0], t[1], t[2], N, C);
                     return kNoScalar;
                   }});
  cases.push_back({"embedding_backward",
                   {out(master("dwte", int64_t(V + 3) * C)), ids("tokens", N, V),
                    act("dout", int64_t(N) * C)},
                   [=](Backend& be, const Tensors& t) {
                     be.embedding_backward(t[0], t[1], t[2], N, C);
                     return kNoScalar;
                   }});
}

void add_rmsnorm_cases(std::vector<OpCase>& cases) {
  for (auto [rows, C] : {std::pair<int, int>{37, 100}, std::pair<int, int>{600, 64}}) {
    const int64_t nc = int64_t(rows) * C;
    cases.push_back({"rmsnorm_rows" + std::to_string(rows) + "_C" + std::to_string(C),
                     {out(act("out", nc)), out(master("rstd", rows)), act("x", nc, 2.0),
                      act("w", C, 0.2, 1.0), out(act("dx", nc)), out(master("dw", C)),
                      act("dout", nc)},
                     [=](Backend& be, const Tensors& t) {
                       be.rmsnorm_forward(t[0], t[1], t[2], t[3], rows, C, 1e-5f);
                       be.rmsnorm_backward(t[4], t[5], t[6], t[2], t[3], t[1], rows, C);
                       return kNoScalar;
                     }});
  }
}

void add_rope_cases(std::vector<OpCase>& cases) {
  for (int hd : {16, 64}) {
    const AttentionShape s{2, 33, 3, hd};
    const int64_t numel = int64_t(s.B) * s.T * 3 * s.C();
    for (int inverse = 0; inverse < 2; ++inverse)
      cases.push_back({std::string("rope_") + (inverse ? "backward" : "forward") + "_hd" +
                           std::to_string(hd),
                       {out(act("qkv", numel))},
                       [=](Backend& be, const Tensors& t) {
                         if (inverse)
                           be.rope_backward(t[0], s, 10000.f);
                         else
                           be.rope_forward(t[0], s, 10000.f);
                         return kNoScalar;
                       }});
  }
}

void add_attention_cases(std::vector<OpCase>& cases) {
  const AttentionShape shapes[] = {
      {2, 70, 2, 64},  // several query and key tiles, partial last tile
      {1, 40, 3, 40},  // head size not a multiple of 32
      {1, 33, 1, 256},  // largest head size
      {2, 5, 2, 4},    // the tiny model's shape
      {1, 2048, 1, 64},  // long sequence
      // cuDNN flash attention shapes (bf16 runs them through cuDNN when it supports them):
      {2, 256, 12, 64},  // GPT-2-small heads
      {1, 1024, 2, 64},  // GPT-2-small sequence length
      {2, 96, 2, 128},   // head size 128
      {1, 77, 3, 32},    // sequence not a multiple of 64
  };
  for (const AttentionShape& s : shapes) {
    const int64_t NC = int64_t(s.B) * s.T * s.C();
    cases.push_back({"attention_B" + std::to_string(s.B) + "_T" + std::to_string(s.T) + "_h" +
                         std::to_string(s.n_head) + "_hd" + std::to_string(s.head_dim),
                     {act("qkv", 3 * NC), out(act("out", NC)),
                      out(master("lse", int64_t(s.B) * s.n_head * s.T)), act("dout", NC),
                      out(act("dqkv", 3 * NC))},
                     [=](Backend& be, const Tensors& t) {
                       be.attention_forward(t[1], t[2], t[0], s);
                       be.attention_backward(t[4], t[3], t[0], t[1], t[2], s);
                       return kNoScalar;
                     }});
  }
}

void add_activation_cases(std::vector<OpCase>& cases) {
  const int N = 33, H = 70;
  const int64_t nh = int64_t(N) * H;
  cases.push_back({"swiglu",
                   {act("gate_up", 2 * nh, 2.0), out(act("out", nh)), act("dout", nh),
                    out(act("dgate_up", 2 * nh))},
                   [=](Backend& be, const Tensors& t) {
                     be.swiglu_forward(t[1], t[0], N, H);
                     be.swiglu_backward(t[3], t[2], t[0], N, H);
                     return kNoScalar;
                   }});
  cases.push_back({"gelu",
                   {act("x", nh, 2.0), out(act("out", nh)), act("dout", nh), out(act("dx", nh))},
                   [=](Backend& be, const Tensors& t) {
                     be.gelu_forward(t[1], t[0], N, H);
                     be.gelu_backward(t[3], t[2], t[0], N, H);
                     return kNoScalar;
                   }});
}

void add_cross_entropy_cases(std::vector<OpCase>& cases) {
  // Vp = 1024: 16-byte vector path; Vp = 1003: scalar path; V = 100: a row whose last
  // vector is partly past V.
  for (auto [V, Vp] : {std::pair<int, int>{1000, 1024}, std::pair<int, int>{1001, 1003}, std::pair<int, int>{100, 128}}) {
    const int N = 19;
    const std::string sfx = Vp == 128 ? "_small" : Vp % 8 == 0 ? "" : "_unaligned";
    for (float dloss : {0.f, 0.37f})
      cases.push_back({std::string("cross_entropy") + (dloss != 0.f ? "_with_grad" : "_loss_only") +
                           sfx,
                       {out(master("losses", N)), out(act("logits", int64_t(N) * Vp, 3.0)),
                        ids("targets", N, V)},
                       [=](Backend& be, const Tensors& t) {
                         be.cross_entropy(t[0], t[1], t[2], N, V, Vp, dloss);
                         return kNoScalar;
                       }});
  }
}

void add_stream_cases(std::vector<OpCase>& cases) {
  // C = 40: 16-byte vector path; C = 37: scalar path; C = 2112: rows longer than a block
  // (forward kernels split them over grid.y, reducing kernels loop).
  struct Shape { int N, n, C; };
  const Shape shapes[] = {{23, 1, 40}, {23, 3, 40}, {23, 4, 40}, {23, 4, 37},
                          {9, 4, 2112}, {9, 2, 2112}, {11, 8, 40}};
  for (const Shape& sh : shapes) {
    const int N = sh.N, n = sh.n, C = sh.C;
    const ConnShape s{N, n, C};
    const int64_t NnC = int64_t(N) * n * C, NC = int64_t(N) * C;
    const std::string sfx = "_n" + std::to_string(n) + (C == 40 ? "" : "_C" + std::to_string(C));
    cases.push_back({"stream_expand" + sfx, {out(act("X", NnC)), act("x", NC)},
                     [=](Backend& be, const Tensors& t) {
                       be.stream_expand(t[0], t[1], N, n, C);
                       return kNoScalar;
                     }});
    cases.push_back({"stream_collapse" + sfx, {out(act("x", NC)), act("X", NnC)},
                     [=](Backend& be, const Tensors& t) {
                       be.stream_collapse(t[0], t[1], N, n, C);
                       return kNoScalar;
                     }});
    cases.push_back({"stream_aggregate" + sfx,
                     {out(act("u", NC)), act("X", NnC), master("pre", int64_t(N) * n),
                      out(act("dX", NnC)), out(master("dpre", int64_t(N) * n)), act("du", NC)},
                     [=](Backend& be, const Tensors& t) {
                       be.stream_aggregate_forward(t[0], t[1], t[2], s);
                       be.stream_aggregate_backward(t[3], t[4], t[5], t[1], t[2], s);
                       return kNoScalar;
                     }});
    cases.push_back({"stream_merge" + sfx,
                     {out(act("Y", NnC)), act("X", NnC), act("f", NC),
                      master("pre", int64_t(N) * n), master("post", int64_t(N) * n),
                      master("res", int64_t(N) * n * n), out(act("dX", NnC)), out(act("df", NC)),
                      out(master("dpre", int64_t(N) * n)), out(master("dpost", int64_t(N) * n)),
                      out(master("dres", int64_t(N) * n * n)), act("dY", NnC)},
                     [=](Backend& be, const Tensors& t) {
                       const Coeffs c{t[3], t[4], t[5]}, dc{t[8], t[9], t[10]};
                       be.stream_merge_forward(t[0], t[1], t[2], c, s);
                       be.stream_merge_backward(t[6], t[7], dc, t[11], t[1], t[2], c, s);
                       return kNoScalar;
                     }});
  }
}

void add_sinkhorn_cases(std::vector<OpCase>& cases) {
  const int count = 50, iters = 20;
  for (int n : {1, 2, 3, 4, 8, 16})
    for (double spread : {1.0, 10.0}) {
      const int64_t nn = int64_t(count) * n * n;
      cases.push_back({"sinkhorn_n" + std::to_string(n) + (spread > 1 ? "_wide" : "_narrow"),
                       {master("Z", nn, spread), out(master("H", nn)), master("dH", nn),
                        out(master("dZ", nn))},
                       [=](Backend& be, const Tensors& t) {
                         be.sinkhorn_forward(t[1], t[0], count, n, iters);
                         be.sinkhorn_backward(t[3], t[2], t[0], count, n, iters);
                         return kNoScalar;
                       }});
    }
  // More iterations than the kernels keep in thread-local memory (sums in global scratch),
  // and a count of several blocks.
  for (auto [n, its, cnt] : {std::tuple<int, int, int>{4, 40, 50}, std::tuple<int, int, int>{4, 20, 1000}}) {
    const int64_t nn = int64_t(cnt) * n * n;
    cases.push_back({"sinkhorn_n" + std::to_string(n) + "_iters" + std::to_string(its) + "_count" +
                         std::to_string(cnt),
                     {master("Z", nn, 2.0), out(master("H", nn)), master("dH", nn),
                      out(master("dZ", nn))},
                     [=](Backend& be, const Tensors& t) {
                       be.sinkhorn_forward(t[1], t[0], cnt, n, its);
                       be.sinkhorn_backward(t[3], t[2], t[0], cnt, n, its);
                       return kNoScalar;
                     }});
  }
}

void add_mhc_coeff_cases(std::vector<OpCase>& cases) {
  // (N, n, C): small shapes; N = 1100 (three dφ split-K chunks, a partial last token tile)
  // with nC = 800 (a partial column tile); nC = 100 (bf16 generic path, fp32 fast path);
  // n = 5 (D = 35: generic path); iters 40 (Sinkhorn sums in global scratch).
  struct Shape { int N, n, C, iters; };
  const Shape shapes[] = {{37, 1, 24, 20},  {37, 2, 24, 20}, {37, 3, 24, 20}, {37, 4, 24, 20},
                          {1100, 4, 200, 20}, {70, 4, 25, 20}, {45, 5, 16, 20}, {37, 4, 24, 40}};
  for (const Shape& sh : shapes) {
    const int N = sh.N, n = sh.n, C = sh.C, iters = sh.iters;
    const ConnShape s{N, n, C};
    const int D = s.D();
    const int64_t NnC = int64_t(N) * n * C, ND = int64_t(N) * D;
    const int64_t Nn = int64_t(N) * n, Nnn = int64_t(N) * n * n, nCD = int64_t(n) * C * D;
    const std::string name = "mhc_coeff_n" + std::to_string(n) +
                             (N == 37 && C == 24 && iters == 20
                                  ? ""
                                  : "_N" + std::to_string(N) + "_C" + std::to_string(C) + "_it" +
                                        std::to_string(iters));
    cases.push_back(
        {name,
         {act("X", NnC), master("phi", nCD, 0.1), master("alpha", 3, 0.2, 1.0),
          master("bias", D), out(master("pre", Nn)), out(master("post", Nn)),
          out(master("res", Nnn)), out(master("m", ND)), out(master("rms", N)),
          master("dpre", Nn), master("dpost", Nn), master("dres", Nnn), out(act("dX", NnC)),
          out(master("dphi", nCD)), out(master("dalpha", 3)), out(master("dbias", D))},
         [=](Backend& be, const Tensors& t) {
           const MhcParams p{t[1], t[2], t[3]}, dp{t[13], t[14], t[15]};
           const Coeffs c{t[4], t[5], t[6]}, dc{t[9], t[10], t[11]};
           const MhcSaved saved{t[7], t[8]};
           be.mhc_coeff_forward(c, saved, t[0], p, s, iters, 1e-6f);
           be.mhc_coeff_backward(t[12], dp, dc, t[0], p, saved, s, iters);
           return kNoScalar;
         }});
  }
}

// The mHC variants (residuals.md "Variants"): every projection, DeepSeek-V4's numerics,
// static mHC. Fast path: D ≤ 32 with nC a whole number of 16-byte vectors; generic path:
// birkhoff n = 5 (D = 130) and nC = 100 in bf16. N = 530: two dφ split-K chunks. dX starts
// small (0.01) so that the coefficient path's contribution dominates what is compared.
void add_mhc_variant_cases(std::vector<OpCase>& cases) {
  using math::MhcProjection;
  struct Variant {
    std::string name;
    MhcProjection projection;
    bool v4, dynamic;
    int N, n, C, iters;
    float eps;
  };
  const Variant variants[] = {
      {"birkhoff_n1", MhcProjection::Birkhoff, false, true, 37, 1, 24, 20, 1e-6f},
      {"birkhoff_n2", MhcProjection::Birkhoff, false, true, 37, 2, 24, 20, 1e-6f},
      {"birkhoff_n3", MhcProjection::Birkhoff, false, true, 37, 3, 24, 20, 1e-6f},
      {"birkhoff_n4", MhcProjection::Birkhoff, false, true, 37, 4, 24, 20, 1e-6f},
      {"birkhoff_n5_generic", MhcProjection::Birkhoff, false, true, 21, 5, 16, 20, 1e-6f},
      {"kronecker_n1", MhcProjection::Kronecker, false, true, 37, 1, 24, 20, 1e-6f},
      {"kronecker_n2_N530", MhcProjection::Kronecker, false, true, 530, 2, 32, 20, 1e-6f},
      {"kronecker_n4", MhcProjection::Kronecker, false, true, 37, 4, 24, 20, 1e-6f},
      {"kronecker_n4_C25", MhcProjection::Kronecker, false, true, 45, 4, 25, 20, 1e-6f},
      {"identity_n1", MhcProjection::Identity, false, true, 37, 1, 24, 20, 1e-6f},
      {"identity_n4", MhcProjection::Identity, false, true, 37, 4, 24, 20, 1e-6f},
      {"v4_n2", MhcProjection::Sinkhorn, true, true, 37, 2, 24, 20, 1e-6f},
      {"v4_n4", MhcProjection::Sinkhorn, true, true, 37, 4, 24, 20, 1e-6f},
      {"v4_n4_bigeps_C25", MhcProjection::Sinkhorn, true, true, 45, 4, 25, 7, 1e-2f},
      {"static_n4", MhcProjection::Sinkhorn, false, false, 37, 4, 24, 20, 1e-6f},
      {"static_v4_n3", MhcProjection::Sinkhorn, true, false, 37, 3, 24, 20, 1e-6f},
      {"static_birkhoff_n3", MhcProjection::Birkhoff, false, false, 37, 3, 24, 20, 1e-6f},
  };
  for (const Variant& v : variants) {
    const int N = v.N, n = v.n, C = v.C, iters = v.iters;
    ConnShape s{N, n, C};
    s.mhc.projection = v.projection;
    s.mhc.v4 = v.v4;
    s.mhc.dynamic = v.dynamic;
    s.mhc.eps = v.eps;
    const int D = s.D();
    const int64_t dyn = v.dynamic ? 1 : 0, NnC = int64_t(N) * n * C;
    const int64_t Nn = int64_t(N) * n, Nnn = int64_t(N) * n * n, nCD = int64_t(n) * C * D;
    const float eps = v.eps;
    cases.push_back(
        {"mhc_variant_" + v.name,
         {act("X", NnC), master("phi", dyn * nCD, 0.1), master("alpha", dyn * 3, 0.2, 1.0),
          master("bias", D), out(master("pre", Nn)), out(master("post", Nn)),
          out(master("res", Nnn)), out(master("m", dyn * N * D)), out(master("rms", dyn * N)),
          master("dpre", Nn), master("dpost", Nn), master("dres", Nnn),
          out(act("dX", NnC, 0.01)), out(master("dphi", dyn * nCD)),
          out(master("dalpha", dyn * 3)), out(master("dbias", D))},
         [=](Backend& be, const Tensors& t) {
           // Static mHC has no φ and no α (the model passes empty tensors).
           const Tensor none{};
           const MhcParams p{dyn ? t[1] : none, dyn ? t[2] : none, t[3]};
           const MhcParams dp{dyn ? t[13] : none, dyn ? t[14] : none, t[15]};
           const Coeffs c{t[4], t[5], t[6]}, dc{t[9], t[10], t[11]};
           const MhcSaved saved{t[7], t[8]};
           be.mhc_variant_coeff_forward(c, saved, t[0], p, s, iters, eps);
           be.mhc_variant_coeff_backward(t[12], dp, dc, t[0], p, saved, s, iters);
           return kNoScalar;
         }});
  }
}

// The learned collapse's weights (D = n): fast path for n = 1, 2, 4 with C = 24; nC = 75
// (generic in fp32 and bf16) and nC = 100 (fast in fp32, generic in bf16).
void add_collapse_cases(std::vector<OpCase>& cases) {
  struct Shape { int N, n, C; };
  const Shape shapes[] = {{37, 1, 24}, {37, 2, 24}, {37, 4, 24}, {41, 3, 25}, {45, 4, 25}};
  for (const Shape& sh : shapes) {
    const int N = sh.N, n = sh.n, C = sh.C;
    const int64_t NnC = int64_t(N) * n * C, Nn = int64_t(N) * n, nCn = int64_t(n) * C * n;
    cases.push_back(
        {"collapse_weights_n" + std::to_string(n) + "_C" + std::to_string(C),
         {act("X", NnC), master("phi", nCn, 0.1), master("alpha", 1, 0.2, 1.0), master("bias", n),
          out(master("w", Nn)), out(master("m", Nn)), out(master("rms", N)), master("dw", Nn),
          out(act("dX", NnC, 0.01)), out(master("dphi", nCn)), out(master("dalpha", 1)),
          out(master("dbias", n))},
         [=](Backend& be, const Tensors& t) {
           be.collapse_weights_forward(t[4], t[5], t[6], t[0], t[1], t[2], t[3], N, n, C, 1e-6f);
           be.collapse_weights_backward(t[8], t[9], t[10], t[11], t[7], t[0], t[1], t[2], t[3],
                                        t[5], t[6], N, n, C);
           return kNoScalar;
         }});
  }
}

void add_hc_coeff_cases(std::vector<OpCase>& cases) {
  const int N = 29, C = 40;
  for (int n : {1, 3, 4})
    for (int dynamic = 0; dynamic < 2; ++dynamic) {
      const ConnShape s{N, n, C};
      const int64_t NnC = int64_t(N) * n * C, Nn = int64_t(N) * n, Nnn = int64_t(N) * n * n;
      const int64_t dyn = dynamic ? 1 : 0;
      cases.push_back(
          {"hc_coeff_n" + std::to_string(n) + (dynamic ? "_dynamic" : "_static"),
           {act("X", NnC), master("a", n), master("A", int64_t(n) * n), master("b", n),
            master("norm_w", dyn * C, 0.2, 1.0), master("w_a", dyn * C, 0.3),
            master("W_A", dyn * C * n, 0.3), master("w_b", dyn * C, 0.3),
            master("s_alpha", dyn, 0.1, 0.5), master("s_beta", dyn, 0.1, 0.5),
            out(master("pre", Nn)), out(master("post", Nn)), out(master("res", Nnn)),
            out(master("rstd", dyn * Nn)), out(master("tanh", dyn * Nn * (n + 2))),
            master("dpre", Nn), master("dpost", Nn), master("dres", Nnn), out(act("dX", NnC)),
            out(master("da", n)), out(master("dA", int64_t(n) * n)), out(master("db", n)),
            out(master("dnorm_w", dyn * C)), out(master("dw_a", dyn * C)),
            out(master("dW_A", dyn * C * n)), out(master("dw_b", dyn * C)),
            out(master("ds_alpha", dyn)), out(master("ds_beta", dyn))},
           [=](Backend& be, const Tensors& t) {
             const HcParams p{t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9]};
             const HcParams dp{t[19], t[20], t[21], t[22], t[23], t[24], t[25], t[26], t[27]};
             const Coeffs c{t[10], t[11], t[12]}, dc{t[15], t[16], t[17]};
             const HcSaved saved{t[13], t[14]};
             be.hc_coeff_forward(c, saved, t[0], p, s, 1e-5f);
             be.hc_coeff_backward(t[18], dp, dc, t[0], p, saved, s);
             return kNoScalar;
           }});
    }
}

void add_adamw_cases(std::vector<OpCase>& cases) {
  const int64_t n = 2053;
  Arg v = master("v", n, 0.01);
  v.positive = true;
  cases.push_back({"adamw",
                   {out(master("p", n)), master("g", n, 0.1), out(master("m", n, 0.01)), out(v)},
                   [](Backend& be, const Tensors& t) {
                     AdamWStep step;
                     step.lr = 1e-2f;
                     step.weight_decay = 0.1f;
                     step.grad_scale = 0.5f;
                     step.step = 3;
                     be.adamw(t[0], t[1], t[2], t[3], step);
                     return kNoScalar;
                   }});
}

std::vector<OpCase> op_cases() {
  std::vector<OpCase> cases;
  add_elementwise_cases(cases);
  add_gemm_cases(cases);
  add_gemm_ex_cases(cases);
  add_classifier_cases(cases);
  add_embedding_cases(cases);
  add_rmsnorm_cases(cases);
  add_rope_cases(cases);
  add_attention_cases(cases);
  add_activation_cases(cases);
  add_cross_entropy_cases(cases);
  add_stream_cases(cases);
  add_sinkhorn_cases(cases);
  add_mhc_coeff_cases(cases);
  add_mhc_variant_cases(cases);
  add_collapse_cases(cases);
  add_hc_coeff_cases(cases);
  add_adamw_cases(cases);
  return cases;
}

std::vector<std::string> op_case_names() {
  std::vector<std::string> names;
  for (const OpCase& c : op_cases()) names.push_back(c.name);
  return names;
}

// ---- op parity tests --------------------------------------------------------------------

class CudaOpParity : public ::testing::TestWithParam<std::tuple<std::string, DType>> {
 protected:
  void SetUp() override {
    const std::string reason = cuda_skip_reason();
    if (!reason.empty()) GTEST_SKIP() << reason;
  }
};

TEST_P(CudaOpParity, MatchesCpuReference) {
  const auto& [case_name, dtype] = GetParam();
  const std::vector<OpCase> cases = op_cases();
  const OpCase* c = nullptr;
  for (const OpCase& candidate : cases)
    if (candidate.name == case_name) c = &candidate;
  ASSERT_NE(c, nullptr) << case_name;
  const bool bf16 = dtype == DType::BF16;
  const double tol = bf16 ? 1e-2 : 1e-4;
  const auto inputs = make_inputs(*c, bf16);

  CpuBackend<float> cpu;
  std::unique_ptr<Backend> gpu = make_gpu_backend(dtype);
  const Outcome ref = run_case(cpu, *c, inputs);
  const Outcome got = run_case(*gpu, *c, inputs);

  size_t k = 0;
  for (const Arg& arg : c->args) {
    if (!arg.compare) continue;
    const double err = relative_error(got.outputs[k], ref.outputs[k]);
    EXPECT_LE(err, tol) << c->name << ": " << arg.name << " (" << gpu->name() << ")";
    ++k;
  }
  if (!std::isnan(ref.scalar)) {
    const double err = std::fabs(got.scalar - ref.scalar) / std::max(std::fabs(ref.scalar), 1e-30);
    EXPECT_LE(err, tol) << c->name << ": scalar " << got.scalar << " vs " << ref.scalar;
  }
}

std::string op_param_name(const ::testing::TestParamInfo<CudaOpParity::ParamType>& info) {
  return std::get<0>(info.param) + (std::get<1>(info.param) == DType::BF16 ? "_bf16" : "_f32");
}

INSTANTIATE_TEST_SUITE_P(AllOps, CudaOpParity,
                         ::testing::Combine(::testing::ValuesIn(op_case_names()),
                                            ::testing::Values(DType::F32, DType::BF16)),
                         op_param_name);

// ---- model parity -----------------------------------------------------------------------

struct ModelCase {
  std::string mode;
  int n;
  bool dynamic;
  std::string mlp;
  std::string variant = "";        // a name for the config overrides below ("" = none)
  std::vector<std::string> sets{};  // config overrides "key=value" (residuals.md "Variants")
};

void PrintTo(const ModelCase& c, std::ostream* os) {
  *os << c.mode << " n=" << c.n << (c.dynamic ? " dynamic" : "") << " " << c.mlp;
  for (const std::string& set : c.sets) *os << " " << set;
}

class CudaModelParity : public ::testing::TestWithParam<ModelCase> {
 protected:
  void SetUp() override {
    const std::string reason = cuda_skip_reason();
    if (!reason.empty()) GTEST_SKIP() << reason;
  }
};

// One forward+backward of the same model on the CPU (fp32) and on the GPU, from the same
// weights: the init moved by noise, away from the symmetric init so that every path
// (connections included) is active.
struct StepSeeds {
  uint64_t init, noise;
  double noise_scale;
  uint64_t data;
};
struct StepComparison {
  ParamLayout layout;
  double loss[2];  // [0] CPU, [1] GPU
  std::vector<double> grads[2];
};
StepComparison compare_one_step(Backend& gpu, const Config& cfg, const ModelOptions& options,
                                const StepSeeds& seeds) {
  const ModelShape shape = model_shape_from_config(cfg);
  StepComparison r{ParamLayout::build(shape, cfg), {}, {}};
  const int B = 2, T = shape.T;
  CpuBackend<float> cpu;
  Model cpu_model(cpu, shape, r.layout, B, options);
  Model gpu_model(gpu, shape, r.layout, B, options);
  cpu_model.init_weights(seeds.init);
  std::vector<double> w = cpu_model.get_params();
  const std::vector<double> noise = testing::random_vector(w.size(), seeds.noise, seeds.noise_scale);
  for (size_t i = 0; i < w.size(); ++i) w[i] += noise[i];
  cpu_model.set_params(w);
  gpu_model.set_params(w);
  const auto inputs = testing::random_tokens(B * T, shape.V, seeds.data);
  const auto targets = testing::random_tokens(B * T, shape.V, seeds.data + 1);
  Model* models[2] = {&cpu_model, &gpu_model};
  for (int i = 0; i < 2; ++i) {
    models[i]->zero_grads();
    r.loss[i] = models[i]->forward(inputs.data(), targets.data(), B, T, 1.0f);
    models[i]->backward();
    r.grads[i] = models[i]->get_grads();
  }
  return r;
}

// Per tensor, the largest GPU−CPU difference relative to the tensor's own largest
// gradient, but never to less than 1% of the model's largest: some connection gradients
// are sums over tokens that cancel to ~1e-4 of the rest, where fp32 rounding alone (CPU
// float vs double) reaches 3e-4 of their own size.
void expect_gradients_close(const StepComparison& r, double tolerance, const std::string& what) {
  double global = 0;
  for (double g : r.grads[0]) global = std::max(global, std::fabs(g));
  for (const auto& p : r.layout.params) {
    double scale = 1e-2 * global, err = 0;
    for (int64_t i = 0; i < p.numel; ++i) {
      scale = std::max(scale, std::fabs(r.grads[0][p.offset + i]));
      err = std::max(err, std::fabs(r.grads[1][p.offset + i] - r.grads[0][p.offset + i]));
    }
    EXPECT_LE(err / scale, tolerance) << what << " " << p.name;
  }
}

TEST_P(CudaModelParity, ForwardBackwardMatchesCpuFloat) {
  const ModelCase& mc = GetParam();
  Config cfg = testing::tiny_config(mc.mode, mc.n, mc.dynamic);
  cfg.model.mlp = mc.mlp;
  cfg.model.tie_embeddings = mc.mlp == "swiglu";
  for (const std::string& set : mc.sets) apply_config_override(cfg, set);
  validate_config(cfg);
  std::unique_ptr<Backend> gpu = make_gpu_backend(DType::F32);
  const StepComparison r = compare_one_step(*gpu, cfg, {}, {7, 99, 0.3, 1});
  EXPECT_NEAR(r.loss[1], r.loss[0], 1e-4 * std::fabs(r.loss[0])) << gpu->name();
  expect_gradients_close(r, 1e-4, gpu->name());
}

std::string model_case_name(const ::testing::TestParamInfo<ModelCase>& info) {
  return info.param.mode + "_n" + std::to_string(info.param.n) +
         (info.param.dynamic ? "_dynamic" : "") + "_" + info.param.mlp +
         (info.param.variant.empty() ? "" : "_" + info.param.variant);
}

// bf16 training path: cuDNN attention (head size 32), the stream and coefficient
// kernels' vector paths, recompute and the chunked classifier, one forward+backward
// against the CPU in fp32. bf16 rounding of every activation bounds the agreement: the
// loss to 2e-2 relative, each gradient tensor to 0.1 of its scale (a layout or indexing
// bug gives O(1) errors).
TEST(CudaModelParityBf16, ForwardBackwardWithRecomputeAndChunkedClassifier) {
  const std::string reason = cuda_skip_reason();
  if (!reason.empty()) GTEST_SKIP() << reason;
  for (const std::string mode : {"baseline", "mhc"}) {
    Config cfg = testing::tiny_config(mode, mode == "mhc" ? 4 : 1);
    cfg.model.d_model = 64;
    cfg.model.n_head = 2;
    cfg.model.seq_len = 64;
    cfg.model.mlp_hidden = 128;
    cfg.model.n_layer = 3;
    ModelOptions options;
    options.recompute = true;
    options.classifier_chunk = 48;
    std::unique_ptr<Backend> gpu = make_gpu_backend(DType::BF16);
    const StepComparison r = compare_one_step(*gpu, cfg, options, {11, 5, 0.05, 8});
#if defined(MHC_WITH_CUDA) || defined(MHC_CUDA_EMULATED)
    const CudaAttentionStatus status = cuda_attention_status(*gpu);
    std::printf("[ attention ] %s: %s\n", mode.c_str(), status.last.c_str());
#endif
    EXPECT_NEAR(r.loss[1], r.loss[0], 2e-2 * std::fabs(r.loss[0])) << mode;
    expect_gradients_close(r, 0.1, mode);
  }
}

// With cuDNN compiled in and enabled, the GPT-2-small attention shape must run through
// cuDNN (not silently fall back), forward and backward. cuDNN is not emulated.
#ifndef MHC_CUDA_EMULATED
TEST(CudnnAttention, Gpt2ShapeRunsThroughCudnn) {
  const std::string reason = cuda_skip_reason();
  if (!reason.empty()) GTEST_SKIP() << reason;
#if defined(MHC_WITH_CUDA) || defined(MHC_CUDA_EMULATED)
  std::unique_ptr<Backend> gpu = make_gpu_backend(DType::BF16);
  if (!cuda_attention_status(*gpu).cudnn_enabled)
    GTEST_SKIP() << "cuDNN attention not compiled in or MHC_CUDNN_ATTENTION=off";
  const AttentionShape s{4, 1024, 12, 64};
  const int64_t NC = int64_t(s.B) * s.T * s.C();
  Tensor qkv = gpu->alloc(3 * NC, DType::BF16), out = gpu->alloc(NC, DType::BF16);
  Tensor lse = gpu->alloc(int64_t(s.B) * s.n_head * s.T, DType::F32);
  Tensor dout = gpu->alloc(NC, DType::BF16), dqkv = gpu->alloc(3 * NC, DType::BF16);
  gpu->fill(qkv, 0.01);
  gpu->fill(dout, 0.01);
  gpu->attention_forward(out, lse, qkv, s);
  const std::string fwd = cuda_attention_status(*gpu).last;
  gpu->attention_backward(dqkv, dout, qkv, out, lse, s);
  gpu->synchronize();
  const std::string bwd = cuda_attention_status(*gpu).last;
  std::printf("[ attention ] %s\n[ attention ] %s\n", fwd.c_str(), bwd.c_str());
  EXPECT_EQ(fwd.rfind("cuDNN flash attention forward", 0), 0u) << fwd;
  EXPECT_EQ(bwd.rfind("cuDNN flash attention backward", 0), 0u) << bwd;
  for (Tensor t : {qkv, out, lse, dout, dqkv}) gpu->release(t);
#endif
}
#endif  // MHC_CUDA_EMULATED

INSTANTIATE_TEST_SUITE_P(
    AllModes, CudaModelParity,
    ::testing::Values(ModelCase{"baseline", 1, false, "swiglu"},
                      ModelCase{"baseline", 1, false, "gelu"}, ModelCase{"hc", 2, false, "swiglu"},
                      ModelCase{"hc", 4, true, "gelu"}, ModelCase{"hc", 2, true, "swiglu"},
                      ModelCase{"mhc", 1, false, "swiglu"}, ModelCase{"mhc", 2, false, "swiglu"},
                      ModelCase{"mhc", 4, false, "gelu"},
                      // the mHC variants and the learned collapse (residuals.md "Variants")
                      ModelCase{"mhc", 4, false, "swiglu", "v4_learned",
                                {"residual.mhc.numerics=deepseek_v4", "residual.collapse=learned"}},
                      ModelCase{"mhc", 3, false, "gelu", "birkhoff",
                                {"residual.mhc.projection=birkhoff"}},
                      ModelCase{"mhc", 4, false, "swiglu", "kronecker",
                                {"residual.mhc.projection=kronecker"}},
                      ModelCase{"mhc", 2, false, "gelu", "identity",
                                {"residual.mhc.projection=identity"}},
                      ModelCase{"mhc", 4, false, "swiglu", "static", {"residual.mhc.dynamic=false"}},
                      ModelCase{"hc", 2, true, "gelu", "learned", {"residual.collapse=learned"}}),
    model_case_name);

}  // namespace
}  // namespace mhc
