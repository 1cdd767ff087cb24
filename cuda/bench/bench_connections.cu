// Microbenchmark of the HC/mHC connection kernels against the memory they must move.
//
// For each kernel: the bytes it must move (every input read once, every output written
// once; "+=" targets count a read and a write), the median time over --reps launches
// (CUDA events around each launch, after --warmup launches), the achieved bandwidth
// bytes/time, and that bandwidth over the device-to-device copy bandwidth measured in
// the same process (cudaMemcpyAsync of a 1 GiB buffer, counting bytes read + written).
// Inputs are random (never zeros); buffers are far larger than L2 at the defaults.
//
//   bench_connections [--tokens N] [--C 768] [--n 4] [--iters 20] [--matrices M]
//                     [--dtype bf16|fp32] [--reps 50] [--warmup 5] [--json FILE]
//
// Kernels: stream_expand, stream_collapse, stream_aggregate fwd/bwd, stream_merge
// fwd/bwd, sinkhorn fwd, bwd and fwd+bwd (M independent n×n matrices), mhc_coeff fwd/bwd
// (projection with the fused RMS, nonlinearities, Sinkhorn; backward with dφ split-K).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "common.cuh"
#include "mhc_coeff.cuh"
#include "sinkhorn.cuh"
#include "streams.cuh"

namespace {

using mhc::cuda::bf16;

#define CHECK(call)                                                                    \
  do {                                                                                 \
    cudaError_t e_ = (call);                                                           \
    if (e_ != cudaSuccess) {                                                           \
      std::fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorString(e_),     \
                   __FILE__, __LINE__, #call);                                         \
      std::exit(1);                                                                    \
    }                                                                                  \
  } while (0)

struct Options {
  long long tokens = 32768;
  int C = 768, n = 4, iters = 20;
  long long matrices = 1 << 22;
  std::string dtype = "bf16";
  int reps = 50, warmup = 5;
  std::string json;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "missing value after %s\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--tokens") o.tokens = std::atoll(next());
    else if (a == "--C") o.C = std::atoi(next());
    else if (a == "--n") o.n = std::atoi(next());
    else if (a == "--iters") o.iters = std::atoi(next());
    else if (a == "--matrices") o.matrices = std::atoll(next());
    else if (a == "--dtype") o.dtype = next();
    else if (a == "--reps") o.reps = std::atoi(next());
    else if (a == "--warmup") o.warmup = std::atoi(next());
    else if (a == "--json") o.json = next();
    else {
      std::fprintf(stderr,
                   "usage: %s [--tokens N] [--C C] [--n n] [--iters T] [--matrices M] "
                   "[--dtype bf16|fp32] [--reps R] [--warmup W] [--json FILE]\n",
                   argv[0]);
      std::exit(2);
    }
  }
  return o;
}

// Fills a buffer with uniform(-scale, scale) + offset values from a counter hash.
template <class T>
__global__ void fill_random(T* p, long long count, unsigned seed, float scale, float offset) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count;
       i += (long long)gridDim.x * blockDim.x) {
    unsigned long long h = (unsigned long long)i * 0x9E3779B97F4A7C15ull + seed;
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 29;
    const float u = (h >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    p[i] = mhc::cuda::from_f32<T>(offset + scale * (2.f * u - 1.f));
  }
}

// Random bytes (copy sources, workspaces).
__global__ void fill_bytes(unsigned char* p, long long count, unsigned seed) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count;
       i += (long long)gridDim.x * blockDim.x)
    p[i] = static_cast<unsigned char>(((unsigned long long)i * 0x9E3779B97F4A7C15ull + seed) >> 56);
}

struct Buffers {
  std::vector<void*> owned;
  ~Buffers() {
    for (void* p : owned) cudaFree(p);
  }
  template <class T>
  T* make(long long count, unsigned seed, float scale = 1.f, float offset = 0.f) {
    void* p = nullptr;
    CHECK(cudaMalloc(&p, sizeof(T) * std::max(1LL, count)));
    owned.push_back(p);
    if constexpr (std::is_same_v<T, char>)
      mhc::cuda::launch<fill_bytes>(1024, 256, 0, nullptr, static_cast<unsigned char*>(p), count, seed);
    else
      mhc::cuda::launch<fill_random<T>>(1024, 256, 0, nullptr, static_cast<T*>(p), count, seed, scale, offset);
    CHECK(cudaGetLastError());
    // The fills run on the legacy stream, the timed kernels on a non-blocking one.
    CHECK(cudaDeviceSynchronize());
    return static_cast<T*>(p);
  }
};

// Median milliseconds of `run` over reps launches (each timed with its own events).
double median_ms(const Options& o, cudaStream_t stream, const std::function<void()>& run) {
  for (int i = 0; i < o.warmup; ++i) run();
  CHECK(cudaStreamSynchronize(stream));
  std::vector<float> ms;
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  for (int i = 0; i < o.reps; ++i) {
    CHECK(cudaEventRecord(a, stream));
    run();
    CHECK(cudaEventRecord(b, stream));
    CHECK(cudaEventSynchronize(b));
    float t = 0;
    CHECK(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  CHECK(cudaGetLastError());
  CHECK(cudaEventDestroy(a));
  CHECK(cudaEventDestroy(b));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

struct Row {
  std::string name;
  double bytes, ms;
};

template <class T>
std::vector<Row> run_all(const Options& o, cudaStream_t s, double* copy_gbs) {
  std::vector<Row> rows;
  Buffers buf;
  // Copy bandwidth: 1 GiB device-to-device.
  {
    const size_t bytes = size_t(1) << 30;
    char* src = buf.make<char>(bytes, 1);
    char* dst = buf.make<char>(bytes, 2);
    const double ms = median_ms(o, s, [&] {
      CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s));
    });
    rows.push_back({"cudaMemcpy D2D (1 GiB)", 2.0 * bytes, ms});
    *copy_gbs = 2.0 * bytes / (ms * 1e-3) / 1e9;
  }
  const long long N = o.tokens;
  const int n = o.n, C = o.C, D = 2 * n + n * n;
  const double e = sizeof(T), f4 = 4;
  const double NnC = double(N) * n * C, NC = double(N) * C;
  T* X = buf.make<T>(N * n * C, 3);
  T* Y = buf.make<T>(N * n * C, 4);
  T* dY = buf.make<T>(N * n * C, 5);
  T* dX = buf.make<T>(N * n * C, 6);
  T* f = buf.make<T>(N * C, 7);
  T* df = buf.make<T>(N * C, 8);
  T* u = buf.make<T>(N * C, 9);
  float* pre = buf.make<float>(N * n, 10, 0.4f, 0.5f);
  float* post = buf.make<float>(N * n, 11, 0.4f, 1.0f);
  float* res = buf.make<float>(N * n * n, 12, 0.2f, 0.25f);
  float* dpre = buf.make<float>(N * n, 13);
  float* dpost = buf.make<float>(N * n, 14);
  float* dres = buf.make<float>(N * n * n, 15);
  CHECK(cudaDeviceSynchronize());

  rows.push_back({"stream_expand", NC * e + NnC * e, median_ms(o, s, [&] {
                    mhc::cuda::stream_expand<T>(Y, f, int(N), n, C, s);
                  })});
  rows.push_back({"stream_collapse", NnC * e + NC * e, median_ms(o, s, [&] {
                    mhc::cuda::stream_collapse<T>(u, X, int(N), n, C, s);
                  })});
  rows.push_back({"stream_aggregate fwd", NnC * e + NC * e + N * n * f4, median_ms(o, s, [&] {
                    mhc::cuda::stream_aggregate_forward<T>(u, X, pre, int(N), n, C, s);
                  })});
  rows.push_back({"stream_aggregate bwd", 3 * NnC * e + NC * e + 2 * N * n * f4,
                  median_ms(o, s, [&] {
                    mhc::cuda::stream_aggregate_backward<T>(dX, dpre, u, X, pre, int(N), n, C, s);
                  })});
  rows.push_back({"stream_merge fwd", 2 * NnC * e + NC * e + N * (n * n + n) * f4,
                  median_ms(o, s, [&] {
                    mhc::cuda::stream_merge_forward<T>(Y, X, f, res, post, int(N), n, C, s);
                  })});
  rows.push_back({"stream_merge bwd", 3 * NnC * e + 2 * NC * e + 2 * N * (n * n + n) * f4,
                  median_ms(o, s, [&] {
                    mhc::cuda::stream_merge_backward<T>(dX, df, dres, dpost, dY, X, f, res, post,
                                                        int(N), n, C, s);
                  })});

  // mHC coefficients (the model's path: projection + RMS, nonlinearities with Sinkhorn).
  {
    const int nC = n * C;
    float* phi = buf.make<float>((long long)nC * D, 20, 0.02f);
    float* alpha = buf.make<float>(3, 21, 0.1f, 0.5f);
    float* bias = buf.make<float>(D, 22);
    float* m = buf.make<float>(N * D, 23);
    float* rms = buf.make<float>(N, 24, 0.1f, 1.0f);
    float* dphi = buf.make<float>((long long)nC * D, 25);
    float* dalpha = buf.make<float>(3, 26);
    float* dbias = buf.make<float>(D, 27);
    const mhc::cuda::MhcCoeffArgs args{int(N), n, C, o.iters};
    const size_t ws_bytes = mhc::cuda::mhc_coeff_backward_workspace_bytes(args);
    char* ws_mem = buf.make<char>((long long)ws_bytes, 28);
    CHECK(cudaDeviceSynchronize());
    const double coeff_out = double(N) * (2 * n + n * n + D + 1) * f4;  // pre, post, res, m, r
    rows.push_back({"mhc_coeff fwd", NnC * e + double(nC) * D * f4 + coeff_out,
                    median_ms(o, s, [&] {
                      mhc::cuda::mhc_coeff_forward<T>(pre, post, res, m, rms, X, phi, alpha, bias,
                                                      args, 1e-6f, s);
                    })});
    // In: X, dX (+=), m, r, dpre/dpost/dres, φ; out: dX, dφ (+=).
    const double bwd_bytes = 3 * NnC * e + double(N) * (D + 1 + 2 * n + n * n) * f4 +
                             3 * double(nC) * D * f4;
    rows.push_back({"mhc_coeff bwd", bwd_bytes, median_ms(o, s, [&] {
                      mhc::cuda::Workspace ws(ws_mem, ws_bytes);
                      mhc::cuda::mhc_coeff_backward<T>(dX, dphi, dalpha, dbias, dpre, dpost, dres,
                                                       X, phi, alpha, bias, m, rms, args, ws, s);
                    })});
  }

  // Sinkhorn over M independent n×n matrices (fp32).
  {
    const long long M = o.matrices, nn = (long long)n * n;
    float* Z = buf.make<float>(M * nn, 30, 2.f);
    float* H = buf.make<float>(M * nn, 31);
    float* dH = buf.make<float>(M * nn, 32);
    float* dZ = buf.make<float>(M * nn, 33);
    const size_t ws_bytes = mhc::cuda::sinkhorn_backward_workspace_bytes(int(M), n, o.iters);
    char* ws_mem = buf.make<char>((long long)ws_bytes, 34);
    CHECK(cudaDeviceSynchronize());
    const double mat = double(M) * nn * f4;
    rows.push_back({"sinkhorn fwd", 2 * mat, median_ms(o, s, [&] {
                      mhc::cuda::sinkhorn_forward(H, Z, int(M), n, o.iters, s);
                    })});
    rows.push_back({"sinkhorn bwd", 3 * mat, median_ms(o, s, [&] {
                      mhc::cuda::Workspace ws(ws_mem, ws_bytes);
                      mhc::cuda::sinkhorn_backward(dZ, dH, Z, int(M), n, o.iters, ws, s);
                    })});
    rows.push_back({"sinkhorn fwd+bwd", 5 * mat, median_ms(o, s, [&] {
                      mhc::cuda::sinkhorn_forward(H, Z, int(M), n, o.iters, s);
                      mhc::cuda::Workspace ws(ws_mem, ws_bytes);
                      mhc::cuda::sinkhorn_backward(dZ, dH, Z, int(M), n, o.iters, ws, s);
                    })});
  }
  return rows;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  int device = 0;
  CHECK(cudaGetDevice(&device));
  cudaDeviceProp prop{};
  CHECK(cudaGetDeviceProperties(&prop, device));
  cudaStream_t s;
  CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  double copy_gbs = 0;
  std::vector<Row> rows;
  try {
    rows = o.dtype == "fp32" ? run_all<float>(o, s, &copy_gbs) : run_all<bf16>(o, s, &copy_gbs);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  std::printf("# %s, %s, tokens=%lld C=%d n=%d iters=%d matrices=%lld, median of %d\n", prop.name,
              o.dtype.c_str(), o.tokens, o.C, o.n, o.iters, o.matrices, o.reps);
  std::printf("%-24s %12s %10s %10s %8s\n", "kernel", "MB moved", "ms", "GB/s", "of copy");
  for (const Row& r : rows) {
    const double gbs = r.bytes / (r.ms * 1e-3) / 1e9;
    std::printf("%-24s %12.1f %10.4f %10.1f %7.1f%%\n", r.name.c_str(), r.bytes / 1e6, r.ms, gbs,
                100.0 * gbs / copy_gbs);
  }
  if (!o.json.empty()) {
    FILE* fp = std::fopen(o.json.c_str(), "w");
    if (!fp) {
      std::fprintf(stderr, "cannot write %s\n", o.json.c_str());
      return 1;
    }
    std::fprintf(fp, "{\"device\": \"%s\", \"dtype\": \"%s\", \"tokens\": %lld, \"C\": %d, \"n\": %d, "
                     "\"iters\": %d, \"matrices\": %lld, \"copy_gbs\": %.3f, \"kernels\": [",
                 prop.name, o.dtype.c_str(), o.tokens, o.C, o.n, o.iters, o.matrices, copy_gbs);
    for (size_t i = 0; i < rows.size(); ++i) {
      const double gbs = rows[i].bytes / (rows[i].ms * 1e-3) / 1e9;
      std::fprintf(fp, "%s{\"name\": \"%s\", \"bytes\": %.0f, \"ms\": %.6f, \"gbs\": %.3f, "
                       "\"of_copy\": %.4f}",
                   i ? ", " : "", rows[i].name.c_str(), rows[i].bytes, rows[i].ms, gbs,
                   gbs / copy_gbs);
    }
    std::fprintf(fp, "]}\n");
    std::fclose(fp);
  }
  CHECK(cudaStreamDestroy(s));
  return 0;
}
