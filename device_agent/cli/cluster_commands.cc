#include "device_agent/cli/cluster_commands.h"

#include <filesystem>

#include "absl/strings/str_format.h"
#include "base/file_util.h"
#include "base/status_macros.h"
#include "controller/auto_plan.h"
#include "controller/cluster_file.h"
#include "device_agent/cli/adapter_commands.h"
#include "device_agent/cli/security_commands.h"
#include "edgesplit/v1/controller.grpc.pb.h"
#include "edgesplit/v1/delivery.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "proto/grpc_status.h"
#include "runtime/model_config.h"

namespace edgesplit {
namespace cli {
namespace {

double MiB(int64_t bytes) { return bytes / double(1 << 20); }

}  // namespace

absl::Status PlanCommand(const Args& a, std::ostream& out, std::ostream& err) {
  ES_ASSIGN_OR_RETURN(std::string cluster_path, a.RequiredString("cluster"));
  ES_ASSIGN_OR_RETURN(std::string model_dir, a.RequiredString("model"));
  ES_ASSIGN_OR_RETURN(ClusterFile cluster, LoadClusterFile(cluster_path));
  ES_ASSIGN_OR_RETURN(ModelConfig model,
                      LoadModelConfig(model_dir + "/config.json"));
  PlanConfig spec = cluster.spec;
  spec.source = cluster_path;
  spec.model_path =
      std::filesystem::absolute(model_dir).lexically_normal().string();
  spec.model_id = a.String(
      "model-id", std::filesystem::path(spec.model_path).filename().string());
  if (a.Has("objective")) {
    spec.planner.objective = a.String("objective");
    ES_RETURN_IF_ERROR(
        planner::ParseObjective(spec.planner.objective).status());
  }
  planner::PlanResult r;
  ES_ASSIGN_OR_RETURN(
      PlanConfig plan,
      PlanAutomatically(spec, model, cluster.servers, cluster.device,
                        cluster.default_link, &r));
  out << absl::StrFormat("plan for %s (%d blocks), objective %s%s\n\n",
                         spec.model_id, model.num_layers,
                         spec.planner.objective,
                         r.u_shaped ? ", U-shaped (head on the device)" : "");
  out << absl::StrFormat("%-5s %-14s %-10s %12s %12s %12s %11s\n", "stage",
                         "node", "blocks", "prefill ms", "decode ms",
                         "transfer ms", "memory MiB");
  for (size_t i = 0; i < r.stages.size(); ++i) {
    const planner::StagePlan& s = r.stages[i];
    out << absl::StrFormat(
        "%-5d %-14s %-10s %12.3f %12.3f %12.3f %11.1f\n", i, s.node,
        absl::StrFormat("[%d, %d)%s", s.first_block, s.last_block,
                        s.head ? "+h" : ""),
        s.prefill_ms, s.decode_ms, s.transfer_ms, MiB(s.memory_bytes));
  }
  out << absl::StrFormat(
      "\nrequest: %d prompt + %d output tokens, batch %d, %d micro-batches\n"
      "predicted: time to first token %.2f ms, %.3f ms per token, "
      "generation %.1f ms\n"
      "pipeline: bottleneck %.3f ms per micro-batch, %.1f tokens/s\n"
      "device energy: %.4g J\n",
      spec.planner.prompt_tokens, spec.planner.output_tokens,
      spec.planner.batch, spec.planner.micro_batches, r.prefill_ms,
      r.decode_step_ms, r.latency_ms, r.bottleneck_ms, r.throughput_tok_s,
      r.device_joules);
  if (a.Has("out")) {
    const std::string path = a.String("out");
    ES_RETURN_IF_ERROR(WriteFileAtomically(path, PlanToYaml(plan)));
    err << "wrote " << path << "\n";
  }
  return absl::OkStatus();
}

absl::Status ClusterStatusCommand(const Args& a, std::ostream& out) {
  ES_ASSIGN_OR_RETURN(std::string address, a.RequiredString("controller"));
  ES_ASSIGN_OR_RETURN(TlsConfig tls, AdminTlsConfig(a));
  ES_ASSIGN_OR_RETURN(std::shared_ptr<const TransportSecurity> security,
                      TransportSecurity::Create(tls));
  ES_ASSIGN_OR_RETURN(
      std::shared_ptr<grpc::Channel> channel,
      security->Dial(address, ControllerIdentity(security->cluster())));
  auto stub = v1::ControllerService::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(ToChrono(absl::Now() + absl::Seconds(10)));
  v1::ClusterStatus status;
  ES_RETURN_IF_ERROR(FromGrpcStatus(
      stub->GetClusterStatus(&ctx, v1::GetClusterStatusRequest(), &status),
      "controller " + address));
  out << absl::StrFormat("%-14s %-22s %-9s %8s %11s %12s  %s\n", "node",
                         "address", "state", "sessions", "memory MiB",
                         "KV used MiB",
                         "compute (model: decode ms/block, head ms)");
  for (const v1::NodeStatus& n : status.nodes()) {
    std::string compute;
    for (const v1::ComputeProfile& c : n.compute()) {
      compute += absl::StrFormat("%s: %.3f, %.3f  ", c.model_id(),
                                 c.decode_ms_per_block(), c.head_ms());
    }
    const std::string state = n.node() == "device"  ? "reported"
                              : n.address().empty() ? "absent"
                              : n.suspected()       ? "suspect"
                              : n.alive()           ? "alive"
                                                    : "dead";
    out << absl::StrFormat(
        "%-14s %-22s %-9s %8d %11.0f %12s  %s\n", n.node(), n.address(), state,
        n.open_sessions(), MiB(n.memory_bytes()),
        n.kv_budget_bytes() > 0
            ? absl::StrFormat("%.0f/%.0f", MiB(n.kv_used_bytes()),
                              MiB(n.kv_budget_bytes()))
            : std::string("-"),
        compute);
  }
  out << absl::StrFormat("\n%-14s %-14s %9s %12s %12s\n", "link from", "to",
                         "rtt ms", "up Mbit/s", "down Mbit/s");
  for (const v1::NodeStatus& n : status.nodes()) {
    for (const v1::LinkProfile& l : n.links()) {
      out << absl::StrFormat("%-14s %-14s %9.2f %12.1f %12.1f\n", n.node(),
                             l.peer(), l.rtt_ms(), l.up_bytes_per_s() * 8e-6,
                             l.down_bytes_per_s() * 8e-6);
    }
  }
  out << "\nplans:\n";
  for (const v1::Plan& p : status.plans()) {
    std::string stages;
    for (const v1::PlanStage& s : p.stages()) {
      stages += absl::StrFormat("%s[%d,%d) ", s.node(), s.first_block(),
                                s.last_block());
    }
    out << absl::StrFormat(
        "  %s: %s%s(%s)", p.model_id(), stages, p.u_shaped() ? "U-shaped " : "",
        p.planned() ? "planned for " + p.objective() : "pinned");
    if (p.planned()) {
      out << absl::StrFormat(" predicted %.2f ms/token, %.1f ms per generation",
                             p.predicted_decode_step_ms(),
                             p.predicted_latency_ms());
    }
    out << "\n";
  }
  for (const std::string& e : status.planner_errors())
    out << "  error: " << e << "\n";
  // The adapter placement, where the controller makes one.
  auto registry = v1::AdapterRegistry::NewStub(channel);
  grpc::ClientContext placement_ctx;
  placement_ctx.set_deadline(ToChrono(absl::Now() + absl::Seconds(10)));
  v1::AdapterPlacement placement;
  absl::Status placed = FromGrpcStatus(registry->GetPlacement(
      &placement_ctx, v1::GetPlacementRequest(), &placement));
  if (placed.ok()) {
    out << "\n";
    PrintAdapterPlacement(placement, out);
  } else if (!absl::IsFailedPrecondition(placed)) {
    out << "\nadapter placement: " << placed.message() << "\n";
  }
  return absl::OkStatus();
}

}  // namespace cli
}  // namespace edgesplit
