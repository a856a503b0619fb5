// An in-process cluster on loopback for tests and benchmarks: a controller
// and edge servers on port 0, real gRPC between them (mutual TLS with a
// fresh cluster CA unless ClusterOptions.tls is false), plans written as
// YAML files.
#ifndef EDGESPLIT_TESTING_CLUSTER_H_
#define EDGESPLIT_TESTING_CLUSTER_H_

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "base/file_util.h"
#include "base/status_macros.h"
#include "controller/adapter_service.h"
#include "controller/controller.h"
#include "controller/controller_service.h"
#include "controller/status_page.h"
#include "edge_server/server.h"
#include "grpcpp/grpcpp.h"
#include "proto/health.h"
#include "security/certs.h"
#include "security/grant.h"
#include "security/tls.h"
#include "security/token.h"
#include "testing/link_emulator.h"

namespace edgesplit {
namespace testing {

// Extra knobs: automatic plans, more servers, emulated links.
struct ClusterOptions {
  int64_t kv_budget_bytes = int64_t{1} << 30;
  int heartbeat_ms = 200;
  int dead_after_missed = 10;
  // Servers started besides those the pinned plans name.
  std::vector<std::string> servers;
  // Plan files with a `planner:` section (whole YAML texts).
  std::vector<std::string> auto_plans;
  // Emulated links in front of a server, up = towards the server: the
  // device reaches it through `device_links`, other servers through
  // `peer_links` (its advertised and peer addresses).
  std::map<std::string, LinkSpec> device_links;
  std::map<std::string, LinkSpec> peer_links;
  bool profile = true;  // Servers measure compute and links.
  std::string default_link = "{mbit_s: 1000, rtt_ms: 1}";
  // Weight type every server runs its stages with.
  std::optional<kernels::WeightType> weights;
  // Mutual TLS everywhere (certificates in <dir>/certs, cluster "test");
  // false: plaintext on loopback.
  bool tls = true;
  // Without TLS: still sign route grants (servers check those they get).
  bool plaintext_grants = false;
  // The controller and servers also accept device bearer tokens.
  bool device_tokens = false;
  // Appended to the controller's YAML (devices:, revoked_tokens:, ...).
  std::string controller_yaml;
  // The controller's startup grace (0: servers follow every update at
  // once, as the tests that kill servers expect).
  int startup_grace_s = 0;
  // Every server's session limits.
  AdmissionLimits admission;
  // Keepalive of the controller's and servers' connections.
  int keepalive_s = 10;
  // Servers that reach the controller through an emulated link (so that
  // Silence() can stop their heartbeats too).
  std::set<std::string> controller_links;
  // Every server's adapter directory (AdapterCacheOptions::dir); "{node}"
  // becomes the server's name.
  std::string adapter_dir;
  // Every server's EdgeServerOptions::adapter_disk_bytes.
  int64_t adapter_disk_bytes = 0;
  // Every server's EdgeServerOptions::model_dir (model copies plans name);
  // "{node}" becomes the server's name.
  std::string model_dir;
  // Every server opens its HTTP port (/healthz, /readyz, /metrics) on a
  // free port, and so does the controller (with its status page:
  // controller_http_port()).
  bool http = false;
  // EdgeServerOptions::adapter_prefetch_interval of every server.
  absl::Duration adapter_prefetch_interval = absl::Seconds(30);
  // Sees every stage request each server receives (node, request), on
  // gRPC threads: must be thread-safe.
  std::function<void(const std::string&, const v1::StageRequest&)> request_tap;
};

struct ClusterPlan {
  std::string model_id;
  std::string model_path;
  bool u_shaped = false;
  // node -> [first, last); the first entry is the device.
  std::vector<std::tuple<std::string, int64_t, int64_t>> stages;
  // node -> the plan's weight type for its stage (absent: the node's own).
  std::map<std::string, std::string> weights = {};
  // node -> standby nodes for its stage (started as servers too).
  std::map<std::string, std::vector<std::string>> standby = {};
  // Appended to the plan's YAML (e.g. a `privacy:` section).
  std::string extra_yaml = "";
  // The plan's `model: {copy: }`: servers fetch this registered copy.
  std::string model_copy = "";
};

class Cluster {
 public:
  // Starts a controller with `plans` and one edge server per node named in
  // them, and waits until every server applied its plans.
  static absl::StatusOr<std::unique_ptr<Cluster>> Start(
      const std::string& dir, const std::vector<ClusterPlan>& plans,
      int64_t kv_budget_bytes = int64_t{1} << 30) {
    ClusterOptions options;
    options.kv_budget_bytes = kv_budget_bytes;
    return Start(dir, plans, options);
  }

  static absl::StatusOr<std::unique_ptr<Cluster>> Start(
      const std::string& dir, const std::vector<ClusterPlan>& plans,
      const ClusterOptions& options) {
    auto c = std::unique_ptr<Cluster>(new Cluster());
    std::set<std::string> nodes(options.servers.begin(), options.servers.end());
    for (const ClusterPlan& p : plans) {
      for (auto& [node, a, b] : p.stages) {
        if (node != "device") nodes.insert(node);
      }
      for (const auto& [node, standby] : p.standby) {
        nodes.insert(standby.begin(), standby.end());
      }
    }
    c->tls_ = options.tls;
    c->http_ = options.http;
    c->certs_ = dir + "/certs";
    std::string tls_yaml = "insecure: true\n";
    if (options.tls) {
      ClusterCertsSpec spec;
      spec.cluster = "test";
      spec.nodes.assign(nodes.begin(), nodes.end());
      spec.overwrite = true;
      ES_RETURN_IF_ERROR(WriteClusterCerts(spec, c->certs_));
      tls_yaml = absl::StrCat(
          "tls: {ca: ", c->certs_, "/ca.pem, cert: ", c->certs_,
          "/controller.pem, key: ", c->certs_, "/controller.key, reload_s: 1",
          options.device_tokens ? ", device_tokens: true" : "",
          "}\ngrant_key: ", c->certs_, "/grant.key\n");
    } else if (options.plaintext_grants) {
      // Plaintext, but the controller still signs routes and the servers
      // check grants they are sent (for measuring what grants cost).
      std::filesystem::create_directories(c->certs_);
      ES_ASSIGN_OR_RETURN(GrantKeyPair pair, NewGrantKeyPair());
      ES_RETURN_IF_ERROR(WriteFileAtomically(c->certs_ + "/grant.key",
                                             pair.private_pem, 0600));
      absl::StrAppend(&tls_yaml, "grant_key: ", c->certs_, "/grant.key\n");
    }
    c->grants_ = options.tls || options.plaintext_grants;
    std::string config = absl::StrCat(
        tls_yaml,
        "listen: 127.0.0.1:0\nheartbeat_interval_ms: ", options.heartbeat_ms,
        "\ndead_after_missed: ", options.dead_after_missed,
        "\nstartup_grace_s: ", options.startup_grace_s,
        "\nkeepalive_s: ", options.keepalive_s, "\nstate_dir: ", dir,
        "/controller-state", "\ndefault_link: ", options.default_link,
        "\nnodes:\n");
    for (const std::string& n : nodes) {
      absl::StrAppend(&config, "  - {name: ", n, ", memory_mb: 8192}\n");
    }
    absl::StrAppend(&config, "plans:\n");
    for (const ClusterPlan& p : plans) {
      std::string yaml = absl::StrCat(
          "model: {id: ", p.model_id, ", path: ", p.model_path,
          p.model_copy.empty() ? "" : ", copy: " + p.model_copy,
          "}\nu_shaped: ", p.u_shaped ? "true" : "false", "\nstages:\n");
      for (auto& [node, a, b] : p.stages) {
        auto w = p.weights.find(node);
        auto sb = p.standby.find(node);
        absl::StrAppend(
            &yaml, "  - {node: ", node, ", blocks: [", a, ", ", b, "]",
            w == p.weights.end() ? "" : ", weights: " + w->second,
            sb == p.standby.end()
                ? ""
                : ", standby: [" + absl::StrJoin(sb->second, ", ") + "]",
            "}\n");
      }
      absl::StrAppend(&yaml, p.extra_yaml);
      const std::string file = absl::StrCat(dir, "/", p.model_id, ".yaml");
      std::ofstream(file) << yaml;
      absl::StrAppend(&config, "  - ", file, "\n");
    }
    for (size_t i = 0; i < options.auto_plans.size(); ++i) {
      const std::string file = absl::StrCat(dir, "/auto", i, ".yaml");
      std::ofstream(file) << options.auto_plans[i];
      absl::StrAppend(&config, "  - ", file, "\n");
    }
    absl::StrAppend(&config, options.controller_yaml);
    c->controller_config_ = dir + "/controller.yaml";
    std::ofstream(c->controller_config_) << config;
    ES_RETURN_IF_ERROR(c->StartController("127.0.0.1:0"));
    for (const std::string& n : nodes) {
      EdgeServerOptions o;
      o.host.node = n;
      o.host.kv_budget_bytes = options.kv_budget_bytes;
      o.host.stage.weights = options.weights;
      o.host.adapters.dir =
          absl::StrReplaceAll(options.adapter_dir, {{"{node}", n}});
      o.model_dir = absl::StrReplaceAll(options.model_dir, {{"{node}", n}});
      o.adapter_disk_bytes = options.adapter_disk_bytes;
      o.adapter_prefetch_interval = options.adapter_prefetch_interval;
      if (options.http) o.http_listen = "127.0.0.1:0";
      if (options.request_tap) {
        o.request_tap = [tap = options.request_tap,
                         n](const v1::StageRequest& r) { tap(n, r); };
      }
      o.controller = c->controller_address_;
      if (options.controller_links.count(n) > 0) {
        ES_ASSIGN_OR_RETURN(
            c->controller_links_[n],
            LinkEmulator::Start(c->controller_address_, LinkSpec{}));
        o.controller = c->controller_links_[n]->address();
      }
      o.session_idle_timeout = absl::Seconds(60);
      o.admission = options.admission;
      o.profile = options.profile;
      o.checkpoint_dir = absl::StrCat(dir, "/checkpoints-", n);
      TlsConfig tls = c->Tls("node-" + n);
      tls.device_tokens = options.tls && options.device_tokens;
      tls.keepalive = absl::Seconds(options.keepalive_s);
      ES_ASSIGN_OR_RETURN(o.security, TransportSecurity::Create(tls));
      std::optional<ReservedPort> reserved;
      auto device_link = options.device_links.find(n);
      auto peer_link = options.peer_links.find(n);
      if (device_link != options.device_links.end() ||
          peer_link != options.peer_links.end()) {
        // The relays must know the server's port before the server
        // registers their addresses.
        ES_ASSIGN_OR_RETURN(reserved, ReservedPort::Reserve());
        o.listen = reserved->address();
        if (device_link != options.device_links.end()) {
          ES_ASSIGN_OR_RETURN(
              c->links_[n], LinkEmulator::Start(o.listen, device_link->second));
          o.advertise = c->links_[n]->address();
        }
        if (peer_link != options.peer_links.end()) {
          ES_ASSIGN_OR_RETURN(c->peer_links_[n],
                              LinkEmulator::Start(o.listen, peer_link->second));
          o.advertise_peer = c->peer_links_[n]->address();
        }
      }
      ES_ASSIGN_OR_RETURN(auto server, EdgeServer::Start(o));
      reserved.reset();  // The server listens on it now.
      c->servers_[n] = std::move(server);
      c->server_options_[n] = o;
    }
    for (auto& [n, s] : c->servers_) {
      if (!s->WaitForPlans(absl::Seconds(30))) {
        return absl::DeadlineExceededError(
            absl::StrCat("server ", n, " got no plans"));
      }
    }
    // Automatic plans exist once the servers' profiles arrived.
    const size_t expected = plans.size() + options.auto_plans.size();
    for (absl::Time until = absl::Now() + absl::Seconds(60);;) {
      auto all = c->controller_->GetPlan("");
      if (all.ok() && static_cast<size_t>(all->plans_size()) == expected) break;
      if (absl::Now() > until) {
        return absl::DeadlineExceededError("automatic plans never appeared");
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    return c;
  }

  // The emulated device link in front of `node` (null if none).
  LinkEmulator* link(const std::string& node) {
    auto it = links_.find(node);
    return it == links_.end() ? nullptr : it->second.get();
  }
  // The emulated link other servers reach `node` through (null if none).
  LinkEmulator* peer_link(const std::string& node) {
    auto it = peer_links_.find(node);
    return it == peer_links_.end() ? nullptr : it->second.get();
  }

  // Makes `node` silent, as a stopped process is: its connections stay
  // open but nothing more crosses its emulated links (device, peer and
  // controller links; those it has).
  void Silence(const std::string& node) {
    LinkSpec silent;
    silent.one_way_delay = absl::Hours(1);
    SetNodeLinks(node, silent);
  }

  // Undoes Silence() for connections made from now on. Data already sent
  // into the silence stays there: keepalive ends those connections.
  void Unsilence(const std::string& node) { SetNodeLinks(node, LinkSpec{}); }

  ~Cluster() {
    servers_.clear();
    links_.clear();
    peer_links_.clear();
    controller_links_.clear();
    if (grpc_) grpc_->Shutdown(absl::ToChronoTime(absl::Now()));
  }

  const std::string& controller_address() const { return controller_address_; }
  EdgeServer* server(const std::string& node) {
    return servers_.at(node).get();
  }
  // Stops a server abruptly (no drain), as a crash would.
  void Kill(const std::string& node) { servers_.erase(node); }
  // Starts a killed server again (same name, options and checkpoints; a
  // new port unless emulated links fixed it) and waits for its plans
  // (unless `wait_for_plans` is false).
  absl::Status Restart(const std::string& node, bool wait_for_plans = true) {
    ES_ASSIGN_OR_RETURN(auto server,
                        EdgeServer::Start(server_options_.at(node)));
    if (wait_for_plans && !server->WaitForPlans(absl::Seconds(30))) {
      return absl::DeadlineExceededError(
          absl::StrCat("restarted server ", node, " got no plans"));
    }
    servers_[node] = std::move(server);
    return absl::OkStatus();
  }
  Controller* controller() { return controller_.get(); }
  // The controller's HTTP port (ClusterOptions::http), else 0.
  int controller_http_port() const {
    return controller_http_ == nullptr ? 0 : controller_http_->port();
  }
  AdapterServiceImpl* adapter_service() { return adapter_service_.get(); }
  // Stops the controller abruptly (its state is lost, as in a crash) and
  // starts a new one from the same config on the same address. Servers
  // reconnect by themselves.
  absl::Status RestartController() {
    StopController();
    return StartController(controller_address_);
  }
  // The controller gone (as a crashed one): its port refuses connections.
  void StopController() {
    controller_http_.reset();
    if (grpc_) grpc_->Shutdown(absl::ToChronoTime(absl::Now()));
    grpc_.reset();
    adapter_service_.reset();
    model_copies_.reset();
    registry_.reset();
    service_.reset();
    adapter_demand_.reset();
    controller_.reset();
  }

  // The TLS files of `stem` ("device-d1", "admin-operator", "node-x"),
  // issued from the cluster CA on first use; insecure when !tls.
  TlsConfig Tls(const std::string& stem) const {
    TlsConfig t;
    if (!tls_) {
      t.insecure = true;
      return t;
    }
    t.ca_file = certs_ + "/ca.pem";
    t.cert_file = certs_ + "/" + stem + ".pem";
    t.key_file = certs_ + "/" + stem + ".key";
    t.reload_interval = absl::Seconds(1);
    return t;
  }
  // A device's TLS settings in DeviceAgentOptions (`name`'s certificate is
  // issued when missing).
  template <typename DeviceOptions>
  void SecureDevice(const std::string& name, DeviceOptions* o) const {
    o->insecure = !tls_;
    if (!tls_) return;
    EnsureDeviceCert(name);
    const TlsConfig t = Tls("device-" + name);
    o->tls.ca_file = t.ca_file;
    o->tls.cert_file = t.cert_file;
    o->tls.key_file = t.key_file;
  }
  // A device that authenticates with a bearer token (issued now, valid
  // for `ttl`) instead of a certificate; returns the token's id.
  template <typename DeviceOptions>
  std::string TokenDevice(const std::string& name, DeviceOptions* o,
                          absl::Duration ttl = absl::Hours(1)) const {
    auto signer = GrantSigner::FromPemFile(certs_ + "/grant.key");
    if (!signer.ok()) std::abort();
    auto token = IssueDeviceToken(**signer, "test", name, ttl, absl::Now());
    const std::string file = certs_ + "/device-" + name + ".token";
    if (!token.ok() || !WriteFileAtomically(file, *token, 0600).ok()) {
      std::abort();
    }
    o->insecure = false;
    o->tls.ca_file = certs_ + "/ca.pem";
    o->tls.cert_file.clear();
    o->tls.key_file.clear();
    o->tls.token_file = file;
    return ParseDeviceToken(*token)->token_id();
  }
  // A channel to `address` (the node `node`, or the controller when
  // `node` is empty) as `stem`'s holder.
  std::shared_ptr<grpc::Channel> Dial(const std::string& stem,
                                      const std::string& address,
                                      const std::string& node = "") const {
    if (tls_ && !std::ifstream(Tls(stem).cert_file).good()) {
      std::abort();  // Issue devices with SecureDevice first.
    }
    auto security = TransportSecurity::Create(Tls(stem));
    if (!security.ok()) std::abort();
    const std::string cluster = (*security)->cluster();
    auto channel =
        (*security)->Dial(address, node.empty() ? ControllerIdentity(cluster)
                                                : NodeIdentity(cluster, node));
    if (!channel.ok()) std::abort();
    return *channel;
  }
  // Device `name`'s transport security (its certificate issued if missing).
  std::shared_ptr<const TransportSecurity> DeviceSecurity(
      const std::string& name) const {
    if (tls_) EnsureDeviceCert(name);
    auto s = TransportSecurity::Create(Tls("device-" + name));
    if (!s.ok()) std::abort();
    return *s;
  }
  // What the controller would grant device `device` for this session (for
  // tests that open streams themselves); empty without TLS.
  v1::SignedGrant Grant(const std::string& session_id,
                        const std::string& model_id,
                        const std::vector<v1::Hop>& route,
                        v1::Codec codec = v1::CODEC_FP32,
                        bool return_hidden = false,
                        const std::string& training_job = "",
                        const std::string& device = "device") const {
    v1::OpenSession open;
    open.set_session_id(session_id);
    open.set_model_id(model_id);
    open.set_codec(codec);
    for (const v1::Hop& h : route) *open.add_route() = h;
    open.set_return_hidden(return_hidden);
    open.mutable_training()->set_job_id(training_job);
    return Grant(open, device);
  }
  // The grant for exactly this OpenSession (its route as given).
  v1::SignedGrant Grant(const v1::OpenSession& open,
                        const std::string& device = "device") const {
    if (!grants_) return v1::SignedGrant();
    v1::RouteGrant g;
    g.set_version(1);
    g.set_session_id(open.session_id());
    g.set_device(device);
    g.set_model_id(open.model_id());
    g.set_adapter(open.adapter());
    g.set_codec(open.codec());
    *g.mutable_route() = open.route();
    g.set_return_hidden(open.return_hidden());
    g.set_training_job(open.training().job_id());
    g.set_expires_unix_ms(absl::ToUnixMillis(absl::Now() + absl::Hours(1)));
    auto signer = GrantSigner::FromPemFile(certs_ + "/grant.key");
    if (!signer.ok()) std::abort();
    return *(*signer)->Sign(g);
  }
  const std::string& certs_dir() const { return certs_; }

 private:
  // Every emulated link `node` has (device, peer, controller) to `spec`.
  void SetNodeLinks(const std::string& node, const LinkSpec& spec) {
    for (auto* links : {&links_, &peer_links_, &controller_links_}) {
      auto it = links->find(node);
      if (it != links->end()) it->second->SetSpec(spec);
    }
  }
  // Issues device `name`'s certificate from the cluster CA unless it exists.
  void EnsureDeviceCert(const std::string& name) const {
    if (std::ifstream(Tls("device-" + name).cert_file).good()) return;
    const absl::Status s =
        IssueIntoDir(certs_, DeviceIdentity("test", name), 1, false);
    if (!s.ok()) std::abort();  // The cluster's own CA: cannot fail.
  }

  Cluster() = default;

  // The controller from controller_config_, listening on `address`.
  absl::Status StartController(const std::string& address) {
    ES_ASSIGN_OR_RETURN(ControllerConfig cc,
                        LoadControllerConfig(controller_config_));
    controller_ = std::make_unique<Controller>(cc, RealClock());
    ES_RETURN_IF_ERROR(controller_->LoadGrantKey());
    ES_RETURN_IF_ERROR(controller_->LoadState());
    auto loaded = controller_->ReloadPlans();
    if (loaded.errors_size() > 0) {
      return absl::InvalidArgumentError(loaded.errors(0));
    }
    ES_ASSIGN_OR_RETURN(controller_security_,
                        TransportSecurity::Create(cc.tls));
    service_ = std::make_unique<ControllerServiceImpl>(
        controller_.get(), controller_security_.get());
    adapter_demand_ =
        std::make_unique<AdapterDemand>(cc.adapter_placement.half_life);
    if (cc.adapter_placement.enabled()) {
      service_->set_adapter_demand(adapter_demand_.get());
    }
    ES_ASSIGN_OR_RETURN(registry_, AdapterRegistry::Open(cc.state_dir));
    adapter_service_ = std::make_unique<AdapterServiceImpl>(
        controller_.get(), registry_.get(), controller_security_.get(),
        cc.adapter_placement, adapter_demand_.get());
    ES_ASSIGN_OR_RETURN(model_copies_, ModelCopyRegistry::Open(cc.state_dir));
    adapter_service_->set_model_copies(model_copies_.get());
    EnableHealthService();
    grpc::ServerBuilder builder;
    int port = 0;
    ES_ASSIGN_OR_RETURN(auto credentials,
                        controller_security_->ServerCredentials(address));
    builder.AddListeningPort(address, credentials, &port);
    builder.RegisterService(service_.get());
    builder.RegisterService(adapter_service_.get());
    builder.RegisterService(adapter_service_->blob_service());
    controller_security_->ConfigureServer(&builder);
    builder.SetMaxReceiveMessageSize(kMaxControllerMessageBytes);
    builder.SetMaxSendMessageSize(kMaxControllerMessageBytes);
    grpc_ = builder.BuildAndStart();
    if (!grpc_ || port == 0) {
      return absl::UnavailableError(absl::StrCat("controller on ", address));
    }
    controller_address_ = absl::StrCat("127.0.0.1:", port);
    if (http_) {
      ES_ASSIGN_OR_RETURN(controller_http_,
                          StartControllerHttp("127.0.0.1:0", controller_.get(),
                                              [] { return true; }));
    }
    return absl::OkStatus();
  }

  bool tls_ = true;
  bool grants_ = true;
  bool http_ = false;
  std::string certs_;
  std::string controller_config_;
  std::shared_ptr<const TransportSecurity> controller_security_;
  std::unique_ptr<Controller> controller_;
  std::unique_ptr<OpsHttp> controller_http_;       // Reads controller_.
  std::unique_ptr<AdapterDemand> adapter_demand_;  // Outlives the services.
  std::unique_ptr<ControllerServiceImpl> service_;
  std::unique_ptr<AdapterRegistry> registry_;
  std::unique_ptr<ModelCopyRegistry> model_copies_;
  std::unique_ptr<AdapterServiceImpl> adapter_service_;
  std::unique_ptr<grpc::Server> grpc_;
  std::string controller_address_;
  std::map<std::string, std::unique_ptr<EdgeServer>> servers_;
  std::map<std::string, EdgeServerOptions> server_options_;
  std::map<std::string, std::unique_ptr<LinkEmulator>> links_;
  std::map<std::string, std::unique_ptr<LinkEmulator>> peer_links_;
  std::map<std::string, std::unique_ptr<LinkEmulator>> controller_links_;
};

}  // namespace testing
}  // namespace edgesplit

#endif  // EDGESPLIT_TESTING_CLUSTER_H_
