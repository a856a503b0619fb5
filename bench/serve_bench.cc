// What `edgesplit serve`'s HTTP layer costs: the same greedy generations
// run through the OpenAI API on loopback (cpp-httplib client, streamed
// server-sent events, JSON per piece) and through the library directly
// (openai::LocalBackend::Generate in-process, the runtime's generator
// under the server), interleaved in one run.
//
//   serve_bench [--model DIR] [--requests N] [--tokens N] [--concurrency C]
//
// Prints, for one client at a time: median time to first token both ways
// and the difference; tokens/s both ways and their ratio. For C clients at
// once: requests/s both ways and their ratio.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/bench_util.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "openai/local_backend.h"
#include "openai/server.h"
#include "testing/test_paths.h"

namespace edgesplit {
namespace {

using Clock = std::chrono::steady_clock;
double Ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

struct Run {
  double ttft_ms = 0;
  double total_ms = 0;
  int64_t tokens = 0;
};

constexpr char kPrompt[] = "Once upon a time, there was a little";

openai::CompletionRequest Request(const std::string& model, int tokens) {
  openai::CompletionRequest r;
  r.model = r.model_field = model;
  r.prompt = kPrompt;
  r.sampling.temperature = 0;
  r.sampling.max_new_tokens = tokens;
  r.sampling.stop_at_eos = false;  // Every run makes `tokens` tokens.
  r.stream = true;
  r.include_usage = true;
  return r;
}

// Through the library: what the server does for a request, without HTTP.
Run Direct(openai::Backend& b, const openai::CompletionRequest& r) {
  Run run;
  const auto t0 = Clock::now();
  bool first = true;
  auto generation = bench::Must(b.Start(r), "start");
  auto result = bench::Must(generation->Run([&](absl::string_view) {
    if (first) run.ttft_ms = Ms(Clock::now() - t0);
    first = false;
    return true;
  }),
                            "generate");
  run.total_ms = Ms(Clock::now() - t0);
  run.tokens = result.completion_tokens;
  return run;
}

// The same request as an API client sends it, streamed.
Run OverHttp(int port, const std::string& model, int tokens) {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(600);
  const std::string body =
      nlohmann::json{
          {"model", model},   {"prompt", kPrompt},
          {"temperature", 0}, {"max_tokens", tokens},
          {"stream", true},   {"stream_options", {{"include_usage", true}}}}
          .dump();
  Run run;
  std::string received;
  const auto t0 = Clock::now();
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.set_header("Content-Type", "application/json");
  req.body = body;
  req.content_receiver = [&](const char* d, size_t n, uint64_t, uint64_t) {
    received.append(d, n);
    // The first event is the empty opening chunk; the second the first
    // piece of text.
    if (run.ttft_ms == 0) {
      size_t events = 0, at = 0;
      while ((at = received.find("\n\n", at)) != std::string::npos) {
        ++events;
        at += 2;
      }
      if (events >= 2) run.ttft_ms = Ms(Clock::now() - t0);
    }
    return true;
  };
  auto res = c.send(req);
  run.total_ms = Ms(Clock::now() - t0);
  if (!res || res->status != 200) {
    std::fprintf(stderr, "request failed\n");
    std::exit(1);
  }
  const size_t usage = received.rfind("\"completion_tokens\":");
  run.tokens = usage == std::string::npos
                   ? 0
                   : std::atoll(received.c_str() + usage + 20);
  return run;
}

// Requests through the API must make as many tokens as direct ones: EOS
// off for every request (the bench's model may end a story early).
class NoEos : public openai::Backend {
 public:
  explicit NoEos(openai::Backend* inner) : inner_(inner) {}
  std::vector<std::string> Models() const override { return inner_->Models(); }
  absl::StatusOr<std::unique_ptr<openai::Generation>> Start(
      const openai::CompletionRequest& r) override {
    openai::CompletionRequest copy = r;
    copy.sampling.stop_at_eos = false;
    return inner_->Start(copy);
  }

 private:
  openai::Backend* inner_;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

int Main(int argc, char** argv) {
  const std::string dir = bench::Flag(
      argc, argv, "model", testing::SharedDir() + "/models/stories260K");
  const int n = std::stoi(bench::Flag(argc, argv, "requests", "20"));
  const int tokens = std::stoi(bench::Flag(argc, argv, "tokens", "64"));
  const int conc = std::stoi(bench::Flag(argc, argv, "concurrency", "4"));
  openai::LocalBackendOptions o;
  o.model_dir = dir;
  o.model_id = "m";
  o.stage.copy_weights = true;
  auto local = bench::Must(openai::LocalBackend::Load(o), "load");
  NoEos backend(local.get());
  openai::ServerOptions so;
  so.listen = "127.0.0.1:0";
  auto server = bench::Must(openai::Server::Start(so, &backend), "serve");
  const openai::CompletionRequest req = Request("m", tokens);
  Direct(backend, req);  // Warm-up both ways.
  OverHttp(server->port(), "m", tokens);

  std::vector<double> ttft_direct, ttft_http;
  double ms_direct = 0, ms_http = 0;
  int64_t tok_direct = 0, tok_http = 0;
  for (int i = 0; i < n; ++i) {
    Run d = Direct(backend, req);
    Run h = OverHttp(server->port(), "m", tokens);
    ttft_direct.push_back(d.ttft_ms);
    ttft_http.push_back(h.ttft_ms);
    ms_direct += d.total_ms;
    ms_http += h.total_ms;
    tok_direct += d.tokens;
    tok_http += h.tokens;
  }
  const double tps_direct = tok_direct / (ms_direct / 1e3);
  const double tps_http = tok_http / (ms_http / 1e3);
  std::printf("model %s, %d requests of %d tokens each way, interleaved\n",
              dir.c_str(), n, tokens);
  std::printf("%-28s %12s %12s %12s\n", "one client", "library", "serve",
              "serve/lib");
  std::printf("%-28s %12.3f %12.3f %+12.3f ms\n", "time to first token (med)",
              Median(ttft_direct), Median(ttft_http),
              Median(ttft_http) - Median(ttft_direct));
  if (Median(ttft_direct) == 0) {
    std::printf(
        "  (no text streamed before the end: a random-weights model's "
        "tokens rarely decode to whole UTF-8; time to first token "
        "needs a trained model)\n");
  }
  std::printf("%-28s %12.1f %12.1f %12.3f\n", "tokens/s", tps_direct, tps_http,
              tps_http / tps_direct);

  // C clients at once, each with n requests, both ways.
  auto concurrent = [&](bool http) {
    const auto t0 = Clock::now();
    std::vector<std::thread> threads;
    for (int c = 0; c < conc; ++c) {
      threads.emplace_back([&] {
        for (int i = 0; i < n; ++i) {
          if (http) {
            OverHttp(server->port(), "m", tokens);
          } else {
            Direct(backend, req);
          }
        }
      });
    }
    for (auto& t : threads) t.join();
    return conc * n / (Ms(Clock::now() - t0) / 1e3);
  };
  const double rps_direct = concurrent(false);
  const double rps_http = concurrent(true);
  std::printf("%-28s %12.2f %12.2f %12.3f\n",
              absl::StrCat(conc, " clients: requests/s").c_str(), rps_direct,
              rps_http, rps_http / rps_direct);
  return 0;
}

}  // namespace
}  // namespace edgesplit

int main(int argc, char** argv) { return edgesplit::Main(argc, argv); }
