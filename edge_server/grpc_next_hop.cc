#include "edge_server/grpc_next_hop.h"

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "grpcpp/grpcpp.h"
#include "proto/stage_stream.h"

namespace edgesplit {
namespace {

class GrpcNextHop : public NextHop {
 public:
  explicit GrpcNextHop(std::shared_ptr<StageStream> stream)
      : stream_(std::move(stream)) {}
  ~GrpcNextHop() override { stream_->Close(); }

  void Send(v1::StageRequest request, Callback done) override {
    stream_->Send(std::move(request), std::move(done));
  }
  void Close() override { stream_->Close(); }

 private:
  std::shared_ptr<StageStream> stream_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<NextHop>> GrpcNextHopFactory::Open(
    const v1::OpenSession& open, absl::Time deadline) {
  if (open.route_size() == 0 || open.route(0).address().empty()) {
    return absl::InvalidArgumentError("next hop has no address");
  }
  const v1::Hop& hop = open.route(0);
  // Servers reach each other over their backbone address when they have one.
  const std::string& address =
      hop.peer_address().empty() ? hop.address() : hop.peer_address();
  ES_ASSIGN_OR_RETURN(v1::StageService::Stub * stub,
                      stubs_.Get(address, hop.node()));
  auto stream = StageStream::Start(stub, deadline, hop.node(), address);
  return std::unique_ptr<NextHop>(new GrpcNextHop(std::move(stream)));
}

}  // namespace edgesplit
