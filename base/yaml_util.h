// Reading typed fields from yaml-cpp nodes with errors that name the file,
// line and field, and never throw (yaml-cpp's conversions do).
#ifndef EDGESPLIT_BASE_YAML_UTIL_H_
#define EDGESPLIT_BASE_YAML_UTIL_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "yaml-cpp/yaml.h"

namespace edgesplit {

class YamlReader {
 public:
  explicit YamlReader(std::string source) : source_(std::move(source)) {}

  // Parses a document; errors carry yaml-cpp's line and column.
  absl::StatusOr<YAML::Node> Parse(const std::string& text) const;

  absl::Status Error(const YAML::Node& node, const std::string& field,
                     const std::string& what) const;
  // parent[field]; an error (not yaml-cpp's exception) when `parent` is a
  // scalar or list, an undefined node when it is absent or null.
  absl::StatusOr<YAML::Node> Field(const YAML::Node& parent,
                                   const std::string& field) const;
  absl::StatusOr<std::string> String(const YAML::Node& parent,
                                     const std::string& field,
                                     bool required = true) const;
  absl::StatusOr<int64_t> Int(const YAML::Node& parent,
                              const std::string& field, int64_t fallback,
                              bool required = false) const;
  // An integer in [min, max] (so later unit conversions cannot overflow);
  // the error names the field, the range and the value.
  absl::StatusOr<int64_t> IntIn(const YAML::Node& parent,
                                const std::string& field, int64_t fallback,
                                int64_t min, int64_t max) const;
  absl::StatusOr<bool> Bool(const YAML::Node& parent, const std::string& field,
                            bool fallback) const;
  const std::string& source() const { return source_; }

 private:
  std::string source_;
};

}  // namespace edgesplit

#endif  // EDGESPLIT_BASE_YAML_UTIL_H_
