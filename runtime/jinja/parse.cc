// Lexing and parsing of templates (jinja.h), following @huggingface/jinja's
// preprocessing and token rules so that whitespace comes out identical.
#include <cctype>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "runtime/jinja/ast.h"
#include "runtime/jinja/jinja.h"

namespace edgesplit {
namespace jinja {
namespace {

struct Token {
  enum class Type {
    kText,
    kOpenStmt,
    kCloseStmt,
    kOpenExpr,
    kCloseExpr,
    kName,
    kInt,
    kFloat,
    kString,
    kOp,
    kEnd
  };
  Type type;
  std::string value;
  int line;
};
using T = Token::Type;

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
         c == '\v';
}

// trim_blocks and lstrip_blocks, and the dropped final newline, as the
// reference applies them before lexing.
std::string Preprocess(absl::string_view source) {
  std::string s(source);
  if (!s.empty() && s.back() == '\n') s.pop_back();
  // lstrip_blocks: spaces and tabs from a line's start up to "{%", "{#"
  // (or "{-").
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const bool line_start = i == 0 || s[i - 1] == '\n';
    if (line_start) {
      size_t j = i;
      while (j < s.size() && (s[j] == ' ' || s[j] == '\t')) ++j;
      if (j + 1 < s.size() && s[j] == '{' &&
          (s[j + 1] == '%' || s[j + 1] == '#' || s[j + 1] == '-')) {
        i = j;
      }
    }
    out.push_back(s[i++]);
  }
  // trim_blocks: the newline right after "%}" or "#}" (or "-}").
  std::string trimmed;
  trimmed.reserve(out.size());
  for (size_t k = 0; k < out.size(); ++k) {
    trimmed.push_back(out[k]);
    if (k >= 1 && k + 1 < out.size() && out[k] == '}' && out[k + 1] == '\n' &&
        (out[k - 1] == '%' || out[k - 1] == '#' || out[k - 1] == '-')) {
      ++k;  // Drop the newline.
    }
  }
  return trimmed;
}

class Lexer {
 public:
  Lexer(std::string src, const std::string& name)
      : src_(std::move(src)), name_(name) {}

  absl::StatusOr<std::vector<Token>> Run() {
    while (pos_ < src_.size()) {
      if (!in_tag_) {
        ES_RETURN_IF_ERROR(LexText());
        continue;
      }
      ES_RETURN_IF_ERROR(LexInTag());
    }
    if (in_tag_) return Error("the template ends inside a tag");
    tokens_.push_back({T::kEnd, "", line_});
    return std::move(tokens_);
  }

 private:
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(name_, ":", line_, ": ", what));
  }
  void Advance(size_t n) {
    for (size_t i = 0; i < n && pos_ < src_.size(); ++i) {
      if (src_[pos_++] == '\n') ++line_;
    }
  }
  bool At(absl::string_view s) const {
    return absl::string_view(src_).substr(pos_, s.size()) == s;
  }
  void StripTrailing() {
    if (tokens_.empty() || tokens_.back().type != T::kText) return;
    std::string& v = tokens_.back().value;
    while (!v.empty() && IsSpace(v.back())) v.pop_back();
    if (v.empty()) tokens_.pop_back();
  }
  void SkipLeading() {
    while (pos_ < src_.size() && IsSpace(src_[pos_])) Advance(1);
  }

  absl::Status LexText() {
    size_t end = pos_;
    while (true) {
      end = src_.find('{', end);
      if (end == std::string::npos) {
        end = src_.size();
        break;
      }
      const char next = end + 1 < src_.size() ? src_[end + 1] : '\0';
      if (next == '%' || next == '{' || next == '#') break;
      ++end;
    }
    if (end > pos_) {
      tokens_.push_back({T::kText, src_.substr(pos_, end - pos_), line_});
      Advance(end - pos_);
      return absl::OkStatus();
    }
    // A tag opens here.
    const char kind = src_[pos_ + 1];
    if (kind == '#') {
      Advance(2);
      const bool strip_before = pos_ < src_.size() && src_[pos_] == '-';
      const size_t close = src_.find("#}", pos_);
      if (close == std::string::npos) return Error("a comment is not closed");
      const bool strip_after = close > pos_ && src_[close - 1] == '-';
      if (strip_before) StripTrailing();
      Advance(close + 2 - pos_);
      if (strip_after) SkipLeading();
      return absl::OkStatus();
    }
    const bool strip = pos_ + 2 < src_.size() && src_[pos_ + 2] == '-';
    if (strip) StripTrailing();
    tokens_.push_back({kind == '%' ? T::kOpenStmt : T::kOpenExpr, "", line_});
    Advance(strip ? 3 : 2);
    in_tag_ = true;
    expr_tag_ = kind == '{';
    depth_ = 0;
    return absl::OkStatus();
  }

  absl::Status LexInTag() {
    while (pos_ < src_.size() && IsSpace(src_[pos_])) Advance(1);
    if (pos_ >= src_.size()) return Error("the template ends inside a tag");
    // Closing, with or without whitespace control.
    const bool dash = src_[pos_] == '-';
    const size_t at = pos_ + (dash ? 1 : 0);
    const absl::string_view rest = absl::string_view(src_).substr(at);
    const absl::string_view close = expr_tag_ ? "}}" : "%}";
    if (rest.substr(0, 2) == close && (!expr_tag_ || depth_ == 0)) {
      tokens_.push_back({expr_tag_ ? T::kCloseExpr : T::kCloseStmt, "", line_});
      Advance(at + 2 - pos_);
      in_tag_ = false;
      if (dash) SkipLeading();
      return absl::OkStatus();
    }
    const char c = src_[pos_];
    if (c == '\'' || c == '"') return LexString(c);
    if (std::isdigit(static_cast<unsigned char>(c))) return LexNumber();
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t end = pos_;
      while (end < src_.size() &&
             (std::isalnum(static_cast<unsigned char>(src_[end])) ||
              src_[end] == '_')) {
        ++end;
      }
      tokens_.push_back({T::kName, src_.substr(pos_, end - pos_), line_});
      Advance(end - pos_);
      return absl::OkStatus();
    }
    for (absl::string_view op : {"//", "**", "==", "!=", "<=", ">="}) {
      if (At(op)) {
        tokens_.push_back({T::kOp, std::string(op), line_});
        Advance(2);
        return absl::OkStatus();
      }
    }
    if (std::string("+-*/%<>=|~.,:()[]{}").find(c) != std::string::npos) {
      if (c == '{') ++depth_;
      if (c == '}') --depth_;
      tokens_.push_back({T::kOp, std::string(1, c), line_});
      Advance(1);
      return absl::OkStatus();
    }
    return Error(absl::StrCat("unexpected character '", std::string(1, c),
                              "' in a tag"));
  }

  absl::Status LexNumber() {
    size_t end = pos_;
    while (end < src_.size() &&
           std::isdigit(static_cast<unsigned char>(src_[end]))) {
      ++end;
    }
    bool is_float = false;
    if (end + 1 < src_.size() && src_[end] == '.' &&
        std::isdigit(static_cast<unsigned char>(src_[end + 1]))) {
      is_float = true;
      ++end;
      while (end < src_.size() &&
             std::isdigit(static_cast<unsigned char>(src_[end]))) {
        ++end;
      }
    }
    tokens_.push_back(
        {is_float ? T::kFloat : T::kInt, src_.substr(pos_, end - pos_), line_});
    Advance(end - pos_);
    return absl::OkStatus();
  }

  absl::Status LexString(char quote) {
    const int line = line_;
    Advance(1);
    std::string value;
    while (true) {
      if (pos_ >= src_.size()) return Error("a string is not closed");
      const char c = src_[pos_];
      if (c == quote) break;
      Advance(1);
      if (c != '\\') {
        value.push_back(c);
        continue;
      }
      if (pos_ >= src_.size()) return Error("a string is not closed");
      const char e = src_[pos_];
      Advance(1);
      switch (e) {
        case 'n':
          value.push_back('\n');
          break;
        case 't':
          value.push_back('\t');
          break;
        case 'r':
          value.push_back('\r');
          break;
        case 'b':
          value.push_back('\b');
          break;
        case 'f':
          value.push_back('\f');
          break;
        case 'v':
          value.push_back('\v');
          break;
        case '\'':
          value.push_back('\'');
          break;
        case '"':
          value.push_back('"');
          break;
        case '\\':
          value.push_back('\\');
          break;
        default:
          return Error(
              absl::StrCat("unsupported escape \\", std::string(1, e)));
      }
    }
    Advance(1);
    tokens_.push_back({T::kString, std::move(value), line});
    return absl::OkStatus();
  }

  std::string src_;
  const std::string& name_;
  size_t pos_ = 0;
  int line_ = 1;
  bool in_tag_ = false;
  bool expr_tag_ = false;
  int depth_ = 0;
  std::vector<Token> tokens_;
};

// ---------------------------------------------------------------------------

class Parser {
 public:
  Parser(std::vector<Token> tokens, const std::string& name)
      : t_(std::move(tokens)), name_(name) {}

  absl::StatusOr<Body> ParseTemplate() {
    Body body;
    std::string end;
    ES_RETURN_IF_ERROR(ParseBody({}, &body, &end));
    return body;
  }

 private:
  const Token& Peek(size_t k = 0) const {
    return t_[std::min(i_ + k, t_.size() - 1)];
  }
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(name_, ":", Peek().line, ": ", what));
  }
  bool IsOp(absl::string_view op, size_t k = 0) const {
    return Peek(k).type == T::kOp && Peek(k).value == op;
  }
  bool IsName(absl::string_view n, size_t k = 0) const {
    return Peek(k).type == T::kName && Peek(k).value == n;
  }
  absl::Status Expect(T type, absl::string_view value, absl::string_view what) {
    if (Peek().type != type || (!value.empty() && Peek().value != value)) {
      return Error(absl::StrCat("expected ", what));
    }
    ++i_;
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> ExpectName() {
    if (Peek().type != T::kName) return Error("expected a name");
    return t_[i_++].value;
  }
  ExprPtr Make(Expr::Kind kind) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = Peek().line;
    return e;
  }

  // Parses statements until a tag whose keyword is in `ends` (returned in
  // *end, its tag consumed up to the keyword) or the end of input.
  absl::Status ParseBody(const std::vector<std::string>& ends, Body* body,
                         std::string* end) {
    while (true) {
      const Token& tok = Peek();
      if (tok.type == T::kEnd) {
        if (!ends.empty()) {
          return Error(absl::StrCat("missing {% ", ends.back(), " %}"));
        }
        return absl::OkStatus();
      }
      if (tok.type == T::kText) {
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kText;
        s->text = tok.value;
        body->push_back(std::move(s));
        ++i_;
        continue;
      }
      if (tok.type == T::kOpenExpr) {
        ++i_;
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kOutput;
        s->line = tok.line;
        ES_ASSIGN_OR_RETURN(s->expr, ParseExpr());
        ES_RETURN_IF_ERROR(Expect(T::kCloseExpr, "", "}}"));
        body->push_back(std::move(s));
        continue;
      }
      if (tok.type != T::kOpenStmt) return Error("unexpected token");
      if (Peek(1).type != T::kName) return Error("expected a tag name");
      const std::string keyword = Peek(1).value;
      for (const std::string& e : ends) {
        if (keyword == e) {
          i_ += 2;
          *end = keyword;
          return absl::OkStatus();
        }
      }
      i_ += 2;
      ES_ASSIGN_OR_RETURN(StmtPtr s, ParseStatement(keyword, tok.line));
      body->push_back(std::move(s));
    }
  }

  absl::StatusOr<StmtPtr> ParseStatement(const std::string& keyword, int line) {
    DepthGuard guard(&depth_);
    if (depth_ > kMaxDepth) return TooDeep();
    auto s = std::make_unique<Stmt>();
    s->line = line;
    if (keyword == "if") {
      s->kind = Stmt::Kind::kIf;
      std::string end = "elif";
      while (end == "elif") {
        ES_ASSIGN_OR_RETURN(ExprPtr cond, ParseExpr());
        ES_RETURN_IF_ERROR(Expect(T::kCloseStmt, "", "%}"));
        s->conditions.push_back(std::move(cond));
        ES_RETURN_IF_ERROR(ParseBody({"elif", "else", "endif"},
                                     &s->bodies.emplace_back(), &end));
      }
      if (end == "else") {
        ES_RETURN_IF_ERROR(Expect(T::kCloseStmt, "", "%}"));
        ES_RETURN_IF_ERROR(
            ParseBody({"endif"}, &s->bodies.emplace_back(), &end));
      }
      ES_RETURN_IF_ERROR(Expect(T::kCloseStmt, "", "%}"));
      return s;
    }
    if (keyword == "for") {
      s->kind = Stmt::Kind::kFor;
      do {
        ES_ASSIGN_OR_RETURN(s->targets.emplace_back(), ExpectName());
      } while (IsOp(",") && (++i_, true));
      ES_RETURN_IF_ERROR(Expect(T::kName, "in", "'in'"));
      ES_ASSIGN_OR_RETURN(s->expr, ParseOr());
      if (IsName("if")) {
        ++i_;
        ES_ASSIGN_OR_RETURN(s->filter, ParseOr());
      }
      ES_RETURN_IF_ERROR(Expect(T::kCloseStmt, "", "%}"));
      std::string end;
      ++loop_depth_;
      ES_RETURN_IF_ERROR(
          ParseBody({"else", "endfor"}, &s->bodies.emplace_back(), &end));
      --loop_depth_;
      if (end == "else") {
        ES_RETURN_IF_ERROR(Expect(T::kCloseStmt, "", "%}"));
        ES_RETURN_IF_ERROR(
            ParseBody({"endfor"}, &s->bodies.emplace_back(), &end));
      }
      ES_RETURN_IF_ERROR(Expect(T::kCloseStmt, "", "%}"));
      return s;
    }
    if (keyword == "set") {
      s->kind = Stmt::Kind::kSet;
      ES_ASSIGN_OR_RETURN(s->targets.emplace_back(), ExpectName());
      if (IsOp(".")) {
        ++i_;
        ES_ASSIGN_OR_RETURN(s->attribute, ExpectName());
      }
      if (!IsOp("=")) {
        return Error(
            "only {% set name = value %} is supported (not block set)");
      }
      ++i_;
      ES_ASSIGN_OR_RETURN(s->expr, ParseExpr());
      ES_RETURN_IF_ERROR(Expect(T::kCloseStmt, "", "%}"));
      return s;
    }
    if (keyword == "break" || keyword == "continue") {
      if (loop_depth_ == 0) {
        return Error(absl::StrCat("{% ", keyword, " %} outside a loop"));
      }
      s->kind = keyword == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue;
      ES_RETURN_IF_ERROR(Expect(T::kCloseStmt, "", "%}"));
      return s;
    }
    --i_;
    return Error(absl::StrCat("unsupported tag {% ", keyword, " %}"));
  }

  // Expressions, loosest first (Jinja2's precedence).
  absl::StatusOr<ExprPtr> ParseExpr() {
    DepthGuard guard(&depth_);
    if (depth_ > kMaxDepth) return TooDeep();
    ES_ASSIGN_OR_RETURN(ExprPtr a, ParseOr());
    if (!IsName("if")) return a;
    ExprPtr e = Make(Expr::Kind::kCondition);
    ++i_;
    e->a = std::move(a);
    ES_ASSIGN_OR_RETURN(e->b, ParseOr());
    if (IsName("else")) {
      ++i_;
      ES_ASSIGN_OR_RETURN(e->c, ParseExpr());
    }
    return e;
  }

  ExprPtr Binary(std::string op, ExprPtr a, ExprPtr b) {
    ExprPtr e = Make(Expr::Kind::kBinary);
    e->name = std::move(op);
    e->a = std::move(a);
    e->b = std::move(b);
    return e;
  }

  absl::StatusOr<ExprPtr> ParseOr() {
    ES_ASSIGN_OR_RETURN(ExprPtr a, ParseAnd());
    int links = 0;
    while (IsName("or")) {
      if (++links + depth_ > kMaxDepth) return TooDeep();
      ++i_;
      ES_ASSIGN_OR_RETURN(ExprPtr b, ParseAnd());
      a = Binary("or", std::move(a), std::move(b));
    }
    return a;
  }
  absl::StatusOr<ExprPtr> ParseAnd() {
    ES_ASSIGN_OR_RETURN(ExprPtr a, ParseNot());
    int links = 0;
    while (IsName("and")) {
      if (++links + depth_ > kMaxDepth) return TooDeep();
      ++i_;
      ES_ASSIGN_OR_RETURN(ExprPtr b, ParseNot());
      a = Binary("and", std::move(a), std::move(b));
    }
    return a;
  }
  absl::StatusOr<ExprPtr> ParseNot() {
    if (!IsName("not")) return ParseCompare();
    DepthGuard guard(&depth_);
    if (depth_ > kMaxDepth) return TooDeep();
    ExprPtr e = Make(Expr::Kind::kUnary);
    ++i_;
    e->name = "not";
    ES_ASSIGN_OR_RETURN(e->a, ParseNot());
    return e;
  }
  absl::StatusOr<ExprPtr> ParseCompare() {
    ES_ASSIGN_OR_RETURN(ExprPtr a, ParseMath1());
    int links = 0;
    while (true) {
      if (++links + depth_ > kMaxDepth) return TooDeep();
      std::string op;
      if (Peek().type == T::kOp &&
          (Peek().value == "==" || Peek().value == "!=" ||
           Peek().value == "<" || Peek().value == ">" || Peek().value == "<=" ||
           Peek().value == ">=")) {
        op = t_[i_++].value;
      } else if (IsName("in")) {
        ++i_;
        op = "in";
      } else if (IsName("not") && IsName("in", 1)) {
        i_ += 2;
        op = "not in";
      } else {
        return a;
      }
      ES_ASSIGN_OR_RETURN(ExprPtr b, ParseMath1());
      a = Binary(op, std::move(a), std::move(b));
    }
  }
  absl::StatusOr<ExprPtr> ParseMath1() {
    ES_ASSIGN_OR_RETURN(ExprPtr a, ParseConcat());
    int links = 0;
    while (IsOp("+") || IsOp("-")) {
      if (++links + depth_ > kMaxDepth) return TooDeep();
      const std::string op = t_[i_++].value;
      ES_ASSIGN_OR_RETURN(ExprPtr b, ParseConcat());
      a = Binary(op, std::move(a), std::move(b));
    }
    return a;
  }
  absl::StatusOr<ExprPtr> ParseConcat() {
    ES_ASSIGN_OR_RETURN(ExprPtr a, ParseMath2());
    int links = 0;
    while (IsOp("~")) {
      if (++links + depth_ > kMaxDepth) return TooDeep();
      ++i_;
      ES_ASSIGN_OR_RETURN(ExprPtr b, ParseMath2());
      a = Binary("~", std::move(a), std::move(b));
    }
    return a;
  }
  absl::StatusOr<ExprPtr> ParseMath2() {
    ES_ASSIGN_OR_RETURN(ExprPtr a, ParseUnary());
    int links = 0;
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      if (++links + depth_ > kMaxDepth) return TooDeep();
      const std::string op = t_[i_++].value;
      ES_ASSIGN_OR_RETURN(ExprPtr b, ParseUnary());
      a = Binary(op, std::move(a), std::move(b));
    }
    return a;
  }
  absl::StatusOr<ExprPtr> ParseUnary() {
    DepthGuard guard(&depth_);
    if (depth_ > kMaxDepth) return TooDeep();
    if (IsOp("-") || IsOp("+")) {
      ExprPtr e = Make(Expr::Kind::kUnary);
      e->name = t_[i_++].value;
      ES_ASSIGN_OR_RETURN(e->a, ParseUnary());
      return e;
    }
    ES_ASSIGN_OR_RETURN(ExprPtr e, ParsePrimary());
    ES_ASSIGN_OR_RETURN(e, ParsePostfix(std::move(e)));
    return ParseFilters(std::move(e));
  }

  absl::Status ParseArgs(Expr* e) {
    // At "(": positional arguments, then name=value ones.
    ++i_;
    while (!IsOp(")")) {
      if (Peek().type == T::kName && IsOp("=", 1)) {
        std::string key = t_[i_].value;
        i_ += 2;
        ES_ASSIGN_OR_RETURN(ExprPtr v, ParseExpr());
        e->keywords.emplace_back(std::move(key), std::move(v));
      } else {
        ES_ASSIGN_OR_RETURN(ExprPtr v, ParseExpr());
        e->items.push_back(std::move(v));
      }
      if (!IsOp(",")) break;
      ++i_;
    }
    return Expect(T::kOp, ")", "')'");
  }

  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr e) {
    int links = 0;
    while (true) {
      if (++links + depth_ > kMaxDepth) return TooDeep();
      if (IsOp(".")) {
        ++i_;
        ExprPtr a = Make(Expr::Kind::kAttr);
        ES_ASSIGN_OR_RETURN(a->name, ExpectName());
        a->a = std::move(e);
        e = std::move(a);
      } else if (IsOp("[")) {
        ++i_;
        ExprPtr parts[3];
        int n = 0;
        bool slice = false;
        while (true) {
          if (!IsOp(":") && !IsOp("]")) {
            ES_ASSIGN_OR_RETURN(parts[n], ParseExpr());
          }
          if (IsOp(":") && n < 2) {
            slice = true;
            ++i_;
            ++n;
            continue;
          }
          break;
        }
        ES_RETURN_IF_ERROR(Expect(T::kOp, "]", "']'"));
        ExprPtr s = Make(slice ? Expr::Kind::kSlice : Expr::Kind::kItem);
        s->a = std::move(e);
        s->b = std::move(parts[0]);
        s->c = std::move(parts[1]);
        s->d = std::move(parts[2]);
        if (!slice && s->b == nullptr) return Error("empty subscript");
        e = std::move(s);
      } else if (IsOp("(")) {
        ExprPtr c = Make(Expr::Kind::kCall);
        c->a = std::move(e);
        ES_RETURN_IF_ERROR(ParseArgs(c.get()));
        e = std::move(c);
      } else {
        return e;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParseFilters(ExprPtr e) {
    int links = 0;
    while (true) {
      if (++links + depth_ > kMaxDepth) return TooDeep();
      if (IsOp("|")) {
        ++i_;
        ExprPtr f = Make(Expr::Kind::kFilter);
        ES_ASSIGN_OR_RETURN(f->name, ExpectName());
        f->a = std::move(e);
        if (IsOp("(")) ES_RETURN_IF_ERROR(ParseArgs(f.get()));
        e = std::move(f);
      } else if (IsName("is")) {
        ++i_;
        ExprPtr t = Make(Expr::Kind::kTest);
        if (IsName("not")) {
          ++i_;
          t->negated = true;
        }
        // "none", "true" and "false" lex as names here too.
        ES_ASSIGN_OR_RETURN(t->name, ExpectName());
        t->a = std::move(e);
        if (IsOp("(")) ES_RETURN_IF_ERROR(ParseArgs(t.get()));
        e = std::move(t);
      } else {
        return e;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParsePrimary() {
    const Token tok = Peek();
    ExprPtr e = Make(Expr::Kind::kLiteral);
    switch (tok.type) {
      case T::kString:
        ++i_;
        {
          // Adjacent string literals concatenate.
          std::string text = tok.value;
          while (Peek().type == T::kString) text += t_[i_++].value;
          e->literal = Value::String(std::move(text));
        }
        return e;
      case T::kInt:
        ++i_;
        int64_t i;
        if (!absl::SimpleAtoi(tok.value, &i)) {
          return Error("integer literal out of range");
        }
        e->literal = Value::Int(i);
        return e;
      case T::kFloat:
        ++i_;
        double d;
        if (!absl::SimpleAtod(tok.value, &d)) return Error("bad number");
        e->literal = Value::Float(d);
        return e;
      case T::kName: {
        ++i_;
        const std::string& n = tok.value;
        if (n == "true" || n == "True") {
          e->literal = Value::Bool(true);
        } else if (n == "false" || n == "False") {
          e->literal = Value::Bool(false);
        } else if (n == "none" || n == "None") {
          e->literal = Value::None();
        } else {
          e->kind = Expr::Kind::kName;
          e->name = n;
        }
        return e;
      }
      case T::kOp:
        if (tok.value == "(") {
          ++i_;
          ES_ASSIGN_OR_RETURN(ExprPtr inner, ParseExpr());
          ES_RETURN_IF_ERROR(Expect(T::kOp, ")", "')'"));
          return inner;
        }
        if (tok.value == "[") {
          ++i_;
          e->kind = Expr::Kind::kList;
          while (!IsOp("]")) {
            ES_ASSIGN_OR_RETURN(e->items.emplace_back(), ParseExpr());
            if (!IsOp(",")) break;
            ++i_;
          }
          ES_RETURN_IF_ERROR(Expect(T::kOp, "]", "']'"));
          return e;
        }
        if (tok.value == "{") {
          ++i_;
          e->kind = Expr::Kind::kDict;
          while (!IsOp("}")) {
            ES_ASSIGN_OR_RETURN(e->items.emplace_back(), ParseExpr());
            ES_RETURN_IF_ERROR(Expect(T::kOp, ":", "':'"));
            ES_ASSIGN_OR_RETURN(e->items.emplace_back(), ParseExpr());
            if (!IsOp(",")) break;
            ++i_;
          }
          ES_RETURN_IF_ERROR(Expect(T::kOp, "}", "'}'"));
          return e;
        }
        break;
      default:
        break;
    }
    return Error(absl::StrCat("unexpected '", tok.value, "' in an expression"));
  }

  // Bounds the parser's (and the renderer's) recursion on untrusted
  // templates.
  class DepthGuard {
   public:
    explicit DepthGuard(int* depth) : depth_(depth) { ++*depth_; }
    ~DepthGuard() { --*depth_; }

   private:
    int* depth_;
  };
  static constexpr int kMaxDepth = 200;
  absl::Status TooDeep() const {
    return Error("the template nests too deeply");
  }

  std::vector<Token> t_;
  const std::string& name_;
  size_t i_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;  // Enclosing {% for %} bodies.
};

}  // namespace

absl::StatusOr<std::unique_ptr<Template>> Template::Parse(
    absl::string_view source, std::string name) {
  auto t = std::unique_ptr<Template>(new Template());
  t->name_ = std::move(name);
  Lexer lexer(Preprocess(source), t->name_);
  ES_ASSIGN_OR_RETURN(std::vector<Token> tokens, lexer.Run());
  Parser parser(std::move(tokens), t->name_);
  ES_ASSIGN_OR_RETURN(t->body_, parser.ParseTemplate());
  return t;
}

Template::~Template() = default;

}  // namespace jinja
}  // namespace edgesplit
