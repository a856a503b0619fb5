// WriteSentencePieceBpeModel: a small, deterministic BPE trainer for `model
// init`, writing a tokenizer.model that libsentencepiece and our own
// SentencePieceTokenizer load and encode identically.
//
// Text is normalized exactly as the model will normalize it at encode time
// (identity rules, dummy prefix, ' ' -> U+2581, whitespace kept), split into
// words that each start at a U+2581, and the most frequent adjacent pair is
// merged repeatedly. Merged pieces get scores 0, -1, -2, ... in merge order,
// so that encoding replays the merges in the order they were learned.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <queue>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/file_util.h"
#include "base/status_macros.h"
#include "runtime/tokenizer/sentencepiece_model.h"
#include "runtime/tokenizer/sentencepiece_normalizer.h"
#include "runtime/tokenizer/sentencepiece_tokenizer.h"

namespace edgesplit {
namespace {

// <unk>, <s>, </s> and the 256 byte pieces.
constexpr int kNumReservedPieces = 3 + 256;
// sentencepiece's default max_sentencepiece_length, in characters: longer
// pieces only memorize rare runs (e.g. long stretches of spaces).
constexpr size_t kMaxPieceChars = 16;

size_t CountChars(absl::string_view s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size(); i += spm::OneCharLen(s[i])) ++n;
  return n;
}

class BpeTrainer {
 public:
  explicit BpeTrainer(absl::flat_hash_set<std::string> forbidden)
      : forbidden_(std::move(forbidden)) {}

  void AddWord(absl::string_view word) {
    auto [it, inserted] = word_index_.emplace(word, words_.size());
    if (inserted) {
      Word w;
      for (size_t i = 0; i < word.size();) {
        const size_t len = std::min(word.size() - i, spm::OneCharLen(word[i]));
        w.symbols.push_back(Intern(word.substr(i, len)));
        i += len;
      }
      words_.push_back(std::move(w));
    }
    ++words_[it->second].count;
  }

  // Characters by descending frequency, ties in byte order.
  std::vector<std::string> CharsByFrequency() const {
    absl::flat_hash_map<int32_t, int64_t> counts;
    for (const Word& w : words_) {
      for (int32_t s : w.symbols) counts[s] += w.count;
    }
    std::vector<std::pair<int64_t, std::string>> sorted;
    for (const auto& [id, count] : counts) {
      sorted.emplace_back(-count, symbols_[id]);
    }
    std::sort(sorted.begin(), sorted.end());
    std::vector<std::string> chars;
    for (auto& [count, s] : sorted) chars.push_back(std::move(s));
    return chars;
  }

  // Learns up to `max_merges` new pieces; returns them in merge order.
  std::vector<std::string> Train(size_t max_merges) {
    for (size_t w = 0; w < words_.size(); ++w) AddPairs(w, +1);
    touched_.clear();
    for (const auto& [key, count] : pair_counts_) Push(key);

    std::vector<std::string> merges;
    // Different merge paths can spell the same piece ("ab"+"c", "a"+"bc");
    // it is applied each time but listed once.
    absl::flat_hash_set<std::string> known;
    while (merges.size() < max_merges && !heap_.empty()) {
      const HeapEntry top = heap_.top();
      heap_.pop();
      const auto it = pair_counts_.find(top.key);
      if (it == pair_counts_.end() || it->second != top.count) continue;
      const int32_t a = static_cast<int32_t>(top.key >> 32);
      const int32_t b = static_cast<int32_t>(top.key & 0xffffffffu);
      std::string merged = symbols_[a] + symbols_[b];
      const int32_t c = Intern(merged);
      if (known.insert(merged).second) merges.push_back(std::move(merged));
      ApplyMerge(top.key, a, b, c);
    }
    return merges;
  }

 private:
  struct Word {
    std::vector<int32_t> symbols;
    int64_t count = 0;
  };
  struct HeapEntry {
    int64_t count;
    uint64_t key;
  };

  static uint64_t Key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b);
  }

  int32_t Intern(absl::string_view s) {
    auto [it, inserted] = symbol_ids_.emplace(s, symbols_.size());
    if (inserted) symbols_.emplace_back(s);
    return it->second;
  }

  // Adds (sign +1) or removes (-1) the pairs of word `w`.
  void AddPairs(size_t w, int sign) {
    const Word& word = words_[w];
    for (size_t i = 0; i + 1 < word.symbols.size(); ++i) {
      const uint64_t key = Key(word.symbols[i], word.symbols[i + 1]);
      int64_t& count = pair_counts_[key];
      count += sign * word.count;
      if (sign > 0) pair_words_[key].push_back(w);
      touched_.push_back(key);
    }
  }

  // Queues `key` at its current count unless it may not be merged.
  void Push(uint64_t key) {
    const auto it = pair_counts_.find(key);
    if (it == pair_counts_.end() || it->second <= 0) return;
    if (!Mergeable(key)) return;
    heap_.push(HeapEntry{it->second, key});
  }

  bool Mergeable(uint64_t key) {
    const absl::string_view a = symbols_[key >> 32];
    const absl::string_view b = symbols_[key & 0xffffffffu];
    if (CountChars(a) + CountChars(b) > kMaxPieceChars) return false;
    // Pieces may not contain NUL (libsentencepiece and we refuse them).
    if (absl::StrContains(a, '\0') || absl::StrContains(b, '\0')) {
      return false;
    }
    // A normal piece spelled like a reserved one would be shadowed by it in
    // libsentencepiece's PieceToId and break encoding.
    return !forbidden_.contains(absl::StrCat(a, b));
  }

  void ApplyMerge(uint64_t key, int32_t a, int32_t b, int32_t c) {
    std::vector<size_t> affected = std::move(pair_words_[key]);
    pair_words_.erase(key);
    std::sort(affected.begin(), affected.end());
    affected.erase(std::unique(affected.begin(), affected.end()),
                   affected.end());
    touched_.clear();
    for (size_t w : affected) {
      std::vector<int32_t>& syms = words_[w].symbols;
      bool present = false;
      for (size_t i = 0; i + 1 < syms.size(); ++i) {
        if (syms[i] == a && syms[i + 1] == b) present = true;
      }
      if (!present) continue;  // stale index entry
      AddPairs(w, -1);
      std::vector<int32_t> merged;
      merged.reserve(syms.size());
      for (size_t i = 0; i < syms.size(); ++i) {
        if (i + 1 < syms.size() && syms[i] == a && syms[i + 1] == b) {
          merged.push_back(c);
          ++i;
        } else {
          merged.push_back(syms[i]);
        }
      }
      syms = std::move(merged);
      AddPairs(w, +1);
    }
    std::sort(touched_.begin(), touched_.end());
    touched_.erase(std::unique(touched_.begin(), touched_.end()),
                   touched_.end());
    for (uint64_t k : touched_) {
      const auto it = pair_counts_.find(k);
      if (it != pair_counts_.end() && it->second <= 0) {
        pair_counts_.erase(it);
        pair_words_.erase(k);
      } else {
        Push(k);
      }
    }
  }

  // Most frequent first; ties go to the pair whose text sorts first, so the
  // result depends on nothing but the corpus.
  struct Lower {
    const BpeTrainer* trainer;
    bool operator()(const HeapEntry& x, const HeapEntry& y) const {
      if (x.count != y.count) return x.count < y.count;
      const auto& s = trainer->symbols_;
      const std::string& xa = s[x.key >> 32];
      const std::string& ya = s[y.key >> 32];
      if (xa != ya) return xa > ya;
      return s[x.key & 0xffffffffu] > s[y.key & 0xffffffffu];
    }
  };

  absl::flat_hash_set<std::string> forbidden_;
  std::vector<std::string> symbols_;
  absl::flat_hash_map<std::string, int32_t> symbol_ids_;
  std::vector<Word> words_;
  absl::flat_hash_map<std::string, size_t> word_index_;
  absl::flat_hash_map<uint64_t, int64_t> pair_counts_;
  absl::flat_hash_map<uint64_t, std::vector<size_t>> pair_words_;
  std::vector<uint64_t> touched_;
  std::priority_queue<HeapEntry, std::vector<HeapEntry>, Lower> heap_{
      Lower{this}};
};

}  // namespace

absl::Status WriteSentencePieceBpeModel(const std::vector<std::string>& corpus,
                                        int vocab_size,
                                        const std::string& path) {
  // Byte fallback needs its 256 pieces, and U+2581 must be a piece of its
  // own: as bytes it would decode to a literal U+2581 instead of ' '.
  if (vocab_size < kNumReservedPieces + 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": SentencePiece vocab_size ", vocab_size, " is below the ",
        kNumReservedPieces + 1, " pieces byte fallback needs"));
  }

  spm::ModelProto model;
  spm::NormalizerSpec& norm = model.normalizer_spec;
  norm.name = "identity";
  norm.add_dummy_prefix = true;
  norm.remove_extra_whitespaces = false;
  norm.escape_whitespaces = true;

  absl::flat_hash_set<std::string> reserved = {"<unk>", "<s>", "</s>"};
  model.pieces.push_back({"<unk>", 0.0f, spm::PieceType::kUnknown});
  model.pieces.push_back({"<s>", 0.0f, spm::PieceType::kControl});
  model.pieces.push_back({"</s>", 0.0f, spm::PieceType::kControl});
  for (int b = 0; b < 256; ++b) {
    std::string piece = absl::StrFormat("<0x%02X>", b);
    reserved.insert(piece);
    model.pieces.push_back({std::move(piece), 0.0f, spm::PieceType::kByte});
  }

  BpeTrainer trainer(reserved);
  const spm::Normalizer normalizer(norm, nullptr);
  for (const std::string& line : corpus) {
    const std::string normalized = normalizer.Normalize(line);
    const absl::string_view text = normalized;
    // Words start at each U+2581; the first always does (dummy prefix).
    size_t start = 0;
    while (start < text.size()) {
      size_t next = text.find(spm::kSpaceSymbol, start + 1);
      if (next == absl::string_view::npos) next = text.size();
      trainer.AddWord(text.substr(start, next - start));
      start = next;
    }
  }

  std::vector<std::string> chars = trainer.CharsByFrequency();
  chars.erase(std::remove_if(chars.begin(), chars.end(),
                             [](const std::string& c) {
                               return c == spm::kSpaceSymbol || c[0] == '\0';
                             }),
              chars.end());
  chars.insert(chars.begin(), std::string(spm::kSpaceSymbol));
  // Characters come first; merges get what room is left. Characters that do
  // not fit still encode, through byte fallback.
  const size_t room = static_cast<size_t>(vocab_size) - kNumReservedPieces;
  if (chars.size() > room) chars.resize(room);
  const std::vector<std::string> merges = trainer.Train(room - chars.size());

  float score = 0.0f;
  for (const std::string& piece : merges) {
    model.pieces.push_back({piece, score, spm::PieceType::kNormal});
    score -= 1.0f;
  }
  for (const std::string& piece : chars) {
    model.pieces.push_back({piece, score, spm::PieceType::kNormal});
    score -= 1.0f;
  }

  spm::TrainerSpec& ts = model.trainer_spec;
  model.has_trainer_spec = true;
  ts.model_type = spm::kBpe;
  // The vocabulary actually written, which is less than asked for when the
  // corpus runs out of pairs to merge.
  ts.vocab_size = static_cast<int32_t>(model.pieces.size());
  ts.byte_fallback = true;
  ts.unk_id = 0;
  ts.bos_id = 1;
  ts.eos_id = 2;
  ts.pad_id = -1;

  // Check the model loads before replacing anything on disk.
  const std::string bytes = spm::SerializeModelProto(model);
  ES_RETURN_IF_ERROR(ParseSentencePieceTokenizer(bytes, path).status());
  return WriteFileAtomically(path, bytes);
}

}  // namespace edgesplit
