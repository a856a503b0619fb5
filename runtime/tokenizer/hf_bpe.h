// The BPE model of a Hugging Face tokenizer.json ("model": {"type": "BPE"}),
// with the Rust library's semantics: merges applied by rank with a heap
// (ties go to the leftmost pair), continuing_subword_prefix and
// end_of_word_suffix, byte fallback to <0xXX> tokens, unk fusing, and
// ignore_merges (a word that is itself a vocab entry is one token).
// Checked id for id against the library in hf_tokenizer_test.cc.
#ifndef EDGESPLIT_RUNTIME_TOKENIZER_HF_BPE_H_
#define EDGESPLIT_RUNTIME_TOKENIZER_HF_BPE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace edgesplit {

// Immutable after Parse; Tokenize is const and safe from many threads.
class HfBpe {
 public:
  // Parses the "model" object. INVALID_ARGUMENT names `source` and the
  // field: a missing or malformed vocab or merges entry, a merge naming a
  // token the vocab lacks, an unk_token outside the vocab, dropout (only
  // deterministic BPE is supported).
  static absl::StatusOr<std::unique_ptr<HfBpe>> Parse(
      const nlohmann::json& model, absl::string_view source);

  // Appends the ids of one pre-tokenized word (valid UTF-8). Characters
  // neither in the vocab nor covered by byte fallback become unk_token, or
  // are dropped when there is none, as the library does.
  void Tokenize(absl::string_view word, std::vector<int32_t>* ids) const;

  std::optional<int32_t> TokenToId(absl::string_view token) const;
  // nullptr for an id outside the vocab.
  const std::string* IdToToken(int32_t id) const;
  // Largest id + 1 (0 for an empty vocab).
  int32_t id_limit() const { return id_limit_; }

 private:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) |
           static_cast<uint32_t>(b);
  }
  const Merge* FindMerge(int32_t a, int32_t b) const;
  // The initial symbols of `word` (characters, byte fallback, unk).
  void Symbols(absl::string_view word, std::vector<int32_t>* out) const;
  void MergeAll(std::vector<int32_t>* symbols) const;

  absl::flat_hash_map<std::string, int32_t> vocab_;
  // By id: a map, not a table, so that a file naming id 2^31-1 costs
  // nothing.
  absl::flat_hash_map<int32_t, std::string> tokens_;
  int32_t id_limit_ = 0;
  absl::flat_hash_map<uint64_t, Merge> merges_;
  std::optional<int32_t> unk_id_;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  int32_t byte_ids_[256];  // -1 where <0xXX> is not in the vocab.
};

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_TOKENIZER_HF_BPE_H_
