// The filters, tests and methods templates call (jinja.h lists them),
// bounded for untrusted templates.
#include "runtime/jinja/builtins.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"

namespace edgesplit {
namespace jinja {
namespace internal {

absl::Status CheckSize(size_t bytes) {
  if (bytes > kMaxBytes) {
    return absl::InvalidArgumentError("a value would exceed 16 MiB");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> KeyString(const Value& key) {
  if (key.is_array() || key.is_mapping() ||
      key.kind() == Value::Kind::kFunction) {
    return absl::InvalidArgumentError(
        absl::StrCat("a ", key.TypeName(), " cannot be a dict key"));
  }
  return key.ToString();
}

int64_t Cost(const Value& v) {
  if (v.is_string()) return static_cast<int64_t>(v.str().size() / 1024);
  if (v.is_array()) return static_cast<int64_t>(v.array().size() / 64);
  if (v.is_mapping()) return static_cast<int64_t>(v.object().size() / 64);
  return 0;
}

int64_t Cost(const Value& v, const Args& args) {
  int64_t cost = 1 + Cost(v);
  for (const Value& a : args.positional) cost += Cost(a);
  for (const auto& [k, a] : args.keyword) cost += Cost(a);
  return cost;
}

int64_t SearchCost(const Value& v, const Args& args) {
  if (!v.is_string()) return 0;
  int64_t cost = 0;
  for (const Value& a : args.positional) {
    if (a.is_string()) {
      cost += static_cast<int64_t>((v.str().size() + 1) * (a.str().size() + 1) /
                                   4096);
    }
  }
  return cost;
}

namespace {

// Bytes of the UTF-8 character at s[i] (1 for a stray byte).
size_t CharLength(const std::string& s, size_t i) {
  const auto b = static_cast<unsigned char>(s[i]);
  const size_t n = b < 0x80    ? 1
                   : b >= 0xF0 ? 4
                   : b >= 0xE0 ? 3
                   : b >= 0xC0 ? 2
                               : 1;
  return std::min(n, s.size() - i);
}

// Python's str.strip() set when no characters are given.
bool IsStripSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
         c == '\v';
}

std::string Strip(const std::string& s, bool left, bool right,
                  const std::string* chars) {
  // Without `chars`, ASCII whitespace; with them, any of their characters
  // (whole UTF-8 sequences, never single bytes of one).
  auto strip_at = [&](size_t b, size_t n) {
    if (chars == nullptr) return n == 1 && IsStripSpace(s[b]);
    for (size_t k = 0; k < chars->size(); k += CharLength(*chars, k)) {
      const size_t m = CharLength(*chars, k);
      if (m == n && chars->compare(k, m, s, b, n) == 0) return true;
    }
    return false;
  };
  const std::vector<uint32_t> off = CodePointOffsets(s);
  size_t first = 0, last = off.size() - 1;  // Code point indices.
  if (left) {
    while (first < last && strip_at(off[first], off[first + 1] - off[first])) {
      ++first;
    }
  }
  if (right) {
    while (last > first && strip_at(off[last - 1], off[last] - off[last - 1])) {
      --last;
    }
  }
  return s.substr(off[first], off[last] - off[first]);
}

std::string Title(const std::string& s) {
  std::string out = s;
  bool start = true;
  for (char& c : out) {
    if (absl::ascii_isalpha(c)) {
      c = start ? absl::ascii_toupper(c) : absl::ascii_tolower(c);
      start = false;
    } else {
      start = true;
    }
  }
  return out;
}

std::string Capitalize(const std::string& s) {
  std::string out = absl::AsciiStrToLower(s);
  if (!out.empty()) out[0] = absl::ascii_toupper(out[0]);
  return out;
}

}  // namespace

std::vector<uint32_t> CodePointOffsets(const std::string& s) {
  std::vector<uint32_t> out;
  out.reserve(s.size() + 1);
  for (size_t i = 0; i < s.size();) {
    out.push_back(static_cast<uint32_t>(i));
    i += CharLength(s, i);
  }
  out.push_back(static_cast<uint32_t>(s.size()));
  return out;
}

size_t CountCodePoints(const std::string& s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size(); i += CharLength(s, i)) ++n;
  return n;
}

std::string CodePoint(const std::string& s, const std::vector<uint32_t>& off,
                      size_t i) {
  return s.substr(off[i], off[i + 1] - off[i]);
}

absl::StatusOr<Value> Replace(const std::string& s, const std::string& from,
                              const std::string& to) {
  size_t count = 0;
  for (size_t p = s.find(from); p != std::string::npos;
       p = s.find(from, p + from.size())) {
    ++count;
  }
  if (to.size() > from.size() &&
      s.size() + static_cast<double>(count) * (to.size() - from.size()) >
          kMaxBytes) {
    return CheckSize(kMaxBytes + 1);
  }
  return Value::String(absl::StrReplaceAll(s, {{from, to}}));
}

absl::StatusOr<Value> CallMethod(const Value& self, const std::string& m,
                                 const Args& a) {
  const auto& p = a.positional;
  auto str_arg = [&](size_t i) -> const std::string* {
    return i < p.size() && p[i].is_string() ? &p[i].str() : nullptr;
  };
  if (self.is_string()) {
    const std::string& s = self.str();
    if (m == "strip" || m == "lstrip" || m == "rstrip") {
      return Value::String(Strip(s, m != "rstrip", m != "lstrip", str_arg(0)));
    }
    if (m == "upper") return Value::String(absl::AsciiStrToUpper(s));
    if (m == "lower") return Value::String(absl::AsciiStrToLower(s));
    if (m == "title") return Value::String(Title(s));
    if (m == "capitalize") return Value::String(Capitalize(s));
    if ((m == "startswith" || m == "endswith") && str_arg(0) != nullptr) {
      return Value::Bool(m == "startswith" ? absl::StartsWith(s, *str_arg(0))
                                           : absl::EndsWith(s, *str_arg(0)));
    }
    if (m == "replace" && str_arg(0) != nullptr && str_arg(1) != nullptr) {
      if (str_arg(0)->empty()) return self;
      return Replace(s, *str_arg(0), *str_arg(1));
    }
    if (m == "split") {
      if (s.size() > kMaxItems) {
        return absl::InvalidArgumentError("a list would exceed the item limit");
      }
      Array parts;
      if (str_arg(0) != nullptr && !str_arg(0)->empty()) {
        for (absl::string_view piece : absl::StrSplit(s, *str_arg(0))) {
          parts.push_back(Value::String(std::string(piece)));
        }
      } else {
        for (absl::string_view piece : absl::StrSplit(
                 s, absl::ByAnyChar(" \t\n\r\f\v"), absl::SkipEmpty())) {
          parts.push_back(Value::String(std::string(piece)));
        }
      }
      return Value::MakeArray(std::move(parts));
    }
  } else if (self.kind() == Value::Kind::kObject) {
    if (m == "get" && !p.empty()) {
      ES_ASSIGN_OR_RETURN(std::string key, KeyString(p[0]));
      const Value* v = self.Find(key);
      if (v != nullptr) return *v;
      return p.size() > 1 ? p[1] : Value::None();
    }
    if (m == "items" || m == "keys" || m == "values") {
      Array out;
      for (const auto& [k, v] : self.object()) {
        if (m == "items") {
          out.push_back(Value::MakeArray({Value::String(k), v}));
        } else {
          out.push_back(m == "keys" ? Value::String(k) : v);
        }
      }
      return Value::MakeArray(std::move(out));
    }
    // A function stored in a dict.
    if (const Value* f = self.Find(m);
        f != nullptr && f->kind() == Value::Kind::kFunction) {
      return f->function()(a);
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported method ", self.TypeName(), ".", m, "()"));
}

absl::StatusOr<Value> ApplyFilter(const std::string& f, const Value& v,
                                  const Args& a) {
  const auto& p = a.positional;
  if (f == "trim") {
    if (!v.is_string())
      return absl::InvalidArgumentError("trim needs a string");
    return Value::String(Strip(v.str(), true, true, nullptr));
  }
  if (f == "length" || f == "count") {
    if (v.is_string()) {
      return Value::Int(static_cast<int64_t>(CountCodePoints(v.str())));
    }
    if (v.is_array()) return Value::Int(static_cast<int64_t>(v.array().size()));
    if (v.is_mapping()) {
      return Value::Int(static_cast<int64_t>(v.object().size()));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("length of a ", v.TypeName()));
  }
  if (f == "upper" || f == "lower" || f == "title" || f == "capitalize") {
    if (!v.is_string())
      return absl::InvalidArgumentError(f + " needs a string");
    return f == "upper"   ? Value::String(absl::AsciiStrToUpper(v.str()))
           : f == "lower" ? Value::String(absl::AsciiStrToLower(v.str()))
           : f == "title" ? Value::String(Title(v.str()))
                          : Value::String(Capitalize(v.str()));
  }
  if (f == "tojson") {
    int64_t indent = -1;
    for (const auto& [k, x] : a.keyword) {
      if (k == "indent" && x.kind() == Value::Kind::kInt) {
        indent = x.int_value();
      }
    }
    if (!p.empty() && p[0].kind() == Value::Kind::kInt) {
      indent = p[0].int_value();
    }
    if (indent > 64) return absl::InvalidArgumentError("tojson indent past 64");
    std::string text = v.ToJson(static_cast<int>(indent), kMaxBytes + 1);
    ES_RETURN_IF_ERROR(CheckSize(text.size()));
    return Value::String(std::move(text));
  }
  if (f == "string") {
    std::string text = v.ToString(kMaxBytes + 1);
    ES_RETURN_IF_ERROR(CheckSize(text.size()));
    return Value::String(std::move(text));
  }
  if (f == "int" || f == "float") {
    double d = 0;
    if (v.is_number()) {
      d = v.number();
    } else if (v.is_string()) {
      d = std::strtod(v.str().c_str(), nullptr);
    }
    if (f == "float") return Value::Float(d);
    if (!(d > -9.2e18 && d < 9.2e18))
      return absl::InvalidArgumentError("int() out of range");
    return Value::Int(static_cast<int64_t>(d));
  }
  if (f == "first" || f == "last") {
    if (v.is_array()) {
      if (v.array().empty()) return Value();
      return f == "first" ? v.array().front() : v.array().back();
    }
    if (v.is_string()) {
      if (v.str().empty()) return Value();
      const std::vector<uint32_t> off = CodePointOffsets(v.str());
      return Value::String(
          CodePoint(v.str(), off, f == "first" ? 0 : off.size() - 2));
    }
    return absl::InvalidArgumentError(absl::StrCat(f, " of a ", v.TypeName()));
  }
  if (f == "join") {
    if (!v.is_array()) return absl::InvalidArgumentError("join needs a list");
    const std::string sep = !p.empty() ? p[0].ToString() : "";
    std::vector<std::string> parts;
    size_t total = 0;
    for (const Value& x : v.array()) {
      parts.push_back(x.ToString(kMaxBytes + 1));
      total += parts.back().size() + sep.size();
      ES_RETURN_IF_ERROR(CheckSize(total));
    }
    return Value::String(absl::StrJoin(parts, sep));
  }
  if (f == "default" || f == "d") {
    const bool boolean = p.size() > 1 && p[1].Truthy();
    const bool use_default = boolean ? !v.Truthy() : v.is_undefined();
    if (!use_default) return v;
    return p.empty() ? Value::String("") : p[0];
  }
  if (f == "replace") {
    if (!v.is_string() || p.size() < 2) {
      return absl::InvalidArgumentError(
          "replace needs a string and two arguments");
    }
    const std::string from = p[0].ToString(kMaxBytes + 1);
    if (from.empty()) return v;
    return Replace(v.str(), from, p[1].ToString(kMaxBytes + 1));
  }
  if (f == "list") {
    if (v.is_array()) return Value::MakeArray(v.array());
    Array out;
    if (v.is_string()) {
      if (v.str().size() > kMaxItems) {
        return absl::InvalidArgumentError("a list would exceed the item limit");
      }
      const std::vector<uint32_t> off = CodePointOffsets(v.str());
      for (size_t i = 0; i + 1 < off.size(); ++i) {
        out.push_back(Value::String(CodePoint(v.str(), off, i)));
      }
    } else if (v.is_mapping()) {
      for (const auto& [k, x] : v.object()) out.push_back(Value::String(k));
    }
    return Value::MakeArray(std::move(out));
  }
  if (f == "items") {
    if (!v.is_mapping())
      return absl::InvalidArgumentError("items needs a dict");
    Array out;
    for (const auto& [k, x] : v.object()) {
      out.push_back(Value::MakeArray({Value::String(k), x}));
    }
    return Value::MakeArray(std::move(out));
  }
  if (f == "reverse") {
    if (v.is_array()) {
      Array out(v.array().rbegin(), v.array().rend());
      return Value::MakeArray(std::move(out));
    }
    if (v.is_string()) {
      const std::vector<uint32_t> off = CodePointOffsets(v.str());
      std::string out;
      out.reserve(v.str().size());
      for (size_t i = off.size() - 1; i-- > 0;) {
        out += CodePoint(v.str(), off, i);
      }
      return Value::String(std::move(out));
    }
    return absl::InvalidArgumentError("reverse needs a list or string");
  }
  if (f == "abs" && v.is_number()) {
    if (v.kind() == Value::Kind::kInt && v.int_value() == INT64_MIN) {
      return absl::InvalidArgumentError("integer overflow");
    }
    return v.kind() == Value::Kind::kInt ? Value::Int(std::llabs(v.int_value()))
                                         : Value::Float(std::fabs(v.number()));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported filter ", f, " on a ", v.TypeName()));
}

absl::StatusOr<bool> ApplyTest(const std::string& t, const Value& v,
                               const Args& a) {
  if (t == "defined") return !v.is_undefined();
  if (t == "undefined") return v.is_undefined();
  if (t == "none") return v.is_none();
  if (t == "string") return v.is_string();
  if (t == "number") return v.is_number();
  if (t == "integer") return v.kind() == Value::Kind::kInt;
  if (t == "float") return v.kind() == Value::Kind::kFloat;
  if (t == "boolean") return v.kind() == Value::Kind::kBool;
  if (t == "true") return v.kind() == Value::Kind::kBool && v.bool_value();
  if (t == "false") return v.kind() == Value::Kind::kBool && !v.bool_value();
  if (t == "mapping") return v.is_mapping();
  if (t == "iterable") return v.is_array() || v.is_string() || v.is_mapping();
  if (t == "sequence") return v.is_array() || v.is_string();
  if (t == "callable") return v.kind() == Value::Kind::kFunction;
  if ((t == "odd" || t == "even") && v.kind() == Value::Kind::kInt) {
    return (v.int_value() % 2 != 0) == (t == "odd");
  }
  if ((t == "equalto" || t == "eq" || t == "sameas") && !a.positional.empty()) {
    return v.Equals(a.positional[0]);  // StatusOr<bool>.
  }
  return absl::InvalidArgumentError(absl::StrCat("unsupported test ", t));
}

}  // namespace internal
}  // namespace jinja
}  // namespace edgesplit
