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

// PEM files of a device's mutual-TLS identity, from `edgesplit certs init`
// (or `certs issue --device NAME`). Re-read when they change on disk.
// Or, for a device that keeps no private key: the CA and a bearer token
// file (`edgesplit certs token --device NAME`); servers must then accept
// device tokens (`tls: {device_tokens: true}` in their configs).
struct TlsFiles {
  std::string ca_file;          // The cluster CA.
  std::string cert_file;        // This device's certificate.
  std::string key_file;         // Its private key.
  std::string token_file = {};  // Instead of cert_file and key_file.
};

struct DeviceAgentOptions {
  std::string controller;  // host:port of edgesplit-controller.
  // Every channel is mutual TLS with these files: the controller and each
  // server prove they are who the plan says, and this device proves it is
  // the device its certificate names.
  TlsFiles tls;
  // Plaintext instead, with no identities: refused unless the controller
  // and every server are at loopback addresses. For local tests only.
  bool insecure = false;
  // With TLS the certificate's name is used; a different name here is an
  // error (the default "device" always yields to the certificate's).
  std::string device_name = "device";
  // Where this device keeps each model (model id -> directory). A model
  // not listed is read from the path in the controller's plan, or, when
  // the plan names a registered model copy (`model: {copy: }`), from
  // model_cache_dir.
  std::map<std::string, std::string> model_dirs;
  // Model copies plans name, for models not in model_dirs: fetched from
  // the controller (verified by SHA-256; the controller's `devices:` rules
  // apply) into <model_cache_dir>/.cluster/<model_id>/<copy> when a
  // session first needs one. Empty: a plan naming a copy is refused for
  // models not in model_dirs (the path in such a plan is the
  // controller's).
  std::string model_cache_dir;
  // LoRA adapters sessions may name (OpenSession's `adapter`): PEFT
  // directories <adapter_dir>/<name>. The device applies the adapter's
  // part on its own blocks (the servers apply theirs), so a session with
  // an adapter needs it here unless the plan gives the device no blocks;
  // one registered with the controller and missing here is downloaded
  // into it (verified by SHA-256) when a session first names it.
  std::string adapter_dir;
  // Activation codec on the wire: "fp32", "fp16", "bf16" or "int8".
  std::string codec = "fp32";
  int threads = 0;  // Compute threads (process-wide); 0: every core.
  absl::Duration rpc_timeout = absl::Seconds(10);  // Controller calls.
  // Every connection is pinged after this long without traffic; a server
  // that does not answer within as long again is taken as gone (the
  // session moves to another route). Servers allow pings this often only
  // if their keepalive_s is no longer.
  absl::Duration keepalive = absl::Seconds(10);
  // Deadline of one Generate call along the whole chain.
  absl::Duration generation_timeout = absl::Minutes(10);
  // Copy weights into memory (fast) rather than compute from the mapping.
  bool copy_weights = true;
  // Weights of the device's own blocks: "" as the model directory stores
  // them; "f32"; or "q8_0" / "q4_0", quantized at load (about 3.8x / 7x
  // smaller; an approximation whose measured quality the README states).
  std::string weights;
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
  // Emulation: in training, every message to the first hop leaves this
  // much later (the trainer waits first), as over a slow link; for
  // what-if runs of client selection and tests.
  absl::Duration training_link_delay = absl::ZeroDuration();
  // When a hop fails mid-generation, the device asks the controller for a
  // new route, leaving out the nodes that no longer answer, and re-sends
  // the prompt and the tokens so far to rebuild the KV caches there; the
  // generation continues at the same token. At most this many times per
  // Generate call.
  int max_reroutes = 3;
  // While the controller cannot be reached (restarting, partitioned), new
  // sessions of a model reuse the route the controller last gave for it,
  // if issued within this long and its route grant has not expired
  // (grant_ttl_s on the controller); 0: never. Running sessions never need
  // the controller.
  absl::Duration cached_route_ttl = absl::Seconds(60);
  // The user's privacy budget across generations (PrivacyOptions): the
  // Rényi DP spent so far, kept in this file (created if absent) so it
  // survives restarts; a generation whose noise would bring the total past
  // (privacy_budget_epsilon, privacy_budget_delta) is refused before
  // anything leaves the device. "": no budget kept (each generation is
  // still bounded by its own epsilon). Each charge counts in its own unit
  // (a generation's text, a training window, a device's averaging
  // updates): see docs/privacy.md.
  std::string privacy_budget_file;
  double privacy_budget_epsilon = 0;  // > 0 with a budget file.
  double privacy_budget_delta = 1e-5;
};

// Differential privacy of what this device sends (docs/privacy.md): each
// activation row leaving the device (one per token) is clipped to L2 norm
// `clip` and gets Gaussian noise calibrated so that the whole generation
// -- prompt and continuation, every row it may send -- is (epsilon,
// delta)-DP towards the servers: they cannot tell this text from any
// other of the same length beyond what epsilon allows. Approximate: the
// noise changes what the servers compute, so outputs degrade as epsilon
// falls (measured in bench/privacy_bench). Off unless epsilon > 0.
struct PrivacyOptions {
  double epsilon = 0;   // Per Generate call; 0: off.
  double delta = 1e-5;  // In (0, 1).
  // Required with epsilon: rows longer than this are scaled down to it; the
  // noise scales with it. Near the typical row norm at the cut keeps the
  // most signal (`edgesplit generate` prints the norms it clipped).
  double clip = 0;
  // Training only (TrainingOptions::privacy; U-shaped, device blocks
  // frozen): the L2 bound of each gradient row sent back to the last
  // server, which the noise scales with too. Required there.
  double grad_clip = 0;
};

// Speculative decoding: a draft on this device proposes up to `max_draft`
// tokens, the route runs them as one step and keeps the longest prefix it
// agrees with plus its own next token, so one round trip yields several
// tokens. Greedy output is identical to plain decoding; sampled output has
// exactly plain sampling's distribution (rejection sampling).
struct SpeculativeOptions {
  // "": off. "lookup": prompt lookup (copies what followed the latest
  // earlier occurrence of the last few tokens; no model). "self:q8_0" /
  // "self:q4_0": the whole model on this device with quantized weights.
  // Otherwise a model directory: a small model with the same tokenizer.
  std::string draft;
  int max_draft = 8;  // 1..32 tokens per step.
  // Each step's k follows the measured acceptance rate, round trips and
  // drafting cost (0: a plain step when drafting does not pay). Greedy
  // output never depends on k; a seeded sampled run repeats exactly only
  // with adaptive false (k, and so which draws are made, follows timings).
  bool adaptive = true;
  // Uncertainty skip, approximate, 0 = off: draft tokens whose draft
  // probability reaches this are emitted at once, never verified (a draft
  // model only). GenerationStats reports how often verification would
  // have kept them.
  float skip_threshold = 0;
};

struct SamplingOptions {
  float temperature = 1.0f;  // 0: greedy.
  int32_t top_k = 0;
  float top_p = 1.0f;
  float repetition_penalty = 1.0f;
  uint64_t seed = 0;
  int32_t max_new_tokens = 64;
  bool stop_at_eos = true;
  // Generation ends where the continuation's text first contains one of
  // these (non-empty); the text before it streams and is returned, text
  // that may begin one is held back until it cannot.
  std::vector<std::string> stop;
  SpeculativeOptions speculative;  // Off unless a draft is named.
  // Noise on what leaves the device; not with speculative decoding
  // (rejected drafts would be releases too) or a plan that gives this
  // device no blocks (token ids cannot be noised).
  PrivacyOptions privacy;
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
  // Sent to the first hop: activations, or token ids (4 bytes each) when
  // the plan gives the device zero blocks.
  int64_t bytes_sent = 0;
  bool stopped_at_eos = false;
  bool stopped_at_stop = false;  // At one of SamplingOptions::stop.
  std::vector<HopLatency> hops;  // In route order (the last route).
  int32_t reroutes = 0;          // Routes changed mid-generation.
  int64_t bytes_received = 0;    // Answers (logits or hidden states).
  // Speculative decoding: steps after the prefill, those that carried
  // drafts, draft tokens sent and accepted (acceptance rate = accepted /
  // drafted; tokens per step = tokens / steps).
  int32_t steps = 0;
  int32_t draft_steps = 0;
  int64_t drafted_tokens = 0;
  int64_t accepted_tokens = 0;
  std::vector<int32_t> draft_lengths;  // k of each step with drafts.
  // Uncertainty skip: tokens emitted unverified, and the mean chance that
  // verification would have kept one (over those the route saw later).
  int64_t skipped_tokens = 0;
  double skip_agreement = 0;
  // With PrivacyOptions: the (epsilon, delta) this generation spent (what
  // its noise was calibrated for: every row it could have sent), the noise
  // multiplier (noise stddev / clip), the rows sent and how many of them
  // were clipped, and the budget's total after it (0 without a budget).
  double privacy_epsilon = 0;
  double privacy_delta = 0;
  double noise_multiplier = 0;
  int64_t private_rows = 0;
  int64_t clipped_rows = 0;
  double budget_epsilon_spent = 0;
};

// One turn of a conversation for Session::Chat.
struct ChatMessage {
  std::string role;  // "system", "user", "assistant".
  std::string content;
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

  // Formats `messages` with the model's chat template (its
  // chat_template.jinja or tokenizer_config.json's chat_template, rendered
  // as transformers does) and generates the assistant's reply, streaming it
  // to `on_text`. The prompt's special tokens are the template's own. Errors
  // as Generate, plus NOT_FOUND when the model has no chat template and
  // INVALID_ARGUMENT for a conversation the template refuses (e.g. roles
  // that do not alternate), with its message.
  absl::StatusOr<GenerationStats> Chat(
      const std::vector<ChatMessage>& messages, const SamplingOptions& sampling,
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
  // `turn_end_id` (>= 0): ends the generation like EOS (a chat turn's end).
  absl::StatusOr<GenerationStats> GenerateFrom(
      std::vector<int32_t> prompt_ids, const SamplingOptions& sampling,
      const std::function<void(absl::string_view)>& on_text,
      int32_t turn_end_id = -1);
  std::unique_ptr<Impl> impl_;
};

// Split fine-tuning: this device trains LoRA adapters together with the
// edge servers of the model's plan without sending its raw text (and,
// U-shaped, without sending its labels). Activations go forward along the
// route, gradients come back, each stage updates the LoRA factors of its
// blocks; base weights never change.
struct TrainingOptions {
  // Sessions with the same job id share the servers' adapter. Names the
  // checkpoints: 1-128 of [A-Za-z0-9._-].
  std::string job_id = "job";
  // "sl": sequential split learning (devices of a job take turns; each
  // update applies one device's batch). "psl": parallel split learning
  // (every update waits for `devices` devices and averages their
  // gradients). "sfl": split federated learning (psl, and every
  // `average_every` steps the controller averages the devices' own
  // adapters: AverageDeviceAdapter).
  std::string mode = "sl";
  int devices = 1;  // psl / sfl: devices training together.
  // Creating the job: the other devices (their certified names) that may
  // join it. A job belongs to its creator and these; the controller grants
  // nobody else a session of it or a place in its averaging rounds.
  std::vector<std::string> job_members;
  int average_every = 10;
  int rank = 8;
  double alpha = 16;
  // Module short names ("q_proj", "c_attn", ...); empty: every linear
  // module of each block.
  std::vector<std::string> target_modules;
  // Blocks whose factors train, [first, last); last -1: to the end. The
  // rest stay frozen (the freezing ratio).
  int64_t first_trained_block = 0;
  int64_t last_trained_block = -1;
  // >= 0: the first floor(ratio x blocks) blocks stay frozen and the rest
  // train (the seeds' freezing ratio; overrides the two above).
  double freeze_ratio = -1;
  // The loss, head and labels stay on this device: needs a U-shaped plan.
  bool u_shaped = false;
  uint64_t seed = 0;  // Initial factors.
  // AdamW with linear warm-up and cosine decay to 0 over total_steps (0:
  // constant), global gradient-norm clipping (<= 0: none).
  double lr = 2e-4;
  double weight_decay = 0;
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;
  double max_grad_norm = 1.0;
  // Recompute activations at backward instead of keeping them.
  bool recompute = false;
  // This device's checkpoints (the servers keep theirs): ApplyStep with a
  // checkpoint saves every shard; Resume restores the newest all share.
  std::string checkpoint_dir;
  int keep_checkpoints = 2;
  // A step (or evaluation, restore, export) fails DEADLINE_EXCEEDED when
  // the route leaves a request unanswered this long (a stuck or overloaded
  // hop that still keeps its connection alive); Run resumes after it as
  // after a lost hop.
  absl::Duration answer_timeout = absl::Minutes(5);
  // Private training (approximate: the servers learn from noisy rows):
  // each training window is an example, and everything the servers
  // receive about it -- its activations at the cut (released once, resent
  // on later uses) and, per use, the gradients of the head's loss -- is
  // clipped and noised so the whole Run is (epsilon, delta)-DP per window.
  // Needs u_shaped (labels stay here) and this device's blocks frozen;
  // privacy runs through Run only (it calibrates for the run's steps), one
  // private Run per trainer. Charged to DeviceAgentOptions'
  // privacy budget when it has one.
  PrivacyOptions privacy;
  // sfl: user-level DP of the adapters this device sends for averaging
  // (the average reaches the controller and every other device of the
  // job): each round's update (factors minus the last average) is clipped
  // to L2 norm `clip` as a whole and gets Gaussian noise calibrated so all
  // of the Run's rounds together are (epsilon, delta)-DP for everything
  // this device trained on. Through Run only; charged to the budget.
  // Approximate: noise slows what averaging shares. Off unless epsilon > 0.
  PrivacyOptions averaging_privacy;
  // DP-SGD of this device's own LoRA factors: each training window's
  // gradient is clipped to L2 norm `clip`, every update's sum gets
  // Gaussian noise, calibrated so the whole Run is (epsilon, delta)-DP per
  // window for everything the factors reach (averaging, exports, and the
  // activations they compute). It lets private training (privacy) train
  // this device's blocks too; without privacy the servers must train
  // nothing (the device's gradients would read factors learnt from raw
  // data). Through Run only; charged to the budget (composed with the
  // rest). Approximate: noise slows training. Off unless epsilon > 0.
  PrivacyOptions device_privacy;
};

struct TrainingStepStats {
  int64_t step = 0;  // Updates done.
  double loss = 0;   // Mean over the step's micro-batches.
  int64_t tokens = 0;
  double grad_norm = 0;
  double lr = 0;
  double ms = 0;
  // Of `ms`, the forward and backward of the windows (this device's link
  // and the servers' compute, without the wait for a job's other devices).
  double exchange_ms = 0;
  int64_t bytes_sent = 0, bytes_received = 0;  // This device's link.
};

// Trainer::Run: the whole training loop, as `edgesplit train` runs it.
struct TrainingRunOptions {
  // Batches of windows as Step takes them. Update s (counted from 0) uses
  // batches[s % batches.size()], so a resumed run replays the same data.
  std::vector<std::vector<std::vector<int32_t>>> batches;
  // Held-out windows for Evaluate; empty: no evaluation.
  std::vector<std::vector<int32_t>> eval_windows;
  int64_t steps = 100;  // Train until step() == steps.
  // With TrainingOptions.checkpoint_dir: every shard saves after every
  // `checkpoint_every` updates (0: none between) and after the last.
  int64_t checkpoint_every = 50;
  // Evaluate before the first update, then after every `eval_every`
  // updates and after the last (0: only before the first).
  int64_t eval_every = 50;
  // Failed steps (a hop went away) resumed from the newest checkpoint every
  // shard holds, in all, before Run gives up with the step's error.
  int max_resumes = 5;
  absl::Duration resume_timeout = absl::Minutes(2);
};

// Each may be empty. They run on Run's thread, between steps.
struct TrainingRunCallbacks {
  std::function<void(const TrainingStepStats&)> on_step;
  std::function<void(int64_t step, double held_out_loss)> on_eval;
  // Update `step` + 1 failed with `error`; Run resumes next.
  std::function<void(int64_t step, const absl::Status& error)> on_failure;
  // Resumed: training continues after update `step`.
  std::function<void(int64_t step)> on_resume;
};

struct TrainingRunResult {
  int64_t step = 0;    // Updates done (== steps).
  double loss = 0;     // The last update's (0 if Run had none to do).
  int64_t tokens = 0;  // Trained on by this Run (replays count again).
  int resumes = 0;
  // Private runs: the epsilon (at TrainingOptions::privacy.delta) the run
  // was calibrated for, what the most exposed window spent, the noise
  // multiplier, and the budget's total after the run's charge (0 without).
  double privacy_epsilon = 0;
  double privacy_epsilon_spent = 0;
  double noise_multiplier = 0;
  double budget_epsilon_spent = 0;
  // averaging_privacy: the run's user-level epsilon (calibrated for its
  // rounds), the noise multiplier, and the rounds sent.
  double averaging_epsilon = 0;
  double averaging_noise_multiplier = 0;
  int64_t private_rounds = 0;
  // device_privacy: the run's DP-SGD epsilon (calibrated for its most
  // used window), the noise multiplier, and how many window gradients
  // were clipped of all added.
  double device_epsilon = 0;
  double device_noise_multiplier = 0;
  int64_t device_clipped = 0, device_examples = 0;
  // sfl: averaging rounds this Run took part in, in how many the
  // controller averaged this device's factors, and the updates it sat out:
  // the controller's fed_selection may leave a noisy or slow device out of
  // a round (the others train its updates; it adopts their average).
  int64_t rounds = 0, rounds_averaged = 0, skipped = 0;
};

class EDGESPLIT_EXPORT Trainer {
 public:
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // This device's tokenizer (the model's).
  absl::StatusOr<std::vector<int32_t>> Tokenize(absl::string_view text) const;
  // One update from `windows` (each n + 1 token ids: n tokens and their
  // next-token labels; one micro-batch each, pipelined 1F1B through the
  // route). `checkpoint` saves every shard after it. A failed hop gives
  // UNAVAILABLE: call Resume.
  absl::StatusOr<TrainingStepStats> Step(
      const std::vector<std::vector<int32_t>>& windows,
      bool checkpoint = false);
  // Mean loss per labelled token of `windows` (perplexity = exp(loss)).
  absl::StatusOr<double> Evaluate(
      const std::vector<std::vector<int32_t>>& windows);
  // After a failure: a new route from the controller (retrying until
  // `timeout` while servers restart), every shard restored to the newest
  // checkpoint they all hold. Returns the update count to continue from.
  absl::StatusOr<int64_t> Resume(absl::Duration timeout = absl::Minutes(1));
  // sfl: sends this device's adapter for averaging (weighted by `samples`
  // since the last round) and adopts the average; waits for the job's
  // other devices. `seconds_per_window` (its steps' measured pace since
  // the last round) and its averaging noise go with it for the
  // controller's client selection; a device the last round's answer left
  // out sends only those and adopts the average. Returns whether this
  // device's factors were in the average.
  absl::StatusOr<bool> AverageDeviceAdapter(double samples,
                                            double seconds_per_window = 0);
  // Writes the whole trained adapter (every hop's shard and this device's)
  // as a PEFT adapter directory.
  absl::Status Export(const std::string& dir);
  // Trains from step() to `run.steps`: checkpoints, evaluations and (sfl)
  // device-adapter averaging every TrainingOptions.average_every updates
  // at their cadence, resuming after failed steps. INVALID_ARGUMENT for no
  // batches; otherwise the first error it cannot resume from.
  absl::StatusOr<TrainingRunResult> Run(
      const TrainingRunOptions& run,
      const TrainingRunCallbacks& callbacks = {});

  int64_t step() const;
  // Private runs: the epsilon spent so far by the most exposed window (0
  // before a private Run).
  double privacy_epsilon_spent() const;
  std::string route() const;
  // Where this device reads the model (its tokenizer and config).
  std::string model_dir() const;

 private:
  friend class DeviceAgent;
  struct Impl;
  explicit Trainer(std::unique_ptr<Impl> impl);
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

  // The names of `model_id`'s adapters registered with the controller that
  // this device may use (its `devices:` rules), sorted. The call waits at
  // most `timeout` (the first form: options.rpc_timeout), then fails with
  // DEADLINE_EXCEEDED.
  absl::StatusOr<std::vector<std::string>> ListAdapters(
      const std::string& model_id);
  absl::StatusOr<std::vector<std::string>> ListAdapters(
      const std::string& model_id, absl::Duration timeout);

  // Opens a training session of `model_id` on the controller's plan
  // (FAILED_PRECONDITION if `u_shaped` and the plan is not), restoring the
  // newest checkpoint every shard holds when the job has any.
  absl::StatusOr<std::unique_ptr<Trainer>> StartTraining(
      const std::string& model_id, const TrainingOptions& options);
  // Assembles job `job_id`'s adapter from the newest checkpoint every
  // shard holds (the servers' and this device's, under `checkpoint_dir`,
  // where training saved the job's spec) and writes it as a PEFT adapter
  // directory `out_dir`. The job's sessions on the servers go back to that
  // checkpoint.
  absl::Status ExportAdapter(const std::string& model_id,
                             const std::string& job_id,
                             const std::string& checkpoint_dir,
                             const std::string& out_dir);

 private:
  friend struct Session::Impl;  // Sessions use the agent's connections.
  friend struct Trainer::Impl;
  struct Impl;
  explicit DeviceAgent(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace edgesplit

#endif  // EDGESPLIT_DEVICE_AGENT_H_
