// Many LoRA adapters over one shared base, served split: sessions naming
// different adapters (and none) run at once through the same servers,
// whose batches mix them, and each generates exactly what the whole model
// with its adapter generates in one process.
#include <cstring>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/file_util.h"
#include "delivery/model_pack.h"
#include "device_agent/cli/commands.h"
#include "edgesplit/v1/delivery.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "openai/agent_backend.h"
#include "runtime/generator.h"
#include "runtime/lora.h"
#include "testing/cluster.h"
#include "testing/test_paths.h"
#include "tests/split_util.h"

namespace edgesplit {
namespace {

using ::edgesplit::testing::Cluster;
using ::edgesplit::testing::ClusterPlan;
using ::testing::HasSubstr;

constexpr char kPrompt[] = "Once upon a time";
constexpr int kTokens = 24;

std::string RealModel() { return testing::SharedDir() + "/models/stories260K"; }

// Runs `edgesplit <args> --certs ... --controller ...` as the cluster's
// admin; its output, or a test failure naming its error.
std::string AdminCli(Cluster& c, std::vector<std::string> args) {
  args.insert(args.end(), {"--certs", c.certs_dir(), "--controller",
                           c.controller_address()});
  std::ostringstream out, err;
  const int code = cli::Run(args, out, err);
  EXPECT_EQ(code, 0) << err.str();
  return out.str();
}

// Greedy tokens of the whole model (`model_dir`) with `adapter_dir`
// attached ("" = none).
std::vector<int32_t> WholeWithAdapter(const std::string& adapter_dir,
                                      const std::string& model_dir = "") {
  auto store = ModelStore::Open(model_dir.empty() ? RealModel() : model_dir);
  EXPECT_TRUE(store.ok());
  auto tok = (*store)->LoadTokenizer();
  auto pipeline = LocalPipeline::Load(**store, {});
  EXPECT_TRUE(tok.ok() && pipeline.ok());
  std::string name;
  if (!adapter_dir.empty()) {
    auto a = LoraAdapter::LoadPeft(adapter_dir, (*store)->config(), "x");
    EXPECT_TRUE(a.ok()) << a.status();
    name = "x";
    EXPECT_TRUE((*pipeline)->AttachAdapter(std::move(*a)).ok());
  }
  auto seq = (*pipeline)->NewSequence(nullptr, name);
  GenerationOptions o;
  o.sampling.temperature = 0;
  o.max_new_tokens = kTokens;
  o.stop_at_eos = false;
  auto r = Generate(*seq, **tok, kPrompt, o);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? r->tokens : std::vector<int32_t>{};
}

// A fully fine-tuned variant of the real model written to `out`: tensor
// `changed` halved, every other tensor and file the same bytes.
void WriteTunedVariant(const std::string& out, const std::string& changed) {
  std::filesystem::create_directories(out);
  for (const auto& e : std::filesystem::directory_iterator(RealModel())) {
    auto bytes = ReadFile(e.path().string());
    ASSERT_TRUE(bytes.ok());
    const std::string name = e.path().filename().string();
    if (name == "model.safetensors") {
      uint64_t n = 0;
      std::memcpy(&n, bytes->data(), 8);
      const auto header = nlohmann::json::parse(bytes->substr(8, n));
      const auto& offsets = header.at(changed).at("data_offsets");
      const size_t begin = 8 + n + offsets[0].get<size_t>();
      const size_t end = 8 + n + offsets[1].get<size_t>();
      for (size_t i = begin; i < end; i += 4) {
        float v;
        std::memcpy(&v, bytes->data() + i, 4);
        v *= 0.5f;
        std::memcpy(bytes->data() + i, &v, 4);
      }
    }
    ASSERT_TRUE(WriteFileAtomically(out + "/" + name, *bytes).ok());
  }
}

// Rank-4 adapters on q_proj and v_proj, one per (name, seed), written as
// PEFT directories <dir>/src/<name>.
void WriteAdapters(const std::string& dir,
                   const std::vector<std::pair<std::string, int>>& seeds) {
  auto store = ModelStore::Open(RealModel());
  ASSERT_TRUE(store.ok());
  const ModelConfig& config = (*store)->config();
  LoraConfig lc;
  lc.r = 4;
  lc.target_modules = {"q_proj", "v_proj"};
  for (const auto& [name, seed] : seeds) {
    auto a = LoraAdapter::Create(config, lc, {0, config.num_layers}, seed, name,
                                 /*zero_b=*/false);
    ASSERT_TRUE(a.ok());
    ASSERT_TRUE((*a)->SavePeft(dir + "/src/" + name).ok());
  }
}

// Greedy tokens of a session of `model` (with `adapter`, "" = none)
// through `agent`; empty after a test failure.
std::vector<int32_t> SplitTokens(DeviceAgent& agent, const std::string& model,
                                 const std::string& adapter = "") {
  auto session = agent.OpenSession(model, adapter);
  EXPECT_TRUE(session.ok()) << session.status();
  if (!session.ok()) return {};
  auto stats =
      (*session)->Generate(kPrompt, testing::GreedyTokens(kTokens), {});
  EXPECT_TRUE(stats.ok()) << stats.status();
  return stats.ok() ? stats->tokens : std::vector<int32_t>{};
}

class AdapterServingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TempDir("adapter_serving");
    auto store = ModelStore::Open(RealModel());
    ASSERT_TRUE(store.ok());
    const int64_t n = (*store)->config().num_layers;
    // Different ranks and targets; small scalings keep the text a story.
    struct Spec {
      std::string name;
      int64_t rank;
      std::vector<std::string> targets;
    };
    for (const Spec& s :
         {Spec{"alpha", 4, {"q_proj", "v_proj"}},
          Spec{"beta", 16, {"q_proj", "k_proj", "o_proj", "down_proj"}}}) {
      LoraConfig c;
      c.r = s.rank;
      c.alpha = 0.5 * static_cast<double>(s.rank);
      c.target_modules = s.targets;
      auto a = LoraAdapter::Create((*store)->config(), c, {0, n},
                                   static_cast<uint64_t>(s.rank), s.name,
                                   /*zero_b=*/false);
      ASSERT_TRUE(a.ok()) << a.status();
      ASSERT_TRUE((*a)->SavePeft(dir_ + "/adapters/" + s.name).ok());
    }
    testing::ClusterOptions options;
    options.adapter_dir = dir_ + "/adapters";
    std::vector<ClusterPlan> plans = {
        {"real-3hop",
         RealModel(),
         false,
         {{"device", 0, 1}, {"a", 1, 2}, {"b", 2, 4}, {"c", 4, 5}}}};
    auto c = Cluster::Start(testing::TempDir("adapter_serving_cluster"), plans,
                            options);
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = std::move(*c);
  }
  std::unique_ptr<DeviceAgent> Agent(bool with_adapters) {
    DeviceAgentOptions o;
    o.controller = cluster_->controller_address();
    cluster_->SecureDevice("device", &o);
    o.generation_timeout = absl::Seconds(60);
    if (with_adapters) o.adapter_dir = dir_ + "/adapters";
    auto a = DeviceAgent::Connect(o);
    EXPECT_TRUE(a.ok()) << a.status();
    return std::move(*a);
  }
  std::string dir_;
  std::unique_ptr<Cluster> cluster_;
};

TEST_F(AdapterServingTest, ConcurrentSessionsOfDifferentAdaptersEqualWhole) {
  auto agent = Agent(true);
  const std::vector<std::string> names = {"alpha", "", "beta", "alpha"};
  std::vector<std::vector<int32_t>> got(names.size());
  std::vector<absl::Status> status(names.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < names.size(); ++i) {
    threads.emplace_back([&, i] {
      auto session = agent->OpenSession("real-3hop", names[i]);
      if (!session.ok()) {
        status[i] = session.status();
        return;
      }
      auto stats =
          (*session)->Generate(kPrompt, testing::GreedyTokens(kTokens), {});
      if (!stats.ok()) {
        status[i] = stats.status();
        return;
      }
      got[i] = stats->tokens;
    });
  }
  for (auto& t : threads) t.join();
  std::map<std::string, std::vector<int32_t>> want;
  for (const char* name : {"alpha", "beta"}) {
    want[name] = WholeWithAdapter(dir_ + "/adapters/" + name);
  }
  want[""] = WholeWithAdapter("");
  for (size_t i = 0; i < names.size(); ++i) {
    ASSERT_TRUE(status[i].ok()) << names[i] << ": " << status[i];
    EXPECT_EQ(got[i], want[names[i]]) << "adapter \"" << names[i] << "\"";
  }
  // The adapters matter: each changes the greedy text.
  EXPECT_NE(want["alpha"], want[""]);
  EXPECT_NE(want["beta"], want[""]);
  EXPECT_NE(want["alpha"], want["beta"]);
}

TEST_F(AdapterServingTest, UnknownOrMissingAdaptersAreClearErrors) {
  auto agent = Agent(true);
  // No such adapter on the servers: the first hop names itself.
  auto missing = agent->OpenSession("real-3hop", "gamma");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("gamma"));
  auto bad = agent->OpenSession("real-3hop", "../alpha");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  // A device that runs blocks but lacks the adapter cannot apply its part.
  auto bare = Agent(false);
  auto session = bare->OpenSession("real-3hop", "alpha");
  absl::Status s = session.status();
  if (session.ok()) {
    s = (*session)->Generate(kPrompt, testing::GreedyTokens(2), {}).status();
  }
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(s.message(), HasSubstr("adapter_dir"));
}

// An adapter registered with the controller reaches servers that never
// had it: the first fetches it from the controller, the next from the
// nearest peer holding it, each verified by SHA-256; the device downloads
// its blocks' part from the controller; the split output equals the whole
// model with the adapter.
TEST(AdapterDeliveryTest, ARegisteredAdapterTravelsFromPeerToPeer) {
  const std::string dir = testing::TempDir("adapter_delivery");
  auto store = ModelStore::Open(RealModel());
  ASSERT_TRUE(store.ok());
  const ModelConfig& config = (*store)->config();
  LoraConfig lc;
  lc.r = 8;
  lc.alpha = 4;
  lc.target_modules = {"q_proj", "v_proj", "down_proj"};
  auto adapter = LoraAdapter::Create(config, lc, {0, config.num_layers}, 11,
                                     "gamma", /*zero_b=*/false);
  ASSERT_TRUE(adapter.ok());
  ASSERT_TRUE((*adapter)->SavePeft(dir + "/src/gamma").ok());
  testing::ClusterOptions options;
  options.adapter_dir = dir + "/servers/{node}";
  std::vector<ClusterPlan> plans = {
      {"real-3hop",
       RealModel(),
       false,
       {{"device", 0, 1}, {"a", 1, 2}, {"b", 2, 4}, {"c", 4, 5}}},
      // Another model id on the same servers, with its own "gamma".
      {"real-twin", RealModel(), false, {{"device", 0, 1}, {"a", 1, 5}}}};
  auto c = Cluster::Start(testing::TempDir("adapter_delivery_cluster"), plans,
                          options);
  ASSERT_TRUE(c.ok()) << c.status();
  DeviceAgentOptions o;
  o.controller = (*c)->controller_address();
  (*c)->SecureDevice("device", &o);
  o.adapter_dir = dir + "/device";
  auto agent = DeviceAgent::Connect(o);
  ASSERT_TRUE(agent.ok());
  // Not registered yet: the first hop says so.
  auto early = (*agent)->OpenSession("real-3hop", "gamma");
  absl::Status s = early.status();
  if (early.ok()) {
    s = (*early)->Generate(kPrompt, testing::GreedyTokens(2), {}).status();
  }
  EXPECT_THAT(s.message(), HasSubstr("not registered"));

  AdminCli(**c, {"adapter", "register", "--model-id", "real-3hop", "--name",
                 "gamma", "--dir", dir + "/src/gamma"});
  auto session = (*agent)->OpenSession("real-3hop", "gamma");
  ASSERT_TRUE(session.ok()) << session.status();
  auto stats =
      (*session)->Generate(kPrompt, testing::GreedyTokens(kTokens), {});
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->tokens, WholeWithAdapter(dir + "/src/gamma"));

  // Each server holds the same bytes; a took them from the controller, b
  // and c from a peer.
  for (const char* node : {"a", "b", "c"}) {
    for (const char* file :
         {"adapter_config.json", "adapter_model.safetensors"}) {
      auto want = ReadFile(dir + "/src/gamma/" + file);
      auto got = ReadFile(absl::StrCat(dir, "/servers/", node,
                                       "/.cluster/real-3hop/gamma/", file));
      ASSERT_TRUE(want.ok() && got.ok()) << node << " " << file;
      EXPECT_TRUE(*want == *got) << node << " " << file;
    }
  }
  auto from = [&](const char* node) {
    return (*c)->server(node)->adapter_source()->stats().blobs_from;
  };
  EXPECT_EQ(from("a"), (std::map<std::string, int64_t>{{"controller", 2}}));
  EXPECT_EQ(from("b"), (std::map<std::string, int64_t>{{"a", 2}}));
  EXPECT_EQ(from("c").count("controller"), 0u);
  auto device_copy = ReadFile(
      dir + "/device/.cluster/real-3hop/gamma/adapter_model.safetensors");
  ASSERT_TRUE(device_copy.ok());
  EXPECT_TRUE(*device_copy ==
              *ReadFile(dir + "/src/gamma/adapter_model.safetensors"));
  const std::string listed = AdminCli(**c, {"adapter", "list"});
  EXPECT_THAT(listed, HasSubstr("gamma"));
  EXPECT_THAT(listed, HasSubstr("a,b,c"));

  // Another model's adapter of the same name is another adapter: server a
  // and the device, which already hold real-3hop's gamma, fetch and serve
  // real-twin's own.
  auto twin = LoraAdapter::Create(config, lc, {0, config.num_layers}, 12,
                                  "gamma", /*zero_b=*/false);
  ASSERT_TRUE(twin.ok());
  ASSERT_TRUE((*twin)->SavePeft(dir + "/src/twin-gamma").ok());
  AdminCli(**c, {"adapter", "register", "--model-id", "real-twin", "--name",
                 "gamma", "--dir", dir + "/src/twin-gamma"});
  auto twin_session = (*agent)->OpenSession("real-twin", "gamma");
  ASSERT_TRUE(twin_session.ok()) << twin_session.status();
  auto twin_stats =
      (*twin_session)->Generate(kPrompt, testing::GreedyTokens(kTokens), {});
  ASSERT_TRUE(twin_stats.ok()) << twin_stats.status();
  const auto twin_want = WholeWithAdapter(dir + "/src/twin-gamma");
  EXPECT_EQ(twin_stats->tokens, twin_want);
  EXPECT_NE(twin_want, WholeWithAdapter(dir + "/src/gamma"));
}

// The controller counts sessions per adapter, places adapters on the
// servers of their model's route within each server's adapter storage, and
// the servers prefetch what it places there before any session asks.
TEST(AdapterDeliveryTest, PlacedAdaptersArePrefetchedBeforeSessionsAsk) {
  const std::string dir = testing::TempDir("adapter_placement");
  WriteAdapters(dir, {{"hot", 3}, {"cold", 4}});
  testing::ClusterOptions options;
  options.adapter_dir = dir + "/servers/{node}";
  options.adapter_prefetch_interval = absl::Milliseconds(100);
  // "cold" is expected (what-if demand) though nobody asked for it yet.
  options.controller_yaml = R"(
adapter_placement:
  server_storage_mb: 1
  interval_s: 0
  demand_half_life_s: 31536000  # counts stay put while the test runs
  what_if: [{model: real-2hop, adapter: cold, requests: 5}]
)";
  std::vector<ClusterPlan> plans = {
      {"real-2hop",
       RealModel(),
       false,
       {{"device", 0, 1}, {"a", 1, 3}, {"b", 3, 5}}}};
  auto c = Cluster::Start(testing::TempDir("adapter_placement_cluster"), plans,
                          options);
  ASSERT_TRUE(c.ok()) << c.status();
  for (const char* name : {"hot", "cold"}) {
    std::ostringstream out, err;
    ASSERT_EQ(
        cli::Run({"adapter", "register", "--certs", (*c)->certs_dir(),
                  "--controller", (*c)->controller_address(), "--model-id",
                  "real-2hop", "--name", name, "--dir", dir + "/src/" + name},
                 out, err),
        0)
        << err.str();
  }
  // Both servers fetch "cold" by themselves.
  auto has = [&](const char* node, const char* name) {
    return std::filesystem::exists(absl::StrCat(dir, "/servers/", node,
                                                "/.cluster/real-2hop/", name,
                                                "/adapter_model.safetensors"));
  };
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while ((!has("a", "cold") || !has("b", "cold")) && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_TRUE(has("a", "cold") && has("b", "cold"));
  EXPECT_FALSE(has("a", "hot"));  // Nobody asked: not placed.

  DeviceAgentOptions o;
  o.controller = (*c)->controller_address();
  (*c)->SecureDevice("device", &o);
  o.adapter_dir = dir + "/device";
  auto agent = DeviceAgent::Connect(o);
  ASSERT_TRUE(agent.ok());
  auto fetched = [&] {
    int64_t n = 0;
    for (const char* node : {"a", "b"}) {
      for (const auto& [from, blobs] :
           (*c)->server(node)->adapter_source()->stats().blobs_from) {
        n += blobs;
      }
    }
    return n;
  };
  // A session on the prefetched adapter fetches nothing more.
  const int64_t before = fetched();
  {
    auto session = (*agent)->OpenSession("real-2hop", "cold");
    ASSERT_TRUE(session.ok()) << session.status();
    auto stats =
        (*session)->Generate(kPrompt, testing::GreedyTokens(kTokens), {});
    ASSERT_TRUE(stats.ok()) << stats.status();
    EXPECT_EQ(stats->tokens, WholeWithAdapter(dir + "/src/cold"));
  }
  EXPECT_EQ(fetched(), before);
  // Sessions are counted: "hot" is placed too now (both fit in 1 MiB).
  for (int i = 0; i < 2; ++i) {
    auto session = (*agent)->OpenSession("real-2hop", "hot");
    ASSERT_TRUE(session.ok()) << session.status();
  }
  auto placed = (*c)->adapter_service()->Placement(absl::Now());
  ASSERT_TRUE(placed.ok()) << placed.status();
  ASSERT_EQ(placed->servers_size(), 2);
  for (const v1::ServerPlacement& server : placed->servers()) {
    ASSERT_EQ(server.adapters_size(), 2) << server.node();
    EXPECT_LE(server.stored_bytes(), server.capacity_bytes());
    EXPECT_LT(server.stored_bytes(), server.independent_bytes());
  }
  EXPECT_EQ(placed->hit_ratio(), 1);
  const std::string shown = AdminCli(**c, {"adapter", "placement"});
  EXPECT_THAT(shown, HasSubstr("real-2hop:cold,real-2hop:hot"));
  EXPECT_THAT(shown, HasSubstr("demand real-2hop:hot 2.00"));
  EXPECT_THAT(AdminCli(**c, {"cluster", "status"}),
              HasSubstr("adapter placement: hit ratio 1.000"));
}

// Model copies (a quantized copy for devices) registered with the
// controller reach a device whose rules allow the model, part by part and
// verified; a second copy fetches only the parts the first lacks.
TEST(AdapterDeliveryTest, ModelCopiesReachDevicesTheirRulesAllow) {
  const std::string dir = testing::TempDir("model_copies_e2e");
  std::ostringstream out, err;
  ASSERT_EQ(cli::Run({"model", "quantize", "--model", RealModel(), "--out",
                      dir + "/q8", "--type", "q8_0"},
                     out, err),
            0)
      << err.str();
  testing::ClusterOptions options;
  options.controller_yaml = R"(
devices: [{name: phone, models: [real-2hop], adapters: ["*"]}]
)";
  std::vector<ClusterPlan> plans = {
      {"real-2hop", RealModel(), false, {{"device", 0, 2}, {"a", 2, 5}}}};
  auto c =
      Cluster::Start(testing::TempDir("model_copies_cluster"), plans, options);
  ASSERT_TRUE(c.ok()) << c.status();
  AdminCli(**c, {"model", "register", "--model-id", "real-2hop", "--name",
                 "fp32", "--dir", RealModel()});
  AdminCli(**c, {"model", "register", "--model-id", "real-2hop", "--name",
                 "q8_0", "--dir", dir + "/q8"});
  AdminCli(**c, {"model", "register", "--model-id", "other", "--name", "q8_0",
                 "--dir", dir + "/q8"});
  DeviceAgentOptions phone;
  (*c)->SecureDevice("phone", &phone);  // Issues its certificate.
  auto fetch = [&](const std::string& model, const std::string& name,
                   std::string* printed) {
    std::ostringstream o, e;
    const int code =
        cli::Run({"model", "fetch", "--certs", (*c)->certs_dir(),
                  "--controller", (*c)->controller_address(), "--device",
                  "phone", "--model-id", model, "--name", name, "--out",
                  absl::StrCat(dir, "/phone/", model, "-", name)},
                 o, e);
    *printed = o.str() + e.str();
    return code;
  };
  std::string printed;
  ASSERT_EQ(fetch("real-2hop", "fp32", &printed), 0) << printed;
  ASSERT_EQ(fetch("real-2hop", "q8_0", &printed), 0) << printed;
  // The quantized copy shares the config and tokenizer with fp32.
  EXPECT_THAT(printed, ::testing::Not(HasSubstr(", 0 already held")));
  for (const auto& entry : std::filesystem::directory_iterator(dir + "/q8")) {
    const std::string file = entry.path().filename().string();
    auto want = ReadFile(entry.path().string());
    auto got = ReadFile(dir + "/phone/real-2hop-q8_0/" + file);
    ASSERT_TRUE(want.ok() && got.ok()) << file;
    EXPECT_TRUE(*want == *got) << file;
  }
  EXPECT_TRUE(ModelStore::Open(dir + "/phone/real-2hop-q8_0").ok());
  // The phone may not use model "other", so it may not resolve its copy
  // (the parts it shares with real-2hop's copy it may read, as such).
  EXPECT_NE(fetch("other", "q8_0", &printed), 0);
  EXPECT_THAT(printed, HasSubstr("phone"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/phone/other-q8_0"));
}

// A plan naming a registered model copy (`model: {copy: }`): servers that
// lack it fetch it part by part, the first from the controller, the next
// from the nearest peer holding it; a part corrupted at that peer is
// refused and fetched from the controller instead. A fully fine-tuned
// variant registered later moves only the tensor it changed to a server
// holding its base. The split models the servers loaded from their fetched
// copies generate what the whole models generate in one process.
TEST(AdapterDeliveryTest, ServersFetchModelCopiesFromTheirPeers) {
  const std::string dir = testing::TempDir("server_model_copies");
  const std::string tuned_dir = dir + "/tuned";
  WriteTunedVariant(tuned_dir, "model.layers.3.mlp.down_proj.weight");
  auto packed = PackModelDir(RealModel(), "copied", "fp32");
  auto tuned = PackModelDir(tuned_dir, "copied-tuned", "v1");
  ASSERT_TRUE(packed.ok() && tuned.ok());
  const int64_t parts = static_cast<int64_t>(packed->parts.size());
  int64_t shared = 0;
  for (const auto& [id, bytes] : tuned->parts)
    shared += packed->parts.count(id);
  // The header and every other tensor are the base's.
  ASSERT_EQ(shared + 1, static_cast<int64_t>(tuned->parts.size()));
  testing::ClusterOptions options;
  options.model_dir = dir + "/servers/{node}";
  ClusterPlan base{"copied",
                   RealModel(),
                   false,
                   {{"device", 0, 1}, {"a", 1, 3}, {"b", 3, 5}}};
  base.model_copy = "fp32";
  ClusterPlan variant{
      "copied-tuned", tuned_dir, false, {{"device", 0, 1}, {"b", 1, 5}}};
  variant.model_copy = "v1";
  auto c = Cluster::Start(testing::TempDir("server_model_copies_cluster"),
                          {base, variant}, options);
  ASSERT_TRUE(c.ok()) << c.status();
  // Not registered yet: the stages cannot load.
  EXPECT_FALSE((*c)->server("a")->ready());
  (*c)->Kill("b");  // b comes back once a holds the copy.
  AdminCli(**c, {"model", "register", "--model-id", "copied", "--name", "fp32",
                 "--dir", RealModel()});
  // The controller sends the plans again: a fetches the copy and loads.
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (!(*c)->server("a")->ready() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_TRUE((*c)->server("a")->ready());
  ModelFetchStats a = (*c)->server("a")->model_source()->stats();
  EXPECT_EQ(a.parts_from,
            (std::map<std::string, int64_t>{{"controller", parts}}));
  EXPECT_EQ(a.parts_held, 0);

  // Corrupt the largest part in a's store (same size): b refuses a's bytes
  // for it and takes them from the controller.
  std::string largest;
  for (const auto& [id, bytes] : packed->parts) {
    if (largest.empty() || bytes.size() > packed->parts.at(largest).size()) {
      largest = id;
    }
  }
  const std::string held = dir + "/servers/a/.blobs/sha256/" + largest;
  auto bytes = ReadFile(held);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  (*bytes)[bytes->size() / 2] ^= 0x5a;
  ASSERT_TRUE(WriteFileAtomically(held, *bytes, 0600).ok());
  ASSERT_TRUE((*c)->Restart("b").ok());
  ModelFetchStats b = (*c)->server("b")->model_source()->stats();
  EXPECT_EQ(b.parts_from, (std::map<std::string, int64_t>{{"a", parts - 1},
                                                          {"controller", 1}}));
  for (const v1::ModelFile& f : packed->copy.files()) {
    auto want = ReadFile(RealModel() + "/" + f.path());
    auto got = ReadFile(dir + "/servers/b/.cluster/copied/fp32/" + f.path());
    ASSERT_TRUE(want.ok() && got.ok()) << f.path();
    EXPECT_TRUE(*want == *got) << f.path();
  }

  // The variant: b already holds every part but the changed tensor.
  EXPECT_FALSE((*c)->server("b")->ready());  // Not registered yet.
  AdminCli(**c, {"model", "register", "--model-id", "copied-tuned", "--name",
                 "v1", "--dir", tuned_dir});
  while (!(*c)->server("b")->ready() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_TRUE((*c)->server("b")->ready());
  ModelFetchStats moved = (*c)->server("b")->model_source()->stats();
  EXPECT_EQ(moved.parts_fetched - b.parts_fetched, 1);
  EXPECT_EQ(moved.parts_held - b.parts_held, shared);
  EXPECT_EQ(moved.parts_from["controller"], 2);

  // The device needs the copy too, for its own blocks: without a cache
  // for it, refused (the plan's path is the controller's); with one,
  // fetched from the controller.
  DeviceAgentOptions o;
  o.controller = (*c)->controller_address();
  (*c)->SecureDevice("device", &o);
  {
    auto bare = DeviceAgent::Connect(o);
    ASSERT_TRUE(bare.ok()) << bare.status();
    auto refused = (*bare)->OpenSession("copied");
    EXPECT_THAT(refused.status().message(), HasSubstr("model_cache_dir"));
  }
  o.model_cache_dir = dir + "/device";
  auto agent = DeviceAgent::Connect(o);
  ASSERT_TRUE(agent.ok()) << agent.status();
  EXPECT_EQ(SplitTokens(**agent, "copied"), WholeWithAdapter(""));
  EXPECT_TRUE(std::filesystem::exists(
      dir + "/device/.cluster/copied/fp32/model.safetensors"));
  const std::vector<int32_t> want_tuned = WholeWithAdapter("", tuned_dir);
  EXPECT_EQ(SplitTokens(**agent, "copied-tuned"), want_tuned);
  EXPECT_NE(want_tuned, WholeWithAdapter(""));
}

// A server keeps the adapters it fetched within its disk budget: fetching
// one more evicts the least recently used (its directory and the blobs no
// other adapter uses) and the controller stops naming the server as its
// holder; after a restart a session naming the evicted adapter fetches it
// again and generates exactly what it did before.
TEST(AdapterDeliveryTest, FetchedAdaptersStayWithinTheDiskBudget) {
  const std::string dir = testing::TempDir("adapter_disk_budget");
  WriteAdapters(dir, {{"one", 5}, {"two", 6}});
  // Both adapters' configs are the same file (one blob): the budget holds
  // one adapter's directory and blobs, and another weights file, not two.
  const int64_t config_bytes = static_cast<int64_t>(
      std::filesystem::file_size(dir + "/src/one/adapter_config.json"));
  const int64_t weight_bytes = static_cast<int64_t>(
      std::filesystem::file_size(dir + "/src/one/adapter_model.safetensors"));
  testing::ClusterOptions options;
  options.adapter_dir = dir + "/servers/{node}";
  options.adapter_disk_bytes = 2 * config_bytes + weight_bytes * 3;
  auto c = Cluster::Start(
      testing::TempDir("adapter_disk_budget_cluster"),
      {{"real-2hop", RealModel(), false, {{"device", 0, 1}, {"a", 1, 5}}}},
      options);
  ASSERT_TRUE(c.ok()) << c.status();
  for (const char* name : {"one", "two"}) {
    AdminCli(**c, {"adapter", "register", "--model-id", "real-2hop", "--name",
                   name, "--dir", dir + "/src/" + name});
  }
  DeviceAgentOptions o;
  o.controller = (*c)->controller_address();
  (*c)->SecureDevice("device", &o);
  o.adapter_dir = dir + "/device";
  auto agent = DeviceAgent::Connect(o);
  ASSERT_TRUE(agent.ok());
  auto generate = [&](const char* name) {
    return SplitTokens(**agent, "real-2hop", name);
  };
  auto held = [&](const char* name) {
    return std::filesystem::exists(
        absl::StrCat(dir, "/servers/a/.cluster/real-2hop/", name));
  };
  const std::vector<int32_t> one = WholeWithAdapter(dir + "/src/one");
  EXPECT_EQ(generate("one"), one);
  EXPECT_TRUE(held("one"));
  EXPECT_EQ(generate("two"), WholeWithAdapter(dir + "/src/two"));
  EXPECT_TRUE(held("two"));
  EXPECT_FALSE(held("one"));
  EXPECT_EQ((*c)->server("a")->adapter_source()->stats().evicted, 1);
  // one's weights left the blob store; the config two shares stayed.
  auto blob = [&](const std::string& file) {
    auto bytes = ReadFile(dir + "/src/one/" + file);
    EXPECT_TRUE(bytes.ok());
    return std::filesystem::exists(
        absl::StrCat(dir, "/servers/a/.blobs/sha256/", Sha256Hex(*bytes)));
  };
  EXPECT_FALSE(blob("adapter_model.safetensors"));
  EXPECT_TRUE(blob("adapter_config.json"));
  const std::string listed = AdminCli(**c, {"adapter", "list"});
  EXPECT_THAT(listed, ::testing::ContainsRegex("one .* -\n"));
  EXPECT_THAT(listed, ::testing::ContainsRegex("two .* a\n"));

  // A restarted server (nothing in memory) fetches one again: same tokens,
  // and two, used less recently, goes.
  (*c)->Kill("a");
  ASSERT_TRUE((*c)->Restart("a").ok());
  EXPECT_EQ(generate("one"), one);
  EXPECT_TRUE(held("one"));
  EXPECT_FALSE(held("two"));
  EXPECT_EQ((*c)->server("a")->adapter_source()->stats().evicted, 1);
}

// A device lists the registered adapters its rules let it use (an app's
// `/v1/models` over a cluster, which lists them when it has an adapter
// directory for its own blocks' part), not the others, and not which
// servers hold them; admins see every adapter.
TEST(AdapterDeliveryTest, DevicesListTheAdaptersTheirRulesAllow) {
  const std::string dir = testing::TempDir("adapter_listing");
  auto store = ModelStore::Open(RealModel());
  ASSERT_TRUE(store.ok());
  LoraConfig lc;
  lc.r = 4;
  lc.target_modules = {"q_proj"};
  for (const char* name : {"gamma", "delta"}) {
    auto adapter =
        LoraAdapter::Create((*store)->config(), lc,
                            {0, (*store)->config().num_layers}, 3, name, false);
    ASSERT_TRUE(adapter.ok());
    ASSERT_TRUE((*adapter)->SavePeft(dir + "/" + name).ok());
  }
  testing::ClusterOptions options;
  options.controller_yaml = R"(
devices: [{name: phone, models: [real-2hop], adapters: [gamma]}]
)";
  options.adapter_dir = dir + "/servers/{node}";
  auto c = Cluster::Start(
      testing::TempDir("adapter_listing_cluster"),
      {{"real-2hop", RealModel(), false, {{"device", 0, 2}, {"a", 2, 5}}}},
      options);
  ASSERT_TRUE(c.ok()) << c.status();
  openai::AgentBackendOptions o;
  o.agent.controller = (*c)->controller_address();
  (*c)->SecureDevice("phone", &o.agent);
  o.model_ids = {"real-2hop"};
  // Without an adapter directory this device (it runs blocks 0-1) could
  // not serve any adapter: none are listed.
  auto bare = openai::AgentBackend::Connect(o);
  ASSERT_TRUE(bare.ok()) << bare.status();
  o.agent.adapter_dir = dir + "/phone";
  auto backend = openai::AgentBackend::Connect(o);
  ASSERT_TRUE(backend.ok()) << backend.status();
  EXPECT_EQ((*backend)->Models(), std::vector<std::string>{"real-2hop"});
  for (const char* name : {"gamma", "delta"}) {
    AdminCli(**c, {"adapter", "register", "--model-id", "real-2hop", "--name",
                   name, "--dir", dir + "/" + name});
  }
  EXPECT_EQ((*backend)->Models(),
            (std::vector<std::string>{"real-2hop", "real-2hop:gamma"}));
  EXPECT_EQ((*bare)->Models(), std::vector<std::string>{"real-2hop"});
  DeviceAgentOptions phone;
  phone.controller = (*c)->controller_address();
  (*c)->SecureDevice("phone", &phone);
  phone.adapter_dir = dir + "/phone";
  auto agent = DeviceAgent::Connect(phone);
  ASSERT_TRUE(agent.ok()) << agent.status();
  auto names = (*agent)->ListAdapters("real-2hop");
  ASSERT_TRUE(names.ok()) << names.status();
  EXPECT_EQ(*names, std::vector<std::string>{"gamma"});
  names = (*agent)->ListAdapters("other");
  ASSERT_TRUE(names.ok()) << names.status();
  EXPECT_TRUE(names->empty());
  // Once server a holds gamma, admins see it there; the device's own
  // answer names no holders.
  auto session = (*agent)->OpenSession("real-2hop", "gamma");
  ASSERT_TRUE(session.ok()) << session.status();
  auto generated = (*session)->Generate(kPrompt, testing::GreedyTokens(2));
  ASSERT_TRUE(generated.ok()) << generated.status();
  const std::string listed = AdminCli(**c, {"adapter", "list"});
  EXPECT_THAT(listed, HasSubstr("delta"));
  EXPECT_THAT(listed, ::testing::ContainsRegex("gamma .* a\\n"));
  auto channel = (*c)->Dial("device-phone", (*c)->controller_address());
  v1::ListAdaptersRequest req;
  v1::ListAdaptersResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  ASSERT_TRUE(v1::AdapterRegistry::NewStub(channel)
                  ->ListAdapters(&ctx, req, &resp)
                  .ok());
  ASSERT_EQ(resp.adapters_size(), 1);
  EXPECT_EQ(resp.adapters(0).name(), "gamma");
  EXPECT_EQ(resp.adapters(0).holders_size(), 0);
  EXPECT_EQ(resp.adapters(0).files_size(), 0);
}

}  // namespace
}  // namespace edgesplit
