#include "planner/cost_model.h"

#include <algorithm>
#include <cmath>

namespace edgesplit {
namespace planner {
namespace internal {
namespace {

// Time of one block over `rows` token rows: a decode step is bound by
// reading the weights (decode_ms_per_block), a long prefill by arithmetic
// (rows x prefill_ms_per_token): the larger wins (a roofline).
double BlockMs(const NodeSpec& n, double rows) {
  return std::max(n.decode_ms_per_block, rows * n.prefill_ms_per_token);
}

// The head scales like a block between its memory- and compute-bound
// regimes.
double HeadMs(const NodeSpec& n, double rows) {
  if (n.decode_ms_per_block <= 1e-9) return n.head_ms;
  return n.head_ms *
         std::max(1.0, rows * n.prefill_ms_per_token / n.decode_ms_per_block);
}

int BlocksThatFit(int64_t memory, int64_t extra, int64_t per_block,
                  int num_blocks) {
  if (memory < extra) return -1;
  if (per_block <= 0) return num_blocks;
  return static_cast<int>(
      std::min<int64_t>(num_blocks, (memory - extra) / per_block));
}

}  // namespace

CostModel::CostModel(const Problem& problem, bool u_shaped, bool zero_device)
    : problem_(problem), u_shaped_(u_shaped), zero_device_(zero_device) {
  const ModelSpec& model = problem.model;
  const RequestShape& r = problem.request;
  const double batch = r.batch, prompt = r.prompt_tokens;
  const double out = r.output_tokens;
  const double micro = std::ceil(batch / r.micro_batches);
  const int num_blocks = model.num_blocks;
  n_ = static_cast<int>(problem.nodes.size());
  nodes_.resize(n_);
  // In double: KV x batch x tokens can pass int64 for absurd requests.
  const double per_block_d =
      static_cast<double>(model.block_bytes) +
      static_cast<double>(model.kv_bytes_per_token_per_block) * r.batch *
          (static_cast<double>(r.prompt_tokens) + r.output_tokens);
  const int64_t per_block = static_cast<int64_t>(std::min(per_block_d, 1e18));
  for (int i = 0; i < n_; ++i) {
    const NodeSpec& n = problem.nodes[i];
    NodeCost& c = nodes_[i];
    c.index = i;
    c.device = n.name == kDevice;
    c.pre_block = BlockMs(n, prompt * batch);
    c.dec_block = BlockMs(n, batch);
    // Prefill asks for the last token's output only.
    c.head_pre = HeadMs(n, batch);
    c.head_dec = HeadMs(n, batch);
    c.lat_per_block = c.pre_block + (out - 1) * c.dec_block;
    c.lat_fixed = n.overhead_ms * out;
    c.lat_head = c.head_pre + (out - 1) * c.head_dec;
    c.tp_per_block = BlockMs(n, micro);
    c.tp_fixed = n.overhead_ms;
    c.tp_head = HeadMs(n, micro);
    c.bytes_per_block = per_block;
    // The embedding is the device's, or with zero device blocks the first
    // server's. Which server is first is the DP's choice, so every server
    // keeps room for it: conservative, as a cap is per node, not per place
    // in the chain.
    c.extra_bytes = c.device != zero_device ? model.embed_bytes : 0;
    c.head_bytes = model.head_bytes;
    c.cap = BlocksThatFit(n.memory_bytes, c.extra_bytes, per_block, num_blocks);
    c.cap_head = BlocksThatFit(n.memory_bytes, c.extra_bytes + c.head_bytes,
                               per_block, num_blocks);
    if (c.device) {
      device_ = i;
      if (u_shaped) {
        // The device keeps the head: it is part of its fixed cost.
        c.lat_fixed += c.lat_head;
        c.tp_fixed += c.tp_head;
        c.cap = c.cap_head;
      }
    } else {
      servers_.push_back(i);
    }
  }
  const Constraints& k = problem.constraints;
  min_dev_ = k.min_device_blocks;
  max_dev_ = nodes_[device_].cap;
  if (k.max_device_blocks >= 0)
    max_dev_ = std::min(max_dev_, k.max_device_blocks);
  if (zero_device) {
    // min > max (no plan) when the constraints want device blocks.
    max_dev_ = std::min(max_dev_, 0);
  } else {
    min_dev_ = std::max(min_dev_, 1);
  }

  const double ret_bytes =
      u_shaped ? model.activation_bytes : model.logits_bytes;
  std::vector<const LinkSpec*> link(n_ * n_, nullptr);
  for (const LinkSpec& l : problem.links) {
    const int a = NodeIndex(l.from), b = NodeIndex(l.to);
    if (a >= 0 && b >= 0) link[a * n_ + b] = &l;
  }
  link_lat_.assign(n_ * n_, kInf);
  link_tp_.assign(n_ * n_, kInf);
  link_dec_.assign(n_ * n_, kInf);
  link_pre_.assign(n_ * n_, kInf);
  up_bytes_per_token_ = zero_device ? kTokenIdBytes : model.activation_bytes;
  dec_fwd_bytes_ = static_cast<int64_t>(batch * model.activation_bytes);
  dev_fwd_bytes_ = static_cast<int64_t>(batch * up_bytes_per_token_);
  dec_ret_bytes_ = static_cast<int64_t>(batch * ret_bytes);
  for (int a = 0; a < n_; ++a) {
    for (int b = 0; b < n_; ++b) {
      const LinkSpec* fwd = link[a * n_ + b];
      const LinkSpec* back = link[b * n_ + a];
      if (a == b || fwd == nullptr || back == nullptr) continue;
      const double ms_per_byte_fwd = 1e3 / fwd->bytes_per_s;
      const double ms_per_byte_back = 1e3 / back->bytes_per_s;
      const double act = a == device_
                             ? up_bytes_per_token_
                             : static_cast<double>(model.activation_bytes);
      link_pre_[a * n_ + b] = fwd->rtt_ms +
                              prompt * batch * act * ms_per_byte_fwd +
                              batch * ret_bytes * ms_per_byte_back;
      link_dec_[a * n_ + b] = fwd->rtt_ms + batch * act * ms_per_byte_fwd +
                              batch * ret_bytes * ms_per_byte_back;
      link_lat_[a * n_ + b] =
          link_pre_[a * n_ + b] + (out - 1) * link_dec_[a * n_ + b];
      link_tp_[a * n_ + b] = std::max(micro * act * ms_per_byte_fwd,
                                      micro * ret_bytes * ms_per_byte_back);
    }
  }
}

int CostModel::NodeIndex(const std::string& name) const {
  for (int i = 0; i < n_; ++i) {
    if (problem_.nodes[i].name == name) return i;
  }
  return -1;
}

double CostModel::DeviceJoules(int k0) const {
  const ModelSpec& model = problem_.model;
  const RequestShape& r = problem_.request;
  const NodeSpec& d = problem_.nodes[device_];
  const double rows_in =
      static_cast<double>(r.batch) * (r.prompt_tokens + r.output_tokens - 1);
  double flops = k0 * model.block_flops_per_token * rows_in;
  if (u_shaped_)
    flops += model.head_flops_per_token * r.batch * r.output_tokens;
  const double ret = u_shaped_ ? model.activation_bytes : model.logits_bytes;
  const double bits =
      8.0 * (rows_in * up_bytes_per_token_ +
             static_cast<double>(r.batch) * r.output_tokens * ret);
  return d.joules_per_flop * flops + d.joules_per_bit * bits;
}

PlanResult CostModel::Predict(const std::vector<Assignment>& ranges) const {
  PlanResult p;
  p.u_shaped = u_shaped_;
  const double out = problem_.request.output_tokens;
  double micro = std::ceil(static_cast<double>(problem_.request.batch) /
                           problem_.request.micro_batches);
  int prev = -1;
  for (size_t i = 0; i < ranges.size(); ++i) {
    const int v = NodeIndex(ranges[i].node);
    const NodeCost& c = nodes_[v];
    const NodeSpec& spec = problem_.nodes[v];
    const int k = ranges[i].last_block - ranges[i].first_block;
    StagePlan s;
    s.node = ranges[i].node;
    s.first_block = ranges[i].first_block;
    s.last_block = ranges[i].last_block;
    s.head = c.device ? u_shaped_ : (!u_shaped_ && i + 1 == ranges.size());
    s.prefill_ms =
        k * c.pre_block + spec.overhead_ms + (s.head ? c.head_pre : 0);
    s.decode_ms =
        k * c.dec_block + spec.overhead_ms + (s.head ? c.head_dec : 0);
    // Caps keep the embedding's room on every server (see the
    // constructor); the plan puts it on the first only.
    const int64_t extra =
        zero_device_ && !c.device && i != 1 ? 0 : c.extra_bytes;
    s.memory_bytes =
        k * c.bytes_per_block + extra + (s.head ? c.head_bytes : 0);
    const double stage_tp =
        k * c.tp_per_block + spec.overhead_ms + (s.head ? c.tp_head : 0);
    p.bottleneck_ms = std::max(p.bottleneck_ms, stage_tp);
    p.prefill_ms += s.prefill_ms;
    p.decode_step_ms += s.decode_ms;
    if (prev >= 0) {
      p.prefill_ms += LinkPrefillMs(prev, v);
      p.decode_step_ms += LinkDecodeMs(prev, v);
      p.bottleneck_ms = std::max(p.bottleneck_ms, LinkOccupancy(prev, v));
      StagePlan& before = p.stages.back();
      before.transfer_ms = LinkDecodeMs(prev, v);
      before.bytes_to_next = prev == device_ ? dev_fwd_bytes_ : dec_fwd_bytes_;
      before.bytes_from_next = dec_ret_bytes_;
    }
    p.stages.push_back(std::move(s));
    prev = v;
  }
  p.latency_ms = p.prefill_ms + (out - 1) * p.decode_step_ms;
  p.throughput_tok_s = p.bottleneck_ms > 0 ? micro * 1e3 / p.bottleneck_ms : 0;
  p.device_joules = DeviceJoules(ranges[0].last_block - ranges[0].first_block);
  return p;
}

}  // namespace internal
}  // namespace planner
}  // namespace edgesplit
