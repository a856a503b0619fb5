// `edgesplit serve` end to end with the official OpenAI client for Node
// (tests/js/openai_client.js): on a local model and on a cluster's split
// model, greedy output through the API equals the same generation in one
// process; streams, stop strings, chat, 16 concurrent requests, an
// abandoned stream and refused requests behave as OpenAI's API does.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "openai/agent_backend.h"
#include "openai/local_backend.h"
#include "openai/server.h"
#include "runtime/chat_template.h"
#include "testing/cluster.h"
#include "testing/shell.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace {

using testing::ShellQuote;

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr char kPrompt[] = "Once upon a time, there was a little";
// A plain template, so the real model (which ships none) can chat.
constexpr char kTemplate[] =
    "{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}"
    "{{ m.content }}\n{% elif m.role == 'user' %}Q: {{ m.content }}\n"
    "{% else %}A: {{ m.content }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}A:{% endif %}";

// stories260K with a chat template: links to the shared files, never
// copies.
const std::string& ChatModelDir() {
  static const std::string dir = [] {
    const std::string d = testing::TempDir("chat_model") + "/stories260K";
    fs::create_directories(d);
    for (const auto& e :
         fs::directory_iterator(testing::SharedDir() + "/models/stories260K")) {
      fs::create_symlink(fs::absolute(e.path()),
                         d + "/" + e.path().filename().string());
    }
    std::ofstream(d + "/chat_template.jinja") << kTemplate;
    return d;
  }();
  return dir;
}

// What the API must answer: the same generations in one process.
struct Expected {
  std::string completion;  // Greedy, 24 tokens, from kPrompt.
  std::string chat;        // Greedy, 24 tokens, the test's conversation.
};

Expected Reference(const std::string& dir) {
  Expected e;
  auto store = ModelStore::Open(dir);
  EXPECT_TRUE(store.ok()) << store.status();
  auto tok = (*store)->LoadTokenizer();
  auto pipeline = LocalPipeline::Load(**store, {});
  EXPECT_TRUE(tok.ok() && pipeline.ok());
  GenerationOptions g;
  g.sampling.temperature = 0;
  g.max_new_tokens = 24;
  auto seq = (*pipeline)->NewSequence();
  auto r = Generate(*seq, **tok, kPrompt, g);
  EXPECT_TRUE(r.ok()) << r.status();
  e.completion = r->text;
  auto chat = ChatTemplate::Load(dir);
  EXPECT_TRUE(chat.ok()) << chat.status();
  auto text = (*chat)->Render(
      {{"system", "You tell short stories."}, {"user", kPrompt}}, true);
  auto ids = (*chat)->Encode(**tok, *text);
  EXPECT_TRUE(ids.ok()) << ids.status();
  auto chat_seq = (*pipeline)->NewSequence();
  auto c = GenerateTextFromIds(
      **tok, *ids, nullptr,
      [&](absl::Span<const int32_t> p, int32_t eos, const TokenCallback& t) {
        return GenerateIds(*chat_seq, p, g, eos, t);
      });
  EXPECT_TRUE(c.ok()) << c.status();
  e.chat = c->text;
  return e;
}

// Counts what the server's requests did.
class CountingBackend : public openai::Backend {
 public:
  explicit CountingBackend(openai::Backend* inner) : inner_(inner) {}
  std::vector<std::string> Models() const override { return inner_->Models(); }
  absl::StatusOr<std::unique_ptr<openai::Generation>> Start(
      const openai::CompletionRequest& r) override {
    auto g = inner_->Start(r);
    if (!g.ok()) return g.status();
    // The long stream the client abandons comes as from a slow model, so
    // the client leaves before it could end.
    const bool slow = r.sampling.max_new_tokens >= 400;
    // The client's 16 concurrent requests (seed 77) each wait, up to 10 s,
    // until a second one runs beside it: a server that ran requests one at a
    // time leaves paired_most() at 1, however fast the model is.
    const bool pair_up = r.sampling.seed == 77;
    return std::unique_ptr<openai::Generation>(
        new Counted(this, *std::move(g), slow, pair_up));
  }
  // The most of the client's 16 concurrent requests that ran at once.
  int paired_most() {
    absl::MutexLock lock(&mu_);
    return paired_most_;
  }
  int cancelled() {
    absl::MutexLock lock(&mu_);
    return cancelled_;
  }

 private:
  class Counted : public openai::Generation {
   public:
    Counted(CountingBackend* b, std::unique_ptr<openai::Generation> inner,
            bool slow, bool pair_up)
        : b_(b), inner_(std::move(inner)), slow_(slow), pair_up_(pair_up) {}
    absl::StatusOr<openai::CompletionResult> Run(
        const openai::TextSink& sink) override {
      {
        absl::MutexLock lock(&b_->mu_);
        if (pair_up_) {
          b_->paired_most_ = std::max(b_->paired_most_, ++b_->paired_running_);
          // Once two have run at once nobody waits (the last to come may
          // find the others done).
          b_->mu_.AwaitWithTimeout(
              absl::Condition(
                  +[](int* most) { return *most >= 2; }, &b_->paired_most_),
              absl::Seconds(10));
        }
      }
      auto result = inner_->Run([&](absl::string_view text) {
        if (slow_) absl::SleepFor(absl::Milliseconds(5));
        return sink(text);
      });
      absl::MutexLock lock(&b_->mu_);
      if (pair_up_) --b_->paired_running_;
      if (result.status().code() == absl::StatusCode::kCancelled) {
        ++b_->cancelled_;
      }
      return result;
    }

   private:
    CountingBackend* b_;
    std::unique_ptr<openai::Generation> inner_;
    bool slow_;
    bool pair_up_;
  };

  openai::Backend* inner_;
  absl::Mutex mu_;
  int paired_running_ ABSL_GUARDED_BY(mu_) = 0;  // Of the seed-77 requests.
  int paired_most_ ABSL_GUARDED_BY(mu_) = 0;
  int cancelled_ ABSL_GUARDED_BY(mu_) = 0;
};

// Runs the client against the server; its JSON.
json RunClient(int port, const std::string& model, const std::string& stop) {
  const std::string src = testing::SourceDir();
  if (!fs::exists(src + "/tests/js/node_modules/openai")) {
    ADD_FAILURE() << "run `npm ci --prefix tests/js` (needs node and npm)";
    return json();
  }
  const std::string out = testing::TempDir("openai_client") + "/out";
  const std::string command = absl::StrCat(
      "node ", ShellQuote(src + "/tests/js/openai_client.js"), " ",
      ShellQuote(absl::StrCat("http://127.0.0.1:", port, "/v1")), " ",
      ShellQuote(model), " ", ShellQuote(kPrompt), " ", ShellQuote(stop), " > ",
      ShellQuote(out), " 2> ", ShellQuote(out + ".err"));
  const int rc = std::system(command.c_str());
  std::ifstream in(out), err(out + ".err");
  std::string text((std::istreambuf_iterator<char>(in)), {});
  std::string errors((std::istreambuf_iterator<char>(err)), {});
  EXPECT_EQ(rc, 0) << command << "\n" << errors;
  return json::parse(text, nullptr, false);
}

// The scenario's answers against the one-process reference.
void CheckAnswers(const json& out, const Expected& want,
                  const std::string& model, CountingBackend& counting) {
  ASSERT_TRUE(out.is_object()) << out.dump();
  EXPECT_NE(std::find(out["models"].begin(), out["models"].end(), model),
            out["models"].end())
      << out["models"];
  EXPECT_EQ(out["completion"]["text"], want.completion);
  EXPECT_EQ(out["completion"]["object"], "text_completion");
  EXPECT_EQ(out["completion"]["finish"], "length");
  EXPECT_EQ(out["completion"]["usage"]["completion_tokens"], 24);
  EXPECT_GT(out["completion"]["usage"]["prompt_tokens"], 5);
  EXPECT_EQ(out["completion_stream"]["text"], want.completion);
  EXPECT_EQ(out["completion_stream"]["finish"], "length");
  EXPECT_EQ(out["completion_stream"]["usage"], out["completion"]["usage"]);
  EXPECT_GT(out["completion_stream"]["chunks"], 10);
  // Stop strings: the text ends before the first occurrence.
  const std::string stop =
      want.completion.substr(want.completion.size() / 2, 3);
  const std::string before =
      want.completion.substr(0, want.completion.find(stop));
  EXPECT_EQ(out["stopped"]["text"], before);
  EXPECT_EQ(out["stopped"]["finish"], "stop");
  EXPECT_LT(out["stopped"]["usage"]["completion_tokens"], 24);
  EXPECT_EQ(out["stopped_stream"]["text"], before);
  EXPECT_EQ(out["stopped_stream"]["finish"], "stop");
  EXPECT_EQ(out["chat"]["text"], want.chat);
  EXPECT_EQ(out["chat"]["role"], "assistant");
  EXPECT_EQ(out["chat_stream"]["text"], want.chat);
  EXPECT_EQ(out["chat_stream"]["usage"], out["chat"]["usage"]);
  EXPECT_TRUE(out["seeded_equal"].get<bool>());
  EXPECT_EQ(out["abandoned_after"], 3);
  ASSERT_EQ(out["concurrent"].size(), 16u);
  for (const json& t : out["concurrent"]) EXPECT_EQ(t, want.completion);
  EXPECT_GE(counting.paired_most(), 2);
  EXPECT_EQ(out["unknown_model"]["status"], 404);
  EXPECT_EQ(out["unknown_model"]["code"], "model_not_found");
  EXPECT_EQ(out["bad_field"]["status"], 400);
  EXPECT_EQ(out["bad_field"]["param"], "temperature");
  EXPECT_EQ(out["malformed"]["status"], 400);
  EXPECT_EQ(out["malformed"]["body"]["error"]["type"], "invalid_request_error");
  EXPECT_EQ(out["after_errors"], want.completion);
  // The abandoned stream was cancelled, not run to its 400 tokens.
  for (int i = 0; i < 200 && counting.cancelled() == 0; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(counting.cancelled(), 1);
}

// Serves `backend` on a free port and runs the client's scenario on it.
void ServeAndCheck(openai::Backend* backend, const std::string& model,
                   const Expected& want) {
  CountingBackend counting(backend);
  openai::ServerOptions so;
  so.listen = "127.0.0.1:0";
  auto server = openai::Server::Start(so, &counting);
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string stop =
      want.completion.substr(want.completion.size() / 2, 3);
  CheckAnswers(RunClient((*server)->port(), model, stop), want, model,
               counting);
}

TEST(OpenAiApiTest, LocalModelThroughTheOpenAiClient) {
  const Expected want = Reference(ChatModelDir());
  openai::LocalBackendOptions o;
  o.model_dir = ChatModelDir();
  auto local = openai::LocalBackend::Load(o);
  ASSERT_TRUE(local.ok()) << local.status();
  ServeAndCheck(local->get(), "stories260K", want);
}

TEST(OpenAiApiTest, SplitModelThroughTheOpenAiClient) {
  const Expected want = Reference(ChatModelDir());
  auto cluster = testing::Cluster::Start(
      testing::TempDir("openai_cluster"),
      {{"tales", ChatModelDir(), false, {{"device", 0, 1}, {"a", 1, 5}}}});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  openai::AgentBackendOptions o;
  o.agent.controller = (*cluster)->controller_address();
  (*cluster)->SecureDevice("device", &o.agent);
  o.agent.generation_timeout = absl::Seconds(60);
  o.model_ids = {"tales"};
  auto split = openai::AgentBackend::Connect(o);
  ASSERT_TRUE(split.ok()) << split.status();
  ServeAndCheck(split->get(), "tales", want);
}

// The `edgesplit serve` command itself: a process that prints where it
// listens, answers, and exits 0 on SIGTERM.
TEST(OpenAiApiTest, TheServeCommandAnswersAndStopsOnSigterm) {
  const std::string dir = testing::TempDir("serve_cli");
  const std::string log = dir + "/out";
  const std::string model = ChatModelDir();
  // Only async-signal-safe calls between fork and exec (this process has
  // threads).
  const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(fd, 1);
    execl(EDGESPLIT_CLI, EDGESPLIT_CLI, "serve", "--model", model.c_str(),
          "--listen", "127.0.0.1:0", "--threads", "1",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  close(fd);
  int port = 0;
  for (int i = 0; i < 3000 && port == 0; ++i) {
    std::ifstream in(log);
    std::string text((std::istreambuf_iterator<char>(in)), {});
    const size_t at = text.find("http://127.0.0.1:");
    if (at != std::string::npos && text.find("/v1", at) != std::string::npos) {
      port = std::atoi(text.c_str() + at + 17);
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_GT(port, 0) << "no \"listening on\" line";
  httplib::Client c("127.0.0.1", port);
  auto r = c.Post("/v1/completions",
                  R"({"model": "stories260K", "prompt": "Once", "max_tokens": 4,
                      "temperature": 0})",
                  "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body)["usage"]["completion_tokens"], 4);
  kill(pid, SIGTERM);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

}  // namespace
}  // namespace edgesplit
