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

// Memory-saving choices of a Model (the defaults keep every activation and full logits).
//
// recompute (train.recompute; hc/mhc only, baseline is unaffected): the residual state
// X_k [N,n,C] is stored only at segment starts (k a multiple of recompute_segment, and
// k = 2L) plus recompute_segment−1 shared slots; backward recomputes the other X_k of a
// segment from its start with stream_merge_forward (from the stored sublayer outputs f_j
// and coefficients), and recomputes u_k = Σ pre_i X_i with stream_aggregate_forward
// instead of storing it. Stored per sublayer: f, the normed input h and its rstd, the
// coefficients (pre, post, res) and the mHC m, r / HC dynamic rstd, tanh (all O(N·n²)),
// and the sublayer's own activations (qkv, att, lse or the MLP hidden). The replayed
// kernels are the forward's, so gradients are bit-identical to recompute = false.
//
// classifier_chunk > 0: the head and loss run `classifier_chunk` tokens at a time
// (Backend::classifier); with a gradient, forward() then also computes the head's
// gradients (its weight gradient += and d(final norm output)), and the logits buffer
// holds max(classifier_chunk, T) rows: logits() is only valid after a forward without
// targets of at most that many tokens.
struct ModelOptions {
  bool recompute = false;
  int recompute_segment = 0;  // 0: round(sqrt(2L))
  int classifier_chunk = 0;   // 0: whole micro-batch at once
};

// The options a training run uses: recompute from train.recompute, and the classifier
// chunked so that at most 2^28 logits exist at once (none when the batch is smaller).
ModelOptions model_options_for_training(const Config& cfg, const ModelShape& shape, int max_batch);

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
  Model(Backend& backend, const ModelShape& shape, const ParamLayout& layout, int max_batch,
        const ModelOptions& options = {});
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // Bytes of activations + gradients + parameters (+ working copy) the model allocates.
  static int64_t planned_bytes(const Backend& backend, const ModelShape& shape,
                               const ParamLayout& layout, int max_batch,
                               const ModelOptions& options = {});

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

  // Logits [B*T, Vp] of the last forward (valid when it had no grad_scale; with
  // options().classifier_chunk, only after a forward without targets).
  Tensor logits() const;
  // Connection coefficients of sublayer k from the last forward (hc/mhc only).
  Coeffs coeffs(int k) const;
  // Learned collapse weights w [tokens, n] of the last forward (residual.collapse=learned;
  // an empty tensor otherwise).
  Tensor collapse_weights() const;
  // Residual state X_k [tokens, n, C] entering sublayer k (k = 2L: after the last) and
  // the sublayer input u_k [tokens, C] (hc/mhc; for baseline, X_k itself), last forward.
  // With options().recompute these may be recomputed into shared slots: a returned
  // tensor is valid until the next call of either, backward() or forward().
  Tensor residual_state(int k) const;
  Tensor sublayer_input(int k) const;
  // Number of tokens of the last forward.
  int last_tokens() const { return N_; }
  // Per-token losses (nats) of the last forward with targets, [B*T] row-major.
  const std::vector<double>& token_losses() const { return token_losses_; }

  Backend& backend() { return backend_; }
  const ModelShape& shape() const { return shape_; }
  const ModelOptions& options() const { return options_; }
  const ParamLayout& layout() const { return layout_; }
  Tensor params() const { return params_; }
  Tensor grads() const { return grads_; }
  Tensor param(int index) const;
  Tensor grad(int index) const;

 private:
  struct SublayerActs;
  struct Buffers;
  static void make_buffers(BufferArena& arena, Buffers& b, DType act, DType master,
                           const ModelShape& shape, int max_batch, const ModelOptions& options);
  void sublayer_forward(int k, int B, int T);
  void sublayer_backward(int k, int B, int T, Tensor dX_out, Tensor dX_in);
  // The sublayer's output GEMM writes out = F(u) + (residual ? residual : 0).
  void attention_forward(int k, int B, int T, Tensor out, Tensor residual);
  void attention_backward(int k, int B, int T, Tensor df, Tensor dh);
  void mlp_forward(int k, int N, Tensor out, Tensor residual);
  // recompute: the stored X_k of every k (true) or only of segment starts and 2L.
  bool stores_state(int k) const;
  // recompute: makes the residual states of k's segment current (replaying merges).
  void materialize_segment(int k) const;
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
  ModelOptions options_;
  int segment_ = 1;                       // recompute segment length (sublayers)
  mutable int materialized_segment_ = -1;  // recompute: whose states the slots hold
  bool head_done_ = false;  // the last forward already ran the head's backward (chunked)
  int N_ = 0, B_ = 0, T_ = 0;  // tokens, sequences and length of the last forward
  Tensor arena_{};
  Tensor params_{}, weights_{}, grads_{};
  std::unique_ptr<Buffers> buf_;
  std::vector<std::vector<int>> grad_stages_;  // head, sublayers 2L-1..0, embedding
  GradReadyHook grad_ready_hook_;
  std::vector<double> token_losses_;  // host copy of the last forward's losses
};

}  // namespace mhc
