// Tensor: a non-owning, typed view of backend memory (host or device). Shapes live in
// the code that uses a tensor; a view only knows its element type and count, which is
// what a backend needs to check and convert.
#pragma once
#include <cstddef>
#include <cstdint>

#include "error.h"

namespace mhc {

enum class DType : uint8_t { F32, F64, BF16, I32 };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F64: return 8;
    case DType::BF16: return 2;
    case DType::I32: return 4;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F64: return "f64";
    case DType::BF16: return "bf16";
    case DType::I32: return "i32";
  }
  return "?";
}

struct Tensor {
  void* data = nullptr;
  int64_t numel = 0;
  DType dtype = DType::F32;

  bool empty() const { return data == nullptr || numel == 0; }
  size_t bytes() const { return static_cast<size_t>(numel) * dtype_size(dtype); }
  Tensor slice(int64_t offset, int64_t count) const {
    MHC_CHECK(offset >= 0 && count >= 0 && offset + count <= numel);
    return Tensor{static_cast<char*>(data) + offset * static_cast<int64_t>(dtype_size(dtype)),
                  count, dtype};
  }
  template <class T>
  T* as() const {
    return static_cast<T*>(data);
  }
};

}  // namespace mhc
