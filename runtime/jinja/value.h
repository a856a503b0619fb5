// Values of the Jinja template engine (jinja.h): Python-like dynamic
// values with Jinja's truthiness and reference semantics for lists, dicts
// and namespaces.
#ifndef EDGESPLIT_RUNTIME_JINJA_VALUE_H_
#define EDGESPLIT_RUNTIME_JINJA_VALUE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace edgesplit {
namespace jinja {

class Value;
using Array = std::vector<Value>;
// Insertion-ordered, as Python dicts and JSON objects are.
using Object = std::vector<std::pair<std::string, Value>>;
struct Args {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};
using Function = std::function<absl::StatusOr<Value>(const Args&)>;

// Copying a Value copies a reference for arrays, objects and namespaces
// (as in Python), the value itself otherwise. Not thread-safe: one render
// owns its values.
class Value {
 public:
  enum class Kind {
    kUndefined,
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kArray,
    kObject,
    kNamespace,  // namespace(): an object whose attributes `set` may write.
    kFunction,
  };

  Value() = default;  // Undefined.
  static Value None();
  static Value Bool(bool b);
  static Value Int(int64_t i);
  static Value Float(double d);
  static Value String(std::string s);
  static Value MakeArray(Array a = {});
  static Value MakeObject(Object o = {});
  static Value MakeNamespace(Object o = {});
  static Value MakeFunction(Function f);
  // JSON as Jinja values (objects keep their key order).
  static Value FromJson(const nlohmann::ordered_json& j);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_number() const {
    return kind_ == Kind::kInt || kind_ == Kind::kFloat;
  }
  bool is_array() const { return kind_ == Kind::kArray; }
  bool is_mapping() const {
    return kind_ == Kind::kObject || kind_ == Kind::kNamespace;
  }

  bool bool_value() const { return b_; }
  int64_t int_value() const { return i_; }
  double number() const { return kind_ == Kind::kInt ? i_ : d_; }
  const std::string& str() const { return s_ != nullptr ? *s_ : Empty(); }
  Array& array() const { return *array_; }
  Object& object() const { return *object_; }
  const Function& function() const { return *function_; }

  // A mapping's value for `key`, or nullptr.
  Value* Find(const std::string& key) const;
  // Sets a mapping's value for `key` (appending a new key). The renderer
  // keeps namespaces out of containers, so no value can reach itself.
  void Set(const std::string& key, Value v);

  bool Truthy() const;
  // Output text, as the reference engine prints it: integers plainly, whole
  // floats with ".0", booleans "true"/"false", none "null", undefined "",
  // lists and dicts as JSON.
  // Text of lists and dicts stops early once it passes `max_bytes` (callers
  // compare): shared sub-lists can stand for exponentially much text.
  static constexpr size_t kMaxTextBytes = (16 << 20) + 1;
  std::string ToString(size_t max_bytes = kMaxTextBytes) const;
  // JSON text; `indent` < 0 puts everything on one line. Stops early once
  // the text passes `max_bytes`.
  std::string ToJson(int indent = -1, size_t max_bytes = kMaxTextBytes) const;
  // Equality as Jinja compares (numbers by value, containers deeply).
  // INVALID_ARGUMENT past a million compared elements (shared sub-lists can
  // make a value exponentially large).
  absl::StatusOr<bool> Equals(const Value& other) const;
  const char* TypeName() const;
  // How deeply containers nest in this value (0 for scalars).
  int depth() const { return depth_; }

 private:
  static constexpr int kMaxDepth = 100;
  void AppendJson(int indent, int depth, size_t max_bytes,
                  std::string* out) const;
  bool EqualsAt(const Value& other, int depth, int64_t* budget) const;
  static const std::string& Empty();

  void ComputeDepth();

  Kind kind_ = Kind::kUndefined;
  int depth_ = 0;
  bool b_ = false;
  int64_t i_ = 0;
  double d_ = 0;
  std::shared_ptr<const std::string> s_;  // Shared: copies are O(1).
  std::shared_ptr<Array> array_;
  std::shared_ptr<Object> object_;
  std::shared_ptr<Function> function_;
};

}  // namespace jinja
}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_JINJA_VALUE_H_
