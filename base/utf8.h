// UTF-8 decoding and encoding for the tokenizers and text streaming.
// Hand-written: Debian's only UTF-8 libraries are ICU (far too large for
// this) and absl's internal helpers; tested against the strict rules of the
// WHATWG decoder (what JavaScript's TextDecoder and the npm reference
// tokenizers apply) in utf8_test.cc.
#ifndef EDGESPLIT_BASE_UTF8_H_
#define EDGESPLIT_BASE_UTF8_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace edgesplit {
namespace utf8 {

// Decodes the code point at text[*pos] and advances *pos past it. Strict:
// false (and *pos unchanged) for a truncated sequence, an overlong form, a
// surrogate or a value past U+10FFFF. Requires *pos < text.size().
bool Decode(absl::string_view text, size_t* pos, char32_t* cp);

// Offset of the first byte that does not start a valid sequence, or npos
// when all of `text` is valid.
size_t FirstInvalid(absl::string_view text);

// Appends the encoding of `cp` (which must be a code point: <= U+10FFFF).
void Append(char32_t cp, std::string* out);

}  // namespace utf8
}  // namespace edgesplit

#endif  // EDGESPLIT_BASE_UTF8_H_
