#include "runtime/tokenizer/gpt2_bpe_tokenizer.h"

#include <algorithm>
#include <array>
#include <climits>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <queue>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "base/file_util.h"
#include "base/status_macros.h"
#include "base/utf8.h"
#include "re2/re2.h"
#include "runtime/tokenizer/byte_level.h"

namespace edgesplit {
namespace {

// ---------------------------------------------------------------------------
// UTF-8.

// Strict decoding (base/utf8.h) rejects overlong forms, surrogates and
// values past U+10FFFF, which a JavaScript TextDecoder would replace: Encode
// cannot match the reference on such input and refuses it instead.
// A vocab or merges token in GPT-2's spelling, turned back into the bytes it
// stands for. Code points outside the byte map (added tokens written
// literally) are kept as their own UTF-8; such a token can never come out of
// BPE, so `byte_level` is false and Encode ignores it.
struct RawToken {
  std::string bytes;
  bool byte_level = true;
};

// Returns false on invalid UTF-8.
bool UnmapToken(absl::string_view token, RawToken* out) {
  const ByteMap& map = GetByteMap();
  out->bytes.clear();
  out->byte_level = true;
  size_t pos = 0;
  while (pos < token.size()) {
    char32_t cp;
    if (!utf8::Decode(token, &pos, &cp)) return false;
    if (cp < ByteMap::kCpLimit && map.cp_to_byte[cp] >= 0) {
      out->bytes.push_back(static_cast<char>(map.cp_to_byte[cp]));
    } else {
      out->byte_level = false;
      utf8::Append(cp, &out->bytes);
    }
  }
  return true;
}

// ---------------------------------------------------------------------------
// Pre-tokenizer. GPT-2's pattern is
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// RE2 has no lookahead and its \s is ASCII-only, so \s is spelled out as the
// JavaScript set (WhiteSpace + LineTerminator; Python's differs: it adds
// U+001C..U+001F and U+0085 and lacks U+FEFF), and the two whitespace
// alternatives become one \s+ whose match Encode trims (see there).

bool IsJsSpace(char32_t cp) {
  return (cp >= '\t' && cp <= '\r') || cp == ' ' || cp == 0xA0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
         cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000 ||
         cp == 0xFEFF;
}

const RE2& PreTokenizer() {
  static const RE2* const re = [] {
    constexpr absl::string_view kSpace =
        R"(\t\n\x{0B}\f\r \x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029})"
        R"(\x{202F}\x{205F}\x{3000}\x{FEFF})";
    const std::string pattern =
        absl::StrCat(R"('s|'t|'re|'ve|'m|'ll|'d| ?\pL+| ?\pN+| ?[^)", kSpace,
                     R"(\pL\pN]+|[)", kSpace, "]+");
    return new RE2(pattern);
  }();
  return *re;
}

// ---------------------------------------------------------------------------
// Vocab JSON: a flat object of token -> id. Parsed by hand (not nlohmann) so
// errors can name the line of the offending entry.

struct VocabEntry {
  std::string token;  // As written (GPT-2's spelling), unescaped.
  int32_t id;
  int line;
};

class VocabParser {
 public:
  VocabParser(absl::string_view text, absl::string_view source)
      : text_(text), source_(source) {}

  absl::Status Parse(std::vector<VocabEntry>* entries) {
    if (text_.substr(0, 3) == "\xEF\xBB\xBF") pos_ = 3;  // UTF-8 BOM.
    SkipSpace();
    ES_RETURN_IF_ERROR(Expect('{'));
    SkipSpace();
    if (Peek() == '}') {
      ++pos_;
    } else {
      while (true) {
        VocabEntry entry;
        entry.line = line_;
        if (Peek() != '"') return Error("expected a string token");
        ES_RETURN_IF_ERROR(ParseString(&entry.token));
        SkipSpace();
        ES_RETURN_IF_ERROR(Expect(':'));
        SkipSpace();
        ES_RETURN_IF_ERROR(ParseId(entry.token, &entry.id));
        entries->push_back(std::move(entry));
        SkipSpace();
        if (Peek() == ',') {
          ++pos_;
          SkipSpace();
          continue;
        }
        ES_RETURN_IF_ERROR(Expect('}'));
        break;
      }
    }
    SkipSpace();
    if (pos_ != text_.size()) return Error("unexpected text after the object");
    return absl::OkStatus();
  }

 private:
  // -1 at the end of the text.
  int Peek() const {
    return pos_ < text_.size() ? static_cast<uint8_t>(text_[pos_]) : -1;
  }

  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(source_, ":", line_, ": malformed vocab JSON: ", what));
  }

  std::string Found() const {
    if (pos_ >= text_.size()) return "end of file";
    return absl::StrCat("\"", absl::CEscape(text_.substr(pos_, 12)), "\"");
  }

  void SkipSpace() {
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c == '\n') {
        ++line_;
      } else if (c != ' ' && c != '\t' && c != '\r') {
        break;
      }
      ++pos_;
    }
  }

  absl::Status Expect(char c) {
    if (Peek() != static_cast<uint8_t>(c)) {
      return Error(
          absl::StrCat("expected '", std::string(1, c), "', found ", Found()));
    }
    ++pos_;
    return absl::OkStatus();
  }

  absl::Status ParseHex4(char32_t* value) {
    *value = 0;
    for (int i = 0; i < 4; ++i, ++pos_) {
      const int c = Peek();
      int digit;
      if (c >= '0' && c <= '9') {
        digit = c - '0';
      } else if (c >= 'a' && c <= 'f') {
        digit = c - 'a' + 10;
      } else if (c >= 'A' && c <= 'F') {
        digit = c - 'A' + 10;
      } else {
        return Error("bad \\u escape");
      }
      *value = (*value << 4) | digit;
    }
    return absl::OkStatus();
  }

  absl::Status ParseString(std::string* out) {
    ++pos_;  // Opening quote.
    while (true) {
      const int c = Peek();
      if (c < 0) return Error("unterminated string");
      ++pos_;
      if (c == '"') return absl::OkStatus();
      if (c < 0x20) return Error("control character in string");
      if (c != '\\') {
        out->push_back(static_cast<char>(c));
        continue;
      }
      const int e = Peek();
      ++pos_;
      constexpr absl::string_view kEscaped = "\"\\/bfnrt";
      constexpr absl::string_view kUnescaped = "\"\\/\b\f\n\r\t";
      if (e >= 0 && kEscaped.find(static_cast<char>(e)) != kEscaped.npos) {
        out->push_back(kUnescaped[kEscaped.find(static_cast<char>(e))]);
        continue;
      }
      if (e != 'u') return Error("bad escape in string");
      char32_t cp;
      ES_RETURN_IF_ERROR(ParseHex4(&cp));
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        char32_t low = 0;
        if (text_.substr(pos_, 2) == "\\u") {
          pos_ += 2;
          ES_RETURN_IF_ERROR(ParseHex4(&low));
        }
        if (low < 0xDC00 || low > 0xDFFF) {
          return Error("unpaired surrogate in \\u escape");
        }
        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
      } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
        return Error("unpaired surrogate in \\u escape");
      }
      utf8::Append(cp, out);
    }
  }

  absl::Status ParseId(absl::string_view token, int32_t* id) {
    const size_t start = pos_;
    auto bad = [&](absl::string_view why) {
      pos_ = start;
      return Error(absl::StrCat("id of token \"", absl::CEscape(token), "\" ",
                                why, ", found ", Found()));
    };
    if (Peek() == '-') return bad("must not be negative");
    if (Peek() < '0' || Peek() > '9') return bad("must be an integer");
    int64_t value = 0;
    while (Peek() >= '0' && Peek() <= '9') {
      value = value * 10 + (Peek() - '0');
      if (value > INT32_MAX) return bad("is too large");
      ++pos_;
    }
    if (Peek() == '.' || Peek() == 'e' || Peek() == 'E') {
      return bad("must be an integer");
    }
    if (text_[start] == '0' && pos_ - start > 1) {
      return bad("has a leading zero");
    }
    *id = static_cast<int32_t>(value);
    return absl::OkStatus();
  }

  absl::string_view text_;
  absl::string_view source_;
  size_t pos_ = 0;
  int line_ = 1;
};

// ---------------------------------------------------------------------------
// The tokenizer. Immutable once built, so Encode and Decode need no locks
// (RE2 objects are thread-safe). encoder.py's per-word cache is left out: it
// made English text ~1.5x faster single-threaded, multilingual text ~1.1x,
// for a lock on every word and a memory bound to manage.

class Gpt2BpeTokenizer final : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Gpt2BpeTokenizer>> Create(
      absl::string_view vocab_json, absl::string_view vocab_source,
      absl::string_view merges_text, absl::string_view merges_source);

  absl::StatusOr<std::vector<int32_t>> Encode(
      absl::string_view text) const override;
  absl::StatusOr<std::string> Decode(
      absl::Span<const int32_t> ids) const override;
  int32_t vocab_size() const override {
    return static_cast<int32_t>(id_to_bytes_.size());
  }

 private:
  struct Merge {
    int32_t rank;    // Lower merges first.
    int32_t result;  // Symbol of the merged pair.
  };
  // Pieces up to this many bytes take the simple quadratic BPE loop; longer
  // ones (runs of CJK, digits or spaces) the heap-based one.
  static constexpr size_t kSmallPiece = 48;

  Gpt2BpeTokenizer() = default;

  // Symbols are interned byte strings: 0..255 the single bytes, then every
  // vocab token and merge result. BPE works on symbol indices only.
  int32_t Intern(const std::string& bytes);
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) |
           static_cast<uint32_t>(b);
  }
  const Merge* FindMerge(int32_t a, int32_t b) const {
    auto it = merges_.find(PairKey(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  }

  // Runs BPE on one pre-token and appends its ids.
  absl::Status EncodePiece(absl::string_view piece,
                           std::vector<int32_t>* ids) const;
  // Writes the symbols of `piece` (at most kSmallPiece bytes) to `symbols`;
  // returns their count.
  size_t BpeSmall(absl::string_view piece, int32_t* symbols) const;
  void BpeHeap(absl::string_view piece, std::vector<int32_t>* symbols) const;

  absl::Status ParseVocab(absl::string_view text, absl::string_view source);
  absl::Status ParseMerges(absl::string_view text, absl::string_view source);

  std::vector<std::string> id_to_bytes_;   // "" for ids the vocab lacks.
  std::vector<int32_t> symbol_id_;         // Symbol -> vocab id, or -1.
  std::vector<std::string> symbol_bytes_;  // Symbol -> its bytes.
  absl::flat_hash_map<std::string, int32_t> symbol_index_;  // Build only.
  absl::flat_hash_map<uint64_t, Merge> merges_;
};

int32_t Gpt2BpeTokenizer::Intern(const std::string& bytes) {
  auto [it, inserted] =
      symbol_index_.try_emplace(bytes, static_cast<int32_t>(symbol_id_.size()));
  if (inserted) {
    symbol_id_.push_back(-1);
    symbol_bytes_.push_back(bytes);
  }
  return it->second;
}

absl::Status Gpt2BpeTokenizer::ParseVocab(absl::string_view text,
                                          absl::string_view source) {
  std::vector<VocabEntry> entries;
  ES_RETURN_IF_ERROR(VocabParser(text, source).Parse(&entries));
  if (entries.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": vocab is empty"));
  }
  int32_t max_id = 0;
  int line = 0;
  for (const VocabEntry& e : entries) {
    if (e.id >= max_id) max_id = e.id, line = e.line;
  }
  // Ids index a dense table: a vocab's ids run 0..N-1 (gaps allowed, but
  // not an id far past the entry count, which would cost gigabytes).
  constexpr int64_t kMaxGap = 1 << 20;
  if (max_id >= static_cast<int64_t>(entries.size()) + kMaxGap) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ":", line, ": id ", max_id, " is far past the ",
                     entries.size(), " entries of the vocab"));
  }
  id_to_bytes_.assign(static_cast<size_t>(max_id) + 1, std::string());
  RawToken raw;
  // Later duplicates win, as in JSON.parse and Python's json.
  for (const VocabEntry& e : entries) {
    if (!UnmapToken(e.token, &raw)) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ":", e.line, ": token is not valid UTF-8: \"",
                       absl::CEscape(e.token), "\""));
    }
    id_to_bytes_[e.id] = raw.bytes;
    if (raw.byte_level) {
      const int32_t symbol = Intern(raw.bytes);
      symbol_id_[symbol] = e.id;
    }
  }
  return absl::OkStatus();
}

absl::Status Gpt2BpeTokenizer::ParseMerges(absl::string_view text,
                                           absl::string_view source) {
  RawToken first, second;
  int line_no = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == absl::string_view::npos) eol = text.size();
    absl::string_view line = text.substr(pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    // encoder.py drops the first line unconditionally; Hugging Face only
    // when it is the "#version" header. Files in the wild always have one.
    if (line_no == 1 && line.substr(0, 8) == "#version") continue;
    std::vector<absl::string_view> parts;
    size_t i = 0;
    while (i < line.size()) {
      while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
      size_t j = i;
      while (j < line.size() && line[j] != ' ' && line[j] != '\t') ++j;
      if (j > i) parts.push_back(line.substr(i, j - i));
      i = j;
    }
    if (parts.empty()) continue;  // Trailing blank line.
    if (parts.size() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ":", line_no,
                       ": malformed merge: expected two "
                       "space-separated tokens, got ",
                       parts.size(), ": \"", absl::CEscape(line), "\""));
    }
    if (!UnmapToken(parts[0], &first) || !UnmapToken(parts[1], &second)) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ":", line_no, ": merge is not valid UTF-8"));
    }
    // A piece outside the byte map can never occur in a word.
    if (!first.byte_level || !second.byte_level) continue;
    const int32_t a = Intern(first.bytes);
    const int32_t b = Intern(second.bytes);
    const int32_t result = Intern(first.bytes + second.bytes);
    // The line number is the rank. A repeated pair keeps its last rank, as
    // encoder.py's dict(zip(merges, range(...))) does.
    merges_.insert_or_assign(PairKey(a, b), Merge{line_no, result});
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Gpt2BpeTokenizer>> Gpt2BpeTokenizer::Create(
    absl::string_view vocab_json, absl::string_view vocab_source,
    absl::string_view merges_text, absl::string_view merges_source) {
  std::unique_ptr<Gpt2BpeTokenizer> tok(new Gpt2BpeTokenizer);
  for (int b = 0; b < 256; ++b) {
    tok->Intern(std::string(1, static_cast<char>(b)));
  }
  ES_RETURN_IF_ERROR(tok->ParseVocab(vocab_json, vocab_source));
  ES_RETURN_IF_ERROR(tok->ParseMerges(merges_text, merges_source));
  tok->symbol_index_ = {};  // Encode needs indices only.
  return tok;
}

size_t Gpt2BpeTokenizer::BpeSmall(absl::string_view piece,
                                  int32_t* word) const {
  // encoder.py's loop: merge every occurrence of the lowest-ranked pair, left
  // to right, until no pair has a rank. rank[i] / result[i] describe the pair
  // (word[i], word[i + 1]) and are looked up again only where a merge changed
  // either side.
  constexpr int32_t kNone = INT32_MAX;
  std::array<int32_t, kSmallPiece> rank{}, result{};
  std::array<bool, kSmallPiece> changed{};
  size_t n = piece.size();
  for (size_t i = 0; i < n; ++i) word[i] = static_cast<uint8_t>(piece[i]);
  auto lookup = [&](size_t i) {
    const Merge* m = FindMerge(word[i], word[i + 1]);
    rank[i] = m != nullptr ? m->rank : kNone;
    result[i] = m != nullptr ? m->result : -1;
  };
  for (size_t i = 0; i + 1 < n; ++i) lookup(i);
  while (n > 1) {
    size_t best = 0;
    for (size_t i = 1; i + 1 < n; ++i) {
      if (rank[i] < rank[best]) best = i;
    }
    const int32_t best_rank = rank[best];
    if (best_rank == kNone) break;
    const int32_t merged = result[best];
    // A rank names one pair, so rank[i] == best_rank finds its occurrences.
    size_t out = best;
    for (size_t i = best; i < n; ++out) {
      if (i + 1 < n && rank[i] == best_rank) {
        word[out] = merged;
        changed[out] = true;
        i += 2;
      } else {
        word[out] = word[i];
        rank[out] = rank[i];
        result[out] = result[i];
        changed[out] = false;
        ++i;
      }
    }
    n = out;
    for (size_t i = best > 0 ? best - 1 : 0; i + 1 < n; ++i) {
      if (changed[i] || changed[i + 1]) lookup(i);
    }
  }
  return n;
}

void Gpt2BpeTokenizer::BpeHeap(absl::string_view piece,
                               std::vector<int32_t>* symbols) const {
  // Same result as BpeSmall in O(n log n): a doubly linked list of symbols
  // (a merge keeps the left node) and a min-heap of candidate pairs. Taking
  // every entry of the lowest rank at once and applying them left to right
  // is exactly one round of encoder.py's loop: pairs a merge creates contain
  // the new, longer symbol, so they are never the pair being merged.
  const int n = static_cast<int>(piece.size());
  std::vector<int32_t> sym(n), prev(n), next(n);
  for (int i = 0; i < n; ++i) {
    sym[i] = static_cast<uint8_t>(piece[i]);
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    int32_t rank;
    int32_t pos;  // Left node.
    int32_t left, right, result;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  auto push = [&](int p) {
    if (p < 0 || next[p] < 0) return;
    const Merge* m = FindMerge(sym[p], sym[next[p]]);
    if (m != nullptr) heap.push({m->rank, p, sym[p], sym[next[p]], m->result});
  };
  for (int i = 0; i + 1 < n; ++i) push(i);
  std::vector<Candidate> round;
  while (!heap.empty()) {
    // Entries come out by position within a rank: already left to right.
    const int32_t rank = heap.top().rank;
    round.clear();
    while (!heap.empty() && heap.top().rank == rank) {
      round.push_back(heap.top());
      heap.pop();
    }
    for (const Candidate& c : round) {
      const int p = c.pos;
      const int q = next[p];
      // Stale: a neighbouring merge changed either side since the push.
      if (sym[p] != c.left || q < 0 || sym[q] != c.right) continue;
      sym[p] = c.result;
      sym[q] = -1;
      next[p] = next[q];
      if (next[q] >= 0) prev[next[q]] = p;
      push(prev[p]);
      push(p);
    }
  }
  symbols->clear();
  for (int p = 0; p >= 0; p = next[p]) symbols->push_back(sym[p]);
}

absl::Status Gpt2BpeTokenizer::EncodePiece(absl::string_view piece,
                                           std::vector<int32_t>* ids) const {
  std::array<int32_t, kSmallPiece> small;
  std::vector<int32_t> large;
  absl::Span<const int32_t> symbols;
  if (piece.size() <= kSmallPiece) {
    symbols = absl::MakeConstSpan(small.data(), BpeSmall(piece, small.data()));
  } else {
    BpeHeap(piece, &large);
    symbols = large;
  }
  for (int32_t s : symbols) {
    const int32_t id = symbol_id_[s];
    if (id < 0) {
      // Only an inconsistent vocab/merges pair (or a vocab missing a byte)
      // gets here: BPE made a token the vocab does not have.
      return absl::FailedPreconditionError(absl::StrCat(
          "GPT-2 BPE: the vocab has no id for token \"",
          absl::CEscape(symbol_bytes_[s]), "\" (from \"", absl::CEscape(piece),
          "\"); do the vocab and merges files match?"));
    }
    ids->push_back(id);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> Gpt2BpeTokenizer::Encode(
    absl::string_view text) const {
  if (const size_t bad = utf8::FirstInvalid(text);
      bad != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("text to encode is not valid UTF-8 (at byte ", bad, ")"));
  }
  const RE2& re = PreTokenizer();
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3);
  const re2::StringPiece input(text.data(), text.size());
  re2::StringPiece match;
  size_t pos = 0;
  while (pos < text.size()) {
    // Every code point is \s, \pL, \pN or the negated class, so a match
    // starts wherever the previous one ended.
    if (!re.Match(input, pos, text.size(), RE2::ANCHOR_START, &match, 1) ||
        match.empty()) {
      return absl::InternalError(
          absl::StrCat("GPT-2 pre-tokenizer found no match at byte ", pos));
    }
    size_t end = pos + match.size();
    // Emulates \s+(?!\S)|\s+ on a whitespace run (the only alternative that
    // can end in whitespace): a run that reaches the end of the text is kept
    // whole; one followed by a non-space gives its last character back to
    // the next token (so " word" keeps its space), unless it is a single
    // character, which the second alternative matches alone.
    if (end < text.size()) {
      size_t last = end - 1;
      while ((static_cast<uint8_t>(text[last]) & 0xC0) == 0x80) --last;
      size_t p = last;
      char32_t cp;
      utf8::Decode(text, &p, &cp);
      if (IsJsSpace(cp) && last > pos) end = last;
    }
    ES_RETURN_IF_ERROR(EncodePiece(text.substr(pos, end - pos), &ids));
    pos = end;
  }
  return ids;
}

absl::StatusOr<std::string> Gpt2BpeTokenizer::Decode(
    absl::Span<const int32_t> ids) const {
  std::string out;
  for (int32_t id : ids) {
    if (id >= 0 && static_cast<size_t>(id) < id_to_bytes_.size()) {
      out += id_to_bytes_[id];
    }
  }
  return out;
}

// JSON string literal for a vocab token, ASCII-only like GPT-2's
// encoder.json.
std::string JsonQuote(absl::string_view utf8) {
  std::string out = "\"";
  size_t pos = 0;
  while (pos < utf8.size()) {
    char32_t cp;
    if (!utf8::Decode(utf8, &pos, &cp)) cp = 0xFFFD, ++pos;
    if (cp == '"' || cp == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(cp));
    } else if (cp >= 0x20 && cp < 0x7F) {
      out.push_back(static_cast<char>(cp));
    } else {
      // Byte tokens are all in the BMP: one \uXXXX escape each.
      out += "\\u";
      for (int shift = 12; shift >= 0; shift -= 4) {
        out.push_back("0123456789abcdef"[(cp >> shift) & 0xF]);
      }
    }
  }
  out.push_back('"');
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> ParseGpt2BpeTokenizer(
    absl::string_view vocab_json, absl::string_view vocab_source,
    absl::string_view merges_text, absl::string_view merges_source) {
  ES_ASSIGN_OR_RETURN(std::unique_ptr<Gpt2BpeTokenizer> tok,
                      Gpt2BpeTokenizer::Create(vocab_json, vocab_source,
                                               merges_text, merges_source));
  return std::unique_ptr<Tokenizer>(std::move(tok));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadGpt2BpeTokenizer(
    const std::string& vocab_path, const std::string& merges_path) {
  ES_ASSIGN_OR_RETURN(std::string vocab, ReadFile(vocab_path));
  ES_ASSIGN_OR_RETURN(std::string merges, ReadFile(merges_path));
  return ParseGpt2BpeTokenizer(vocab, vocab_path, merges, merges_path);
}

absl::Status WriteByteLevelGpt2Tokenizer(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::Status(
        absl::ErrnoToStatusCode(ec.value()),
        absl::StrCat(dir, ": cannot create directory: ", ec.message()));
  }
  const ByteMap& map = GetByteMap();
  std::string vocab = "{\n";
  std::string token;
  for (int id = 0; id < 256; ++id) {
    token.clear();
    utf8::Append(map.byte_to_cp[map.order[id]], &token);
    absl::StrAppend(&vocab, "  ", JsonQuote(token), ": ", id, ",\n");
  }
  absl::StrAppend(&vocab, "  \"<|endoftext|>\": 256\n}\n");
  ES_RETURN_IF_ERROR(WriteFileAtomically(dir + "/vocab.json", vocab));
  return WriteFileAtomically(dir + "/merges.txt", "#version: 0.2\n");
}

}  // namespace edgesplit
