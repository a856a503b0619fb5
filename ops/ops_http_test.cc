#include "ops/ops_http.h"

#include <atomic>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"

namespace edgesplit {
namespace {

OpsHttpOptions Options(std::string listen, std::function<bool()> ready) {
  OpsHttpOptions o;
  o.listen = std::move(listen);
  o.ready = std::move(ready);
  return o;
}

TEST(OpsHttpTest, LivenessAlwaysReadinessAsToldElseNotFound) {
  std::atomic<bool> ready{false};
  auto http =
      OpsHttp::Start(Options("127.0.0.1:0", [&] { return ready.load(); }));
  ASSERT_TRUE(http.ok()) << http.status();
  httplib::Client client("127.0.0.1", (*http)->port());
  auto live = client.Get("/healthz");
  ASSERT_TRUE(live);
  EXPECT_EQ(live->status, 200);
  EXPECT_EQ(live->body, "ok\n");
  auto not_ready = client.Get("/readyz");
  ASSERT_TRUE(not_ready);
  EXPECT_EQ(not_ready->status, 503);
  ready = true;
  auto now_ready = client.Get("/readyz");
  ASSERT_TRUE(now_ready);
  EXPECT_EQ(now_ready->status, 200);
  auto other = client.Get("/metricz");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 404);
  (*http)->Stop();
  EXPECT_FALSE(client.Get("/healthz"));  // Nobody listens any more.
}

TEST(OpsHttpTest, BadAddressesAreRefusedNamingTheField) {
  for (const char* bad :
       {"nohost", "127.0.0.1:http", "127.0.0.1:70000", ":9161"}) {
    auto http = OpsHttp::Start(Options(bad, nullptr));
    EXPECT_EQ(http.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(http.status().message(), ::testing::HasSubstr("http_listen"));
  }
  auto first = OpsHttp::Start(Options("127.0.0.1:0", nullptr));
  ASSERT_TRUE(first.ok()) << first.status();
  auto taken = OpsHttp::Start(
      Options(absl::StrCat("127.0.0.1:", (*first)->port()), nullptr));
  EXPECT_EQ(taken.status().code(), absl::StatusCode::kUnavailable);
}

TEST(OpsHttpTest, ServesTheDaemonsOwnPages) {
  OpsHttpOptions o = Options("127.0.0.1:0", nullptr);
  int renders = 0;
  o.pages.push_back({"/status.json", "application/json",
                     [&] { return absl::StrCat("{\"n\": ", ++renders, "}"); }});
  auto http = OpsHttp::Start(o);
  ASSERT_TRUE(http.ok()) << http.status();
  httplib::Client client("127.0.0.1", (*http)->port());
  for (int i = 1; i <= 2; ++i) {  // Rendered per request, never cached.
    auto r = client.Get("/status.json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, absl::StrCat("{\"n\": ", i, "}"));
    EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
    EXPECT_EQ(r->get_header_value("Cache-Control"), "no-store");
  }
  for (const char* other : {"/status.jsonx", "/statusXjson"}) {
    auto missing = client.Get(other);
    ASSERT_TRUE(missing);
    EXPECT_EQ(missing->status, 404) << other;
  }
}

}  // namespace
}  // namespace edgesplit
