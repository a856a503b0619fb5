// The planner's two exact dynamic programs.
//
// Both follow the contiguous-range formulations of EdgeShard (Zhang et al.,
// 2024: a DP over layers and devices minimising end-to-end latency under
// per-device memory limits) and PipeEdge (Hu et al., 2022: a DP over
// layers and the set of devices used minimising the slowest pipeline stage,
// communication counted as its own stage). Where we differ:
//   * Each node runs at most one stage (as PipeEdge, unlike EdgeShard's
//     latency DP, which may revisit a device): a stage holds one stream and
//     one KV cache per session, and revisits only help with links that
//     break the triangle inequality.
//   * Results travel back along the path (our stage streams answer their
//     caller), so a link costs both directions, and the head sits on the
//     last server or - U-shaped - on the device.
//   * SetDp uses what EdgeShard and PipeEdge leave on the table: all blocks
//     are the same size and emit the same activation, so a plan's compute
//     depends only on how many blocks each node runs and its communication
//     only on the order of nodes. The block counts then come from a greedy
//     fill (latency) or a monotone feasibility search (bottleneck), and the
//     node order from Held-Karp over subsets, without the L^2 factor.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "planner/cost_model.h"

namespace edgesplit {
namespace planner {
namespace internal {
namespace {

bool Better(double a, double b) {
  if (b == kInf) return a < kInf;
  return a < b - 1e-12 * std::max(1.0, std::abs(b));
}

// Ranges for a path of nodes with block counts.
std::vector<Assignment> ToRanges(const CostModel& m,
                                 const std::vector<int>& path,
                                 const std::vector<int>& blocks) {
  std::vector<Assignment> out;
  int b = 0;
  for (size_t i = 0; i < path.size(); ++i) {
    out.push_back({m.NodeName(path[i]), b, b + blocks[i]});
    b += blocks[i];
  }
  return out;
}

// SolveSetDp's state: the Held-Karp table over server subsets and the best
// plan found. The latency and bottleneck objectives share the table and
// the path walk; each has its own search for block counts.
class SetDp {
 public:
  SetDp(const CostModel& m, Objective objective)
      : m_(m),
        servers_(m.servers()),
        s_(static_cast<int>(servers_.size())),
        L_(m.num_blocks()),
        latency_(objective != Objective::kThroughput),
        u_(m.u_shaped()),
        dev_(m.device()),
        d_(m.device_index()),
        full_(size_t{1} << s_),
        best_(full_ * s_, kInf),
        parent_(full_ * s_, -1),
        edge_(s_ * s_),
        counts_(s_ + 1) {}

  std::vector<Assignment> Solve(double bound) {
    InitPaths();
    const bool found = latency_ ? SolveLatency(bound) : SolveBottleneck(bound);
    if (!found || best_cost_ == kInf || best_last_ < 0) return {};
    return Ranges();
  }

 private:
  // Held-Karp: best path from the device through exactly `mask`, ending at
  // server v: summed link latency, or the slowest link (bottleneck).
  void InitPaths() {
    for (int v = 0; v < s_; ++v) {
      for (int w = 0; w < s_; ++w) {
        edge_[v * s_ + w] = latency_
                                ? m_.LinkLatency(servers_[v], servers_[w])
                                : m_.LinkOccupancy(servers_[v], servers_[w]);
      }
      best_[(size_t{1} << v) * s_ + v] =
          latency_ ? m_.LinkLatency(d_, servers_[v])
                   : m_.LinkOccupancy(d_, servers_[v]);
    }
  }

  // Pull form: row `mask` reads the rows of its subsets one smaller, which
  // keeps the writes in one cache line pair (the table is 2^S x S).
  void ComputeRow(size_t mask) {
    if ((mask & (mask - 1)) == 0) return;  // Single servers: set above.
    double* row = &best_[mask * s_];
    int8_t* prow = &parent_[mask * s_];
    for (size_t ws = mask; ws != 0; ws &= ws - 1) {
      const int w = __builtin_ctzll(ws);
      const size_t prev = mask & ~(size_t{1} << w);
      const double* from = &best_[prev * s_];
      double c_best = kInf;
      int8_t p_best = -1;
      for (size_t vs = prev; vs != 0; vs &= vs - 1) {
        const int v = __builtin_ctzll(vs);
        const double e = edge_[v * s_ + w];
        const double c = latency_ ? from[v] + e : std::max(from[v], e);
        if (c < c_best) {
          c_best = c;
          p_best = static_cast<int8_t>(v);
        }
      }
      row[w] = c_best;
      prow[w] = p_best;
    }
  }

  // ---- Latency.
  double PerBlock(int i) const {
    return i == s_ ? dev_.lat_per_block : m_.node(servers_[i]).lat_per_block;
  }

  // Greedy fill into counts_: minimums first (device min, one block per
  // server), the rest to the cheapest nodes with room. Optimal for linear
  // costs. The compute latency, or kInf when the blocks do not fit.
  double Fill(size_t mask, int head_on) {
    int rem = L_ - m_.min_device_blocks();
    double cost = 0;
    for (int i = 0; i < s_; ++i) {
      if (!(mask >> i & 1)) continue;
      const NodeCost& c = m_.node(servers_[i]);
      const int cap = i == head_on ? c.cap_head : c.cap;
      if (cap < 1) return kInf;
      counts_[i] = 1;
      --rem;
      cost += c.lat_fixed + c.lat_per_block;
    }
    counts_[s_] = m_.min_device_blocks();
    cost += dev_.lat_fixed + dev_.lat_per_block * counts_[s_];
    if (rem < 0) return kInf;
    for (int i : order_) {
      if (rem == 0) break;
      int room;
      if (i == s_) {
        room = m_.max_device_blocks() - counts_[s_];
      } else {
        if (!(mask >> i & 1)) continue;
        const NodeCost& c = m_.node(servers_[i]);
        room = (i == head_on ? c.cap_head : c.cap) - 1;
      }
      const int take = std::min(rem, std::max(room, 0));
      counts_[i] += take;
      rem -= take;
      cost += take * PerBlock(i);
    }
    return rem == 0 ? cost : kInf;
  }

  // No plan's compute costs less than filling the blocks cheapest-first
  // into every node's room (the device's minimum first), as if no server
  // needed a block of its own: a lower bound for any mask. kInf when the
  // blocks fit nowhere.
  double FillFloor() const {
    double floor = m_.min_device_blocks() * dev_.lat_per_block;
    int rem = L_ - m_.min_device_blocks();
    for (int i : order_) {
      if (rem <= 0) break;
      const int room = i == s_ ? m_.max_device_blocks() - m_.min_device_blocks()
                               : std::max(m_.node(servers_[i]).cap, 0);
      const int take = std::min(rem, std::max(room, 0));
      floor += take * PerBlock(i);
      rem -= take;
    }
    return rem > 0 ? kInf : floor;
  }

  bool SolveLatency(double bound) {
    best_cost_ = bound;
    // Fill order: cheapest per block first (device included as index s).
    order_.resize(s_ + 1);
    for (int i = 0; i <= s_; ++i) order_[i] = i;
    std::stable_sort(order_.begin(), order_.end(),
                     [&](int a, int b) { return PerBlock(a) < PerBlock(b); });
    const double fill_floor = FillFloor();
    if (fill_floor == kInf) return false;
    // One pass: a subset's row is complete before any superset's, so each
    // mask is priced right after its paths are known, and paths that
    // cannot beat the best plan so far (costs only grow along a path) are
    // cut: a branch and bound inside Held-Karp.
    for (size_t mask = 1; mask < full_; ++mask) {
      ComputeRow(mask);
      double path_floor = kInf;
      for (size_t vs = mask; vs != 0; vs &= vs - 1) {
        const int v = __builtin_ctzll(vs);
        double& h = best_[mask * s_ + v];
        if (h + fill_floor >= best_cost_) h = kInf;
        path_floor = std::min(path_floor, h);
      }
      if (path_floor != kInf) PriceMask(mask);
    }
    return true;
  }

  // Every last server of `mask`'s paths, with the head there (or U-shaped,
  // on the device): keeps the best plan.
  void PriceMask(size_t mask) {
    const double base = Fill(mask, -1);
    if (base == kInf) return;
    base_counts_ = counts_;  // Reused: no allocation per mask.
    for (int v = 0; v < s_; ++v) {
      if (!(mask >> v & 1) || best_[mask * s_ + v] == kInf) continue;
      double cost = base;
      const NodeCost& c = m_.node(servers_[v]);
      // The head's memory may leave the last node less room.
      // Fill(mask, v) leaves its counts in counts_ for the check below.
      const bool refill = !u_ && base_counts_[v] > c.cap_head;
      if (!u_) cost = (refill ? Fill(mask, v) : base) + c.lat_head;
      cost += best_[mask * s_ + v];
      if (Better(cost, best_cost_)) {
        best_cost_ = cost;
        best_mask_ = mask;
        best_last_ = v;
        best_counts_ = refill ? counts_ : base_counts_;
      }
    }
  }

  // ---- Bottleneck: feasibility is monotone in the bound B, so
  // binary-search B over every value a stage or link can take.
  static int Fits(double bound, double fixed, double per, int cap) {
    if (bound < fixed - 1e-12) return -1;
    if (per <= 0) return cap;
    const double k = std::floor((bound - fixed) / per + 1e-9);
    return static_cast<int>(std::min<double>(cap, k));
  }

  // Whether some plan's every stage and link takes at most `bound`;
  // `record` keeps its mask and last server.
  bool Feasible(double bound, bool record) {
    dev_room_ = std::min(m_.max_device_blocks(),
                         Fits(bound, dev_.tp_fixed, dev_.tp_per_block, L_));
    if (dev_room_ < m_.min_device_blocks()) return false;
    for (int v = 0; v < s_; ++v) {
      const NodeCost& c = m_.node(servers_[v]);
      room_[v] = Fits(bound, c.tp_fixed, c.tp_per_block, c.cap);
      room_head_[v] =
          u_ ? room_[v]
             : Fits(bound, c.tp_fixed + c.tp_head, c.tp_per_block, c.cap_head);
    }
    sum_[0] = dev_room_;
    all_ok_[0] = 1;
    for (size_t mask = 1; mask < full_; ++mask) {
      const int low = __builtin_ctzll(mask);
      const size_t rest = mask & (mask - 1);
      all_ok_[mask] = all_ok_[rest] && room_[low] >= 1;
      sum_[mask] = sum_[rest] + std::max(room_[low], 0);
      // Cheap necessary conditions first: every member fits a block, the
      // room adds up, and some path through the mask is within the bound.
      if (!all_ok_[mask] || sum_[mask] < L_ ||
          path_min_[mask] > bound + 1e-12 ||
          __builtin_popcountll(mask) + m_.min_device_blocks() > L_) {
        continue;
      }
      for (size_t vs = mask; vs != 0; vs &= vs - 1) {
        const int v = __builtin_ctzll(vs);
        if (best_[mask * s_ + v] > bound + 1e-12) continue;
        if (room_head_[v] < 1) continue;
        if (sum_[mask] - room_[v] + room_head_[v] >= L_) {
          if (record) {
            best_mask_ = mask;
            best_last_ = v;
          }
          return true;
        }
      }
    }
    return false;
  }

  // Every value a stage or link can take, below `bound`, ascending.
  std::vector<double> Candidates(double bound) const {
    std::vector<double> out;
    for (int k = 0; k <= std::max(m_.max_device_blocks(), 0); ++k) {
      out.push_back(dev_.tp_fixed + k * dev_.tp_per_block);
    }
    for (int v = 0; v < s_; ++v) {
      const NodeCost& c = m_.node(servers_[v]);
      for (int k = 1; k <= c.cap; ++k) {
        out.push_back(c.tp_fixed + k * c.tp_per_block);
        if (!u_ && k <= c.cap_head) {
          out.push_back(c.tp_fixed + c.tp_head + k * c.tp_per_block);
        }
      }
      for (int w = 0; w < s_; ++w) {
        if (w != v) out.push_back(m_.LinkOccupancy(servers_[v], servers_[w]));
      }
      out.push_back(m_.LinkOccupancy(d_, servers_[v]));
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    // Only bounds that beat what the other head placement achieved.
    while (!out.empty() && (out.back() == kInf || out.back() >= bound)) {
      out.pop_back();
    }
    return out;
  }

  bool SolveBottleneck(double bound) {
    for (size_t mask = 1; mask < full_; ++mask) ComputeRow(mask);
    // The best path bottleneck through each mask, whatever its last node.
    path_min_.assign(full_, kInf);
    for (size_t mask = 1; mask < full_; ++mask) {
      for (int v = 0; v < s_; ++v) {
        path_min_[mask] = std::min(path_min_[mask], best_[mask * s_ + v]);
      }
    }
    room_.assign(s_, 0);
    room_head_.assign(s_, 0);
    sum_.assign(full_, 0);
    all_ok_.assign(full_, 0);
    const std::vector<double> candidates = Candidates(bound);
    size_t lo = 0, hi = candidates.size();  // First feasible in [lo, hi).
    while (lo < hi) {
      const size_t mid = (lo + hi) / 2;
      if (Feasible(candidates[mid], false)) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
    if (lo == candidates.size()) return false;
    best_cost_ = candidates[lo];
    Feasible(best_cost_, true);
    return BottleneckCounts();
  }

  // Block counts within the bound: minimums, then the fastest nodes.
  bool BottleneckCounts() {
    best_counts_.assign(s_ + 1, 0);
    best_counts_[s_] = m_.min_device_blocks();
    int rem = L_ - best_counts_[s_];
    std::vector<int> limit(s_ + 1);
    limit[s_] = dev_room_;
    std::vector<int> order;
    for (int v = 0; v < s_; ++v) {
      if (!(best_mask_ >> v & 1)) continue;
      best_counts_[v] = 1;
      --rem;
      limit[v] = v == best_last_ ? room_head_[v] : room_[v];
      order.push_back(v);
    }
    order.push_back(s_);
    auto per = [&](int i) {
      return i == s_ ? dev_.tp_per_block : m_.node(servers_[i]).tp_per_block;
    };
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return per(a) < per(b); });
    for (int i : order) {
      const int take = std::min(rem, std::max(limit[i] - best_counts_[i], 0));
      best_counts_[i] += take;
      rem -= take;
    }
    return rem == 0;  // Always: Feasible() said it fits.
  }

  // Walks the Held-Karp parents back to the device.
  std::vector<Assignment> Ranges() const {
    std::vector<int> path;  // Server indices, last first.
    size_t mask = best_mask_;
    int v = best_last_;
    while (v >= 0) {
      path.push_back(v);
      const int p = parent_[mask * s_ + v];
      mask &= ~(size_t{1} << v);
      v = p;
    }
    std::reverse(path.begin(), path.end());
    std::vector<int> nodes = {d_};
    std::vector<int> blocks = {best_counts_[s_]};
    for (int i : path) {
      nodes.push_back(servers_[i]);
      blocks.push_back(best_counts_[i]);
    }
    return ToRanges(m_, nodes, blocks);
  }

  const CostModel& m_;
  const std::vector<int>& servers_;
  const int s_, L_;
  const bool latency_, u_;
  const NodeCost& dev_;
  const int d_;
  const size_t full_;
  std::vector<double> best_;
  std::vector<int8_t> parent_;
  std::vector<double> edge_;
  std::vector<int> counts_;       // Fill's block counts; [s_] is the device.
  std::vector<int> base_counts_;  // PriceMask: Fill's without the head.
  std::vector<int> order_;        // Latency: nodes cheapest per block first.
  // The best plan: its server set, last server, block counts and cost.
  std::vector<int> best_counts_;
  size_t best_mask_ = 0;
  int best_last_ = -1;
  double best_cost_ = kInf;
  // Bottleneck search, per bound tried.
  std::vector<double> path_min_;
  std::vector<int> room_, room_head_, sum_;
  std::vector<uint8_t> all_ok_;
  int dev_room_ = 0;
};

}  // namespace

std::vector<Assignment> SolveSetDp(const CostModel& m, Objective objective,
                                   double bound) {
  if (m.servers().empty() || m.min_device_blocks() > m.max_device_blocks()) {
    return {};
  }
  return SetDp(m, objective).Solve(bound);
}

double RangeDpWork(const CostModel& m) {
  const double s = static_cast<double>(m.servers().size());
  const double L = m.num_blocks();
  return (L + 1) * std::pow(2.0, s) * (s + 1) * s * L;
}

std::vector<Assignment> SolveRangeDp(const CostModel& m, Objective objective,
                                     const std::vector<PinnedStage>& pinned) {
  const std::vector<int>& servers = m.servers();
  const int s = static_cast<int>(servers.size());
  const int L = m.num_blocks();
  const bool latency = objective != Objective::kThroughput;
  const bool u = m.u_shaped();
  const NodeCost& dev = m.device();
  const int d = m.device_index();
  const size_t full = size_t{1} << s;
  // Pins: which server (or the device, -2) must start at block b.
  std::vector<int> pin_at(L + 1, -1), pin_end(L + 1, -1);
  size_t pinned_mask = 0;
  int device_pin = -1;
  for (const PinnedStage& p : pinned) {
    const int idx = m.NodeIndex(p.node);
    if (idx == d) {
      device_pin = p.last_block;
      continue;
    }
    const int v = static_cast<int>(
        std::find(servers.begin(), servers.end(), idx) - servers.begin());
    pin_at[p.first_block] = v;
    pin_end[p.first_block] = p.last_block;
    pinned_mask |= size_t{1} << v;
  }
  // Where the next pinned range starts at or after b.
  std::vector<int> next_pin(L + 1, L);
  for (int b = L - 1; b >= 0; --b)
    next_pin[b] = pin_at[b] >= 0 ? b : next_pin[b + 1];

  // State (b, mask, last): last in [0, s) is a server, s the device.
  const size_t per_b = full * (s + 1);
  std::vector<double> value((L + 1) * per_b, kInf);
  std::vector<int16_t> from_last((L + 1) * per_b, -1);
  auto at = [&](int b, size_t mask, int last) {
    return static_cast<size_t>(b) * per_b + mask * (s + 1) + last;
  };
  for (int k0 = m.min_device_blocks(); k0 <= std::min(m.max_device_blocks(), L);
       ++k0) {
    if (device_pin >= 0 && k0 != device_pin) continue;
    if (k0 > next_pin[0]) break;  // A server's pin starts before.
    value[at(k0, 0, s)] = latency ? dev.lat_fixed + k0 * dev.lat_per_block
                                  : dev.tp_fixed + k0 * dev.tp_per_block;
  }
  for (int b = 0; b < L; ++b) {
    for (size_t mask = 0; mask < full; ++mask) {
      for (int last = 0; last <= s; ++last) {
        const double here = value[at(b, mask, last)];
        if (here == kInf) continue;
        const int from = last == s ? d : servers[last];
        auto relax = [&](int v, int k) {
          const NodeCost& c = m.node(servers[v]);
          const bool head = !u && b + k == L;
          if (k > (head ? c.cap_head : c.cap)) return;
          const double e = latency ? m.LinkLatency(from, servers[v])
                                   : m.LinkOccupancy(from, servers[v]);
          if (e == kInf) return;
          double cost;
          if (latency) {
            cost = here + e + c.lat_fixed + k * c.lat_per_block +
                   (head ? c.lat_head : 0);
          } else {
            cost = std::max(
                {here, e,
                 c.tp_fixed + k * c.tp_per_block + (head ? c.tp_head : 0)});
          }
          const size_t idx = at(b + k, mask | size_t{1} << v, v);
          if (cost < value[idx]) {
            value[idx] = cost;
            from_last[idx] = static_cast<int16_t>(last);
          }
        };
        if (pin_at[b] >= 0) {
          const int v = pin_at[b];
          if (!(mask >> v & 1)) relax(v, pin_end[b] - b);
          continue;
        }
        const int max_k = next_pin[b] - b;
        for (int v = 0; v < s; ++v) {
          if ((mask | pinned_mask) >> v & 1) continue;
          for (int k = 1; k <= max_k; ++k) relax(v, k);
        }
      }
    }
  }
  double best = kInf;
  size_t best_mask = 0;
  int best_last = -1;
  for (size_t mask = 1; mask < full; ++mask) {
    for (int last = 0; last < s; ++last) {
      if (Better(value[at(L, mask, last)], best)) {
        best = value[at(L, mask, last)];
        best_mask = mask;
        best_last = last;
      }
    }
  }
  if (best_last < 0) return {};
  // Walk back: each state's block count is b minus the previous b; the
  // previous state is the one (b', mask - last, from_last) with finite value
  // that leads here - recover b' by scanning (cheap: at most L).
  std::vector<std::pair<int, int>> rev;  // (node index, first block)
  int b = L;
  size_t mask = best_mask;
  int last = best_last;
  while (last != s) {
    const int prev_last = from_last[at(b, mask, last)];
    const size_t prev_mask = mask & ~(size_t{1} << last);
    const int from = prev_last == s ? d : servers[prev_last];
    const NodeCost& c = m.node(servers[last]);
    const bool head = !u && b == L;
    int found = -1;
    for (int pb = b - 1; pb >= 0 && found < 0; --pb) {
      const double here = value[at(pb, prev_mask, prev_last)];
      if (here == kInf) continue;
      const int k = b - pb;
      if (pin_at[pb] >= 0
              ? pin_at[pb] != last || pin_end[pb] != b
              : (k > next_pin[pb] - pb || (pinned_mask >> last & 1))) {
        continue;
      }
      if (k > (head ? c.cap_head : c.cap)) continue;
      const double e = latency ? m.LinkLatency(from, servers[last])
                               : m.LinkOccupancy(from, servers[last]);
      const double cost = latency
                              ? here + e + c.lat_fixed + k * c.lat_per_block +
                                    (head ? c.lat_head : 0)
                              : std::max({here, e,
                                          c.tp_fixed + k * c.tp_per_block +
                                              (head ? c.tp_head : 0)});
      if (cost == value[at(b, mask, last)]) found = pb;
    }
    if (found < 0) return {};  // Unreachable.
    rev.push_back({servers[last], found});
    b = found;
    mask = prev_mask;
    last = prev_last;
  }
  std::vector<Assignment> out = {{m.NodeName(d), 0, b}};
  int end = L;
  std::vector<Assignment> tail;
  for (auto& [node, first] : rev) {
    tail.push_back({m.NodeName(node), first, end});
    end = first;
  }
  out.insert(out.end(), tail.rbegin(), tail.rend());
  return out;
}

}  // namespace internal
}  // namespace planner
}  // namespace edgesplit
