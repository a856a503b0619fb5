#include "ops/metrics.h"

#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "ops/ops_http.h"
#include "testing/prometheus_text.h"

namespace edgesplit {
namespace {

using ::testing::HasSubstr;
using testing::ParsePrometheusText;

TEST(MetricsTest, RendersEveryTypeAsTheFormatSays) {
  metrics::Registry r;
  auto* requests = r.AddCounter("demo_requests_total", "Requests.", {"code"});
  auto* temp = r.AddGauge("demo_temperature_celsius", "A gauge.");
  auto* latency =
      r.AddHistogram("demo_latency_seconds", "Latency.", {"op"}, {0.1, 1, 10});
  r.AddCallback(metrics::Type::kGauge, "demo_cached_bytes", "From a callback.",
                {"stage"}, [](const metrics::EmitFn& emit) {
                  emit({"a"}, 5);
                  emit({"b"}, 1e12);
                });
  r.AddCounter("demo_unused_total", "Never used.");
  requests->With({"ok"})->Increment();
  requests->With({"ok"})->Increment(2);
  requests->With({"unavailable"})->Increment();
  requests->With({"ok"})->Increment(-5);  // Ignored: counters only go up.
  temp->Get()->Set(-3.5);
  for (double v : {0.05, 0.1, 0.5, 20.0}) latency->With({"read"})->Observe(v);
  const std::string text = r.Render();
  EXPECT_THAT(text, HasSubstr("# TYPE demo_requests_total counter\n"
                              "demo_requests_total{code=\"ok\"} 3\n"
                              "demo_requests_total{code=\"unavailable\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("demo_temperature_celsius -3.5\n"));
  // Buckets are cumulative and `le` is inclusive (0.1 falls in le="0.1").
  EXPECT_THAT(
      text, HasSubstr("demo_latency_seconds_bucket{op=\"read\",le=\"0.1\"} 2\n"
                      "demo_latency_seconds_bucket{op=\"read\",le=\"1\"} 3\n"
                      "demo_latency_seconds_bucket{op=\"read\",le=\"10\"} 3\n"
                      "demo_latency_seconds_bucket{op=\"read\",le=\"+Inf\"} 4\n"
                      "demo_latency_seconds_sum{op=\"read\"} 20.65\n"
                      "demo_latency_seconds_count{op=\"read\"} 4\n"));
  // Exact integers, not six significant digits.
  EXPECT_THAT(text,
              HasSubstr("demo_cached_bytes{stage=\"b\"} 1000000000000\n"));
  EXPECT_THAT(text, HasSubstr("# HELP demo_unused_total Never used.\n"
                              "# TYPE demo_unused_total counter\n"));

  auto parsed = ParsePrometheusText(text);
  ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << text;
  EXPECT_EQ(parsed->at("demo_requests_total").Sum({{"code", "ok"}}), 3);
  EXPECT_EQ(parsed->at("demo_latency_seconds").type, "histogram");
  EXPECT_EQ(parsed->at("demo_cached_bytes").Sum(), 1e12 + 5);
}

TEST(MetricsTest, LabelValuesAndHelpAreEscaped) {
  metrics::Registry r;
  auto* f =
      r.AddCounter("demo_jobs_total", "Help with \\ and\nnewline.", {"job"});
  const std::string nasty = "a\"b\\c\nd} e=\"f\"";
  f->With({nasty})->Increment();
  const std::string text = r.Render();
  EXPECT_THAT(text, HasSubstr("# HELP demo_jobs_total Help with \\\\ and\\n"
                              "newline.\n"));
  auto parsed = ParsePrometheusText(text);
  ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << text;
  ASSERT_EQ(parsed->at("demo_jobs_total").samples.size(), 1u);
  EXPECT_EQ(parsed->at("demo_jobs_total").samples[0].labels.at("job"), nasty);
}

TEST(MetricsTest, ConcurrentUpdatesAreAllCounted) {
  metrics::Registry r;
  auto* c = r.AddCounter("demo_events_total", "Events.", {"thread"});
  auto* h = r.AddHistogram("demo_sizes", "Sizes.", {}, {1, 2});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10000; ++i) {
        c->With({t % 2 == 0 ? "even" : "odd"})->Increment();
        h->Get()->Observe(i % 3);
        if (i % 1000 == 0) (void)r.Render();  // Scrapes meanwhile.
      }
    });
  }
  for (auto& t : threads) t.join();
  auto parsed = ParsePrometheusText(r.Render());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->at("demo_events_total").Sum(), 40000);
  EXPECT_EQ(parsed->at("demo_sizes").Sum({}, "demo_sizes_count"), 40000);
  EXPECT_EQ(parsed->at("demo_sizes").Sum({}, "demo_sizes_sum"), 40000 - 4);
}

TEST(MetricsTest, ProcessMetricsAreReadFromProc) {
  metrics::Registry r;
  metrics::AddProcessMetrics(&r);
  auto parsed = ParsePrometheusText(r.Render());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_GT(parsed->at("process_resident_memory_bytes").Sum(), 1 << 20);
  EXPECT_GT(parsed->at("process_open_fds").Sum(), 2);
  EXPECT_GT(parsed->at("process_start_time_seconds").Sum(), 1.7e9);
  EXPECT_GE(parsed->at("process_cpu_seconds_total").Sum(), 0);
}

TEST(MetricsTest, BadRegistrationsAbort) {
  metrics::Registry r;
  r.AddCounter("demo_a_total", "A.");
  EXPECT_DEATH(r.AddCounter("demo_a_total", "Again."), "registered twice");
  EXPECT_DEATH(r.AddCounter("demo_count", "No suffix."), "_total");
  EXPECT_DEATH(r.AddGauge("9lives", "Bad name."), "bad metric name");
  EXPECT_DEATH(r.AddGauge("demo_g", "Bad label.", {"__x"}), "bad label");
  EXPECT_DEATH(r.AddHistogram("demo_h", "Bounds.", {}, {2, 1}), "increasing");
  auto* g = r.AddGauge("demo_labelled", "Two labels.", {"a", "b"});
  EXPECT_DEATH(g->With({"only one"}), "labels");
}

// The reader must be able to fail: each of these breaks one rule.
TEST(MetricsTest, TheReaderRefusesWhatScrapersWould) {
  const char* bad[] = {
      "x 1",                                        // no final newline
      "x{a=\"1\" 1\n",                              // unterminated labels
      "x{a=\"\\q\"} 1\n",                           // bad escape
      "x{a=\"1\",a=\"2\"} 1\n",                     // repeated label
      "x{a=\"1\"b=\"2\"} 1\n",                      // no comma
      "# HELP x a \\q b\nx 1\n",                    // bad HELP escape
      "x one\n",                                    // bad value
      "x 1\nx 2\n",                                 // repeated series
      "x 1\ny 1\nx{a=\"b\"} 1\n",                   // split family
      "x 1\n# TYPE x gauge\n",                      // TYPE after samples
      "# TYPE x counter\nx 1\n",                    // counter not _total
      "# TYPE x_total counter\nx_total -1\n",       // negative counter
      "# TYPE h histogram\nh_bucket{le=\"1\"} 2\n"  // no +Inf bucket
      "h_sum 1\nh_count 2\n",
      "# TYPE h histogram\nh_bucket{le=\"1\"} 2\n"  // not cumulative
      "h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
      "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\n"  // count != +Inf
      "h_sum 1\nh_count 3\n",
      "# TYPE x wibble\n",  // unknown type
  };
  for (const char* text : bad) {
    EXPECT_FALSE(ParsePrometheusText(text).ok()) << text;
  }
  EXPECT_TRUE(ParsePrometheusText("# just a comment\nx{a=\"1\",} 1 123\n"
                                  "y NaN\nz +Inf\n")
                  .ok());
}

TEST(MetricsTest, OpsHttpServesTheRegistry) {
  metrics::Registry r;
  r.AddCounter("demo_hits_total", "Hits.")->Get()->Increment(7);
  OpsHttpOptions options;
  options.listen = "127.0.0.1:0";
  options.metrics = &r;
  auto http = OpsHttp::Start(options);
  ASSERT_TRUE(http.ok()) << http.status();
  httplib::Client client("127.0.0.1", (*http)->port());
  auto res = client.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), metrics::kContentType);
  EXPECT_THAT(res->body, HasSubstr("demo_hits_total 7\n"));
}

}  // namespace
}  // namespace edgesplit
