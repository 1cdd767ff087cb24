// Helpers shared by the tests: tiny configs, random data, finite differences.
#pragma once
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "config.h"
#include "error.h"
#include "rng.h"

namespace mhc::testing {

// A tiny model config in the given residual mode.
inline Config tiny_config(const std::string& mode, int n, bool dynamic = false) {
  Config cfg = default_config();
  cfg.model.vocab_size = 23;
  cfg.model.d_model = 8;
  cfg.model.n_layer = 2;
  cfg.model.n_head = 2;
  cfg.model.seq_len = 5;
  cfg.model.mlp_hidden = 12;
  cfg.residual.mode = mode;
  cfg.residual.n = n;
  cfg.residual.hc.dynamic = dynamic;
  return cfg;
}

inline std::vector<double> random_vector(size_t count, uint64_t seed, double scale = 1.0) {
  std::vector<double> v(count);
  for (size_t i = 0; i < count; ++i) v[i] = scale * normal01(seed, i);
  return v;
}

inline std::vector<int32_t> random_tokens(size_t count, int vocab, uint64_t seed) {
  std::vector<int32_t> v(count);
  for (size_t i = 0; i < count; ++i)
    v[i] = static_cast<int32_t>(uniform01(seed, i) * vocab) % vocab;
  return v;
}

// Max over entries of |a − b|.
inline double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double err = 0;
  for (size_t i = 0; i < a.size(); ++i) err = std::max(err, std::fabs(a[i] - b[i]));
  return err;
}

// Max over entries of |a − b| / max(|b|_inf, floor): the error relative to the
// gradient's scale (entries near zero do not blow it up).
inline double max_rel_error(const std::vector<double>& a, const std::vector<double>& b,
                            double floor = 1e-12) {
  double scale = floor;
  for (double v : b) scale = std::max(scale, std::fabs(v));
  return max_abs_diff(a, b) / scale;
}

// Five-point central difference of f at x along coordinate i (error O(h⁴), so small
// gradients are resolved well above float64 round-off).
inline double central_difference(std::vector<double>& x, size_t i,
                                 const std::function<double()>& f, double h = 1e-3) {
  const double saved = x[i];
  auto at = [&](double offset) {
    x[i] = saved + offset;
    return f();
  };
  const double d = (at(-2 * h) - 8 * at(-h) + 8 * at(h) - at(2 * h)) / (12 * h);
  x[i] = saved;
  return d;
}

// A fresh directory under the gtest temp dir, removed (with its contents) afterwards.
class ScratchDir {
 public:
  ScratchDir() {
    std::string tmpl = (std::filesystem::path(::testing::TempDir()) / "mhc_test_XXXXXX").string();
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = buf.data();
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline std::string read_file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void write_file_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Runs fn, expecting an MhcError whose message contains every one of `parts`. Returns the
// message ("" when nothing or something else was thrown, which is a test failure).
template <class Fn>
std::string expect_mhc_error(Fn&& fn, const std::vector<std::string>& parts) {
  try {
    fn();
  } catch (const MhcError& e) {
    const std::string msg = e.what();
    for (const auto& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << "message: " << msg << "\n  lacks: " << p;
    return msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected an MhcError, got another exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected an MhcError, nothing was thrown";
  return "";
}

}  // namespace mhc::testing
