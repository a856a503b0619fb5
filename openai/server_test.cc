#include "openai/server.h"

#include <atomic>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "testing/prometheus_text.h"

namespace edgesplit {
namespace openai {
namespace {

using json = nlohmann::json;

// Streams `pieces` (after waiting for `gate` requests to be running at
// once, when set), recording what it saw.
class FakeBackend : public Backend {
 public:
  std::vector<std::string> Models() const override { return {"m", "m:a"}; }
  absl::StatusOr<std::unique_ptr<Generation>> Start(
      const CompletionRequest& r) override {
    if (r.model != "m") return absl::NotFoundError("model is not served");
    {
      absl::MutexLock lock(&mu);
      last = r;
    }
    return std::unique_ptr<Generation>(new Fake(this));
  }

  std::vector<std::string> pieces = {"Hel", "lo", " \xE4\xB8\x96"};
  bool slow = false;
  std::atomic<int> cancelled{0};
  absl::Mutex mu;
  int running ABSL_GUARDED_BY(mu) = 0;
  int done ABSL_GUARDED_BY(mu) = 0;
  int gate ABSL_GUARDED_BY(mu) = 0;
  CompletionRequest last ABSL_GUARDED_BY(mu);

 private:
  class Fake : public Generation {
   public:
    explicit Fake(FakeBackend* b) : b_(b) {}
    absl::StatusOr<CompletionResult> Run(const TextSink& sink) override {
      {
        absl::MutexLock lock(&b_->mu);
        ++b_->running;
        if (b_->gate > 0) {
          // Every request of the batch must be running at once.
          auto all_in = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(b_->mu) {
            return b_->running >= b_->gate;
          };
          if (!b_->mu.AwaitWithTimeout(absl::Condition(&all_in),
                                       absl::Seconds(30))) {
            --b_->running;
            return absl::DeadlineExceededError("requests ran one at a time");
          }
        }
      }
      CompletionResult out;
      for (const std::string& piece : b_->pieces) {
        if (!sink(piece)) {
          b_->cancelled.fetch_add(1);
          absl::MutexLock lock(&b_->mu);
          --b_->running;
          return absl::CancelledError("gone");
        }
        out.text += piece;
        if (b_->slow) absl::SleepFor(absl::Milliseconds(20));
      }
      absl::MutexLock lock(&b_->mu);
      ++b_->done;
      out.prompt_tokens = 3;
      out.completion_tokens = static_cast<int64_t>(b_->pieces.size());
      out.finish_reason = "length";
      return out;
    }

   private:
    FakeBackend* b_;
  };
};

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override { Start({}); }
  void Start(ServerOptions o) {
    server_.reset();
    o.listen = "127.0.0.1:0";
    auto s = Server::Start(o, &backend_);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
  }
  httplib::Client Client() {
    httplib::Client c("127.0.0.1", server_->port());
    c.set_read_timeout(60);
    return c;
  }
  FakeBackend backend_;
  std::unique_ptr<Server> server_;
};

// The error object every failure answers with.
void ExpectError(const httplib::Result& r, int status, const char* param) {
  ASSERT_TRUE(r) << "no response";
  EXPECT_EQ(r->status, status) << r->body;
  json j = json::parse(r->body, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r->body;
  EXPECT_TRUE(j["error"]["message"].is_string()) << r->body;
  EXPECT_TRUE(j["error"]["type"].is_string()) << r->body;
  if (param != nullptr) {
    EXPECT_EQ(j["error"]["param"], param) << r->body;
  }
}

TEST_F(ServerTest, ListsModelsAndAnswersACompletion) {
  auto c = Client();
  auto models = c.Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(json::parse(models->body)["data"][1]["id"], "m:a");
  auto r = c.Post("/v1/completions",
                  R"({"model": "m", "prompt": "x", "max_tokens": 3})",
                  "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json j = json::parse(r->body);
  EXPECT_EQ(j["choices"][0]["text"], "Hello \xE4\xB8\x96");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["total_tokens"], 6);
}

TEST_F(ServerTest, StreamsServerSentEvents) {
  auto c = Client();
  auto r =
      c.Post("/v1/chat/completions",
             R"({"model": "m", "messages": [{"role": "user", "content": "x"}],
          "stream": true})",
             "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/event-stream");
  std::vector<json> chunks;
  size_t at = 0;
  std::string text;
  bool done = false;
  while (at < r->body.size()) {
    const size_t end = r->body.find("\n\n", at);
    ASSERT_NE(end, std::string::npos);
    const std::string event = r->body.substr(at, end - at);
    at = end + 2;
    ASSERT_EQ(event.rfind("data: ", 0), 0u) << event;
    if (event == "data: [DONE]") {
      done = true;
      continue;
    }
    chunks.push_back(json::parse(event.substr(6)));
    const json& d = chunks.back()["choices"][0]["delta"];
    if (d.contains("content")) text += d["content"].get<std::string>();
  }
  EXPECT_TRUE(done);
  ASSERT_EQ(chunks.size(), 5u);  // Role, three pieces, finish.
  EXPECT_EQ(chunks[0]["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(chunks[4]["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(text, "Hello \xE4\xB8\x96");
}

TEST_F(ServerTest, ErrorsHaveOpenAisShapeAndServingGoesOn) {
  auto c = Client();
  ExpectError(c.Post("/v1/completions", "{\"model\": ", "application/json"),
              400, nullptr);
  ExpectError(c.Post("/v1/completions", R"({"model": "m", "prompt": 3})",
                     "application/json"),
              400, "prompt");
  ExpectError(c.Post("/v1/completions", R"({"model": "nope", "prompt": "x"})",
                     "application/json"),
              404, "model");
  ExpectError(c.Get("/v1/nothing"), 404, nullptr);
  ExpectError(
      c.Post("/v1/completions", std::string(9 << 20, ' '), "application/json"),
      413, nullptr);
  auto ok = c.Post("/v1/completions", R"({"model": "m", "prompt": "x"})",
                   "application/json");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
}

TEST_F(ServerTest, ApiKeyIsRequiredWhenSet) {
  ServerOptions o;
  o.api_key = "sekrit";
  Start(o);
  auto c = Client();
  ExpectError(c.Get("/v1/models"), 401, nullptr);
  c.set_bearer_token_auth("wrong!");
  ExpectError(c.Get("/v1/models"), 401, nullptr);
  c.set_bearer_token_auth("sekrit");
  auto r = c.Get("/v1/models");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(ServerTest, SixteenRequestsRunConcurrently) {
  {
    absl::MutexLock lock(&backend_.mu);
    backend_.gate = 16;
  }
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 16; ++i) {
    threads.emplace_back([&] {
      auto c = Client();
      auto r = c.Post("/v1/completions", R"({"model": "m", "prompt": "x"})",
                      "application/json");
      if (r && r->status == 200) ok.fetch_add(1);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 16);
}

TEST_F(ServerTest, AClientLeavingAStreamCancelsItsGeneration) {
  backend_.pieces.assign(500, "word ");
  backend_.slow = true;
  auto c = Client();
  int seen = 0;
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.set_header("Content-Type", "application/json");
  req.body = R"({"model": "m", "prompt": "x", "stream": true})";
  req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) {
    return ++seen < 3;  // Leaves early.
  };
  auto r = c.send(req);
  EXPECT_FALSE(r);
  // The server sees the closed connection at its next writes.
  for (int i = 0; i < 500 && backend_.cancelled.load() == 0; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(backend_.cancelled.load(), 1);
  absl::MutexLock lock(&backend_.mu);
  EXPECT_EQ(backend_.done, 0);
}

TEST_F(ServerTest, AClientLeavingARequestCancelsItsGeneration) {
  backend_.pieces.assign(500, "word ");
  backend_.slow = true;  // 10 s if nobody stops it.
  httplib::Client c("127.0.0.1", server_->port());
  c.set_read_timeout(0, 200000);  // Gives up after 0.2 s and closes.
  auto r = c.Post("/v1/completions", R"({"model": "m", "prompt": "x"})",
                  "application/json");
  EXPECT_FALSE(r);
  c.stop();
  for (int i = 0; i < 500 && backend_.cancelled.load() == 0; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(backend_.cancelled.load(), 1);
  absl::MutexLock lock(&backend_.mu);
  EXPECT_EQ(backend_.done, 0);
}

}  // namespace
}  // namespace openai
}  // namespace edgesplit

namespace edgesplit {
namespace openai {
namespace {

TEST_F(ServerTest, MetricsCountRequestsTokensAndLatencies) {
  auto c = Client();
  ASSERT_TRUE(c.Post("/v1/completions", R"({"model": "m", "prompt": "x"})",
                     "application/json"));
  ASSERT_TRUE(c.Post("/v1/chat/completions",
                     R"({"model": "m", "stream": true,
                         "messages": [{"role": "user", "content": "x"}]})",
                     "application/json"));
  ASSERT_TRUE(c.Post("/v1/completions", R"({"model": "nope", "prompt": "x"})",
                     "application/json"));  // 404
  ASSERT_TRUE(c.Get("/no/such/path"));
  auto r = c.Get("/metrics");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), metrics::kContentType);
  auto parsed = testing::ParsePrometheusText(r->body);
  ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << r->body;
  const auto& f = *parsed;
  const auto& requests = f.at("edgesplit_serve_requests_total");
  EXPECT_EQ(requests.type, "counter");
  EXPECT_EQ(requests.Sum({{"endpoint", "/v1/completions"}, {"code", "200"}}),
            1);
  EXPECT_EQ(requests.Sum({{"endpoint", "/v1/completions"}, {"code", "404"}}),
            1);
  EXPECT_EQ(
      requests.Sum({{"endpoint", "/v1/chat/completions"}, {"code", "200"}}), 1);
  EXPECT_EQ(requests.Sum({{"endpoint", "other"}, {"code", "404"}}), 1);
  // Two finished completions, three pieces (tokens, for the fake) each.
  EXPECT_EQ(
      f.at("edgesplit_serve_completion_tokens_total").Sum({{"model", "m"}}), 6);
  EXPECT_EQ(f.at("edgesplit_serve_prompt_tokens_total").Sum(), 6);
  const auto& ttft = f.at("edgesplit_serve_time_to_first_text_seconds");
  EXPECT_EQ(ttft.type, "histogram");
  EXPECT_EQ(ttft.Sum({}, "edgesplit_serve_time_to_first_text_seconds_count"),
            2);
  // Every request that got as far as the backend was timed; the 404 too.
  EXPECT_EQ(f.at("edgesplit_serve_request_duration_seconds")
                .Sum({}, "edgesplit_serve_request_duration_seconds_count"),
            3);
  EXPECT_EQ(f.at("edgesplit_serve_requests_in_flight").Sum(), 0);
  EXPECT_GT(f.at("process_resident_memory_bytes").Sum(), 0);
}

TEST_F(ServerTest, MetricsNeedTheApiKeyWhenOneIsSet) {
  ServerOptions o;
  o.api_key = "k";
  Start(o);
  auto c = Client();
  auto r = c.Get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  c.set_bearer_token_auth("k");
  r = c.Get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

}  // namespace
}  // namespace openai
}  // namespace edgesplit
