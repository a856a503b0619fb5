#include "runtime/tokenizer/hf_tokenizer.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/file_util.h"
#include "base/json_util.h"
#include "base/status_macros.h"
#include "base/utf8.h"
#include "runtime/tokenizer/hf_json.h"
#include "runtime/tokenizer/unicode_text.h"

namespace edgesplit {
namespace {

using json = nlohmann::json;

// The code point that ends text[0, end) (requires end > 0, valid UTF-8).
char32_t LastChar(absl::string_view text, size_t end) {
  size_t begin = end - 1;
  while (begin > 0 &&
         (static_cast<unsigned char>(text[begin]) & 0xC0) == 0x80) {
    --begin;
  }
  char32_t c = 0;
  utf8::Decode(text, &begin, &c);
  return c;
}

char32_t FirstChar(absl::string_view text, size_t begin) {
  char32_t c = 0;
  utf8::Decode(text, &begin, &c);
  return c;
}

// Start of the whitespace run that ends text[0, end).
size_t TrailingSpaceStart(absl::string_view text, size_t end) {
  while (end > 0) {
    size_t begin = end - 1;
    while (begin > 0 &&
           (static_cast<unsigned char>(text[begin]) & 0xC0) == 0x80) {
      --begin;
    }
    if (!unicode::IsWhitespace(FirstChar(text, begin))) break;
    end = begin;
  }
  return end;
}

// End of the whitespace run that starts at text[begin].
size_t LeadingSpaceEnd(absl::string_view text, size_t begin) {
  while (begin < text.size()) {
    size_t next = begin;
    char32_t c;
    if (!utf8::Decode(text, &next, &c) || !unicode::IsWhitespace(c)) break;
    begin = next;
  }
  return begin;
}

// The ids of a JSON id field within int32.
bool ValidId(const json& v) {
  return v.is_number_integer() && v.get<int64_t>() >= 0 &&
         v.get<int64_t>() < INT32_MAX;
}

}  // namespace

void HfTokenizer::Matcher::Build() {
  by_first_byte.assign(256, {});
  for (size_t i = 0; i < patterns.size(); ++i) {
    by_first_byte[static_cast<unsigned char>(patterns[i][0])].push_back(i);
  }
  for (auto& list : by_first_byte) {
    std::stable_sort(list.begin(), list.end(), [&](size_t a, size_t b) {
      return patterns[a].size() > patterns[b].size();
    });
  }
}

absl::Status HfTokenizer::ParseAddedTokens(const json& list,
                                           absl::string_view source) {
  if (list.is_null()) return absl::OkStatus();
  if (!list.is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": added_tokens: expected an array, got ", DescribeJson(list)));
  }
  for (size_t i = 0; i < list.size(); ++i) {
    hf::JsonObject o(list[i], source, absl::StrCat("added_tokens[", i, "]"));
    AddedToken t;
    ES_ASSIGN_OR_RETURN(t.content, o.String("content"));
    const json* id = o.Find("id");
    if (id == nullptr || !ValidId(*id)) {
      return o.Error("id", absl::StrCat("expected an id, got ",
                                        id ? DescribeJson(*id) : "nothing"));
    }
    t.id = static_cast<int32_t>(id->get<int64_t>());
    ES_ASSIGN_OR_RETURN(t.single_word, o.OptionalBool("single_word", false));
    ES_ASSIGN_OR_RETURN(t.lstrip, o.OptionalBool("lstrip", false));
    ES_ASSIGN_OR_RETURN(t.rstrip, o.OptionalBool("rstrip", false));
    ES_ASSIGN_OR_RETURN(t.special, o.OptionalBool("special", false));
    // The library's default: special tokens are not normalized.
    ES_ASSIGN_OR_RETURN(t.normalized, o.OptionalBool("normalized", !t.special));
    if (utf8::FirstInvalid(t.content) != absl::string_view::npos) {
      return o.Error("content", "not valid UTF-8");
    }
    if (t.content.empty()) continue;  // The library ignores these too.
    if (t.special) special_contents_.insert(t.content);
    id_by_content_[t.content] = t.id;
    token_by_id_[t.id] = tokens_.size();
    tokens_.push_back(std::move(t));
  }
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const AddedToken& t = tokens_[i];
    Matcher& m = t.normalized ? normalized_matcher_ : raw_matcher_;
    std::string pattern = t.content;
    if (t.normalized && normalizer_ != nullptr) {
      ES_RETURN_IF_ERROR(normalizer_->Normalize(&pattern));
    }
    if (pattern.empty()) continue;
    m.patterns.push_back(std::move(pattern));
    m.token_index.push_back(i);
  }
  raw_matcher_.Build();
  normalized_matcher_.Build();
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<HfTokenizer>> HfTokenizer::Parse(
    absl::string_view json_text, absl::string_view source) {
  // Deep enough for Sequence-in-Sequence components, shallow enough for the
  // parser's recursion.
  ES_ASSIGN_OR_RETURN(json doc, ParseUntrustedJson(json_text, source, 32));
  hf::JsonObject root(doc, source, "");
  if (!doc.is_object()) return root.Error("", "expected a JSON object");
  auto t = std::unique_ptr<HfTokenizer>(new HfTokenizer());
  const json null_value;
  auto field = [&](const char* name) -> const json& {
    const json* v = root.Find(name);
    return v == nullptr ? null_value : *v;
  };
  ES_ASSIGN_OR_RETURN(
      t->normalizer_,
      hf::ParseNormalizer(field("normalizer"), source, "normalizer"));
  ES_ASSIGN_OR_RETURN(
      t->pre_tokenizer_,
      hf::ParsePreTokenizer(field("pre_tokenizer"), source, "pre_tokenizer"));
  ES_ASSIGN_OR_RETURN(t->post_processor_,
                      hf::ParsePostProcessor(field("post_processor"), source,
                                             "post_processor"));
  ES_ASSIGN_OR_RETURN(t->decoder_,
                      hf::ParseDecoder(field("decoder"), source, "decoder"));
  const json& model = field("model");
  hf::JsonObject model_object(model, source, "model");
  if (!model.is_object()) return model_object.Error("", "expected an object");
  ES_ASSIGN_OR_RETURN(std::string type,
                      model_object.OptionalString("type", "BPE"));
  if (type != "BPE") {
    return model_object.Error(
        "type", absl::StrCat("model \"", type,
                             "\" is not supported (only BPE models load)"));
  }
  ES_ASSIGN_OR_RETURN(t->model_, HfBpe::Parse(model, source));
  ES_RETURN_IF_ERROR(t->ParseAddedTokens(field("added_tokens"), source));
  t->vocab_size_ = t->model_->id_limit();
  for (const AddedToken& a : t->tokens_) {
    t->vocab_size_ = std::max(t->vocab_size_, a.id + 1);
  }
  return t;
}

void HfTokenizer::SplitOnAdded(const Matcher& matcher, absl::string_view text,
                               bool at_start, std::vector<Split>* out) const {
  size_t start_offset = 0;
  auto emit = [&](size_t begin, size_t end, int32_t id) {
    if (end <= begin) return;  // The library drops empty pieces.
    out->push_back(Split{std::string(text.substr(begin, end - begin)),
                         at_start && begin == 0, id});
  };
  size_t pos = 0;
  while (pos < text.size() && !matcher.patterns.empty()) {
    const auto& candidates =
        matcher.by_first_byte[static_cast<unsigned char>(text[pos])];
    const size_t* found = nullptr;
    for (const size_t& c : candidates) {
      if (text.substr(pos).substr(0, matcher.patterns[c].size()) ==
          matcher.patterns[c]) {
        found = &c;
        break;
      }
    }
    if (found == nullptr) {
      ++pos;
      continue;
    }
    size_t start = pos;
    size_t stop = pos + matcher.patterns[*found].size();
    pos = stop;  // Matching resumes after the match, kept or not.
    const AddedToken& token = tokens_[matcher.token_index[*found]];
    if (token.single_word) {
      const bool space_before =
          start == 0 || !unicode::IsWordChar(LastChar(text, start));
      const bool space_after =
          stop == text.size() || !unicode::IsWordChar(FirstChar(text, stop));
      if (!space_before || !space_after) continue;
    }
    if (token.lstrip) {
      start = std::max(TrailingSpaceStart(text, start), start_offset);
    }
    if (token.rstrip) stop = LeadingSpaceEnd(text, stop);
    if (start_offset < start) emit(start_offset, start, -1);
    emit(start, stop, token.id);
    start_offset = stop;
  }
  if (start_offset < text.size()) emit(start_offset, text.size(), -1);
}

absl::StatusOr<std::vector<int32_t>> HfTokenizer::EncodeIds(
    absl::string_view text) const {
  if (size_t bad = utf8::FirstInvalid(text); bad != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("text is not valid UTF-8 (at byte ", bad, ")"));
  }
  // 1. Tokens matched on the raw text; 2. the rest normalized, then tokens
  // matched on their normalized form; 3. the rest pre-tokenized and BPE'd.
  std::vector<Split> raw;
  SplitOnAdded(raw_matcher_, text, /*at_start=*/true, &raw);
  std::vector<Split> splits;
  for (Split& s : raw) {
    if (s.token_id >= 0) {
      splits.push_back(std::move(s));
      continue;
    }
    if (normalizer_ != nullptr)
      ES_RETURN_IF_ERROR(normalizer_->Normalize(&s.text));
    SplitOnAdded(normalized_matcher_, s.text, s.at_start, &splits);
  }
  std::vector<int32_t> ids;
  std::vector<hf::Piece> pieces;
  for (const Split& s : splits) {
    if (s.token_id >= 0) {
      ids.push_back(s.token_id);
      continue;
    }
    pieces.assign(1, hf::Piece{s.text, s.at_start});
    if (pre_tokenizer_ != nullptr) {
      ES_RETURN_IF_ERROR(pre_tokenizer_->PreTokenize(&pieces));
    }
    for (const hf::Piece& p : pieces) model_->Tokenize(p.text, &ids);
  }
  return ids;
}

absl::StatusOr<std::vector<int32_t>> HfTokenizer::Encode(
    absl::string_view text) const {
  return EncodeIds(text);
}

absl::StatusOr<std::vector<int32_t>> HfTokenizer::EncodePrompt(
    absl::string_view text) const {
  ES_ASSIGN_OR_RETURN(std::vector<int32_t> ids, EncodeIds(text));
  if (post_processor_ != nullptr) post_processor_->AddSpecialTokens(&ids);
  return ids;
}

absl::StatusOr<std::string> HfTokenizer::Decode(
    absl::Span<const int32_t> ids) const {
  return Decode(ids, /*skip_special_tokens=*/false);
}

absl::StatusOr<std::string> HfTokenizer::Decode(
    absl::Span<const int32_t> ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const std::string* token = nullptr;
    if (auto it = token_by_id_.find(id); it != token_by_id_.end()) {
      token = &tokens_[it->second].content;
    } else {
      token = model_->IdToToken(id);
    }
    if (token == nullptr) continue;
    if (skip_special_tokens && special_contents_.contains(*token)) continue;
    tokens.push_back(*token);
  }
  if (decoder_ == nullptr) return absl::StrJoin(tokens, " ");
  ES_RETURN_IF_ERROR(decoder_->DecodeChain(&tokens));
  return absl::StrJoin(tokens, "");
}

int32_t HfTokenizer::SpecialTokenId(absl::string_view text) const {
  const std::string key(text);
  if (!special_contents_.contains(key)) return -1;
  auto it = id_by_content_.find(key);
  return it == id_by_content_.end() ? -1 : it->second;
}

std::optional<int32_t> HfTokenizer::TokenToId(absl::string_view token) const {
  if (auto it = id_by_content_.find(token); it != id_by_content_.end()) {
    return it->second;
  }
  return model_->TokenToId(token);
}

absl::StatusOr<std::unique_ptr<HfTokenizer>> LoadHfTokenizer(
    const std::string& path) {
  ES_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return HfTokenizer::Parse(text, path);
}

}  // namespace edgesplit
