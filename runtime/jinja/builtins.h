// The filters, tests and methods of the template engine (internal to
// runtime/jinja; jinja.h lists what is supported). Errors carry no line:
// the renderer adds it.
#ifndef EDGESPLIT_RUNTIME_JINJA_BUILTINS_H_
#define EDGESPLIT_RUNTIME_JINJA_BUILTINS_H_

#include <cstddef>
#include <cstdint>
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

// A dict key: scalars only (lists and dicts are unhashable, as in Python).
absl::StatusOr<std::string> KeyString(const Value& key);

// The work an operation on these values costs against the step budget:
// one step per KiB of text and per 64 list items.
int64_t Cost(const Value& v);
int64_t Cost(const Value& v, const Args& args);
// Searching text for string arguments (replace, split, startswith): a
// naive search costs text size times needle size.
int64_t SearchCost(const Value& v, const Args& args);

// Strings count, index and slice by code point, as Python's jinja2 does
// (the JavaScript reference counts UTF-16 units, which differs outside the
// Basic Multilingual Plane). The byte offset of each code point of `s`,
// then s.size(); a stray byte counts as one.
std::vector<uint32_t> CodePointOffsets(const std::string& s);
size_t CountCodePoints(const std::string& s);
// Code point `i` of `s`, given its offsets.
std::string CodePoint(const std::string& s, const std::vector<uint32_t>& off,
                      size_t i);

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
