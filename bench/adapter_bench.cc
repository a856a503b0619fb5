// Many adapters over one shared base (issue 15's benchmarks, ratios in one
// run on this machine):
//
// 1. Aggregate decode tokens/s of 16 sessions whose batch mixes 8
//    different rank-16 LoRA adapters (2 sessions each; one forward per
//    step, the mixed-adapter kernel) against the same 16 sessions without
//    adapters (aim >= 0.90x), and against serving the 8 adapters as
//    8 separate batches of 2 (one adapter per forward, what a server
//    without mixed batches must do). Adapters on PEFT's default modules
//    (GPT-2 c_attn; Llama q_proj + v_proj) and on every linear module.
// 2. Time to first token of a session whose adapter is cold (read from
//    the server's adapter directory by the AdapterCache) vs warm (in the
//    cache), each including the prompt's prefill; and over budget: 16
//    adapters requested round-robin through a cache that holds 4, so
//    every request misses (where some servers fall off a cliff).
//
// 3. A model copy delivered to a server from a peer (model_pack.h): the
//    whole copy into an empty blob store, then a fully fine-tuned variant
//    (one tensor changed) to the server that now holds its base, which
//    fetches only the variant's own parts: bytes moved and time, variant
//    against whole (both include writing the model directory out).
//
//   adapter_bench [--threads 2] [--models gpt2-small,real]
//                 [--dir build/bench_models] [--steps 16] [--rounds 3]
#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/file_util.h"
#include "base/status_macros.h"
#include "delivery/blob_service.h"
#include "delivery/model_pack.h"
#include "edge_server/adapter_cache.h"
#include "edge_server/adapter_fetcher.h"
#include "grpcpp/grpcpp.h"
#include "runtime/lora.h"
#include "runtime/model_init.h"
#include "runtime/model_store.h"
#include "runtime/stage_model.h"
#include "runtime/threading.h"

namespace edgesplit {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kSessions = 16, kAdapters = 8, kRank = 16, kPrompt = 32;

double Seconds(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

absl::StatusOr<std::string> ModelDir(const std::string& name,
                                     const std::string& dir) {
  if (name == "real") return std::string("../shared/models/stories260K");
  ModelInitOptions o;
  o.arch = name.rfind("gpt2-", 0) == 0 ? Arch::kGpt2 : Arch::kLlama;
  o.preset = name.substr(name.find('-') + 1);
  o.out_dir = dir + "/" + name;
  if (!std::filesystem::exists(o.out_dir + "/config.json")) {
    std::cerr << "writing " << name << " to " << o.out_dir << "\n";
    ES_RETURN_IF_ERROR(InitModel(o));
  }
  return o.out_dir;
}

std::vector<std::string> Targets(Arch arch, bool all) {
  if (arch == Arch::kGpt2) {
    return all ? std::vector<std::string>{"c_attn", "c_proj", "c_fc"}
               : std::vector<std::string>{"c_attn"};
  }
  return all ? std::vector<std::string>{"q_proj",   "k_proj",    "v_proj",
                                        "o_proj",   "gate_proj", "up_proj",
                                        "down_proj"}
             : std::vector<std::string>{"q_proj", "v_proj"};
}

// Decode tokens/s of kSessions sessions: `groups` forwards per step, each
// over its share of the sessions with `adapter_of(i)` for session i.
absl::StatusOr<double> DecodeRate(
    const StageModel& stage, int steps, int groups,
    const std::vector<const LoraAdapter*>& adapter_of) {
  std::vector<std::unique_ptr<SequenceKvCache>> caches;
  for (int i = 0; i < kSessions; ++i) caches.push_back(stage.NewCache(nullptr));
  auto run = [&](int64_t rows_each) -> absl::Status {
    const int per = kSessions / groups;
    for (int g = 0; g < groups; ++g) {
      StageInput in;
      std::vector<int64_t> ids;
      for (int i = g * per; i < (g + 1) * per; ++i) {
        in.sequences.push_back({caches[i].get(), rows_each});
        in.sequence_adapters.push_back(adapter_of[i]);
        for (int64_t t = 0; t < rows_each; ++t)
          ids.push_back((7 * i + t) % 200);
      }
      in.tokens = at::tensor(ids, at::kLong);
      in.last_token_only = true;
      ES_RETURN_IF_ERROR(stage.Forward(in).status());
    }
    return absl::OkStatus();
  };
  ES_RETURN_IF_ERROR(run(kPrompt));  // The prompts (not timed).
  ES_RETURN_IF_ERROR(run(1));        // Warm-up step.
  const auto t0 = Clock::now();
  for (int s = 0; s < steps; ++s) ES_RETURN_IF_ERROR(run(1));
  return kSessions * steps / Seconds(t0);
}

// The whole model as one stage, weights copied into memory.
absl::StatusOr<std::unique_ptr<StageModel>> WholeModel(
    const ModelStore& store) {
  StageSpec spec;
  spec.blocks = {0, store.config().num_layers};
  spec.embedding = spec.head = true;
  StageOptions so;
  so.copy_weights = true;
  return StageModel::Load(store, spec, so);
}

absl::Status DecodeTable(const std::string& name, const std::string& path,
                         int steps, int rounds) {
  ES_ASSIGN_OR_RETURN(auto store, ModelStore::Open(path));
  const ModelConfig& c = store->config();
  ES_ASSIGN_OR_RETURN(auto stage, WholeModel(*store));
  for (bool all : {false, true}) {
    std::vector<std::unique_ptr<LoraAdapter>> adapters;
    int64_t adapter_bytes = 0;
    for (int a = 0; a < kAdapters; ++a) {
      LoraConfig lc;
      lc.r = kRank;
      lc.alpha = kRank;
      lc.target_modules = Targets(c.arch, all);
      ES_ASSIGN_OR_RETURN(auto adapter,
                          LoraAdapter::Create(c, lc, {0, c.num_layers}, 100 + a,
                                              absl::StrCat("a", a), false));
      for (const auto& [m, f] : adapter->modules()) {
        adapter_bytes += f.a.nbytes() + f.b.nbytes();
      }
      adapters.push_back(std::move(adapter));
    }
    // Ordered by adapter, as the server's batcher orders a batch: one
    // run of rows (one kernel segment) per adapter.
    std::vector<const LoraAdapter*> none(kSessions, nullptr), sorted;
    for (int i = 0; i < kSessions; ++i) {
      sorted.push_back(adapters[i / (kSessions / kAdapters)].get());
    }
    std::vector<double> base, mix, separate, ratio, sep_ratio;
    for (int r = 0; r < rounds; ++r) {
      ES_ASSIGN_OR_RETURN(double b, DecodeRate(*stage, steps, 1, none));
      ES_ASSIGN_OR_RETURN(double m, DecodeRate(*stage, steps, 1, sorted));
      ES_ASSIGN_OR_RETURN(double s,
                          DecodeRate(*stage, steps, kAdapters, sorted));
      base.push_back(b);
      mix.push_back(m);
      separate.push_back(s);
      ratio.push_back(m / b);
      sep_ratio.push_back(s / b);
    }
    std::printf(
        "| %s | %s | %.1f / %.1f | %.1f | %.1f | **%.3f** | %.1f | "
        "%.3f |\n",
        name.c_str(), all ? "all linears" : "PEFT default",
        adapter_bytes / 1048576.0 / kAdapters, stage->WeightBytes() / 1048576.0,
        Median(base), Median(mix), Median(ratio), Median(separate),
        Median(sep_ratio));
    std::fflush(stdout);
  }
  return absl::OkStatus();
}

// A peer serving blobs over loopback gRPC (plaintext, no emulated link),
// and an AdapterSource fetching from it into a fresh blob store: the
// server-side path of an adapter that comes from a peer.
class LoopbackPeer : public AdapterSource {
 public:
  static absl::StatusOr<std::unique_ptr<LoopbackPeer>> Start(
      const std::string& dir, const std::string& adapter_dir,
      v1::RegisteredAdapter adapter) {
    auto p = std::unique_ptr<LoopbackPeer>(new LoopbackPeer());
    p->dir_ = dir;
    ES_ASSIGN_OR_RETURN(p->served_, BlobStore::Open(dir + "/served"));
    for (v1::AdapterFile& f : *adapter.mutable_files()) {
      ES_ASSIGN_OR_RETURN(std::string bytes,
                          ReadFile(adapter_dir + "/" + f.name()));
      ES_ASSIGN_OR_RETURN(*f.mutable_blob(), p->served_->Put(bytes));
      f.set_bytes(static_cast<int64_t>(bytes.size()));
    }
    p->adapter_ = std::move(adapter);
    p->service_ = std::make_unique<BlobServiceImpl>(
        p->served_.get(),
        [](grpc::CallbackServerContext*, const v1::ReadBlobRequest&) {
          return absl::OkStatus();
        });
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(p->service_.get());
    p->server_ = builder.BuildAndStart();
    if (p->server_ == nullptr) return absl::UnavailableError("no server");
    p->channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port),
                                      grpc::InsecureChannelCredentials());
    return p;
  }
  ~LoopbackPeer() override {
    if (server_) server_->Shutdown();
  }
  absl::Status Materialize(const std::string&, const std::string&,
                           const std::string& dir) override {
    ES_ASSIGN_OR_RETURN(
        auto store, BlobStore::Open(absl::StrCat(dir_, "/fetched", ++round_)));
    BlobFetcher fetcher(store.get());
    GrpcBlobSource peer("peer", channel_);
    BlobSource* sources[] = {&peer};
    AdapterFetchStats stats;
    return MaterializeFromSources(adapter_, sources, fetcher, *store, dir,
                                  &stats);
  }

 private:
  LoopbackPeer() = default;
  std::string dir_;
  int round_ = 0;
  std::unique_ptr<BlobStore> served_;
  v1::RegisteredAdapter adapter_;
  std::unique_ptr<BlobServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

// Cold vs warm time to first token: AdapterCache::Get + a 32-token
// prefill with the adapter, on a fresh cache per cold sample.
absl::Status FirstTokenTable(const std::string& name, const std::string& path,
                             const std::string& dir, int rounds) {
  ES_ASSIGN_OR_RETURN(auto store, ModelStore::Open(path));
  const ModelConfig& c = store->config();
  ES_ASSIGN_OR_RETURN(auto stage, WholeModel(*store));
  const std::string adapters = dir + "/adapters-" + name;
  LoraConfig lc;
  lc.r = kRank;
  lc.alpha = kRank;
  lc.target_modules = Targets(c.arch, true);
  ES_ASSIGN_OR_RETURN(
      auto a, LoraAdapter::Create(c, lc, {0, c.num_layers}, 1, "cold", false));
  ES_RETURN_IF_ERROR(a->SavePeft(adapters + "/cold"));
  auto first_token = [&](AdapterCache& cache,
                         const std::string& adapter_name =
                             "cold") -> absl::StatusOr<double> {
    const auto t0 = Clock::now();
    ES_ASSIGN_OR_RETURN(auto adapter, cache.Get(adapter_name));
    auto kv = stage->NewCache(nullptr);
    StageInput in;
    in.sequences = {{kv.get(), kPrompt}};
    in.sequence_adapters = {adapter.get()};
    std::vector<int64_t> ids(kPrompt, 5);
    in.tokens = at::tensor(ids, at::kLong);
    in.last_token_only = true;
    ES_RETURN_IF_ERROR(stage->Forward(in).status());
    return Seconds(t0) * 1e3;
  };
  v1::RegisteredAdapter registered;
  registered.set_model_id(name);
  registered.set_name("cold");
  registered.add_files()->set_name("adapter_config.json");
  registered.add_files()->set_name("adapter_model.safetensors");
  ES_ASSIGN_OR_RETURN(
      auto peer, LoopbackPeer::Start(dir + "/peer-" + name, adapters + "/cold",
                                     registered));
  std::vector<double> cold, warm, fetched;
  for (int r = 0; r < rounds; ++r) {
    AdapterCacheOptions local;
    local.dir = adapters;
    local.memory_bytes = int64_t{1} << 30;
    AdapterCache cache(c, {0, c.num_layers}, local);
    ES_ASSIGN_OR_RETURN(double ms, first_token(cache));
    cold.push_back(ms);
    ES_ASSIGN_OR_RETURN(ms, first_token(cache));
    warm.push_back(ms);
    // An empty adapter directory: the adapter comes from the peer.
    const std::string empty = absl::StrCat(dir, "/empty-", name, "-", r);
    std::filesystem::remove_all(empty);
    std::filesystem::create_directories(empty);
    AdapterCacheOptions from_peer;
    from_peer.dir = empty;
    from_peer.memory_bytes = int64_t{1} << 30;
    from_peer.source = peer.get();
    from_peer.model_id = name;
    AdapterCache remote(c, {0, c.num_layers}, from_peer);
    ES_ASSIGN_OR_RETURN(ms, first_token(remote));
    fetched.push_back(ms);
  }
  // Over budget: 16 adapters cycled through a cache holding 4 (LRU: every
  // request is a miss).
  constexpr int kCycled = 16, kHeld = 4;
  for (int i = 0; i < kCycled; ++i) {
    ES_ASSIGN_OR_RETURN(auto ai,
                        LoraAdapter::Create(c, lc, {0, c.num_layers}, 100 + i,
                                            absl::StrCat("c", i), false));
    ES_RETURN_IF_ERROR(ai->SavePeft(absl::StrCat(adapters, "/c", i)));
  }
  AdapterCacheOptions small;
  small.dir = adapters;
  {
    AdapterCacheOptions probe = small;
    AdapterCache one(c, {0, c.num_layers}, probe);
    ES_RETURN_IF_ERROR(one.Get("c0").status());
    small.memory_bytes = kHeld * one.stats().resident_bytes;
  }
  AdapterCache cycling(c, {0, c.num_layers}, small);
  std::vector<double> over;
  for (int r = 0; r < rounds; ++r) {
    for (int i = 0; i < kCycled; ++i) {
      ES_ASSIGN_OR_RETURN(double ms,
                          first_token(cycling, absl::StrCat("c", i)));
      over.push_back(ms);
    }
  }
  std::printf(
      "| %s | %.1f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n",
      name.c_str(),
      std::filesystem::file_size(adapters + "/cold/adapter_model.safetensors") /
          1048576.0,
      Median(warm), Median(cold), Median(cold) / Median(warm), Median(fetched),
      Median(fetched) / Median(warm), Median(over),
      Median(over) / Median(warm));
  return absl::OkStatus();
}

// `dir`'s files copied to `out` with the middle tensor of its first
// safetensors file changed (the top bit of every 4th byte flipped: a sign
// flip for float32, which the bench models are): a fine-tuned variant
// that shares every other part with `dir`.
absl::Status WriteVariant(const std::string& dir, const std::string& out) {
  std::filesystem::create_directories(out);
  bool changed = false;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    ES_ASSIGN_OR_RETURN(std::string bytes, ReadFile(e.path().string()));
    const std::string name = e.path().filename().string();
    std::vector<absl::string_view> parts = SplitModelFile(name, bytes);
    if (!changed && parts.size() > 2) {
      const absl::string_view t = parts[parts.size() / 2];
      const size_t at = static_cast<size_t>(t.data() - bytes.data());
      for (size_t i = 3; i < t.size(); i += 4) bytes[at + i] ^= '\x80';
      changed = true;
    }
    ES_RETURN_IF_ERROR(WriteFileAtomically(out + "/" + name, bytes));
  }
  if (!changed) return absl::InvalidArgumentError(dir + ": no safetensors");
  return absl::OkStatus();
}

// The whole copy from a peer, then the variant to the server holding its
// base (fresh stores per round): milliseconds and bytes of each.
absl::Status ModelCopyTable(const std::string& name, const std::string& path,
                            const std::string& dir, int rounds) {
  const std::string work = dir + "/copies-" + name;
  std::filesystem::remove_all(work);
  ES_RETURN_IF_ERROR(WriteVariant(path, work + "/variant"));
  ES_ASSIGN_OR_RETURN(PackedModel base, PackModelDir(path, name, "base"));
  ES_ASSIGN_OR_RETURN(PackedModel variant,
                      PackModelDir(work + "/variant", name, "variant"));
  ES_ASSIGN_OR_RETURN(auto served, BlobStore::Open(work + "/peer"));
  for (const PackedModel* m : {&base, &variant}) {
    for (const auto& [id, bytes] : m->parts) {
      ES_RETURN_IF_ERROR(served->Put(bytes).status());
    }
  }
  BlobServiceImpl service(served.get(), [](grpc::CallbackServerContext*,
                                           const v1::ReadBlobRequest&) {
    return absl::OkStatus();
  });
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr) return absl::UnavailableError("no server");
  GrpcBlobSource peer("peer",
                      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port),
                                          grpc::InsecureChannelCredentials()));
  BlobSource* sources[] = {&peer};
  std::vector<double> whole_ms, variant_ms;
  int64_t whole_bytes = 0, variant_bytes = 0;
  for (int r = 0; r < rounds; ++r) {
    const std::string round = absl::StrCat(work, "/server", r);
    ES_ASSIGN_OR_RETURN(auto store, BlobStore::Open(round + "/blobs"));
    BlobFetcher fetcher(store.get());
    ModelFetchStats whole, moved;
    auto t0 = Clock::now();
    ES_RETURN_IF_ERROR(MaterializeModelCopy(base.copy, sources, fetcher, *store,
                                            round + "/base", &whole));
    whole_ms.push_back(1e3 * Seconds(t0));
    t0 = Clock::now();
    ES_RETURN_IF_ERROR(MaterializeModelCopy(
        variant.copy, sources, fetcher, *store, round + "/variant", &moved));
    variant_ms.push_back(1e3 * Seconds(t0));
    whole_bytes = whole.bytes_received;
    variant_bytes = moved.bytes_received;
  }
  server->Shutdown();
  std::printf("| %s | %.2f | %.1f | %.3f | %.1f | %.4f | %.3f | %zu |\n",
              name.c_str(), whole_bytes / 1048576.0, Median(whole_ms),
              variant_bytes / 1048576.0, Median(variant_ms),
              static_cast<double>(variant_bytes) / whole_bytes,
              Median(variant_ms) / Median(whole_ms), variant.parts.size());
  return absl::OkStatus();
}

int Main(int argc, char** argv) {
  int threads = 2, steps = 16, rounds = 3;
  std::string models = "gpt2-small,real", dir = "build/bench_models";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string f = argv[i], v = argv[i + 1];
    if (f == "--threads") {
      threads = std::stoi(v);
    } else if (f == "--models") {
      models = v;
    } else if (f == "--dir") {
      dir = v;
    } else if (f == "--steps") {
      steps = std::stoi(v);
    } else if (f == "--rounds") {
      rounds = std::stoi(v);
    } else {
      std::cerr << "unknown flag " << f << "\n";
      return 2;
    }
  }
  SetComputeThreads(threads);
  std::printf(
      "%d sessions decoding together after %d prompt tokens; %d rank-%d "
      "adapters, 2 sessions each, the batch ordered by adapter as the server's "
      "batcher orders it; MiB: one "
      "adapter's factors / the base weights; medians of %d rounds of %d "
      "steps; threads: %d\n\n"
      "| model | adapter modules | MiB | no adapters tok/s | mixed batch "
      "tok/s | mixed / none | 8 batches of 2 tok/s | separate / none |\n"
      "|---|---|---|---|---|---|---|---|\n",
      kSessions, kPrompt, kAdapters, kRank, rounds, steps, threads);
  std::vector<std::pair<std::string, std::string>> paths;
  for (absl::string_view m : absl::StrSplit(models, ',')) {
    auto path = ModelDir(std::string(m), dir);
    if (!path.ok()) {
      std::cerr << path.status() << "\n";
      return 1;
    }
    paths.emplace_back(std::string(m), *path);
    if (absl::Status s = DecodeTable(std::string(m), *path, steps, rounds);
        !s.ok()) {
      std::cerr << s << "\n";
      return 1;
    }
  }
  std::printf(
      "\ntime to first token (adapter lookup + %d-token prefill), adapter on "
      "every linear, rank %d; cold: read from the adapter directory (local "
      "disk, page cache warm) by a fresh AdapterCache; peer: fetched from a "
      "peer's BlobService over loopback gRPC (chunked, SHA-256 verified, "
      "written out, then read); over budget: 16 adapters requested "
      "round-robin through a cache holding 4 (every request misses); medians "
      "of %d\n\n"
      "| model | adapter MiB | warm ms | cold (disk) ms | disk / warm | cold "
      "(peer) ms | peer / warm | over budget ms | over / warm |\n"
      "|---|---|---|---|---|---|---|---|---|\n",
      kPrompt, kRank, rounds);
  for (const auto& [m, path] : paths) {
    if (absl::Status s = FirstTokenTable(m, path, dir, rounds); !s.ok()) {
      std::cerr << s << "\n";
      return 1;
    }
  }
  std::printf(
      "\nmodel copy to a server from a peer over loopback gRPC (chunked, "
      "SHA-256 verified, the directory written out): the whole copy into an "
      "empty store, then a fine-tuned variant (one tensor changed) to the "
      "same server, which holds its base; medians of %d\n\n"
      "| model | whole MiB moved | whole ms | variant MiB moved | variant ms "
      "| bytes variant / whole | time variant / whole | variant parts |\n"
      "|---|---|---|---|---|---|---|---|\n",
      rounds);
  for (const auto& [m, path] : paths) {
    if (absl::Status s = ModelCopyTable(m, path, dir, rounds); !s.ok()) {
      std::cerr << s << "\n";
      return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace edgesplit

int main(int argc, char** argv) { return edgesplit::Main(argc, argv); }
