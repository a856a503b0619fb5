// SentencePiece BPE encode/decode, following libsentencepiece 0.1.97 step by
// step (SentencePieceProcessor::Encode/Decode, bpe::Model::SampleEncode with
// alpha 0, ModelInterface::InitializePieces) so that ids and text come out
// identical; sentencepiece_reference_test checks that against the library.
// The trainer behind WriteSentencePieceBpeModel is sentencepiece_trainer.cc.
#include "runtime/tokenizer/sentencepiece_tokenizer.h"

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <queue>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "base/file_util.h"
#include "base/status_macros.h"
#include "runtime/tokenizer/sentencepiece_model.h"
#include "runtime/tokenizer/sentencepiece_normalizer.h"

namespace edgesplit {
namespace {

using spm::PieceType;

// libsentencepiece refuses pieces this long (ModelInterface::kMaxPieceSize).
constexpr size_t kMaxPieceSize = 8000;

// "<0x41>" -> 0x41; -1 unless the piece is exactly "<0xXX>" with uppercase
// hex digits, the only spelling sentencepiece's PieceToByte accepts.
int PieceToByte(absl::string_view piece) {
  if (piece.size() != 6 || !absl::StartsWith(piece, "<0x") || piece[5] != '>') {
    return -1;
  }
  int value = 0;
  for (int i = 3; i < 5; ++i) {
    const char c = piece[i];
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else {
      return -1;
    }
    value = value * 16 + digit;
  }
  return value;
}

class SentencePieceTokenizer : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> Create(
      const spm::ModelProto& model, absl::string_view source);

  absl::StatusOr<std::vector<int32_t>> Encode(
      absl::string_view text) const override;
  absl::StatusOr<std::string> Decode(
      absl::Span<const int32_t> ids) const override;
  int32_t vocab_size() const override {
    return static_cast<int32_t>(pieces_.size());
  }

 private:
  // A segment of the normalized text and the id PieceToId gives it.
  struct Segment {
    absl::string_view piece;
    int32_t id;
  };
  // Ids plus, for self-tests, the piece strings libsentencepiece reports.
  struct Encoded {
    std::vector<int32_t> ids;
    std::vector<std::string> pieces;
  };

  SentencePieceTokenizer() = default;
  absl::Status Init(const spm::ModelProto& model);

  // ModelInterface::PieceToId: reserved (CONTROL/UNKNOWN/BYTE) pieces win
  // over normal ones with the same text; anything else is unk.
  int32_t PieceToId(absl::string_view piece) const {
    if (auto it = piece_to_id_.find(piece); it != piece_to_id_.end()) {
      return it->second;
    }
    return unk_id_;
  }
  PieceType type(int32_t id) const { return types_[id]; }
  // Id of `piece` among bpe_pieces_, or -1.
  int32_t BpePieceId(absl::string_view piece) const {
    if (piece.size() == 1) {
      return single_byte_bpe_id_[static_cast<unsigned char>(piece[0])];
    }
    const auto it = bpe_pieces_.find(piece);
    return it == bpe_pieces_.end() ? -1 : it->second;
  }
  static uint64_t PairKey(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }

  // bpe::Model::SampleEncode(normalized, alpha = 0).
  std::vector<Segment> BpeEncode(absl::string_view normalized) const;
  // SentencePieceProcessor::Encode + PopulateSentencePieceText.
  absl::Status EncodeImpl(absl::string_view text, Encoded* out,
                          bool want_pieces) const;
  absl::Status RunSelfTests(
      const std::vector<spm::SelfTestSample>& samples) const;

  std::string source_;               // names the model in errors
  std::vector<std::string> pieces_;  // id -> piece
  std::vector<float> scores_;
  std::vector<PieceType> types_;
  // Candidate merges: NORMAL, USER_DEFINED and UNUSED pieces.
  absl::flat_hash_map<std::string, int32_t> bpe_pieces_;
  // (left, right) bpe piece ids -> id of their concatenation in
  // bpe_pieces_, for every way of splitting a piece into two pieces. Same
  // answers as looking the concatenated text up, much faster.
  absl::flat_hash_map<uint64_t, int32_t> merges_;
  int32_t single_byte_bpe_id_[256];
  // Everything, reserved pieces overriding normal ones.
  absl::flat_hash_map<std::string, int32_t> piece_to_id_;
  std::vector<int32_t> canonical_id_;  // id -> PieceToId(IdToPiece(id))
  int32_t unk_id_ = -1;
  bool byte_fallback_ = false;
  bool has_unused_ = false;
  int32_t byte_ids_[256] = {};
  std::vector<int16_t> byte_value_;  // id -> byte of a BYTE piece, else -1
  std::string unk_surface_;
  bool strip_leading_space_ = false;
  bool remove_extra_whitespaces_ = false;
  spm::PrefixMatcher matcher_;
  std::unique_ptr<spm::Normalizer> normalizer_;
};

absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>>
SentencePieceTokenizer::Create(const spm::ModelProto& model,
                               absl::string_view source) {
  std::unique_ptr<SentencePieceTokenizer> tok(new SentencePieceTokenizer());
  tok->source_ = std::string(source);
  ES_RETURN_IF_ERROR(tok->Init(model));
  return tok;
}

absl::Status SentencePieceTokenizer::Init(const spm::ModelProto& model) {
  auto error = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(
        source_, ": unsupported or invalid SentencePiece model: ", what));
  };
  const spm::TrainerSpec& trainer = model.trainer_spec;
  const spm::NormalizerSpec& norm = model.normalizer_spec;
  if (model.pieces.empty()) return error("no pieces");
  if (!model.has_trainer_spec) {
    // Without one the proto default applies, which is UNIGRAM.
    return error(
        "no trainer_spec, so model_type defaults to UNIGRAM; only "
        "BPE models are supported");
  }
  if (trainer.model_type != spm::kBpe) {
    const char* name = trainer.model_type == spm::kUnigram ? "UNIGRAM"
                       : trainer.model_type == spm::kWord  ? "WORD"
                       : trainer.model_type == spm::kChar  ? "CHAR"
                                                           : "unknown";
    return error(absl::StrCat("model_type ", trainer.model_type, " (", name,
                              "); only BPE models are supported"));
  }
  if (trainer.treat_whitespace_as_suffix) {
    return error("treat_whitespace_as_suffix is not supported");
  }
  if (!norm.precompiled_charsmap.empty()) {
    return error(absl::StrCat("normalizer '", norm.name,
                              "' has a precompiled charsmap; only identity "
                              "normalization is supported"));
  }
  if (model.has_denormalizer_spec &&
      !model.denormalizer_spec.precompiled_charsmap.empty()) {
    return error("denormalizer charsmaps are not supported");
  }
  if (model.pieces.size() > static_cast<size_t>(INT32_MAX)) {
    return error("too many pieces");
  }

  // ModelInterface::InitializePieces, with the same checks.
  byte_fallback_ = trainer.byte_fallback;
  const size_t n = model.pieces.size();
  pieces_.reserve(n);
  scores_.reserve(n);
  types_.reserve(n);
  byte_value_.assign(n, -1);
  absl::flat_hash_map<std::string, int32_t> reserved;
  std::vector<std::string> user_defined;
  bool byte_found[256] = {};
  for (size_t i = 0; i < n; ++i) {
    const spm::ModelPiece& p = model.pieces[i];
    const int32_t id = static_cast<int32_t>(i);
    if (p.piece.empty()) return error(absl::StrCat("piece ", i, " is empty"));
    if (p.piece.size() >= kMaxPieceSize) {
      return error(absl::StrCat("piece ", i, " is too long"));
    }
    if (p.piece.find('\0') != std::string::npos) {
      return error(absl::StrCat("piece ", i, " contains a NUL character"));
    }
    if (std::isnan(p.score)) {
      return error(absl::StrCat("piece ", i, " has a NaN score"));
    }
    const bool is_normal = p.type == PieceType::kNormal ||
                           p.type == PieceType::kUserDefined ||
                           p.type == PieceType::kUnused;
    auto& target = is_normal ? bpe_pieces_ : reserved;
    if (!target.emplace(p.piece, id).second) {
      return error(absl::StrCat("piece '", absl::CHexEscape(p.piece),
                                "' is defined twice"));
    }
    if (p.type == PieceType::kUserDefined) user_defined.push_back(p.piece);
    if (p.type == PieceType::kUnused) has_unused_ = true;
    if (p.type == PieceType::kUnknown) {
      if (unk_id_ >= 0) return error("more than one UNKNOWN piece");
      unk_id_ = id;
    }
    if (p.type == PieceType::kByte) {
      if (!byte_fallback_) {
        return error(absl::StrCat("byte piece ", p.piece,
                                  " although byte_fallback is false"));
      }
      const int byte = PieceToByte(p.piece);
      if (byte < 0) {
        return error(absl::StrCat("invalid byte piece '",
                                  absl::CHexEscape(p.piece), "'"));
      }
      byte_found[byte] = true;
      byte_value_[i] = static_cast<int16_t>(byte);
    }
    pieces_.push_back(p.piece);
    scores_.push_back(p.score);
    types_.push_back(p.type);
  }
  if (unk_id_ < 0) return error("no UNKNOWN piece");
  if (byte_fallback_) {
    for (int b = 0; b < 256; ++b) {
      if (!byte_found[b]) {
        return error(absl::StrFormat(
            "byte_fallback is set but piece <0x%02X> is missing", b));
      }
    }
  }

  for (int b = 0; b < 256; ++b) {
    const auto it = bpe_pieces_.find(std::string(1, static_cast<char>(b)));
    single_byte_bpe_id_[b] = it == bpe_pieces_.end() ? -1 : it->second;
  }
  for (const auto& [piece, id] : bpe_pieces_) {
    const absl::string_view text = piece;
    for (size_t k = 1; k < text.size(); ++k) {
      const auto left = bpe_pieces_.find(text.substr(0, k));
      if (left == bpe_pieces_.end()) continue;
      const auto right = bpe_pieces_.find(text.substr(k));
      if (right == bpe_pieces_.end()) continue;
      merges_[PairKey(left->second, right->second)] = id;
    }
  }
  piece_to_id_ = bpe_pieces_;
  for (const auto& [piece, id] : reserved) piece_to_id_[piece] = id;
  canonical_id_.resize(n);
  for (size_t i = 0; i < n; ++i) canonical_id_[i] = PieceToId(pieces_[i]);
  if (byte_fallback_) {
    for (int b = 0; b < 256; ++b) {
      byte_ids_[b] = PieceToId(absl::StrFormat("<0x%02X>", b));
    }
  }

  // SentencePieceProcessor::Decode reads unk_surface through c_str().
  unk_surface_ = trainer.unk_surface.substr(0, trainer.unk_surface.find('\0'));
  strip_leading_space_ = norm.add_dummy_prefix || norm.remove_extra_whitespaces;
  remove_extra_whitespaces_ = norm.remove_extra_whitespaces;
  matcher_ = spm::PrefixMatcher(user_defined);
  normalizer_ = std::make_unique<spm::Normalizer>(norm, &matcher_);
  return RunSelfTests(model.self_test_samples);
}

absl::Status SentencePieceTokenizer::RunSelfTests(
    const std::vector<spm::SelfTestSample>& samples) const {
  // libsentencepiece refuses to load a model whose embedded samples no longer
  // encode as recorded; do the same rather than silently differ.
  for (const spm::SelfTestSample& sample : samples) {
    Encoded encoded;
    ES_RETURN_IF_ERROR(EncodeImpl(sample.input, &encoded, true));
    const std::string actual = absl::StrJoin(encoded.pieces, " ");
    if (actual != sample.expected) {
      return absl::InvalidArgumentError(
          absl::StrCat(source_, ": SentencePiece self-test failed: '",
                       absl::CHexEscape(sample.input), "' encodes as '",
                       absl::CHexEscape(actual), "', model expects '",
                       absl::CHexEscape(sample.expected), "'"));
    }
  }
  return absl::OkStatus();
}

std::vector<SentencePieceTokenizer::Segment> SentencePieceTokenizer::BpeEncode(
    absl::string_view normalized) const {
  struct Symbol {
    int32_t prev;  // -1: none
    int32_t next;  // -1: none
    uint32_t begin;
    uint32_t size;  // 0: merged away
    int32_t id;     // id in bpe_pieces_ of its text, -1 if not there
    bool freeze;    // user-defined symbol: never merged
  };
  struct Pair {
    float score;
    int32_t left;
    int32_t right;
    uint32_t size;
    int32_t id;
  };
  // Highest score first, ties to the leftmost pair (bpe_model.cc's
  // SymbolPairComparator). Equal (score, left) pairs can never both be live,
  // so the heap's tie order does not matter.
  struct Lower {
    bool operator()(const Pair& a, const Pair& b) const {
      return a.score < b.score || (a.score == b.score && a.left > b.left);
    }
  };

  std::vector<Symbol> symbols;
  symbols.reserve(normalized.size());
  {
    const bool have_matcher = !matcher_.empty();
    uint32_t pos = 0;
    const uint32_t total = static_cast<uint32_t>(normalized.size());
    while (pos < total) {
      Symbol s;
      bool found = false;
      size_t len;
      if (have_matcher) {
        len = matcher_.PrefixMatch(normalized.substr(pos), &found);
      } else {
        len = std::min<size_t>(total - pos, spm::OneCharLen(normalized[pos]));
      }
      const int32_t index = static_cast<int32_t>(symbols.size());
      s.prev = index - 1;
      s.next = pos + len < total ? index + 1 : -1;
      s.begin = pos;
      s.size = static_cast<uint32_t>(len);
      s.id = BpePieceId(normalized.substr(pos, len));
      s.freeze = found;
      symbols.push_back(s);
      pos += static_cast<uint32_t>(len);
    }
  }
  if (symbols.empty()) return {};

  // Merged text -> size of its left part, last recorded wins, as
  // bpe_model.cc's rev_merge: UNUSED pieces are split back along it.
  absl::flat_hash_map<absl::string_view, uint32_t> rev_merge;
  std::vector<Pair> heap_storage;
  heap_storage.reserve(symbols.size());
  std::priority_queue<Pair, std::vector<Pair>, Lower> agenda(
      Lower(), std::move(heap_storage));

  auto maybe_add_pair = [&](int32_t left, int32_t right) {
    if (left == -1 || right == -1 || symbols[left].freeze ||
        symbols[right].freeze) {
      return;
    }
    const absl::string_view piece = normalized.substr(
        symbols[left].begin, symbols[left].size + symbols[right].size);
    int32_t id;
    if (symbols[left].id >= 0 && symbols[right].id >= 0) {
      // Both halves are pieces: an integer lookup instead of hashing text.
      const auto it =
          merges_.find(PairKey(symbols[left].id, symbols[right].id));
      if (it == merges_.end()) return;
      id = it->second;
    } else {
      const auto it = bpe_pieces_.find(piece);
      if (it == bpe_pieces_.end()) return;
      id = it->second;
    }
    agenda.push(Pair{scores_[id], left, right,
                     static_cast<uint32_t>(piece.size()), id});
    if (has_unused_ && types_[id] == PieceType::kUnused) {
      rev_merge[piece] = symbols[left].size;
    }
  };

  for (size_t i = 1; i < symbols.size(); ++i) {
    maybe_add_pair(static_cast<int32_t>(i - 1), static_cast<int32_t>(i));
  }

  while (!agenda.empty()) {
    const Pair top = agenda.top();
    agenda.pop();
    Symbol& left = symbols[top.left];
    Symbol& right = symbols[top.right];
    // Stale: one side was merged into something else since the push.
    if (left.size == 0 || right.size == 0 ||
        left.size + right.size != top.size) {
      continue;
    }
    left.size += right.size;
    left.id = top.id;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.left;
    right.size = 0;
    maybe_add_pair(left.prev, top.left);
    maybe_add_pair(top.left, left.next);
  }

  std::vector<Segment> output;
  output.reserve(symbols.size());
  std::vector<absl::string_view> stack;
  for (int32_t index = 0; index != -1; index = symbols[index].next) {
    const Symbol& s = symbols[index];
    const absl::string_view piece = normalized.substr(s.begin, s.size);
    const int32_t id = s.id >= 0 ? canonical_id_[s.id] : PieceToId(piece);
    if (!has_unused_ || types_[id] != PieceType::kUnused) {
      output.push_back(Segment{piece, id});
      continue;
    }
    // Resegment UNUSED pieces along their recorded merges, depth first.
    stack.assign(1, piece);
    while (!stack.empty()) {
      const absl::string_view w = stack.back();
      stack.pop_back();
      const int32_t wid = PieceToId(w);
      const auto it = rev_merge.find(w);
      if (types_[wid] != PieceType::kUnused || it == rev_merge.end()) {
        output.push_back(Segment{w, wid});
        continue;
      }
      stack.push_back(w.substr(it->second));
      stack.push_back(w.substr(0, it->second));
    }
  }
  return output;
}

absl::Status SentencePieceTokenizer::EncodeImpl(absl::string_view text,
                                                Encoded* out,
                                                bool want_pieces) const {
  const std::string normalized = normalizer_->Normalize(text);
  const std::vector<Segment> segments = BpeEncode(normalized);
  out->ids.reserve(segments.size());
  size_t consumed = 0;
  bool is_prev_unk = false;
  for (const Segment& seg : segments) {
    const PieceType t = type(seg.id);
    const bool is_unk = t == PieceType::kUnknown;
    if (t == PieceType::kControl) {
      // A control piece consumes no text (and so fails the check below),
      // exactly as in PopulateSentencePieceText.
      out->ids.push_back(seg.id);
      if (want_pieces) out->pieces.emplace_back(seg.piece);
    } else if (is_unk && byte_fallback_) {
      for (char c : seg.piece) {
        const int32_t id = byte_ids_[static_cast<unsigned char>(c)];
        out->ids.push_back(id);
        if (want_pieces) out->pieces.push_back(pieces_[id]);
      }
      consumed += seg.piece.size();
    } else if (is_unk && is_prev_unk) {
      // Runs of unknown pieces merge into one unk.
      if (want_pieces) absl::StrAppend(&out->pieces.back(), seg.piece);
      consumed += seg.piece.size();
    } else {
      out->ids.push_back(seg.id);
      if (want_pieces) out->pieces.emplace_back(seg.piece);
      consumed += seg.piece.size();
    }
    is_prev_unk = is_unk;
  }
  if (consumed != normalized.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        source_,
        ": SentencePiece encode: a CONTROL piece matched input text, "
        "so not all of the text was consumed (libsentencepiece fails the same "
        "way)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> SentencePieceTokenizer::Encode(
    absl::string_view text) const {
  Encoded encoded;
  ES_RETURN_IF_ERROR(EncodeImpl(text, &encoded, false));
  return std::move(encoded.ids);
}

absl::StatusOr<std::string> SentencePieceTokenizer::Decode(
    absl::Span<const int32_t> ids) const {
  std::string text;
  std::string bytes;  // pending BYTE pieces
  // Byte pieces decode together as UTF-8, each byte that does not start a
  // well-formed character becoming U+FFFD.
  auto flush_bytes = [&]() {
    absl::string_view rest = bytes;
    while (!rest.empty()) {
      size_t length = 0;
      if (spm::DecodeUtf8Char(rest, &length)) {
        text.append(rest.data(), length);
      } else {
        text.append(spm::kReplacementChar.data(), spm::kReplacementChar.size());
      }
      rest.remove_prefix(length);
    }
    bytes.clear();
  };

  // The dummy prefix is undone by dropping the U+2581 that starts the first
  // text piece, and only that one: once a piece has given up its U+2581, or
  // any text has been produced, later pieces keep theirs. With
  // remove_extra_whitespaces, U+2581-only pieces keep being dropped while the
  // output is still empty (the encoder never produces leading spaces then).
  bool is_bos_ws = true;
  bool bos_ws_seen = false;
  for (const int32_t raw_id : ids) {
    // Ids past the vocabulary (models pad it) are dropped, as if absent.
    if (raw_id < 0 || raw_id >= vocab_size()) continue;
    const int32_t id = canonical_id_[raw_id];
    const PieceType t = type(id);
    if (t == PieceType::kByte) {
      bytes.push_back(static_cast<char>(byte_value_[id]));
      continue;
    }
    flush_bytes();
    if (bos_ws_seen || !text.empty()) is_bos_ws = false;
    bos_ws_seen = false;
    if (t == PieceType::kControl) continue;
    if (t == PieceType::kUnknown) {
      text += unk_surface_;
      continue;
    }
    absl::string_view piece = pieces_[id];
    if (is_bos_ws && strip_leading_space_) {
      bos_ws_seen = absl::ConsumePrefix(&piece, spm::kSpaceSymbol) &&
                    !remove_extra_whitespaces_;
    }
    text += absl::StrReplaceAll(piece, {{spm::kSpaceSymbol, " "}});
  }
  flush_bytes();
  return text;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> ParseSentencePieceTokenizer(
    absl::string_view model_proto, absl::string_view source) {
  ES_ASSIGN_OR_RETURN(spm::ModelProto model,
                      spm::ParseModelProto(model_proto, source));
  ES_ASSIGN_OR_RETURN(std::unique_ptr<SentencePieceTokenizer> tok,
                      SentencePieceTokenizer::Create(model, source));
  return std::unique_ptr<Tokenizer>(std::move(tok));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePieceTokenizer(
    const std::string& model_path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(model_path, ec)) {
    return absl::NotFoundError(
        absl::StrCat(model_path, ": cannot open SentencePiece model"));
  }
  ES_ASSIGN_OR_RETURN(std::string bytes, ReadFile(model_path));
  return ParseSentencePieceTokenizer(bytes, model_path);
}

}  // namespace edgesplit
