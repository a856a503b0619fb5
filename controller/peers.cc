// Controller queries about which nodes are near which.
#include <algorithm>
#include <limits>
#include <tuple>

#include "controller/controller.h"

namespace edgesplit {

std::vector<std::pair<std::string, std::string>> Controller::PeersNearestTo(
    const std::string& from, const std::vector<std::string>& nodes) const {
  absl::MutexLock lock(&mu_);
  const Node* origin = nullptr;
  if (auto it = nodes_.find(from); it != nodes_.end()) origin = &it->second;
  std::vector<std::tuple<double, std::string, std::string>> ranked;
  for (const std::string& name : nodes) {
    auto it = nodes_.find(name);
    if (name == from || it == nodes_.end() || !UsableLocked(name)) continue;
    double rtt = std::numeric_limits<double>::infinity();
    if (origin != nullptr) {
      for (const v1::LinkProfile& l : origin->links) {
        if (l.peer() == name) rtt = l.rtt_ms();
      }
    }
    const Node& n = it->second;
    ranked.emplace_back(rtt, name,
                        n.peer_address.empty() ? n.address : n.peer_address);
  }
  std::sort(ranked.begin(), ranked.end());
  std::vector<std::pair<std::string, std::string>> out;
  for (auto& [rtt, name, address] : ranked) out.emplace_back(name, address);
  return out;
}

}  // namespace edgesplit
