// A sequence split between this device and a chain of edge servers: the
// embedding and blocks [0, k) run here, the rest on the route; in a
// U-shaped split the final norm and LM head run here too, so outputs (and,
// in training, labels) never leave the device. A plan may give the device
// zero blocks: then the first server embeds and only token ids go up.
#ifndef EDGESPLIT_DEVICE_AGENT_REMOTE_SEQUENCE_H_
#define EDGESPLIT_DEVICE_AGENT_REMOTE_SEQUENCE_H_

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "edgesplit/v1/stage.grpc.pb.h"
#include "privacy/row_noise.h"
#include "proto/stage_stream.h"
#include "runtime/generator.h"
#include "runtime/stage_model.h"

namespace edgesplit {

struct HopStats {
  std::string node;
  double compute_ms = 0;  // Summed over steps.
  double total_ms = 0;    // Summed: request received to answered.
};

struct RemoteSequenceOptions {
  std::string session_id;
  std::string model_id;
  std::string adapter;
  v1::Codec codec = v1::CODEC_FP32;
  std::vector<v1::Hop> route;  // The servers, in order.
  v1::SignedGrant grant;       // The controller's, for this route.
  absl::Time deadline = absl::InfiniteFuture();
  double compute_slowdown = 1.0;  // Emulation: see DeviceAgentOptions.
  // Greedy decoding without a repetition penalty needs only each row's
  // top token: the last hop answers ids, not logits (ignored when the
  // head runs here, U-shaped). The logits this sequence returns are then
  // one-hot at those ids, which greedy sampling picks alike.
  bool argmax_only = false;
  // The session's LoRA adapter for the device's blocks (null: none). Not
  // owned; outlives the sequence.
  const LoraAdapter* local_adapter = nullptr;
  // Differential privacy: every row of hidden states sent goes through it
  // (clipped and noised, or its earlier release replayed) before it is
  // encoded. Null: sent as computed. Not owned; outlives the sequence.
  privacy::SequencePrivatizer* privatizer = nullptr;
};

// Not thread-safe: one generation at a time.
class RemoteSequence : public LogitsModel {
 public:
  // `local` runs the embedding and the device's blocks (null: the device
  // holds zero blocks and the route's first hop embeds); `head` (U-shaped
  // only, else null) runs the final norm and LM head. Both must outlive the
  // sequence. Opens the session along the whole route before returning.
  static absl::StatusOr<std::unique_ptr<RemoteSequence>> Open(
      const ModelConfig& config, const StageModel* local,
      const StageModel* head, v1::StageService::Stub* first_hop,
      const RemoteSequenceOptions& options);
  ~RemoteSequence() override;

  absl::StatusOr<std::vector<float>> Forward(
      absl::Span<const int32_t> tokens) override;
  // Every row's logits (speculative verification). Rollback forgets
  // positions here at once and on every hop with the next step.
  absl::StatusOr<at::Tensor> ForwardAll(
      absl::Span<const int32_t> tokens) override;
  absl::Status Rollback(int64_t positions) override;
  // The route's last server checks the drafts and answers one row (the
  // default, through ForwardAll, when the head runs here: U-shaped).
  absl::StatusOr<CheckedDraft> ForwardChecked(absl::Span<const int32_t> tokens,
                                              const DraftCheck& check) override;
  // Closes the stream (thread-safe): every hop ends the session, and the
  // call in flight and later ones fail with CANCELLED.
  void Cancel() { stream_->Close(); }
  // Rows sent from the next step on go through `privatizer` (see
  // RemoteSequenceOptions::privatizer).
  void set_privatizer(privacy::SequencePrivatizer* privatizer) {
    options_.privatizer = privatizer;
  }
  int64_t context_length() const override;

  // Per-hop timings summed over the steps so far, in route order.
  const std::vector<HopStats>& hop_stats() const { return hop_stats_; }
  double local_ms() const { return local_ms_; }
  int64_t bytes_sent() const { return bytes_sent_; }
  // Answers' payloads (logits or hidden states) received.
  int64_t bytes_received() const { return bytes_received_; }
  int64_t steps() const { return static_cast<int64_t>(step_); }

 private:
  RemoteSequence() = default;
  absl::StatusOr<v1::StageResponse> Call(v1::StageRequest request);
  // One step: logits of the last row or of every row; with `check`, of
  // the row after the drafts the last server kept (`*accepted`).
  absl::StatusOr<at::Tensor> Run(absl::Span<const int32_t> tokens,
                                 bool last_only,
                                 const DraftCheck* check = nullptr,
                                 int64_t* accepted = nullptr);
  // The device's part of a step: hidden states into `fwd` (or, with zero
  // device blocks, the token ids).
  absl::Status RunLocal(absl::Span<const int32_t> tokens,
                        v1::ForwardRequest* fwd);
  // Emulated slow device: sleeps (slowdown - 1) x the time since `start`.
  void Slowdown(std::chrono::steady_clock::time_point start);

  ModelConfig config_;
  const StageModel* local_ = nullptr;
  const StageModel* head_ = nullptr;
  std::unique_ptr<SequenceKvCache> local_cache_;
  std::unique_ptr<SequenceKvCache> head_cache_;
  std::shared_ptr<StageStream> stream_;
  RemoteSequenceOptions options_;
  uint64_t step_ = 0;
  std::vector<HopStats> hop_stats_;
  double local_ms_ = 0;
  int64_t bytes_sent_ = 0;
  int64_t bytes_received_ = 0;
  int64_t pending_rollback_ = 0;  // Sent with the next step.
  int64_t positions_ = 0;  // Held by the route (after pending_rollback_).
};

}  // namespace edgesplit

#endif  // EDGESPLIT_DEVICE_AGENT_REMOTE_SEQUENCE_H_
