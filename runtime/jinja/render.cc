// Rendering of parsed templates (jinja.h), with the reference engine's
// semantics for the operations chat templates use.
#include <algorithm>
#include <cmath>
#include <map>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"
#include "runtime/jinja/ast.h"
#include "runtime/jinja/builtins.h"
#include "runtime/jinja/jinja.h"

namespace edgesplit {
namespace jinja {
namespace {

enum class Flow { kNormal, kBreak, kContinue };

class Renderer {
 public:
  Renderer(const std::string& name, const Object& context) : name_(name) {
    frames_.emplace_back();
    for (const auto& [k, v] : context) frames_.back()[k] = v;
    AddGlobals();
  }

  absl::Status RenderBody(const Body& body, std::string* out, Flow* flow) {
    for (const StmtPtr& s : body) {
      ES_RETURN_IF_ERROR(RenderStmt(*s, out, flow));
      if (*flow != Flow::kNormal) return absl::OkStatus();
    }
    return absl::OkStatus();
  }

 private:
  absl::Status Error(int line, absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(name_, ":", line, ": ", what));
  }

  void AddGlobals() {
    auto& g = frames_.front();
    if (!g.count("raise_exception")) {
      g["raise_exception"] =
          Value::MakeFunction([](const Args& a) -> absl::StatusOr<Value> {
            return absl::InvalidArgumentError(
                a.positional.empty() ? std::string("raise_exception")
                                     : a.positional[0].ToString());
          });
    }
    g["namespace"] =
        Value::MakeFunction([](const Args& a) -> absl::StatusOr<Value> {
          Object o;
          for (const auto& [k, v] : a.keyword) {
            if (v.kind() == Value::Kind::kNamespace) {
              return absl::InvalidArgumentError(
                  "a namespace cannot be stored in a namespace");
            }
            o.emplace_back(k, v);
          }
          return Value::MakeNamespace(std::move(o));
        });
    g["range"] =
        Value::MakeFunction([this](const Args& a) -> absl::StatusOr<Value> {
          int64_t start = 0, stop = 0, step = 1;
          const auto& p = a.positional;
          for (const Value& v : p) {
            if (v.kind() != Value::Kind::kInt) {
              return absl::InvalidArgumentError("range() takes integers");
            }
          }
          if (p.size() == 1) {
            stop = p[0].int_value();
          } else if (p.size() >= 2) {
            start = p[0].int_value();
            stop = p[1].int_value();
            if (p.size() == 3) step = p[2].int_value();
          }
          if (step == 0 || p.empty() || p.size() > 3) {
            return absl::InvalidArgumentError("range() takes 1 to 3 integers");
          }
          Array out;
          for (int64_t i = start; step > 0 ? i < stop : i > stop;) {
            out.push_back(Value::Int(i));
            if (++steps_ > kMaxSteps || out.size() > kMaxItems) {
              return absl::InvalidArgumentError(
                  "range() is too long for the template's budget");
            }
            if (__builtin_add_overflow(i, step, &i)) break;
          }
          return Value::MakeArray(std::move(out));
        });
  }

  Value Lookup(const std::string& name) const {
    for (auto it = frames_.rbegin(); it != frames_.rend(); ++it) {
      auto f = it->find(name);
      if (f != it->end()) return f->second;
    }
    return Value();
  }

  absl::Status RenderStmt(const Stmt& s, std::string* out, Flow* flow) {
    ES_RETURN_IF_ERROR(Spend(s.line));
    if (out->size() > kMaxOutput) {
      return Error(s.line, "the template renders more than 16 MiB");
    }
    switch (s.kind) {
      case Stmt::Kind::kText:
        out->append(s.text);
        return absl::OkStatus();
      case Stmt::Kind::kOutput: {
        ES_ASSIGN_OR_RETURN(Value v, Eval(*s.expr));
        const std::string text = v.ToString(kMaxOutput + 1);
        ES_RETURN_IF_ERROR(CheckSize(s.line, out->size() + text.size()));
        ES_RETURN_IF_ERROR(Spend(s.line, text.size() / 1024));
        out->append(text);
        return absl::OkStatus();
      }
      case Stmt::Kind::kIf:
        for (size_t i = 0; i < s.bodies.size(); ++i) {
          if (i < s.conditions.size()) {
            ES_ASSIGN_OR_RETURN(Value c, Eval(*s.conditions[i]));
            if (!c.Truthy()) continue;
          }
          return RenderBody(s.bodies[i], out, flow);
        }
        return absl::OkStatus();
      case Stmt::Kind::kSet: {
        ES_ASSIGN_OR_RETURN(Value v, Eval(*s.expr));
        if (s.attribute.empty()) {
          frames_.back()[s.targets[0]] = std::move(v);
          return absl::OkStatus();
        }
        Value ns = Lookup(s.targets[0]);
        if (ns.kind() != Value::Kind::kNamespace) {
          return Error(s.line, absl::StrCat("cannot set an attribute of ",
                                            s.targets[0], " (a ", ns.TypeName(),
                                            ", not a namespace)"));
        }
        if (v.kind() == Value::Kind::kNamespace) {
          return Error(s.line, "a namespace cannot be stored in a namespace");
        }
        ns.Set(s.attribute, std::move(v));
        return absl::OkStatus();
      }
      case Stmt::Kind::kFor:
        return RenderFor(s, out);
      case Stmt::Kind::kBreak:
        *flow = Flow::kBreak;
        return absl::OkStatus();
      case Stmt::Kind::kContinue:
        *flow = Flow::kContinue;
        return absl::OkStatus();
    }
    return absl::OkStatus();
  }

  absl::Status Bind(const Stmt& s, const Value& item) {
    if (s.targets.size() == 1) {
      frames_.back()[s.targets[0]] = item;
      return absl::OkStatus();
    }
    if (!item.is_array() || item.array().size() != s.targets.size()) {
      return Error(s.line,
                   absl::StrCat("cannot unpack a ", item.TypeName(), " into ",
                                s.targets.size(), " loop variables"));
    }
    for (size_t i = 0; i < s.targets.size(); ++i) {
      frames_.back()[s.targets[i]] = item.array()[i];
    }
    return absl::OkStatus();
  }

  absl::Status RenderFor(const Stmt& s, std::string* out) {
    ES_ASSIGN_OR_RETURN(Value iterable, Eval(*s.expr));
    Array candidates;
    if (iterable.is_array()) {
      candidates = iterable.array();
    } else if (iterable.is_mapping()) {
      for (const auto& [k, v] : iterable.object()) {
        candidates.push_back(Value::String(k));
      }
    } else {
      return Error(s.line,
                   absl::StrCat("cannot loop over a ", iterable.TypeName()));
    }
    // One scope for the whole loop, as the reference has: a `set` inside
    // lasts across iterations but not past the loop.
    frames_.emplace_back();
    absl::Status status = RenderLoop(s, candidates, out);
    frames_.pop_back();
    return status;
  }

  absl::Status RenderLoop(const Stmt& s, const Array& candidates,
                          std::string* out) {
    Array items;
    for (const Value& c : candidates) {
      ES_RETURN_IF_ERROR(Spend(s.line));
      if (s.filter != nullptr) {
        ES_RETURN_IF_ERROR(Bind(s, c));
        ES_ASSIGN_OR_RETURN(Value keep, Eval(*s.filter));
        if (!keep.Truthy()) continue;
      }
      items.push_back(c);
    }
    absl::Status status;
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n && status.ok(); ++i) {
      status = Spend(s.line);
      if (!status.ok()) break;
      Object loop = {{"index", Value::Int(i + 1)},
                     {"index0", Value::Int(i)},
                     {"first", Value::Bool(i == 0)},
                     {"last", Value::Bool(i == n - 1)},
                     {"length", Value::Int(n)},
                     {"revindex", Value::Int(n - i)},
                     {"revindex0", Value::Int(n - i - 1)},
                     {"previtem", i > 0 ? items[i - 1] : Value()},
                     {"nextitem", i + 1 < n ? items[i + 1] : Value()}};
      frames_.back()["loop"] = Value::MakeObject(std::move(loop));
      status = Bind(s, items[i]);
      Flow flow = Flow::kNormal;
      if (status.ok()) status = RenderBody(s.bodies[0], out, &flow);
      if (flow == Flow::kBreak) break;
    }
    if (status.ok() && n == 0 && s.bodies.size() > 1) {
      Flow flow = Flow::kNormal;
      status = RenderBody(s.bodies[1], out, &flow);
    }
    return status;
  }

  absl::StatusOr<Args> EvalArgs(const Expr& e) {
    Args args;
    for (const ExprPtr& a : e.items) {
      ES_ASSIGN_OR_RETURN(args.positional.emplace_back(), Eval(*a));
    }
    for (const auto& [k, a] : e.keywords) {
      ES_ASSIGN_OR_RETURN(Value v, Eval(*a));
      args.keyword.emplace_back(k, std::move(v));
    }
    return args;
  }

  absl::StatusOr<Value> Eval(const Expr& e);
  absl::StatusOr<Value> EvalExpr(const Expr& e);
  absl::StatusOr<Value> EvalBinary(const Expr& e);
  absl::StatusOr<Value> Concat(const Expr& e, const Value& l, const Value& r);

  // Untrusted templates get a budget: steps (expressions and statements)
  // and output, far past what chat templates use.
  static constexpr int64_t kMaxSteps = 2'000'000;
  static constexpr size_t kMaxOutput = internal::kMaxBytes;
  static constexpr int kMaxValueDepth = 64;
  static constexpr size_t kMaxItems = internal::kMaxItems;
  absl::Status CheckSize(int line, size_t bytes) const {
    return WithLine(line, internal::CheckSize(bytes));
  }
  // A builtin's error with this template's name and `line`.
  absl::Status WithLine(int line, const absl::Status& s) const {
    return s.ok() ? s : Error(line, s.message());
  }
  template <typename T>
  absl::StatusOr<T> WithLine(int line, absl::StatusOr<T> v) const {
    if (v.ok()) return v;
    return Error(line, v.status().message());
  }
  absl::Status Spend(int line, int64_t units = 1) {
    steps_ += units;
    if (steps_ > kMaxSteps) {
      return Error(line, "the template runs too long (step budget spent)");
    }
    return absl::OkStatus();
  }
  int64_t steps_ = 0;
  absl::StatusOr<Value> EvalCall(const Expr& e);
  absl::StatusOr<Value> Subscript(const Expr& e, const Value& v,
                                  const Value& key);
  absl::StatusOr<Value> Slice(const Expr& e, const Value& v);

  const std::string& name_;
  std::vector<std::map<std::string, Value>> frames_;
};

absl::StatusOr<Value> Renderer::Eval(const Expr& e) {
  ES_RETURN_IF_ERROR(Spend(e.line));
  ES_ASSIGN_OR_RETURN(Value v, EvalExpr(e));
  if (v.depth() > kMaxValueDepth) {
    return Error(e.line, "values nest too deeply");
  }
  return v;
}

absl::StatusOr<Value> Renderer::EvalExpr(const Expr& e) {
  switch (e.kind) {
    case Expr::Kind::kLiteral:
      return e.literal;
    case Expr::Kind::kName:
      return Lookup(e.name);
    case Expr::Kind::kList: {
      Array a;
      for (const ExprPtr& x : e.items) {
        ES_ASSIGN_OR_RETURN(a.emplace_back(), Eval(*x));
        if (a.back().kind() == Value::Kind::kNamespace) {
          return Error(e.line, "a namespace cannot be stored in a list");
        }
      }
      return Value::MakeArray(std::move(a));
    }
    case Expr::Kind::kDict: {
      Value d = Value::MakeObject();
      for (size_t i = 0; i + 1 < e.items.size(); i += 2) {
        ES_ASSIGN_OR_RETURN(Value k, Eval(*e.items[i]));
        ES_ASSIGN_OR_RETURN(Value v, Eval(*e.items[i + 1]));
        if (v.kind() == Value::Kind::kNamespace) {
          return Error(e.line, "a namespace cannot be stored in a dict");
        }
        ES_ASSIGN_OR_RETURN(std::string key,
                            WithLine(e.line, internal::KeyString(k)));
        d.Set(key, std::move(v));
      }
      return d;
    }
    case Expr::Kind::kAttr: {
      ES_ASSIGN_OR_RETURN(Value v, Eval(*e.a));
      return Subscript(e, v, Value::String(e.name));
    }
    case Expr::Kind::kItem: {
      ES_ASSIGN_OR_RETURN(Value v, Eval(*e.a));
      ES_ASSIGN_OR_RETURN(Value k, Eval(*e.b));
      return Subscript(e, v, k);
    }
    case Expr::Kind::kSlice: {
      ES_ASSIGN_OR_RETURN(Value v, Eval(*e.a));
      return Slice(e, v);
    }
    case Expr::Kind::kCall:
      return EvalCall(e);
    case Expr::Kind::kFilter: {
      ES_ASSIGN_OR_RETURN(Value v, Eval(*e.a));
      ES_ASSIGN_OR_RETURN(Args a, EvalArgs(e));
      ES_RETURN_IF_ERROR(Spend(e.line, internal::Cost(v, a)));
      ES_RETURN_IF_ERROR(Spend(e.line, internal::SearchCost(v, a)));
      return WithLine(e.line, internal::ApplyFilter(e.name, v, a));
    }
    case Expr::Kind::kTest: {
      ES_ASSIGN_OR_RETURN(Value v, Eval(*e.a));
      ES_ASSIGN_OR_RETURN(Args a, EvalArgs(e));
      ES_RETURN_IF_ERROR(Spend(e.line, internal::Cost(v, a)));
      ES_ASSIGN_OR_RETURN(bool r,
                          WithLine(e.line, internal::ApplyTest(e.name, v, a)));
      return Value::Bool(r != e.negated);
    }
    case Expr::Kind::kUnary: {
      ES_ASSIGN_OR_RETURN(Value v, Eval(*e.a));
      if (e.name == "not") return Value::Bool(!v.Truthy());
      if (v.kind() == Value::Kind::kInt) {
        if (e.name == "-" && v.int_value() == INT64_MIN) {
          return Error(e.line, "integer overflow");
        }
        return Value::Int(e.name == "-" ? -v.int_value() : v.int_value());
      }
      if (v.kind() == Value::Kind::kFloat) {
        return Value::Float(e.name == "-" ? -v.number() : v.number());
      }
      return Error(e.line,
                   absl::StrCat("unary ", e.name, " on a ", v.TypeName()));
    }
    case Expr::Kind::kBinary:
      return EvalBinary(e);
    case Expr::Kind::kCondition: {
      ES_ASSIGN_OR_RETURN(Value c, Eval(*e.b));
      if (c.Truthy()) return Eval(*e.a);
      if (e.c == nullptr) return Value();
      return Eval(*e.c);
    }
  }
  return Value();
}

absl::StatusOr<Value> Renderer::Subscript(const Expr& e, const Value& v,
                                          const Value& key) {
  if (v.is_mapping()) {
    ES_ASSIGN_OR_RETURN(std::string k,
                        WithLine(e.line, internal::KeyString(key)));
    const Value* f = v.Find(k);
    return f == nullptr ? Value() : *f;
  }
  if (v.is_array() || v.is_string()) {
    if (key.kind() == Value::Kind::kInt) {
      ES_RETURN_IF_ERROR(Spend(e.line, internal::Cost(v)));
      const std::vector<uint32_t> off =
          v.is_string() ? internal::CodePointOffsets(v.str())
                        : std::vector<uint32_t>();
      const int64_t n = v.is_array() ? v.array().size() : off.size() - 1;
      int64_t i = key.int_value();
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Value();
      return v.is_array() ? v.array()[i]
                          : Value::String(internal::CodePoint(v.str(), off, i));
    }
    if (key.is_string() && key.str() == "length" && v.is_array()) {
      return Value::Int(static_cast<int64_t>(v.array().size()));
    }
    return Value();
  }
  if (v.is_undefined() || v.is_none()) {
    return Error(e.line, absl::StrCat("cannot read \"", key.ToString(),
                                      "\" of ", v.TypeName()));
  }
  return Value();
}

absl::StatusOr<Value> Renderer::Slice(const Expr& e, const Value& v) {
  if (!v.is_array() && !v.is_string()) {
    return Error(e.line, absl::StrCat("cannot slice a ", v.TypeName()));
  }
  ES_RETURN_IF_ERROR(Spend(e.line, internal::Cost(v)));
  const std::vector<uint32_t> off = v.is_string()
                                        ? internal::CodePointOffsets(v.str())
                                        : std::vector<uint32_t>();
  const int64_t n = v.is_array() ? v.array().size() : off.size() - 1;
  int64_t bounds[3] = {0, n, 1};
  const Expr* parts[3] = {e.b.get(), e.c.get(), e.d.get()};
  for (int k = 0; k < 3; ++k) {
    if (parts[k] == nullptr) continue;
    ES_ASSIGN_OR_RETURN(Value x, Eval(*parts[k]));
    if (x.kind() != Value::Kind::kInt) {
      return Error(e.line, "slice bounds must be integers");
    }
    bounds[k] = x.int_value();
  }
  int64_t step = bounds[2];
  if (step == 0) return Error(e.line, "slice step cannot be zero");
  auto clamp = [&](int64_t i, int64_t lo, int64_t hi) {
    if (i < 0) i += n;
    return std::max(lo, std::min(hi, i));
  };
  int64_t start, stop;
  if (step > 0) {
    start = parts[0] ? clamp(bounds[0], 0, n) : 0;
    stop = parts[1] ? clamp(bounds[1], 0, n) : n;
  } else {
    start = parts[0] ? clamp(bounds[0], -1, n - 1) : n - 1;
    stop = parts[1] ? clamp(bounds[1], -1, n - 1) : -1;
  }
  Array a;
  std::string s;
  for (int64_t i = start; step > 0 ? i < stop : i > stop;) {
    if (v.is_array()) {
      a.push_back(v.array()[i]);
    } else {
      s += internal::CodePoint(v.str(), off, i);
    }
    if (__builtin_add_overflow(i, step, &i)) break;
  }
  return v.is_array() ? Value::MakeArray(std::move(a))
                      : Value::String(std::move(s));
}

absl::StatusOr<Value> Renderer::EvalBinary(const Expr& e) {
  ES_ASSIGN_OR_RETURN(Value l, Eval(*e.a));
  const std::string& op = e.name;
  if (op == "and") return l.Truthy() ? Eval(*e.b) : l;
  if (op == "or") return l.Truthy() ? l : Eval(*e.b);
  ES_ASSIGN_OR_RETURN(Value r, Eval(*e.b));
  if (op == "==" || op == "!=") {
    ES_ASSIGN_OR_RETURN(bool equal, WithLine(e.line, l.Equals(r)));
    return Value::Bool(equal == (op == "=="));
  }
  if (l.is_number() && r.is_number() && op != "~") {
    const bool is_float =
        l.kind() == Value::Kind::kFloat || r.kind() == Value::Kind::kFloat;
    const double a = l.number(), b = r.number();
    if (op == "+" || op == "-" || op == "*") {
      if (!is_float) {
        const int64_t x = l.int_value(), y = r.int_value();
        int64_t z;
        const bool overflow = op == "+"   ? __builtin_add_overflow(x, y, &z)
                              : op == "-" ? __builtin_sub_overflow(x, y, &z)
                                          : __builtin_mul_overflow(x, y, &z);
        if (overflow) return Error(e.line, "integer overflow");
        return Value::Int(z);
      }
      return Value::Float(op == "+" ? a + b : op == "-" ? a - b : a * b);
    }
    if (op == "/") return Value::Float(a / b);
    if (op == "//" || op == "%") {
      if (!is_float) {
        if (r.int_value() == 0) return Error(e.line, "division by zero");
        const int64_t x = l.int_value(), y = r.int_value();
        if (x == INT64_MIN && y == -1) return Error(e.line, "integer overflow");
        if (op == "%") return Value::Int(x % y);  // JavaScript's sign rule.
        int64_t q = x / y;
        if ((x % y != 0) && ((x < 0) != (y < 0))) --q;
        return Value::Int(q);
      }
      return Value::Float(op == "%" ? std::fmod(a, b) : std::floor(a / b));
    }
    if (op == "<") return Value::Bool(a < b);
    if (op == ">") return Value::Bool(a > b);
    if (op == "<=") return Value::Bool(a <= b);
    if (op == ">=") return Value::Bool(a >= b);
  }
  if (l.is_undefined() || r.is_undefined()) {
    if (r.is_undefined() && (op == "in" || op == "not in")) {
      return Value::Bool(op == "not in");
    }
    if (op == "~" && !l.is_none() && !r.is_none()) return Concat(e, l, r);
    return Error(e.line, absl::StrCat("cannot apply ", op, " to undefined"));
  }
  if (l.is_none() || r.is_none()) {
    return Error(e.line, absl::StrCat("cannot apply ", op, " to none"));
  }
  if (op == "~") return Concat(e, l, r);
  if (l.is_array() && r.is_array() && op == "+") {
    if (l.array().size() + r.array().size() > kMaxItems) {
      return Error(e.line, "a list would exceed the item limit");
    }
    ES_RETURN_IF_ERROR(Spend(e.line, internal::Cost(l) + internal::Cost(r)));
    Array a = l.array();
    a.insert(a.end(), r.array().begin(), r.array().end());
    return Value::MakeArray(std::move(a));
  }
  if (r.is_array() && (op == "in" || op == "not in")) {
    bool found = false;
    for (const Value& x : r.array()) {
      ES_RETURN_IF_ERROR(Spend(e.line));
      ES_ASSIGN_OR_RETURN(bool equal, WithLine(e.line, x.Equals(l)));
      found = found || equal;
    }
    return Value::Bool(found == (op == "in"));
  }
  if ((l.is_string() || r.is_string()) && op == "+") return Concat(e, l, r);
  if (l.is_string() && r.is_string()) {
    if (op == "in" || op == "not in") {
      // A naive search is O(haystack * needle): charged as such.
      ES_RETURN_IF_ERROR(
          Spend(e.line, static_cast<int64_t>((r.str().size() + 1) *
                                             (l.str().size() + 1) / 4096)));
      return Value::Bool(absl::StrContains(r.str(), l.str()) == (op == "in"));
    }
    if (op == "<") return Value::Bool(l.str() < r.str());
    if (op == ">") return Value::Bool(l.str() > r.str());
    if (op == "<=") return Value::Bool(l.str() <= r.str());
    if (op == ">=") return Value::Bool(l.str() >= r.str());
  }
  if (l.is_string() && r.is_mapping() && (op == "in" || op == "not in")) {
    return Value::Bool((r.Find(l.str()) != nullptr) == (op == "in"));
  }
  return Error(e.line, absl::StrCat("unsupported operation: ", l.TypeName(),
                                    " ", op, " ", r.TypeName()));
}

absl::StatusOr<Value> Renderer::Concat(const Expr& e, const Value& l,
                                       const Value& r) {
  const std::string a = l.ToString(kMaxOutput + 1);
  const std::string b = r.ToString(kMaxOutput + 1);
  ES_RETURN_IF_ERROR(CheckSize(e.line, a.size() + b.size()));
  ES_RETURN_IF_ERROR(Spend(e.line, (a.size() + b.size()) / 1024));
  return Value::String(a + b);
}

absl::StatusOr<Value> Renderer::EvalCall(const Expr& e) {
  ES_ASSIGN_OR_RETURN(Args args, EvalArgs(e));
  if (e.a->kind == Expr::Kind::kAttr) {
    ES_ASSIGN_OR_RETURN(Value self, Eval(*e.a->a));
    if (self.is_string() || self.is_array() ||
        self.kind() == Value::Kind::kObject) {
      ES_RETURN_IF_ERROR(Spend(e.line, internal::Cost(self, args)));
      ES_RETURN_IF_ERROR(Spend(e.line, internal::SearchCost(self, args)));
      return WithLine(e.line, internal::CallMethod(self, e.a->name, args));
    }
  }
  ES_ASSIGN_OR_RETURN(Value f, Eval(*e.a));
  if (f.kind() != Value::Kind::kFunction) {
    return Error(e.line, absl::StrCat("cannot call a ", f.TypeName()));
  }
  auto r = f.function()(args);
  if (!r.ok()) return Error(e.line, r.status().message());
  return r;
}

}  // namespace

absl::StatusOr<std::string> Template::Render(const Object& context) const {
  Renderer r(name_, context);
  std::string out;
  Flow flow = Flow::kNormal;
  ES_RETURN_IF_ERROR(r.RenderBody(body_, &out, &flow));
  return out;
}

}  // namespace jinja
}  // namespace edgesplit
