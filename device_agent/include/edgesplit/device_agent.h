// edgesplit device agent: the library a device app links to generate text
// with a model split between this device and edge servers.
//
//   auto agent = edgesplit::DeviceAgent::Connect({.controller = "ctl:50051"});
//   auto session = (*agent)->OpenSession("stories260K");
//   auto stats = (*session)->Generate("Once upon a time", {}, [](auto text) {
//     std::cout << text << std::flush;
//   });
//
// The controller's plan decides which blocks run here (always the
// embeddings, and in a U-shaped plan the final norm and LM head as well, so
// outputs never leave the device) and which servers run the rest.
//
// Stable interface: no LibTorch, gRPC or Protobuf types appear here; the
// implementation is behind pointers. Thread-safety: a DeviceAgent may be
// shared; a Session is used by one thread at a time.
#ifndef EDGESPLIT_DEVICE_AGENT_H_
#define EDGESPLIT_DEVICE_AGENT_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

// Symbols of the installed shared library (libedgesplit_device_agent.so).
#if defined(EDGESPLIT_DEVICE_AGENT_SHARED_BUILD)
#define EDGESPLIT_EXPORT __attribute__((visibility("default")))
#else
#define EDGESPLIT_EXPORT
#endif

namespace edgesplit {

struct DeviceAgentOptions {
  std::string controller;  // host:port of edgesplit-controller.
  std::string device_name = "device";
  // Where this device keeps each model (model id -> directory). A model
  // not listed is read from the path in the controller's plan.
  std::map<std::string, std::string> model_dirs;
  // Activation codec on the wire: "fp32", "fp16", "bf16" or "int8".
  std::string codec = "fp32";
  int threads = 0;  // Compute threads (process-wide); 0: every core.
  absl::Duration rpc_timeout = absl::Seconds(10);  // Controller calls.
  // Deadline of one Generate call along the whole chain.
  absl::Duration generation_timeout = absl::Minutes(10);
  // Copy weights into memory (fast) rather than compute from the mapping.
  bool copy_weights = true;
  // Measure this device's compute (one block and the head of each model,
  // once) and its link to the first hop, and report both to the controller
  // with the next session, so automatic plans price the device right.
  bool report_profile = true;
  // The link to the first hop is measured again, before the next session
  // asks for its route, when the last measurement is older than this.
  absl::Duration link_profile_interval = absl::Minutes(1);
  // This device's memory for weights and KV caches (0: not limited) and
  // energy costs, reported with the profile for the controller's energy
  // objective (0: unknown).
  int64_t memory_bytes = 0;
  double joules_per_flop = 0;
  double joules_per_bit = 0;
  // Emulation: local compute takes this many times as long (the device
  // sleeps the difference); for what-if runs and tests of slow devices.
  double compute_slowdown = 1.0;
  // When a hop fails mid-generation, the device asks the controller for a
  // new route, leaving out the nodes that no longer answer, and re-sends
  // the prompt and the tokens so far to rebuild the KV caches there; the
  // generation continues at the same token. At most this many times per
  // Generate call.
  int max_reroutes = 3;
};

struct SamplingOptions {
  float temperature = 1.0f;  // 0: greedy.
  int32_t top_k = 0;
  float top_p = 1.0f;
  float repetition_penalty = 1.0f;
  uint64_t seed = 0;
  int32_t max_new_tokens = 64;
  bool stop_at_eos = true;
};

struct HopLatency {
  std::string node;
  double compute_ms = 0;  // Mean per step: the hop's forward.
  double total_ms = 0;    // Mean per step: request in to answer out.
};

struct GenerationStats {
  std::string text;             // The continuation.
  std::vector<int32_t> tokens;  // Its ids.
  int32_t prompt_tokens = 0;
  double prefill_ms = 0;
  double decode_tokens_per_s = 0;
  double device_ms_per_step = 0;  // Embedding + local blocks + encoding.
  int64_t bytes_sent = 0;         // Activations sent to the first hop.
  bool stopped_at_eos = false;
  std::vector<HopLatency> hops;  // In route order (the last route).
  int32_t reroutes = 0;          // Routes changed mid-generation.
};

class EDGESPLIT_EXPORT Session {
 public:
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Generates a continuation of `prompt`, streaming text to `on_text`.
  // Errors: UNAVAILABLE naming the node when a hop is down, DEADLINE_
  // EXCEEDED past generation_timeout, INVALID_ARGUMENT for bad options.
  absl::StatusOr<GenerationStats> Generate(
      absl::string_view prompt, const SamplingOptions& sampling,
      const std::function<void(absl::string_view)>& on_text = nullptr);

  // Stops a Generate in progress (from any thread, or from on_text): the
  // chain is closed hop by hop and Generate returns CANCELLED.
  void Cancel();

  const std::string& session_id() const;
  // "device [0, 1) -> server-a [1, 3) -> server-b [3, 5) + head"
  std::string route() const;

 private:
  friend class DeviceAgent;
  struct Impl;
  explicit Session(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class EDGESPLIT_EXPORT DeviceAgent {
 public:
  static absl::StatusOr<std::unique_ptr<DeviceAgent>> Connect(
      const DeviceAgentOptions& options);
  ~DeviceAgent();
  DeviceAgent(const DeviceAgent&) = delete;
  DeviceAgent& operator=(const DeviceAgent&) = delete;

  // Asks the controller for a route for `model_id` (with a LoRA adapter
  // the servers hold, or "") and loads this device's part of the model.
  absl::StatusOr<std::unique_ptr<Session>> OpenSession(
      const std::string& model_id, const std::string& adapter = "");

 private:
  friend struct Session::Impl;  // Sessions use the agent's connections.
  struct Impl;
  explicit DeviceAgent(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace edgesplit

#endif  // EDGESPLIT_DEVICE_AGENT_H_
