// HostTensors: a test's tensors on one backend, made from host values (doubles, stored in
// the dtype given), read back as doubles, and released together when it goes out of scope
// (declare it after the backend it uses).
#pragma once
#include <vector>

#include "backend.h"

namespace mhc::testing {

class HostTensors {
 public:
  HostTensors(Backend& be, DType dtype) : be_(be), dtype_(dtype) {}
  HostTensors(const HostTensors&) = delete;
  HostTensors& operator=(const HostTensors&) = delete;
  ~HostTensors() {
    for (Tensor& t : owned_) be_.release(t);
  }

  Tensor make(const std::vector<double>& values) {
    Tensor t = be_.alloc(static_cast<int64_t>(values.size()), dtype_);
    be_.upload(t, values.data());
    owned_.push_back(t);
    return t;
  }

  std::vector<double> get(Tensor t) const {
    std::vector<double> values(static_cast<size_t>(t.numel));
    be_.download(t, values.data());
    return values;
  }

 private:
  Backend& be_;
  DType dtype_;
  std::vector<Tensor> owned_;
};

}  // namespace mhc::testing
