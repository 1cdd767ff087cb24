#include "dist/mpi_comm.h"

#include "error.h"

#ifdef MHC_WITH_MPI
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <functional>
#include <map>
#include <vector>

#include "bf16.h"

#define MPI_CHECK(call)                                                                    \
  do {                                                                                     \
    const int mhc_mpi_rc_ = (call);                                                        \
    if (mhc_mpi_rc_ != MPI_SUCCESS) ::mhc::dist::throw_mpi_error(mhc_mpi_rc_, #call, __FILE__, __LINE__); \
  } while (0)

namespace mhc::dist {

[[noreturn]] void throw_mpi_error(int code, const char* call, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  MPI_Error_string(code, text, &len);
  throw MhcError(fmt::format("MPI error: {} in `{}` at {}:{}", text, call, file, line));
}

namespace {

void bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  const uint16_t* a = static_cast<const uint16_t*>(in);
  uint16_t* b = static_cast<uint16_t*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = float_to_bf16(bf16_to_float(a[i]) + bf16_to_float(b[i]));
}

MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::F32: return MPI_FLOAT;
    case DType::F64: return MPI_DOUBLE;
    default: fail("MPI collectives: unsupported tensor dtype {}", dtype_name(t));
  }
}

int as_count(int64_t n) {
  if (n > INT_MAX) fail("MPI collective of {} elements exceeds MPI's int counts", n);
  return static_cast<int>(n);
}

class MpiComm final : public Communicator {
 public:
  MpiComm() {
    int initialized = 0;
    MPI_CHECK(MPI_Initialized(&initialized));
    if (!initialized) {
      int provided = 0;
      MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
      owns_init_ = true;
    }
    MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm_));
    MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
    MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    MPI_CHECK(MPI_Comm_size(comm_, &size_));
    MPI_Comm node;
    MPI_CHECK(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node));
    MPI_CHECK(MPI_Comm_rank(node, &local_rank_));
    MPI_CHECK(MPI_Comm_free(&node));
    MPI_CHECK(MPI_Type_contiguous(2, MPI_BYTE, &bf16_type_));
    MPI_CHECK(MPI_Type_commit(&bf16_type_));
    MPI_CHECK(MPI_Op_create(&bf16_sum, 1, &bf16_op_));
  }

  ~MpiComm() override {
    for (auto& [id, p] : pending_) MPI_Wait(&p.request, MPI_STATUS_IGNORE);
    MPI_Op_free(&bf16_op_);
    MPI_Type_free(&bf16_type_);
    MPI_Comm_free(&comm_);
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owns_init_ && !finalized) MPI_Finalize();
  }

  std::string name() const override {
    char version[MPI_MAX_LIBRARY_VERSION_STRING] = {0};
    int len = 0;
    MPI_Get_library_version(version, &len);
    std::string v(version, static_cast<size_t>(len));
    if (auto nl = v.find_first_of("\n,"); nl != std::string::npos) v.resize(nl);
    return "mpi (" + v + ")";
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }

  CommRequest all_reduce_sum_async(Tensor t, DType wire) override {
    if (t.numel == 0) return 0;
    Pending p;
    if (wire == DType::BF16 && t.dtype == DType::F32) {
      p.staging.resize(t.numel * 2);
      to_bf16(t, p.staging.data());
      MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, p.staging.data(), as_count(t.numel), bf16_type_,
                               bf16_op_, comm_, &p.request));
      p.finish = [t](Pending& q) { from_bf16(q.staging.data(), t, 0, t.numel); };
    } else {
      MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, t.data, as_count(t.numel), mpi_type(t.dtype), MPI_SUM,
                               comm_, &p.request));
    }
    return add(std::move(p));
  }

  CommRequest reduce_scatter_sum_async(Tensor t, const std::vector<int64_t>& counts,
                                       DType wire) override {
    MHC_CHECK(static_cast<int>(counts.size()) == size_);
    Pending p;
    int64_t offset = 0;
    for (int r = 0; r < rank_; ++r) offset += counts[r];
    for (int64_t c : counts) p.counts.push_back(as_count(c));
    const int64_t mine = counts[rank_];
    const bool bf16 = wire == DType::BF16 && t.dtype == DType::F32;
    const size_t es = bf16 ? 2 : dtype_size(t.dtype);
    p.result.resize(static_cast<size_t>(mine) * es + 1);
    const void* send = t.data;
    if (bf16) {
      p.staging.resize(t.numel * 2);
      to_bf16(t, p.staging.data());
      send = p.staging.data();
    }
    MPI_CHECK(MPI_Ireduce_scatter(send, p.result.data(), p.counts.data(),
                                  bf16 ? bf16_type_ : mpi_type(t.dtype), bf16 ? bf16_op_ : MPI_SUM,
                                  comm_, &p.request));
    p.finish = [t, offset, mine, bf16, es](Pending& q) {
      if (bf16)
        from_bf16(q.result.data(), t, offset, mine);
      else
        std::memcpy(static_cast<char*>(t.data) + offset * es, q.result.data(), mine * es);
    };
    return add(std::move(p));
  }

  CommRequest all_gather_async(Tensor t, const std::vector<int64_t>& counts) override {
    MHC_CHECK(static_cast<int>(counts.size()) == size_);
    Pending p;
    int64_t offset = 0;
    for (int64_t c : counts) {
      p.counts.push_back(as_count(c));
      p.displs.push_back(as_count(offset));
      offset += c;
    }
    MHC_CHECK(offset == t.numel);
    MPI_CHECK(MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, t.data, p.counts.data(),
                              p.displs.data(), mpi_type(t.dtype), comm_, &p.request));
    return add(std::move(p));
  }

  void wait(CommRequest id) override {
    auto it = pending_.find(id);
    if (it == pending_.end()) return;  // completed by progress()
    MPI_CHECK(MPI_Wait(&it->second.request, MPI_STATUS_IGNORE));
    complete(it);
  }

  void progress() override {
    for (auto it = pending_.begin(); it != pending_.end();) {
      int done = 0;
      MPI_CHECK(MPI_Test(&it->second.request, &done, MPI_STATUS_IGNORE));
      it = done ? complete(it) : std::next(it);
    }
  }

  void all_reduce_sum_host(double* data, int count) override {
    if (count <= 0) return;
    std::vector<double> all(static_cast<size_t>(count) * size_);
    MPI_CHECK(MPI_Allgather(data, count, MPI_DOUBLE, all.data(), count, MPI_DOUBLE, comm_));
    for (int i = 0; i < count; ++i) {
      double s = all[i];
      for (int r = 1; r < size_; ++r) s += all[static_cast<size_t>(r) * count + i];
      data[i] = s;
    }
  }

  void broadcast_host(void* data, size_t bytes, int root) override {
    char* p = static_cast<char*>(data);
    while (bytes > 0) {
      const int n = static_cast<int>(std::min<size_t>(bytes, 1 << 30));
      MPI_CHECK(MPI_Bcast(p, n, MPI_BYTE, root, comm_));
      p += n;
      bytes -= static_cast<size_t>(n);
    }
  }

  void barrier() override { MPI_CHECK(MPI_Barrier(comm_)); }

  void abort(int exit_code) override { MPI_Abort(MPI_COMM_WORLD, exit_code); }

 private:
  struct Pending {
    MPI_Request request = MPI_REQUEST_NULL;
    std::vector<uint8_t> staging, result;
    std::vector<int> counts, displs;
    std::function<void(Pending&)> finish;
  };
  using Map = std::map<CommRequest, Pending>;

  static void to_bf16(Tensor t, uint8_t* out) {
    const float* x = t.as<float>();
    uint16_t* o = reinterpret_cast<uint16_t*>(out);
    for (int64_t i = 0; i < t.numel; ++i) o[i] = float_to_bf16(x[i]);
  }
  static void from_bf16(const uint8_t* in, Tensor t, int64_t offset, int64_t count) {
    const uint16_t* h = reinterpret_cast<const uint16_t*>(in);
    float* x = t.as<float>() + offset;
    for (int64_t i = 0; i < count; ++i) x[i] = bf16_to_float(h[i]);
  }

  CommRequest add(Pending&& p) {
    const CommRequest id = ++next_id_;
    pending_.emplace(id, std::move(p));
    return id;
  }
  Map::iterator complete(Map::iterator it) {
    if (it->second.finish) it->second.finish(it->second);
    return pending_.erase(it);
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  MPI_Datatype bf16_type_ = MPI_DATATYPE_NULL;
  MPI_Op bf16_op_ = MPI_OP_NULL;
  int rank_ = 0, size_ = 1, local_rank_ = 0;
  bool owns_init_ = false;
  CommRequest next_id_ = 0;
  Map pending_;
};

}  // namespace

bool mpi_available() { return true; }

std::unique_ptr<Communicator> make_mpi_comm() { return std::make_unique<MpiComm>(); }

}  // namespace mhc::dist

#else  // !MHC_WITH_MPI

namespace mhc::dist {

bool mpi_available() { return false; }

std::unique_ptr<Communicator> make_mpi_comm() {
  fail("dist.backend=mpi, but this binary was built without MPI (install Open MPI, e.g. "
       "libopenmpi-dev, and rebuild)");
}

}  // namespace mhc::dist

#endif
