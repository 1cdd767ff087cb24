// safetensors files: an 8-byte little-endian header length, a JSON header
// {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}, then the raw data.
// Written atomically; read with full validation so a truncated or corrupt file is a
// clear MhcError naming it, never a crash.
#pragma once
#include <cstdint>
#include <istream>
#include <map>
#include <string>
#include <vector>

namespace mhc {

enum class StDType { F32, F64, BF16, I32, I64 };

struct StTensorInfo {
  StDType dtype = StDType::F32;
  std::vector<int64_t> shape;
  int64_t begin = 0, end = 0;  // byte offsets into the data section
  int64_t numel() const;
};

class SafetensorsWriter {
 public:
  // Values are converted to `dtype` (F32, F64 or BF16).
  void add(const std::string& name, const std::vector<int64_t>& shape, const double* values,
           StDType dtype);
  void add_i64(const std::string& name, const std::vector<int64_t>& values);
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }
  // Writes path atomically (temporary file, fsync, rename).
  void write(const std::string& path) const;

 private:
  struct Entry {
    std::string name;
    StDType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  // The same parse and checks on a file's bytes already in memory; `name` stands for the
  // path in errors (used by the fuzz harness, tests/fuzz/).
  static SafetensorsFile from_bytes(const std::string& bytes, const std::string& name);
  const std::string& path() const { return path_; }
  bool has(const std::string& name) const { return tensors_.count(name) > 0; }
  const StTensorInfo& info(const std::string& name) const;
  const std::map<std::string, StTensorInfo>& tensors() const { return tensors_; }
  // Values converted to double; MhcError when missing or of an unexpected shape.
  std::vector<double> read(const std::string& name) const;
  std::vector<double> read(const std::string& name, const std::vector<int64_t>& expected_shape) const;
  std::vector<int64_t> read_i64(const std::string& name) const;
  // Metadata value or "" when absent.
  std::string metadata(const std::string& key) const;

 private:
  SafetensorsFile() = default;
  void parse(std::istream& in, int64_t file_size);  // the whole file from `in`
  std::string path_;
  std::vector<uint8_t> data_;  // the data section
  std::map<std::string, StTensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

std::string shape_string(const std::vector<int64_t>& shape);

}  // namespace mhc
