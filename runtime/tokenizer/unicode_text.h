// Unicode text operations for Hugging Face tokenizer.json pipelines, with
// the semantics of the Rust library they come from: normalization forms,
// per-character lowercasing, and the character classes its pre-tokenizers
// and added tokens test. Backed by ICU (Debian libicu): normalization and
// character properties need the Unicode tables, which nothing smaller in
// Debian carries completely (utf8proc lacks full case mapping and the
// Alphabetic property).
//
// All functions take valid UTF-8 (callers check with utf8::FirstInvalid)
// and are thread-safe.
#ifndef EDGESPLIT_RUNTIME_TOKENIZER_UNICODE_TEXT_H_
#define EDGESPLIT_RUNTIME_TOKENIZER_UNICODE_TEXT_H_

#include <string>

#include "absl/strings/string_view.h"

namespace edgesplit {
namespace unicode {

enum class Form { kNfc, kNfd, kNfkc, kNfkd };

// `text` in normalization form `form`.
std::string Normalize(Form form, absl::string_view text);

// Each character replaced by its full lowercase mapping on its own, as
// Rust's char::to_lowercase does (no context: a final capital sigma becomes
// U+03C3, not U+03C2).
std::string Lowercase(absl::string_view text);

// Rust's char::is_whitespace: the White_Space property.
bool IsWhitespace(char32_t c);
// Rust's char::is_numeric: general category Nd, Nl or No.
bool IsNumeric(char32_t c);
// A word character as Rust's regex \w defines it (UTS #18): Alphabetic,
// marks, decimal digits, connector punctuation, Join_Control.
bool IsWordChar(char32_t c);

// Appends `bytes` as UTF-8, each maximal invalid subsequence replaced by one
// U+FFFD (Rust's String::from_utf8_lossy, the WHATWG decoder's rule).
void AppendLossy(absl::string_view bytes, std::string* out);

}  // namespace unicode
}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_TOKENIZER_UNICODE_TEXT_H_
