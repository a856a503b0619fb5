// libFuzzer target for the model files a server or device opens: each
// input as a safetensors file (8-byte header length, JSON header, data) and
// as a GGUF file (scripts/fuzz.sh builds and runs it; seeds in
// fuzz/seeds/model_files_fuzz). Accepted files must describe tensors that
// lie inside the bytes given: every later read trusts that.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/string_view.h"
#include "runtime/gguf.h"
#include "runtime/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  if (size >= 8) {
    uint64_t header_len = 0;
    std::memcpy(&header_len, data, 8);  // Little-endian hosts only.
    if (header_len <= size - 8) {
      const uint64_t data_size = size - 8 - header_len;
      auto header = edgesplit::ParseSafetensorsHeader(
          bytes.substr(8, header_len), data_size, "fuzz.safetensors");
      if (header.ok()) {
        for (const edgesplit::TensorInfo& t : header->tensors) {
          if (t.begin > t.end || t.end > data_size) std::abort();
        }
      }
    }
  }
  auto gguf = edgesplit::GgufFile::ParseBytes(bytes, "fuzz.gguf");
  if (gguf.ok()) {
    const uint64_t data_size = size - (*gguf)->data_offset();
    if ((*gguf)->data_offset() > size) std::abort();
    for (const edgesplit::GgufTensor& t : (*gguf)->tensors()) {
      if (t.offset > data_size || t.nbytes > data_size - t.offset) {
        std::abort();
      }
    }
    (void)(*gguf)->String("general.architecture");
    (void)(*gguf)->Strings("tokenizer.ggml.tokens");
  }
  return 0;
}
