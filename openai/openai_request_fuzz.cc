// libFuzzer target for `edgesplit serve`'s request bodies (anything a
// client sends): each input parsed as a completion and as a chat request
// and, when it parses, answered in every response shape. Nothing may
// crash, hang or leak (scripts/fuzz.sh; seeds in
// fuzz/seeds/openai_request_fuzz).
#include <cstdint>
#include <cstdlib>

#include "absl/strings/string_view.h"
#include "openai/protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view body(reinterpret_cast<const char*>(data), size);
  for (bool chat : {false, true}) {
    std::string param;
    auto r = edgesplit::openai::ParseCompletionRequest(body, chat, &param);
    if (!r.ok()) {
      (void)edgesplit::openai::ErrorJson(r.status(), param);
      continue;
    }
    // The request's own text echoes into every response.
    edgesplit::openai::CompletionResult result;
    result.text = r->prompt;
    for (const auto& m : r->messages) result.text += m.content;
    result.finish_reason = "stop";
    const auto id = edgesplit::openai::NewResponseId(chat);
    (void)edgesplit::openai::CompletionJson(*r, id, result);
    (void)edgesplit::openai::FirstChunkEvent(*r, id);
    (void)edgesplit::openai::TextChunkEvent(*r, id, result.text);
    (void)edgesplit::openai::FinalChunkEvents(*r, id, result);
  }
  return 0;
}
