// A Backend generating with the split model of a cluster (`edgesplit serve
// --controller HOST:PORT`), through the device agent's public API: this
// process is the device. Its loaded blocks are shared by every request;
// each request runs on a session of its own (kept for the next request of
// the same model and adapter, so the controller is asked for a route only
// when no idle session is left).
#ifndef EDGESPLIT_OPENAI_AGENT_BACKEND_H_
#define EDGESPLIT_OPENAI_AGENT_BACKEND_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "edgesplit/device_agent.h"
#include "openai/backend.h"

namespace edgesplit {
namespace openai {

struct AgentBackendOptions {
  DeviceAgentOptions agent;
  std::vector<std::string> model_ids;  // The models served (>= 1).
  int max_idle_sessions = 16;          // Kept per model and adapter.
  // Models() asks the controller for adapters with this deadline (at most
  // agent.rpc_timeout); after a failed ask it lists what it last learned
  // for `list_backoff` without asking, so a silent controller costs one
  // listing one wait, not every listing every model's rpc_timeout.
  absl::Duration list_timeout = absl::Seconds(2);
  absl::Duration list_backoff = absl::Seconds(10);
};

// Thread-safe.
class AgentBackend : public Backend {
 public:
  static absl::StatusOr<std::unique_ptr<AgentBackend>> Connect(
      AgentBackendOptions options);

  // The models, then "ID:NAME" for each registered adapter the controller
  // lets this device use (asked on every call but during a back-off, see
  // AgentBackendOptions; none without options.agent.adapter_dir).
  std::vector<std::string> Models() const override;
  // Takes an idle session of the model and adapter or opens one (the
  // controller's route; NOT_FOUND for an adapter nobody holds).
  absl::StatusOr<std::unique_ptr<Generation>> Start(
      const CompletionRequest& request) override;

 private:
  class AgentGeneration;
  AgentBackend() = default;
  absl::Status Check(const CompletionRequest& request) const;
  absl::StatusOr<std::unique_ptr<Session>> Acquire(const std::string& model,
                                                   const std::string& adapter);
  void Release(const std::string& key, std::unique_ptr<Session> session);

  AgentBackendOptions options_;
  std::unique_ptr<DeviceAgent> agent_;
  // Held across the asks, so concurrent listings share one wait.
  mutable absl::Mutex list_mu_;
  // model -> its adapters' names, as last listed.
  mutable std::map<std::string, std::vector<std::string>> listed_
      ABSL_GUARDED_BY(list_mu_);
  mutable absl::Time ask_after_ ABSL_GUARDED_BY(list_mu_) =
      absl::InfinitePast();
  absl::Mutex mu_;
  // "model:adapter" -> sessions no request is using.
  std::map<std::string, std::vector<std::unique_ptr<Session>>> idle_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace openai
}  // namespace edgesplit

#endif  // EDGESPLIT_OPENAI_AGENT_BACKEND_H_
