// deploy/k8s renders (`kubectl kustomize`, with certificates from the
// cluster CA code), every object fits the Kubernetes API's schema (as the
// official JavaScript client describes it: tests/js/k8s_validate.js), and
// the pieces agree with each other and with edgesplit's own validation:
// the ConfigMaps' configs parse and validate for every replica, their
// certificate files are in the mounted Secrets, the probes hit the
// daemons' health endpoints on their HTTP ports, the servers' advertised
// names resolve through the headless Service, and the controller's nodes
// are the StatefulSet's pods.
#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "base/file_util.h"
#include "controller/controller.h"
#include "controller/plan.h"
#include "edge_server/server_config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/model_store.h"
#include "security/certs.h"
#include "testing/shell.h"
#include "testing/test_paths.h"
#include "yaml-cpp/yaml.h"

namespace edgesplit {
namespace {

namespace fs = std::filesystem;
using testing::ShellQuote;

int Port(const std::string& host_port) {
  int port = -1;
  const size_t colon = host_port.rfind(':');
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(host_port.substr(colon + 1), &port)) {
    return -1;
  }
  return port;
}

// The deploy/k8s tree copied to a temporary directory with the cluster's
// certificates (as `edgesplit certs init` writes them), rendered.
class K8sManifestsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TempDir("k8s") + "/k8s";
    fs::remove_all(dir_);
    fs::copy(testing::SourceDir() + "/deploy/k8s", dir_,
             fs::copy_options::recursive);
    ClusterCertsSpec spec;
    spec.cluster = "k8s";
    spec.nodes = {"edgesplit-server-0", "edgesplit-server-1"};
    spec.devices = {"phone"};
    spec.overwrite = true;
    ASSERT_TRUE(WriteClusterCerts(spec, dir_ + "/certs").ok());
    rendered_ = dir_ + "/../rendered.yaml";
    const std::string cmd = absl::StrCat("kubectl kustomize ", ShellQuote(dir_),
                                         " > ", ShellQuote(rendered_));
    ASSERT_EQ(std::system(cmd.c_str()), 0)
        << cmd << " (kubectl: Debian's kubernetes-client, install-deps.sh)";
    for (const YAML::Node& doc : YAML::LoadAllFromFile(rendered_)) {
      const std::string kind = doc["kind"].as<std::string>();
      const std::string name = doc["metadata"]["name"].as<std::string>();
      objects_[kind + "/" + BaseName(kind, name)] = doc;
    }
  }

  // A generated ConfigMap's or Secret's name less kustomize's hash suffix.
  static std::string BaseName(const std::string& kind,
                              const std::string& name) {
    if (kind != "ConfigMap" && kind != "Secret") return name;
    return name.substr(0, name.rfind('-'));
  }
  const YAML::Node& Object(const std::string& id) {
    static const YAML::Node kNone;
    auto it = objects_.find(id);
    EXPECT_NE(it, objects_.end()) << "no " << id << " in " << rendered_;
    return it == objects_.end() ? kNone : it->second;
  }
  // The data of the ConfigMap or Secret a pod volume names.
  YAML::Node VolumeData(const YAML::Node& pod, const std::string& volume) {
    for (const YAML::Node& v : pod["volumes"]) {
      if (v["name"].as<std::string>() != volume) continue;
      const bool map = bool(v["configMap"]);
      const std::string name =
          map ? v["configMap"]["name"].as<std::string>()
              : v["secret"]["secretName"].as<std::string>();
      for (const auto& [id, doc] : objects_) {
        if (doc["metadata"]["name"].as<std::string>() == name) {
          return doc["data"];
        }
      }
      ADD_FAILURE() << "volume " << volume << " names " << name
                    << ", which is not rendered";
    }
    ADD_FAILURE() << "no volume " << volume;
    return YAML::Node();
  }
  // Where `container` mounts `volume`.
  static std::string MountPath(const YAML::Node& container,
                               const std::string& volume) {
    for (const YAML::Node& m : container["volumeMounts"]) {
      if (m["name"].as<std::string>() == volume) {
        return m["mountPath"].as<std::string>();
      }
    }
    return "";
  }
  static int ContainerPort(const YAML::Node& container,
                           const std::string& name) {
    for (const YAML::Node& p : container["ports"]) {
      if (p["name"].as<std::string>() == name) {
        return p["containerPort"].as<int>();
      }
    }
    return -1;
  }
  // Probes on the daemon's health endpoints through its named HTTP port,
  // resources requested, every mount backed by a volume.
  void ExpectRunnable(const YAML::Node& pod, const YAML::Node& c, int http_port,
                      const std::set<std::string>& claims) {
    EXPECT_EQ(c["livenessProbe"]["httpGet"]["path"].as<std::string>(),
              "/healthz");
    EXPECT_EQ(c["readinessProbe"]["httpGet"]["path"].as<std::string>(),
              "/readyz");
    for (const char* probe : {"livenessProbe", "readinessProbe"}) {
      EXPECT_EQ(c[probe]["httpGet"]["port"].as<std::string>(), "http");
    }
    EXPECT_EQ(ContainerPort(c, "http"), http_port);
    EXPECT_TRUE(c["resources"]["requests"]["cpu"]);
    EXPECT_TRUE(c["resources"]["requests"]["memory"]);
    std::set<std::string> volumes = claims;
    for (const YAML::Node& v : pod["volumes"]) {
      volumes.insert(v["name"].as<std::string>());
    }
    for (const YAML::Node& m : c["volumeMounts"]) {
      EXPECT_EQ(volumes.count(m["name"].as<std::string>()), 1u)
          << m["name"].as<std::string>();
    }
  }
  // The file a config names is in the mounted Secret.
  void ExpectMounted(const YAML::Node& c, const YAML::Node& secret_data,
                     const std::string& path) {
    const std::string dir = MountPath(c, "certs");
    ASSERT_EQ(path.rfind(dir + "/", 0), 0u) << path << " not under " << dir;
    EXPECT_TRUE(secret_data[path.substr(dir.size() + 1)]) << path;
  }
  // `data` (a ConfigMap's) written out as the files a pod would see.
  std::string WriteConfigMap(const YAML::Node& data, const std::string& sub) {
    const std::string d = dir_ + "/../" + sub;
    fs::create_directories(d);
    for (const auto& kv : data) {
      std::string text = kv.second.as<std::string>();
      // Models live on the models volume; here, in ../shared.
      text = absl::StrReplaceAll(
          text, {{"/models/", testing::SharedDir() + "/models/"}});
      EXPECT_TRUE(
          WriteFileAtomically(d + "/" + kv.first.as<std::string>(), text).ok());
    }
    return d;
  }

  std::string dir_, rendered_;
  std::map<std::string, YAML::Node> objects_;
};

TEST_F(K8sManifestsTest, ObjectsFitTheApiSchemas) {
  const std::string js = testing::SourceDir() + "/tests/js";
  ASSERT_TRUE(fs::exists(js + "/node_modules/@kubernetes/client-node"))
      << "run `npm ci --prefix tests/js`";
  const std::string out = rendered_ + ".check";
  const std::string cmd =
      absl::StrCat("node ", ShellQuote(js + "/k8s_validate.js"), " ",
                   ShellQuote(rendered_), " > ", ShellQuote(out));
  EXPECT_EQ(std::system(cmd.c_str()), 0) << *ReadFile(out);
  // The checker fails on what the API would refuse.
  const std::string bad = rendered_ + ".bad";
  std::string text = *ReadFile(rendered_);
  text = absl::StrReplaceAll(text, {{"  replicas: 2", "  replica: 2"}});
  ASSERT_TRUE(WriteFileAtomically(bad, text).ok());
  const std::string bad_cmd =
      absl::StrCat("node ", ShellQuote(js + "/k8s_validate.js"), " ",
                   ShellQuote(bad), " > ", ShellQuote(out));
  EXPECT_NE(std::system(bad_cmd.c_str()), 0);
  EXPECT_THAT(*ReadFile(out),
              ::testing::HasSubstr("spec.replica: no such field"));
}

TEST_F(K8sManifestsTest, ControllerConfigValidatesAndMatchesItsPod) {
  const YAML::Node& deploy = Object("Deployment/edgesplit-controller");
  const YAML::Node pod = deploy["spec"]["template"]["spec"];
  const YAML::Node c = pod["containers"][0];
  const std::string etc = WriteConfigMap(VolumeData(pod, "config"), "etc-c");
  auto config = LoadControllerConfig(etc + "/controller.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(MountPath(c, "config") + "/controller.yaml",
            c["command"][2].as<std::string>());
  ExpectRunnable(pod, c, Port(config->http_listen), {});
  EXPECT_EQ(ContainerPort(c, "grpc"), Port(config->listen));
  const YAML::Node secret = VolumeData(pod, "certs");
  ExpectMounted(c, secret, config->tls.ca_file);
  ExpectMounted(c, secret, config->tls.cert_file);
  ExpectMounted(c, secret, config->tls.key_file);
  ExpectMounted(c, secret, config->grant_key_file);
  EXPECT_FALSE(secret["ca.key"]) << "the CA key must not leave the CA";
  EXPECT_EQ(MountPath(c, "state"), config->state_dir);
  // State survives the pod: on a claim the kustomization creates.
  for (const YAML::Node& v : pod["volumes"]) {
    if (v["name"].as<std::string>() != "state") continue;
    const std::string claim =
        v["persistentVolumeClaim"]["claimName"].as<std::string>();
    Object("PersistentVolumeClaim/" + claim);
  }
  // Its plans validate against the model the models volume holds.
  std::map<std::string, NodeConfig> nodes;
  for (const NodeConfig& n : config->nodes) nodes[n.name] = n;
  ASSERT_FALSE(config->plan_files.empty());
  for (const std::string& file : config->plan_files) {
    auto plan = LoadPlanFile(file);
    ASSERT_TRUE(plan.ok()) << plan.status();
    auto store = ModelStore::Open(plan->model_path);
    ASSERT_TRUE(store.ok()) << store.status();
    EXPECT_TRUE(ValidatePlan(*plan, (*store)->config(), nodes).ok());
  }
  // The Service reaches both ports.
  const YAML::Node& svc = Object("Service/edgesplit-controller");
  std::set<std::string> targets;
  for (const YAML::Node& p : svc["spec"]["ports"]) {
    targets.insert(p["targetPort"].as<std::string>());
  }
  EXPECT_EQ(targets, (std::set<std::string>{"grpc", "http"}));
}

TEST_F(K8sManifestsTest, EveryServerReplicaHasItsOwnValidIdentity) {
  const YAML::Node& set = Object("StatefulSet/edgesplit-server");
  const YAML::Node pod = set["spec"]["template"]["spec"];
  const YAML::Node c = pod["containers"][0];
  const std::string etc = WriteConfigMap(VolumeData(pod, "config"), "etc-s");
  const std::string service = set["spec"]["serviceName"].as<std::string>();
  const YAML::Node& headless = Object("Service/" + service);
  EXPECT_EQ(headless["spec"]["clusterIP"].as<std::string>(), "None");
  // The controller's nodes are exactly the pods.
  const std::string cetc = WriteConfigMap(
      VolumeData(
          Object("Deployment/edgesplit-controller")["spec"]["template"]["spec"],
          "config"),
      "etc-c2");
  auto controller = LoadControllerConfig(cetc + "/controller.yaml");
  ASSERT_TRUE(controller.ok()) << controller.status();
  const int replicas = set["spec"]["replicas"].as<int>();
  ASSERT_EQ(controller->nodes.size(), static_cast<size_t>(replicas));
  std::set<std::string> claims;
  for (const YAML::Node& t : set["spec"]["volumeClaimTemplates"]) {
    claims.insert(t["metadata"]["name"].as<std::string>());
  }
  const YAML::Node secret = VolumeData(pod, "certs");
  EXPECT_FALSE(secret["ca.key"]);
  // `--name $(POD_NAME)`: the pod's name is its node name.
  const YAML::Node cmd = c["command"];
  ASSERT_GE(cmd.size(), 5u);
  EXPECT_EQ(cmd[3].as<std::string>(), "--name");
  EXPECT_EQ(cmd[4].as<std::string>(), "$(POD_NAME)");
  EXPECT_EQ(c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"].as<std::string>(),
            "metadata.name");
  for (int i = 0; i < replicas; ++i) {
    const std::string name =
        absl::StrCat(set["metadata"]["name"].as<std::string>(), "-", i);
    SCOPED_TRACE(name);
    EXPECT_EQ(controller->nodes[i].name, name);
    auto config = LoadServerConfig(etc + "/server.yaml");
    ASSERT_TRUE(config.ok()) << config.status();
    config->name = name;
    config->ExpandName();
    ASSERT_TRUE(config->Validate().ok()) << config->Validate();
    ExpectRunnable(pod, c, Port(config->http_listen), claims);
    EXPECT_EQ(c["imagePullPolicy"].as<std::string>(), "IfNotPresent");
    EXPECT_EQ(ContainerPort(c, "grpc"), Port(config->listen));
    ExpectMounted(c, secret, config->tls.ca_file);
    ExpectMounted(c, secret, config->tls.cert_file);
    ExpectMounted(c, secret, config->tls.key_file);
    // Others reach it by its per-pod DNS name; it reaches the controller
    // through its Service.
    EXPECT_EQ(config->advertise,
              absl::StrCat(name, ".", service, ":", Port(config->listen)));
    EXPECT_EQ(config->controller,
              absl::StrCat("edgesplit-controller:", Port(controller->listen)));
    // Checkpoints survive the pod: on its claim.
    EXPECT_EQ(MountPath(c, "checkpoints"), config->checkpoint_dir);
    EXPECT_EQ(claims.count("checkpoints"), 1u);
    // SIGTERM drains before Kubernetes kills.
    EXPECT_GT(pod["terminationGracePeriodSeconds"].as<int>(),
              absl::ToInt64Seconds(config->drain_deadline));
  }
}

}  // namespace
}  // namespace edgesplit
