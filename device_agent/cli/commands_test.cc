#include "device_agent/cli/commands.h"

#include <filesystem>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "base/file_util.h"
#include "controller/plan.h"
#include "device_agent/cli/flag_help.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "security/token.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace cli {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

struct Result {
  int code;
  std::string out, err;
};

Result RunCli(std::vector<std::string> args) {
  std::ostringstream out, err;
  int code = Run(args, out, err);
  return {code, out.str(), err.str()};
}

TEST(CommandsTest, InitInfoAndGenerateOnARandomModel) {
  for (std::string arch : {"gpt2", "llama"}) {
    const std::string dir = testing::TempDir("cli_" + arch);
    Result init = RunCli({"model", "init", "--arch", arch, "--preset", "tiny",
                          "--out", dir, "--seed", "3"});
    ASSERT_EQ(init.code, 0) << init.err;
    Result info = RunCli({"model", "info", dir});
    ASSERT_EQ(info.code, 0) << info.err;
    EXPECT_THAT(info.out, HasSubstr("architecture:   " + arch));
    EXPECT_THAT(info.out, HasSubstr("parameters:"));
    EXPECT_THAT(info.out, HasSubstr("    3  "));  // Block 3's bytes.
    Result gen = RunCli({"generate", "--model", dir, "--prompt", "Hello",
                         "--max-new-tokens", "8", "--seed", "1"});
    ASSERT_EQ(gen.code, 0) << gen.err;
    EXPECT_THAT(gen.err, HasSubstr("new tokens: 8"));
    EXPECT_THAT(gen.err, HasSubstr("tokens/s"));
    // Same seed, same split-independent text.
    Result again =
        RunCli({"generate", "--model", dir, "--prompt", "Hello",
                "--max-new-tokens", "8", "--seed", "1", "--split", "1,3"});
    ASSERT_EQ(again.code, 0) << again.err;
    EXPECT_EQ(again.out, gen.out);
  }
}

TEST(CommandsTest, GreedyOnTheRealModelStreamsTheStory) {
  const std::string model = testing::SharedDir() + "/models/stories260K";
  Result r =
      RunCli({"generate", "--model", model, "--prompt", "Once upon a time",
              "--temperature", "0", "--max-new-tokens", "20"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith(", there was a little girl named Lily."));
  EXPECT_THAT(r.err, HasSubstr("prompt tokens: 5"));
  // Quantized at load: the same story as long as greedy choices agree
  // (q8_0 agrees on 98.9% of next tokens, see quantized_stage_test).
  r = RunCli({"generate", "--model", model, "--prompt", "Once upon a time",
              "--temperature", "0", "--max-new-tokens", "8", "--weights",
              "q8_0"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith(", there was a little girl"));
}

// --chat formats the prompt with the model's chat template: with a
// Mistral-style template on the real model, the ids are BOS + "[INST] ...
// [/INST]", so the greedy reply equals plain generation from that text.
TEST(CommandsTest, ChatUsesTheModelsChatTemplate) {
  const std::string shared = testing::SharedDir() + "/models/stories260K";
  const std::string model = testing::TempDir("cli_chat_model");
  for (const auto& entry : std::filesystem::directory_iterator(shared)) {
    std::filesystem::copy(entry.path(),
                          model + "/" + entry.path().filename().string());
  }
  ASSERT_TRUE(WriteFileAtomically(
                  model + "/chat_template.jinja",
                  "{{ bos_token }}{% for m in messages %}{% if m.role == "
                  "'system' %}{{ m.content }}\n{% else %}[INST] {{ m.content "
                  "}} [/INST]{% endif %}{% endfor %}")
                  .ok());
  Result chat = RunCli({"generate", "--model", model, "--chat", "--system",
                        "Tell a story.", "--prompt", "Once upon a time",
                        "--temperature", "0", "--max-new-tokens", "12"});
  ASSERT_EQ(chat.code, 0) << chat.err;
  Result plain = RunCli({"generate", "--model", model, "--prompt",
                         "Tell a story.\n[INST] Once upon a time [/INST]",
                         "--temperature", "0", "--max-new-tokens", "12"});
  ASSERT_EQ(plain.code, 0) << plain.err;
  EXPECT_EQ(chat.out, plain.out);
  EXPECT_FALSE(chat.out.empty());
  // A model without a template says so.
  Result none = RunCli({"generate", "--model", shared, "--chat", "--prompt",
                        "x", "--max-new-tokens", "1"});
  EXPECT_NE(none.code, 0);
  EXPECT_THAT(none.err, HasSubstr("has no chat template"));
}

TEST(CommandsTest, BadUsageIsReported) {
  Result r = RunCli({});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("usage: edgesplit"));
  r = RunCli({"frobnicate"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("unknown command"));
  r = RunCli({"generate", "--model", "/nonexistent", "--prompt", "x"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("/nonexistent"));
  r = RunCli({"generate", "--model", "/x", "--prompt", "x", "--top-p", "2"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("top_p"));
  r = RunCli({"generate", "--model", "/x", "--prompt", "x", "--weights", "q5"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("--weights \"q5\""));
  r = RunCli(
      {"generate", "--model", "/x", "--prompt", "x", "--privacy-epsilon", "8"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("applies to split generation"));
  r = RunCli({"model", "init", "--arch", "bert", "--preset", "tiny", "--out",
              "/tmp/x"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("--arch"));
  r = RunCli({"model", "init", "--arch", "llama", "--preset", "huge", "--out",
              "/tmp/x"});
  EXPECT_THAT(r.err, HasSubstr("unknown preset \"huge\""));
}

// Every command answers --help with its description, each flag's help
// and an example, and refuses an unknown flag as a usage error that names
// the closest one.
TEST(CommandsTest, EveryCommandAnswersHelp) {
  const std::vector<std::string> names = CommandNames();
  ASSERT_GE(names.size(), 17u);
  for (const std::string& name : names) {
    SCOPED_TRACE(name);
    std::vector<std::string> args = absl::StrSplit(name, ' ');
    args.push_back("--help");
    Result r = RunCli(args);
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr("Usage: edgesplit " + name));
    EXPECT_THAT(r.out, HasSubstr("Example:\n  edgesplit " + name));
    int flags = 0;
    for (absl::string_view line : absl::StrSplit(r.out, '\n')) {
      line = absl::StripLeadingAsciiWhitespace(line);
      if (!absl::StartsWith(line, "--")) continue;
      ++flags;
      // "--flag VALUE    its help": something after the name and type.
      std::vector<absl::string_view> words =
          absl::StrSplit(line, ' ', absl::SkipEmpty());
      const size_t name_words = words.size() > 1 && words[1] == "VALUE" ? 2 : 1;
      EXPECT_GT(words.size(), name_words) << "no help for " << line;
    }
    // Flags, or positional words (model info DIR).
    EXPECT_GT(flags + (FindCommandHelp(name)->positional != nullptr), 0);
    args.back() = "--no-such-flag";
    r = RunCli(args);
    EXPECT_EQ(r.code, 2);
    EXPECT_THAT(r.err, HasSubstr("--no-such-flag"));
  }
  // The closest flag, named.
  Result r = RunCli({"generate", "--modle", "x"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("--modle: did you mean --model?"));
  // The top level lists the commands.
  r = RunCli({"--help"});
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("usage: edgesplit"));
}

TEST(CommandsTest, ServeRefusesBadFlagsBeforeServing) {
  const std::string model = testing::SharedDir() + "/models/stories260K";
  struct Case {
    std::vector<std::string> args;
    const char* says;
  };
  for (const Case& c : std::vector<Case>{
           {{"serve"}, "--model DIR"},
           {{"serve", "--model", model, "--controller", "x:1"}, "not both"},
           {{"serve", "--model", model, "--codec", "int8"}, "--codec"},
           {{"serve", "--model", model, "--max-concurrent", "0"},
            "--max-concurrent 0"},
           {{"serve", "--model", model, "--listen", "nowhere"}, "--listen"},
           {{"serve", "--model", model, "--weights", "q9"}, "--weights"},
           {{"serve", "--model", model, "--api-key-file", "/no/such/file"},
            "/no/such/file"},
           {{"serve", "--controller", "x:1"}, "--model-id"},
       }) {
    Result r = RunCli(c.args);
    EXPECT_NE(r.code, 0) << c.args.size();
    EXPECT_THAT(r.err, HasSubstr(c.says));
  }
}

TEST(CommandsTest, CertsInitAndIssueWriteAClusterAndRefuseMistakes) {
  const std::string dir = testing::TempDir("cli_certs");
  Result r = RunCli({"certs", "init", "--cluster", "lab", "--out", dir,
                     "--nodes", "server-a,server-b", "--devices", "phone"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("node-server-a, node-server-b"));
  EXPECT_THAT(r.out, HasSubstr("device-phone"));
  // Again without --force: nothing is overwritten.
  r = RunCli({"certs", "init", "--cluster", "lab", "--out", dir});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("--force"));
  r = RunCli({"certs", "issue", "--dir", dir, "--device", "robot"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("spiffe://lab/device/robot"));
  // A bearer token for a device that keeps no key.
  r = RunCli({"certs", "token", "--dir", dir, "--device", "kiosk"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("bearer token of device kiosk"));
  const std::string token_file = dir + "/device-kiosk.token";
  EXPECT_EQ(
      std::filesystem::status(token_file).permissions() &
          std::filesystem::perms::all,
      std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  EXPECT_EQ(ParseDeviceToken(*ReadFile(token_file))->device(), "kiosk");
  r = RunCli({"certs", "token", "--dir", dir, "--device", "kiosk"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("--force"));
  r = RunCli({"cluster", "status", "--controller", "127.0.0.1:1", "--certs",
              dir, "--token", token_file, "--cert", dir + "/ca.pem"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("--token together with --cert"));
  r = RunCli({"certs", "issue", "--dir", dir, "--device", "a", "--node", "b"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("exactly one"));
  r = RunCli({"certs", "issue", "--dir", dir, "--node", "bad/name"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("bad/name"));
  // A cluster command needs credentials or an explicit --insecure.
  r = RunCli({"cluster", "status", "--controller", "127.0.0.1:1"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("--certs DIR"));
  r = RunCli({"cluster", "status", "--controller", "10.0.0.1:1", "--insecure"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("not a loopback address"));
}

TEST(CommandsTest, PlanPrintsTheTableAndWritesAPinnablePlan) {
  const std::string dir = testing::TempDir("cli_plan");
  ASSERT_EQ(RunCli({"model", "init", "--arch", "gpt2", "--preset", "tiny",
                    "--out", dir + "/m"})
                .code,
            0);
  const std::string cluster =
      testing::SourceDir() + "/configs/cluster/what-if.yaml";
  for (std::string objective : {"latency", "throughput", "energy"}) {
    Result r = RunCli({"plan", "--cluster", cluster, "--model", dir + "/m",
                       "--objective", objective, "--out", dir + "/plan.yaml"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr("objective " + objective));
    EXPECT_THAT(r.out, HasSubstr("transfer ms"));
    EXPECT_THAT(r.out, HasSubstr("device"));
    EXPECT_THAT(r.out, HasSubstr("predicted: time to first token"));
    auto plan = LoadPlanFile(dir + "/plan.yaml");
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_FALSE(plan->automatic);
    EXPECT_EQ(plan->stages.front().node, "device");
    EXPECT_EQ(plan->stages.back().last_block, 4);  // gpt2 tiny's blocks.
  }
  Result bad = RunCli({"plan", "--cluster", cluster, "--model", dir + "/m",
                       "--objective", "speed"});
  EXPECT_EQ(bad.code, 2);
  EXPECT_THAT(bad.err, HasSubstr("unknown objective \"speed\""));
  Result missing =
      RunCli({"plan", "--cluster", dir + "/nope.yaml", "--model", dir + "/m"});
  EXPECT_NE(missing.code, 0);
  EXPECT_THAT(missing.err, HasSubstr("nope.yaml"));
}

}  // namespace
}  // namespace cli
}  // namespace edgesplit
