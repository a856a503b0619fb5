// Differential privacy of split inference, end to end: what the first
// server receives (tapped in the stage service) is the device's clipped,
// noised rows -- never the rows it computed -- with the calibrated noise
// scale; with privacy off it is exactly the computed rows; the device's
// budget persists and refuses; settings that cannot be honoured are
// refused before anything is sent.
#include <cmath>
#include <filesystem>
#include <map>
#include <sstream>

#include "absl/synchronization/mutex.h"
#include "device_agent/cli/commands.h"
#include "edgesplit/device_agent.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "privacy/row_noise.h"
#include "proto/tensor_codec.h"
#include "runtime/model_store.h"
#include "runtime/stage_model.h"
#include "testing/cluster.h"
#include "testing/test_models.h"
#include "tests/split_util.h"

namespace edgesplit {
namespace {

using ::edgesplit::testing::Cluster;
using ::edgesplit::testing::ClusterOptions;
using ::edgesplit::testing::ClusterPlan;
using ::testing::HasSubstr;

std::string RealModel() { return testing::SharedDir() + "/models/stories260K"; }

// The device stage's own rows for prompt + continuation (all but the
// last token): what a device without privacy sends.
std::vector<std::vector<float>> DeviceRows(
    const std::string& prompt, const std::vector<int32_t>& generated) {
  auto store = ModelStore::Open(RealModel());
  EXPECT_TRUE(store.ok());
  auto tok = (*store)->LoadTokenizer();
  auto ids = (*tok)->EncodePrompt(prompt);
  EXPECT_TRUE(ids.ok());
  std::vector<int32_t> all = *ids;
  all.insert(all.end(), generated.begin(), generated.end());
  return testing::DeviceStageRows(RealModel(), 1, all);
}

// The hidden rows of every forward the server "a" received, in order.
class Tap {
 public:
  void Record(const std::string& node, const v1::StageRequest& r) {
    if (node != "a" || !r.has_forward() || !r.forward().has_hidden()) return;
    auto rows = wire::Decode(r.forward().hidden(), 0, "tapped");
    ASSERT_TRUE(rows.ok()) << rows.status();
    absl::MutexLock lock(&mu_);
    for (int64_t i = 0; i < rows->size(0); ++i) {
      at::Tensor row = (*rows)[i].contiguous();
      rows_.emplace_back(row.data_ptr<float>(),
                         row.data_ptr<float>() + row.numel());
    }
  }
  std::vector<std::vector<float>> Take() {
    absl::MutexLock lock(&mu_);
    return std::exchange(rows_, {});
  }

 private:
  absl::Mutex mu_;
  std::vector<std::vector<float>> rows_ ABSL_GUARDED_BY(mu_);
};

class PrivateInferenceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tap_ = new Tap();
    ClusterOptions o;
    o.tls = false;
    o.request_tap = [](const std::string& node, const v1::StageRequest& r) {
      tap_->Record(node, r);
    };
    std::vector<ClusterPlan> plans = {
        {"real-2way", RealModel(), false, {{"device", 0, 1}, {"a", 1, 5}}},
        {"real-zero", RealModel(), false, {{"device", 0, 0}, {"a", 0, 5}}},
        // The operator requires privacy of every session.
        {"real-floor",
         RealModel(),
         false,
         {{"device", 0, 1}, {"a", 1, 5}},
         {},
         {},
         "privacy: {max_epsilon: 8, max_delta: 1e-5}\n"},
    };
    auto c = Cluster::Start(testing::TempDir("private"), plans, o);
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = c->release();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    delete tap_;
  }

  std::unique_ptr<DeviceAgent> Agent(const std::string& budget_file = "",
                                     double budget_epsilon = 0) {
    DeviceAgentOptions o;
    o.controller = cluster_->controller_address();
    o.insecure = true;
    o.privacy_budget_file = budget_file;
    o.privacy_budget_epsilon = budget_epsilon;
    auto a = DeviceAgent::Connect(o);
    EXPECT_TRUE(a.ok()) << a.status();
    return a.ok() ? std::move(*a) : nullptr;
  }

  static Cluster* cluster_;
  static Tap* tap_;
};
Cluster* PrivateInferenceTest::cluster_ = nullptr;
Tap* PrivateInferenceTest::tap_ = nullptr;

double Norm(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += double{x} * x;
  return std::sqrt(s);
}

TEST_F(PrivateInferenceTest, WithPrivacyOffTheServerGetsTheComputedRows) {
  auto agent = Agent();
  auto session = agent->OpenSession("real-2way");
  ASSERT_TRUE(session.ok()) << session.status();
  tap_->Take();
  auto stats =
      (*session)->Generate("Once upon a time", testing::GreedyTokens(12));
  ASSERT_TRUE(stats.ok()) << stats.status();
  auto whole = testing::MonolithicGreedy(RealModel(), "Once upon a time", 12,
                                         /*stop_at_eos=*/false);
  ASSERT_TRUE(whole.ok());
  EXPECT_EQ(stats->tokens, *whole);
  EXPECT_EQ(stats->privacy_epsilon, 0);
  EXPECT_EQ(stats->private_rows, 0);
  const auto got = tap_->Take();
  const auto want = DeviceRows("Once upon a time", stats->tokens);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i].size(), want[i].size());
    for (size_t j = 0; j < got[i].size(); ++j) {
      ASSERT_NEAR(got[i][j], want[i][j], 1e-5) << "row " << i;
    }
  }
}

TEST_F(PrivateInferenceTest, TheServerNeverReceivesAnUnnoisedRow) {
  auto agent = Agent();
  auto session = agent->OpenSession("real-2way");
  ASSERT_TRUE(session.ok()) << session.status();
  SamplingOptions s = testing::GreedyTokens(16);
  s.privacy.epsilon = 50;
  s.privacy.delta = 1e-5;
  s.privacy.clip = 2.0;
  tap_->Take();
  auto stats = (*session)->Generate("Once upon a time", s);
  ASSERT_TRUE(stats.ok()) << stats.status();
  const auto got = tap_->Take();
  const auto raw = DeviceRows("Once upon a time", stats->tokens);
  ASSERT_EQ(got.size(), raw.size());
  EXPECT_EQ(stats->private_rows, static_cast<int64_t>(got.size()));
  // Calibrated for every row it could send, spent no more than asked.
  EXPECT_LE(stats->privacy_epsilon, 50);
  EXPECT_GT(stats->privacy_epsilon, 49.9);
  EXPECT_EQ(stats->privacy_delta, 1e-5);
  // prompt + 16 new tokens - 1 rows: all it could send.
  auto sigma =
      privacy::RowNoiseForEpsilon(50, 1e-5, static_cast<int64_t>(raw.size()));
  ASSERT_TRUE(sigma.ok());
  EXPECT_NEAR(stats->noise_multiplier, *sigma, 1e-9);
  // Every row differs from what the device computed, and what was added to
  // the clipped row is noise of the calibrated scale.
  double sq = 0, n = 0;
  int64_t clipped = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    std::vector<float> c = raw[i];
    const double norm = Norm(c);
    if (norm > s.privacy.clip) {
      ++clipped;
      for (float& x : c) x = static_cast<float>(x * s.privacy.clip / norm);
    }
    int64_t same = 0;
    for (size_t j = 0; j < c.size(); ++j) {
      same += got[i][j] == raw[i][j];
      const double e = got[i][j] - c[j];
      sq += e * e;
      n += 1;
    }
    EXPECT_EQ(same, 0) << "row " << i << " left the device unnoised";
  }
  EXPECT_EQ(stats->clipped_rows, clipped);
  const double stddev = stats->noise_multiplier * s.privacy.clip;
  EXPECT_NEAR(std::sqrt(sq / n), stddev, 0.1 * stddev);
}

TEST_F(PrivateInferenceTest, TheBudgetPersistsAndRefuses) {
  const std::string file = testing::TempDir("budget") + "/budget.json";
  SamplingOptions s = testing::GreedyTokens(8);
  s.privacy.epsilon = 6;
  s.privacy.clip = 2.0;
  double first = 0;
  {
    auto agent = Agent(file, 8);
    auto session = agent->OpenSession("real-2way");
    ASSERT_TRUE(session.ok()) << session.status();
    auto stats = (*session)->Generate("Once upon a time", s);
    ASSERT_TRUE(stats.ok()) << stats.status();
    first = stats->budget_epsilon_spent;
    EXPECT_NEAR(first, stats->privacy_epsilon, 1e-6);
    ASSERT_TRUE(std::filesystem::exists(file));
  }
  // A restarted agent remembers the spending: a second generation of
  // epsilon 6 would bring the total (composed in RDP, so less than 12)
  // past 8, and nothing is sent.
  auto agent = Agent(file, 8);
  auto session = agent->OpenSession("real-2way");
  ASSERT_TRUE(session.ok()) << session.status();
  tap_->Take();
  auto refused = (*session)->Generate("Once upon a time", s);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("privacy budget exhausted"));
  EXPECT_TRUE(tap_->Take().empty());
  // A smaller one still fits.
  s.privacy.epsilon = 1;
  auto stats = (*session)->Generate("Once upon a time", s);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_GT(stats->budget_epsilon_spent, first);
  EXPECT_LE(stats->budget_epsilon_spent, 8);
}

TEST_F(PrivateInferenceTest, TheCliReportsEpsilonAndKeepsTheBudget) {
  const std::string file = testing::TempDir("cli_budget") + "/budget.json";
  auto generate = [&](const std::string& epsilon, std::string* err) {
    std::ostringstream out, e;
    const int code =
        cli::Run({"generate", "--controller", cluster_->controller_address(),
                  "--insecure", "--model-id", "real-2way", "--prompt",
                  "Once upon a time", "--max-new-tokens", "8",
                  "--privacy-epsilon", epsilon, "--privacy-clip", "3",
                  "--privacy-budget", file, "--privacy-budget-epsilon", "10"},
                 out, e);
    *err = e.str();
    return code;
  };
  std::string err;
  ASSERT_EQ(generate("8", &err), 0) << err;
  EXPECT_THAT(err, HasSubstr("privacy: epsilon 8 at delta 1e-05"));
  EXPECT_THAT(err, HasSubstr("budget: epsilon 8 of 10 spent"));
  EXPECT_EQ(generate("8", &err), 1);
  EXPECT_THAT(err, HasSubstr("privacy budget exhausted"));
  std::ostringstream out, e;
  EXPECT_EQ(
      cli::Run({"generate", "--controller", "127.0.0.1:1", "--insecure",
                "--model-id", "m", "--prompt", "x", "--privacy-budget", file},
               out, e),
      2);
  EXPECT_THAT(e.str(), HasSubstr("--privacy-budget-epsilon"));
}

TEST_F(PrivateInferenceTest, ThePlansPrivacyFloorIsEnforced) {
  auto agent = Agent();
  auto session = agent->OpenSession("real-floor");
  ASSERT_TRUE(session.ok()) << session.status();
  tap_->Take();
  SamplingOptions s = testing::GreedyTokens(4);
  auto refused = (*session)->Generate("Once upon a time", s);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("requires privacy with epsilon <= 8 at delta <= "
                        "1e-05; this has privacy off"));
  s.privacy.epsilon = 9;
  s.privacy.clip = 3;
  refused = (*session)->Generate("Once upon a time", s);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("asks for epsilon 9"));
  EXPECT_TRUE(tap_->Take().empty());
  s.privacy.epsilon = 8;
  auto stats = (*session)->Generate("Once upon a time", s);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_LE(stats->privacy_epsilon, 8);
  EXPECT_FALSE(tap_->Take().empty());
}

TEST_F(PrivateInferenceTest, SettingsThatCannotBeHonouredAreRefused) {
  auto agent = Agent();
  auto session = agent->OpenSession("real-2way");
  ASSERT_TRUE(session.ok()) << session.status();
  SamplingOptions s = testing::GreedyTokens(4);
  s.privacy.epsilon = 8;
  EXPECT_THAT(std::string((*session)->Generate("x", s).status().message()),
              HasSubstr("privacy clip 0 is not > 0"));
  s.privacy.clip = 1;
  s.privacy.delta = 1;
  EXPECT_THAT(std::string((*session)->Generate("x", s).status().message()),
              HasSubstr("delta 1 is not in (0, 1)"));
  s.privacy.delta = 1e-5;
  s.speculative.draft = "lookup";
  EXPECT_THAT(std::string((*session)->Generate("x", s).status().message()),
              HasSubstr("speculative decoding"));
  s.speculative.draft = "";
  s.privacy.epsilon = -1;
  EXPECT_EQ((*session)->Generate("x", s).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Zero device blocks: token ids would leave the device.
  auto zero = agent->OpenSession("real-zero");
  ASSERT_TRUE(zero.ok()) << zero.status();
  s.privacy.epsilon = 8;
  tap_->Take();
  auto refused = (*zero)->Generate("x", s);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("token ids would leave the device"));
  EXPECT_TRUE(tap_->Take().empty());
}

// A private generation whose server dies mid-way moves to the standby and
// resends what it had released -- the same noisy rows, not new ones: no
// position is released twice -- and the standby, like the first server,
// never receives a row as the device computed it.
TEST(PrivateRerouteTest, TheStandbyGetsTheSameReleaseNeverTheComputedRows) {
  absl::Mutex mu;
  std::map<std::string, std::vector<std::vector<float>>> received;
  ClusterOptions o;
  o.tls = false;
  o.request_tap = [&](const std::string& node, const v1::StageRequest& r) {
    if (!r.has_forward() || !r.forward().has_hidden()) return;
    auto rows = wire::Decode(r.forward().hidden(), 0, "tapped");
    ASSERT_TRUE(rows.ok()) << rows.status();
    absl::MutexLock lock(&mu);
    for (int64_t i = 0; i < rows->size(0); ++i) {
      at::Tensor row = (*rows)[i].contiguous();
      received[node].emplace_back(row.data_ptr<float>(),
                                  row.data_ptr<float>() + row.numel());
    }
  };
  ClusterPlan plan{"real", RealModel(), false, {{"device", 0, 1}, {"x", 1, 5}}};
  plan.standby["x"] = {"w"};
  auto c = Cluster::Start(testing::TempDir("private_reroute"), {plan}, o);
  ASSERT_TRUE(c.ok()) << c.status();
  DeviceAgentOptions ao;
  ao.controller = (*c)->controller_address();
  ao.insecure = true;
  auto agent = DeviceAgent::Connect(ao);
  ASSERT_TRUE(agent.ok()) << agent.status();
  auto session = (*agent)->OpenSession("real");
  ASSERT_TRUE(session.ok()) << session.status();
  SamplingOptions s = testing::GreedyTokens(16);
  s.privacy.epsilon = 50;
  s.privacy.clip = 2.0;
  int tokens = 0;
  auto stats =
      (*session)->Generate("Once upon a time", s, [&](absl::string_view) {
        if (++tokens == 5) (*c)->Kill("x");
      });
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->reroutes, 1);
  EXPECT_THAT((*session)->route(), HasSubstr("w [1, 5)"));
  const auto raw = DeviceRows("Once upon a time", stats->tokens);
  absl::MutexLock lock(&mu);
  const auto& x = received["x"];
  const auto& w = received["w"];
  // The standby rebuilt its cache from the first position: every row.
  ASSERT_EQ(w.size(), raw.size());
  ASSERT_GT(x.size(), 0u);
  ASSERT_LT(x.size(), raw.size());
  EXPECT_EQ(stats->private_rows, static_cast<int64_t>(raw.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_EQ(w[i], x[i]) << "position " << i << " was released again";
  }
  for (size_t i = 0; i < w.size(); ++i) {
    int64_t same = 0;
    for (size_t j = 0; j < raw[i].size(); ++j) same += w[i][j] == raw[i][j];
    EXPECT_EQ(same, 0) << "row " << i << " reached the standby unnoised";
  }
}

}  // namespace
}  // namespace edgesplit
