// Parsing untrusted JSON (safetensors headers, config.json, adapter and
// tokenizer configs) safely with nlohmann::json, whose dump(), copy and
// comparison recurse: a 100 KB "[[[[..." would overflow the stack, and a
// bracket-only header expands to gigabytes of nodes. ParseUntrustedJson
// rejects deep nesting before parsing.
#ifndef EDGESPLIT_BASE_JSON_UTIL_H_
#define EDGESPLIT_BASE_JSON_UTIL_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace edgesplit {

// Parses `text` as a JSON object nested at most `max_depth` levels.
// INVALID_ARGUMENT names `source`.
absl::StatusOr<nlohmann::json> ParseUntrustedJson(absl::string_view text,
                                                  absl::string_view source,
                                                  int max_depth = 16);

// Reads a whole file and parses it as above; NOT_FOUND when unreadable.
absl::StatusOr<nlohmann::json> ReadUntrustedJson(const std::string& path,
                                                 int max_depth = 16);

// A short description of a value for error messages (type and a bounded
// prefix of its text), e.g. `string "abc"` or `array [1,2,...`.
std::string DescribeJson(const nlohmann::json& value);

// Appends `s` as a JSON string (RFC 8259): quoted, with quotes,
// backslashes and control characters escaped; other bytes as they are.
void AppendJsonString(absl::string_view s, std::string* out);

}  // namespace edgesplit

#endif  // EDGESPLIT_BASE_JSON_UTIL_H_
