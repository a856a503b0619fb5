// GPT-2 byte-level BPE tokenizer: the algorithm of OpenAI's GPT-2 encoder.py,
// checked id for id against the npm package gpt-3-encoder (Encoder.js) in
// gpt2_bpe_tokenizer_test.cc. The pre-tokenizer follows the JavaScript
// regular expression's Unicode semantics (its \s set in particular).
#ifndef EDGESPLIT_RUNTIME_TOKENIZER_GPT2_BPE_TOKENIZER_H_
#define EDGESPLIT_RUNTIME_TOKENIZER_GPT2_BPE_TOKENIZER_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/tokenizer/tokenizer.h"

namespace edgesplit {

// Loads from a vocab file (vocab.json / encoder.json: token -> id) and a
// merges file (merges.txt / vocab.bpe: "#version" line, then "a b" pairs in
// priority order). Errors name the file and, for malformed content, the line:
// NOT_FOUND for a missing file, INVALID_ARGUMENT for bad content.
//
// Encode refuses invalid UTF-8 (INVALID_ARGUMENT) and never produces special
// tokens: "<|endoftext|>" in the text is encoded as plain text, as GPT-2
// does. Decode returns raw bytes (a lone id may end mid-character); ids
// missing from the vocab decode to "", vocab entries such as "<|endoftext|>"
// to their text, as GPT-2's decoder does. vocab_size() is the largest id + 1.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadGpt2BpeTokenizer(
    const std::string& vocab_path, const std::string& merges_path);

// Same, from file contents already in memory; `vocab_source` and
// `merges_source` name them in errors.
absl::StatusOr<std::unique_ptr<Tokenizer>> ParseGpt2BpeTokenizer(
    absl::string_view vocab_json, absl::string_view vocab_source,
    absl::string_view merges_text, absl::string_view merges_source);

// Writes the smallest byte-level GPT-2 tokenizer into `dir` (created if
// missing): vocab.json with the 256 byte tokens in GPT-2's order (ids 0..255,
// the same ids GPT-2 gives them) plus "<|endoftext|>" = 256, and a merges.txt
// with no merges. Every text round-trips through it, one id per byte. Used for
// randomly initialised models, which have no trained tokenizer.
absl::Status WriteByteLevelGpt2Tokenizer(const std::string& dir);

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_TOKENIZER_GPT2_BPE_TOKENIZER_H_
