// A model's chat format: the Jinja chat template Hugging Face models ship
// (chat_template.jinja, or "chat_template" in tokenizer_config.json), with
// the model's bos_token and eos_token, turning a conversation into the
// prompt text the model was tuned on (runtime/jinja renders it).
#ifndef EDGESPLIT_RUNTIME_CHAT_TEMPLATE_H_
#define EDGESPLIT_RUNTIME_CHAT_TEMPLATE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/jinja/jinja.h"
#include "runtime/tokenizer/tokenizer.h"

namespace edgesplit {

struct ChatTurn {
  std::string role;  // "system", "user", "assistant", ...
  std::string content;
};

// Immutable after loading; Render and Encode are const and thread-safe.
class ChatTemplate {
 public:
  // The template of the model directory `dir`: chat_template.jinja when
  // present (newer transformers write it there), else tokenizer_config.json's
  // "chat_template" (a string, or a list of {"name", "template"} of which
  // "default" is used); `dir` may also be a .gguf file, whose
  // tokenizer.chat_template is used. bos_token and eos_token come from
  // tokenizer_config.json (a string or {"content": ...}). NOT_FOUND naming
  // the directory when the model has no chat template; INVALID_ARGUMENT
  // naming the file and field for malformed ones.
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> Load(
      const std::string& dir);
  // From template text; `name` appears in errors.
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> Parse(
      absl::string_view text, std::string bos_token, std::string eos_token,
      std::string name);

  // The prompt text for `messages`; with `add_generation_prompt` it ends
  // where the assistant's reply starts. The template's own errors
  // (raise_exception, e.g. roles that do not alternate) are
  // INVALID_ARGUMENT with its message.
  absl::StatusOr<std::string> Render(const std::vector<ChatTurn>& messages,
                                     bool add_generation_prompt) const;

  // The ids of rendered text, as transformers' apply_chat_template
  // tokenizes it: the template writes its special tokens itself, so no
  // post-processor BOS is added. For a tokenizer that does not match
  // special tokens in text (SentencePiece, GPT-2 files), every bos_token
  // and eos_token in the text becomes its id and the text between them is
  // encoded piece by piece (transformers' slow tokenizers).
  absl::StatusOr<std::vector<int32_t>> Encode(const Tokenizer& tokenizer,
                                              absl::string_view text) const;

  // The id that ends the assistant's turn: eos_token's, when it is one of
  // the tokenizer's special tokens (tokenizer.json; never an ordinary
  // word that happens to be one token).
  // Chat models whose turns end with a token other than the tokenizer's
  // EOS name it there (Llama 3's <|eot_id|>, ChatML's <|im_end|>), as
  // their generation_config's eos_token_id lists do; a chat generation
  // stops at it like at EOS. -1 when there is none.
  int32_t TurnEndId(const Tokenizer& tokenizer) const;

  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }

 private:
  ChatTemplate() = default;
  std::unique_ptr<jinja::Template> template_;
  std::string bos_token_;
  std::string eos_token_;
};

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_CHAT_TEMPLATE_H_
