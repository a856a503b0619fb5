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

namespace {

// Python's str.strip() set when no characters are given.
bool IsStripSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
         c == '\v';
}

std::string Strip(const std::string& s, bool left, bool right,
                  const std::string* chars) {
  auto strip = [&](char c) {
    return chars == nullptr ? IsStripSpace(c)
                            : chars->find(c) != std::string::npos;
  };
  size_t b = 0, e = s.size();
  if (left) {
    while (b < e && strip(s[b])) ++b;
  }
  if (right) {
    while (e > b && strip(s[e - 1])) --e;
  }
  return s.substr(b, e - b);
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

std::vector<std::string> CodePoints(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    size_t n = b < 0x80 ? 1 : b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
    n = std::min(n, s.size() - i);
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
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
      const Value* v = self.Find(p[0].ToString());
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
      return Value::Int(static_cast<int64_t>(CodePoints(v.str()).size()));
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
      const std::vector<std::string> chars = CodePoints(v.str());
      if (chars.empty()) return Value();
      return Value::String(f == "first" ? chars.front() : chars.back());
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
      for (std::string& c : CodePoints(v.str())) {
        out.push_back(Value::String(std::move(c)));
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
      std::vector<std::string> chars = CodePoints(v.str());
      std::reverse(chars.begin(), chars.end());
      return Value::String(absl::StrJoin(chars, ""));
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
    return v.Equals(a.positional[0]);
  }
  return absl::InvalidArgumentError(absl::StrCat("unsupported test ", t));
}

}  // namespace internal
}  // namespace jinja
}  // namespace edgesplit
