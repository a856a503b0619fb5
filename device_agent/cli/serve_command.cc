#include "device_agent/cli/serve_command.h"

#include <pthread.h>
#include <signal.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/file_util.h"
#include "base/status_macros.h"
#include "device_agent/cli/security_commands.h"
#include "kernels/cpu/quant_blocks.h"
#include "openai/agent_backend.h"
#include "openai/local_backend.h"
#include "openai/server.h"
#include "runtime/threading.h"
#include "runtime/torch_util.h"

namespace edgesplit {
namespace cli {

const std::set<std::string> kServeFlags = {
    "model",       "model-id",       "controller",     "listen",
    "adapter-dir", "api-key-file",   "max-concurrent", "threads",
    "weights",     "dtype",          "codec",          "model-dir",
    "device-name", "model-cache-dir"};
const std::set<std::string> kServeBoolFlags = {"mmap-weights"};

namespace {

absl::StatusOr<std::unique_ptr<openai::Backend>> LocalServeBackend(
    const Args& a) {
  for (const char* f :
       {"codec", "model-dir", "device-name", "model-cache-dir"}) {
    if (a.Has(f)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--", f, " applies to serving a split model (--controller)"));
    }
  }
  openai::LocalBackendOptions o;
  o.model_dir = a.String("model");
  o.model_id = a.String("model-id", "");
  o.adapter_dir = a.String("adapter-dir", "");
  ES_ASSIGN_OR_RETURN(o.stage.dtype, ParseTorchDtype(a.String("dtype", "f32")));
  o.stage.copy_weights = !a.Has("mmap-weights");
  if (a.Has("weights")) {
    const std::string name = a.String("weights");
    auto t = kernels::ParseWeightType(name);
    if (!t) {
      return absl::InvalidArgumentError(
          absl::StrCat("--weights \"", name, "\" is not one of ",
                       kernels::WeightTypeList()));
    }
    o.stage.weights = t;
  }
  ES_ASSIGN_OR_RETURN(auto b, openai::LocalBackend::Load(std::move(o)));
  return std::unique_ptr<openai::Backend>(std::move(b));
}

absl::StatusOr<std::unique_ptr<openai::Backend>> SplitServeBackend(
    const Args& a, int threads) {
  if (a.Has("dtype")) {
    return absl::InvalidArgumentError(
        "--dtype applies to a local model (--model)");
  }
  openai::AgentBackendOptions o;
  ES_ASSIGN_OR_RETURN(std::string ids, a.RequiredString("model-id"));
  o.model_ids = absl::StrSplit(ids, ',', absl::SkipEmpty());
  DeviceAgentOptions& d = o.agent;
  d.controller = a.String("controller");
  d.codec = a.String("codec", "fp32");
  d.copy_weights = !a.Has("mmap-weights");
  d.weights = a.String("weights", "");
  if (a.Has("model-dir")) {
    if (o.model_ids.size() != 1) {
      return absl::InvalidArgumentError(
          "--model-dir names the directory of one --model-id");
    }
    d.model_dirs[o.model_ids[0]] = a.String("model-dir");
  }
  d.model_cache_dir = a.String("model-cache-dir", "");
  d.adapter_dir = a.String("adapter-dir", "");
  d.threads = threads;
  d.device_name = a.String("device-name", "device");
  ES_RETURN_IF_ERROR(ApplyTlsFlags(a, d.device_name, &d));
  ES_ASSIGN_OR_RETURN(auto b, openai::AgentBackend::Connect(std::move(o)));
  return std::unique_ptr<openai::Backend>(std::move(b));
}

// Blocks signals for its lifetime.
class SignalMask {
 public:
  explicit SignalMask(const sigset_t& block) {
    pthread_sigmask(SIG_BLOCK, &block, &old_);
  }
  ~SignalMask() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }
  SignalMask(const SignalMask&) = delete;
  SignalMask& operator=(const SignalMask&) = delete;

 private:
  sigset_t old_;
};

}  // namespace

absl::Status ServeCommand(const Args& a, std::ostream& out, std::ostream& err) {
  if (a.Has("model") == a.Has("controller")) {
    return absl::InvalidArgumentError(
        "serve needs --model DIR (a local model) or --controller HOST:PORT "
        "with --model-id (a cluster's split model), not both");
  }
  openai::ServerOptions so;
  so.listen = a.String("listen", "127.0.0.1:8080");
  ES_ASSIGN_OR_RETURN(int64_t concurrent, a.Int("max-concurrent", 32));
  if (concurrent < 1 || concurrent > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-concurrent ", concurrent, " is not in [1, 1024]"));
  }
  so.max_concurrent = static_cast<int>(concurrent);
  if (a.Has("api-key-file")) {
    ES_ASSIGN_OR_RETURN(std::string key, ReadFile(a.String("api-key-file")));
    so.api_key = std::string(absl::StripAsciiWhitespace(key));
    if (so.api_key.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--api-key-file ", a.String("api-key-file"), " is empty"));
    }
  }
  ES_ASSIGN_OR_RETURN(int64_t threads, a.Int("threads", 0));
  // SIGINT/SIGTERM are taken by sigwait below: blocked here, before any
  // thread starts, so every thread inherits the mask.
  // (Restored on return, for callers that go on.)
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  SignalMask mask(signals);
  absl::StatusOr<std::unique_ptr<openai::Backend>> backend;
  if (a.Has("model")) {
    SetComputeThreads(static_cast<int>(threads));
    backend = LocalServeBackend(a);
  } else {
    backend = SplitServeBackend(a, static_cast<int>(threads));
  }
  if (!backend.ok()) return backend.status();
  ES_ASSIGN_OR_RETURN(auto server, openai::Server::Start(so, backend->get()));
  const std::string host = so.listen.substr(0, so.listen.rfind(':'));
  out << "edgesplit serve: listening on http://" << host << ":"
      << server->port()
      << "/v1 (models: " << absl::StrJoin((*backend)->Models(), ", ") << ")"
      << std::endl;
  int sig = 0;
  sigwait(&signals, &sig);
  err << "edgesplit serve: " << (sig == SIGINT ? "SIGINT" : "SIGTERM")
      << ", stopping (requests in progress finish)\n";
  server->Stop();
  return absl::OkStatus();
}

}  // namespace cli
}  // namespace edgesplit
