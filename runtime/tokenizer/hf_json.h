// Reading the components of a Hugging Face tokenizer.json: typed field
// access whose errors name the file, the field path and the value.
#ifndef EDGESPLIT_RUNTIME_TOKENIZER_HF_JSON_H_
#define EDGESPLIT_RUNTIME_TOKENIZER_HF_JSON_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"

namespace edgesplit {
namespace hf {

// One JSON object at `path` (e.g. "pre_tokenizer.pretokenizers[1]") of the
// file `source`. Does not own `value`, which must outlive it.
class JsonObject {
 public:
  JsonObject(const nlohmann::json& value, absl::string_view source,
             std::string path)
      : value_(value), source_(source), path_(std::move(path)) {}

  // INVALID_ARGUMENT unless the value is an object with a string "type".
  absl::StatusOr<std::string> Type() const;

  // Typed fields. `Optional*` return `fallback` when the field is absent or
  // null; the others require it.
  absl::StatusOr<std::string> String(const char* field) const;
  absl::StatusOr<std::string> OptionalString(const char* field,
                                             std::string fallback) const;
  absl::StatusOr<bool> OptionalBool(const char* field, bool fallback) const;
  absl::StatusOr<int64_t> Int(const char* field, int64_t min,
                              int64_t max) const;
  // A field that must be an array.
  absl::StatusOr<const nlohmann::json*> Array(const char* field) const;
  // The field's value (nullptr when absent).
  const nlohmann::json* Find(const char* field) const;

  std::string FieldPath(absl::string_view field) const;
  absl::Status Error(absl::string_view field, absl::string_view what) const;
  absl::string_view source() const { return source_; }
  const std::string& path() const { return path_; }

 private:
  const nlohmann::json& value_;
  absl::string_view source_;
  std::string path_;
};

// The components listed in the array `field` of `o` (a Sequence's parts),
// each parsed by `parse(value, source, path)`; null entries are skipped.
template <typename T, typename ParseFn>
absl::StatusOr<std::vector<std::unique_ptr<T>>> ParseList(const JsonObject& o,
                                                          const char* field,
                                                          ParseFn parse) {
  ES_ASSIGN_OR_RETURN(const nlohmann::json* parts, o.Array(field));
  std::vector<std::unique_ptr<T>> list;
  for (size_t i = 0; i < parts->size(); ++i) {
    ES_ASSIGN_OR_RETURN(std::unique_ptr<T> part,
                        parse((*parts)[i], o.source(),
                              o.FieldPath(absl::StrCat(field, "[", i, "]"))));
    if (part != nullptr) list.push_back(std::move(part));
  }
  return list;
}

}  // namespace hf
}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_TOKENIZER_HF_JSON_H_
