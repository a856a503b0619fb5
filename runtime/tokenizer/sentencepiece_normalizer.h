// SentencePiece text normalization with identity rules (no precompiled
// charsmap), byte for byte as libsentencepiece 0.1.97's
// normalizer::Normalizer, and the UTF-8 helpers its encoder and decoder
// share. Internal to the SentencePiece tokenizer and trainer.
#ifndef EDGESPLIT_RUNTIME_TOKENIZER_SENTENCEPIECE_NORMALIZER_H_
#define EDGESPLIT_RUNTIME_TOKENIZER_SENTENCEPIECE_NORMALIZER_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"
#include "runtime/tokenizer/sentencepiece_model.h"

namespace edgesplit {
namespace spm {

// U+2581 LOWER ONE EIGHTH BLOCK, which stands for ' ' inside pieces.
inline constexpr absl::string_view kSpaceSymbol = "\xE2\x96\x81";
// U+FFFD REPLACEMENT CHARACTER.
inline constexpr absl::string_view kReplacementChar = "\xEF\xBF\xBD";

// Byte length of the UTF-8 sequence that `lead` starts, from its high four
// bits alone (1 for stray continuation bytes), as sentencepiece's
// string_util::OneCharLen.
inline size_t OneCharLen(char lead) {
  return "\1\1\1\1\1\1\1\1\1\1\1\1\2\2\3\4"[static_cast<unsigned char>(lead) >>
                                            4];
}

// Decodes the first character of non-empty `text`. Returns whether it is
// well-formed UTF-8 (shortest form, no surrogates, <= U+10FFFF) and sets
// `*length` to its byte length, or to 1 when malformed. Same acceptance as
// sentencepiece's string_util::IsValidDecodeUTF8.
bool DecodeUtf8Char(absl::string_view text, size_t* length);

// Longest-prefix matcher over the USER_DEFINED pieces, which libsentencepiece
// keeps whole in both normalization and segmentation.
class PrefixMatcher {
 public:
  PrefixMatcher() = default;
  explicit PrefixMatcher(const std::vector<std::string>& symbols);

  // Length of the longest symbol that starts `text` (`*found` = true);
  // otherwise OneCharLen of its first byte clipped to its size. `text` must
  // not be empty.
  size_t PrefixMatch(absl::string_view text, bool* found) const;
  bool empty() const { return symbols_.empty(); }

 private:
  absl::flat_hash_set<std::string> symbols_;
  std::vector<size_t> lengths_;  // Distinct symbol lengths, longest first.
};

class Normalizer {
 public:
  // `matcher` may be null or empty (no user-defined symbols); it must
  // outlive the normalizer. spec.precompiled_charsmap must be empty.
  Normalizer(const NormalizerSpec& spec, const PrefixMatcher* matcher);

  // Returns the normalized text: invalid UTF-8 bytes become U+FFFD one byte
  // at a time, extra whitespace is removed when the spec says so, a dummy
  // prefix is added, and ' ' becomes U+2581 when escaping whitespace.
  std::string Normalize(absl::string_view input) const;

 private:
  // One normalization unit of non-empty `input`: its replacement text and
  // the number of input bytes it consumes.
  absl::string_view NormalizePrefix(absl::string_view input,
                                    size_t* consumed) const;

  bool add_dummy_prefix_;
  bool remove_extra_whitespaces_;
  bool escape_whitespaces_;
  const PrefixMatcher* matcher_;
};

}  // namespace spm
}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_TOKENIZER_SENTENCEPIECE_NORMALIZER_H_
