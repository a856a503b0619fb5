// The daemons as operators run them: --help with flags and an example,
// exit code 2 with the closest flag for a mistyped one, 1 for a bad config,
// and one JSON object per log line with --log-format json.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "testing/shell.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace {

using ::testing::HasSubstr;
using testing::ShellQuote;

struct Ran {
  int code;
  std::string out, err;
};

Ran RunDaemon(const std::string& binary, const std::string& flags) {
  const std::string dir = testing::TempDir("daemon_cli");
  const std::string cmd =
      absl::StrCat(ShellQuote(binary), " ", flags, " > ", dir, "/out 2> ", dir,
                   "/err < /dev/null");
  const int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1,
          ReadFile(dir + "/out").value_or(""),
          ReadFile(dir + "/err").value_or("")};
}

class DaemonCliTest : public ::testing::TestWithParam<const char*> {};

TEST_P(DaemonCliTest, HelpMistakesAndExitCodes) {
  const std::string bin = GetParam();
  Ran r = RunDaemon(bin, "--help");
  EXPECT_EQ(r.code, 0) << r.err;
  for (const char* says : {"--config", "--listen", "--log-format",
                           "--log-level", "Example:", "Exit codes:"}) {
    EXPECT_THAT(r.out, HasSubstr(says));
  }
  r = RunDaemon(bin, "--config x.yaml --lisen 127.0.0.1:1");
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("--lisen: did you mean --listen?"));
  r = RunDaemon(bin, "");  // --config is required.
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("--config"));
  r = RunDaemon(bin, "--config x.yaml --log-format xml");
  EXPECT_EQ(r.code, 2);
  // A config that is not there: exit 1, one JSON log line naming it.
  r = RunDaemon(bin, "--config /no/such/config.yaml --log-format json");
  EXPECT_EQ(r.code, 1);
  std::vector<std::string> lines =
      absl::StrSplit(r.err, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 1u) << r.err;
  auto j = nlohmann::json::parse(lines[0], nullptr, false);
  ASSERT_TRUE(j.is_object()) << lines[0];
  EXPECT_EQ(j["level"], "error");
  EXPECT_THAT(j["msg"].get<std::string>(), HasSubstr("/no/such/config.yaml"));
  EXPECT_THAT(j["ts"].get<std::string>(), ::testing::EndsWith("Z"));
  // Text: a timestamp, the level and the program first.
  r = RunDaemon(bin, "--config /no/such/config.yaml");
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, ::testing::MatchesRegex(
                         "[0-9-]+T[0-9:.]+Z ERROR edgesplit-[a-z]+: .*\n"));
}

INSTANTIATE_TEST_SUITE_P(Daemons, DaemonCliTest,
                         ::testing::Values(EDGESPLIT_SERVER_BIN,
                                           EDGESPLIT_CONTROLLER_BIN));

}  // namespace
}  // namespace edgesplit
