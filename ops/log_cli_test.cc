#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "ops/cli.h"
#include "ops/log.h"

namespace edgesplit {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(LogTest, TextIsOneLineWithTimeLevelProgramAndFields) {
  const std::string line = log::FormatLine(
      log::Format::kText, "edgesplit-server", "2026-12-03T17:55:35.123Z",
      log::Level::kWarning, "two\nlines", {{"node", "a"}, {"why", "x y"}});
  EXPECT_EQ(line,
            "2026-12-03T17:55:35.123Z WARNING edgesplit-server: two\\nlines "
            "node=a why=\"x y\"");
}

TEST(LogTest, JsonIsOneObjectPerLineThatParses) {
  const std::string line =
      log::FormatLine(log::Format::kJson, "edgesplit-controller",
                      "2026-12-03T17:55:35.123Z", log::Level::kError,
                      "plan \"x\" rejected:\n\tbad\x01", {{"model", "m\\1"}});
  EXPECT_EQ(line.find('\n'), std::string::npos);
  auto j = nlohmann::json::parse(line);
  EXPECT_EQ(j["ts"], "2026-12-03T17:55:35.123Z");
  EXPECT_EQ(j["level"], "error");
  EXPECT_EQ(j["program"], "edgesplit-controller");
  EXPECT_EQ(j["msg"], "plan \"x\" rejected:\n\tbad\x01");
  EXPECT_EQ(j["model"], "m\\1");
}

TEST(LogTest, LevelsAndFormatsParseByName) {
  EXPECT_EQ(*log::ParseLevel("warning"), log::Level::kWarning);
  EXPECT_EQ(*log::ParseFormat("json"), log::Format::kJson);
  EXPECT_THAT(std::string(log::ParseLevel("loud").status().message()),
              HasSubstr("debug, info, warning, error"));
  EXPECT_FALSE(log::ParseFormat("xml").ok());
}

class CliTest : public ::testing::Test {
 protected:
  CliTest() : app_("Does a thing.", "prog") {
    app_.add_option("--controller", controller_, "The controller")->required();
    app_.add_option("--model-id", model_, "The model");
    app_.add_flag("--insecure", insecure_, "Plaintext");
    app_.footer("Example:\n  prog --controller 127.0.0.1:50051");
  }
  int Parse(const std::vector<std::string>& args) {
    out_.str("");
    err_.str("");
    return cli::Parse(app_, args, out_, err_);
  }
  CLI::App app_;
  std::string controller_, model_;
  bool insecure_ = false;
  std::ostringstream out_, err_;
};

TEST_F(CliTest, ParsesValuesInBothSpellings) {
  EXPECT_EQ(Parse({"--controller", "h:1", "--model-id=m", "--insecure"}), -1);
  EXPECT_EQ(controller_, "h:1");
  EXPECT_EQ(model_, "m");
  EXPECT_TRUE(insecure_);
}

TEST_F(CliTest, HelpListsTheFlagsAndAnExample) {
  EXPECT_EQ(Parse({"--help"}), cli::kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("--controller"));
  EXPECT_THAT(out_.str(), HasSubstr("--model-id"));
  EXPECT_THAT(out_.str(), HasSubstr("Example:"));
  EXPECT_EQ(err_.str(), "");
}

TEST_F(CliTest, UnknownFlagsSuggestTheClosest) {
  EXPECT_EQ(Parse({"--controller", "h:1", "--modle-id", "m"}), cli::kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("--modle-id: did you mean --model-id?"));
  EXPECT_THAT(err_.str(), HasSubstr("--help"));
  EXPECT_EQ(Parse({"--contoller=h:1"}), cli::kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("did you mean --controller?"));
  // Nothing close: no guess.
  EXPECT_EQ(Parse({"--controller", "h:1", "--zzzzzzzz"}), cli::kExitUsage);
  EXPECT_THAT(err_.str(), Not(HasSubstr("did you mean")));
}

TEST_F(CliTest, MissingRequiredFlagIsAUsageError) {
  EXPECT_EQ(Parse({"--model-id", "m"}), cli::kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("--controller"));
}

TEST(CliLogFlagsTest, BadFormatIsAUsageError) {
  CLI::App app("x", "prog");
  cli::LogFlags flags;
  cli::AddLogFlags(app, &flags);
  std::ostringstream out, err;
  EXPECT_EQ(cli::Parse(app, {"--log-format", "xml"}, out, err),
            cli::kExitUsage);
  EXPECT_EQ(cli::Parse(app, {"--log-format", "json", "--log-level", "warning"},
                       out, err),
            -1);
  EXPECT_TRUE(cli::LogSetup("prog", flags, err));
}

}  // namespace
}  // namespace edgesplit
