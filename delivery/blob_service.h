// The gRPC side of blob delivery: BlobService serving a node's BlobStore
// to its peers (callback API; the logic is ServeReadBlob, testable without
// a network), and GrpcBlobSource reading a peer's or the controller's
// BlobService as a BlobSource for BlobFetcher.
#ifndef EDGESPLIT_DELIVERY_BLOB_SERVICE_H_
#define EDGESPLIT_DELIVERY_BLOB_SERVICE_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "delivery/blob_fetcher.h"
#include "delivery/blob_store.h"
#include "edgesplit/v1/delivery.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace edgesplit {

// The most a ReadBlob answer carries, whatever was asked.
inline constexpr int64_t kMaxBlobChunkBytes = int64_t{1} << 20;

// Answers one ReadBlob from `store`; errors name the id.
absl::StatusOr<v1::ReadBlobResponse> ServeReadBlob(
    const BlobStore& store, const v1::ReadBlobRequest& request);

class BlobServiceImpl final : public v1::BlobService::CallbackService {
 public:
  // Who may read what (e.g. servers only); OK to allow the call.
  using Authorize = std::function<absl::Status(
      grpc::CallbackServerContext* ctx, const v1::ReadBlobRequest& request)>;
  // `store` must outlive the service. Thread-safe.
  BlobServiceImpl(const BlobStore* store, Authorize authorize)
      : store_(store), authorize_(std::move(authorize)) {}

  grpc::ServerUnaryReactor* ReadBlob(grpc::CallbackServerContext* ctx,
                                     const v1::ReadBlobRequest* request,
                                     v1::ReadBlobResponse* response) override;

 private:
  const BlobStore* const store_;
  const Authorize authorize_;
};

// A peer's (or the controller's) BlobService. Holds the channel.
class GrpcBlobSource : public BlobSource {
 public:
  GrpcBlobSource(std::string name, std::shared_ptr<grpc::Channel> channel)
      : name_(std::move(name)),
        channel_(channel),
        stub_(v1::BlobService::NewStub(channel)) {}
  std::string name() const override { return name_; }
  absl::StatusOr<std::string> Read(const std::string& id, int64_t offset,
                                   int64_t max_bytes, absl::Time deadline,
                                   int64_t* total) override;

 private:
  const std::string name_;
  const std::shared_ptr<grpc::Channel> channel_;
  const std::unique_ptr<v1::BlobService::Stub> stub_;
};

}  // namespace edgesplit

#endif  // EDGESPLIT_DELIVERY_BLOB_SERVICE_H_
