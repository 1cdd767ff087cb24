// The model's shape, derived from the config once and validated: every size the model,
// the parameter layout and the backends need.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "config.h"
#include "mhc_math.h"

namespace mhc {

enum class ResidualMode { Baseline, HC, MHC };

struct ModelShape {
  int V = 0;       // vocabulary
  int Vp = 0;      // padded to a multiple of 64
  int C = 0;       // d_model
  int L = 0;       // blocks
  int n_head = 0;
  int head_dim = 0;
  int T = 0;       // max sequence length
  int hidden = 0;  // MLP hidden size
  bool swiglu = true;
  bool tied = true;
  ResidualMode mode = ResidualMode::MHC;
  int n = 1;       // streams (1 for baseline)
  bool hc_dynamic = false;
  int sinkhorn_iters = 20;
  float norm_eps = 1e-5f;
  float rope_theta = 10000.f;
  float mhc_eps = 1e-6f;
  math::MhcVariant mhc{};        // mHC variant (only set in mode mhc)
  bool learned_collapse = false;  // residual.collapse: learned (hc/mhc)

  int sublayers() const { return 2 * L; }
  int D() const { return math::mhc_coeff_count(mhc.projection, n); }  // mHC coefficients per token
};

ModelShape model_shape_from_config(const Config& cfg);
ResidualMode parse_residual_mode(const std::string& s);
const char* residual_mode_name(ResidualMode m);
math::MhcProjection parse_mhc_projection(const std::string& s);
const char* mhc_projection_name(math::MhcProjection p);
// The connection in words: "baseline", "hc n=4", "mhc n=4 projection=birkhoff ..." (every
// variant key that differs from the paper's mHC, and a learned collapse).
std::string connection_label(const ModelShape& s);
// The residual.* keys a reader of exported weights needs to interpret the connection
// tensors (key, value as YAML text), for safetensors metadata.
std::vector<std::pair<std::string, std::string>> connection_metadata(const Config& cfg);

}  // namespace mhc
