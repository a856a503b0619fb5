// What a server's fetches from the cluster share: its blob store (one
// content-addressed store for adapters' files and model copies' parts, so
// bytes they share are kept and fetched once), the fetcher that fills it
// (one download of a blob at a time), the controller's channel, and the
// way to peers: the holders the controller names, nearest first, then the
// controller's own originals. ClusterAdapterSource (adapter_fetcher.h) and
// ClusterModelSource (model_fetcher.h) borrow it; EdgeServer owns it, and
// its BlobService serves the store to peers.
#ifndef EDGESPLIT_EDGE_SERVER_CLUSTER_DELIVERY_H_
#define EDGESPLIT_EDGE_SERVER_CLUSTER_DELIVERY_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "delivery/blob_fetcher.h"
#include "delivery/blob_store.h"
#include "edgesplit/v1/delivery.pb.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "grpcpp/grpcpp.h"
#include "security/tls.h"

namespace edgesplit {

// Thread-safe.
class ClusterDelivery {
 public:
  // `node`: this server's name; `controller`: the controller's address.
  static absl::StatusOr<std::unique_ptr<ClusterDelivery>> Create(
      std::string node, const std::string& controller, std::string blob_dir,
      std::shared_ptr<const TransportSecurity> security,
      FetchOptions fetch = {});

  // Sources to fetch from, in order: `peers` (as the controller ranked
  // them; one that cannot be dialled is left out), then the controller.
  struct SourceList {
    std::vector<std::unique_ptr<BlobSource>> owned;
    std::vector<BlobSource*> list;  // Into `owned`, for BlobFetcher.
  };
  SourceList Sources(
      const google::protobuf::RepeatedPtrField<v1::BlobHolder>& peers) const;

  // Tells the controller this server now holds (or, `dropped`, no longer
  // holds) adapter or (`model_copy`) model copy `name` of `model_id`.
  // Best effort: without the report, peers fetch from the controller, or
  // try here and move on.
  absl::Status Report(const std::string& model_id, const std::string& name,
                      bool model_copy, bool dropped) const;

  const std::string& node() const { return node_; }
  const std::shared_ptr<grpc::Channel>& controller() const {
    return controller_;
  }
  BlobStore& store() const { return *store_; }
  BlobFetcher& fetcher() const { return *fetcher_; }

 private:
  ClusterDelivery() = default;

  std::string node_;
  std::shared_ptr<const TransportSecurity> security_;
  std::shared_ptr<grpc::Channel> controller_;
  std::unique_ptr<BlobStore> store_;
  std::unique_ptr<BlobFetcher> fetcher_;
};

}  // namespace edgesplit

#endif  // EDGESPLIT_EDGE_SERVER_CLUSTER_DELIVERY_H_
