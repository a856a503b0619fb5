// Split fine-tuning over time: a stage killed mid-training resumes from
// the last checkpoint, split federated learning with three devices, the
// real model fine-tuned across hops and exported as PEFT, and the
// `edgesplit train` / `adapter export` commands.
#include <atomic>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "device_agent/cli/commands.h"
#include "device_agent/split_trainer.h"
#include "edgesplit/device_agent.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/protocol.h"
#include "proto/tensor_codec.h"
#include "proto/training_spec.h"
#include "runtime/model_store.h"
#include "runtime/train/training_data.h"
#include "testing/cluster.h"
#include "testing/test_models.h"
#include "tests/training_util.h"

namespace edgesplit {
namespace {

using ::edgesplit::testing::AdapterDiff;
using ::edgesplit::testing::Agent;
using ::edgesplit::testing::Cluster;
using ::edgesplit::testing::ClusterPlan;
using ::edgesplit::testing::RandomWindows;
using ::edgesplit::testing::RealModel;
using ::edgesplit::testing::Route;
using ::edgesplit::testing::Shakespeare;
using ::edgesplit::testing::Spec;
using ::edgesplit::testing::ToWindows;

TEST(SplitTrainingResumeTest, StageKilledMidTrainingResumesFromCheckpoint) {
  const std::string dir = testing::TinyModel(Arch::kGpt2);
  auto store = ModelStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  const ModelConfig& config = (*store)->config();
  const int64_t n = config.num_layers;
  const std::string tmp = testing::TempDir("train_resume");
  ClusterPlan plan{
      "m", dir, false, {{"device", 0, 1}, {"a", 1, 2}, {"b", 2, n}}};
  auto c = Cluster::Start(tmp, {plan});
  ASSERT_TRUE(c.ok()) << c.status();
  auto agent = Agent(**c, "phone");
  constexpr int kSteps = 10, kEvery = 4;
  int total_resumes = 0;

  // Trainer::Run over windows(step), checkpointing every kEvery updates;
  // the hook runs after each update.
  auto train = [&](const std::string& job,
                   const std::function<void(int64_t)>& after) -> std::string {
    TrainingOptions o;
    o.job_id = job;
    o.rank = 4;
    o.lr = 5e-3;
    o.seed = 3;
    o.checkpoint_dir = tmp + "/device-checkpoints";
    auto t = agent->StartTraining("m", o);
    EXPECT_TRUE(t.ok()) << t.status();
    if (!t.ok()) return "";
    TrainingRunOptions run;
    for (int step = 0; step < kSteps; ++step) {
      run.batches.push_back(
          ToWindows(RandomWindows(config.vocab_size, 3, step)));
    }
    run.steps = kSteps;
    run.checkpoint_every = kEvery;
    run.max_resumes = 2;
    run.resume_timeout = absl::Seconds(60);
    TrainingRunCallbacks callbacks;
    callbacks.on_step = [&](const TrainingStepStats& st) { after(st.step); };
    int64_t failed = -1;
    // The killed hop: UNAVAILABLE (or CANCELLED as its streams end).
    callbacks.on_failure = [&](int64_t step, const absl::Status&) {
      failed = step;
    };
    callbacks.on_resume = [&](int64_t step) {
      EXPECT_EQ(step % kEvery, 0);  // A checkpoint, not where it failed.
      EXPECT_LE(step, failed);
    };
    auto r = (*t)->Run(run, callbacks);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return "";
    EXPECT_EQ(r->step, kSteps);
    total_resumes += r->resumes;
    const std::string out = absl::StrCat(tmp, "/", job, "-adapter");
    EXPECT_TRUE((*t)->Export(out).ok());
    return out;
  };

  const std::string straight = train("straight", [](int) {});
  std::atomic<bool> killed{false};
  std::thread killer;
  const std::string resumed = train("resumed", [&](int64_t step) {
    if (step == 6 && !killed.exchange(true)) {
      // Mid-step: the server dies while update 7's micro-batches are in
      // flight, then comes back (same name, same checkpoint directory).
      // (b computes 50x slower now, so the kill lands inside the step.)
      (*c)->server("b")->host()->SetComputeSlowdown(50);
      killer = std::thread([&] {
        absl::SleepFor(absl::Milliseconds(20));
        (*c)->Kill("b");
        ASSERT_TRUE((*c)->Restart("b").ok());
      });
    }
  });
  if (killer.joinable()) killer.join();
  ASSERT_TRUE(killed.load());
  EXPECT_GE(total_resumes, 1);
  // Every route the trainers took (first ones and after the failure) was
  // closed on the controller.
  EXPECT_EQ((*c)->controller()->open_sessions(), 0);
  ASSERT_FALSE(straight.empty());
  ASSERT_FALSE(resumed.empty());
  // Resumed from update 4, the run ends where the uninterrupted one does:
  // no update lost, none applied twice, no shard corrupted.
  EXPECT_LE(AdapterDiff(straight, resumed, config), 1e-6);
}

// device [0, 1) -> a [1, 2) -> b [2, n) + head, with b's peer link
// through an emulator that Cluster::Silence can cut.
absl::StatusOr<std::unique_ptr<Cluster>> ClusterWithSilenceableHop(
    const std::string& tmp, const std::string& dir, const ModelConfig& config,
    int keepalive_s) {
  testing::ClusterOptions options;
  options.peer_links["b"] = testing::LinkSpec{};
  options.keepalive_s = keepalive_s;
  return Cluster::Start(
      tmp,
      {{"m",
        dir,
        false,
        {{"device", 0, 1}, {"a", 1, 2}, {"b", 2, config.num_layers}}}},
      options);
}

// A hop that keeps its connections alive but stops answering (b's peer
// link silenced: with keepalive at 10 s nothing notices for 20 s) fails
// the step DEADLINE_EXCEEDED after the answer timeout, which Run treats as
// a lost hop (it resumes).
TEST(SplitTrainingResumeTest, UnansweredStepFailsAfterTheAnswerTimeout) {
  const std::string dir = testing::TinyModel(Arch::kGpt2);
  auto store = ModelStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  const ModelConfig& config = (*store)->config();
  auto c = ClusterWithSilenceableHop(testing::TempDir("train_stuck"), dir,
                                     config, /*keepalive_s=*/10);
  ASSERT_TRUE(c.ok()) << c.status();
  auto agent = Agent(**c, "phone");
  TrainingOptions o;
  o.job_id = "stuck";
  o.rank = 4;
  o.answer_timeout = absl::Seconds(1);
  auto t = agent->StartTraining("m", o);
  ASSERT_TRUE(t.ok()) << t.status();
  const auto batch = ToWindows(RandomWindows(config.vocab_size, 2, 1));
  ASSERT_TRUE((*t)->Step(batch).ok());
  (*c)->Silence("b");
  auto stuck = (*t)->Step(batch);
  EXPECT_EQ(stuck.status().code(), absl::StatusCode::kDeadlineExceeded)
      << stuck.status();
  EXPECT_THAT(std::string(stuck.status().message()),
              ::testing::HasSubstr("no answer"));
}

// The same silent hop, then answering again: Run resumes (its first
// attempts time out on connections still lost in the silence until
// keepalive ends them) and finishes every update, equal to a run that was
// never disturbed. With keepalive 2 s it takes ~5 s; with the default 10 s
// ~21 s (measured).
TEST(SplitTrainingResumeTest, RunResumesWhenASilentHopAnswersAgain) {
  const std::string dir = testing::TinyModel(Arch::kGpt2);
  auto store = ModelStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  const ModelConfig& config = (*store)->config();
  const std::string tmp = testing::TempDir("train_silent");
  auto c = ClusterWithSilenceableHop(tmp, dir, config, /*keepalive_s=*/2);
  ASSERT_TRUE(c.ok()) << c.status();
  auto agent = Agent(**c, "phone");
  TrainingRunOptions run;
  for (int i = 0; i < 3; ++i) {
    run.batches.push_back(
        ToWindows(RandomWindows(config.vocab_size, 2, 10 + i)));
  }
  run.steps = 6;
  run.checkpoint_every = 1;
  run.eval_every = 0;
  run.max_resumes = 20;
  run.resume_timeout = absl::Seconds(60);
  auto train = [&](const std::string& job, bool silence) -> std::string {
    TrainingOptions o;
    o.job_id = job;
    o.rank = 4;
    o.seed = 3;
    o.answer_timeout = absl::Seconds(1);
    o.checkpoint_dir = absl::StrCat(tmp, "/device-", job);
    auto t = agent->StartTraining("m", o);
    EXPECT_TRUE(t.ok()) << t.status();
    if (!t.ok()) return "";
    std::thread unsilence;
    TrainingRunCallbacks callbacks;
    callbacks.on_step = [&](const TrainingStepStats& s) {
      if (silence && s.step == 2) {
        (*c)->Silence("b");
        unsilence = std::thread([&] {
          absl::SleepFor(absl::Seconds(3));
          (*c)->Unsilence("b");
        });
      }
    };
    const absl::Time start = absl::Now();
    auto r = (*t)->Run(run, callbacks);
    if (unsilence.joinable()) unsilence.join();
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return "";
    EXPECT_EQ(r->step, run.steps);
    if (silence) {
      EXPECT_GE(r->resumes, 1);
      std::printf("silent hop: %d resumes, run took %.1f s\n", r->resumes,
                  absl::ToDoubleSeconds(absl::Now() - start));
    }
    const std::string out = absl::StrCat(tmp, "/adapter-", job);
    EXPECT_TRUE((*t)->Export(out).ok());
    return out;
  };
  const std::string straight = train("calm", false);
  const std::string resumed = train("silenced", true);
  ASSERT_FALSE(straight.empty());
  ASSERT_FALSE(resumed.empty());
  EXPECT_LE(AdapterDiff(straight, resumed, config), 1e-6);
}

TEST(SplitFederatedTest, ThreeDevicesAverageTheirAdaptersAndLearn) {
  const std::string dir = RealModel();
  auto store = ModelStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  const TrainingData data = Shakespeare(**store, 60000, 32);
  std::vector<std::vector<int32_t>> eval(data.held_out.begin(),
                                         data.held_out.begin() + 16);
  ClusterPlan plan{"real", dir, false, {{"device", 0, 1}, {"a", 1, 5}}};
  auto c = Cluster::Start(testing::TempDir("train_sfl"), {plan});
  ASSERT_TRUE(c.ok()) << c.status();
  constexpr int kDevices = 3, kSteps = 16, kEvery = 4, kBatch = 4;
  std::vector<std::unique_ptr<DeviceAgent>> agents;
  std::vector<std::unique_ptr<Trainer>> trainers(kDevices);
  for (int d = 0; d < kDevices; ++d) {
    agents.push_back(Agent(**c, absl::StrCat("phone-", d)));
  }
  TrainingOptions o;
  o.job_id = "sfl";
  o.mode = "sfl";
  o.devices = kDevices;
  o.job_members = {"phone-0", "phone-1", "phone-2"};
  o.rank = 8;
  o.lr = 1e-2;
  o.warmup_steps = 2;
  o.total_steps = kSteps;
  o.average_every = kEvery;
  for (int d = 0; d < kDevices; ++d) {
    auto t = agents[d]->StartTraining("real", o);
    ASSERT_TRUE(t.ok()) << t.status();
    trainers[d] = *std::move(t);
  }
  auto before = trainers[0]->Evaluate(eval);
  ASSERT_TRUE(before.ok()) << before.status();
  std::vector<absl::Status> errors(kDevices);
  std::vector<std::thread> threads;
  for (int d = 0; d < kDevices; ++d) {
    threads.emplace_back([&, d] {
      // Device d trains on its own shard: windows d, d + 3, d + 6, ...
      TrainingRunOptions run;
      run.steps = kSteps;
      run.max_resumes = 0;
      size_t next = d;
      for (int step = 0; step < kSteps; ++step) {
        auto& batch = run.batches.emplace_back();
        for (int i = 0; i < kBatch; ++i) {
          batch.push_back(data.train[next % data.train.size()]);
          next += kDevices;
        }
      }
      // Run averages the device adapters every o.average_every updates.
      errors[d] = trainers[d]->Run(run).status();
    });
  }
  for (auto& t : threads) t.join();
  for (const absl::Status& e : errors) ASSERT_TRUE(e.ok()) << e;
  auto after = trainers[0]->Evaluate(eval);
  ASSERT_TRUE(after.ok()) << after.status();
  std::printf("SFL, 3 devices: held-out loss %.3f -> %.3f\n", *before, *after);
  EXPECT_LT(*after, *before - 0.1);
  // After the last round every device holds the same (averaged) device
  // adapter, and they share the server's: the three exports are equal.
  const std::string tmp = testing::TempDir("train_sfl_out");
  for (int d = 0; d < kDevices; ++d) {
    ASSERT_TRUE(trainers[d]->Export(absl::StrCat(tmp, "/", d)).ok());
  }
  EXPECT_EQ(AdapterDiff(tmp + "/0", tmp + "/1", (*store)->config()), 0);
  EXPECT_EQ(AdapterDiff(tmp + "/0", tmp + "/2", (*store)->config()), 0);
}

// fed_selection on the controller: after the first round it averages the
// two devices whose uploads carry least noise (phone-2 spends a small
// averaging budget) and leaves phone-2 out: the servers step with the
// other two, and phone-2 adopts their average every round.
TEST(SplitFederatedTest, SelectionLeavesTheNoisyDeviceOutOfTheAverage) {
  const std::string dir = RealModel();
  auto store = ModelStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  const TrainingData data = Shakespeare(**store, 60000, 32);
  ClusterPlan plan{"real", dir, false, {{"device", 0, 1}, {"a", 1, 5}}};
  testing::ClusterOptions co;
  co.controller_yaml = "fed_selection: {per_round: 2}\n";
  auto c = Cluster::Start(testing::TempDir("train_sfl_select"), {plan}, co);
  ASSERT_TRUE(c.ok()) << c.status();
  constexpr int kDevices = 3, kSteps = 8, kEvery = 2;
  std::vector<std::unique_ptr<DeviceAgent>> agents;
  std::vector<std::unique_ptr<Trainer>> trainers(kDevices);
  for (int d = 0; d < kDevices; ++d) {
    agents.push_back(Agent(**c, absl::StrCat("phone-", d)));
  }
  TrainingOptions o;
  o.job_id = "sfl-select";
  o.mode = "sfl";
  o.devices = kDevices;
  o.job_members = {"phone-0", "phone-1", "phone-2"};
  o.rank = 4;
  o.lr = 1e-2;
  o.total_steps = kSteps;
  o.average_every = kEvery;
  for (int d = 0; d < kDevices; ++d) {
    TrainingOptions mine = o;
    if (d == 2) {
      mine.averaging_privacy.epsilon = 1;
      mine.averaging_privacy.clip = 0.1;
    }
    auto t = agents[d]->StartTraining("real", mine);
    ASSERT_TRUE(t.ok()) << t.status();
    trainers[d] = *std::move(t);
  }
  std::vector<absl::StatusOr<TrainingRunResult>> results(
      kDevices, absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (int d = 0; d < kDevices; ++d) {
    threads.emplace_back([&, d] {
      TrainingRunOptions run;
      run.steps = kSteps;
      run.max_resumes = 0;
      for (int step = 0; step < kSteps; ++step) {
        run.batches.push_back(
            {data.train[(step * kDevices + d) % data.train.size()]});
      }
      results[d] = trainers[d]->Run(run);
    });
  }
  for (auto& t : threads) t.join();
  for (int d = 0; d < kDevices; ++d) {
    ASSERT_TRUE(results[d].ok()) << results[d].status();
    EXPECT_EQ(results[d]->rounds, kSteps / kEvery);
    // phone-2 trained the first round (nothing was known before it), but
    // its noisy upload was left out of every average.
    EXPECT_EQ(results[d]->rounds_averaged, d == 2 ? 0 : kSteps / kEvery) << d;
    // ... and sat out the later rounds' updates (the servers stepped with
    // the other two: the job reached every step).
    EXPECT_EQ(results[d]->skipped, d == 2 ? kSteps - kEvery : 0) << d;
    EXPECT_EQ(results[d]->step, kSteps);
  }
  EXPECT_EQ(results[2]->private_rounds, 1);  // Left out: nothing released.
  const std::string tmp = testing::TempDir("train_sfl_select_out");
  for (int d = 0; d < kDevices; ++d) {
    ASSERT_TRUE(trainers[d]->Export(absl::StrCat(tmp, "/", d)).ok());
  }
  EXPECT_EQ(AdapterDiff(tmp + "/0", tmp + "/2", (*store)->config()), 0);
}

TEST(SplitTrainingRealModelTest, FineTunesAcrossHopsAndExportsPeft) {
  const std::string dir = RealModel();
  auto store = ModelStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  const ModelConfig& config = (*store)->config();
  const TrainingData data = Shakespeare(**store, 60000, 64);
  ASSERT_GE(data.held_out.size(), 16u);
  std::vector<std::vector<int32_t>> eval(data.held_out.begin(),
                                         data.held_out.begin() + 16);
  ClusterPlan plan{
      "real", dir, false, {{"device", 0, 1}, {"a", 1, 3}, {"b", 3, 5}}};
  auto c = Cluster::Start(testing::TempDir("train_real"), {plan});
  ASSERT_TRUE(c.ok()) << c.status();
  auto agent = Agent(**c, "phone");
  TrainingOptions o;
  o.job_id = "shakespeare";
  o.rank = 8;
  o.lr = 1e-2;
  o.warmup_steps = 5;
  o.total_steps = 60;
  auto t = agent->StartTraining("real", o);
  ASSERT_TRUE(t.ok()) << t.status();
  // Trainer::Run: evaluated before the first update and after the last.
  EXPECT_EQ((*t)->Run(TrainingRunOptions{}).status().code(),
            absl::StatusCode::kInvalidArgument);  // No batches.
  TrainingRunOptions run;
  for (const std::vector<size_t>& b : BatchByLength(data.train, 256)) {
    auto& batch = run.batches.emplace_back();
    for (size_t i : b) batch.push_back(data.train[i]);
  }
  run.eval_windows = eval;
  run.steps = o.total_steps;
  run.eval_every = o.total_steps;
  std::vector<std::pair<int64_t, double>> evals;
  TrainingRunCallbacks callbacks;
  callbacks.on_eval = [&](int64_t step, double loss) {
    evals.emplace_back(step, loss);
  };
  auto r = (*t)->Run(run, callbacks);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->step, o.total_steps);
  EXPECT_EQ(r->resumes, 0);
  ASSERT_EQ(evals.size(), 2u);
  EXPECT_EQ(evals[0].first, 0);
  EXPECT_EQ(evals[1].first, o.total_steps);
  auto before = evals[0].second, after = evals[1].second;
  // Run's evaluation is Evaluate's.
  auto again = (*t)->Evaluate(eval);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_NEAR(*again, after, 1e-6);
  std::printf("3 hops: held-out perplexity %.2f -> %.2f\n", std::exp(before),
              std::exp(after));
  EXPECT_LT(std::exp(after), 0.5 * std::exp(before));

  // The exported PEFT adapter computes, in one process, what the split
  // trained model computes across the hops...
  const std::string out = testing::TempDir("train_real_out") + "/adapter";
  ASSERT_TRUE((*t)->Export(out).ok());
  auto whole = StageModel::Load(**store, {{0, config.num_layers}, true, true});
  ASSERT_TRUE(whole.ok());
  std::shared_ptr<LoraAdapter> adapter =
      *LoraAdapter::LoadPeft(out, config, "exported");
  ASSERT_TRUE((*whole)->AttachAdapter(adapter).ok());
  auto mono = StageTrainer::Create(whole->get(), adapter);
  ASSERT_TRUE(mono.ok());
  double sum = 0;
  int64_t tokens = 0;
  for (const auto& w : eval) {
    StageInput in;
    in.tokens =
        at::tensor(std::vector<int64_t>(w.begin(), w.end() - 1), at::kLong);
    at::Tensor labels =
        at::tensor(std::vector<int64_t>(w.begin() + 1, w.end()), at::kLong);
    auto loss = (*mono)->EvaluateLoss(in, labels);
    ASSERT_TRUE(loss.ok());
    sum += *loss * labels.size(0);
    tokens += labels.size(0);
  }
  EXPECT_NEAR(sum / tokens, after, 1e-5);

  // ... and `edgesplit generate --adapter` loads it: its greedy text is
  // the trained model's (argmax of the adapted logits, step by step).
  std::ostringstream text, err;
  ASSERT_EQ(cli::Run({"generate", "--model", dir, "--adapter", out, "--prompt",
                      "ROMEO:", "--temperature", "0", "--max-new-tokens", "12"},
                     text, err),
            0)
      << err.str();
  auto tok = (*store)->LoadTokenizer();
  std::vector<int32_t> ids = *(*tok)->EncodePrompt("ROMEO:");
  for (int i = 0; i < 12; ++i) {
    StageInput in;
    in.tokens =
        at::tensor(std::vector<int64_t>(ids.begin(), ids.end()), at::kLong);
    auto logits = (*mono)->Evaluate(in);
    ASSERT_TRUE(logits.ok());
    ids.push_back(static_cast<int32_t>(
        (*logits)[logits->size(0) - 1].argmax().item<int64_t>()));
  }
  const std::vector<int32_t> generated(ids.end() - 12, ids.end());
  auto want = (*tok)->Decode(generated);
  ASSERT_TRUE(want.ok());
  std::string got = text.str();
  if (!got.empty() && got.back() == '\n') got.pop_back();
  ASSERT_FALSE(got.empty());
  // (The CLI stops at EOS; the loop above does not.)
  EXPECT_EQ(want->substr(0, got.size()), got);
  // The base model says something else.
  std::ostringstream base;
  ASSERT_EQ(cli::Run({"generate", "--model", dir, "--prompt",
                      "ROMEO:", "--temperature", "0", "--max-new-tokens", "12"},
                     base, err),
            0);
  EXPECT_NE(base.str(), text.str());
}

TEST(TrainCommandTest, TrainsResumesAndExports) {
  const std::string dir = RealModel();
  auto store = ModelStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  const std::string tmp = testing::TempDir("train_cli");
  {
    std::ifstream in(testing::SharedDir() + "/data/tinyshakespeare.txt");
    std::string text(30000, '\0');
    in.read(text.data(), text.size());
    text.resize(static_cast<size_t>(in.gcount()));
    std::ofstream(tmp + "/text.txt") << text;
  }
  ClusterPlan plan{"real", dir, true, {{"device", 0, 1}, {"a", 1, 5}}};
  auto c = Cluster::Start(tmp, {plan});
  ASSERT_TRUE(c.ok()) << c.status();
  (*c)->DeviceSecurity("device");  // Issues device-device.pem.
  const std::vector<std::string> common = {"--certs",
                                           (*c)->certs_dir(),
                                           "--controller",
                                           (*c)->controller_address(),
                                           "--model-id",
                                           "real",
                                           "--data",
                                           tmp + "/text.txt",
                                           "--checkpoint-dir",
                                           tmp + "/ckpt",
                                           "--job",
                                           "cli",
                                           "--lr",
                                           "1e-2",
                                           "--seq-len",
                                           "32",
                                           "--batch-tokens",
                                           "128",
                                           "--eval-every",
                                           "10",
                                           "--checkpoint-every",
                                           "10",
                                           "--log-every",
                                           "5",
                                           "--u-shaped"};
  std::vector<std::string> args = {"train", "--steps", "20", "--out",
                                   tmp + "/first"};
  args.insert(args.end(), common.begin(), common.end());
  std::ostringstream out, err;
  ASSERT_EQ(cli::Run(args, out, err), 0) << err.str();
  EXPECT_THAT(err.str(), ::testing::HasSubstr("step 20/20 loss"));
  EXPECT_THAT(err.str(), ::testing::HasSubstr("eval step 20: held-out loss"));
  EXPECT_THAT(err.str(), ::testing::HasSubstr("-> device head"));
  EXPECT_THAT(out.str(), ::testing::HasSubstr("trained cli to step 20"));

  // A second run of the same job continues from its checkpoint.
  args = {"train", "--steps", "30"};
  args.insert(args.end(), common.begin(), common.end());
  std::ostringstream out2, err2;
  ASSERT_EQ(cli::Run(args, out2, err2), 0) << err2.str();
  EXPECT_THAT(err2.str(), ::testing::HasSubstr("resumed at step 20"));
  EXPECT_THAT(out2.str(), ::testing::HasSubstr("to step 30"));

  // `adapter export` assembles step 30's adapter; it differs from step
  // 20's, and loads as PEFT.
  std::ostringstream out3, err3;
  ASSERT_EQ(cli::Run({"adapter", "export", "--certs", (*c)->certs_dir(),
                      "--controller", (*c)->controller_address(), "--model-id",
                      "real", "--job", "cli", "--checkpoint-dir", tmp + "/ckpt",
                      "--out", tmp + "/exported"},
                     out3, err3),
            0)
      << err3.str();
  const double moved =
      AdapterDiff(tmp + "/first", tmp + "/exported", (*store)->config());
  EXPECT_GT(moved, 0);
  EXPECT_LT(moved, 1e8);

  // A job that never trained here has no spec to export.
  std::ostringstream out4, err4;
  EXPECT_EQ(cli::Run({"adapter", "export", "--certs", (*c)->certs_dir(),
                      "--controller", (*c)->controller_address(), "--model-id",
                      "real", "--job", "nope", "--checkpoint-dir",
                      tmp + "/ckpt", "--out", tmp + "/none"},
                     out4, err4),
            1);
  EXPECT_THAT(err4.str(), ::testing::HasSubstr("no training spec"));
}

}  // namespace
}  // namespace edgesplit
