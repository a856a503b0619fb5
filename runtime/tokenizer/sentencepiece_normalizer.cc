#include "runtime/tokenizer/sentencepiece_normalizer.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "base/utf8.h"

namespace edgesplit {
namespace spm {
bool DecodeUtf8Char(absl::string_view text, size_t* length) {
  size_t pos = 0;
  char32_t cp;
  const bool ok = utf8::Decode(text, &pos, &cp);
  *length = ok ? pos : 1;
  return ok;
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
