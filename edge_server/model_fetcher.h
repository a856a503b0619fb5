// Getting a model copy a plan names (Plan.model_copy) that this server
// lacks from the cluster: the controller's registry says which parts
// (content-addressed blobs: a safetensors file's header and each tensor,
// delivery/model_pack.h) make its files and which servers hold them; the
// parts this server's blob store lacks come from the nearest peer holding
// them, else the controller (chunked, resumable, verified by SHA-256; a
// corrupted transfer is refused and fetched again from the next source),
// and the files are written as the directory
// <model_dir>/.cluster/<model_id>/<name>, whole or not at all. Then the
// server tells the controller it holds the copy, so the next server
// fetches from it. Parts another copy already brought (a fine-tuned
// variant's unchanged tensors) are not fetched again.
#ifndef EDGESPLIT_EDGE_SERVER_MODEL_FETCHER_H_
#define EDGESPLIT_EDGE_SERVER_MODEL_FETCHER_H_

#include <set>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "delivery/model_pack.h"
#include "edge_server/cluster_delivery.h"
#include "edge_server/stage_host.h"

namespace edgesplit {

// Thread-safe; one materialization at a time. It runs on the thread that
// applies plans (ControllerLink's), which waits for it: later plan updates
// and a shutdown's drain wait behind a large download (not cancellable).
// Servers asked to profile an automatic plan's model fetch its copy too.
class ClusterModelSource : public ModelCopySource {
 public:
  // `delivery` outlives it; copies live below `model_dir`.
  ClusterModelSource(const ClusterDelivery* delivery, std::string model_dir)
      : delivery_(delivery), model_dir_(std::move(model_dir)) {}

  absl::StatusOr<std::string> Materialize(const std::string& model_id,
                                          const std::string& name) override;

  // Parts fetched and held so far, and from whom.
  ModelFetchStats stats() const;

 private:
  const ClusterDelivery* const delivery_;
  const std::string model_dir_;
  mutable absl::Mutex mu_;
  ModelFetchStats stats_ ABSL_GUARDED_BY(mu_);
  // Copies the controller was told this server holds.
  std::set<std::pair<std::string, std::string>> reported_ ABSL_GUARDED_BY(mu_);
};

}  // namespace edgesplit

#endif  // EDGESPLIT_EDGE_SERVER_MODEL_FETCHER_H_
