#include "runtime/tokenizer/hf_json.h"

#include "absl/strings/str_cat.h"
#include "base/json_util.h"

namespace edgesplit {
namespace hf {

std::string JsonObject::FieldPath(absl::string_view field) const {
  if (path_.empty()) return std::string(field);
  if (field.empty()) return path_;
  return absl::StrCat(path_, ".", field);
}

absl::Status JsonObject::Error(absl::string_view field,
                               absl::string_view what) const {
  return absl::InvalidArgumentError(
      absl::StrCat(source_, ": ", FieldPath(field), ": ", what));
}

absl::StatusOr<std::string> JsonObject::Type() const {
  if (!value_.is_object()) {
    return Error(
        "", absl::StrCat("expected an object, got ", DescribeJson(value_)));
  }
  return String("type");
}

const nlohmann::json* JsonObject::Find(const char* field) const {
  if (!value_.is_object()) return nullptr;
  auto it = value_.find(field);
  return it == value_.end() ? nullptr : &*it;
}

absl::StatusOr<std::string> JsonObject::String(const char* field) const {
  const nlohmann::json* v = Find(field);
  if (v == nullptr || !v->is_string()) {
    return Error(field, absl::StrCat("expected a string, got ",
                                     v ? DescribeJson(*v) : "nothing"));
  }
  return v->get<std::string>();
}

absl::StatusOr<std::string> JsonObject::OptionalString(
    const char* field, std::string fallback) const {
  const nlohmann::json* v = Find(field);
  if (v == nullptr || v->is_null()) return fallback;
  return String(field);
}

absl::StatusOr<bool> JsonObject::OptionalBool(const char* field,
                                              bool fallback) const {
  const nlohmann::json* v = Find(field);
  if (v == nullptr || v->is_null()) return fallback;
  if (!v->is_boolean()) {
    return Error(
        field, absl::StrCat("expected true or false, got ", DescribeJson(*v)));
  }
  return v->get<bool>();
}

absl::StatusOr<int64_t> JsonObject::Int(const char* field, int64_t min,
                                        int64_t max) const {
  const nlohmann::json* v = Find(field);
  if (v == nullptr || !v->is_number_integer() || v->get<int64_t>() < min ||
      v->get<int64_t>() > max) {
    return Error(field,
                 absl::StrCat("expected an integer in [", min, ", ", max,
                              "], got ", v ? DescribeJson(*v) : "nothing"));
  }
  return v->get<int64_t>();
}

absl::StatusOr<const nlohmann::json*> JsonObject::Array(
    const char* field) const {
  const nlohmann::json* v = Find(field);
  if (v == nullptr || !v->is_array()) {
    return Error(field, absl::StrCat("expected an array, got ",
                                     v ? DescribeJson(*v) : "nothing"));
  }
  return v;
}

}  // namespace hf
}  // namespace edgesplit
