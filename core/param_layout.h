// The parameter table: every tensor's export name, shape, offset in the flat parameter
// buffer, weight-decay flag and initialisation. Built from the ModelShape alone, so the
// same config always gives the same layout and names (architecture.md, "Exported
// weights").
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "config.h"
#include "model_shape.h"

namespace mhc {

enum class InitKind {
  Normal,         // N(0, value²) drawn from (seed, name)
  Constant,       // every entry = value
  Identity,       // n×n identity
  OneHot,         // e_{k mod n} (HC input weights)
  MhcBias,        // [pre: -s + 2s·e_{k mod n} | post: 0 | res: by projection (below)]
                  //   sinkhorn 2s·I - s; birkhoff s_lite on the identity permutation, 0
                  //   elsewhere; kronecker s on every factor; identity none
};

struct ParamInfo {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0;
  int64_t numel = 0;
  bool decay = false;
  InitKind init = InitKind::Constant;
  double init_value = 0;
  int sublayer = -1;  // k for connection parameters
};

// Indices into ParamLayout::params of one sublayer's tensors (-1 when absent).
struct ConnParamIndex {
  int a = -1, A = -1, b = -1;
  int norm_w = -1, w_a = -1, W_A = -1, w_b = -1, s_alpha = -1, s_beta = -1;
  int phi = -1, alpha = -1, bias = -1;
};

struct SublayerParamIndex {
  bool attention = true;
  int norm = -1;
  int w_in = -1;   // attention: wq (wk, wv follow contiguously) | mlp: w_gate (w_up follows) or w_up
  int w_out = -1;  // wo | w_down
  ConnParamIndex conn;
};

struct ParamLayout {
  std::vector<ParamInfo> params;
  std::vector<SublayerParamIndex> sublayers;  // 2L
  int embed = -1, final_norm = -1, lm_head = -1;
  int collapse_phi = -1, collapse_alpha = -1, collapse_bias = -1;  // residual.collapse=learned
  int64_t total = 0;

  static ParamLayout build(const ModelShape& shape, const Config& cfg);
  int find(const std::string& name) const;  // -1 when absent
  int64_t count_matching(bool connection) const;
};

bool is_connection_param(const std::string& name);

// The shape a parameter has for a user, as checkpoints and `mhc export` store it:
// vocabulary-sized tensors (embed, untied head) have V rows, not the padded Vp.
std::vector<int64_t> user_param_shape(const ParamInfo& p, const ModelShape& shape);
// The model's parameter count as a user counts it: the entries of every tensor at its
// user shape, without the alignment gaps of the flat buffer or padded vocabulary rows.
// connections_only: only the residual-connection parameters.
int64_t parameter_count(const ParamLayout& layout, const ModelShape& shape,
                        bool connections_only = false);

// mHC-lite's identity logit: the value whose softmax puts on every diagonal entry of
// H_res the mass the Sinkhorn init 2s·I − s gives it (residuals.md "Variants").
double birkhoff_identity_logit(int n, double s);

// Initial values of one parameter (host, double).
std::vector<double> init_param(const ParamInfo& p, const ModelShape& shape, uint64_t seed);

}  // namespace mhc
