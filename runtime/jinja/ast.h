// The parsed form of a template (internal to runtime/jinja).
#ifndef EDGESPLIT_RUNTIME_JINJA_AST_H_
#define EDGESPLIT_RUNTIME_JINJA_AST_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "runtime/jinja/value.h"

namespace edgesplit {
namespace jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,   // literal
    kName,      // name
    kList,      // items
    kDict,      // keys (items[2i]) and values (items[2i+1])
    kAttr,      // a.name
    kItem,      // a[b]
    kSlice,     // a[b:c:d]; absent parts are nullptr
    kCall,      // a(items, keywords)
    kFilter,    // a | name(items, keywords)
    kTest,      // a is [not] name(items)
    kUnary,     // op a   ("not", "-", "+")
    kBinary,    // a op b
    kCondition  // a if b else c (c may be nullptr)
  };
  Kind kind;
  int line = 0;
  Value literal;
  std::string name;  // Name, attribute, filter, test or operator.
  bool negated = false;
  ExprPtr a, b, c, d;
  std::vector<ExprPtr> items;
  std::vector<std::pair<std::string, ExprPtr>> keywords;
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct Stmt {
  enum class Kind { kText, kOutput, kIf, kFor, kSet, kBreak, kContinue };
  Kind kind;
  int line = 0;
  std::string text;  // kText.
  ExprPtr expr;      // kOutput, kSet value, kFor iterable.
  // kIf: conditions[i] guards bodies[i]; an else body is the one extra.
  std::vector<ExprPtr> conditions;
  std::vector<Body> bodies;
  // kFor: the loop variables (two or more unpack each item); bodies[0] is
  // the loop body, bodies[1] (when present) the else body; `filter` is an
  // optional `if` condition on items.
  std::vector<std::string> targets;
  ExprPtr filter;
  // kSet: `targets[0]`, or `targets[0].attribute` when attribute is set.
  std::string attribute;
};

}  // namespace jinja
}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_JINJA_AST_H_
