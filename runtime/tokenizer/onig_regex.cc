#include "runtime/tokenizer/onig_regex.h"

#include <oniguruma.h>

#include <mutex>

#include "absl/strings/str_cat.h"

namespace edgesplit {
namespace {

void InitializeOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    OnigEncoding encodings[] = {ONIG_ENCODING_UTF8};
    onig_initialize(encodings, 1);
    // Bounds one whole search (every start position), not only one match
    // attempt: a tokenizer.json pattern that backtracks badly fails instead
    // of running for hours. Generous for real pre-tokenizer patterns.
    onig_set_retry_limit_in_search(100'000'000);
  });
}

std::string ErrorText(int code, OnigErrorInfo* info) {
  OnigUChar buf[ONIG_MAX_ERROR_MESSAGE_LEN];
  if (info != nullptr) {
    onig_error_code_to_str(buf, code, info);
  } else {
    onig_error_code_to_str(buf, code);
  }
  return reinterpret_cast<const char*>(buf);
}

const OnigUChar* Bytes(absl::string_view s) {
  return reinterpret_cast<const OnigUChar*>(s.data());
}

// Length of the UTF-8 character starting at text[pos] (1 for a stray byte).
size_t CharLength(absl::string_view text, size_t pos) {
  const auto b = static_cast<unsigned char>(text[pos]);
  size_t len = b < 0x80 ? 1 : b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
  return len > text.size() - pos ? text.size() - pos : len;
}

}  // namespace

absl::StatusOr<std::unique_ptr<OnigPattern>> OnigPattern::Compile(
    absl::string_view pattern) {
  InitializeOnce();
  ::OnigRegex regex = nullptr;
  OnigErrorInfo info;
  const int rc = onig_new(&regex, Bytes(pattern),
                          Bytes(pattern) + pattern.size(), ONIG_OPTION_NONE,
                          ONIG_ENCODING_UTF8, ONIG_SYNTAX_DEFAULT, &info);
  if (rc != ONIG_NORMAL) {
    return absl::InvalidArgumentError(
        absl::StrCat("regular expression \"", pattern,
                     "\" does not compile: ", ErrorText(rc, &info)));
  }
  auto p = std::unique_ptr<OnigPattern>(new OnigPattern(regex));
  p->pattern_ = std::string(pattern);
  return p;
}

OnigPattern::~OnigPattern() { onig_free(static_cast<::OnigRegex>(regex_)); }

absl::StatusOr<std::vector<std::pair<size_t, size_t>>> OnigPattern::FindAll(
    absl::string_view text) const {
  auto* regex = static_cast<::OnigRegex>(regex_);
  std::unique_ptr<OnigRegion, void (*)(OnigRegion*)> region(
      onig_region_new(), [](OnigRegion* r) { onig_region_free(r, 1); });
  std::vector<std::pair<size_t, size_t>> matches;
  const OnigUChar* begin = Bytes(text);
  const OnigUChar* end = begin + text.size();
  size_t search_from = 0;
  bool have_last = false;
  size_t last_end = 0;
  while (search_from <= text.size()) {
    const int rc = onig_search(regex, begin, end, begin + search_from, end,
                               region.get(), ONIG_OPTION_NONE);
    if (rc == ONIG_MISMATCH) break;
    if (rc < 0) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "regular expression \"", pattern_, "\" failed on a text of ",
          text.size(), " bytes: ", ErrorText(rc, nullptr)));
    }
    const size_t s = region->beg[0];
    const size_t e = region->end[0];
    if (s == e && have_last && last_end == e) {
      // Rust's find_iter: no empty match right after the previous one.
      if (search_from >= text.size()) break;
      search_from += CharLength(text, search_from);
      continue;
    }
    matches.emplace_back(s, e);
    have_last = true;
    last_end = e;
    search_from = e;
    if (s == e && e >= text.size()) break;
  }
  return matches;
}

}  // namespace edgesplit
