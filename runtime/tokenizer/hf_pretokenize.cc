#include "runtime/tokenizer/hf_pretokenize.h"

#include <algorithm>
#include <functional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "base/json_util.h"
#include "base/status_macros.h"
#include "base/utf8.h"
#include "runtime/tokenizer/byte_level.h"
#include "runtime/tokenizer/hf_json.h"
#include "runtime/tokenizer/onig_regex.h"
#include "runtime/tokenizer/unicode_text.h"

namespace edgesplit {
namespace hf {
namespace {

using json = nlohmann::json;

// GPT-2's pre-tokenizer pattern, which ByteLevel applies when use_regex.
constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Calls f(begin, end, code point) for each character of valid UTF-8.
void ForEachChar(absl::string_view text,
                 const std::function<void(size_t, size_t, char32_t)>& f) {
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t begin = pos;
    char32_t c;
    if (!utf8::Decode(text, &pos, &c)) {  // Callers pass valid UTF-8.
      c = 0xFFFD;
      pos = begin + 1;
    }
    f(begin, pos, c);
  }
}

// Ranges covering `text` from a sorted list of non-overlapping matches.
std::vector<Range> Cover(
    absl::string_view text,
    const std::vector<std::pair<size_t, size_t>>& matches) {
  if (text.empty()) return {Range{0, 0, false}};
  std::vector<Range> out;
  size_t prev = 0;
  for (const auto& [b, e] : matches) {
    if (prev != b) out.push_back({prev, b, false});
    out.push_back({b, e, true});
    prev = e;
  }
  if (prev != text.size()) out.push_back({prev, text.size(), false});
  return out;
}

class LiteralPattern : public Pattern {
 public:
  explicit LiteralPattern(std::string s) : s_(std::move(s)) {}
  absl::StatusOr<std::vector<Range>> Find(
      absl::string_view text) const override {
    std::vector<std::pair<size_t, size_t>> matches;
    for (size_t p = text.find(s_); p != absl::string_view::npos;
         p = text.find(s_, p + s_.size())) {
      matches.emplace_back(p, p + s_.size());
    }
    return Cover(text, matches);
  }

 private:
  std::string s_;
};

class RegexPattern : public Pattern {
 public:
  explicit RegexPattern(std::unique_ptr<OnigPattern> re) : re_(std::move(re)) {}
  absl::StatusOr<std::vector<Range>> Find(
      absl::string_view text) const override {
    if (text.empty()) return std::vector<Range>{Range{0, 0, false}};
    ES_ASSIGN_OR_RETURN(auto matches, re_->FindAll(text));
    return Cover(text, matches);
  }

 private:
  std::unique_ptr<OnigPattern> re_;
};

// Each character for which `is_match` holds is a match of its own.
std::vector<Range> CharMatches(absl::string_view text,
                               bool (*is_match)(char32_t)) {
  std::vector<std::pair<size_t, size_t>> matches;
  ForEachChar(text, [&](size_t b, size_t e, char32_t c) {
    if (is_match(c)) matches.emplace_back(b, e);
  });
  return Cover(text, matches);
}

enum class Behavior {
  kRemoved,
  kIsolated,
  kMergedWithPrevious,
  kMergedWithNext,
  kContiguous
};

absl::StatusOr<Behavior> ParseBehavior(const JsonObject& o) {
  ES_ASSIGN_OR_RETURN(std::string b, o.String("behavior"));
  if (b == "Removed") return Behavior::kRemoved;
  if (b == "Isolated") return Behavior::kIsolated;
  if (b == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::kMergedWithNext;
  if (b == "Contiguous") return Behavior::kContiguous;
  return o.Error("behavior", absl::StrCat("unknown behavior \"", b,
                                          "\" (expected Removed, Isolated, "
                                          "MergedWithPrevious, MergedWithNext "
                                          "or Contiguous)"));
}

// Splits `piece` at `ranges` (which cover it) as `behavior` says, appending
// the non-empty results to `out`.
void SplitPiece(const Piece& piece, std::vector<Range> ranges,
                Behavior behavior, std::vector<Piece>* out) {
  // (begin, end, remove)
  std::vector<Range> splits;
  bool previous_match = false;
  switch (behavior) {
    case Behavior::kIsolated:
      for (Range r : ranges) splits.push_back({r.begin, r.end, false});
      break;
    case Behavior::kRemoved:
      splits = ranges;
      break;
    case Behavior::kContiguous:
      for (const Range& r : ranges) {
        if (r.is_match == previous_match && !splits.empty()) {
          splits.back().end = r.end;
        } else {
          splits.push_back({r.begin, r.end, false});
        }
        previous_match = r.is_match;
      }
      break;
    case Behavior::kMergedWithPrevious:
      for (const Range& r : ranges) {
        if (r.is_match && !previous_match && !splits.empty()) {
          splits.back().end = r.end;
        } else {
          splits.push_back({r.begin, r.end, false});
        }
        previous_match = r.is_match;
      }
      break;
    case Behavior::kMergedWithNext:
      for (auto it = ranges.rbegin(); it != ranges.rend(); ++it) {
        if (it->is_match && !previous_match && !splits.empty()) {
          splits.back().begin = it->begin;
        } else {
          splits.push_back({it->begin, it->end, false});
        }
        previous_match = it->is_match;
      }
      std::reverse(splits.begin(), splits.end());
      break;
  }
  for (const Range& s : splits) {
    if (s.is_match /* remove */ || s.begin == s.end) continue;
    out->push_back(Piece{piece.text.substr(s.begin, s.end - s.begin),
                         piece.at_start && s.begin == 0});
  }
}

// Applies `split` to every piece.
absl::Status SplitAll(
    std::vector<Piece>* pieces,
    const std::function<absl::Status(const Piece&, std::vector<Piece>*)>&
        split) {
  std::vector<Piece> out;
  out.reserve(pieces->size());
  for (const Piece& p : *pieces) ES_RETURN_IF_ERROR(split(p, &out));
  *pieces = std::move(out);
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Normalizers.

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts)
      : parts_(std::move(parts)) {}
  absl::Status Normalize(std::string* text) const override {
    for (const auto& p : parts_) ES_RETURN_IF_ERROR(p->Normalize(text));
    return absl::OkStatus();
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(unicode::Form form) : form_(form) {}
  absl::Status Normalize(std::string* text) const override {
    *text = unicode::Normalize(form_, *text);
    return absl::OkStatus();
  }

 private:
  unicode::Form form_;
};

class LowercaseNormalizer : public Normalizer {
 public:
  absl::Status Normalize(std::string* text) const override {
    *text = unicode::Lowercase(*text);
    return absl::OkStatus();
  }
};

class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  absl::Status Normalize(std::string* text) const override {
    // [first, last): from the first to past the last non-space character.
    size_t first = text->size(), last = 0;
    ForEachChar(*text, [&](size_t b, size_t e, char32_t c) {
      if (unicode::IsWhitespace(c)) return;
      if (first == text->size()) first = b;
      last = e;
    });
    const size_t begin = left_ ? first : 0;
    const size_t end = right_ ? last : text->size();
    *text = begin < end ? text->substr(begin, end - begin) : std::string();
    return absl::OkStatus();
  }

 private:
  bool left_, right_;
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  absl::Status Normalize(std::string* text) const override {
    if (!text->empty()) text->insert(0, prefix_);
    return absl::OkStatus();
  }

 private:
  std::string prefix_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(std::unique_ptr<Pattern> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  absl::Status Normalize(std::string* text) const override {
    ES_ASSIGN_OR_RETURN(*text, ReplaceAll(*pattern_, *text, content_));
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<Pattern> pattern_;
  std::string content_;
};

// ---------------------------------------------------------------------------
// Pre-tokenizers.

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(
      std::vector<std::unique_ptr<PreTokenizer>> parts)
      : parts_(std::move(parts)) {}
  absl::Status PreTokenize(std::vector<Piece>* pieces) const override {
    for (const auto& p : parts_) ES_RETURN_IF_ERROR(p->PreTokenize(pieces));
    return absl::OkStatus();
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<Pattern> split)
      : add_prefix_space_(add_prefix_space), split_(std::move(split)) {}
  absl::Status PreTokenize(std::vector<Piece>* pieces) const override {
    ES_RETURN_IF_ERROR(SplitAll(pieces, [&](const Piece& p,
                                            std::vector<Piece>* out) {
      Piece piece = p;
      if (add_prefix_space_ && (piece.text.empty() || piece.text[0] != ' ')) {
        piece.text.insert(0, " ");
      }
      if (split_ == nullptr) {
        if (!piece.text.empty()) out->push_back(std::move(piece));
        return absl::OkStatus();
      }
      ES_ASSIGN_OR_RETURN(std::vector<Range> ranges, split_->Find(piece.text));
      SplitPiece(piece, std::move(ranges), Behavior::kIsolated, out);
      return absl::OkStatus();
    }));
    const ByteMap& map = GetByteMap();
    for (Piece& p : *pieces) {
      std::string mapped;
      mapped.reserve(p.text.size() * 2);
      for (char c : p.text) {
        utf8::Append(map.byte_to_cp[static_cast<unsigned char>(c)], &mapped);
      }
      p.text = std::move(mapped);
    }
    return absl::OkStatus();
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Pattern> split_;  // nullptr: use_regex false.
};

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<Pattern> pattern, Behavior behavior,
                    bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  absl::Status PreTokenize(std::vector<Piece>* pieces) const override {
    return SplitAll(pieces, [&](const Piece& p, std::vector<Piece>* out) {
      ES_ASSIGN_OR_RETURN(std::vector<Range> ranges, pattern_->Find(p.text));
      if (invert_) {
        for (Range& r : ranges) r.is_match = !r.is_match;
      }
      SplitPiece(p, std::move(ranges), behavior_, out);
      return absl::OkStatus();
    });
  }

 private:
  std::unique_ptr<Pattern> pattern_;
  Behavior behavior_;
  bool invert_;
};

enum class PrependScheme { kAlways, kFirst, kNever };

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme,
                        bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}
  absl::Status PreTokenize(std::vector<Piece>* pieces) const override {
    LiteralPattern at_replacement(replacement_);
    return SplitAll(pieces, [&](const Piece& p, std::vector<Piece>* out) {
      Piece piece{absl::StrReplaceAll(p.text, {{" ", replacement_}}),
                  p.at_start};
      const bool starts = absl::StartsWith(piece.text, replacement_);
      if (!starts && (scheme_ == PrependScheme::kAlways ||
                      (scheme_ == PrependScheme::kFirst && p.at_start))) {
        piece.text.insert(0, replacement_);
      }
      if (!split_) {
        if (!piece.text.empty()) out->push_back(std::move(piece));
        return absl::OkStatus();
      }
      ES_ASSIGN_OR_RETURN(std::vector<Range> ranges,
                          at_replacement.Find(piece.text));
      SplitPiece(piece, std::move(ranges), Behavior::kMergedWithNext, out);
      return absl::OkStatus();
    });
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

// Splits at characters of a class (Digits, WhitespaceSplit).
class CharClassPreTokenizer : public PreTokenizer {
 public:
  CharClassPreTokenizer(bool (*is_match)(char32_t), Behavior behavior)
      : is_match_(is_match), behavior_(behavior) {}
  absl::Status PreTokenize(std::vector<Piece>* pieces) const override {
    return SplitAll(pieces, [&](const Piece& p, std::vector<Piece>* out) {
      SplitPiece(p, CharMatches(p.text, is_match_), behavior_, out);
      return absl::OkStatus();
    });
  }

 private:
  bool (*is_match_)(char32_t);
  Behavior behavior_;
};

// Whitespace: the library keeps the matches of \w+|[^\w\s]+ and drops the
// rest, i.e. maximal runs of word characters and of other non-space ones.
class WhitespacePreTokenizer : public PreTokenizer {
 public:
  absl::Status PreTokenize(std::vector<Piece>* pieces) const override {
    return SplitAll(pieces, [&](const Piece& p, std::vector<Piece>* out) {
      int run = -1;  // 0: word run, 1: other run, -1: none.
      size_t run_begin = 0;
      auto flush = [&](size_t end) {
        if (run >= 0 && end > run_begin) {
          out->push_back(Piece{p.text.substr(run_begin, end - run_begin),
                               p.at_start && run_begin == 0});
        }
      };
      ForEachChar(p.text, [&](size_t b, size_t, char32_t c) {
        const int kind = unicode::IsWordChar(c)     ? 0
                         : unicode::IsWhitespace(c) ? -1
                                                    : 1;
        if (kind != run) {
          flush(b);
          run = kind;
          run_begin = b;
        }
      });
      flush(p.text.size());
      return absl::OkStatus();
    });
  }
};

// ---------------------------------------------------------------------------
// Parsing.

absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizerObject(
    const JsonObject& o) {
  ES_ASSIGN_OR_RETURN(std::string type, o.Type());
  if (type == "Sequence") {
    ES_ASSIGN_OR_RETURN(
        auto list, ParseList<Normalizer>(o, "normalizers", ParseNormalizer));
    return std::make_unique<SequenceNormalizer>(std::move(list));
  }
  if (type == "NFC")
    return std::make_unique<UnicodeNormalizer>(unicode::Form::kNfc);
  if (type == "NFD")
    return std::make_unique<UnicodeNormalizer>(unicode::Form::kNfd);
  if (type == "NFKC") {
    return std::make_unique<UnicodeNormalizer>(unicode::Form::kNfkc);
  }
  if (type == "NFKD") {
    return std::make_unique<UnicodeNormalizer>(unicode::Form::kNfkd);
  }
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "Strip") {
    ES_ASSIGN_OR_RETURN(bool left, o.OptionalBool("strip_left", true));
    ES_ASSIGN_OR_RETURN(bool right, o.OptionalBool("strip_right", true));
    return std::make_unique<StripNormalizer>(left, right);
  }
  if (type == "Prepend") {
    ES_ASSIGN_OR_RETURN(std::string prepend, o.String("prepend"));
    return std::make_unique<PrependNormalizer>(std::move(prepend));
  }
  if (type == "Replace") {
    const json* pattern = o.Find("pattern");
    ES_ASSIGN_OR_RETURN(auto p,
                        ParsePattern(pattern ? *pattern : json(), o.source(),
                                     o.FieldPath("pattern")));
    ES_ASSIGN_OR_RETURN(std::string content, o.String("content"));
    return std::make_unique<ReplaceNormalizer>(std::move(p),
                                               std::move(content));
  }
  return o.Error("type",
                 absl::StrCat("normalizer \"", type,
                              "\" is not supported (supported: Sequence, NFC, "
                              "NFD, NFKC, NFKD, Lowercase, Strip, Prepend, "
                              "Replace)"));
}

absl::StatusOr<PrependScheme> ParsePrependScheme(const JsonObject& o) {
  ES_ASSIGN_OR_RETURN(bool add_prefix_space,
                      o.OptionalBool("add_prefix_space", true));
  const json* scheme = o.Find("prepend_scheme");
  if (scheme == nullptr || scheme->is_null()) {
    // Files from before prepend_scheme: add_prefix_space alone.
    return add_prefix_space ? PrependScheme::kAlways : PrependScheme::kNever;
  }
  ES_ASSIGN_OR_RETURN(std::string s, o.String("prepend_scheme"));
  PrependScheme result;
  if (s == "always") {
    result = PrependScheme::kAlways;
  } else if (s == "first") {
    result = PrependScheme::kFirst;
  } else if (s == "never") {
    result = PrependScheme::kNever;
  } else {
    return o.Error("prepend_scheme",
                   absl::StrCat("unknown scheme \"", s,
                                "\" (expected always, first or never)"));
  }
  if (!add_prefix_space && result != PrependScheme::kNever) {
    return o.Error("add_prefix_space",
                   "false contradicts prepend_scheme \"" + s + "\"");
  }
  return result;
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizerObject(
    const JsonObject& o) {
  ES_ASSIGN_OR_RETURN(std::string type, o.Type());
  if (type == "Sequence") {
    ES_ASSIGN_OR_RETURN(auto list, ParseList<PreTokenizer>(o, "pretokenizers",
                                                           ParsePreTokenizer));
    return std::make_unique<SequencePreTokenizer>(std::move(list));
  }
  if (type == "ByteLevel") {
    ES_ASSIGN_OR_RETURN(bool add_prefix_space,
                        o.OptionalBool("add_prefix_space", true));
    ES_ASSIGN_OR_RETURN(bool use_regex, o.OptionalBool("use_regex", true));
    std::unique_ptr<Pattern> split;
    if (use_regex) {
      ES_ASSIGN_OR_RETURN(auto re, OnigPattern::Compile(kGpt2Pattern));
      split = std::make_unique<RegexPattern>(std::move(re));
    }
    return std::make_unique<ByteLevelPreTokenizer>(add_prefix_space,
                                                   std::move(split));
  }
  if (type == "Split") {
    const json* pattern = o.Find("pattern");
    ES_ASSIGN_OR_RETURN(auto p,
                        ParsePattern(pattern ? *pattern : json(), o.source(),
                                     o.FieldPath("pattern")));
    ES_ASSIGN_OR_RETURN(Behavior behavior, ParseBehavior(o));
    ES_ASSIGN_OR_RETURN(bool invert, o.OptionalBool("invert", false));
    return std::make_unique<SplitPreTokenizer>(std::move(p), behavior, invert);
  }
  if (type == "Metaspace") {
    ES_ASSIGN_OR_RETURN(std::string replacement, o.String("replacement"));
    size_t end = 0;
    char32_t c;
    if (replacement.empty() || !utf8::Decode(replacement, &end, &c) ||
        end != replacement.size()) {
      return o.Error("replacement",
                     "expected one character, got \"" + replacement + "\"");
    }
    ES_ASSIGN_OR_RETURN(PrependScheme scheme, ParsePrependScheme(o));
    ES_ASSIGN_OR_RETURN(bool split, o.OptionalBool("split", true));
    return std::make_unique<MetaspacePreTokenizer>(std::move(replacement),
                                                   scheme, split);
  }
  if (type == "Digits") {
    ES_ASSIGN_OR_RETURN(bool individual,
                        o.OptionalBool("individual_digits", false));
    return std::make_unique<CharClassPreTokenizer>(
        unicode::IsNumeric,
        individual ? Behavior::kIsolated : Behavior::kContiguous);
  }
  if (type == "WhitespaceSplit") {
    return std::make_unique<CharClassPreTokenizer>(unicode::IsWhitespace,
                                                   Behavior::kRemoved);
  }
  if (type == "Whitespace") return std::make_unique<WhitespacePreTokenizer>();
  return o.Error(
      "type", absl::StrCat("pre-tokenizer \"", type,
                           "\" is not supported (supported: Sequence, "
                           "ByteLevel, Split, Metaspace, Digits, Whitespace, "
                           "WhitespaceSplit)"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Pattern>> ParsePattern(
    const json& value, absl::string_view source, const std::string& field) {
  JsonObject o(value, source, field);
  if (value.is_object() && value.size() == 1) {
    if (value.contains("String")) {
      ES_ASSIGN_OR_RETURN(std::string s, o.String("String"));
      if (s.empty())
        return o.Error("String", "an empty pattern matches nothing");
      return std::make_unique<LiteralPattern>(std::move(s));
    }
    if (value.contains("Regex")) {
      ES_ASSIGN_OR_RETURN(std::string r, o.String("Regex"));
      auto re = OnigPattern::Compile(r);
      if (!re.ok()) return o.Error("Regex", re.status().message());
      return std::make_unique<RegexPattern>(*std::move(re));
    }
  }
  return o.Error("", absl::StrCat("expected {\"String\": ...} or {\"Regex\": "
                                  "...}, got ",
                                  DescribeJson(value)));
}

absl::StatusOr<std::string> ReplaceAll(const Pattern& pattern,
                                       absl::string_view text,
                                       absl::string_view content) {
  ES_ASSIGN_OR_RETURN(std::vector<Range> ranges, pattern.Find(text));
  std::string out;
  out.reserve(text.size());
  for (const Range& r : ranges) {
    if (r.is_match) {
      out.append(content.data(), content.size());
    } else {
      out.append(text.data() + r.begin, r.end - r.begin);
    }
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(
    const json& value, absl::string_view source, const std::string& field) {
  if (value.is_null()) return std::unique_ptr<Normalizer>();
  return ParseNormalizerObject(JsonObject(value, source, field));
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(
    const json& value, absl::string_view source, const std::string& field) {
  if (value.is_null()) return std::unique_ptr<PreTokenizer>();
  return ParsePreTokenizerObject(JsonObject(value, source, field));
}

}  // namespace hf
}  // namespace edgesplit
