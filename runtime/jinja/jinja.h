// Jinja templates as chat templates use them (tokenizer_config.json's
// "chat_template"), rendered byte for byte as @huggingface/jinja renders
// them (the reference of runtime/jinja/jinja_test.cc, and what transformers.js
// uses; transformers' Python jinja2 gives the same output on these
// templates). No Debian library renders Jinja from C++, hence this one.
//
// Supported (what published chat templates use):
//   - text, {{ expr }}, {# comments #}, whitespace control ({%- -%},
//     {{- -}}), with trim_blocks and lstrip_blocks on and one trailing
//     newline of the template dropped, as transformers configures them;
//   - {% if %}/{% elif %}/{% else %}, {% for a[, b] in xs [if c] %} with
//     loop.index/index0/first/last/length/revindex/revindex0 and
//     {% else %}, {% break %}, {% continue %}, {% set x = e %},
//     {% set ns.attr = e %};
//   - literals (strings, integers, floats, true/false/none in either case,
//     lists, dicts), names, a.b, a[b], a[i:j:k], calls, a if c else b,
//     or/and/not, == != < > <= >= in "not in", + - * / // % ~, filters
//     (trim, length/count, upper, lower, title, capitalize, tojson(indent),
//     string, int, float, first, last, join, default/d, replace, list,
//     items, reverse, abs) and tests (defined, undefined, none,
//     string, number, integer, float, boolean, mapping, iterable,
//     sequence, true, false, odd, even);
//   - string methods strip/lstrip/rstrip/upper/lower/title/capitalize/
//     startswith/endswith/split/replace, dict methods get/items/keys/
//     values; globals raise_exception(msg), namespace(...), range(...).
// Anything else (macros, call/filter blocks, {% generation %}, ...) fails
// to parse with INVALID_ARGUMENT naming the template, line and construct.
#ifndef EDGESPLIT_RUNTIME_JINJA_JINJA_H_
#define EDGESPLIT_RUNTIME_JINJA_JINJA_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/jinja/value.h"

namespace edgesplit {
namespace jinja {

struct Stmt;

// Immutable after Parse; Render is const and may run on many threads at
// once (each render has its own values).
class Template {
 public:
  // `name` appears in errors (e.g. "x/tokenizer_config.json chat_template").
  static absl::StatusOr<std::unique_ptr<Template>> Parse(
      absl::string_view source, std::string name);
  ~Template();

  // Renders with `context` as the global variables (plus raise_exception,
  // namespace and range). A template's raise_exception(msg) gives
  // INVALID_ARGUMENT with msg; type errors name the line.
  absl::StatusOr<std::string> Render(const Object& context) const;

 private:
  Template() = default;
  std::string name_;
  std::vector<std::unique_ptr<Stmt>> body_;
};

}  // namespace jinja
}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_JINJA_JINJA_H_
