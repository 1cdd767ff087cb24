// mhc_reference_dump: one forward + backward of a tiny model on the CPU backend, written
// to ONE safetensors file for tests/reference/compare_reference.py to check against the
// PyTorch reference model (tests/reference/mhc_reference.py).
//
// The file holds
//   <export name>          the weights (F64 for --dtype f64, F32 for --dtype f32), the
//                          vocabulary-sized tensors with their V real rows
//   grad.<export name>     d(mean loss)/d(weight), same shapes and dtype
//   inputs, targets        I64 [B·T] (row-major [B, T])
//   loss                   F64 [] (the mean cross-entropy of the forward)
//   inter.<k>.{pre,post,res,X}  mhc only: sublayer k's coefficients [B·T, n], [B·T, n, n]
//                          and the merged state X_{k+1} [B·T, n, C] of the forward
//   __metadata__           the resolved config (YAML) and the flat shape/config keys the
//                          reference needs (JSON values as strings), see write_metadata().
//
// Weights are initialised from the seed exactly as training does, then every entry of
// every tensor gets Gaussian noise (std --noise) so the connections are away from their
// symmetric init and every path of the backward carries gradient. Padded vocabulary rows
// are kept zero; the tool fails if any of them receives a gradient.
//
// Usage: mhc_reference_dump --out FILE [--mode baseline|hc|mhc] [--n N] [--dynamic]
//          [--mlp swiglu|gelu] [--untied] [--dtype f64|f32] [--seed S] [--noise X]
//          [--batch B] [--set key.path=value]...
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "config.h"
#include "cpu/cpu_backend.h"
#include "error.h"
#include "model.h"
#include "model_shape.h"
#include "param_layout.h"
#include "rng.h"
#include "safetensors.h"

namespace {

using namespace mhc;

struct Args {
  std::string out;
  std::string mode = "mhc";
  int n = 4;
  bool dynamic = false;
  std::string mlp = "swiglu";
  bool tied = true;
  std::string dtype = "f64";
  uint64_t seed = 7;
  double noise = 0.1;
  int batch = 2;
  std::vector<std::string> sets;
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "mhc_reference_dump: %s\n"
               "usage: mhc_reference_dump --out FILE [--mode baseline|hc|mhc] [--n N] [--dynamic]\n"
               "         [--mlp swiglu|gelu] [--untied] [--dtype f64|f32] [--seed S] [--noise X]\n"
               "         [--batch B] [--set key.path=value]...\n",
               why.c_str());
  std::exit(2);
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage("missing value after " + k);
      return argv[++i];
    };
    if (k == "--out") a.out = value();
    else if (k == "--mode") a.mode = value();
    else if (k == "--n") a.n = std::stoi(value());
    else if (k == "--dynamic") a.dynamic = true;
    else if (k == "--mlp") a.mlp = value();
    else if (k == "--untied") a.tied = false;
    else if (k == "--tied") a.tied = true;
    else if (k == "--dtype") a.dtype = value();
    else if (k == "--seed") a.seed = std::stoull(value());
    else if (k == "--noise") a.noise = std::stod(value());
    else if (k == "--batch") a.batch = std::stoi(value());
    else if (k == "--set") a.sets.push_back(value());
    else if (k == "-h" || k == "--help") usage("help");
    else usage("unknown argument '" + k + "'");
  }
  if (a.out.empty()) usage("--out is required");
  if (a.dtype != "f64" && a.dtype != "f32") usage("--dtype must be f64 or f32");
  if (a.batch < 1) usage("--batch must be >= 1");
  return a;
}

// The tiny model every reference test uses unless overridden with --set. V = 50 is not
// a multiple of 64, so the padded-vocabulary path is exercised; B·T = 16 makes the
// 1/N loss scale exact in float.
Config tiny_config(const Args& a) {
  Config cfg = default_config();
  cfg.model.vocab_size = 50;
  cfg.model.d_model = 16;
  cfg.model.n_layer = 2;
  cfg.model.n_head = 2;
  cfg.model.seq_len = 8;
  cfg.model.mlp_hidden = 24;
  cfg.model.mlp = a.mlp;
  cfg.model.tie_embeddings = a.tied;
  cfg.residual.mode = a.mode;
  cfg.residual.n = a.n;
  cfg.residual.hc.dynamic = a.dynamic;
  cfg.train.micro_batch = a.batch;
  for (const auto& s : a.sets) apply_config_override(cfg, s);
  validate_config(cfg);
  return cfg;
}

std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// Export shape: vocabulary-sized tensors keep their V real rows.
std::vector<int64_t> export_shape(const ParamInfo& p, const ModelShape& s) {
  std::vector<int64_t> shape = p.shape;
  if (p.name == "embed.weight" || p.name == "lm_head.weight") shape[0] = s.V;
  return shape;
}

bool is_vocab_tensor(const ParamInfo& p) {
  return p.name == "embed.weight" || p.name == "lm_head.weight";
}

template <class T>
int run(const Args& a) {
  const Config cfg = tiny_config(a);
  const ModelShape shape = model_shape_from_config(cfg);
  const ParamLayout layout = ParamLayout::build(shape, cfg);
  CpuBackend<T> backend(1);  // one thread: deterministic and fast enough at this size
  const int B = a.batch, Tn = shape.T, N = B * Tn;
  Model model(backend, shape, layout, B);
  model.init_weights(a.seed);

  // Perturb every parameter (padded vocabulary rows stay zero).
  std::vector<double> w = model.get_params();
  const uint64_t noise_key = hash_combine(a.seed, 0x6e6f697365ull);  // "noise"
  for (const auto& p : layout.params) {
    const int64_t real = is_vocab_tensor(p) ? static_cast<int64_t>(shape.V) * shape.C : p.numel;
    for (int64_t i = 0; i < p.numel; ++i) {
      double& v = w[static_cast<size_t>(p.offset + i)];
      if (i >= real) {
        v = 0;
        continue;
      }
      v += a.noise * normal01(hash_combine(noise_key, hash_string(p.name)), static_cast<uint64_t>(i));
    }
  }
  model.set_params(w);
  w = model.get_params();  // the weights as the backend holds them (rounded for f32)

  std::vector<int32_t> inputs(static_cast<size_t>(N)), targets(static_cast<size_t>(N));
  for (int i = 0; i < N; ++i) {
    inputs[i] = static_cast<int32_t>(uniform01(hash_combine(a.seed, 1), i) * shape.V) % shape.V;
    targets[i] = static_cast<int32_t>(uniform01(hash_combine(a.seed, 2), i) * shape.V) % shape.V;
  }

  model.zero_grads();
  const double loss = model.forward(inputs.data(), targets.data(), B, Tn, 1.0f);
  model.backward();
  const std::vector<double> g = model.get_grads();

  double padded_grad_max = 0;
  for (const auto& p : layout.params)
    if (is_vocab_tensor(p))
      for (int64_t i = static_cast<int64_t>(shape.V) * shape.C; i < p.numel; ++i)
        padded_grad_max = std::max(padded_grad_max, std::fabs(g[static_cast<size_t>(p.offset + i)]));
  if (padded_grad_max != 0) {
    std::fprintf(stderr, "mhc_reference_dump: padded vocabulary rows got a gradient (max |g| = %g)\n",
                 padded_grad_max);
    return 1;
  }
  if (!std::isfinite(loss)) {
    std::fprintf(stderr, "mhc_reference_dump: loss is not finite (%g)\n", loss);
    return 1;
  }

  const StDType st = a.dtype == "f64" ? StDType::F64 : StDType::F32;
  SafetensorsWriter out;
  std::string names = "[";
  for (const auto& p : layout.params) {
    const auto es = export_shape(p, shape);
    out.add(p.name, es, w.data() + p.offset, st);
    out.add("grad." + p.name, es, g.data() + p.offset, st);
    names += (names.size() > 1 ? ", \"" : "\"") + p.name + "\"";
  }
  names += "]";
  out.add_i64("inputs", std::vector<int64_t>(inputs.begin(), inputs.end()));
  out.add_i64("targets", std::vector<int64_t>(targets.begin(), targets.end()));
  out.add("loss", {}, &loss, StDType::F64);
  if (shape.mode == ResidualMode::MHC) {  // every intermediate of the connections
    const int64_t n = shape.n;
    auto host = [&](Tensor t) {
      std::vector<double> v(static_cast<size_t>(t.numel));
      backend.download(t, v.data());
      return v;
    };
    for (int k = 0; k < shape.sublayers(); ++k) {
      const Coeffs c = model.coeffs(k);
      const std::string p = "inter." + std::to_string(k) + ".";
      out.add(p + "pre", {N, n}, host(c.pre).data(), st);
      out.add(p + "post", {N, n}, host(c.post).data(), st);
      out.add(p + "res", {N, n, n}, host(c.res).data(), st);
      out.add(p + "X", {N, n, shape.C}, host(model.residual_state(k + 1)).data(), st);
    }
  }

  // Flat keys for the reference. Epsilons and theta are the values the kernels use:
  // the backend ops take them as float, so they are written after that rounding.
  out.set_metadata("format", "mhc-reference-1");
  out.set_metadata("config", config_to_yaml(cfg));
  out.set_metadata("dtype", a.dtype);
  out.set_metadata("mode", residual_mode_name(shape.mode));
  out.set_metadata("n", std::to_string(shape.n));
  out.set_metadata("hc_dynamic", shape.hc_dynamic ? "true" : "false");
  out.set_metadata("mlp", shape.swiglu ? "swiglu" : "gelu");
  out.set_metadata("tied", shape.tied ? "true" : "false");
  out.set_metadata("V", std::to_string(shape.V));
  out.set_metadata("Vp", std::to_string(shape.Vp));
  out.set_metadata("C", std::to_string(shape.C));
  out.set_metadata("L", std::to_string(shape.L));
  out.set_metadata("n_head", std::to_string(shape.n_head));
  out.set_metadata("hidden", std::to_string(shape.hidden));
  out.set_metadata("B", std::to_string(B));
  out.set_metadata("T", std::to_string(Tn));
  out.set_metadata("sinkhorn_iters", std::to_string(shape.sinkhorn_iters));
  out.set_metadata("norm_eps", num(static_cast<double>(shape.norm_eps)));
  out.set_metadata("mhc_eps", num(static_cast<double>(shape.mhc_eps)));
  out.set_metadata("rope_theta", num(static_cast<double>(shape.rope_theta)));
  out.set_metadata("seed", std::to_string(a.seed));
  out.set_metadata("noise", num(a.noise));
  out.set_metadata("param_names", names);
  out.set_metadata("mhc_projection", mhc_projection_name(shape.mhc.projection));
  out.set_metadata("mhc_numerics", shape.mhc.v4 ? "deepseek_v4" : "paper");
  out.set_metadata("mhc_dynamic", shape.mhc.dynamic ? "true" : "false");
  out.set_metadata("collapse", shape.learned_collapse ? "learned" : "sum");
  out.write(a.out);
  std::printf("mhc_reference_dump: %s %s n=%d%s %s %s: loss %.12g, %zu tensors -> %s\n",
              a.dtype.c_str(), residual_mode_name(shape.mode), shape.n,
              shape.hc_dynamic ? " dynamic" : "", shape.swiglu ? "swiglu" : "gelu",
              shape.tied ? "tied" : "untied", loss, layout.params.size(), a.out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args a = parse_args(argc, argv);
    return a.dtype == "f64" ? run<double>(a) : run<float>(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mhc_reference_dump: error: %s\n", e.what());
    return 1;
  }
}
