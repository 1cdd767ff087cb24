// cuDNN fused flash attention (see attention_cudnn.cuh for the contract and the graphs).
//
// Tensor layouts handed to cuDNN (all 4-d [b, h, s, d] views of our row-major buffers;
// C = n_head·hd):
//   Q, V, dQ, dK, dV   dims [B,H,T,hd]  strides [T·3C, hd, 3C, 1]  (inside qkv / dqkv,
//                      pointer offsets 0, C, 2C)
//   Kᵀ (and Vᵀ in bwd) dims [B,H,hd,T]  strides [T·3C, hd, 1, 3C]  (the same memory)
//   O, dO              dims [B,H,T,hd]  strides [T·C, hd, C, 1]
//   lse (Stats)        dims [B,H,T,1]   strides [H·T, T, 1, 1]     (fp32)
//   scores (virtual)   dims [B,H,T,T]   strides [H·T·T, T·T, T, 1]
//   scale, one, lowest pass-by-value fp32 scalars [1,1,1,1] ("lowest" is the mask's
//                      fill: float lowest() before cuDNN 9.10, −inf after, as the frontend)
// Every cuDNN call goes through CUDNN_CHECK; a failure while building a plan is caught
// at the top of the build, reported once for that shape, and turns into `false`.
#include "attention_cudnn.cuh"

#include <array>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#ifdef MHC_WITH_CUDNN
#include <cudnn.h>
#endif

namespace mhc::cuda {

#ifdef MHC_WITH_CUDNN
namespace {

enum class Mode { Off, Deterministic, Fast };

Mode mode_from_environment() {
  const char* v = std::getenv("MHC_CUDNN_ATTENTION");
  if (v == nullptr || *v == '\0') return Mode::Deterministic;
  const std::string s(v);
  if (s == "off" || s == "0" || s == "simple") return Mode::Off;
  if (s == "fast") return Mode::Fast;
  if (s != "deterministic" && s != "1" && s != "on")
    std::fprintf(stderr,
                 "mhc: MHC_CUDNN_ATTENTION=%s not understood (deterministic|fast|off); "
                 "using deterministic\n",
                 v);
  return Mode::Deterministic;
}

std::string last_cudnn_message() {
  char text[1024] = {0};
  cudnnGetLastErrorString(text, sizeof(text));
  return text;
}

// One backend descriptor, destroyed with its owner.
class Descriptor {
 public:
  explicit Descriptor(cudnnBackendDescriptorType_t type) {
    CUDNN_CHECK(cudnnBackendCreateDescriptor(type, &d_));
  }
  ~Descriptor() {
    if (d_) cudnnBackendDestroyDescriptor(d_);
  }
  Descriptor(const Descriptor&) = delete;
  Descriptor& operator=(const Descriptor&) = delete;
  cudnnBackendDescriptor_t get() const { return d_; }

 private:
  cudnnBackendDescriptor_t d_ = nullptr;
};

using Dims = std::array<int64_t, 4>;

// Attribute setter: CUDNN_CHECK names the failing call; the wrapper adds which
// attribute of which object failed.
void set_attr(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name,
              cudnnBackendAttributeType_t type, int64_t count, const void* values,
              const char* what) {
  try {
    CUDNN_CHECK(cudnnBackendSetAttribute(d, name, type, count, values));
  } catch (const CudaError& e) {
    throw CudaError(std::string(e.what()) + " (attribute " + std::to_string(int(name)) + " of " +
                    what + "; " + last_cudnn_message() + ")");
  }
}

void finalize(cudnnBackendDescriptor_t d, const char* what) {
  try {
    CUDNN_CHECK(cudnnBackendFinalize(d));
  } catch (const CudaError& e) {
    throw CudaError(std::string(e.what()) + " (finalizing " + what + "; " + last_cudnn_message() +
                    ")");
  }
}

// Fixed unique ids of the non-virtual tensors (virtual ones count up from kFirstVirtual).
enum Uid : int64_t {
  kQ = 1, kK, kV, kO, kStats, kScale, kLowest, kOne, kdO, kdQ, kdK, kdV, kSoftmaxSum, kdQAccum,
  kFirstVirtual = 100
};

// A graph under construction; becomes a Plan's descriptor store.
class Graph {
 public:
  cudnnBackendDescriptor_t tensor(int64_t uid, cudnnDataType_t type, const Dims& dims,
                                  const Dims& strides, bool is_virtual, bool by_value = false) {
    cudnnBackendDescriptor_t t = make(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    const int64_t alignment = 16;
    const bool virt = is_virtual;
    set_attr(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type, "tensor");
    set_attr(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims.data(), "tensor");
    set_attr(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides.data(), "tensor");
    set_attr(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, "tensor");
    set_attr(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment, "tensor");
    set_attr(t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &virt, "tensor");
    if (by_value) {
      const bool yes = true;
      set_attr(t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &yes, "scalar tensor");
    }
    finalize(t, "a tensor descriptor");
    return t;
  }

  cudnnBackendDescriptor_t virt(cudnnDataType_t type, const Dims& dims, const Dims& strides) {
    return tensor(next_uid_++, type, dims, strides, true);
  }

  cudnnBackendDescriptor_t scalar(int64_t uid) {
    return tensor(uid, CUDNN_DATA_FLOAT, {1, 1, 1, 1}, {1, 1, 1, 1}, false, true);
  }

  // y = mode(x[, b[, t]]), computed in `precision`; axis for GEN_INDEX.
  void pointwise(cudnnPointwiseMode_t mode, cudnnDataType_t precision, cudnnBackendDescriptor_t x,
                 cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t t, cudnnBackendDescriptor_t y,
                 int64_t axis = -1) {
    cudnnBackendDescriptor_t pw = make(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
    set_attr(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode, "pointwise");
    set_attr(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &precision, "pointwise");
    if (axis >= 0) set_attr(pw, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis, "pointwise");
    finalize(pw, "a pointwise descriptor");
    cudnnBackendDescriptor_t op = make(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
    set_attr(op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pw,
             "pointwise op");
    set_attr(op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x,
             "pointwise op");
    if (b)
      set_attr(op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b,
               "pointwise op");
    if (t)
      set_attr(op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t,
               "pointwise op");
    set_attr(op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y,
             "pointwise op");
    finalize(op, "a pointwise operation");
    ops_.push_back(op);
  }

  // c = a·b over the last two dims (batch dims broadcast), fp32 accumulation.
  void matmul(cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t c) {
    cudnnBackendDescriptor_t mm = make(CUDNN_BACKEND_MATMUL_DESCRIPTOR);
    const cudnnDataType_t compute = CUDNN_DATA_FLOAT;
    set_attr(mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute, "matmul");
    finalize(mm, "a matmul descriptor");
    cudnnBackendDescriptor_t op = make(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
    set_attr(op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &a, "matmul op");
    set_attr(op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b, "matmul op");
    set_attr(op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c, "matmul op");
    set_attr(op, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &mm, "matmul op");
    finalize(op, "a matmul operation");
    ops_.push_back(op);
  }

  // y = reduce_op over the dims where y has extent 1.
  void reduction(cudnnReduceTensorOp_t reduce, cudnnBackendDescriptor_t x,
                 cudnnBackendDescriptor_t y) {
    cudnnBackendDescriptor_t rd = make(CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
    const cudnnDataType_t compute = CUDNN_DATA_FLOAT;
    set_attr(rd, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &reduce,
             "reduction");
    set_attr(rd, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute, "reduction");
    finalize(rd, "a reduction descriptor");
    cudnnBackendDescriptor_t op = make(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
    set_attr(op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x,
             "reduction op");
    set_attr(op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y,
             "reduction op");
    set_attr(op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &rd,
             "reduction op");
    finalize(op, "a reduction operation");
    ops_.push_back(op);
  }

  // y = x viewed with y's dims and strides (a transpose here).
  void reshape(cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    cudnnBackendDescriptor_t op = make(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR);
    set_attr(op, CUDNN_ATTR_OPERATION_RESHAPE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x,
             "reshape op");
    set_attr(op, CUDNN_ATTR_OPERATION_RESHAPE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y,
             "reshape op");
    finalize(op, "a reshape operation");
    ops_.push_back(op);
  }

  // Operation graph → heuristics → the first engine config whose plan finalizes.
  // Returns the plan descriptor (owned by this graph) and its workspace size, or throws
  // CudaError with what went wrong.
  std::pair<cudnnBackendDescriptor_t, int64_t> build_plan(cudnnHandle_t handle) {
    cudnnBackendDescriptor_t graph = make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    set_attr(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle, "op graph");
    set_attr(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
             static_cast<int64_t>(ops_.size()), ops_.data(), "op graph");
    finalize(graph, "the operation graph");
    std::string tried;
    for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
      cudnnBackendDescriptor_t heur = make(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
      set_attr(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
               &graph, "engine heuristics");
      set_attr(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode,
               "engine heuristics");
      if (cudnnBackendFinalize(heur) != CUDNN_STATUS_SUCCESS) {
        tried += " heuristics mode " + std::to_string(int(mode)) + ": " + last_cudnn_message() + ";";
        continue;
      }
      int64_t count = 0;
      CUDNN_CHECK(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                           CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, nullptr));
      if (count <= 0) {
        tried += " heuristics mode " + std::to_string(int(mode)) + ": no engine;";
        continue;
      }
      std::vector<cudnnBackendDescriptor_t> configs;
      for (int64_t i = 0; i < count; ++i) configs.push_back(make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR));
      int64_t returned = 0;
      CUDNN_CHECK(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                           CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &returned,
                                           configs.data()));
      for (int64_t i = 0; i < returned; ++i) {
        cudnnBackendDescriptor_t plan = make(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
        set_attr(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle,
                 "execution plan");
        set_attr(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                 &configs[static_cast<size_t>(i)], "execution plan");
        // An engine config that cannot run this graph here fails to finalize: try the next.
        if (cudnnBackendFinalize(plan) != CUDNN_STATUS_SUCCESS) {
          tried += " config " + std::to_string(i) + ": " + last_cudnn_message() + ";";
          continue;
        }
        int64_t workspace = 0, got = 0;
        CUDNN_CHECK(cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                             CUDNN_TYPE_INT64, 1, &got, &workspace));
        return {plan, workspace};
      }
    }
    throw CudaError("cuDNN: no engine can run this attention graph:" + tried);
  }

 private:
  cudnnBackendDescriptor_t make(cudnnBackendDescriptorType_t type) {
    owned_.push_back(std::make_unique<Descriptor>(type));
    return owned_.back()->get();
  }

  std::vector<std::unique_ptr<Descriptor>> owned_;
  std::vector<cudnnBackendDescriptor_t> ops_;
  int64_t next_uid_ = kFirstVirtual;
};

struct Shape {
  int64_t B, T, H, d;
  int64_t C() const { return H * d; }
  Dims qkv_dims() const { return {B, H, T, d}; }
  Dims qkv_strides() const { return {T * 3 * C(), d, 3 * C(), 1}; }
  Dims qkv_t_dims() const { return {B, H, d, T}; }
  Dims qkv_t_strides() const { return {T * 3 * C(), d, 1, 3 * C()}; }
  Dims out_strides() const { return {T * C(), d, C(), 1}; }
  Dims row_dims() const { return {B, H, T, 1}; }
  Dims row_strides() const { return {H * T, T, 1, 1}; }
  Dims score_dims() const { return {B, H, T, T}; }
  Dims score_strides() const { return {H * T * T, T * T, T, 1}; }
  Dims score_t_strides() const { return {H * T * T, T * T, 1, T}; }  // [b,h,kv,q] view
};

// Causal masking on scores `s` (fp32 [B,H,T,T]): keep where row ≥ col, else `lowest`.
cudnnBackendDescriptor_t causal_mask(Graph& g, const Shape& s, cudnnBackendDescriptor_t scores,
                                     cudnnBackendDescriptor_t lowest) {
  cudnnBackendDescriptor_t row = g.virt(CUDNN_DATA_INT32, s.score_dims(), s.score_strides());
  g.pointwise(CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, scores, nullptr, nullptr, row, 2);
  cudnnBackendDescriptor_t col = g.virt(CUDNN_DATA_INT32, s.score_dims(), s.score_strides());
  g.pointwise(CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, scores, nullptr, nullptr, col, 3);
  cudnnBackendDescriptor_t keep = g.virt(CUDNN_DATA_BOOLEAN, s.score_dims(), s.score_strides());
  g.pointwise(CUDNN_POINTWISE_CMP_GE, CUDNN_DATA_BOOLEAN, row, col, nullptr, keep);
  cudnnBackendDescriptor_t masked = g.virt(CUDNN_DATA_FLOAT, s.score_dims(), s.score_strides());
  g.pointwise(CUDNN_POINTWISE_BINARY_SELECT, CUDNN_DATA_FLOAT, scores, lowest, keep, masked);
  return masked;
}

void build_forward(Graph& g, const Shape& s) {
  const cudnnDataType_t io = CUDNN_DATA_BFLOAT16, f32 = CUDNN_DATA_FLOAT;
  auto Q = g.tensor(kQ, io, s.qkv_dims(), s.qkv_strides(), false);
  auto KT = g.tensor(kK, io, s.qkv_t_dims(), s.qkv_t_strides(), false);
  auto V = g.tensor(kV, io, s.qkv_dims(), s.qkv_strides(), false);
  auto O = g.tensor(kO, io, s.qkv_dims(), s.out_strides(), false);
  auto stats = g.tensor(kStats, f32, s.row_dims(), s.row_strides(), false);
  auto scale = g.scalar(kScale);
  auto lowest = g.scalar(kLowest);

  auto S = g.virt(f32, s.score_dims(), s.score_strides());
  g.matmul(Q, KT, S);
  auto scaled = g.virt(f32, s.score_dims(), s.score_strides());
  g.pointwise(CUDNN_POINTWISE_MUL, f32, S, scale, nullptr, scaled);
  auto masked = causal_mask(g, s, scaled, lowest);
  // Softmax with the log-sum-exp as the saved statistic.
  auto M = g.virt(f32, s.row_dims(), s.row_strides());
  g.reduction(CUDNN_REDUCE_TENSOR_MAX, masked, M);
  auto centered = g.virt(f32, s.score_dims(), s.score_strides());
  g.pointwise(CUDNN_POINTWISE_SUB, f32, masked, M, nullptr, centered);
  auto E = g.virt(f32, s.score_dims(), s.score_strides());
  g.pointwise(CUDNN_POINTWISE_EXP, f32, centered, nullptr, nullptr, E);
  auto Z = g.virt(f32, s.row_dims(), s.row_strides());
  g.reduction(CUDNN_REDUCE_TENSOR_ADD, E, Z);
  auto logZ = g.virt(f32, s.row_dims(), s.row_strides());
  g.pointwise(CUDNN_POINTWISE_LOG, f32, Z, nullptr, nullptr, logZ);
  g.pointwise(CUDNN_POINTWISE_ADD, f32, M, logZ, nullptr, stats);
  auto P = g.virt(io, s.score_dims(), s.score_strides());  // bmm2's A in the i/o type
  g.pointwise(CUDNN_POINTWISE_DIV, f32, E, Z, nullptr, P);
  g.matmul(P, V, O);
}

// deterministic: dQ = dS·K written directly; otherwise accumulated in fp32 (kdQAccum)
// and converted. with_one: the older frontend's ×1 on dP (some cuDNN versions match
// only one of the two forms).
void build_backward(Graph& g, const Shape& s, bool deterministic, bool with_one) {
  const cudnnDataType_t io = CUDNN_DATA_BFLOAT16, f32 = CUDNN_DATA_FLOAT;
  auto Q = g.tensor(kQ, io, s.qkv_dims(), s.qkv_strides(), false);
  auto KT = g.tensor(kK, io, s.qkv_t_dims(), s.qkv_t_strides(), false);
  auto VT = g.tensor(kV, io, s.qkv_t_dims(), s.qkv_t_strides(), false);
  auto O = g.tensor(kO, io, s.qkv_dims(), s.out_strides(), false);
  auto dO = g.tensor(kdO, io, s.qkv_dims(), s.out_strides(), false);
  auto stats = g.tensor(kStats, f32, s.row_dims(), s.row_strides(), false);
  auto dQ = g.tensor(kdQ, io, s.qkv_dims(), s.qkv_strides(), false);
  auto dK = g.tensor(kdK, io, s.qkv_dims(), s.qkv_strides(), false);
  auto dV = g.tensor(kdV, io, s.qkv_dims(), s.qkv_strides(), false);
  auto scale = g.scalar(kScale);
  auto lowest = g.scalar(kLowest);
  auto one = g.scalar(kOne);

  // Δ = Σ_d dO⊙O, kept in the workspace (fp32 [B,H,T,1]).
  auto dOO = g.virt(f32, s.qkv_dims(), {s.H * s.T * s.d, s.T * s.d, s.H * s.d, 1});
  g.pointwise(CUDNN_POINTWISE_MUL, f32, dO, O, nullptr, dOO);
  auto delta_raw = g.virt(f32, s.row_dims(), s.row_strides());
  g.reduction(CUDNN_REDUCE_TENSOR_ADD, dOO, delta_raw);
  auto delta = g.tensor(kSoftmaxSum, f32, s.row_dims(), s.row_strides(), false);
  g.pointwise(CUDNN_POINTWISE_MUL, f32, delta_raw, one, nullptr, delta);

  // P = exp(scale·QKᵀ − lse), causal.
  auto S = g.virt(f32, s.score_dims(), s.score_strides());
  g.matmul(Q, KT, S);
  auto scaled = g.virt(f32, s.score_dims(), s.score_strides());
  g.pointwise(CUDNN_POINTWISE_MUL, f32, S, scale, nullptr, scaled);
  auto shifted = g.virt(f32, s.score_dims(), s.score_strides());
  g.pointwise(CUDNN_POINTWISE_SUB, f32, scaled, stats, nullptr, shifted);
  auto masked = causal_mask(g, s, shifted, lowest);
  auto P = g.virt(f32, s.score_dims(), s.score_strides());
  g.pointwise(CUDNN_POINTWISE_EXP, f32, masked, nullptr, nullptr, P);

  // dV = Pᵀ·dO
  auto PT = g.virt(io, s.score_dims(), s.score_t_strides());
  g.reshape(P, PT);
  g.matmul(PT, dO, dV);

  // dS = P ⊙ (dO·Vᵀ − Δ) · scale
  auto dP = g.virt(f32, s.score_dims(), s.score_strides());
  g.matmul(dO, VT, dP);
  if (with_one) {
    auto dP1 = g.virt(f32, s.score_dims(), s.score_strides());
    g.pointwise(CUDNN_POINTWISE_MUL, f32, dP, one, nullptr, dP1);
    dP = dP1;
  }
  auto dPc = g.virt(f32, s.score_dims(), s.score_strides());
  g.pointwise(CUDNN_POINTWISE_SUB, f32, dP, delta, nullptr, dPc);
  auto dSu = g.virt(f32, s.score_dims(), s.score_strides());
  g.pointwise(CUDNN_POINTWISE_MUL, f32, dPc, P, nullptr, dSu);
  auto dS = g.virt(f32, s.score_dims(), s.score_strides());
  g.pointwise(CUDNN_POINTWISE_MUL, f32, dSu, scale, nullptr, dS);

  // dK = dSᵀ·Q
  auto dST = g.virt(io, s.score_dims(), s.score_t_strides());
  g.reshape(dS, dST);
  g.matmul(dST, Q, dK);

  // dQ = dS·K (K as [B,H,T,hd] from the Kᵀ view)
  auto K = g.virt(io, s.qkv_dims(), s.qkv_strides());
  g.reshape(KT, K);
  if (deterministic) {
    g.matmul(dS, K, dQ);
  } else {
    auto acc = g.tensor(kdQAccum, f32, s.qkv_dims(), {s.H * s.T * s.d, s.T * s.d, s.d, 1}, false);
    g.matmul(dS, K, acc);
    g.pointwise(CUDNN_POINTWISE_IDENTITY, f32, acc, nullptr, nullptr, dQ);
  }
}

struct Plan {
  Graph graph;  // owns every descriptor, the plan included
  cudnnBackendDescriptor_t plan = nullptr;
  int64_t workspace = 0;
  bool deterministic = true;
  bool executed = false;  // a plan that fails its first execution falls back too
  std::string form;
  std::string description;
};

size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

}  // namespace

struct CudnnAttention::Impl {
  Mode mode = mode_from_environment();
  cudnnHandle_t handle = nullptr;
  bool handle_failed = false;
  size_t version = cudnnGetVersion();
  // key: (backward?, B, T, H, hd); null value: this shape falls back.
  using Key = std::tuple<int, int, int, int, int>;
  std::map<Key, std::unique_ptr<Plan>> plans;
  static Key key_of(bool backward, const Shape& s) {
    return {backward ? 1 : 0, int(s.B), int(s.T), int(s.H), int(s.d)};
  }
  // (backward?, H, hd) whose fallback was already reported: one line, not one per length.
  std::map<std::tuple<int, int, int>, bool> reported;
  std::string last;

  // The causal mask's fill value: the cuDNN frontend uses lowest() before 9.10 and −inf
  // from 9.10 on; engines are matched against the frontend's graphs, so do the same.
  float mask_fill() const {
    return version < 91000 ? std::numeric_limits<float>::lowest()
                           : -std::numeric_limits<float>::infinity();
  }

  void report_fallback(bool backward, const Shape& s, const std::string& why) {
    last = why;
    bool& done = reported[std::make_tuple(backward ? 1 : 0, int(s.H), int(s.d))];
    if (done) return;
    done = true;
    std::fprintf(stderr, "mhc: %s; using the built-in attention kernels for this shape\n",
                 why.c_str());
  }

  // Runs a plan; false (and the shape falls back for good) when its first execution
  // fails, which cuDNN may report only then (e.g. NOT_SUPPORTED at launch). Later
  // failures are real errors and throw.
  bool run(bool backward, const Shape& s, Plan& p, const std::vector<int64_t>& uids,
           const std::vector<void*>& ptrs, void* workspace, cudaStream_t stream) {
    try {
      execute(p, uids, ptrs, workspace, stream);
    } catch (const std::exception& e) {
      if (p.executed) throw;
      (void)cudaGetLastError();  // a launch error that is not sticky must not linger
      const std::string why = p.description + ": first execution failed: " + e.what();
      plans[key_of(backward, s)] = nullptr;  // destroys p
      report_fallback(backward, s, why);
      return false;
    }
    p.executed = true;
    last = p.description;
    return true;
  }

  ~Impl() {
    plans.clear();
    if (handle) cudnnDestroy(handle);
  }

  bool ensure_handle() {
    if (handle) return true;
    if (handle_failed) return false;
    const cudnnStatus_t st = cudnnCreate(&handle);
    if (st != CUDNN_STATUS_SUCCESS) {
      handle = nullptr;
      handle_failed = true;
      last = std::string("cudnnCreate failed: ") + cudnnGetErrorString(st);
      std::fprintf(stderr, "mhc: %s; attention uses the built-in kernels\n", last.c_str());
      return false;
    }
    return true;
  }

  // The plan for this shape and direction, built on first use; null when it fell back.
  Plan* plan_for(bool backward, const Shape& s) {
    const Key key = key_of(backward, s);
    auto it = plans.find(key);
    if (it != plans.end()) return it->second.get();
    std::unique_ptr<Plan> chosen;
    std::string errors;
    // Candidate graph forms, in order of preference.
    std::vector<std::pair<bool, bool>> forms;  // (deterministic, with_one)
    if (!backward) {
      forms = {{true, false}};
    } else if (mode == Mode::Fast) {
      forms = {{false, false}, {false, true}, {true, false}, {true, true}};
    } else {
      forms = {{true, false}, {true, true}, {false, false}, {false, true}};
    }
    for (const auto& [det, with_one] : forms) {
      auto p = std::make_unique<Plan>();
      try {
        if (backward)
          build_backward(p->graph, s, det, with_one);
        else
          build_forward(p->graph, s);
        std::tie(p->plan, p->workspace) = p->graph.build_plan(handle);
        p->deterministic = det;
        p->form = backward ? std::string(det ? "dQ direct" : "dQ fp32-accumulated") +
                                 (with_one ? ", dP×1" : "")
                           : "forward";
        chosen = std::move(p);
        break;
      } catch (const std::exception& e) {
        errors += std::string(" [") + (backward ? (det ? "direct" : "accumulated") : "forward") +
                  (with_one ? "+one" : "") + "] " + e.what();
      }
    }
    char shape[160];
    std::snprintf(shape, sizeof(shape), "%s B=%lld T=%lld heads=%lld head_dim=%lld (cuDNN %zu)",
                  backward ? "backward" : "forward", static_cast<long long>(s.B),
                  static_cast<long long>(s.T), static_cast<long long>(s.H),
                  static_cast<long long>(s.d), version);
    if (chosen) {
      chosen->description = std::string("cuDNN flash attention ") + shape + ": " + chosen->form +
                            ", workspace " + std::to_string(chosen->workspace) + " bytes";
      last = chosen->description;
      if (backward && !chosen->deterministic)
        std::fprintf(stderr, "mhc: %s (non-deterministic dQ accumulation)\n", last.c_str());
    } else {
      report_fallback(backward, s,
                      std::string("cuDNN flash attention unavailable for ") + shape + ":" + errors);
    }
    Plan* result = chosen.get();
    plans.emplace(key, std::move(chosen));
    return result;
  }

  void execute(Plan& p, const std::vector<int64_t>& uids, const std::vector<void*>& ptrs,
               void* workspace, cudaStream_t stream) {
    Descriptor pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
    set_attr(pack.get(), CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64,
             static_cast<int64_t>(uids.size()), uids.data(), "variant pack");
    set_attr(pack.get(), CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR,
             static_cast<int64_t>(ptrs.size()), ptrs.data(), "variant pack");
    set_attr(pack.get(), CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace,
             "variant pack");
    finalize(pack.get(), "the variant pack");
    CUDNN_CHECK(cudnnSetStream(handle, stream));
    CUDNN_CHECK(cudnnBackendExecute(handle, p.plan, pack.get()));
  }
};

CudnnAttention::CudnnAttention() : impl_(std::make_unique<Impl>()) {}
CudnnAttention::~CudnnAttention() = default;

bool CudnnAttention::enabled() const { return impl_->mode != Mode::Off; }
std::string CudnnAttention::describe() const { return impl_->last; }

namespace {

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// cuDNN's fused attention wants head sizes that are multiples of 8 (≤ 128 on every
// version, ≤ 256 on recent ones) and 16-byte aligned tensors (declared in every tensor
// descriptor); anything else goes straight to the fallback.
bool worth_trying(int B, int T, int n_head, int hd, std::initializer_list<const void*> tensors) {
  if (!(B > 0 && T > 0 && n_head > 0 && hd % 8 == 0 && hd >= 8 && hd <= 256)) return false;
  for (const void* p : tensors)
    if (!aligned16(p)) return false;
  return true;
}

}  // namespace

bool CudnnAttention::forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int n_head,
                             int head_dim, cudaStream_t stream, const ScratchFn& scratch) {
  if (!enabled() || !worth_trying(B, T, n_head, head_dim, {out, lse, qkv}) ||
      !impl_->ensure_handle())
    return false;
  const Shape s{B, T, n_head, head_dim};
  Plan* p = impl_->plan_for(false, s);
  if (!p) return false;
  float scale = 1.0f / sqrtf(static_cast<float>(head_dim));
  float lowest = impl_->mask_fill();
  void* ws = p->workspace > 0 ? scratch(static_cast<size_t>(p->workspace)) : nullptr;
  const int64_t C = s.C();
  bf16* base = const_cast<bf16*>(qkv);
  return impl_->run(false, s, *p, {kQ, kK, kV, kO, kStats, kScale, kLowest},
                    {base, base + C, base + 2 * C, out, lse, &scale, &lowest}, ws, stream);
}

bool CudnnAttention::backward(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out,
                              const float* lse, int B, int T, int n_head, int head_dim,
                              cudaStream_t stream, const ScratchFn& scratch) {
  if (!enabled() || !worth_trying(B, T, n_head, head_dim, {dqkv, dout, qkv, out, lse}) ||
      !impl_->ensure_handle())
    return false;
  const Shape s{B, T, n_head, head_dim};
  Plan* p = impl_->plan_for(true, s);
  if (!p) return false;
  // Workspace: [Δ (B·H·T fp32) | dQ accumulator (B·H·T·hd fp32, accumulating form) | engine]
  const size_t delta_bytes = align256(sizeof(float) * size_t(B) * n_head * T);
  const size_t acc_bytes =
      p->deterministic ? 0 : align256(sizeof(float) * size_t(B) * n_head * T * head_dim);
  const size_t engine_bytes = align256(static_cast<size_t>(p->workspace));
  char* ws = static_cast<char*>(scratch(delta_bytes + acc_bytes + engine_bytes));
  void* delta = ws;
  void* acc = p->deterministic ? nullptr : ws + delta_bytes;
  void* engine = engine_bytes ? ws + delta_bytes + acc_bytes : nullptr;
  // cuDNN before 9.6 expects the dQ accumulator zeroed by the caller.
  if (acc && impl_->version < 90600)
    CUDA_CHECK(cudaMemsetAsync(acc, 0, acc_bytes, stream));
  float scale = 1.0f / sqrtf(static_cast<float>(head_dim));
  float lowest = impl_->mask_fill();
  float one = 1.0f;
  const int64_t C = s.C();
  bf16* base = const_cast<bf16*>(qkv);
  std::vector<int64_t> uids = {kQ, kK, kV, kO, kdO, kStats, kdQ, kdK, kdV, kSoftmaxSum,
                               kScale, kLowest, kOne};
  std::vector<void*> ptrs = {base, base + C, base + 2 * C, const_cast<bf16*>(out),
                             const_cast<bf16*>(dout), const_cast<float*>(lse), dqkv, dqkv + C,
                             dqkv + 2 * C, delta, &scale, &lowest, &one};
  if (acc) {
    uids.push_back(kdQAccum);
    ptrs.push_back(acc);
  }
  return impl_->run(true, s, *p, uids, ptrs, engine, stream);
}

#else  // built without cuDNN

struct CudnnAttention::Impl {};
CudnnAttention::CudnnAttention() : impl_(std::make_unique<Impl>()) {}
CudnnAttention::~CudnnAttention() = default;
bool CudnnAttention::enabled() const { return false; }
std::string CudnnAttention::describe() const { return "built without cuDNN"; }
bool CudnnAttention::forward(bf16*, float*, const bf16*, int, int, int, int, cudaStream_t,
                             const ScratchFn&) {
  return false;
}
bool CudnnAttention::backward(bf16*, const bf16*, const bf16*, const bf16*, const float*, int, int,
                              int, int, cudaStream_t, const ScratchFn&) {
  return false;
}

#endif

}  // namespace mhc::cuda
