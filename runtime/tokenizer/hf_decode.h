// What a Hugging Face tokenizer.json does after its model: the
// "post_processor" (special tokens around an encoded text) and the "decoder"
// (tokens back to text), parsed from their JSON and applied with the Rust
// library's semantics (checked against it in hf_tokenizer_test.cc).
// Supported:
//   post-processors: Sequence, TemplateProcessing (single sequences),
//                    ByteLevel, BertProcessing, RobertaProcessing;
//   decoders: Sequence, ByteLevel, Metaspace, Replace, ByteFallback, Fuse,
//             Strip, BPEDecoder.
// Any other type is refused by name when the file loads.
#ifndef EDGESPLIT_RUNTIME_TOKENIZER_HF_DECODE_H_
#define EDGESPLIT_RUNTIME_TOKENIZER_HF_DECODE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace edgesplit {
namespace hf {

// Immutable after parsing; thread-safe.
class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // Adds the special tokens around one encoded sequence.
  virtual void AddSpecialTokens(std::vector<int32_t>* ids) const = 0;
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  // Rewrites the token strings; the text is their concatenation.
  virtual absl::Status DecodeChain(std::vector<std::string>* tokens) const = 0;
};

// JSON null gives nullptr. INVALID_ARGUMENT names `source`, the field path
// and the value.
absl::StatusOr<std::unique_ptr<PostProcessor>> ParsePostProcessor(
    const nlohmann::json& value, absl::string_view source,
    const std::string& field);
absl::StatusOr<std::unique_ptr<Decoder>> ParseDecoder(
    const nlohmann::json& value, absl::string_view source,
    const std::string& field);

}  // namespace hf
}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_TOKENIZER_HF_DECODE_H_
