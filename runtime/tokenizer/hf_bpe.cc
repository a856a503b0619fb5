#include "runtime/tokenizer/hf_bpe.h"

#include <cstdio>
#include <queue>

#include "absl/strings/str_cat.h"
#include "base/json_util.h"
#include "base/status_macros.h"
#include "runtime/tokenizer/hf_json.h"

namespace edgesplit {
namespace {

using json = nlohmann::json;

// Ids must fit in int32 with room for id_limit().
constexpr int64_t kMaxId = (int64_t{1} << 31) - 1;

// The library's field errors, under "model.".
absl::Status FieldError(absl::string_view source, absl::string_view field,
                        absl::string_view what) {
  return hf::JsonObject(json(), source, "model").Error(field, what);
}

// A merge entry: "a b" (one space) or ["a", "b"].
absl::StatusOr<std::pair<std::string, std::string>> MergePair(
    const json& entry, size_t index, absl::string_view source) {
  const std::string field = absl::StrCat("merges[", index, "]");
  if (entry.is_string()) {
    const std::string& s = entry.get_ref<const std::string&>();
    const size_t space = s.find(' ');
    if (space == std::string::npos ||
        s.find(' ', space + 1) != std::string::npos) {
      return FieldError(
          source, field,
          absl::StrCat("expected \"a b\", got ", DescribeJson(entry)));
    }
    return std::make_pair(s.substr(0, space), s.substr(space + 1));
  }
  if (entry.is_array() && entry.size() == 2 && entry[0].is_string() &&
      entry[1].is_string()) {
    return std::make_pair(entry[0].get<std::string>(),
                          entry[1].get<std::string>());
  }
  return FieldError(source, field,
                    absl::StrCat("expected \"a b\" or [\"a\", \"b\"], got ",
                                 DescribeJson(entry)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<HfBpe>> HfBpe::Parse(const json& model,
                                                    absl::string_view source) {
  auto bpe = std::unique_ptr<HfBpe>(new HfBpe());
  const hf::JsonObject o(model, source, "model");
  if (auto it = model.find("dropout"); it != model.end() && !it->is_null()) {
    if (!it->is_number() || it->get<double>() != 0.0) {
      return FieldError(source, "dropout",
                        absl::StrCat("BPE dropout is not supported (only "
                                     "deterministic tokenization), got ",
                                     DescribeJson(*it)));
    }
  }
  auto vocab = model.find("vocab");
  if (vocab == model.end() || !vocab->is_object()) {
    return FieldError(source, "vocab", "expected an object {token: id}");
  }
  int64_t max_id = -1;
  for (const auto& [token, id] : vocab->items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
        id.get<int64_t>() >= kMaxId) {
      return FieldError(source, absl::StrCat("vocab[\"", token, "\"]"),
                        absl::StrCat("expected an id in [0, ", kMaxId,
                                     "), got ", DescribeJson(id)));
    }
    max_id = std::max(max_id, id.get<int64_t>());
    bpe->vocab_[token] = static_cast<int32_t>(id.get<int64_t>());
  }
  bpe->id_limit_ = static_cast<int32_t>(max_id + 1);
  for (const auto& [token, id] : bpe->vocab_) bpe->tokens_[id] = token;
  ES_ASSIGN_OR_RETURN(std::string unk, o.OptionalString("unk_token", ""));
  if (!unk.empty()) {
    auto it = bpe->vocab_.find(unk);
    if (it == bpe->vocab_.end()) {
      return FieldError(source, "unk_token",
                        absl::StrCat("\"", unk, "\" is not in the vocab"));
    }
    bpe->unk_id_ = it->second;
  }
  ES_ASSIGN_OR_RETURN(bpe->continuing_subword_prefix_,
                      o.OptionalString("continuing_subword_prefix", ""));
  ES_ASSIGN_OR_RETURN(bpe->end_of_word_suffix_,
                      o.OptionalString("end_of_word_suffix", ""));
  ES_ASSIGN_OR_RETURN(bpe->fuse_unk_, o.OptionalBool("fuse_unk", false));
  ES_ASSIGN_OR_RETURN(bpe->byte_fallback_,
                      o.OptionalBool("byte_fallback", false));
  ES_ASSIGN_OR_RETURN(bpe->ignore_merges_,
                      o.OptionalBool("ignore_merges", false));
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    auto it = bpe->vocab_.find(name);
    bpe->byte_ids_[b] = it == bpe->vocab_.end() ? -1 : it->second;
  }

  auto merges = model.find("merges");
  if (merges == model.end() || !merges->is_array()) {
    return FieldError(source, "merges", "expected an array");
  }
  const size_t prefix_len = bpe->continuing_subword_prefix_.size();
  for (size_t i = 0; i < merges->size(); ++i) {
    ES_ASSIGN_OR_RETURN(auto pair, MergePair((*merges)[i], i, source));
    const auto& [a, b] = pair;
    auto a_it = bpe->vocab_.find(a);
    auto b_it = bpe->vocab_.find(b);
    // The merged token drops the right side's continuing-subword prefix.
    const bool b_has_prefix =
        b.compare(0, prefix_len, bpe->continuing_subword_prefix_) == 0;
    auto new_it = b_has_prefix ? bpe->vocab_.find(a + b.substr(prefix_len))
                               : bpe->vocab_.end();
    if (a_it == bpe->vocab_.end() || b_it == bpe->vocab_.end() ||
        new_it == bpe->vocab_.end()) {
      return FieldError(source, absl::StrCat("merges[", i, "]"),
                        absl::StrCat("\"", a, "\" + \"", b,
                                     "\" names a token the vocab lacks"));
    }
    // A repeated pair keeps its last rank, as the library's map does.
    bpe->merges_[PairKey(a_it->second, b_it->second)] =
        Merge{static_cast<int32_t>(i), new_it->second};
  }
  return bpe;
}

std::optional<int32_t> HfBpe::TokenToId(absl::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* HfBpe::IdToToken(int32_t id) const {
  auto it = tokens_.find(id);
  return it == tokens_.end() ? nullptr : &it->second;
}

const HfBpe::Merge* HfBpe::FindMerge(int32_t a, int32_t b) const {
  auto it = merges_.find(PairKey(a, b));
  return it == merges_.end() ? nullptr : &it->second;
}

void HfBpe::Symbols(absl::string_view word, std::vector<int32_t>* out) const {
  // A pending unk: emitted (or extended, with fuse_unk) lazily, as the
  // library does; byte-fallback tokens do not flush it.
  bool pending_unk = false;
  std::string s;
  size_t pos = 0;
  while (pos < word.size()) {
    const auto b0 = static_cast<unsigned char>(word[pos]);
    size_t len = b0 < 0x80 ? 1 : b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : 2;
    len = std::min(len, word.size() - pos);
    const bool first = pos == 0;
    const bool last = pos + len == word.size();
    s.clear();
    if (!first) s += continuing_subword_prefix_;
    s.append(word.data() + pos, len);
    if (last) s += end_of_word_suffix_;
    pos += len;
    if (auto it = vocab_.find(s); it != vocab_.end()) {
      if (pending_unk) out->push_back(*unk_id_);
      pending_unk = false;
      out->push_back(it->second);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (char c : s)
        all = all && byte_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all) {
        for (char c : s)
          out->push_back(byte_ids_[static_cast<unsigned char>(c)]);
        continue;
      }
    }
    if (!unk_id_.has_value()) continue;  // Dropped, as the library does.
    if (pending_unk && !fuse_unk_) out->push_back(*unk_id_);
    pending_unk = true;
  }
  if (pending_unk) out->push_back(*unk_id_);
}

void HfBpe::MergeAll(std::vector<int32_t>* symbols) const {
  const int n = static_cast<int>(symbols->size());
  if (n < 2) return;
  std::vector<int32_t>& id = *symbols;
  std::vector<int> prev(n), next(n);
  std::vector<bool> alive(n, true);
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  // (rank, position, new id): the lowest rank first, then the leftmost.
  struct Candidate {
    int32_t rank;
    int pos;
    int32_t new_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  for (int i = 0; i + 1 < n; ++i) {
    if (const Merge* m = FindMerge(id[i], id[i + 1])) {
      queue.push({m->rank, i, m->new_id});
    }
  }
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    const int p = top.pos;
    if (!alive[p] || next[p] < 0) continue;
    const int r = next[p];
    const Merge* m = FindMerge(id[p], id[r]);
    if (m == nullptr || m->new_id != top.new_id) continue;  // Stale entry.
    id[p] = top.new_id;
    alive[r] = false;
    next[p] = next[r];
    if (next[r] >= 0) prev[next[r]] = p;
    if (prev[p] >= 0) {
      if (const Merge* pm = FindMerge(id[prev[p]], id[p])) {
        queue.push({pm->rank, prev[p], pm->new_id});
      }
    }
    if (next[p] >= 0) {
      if (const Merge* nm = FindMerge(id[p], id[next[p]])) {
        queue.push({nm->rank, p, nm->new_id});
      }
    }
  }
  int out = 0;
  for (int i = 0; i < n; ++i) {
    if (alive[i]) id[out++] = id[i];
  }
  symbols->resize(out);
}

void HfBpe::Tokenize(absl::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (auto it = vocab_.find(word); it != vocab_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  std::vector<int32_t> symbols;
  Symbols(word, &symbols);
  MergeAll(&symbols);
  ids->insert(ids->end(), symbols.begin(), symbols.end());
}

}  // namespace edgesplit
