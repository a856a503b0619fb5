// Reading and writing the safetensors format
// (https://github.com/huggingface/safetensors): an 8-byte little-endian
// header length, a JSON header mapping tensor names to dtype, shape and
// [begin, end) byte offsets into the data section, then the data.
//
// The reader maps the file read-only and validates the whole header before
// anything else sees it: the file is untrusted input and no byte pattern may
// crash the process. Tensor bytes are never copied: Data() points into the
// mapping, and pages of tensors nobody asks for are never read.
#ifndef EDGESPLIT_RUNTIME_SAFETENSORS_H_
#define EDGESPLIT_RUNTIME_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "base/mapped_file.h"
#include "runtime/dtype.h"

namespace edgesplit {

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  // Byte offsets relative to the start of the data section.
  uint64_t begin = 0;
  uint64_t end = 0;

  int64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // Sorted by name.
  std::map<std::string, std::string> metadata;
};

// Largest header accepted (the reference implementation uses 100 MB).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull << 20;

// Parses and validates a JSON header against a data section of `data_size`
// bytes. `source` names the file in error messages. Exposed for tests and
// fuzzing; never crashes on any input.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(
    absl::string_view json, uint64_t data_size, absl::string_view source);

// An open, validated, memory-mapped safetensors file. Immutable after Open(),
// hence thread-safe. Tensors built on Data() must keep the file alive (hold
// the shared_ptr): the mapping goes away with the object.
class SafetensorsFile {
 public:
  static absl::StatusOr<std::shared_ptr<const SafetensorsFile>> Open(
      const std::string& path);
  // The same view over tensors another format stores (GGUF import): the
  // tensors of `header` live at `data_offset` + their offsets in `map`.
  // Fails, naming `path`, when one lies outside the file or two share a
  // name; the tensors may come in any order.
  static absl::StatusOr<std::shared_ptr<const SafetensorsFile>> FromMapping(
      std::string path, SafetensorsHeader header,
      std::shared_ptr<const MappedFile> map, uint64_t data_offset);

  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const {
    return header_.metadata;
  }
  // nullptr when absent.
  const TensorInfo* Find(absl::string_view name) const;
  // The tensor's bytes inside the read-only mapping. Never write through it.
  absl::Span<const uint8_t> Data(const TensorInfo& info) const;

 private:
  SafetensorsFile() = default;

  std::string path_;
  SafetensorsHeader header_;
  std::shared_ptr<const MappedFile> map_;
  const uint8_t* data_ = nullptr;  // Start of the data section.
};

// Collects tensors and writes them as one safetensors file. Tensor bytes are
// referenced, not copied: they must stay alive until Write() returns.
class SafetensorsWriter {
 public:
  // Fails on a duplicate name or a byte count that does not match the shape.
  absl::Status Add(std::string name, DType dtype, std::vector<int64_t> shape,
                   absl::Span<const uint8_t> data);
  void SetMetadata(std::string key, std::string value);
  // Writes to `path` atomically (temporary file + rename). The header is
  // padded with spaces so the data section starts 8-byte aligned.
  absl::Status Write(const std::string& path) const;

 private:
  struct Entry {
    TensorInfo info;
    absl::Span<const uint8_t> data;
  };
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_SAFETENSORS_H_
