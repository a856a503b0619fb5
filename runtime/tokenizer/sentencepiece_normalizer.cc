#include "runtime/tokenizer/sentencepiece_normalizer.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/strip.h"

namespace edgesplit {
namespace spm {
namespace {

inline bool IsTrailByte(char c) {
  return (static_cast<unsigned char>(c) & 0xC0) == 0x80;
}

inline bool IsValidCodepoint(uint32_t c) {
  return c < 0xD800 || (c >= 0xE000 && c <= 0x10FFFF);
}

}  // namespace

bool DecodeUtf8Char(absl::string_view text, size_t* length) {
  const size_t len = text.size();
  const unsigned char b0 = static_cast<unsigned char>(text[0]);
  if (b0 < 0x80) {
    *length = 1;
    return true;
  }
  if (len >= 2 && (b0 & 0xE0) == 0xC0) {
    const uint32_t cp = ((b0 & 0x1Fu) << 6) | (text[1] & 0x3Fu);
    if (IsTrailByte(text[1]) && cp >= 0x80 && IsValidCodepoint(cp)) {
      *length = 2;
      return true;
    }
  } else if (len >= 3 && (b0 & 0xF0) == 0xE0) {
    const uint32_t cp =
        ((b0 & 0x0Fu) << 12) | ((text[1] & 0x3Fu) << 6) | (text[2] & 0x3Fu);
    if (IsTrailByte(text[1]) && IsTrailByte(text[2]) && cp >= 0x800 &&
        IsValidCodepoint(cp)) {
      *length = 3;
      return true;
    }
  } else if (len >= 4 && (b0 & 0xF8) == 0xF0) {
    const uint32_t cp = ((b0 & 0x07u) << 18) | ((text[1] & 0x3Fu) << 12) |
                        ((text[2] & 0x3Fu) << 6) | (text[3] & 0x3Fu);
    if (IsTrailByte(text[1]) && IsTrailByte(text[2]) && IsTrailByte(text[3]) &&
        cp >= 0x10000 && IsValidCodepoint(cp)) {
      *length = 4;
      return true;
    }
  }
  *length = 1;
  return false;
}

PrefixMatcher::PrefixMatcher(const std::vector<std::string>& symbols) {
  for (const std::string& s : symbols) {
    if (s.empty()) continue;
    symbols_.insert(s);
    if (std::find(lengths_.begin(), lengths_.end(), s.size()) ==
        lengths_.end()) {
      lengths_.push_back(s.size());
    }
  }
  std::sort(lengths_.rbegin(), lengths_.rend());
}

size_t PrefixMatcher::PrefixMatch(absl::string_view text, bool* found) const {
  for (size_t len : lengths_) {
    if (len <= text.size() && symbols_.contains(text.substr(0, len))) {
      *found = true;
      return len;
    }
  }
  *found = false;
  return std::min(text.size(), OneCharLen(text[0]));
}

Normalizer::Normalizer(const NormalizerSpec& spec, const PrefixMatcher* matcher)
    : add_dummy_prefix_(spec.add_dummy_prefix),
      remove_extra_whitespaces_(spec.remove_extra_whitespaces),
      escape_whitespaces_(spec.escape_whitespaces),
      matcher_(matcher != nullptr && !matcher->empty() ? matcher : nullptr) {}

absl::string_view Normalizer::NormalizePrefix(absl::string_view input,
                                              size_t* consumed) const {
  if (matcher_ != nullptr) {
    bool found = false;
    const size_t length = matcher_->PrefixMatch(input, &found);
    if (found) {
      *consumed = length;
      return input.substr(0, length);
    }
  }
  size_t length = 0;
  if (!DecodeUtf8Char(input, &length)) {
    *consumed = 1;
    return kReplacementChar;
  }
  *consumed = length;
  return input.substr(0, length);
}

std::string Normalizer::Normalize(absl::string_view input) const {
  std::string normalized;
  if (input.empty()) return normalized;

  // Leading whitespace goes when removing extra whitespace.
  if (remove_extra_whitespaces_) {
    while (!input.empty()) {
      size_t consumed = 0;
      if (NormalizePrefix(input, &consumed) != " ") break;
      input.remove_prefix(consumed);
    }
  }
  if (input.empty()) return normalized;

  normalized.reserve(input.size() * 3 / 2 + 4);
  const absl::string_view space = escape_whitespaces_ ? kSpaceSymbol : " ";
  if (add_dummy_prefix_) normalized.append(space.data(), space.size());

  bool is_prev_space = remove_extra_whitespaces_;
  while (!input.empty()) {
    size_t consumed = 0;
    absl::string_view sp;
    // ASCII without user-defined symbols is the hot path: one byte, always
    // valid, no replacement.
    if (matcher_ == nullptr && static_cast<unsigned char>(input[0]) < 0x80) {
      sp = input.substr(0, 1);
      consumed = 1;
    } else {
      sp = NormalizePrefix(input, &consumed);
    }
    // A unit that follows whitespace loses its leading spaces.
    while (is_prev_space && absl::ConsumePrefix(&sp, " ")) {
    }
    if (!sp.empty()) {
      for (char c : sp) {
        if (escape_whitespaces_ && c == ' ') {
          normalized.append(kSpaceSymbol.data(), kSpaceSymbol.size());
        } else {
          normalized.push_back(c);
        }
      }
      is_prev_space = absl::EndsWith(sp, " ");
    }
    input.remove_prefix(consumed);
    if (!remove_extra_whitespaces_) is_prev_space = false;
  }

  if (remove_extra_whitespaces_) {
    while (absl::EndsWith(normalized, space)) {
      normalized.resize(normalized.size() - space.size());
    }
  }
  return normalized;
}

}  // namespace spm
}  // namespace edgesplit
