// libFuzzer target for the stage service's request handler: what any
// caller of StageService.Session can send a server. Two in-process servers
// of a tiny Llama model (a [1, 3), b [3, 4) + head, chained as in
// session_fakes.h), and a third, z, holding the whole model from its
// embedding (a plan giving the device zero blocks: it takes token ids),
// take a stream of requests from each input; the handler
// must answer or end the stream with an error, never crash, never answer
// more than it was asked, and finish once the client half-closes.
//
// Input: [flags][u16 little-endian length L][L bytes: a StageRequest]...
// flags & 1: a well-formed open precedes the input's requests (& 2: on
// the route a -> b, & 8: on z alone, else b alone; & 4: with a training
// spec), so mutations
// reach the forward, backward and step paths; otherwise the first request
// must open the session itself. Seeds: fuzz/seeds/stage_fuzz, written by
// running the target with STAGE_FUZZ_WRITE_SEEDS=<dir> (scripts/fuzz.sh
// builds and runs it).
#include <ATen/ATen.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "edge_server/session_fakes.h"
#include "edge_server/session_handler.h"
#include "edge_server/training_job.h"
#include "google/protobuf/stubs/logging.h"
#include "runtime/model_init.h"

namespace edgesplit {
namespace {

constexpr int64_t kHidden = 64;  // The tiny preset's width.

struct Fixture {
  std::string root;
  testing::TwoHopServers servers;
  std::unique_ptr<StageHost> z;  // [0, 4): embeds, and the head.
  std::shared_ptr<UsageBudget> pending =
      UsageBudget::Create("max_pending_input_mb", "bytes", 8 << 20);
  std::shared_ptr<UsageBudget> kept =
      UsageBudget::Create("max_kept_training_tokens", "tokens", 4096);
};

Fixture& Get() {
  static Fixture* f = [] {
    auto* f = new Fixture;
    const char* base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    std::string tmpl = std::string(base) + "/stage_fuzz.XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) std::abort();
    f->root = tmpl;
    static const std::string root = tmpl;
    std::atexit([] { std::filesystem::remove_all(root); });
    ModelInitOptions o;
    o.arch = Arch::kLlama;
    o.preset = "tiny";
    o.seed = 1234;
    o.out_dir = f->root + "/model";
    if (!InitModel(o).ok()) std::abort();
    if (!f->servers.Load(o.out_dir).ok()) std::abort();
    StageHostOptions zo;
    zo.node = "z";
    f->z = std::make_unique<StageHost>(zo);
    if (!f->z->Load("tiny", o.out_dir, StageSpec{{0, 4}, true, true}).ok()) {
      std::abort();
    }
    SessionEnv z_env = f->servers.factory.envs["b"];
    z_env.host = f->z.get();
    f->servers.factory.envs["z"] = z_env;
    for (auto& [name, env] : f->servers.factory.envs) {
      env.limits.max_rows = 64;
      env.limits.max_cols = 1024;
      env.limits.max_bytes = 1 << 20;
      env.pending_inputs = f->pending;
      env.kept_training_tokens = f->kept;
    }
    return f;
  }();
  return *f;
}

v1::StageRequest Open(bool two_hops, bool training, const std::string& id,
                      bool zero_device = false) {
  v1::StageRequest r = testing::TwoHopOpenRequest(id);
  if (!two_hops) r.mutable_open()->mutable_route()->DeleteSubrange(0, 1);
  if (zero_device) {
    v1::Hop* hop = r.mutable_open()->mutable_route(0);
    hop->set_node("z");
    hop->set_first_block(0);
  }
  if (training) {
    v1::TrainingSpec* s = r.mutable_open()->mutable_training();
    s->set_job_id("fuzz");
    s->set_rank(2);
    s->set_alpha(4);
    s->add_target_modules("q_proj");
    s->add_target_modules("down_proj");
    s->set_first_trained_block(1);
    s->set_last_trained_block(4);
    s->set_seed(7);
    s->mutable_optimizer()->set_lr(1e-3);
    s->set_devices(1);
  }
  return r;
}

// Splits an input into its flags and requests; false if malformed.
bool Parse(const uint8_t* data, size_t size, uint8_t* flags,
           std::vector<v1::StageRequest>* requests) {
  if (size < 1) return false;
  *flags = data[0];
  size_t at = 1;
  while (at + 2 <= size && requests->size() < 32) {
    const size_t n = data[at] | (size_t{data[at + 1]} << 8);
    at += 2;
    if (n > size - at) return false;
    v1::StageRequest r;
    if (!r.ParseFromArray(data + at, static_cast<int>(n))) return false;
    requests->push_back(std::move(r));
    at += n;
  }
  return !requests->empty() || (*flags & 1);
}

void Append(const v1::StageRequest& r, std::string* out) {
  const std::string bytes = r.SerializeAsString();
  out->push_back(static_cast<char>(bytes.size() & 0xff));
  out->push_back(static_cast<char>(bytes.size() >> 8));
  *out += bytes;
}

v1::StageRequest Forward(uint64_t step, int64_t rows, bool train) {
  v1::StageRequest r;
  v1::ForwardRequest* f = r.mutable_forward();
  f->set_step(step);
  f->set_train(train);
  f->set_last_token_only(!train && rows > 1);
  at::Tensor h = at::randn({rows, kHidden}, at::kFloat) * 0.5;
  if (!wire::Encode(h, v1::CODEC_FP32, f->mutable_hidden()).ok()) std::abort();
  if (train) {
    for (int64_t i = 0; i < rows; ++i) f->add_labels((step * 31 + i) % 512);
    f->set_loss_scale(1.0);
  }
  return r;
}

// The seeds: each path a client takes, as a well-formed stream.
void WriteSeeds(const std::string& dir) {
  std::filesystem::create_directories(dir);
  at::manual_seed(1);
  auto write = [&](const std::string& name, uint8_t flags,
                   const std::vector<v1::StageRequest>& requests) {
    std::string bytes(1, static_cast<char>(flags));
    for (const auto& r : requests) Append(r, &bytes);
    std::ofstream(dir + "/" + name, std::ios::binary) << bytes;
  };
  v1::StageRequest close;
  close.mutable_close();
  write("open_forward_close", 0,
        {Open(false, false, "s"), Forward(0, 3, false), Forward(1, 1, false),
         close});
  write("two_hops_decode", 1 | 2,
        {Forward(0, 4, false), Forward(1, 1, false), Forward(2, 1, false)});
  // Speculative verification: all rows' greedy ids, then a step that
  // rolls back two rejected rows.
  v1::StageRequest verify = Forward(1, 4, false);
  verify.mutable_forward()->set_last_token_only(false);
  verify.mutable_forward()->set_argmax_only(true);
  v1::StageRequest after = Forward(2, 2, false);
  after.mutable_forward()->set_rollback(2);
  after.mutable_forward()->set_argmax_only(true);
  write("speculative_steps", 1 | 2, {Forward(0, 3, false), verify, after});
  // Sampled: the head hop checks three drafts and answers one row.
  v1::StageRequest checked = Forward(1, 4, false);
  checked.mutable_forward()->set_last_token_only(false);
  v1::DraftCheck* dc = checked.mutable_forward()->mutable_draft_check();
  dc->set_temperature(0.8f);
  dc->set_top_k(20);
  dc->set_top_p(0.9f);
  for (int i = 0; i < 3; ++i) {
    dc->add_draft_probs(0.25f * (i + 1));
    dc->add_uniforms(0.3 * i);
    dc->add_draft_tokens(5 + i);
  }
  v1::StageRequest after_checked = Forward(2, 1, false);
  after_checked.mutable_forward()->set_rollback(1);
  write("checked_speculative_steps", 1 | 2,
        {Forward(0, 3, false), checked, after_checked});
  v1::StageRequest backward, step, exported, restore;
  backward.mutable_backward()->set_step(0);
  step.mutable_optimizer_step()->set_step(0);
  exported.mutable_export_()->set_gradients(true);
  restore.mutable_restore()->set_step(0);
  write("train_step", 1 | 4,
        {Forward(0, 5, true), backward, step, exported, Forward(1, 3, false),
         restore});
  write("train_two_hops", 1 | 2 | 4, {Forward(0, 4, true), backward, step});
  // Zero device blocks: token ids to z, then a checked speculative step.
  auto ids = [](uint64_t step, std::vector<int32_t> tokens) {
    v1::StageRequest r;
    r.mutable_forward()->set_step(step);
    r.mutable_forward()->mutable_tokens()->Add(tokens.begin(), tokens.end());
    return r;
  };
  v1::StageRequest z_checked = ids(1, {4, 8, 9, 10});
  *z_checked.mutable_forward()->mutable_draft_check() =
      checked.forward().draft_check();
  write("zero_device_steps", 1 | 8,
        {ids(0, {1, 2, 3}), z_checked, ids(2, {7})});
}

}  // namespace
}  // namespace edgesplit

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Protobuf logs every string field with invalid UTF-8 it parses.
  google::protobuf::SetLogHandler(nullptr);
  if (const char* dir = std::getenv("STAGE_FUZZ_WRITE_SEEDS")) {
    edgesplit::WriteSeeds(dir);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace edgesplit;
  if (size > (1 << 20)) return 0;
  uint8_t flags = 0;
  std::vector<v1::StageRequest> requests;
  if (!Parse(data, size, &flags, &requests)) return 0;
  Fixture& f = Get();
  static uint64_t inputs = 0;
  const std::string id = "fuzz-" + std::to_string(inputs++);
  // A fresh job directory each time: a job's state does not leak from one
  // input into the next (jobs draining from earlier inputs keep theirs).
  const std::string jobs_dir = f.root + "/jobs/" + std::to_string(inputs % 8);
  std::filesystem::remove_all(jobs_dir);
  TrainingJobs jobs(jobs_dir);
  const bool two_hops = flags & 2, zero_device = !two_hops && (flags & 8);
  SessionEnv env =
      f.servers.factory.envs[two_hops ? "a" : (zero_device ? "z" : "b")];
  env.jobs = &jobs;
  f.servers.factory.envs["b"].jobs = &jobs;  // The second hop's.
  if (flags & 1) {
    requests.insert(requests.begin(),
                    Open(two_hops, flags & 4, id, zero_device));
  }

  testing::FakeTransport t;
  auto h = std::make_shared<SessionHandler>(env, &t, absl::InfiniteFuture());
  for (const v1::StageRequest& r : requests) h->OnRequest(r);
  h->OnClientDone();
  // Every request answered or the stream ended: a half-closed stream must
  // finish (a stream left open forever holds the session's memory).
  (void)t.Await(~size_t{0}, absl::Seconds(20));
  if (!t.finished()) {
    std::fprintf(stderr, "stream not finished 20 s after the half-close\n");
    std::abort();
  }
  // At most one answer per request.
  if (t.Await(requests.size(), absl::ZeroDuration()).ok()) {
    std::fprintf(stderr, "more answers than requests\n");
    std::abort();
  }
  h->OnDone();
  f.servers.factory.envs["b"].jobs = nullptr;
  return 0;
}
