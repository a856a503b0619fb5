#include "runtime/tokenizer/hf_decode.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "base/json_util.h"
#include "base/status_macros.h"
#include "base/utf8.h"
#include "runtime/tokenizer/byte_level.h"
#include "runtime/tokenizer/hf_json.h"
#include "runtime/tokenizer/hf_pretokenize.h"
#include "runtime/tokenizer/unicode_text.h"

namespace edgesplit {
namespace hf {
namespace {

using json = nlohmann::json;

constexpr int64_t kMaxId = (int64_t{1} << 31) - 1;

// ---------------------------------------------------------------------------
// Post-processors.

class SequenceProcessor : public PostProcessor {
 public:
  explicit SequenceProcessor(std::vector<std::unique_ptr<PostProcessor>> parts)
      : parts_(std::move(parts)) {}
  void AddSpecialTokens(std::vector<int32_t>* ids) const override {
    for (const auto& p : parts_) p->AddSpecialTokens(ids);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> parts_;
};

// The sequence's ids with `before` and `after` around them: what
// TemplateProcessing, BertProcessing and RobertaProcessing do to one
// sequence.
class SurroundProcessor : public PostProcessor {
 public:
  SurroundProcessor(std::vector<int32_t> before, std::vector<int32_t> after)
      : before_(std::move(before)), after_(std::move(after)) {}
  void AddSpecialTokens(std::vector<int32_t>* ids) const override {
    ids->insert(ids->begin(), before_.begin(), before_.end());
    ids->insert(ids->end(), after_.begin(), after_.end());
  }

 private:
  std::vector<int32_t> before_, after_;
};

class NoOpProcessor : public PostProcessor {
 public:
  void AddSpecialTokens(std::vector<int32_t>*) const override {}
};

// ["token", id] as BertProcessing and RobertaProcessing write them.
absl::StatusOr<int32_t> TokenPairId(const JsonObject& o, const char* field) {
  const json* v = o.Find(field);
  if (v == nullptr || !v->is_array() || v->size() != 2 ||
      !(*v)[0].is_string() || !(*v)[1].is_number_integer() ||
      (*v)[1].get<int64_t>() < 0 || (*v)[1].get<int64_t>() > kMaxId) {
    return o.Error(field, absl::StrCat("expected [\"token\", id], got ",
                                       v ? DescribeJson(*v) : "nothing"));
  }
  return static_cast<int32_t>((*v)[1].get<int64_t>());
}

absl::StatusOr<std::unique_ptr<PostProcessor>> ParseTemplate(
    const JsonObject& o) {
  ES_ASSIGN_OR_RETURN(const json* single, o.Array("single"));
  const json* specials = o.Find("special_tokens");
  if (specials != nullptr && !specials->is_null() && !specials->is_object()) {
    return o.Error("special_tokens", "expected an object");
  }
  std::vector<int32_t> before, after;
  bool seen_sequence = false;
  for (size_t i = 0; i < single->size(); ++i) {
    const json& piece = (*single)[i];
    const std::string field = absl::StrCat("single[", i, "]");
    JsonObject p(piece, o.source(), o.FieldPath(field));
    if (piece.is_object() && piece.contains("Sequence")) {
      JsonObject seq(piece["Sequence"], o.source(), p.FieldPath("Sequence"));
      ES_ASSIGN_OR_RETURN(std::string id, seq.String("id"));
      if (id != "A" || seen_sequence) {
        return seq.Error("id", "a single-sequence template holds \"A\" once");
      }
      seen_sequence = true;
      continue;
    }
    if (!piece.is_object() || !piece.contains("SpecialToken")) {
      return p.Error("", absl::StrCat("expected {\"SpecialToken\": ...} or "
                                      "{\"Sequence\": ...}, got ",
                                      DescribeJson(piece)));
    }
    JsonObject special(piece["SpecialToken"], o.source(),
                       p.FieldPath("SpecialToken"));
    ES_ASSIGN_OR_RETURN(std::string name, special.String("id"));
    if (specials == nullptr || !specials->is_object() ||
        !specials->contains(name)) {
      return special.Error("id",
                           "\"" + name + "\" is missing from special_tokens");
    }
    JsonObject entry((*specials)[name], o.source(),
                     o.FieldPath("special_tokens." + name));
    ES_ASSIGN_OR_RETURN(const json* ids, entry.Array("ids"));
    for (const json& id : *ids) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
          id.get<int64_t>() > kMaxId) {
        return entry.Error(
            "ids", absl::StrCat("expected ids, got ", DescribeJson(*ids)));
      }
      (seen_sequence ? after : before)
          .push_back(static_cast<int32_t>(id.get<int64_t>()));
    }
  }
  if (!seen_sequence) {
    return o.Error("single",
                   "the template has no {\"Sequence\": {\"id\": \"A\"}}");
  }
  return std::make_unique<SurroundProcessor>(std::move(before),
                                             std::move(after));
}

absl::StatusOr<std::unique_ptr<PostProcessor>> ParsePostProcessorObject(
    const JsonObject& o) {
  ES_ASSIGN_OR_RETURN(std::string type, o.Type());
  if (type == "Sequence") {
    ES_ASSIGN_OR_RETURN(auto list, ParseList<PostProcessor>(
                                       o, "processors", ParsePostProcessor));
    return std::make_unique<SequenceProcessor>(std::move(list));
  }
  if (type == "TemplateProcessing") return ParseTemplate(o);
  if (type == "ByteLevel") return std::make_unique<NoOpProcessor>();
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    ES_ASSIGN_OR_RETURN(int32_t cls, TokenPairId(o, "cls"));
    ES_ASSIGN_OR_RETURN(int32_t sep, TokenPairId(o, "sep"));
    return std::make_unique<SurroundProcessor>(std::vector<int32_t>{cls},
                                               std::vector<int32_t>{sep});
  }
  return o.Error("type",
                 absl::StrCat("post-processor \"", type,
                              "\" is not supported (supported: Sequence, "
                              "TemplateProcessing, ByteLevel, BertProcessing, "
                              "RobertaProcessing)"));
}

// ---------------------------------------------------------------------------
// Decoders.

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts)
      : parts_(std::move(parts)) {}
  absl::Status DecodeChain(std::vector<std::string>* tokens) const override {
    for (const auto& p : parts_) ES_RETURN_IF_ERROR(p->DecodeChain(tokens));
    return absl::OkStatus();
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

// Byte-level spelling back to bytes; a token with a character outside the
// byte map (an added token) stays as its own UTF-8. One string results.
class ByteLevelDecoder : public Decoder {
 public:
  absl::Status DecodeChain(std::vector<std::string>* tokens) const override {
    const ByteMap& map = GetByteMap();
    std::string bytes;
    for (const std::string& t : *tokens) {
      std::string raw;
      bool all_mapped = true;
      size_t pos = 0;
      while (pos < t.size() && all_mapped) {
        char32_t c;
        if (!utf8::Decode(t, &pos, &c) || c >= ByteMap::kCpLimit ||
            map.cp_to_byte[c] < 0) {
          all_mapped = false;
        } else {
          raw.push_back(static_cast<char>(map.cp_to_byte[c]));
        }
      }
      bytes += all_mapped ? raw : t;
    }
    std::string text;
    unicode::AppendLossy(bytes, &text);
    *tokens = {std::move(text)};
    return absl::OkStatus();
  }
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool strip_first)
      : replacement_(std::move(replacement)), strip_first_(strip_first) {}
  absl::Status DecodeChain(std::vector<std::string>* tokens) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      // The library drops every replacement character of the first token
      // (not only a leading one) unless the scheme is "never".
      (*tokens)[i] = absl::StrReplaceAll(
          (*tokens)[i], {{replacement_, i == 0 && strip_first_ ? "" : " "}});
    }
    return absl::OkStatus();
  }

 private:
  std::string replacement_;
  bool strip_first_;
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(std::unique_ptr<Pattern> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  absl::Status DecodeChain(std::vector<std::string>* tokens) const override {
    for (std::string& t : *tokens) {
      ES_ASSIGN_OR_RETURN(t, ReplaceAll(*pattern_, t, content_));
    }
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<Pattern> pattern_;
  std::string content_;
};

// Two hex digits as Rust's u8::from_str_radix(s, 16) reads them, which
// also takes "+F".
bool ParseHexByte(absl::string_view s, int* value) {
  auto digit = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  if (s[0] == '+') {
    *value = digit(s[1]);
    return *value >= 0;
  }
  const int hi = digit(s[0]), lo = digit(s[1]);
  if (hi < 0 || lo < 0) return false;
  *value = hi * 16 + lo;
  return true;
}

// Runs of <0xXX> tokens become their bytes when those are valid UTF-8, else
// one U+FFFD per byte.
class ByteFallbackDecoder : public Decoder {
 public:
  absl::Status DecodeChain(std::vector<std::string>* tokens) const override {
    std::vector<std::string> out;
    std::string bytes;
    size_t count = 0;
    auto flush = [&] {
      if (count == 0) return;
      if (utf8::FirstInvalid(bytes) == absl::string_view::npos) {
        out.push_back(bytes);
      } else {
        for (size_t i = 0; i < count; ++i) out.push_back("\xEF\xBF\xBD");
      }
      bytes.clear();
      count = 0;
    };
    for (std::string& t : *tokens) {
      int value;
      if (t.size() == 6 && absl::StartsWith(t, "<0x") && t[5] == '>' &&
          ParseHexByte(absl::string_view(t).substr(3, 2), &value)) {
        bytes.push_back(static_cast<char>(value));
        ++count;
        continue;
      }
      flush();
      out.push_back(std::move(t));
    }
    flush();
    *tokens = std::move(out);
    return absl::OkStatus();
  }
};

class FuseDecoder : public Decoder {
 public:
  absl::Status DecodeChain(std::vector<std::string>* tokens) const override {
    *tokens = {absl::StrJoin(*tokens, "")};
    return absl::OkStatus();
  }
};

// Up to `start` leading and `stop` trailing `content` characters removed
// from each token.
class StripDecoder : public Decoder {
 public:
  StripDecoder(std::string content, int64_t start, int64_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  absl::Status DecodeChain(std::vector<std::string>* tokens) const override {
    for (std::string& t : *tokens) {
      absl::string_view v(t);
      for (int64_t i = 0; i < start_ && absl::ConsumePrefix(&v, content_);
           ++i) {
      }
      for (int64_t i = 0; i < stop_ && absl::ConsumeSuffix(&v, content_); ++i) {
      }
      t = std::string(v);
    }
    return absl::OkStatus();
  }

 private:
  std::string content_;
  int64_t start_, stop_;
};

// The end-of-word suffix becomes a space, except in the last token.
class BpeSuffixDecoder : public Decoder {
 public:
  explicit BpeSuffixDecoder(std::string suffix) : suffix_(std::move(suffix)) {}
  absl::Status DecodeChain(std::vector<std::string>* tokens) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      if (suffix_.empty()) continue;
      (*tokens)[i] = absl::StrReplaceAll(
          (*tokens)[i], {{suffix_, i + 1 == tokens->size() ? "" : " "}});
    }
    return absl::OkStatus();
  }

 private:
  std::string suffix_;
};

absl::StatusOr<std::string> OneChar(const JsonObject& o, const char* field) {
  ES_ASSIGN_OR_RETURN(std::string s, o.String(field));
  size_t end = 0;
  char32_t c;
  if (s.empty() || !utf8::Decode(s, &end, &c) || end != s.size()) {
    return o.Error(field, "expected one character, got \"" + s + "\"");
  }
  return s;
}

absl::StatusOr<std::unique_ptr<Decoder>> ParseDecoderObject(
    const JsonObject& o) {
  ES_ASSIGN_OR_RETURN(std::string type, o.Type());
  if (type == "Sequence") {
    ES_ASSIGN_OR_RETURN(auto list,
                        ParseList<Decoder>(o, "decoders", ParseDecoder));
    return std::make_unique<SequenceDecoder>(std::move(list));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Metaspace") {
    ES_ASSIGN_OR_RETURN(std::string replacement, OneChar(o, "replacement"));
    ES_ASSIGN_OR_RETURN(bool add_prefix_space,
                        o.OptionalBool("add_prefix_space", true));
    ES_ASSIGN_OR_RETURN(
        std::string scheme,
        o.OptionalString("prepend_scheme",
                         add_prefix_space ? "always" : "never"));
    if (scheme != "always" && scheme != "first" && scheme != "never") {
      return o.Error("prepend_scheme",
                     "unknown scheme \"" + scheme +
                         "\" (expected always, first or never)");
    }
    return std::make_unique<MetaspaceDecoder>(std::move(replacement),
                                              scheme != "never");
  }
  if (type == "Replace") {
    const json* pattern = o.Find("pattern");
    ES_ASSIGN_OR_RETURN(auto p,
                        ParsePattern(pattern ? *pattern : json(), o.source(),
                                     o.FieldPath("pattern")));
    ES_ASSIGN_OR_RETURN(std::string content, o.String("content"));
    return std::make_unique<ReplaceDecoder>(std::move(p), std::move(content));
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    ES_ASSIGN_OR_RETURN(std::string content, OneChar(o, "content"));
    ES_ASSIGN_OR_RETURN(int64_t start, o.Int("start", 0, 1 << 20));
    ES_ASSIGN_OR_RETURN(int64_t stop, o.Int("stop", 0, 1 << 20));
    return std::make_unique<StripDecoder>(std::move(content), start, stop);
  }
  if (type == "BPEDecoder") {
    ES_ASSIGN_OR_RETURN(std::string suffix, o.OptionalString("suffix", "</w>"));
    return std::make_unique<BpeSuffixDecoder>(std::move(suffix));
  }
  return o.Error("type",
                 absl::StrCat("decoder \"", type,
                              "\" is not supported (supported: Sequence, "
                              "ByteLevel, Metaspace, Replace, ByteFallback, "
                              "Fuse, Strip, BPEDecoder)"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<PostProcessor>> ParsePostProcessor(
    const json& value, absl::string_view source, const std::string& field) {
  if (value.is_null()) return std::unique_ptr<PostProcessor>();
  return ParsePostProcessorObject(JsonObject(value, source, field));
}

absl::StatusOr<std::unique_ptr<Decoder>> ParseDecoder(
    const json& value, absl::string_view source, const std::string& field) {
  if (value.is_null()) return std::unique_ptr<Decoder>();
  return ParseDecoderObject(JsonObject(value, source, field));
}

}  // namespace hf
}  // namespace edgesplit
