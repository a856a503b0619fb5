// Getting an adapter this server lacks from the cluster: the controller's
// registry says which blobs (files) make it and which servers hold them;
// the files come from the nearest peer holding them, else from the
// controller (delivery/blob_fetcher.h: chunked, resumable, verified by
// SHA-256, a corrupted transfer refused and fetched again elsewhere), land
// in this server's blob store, and are written out as the PEFT directory
// <adapter_dir>/.cluster/<model_id>/<name> (FetchedAdaptersDir: two
// models' adapters of one name never meet); then the server tells the
// controller it holds them, so the next server can fetch from it.
#ifndef EDGESPLIT_EDGE_SERVER_ADAPTER_FETCHER_H_
#define EDGESPLIT_EDGE_SERVER_ADAPTER_FETCHER_H_

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "delivery/adapter_files.h"
#include "delivery/blob_fetcher.h"
#include "delivery/blob_store.h"
#include "edge_server/adapter_cache.h"
#include "edge_server/adapter_disk.h"
#include "edge_server/cluster_delivery.h"

namespace edgesplit {

// Thread-safe; one materialization at a time (fetch_mu_, held across the
// network calls); adapters already on disk are found and counted as used
// under disk_mu_ alone, so they never wait behind a download.
class ClusterAdapterSource : public AdapterSource {
 public:
  // `delivery` outlives it. With `disk_bytes` > 0, the adapters fetched
  // below `adapter_dir` (those of earlier runs too) are kept within that
  // many bytes on disk (adapter_disk.h), the least recently used evicted
  // and the controller told.
  ClusterAdapterSource(const ClusterDelivery* delivery,
                       const std::string& adapter_dir = "",
                       int64_t disk_bytes = 0);

  // Also when the adapter is on disk already: that is a use, which keeps
  // it from eviction longest.
  absl::Status Materialize(const std::string& model_id, const std::string& name,
                           const std::string& dir) override;
  void Used(const std::string& model_id, const std::string& name,
            const std::string& dir) override;

  // Fetches into `dir` each adapter the controller's placement
  // (GetPlacement) gives this server and `dir` lacks, so the first session
  // naming it finds it on disk. Returns how many it fetched; 0 when the
  // controller places none (placement off). An adapter that fails to
  // fetch is skipped (the next round tries again); the first such error is
  // returned after the others were tried. Stops before the next adapter
  // once `stopped()` (null: never) is true.
  absl::StatusOr<int> Prefetch(const std::string& dir,
                               const std::function<bool()>& stopped = nullptr);

  AdapterFetchStats stats() const;

 private:
  // Whether the adapter is on disk (fetched or the operator's); a fetched
  // one is counted as used.
  absl::StatusOr<bool> UseIfHeld(const std::string& model_id,
                                 const std::string& name,
                                 const std::string& dir)
      ABSL_LOCKS_EXCLUDED(disk_mu_);
  absl::Status MaterializeLocked(const std::string& model_id,
                                 const std::string& name,
                                 const std::string& dir)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(fetch_mu_) ABSL_LOCKS_EXCLUDED(disk_mu_);
  // Tells the controller this server dropped `gone` (best effort: a stale
  // holder only costs a peer a NOT_FOUND). Outside disk_mu_.
  void ReportDropped(const std::vector<HeldAdapter>& gone) const
      ABSL_LOCKS_EXCLUDED(disk_mu_);

  const ClusterDelivery* const delivery_;
  absl::Mutex fetch_mu_ ABSL_ACQUIRED_BEFORE(disk_mu_);
  mutable absl::Mutex disk_mu_;
  AdapterFetchStats stats_ ABSL_GUARDED_BY(disk_mu_);
  FetchedAdapterDisk disk_ ABSL_GUARDED_BY(disk_mu_);
};

}  // namespace edgesplit

#endif  // EDGESPLIT_EDGE_SERVER_ADAPTER_FETCHER_H_
