// An in-process cluster on loopback for tests and benchmarks: a controller
// and edge servers on port 0, real gRPC between them, plans written as
// YAML files.
#ifndef EDGESPLIT_TESTS_CLUSTER_H_
#define EDGESPLIT_TESTS_CLUSTER_H_

#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "controller/controller.h"
#include "controller/controller_service.h"
#include "edge_server/server.h"
#include "grpcpp/grpcpp.h"
#include "runtime/status_macros.h"

namespace edgesplit {
namespace testing {

struct ClusterPlan {
  std::string model_id;
  std::string model_path;
  bool u_shaped = false;
  // node -> [first, last); the first entry is the device.
  std::vector<std::tuple<std::string, int64_t, int64_t>> stages;
};

class Cluster {
 public:
  // Starts a controller with `plans` and one edge server per node named in
  // them, and waits until every server applied its plans.
  static absl::StatusOr<std::unique_ptr<Cluster>> Start(
      const std::string& dir, const std::vector<ClusterPlan>& plans,
      int64_t kv_budget_bytes = int64_t{1} << 30) {
    auto c = std::unique_ptr<Cluster>(new Cluster());
    std::string config =
        "listen: 127.0.0.1:0\nheartbeat_interval_ms: 200\n"
        "dead_after_missed: 10\nnodes:\n";
    std::set<std::string> nodes;
    for (const ClusterPlan& p : plans) {
      for (auto& [node, a, b] : p.stages) {
        if (node != "device") nodes.insert(node);
      }
    }
    for (const std::string& n : nodes) {
      absl::StrAppend(&config, "  - {name: ", n, ", memory_mb: 8192}\n");
    }
    absl::StrAppend(&config, "plans:\n");
    for (const ClusterPlan& p : plans) {
      std::string yaml = absl::StrCat(
          "model: {id: ", p.model_id, ", path: ", p.model_path,
          "}\nu_shaped: ", p.u_shaped ? "true" : "false", "\nstages:\n");
      for (auto& [node, a, b] : p.stages) {
        absl::StrAppend(&yaml, "  - {node: ", node, ", blocks: [", a, ", ", b,
                        "]}\n");
      }
      const std::string file = absl::StrCat(dir, "/", p.model_id, ".yaml");
      std::ofstream(file) << yaml;
      absl::StrAppend(&config, "  - ", file, "\n");
    }
    const std::string config_file = dir + "/controller.yaml";
    std::ofstream(config_file) << config;
    ES_ASSIGN_OR_RETURN(ControllerConfig cc, LoadControllerConfig(config_file));
    c->controller_ = std::make_unique<Controller>(cc, RealClock());
    auto loaded = c->controller_->ReloadPlans();
    if (loaded.errors_size() > 0) {
      return absl::InvalidArgumentError(loaded.errors(0));
    }
    c->service_ = std::make_unique<ControllerServiceImpl>(c->controller_.get());
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(c->service_.get());
    c->grpc_ = builder.BuildAndStart();
    if (!c->grpc_ || port == 0) return absl::UnavailableError("controller");
    c->controller_address_ = absl::StrCat("127.0.0.1:", port);
    for (const std::string& n : nodes) {
      EdgeServerOptions o;
      o.host.node = n;
      o.host.kv_budget_bytes = kv_budget_bytes;
      o.controller = c->controller_address_;
      o.session_idle_timeout = absl::Seconds(60);
      ES_ASSIGN_OR_RETURN(auto server, EdgeServer::Start(o));
      c->servers_[n] = std::move(server);
    }
    for (auto& [n, s] : c->servers_) {
      if (!s->WaitForPlans(absl::Seconds(30))) {
        return absl::DeadlineExceededError(
            absl::StrCat("server ", n, " got no plans"));
      }
    }
    return c;
  }

  ~Cluster() {
    servers_.clear();
    if (grpc_) grpc_->Shutdown(absl::ToChronoTime(absl::Now()));
  }

  const std::string& controller_address() const { return controller_address_; }
  EdgeServer* server(const std::string& node) {
    return servers_.at(node).get();
  }
  // Stops a server abruptly (no drain), as a crash would.
  void Kill(const std::string& node) { servers_.erase(node); }
  Controller* controller() { return controller_.get(); }

 private:
  Cluster() = default;
  std::unique_ptr<Controller> controller_;
  std::unique_ptr<ControllerServiceImpl> service_;
  std::unique_ptr<grpc::Server> grpc_;
  std::string controller_address_;
  std::map<std::string, std::unique_ptr<EdgeServer>> servers_;
};

}  // namespace testing
}  // namespace edgesplit

#endif  // EDGESPLIT_TESTS_CLUSTER_H_
