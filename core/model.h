// The transformer with baseline / HC / mHC residual connections, written once against
// the Backend op table (residuals.md, architecture.md "Model backbone").
//
// Contract:
// - forward() overwrites all activations of the micro-batch and returns the mean loss;
//   with grad_scale != 0 it also leaves d(grad_scale · mean loss)/dlogits in the logits
//   buffer for backward().
// - backward() accumulates (+=) into grads(); call zero_grads() before a new step.
// - Parameters live in one flat master buffer in ParamLayout order (export names);
//   working weights are a compute-dtype copy (the same buffer when dtypes match).
// - backward() reports, through an optional grad-ready hook, each group of parameters
//   whose gradients it has finished (data-parallel reduction overlaps the rest).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "backend.h"
#include "model_shape.h"
#include "param_layout.h"

namespace mhc {

// Carves typed tensors out of one allocation. A planning arena (no base) only counts.
class BufferArena {
 public:
  BufferArena() = default;
  explicit BufferArena(Tensor base) : base_(base) {}
  Tensor take(int64_t numel, DType dtype);
  int64_t bytes() const { return offset_; }

 private:
  Tensor base_{};
  int64_t offset_ = 0;
};

class Model {
 public:
  // Allocates parameters, gradients and activations for micro-batches of up to max_batch
  // sequences of up to shape.T tokens. Weights start at zero: call init_weights().
  Model(Backend& backend, const ModelShape& shape, const ParamLayout& layout, int max_batch);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // Bytes of activations + gradients + parameters (+ working copy) the model allocates.
  static int64_t planned_bytes(const Backend& backend, const ModelShape& shape,
                               const ParamLayout& layout, int max_batch);

  void init_weights(uint64_t seed);
  // Host copies of the flat master parameters / gradients (double, ParamLayout order).
  std::vector<double> get_params();
  void set_params(const std::vector<double>& values);
  std::vector<double> get_grads();
  // After changing master weights: refresh the working (compute dtype) copy.
  void sync_working_weights();

  double forward(const int32_t* inputs, const int32_t* targets, int B, int T, float grad_scale);
  void backward();
  void zero_grads();

  // Called by backward() with the ParamLayout indices whose gradients this backward has
  // finished, one call per stage in the order backward finishes them: the head (final
  // norm, untied lm_head), sublayers 2L-1 .. 0, then the embedding. Every parameter is
  // reported exactly once per backward; on a GPU "finished" means queued on the
  // compute stream. An empty hook removes it.
  using GradReadyHook = std::function<void(const std::vector<int>& params)>;
  void set_grad_ready_hook(GradReadyHook hook) { grad_ready_hook_ = std::move(hook); }
  // The stages above (what the hook will be called with, in order).
  const std::vector<std::vector<int>>& grad_stages() const { return grad_stages_; }

  // Logits [B*T, Vp] of the last forward (valid when it had no grad_scale).
  Tensor logits() const;
  // Connection coefficients of sublayer k from the last forward (hc/mhc only).
  Coeffs coeffs(int k) const;
  // Residual state X_k [tokens, n, C] entering sublayer k (k = 2L: after the last) and
  // the sublayer input u_k [tokens, C] (hc/mhc; for baseline, X_k itself), last forward.
  Tensor residual_state(int k) const;
  Tensor sublayer_input(int k) const;
  // Number of tokens of the last forward.
  int last_tokens() const { return N_; }

  Backend& backend() { return backend_; }
  const ModelShape& shape() const { return shape_; }
  const ParamLayout& layout() const { return layout_; }
  Tensor params() const { return params_; }
  Tensor grads() const { return grads_; }
  Tensor param(int index) const;
  Tensor grad(int index) const;

 private:
  struct SublayerActs;
  struct Buffers;
  static void make_buffers(BufferArena& arena, Buffers& b, DType act, DType master,
                           const ModelShape& shape, int max_batch);
  void sublayer_forward(int k, int B, int T);
  void sublayer_backward(int k, int B, int T, Tensor dX_out, Tensor dX_in);
  void attention_forward(int k, int B, int T);
  void attention_backward(int k, int B, int T, Tensor df, Tensor dh);
  void mlp_forward(int k, int N);
  void mlp_backward(int k, int N, Tensor df, Tensor dh);
  Tensor weight(int index) const;  // working copy
  void build_grad_stages();
  void grads_ready(int stage) const {
    if (grad_ready_hook_) grad_ready_hook_(grad_stages_[stage]);
  }
  MhcParams mhc_params(const ConnParamIndex& c, bool grads) const;
  HcParams hc_params(const ConnParamIndex& c, bool grads) const;

  Backend& backend_;
  ModelShape shape_;
  ParamLayout layout_;
  int max_batch_;
  int N_ = 0, B_ = 0, T_ = 0;  // tokens, sequences and length of the last forward
  Tensor arena_{};
  Tensor params_{}, weights_{}, grads_{};
  std::unique_ptr<Buffers> buf_;
  std::vector<std::vector<int>> grad_stages_;  // head, sublayers 2L-1..0, embedding
  GradReadyHook grad_ready_hook_;
};

}  // namespace mhc
