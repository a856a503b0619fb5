// Text <-> token ids. Implementations: Hugging Face tokenizer.json
// (hf_tokenizer.h), GPT-2 byte-level BPE (gpt2_bpe_tokenizer.h) and
// SentencePiece (sentencepiece_tokenizer.h).
#ifndef EDGESPLIT_RUNTIME_TOKENIZER_TOKENIZER_H_
#define EDGESPLIT_RUNTIME_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace edgesplit {

struct ModelConfig;

// Thread-safe after construction: Encode/Decode are const and reentrant.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Encodes text without special tokens (no BOS).
  virtual absl::StatusOr<std::vector<int32_t>> Encode(
      absl::string_view text) const = 0;
  // Decodes ids to text. Ids the tokenizer does not know (models may pad
  // their vocabulary past the tokenizer's) decode to "". Special tokens
  // follow the format's convention: SentencePiece control tokens (<s>, </s>)
  // decode to "", GPT-2's <|endoftext|> literally (as Hugging Face does
  // without skip_special_tokens); generation stops at EOS before decoding.
  virtual absl::StatusOr<std::string> Decode(
      absl::Span<const int32_t> ids) const = 0;
  // Number of ids the tokenizer defines.
  virtual int32_t vocab_size() const = 0;
  // Whether Encode turns special tokens written in the text ("<s>",
  // "<|im_start|>") into their ids, as tokenizer.json does; SentencePiece
  // and GPT-2 files encode them as plain text.
  virtual bool encodes_special_tokens() const { return false; }
  // The id of `text` when it is one of the tokenizer's special tokens
  // (tokenizer.json's added tokens marked special); -1 otherwise, and for
  // formats that match none in text.
  virtual int32_t SpecialTokenId(absl::string_view text) const {
    (void)text;
    return -1;
  }

  int32_t bos_id() const { return bos_id_; }  // -1: none.
  int32_t eos_id() const { return eos_id_; }  // -1: none.
  // Whether prompts start with BOS (tokenizer_config.json add_bos_token).
  bool add_bos() const { return add_bos_; }

  // Encodes a prompt as the model expects it: BOS prepended when add_bos(),
  // or, for tokenizer.json, the special tokens its post-processor adds.
  virtual absl::StatusOr<std::vector<int32_t>> EncodePrompt(
      absl::string_view text) const;

  void set_special_tokens(int32_t bos, int32_t eos, bool add_bos) {
    bos_id_ = bos;
    eos_id_ = eos;
    add_bos_ = add_bos;
  }

 private:
  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
  bool add_bos_ = false;
};

// Loads the tokenizer of a Hugging Face model directory: tokenizer.json
// (what transformers' fast tokenizers load first), else tokenizer.model
// (SentencePiece), else vocab.json + merges.txt, else encoder.json +
// vocab.bpe (GPT-2 BPE). BOS/EOS ids come from config.json. Whether prompts
// start with BOS: tokenizer.json's post-processor decides; for the others,
// tokenizer_config.json's add_bos_token (default: SentencePiece yes, GPT-2
// no). NOT_FOUND names the directory when no tokenizer file is there.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(
    const std::string& model_dir, const ModelConfig& config);

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_TOKENIZER_TOKENIZER_H_
