// Chaos soak: a local cluster of real daemons (edgesplit-controller and N
// edgesplit-server processes on loopback, the first server behind a link
// emulator) serves S concurrent generating sessions and one split training
// job for M minutes while the bench disturbs it:
//   - every `--kill-every` seconds a random server is SIGKILLed and started
//     again 3 s later (same port, same checkpoint directory);
//   - at 35% of the run one server is SIGSTOPped (silent, its connections
//     open) for 20 s;
//   - at 55% the controller is SIGKILLed and started again 2 s later;
//   - from 70% to 80% the first server's link is slowed (2 MB/s each way,
//     20 ms one way).
// It reports sessions opened / finished / failed, continuations that differ
// from the undisturbed run (each prompt generated once before the chaos
// starts, greedy), the training job's steps, failures, resumes and whether
// replayed steps (after a resume from a checkpoint) reproduce their first
// loss, and every daemon's RSS over time (per incarnation).
//
//   soak_bench [--bin build] [--model ../shared/models/stories260K]
//              [--data ../shared/data/tinyshakespeare.txt] [--minutes 10]
//              [--sessions 64] [--servers 4] [--tokens 32]
//              [--port-base 47100] [--kill-every 40] [--work DIR] [--seed 1]
//
// scripts/soak.sh builds and runs it. Not part of CI (it takes minutes).
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "edgesplit/device_agent.h"
#include "testing/link_emulator.h"

namespace edgesplit {
namespace {

struct Flags {
  std::string bin = "build";
  std::string model = "../shared/models/stories260K";
  std::string data = "../shared/data/tinyshakespeare.txt";
  double minutes = 10;
  int sessions = 64;
  int servers = 4;
  int tokens = 32;
  int port_base = 47100;
  int kill_every = 40;
  std::string work;
  uint64_t seed = 1;
};

// A daemon process the bench starts, kills and starts again.
struct Daemon {
  std::string name;
  std::vector<std::string> argv;
  std::string log;
  pid_t pid = -1;
  int incarnation = 0;
  bool stopped = false;  // SIGSTOPped.
};

void Start(Daemon& d) {
  const pid_t pid = fork();
  if (pid == 0) {
    const int fd = open(d.log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    std::vector<char*> args;
    for (std::string& a : d.argv) args.push_back(a.data());
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  d.pid = pid;
  ++d.incarnation;
}

void Kill(Daemon& d) {
  if (d.pid <= 0) return;
  kill(d.pid, SIGKILL);
  waitpid(d.pid, nullptr, 0);
  d.pid = -1;
  d.stopped = false;
}

int64_t RssKb(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6);
  }
  return -1;
}

void Write(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

// Everything the threads count. Thread-safe.
struct Tally {
  absl::Mutex mu;
  int64_t opened ABSL_GUARDED_BY(mu) = 0;
  int64_t open_refused ABSL_GUARDED_BY(mu) = 0;
  int64_t finished ABSL_GUARDED_BY(mu) = 0;
  int64_t failed ABSL_GUARDED_BY(mu) = 0;
  int64_t wrong ABSL_GUARDED_BY(mu) = 0;
  int64_t tokens ABSL_GUARDED_BY(mu) = 0;
  int64_t reroutes ABSL_GUARDED_BY(mu) = 0;
  std::map<std::string, int> refusals ABSL_GUARDED_BY(mu);
  std::vector<std::string> failures ABSL_GUARDED_BY(mu);
  std::vector<std::string> events ABSL_GUARDED_BY(mu);
};

class Soak {
 public:
  explicit Soak(Flags f) : f_(std::move(f)) {}

  int Run() {
    if (!SetUp()) return 1;
    const auto agent = Connect();
    if (agent == nullptr) return 1;
    if (!References(*agent)) return 1;
    t0_ = absl::Now();
    std::vector<std::thread> threads;
    for (int i = 0; i < f_.sessions; ++i) {
      threads.emplace_back([this, &agent, i] { SessionLoop(*agent, i); });
    }
    std::thread trainer([this, &agent] { TrainLoop(*agent); });
    std::thread rss([this] { SampleRss(); });
    Chaos();
    stop_.Notify();
    for (auto& t : threads) t.join();
    trainer.join();
    rss.join();
    Report();
    for (Daemon& d : daemons_) Kill(d);
    return 0;
  }

 private:
  std::string Addr(int i) const {
    return absl::StrCat("127.0.0.1:", f_.port_base + i);
  }
  void Event(const std::string& what) {
    absl::MutexLock lock(&tally_.mu);
    tally_.events.push_back(absl::StrFormat(
        "%6.1f s  %s", absl::ToDoubleSeconds(absl::Now() - t0_), what));
    std::cerr << tally_.events.back() << "\n";
  }
  bool Sleep(absl::Duration d) {  // False once the run is over.
    return !stop_.WaitForNotificationWithTimeout(d);
  }

  bool SetUp();
  std::unique_ptr<DeviceAgent> Connect();
  bool References(DeviceAgent& agent);
  void SessionLoop(DeviceAgent& agent, int i);
  void TrainLoop(DeviceAgent& agent);
  void SampleRss();
  void Chaos();
  void Report();

  const Flags f_;
  std::string work_;
  std::vector<Daemon> daemons_;  // [0] controller, then servers.
  std::unique_ptr<testing::LinkEmulator> link_;  // In front of server 0.
  std::vector<std::string> prompts_;
  std::map<std::string, std::string> reference_;
  absl::Time t0_;
  absl::Notification stop_;
  Tally tally_;
  // The servers on the newest session's and the trainer's routes (chaos
  // picks its victims among them, so disturbances hit work in flight).
  absl::Mutex routes_mu_;
  std::string session_route_ ABSL_GUARDED_BY(routes_mu_);
  std::string trainer_route_ ABSL_GUARDED_BY(routes_mu_);
  // A server index (1-based in daemons_) on `route`, else a random one.
  size_t Victim(const std::string& route, std::mt19937_64& rng) {
    std::vector<size_t> on;
    for (int i = 0; i < f_.servers; ++i) {
      if (route.find(absl::StrCat("s", i, " [")) != std::string::npos) {
        on.push_back(1 + i);
      }
    }
    return on.empty() ? 1 + rng() % f_.servers : on[rng() % on.size()];
  }
  absl::Mutex daemons_mu_;  // Chaos vs the RSS sampler.
  // (t, daemon, incarnation, RSS kB)
  std::vector<std::tuple<double, std::string, int, int64_t>> rss_;
  // Training: step -> first loss; replays compared against it.
  std::map<int64_t, double> first_loss_;
  int64_t train_steps_ = 0, train_failures_ = 0, train_resumes_ = 0;
  int64_t replayed_ = 0;
  double max_replay_diff_ = 0;
  std::vector<std::string> train_errors_;
};

bool Soak::SetUp() {
  namespace fs = std::filesystem;
  work_ = f_.work.empty()
              ? (fs::temp_directory_path() / "edgesplit-soak").string()
              : f_.work;
  const std::string& work = work_;
  fs::remove_all(work);
  fs::create_directories(work + "/logs");
  const std::string model = fs::absolute(f_.model);
  Write(work + "/plan.yaml",
        absl::StrCat("model: {id: stories260K, path: ", model,
                     "}\nplanner: {objective: latency, prompt_tokens: 16, "
                     "output_tokens: ",
                     f_.tokens, ", min_device_blocks: 1, u_shaped: auto}\n"));
  std::string nodes;
  for (int i = 0; i < f_.servers; ++i) {
    absl::StrAppend(&nodes, "  - {name: s", i, ", memory_mb: 2048}\n");
  }
  Write(work + "/controller.yaml",
        absl::StrCat("listen: ", Addr(0),
                     "\ninsecure: true\nkeepalive_s: 2\nstate_dir: ", work,
                     "/controller-state\nheartbeat_interval_ms: 500\n"
                     "dead_after_missed: 6\nnodes:\n",
                     nodes, "plans: [plan.yaml]\n"));
  daemons_.push_back({"controller",
                      {f_.bin + "/controller/edgesplit-controller", "--config",
                       work + "/controller.yaml"},
                      work + "/logs/controller.log"});
  testing::LinkSpec unlimited;
  auto link = testing::LinkEmulator::Start(Addr(1), unlimited);
  if (!link.ok()) {
    std::cerr << "link emulator: " << link.status() << "\n";
    return false;
  }
  link_ = *std::move(link);
  for (int i = 0; i < f_.servers; ++i) {
    const std::string name = absl::StrCat("s", i);
    Write(work + "/" + name + ".yaml",
          absl::StrCat("name: ", name, "\nlisten: ", Addr(1 + i),
                       i == 0 ? "\nadvertise: " + link_->address() : "",
                       "\ncontroller: ", Addr(0),
                       "\ninsecure: true\nkeepalive_s: 2\nmemory_mb: 2048\n"
                       "kv_budget_mb: 256\nthreads: 1\n"
                       "session_idle_timeout_s: 60\ndrain_deadline_s: 2\n"
                       "checkpoint_dir: ",
                       work, "/ckpt/", name, "\n"));
    daemons_.push_back({name,
                        {f_.bin + "/edge_server/edgesplit-server", "--config",
                         work + "/" + name + ".yaml"},
                        work + "/logs/" + name + ".log"});
  }
  for (Daemon& d : daemons_) Start(d);
  // Prompts: the first words of Shakespeare's lines.
  std::ifstream in(f_.data);
  std::string line;
  while (prompts_.size() < 16 && std::getline(in, line)) {
    if (line.size() > 20 && line.back() != ':') {
      prompts_.push_back(line.substr(0, 20));
    }
  }
  if (prompts_.empty()) prompts_.push_back("Once upon a time");
  std::cerr << "soak: work dir " << work << "\n";
  return true;
}

std::unique_ptr<DeviceAgent> Soak::Connect() {
  DeviceAgentOptions o;
  o.controller = Addr(0);
  o.insecure = true;
  o.threads = 1;
  o.keepalive = absl::Seconds(2);
  o.generation_timeout = absl::Minutes(3);
  o.max_reroutes = 20;
  auto agent = DeviceAgent::Connect(o);
  if (!agent.ok()) {
    std::cerr << "connect: " << agent.status() << "\n";
    return nullptr;
  }
  return *std::move(agent);
}

SamplingOptions Greedy(int tokens) {
  SamplingOptions s;
  s.temperature = 0;
  s.max_new_tokens = tokens;
  s.stop_at_eos = false;
  return s;
}

bool Soak::References(DeviceAgent& agent) {
  // The cluster is up once the servers profiled and a plan exists.
  const absl::Time until = absl::Now() + absl::Minutes(2);
  for (const std::string& p : prompts_) {
    for (;;) {
      auto s = agent.OpenSession("stories260K");
      absl::StatusOr<GenerationStats> g =
          s.ok() ? (*s)->Generate(p, Greedy(f_.tokens)) : s.status();
      if (g.ok()) {
        reference_[p] = g->text;
        break;
      }
      if (absl::Now() > until) {
        std::cerr << "cluster did not come up: " << g.status() << "\n";
        return false;
      }
      absl::SleepFor(absl::Milliseconds(500));
    }
  }
  std::cerr << "soak: " << prompts_.size() << " reference continuations\n";
  return true;
}

void Soak::SessionLoop(DeviceAgent& agent, int i) {
  std::mt19937_64 rng(f_.seed * 1000 + i);
  while (!stop_.HasBeenNotified()) {
    const std::string& prompt = prompts_[rng() % prompts_.size()];
    auto s = agent.OpenSession("stories260K");
    if (!s.ok()) {
      // Not a failed session: none was opened (the controller restarting,
      // no route while servers come back); the device tries again.
      {
        absl::MutexLock lock(&tally_.mu);
        ++tally_.open_refused;
        ++tally_.refusals[absl::StatusCodeToString(s.status().code())];
      }
      Sleep(absl::Milliseconds(500));
      continue;
    }
    {
      absl::MutexLock lock(&tally_.mu);
      ++tally_.opened;
    }
    {
      absl::MutexLock lock(&routes_mu_);
      session_route_ = (*s)->route();
    }
    auto g = (*s)->Generate(prompt, Greedy(f_.tokens));
    absl::MutexLock lock(&tally_.mu);
    if (!g.ok()) {
      ++tally_.failed;
      tally_.failures.push_back(absl::StrFormat(
          "%.1f s: %s", absl::ToDoubleSeconds(absl::Now() - t0_),
          g.status().ToString()));
      continue;
    }
    ++tally_.finished;
    tally_.tokens += g->tokens.size();
    tally_.reroutes += g->reroutes;
    if (g->text != reference_[prompt]) ++tally_.wrong;
  }
}

void Soak::TrainLoop(DeviceAgent& agent) {
  std::unique_ptr<Trainer> trainer;
  TrainingOptions t;
  t.job_id = "soak";
  t.lr = 1e-3;
  t.checkpoint_dir = work_ + "/device-ckpt";
  while (trainer == nullptr && !stop_.HasBeenNotified()) {
    auto started = agent.StartTraining("stories260K", t);
    if (started.ok()) {
      trainer = *std::move(started);
    } else {
      train_errors_.push_back("start: " + started.status().ToString());
      Sleep(absl::Seconds(1));
    }
  }
  if (trainer == nullptr) return;
  std::ifstream in(f_.data);
  std::stringstream text;
  text << in.rdbuf();
  auto ids = trainer->Tokenize(text.str().substr(0, 200000));
  if (!ids.ok() || ids->size() < 65 * 4 * 8) {
    train_errors_.push_back("tokenize failed");
    return;
  }
  std::vector<std::vector<std::vector<int32_t>>> batches(8);
  for (size_t b = 0; b < batches.size(); ++b) {
    for (size_t w = 0; w < 4; ++w) {
      const size_t at = (b * 4 + w) * 65;
      batches[b].emplace_back(ids->begin() + at, ids->begin() + at + 65);
    }
  }
  while (!stop_.HasBeenNotified()) {
    {
      absl::MutexLock lock(&routes_mu_);
      trainer_route_ = trainer->route();
    }
    const int64_t s = trainer->step();
    auto st = trainer->Step(batches[s % batches.size()], (s + 1) % 5 == 0);
    if (st.ok()) {
      ++train_steps_;
      auto [it, first] = first_loss_.emplace(s, st->loss);
      if (!first) {
        ++replayed_;
        max_replay_diff_ =
            std::max(max_replay_diff_, std::abs(st->loss - it->second));
      }
      continue;
    }
    ++train_failures_;
    if (train_errors_.size() < 20) {
      train_errors_.push_back(absl::StrFormat(
          "%.1f s step %d: %s", absl::ToDoubleSeconds(absl::Now() - t0_), s,
          st.status().ToString()));
    }
    while (!stop_.HasBeenNotified()) {
      auto resumed = trainer->Resume(absl::Minutes(1));
      if (resumed.ok()) {
        ++train_resumes_;
        break;
      }
      if (train_errors_.size() < 20) {
        train_errors_.push_back("resume: " + resumed.status().ToString());
      }
    }
  }
}

void Soak::SampleRss() {
  do {
    absl::MutexLock lock(&daemons_mu_);
    const double t = absl::ToDoubleSeconds(absl::Now() - t0_);
    for (const Daemon& d : daemons_) {
      if (d.pid > 0) rss_.emplace_back(t, d.name, d.incarnation, RssKb(d.pid));
    }
  } while (Sleep(absl::Seconds(15)));
}

void Soak::Chaos() {
  const absl::Duration total = absl::Seconds(f_.minutes * 60);
  std::mt19937_64 rng(f_.seed);
  struct Pending {
    absl::Duration at;
    int what;  // 0 kill, 1 stop, 2 controller, 3 slow, 4 unslow
  };
  std::vector<Pending> plan;
  for (absl::Duration at = absl::Seconds(20); at < total - absl::Seconds(20);
       at += absl::Seconds(f_.kill_every)) {
    plan.push_back({at, 0});
  }
  plan.push_back({total * 0.35, 1});
  plan.push_back({total * 0.55, 2});
  plan.push_back({total * 0.70, 3});
  plan.push_back({total * 0.80, 4});
  std::sort(plan.begin(), plan.end(),
            [](const Pending& a, const Pending& b) { return a.at < b.at; });
  int kills = 0;
  for (const Pending& p : plan) {
    if (!Sleep(t0_ + p.at - absl::Now())) return;
    std::string sessions, training;
    {
      absl::MutexLock lock(&routes_mu_);
      sessions = session_route_;
      training = trainer_route_;
    }
    switch (p.what) {
      case 0: {
        // Alternately a server the training job uses and one a session
        // uses.
        Daemon& d = daemons_[Victim(kills++ % 2 ? sessions : training, rng)];
        if (d.stopped) break;
        {
          absl::MutexLock lock(&daemons_mu_);
          Kill(d);
        }
        Event("SIGKILL " + d.name);
        Sleep(absl::Seconds(3));
        absl::MutexLock lock(&daemons_mu_);
        Start(d);
        Event("restarted " + d.name);
        break;
      }
      case 1: {
        Daemon& d = daemons_[Victim(sessions, rng)];
        kill(d.pid, SIGSTOP);
        d.stopped = true;
        Event("SIGSTOP " + d.name + " (20 s)");
        Sleep(absl::Seconds(20));
        kill(d.pid, SIGCONT);
        d.stopped = false;
        Event("SIGCONT " + d.name);
        break;
      }
      case 2: {
        {
          absl::MutexLock lock(&daemons_mu_);
          Kill(daemons_[0]);
        }
        Event("SIGKILL controller");
        Sleep(absl::Seconds(2));
        absl::MutexLock lock(&daemons_mu_);
        Start(daemons_[0]);
        Event("restarted controller");
        break;
      }
      case 3: {
        testing::LinkSpec slow;
        slow.up_bytes_per_s = slow.down_bytes_per_s = 2e6;
        slow.one_way_delay = absl::Milliseconds(20);
        link_->SetSpec(slow);
        Event("slowed s0's link (2 MB/s, 20 ms)");
        break;
      }
      case 4:
        link_->SetSpec(testing::LinkSpec());
        Event("restored s0's link");
        break;
    }
  }
  Sleep(t0_ + total - absl::Now());
}

void Soak::Report() {
  absl::MutexLock lock(&tally_.mu);
  std::cout << "\n## Chaos soak: " << f_.servers << " servers, " << f_.sessions
            << " concurrent sessions + 1 training job, " << f_.minutes
            << " min, " << f_.tokens << " greedy tokens each\n\n";
  std::cout << "events:\n";
  for (const auto& e : tally_.events) std::cout << "  " << e << "\n";
  std::cout << "\n| sessions opened | finished | failed | wrong tokens | "
               "opens refused | tokens | reroutes |\n|---|---|---|---|---|---|"
               "---|\n| "
            << tally_.opened << " | " << tally_.finished << " | "
            << tally_.failed << " | " << tally_.wrong << " | "
            << tally_.open_refused << " | " << tally_.tokens << " | "
            << tally_.reroutes << " |\n";
  for (const auto& [code, n] : tally_.refusals) {
    std::cout << "  opens refused " << code << ": " << n << "\n";
  }
  for (size_t i = 0; i < tally_.failures.size() && i < 20; ++i) {
    std::cout << "  failed: " << tally_.failures[i] << "\n";
  }
  std::cout << "\ntraining: " << train_steps_ << " steps, " << train_failures_
            << " failed steps, " << train_resumes_ << " resumes, " << replayed_
            << " replayed steps, max |loss - first loss| on a replay "
            << max_replay_diff_ << "\n";
  if (!first_loss_.empty()) {
    std::cout << "  loss at step 0: " << first_loss_.begin()->second
              << ", at step " << first_loss_.rbegin()->first << ": "
              << first_loss_.rbegin()->second << "\n";
  }
  for (const auto& e : train_errors_) std::cout << "  " << e << "\n";
  // RSS per incarnation: first sample past a minute of its life, last, max.
  std::map<std::pair<std::string, int>, std::vector<std::pair<double, int64_t>>>
      by;
  for (const auto& [t, name, inc, kb] : rss_)
    by[{name, inc}].push_back({t, kb});
  std::cout << "\n| daemon | incarnation | samples | RSS after warm-up MiB | "
               "last MiB | max MiB | last / after warm-up |\n|---|---|---|---|"
               "---|---|---|\n";
  for (const auto& [key, samples] : by) {
    const double born = samples.front().first;
    size_t w = 0;
    while (w + 1 < samples.size() && samples[w].first < born + 60) ++w;
    int64_t mx = 0;
    for (const auto& s : samples) mx = std::max(mx, s.second);
    const double warm = samples[w].second / 1024.0;
    const double last = samples.back().second / 1024.0;
    std::cout << absl::StrFormat(
        "| %s | %d | %d | %.1f | %.1f | %.1f | %.3f |\n", key.first, key.second,
        samples.size(), warm, last, mx / 1024.0, last / warm);
  }
}

int Main(int argc, char** argv) {
  Flags f;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--bin")
      f.bin = v;
    else if (k == "--model")
      f.model = v;
    else if (k == "--data")
      f.data = v;
    else if (k == "--minutes")
      f.minutes = std::atof(v.c_str());
    else if (k == "--sessions")
      f.sessions = std::atoi(v.c_str());
    else if (k == "--servers")
      f.servers = std::atoi(v.c_str());
    else if (k == "--tokens")
      f.tokens = std::atoi(v.c_str());
    else if (k == "--port-base")
      f.port_base = std::atoi(v.c_str());
    else if (k == "--kill-every")
      f.kill_every = std::atoi(v.c_str());
    else if (k == "--work")
      f.work = v;
    else if (k == "--seed")
      f.seed = std::strtoull(v.c_str(), nullptr, 10);
    else {
      std::cerr << "unknown flag " << k << "\n";
      return 2;
    }
  }
  if (f.servers < 2 || f.sessions < 1 || f.minutes <= 0 || f.kill_every < 5) {
    std::cerr << "need --servers >= 2, --sessions >= 1, --minutes > 0, "
                 "--kill-every >= 5\n";
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  return Soak(std::move(f)).Run();
}

}  // namespace
}  // namespace edgesplit

int main(int argc, char** argv) { return edgesplit::Main(argc, argv); }
