// Which adapters each edge server caches (issue 15's parameter-sharing
// placement, planner/cache_placement.h), decided by the controller from
// the demand it counts and pushed to the servers, which prefetch them.
//
// The mapping onto TrimCaching's problem: the split plan already places
// each model's shared base blocks (every hop of a model's route holds its
// blocks once, for all the model's adapters), so what remains to place are
// the task-specific parts. A request for adapter A of model M runs on every
// hop of M's route, each applying its part of A, so each hop is a region
// whose only server is that hop and whose demand is M's adapter requests;
// an adapter's blocks are its files, content-addressed (identical files
// are stored once). Capacity is each server's adapter storage. A request
// on a hop that lacks its adapter is a miss: the hop fetches it then (the
// cold path), so the hit ratio says how much of the demand meets warm
// caches.
//
// Demand: session opens naming an adapter, decayed exponentially (a
// half-life), plus what-if counts from the config.
#ifndef EDGESPLIT_CONTROLLER_ADAPTER_PLACEMENT_H_
#define EDGESPLIT_CONTROLLER_ADAPTER_PLACEMENT_H_

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "base/yaml_util.h"
#include "edgesplit/v1/controller.pb.h"
#include "edgesplit/v1/delivery.pb.h"

namespace edgesplit {

using AdapterKey = std::pair<std::string, std::string>;  // (model, name)

// The controller config's `adapter_placement:` section:
//   adapter_placement:
//     server_storage_mb: 512          # adapter files each server caches
//     nodes: {server-a: 1024}         # per-server overrides
//     demand_half_life_s: 3600        # how fast counted demand fades
//     interval_s: 10                  # re-placed at most this often
//     what_if: [{model: stories260K, adapter: a, requests: 40}]
struct AdapterPlacementConfig {
  int64_t server_storage_bytes = 0;  // 0 (and no overrides): placement off.
  std::map<std::string, int64_t> node_storage_bytes;
  absl::Duration half_life = absl::Hours(1);
  absl::Duration interval = absl::Seconds(10);
  std::map<AdapterKey, double> what_if;

  bool enabled() const {
    return server_storage_bytes > 0 || !node_storage_bytes.empty();
  }
  int64_t StorageOf(const std::string& node) const;
};

// Reads the section from a parsed controller config (absent: placement
// off); errors name the file, line and field.
absl::StatusOr<AdapterPlacementConfig> ParseAdapterPlacementConfig(
    const YamlReader& r, const YAML::Node& root);

// Requests per adapter, each decaying by half every `half_life`. Names
// come from devices (any name a device opens a session with), so at most
// kMaxAdapterDemand are kept: when full, counts that faded below 0.01 are
// dropped, and a new name that still finds no room is not counted.
// Thread-safe.
inline constexpr size_t kMaxAdapterDemand = 1 << 16;
class AdapterDemand {
 public:
  explicit AdapterDemand(absl::Duration half_life,
                         size_t max_entries = kMaxAdapterDemand)
      : half_life_(half_life), max_entries_(max_entries) {}
  void Record(const std::string& model_id, const std::string& name,
              absl::Time now);
  std::map<AdapterKey, double> At(absl::Time now) const;

 private:
  struct Count {
    double value = 0;
    absl::Time at;  // When `value` was last brought up to date.
  };
  double Decay(absl::Duration elapsed) const;

  const absl::Duration half_life_;
  const size_t max_entries_;
  mutable absl::Mutex mu_;
  std::map<AdapterKey, Count> counts_ ABSL_GUARDED_BY(mu_);
};

struct AdapterPlacementInput {
  // Registered adapters with the servers holding them now.
  std::vector<v1::RegisteredAdapter> adapters;
  // The servers of each model's route (hops of its plan, not the device).
  std::map<std::string, std::vector<std::string>> model_servers;
  std::map<AdapterKey, double> demand;
  AdapterPlacementConfig config;
};

// Pure: the placement of `input.adapters` over the servers. Demand for
// adapters not registered, and models without a plan, are left out (of
// the placement and of its demand list).
absl::StatusOr<v1::AdapterPlacement> PlaceAdapters(
    const AdapterPlacementInput& input);

// The servers of each plan's route (hops other than the device, and their
// standbys, which take a hop's place after a failure), from a GetPlan
// answer.
std::map<std::string, std::vector<std::string>> ModelServers(
    const v1::GetPlanResponse& plans);

}  // namespace edgesplit

#endif  // EDGESPLIT_CONTROLLER_ADAPTER_PLACEMENT_H_
