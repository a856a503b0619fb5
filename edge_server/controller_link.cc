#include "edge_server/controller_link.h"

#include <iostream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "proto/grpc_status.h"
#include "proto/protocol.h"

namespace edgesplit {
ControllerLink::ControllerLink(ControllerLinkOptions options, StageHost* host,
                               std::function<int()> open_sessions)
    : options_(std::move(options)),
      host_(host),
      open_sessions_(std::move(open_sessions)) {
  stub_ = v1::ControllerService::NewStub(grpc::CreateChannel(
      options_.controller, grpc::InsecureChannelCredentials()));
  thread_ = std::thread([this] { Run(); });
  heartbeat_thread_ = std::thread([this] {
    for (;;) {
      absl::Duration every;
      {
        absl::MutexLock lock(&mu_);
        every = heartbeat_;
      }
      if (stop_.WaitForNotificationWithTimeout(every)) return;
      grpc::ClientContext ctx;
      ctx.set_deadline(ToChrono(absl::Now() + options_.rpc_timeout));
      v1::HeartbeatRequest req;
      req.set_node(options_.node);
      req.set_open_sessions(open_sessions_ ? open_sessions_() : 0);
      req.set_kv_used_bytes(host_->kv_budget()->used());
      v1::HeartbeatResponse resp;
      grpc::Status s = stub_->Heartbeat(&ctx, req, &resp);
      if (s.error_code() == grpc::StatusCode::NOT_FOUND) {
        // The controller restarted and forgot us: register again.
        (void)RegisterOnce();
      }
    }
  });
}

ControllerLink::~ControllerLink() {
  stop_.Notify();
  {
    absl::MutexLock lock(&mu_);
    if (watch_ctx_ != nullptr) watch_ctx_->TryCancel();
  }
  thread_.join();
  heartbeat_thread_.join();
}

absl::Status ControllerLink::RegisterOnce() {
  grpc::ClientContext ctx;
  ctx.set_deadline(ToChrono(absl::Now() + options_.rpc_timeout));
  v1::RegisterNodeRequest req;
  req.set_node(options_.node);
  req.set_address(options_.advertise);
  req.mutable_resources()->set_memory_bytes(options_.memory_bytes);
  req.mutable_resources()->set_kv_budget_bytes(options_.kv_budget_bytes);
  req.add_architectures("gpt2");
  req.add_architectures("llama");
  req.set_protocol_version(kProtocolVersion);
  v1::RegisterNodeResponse resp;
  absl::Status s =
      FromGrpcStatus(stub_->RegisterNode(&ctx, req, &resp),
                     absl::StrCat("controller ", options_.controller));
  if (s.ok() && resp.heartbeat_interval_ms() > 0) {
    absl::MutexLock lock(&mu_);
    heartbeat_ = absl::Milliseconds(resp.heartbeat_interval_ms());
  }
  return s;
}

absl::Status ControllerLink::WatchOnce() {
  grpc::ClientContext ctx;
  // A watch is long-lived but still bounded: re-established every 10 min.
  ctx.set_deadline(ToChrono(absl::Now() + absl::Minutes(10)));
  {
    absl::MutexLock lock(&mu_);
    if (stop_.HasBeenNotified()) return absl::CancelledError("stopping");
    watch_ctx_ = &ctx;
  }
  v1::WatchPlanRequest req;
  req.set_node(options_.node);
  auto reader = stub_->WatchPlan(&ctx, req);
  v1::PlanUpdate update;
  while (reader->Read(&update)) {
    std::vector<v1::Plan> plans(update.plans().begin(), update.plans().end());
    absl::Status s = host_->ApplyPlans(plans);
    if (!s.ok()) {
      std::cerr << "edgesplit-server " << options_.node
                << ": some stages failed to load: " << s.message() << "\n";
    }
    absl::MutexLock lock(&mu_);
    ++applied_;
  }
  absl::Status s = FromGrpcStatus(reader->Finish(), "WatchPlan");
  absl::MutexLock lock(&mu_);
  watch_ctx_ = nullptr;
  return s;
}

void ControllerLink::Run() {
  absl::Duration backoff = absl::Milliseconds(100);
  while (!stop_.HasBeenNotified()) {
    absl::Status s = RegisterOnce();
    if (s.ok()) s = WatchOnce();
    if (stop_.HasBeenNotified()) return;
    if (!s.ok() && s.code() != absl::StatusCode::kDeadlineExceeded) {
      std::cerr << "edgesplit-server " << options_.node << ": " << s.message()
                << " (retrying)\n";
      stop_.WaitForNotificationWithTimeout(backoff);
      backoff = std::min(backoff * 2, absl::Seconds(5));
    } else {
      backoff = absl::Milliseconds(100);
    }
  }
}

bool ControllerLink::WaitForPlans(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(
      absl::Condition(
          +[](uint64_t* applied) { return *applied > 0; }, &applied_),
      timeout);
}

uint64_t ControllerLink::plans_applied() const {
  absl::MutexLock lock(&mu_);
  return applied_;
}

}  // namespace edgesplit
