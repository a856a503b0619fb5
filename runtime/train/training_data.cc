#include "runtime/train/training_data.h"

#include <algorithm>
#include <filesystem>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/file_util.h"
#include "base/json_util.h"
#include "base/status_macros.h"

namespace edgesplit {
namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

absl::StatusOr<std::vector<std::string>> ReadDocuments(
    const std::string& path, const TrainingDataOptions& options) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(path, ": cannot read"));
  if (static_cast<int64_t>(size) > options.max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", size, " bytes is more than the limit of ",
                     options.max_bytes));
  }
  ES_ASSIGN_OR_RETURN(const std::string text, ReadFile(path));
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
  if (!lines.empty() && lines.back().empty()) lines.pop_back();
  std::vector<std::string> docs;
  if (EndsWith(path, ".jsonl")) {
    for (size_t i = 0; i < lines.size(); ++i) {
      const absl::string_view line = lines[i];
      if (absl::StripAsciiWhitespace(line).empty()) continue;
      const int64_t n = static_cast<int64_t>(i) + 1;
      const std::string where = absl::StrCat(path, ":", n);
      ES_ASSIGN_OR_RETURN(nlohmann::json j, ParseUntrustedJson(line, where));
      if (!j.is_object() || !j.contains("text") || !j["text"].is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": expected an object with a \"text\" string"));
      }
      docs.push_back(j["text"].get<std::string>());
    }
  } else {
    std::string doc;
    for (absl::string_view line : lines) {
      if (absl::StripAsciiWhitespace(line).empty()) {
        if (!doc.empty()) docs.push_back(std::move(doc));
        doc.clear();
      } else {
        absl::StrAppend(&doc, doc.empty() ? "" : "\n", line);
      }
    }
    if (!doc.empty()) docs.push_back(std::move(doc));
  }
  if (docs.empty())
    return absl::InvalidArgumentError(absl::StrCat(path, ": no text"));
  return docs;
}

}  // namespace

absl::StatusOr<TrainingData> LoadTrainingData(
    const std::string& path, const Tokenizer& tokenizer,
    const TrainingDataOptions& options) {
  if (options.sequence_tokens < 1) {
    return absl::InvalidArgumentError("sequence_tokens must be >= 1");
  }
  if (!(options.held_out_fraction >= 0 && options.held_out_fraction < 1)) {
    return absl::InvalidArgumentError("held_out_fraction must be in [0, 1)");
  }
  ES_ASSIGN_OR_RETURN(std::vector<std::string> docs,
                      ReadDocuments(path, options));
  TrainingData data;
  data.documents = static_cast<int64_t>(docs.size());
  std::vector<std::vector<int32_t>> windows;
  const size_t span = static_cast<size_t>(options.sequence_tokens) + 1;
  for (const std::string& doc : docs) {
    ES_ASSIGN_OR_RETURN(std::vector<int32_t> ids, tokenizer.EncodePrompt(doc));
    data.tokens += static_cast<int64_t>(ids.size());
    // Windows overlap by one token so every token is a label once.
    for (size_t start = 0; start + 1 < ids.size(); start += span - 1) {
      const size_t end = std::min(ids.size(), start + span);
      windows.emplace_back(ids.begin() + start, ids.begin() + end);
    }
  }
  if (windows.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": no document has two tokens to train on"));
  }
  std::mt19937_64 rng(options.seed);
  std::shuffle(windows.begin(), windows.end(), rng);
  const size_t held =
      static_cast<size_t>(options.held_out_fraction * windows.size());
  data.held_out.assign(std::make_move_iterator(windows.end() - held),
                       std::make_move_iterator(windows.end()));
  windows.resize(windows.size() - held);
  data.train = std::move(windows);
  return data;
}

std::vector<std::vector<size_t>> BatchByLength(
    const std::vector<std::vector<int32_t>>& windows, int64_t max_tokens) {
  std::vector<size_t> order(windows.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return windows[a].size() < windows[b].size();
  });
  std::vector<std::vector<size_t>> batches;
  int64_t tokens = 0;
  for (size_t i : order) {
    const int64_t n = static_cast<int64_t>(windows[i].size()) - 1;  // Inputs.
    if (batches.empty() ||
        (tokens + n > max_tokens && !batches.back().empty())) {
      batches.emplace_back();
      tokens = 0;
    }
    batches.back().push_back(i);
    tokens += n;
  }
  return batches;
}

}  // namespace edgesplit
