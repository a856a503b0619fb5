// Regular expressions as Hugging Face tokenizers run them: Oniguruma (Debian
// libonig), the engine the Rust `tokenizers` library uses for the regexes in
// tokenizer.json, so patterns with look-around (`\s+(?!\S)`), `\p{L}` and
// inline flags (`(?i:...)`) match exactly as they do there. RE2 cannot: it
// has no look-around.
#ifndef EDGESPLIT_RUNTIME_TOKENIZER_ONIG_REGEX_H_
#define EDGESPLIT_RUNTIME_TOKENIZER_ONIG_REGEX_H_

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace edgesplit {

// A compiled UTF-8 pattern (Oniguruma's default syntax, no options).
// Immutable after Compile; Find* are const and safe from many threads.
class OnigPattern {
 public:
  // INVALID_ARGUMENT with Oniguruma's message for a pattern it rejects.
  static absl::StatusOr<std::unique_ptr<OnigPattern>> Compile(
      absl::string_view pattern);
  ~OnigPattern();
  OnigPattern(const OnigPattern&) = delete;
  OnigPattern& operator=(const OnigPattern&) = delete;

  // Byte ranges [begin, end) of the successive non-overlapping matches in
  // `text`, which must be valid UTF-8, searched left to right as Rust's
  // onig::Regex::find_iter does: an empty match right where the previous
  // match ended is skipped (the search moves on one character). Searching is
  // bounded by Oniguruma's retry limit; a pattern that exceeds it on `text`
  // returns RESOURCE_EXHAUSTED rather than running on.
  absl::StatusOr<std::vector<std::pair<size_t, size_t>>> FindAll(
      absl::string_view text) const;

 private:
  explicit OnigPattern(void* regex) : regex_(regex) {}
  void* regex_;          // regex_t*, owned.
  std::string pattern_;  // For errors.
};

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_TOKENIZER_ONIG_REGEX_H_
