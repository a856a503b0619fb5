#include "edge_server/server_session.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "proto/protocol.h"

namespace edgesplit {

double MillisSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now() - t)
      .count();
}

void PrependTiming(v1::HopTiming timing, v1::ForwardResult* result) {
  auto* timings = result->mutable_timings();
  timings->Add()->Swap(&timing);
  for (int i = timings->size() - 1; i > 0; --i) timings->SwapElements(i, i - 1);
}

absl::StatusOr<OpenedHop> ValidateOpen(const SessionEnv& env,
                                       const v1::OpenSession& open) {
  const std::string& node = env.host->node();
  if (open.protocol_version() != kProtocolVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "protocol version ", open.protocol_version(), " is not supported by ",
        node, " (speaks ", kProtocolVersion, ")"));
  }
  if (open.session_id().empty()) {
    return absl::InvalidArgumentError("OpenSession needs a session_id");
  }
  if (open.route_size() == 0 || open.route(0).node() != node) {
    return absl::InvalidArgumentError(
        absl::StrCat("route[0] names node \"",
                     open.route_size() > 0 ? open.route(0).node() : "",
                     "\" but this is ", node));
  }
  const v1::Hop& me = open.route(0);
  OpenedHop hop;
  auto stage =
      env.host->Find(open.model_id(), me.first_block(), me.last_block());
  if (!stage.ok()) return stage.status();
  hop.stage = *std::move(stage);
  bool codec_ok = false;
  for (v1::Codec c : wire::SupportedCodecs()) codec_ok |= c == open.codec();
  if (!codec_ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported codec ", static_cast<int>(open.codec())));
  }
  const bool last = open.route_size() == 1;
  const bool has_head = hop.stage->model->spec().head;
  if (last && !has_head && !open.return_hidden()) {
    return absl::InvalidArgumentError(absl::StrCat(
        node,
        " is the route's last hop but holds no LM head; set return_hidden "
        "for a U-shaped split"));
  }
  if (!last && has_head) {
    return absl::InvalidArgumentError(
        absl::StrCat(node, " holds the LM head but the route continues to ",
                     open.route(1).node()));
  }
  hop.role = !last      ? HopRole::kMiddle
             : has_head ? HopRole::kLastWithHead
                        : HopRole::kLastHidden;
  hop.session_id = open.session_id();
  hop.codec = open.codec();
  hop.adapter = open.adapter();
  return hop;
}

ServerSession::ServerSession(const SessionEnv& env, SessionTransport* transport,
                             absl::Time deadline, OpenedHop hop)
    : env_(env),
      node_(env.host->node()),
      deadline_(deadline),
      hop_(std::move(hop)),
      transport_(transport),
      last_activity_(absl::Now()) {}

void ServerSession::Start(const v1::OpenSession& open) {
  v1::OpenSession rest = open;
  rest.mutable_route()->DeleteSubrange(0, 1);
  std::shared_ptr<NextHop> next;
  if (hop_.role == HopRole::kMiddle) {
    auto opened = env_.next_hops->Open(rest, deadline_);
    if (!opened.ok()) return End(opened.status());
    next = std::move(*opened);
  }
  {
    absl::MutexLock lock(&mu_);
    if (finished_) {
      // Ended while opening: keep nothing.
      if (next) next->Close();
      return;
    }
    next_ = next;
    if (env_.metrics != nullptr) {
      env_.metrics->SessionOpened(kind());
      counted_open_ = true;
    }
  }
  v1::StageResponse opened;
  opened.mutable_opened()->set_session_id(hop_.session_id);
  if (!next) {
    ConfirmOpen(opened.mutable_opened(), nullptr);
    return Respond(opened);
  }
  // The next hop's session starts with its own OpenSession.
  v1::StageRequest req;
  *req.mutable_open() = std::move(rest);
  std::weak_ptr<ServerSession> weak = weak_from_this();
  ToNext(std::move(req), [weak, opened](v1::StageResponse r) mutable {
    auto self = weak.lock();
    if (!self) return;
    if (!r.has_opened()) {
      return self->End(absl::InternalError("next hop did not confirm open"));
    }
    self->ConfirmOpen(opened.mutable_opened(), &r.opened());
    self->Respond(opened);
  });
}

void ServerSession::ConfirmOpen(v1::SessionOpened*, const v1::SessionOpened*) {}

absl::Time ServerSession::last_activity() const {
  absl::MutexLock lock(&mu_);
  return last_activity_;
}

void ServerSession::Touch() {
  absl::MutexLock lock(&mu_);
  last_activity_ = absl::Now();
}

bool ServerSession::Over() const {
  absl::MutexLock lock(&mu_);
  return finished_;
}

void ServerSession::Respond(const v1::StageResponse& response) {
  absl::MutexLock lock(&mu_);
  RespondLocked(response);
}

void ServerSession::Received(const v1::StageRequest& request) const {
  if (env_.metrics != nullptr) {
    env_.metrics->Bytes("in", hop_.codec, request.ByteSizeLong());
  }
}

void ServerSession::RespondLocked(const v1::StageResponse& response) {
  if (finished_ || transport_ == nullptr) return;
  if (env_.metrics != nullptr) {
    env_.metrics->Bytes("out", hop_.codec, response.ByteSizeLong());
  }
  transport_->Send(response);
}

void ServerSession::ToNext(v1::StageRequest request,
                           std::function<void(v1::StageResponse)> then) {
  std::shared_ptr<NextHop> next;
  {
    absl::MutexLock lock(&mu_);
    next = next_;
  }
  if (!next) return End(absl::CancelledError("session is over"));
  std::weak_ptr<ServerSession> weak = weak_from_this();
  const ServerMetrics* m = env_.metrics;
  if (m != nullptr) m->Bytes("out", hop_.codec, request.ByteSizeLong());
  const auto sent = std::chrono::steady_clock::now();
  const bool forward = request.has_forward();
  next->Send(std::move(request),
             [weak, then = std::move(then), m, sent,
              forward](absl::StatusOr<v1::StageResponse> r) mutable {
               auto self = weak.lock();
               if (!self) return;
               if (!r.ok()) return self->End(r.status());
               if (m != nullptr) {
                 m->Bytes("in", self->hop_.codec, r->ByteSizeLong());
                 if (forward) {
                   m->next_hop_seconds->Observe(
                       std::chrono::duration<double>(
                           std::chrono::steady_clock::now() - sent)
                           .count());
                 }
               }
               then(*std::move(r));
             });
}

void ServerSession::OnClientDone() {
  {
    absl::MutexLock lock(&mu_);
    client_done_ = true;
  }
  MaybeFinishIdle();
}

void ServerSession::MaybeFinishIdle() {
  {
    absl::MutexLock lock(&mu_);
    if (!client_done_ || !IdleLocked()) return;
  }
  End(absl::OkStatus());
}

std::shared_ptr<NextHop> ServerSession::EndLocked(absl::StatusCode code) {
  if (!finished_) {
    finished_ = true;
    OnEndLocked();
    if (counted_open_)
      env_.metrics->SessionEnded(kind(), static_cast<int>(code));
  }
  return std::move(next_);
}

void ServerSession::End(const absl::Status& status) {
  std::shared_ptr<NextHop> next;
  {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    next = EndLocked(status.code());
    if (transport_ != nullptr) transport_->Finish(status);
  }
  if (next) next->Close();
}

void ServerSession::OnDone() {
  std::shared_ptr<NextHop> next;
  {
    absl::MutexLock lock(&mu_);
    transport_ = nullptr;
    // Devices close a session by cancelling its stream: with nothing in
    // flight that is a normal end, not a failure.
    next = EndLocked(finished_ || IdleLocked() ? absl::StatusCode::kOk
                                               : absl::StatusCode::kCancelled);
  }
  if (next) next->Close();
}

}  // namespace edgesplit
