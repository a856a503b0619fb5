// Chat templates rendered here and by @huggingface/jinja (npm, through
// tests/js/jinja_render.js) must be byte-identical: published templates of
// Llama 2, Llama 3, Mistral, Qwen2, Phi-3, Gemma, ChatML and Zephyr (their
// text as the models' tokenizer_config.json ship it), and one template
// exercising the rest of the supported language, on conversations that
// include the errors those templates raise.
#include "runtime/jinja/jinja.h"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "testing/test_paths.h"

namespace edgesplit {
namespace jinja {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::ordered_json;

struct NamedTemplate {
  const char* name;
  const char* text;
};

const std::vector<NamedTemplate>& Templates() {
  static const auto* const templates =
      new std::vector<NamedTemplate>{
          {"chatml",
           R"T({% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %})T"},
          {"llama3",
           R"T({% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %})T"},
          {"llama2",
           R"T({% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %})T"},
          {"mistral",
           R"T({{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %})T"},
          {"qwen2",
           R"T({% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %})T"},
          {"phi3",
           R"T({% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %})T"},
          {"gemma",
           R"T({{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %})T"},
          {"zephyr", R"T({% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>
'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %})T"},
          {"features", R"T({#- Everything else the engine supports. -#}
{%- set ns = namespace(count=0, last_role='') -%}
{%- for m in messages if m.role != 'system' -%}
{%- set ns.count = ns.count + 1 -%}
{{ loop.index }}/{{ loop.length }} {{ m['role'] | upper }}{{ ' (first)' if loop.first else '' }}{{ ' (last)' if loop.last }}: {{ m.content | trim | replace('treasure', 'gold') }} [{{ m.content | length }}]
    {% set ns.last_role = m.role %}
{%- endfor %}
count={{ ns.count }} last={{ ns.last_role }} sys={{ messages[0].content if messages[0].role == 'system' else 'none' }}
{{ messages | length }} {{ (messages[1:] | length) ~ '!' }} {{ messages[-1]['role'] }} {{ 7 // 2 }} {{ 7 % 3 }} {{ 2 * 3 + 1 }} {{ 1.5 + 1 }} {{ -3 // 2 }} {{ 10 / 4 }}
{%- for x in [] %}never{% else %} empty-loop{% endfor %}
{{ {'a': 1, 'b': [1, 2, 'x'], 'c': {'d': none}} | tojson }} {{ messages[0] | tojson }}
{{ messages[:1] | tojson(indent=2) }}
{% if tools is defined %}tools{% elif custom is not defined %}no custom{% endif %} {{ 'abc'.upper() }} {{ '  x  '.strip() }}|{{ 'a,b,c'.split(',') | join('+') }} {{ 'Hello'.startswith('He') }} {{ 'hello world'.title() }}
{%- for k, v in {'x': 1, 'y': 2}.items() %} {{ k }}={{ v }}{% endfor %}
{%- for i in range(5) %}{% if i == 3 %}{% break %}{% endif %}{% if i == 1 %}{% continue %}{% endif %}{{ i }}{% endfor %}
{{ 'yes' if 'pirate' in messages[0].content else 'no' }} {{ not false and (true or false) }} {{ messages[0].get('missing', 'dflt') }} {{ none is none }} {{ undefined_name | default('d') }} {{ 'x' ~ 1 ~ none_var }} {{ [1, 2] + [3] }} {{ 'b' in ['a', 'b'] }} {{ 'k' in {'k': 1} }}
{{ messages | map_not_here if false else 'ok' }} {{ messages[1:3] | length }} {{ 'abcdef'[1:4] }} {{ 'abcdef'[::-1] }} {{ messages | first | tojson }} {{ 3 is odd }} {{ (messages | last).content | lower }})T"},
      };
  return *templates;
}

json Message(const char* role, const char* content) {
  return json{{"role", role}, {"content", content}};
}

std::vector<json> Contexts() {
  std::vector<json> contexts;
  auto add = [&](json messages, bool generation_prompt) {
    contexts.push_back(json{{"messages", std::move(messages)},
                            {"add_generation_prompt", generation_prompt},
                            {"bos_token", "<s>"},
                            {"eos_token", "</s>"}});
  };
  add(json::array({Message("user", "Hello!")}), true);
  add(json::array({Message("system", "You are a pirate."),
                   Message("user", "Hi"), Message("assistant", "Arr!"),
                   Message("user", "Where is the treasure?")}),
      true);
  add(json::array({Message("user", "  spaced out  \n"),
                   Message("assistant", "\tyes "),
                   Message("user", "{{ not a tag }} {% neither %}")}),
      false);
  add(json::array({Message("assistant", "I speak first")}), true);
  // (No character outside the BMP: the reference counts UTF-16 units;
  // StringsCountCodePoints covers those.)
  add(json::array({Message("user", "Привет, 世界! ☃ \"quotes\" 'single'"),
                   Message("assistant", "Hola\\n done")}),
      false);
  add(json::array({Message("user", "a"), Message("user", "b")}), true);
  return contexts;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The reference's results: [template][context] -> {"output"} or {"error"}.
json ReferenceResults(std::string* problem) {
  const std::string src = testing::SourceDir();
  if (!std::ifstream(
          src + "/tests/js/node_modules/@huggingface/jinja/package.json")) {
    *problem =
        "@huggingface/jinja is not installed: run `npm ci --prefix tests/js`";
    return json();
  }
  const std::string dir = testing::TempDir("jinja_reference");
  json input;
  for (const NamedTemplate& t : Templates()) {
    input["templates"].push_back({{"name", t.name}, {"template", t.text}});
  }
  input["contexts"] = Contexts();
  std::ofstream(dir + "/input.json") << input.dump();
  const std::string command = absl::StrCat(
      "node '", src, "/tests/js/jinja_render.js' '", dir, "/input.json' > '",
      dir, "/output.json' 2> '", dir, "/error.txt'");
  if (std::system(command.c_str()) != 0) {
    *problem = command + " failed: " + ReadAll(dir + "/error.txt");
    return json();
  }
  return json::parse(ReadAll(dir + "/output.json"));
}

Object ToContext(const json& j) { return Value::FromJson(j).object(); }

TEST(JinjaReferenceTest, ChatTemplatesRenderByteForByteAsTheReference) {
  std::string problem;
  const json reference = ReferenceResults(&problem);
  // Never skip: CI installs the reference, so its absence is a failure.
  ASSERT_TRUE(problem.empty()) << problem;
  const std::vector<json> contexts = Contexts();
  int compared = 0, errors = 0;
  for (size_t t = 0; t < Templates().size(); ++t) {
    const NamedTemplate& nt = Templates()[t];
    auto tmpl = Template::Parse(nt.text, nt.name);
    ASSERT_TRUE(tmpl.ok()) << tmpl.status();
    for (size_t c = 0; c < contexts.size(); ++c) {
      const json& want = reference[t][c];
      auto got = (*tmpl)->Render(ToContext(contexts[c]));
      if (want.contains("error")) {
        ++errors;
        EXPECT_FALSE(got.ok())
            << nt.name << " context " << c << " should fail: " << want["error"];
        // raise_exception's message reaches the caller.
        const std::string message = want["error"].get<std::string>();
        if (!got.ok() && absl::StrContains(message, "alternate")) {
          EXPECT_THAT(got.status().message(), HasSubstr(message));
        }
        continue;
      }
      ++compared;
      ASSERT_TRUE(got.ok())
          << nt.name << " context " << c << ": " << got.status();
      EXPECT_EQ(*got, want["output"].get<std::string>())
          << nt.name << " context " << c << "\n got: " << absl::CHexEscape(*got)
          << "\nwant: " << absl::CHexEscape(want["output"].get<std::string>());
    }
  }
  EXPECT_GT(compared, 40);
  EXPECT_GT(errors, 4);
}

// As Python's jinja2 (transformers) counts: by code point. The JavaScript
// reference counts UTF-16 units ("👋" | length is 2 there).
TEST(JinjaTest, StringsCountCodePoints) {
  auto t = Template::Parse(
      "{{ s | length }} {{ s[1] }} {{ s[-1] }} {{ s[1:3] }} {{ s | first }} "
      "{{ s | reverse }} {{ s | list | length }}",
      "t");
  ASSERT_TRUE(t.ok()) << t.status();
  auto r = (*t)->Render({{"s", Value::String("a👋é世")}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "4 👋 世 👋é a 世é👋a 4");
  // strip(chars) strips whole characters, never a byte of one.
  auto strip = Template::Parse("[{{ s.strip('è') }}|{{ s.rstrip('é') }}]", "t");
  ASSERT_TRUE(strip.ok());
  EXPECT_EQ(*(*strip)->Render({{"s", Value::String("éaé")}}), "[éaé|éa]");
}

TEST(JinjaTest, ParseErrorsNameTheTemplateAndLine) {
  struct Case {
    const char* text;
    const char* message;
  };
  for (const Case& c : std::vector<Case>{
           {"a\n{% macro m() %}{% endmacro %}",
            "t:2: unsupported tag {% macro"},
           {"{% if x %}never closed", "missing {% endif %}"},
           {"{{ 'unterminated }}", "a string is not closed"},
           {"{{ x ! y }}", "unexpected character '!'"},
           {"{% for %}", "expected a name"},
           {"{{ a[] }}", "empty subscript"},
           {"{% break %}", "{% break %} outside a loop"},
           {"{{ x", "ends inside a tag"},
       }) {
    auto t = Template::Parse(c.text, "t");
    ASSERT_FALSE(t.ok()) << c.text;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(t.status().message(), HasSubstr(c.message)) << c.text;
  }
}

TEST(JinjaTest, RenderErrorsNameTheLine) {
  auto t = Template::Parse("ok\n{{ raise_exception('no system role') }}", "t");
  ASSERT_TRUE(t.ok());
  auto r = (*t)->Render({});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("t:2: no system role"));
  auto u = Template::Parse("{{ missing.attr }}", "u");
  ASSERT_TRUE(u.ok());
  EXPECT_THAT((*u)->Render({}).status().message(),
              HasSubstr("u:1: cannot read \"attr\" of undefined"));
  auto f = Template::Parse("{{ 1 | nosuchfilter }}", "f");
  ASSERT_TRUE(f.ok());
  EXPECT_THAT((*f)->Render({}).status().message(),
              HasSubstr("unsupported filter nosuchfilter"));
}

// Untrusted templates cannot run forever, nest values without bound or
// build a namespace that holds itself.
TEST(JinjaTest, UntrustedTemplatesAreBounded) {
  struct Case {
    const char* text;
    const char* message;
  };
  for (const Case& c : std::vector<Case>{
           {"{% for i in range(100000) %}{% for j in range(100000) %}"
            "{% endfor %}{% endfor %}",
            "step budget spent"},
           {"{% set ns = namespace(a=[]) %}{% for i in range(100) %}"
            "{% set ns.a = [ns.a] %}{% endfor %}",
            "values nest too deeply"},
           {"{% set ns = namespace() %}{% set ns.me = ns %}",
            "cannot be stored in a namespace"},
           {"{% set ns = namespace() %}{{ [ns] }}",
            "cannot be stored in a list"},
           {"{% set ns = namespace(s='ab') %}{% for i in range(40) %}"
            "{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
            "would exceed 16 MiB"},
           {"{% set ns = namespace(s='ab') %}{% for i in range(30) %}"
            "{% set ns.s = ns.s | replace('a', 'aaaa') %}{% endfor %}",
            "would exceed 16 MiB"},
       }) {
    auto t = Template::Parse(c.text, "t");
    ASSERT_TRUE(t.ok()) << t.status();
    auto r = (*t)->Render({});
    EXPECT_THAT(r.status().message(), HasSubstr(c.message)) << c.text;
  }
  // Nesting of every kind is bounded at parse time (render and
  // destruction recurse as deep as the tree).
  std::string ifs, chain = "{{ 1", attrs = "{{ x", filters = "{{ x";
  for (int i = 0; i < 20000; ++i) {
    ifs += "{% if 1 %}";
    chain += " + 1";
    attrs += ".a";
    filters += " | trim";
  }
  for (const std::string& text :
       {"{{ " + std::string(5000, '(') + "1 }}", ifs, chain + " }}",
        attrs + " }}", filters + " }}"}) {
    auto deep = Template::Parse(text, "t");
    EXPECT_THAT(deep.status().message(), HasSubstr("nests too deeply"))
        << text.substr(0, 40);
  }
  // Shared sub-lists stand for exponentially many elements: comparing or
  // printing them stops at the budget instead of running for ages.
  std::string shared = "{% set a = [1] %}{% set b = [1] %}";
  for (int i = 0; i < 60; ++i) {
    shared += "{% set a = [a, a] %}{% set b = [b, b] %}";
  }
  for (const auto& [tail, message] :
       std::vector<std::pair<std::string, std::string>>{
           {"{{ a == b }}", "comparison of values too large"},
           {"{{ a }}", "would exceed 16 MiB"},
           {"{{ {a: 1} }}", "list cannot be a dict key"},
           {"{{ raise_exception(a) }}", ""}}) {
    auto t = Template::Parse(shared + tail, "t");
    ASSERT_TRUE(t.ok()) << t.status();
    auto r = (*t)->Render({});
    EXPECT_FALSE(r.ok()) << tail;
    EXPECT_THAT(r.status().message(), HasSubstr(message)) << tail;
  }
}

}  // namespace
}  // namespace jinja
}  // namespace edgesplit
