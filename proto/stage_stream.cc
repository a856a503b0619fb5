#include "proto/stage_stream.h"

#include "absl/strings/str_cat.h"
#include "proto/grpc_status.h"
#include "proto/protocol.h"

namespace edgesplit {

std::shared_ptr<StageStream> StageStream::Start(v1::StageService::Stub* stub,
                                                absl::Time deadline,
                                                std::string node,
                                                std::string address) {
  std::shared_ptr<StageStream> s(
      new StageStream(std::move(node), std::move(address)));
  s->self_ = s;
  s->ctx_.set_deadline(ToChrono(deadline));
  stub->async()->Session(&s->ctx_, s.get());
  s->StartRead(&s->response_);
  // Writes may come at any time until Close(): hold the stream open.
  s->AddHold();
  s->StartCall();
  return s;
}

std::string StageStream::Context() const {
  return absl::StrCat("hop ", node_, " (", address_, ")");
}

void StageStream::Send(v1::StageRequest request, Callback done) {
  absl::Status failed;
  {
    absl::MutexLock lock(&mu_);
    // Once the hold is gone gRPC may be running OnDone: never start a
    // write then.
    if (done_ || closed_ || hold_released_) {
      if (done_) {
        failed = final_;
      } else if (closed_) {
        failed =
            absl::CancelledError(absl::StrCat(Context(), ": stream closed"));
      }
      // Otherwise the peer ended the stream (a failed read or write let go
      // of the hold) and OnDone, with the reason, has not run yet: the
      // hop is gone, which callers reroute around, not a cancellation.
      // (Under 64 sessions and SIGKILLed servers, 5% of sessions sent into
      // this window and failed CANCELLED, never rerouted.)
      if (failed.ok()) {
        failed =
            absl::UnavailableError(absl::StrCat(Context(), ": stream ended"));
      }
    } else {
      callbacks_.push_back(std::move(done));
      writes_.push_back(std::move(request));
      if (!writing_) {
        writing_ = true;
        StartWrite(&writes_.front());
      }
      return;
    }
  }
  done(failed);
}

void StageStream::ReleaseHoldOnce() {
  {
    absl::MutexLock lock(&mu_);
    if (hold_released_) return;
    hold_released_ = true;
  }
  RemoveHold();
}

void StageStream::OnWriteDone(bool ok) {
  {
    absl::MutexLock lock(&mu_);
    writes_.pop_front();
    if (ok) {
      if (!writes_.empty()) {
        StartWrite(&writes_.front());
      } else {
        writing_ = false;
      }
      return;
    }
    writing_ = false;
  }
  // The stream broke; OnDone reports why.
  ReleaseHoldOnce();
}

void StageStream::OnReadDone(bool ok) {
  if (!ok) {
    // The peer ended the stream: let OnDone run.
    ReleaseHoldOnce();
    return;
  }
  Callback cb;
  {
    absl::MutexLock lock(&mu_);
    if (callbacks_.empty()) {
      // A response nobody asked for: protocol violation by the peer.
      ctx_.TryCancel();
      return;
    }
    cb = std::move(callbacks_.front());
    callbacks_.pop_front();
  }
  v1::StageResponse response = std::move(response_);
  response_.Clear();
  StartRead(&response_);
  cb(std::move(response));
}

void StageStream::OnDone(const grpc::Status& status) {
  std::deque<Callback> pending;
  absl::Status final = FromGrpcStatus(status, Context());
  {
    absl::MutexLock lock(&mu_);
    if (final.ok() && !callbacks_.empty()) {
      final = absl::UnavailableError(
          absl::StrCat(Context(), ": stream ended with requests pending"));
    }
    done_ = true;
    final_ = final;
    pending.swap(callbacks_);
  }
  absl::Status err =
      final.ok()
          ? absl::UnavailableError(absl::StrCat(Context(), ": stream ended"))
          : final;
  for (Callback& cb : pending) cb(err);
  // May destroy this object: nothing after.
  std::shared_ptr<StageStream> keep = std::move(self_);
}

void StageStream::Close() {
  {
    absl::MutexLock lock(&mu_);
    if (closed_) return;
    closed_ = true;
  }
  ctx_.TryCancel();
  ReleaseHoldOnce();
}

absl::StatusOr<v1::StageService::Stub*> StageStubCache::Get(
    const std::string& address, const std::string& node) {
  absl::MutexLock lock(&mu_);
  auto& stub = stubs_[{address, node}];
  if (!stub) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(max_message_bytes_);
    args.SetMaxSendMessageSize(max_message_bytes_);
    auto channel = security_->Dial(
        address, NodeIdentity(security_->cluster(), node), args);
    if (!channel.ok()) {
      stubs_.erase({address, node});
      return channel.status();
    }
    stub = v1::StageService::NewStub(*channel);
  }
  return stub.get();
}

absl::Status StageStream::Wait() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(&done_));
  return final_;
}

v1::StageRequest OpenRequest(const std::string& session_id,
                             const std::string& model_id, v1::Codec codec,
                             const std::vector<v1::Hop>& route,
                             bool return_hidden) {
  v1::StageRequest req;
  v1::OpenSession* open = req.mutable_open();
  open->set_protocol_version(kProtocolVersion);
  open->set_session_id(session_id);
  open->set_model_id(model_id);
  open->set_codec(codec);
  open->set_return_hidden(return_hidden);
  for (const v1::Hop& hop : route) *open->add_route() = hop;
  return req;
}

}  // namespace edgesplit
