// What a Hugging Face tokenizer.json does to text before its model: the
// "normalizer" and "pre_tokenizer" components, parsed from their JSON and
// applied with the Rust library's semantics (checked against it in
// hf_tokenizer_test.cc). Supported:
//   normalizers: Sequence, NFC, NFD, NFKC, NFKD, Lowercase, Strip, Prepend,
//                Replace (String or Regex pattern);
//   pre-tokenizers: Sequence, ByteLevel, Split (String or Regex, every
//                delimiter behavior, invert), Metaspace (prepend_scheme
//                always/first/never, split), Digits, Whitespace,
//                WhitespaceSplit.
// Any other type is refused by name when the file loads (BertNormalizer,
// Precompiled, Punctuation, ... belong to WordPiece/Unigram models, which
// edgesplit does not load).
#ifndef EDGESPLIT_RUNTIME_TOKENIZER_HF_PRETOKENIZE_H_
#define EDGESPLIT_RUNTIME_TOKENIZER_HF_PRETOKENIZE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace edgesplit {
namespace hf {

// A piece of the text on its way to the model. `at_start`: it begins where
// the input text begins (Metaspace's prepend_scheme "first" looks at that).
struct Piece {
  std::string text;
  bool at_start = false;
};

// Immutable after parsing; Normalize/PreTokenize are const and thread-safe.
class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual absl::Status Normalize(std::string* text) const = 0;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces `pieces` by their finer pieces; empty pieces are dropped.
  virtual absl::Status PreTokenize(std::vector<Piece>* pieces) const = 0;
};

// Parse the component at `field` (e.g. "normalizer") of tokenizer.json; a
// JSON null gives nullptr. INVALID_ARGUMENT names `source`, the field path
// and the value.
absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(
    const nlohmann::json& value, absl::string_view source,
    const std::string& field);
absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(
    const nlohmann::json& value, absl::string_view source,
    const std::string& field);

// Shared with the decoders: a "pattern" object {"String": s} or
// {"Regex": r}, compiled to a matcher that lists (begin, end, is_match)
// ranges covering `text`.
struct Range {
  size_t begin;
  size_t end;
  bool is_match;
};
class Pattern {
 public:
  virtual ~Pattern() = default;
  virtual absl::StatusOr<std::vector<Range>> Find(
      absl::string_view text) const = 0;
};
absl::StatusOr<std::unique_ptr<Pattern>> ParsePattern(
    const nlohmann::json& value, absl::string_view source,
    const std::string& field);

// Every match of `pattern` in `text` replaced by `content`.
absl::StatusOr<std::string> ReplaceAll(const Pattern& pattern,
                                       absl::string_view text,
                                       absl::string_view content);

}  // namespace hf
}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_TOKENIZER_HF_PRETOKENIZE_H_
