// Hugging Face tokenizer.json, the tokenizer most current models ship
// (Llama 3, Qwen2, Mistral, Phi, Gemma, SmolLM, TinyLlama, GPT-2 exports):
// added and special tokens, normalizer, pre-tokenizer, BPE model,
// post-processor and decoder, each with the semantics of Hugging Face's Rust
// `tokenizers` library, and checked id for id against it (npm
// @anush008/tokenizers) in hf_tokenizer_test.cc. Which component types are
// supported: hf_pretokenize.h and hf_decode.h; the model must be BPE
// (WordPiece, WordLevel and Unigram files are refused by name).
#ifndef EDGESPLIT_RUNTIME_TOKENIZER_HF_TOKENIZER_H_
#define EDGESPLIT_RUNTIME_TOKENIZER_HF_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "runtime/tokenizer/hf_bpe.h"
#include "runtime/tokenizer/hf_decode.h"
#include "runtime/tokenizer/hf_pretokenize.h"
#include "runtime/tokenizer/tokenizer.h"

namespace edgesplit {

// Immutable after Parse; every method is const and safe from many threads.
class HfTokenizer : public Tokenizer {
 public:
  // Parses tokenizer.json text; `source` names it in errors, which say the
  // field and value (INVALID_ARGUMENT), e.g. "x/tokenizer.json:
  // pre_tokenizer.pretokenizers[0].type: pre-tokenizer "Punctuation" is
  // not supported (...)".
  static absl::StatusOr<std::unique_ptr<HfTokenizer>> Parse(
      absl::string_view json_text, absl::string_view source);

  // Encodes without the post-processor's special tokens (added and special
  // tokens written in the text are still matched, as the library does).
  // INVALID_ARGUMENT for text that is not valid UTF-8.
  absl::StatusOr<std::vector<int32_t>> Encode(
      absl::string_view text) const override;
  // Encodes with them (the library's add_special_tokens=true): what the
  // model's prompts look like.
  absl::StatusOr<std::vector<int32_t>> EncodePrompt(
      absl::string_view text) const override;
  // Decodes with special tokens (skip_special_tokens=false, transformers'
  // default); unknown ids are skipped.
  absl::StatusOr<std::string> Decode(
      absl::Span<const int32_t> ids) const override;
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                     bool skip_special_tokens) const;
  // Largest id (model or added token) + 1.
  int32_t vocab_size() const override { return vocab_size_; }
  bool encodes_special_tokens() const override { return true; }
  int32_t SpecialTokenId(absl::string_view text) const override;

  // An added token's id, else the model's; nullopt when neither has it.
  std::optional<int32_t> TokenToId(absl::string_view token) const;

 private:
  struct AddedToken {
    std::string content;
    int32_t id = 0;
    bool single_word = false;
    bool lstrip = false;
    bool rstrip = false;
    bool normalized = true;
    bool special = false;
  };
  // Added tokens matched leftmost-longest, as the library's Aho-Corasick
  // automaton does: `patterns[i]` stands for `tokens_[token_index[i]]`.
  struct Matcher {
    std::vector<std::string> patterns;
    std::vector<size_t> token_index;
    // By first byte: indices into `patterns`, longest first.
    std::vector<std::vector<size_t>> by_first_byte;
    void Build();
  };
  struct Split {
    std::string text;
    bool at_start;
    int32_t token_id;  // -1: not an added token.
  };

  HfTokenizer() = default;
  absl::Status ParseAddedTokens(const nlohmann::json& list,
                                absl::string_view source);
  // The library's AddedVocabulary::find_matches on `text`.
  void SplitOnAdded(const Matcher& matcher, absl::string_view text,
                    bool at_start, std::vector<Split>* out) const;
  absl::StatusOr<std::vector<int32_t>> EncodeIds(absl::string_view text) const;

  std::unique_ptr<hf::Normalizer> normalizer_;
  std::unique_ptr<hf::PreTokenizer> pre_tokenizer_;
  std::unique_ptr<HfBpe> model_;
  std::unique_ptr<hf::PostProcessor> post_processor_;
  std::unique_ptr<hf::Decoder> decoder_;
  std::vector<AddedToken> tokens_;
  absl::flat_hash_map<int32_t, size_t> token_by_id_;  // Into tokens_.
  absl::flat_hash_map<std::string, int32_t> id_by_content_;
  absl::flat_hash_set<std::string> special_contents_;
  Matcher raw_matcher_;         // Tokens with normalized=false.
  Matcher normalized_matcher_;  // The others, by their normalized content.
  int32_t vocab_size_ = 0;
};

// Reads and parses `path` (NOT_FOUND when it cannot be read).
absl::StatusOr<std::unique_ptr<HfTokenizer>> LoadHfTokenizer(
    const std::string& path);

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_TOKENIZER_HF_TOKENIZER_H_
