#include "safetensors.h"

#include <nlohmann/json.hpp>

#include <climits>
#include <fstream>
#include <sstream>

#include "bf16.h"
#include "error.h"
#include "text_util.h"

namespace mhc {
namespace {

const char* st_name(StDType t) {
  switch (t) {
    case StDType::F32: return "F32";
    case StDType::F64: return "F64";
    case StDType::BF16: return "BF16";
    case StDType::I32: return "I32";
    case StDType::I64: return "I64";
  }
  return "?";
}

size_t st_size(StDType t) {
  switch (t) {
    case StDType::F32: return 4;
    case StDType::F64: return 8;
    case StDType::BF16: return 2;
    case StDType::I32: return 4;
    case StDType::I64: return 8;
  }
  return 0;
}

bool parse_dtype(const std::string& s, StDType& out) {
  for (StDType t : {StDType::F32, StDType::F64, StDType::BF16, StDType::I32, StDType::I64})
    if (s == st_name(t)) {
      out = t;
      return true;
    }
  return false;
}

int64_t product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

// factor × the product of dims, false when it does not fit an int64 (dims are >= 0).
bool checked_product(const std::vector<int64_t>& dims, int64_t factor, int64_t& out) {
  out = factor;
  for (auto d : dims)
    if (__builtin_mul_overflow(out, d, &out)) return false;
  return true;
}

// A header list of sizes or offsets: an array of integers in [0, 2^63) (checked before
// converting, as nlohmann converts a float or an out-of-range number without a word).
std::vector<int64_t> size_list(const nlohmann::json& js, const std::string& path,
                               const std::string& tensor, const char* field) {
  if (!js.is_array()) fail("'{}': tensor '{}' has a {} that is not a list", path, tensor, field);
  std::vector<int64_t> out;
  for (const auto& v : js) {
    if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > INT64_MAX) ||
        (!v.is_number_unsigned() && v.get<int64_t>() < 0))
      fail("'{}': tensor '{}' has {} {}: expected non-negative integers", path, tensor, field,
           js.dump());
    out.push_back(v.get<int64_t>());
  }
  return out;
}

}  // namespace

int64_t StTensorInfo::numel() const { return product(shape); }

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

void SafetensorsWriter::add(const std::string& name, const std::vector<int64_t>& shape,
                            const double* values, StDType dtype) {
  Entry e{name, dtype, shape, {}};
  const int64_t n = product(shape);
  e.bytes.resize(static_cast<size_t>(n) * st_size(dtype));
  for (int64_t i = 0; i < n; ++i) {
    uint8_t* dst = e.bytes.data() + i * st_size(dtype);
    if (dtype == StDType::F32) {
      float f = static_cast<float>(values[i]);
      std::memcpy(dst, &f, 4);
    } else if (dtype == StDType::F64) {
      std::memcpy(dst, &values[i], 8);
    } else if (dtype == StDType::BF16) {
      uint16_t h = float_to_bf16(static_cast<float>(values[i]));
      std::memcpy(dst, &h, 2);
    } else {
      throw InternalError("SafetensorsWriter::add: integer dtype");
    }
  }
  entries_.push_back(std::move(e));
}

void SafetensorsWriter::add_i64(const std::string& name, const std::vector<int64_t>& values) {
  Entry e{name, StDType::I64, {static_cast<int64_t>(values.size())}, {}};
  e.bytes.resize(values.size() * 8);
  std::memcpy(e.bytes.data(), values.data(), e.bytes.size());
  entries_.push_back(std::move(e));
}

void SafetensorsWriter::write(const std::string& path) const {
  nlohmann::ordered_json header;
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  int64_t offset = 0;
  for (const auto& e : entries_) {
    const int64_t end = offset + static_cast<int64_t>(e.bytes.size());
    header[e.name] = {{"dtype", st_name(e.dtype)}, {"shape", e.shape}, {"data_offsets", {offset, end}}};
    offset = end;
  }
  std::string json = header.dump();
  while (json.size() % 8 != 0) json += ' ';
  std::string out;
  out.reserve(8 + json.size() + static_cast<size_t>(offset));
  uint64_t len = json.size();
  out.append(reinterpret_cast<const char*>(&len), 8);
  out += json;
  for (const auto& e : entries_) out.append(reinterpret_cast<const char*>(e.bytes.data()), e.bytes.size());
  write_file_atomic(path, out);
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) fail("cannot open '{}'", path);
  const int64_t file_size = static_cast<int64_t>(in.tellg());
  in.seekg(0);
  parse(in, file_size);
}

SafetensorsFile SafetensorsFile::from_bytes(const std::string& bytes, const std::string& name) {
  SafetensorsFile f;
  f.path_ = name;
  std::istringstream in(bytes, std::ios::binary);
  f.parse(in, static_cast<int64_t>(bytes.size()));
  return f;
}

void SafetensorsFile::parse(std::istream& in, int64_t file_size) {
  const std::string& path = path_;
  if (file_size < 8) fail("'{}' is truncated ({} bytes; not a safetensors file)", path, file_size);
  uint64_t header_len = 0;
  in.read(reinterpret_cast<char*>(&header_len), 8);
  if (header_len > static_cast<uint64_t>(file_size - 8))
    fail("'{}' is truncated or corrupt (header of {} bytes in a {}-byte file)", path, header_len, file_size);
  std::string json(header_len, '\0');
  in.read(json.data(), static_cast<std::streamsize>(header_len));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(json);
  } catch (const std::exception& e) {
    fail("'{}' has a corrupt header: {}", path, e.what());
  }
  if (!header.is_object()) fail("'{}' has a corrupt header: not a JSON object", path);
  const int64_t data_size = file_size - 8 - static_cast<int64_t>(header_len);
  int64_t max_end = 0;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) fail("'{}' has a corrupt __metadata__ entry", path);
      for (auto m = it->begin(); m != it->end(); ++m)
        if (m->is_string()) metadata_[m.key()] = m->get<std::string>();
      continue;
    }
    StTensorInfo t;
    if (!it->is_object()) fail("'{}': tensor '{}' has a corrupt entry", path, it.key());
    try {
      if (!parse_dtype(it->at("dtype").get<std::string>(), t.dtype))
        fail("'{}': tensor '{}' has unsupported dtype {}", path, it.key(), it->at("dtype").dump());
      t.shape = size_list(it->at("shape"), path, it.key(), "shape");
      auto offs = size_list(it->at("data_offsets"), path, it.key(), "data_offsets");
      if (offs.size() != 2) fail("'{}': tensor '{}' has bad data_offsets", path, it.key());
      t.begin = offs[0];
      t.end = offs[1];
    } catch (const nlohmann::json::exception& e) {
      fail("'{}': tensor '{}' has a corrupt entry: {}", path, it.key(), e.what());
    }
    int64_t bytes = 0;
    if (!checked_product(t.shape, static_cast<int64_t>(st_size(t.dtype)), bytes))
      fail("'{}': tensor '{}' has shape {}, too large to address", path, it.key(),
           shape_string(t.shape));
    if (t.end < t.begin || t.end - t.begin != bytes)
      fail("'{}': tensor '{}' has inconsistent offsets for shape {}", path, it.key(), shape_string(t.shape));
    max_end = std::max(max_end, t.end);
    tensors_[it.key()] = t;
  }
  if (max_end > data_size)
    fail("'{}' is truncated: tensors need {} data bytes, the file has {}", path, max_end, data_size);
  data_.resize(static_cast<size_t>(data_size));
  in.read(reinterpret_cast<char*>(data_.data()), data_size);
  if (in.gcount() != data_size) fail("'{}' could not be read completely", path);
}

const StTensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) fail("'{}' has no tensor '{}'", path_, name);
  return it->second;
}

std::vector<double> SafetensorsFile::read(const std::string& name) const {
  const StTensorInfo& t = info(name);
  const int64_t n = t.numel();
  std::vector<double> out(static_cast<size_t>(n));
  const uint8_t* src = data_.data() + t.begin;
  for (int64_t i = 0; i < n; ++i) {
    switch (t.dtype) {
      case StDType::F32: {
        float f;
        std::memcpy(&f, src + 4 * i, 4);
        out[i] = f;
        break;
      }
      case StDType::F64: std::memcpy(&out[i], src + 8 * i, 8); break;
      case StDType::BF16: {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        out[i] = bf16_to_float(h);
        break;
      }
      case StDType::I32: {
        int32_t v;
        std::memcpy(&v, src + 4 * i, 4);
        out[i] = v;
        break;
      }
      case StDType::I64: {
        int64_t v;
        std::memcpy(&v, src + 8 * i, 8);
        out[i] = static_cast<double>(v);
        break;
      }
    }
  }
  return out;
}

std::vector<double> SafetensorsFile::read(const std::string& name,
                                          const std::vector<int64_t>& expected_shape) const {
  const StTensorInfo& t = info(name);
  if (t.shape != expected_shape)
    fail("'{}': tensor '{}' has shape {} but the model needs {}", path_, name,
         shape_string(t.shape), shape_string(expected_shape));
  return read(name);
}

std::vector<int64_t> SafetensorsFile::read_i64(const std::string& name) const {
  const StTensorInfo& t = info(name);
  if (t.dtype != StDType::I64) fail("'{}': tensor '{}' is not I64", path_, name);
  std::vector<int64_t> out(static_cast<size_t>(t.numel()));
  std::memcpy(out.data(), data_.data() + t.begin, out.size() * 8);
  return out;
}

std::string SafetensorsFile::metadata(const std::string& key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? "" : it->second;
}

}  // namespace mhc
