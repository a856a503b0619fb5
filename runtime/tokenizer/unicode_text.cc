#include "runtime/tokenizer/unicode_text.h"

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/ustring.h>

#include <cstdint>

#include "base/utf8.h"

namespace edgesplit {
namespace unicode {
namespace {

const icu::Normalizer2* Instance(Form form) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n = nullptr;
  switch (form) {
    case Form::kNfc:
      n = icu::Normalizer2::getNFCInstance(status);
      break;
    case Form::kNfd:
      n = icu::Normalizer2::getNFDInstance(status);
      break;
    case Form::kNfkc:
      n = icu::Normalizer2::getNFKCInstance(status);
      break;
    case Form::kNfkd:
      n = icu::Normalizer2::getNFKDInstance(status);
      break;
  }
  // ICU's data is linked in (libicudata): failing here is a broken install.
  if (U_FAILURE(status) || n == nullptr) std::abort();
  return n;
}

bool AllAscii(absl::string_view text) {
  for (char c : text) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

// Length of the maximal prefix of text[pos..] that could start a valid
// sequence (at least 1): what one U+FFFD replaces.
size_t InvalidLength(absl::string_view text, size_t pos) {
  const auto b = [&](size_t j) { return static_cast<uint8_t>(text[j]); };
  const uint8_t b0 = b(pos);
  size_t need;
  uint8_t lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 1;
  }
  size_t len = 1;
  for (size_t k = 0; k < need && pos + len < text.size(); ++k) {
    const uint8_t c = b(pos + len);
    if (c < lo || c > hi) break;
    lo = 0x80, hi = 0xBF;
    ++len;
  }
  return len;
}

}  // namespace

std::string Normalize(Form form, absl::string_view text) {
  // ASCII is invariant under every form.
  if (AllAscii(text)) return std::string(text);
  UErrorCode status = U_ZERO_ERROR;
  const icu::UnicodeString in = icu::UnicodeString::fromUTF8(
      icu::StringPiece(text.data(), static_cast<int32_t>(text.size())));
  const icu::UnicodeString out = Instance(form)->normalize(in, status);
  if (U_FAILURE(status)) std::abort();  // Only on allocation failure.
  std::string result;
  out.toUTF8String(result);
  return result;
}

std::string Lowercase(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const auto byte = static_cast<unsigned char>(text[pos]);
    if (byte < 0x80) {
      out.push_back(byte >= 'A' && byte <= 'Z' ? byte + 32 : byte);
      ++pos;
      continue;
    }
    char32_t c;
    if (!utf8::Decode(text, &pos, &c)) {  // Callers pass valid UTF-8.
      out.push_back(text[pos++]);
      continue;
    }
    UChar src[2];
    int32_t src_len = 0;
    U16_APPEND_UNSAFE(src, src_len, c);
    UChar dst[8];
    UErrorCode status = U_ZERO_ERROR;
    const int32_t n = u_strToLower(dst, 8, src, src_len, "", &status);
    if (U_FAILURE(status)) {
      utf8::Append(c, &out);
      continue;
    }
    for (int32_t i = 0; i < n;) {
      UChar32 lc;
      U16_NEXT(dst, i, n, lc);
      utf8::Append(static_cast<char32_t>(lc), &out);
    }
  }
  return out;
}

bool IsWhitespace(char32_t c) {
  return u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_WHITE_SPACE);
}

bool IsNumeric(char32_t c) {
  switch (u_charType(static_cast<UChar32>(c))) {
    case U_DECIMAL_DIGIT_NUMBER:
    case U_LETTER_NUMBER:
    case U_OTHER_NUMBER:
      return true;
    default:
      return false;
  }
}

bool IsWordChar(char32_t c) {
  const auto cp = static_cast<UChar32>(c);
  if (u_hasBinaryProperty(cp, UCHAR_ALPHABETIC) ||
      u_hasBinaryProperty(cp, UCHAR_JOIN_CONTROL)) {
    return true;
  }
  switch (u_charType(cp)) {
    case U_NON_SPACING_MARK:
    case U_ENCLOSING_MARK:
    case U_COMBINING_SPACING_MARK:
    case U_DECIMAL_DIGIT_NUMBER:
    case U_CONNECTOR_PUNCTUATION:
      return true;
    default:
      return false;
  }
}

void AppendLossy(absl::string_view bytes, std::string* out) {
  size_t pos = 0;
  while (pos < bytes.size()) {
    const size_t start = pos;
    char32_t c;
    if (utf8::Decode(bytes, &pos, &c)) {
      out->append(bytes.data() + start, pos - start);
    } else {
      out->append("\xEF\xBF\xBD");
      pos += InvalidLength(bytes, pos);
    }
  }
}

}  // namespace unicode
}  // namespace edgesplit
