// Prefill and decode throughput against the machine's read bandwidth, per
// weight type. Decoding one token reads every weight once, so tokens/s
// cannot beat (read bandwidth) / (weight bytes read per token): the
// "floor" column. The bandwidth is measured with a plain streaming read
// (kernels/cpu/read_bandwidth.h), not with a matmul, so a slow matmul
// cannot hide behind its own floor. Also: GEMV bandwidth of the kernels
// against LibTorch's ops, and batched decode (B sessions per step) against
// one session at the same context length.
//
//   decode_bench [--threads 2] [--models gpt2-small,llama-1b,real]
//                [--weights f32,f16,q8_0,q6_k,q4_k,q4_0]
//                [--dir build/bench_models]
//                [--prefill 128] [--decode 32] [--batch 16]
//                [--isa scalar|avx2|avx512]
#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"
#include "kernels/cpu/compute_peak.h"
#include "kernels/cpu/gemv.h"
#include "kernels/cpu/read_bandwidth.h"
#include "runtime/generator.h"
#include "runtime/model_init.h"
#include "runtime/model_store.h"
#include "runtime/threading.h"

namespace edgesplit {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

template <typename F>
double BestBandwidth(int64_t bytes, F&& f) {
  f();
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    auto t0 = Clock::now();
    for (int i = 0; i < 5; ++i) f();
    best = std::max(best, 5.0 * bytes / Seconds(t0));
  }
  return best;
}

// GEMV bandwidth of each way to multiply one row (and 16 rows, as 16
// sessions' decode steps) by a 8192 x 4096 matrix: the weight bytes read
// per call over its time.
void PrintGemvTable(double read_bw) {
  const int64_t out = 8192, in = 4096;
  at::Tensor w = at::randn({out, in});
  at::Tensor x = at::randn({1, in});
  at::Tensor x16 = at::randn({16, in});
  at::Tensor y;
  std::printf(
      "| GEMV 8192x4096 | 1 row: GB/s of weights | of read bandwidth | "
      "16 rows: GB/s of weights |\n|---|---|---|---|\n");
  auto row = [&](const std::string& name, int64_t bytes, auto&& f) {
    const double one = BestBandwidth(bytes, [&] { y = f(x); });
    const double many = BestBandwidth(bytes, [&] { y = f(x16); });
    std::printf("| %s | %.1f | %.0f%% | %.1f |\n", name.c_str(), one / 1e9,
                100 * one / read_bw, many / 1e9);
  };
  row("at::linear (OpenBLAS sgemm)", w.nbytes(),
      [&](const at::Tensor& v) { return at::linear(v, w); });
  for (kernels::WeightType t :
       {kernels::WeightType::kF32, kernels::WeightType::kQ8_0,
        kernels::WeightType::kQ4_0, kernels::WeightType::kQ4_K,
        kernels::WeightType::kQ6_K}) {
    auto lw = MakeLinearWeight(w, t, "bench");
    if (!lw.ok()) continue;
    const std::string name = std::string("kernels::Gemv ") +
                             kernels::WeightTypeName(t) + " (" +
                             kernels::IsaName(kernels::ActiveIsa()) + ")";
    row(name, lw->Bytes(),
        [&](const at::Tensor& v) { return LinearForward(*lw, v, {}); });
    LinearWeight packed = *lw;  // As stages hold it.
    PackForDecode(&packed);
    if (packed.layout != lw->layout) {
      row(name + ", 16-row groups", packed.Bytes(),
          [&](const at::Tensor& v) { return LinearForward(packed, v, {}); });
    }
  }
  std::printf("\n");
}

// Prefill's dequantization (runtime's QuantizedGemm: 256-row slices of the
// weight as floats, on one thread, each then multiplied by GEMM): billions
// of weights per second over a 8192 x 4096 matrix, the scalar reference
// against the active variant, in each layout.
void PrintDequantTable() {
  const int64_t out = 8192, in = 4096, slice = 256;
  at::Tensor w = at::randn({out, in});
  std::vector<float> buf(static_cast<size_t>(slice * in));
  std::printf(
      "| dequantize 8192x4096 (prefill), 1 thread | scalar G weights/s | "
      "%s G weights/s |\n|---|---|---|\n",
      kernels::IsaName(kernels::ActiveIsa()));
  auto rate = [&](kernels::Isa isa, const kernels::WeightView& v) {
    return BestBandwidth(out * in, [&] {
      for (int64_t o = 0; o < out; o += slice) {
        kernels::DequantizeRowsOn(isa, v, o, o + slice, buf.data());
      }
    });
  };
  for (kernels::WeightType t :
       {kernels::WeightType::kQ8_0, kernels::WeightType::kQ4_0,
        kernels::WeightType::kQ4_K, kernels::WeightType::kQ6_K}) {
    auto lw = MakeLinearWeight(w, t, "bench");
    if (!lw.ok()) continue;
    LinearWeight packed = *lw;
    PackForDecode(&packed);
    for (const LinearWeight* v : {&*lw, &packed}) {
      if (v == &packed && packed.layout == lw->layout) continue;
      std::printf("| %s%s | %.1f | %.1f |\n", kernels::WeightTypeName(t),
                  v == &packed ? ", 16-row groups" : "",
                  rate(kernels::Isa::kScalar, v->View()) / 1e9,
                  rate(kernels::ActiveIsa(), v->View()) / 1e9);
    }
  }
  std::printf("\n");
}

// Bytes one decode step reads: the stage's weights less the embedding
// table, of which one row is read (unless it is also the float head).
int64_t BytesPerToken(const StageModel& stage) {
  const ModelConfig& c = stage.config();
  int64_t table = c.vocab_size * c.hidden_size * 4;
  if (c.arch == Arch::kGpt2) table += c.max_positions * c.hidden_size * 4;
  return stage.WeightBytes() - table;
}

struct Result {
  double prefill = 0, decode = 0, batch = 0, single_short = 0;
};

absl::StatusOr<Result> Measure(const LocalPipeline& pipeline,
                               const std::vector<int32_t>& prompt, int decode,
                               int batch) {
  Result r;
  // Prefill and decode of one session after the full prompt.
  {
    auto seq = pipeline.NewSequence();
    auto t0 = Clock::now();
    ES_ASSIGN_OR_RETURN(std::vector<float> logits, seq->Forward(prompt));
    r.prefill = prompt.size() / Seconds(t0);
    t0 = Clock::now();
    for (int i = 0; i < decode; ++i) {
      int32_t next = static_cast<int32_t>(
          std::max_element(logits.begin(), logits.end()) - logits.begin());
      ES_ASSIGN_OR_RETURN(logits, seq->Forward({&next, 1}));
    }
    r.decode = decode / Seconds(t0);
  }
  // `batch` sessions after a short prompt each, stepped together, against
  // one session stepped alone from the same context length.
  const StageModel& stage = *pipeline.stages().front();
  const int64_t short_len = std::min<int64_t>(32, prompt.size());
  at::Tensor prompt_t = at::tensor(
      std::vector<int64_t>(prompt.begin(), prompt.begin() + short_len));
  for (int b : {1, batch}) {
    std::vector<std::unique_ptr<SequenceKvCache>> caches;
    for (int i = 0; i < b; ++i) {
      caches.push_back(stage.NewCache(nullptr));
      StageInput in;
      in.sequences = {{caches.back().get(), short_len}};
      in.tokens = prompt_t;
      in.last_token_only = true;
      ES_RETURN_IF_ERROR(stage.Forward(in).status());
    }
    StageInput step;
    for (auto& c : caches) step.sequences.push_back({c.get(), 1});
    step.last_token_only = true;
    step.tokens = at::full({b}, 7, at::kLong);
    auto t0 = Clock::now();
    for (int i = 0; i < decode; ++i) {
      ES_ASSIGN_OR_RETURN(at::Tensor logits, stage.Forward(step));
      step.tokens = logits.argmax(-1);
    }
    (b == 1 ? r.single_short : r.batch) = double(b) * decode / Seconds(t0);
  }
  return r;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Three rounds, each measuring the read bandwidth right before the decode
// it is compared with (this machine's bandwidth moves with its
// neighbours); medians are printed. The ATen-only path (decode_kernels =
// false: at::linear, unfused ops) runs in the same rounds as "before".
// Returns the median decode tokens/s (0 on failure); `f32_decode` is the
// same model's float32 decode with the kernels, the quantized rows' base.
double MeasureModel(kernels::ReadBandwidthProbe& probe,
                    const kernels::ComputePeak& peak, const std::string& name,
                    const std::string& dir, kernels::WeightType weights,
                    int prefill, int decode, int batch, double f32_decode) {
  auto store = ModelStore::Open(dir);
  if (!store.ok()) {
    std::cerr << name << ": " << store.status() << "\n";
    return 0;
  }
  const ModelConfig& c = (*store)->config();
  StageOptions so;
  so.copy_weights = true;
  so.weights = weights;
  auto pipeline = LocalPipeline::Load(**store, {}, so);
  // The ATen-only baseline is today's path for float weights; for blocks it
  // would dequantize every matrix per token (not a path anyone runs).
  const bool baseline = weights == kernels::WeightType::kF32;
  so.decode_kernels = false;
  auto aten = LocalPipeline::Load(**store, {}, so);
  if (!pipeline.ok() || !aten.ok()) {
    std::cerr << name << " " << kernels::WeightTypeName(weights) << ": "
              << pipeline.status() << " " << aten.status() << "\n";
    return 0;
  }
  const StageModel& stage = *(*pipeline)->stages().front();
  int64_t per_token = BytesPerToken(stage);
  if (c.tie_word_embeddings && weights == kernels::WeightType::kF32) {
    per_token += c.vocab_size * c.hidden_size * 4;  // The table is the head.
  }
  std::vector<int32_t> prompt(prefill);
  for (int i = 0; i < prefill; ++i) prompt[i] = (i * 7919 + 13) % c.vocab_size;
  std::vector<double> prefill_tps, decode_tps, floor_tps, ratio, batch_tps,
      batch_ratio, aten_prefill, aten_decode, aten_batch_ratio, single_tps;
  double bw = 0;
  for (int round = 0; round < 3; ++round) {
    auto a = baseline ? Measure(**aten, prompt, decode, batch)
                      : absl::StatusOr<Result>(Result{});
    // OpenBLAS's workers spin for a while after a GEMM; let them sleep so
    // they slow neither the bandwidth probe nor the kernels' decode.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    bw = std::max(bw, probe.Measure(3));
    auto r = Measure(**pipeline, prompt, decode, batch);
    if (!r.ok() || !a.ok()) {
      std::cerr << name << ": " << r.status() << " " << a.status() << "\n";
      return 0;
    }
    prefill_tps.push_back(r->prefill);
    decode_tps.push_back(r->decode);
    batch_tps.push_back(r->batch);
    batch_ratio.push_back(r->batch / r->single_short);
    single_tps.push_back(r->single_short);
    aten_prefill.push_back(a->prefill);
    aten_decode.push_back(a->decode);
    aten_batch_ratio.push_back(baseline ? a->batch / a->single_short : 0);
  }
  // The floor uses the best bandwidth seen: a slower probe (a neighbour's
  // burst) must not flatter the decode it is compared with.
  floor_tps.push_back(bw / per_token);
  ratio.push_back(Median(decode_tps) / floor_tps.back());
  const std::string speedup =
      baseline ? absl::StrFormat("%.1fx vs ATen",
                                 Median(decode_tps) / Median(aten_decode))
      : f32_decode > 0  // Only when this run measured float32 first.
          ? absl::StrFormat("%.2fx vs f32", Median(decode_tps) / f32_decode)
          : std::string("-");
  const std::string aten_batch =
      baseline ? absl::StrFormat(" (%.1fx)", Median(aten_batch_ratio)) : "";
  // The arithmetic bound of a batched step: one multiply-add per weight per
  // session (the attention's few are left out), at the measured peak of the
  // products the kernels use (int8 for blocks, f32 FMAs for f32/f16).
  const double macs = static_cast<double>(c.num_layers * c.ParamsPerBlock() +
                                          c.vocab_size * c.hidden_size);
  const bool blocks = weights != kernels::WeightType::kF32 &&
                      weights != kernels::WeightType::kF16;
  const double compute_tps =
      (blocks ? peak.i8_mac_per_s : peak.f32_fma_per_s) / macs;
  const double ceiling =
      std::min<double>(batch, compute_tps / Median(single_tps));
  std::printf(
      "| %s | %s | %.1f | %.1f%s | %.2f%s | %s | %.2f | %.0f%% | %.1f | "
      "%.1fx%s | %.0f | %.1fx |\n",
      name.c_str(), kernels::WeightTypeName(weights),
      stage.WeightBytes() / 1048576.0, Median(prefill_tps),
      baseline ? absl::StrFormat(" (%.1f)", Median(aten_prefill)).c_str() : "",
      Median(decode_tps),
      baseline ? absl::StrFormat(" (%.2f)", Median(aten_decode)).c_str() : "",
      speedup.c_str(), Median(floor_tps), 100.0 * Median(ratio),
      Median(batch_tps), Median(batch_ratio), aten_batch.c_str(), compute_tps,
      ceiling);
  std::fflush(stdout);
  return Median(decode_tps);
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

int Main(int argc, char** argv) {
  int threads = 2, prefill = 128, decode = 32, batch = 16;
  std::string models = "gpt2-small,llama-1b,real",
              weights = "f32,f16,q8_0,q6_k,q4_k,q4_0";
  std::string dir = "build/bench_models";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string f = argv[i], v = argv[i + 1];
    if (f == "--threads") {
      threads = std::stoi(v);
    } else if (f == "--models") {
      models = v;
    } else if (f == "--weights") {
      weights = v;
    } else if (f == "--dir") {
      dir = v;
    } else if (f == "--prefill") {
      prefill = std::stoi(v);
    } else if (f == "--decode") {
      decode = std::stoi(v);
    } else if (f == "--batch") {
      batch = std::stoi(v);
    } else if (f == "--isa") {  // A supported variant instead of the best.
      bool known = false;
      for (kernels::Isa isa : kernels::SupportedIsas()) {
        if (v == kernels::IsaName(isa)) known = kernels::ForceIsa(isa).ok();
      }
      if (!known) {
        std::cerr << "--isa " << v << ": not a variant this CPU runs\n";
        return 2;
      }
    } else {
      std::cerr << "unknown flag " << f << "\n";
      return 2;
    }
  }
  SetComputeThreads(threads);
  // Allocated before any model, while memory still gives it huge pages.
  kernels::ReadBandwidthProbe probe;
  const double read_bw = probe.Measure();
  std::printf(
      "threads: %d; kernels: %s; read bandwidth (streaming read of 512 MiB): "
      "%.1f GB/s\n\n",
      threads, kernels::IsaName(kernels::ActiveIsa()), read_bw / 1e9);
  const kernels::ComputePeak peak = kernels::MeasureComputePeak();
  std::printf(
      "compute peak (register-resident loops on every kernel thread): f32 "
      "%.0f G FMA/s, int8 %.0f G MAC/s\n\n",
      peak.f32_fma_per_s / 1e9, peak.i8_mac_per_s / 1e9);
  PrintGemvTable(read_bw);
  PrintDequantTable();
  std::printf(
      "floor = read bandwidth (best of the probes run before each round) / "
      "weight bytes read per token; batch: %d sessions stepped together vs one "
      "alone, both after 32 prompt tokens; (parentheses): the ATen-only "
      "path (StageOptions::decode_kernels = false), float weights only; "
      "quantized decode is compared with float32 decode on the kernels; "
      "compute tok/s = the compute peak / multiply-adds per token (int8 for "
      "blocks, f32 otherwise), the most any batch could give; ceiling = "
      "min(%d, compute tok/s / one session's), the batch / one the peak "
      "allows; medians of 3 rounds\n\n"
      "| model | weights | MiB | prefill tok/s (%d) | decode tok/s | decode "
      "speed-up | floor tok/s | decode / floor | batch-%d tok/s | batch / "
      "one | compute tok/s | ceiling |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|---|\n",
      batch, batch, prefill, batch);
  for (absl::string_view m : absl::StrSplit(models, ',')) {
    auto path = ModelDir(std::string(m), dir);
    if (!path.ok()) {
      std::cerr << path.status() << "\n";
      return 1;
    }
    double f32_decode = 0;
    for (absl::string_view wname : absl::StrSplit(weights, ',')) {
      auto w = kernels::ParseWeightType(wname);
      if (!w) {
        std::cerr << "unknown weight type " << wname << "\n";
        return 2;
      }
      const double tps = MeasureModel(probe, peak, std::string(m), *path, *w,
                                      prefill, decode, batch, f32_decode);
      if (tps <= 0) return 1;
      if (*w == kernels::WeightType::kF32) f32_decode = tps;
    }
  }
  return 0;
}

}  // namespace
}  // namespace edgesplit

int main(int argc, char** argv) { return edgesplit::Main(argc, argv); }
