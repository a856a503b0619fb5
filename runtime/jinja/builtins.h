// The filters, tests and methods of the template engine (internal to
// runtime/jinja; jinja.h lists what is supported). Errors carry no line:
// the renderer adds it.
#ifndef EDGESPLIT_RUNTIME_JINJA_BUILTINS_H_
#define EDGESPLIT_RUNTIME_JINJA_BUILTINS_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/jinja/value.h"

namespace edgesplit {
namespace jinja {
namespace internal {

// Limits for untrusted templates: bytes of any string (and of the output),
// items of any list.
inline constexpr size_t kMaxBytes = 16 << 20;
inline constexpr size_t kMaxItems = 1 << 20;

// INVALID_ARGUMENT when `bytes` is past kMaxBytes.
absl::Status CheckSize(size_t bytes);

// Strings count, index and slice by code point, as Python's jinja2 does
// (the JavaScript reference counts UTF-16 units, which differs outside the
// Basic Multilingual Plane): the UTF-8 of each code point.
std::vector<std::string> CodePoints(const std::string& s);

// `s` with every `from` replaced by `to`, refused when the result would
// pass kMaxBytes.
absl::StatusOr<Value> Replace(const std::string& s, const std::string& from,
                              const std::string& to);

// self.method(args) for strings and dicts.
absl::StatusOr<Value> CallMethod(const Value& self, const std::string& method,
                                 const Args& args);
// value | filter(args).
absl::StatusOr<Value> ApplyFilter(const std::string& filter, const Value& v,
                                  const Args& args);
// value is test(args).
absl::StatusOr<bool> ApplyTest(const std::string& test, const Value& v,
                               const Args& args);

}  // namespace internal
}  // namespace jinja
}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_JINJA_BUILTINS_H_
