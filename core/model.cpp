#include "model.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "error.h"

namespace mhc {

Tensor BufferArena::take(int64_t numel, DType dtype) {
  constexpr int64_t kAlignBytes = 256;
  offset_ = (offset_ + kAlignBytes - 1) / kAlignBytes * kAlignBytes;
  Tensor t{nullptr, numel, dtype};
  if (base_.data) {
    MHC_CHECK(offset_ + static_cast<int64_t>(t.bytes()) <= static_cast<int64_t>(base_.bytes()));
    t.data = static_cast<char*>(base_.data) + offset_;
  }
  offset_ += static_cast<int64_t>(t.bytes());
  return t;
}

// Activations of one sublayer k (F_k = Sublayer_k(RMSNorm_k(u))).
struct Model::SublayerActs {
  Tensor u;             // [N,C] sublayer input (hc/mhc: Σ pre_i X_i; baseline: X_k itself;
                        //  with recompute the shared Buffers::u_shared)
  Tensor h, rstd;       // [N,C] normed input, [N] its rstd
  Tensor f;             // [N,C] sublayer output (hc/mhc only: the baseline's output GEMM
                        //  adds into X_{k+1} directly)
  Tensor qkv, att, lse; // attention: [N,3C] (after RoPE), [N,C], [B,heads,T]
  Tensor hid_in, hid_act;  // mlp: [N,2H] or [N,H] pre-activation, [N,H] activation
  Coeffs coeffs;        // hc/mhc: per-token pre/post/res
  MhcSaved mhc;
  HcSaved hc;
};

struct Model::Buffers {
  Tensor inputs, targets;  // I32 [N]
  Tensor emb;              // [N,C] token embeddings (hc/mhc, before expansion)
  std::vector<Tensor> X;   // 2L+1 residual states [N,n,C] (with recompute, views of
                           //  segment-start buffers and of recompute_segment−1 slots)
  Tensor u_shared;         // recompute: [N,C] the one u buffer of every sublayer
  std::vector<SublayerActs> sub;
  Tensor y, yn, rstd_final, logits, losses;
  Tensor collapse_w, collapse_m, collapse_rms, collapse_dw;  // learned collapse [N,n] x3, [N]
  // backward scratch, reused by every sublayer
  Tensor dXa, dXb, du, dh, df, dy, dyn, dqkv, datt, dhid_in, dhid_act;
  Coeffs dcoeffs;
};

namespace {

// recompute segment length: round(sqrt(2L)) minimises (2L/R + R − 1) stored states.
int segment_length(const ModelShape& s, const ModelOptions& o) {
  if (!o.recompute || s.mode == ResidualMode::Baseline) return 1;
  const int r = o.recompute_segment > 0
                    ? o.recompute_segment
                    : static_cast<int>(std::lround(std::sqrt(static_cast<double>(s.sublayers()))));
  return std::max(1, std::min(r, s.sublayers()));
}

// Rows of the logits buffer.
int64_t logits_rows(const ModelShape& s, const ModelOptions& o, int64_t N) {
  if (o.classifier_chunk <= 0 || o.classifier_chunk >= N) return N;
  return std::min<int64_t>(N, std::max<int64_t>(o.classifier_chunk, s.T));
}

}  // namespace

ModelOptions model_options_for_training(const Config& cfg, const ModelShape& shape,
                                        int max_batch) {
  ModelOptions o;
  o.recompute = cfg.train.recompute;
  const int64_t N = static_cast<int64_t>(max_batch) * shape.T;
  const int64_t budget = int64_t(1) << 28;  // logits entries at once (512 MiB in bf16)
  if (N * shape.Vp > budget) {
    const int64_t chunks = (N * shape.Vp + budget - 1) / budget;
    o.classifier_chunk = static_cast<int>((N + chunks - 1) / chunks);
  }
  return o;
}

void Model::make_buffers(BufferArena& a, Buffers& b, DType act, DType master, const ModelShape& s,
                         int max_batch, const ModelOptions& opt) {
  const int64_t N = static_cast<int64_t>(max_batch) * s.T, C = s.C, n = s.n, H = s.hidden;
  const bool streams = s.mode != ResidualMode::Baseline;
  const int64_t hid_in = s.swiglu ? 2 * H : H;
  const int K = s.sublayers();
  const int R = segment_length(s, opt);
  b.inputs = a.take(N, DType::I32);
  b.targets = a.take(N, DType::I32);
  if (streams) b.emb = a.take(N * C, act);
  b.X.assign(K + 1, Tensor{});
  std::vector<Tensor> slots;
  for (int r = 1; r < R; ++r) slots.push_back(a.take(N * n * C, act));
  for (int k = 0; k <= K; ++k)
    b.X[k] = (k % R == 0 || k == K) ? a.take(N * n * C, act) : slots[(k % R) - 1];
  const bool shared_u = streams && opt.recompute;
  if (shared_u) b.u_shared = a.take(N * C, act);
  b.sub.resize(K);
  for (int k = 0; k < K; ++k) {
    SublayerActs& sa = b.sub[k];
    if (streams) sa.u = shared_u ? b.u_shared : a.take(N * C, act);
    sa.h = a.take(N * C, act);
    sa.rstd = a.take(N, master);
    if (streams) sa.f = a.take(N * C, act);
    if (k % 2 == 0) {
      sa.qkv = a.take(N * 3 * C, act);
      sa.att = a.take(N * C, act);
      sa.lse = a.take(N * s.n_head, master);
    } else {
      sa.hid_in = a.take(N * hid_in, act);
      sa.hid_act = a.take(N * H, act);
    }
    if (streams) {
      sa.coeffs = {a.take(N * n, master), a.take(N * n, master), a.take(N * n * n, master)};
      if (s.mode == ResidualMode::MHC) sa.mhc = {a.take(N * s.D(), master), a.take(N, master)};
      if (s.mode == ResidualMode::HC && s.hc_dynamic)
        sa.hc = {a.take(N * n, master), a.take(N * n * (n + 2), master)};
    }
  }
  b.y = streams ? a.take(N * C, act) : Tensor{};
  if (s.learned_collapse) {
    b.collapse_w = a.take(N * n, master);
    b.collapse_m = a.take(N * n, master);
    b.collapse_rms = a.take(N, master);
    b.collapse_dw = a.take(N * n, master);
  }
  b.yn = a.take(N * C, act);
  b.rstd_final = a.take(N, master);
  b.logits = a.take(logits_rows(s, opt, N) * s.Vp, act);
  b.losses = a.take(N, master);
  b.dXa = a.take(N * n * C, act);
  b.dXb = streams ? a.take(N * n * C, act) : Tensor{};
  b.du = a.take(N * C, act);
  b.dh = a.take(N * C, act);
  b.df = a.take(N * C, act);
  b.dy = a.take(N * C, act);
  b.dyn = a.take(N * C, act);
  b.dqkv = a.take(N * 3 * C, act);
  b.datt = a.take(N * C, act);
  b.dhid_in = a.take(N * hid_in, act);
  b.dhid_act = a.take(N * H, act);
  if (streams)
    b.dcoeffs = {a.take(N * n, master), a.take(N * n, master), a.take(N * n * n, master)};
}

namespace {

int64_t param_bytes(const Backend& be, const ParamLayout& layout) {
  int64_t bytes = layout.total * static_cast<int64_t>(dtype_size(be.master_dtype())) * 2;
  if (be.compute_dtype() != be.master_dtype())
    bytes += layout.total * static_cast<int64_t>(dtype_size(be.compute_dtype()));
  return bytes;
}

}  // namespace

int64_t Model::planned_bytes(const Backend& backend, const ModelShape& shape,
                             const ParamLayout& layout, int max_batch,
                             const ModelOptions& options) {
  BufferArena plan;
  Buffers b;
  make_buffers(plan, b, backend.compute_dtype(), backend.master_dtype(), shape, max_batch,
               options);
  return plan.bytes() + param_bytes(backend, layout);
}

Model::Model(Backend& backend, const ModelShape& shape, const ParamLayout& layout, int max_batch,
             const ModelOptions& options)
    : backend_(backend), shape_(shape), layout_(layout), max_batch_(max_batch), options_(options),
      segment_(segment_length(shape, options)), buf_(std::make_unique<Buffers>()) {
  MHC_CHECK(max_batch > 0);
  const DType master = backend.master_dtype(), act = backend.compute_dtype();
  BufferArena plan;
  {
    Buffers counting;
    make_buffers(plan, counting, act, master, shape, max_batch, options_);
  }
  // One allocation for all activations (allocated once up front, as on a GPU).
  arena_ = backend_.alloc((plan.bytes() + 7) / 8, DType::F64);
  BufferArena arena(arena_);
  make_buffers(arena, *buf_, act, master, shape, max_batch, options_);
  params_ = backend_.alloc(layout.total, master);
  grads_ = backend_.alloc(layout.total, master);
  weights_ = act == master ? params_ : backend_.alloc(layout.total, act);
  build_grad_stages();
}

void Model::build_grad_stages() {
  const int S = shape_.sublayers();
  std::vector<int> stage(layout_.params.size(), -1);
  auto put = [&](int index, int st) {
    if (index < 0) return;
    MHC_CHECK(stage.at(index) == -1);
    stage[index] = st;
  };
  put(layout_.final_norm, 0);
  for (int i : {layout_.collapse_phi, layout_.collapse_alpha, layout_.collapse_bias}) put(i, 0);
  if (!shape_.tied) put(layout_.lm_head, 0);
  for (int k = 0; k < S; ++k) {
    const SublayerParamIndex& idx = layout_.sublayers[k];
    const int st = 1 + (S - 1 - k);
    put(idx.norm, st);
    for (int i = idx.w_in; i <= idx.w_out; ++i) put(i, st);  // fused w_in parts, then w_out
    const ConnParamIndex& c = idx.conn;
    for (int i : {c.a, c.A, c.b, c.norm_w, c.w_a, c.W_A, c.w_b, c.s_alpha, c.s_beta, c.phi,
                  c.alpha, c.bias})
      put(i, st);
  }
  put(layout_.embed, S + 1);
  grad_stages_.assign(S + 2, {});
  for (size_t i = 0; i < stage.size(); ++i) {
    MHC_CHECK(stage[i] >= 0);  // every parameter belongs to exactly one stage
    grad_stages_[stage[i]].push_back(static_cast<int>(i));
  }
}

Model::~Model() {
  if (weights_.data != params_.data) backend_.release(weights_);
  backend_.release(grads_);
  backend_.release(params_);
  backend_.release(arena_);
}

Tensor Model::param(int index) const {
  const auto& p = layout_.params.at(index);
  return params_.slice(p.offset, p.numel);
}
Tensor Model::grad(int index) const {
  const auto& p = layout_.params.at(index);
  return grads_.slice(p.offset, p.numel);
}
Tensor Model::weight(int index) const {
  const auto& p = layout_.params.at(index);
  return weights_.slice(p.offset, p.numel);
}

void Model::init_weights(uint64_t seed) {
  std::vector<double> host(static_cast<size_t>(layout_.total), 0.0);
  for (const auto& p : layout_.params) {
    std::vector<double> v = init_param(p, shape_, seed);
    std::copy(v.begin(), v.end(), host.begin() + p.offset);
  }
  set_params(host);
}

std::vector<double> Model::get_params() {
  std::vector<double> host(static_cast<size_t>(params_.numel));
  backend_.download(params_, host.data());
  return host;
}

void Model::set_params(const std::vector<double>& values) {
  MHC_CHECK(static_cast<int64_t>(values.size()) == params_.numel);
  backend_.upload(params_, values.data());
  sync_working_weights();
}

std::vector<double> Model::get_grads() {
  std::vector<double> host(static_cast<size_t>(grads_.numel));
  backend_.download(grads_, host.data());
  return host;
}

void Model::sync_working_weights() {
  if (weights_.data != params_.data) backend_.copy(weights_, params_);
}

void Model::zero_grads() { backend_.zero(grads_); }

Tensor Model::logits() const {
  const int64_t rows = std::min<int64_t>(N_, buf_->logits.numel / shape_.Vp);
  return buf_->logits.slice(0, rows * shape_.Vp);
}

Coeffs Model::coeffs(int k) const {
  const Coeffs& c = buf_->sub.at(k).coeffs;
  const int64_t n = shape_.n;
  return {c.pre.slice(0, N_ * n), c.post.slice(0, N_ * n), c.res.slice(0, N_ * n * n)};
}

Tensor Model::collapse_weights() const {
  if (!shape_.learned_collapse) return {};
  return buf_->collapse_w.slice(0, int64_t(N_) * shape_.n);
}

bool Model::stores_state(int k) const { return k % segment_ == 0 || k == shape_.sublayers(); }

void Model::materialize_segment(int k) const {
  if (stores_state(k) || N_ == 0) return;
  const int segment = k / segment_;
  if (segment == materialized_segment_) return;
  const int N = N_, n = shape_.n, C = shape_.C;
  const ConnShape cs{N, n, C};
  const int first = segment * segment_;
  const int end = std::min(first + segment_, shape_.sublayers());  // a stored state
  for (int j = first; j + 1 < end; ++j) {
    const SublayerActs& a = buf_->sub[j];
    backend_.stream_merge_forward(buf_->X[j + 1].slice(0, static_cast<int64_t>(N) * n * C),
                                  buf_->X[j].slice(0, static_cast<int64_t>(N) * n * C),
                                  a.f.slice(0, static_cast<int64_t>(N) * C),
                                  {a.coeffs.pre.slice(0, static_cast<int64_t>(N) * n),
                                   a.coeffs.post.slice(0, static_cast<int64_t>(N) * n),
                                   a.coeffs.res.slice(0, static_cast<int64_t>(N) * n * n)},
                                  cs);
  }
  materialized_segment_ = segment;
}

Tensor Model::residual_state(int k) const {
  MHC_CHECK(k >= 0 && k <= shape_.sublayers());
  materialize_segment(k);
  return buf_->X.at(k).slice(0, static_cast<int64_t>(N_) * shape_.n * shape_.C);
}

Tensor Model::sublayer_input(int k) const {
  if (shape_.mode == ResidualMode::Baseline) return residual_state(k);
  const Tensor u = buf_->sub.at(k).u.slice(0, static_cast<int64_t>(N_) * shape_.C);
  if (options_.recompute) {
    const int64_t N = N_, n = shape_.n;
    backend_.stream_aggregate_forward(u, residual_state(k),
                                      buf_->sub[k].coeffs.pre.slice(0, N * n),
                                      ConnShape{N_, shape_.n, shape_.C});
  }
  return u;
}

MhcParams Model::mhc_params(const ConnParamIndex& c, bool grads) const {
  auto t = [&](int i) { return i < 0 ? Tensor{} : (grads ? grad(i) : param(i)); };
  return {t(c.phi), t(c.alpha), t(c.bias)};
}

HcParams Model::hc_params(const ConnParamIndex& c, bool grads) const {
  auto t = [&](int i) { return i < 0 ? Tensor{} : (grads ? grad(i) : param(i)); };
  return {t(c.a), t(c.A), t(c.b), t(c.norm_w), t(c.w_a), t(c.W_A), t(c.w_b), t(c.s_alpha),
          t(c.s_beta)};
}

namespace {

// The first N·width entries of a per-token buffer.
Tensor rows(const Tensor& t, int64_t N, int64_t width) { return t.slice(0, N * width); }

Coeffs coeff_rows(const Coeffs& c, int64_t N, int64_t n) {
  return {rows(c.pre, N, n), rows(c.post, N, n), rows(c.res, N, n * n)};
}

}  // namespace

double Model::forward(const int32_t* inputs, const int32_t* targets, int B, int T,
                      float grad_scale) {
  if (B < 1 || B > max_batch_ || T < 1 || T > shape_.T)
    fail("batch {}x{} exceeds the model's allocation {}x{}", B, T, max_batch_, shape_.T);
  Buffers& b = *buf_;
  const int N = B * T, C = shape_.C, n = shape_.n;
  N_ = N;
  B_ = B;
  T_ = T;
  backend_.upload(rows(b.inputs, N, 1), inputs);
  if (targets) backend_.upload(rows(b.targets, N, 1), targets);
  const Tensor wte = weight(layout_.embed);
  if (shape_.mode == ResidualMode::Baseline) {
    backend_.embedding_forward(rows(b.X[0], N, C), rows(b.inputs, N, 1), wte, N, C);
  } else {
    backend_.embedding_forward(rows(b.emb, N, C), rows(b.inputs, N, 1), wte, N, C);
    backend_.stream_expand(rows(b.X[0], N, n * C), rows(b.emb, N, C), N, n, C);
  }
  for (int k = 0; k < shape_.sublayers(); ++k) sublayer_forward(k, B, T);
  materialized_segment_ = (shape_.sublayers() - 1) / segment_;  // the slots hold the last
  const Tensor last = rows(b.X[shape_.sublayers()], N, n * C);
  Tensor y = last;
  if (shape_.learned_collapse) {
    y = rows(b.y, N, C);
    const Tensor w = rows(b.collapse_w, N, n);
    backend_.collapse_weights_forward(w, rows(b.collapse_m, N, n), rows(b.collapse_rms, N, 1),
                                      last, param(layout_.collapse_phi),
                                      param(layout_.collapse_alpha), param(layout_.collapse_bias),
                                      N, n, C, shape_.mhc_eps);
    backend_.stream_aggregate_forward(y, last, w, ConnShape{N, n, C});
  } else if (shape_.mode != ResidualMode::Baseline) {
    y = rows(b.y, N, C);
    backend_.stream_collapse(y, last, N, n, C);
  }
  const Tensor yn = rows(b.yn, N, C);
  backend_.rmsnorm_forward(yn, rows(b.rstd_final, N, 1), y, weight(layout_.final_norm), N, C,
                           shape_.norm_eps);
  const int head_index = shape_.tied ? layout_.embed : layout_.lm_head;
  const Tensor head = weight(head_index);
  const int64_t logit_rows = b.logits.numel / shape_.Vp;
  head_done_ = false;
  if (targets && logit_rows < N) {
    // Chunked classifier: the loss (and with a gradient, the head's backward) without
    // materialising N·Vp logits.
    const float dloss = grad_scale / static_cast<float>(N);
    backend_.classifier(rows(b.losses, N, 1), rows(b.dyn, N, C), grad(head_index), yn, head,
                        rows(b.targets, N, 1), b.logits, N, C, shape_.V, shape_.Vp,
                        static_cast<int>(std::min<int64_t>(logit_rows, options_.classifier_chunk)),
                        dloss);
    head_done_ = dloss != 0.f;
  } else {
    if (logit_rows < N)
      fail("logits of {} tokens requested, but this model keeps at most {} rows of logits "
           "(ModelOptions::classifier_chunk)",
           N, logit_rows);
    const Tensor logits = rows(b.logits, N, shape_.Vp);
    backend_.gemm(false, true, N, shape_.Vp, C, 1.f, yn, C, head, C, 0.f, logits, shape_.Vp);
    if (!targets) return std::numeric_limits<double>::quiet_NaN();
    backend_.cross_entropy(rows(b.losses, N, 1), logits, rows(b.targets, N, 1), N, shape_.V,
                           shape_.Vp, grad_scale / static_cast<float>(N));
  }
  const Tensor losses = rows(b.losses, N, 1);
  token_losses_.resize(static_cast<size_t>(N));
  backend_.download(losses, token_losses_.data());
  double sum = 0;
  for (double v : token_losses_) sum += v;
  return sum / N;
}

void Model::sublayer_forward(int k, int B, int T) {
  Buffers& b = *buf_;
  SublayerActs& a = b.sub[k];
  const SublayerParamIndex& idx = layout_.sublayers[k];
  const int N = B * T, C = shape_.C, n = shape_.n;
  const ConnShape cs{N, n, C};
  const Tensor Xk = rows(b.X[k], N, n * C), Xnext = rows(b.X[k + 1], N, n * C);
  Tensor u = Xk;
  const bool streams = shape_.mode != ResidualMode::Baseline;
  const Coeffs co = streams ? coeff_rows(a.coeffs, N, n) : Coeffs{};
  if (shape_.mode == ResidualMode::MHC && !math::mhc_is_default(shape_.mhc)) {
    ConnShape vs = cs;
    vs.mhc = shape_.mhc;
    backend_.mhc_variant_coeff_forward(co, {rows(a.mhc.m, N, shape_.D()), rows(a.mhc.rms, N, 1)},
                                       Xk, mhc_params(idx.conn, false), vs, shape_.sinkhorn_iters,
                                       shape_.mhc_eps);
  } else if (shape_.mode == ResidualMode::MHC) {
    backend_.mhc_coeff_forward(co, {rows(a.mhc.m, N, shape_.D()), rows(a.mhc.rms, N, 1)}, Xk,
                               mhc_params(idx.conn, false), cs, shape_.sinkhorn_iters,
                               shape_.mhc_eps);
  } else if (shape_.mode == ResidualMode::HC) {
    HcSaved saved;
    if (shape_.hc_dynamic) saved = {rows(a.hc.rstd, N, n), rows(a.hc.tanh, N, n * (n + 2))};
    backend_.hc_coeff_forward(co, saved, Xk, hc_params(idx.conn, false), cs, shape_.norm_eps);
  }
  if (streams) {
    u = rows(a.u, N, C);
    backend_.stream_aggregate_forward(u, Xk, co.pre, cs);
  }
  backend_.rmsnorm_forward(rows(a.h, N, C), rows(a.rstd, N, 1), u, weight(idx.norm), N, C,
                           shape_.norm_eps);
  // Baseline: the output GEMM adds into X_{k+1} = X_k + F(u) directly (no f buffer).
  const Tensor out = streams ? rows(a.f, N, C) : Xnext;
  const Tensor residual = streams ? Tensor{} : Xk;
  if (idx.attention)
    attention_forward(k, B, T, out, residual);
  else
    mlp_forward(k, N, out, residual);
  if (streams) backend_.stream_merge_forward(Xnext, Xk, rows(a.f, N, C), co, cs);
}

void Model::attention_forward(int k, int B, int T, Tensor out, Tensor residual) {
  SublayerActs& a = buf_->sub[k];
  const SublayerParamIndex& idx = layout_.sublayers[k];
  const int N = B * T, C = shape_.C;
  const AttentionShape as{B, T, shape_.n_head, shape_.head_dim};
  const Tensor qkv = rows(a.qkv, N, 3 * C), att = rows(a.att, N, C);
  const Tensor w_qkv = weights_.slice(layout_.params[idx.w_in].offset, 3LL * C * C);
  backend_.gemm(false, true, N, 3 * C, C, 1.f, rows(a.h, N, C), C, w_qkv, C, 0.f, qkv, 3 * C);
  backend_.rope_forward(qkv, as, shape_.rope_theta);
  backend_.attention_forward(att, rows(a.lse, N, shape_.n_head), qkv, as);
  backend_.gemm_ex(false, true, N, C, C, 1.f, att, C, weight(idx.w_out), C,
                   residual.empty() ? 0.f : 1.f, residual.empty() ? out : residual, C, out, C);
}

void Model::mlp_forward(int k, int N, Tensor out, Tensor residual) {
  SublayerActs& a = buf_->sub[k];
  const SublayerParamIndex& idx = layout_.sublayers[k];
  const int C = shape_.C, H = shape_.hidden, in_w = shape_.swiglu ? 2 * H : H;
  const Tensor hid_in = rows(a.hid_in, N, in_w), hid_act = rows(a.hid_act, N, H);
  const Tensor w_in = weights_.slice(layout_.params[idx.w_in].offset, static_cast<int64_t>(in_w) * C);
  backend_.gemm(false, true, N, in_w, C, 1.f, rows(a.h, N, C), C, w_in, C, 0.f, hid_in, in_w);
  if (shape_.swiglu)
    backend_.swiglu_forward(hid_act, hid_in, N, H);
  else
    backend_.gelu_forward(hid_act, hid_in, N, H);
  backend_.gemm_ex(false, true, N, C, H, 1.f, hid_act, H, weight(idx.w_out), H,
                   residual.empty() ? 0.f : 1.f, residual.empty() ? out : residual, C, out, C);
}

void Model::backward() {
  Buffers& b = *buf_;
  const int N = N_, B = B_, T = T_, C = shape_.C, n = shape_.n;
  MHC_CHECK(N > 0);
  const bool streams = shape_.mode != ResidualMode::Baseline;
  // Head and final norm.
  const int head = shape_.tied ? layout_.embed : layout_.lm_head;
  const Tensor yn = rows(b.yn, N, C), dyn = rows(b.dyn, N, C);
  if (!head_done_) {  // else the chunked classifier did this in forward()
    MHC_CHECK(b.logits.numel >= static_cast<int64_t>(N) * shape_.Vp);
    const Tensor dlogits = rows(b.logits, N, shape_.Vp);
    backend_.gemm(false, false, N, C, shape_.Vp, 1.f, dlogits, shape_.Vp, weight(head), C, 0.f,
                  dyn, C);
    backend_.gemm(true, false, shape_.Vp, C, N, 1.f, dlogits, shape_.Vp, yn, C, 1.f, grad(head),
                  C);
  }
  Tensor dX = rows(b.dXa, N, n * C);
  const Tensor y = streams ? rows(b.y, N, C) : rows(b.X[shape_.sublayers()], N, C);
  const Tensor dy = streams ? rows(b.dy, N, C) : dX;
  backend_.zero(dy);
  backend_.rmsnorm_backward(dy, grad(layout_.final_norm), dyn, y, weight(layout_.final_norm),
                            rows(b.rstd_final, N, 1), N, C);
  if (shape_.learned_collapse) {
    const Tensor last = rows(b.X[shape_.sublayers()], N, n * C);
    const Tensor dw = rows(b.collapse_dw, N, n);
    backend_.zero(dX);
    backend_.stream_aggregate_backward(dX, dw, dy, last, rows(b.collapse_w, N, n),
                                       ConnShape{N, n, C});
    backend_.collapse_weights_backward(
        dX, grad(layout_.collapse_phi), grad(layout_.collapse_alpha), grad(layout_.collapse_bias),
        dw, last, param(layout_.collapse_phi), param(layout_.collapse_alpha),
        param(layout_.collapse_bias), rows(b.collapse_m, N, n), rows(b.collapse_rms, N, 1), N, n,
        C);
  } else if (streams) {
    backend_.stream_expand(dX, dy, N, n, C);
  }
  grads_ready(0);
  Tensor dX_other = streams ? rows(b.dXb, N, n * C) : dX;
  for (int k = shape_.sublayers() - 1; k >= 0; --k) {
    sublayer_backward(k, B, T, dX, dX_other);
    grads_ready(1 + (shape_.sublayers() - 1 - k));
    std::swap(dX, dX_other);
  }
  // dX is now dL/dX_0.
  Tensor demb = dX;
  if (streams) {
    demb = rows(b.du, N, C);
    backend_.stream_collapse(demb, dX, N, n, C);
  }
  backend_.embedding_backward(grad(layout_.embed), rows(b.inputs, N, 1), demb, N, C);
  grads_ready(shape_.sublayers() + 1);
}

void Model::sublayer_backward(int k, int B, int T, Tensor dX_out, Tensor dX_in) {
  Buffers& b = *buf_;
  SublayerActs& a = b.sub[k];
  const SublayerParamIndex& idx = layout_.sublayers[k];
  const int N = B * T, C = shape_.C, n = shape_.n;
  const ConnShape cs{N, n, C};
  materialize_segment(k);  // recompute: X_k of this segment replayed from its start
  const Tensor Xk = rows(b.X[k], N, n * C);
  const Tensor dh = rows(b.dh, N, C);
  if (shape_.mode == ResidualMode::Baseline) {
    // X_{k+1} = X_k + f: df = dX_out, and dX_k = dX_out + du accumulates in place.
    if (idx.attention)
      attention_backward(k, B, T, dX_out, dh);
    else
      mlp_backward(k, N, dX_out, dh);
    backend_.rmsnorm_backward(dX_out, grad(idx.norm), dh, Xk, weight(idx.norm),
                              rows(a.rstd, N, 1), N, C);
    return;
  }
  const Coeffs co = coeff_rows(a.coeffs, N, n), dco = coeff_rows(b.dcoeffs, N, n);
  const Tensor f = rows(a.f, N, C), df = rows(b.df, N, C), du = rows(b.du, N, C);
  backend_.stream_merge_backward(dX_in, df, dco, dX_out, Xk, f, co, cs);
  if (idx.attention)
    attention_backward(k, B, T, df, dh);
  else
    mlp_backward(k, N, df, dh);
  const Tensor u = rows(a.u, N, C);
  if (options_.recompute) backend_.stream_aggregate_forward(u, Xk, co.pre, cs);  // u_k again
  backend_.zero(du);
  backend_.rmsnorm_backward(du, grad(idx.norm), dh, u, weight(idx.norm), rows(a.rstd, N, 1), N, C);
  backend_.stream_aggregate_backward(dX_in, dco.pre, du, Xk, co.pre, cs);
  if (shape_.mode == ResidualMode::MHC && !math::mhc_is_default(shape_.mhc)) {
    ConnShape vs = cs;
    vs.mhc = shape_.mhc;
    backend_.mhc_variant_coeff_backward(dX_in, mhc_params(idx.conn, true), dco, Xk,
                                        mhc_params(idx.conn, false),
                                        {rows(a.mhc.m, N, shape_.D()), rows(a.mhc.rms, N, 1)}, vs,
                                        shape_.sinkhorn_iters);
  } else if (shape_.mode == ResidualMode::MHC) {
    backend_.mhc_coeff_backward(dX_in, mhc_params(idx.conn, true), dco, Xk,
                                mhc_params(idx.conn, false),
                                {rows(a.mhc.m, N, shape_.D()), rows(a.mhc.rms, N, 1)}, cs,
                                shape_.sinkhorn_iters);
  } else {
    HcSaved saved;
    if (shape_.hc_dynamic) saved = {rows(a.hc.rstd, N, n), rows(a.hc.tanh, N, n * (n + 2))};
    backend_.hc_coeff_backward(dX_in, hc_params(idx.conn, true), dco, Xk,
                               hc_params(idx.conn, false), saved, cs);
  }
}

void Model::attention_backward(int k, int B, int T, Tensor df, Tensor dh) {
  Buffers& b = *buf_;
  SublayerActs& a = b.sub[k];
  const SublayerParamIndex& idx = layout_.sublayers[k];
  const int N = B * T, C = shape_.C;
  const AttentionShape as{B, T, shape_.n_head, shape_.head_dim};
  const Tensor att = rows(a.att, N, C), datt = rows(b.datt, N, C);
  const Tensor qkv = rows(a.qkv, N, 3 * C), dqkv = rows(b.dqkv, N, 3 * C);
  const int64_t qkv_offset = layout_.params[idx.w_in].offset;
  backend_.gemm(false, false, N, C, C, 1.f, df, C, weight(idx.w_out), C, 0.f, datt, C);
  backend_.gemm(true, false, C, C, N, 1.f, df, C, att, C, 1.f, grad(idx.w_out), C);
  backend_.attention_backward(dqkv, datt, qkv, att, rows(a.lse, N, shape_.n_head), as);
  backend_.rope_backward(dqkv, as, shape_.rope_theta);
  backend_.gemm(false, false, N, C, 3 * C, 1.f, dqkv, 3 * C, weights_.slice(qkv_offset, 3LL * C * C),
                C, 0.f, dh, C);
  backend_.gemm(true, false, 3 * C, C, N, 1.f, dqkv, 3 * C, rows(a.h, N, C), C, 1.f,
                grads_.slice(qkv_offset, 3LL * C * C), C);
}

void Model::mlp_backward(int k, int N, Tensor df, Tensor dh) {
  Buffers& b = *buf_;
  SublayerActs& a = b.sub[k];
  const SublayerParamIndex& idx = layout_.sublayers[k];
  const int C = shape_.C, H = shape_.hidden, in_w = shape_.swiglu ? 2 * H : H;
  const Tensor hid_in = rows(a.hid_in, N, in_w), hid_act = rows(a.hid_act, N, H);
  const Tensor dhid_in = rows(b.dhid_in, N, in_w), dhid_act = rows(b.dhid_act, N, H);
  const int64_t in_offset = layout_.params[idx.w_in].offset, in_numel = static_cast<int64_t>(in_w) * C;
  backend_.gemm(false, false, N, H, C, 1.f, df, C, weight(idx.w_out), H, 0.f, dhid_act, H);
  backend_.gemm(true, false, C, H, N, 1.f, df, C, hid_act, H, 1.f, grad(idx.w_out), H);
  if (shape_.swiglu)
    backend_.swiglu_backward(dhid_in, dhid_act, hid_in, N, H);
  else
    backend_.gelu_backward(dhid_in, dhid_act, hid_in, N, H);
  backend_.gemm(false, false, N, C, in_w, 1.f, dhid_in, in_w, weights_.slice(in_offset, in_numel), C,
                0.f, dh, C);
  backend_.gemm(true, false, in_w, C, N, 1.f, dhid_in, in_w, rows(a.h, N, C), C, 1.f,
                grads_.slice(in_offset, in_numel), C);
}

}  // namespace mhc
