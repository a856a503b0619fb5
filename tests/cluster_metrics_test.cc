// The daemons' /metrics after real work: a split generation through two
// servers and a few split training steps, read back with the strict
// Prometheus text reader (testing/prometheus_text.h). Checks that each
// family is there with its type and labels and that the counts agree
// with what the work did.
#include <cmath>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "edgesplit/device_agent.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "testing/cluster.h"
#include "testing/prometheus_text.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace {

using testing::Cluster;
using testing::ClusterPlan;
using testing::ParsePrometheusText;
using testing::PromFamily;
using Families = std::map<std::string, PromFamily>;

std::string RealModel() { return testing::SharedDir() + "/models/stories260K"; }

std::unique_ptr<DeviceAgent> Agent(const Cluster& c, int max_reroutes = 3) {
  DeviceAgentOptions o;
  o.max_reroutes = max_reroutes;
  o.controller = c.controller_address();
  o.device_name = "device";
  c.SecureDevice("device", &o);
  o.report_profile = false;
  auto a = DeviceAgent::Connect(o);
  EXPECT_TRUE(a.ok()) << a.status();
  return a.ok() ? std::move(*a) : nullptr;
}

// GET /metrics from a server's HTTP port, parsed.
Families Scrape(int port) {
  httplib::Client http("127.0.0.1", port);
  auto r = http.Get("/metrics");
  EXPECT_TRUE(r);
  if (!r) return {};
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"),
            "text/plain; version=0.0.4; charset=utf-8");
  auto parsed = ParsePrometheusText(r->body);
  EXPECT_TRUE(parsed.ok()) << parsed.status() << "\n" << r->body;
  return parsed.ok() ? *parsed : Families();
}

// Scrape(port) once no session is open there (a closed stream ends on
// the server shortly after the device let go), or after 10 s.
Families ScrapeWhenIdle(int port) {
  const absl::Time until = absl::Now() + absl::Seconds(10);
  for (;;) {
    Families f = Scrape(port);
    auto open = f.find("edgesplit_server_sessions_open");
    if ((open != f.end() && open->second.Sum() == 0) || absl::Now() > until) {
      return f;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
}

const PromFamily& Family(const Families& f, const std::string& name,
                         const std::string& type) {
  static const PromFamily kNone;
  auto it = f.find(name);
  EXPECT_NE(it, f.end()) << "no family " << name;
  if (it == f.end()) return kNone;
  EXPECT_EQ(it->second.type, type) << name;
  EXPECT_FALSE(it->second.help.empty()) << name;
  return it->second;
}

double Count(const PromFamily& h, const std::map<std::string, std::string>& l) {
  return h.Sum(l, h.name + "_count");
}

class ClusterMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::vector<ClusterPlan> plans = {
        {"real",
         RealModel(),
         false,
         {{"device", 0, 1}, {"a", 1, 3}, {"b", 3, 5}}},
        {"real-u", RealModel(), true, {{"device", 0, 1}, {"b", 1, 5}}},
    };
    testing::ClusterOptions co;
    co.http = true;
    auto c = Cluster::Start(testing::TempDir("metrics"), plans, co);
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = *std::move(c);
  }
  std::unique_ptr<Cluster> cluster_;
};

TEST_F(ClusterMetricsTest, DaemonsCountWhatAGenerationAndTrainingDid) {
  auto agent = Agent(*cluster_);
  ASSERT_NE(agent, nullptr);
  int64_t fed = 0;
  {
    auto session = agent->OpenSession("real");
    ASSERT_TRUE(session.ok()) << session.status();
    SamplingOptions s;
    s.temperature = 0;
    s.max_new_tokens = 12;
    s.stop_at_eos = false;
    auto stats = (*session)->Generate("Once upon a time", s);
    ASSERT_TRUE(stats.ok()) << stats.status();
    // Every token but the last sampled one went through both servers.
    fed = stats->prompt_tokens + static_cast<int64_t>(stats->tokens.size()) - 1;
  }  // Closed: both hops end the session OK.
  EXPECT_EQ(agent->OpenSession("no-such-model").status().code(),
            absl::StatusCode::kNotFound);
  TrainingOptions t;
  t.job_id = "metrics-job";
  t.rank = 2;
  t.u_shaped = true;
  auto trainer = agent->StartTraining("real-u", t);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  TrainingRunOptions run;
  run.batches = {{{1, 2, 3, 4, 5, 6, 7, 8, 9}}};
  run.steps = 3;
  run.eval_every = 0;
  run.checkpoint_every = 0;
  ASSERT_TRUE((*trainer)->Run(run).ok());
  trainer->reset();

  const Families a = ScrapeWhenIdle(cluster_->server("a")->http_port());
  const Families b = ScrapeWhenIdle(cluster_->server("b")->http_port());
  for (const Families* f : {&a, &b}) {
    const auto& opened =
        Family(*f, "edgesplit_server_sessions_opened_total", "counter");
    EXPECT_EQ(opened.Sum({{"kind", "inference"}}), 1);
    const auto& ended =
        Family(*f, "edgesplit_server_sessions_ended_total", "counter");
    EXPECT_EQ(ended.Sum({{"kind", "inference"}, {"reason", "ok"}}), 1);
    EXPECT_EQ(Family(*f, "edgesplit_server_sessions_open", "gauge")
                  .Sum({{"kind", "inference"}}),
              0);
    // Prefill and decode rows, once each, through each server.
    EXPECT_EQ(
        Family(*f, "edgesplit_server_forward_tokens_total", "counter").Sum(),
        fed);
    const auto& step =
        Family(*f, "edgesplit_server_step_duration_seconds", "histogram");
    EXPECT_GE(Count(step, {{"phase", "queue"}}), 12);
    EXPECT_GE(Count(step, {{"phase", "compute"}}), 12);
    EXPECT_GE(Count(step, {{"phase", "total"}}), 12);
    EXPECT_GE(Count(Family(*f, "edgesplit_server_batch_size", "histogram"), {}),
              12);
    EXPECT_GT(Family(*f, "edgesplit_server_message_bytes_total", "counter")
                  .Sum({{"direction", "in"}, {"codec", "fp32"}}),
              fed * 64 * 4);
    EXPECT_EQ(Family(*f, "edgesplit_server_kv_cache_bytes", "gauge").Sum(), 0);
    EXPECT_GT(
        Family(*f, "edgesplit_server_kv_cache_limit_bytes", "gauge").Sum(), 0);
    EXPECT_EQ(Family(*f, "edgesplit_server_ready", "gauge").Sum(), 1);
    EXPECT_GE(
        Family(*f, "edgesplit_server_plan_updates_total", "counter").Sum(), 1);
    Family(*f, "edgesplit_server_adapter_cache_hits_total", "counter");
    Family(*f, "edgesplit_server_adapter_cache_bytes", "gauge");
    EXPECT_EQ(
        Family(*f, "edgesplit_tls_handshakes_refused_total", "counter").Sum(),
        0);
    EXPECT_GT(Family(*f, "process_resident_memory_bytes", "gauge").Sum(), 0);
  }
  // Only the middle hop waits on a next hop.
  const auto& step_a =
      Family(a, "edgesplit_server_step_duration_seconds", "histogram");
  EXPECT_GE(Count(step_a, {{"phase", "next_hop"}}), 12);
  EXPECT_EQ(
      Count(Family(b, "edgesplit_server_step_duration_seconds", "histogram"),
            {{"phase", "next_hop"}}),
      0);
  // The adapter caches are per hosted stage.
  EXPECT_EQ(Family(a, "edgesplit_server_adapter_cache_misses_total", "counter")
                .Sum({{"model", "real"}, {"blocks", "1-3"}}),
            0);
  // Training ran on b only (real-u's one server): three updates, and the
  // head's loss lives on the device (U-shape), so b reports no loss.
  EXPECT_EQ(Family(b, "edgesplit_server_sessions_opened_total", "counter")
                .Sum({{"kind", "training"}}),
            1);
  EXPECT_EQ(
      Family(b, "edgesplit_server_training_steps_total", "counter")
          .Sum(
              {{"job", "metrics-job"}, {"model", "real-u"}, {"blocks", "1-5"}}),
      3);
  EXPECT_EQ(Family(a, "edgesplit_server_training_steps_total", "counter")
                .Sum({{"job", "metrics-job"}}),
            -1);

  // The controller's registry, as its HTTP port serves it.
  auto text = cluster_->controller()->metrics_registry()->Render();
  auto parsed = ParsePrometheusText(text);
  ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << text;
  const Families& c = *parsed;
  const auto& opened =
      Family(c, "edgesplit_controller_sessions_opened_total", "counter");
  EXPECT_EQ(opened.Sum({{"model", "real"}, {"kind", "inference"}}), 1);
  EXPECT_EQ(opened.Sum({{"model", "real-u"}, {"kind", "training"}}), 1);
  EXPECT_EQ(
      Family(c, "edgesplit_controller_session_open_failures_total", "counter")
          .Sum({{"reason", "not_found"}}),
      1);
  const auto& nodes = Family(c, "edgesplit_controller_nodes", "gauge");
  EXPECT_EQ(nodes.Sum({{"state", "alive"}}), 2);
  EXPECT_EQ(nodes.Sum({{"state", "down"}}), 0);
  EXPECT_EQ(Family(c, "edgesplit_controller_reroutes_total", "counter").Sum(),
            0);
  Family(c, "edgesplit_controller_plan_version", "gauge");
  Family(c, "edgesplit_controller_open_sessions", "gauge");
  Family(c, "edgesplit_controller_node_open_sessions", "gauge");
  // Pinned plans: the planner never ran.
  Family(c, "edgesplit_controller_plan_solve_duration_seconds", "histogram");
  Family(c, "edgesplit_controller_replans_total", "counter");
}

// A session that fails is counted by its reason, beside the one that
// finished OK, and leaves the open gauge.
TEST_F(ClusterMetricsTest, FailedSessionsAreCountedByReason) {
  auto agent = Agent(*cluster_, /*max_reroutes=*/0);
  ASSERT_NE(agent, nullptr);
  auto session = agent->OpenSession("real");
  ASSERT_TRUE(session.ok()) << session.status();
  SamplingOptions s;
  s.temperature = 0;
  s.max_new_tokens = 2;
  ASSERT_TRUE((*session)->Generate("Once", s).ok());
  cluster_->Kill("b");  // a's next hop goes away.
  EXPECT_FALSE((*session)->Generate(" upon", s).ok());
  const Families a = ScrapeWhenIdle(cluster_->server("a")->http_port());
  EXPECT_EQ(Family(a, "edgesplit_server_sessions_open", "gauge")
                .Sum({{"kind", "inference"}}),
            0);
  const auto& ended =
      Family(a, "edgesplit_server_sessions_ended_total", "counter");
  EXPECT_EQ(ended.Sum({{"kind", "inference"}, {"reason", "ok"}}), 1);
  // The next hop's stream broke: UNAVAILABLE, as gRPC reports it.
  EXPECT_EQ(ended.Sum({{"kind", "inference"}, {"reason", "unavailable"}}), 1);
  EXPECT_EQ(ended.Sum({{"kind", "inference"}}), 2);
}

}  // namespace
}  // namespace edgesplit
