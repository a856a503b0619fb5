// Test fakes for sessions without a network: a transport that collects a
// handler's responses, and next hops that are other in-process handlers
// (several "servers" chained in one process).
#ifndef EDGESPLIT_EDGE_SERVER_SESSION_FAKES_H_
#define EDGESPLIT_EDGE_SERVER_SESSION_FAKES_H_

#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "base/worker_thread.h"
#include "edge_server/session_handler.h"
#include "edge_server/stage_host.h"
#include "edge_server/training_job.h"
#include "proto/protocol.h"

namespace edgesplit {
namespace testing {

// An open request for session `id` of model "tiny" (fp32) along the route
// a [1, 3), b [3, 4): the two in-process servers the session tests chain.
inline v1::StageRequest TwoHopOpenRequest(const std::string& id) {
  v1::StageRequest r;
  auto* o = r.mutable_open();
  o->set_protocol_version(kProtocolVersion);
  o->set_session_id(id);
  o->set_model_id("tiny");
  o->set_codec(v1::CODEC_FP32);
  for (auto [node, first, last] :
       {std::make_tuple("a", 1, 3), std::make_tuple("b", 3, 4)}) {
    auto* hop = o->add_route();
    hop->set_node(node);
    hop->set_first_block(first);
    hop->set_last_block(last);
  }
  return r;
}

// Collects a handler's responses. Thread-safe.
class FakeTransport : public SessionTransport {
 public:
  void Send(const v1::StageResponse& r) override {
    absl::MutexLock lock(&mu_);
    responses_.push_back(r);
  }
  void Finish(const absl::Status& s) override {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    finished_ = true;
    status_ = s;
  }
  // The stream went away under the handler (its hop was closed).
  void Abort() { Finish(absl::CancelledError("stream closed")); }
  // Waits for the n-th response (or the end of the stream, or `timeout`).
  absl::StatusOr<v1::StageResponse> Await(
      size_t n, absl::Duration timeout = absl::InfiniteDuration()) {
    absl::MutexLock lock(&mu_);
    waiting_for_ = n;
    mu_.AwaitWithTimeout(
        absl::Condition(
            +[](FakeTransport* t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(t->mu_) {
              return t->finished_ || t->responses_.size() > t->waiting_for_;
            },
            this),
        timeout);
    if (responses_.size() > n) return responses_[n];
    if (!finished_) return absl::DeadlineExceededError("no response yet");
    return status_.ok() ? absl::InternalError("finished OK") : status_;
  }
  absl::Status status() {
    absl::MutexLock lock(&mu_);
    return status_;
  }
  bool finished() {
    absl::MutexLock lock(&mu_);
    return finished_;
  }

 private:
  absl::Mutex mu_;
  std::vector<v1::StageResponse> responses_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  size_t waiting_for_ ABSL_GUARDED_BY(mu_) = 0;
};

// A NextHop that is another in-process handler. Requests reach it in order
// on the caller's thread; answers come back, in order, on a thread of the
// hop's own (as gRPC's would), so hops work concurrently.
class InProcessHop : public NextHop {
 public:
  explicit InProcessHop(const SessionEnv& env)
      : state_(std::make_shared<State>()) {
    state_->handler = std::make_shared<SessionHandler>(env, &state_->transport,
                                                       absl::InfiniteFuture());
  }
  ~InProcessHop() override { Close(); }
  void Send(v1::StageRequest request, Callback done) override {
    size_t n;
    {
      absl::MutexLock lock(&state_->mu);
      n = state_->sent++;
      state_->handler->OnRequest(request);
    }
    // Delivery tasks hold the state: the hop may go inside a callback.
    replies_.Submit([state = state_, n, done = std::move(done)] {
      done(state->transport.Await(n));
    });
  }
  void Close() override {
    state_->handler->OnDone();
    state_->transport.Abort();  // Answers not yet sent never come.
  }

 private:
  struct State {
    absl::Mutex mu;  // Requests one at a time, in order.
    size_t sent ABSL_GUARDED_BY(mu) = 0;
    FakeTransport transport;
    std::shared_ptr<SessionHandler> handler;
  };
  std::shared_ptr<State> state_;
  TaskQueueThread replies_;
};

// Opens InProcessHops to the handlers of `envs` by node name.
class InProcessFactory : public NextHopFactory {
 public:
  std::map<std::string, SessionEnv> envs;
  absl::StatusOr<std::unique_ptr<NextHop>> Open(const v1::OpenSession& open,
                                                absl::Time) override {
    auto it = envs.find(open.route(0).node());
    if (it == envs.end()) return absl::UnavailableError("no such node");
    return std::unique_ptr<NextHop>(new InProcessHop(it->second));
  }
};

// The two in-process servers TwoHopOpenRequest routes through: a [1, 3)
// and b [3, 4) + head of model "tiny" at `dir`, chained by `factory`. With
// a `jobs_root`, each also hosts training jobs (under jobs_root/<name>).
class TwoHopServers {
 public:
  absl::Status Load(const std::string& dir, const std::string& jobs_root = "") {
    for (auto [name, spec] :
         {std::make_pair("a", StageSpec{{1, 3}, false, false}),
          std::make_pair("b", StageSpec{{3, 4}, false, true})}) {
      StageHostOptions o;
      o.node = name;
      hosts_[name] = std::make_unique<StageHost>(o);
      absl::Status s = hosts_[name]->Load("tiny", dir, spec);
      if (!s.ok()) return s;
      SessionEnv env;
      env.host = hosts_[name].get();
      env.next_hops = &factory;
      if (!jobs_root.empty()) {
        jobs_[name] = std::make_unique<TrainingJobs>(jobs_root + "/" + name);
        env.jobs = jobs_[name].get();
      }
      factory.envs[name] = env;
    }
    return absl::OkStatus();
  }

 private:
  // Declared first: sessions made through `factory` go before them.
  std::map<std::string, std::unique_ptr<StageHost>> hosts_;
  std::map<std::string, std::unique_ptr<TrainingJobs>> jobs_;

 public:
  InProcessFactory factory;
};

}  // namespace testing
}  // namespace edgesplit

#endif  // EDGESPLIT_EDGE_SERVER_SESSION_FAKES_H_
