#include "runtime/tokenizer/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "base/json_util.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"
#include "runtime/model_config.h"
#include "runtime/tokenizer/gpt2_bpe_tokenizer.h"
#include "runtime/tokenizer/hf_tokenizer.h"
#include "runtime/tokenizer/sentencepiece_tokenizer.h"

namespace edgesplit {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// tokenizer_config.json may override add_bos_token. A malformed file is an
// error (it names the file); a missing one is fine.
absl::StatusOr<json> ReadOptionalJson(const std::string& path) {
  if (!fs::exists(path)) return json::object();
  return ReadUntrustedJson(path);
}

}  // namespace

absl::StatusOr<std::vector<int32_t>> Tokenizer::EncodePrompt(
    absl::string_view text) const {
  ES_ASSIGN_OR_RETURN(std::vector<int32_t> ids, Encode(text));
  if (add_bos_ && bos_id_ >= 0) ids.insert(ids.begin(), bos_id_);
  return ids;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(
    const std::string& dir, const ModelConfig& config) {
  std::unique_ptr<Tokenizer> tok;
  bool add_bos = false;
  if (fs::exists(dir + "/tokenizer.json")) {
    ES_ASSIGN_OR_RETURN(std::unique_ptr<HfTokenizer> hf,
                        LoadHfTokenizer(dir + "/tokenizer.json"));
    // add_bos() reports what the post-processor does to a prompt.
    ES_ASSIGN_OR_RETURN(std::vector<int32_t> empty, hf->EncodePrompt(""));
    const auto bos = static_cast<int32_t>(config.bos_token_id);
    hf->set_special_tokens(bos, static_cast<int32_t>(config.eos_token_id),
                           !empty.empty() && empty.front() == bos);
    return std::unique_ptr<Tokenizer>(std::move(hf));
  }
  if (fs::exists(dir + "/tokenizer.model")) {
    ES_ASSIGN_OR_RETURN(tok,
                        LoadSentencePieceTokenizer(dir + "/tokenizer.model"));
    add_bos = true;  // Llama's default.
  } else if (fs::exists(dir + "/vocab.json") &&
             fs::exists(dir + "/merges.txt")) {
    ES_ASSIGN_OR_RETURN(
        tok, LoadGpt2BpeTokenizer(dir + "/vocab.json", dir + "/merges.txt"));
  } else if (fs::exists(dir + "/encoder.json") &&
             fs::exists(dir + "/vocab.bpe")) {
    ES_ASSIGN_OR_RETURN(
        tok, LoadGpt2BpeTokenizer(dir + "/encoder.json", dir + "/vocab.bpe"));
  } else {
    return absl::NotFoundError(absl::StrCat(
        dir,
        ": no tokenizer (expected tokenizer.json, tokenizer.model, "
        "vocab.json + merges.txt, or encoder.json + vocab.bpe)"));
  }
  ES_ASSIGN_OR_RETURN(json tc,
                      ReadOptionalJson(dir + "/tokenizer_config.json"));
  if (tc.contains("add_bos_token") && tc["add_bos_token"].is_boolean()) {
    add_bos = tc["add_bos_token"].get<bool>();
  }
  tok->set_special_tokens(static_cast<int32_t>(config.bos_token_id),
                          static_cast<int32_t>(config.eos_token_id), add_bos);
  return tok;
}

}  // namespace edgesplit
