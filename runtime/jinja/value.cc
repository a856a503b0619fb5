#include "runtime/jinja/value.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "base/json_util.h"

namespace edgesplit {
namespace jinja {

Value Value::None() {
  Value v;
  v.kind_ = Kind::kNone;
  return v;
}

Value Value::Bool(bool b) {
  Value v;
  v.kind_ = Kind::kBool;
  v.b_ = b;
  return v;
}

Value Value::Int(int64_t i) {
  Value v;
  v.kind_ = Kind::kInt;
  v.i_ = i;
  return v;
}

Value Value::Float(double d) {
  Value v;
  v.kind_ = Kind::kFloat;
  v.d_ = d;
  return v;
}

Value Value::String(std::string s) {
  Value v;
  v.kind_ = Kind::kString;
  v.s_ = std::make_shared<const std::string>(std::move(s));
  return v;
}

Value Value::MakeArray(Array a) {
  Value v;
  v.kind_ = Kind::kArray;
  v.array_ = std::make_shared<Array>(std::move(a));
  v.ComputeDepth();
  return v;
}

Value Value::MakeObject(Object o) {
  Value v;
  v.kind_ = Kind::kObject;
  v.object_ = std::make_shared<Object>(std::move(o));
  v.ComputeDepth();
  return v;
}

Value Value::MakeNamespace(Object o) {
  Value v = MakeObject(std::move(o));
  v.kind_ = Kind::kNamespace;
  return v;
}

Value Value::MakeFunction(Function f) {
  Value v;
  v.kind_ = Kind::kFunction;
  v.function_ = std::make_shared<Function>(std::move(f));
  return v;
}

Value Value::FromJson(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null:
      return None();
    case nlohmann::ordered_json::value_t::boolean:
      return Bool(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
    case nlohmann::ordered_json::value_t::number_unsigned:
      return Int(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_float:
      return Float(j.get<double>());
    case nlohmann::ordered_json::value_t::string:
      return String(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      Array a;
      for (const auto& e : j) a.push_back(FromJson(e));
      return MakeArray(std::move(a));
    }
    case nlohmann::ordered_json::value_t::object: {
      Object o;
      for (const auto& [k, e] : j.items()) o.emplace_back(k, FromJson(e));
      return MakeObject(std::move(o));
    }
    default:
      return Value();
  }
}

Value* Value::Find(const std::string& key) const {
  if (!is_mapping()) return nullptr;
  for (auto& [k, v] : *object_) {
    if (k == key) return &v;
  }
  return nullptr;
}

void Value::ComputeDepth() {
  int d = 0;
  if (array_ != nullptr) {
    for (const Value& v : *array_) d = std::max(d, v.depth_);
  }
  if (object_ != nullptr) {
    for (const auto& [k, v] : *object_) d = std::max(d, v.depth_);
  }
  depth_ = d + 1;
}

void Value::Set(const std::string& key, Value v) {
  depth_ = std::max(depth_, v.depth_ + 1);
  if (Value* existing = Find(key)) {
    *existing = std::move(v);
  } else {
    object_->emplace_back(key, std::move(v));
  }
}

bool Value::Truthy() const {
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone:
      return false;
    case Kind::kBool:
      return b_;
    case Kind::kInt:
      return i_ != 0;
    case Kind::kFloat:
      return d_ != 0;
    case Kind::kString:
      return !str().empty();
    case Kind::kArray:
      return !array_->empty();
    case Kind::kObject:
      return !object_->empty();
    case Kind::kNamespace:
    case Kind::kFunction:
      return true;
  }
  return false;
}

namespace {

// Numbers as JavaScript's String(number) writes them (the reference engine
// runs on it): integers plainly, others in the shortest form that reads
// back the same.
std::string JsNumber(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  char buf[32];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, d);
    if (std::strtod(buf, nullptr) == d) break;
  }
  return buf;
}

}  // namespace

void Value::AppendJson(int indent, int depth, size_t max_bytes,
                       std::string* out) const {
  if (out->size() > max_bytes) return;
  // A namespace may hold itself ({% set ns.me = ns %}): Python prints such
  // a cycle as [...]; so does this, past a depth no real value reaches.
  if (depth > kMaxDepth) {
    out->append("[...]");
    return;
  }
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone:
    case Kind::kFunction:
      out->append("null");
      return;
    case Kind::kBool:
      out->append(b_ ? "true" : "false");
      return;
    case Kind::kInt:
      absl::StrAppend(out, i_);
      return;
    case Kind::kFloat:
      out->append(JsNumber(d_));
      return;
    case Kind::kString:
      AppendJsonString(str(), out);
      return;
    default:
      break;
  }
  const bool is_list = kind_ == Kind::kArray;
  const size_t n = is_list ? array_->size() : object_->size();
  const std::string pad = indent > 0 ? std::string(indent, ' ') : "";
  std::string base = "\n";
  for (int i = 0; i < depth; ++i) base += pad;
  const std::string child = base + pad;
  const char* item_sep = indent > 0 ? "," : ", ";
  out->push_back(is_list ? '[' : '{');
  for (size_t i = 0; i < n; ++i) {
    if (i > 0) out->append(item_sep);
    if (indent > 0) out->append(child);
    if (is_list) {
      (*array_)[i].AppendJson(indent, depth + 1, max_bytes, out);
    } else {
      AppendJsonString((*object_)[i].first, out);
      out->append(": ");
      (*object_)[i].second.AppendJson(indent, depth + 1, max_bytes, out);
    }
  }
  if (indent > 0 && n > 0) out->append(base);
  out->push_back(is_list ? ']' : '}');
}

std::string Value::ToJson(int indent, size_t max_bytes) const {
  std::string out;
  AppendJson(indent, 0, max_bytes, &out);
  return out;
}

std::string Value::ToString(size_t max_bytes) const {
  switch (kind_) {
    case Kind::kUndefined:
      return "";
    case Kind::kNone:
      return "null";
    case Kind::kBool:
      return b_ ? "true" : "false";
    case Kind::kInt:
      return absl::StrCat(i_);
    case Kind::kFloat:
      if (d_ == std::floor(d_) && std::isfinite(d_)) {
        return absl::StrCat(std::signbit(d_) && d_ == 0 ? "-0" : JsNumber(d_),
                            ".0");
      }
      return JsNumber(d_);
    case Kind::kString:
      return str();
    case Kind::kFunction:
      return "[function]";
    default:
      return ToJson(-1, max_bytes);
  }
}

const std::string& Value::Empty() {
  static const std::string* const empty = new std::string();
  return *empty;
}

absl::StatusOr<bool> Value::Equals(const Value& o) const {
  int64_t budget = 1'000'000;
  const bool equal = EqualsAt(o, 0, &budget);
  if (budget < 0) {
    return absl::InvalidArgumentError("a comparison of values too large");
  }
  return equal;
}

bool Value::EqualsAt(const Value& o, int depth, int64_t* budget) const {
  if (--*budget < 0 || depth > kMaxDepth) return false;
  if (kind_ == o.kind_ && array_ != nullptr && array_ == o.array_) return true;
  if (kind_ == o.kind_ && object_ != nullptr && object_ == o.object_) {
    return true;
  }
  if (is_number() && o.is_number()) return number() == o.number();
  if (kind_ != o.kind_) return false;
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone:
      return true;
    case Kind::kBool:
      return b_ == o.b_;
    case Kind::kString:
      return s_ == o.s_ || str() == o.str();
    case Kind::kArray:
      if (array_->size() != o.array_->size()) return false;
      for (size_t i = 0; i < array_->size(); ++i) {
        if (!(*array_)[i].EqualsAt((*o.array_)[i], depth + 1, budget)) {
          return false;
        }
      }
      return true;
    case Kind::kObject:
    case Kind::kNamespace:
      if (object_->size() != o.object_->size()) return false;
      for (const auto& [k, v] : *object_) {
        const Value* w = o.Find(k);
        if (w == nullptr || !v.EqualsAt(*w, depth + 1, budget)) return false;
      }
      return true;
    default:
      return function_ == o.function_;
  }
}

const char* Value::TypeName() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "undefined";
    case Kind::kNone:
      return "none";
    case Kind::kBool:
      return "boolean";
    case Kind::kInt:
      return "integer";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return "string";
    case Kind::kArray:
      return "list";
    case Kind::kObject:
      return "dict";
    case Kind::kNamespace:
      return "namespace";
    case Kind::kFunction:
      return "function";
  }
  return "?";
}

}  // namespace jinja
}  // namespace edgesplit
