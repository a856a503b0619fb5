// Reading GGUF files (llama.cpp's model format, versions 2 and 3): a
// little-endian header of metadata key/values and tensor descriptions,
// then the tensor data, each tensor at an aligned offset.
//
//   "GGUF" u32 version; u64 tensor_count; u64 kv_count;
//   kv_count x { string key; u32 type; value }
//   tensor_count x { string name; u32 n_dims; u64 ne[n_dims]; u32 type;
//                    u64 offset }
//   padding to general.alignment (default 32); tensor data.
// Strings are u64 length + bytes; arrays u32 element type + u64 count +
// elements. ne[0] is the innermost (contiguous) dimension.
//
// The file is untrusted input: every count, length, offset, size, type and
// alignment is checked against the file before use, and errors name the
// file and the key or tensor. No byte pattern crashes the parser
// (gguf_fuzz exercises it). Only tensor types edgesplit computes with are
// accepted: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K.
#ifndef EDGESPLIT_RUNTIME_GGUF_H_
#define EDGESPLIT_RUNTIME_GGUF_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/mapped_file.h"

namespace edgesplit {

// GGUF metadata value types.
enum class GgufType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};

// ggml tensor types edgesplit reads (ggml.h's enum ggml_type values).
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ8_0 = 8,
  kQ4_K = 12,
  kQ6_K = 14,
  kBF16 = 30,
};
const char* GgmlTypeName(GgmlType type);

struct GgufValue {
  GgufType type = GgufType::kU8;
  // Numeric scalars (and bool) as both; integers beyond 2^53 are exact in
  // `integer` only.
  double number = 0;
  int64_t integer = 0;
  std::string str;
  // Arrays: element type, and the elements as strings or numbers.
  GgufType elem_type = GgufType::kU8;
  std::vector<std::string> strings;
  std::vector<double> numbers;

  bool IsInteger() const;
};

struct GgufTensor {
  std::string name;
  GgmlType type = GgmlType::kF32;
  std::vector<int64_t> ne;  // ne[0] innermost.
  uint64_t offset = 0;      // From the start of the data section.
  uint64_t nbytes = 0;
  int64_t rows() const;  // Product of ne[1..].
};

// Largest counts accepted (llama.cpp's files hold a few hundred tensors and
// a few dozen keys; vocabularies up to a few hundred thousand strings).
inline constexpr uint64_t kMaxGgufTensors = 1 << 16;
inline constexpr uint64_t kMaxGgufKeys = 1 << 16;

// Immutable after Open(); thread-safe.
class GgufFile {
 public:
  static absl::StatusOr<std::unique_ptr<GgufFile>> Open(
      const std::string& path);
  // Parses `map` (tests and the fuzz target hand in any bytes).
  static absl::StatusOr<std::unique_ptr<GgufFile>> Parse(
      std::shared_ptr<const MappedFile> map);
  // The same from bytes that `bytes` keeps alive (no file).
  static absl::StatusOr<std::unique_ptr<GgufFile>> ParseBytes(
      absl::string_view bytes, absl::string_view source);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  const std::map<std::string, GgufValue>& metadata() const { return kv_; }
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufTensor* Find(absl::string_view name) const;
  // The mapping and where the data section starts in it.
  const std::shared_ptr<const MappedFile>& mapping() const { return map_; }
  uint64_t data_offset() const { return data_offset_; }
  const uint8_t* data() const { return base_ + data_offset_; }

  // Typed metadata reads; errors name the file and key. Integer reads
  // accept any integer type whose value fits; float reads any number.
  absl::StatusOr<int64_t> Int(const std::string& key) const;
  absl::StatusOr<int64_t> Int(const std::string& key, int64_t fallback) const;
  absl::StatusOr<double> Float(const std::string& key, double fallback) const;
  absl::StatusOr<bool> Bool(const std::string& key, bool fallback) const;
  absl::StatusOr<std::string> String(const std::string& key) const;
  // Arrays of strings / numbers; NOT_FOUND when absent.
  absl::StatusOr<const std::vector<std::string>*> Strings(
      const std::string& key) const;
  absl::StatusOr<const std::vector<double>*> Numbers(
      const std::string& key) const;

 private:
  GgufFile() = default;
  absl::Status ParseAll(uint64_t size);

  std::string path_;
  std::shared_ptr<const MappedFile> map_;
  std::string owned_;  // ParseBytes's copy.
  const uint8_t* base_ = nullptr;
  uint32_t version_ = 0;
  uint64_t data_offset_ = 0;
  std::map<std::string, GgufValue> kv_;
  std::vector<GgufTensor> tensors_;  // File order.
  std::map<std::string, size_t> by_name_;
};

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_GGUF_H_
