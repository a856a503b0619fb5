// A whole file mapped read-only into memory. Model files (safetensors,
// GGUF) are read through a mapping so that pages of tensors nobody asks for
// are never read, and tensors can point into it without copies.
#ifndef EDGESPLIT_BASE_MAPPED_FILE_H_
#define EDGESPLIT_BASE_MAPPED_FILE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace edgesplit {

// Immutable after Open(), hence thread-safe. The mapping lives as long as
// the object: holders of pointers into data() keep the shared_ptr.
class MappedFile {
 public:
  // NOT_FOUND when the file cannot be opened; an empty file maps to
  // size() == 0 and data() == nullptr.
  static absl::StatusOr<std::shared_ptr<const MappedFile>> Open(
      const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace edgesplit

#endif  // EDGESPLIT_BASE_MAPPED_FILE_H_
