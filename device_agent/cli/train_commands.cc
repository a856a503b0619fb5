#include "device_agent/cli/train_commands.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"
#include "device_agent/cli/security_commands.h"
#include "edgesplit/device_agent.h"
#include "runtime/model_store.h"
#include "runtime/train/training_data.h"

namespace edgesplit {
namespace cli {

const std::set<std::string> kTrainFlags = {"controller",
                                           "model-id",
                                           "data",
                                           "mode",
                                           "steps",
                                           "lr",
                                           "rank",
                                           "alpha",
                                           "targets",
                                           "train-blocks",
                                           "freeze-ratio",
                                           "devices",
                                           "job-members",
                                           "average-every",
                                           "batch-tokens",
                                           "seq-len",
                                           "eval-every",
                                           "eval-windows",
                                           "checkpoint-every",
                                           "checkpoint-dir",
                                           "job",
                                           "out",
                                           "model-dir",
                                           "model-cache-dir",
                                           "warmup",
                                           "seed",
                                           "device-name",
                                           "codec",
                                           "threads",
                                           "max-grad-norm",
                                           "weight-decay",
                                           "log-every",
                                           "held-out",
                                           "privacy-epsilon",
                                           "privacy-delta",
                                           "privacy-clip",
                                           "privacy-grad-clip",
                                           "privacy-budget",
                                           "privacy-budget-epsilon",
                                           "average-privacy-epsilon",
                                           "average-privacy-clip",
                                           "device-privacy-epsilon",
                                           "device-privacy-clip"};

absl::Status ApplyPrivacyFlags(const Args& a, DeviceAgentOptions* agent,
                               PrivacyOptions* privacy) {
  agent->privacy_budget_file = a.String("privacy-budget", "");
  ES_ASSIGN_OR_RETURN(agent->privacy_budget_epsilon,
                      a.Double("privacy-budget-epsilon", 0.0));
  if (!agent->privacy_budget_file.empty() &&
      !(agent->privacy_budget_epsilon > 0)) {
    return absl::InvalidArgumentError(
        "--privacy-budget needs --privacy-budget-epsilon > 0 (the limit)");
  }
  if (privacy == nullptr) return absl::OkStatus();
  ES_ASSIGN_OR_RETURN(privacy->epsilon, a.Double("privacy-epsilon", 0.0));
  ES_ASSIGN_OR_RETURN(privacy->delta, a.Double("privacy-delta", 1e-5));
  ES_ASSIGN_OR_RETURN(privacy->clip, a.Double("privacy-clip", 0.0));
  ES_ASSIGN_OR_RETURN(privacy->grad_clip, a.Double("privacy-grad-clip", 0.0));
  return absl::OkStatus();
}
const std::set<std::string> kTrainBoolFlags = {"u-shaped", "recompute"};
const std::set<std::string> kExportFlags = {
    "controller", "model-id",  "job",         "checkpoint-dir",
    "out",        "model-dir", "device-name", "model-cache-dir"};

namespace {

absl::StatusOr<std::unique_ptr<DeviceAgent>> Connect(const Args& a,
                                                     const std::string& id) {
  DeviceAgentOptions o;
  ES_ASSIGN_OR_RETURN(o.controller, a.RequiredString("controller"));
  o.codec = a.String("codec", "fp32");
  o.device_name = a.String("device-name", "device");
  ES_RETURN_IF_ERROR(ApplyTlsFlags(a, o.device_name, &o));
  if (a.Has("model-dir")) o.model_dirs[id] = a.String("model-dir");
  o.model_cache_dir = a.String("model-cache-dir", "");
  ES_ASSIGN_OR_RETURN(int64_t threads, a.Int("threads", 0));
  o.threads = static_cast<int>(threads);
  // Training sessions are long; averaging rounds wait for other devices.
  o.generation_timeout = absl::Hours(24);
  ES_RETURN_IF_ERROR(ApplyPrivacyFlags(a, &o, nullptr));
  return DeviceAgent::Connect(o);
}

std::string Clock(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  return absl::StrFormat("%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
}

// "a:b" -> [a, b).
absl::Status ParseBlocks(const std::string& v, TrainingOptions* o) {
  std::vector<std::string> parts = absl::StrSplit(v, ':');
  int64_t a = 0, b = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &a) ||
      !absl::SimpleAtoi(parts[1], &b) || a < 0 || b < a) {
    return absl::InvalidArgumentError(
        absl::StrCat("--train-blocks: \"", v, "\" (expected FIRST:LAST)"));
  }
  o->first_trained_block = a;
  o->last_trained_block = b;
  return absl::OkStatus();
}

// TrainingOptions from the flags.
absl::StatusOr<TrainingOptions> ParseTrainingOptions(const Args& a,
                                                     const std::string& id,
                                                     int64_t steps) {
  TrainingOptions o;
  o.job_id = a.String("job", absl::StrCat(id, "-lora"));
  o.mode = a.String("mode", "sl");
  ES_ASSIGN_OR_RETURN(o.lr, a.Double("lr", 2e-4));
  ES_ASSIGN_OR_RETURN(int64_t rank, a.Int("rank", 8));
  o.rank = static_cast<int>(rank);
  ES_ASSIGN_OR_RETURN(o.alpha, a.Double("alpha", 2.0 * o.rank));
  if (a.Has("targets")) {
    o.target_modules =
        absl::StrSplit(a.String("targets"), ',', absl::SkipEmpty());
  }
  ES_ASSIGN_OR_RETURN(int64_t devices, a.Int("devices", 1));
  o.devices = static_cast<int>(devices);
  if (a.Has("job-members")) {
    o.job_members =
        absl::StrSplit(a.String("job-members"), ',', absl::SkipEmpty());
  }
  ES_ASSIGN_OR_RETURN(int64_t average_every, a.Int("average-every", 10));
  o.average_every = static_cast<int>(average_every);
  ES_ASSIGN_OR_RETURN(o.warmup_steps, a.Int("warmup", steps / 20));
  o.total_steps = steps;
  ES_ASSIGN_OR_RETURN(o.max_grad_norm, a.Double("max-grad-norm", 1.0));
  ES_ASSIGN_OR_RETURN(o.weight_decay, a.Double("weight-decay", 0.0));
  ES_ASSIGN_OR_RETURN(int64_t seed, a.Int("seed", 0));
  o.seed = static_cast<uint64_t>(seed);
  o.u_shaped = a.Has("u-shaped");
  o.recompute = a.Has("recompute");
  o.checkpoint_dir = a.String("checkpoint-dir", "edgesplit-checkpoints");
  if (a.Has("train-blocks")) {
    ES_RETURN_IF_ERROR(ParseBlocks(a.String("train-blocks"), &o));
  }
  ES_ASSIGN_OR_RETURN(o.freeze_ratio, a.Double("freeze-ratio", -1));
  DeviceAgentOptions unused;
  ES_RETURN_IF_ERROR(ApplyPrivacyFlags(a, &unused, &o.privacy));
  ES_ASSIGN_OR_RETURN(o.averaging_privacy.epsilon,
                      a.Double("average-privacy-epsilon", 0.0));
  ES_ASSIGN_OR_RETURN(o.averaging_privacy.clip,
                      a.Double("average-privacy-clip", 0.0));
  o.averaging_privacy.delta = o.privacy.delta;
  ES_ASSIGN_OR_RETURN(o.device_privacy.epsilon,
                      a.Double("device-privacy-epsilon", 0.0));
  ES_ASSIGN_OR_RETURN(o.device_privacy.clip,
                      a.Double("device-privacy-clip", 0.0));
  o.device_privacy.delta = o.privacy.delta;
  return o;
}

// Progress on stderr: a bar on a terminal, a line every `log_every`
// updates otherwise.
class Progress {
 public:
  Progress(std::ostream& err, int64_t steps, int64_t log_every)
      : err_(err),
        steps_(steps),
        log_every_(log_every),
        tty_(isatty(STDERR_FILENO) != 0) {}

  void Start(int64_t step) {
    start_ = std::chrono::steady_clock::now();
    first_step_ = step;
  }

  void Step(const TrainingStepStats& st) {
    tokens_ += st.tokens;
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_)
            .count();
    const double per_step = secs / static_cast<double>(st.step - first_step_);
    const std::string line = absl::StrFormat(
        "step %d/%d loss %.4f lr %.2e tokens/s %.0f ETA %s", st.step, steps_,
        st.loss, st.lr, tokens_ / std::max(secs, 1e-9),
        Clock(per_step * static_cast<double>(steps_ - st.step)));
    if (tty_) {
      const int width = 30;
      const int done = static_cast<int>(width * st.step / steps_);
      err_ << "\r[" << std::string(done, '#') << std::string(width - done, '.')
           << "] " << line << std::flush;
    } else if (st.step % log_every_ == 0 || st.step == steps_) {
      err_ << line << "\n";
    }
  }

  // `epsilon` < 0: not private.
  void Eval(int64_t step, double loss, double epsilon) {
    err_ << absl::StrFormat(
        "%seval step %d: held-out loss %.4f, perplexity "
        "%.2f%s\n",
        tty_ ? "\n" : "", step, loss, std::exp(loss),
        epsilon < 0 ? "" : absl::StrFormat(", privacy epsilon %.3g", epsilon));
  }

  void Finish() {
    if (tty_) err_ << "\n";
  }

 private:
  std::ostream& err_;
  const int64_t steps_, log_every_;
  const bool tty_;
  std::chrono::steady_clock::time_point start_;
  int64_t first_step_ = 0, tokens_ = 0;
};

}  // namespace

absl::Status TrainCommand(const Args& a, std::ostream& out, std::ostream& err) {
  ES_ASSIGN_OR_RETURN(std::string model_id, a.RequiredString("model-id"));
  ES_ASSIGN_OR_RETURN(std::string data_path, a.RequiredString("data"));
  TrainingRunOptions run;
  ES_ASSIGN_OR_RETURN(run.steps, a.Int("steps", 100));
  ES_ASSIGN_OR_RETURN(TrainingOptions o,
                      ParseTrainingOptions(a, model_id, run.steps));
  ES_ASSIGN_OR_RETURN(run.checkpoint_every, a.Int("checkpoint-every", 50));
  ES_ASSIGN_OR_RETURN(int64_t batch_tokens, a.Int("batch-tokens", 1024));
  ES_ASSIGN_OR_RETURN(int64_t seq, a.Int("seq-len", 128));
  ES_ASSIGN_OR_RETURN(run.eval_every, a.Int("eval-every", 50));
  ES_ASSIGN_OR_RETURN(int64_t eval_windows, a.Int("eval-windows", 32));
  ES_ASSIGN_OR_RETURN(int64_t log_every, a.Int("log-every", 10));
  ES_ASSIGN_OR_RETURN(double held_out, a.Double("held-out", 0.1));
  if (run.steps < 1 || batch_tokens < 2 || seq < 1 || run.eval_every < 0 ||
      run.checkpoint_every < 0 || log_every < 1 || o.average_every < 1) {
    return absl::InvalidArgumentError(
        "--steps, --batch-tokens, --seq-len, --log-every and "
        "--average-every must be positive; --eval-every and "
        "--checkpoint-every non-negative");
  }
  ES_ASSIGN_OR_RETURN(auto agent, Connect(a, model_id));
  ES_ASSIGN_OR_RETURN(auto trainer, agent->StartTraining(model_id, o));
  ES_ASSIGN_OR_RETURN(auto store, ModelStore::Open(trainer->model_dir()));
  ES_ASSIGN_OR_RETURN(auto tokenizer, store->LoadTokenizer());
  TrainingDataOptions dopt;
  dopt.sequence_tokens = seq;
  dopt.held_out_fraction = held_out;
  dopt.seed = o.seed;
  ES_ASSIGN_OR_RETURN(TrainingData data,
                      LoadTrainingData(data_path, *tokenizer, dopt));
  if (data.train.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(data_path, ": no training windows"));
  }
  for (const std::vector<size_t>& b : BatchByLength(data.train, batch_tokens)) {
    auto& batch = run.batches.emplace_back();
    for (size_t i : b) batch.push_back(data.train[i]);
  }
  run.eval_windows.assign(
      data.held_out.begin(),
      data.held_out.begin() +
          std::min<size_t>(data.held_out.size(),
                           static_cast<size_t>(eval_windows)));
  err << absl::StrFormat(
      "training %s on %s: %s, %d training / %d held-out windows of %d "
      "tokens, %d batches\n",
      o.job_id, trainer->route(), o.mode, data.train.size(),
      data.held_out.size(), seq, run.batches.size());
  if (trainer->step() > 0) err << "resumed at step " << trainer->step() << "\n";
  Progress progress(err, run.steps, log_every);
  progress.Start(trainer->step());
  TrainingRunCallbacks callbacks;
  callbacks.on_step = [&](const TrainingStepStats& st) { progress.Step(st); };
  callbacks.on_eval = [&](int64_t step, double loss) {
    progress.Eval(
        step, loss,
        o.privacy.epsilon > 0 ? trainer->privacy_epsilon_spent() : -1);
  };
  callbacks.on_failure = [&](int64_t step, const absl::Status& error) {
    err << "\nstep " << step + 1 << " failed (" << error.message()
        << "); resuming\n";
  };
  callbacks.on_resume = [&](int64_t step) {
    err << "resumed at step " << step << "\n";
  };
  ES_ASSIGN_OR_RETURN(TrainingRunResult result, trainer->Run(run, callbacks));
  progress.Finish();
  if (a.Has("out")) {
    ES_RETURN_IF_ERROR(trainer->Export(a.String("out")));
    out << "adapter written to " << a.String("out") << "\n";
  }
  out << absl::StrFormat("trained %s to step %d, last loss %.4f\n", o.job_id,
                         result.step, result.loss);
  if (result.rounds > 0) {
    out << absl::StrFormat(
        "averaging: %d rounds, this device's factors in %d of them\n",
        result.rounds, result.rounds_averaged);
  }
  if (o.averaging_privacy.epsilon > 0) {
    out << absl::StrFormat(
        "averaging privacy: epsilon %.3g at delta %g per device over %d "
        "rounds sent (noise multiplier %.3g)\n",
        result.averaging_epsilon, o.averaging_privacy.delta,
        result.private_rounds, result.averaging_noise_multiplier);
  }
  if (o.device_privacy.epsilon > 0) {
    out << absl::StrFormat(
        "device privacy (DP-SGD): epsilon %.3g at delta %g per training "
        "window (noise multiplier %.3g; %d of %d window gradients clipped)\n",
        result.device_epsilon, o.device_privacy.delta,
        result.device_noise_multiplier, result.device_clipped,
        result.device_examples);
  }
  if (o.privacy.epsilon > 0) {
    out << absl::StrFormat(
        "privacy: epsilon %.3g at delta %g per training window (calibrated "
        "for %.3g; noise multiplier %.3g)\n",
        result.privacy_epsilon_spent, o.privacy.delta, result.privacy_epsilon,
        result.noise_multiplier);
  }
  if (result.budget_epsilon_spent > 0) {
    out << absl::StrFormat("privacy budget: epsilon %.3g spent in all\n",
                           result.budget_epsilon_spent);
  }
  return absl::OkStatus();
}

absl::Status AdapterExportCommand(const Args& a, std::ostream& out) {
  ES_ASSIGN_OR_RETURN(std::string model_id, a.RequiredString("model-id"));
  ES_ASSIGN_OR_RETURN(std::string job, a.RequiredString("job"));
  ES_ASSIGN_OR_RETURN(std::string dir, a.RequiredString("out"));
  ES_ASSIGN_OR_RETURN(auto agent, Connect(a, model_id));
  ES_RETURN_IF_ERROR(agent->ExportAdapter(
      model_id, job, a.String("checkpoint-dir", "edgesplit-checkpoints"), dir));
  out << "adapter of job " << job << " written to " << dir << "\n";
  return absl::OkStatus();
}

}  // namespace cli
}  // namespace edgesplit
