#include "planner/cache_placement.h"

#include <algorithm>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"

namespace edgesplit::planner {
namespace {

// Incremental state of a placement: which models and how many of them use
// each block, per server.
class State {
 public:
  State(const CacheProblem& p, bool share)
      : p_(p),
        share_(share),
        cached_(p.servers.size(), std::vector<bool>(p.models.size())),
        users_(p.servers.size(), std::vector<int>(p.blocks.size())),
        bytes_(p.servers.size()) {}

  // Bytes caching model i at server n would add.
  int64_t Cost(size_t n, size_t i) const {
    int64_t add = 0;
    for (int b : p_.models[i].blocks) {
      if (!share_ || users_[n][b] == 0) add += p_.blocks[b].bytes;
    }
    return add;
  }
  bool Fits(size_t n, size_t i) const {
    return !cached_[n][i] &&
           bytes_[n] + Cost(n, i) <= p_.servers[n].capacity_bytes;
  }
  void Add(size_t n, size_t i) {
    bytes_[n] += Cost(n, i);
    for (int b : p_.models[i].blocks) ++users_[n][b];
    cached_[n][i] = true;
  }
  void Remove(size_t n, size_t i) {
    cached_[n][i] = false;
    for (int b : p_.models[i].blocks) --users_[n][b];
    bytes_[n] -= Cost(n, i);
  }
  bool cached(size_t n, size_t i) const { return cached_[n][i]; }
  bool Stored(size_t n, int block) const { return users_[n][block] > 0; }
  std::vector<std::vector<int>> ModelsAt() const {
    std::vector<std::vector<int>> out(p_.servers.size());
    for (size_t n = 0; n < out.size(); ++n) {
      for (size_t i = 0; i < p_.models.size(); ++i) {
        if (cached_[n][i]) out[n].push_back(static_cast<int>(i));
      }
    }
    return out;
  }

 private:
  const CacheProblem& p_;
  const bool share_;
  std::vector<std::vector<bool>> cached_;
  std::vector<std::vector<int>> users_;
  std::vector<int64_t> bytes_;
};

// Demand model i at server n would newly serve, given what is covered.
double Gain(const CacheProblem& p,
            const std::vector<std::vector<bool>>& covered,
            const std::vector<std::vector<int>>& regions_of, size_t n,
            size_t i) {
  double g = 0;
  for (int u : regions_of[n]) {
    if (!covered[u][i]) g += p.regions[u].demand[i];
  }
  return g;
}

// Blocks each server holds under `current` (none when null).
std::vector<std::vector<bool>> HeldBlocks(
    const CacheProblem& p, const std::vector<std::vector<int>>* current) {
  std::vector<std::vector<bool>> held(p.servers.size(),
                                      std::vector<bool>(p.blocks.size()));
  if (current == nullptr) return held;
  for (size_t n = 0; n < current->size() && n < held.size(); ++n) {
    for (int i : (*current)[n]) {
      if (i < 0 || i >= static_cast<int>(p.models.size())) continue;
      for (int b : p.models[i].blocks) held[n][b] = true;
    }
  }
  return held;
}

// One greedy pass: by gain, or by gain per byte fetched (`per_byte`:
// blocks neither stored by this pass nor held now, `held`, cost bytes; a
// re-plan so keeps what servers hold while it still serves demand).
std::vector<std::vector<int>> Greedy(
    const CacheProblem& p, bool share, bool per_byte,
    const std::vector<std::vector<bool>>& held) {
  std::vector<std::vector<int>> regions_of(p.servers.size());
  for (size_t u = 0; u < p.regions.size(); ++u) {
    for (int n : p.regions[u].servers) {
      regions_of[n].push_back(static_cast<int>(u));
    }
  }
  std::vector<std::vector<bool>> covered(p.regions.size(),
                                         std::vector<bool>(p.models.size()));
  State s(p, share);
  for (;;) {
    // (free, score): additions whose blocks are all there already come
    // first (by gain), then the best score.
    std::pair<bool, double> best{false, 0.0};
    size_t bn = 0, bi = 0;
    bool found = false;
    for (size_t n = 0; n < p.servers.size(); ++n) {
      for (size_t i = 0; i < p.models.size(); ++i) {
        if (!s.Fits(n, i)) continue;
        const double g = Gain(p, covered, regions_of, n, i);
        if (g <= 0) continue;
        int64_t cost = share ? 0 : s.Cost(n, i);
        for (int b : p.models[i].blocks) {
          if (share && !held[n][b] && !s.Stored(n, b)) {
            cost += p.blocks[b].bytes;
          }
        }
        const bool free = cost == 0;
        const std::pair<bool, double> score{
            per_byte && free,
            per_byte && !free ? g / static_cast<double>(cost) : g};
        if (!found || score > best) {
          best = score, bn = n, bi = i, found = true;
        }
      }
    }
    if (!found) break;
    s.Add(bn, bi);
    for (int u : regions_of[bn]) covered[u][bi] = true;
  }
  return s.ModelsAt();
}

// Whether placement `a` beats `b`: more demand served; on a tie fewer
// bytes to fetch from `current`, then fewer bytes stored.
bool Better(const CacheProblem& p, bool share,
            const std::vector<std::vector<int>>& current,
            const std::vector<std::vector<int>>& a,
            const std::vector<std::vector<int>>& b) {
  const double sa = ServedDemand(p, a), sb = ServedDemand(p, b);
  const double eps = 1e-9 * (1 + std::max(sa, sb));
  if (sa > sb + eps) return true;
  if (sb > sa + eps) return false;
  const int64_t ma = TransferBytes(p, current, a),
                mb = TransferBytes(p, current, b);
  if (ma != mb) return ma < mb;
  int64_t ta = 0, tb = 0;
  for (size_t n = 0; n < a.size(); ++n) ta += StoredBytes(p, a[n], share);
  for (size_t n = 0; n < b.size(); ++n) tb += StoredBytes(p, b[n], share);
  return ta < tb;
}

// Exhaustive search over every (server, model) pair in or out.
class Exact {
 public:
  Exact(const CacheProblem& p, bool share,
        std::vector<std::vector<int>> current)
      : p_(p), share_(share), current_(std::move(current)), s_(p, share) {}
  std::vector<std::vector<int>> Solve() {
    best_ = s_.ModelsAt();
    Visit(0);
    return best_;
  }

 private:
  void Visit(size_t pair) {
    const size_t models = p_.models.size();
    if (pair == p_.servers.size() * models) {
      std::vector<std::vector<int>> at = s_.ModelsAt();
      if (Better(p_, share_, current_, at, best_)) best_ = std::move(at);
      return;
    }
    const size_t n = pair / models, i = pair % models;
    if (s_.Fits(n, i)) {
      s_.Add(n, i);
      Visit(pair + 1);
      s_.Remove(n, i);
    }
    Visit(pair + 1);
  }
  const CacheProblem& p_;
  const bool share_;
  const std::vector<std::vector<int>> current_;
  State s_;
  std::vector<std::vector<int>> best_;
};

double TotalDemand(const CacheProblem& p) {
  double t = 0;
  for (const CacheRegion& r : p.regions) {
    for (double d : r.demand) t += d;
  }
  return t;
}

}  // namespace

absl::Status CacheProblem::Validate() const {
  auto bad = [](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("cache placement: ", what));
  };
  for (const CacheBlock& b : blocks) {
    if (b.bytes < 0)
      return bad(absl::StrCat("block ", b.id, " has ", b.bytes, " bytes"));
  }
  for (const CacheModel& m : models) {
    std::set<int> seen;
    for (int b : m.blocks) {
      if (b < 0 || b >= static_cast<int>(blocks.size()) ||
          !seen.insert(b).second) {
        return bad(absl::StrCat("model ", m.name, ": block index ", b,
                                " out of range or repeated"));
      }
    }
  }
  for (const CacheServer& s : servers) {
    if (s.capacity_bytes < 0) {
      return bad(absl::StrCat("server ", s.name, ": negative capacity"));
    }
  }
  for (const CacheRegion& r : regions) {
    if (r.demand.size() != models.size()) {
      return bad(absl::StrCat("region ", r.name, ": ", r.demand.size(),
                              " demands for ", models.size(), " models"));
    }
    for (double d : r.demand) {
      if (!(d >= 0))
        return bad(absl::StrCat("region ", r.name, ": demand ", d));
    }
    std::set<int> seen;
    for (int n : r.servers) {
      if (n < 0 || n >= static_cast<int>(servers.size()) ||
          !seen.insert(n).second) {
        return bad(absl::StrCat("region ", r.name, ": server index ", n,
                                " out of range or repeated"));
      }
    }
  }
  return absl::OkStatus();
}

int64_t StoredBytes(const CacheProblem& problem, const std::vector<int>& models,
                    bool share_blocks) {
  int64_t bytes = 0;
  std::set<int> stored;
  for (int i : models) {
    for (int b : problem.models[i].blocks) {
      if (!share_blocks || stored.insert(b).second) {
        bytes += problem.blocks[b].bytes;
      }
    }
  }
  return bytes;
}

double ServedDemand(const CacheProblem& problem,
                    const std::vector<std::vector<int>>& models_at) {
  double served = 0;
  for (const CacheRegion& r : problem.regions) {
    for (size_t i = 0; i < problem.models.size(); ++i) {
      for (int n : r.servers) {
        const auto& at = models_at[n];
        if (std::find(at.begin(), at.end(), static_cast<int>(i)) != at.end()) {
          served += r.demand[i];
          break;
        }
      }
    }
  }
  return served;
}

int64_t TransferBytes(const CacheProblem& problem,
                      const std::vector<std::vector<int>>& before,
                      const std::vector<std::vector<int>>& after) {
  int64_t moved = 0;
  for (size_t n = 0; n < after.size(); ++n) {
    std::set<int> had;
    if (n < before.size()) {
      for (int i : before[n]) {
        had.insert(problem.models[i].blocks.begin(),
                   problem.models[i].blocks.end());
      }
    }
    for (int i : after[n]) {
      for (int b : problem.models[i].blocks) {
        if (had.insert(b).second) moved += problem.blocks[b].bytes;
      }
    }
  }
  return moved;
}

absl::StatusOr<CachePlacement> PlaceCaches(
    const CacheProblem& problem, const CachePlacementOptions& options) {
  if (absl::Status s = problem.Validate(); !s.ok()) return s;
  const bool share = options.share_blocks;
  CachePlacement out;
  std::vector<std::vector<int>> current(problem.servers.size());
  if (options.current != nullptr) {
    for (size_t n = 0; n < current.size() && n < options.current->size(); ++n) {
      for (int i : (*options.current)[n]) {
        if (i >= 0 && i < static_cast<int>(problem.models.size())) {
          current[n].push_back(i);
        }
      }
    }
  }
  const size_t pairs = problem.servers.size() * problem.models.size();
  if (pairs <= static_cast<size_t>(options.exact_max_pairs)) {
    out.models_at = Exact(problem, share, current).Solve();
    out.exact = true;
  } else {
    // By gain; by gain per byte stored; and, re-planning, by gain per
    // byte fetched (what servers hold costs nothing to keep).
    const auto none = HeldBlocks(problem, nullptr);
    std::vector<std::vector<std::vector<int>>> passes = {
        Greedy(problem, share, false, none),
        Greedy(problem, share, true, none)};
    if (options.current != nullptr) {
      passes.push_back(
          Greedy(problem, share, true, HeldBlocks(problem, &current)));
    }
    out.models_at = passes[0];
    for (size_t k = 1; k < passes.size(); ++k) {
      if (Better(problem, share, current, passes[k], out.models_at)) {
        out.models_at = passes[k];
      }
    }
  }
  out.moved_bytes = TransferBytes(problem, current, out.models_at);
  for (const auto& at : out.models_at) {
    out.bytes_at.push_back(StoredBytes(problem, at, share));
  }
  out.served = ServedDemand(problem, out.models_at);
  const double total = TotalDemand(problem);
  out.hit_ratio = total > 0 ? out.served / total : 0;
  return out;
}

}  // namespace edgesplit::planner
