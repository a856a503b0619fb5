// The OpenAI HTTP API's JSON (https://platform.openai.com/docs/api-reference)
// as `edgesplit serve` speaks it: requests of /v1/completions and
// /v1/chat/completions parsed into typed structs, and the responses,
// stream chunks and errors it answers. No I/O: the server glue
// (openai/server.h) and the fuzz target use it; everything here is
// thread-compatible.
#ifndef EDGESPLIT_OPENAI_PROTOCOL_H_
#define EDGESPLIT_OPENAI_PROTOCOL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "edgesplit/device_agent.h"

namespace edgesplit {
namespace openai {

// A request of either endpoint, validated.
struct CompletionRequest {
  bool chat = false;  // /v1/chat/completions.
  // The request's "model": "<model>" or "<model>:<adapter>".
  std::string model_field;
  std::string model;
  std::string adapter;                // "" for the base model.
  std::string prompt;                 // Completions.
  std::vector<ChatMessage> messages;  // Chat.
  // max_tokens (chat also max_completion_tokens), temperature, top_p,
  // stop, seed; and the extensions top_k and repetition_penalty, which
  // vLLM and llama.cpp's server accept too.
  SamplingOptions sampling;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage.
};

// The most stop strings and bytes per stop string a request may give
// (OpenAI allows 4; servers of local models allow more).
inline constexpr int kMaxStopStrings = 16;
inline constexpr size_t kMaxStopBytes = 256;

// Parses a request body. Errors are INVALID_ARGUMENT and name the field;
// `param` (may be null) receives the field for the error's "param".
// Fields OpenAI defines that change nothing here (user, logit_bias when
// empty, ...) are accepted; those whose effect edgesplit does not have
// (n > 1, echo, logprobs, penalties other than 0, tools) are refused by
// name rather than silently ignored.
absl::StatusOr<CompletionRequest> ParseCompletionRequest(
    absl::string_view body, bool chat, std::string* param = nullptr);

// What a generation produced, for the response.
struct CompletionResult {
  std::string text;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  // "stop" (EOS or a stop string) or "length" (max_tokens or context).
  std::string finish_reason;
};

// The response's identity: "cmpl-..." / "chatcmpl-..." and the time.
struct ResponseId {
  std::string id;
  int64_t created = 0;  // Unix seconds.
};
ResponseId NewResponseId(bool chat);

// A whole (non-streamed) response's JSON.
std::string CompletionJson(const CompletionRequest& request,
                           const ResponseId& id,
                           const CompletionResult& result);

// Server-sent events of a streamed response, each "data: {...}\n\n":
// the first chunk (chat: the assistant role), one per piece of text, the
// last (finish_reason; then usage when asked), and the terminator.
std::string FirstChunkEvent(const CompletionRequest& request,
                            const ResponseId& id);
std::string TextChunkEvent(const CompletionRequest& request,
                           const ResponseId& id, absl::string_view text);
// The same events, for one stream: the JSON around the text is made once,
// so each piece costs only its own escaping (a stream writes one per
// token).
class TextEvents {
 public:
  TextEvents(const CompletionRequest& request, const ResponseId& id);
  std::string Event(absl::string_view text) const;  // == TextChunkEvent.

 private:
  std::string prefix_, suffix_;
};
std::string FinalChunkEvents(const CompletionRequest& request,
                             const ResponseId& id,
                             const CompletionResult& result);
inline constexpr absl::string_view kDoneEvent = "data: [DONE]\n\n";

// OpenAI's error shape, {"error": {"message", "type", "param", "code"}},
// and the HTTP status for `status` (400 INVALID_ARGUMENT, 401
// UNAUTHENTICATED, 404 NOT_FOUND, 429 RESOURCE_EXHAUSTED, 503
// UNAVAILABLE, 504 DEADLINE_EXCEEDED, else 500).
int HttpStatusFor(const absl::Status& status);
std::string ErrorJson(const absl::Status& status, absl::string_view param = "");
// The same error as a stream event (after headers went out as 200).
std::string ErrorEvent(const absl::Status& status);

// /v1/models: {"object": "list", "data": [{"id", "object": "model", ...}]}.
std::string ModelsJson(const std::vector<std::string>& ids);

}  // namespace openai
}  // namespace edgesplit

#endif  // EDGESPLIT_OPENAI_PROTOCOL_H_
