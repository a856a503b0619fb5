#include "base/yaml_util.h"

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace edgesplit {

absl::StatusOr<YAML::Node> YamlReader::Parse(const std::string& text) const {
  try {
    YAML::Node root = YAML::Load(text);
    if (!root.IsMap()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source_, ": expected a YAML mapping at the top level"));
    }
    return root;
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        source_, ":", e.mark.line + 1, ":", e.mark.column + 1, ": ", e.msg));
  }
}

absl::Status YamlReader::Error(const YAML::Node& node, const std::string& field,
                               const std::string& what) const {
  const int line = node.Mark().line >= 0 ? node.Mark().line + 1 : 0;
  return absl::InvalidArgumentError(
      absl::StrCat(source_, ":", line, ": field \"", field, "\": ", what));
}

absl::StatusOr<YAML::Node> YamlReader::Field(const YAML::Node& parent,
                                             const std::string& field) const {
  // yaml-cpp throws on a subscript of a scalar (`nodes: [server-a]` where
  // maps are expected); a null or absent parent has no fields.
  if (!parent.IsDefined() || parent.IsNull()) return YAML::Node();
  if (!parent.IsMap()) {
    return Error(
        parent, field,
        absl::StrCat("its parent is not a map (expected {", field, ": ...})"));
  }
  return parent[field];
}

absl::StatusOr<std::string> YamlReader::String(const YAML::Node& parent,
                                               const std::string& field,
                                               bool required) const {
  ES_ASSIGN_OR_RETURN(const YAML::Node v, Field(parent, field));
  if (!v.IsDefined() || v.IsNull()) {
    if (required) return Error(parent, field, "missing");
    return std::string();
  }
  if (!v.IsScalar()) return Error(v, field, "expected a string");
  return v.Scalar();
}

absl::StatusOr<int64_t> YamlReader::Int(const YAML::Node& parent,
                                        const std::string& field,
                                        int64_t fallback, bool required) const {
  ES_ASSIGN_OR_RETURN(const YAML::Node v, Field(parent, field));
  if (!v.IsDefined() || v.IsNull()) {
    if (required) return Error(parent, field, "missing");
    return fallback;
  }
  int64_t out;
  if (!v.IsScalar() || !YAML::convert<int64_t>::decode(v, out)) {
    return Error(
        v, field,
        absl::StrCat("expected an integer, got \"",
                     v.IsScalar() ? v.Scalar() : "(not a scalar)", "\""));
  }
  return out;
}

absl::StatusOr<int64_t> YamlReader::IntIn(const YAML::Node& parent,
                                          const std::string& field,
                                          int64_t fallback, int64_t min,
                                          int64_t max) const {
  ES_ASSIGN_OR_RETURN(const int64_t v, Int(parent, field, fallback));
  if (v < min || v > max) {
    ES_ASSIGN_OR_RETURN(const YAML::Node n, Field(parent, field));
    return Error(n.IsDefined() ? n : parent, field,
                 absl::StrCat("must be in [", min, ", ", max, "], got ", v));
  }
  return v;
}

absl::StatusOr<bool> YamlReader::Bool(const YAML::Node& parent,
                                      const std::string& field,
                                      bool fallback) const {
  ES_ASSIGN_OR_RETURN(const YAML::Node v, Field(parent, field));
  if (!v.IsDefined() || v.IsNull()) return fallback;
  bool out;
  if (!v.IsScalar() || !YAML::convert<bool>::decode(v, out)) {
    return Error(v, field, "expected true or false");
  }
  return out;
}

}  // namespace edgesplit
