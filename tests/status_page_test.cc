// The controller's status page in a real browser: headless Chromium
// (Debian's) driven by npm playwright-core (tests/js/status_page.js) opens
// it on a running cluster, finds every node and the planned route drawn,
// and sees the page change by itself when a server is killed. Its JSON is
// checked here too.
#include <cstdio>
#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "edgesplit/device_agent.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "testing/cluster.h"
#include "testing/shell.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using testing::Cluster;
using testing::ClusterPlan;

std::string RealModel() { return testing::SharedDir() + "/models/stories260K"; }

// One line of `pipe`'s output, without its newline ("" at the end).
std::string ReadLine(FILE* pipe) {
  std::string line;
  char buf[4096];
  while (std::fgets(buf, sizeof(buf), pipe) != nullptr) {
    line += buf;
    if (!line.empty() && line.back() == '\n') {
      line.pop_back();
      break;
    }
  }
  return line;
}

TEST(StatusPageTest, ShowsTheClusterAndFollowsAKilledServer) {
  const std::string js = testing::SourceDir() + "/tests/js";
  ASSERT_TRUE(fs::exists(js + "/node_modules/playwright-core"))
      << "run `npm ci --prefix tests/js`";
  ASSERT_TRUE(fs::exists("/usr/bin/chromium"))
      << "Debian's chromium (scripts/install-deps.sh)";
  std::vector<ClusterPlan> plans = {
      {"real-u",
       RealModel(),
       true,
       {{"device", 0, 1}, {"a", 1, 3}, {"b", 3, 5}}}};
  testing::ClusterOptions co;
  co.http = true;
  auto c = Cluster::Start(testing::TempDir("status_page"), plans, co);
  ASSERT_TRUE(c.ok()) << c.status();
  const int port = (*c)->controller_http_port();
  ASSERT_GT(port, 0);

  // A live session, as a device holds one.
  DeviceAgentOptions o;
  o.controller = (*c)->controller_address();
  o.device_name = "device";
  (*c)->SecureDevice("device", &o);
  o.report_profile = false;
  auto agent = DeviceAgent::Connect(o);
  ASSERT_TRUE(agent.ok()) << agent.status();
  auto session = (*agent)->OpenSession("real-u");
  ASSERT_TRUE(session.ok()) << session.status();

  httplib::Client http("127.0.0.1", port);
  auto r = http.Get("/status.json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  json st = json::parse(r->body);
  ASSERT_EQ(st["nodes"].size(), 2u) << r->body;
  EXPECT_EQ(st["nodes"][0]["name"], "a");
  EXPECT_EQ(st["nodes"][0]["state"], "alive");
  EXPECT_EQ(st["plans"][0]["model"], "real-u");
  EXPECT_EQ(st["plans"][0]["stages"].size(), 3u);
  EXPECT_EQ(st["sessions"]["real-u"], 1);
  auto page = http.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->get_header_value("Content-Type"), "text/html; charset=utf-8");
  // Self-contained: no scripts, styles or images to fetch (the browser
  // below also fails on any request outside the controller's port).
  for (const char* fetches : {"<script src", "<link", "@import", "<img"}) {
    EXPECT_THAT(page->body, ::testing::Not(::testing::HasSubstr(fetches)));
  }

  const std::string url = absl::StrCat("http://127.0.0.1:", port, "/");
  const std::string cmd =
      absl::StrCat("node ", testing::ShellQuote(js + "/status_page.js"), " ",
                   testing::ShellQuote(url), " b");
  FILE* pipe = popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  const std::string first = ReadLine(pipe);
  json before = json::parse(first, nullptr, false);
  ASSERT_TRUE(before.is_object()) << "browser said: " << first;
  EXPECT_EQ(before["nodes"], json({{"a", "alive"}, {"b", "alive"}})) << first;
  EXPECT_EQ(before["plans"]["real-u"], json({{"device", "0-1", "device"},
                                             {"a", "1-3", "alive"},
                                             {"b", "3-5", "alive"}}))
      << first;
  EXPECT_THAT(before["titles"][0].get<std::string>(),
              ::testing::HasSubstr("U-shaped"));
  EXPECT_EQ(before["error"], "");

  (*c)->Kill("b");
  const std::string second = ReadLine(pipe);
  const int rc = pclose(pipe);
  EXPECT_EQ(rc, 0) << "status_page.js failed";
  json after = json::parse(second, nullptr, false);
  ASSERT_TRUE(after.is_object()) << "browser said: " << second;
  EXPECT_EQ(after["nodes"]["a"], "alive");
  EXPECT_NE(after["nodes"]["b"], "alive");
  // The route drawn follows: b's stage shows b's new state.
  EXPECT_EQ(after["plans"]["real-u"][2][2], after["nodes"]["b"]);
}

}  // namespace
}  // namespace edgesplit
