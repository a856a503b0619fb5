// What `edgesplit serve` generates with: the seam between the HTTP API and
// a model. Two implementations: LocalBackend (a model directory run in
// this process) and AgentBackend (the split model of a cluster, through the
// device agent's public API). Tests replace it with a fake.
#ifndef EDGESPLIT_OPENAI_BACKEND_H_
#define EDGESPLIT_OPENAI_BACKEND_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "openai/protocol.h"

namespace edgesplit {
namespace openai {

// Receives each piece of generated text as it streams; false when the
// client is gone, which cancels the generation.
using TextSink = std::function<bool(absl::string_view)>;

// One request's generation, ready to run (from Backend::Start). Used by
// one thread.
class Generation {
 public:
  virtual ~Generation() = default;
  // Generates the completion, streaming text to `sink`. Errors: CANCELLED
  // when `sink` answered false, UNAVAILABLE when the route went down,
  // INVALID_ARGUMENT for a conversation a split model's chat template
  // refuses (a local one is checked by Start).
  virtual absl::StatusOr<CompletionResult> Run(const TextSink& sink) = 0;
};

// Thread-safe: the server calls Start from many request threads at once.
class Backend {
 public:
  virtual ~Backend() = default;
  // The ids /v1/models lists ("model" or "model:adapter").
  virtual std::vector<std::string> Models() const = 0;
  // Everything that can fail before the first token, so a streamed
  // request still gets an HTTP error: NOT_FOUND (naming it) for a model or
  // adapter not served here; INVALID_ARGUMENT for a request the model
  // cannot take (a chat to a model without a chat template, a prompt
  // longer than its context, a conversation its template refuses);
  // UNAVAILABLE when no route can be had.
  virtual absl::StatusOr<std::unique_ptr<Generation>> Start(
      const CompletionRequest& request) = 0;
};

// The finish_reason of a generation that ended at EOS / a stop string
// (`stopped`) or else at its token limit.
inline std::string FinishReason(bool stopped) {
  return stopped ? "stop" : "length";
}

}  // namespace openai
}  // namespace edgesplit

#endif  // EDGESPLIT_OPENAI_BACKEND_H_
