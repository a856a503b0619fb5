// libFuzzer target for PEFT adapter directories, which servers and devices
// load from operators and (with adapter delivery) from peers. An input is
// [arch byte][u32 little-endian length N][N bytes of adapter_config.json]
// [adapter_model.safetensors]; both files are written to a private
// directory and loaded against a tiny model of the chosen architecture
// (scripts/fuzz.sh builds and runs it; seeds in fuzz/seeds/peft_fuzz). An
// adapter that loads must have factors of the shapes the model implies,
// and must save and load again to the same factors.
#include <ATen/ATen.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "runtime/lora.h"
#include "runtime/model_init.h"

namespace {

struct Fixture {
  edgesplit::ModelConfig models[2];
  std::string dir;  // Input files.
  std::string out;  // Round trip.
};

Fixture& Get() {
  static Fixture* f = [] {
    auto* f = new Fixture;
    f->models[0] = *edgesplit::PresetConfig(edgesplit::Arch::kLlama, "tiny");
    f->models[1] = *edgesplit::PresetConfig(edgesplit::Arch::kGpt2, "tiny");
    const char* base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    std::string tmpl = std::string(base) + "/peft_fuzz.XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) std::abort();
    f->dir = tmpl + "/in";
    f->out = tmpl + "/out";
    std::filesystem::create_directories(f->dir);
    std::filesystem::create_directories(f->out);
    static const std::string root = tmpl;
    std::atexit([] { std::filesystem::remove_all(root); });
    return f;
  }();
  return *f;
}

void Write(const std::string& path, const char* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data, static_cast<std::streamsize>(size));
  if (!out) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 5 || size > (1 << 20)) return 0;
  Fixture& f = Get();
  const edgesplit::ModelConfig& model = f.models[data[0] & 1];
  uint32_t n = 0;
  std::memcpy(&n, data + 1, 4);  // Little-endian hosts only.
  if (n > size - 5) return 0;
  const char* json = reinterpret_cast<const char*>(data + 5);
  Write(f.dir + "/adapter_config.json", json, n);
  Write(f.dir + "/adapter_model.safetensors", json + n, size - 5 - n);
  auto adapter = edgesplit::LoraAdapter::LoadPeft(f.dir, model, "fuzz");
  if (!adapter.ok()) return 0;
  const int64_t r = (*adapter)->config().r;
  for (const auto& [module, factors] : (*adapter)->modules()) {
    if (factors.a.dim() != 2 || factors.b.dim() != 2 ||
        factors.a.size(0) != r || factors.b.size(1) != r ||
        factors.a.scalar_type() != at::kFloat) {
      std::abort();
    }
  }
  if (!(*adapter)->SavePeft(f.out).ok()) std::abort();
  auto again = edgesplit::LoraAdapter::LoadPeft(f.out, model, "again");
  if (!again.ok() || (*again)->modules().size() != (*adapter)->modules().size())
    std::abort();
  for (const auto& [module, factors] : (*adapter)->modules()) {
    const edgesplit::LoraFactors* g = (*again)->Find(module);
    // NaN payloads survive a save; compare bits, not values.
    if (g == nullptr ||
        !at::equal(g->a.view(at::kInt), factors.a.view(at::kInt)) ||
        !at::equal(g->b.view(at::kInt), factors.b.view(at::kInt))) {
      std::abort();
    }
  }
  return 0;
}
