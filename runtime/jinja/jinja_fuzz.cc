// libFuzzer target for chat templates (tokenizer_config.json's
// chat_template comes with a downloaded model): each input parsed as a
// template and, when it parses, rendered on a small conversation. Neither
// may crash, hang past the render budget or leak (scripts/fuzz.sh builds
// and runs it; seeds in fuzz/seeds/jinja_fuzz).
#include <cstdint>
#include <cstdlib>

#include "absl/strings/string_view.h"
#include "runtime/jinja/jinja.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using edgesplit::jinja::Value;
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  auto t = edgesplit::jinja::Template::Parse(text, "fuzz");
  if (!t.ok()) return 0;
  static const nlohmann::ordered_json* const context =
      new nlohmann::ordered_json(nlohmann::ordered_json::parse(R"({
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": " Hi {{ there }} "},
                     {"role": "assistant", "content": "Hello\n"}],
        "add_generation_prompt": true, "bos_token": "<s>",
        "eos_token": "</s>", "tools": [{"name": "f", "args": [1, 2.5, null]}]
      })"));
  (void)(*t)->Render(Value::FromJson(*context).object());
  return 0;
}
