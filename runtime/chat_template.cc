#include "runtime/chat_template.h"

#include <filesystem>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "base/file_util.h"
#include "base/json_util.h"
#include "base/status_macros.h"
#include "runtime/gguf.h"

namespace edgesplit {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// A special token as tokenizer_config.json writes it: a string, or an
// AddedToken object {"content": ...}. "" when absent or null.
absl::StatusOr<std::string> TokenText(const json& config, const char* field,
                                      const std::string& source) {
  auto it = config.find(field);
  if (it == config.end() || it->is_null()) return std::string();
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") &&
      (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  return absl::InvalidArgumentError(
      absl::StrCat(source, ": ", field,
                   ": expected a string or {\"content\": "
                   "...}, got ",
                   DescribeJson(*it)));
}

// The "chat_template" field: a string, or named templates.
absl::StatusOr<std::string> TemplateText(const json& config,
                                         const std::string& source) {
  const json& t = config["chat_template"];
  if (t.is_string()) return t.get<std::string>();
  if (t.is_array()) {
    for (const json& named : t) {
      if (named.is_object() && named.contains("name") &&
          named["name"].is_string() && named["name"] == "default" &&
          named.contains("template") && named["template"].is_string()) {
        return named["template"].get<std::string>();
      }
    }
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": chat_template: no template named \"default\""));
  }
  return absl::InvalidArgumentError(
      absl::StrCat(source,
                   ": chat_template: expected a string or a list of "
                   "{\"name\", \"template\"}, got ",
                   DescribeJson(t)));
}

}  // namespace

namespace {

// A GGUF file's template (llama.cpp's converter copies tokenizer_config's
// chat_template into tokenizer.chat_template) and its BOS/EOS tokens' text.
absl::StatusOr<std::unique_ptr<ChatTemplate>> LoadGguf(
    const std::string& path) {
  ES_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> f, GgufFile::Open(path));
  if (f->metadata().count("tokenizer.chat_template") == 0) {
    return absl::NotFoundError(absl::StrCat(
        path, ": the model has no chat template (no tokenizer.chat_template)"));
  }
  ES_ASSIGN_OR_RETURN(std::string text, f->String("tokenizer.chat_template"));
  std::string bos, eos;
  auto tokens = f->Strings("tokenizer.ggml.tokens");
  if (!tokens.ok() && tokens.status().code() != absl::StatusCode::kNotFound) {
    return tokens.status();  // Present but not a list of strings.
  }
  if (tokens.ok()) {
    const std::vector<std::string>& t = **tokens;
    auto text_of = [&](const char* key, std::string* out) -> absl::Status {
      ES_ASSIGN_OR_RETURN(int64_t id, f->Int(key, -1));
      if (id >= 0 && id < static_cast<int64_t>(t.size())) *out = t[id];
      return absl::OkStatus();
    };
    ES_RETURN_IF_ERROR(text_of("tokenizer.ggml.bos_token_id", &bos));
    ES_RETURN_IF_ERROR(text_of("tokenizer.ggml.eos_token_id", &eos));
  }
  return ChatTemplate::Parse(text, std::move(bos), std::move(eos),
                             path + " tokenizer.chat_template");
}

}  // namespace

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::Load(
    const std::string& dir) {
  std::error_code ec;
  if (absl::EndsWith(dir, ".gguf") && fs::is_regular_file(dir, ec)) {
    return LoadGguf(dir);
  }
  const std::string config_path = dir + "/tokenizer_config.json";
  json config = json::object();
  if (fs::exists(config_path, ec)) {
    ES_ASSIGN_OR_RETURN(config, ReadUntrustedJson(config_path));
  }
  ES_ASSIGN_OR_RETURN(std::string bos,
                      TokenText(config, "bos_token", config_path));
  ES_ASSIGN_OR_RETURN(std::string eos,
                      TokenText(config, "eos_token", config_path));
  const std::string jinja_path = dir + "/chat_template.jinja";
  if (fs::exists(jinja_path, ec)) {
    ES_ASSIGN_OR_RETURN(std::string text, ReadFile(jinja_path));
    return Parse(text, std::move(bos), std::move(eos), jinja_path);
  }
  if (!config.contains("chat_template") || config["chat_template"].is_null()) {
    return absl::NotFoundError(
        absl::StrCat(dir,
                     ": the model has no chat template (no "
                     "chat_template.jinja, no chat_template in "
                     "tokenizer_config.json)"));
  }
  ES_ASSIGN_OR_RETURN(std::string text, TemplateText(config, config_path));
  return Parse(text, std::move(bos), std::move(eos),
               config_path + " chat_template");
}

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::Parse(
    absl::string_view text, std::string bos_token, std::string eos_token,
    std::string name) {
  auto t = std::unique_ptr<ChatTemplate>(new ChatTemplate());
  ES_ASSIGN_OR_RETURN(t->template_, jinja::Template::Parse(text, name));
  t->bos_token_ = std::move(bos_token);
  t->eos_token_ = std::move(eos_token);
  return t;
}

absl::StatusOr<std::string> ChatTemplate::Render(
    const std::vector<ChatTurn>& messages, bool add_generation_prompt) const {
  jinja::Array list;
  for (const ChatTurn& m : messages) {
    list.push_back(jinja::Value::MakeObject(
        {{"role", jinja::Value::String(m.role)},
         {"content", jinja::Value::String(m.content)}}));
  }
  return template_->Render(
      {{"messages", jinja::Value::MakeArray(std::move(list))},
       {"add_generation_prompt", jinja::Value::Bool(add_generation_prompt)},
       {"bos_token", jinja::Value::String(bos_token_)},
       {"eos_token", jinja::Value::String(eos_token_)}});
}

absl::StatusOr<std::vector<int32_t>> ChatTemplate::Encode(
    const Tokenizer& tokenizer, absl::string_view text) const {
  if (tokenizer.encodes_special_tokens()) return tokenizer.Encode(text);
  // The tokenizer would spell "<s>" out, so bos_token and eos_token are
  // matched here, wherever the template writes them (Llama 2's
  // "</s><s>[INST]" between turns), and the text between them is encoded
  // piece by piece. That is transformers' slow tokenizers (special tokens
  // never split, text between them tokenized on its own, SentencePiece's
  // dummy prefix included, legacy=true) and Meta's chat_completion, which
  // encodes each turn with its own BOS and EOS.
  struct Special {
    absl::string_view text;
    int32_t id;
  };
  std::vector<Special> specials;
  if (!bos_token_.empty() && tokenizer.bos_id() >= 0) {
    specials.push_back({bos_token_, tokenizer.bos_id()});
  }
  if (!eos_token_.empty() && tokenizer.eos_id() >= 0) {
    specials.push_back({eos_token_, tokenizer.eos_id()});
  }
  std::vector<int32_t> ids;
  while (!text.empty()) {
    // The earliest special token; the longer one where two start together.
    size_t at = absl::string_view::npos;
    const Special* found = nullptr;
    for (const Special& s : specials) {
      const size_t pos = text.find(s.text);
      if (pos == absl::string_view::npos) continue;
      if (found == nullptr || pos < at ||
          (pos == at && s.text.size() > found->text.size())) {
        at = pos;
        found = &s;
      }
    }
    const absl::string_view piece = text.substr(0, at);
    if (!piece.empty()) {
      ES_ASSIGN_OR_RETURN(std::vector<int32_t> part, tokenizer.Encode(piece));
      ids.insert(ids.end(), part.begin(), part.end());
    }
    if (found == nullptr) break;
    ids.push_back(found->id);
    text.remove_prefix(at + found->text.size());
  }
  return ids;
}

int32_t ChatTemplate::TurnEndId(const Tokenizer& tokenizer) const {
  return eos_token_.empty() ? -1 : tokenizer.SpecialTokenId(eos_token_);
}

}  // namespace edgesplit
